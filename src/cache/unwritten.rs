//! Records the store could not take (S3 down or refusing writes, a full
//! disk), kept in memory so that this process serves them on, and written
//! to the store once it takes writes again: oldest first, each whole (a
//! storage write is atomic), leaving memory only once written. A
//! background thread, started by the first write that fails and ended when
//! nothing is left, tries after [`FIRST_RETRY`], then less often while the
//! store keeps failing (up to every [`LAST_RETRY`]); a record written
//! successfully meanwhile (the store is back) has it try at once.
//!
//! In a state directory (one process), a pending record is the latest
//! value of its name this process made (a later one written removes it),
//! and is written over what is there. In a bucket shared by replicas, it
//! is written only where the store holds none under its name
//! ([`Storage::create`]: if absent, in one step). Most records are
//! named by a digest of what they are or of what makes them, so a copy
//! found there is as good as the pending one. A resolution (what a tag
//! stands for) is not: the tag may have moved since, on this replica or on
//! another. One found there is either newer, or an older image the tag
//! stood for, still whole; which, only clocks could tell. Left as it is, a
//! stale pending value never moves a tag back: this replica keeps serving
//! its own from memory, and a replica reading the older one looks the
//! tag's revision up again (`--tag-ttl`) and finds that revision's image
//! under its revision key (a name no one writes two different images to).
//!
//! Memory is bounded ([`CAP_BYTES`]): past it, a record that cannot be
//! written is logged and dropped; it is made again when asked for (a
//! manifest from its image record, an image by building it again).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::storage::{Kind, Storage, StorageError};

/// Bytes of records kept in memory at most (a manifest is a few KiB, an
/// image record some tens: thousands of images' worth).
pub const CAP_BYTES: usize = 64 << 20;
/// How long after a failed write the first try is.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between tries while the store keeps failing.
pub const LAST_RETRY: Duration = Duration::from_secs(60);

type Key = (Kind, String);

/// Writes records to the store, keeping in memory (and writing later) those
/// it could not take. Cloned, it is the same backlog.
#[derive(Clone)]
pub struct Unwritten {
    shared: Arc<Shared>,
}

/// When to try again, and how much to keep.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The wait before the first try, and after a try that wrote something.
    pub first: Duration,
    /// The longest wait, reached by doubling while tries fail.
    pub last: Duration,
    /// Bytes of records kept in memory at most.
    pub cap_bytes: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { first: FIRST_RETRY, last: LAST_RETRY, cap_bytes: CAP_BYTES }
    }
}

struct Shared {
    storage: Arc<dyn Storage>,
    schedule: Schedule,
    /// Orders writes of the same name: only the latest one's bytes are kept.
    next_seq: AtomicU64,
    backlog: Mutex<Backlog>,
    /// Wakes the retrying thread: a write succeeded, the store is back.
    nudge: Condvar,
    /// Tells writers waiting for `in_flight` that it landed.
    landed: Condvar,
}

#[derive(Default)]
struct Backlog {
    /// By name: the bytes and the sequence number of the write that failed.
    records: HashMap<Key, (u64, Arc<Vec<u8>>)>,
    /// The same records, oldest first.
    order: BTreeMap<u64, Key>,
    bytes: usize,
    /// Whether the retrying thread runs.
    retrying: bool,
    /// The record the retrying thread writes now.
    in_flight: Option<Key>,
    nudged: bool,
    /// Since the backlog was last empty: written, and found in the store already.
    written: usize,
    found: usize,
}

impl Backlog {
    fn remove(&mut self, key: &Key) {
        if let Some((seq, bytes)) = self.records.remove(key) {
            self.order.remove(&seq);
            self.bytes -= bytes.len();
        }
    }

    /// The oldest record, noted as being written.
    fn take_oldest(&mut self) -> Option<(u64, Key, Arc<Vec<u8>>)> {
        let (seq, key) = self.order.first_key_value()?;
        let oldest = (*seq, key.clone(), self.records[key].1.clone());
        self.in_flight = Some(key.clone());
        Some(oldest)
    }

    fn set_gauge(&self) {
        crate::metrics::global().storage.unwritten.set(self.records.len() as i64);
    }
}

impl Unwritten {
    pub fn new(storage: Arc<dyn Storage>) -> Unwritten {
        Unwritten::with_schedule(storage, Schedule::default())
    }

    pub fn with_schedule(storage: Arc<dyn Storage>, schedule: Schedule) -> Unwritten {
        let shared = Shared {
            storage,
            schedule,
            next_seq: AtomicU64::new(0),
            backlog: Mutex::new(Backlog::default()),
            nudge: Condvar::new(),
            landed: Condvar::new(),
        };
        Unwritten { shared: Arc::new(shared) }
    }

    /// Writes `bytes` as `kind/name`; when the store does not take it, keeps
    /// it in memory (below the cap) to write later, and logs that.
    pub fn put(&self, kind: Kind, name: &str, bytes: &[u8]) {
        let shared = &self.shared;
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let key = (kind, name.to_string());
        let written = shared.storage.put(kind, name, bytes);
        let mut backlog = shared.lock();
        let newer_pending = backlog.records.get(&key).is_some_and(|(pending, _)| *pending > seq);
        match written {
            // In a state directory the retrying thread may be writing an
            // older value of this name over this one now: this one goes again after it.
            Ok(()) if !newer_pending && backlog.in_flight.as_ref() == Some(&key) && !shared.storage.is_remote() => {
                while backlog.in_flight.as_ref() == Some(&key) {
                    backlog = shared.landed.wait(backlog).unwrap();
                }
                drop(backlog);
                self.put(kind, name, bytes);
            }
            Ok(()) => {
                // An older value failed before: this one replaces it.
                if !newer_pending {
                    backlog.remove(&key);
                    backlog.set_gauge();
                }
                if !backlog.records.is_empty() {
                    backlog.nudged = true;
                    shared.nudge.notify_all();
                }
            }
            Err(_) if newer_pending => {}
            Err(err) => {
                backlog.remove(&key);
                if backlog.bytes + bytes.len() > shared.schedule.cap_bytes {
                    log::error!(
                        "could not write {}/{name} ({err}), nor keep it in memory: {} records ({} bytes) wait \
                         already; it is made again when asked for",
                        kind.folder(),
                        backlog.records.len(),
                        backlog.bytes
                    );
                } else {
                    log::warn!(
                        "could not write {}/{name} ({err}); kept in memory until the store takes it",
                        kind.folder()
                    );
                    backlog.bytes += bytes.len();
                    backlog.order.insert(seq, key.clone());
                    backlog.records.insert(key, (seq, Arc::new(bytes.to_vec())));
                    if !backlog.retrying {
                        backlog.retrying = self.start_retrying();
                    }
                }
                backlog.set_gauge();
            }
        }
    }

    /// What waits to be written as `kind/name`, if anything.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Arc<Vec<u8>>> {
        self.shared.lock().records.get(&(kind, name.to_string())).map(|(_, bytes)| bytes.clone())
    }

    /// What `verify` gives of the record `kind/name`: the value waiting to
    /// be written if there is one (this process's latest), else the store's
    /// ([`super::read_checked`]: what fails `verify` there is removed).
    pub fn read_checked<T>(&self, kind: Kind, name: &str, verify: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
        match self.get(kind, name) {
            Some(pending) => verify(&pending),
            None => super::read_checked(self.shared.storage.as_ref(), kind, name, verify),
        }
    }

    /// The sealed record `kind/name`, parsed, as [`super::read_sealed`] reads it, the value waiting to be written first.
    pub fn read_sealed<T: serde::de::DeserializeOwned>(&self, kind: Kind, name: &str) -> Option<T> {
        self.read_checked(kind, name, super::parse_sealed(kind, name))?
    }

    /// How many records wait to be written.
    pub fn len(&self) -> usize {
        self.shared.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn start_retrying(&self) -> bool {
        let shared = Arc::downgrade(&self.shared);
        let spawned = std::thread::Builder::new().name("unwritten records".into()).spawn(move || retry(shared));
        spawned.inspect_err(|err| log::error!("cannot start writing the records kept in memory later: {err}")).is_ok()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap()
    }

    /// Writes a pending record: whether it was written (not found there).
    fn write(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        if self.storage.is_remote() {
            return Ok(self.storage.create(kind, name, bytes)?.is_some());
        }
        // One process per state directory: what is there, it wrote before.
        self.storage.put(kind, name, bytes).map(|()| true)
    }

    /// Writes the backlog, oldest first, up to the first failure: whether
    /// anything was written, and the failure if any.
    fn write_backlog(&self) -> (bool, Option<StorageError>) {
        let mut progress = false;
        loop {
            let Some((seq, (kind, name), bytes)) = self.lock().take_oldest() else { return (progress, None) };
            let written = self.write(kind, &name, &bytes);
            let mut backlog = self.lock();
            backlog.in_flight = None;
            self.landed.notify_all();
            let created = match written {
                Ok(created) => created,
                Err(err) => return (progress, Some(err)),
            };
            progress = true;
            match created {
                true => backlog.written += 1,
                false => backlog.found += 1,
            }
            // Unless a newer value failed meanwhile: that one waits its turn.
            let key = (kind, name);
            if backlog.records.get(&key).is_some_and(|(pending, _)| *pending == seq) {
                backlog.remove(&key);
                backlog.set_gauge();
            }
        }
    }
}

/// The retrying thread: waits (or is nudged), writes the backlog; ends when
/// it is empty, or when the store it writes to is gone.
fn retry(shared: Weak<Shared>) {
    let mut wait = None;
    loop {
        let Some(shared) = shared.upgrade() else { return };
        let wait = wait.get_or_insert(shared.schedule.first);
        {
            let deadline = Instant::now() + *wait;
            let mut backlog = shared.lock();
            while !backlog.nudged {
                let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    break;
                };
                backlog = shared.nudge.wait_timeout(backlog, left).unwrap().0;
            }
            backlog.nudged = false;
        }
        let (progress, failed) = shared.write_backlog();
        let mut backlog = shared.lock();
        if backlog.records.is_empty() {
            backlog.retrying = false;
            let (written, found) = (std::mem::take(&mut backlog.written), std::mem::take(&mut backlog.found));
            let found = match found {
                0 => String::new(),
                found => format!(" ({found} more were in the store already and left as they were)"),
            };
            log::info!("wrote {written} records kept in memory during a storage outage{found}");
            return;
        }
        if let Some(err) = failed {
            let next = if progress { shared.schedule.first } else { (*wait * 2).min(shared.schedule.last) };
            // Said until the tries settle at the longest wait (a read-only
            // state directory stays so): then quiet.
            if next != *wait || progress {
                log::warn!("{} records still wait to be written ({err}); next try in {next:?}", backlog.records.len());
            }
            *wait = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::digest::Digest;
    use crate::storage::{FsStorage, Version};
    use crate::test_dir::TestDir;

    /// A fresh state directory (removed with the scratch directory), and its store.
    fn fresh() -> (TestDir, PathBuf, Arc<dyn Storage>) {
        let scratch = TestDir::new();
        let state = scratch.path().join("state");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(&state).unwrap());
        (scratch, state, storage)
    }

    /// Writes fail while the directory for temporary files is gone.
    fn fail_writes(state: &Path, fail: bool) {
        match fail {
            true => fs::remove_dir_all(state.join("tmp")).unwrap(),
            false => fs::create_dir_all(state.join("tmp").join("metadata")).unwrap(),
        }
    }

    fn stored(storage: &dyn Storage, kind: Kind, name: &str) -> Option<Vec<u8>> {
        storage.get(kind, name).unwrap().map(|stored| stored.bytes)
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Retries only when nudged (in this test's time).
    const NUDGED_ONLY: Schedule =
        Schedule { first: Duration::from_secs(3600), last: Duration::from_secs(3600), cap_bytes: CAP_BYTES };

    #[test]
    fn kept_until_a_write_succeeds_then_written_oldest_first() {
        let (_scratch, state, storage) = fresh();
        let unwritten = Unwritten::with_schedule(storage.clone(), NUDGED_ONLY);
        fail_writes(&state, true);
        unwritten.put(Kind::Manifests, "a", b"first");
        unwritten.put(Kind::Configs, "b", b"second");
        unwritten.put(Kind::Manifests, "a", b"first, again");
        assert_eq!(unwritten.len(), 2);
        assert_eq!(unwritten.get(Kind::Manifests, "a").as_deref().map(Vec::as_slice), Some(&b"first, again"[..]));
        assert_eq!(stored(storage.as_ref(), Kind::Manifests, "a"), None);
        fail_writes(&state, false);
        // No schedule in this test's time: the write that succeeds sets it off.
        unwritten.put(Kind::Images, "c", b"third");
        wait_until("the backlog written", || unwritten.is_empty());
        assert_eq!(stored(storage.as_ref(), Kind::Manifests, "a").unwrap(), b"first, again");
        assert_eq!(stored(storage.as_ref(), Kind::Configs, "b").unwrap(), b"second");
        assert_eq!(unwritten.get(Kind::Configs, "b"), None);
    }

    #[test]
    fn retried_on_a_schedule_with_nothing_else_written() {
        let (_scratch, state, storage) = fresh();
        let schedule =
            Schedule { first: Duration::from_millis(50), last: Duration::from_millis(200), cap_bytes: CAP_BYTES };
        let unwritten = Unwritten::with_schedule(storage.clone(), schedule);
        fail_writes(&state, true);
        unwritten.put(Kind::Layers, "l", b"layer record");
        // Several tries fail meanwhile; the record stays.
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(unwritten.len(), 1);
        fail_writes(&state, false);
        wait_until("the backlog written", || unwritten.is_empty());
        assert_eq!(stored(storage.as_ref(), Kind::Layers, "l").unwrap(), b"layer record");
    }

    /// A state directory, taken for a bucket that replicas share if
    /// `remote`; a put of `held` bytes waits for `release` first.
    struct TestStore {
        inner: Arc<dyn Storage>,
        remote: bool,
        held: Vec<u8>,
        release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl TestStore {
        fn new(inner: Arc<dyn Storage>, remote: bool) -> TestStore {
            TestStore { inner, remote, held: Vec::new(), release: Mutex::new(None) }
        }
    }

    impl Storage for TestStore {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn get(&self, kind: Kind, name: &str) -> Result<Option<crate::storage::Stored>, StorageError> {
            self.inner.get(kind, name)
        }
        fn put(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
            if bytes == self.held {
                if let Some(release) = self.release.lock().unwrap().take() {
                    release.recv().unwrap();
                }
            }
            self.inner.put(kind, name, bytes)
        }
        fn create(&self, kind: Kind, name: &str, bytes: &[u8]) -> Result<Option<Version>, StorageError> {
            self.inner.create(kind, name, bytes)
        }
        fn remove(&self, kind: Kind, name: &str, version: &Version) -> Result<(), StorageError> {
            self.inner.remove(kind, name, version)
        }
        fn list(&self, kind: Kind) -> Result<Vec<String>, StorageError> {
            self.inner.list(kind)
        }
        fn list_blobs(&self) -> Result<Vec<crate::storage::BlobEntry>, StorageError> {
            self.inner.list_blobs()
        }
        fn open_blob(&self, digest: &Digest) -> Result<Option<Box<dyn crate::storage::BlobHandle>>, StorageError> {
            self.inner.open_blob(digest)
        }
        fn put_blob(&self, digest: &Digest, staged: &Path) -> Result<Version, StorageError> {
            self.inner.put_blob(digest, staged)
        }
        fn remove_blob(&self, digest: &Digest, at: Option<&Version>) -> Result<(), StorageError> {
            self.inner.remove_blob(digest, at)
        }
        fn staging_dir(&self) -> &Path {
            self.inner.staging_dir()
        }
        fn is_remote(&self) -> bool {
            self.remote
        }
    }

    #[test]
    fn in_a_shared_bucket_a_pending_tag_never_overwrites_a_newer_one() {
        let (_scratch, state, storage) = fresh();
        let storage: Arc<dyn Storage> = Arc::new(TestStore::new(storage, true));
        let unwritten = Unwritten::with_schedule(storage.clone(), NUDGED_ONLY);
        fail_writes(&state, true);
        unwritten.put(Kind::Resolutions, "tag", b"revision 1");
        // Another replica (the store shared) moves the tag on meanwhile.
        fail_writes(&state, false);
        let other = Unwritten::with_schedule(storage.clone(), NUDGED_ONLY);
        other.put(Kind::Resolutions, "tag", b"revision 2");
        // A write of this replica succeeds: its backlog is tried, and left.
        unwritten.put(Kind::Manifests, "m", b"manifest");
        wait_until("the backlog tried", || unwritten.is_empty());
        assert_eq!(stored(storage.as_ref(), Kind::Resolutions, "tag").unwrap(), b"revision 2");
        assert_eq!(stored(storage.as_ref(), Kind::Manifests, "m").unwrap(), b"manifest");

        // This replica's own later write wins over its older pending one.
        fail_writes(&state, true);
        unwritten.put(Kind::Resolutions, "tag", b"revision 3");
        fail_writes(&state, false);
        unwritten.put(Kind::Resolutions, "tag", b"revision 4");
        assert_eq!(unwritten.get(Kind::Resolutions, "tag"), None, "the older value is still pending");
        assert!(unwritten.is_empty());
        assert_eq!(stored(storage.as_ref(), Kind::Resolutions, "tag").unwrap(), b"revision 4");
    }

    #[test]
    fn in_a_state_directory_the_pending_value_is_the_latest() {
        let (_scratch, state, storage) = fresh();
        let unwritten = Unwritten::with_schedule(storage.clone(), NUDGED_ONLY);
        unwritten.put(Kind::Resolutions, "tag", b"revision 1");
        fail_writes(&state, true);
        unwritten.put(Kind::Resolutions, "tag", b"revision 2");
        fail_writes(&state, false);
        unwritten.put(Kind::Manifests, "m", b"manifest");
        wait_until("the backlog written", || unwritten.is_empty());
        assert_eq!(stored(storage.as_ref(), Kind::Resolutions, "tag").unwrap(), b"revision 2");
    }

    #[test]
    fn in_a_state_directory_a_write_during_the_retry_of_an_older_value_wins() {
        let (_scratch, state, inner) = fresh();
        let store = Arc::new(TestStore { held: b"revision 1".to_vec(), ..TestStore::new(inner, false) });
        let storage: Arc<dyn Storage> = store.clone();
        let unwritten = Unwritten::with_schedule(storage.clone(), NUDGED_ONLY);
        fail_writes(&state, true);
        unwritten.put(Kind::Resolutions, "tag", b"revision 1");
        let (release, released) = std::sync::mpsc::channel();
        *store.release.lock().unwrap() = Some(released);
        fail_writes(&state, false);
        // The retry of revision 1 starts, and is held in the store's put.
        unwritten.put(Kind::Manifests, "m", b"manifest");
        wait_until("the retry to start", || unwritten.shared.lock().in_flight.is_some());
        std::thread::scope(|scope| {
            // Revision 2 lands first; revision 1 after it.
            let newer = scope.spawn(|| unwritten.put(Kind::Resolutions, "tag", b"revision 2"));
            std::thread::sleep(Duration::from_millis(200));
            release.send(()).unwrap();
            newer.join().unwrap();
        });
        wait_until("the retrying thread to end", || !unwritten.shared.lock().retrying);
        assert_eq!(stored(storage.as_ref(), Kind::Resolutions, "tag").unwrap(), b"revision 2");
    }

    #[test]
    fn past_the_cap_a_record_is_dropped_not_kept() {
        let (_scratch, state, storage) = fresh();
        let unwritten = Unwritten::with_schedule(storage.clone(), Schedule { cap_bytes: 10, ..NUDGED_ONLY });
        fail_writes(&state, true);
        unwritten.put(Kind::Manifests, "a", b"123456");
        unwritten.put(Kind::Manifests, "b", b"12345");
        assert_eq!((unwritten.len(), unwritten.get(Kind::Manifests, "b")), (1, None));
        unwritten.put(Kind::Manifests, "c", b"1234");
        assert_eq!(unwritten.len(), 2);
        // A newer value of a pending record that does not fit drops the older too.
        unwritten.put(Kind::Manifests, "a", b"1234567");
        assert_eq!(unwritten.len(), 1);
        assert_eq!(unwritten.get(Kind::Manifests, "a"), None);
        assert!(unwritten.get(Kind::Manifests, "c").is_some());
        fail_writes(&state, false);
        unwritten.put(Kind::Manifests, "d", b"");
        wait_until("the backlog written", || unwritten.is_empty());
        assert_eq!(stored(storage.as_ref(), Kind::Manifests, "a"), None);
        assert_eq!(stored(storage.as_ref(), Kind::Manifests, "c").unwrap(), b"1234");
    }
}
