//! Values read from files and read again when the files change, without a
//! restart: the served TLS certificate (`--tls-cert`/`--tls-key`, the local
//! CA's) and the access control files (`--htpasswd`, `--policy`).
//!
//! Whoever uses the value asks [`Reloading::current`]; at most once a
//! second, or at once after a SIGHUP, that looks whether the source changed
//! (for files: their [`file_stamp`]s) and loads it again. A load that fails
//! keeps the previous value, with one warning per change of the source; the
//! first load's error stops the start instead.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a use may look at the source for a change.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where a value comes from.
pub trait Source: Send + Sync {
    type Value: Send + Sync;
    type Error: fmt::Display;
    /// What is loaded, for log lines (`TLS: the certificate`).
    fn what(&self) -> String;
    /// Something that differs whenever the value may need loading again.
    fn stamp(&self) -> Vec<i64>;
    fn load(&self) -> Result<Self::Value, Self::Error>;
}

impl<S: Source + ?Sized> Source for Box<S> {
    type Value = S::Value;
    type Error = S::Error;

    fn what(&self) -> String {
        (**self).what()
    }

    fn stamp(&self) -> Vec<i64> {
        (**self).stamp()
    }

    fn load(&self) -> Result<S::Value, S::Error> {
        (**self).load()
    }
}

/// A value of `S`, loaded again when `S` changes.
pub struct Reloading<S: Source> {
    source: S,
    /// SIGHUPs so far ([`crate::signals`]: installing it makes SIGHUP mean
    /// "look at the files again" instead of ending the process).
    hangups: &'static AtomicU64,
    state: Mutex<State<S::Value>>,
}

struct State<V> {
    current: Arc<V>,
    /// The stamp of the last load attempt, failed or not, so that a bad
    /// file is reported once, not on every check.
    stamp: Vec<i64>,
    checked: Instant,
    hangups: u64,
}

impl<S: Source> Reloading<S> {
    /// Loads the source once; its error here is the caller's to report.
    pub fn new(source: S) -> Result<Reloading<S>, S::Error> {
        let hangup_counter = crate::signals::counter(libc::SIGHUP);
        let hangups = hangup_counter.load(Ordering::Relaxed);
        let stamp = source.stamp();
        let current = Arc::new(source.load()?);
        let state = State { current, stamp, checked: Instant::now(), hangups };
        Ok(Reloading { source, hangups: hangup_counter, state: Mutex::new(state) })
    }

    /// The value now: loaded again first if the source changed.
    pub fn current(&self) -> Arc<S::Value> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let hangups = self.hangups.load(Ordering::Relaxed);
        let hangup = hangups != state.hangups;
        if hangup || state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            state.hangups = hangups;
            // Stamp first: a change during the load is seen by the next check.
            let stamp = self.source.stamp();
            if hangup || stamp != state.stamp {
                state.stamp = stamp;
                match self.source.load() {
                    Ok(value) => {
                        log::info!("{} loaded again", self.source.what());
                        state.current = Arc::new(value);
                    }
                    Err(err) => log::warn!("{}: keeping the previous one: {err}", self.source.what()),
                }
            }
        }
        Arc::clone(&state.current)
    }

    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: Source> fmt::Debug for Reloading<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reloading({})", self.source.what())
    }
}

/// One file, read by `read` (whose errors name the file).
pub struct FileSource<T> {
    pub path: PathBuf,
    /// What the file holds, for log lines.
    pub what: &'static str,
    pub read: fn(&Path) -> Result<T, String>,
}

impl<T: Send + Sync> Source for FileSource<T> {
    type Value = T;
    type Error = String;

    fn what(&self) -> String {
        format!("{} ({})", self.what, self.path.display())
    }

    fn stamp(&self) -> Vec<i64> {
        file_stamp(&self.path).to_vec()
    }

    fn load(&self) -> Result<T, String> {
        (self.read)(&self.path)
    }
}

/// What changes when a file is replaced or rewritten: device, inode, size
/// and modification time to the nanosecond (all zero when it is missing).
pub fn file_stamp(path: &Path) -> [i64; 5] {
    fs::metadata(path).map_or([0; 5], |meta| {
        [meta.dev() as i64, meta.ino() as i64, meta.size() as i64, meta.mtime(), meta.mtime_nsec()]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn number_file(path: PathBuf) -> FileSource<u32> {
        let read = |path: &Path| {
            let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
            text.trim().parse().map_err(|_| format!("{text:?} is no number"))
        };
        FileSource { path, what: "a number", read }
    }

    /// Replaces the file as editors and secret managers do: a new file renamed over it.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_changed_file_is_loaded_again_and_a_bad_one_keeps_the_value() {
        let dir = TestDir::new();
        let path = dir.path().join("number");
        fs::write(&path, "1").unwrap();
        let number = Reloading::new(number_file(path.clone())).unwrap();
        assert_eq!(*number.current(), 1);
        replace(&path, "2");
        // Not looked at again within the interval...
        assert_eq!(*number.current(), 1);
        std::thread::sleep(CHECK_INTERVAL);
        // ...then at once.
        assert_eq!(*number.current(), 2);
        replace(&path, "two");
        std::thread::sleep(CHECK_INTERVAL);
        assert_eq!(*number.current(), 2);
        // A SIGHUP makes it look at once.
        replace(&path, "3");
        // SAFETY: raising a signal the first `current` made counted.
        unsafe { libc::raise(libc::SIGHUP) };
        assert_eq!(*number.current(), 3);
        assert!(Reloading::new(number_file(dir.path().join("missing"))).is_err());
    }

    #[test]
    fn stamps_change_when_a_file_is_replaced() {
        let dir = TestDir::new();
        let path = dir.path().join("chain.pem");
        assert_eq!(file_stamp(&path), [0; 5]);
        replace(&path, "one");
        let first = file_stamp(&path);
        replace(&path, "two");
        assert_ne!(file_stamp(&path), first);
    }
}
