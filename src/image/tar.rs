//! Layer tarballs written byte for byte as nixpkgs'
//! `stream_layered_image.py` (Python `tarfile`, PAX format) writes them, so
//! that layer digests equal those of `docker load < $(nix build .#image)`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::Ownership;

pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    pub fn append_dir(&mut self, name: &[u8], mode: u32, owner: &Ownership) -> io::Result<()> {
        let _ = (name, mode, owner);
        todo!()
    }

    pub fn append_file(&mut self, name: &[u8], mode: u32, size: u64, owner: &Ownership, content: &mut dyn Read) -> io::Result<()> {
        let _ = (name, mode, size, owner, content);
        todo!()
    }

    pub fn append_symlink(&mut self, name: &[u8], target: &[u8], owner: &Ownership) -> io::Result<()> {
        let _ = (name, target, owner);
        todo!()
    }

    /// A store path and everything below it, as `archive_paths_to` adds one.
    pub fn append_tree(&mut self, path: &Path, owner: &Ownership) -> io::Result<()> {
        let _ = (path, owner);
        todo!()
    }

    /// Writes the end-of-archive blocks and the record padding.
    pub fn finish(self) -> io::Result<W> {
        todo!()
    }
}

/// One store layer: `/nix`, `/nix/store`, then each path, as `archive_paths_to`.
pub fn write_store_layer<W: Write>(out: W, paths: &[PathBuf], owner: &Ownership) -> io::Result<W> {
    let _ = (out, paths, owner);
    todo!()
}
