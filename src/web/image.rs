//! `GET /images/NAME[:TAG]`: one image as served now. The `docker pull` and
//! `podman pull` lines (with the host the browser used), the revision and
//! digests, then per platform links to its SBOM and provenance (the
//! documents attached to its manifest), its config (Cmd, Env, …) and its
//! layers: a bar chart of their sizes and a table of what each holds, with
//! the layers other images share marked. For clients that may pull the
//! image; the images named as sharing layers are those the client may pull
//! too, the last build is shown to those who may build it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::Value;

use super::builds::seen_by;
use super::catalog::{served_to, state_name};
use super::chart::{layer_chart, what};
use super::html::{self, escape, short_digest, url_part, Section};
use crate::auth::{Denied, Identity, Right};
use crate::digest::Digest;
use crate::http::{Request, Response};
use crate::media_type::{CYCLONEDX_JSON, IN_TOTO_JSON};
use crate::reference::{RepoName, Tag};
use crate::service::{ImageView, PlatformImage, Service};

/// The config keys shown, in this order, when the image sets them.
const CONFIG_KEYS: [&str; 10] =
    ["Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels", "StopSignal", "Shell"];

pub fn page(service: &Service, request: &Request, identity: &Identity, reference: &str) -> Result<Response, Denied> {
    let (name, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    let (Some(name), Some(tag)) = (RepoName::parse(name), Tag::parse(tag)) else {
        return Ok(html::error_page(404, "not an image name and tag", Some(identity)));
    };
    identity.require(Right::Pull, &name.canonical())?;
    let title = format!("{name}:{tag}");
    let mut builds = seen_by(identity, service.builds().builds);
    builds.retain(|b| b.image == name.canonical() && b.tag == tag.as_str());
    let mut body = format!("<h1>{}</h1>", escape(&title));
    body.push_str(&pull_lines(service, request, &title));
    if let Some(build) = builds.first() {
        let _ = write!(
            body,
            "<p>Last build: <a class=\"state-{state}\" href=\"/builds/{id}\">{state}</a> \
             <span class=\"muted\">({id}, queued {when})</span></p>",
            state = state_name(build),
            id = escape(&url_part(&build.id)),
            when = html::time(&build.queued_at),
        );
    }
    let Some(view) = service.image_view(&name, &tag) else {
        let _ = write!(
            body,
            "<p class=\"notice\">Not built yet (or not since the cache was cleared). {}</p>",
            match identity.may(Right::Build, &name.canonical()) {
                true => "Pulling it builds it.",
                false => "Pulling it is refused until someone who may build it has.",
            }
        );
        let status = if builds.is_empty() { 404 } else { 200 };
        return Ok(html::page(status, &title, Some(Section::Images), Some(identity), &body));
    };
    let users = layer_users(service, identity);
    let _ = write!(
        body,
        "<div class=\"card\"><dl class=\"config\"><dt>Revision</dt><dd><code>{}</code></dd>\
         <dt>Digest</dt><dd><code>{}</code></dd><dt>Platforms</dt><dd>{}</dd></dl></div>",
        escape(&view.served.revision),
        escape(&view.served.digest.to_string()),
        escape(&view.platforms.iter().map(|p| p.platform.as_str()).collect::<Vec<_>>().join(", ")),
    );
    for platform in &view.platforms {
        body.push_str(&platform_section(&view, platform, &users));
    }
    Ok(html::page(200, &title, Some(Section::Images), Some(identity), &body))
}

/// The lines to copy, with the host the browser reached this server by.
fn pull_lines(service: &Service, request: &Request, reference: &str) -> String {
    let host = request
        .header("Host")
        .filter(|host| is_host(host))
        .map(str::to_string)
        .or_else(|| service.config().listen.first().map(ToString::to_string))
        .unwrap_or_else(|| "localhost:5000".into());
    let image = format!("{host}/{reference}");
    let podman = if service.config().tls {
        format!("podman pull {image}")
    } else {
        format!("podman pull --tls-verify=false {image}")
    };
    let mut html = String::new();
    for (id, line) in [("pull-docker", format!("docker pull {image}")), ("pull-podman", podman)] {
        let _ = write!(
            html,
            "<div class=\"pull\"><input id=\"{id}\" readonly value=\"{line}\" aria-label=\"pull command\">\
             <button type=\"button\" data-copy=\"{id}\">Copy</button></div>",
            line = escape(&line),
        );
    }
    html
}

/// A `Host` header fit to show in a command line: a name or address and a port.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn platform_section(view: &ImageView, platform: &PlatformImage, users: &BTreeMap<Digest, BTreeSet<String>>) -> String {
    let me = view.served.name.as_str();
    let shared: Vec<Vec<String>> = platform
        .layers
        .iter()
        .map(|layer| {
            let names = users.get(&layer.digest).into_iter().flatten();
            // Other images: other tags of the same name share nearly everything.
            names.filter(|user| user.rsplit_once(':').map_or(user.as_str(), |(name, _)| name) != me).cloned().collect()
        })
        .collect();
    let mut html = format!(
        "<section class=\"platform\" data-platform=\"{p}\"><h2>{p}</h2>\
         <p class=\"muted\">{layers} layers, {size} to download · manifest {manifest}</p>",
        p = escape(&platform.platform),
        layers = platform.layers.len(),
        size = html::bytes(platform.size()),
        manifest = short_digest(&platform.manifest),
    );
    html.push_str(&attached_line(me, platform));
    html.push_str("<h3>Config</h3><div class=\"card\">");
    html.push_str(&config_list(&platform.config));
    html.push_str("</div><h3>Layers</h3><div class=\"card\">");
    html.push_str(
        "<p class=\"legend muted\">In image order, length by size:<span style=\"background:var(--accent)\">\
         </span>this image only<span style=\"background:var(--shared)\"></span>shared with other images</p>",
    );
    html.push_str(&layer_chart(&platform.layers, &shared));
    html.push_str(
        "</div><div class=\"scroll\"><table class=\"layers\"><thead><tr><th>#</th><th>Size</th><th>Holds</th>\
         <th>Shared with</th><th>Blob</th></tr></thead><tbody>",
    );
    for (i, (layer, others)) in platform.layers.iter().zip(&shared).enumerate() {
        let holds = match &layer.contents {
            Some((kind, paths)) => {
                let items: String = paths.iter().map(|p| format!("<li><code>{}</code></li>", escape(p))).collect();
                format!(
                    "<details><summary>{}</summary><div class=\"muted\">{}</div><ul class=\"paths\">{items}</ul></details>",
                    escape(&what(layer)),
                    escape(kind)
                )
            }
            None => "<span class=\"muted\">unknown</span>".into(),
        };
        let others: String = others
            .iter()
            .map(|user| format!("<a class=\"chip\" href=\"/images/{}\">{}</a>", escape(&url_part(user)), escape(user)))
            .collect();
        let cached = if layer.cached { "" } else { " <span class=\"muted\">(not cached)</span>" };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{holds}</td><td>{others}</td><td>{}{cached}</td></tr>",
            i + 1,
            html::bytes(layer.size),
            short_digest(&layer.digest),
        );
    }
    html.push_str("</tbody></table></div></section>");
    html
}

/// Links to what the platform's manifest says it is made of (its SBOM and
/// provenance, from the referrers API): each document's blob, and the
/// referrers list itself. Nothing when none is attached (`--no-sbom`).
fn attached_line(name: &str, platform: &PlatformImage) -> String {
    if platform.attached.is_empty() {
        return String::new();
    }
    let links: Vec<String> = platform
        .attached
        .iter()
        .map(|attached| {
            let what = match attached.artifact_type.as_str() {
                CYCLONEDX_JSON => "SBOM (CycloneDX)",
                IN_TOTO_JSON => "provenance (SLSA)",
                other => other,
            };
            let download =
                attached.file_name.as_deref().map(|f| format!(" download=\"{}\"", escape(f))).unwrap_or_default();
            format!(
                "<a class=\"attached\" data-artifact-type=\"{kind}\" data-manifest=\"{manifest}\" \
                 href=\"/v2/{name}/blobs/{document}\"{download}>{what}</a>",
                kind = escape(&attached.artifact_type),
                manifest = attached.manifest,
                name = escape(name),
                document = attached.document,
                what = escape(what),
            )
        })
        .collect();
    format!(
        "<p class=\"made-of\">Made of: {} · <a href=\"/v2/{}/referrers/{}\">referrers</a></p>",
        links.join(" · "),
        escape(name),
        platform.manifest,
    )
}

/// The config's settings as a definition list; lists one item a line.
fn config_list(config: &Value) -> String {
    let Some(object) = config.as_object() else { return "<p class=\"muted\">No config.</p>".into() };
    let mut html = String::from("<dl class=\"config\">");
    for key in CONFIG_KEYS {
        let Some(value) = object.get(key).filter(|v| !v.is_null()) else { continue };
        let shown = match value {
            Value::Array(items) => items
                .iter()
                .map(|item| format!("<code>{}</code>", escape(&plain(item))))
                .collect::<Vec<_>>()
                .join("<br>"),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(v) => format!("<code>{}={}</code>", escape(k), escape(v)),
                    None => format!("<code>{}</code>", escape(k)),
                })
                .collect::<Vec<_>>()
                .join("<br>"),
            other => format!("<code>{}</code>", escape(&plain(other))),
        };
        let _ = write!(html, "<dt>{key}</dt><dd data-key=\"{key}\">{shown}</dd>");
    }
    html.push_str("</dl>");
    html
}

fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

/// For every layer blob of the images served now that `identity` may
/// pull, the names and tags using it.
pub fn layer_users(service: &Service, identity: &Identity) -> BTreeMap<Digest, BTreeSet<String>> {
    let mut users: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    for served in served_to(service, identity, &[]) {
        let view = service.view_of(served);
        let user = format!("{}:{}", view.served.name, view.served.tag);
        for layer in view.platforms.iter().flat_map(|p| &p.layers) {
            users.entry(layer.digest.clone()).or_default().insert(user.clone());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hosts_go_into_pull_lines() {
        assert!(is_host("registry.example:5000") && is_host("[::1]:5000") && is_host("127.0.0.1:8080"));
        assert!(!is_host("evil.example/\"><script>") && !is_host("a b") && !is_host(""));
    }

    #[test]
    fn configs_are_listed_escaped() {
        let config = serde_json::json!({
            "Cmd": ["/bin/sh", "-c", "echo <hi>"],
            "Env": ["PATH=/bin"],
            "ExposedPorts": { "80/tcp": {} },
            "Labels": { "a": "<b>" },
            "Other": "not shown",
        });
        let html = config_list(&config);
        assert!(html.contains(
            "<dd data-key=\"Cmd\"><code>/bin/sh</code><br><code>-c</code><br><code>echo &lt;hi&gt;</code></dd>"
        ));
        assert!(html.contains("<code>80/tcp</code>") && html.contains("<code>a=&lt;b&gt;</code>"));
        assert!(!html.contains("Other"));
    }
}
