//! The one batch handler, for Lambda's SQS batches and for the local worker loop alike.

use async_trait::async_trait;
use std::collections::HashSet;
use std::time::Duration;

/// How long a failed job waits before its next try, by how often it was received: 30 s,
/// doubling, at most 2 hours. With [`crate::app::MAX_RECEIVES`] (24) receives before the
/// dead-letter queue, the outage budget is 30 s + 1 + 2 + 4 + 8 + 16 + 32 + 64 min (2 h 7 min
/// 30 s over 8 tries) plus 16 tries 2 hours apart: about 34 hours. A Mattermost outage of up to
/// a day loses nothing; its jobs go through when it is back.
pub fn retry_delay(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(16);
    Duration::from_secs(30).saturating_mul(1 << doublings).min(Duration::from_secs(2 * 3600))
}

/// One queued message as the handler sees it, whatever queue it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    pub group_id: Option<String>,
    pub receive_count: u32,
}

/// Why a job was not done. Either way the message is reported as failed and comes back (and
/// lands in the dead-letter queue after too many tries): nothing accepted is dropped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying: the store or Mattermost was unavailable, rate-limited, ...
    #[error("{0}")]
    Transient(String),
    /// Will never succeed as it is (malformed body, missing alert); kept for inspection.
    #[error("{0}")]
    Poison(String),
}

#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn handle(&self, record: &Record) -> Result<(), JobError>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Message ids to report as failed (Lambda's `batchItemFailures`; left on the queue locally).
    pub failed: Vec<String>,
}

/// Processes records in order. When a record fails, later records of the same FIFO group are
/// not attempted and are reported as failed too, so a group never gets ahead of itself
/// ("Resolved" can never be posted above "Created"). Other groups carry on.
pub async fn handle_batch(handler: &dyn JobHandler, records: &[Record]) -> BatchReport {
    let mut failed_groups: HashSet<&str> = HashSet::new();
    let mut report = BatchReport::default();
    for r in records {
        if let Some(g) = r.group_id.as_deref()
            && failed_groups.contains(g)
        {
            report.failed.push(r.message_id.clone());
            continue;
        }
        match handler.handle(r).await {
            Ok(()) => {}
            Err(e) => {
                match &e {
                    JobError::Transient(m) => {
                        tracing::warn!(message_id = %r.message_id, group = ?r.group_id, receive_count = r.receive_count, error = %m, "job failed; it will be retried")
                    }
                    JobError::Poison(m) => {
                        tracing::error!(message_id = %r.message_id, group = ?r.group_id, receive_count = r.receive_count, error = %m, "job cannot be processed; it will end in the dead-letter queue")
                    }
                }
                report.failed.push(r.message_id.clone());
                if let Some(g) = r.group_id.as_deref() {
                    failed_groups.insert(g);
                }
            }
        }
    }
    report
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
        assert_eq!(*h.seen.lock().unwrap(), ["a1", "b1", "a2", "b2"], "a3 was never attempted");
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
        assert_eq!(retry_delay(1), Duration::from_secs(30));
        assert_eq!(retry_delay(2), Duration::from_secs(60));
        assert_eq!(retry_delay(9), Duration::from_secs(2 * 3600));
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
