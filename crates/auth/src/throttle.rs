//! Failed-login throttling per client address, in memory.
//!
//! Each address keeps the times of its recent failures. Once it has
//! `limit` failures within `window`, it is blocked until the oldest of them
//! leaves the window: the service then answers TempFail without looking at
//! the password. A success clears the address's record.
//!
//! SECURITY: the table is bounded ([`MAX_ADDRESSES`]); when full, expired
//! records are pruned and, if still full, the oldest record is dropped,
//! so a flood of addresses cannot exhaust memory.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;

/// The failure records of one auth process.
#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    window: Duration,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    /// `limit` failures within `window` block an address; a limit of 0
    /// turns throttling off.
    pub fn new(limit: usize, window: Duration) -> Throttle {
        Throttle {
            limit,
            window,
            failures: HashMap::new(),
        }
    }

    fn expire(&mut self, addr: &str, now: Instant) {
        if let Some(q) = self.failures.get_mut(addr) {
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
            {
                q.pop_front();
            }
            if q.is_empty() {
                self.failures.remove(addr);
            }
        }
    }

    /// Is `addr` blocked now?
    pub fn blocked(&mut self, addr: &str, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        self.expire(addr, now);
        self.failures
            .get(addr)
            .is_some_and(|q| q.len() >= self.limit)
    }

    /// Records a failed login from `addr`.
    pub fn failure(&mut self, addr: &str, now: Instant) {
        if self.limit == 0 {
            return;
        }
        if !self.failures.contains_key(addr) && self.failures.len() >= MAX_ADDRESSES {
            let window = self.window;
            self.failures.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            if self.failures.len() >= MAX_ADDRESSES {
                let oldest = self
                    .failures
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.failures.remove(&k);
                }
            }
        }
        let q = self.failures.entry(addr.to_string()).or_default();
        q.push_back(now);
        while q.len() > self.limit {
            q.pop_front();
        }
    }

    /// Records a successful login: the address starts afresh.
    pub fn success(&mut self, addr: &str) {
        self.failures.remove(addr);
    }

    /// How many addresses have records (for tests).
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_within_window_and_recovers() {
        let t0 = Instant::now();
        let mut t = Throttle::new(3, Duration::from_secs(60));
        for i in 0..3 {
            assert!(!t.blocked("192.0.2.1", t0), "after {i} failures");
            t.failure("192.0.2.1", t0 + Duration::from_secs(i));
        }
        assert!(t.blocked("192.0.2.1", t0 + Duration::from_secs(3)));
        assert!(
            !t.blocked("192.0.2.2", t0),
            "other addresses are not affected"
        );
        // The first failure leaves the window at t0+60.
        assert!(!t.blocked("192.0.2.1", t0 + Duration::from_secs(60)));
        t.failure("192.0.2.1", t0 + Duration::from_secs(60));
        assert!(t.blocked("192.0.2.1", t0 + Duration::from_secs(60)));
        t.success("192.0.2.1");
        assert!(!t.blocked("192.0.2.1", t0 + Duration::from_secs(60)));
    }

    #[test]
    fn zero_limit_is_off_and_table_is_bounded() {
        let now = Instant::now();
        let mut off = Throttle::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.failure("a", now);
        }
        assert!(!off.blocked("a", now));
        let mut t = Throttle::new(2, Duration::from_secs(60));
        for i in 0..(MAX_ADDRESSES + 5) {
            t.failure(&format!("10.0.{}.{}", i / 256, i % 256), now);
        }
        assert!(t.tracked() <= MAX_ADDRESSES);
    }
}
