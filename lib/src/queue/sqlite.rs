//! The embedded queue: SQLite tables with SQS semantics (FIFO groups and deduplication,
//! per-message delay, visibility timeout, receive counts, dead-lettering).

use super::{
    DEDUP_WINDOW, MAX_VISIBILITY, OutgoingMessage, Queue, QueueError, QueueKind, ReceiveOptions, ReceivedMessage,
    validate_receive, validate_send,
};
use crate::embedded::{Db, DbError};
use async_trait::async_trait;
use rusqlite::{Transaction, params};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    group_id TEXT,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, visible_at);
-- Receives walk a FIFO queue in send order and stop after a batch.
CREATE INDEX IF NOT EXISTS queue_messages_order ON queue_messages (queue, seq);
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
-- Every send purges expired deduplication ids; without this it scans them all.
CREATE INDEX IF NOT EXISTS queue_dedup_expiry ON queue_dedup (queue, expires_at);
-- The dead-letter move looks only at messages received many times, not the whole backlog.
CREATE INDEX IF NOT EXISTS queue_messages_receives ON queue_messages (queue, receive_count);
";

/// Creates the queue tables (idempotent): the store needs them too, since its transactions
/// may queue messages.
pub(crate) fn create_tables(db: &Db) -> Result<(), DbError> {
    db.execute_batch(SCHEMA)
}

/// Queues `message` inside `tx`, as SQS would: a FIFO message whose deduplication id was seen
/// within the window is accepted and dropped (returns false).
pub(crate) fn insert_message(
    tx: &Transaction<'_>,
    queue: &str,
    message: &OutgoingMessage,
    now: i64,
) -> rusqlite::Result<bool> {
    if let Some(dedup) = &message.dedup_id {
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
    tx.prepare_cached(
        "INSERT INTO queue_messages (queue, message_id, body, group_id, visible_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        queue,
        uuid::Uuid::new_v4().to_string(),
        message.body,
        message.group_id,
        now + ms(message.delay)
    ])?;
    Ok(true)
}

/// How often a waiting receive looks again when nothing in this process has sent.
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
        db.execute_batch(SCHEMA)?;
        Ok(SqliteQueue { db, name: name.into(), kind, redrive })
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
        if let Some(r) = &self.redrive {
            // SQS moves a message when a receive would deliver it for the (max+1)-th time.
            tx.execute(
                "UPDATE queue_messages SET queue = ?1, receive_count = 0, receipt = NULL
                 WHERE queue = ?2 AND visible_at <= ?3 AND receive_count >= ?4",
                params![r.dead_letter_queue, self.name, now, r.max_receives],
            )?;
        }
        let blocked: HashSet<String> = if self.kind == QueueKind::Fifo {
            let mut stmt = tx.prepare_cached(
                "SELECT DISTINCT group_id FROM queue_messages
                 WHERE queue = ?1 AND receipt IS NOT NULL AND visible_at > ?2",
            )?;
            let rows = stmt.query_map(params![self.name, now], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        } else {
            HashSet::new()
        };
        let order = match self.kind {
            QueueKind::Fifo => "seq",
            QueueKind::Standard => "visible_at, seq",
        };
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT seq, message_id, body, group_id, receive_count FROM queue_messages
             WHERE queue = ?1 AND visible_at <= ?2 ORDER BY {order}"
        ))?;
        let mut rows = stmt.query(params![self.name, now])?;
        let mut picked = Vec::new();
        while let Some(row) = rows.next()? {
            let group: Option<String> = row.get(3)?;
            if group.as_ref().is_some_and(|g| blocked.contains(g)) {
                continue;
            }
            picked.push((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                group,
                row.get::<_, i64>(4)?,
            ));
            if picked.len() >= options.max {
                break;
            }
        }
        drop(rows);
        let visible_at = now.saturating_add(ms(options.visibility));
        let mut out = Vec::with_capacity(picked.len());
        for (seq, message_id, body, group_id, count) in picked {
            let receipt = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "UPDATE queue_messages SET receipt = ?1, visible_at = ?2, receive_count = receive_count + 1 WHERE seq = ?3",
                params![receipt, visible_at, seq],
            )?;
            out.push(ReceivedMessage { message_id, receipt, body, group_id, receive_count: count as u32 + 1 });
        }
        Ok(out)
    }
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
        let queued = self.db.run(move |tx| insert_message(tx, &name, &message, now)).await?;
        if queued {
            self.db.wake_receivers();
        }
        Ok(())
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
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        self.db
            .run(move |tx| {
                tx.execute("DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2", params![name, receipt])
            })
            .await?;
        Ok(())
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let (name, receipts) = (self.name.clone(), receipts.to_vec());
        self.db
            .run(move |tx| {
                let mut stmt = tx.prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2")?;
                for r in &receipts {
                    stmt.execute(params![name, r])?;
                }
                Ok(())
            })
            .await?;
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
            }) as Arc<dyn Queue>
        }))
    }

    async fn change_visibility(&self, receipt: &str, after: Duration) -> Result<(), QueueError> {
        let (name, receipt) = (self.name.clone(), receipt.to_string());
        let visible_at = now_ms().saturating_add(ms(after.min(MAX_VISIBILITY)));
        self.db
            .run(move |tx| {
                tx.execute(
                    "UPDATE queue_messages SET visible_at = ?1 WHERE queue = ?2 AND receipt = ?3",
                    params![visible_at, name, receipt],
                )
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
