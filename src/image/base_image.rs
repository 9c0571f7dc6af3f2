//! A `from_image` base: a docker-archive tarball (`docker save`,
//! `dockerTools.buildImage`) whose layers go below the image's own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// One layer of the base archive.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    /// The member name inside the archive (`manifest.json`'s `Layers`).
    pub member: String,
    pub size: u64,
    /// From the archive config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

#[derive(Debug)]
pub struct BaseImage {
    pub archive: PathBuf,
    pub layers: Vec<BaseLayer>,
    /// The archive's image config JSON (the whole document).
    pub image_config: serde_json::Value,
}

impl BaseImage {
    pub fn open(archive: &Path) -> io::Result<BaseImage> {
        let _ = archive;
        todo!()
    }
}

/// Streams one member of the archive (a layer tarball) to `out`.
pub fn copy_member(archive: &Path, member: &str, out: &mut dyn Write) -> io::Result<u64> {
    let _ = (archive, member, out);
    todo!()
}
