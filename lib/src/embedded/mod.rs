//! The embedded database both SQLite adapters share: one file, one writer, many readers.
//!
//! **Group commit.** One thread owns the connection that writes. Every write call is a job sent
//! to it; it takes every job waiting (up to [`writer::MAX_GROUP`]), runs them in one transaction,
//! commits once (one fsync for the whole group) and only then answers each caller. A job that
//! fails or rolls back undoes only its own writes: the group is then run again with a savepoint
//! per job ([`writer::write_loop`]). So under load many requests share one commit, and an answer always
//! comes after the commit that holds its write: an acknowledged write is durable
//! (`synchronous = FULL`). The writer's page cache is [`page_cache`]'s, which a commit does not
//! walk.
//!
//! **Readers** run on their own connections (WAL lets them read beside the writer), on the
//! calling task (on tokio's blocking pool only while the file is locked), and see every write
//! whose caller has been answered. A reader's page cache is
//! dropped whenever another connection committed, so a read that a write will follow is better
//! made in the writer's job itself (`Store::decide_and_write`), where the cache stays warm.
//!
//! **State beside the transaction.** An adapter may keep in memory what mirrors rows of the
//! file (the store's index of its point partitions); the writer keeps such state in step with
//! its transactions, undoing with a job or group rolled back what it changed ([`tx_state`]).
//!
//! **The WAL.** A commit's pages go to the WAL file in one write ([`wal_writes`], a thin VFS
//! over SQLite's own), and a checkpointer thread copies them into the database file beside the
//! writer, starting their write-back as it goes ([`write_back`]), and starts the WAL over when
//! it is long ([`checkpoint::checkpoint_loop`]).
//!
//! **Deadlines.** A request that must answer in time (an intake, `/healthz`) runs inside
//! [`with_deadline`]. Every database call made under it waits for SQLite's file lock only until
//! the deadline, then fails with [`DbError::Deadline`] having done nothing: the writer checks a
//! job's deadline before running it, and a job it ran is answered only after its commit. So
//! when another process holds `klaxon.db` locked, callers get a quick 503 instead of queueing
//! behind each other for seconds, and a call that gave up can never commit later behind the
//! caller's back.

mod checkpoint;
mod page_cache;
mod read_ahead;
pub(crate) mod tx_state;
mod wal_writes;
mod write_back;
mod writer;

pub use page_cache::truncations as page_cache_truncations;
#[cfg(test)]
pub(crate) use wal_writes::fail_next_wal_write;

use checkpoint::{CHECKPOINT_EVERY, RESTART_AT, checkpoint_loop};
use rusqlite::{Connection, Transaction};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use writer::{Answer, Call, Job, write_loop};

/// How long a call without a deadline (the notifier's workers, the sweep) waits for SQLite's
/// file lock when another process holds it.
const BACKGROUND_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size of a new database file.
const PAGE_SIZE: u32 = 2048;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;
/// Reader connections kept open between reads.
const IDLE_READERS: usize = 8;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `fut` with every database call in it bounded by `within` from now (or by an enclosing
/// deadline, if that is sooner).
pub async fn with_deadline<F: Future>(within: Duration, fut: F) -> F::Output {
    let mut deadline = Instant::now() + within;
    if let Ok(outer) = DEADLINE.try_with(|d| *d) {
        deadline = deadline.min(outer);
    }
    DEADLINE.scope(deadline, fut).await
}

/// The deadline the current task runs under, if any: for work handed to another task on the
/// caller's behalf, which then runs it under [`with_deadline_at`].
pub fn current_deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `fut` with every database call in it bounded by `at`.
pub async fn with_deadline_at<F: Future>(at: Instant, fut: F) -> F::Output {
    DEADLINE.scope(at, fut).await
}

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "klaxon.db";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the data directory {path}: {source}; check the path and its permissions")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the SQLite database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database worker stopped unexpectedly ({0}); restart Klaxon")]
    Worker(String),
    #[error("the database did not answer in time (another process may hold {path} locked); nothing was written, retry")]
    Deadline { path: PathBuf },
    #[error("the transaction holding this write could not be committed ({0}); nothing was written, retry")]
    Commit(String),
}

#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<std::sync::Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// Woken whenever a committed write put a message into an embedded queue.
    queued: Arc<Notify>,
    /// The in-memory states that follow the writer's transactions ([`tx_state`]).
    states: Arc<std::sync::Mutex<tx_state::States>>,
}

impl Db {
    /// Opens (creating if needed) `DATA_DIR/klaxon.db`.
    pub fn open_in(data_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| DbError::CreateDir { path: data_dir.to_path_buf(), source })?;
        Db::open(&data_dir.join(DB_FILE))
    }

    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_checkpointing(path, RESTART_AT, CHECKPOINT_EVERY)
    }

    /// [`Db::open`], with the checkpointer copying at most `every` and starting the WAL over at
    /// `restart_at` pages.
    fn open_checkpointing(path: &Path, restart_at: i64, every: Duration) -> Result<Db, DbError> {
        let conn = open_connection(path)?;
        let checkpoints = open_connection(path)?;
        let (writer, jobs) = mpsc::channel::<Job>();
        let (committed, commits) = mpsc::sync_channel::<()>(1);
        let gate = Arc::new(std::sync::Mutex::new(()));
        let wal_pages = Arc::new(AtomicI64::new(0));
        let thread_path = path.to_path_buf();
        let (writer_gate, writer_wal_pages) = (gate.clone(), wal_pages.clone());
        let states = Arc::new(std::sync::Mutex::new(tx_state::States::default()));
        let writer_states = states.clone();
        std::thread::Builder::new()
            .name("klaxon-db-writer".into())
            .spawn(move || write_loop(conn, jobs, committed, writer_wal_pages, writer_gate, writer_states, thread_path))
            .map_err(|e| DbError::Worker(format!("cannot start the database writer: {e}")))?;
        std::thread::Builder::new()
            .name("klaxon-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, commits, wal_pages, gate, restart_at, every))
            .map_err(|e| DbError::Worker(format!("cannot start the database checkpointer: {e}")))?;
        Ok(Db {
            writer,
            readers: Arc::new(std::sync::Mutex::new(Vec::new())),
            path: path.to_path_buf(),
            queued: Arc::new(Notify::new()),
            states,
        })
    }

    /// This database's in-memory state of type `T` (made by `make` the first time any caller
    /// asks), which the writer keeps in step with its transactions: change it only inside
    /// writer jobs ([`Db::run`], [`Db::run_or_rollback`], [`Db::setup`]); see [`tx_state`].
    pub(crate) fn tx_state<T: tx_state::TxState + 'static>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Arc<std::sync::Mutex<T>> {
        tx_state::lock(&self.states).get_or_make(make)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Woken after a committed write queued a message (see [`Db::wake_receivers`]).
    pub(crate) fn queued(&self) -> &Notify {
        &self.queued
    }

    /// Wakes one receive waiting on an embedded queue for each of `messages` just queued (the
    /// others go on waiting, up to their poll interval). Waking every waiting receive for each
    /// message sent once cost a storm of repeats of one alert dearly: the 32 notifier loops all
    /// woke for each of its jobs, and all but one found its group busy, each after a walk of the
    /// queue on the writer.
    pub(crate) fn wake_receivers(&self, messages: usize) {
        for _ in 0..messages {
            self.queued.notify_one();
        }
    }

    /// Runs set-up SQL (schemas) on the writer and waits for it.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        let sql = sql.to_string();
        self.setup(move |tx| tx.execute_batch(&sql))
    }

    /// Runs set-up work (schemas, upgrades) on the writer in its own transaction, and waits for
    /// it (it blocks: call it while opening, not from a busy async task).
    pub fn setup<T, F>(&self, mut f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, result) = mpsc::channel();
        let f = move |tx: &Transaction<'_>| f(tx).map(Ok::<T, std::convert::Infallible>);
        self.send(Job::new(None, Box::new(Call::new(f, Answer::Thread(done)))))?;
        match result.recv().map_err(|_| DbError::Worker("the database writer stopped".into()))? {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(never)) => match never {},
            Err(e) => Err(e),
        }
    }

    fn send(&self, job: Job) -> Result<(), DbError> {
        self.writer.send(job).map_err(|_| DbError::Worker("the database writer stopped".into()))
    }

    /// Runs `f` in one transaction and commits whatever it did. `f` may run more than once
    /// (see [`writer::Work`]); only the last run's writes are kept.
    pub async fn run<T, F>(&self, mut f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_or_rollback(move |tx| f(tx).map(Ok::<T, std::convert::Infallible>)).await.map(|r| match r {
            Ok(v) => v,
            Err(never) => match never {},
        })
    }

    /// Runs `f` on the writer, as part of the current group's transaction; keeps what it did
    /// only if it returns `Ok(Ok(_))`, and answers after the group's commit. `f` may run more
    /// than once (see [`writer::Work`]); only the last run's writes are kept.
    pub async fn run_or_rollback<T, E, F>(&self, f: F) -> Result<Result<T, E>, DbError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnMut(&Transaction<'_>) -> rusqlite::Result<Result<T, E>> + Send + 'static,
    {
        let deadline = DEADLINE.try_with(|d| *d).ok().map(Instant::into_std);
        let (answer, answered) = oneshot::channel::<Result<Result<T, E>, DbError>>();
        self.send(Job::new(deadline, Box::new(Call::new(f, Answer::Task(answer)))))?;
        answered.await.map_err(|_| DbError::Worker("the database writer dropped a job".into()))?
    }

    /// Runs `f` on a reader connection, in one read transaction (a consistent snapshot of
    /// everything committed when it starts).
    ///
    /// A read takes microseconds, far less than handing it to another thread, so it runs right
    /// here; only if the file is locked (another process in the middle of a checkpoint, say) is
    /// it run again on the blocking pool, where it may wait for the lock.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + Sync + 'static,
    {
        match self.read_now(&f, Duration::ZERO) {
            Err(DbError::Sqlite(e)) if is_busy(&e) => {}
            done => return done,
        }
        let deadline = DEADLINE.try_with(|d| *d).ok();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let busy = match deadline {
                None => BACKGROUND_BUSY_TIMEOUT,
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(DbError::Deadline { path: this.path.clone() }),
                },
            };
            this.read_now(&f, busy)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }

    fn read_now<T>(&self, f: &dyn Fn(&Connection) -> rusqlite::Result<T>, busy: Duration) -> Result<T, DbError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        conn.busy_timeout(busy)?;
        // BEGIN and COMMIT as cached statements: rusqlite's `Transaction` compiles both again on
        // every read, which was a fifth of a read's time in a storm.
        conn.prepare_cached("BEGIN")?.execute([])?;
        let out = f(&conn);
        // A read transaction ends the same way whether `f` succeeded or not. A connection that
        // could not end it is dropped (closing it ends the transaction), not pooled.
        conn.prepare_cached("COMMIT")?.execute([])?;
        let out = out?;
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        Ok(out)
    }
}

fn open_connection(path: &Path) -> Result<Connection, DbError> {
    let open_err = |source| DbError::Open { path: path.to_path_buf(), source };
    // Before SQLite initialises (the first connection does): afterwards it keeps its default.
    if !page_cache::install() {
        tracing::debug!("SQLite was initialised before Klaxon's page cache could be installed; commits cost more");
    }
    // Writes to the WAL go out once per commit (see `wal_writes`). Should registering it ever
    // fail, SQLite's default VFS does the same work, only slower: not worth refusing to start.
    let conn = match wal_writes::register() {
        Ok(()) => Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), wal_writes::NAME),
        Err(why) => {
            tracing::warn!(reason = %why, "writing the WAL one page at a time");
            Connection::open(path)
        }
    }
    .map_err(open_err)?;
    // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable
    // before we acknowledge it ("nothing accepted is ever lost"). A new database gets 2 KiB
    // pages: each alert changes a few pages at random places (its idempotency record, its
    // open-alert entry), and every changed page is written whole to the WAL and again by the
    // checkpoint; with 4 KiB pages a storm wrote 68 KB per alert, with 2 KiB 23 KB (1 KiB pages
    // split alert records over overflow pages and were slower). An existing file keeps its size.
    conn.execute_batch(&format!(
        "PRAGMA page_size = {PAGE_SIZE}; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
    ))
    .map_err(open_err)?;
    conn.busy_timeout(BACKGROUND_BUSY_TIMEOUT).map_err(open_err)?;
    // Room for every statement Klaxon runs (rusqlite keeps 16 by default), so none is compiled
    // again because others pushed it out.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// How often `sql` was compiled again when run in three read transactions, one after the other,
/// on a connection of its own to `db`'s file, with `params` bound each time.
///
/// SQLite recompiles a statement whose plan may depend on a bound value (a bound `LIMIT`, or
/// `col = ?` beside `ORDER BY`) every time that value is bound, which a hot statement cannot
/// afford: its tests check this is 0.
#[cfg(test)]
pub(crate) fn recompilations(db: &Db, sql: &str, params: &[&dyn rusqlite::ToSql]) -> i32 {
    let mut conn = open_connection(&db.path).expect("a test database opens");
    for _ in 0..3 {
        let tx =
            conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred).expect("a read transaction begins");
        let mut stmt = tx.prepare_cached(sql).expect("the statement compiles");
        stmt.query(params).expect("the statement runs").next().expect("a row is read");
    }
    conn.prepare_cached(sql).expect("the statement is cached").get_status(rusqlite::StatementStatus::RePrepare)
}

#[cfg(test)]
mod tests {
    use super::checkpoint::{CHECKPOINT_EVERY, checkpoint, start_over};
    use super::*;
    use rusqlite::params;

    /// A state whose `begin` fails the first time.
    struct BeginFailsOnce(bool);

    impl tx_state::TxState for BeginFailsOnce {
        fn begin(&mut self, _: &Connection) -> rusqlite::Result<()> {
            if std::mem::replace(&mut self.0, true) { Ok(()) } else { Err(rusqlite::Error::InvalidQuery) }
        }
        fn mark(&self) -> usize {
            0
        }
        fn undo_to(&mut self, _: usize) {}
        fn end(&mut self, _: bool) {}
    }

    #[tokio::test]
    async fn a_state_that_cannot_begin_fails_its_group_with_nothing_written_and_the_next_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let _state = db.tx_state(|| BeginFailsOnce(false));
        let err = db.run(|tx| tx.execute("INSERT INTO t VALUES (1)", [])).await.unwrap_err();
        assert!(matches!(err, DbError::Commit(_)), "the caller is told to retry: {err}");
        db.run(|tx| tx.execute("INSERT INTO t VALUES (2)", [])).await.unwrap();
        let rows: Vec<i64> =
            db.read(|c| c.prepare("SELECT k FROM t")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
        assert_eq!(rows, [2], "the refused job wrote nothing");
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_before_the_wal_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        let file = dir.path().join(DB_FILE);
        let before = std::fs::metadata(&file).unwrap().len();
        // About 100 pages in 10 commits: far below the writer's own checkpoint at 1,000.
        for batch in 0..10i64 {
            db.run(move |tx| {
                for k in 0..10 {
                    tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![batch * 10 + k, "x".repeat(2000)])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() < before + 100 * 2000 {
            assert!(Instant::now() < deadline, "no checkpoint copied the commits into {}", file.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let size: u32 = db.read(|tx| tx.query_row("PRAGMA page_size", [], |r| r.get(0))).await.unwrap();
        assert_eq!(size, PAGE_SIZE, "a new database gets the small pages");
    }

    /// When the database file cannot be synced (a failing disk), the checkpointer gives up
    /// starting the WAL over for now: it must not hold the writer back, and nothing committed
    /// may be lost; the next try, once the file syncs, goes ahead.
    #[test]
    fn a_database_file_that_cannot_be_synced_holds_no_write_back_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let writer = open_connection(&path).unwrap();
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        let insert = |k: i64| writer.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, "x".repeat(1500)]);
        for k in 0..300 {
            insert(k).unwrap();
        }
        let checkpointer = open_connection(&path).unwrap();
        let gate = std::sync::Mutex::new(());
        // fsync of /dev/null fails (EINVAL) like a failing disk's; the test means nothing if not.
        let cannot_sync = std::fs::File::open("/dev/null").unwrap();
        assert!(cannot_sync.sync_data().is_err(), "this system syncs /dev/null; the test cannot fail a sync");
        let frames = checkpoint(&checkpointer, "PASSIVE").unwrap().wal;
        assert!(frames >= 300, "the rows are in the WAL ({frames} frames)");

        // A threshold far above the WAL: the checkpointer syncs beside the writer first.
        let wal_pages = AtomicI64::new(frames);
        assert!(!start_over(&checkpointer, Some(&cannot_sync), &gate, &wal_pages, 10 * frames), "it says it restarted");
        assert!(gate.try_lock().is_ok(), "the writer is not held back after the failed sync");
        assert_eq!(wal_pages.into_inner(), frames, "the WAL's length was changed though it did not start over");
        insert(300).unwrap();

        let file = std::fs::File::open(&path).unwrap();
        let wal_pages = AtomicI64::new(frames + 1);
        assert!(
            start_over(&checkpointer, Some(&file), &gate, &wal_pages, 10 * frames),
            "no restart once the file syncs"
        );
        // Until the next commit SQLite still answers the old length: this is how long it is.
        assert_eq!(wal_pages.into_inner(), 0, "the WAL started over but its length was not reset");
        insert(301).unwrap();
        let after = checkpoint(&checkpointer, "PASSIVE").unwrap().wal;
        assert!(after < 10, "once the file syncs, the WAL starts over ({after} frames after one commit)");
        drop(writer);
        let reopened = open_connection(&path).unwrap();
        let rows: i64 = reopened.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 302, "every committed row is there when the file is opened again");
    }

    /// Writes `batches` commits of 10 rows of table `t` from each of four writers that never
    /// wait for each other, so the writer never idles long enough for a checkpoint to catch up
    /// by itself between two commits. Keys start at `from`.
    async fn write_rows(db: &Db, from: i64, batches: i64) {
        let writers: Vec<_> = (0..4i64)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    for batch in 0..batches {
                        db.run(move |tx| {
                            for k in 0..10 {
                                let key = from + (w * batches + batch) * 10 + k;
                                tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![key, "x".repeat(900)])?;
                            }
                            Ok(())
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    }

    /// Reads of table `t` one after another until the flag is set; the task answers how many.
    fn reads_beside(db: &Db) -> (Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<u64>) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (db, flag) = (db.clone(), stop.clone());
        let reads = tokio::spawn(async move {
            let mut n = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        });
        (stop, reads)
    }

    /// Pages the WAL file has room for (it never shrinks: a WAL started over is written again
    /// from its start).
    fn wal_file_pages(path: &Path) -> u64 {
        let wal = path.with_file_name(format!("{DB_FILE}-wal"));
        std::fs::metadata(wal).map(|m| m.len() / u64::from(PAGE_SIZE)).unwrap_or(0)
    }

    /// The WAL header's checkpoint sequence number: SQLite adds one each time the WAL starts over.
    fn wal_restarts(path: &Path) -> u32 {
        let wal = std::fs::read(path.with_file_name(format!("{DB_FILE}-wal"))).unwrap_or_default();
        wal.get(12..16).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_writes_and_reads_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open_checkpointing(&path, 200, CHECKPOINT_EVERY).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        let (stop, reads) = reads_beside(&db);
        // About 14,000 pages: without the restart, the WAL ends up holding nearly all of them
        // (13,980 when the writer never managed it). With it, 3,100 pages at most in 8 runs on
        // an idle machine, and 6,300-8,200 in 2 of 10 debug runs with two busy loops on the 2
        // cores (the checkpointer then gets the CPU less often, and a restart can time out
        // waiting for reads): the bound sits between those and the 14,000.
        write_rows(&db, 0, 400).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reads.await.unwrap() > 0, "reads ran beside the writes");
        let pages = wal_file_pages(&path);
        assert!(pages < 10_000, "the WAL grew to {pages} pages: it was never started over (restart at 200)");
        let n = db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(n, 16_000, "every committed row is there");
    }

    /// The checkpointer learns the WAL's length after every commit, not only when it copies:
    /// with copies an hour apart (the first one comes with the first commit), writes that take
    /// the WAL past the threshold still start it over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_wal_starts_over_between_two_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open_checkpointing(&path, 200, Duration::from_secs(3600)).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        // About 1,400 pages.
        write_rows(&db, 0, 40).await;
        // The restart shows in the WAL's header at the first commit after it: commits go on
        // until then (the checkpointer may be slow to get a CPU), for at most 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut key = 1_000_000;
        while wal_restarts(&path) == 0 {
            assert!(Instant::now() < deadline, "the WAL ({} pages) never started over", wal_file_pages(&path));
            db.run(move |tx| tx.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [key]).map(|_| ())).await.unwrap();
            key += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(n, 1_600 + key - 1_000_000, "every committed row is there");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_elsewhere_holds_the_wal_but_not_the_writes_and_the_wal_starts_over_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open_checkpointing(&path, 200, CHECKPOINT_EVERY).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        // Another process's read transaction, open across 4,000 rows of writes: no checkpoint
        // may copy past its snapshot, so the WAL cannot start over while it lasts.
        let mut other = Connection::open(&path).unwrap();
        let read = other.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred).unwrap();
        let before: i64 = read.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        write_rows(&db, 0, 100).await;
        let held = wal_file_pages(&path);
        assert!(held > 1_500, "the WAL kept everything written during the read ({held} pages)");
        let still: i64 = read.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!((before, still), (0, 0), "the read kept its snapshot");
        let restarts = wal_restarts(&path);
        read.finish().unwrap();
        // Once it ends, the restarts resume: 16,000 more rows with reads running beside them
        // (about 14,000 pages, which the WAL would add to its file without the restarts) are
        // written over its start again and again.
        let (stop, reads) = reads_beside(&db);
        write_rows(&db, 100_000, 400).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reads.await.unwrap() > 0, "reads ran beside the writes");
        let after = wal_file_pages(&path);
        assert!(wal_restarts(&path) > restarts, "the WAL did not start over after the read ended");
        // Without the restarts it grows by 11,700-18,600 pages here (15,000 on 2026-12-01);
        // with them by what the writer commits between two restarts: 200-7,900 pages seen on 2
        // slow cores with the other tests of this module running beside it.
        assert!(after < held + 11_000, "the WAL did not stay bounded after the read ended ({held} -> {after} pages)");
        let n = db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(n, 20_000, "every write committed, during the read and after it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_job_undoes_only_its_own_writes_in_a_shared_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let calls: Vec<_> = (0..200i64)
            .map(|k| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.run_or_rollback(move |tx| {
                        tx.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                        Ok(if k % 2 == 0 { Ok(()) } else { Err("odd") })
                    })
                    .await
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap().ok();
        }
        let (count, odd) = db
            .read(|tx| {
                tx.query_row("SELECT COUNT(*), COALESCE(SUM(k % 2), 0) FROM t", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
            })
            .await
            .unwrap();
        assert_eq!((count, odd), (100, 0), "every even row kept, every odd one rolled back");
    }

    /// A test job: writes, then keeps them (`Ok`) or not (`Err`).
    type TestJob<T> = Box<dyn FnMut(&Transaction<'_>) -> rusqlite::Result<Result<T, &'static str>> + Send>;

    /// Queues `jobs` behind a job that holds the writer until they are all queued, so that
    /// they form one group; answers what each job's call returned.
    async fn one_group<T: Send + 'static>(
        db: &Db,
        jobs: Vec<TestJob<T>>,
    ) -> Vec<Result<Result<T, &'static str>, DbError>> {
        let (release, held) = mpsc::channel::<()>();
        let holder = {
            let db = db.clone();
            tokio::spawn(async move {
                db.run(move |_| {
                    let _ = held.recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
            })
        };
        // Give the holder time to take the writer, then queue the jobs in order: a call sends
        // its job when first polled.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut calls: Vec<_> = jobs.into_iter().map(|f| Box::pin(db.run_or_rollback(f))).collect();
        for call in &mut calls {
            assert!(futures_util::poll!(call.as_mut()).is_pending(), "answered before the writer was free");
        }
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_with_a_failing_job_runs_again_with_a_savepoint_per_job_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let runs: Arc<[std::sync::atomic::AtomicUsize; 3]> = Arc::default();
        let job = |k: i64, keep: bool| {
            let runs = runs.clone();
            Box::new(move |tx: &Transaction<'_>| {
                runs[(k - 1) as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // What the earlier jobs of the group wrote is there; the failed job's never is.
                let seen: i64 = tx.query_row("SELECT COUNT(*) FROM t WHERE k = 2", [], |r| r.get(0))?;
                assert_eq!(seen, 0, "job {k} saw the failed job's row");
                tx.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                Ok(if keep { Ok(k) } else { Err("refused") })
            }) as TestJob<i64>
        };
        let answers = one_group(&db, vec![job(1, true), job(2, false), job(3, true)]).await;
        assert!(matches!(answers[0], Ok(Ok(1))), "{:?}", answers[0]);
        assert!(matches!(answers[1], Ok(Err("refused"))), "{:?}", answers[1]);
        assert!(matches!(answers[2], Ok(Ok(3))), "{:?}", answers[2]);
        let rows: Vec<i64> = db
            .read(|tx| tx.prepare("SELECT k FROM t ORDER BY k")?.query_map([], |r| r.get(0))?.collect())
            .await
            .unwrap();
        assert_eq!(rows, [1, 3], "the failed job's write is undone, the others' kept");
        let runs: Vec<usize> = runs.iter().map(|r| r.load(std::sync::atomic::Ordering::SeqCst)).collect();
        // First without savepoints (job 1, then job 2 fails and stops the run), then each
        // job in its own savepoint.
        assert_eq!(runs, [2, 2, 1], "runs of each job");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_sqlite_error_in_a_group_fails_only_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let insert = |sql: &'static str, k: i64| {
            Box::new(move |tx: &Transaction<'_>| {
                tx.execute("INSERT INTO t (k) VALUES (?1)", [k * 10])?;
                tx.execute(sql, [k]).map(Ok)
            }) as TestJob<usize>
        };
        let ok = "INSERT INTO t (k) VALUES (?1)";
        let answers =
            one_group(&db, vec![insert(ok, 1), insert("INSERT INTO nowhere (k) VALUES (?1)", 2), insert(ok, 3)]).await;
        assert!(matches!(answers[0], Ok(Ok(1))), "{:?}", answers[0]);
        assert!(matches!(answers[1], Err(DbError::Sqlite(_))), "{:?}", answers[1]);
        assert!(matches!(answers[2], Ok(Ok(1))), "{:?}", answers[2]);
        let rows: Vec<i64> = db
            .read(|tx| tx.prepare("SELECT k FROM t ORDER BY k")?.query_map([], |r| r.get(0))?.collect())
            .await
            .unwrap();
        assert_eq!(rows, [1, 3, 10, 30], "the failing job's first write (20) is undone with it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_whose_jobs_all_succeed_runs_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs = (1..=5i64)
            .map(|k| {
                let runs = runs.clone();
                Box::new(move |tx: &Transaction<'_>| {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tx.execute("INSERT INTO t (k) VALUES (?1)", [k]).map(Ok)
                })
                    as Box<dyn FnMut(&Transaction<'_>) -> rusqlite::Result<Result<usize, &'static str>> + Send>
            })
            .collect();
        let answers = one_group(&db, jobs).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(Ok(1)))), "{answers:?}");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 5);
        let n = db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(n, 5);
    }

    #[tokio::test]
    async fn a_failing_statement_fails_its_own_job_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let good = db.run(|tx| tx.execute("INSERT INTO t (k) VALUES (1)", []));
        let bad = db.run(|tx| tx.execute("INSERT INTO nowhere (k) VALUES (1)", []));
        let (good, bad) = tokio::join!(good, bad);
        assert_eq!(good.unwrap(), 1);
        assert!(matches!(bad, Err(DbError::Sqlite(_))), "{bad:?}");
        let n = db.read(|tx| tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let bad = db.run(|tx| -> rusqlite::Result<usize> {
            tx.execute("INSERT INTO t (k) VALUES (1)", [])?;
            panic!("a bug in a job")
        });
        assert!(matches!(bad.await, Err(DbError::Worker(_))));
        db.run(|tx| tx.execute("INSERT INTO t (k) VALUES (2)", [])).await.unwrap();
        let rows: Vec<i64> =
            db.read(|tx| tx.prepare("SELECT k FROM t")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
        assert_eq!(rows, vec![2], "the panicking job's write was rolled back");
    }

    #[tokio::test]
    async fn a_locked_file_refuses_a_job_with_a_deadline_and_runs_it_when_free() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path()).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap();
        let other = Connection::open(db.path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let late = with_deadline(Duration::from_millis(150), db.run(|tx| tx.execute("INSERT INTO t VALUES (1)", [])));
        assert!(matches!(late.await, Err(DbError::Deadline { .. })));
        other.execute_batch("ROLLBACK").unwrap();
        db.run(|tx| tx.execute("INSERT INTO t VALUES (2)", [])).await.unwrap();
        let rows: Vec<i64> =
            db.read(|tx| tx.prepare("SELECT k FROM t")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
        assert_eq!(rows, vec![2], "the refused write never ran");
    }
}
