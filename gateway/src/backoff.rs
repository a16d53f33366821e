//! The one retry schedule every loop that waits on something outside uses (the replication
//! start and reconnects, the pump's authorization retries, a slot still in use, the accept
//! loop): exponential from a first wait, capped, and back to the first after a success.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    attempt: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
            attempt: 0,
        }
    }

    /// The wait before the next attempt (the one after waits twice as long, up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = delay.saturating_mul(2).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Waits [`Self::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Attempts waited for since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// It worked: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(b.attempt(), 5);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.attempt(), 1);
    }
}
