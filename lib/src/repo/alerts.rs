//! Alerts, and the index that finds the open alert for a (source, dedup key).

use super::{RepoError, Versioned, counter, create_write, decode, update_write};
use crate::domain::Alert;
use crate::store::{Condition, Store, Write};
use std::sync::Arc;

#[derive(Clone)]
pub struct AlertRepo {
    store: Arc<dyn Store>,
}

fn alert_pk(id: &str) -> String {
    format!("alert#{id}")
}

fn open_pk(source: &str, dedup_key: &str) -> String {
    format!("open#{source}#{dedup_key}")
}

impl AlertRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        AlertRepo { store }
    }

    /// A fresh id such as `ALR-12`.
    pub async fn next_id(&self) -> Result<String, RepoError> {
        Ok(format!("ALR-{}", counter::next(self.store.as_ref(), "alert").await?))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Versioned<Alert>>, RepoError> {
        match self.store.get(&alert_pk(id), "alert").await? {
            None => Ok(None),
            Some(item) => decode(&item, &format!("alert {id}")).map(Some),
        }
    }

    /// The open (or acknowledged) alert that `source` raised under `dedup_key`, if any.
    pub async fn find_open(&self, source: &str, dedup_key: &str) -> Result<Option<Versioned<Alert>>, RepoError> {
        let Some(pointer) = self.store.get(&open_pk(source, dedup_key), "open").await? else {
            return Ok(None);
        };
        Ok(self.get(&pointer.data).await?.filter(|a| !a.value.is_closed()))
    }

    /// Stores a new alert, its open-index entry and `extra` writes (its notification jobs) in one
    /// transaction: all of them exist afterwards, or none.
    pub async fn create(&self, alert: &Alert, extra: Vec<Write>) -> Result<(), RepoError> {
        let mut writes = vec![create_write(alert_pk(&alert.id), "alert", alert)];
        if !alert.is_closed() {
            writes.push(Write::Put {
                item: crate::store::Item::new(open_pk(&alert.source, &alert.dedup_key), "open", alert.id.clone()),
                condition: Condition::Absent,
            });
        }
        writes.extend(extra);
        self.store.transact(writes).await.map_err(|e| match e {
            e if e.is_conflict() => RepoError::AlreadyExists {
                what: format!("an open alert for {} / {} (or alert {})", alert.source, alert.dedup_key, alert.id),
            },
            e => e.into(),
        })
    }

    /// Replaces the alert read at `read.version` with `updated`, plus `extra` writes, atomically.
    /// When the update closes the alert, its open-index entry goes too.
    pub async fn update(&self, read: &Versioned<Alert>, updated: &Alert, extra: Vec<Write>) -> Result<(), RepoError> {
        let mut writes = vec![update_write(alert_pk(&updated.id), "alert", updated, read.version)];
        if updated.is_closed() && !read.value.is_closed() {
            writes.push(Write::Delete {
                pk: open_pk(&updated.source, &updated.dedup_key),
                sk: "open".into(),
                condition: Condition::None,
            });
        }
        writes.extend(extra);
        self.store.transact(writes).await.map_err(|e| match e {
            e if e.is_conflict() => RepoError::Conflict { what: format!("alert {}", updated.id) },
            e => e.into(),
        })
    }
}
