//! The JSON that `nix build --json` and `nix path-info --json` print, in the
//! shapes of both Nix 2.8 (lists) and current Nix (objects keyed by path).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{NixError, PathInfo};

/// Where store paths live when the JSON does not say.
const DEFAULT_STORE_DIR: &str = "/nix/store";

/// One element of `nix build --json`: a built derivation, or a store path
/// given as the installable (`{"path": ...}`). Other fields (`startTime`...)
/// are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Built {
    drv_path: Option<String>,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    path: Option<String>,
}

/// The output paths of `nix build --json`, `out` first, then by output name.
pub fn build_outputs(stdout: &[u8]) -> Result<Vec<PathBuf>, NixError> {
    let built: Vec<Built> = parse(stdout, "nix build")?;
    let mut paths = Vec::new();
    for mut built in built {
        let store_dir = built.drv_path.as_deref().and_then(store_dir_of).unwrap_or(Path::new(DEFAULT_STORE_DIR));
        let out = built.outputs.remove("out");
        let outputs = out.into_iter().chain(built.outputs.into_values()).chain(built.path);
        paths.extend(outputs.map(|output| store_path(&output, store_dir)));
    }
    if paths.is_empty() {
        return Err(NixError::Output("nix build printed no output paths".into()));
    }
    Ok(paths)
}

/// One store path of `nix path-info --json`; `path` is only in the list shape.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPathInfo {
    path: Option<String>,
    nar_size: Option<u64>,
    /// A string in every shape so far; anything else is taken as no hash.
    nar_hash: Option<serde_json::Value>,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    valid: Option<bool>,
    store_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PathInfos {
    /// Nix 2.8 to 2.18.
    List(Vec<RawPathInfo>),
    /// Nix 2.19 and later; `null` for a path that is not valid.
    ByPath(BTreeMap<String, Option<RawPathInfo>>),
}

/// The closure printed by `nix path-info --recursive --json`, sorted by path.
/// Any path that is not valid makes it an error. Newer Nix may print store
/// paths without their directory; they are taken to be in `store_dir`.
pub fn path_infos(stdout: &[u8], store_dir: &Path) -> Result<Vec<PathInfo>, NixError> {
    let entries: Vec<(Option<String>, Option<RawPathInfo>)> = match parse(stdout, "nix path-info")? {
        PathInfos::List(list) => list.into_iter().map(|info| (info.path.clone(), Some(info))).collect(),
        PathInfos::ByPath(by_path) => by_path.into_iter().map(|(path, info)| (Some(path), info)).collect(),
    };
    let mut infos = Vec::with_capacity(entries.len());
    for (path, info) in entries {
        let path = path.ok_or_else(|| NixError::Output("nix path-info printed a path without a name".into()))?;
        let info = info.filter(|info| info.valid != Some(false));
        let not_valid = || NixError::Output(format!("{path} is not a valid store path"));
        let info = info.ok_or_else(not_valid)?;
        let nar_size = info.nar_size.ok_or_else(not_valid)?;
        let store_dir = info.store_dir.as_deref().map_or(store_dir, Path::new);
        let mut references: Vec<PathBuf> = info.references.iter().map(|r| store_path(r, store_dir)).collect();
        references.sort();
        references.dedup();
        let nar_hash = info.nar_hash.as_ref().and_then(|hash| hash.as_str()).unwrap_or_default().to_owned();
        let deriver = info.deriver.as_deref().map(|deriver| store_path(deriver, store_dir));
        infos.push(PathInfo { path: store_path(&path, store_dir), nar_size, nar_hash, references, deriver });
    }
    infos.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(infos)
}

/// The store directory of a store path (`/nix/store` of `/nix/store/x-y`).
pub fn store_dir_of(path: &str) -> Option<&Path> {
    Path::new(path).parent().filter(|dir| dir.is_absolute())
}

fn store_path(path: &str, store_dir: &Path) -> PathBuf {
    // Absolute paths are kept; bare `hash-name`s are joined to the store dir.
    store_dir.join(path)
}

fn parse<'a, T: Deserialize<'a>>(stdout: &'a [u8], command: &str) -> Result<T, NixError> {
    serde_json::from_slice(stdout).map_err(|error| NixError::Output(format!("{command}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(paths: &[&str]) -> Vec<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn build_outputs_puts_out_first() {
        let json = br#"[{"drvPath": "/nix/store/d-x.drv",
            "outputs": {"bin": "/nix/store/b-x-bin", "dev": "/nix/store/d-x-dev", "out": "/nix/store/o-x"},
            "startTime": 0, "stopTime": 1}]"#;
        let expected = paths(&["/nix/store/o-x", "/nix/store/b-x-bin", "/nix/store/d-x-dev"]);
        assert_eq!(build_outputs(json).unwrap(), expected);
    }

    #[test]
    fn build_outputs_of_a_store_path_and_of_bare_names() {
        let json = br#"[{"path": "/nix/store/p-src"}, {"drvPath": "/gnu/store/d-x.drv", "outputs": {"out": "o-x"}}]"#;
        assert_eq!(build_outputs(json).unwrap(), paths(&["/nix/store/p-src", "/gnu/store/o-x"]));
    }

    #[test]
    fn build_outputs_rejects_nothing_and_garbage() {
        assert!(matches!(build_outputs(b"[]"), Err(NixError::Output(_))));
        assert!(matches!(build_outputs(b""), Err(NixError::Output(_))));
        assert!(matches!(build_outputs(br#"{"out": 1}"#), Err(NixError::Output(_))));
    }

    fn app_and_lib() -> Vec<PathInfo> {
        vec![
            PathInfo {
                path: "/nix/store/a-app".into(),
                nar_size: 328,
                nar_hash: "sha256-cB".into(),
                references: paths(&["/nix/store/l-lib"]),
                deriver: Some("/nix/store/a.drv".into()),
            },
            PathInfo {
                path: "/nix/store/l-lib".into(),
                nar_size: 288,
                nar_hash: "sha256-W3".into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn path_infos_in_the_list_shape_of_nix_2_8() {
        let json = br#"[{"path":"/nix/store/l-lib","narHash":"sha256-W3","narSize":288,"references":[],
            "registrationTime":1,"ultimate":true},
            {"path":"/nix/store/a-app","narHash":"sha256-cB","narSize":328,"references":["/nix/store/l-lib"],
            "deriver":"/nix/store/a.drv"}]"#;
        assert_eq!(path_infos(json, Path::new("/nix/store")).unwrap(), app_and_lib());
    }

    #[test]
    fn path_infos_in_the_object_shape_of_newer_nix() {
        let json = br#"{"/nix/store/a-app": {"ca": null, "narHash": "sha256-cB", "narSize": 328,
            "references": ["/nix/store/l-lib"], "signatures": [], "deriver": "/nix/store/a.drv"},
            "/nix/store/l-lib": {"narHash": "sha256-W3", "narSize": 288, "references": []}}"#;
        assert_eq!(path_infos(json, Path::new("/nix/store")).unwrap(), app_and_lib());
    }

    #[test]
    fn path_infos_with_bare_names() {
        let json = br#"{"a-app": {"narSize": 328, "narHash": "sha256-cB", "references": ["l-lib"],
            "deriver": "a.drv", "storeDir": "/nix/store"},
            "l-lib": {"narSize": 288, "narHash": "sha256-W3", "references": []}}"#;
        assert_eq!(path_infos(json, Path::new("/nix/store")).unwrap(), app_and_lib());
    }

    #[test]
    fn path_infos_rejects_invalid_paths() {
        let old = br#"[{"path": "/nix/store/x-gone", "valid": false}]"#;
        let new = br#"{"/nix/store/x-gone": null}"#;
        for json in [&old[..], &new[..]] {
            let error = path_infos(json, Path::new("/nix/store")).unwrap_err();
            assert!(error.to_string().contains("/nix/store/x-gone is not a valid"), "{error}");
        }
    }
}
