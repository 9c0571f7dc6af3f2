//! Image assembly: from store paths and confs to layer tarballs, image
//! configs and manifests.

pub mod base_image;
pub mod compress;
pub mod conf;
pub mod layer;
pub mod manifest;
pub mod popularity;
pub mod rootfs;
pub mod tar;

use serde::{Deserialize, Serialize};

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
