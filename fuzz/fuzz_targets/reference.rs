//! Names, tags and digests, checked against the spec's grammars written as
//! regular expressions: each parser accepts exactly what its grammar does,
//! and what it accepts comes back out unchanged. Routing any path must not
//! panic either.
#![no_main]

use std::sync::LazyLock;

use flakeforge::digest::{Digest, DigestError};
use flakeforge::reference::{RepoName, Tag};
use flakeforge::registry::routes::route;
use libfuzzer_sys::fuzz_target;
use regex::Regex;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    Regex::new(&format!("^{component}(?:/{component})*$")).unwrap()
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap());
static DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").unwrap());
static SHA256: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^sha256:[a-f0-9]{64}$").unwrap());
static SHA512: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^sha512:[a-f0-9]{128}$").unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    let name = RepoName::parse(text);
    assert_eq!(name.is_some(), NAME.is_match(text) && text.len() <= 255, "name {text:?}");
    if let Some(name) = name {
        assert_eq!(name.as_str(), text);
        let canonical = name.canonical();
        assert_eq!(RepoName::parse(&canonical).map(|n| n.canonical()), Some(canonical.clone()), "{text:?}");
        assert!(name.packages().windows(2).all(|pair| pair[0] < pair[1]));
    }

    let tag = Tag::parse(text);
    assert_eq!(tag.is_some(), TAG.is_match(text), "tag {text:?}");
    if let Some(tag) = tag {
        assert_eq!(tag.as_str(), text);
        assert_eq!(tag.is_revision(), text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    let expected = if !DIGEST.is_match(text) || text.len() > 255 {
        Err(DigestError::Invalid)
    } else if text.starts_with("sha256:") {
        if SHA256.is_match(text) {
            Ok(())
        } else {
            Err(DigestError::Invalid)
        }
    } else if text.starts_with("sha512:") {
        if SHA512.is_match(text) {
            Err(DigestError::Unsupported)
        } else {
            Err(DigestError::Invalid)
        }
    } else {
        Err(DigestError::Unsupported)
    };
    match text.parse::<Digest>() {
        Ok(digest) => {
            assert_eq!(expected, Ok(()), "digest {text:?}");
            assert_eq!(digest.to_string(), text);
        }
        Err(error) => assert_eq!(expected, Err(error), "digest {text:?}"),
    }

    let _ = route(text);
    let _ = route(&format!("/v2/{text}"));
});
