//! The queue port: the subset of SQS that Klaxon needs, with two adapters.
//!
//! * A **FIFO** queue carries notifications: the group id is the alert or incident id, so one
//!   alert's posts are delivered in order, and the deduplication id is the job id, so a job sent
//!   twice within five minutes is delivered once.
//! * A **standard** queue carries timers (escalation checks): FIFO queues cannot delay single
//!   messages, standard ones can, by up to 900 s.
//!
//! Both kinds: a received message stays invisible for the visibility timeout and comes back if
//! it is not deleted in time; after `max_receives` receives it moves to the dead-letter queue.
//! In a FIFO queue, a group with a message in flight delivers nothing else until that message is
//! deleted or becomes visible again.

pub mod backlog;
pub mod sqlite;
pub mod sqs;

use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Fifo,
    Standard,
}

/// SQS limits, enforced by both adapters so that local runs fail the way AWS would.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
pub const MAX_BODY_BYTES: usize = 256 * 1024;
pub const MAX_BATCH: usize = 10;
/// How long a FIFO queue remembers a deduplication id.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub delay: Duration,
}

impl OutgoingMessage {
    /// A FIFO message: ordered within `group_id`, delivered once per `dedup_id` within 5 minutes.
    pub fn fifo(body: impl Into<String>, group_id: impl Into<String>, dedup_id: impl Into<String>) -> Self {
        OutgoingMessage {
            body: body.into(),
            group_id: Some(group_id.into()),
            dedup_id: Some(dedup_id.into()),
            delay: Duration::ZERO,
        }
    }

    /// A standard-queue message, optionally delayed with [`OutgoingMessage::delayed`].
    pub fn standard(body: impl Into<String>) -> Self {
        OutgoingMessage { body: body.into(), group_id: None, dedup_id: None, delay: Duration::ZERO }
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// Proof of this receive; needed to delete the message.
    pub receipt: String,
    pub body: String,
    pub group_id: Option<String>,
    /// 1 on the first delivery, 2 on the first redelivery, ...
    pub receive_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// 1 to [`MAX_BATCH`].
    pub max: usize,
    /// How long received messages stay hidden from other receivers.
    pub visibility: Duration,
    /// How long to wait for a message when none is ready (long polling); zero returns at once.
    pub wait: Duration,
}

impl ReceiveOptions {
    pub fn new(max: usize, visibility: Duration) -> Self {
        ReceiveOptions { max, visibility, wait: Duration::ZERO }
    }

    pub fn waiting(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("message refused: {0}")]
    InvalidMessage(String),
    #[error("invalid receive: {0}")]
    InvalidReceive(String),
    #[error("{backend} failed: {message}; check that the queue exists and is reachable, then retry")]
    Backend { backend: &'static str, message: String },
}

#[async_trait]
pub trait Queue: Send + Sync {
    fn kind(&self) -> QueueKind;

    /// The queue's name (an SQS queue's is the last part of its URL and of its ARN).
    fn name(&self) -> &str;

    async fn send(&self, message: OutgoingMessage) -> Result<(), QueueError>;

    /// The store write that queues `message` inside a store transaction, when this queue lives
    /// in the store's own database (the embedded queue): then a change and its jobs commit
    /// together and need no outbox. `None` for SQS, which cannot share a transaction.
    fn in_transaction(&self, _message: &OutgoingMessage) -> Option<crate::store::Write> {
        None
    }

    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes a received message. A receipt that no longer matches (the message was already
    /// deleted) is not an error: deletes must be safe to retry.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Deletes several received messages in as few round trips as the backend allows (one
    /// SQLite transaction; SQS `DeleteMessageBatch` per 10). Receipts that no longer match are
    /// not an error. The default deletes one at a time.
    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        for r in receipts {
            self.delete(r).await?;
        }
        Ok(())
    }

    /// Makes a received message visible again `after` from now (SQS `ChangeMessageVisibility`,
    /// at most 12 hours): how a consumer backs off before the next try. A receipt that no
    /// longer matches is not an error.
    async fn change_visibility(&self, receipt: &str, after: Duration) -> Result<(), QueueError>;

    /// Called by the one process that consumes this queue as it starts: messages received by a
    /// process that died (SIGKILL, power cut) become visible now instead of after their
    /// visibility timeout, so that its half-done work resumes at once. Returns how many. SQS
    /// has many consumers and cannot tell, so there this does nothing.
    async fn release_in_flight(&self) -> Result<u64, QueueError> {
        Ok(0)
    }

    /// The queue this one's messages go to after too many receives, if it has one (for
    /// `klaxon deliveries`, which lists and re-sends them).
    async fn dead_letter_queue(&self) -> Result<Option<std::sync::Arc<dyn Queue>>, QueueError>;
}

/// Milliseconds since this process first asked: a monotonic clock for the embedded queue's
/// pauses and gauges, so that the wall clock's steps cannot stretch or shrink an interval.
pub(crate) fn mono_ms() -> i64 {
    static START: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
    i64::try_from(START.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// SQS's limit for a visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// The rules both adapters apply before sending, so that they refuse the same messages.
pub(crate) fn validate_send(kind: QueueKind, m: &OutgoingMessage) -> Result<(), QueueError> {
    let bad = |s: &str| Err(QueueError::InvalidMessage(s.to_string()));
    if m.body.is_empty() {
        return bad("the body is empty; SQS requires at least one character");
    }
    if m.body.len() > MAX_BODY_BYTES {
        return Err(QueueError::InvalidMessage(format!(
            "the body is {} bytes, over the {MAX_BODY_BYTES}-byte limit; store large data and send a reference",
            m.body.len()
        )));
    }
    if m.delay > MAX_DELAY {
        return Err(QueueError::InvalidMessage(format!(
            "a delay of {} s is over the {} s maximum; re-send a timer when it fires to wait longer",
            m.delay.as_secs(),
            MAX_DELAY.as_secs()
        )));
    }
    match kind {
        QueueKind::Fifo => {
            if m.group_id.as_deref().is_none_or(str::is_empty) {
                return bad("a FIFO message needs a group id (the alert or incident id)");
            }
            if m.dedup_id.as_deref().is_none_or(str::is_empty) {
                return bad("a FIFO message needs a deduplication id (the job id)");
            }
            if !m.delay.is_zero() {
                return bad("FIFO queues cannot delay single messages; send timers to the standard queue");
            }
        }
        QueueKind::Standard => {
            if m.group_id.is_some() || m.dedup_id.is_some() {
                return bad("group and deduplication ids only apply to FIFO queues");
            }
        }
    }
    Ok(())
}

pub(crate) fn validate_receive(o: &ReceiveOptions) -> Result<(), QueueError> {
    if o.max == 0 || o.max > MAX_BATCH {
        return Err(QueueError::InvalidReceive(format!("max must be 1 to {MAX_BATCH}, not {}", o.max)));
    }
    if o.wait > Duration::from_secs(20) {
        return Err(QueueError::InvalidReceive("wait may be at most 20 s (the SQS long-poll limit)".into()));
    }
    Ok(())
}
