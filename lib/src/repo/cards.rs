//! Each alert's card: which Mattermost post it is. A durable record (it never expires, unlike
//! delivery records), claimed *before* the post is created, so that two workers, or a retry,
//! cannot create two cards.
//!
//! Item: pk `card#ALR-12`, sk `card`.

use super::{RepoError, Versioned, decode, encode};
use crate::store::{Condition, Item, Store};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub channel_id: String,
    /// `None` between the claim and the confirmed create.
    pub post_id: Option<String>,
    pub claimed_at: Timestamp,
    /// The alert revision the post shows; an older job never rolls it back.
    pub rendered_revision: u64,
    /// When the post was last updated (repeats are paced against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// A paced update is scheduled for this time (so a storm schedules one, not one per repeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_due: Option<Timestamp>,
}

#[derive(Clone)]
pub struct CardRepo {
    store: Arc<dyn Store>,
}

fn pk(alert_id: &str) -> String {
    format!("card#{alert_id}")
}

impl CardRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        CardRepo { store }
    }

    pub async fn get(&self, alert_id: &str) -> Result<Option<Versioned<Card>>, RepoError> {
        Self::read(self.store.get(&pk(alert_id), "card").await?, alert_id)
    }

    /// The key of `alert_id`'s card, for reading it together with other items.
    pub fn key(alert_id: &str) -> (String, String) {
        (pk(alert_id), "card".to_string())
    }

    /// The card read under [`CardRepo::key`].
    pub fn read(item: Option<Item>, alert_id: &str) -> Result<Option<Versioned<Card>>, RepoError> {
        item.map(|item| decode(&item, &format!("card of {alert_id}"))).transpose()
    }

    /// Claims the card for `channel_id`; `Conflict` when someone else holds a claim already.
    pub async fn claim(&self, alert_id: &str, channel_id: &str) -> Result<Versioned<Card>, RepoError> {
        let card = Card {
            channel_id: channel_id.into(),
            post_id: None,
            claimed_at: Timestamp::now(),
            rendered_revision: 0,
            updated_at: None,
            refresh_due: None,
        };
        match self.store.put(Item::new(pk(alert_id), "card", encode(&card)), Condition::Absent).await {
            Ok(()) => Ok(Versioned { value: card, version: 1 }),
            Err(e) if e.is_conflict() => Err(RepoError::Conflict { what: format!("the card of {alert_id}") }),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the record read at `read.version`.
    pub async fn save(
        &self,
        alert_id: &str,
        read: &Versioned<Card>,
        card: &Card,
    ) -> Result<Versioned<Card>, RepoError> {
        let item = Item::new(pk(alert_id), "card", encode(card)).with_version(read.version + 1);
        match self.store.put(item, Condition::Version(read.version)).await {
            Ok(()) => Ok(Versioned { value: card.clone(), version: read.version + 1 }),
            Err(e) if e.is_conflict() => Err(RepoError::Conflict { what: format!("the card of {alert_id}") }),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives up a claim whose create failed for good, so that the alert's next event tries again.
    pub async fn release(&self, alert_id: &str, read: &Versioned<Card>) -> Result<(), RepoError> {
        match self.store.delete(&pk(alert_id), "card", Condition::Version(read.version)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
