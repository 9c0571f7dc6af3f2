//! The table of build jobs: one job per image name and tag at a time
//! however many clients ask, each run on a thread of its own by the caller
//! of [`Jobs::start`]; builds that finished stay listed for a while;
//! failures are remembered for `--negative-ttl`, so that retries and floods
//! of a bad request run no Nix.
//!
//! Finished builds are kept in the [`History`] too, and those it held are
//! listed again after a restart.
//!
//! A job that turns out to need no `nix build` (the tag still stands for
//! the image built before, or the name does not exist) is never listed:
//! only builds are.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::history::History;
use super::job::{BuildStatus, Job, JobKey, Trigger};
use super::{ResolvedTag, ServiceError};

/// Finished builds listed (and kept in the history).
const RECENT_BUILDS: usize = 100;
/// Names and tags whose failure is remembered.
const REMEMBERED_FAILURES: usize = 4096;

/// The jobs running, the builds that finished lately, and recent failures.
pub struct Jobs {
    active: Mutex<HashMap<JobKey, Arc<Job>>>,
    recent: Mutex<VecDeque<Arc<Job>>>,
    failures: Mutex<LruCache<JobKey, (ServiceError, Instant)>>,
    negative_ttl: Duration,
    history: History,
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
    /// The jobs, with the finished builds of the history in `state_dir`.
    pub fn new(negative_ttl: Duration, state_dir: &Path) -> Jobs {
        let capacity = NonZeroUsize::new(REMEMBERED_FAILURES).expect("not zero");
        let (history, finished) = History::open(state_dir, RECENT_BUILDS);
        Jobs {
            active: Mutex::new(HashMap::new()),
            recent: Mutex::new(finished.into_iter().map(Job::from_record).collect()),
            failures: Mutex::new(LruCache::new(capacity)),
            negative_ttl,
            history,
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
    fn recent_failure(&self, key: &JobKey) -> Option<ServiceError> {
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
        job.finish(outcome, |record| self.history.add(record));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::media_type::ManifestFormat;
    use crate::nix::log::{Event, Progress};
    use crate::nix::scheduler::Lane;
    use crate::service::job::JobState;
    use std::collections::BTreeMap;

    fn key(name: &str) -> JobKey {
        (name.to_owned(), "latest".to_owned())
    }

    fn resolved() -> ResolvedTag {
        ResolvedTag { manifests: BTreeMap::from([(ManifestFormat::Oci, Digest::of(b"m"))]) }
    }

    #[test]
    fn one_job_per_key_and_failures_are_remembered() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let jobs = Jobs::new(Duration::from_secs(60), &state);
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
        // Nor kept: only builds are.
        assert!(!state.join("builds").exists());
    }

    #[test]
    fn builds_are_listed_with_progress_and_log() {
        let scratch = crate::test_dir::TestDir::new();
        let state = scratch.path().join("state");
        let jobs = Jobs::new(Duration::ZERO, &state);
        let Started::New(job) = jobs.start(key("a"), &["x86_64-linux".into()], Trigger::Prebuild, None) else {
            panic!()
        };
        let observer = job.work.observer().unwrap();
        observer.queued(1, Lane::Build);
        assert_eq!(jobs.statuses()[0].state, JobState::Queued);
        // Not finished, so not kept: a restart now would list nothing.
        assert!(Jobs::new(Duration::ZERO, &state).statuses().is_empty());
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
        // A failed one too; both are listed again, as they were, after a restart.
        let Started::New(failed) = jobs.start(key("b"), &[], Trigger::Watch, None) else { panic!() };
        failed.work.observer().unwrap().queued(1, Lane::Build);
        jobs.run(&failed, || Err(ServiceError::Build { message: "builder failed".into(), build: None }));
        let before = jobs.statuses();
        let again = Jobs::new(Duration::ZERO, &state);
        let after = again.statuses();
        let without_duration = |s: &BuildStatus| BuildStatus { duration_secs: 0.0, ..s.clone() };
        assert_eq!(
            after.iter().map(without_duration).collect::<Vec<_>>(),
            before.iter().map(without_duration).collect::<Vec<_>>()
        );
        assert_eq!((after[0].state, after[0].error.as_deref()), (JobState::Failed, Some("builder failed")));
        for id in [&job.id, &failed.id] {
            let (old, new) =
                (jobs.get(id).unwrap().log_from(0, Duration::ZERO), again.get(id).unwrap().log_from(0, Duration::ZERO));
            assert!(new.finished && new.text == old.text && new.next == old.next);
        }
    }
}
