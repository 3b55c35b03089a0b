//! What the notifier did with each job, keyed by job id, so a redelivered job is not posted twice.

use super::{RepoError, decode, encode};
use crate::notify::Job;
use crate::store::{Condition, Item, Store, Write};
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
    /// Mattermost refused it for good (bad token, bot not in the channel, ...): the admin's fix.
    /// Listed by `klaxon deliveries` and sent again by `klaxon deliveries retry`.
    Failed { channel: Option<String>, reason: String },
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
        Self::read(self.store.get(&pk(job_id), "delivery").await?, job_id)
    }

    /// The key of `job_id`'s record, for reading it together with other items.
    pub fn key(job_id: &str) -> (String, String) {
        (pk(job_id), "delivery".to_string())
    }

    /// The record read under [`DeliveryRepo::key`].
    pub fn read(item: Option<Item>, job_id: &str) -> Result<Option<DeliveryRecord>, RepoError> {
        item.map(|item| super::decode(&item, &format!("delivery {job_id}")).map(|v| v.value)).transpose()
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

/// The index of failed deliveries: pk `failed-delivery`, sk job id, the job itself in the data,
/// so that `klaxon deliveries retry` can send it again.
const FAILED_PK: &str = "failed-delivery";

/// One failed delivery, as `klaxon deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDelivery {
    pub job: Job,
    pub at: Timestamp,
    pub channel: Option<String>,
    pub reason: String,
}

impl DeliveryRepo {
    /// Records a failure of `job` for good, and lists it among the failed deliveries, in one
    /// transaction. Returns `false` when the job was recorded before.
    pub async fn record_failure(&self, job: &Job, channel: Option<String>, reason: String) -> Result<bool, RepoError> {
        let at = Timestamp::now();
        let expires = at.as_second() + RETENTION_SECS;
        let record = DeliveryRecord {
            job_id: job.id().to_string(),
            at,
            delivery: Delivery::Failed { channel: channel.clone(), reason: reason.clone() },
        };
        let failed = FailedDelivery { job: job.clone(), at, channel, reason };
        let writes = vec![
            Write::Put {
                item: Item::new(pk(job.id()), "delivery", encode(&record)).expiring_at(expires),
                condition: Condition::Absent,
            },
            Write::Put {
                item: Item::new(FAILED_PK, job.id(), encode(&failed)).expiring_at(expires),
                condition: Condition::None,
            },
        ];
        match self.store.transact(writes).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_condition_failed() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Failed deliveries, oldest job id first, at most `limit`.
    pub async fn failed(&self, limit: usize) -> Result<Vec<FailedDelivery>, RepoError> {
        let items = self.store.query_prefix(FAILED_PK, "", Some(limit)).await?;
        items
            .iter()
            .map(|i| decode::<FailedDelivery>(i, &format!("failed delivery {}", i.sk)).map(|v| v.value))
            .collect()
    }

    /// Makes a failed job deliverable again and returns it, for the caller to queue: its
    /// delivery record goes (so the notifier does not skip it); its entry in the failed list
    /// stays until [`DeliveryRepo::forget_failure`], so a crash in between loses nothing.
    pub async fn reopen(&self, job_id: &str) -> Result<Option<Job>, RepoError> {
        let Some(item) = self.store.get(FAILED_PK, job_id).await? else { return Ok(None) };
        let failed: FailedDelivery = decode(&item, &format!("failed delivery {job_id}"))?.value;
        self.store.delete(&pk(job_id), "delivery", Condition::None).await?;
        Ok(Some(failed.job))
    }

    pub async fn forget_failure(&self, job_id: &str) -> Result<(), RepoError> {
        Ok(self.store.delete(FAILED_PK, job_id, Condition::None).await?)
    }
}
