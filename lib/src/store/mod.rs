//! The store port: the small subset of DynamoDB that Klaxon needs, with two adapters.
//!
//! * [`sqlite::SqliteStore`], the embedded default: one file under a data directory.
//! * [`dynamodb::DynamoStore`], one DynamoDB table on AWS.
//!
//! Items live in partitions (`pk`) and are ordered by sort key (`sk`) as byte strings, as in
//! DynamoDB. Every item carries a `version` that conditional writes compare, and an optional
//! `expires_at` (Unix seconds): an expired item is invisible to reads and counts as absent for
//! conditions, whether or not the backend has deleted it yet (DynamoDB's TTL deletes up to 48 h
//! late, and moto never does).
//!
//! The contract test suite in `tests/` runs unchanged against both adapters.

pub mod dynamodb;
pub mod sqlite;

use async_trait::async_trait;

/// One stored record. `data` is opaque to the store (the repositories put JSON in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub version: u64,
    pub data: String,
    pub expires_at: Option<i64>,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>, data: impl Into<String>) -> Self {
        Item { pk: pk.into(), sk: sk.into(), version: 1, data: data.into(), expires_at: None }
    }

    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    pub fn expiring_at(mut self, unix_seconds: i64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// What must hold for a write to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Write unconditionally.
    None,
    /// No live item exists under the key (an expired one counts as absent).
    Absent,
    /// A live item exists under the key and its version is exactly this.
    Version(u64),
}

/// One part of an all-or-nothing transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        item: Item,
        condition: Condition,
    },
    Delete {
        pk: String,
        sk: String,
        condition: Condition,
    },
    /// Writes nothing; the transaction fails unless the condition holds.
    Check {
        pk: String,
        sk: String,
        condition: Condition,
    },
}

impl Write {
    pub fn key(&self) -> (&str, &str) {
        match self {
            Write::Put { item, .. } => (&item.pk, &item.sk),
            Write::Delete { pk, sk, .. } | Write::Check { pk, sk, .. } => (pk, sk),
        }
    }
}

/// DynamoDB's limit for one TransactWriteItems call; the SQLite adapter enforces it too so that
/// code tested locally does not fail on AWS.
pub const MAX_TRANSACTION_WRITES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the condition on {pk}/{sk} did not hold (expected {expected:?}, found {found}); reload the item and retry"
    )]
    ConditionFailed { pk: String, sk: String, expected: Condition, found: Found },
    #[error(
        "transaction cancelled because the condition on write {index} ({pk}/{sk}) did not hold; nothing was written"
    )]
    TransactionConflict { index: usize, pk: String, sk: String },
    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),
    #[error("stored item {pk}/{sk} is malformed: {reason}; the table may have been written by another program")]
    Corrupt { pk: String, sk: String, reason: String },
    #[error("{backend} failed: {message}; check that the store is reachable and retry")]
    Backend { backend: &'static str, message: String },
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::ConditionFailed { .. } | StoreError::TransactionConflict { .. })
    }
}

/// What a failed condition found under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Version(u64),
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Nothing => f.write_str("no item"),
            Found::Version(v) => write!(f, "version {v}"),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The live item under the key, if any.
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;

    /// Writes `item` as it is (its `version` included) if `condition` holds.
    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError>;

    /// Deletes the item if `condition` holds. Deleting nothing under `Condition::None` is fine.
    async fn delete(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError>;

    /// Live items of one partition whose sort key starts with `prefix`, in ascending sort-key
    /// order, at most `limit` of them when given.
    async fn query_prefix(&self, pk: &str, prefix: &str, limit: Option<usize>) -> Result<Vec<Item>, StoreError>;

    /// Applies every write or none. At most [`MAX_TRANSACTION_WRITES`] writes, each key once.
    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError>;
}

/// Checks the rules that both adapters share before a transaction reaches the backend.
pub(crate) fn validate_transaction(writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Err(StoreError::InvalidTransaction("it has no writes".into()));
    }
    if writes.len() > MAX_TRANSACTION_WRITES {
        return Err(StoreError::InvalidTransaction(format!(
            "it has {} writes, more than the limit of {MAX_TRANSACTION_WRITES}; split it",
            writes.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for w in writes {
        let (pk, sk) = w.key();
        if !seen.insert((pk, sk)) {
            return Err(StoreError::InvalidTransaction(format!(
                "{pk}/{sk} appears twice; a transaction may touch each item once"
            )));
        }
    }
    Ok(())
}

pub(crate) fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Whether `condition` holds given the live item (expired items already filtered out).
pub(crate) fn condition_holds(condition: Condition, live: Option<&Item>) -> bool {
    match (condition, live) {
        (Condition::None, _) => true,
        (Condition::Absent, live) => live.is_none(),
        (Condition::Version(v), Some(item)) => item.version == v,
        (Condition::Version(_), None) => false,
    }
}

pub(crate) fn found(live: Option<&Item>) -> Found {
    live.map_or(Found::Nothing, |i| Found::Version(i.version))
}
