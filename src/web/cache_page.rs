//! `GET /cache`: the layer blob cache. How full it is against
//! `--cache-size`, how often a blob asked for was there since the start
//! (from the metrics' counters), and its largest blobs with what they hold
//! and the images that use them. For admins: it names every image.

use std::fmt::Write;

use super::chart::what;
use super::html::{self, escape, short_digest, url_part, Section};
use super::image::layer_users;
use crate::auth::{Denied, Identity};
use crate::http::Response;
use crate::metrics;
use crate::service::{LayerView, Service};

/// Blobs listed.
const LARGEST: usize = 20;

pub fn page(service: &Service, identity: &Identity) -> Result<Response, Denied> {
    identity.require_admin("the cache")?;
    let cache = service.cache_view(LARGEST);
    let counters = &metrics::global().cache;
    let (hits, misses) = (counters.hits.get(), counters.misses.get());
    let ratio = match hits + misses {
        0 => "no blob asked for yet".to_string(),
        asked => format!("{:.1} %", hits as f64 * 100.0 / asked as f64),
    };
    let used_percent = if cache.limit == 0 { 100.0 } else { cache.used as f64 * 100.0 / cache.limit as f64 };
    let mut body = format!(
        "<h1>Cache</h1><div class=\"card\"><dl class=\"config\">\
         <dt>Used</dt><dd id=\"used\">{used} of {limit} ({percent:.1} %), {blobs} blobs</dd></dl>\
         <div class=\"meter\" role=\"meter\" aria-valuemin=\"0\" aria-valuemax=\"100\" aria-valuenow=\"{percent:.0}\">\
         <span style=\"width:{width:.1}%\"></span></div><dl class=\"config\">\
         <dt>Hit ratio</dt><dd id=\"hits\">{ratio} <span class=\"muted\">({hits} hits, {misses} misses since the start)</span></dd>\
         <dt>Evicted</dt><dd>{evictions} blobs, {evicted} since the start</dd></dl></div>",
        used = html::bytes(cache.used),
        limit = html::bytes(cache.limit),
        percent = used_percent,
        width = used_percent.min(100.0),
        blobs = cache.blobs,
        evictions = counters.evictions.get(),
        evicted = html::bytes(counters.evicted_bytes.get()),
    );
    let _ = write!(body, "<h2>Largest blobs</h2>");
    if cache.largest.is_empty() {
        body.push_str("<p class=\"muted\">The cache is empty.</p>");
        return Ok(html::page(200, "Cache", Some(Section::Cache), Some(identity), &body));
    }
    let users = layer_users(service, identity);
    body.push_str(
        "<div class=\"scroll\"><table id=\"largest\"><thead><tr><th>Blob</th><th>Size</th><th>Holds</th>\
         <th>Used by</th></tr></thead><tbody>",
    );
    for (digest, size, record) in &cache.largest {
        let layer = LayerView {
            digest: digest.clone(),
            size: *size,
            cached: true,
            contents: record.as_ref().map(|r| r.source.contents()),
        };
        let used_by: String = users
            .get(digest)
            .into_iter()
            .flatten()
            .map(|user| format!("<a class=\"chip\" href=\"/images/{}\">{}</a>", escape(&url_part(user)), escape(user)))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{used_by}</td></tr>",
            short_digest(digest),
            html::bytes(*size),
            escape(&what(&layer)),
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(html::page(200, "Cache", Some(Section::Cache), Some(identity), &body))
}
