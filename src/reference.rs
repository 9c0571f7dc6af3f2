//! Repository names and tags, validated against the spec's grammar before
//! anything else sees them. A name's `/`-separated segments are packages.
//! A tag is a git ref, except `sha256-<hex>`, the referrers tag of a digest.

use std::fmt;

use crate::digest::Digest;

/// The spec caps `<host>/<name>` at 255 characters in many clients; the name alone can't be longer.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl RepoName {
    pub fn parse(name: &str) -> Option<RepoName> {
        (name.len() <= MAX_NAME_LEN && name.split('/').all(is_name_component)).then(|| RepoName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The packages the name composes: its segments, sorted and without
    /// repeats, so that `a/b` and `b/a` are the same image.
    pub fn packages(&self) -> Vec<&str> {
        let mut segments: Vec<&str> = self.0.split('/').collect();
        segments.sort_unstable();
        segments.dedup();
        segments
    }

    /// `a/b` as written: image `b` of directory `a`, if `a` turns out to be
    /// an image directory (else the packages `a` and `b` composed).
    pub fn directory_and_image(&self) -> Option<(&str, &str)> {
        let (directory, image) = self.0.split_once('/')?;
        (!image.contains('/')).then_some((directory, image))
    }

    /// The key of one build and cache entry: the packages in canonical
    /// order, but two segments as written, since `a/b` may be image `b` of
    /// directory `a` while `b/a` is not (composed, both give the same image).
    pub fn canonical(&self) -> String {
        match self.directory_and_image() {
            Some(_) => self.0.clone(),
            None => self.packages().join("/"),
        }
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_name_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        match &component[sep_start..i] {
            "." | "_" | "__" => {}
            sep if sep.bytes().all(|b| b == b'-') => {}
            _ => return false,
        }
    }
}

impl Tag {
    pub fn parse(tag: &str) -> Option<Tag> {
        let mut bytes = tag.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        (first_ok && rest_ok && tag.len() <= MAX_TAG_LEN).then(|| Tag(tag.to_string()))
    }

    pub fn latest() -> Tag {
        Tag("latest".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A 40-hex git revision names fixed content: its resolution never expires.
    pub fn is_revision(&self) -> bool {
        self.0.len() == 40 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The manifest whose referrers this tag lists, if it is a referrers tag
    /// (`sha256-<64 hex>`, the fallback of the OCI distribution spec for
    /// clients that do not use the referrers API).
    pub fn referrers_subject(&self) -> Option<Digest> {
        Digest::from_hex(self.0.strip_prefix("sha256-")?).ok()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["hello", "a/b", "python3packages.requests", "a__b", "a--b", "a-b_c.d/e0", "0"] {
            assert!(RepoName::parse(name).is_some(), "{name}");
        }
    }

    #[test]
    fn invalid_names() {
        let long = "a".repeat(256);
        for name in [
            "",
            "--option",
            "..",
            "a/../b",
            "a#b",
            "a?b",
            "A",
            "a/",
            "/a",
            "a//b",
            "a.",
            ".a",
            "a___b",
            "a..b",
            "a-.b",
            "a%2Fb",
            "a b",
            "a\0b",
            long.as_str(),
        ] {
            assert!(RepoName::parse(name).is_none(), "{name:?}");
        }
    }

    #[test]
    fn canonical_order() {
        let a = RepoName::parse("jq/curl/jq").unwrap();
        assert_eq!(a.packages(), ["curl", "jq"]);
        assert_eq!(a.canonical(), RepoName::parse("curl/jq/curl").unwrap().canonical());
        assert_eq!(a.directory_and_image(), None);
        let two = RepoName::parse("myapp/web").unwrap();
        assert_eq!(two.directory_and_image(), Some(("myapp", "web")));
        assert_eq!(two.canonical(), "myapp/web");
        assert_eq!(RepoName::parse("hello").unwrap().directory_and_image(), None);
    }

    #[test]
    fn tags() {
        for tag in ["latest", "v1", "_x", "A.b-c_d", &"a".repeat(128)] {
            assert!(Tag::parse(tag).is_some(), "{tag}");
        }
        for tag in ["", ".a", "-a", "a/b", "a:b", "--option", &"a".repeat(129)] {
            assert!(Tag::parse(tag).is_none(), "{tag}");
        }
        assert!(Tag::parse(&"ab12".repeat(10)).unwrap().is_revision());
        assert!(!Tag::latest().is_revision());
        let subject = Tag::parse(&format!("sha256-{}", "ab".repeat(32))).unwrap().referrers_subject();
        assert_eq!(subject.map(|d| d.to_string()), Some(format!("sha256:{}", "ab".repeat(32))));
        for other in ["v1", "sha256-ab", &format!("sha256-{}", "AB".repeat(32)), &format!("sha512-{}", "ab".repeat(32))]
        {
            assert_eq!(Tag::parse(other).unwrap().referrers_subject(), None, "{other}");
        }
    }
}
