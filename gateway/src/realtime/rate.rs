//! Token buckets for what clients send (broadcasts, presence updates): a steady rate with
//! one second of burst, so a flood is cut to the rate without punishing a short spike.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Bucket {
    /// Events per second; 0 means no limit.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(per_second: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    /// Takes one event's token; false when the rate is exceeded (nothing is taken then).
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_one_second_then_the_steady_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 10);
        // Half a second later, five more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 5);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 10);
        let mut unlimited = Bucket::new(0);
        assert!((0..10_000).all(|_| unlimited.take(t0)));
    }
}
