//! Which revision a flake reference stands for now: `nix flake metadata
//! --json`, in the shapes of Nix 2.8 and later. A git flake's revision is
//! its commit; anything else (a local path, a tarball, a dirty work tree)
//! is identified by the NAR hash of its source.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NixError;

/// A flake reference pinned to one revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockedFlake {
    /// What to evaluate and build: Nix's locked URL (`…?rev=…`,
    /// `path:…?narHash=…`); a dirty git work tree has none, so its plain URL.
    pub url: String,
    /// The git commit, else `sha256-…` (the NAR hash of the source).
    pub revision: String,
    /// Seconds since the epoch of the revision, when Nix knows it.
    pub last_modified: Option<u64>,
}

impl fmt::Display for LockedFlake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl LockedFlake {
    /// The revision shortened for people: 12 hex digits of a commit, or the hash's start.
    pub fn short_revision(&self) -> &str {
        let end = self.revision.char_indices().nth(12).map_or(self.revision.len(), |(at, _)| at);
        &self.revision[..end]
    }
}

/// Reads what `nix flake metadata --json` printed for `flake`.
pub fn parse_metadata(stdout: &[u8], flake: &str) -> Result<LockedFlake, NixError> {
    let metadata: Value =
        serde_json::from_slice(stdout).map_err(|error| NixError::Output(format!("nix flake metadata: {error}")))?;
    let locked = &metadata["locked"];
    let revision = [&locked["rev"], &metadata["revision"], &locked["narHash"]]
        .into_iter()
        .find_map(Value::as_str)
        .ok_or_else(|| NixError::Output("nix flake metadata: no revision and no narHash".into()))?;
    let url = metadata["url"].as_str().or(metadata["resolvedUrl"].as_str()).unwrap_or(flake);
    let last_modified = locked["lastModified"].as_u64().or(metadata["lastModified"].as_u64());
    Ok(LockedFlake { url: url.to_owned(), revision: revision.to_owned(), last_modified })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_flake_is_its_commit() {
        let json = br#"{"lastModified":1796012743,"locked":{"lastModified":1796012743,"narHash":"sha256-6uP7",
            "ref":"master","rev":"06d1c52891a76780100a10ae0487d4eadcd185b0","revCount":1,"type":"git",
            "url":"file:///tmp/f"},"originalUrl":"git+file:///tmp/f","revision":"06d1c52891a76780100a10ae0487d4eadcd185b0",
            "url":"git+file:///tmp/f?ref=master&rev=06d1c52891a76780100a10ae0487d4eadcd185b0"}"#;
        let locked = parse_metadata(json, "/tmp/f").unwrap();
        assert_eq!(locked.revision, "06d1c52891a76780100a10ae0487d4eadcd185b0");
        assert_eq!(locked.url, "git+file:///tmp/f?ref=master&rev=06d1c52891a76780100a10ae0487d4eadcd185b0");
        assert_eq!((locked.last_modified, locked.short_revision()), (Some(1796012743), "06d1c52891a7"));
    }

    #[test]
    fn a_path_or_a_dirty_tree_is_its_nar_hash() {
        let path = br#"{"lastModified":17,"locked":{"lastModified":17,"narHash":"sha256-6uP7PRYw=","path":"/tmp/f",
            "type":"path"},"url":"path:/tmp/f?lastModified=17&narHash=sha256-6uP7PRYw="}"#;
        let locked = parse_metadata(path, "/tmp/f").unwrap();
        assert_eq!(
            (locked.revision.as_str(), locked.url.as_str()),
            ("sha256-6uP7PRYw=", "path:/tmp/f?lastModified=17&narHash=sha256-6uP7PRYw=")
        );
        let dirty = br#"{"locked":{"lastModified":17,"narHash":"sha256-HdM4","type":"git","url":"file:///tmp/f"},
            "url":"git+file:///tmp/f"}"#;
        assert_eq!(parse_metadata(dirty, "/tmp/f").unwrap().revision, "sha256-HdM4");
        assert!(matches!(parse_metadata(b"{}", "/tmp/f"), Err(NixError::Output(_))));
        assert!(matches!(parse_metadata(b"", "/tmp/f"), Err(NixError::Output(_))));
    }
}
