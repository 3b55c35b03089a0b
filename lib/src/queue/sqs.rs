//! The queues on AWS: one SQS queue per adapter instance. Dead-lettering is the queue's own
//! redrive policy (set by the SAM template, or by [`SqsQueue::create_with_dead_letter`]).

use super::{
    OutgoingMessage, Queue, QueueError, QueueKind, ReceiveOptions, ReceivedMessage, validate_receive, validate_send,
};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    kind: QueueKind,
}

fn backend(e: impl std::error::Error) -> QueueError {
    QueueError::Backend { backend: "SQS", message: DisplayErrorContext(e).to_string() }
}

fn whole_seconds(d: std::time::Duration) -> i32 {
    // SQS counts in whole seconds; round up so that a timeout is never shorter than asked.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

impl SqsQueue {
    /// A queue whose URL ends in `.fifo` is a FIFO queue, as on AWS.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let url = url.into();
        let kind = if url.ends_with(".fifo") { QueueKind::Fifo } else { QueueKind::Standard };
        SqsQueue { client, url, kind }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates `name` and `name-dlq` (FIFO if `name` ends in `.fifo`) with a redrive policy of
    /// `max_receives`, and returns `(queue_url, dead_letter_queue_url)`. For tests and first runs.
    pub async fn create_with_dead_letter(
        client: &Client,
        name: &str,
        max_receives: u32,
    ) -> Result<(String, String), QueueError> {
        let fifo = name.ends_with(".fifo");
        let dlq_name = match name.strip_suffix(".fifo") {
            Some(base) => format!("{base}-dlq.fifo"),
            None => format!("{name}-dlq"),
        };
        let create = |n: String| {
            let mut req = client.create_queue().queue_name(n);
            if fifo {
                req = req.attributes(QueueAttributeName::FifoQueue, "true");
            }
            req
        };
        let dlq_url = create(dlq_name).send().await.map_err(backend)?.queue_url().unwrap_or_default().to_string();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(backend)?;
        let dlq_arn =
            attrs.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).cloned().unwrap_or_default();
        let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
        let url = create(name.to_string())
            .attributes(QueueAttributeName::RedrivePolicy, policy)
            .send()
            .await
            .map_err(backend)?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        Ok((url, dlq_url))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn kind(&self) -> QueueKind {
        self.kind
    }

    fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }

    async fn send(&self, message: OutgoingMessage) -> Result<(), QueueError> {
        validate_send(self.kind, &message)?;
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body)
            .set_message_group_id(message.group_id)
            .set_message_deduplication_id(message.dedup_id);
        if !message.delay.is_zero() {
            req = req.delay_seconds(whole_seconds(message.delay));
        }
        req.send().await.map_err(backend)?;
        Ok(())
    }

    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>, QueueError> {
        validate_receive(&options)?;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(options.max as i32)
            .visibility_timeout(whole_seconds(options.visibility))
            .wait_time_seconds(whole_seconds(options.wait))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(backend)?;
        let mut received = Vec::new();
        for m in out.messages() {
            let attr = |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
            let (Some(message_id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                // Without an id and a receipt the message can be neither reported nor deleted;
                // leave it to come back after the visibility timeout.
                tracing::warn!(queue = %self.url, "SQS returned a message without id or receipt handle; skipped");
                continue;
            };
            received.push(ReceivedMessage {
                message_id: message_id.to_string(),
                receipt: receipt.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                group_id: attr(MessageSystemAttributeName::MessageGroupId),
                receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            });
        }
        Ok(received)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        match self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                use aws_sdk_sqs::operation::delete_message::DeleteMessageError as E;
                // A receipt for a message that is already gone is fine: deletes are retried.
                if matches!(e.as_service_error(), Some(E::ReceiptHandleIsInvalid(_))) {
                    return Ok(());
                }
                Err(backend(e))
            }
        }
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        for chunk in receipts.chunks(crate::queue::MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(backend)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(backend)?;
            // Per-entry failures: a receipt that no longer matches is fine (deletes are
            // retried); anything else is reported.
            if let Some(f) = out.failed().iter().find(|f| f.code() != "ReceiptHandleIsInvalid") {
                return Err(QueueError::Backend {
                    backend: "SQS",
                    message: format!("DeleteMessageBatch refused entry {}: {}", f.id(), f.code()),
                });
            }
        }
        Ok(())
    }

    async fn dead_letter_queue(&self) -> Result<Option<std::sync::Arc<dyn Queue>>, QueueError> {
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(backend)?;
        let Some(policy) = attrs.attributes().and_then(|a| a.get(&QueueAttributeName::RedrivePolicy)) else {
            return Ok(None);
        };
        let arn = serde_json::from_str::<serde_json::Value>(policy)
            .ok()
            .and_then(|p| p.get("deadLetterTargetArn").and_then(|a| a.as_str()).map(str::to_string))
            .ok_or_else(|| QueueError::Backend {
                backend: "SQS",
                message: format!("the redrive policy of {} cannot be read", self.url),
            })?;
        let name = arn.rsplit(':').next().unwrap_or_default();
        let url = self.client.get_queue_url().queue_name(name).send().await.map_err(backend)?;
        let url = url.queue_url().unwrap_or_default().to_string();
        Ok(Some(std::sync::Arc::new(SqsQueue::new(self.client.clone(), url))))
    }

    async fn change_visibility(&self, receipt: &str, after: std::time::Duration) -> Result<(), QueueError> {
        let secs = after.min(super::MAX_VISIBILITY).as_secs() as i32;
        let req = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs);
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError as E;
                if matches!(e.as_service_error(), Some(E::ReceiptHandleIsInvalid(_) | E::MessageNotInflight(_))) {
                    return Ok(());
                }
                Err(backend(e))
            }
        }
    }
}
