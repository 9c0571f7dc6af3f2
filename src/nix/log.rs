//! What Nix says on stderr. Every invocation runs with `--log-format
//! internal-json`, so that build progress (derivations built of those to
//! build) is exact instead of guessed from text; this renders those events
//! back into the lines a person reads (`building '…'`, `hello> builder
//! output`, `error: …`), picks out the progress and the error, and makes the
//! error fit for clients: one line, without host paths, store paths' hashes
//! or URLs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Nix's `actBuilds`: the activity whose progress counts derivations.
const ACT_BUILDS: u64 = 104;
/// Nix's `actBuild`: one derivation being built; its first field is the `.drv`.
const ACT_BUILD: u64 = 105;
/// Nix's `resBuildLogLine` and `resPostBuildLogLine`: a line of a builder's output.
const RES_BUILD_LOG_LINE: u64 = 101;
const RES_POST_BUILD_LOG_LINE: u64 = 107;
/// Nix's `resProgress`: `[done, expected, running, failed]`.
const RES_PROGRESS: u64 = 105;
/// Messages and activities above Nix's `lvlInfo` are chatter.
const MAX_SHOWN_LEVEL: u64 = 3;
/// The longest error line a client gets.
const MAX_REASON_CHARS: usize = 300;

/// Derivations built of those a `nix build` has to build.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub built: u64,
    pub total: u64,
}

impl std::ops::Add for Progress {
    type Output = Progress;
    fn add(self, other: Progress) -> Progress {
        Progress { built: self.built + other.built, total: self.total + other.total }
    }
}

/// What one line of stderr amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A line for the log, as a person reads it.
    Line(String),
    Progress(Progress),
    /// Nothing to show (activity bookkeeping, chatter).
    Nothing,
}

/// Reads one invocation's stderr, line by line.
#[derive(Default)]
pub struct Renderer {
    /// Running activities: the `actBuilds` ones, and builds by derivation name.
    activities: HashMap<u64, Activity>,
    /// The last error Nix reported (`error: …`), ANSI codes removed.
    error: Option<String>,
}

enum Activity {
    Builds,
    Build { name: String },
}

impl Renderer {
    pub fn line(&mut self, line: &str) -> Event {
        let Some(json) = line.strip_prefix("@nix ") else {
            // Not Nix's own: git's or a builder's stderr passed through.
            return Event::Line(strip_ansi(line));
        };
        let Ok(event) = serde_json::from_str::<Value>(json) else { return Event::Line(strip_ansi(line)) };
        let id = event["id"].as_u64().unwrap_or_default();
        let shown = |event: &Value| event["level"].as_u64().is_none_or(|level| level <= MAX_SHOWN_LEVEL);
        match event["action"].as_str() {
            Some("msg") if shown(&event) => {
                let text = strip_ansi(event["msg"].as_str().unwrap_or_default());
                if event["level"].as_u64() == Some(0) && text.starts_with("error:") {
                    self.error = Some(text.clone());
                }
                Event::Line(text)
            }
            Some("start") => {
                match event["type"].as_u64() {
                    Some(ACT_BUILDS) => drop(self.activities.insert(id, Activity::Builds)),
                    Some(ACT_BUILD) => {
                        let drv = event["fields"][0].as_str().unwrap_or_default();
                        self.activities.insert(id, Activity::Build { name: derivation_name(drv) });
                    }
                    _ => {}
                }
                let text = event["text"].as_str().unwrap_or_default();
                if text.is_empty() || !shown(&event) {
                    Event::Nothing
                } else {
                    Event::Line(strip_ansi(text))
                }
            }
            Some("stop") => {
                self.activities.remove(&id);
                Event::Nothing
            }
            Some("result") => self.result(id, &event),
            _ => Event::Nothing,
        }
    }

    fn result(&self, id: u64, event: &Value) -> Event {
        let fields = &event["fields"];
        match (event["type"].as_u64(), self.activities.get(&id)) {
            (Some(RES_BUILD_LOG_LINE | RES_POST_BUILD_LOG_LINE), activity) => {
                let name = match activity {
                    Some(Activity::Build { name }) => name.as_str(),
                    _ => "builder",
                };
                Event::Line(format!("{name}> {}", strip_ansi(fields[0].as_str().unwrap_or_default())))
            }
            (Some(RES_PROGRESS), Some(Activity::Builds)) => {
                let number = |i: usize| fields[i].as_u64().unwrap_or_default();
                Event::Progress(Progress { built: number(0), total: number(1) })
            }
            _ => Event::Nothing,
        }
    }

    /// The last `error: …` Nix reported, whole (it may span several lines).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// `hello` of `/nix/store/<hash>-hello.drv`.
fn derivation_name(drv: &str) -> String {
    let base = drv.rsplit('/').next().unwrap_or(drv);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    strip_store_hash(base).unwrap_or(base).to_owned()
}

/// `name` of `<32 base-32 characters>-name`.
fn strip_store_hash(component: &str) -> Option<&str> {
    let (hash, name) = component.split_at_checked(32)?;
    let is_base32 = hash.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    (is_base32 && !name.is_empty()).then_some(())?;
    name.strip_prefix('-').filter(|name| !name.is_empty())
}

/// Removes terminal escape sequences (`ESC [ … letter`) and other control characters but tabs.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' || c == '\n' {
            out.push(c);
        }
    }
    out
}

/// An error of Nix's as a client may see it: its first line without the
/// `error:` prefix, every URL replaced by `<url>`, every absolute path by
/// its last component (a store path by its name, without the hash), at
/// most [`MAX_REASON_CHARS`] characters. What stays is what Nix said went
/// wrong (`builder for 'hello.drv' failed with exit code 3`, `attribute
/// 'x' missing`), never a builder's output: Nix reports that on other lines.
pub fn client_reason(error: &str) -> String {
    let first = error.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or_default();
    let first = first.strip_prefix("error:").unwrap_or(first).trim();
    let redacted = redact(first);
    match redacted.char_indices().nth(MAX_REASON_CHARS) {
        Some((at, _)) => format!("{}…", &redacted[..at]),
        None => redacted,
    }
}

/// Replaces URLs and absolute paths in `text` (see [`client_reason`]).
pub fn redact(text: &str) -> String {
    let is_delimiter = |c: char| c.is_whitespace() || "'\"`‘’“”(),;<>[]{}".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if is_delimiter(c) {
            out.push_str(&redact_token(&token));
            token.clear();
            out.push(c);
        } else {
            token.push(c);
        }
    }
    out.pop();
    out
}

fn redact_token(token: &str) -> String {
    if token.contains("://") {
        return "<url>".into();
    }
    // `path:/x`, `git+file:/x`: a scheme, then a path.
    let path_at = token.find('/').filter(|&at| at == 0 || token[..at].ends_with(':'));
    let Some(at) = path_at else { return token.to_owned() };
    let (prefix, path) = token.split_at(at);
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // From a store path on, only its name and what follows it within it.
    if let Some(store) = components.iter().position(|c| strip_store_hash(c).is_some()) {
        let name = strip_store_hash(components[store]).expect("found above");
        let rest = components[store + 1..].iter().map(|c| format!("/{c}")).collect::<String>();
        return format!("{prefix}{name}{rest}");
    }
    match components.last() {
        Some(last) => format!("{prefix}…/{last}"),
        None => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(lines: &[&str]) -> (Vec<Event>, Renderer) {
        let mut renderer = Renderer::default();
        let events = lines.iter().map(|line| renderer.line(line)).collect();
        (events, renderer)
    }

    /// Lines as Nix 2.8 prints them for a failing build with one dependency.
    const FAILED_BUILD: &[&str] = &[
        r#"@nix {"action":"start","id":1,"level":0,"text":"","type":104}"#,
        r#"@nix {"action":"result","fields":[0,2,0,0],"id":1,"type":105}"#,
        r#"@nix {"action":"start","id":2,"level":6,"text":"querying info about missing paths","type":0}"#,
        r#"@nix {"action":"start","fields":["/nix/store/h4h4k41bmirvzrx7jwfxcmg3dpbm33r4-lc-bad.drv","",1,1],"id":3,"level":3,"text":"building '/nix/store/h4h4k41bmirvzrx7jwfxcmg3dpbm33r4-lc-bad.drv'","type":105}"#,
        r#"@nix {"action":"result","fields":["secret-output"],"id":3,"type":101}"#,
        r#"@nix {"action":"result","fields":[1,2,0,1],"id":1,"type":105}"#,
        r#"@nix {"action":"stop","id":3}"#,
        "fatal: something git said",
        r#"@nix {"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m builder for '\u001b[35;1m/nix/store/h4h4k41bmirvzrx7jwfxcmg3dpbm33r4-lc-bad.drv\u001b[0m' failed with exit code 3\u001b[0m"}"#,
    ];

    #[test]
    fn renders_nix_events_as_lines_and_progress() {
        let (events, renderer) = render(FAILED_BUILD);
        assert_eq!(
            events,
            [
                Event::Nothing,
                Event::Progress(Progress { built: 0, total: 2 }),
                Event::Nothing,
                Event::Line("building '/nix/store/h4h4k41bmirvzrx7jwfxcmg3dpbm33r4-lc-bad.drv'".into()),
                Event::Line("lc-bad> secret-output".into()),
                Event::Progress(Progress { built: 1, total: 2 }),
                Event::Nothing,
                Event::Line("fatal: something git said".into()),
                Event::Line(
                    "error: builder for '/nix/store/h4h4k41bmirvzrx7jwfxcmg3dpbm33r4-lc-bad.drv' failed with exit code 3"
                        .into()
                ),
            ]
        );
        let reason = client_reason(renderer.error().unwrap());
        assert_eq!(reason, "builder for 'lc-bad.drv' failed with exit code 3");
    }

    #[test]
    fn garbage_and_plain_lines_pass_through() {
        let (events, renderer) = render(&["@nix {not json", "plain \u{1b}[1mbold\u{1b}[0m"]);
        assert_eq!(events, [Event::Line("@nix {not json".into()), Event::Line("plain bold".into())]);
        assert!(renderer.error().is_none());
    }

    #[test]
    fn client_reasons_carry_no_paths_or_urls() {
        let cases = [
            (
                "error: getting status of '/srv/secret/flake/flake.nix': No such file",
                "getting status of '…/flake.nix': No such file",
            ),
            (
                "error: unable to download 'https://git.internal.example/x/y?rev=1': HTTP error 404",
                "unable to download '<url>': HTTP error 404",
            ),
            ("error: cannot fetch git+file:///var/lib/x?ref=v1 now", "cannot fetch <url> now"),
            ("error: path:/home/alice/f has no flake.nix", "path:…/f has no flake.nix"),
            (
                "error: file /nix/store/0123456789abcdfghijklmnpqrsvwxyz-src/flake.nix:3:5: x",
                "file src/flake.nix:3:5: x",
            ),
            ("error: this package is broken\n\n       at /srv/flake.nix:3:5:", "this package is broken"),
            ("error: attribute ‘x’ missing", "attribute ‘x’ missing"),
            ("error: 1/2 is not / a path", "1/2 is not / a path"),
        ];
        for (error, reason) in cases {
            assert_eq!(client_reason(error), reason, "{error}");
        }
        let long = format!("error: {}", "x".repeat(1000));
        assert_eq!(client_reason(&long).chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn derivation_names() {
        assert_eq!(derivation_name("/nix/store/h4h4k41bmirvzrx7jwfxcmg3dpbm33r4-lc-bad.drv"), "lc-bad");
        assert_eq!(derivation_name("weird"), "weird");
    }
}
