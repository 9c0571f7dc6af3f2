//! Where an image comes from (the flake, the revision built, its packages
//! and the system) and what the image says of it: the OCI annotations
//! `org.opencontainers.image.*` on its manifest, and the same as `Labels`
//! in a config flakeforge writes itself. The SBOM and the provenance start
//! from here too.
//!
//! Everything here is a function of the revision, never of the moment or
//! of the tag that asked: `latest` and `v1` at one commit are one image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::nix::LockedFlake;

pub const SOURCE: &str = "org.opencontainers.image.source";
pub const REVISION: &str = "org.opencontainers.image.revision";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const TITLE: &str = "org.opencontainers.image.title";
pub const VERSION: &str = "org.opencontainers.image.version";

/// What an image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOrigin {
    /// The image name: its packages in order (`curl/jq`, also for `jq/curl`),
    /// or `a/b` as written for image `b` of directory `a`.
    pub name: String,
    /// The flake reference served, as configured.
    pub flake: String,
    /// The revision built.
    pub locked: LockedFlake,
    /// The Nix system it is built for.
    pub system: String,
    /// The flake's packages it is made of, in the order of the name.
    pub packages: Vec<OriginPackage>,
}

/// One package of the flake that an image is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPackage {
    /// Its attribute path in the flake (`packages.x86_64-linux.hello`).
    pub attr_path: String,
    /// What was built of it (for an image defined by a conf: the conf).
    pub outputs: Vec<PathBuf>,
    /// Its `version` attribute, if it has one.
    pub version: Option<String>,
}

impl ImageOrigin {
    /// The version of the software in the image: that of its one package.
    pub fn version(&self) -> Option<&str> {
        match self.packages.as_slice() {
            [only] => only.version.as_deref(),
            _ => None,
        }
    }

    /// When the revision was made (its `lastModified`), in RFC 3339: the
    /// same for every build of it, unlike the time of the build.
    pub fn created(&self) -> Option<String> {
        self.locked.last_modified.map(rfc3339)
    }

    /// Nix's locked reference to the revision, without the git ref a tag
    /// selected it by (`?ref=v1`): one revision is one source, whichever
    /// tag asked for it.
    pub fn source_url(&self) -> String {
        let url = &self.locked.url;
        let Some((base, query)) = url.split_once('?') else { return url.clone() };
        let kept: Vec<&str> = query.split('&').filter(|param| !param.starts_with("ref=")).collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    }

    /// The image's annotations (and, in its own config, its labels).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        annotations(&self.name, &self.flake, &self.locked, self.version())
    }
}

/// `source` (the flake reference served), `revision` (the git commit, or
/// the NAR hash of a flake that is not in git), `created` (when the
/// revision was made) where Nix knows it, `title` (the image name) and
/// `version` where known.
pub fn annotations(title: &str, flake: &str, locked: &LockedFlake, version: Option<&str>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (SOURCE.to_owned(), flake.to_owned()),
        (REVISION.to_owned(), locked.revision.clone()),
        (TITLE.to_owned(), title.to_owned()),
    ]);
    if let Some(created) = locked.last_modified {
        annotations.insert(CREATED.to_owned(), rfc3339(created));
    }
    if let Some(version) = version {
        annotations.insert(VERSION.to_owned(), version.to_owned());
    }
    annotations
}

/// `2024-05-01T12:00:00Z` of seconds since the epoch.
pub fn rfc3339(unix_seconds: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix_seconds.try_into().unwrap_or(i64::MAX)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "1970-01-01T00:00:00Z".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str, last_modified: Option<u64>, versions: &[Option<&str>]) -> ImageOrigin {
        ImageOrigin {
            name: "hello".into(),
            flake: "github:me/images".into(),
            locked: LockedFlake {
                url: url.into(),
                revision: "0123456789abcdef0123456789abcdef01234567".into(),
                last_modified,
                nar_hash: None,
                inputs: vec![],
            },
            system: "x86_64-linux".into(),
            packages: versions
                .iter()
                .map(|version| OriginPackage {
                    attr_path: "packages.x86_64-linux.hello".into(),
                    outputs: vec![],
                    version: version.map(Into::into),
                })
                .collect(),
        }
    }

    #[test]
    fn annotations_say_source_revision_time_title_and_version() {
        let one = origin("github:me/images/0123", Some(1_700_000_000), &[Some("2.12")]);
        let annotations = one.annotations();
        assert_eq!(annotations[SOURCE], "github:me/images");
        assert_eq!(annotations[REVISION], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(annotations[CREATED], "2023-11-14T22:13:20Z");
        assert_eq!((annotations[TITLE].as_str(), annotations[VERSION].as_str()), ("hello", "2.12"));
        // Two packages have no one version; an unknown time is left out.
        let two = origin("path:/f", None, &[Some("1"), Some("2")]).annotations();
        assert!(!two.contains_key(VERSION) && !two.contains_key(CREATED) && two.len() == 3);
    }

    #[test]
    fn the_source_url_drops_the_ref_a_tag_chose() {
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let tagged = origin(&format!("git+file:///srv/f?dir=sub&ref=v1&rev={rev}"), None, &[]);
        assert_eq!(tagged.source_url(), format!("git+file:///srv/f?dir=sub&rev={rev}"));
        assert_eq!(origin("git+file:///srv/f?ref=main", None, &[]).source_url(), "git+file:///srv/f");
        assert_eq!(origin("github:me/images/abc", None, &[]).source_url(), "github:me/images/abc");
    }
}
