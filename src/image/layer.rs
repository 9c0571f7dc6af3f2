//! What a layer is made of (its recipe, kept on disk so that an evicted blob
//! can be made again) and generating it: tarball, diff_id, compression, digest.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::compress::{Compression, Encoder};
use super::nix2container::{self, LayerPath};
use super::{archive, rootfs, tar, InvalidImage, Ownership};
use crate::digest::{Digest, HashingWriter};

/// Where a layer's uncompressed tarball comes from. Everything it names is
/// in the Nix store, so the same source always gives the same bytes; where
/// the image declares what they hash to (`diff_id`), generating the layer
/// checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerSource {
    /// Store paths archived as `stream_layered_image.py` archives them.
    StorePaths { paths: Vec<PathBuf>, owner: Ownership },
    /// A ready tarball: a streamLayeredImage customisation layer (used as
    /// is), a nix2container `layer-path` (decompressed if compressed).
    TarFile {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff_id: Option<Digest>,
    },
    /// A layer member of a docker archive (an image served from the
    /// archive, or a `from_image` base), decompressed if compressed.
    #[serde(alias = "base_image")]
    ArchiveMember {
        archive: PathBuf,
        member: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff_id: Option<Digest>,
    },
    /// flakeforge's own layer of symlinks, `/tmp` and `/etc` for plain packages.
    Rootfs { packages: Vec<PathBuf>, owner: Ownership },
    /// Store paths archived as nix2container archives them, with their options.
    Nix2Container { paths: Vec<LayerPath>, diff_id: Digest },
}

impl LayerSource {
    pub fn write_tar(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            LayerSource::StorePaths { paths, owner } => tar::write_store_layer(out, paths, owner).map(drop),
            LayerSource::TarFile { path, .. } => archive::copy_decompressed(&mut File::open(path)?, out).map(drop),
            LayerSource::ArchiveMember { archive, member, .. } => archive::copy_member(archive, member, out),
            LayerSource::Rootfs { packages, owner } => rootfs::write_rootfs_layer(out, packages, owner).map(drop),
            LayerSource::Nix2Container { paths, .. } => nix2container::layer::write_layer(out, paths).map(drop),
        }
    }

    /// The digest the image declares for the uncompressed tarball, if it declares one.
    pub fn expected_diff_id(&self) -> Option<&Digest> {
        match self {
            LayerSource::TarFile { diff_id, .. } | LayerSource::ArchiveMember { diff_id, .. } => diff_id.as_ref(),
            LayerSource::Nix2Container { diff_id, .. } => Some(diff_id),
            LayerSource::StorePaths { .. } | LayerSource::Rootfs { .. } => None,
        }
    }

    /// Whether everything the layer is made of is still on disk (not garbage collected).
    pub fn is_available(&self) -> bool {
        let exists = |p: &PathBuf| p.exists();
        match self {
            LayerSource::StorePaths { paths, .. } => paths.iter().all(exists),
            LayerSource::TarFile { path, .. } => path.exists(),
            LayerSource::ArchiveMember { archive, .. } => archive.exists(),
            LayerSource::Rootfs { packages, .. } => packages.iter().all(exists),
            LayerSource::Nix2Container { paths, .. } => paths.iter().all(|p| p.path.exists()),
        }
    }

    /// What kind of layer it is and what it holds (store paths, or the
    /// file it is read from), for the operator's page.
    pub fn contents(&self) -> (&'static str, Vec<String>) {
        let shown = |paths: &mut dyn Iterator<Item = &PathBuf>| paths.map(|p| p.display().to_string()).collect();
        match self {
            LayerSource::StorePaths { paths, .. } => ("store paths", shown(&mut paths.iter())),
            LayerSource::TarFile { path, diff_id: None } => {
                ("customisation layer", vec![parent_or_self(path).display().to_string()])
            }
            LayerSource::TarFile { path, diff_id: Some(_) } => ("tarball", vec![path.display().to_string()]),
            LayerSource::ArchiveMember { archive, member, .. } => {
                ("docker archive layer", vec![format!("{}: {member}", archive.display())])
            }
            LayerSource::Rootfs { packages, .. } => ("flakeforge root file system for", shown(&mut packages.iter())),
            LayerSource::Nix2Container { paths, .. } => {
                ("nix2container store paths", shown(&mut paths.iter().map(|p| &p.path)))
            }
        }
    }

    /// The `history` comment of the image config.
    pub fn describe(&self) -> String {
        let list = |paths: &mut dyn Iterator<Item = &PathBuf>| {
            paths.map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        };
        match self {
            LayerSource::StorePaths { paths, .. } => format!("store paths: {}", list(&mut paths.iter())),
            LayerSource::TarFile { path, diff_id: None } => {
                format!("customisation layer: {}", parent_or_self(path).display())
            }
            LayerSource::TarFile { path, diff_id: Some(_) } => format!("tarball: {}", path.display()),
            LayerSource::ArchiveMember { archive, member, .. } => {
                format!("docker archive {}: {member}", archive.display())
            }
            LayerSource::Rootfs { packages, .. } => format!("flakeforge rootfs for: {}", list(&mut packages.iter())),
            LayerSource::Nix2Container { paths, .. } => {
                format!("nix2container store paths: {}", list(&mut paths.iter().map(|p| &p.path)))
            }
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
/// A tarball unlike the `diff_id` its image declares is an error
/// ([`InvalidImage`]): the image would not be the one it says it is.
pub fn generate<W: Write>(source: &LayerSource, compression: Compression, sink: W) -> io::Result<(LayerRecord, W)> {
    let mut blob = HashingWriter::new(sink);
    let diff_id = if compression == Compression::None {
        source.write_tar(&mut blob)?;
        None
    } else {
        let mut tarball = HashingWriter::new(Encoder::new(compression, &mut blob));
        source.write_tar(&mut tarball)?;
        let (diff_id, _, encoder) = tarball.finish();
        encoder.finish()?.flush()?;
        Some(diff_id)
    };
    let (digest, size, sink) = blob.finish();
    let diff_id = diff_id.unwrap_or_else(|| digest.clone());
    if let Some(expected) = source.expected_diff_id().filter(|expected| **expected != diff_id) {
        let which = match source {
            LayerSource::ArchiveMember { member, .. } => format!("the archive's layer {member}"),
            _ => "a layer".into(),
        };
        let message = format!("{which} has diff_id {diff_id}, but the image declares {expected}");
        return Err(InvalidImage(message).into_io());
    }
    let record = LayerRecord { source: source.clone(), compression, diff_id, digest, size };
    Ok((record, sink))
}
