//! The notifier Lambda's glue: SQS event in, partial batch response out.

use super::batch::{JobHandler, Record, handle_batch};
use super::outbox::{Outbox, RelayError};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
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

pub async fn handle_sqs_event(handler: &dyn JobHandler, event: SqsEvent) -> Result<SqsBatchResponse, SqsEventError> {
    let records = records(&event)?;
    let report = handle_batch(handler, &records).await;
    let mut response = SqsBatchResponse::default();
    for id in report.failed {
        response.add_failure(id);
    }
    Ok(response)
}

/// The notifier's entry point: an SQS batch (from the notify or timer queue), or an EventBridge
/// schedule tick that sweeps the outbox.
pub async fn handle_event(
    handler: &dyn JobHandler,
    outbox: &Outbox,
    event: serde_json::Value,
) -> Result<serde_json::Value, SqsEventError> {
    if event.get("Records").is_some() {
        let sqs: SqsEvent = serde_json::from_value(event).map_err(|e| SqsEventError::UnknownEvent(e.to_string()))?;
        let response = handle_sqs_event(handler, sqs).await?;
        return serde_json::to_value(response).map_err(|e| SqsEventError::UnknownEvent(e.to_string()));
    }
    if event.get("detail-type").and_then(|d| d.as_str()) == Some("Scheduled Event") {
        let sent = outbox.sweep(SWEEP_MIN_AGE).await?;
        return Ok(serde_json::json!({ "swept": sent }));
    }
    Err(SqsEventError::UnknownEvent("expected \"Records\" or a \"Scheduled Event\"".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::batch::JobError;
    use async_trait::async_trait;

    struct FailBody(&'static str);

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
        let response = handle_sqs_event(&fail_second, event).await.unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-3"}]})
        );
    }

    #[tokio::test]
    async fn a_record_without_message_id_fails_the_invocation() {
        let mut event: SqsEvent = serde_json::from_str(FIFO_EVENT).unwrap();
        event.records[1].message_id = None;
        let err = handle_sqs_event(&FailBody("none"), event).await.unwrap_err();
        assert!(matches!(err, SqsEventError::MissingMessageId { index: 1 }));
    }
}
