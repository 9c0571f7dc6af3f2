//! What Nix knows of the packages in an image, for its bill of materials:
//! the name and version each store path's derivation gives it (`pname` and
//! `version` in its environment, read with `nix show-derivation`; else its
//! name, split as Nix splits it), and the `meta` of a flake's package
//! (licenses, homepage, description), which only evaluation reaches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::attr::eval_cached;
use super::command::Invocation;
use super::{LockedFlake, Nix, NixError, PathInfo};

/// At most this many store paths per `nix show-derivation`, to keep argv short.
const PATHS_PER_RUN: usize = 500;

/// A package's name and version, as its derivation gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageName {
    pub name: String,
    pub version: Option<String>,
}

impl PackageName {
    /// `pname` and `version` where the derivation sets them, else its `name`
    /// split as Nix's `builtins.parseDrvName` splits it.
    fn of_env(env: &DerivationEnv) -> Option<PackageName> {
        match (&env.pname, &env.version) {
            (Some(pname), Some(version)) if !pname.is_empty() => {
                Some(PackageName { name: pname.clone(), version: (!version.is_empty()).then(|| version.clone()) })
            }
            _ => env.name.as_deref().map(parse_name),
        }
    }
}

/// `builtins.parseDrvName`: the version starts after the first `-` that is
/// not followed by a letter (`hello-2.12` is `hello` 2.12, `python3.11-six-1.16`
/// is `python3.11-six` 1.16).
pub fn parse_name(name: &str) -> PackageName {
    let split = name
        .char_indices()
        .find(|&(at, c)| c == '-' && !name[at + 1..].starts_with(|next: char| next.is_alphabetic()))
        .map(|(at, _)| at);
    match split {
        Some(at) => PackageName { name: name[..at].to_owned(), version: Some(name[at + 1..].to_owned()) },
        None => PackageName { name: name.to_owned(), version: None },
    }
}

/// The name of a store path without its hash: `hello-2.12` of `/nix/store/<hash>-hello-2.12`.
pub fn store_path_name(path: &Path) -> String {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    match file_name.split_once('-') {
        Some((_, name)) => name.to_owned(),
        None => file_name.into_owned(),
    }
}

/// The store path `path` is in (itself, or the ancestor `<store>/<hash>-<name>`).
pub fn store_path_of(path: &Path) -> Option<PathBuf> {
    let is_store_entry = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let hash = name.split_once('-').map_or("", |(hash, _)| hash);
        hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    path.ancestors().find(|p| is_store_entry(p)).map(Path::to_path_buf)
}

/// The part of a derivation's environment that names it.
#[derive(Debug, Default, Deserialize)]
struct DerivationEnv {
    name: Option<String>,
    pname: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct ShownDerivation {
    #[serde(default)]
    env: DerivationEnv,
}

/// Nix 2.34 and later wrap the derivations in an object of their own.
#[derive(Deserialize)]
struct Wrapped {
    derivations: BTreeMap<String, ShownDerivation>,
}

/// The derivations `nix show-derivation` printed, by file name (`<hash>-x.drv`).
/// Nix 2.8 keys them by path, 2.32 by file name, 2.34 wraps them in
/// `derivations`. Read into the few fields wanted: a closure's derivations
/// can print tens of megabytes of build scripts.
fn parse_shown(stdout: &[u8]) -> Result<BTreeMap<String, DerivationEnv>, NixError> {
    let derivations = match serde_json::from_slice::<BTreeMap<String, ShownDerivation>>(stdout) {
        Ok(derivations) => derivations,
        Err(plain) => match serde_json::from_slice::<Wrapped>(stdout) {
            Ok(wrapped) => wrapped.derivations,
            Err(_) => return Err(NixError::Output(format!("nix show-derivation: {plain}"))),
        },
    };
    Ok(derivations.into_iter().map(|(key, shown)| (file_name(&key), shown.env)).collect())
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

impl Nix {
    /// The name and version of each path of `closure`: from its
    /// derivation where that is on disk, else from the store path's name.
    /// A derivation Nix cannot show (a failed `show-derivation`) counts as
    /// absent; a queue or a timeout is an error.
    pub fn package_names(&self, closure: &[PathInfo]) -> Result<BTreeMap<PathBuf, PackageName>, NixError> {
        let with_derivation: Vec<&PathInfo> =
            closure.iter().filter(|info| info.deriver.as_ref().is_some_and(|drv| drv.exists())).collect();
        let mut environments = BTreeMap::new();
        for chunk in with_derivation.chunks(PATHS_PER_RUN) {
            let paths: Vec<&Path> = chunk.iter().map(|info| info.path.as_path()).collect();
            match self.show_derivations(&paths) {
                Ok(shown) => environments.extend(shown),
                Err(failed @ NixError::Failed { .. }) => {
                    log::warn!("nix show-derivation failed ({}); names come from store paths", failed.client_reason())
                }
                Err(other) => return Err(other),
            }
        }
        Ok(closure
            .iter()
            .map(|info| {
                let drv = info.deriver.as_ref().map(|d| file_name(&d.to_string_lossy()));
                let from_env = drv.and_then(|drv| environments.get(&drv)).and_then(PackageName::of_env);
                (info.path.clone(), from_env.unwrap_or_else(|| parse_name(&store_path_name(&info.path))))
            })
            .collect())
    }

    /// `nix show-derivation PATHS...` (given outputs, Nix shows their
    /// derivers), or `nix derivation show`, its name since Nix 2.15, should
    /// the old one be gone.
    fn show_derivations(&self, paths: &[&Path]) -> Result<BTreeMap<String, DerivationEnv>, NixError> {
        let run =
            |subcommand: &[&str]| Invocation::new(subcommand, ::log::Level::Debug).arg("--").args(paths).run(self);
        let stdout = match run(&["show-derivation"]) {
            Err(NixError::Failed { error: Some(error), .. }) if error.contains("not a recognised command") => {
                run(&["derivation", "show"])?
            }
            other => other?,
        };
        parse_shown(&stdout)
    }
}

/// What a package's `meta` says, where the flake sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageMeta {
    pub licenses: Vec<License>,
    pub homepage: Option<String>,
    pub description: Option<String>,
}

/// A license of `meta.license`: nixpkgs' `lib.licenses` entries have an
/// SPDX id and a full name; a plain string is a name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct License {
    pub spdx_id: Option<String>,
    pub name: Option<String>,
    pub url: Option<String>,
}

/// Over a package: its meta's licenses, first homepage and description,
/// each only when it has the type nixpkgs gives it.
const META: &str = r#"x:
  let
    meta = x.meta or { };
    asList = v: if builtins.isList v then v else [ v ];
    string = v: if builtins.isString v then v else null;
    license = l:
      if builtins.isAttrs l then { spdxId = string (l.spdxId or null); name = string (l.fullName or l.shortName or null); url = string (l.url or null); }
      else if builtins.isString l then { spdxId = null; name = l; url = null; }
      else null;
    homepages = builtins.filter builtins.isString (asList (meta.homepage or [ ]));
  in {
    licenses = builtins.filter (l: l != null) (map license (asList (meta.license or [ ])));
    homepage = if homepages == [ ] then null else builtins.head homepages;
    description = string (meta.description or null);
  }"#;

/// The `meta` of the package at `attr_path` (as [`super::attr::resolve`]
/// found it) of `flake`. A meta that does not evaluate is no meta.
pub fn meta(nix: &Nix, flake: &LockedFlake, attr_path: &str) -> Result<PackageMeta, NixError> {
    let value = match eval_cached(nix, flake, attr_path, META) {
        Ok(value) => value,
        Err(failed @ NixError::Failed { .. }) => {
            log::warn!("the meta of {attr_path} does not evaluate ({}); it is left out", failed.client_reason());
            return Ok(PackageMeta::default());
        }
        Err(other) => return Err(other),
    };
    let text = |key: &str| value[key].as_str().map(str::to_owned);
    let licenses = serde_json::from_value(value["licenses"].clone()).unwrap_or_default();
    Ok(PackageMeta { licenses, homepage: text("homepage"), description: text("description") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str, version: Option<&str>) -> PackageName {
        PackageName { name: name.into(), version: version.map(Into::into) }
    }

    #[test]
    fn names_split_as_nix_splits_them() {
        assert_eq!(parse_name("hello-2.12"), name("hello", Some("2.12")));
        assert_eq!(parse_name("python3.11-six-1.16.0"), name("python3.11-six", Some("1.16.0")));
        assert_eq!(parse_name("hello-2.12-man"), name("hello", Some("2.12-man")));
        assert_eq!(parse_name("test-tools"), name("test-tools", None));
        assert_eq!(parse_name("busybox"), name("busybox", None));
        assert_eq!(parse_name("x-"), name("x", Some("")));
    }

    #[test]
    fn store_paths_and_their_names() {
        let entry = "/nix/store/lwqrax7naqf5ljhw3v1b34jq7mriy2v3-hello-2.12";
        assert_eq!(store_path_name(Path::new(entry)), "hello-2.12");
        assert_eq!(store_path_of(Path::new(&format!("{entry}/layer.tar"))).unwrap(), Path::new(entry));
        assert_eq!(store_path_of(Path::new(entry)).unwrap(), Path::new(entry));
        assert_eq!(store_path_of(Path::new("/tmp/layer.tar")), None);
    }

    #[test]
    fn shown_derivations_in_every_shape() {
        let old = br#"{"/nix/store/a-hello-2.12.drv": {"outputs": {}, "env": {"name": "hello-2.12", "pname": "hello",
            "version": "2.12", "builder": "/bin/sh"}}, "/nix/store/b-busybox.drv": {"env": {"name": "busybox"}}}"#;
        let new = br#"{"derivations": {"a-hello-2.12.drv": {"env": {"name": "hello-2.12", "pname": "hello",
            "version": "2.12"}}, "b-busybox.drv": {"env": {"name": "busybox"}}}, "version": 4}"#;
        for json in [&old[..], &new[..]] {
            let shown = parse_shown(json).unwrap();
            assert_eq!(PackageName::of_env(&shown["a-hello-2.12.drv"]), Some(name("hello", Some("2.12"))));
            assert_eq!(PackageName::of_env(&shown["b-busybox.drv"]), Some(name("busybox", None)));
        }
        assert!(parse_shown(b"[]").is_err() && parse_shown(b"").is_err());
    }

    #[test]
    fn an_empty_pname_falls_back_to_the_name() {
        let env = DerivationEnv { name: Some("x-1".into()), pname: Some(String::new()), version: Some("1".into()) };
        assert_eq!(PackageName::of_env(&env), Some(name("x", Some("1"))));
    }
}
