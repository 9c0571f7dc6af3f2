//! What every page of the operator's site shares: escaping (everything a
//! page shows goes through [`escape`]), the layout with its inline style
//! and the few lines of script for live updates (no external assets: the
//! registry may have no internet), and the formatting of sizes and digests.

use crate::auth::{Identity, Right};
use crate::digest::Digest;
use crate::http::Response;

/// The section a page belongs to, highlighted in the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Images,
    Builds,
    Cache,
}

impl Section {
    /// Whether `viewer` may open the section's page: what its page checks
    /// (the catalog, the builds) or asks the access control for (the
    /// cache), so that the menu links to no page that answers 401 or 403.
    pub fn open_to(self, viewer: &Identity) -> bool {
        match self {
            Section::Images => viewer.may_some(Right::Pull),
            Section::Builds => super::builds::may_see_builds(viewer),
            Section::Cache => viewer.is_admin(),
        }
    }
}

/// Text made safe to put into HTML, in element content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A path segment or query value made safe to put into a URL (then escaped as HTML where it goes).
pub fn url_part(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `1.5 MiB`: binary units, three significant digits.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if value >= 100.0 => format!("{value:.0} {}", UNITS[unit]),
        _ if value >= 10.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.2} {}", UNITS[unit]),
    }
}

/// `1m 05s`, `3.2 s`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = secs.round() as u64;
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

/// The first 12 hex digits of a digest, with the whole one as a tooltip.
pub fn short_digest(digest: &Digest) -> String {
    format!("<code title=\"{}\">{}</code>", escape(&digest.to_string()), escape(&digest.hex()[..12]))
}

/// A store path's name without `/nix/store/<hash>-`.
pub fn store_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    match file.split_once('-') {
        Some((hash, name)) if hash.len() == 32 && path.contains("/store/") => name,
        _ => file,
    }
}

/// `2024-05-01T12:00:00Z` as `2024-05-01 12:00:00 UTC`.
pub fn time(rfc3339: &str) -> String {
    escape(&rfc3339.replace('T', " ").replace('Z', " UTC"))
}

/// An anonymous viewer of a server with users: the menu offers `/login`,
/// since the sections it lacks may be a login away.
fn may_log_in(viewer: &Identity) -> bool {
    viewer.user().is_none() && viewer.require_login().is_err()
}

/// A whole page: the layout around `body` (already HTML), as a response.
/// Its menu links to the sections `viewer` may open (none for a client
/// that could not be identified), and to `/login` for an anonymous one
/// that could log in.
pub fn page(status: u16, title: &str, section: Option<Section>, viewer: Option<&Identity>, body: &str) -> Response {
    let mut nav: String =
        [("/", "Images", Section::Images), ("/builds", "Builds", Section::Builds), ("/cache", "Cache", Section::Cache)]
            .into_iter()
            .filter(|&(_, _, this)| viewer.is_some_and(|viewer| this.open_to(viewer)))
            .map(|(href, label, this)| {
                let current = if section == Some(this) { " aria-current=\"page\"" } else { "" };
                format!("<a href=\"{href}\"{current}>{label}</a>")
            })
            .collect();
    if viewer.is_some_and(may_log_in) {
        nav.push_str("<a href=\"/login\">Log in</a>");
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · flakeforge</title><style>{STYLE}</style></head>\
         <body><header><a class=\"brand\" href=\"/\">flakeforge</a><nav>{nav}</nav></header>\
         <main>{body}</main><script>{SCRIPT}</script></body></html>\n",
        title = escape(title),
    );
    Response::new(status)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        // Nothing from elsewhere, ever: the inline style and script, and fetches to this server.
        .header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        )
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .bytes(html.into_bytes())
}

/// A page that only says what went wrong, with the menu of `viewer`.
pub fn error_page(status: u16, message: &str, viewer: Option<&Identity>) -> Response {
    let title = match status {
        401 => "Log in",
        403 => "Not allowed",
        404 => "Not found",
        _ => "Error",
    };
    page(status, title, None, viewer, &format!("<h1>{status}</h1><p class=\"notice\">{}</p>", escape(message)))
}

/// The one style sheet: readable on a phone (one column, tables scroll sideways).
const STYLE: &str = r#"
:root{--fg:#1d232a;--muted:#5c6670;--line:#d8dde2;--bg:#f6f7f9;--card:#fff;--accent:#2563eb;--shared:#0d9488;--bad:#b91c1c;--good:#15803d;--warn:#b45309}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.5rem;padding:.7rem 1rem;background:#111827;color:#fff}
header a{color:#d1d5db;text-decoration:none}
header a.brand{color:#fff;font-weight:700;font-size:1.1rem}
nav{display:flex;gap:1rem}
nav a[aria-current]{color:#fff;border-bottom:2px solid #60a5fa}
main{max-width:1100px;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.3rem 0 1rem;word-break:break-all}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
a{color:var(--accent)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;margin:.8rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:var(--card)}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:var(--muted)}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:#0f172a;color:#e2e8f0;padding:.7rem;border-radius:6px;overflow:auto;max-height:32rem;white-space:pre-wrap;word-break:break-all}
.muted{color:var(--muted)}
.chip{display:inline-block;padding:.05rem .45rem;margin:.1rem .2rem .1rem 0;border:1px solid var(--line);border-radius:999px;background:#f1f5f9;font-size:.85rem;white-space:nowrap}
.state-succeeded{color:var(--good)}.state-failed{color:var(--bad)}.state-running{color:var(--accent)}.state-queued{color:var(--warn)}
.notice{padding:.6rem .8rem;border-left:4px solid var(--warn);background:#fffbeb}
.error{padding:.6rem .8rem;border-left:4px solid var(--bad);background:#fef2f2;word-break:break-word}
.pull{display:flex;gap:.4rem;align-items:center;margin:.3rem 0}
.pull input{flex:1;min-width:0;font:13px ui-monospace,monospace;padding:.4rem;border:1px solid var(--line);border-radius:4px;background:#f8fafc}
button{font:inherit;padding:.35rem .7rem;border:1px solid var(--line);border-radius:4px;background:#fff;cursor:pointer}
dl.config{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dl.config dt{font-weight:600}dl.config dd{margin:0;word-break:break-all}
.meter{height:12px;background:#e5e7eb;border-radius:6px;overflow:hidden;margin:.4rem 0}
.meter span{display:block;height:100%;background:var(--accent)}
svg.layers{display:block;overflow:visible}
svg.layers text{font:13px system-ui,sans-serif;fill:var(--fg)}
svg.layers .bar{fill:var(--accent)}svg.layers .bar.shared{fill:var(--shared)}
.legend{margin-top:0}
.legend span{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;vertical-align:middle;margin:0 .3rem 0 .8rem}
details summary{cursor:pointer}
ul.paths{margin:.3rem 0;padding-left:1.2rem;word-break:break-all}
form.filter{display:flex;gap:.4rem;margin:.5rem 0 1rem}
form.filter input{flex:1;max-width:20rem;padding:.35rem;border:1px solid var(--line);border-radius:4px}
"#;

/// Live updates, the only script: a `<pre data-follow=URL>` shows the log
/// streamed from URL (its last `data-lines` lines if set) and reloads the
/// page when the log ends; `data-reload=SECS` on a page's main element
/// reloads it while nothing streams; copy buttons copy their input.
const SCRIPT: &str = r#"
document.querySelectorAll('pre[data-follow]').forEach(async pre => {
  const keep = Number(pre.dataset.lines || 0);
  try {
    const response = await fetch(pre.dataset.follow, {cache: 'no-store'});
    if (!response.ok) return;
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      text += decoder.decode(value, {stream: true});
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      pre.textContent = keep ? text.trimEnd().split('\n').slice(-keep).join('\n') : text;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    pre.dataset.ended = 'true';
    setTimeout(() => location.reload(), 1500);
  } catch (e) { pre.dataset.ended = 'error'; }
});
const reload = document.querySelector('[data-reload]');
if (reload && !document.querySelector('pre[data-follow]')) setTimeout(() => location.reload(), 1000 * Number(reload.dataset.reload));
document.querySelectorAll('button[data-copy]').forEach(button => button.addEventListener('click', () => {
  const input = document.getElementById(button.dataset.copy);
  input.select();
  (navigator.clipboard ? navigator.clipboard.writeText(input.value) : Promise.reject()).catch(() => document.execCommand('copy'));
  button.textContent = 'Copied';
}));
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape("<script>alert('x')</script>"), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
        assert_eq!(escape("a \"b\" & c"), "a &quot;b&quot; &amp; c");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn url_parts_keep_names_and_encode_the_rest() {
        assert_eq!(url_part("curl/jq:v1.2_3"), "curl/jq:v1.2_3");
        assert_eq!(url_part("a b\"<>?#&"), "a%20b%22%3C%3E%3F%23%26");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(25 * 1024 * 1024 + 1), "25.0 MiB");
        assert_eq!(bytes(300 << 30), "300 GiB");
        assert_eq!(duration(3.25), "3.2 s");
        assert_eq!(duration(65.0), "1m 05s");
    }

    #[test]
    fn store_names_drop_the_hash() {
        assert_eq!(store_name("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-busybox-1.36"), "busybox-1.36");
        assert_eq!(store_name("/srv/image.tar"), "image.tar");
    }

    fn text(response: &Response) -> String {
        let crate::http::Body::Bytes(body) = &response.body else { panic!("a page has a body") };
        String::from_utf8_lossy(body).into_owned()
    }

    /// A client of a server without access control: it may open everything.
    fn anyone() -> Identity {
        let guard = crate::auth::Guard::open(&crate::auth::AuthOptions::default()).unwrap();
        let request = crate::http::Request {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        guard.identify(&request).unwrap()
    }

    #[test]
    fn a_page_escapes_its_title_and_shuts_out_other_origins() {
        let response = page(200, "<b>", Some(Section::Cache), Some(&anyone()), "<p>body</p>");
        let html = text(&response);
        assert!(html.contains("<title>&lt;b&gt; · flakeforge</title>") && html.contains("<p>body</p>"));
        assert!(html.contains(
            "<nav><a href=\"/\">Images</a><a href=\"/builds\">Builds</a><a href=\"/cache\" aria-current=\"page\">Cache</a></nav>"
        ));
        let policy = response.headers.iter().find(|(name, _)| name == "Content-Security-Policy").unwrap();
        assert!(policy.1.starts_with("default-src 'none'"));
    }

    #[test]
    fn a_client_not_identified_gets_no_menu() {
        assert!(text(&error_page(401, "wrong user name or password", None)).contains("<nav></nav>"));
    }
}
