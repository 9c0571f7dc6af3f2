//! Small documents kept in the store for good, so that every digest served
//! before a restart can be pulled after it: manifests and configs by digest,
//! layer records (what each layer blob is made of) by blob digest and by
//! recipe, built images by build key, and the artifacts that refer to each
//! manifest (its SBOM, its provenance) by the manifest's digest. Writes that
//! fail (a full disk, the store down) are kept in memory and written when
//! the store takes them ([`Unwritten`]).
//!
//! Every read is verified here, in the one place that reads: manifests and
//! configs against their digest, records against the checksum they were
//! sealed with. What does not match (a flipped bit, a file cut short or
//! emptied) is logged, removed and reported missing, so that the caller
//! makes it again from its recipe; it is never handed out.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::artifact::Referrer;
use crate::image::layer::LayerRecord;
use crate::image::manifest::Platform;
use crate::media_type::ManifestFormat;
use crate::storage::{Kind, Storage};

use super::Unwritten;

/// An image as built: its manifests in both forms, its layers, its GC roots,
/// and what its config, manifests and layer records are made from, so that
/// any of them lost or damaged is written again without Nix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub platform: Platform,
    pub manifests: BTreeMap<ManifestFormat, Digest>,
    pub layers: Vec<Digest>,
    pub gcroots: Vec<GcRoot>,
    /// The annotations of its OCI manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The image config as served.
    pub config: String,
    /// The records of `layers`, in order.
    pub layer_records: Vec<LayerRecord>,
}

impl ImageRecord {
    pub fn config_digest(&self) -> Digest {
        Digest::of(self.config.as_bytes())
    }
}

/// An out-link of `nix build` and the store path it held when the image was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRoot {
    pub link: PathBuf,
    pub target: PathBuf,
}

pub struct MetadataStore {
    storage: Arc<dyn Storage>,
    /// Writes that failed, kept in memory until the store takes them.
    unwritten: Unwritten,
    /// The key of an image record listing each manifest, config and layer
    /// digest: where a lost one is made again from. Read at open, kept up
    /// to date by `put_image`; in memory, so a digest nobody built costs no
    /// store reads.
    listed_in: Mutex<HashMap<Digest, Digest>>,
    /// With a remote store: manifests, configs and layer records read
    /// lately, verified (a record as its JSON, the seal taken off), so that
    /// HEADs and manifest GETs do not ask the store again. A local store is
    /// read each time (a damaged file is noticed at once).
    recent: Option<Mutex<Recent>>,
}

/// Objects by kind and name.
type Recent = LruCache<(Kind, String), Vec<u8>>;

/// Objects kept in `recent` (small documents: a few MiB in all).
const RECENT: usize = 4096;

impl MetadataStore {
    pub fn open(storage: Arc<dyn Storage>, unwritten: Unwritten) -> io::Result<MetadataStore> {
        let recent = storage.is_remote().then(|| Mutex::new(LruCache::new(RECENT.try_into().expect("not zero"))));
        let store = MetadataStore { storage, unwritten, listed_in: Mutex::new(HashMap::new()), recent };
        for (key, record) in store.images() {
            store.list(&key, &record);
        }
        Ok(store)
    }

    fn put(&self, kind: Kind, name: &str, bytes: &[u8]) {
        self.unwritten.put(kind, name, bytes);
    }

    /// What `verify` gives of the object stored as `name` (the bytes it
    /// vouches for: a document matching its digest, a record's JSON that
    /// passed its seal). What it refuses is logged and removed; kept in
    /// memory, it was never stored.
    fn get(&self, kind: Kind, name: &str, verify: impl Fn(&[u8]) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
        let key = (kind, name.to_string());
        // Named by their digest, these never change: what was verified stays
        // so, whether it was read from the store or still waits to be written.
        let recent = self.recent.as_ref().filter(|_| matches!(kind, Kind::Manifests | Kind::Configs | Kind::Layers));
        if let Some(verified) = recent.and_then(|recent| recent.lock().unwrap().get(&key).cloned()) {
            return Some(verified);
        }
        let verified = self.unwritten.read_checked(kind, name, verify)?;
        if let Some(recent) = recent {
            recent.lock().unwrap().put(key, verified.clone());
        }
        Some(verified)
    }

    fn put_json<T: Serialize>(&self, kind: Kind, name: &str, value: &T) {
        self.put(kind, name, &super::seal(&serde_json::to_vec(value).expect("records serialize")));
    }

    fn get_json<T: DeserializeOwned>(&self, kind: Kind, name: &str) -> Option<T> {
        let json = self.get(kind, name, |sealed| super::unseal(sealed).map(<[u8]>::to_vec))?;
        super::parse(&json, kind, name)
    }

    /// What is stored under `digest`, if it is what `digest` names.
    fn get_by_digest(&self, kind: Kind, digest: &Digest) -> Option<Vec<u8>> {
        self.get(kind, digest.hex(), |bytes| (Digest::of(bytes) == *digest).then(|| bytes.to_vec()))
    }

    pub fn put_manifest(&self, manifest: &[u8]) -> Digest {
        let digest = Digest::of(manifest);
        self.put(Kind::Manifests, digest.hex(), manifest);
        digest
    }

    pub fn manifest(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.get_by_digest(Kind::Manifests, digest)
    }

    pub fn put_config(&self, config: &[u8]) -> Digest {
        let digest = Digest::of(config);
        self.put(Kind::Configs, digest.hex(), config);
        digest
    }

    pub fn config(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.get_by_digest(Kind::Configs, digest)
    }

    /// Records a generated layer under its blob digest and under its recipe key.
    pub fn put_layer(&self, source_key: &Digest, record: &LayerRecord) {
        self.put_json(Kind::Layers, record.digest.hex(), record);
        self.put_json(Kind::Sources, source_key.hex(), record);
    }

    pub fn layer(&self, digest: &Digest) -> Option<LayerRecord> {
        self.get_json(Kind::Layers, digest.hex()).filter(|record: &LayerRecord| record.digest == *digest)
    }

    pub fn layer_by_source(&self, source_key: &Digest) -> Option<LayerRecord> {
        self.get_json(Kind::Sources, source_key.hex())
    }

    pub fn put_image(&self, key: &Digest, record: &ImageRecord) {
        self.put_json(Kind::Images, key.hex(), record);
        self.list(key, record);
    }

    fn list(&self, key: &Digest, record: &ImageRecord) {
        let mut listed_in = self.listed_in.lock().unwrap();
        for digest in record.manifests.values().chain(&record.layers).chain([&record.config_digest()]) {
            listed_in.insert(digest.clone(), key.clone());
        }
    }

    /// The stored image whose record lists `digest` (a manifest, its config
    /// or a layer), if any.
    pub fn image_listing(&self, digest: &Digest) -> Option<ImageRecord> {
        let key = self.listed_in.lock().unwrap().get(digest)?.clone();
        self.image(&key)
    }

    pub fn image(&self, key: &Digest) -> Option<ImageRecord> {
        self.get_json(Kind::Images, key.hex())
    }

    /// Records the artifacts that refer to the manifest `subject`.
    pub fn put_referrers(&self, subject: &Digest, referrers: &[Referrer]) {
        self.put_json(Kind::Referrers, subject.hex(), &referrers);
    }

    /// The artifacts that refer to the manifest `subject`, if any were recorded.
    pub fn referrers(&self, subject: &Digest) -> Option<Vec<Referrer>> {
        self.get_json(Kind::Referrers, subject.hex())
    }

    /// Every image built so far, with its key.
    pub fn images(&self) -> Vec<(Digest, ImageRecord)> {
        let names = match self.storage.list(Kind::Images) {
            Ok(names) => names,
            Err(err) => {
                log::warn!("metadata: cannot list the images ({err})");
                return Vec::new();
            }
        };
        names
            .iter()
            .filter_map(|name| {
                let key = Digest::from_hex(name).ok()?;
                Some((key.clone(), self.image(&key)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn open(state: &Path) -> MetadataStore {
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::FsStorage::open(state).unwrap());
        MetadataStore::open(storage.clone(), Unwritten::new(storage)).unwrap()
    }

    fn image_record(manifest: &Digest) -> ImageRecord {
        ImageRecord {
            platform: Platform::of_nix_system("x86_64-linux").unwrap(),
            manifests: BTreeMap::from([(ManifestFormat::Oci, manifest.clone())]),
            layers: vec![],
            gcroots: vec![],
            annotations: BTreeMap::new(),
            config: "{}".into(),
            layer_records: vec![],
        }
    }

    #[test]
    fn survives_reopen() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let store = open(&state);
        let digest = store.put_manifest(b"{\"schemaVersion\":2}");
        assert_eq!(digest, Digest::of(b"{\"schemaVersion\":2}"));
        let record = image_record(&digest);
        let key = Digest::of(b"key");
        store.put_image(&key, &record);
        drop(store);
        let store = open(&state);
        assert_eq!(store.manifest(&digest).unwrap(), b"{\"schemaVersion\":2}");
        assert!(store.config(&digest).is_none());
        assert_eq!(store.image(&key), Some(record.clone()));
        assert_eq!(store.images(), vec![(key.clone(), record.clone())]);
        assert_eq!(store.image_listing(&digest), Some(record.clone()));
        assert_eq!(store.image_listing(&Digest::of(b"{}")), Some(record));
        assert_eq!(store.image_listing(&key), None);
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
        let store = open(&state);
        assert_eq!(store.referrers(&digest), Some(vec![referrer]));
    }

    #[test]
    fn what_does_not_match_is_removed_never_handed_out() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let store = open(&state);
        let manifest = store.put_manifest(b"{\"schemaVersion\":2}");
        let config = store.put_config(b"{\"architecture\":\"amd64\"}");
        let record = image_record(&manifest);
        let key = Digest::of(b"key");
        store.put_image(&key, &record);
        let flip = |path: PathBuf, at: usize| {
            let mut bytes = fs::read(&path).unwrap();
            bytes[at] ^= 1;
            fs::write(&path, bytes).unwrap();
        };
        flip(state.join("manifests").join(manifest.hex()), 3);
        fs::write(state.join("configs").join(config.hex()), b"").unwrap();
        flip(state.join("images").join(key.hex()), 80);
        assert_eq!(store.manifest(&manifest), None);
        assert_eq!(store.config(&config), None);
        assert_eq!(store.image(&key), None);
        for gone in [state.join("manifests").join(manifest.hex()), state.join("images").join(key.hex())] {
            assert!(!gone.exists(), "{} was kept", gone.display());
        }
        // A flip in the seal itself counts too.
        store.put_image(&key, &record);
        flip(state.join("images").join(key.hex()), 10);
        assert_eq!(store.image(&key), None);
    }
}
