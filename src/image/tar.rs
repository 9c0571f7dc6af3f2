//! Layer tarballs written byte for byte as nixpkgs'
//! `stream_layered_image.py` writes them with Python's `tarfile` (PAX
//! format), so that layer digests equal those of
//! `docker load < $(nix build .#image)` for the same conf.
//!
//! What `tarfile` does and this reproduces: ustar headers with
//! `ustar\0` + `00` magic, 7/11-digit octal fields, empty device fields for
//! entries that are not devices, the checksum as `%06o\0 `; a PAX `x` header
//! (`././@PaxHeader`) before an entry whose name or link is longer than its
//! field or not ASCII (the ustar field then holds the name with non-ASCII
//! characters as `?`, cut to length); hardlinks stored as regular files;
//! and the end: two zero blocks, then zeros up to a 10240-byte record.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Ownership;

const BLOCK: usize = 512;
const RECORD: u64 = 20 * BLOCK as u64;
const COPY_BUFFER: usize = 256 * 1024;

const REGULAR: u8 = b'0';
const SYMLINK: u8 = b'2';
const DIRECTORY: u8 = b'5';
const PAX_EXTENDED: u8 = b'x';

/// One entry's header fields, before encoding.
struct Entry<'a> {
    name: &'a [u8],
    mode: u32,
    size: u64,
    kind: u8,
    link: &'a [u8],
}

pub struct TarWriter<W: Write> {
    out: W,
    offset: u64,
    buffer: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, offset: 0, buffer: Vec::new() }
    }

    /// A directory entry; `name` gets the trailing `/` tarfile gives directories.
    pub fn append_dir(&mut self, name: &[u8], mode: u32, owner: &Ownership) -> io::Result<()> {
        let mut with_slash = name.to_vec();
        if !with_slash.ends_with(b"/") {
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
        self.header(&Entry { name, mode: 0o777, size: 0, kind: SYMLINK, link: target }, owner)
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

    /// Writes the end-of-archive blocks and the record padding.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_zeros(2 * BLOCK as u64)?;
        let remainder = self.offset % RECORD;
        if remainder > 0 {
            self.write_zeros(RECORD - remainder)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, entry: &Entry, owner: &Ownership) -> io::Result<()> {
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        for (key, value, field) in [
            ("path", entry.name, 100),
            ("linkpath", entry.link, 100),
            ("uname", owner.uname.as_bytes(), 32),
            ("gname", owner.gname.as_bytes(), 32),
        ] {
            if !value.is_ascii() || value.len() > field {
                pax.push((key, value.to_vec()));
            }
        }
        let mut numbers =
            [("uid", owner.uid, 8), ("gid", owner.gid, 8), ("size", entry.size, 12), ("mtime", owner.mtime, 12)];
        for (key, value, digits) in &mut numbers {
            if *value >= 8u64.pow(*digits - 1) {
                pax.push((key, value.to_string().into_bytes()));
                *value = 0;
            }
        }
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let block = ustar_block(
                &Entry { name: b"././@PaxHeader", mode: 0, size: records.len() as u64, kind: PAX_EXTENDED, link: b"" },
                &[0, 0, records.len() as u64, 0],
                b"",
                b"",
            );
            self.write_block(&block)?;
            self.out.write_all(&records)?;
            self.offset += records.len() as u64;
            self.pad()?;
        }
        let [(_, uid, _), (_, gid, _), (_, size, _), (_, mtime, _)] = numbers;
        let block = ustar_block(entry, &[uid, gid, size, mtime], owner.uname.as_bytes(), owner.gname.as_bytes());
        self.write_block(&block)
    }

    fn write_block(&mut self, block: &[u8; BLOCK]) -> io::Result<()> {
        self.out.write_all(block)?;
        self.offset += BLOCK as u64;
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

/// `"%d %s=%s\n"` records, each length counting its own digits (tarfile's fixpoint),
/// `hdrcharset=BINARY` first when a value is not UTF-8.
fn pax_records(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut records = Vec::new();
    if fields.iter().any(|(_, value)| std::str::from_utf8(value).is_err()) {
        records.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in fields {
        let bare = key.len() + value.len() + 3;
        let mut total = 0;
        loop {
            let next = bare + total.to_string().len();
            if next == total {
                break;
            }
            total = next;
        }
        records.extend_from_slice(format!("{total} {key}=").as_bytes());
        records.extend_from_slice(value);
        records.push(b'\n');
    }
    records
}

/// One ustar header block as tarfile's `_create_header` makes it (strings
/// encoded as ASCII with `?` for anything else, cut to their fields).
fn ustar_block(entry: &Entry, numbers: &[u64; 4], uname: &[u8], gname: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    put_text(&mut block[0..100], entry.name);
    put_octal(&mut block[100..108], u64::from(entry.mode & 0o7777));
    put_octal(&mut block[108..116], numbers[0]);
    put_octal(&mut block[116..124], numbers[1]);
    put_octal(&mut block[124..136], numbers[2]);
    put_octal(&mut block[136..148], numbers[3]);
    block[148..156].fill(b' ');
    block[156] = entry.kind;
    put_text(&mut block[157..257], entry.link);
    block[257..265].copy_from_slice(b"ustar\x0000");
    put_text(&mut block[265..297], uname);
    put_text(&mut block[297..329], gname);
    let checksum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..155].copy_from_slice(format!("{checksum:06o}\0").as_bytes());
    block
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    field[..digits].copy_from_slice(format!("{value:0digits$o}").as_bytes());
    field[digits] = 0;
}

/// Python's `s.encode("ascii", "replace")[:len]` of the name decoded as tarfile
/// decodes file names (UTF-8, invalid bytes one character each).
fn put_text(field: &mut [u8], text: &[u8]) {
    let mut encoded = Vec::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            encoded.push(if c.is_ascii() { c as u8 } else { b'?' });
        }
        encoded.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    let n = encoded.len().min(field.len());
    field[..n].copy_from_slice(&encoded[..n]);
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
    fn pax_record_lengths_count_themselves() {
        // Expected values from Python's tarfile._create_pax_generic_header.
        assert_eq!(pax_records(&[("a", b"bcd".to_vec())]), b"8 a=bcd\n");
        assert_eq!(pax_records(&[("a", b"bcde".to_vec())]), b"9 a=bcde\n");
        // 94 + 4 + 3 = 101 bytes without the length; with it, 104: three digits.
        let record = pax_records(&[("path", vec![b'x'; 94])]);
        assert_eq!(&record[..4], b"104 ");
        assert_eq!(record.len(), 104);
        assert_eq!(&pax_records(&[("path", vec![0xff])])[..21], b"21 hdrcharset=BINARY\n");
    }

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
