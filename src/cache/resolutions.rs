//! Which manifests an image name stood for, kept in the store so that a restart
//! serves what was built without building again: by tag (what the tag was
//! last built as: stale-while-revalidate starts from there) and by flake
//! revision (a revision built once is never built again, under any tag).
//! The keys are made by the service; they cover the settings that change
//! images (compression, systems, ...).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type::ManifestFormat;
use crate::storage::Kind;

use super::Unwritten;

/// The image a name stood for at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The flake revision it was built from (a git commit or `sha256-…`).
    pub revision: String,
    pub manifests: BTreeMap<ManifestFormat, Digest>,
}

pub struct ResolutionStore {
    /// Writes that failed, kept in memory until the store takes them.
    unwritten: Unwritten,
}

impl ResolutionStore {
    pub fn open(unwritten: Unwritten) -> ResolutionStore {
        ResolutionStore { unwritten }
    }

    /// The resolution stored under `key` (or waiting in memory to be),
    /// checked against the checksum it was sealed with (one that fails is
    /// removed); one that does not parse is ignored (and logged).
    pub fn get(&self, key: &Digest) -> Option<Resolution> {
        self.unwritten.read_sealed(Kind::Resolutions, key.hex())
    }

    /// Stores `resolution` under `key`; one the store does not take waits
    /// in memory (see [`Unwritten`] for why a stale one never moves a tag back).
    pub fn put(&self, key: &Digest, resolution: &Resolution) {
        let bytes = super::seal(&serde_json::to_vec(resolution).expect("resolutions serialize"));
        self.unwritten.put(Kind::Resolutions, key.hex(), &bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn open(state: &Path) -> ResolutionStore {
        let storage = std::sync::Arc::new(crate::storage::FsStorage::open(state).unwrap());
        ResolutionStore::open(Unwritten::new(storage))
    }

    /// A fresh store in a scratch directory (removed when dropped), its state directory and a resolution to keep.
    fn fresh_store() -> (crate::test_dir::TestDir, std::path::PathBuf, ResolutionStore, Digest, Resolution) {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let store = open(&state);
        let resolution = Resolution {
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            manifests: BTreeMap::from([(ManifestFormat::Oci, Digest::of(b"m"))]),
        };
        (scratch, state, store, Digest::of(b"key"), resolution)
    }

    #[test]
    fn a_damaged_resolution_is_removed_not_used() {
        let (_scratch, state, store, key, resolution) = fresh_store();
        store.put(&key, &resolution);
        let path = state.join("resolutions").join(key.hex());
        let mut bytes = fs::read(&path).unwrap();
        // In the revision: still JSON, a valid resolution, but not the one stored.
        let at = bytes.windows(16).position(|w| w == b"0123456789abcdef").unwrap();
        bytes[at] = b'1';
        fs::write(&path, bytes).unwrap();
        assert_eq!(store.get(&key), None);
        assert!(!path.exists());
    }

    #[test]
    fn survives_reopen() {
        let (_scratch, state, store, key, resolution) = fresh_store();
        assert!(store.get(&key).is_none());
        store.put(&key, &resolution);
        drop(store);
        let store = open(&state);
        assert_eq!(store.get(&key), Some(resolution));
        fs::write(state.join("resolutions").join(key.hex()), b"{").unwrap();
        assert!(store.get(&key).is_none());
    }
}
