//! Layer tarballs written byte for byte as another tool writes them, so
//! that layer digests equal that tool's: nixpkgs' `stream_layered_image.py`
//! (Python's `tarfile`, PAX format: the digests of
//! `docker load < $(nix build .#image)` for the same conf) or nix2container
//! (Go's `archive/tar`). `header` holds how the two encode an entry.
//!
//! Common to both: hardlinks stored as regular files, then the end: two
//! zero blocks; tarfile pads with zeros up to a 10240-byte record, Go does not.

mod header;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) use header::clean_path;
pub use header::Dialect;
use header::{Entry, BLOCK, DIRECTORY, REGULAR, SYMLINK};

use super::Ownership;

const RECORD: u64 = 20 * BLOCK as u64;
const COPY_BUFFER: usize = 256 * 1024;

pub struct TarWriter<W: Write> {
    out: W,
    dialect: Dialect,
    offset: u64,
    buffer: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer of Python tarfile's bytes.
    pub fn new(out: W) -> Self {
        Self::with_dialect(out, Dialect::PythonTarfile)
    }

    pub fn with_dialect(out: W, dialect: Dialect) -> Self {
        TarWriter { out, dialect, offset: 0, buffer: Vec::new() }
    }

    /// A directory entry. tarfile gives directory names a trailing `/`;
    /// nix2container's names (Go) are used as they are.
    pub fn append_dir(&mut self, name: &[u8], mode: u32, owner: &Ownership) -> io::Result<()> {
        let mut with_slash = name.to_vec();
        if self.dialect == Dialect::PythonTarfile && !with_slash.ends_with(b"/") {
            with_slash.push(b'/');
        }
        self.header(&Entry { name: &with_slash, mode, size: 0, kind: DIRECTORY, link: b"" }, owner)
    }

    /// A regular file of exactly `size` bytes read from `content`.
    pub fn append_file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        owner: &Ownership,
        content: &mut dyn Read,
    ) -> io::Result<()> {
        self.header(&Entry { name, mode, size, kind: REGULAR, link: b"" }, owner)?;
        if self.buffer.is_empty() {
            self.buffer = vec![0; COPY_BUFFER];
        }
        let mut left = size;
        while left > 0 {
            let want = self.buffer.len().min(left as usize);
            let n = match content.read(&mut self.buffer[..want]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while archiving it")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buffer[..n])?;
            left -= n as u64;
        }
        self.offset += size;
        self.pad()
    }

    pub fn append_symlink(&mut self, name: &[u8], target: &[u8], owner: &Ownership) -> io::Result<()> {
        self.append_symlink_with_mode(name, target, 0o777, owner)
    }

    /// A symlink whose header records another mode than Linux's 0777.
    pub fn append_symlink_with_mode(
        &mut self,
        name: &[u8],
        target: &[u8],
        mode: u32,
        owner: &Ownership,
    ) -> io::Result<()> {
        self.header(&Entry { name, mode, size: 0, kind: SYMLINK, link: target }, owner)
    }

    /// A store path and everything below it, as `archive_paths_to` adds one.
    pub fn append_tree(&mut self, path: &Path, owner: &Ownership) -> io::Result<()> {
        self.append_tree_as(path, path.as_os_str().as_bytes(), owner)
    }

    /// The tree at `path` on disk, named `name` in the archive (a store path
    /// that lives elsewhere, as in tests). Children come sorted by name,
    /// which is the order of Python's sort of `pathlib.Path`s: by components.
    pub fn append_tree_as(&mut self, path: &Path, name: &[u8], owner: &Ownership) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            self.append_symlink(name, fs::read_link(path)?.as_os_str().as_bytes(), owner)
        } else if file_type.is_dir() {
            self.append_dir(name, mode, owner)?;
            let mut children: Vec<_> =
                fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let mut child_name = name.to_vec();
            for child in children {
                child_name.truncate(name.len());
                child_name.push(b'/');
                child_name.extend_from_slice(child.as_bytes());
                self.append_tree_as(&path.join(&child), &child_name, owner)?;
            }
            Ok(())
        } else if file_type.is_file() {
            let mut file = File::open(path)?;
            self.append_file(name, mode, meta.size(), owner, &mut file)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file, directory or symlink", path.display()),
            ))
        }
    }

    /// Writes the end-of-archive blocks, and for tarfile the record padding
    /// (Go's writer stops after the two zero blocks).
    pub fn finish(mut self) -> io::Result<W> {
        self.write_zeros(2 * BLOCK as u64)?;
        let remainder = self.offset % RECORD;
        if self.dialect == Dialect::PythonTarfile && remainder > 0 {
            self.write_zeros(RECORD - remainder)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, entry: &Entry, owner: &Ownership) -> io::Result<()> {
        let blocks = header::encode(self.dialect, entry, owner);
        self.out.write_all(&blocks)?;
        self.offset += blocks.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let remainder = self.offset % BLOCK as u64;
        if remainder > 0 {
            self.write_zeros(BLOCK as u64 - remainder)?;
        }
        Ok(())
    }

    fn write_zeros(&mut self, mut count: u64) -> io::Result<()> {
        const ZEROS: [u8; BLOCK] = [0; BLOCK];
        self.offset += count;
        while count > 0 {
            let n = count.min(BLOCK as u64) as usize;
            self.out.write_all(&ZEROS[..n])?;
            count -= n as u64;
        }
        Ok(())
    }
}

/// One store layer: `/nix`, `/nix/store`, then each path, as `archive_paths_to`.
pub fn write_store_layer<W: Write>(out: W, paths: &[PathBuf], owner: &Ownership) -> io::Result<W> {
    let mut tar = TarWriter::new(out);
    tar.append_dir(b"/nix", 0o755, owner)?;
    tar.append_dir(b"/nix/store", 0o755, owner)?;
    for path in paths {
        tar.append_tree(path, owner)?;
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let owner = Ownership { mtime: 1, uid: 0, gid: 0, uname: "root".into(), gname: "root".into() };
        let mut tar = TarWriter::new(Vec::new());
        tar.append_file(b"/a", 0o644, 3, &owner, &mut &b"abc"[..]).unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(bytes.len(), 10240);
        assert_eq!(&bytes[0..3], b"/a\0");
        assert_eq!(&bytes[100..108], b"0000644\0");
        assert_eq!(&bytes[124..136], b"00000000003\0");
        assert_eq!(&bytes[136..148], b"00000000001\0");
        assert_eq!(&bytes[257..265], b"ustar\x0000");
        assert_eq!(&bytes[265..270], b"root\0");
        assert_eq!(&bytes[329..345], &[0u8; 16]); // device fields left empty
        assert_eq!(bytes[155], b' ');
        assert_eq!(bytes[154], 0);
        assert_eq!(&bytes[512..515], b"abc");
    }

    #[test]
    fn long_and_non_ascii_names_get_pax_headers() {
        let owner = Ownership::default();
        let mut tar = TarWriter::new(Vec::new());
        let name = "/é".to_string() + &"x".repeat(10);
        tar.append_symlink(name.as_bytes(), b"t", &owner).unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(&bytes[0..14], b"././@PaxHeader");
        assert_eq!(bytes[156], b'x');
        let record = format!("22 path={name}\n");
        assert_eq!(&bytes[512..512 + record.len()], record.as_bytes());
        assert_eq!(&bytes[1024..1036], b"/?xxxxxxxxxx");
        assert_eq!(bytes[1024 + 156], b'2');
    }

    #[test]
    fn file_that_shrinks_is_an_error() {
        let mut tar = TarWriter::new(Vec::new());
        let err = tar.append_file(b"/a", 0o644, 10, &Ownership::default(), &mut &b"abc"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
