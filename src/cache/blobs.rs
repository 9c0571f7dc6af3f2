//! The disk cache of layer blobs, `<state>/blobs/sha256/<hex>`: written to a
//! temporary file and renamed only once the digest checks out, bounded by
//! `--cache-size`, least recently used evicted first. A full disk turns
//! caching off for that blob, never the serving.
//!
//! A blob is handed out only once its bytes are known to match its digest:
//! hashed when first opened after a start (one hash at a time per blob),
//! then trusted while its file stays as it was then (device, inode, size,
//! modification and change times). One that does not match is logged and
//! removed, so that it is made again from its recipe.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use lru::LruCache;

use crate::digest::Digest;
use crate::metrics;

pub struct BlobStore {
    dir: PathBuf,
    tmp_dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Signalled when a blob's hashing ends.
    verified: Condvar,
}

struct Index {
    /// Blob sizes, least recently used first to go.
    lru: LruCache<Digest, u64>,
    total: u64,
    /// Blobs whose bytes matched their digest, with their file as it was then.
    verified: HashMap<Digest, Stamp>,
    /// Blobs being hashed now: whoever else opens one waits for the result.
    verifying: HashSet<Digest>,
}

/// What changes when a file is written to or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
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
        super::create_dir(&dir)?;
        let _ = fs::remove_dir_all(&tmp_dir);
        super::create_dir(&tmp_dir)?;

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
        let mut index =
            Index { lru: LruCache::unbounded(), total: 0, verified: HashMap::new(), verifying: HashSet::new() };
        for (_, digest, size) in found {
            index.total += size;
            index.lru.put(digest, size);
        }
        metrics::global().cache.limit_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        index.publish();
        let store = BlobStore { dir, tmp_dir, max_bytes, index: Mutex::new(index), verified: Condvar::new() };
        store.evict();
        Ok(store)
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Opens a cached blob whose bytes match `digest` and marks it used.
    /// `None` when it is not cached, or was damaged (then it is removed).
    pub fn open_blob(&self, digest: &Digest) -> Option<(File, u64)> {
        let path = self.path(digest);
        let file = File::open(&path).ok()?;
        let mut index = self.index.lock().unwrap();
        loop {
            while index.verifying.contains(digest) {
                index = self.verified.wait(index).unwrap();
            }
            let stamp = Stamp::of(&file.metadata().ok()?);
            if index.verified.get(digest) == Some(&stamp) {
                self.mark_used(&mut index, digest, &file);
                return Some((file, stamp.size));
            }
            index.verifying.insert(digest.clone());
            drop(index);
            let hashed = Digest::of_reader(&file);
            let unchanged = file.metadata().is_ok_and(|meta| Stamp::of(&meta) == stamp);
            let _ = (&file).seek(SeekFrom::Start(0));
            index = self.index.lock().unwrap();
            index.verifying.remove(digest);
            self.verified.notify_all();
            match hashed {
                // Written to while it was hashed: look again.
                Ok(_) if !unchanged => continue,
                Ok((found, _)) if found == *digest => {
                    index.verified.insert(digest.clone(), stamp);
                    self.mark_used(&mut index, digest, &file);
                    return Some((file, stamp.size));
                }
                Ok((found, size)) => {
                    log::error!(
                        "blob cache: {} holds {size} bytes hashing to {found}, not {digest}: removed, it will be made again",
                        path.display()
                    );
                    Self::drop_entry(&mut index, digest);
                    super::remove_if_same(&path, &file);
                    return None;
                }
                Err(err) => {
                    log::warn!("blob cache: cannot read {} ({err}); it will be made again", path.display());
                    return None;
                }
            }
        }
    }

    /// Moves a verified blob to the front of the LRU order. The order
    /// survives a restart through the files' mtimes, so the file is touched
    /// and its stamp taken again.
    fn mark_used(&self, index: &mut MutexGuard<'_, Index>, digest: &Digest, file: &File) {
        if index.lru.get(digest).is_some() {
            let _ = file.set_modified(SystemTime::now());
            if let Ok(meta) = file.metadata() {
                index.verified.insert(digest.clone(), Stamp::of(&meta));
            }
        }
    }

    fn drop_entry(index: &mut Index, digest: &Digest) {
        if let Some(size) = index.lru.pop(digest) {
            index.total -= size;
            index.publish();
        }
        index.verified.remove(digest);
    }

    /// Removes a blob that turned out to be damaged.
    pub fn forget(&self, digest: &Digest) {
        Self::drop_entry(&mut self.index.lock().unwrap(), digest);
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
        let path = self.path(digest);
        // Hashed as it was written: trusted as it is now.
        let kept = finished.and_then(|()| fs::rename(&writer.path, &path)).and_then(|()| fs::metadata(&path));
        let meta = match kept {
            Ok(meta) => meta,
            Err(err) => {
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
            index.verified.insert(digest.clone(), Stamp::of(&meta));
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
            index.verified.remove(&digest);
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
    fn a_damaged_blob_is_never_handed_out() {
        let state = temp_state("damaged");
        let store = BlobStore::open(&state, 1 << 20).unwrap();
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
        let (mut handed, _) = store.open_blob(&digest).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut handed, &mut bytes).unwrap();
        assert_eq!(bytes, [8; 1000], "read from the start");
        drop(store);
        let file = state.join("blobs/sha256").join(digest.hex());
        let stamp = fs::metadata(&file).unwrap().modified().unwrap();
        let mut flipped = fs::read(&file).unwrap();
        flipped[0] ^= 0x80;
        fs::write(&file, &flipped).unwrap();
        File::options().write(true).open(&file).unwrap().set_modified(stamp).unwrap();
        let store = BlobStore::open(&state, 1 << 20).unwrap();
        assert!(store.open_blob(&digest).is_none());
        let (digest, _) = put(&store, &[9; 1000]);
        assert!(store.open_blob(&digest).is_some() && store.open_blob(&digest).is_some());
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
