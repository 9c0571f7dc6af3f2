//! What flakeforge keeps between requests and across restarts, on top of
//! a [`Storage`]: layer blobs (bounded, LRU), manifests, configs and layer
//! recipes (small, kept), which image names hold each digest (kept),
//! resolved tags in memory, records the store did not take (in memory,
//! written when it does). Every read is verified here, whatever the
//! backend: small objects against their digest or the checksum they were
//! sealed with, blobs by hashing when first opened.

pub mod blobs;
pub mod image_names;
pub mod known_blobs;
pub mod metadata;
pub mod resolutions;
pub mod tags;
pub mod unwritten;

pub use blobs::{BlobStore, CacheWriter, VerifiedBlob};
pub use image_names::ImageNames;
pub use metadata::{GcRoot, ImageRecord, MetadataStore};
pub use resolutions::{Resolution, ResolutionStore};
pub use tags::TagCache;
pub use unwritten::Unwritten;

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

/// What `verify` makes of the object stored as `name`: it returns what it
/// verified (the parsed record, the bytes that match their digest), so
/// that nothing is read twice or handed out unverified. What it refuses
/// (a flipped bit, an object emptied or cut short) is logged and removed,
/// so that it is made again.
pub fn read_checked<T>(
    storage: &dyn Storage,
    kind: Kind,
    name: &str,
    verify: impl FnOnce(&[u8]) -> Option<T>,
) -> Option<T> {
    let stored = match storage.get(kind, name) {
        Ok(stored) => stored?,
        Err(err) => {
            log::warn!("cannot read {}/{name} ({err}); it will be made again", kind.folder());
            return None;
        }
    };
    if let Some(verified) = verify(&stored.bytes) {
        return Some(verified);
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

/// The sealed record `name`, parsed from the JSON that passed its seal:
/// one that fails its seal is removed; one that passes but does not parse
/// (written by another version) is ignored and logged, not removed.
pub fn read_sealed<T: serde::de::DeserializeOwned>(storage: &dyn Storage, kind: Kind, name: &str) -> Option<T> {
    read_checked(storage, kind, name, parse_sealed(kind, name))?
}

/// How a sealed record is verified for [`read_checked`]: its JSON, once it
/// passed the seal, parsed (`Some(None)`: sealed but unreadable, kept).
pub fn parse_sealed<T: serde::de::DeserializeOwned>(
    kind: Kind,
    name: &str,
) -> impl FnOnce(&[u8]) -> Option<Option<T>> + '_ {
    move |sealed| unseal(sealed).map(|json| parse(json, kind, name))
}

/// `json` (of the record `kind/name`, already verified) parsed; what does
/// not parse is logged.
pub fn parse<T: serde::de::DeserializeOwned>(json: &[u8], kind: Kind, name: &str) -> Option<T> {
    serde_json::from_slice(json)
        .inspect_err(|err| log::warn!("ignoring unreadable {}/{name}: {err}", kind.folder()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_parsed_only_from_what_passed_its_seal() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let storage = crate::storage::FsStorage::open(&state).unwrap();
        let name = Digest::of(b"key");
        let read = |storage: &dyn Storage| read_sealed::<serde_json::Value>(storage, Kind::Resolutions, name.hex());
        storage.put(Kind::Resolutions, name.hex(), &seal(br#"{"revision":"a"}"#)).unwrap();
        assert_eq!(read(&storage), Some(serde_json::json!({"revision": "a"})));
        // Valid JSON, a valid record, under the seal of another: not parsed, removed.
        let mut swapped = seal(br#"{"revision":"a"}"#);
        swapped.truncate(swapped.len() - br#"{"revision":"a"}"#.len());
        swapped.extend_from_slice(br#"{"revision":"b"}"#);
        storage.put(Kind::Resolutions, name.hex(), &swapped).unwrap();
        assert_eq!(read(&storage), None);
        assert!(storage.get(Kind::Resolutions, name.hex()).unwrap().is_none(), "kept");
        // Sealed, but not JSON (another version's record): ignored, kept.
        storage.put(Kind::Resolutions, name.hex(), &seal(b"not json")).unwrap();
        assert_eq!(read(&storage), None);
        assert!(storage.get(Kind::Resolutions, name.hex()).unwrap().is_some(), "removed");
        // What the check verified is what is handed out, read once.
        let calls = std::cell::Cell::new(0);
        let verified = read_checked(&storage, Kind::Resolutions, name.hex(), |bytes| {
            calls.set(calls.get() + 1);
            unseal(bytes).map(<[u8]>::to_vec)
        });
        assert_eq!((verified.as_deref(), calls.get()), (Some(&b"not json"[..]), 1));
    }
}
