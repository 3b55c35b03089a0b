//! The outbox: how a change's notification jobs reach the queue without ever being lost.
//!
//! * **Embedded store.** The queue lives in the same SQLite file, so a job is queued inside the
//!   very transaction of the change it announces ([`crate::store::Write::Enqueue`]): both
//!   commit, or neither. Nothing is relayed.
//! * **DynamoDB and SQS** cannot share a transaction. The job is written into the store with
//!   the change (pk `outbox`, sk = job id `ALR-12#0000000003`, so one subject's jobs sort in
//!   order), then handed to SQS right after the commit. If SQS is down, the job waits in the
//!   outbox and the periodic sweep sends it. An accepted alert always has its jobs.
//!
//!   The request path stays short: a subject's first job (a new alert) is sent as it is, with
//!   nothing to read (nothing can precede it); a later job is sent with every job of its subject
//!   still in the outbox, oldest first, so that it never overtakes one a failed hand-over left
//!   behind (SQS drops the copies it already has, by deduplication id). Nobody deletes on the
//!   request path: the notifier removes a job's outbox item once it has handled the job
//!   ([`Outbox::handled`]), and the sweep removes what it sends.

use super::job::Job;
use crate::queue::{Queue, QueueError};
use crate::repo::{RepoError, encode};
use crate::store::{Condition, Item, Store, StoreError, Write};
use std::sync::Arc;
use std::time::Duration;

const PK: &str = "outbox";
/// How many outbox items one page of a sweep reads.
const PAGE: usize = 100;
/// How many pages one sweep reads at most.
const MAX_PAGES: usize = 20;
/// How many jobs of one subject one sweep sends at most, so that a subject with a long backlog
/// cannot take a whole sweep from the others.
const PER_SUBJECT: usize = 25;
/// Sorts after every job id of a subject (`ALR-12#...`): resuming after `ALR-12#` + this skips
/// the rest of that subject.
const AFTER_ALL_JOBS: char = '\u{10FFFF}';

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The write that puts `job` into the outbox (the store's half of the DynamoDB path).
pub fn item_write(job: &Job) -> Write {
    Write::Put { item: Item::new(PK, job.id(), encode(job)), condition: Condition::Absent }
}

#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    /// The store's transactions can queue messages to `queue` themselves.
    direct: bool,
}

impl Outbox {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> Self {
        let probe = crate::queue::OutgoingMessage::standard("probe");
        let direct = store.enqueues() && queue.in_transaction(&probe).is_some();
        Outbox { store, queue, direct }
    }

    /// The write that carries `job` in the transaction of the change it announces.
    pub fn write(&self, job: &Job) -> Write {
        let message = job.to_message();
        match self.direct.then(|| self.queue.in_transaction(&message)).flatten() {
            Some(queued) => queued,
            None => item_write(job),
        }
    }

    /// After the change carrying `job` committed: makes sure its subject's jobs are queued, and
    /// says how many it sent. The embedded store queued it already (0). Otherwise they are sent
    /// now; when that fails they stay in the outbox for the sweep (logged, 0 sent), and the
    /// change stands either way.
    pub async fn hand_over(&self, job: &Job) -> usize {
        if self.direct {
            return 0;
        }
        let subject = job.subject_id();
        let sent = if job.is_first_of_subject() {
            self.queue.send(job.to_message()).await.map(|()| 1).map_err(RelayError::from)
        } else {
            self.send_pending(subject).await
        };
        sent.unwrap_or_else(|e| {
            tracing::warn!(subject, error = %e, "could not queue notifications now; the outbox sweep will");
            0
        })
    }

    /// The notifier handled `job`: its outbox item (if any) is no longer needed.
    pub async fn handled(&self, job: &Job) {
        if self.direct {
            return;
        }
        if let Err(e) = self.store.delete(PK, job.id(), Condition::None).await {
            tracing::warn!(job = job.id(), error = %e, "could not remove a handled job from the outbox; the sweep re-sends it once and the notifier ignores it");
        }
    }

    /// Sends every job of the subject in the outbox, in order, leaving them there.
    async fn send_pending(&self, subject_id: &str) -> Result<usize, RelayError> {
        let items = self.store.query_prefix(PK, &format!("{subject_id}#"), None).await?;
        let due = readable_prefix(&items, None, usize::MAX);
        for (_, job) in &due {
            self.queue.send(job.to_message()).await?;
        }
        Ok(due.len())
    }

    /// Queues pending jobs that are at least `min_age` old (younger ones are probably being
    /// relayed by the request that wrote them), a bounded number per subject, in order within
    /// each subject. A job this version cannot read is logged and left for a version that can;
    /// the jobs of every other subject still go.
    pub async fn sweep(&self, min_age: Duration) -> Result<usize, RelayError> {
        let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::try_from(min_age).unwrap_or_default();
        let mut after: Option<String> = None;
        let mut sent = 0;
        for _ in 0..MAX_PAGES {
            let page = self.store.query_page(PK, "", after.as_deref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            let (last_sk, last_subject) = (last.sk.clone(), subject_of(&last.sk).to_string());
            let mut last_subject_done = false;
            for group in page.chunk_by(|a, b| subject_of(&a.sk) == subject_of(&b.sk)) {
                let due = readable_prefix(group, Some(cutoff), PER_SUBJECT);
                // The subject is done for this sweep unless every job on this page went and it
                // may have more on the next.
                let done = due.len() < group.len() || due.len() >= PER_SUBJECT;
                if group.first().is_some_and(|first| subject_of(&first.sk) == last_subject) {
                    last_subject_done = done;
                }
                sent += self.send_all(&due).await?;
            }
            if page.len() < PAGE {
                break;
            }
            after = Some(if last_subject_done { format!("{last_subject}#{AFTER_ALL_JOBS}") } else { last_sk });
        }
        Ok(sent)
    }

    async fn send_all(&self, due: &[(String, Job)]) -> Result<usize, RelayError> {
        let mut sent = 0;
        for (sk, job) in due {
            // Stop at the first failure: later jobs of this subject must not overtake it.
            self.queue.send(job.to_message()).await?;
            self.store.delete(PK, sk, Condition::None).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// How many jobs wait in the outbox (up to one page); for tests and status output.
    pub async fn pending(&self) -> Result<usize, StoreError> {
        Ok(self.store.query_prefix(PK, "", Some(PAGE)).await?.len())
    }
}

/// The subject a job id belongs to: `ALR-12` of `ALR-12#0000000003`.
fn subject_of(sk: &str) -> &str {
    sk.split('#').next().unwrap_or_default()
}

/// The leading jobs of one subject that may go now, at most `max`: it stops at the first job
/// this version cannot read (logged; a later version will send it, and nothing may overtake it)
/// and at the first job younger than `cutoff`.
fn readable_prefix(items: &[Item], cutoff: Option<jiff::Timestamp>, max: usize) -> Vec<(String, Job)> {
    let mut due = Vec::new();
    for item in items.iter().take(max) {
        match Job::parse(&item.data) {
            Err(e) => {
                tracing::error!(job = %item.sk, error = %e, "outbox job cannot be read by this version of Klaxon; it stays in the outbox for a version that can, and later jobs of its subject wait behind it");
                break;
            }
            Ok(job) if cutoff.is_some_and(|c| job.at() > c) => break,
            Ok(job) => due.push((item.sk.clone(), job)),
        }
    }
    due
}
