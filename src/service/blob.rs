//! Finding a blob: a config (kept for good), a cached layer, or a layer
//! made again from its recipe ([`super::regenerate`]: once for all who ask),
//! streamed to the client as it is produced and cached on the way when it
//! checks out.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::regenerate::Regeneration;
use super::{Service, ServiceError};
use crate::cache::VerifiedBlob;
use crate::digest::Digest;
use crate::image::layer::LayerRecord;
use crate::metrics;

/// Where a blob's bytes come from.
pub enum BlobSource {
    Bytes(Vec<u8>),
    Stored(VerifiedBlob),
    /// Not cached (evicted): read as its regeneration writes it.
    Regenerating(Arc<Regeneration>),
    /// Not cached and the cache has no room (a full disk): generated for this client alone.
    Generate(LayerRecord),
    /// In a remote store, or not: known by its record until its bytes are asked for.
    Recorded(LayerRecord),
}

impl BlobSource {
    pub fn size(&self) -> u64 {
        match self {
            BlobSource::Bytes(bytes) => bytes.len() as u64,
            BlobSource::Stored(blob) => blob.size(),
            BlobSource::Regenerating(regeneration) => regeneration.record.size,
            BlobSource::Generate(record) | BlobSource::Recorded(record) => record.size,
        }
    }
}

/// Large reads: the cost of a blob copy is the syscalls.
const COPY_BUFFER: usize = 256 * 1024;

impl Service {
    /// Readies `source` for sending its bytes: an evicted layer joins (or
    /// starts) its regeneration. Waiting longer than `--answer-within` for
    /// that to start is [`ServiceError::TooManyBuilds`]. (A `HEAD` request
    /// needs only [`Service::blob`].)
    pub fn open_blob(&self, source: BlobSource) -> Result<BlobSource, ServiceError> {
        match source {
            BlobSource::Generate(record) => match self.regeneration(record.clone())? {
                Some(regeneration) => Ok(BlobSource::Regenerating(regeneration)),
                None => Ok(BlobSource::Generate(record)),
            },
            BlobSource::Recorded(record) => match self.stored_blob(&record)? {
                Some(blob) => Ok(BlobSource::Stored(blob)),
                None if record.source.is_available() => self.open_blob(BlobSource::Generate(record)),
                None => Err(ServiceError::BlobUnknown(format!(
                    "blob {} is not in the storage and cannot be made again here",
                    record.digest
                ))),
            },
            other => Ok(other),
        }
    }

    /// A 307 target for the blob `digest`: a presigned URL of the store,
    /// when blobs are redirected and it holds the blob (configs are served
    /// here: they are records).
    pub fn blob_redirect(&self, digest: &Digest) -> Option<String> {
        let valid_for = self.config.storage.redirect()?;
        let record = self.layer_record(digest)?;
        self.blobs.presign(digest, record.size, valid_for)
    }

    /// The blob of `record` from the store, verified; `None` if it is not there.
    fn stored_blob(&self, record: &LayerRecord) -> Result<Option<VerifiedBlob>, ServiceError> {
        let Some(blob) = self.blobs.open_blob(&record.digest) else { return Ok(None) };
        if blob.size() == record.size {
            return Ok(Some(blob));
        }
        log::warn!("stored blob {} has {} bytes, not the recorded size; making it again", record.digest, blob.size());
        self.blobs.forget(&record.digest);
        Ok(None)
    }

    /// The blob `digest`, `None` if it is not known here; an evicted layer
    /// is [`BlobSource::Generate`] until [`Service::open_blob`].
    pub fn blob(&self, digest: &Digest) -> Option<BlobSource> {
        if let Some(config) = self.config_blob(digest) {
            return Some(BlobSource::Bytes(config));
        }
        let record = self.layer_record(digest);
        if self.blobs.is_remote() {
            // HEADs answer from the record; the store is asked when the bytes are.
            return record.map(BlobSource::Recorded);
        }
        if let Some(blob) = self.blobs.open_blob(digest) {
            // Blobs are not fsynced (that would halve cold generation): one
            // cut short by a crash is dropped here and made again.
            let size = blob.size();
            if record.as_ref().is_none_or(|r| r.size == size) {
                metrics::global().cache.hits.inc();
                return Some(BlobSource::Stored(blob));
            }
            log::warn!("cached blob {digest} has {size} bytes, not the recorded size; making it again");
            self.blobs.forget(digest);
        }
        let record = record?;
        metrics::global().cache.misses.inc();
        record.source.is_available().then_some(BlobSource::Generate(record))
    }

    /// Writes bytes `start..end` (end exclusive) of the blob to `out`.
    pub fn write_blob(&self, source: BlobSource, start: u64, end: u64, out: &mut dyn Write) -> io::Result<()> {
        match source {
            BlobSource::Bytes(bytes) => out.write_all(&bytes[start as usize..end as usize]),
            BlobSource::Stored(blob) => copy_exactly(&mut blob.read_range(start, end)?, end - start, out),
            BlobSource::Regenerating(regeneration) => self.follow(&regeneration, start, end, out),
            BlobSource::Generate(record) | BlobSource::Recorded(record) => {
                self.generate_range(&record, start, end, out)
            }
        }
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
pub(super) struct Window<'a> {
    pub out: &'a mut dyn Write,
    pub position: u64,
    pub start: u64,
    pub end: u64,
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
