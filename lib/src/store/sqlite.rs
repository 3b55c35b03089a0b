//! The embedded store: one SQLite file, the same semantics as the DynamoDB adapter.

use super::{
    Condition, Decide, Decided, Item, PageQuery, ReadNow, Store, StoreError, Write, check_batch_get, check_key,
    check_write, condition_holds, found, now_unix, validate_transaction,
};
use crate::embedded::tx_state::lock;
use crate::embedded::{Db, DbError};
use async_trait::async_trait;
use points::{Points, is_point};
use rusqlite::{OptionalExtension, Transaction, params};
use std::sync::{Arc, Mutex};

mod points;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    expires_at INTEGER,
    written INTEGER,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
";

/// The purge of expired rows finds them by this index without scanning the table.
///
/// `written` (when the row was written, in microseconds) orders the rows that expire in the same
/// second by when they were written, so that a new entry lands at the end of its second, beside
/// the previous one. Indexed by `expires_at` alone, SQLite orders them by key instead: in a
/// storm the requests' idempotency records (`seen#`, keyed by a hash of the request) landed on a
/// random page of the index each, a page written to the WAL (and copied back by the checkpoint)
/// for every alert: about a quarter of all the pages a new alert wrote. An older file's
/// `items_expiry` index is replaced on open; its rows keep `written` empty, which sorts first
/// and changes nothing else.
const EXPIRY_INDEX: &str = "
DROP INDEX IF EXISTS items_expiry;
CREATE INDEX IF NOT EXISTS items_expiring ON items (expires_at, written) WHERE expires_at IS NOT NULL;
";

/// One page of a partition's live items under a sort-key prefix, in key order.
///
/// substr() compares bytes of the UTF-8 text with the BINARY collation, which orders exactly as
/// DynamoDB orders string sort keys. Written so that SQLite never compiles it again (a
/// maintenance lookup runs it on every trigger): no `LIMIT ?` (the caller stops reading), and
/// `pk = ?1 COLLATE BINARY` rather than `pk = ?1`, which beside `ORDER BY` made SQLite recompile
/// it every time the key was bound. The plan is the same: a range of the primary key.
const QUERY_PAGE: &str = "SELECT pk, sk, version, data, expires_at FROM items
     WHERE pk = ?1 COLLATE BINARY AND substr(sk, 1, length(?2)) = ?2
       AND (?4 IS NULL OR sk > ?4)
       AND (expires_at IS NULL OR expires_at > ?3)
     ORDER BY sk";

/// [`QUERY_PAGE`] in a point partition ([`points`]): nothing reads those a page at a time, so
/// it reads the whole table (kept for the store's contract, which holds for every partition).
const POINT_QUERY_PAGE: &str = "SELECT pk, sk, version, data, expires_at FROM point_items
     WHERE pk = ?1 AND substr(sk, 1, length(?2)) = ?2
       AND (?4 IS NULL OR sk > ?4)
       AND (expires_at IS NULL OR expires_at > ?3)
     ORDER BY sk";

#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
    /// The index of the point partitions' rows ([`points`]), shared with the writer.
    points: Arc<Mutex<Points>>,
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Backend { backend: "SQLite store", message: e.to_string() }
    }
}

impl SqliteStore {
    pub fn new(db: Db) -> Result<Self, StoreError> {
        let points = db.tx_state(Points::new);
        let moving = points.clone();
        db.setup(move |tx| {
            tx.execute_batch(SCHEMA)?;
            let has_written: bool =
                tx.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('items') WHERE name = 'written'", [], |r| {
                    r.get(0)
                })?;
            if !has_written {
                tx.execute_batch("ALTER TABLE items ADD COLUMN written INTEGER")?;
            }
            tx.execute_batch(EXPIRY_INDEX)?;
            tx.execute_batch(points::SCHEMA)?;
            tx.execute_batch(points::MOVE_FROM_ITEMS)?;
            let moved = lock(&moving).index_new_rows(tx)?;
            if moved > 0 {
                tracing::info!(items = moved, "moved the open-alert index into its own table");
            }
            Ok(())
        })?;
        // Transactions may queue messages (`Write::Enqueue`), so the queue's tables exist too.
        crate::queue::sqlite::create_tables(&db)
            .map_err(|e| StoreError::Backend { backend: "SQLite store", message: e.to_string() })?;
        tracing::debug!(items = lock(&points).len(), "point partitions indexed");
        Ok(SqliteStore { db, points })
    }

    /// Reads `keys` (and `query`'s page, if any) on the writer when a point partition is
    /// among them (their index lives there), on a reader connection otherwise.
    async fn read_keys<T: Send + 'static>(
        &self,
        keys: Vec<(String, String)>,
        query: Option<(String, String, usize)>,
        done: fn(Vec<Option<Item>>, Vec<Item>) -> T,
    ) -> Result<T, StoreError> {
        let keys_in_points = keys.iter().any(|(pk, _)| is_point(pk));
        let (now, points) = (now_unix(), self.points.clone());
        let read = move |tx: &rusqlite::Connection| {
            keys_and_page(tx, &points, &keys, query.as_ref(), now).map(|(items, page)| done(items, page))
        };
        // The index is only ever used on the writer: a read without point keys goes elsewhere.
        if keys_in_points {
            return Ok(self.db.run(move |tx: &Transaction<'_>| read(tx)).await?);
        }
        Ok(self.db.read(read).await?)
    }
}

/// The live items under `keys` and the first page of `query`, in one transaction.
fn keys_and_page(
    tx: &rusqlite::Connection,
    points: &Mutex<Points>,
    keys: &[(String, String)],
    query: Option<&(String, String, usize)>,
    now: i64,
) -> rusqlite::Result<(Vec<Option<Item>>, Vec<Item>)> {
    let items = keys.iter().map(|(pk, sk)| live_in(tx, points, pk, sk, now)).collect::<rusqlite::Result<_>>()?;
    let page = match query {
        Some((pk, prefix, limit)) => page(tx, pk, prefix, now, None, *limit)?,
        None => Vec::new(),
    };
    Ok((items, page))
}

/// The live item under the key, on the writer (a point partition's is found through the index).
fn live_in(
    tx: &rusqlite::Connection,
    points: &Mutex<Points>,
    pk: &str,
    sk: &str,
    now: i64,
) -> rusqlite::Result<Option<Item>> {
    if is_point(pk) {
        return Ok(lock(points).find(tx, pk, sk)?.filter(|r| r.is_live(now)).map(|r| r.item));
    }
    live_item(tx, pk, sk, now)
}

/// The live item under a key outside the point partitions.
fn live_item(tx: &rusqlite::Connection, pk: &str, sk: &str, now: i64) -> rusqlite::Result<Option<Item>> {
    debug_assert!(!is_point(pk), "a point partition's item is read through its index (`live_in`)");
    tx.prepare_cached(
        "SELECT pk, sk, version, data, expires_at FROM items
         WHERE pk = ?1 AND sk = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
    )?
    .query_row(params![pk, sk, now], row_to_item)
    .optional()
}

/// One page of [`QUERY_PAGE`].
fn page(
    tx: &rusqlite::Connection,
    pk: &str,
    prefix: &str,
    now: i64,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<Item>> {
    let mut stmt = tx.prepare_cached(if is_point(pk) { POINT_QUERY_PAGE } else { QUERY_PAGE })?;
    let rows = stmt.query_map(params![pk, prefix, now, after], row_to_item)?;
    rows.take(limit).collect()
}

fn row_to_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        pk: row.get(0)?,
        sk: row.get(1)?,
        version: row.get::<_, i64>(2)? as u64,
        data: row.get(3)?,
        expires_at: row.get(4)?,
    })
}

/// What a decision on the writer reads: the transaction it is about to write in.
struct TxReads<'a> {
    tx: &'a Transaction<'a>,
    points: &'a Mutex<Points>,
    now: i64,
}

impl ReadNow for TxReads<'_> {
    fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError> {
        check_batch_get(keys)?;
        keys.iter().map(|(pk, sk)| live_in(self.tx, self.points, pk, sk, self.now).map_err(sqlite_error)).collect()
    }

    fn page(&self, query: &PageQuery<'_>) -> Result<Vec<Item>, StoreError> {
        check_key(query.pk, query.prefix)?;
        page(self.tx, query.pk, query.prefix, self.now, None, query.limit).map_err(sqlite_error)
    }
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::from(DbError::from(e))
}

/// Applies `writes` in order inside `tx`; the first whose condition fails fails them all (the
/// caller rolls back).
fn apply_all(
    tx: &Transaction<'_>,
    points: &Mutex<Points>,
    writes: &[Write],
    now: i64,
) -> Result<Result<(), StoreError>, rusqlite::Error> {
    for (index, write) in writes.iter().enumerate() {
        if let Err(e) = apply(tx, points, write, now)? {
            let (pk, sk) = write.key();
            debug_assert!(e.is_conflict());
            return Ok(Err(StoreError::TransactionConflict { index, pk: pk.into(), sk: sk.into() }));
        }
    }
    Ok(Ok(()))
}

fn enqueued(writes: &[Write]) -> usize {
    writes.iter().filter(|w| matches!(w, Write::Enqueue { .. })).count()
}

/// Applies one write inside `tx`. The outer error is SQLite failing; the inner one is the write's
/// condition not holding (nothing was written).
///
/// A put checks its condition in the statement that writes (the writer's hot path: every alert
/// puts three or four items), so the row is looked up once, not once to check and once to
/// write; only when the condition fails is the live version read, for the error.
fn apply(
    tx: &Transaction<'_>,
    points: &Mutex<Points>,
    write: &Write,
    now: i64,
) -> Result<Result<(), StoreError>, rusqlite::Error> {
    let (condition, held) = match write {
        Write::Enqueue { queue, message } => {
            let now_ms = jiff::Timestamp::now().as_millisecond();
            crate::queue::sqlite::insert_message(
                tx,
                queue,
                message,
                now_ms,
                crate::queue::sqlite::Dedup::InTransaction,
            )?;
            return Ok(Ok(()));
        }
        Write::Put { item, condition } if is_point(&item.pk) => {
            (*condition, put_point(tx, &mut lock(points), item, *condition, now)?)
        }
        Write::Put { item, condition } => (*condition, put(tx, item, *condition, now)?),
        Write::Delete { pk, sk, condition } if is_point(pk) => {
            let mut points = lock(points);
            let row = points.find(tx, pk, sk)?;
            let holds = condition_holds(*condition, row.as_ref().and_then(|r| r.live_version(now)));
            if holds && let Some(row) = row {
                points.delete(tx, row.id, pk, sk)?;
            }
            (*condition, holds)
        }
        Write::Delete { pk, sk, condition } => {
            let holds = condition_holds(*condition, live_version(tx, points, pk, sk, now)?);
            if holds {
                tx.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")?.execute(params![pk, sk])?;
            }
            (*condition, holds)
        }
        Write::Check { pk, sk, condition } => {
            (*condition, condition_holds(*condition, live_version(tx, points, pk, sk, now)?))
        }
    };
    if held {
        return Ok(Ok(()));
    }
    let (pk, sk) = write.key();
    Ok(Err(StoreError::ConditionFailed {
        pk: pk.to_string(),
        sk: sk.to_string(),
        expected: condition,
        found: found(live_version(tx, points, pk, sk, now)?),
    }))
}

/// A put without a condition.
const PUT: &str =
    "INSERT OR REPLACE INTO items (pk, sk, version, data, expires_at, written) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// A put if no live item is there: inserted, or written over an expired row; a live row leaves
/// the statement without a change (`?7`: now).
const PUT_IF_ABSENT: &str =
    "INSERT INTO items (pk, sk, version, data, expires_at, written) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (pk, sk) DO UPDATE SET version = excluded.version, data = excluded.data,
         expires_at = excluded.expires_at, written = excluded.written
     WHERE items.expires_at IS NOT NULL AND items.expires_at <= ?7";
/// A put if the live item has version `?7` (`?8`: now).
const PUT_IF_VERSION: &str = "UPDATE items SET version = ?3, data = ?4, expires_at = ?5, written = ?6
     WHERE pk = ?1 AND sk = ?2 AND version = ?7 AND (expires_at IS NULL OR expires_at > ?8)";

/// Writes `item` if `condition` holds, in one statement; false (and nothing written) if it
/// does not. An expired row counts as absent, as everywhere in the store.
fn put(tx: &Transaction<'_>, item: &Item, condition: Condition, now: i64) -> rusqlite::Result<bool> {
    // Only an expiring row needs `written` (see EXPIRY_INDEX).
    let written = item.expires_at.map(|_| jiff::Timestamp::now().as_microsecond());
    let (pk, sk, version, data, expires_at) = (&item.pk, &item.sk, item.version as i64, &item.data, item.expires_at);
    let changed = match condition {
        Condition::None => tx.prepare_cached(PUT)?.execute(params![pk, sk, version, data, expires_at, written])?,
        Condition::Absent => {
            tx.prepare_cached(PUT_IF_ABSENT)?.execute(params![pk, sk, version, data, expires_at, written, now])?
        }
        Condition::Version(expected) => tx.prepare_cached(PUT_IF_VERSION)?.execute(params![
            pk,
            sk,
            version,
            data,
            expires_at,
            written,
            expected as i64,
            now
        ])?,
    };
    Ok(changed == 1)
}

/// [`put`] in a point partition: the row is found through the index, changed in place, or
/// appended.
fn put_point(
    tx: &Transaction<'_>,
    points: &mut Points,
    item: &Item,
    condition: Condition,
    now: i64,
) -> rusqlite::Result<bool> {
    let written = item.expires_at.map(|_| jiff::Timestamp::now().as_microsecond());
    let row = points.find(tx, &item.pk, &item.sk)?;
    if !condition_holds(condition, row.as_ref().and_then(|r| r.live_version(now))) {
        return Ok(false);
    }
    match row {
        Some(row) => Points::update(tx, row.id, item, written)?,
        None => points.insert(tx, item, written)?,
    }
    Ok(true)
}

/// The version of the live item under the key, if there is one.
fn live_version(
    tx: &rusqlite::Connection,
    points: &Mutex<Points>,
    pk: &str,
    sk: &str,
    now: i64,
) -> rusqlite::Result<Option<u64>> {
    if is_point(pk) {
        return Ok(live_in(tx, points, pk, sk, now)?.map(|i| i.version));
    }
    tx.prepare_cached(
        "SELECT version FROM items WHERE pk = ?1 AND sk = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
    )?
    .query_row(params![pk, sk, now], |r| r.get::<_, i64>(0))
    .optional()
    .map(|v| v.map(|v| v as u64))
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        check_key(pk, sk)?;
        self.read_keys(vec![(pk.to_string(), sk.to_string())], None, |mut items, _| items.pop().flatten()).await
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError> {
        check_batch_get(keys)?;
        self.read_keys(keys.to_vec(), None, |items, _| items).await
    }

    fn enqueues(&self) -> bool {
        true
    }

    async fn probe(&self) -> Result<(), StoreError> {
        // Through the writer: a locked file must show here even though reads still work.
        Ok(self.db.run(|_| Ok(())).await?)
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        let write = Write::Put { item, condition };
        check_write(&write)?;
        let (now, points) = (now_unix(), self.points.clone());
        self.db.run(move |tx| apply(tx, &points, &write, now)).await?
    }

    async fn delete(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        let write = Write::Delete { pk: pk.to_string(), sk: sk.to_string(), condition };
        check_write(&write)?;
        let (now, points) = (now_unix(), self.points.clone());
        self.db.run(move |tx| apply(tx, &points, &write, now)).await?
    }

    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        check_key(pk, prefix)?;
        let (pk, prefix, now) = (pk.to_string(), prefix.to_string(), now_unix());
        let after = start_after.map(str::to_string);
        Ok(self.db.read(move |tx| page(tx, &pk, &prefix, now, after.as_deref(), limit)).await?)
    }

    async fn get_many_and_page(
        &self,
        keys: &[(String, String)],
        query: &PageQuery<'_>,
    ) -> Result<(Vec<Option<Item>>, Vec<Item>), StoreError> {
        check_batch_get(keys)?;
        check_key(query.pk, query.prefix)?;
        let query = (query.pk.to_string(), query.prefix.to_string(), query.limit);
        self.read_keys(keys.to_vec(), Some(query), |items, page| (items, page)).await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        let (now, points) = (now_unix(), self.points.clone());
        let queued = enqueued(&writes);
        // `Db::run_or_rollback` keeps the writes only when the closure returns Ok(Ok(..)).
        let outcome = self.db.run_or_rollback(move |tx| apply_all(tx, &points, &writes, now)).await?;
        if outcome.is_ok() {
            self.db.wake_receivers(queued);
        }
        outcome
    }

    fn decides_where_it_writes(&self) -> bool {
        true
    }

    async fn decide_and_write(&self, mut decide: Decide) -> Result<Box<dyn std::any::Any + Send>, StoreError> {
        let points = self.points.clone();
        let outcome = self.db.run_or_rollback(move |tx| {
            let now = now_unix();
            let Decided { writes, answer } = match decide(&TxReads { tx, points: &points, now }) {
                Ok(decided) => decided,
                Err(e) => return Ok(Err(e)),
            };
            if writes.is_empty() {
                return Ok(Ok((answer, 0)));
            }
            if let Err(e) = validate_transaction(&writes) {
                return Ok(Err(e));
            }
            Ok(apply_all(tx, &points, &writes, now)?.map(|()| (answer, enqueued(&writes))))
        });
        let (answer, queued) = outcome.await??;
        self.db.wake_receivers(queued);
        Ok(answer)
    }

    async fn increment_by(&self, pk: &str, sk: &str, by: u64) -> Result<u64, StoreError> {
        check_key(pk, sk)?;
        let (pk, sk, by) = (pk.to_string(), sk.to_string(), by.max(1) as i64);
        let points = self.points.clone();
        let n = self
            .db
            .run(move |tx| {
                if is_point(&pk) {
                    return increment_point(tx, &mut lock(&points), &pk, &sk, by);
                }
                tx.prepare_cached(
                    "INSERT INTO items (pk, sk, version, data, expires_at) VALUES (?1, ?2, ?3, '', NULL)
                     ON CONFLICT (pk, sk) DO UPDATE SET version = version + ?3
                     RETURNING version",
                )?
                .query_row(params![pk, sk, by], |row| row.get::<_, i64>(0))
            })
            .await?;
        Ok(n as u64)
    }

    async fn purge_expired(&self, max: usize) -> Result<usize, StoreError> {
        let (now, points) = (now_unix(), self.points.clone());
        let deleted = self
            .db
            .run(move |tx| {
                let items = tx.execute(
                    "DELETE FROM items WHERE (pk, sk) IN (
                         SELECT pk, sk FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
                    params![now, max as i64],
                )?;
                let rest = max.saturating_sub(items);
                let point_rows = if rest > 0 { lock(&points).purge_expired(tx, now, rest)? } else { 0 };
                Ok(items + point_rows)
            })
            .await?;
        Ok(deleted)
    }
}

/// [`Store::increment_by`] in a point partition (as in `items`: an expired row counts on).
fn increment_point(tx: &Transaction<'_>, points: &mut Points, pk: &str, sk: &str, by: i64) -> rusqlite::Result<i64> {
    match points.find(tx, pk, sk)? {
        Some(row) => {
            let next = row.item.version as i64 + by;
            let item = row.item.with_version(next as u64);
            Points::update(tx, row.id, &item, None)?;
            Ok(next)
        }
        None => {
            points.insert(tx, &Item::new(pk, sk, "").with_version(by as u64), None)?;
            Ok(by)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Item;

    #[tokio::test]
    async fn rows_expiring_together_are_indexed_in_the_order_written_and_an_older_file_gets_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        // A file from before: no `written`, expiry indexed by `expires_at` alone.
        db.execute_batch(
            "CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
                 expires_at INTEGER, PRIMARY KEY (pk, sk)) WITHOUT ROWID;
             CREATE INDEX items_expiry ON items (expires_at) WHERE expires_at IS NOT NULL;
             INSERT INTO items VALUES ('seen#old', 'seen', 1, '{}', 100);",
        )
        .unwrap();
        let store = SqliteStore::new(db.clone()).unwrap();
        // Keys in descending order, all expiring in the same second, as a storm's records do.
        for key in ["seen#c", "seen#b", "seen#a"] {
            store.put(Item::new(key, "seen", "{}").expiring_at(4_000_000_000), Condition::None).await.unwrap();
        }
        let (order, indexes, plan) = db
            .read(|tx| {
                // Walking the index by `expires_at` yields the rows in the index's own order.
                let order: Vec<String> = tx
                    .prepare("SELECT pk FROM items INDEXED BY items_expiring WHERE expires_at IS NOT NULL ORDER BY expires_at")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let indexes: Vec<String> = tx
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items' AND sql IS NOT NULL")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let plan: Vec<String> = tx
                    .prepare(
                        "EXPLAIN QUERY PLAN SELECT pk, sk FROM items WHERE expires_at IS NOT NULL AND expires_at <= 5 LIMIT 10",
                    )?
                    .query_map([], |r| r.get(3))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok((order, indexes, plan))
            })
            .await
            .unwrap();
        assert_eq!(
            order,
            ["seen#old", "seen#c", "seen#b", "seen#a"],
            "the index follows the order written, not the keys"
        );
        assert_eq!(indexes, ["items_expiring"], "the older index is replaced");
        assert!(plan.iter().any(|p| p.contains("items_expiring")), "the purge walks the index: {plan:?}");
        assert_eq!(store.purge_expired(10).await.unwrap(), 1, "the older file's expired row is purged");
    }

    fn store_in(dir: &tempfile::TempDir) -> (Db, SqliteStore) {
        let db = Db::open_in(dir.path()).unwrap();
        let store = SqliteStore::new(db.clone()).unwrap();
        (db, store)
    }

    /// A decision that bumps the item under `key` by one: reads it, then puts the next version
    /// under a condition on the version read (answering the version it wrote).
    fn bump(key: &'static str) -> Decide {
        Box::new(move |read: &dyn ReadNow| {
            let live = read.get_many(&[(key.to_string(), "n".to_string())])?.pop().flatten();
            let (next, condition) = match &live {
                Some(item) => (item.version + 1, Condition::Version(item.version)),
                None => (1, Condition::Absent),
            };
            let item = Item::new(key, "n", next.to_string()).with_version(next);
            Ok(Decided { writes: vec![Write::Put { item, condition }], answer: Box::new(next) })
        })
    }

    async fn decide(store: &SqliteStore, decide: Decide) -> Result<u64, StoreError> {
        assert!(store.decides_where_it_writes());
        let answer = store.decide_and_write(decide).await?;
        Ok(*answer.downcast::<u64>().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_decisions_each_see_the_writes_before_them_and_none_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = store_in(&dir);
        // Read on a connection of their own and then written, these would collide (each read the
        // same version): decided on the writer, each sees the one before it, even in one group.
        let calls: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { decide(&store, bump("counter")).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().unwrap());
        }
        answers.sort();
        assert_eq!(answers, (1..=200).collect::<Vec<u64>>(), "every decision saw the one before it");
        assert_eq!(store.get("counter", "n").await.unwrap().unwrap().version, 200);
    }

    #[tokio::test]
    async fn a_decision_answers_after_its_writes_committed_and_wakes_a_receiver_for_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = store_in(&dir);
        let queue =
            crate::queue::sqlite::SqliteQueue::open(db.clone(), "q", crate::queue::QueueKind::Standard, None).unwrap();
        let message = crate::queue::Queue::in_transaction(&queue, &crate::queue::OutgoingMessage::standard("hello"))
            .expect("the embedded queue takes messages in a transaction");
        let decision: Decide = Box::new(move |read: &dyn ReadNow| {
            assert!(read.page(&PageQuery { pk: "held#w", prefix: "", limit: 10 })?.is_empty());
            let item = Item::new("held#w", "ALR-1", "freezer");
            let writes = vec![Write::Put { item, condition: Condition::Absent }, message.clone()];
            Ok(Decided { writes, answer: Box::new(7u64) })
        });
        assert_eq!(decide(&store, decision).await.unwrap(), 7);
        assert_eq!(store.query_prefix("held#w", "", None).await.unwrap().len(), 1, "the put committed");
        assert_eq!(queue.depth().await.unwrap(), 1, "and the message with it");
        let woken = tokio::time::timeout(std::time::Duration::from_secs(1), db.queued().notified()).await;
        assert!(woken.is_ok(), "a receiver waiting for messages was woken");
        // A decision that writes nothing answers all the same.
        let nothing: Decide = Box::new(|_: &dyn ReadNow| Ok(Decided { writes: Vec::new(), answer: Box::new(3u64) }));
        assert_eq!(decide(&store, nothing).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_decision_that_fails_or_whose_write_does_not_hold_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = store_in(&dir);
        store.put(Item::new("taken", "n", "x"), Condition::None).await.unwrap();
        // The first write would succeed; the second's condition fails: neither stays.
        let clash: Decide = Box::new(|_: &dyn ReadNow| {
            let writes = vec![
                Write::Put { item: Item::new("fresh", "n", "y"), condition: Condition::Absent },
                Write::Put { item: Item::new("taken", "n", "y"), condition: Condition::Absent },
            ];
            Ok(Decided { writes, answer: Box::new(0u64) })
        });
        let err = decide(&store, clash).await.unwrap_err();
        assert!(matches!(err, StoreError::TransactionConflict { index: 1, .. }), "{err}");
        assert!(err.is_conflict(), "a caller retries it as any other conflict");
        let failing: Decide = Box::new(|read: &dyn ReadNow| {
            read.get_many(&[("k".repeat(crate::store::MAX_PK_BYTES + 1), "n".to_string())])?;
            unreachable!("an oversized key is refused before it is read")
        });
        assert!(matches!(decide(&store, failing).await, Err(StoreError::TooLarge { .. })));
        let twice: Decide = Box::new(|_: &dyn ReadNow| {
            let put = Write::Put { item: Item::new("fresh", "n", "y"), condition: Condition::None };
            Ok(Decided { writes: vec![put.clone(), put], answer: Box::new(0u64) })
        });
        assert!(matches!(decide(&store, twice).await, Err(StoreError::InvalidTransaction(_))));
        assert_eq!(store.get("fresh", "n").await.unwrap(), None, "nothing was written");
        assert_eq!(store.get("taken", "n").await.unwrap().unwrap().data, "x");
    }

    /// The data of (pk, "open") in every row of `point_items`, read from the table itself.
    async fn point_rows(db: &Db) -> Vec<(String, String)> {
        db.read(|tx| {
            tx.prepare("SELECT pk, data FROM point_items ORDER BY pk")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .await
        .unwrap()
    }

    /// What `store` answers for each of `keys`, as (pk, data) of the live ones.
    async fn found(store: &SqliteStore, keys: &[String]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for pk in keys {
            if let Some(item) = store.get(pk, "open").await.unwrap() {
                out.push((item.pk, item.data));
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_point_index_follows_concurrent_transactions_that_fail_and_is_rebuilt_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = store_in(&dir);
        let keys: Vec<String> = (0..16).map(|k| format!("open#k{k:02}")).collect();
        // Each transaction creates one key and deletes another; every third also deletes a key
        // under a version nobody has, so it fails, and the group holding it runs again with a
        // savepoint per job: the index must drop exactly what the failed jobs added and removed.
        let calls: Vec<_> = (0..600)
            .map(|i| {
                let store = store.clone();
                let (a, b) = (format!("open#k{:02}", i % 16), format!("open#k{:02}", (i * 7 + 3) % 16));
                tokio::spawn(async move {
                    let mut writes = vec![
                        Write::Put { item: Item::new(&a, "open", format!("v{i}")), condition: Condition::Absent },
                        Write::Delete { pk: b, sk: "open".into(), condition: Condition::None },
                    ];
                    if i % 3 == 0 {
                        let c = format!("open#never{i}");
                        writes.push(Write::Delete { pk: c, sk: "open".into(), condition: Condition::Version(99) });
                    }
                    store.transact(writes).await
                })
            })
            .collect();
        let mut outcomes = (0, 0);
        for call in calls {
            match call.await.unwrap() {
                Ok(()) => outcomes.0 += 1,
                Err(e) => {
                    assert!(e.is_conflict(), "{e}");
                    outcomes.1 += 1;
                }
            }
        }
        assert!(outcomes.0 > 0 && outcomes.1 >= 200, "both kinds ran: {outcomes:?}");
        let table = point_rows(&db).await;
        assert!(!table.is_empty());
        assert_eq!(found(&store, &keys).await, table, "the index finds exactly the rows in the table");
        assert_eq!(lock(&store.points).len(), table.len(), "nothing a failed job added is left indexed");
        // A second handle on the file rebuilds its index from the table: the same answers.
        let reopened = SqliteStore::new(Db::open_in(dir.path()).unwrap()).unwrap();
        assert_eq!(found(&reopened, &keys).await, table);
    }

    #[tokio::test]
    async fn a_commit_that_fails_takes_its_index_entries_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = store_in(&dir);
        store.put(Item::new("open#before", "open", "1"), Condition::Absent).await.unwrap();
        // The decision runs on the writer: the WAL write of its group's commit fails there.
        let failing: Decide = Box::new(|_: &dyn ReadNow| {
            crate::embedded::fail_next_wal_write();
            let writes = vec![
                Write::Put { item: Item::new("open#lost", "open", "2"), condition: Condition::Absent },
                Write::Delete { pk: "open#before".into(), sk: "open".into(), condition: Condition::None },
            ];
            Ok(Decided { writes, answer: Box::new(0u64) })
        });
        let err = decide(&store, failing).await.unwrap_err();
        assert!(err.to_string().contains("could not be committed"), "{err}");
        assert_eq!(store.get("open#lost", "open").await.unwrap(), None);
        assert_eq!(store.get("open#before", "open").await.unwrap().unwrap().data, "1", "the delete was undone");
        assert_eq!(lock(&store.points).len(), 1);
        // The key that was not written can be written now, once.
        store.put(Item::new("open#lost", "open", "3"), Condition::Absent).await.unwrap();
        assert!(store.put(Item::new("open#lost", "open", "4"), Condition::Absent).await.is_err());
        assert_eq!(point_rows(&db).await.len(), 2);
    }

    #[tokio::test]
    async fn another_process_writing_the_file_is_seen_by_the_next_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, ours) = store_in(&dir);
        let theirs = SqliteStore::new(Db::open_in(dir.path()).unwrap()).unwrap();
        ours.put(Item::new("open#x", "open", "ours"), Condition::Absent).await.unwrap();
        assert_eq!(theirs.get("open#x", "open").await.unwrap().unwrap().data, "ours");
        theirs.delete("open#x", "open", Condition::None).await.unwrap();
        assert_eq!(ours.get("open#x", "open").await.unwrap(), None, "a row deleted elsewhere is not found");
        theirs.put(Item::new("open#x", "open", "theirs"), Condition::Absent).await.unwrap();
        assert!(
            ours.put(Item::new("open#x", "open", "again"), Condition::Absent).await.unwrap_err().is_conflict(),
            "a row added elsewhere holds its key here too"
        );
        assert_eq!(ours.get("open#x", "open").await.unwrap().unwrap().data, "theirs");
    }

    #[tokio::test]
    async fn an_older_files_open_alert_entries_are_moved_to_their_table_and_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        // A file from before point partitions: the entries in `items`.
        db.execute_batch(
            "CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
                 expires_at INTEGER, written INTEGER, PRIMARY KEY (pk, sk)) WITHOUT ROWID;
             INSERT INTO items VALUES ('open#freezer#dev1:alert', 'open', 3, 'ALR-1', NULL, NULL);
             INSERT INTO items VALUES ('open#freezer#dev1:alert', 'seen#ab', 1, 'created|ALR-1|open|high|1|0|', 4000000000, 7);
             INSERT INTO items VALUES ('open$', 'x', 1, 'not a point partition', NULL, NULL);
             INSERT INTO items VALUES ('alert#ALR-1', 'alert', 1, '{}', NULL, NULL);",
        )
        .unwrap();
        let store = SqliteStore::new(db.clone()).unwrap();
        let open = store.get("open#freezer#dev1:alert", "open").await.unwrap().unwrap();
        assert_eq!((open.version, open.data.as_str()), (3, "ALR-1"));
        let seen = store.get("open#freezer#dev1:alert", "seen#ab").await.unwrap().unwrap();
        assert_eq!(seen.expires_at, Some(4_000_000_000));
        let left: Vec<String> = db
            .read(|tx| tx.prepare("SELECT pk FROM items ORDER BY pk")?.query_map([], |r| r.get(0))?.collect())
            .await
            .unwrap();
        assert_eq!(left, ["alert#ALR-1", "open$"], "only the point partitions moved");
        assert_eq!(point_rows(&db).await.len(), 2);
        // Opened again: nothing moves twice, and the index is rebuilt from the table.
        let again = SqliteStore::new(Db::open_in(dir.path()).unwrap()).unwrap();
        assert_eq!(again.get("open#freezer#dev1:alert", "open").await.unwrap().unwrap().data, "ALR-1");
        assert_eq!(point_rows(&db).await.len(), 2);
    }

    #[tokio::test]
    async fn the_puts_are_compiled_once_whatever_is_bound() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let _store = SqliteStore::new(db.clone()).unwrap();
        let (expires, written): (Option<i64>, Option<i64>) = (Some(4_000_000_000), Some(1));
        let row: [&dyn rusqlite::ToSql; 6] = [&"seen#k", &"a", &1i64, &"{}", &expires, &written];
        assert_eq!(crate::embedded::recompilations(&db, PUT, &row), 0, "PUT");
        let absent = [&row[..], &[&5i64 as &dyn rusqlite::ToSql]].concat();
        assert_eq!(crate::embedded::recompilations(&db, PUT_IF_ABSENT, &absent), 0, "PUT_IF_ABSENT");
        let versioned = [&row[..], &[&1i64 as &dyn rusqlite::ToSql, &5i64]].concat();
        assert_eq!(crate::embedded::recompilations(&db, PUT_IF_VERSION, &versioned), 0, "PUT_IF_VERSION");
    }

    #[tokio::test]
    async fn a_page_query_is_compiled_once_whatever_is_bound() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let store = SqliteStore::new(db.clone()).unwrap();
        store.put(Item::new("held#k", "w1", "{}".to_string()), Condition::None).await.unwrap();
        let after: Option<String> = None;
        let recompiled = crate::embedded::recompilations(&db, QUERY_PAGE, &[&"held#k", &"", &0i64, &after]);
        assert_eq!(recompiled, 0, "SQLite recompiled the page query on each run");
    }
}
