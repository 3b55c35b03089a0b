//! The outbox: notification jobs are written into the store in the same transaction as the
//! change they announce, then relayed to the FIFO queue. DynamoDB and SQS cannot share a
//! transaction; this way an accepted alert always has its jobs, even if SQS is down when it
//! comes in. A relay right after the write sends them at once; the periodic sweep sends whatever
//! a relay could not.
//!
//! Items: pk `outbox`, sk = job id (`ALR-12#0000000003`, the alert id and its revision), so one subject's jobs sort in order.

use super::job::Job;
use crate::queue::{Queue, QueueError};
use crate::repo::{RepoError, encode};
use crate::store::{Condition, Item, Store, StoreError, Write};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const PK: &str = "outbox";
/// How many pending jobs one sweep looks at.
const SWEEP_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The write that puts `job` into the outbox; add it to the transaction of the change.
pub fn write(job: &Job) -> Write {
    Write::Put { item: Item::new(PK, job.id(), encode(job)), condition: Condition::Absent }
}

#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
}

impl Outbox {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> Self {
        Outbox { store, queue }
    }

    /// Queues every pending job of one subject, oldest first, and removes each once queued.
    /// Sending all of them (not only the newest) keeps a subject's jobs in order even after an
    /// earlier relay failed.
    pub async fn relay(&self, subject_id: &str) -> Result<usize, RelayError> {
        let items = self.store.query_prefix(PK, &format!("{subject_id}#"), None).await?;
        self.send_all(&items).await
    }

    /// Queues pending jobs of subjects whose oldest pending job is at least `min_age` old (younger
    /// ones are probably being relayed by the request that wrote them).
    pub async fn sweep(&self, min_age: Duration) -> Result<usize, RelayError> {
        let items = self.store.query_prefix(PK, "", Some(SWEEP_BATCH)).await?;
        let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::try_from(min_age).unwrap_or_default();
        let mut too_young: HashSet<String> = HashSet::new();
        let mut due = Vec::new();
        for item in items {
            let subject = item.sk.split('#').next().unwrap_or_default().to_string();
            if too_young.contains(&subject) {
                continue;
            }
            match Job::parse(&item.data) {
                Ok(Job::Notify(n)) if n.at > cutoff => {
                    too_young.insert(subject);
                }
                _ => due.push(item),
            }
        }
        self.send_all(&due).await
    }

    async fn send_all(&self, items: &[Item]) -> Result<usize, RelayError> {
        let mut sent = 0;
        for item in items {
            let job = Job::parse(&item.data)
                .map_err(|e| RepoError::Decode { what: format!("outbox job {}", item.sk), reason: e.to_string() })?;
            // Stop at the first failure: later jobs of this subject must not overtake it.
            self.queue.send(job.to_message()).await?;
            self.store.delete(PK, &item.sk, Condition::None).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// How many jobs wait in the outbox (up to one sweep batch); for tests and status output.
    pub async fn pending(&self) -> Result<usize, StoreError> {
        Ok(self.store.query_prefix(PK, "", Some(SWEEP_BATCH)).await?.len())
    }
}
