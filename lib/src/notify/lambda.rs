//! The notifier Lambda's glue: SQS event in, partial batch response out.

use super::batch::{JobHandler, Record, handle_batch, retry_delay, set_aside};
use super::outbox::{Outbox, RelayError};
use crate::escalation::timers::Escalator;
use crate::incidents::mirror::ChannelReader;
use crate::queue::Queue;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use std::sync::Arc;
use std::time::Duration;

/// Jobs younger than this are left to the request that wrote them.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SqsEventError {
    #[error("the notifier was invoked with an event that is neither an SQS batch nor a schedule tick: {0}")]
    UnknownEvent(String),
    #[error("the outbox sweep failed: {0}; the next tick retries it")]
    Sweep(#[from] RelayError),
    /// Lambda treats an empty `itemIdentifier` as "the whole batch failed", so a record without
    /// a message id fails the invocation explicitly instead.
    #[error("SQS record {index} has no messageId, so it cannot be reported; failing the whole batch for a retry")]
    MissingMessageId { index: usize },
}

pub fn records(event: &SqsEvent) -> Result<Vec<Record>, SqsEventError> {
    event
        .records
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let message_id =
                m.message_id.clone().filter(|id| !id.is_empty()).ok_or(SqsEventError::MissingMessageId { index })?;
            Ok(Record {
                message_id,
                body: m.body.clone().unwrap_or_default(),
                group_id: m.attributes.get("MessageGroupId").cloned(),
                receive_count: m.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
            })
        })
        .collect()
}

/// Runs the batch and reports its failures. Each failed message is first pushed back by
/// [`retry_delay`] (`ChangeMessageVisibility` on its queue, found by the name in its
/// `eventSourceARN` among `queues`), so that retries back off instead of coming back after the
/// queue's fixed visibility timeout.
pub async fn handle_sqs_event(
    handler: &dyn JobHandler,
    queues: &[Arc<dyn Queue>],
    event: SqsEvent,
) -> Result<SqsBatchResponse, SqsEventError> {
    let records = records(&event)?;
    let report = handle_batch(handler, &records).await;
    let mut response = SqsBatchResponse::default();
    for (m, r) in event.records.iter().zip(&records) {
        let queue_name = m.event_source_arn.as_deref().and_then(|arn| arn.rsplit(':').next());
        let queue = queues.iter().find(|q| Some(q.name()) == queue_name);
        let mut retry = report.failed.contains(&r.message_id);
        if report.poisoned.contains(&r.message_id) {
            // Set aside, the message counts as done and Lambda deletes it.
            retry = match queue {
                Some(q) => match set_aside(q.as_ref(), r).await {
                    Ok(moved) => !moved,
                    Err(e) => {
                        tracing::warn!(message_id = %r.message_id, error = %e, "cannot set a poisoned message aside; it is retried later");
                        true
                    }
                },
                None => true,
            };
        }
        if !retry {
            continue;
        }
        if let (Some(queue), Some(receipt)) = (queue, m.receipt_handle.as_deref()) {
            let after = retry_delay(r.receive_count);
            if let Err(e) = queue.change_visibility(receipt, after).await {
                tracing::warn!(message_id = %r.message_id, error = %e, "cannot delay a failed message; it comes back after the queue's visibility timeout");
            }
        }
        response.add_failure(r.message_id.clone());
    }
    Ok(response)
}

/// The periodic work besides the outbox sweep: reading incident channels, firing escalation
/// timers, handling the ends of maintenance windows. Each part that fails is logged and tried
/// again on the next tick.
pub struct Tick {
    pub reader: Option<ChannelReader>,
    pub escalator: Option<Escalator>,
    pub windows: Option<crate::escalation::windows::Windows>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub mirrored: usize,
    pub escalated: usize,
    pub windows_closed: usize,
}

impl Tick {
    pub async fn run(&self, now: jiff::Timestamp) -> TickReport {
        let mut report = TickReport::default();
        if let Some(r) = &self.reader {
            match r.read_all().await {
                Ok(read) => report.mirrored = read.added,
                Err(e) => tracing::warn!(error = %e, "reading incident channels failed; the next tick tries again"),
            }
        }
        if let Some(e) = &self.escalator {
            match e.run_due(now).await {
                Ok(r) => report.escalated = r.fired,
                Err(e) => tracing::warn!(error = %e, "escalation sweep failed; the next tick tries again"),
            }
        }
        if let Some(w) = &self.windows {
            match w.close_ended(now).await {
                Ok(n) => report.windows_closed = n,
                Err(e) => {
                    tracing::warn!(error = %e, "handling ended maintenance windows failed; the next tick tries again")
                }
            }
        }
        report
    }
}

/// The notifier's entry point: an SQS batch (from the notify or timer queue), or an EventBridge
/// schedule tick that sweeps the outbox and runs the [`Tick`].
pub async fn handle_event(
    handler: &dyn JobHandler,
    outbox: &Outbox,
    queues: &[Arc<dyn Queue>],
    tick: &Tick,
    event: serde_json::Value,
) -> Result<serde_json::Value, SqsEventError> {
    if event.get("Records").is_some() {
        let sqs: SqsEvent = serde_json::from_value(event).map_err(|e| SqsEventError::UnknownEvent(e.to_string()))?;
        let response = handle_sqs_event(handler, queues, sqs).await?;
        return serde_json::to_value(response).map_err(|e| SqsEventError::UnknownEvent(e.to_string()));
    }
    if event.get("detail-type").and_then(|d| d.as_str()) == Some("Scheduled Event") {
        let sent = outbox.sweep(SWEEP_MIN_AGE).await?;
        let report = tick.run(jiff::Timestamp::now()).await;
        return Ok(
            serde_json::json!({ "swept": sent, "mirrored": report.mirrored, "escalated": report.escalated, "windows_closed": report.windows_closed }),
        );
    }
    Err(SqsEventError::UnknownEvent("expected \"Records\" or a \"Scheduled Event\"".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::batch::JobError;
    use async_trait::async_trait;

    struct FailBody(&'static str);

    /// Records the visibility changes and sends it is asked for; `dlq` is its dead-letter queue.
    #[derive(Default)]
    struct Recorder {
        delayed: std::sync::Mutex<Vec<(String, Duration)>>,
        sent: std::sync::Mutex<Vec<crate::queue::OutgoingMessage>>,
        dlq: Option<Arc<Recorder>>,
    }

    #[async_trait]
    impl Queue for Recorder {
        fn kind(&self) -> crate::queue::QueueKind {
            crate::queue::QueueKind::Fifo
        }
        fn name(&self) -> &str {
            "klaxon-notify.fifo"
        }
        async fn send(&self, m: crate::queue::OutgoingMessage) -> Result<(), crate::queue::QueueError> {
            self.sent.lock().unwrap().push(m);
            Ok(())
        }
        async fn receive(
            &self,
            _o: crate::queue::ReceiveOptions,
        ) -> Result<Vec<crate::queue::ReceivedMessage>, crate::queue::QueueError> {
            Ok(vec![])
        }
        async fn delete(&self, _r: &str) -> Result<(), crate::queue::QueueError> {
            Ok(())
        }
        async fn change_visibility(&self, r: &str, after: Duration) -> Result<(), crate::queue::QueueError> {
            self.delayed.lock().unwrap().push((r.to_string(), after));
            Ok(())
        }
        async fn dead_letter_queue(&self) -> Result<Option<Arc<dyn Queue>>, crate::queue::QueueError> {
            Ok(self.dlq.clone().map(|q| q as Arc<dyn Queue>))
        }
    }

    #[async_trait]
    impl JobHandler for FailBody {
        async fn handle(&self, r: &Record) -> Result<(), JobError> {
            if r.body == self.0 { Err(JobError::Transient("down".into())) } else { Ok(()) }
        }
    }

    const FIFO_EVENT: &str = include_str!("../../../tests/fixtures/events/sqs-fifo-notify.json");

    #[tokio::test]
    async fn a_failed_record_and_the_rest_of_its_group_are_reported_by_message_id() {
        let event: SqsEvent = serde_json::from_str(FIFO_EVENT).unwrap();
        let recs = records(&event).unwrap();
        assert_eq!(recs[0].group_id.as_deref(), Some("ALR-1"));
        assert_eq!(recs[1].receive_count, 2);
        let fail_second = FailBody(recs[1].body.clone().leak());
        let queue = Arc::new(Recorder::default());
        let response = handle_sqs_event(&fail_second, &[queue.clone() as Arc<dyn Queue>], event).await.unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-3"}]})
        );
        let delayed = queue.delayed.lock().unwrap().clone();
        assert_eq!(
            delayed,
            [
                ("AQEB-receipt-2".to_string(), retry_delay(2)),
                ("AQEB-receipt-3".to_string(), retry_delay(recs[2].receive_count))
            ],
            "failed messages are pushed back by the backoff, on the queue their ARN names"
        );
    }

    struct PoisonBody(String);

    #[async_trait]
    impl JobHandler for PoisonBody {
        async fn handle(&self, r: &Record) -> Result<(), JobError> {
            if r.body == self.0 { Err(JobError::Poison("alert gone".into())) } else { Ok(()) }
        }
    }

    #[tokio::test]
    async fn a_poisoned_record_is_moved_to_the_dead_letter_queue_and_not_reported() {
        let event: SqsEvent = serde_json::from_str(FIFO_EVENT).unwrap();
        let recs = records(&event).unwrap();
        let dlq = Arc::new(Recorder::default());
        let queue = Arc::new(Recorder { dlq: Some(dlq.clone()), ..Recorder::default() });
        let handler = PoisonBody(recs[1].body.clone());
        let response = handle_sqs_event(&handler, &[queue.clone() as Arc<dyn Queue>], event).await.unwrap();
        assert!(response.batch_item_failures.is_empty(), "set aside counts as done; the rest of the group went on");
        let moved = dlq.sent.lock().unwrap().clone();
        assert_eq!(moved, [crate::queue::OutgoingMessage::fifo(recs[1].body.clone(), "ALR-1", "m-2")]);
        assert!(queue.delayed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_poisoned_record_without_a_dead_letter_queue_is_retried() {
        let event: SqsEvent = serde_json::from_str(FIFO_EVENT).unwrap();
        let recs = records(&event).unwrap();
        let queue = Arc::new(Recorder::default());
        let handler = PoisonBody(recs[1].body.clone());
        let response = handle_sqs_event(&handler, &[queue.clone() as Arc<dyn Queue>], event).await.unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]}));
    }

    #[tokio::test]
    async fn a_record_without_message_id_fails_the_invocation() {
        let mut event: SqsEvent = serde_json::from_str(FIFO_EVENT).unwrap();
        event.records[1].message_id = None;
        let err = handle_sqs_event(&FailBody("none"), &[], event).await.unwrap_err();
        assert!(matches!(err, SqsEventError::MissingMessageId { index: 1 }));
    }
}
