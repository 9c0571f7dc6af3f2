//! Builds as jobs that outlive the requests that start them: one job per
//! image name and tag at a time however many clients ask, each on a thread
//! of its own, with its state, progress (derivations built of those to
//! build, from Nix's own report) and log (bounded, readable while it grows).
//! Finished builds stay listed for a while; failures are remembered for
//! `--negative-ttl`, so retries and floods of a bad request run no Nix.
//!
//! A job that turns out to need no `nix build` (the tag still stands for
//! the image built before, or the name does not exist) is never listed:
//! only builds are.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde::Serialize;

use super::{ResolvedTag, ServiceError};
use crate::digest::Digest;
use crate::media_type::ManifestFormat;
use crate::nix::log::{Event, Progress};
use crate::nix::scheduler::{Lane, Observer, Work};

/// Finished builds listed.
const RECENT_BUILDS: usize = 100;
/// Names and tags whose failure is remembered.
const REMEMBERED_FAILURES: usize = 4096;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    created: Instant,
    created_at: SystemTime,
    inner: Mutex<Inner>,
    changed: Condvar,
}

struct Inner {
    state: JobState,
    revision: Option<String>,
    started: Option<(Instant, SystemTime)>,
    finished: Option<(Instant, SystemTime)>,
    /// The latest report of each `nix build` of the job.
    progress: HashMap<u64, Progress>,
    log: LogBuffer,
    outcome: Option<Result<ResolvedTag, ServiceError>>,
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
    fn new(key: JobKey, systems: Vec<String>, trigger: Trigger, client: Option<IpAddr>) -> Arc<Job> {
        Arc::new_cyclic(|me: &std::sync::Weak<Job>| {
            let observer: Arc<dyn Observer> = Arc::new(JobObserver(me.clone()));
            Job {
                id: new_id(),
                key,
                systems,
                trigger,
                work: Arc::new(Work::job(client, observer)),
                created: Instant::now(),
                created_at: SystemTime::now(),
                inner: Mutex::new(Inner {
                    state: JobState::Resolving,
                    revision: None,
                    started: None,
                    finished: None,
                    progress: HashMap::new(),
                    log: LogBuffer::default(),
                    outcome: None,
                }),
                changed: Condvar::new(),
            }
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
        let now = Instant::now();
        let since = inner.started.map_or(self.created, |(at, _)| at);
        let until = inner.finished.map_or(now, |(at, _)| at);
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
            started_at: inner.started.map(|(_, at)| rfc3339(at)),
            finished_at: inner.finished.map(|(_, at)| rfc3339(at)),
            duration_secs: (until.saturating_duration_since(since).as_secs_f64() * 10.0).round() / 10.0,
            progress: inner.progress.values().fold(Progress::default(), |sum, p| sum + *p),
            log_tail: lines[lines.len().saturating_sub(LAST_LINES)..].iter().map(|l| l.to_string()).collect(),
            error,
            digest,
        }
    }

    fn finish(&self, outcome: Result<ResolvedTag, ServiceError>) {
        let mut inner = self.inner.lock().unwrap();
        if inner.state != JobState::Resolving {
            inner.state = if outcome.is_ok() { JobState::Succeeded } else { JobState::Failed };
        }
        inner.finished = Some((Instant::now(), SystemTime::now()));
        match &outcome {
            Ok(resolved) => {
                let digest = resolved.manifests.get(&ManifestFormat::Oci).map(ToString::to_string).unwrap_or_default();
                inner.log.push(&format!("done: {digest}"));
            }
            Err(error) => inner.log.push(&format!("failed: {error}")),
        }
        inner.outcome = Some(outcome);
        self.changed.notify_all();
    }
}

/// How a job hears of its Nix invocations.
struct JobObserver(std::sync::Weak<Job>);

impl Observer for JobObserver {
    fn queued(&self, _invocation: u64, lane: Lane) {
        let Some(job) = self.0.upgrade() else { return };
        let mut inner = job.inner.lock().unwrap();
        if lane == Lane::Build && inner.state == JobState::Resolving {
            inner.state = JobState::Queued;
        }
    }

    fn started(&self, _invocation: u64, lane: Lane, command: &str) {
        let Some(job) = self.0.upgrade() else { return };
        let mut inner = job.inner.lock().unwrap();
        if lane == Lane::Build && matches!(inner.state, JobState::Resolving | JobState::Queued) {
            inner.state = JobState::Running;
            inner.started.get_or_insert((Instant::now(), SystemTime::now()));
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

/// `2024-05-01T12:00:00Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "1970-01-01T00:00:00Z".into(),
    }
}

/// The jobs running, the builds that finished lately, and recent failures.
pub struct Jobs {
    active: Mutex<HashMap<JobKey, Arc<Job>>>,
    recent: Mutex<VecDeque<Arc<Job>>>,
    failures: Mutex<LruCache<JobKey, (ServiceError, Instant)>>,
    negative_ttl: Duration,
}

/// What [`Jobs::start`] found or did.
pub enum Started {
    /// A new job: the caller runs it ([`Jobs::run`]) on a thread of its own.
    New(Arc<Job>),
    /// One for the key was running already.
    Running(Arc<Job>),
    /// The last one failed less than `--negative-ttl` ago.
    Failed(ServiceError),
}

impl Jobs {
    pub fn new(negative_ttl: Duration) -> Jobs {
        let capacity = NonZeroUsize::new(REMEMBERED_FAILURES).expect("not zero");
        Jobs {
            active: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            failures: Mutex::new(LruCache::new(capacity)),
            negative_ttl,
        }
    }

    /// The job for `key`: the running one, or a new one, unless the last failed lately.
    pub fn start(&self, key: JobKey, systems: &[String], trigger: Trigger, client: Option<IpAddr>) -> Started {
        let mut active = self.active.lock().unwrap();
        if let Some(job) = active.get(&key) {
            return Started::Running(job.clone());
        }
        if let Some(error) = self.recent_failure(&key) {
            return Started::Failed(error);
        }
        let job = Job::new(key.clone(), systems.to_vec(), trigger, client);
        active.insert(key, job.clone());
        Started::New(job)
    }

    /// A failure of `key` less than `--negative-ttl` ago.
    pub fn recent_failure(&self, key: &JobKey) -> Option<ServiceError> {
        let mut failures = self.failures.lock().unwrap();
        match failures.get(key) {
            Some((error, at)) if at.elapsed() < self.negative_ttl => Some(error.clone()),
            Some(_) => {
                failures.pop(key);
                None
            }
            None => None,
        }
    }

    /// Runs `job` with `build` to its end, then files it away.
    pub fn run(&self, job: &Arc<Job>, build: impl FnOnce() -> Result<ResolvedTag, ServiceError>) {
        let outcome = build().map_err(|error| match error {
            ServiceError::Build { message, build: None } if job.is_build() => {
                ServiceError::Build { message, build: Some(job.id.clone()) }
            }
            other => other,
        });
        if let Err(error) = &outcome {
            if error.is_lasting() {
                self.failures.lock().unwrap().put(job.key.clone(), (error.clone(), Instant::now()));
            }
        }
        job.finish(outcome);
        self.active.lock().unwrap().remove(&job.key);
        if job.is_build() {
            let mut recent = self.recent.lock().unwrap();
            recent.push_back(job.clone());
            while recent.len() > RECENT_BUILDS {
                recent.pop_front();
            }
        }
    }

    /// Running and queued builds, then finished ones, newest first.
    pub fn statuses(&self) -> Vec<BuildStatus> {
        let active: Vec<Arc<Job>> = self.active.lock().unwrap().values().filter(|j| j.is_build()).cloned().collect();
        let recent: Vec<Arc<Job>> = self.recent.lock().unwrap().iter().rev().cloned().collect();
        let mut active: Vec<BuildStatus> = active.iter().map(|job| job.status()).collect();
        active.sort_by(|a, b| b.queued_at.cmp(&a.queued_at).then_with(|| a.id.cmp(&b.id)));
        active.into_iter().chain(recent.iter().map(|job| job.status())).collect()
    }

    /// A listed build by id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let active = self.active.lock().unwrap().values().find(|job| job.id == id && job.is_build()).cloned();
        active.or_else(|| self.recent.lock().unwrap().iter().find(|job| job.id == id).cloned())
    }

    /// The running job for `key`, if any.
    pub fn running(&self, key: &JobKey) -> Option<Arc<Job>> {
        self.active.lock().unwrap().get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(name: &str) -> JobKey {
        (name.to_owned(), "latest".to_owned())
    }

    fn resolved() -> ResolvedTag {
        ResolvedTag { manifests: BTreeMap::from([(ManifestFormat::Oci, Digest::of(b"m"))]) }
    }

    #[test]
    fn one_job_per_key_and_failures_are_remembered() {
        let jobs = Jobs::new(Duration::from_secs(60));
        let Started::New(job) = jobs.start(key("a"), &[], Trigger::Client, None) else { panic!() };
        assert!(matches!(jobs.start(key("a"), &[], Trigger::Client, None), Started::Running(j) if j.id == job.id));
        jobs.run(&job, || Err(ServiceError::NameUnknown("no a".into())));
        assert!(matches!(jobs.start(key("a"), &[], Trigger::Client, None), Started::Failed(_)));
        // Not listed: it never built.
        assert!(jobs.statuses().is_empty() && jobs.get(&job.id).is_none());
        // A transient failure is not remembered.
        let Started::New(job) = jobs.start(key("b"), &[], Trigger::Client, None) else { panic!() };
        jobs.run(&job, || Err(ServiceError::TooManyBuilds));
        assert!(matches!(jobs.start(key("b"), &[], Trigger::Client, None), Started::New(_)));
    }

    #[test]
    fn builds_are_listed_with_progress_and_log() {
        let jobs = Jobs::new(Duration::ZERO);
        let Started::New(job) = jobs.start(key("a"), &["x86_64-linux".into()], Trigger::Prebuild, None) else {
            panic!()
        };
        let observer = job.work.observer().unwrap();
        observer.queued(1, Lane::Build);
        assert_eq!(jobs.statuses()[0].state, JobState::Queued);
        observer.started(1, Lane::Build, "nix build x");
        observer.event(1, &Event::Progress(Progress { built: 1, total: 3 }));
        observer.event(1, &Event::Line("hello> hi".into()));
        let status = jobs.get(&job.id).unwrap().status();
        assert_eq!((status.state, status.progress), (JobState::Running, Progress { built: 1, total: 3 }));
        assert_eq!(status.log_tail, ["$ nix build x", "hello> hi"]);
        assert!(job.wait(Some(Instant::now() + Duration::from_millis(10))).is_none());
        let reader = job.clone();
        let follower = std::thread::spawn(move || reader.log_from(0, Duration::from_secs(5)).text);
        jobs.run(&job, || Ok(resolved()));
        assert!(follower.join().unwrap().starts_with("$ nix build x\nhello> hi\n"));
        assert!(job.wait(None).unwrap().is_ok());
        let status = &jobs.statuses()[0];
        assert_eq!((status.state, status.digest.clone()), (JobState::Succeeded, Some(Digest::of(b"m"))));
        let chunk = job.log_from(0, Duration::ZERO);
        assert!(chunk.finished && chunk.text.ends_with(&format!("done: {}\n", Digest::of(b"m"))));
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
