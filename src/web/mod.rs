//! Everything outside the registry API. Under `/-/`, for programs: the
//! build status ([`builds`]: for clients with the build right on the image,
//! or admins) and the watch's trigger (admins, or `refresh` in the policy),
//! answered as JSON (errors as `{"error": "…"}`) or text. For people, the
//! operator's site: the catalog at `/` ([`catalog`]), an image's page
//! ([`image`], with its layer chart from [`chart`]), the builds
//! ([`build_pages`]), the cache ([`cache_page`]) and `/login` (the Basic
//! challenge for an anonymous viewer, then back to `/`), server-rendered HTML
//! built with [`html`]. And the Prometheus metrics at `/metrics` ([`metrics`]).
//!
//! Every answer is for the client's [`Identity`]: a page shows what it may
//! see (the images it may pull, the builds of those it may build; the cache
//! and the metrics are for admins), its menu links to the pages it may open
//! ([`html::Section::open_to`]), and a refusal is a `401` (with the Basic
//! challenge browsers answer) or `403`, as JSON or as a page.

pub mod build_pages;
pub mod builds;
pub mod cache_page;
pub mod catalog;
pub mod chart;
pub mod html;
pub mod image;
pub mod metrics;

use std::sync::Arc;

use serde_json::json;

use crate::auth::{self, Denied, Identity};
use crate::http::{Request, Response};
use crate::service::Service;

/// What `flakeforge serve` decides for this room.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// `/metrics` is served on the main listener (no `--metrics-listen`).
    pub metrics_on_main: bool,
}

pub struct Web {
    service: Arc<Service>,
    options: WebOptions,
}

impl Web {
    pub fn new(service: Arc<Service>, options: WebOptions) -> Self {
        Web { service, options }
    }

    /// Answers a request for a path under `/-/`, from `identity`.
    pub fn handle(&self, request: &Request, identity: &Identity) -> Response {
        let path = request.path.strip_prefix("/-/").unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let read = matches!(request.method.as_str(), "GET" | "HEAD");
        let answer = match (segments.as_slice(), read) {
            (["builds"], true) => builds::list(&self.service, identity),
            (["builds", id], true) => builds::one(&self.service, identity, id),
            (["builds", id, "log"], true) => builds::log(&self.service, identity, id),
            (["refresh"], false) if request.method == "POST" => identity.require_refresh().map(|()| {
                self.service.refresh();
                json_response(202, &json!({ "refresh": "requested" }))
            }),
            _ => Ok(self.other(&segments, read)),
        };
        answer.unwrap_or_else(Web::refuse)
    }

    /// What is no endpoint, or not for this method.
    fn other(&self, segments: &[&str], read: bool) -> Response {
        match (segments, read) {
            (["builds"] | ["builds", _] | ["builds", _, "log"], false) => method_not_allowed("GET, HEAD"),
            (["refresh"], _) => method_not_allowed("POST"),
            _ => error(404, "no such endpoint"),
        }
    }

    /// The answer to a request under `/-/` refused, before dispatch or by
    /// an endpoint: JSON.
    pub fn refuse(denied: Denied) -> Response {
        refusal(denied, error)
    }

    /// The answer to a page refused before the client was identified
    /// (wrong credentials, a throttled address): a page with no menu.
    /// Browsers ask for a user name and password on the `401`'s challenge
    /// and send them from then on.
    pub fn refuse_page(denied: Denied) -> Response {
        refusal(denied, |status, message| html::error_page(status, message, None))
    }

    /// Whether `path` is a page of the site or `/metrics` (answered by [`Web::page`]).
    pub fn serves(path: &str) -> bool {
        page_kind(path).is_some()
    }

    /// Answers a page of the site, or `/metrics`, for `identity`: what it
    /// may see (images it may pull, builds of those it may build; the cache
    /// and the metrics for admins), or `401`/`403` as a page.
    pub fn page(&self, request: &Request, identity: &Identity) -> Response {
        if !matches!(request.method.as_str(), "GET" | "HEAD") {
            return html::error_page(405, "pages answer GET and HEAD", Some(identity)).header("Allow", "GET, HEAD");
        }
        let path = request.path.as_str();
        let answer = match page_kind(path) {
            Some(Page::Metrics) if self.options.metrics_on_main => {
                identity.require_admin("the metrics").map(|()| metrics::response())
            }
            Some(Page::Metrics) => {
                Ok(html::error_page(404, "the metrics are served on the --metrics-listen address", Some(identity)))
            }
            Some(Page::Catalog) => catalog::page(&self.service, request, identity),
            Some(Page::Image(reference)) => image::page(&self.service, request, identity, reference),
            Some(Page::Builds) => build_pages::list(&self.service, identity),
            Some(Page::Build(id)) => build_pages::one(&self.service, identity, id),
            Some(Page::Cache) => cache_page::page(&self.service, identity),
            // The challenge for an anonymous client where users may log
            // in; the browser then asks again with the login: back to `/`.
            Some(Page::Login) => identity
                .require_login()
                .map(|()| Response::new(303).header("Location", "/").header("Cache-Control", "no-store")),
            None => Ok(html::error_page(404, "no such page", Some(identity))),
        };
        // A refused page keeps the menu of what the client may open.
        answer.unwrap_or_else(|denied| {
            refusal(denied, |status, message| html::error_page(status, message, Some(identity)))
        })
    }

    /// The endpoint kind of a path this room answers, as the metrics count it.
    pub fn endpoint_kind(path: &str) -> Option<&'static str> {
        if path.starts_with("/-/builds") {
            return Some("builds");
        }
        if path == "/-/refresh" {
            return Some("refresh");
        }
        if path.starts_with("/-/") {
            return Some("not_found");
        }
        page_kind(path).map(|page| if matches!(page, Page::Metrics) { "metrics" } else { "web" })
    }
}

enum Page<'a> {
    Catalog,
    /// `NAME[:TAG]`, not yet validated.
    Image(&'a str),
    Builds,
    Build(&'a str),
    Cache,
    Login,
    Metrics,
}

fn page_kind(path: &str) -> Option<Page<'_>> {
    match path {
        "/" => Some(Page::Catalog),
        "/builds" => Some(Page::Builds),
        "/cache" => Some(Page::Cache),
        "/login" => Some(Page::Login),
        metrics::PATH => Some(Page::Metrics),
        _ => {
            if let Some(reference) = path.strip_prefix("/images/").filter(|r| !r.is_empty()) {
                Some(Page::Image(reference))
            } else {
                path.strip_prefix("/builds/").filter(|id| !id.is_empty() && !id.contains('/')).map(Page::Build)
            }
        }
    }
}

/// A refusal rendered by `render` (JSON or a page), with the challenge or the wait.
fn refusal(denied: Denied, render: impl Fn(u16, &str) -> Response) -> Response {
    match denied {
        Denied::Unauthenticated(message) => render(401, &message).header("WWW-Authenticate", auth::CHALLENGE),
        Denied::Forbidden(message) => render(403, &message),
        Denied::Throttled(wait) => {
            render(429, &denied.to_string()).header("Retry-After", auth::retry_after_secs(wait).to_string())
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
