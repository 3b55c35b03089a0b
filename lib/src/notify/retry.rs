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

/// One message in the dead-letter queue: a job that failed through the whole retry budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    /// The job id, or why the body is not a job this version can read.
    pub job: Result<String, String>,
    pub receive_count: u32,
}

/// How long a listed dead letter stays hidden (listing receives it; it comes back after this).
const LIST_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(5);

/// Lists the dead-letter queue of `queue` (at most [`LIST_LIMIT`] messages).
pub async fn dead_letters(queue: &dyn Queue) -> Result<Vec<DeadLetter>, RetryError> {
    let Some(dlq) = queue.dead_letter_queue().await? else { return Ok(Vec::new()) };
    let mut out: Vec<DeadLetter> = Vec::new();
    while out.len() < LIST_LIMIT {
        let got = dlq.receive(crate::queue::ReceiveOptions::new(10, LIST_VISIBILITY)).await?;
        if got.is_empty() {
            break;
        }
        for m in got {
            let job = Job::parse(&m.body)
                .map(|j| j.id().to_string())
                .map_err(|e| format!("not a job this version can read: {e}"));
            out.push(DeadLetter { message_id: m.message_id, job, receive_count: m.receive_count });
        }
    }
    Ok(out)
}

/// Moves every dead letter of `queue` back onto it (with a new deduplication id, in its
/// group), deleting each from the dead-letter queue only once it is queued again.
pub async fn redrive(queue: &dyn Queue) -> Result<usize, RetryError> {
    let Some(dlq) = queue.dead_letter_queue().await? else { return Ok(0) };
    let mut moved = 0;
    while moved < LIST_LIMIT {
        let got = dlq.receive(crate::queue::ReceiveOptions::new(10, std::time::Duration::from_secs(60))).await?;
        if got.is_empty() {
            break;
        }
        for m in got {
            let mut message = match Job::parse(&m.body) {
                Ok(job) => job.to_message(),
                Err(_) => match &m.group_id {
                    Some(g) => crate::queue::OutgoingMessage::fifo(m.body.clone(), g.clone(), m.message_id.clone()),
                    None => crate::queue::OutgoingMessage::standard(m.body.clone()),
                },
            };
            if message.dedup_id.is_some() {
                message.dedup_id = Some(format!("redrive-{}", uuid::Uuid::new_v4().simple()));
            }
            queue.send(message).await?;
            dlq.delete(&m.receipt).await?;
            moved += 1;
        }
    }
    Ok(moved)
}
