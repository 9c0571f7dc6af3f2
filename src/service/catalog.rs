//! The names `_catalog` lists: the packages of each served system, and for
//! a directory of images that is already in the store (a package's output,
//! or a package's `containers`, nix-forge's applications) its images as
//! `NAME/IMAGE`. Nothing is built to list them: a directory not built yet
//! shows under its package's name until it is. Evaluated once per flake
//! revision ([`attr::eval_cached`]).

use std::path::Path;

use serde_json::Value;

use crate::image::output;
use crate::nix::{attr, LockedFlake, Nix, NixError};

/// Over `packages.<system>`: for each package the store path of its image
/// directory candidate (its `containers`, else itself) when that evaluates,
/// and which of the two it is. `tryEval` keeps one broken package from
/// hiding the others.
const PACKAGE_OUTPUTS: &str = r#"set: builtins.mapAttrs (_: x:
  let
    isDrv = y: (y.type or null) == "derivation";
    containers = x ? containers && isDrv x.containers;
    out = builtins.tryEval (if containers then x.containers.outPath else if isDrv x then x.outPath else null);
  in { inherit containers; out = if out.success then out.value else null; }) set"#;

/// The image names of `packages.<system>` (lowercase; not yet checked as
/// names). Only a full queue or a spent rate is an error.
pub(super) fn names(nix: &Nix, flake: &LockedFlake, system: &str) -> Result<Vec<String>, NixError> {
    let attr_path = format!("packages.{system}");
    let packages = match attr::eval_cached(nix, flake, &attr_path, PACKAGE_OUTPUTS) {
        Ok(Value::Object(packages)) => packages,
        Err(error @ (NixError::Busy | NixError::RateLimited { .. })) => return Err(error),
        // A flake without packages for a system lists none for it; one whose
        // packages fail beyond what tryEval catches lists their names alone.
        _ => {
            return match attr::eval_cached(nix, flake, &attr_path, "builtins.attrNames") {
                Ok(Value::Array(found)) => {
                    Ok(found.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
                }
                Err(error @ (NixError::Busy | NixError::RateLimited { .. })) => Err(error),
                _ => Ok(Vec::new()),
            }
        }
    };
    let mut names = Vec::new();
    for (name, info) in packages {
        let name = name.to_ascii_lowercase();
        let images = info["out"].as_str().map(|out| output::directory_images(Path::new(out))).unwrap_or_default();
        // A directory of images is no image of its own worth listing; a package with `containers` is.
        if images.is_empty() || info["containers"] == Value::Bool(true) {
            names.push(name.clone());
        }
        names.extend(images.keys().map(|image| format!("{name}/{image}")));
    }
    Ok(names)
}
