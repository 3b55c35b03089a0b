//! Point partitions on the embedded store: the items of partitions read only by exact key
//! ([`POINT_PARTITION_PREFIX`], the open-alert index and the delivery records beside it) live in
//! a table of their own, in the order they were written, and are found through an index kept
//! in memory.
//!
//! **Why.** In a storm from many devices each new alert adds an index entry for its device. In
//! a B-tree ordered by key that entry lands on a random page: every alert changed a page of its
//! own, written whole to the WAL and again by the checkpoint, and split pages as the tree grew.
//! That was the whole difference between new alerts from counted devices (keys in order) and
//! from random ones: 16,334 against 10,896 a second on an empty database, and 12,147-15,463
//! against 7,528-9,446 on one of 776,407 alerts. Here a new entry is appended at the end of
//! `point_items` (its id counts up), beside the one before it.
//!
//! **The index** maps a keyed hash of (pk, sk) to the row's id. It is rebuilt from the table
//! when the database is opened (about a second per two million rows), changed only on the
//! writer, inside its jobs, and follows the transaction ([`TxState`]): a job rolled back takes
//! its changes to the index with it. Every lookup reads the row it is pointed at and compares
//! the key, so a hash shared by two keys (which a per-process random key makes vanishingly
//! rare, and which is handled) or a row deleted by another process never gives a wrong item.
//! Reads of point partitions therefore run on the writer.
//!
//! **Another process** writing the same file (a second `klaxon` command) is seen at the start
//! of the writer's next transaction: SQLite's `data_version` tells that another connection
//! committed, and the rows it added are read by id (ids only grow: `AUTOINCREMENT`).
//!
//! **Memory**: a map entry is 16 bytes in a table kept at most 7/8 full and grown by doubling;
//! measured, a server on a file of 1.05 million open alerts from as many devices (2.1 million
//! entries with their delivery records) started 1.5 s later and 142 MB larger than before.

use crate::embedded::tx_state::TxState;
use crate::store::{Item, POINT_PARTITION_PREFIX};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS point_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    expires_at INTEGER,
    written INTEGER
);
CREATE INDEX IF NOT EXISTS point_items_expiring ON point_items (expires_at, written) WHERE expires_at IS NOT NULL;
";

/// Moves the items of point partitions that an older version kept in `items` (every key that
/// starts with `open#`: `$` follows `#`) into `point_items`.
pub(super) const MOVE_FROM_ITEMS: &str = "
INSERT INTO point_items (pk, sk, version, data, expires_at, written)
    SELECT pk, sk, version, data, expires_at, written FROM items WHERE pk >= 'open#' AND pk < 'open$';
DELETE FROM items WHERE pk >= 'open#' AND pk < 'open$';
";

/// Whether items under `pk` live in `point_items`.
pub(super) fn is_point(pk: &str) -> bool {
    pk.starts_with(POINT_PARTITION_PREFIX)
}

/// A row of `point_items`.
pub(super) struct Row {
    pub id: i64,
    pub item: Item,
}

impl Row {
    pub fn is_live(&self, now: i64) -> bool {
        !self.item.is_expired(now)
    }

    /// The item's version, if it is live at `now` (what a condition is checked against).
    pub fn live_version(&self, now: i64) -> Option<u64> {
        self.is_live(now).then_some(self.item.version)
    }
}

/// The key a hash is taken of: the hash itself.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// The hash a key is indexed under.
type KeyHash = Box<dyn Fn(&str, &str) -> u64 + Send>;

/// A change to the index, as the undo log keeps it.
enum Change {
    Added(u64, i64),
    Removed(u64, i64),
}

/// The in-memory index of `point_items`: hash of (pk, sk) to row id.
pub(crate) struct Points {
    key_hash: KeyHash,
    /// Hashes held by one row: nearly all.
    one: ByHash<i64>,
    /// Hashes held by more than one row (two keys with one hash, or stale rows another process
    /// deleted).
    many: ByHash<Vec<i64>>,
    /// Changes of the transaction in progress, to undo should it roll back.
    undo: Vec<Change>,
    /// The highest id whose row the index holds, committed.
    known_up_to: i64,
    /// The highest id added by the transaction in progress.
    pending_up_to: i64,
    /// SQLite's `data_version` at the last look: it changes when another connection commits.
    data_version: Option<i64>,
}

impl Points {
    pub(crate) fn new() -> Points {
        let keys = RandomState::new();
        Points::with_hash(Box::new(move |pk, sk| keys.hash_one((pk, sk))))
    }

    fn with_hash(key_hash: KeyHash) -> Points {
        Points {
            key_hash,
            one: ByHash::default(),
            many: ByHash::default(),
            undo: Vec::new(),
            known_up_to: 0,
            pending_up_to: 0,
            data_version: None,
        }
    }

    /// Rows indexed (a row another process deleted counts until this process restarts).
    pub(crate) fn len(&self) -> usize {
        self.one.len() + self.many.values().map(Vec::len).sum::<usize>()
    }

    fn add(&mut self, hash: u64, id: i64) {
        if let Some(v) = self.many.get_mut(&hash) {
            v.push(id);
        } else if let Some(other) = self.one.remove(&hash) {
            self.many.insert(hash, vec![other, id]);
        } else {
            self.one.insert(hash, id);
        }
    }

    fn remove(&mut self, hash: u64, id: i64) -> bool {
        if self.one.get(&hash) == Some(&id) {
            self.one.remove(&hash);
            return true;
        }
        let Some(v) = self.many.get_mut(&hash) else { return false };
        let Some(at) = v.iter().position(|x| *x == id) else { return false };
        v.swap_remove(at);
        if let [last] = v[..] {
            self.many.remove(&hash);
            self.one.insert(hash, last);
        }
        true
    }

    fn candidates(&self, hash: u64) -> &[i64] {
        match self.one.get(&hash) {
            Some(id) => std::slice::from_ref(id),
            None => self.many.get(&hash).map_or(&[], Vec::as_slice),
        }
    }

    /// Indexes rows other connections (or a bulk move in this transaction) added: those with
    /// an id above the highest known. `logged`: inside a job, undone with it.
    fn catch_up(&mut self, conn: &Connection, logged: bool) -> rusqlite::Result<usize> {
        let table: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'point_items')",
            )?
            .query_row([], |r| r.get(0))?;
        if !table {
            return Ok(0);
        }
        let from = self.known_up_to.max(self.pending_up_to);
        let mut stmt = conn.prepare_cached("SELECT id, pk, sk FROM point_items WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query(params![from])?;
        let mut added = 0;
        while let Some(row) = rows.next()? {
            let (id, pk, sk): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let hash = (self.key_hash)(&pk, &sk);
            self.add(hash, id);
            if logged {
                self.undo.push(Change::Added(hash, id));
                self.pending_up_to = self.pending_up_to.max(id);
            } else {
                self.known_up_to = self.known_up_to.max(id);
            }
            added += 1;
        }
        Ok(added)
    }

    /// Indexes, inside a job, the rows a bulk statement just added to the table (an older
    /// file's items being moved in).
    pub(super) fn index_new_rows(&mut self, conn: &Connection) -> rusqlite::Result<usize> {
        self.catch_up(conn, true)
    }

    /// The row of (pk, sk), live or expired.
    pub(super) fn find(&self, conn: &Connection, pk: &str, sk: &str) -> rusqlite::Result<Option<Row>> {
        let mut stmt =
            conn.prepare_cached("SELECT pk, sk, version, data, expires_at FROM point_items WHERE id = ?1")?;
        for id in self.candidates((self.key_hash)(pk, sk)) {
            let item = stmt.query_row(params![id], super::row_to_item).optional()?;
            if let Some(item) = item.filter(|i| i.pk == pk && i.sk == sk) {
                return Ok(Some(Row { id: *id, item }));
            }
        }
        Ok(None)
    }

    /// Adds `item` as a new row (there is none for its key).
    pub(super) fn insert(&mut self, conn: &Connection, item: &Item, written: Option<i64>) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO point_items (pk, sk, version, data, expires_at, written) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![item.pk, item.sk, item.version as i64, item.data, item.expires_at, written])?;
        let id = conn.last_insert_rowid();
        let hash = (self.key_hash)(&item.pk, &item.sk);
        self.add(hash, id);
        self.undo.push(Change::Added(hash, id));
        self.pending_up_to = self.pending_up_to.max(id);
        Ok(())
    }

    /// Replaces row `id` (the row of `item`'s key) with `item`.
    pub(super) fn update(conn: &Connection, id: i64, item: &Item, written: Option<i64>) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "UPDATE point_items SET version = ?2, data = ?3, expires_at = ?4, written = ?5 WHERE id = ?1",
        )?
        .execute(params![id, item.version as i64, item.data, item.expires_at, written])?;
        Ok(())
    }

    /// Deletes row `id`, the row of (pk, sk).
    pub(super) fn delete(&mut self, conn: &Connection, id: i64, pk: &str, sk: &str) -> rusqlite::Result<()> {
        conn.prepare_cached("DELETE FROM point_items WHERE id = ?1")?.execute(params![id])?;
        self.forget(id, pk, sk);
        Ok(())
    }

    fn forget(&mut self, id: i64, pk: &str, sk: &str) {
        let hash = (self.key_hash)(pk, sk);
        if self.remove(hash, id) {
            self.undo.push(Change::Removed(hash, id));
        }
    }

    /// Deletes up to `max` rows expired at `now`, oldest first; how many.
    pub(super) fn purge_expired(&mut self, conn: &Connection, now: i64, max: usize) -> rusqlite::Result<usize> {
        let mut stmt = conn.prepare_cached(
            "DELETE FROM point_items WHERE id IN (
                 SELECT id FROM point_items WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)
             RETURNING id, pk, sk",
        )?;
        let gone: Vec<(i64, String, String)> = stmt
            .query_map(params![now, max as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, pk, sk) in &gone {
            self.forget(*id, pk, sk);
        }
        Ok(gone.len())
    }
}

impl TxState for Points {
    fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version: i64 = conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        if self.data_version != Some(version) {
            let added = self.catch_up(conn, false)?;
            if added > 0 && self.data_version.is_some() {
                tracing::debug!(rows = added, "indexed point rows another connection wrote");
            }
            self.data_version = Some(version);
        }
        Ok(())
    }

    fn mark(&self) -> usize {
        self.undo.len()
    }

    fn undo_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            match self.undo.pop() {
                Some(Change::Added(hash, id)) => {
                    self.remove(hash, id);
                }
                Some(Change::Removed(hash, id)) => self.add(hash, id),
                None => break,
            }
        }
    }

    fn end(&mut self, committed: bool) {
        if committed {
            self.known_up_to = self.known_up_to.max(self.pending_up_to);
        } else {
            self.undo_to(0);
        }
        self.undo.clear();
        self.pending_up_to = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    fn item(pk: &str, sk: &str, data: &str) -> Item {
        Item::new(pk, sk, data)
    }

    /// Every key hashes alike: every lookup must tell rows apart by their key.
    fn colliding() -> Points {
        Points::with_hash(Box::new(|_, _| 7))
    }

    #[test]
    fn keys_sharing_a_hash_are_told_apart_and_each_removal_takes_only_its_row() {
        let conn = table();
        let mut points = colliding();
        for k in ["a", "b", "c"] {
            points.insert(&conn, &item("open#x", k, k), None).unwrap();
        }
        points.end(true);
        for k in ["a", "b", "c"] {
            assert_eq!(points.find(&conn, "open#x", k).unwrap().unwrap().item.data, k);
        }
        assert!(points.find(&conn, "open#x", "d").unwrap().is_none(), "a key never written is absent");
        let b = points.find(&conn, "open#x", "b").unwrap().unwrap();
        points.delete(&conn, b.id, "open#x", "b").unwrap();
        points.end(true);
        assert!(points.find(&conn, "open#x", "b").unwrap().is_none());
        assert_eq!(points.find(&conn, "open#x", "c").unwrap().unwrap().item.data, "c");
        let a = points.find(&conn, "open#x", "a").unwrap().unwrap();
        points.delete(&conn, a.id, "open#x", "a").unwrap();
        points.end(true);
        assert_eq!(points.len(), 1, "the last row of a shared hash is held alone again");
        assert_eq!(points.find(&conn, "open#x", "c").unwrap().unwrap().item.data, "c");
    }

    #[test]
    fn a_rolled_back_transaction_leaves_the_index_as_it_was() {
        let mut conn = table();
        let mut points = Points::new();
        points.insert(&conn, &item("open#x", "kept", "1"), None).unwrap();
        points.end(true);
        let tx = conn.transaction().unwrap();
        points.insert(&tx, &item("open#x", "new", "2"), None).unwrap();
        let mark = points.mark();
        let kept = points.find(&tx, "open#x", "kept").unwrap().unwrap();
        points.delete(&tx, kept.id, "open#x", "kept").unwrap();
        points.undo_to(mark);
        assert!(points.find(&tx, "open#x", "kept").unwrap().is_none(), "the row is gone in SQL...");
        // ... but a savepoint rolled back would bring it back, and the index has it again.
        assert_eq!(points.len(), 2);
        points.end(false);
        drop(tx);
        assert_eq!(points.len(), 1, "the insert of the rolled-back transaction is forgotten");
        assert!(points.find(&conn, "open#x", "new").unwrap().is_none());
        assert_eq!(points.find(&conn, "open#x", "kept").unwrap().unwrap().item.data, "1");
    }

    #[test]
    fn rows_another_connection_added_are_indexed_at_the_next_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let ours = Connection::open(&path).unwrap();
        ours.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        ours.execute_batch(SCHEMA).unwrap();
        let mut points = Points::new();
        points.begin(&ours).unwrap();
        points.insert(&ours, &item("open#x", "ours", "1"), None).unwrap();
        points.end(true);
        let theirs = Connection::open(&path).unwrap();
        // Another process deletes our row and adds two.
        theirs.execute("DELETE FROM point_items WHERE sk = 'ours'", []).unwrap();
        for k in ["t1", "t2"] {
            theirs
                .execute("INSERT INTO point_items (pk, sk, version, data) VALUES ('open#x', ?1, 1, 'theirs')", [k])
                .unwrap();
        }
        points.begin(&ours).unwrap();
        assert_eq!(points.find(&ours, "open#x", "t2").unwrap().unwrap().item.data, "theirs");
        assert!(points.find(&ours, "open#x", "ours").unwrap().is_none(), "a stale entry finds no row");
        points.end(true);
        // Nothing new: the next transaction reads nothing again.
        points.begin(&ours).unwrap();
        assert_eq!(points.len(), 3, "two new rows and the stale entry");
    }

    #[test]
    fn expired_rows_are_purged_oldest_first_and_forgotten() {
        let conn = table();
        let mut points = Points::new();
        for (k, at) in [("a", 10), ("b", 20), ("live", 4_000_000_000)] {
            points.insert(&conn, &item("open#x", k, k).expiring_at(at), Some(at)).unwrap();
        }
        points.end(true);
        assert_eq!(points.purge_expired(&conn, 100, 1).unwrap(), 1);
        assert!(points.find(&conn, "open#x", "a").unwrap().is_none());
        assert_eq!(points.purge_expired(&conn, 100, 10).unwrap(), 1);
        points.end(true);
        assert_eq!(points.len(), 1);
        assert!(points.find(&conn, "open#x", "live").unwrap().is_some());
    }
}
