//! Where blobs and records are kept: a small [`Storage`] interface with a
//! local directory ([`fs`], the default) or an S3-compatible bucket shared
//! by replicas ([`s3`]) behind it. It moves bytes and
//! nothing else: what is read is checked against its digest or seal in
//! `cache/`, the one place that reads, whatever the backend.

pub mod fs;
pub mod s3;

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::digest::Digest;

pub use fs::FsStorage;
pub use s3::{S3Options, S3Storage};

/// Which store, and how blobs reach clients (`--storage`, `--s3-*`).
#[derive(Debug, Clone, Default)]
pub enum StorageOptions {
    /// The state directory (the default).
    #[default]
    Fs,
    S3 {
        options: S3Options,
        /// Blob GETs answered with a redirect to a presigned URL valid this
        /// long; `None` streams them through the replica (`--s3-redirect false`).
        redirect: Option<Duration>,
    },
}

impl StorageOptions {
    /// Opens the store; `state_dir` keeps what stays local (staging, GC roots).
    pub fn open(&self, state_dir: &Path) -> Result<Arc<dyn Storage>, StorageError> {
        match self {
            StorageOptions::Fs => Ok(Arc::new(FsStorage::open(state_dir)?)),
            StorageOptions::S3 { options, .. } => {
                Ok(Arc::new(S3Storage::open(options, state_dir.join("tmp").join("blobs"))?))
            }
        }
    }

    /// How long a blob redirect is valid, if blobs are redirected.
    pub fn redirect(&self) -> Option<Duration> {
        match self {
            StorageOptions::Fs => None,
            StorageOptions::S3 { redirect, .. } => *redirect,
        }
    }
}

/// The kinds of small object kept, each a folder (fs) or a prefix (s3) of
/// its own, named by a digest's hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Manifests, by their digest.
    Manifests,
    /// Image configs, by their digest.
    Configs,
    /// Layer records, by their blob digest.
    Layers,
    /// Layer records, by their recipe key.
    Sources,
    /// Image records, by their build key.
    Images,
    /// The artifacts (SBOM, provenance) referring to a manifest, by its digest.
    Referrers,
    /// Tag and revision resolutions, by their key.
    Resolutions,
    /// The image names holding a digest, by the digest.
    Names,
    /// Who builds an image now, by its revision key (see `service/lease.rs`).
    Leases,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Manifests,
        Kind::Configs,
        Kind::Layers,
        Kind::Sources,
        Kind::Images,
        Kind::Referrers,
        Kind::Resolutions,
        Kind::Names,
        Kind::Leases,
    ];

    pub fn folder(self) -> &'static str {
        match self {
            Kind::Manifests => "manifests",
            Kind::Configs => "configs",
            Kind::Layers => "layers",
            Kind::Sources => "sources",
            Kind::Images => "images",
            Kind::Referrers => "referrers",
            Kind::Resolutions => "resolutions",
            Kind::Names => "names",
            Kind::Leases => "leases",
        }
    }
}

/// What identifies one stored version of an object: when it changes, the
/// bytes may have changed (fs: the file's inode, size and times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// A small object as read, with the version it was read at.
pub struct Stored {
    pub bytes: Vec<u8>,
    pub version: Version,
}

/// A blob found in the store by a listing.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    /// When it was last used (fs) or written.
    pub used: SystemTime,
}

/// An opened blob: its bytes stay those of `version` while it is held.
pub trait BlobHandle: Send {
    fn size(&self) -> u64;
    /// The version now: compared with the one that was verified.
    fn version(&self) -> io::Result<Version>;
    /// Bytes `start..end` (end exclusive).
    fn read_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>>;
    /// Records that the blob was used now, where the store keeps that
    /// (fs: its mtime, so the eviction order survives a restart).
    fn touch(&self) {}
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The store cannot be reached, or answers that it is failing (5xx).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store refused (a 4xx other than a missing object), or answered what cannot be read.
    #[error("{0}")]
    Store(String),
    /// The settings do not make a store.
    #[error("{0}")]
    Config(String),
}

/// A store of small objects and blobs. Every method is a plain transfer;
/// none checks what it moves.
pub trait Storage: Send + Sync {
    /// What and where it is, for logs.
    fn describe(&self) -> String;

    /// The object `name` of `kind`, `None` if there is none.
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Stored>, StorageError>;
    /// Stores `bytes` as `name` whole or not at all.
    fn put(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Stores `bytes` as `name` only if there is no `name` yet, in one
    /// step no other writer can come between: the version stored, or
    /// `None` if `name` was there.
    fn create(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<Option<Version>, StorageError>;
    /// Removes `name` if it is still at `version` (a writer may have put a
    /// good copy there since it was read).
    fn remove(&self, kind: Kind, name: &str, version: &Version) -> Result<(), StorageError>;
    /// The names stored of `kind`.
    fn list(&self, kind: Kind) -> Result<Vec<String>, StorageError>;

    /// Every blob stored.
    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StorageError>;
    /// The blob `digest`, `None` if it is not stored.
    fn open_blob(&self, digest: &Digest) -> Result<Option<Box<dyn BlobHandle>>, StorageError>;
    /// Stores the finished file `staged` (written under [`Storage::staging_dir`])
    /// as the blob `digest`; the file is gone afterwards. Returns the
    /// version stored.
    fn put_blob(&self, digest: &Digest, staged: &Path) -> Result<Version, StorageError>;
    /// Removes the blob `digest` (an open handle stays readable); with
    /// `at`, only if it is still that version.
    fn remove_blob(&self, digest: &Digest, at: Option<&Version>) -> Result<(), StorageError>;
    /// The local folder blobs are written into before [`Storage::put_blob`].
    fn staging_dir(&self) -> &Path;

    /// Whether reaching the store costs a request over the network (then
    /// HEADs answer from recorded sizes).
    fn is_remote(&self) -> bool {
        false
    }

    /// Whether the store could not be reached (or failed) at its last
    /// request: what was not found may be there.
    fn is_down(&self) -> bool {
        false
    }

    /// A URL that fetches the blob `digest` (and nothing else) for
    /// `valid_for`, without credentials; `None` if the store has none.
    fn presign_blob(&self, _digest: &Digest, _valid_for: Duration) -> Option<String> {
        None
    }
}
