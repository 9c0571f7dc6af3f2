//! Building ahead of the pull: `--prebuild NAME[:TAG]` and `--prebuild-all`
//! are built (layers and all) when the server starts, without any client,
//! at background priority; then the watch looks at the flake's revisions
//! every `--watch-interval` (and at once on SIGUSR1 or `POST /-/refresh`)
//! and, when a moving tag moved, builds its prebuilt images again while the
//! previous ones are served. A restart builds nothing that did not change:
//! a revision built before is found on disk.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::job::Trigger;
use super::Service;
use crate::nix::scheduler::Work;
use crate::reference::{RepoName, Tag};

/// What to build ahead, and how often to look at the flake.
#[derive(Debug, Clone, Default)]
pub struct PrebuildOptions {
    pub targets: Vec<(RepoName, Tag)>,
    /// Every package the flake offers, as `latest`.
    pub all: bool,
    /// `None`: look only when told (SIGUSR1, `POST /-/refresh`).
    pub watch_interval: Option<Duration>,
}

/// How one image's prebuild ended.
enum Outcome {
    /// `built`: a `nix build` ran for it (else it was built before).
    Ready {
        built: bool,
    },
    Failed,
}

#[derive(Default)]
struct Tally {
    ready: usize,
    built: usize,
    failed: usize,
}

/// How often the watch looks at the signal counter while it waits.
const SIGNAL_POLL: Duration = Duration::from_millis(200);

/// The requests and signals the watch has answered.
#[derive(Default)]
struct Seen {
    requests: u64,
    signals: u64,
}

/// Requests to look at the flake now.
#[derive(Default)]
pub struct Watch {
    requests: Mutex<u64>,
    requested: Condvar,
}

impl Watch {
    fn request(&self) {
        *self.requests.lock().unwrap() += 1;
        self.requested.notify_all();
    }

    /// Waits until `until` or a request or SIGUSR1 not `seen` yet, whichever comes first.
    fn wait(&self, until: Option<Instant>, seen: &mut Seen) {
        let signals = crate::signals::counter(libc::SIGUSR1);
        let mut requests = self.requests.lock().unwrap();
        loop {
            if *requests != seen.requests {
                seen.requests = *requests;
                return;
            }
            let signalled = signals.load(Ordering::Relaxed);
            if signalled != seen.signals {
                log::info!("watch: SIGUSR1, looking at the flake now");
                seen.signals = signalled;
                return;
            }
            let poll = match until {
                Some(until) if until <= Instant::now() => return,
                Some(until) => SIGNAL_POLL.min(until - Instant::now()),
                None => SIGNAL_POLL,
            };
            requests = self.requested.wait_timeout(requests, poll).unwrap().0;
        }
    }
}

impl Service {
    /// Starts the prebuilds and the watch, each on a thread of its own.
    pub fn start_watch(&self) -> std::io::Result<()> {
        // Counted from now on, so that SIGUSR1 never ends the server.
        crate::signals::counter(libc::SIGUSR1);
        let this = self.this();
        std::thread::Builder::new()
            .name("prebuild".into())
            .spawn(move || this.prebuild(&this.prebuild_targets(None), Trigger::Prebuild))?;
        let this = self.this();
        std::thread::Builder::new().name("watch".into()).spawn(move || this.watch_loop()).map(drop)
    }

    /// Looks at the flake now (what SIGUSR1 does): for a git hook, `POST /-/refresh`.
    pub fn refresh(&self) {
        self.watch.request();
    }

    fn watch_loop(&self) {
        let options = &self.config.prebuild;
        // What the tags stand for at the start (the prebuilds build that): only a move from here counts.
        for tag in self.watched_tags() {
            let _ = self.revisions.get(&self.nix.for_work(Arc::new(Work::background())), &tag);
        }
        let mut seen = Seen { requests: 0, signals: crate::signals::counter(libc::SIGUSR1).load(Ordering::Relaxed) };
        loop {
            self.watch.wait(options.watch_interval.map(|every| Instant::now() + every), &mut seen);
            for tag in self.watched_tags() {
                let nix = self.nix.for_work(Arc::new(Work::background()));
                match self.revisions.refresh(&nix, &tag) {
                    Ok((locked, true)) => {
                        log::info!("watch: {tag} moved to {}; building its prebuilt images", locked.short_revision());
                        self.prebuild(&self.prebuild_targets(Some(&tag)), Trigger::Watch);
                    }
                    Ok(_) => log::debug!("watch: {tag} has not moved"),
                    Err(error) => log::warn!("watch: cannot look up {tag}: {error}"),
                }
            }
        }
    }

    /// `latest`, and the moving tags of `--prebuild`.
    fn watched_tags(&self) -> Vec<Tag> {
        let mut tags = vec![Tag::latest()];
        for (_, tag) in &self.config.prebuild.targets {
            if !tag.is_revision() && !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        tags
    }

    /// The images to build ahead (of `only` that tag): `--prebuild`, and with
    /// `--prebuild-all` every package the flake offers now.
    fn prebuild_targets(&self, only: Option<&Tag>) -> Vec<(RepoName, Tag)> {
        let options = &self.config.prebuild;
        let mut targets = options.targets.clone();
        if options.all && only.is_none_or(|tag| *tag == Tag::latest()) {
            match self.package_names(&self.nix.for_work(Arc::new(Work::background()))) {
                Ok(names) => {
                    targets.extend(names.iter().filter_map(|n| RepoName::parse(n)).map(|n| (n, Tag::latest())))
                }
                Err(error) => log::warn!("prebuild: cannot list the flake's packages: {error}"),
            }
        }
        targets.retain(|(_, tag)| only.is_none_or(|only| tag == only));
        targets.sort();
        targets.dedup_by(|a, b| a.0.canonical() == b.0.canonical() && a.1 == b.1);
        targets
    }

    /// Builds `targets`, as many at a time as builds may run (so that the
    /// scheduler's queue is never flooded), each waiting for its end.
    fn prebuild(&self, targets: &[(RepoName, Tag)], trigger: Trigger) {
        if targets.is_empty() {
            return;
        }
        let next = Mutex::new(targets.iter());
        let tally = Mutex::new(Tally::default());
        let workers = self.config.scheduler.max_builds.clamp(1, targets.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let Some((name, tag)) = next.lock().unwrap().next() else { break };
                    let outcome = self.prebuild_one(name, tag, trigger);
                    let mut tally = tally.lock().unwrap();
                    match outcome {
                        Outcome::Ready { built } => {
                            tally.ready += 1;
                            tally.built += usize::from(built);
                        }
                        Outcome::Failed => tally.failed += 1,
                    }
                });
            }
        });
        let tally = tally.into_inner().unwrap();
        log::info!(
            "prebuild ({}): {} of {} images ready, {} of them built now, {} failed",
            trigger.as_str(),
            tally.ready,
            targets.len(),
            tally.built,
            tally.failed
        );
    }

    fn prebuild_one(&self, name: &RepoName, tag: &Tag, trigger: Trigger) -> Outcome {
        let mut built = false;
        // A job that was running already may have started from the revision before.
        for _ in 0..2 {
            let outcome = self.start_job(name, tag, trigger, None).and_then(|job| {
                let outcome = job.wait(None).expect("a wait without a deadline ends with the job");
                built |= job.is_build();
                outcome
            });
            if let Err(error) = outcome {
                log::warn!("prebuild: {name}:{tag}: {error}");
                return Outcome::Failed;
            }
            if self.current(name, tag).is_some_and(|current| self.is_current(tag, &current)) {
                break;
            }
        }
        Outcome::Ready { built }
    }
}
