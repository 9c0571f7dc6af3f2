//! `GET /`: the catalog. Every image the flake offers (the names `_catalog`
//! lists) and every name served since the start, with its tags, systems,
//! size and last build; `?q=` filters by name. A client sees the images it
//! may pull, and the builds of those it may build.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::builds::seen_by;
use super::html::{self, escape, url_part, Section};
use crate::auth::{Denied, Identity, Right};
use crate::http::{Request, Response};
use crate::service::{BuildStatus, ImageView, ServedTag, Service};

/// Rows shown at most: a flake of thousands of packages stays one page.
const MAX_ROWS: usize = 500;

pub fn page(service: &Service, request: &Request, identity: &Identity) -> Result<Response, Denied> {
    if !Section::Images.open_to(identity) {
        return Err(identity.refused("may pull no image"));
    }
    let filter = request.query_param("q").unwrap_or_default().trim().to_ascii_lowercase();
    let (mut flake_names, catalog_error) = match service.catalog(request.peer.ip()) {
        Ok(names) => (names, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    identity.retain_pullable(&mut flake_names);
    let views: Vec<ImageView> =
        served_to(service, identity, &flake_names).into_iter().map(|served| service.view_of(served)).collect();
    let builds = seen_by(identity, service.builds().builds);

    // Every name, with the images of its served tags.
    let mut rows: BTreeMap<String, Vec<&ImageView>> = flake_names.iter().map(|n| (n.clone(), Vec::new())).collect();
    for view in &views {
        rows.entry(view.served.name.to_string()).or_default().push(view);
    }
    rows.retain(|name, _| name.contains(&filter));

    let mut body = String::from("<h1>Images</h1>");
    let _ = write!(
        body,
        "<p class=\"muted\">Built on demand for {} when pulled; this page starts no build.</p>\
         <form class=\"filter\" method=\"get\" action=\"/\"><input name=\"q\" value=\"{}\" \
         placeholder=\"filter by name\" aria-label=\"filter by name\"><button>Filter</button></form>",
        escape(&service.config().systems.join(", ")),
        escape(&filter),
    );
    if let Some(error) = catalog_error {
        let _ = write!(
            body,
            "<p class=\"notice\">The flake's list of packages is not available now: {}</p>",
            escape(&error)
        );
    }
    if rows.is_empty() {
        body.push_str("<p class=\"notice\">No images to show.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table id=\"catalog\"><thead><tr><th>Image</th><th>Tags</th><th>Systems</th>\
             <th>Size</th><th>Last build</th></tr></thead><tbody>",
        );
        for (name, images) in rows.iter().take(MAX_ROWS) {
            body.push_str(&row(name, images, &builds));
        }
        body.push_str("</tbody></table></div>");
        if rows.len() > MAX_ROWS {
            let _ = write!(body, "<p class=\"muted\">{} more; filter by name to find them.</p>", rows.len() - MAX_ROWS);
        }
    }
    Ok(html::page(200, "Images", Some(Section::Images), Some(identity), &body))
}

/// The tags served ([`Service::served_tags`] of `names`) of images `identity` may pull.
pub(super) fn served_to(service: &Service, identity: &Identity, names: &[String]) -> Vec<ServedTag> {
    let mut served = service.served_tags(names);
    served.retain(|served| identity.may(Right::Pull, &served.name.canonical()));
    served
}

fn row(name: &str, images: &[&ImageView], builds: &[BuildStatus]) -> String {
    let link = |tag: &str| format!("/images/{}:{}", url_part(name), url_part(tag));
    let mut tags: String = images
        .iter()
        .map(|view| {
            let tag = view.served.tag.as_str();
            format!("<a class=\"chip\" href=\"{}\">{}</a>", escape(&link(tag)), escape(tag))
        })
        .collect();
    if tags.is_empty() {
        tags = "<span class=\"muted\">not built yet</span>".into();
    }
    // `latest` if served, else the first tag.
    let main = images.iter().find(|v| v.served.tag.as_str() == "latest").or(images.first());
    let systems = main.map_or(String::new(), |view| {
        view.platforms.iter().map(|p| format!("<span class=\"chip\">{}</span>", escape(&p.platform))).collect()
    });
    let size = main.map_or(String::new(), |view| {
        let sizes: Vec<String> = view.platforms.iter().map(|p| html::bytes(p.size())).collect();
        escape(&sizes.join(" / "))
    });
    let last = builds.iter().find(|b| b.image == name).map_or(String::new(), |b| {
        format!(
            "<a class=\"state-{state}\" href=\"/builds/{id}\">{state}</a> <span class=\"muted\">{tag}, {when}</span>",
            state = escape(state_name(b)),
            id = escape(&url_part(&b.id)),
            tag = escape(&b.tag),
            when = html::time(b.finished_at.as_deref().or(b.started_at.as_deref()).unwrap_or(&b.queued_at)),
        )
    });
    let target = main.map_or_else(|| link("latest"), |view| link(view.served.tag.as_str()));
    format!(
        "<tr data-image=\"{name_attr}\"><td><a href=\"{href}\">{name_text}</a></td><td>{tags}</td><td>{systems}</td>\
         <td>{size}</td><td>{last}</td></tr>",
        name_attr = escape(name),
        href = escape(&target),
        name_text = escape(name),
    )
}

/// `running`, `failed`…, as the build status says it.
pub fn state_name(build: &BuildStatus) -> &'static str {
    match build.state {
        crate::service::JobState::Resolving => "resolving",
        crate::service::JobState::Queued => "queued",
        crate::service::JobState::Running => "running",
        crate::service::JobState::Succeeded => "succeeded",
        crate::service::JobState::Failed => "failed",
    }
}
