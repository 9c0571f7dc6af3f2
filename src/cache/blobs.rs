//! The disk cache of layer blobs, `<state>/blobs/sha256/<hex>`: written to a
//! temporary file and renamed only once the digest checks out, bounded by
//! `--cache-size`, least recently used evicted first. A full disk turns
//! caching off for that blob, never the serving.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use lru::LruCache;

use crate::digest::Digest;
use crate::metrics;

pub struct BlobStore {
    dir: PathBuf,
    tmp_dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

struct Index {
    /// Blob sizes, least recently used first to go.
    lru: LruCache<Digest, u64>,
    total: u64,
}

impl Index {
    /// Shows the cache's size in the metrics; called after every change.
    fn publish(&self) {
        let cache = &metrics::global().cache;
        cache.size_bytes.set(i64::try_from(self.total).unwrap_or(i64::MAX));
        cache.blobs.set(self.lru.len() as i64);
    }
}

impl BlobStore {
    /// Opens the cache, dropping leftovers of writes a crash interrupted.
    pub fn open(state_dir: &Path, max_bytes: u64) -> io::Result<BlobStore> {
        let dir = state_dir.join("blobs").join("sha256");
        let tmp_dir = state_dir.join("tmp").join("blobs");
        fs::create_dir_all(&dir)?;
        let _ = fs::remove_dir_all(&tmp_dir);
        fs::create_dir_all(&tmp_dir)?;

        let mut found: Vec<(SystemTime, Digest, u64)> = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let meta = entry.metadata()?;
            match name.to_str().and_then(|n| Digest::from_hex(n).ok()) {
                Some(digest) if meta.is_file() => {
                    found.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), digest, meta.len()))
                }
                _ => log::warn!("ignoring unexpected file in the blob cache: {:?}", name),
            }
        }
        found.sort();
        let mut index = Index { lru: LruCache::unbounded(), total: 0 };
        for (_, digest, size) in found {
            index.total += size;
            index.lru.put(digest, size);
        }
        metrics::global().cache.limit_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        index.publish();
        let store = BlobStore { dir, tmp_dir, max_bytes, index: Mutex::new(index) };
        store.evict();
        Ok(store)
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Opens a cached blob and marks it used. `None` when it is not cached.
    pub fn open_blob(&self, digest: &Digest) -> Option<(File, u64)> {
        let file = File::open(self.path(digest)).ok()?;
        let size = file.metadata().ok()?.len();
        let known = self.index.lock().unwrap().lru.get(digest).is_some();
        if known {
            // The order survives a restart through the files' mtimes.
            let _ = file.set_modified(SystemTime::now());
        }
        Some((file, size))
    }

    /// Removes a blob that turned out to be damaged.
    pub fn forget(&self, digest: &Digest) {
        let mut index = self.index.lock().unwrap();
        if let Some(size) = index.lru.pop(digest) {
            index.total -= size;
            index.publish();
        }
        let _ = fs::remove_file(self.path(digest));
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.index.lock().unwrap().lru.contains(digest)
    }

    /// A temporary file to generate a blob into.
    pub fn writer(&self) -> CacheWriter {
        let path = self.tmp_dir.join(super::temp_name());
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
        let kept = match finished {
            Ok(()) => fs::rename(&writer.path, self.path(digest)),
            Err(err) => Err(err),
        };
        if let Err(err) = kept {
            log::warn!("blob cache: could not keep {digest} ({err}); it will be generated again when asked for");
            return Vec::new();
        }
        {
            let mut index = self.index.lock().unwrap();
            if let Some(old) = index.lru.put(digest.clone(), size) {
                index.total -= old;
            }
            index.total += size;
            index.publish();
        }
        self.evict()
    }

    fn evict(&self) -> Vec<Digest> {
        let mut evicted = Vec::new();
        let mut index = self.index.lock().unwrap();
        // The newest blob stays even when it alone is over the limit: it is being served.
        while index.total > self.max_bytes && index.lru.len() > 1 {
            let Some((digest, size)) = index.lru.pop_lru() else { break };
            index.total -= size;
            // An open file stays readable after the unlink, so running downloads finish.
            if let Err(err) = fs::remove_file(self.path(&digest)) {
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

    fn temp_state(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flakeforge-blobs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
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
        let state = temp_state("lru");
        let store = BlobStore::open(&state, 250).unwrap();
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
        let store = BlobStore::open(&state, 250).unwrap();
        assert_eq!(store.open_blob(&a).unwrap().1, 100);
        assert_eq!(store.total_bytes(), 200);
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn abandoned_writer_leaves_nothing() {
        let state = temp_state("abandon");
        let store = BlobStore::open(&state, 1000).unwrap();
        let mut w = store.writer();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(state.join("tmp/blobs")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(state.join("blobs/sha256")).unwrap().count(), 0);
        fs::remove_dir_all(&state).unwrap();
    }
}
