//! What flakeforge keeps between requests and across restarts, on top of
//! a [`Storage`]: layer blobs (bounded, LRU), manifests, configs and layer
//! recipes (small, kept), which image names hold each digest (kept),
//! resolved tags in memory. Every read is verified here, whatever the
//! backend: small objects against their digest or the checksum they were
//! sealed with, blobs by hashing when first opened.

pub mod blobs;
pub mod image_names;
pub mod metadata;
pub mod resolutions;
pub mod tags;

pub use blobs::{BlobStore, CacheWriter, VerifiedBlob};
pub use image_names::ImageNames;
pub use metadata::{GcRoot, ImageRecord, MetadataStore};
pub use resolutions::{Resolution, ResolutionStore};
pub use tags::TagCache;

use crate::digest::Digest;
use crate::storage::{Kind, Storage};

/// A record as stored: `sha256:<hex of the JSON>`, a newline, the JSON.
pub fn seal(json: &[u8]) -> Vec<u8> {
    let mut sealed = format!("{}\n", Digest::of(json)).into_bytes();
    sealed.extend_from_slice(json);
    sealed
}

/// The JSON of a sealed record, if it matches its checksum.
pub fn unseal(sealed: &[u8]) -> Option<&[u8]> {
    let newline = sealed.iter().position(|&b| b == b'\n')?;
    let digest: Digest = std::str::from_utf8(&sealed[..newline]).ok()?.parse().ok()?;
    let json = &sealed[newline + 1..];
    (Digest::of(json) == digest).then_some(json)
}

/// What is stored as `name`, if `intact` holds for it. What does not
/// hold (a flipped bit, an object emptied or cut short) is logged and
/// removed, so that it is made again; it is never handed out.
pub fn read_checked(storage: &dyn Storage, kind: Kind, name: &str, intact: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let stored = match storage.get(kind, name) {
        Ok(stored) => stored?,
        Err(err) => {
            log::warn!("cannot read {}/{name} ({err}); it will be made again", kind.folder());
            return None;
        }
    };
    if intact(&stored.bytes) {
        return Some(stored.bytes);
    }
    log::error!(
        "{}/{name} in {} ({} bytes) does not match its digest: removed, it will be made again",
        kind.folder(),
        storage.describe(),
        stored.bytes.len()
    );
    if let Err(err) = storage.remove(kind, name, &stored.version) {
        log::warn!("cannot remove the damaged {}/{name}: {err}", kind.folder());
    }
    None
}

/// The JSON of the sealed record `name`, parsed; one that fails its seal
/// is removed, one that does not parse is ignored (and logged).
pub fn read_sealed<T: serde::de::DeserializeOwned>(sealed: &[u8], what: &str) -> Option<T> {
    serde_json::from_slice(unseal(sealed)?).inspect_err(|err| log::warn!("ignoring unreadable {what}: {err}")).ok()
}
