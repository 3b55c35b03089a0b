//! Jittered exponential backoff for optimistic retries.
//!
//! When two writers collide on one item (a conditional write that lost, DynamoDB's
//! `TransactionConflict`), retrying at once makes them collide again. Each retry waits a random
//! time up to a ceiling that doubles per attempt ("full jitter"), so colliding writers spread
//! out instead of marching in step.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
    /// How many tries in all (the first one included).
    pub attempts: u32,
}

impl Backoff {
    /// For a contended alert or counter: 10 tries, waits of up to 5, 10, 20, ... 250 ms, about
    /// 1.3 s in the worst case, well inside a request's deadline.
    pub const CONTENDED_WRITE: Backoff =
        Backoff { base: Duration::from_millis(5), cap: Duration::from_millis(250), attempts: 10 };

    /// The wait before retry number `retry` (1 for the first retry): random in [0, ceiling].
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << retry.saturating_sub(1).min(16)).min(self.cap);
        ceiling.mul_f64(random_unit())
    }

    /// Sleeps before retry number `retry`.
    pub async fn wait(&self, retry: u32) {
        tokio::time::sleep(self.delay(retry)).await;
    }
}

/// A uniform random number in [0, 1), from the operating system's generator (through uuid v4,
/// which the crate already uses for ids).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_and_the_cap() {
        let b = Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(50), attempts: 5 };
        for _ in 0..200 {
            assert!(b.delay(1) <= Duration::from_millis(10));
            assert!(b.delay(2) <= Duration::from_millis(20));
            assert!(b.delay(3) <= Duration::from_millis(40));
            assert!(b.delay(9) <= Duration::from_millis(50));
        }
    }

    #[test]
    fn delays_are_spread_out_not_in_step() {
        let b = Backoff::CONTENDED_WRITE;
        let delays: std::collections::HashSet<Duration> = (0..50).map(|_| b.delay(4)).collect();
        assert!(delays.len() > 40, "jitter gives (almost) every retry its own wait: {}", delays.len());
    }
}
