//! Splitting a closure into layers by popularity, as nixpkgs'
//! `referencesByPopularity` does: the most shared paths get layers of their own.

use std::path::PathBuf;

use crate::nix::PathInfo;

/// At most `max_layers` layers (each a list of store paths), most popular first.
pub fn layers_by_popularity(closure: &[PathInfo], roots: &[PathBuf], max_layers: usize) -> Vec<Vec<PathBuf>> {
    let _ = (closure, roots, max_layers);
    todo!()
}
