//! The cache of layer blobs in the [`Storage`]: written to a local
//! temporary file and stored only once the digest checks out, bounded by
//! `--cache-size`, least recently used evicted first. A full disk turns
//! caching off for that blob, never the serving.
//!
//! A blob is handed out only once its bytes are known to match its digest:
//! hashed when first opened after a start (one hash at a time per blob),
//! then trusted while the store keeps the version it had then (fs: the
//! file's device, inode, size, modification and change times). One that
//! does not match is logged and removed, so that it is made again from its
//! recipe. This is the one place blobs are verified, for every backend.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;

use super::known_blobs::KnownBlobs;
use crate::digest::Digest;
use crate::metrics;
use crate::storage::{BlobHandle, Storage, Version};

pub struct BlobStore {
    storage: Arc<dyn Storage>,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Signalled when a blob's hashing ends.
    verified: Condvar,
    /// Blobs a remote store was found to hold lately, for redirects without a HEAD each.
    known: KnownBlobs,
}

struct Index {
    /// Blob sizes, least recently used first to go.
    lru: LruCache<Digest, u64>,
    total: u64,
    /// Blobs whose bytes matched their digest, with their version then.
    verified: HashMap<Digest, Version>,
    /// Blobs being hashed now: whoever else opens one waits for the result.
    verifying: HashSet<Digest>,
}

impl Index {
    /// Shows the cache's size in the metrics; called after every change.
    fn publish(&self) {
        let cache = &metrics::global().cache;
        cache.size_bytes.set(i64::try_from(self.total).unwrap_or(i64::MAX));
        cache.blobs.set(self.lru.len() as i64);
    }
}

/// A stored blob whose bytes match its digest.
pub struct VerifiedBlob {
    handle: Box<dyn BlobHandle>,
}

impl VerifiedBlob {
    pub fn size(&self) -> u64 {
        self.handle.size()
    }

    /// Bytes `start..end` (end exclusive).
    pub fn read_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        self.handle.read_range(start, end)
    }
}

impl BlobStore {
    /// Opens the cache on `storage`, indexing what it holds.
    pub fn open(storage: Arc<dyn Storage>, max_bytes: u64) -> io::Result<BlobStore> {
        let mut found = storage.list_blobs().map_err(io::Error::other)?;
        found.sort_by_key(|entry| entry.used);
        let mut index =
            Index { lru: LruCache::unbounded(), total: 0, verified: HashMap::new(), verifying: HashSet::new() };
        for entry in found {
            index.total += entry.size;
            index.lru.put(entry.digest, entry.size);
        }
        // A bucket is shared: one replica's view of it is no ground to
        // delete what others use (see README, "Replicas sharing a bucket").
        let remote = storage.is_remote();
        let max_bytes = if remote { u64::MAX } else { max_bytes };
        metrics::global().cache.limit_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        index.publish();
        let store = BlobStore {
            storage,
            max_bytes,
            index: Mutex::new(index),
            verified: Condvar::new(),
            known: KnownBlobs::new(remote),
        };
        store.evict();
        Ok(store)
    }

    /// Opens a stored blob whose bytes match `digest` and marks it used.
    /// `None` when it is not stored, or was damaged (then it is removed).
    pub fn open_blob(&self, digest: &Digest) -> Option<VerifiedBlob> {
        let handle = match self.storage.open_blob(digest) {
            Ok(Some(handle)) => handle,
            Ok(None) => {
                self.known.forget(digest);
                return None;
            }
            Err(err) => {
                log::warn!("blob cache: cannot open {digest} ({err}); it will be made again");
                return None;
            }
        };
        let mut index = self.index.lock().unwrap();
        loop {
            while index.verifying.contains(digest) {
                index = self.verified.wait(index).unwrap();
            }
            let version = handle.version().ok()?;
            if index.verified.get(digest) == Some(&version) {
                self.mark_used(&mut index, digest, handle.as_ref());
                return Some(VerifiedBlob { handle });
            }
            index.verifying.insert(digest.clone());
            drop(index);
            let hashed = handle.read_range(0, handle.size()).and_then(Digest::of_reader);
            let unchanged = handle.version().is_ok_and(|now| now == version);
            index = self.index.lock().unwrap();
            index.verifying.remove(digest);
            self.verified.notify_all();
            match hashed {
                // Written to while it was hashed: look again.
                Ok(_) if !unchanged => continue,
                Ok((found, _)) if found == *digest => {
                    index.verified.insert(digest.clone(), version);
                    self.mark_used(&mut index, digest, handle.as_ref());
                    return Some(VerifiedBlob { handle });
                }
                Ok((found, size)) => {
                    log::error!(
                        "blob cache: {digest} in {} holds {size} bytes hashing to {found}, not {digest}: removed, it will be made again",
                        self.storage.describe()
                    );
                    self.drop_entry(&mut index, digest);
                    if let Err(err) = self.storage.remove_blob(digest, Some(&version)) {
                        log::warn!("blob cache: cannot remove the damaged {digest}: {err}");
                    }
                    return None;
                }
                Err(err) => {
                    log::warn!("blob cache: cannot read {digest} ({err}); it will be made again");
                    return None;
                }
            }
        }
    }

    /// Moves a verified blob to the front of the LRU order. The order
    /// survives a restart where the store keeps it (fs: the files' mtimes),
    /// so the blob is touched and its version taken again.
    fn mark_used(&self, index: &mut Index, digest: &Digest, handle: &dyn BlobHandle) {
        if index.lru.get(digest).is_some() {
            handle.touch();
            if let Ok(version) = handle.version() {
                index.verified.insert(digest.clone(), version);
            }
        }
    }

    fn drop_entry(&self, index: &mut Index, digest: &Digest) {
        if let Some(size) = index.lru.pop(digest) {
            index.total -= size;
            index.publish();
        }
        index.verified.remove(digest);
        self.known.forget(digest);
    }

    /// Removes a blob that turned out to be damaged.
    pub fn forget(&self, digest: &Digest) {
        self.drop_entry(&mut self.index.lock().unwrap(), digest);
        let _ = self.storage.remove_blob(digest, None);
    }

    /// Whether the store is reached over the network.
    pub fn is_remote(&self) -> bool {
        self.storage.is_remote()
    }

    /// A URL that fetches the stored blob `digest` for `valid_for`, if the
    /// store has such URLs and holds it at `size` bytes: asked again once
    /// what it was found to hold is older than a minute or `valid_for` (a
    /// bucket lifecycle rule or another replica may have removed it since,
    /// see [`super::known_blobs`]). Its bytes are not hashed here: they
    /// were when stored, and every client checks the digest of what it fetches.
    pub fn presign(&self, digest: &Digest, size: u64, valid_for: std::time::Duration) -> Option<String> {
        let stored = match self.known.size(digest, valid_for) {
            Some(stored) => stored,
            None => {
                let Ok(Some(handle)) = self.storage.open_blob(digest) else {
                    self.known.forget(digest);
                    return None;
                };
                self.known.found(digest, handle.size());
                handle.size()
            }
        };
        if stored != size {
            return None;
        }
        self.storage.presign_blob(digest, valid_for)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.index.lock().unwrap().lru.contains(digest)
    }

    /// A temporary file to generate a blob into.
    pub fn writer(&self) -> CacheWriter {
        let path = self.storage.staging_dir().join(crate::storage::fs::temp_name());
        let file = match File::create(&path) {
            Ok(file) => Some(BufWriter::with_capacity(256 * 1024, file)),
            Err(err) => {
                log::warn!("blob cache: cannot create a temporary file ({err}); serving without caching");
                None
            }
        };
        CacheWriter { file, path }
    }

    /// Keeps what `writer` received as the blob `digest`, if it was written
    /// whole; then evicts down to the size limit. Returns the evicted digests.
    pub fn commit(&self, mut writer: CacheWriter, digest: &Digest, size: u64) -> Vec<Digest> {
        let Some(file) = writer.file.take() else { return Vec::new() };
        let finished = file.into_inner().map_err(|e| e.into_error()).map(drop);
        // Hashed as it was written: trusted as it is stored.
        let kept = finished.map_err(Into::into).and_then(|()| self.storage.put_blob(digest, &writer.path));
        let version = match kept {
            Ok(version) => version,
            Err(err) => {
                let _ = fs::remove_file(&writer.path);
                log::warn!("blob cache: could not keep {digest} ({err}); it will be generated again when asked for");
                return Vec::new();
            }
        };
        {
            let mut index = self.index.lock().unwrap();
            if let Some(old) = index.lru.put(digest.clone(), size) {
                index.total -= old;
            }
            index.total += size;
            index.verified.insert(digest.clone(), version);
            index.publish();
        }
        self.known.found(digest, size);
        self.evict()
    }

    fn evict(&self) -> Vec<Digest> {
        let mut evicted = Vec::new();
        let mut index = self.index.lock().unwrap();
        // The newest blob stays even when it alone is over the limit: it is being served.
        while index.total > self.max_bytes && index.lru.len() > 1 {
            let Some((digest, size)) = index.lru.pop_lru() else { break };
            index.total -= size;
            index.verified.remove(&digest);
            self.known.forget(&digest);
            // An open handle stays readable after the removal, so running downloads finish.
            if let Err(err) = self.storage.remove_blob(&digest, None) {
                log::warn!("blob cache: could not evict {digest}: {err}");
            }
            log::debug!("blob cache: evicted {digest} ({size} bytes)");
            metrics::global().cache.evictions.inc();
            metrics::global().cache.evicted_bytes.inc_by(size);
            evicted.push(digest);
        }
        index.publish();
        evicted
    }

    pub fn total_bytes(&self) -> u64 {
        self.index.lock().unwrap().total
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// How many blobs are cached, and the `n` largest with their sizes, largest first.
    pub fn largest(&self, n: usize) -> (usize, Vec<(Digest, u64)>) {
        let index = self.index.lock().unwrap();
        let mut blobs: Vec<(Digest, u64)> = index.lru.iter().map(|(digest, size)| (digest.clone(), *size)).collect();
        blobs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        blobs.truncate(n);
        (index.lru.len(), blobs)
    }
}

/// A temporary cache file. A write that fails (a full disk) drops the file
/// and turns the writer into a sink, so generation and serving go on.
/// Dropped without `commit`, it leaves nothing behind.
pub struct CacheWriter {
    file: Option<BufWriter<File>>,
    path: PathBuf,
}

impl CacheWriter {
    pub fn is_caching(&self) -> bool {
        self.file.is_some()
    }

    /// The temporary file, while it is being written (to read it as it grows).
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|_| self.path.as_path())
    }

    fn give_up(&mut self, err: &io::Error) {
        log::warn!("blob cache: write failed ({err}); serving without caching");
        if let Some(file) = self.file.take() {
            drop(file.into_parts());
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Write for CacheWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = &mut self.file {
            if let Err(err) = file.write_all(buf) {
                self.give_up(&err);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            if let Err(err) = file.flush() {
                self.give_up(&err);
            }
        }
        Ok(())
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file.into_parts());
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(state: &Path, max_bytes: u64) -> BlobStore {
        BlobStore::open(Arc::new(crate::storage::FsStorage::open(state).unwrap()), max_bytes).unwrap()
    }

    fn put(store: &BlobStore, bytes: &[u8]) -> (Digest, Vec<Digest>) {
        let mut w = store.writer();
        w.write_all(bytes).unwrap();
        let digest = Digest::of(bytes);
        let evicted = store.commit(w, &digest, bytes.len() as u64);
        (digest, evicted)
    }

    #[test]
    fn evicts_least_recently_used() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let store = open(&state, 250);
        let (a, _) = put(&store, &[1; 100]);
        let (b, _) = put(&store, &[2; 100]);
        assert!(store.open_blob(&a).is_some()); // a is now the most recently used
        let (c, evicted) = put(&store, &[3; 100]);
        assert_eq!(evicted, vec![b.clone()]);
        assert!(store.open_blob(&b).is_none());
        assert!(store.contains(&a) && store.contains(&c));
        assert_eq!(store.total_bytes(), 200);

        // What survives a restart is still served.
        drop(store);
        let store = open(&state, 250);
        assert_eq!(store.open_blob(&a).unwrap().size(), 100);
        assert_eq!(store.total_bytes(), 200);
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_damaged_blob_is_never_handed_out() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let store = open(&state, 1 << 20);
        let (digest, _) = put(&store, &[7; 1000]);
        let file = state.join("blobs/sha256").join(digest.hex());
        // Written to in place, same size: its stamp changes, so it is hashed again.
        let mut damaged = vec![7; 1000];
        damaged[500] ^= 1;
        fs::write(&file, &damaged).unwrap();
        assert!(store.open_blob(&digest).is_none());
        assert!(!file.exists() && !store.contains(&digest) && store.total_bytes() == 0);

        // After a restart every blob is hashed when first opened.
        let (digest, _) = put(&store, &[8; 1000]);
        let handed = store.open_blob(&digest).unwrap();
        let mut bytes = Vec::new();
        handed.read_range(0, handed.size()).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, [8; 1000], "read from the start");
        drop(store);
        let file = state.join("blobs/sha256").join(digest.hex());
        let stamp = fs::metadata(&file).unwrap().modified().unwrap();
        let mut flipped = fs::read(&file).unwrap();
        flipped[0] ^= 0x80;
        fs::write(&file, &flipped).unwrap();
        File::options().write(true).open(&file).unwrap().set_modified(stamp).unwrap();
        let store = open(&state, 1 << 20);
        assert!(store.open_blob(&digest).is_none());
        let (digest, _) = put(&store, &[9; 1000]);
        assert!(store.open_blob(&digest).is_some() && store.open_blob(&digest).is_some());
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn abandoned_writer_leaves_nothing() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let store = open(&state, 1000);
        let mut w = store.writer();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(state.join("tmp/blobs")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(state.join("blobs/sha256")).unwrap().count(), 0);
        fs::remove_dir_all(&state).unwrap();
    }
}
