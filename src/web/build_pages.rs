//! `GET /builds`: what Nix is doing, the builds running (each with the
//! live tail of its log), queued, failed lately (with the end of their
//! logs) and succeeded lately; `GET /builds/<id>`: one build with its whole
//! log, followed live while it runs. The same data as `/-/builds`, whose
//! log endpoint the page's script streams, for the same clients: the
//! builds of images they may build (admins: all).

use std::fmt::Write;
use std::time::Duration;

use super::builds::{visible, visible_builds};
use super::catalog::state_name;
use super::html::{self, escape, url_part, Section};
use crate::auth::{Denied, Identity};
use crate::http::Response;
use crate::service::{BuildStatus, BuildsStatus, JobState, Service};

/// Lines of a log shown in the list of builds.
const TAIL_LINES: usize = 10;
/// How often the list reloads while builds wait and none streams a log.
const RELOAD_SECS: u32 = 5;

/// The builds `identity` may see (as `/-/builds` lists them).
pub fn list(service: &Service, identity: &Identity) -> Result<Response, Denied> {
    let BuildsStatus { builds, nix } = visible_builds(service, identity)?;
    let in_state = |states: &[JobState]| builds.iter().filter(|b| states.contains(&b.state)).collect::<Vec<_>>();
    let (running, queued) = (in_state(&[JobState::Running]), in_state(&[JobState::Queued, JobState::Resolving]));
    let (failed, succeeded) = (in_state(&[JobState::Failed]), in_state(&[JobState::Succeeded]));
    let waiting = !queued.is_empty();
    let mut body = format!(
        "<h1>Builds</h1><div{reload}><p class=\"muted\" id=\"nix\">Nix: {} of {} builds and {} of {} evaluations \
         running; {} builds and {} evaluations waiting; {} processes since the start. \
         <a href=\"/-/builds\">As JSON</a></p></div>",
        nix.running.build,
        nix.limits.build,
        nix.running.eval,
        nix.limits.eval,
        nix.queued.build,
        nix.queued.eval,
        nix.started,
        reload = if waiting { format!(" data-reload=\"{RELOAD_SECS}\"") } else { String::new() },
    );
    body.push_str(&section("Running", "running", &running, "Nothing is building.", true));
    body.push_str(&section("Queued", "queued", &queued, "Nothing waits.", false));
    body.push_str(&section("Failed lately", "failed", &failed, "No failures.", true));
    let _ = write!(body, "<h2>Succeeded lately ({})</h2>", succeeded.len());
    if succeeded.is_empty() {
        body.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table id=\"succeeded\"><thead><tr><th>Image</th><th>Finished</th>\
             <th>Took</th><th>Why</th><th>Build</th></tr></thead><tbody>",
        );
        for build in &succeeded {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/builds/{id}\">{id}</a></td></tr>",
                image_link(build),
                html::time(build.finished_at.as_deref().unwrap_or_default()),
                html::duration(build.duration_secs),
                build.trigger.as_str(),
                id = escape(&url_part(&build.id)),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("<p class=\"muted\">Finished builds stay listed for a while (the last 100, across restarts).</p>");
    Ok(html::page(200, "Builds", Some(Section::Builds), Some(identity), &body))
}

/// A heading and a card per build (with the end of its log if `log`), or `empty`.
fn section(title: &str, id: &str, builds: &[&BuildStatus], empty: &str, log: bool) -> String {
    let mut html = format!("<h2>{title} ({})</h2><div id=\"{id}\">", builds.len());
    if builds.is_empty() {
        let _ = write!(html, "<p class=\"muted\">{empty}</p>");
    }
    for build in builds {
        html.push_str(&card(build, log));
    }
    html.push_str("</div>");
    html
}

/// One build in the list; with `log`, the end of its log (followed live while it runs).
fn card(build: &BuildStatus, log: bool) -> String {
    let id = escape(&url_part(&build.id));
    let mut html = format!(
        "<div class=\"card build\" data-build=\"{id}\"><div><strong>{image}</strong> \
         <span class=\"state-{state}\">{state}</span> <span class=\"muted\">for {systems}, {why}, {progress}</span> \
         · <a href=\"/builds/{id}\">log</a></div>",
        image = image_link(build),
        state = state_name(build),
        systems = escape(&build.systems.join(", ")),
        why = build.trigger.as_str(),
        progress = progress(build),
    );
    if let Some(error) = &build.error {
        let _ = write!(html, "<p class=\"error\">{}</p>", escape(error));
    }
    if log {
        let follow = if build.state == JobState::Running {
            format!(" data-follow=\"/-/builds/{id}/log\" data-lines=\"{TAIL_LINES}\"")
        } else {
            String::new()
        };
        let _ = write!(html, "<pre class=\"log\"{follow}>{}</pre>", escape(&build.log_tail.join("\n")));
    }
    html.push_str("</div>");
    html
}

fn image_link(build: &BuildStatus) -> String {
    let reference = format!("{}:{}", build.image, build.tag);
    format!("<a href=\"/images/{}\">{}</a>", escape(&url_part(&reference)), escape(&reference))
}

/// `3 of 5 derivations, 12.5 s`.
fn progress(build: &BuildStatus) -> String {
    let took = html::duration(build.duration_secs);
    match build.progress.total {
        0 => took,
        total => format!("{} of {total} derivations, {took}", build.progress.built),
    }
}

/// Build `id`, if `identity` may see it (another's is as unknown as a wrong id).
pub fn one(service: &Service, identity: &Identity, id: &str) -> Result<Response, Denied> {
    let Some(job) = visible(service, identity, id)? else {
        return Ok(html::error_page(
            404,
            &format!("no build {id} (finished builds are listed for a while only)"),
            Some(identity),
        ));
    };
    let build = job.status();
    let log = job.log_from(0, Duration::ZERO);
    let title = format!("Build {} of {}:{}", build.id, build.image, build.tag);
    let id = escape(&url_part(&build.id));
    let mut rows = vec![
        ("Image", image_link(&build)),
        ("State", format!("<span class=\"state-{s}\" id=\"state\">{s}</span>", s = state_name(&build))),
        ("Systems", escape(&build.systems.join(", "))),
        ("Why", build.trigger.as_str().to_string()),
        ("Revision", build.revision.as_deref().map(|r| format!("<code>{}</code>", escape(r))).unwrap_or_default()),
        ("Queued", html::time(&build.queued_at)),
    ];
    if build.progress.total > 0 {
        rows.push(("Derivations", format!("{} of {} built", build.progress.built, build.progress.total)));
    }
    let took = if build.finished_at.is_some() { "Took" } else { "So far" };
    rows.push((took, html::duration(build.duration_secs)));
    if let Some(started) = &build.started_at {
        rows.push(("Started", html::time(started)));
    }
    if let Some(finished) = &build.finished_at {
        rows.push(("Finished", html::time(finished)));
    }
    if let Some(digest) = &build.digest {
        rows.push(("Digest", format!("<code>{}</code>", escape(&digest.to_string()))));
    }
    let mut body = format!("<h1>{}</h1><div class=\"card\"><dl class=\"config\">", escape(&title));
    for (key, value) in rows {
        let _ = write!(body, "<dt>{key}</dt><dd>{value}</dd>");
    }
    body.push_str("</dl></div>");
    if let Some(error) = &build.error {
        let _ = write!(body, "<p class=\"error\" id=\"error\">{}</p>", escape(error));
    }
    let follow = if log.finished { String::new() } else { format!(" data-follow=\"/-/builds/{id}/log\"") };
    let _ = write!(
        body,
        "<h2>Log</h2><p class=\"muted\"><a href=\"/-/builds/{id}/log\">As text</a>{live}</p>\
         <pre class=\"log\" id=\"log\"{follow}>{}</pre>",
        escape(&log.text),
        live = if log.finished { "" } else { " · follows the build while it runs" },
    );
    Ok(html::page(200, &title, Some(Section::Builds), Some(identity), &body))
}
