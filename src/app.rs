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
        // Refusals come as each part answers errors: JSON under `/-/`, a
        // page for people, the spec's error body under `/v2/`.
        let identity = self.guard.identify(request);
        if request.path.starts_with("/-/") {
            identity.map_or_else(Web::refuse, |identity| self.web.handle(request, &identity))
        } else if Web::serves(&request.path) {
            identity.map_or_else(Web::refuse_page, |identity| self.web.page(request, &identity))
        } else {
            identity
                .map_or_else(|denied| self.registry.refuse(denied), |identity| self.registry.handle(request, &identity))
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
