//! What goes on the queues.

use crate::queue::OutgoingMessage;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The thing a notification is about. Its id is the FIFO group, so one alert's or incident's
/// posts are delivered in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Alert { id: String },
    Incident { id: String },
}

impl Subject {
    pub fn id(&self) -> &str {
        match self {
            Subject::Alert { id } | Subject::Incident { id } => id,
        }
    }
}

/// "Tell Mattermost that `event` happened to `subject`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyJob {
    /// Unique per event; the queue's deduplication id and the delivery record's key.
    pub job_id: String,
    /// One of [`crate::config::EVENT_TYPES`].
    pub event: String,
    pub subject: Subject,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Job {
    Notify(NotifyJob),
}

impl Job {
    pub fn id(&self) -> &str {
        match self {
            Job::Notify(j) => &j.job_id,
        }
    }

    /// Whether this is the first job of its subject (revision 1: a new alert or incident), so
    /// that no other job of the subject can be waiting before it.
    pub fn is_first_of_subject(&self) -> bool {
        self.id().ends_with("#0000000001")
    }

    /// The alert or incident the job is about (its FIFO group).
    pub fn subject_id(&self) -> &str {
        match self {
            Job::Notify(j) => j.subject.id(),
        }
    }

    /// When the change it announces happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Job::Notify(j) => j.at,
        }
    }

    /// The FIFO message for this job: grouped by subject, deduplicated by job id.
    pub fn to_message(&self) -> OutgoingMessage {
        match self {
            Job::Notify(j) => OutgoingMessage::fifo(crate::repo::encode(self), j.subject.id(), &j.job_id),
        }
    }

    pub fn parse(body: &str) -> Result<Job, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_job_becomes_a_fifo_message_grouped_by_its_subject() {
        let job = Job::Notify(NotifyJob {
            job_id: "ALR-7:triggered".into(),
            event: "alert.triggered".into(),
            subject: Subject::Alert { id: "ALR-7".into() },
            at: Timestamp::from_second(1_700_000_000).unwrap(),
        });
        let m = job.to_message();
        assert_eq!(m.group_id.as_deref(), Some("ALR-7"));
        assert_eq!(m.dedup_id.as_deref(), Some("ALR-7:triggered"));
        assert_eq!(Job::parse(&m.body).unwrap(), job);
        assert!(m.body.contains(r#""type":"notify""#), "{}", m.body);
    }
}
