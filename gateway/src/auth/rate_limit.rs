//! In-memory token buckets for sign-in and sign-up attempts, per client address and per email.
//!
//! Each key gets `capacity` attempts, refilled evenly over `window` (so `capacity` per window
//! on average, with bursts up to `capacity`). In memory and per process: behind several Ripple
//! replicas each enforces its own share, which is enough to make guessing passwords slow.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Entries kept before idle (full) buckets are swept, so a flood of distinct keys cannot grow
/// memory without bound.
const SWEEP_AT: usize = 100_000;

pub struct RateLimiter {
    capacity: f64,
    per_sec: f64,
    buckets: DashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are addresses and emails: never printed.
        f.debug_struct("RateLimiter")
            .field("capacity", &self.capacity)
            .field("keys", &self.buckets.len())
            .finish()
    }
}

impl RateLimiter {
    /// `capacity` attempts per `window`; a capacity of 0 turns the limit off.
    pub fn new(capacity: u32, window: Duration) -> Self {
        let window = window.as_secs_f64().max(0.001);
        Self {
            capacity: f64::from(capacity),
            per_sec: f64::from(capacity) / window,
            buckets: DashMap::new(),
        }
    }

    /// Takes one attempt for `key`; false when its bucket is empty (the attempt is refused and
    /// costs nothing).
    pub fn try_take(&self, key: &str) -> bool {
        self.try_take_at(key, Instant::now())
    }

    fn try_take_at(&self, key: &str, now: Instant) -> bool {
        if self.capacity == 0.0 {
            return true;
        }
        if self.buckets.len() >= SWEEP_AT {
            self.sweep(now);
        }
        let mut bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely: forgetting them changes nothing.
    fn sweep(&self, now: Instant) {
        let (capacity, per_sec) = (self.capacity, self.per_sec);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_sec < capacity
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_capacity_then_waits_for_the_refill() {
        let rl = RateLimiter::new(3, Duration::from_secs(3));
        let t0 = Instant::now();
        assert!((0..3).all(|_| rl.try_take_at("a", t0)));
        assert!(!rl.try_take_at("a", t0));
        // Another key has its own bucket.
        assert!(rl.try_take_at("b", t0));
        // One attempt comes back per second.
        assert!(!rl.try_take_at("a", t0 + Duration::from_millis(900)));
        assert!(rl.try_take_at("a", t0 + Duration::from_millis(1900)));
        assert!(!rl.try_take_at("a", t0 + Duration::from_millis(1950)));
        // Never more than the capacity, however long the wait.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| rl.try_take_at("a", later)));
        assert!(!rl.try_take_at("a", later));
    }

    #[test]
    fn capacity_zero_is_no_limit() {
        let rl = RateLimiter::new(0, Duration::from_secs(1));
        assert!((0..1000).all(|_| rl.try_take("x")));
    }

    #[test]
    fn sweeping_forgets_only_full_buckets() {
        let rl = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(rl.try_take_at("used", t0));
        assert!(rl.try_take_at("idle", t0));
        rl.sweep(t0 + Duration::from_secs(6));
        // "idle" and "used" both refilled in 5 s: both forgotten.
        assert_eq!(rl.buckets.len(), 0);
        assert!(rl.try_take_at("used", t0 + Duration::from_secs(6)));
        assert!(rl.try_take_at("used", t0 + Duration::from_secs(6)));
        rl.sweep(t0 + Duration::from_secs(6));
        assert_eq!(rl.buckets.len(), 1, "an emptied bucket is kept");
    }
}
