//! What a layer is made of (its recipe, kept on disk so that an evicted blob
//! can be made again) and generating it: tarball, diff_id, compression, digest.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::compress::{Compression, Encoder};
use super::{base_image, rootfs, tar, Ownership};
use crate::digest::{Digest, HashingWriter};

/// Where a layer's uncompressed tarball comes from. Everything it names is
/// in the Nix store, so the same source always gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerSource {
    /// Store paths archived as `stream_layered_image.py` archives them.
    StorePaths { paths: Vec<PathBuf>, owner: Ownership },
    /// A ready tarball, used as is (a streamLayeredImage customisation layer).
    TarFile { path: PathBuf },
    /// A layer of a docker-archive base image (`from_image`).
    BaseImage { archive: PathBuf, member: String },
    /// flakeforge's own layer of symlinks, `/tmp` and `/etc` for plain packages.
    Rootfs { packages: Vec<PathBuf>, owner: Ownership },
}

impl LayerSource {
    pub fn write_tar(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            LayerSource::StorePaths { paths, owner } => tar::write_store_layer(out, paths, owner).map(drop),
            LayerSource::TarFile { path } => io::copy(&mut File::open(path)?, out).map(drop),
            LayerSource::BaseImage { archive, member } => base_image::copy_member(archive, member, out).map(drop),
            LayerSource::Rootfs { packages, owner } => rootfs::write_rootfs_layer(out, packages, owner).map(drop),
        }
    }

    /// Whether everything the layer is made of is still on disk (not garbage collected).
    pub fn is_available(&self) -> bool {
        let exists = |p: &PathBuf| p.exists();
        match self {
            LayerSource::StorePaths { paths, .. } => paths.iter().all(exists),
            LayerSource::TarFile { path } => path.exists(),
            LayerSource::BaseImage { archive, .. } => archive.exists(),
            LayerSource::Rootfs { packages, .. } => packages.iter().all(exists),
        }
    }

    /// The `history` comment of the image config.
    pub fn describe(&self) -> String {
        let list = |paths: &[PathBuf]| paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        match self {
            LayerSource::StorePaths { paths, .. } => format!("store paths: {}", list(paths)),
            LayerSource::TarFile { path } => format!("customisation layer: {}", parent_or_self(path).display()),
            LayerSource::BaseImage { archive, member } => format!("base image {}: {member}", archive.display()),
            LayerSource::Rootfs { packages, .. } => format!("flakeforge rootfs for: {}", list(packages)),
        }
    }
}

fn parent_or_self(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// A generated layer: its recipe and what it hashes to. Kept on disk by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub source: LayerSource,
    pub compression: Compression,
    /// The digest of the uncompressed tarball (the image config's `diff_ids`).
    pub diff_id: Digest,
    /// The digest of the blob as served.
    pub digest: Digest,
    /// The size of the blob as served.
    pub size: u64,
}

/// Generates the layer into `sink` (which receives the blob as served) and
/// describes it. With no compression the blob is the tarball, hashed once.
pub fn generate<W: Write>(source: &LayerSource, compression: Compression, sink: W) -> io::Result<(LayerRecord, W)> {
    let mut blob = HashingWriter::new(sink);
    let diff_id = if compression == Compression::None {
        source.write_tar(&mut blob)?;
        None
    } else {
        let mut tarball = HashingWriter::new(Encoder::new(compression, &mut blob)?);
        source.write_tar(&mut tarball)?;
        let (diff_id, _, encoder) = tarball.finish();
        encoder.finish()?.flush()?;
        Some(diff_id)
    };
    let (digest, size, sink) = blob.finish();
    let record = LayerRecord {
        source: source.clone(),
        compression,
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size,
    };
    Ok((record, sink))
}
