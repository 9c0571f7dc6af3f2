//! Layer compression: none, gzip or zstd at a level, with output that
//! depends on the tarball alone, so that an evicted layer made again has the
//! digest it was served with. Compressed layers are cut into fixed-size
//! blocks compressed on their own (`codec`) by a pool of one thread per
//! core (`pool`, `blocks`): one large layer uses every core.

mod blocks;
mod codec;
mod pool;

pub use pool::Pool;

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use blocks::BlockEncoder;
use codec::BlockCodec;

/// How layers are compressed: `none`, `gzip:LEVEL` or `zstd:LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip { level: u8 },
    Zstd { level: u8 },
}

/// gzip's and pigz's own default: a better ratio than `pigz -6` at ~3x its speed per core.
pub const GZIP_DEFAULT_LEVEL: u8 = 6;
/// zstd's own default level.
pub const ZSTD_DEFAULT_LEVEL: u8 = 3;
/// libdeflate's range; 10-12 are slower than zlib's 9 and compress a little better.
const GZIP_LEVELS: std::ops::RangeInclusive<u8> = 1..=12;
/// Levels 20-22 need windows larger than a block: they would gain nothing.
const ZSTD_LEVELS: std::ops::RangeInclusive<u8> = 1..=19;

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: GZIP_DEFAULT_LEVEL }
    }
}

impl Compression {
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Docker schema 2 has no zstd layer type; Docker-only clients that pull
    /// zstd layers (containerd, docker 23+) accept the OCI type in its place.
    pub fn docker_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip { .. } => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn block_codec(self) -> Option<BlockCodec> {
        match self {
            Compression::None => None,
            Compression::Gzip { level } => Some(BlockCodec::Gzip(level)),
            Compression::Zstd { level } => Some(BlockCodec::Zstd(level)),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// `none`, `gzip`, `gzip:LEVEL`, `zstd`, `zstd:LEVEL`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, level) = match s.split_once(':') {
            Some((kind, level)) => (kind, Some(level)),
            None => (s, None),
        };
        let parse_level = |range: std::ops::RangeInclusive<u8>, default: u8| match level {
            None => Ok(default),
            Some(text) => text.parse::<u8>().ok().filter(|l| range.contains(l)).ok_or_else(|| {
                format!("invalid compression {s:?}: {kind} levels are {} to {}", range.start(), range.end())
            }),
        };
        match kind {
            "none" if level.is_none() => Ok(Compression::None),
            "none" => Err(format!("invalid compression {s:?}: none takes no level")),
            "gzip" => Ok(Compression::Gzip { level: parse_level(GZIP_LEVELS, GZIP_DEFAULT_LEVEL)? }),
            "zstd" => Ok(Compression::Zstd { level: parse_level(ZSTD_LEVELS, ZSTD_DEFAULT_LEVEL)? }),
            _ => Err(format!("unknown compression {s:?} (expected none, gzip[:1-12] or zstd[:1-19])")),
        }
    }
}

impl fmt::Display for Compression {
    /// The canonical form: `none`, `gzip:6`, `zstd:3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

/// Stored in layer records and in the keys of layer recipes and image
/// plans as its canonical form, which names the encoding exactly: a record
/// written before levels existed (`"gzip"`, one zlib stream) does not read
/// back, so no digest of another encoding is expected of a regeneration.
impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.parse::<Compression>() {
            Ok(c) if c.to_string() == text => Ok(c),
            _ => Err(serde::de::Error::custom(format!("not a canonical compression: {text:?}"))),
        }
    }
}

/// A writer that compresses into `W`.
pub enum Encoder<W: Write> {
    None(W),
    Blocks(BlockEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Compresses on the process's pool.
    pub fn new(compression: Compression, inner: W) -> Self {
        Self::on_pool(compression, Pool::global(), inner)
    }

    /// Compresses on `pool`; the bytes are the same whatever its size.
    pub fn on_pool(compression: Compression, pool: &'static Pool, inner: W) -> Self {
        match compression.block_codec() {
            None => Encoder::None(inner),
            Some(codec) => Encoder::Blocks(BlockEncoder::new(codec, pool, inner)),
        }
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Blocks(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Blocks(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Blocks(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compress_on(pool: &'static Pool, c: Compression, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = Encoder::on_pool(c, pool, Vec::new());
        for piece in data.chunks(chunk) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    fn decompress(c: Compression, bytes: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        match c {
            Compression::None => back = bytes.to_vec(),
            Compression::Gzip { .. } => {
                flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut back).unwrap();
            }
            Compression::Zstd { .. } => back = zstd::decode_all(bytes).unwrap(),
        }
        back
    }

    /// Compressible, not trivially: a few MiB of numbered lines and noise.
    fn sample(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 64);
        let mut x: u32 = 1;
        while data.len() < len {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            data.extend_from_slice(format!("line {} {}\n", data.len(), x >> 24).as_bytes());
        }
        data.truncate(len);
        data
    }

    #[test]
    fn the_same_bytes_whatever_the_number_of_workers() {
        let pools: Vec<&'static Pool> = [1, 2, 5].map(|n| &*Box::leak(Box::new(Pool::new(n)))).to_vec();
        // Several blocks and a partial one for each codec, written in odd pieces.
        let data = sample(9 << 20 | 12345);
        for c in [Compression::None, "gzip:1".parse().unwrap(), Compression::default(), "zstd:3".parse().unwrap()] {
            let one = compress_on(pools[0], c, &data, 100_003);
            for pool in &pools[1..] {
                assert_eq!(one, compress_on(pool, c, &data, 4096), "{c} on {} workers", pool.threads());
            }
            assert_eq!(decompress(c, &one), data, "{c}");
            if c != Compression::None {
                assert!(one.len() < data.len() / 2, "{c} compresses");
            }
        }
    }

    #[test]
    fn gzip_members_and_zstd_frames_per_block() {
        let data = sample(5 << 20);
        let gzip = compress_on(Pool::global(), Compression::default(), &data, 1 << 16);
        let members = gzip.windows(4).filter(|w| w == &[0x1f, 0x8b, 8, 0]).count();
        assert!(members >= 5, "{members} gzip members");
        let zstd = compress_on(Pool::global(), "zstd:3".parse().unwrap(), &data, 1 << 16);
        let frames = zstd.windows(4).filter(|w| w == &[0x28, 0xb5, 0x2f, 0xfd]).count();
        assert!(frames >= 2, "{frames} zstd frames");
    }

    #[test]
    fn empty_input_is_a_valid_stream() {
        for c in [Compression::default(), "zstd:3".parse().unwrap()] {
            let bytes = compress_on(Pool::global(), c, b"", 1);
            assert!(!bytes.is_empty(), "{c}");
            assert!(decompress(c, &bytes).is_empty(), "{c}");
        }
    }

    #[test]
    fn many_layers_at_once_share_a_small_pool() {
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(1)));
        let data = sample(3 << 20);
        let expected = compress_on(Pool::global(), Compression::default(), &data, 1 << 16);
        std::thread::scope(|scope| {
            let runs: Vec<_> =
                (0..6).map(|_| scope.spawn(|| compress_on(pool, Compression::default(), &data, 1 << 16))).collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), expected);
            }
        });
    }

    #[test]
    fn parses_levels_and_names_them() {
        let parse = |s: &str| s.parse::<Compression>();
        assert_eq!(parse("gzip"), Ok(Compression::Gzip { level: 6 }));
        assert_eq!(parse("gzip:1"), Ok(Compression::Gzip { level: 1 }));
        assert_eq!(parse("zstd"), Ok(Compression::Zstd { level: 3 }));
        assert_eq!(parse("zstd:19"), Ok(Compression::Zstd { level: 19 }));
        assert_eq!(parse("none"), Ok(Compression::None));
        assert_eq!(parse("gzip:12").unwrap().to_string(), "gzip:12");
        for (bad, message) in [
            ("lz4", "unknown compression \"lz4\""),
            ("gzip:0", "gzip levels are 1 to 12"),
            ("gzip:13", "gzip levels are 1 to 12"),
            ("zstd:20", "zstd levels are 1 to 19"),
            ("zstd:x", "zstd levels are 1 to 19"),
            ("zstd:", "zstd levels are 1 to 19"),
            ("none:1", "none takes no level"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(message), "{bad}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn records_hold_the_canonical_form_only() {
        let json = serde_json::to_string(&Compression::default()).unwrap();
        assert_eq!(json, "\"gzip:6\"");
        assert_eq!(serde_json::from_str::<Compression>(&json).unwrap(), Compression::default());
        assert_eq!(serde_json::from_str::<Compression>("\"none\"").unwrap(), Compression::None);
        // Records from before levels (one zlib stream per layer) do not read back.
        assert!(serde_json::from_str::<Compression>("\"gzip\"").is_err());
        assert!(serde_json::from_str::<Compression>("\"zstd\"").is_err());
    }
}
