//! The policy: which image names anonymous clients, every logged-in user
//! and each user may pull and may build (glob patterns), and who is an
//! admin or may ask for a refresh. Read from `--policy FILE` (JSON if the
//! name ends in `.json`, TOML otherwise; the format is in the README), or
//! one of the two built-in policies when there is no file.
//!
//! A client's rights are the union of `anonymous`'s, then for a logged-in
//! user `authenticated`'s and `users.<name>`'s. The build right on a name
//! implies the pull right on it; `admin` implies every right.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use super::Right;

/// The file as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PolicyFileDoc {
    #[serde(default)]
    anonymous: GrantsDoc,
    #[serde(default)]
    authenticated: GrantsDoc,
    #[serde(default)]
    users: BTreeMap<String, GrantsDoc>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantsDoc {
    #[serde(default)]
    pull: Vec<String>,
    #[serde(default)]
    build: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    refresh: bool,
}

/// What one section of the policy grants.
#[derive(Debug, Default)]
struct Grants {
    pull: Patterns,
    build: Patterns,
    admin: bool,
    refresh: bool,
}

/// Glob patterns of image names, as one anchored regular expression.
#[derive(Debug, Default)]
struct Patterns {
    regex: Option<Regex>,
    /// `**` is among them: every name matches.
    everything: bool,
}

#[derive(Debug)]
pub struct Policy {
    anonymous: Grants,
    authenticated: Grants,
    users: HashMap<String, Grants>,
}

impl Policy {
    /// Without `--htpasswd` and `--policy`: anyone may do anything, as
    /// before access control existed.
    pub fn open() -> Policy {
        Policy { anonymous: Grants::everything(), authenticated: Grants::default(), users: HashMap::new() }
    }

    /// With `--htpasswd` and no `--policy`: every user in the file may do
    /// anything, anonymous clients nothing.
    pub fn users_only() -> Policy {
        Policy { anonymous: Grants::default(), authenticated: Grants::everything(), users: HashMap::new() }
    }

    /// A policy file's text; `json` picks the format.
    pub fn parse(text: &str, json: bool) -> Result<Policy, String> {
        let doc: PolicyFileDoc = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?
        };
        let section = |name: &str, doc: GrantsDoc| Grants::from_doc(doc).map_err(|e| format!("{name}: {e}"));
        let mut users = HashMap::new();
        for (user, grants) in doc.users {
            if user.is_empty() || user.contains(':') {
                return Err(format!("users.{user:?}: not a user name of an htpasswd file"));
            }
            users.insert(user.clone(), section(&format!("users.{user}"), grants)?);
        }
        Ok(Policy {
            anonymous: section("anonymous", doc.anonymous)?,
            authenticated: section("authenticated", doc.authenticated)?,
            users,
        })
    }

    /// Reads `path`: JSON if its name ends in `.json`, TOML otherwise.
    pub fn read(path: &Path) -> Result<Policy, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("--policy {}: {e}", path.display()))?;
        let json = path.extension().is_some_and(|ext| ext == "json");
        Policy::parse(&text, json).map_err(|e| format!("--policy {}: {e}", path.display()))
    }

    /// The sections that apply to `user` (`None`: anonymous).
    fn sections<'a>(&'a self, user: Option<&str>) -> impl Iterator<Item = &'a Grants> {
        let logged_in = user.map(|user| [Some(&self.authenticated), self.users.get(user)]);
        std::iter::once(&self.anonymous).chain(logged_in.into_iter().flatten().flatten())
    }

    /// Whether `user` may exercise `right` on the image `name` (canonical).
    pub fn allows(&self, user: Option<&str>, right: Right, name: &str) -> bool {
        self.sections(user).any(|grants| grants.patterns(right).any(|patterns| patterns.matches(name)))
    }

    /// Whether `user` has `right` on some name.
    pub fn allows_some(&self, user: Option<&str>, right: Right) -> bool {
        self.sections(user).any(|grants| grants.patterns(right).any(|patterns| patterns.regex.is_some()))
    }

    /// Whether `user` has `right` on every name.
    pub fn allows_every(&self, user: Option<&str>, right: Right) -> bool {
        self.sections(user).any(|grants| grants.patterns(right).any(|patterns| patterns.everything))
    }

    pub fn is_admin(&self, user: Option<&str>) -> bool {
        self.sections(user).any(|grants| grants.admin)
    }

    /// Whether `user` may ask the server to look at the flake now (`POST /-/refresh`).
    pub fn may_refresh(&self, user: Option<&str>) -> bool {
        self.sections(user).any(|grants| grants.admin || grants.refresh)
    }

    /// The users the policy names.
    pub fn user_names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl Grants {
    fn everything() -> Grants {
        Grants { pull: Patterns::everything(), build: Patterns::everything(), admin: true, refresh: true }
    }

    fn from_doc(doc: GrantsDoc) -> Result<Grants, String> {
        Ok(Grants {
            pull: Patterns::compile(&doc.pull).map_err(|e| format!("pull: {e}"))?,
            build: Patterns::compile(&doc.build).map_err(|e| format!("build: {e}"))?,
            admin: doc.admin,
            refresh: doc.refresh,
        })
    }

    /// The patterns that give `right`: building implies pulling, and an admin may do both.
    fn patterns(&self, right: Right) -> impl Iterator<Item = &Patterns> {
        let admin = self.admin.then(Patterns::everything_ref);
        let pull = (right == Right::Pull).then_some(&self.pull);
        admin.into_iter().chain([&self.build]).chain(pull)
    }
}

impl Patterns {
    fn everything() -> Patterns {
        Patterns::compile(&["**".to_string()]).expect("** is a pattern")
    }

    fn everything_ref() -> &'static Patterns {
        static EVERYTHING: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
        EVERYTHING.get_or_init(Patterns::everything)
    }

    /// `*` stands for any characters but `/` (within one segment of a
    /// name), `**` for any characters, `?` for one character but `/`.
    fn compile(patterns: &[String]) -> Result<Patterns, String> {
        if patterns.is_empty() {
            return Ok(Patterns::default());
        }
        let mut alternatives = Vec::new();
        for pattern in patterns {
            alternatives.push(glob_to_regex(pattern)?);
        }
        let regex = Regex::new(&format!("^(?:{})$", alternatives.join("|"))).map_err(|e| e.to_string())?;
        Ok(Patterns { regex: Some(regex), everything: patterns.iter().any(|p| p == "**") })
    }

    fn matches(&self, name: &str) -> bool {
        self.regex.as_ref().is_some_and(|regex| regex.is_match(name))
    }
}

/// One glob pattern as a regular expression (not anchored).
fn glob_to_regex(pattern: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*?".contains(c);
    if pattern.is_empty() || !pattern.chars().all(allowed) {
        return Err(format!(
            "{pattern:?} is not a pattern of image names (lowercase letters, digits, '.', '_', '-', '/', and the wildcards '*', '**' and '?')"
        ));
    }
    let mut regex = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                regex.push_str(".*");
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            other => regex.push_str(&regex::escape(&other.to_string())),
        }
    }
    Ok(regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        [anonymous]
        pull = ["motd", "public/*"]

        [authenticated]
        pull = ["hello"]

        [users.alice]
        admin = true

        [users.bob]
        pull = ["tools/**", "app-?"]
        build = ["app-*"]

        [users.ci]
        refresh = true
    "#;

    #[test]
    fn rights_are_the_union_of_the_sections_that_apply() {
        let policy = Policy::parse(TOML, false).unwrap();
        let (bob, alice, ci) = (Some("bob"), Some("alice"), Some("ci"));
        assert!(policy.allows(None, Right::Pull, "motd"));
        assert!(!policy.allows(None, Right::Pull, "hello"));
        assert!(policy.allows(ci, Right::Pull, "hello") && policy.allows(ci, Right::Pull, "motd"));
        assert!(!policy.allows(ci, Right::Build, "motd"));
        assert!(policy.allows(bob, Right::Pull, "tools/jq") && policy.allows(bob, Right::Pull, "tools/a/b"));
        assert!(policy.allows(bob, Right::Pull, "app-1") && !policy.allows(bob, Right::Pull, "tool"));
        assert!(policy.allows(bob, Right::Build, "app-12") && !policy.allows(bob, Right::Build, "app-1/x"));
        assert!(!policy.allows(bob, Right::Build, "hello"));
        // Building implies pulling.
        assert!(policy.allows(bob, Right::Pull, "app-12"));
        // Names not listed get `authenticated`'s rights.
        assert!(policy.allows(Some("nobody"), Right::Pull, "hello"));
        assert!(policy.allows(alice, Right::Build, "anything/at/all"));
        assert!(policy.is_admin(alice) && !policy.is_admin(bob));
        assert!(policy.may_refresh(ci) && policy.may_refresh(alice) && !policy.may_refresh(bob));
        assert!(policy.allows_some(bob, Right::Build) && !policy.allows_some(ci, Right::Build));
        assert!(!policy.allows_every(bob, Right::Pull) && policy.allows_every(alice, Right::Pull));
        assert!(policy.allows_some(None, Right::Pull) && !policy.allows_some(None, Right::Build));
    }

    #[test]
    fn wildcards_stay_within_a_segment_but_double_stars() {
        let patterns = Patterns::compile(&["a/*".into(), "b?c".into(), "x.y".into()]).unwrap();
        assert!(patterns.matches("a/b") && !patterns.matches("a/b/c") && !patterns.matches("a"));
        assert!(patterns.matches("bxc") && !patterns.matches("b/c") && !patterns.matches("bc"));
        // Dots are no wildcards.
        assert!(patterns.matches("x.y") && !patterns.matches("xzy"));
        let everything = Patterns::compile(&["**".into()]).unwrap();
        assert!(everything.everything && everything.matches("a/b/c"));
        assert!(!Patterns::compile(&["*".into()]).unwrap().matches("a/b"));
        assert!(!Patterns::default().matches("a"));
    }

    #[test]
    fn json_is_read_as_toml_is() {
        let json = r#"{"anonymous": {"pull": ["motd"]}, "users": {"bob": {"build": ["app-*"]}}}"#;
        let policy = Policy::parse(json, true).unwrap();
        assert!(policy.allows(None, Right::Pull, "motd") && policy.allows(Some("bob"), Right::Build, "app-x"));
        assert_eq!(policy.user_names().collect::<Vec<_>>(), ["bob"]);
        // As the NixOS module renders it: every field of every section.
        let rendered = r#"{"anonymous":{"admin":false,"build":[],"pull":["**"],"refresh":false},
            "authenticated":{"admin":false,"build":["**"],"pull":[],"refresh":false},
            "users":{"ci":{"admin":false,"build":[],"pull":[],"refresh":true}}}"#;
        let policy = Policy::parse(rendered, true).unwrap();
        assert!(policy.allows(None, Right::Pull, "a/b") && !policy.allows(None, Right::Build, "a"));
        assert!(policy.allows(Some("x"), Right::Build, "a") && policy.may_refresh(Some("ci")));
    }

    #[test]
    fn mistakes_are_errors_that_say_where() {
        let typo = Policy::parse("[users.bob]\npul = [\"a\"]\n", false).unwrap_err();
        assert!(typo.contains("pul"), "{typo}");
        let upper = Policy::parse("[anonymous]\npull = [\"Hello\"]\n", false).unwrap_err();
        assert!(upper.starts_with("anonymous: pull: \"Hello\" is not a pattern"), "{upper}");
        let json = Policy::parse(r#"{"users": {"a:b": {}}}"#, true).unwrap_err();
        assert!(json.contains("a:b"), "{json}");
        assert!(Policy::parse("[anonymous]\npull = \"hello\"\n", false).is_err());
    }

    #[test]
    fn built_in_policies() {
        let open = Policy::open();
        assert!(open.allows(None, Right::Build, "a/b") && open.is_admin(None));
        let users_only = Policy::users_only();
        assert!(!users_only.allows_some(None, Right::Pull) && !users_only.may_refresh(None));
        assert!(users_only.allows(Some("anyone"), Right::Build, "a") && users_only.is_admin(Some("anyone")));
    }
}
