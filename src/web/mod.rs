//! Everything outside the registry API, under `/-/`: the build status
//! ([`builds`]) and the watch's trigger, answered as JSON (errors as
//! `{"error": "…"}`) or text. Later rooms (a web page, metrics) add routes here.

pub mod builds;

use std::sync::Arc;

use serde_json::json;

use crate::http::{Request, Response};
use crate::service::Service;

pub struct Web {
    service: Arc<Service>,
}

impl Web {
    pub fn new(service: Arc<Service>) -> Self {
        Web { service }
    }

    /// Answers a request for a path under `/-/`.
    pub fn handle(&self, request: &Request) -> Response {
        let path = request.path.strip_prefix("/-/").unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let read = matches!(request.method.as_str(), "GET" | "HEAD");
        match (segments.as_slice(), read) {
            (["builds"], true) => builds::list(&self.service),
            (["builds", id], true) => builds::one(&self.service, id),
            (["builds", id, "log"], true) => builds::log(&self.service, id),
            (["refresh"], false) if request.method == "POST" => {
                self.service.refresh();
                json_response(202, &json!({ "refresh": "requested" }))
            }
            (["builds"] | ["builds", _] | ["builds", _, "log"], false) => method_not_allowed("GET, HEAD"),
            (["refresh"], _) => method_not_allowed("POST"),
            _ => error(404, "no such endpoint"),
        }
    }
}

pub(crate) fn json_response(status: u16, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec_pretty(body).expect("JSON values serialize");
    Response::new(status).header("Content-Type", "application/json").header("Cache-Control", "no-store").bytes(body)
}

pub(crate) fn error(status: u16, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn method_not_allowed(allow: &str) -> Response {
    error(405, &format!("this endpoint answers {allow}")).header("Allow", allow)
}
