//! Running a function once per key among concurrent callers (a "single
//! flight"): everyone asking for the same thing at the same time waits for
//! the same run and gets its result.

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
}
