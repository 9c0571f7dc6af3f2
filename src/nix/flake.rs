//! Which revision a flake reference stands for now: `nix flake metadata
//! --json`, in the shapes of Nix 2.8 and later. A git flake's revision is
//! its commit; anything else (a local path, a tarball, a dirty work tree)
//! is identified by the NAR hash of its source. Its locked inputs (the lock
//! file's nodes) come along, for the provenance of the images built from it.

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
    /// The NAR hash of its source (`sha256-…`), when Nix knows it.
    #[serde(default)]
    pub nar_hash: Option<String>,
    /// Its locked inputs, all of them (inputs of inputs too), in lock file order.
    #[serde(default)]
    pub inputs: Vec<LockedInput>,
}

/// One input of a flake as its lock file pins it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockedInput {
    /// Its path from the flake: `nixpkgs`, `utils/systems` (an input of `utils`).
    pub name: String,
    /// A reference to exactly what was locked (`github:NixOS/nixpkgs/<rev>`).
    pub url: String,
    pub revision: Option<String>,
    pub nar_hash: Option<String>,
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
    Ok(LockedFlake {
        url: url.to_owned(),
        revision: revision.to_owned(),
        last_modified,
        nar_hash: locked["narHash"].as_str().map(str::to_owned),
        inputs: locked_inputs(&metadata["locks"]),
    })
}

/// The nodes of a lock file reachable from its root, each once, named by
/// the first path that reaches it (inputs in name order, breadth first);
/// inputs that `follow` another are that other one.
fn locked_inputs(locks: &Value) -> Vec<LockedInput> {
    let nodes = &locks["nodes"];
    let Some(root) = locks["root"].as_str() else { return Vec::new() };
    let mut seen = std::collections::HashSet::from([root.to_owned()]);
    let mut queue = std::collections::VecDeque::from([(String::new(), root.to_owned())]);
    let mut inputs = Vec::new();
    while let Some((prefix, key)) = queue.pop_front() {
        let Some(edges) = nodes[key.as_str()]["inputs"].as_object() else { continue };
        for (name, target) in edges {
            // A list is a `follows` path: the node it names is listed where it is reached.
            let Some(target) = target.as_str() else { continue };
            if !seen.insert(target.to_owned()) {
                continue;
            }
            let path = format!("{prefix}{name}");
            let locked = &nodes[target]["locked"];
            inputs.push(LockedInput {
                name: path.clone(),
                url: locked_url(locked),
                revision: locked["rev"].as_str().map(str::to_owned),
                nar_hash: locked["narHash"].as_str().map(str::to_owned),
            });
            queue.push_back((format!("{path}/"), target.to_owned()));
        }
    }
    inputs
}

/// A flake reference to what a lock file's `locked` attributes pin.
fn locked_url(locked: &Value) -> String {
    let text = |key: &str| locked[key].as_str().unwrap_or_default();
    let kind = text("type");
    let with_rev = |url: String| match locked["rev"].as_str() {
        Some(rev) => format!("{url}?rev={rev}"),
        None => url,
    };
    match kind {
        "github" | "gitlab" | "sourcehut" => {
            let base = format!("{kind}:{}/{}", text("owner"), text("repo"));
            let base = match locked["rev"].as_str() {
                Some(rev) => format!("{base}/{rev}"),
                None => base,
            };
            match locked["host"].as_str() {
                Some(host) => format!("{base}?host={host}"),
                None => base,
            }
        }
        "git" => with_rev(format!("git+{}", text("url"))),
        "mercurial" => with_rev(format!("hg+{}", text("url"))),
        "path" => format!("path:{}", text("path")),
        "tarball" | "file" => text("url").to_owned(),
        other => other.to_owned(),
    }
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
        assert_eq!((locked.nar_hash.as_deref(), locked.inputs.len()), (Some("sha256-6uP7"), 0));
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
        assert_eq!(parse_metadata(path, "/tmp/f").unwrap().nar_hash.as_deref(), Some("sha256-6uP7PRYw="));
        assert!(matches!(parse_metadata(b"", "/tmp/f"), Err(NixError::Output(_))));
    }

    #[test]
    fn inputs_come_from_the_lock_file_each_once() {
        let json = br#"{"locked":{"narHash":"sha256-root","type":"path","path":"/f"},"url":"path:/f",
            "locks":{"version":7,"root":"root","nodes":{
              "root":{"inputs":{"nixpkgs":"nixpkgs","utils":"utils","helper":"helper"}},
              "nixpkgs":{"locked":{"type":"github","owner":"NixOS","repo":"nixpkgs",
                "rev":"1111111111111111111111111111111111111111","narHash":"sha256-np","lastModified":5},
                "original":{"type":"indirect","id":"nixpkgs"}},
              "utils":{"inputs":{"systems":"systems","nixpkgs":["nixpkgs"]},
                "locked":{"type":"git","url":"https://example.org/utils.git","rev":"2222222222222222222222222222222222222222","narHash":"sha256-u"}},
              "systems":{"locked":{"type":"tarball","url":"https://example.org/s.tar.gz","narHash":"sha256-s"}},
              "helper":{"locked":{"type":"path","path":"/srv/helper","narHash":"sha256-h"}}}}}"#;
        let inputs = parse_metadata(json, "/f").unwrap().inputs;
        let summary: Vec<(&str, &str, Option<&str>)> =
            inputs.iter().map(|i| (i.name.as_str(), i.url.as_str(), i.revision.as_deref())).collect();
        assert_eq!(
            summary,
            [
                ("helper", "path:/srv/helper", None),
                (
                    "nixpkgs",
                    "github:NixOS/nixpkgs/1111111111111111111111111111111111111111",
                    Some("1111111111111111111111111111111111111111")
                ),
                (
                    "utils",
                    "git+https://example.org/utils.git?rev=2222222222222222222222222222222222222222",
                    Some("2222222222222222222222222222222222222222")
                ),
                ("utils/systems", "https://example.org/s.tar.gz", None),
            ]
        );
        assert_eq!(inputs[3].nar_hash.as_deref(), Some("sha256-s"));
    }
}
