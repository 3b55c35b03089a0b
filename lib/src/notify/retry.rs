//! `klaxon deliveries`: the notifications Mattermost refused for good (a bad token, a bot that
//! was not in the channel, ...), and sending them again once an admin has fixed the cause.

use super::job::Job;
use crate::queue::{Queue, QueueError};
use crate::repo::RepoError;
use crate::repo::deliveries::{DeliveryRepo, FailedDelivery};

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot queue the job again: {0}; nothing was lost, run the retry again")]
    Queue(#[from] QueueError),
    #[error("no failed delivery {0}; `klaxon deliveries` lists them")]
    Unknown(String),
}

/// At most this many failed deliveries are listed or retried at once.
pub const LIST_LIMIT: usize = 1000;

pub async fn list(deliveries: &DeliveryRepo) -> Result<Vec<FailedDelivery>, RepoError> {
    deliveries.failed(LIST_LIMIT).await
}

/// Queues a failed job again. Its delivery record is removed first, so that the notifier does
/// not skip it, and its entry in the failed list last, so a crash in between only means the
/// retry can be run again. The message gets a new deduplication id: the FIFO queue would drop
/// the old one within five minutes of its first send.
pub async fn retry(deliveries: &DeliveryRepo, queue: &dyn Queue, job_id: &str) -> Result<(), RetryError> {
    let job: Job = deliveries.reopen(job_id).await?.ok_or_else(|| RetryError::Unknown(job_id.to_string()))?;
    let mut message = job.to_message();
    message.dedup_id = Some(format!("{}#retry-{}", job.id(), uuid::Uuid::new_v4().simple()));
    queue.send(message).await?;
    deliveries.forget_failure(job_id).await?;
    Ok(())
}
