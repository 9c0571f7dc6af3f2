//! Which manifests an image name stood for, kept in the store so that a restart
//! serves what was built without building again: by tag (what the tag was
//! last built as: stale-while-revalidate starts from there) and by flake
//! revision (a revision built once is never built again, under any tag).
//! The keys are made by the service; they cover the settings that change
//! images (compression, systems, ...).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type::ManifestFormat;
use crate::storage::{Kind, Storage};

/// The image a name stood for at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The flake revision it was built from (a git commit or `sha256-…`).
    pub revision: String,
    pub manifests: BTreeMap<ManifestFormat, Digest>,
}

pub struct ResolutionStore {
    storage: Arc<dyn Storage>,
}

impl ResolutionStore {
    pub fn open(storage: Arc<dyn Storage>) -> ResolutionStore {
        ResolutionStore { storage }
    }

    /// The resolution stored under `key`, checked against the checksum it
    /// was sealed with (one that fails is removed); one that does not parse
    /// is ignored (and logged).
    pub fn get(&self, key: &Digest) -> Option<Resolution> {
        super::read_sealed(self.storage.as_ref(), Kind::Resolutions, key.hex())
    }

    /// Stores `resolution` under `key`; a failure (a full disk) only costs a rebuild after a restart.
    pub fn put(&self, key: &Digest, resolution: &Resolution) {
        let bytes = super::seal(&serde_json::to_vec(resolution).expect("resolutions serialize"));
        if let Err(err) = self.storage.put(Kind::Resolutions, key.hex(), &bytes) {
            log::warn!("resolutions: could not keep {} ({err}); it is built again after a restart", key.hex());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn open(state: &Path) -> ResolutionStore {
        ResolutionStore::open(Arc::new(crate::storage::FsStorage::open(state).unwrap()))
    }

    /// A fresh store in a directory named after `test`, and a resolution to keep.
    fn fresh_store(test: &str) -> (std::path::PathBuf, ResolutionStore, Digest, Resolution) {
        let state = std::env::temp_dir().join(format!("flakeforge-resolutions-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let store = open(&state);
        let resolution = Resolution {
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            manifests: BTreeMap::from([(ManifestFormat::Oci, Digest::of(b"m"))]),
        };
        (state, store, Digest::of(b"key"), resolution)
    }

    #[test]
    fn a_damaged_resolution_is_removed_not_used() {
        let (state, store, key, resolution) = fresh_store("damaged");
        store.put(&key, &resolution);
        let path = state.join("resolutions").join(key.hex());
        let mut bytes = fs::read(&path).unwrap();
        // In the revision: still JSON, a valid resolution, but not the one stored.
        let at = bytes.windows(16).position(|w| w == b"0123456789abcdef").unwrap();
        bytes[at] = b'1';
        fs::write(&path, bytes).unwrap();
        assert_eq!(store.get(&key), None);
        assert!(!path.exists());
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn survives_reopen() {
        let (state, store, key, resolution) = fresh_store("reopen");
        assert!(store.get(&key).is_none());
        store.put(&key, &resolution);
        drop(store);
        let store = open(&state);
        assert_eq!(store.get(&key), Some(resolution));
        fs::write(state.join("resolutions").join(key.hex()), b"{").unwrap();
        assert!(store.get(&key).is_none());
        fs::remove_dir_all(&state).unwrap();
    }
}
