//! `GET /metrics`: [`crate::metrics`] in the Prometheus text format, on
//! the main listener (for admins when there is access control), or alone
//! on the plain-HTTP `--metrics-listen` address ([`MetricsOnly`]) instead:
//! there without access control, as the operator binds it privately.

use crate::http::{Handler, Request, Response};
use crate::metrics;

pub const PATH: &str = "/metrics";

pub fn response() -> Response {
    Response::new(200)
        .header("Content-Type", metrics::CONTENT_TYPE)
        .header("Cache-Control", "no-store")
        .bytes(metrics::render().into_bytes())
}

/// The handler of the `--metrics-listen` address: `/metrics` and nothing else.
pub struct MetricsOnly;

impl Handler for MetricsOnly {
    fn handle(&self, request: &Request) -> Response {
        match (request.path.as_str(), request.method.as_str()) {
            (PATH, "GET" | "HEAD") => response(),
            (PATH, _) => text(405, "this endpoint answers GET, HEAD").header("Allow", "GET, HEAD"),
            _ => text(404, "only /metrics is served here"),
        }
    }

    fn overloaded(&self) -> Response {
        text(503, "too many open connections; try again later")
    }

    fn bad_request(&self, status: u16, message: &str) -> Response {
        text(status, message)
    }

    fn endpoint_kind(&self, request: &Request) -> &'static str {
        if request.path == PATH {
            "metrics"
        } else {
            "not_found"
        }
    }
}

fn text(status: u16, message: &str) -> Response {
    Response::new(status).header("Content-Type", "text/plain; charset=utf-8").bytes(format!("{message}\n").into_bytes())
}
