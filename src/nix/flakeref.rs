//! From an image tag to a flake reference: `latest` is the flake as
//! configured, any other tag a git ref (or a 40-hex rev) of it.
//!
//! - `github:o/r[/ref]` (and `gitlab:`, `sourcehut:`): `github:o/r/TAG`.
//! - `git+https://…`, `git+ssh://…`, `git+file://…`, `git://…`: `?ref=TAG` or
//!   `?rev=TAG`, other parameters (`dir`) kept.
//! - A local path (`.`, `./x`, `/x`, `path:/x`) in a git work tree:
//!   `git+file://<work tree>?dir=<subdir>&ref=TAG`, as Nix itself reads a
//!   path in a git repository.
//! - Anything else (tarballs, indirect `flake:` references, a path outside
//!   git) has no refs: [`NixError::NoRefs`].

use std::path::{Path, PathBuf};

use super::NixError;

/// Selects `tag` of `flake`. Tags are validated before they get here
/// (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`), so they need no escaping.
pub fn for_tag(flake: &str, tag: &str) -> Result<String, NixError> {
    if tag == "latest" {
        return Ok(flake.to_owned());
    }
    let no_refs = || NixError::NoRefs { flake: flake.to_owned() };
    let (url, query) = flake.split_once('?').unwrap_or((flake, ""));
    let params = || query.split('&').filter(|param| !param.is_empty());

    if let Some((scheme, repo)) = split_hosted(url) {
        let mut segments = repo.split('/');
        let (Some(owner), Some(name)) = (segments.next(), segments.next()) else { return Err(no_refs()) };
        return Ok(with_query(format!("{scheme}:{owner}/{name}/{tag}"), params().filter(|p| !is_ref_param(p))));
    }
    if url.starts_with("git+") || url.starts_with("git://") {
        let selected = git_selector(tag);
        return Ok(with_query(url.to_owned(), params().filter(|p| !is_ref_param(p)).chain([selected.as_str()])));
    }
    let path = match url.strip_prefix("path:") {
        Some(path) => path,
        None if is_plain_path(url) => url,
        None => return Err(no_refs()),
    };
    let (work_tree, subdir) = find_work_tree(Path::new(path)).ok_or_else(no_refs)?;
    // `path:` parameters (narHash, lastModified) mean nothing to git; `dir` does.
    let dir = params().find_map(|p| p.strip_prefix("dir=")).map(Path::new);
    let subdir = dir.map_or(subdir.clone(), |dir| subdir.join(dir));
    let dir_param = (!subdir.as_os_str().is_empty()).then(|| format!("dir={}", subdir.display()));
    let selected = git_selector(tag);
    let url = format!("git+file://{}", work_tree.display());
    Ok(with_query(url, dir_param.iter().map(String::as_str).chain([selected.as_str()])))
}

/// `("github", "o/r/ref")` for a reference to a hosted git forge.
fn split_hosted(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    matches!(scheme, "github" | "gitlab" | "sourcehut").then_some((scheme, rest))
}

fn is_plain_path(url: &str) -> bool {
    url.starts_with('/') || url == "." || url == ".." || url.starts_with("./") || url.starts_with("../")
}

/// `rev=` for a commit hash, `ref=` for anything else.
fn git_selector(tag: &str) -> String {
    let is_rev = tag.len() == 40 && tag.bytes().all(|b| b.is_ascii_hexdigit());
    if is_rev {
        format!("rev={}", tag.to_ascii_lowercase())
    } else {
        format!("ref={tag}")
    }
}

fn is_ref_param(param: &str) -> bool {
    let key = param.split_once('=').map_or(param, |(key, _)| key);
    key == "ref" || key == "rev"
}

fn with_query<'a>(url: String, params: impl Iterator<Item = &'a str>) -> String {
    let query = params.collect::<Vec<_>>().join("&");
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// The git work tree holding `path` (absolute, made so against the working
/// directory) and `path` relative to it.
fn find_work_tree(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let path = std::path::absolute(path).ok()?;
    let path = path.canonicalize().unwrap_or(path);
    let work_tree = path.ancestors().find(|dir| dir.join(".git").exists())?;
    let subdir = path.strip_prefix(work_tree).ok()?.to_path_buf();
    Some((work_tree.to_path_buf(), subdir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn tagged(flake: &str, tag: &str) -> String {
        for_tag(flake, tag).unwrap()
    }

    #[test]
    fn latest_is_the_flake_itself() {
        assert_eq!(tagged("tarball+https://x/y.tar.gz", "latest"), "tarball+https://x/y.tar.gz");
    }

    #[test]
    fn hosted_forges_get_a_ref_segment() {
        assert_eq!(tagged("github:o/r", "v1"), "github:o/r/v1");
        assert_eq!(tagged("github:o/r/main?dir=sub", "v1"), "github:o/r/v1?dir=sub");
        assert_eq!(tagged("gitlab:o/r?ref=main&host=git.example", REV), format!("gitlab:o/r/{REV}?host=git.example"));
        assert_eq!(tagged("sourcehut:~o/r", "v1.0"), "sourcehut:~o/r/v1.0");
        assert!(matches!(for_tag("github:o", "v1"), Err(NixError::NoRefs { .. })));
    }

    #[test]
    fn git_urls_get_a_ref_or_rev_parameter() {
        assert_eq!(tagged("git+https://x/y.git", "v1"), "git+https://x/y.git?ref=v1");
        assert_eq!(tagged("git+ssh://git@x/y?dir=sub&ref=main", "v1"), "git+ssh://git@x/y?dir=sub&ref=v1");
        assert_eq!(tagged("git+file:///src/y?rev=abc&dir=a", REV), format!("git+file:///src/y?dir=a&rev={REV}"));
        assert_eq!(tagged("git://x/y", &REV.to_uppercase()), format!("git://x/y?rev={REV}"));
    }

    #[test]
    fn other_flakes_have_no_refs() {
        for flake in ["https://x/y.tar.gz", "flake:nixpkgs", "nixpkgs", "tarball+https://x/y", "hg+https://x/y"] {
            assert!(matches!(for_tag(flake, "v1"), Err(NixError::NoRefs { .. })), "{flake}");
        }
    }

    #[test]
    fn local_paths_in_git_become_git_file_urls() {
        let scratch = crate::test_dir::TestDir::new();
        let root = scratch.path().join("root");
        std::fs::create_dir_all(root.join("repo/.git")).unwrap();
        std::fs::create_dir_all(root.join("repo/sub")).unwrap();
        std::fs::create_dir_all(root.join("plain")).unwrap();
        let root = root.canonicalize().unwrap();
        let repo = root.join("repo");
        let (repo_s, root_s) = (repo.display().to_string(), root.display().to_string());

        assert_eq!(tagged(&repo_s, "v1"), format!("git+file://{repo_s}?ref=v1"));
        assert_eq!(tagged(&format!("path:{repo_s}/sub"), REV), format!("git+file://{repo_s}?dir=sub&rev={REV}"));
        let with_dir = format!("path:{repo_s}?dir=sub&narHash=sha256-x");
        assert_eq!(tagged(&with_dir, "v1"), format!("git+file://{repo_s}?dir=sub&ref=v1"));
        assert!(matches!(for_tag(&format!("{root_s}/plain"), "v1"), Err(NixError::NoRefs { .. })));
    }
}
