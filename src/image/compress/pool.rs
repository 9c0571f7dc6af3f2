//! The compression work pool: a fixed set of threads (one per core) that
//! compress blocks for every layer being generated, and a budget of blocks
//! in flight that bounds the memory they use.
//!
//! Layer generators (one thread per layer, writing its tarball) hand full
//! blocks to the pool and take the results back in order. A block holds its
//! share of the budget from the moment it is queued until both its job has
//! run and its generator has taken the result, so however many layers are
//! generated at once, at most `budget` blocks (input and output) exist.
//! Their buffers are used again while layers are being generated (fresh
//! ones would be faulted in and zeroed by the kernel for every block) and
//! freed when none is.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
}

struct Shared {
    state: Mutex<State>,
    job_queued: Condvar,
    budget: usize,
}

struct State {
    jobs: VecDeque<Job>,
    /// Blocks holding a share of the budget.
    held: usize,
    /// Buffers given back, for the next blocks: at most two per share.
    spare: Vec<Vec<u8>>,
    closed: bool,
}

/// One block's share of the pool's budget, given back when dropped.
pub struct Permit {
    shared: Arc<Shared>,
}

impl Drop for Permit {
    /// The last share given back frees the spare buffers: no layer is being generated.
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap();
        state.held -= 1;
        if state.held == 0 {
            state.spare = Vec::new();
        }
    }
}

impl Pool {
    /// `threads` workers (at least one) and a budget of two blocks per
    /// worker plus two: enough to keep every worker busy while a generator
    /// fills its next block, little enough for a board with 1 GiB of RAM.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State { jobs: VecDeque::new(), held: 0, spare: Vec::new(), closed: false }),
            job_queued: Condvar::new(),
            budget: 2 * threads + 2,
        });
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn(move || shared.work())
                .expect("cannot start a compression thread");
        }
        Pool { shared, threads }
    }

    /// The process's pool: one worker per core this process may run on.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Most blocks in flight at once, over all generators.
    pub fn budget(&self) -> usize {
        self.shared.budget
    }

    /// A share of the budget, if one is left.
    pub fn try_reserve(&self) -> Option<Permit> {
        let mut state = self.shared.state.lock().unwrap();
        if state.held >= self.shared.budget {
            return None;
        }
        state.held += 1;
        Some(Permit { shared: Arc::clone(&self.shared) })
    }

    /// An empty buffer for at least `capacity` bytes: a spare one if there is one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        let mut buffer = self.shared.state.lock().unwrap().spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.reserve(capacity);
        buffer
    }

    /// Keeps `buffer` for a later block while layers are being generated.
    pub fn give_back(&self, buffer: Vec<u8>) {
        let mut state = self.shared.state.lock().unwrap();
        if state.held > 0 && state.spare.len() < 2 * self.shared.budget {
            state.spare.push(buffer);
        }
    }

    /// Queues `job` for the next free worker.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.shared.state.lock().unwrap().jobs.push_back(Box::new(job));
        self.shared.job_queued.notify_one();
    }
}

impl Shared {
    fn work(&self) {
        loop {
            let job = {
                let mut state = self.state.lock().unwrap();
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        break job;
                    }
                    if state.closed {
                        return;
                    }
                    state = self.job_queued.wait(state).unwrap();
                }
            };
            job();
        }
    }
}

impl Drop for Pool {
    /// Workers finish the queued jobs, then stop (the global pool is never dropped).
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.job_queued.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_jobs_and_bounds_the_budget() {
        let pool = Pool::new(2);
        assert_eq!(pool.budget(), 6);
        let permits: Vec<_> = (0..6).map(|_| pool.try_reserve().expect("within the budget")).collect();
        assert!(pool.try_reserve().is_none());
        drop(permits);
        assert!(pool.try_reserve().is_some());
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            pool.spawn(move || tx.send(i).unwrap());
        }
        let mut got: Vec<i32> = (0..10).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn buffers_are_used_again_while_blocks_are_in_flight_then_freed() {
        let pool = Pool::new(1);
        let spare = || pool.shared.state.lock().unwrap().spare.len();
        let permit = pool.try_reserve().unwrap();
        let buffer = pool.buffer(1000);
        let address = buffer.as_ptr();
        pool.give_back(buffer);
        let again = pool.buffer(10);
        assert_eq!(again.as_ptr(), address, "the buffer given back");
        assert!(again.is_empty() && again.capacity() >= 1000);
        pool.give_back(again);
        assert_eq!(spare(), 1);
        drop(permit);
        assert_eq!(spare(), 0, "no block in flight: freed");
        pool.give_back(vec![0; 10]);
        assert_eq!(spare(), 0, "none kept between generations");
    }
}
