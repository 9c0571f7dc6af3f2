//! From one image-name segment to a flake attribute: `packages.<system>.NAME`,
//! then `legacyPackages.<system>.NAME` (unless `--no-legacy-packages`: a
//! nixpkgs' `legacyPackages` is every package of it, days of building for
//! whoever may name one); dots are attribute paths; matched
//! case-insensitively when the exact name is absent.
//!
//! Every attribute is listed before it is looked up (`builtins.attrNames`
//! does not force the packages), so a missing attribute is told apart from a
//! broken flake without reading Nix's error messages. The `--apply`
//! functions are fixed strings; the request only ever reaches the attribute
//! path of an installable.
//!
//! Every evaluation here is of a [`LockedFlake`], so its answer holds for
//! good: answers are kept per revision ([`Cache`]), and concurrent askers of
//! one share one run. A name looked up again, found or not (a `tags/list`
//! flood, the segments of long composed names), runs no Nix.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use serde_json::Value;

use super::{LockedFlake, Nix, NixError};
use crate::flight::Flights;

/// Evaluations kept (listings of attribute sets and package infos).
const CACHED_EVALUATIONS: usize = 4096;

/// (revision, attribute path, `--apply` function) of an evaluation.
type EvalKey = (String, String, &'static str);

/// Where image names are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupOptions {
    /// `legacyPackages.<system>` after `packages.<system>` (`--no-legacy-packages` turns it off).
    pub legacy_packages: bool,
}

impl Default for LookupOptions {
    fn default() -> Self {
        LookupOptions { legacy_packages: true }
    }
}

impl LookupOptions {
    /// The package sets searched, in order.
    fn package_sets(self) -> &'static [&'static str] {
        if self.legacy_packages {
            &["packages", "legacyPackages"]
        } else {
            &["packages"]
        }
    }
}

/// How names are looked up, and the answers of evaluations of locked
/// flakes, by revision: values, and failures of the evaluation itself (a
/// `throw`, a missing attribute), which are as lasting. Waiting in a full
/// queue or a timeout is not an answer.
pub struct Cache {
    options: LookupOptions,
    answers: Mutex<LruCache<EvalKey, Result<Value, NixError>>>,
    running: Flights<EvalKey, Result<Value, NixError>>,
}

impl Cache {
    pub fn new(options: LookupOptions) -> Self {
        let capacity = NonZeroUsize::new(CACHED_EVALUATIONS).expect("not zero");
        Cache { options, answers: Mutex::new(LruCache::new(capacity)), running: Flights::new() }
    }
}

/// [`Nix::eval_json_exact`] of `flake`, answered from the cache when it was
/// asked before; `apply` is one of the fixed functions of flakeforge's.
pub(crate) fn eval_cached(
    nix: &Nix,
    flake: &LockedFlake,
    attr_path: &str,
    apply: &'static str,
) -> Result<Value, NixError> {
    let key = (flake.revision.clone(), attr_path.to_owned(), apply);
    if let Some(answer) = nix.attrs.answers.lock().unwrap().get(&key) {
        return answer.clone();
    }
    let abandoned = Err(NixError::Output("an evaluation was abandoned".into()));
    nix.attrs.running.run(key.clone(), abandoned, || {
        if let Some(answer) = nix.attrs.answers.lock().unwrap().get(&key) {
            return answer.clone();
        }
        let answer = nix.eval_json_exact(&flake.url, attr_path, apply);
        if matches!(answer, Ok(_) | Err(NixError::Failed { .. })) {
            nix.attrs.answers.lock().unwrap().put(key.clone(), answer.clone());
        }
        answer
    })
}

/// What flakeforge needs to know of a package before building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The attribute path inside the flake, quoted for an installable
    /// (`packages.x86_64-linux.hello`).
    pub attr_path: String,
    /// It has a `conf` attribute (a `dockerTools.streamLayeredImage`).
    pub has_conf: bool,
    /// `meta.mainProgram`, if set.
    pub main_program: Option<String>,
    /// Its `version` attribute, if it has one (`mkDerivation` sets it).
    pub version: Option<String>,
    /// The attribute below it that is its image, to build instead of it:
    /// `image` (nix-forge's packages; `image.conf` when that is a
    /// streamLayeredImage) or `stream.conf` (a `buildLayeredImage`, whose
    /// `stream` is the streamLayeredImage its archive is made from).
    pub image_attr: Option<String>,
    /// It has a `containers` derivation (nix-forge's applications: a directory of images).
    pub has_containers: bool,
}

/// The attribute path of the flake's outputs themselves (see
/// [`Nix::eval_json_exact`]).
const OUTPUTS: &str = r#""""#;

/// Over the outputs: the systems of `packages` and `legacyPackages`, those
/// present. Forces no package set of any system.
const SYSTEMS_OF_PACKAGE_SETS: &str = "outputs: builtins.mapAttrs \
    (_: set: if builtins.isAttrs set then builtins.attrNames set else [ ]) \
    (builtins.intersectAttrs { packages = null; legacyPackages = null; } outputs)";

const ATTR_NAMES: &str = "x: if builtins.isAttrs x then builtins.attrNames x else [ ]";

/// `x ? conf` and `x.type` are cheap on a derivation; `meta` may be missing.
/// A derivation's environment variables are attributes too: `conf`,
/// `image`, `stream` and `containers` count only when they are themselves
/// derivations, as streamLayeredImage's `conf` is.
const PACKAGE_INFO: &str = r#"x:
  let
    isDrv = y: (y.type or null) == "derivation";
    hasConf = y: y ? conf && isDrv y.conf;
  in {
    isDerivation = isDrv x;
    hasConf = hasConf x;
    mainProgram = x.meta.mainProgram or null;
    version = if builtins.isString (x.version or null) then x.version else null;
    imageAttr =
      if x ? image && isDrv x.image then (if hasConf x.image then "image.conf" else "image")
      else if x ? stream && isDrv x.stream && hasConf x.stream then "stream.conf"
      else null;
    hasContainers = x ? containers && isDrv x.containers;
  }"#;

/// Finds image-name segment `name` (`hello`, `python3packages.requests`) in
/// `flake` for `system`.
pub fn resolve(nix: &Nix, flake: &LockedFlake, system: &str, name: &str) -> Result<Package, NixError> {
    let not_found = || NixError::AttrNotFound { name: name.to_owned(), system: system.to_owned() };
    if !is_selectable(system) {
        return Err(not_found());
    }
    let systems = eval_cached(nix, flake, OUTPUTS, SYSTEMS_OF_PACKAGE_SETS)?;
    for &set in nix.attrs.options.package_sets() {
        if !string_list(&systems[set]).iter().any(|s| s == system) {
            continue;
        }
        let Some(attr_path) = find_along(nix, flake, vec![set.to_owned(), system.to_owned()], name)? else {
            continue;
        };
        let info = eval_cached(nix, flake, &attr_path, PACKAGE_INFO)?;
        // A package set is no package: it may still be one in the next set.
        if info["isDerivation"] != Value::Bool(true) {
            continue;
        }
        return Ok(Package {
            attr_path,
            has_conf: info["hasConf"] == Value::Bool(true),
            main_program: info["mainProgram"].as_str().map(str::to_owned),
            version: info["version"].as_str().map(str::to_owned),
            image_attr: info["imageAttr"].as_str().map(str::to_owned),
            has_containers: info["hasContainers"] == Value::Bool(true),
        });
    }
    Err(not_found())
}

/// Descends from `path` through the dot-separated components of `name`: the
/// quoted attribute path, or `None` where a component has no match.
fn find_along(nix: &Nix, flake: &LockedFlake, mut path: Vec<String>, name: &str) -> Result<Option<String>, NixError> {
    for component in name.split('.') {
        let names = eval_cached(nix, flake, &quote_attr_path(&path), ATTR_NAMES)?;
        match match_component(&string_list(&names), component) {
            Some(found) => path.push(found.to_owned()),
            None => return Ok(None),
        }
    }
    Ok(Some(quote_attr_path(&path)))
}

/// `component` itself if present, else a name equal to it but for ASCII case.
/// Of several such (`Hello`, `HELLO`) the lexicographically first wins: the
/// choice must not depend on the order Nix lists them in.
fn match_component<'a>(names: &'a [String], component: &str) -> Option<&'a str> {
    let selectable = || names.iter().map(String::as_str).filter(|name| is_selectable(name));
    let exact = selectable().find(|name| *name == component);
    exact.or_else(|| selectable().filter(|name| name.eq_ignore_ascii_case(component)).min())
}

/// Whether an attribute can be named in an attribute path at all: the syntax
/// has no escape for `"`, and Nix reads an all-digit component as a list
/// index even when quoted.
fn is_selectable(name: &str) -> bool {
    !name.is_empty() && !name.contains('"') && !name.bytes().all(|b| b.is_ascii_digit())
}

/// `packages.x86_64-linux."gtk+3"`: components that are not identifiers quoted.
fn quote_attr_path(path: &[String]) -> String {
    let quoted: Vec<String> = path
        .iter()
        .map(|component| if is_identifier(component) { component.clone() } else { format!("\"{component}\"") })
        .collect();
    quoted.join(".")
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
}

/// The strings of a JSON list; anything else is an empty list.
fn string_list(value: &Value) -> Vec<String> {
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn exact_match_wins_over_other_cases() {
        assert_eq!(match_component(&names(&["Hello", "hello"]), "hello"), Some("hello"));
    }

    #[test]
    fn case_insensitive_match_takes_the_first_in_byte_order() {
        assert_eq!(match_component(&names(&["hELLO", "HeLLo", "Hello"]), "hello"), Some("HeLLo"));
        assert_eq!(match_component(&names(&["python3Packages"]), "python3packages"), Some("python3Packages"));
        assert_eq!(match_component(&names(&["hello-wrapped", "help"]), "hello"), None);
    }

    #[test]
    fn unselectable_names_never_match() {
        assert_eq!(match_component(&names(&["2"]), "2"), None);
        assert!(!is_selectable("a\"b"));
        assert!(is_selectable("0ad"));
    }

    #[test]
    fn attr_paths_quote_what_is_not_an_identifier() {
        let path = names(&["packages", "x86_64-linux", "gtk+3", "0ad", "a.b", "it's"]);
        assert_eq!(quote_attr_path(&path), r#"packages.x86_64-linux."gtk+3"."0ad"."a.b".it's"#);
    }

    #[test]
    fn string_list_ignores_what_is_not_a_list_of_strings() {
        assert_eq!(string_list(&serde_json::json!(["a", 1, "b"])), names(&["a", "b"]));
        assert!(string_list(&Value::Null).is_empty());
    }
}
