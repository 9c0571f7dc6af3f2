//! Build coordination: one build per key at a time (everyone asking for the
//! same image waits for the same build) and a global cap on concurrent builds.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex};

/// Runs a function once per key among concurrent callers and hands its
/// result to all of them.
pub struct Flights<K, V> {
    running: Mutex<HashMap<K, Arc<Flight<V>>>>,
}

struct Flight<V> {
    result: Mutex<Option<V>>,
    done: Condvar,
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    pub fn new() -> Self {
        Flights { running: Mutex::new(HashMap::new()) }
    }

    /// `work` runs unless a run for `key` is under way; then this waits for
    /// that run's result. `abandoned` is what waiters get if the run panics.
    pub fn run(&self, key: K, abandoned: V, work: impl FnOnce() -> V) -> V {
        let (flight, leader) = {
            let mut running = self.running.lock().unwrap();
            match running.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight { result: Mutex::new(None), done: Condvar::new() });
                    running.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        if !leader {
            let mut result = flight.result.lock().unwrap();
            while result.is_none() {
                result = flight.done.wait(result).unwrap();
            }
            return result.clone().expect("set before notify");
        }
        // Set on every way out, a panic included, so waiters never hang.
        let guard = Landing { flights: self, key, flight, value: Some(abandoned) };
        let value = work();
        guard.land(value)
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Default for Flights<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

struct Landing<'a, K: Eq + Hash + Clone, V: Clone> {
    flights: &'a Flights<K, V>,
    key: K,
    flight: Arc<Flight<V>>,
    value: Option<V>,
}

impl<K: Eq + Hash + Clone, V: Clone> Landing<'_, K, V> {
    fn land(mut self, value: V) -> V {
        self.value = Some(value.clone());
        value
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        self.flights.running.lock().unwrap().remove(&self.key);
        *self.flight.result.lock().unwrap() = self.value.take();
        self.flight.done.notify_all();
    }
}

/// A counting semaphore for builds, with a bound on how many may wait.
pub struct BuildSlots {
    state: Mutex<(usize, usize)>,
    freed: Condvar,
    max_running: usize,
    max_waiting: usize,
}

/// Held while a build runs.
pub struct BuildSlot<'a>(&'a BuildSlots);

impl BuildSlots {
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        BuildSlots { state: Mutex::new((0, 0)), freed: Condvar::new(), max_running: max_running.max(1), max_waiting }
    }

    /// Waits for a free slot; `None` when too many builds are waiting already.
    pub fn acquire(&self) -> Option<BuildSlot<'_>> {
        let mut state = self.state.lock().unwrap();
        if state.0 >= self.max_running {
            if state.1 >= self.max_waiting {
                return None;
            }
            state.1 += 1;
            while state.0 >= self.max_running {
                state = self.freed.wait(state).unwrap();
            }
            state.1 -= 1;
        }
        state.0 += 1;
        Some(BuildSlot(self))
    }
}

impl Drop for BuildSlot<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().0 -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_run_for_concurrent_callers() {
        let flights: Flights<&str, usize> = Flights::new();
        let runs = AtomicUsize::new(0);
        let results: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        flights.run("img", 0, || {
                            std::thread::sleep(Duration::from_millis(100));
                            runs.fetch_add(1, Ordering::SeqCst) + 1
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|&r| r == 1));
        // The next call after the flight landed runs again.
        assert_eq!(flights.run("img", 0, || 7), 7);
    }

    #[test]
    fn panicking_run_releases_waiters() {
        let flights: Flights<u8, Result<u8, &str>> = Flights::new();
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    flights.run(1, Err("abandoned"), || {
                        std::thread::sleep(Duration::from_millis(100));
                        panic!("boom")
                    })
                }))
            });
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(flights.run(1, Err("abandoned"), || Ok(2)), Err("abandoned"));
            assert!(leader.join().unwrap().is_err());
        });
    }

    #[test]
    fn slots_cap_and_bound_waiters() {
        let slots = BuildSlots::new(1, 0);
        let held = slots.acquire().unwrap();
        assert!(slots.acquire().is_none());
        drop(held);
        assert!(slots.acquire().is_some());
    }
}
