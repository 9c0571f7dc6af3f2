//! Reading tarballs that may be compressed (gzip or zstd, told apart by
//! their first bytes) one member at a time, streaming: docker archives and
//! the layers in them. A plain tarball is read with seeks (headers only); a
//! compressed one is decompressed from its start each time, never held in
//! memory. A truncated or corrupt tarball is an [`InvalidImage`], never a
//! shorter tarball: the end-of-archive block must be there, and a
//! compressed stream must end with its checksum.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;

use super::compress::{Compression, GZIP_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL};
use super::InvalidImage;

const BLOCK: u64 = 512;
const COPY_BUFFER: usize = 256 * 1024;

/// The compression a stream's first bytes announce (none when they announce
/// none); the level cannot be told, the default one stands in.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip { level: GZIP_DEFAULT_LEVEL }
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd { level: ZSTD_DEFAULT_LEVEL }
    } else {
        Compression::None
    }
}

/// `reader`'s bytes, decompressed as their first bytes say.
pub fn decompressed<'a>(mut reader: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match sniff(reader.fill_buf()?) {
        Compression::None => Box::new(reader),
        Compression::Gzip { .. } => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd { .. } => Box::new(zstd::Decoder::with_buffer(reader)?),
    })
}

/// Whether the file starts with a tar header, once decompressed: its
/// checksum must hold. A compressed file whose start cannot be
/// decompressed is corrupt.
pub fn is_tarball(path: &Path) -> Result<bool, InvalidImage> {
    let corrupt = |e: io::Error| InvalidImage(format!("the output is a corrupt compressed file: {e}"));
    let file = File::open(path).map_err(|e| InvalidImage(format!("the output cannot be read: {e}")))?;
    let mut reader = decompressed(BufReader::new(file)).map_err(corrupt)?;
    let mut header = [0u8; BLOCK as usize];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    if filled < header.len() || header.iter().all(|&b| b == 0) {
        return Ok(false);
    }
    let recorded = std::str::from_utf8(&header[148..156])
        .ok()
        .and_then(|field| u32::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8).ok());
    let sum: u32 =
        header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    Ok(recorded == Some(sum))
}

/// Calls `visit(name, size, data)` on each member in order until it returns
/// `Some`. A visit to the end checks that the tarball is complete.
pub fn for_each_member<T>(
    path: &Path,
    mut visit: impl FnMut(&str, u64, &mut dyn Read) -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(4);
    (&mut file).take(4).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    if sniff(&head) == Compression::None {
        let length = file.metadata()?.len();
        let mut tarball = tar::Archive::new(file);
        let (found, end) = visit_entries(tarball.entries_with_seek()?, &mut visit)?;
        if found.is_none() && length < end + BLOCK {
            return Err(truncated());
        }
        return Ok(found);
    }
    let consumed = Rc::new(Cell::new(0));
    let reader =
        Counting { inner: decompressed(BufReader::with_capacity(COPY_BUFFER, file))?, count: consumed.clone() };
    let mut tarball = tar::Archive::new(reader);
    let (found, end) = visit_entries(tarball.entries()?, &mut visit)?;
    if found.is_none() {
        // Reading stops at the end-of-archive block, or at the end of the stream when that block is missing.
        if consumed.get() < end + BLOCK {
            return Err(truncated());
        }
        // The rest must decompress too: the compressed stream ends with its checksum.
        io::copy(&mut tarball.into_inner(), &mut io::sink())?;
    }
    Ok(found)
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the tarball is truncated")
}

/// Visits entries; also returns where the data of the last one visited ends.
fn visit_entries<R: Read, T>(
    entries: tar::Entries<R>,
    visit: &mut impl FnMut(&str, u64, &mut dyn Read) -> io::Result<Option<T>>,
) -> io::Result<(Option<T>, u64)> {
    let mut end = 0;
    for entry in entries {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        end = entry.raw_file_position() + size.next_multiple_of(BLOCK);
        if let Some(found) = visit(member_name(&name), size, &mut entry)? {
            return Ok((Some(found), end));
        }
    }
    Ok((None, end))
}

/// A member's name as manifests name it (`./a/layer.tar` is `a/layer.tar`).
pub fn member_name(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name
}

/// Streams member `member` of the tarball at `archive`, decompressed if it
/// is compressed, to `out`. Anything wrong with the tarball is an [`InvalidImage`].
pub fn copy_member(archive: &Path, member: &str, out: &mut dyn Write) -> io::Result<()> {
    let wanted = member_name(member);
    let copied = for_each_member(archive, |name, size, data| {
        if name != wanted {
            return Ok(None);
        }
        let mut counted = Counting { inner: data, count: Rc::new(Cell::new(0)) };
        copy_decompressed(&mut counted, out).map_err(PassThrough::wrap)?;
        // A member cut short by the end of the tarball reads as a shorter member.
        io::copy(&mut counted, &mut io::sink())?;
        if counted.count.get() != size {
            let cut = InvalidImage(format!("the archive's layer {member} is truncated"));
            return Err(PassThrough::wrap(cut.into_io()));
        }
        Ok(Some(()))
    });
    match copied {
        Ok(Some(())) => Ok(()),
        Ok(None) => Err(InvalidImage(format!("the archive has no layer {member}")).into_io()),
        Err(err) => Err(PassThrough::unwrap(err).unwrap_or_else(|err| {
            InvalidImage(format!("the archive's layer {member} cannot be read: {err}")).into_io()
        })),
    }
}

/// Copies `reader`'s bytes, decompressed if they are compressed, to `out`;
/// returns how many bytes it wrote. What cannot be read or decompressed is
/// an [`InvalidImage`]; `out`'s own errors come back as they are.
pub fn copy_decompressed(reader: &mut dyn Read, out: &mut dyn Write) -> io::Result<u64> {
    let unreadable = |e: io::Error| match InvalidImage::from_io(&e) {
        Some(_) => e,
        None => InvalidImage(format!("a layer tarball cannot be read: {e}")).into_io(),
    };
    let mut data = decompressed(BufReader::with_capacity(COPY_BUFFER, reader)).map_err(unreadable)?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut written = 0;
    loop {
        let n = match data.read(&mut buffer) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        out.write_all(&buffer[..n])?;
        written += n as u64;
    }
}

/// An error a visit has already classified (an [`InvalidImage`], or the
/// destination's own), carried out of [`for_each_member`] as it is; any
/// other error there is the tarball's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PassThrough(io::Error);

impl PassThrough {
    fn wrap(err: io::Error) -> io::Error {
        io::Error::other(PassThrough(err))
    }

    /// The carried error, or `err` itself when it carries none.
    fn unwrap(err: io::Error) -> Result<io::Error, io::Error> {
        if err.get_ref().is_some_and(|inner| inner.is::<PassThrough>()) {
            let inner = err.into_inner().expect("checked").downcast::<PassThrough>().expect("checked");
            return Ok(inner.0);
        }
        Err(err)
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}
