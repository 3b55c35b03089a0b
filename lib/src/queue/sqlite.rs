//! The embedded queue: SQLite tables with SQS semantics (FIFO groups and deduplication,
//! per-message delay, visibility timeout, receive counts, dead-lettering).

use super::backlog::Backlog;
use super::mono_ms;
use super::{
    DEDUP_WINDOW, MAX_VISIBILITY, OutgoingMessage, Queue, QueueError, QueueKind, ReceiveOptions, ReceivedMessage,
    validate_receive, validate_send,
};
use crate::embedded::{Db, DbError};
use async_trait::async_trait;
use rusqlite::{Transaction, params};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

// Every index here is paid for on each of a storm's messages, so there are few: messages are
// found by `seq` (the message id and the receipt carry it). A FIFO queue's messages that were
// never received are walked in `seq` order; those received before (in flight, pushed back for
// later, or visible again) are few at any time and sit in two small indexes of their own, by
// group (is an earlier message of this group held?) and by when they are visible again. Only
// standard-queue messages (timers, which may be delayed) are indexed by when they become visible.
const MESSAGE_COLUMNS: &str = "(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    group_id TEXT,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
)";

/// The messages table's indexes, and the deduplication table (the messages table itself is
/// created from [`MESSAGE_COLUMNS`], which the upgrade below shares).
const SCHEMA: &str = "
DROP INDEX IF EXISTS queue_messages_ready;
DROP INDEX IF EXISTS queue_messages_order;
DROP INDEX IF EXISTS queue_messages_walk;
CREATE INDEX IF NOT EXISTS queue_messages_fresh ON queue_messages (queue, seq, group_id, visible_at)
    WHERE receive_count = 0 AND group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_messages_held ON queue_messages (queue, group_id, seq, receive_count)
    WHERE receive_count > 0 AND group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_messages_back ON queue_messages (queue, visible_at, seq, group_id, receive_count)
    WHERE receive_count > 0 AND group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_messages_timers ON queue_messages (queue, visible_at, seq) WHERE group_id IS NULL;
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
-- Every send purges expired deduplication ids; without this it scans them all.
CREATE INDEX IF NOT EXISTS queue_dedup_expiry ON queue_dedup (queue, expires_at);
";

/// Most rows each walk of a FIFO receive (messages visible again, never received, the deep walk)
/// passes (messages of groups that are busy) before it answers with what it found: a bound on a
/// receive's cost, whatever the backlog.
const MAX_WALK: usize = 5_000;
/// A walk that stopped at [`MAX_WALK`] found the queue clogged: more never received messages
/// than that waiting behind held messages of their groups (in a long Mattermost outage, jobs
/// behind failed jobs of their own alerts). The next receives leave never received messages
/// alone for this long (or until a job is deleted or dead-lettered, which may free its group's
/// next), and a deep walk ([`RECEIVE_FIFO_DEEP`]) goes on from where it stopped at most this
/// often ...
const CLOGGED_WALK_EVERY: Duration = Duration::from_secs(1);
/// ... or, if longer, this many times as long as the walk took: in that state a walk costs
/// milliseconds (4-9 ms for 5,000 rows, 60-80 ms with the deep walk past 100,000), and 32
/// notifier loops receiving every 200 ms would otherwise keep the writer busy with them.
const CLOGGED_WALK_SHARE: u32 = 20;

/// When a clogged queue is walked again (see [`CLOGGED_WALK_EVERY`]), in [`mono_ms`]'s
/// milliseconds: a monotonic clock, so that the wall clock's steps cannot stretch a pause.
#[derive(Default)]
struct Clogged {
    /// Receives walk never received messages again from then on, or once a job is deleted or
    /// moved to the dead letters.
    walk_from: AtomicI64,
    /// The next deep walk, not before then.
    deep_from: AtomicI64,
}

impl Clogged {
    /// Until when to leave a clogged queue alone after a walk that began at `started`.
    fn pause(started: std::time::Instant) -> i64 {
        let pause = ms(started.elapsed().saturating_mul(CLOGGED_WALK_SHARE)).max(ms(CLOGGED_WALK_EVERY));
        mono_ms().saturating_add(pause)
    }

    /// Whether `moment` (`walk_from` or `deep_from`) has come.
    fn due(moment: &AtomicI64) -> bool {
        mono_ms() >= moment.load(Ordering::Relaxed)
    }
}

// The receive walks. `queue = ?1 COLLATE BINARY` (the same comparison as `queue = ?1`): the
// plain form beside `ORDER BY` made SQLite compile the statement again every time the name was
// bound, on every receive. Each reads an index only; the bodies of the messages picked are read
// by `seq` afterwards.
//
// A FIFO receive looks at the messages received before that are visible again, then walks the
// messages never received, in send order. Within a group, every message received before was sent
// before every message never received (a group is received in send order), so a message may go
// when no earlier message of its group is held by an earlier receive ([`HELD_BEFORE`]). The walk
// used to pass every message in flight to learn which groups were busy: in a storm each receive
// passed up to 320 (32 notifier loops with 10 each), and most of a receive's time went there.
const RECEIVE_FIFO: &str = "SELECT seq, group_id, visible_at
     FROM queue_messages INDEXED BY queue_messages_fresh
     WHERE queue = ?1 COLLATE BINARY AND receive_count = 0 AND group_id IS NOT NULL ORDER BY seq";
const RECEIVE_FIFO_AGAIN: &str = "SELECT seq, group_id, receive_count
     FROM queue_messages INDEXED BY queue_messages_back
     WHERE queue = ?1 COLLATE BINARY AND receive_count > 0 AND group_id IS NOT NULL AND visible_at <= ?2
     ORDER BY visible_at, seq";
/// Messages of group `?2` received before message `?3` and not deleted since.
const HELD_BEFORE: &str = "SELECT seq
     FROM queue_messages INDEXED BY queue_messages_held
     WHERE queue = ?1 COLLATE BINARY AND group_id = ?2 AND receive_count > 0 AND seq < ?3";
/// The deep walk: what a walk stopped by [`MAX_WALK`] did not reach, from `seq > ?2` on, leaving
/// out in SQLite (one index probe each) the messages of groups with a message held before them.
/// In a long Mattermost outage thousands of jobs can wait behind failed jobs of their own alerts
/// (their acknowledgements, resolutions) for retries up to two hours apart; the walk passed
/// [`MAX_WALK`] of them and stopped, so a new alert's job behind them waited for those retries.
/// Its cost grows with that backlog, hence [`CLOGGED_WALK_EVERY`].
const RECEIVE_FIFO_DEEP: &str = "SELECT f.seq, f.group_id, f.visible_at
     FROM queue_messages AS f INDEXED BY queue_messages_fresh
     WHERE f.queue = ?1 COLLATE BINARY AND f.receive_count = 0 AND f.group_id IS NOT NULL AND f.seq > ?2
       AND NOT EXISTS (SELECT 1 FROM queue_messages AS h INDEXED BY queue_messages_held
                       WHERE h.queue = ?1 COLLATE BINARY AND h.group_id = f.group_id
                         AND h.receive_count > 0 AND h.seq < f.seq)
     ORDER BY f.seq";
const BODY: &str = "SELECT body FROM queue_messages WHERE seq = ?1";
const RECEIVE_STANDARD: &str = "SELECT seq, receive_count
     FROM queue_messages INDEXED BY queue_messages_timers
     WHERE queue = ?1 COLLATE BINARY AND group_id IS NULL AND visible_at <= ?2 ORDER BY visible_at, seq";

/// Databases written before the storms work (2026-11) declared `message_id` and `receipt`
/// UNIQUE (two indexes every message paid for); this rebuilds the table without them, keeping
/// every message and the sequence. It runs once: afterwards the table's SQL has no UNIQUE.
const UPGRADE: &str = "
INSERT INTO queue_messages_upgraded SELECT seq, queue, message_id, body, group_id, visible_at, receive_count, receipt
    FROM queue_messages;
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'queue_messages')
    WHERE name = 'queue_messages_upgraded';
DROP TABLE queue_messages;
ALTER TABLE queue_messages_upgraded RENAME TO queue_messages;
";

/// Creates the queue tables (idempotent), upgrading an older layout: the store needs them too,
/// since its transactions may queue messages.
pub(crate) fn create_tables(db: &Db) -> Result<(), DbError> {
    db.setup(|tx| {
        let old: i64 = tx.query_row(
            "SELECT COUNT(*) FROM sqlite_master
             WHERE type = 'table' AND name = 'queue_messages' AND sql LIKE '%message_id TEXT NOT NULL UNIQUE%'",
            [],
            |r| r.get(0),
        )?;
        if old > 0 {
            tx.execute_batch(&format!("CREATE TABLE queue_messages_upgraded {MESSAGE_COLUMNS};{UPGRADE}"))?;
        }
        tx.execute_batch(&format!("CREATE TABLE IF NOT EXISTS queue_messages {MESSAGE_COLUMNS};{SCHEMA}"))
    })
}

/// How [`insert_message`] treats a FIFO message's deduplication id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dedup {
    /// As SQS: a message whose id was seen within the window is accepted and dropped.
    Window,
    /// Not recorded: the message is queued by the transaction of the change it announces, and
    /// that transaction's conditions already make it happen once.
    InTransaction,
}

/// Queues `message` inside `tx`; returns false when deduplication dropped it.
pub(crate) fn insert_message(
    tx: &Transaction<'_>,
    queue: &str,
    message: &OutgoingMessage,
    now: i64,
    dedup: Dedup,
) -> rusqlite::Result<bool> {
    if let Some(dedup) = message.dedup_id.as_ref().filter(|_| dedup == Dedup::Window) {
        tx.prepare_cached("DELETE FROM queue_dedup WHERE queue = ?1 AND expires_at <= ?2")?
            .execute(params![queue, now])?;
        let inserted = tx
            .prepare_cached("INSERT OR IGNORE INTO queue_dedup (queue, dedup_id, expires_at) VALUES (?1, ?2, ?3)")?
            .execute(params![queue, dedup, now + ms(DEDUP_WINDOW)])?;
        if inserted == 0 {
            // Accepted and dropped, exactly as SQS does within the window.
            return Ok(false);
        }
    }
    // The message id is derived from the row's seq when it is received (unique, never reused
    // thanks to AUTOINCREMENT); the column is kept for databases written by older versions.
    tx.prepare_cached(
        "INSERT INTO queue_messages (queue, message_id, body, group_id, visible_at) VALUES (?1, '', ?2, ?3, ?4)",
    )?
    .execute(params![queue, message.body, message.group_id, now + ms(message.delay)])?;
    Ok(true)
}

/// A FIFO group's id, hashed for the receive walk's set of busy groups.
fn group_key(group: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(group)
}

fn message_id(seq: i64) -> String {
    format!("m{seq}")
}

/// A receipt names its message's row and this receive: `<seq>.<nonce>`, the nonce unique to
/// this receive (a random start per process, counted up: no call for randomness per message).
fn receipt_for(seq: i64) -> String {
    static NEXT: std::sync::LazyLock<std::sync::atomic::AtomicU64> =
        std::sync::LazyLock::new(|| std::sync::atomic::AtomicU64::new(uuid::Uuid::new_v4().as_u64_pair().0));
    let nonce = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{seq}.{nonce:016x}")
}

/// The row a receipt names (`None` for one this queue never issued).
fn seq_of(receipt: &str) -> Option<i64> {
    receipt.split_once('.').and_then(|(seq, _)| seq.parse().ok())
}

/// How often a waiting receive looks again when no send woke it (a send wakes one waiting
/// receive per message it queued; see `Db::wake_receivers`).
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Where a queue's messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receives: u32,
}

#[derive(Clone)]
pub struct SqliteQueue {
    db: Db,
    name: String,
    kind: QueueKind,
    redrive: Option<Redrive>,
    /// Shared by the clones of this queue (every notifier loop).
    clogged: Arc<Clogged>,
    /// How far behind this queue's consumers are (shared by the clones too).
    backlog: Arc<Backlog>,
}

impl From<DbError> for QueueError {
    fn from(e: DbError) -> Self {
        QueueError::Backend { backend: "SQLite queue", message: e.to_string() }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqliteQueue {
    /// Opens the queue called `name` in `db` (queues are rows, so there is nothing to create).
    pub fn open(
        db: Db,
        name: impl Into<String>,
        kind: QueueKind,
        redrive: Option<Redrive>,
    ) -> Result<Self, QueueError> {
        create_tables(&db)?;
        Ok(SqliteQueue { db, name: name.into(), kind, redrive, clogged: Arc::default(), backlog: Arc::default() })
    }

    /// How far behind this queue's consumers are: set by every receive of a FIFO queue (the age
    /// of the oldest never received message it hands out) and every deletion.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.backlog.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Messages waiting or in flight (for `klaxon` status output and tests).
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let name = self.name.clone();
        let n = self
            .db
            .read(move |tx| {
                tx.query_row("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1", params![name], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .await?;
        Ok(n as u64)
    }

    fn try_receive(&self, tx: &Transaction<'_>, options: &ReceiveOptions) -> rusqlite::Result<Vec<ReceivedMessage>> {
        let now = now_ms();
        let (picked, dead) = match self.kind {
            QueueKind::Fifo => self.pick_fifo(tx, options.max, now)?,
            QueueKind::Standard => self.pick_standard(tx, options.max, now)?,
        };
        if self.kind == QueueKind::Fifo {
            // A FIFO message is visible from when it was sent (FIFO queues take no delay).
            let oldest = picked.iter().filter_map(|p| p.sent_at).min();
            self.backlog.received(oldest.map(|sent| Duration::from_millis(now.saturating_sub(sent).unsigned_abs())));
        }
        if let Some(r) = &self.redrive {
            let mut moved = tx.prepare_cached(
                "UPDATE queue_messages SET queue = ?1, receive_count = 0, receipt = NULL WHERE seq = ?2",
            )?;
            for seq in dead {
                moved.execute(params![r.dead_letter_queue, seq])?;
            }
        }
        let visible_at = now.saturating_add(ms(options.visibility));
        let mut out = Vec::with_capacity(picked.len());
        let mut mark = tx.prepare_cached(
            "UPDATE queue_messages SET receipt = ?1, visible_at = ?2, receive_count = receive_count + 1 WHERE seq = ?3",
        )?;
        let mut body_of = tx.prepare_cached(BODY)?;
        for Picked { seq, group_id, receive_count, .. } in picked {
            let receipt = receipt_for(seq);
            mark.execute(params![receipt, visible_at, seq])?;
            let body: String = body_of.query_row(params![seq], |r| r.get(0))?;
            out.push(ReceivedMessage {
                message_id: message_id(seq),
                receipt,
                body,
                group_id,
                receive_count: receive_count as u32 + 1,
            });
        }
        Ok(out)
    }

    /// Whether a message received `receive_count` times goes to the dead-letter queue instead of
    /// being delivered: SQS moves a message when a receive would deliver it for the (max+1)-th
    /// time.
    fn is_dead(&self, receive_count: i64) -> bool {
        self.redrive.as_ref().is_some_and(|r| receive_count >= i64::from(r.max_receives))
    }

    /// Up to `max` messages of a FIFO queue to deliver now, in send order within each group, and
    /// those to move to the dead-letter queue. See [`RECEIVE_FIFO`].
    fn pick_fifo(&self, tx: &Transaction<'_>, max: usize, now: i64) -> rusqlite::Result<(Vec<Picked>, Vec<i64>)> {
        let mut picked: Vec<Picked> = Vec::new();
        let mut dead: Vec<i64> = Vec::new();
        // Messages leaving the held ones in this receive: picked, or moved to the dead letters.
        let mut leaving: HashSet<i64> = HashSet::new();
        // Groups that deliver nothing more in this receive, by a hash of their id (a collision
        // only holds a group back until the next receive) ...
        let mut busy: HashSet<u64> = HashSet::new();
        // ... and groups of never received messages found free in it, by their id: nothing of
        // theirs is held but what leaves now, so their later messages skip the check.
        let mut free: HashSet<String> = HashSet::new();
        let mut held_before = tx.prepare_cached(HELD_BEFORE)?;
        let mut held = |group: &str, seq: i64, leaving: &HashSet<i64>| -> rusqlite::Result<bool> {
            let mut rows = held_before.query(params![self.name, group, seq])?;
            while let Some(row) = rows.next()? {
                if !leaving.contains(&row.get::<_, i64>(0)?) {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let mut walked = 0;
        // Received before and visible again (their time ran out, or they were pushed back for
        // later and that time came), in send order: rare, and usually none.
        let again: Vec<(i64, String, i64)> = {
            let mut stmt = tx.prepare_cached(RECEIVE_FIFO_AGAIN)?;
            let rows = stmt.query_map(params![self.name, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let mut again = rows.take(MAX_WALK).collect::<rusqlite::Result<Vec<_>>>()?;
            again.sort_unstable_by_key(|(seq, _, _)| *seq);
            again
        };
        for (seq, group, receive_count) in again {
            walked += 1;
            if picked.len() >= max {
                break;
            }
            let key = group_key(&group);
            if busy.contains(&key) || held(&group, seq, &leaving)? {
                busy.insert(key);
            } else if self.is_dead(receive_count) {
                dead.push(seq);
                leaving.insert(seq);
            } else {
                // Not `free` yet: a later message of this group may still be held (pushed back
                // for longer), and the walk below must check for it.
                leaving.insert(seq);
                picked.push(Picked { seq, group_id: Some(group), receive_count, sent_at: None });
            }
        }
        if !dead.is_empty() {
            // As a deletion does: messages leaving for the dead letters may free their groups.
            self.clogged.walk_from.store(0, Ordering::Relaxed);
        }
        if picked.len() >= max || walked >= MAX_WALK || !Clogged::due(&self.clogged.walk_from) {
            return Ok((picked, dead));
        }
        // Never received messages in send order: the first from `rows` that may go now, until
        // `max` are picked or `limit` rows are walked (then it answers true: stopped short).
        let mut walk = |rows: &mut rusqlite::Rows<'_>, limit: usize, last_seq: &mut i64| -> rusqlite::Result<bool> {
            let mut walked = 0;
            while let Some(row) = rows.next()? {
                walked += 1;
                let (seq, visible_at): (i64, i64) = (row.get(0)?, row.get(2)?);
                *last_seq = seq;
                let group = row.get_ref(1)?.as_str().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
                })?;
                let key = group_key(group);
                let waits =
                    busy.contains(&key) || visible_at > now || (!free.contains(group) && held(group, seq, &leaving)?);
                if waits {
                    busy.insert(key);
                } else {
                    if !free.contains(group) {
                        free.insert(group.to_string());
                    }
                    picked.push(Picked {
                        seq,
                        group_id: Some(group.to_string()),
                        receive_count: 0,
                        sent_at: Some(visible_at),
                    });
                    if picked.len() >= max {
                        return Ok(false);
                    }
                }
                if walked >= limit {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let started = std::time::Instant::now();
        let mut last_seq = 0;
        let mut stmt = tx.prepare_cached(RECEIVE_FIFO)?;
        // MAX_WALK of its own (not what the look at messages visible again left): a walk that
        // stops there passed that many held back, so the queue is clogged.
        if !walk(&mut stmt.query(params![self.name])?, MAX_WALK, &mut last_seq)? {
            return Ok((picked, dead));
        }
        // Clogged: the rest only now and then.
        self.clogged.walk_from.store(Clogged::pause(started), Ordering::Relaxed);
        if !Clogged::due(&self.clogged.deep_from) {
            return Ok((picked, dead));
        }
        let started = std::time::Instant::now();
        let mut stmt = tx.prepare_cached(RECEIVE_FIFO_DEEP)?;
        walk(&mut stmt.query(params![self.name, last_seq])?, MAX_WALK, &mut last_seq)?;
        self.clogged.deep_from.store(Clogged::pause(started), Ordering::Relaxed);
        Ok((picked, dead))
    }

    /// Up to `max` messages of a standard queue that are visible now, oldest first, and those
    /// to move to the dead-letter queue.
    fn pick_standard(&self, tx: &Transaction<'_>, max: usize, now: i64) -> rusqlite::Result<(Vec<Picked>, Vec<i64>)> {
        let mut picked: Vec<Picked> = Vec::new();
        let mut dead: Vec<i64> = Vec::new();
        let mut stmt = tx.prepare_cached(RECEIVE_STANDARD)?;
        let mut rows = stmt.query(params![self.name, now])?;
        let mut walked = 0;
        while let Some(row) = rows.next()? {
            walked += 1;
            let (seq, receive_count): (i64, i64) = (row.get(0)?, row.get(1)?);
            if self.is_dead(receive_count) {
                dead.push(seq);
            } else {
                picked.push(Picked { seq, group_id: None, receive_count, sent_at: None });
                if picked.len() >= max {
                    break;
                }
            }
            if walked >= MAX_WALK {
                break;
            }
        }
        Ok((picked, dead))
    }
}

/// A message a receive delivers.
struct Picked {
    seq: i64,
    group_id: Option<String>,
    /// Before this receive.
    receive_count: i64,
    /// When a never received FIFO message was sent (its first `visible_at`), in milliseconds.
    sent_at: Option<i64>,
}

#[async_trait]
impl Queue for SqliteQueue {
    fn kind(&self) -> QueueKind {
        self.kind
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: OutgoingMessage) -> Result<(), QueueError> {
        validate_send(self.kind, &message)?;
        let name = self.name.clone();
        let now = now_ms();
        let queued = self.db.run(move |tx| insert_message(tx, &name, &message, now, Dedup::Window)).await?;
        if queued {
            self.db.wake_receivers(1);
        }
        Ok(())
    }

    async fn release_in_flight(&self) -> Result<u64, QueueError> {
        let (name, now) = (self.name.clone(), now_ms());
        let released = self
            .db
            .run(move |tx| {
                tx.execute(
                    "UPDATE queue_messages SET visible_at = ?2, receipt = NULL
                     WHERE queue = ?1 AND receipt IS NOT NULL AND visible_at > ?2",
                    params![name, now],
                )
            })
            .await?;
        Ok(released as u64)
    }

    fn in_transaction(&self, message: &OutgoingMessage) -> Option<crate::store::Write> {
        Some(crate::store::Write::Enqueue { queue: self.name.clone(), message: message.clone() })
    }

    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>, QueueError> {
        validate_receive(&options)?;
        let deadline = tokio::time::Instant::now() + options.wait;
        loop {
            let this = self.clone();
            let got = self.db.run(move |tx| this.try_receive(tx, &options)).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let nap = POLL_INTERVAL.min(deadline - now);
            tokio::select! {
                _ = self.db.queued().notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.delete_batch(&[receipt.to_string()]).await
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        let rows: Vec<(i64, String)> = receipts.iter().filter_map(|r| seq_of(r).map(|seq| (seq, r.clone()))).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let name = self.name.clone();
        self.db
            .run(move |tx| {
                let mut stmt =
                    tx.prepare_cached("DELETE FROM queue_messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")?;
                for (seq, r) in &rows {
                    stmt.execute(params![seq, name, r])?;
                }
                Ok(())
            })
            .await?;
        // A job done may free the next one of its group: a clogged queue is walked again.
        self.clogged.walk_from.store(0, Ordering::Relaxed);
        self.backlog.finished();
        Ok(())
    }

    async fn dead_letter_queue(&self) -> Result<Option<Arc<dyn Queue>>, QueueError> {
        // The tables exist already (this queue opened them), so nothing is set up here.
        Ok(self.redrive.as_ref().map(|r| {
            Arc::new(SqliteQueue {
                db: self.db.clone(),
                name: r.dead_letter_queue.clone(),
                kind: self.kind,
                redrive: None,
                clogged: Arc::default(),
                backlog: Arc::default(),
            }) as Arc<dyn Queue>
        }))
    }

    async fn change_visibility(&self, receipt: &str, after: Duration) -> Result<(), QueueError> {
        let Some(seq) = seq_of(receipt) else { return Ok(()) };
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        let visible_at = now_ms().saturating_add(ms(after.min(MAX_VISIBILITY)));
        self.db
            .run(move |tx| {
                tx.prepare_cached(
                    "UPDATE queue_messages SET visible_at = ?1 WHERE seq = ?2 AND queue = ?3 AND receipt = ?4",
                )?
                .execute(params![visible_at, seq, name, receipt])
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receives_measure_how_long_the_oldest_new_message_waited_and_deletions_that_work_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let q = SqliteQueue::open(db, "f", QueueKind::Fifo, None).unwrap();
        let backlog = q.backlog();
        q.send(OutgoingMessage::fifo("a", "ga", "a")).await.unwrap();
        q.send(OutgoingMessage::fifo("b", "gb", "b")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let options = ReceiveOptions::new(1, Duration::from_secs(30));
        let a = q.receive(options).await.unwrap();
        assert_eq!(backlog.behind(), None, "received, but nothing finished yet");
        q.delete_batch(&[a[0].receipt.clone()]).await.unwrap();
        let lag = backlog.behind().expect("received and finished just now: a lag");
        assert!(lag >= Duration::from_millis(300), "a waited at least 300 ms: {lag:?}");
        // A message received again (its time ran out) is no measure of new work waiting.
        let b = q.receive(options).await.unwrap();
        assert_eq!(b[0].body, "b");
        q.change_visibility(&b[0].receipt, Duration::ZERO).await.unwrap();
        assert_eq!(q.receive(options).await.unwrap()[0].body, "b");
        assert_eq!(backlog.behind(), None, "nothing new was handed out");
        assert!(q.receive(options).await.unwrap().is_empty());
        assert_eq!(backlog.behind(), None, "an empty receive: keeping up");
    }

    #[tokio::test]
    async fn the_receive_walks_are_compiled_once_whatever_is_bound() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let fifo = SqliteQueue::open(db.clone(), "f", QueueKind::Fifo, None).unwrap();
        fifo.send(OutgoingMessage::fifo("m", "g", "d")).await.unwrap();
        let timers = SqliteQueue::open(db.clone(), "t", QueueKind::Standard, None).unwrap();
        timers.send(OutgoingMessage::standard("m")).await.unwrap();
        assert_eq!(crate::embedded::recompilations(&db, RECEIVE_FIFO, &[&"f"]), 0, "FIFO receive recompiled");
        let now = 0_i64;
        assert_eq!(crate::embedded::recompilations(&db, RECEIVE_FIFO_AGAIN, &[&"f", &now]), 0, "FIFO again recompiled");
        assert_eq!(crate::embedded::recompilations(&db, HELD_BEFORE, &[&"f", &"g", &now]), 0, "held check recompiled");
        assert_eq!(crate::embedded::recompilations(&db, RECEIVE_FIFO_DEEP, &[&"f", &now]), 0, "deep walk recompiled");
        let now = i64::MAX;
        assert_eq!(
            crate::embedded::recompilations(&db, RECEIVE_STANDARD, &[&"t", &now]),
            0,
            "timer receive recompiled"
        );
    }

    /// A data directory whose database an older version wrote: the messages table, then `sql`
    /// (its indexes and rows), written by a plain connection.
    fn file_from_before(sql: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let old = rusqlite::Connection::open(dir.path().join(crate::embedded::DB_FILE)).unwrap();
        old.execute_batch(&format!("CREATE TABLE queue_messages {MESSAGE_COLUMNS}; {sql}")).unwrap();
        dir
    }

    #[tokio::test]
    async fn the_fifo_walks_read_only_their_indexes_and_an_older_file_gets_them() {
        // A file from before: its walk index was (queue, seq), which made the walk read every
        // row it passed.
        let dir = file_from_before("CREATE INDEX queue_messages_order ON queue_messages (queue, seq);");
        let db = Db::open_in(dir.path()).unwrap();
        SqliteQueue::open(db.clone(), "f", QueueKind::Fifo, None).unwrap();
        let plan = |sql: &'static str, params: Vec<Box<dyn rusqlite::ToSql + Send + Sync>>| {
            let db = db.clone();
            async move {
                db.read(move |tx| {
                    let mut stmt = tx.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let params: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| p.as_ref() as _).collect();
                    let rows = stmt.query_map(params.as_slice(), |r| r.get::<_, String>(3))?;
                    rows.collect::<rusqlite::Result<Vec<String>>>()
                })
                .await
                .unwrap()
                .join("; ")
            }
        };
        let fresh = plan(RECEIVE_FIFO, vec![Box::new("f")]).await;
        assert!(fresh.contains("USING COVERING INDEX queue_messages_fresh"), "{fresh}");
        let again = plan(RECEIVE_FIFO_AGAIN, vec![Box::new("f"), Box::new(0_i64)]).await;
        assert!(again.contains("USING COVERING INDEX queue_messages_back"), "{again}");
        let held = plan(HELD_BEFORE, vec![Box::new("f"), Box::new("g"), Box::new(0_i64)]).await;
        assert!(held.contains("USING COVERING INDEX queue_messages_held"), "{held}");
        let deep = plan(RECEIVE_FIFO_DEEP, vec![Box::new("f"), Box::new(0_i64)]).await;
        assert!(
            deep.contains("USING COVERING INDEX queue_messages_fresh")
                && deep.contains("USING COVERING INDEX queue_messages_held")
                && !deep.contains("TEMP B-TREE"),
            "{deep}"
        );
        for old in ["queue_messages_order", "queue_messages_walk"] {
            let left = db
                .read(move |tx| {
                    tx.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = ?1", [old], |r| r.get::<_, i64>(0))
                })
                .await
                .unwrap();
            assert_eq!(left, 0, "the older index {old} is dropped: every message paid for it");
        }
    }

    #[tokio::test]
    async fn a_dedup_id_stays_remembered_after_its_message_is_deleted() {
        // AWS documents this; moto forgets the id, so it cannot live in the shared contract.
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(Db::open_in(dir.path()).unwrap(), "n", QueueKind::Fifo, None).unwrap();
        q.send(OutgoingMessage::fifo("first", "g", "job-1")).await.unwrap();
        let got = q.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
        q.delete(&got[0].receipt).await.unwrap();
        q.send(OutgoingMessage::fifo("late retry", "g", "job-1")).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_database_from_an_older_version_keeps_its_messages_and_takes_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = rusqlite::Connection::open(dir.path().join(crate::embedded::DB_FILE)).unwrap();
            old.execute_batch(
                "CREATE TABLE queue_messages (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
                    message_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, group_id TEXT,
                    visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT UNIQUE);
                 INSERT INTO queue_messages (queue, message_id, body, group_id, visible_at)
                     VALUES ('n', 'uuid-1', 'waiting', 'g', 0), ('n', 'uuid-2', 'gone', 'g', 0);
                 DELETE FROM queue_messages WHERE message_id = 'uuid-2';",
            )
            .unwrap();
        }
        let q = SqliteQueue::open(Db::open_in(dir.path()).unwrap(), "n", QueueKind::Fifo, None).unwrap();
        q.send(OutgoingMessage::fifo("new one", "g", "job-1")).await.unwrap();
        q.send(OutgoingMessage::fifo("and another", "h", "job-2")).await.unwrap();
        let got = q.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["waiting", "new one", "and another"]);
        assert_eq!(got[1].message_id, "m3", "sequence numbers continue after the deleted row");
        q.delete_batch(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_message_in_flight_under_the_previous_walk_index_stays_held_after_the_upgrade() {
        // A process of the version before (one walk index over every message) was killed with
        // a1 in hand; the next version opens the file.
        let dir = file_from_before(
            "CREATE INDEX queue_messages_walk ON queue_messages (queue, seq, visible_at, group_id, receive_count);
             INSERT INTO queue_messages (queue, message_id, body, group_id, visible_at, receive_count, receipt)
                 VALUES ('n', '', 'a1', 'A', 9000000000000, 1, '1.old'),
                        ('n', '', 'a2', 'A', 0, 0, NULL),
                        ('n', '', 'b1', 'B', 0, 0, NULL);",
        );
        let q = SqliteQueue::open(Db::open_in(dir.path()).unwrap(), "n", QueueKind::Fifo, None).unwrap();
        let long = ReceiveOptions::new(10, Duration::from_secs(300));
        let b = q.receive(long).await.unwrap();
        assert_eq!(bodies(&b), ["b1"], "a2 waits for a1, still in hand");
        q.delete(&b[0].receipt).await.unwrap();
        assert_eq!(q.release_in_flight().await.unwrap(), 1);
        let got = q.receive(long).await.unwrap();
        assert_eq!(bodies(&got), ["a1", "a2"]);
        assert_eq!(got.iter().map(|m| m.receive_count).collect::<Vec<_>>(), [2, 1]);
    }

    #[tokio::test]
    async fn a_restart_resumes_what_a_killed_process_had_in_hand_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let q = SqliteQueue::open(db.clone(), "n", QueueKind::Fifo, None).unwrap();
        let timers = SqliteQueue::open(db, "t", QueueKind::Standard, None).unwrap();
        q.send(OutgoingMessage::fifo("in hand", "g", "job-1")).await.unwrap();
        timers.send(OutgoingMessage::standard("later").delayed(Duration::from_secs(600))).await.unwrap();
        let first = q.receive(ReceiveOptions::new(10, Duration::from_secs(300))).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(q.receive(ReceiveOptions::new(10, Duration::from_secs(300))).await.unwrap().is_empty());
        // The process that received it dies; the next one starts.
        assert_eq!(q.release_in_flight().await.unwrap(), 1);
        let again = q.receive(ReceiveOptions::new(10, Duration::from_secs(300))).await.unwrap();
        assert_eq!((again[0].body.as_str(), again[0].receive_count), ("in hand", 2));
        q.delete(&first[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 1, "the dead process's receipt no longer deletes it");
        assert_eq!(
            timers.release_in_flight().await.unwrap(),
            0,
            "a delayed message was never received: it keeps its delay"
        );
        assert!(timers.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap().is_empty());
    }

    fn bodies(got: &[ReceivedMessage]) -> Vec<&str> {
        got.iter().map(|m| m.body.as_str()).collect()
    }

    #[tokio::test]
    async fn a_group_received_before_goes_on_in_send_order_whichever_message_is_visible_first() {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(Db::open_in(dir.path()).unwrap(), "n", QueueKind::Fifo, None).unwrap();
        for (body, group) in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A")] {
            q.send(OutgoingMessage::fifo(body, group, body)).await.unwrap();
        }
        let long = ReceiveOptions::new(10, Duration::from_secs(300));
        let first = q.receive(ReceiveOptions::new(2, Duration::from_secs(300))).await.unwrap();
        assert_eq!(bodies(&first), ["a1", "a2"], "one group's messages come together, in order");
        // a1 failed and waits; a2 (not tried) is pushed back for less time and is visible first.
        q.change_visibility(&first[0].receipt, Duration::from_secs(600)).await.unwrap();
        q.change_visibility(&first[1].receipt, Duration::ZERO).await.unwrap();
        assert_eq!(bodies(&q.receive(long).await.unwrap()), ["b1"], "A waits for a1, whatever a2 does");
        // Now a1 is visible again but a2 waits: the never received a3 must not pass a2.
        q.change_visibility(&first[0].receipt, Duration::ZERO).await.unwrap();
        q.change_visibility(&first[1].receipt, Duration::from_secs(600)).await.unwrap();
        let second = q.receive(long).await.unwrap();
        assert_eq!(bodies(&second), ["a1"], "a3 waits for a2");
        q.delete(&second[0].receipt).await.unwrap();
        // a2's time comes: a2 and then a3 go, in order, in one batch.
        q.change_visibility(&first[1].receipt, Duration::ZERO).await.unwrap();
        let third = q.receive(long).await.unwrap();
        assert_eq!(bodies(&third), ["a2", "a3"]);
        assert_eq!(third.iter().map(|m| m.receive_count).collect::<Vec<_>>(), [2, 1]);
        // Only a3 goes back: it waits while a2 is in hand.
        q.change_visibility(&third[1].receipt, Duration::ZERO).await.unwrap();
        assert!(q.receive(long).await.unwrap().is_empty(), "a3 waits while a2 is held");
        q.delete(&third[0].receipt).await.unwrap();
        assert_eq!(bodies(&q.receive(long).await.unwrap()), ["a3"]);
    }

    /// Queues `n` messages `message(0..n)` on queue `n` of `db` in one transaction.
    async fn queue_many(db: &Db, n: i64, message: fn(i64) -> OutgoingMessage) {
        db.run(move |tx| {
            for i in 0..n {
                insert_message(tx, "n", &message(i), 0, Dedup::InTransaction)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Queue `n` of `db` with the jobs of `alerts` alerts (groups `ALR-<i>`), each received once
    /// and pushed back an hour, as failed jobs are in a long Mattermost outage.
    async fn failed_jobs(db: &Db, alerts: i64) {
        queue_many(db, alerts, |i| OutgoingMessage::fifo(format!("failed {i}"), format!("ALR-{i}"), format!("t{i}")))
            .await;
        let later = now_ms() + 3_600_000;
        db.run(move |tx| {
            tx.execute("UPDATE queue_messages SET receive_count = 1, receipt = 'r', visible_at = ?1", [later])
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn jobs_waiting_for_their_retry_never_hold_back_new_ones_however_many() {
        // A long Mattermost outage: more jobs pushed back for later than a walk may pass
        // (MAX_WALK). The walk used to pass them in send order and stop before the new job.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let q = SqliteQueue::open(db.clone(), "n", QueueKind::Fifo, None).unwrap();
        failed_jobs(&db, MAX_WALK as i64 + 1_000).await;
        q.send(OutgoingMessage::fifo("new", "ALR-new", "j-new")).await.unwrap();
        let got = q.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
        assert_eq!(bodies(&got), ["new"]);
    }

    #[tokio::test]
    async fn jobs_waiting_behind_failed_jobs_of_their_own_alerts_never_hold_back_new_ones() {
        // A long Mattermost outage: more alerts than a walk may pass (MAX_WALK) each have a
        // failed job pushed back for later and a newer job waiting behind it (its
        // acknowledgement). The walk passed those and stopped before the new alerts' jobs.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let q = SqliteQueue::open(db.clone(), "n", QueueKind::Fifo, None).unwrap();
        let alerts = MAX_WALK as i64 + 500;
        failed_jobs(&db, alerts).await;
        // Each alert's next job queued behind its failed one.
        queue_many(&db, alerts, |i| OutgoingMessage::fifo(format!("ack {i}"), format!("ALR-{i}"), format!("a{i}")))
            .await;
        for (body, group) in [("new 1", "ALR-new-1"), ("new 1 acked", "ALR-new-1"), ("new 2", "ALR-new-2")] {
            q.send(OutgoingMessage::fifo(body, group, body)).await.unwrap();
        }
        let options = ReceiveOptions::new(10, Duration::from_secs(30));
        let got = q.receive(options).await.unwrap();
        assert_eq!(bodies(&got), ["new 1", "new 1 acked", "new 2"], "in send order, and no job of a held alert");
        // A job sent later is found too (a clogged queue is walked about once a second), and
        // nothing else goes: every other alert's next job waits for its failed one.
        q.send(OutgoingMessage::fifo("new 3", "ALR-new-3", "new 3")).await.unwrap();
        let got = q.receive(options.waiting(Duration::from_secs(10))).await.unwrap();
        assert_eq!(bodies(&got), ["new 3"]);
        assert!(q.receive(options.waiting(Duration::from_secs(3))).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_long_queue_of_one_alert_drains_without_pauses() {
        // Thousands of jobs of one alert (a storm of its repeats, a slow Mattermost): while a
        // batch is in flight the walk passes more than MAX_WALK of them and finds the queue
        // clogged, but the batch's deletion frees the next one at once.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let q = SqliteQueue::open(db.clone(), "n", QueueKind::Fifo, None).unwrap();
        queue_many(&db, MAX_WALK as i64 + 100, |i| OutgoingMessage::fifo(format!("{i}"), "ALR-1", format!("j{i}")))
            .await;
        let options = ReceiveOptions::new(10, Duration::from_secs(30));
        let first = q.receive(options).await.unwrap();
        assert_eq!(bodies(&first), ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        assert!(q.receive(options).await.unwrap().is_empty(), "the rest waits while the batch is in flight");
        let receipts: Vec<String> = first.iter().map(|m| m.receipt.clone()).collect();
        q.delete_batch(&receipts).await.unwrap();
        let next = q.receive(options).await.unwrap();
        assert_eq!(bodies(&next), ["10", "11", "12", "13", "14", "15", "16", "17", "18", "19"]);
    }

    #[tokio::test]
    async fn jobs_moved_to_the_dead_letters_free_a_clogged_queue_at_once() {
        // As a deletion does: the group's next job goes in the same receive.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let redrive = Redrive { dead_letter_queue: "n-dead".into(), max_receives: 1 };
        let q = SqliteQueue::open(db.clone(), "n", QueueKind::Fifo, Some(redrive)).unwrap();
        queue_many(&db, MAX_WALK as i64 + 100, |i| OutgoingMessage::fifo(format!("{i}"), "ALR-1", format!("j{i}")))
            .await;
        let options = ReceiveOptions::new(10, Duration::from_secs(300));
        let first = q.receive(options).await.unwrap();
        assert_eq!(first.len(), 10);
        assert!(q.receive(options).await.unwrap().is_empty(), "clogged: the rest waits behind the batch");
        // The batch comes back having used up its receives: it goes to the dead letters.
        for m in &first {
            q.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
        let next = q.receive(options).await.unwrap();
        assert_eq!(bodies(&next), ["10", "11", "12", "13", "14", "15", "16", "17", "18", "19"]);
        let dead = q.dead_letter_queue().await.unwrap().expect("the queue has dead letters");
        assert_eq!(dead.receive(options).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn a_receive_does_not_pass_the_messages_in_flight() {
        // 300 messages in flight, each its own group (a storm of new alerts): a receive finds
        // the next one without reading them.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        let q = SqliteQueue::open(db.clone(), "n", QueueKind::Fifo, None).unwrap();
        for i in 0..301 {
            q.send(OutgoingMessage::fifo(format!("m{i}"), format!("ALR-{i}"), format!("j{i}"))).await.unwrap();
        }
        for _ in 0..30 {
            assert_eq!(q.receive(ReceiveOptions::new(10, Duration::from_secs(300))).await.unwrap().len(), 10);
        }
        let steps = db
            .run(|tx| {
                let mut stmt = tx.prepare_cached(RECEIVE_FIFO)?;
                let mut rows = stmt.query(params!["n"])?;
                let mut n = 0;
                while rows.next()?.is_some() {
                    n += 1;
                }
                Ok(n)
            })
            .await
            .unwrap();
        assert_eq!(steps, 1, "the walk sees only the message never received");
        let last = q.receive(ReceiveOptions::new(10, Duration::from_secs(300))).await.unwrap();
        assert_eq!(bodies(&last), ["m300"]);
    }

    #[tokio::test]
    async fn queued_messages_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = SqliteQueue::open(Db::open_in(dir.path()).unwrap(), "n", QueueKind::Fifo, None).unwrap();
            q.send(OutgoingMessage::fifo("kept", "g", "job-1")).await.unwrap();
        }
        let q = SqliteQueue::open(Db::open_in(dir.path()).unwrap(), "n", QueueKind::Fifo, None).unwrap();
        let got = q.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "kept");
    }
}
