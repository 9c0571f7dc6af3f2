//! The build history kept across restarts: each finished build (its
//! status, times, trigger, outcome and the end of its log that the job kept
//! in memory) as a sealed record of its own in `<state>/builds/<id>.json`,
//! the last [`History::open`]'s `limit` of them, older ones removed as new
//! ones come. It is per replica (always the local state directory, with
//! `--storage s3://…` too, like the GC roots).
//!
//! Each record is written whole (a crash leaves the old set or the new one,
//! at most a temporary file, removed at the next start). What cannot be
//! read back (damaged, or of another format version) is logged at start
//! and left out, never a reason not to start; where records cannot be
//! written (a read-only state directory) builds are listed until the
//! process ends, said once in the log.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::job::Trigger;
use crate::cache::{seal, unseal};
use crate::digest::Digest;
use crate::nix::log::Progress;

/// The format of the records this version writes and reads.
pub(super) const FORMAT: u32 = 1;

/// One finished build as stored. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub format: u32,
    pub id: String,
    pub image: String,
    pub tag: String,
    pub systems: Vec<String>,
    pub revision: Option<String>,
    pub trigger: Trigger,
    pub queued_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: u64,
    pub took_ms: u64,
    pub progress: Progress,
    pub ended: Ended,
    /// The end of the log, as the job kept it in memory (bounded there)...
    pub log: String,
    /// ...starting this many bytes into the whole log.
    pub log_dropped: u64,
}

/// How a build ended: the only two ways a recorded one can have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Ended {
    /// `digest`: the OCI manifest (or index) it made.
    Succeeded { digest: Option<Digest> },
    /// `error`: the client's message.
    Failed { error: String },
}

/// Only the format, read before the rest.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// The records in a state directory, and where new ones go.
pub struct History {
    dir: PathBuf,
    limit: usize,
    kept: Mutex<Kept>,
}

struct Kept {
    /// The ids of the records on disk, oldest first.
    ids: VecDeque<String>,
    /// The last write failed (and that was logged).
    failing: bool,
}

impl History {
    /// Opens `<state_dir>/builds/` and reads what it holds: the last
    /// `limit` records, oldest first. Never fails: what cannot be read is
    /// logged and left out.
    pub fn open(state_dir: &Path, limit: usize) -> (History, Vec<BuildRecord>) {
        let dir = state_dir.join("builds");
        let (records, problems) = read_all(&dir, limit);
        for problem in &problems {
            log::warn!("build history: {problem}");
        }
        if !records.is_empty() {
            log::info!("build history: {} finished builds read from {}", records.len(), dir.display());
        }
        let ids = records.iter().map(|record| record.id.clone()).collect();
        let history = History { dir, limit, kept: Mutex::new(Kept { ids, failing: false }) };
        (history, records)
    }

    /// Stores `record` and removes the oldest records past the limit. A
    /// failure is logged once (until a write succeeds again): the build
    /// stays listed until the process ends.
    pub fn add(&self, record: &BuildRecord) {
        let mut kept = self.kept.lock().unwrap();
        match self.write(record) {
            Ok(()) => {
                if kept.failing {
                    log::info!("build history: finished builds are kept in {} again", self.dir.display());
                    kept.failing = false;
                }
                kept.ids.push_back(record.id.clone());
            }
            Err(err) if !kept.failing => {
                log::warn!(
                    "build history: cannot keep finished builds in {} ({err}): they are listed until the process \
                     ends only",
                    self.dir.display()
                );
                kept.failing = true;
            }
            Err(_) => {}
        }
        while kept.ids.len() > self.limit {
            let oldest = kept.ids.pop_front().expect("longer than the limit");
            remove(&self.path(&oldest));
        }
    }

    fn write(&self, record: &BuildRecord) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let temp = self.dir.join(format!("{}.tmp", record.id));
        crate::atomic_file::replace(&temp, &self.path(&record.id), &seal(&json), 0o600)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

/// The records in `dir` (the newest `limit`, oldest first), and what was
/// wrong with the rest. Damaged records, temporary files left by a crash
/// and records past the limit are removed; those of another format are
/// left as they are.
fn read_all(dir: &Path, limit: usize) -> (Vec<BuildRecord>, Vec<String>) {
    let mut problems = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return (Vec::new(), problems),
        Err(err) => {
            problems.push(format!("cannot read {} ({err}); starting with no finished builds", dir.display()));
            return (Vec::new(), problems);
        }
    };
    let mut records = Vec::new();
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(err) => {
                problems.push(format!("cannot list {} ({err})", dir.display()));
                continue;
            }
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.ends_with(".tmp") {
            // Written when the process ended, never renamed into place.
            remove(&path);
            continue;
        }
        let Some(id) = name.strip_suffix(".json") else { continue };
        match read_one(&path, id) {
            Ok(record) => records.push(record),
            Err(Unreadable::OtherFormat(format)) => problems
                .push(format!("ignoring {} (written in format {format}; this version reads {FORMAT})", path.display())),
            Err(Unreadable::Damaged(why)) => {
                problems.push(format!("ignoring and removing {} ({why})", path.display()));
                remove(&path);
            }
        }
    }
    records.sort_by(|a, b| (a.finished_ms, &a.id).cmp(&(b.finished_ms, &b.id)));
    let past_limit = records.len().saturating_sub(limit);
    for old in records.drain(..past_limit) {
        remove(&dir.join(format!("{}.json", old.id)));
    }
    (records, problems)
}

enum Unreadable {
    OtherFormat(u32),
    Damaged(String),
}

fn read_one(path: &Path, id: &str) -> Result<BuildRecord, Unreadable> {
    let sealed = fs::read(path).map_err(|err| Unreadable::Damaged(err.to_string()))?;
    let json = unseal(&sealed).ok_or_else(|| Unreadable::Damaged("it does not match its checksum".into()))?;
    let damaged = |err: serde_json::Error| Unreadable::Damaged(err.to_string());
    let Format { format } = serde_json::from_slice(json).map_err(damaged)?;
    if format != FORMAT {
        return Err(Unreadable::OtherFormat(format));
    }
    let record: BuildRecord = serde_json::from_slice(json).map_err(damaged)?;
    if record.id != id {
        return Err(Unreadable::Damaged(format!("it holds build {}", record.id)));
    }
    Ok(record)
}

fn remove(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != io::ErrorKind::NotFound {
            log::warn!("build history: cannot remove {} ({err})", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::TestDir;

    fn record(n: u64) -> BuildRecord {
        BuildRecord {
            format: FORMAT,
            id: format!("{n:010x}"),
            image: "hello".into(),
            tag: "latest".into(),
            systems: vec!["x86_64-linux".into()],
            revision: Some("0d1c52891a76780100a10ae0487d4eadcd185b00".into()),
            trigger: Trigger::Client,
            queued_ms: 1_700_000_000_000 + n,
            started_ms: Some(1_700_000_000_500 + n),
            finished_ms: 1_700_000_001_000 + n,
            took_ms: 500,
            progress: Progress { built: 1, total: 1 },
            ended: if n % 2 == 0 {
                Ended::Succeeded { digest: Some(Digest::of(b"m")) }
            } else {
                Ended::Failed { error: "builder failed".into() }
            },
            log: format!("$ nix build\nbuild {n}\n{}", "x".repeat(1000)),
            log_dropped: n,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_last_builds_are_kept_and_older_ones_removed() {
        let scratch = TestDir::new();
        let state = scratch.path().join("state");
        let (history, read) = History::open(&state, 100);
        assert!(read.is_empty());
        for n in 0..130 {
            history.add(&record(n));
        }
        let dir = state.join("builds");
        let names = files(&dir);
        assert_eq!(names.len(), 100, "{names:?}");
        assert_eq!(names[0], format!("{:010x}.json", 30));
        let bytes: u64 = names.iter().map(|n| fs::metadata(dir.join(n)).unwrap().len()).sum();
        assert!(bytes < 100 * 1500, "{bytes} bytes");
        drop(history);
        // Read back in order, as written; a smaller limit removes the oldest.
        let (history, read) = History::open(&state, 100);
        assert_eq!(read, (30..130).map(record).collect::<Vec<_>>());
        drop(history);
        let (history, read) = History::open(&state, 10);
        assert_eq!(read.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), files_ids(120..130));
        assert_eq!(files(&dir).len(), 10);
        // And new ones push the oldest out of the reopened history too.
        history.add(&record(200));
        assert_eq!(files(&dir)[0], format!("{:010x}.json", 121));
    }

    fn files_ids(range: std::ops::Range<u64>) -> Vec<String> {
        range.map(|n| format!("{n:010x}")).collect()
    }

    #[test]
    fn what_cannot_be_read_is_logged_and_left_out() {
        let scratch = TestDir::new();
        let state = scratch.path().join("state");
        let (history, _) = History::open(&state, 100);
        for n in 0..4 {
            history.add(&record(n));
        }
        let dir = state.join("builds");
        let path = |n: u64| dir.join(format!("{n:010x}.json"));
        // A flipped byte, a file cut short, another format, a record under another's name, a crash's leftover.
        let mut flipped = fs::read(path(0)).unwrap();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(path(0), flipped).unwrap();
        let whole = fs::read(path(1)).unwrap();
        fs::write(path(1), &whole[..whole.len() / 2]).unwrap();
        let other = serde_json::to_vec(&serde_json::json!({"format": 2, "id": record(2).id})).unwrap();
        fs::write(path(2), seal(&other)).unwrap();
        fs::write(path(9), fs::read(path(3)).unwrap()).unwrap();
        fs::write(dir.join("0000000004.tmp"), b"half a rec").unwrap();
        let (records, problems) = read_all(&dir, 100);
        assert_eq!(records, vec![record(3)]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("format 2")), "{problems:?}");
        // The damaged and the leftover are gone; another version's record is left for it.
        assert_eq!(files(&dir), ["0000000002.json", "0000000003.json"]);
        // Not even a directory: no builds, no failure.
        fs::remove_dir_all(&dir).unwrap();
        fs::write(&dir, b"not a directory").unwrap();
        let (history, records) = History::open(&state, 100);
        assert!(records.is_empty());
        // Writing fails too: the build is only not kept.
        history.add(&record(5));
        assert_eq!(fs::read(&dir).unwrap(), b"not a directory");
    }
}
