//! The local worker loop of `klaxon serve`: poll a queue, run the batch handler, delete what
//! succeeded. Failed messages stay invisible until their visibility timeout and come back, as
//! they would on SQS.

use super::batch::{JobHandler, Record, handle_batch, retry_delay, set_aside};
use crate::queue::{Queue, ReceiveOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Worker {
    pub name: &'static str,
    pub queue: Arc<dyn Queue>,
    pub handler: Arc<dyn JobHandler>,
    /// How long a received batch stays hidden; a failed job comes back after this.
    pub visibility: Duration,
}

impl Worker {
    /// Runs until `stop` turns true. A batch in progress is finished first, so a job is either
    /// done and deleted, or left on the queue for the next start.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(worker = self.name, "worker started");
        let options = ReceiveOptions::new(10, self.visibility).waiting(Duration::from_secs(1));
        loop {
            if *stop.borrow() {
                break;
            }
            let received = tokio::select! {
                r = self.queue.receive(options) => r,
                _ = stop.changed() => break,
            };
            let messages = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(worker = self.name, error = %e, "cannot read the queue; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => break,
                    }
                }
            };
            if messages.is_empty() {
                continue;
            }
            let records: Vec<Record> = messages.iter().map(Record::from).collect();
            let report = handle_batch(self.handler.as_ref(), &records).await;
            let mut finished = Vec::with_capacity(messages.len());
            for (m, r) in messages.iter().zip(&records) {
                let mut retry = report.failed.contains(&m.message_id);
                if report.poisoned.contains(&m.message_id) {
                    match set_aside(self.queue.as_ref(), r).await {
                        Ok(true) => {}
                        Ok(false) => retry = true,
                        Err(e) => {
                            tracing::warn!(worker = self.name, message_id = %m.message_id, error = %e, "cannot set a poisoned message aside; it is retried later");
                            retry = true;
                        }
                    }
                }
                if retry {
                    // Back off: the next try waits longer each time (see retry_delay).
                    let after = retry_delay(m.receive_count);
                    if let Err(e) = self.queue.change_visibility(&m.receipt, after).await {
                        tracing::warn!(worker = self.name, message_id = %m.message_id, error = %e, "cannot delay a failed message; it comes back after the visibility timeout");
                    }
                } else {
                    finished.push(m.receipt.clone());
                }
            }
            if let Err(e) = self.queue.delete_batch(&finished).await {
                // The jobs were done; they will come back and be skipped by their delivery records.
                tracing::warn!(worker = self.name, messages = finished.len(), error = %e, "cannot delete finished messages");
            }
        }
        tracing::info!(worker = self.name, "worker stopped");
    }
}
