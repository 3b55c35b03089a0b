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

use crate::queue::QueueKind;
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
    /// Hands `message` to the queue called `queue` as part of the transaction: it is queued if
    /// and only if the transaction commits. Only a store that shares its file with its queues
    /// (the embedded one, see [`Store::enqueues`]) can do this; DynamoDB cannot share a
    /// transaction with SQS, so there the outbox carries jobs instead. A FIFO message's
    /// deduplication id is its key in the transaction, and is not remembered afterwards: the
    /// transaction's own conditions already make the message happen once.
    Enqueue {
        queue: String,
        message: crate::queue::OutgoingMessage,
    },
}

impl Write {
    pub fn key(&self) -> (&str, &str) {
        match self {
            Write::Put { item, .. } => (&item.pk, &item.sk),
            Write::Delete { pk, sk, .. } | Write::Check { pk, sk, .. } => (pk, sk),
            Write::Enqueue { queue, message } => (queue, message.dedup_id.as_deref().unwrap_or_default()),
        }
    }
}

/// Partitions whose key starts with this are *point partitions*: read and written only by
/// exact key, never a page at a time on a hot path, and written at random places (one per
/// device: the open-alert index and the delivery records beside it). An adapter may keep them
/// apart: the embedded store appends them to a table of their own, found through an index in
/// memory (`store::sqlite::points`); DynamoDB needs nothing. Every operation holds for them as
/// for any partition.
pub const POINT_PARTITION_PREFIX: &str = "open#";

/// DynamoDB's limits, enforced by both adapters so that code tested locally does not fail on AWS.
pub const MAX_TRANSACTION_WRITES: usize = 100;
/// Keys in one [`Store::get_many`] (DynamoDB's `BatchGetItem` limit).
pub const MAX_BATCH_GET: usize = 100;
/// Bytes of UTF-8 in a partition key.
pub const MAX_PK_BYTES: usize = 2048;
/// Bytes of UTF-8 in a sort key.
pub const MAX_SK_BYTES: usize = 1024;
/// An item's size as DynamoDB counts it: attribute names plus values. AWS documents "400 KB"
/// and accepts a little over 409,000 bytes in practice (moto cuts at 405,000); 400,000 is under
/// both.
pub const MAX_ITEM_BYTES: usize = 400_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the condition on {pk}/{sk} did not hold (expected {expected:?}, found {found}); reload the item and retry"
    )]
    ConditionFailed { pk: String, sk: String, expected: Condition, found: Found },
    /// A transaction's write whose condition did not hold (DynamoDB's `ConditionalCheckFailed`
    /// reason). DynamoDB's `TransactionConflict` reason is [`StoreError::Contended`].
    #[error(
        "transaction cancelled because the condition on write {index} ({pk}/{sk}) did not hold; nothing was written"
    )]
    TransactionConflict { index: usize, pk: String, sk: String },
    /// Another transaction was writing the same item at the same moment (DynamoDB's
    /// `TransactionConflict`); nothing was written. Retrying after a short, jittered pause works.
    #[error("another request was writing {pk}/{sk} at the same moment; nothing was written, retry")]
    Contended { pk: String, sk: String },
    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),
    /// A key or item over DynamoDB's limits; the same on both adapters. Nothing was written.
    #[error("{what} is {size} bytes, over the store's limit of {limit}; shorten it (nothing was written)")]
    TooLarge { what: String, size: usize, limit: usize },
    #[error("stored item {pk}/{sk} is malformed: {reason}; the table may have been written by another program")]
    Corrupt { pk: String, sk: String, reason: String },
    #[error("{backend} failed: {message}; check that the store is reachable and retry")]
    Backend { backend: &'static str, message: String },
}

impl StoreError {
    /// A write's condition did not hold: the item is not as the caller expected (it exists
    /// already, or changed). Unlike [`StoreError::Contended`], this is an answer, not a hiccup.
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, StoreError::ConditionFailed { .. } | StoreError::TransactionConflict { .. })
    }

    /// Someone else changed (or was changing) the item: reload and retry.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::ConditionFailed { .. } | StoreError::TransactionConflict { .. } | StoreError::Contended { .. }
        )
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

/// The first page of a partition's items under a sort-key prefix, for [`Store::get_many_and_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery<'a> {
    pub pk: &'a str,
    pub prefix: &'a str,
    pub limit: usize,
}

/// Reads for a decision made where the writes happen (see [`Store::decide_and_write`]): what a
/// write in the same transaction would see.
pub trait ReadNow {
    /// [`Store::get_many`], at most [`MAX_BATCH_GET`] keys.
    fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError>;
    /// The first page of `page` (at most its `limit` items).
    fn page(&self, page: &PageQuery<'_>) -> Result<Vec<Item>, StoreError>;
}

/// What a decision made from its reads wants: `writes` (every one or none, as in
/// [`Store::transact`]; none is fine) and an `answer` for its caller, whatever the caller's type.
pub struct Decided {
    pub writes: Vec<Write>,
    pub answer: Box<dyn std::any::Any + Send>,
}

/// A decision for [`Store::decide_and_write`]. It may run more than once (the embedded writer
/// runs a group again when one of its jobs fails); only the last run's writes are kept.
pub type Decide = Box<dyn FnMut(&dyn ReadNow) -> Result<Decided, StoreError> + Send>;

#[async_trait]
pub trait Store: Send + Sync {
    /// The live item under the key, if any.
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;

    /// The live items under several keys, in the order asked, in one round trip where the
    /// backend allows (DynamoDB `BatchGetItem`, strongly consistent; one SQLite read). At most
    /// [`MAX_BATCH_GET`] keys.
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for (pk, sk) in keys {
            out.push(self.get(pk, sk).await?);
        }
        Ok(out)
    }

    /// Whether [`Write::Enqueue`] works in this store's transactions.
    fn enqueues(&self) -> bool {
        false
    }

    /// Checks that the store can take a write now (for `/healthz`), writing nothing.
    async fn probe(&self) -> Result<(), StoreError> {
        self.get("health", "check").await.map(|_| ())
    }

    /// Writes `item` as it is (its `version` included) if `condition` holds.
    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError>;

    /// Deletes the item if `condition` holds. Deleting nothing under `Condition::None` is fine.
    async fn delete(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError>;

    /// Live items of one partition whose sort key starts with `prefix`, in ascending sort-key
    /// order, at most `limit` of them when given.
    async fn query_prefix(&self, pk: &str, prefix: &str, limit: Option<usize>) -> Result<Vec<Item>, StoreError> {
        self.query_page(pk, prefix, None, limit.unwrap_or(usize::MAX)).await
    }

    /// [`Store::get_many`] of `keys` and the first page of `page` (at most its `limit` items)
    /// together: one read transaction on SQLite (one consistent snapshot, and a new alert's
    /// reads start once instead of twice), both at the same time on DynamoDB.
    async fn get_many_and_page(
        &self,
        keys: &[(String, String)],
        page: &PageQuery<'_>,
    ) -> Result<(Vec<Option<Item>>, Vec<Item>), StoreError> {
        let (items, found) =
            futures_util::future::join(self.get_many(keys), self.query_page(page.pk, page.prefix, None, page.limit))
                .await;
        Ok((items?, found?))
    }

    /// Live items of one partition whose sort key starts with `prefix` and sorts after
    /// `start_after` (when given), in ascending order, at most `limit` of them: one page.
    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError>;

    /// Applies every write or none. At most [`MAX_TRANSACTION_WRITES`] writes, each key once.
    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// Whether [`Store::decide_and_write`] works in this store.
    fn decides_where_it_writes(&self) -> bool {
        false
    }

    /// Reads, decides and writes as one step, where the store can
    /// ([`Store::decides_where_it_writes`]): `decide` reads inside the transaction that then
    /// makes its writes, and nothing else writes in between, so what it read still holds when
    /// its writes land. On the embedded store this is one job on its writer, whose page cache is
    /// warm, instead of a read on another connection and then a write. Returns `decide`'s
    /// answer once its writes committed (if `decide` fails, or a write's condition does not
    /// hold, nothing is written). DynamoDB cannot: read, then write under conditions.
    async fn decide_and_write(&self, _decide: Decide) -> Result<Box<dyn std::any::Any + Send>, StoreError> {
        Err(StoreError::Backend {
            backend: "store",
            message: "this store cannot decide where it writes; read, then write under conditions".into(),
        })
    }

    /// Adds one to the version of the item under the key, creating it at version 1 with empty
    /// data, and returns the new version: an atomic counter, one round trip, no retries. The
    /// item never expires.
    async fn increment(&self, pk: &str, sk: &str) -> Result<u64, StoreError> {
        self.increment_by(pk, sk, 1).await
    }

    /// Adds `by` (at least 1) to the counter and returns the new version: the caller owns the
    /// `by` numbers ending there (a block of numbers in one round trip).
    async fn increment_by(&self, pk: &str, sk: &str, by: u64) -> Result<u64, StoreError>;

    /// Deletes up to `max` items that have expired, returning how many went. The embedded store
    /// needs this so that its file does not grow without bound; DynamoDB's TTL does it on AWS,
    /// so that adapter deletes nothing and returns 0.
    async fn purge_expired(&self, max: usize) -> Result<usize, StoreError>;
}

/// Refuses keys over DynamoDB's limits (DynamoDB itself answers a ValidationException).
pub(crate) fn check_key(pk: &str, sk: &str) -> Result<(), StoreError> {
    let too_large = |what: &str, size, limit| {
        let shown: String = what.chars().take(40).collect();
        StoreError::TooLarge { what: format!("key {shown}…"), size, limit }
    };
    if pk.len() > MAX_PK_BYTES {
        return Err(too_large(pk, pk.len(), MAX_PK_BYTES));
    }
    if sk.len() > MAX_SK_BYTES {
        return Err(too_large(sk, sk.len(), MAX_SK_BYTES));
    }
    Ok(())
}

/// An item's size as DynamoDB computes it: each attribute's name and value in bytes (numbers
/// counted generously at 21 bytes).
pub fn item_size(item: &Item) -> usize {
    const NUMBER: usize = 21;
    let mut size = "pk".len() + item.pk.len() + "sk".len() + item.sk.len();
    size += "v".len() + NUMBER + "data".len() + item.data.len();
    if item.expires_at.is_some() {
        size += "expires_at".len() + NUMBER;
    }
    size
}

/// Refuses an item whose keys or size are over DynamoDB's limits.
pub(crate) fn check_item(item: &Item) -> Result<(), StoreError> {
    check_key(&item.pk, &item.sk)?;
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        return Err(StoreError::TooLarge {
            what: format!("item {}/{}", item.pk, item.sk),
            size,
            limit: MAX_ITEM_BYTES,
        });
    }
    Ok(())
}

/// Checks the keys of a [`Store::get_many`].
pub(crate) fn check_batch_get(keys: &[(String, String)]) -> Result<(), StoreError> {
    if keys.len() > MAX_BATCH_GET {
        return Err(StoreError::InvalidTransaction(format!(
            "a batch read of {} keys is over the limit of {MAX_BATCH_GET}; split it",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|(pk, sk)| check_key(pk, sk))
}

/// Checks one write's keys and size.
pub(crate) fn check_write(write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Put { item, .. } => check_item(item),
        Write::Enqueue { message, .. } => {
            let kind = if message.group_id.is_some() { QueueKind::Fifo } else { QueueKind::Standard };
            crate::queue::validate_send(kind, message)
                .map_err(|e| StoreError::InvalidTransaction(format!("a queued message is refused: {e}")))
        }
        other => {
            let (pk, sk) = other.key();
            check_key(pk, sk)
        }
    }
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
    // A transaction holds a handful of writes (a new alert's: four or five), so comparing each
    // key with those before it costs less than hashing them all; on the embedded store this
    // runs on the writer thread, which every write waits for.
    for (i, w) in writes.iter().enumerate() {
        check_write(w)?;
        let key = w.key();
        if writes[..i].iter().any(|earlier| earlier.key() == key) {
            let (pk, sk) = key;
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

/// Whether `condition` holds for the live item's version (`None`: no live item; an expired item
/// is not live).
pub(crate) fn condition_holds(condition: Condition, live: Option<u64>) -> bool {
    match (condition, live) {
        (Condition::None, _) => true,
        (Condition::Absent, live) => live.is_none(),
        (Condition::Version(v), Some(version)) => version == v,
        (Condition::Version(_), None) => false,
    }
}

pub(crate) fn found(live: Option<u64>) -> Found {
    live.map_or(Found::Nothing, Found::Version)
}
