//! The one batch handler, for Lambda's SQS batches and for the local worker loop alike.

use crate::queue::{OutgoingMessage, Queue, QueueError, ReceivedMessage};
use async_trait::async_trait;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::time::Duration;

/// How long a failed job waits before its next try, by how often it was received: 5 s,
/// doubling, at most 2 hours. With [`crate::app::MAX_RECEIVES`] (24) receives before the
/// dead-letter queue, the outage budget is 5 s doubling over 11 tries (2 h 50 min) plus 12
/// tries 2 hours apart: about 27 hours. A Mattermost outage of up to a day loses nothing; its
/// jobs go through when it is back. The first retries are quick on purpose: a card whose create
/// failed halfway is retried within the 30 s in which Mattermost still answers its
/// `pending_post_id` with the post it made, so a busy channel never gets it twice.
pub fn retry_delay(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(16);
    Duration::from_secs(5).saturating_mul(1 << doublings).min(Duration::from_secs(2 * 3600))
}

/// One queued message as the handler sees it, whatever queue it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    pub group_id: Option<String>,
    pub receive_count: u32,
}

impl From<&ReceivedMessage> for Record {
    fn from(m: &ReceivedMessage) -> Self {
        Record {
            message_id: m.message_id.clone(),
            body: m.body.clone(),
            group_id: m.group_id.clone(),
            receive_count: m.receive_count,
        }
    }
}

/// Why a job was not done.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying: the store or Mattermost was unavailable, rate-limited, ... The message
    /// comes back later (and lands in the dead-letter queue after too many tries).
    #[error("{0}")]
    Transient(String),
    /// Will never succeed as it is (malformed body, missing alert): the message is set aside in
    /// the dead-letter queue at once, for inspection and `klaxon deliveries redrive`, so that it
    /// does not hold up the jobs behind it.
    #[error("{0}")]
    Poison(String),
}

#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn handle(&self, record: &Record) -> Result<(), JobError>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Message ids to retry later (Lambda's `batchItemFailures`; left on the queue locally).
    pub failed: Vec<String>,
    /// Message ids that can never be processed: to move to the dead-letter queue now.
    pub poisoned: Vec<String>,
}

/// Processes a batch: each FIFO group's records in order, different groups (and records
/// without a group) concurrently, so one slow Mattermost call does not hold up other alerts.
/// When a record fails, later records of the same group are not attempted and are reported as
/// failed too, so a group never gets ahead of itself ("Resolved" can never be posted above
/// "Created"). A poisoned record does not stop its group: it never will succeed, and it is kept
/// in the dead-letter queue.
pub async fn handle_batch(handler: &dyn JobHandler, records: &[Record]) -> BatchReport {
    let mut lanes: Vec<Vec<&Record>> = Vec::new();
    let mut lane_of: HashMap<&str, usize> = HashMap::new();
    for r in records {
        match r.group_id.as_deref() {
            Some(g) => match lane_of.get(g) {
                Some(&i) => lanes[i].push(r),
                None => {
                    lane_of.insert(g, lanes.len());
                    lanes.push(vec![r]);
                }
            },
            None => lanes.push(vec![r]),
        }
    }
    let outcomes = join_all(lanes.into_iter().map(|lane| run_lane(handler, lane))).await;
    let mut report = BatchReport::default();
    // Report in the batch's order, whatever order the lanes finished in.
    let by_id: HashMap<&str, Outcome> = outcomes.into_iter().flatten().collect();
    for r in records {
        match by_id.get(r.message_id.as_str()) {
            Some(Outcome::Done) => {}
            Some(Outcome::Poisoned) => report.poisoned.push(r.message_id.clone()),
            Some(Outcome::Failed) | None => report.failed.push(r.message_id.clone()),
        }
    }
    report
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Done,
    Failed,
    Poisoned,
}

/// In a Mattermost outage every job fails alike: one line per error a minute, not one per job.
static RETRIED: std::sync::LazyLock<crate::telemetry::Throttle> =
    std::sync::LazyLock::new(crate::telemetry::Throttle::per_minute);

/// One group's records, in order; after a failure the rest are failed without being tried.
async fn run_lane<'a>(handler: &dyn JobHandler, lane: Vec<&'a Record>) -> Vec<(&'a str, Outcome)> {
    let mut out = Vec::with_capacity(lane.len());
    let mut blocked = false;
    for r in lane {
        if blocked {
            out.push((r.message_id.as_str(), Outcome::Failed));
            continue;
        }
        let outcome = match handler.handle(r).await {
            Ok(()) => Outcome::Done,
            Err(JobError::Transient(m)) => {
                if let Some(left_out) = RETRIED.admit(&m) {
                    tracing::warn!(message_id = %r.message_id, group = ?r.group_id, receive_count = r.receive_count, error = %m, like_this_since_last = left_out, "job failed; it will be retried (one line per error a minute; the others are counted)");
                }
                blocked = true;
                Outcome::Failed
            }
            Err(JobError::Poison(m)) => {
                tracing::error!(message_id = %r.message_id, group = ?r.group_id, error = %m, "job cannot be processed; it is set aside in the dead-letter queue (`klaxon deliveries` lists it)");
                Outcome::Poisoned
            }
        };
        out.push((r.message_id.as_str(), outcome));
    }
    out
}

/// Moves a message that can never be processed to `queue`'s dead-letter queue, with its body
/// and group, so that `klaxon deliveries` lists it and `redrive` can send it back once a fixed
/// version runs. The copy's deduplication id is the message id, so setting aside twice (a crash
/// before the original was deleted) leaves one copy. Returns false when the queue has no
/// dead-letter queue: then the message stays and is retried like a failure.
pub async fn set_aside(queue: &dyn Queue, record: &Record) -> Result<bool, QueueError> {
    let Some(dlq) = queue.dead_letter_queue().await? else { return Ok(false) };
    let message = match &record.group_id {
        Some(group) => OutgoingMessage::fifo(record.body.clone(), group.clone(), record.message_id.clone()),
        None => OutgoingMessage::standard(record.body.clone()),
    };
    dlq.send(message).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails the bodies it is told to, and remembers what it was asked to do.
    struct Scripted {
        fail: Vec<&'static str>,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl JobHandler for Scripted {
        async fn handle(&self, r: &Record) -> Result<(), JobError> {
            self.seen.lock().unwrap().push(r.body.clone());
            if self.fail.contains(&r.body.as_str()) { Err(JobError::Transient("boom".into())) } else { Ok(()) }
        }
    }

    fn rec(id: &str, group: Option<&str>) -> Record {
        Record { message_id: id.into(), body: id.into(), group_id: group.map(String::from), receive_count: 1 }
    }

    #[tokio::test]
    async fn a_failure_stops_its_group_but_not_the_others() {
        let h = Scripted { fail: vec!["a2"], seen: Mutex::new(vec![]) };
        let records = [
            rec("a1", Some("A")),
            rec("b1", Some("B")),
            rec("a2", Some("A")),
            rec("a3", Some("A")),
            rec("b2", Some("B")),
        ];
        let report = handle_batch(&h, &records).await;
        assert_eq!(report.failed, ["a2", "a3"]);
        let mut seen = h.seen.lock().unwrap().clone();
        assert!(!seen.contains(&"a3".to_string()), "a3 was never attempted");
        let a: Vec<_> = seen.iter().filter(|s| s.starts_with('a')).cloned().collect();
        assert_eq!(a, ["a1", "a2"], "a group runs in order");
        seen.sort();
        assert_eq!(seen, ["a1", "a2", "b1", "b2"]);
    }

    /// Holds every record at a barrier for `n`: passes only if `n` records run at once.
    struct Together(tokio::sync::Barrier);

    #[async_trait]
    impl JobHandler for Together {
        async fn handle(&self, _r: &Record) -> Result<(), JobError> {
            self.0.wait().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn different_groups_run_at_the_same_time() {
        let h = Together(tokio::sync::Barrier::new(3));
        let records = [rec("a1", Some("A")), rec("b1", Some("B")), rec("t1", None)];
        // Run one at a time, the first would wait at the barrier for ever.
        let report = tokio::time::timeout(Duration::from_secs(10), handle_batch(&h, &records))
            .await
            .expect("the three lanes ran concurrently");
        assert_eq!(report, BatchReport::default());
    }

    /// Poisons the bodies it is told to.
    struct Poisoned(&'static str);

    #[async_trait]
    impl JobHandler for Poisoned {
        async fn handle(&self, r: &Record) -> Result<(), JobError> {
            if r.body == self.0 { Err(JobError::Poison("not a job".into())) } else { Ok(()) }
        }
    }

    #[tokio::test]
    async fn a_poisoned_record_is_reported_apart_and_does_not_stop_its_group() {
        let records = [rec("a1", Some("A")), rec("a2", Some("A")), rec("a3", Some("A"))];
        let report = handle_batch(&Poisoned("a2"), &records).await;
        assert_eq!(report, BatchReport { failed: vec![], poisoned: vec!["a2".into()] });
    }

    #[tokio::test]
    async fn records_without_a_group_fail_alone() {
        let h = Scripted { fail: vec!["t1"], seen: Mutex::new(vec![]) };
        let report = handle_batch(&h, &[rec("t1", None), rec("t2", None)]).await;
        assert_eq!(report.failed, ["t1"]);
        assert_eq!(h.seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_retry_delays_add_up_to_more_than_a_day_within_the_receive_limit() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(12), Duration::from_secs(2 * 3600));
        assert_eq!(retry_delay(100), Duration::from_secs(2 * 3600));
        let budget: Duration = (1..crate::app::MAX_RECEIVES).map(retry_delay).sum();
        assert!(budget > Duration::from_secs(24 * 3600), "{budget:?}");
    }

    #[tokio::test]
    async fn an_all_good_batch_reports_nothing() {
        let h = Scripted { fail: vec![], seen: Mutex::new(vec![]) };
        assert_eq!(handle_batch(&h, &[rec("x", Some("g"))]).await, BatchReport::default());
    }
}
