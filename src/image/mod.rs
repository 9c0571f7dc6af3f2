//! Image assembly: from store paths, confs, docker archives and
//! nix2container JSON to layer tarballs, image configs and manifests.
//! [`output`] tells what kind of image a build output is. What an image
//! says of itself: [`origin`] (annotations), [`sbom`] and [`provenance`],
//! attached as [`artifact`]s.

pub mod archive;
pub mod artifact;
pub mod compress;
pub mod conf;
pub mod docker_archive;
pub mod layer;
pub mod manifest;
pub mod nix2container;
pub mod origin;
pub mod output;
pub mod popularity;
pub mod provenance;
pub mod rootfs;
pub mod sbom;
pub mod tar;

use std::io;

use serde::{Deserialize, Serialize};

use layer::LayerSource;
use manifest::ImageConfig;

/// An image's layers (bottom first) and config, before any layer is written.
#[derive(Debug, Clone)]
pub struct ImageRecipe {
    pub layers: Vec<LayerSource>,
    pub config: ImageConfig,
}

/// Why a build output cannot be served as the image it says it is: a
/// corrupt or truncated archive, a layer unlike the digest its image
/// declares, a malformed image description. The message is for clients: it
/// names no host paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidImage(pub String);

impl InvalidImage {
    /// Carried through `io::Result`s (layer generation writes to `io::Write`s).
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The `InvalidImage` an `io::Error` carries, if it carries one.
    pub fn from_io(err: &io::Error) -> Option<&InvalidImage> {
        err.get_ref()?.downcast_ref()
    }
}

/// Owner and time stamp given to every entry of a generated layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ownership {
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
}

impl Default for Ownership {
    /// root:root at 1970-01-01T00:00:01Z, nixpkgs' dockerTools default.
    fn default() -> Self {
        Ownership { mtime: 1, uid: 0, gid: 0, uname: "root".into(), gname: "root".into() }
    }
}
