//! Alerts, and the index that finds the open alert for a (source, dedup key).

use super::{RepoError, Versioned, counter, create_write, decode, update_write};
use crate::domain::Alert;
use crate::store::{Condition, Item, POINT_PARTITION_PREFIX, Store, StoreError, Write};
use std::sync::Arc;

#[derive(Clone)]
pub struct AlertRepo {
    store: Arc<dyn Store>,
}

fn alert_pk(id: &str) -> String {
    format!("alert#{id}")
}

/// In a point partition ([`crate::store::POINT_PARTITION_PREFIX`]): only ever read by key.
fn open_pk(source: &str, dedup_key: &str) -> String {
    format!("{POINT_PARTITION_PREFIX}{source}#{dedup_key}")
}

impl AlertRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        AlertRepo { store }
    }

    /// A fresh id such as `ALR-12`, from this process's block of numbers.
    pub async fn next_id(&self, numbers: &counter::NumberBlocks) -> Result<String, RepoError> {
        Ok(Self::id_of(numbers.next(self.store.as_ref()).await?))
    }

    /// The id of alert number `n`.
    pub fn id_of(n: u64) -> String {
        format!("ALR-{n}")
    }

    /// The number in an id made by [`AlertRepo::id_of`].
    pub fn number_in(id: &str) -> Option<u64> {
        id.strip_prefix("ALR-")?.parse().ok()
    }

    pub async fn get(&self, id: &str) -> Result<Option<Versioned<Alert>>, RepoError> {
        Self::read(self.store.get(&alert_pk(id), "alert").await?, id)
    }

    /// The key of alert `id`, for reading it together with other items.
    pub fn key(id: &str) -> (String, String) {
        (alert_pk(id), "alert".to_string())
    }

    /// The alert read under [`AlertRepo::key`].
    pub fn read(item: Option<Item>, id: &str) -> Result<Option<Versioned<Alert>>, RepoError> {
        item.map(|item| decode(&item, &format!("alert {id}"))).transpose()
    }

    /// The open-alert index for (source, dedup key): the alert it points at, if still open, and
    /// the index entry's version (for replacing or removing it under a condition).
    pub async fn find_open(&self, source: &str, dedup_key: &str) -> Result<OpenLookup, RepoError> {
        self.resolve_open(self.store.get(&open_pk(source, dedup_key), "open").await?).await
    }

    /// The key of the open-alert index entry for (source, dedup key), for reading it together
    /// with other items; [`AlertRepo::resolve_open`] interprets what was read.
    pub fn open_key(source: &str, dedup_key: &str) -> (String, String) {
        (open_pk(source, dedup_key), "open".to_string())
    }

    /// The open alert an index entry read under [`AlertRepo::open_key`] points at.
    pub async fn resolve_open(&self, pointer: Option<Item>) -> Result<OpenLookup, RepoError> {
        let alert = match &pointer {
            Some(p) => self.store.get(&alert_pk(&p.data), "alert").await?,
            None => None,
        };
        Self::open_lookup(pointer, alert)
    }

    /// What the index entry `pointer` says, with `alert` read under [`AlertRepo::key`] of the id
    /// it points at ([`AlertRepo::pointed_at`]).
    pub fn open_lookup(pointer: Option<Item>, alert: Option<Item>) -> Result<OpenLookup, RepoError> {
        let Some(pointer) = pointer else { return Ok(OpenLookup::default()) };
        let alert = Self::read(alert, &pointer.data)?.filter(|a| !a.value.is_closed());
        Ok(OpenLookup { alert, index_version: Some(pointer.version) })
    }

    /// The key of the alert an open-alert index entry points at.
    pub fn pointed_at(pointer: &Item) -> (String, String) {
        Self::key(&pointer.data)
    }

    /// Stores a new alert, makes it the open alert for its key (the entry read as
    /// `index_version`, or a new one), and `extra` writes (its jobs, a delivery record): all in
    /// one transaction, so all of them exist afterwards, or none.
    pub async fn create(&self, alert: &Alert, index_version: Option<u64>, extra: Vec<Write>) -> Result<(), RepoError> {
        let writes = Self::create_writes(alert, index_version, extra);
        self.store.transact(writes).await.map_err(|e| Self::create_failed(&alert.source, &alert.dedup_key, e))
    }

    /// The writes of [`AlertRepo::create`].
    pub fn create_writes(alert: &Alert, index_version: Option<u64>, extra: Vec<Write>) -> Vec<Write> {
        let mut writes = vec![create_write(alert_pk(&alert.id), "alert", alert)];
        if !alert.is_closed() {
            let index = Item::new(open_pk(&alert.source, &alert.dedup_key), "open", alert.id.clone());
            writes.push(match index_version {
                None => Write::Put { item: index, condition: Condition::Absent },
                Some(v) => Write::Put { item: index.with_version(v + 1), condition: Condition::Version(v) },
            });
        }
        writes.extend(extra);
        writes
    }

    /// What a failed write of a new alert for (source, dedup key) means: a conflict is retried.
    pub fn create_failed(source: &str, dedup_key: &str, e: StoreError) -> RepoError {
        match e {
            e if e.is_conflict() => RepoError::Conflict { what: format!("the open alert for {source} / {dedup_key}") },
            e => e.into(),
        }
    }

    /// Replaces the alert read at `read.version` with `updated`, plus `extra` writes, atomically.
    /// When the update closes the alert and the open index still points at it, the index goes
    /// too (conditioned on its version, so a newer alert that took the key keeps it).
    pub async fn update(&self, read: &Versioned<Alert>, updated: &Alert, extra: Vec<Write>) -> Result<(), RepoError> {
        let mut writes = vec![update_write(alert_pk(&updated.id), "alert", updated, read.version)];
        if updated.is_closed() && !read.value.is_closed() {
            let pk = open_pk(&updated.source, &updated.dedup_key);
            if let Some(index) = self.store.get(&pk, "open").await?
                && index.data == updated.id
            {
                writes.push(Write::Delete { pk, sk: "open".into(), condition: Condition::Version(index.version) });
            }
        }
        writes.extend(extra);
        self.store.transact(writes).await.map_err(|e| Self::update_failed(updated, e))
    }

    /// The writes of [`AlertRepo::update`] for an update that leaves the alert open (so that
    /// the open-alert index stays as it is).
    pub fn update_open_writes(read: &Versioned<Alert>, updated: &Alert, extra: Vec<Write>) -> Vec<Write> {
        debug_assert!(!updated.is_closed(), "an update that closes the alert also updates the open-alert index");
        let mut writes = vec![update_write(alert_pk(&updated.id), "alert", updated, read.version)];
        writes.extend(extra);
        writes
    }

    /// What a failed write of an update of `updated` means.
    fn update_failed(updated: &Alert, e: StoreError) -> RepoError {
        match e {
            e if e.is_conflict() => RepoError::Conflict { what: format!("alert {}", updated.id) },
            e => e.into(),
        }
    }
}

/// What the open-alert index says for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenLookup {
    pub alert: Option<Versioned<Alert>>,
    pub index_version: Option<u64>,
}
