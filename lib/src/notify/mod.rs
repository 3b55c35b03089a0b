//! Notifications: the jobs ingest and chatops queue, where they are routed, and the one batch
//! handler that processes them, called by the `notifier` Lambda with SQS batches and by
//! `klaxon serve`'s worker loop with batches from the embedded queue.

pub mod batch;
pub mod card;
pub mod connection;
pub mod incident;
pub mod job;
pub mod lambda;
pub mod notifier;
pub mod outbox;
pub mod retry;
pub mod routing;
pub mod worker;

pub use batch::{BatchReport, JobError, JobHandler, Record, handle_batch};
pub use job::{Job, NotifyJob, Subject};
pub use notifier::Notifier;
