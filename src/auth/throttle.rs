//! Failed logins per client address (IPv6 by /64, as
//! [`crate::rate_limit`] counts them). The first few are free; after each
//! further one, logins from that address are refused for a time that
//! doubles, from a second up to a minute: answered `429` with
//! `Retry-After`, without looking at the password, so that guessing goes
//! no faster than the backoff. Requests without credentials are not
//! concerned, nor are other addresses.
//!
//! An address's count is forgotten ten minutes after its last failure (a
//! successful login does not reset it, or one valid account would buy free
//! guesses at the others). The table is bounded: when full, the addresses
//! idle longest are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rate_limit::client_key;

/// Failures from one address before any wait: a few typed passwords, each
/// of which clients may send more than once (ctr sends a wrong one twice).
const FREE_FAILURES: u32 = 10;
/// The wait after the first failure past the free ones; it doubles with each further one.
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long an address's failures are remembered after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

struct Entry {
    failures: u32,
    last_failure: Instant,
    /// No login from the address is checked before this.
    blocked_until: Instant,
}

impl Throttle {
    /// Ok if a login from `client` may be checked now; else how long to wait.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.check_at(client, Instant::now())
    }

    /// Counts a failed login from `client`.
    pub fn failed(&self, client: IpAddr) {
        self.failed_at(client, Instant::now());
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let entries = self.entries.lock().unwrap();
        match entries.get(&client_key(client)) {
            Some(entry) if entry.blocked_until > now => Err(entry.blocked_until - now),
            _ => Ok(()),
        }
    }

    fn failed_at(&self, client: IpAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap();
        let key = client_key(client);
        if !entries.contains_key(&key) && entries.len() >= MAX_ADDRESSES {
            entries.retain(|_, entry| now.saturating_duration_since(entry.last_failure) < FORGET_AFTER);
            if entries.len() >= MAX_ADDRESSES {
                let stalest = entries.iter().min_by_key(|(_, entry)| entry.last_failure).map(|(key, _)| *key);
                entries.remove(&stalest.expect("the table is full"));
            }
        }
        let entry = entries.entry(key).or_insert(Entry { failures: 0, last_failure: now, blocked_until: now });
        if now.saturating_duration_since(entry.last_failure) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last_failure = now;
        entry.blocked_until = now + wait_after(entry.failures);
    }
}

/// The wait after `failures` failures.
fn wait_after(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(past) => FIRST_WAIT.saturating_mul(1u32.checked_shl(past).unwrap_or(u32::MAX)).min(MAX_WAIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_minute() {
        let waits: Vec<u64> = (FREE_FAILURES - 1..=FREE_FAILURES + 8).map(|n| wait_after(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn an_address_that_fails_waits_and_others_do_not() {
        let throttle = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed_at(a, start);
            assert_eq!(throttle.check_at(a, start), Ok(()));
        }
        throttle.failed_at(a, start);
        assert_eq!(throttle.check_at(a, start), Err(FIRST_WAIT));
        assert_eq!(throttle.check_at(b, start), Ok(()));
        let later = start + FIRST_WAIT;
        assert_eq!(throttle.check_at(a, later), Ok(()));
        throttle.failed_at(a, later);
        assert_eq!(throttle.check_at(a, later), Err(2 * FIRST_WAIT));
        // Ten minutes after the last failure the count starts again.
        let much_later = later + FORGET_AFTER;
        throttle.failed_at(a, much_later);
        assert_eq!(throttle.check_at(a, much_later), Ok(()));
    }

    #[test]
    fn the_table_is_bounded() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 + 10 {
            throttle.failed_at(IpAddr::from(i.to_be_bytes()), now + Duration::from_millis(u64::from(i)));
        }
        let entries = throttle.entries.lock().unwrap();
        assert_eq!(entries.len(), MAX_ADDRESSES);
        assert!(!entries.contains_key(&IpAddr::from(0u32.to_be_bytes())), "the stalest address stays");
    }
}
