//! Content digests: the `Digest` newtype, validated where it enters, and a
//! writer that hashes and counts what passes through it.
//!
//! SHA-256 is ring's, the one rustls uses for TLS: it takes the CPU's SHA
//! instructions where there are some, on x86_64 (SHA-NI) and on aarch64
//! (the ARMv8 crypto extensions). A layer's digests are hashed on one
//! thread, byte after byte, so on a board a software SHA-256 would bound
//! how fast any layer can be made, however many cores compress it.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use ring::digest::{Context, SHA256};

/// A `sha256:<64 lowercase hex>` digest, the only algorithm flakeforge produces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest flakeforge can serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// Does not match the spec's digest grammar, or the encoding does not fit the algorithm.
    #[error("invalid digest")]
    Invalid,
    /// Well formed, but an algorithm flakeforge never produces (so nothing can have it).
    #[error("unsupported digest algorithm")]
    Unsupported,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hash(Sha256::digest(bytes))
    }

    pub fn from_hash(hash: [u8; 32]) -> Self {
        Digest { hex: hex(&hash) }
    }

    /// The digest and length of everything `reader` gives.
    pub fn of_reader(mut reader: impl io::Read) -> io::Result<(Self, u64)> {
        let mut hashing = HashingWriter::new(io::sink());
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => hashing.write_all(&buffer[..n])?,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        let (digest, len, _) = hashing.finish();
        Ok((digest, len))
    }

    /// The 64 hex digits without the algorithm, as used in file names.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Parses a bare hex string (e.g. a file name or a `checksum` file).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest { hex: hex.to_string() })
        } else {
            Err(DigestError::Invalid)
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// The grammar of the OCI image spec:
    /// `algorithm ":" encoded`, `algorithm = component (separator component)*`,
    /// `component = [a-z0-9]+`, `separator = [+._-]`, `encoded = [a-zA-Z0-9=_-]+`.
    fn from_str(s: &str) -> Result<Self, DigestError> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::Invalid)?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .split(['+', '.', '_', '-'])
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let encoded_ok =
            !encoded.is_empty() && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
        if !algorithm_ok || !encoded_ok || s.len() > 255 {
            return Err(DigestError::Invalid);
        }
        match algorithm {
            "sha256" => Digest::from_hex(encoded),
            "sha512"
                if encoded.len() == 128
                    && encoded.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
            {
                Err(DigestError::Unsupported)
            }
            "sha512" => Err(DigestError::Invalid),
            _ => Err(DigestError::Unsupported),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// SHA-256 of what is given to it, in pieces.
pub struct Sha256(Context);

impl Sha256 {
    /// The SHA-256 of `bytes`, given whole.
    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        let mut sha = Sha256::new();
        sha.update(bytes);
        sha.finish()
    }

    pub fn new() -> Self {
        Sha256(Context::new(&SHA256))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finish().as_ref().try_into().expect("SHA-256 gives 32 bytes")
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// Passes writes through to `inner` while hashing and counting them.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hash(self.hasher.finish()), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn hashes_in_pieces_as_in_one() {
        // FIPS 180-2's vectors: "abc", and a million "a"s given in uneven pieces.
        assert_eq!(Digest::of(b"abc").hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut writer = HashingWriter::new(io::sink());
        for piece in [1, 63, 64, 65, 4095, 100_000].iter().cycle().scan(0usize, |sum, &n| {
            let n = n.min(1_000_000 - *sum);
            *sum += n;
            (n > 0).then_some(n)
        }) {
            writer.write_all(&vec![b'a'; piece]).unwrap();
        }
        let (digest, len, _) = writer.finish();
        assert_eq!(len, 1_000_000);
        assert_eq!(digest.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha512:abc",
        ] {
            assert_eq!(bad.parse::<Digest>(), Err(DigestError::Invalid), "{bad}");
        }
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        assert_eq!("blake3:abcd".parse::<Digest>(), Err(DigestError::Unsupported));
        assert_eq!(format!("sha512:{}", "a".repeat(128)).parse::<Digest>(), Err(DigestError::Unsupported));
    }

    #[test]
    fn hashing_writer_counts() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!(n, 3);
        assert_eq!(inner, b"abc");
        assert_eq!(d.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
