//! The one gate every `nix` process passes through ([`super::command`]
//! takes a [`Permit`] before it spawns anything): a cap on concurrent
//! processes in two lanes, so that short evaluations (`eval`, `path-info`,
//! `flake metadata`) never wait behind long builds; a bounded queue per lane
//! (past it: [`NixError::Busy`]); work a client waits for before background
//! work (prebuilds, the watch); and a rate per client address of work that
//! starts Nix at all (`--build-rate`).
//!
//! Who asks is a [`Work`]: a request, or a build job that outlives requests.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::log::Event;
use super::NixError;
use crate::metrics::{self, ReasonLabel};
use crate::rate_limit::RateLimiter;

/// Invocations that may wait in a lane, per process the lane runs at once.
const QUEUED_PER_SLOT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// `nix build`: minutes, maybe.
    Build,
    /// Everything else: seconds at most.
    Eval,
}

impl Lane {
    /// The lane of a `nix` command line, by its subcommand.
    pub fn of(subcommand: &str) -> Lane {
        if subcommand == "build" {
            Lane::Build
        } else {
            Lane::Eval
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Build => "build",
            Lane::Eval => "eval",
        }
    }
}

/// The scheduler's settings (`--max-builds`, `--max-evals`, `--build-rate`).
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub max_builds: usize,
    pub max_evals: usize,
    /// Requests per minute and client address that may start Nix work; 0: no limit.
    pub build_rate: u32,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { max_builds: 2, max_evals: 4, build_rate: 0 }
    }
}

/// Told what the invocations of one [`Work`] do (a build job keeps its log this way).
pub trait Observer: Send + Sync {
    /// Invocation `invocation` waits for a process slot in `lane`.
    fn queued(&self, invocation: u64, lane: Lane);
    /// It has its slot and runs `command`.
    fn started(&self, invocation: u64, lane: Lane, command: &str);
    /// What it said on stderr, rendered.
    fn event(&self, invocation: u64, event: &Event);
}

/// Who Nix runs for: a client's request or a job, and how it is treated.
#[derive(Default)]
pub struct Work {
    /// Charged against this address's `--build-rate`, once.
    client: Option<IpAddr>,
    charged: AtomicBool,
    /// Someone waits for it: it goes before background work.
    urgent: AtomicBool,
    /// A request gives up waiting for a slot here (a job never does).
    queue_deadline: Option<Instant>,
    observer: Option<Arc<dyn Observer>>,
}

impl Work {
    /// Background work: prebuilds, the watch.
    pub fn background() -> Work {
        Work::default()
    }

    /// Work a client waits for, charged to it; it stops queueing at `deadline`.
    pub fn for_client(client: IpAddr, deadline: Option<Instant>) -> Work {
        Work { client: Some(client), urgent: AtomicBool::new(true), queue_deadline: deadline, ..Work::default() }
    }

    /// Work that outlives the request that started it (a build job), reporting to `observer`.
    pub fn job(client: Option<IpAddr>, observer: Arc<dyn Observer>) -> Work {
        Work { client, urgent: AtomicBool::new(client.is_some()), observer: Some(observer), ..Work::default() }
    }

    /// A client waits for it now: it goes before background work from here on.
    pub fn make_urgent(&self, scheduler: &Scheduler) {
        if !self.urgent.swap(true, Ordering::SeqCst) {
            // Waiters compare priorities when woken.
            let _state = scheduler.state.lock().unwrap();
            scheduler.changed.notify_all();
        }
    }

    pub fn observer(&self) -> Option<&dyn Observer> {
        self.observer.as_deref()
    }

    fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::SeqCst)
    }
}

pub struct Scheduler {
    caps: [usize; 2],
    state: Mutex<State>,
    changed: Condvar,
    rates: RateLimiter,
    started: AtomicU64,
}

#[derive(Default)]
struct State {
    running: [usize; 2],
    waiting: Vec<Waiting>,
    next_ticket: u64,
}

struct Waiting {
    ticket: u64,
    lane: Lane,
    work: Arc<Work>,
}

/// A process slot; given back when dropped.
pub struct Permit<'a> {
    scheduler: &'a Scheduler,
    lane: Lane,
}

/// What the scheduler is doing, for the build status.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStatus {
    pub running: LaneCounts,
    pub queued: LaneCounts,
    pub limits: LaneCounts,
    /// `nix` processes started since the server started.
    pub started: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LaneCounts {
    pub build: usize,
    pub eval: usize,
}

impl LaneCounts {
    fn of(counts: [usize; 2]) -> Self {
        LaneCounts { build: counts[Lane::Build.index()], eval: counts[Lane::Eval.index()] }
    }
}

impl Scheduler {
    pub fn new(options: &SchedulerOptions) -> Scheduler {
        Scheduler {
            caps: [options.max_builds.max(1), options.max_evals.max(1)],
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            rates: RateLimiter::new(options.build_rate),
            started: AtomicU64::new(0),
        }
    }

    /// Waits for a slot in `lane` for `work`: in order of urgency, then of
    /// arrival. Refused when the lane's queue is full, when a request's
    /// deadline passes in the queue, or when the client is over its rate.
    pub fn acquire(&self, lane: Lane, work: &Arc<Work>, invocation: u64) -> Result<Permit<'_>, NixError> {
        self.charge(work)?;
        let i = lane.index();
        let mut state = self.state.lock().unwrap();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push(Waiting { ticket, lane, work: work.clone() });
        let mut told = false;
        loop {
            if state.running[i] < self.caps[i] && state.first_in(lane) == Some(ticket) {
                state.waiting.retain(|w| w.ticket != ticket);
                state.running[i] += 1;
                self.started.fetch_add(1, Ordering::Relaxed);
                // Others in the lane may fit too.
                self.changed.notify_all();
                return Ok(Permit { scheduler: self, lane });
            }
            if !told {
                let queued = state.waiting.iter().filter(|w| w.lane == lane).count() - 1;
                if queued >= self.caps[i] * QUEUED_PER_SLOT {
                    state.waiting.retain(|w| w.ticket != ticket);
                    return Err(refused(NixError::Busy));
                }
                if let Some(observer) = work.observer() {
                    observer.queued(invocation, lane);
                }
                told = true;
            }
            state = match work.queue_deadline {
                None => self.changed.wait(state).unwrap(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        state.waiting.retain(|w| w.ticket != ticket);
                        self.changed.notify_all();
                        return Err(refused(NixError::Busy));
                    }
                    self.changed.wait_timeout(state, left).unwrap().0
                }
            };
        }
    }

    /// Takes a token of the client's rate the first time its work runs Nix.
    fn charge(&self, work: &Work) -> Result<(), NixError> {
        let Some(client) = work.client else { return Ok(()) };
        if work.charged.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.rates.take(client).map_err(|wait| {
            work.charged.store(false, Ordering::SeqCst);
            refused(NixError::RateLimited { retry_after: wait.max(Duration::from_secs(1)) })
        })
    }

    pub fn status(&self) -> SchedulerStatus {
        let state = self.state.lock().unwrap();
        let mut queued = [0; 2];
        for waiting in &state.waiting {
            queued[waiting.lane.index()] += 1;
        }
        SchedulerStatus {
            running: LaneCounts::of(state.running),
            queued: LaneCounts::of(queued),
            limits: LaneCounts::of(self.caps),
            started: self.started.load(Ordering::Relaxed),
        }
    }
}

/// Counts work turned down in the metrics.
fn refused(error: NixError) -> NixError {
    let reason = if matches!(error, NixError::RateLimited { .. }) { "rate_limited" } else { "busy" };
    metrics::global().nix.refused.get_or_create(&ReasonLabel { reason }).inc();
    error
}

impl State {
    /// The ticket that goes next in `lane`: urgent work first, then the oldest.
    fn first_in(&self, lane: Lane) -> Option<u64> {
        let in_lane = self.waiting.iter().filter(|w| w.lane == lane);
        in_lane.min_by_key(|w| (!w.work.is_urgent(), w.ticket)).map(|w| w.ticket)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.scheduler.state.lock().unwrap();
        state.running[self.lane.index()] -= 1;
        self.scheduler.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    fn scheduler(max_builds: usize, max_evals: usize) -> Scheduler {
        Scheduler::new(&SchedulerOptions { max_builds, max_evals, build_rate: 0 })
    }

    #[test]
    fn lanes_have_their_own_caps() {
        let scheduler = scheduler(1, 1);
        let work = Arc::new(Work::background());
        let build = scheduler.acquire(Lane::Build, &work, 0).unwrap();
        // An evaluation does not wait for the build.
        let eval = scheduler.acquire(Lane::Eval, &work, 1).unwrap();
        let status = scheduler.status();
        assert_eq!((status.running.build, status.running.eval, status.started), (1, 1, 2));
        drop((build, eval));
        assert_eq!(scheduler.status().running.build, 0);
    }

    #[test]
    fn urgent_work_goes_first_and_the_queue_is_bounded() {
        let scheduler = Arc::new(scheduler(1, 1));
        let held = scheduler.acquire(Lane::Build, &Arc::new(Work::background()), 0).unwrap();
        let (order_tx, order) = mpsc::channel();
        let more: Vec<_> = (0..14).map(|_| Arc::new(Work::for_client("192.0.2.2".parse().unwrap(), None))).collect();
        thread::scope(|s| {
            let background = Arc::new(Work::background());
            let urgent = Arc::new(Work::for_client("192.0.2.1".parse().unwrap(), None));
            for (name, work) in [("background", background.clone()), ("urgent", urgent)] {
                let (scheduler, order_tx) = (&scheduler, order_tx.clone());
                s.spawn(move || {
                    let _permit = scheduler.acquire(Lane::Build, &work, 1).unwrap();
                    order_tx.send(name).unwrap();
                });
                // The background work queues first.
                while scheduler.status().queued.build < if name == "background" { 1 } else { 2 } {
                    thread::yield_now();
                }
            }
            // 16 may wait per slot: 2 are waiting, 14 more fit, then no more.
            for work in &more {
                let scheduler = &scheduler;
                s.spawn(move || drop(scheduler.acquire(Lane::Build, work, 2)));
            }
            while scheduler.status().queued.build < 16 {
                thread::yield_now();
            }
            let refused = scheduler.acquire(Lane::Build, &Arc::new(Work::background()), 3);
            assert!(matches!(refused, Err(NixError::Busy)));
            drop(held);
        });
        assert_eq!(order.iter().take(2).collect::<Vec<_>>(), ["urgent", "background"]);
    }

    #[test]
    fn a_request_stops_waiting_at_its_deadline() {
        let scheduler = scheduler(1, 1);
        let _held = scheduler.acquire(Lane::Eval, &Arc::new(Work::background()), 0).unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let work = Arc::new(Work::for_client("192.0.2.1".parse().unwrap(), Some(deadline)));
        assert!(matches!(scheduler.acquire(Lane::Eval, &work, 1), Err(NixError::Busy)));
        assert_eq!(scheduler.status().queued.eval, 0);
    }

    #[test]
    fn the_rate_is_charged_once_per_work() {
        let scheduler = Scheduler::new(&SchedulerOptions { build_rate: 1, ..SchedulerOptions::default() });
        let client = "192.0.2.1".parse().unwrap();
        let first = Arc::new(Work::for_client(client, None));
        drop(scheduler.acquire(Lane::Eval, &first, 0).unwrap());
        drop(scheduler.acquire(Lane::Build, &first, 1).unwrap());
        let second = Arc::new(Work::for_client(client, None));
        let refused = scheduler.acquire(Lane::Eval, &second, 2);
        assert!(matches!(refused, Err(NixError::RateLimited { .. })));
        assert!(scheduler.acquire(Lane::Eval, &Arc::new(Work::background()), 3).is_ok());
    }
}
