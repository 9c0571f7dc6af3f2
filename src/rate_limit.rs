//! A rate per client address: a token bucket for each address (each IPv6
//! /64, which one host usually has whole), refilled continuously, with a
//! burst as large as a minute's worth. Buckets that are full again are
//! forgotten, so the table holds only clients that were busy lately.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before full ones are swept out.
const SWEEP_AT: usize = 4096;

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_minute` of 0 means no limit.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `client`, or says how long until one is there.
    pub fn take(&self, client: IpAddr) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let (capacity, per_second) = (f64::from(self.per_minute), f64::from(self.per_minute) / 60.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity);
        }
        let bucket = buckets.entry(client_key(client)).or_insert(Bucket { tokens: capacity, updated: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

/// What a client address is counted as: IPv4 addresses (also IPv4-mapped
/// IPv6 ones) as they are, IPv6 by /64.
pub fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_burst_then_waits() {
        let limiter = RateLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.take(a), Ok(()));
        }
        let wait = limiter.take(a).unwrap_err();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(limiter.take(b), Ok(()));
    }

    #[test]
    fn ipv6_hosts_share_their_64() {
        let limiter = RateLimiter::new(1);
        assert_eq!(limiter.take("2001:db8::1".parse().unwrap()), Ok(()));
        assert!(limiter.take("2001:db8::2".parse().unwrap()).is_err());
        assert_eq!(limiter.take("2001:db8:0:1::1".parse().unwrap()), Ok(()));
        assert!(limiter.take("::ffff:192.0.2.9".parse().unwrap()).is_ok());
        assert!(limiter.take("192.0.2.9".parse().unwrap()).is_err());
    }

    #[test]
    fn zero_is_no_limit() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(limiter.take("192.0.2.1".parse().unwrap()).is_ok());
        }
    }
}
