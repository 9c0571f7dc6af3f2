//! One build job: what it is about (name, tag, systems, why it runs), how
//! it stands (resolving, queued, running, succeeded, failed), its progress
//! (derivations built of those to build, from Nix's own report) and its log
//! (bounded, readable while it grows), fed by the Nix scheduler's
//! [`Observer`] of the job's work. A finished build is also what the
//! [`super::history`] keeps across restarts, and is made again from it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::history::{BuildRecord, Ended, FORMAT};
use super::{ResolvedTag, ServiceError};
use crate::digest::Digest;
use crate::media_type::ManifestFormat;
use crate::metrics::{self, OutcomeLabel};
use crate::nix::log::{Event, Progress};
use crate::nix::scheduler::{Lane, Observer, Work};

/// The end of a build's log kept in memory; the server log has all of it.
const LOG_BYTES: usize = 1 << 20;
/// Lines of the log in the build list.
const LAST_LINES: usize = 10;

/// What a job is about: the image name (its canonical form) and tag.
pub type JobKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Finding the revision and the packages; not listed.
    Resolving,
    /// Waiting for a build slot.
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// Why the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A client asked for the image.
    Client,
    /// A pull served the previous image of a moving tag whose time was up.
    Refresh,
    /// `--prebuild` or `--prebuild-all`.
    Prebuild,
    /// The watch saw the flake move.
    Watch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Client => "client",
            Trigger::Refresh => "refresh",
            Trigger::Prebuild => "prebuild",
            Trigger::Watch => "watch",
        }
    }
}

pub struct Job {
    pub id: String,
    pub key: JobKey,
    pub systems: Vec<String>,
    pub trigger: Trigger,
    pub work: Arc<Work>,
    /// When this process made the job (for a build read back from the history: when it was read).
    created: Instant,
    created_at: SystemTime,
    inner: Mutex<Inner>,
    changed: Condvar,
}

struct Inner {
    state: JobState,
    revision: Option<String>,
    started: Option<Instant>,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    /// From the start (or from queueing if it never started) to the end.
    took: Option<Duration>,
    /// The latest report of each `nix build` of the job.
    progress: HashMap<u64, Progress>,
    log: LogBuffer,
    outcome: Option<Result<ResolvedTag, ServiceError>>,
}

impl Inner {
    /// Moves to `state`, keeping the gauges of running and queued builds.
    fn enter(&mut self, state: JobState) {
        let builds = &metrics::global().builds;
        let gauge = |state| match state {
            JobState::Queued => Some(&builds.queued),
            JobState::Running => Some(&builds.running),
            _ => None,
        };
        if let Some(left) = gauge(self.state) {
            left.dec();
        }
        if let Some(entered) = gauge(state) {
            entered.inc();
        }
        self.state = state;
    }
}

/// The end of a log: `text` starts `dropped` bytes into the whole.
#[derive(Default)]
struct LogBuffer {
    text: String,
    dropped: u64,
}

impl LogBuffer {
    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if self.text.len() > LOG_BYTES + LOG_BYTES / 4 {
            let mut cut = self.text.len() - LOG_BYTES;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    fn end(&self) -> u64 {
        self.dropped + self.text.len() as u64
    }
}

/// A piece of a job's log, from where a reader is.
pub struct LogChunk {
    pub text: String,
    /// Where the next read starts.
    pub next: u64,
    /// The job has ended: there will be no more.
    pub finished: bool,
}

/// How a job stands, for `GET /-/builds` and the answer to a waiting client.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BuildStatus {
    pub id: String,
    pub image: String,
    pub tag: String,
    pub systems: Vec<String>,
    /// The flake revision built: a git commit or `sha256-…` (a NAR hash).
    pub revision: Option<String>,
    pub state: JobState,
    pub trigger: Trigger,
    /// RFC 3339, UTC.
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Seconds from the start (or, while queued, from queueing) to the end or now.
    pub duration_secs: f64,
    pub progress: Progress,
    /// The last lines of the log.
    pub log_tail: Vec<String>,
    /// Why it failed: Nix's error line, without paths.
    pub error: Option<String>,
    /// The OCI manifest (or index) it made.
    pub digest: Option<Digest>,
}

impl Job {
    pub(super) fn new(key: JobKey, systems: Vec<String>, trigger: Trigger, client: Option<IpAddr>) -> Arc<Job> {
        let inner = Inner {
            state: JobState::Resolving,
            revision: None,
            started: None,
            started_at: None,
            finished_at: None,
            took: None,
            progress: HashMap::new(),
            log: LogBuffer::default(),
            outcome: None,
        };
        Self::make(new_id(), key, systems, trigger, client, SystemTime::now(), inner)
    }

    /// A build that finished before this process started, as the history kept it.
    pub(super) fn from_record(record: BuildRecord) -> Arc<Job> {
        let (state, outcome) = match record.ended {
            Ended::Succeeded { digest } => {
                let manifests = digest.into_iter().map(|digest| (ManifestFormat::Oci, digest)).collect();
                (JobState::Succeeded, Ok(ResolvedTag { manifests }))
            }
            Ended::Failed { error } => {
                (JobState::Failed, Err(ServiceError::Build { message: error, build: Some(record.id.clone()) }))
            }
        };
        let inner = Inner {
            state,
            revision: record.revision,
            started: None,
            started_at: record.started_ms.map(from_millis),
            finished_at: Some(from_millis(record.finished_ms)),
            took: Some(Duration::from_millis(record.took_ms)),
            progress: HashMap::from([(0, record.progress)]),
            log: LogBuffer { text: record.log, dropped: record.log_dropped },
            outcome: Some(outcome),
        };
        let key = (record.image, record.tag);
        Self::make(record.id, key, record.systems, record.trigger, None, from_millis(record.queued_ms), inner)
    }

    fn make(
        id: String,
        key: JobKey,
        systems: Vec<String>,
        trigger: Trigger,
        client: Option<IpAddr>,
        created_at: SystemTime,
        inner: Inner,
    ) -> Arc<Job> {
        Arc::new_cyclic(|me: &Weak<Job>| {
            let observer: Arc<dyn Observer> = Arc::new(JobObserver(me.clone()));
            Job {
                id,
                key,
                systems,
                trigger,
                work: Arc::new(Work::job(client, observer)),
                created: Instant::now(),
                created_at,
                inner: Mutex::new(inner),
                changed: Condvar::new(),
            }
        })
    }

    /// The finished build as the history keeps it (`None` while it runs, or if it never came to build).
    fn record(&self, inner: &Inner) -> Option<BuildRecord> {
        if inner.state == JobState::Resolving {
            return None;
        }
        let ended = match inner.outcome.as_ref()? {
            Ok(resolved) => Ended::Succeeded { digest: resolved.manifests.get(&ManifestFormat::Oci).cloned() },
            Err(error) => Ended::Failed { error: error.to_string() },
        };
        Some(BuildRecord {
            format: FORMAT,
            id: self.id.clone(),
            image: self.key.0.clone(),
            tag: self.key.1.clone(),
            systems: self.systems.clone(),
            revision: inner.revision.clone(),
            trigger: self.trigger,
            queued_ms: millis(self.created_at),
            started_ms: inner.started_at.map(millis),
            finished_ms: millis(inner.finished_at?),
            took_ms: inner.took?.as_millis() as u64,
            progress: total_progress(inner),
            ended,
            log: inner.log.text.clone(),
            log_dropped: inner.log.dropped,
        })
    }

    /// Whether it is listed: it came to building.
    pub fn is_build(&self) -> bool {
        self.inner.lock().unwrap().state != JobState::Resolving
    }

    pub fn set_revision(&self, revision: &str) {
        self.inner.lock().unwrap().revision = Some(revision.to_owned());
    }

    /// Adds a line of flakeforge's own to the log.
    pub fn note(&self, line: &str) {
        self.inner.lock().unwrap().log.push(line);
        self.changed.notify_all();
    }

    /// Waits for the outcome until `deadline` (for ever without one).
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Result<ResolvedTag, ServiceError>> {
        let mut inner = self.inner.lock().unwrap();
        loop {
            if let Some(outcome) = &inner.outcome {
                return Some(outcome.clone());
            }
            inner = match deadline {
                None => self.changed.wait(inner).unwrap(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.changed.wait_timeout(inner, left).unwrap().0
                }
            };
        }
    }

    /// The log from byte `from` on; waits up to `wait` for more when there is none yet.
    pub fn log_from(&self, from: u64, wait: Duration) -> LogChunk {
        let mut inner = self.inner.lock().unwrap();
        if from >= inner.log.end() && inner.outcome.is_none() {
            inner = self.changed.wait_timeout(inner, wait).unwrap().0;
        }
        let log = &inner.log;
        let mut text = String::new();
        let mut start = from.max(log.dropped);
        if start > from {
            text.push_str(&format!("[… {} bytes of the log are no longer kept …]\n", start - from));
        }
        start = start.min(log.end());
        text.push_str(&log.text[(start - log.dropped) as usize..]);
        LogChunk { text, next: log.end(), finished: inner.outcome.is_some() }
    }

    pub fn status(&self) -> BuildStatus {
        let inner = self.inner.lock().unwrap();
        let took = inner.took.unwrap_or_else(|| inner.started.unwrap_or(self.created).elapsed());
        let lines: Vec<&str> = inner.log.text.lines().collect();
        let (error, digest) = match &inner.outcome {
            Some(Err(error)) => (Some(error.to_string()), None),
            Some(Ok(resolved)) => (None, resolved.manifests.get(&ManifestFormat::Oci).cloned()),
            None => (None, None),
        };
        BuildStatus {
            id: self.id.clone(),
            image: self.key.0.clone(),
            tag: self.key.1.clone(),
            systems: self.systems.clone(),
            revision: inner.revision.clone(),
            state: inner.state,
            trigger: self.trigger,
            queued_at: rfc3339(self.created_at),
            started_at: inner.started_at.map(rfc3339),
            finished_at: inner.finished_at.map(rfc3339),
            duration_secs: (took.as_secs_f64() * 10.0).round() / 10.0,
            progress: total_progress(&inner),
            log_tail: lines[lines.len().saturating_sub(LAST_LINES)..].iter().map(|l| l.to_string()).collect(),
            error,
            digest,
        }
    }

    /// Ends the job with `outcome`; a build is handed to `keep` as the
    /// history records it before anyone waiting hears of the end (so that
    /// a client that got its answer finds the build after a crash too).
    pub(super) fn finish(&self, outcome: Result<ResolvedTag, ServiceError>, keep: impl FnOnce(&BuildRecord)) {
        let mut inner = self.inner.lock().unwrap();
        let took = inner.started.unwrap_or(self.created).elapsed();
        if inner.state != JobState::Resolving {
            let state = if outcome.is_ok() { JobState::Succeeded } else { JobState::Failed };
            inner.enter(state);
            let label = OutcomeLabel { outcome: if outcome.is_ok() { "succeeded" } else { "failed" } };
            let builds = &metrics::global().builds;
            builds.finished.get_or_create(&label).inc();
            builds.durations.get_or_create(&label).observe(took.as_secs_f64());
        }
        inner.finished_at = Some(SystemTime::now());
        inner.took = Some(took);
        match &outcome {
            Ok(resolved) => {
                let digest = resolved.manifests.get(&ManifestFormat::Oci).map(ToString::to_string).unwrap_or_default();
                inner.log.push(&format!("done: {digest}"));
            }
            Err(error) => inner.log.push(&format!("failed: {error}")),
        }
        inner.outcome = Some(outcome);
        if let Some(record) = self.record(&inner) {
            keep(&record);
        }
        self.changed.notify_all();
    }
}

/// The derivations built of those to build, over all `nix build`s of the job.
fn total_progress(inner: &Inner) -> Progress {
    inner.progress.values().fold(Progress::default(), |sum, p| sum + *p)
}

/// How a job hears of its Nix invocations.
struct JobObserver(Weak<Job>);

impl Observer for JobObserver {
    fn queued(&self, _invocation: u64, lane: Lane) {
        let Some(job) = self.0.upgrade() else { return };
        let mut inner = job.inner.lock().unwrap();
        if lane == Lane::Build && inner.state == JobState::Resolving {
            inner.enter(JobState::Queued);
        }
    }

    fn started(&self, _invocation: u64, lane: Lane, command: &str) {
        let Some(job) = self.0.upgrade() else { return };
        let mut inner = job.inner.lock().unwrap();
        if lane == Lane::Build && matches!(inner.state, JobState::Resolving | JobState::Queued) {
            inner.enter(JobState::Running);
            if inner.started.is_none() {
                inner.started = Some(Instant::now());
                inner.started_at = Some(SystemTime::now());
            }
        }
        inner.log.push(&format!("$ {command}"));
        job.changed.notify_all();
    }

    fn event(&self, invocation: u64, event: &Event) {
        let Some(job) = self.0.upgrade() else { return };
        let mut inner = job.inner.lock().unwrap();
        match event {
            Event::Line(line) => inner.log.push(line),
            Event::Progress(progress) => drop(inner.progress.insert(invocation, *progress)),
            Event::Nothing => return,
        }
        job.changed.notify_all();
    }
}

/// Short ids that differ across restarts: hex of a hash of the start time and a count.
fn new_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let seed = format!("{:?}-{}-{}", SystemTime::now(), std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
    Digest::of(seed.as_bytes()).hex()[..10].to_owned()
}

/// Milliseconds since the Unix epoch, as the history stores times.
fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// `2024-05-01T12:00:00Z`.
pub fn rfc3339(at: SystemTime) -> String {
    crate::image::origin::rfc3339(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_log_come_from_the_observer() {
        let job = Job::new(("a".into(), "latest".into()), vec!["x86_64-linux".into()], Trigger::Prebuild, None);
        let observer = job.work.observer().unwrap();
        observer.queued(1, Lane::Eval);
        assert_eq!(job.status().state, JobState::Resolving);
        observer.queued(1, Lane::Build);
        assert_eq!(job.status().state, JobState::Queued);
        observer.started(1, Lane::Build, "nix build x");
        observer.event(1, &Event::Progress(Progress { built: 1, total: 3 }));
        observer.event(2, &Event::Progress(Progress { built: 0, total: 1 }));
        observer.event(1, &Event::Line("hello> hi".into()));
        let status = job.status();
        assert_eq!((status.state, status.progress), (JobState::Running, Progress { built: 1, total: 4 }));
        assert_eq!(status.log_tail, ["$ nix build x", "hello> hi"]);
        assert!(job.is_build() && job.wait(Some(Instant::now() + Duration::from_millis(10))).is_none());
    }

    #[test]
    fn a_long_log_keeps_its_end() {
        let mut log = LogBuffer::default();
        for i in 0..100_000 {
            log.push(&format!("line {i} {}", "x".repeat(20)));
        }
        assert!(log.text.len() <= LOG_BYTES + LOG_BYTES / 4 && log.text.ends_with("line 99999 xxxxxxxxxxxxxxxxxxxx\n"));
        assert_eq!(log.end(), log.dropped + log.text.len() as u64);
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
    }
}
