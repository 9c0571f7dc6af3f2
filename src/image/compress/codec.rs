//! Compressing one block on its own: a whole gzip member (libdeflate) or a
//! whole zstd frame. Blocks cut at fixed offsets and compressed with no
//! knowledge of each other make the layer's bytes depend on its tarball
//! alone, never on how many threads compressed it; concatenated, the
//! members (frames) are one valid gzip (zstd) stream that every client's
//! decompressor reads through (RFC 1952 §2.2, RFC 8878 §3.1).

use std::cell::RefCell;
use std::io;

/// How each block of a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCodec {
    /// libdeflate at this level (1-12), one gzip member per block.
    Gzip(u8),
    /// zstd at this level (1-19), one frame per block.
    Zstd(u8),
}

/// gzip's window is 32 KiB: past 1 MiB a larger block gains almost nothing
/// (0.15% on a realistic closure) and costs memory and cache.
const GZIP_BLOCK: usize = 1 << 20;
/// zstd's window at level 3 is 2 MiB: 4 MiB frames compress a realistic
/// closure as well as the `zstd` CLI's single stream does.
const ZSTD_BLOCK: usize = 4 << 20;

impl BlockCodec {
    /// Bytes of tarball per block. Part of the encoding: changing it changes digests.
    pub fn block_size(self) -> usize {
        match self {
            BlockCodec::Gzip(_) => GZIP_BLOCK,
            BlockCodec::Zstd(_) => ZSTD_BLOCK,
        }
    }

    /// `block` compressed on its own, into `out` (emptied first). Each
    /// thread keeps one compressor per codec.
    pub fn compress(self, block: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        match self {
            BlockCodec::Gzip(level) => gzip_member(level, block, out),
            BlockCodec::Zstd(level) => zstd_frame(level, block, out),
        }
    }
}

thread_local! {
    static GZIP: RefCell<Option<(u8, libdeflater::Compressor)>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<(u8, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// A gzip member with mtime 0, no name and OS "unknown": the bytes depend on the input only.
fn gzip_member(level: u8, block: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    GZIP.with_borrow_mut(|cached| {
        if cached.as_ref().is_none_or(|(l, _)| *l != level) {
            let lvl = libdeflater::CompressionLvl::new(i32::from(level))
                .map_err(|_| io::Error::other(format!("gzip level {level} is out of range")))?;
            *cached = Some((level, libdeflater::Compressor::new(lvl)));
        }
        let (_, compressor) = cached.as_mut().expect("just set");
        out.resize(compressor.gzip_compress_bound(block.len()), 0);
        let n = compressor.gzip_compress(block, out).map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
        out.truncate(n);
        Ok(())
    })
}

/// A zstd frame with its content size and no checksum (the blob's digest checks it).
fn zstd_frame(level: u8, block: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    ZSTD.with_borrow_mut(|cached| {
        if cached.as_ref().is_none_or(|(l, _)| *l != level) {
            *cached = Some((level, zstd::bulk::Compressor::new(i32::from(level))?));
        }
        out.reserve(zstd::zstd_safe::compress_bound(block.len()));
        cached.as_mut().expect("just set").1.compress_to_buffer(block, out).map(drop)
    })
}
