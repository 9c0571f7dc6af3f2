//! Small documents kept on disk for good, so that every digest served
//! before a restart can be pulled after it: manifests and configs by digest,
//! layer records (what each layer blob is made of) by blob digest and by
//! recipe, built images by build key, and the artifacts that refer to each
//! manifest (its SBOM, its provenance) by the manifest's digest. Writes that
//! fail (a full disk) are kept in memory instead, and logged.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::artifact::Referrer;
use crate::image::layer::LayerRecord;
use crate::image::manifest::Platform;
use crate::media_type::ManifestFormat;

/// An image as built: its manifests in both forms, its layers, its GC roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub platform: Platform,
    pub manifests: BTreeMap<ManifestFormat, Digest>,
    pub layers: Vec<Digest>,
    pub gcroots: Vec<GcRoot>,
    /// The annotations of its OCI manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An out-link of `nix build` and the store path it held when the image was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRoot {
    pub link: PathBuf,
    pub target: PathBuf,
}

pub struct MetadataStore {
    root: PathBuf,
    tmp_dir: PathBuf,
    unwritten: Mutex<HashMap<PathBuf, Vec<u8>>>,
}

const KINDS: [&str; 6] = ["manifests", "configs", "layers", "sources", "images", "referrers"];

impl MetadataStore {
    pub fn open(state_dir: &Path) -> io::Result<MetadataStore> {
        let root = state_dir.to_path_buf();
        for kind in KINDS {
            fs::create_dir_all(root.join(kind))?;
        }
        let tmp_dir = state_dir.join("tmp").join("metadata");
        let _ = fs::remove_dir_all(&tmp_dir);
        fs::create_dir_all(&tmp_dir)?;
        Ok(MetadataStore { root, tmp_dir, unwritten: Mutex::new(HashMap::new()) })
    }

    fn path(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(key)
    }

    fn put(&self, path: PathBuf, bytes: &[u8]) {
        if let Err(err) = super::write_atomic(&self.tmp_dir, &path, bytes) {
            log::warn!("metadata: could not write {} ({err}); keeping it in memory", path.display());
            self.unwritten.lock().unwrap().insert(path, bytes.to_vec());
        }
    }

    fn get(&self, path: &Path) -> Option<Vec<u8>> {
        if let Some(bytes) = self.unwritten.lock().unwrap().get(path) {
            return Some(bytes.clone());
        }
        fs::read(path).ok()
    }

    fn put_json<T: Serialize>(&self, path: PathBuf, value: &T) {
        self.put(path, &serde_json::to_vec(value).expect("records serialize"));
    }

    fn get_json<T: DeserializeOwned>(&self, path: &Path) -> Option<T> {
        let bytes = self.get(path)?;
        serde_json::from_slice(&bytes)
            .inspect_err(|err| log::warn!("metadata: ignoring unreadable {}: {err}", path.display()))
            .ok()
    }

    pub fn put_manifest(&self, manifest: &[u8]) -> Digest {
        let digest = Digest::of(manifest);
        self.put(self.path("manifests", digest.hex()), manifest);
        digest
    }

    pub fn manifest(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.get(&self.path("manifests", digest.hex()))
    }

    pub fn put_config(&self, config: &[u8]) -> Digest {
        let digest = Digest::of(config);
        self.put(self.path("configs", digest.hex()), config);
        digest
    }

    pub fn config(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.get(&self.path("configs", digest.hex()))
    }

    /// Records a generated layer under its blob digest and under its recipe key.
    pub fn put_layer(&self, source_key: &Digest, record: &LayerRecord) {
        self.put_json(self.path("layers", record.digest.hex()), record);
        self.put_json(self.path("sources", source_key.hex()), record);
    }

    pub fn layer(&self, digest: &Digest) -> Option<LayerRecord> {
        self.get_json(&self.path("layers", digest.hex()))
    }

    pub fn layer_by_source(&self, source_key: &Digest) -> Option<LayerRecord> {
        self.get_json(&self.path("sources", source_key.hex()))
    }

    pub fn put_image(&self, key: &Digest, record: &ImageRecord) {
        self.put_json(self.path("images", key.hex()), record);
    }

    pub fn image(&self, key: &Digest) -> Option<ImageRecord> {
        self.get_json(&self.path("images", key.hex()))
    }

    /// Records the artifacts that refer to the manifest `subject`.
    pub fn put_referrers(&self, subject: &Digest, referrers: &[Referrer]) {
        self.put_json(self.path("referrers", subject.hex()), &referrers);
    }

    /// The artifacts that refer to the manifest `subject`, if any were recorded.
    pub fn referrers(&self, subject: &Digest) -> Option<Vec<Referrer>> {
        self.get_json(&self.path("referrers", subject.hex()))
    }

    /// Every image built so far, with its key.
    pub fn images(&self) -> Vec<(Digest, ImageRecord)> {
        let Ok(entries) = fs::read_dir(self.root.join("images")) else { return Vec::new() };
        entries
            .filter_map(|e| {
                let key = Digest::from_hex(e.ok()?.file_name().to_str()?).ok()?;
                Some((key.clone(), self.image(&key)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let state = std::env::temp_dir().join(format!("flakeforge-meta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let store = MetadataStore::open(&state).unwrap();
        let digest = store.put_manifest(b"{\"schemaVersion\":2}");
        assert_eq!(digest, Digest::of(b"{\"schemaVersion\":2}"));
        let record = ImageRecord {
            platform: Platform::of_nix_system("x86_64-linux").unwrap(),
            manifests: BTreeMap::from([(ManifestFormat::Oci, digest.clone())]),
            layers: vec![],
            gcroots: vec![],
            annotations: BTreeMap::new(),
        };
        let key = Digest::of(b"key");
        store.put_image(&key, &record);
        drop(store);
        let store = MetadataStore::open(&state).unwrap();
        assert_eq!(store.manifest(&digest).unwrap(), b"{\"schemaVersion\":2}");
        assert!(store.config(&digest).is_none());
        assert_eq!(store.image(&key), Some(record.clone()));
        assert_eq!(store.images(), vec![(key, record)]);
        assert_eq!(store.referrers(&digest), None);
        let referrer = Referrer {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(b"sbom manifest"),
            size: 13,
            artifact_type: "application/vnd.cyclonedx+json".into(),
            annotations: BTreeMap::new(),
        };
        store.put_referrers(&digest, std::slice::from_ref(&referrer));
        drop(store);
        let store = MetadataStore::open(&state).unwrap();
        assert_eq!(store.referrers(&digest), Some(vec![referrer]));
        fs::remove_dir_all(&state).unwrap();
    }
}
