//! What the notifier did with each job, keyed by job id, so a redelivered job is not posted twice.

use super::{RepoError, encode};
use crate::store::{Condition, Item, Store};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Delivery records are kept for 14 days (SQS keeps a message at most 14 days, so no job can come
/// back later than that).
pub const RETENTION_SECS: i64 = 14 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Delivery {
    /// Posted; Mattermost's post id, for updates and thread replies.
    Posted { channel: String, post_id: String },
    /// Deliberately not posted, and why (no route, no Mattermost configured, ...).
    NotDelivered { channel: Option<String>, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub job_id: String,
    pub at: Timestamp,
    #[serde(flatten)]
    pub delivery: Delivery,
}

#[derive(Clone)]
pub struct DeliveryRepo {
    store: Arc<dyn Store>,
}

fn pk(job_id: &str) -> String {
    format!("delivery#{job_id}")
}

impl DeliveryRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        DeliveryRepo { store }
    }

    pub async fn get(&self, job_id: &str) -> Result<Option<DeliveryRecord>, RepoError> {
        match self.store.get(&pk(job_id), "delivery").await? {
            None => Ok(None),
            Some(item) => super::decode(&item, &format!("delivery {job_id}")).map(|v| Some(v.value)),
        }
    }

    /// Records the outcome once. Returns `false` when the job was already recorded (a retry).
    pub async fn record(&self, record: &DeliveryRecord) -> Result<bool, RepoError> {
        let item = Item::new(pk(&record.job_id), "delivery", encode(record))
            .expiring_at(record.at.as_second() + RETENTION_SECS);
        match self.store.put(item, Condition::Absent).await {
            Ok(()) => Ok(true),
            // Only a failed condition means "recorded before"; a collision with a transaction
            // (DynamoDB's TransactionConflict) is an error, and the job is retried.
            Err(e) if e.is_condition_failed() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
