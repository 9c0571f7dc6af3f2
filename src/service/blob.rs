//! Finding a blob: a config (kept for good), a cached layer, or a layer
//! made again from its recipe, streamed to the client as it is produced and
//! cached on the way when it checks out.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::Service;
use crate::digest::Digest;
use crate::image::layer::{self, LayerRecord};

/// Where a blob's bytes come from.
pub enum BlobSource {
    Bytes(Vec<u8>),
    File(File, u64),
    /// Not cached (evicted, or the disk was full): generated on the way out.
    Generate(LayerRecord),
}

impl BlobSource {
    pub fn size(&self) -> u64 {
        match self {
            BlobSource::Bytes(bytes) => bytes.len() as u64,
            BlobSource::File(_, size) => *size,
            BlobSource::Generate(record) => record.size,
        }
    }
}

/// Large reads: the cost of a blob copy is the syscalls.
const COPY_BUFFER: usize = 256 * 1024;

impl Service {
    pub fn blob(&self, digest: &Digest) -> Option<BlobSource> {
        if let Some(config) = self.meta.config(digest) {
            return Some(BlobSource::Bytes(config));
        }
        let record = self.meta.layer(digest);
        if let Some((file, size)) = self.blobs.open_blob(digest) {
            // Blobs are not fsynced (that would halve cold generation): one
            // cut short by a crash is dropped here and made again.
            if record.as_ref().is_none_or(|r| r.size == size) {
                return Some(BlobSource::File(file, size));
            }
            log::warn!("cached blob {digest} has {size} bytes, not the recorded size; making it again");
            self.blobs.forget(digest);
        }
        let record = record?;
        record.source.is_available().then_some(BlobSource::Generate(record))
    }

    /// Writes bytes `start..end` (end exclusive) of the blob to `out`.
    pub fn write_blob(&self, source: BlobSource, start: u64, end: u64, out: &mut dyn Write) -> io::Result<()> {
        match source {
            BlobSource::Bytes(bytes) => out.write_all(&bytes[start as usize..end as usize]),
            BlobSource::File(mut file, _) => {
                file.seek(SeekFrom::Start(start))?;
                copy_exactly(&mut file, end - start, out)
            }
            BlobSource::Generate(record) => self.regenerate(&record, start, end, out),
        }
    }

    fn regenerate(&self, record: &LayerRecord, start: u64, end: u64, out: &mut dyn Write) -> io::Result<()> {
        let started = std::time::Instant::now();
        let window = Window { out, position: 0, start, end };
        let tee = Tee { client: window, cache: self.blobs.writer() };
        let (made, tee) = layer::generate(&record.source, record.compression, tee)?;
        if made.digest != record.digest {
            // The client checks the digest too; keeping the bytes would serve them again.
            log::error!("layer {} came out as {} when made again; not caching it", record.digest, made.digest);
            return Err(io::Error::other("regenerated layer does not match its digest"));
        }
        let evicted = self.blobs.commit(tee.cache, &made.digest, made.size);
        log::info!("regenerated layer {} ({} bytes) in {:.1?}", made.digest, made.size, started.elapsed());
        self.after_eviction(&evicted);
        Ok(())
    }
}

fn copy_exactly(from: &mut impl Read, mut len: u64, out: &mut dyn Write) -> io::Result<()> {
    let mut buffer = vec![0u8; COPY_BUFFER.min(len as usize).max(1)];
    while len > 0 {
        let want = buffer.len().min(len as usize);
        let n = from.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file shorter than recorded"));
        }
        out.write_all(&buffer[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// Passes on only the bytes in `start..end` of what is written to it.
struct Window<'a> {
    out: &'a mut dyn Write,
    position: u64,
    start: u64,
    end: u64,
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let from = self.position;
        let to = from + buf.len() as u64;
        let (lo, hi) = (from.max(self.start), to.min(self.end));
        if lo < hi {
            self.out.write_all(&buf[(lo - from) as usize..(hi - from) as usize])?;
        }
        self.position = to;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes to the client and to the cache; only the client's errors count.
struct Tee<C, K> {
    client: C,
    cache: K,
}

impl<C: Write, K: Write> Write for Tee<C, K> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.client.write_all(buf)?;
        self.cache.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.client.flush()?;
        self.cache.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_passes_only_the_range() {
        let mut out = Vec::new();
        let mut w = Window { out: &mut out, position: 0, start: 3, end: 7 };
        for chunk in [&b"012"[..], b"3456", b"789"] {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(out, b"3456");
    }
}
