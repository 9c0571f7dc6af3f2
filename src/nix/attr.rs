//! From one image-name segment to a flake attribute: `packages.<system>.NAME`,
//! then `legacyPackages.<system>.NAME`; dots are attribute paths; matched
//! case-insensitively when the exact name is absent.

use super::{Nix, NixError};

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
}

pub fn resolve(nix: &Nix, flake: &str, system: &str, name: &str) -> Result<Package, NixError> {
    let _ = (nix, flake, system, name);
    todo!()
}
