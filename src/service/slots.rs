//! A cap on concurrent layer generation (assembling a built image, making
//! an evicted layer again), with a bound on how many may wait, and a
//! deadline for those who wait for a client.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

pub struct GenerationSlots {
    /// (running, waiting)
    state: Mutex<(usize, usize)>,
    freed: Condvar,
    max_running: usize,
    max_waiting: usize,
}

/// Held while a generation runs.
pub struct GenerationSlot<'a>(&'a GenerationSlots);

impl GenerationSlots {
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        GenerationSlots {
            state: Mutex::new((0, 0)),
            freed: Condvar::new(),
            max_running: max_running.max(1),
            max_waiting,
        }
    }

    /// Waits for a free slot until `deadline` (for ever without one); `None`
    /// when too many wait already or the deadline passed.
    pub fn acquire(&self, deadline: Option<Instant>) -> Option<GenerationSlot<'_>> {
        let mut state = self.state.lock().unwrap();
        if state.0 >= self.max_running {
            if state.1 >= self.max_waiting {
                return None;
            }
            state.1 += 1;
            while state.0 >= self.max_running {
                state = match deadline {
                    None => self.freed.wait(state).unwrap(),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            state.1 -= 1;
                            return None;
                        }
                        self.freed.wait_timeout(state, left).unwrap().0
                    }
                };
            }
            state.1 -= 1;
        }
        state.0 += 1;
        Some(GenerationSlot(self))
    }
}

impl Drop for GenerationSlot<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().0 -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slots_cap_bound_waiters_and_keep_deadlines() {
        let slots = GenerationSlots::new(1, 1);
        let held = slots.acquire(None).unwrap();
        let started = Instant::now();
        assert!(slots.acquire(Some(Instant::now() + Duration::from_millis(50))).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| slots.acquire(None).is_some());
            while slots.state.lock().unwrap().1 == 0 {
                std::thread::yield_now();
            }
            assert!(slots.acquire(None).is_none(), "a second waiter is one too many");
            drop(held);
            assert!(waiter.join().unwrap());
        });
        assert!(slots.acquire(None).is_some());
    }
}
