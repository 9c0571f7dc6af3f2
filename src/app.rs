//! The handler the HTTP server runs: `/v2/…` goes to the registry API;
//! `/-/…`, the operator's pages (`/`, `/images/…`, `/builds`, `/cache`) and
//! `/metrics` to [`crate::web`]. Rooms that concern every request (access
//! control, metrics) wrap or join here, not inside the registry.

use std::sync::Arc;

use crate::http::{Handler, Request, Response};
use crate::registry::Registry;
use crate::web::Web;

pub struct App {
    registry: Registry,
    web: Web,
}

impl App {
    pub fn new(registry: Registry, web: Web) -> Arc<App> {
        Arc::new(App { registry, web })
    }
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        if request.path.starts_with("/-/") {
            self.web.handle(request)
        } else if Web::serves(&request.path) {
            self.web.page(request)
        } else {
            self.registry.handle(request)
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
