//! Intake yields to a notifier that falls behind (`klaxon serve` on the embedded store).
//!
//! In an alert storm the HTTP intake and the notifier share the machine's cores. Left alone,
//! the faster intake takes the CPU the notifier needs, and cards fall further behind the
//! longer the storm lasts (measured: 342,103 alerts taken in a 60 s storm, the last card 23 s
//! after its end). So while the notifier is more than [`TARGET`] behind (the oldest job it
//! picks up waited that long) and still finishing jobs, and the machine's CPUs are saturated
//! (busy nine tenths of the time or more, see [`cpu`]), each intake request first waits a
//! little, more the further behind the notifier is, up to [`MAX_DELAY`]. Senders that wait for
//! their answer then send less, the notifier gets the CPU, and the lag settles near the
//! target: an alert accepted is on its card a second or two later. Nothing is refused, and no
//! request waits longer than [`MAX_DELAY`] for this.
//!
//! A notifier that is behind because its calls wait (a Mattermost that answers slowly or not at
//! all) is not waited for: a slower intake would not help it, and the CPUs then have time to
//! spare (measured: with a tenth of Mattermost's answers failing or hanging, yielding to the
//! lag alone cut a storm's intake from 5,645 to 1,664 alerts/s). On AWS the notifier Lambda
//! scales on its own and intake is never paced.

pub mod cpu;

use crate::queue::backlog::Backlog;
use cpu::Cpu;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How far behind the notifier may fall before intake yields to it.
pub const TARGET: Duration = Duration::from_secs(1);
/// The longest an intake request waits for the notifier.
pub const MAX_DELAY: Duration = Duration::from_millis(50);
/// 1 ms of waiting per this much lag beyond [`TARGET`]: at 64 senders that wait for their
/// answers, a few ms per request slow a storm by the fifth or so that the notifier needs, so
/// the lag settles a few hundred ms above the target.
const LAG_PER_MS: Duration = Duration::from_millis(50);

/// How long an intake request waits when the notifier is `lag` behind.
pub fn delay_for(lag: Duration) -> Duration {
    let beyond = lag.saturating_sub(TARGET);
    let ms = beyond.as_millis() / LAG_PER_MS.as_millis();
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)).min(MAX_DELAY)
}

/// Says once a minute that intake is paced, with how many requests were since.
static PACED: std::sync::LazyLock<crate::telemetry::Throttle> =
    std::sync::LazyLock::new(crate::telemetry::Throttle::per_minute);

/// What intake yields to: the notify queue's backlog, when the queue can tell (the embedded one).
#[derive(Debug, Clone, Default)]
pub struct Pace {
    backlog: Option<Arc<Backlog>>,
    cpu: Arc<Cpu>,
    /// Requests that waited, since the start.
    paced: Arc<AtomicU64>,
}

impl Pace {
    /// Intake that never waits (SQS, whose notifier Lambda scales on its own).
    pub fn never() -> Self {
        Pace::default()
    }

    /// Intake that yields to the consumers of the queue `backlog` belongs to, while the
    /// machine's CPUs are saturated.
    pub fn by(backlog: Arc<Backlog>) -> Self {
        Pace { backlog: Some(backlog), ..Pace::default() }
    }

    /// The same, taking the CPUs as always (`true`) or never saturated instead of reading them.
    pub fn assuming_cpu_saturated(self, saturated: bool) -> Self {
        Pace { cpu: Arc::new(Cpu::assumed(saturated)), ..self }
    }

    /// How many requests waited since the start.
    pub fn paced(&self) -> u64 {
        self.paced.load(Ordering::Relaxed)
    }

    /// How long a request would wait now.
    pub fn delay(&self) -> Duration {
        let delay = self.backlog.as_ref().and_then(|b| b.behind()).map_or(Duration::ZERO, delay_for);
        // The CPUs are read only when the lag alone would make a request wait.
        if delay.is_zero() || !self.cpu.saturated() { Duration::ZERO } else { delay }
    }

    /// Waits as long as [`Pace::delay`] says.
    pub async fn wait(&self) {
        let delay = self.delay();
        if delay.is_zero() {
            return;
        }
        self.paced.fetch_add(1, Ordering::Relaxed);
        if let Some(like_this) = PACED.admit("paced") {
            let lag_ms = self.backlog.as_ref().and_then(|b| b.behind()).map_or(0, |l| l.as_millis() as u64);
            tracing::info!(
                notifier_lag_ms = lag_ms,
                wait_ms = delay.as_millis() as u64,
                like_this_since_last = like_this,
                "intake yields to the notifier, which is behind (one line a minute; the requests paced since are counted)"
            );
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wait_within_the_target_then_more_the_further_behind_up_to_the_limit() {
        assert_eq!(delay_for(Duration::ZERO), Duration::ZERO);
        assert_eq!(delay_for(TARGET), Duration::ZERO);
        assert_eq!(delay_for(TARGET + Duration::from_millis(49)), Duration::ZERO);
        assert_eq!(delay_for(TARGET + Duration::from_millis(200)), Duration::from_millis(4));
        assert_eq!(delay_for(TARGET + Duration::from_millis(1_000)), Duration::from_millis(20));
        assert_eq!(delay_for(Duration::from_secs(60)), MAX_DELAY);
        assert_eq!(delay_for(Duration::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_while_the_notifier_is_behind_and_not_once_it_keeps_up() {
        let backlog = Arc::new(Backlog::behind_by(Duration::from_secs(3)));
        let pace = Pace::by(backlog.clone()).assuming_cpu_saturated(true);
        assert_eq!(pace.delay(), Duration::from_millis(40));
        assert_eq!(pace.clone().assuming_cpu_saturated(false).delay(), Duration::ZERO, "CPU to spare: no wait");
        let started = tokio::time::Instant::now();
        pace.wait().await;
        assert_eq!(started.elapsed(), Duration::from_millis(40), "the paused clock moved by the wait");
        backlog.received(None);
        let started = tokio::time::Instant::now();
        pace.wait().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(pace.paced(), 1);
    }

    #[test]
    fn intake_without_a_backlog_to_read_never_waits() {
        assert_eq!(Pace::never().delay(), Duration::ZERO);
        assert_eq!(Pace::by(Arc::default()).delay(), Duration::ZERO, "a gauge nobody set");
    }
}
