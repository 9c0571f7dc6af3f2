//! The handler the HTTP server runs: access control first ([`Guard`]: who
//! sent the request), then `/v2/…` to the registry API; `/-/…`, the
//! operator's pages (`/`, `/images/…`, `/builds`, `/cache`) and `/metrics`
//! to [`crate::web`], each answering for that client. Rooms that concern
//! every request (access control, metrics) wrap or join here, not inside
//! the registry.

use std::sync::Arc;

use crate::auth::Guard;
use crate::http::{Handler, Request, Response};
use crate::registry::Registry;
use crate::web::Web;

pub struct App {
    guard: Guard,
    registry: Registry,
    web: Web,
}

impl App {
    pub fn new(guard: Guard, registry: Registry, web: Web) -> Arc<App> {
        Arc::new(App { guard, registry, web })
    }
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        let identity = self.guard.identify(request);
        match (request.path.starts_with("/-/"), identity) {
            (true, Ok(identity)) => self.web.handle(request, &identity),
            (true, Err(denied)) => self.web.refuse(denied),
            (false, Ok(_)) if Web::serves(&request.path) => self.web.page(request),
            (false, Ok(identity)) => self.registry.handle(request, &identity),
            (false, Err(denied)) => self.registry.refuse(denied),
        }
    }

    fn overloaded(&self) -> Response {
        self.registry.overloaded()
    }

    fn bad_request(&self, status: u16, message: &str) -> Response {
        self.registry.bad_request(status, message)
    }

    fn endpoint_kind(&self, request: &Request) -> &'static str {
        Web::endpoint_kind(&request.path).unwrap_or_else(|| self.registry.endpoint_kind(request))
    }
}
