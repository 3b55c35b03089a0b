//! How far behind a queue's consumers are, as the embedded queue sees it: the age of the oldest
//! never received message each receive hands out, and when a consumer last finished a message.
//! Intake reads it to yield to a notifier that falls behind (see [`crate::ingest::pace`]).
//!
//! A gauge, not a record: it is set by receives and deletions as they happen (one receive's
//! transaction rolled back leaves a measurement that was true a moment ago), and costs two
//! atomic stores per receive.

use super::mono_ms;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A measurement older than this says nothing about now: the consumers stopped receiving
/// (every notifier loop waiting for a Mattermost that does not answer, say).
pub const FRESH: Duration = Duration::from_secs(1);

/// Never set: the times below start here, so that "never" is older than any [`FRESH`].
const NEVER: i64 = i64::MIN / 2;

/// One queue's backlog gauge, shared by the clones of the queue (every notifier loop).
#[derive(Debug)]
pub struct Backlog {
    /// How long the oldest never received message the latest receive handed out had waited
    /// (milliseconds); 0 when that receive found nothing new to hand out.
    lag_ms: AtomicI64,
    /// When ([`mono_ms`]) `lag_ms` was measured.
    measured_at: AtomicI64,
    /// When a consumer last deleted a message it had finished.
    finished_at: AtomicI64,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog { lag_ms: AtomicI64::new(0), measured_at: AtomicI64::new(NEVER), finished_at: AtomicI64::new(NEVER) }
    }
}

impl Backlog {
    /// A receive handed out never received messages, the oldest sent `waited` ago; `None`: it
    /// found none (the consumers are keeping up).
    pub(crate) fn received(&self, waited: Option<Duration>) {
        self.received_at(waited, mono_ms());
    }

    fn received_at(&self, waited: Option<Duration>, now: i64) {
        let lag = waited.map_or(0, |w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX));
        self.lag_ms.store(lag, Ordering::Relaxed);
        self.measured_at.store(now, Ordering::Relaxed);
    }

    /// A consumer deleted messages it had finished.
    pub(crate) fn finished(&self) {
        self.finished_at.store(mono_ms(), Ordering::Relaxed);
    }

    #[cfg(test)]
    fn finished_at(&self, now: i64) {
        self.finished_at.store(now, Ordering::Relaxed);
    }

    /// A gauge whose consumers are `lag` behind right now, working through their backlog.
    #[cfg(test)]
    pub(crate) fn behind_by(lag: Duration) -> Backlog {
        let b = Backlog::default();
        b.finished();
        b.received(Some(lag));
        b
    }

    /// How far behind the consumers are while they are working through a backlog: the lag of
    /// the latest receive, when it was measured within [`FRESH`] and a message was finished
    /// within it too. `None` when they are keeping up, and when they are not getting anywhere
    /// (no receive or no finished message lately: a slower intake would not help them).
    pub fn behind(&self) -> Option<Duration> {
        self.behind_at(mono_ms())
    }

    fn behind_at(&self, now: i64) -> Option<Duration> {
        let fresh = i64::try_from(FRESH.as_millis()).unwrap_or(i64::MAX);
        let recent = |at: &AtomicI64| now.saturating_sub(at.load(Ordering::Relaxed)) <= fresh;
        if !recent(&self.measured_at) || !recent(&self.finished_at) {
            return None;
        }
        let lag = self.lag_ms.load(Ordering::Relaxed);
        (lag > 0).then(|| Duration::from_millis(lag.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_gauge_says_nothing() {
        assert_eq!(Backlog::default().behind_at(0), None);
        assert_eq!(Backlog::default().behind_at(mono_ms()), None);
    }

    #[test]
    fn consumers_working_through_a_backlog_are_behind_by_the_latest_receives_lag() {
        let b = Backlog::default();
        b.finished_at(10_000);
        b.received_at(Some(Duration::from_millis(2_500)), 10_000);
        assert_eq!(b.behind_at(10_500), Some(Duration::from_millis(2_500)));
        b.received_at(Some(Duration::from_millis(300)), 10_600);
        assert_eq!(b.behind_at(10_700), Some(Duration::from_millis(300)));
        b.received_at(None, 10_800);
        assert_eq!(b.behind_at(10_900), None, "a receive that found nothing new: keeping up");
    }

    #[test]
    fn consumers_that_stopped_receiving_or_finishing_are_not_reported_behind() {
        let b = Backlog::default();
        b.finished_at(10_000);
        b.received_at(Some(Duration::from_secs(5)), 10_000);
        assert!(b.behind_at(11_000).is_some());
        assert_eq!(b.behind_at(11_001), None, "no receive for over a second");
        b.received_at(Some(Duration::from_secs(6)), 20_000);
        assert_eq!(b.behind_at(20_000), None, "receiving, but nothing finished for ten seconds");
    }
}
