//! The embedded database both SQLite adapters share: one file, one writer, many readers.
//!
//! **Group commit.** One thread owns the connection that writes. Every write call is a job sent
//! to it; it takes every job waiting (up to [`MAX_GROUP`]), runs them in one transaction,
//! commits once (one fsync for the whole group) and only then answers each caller. A job that
//! fails or rolls back undoes only its own writes: the group is then run again with a savepoint
//! per job ([`write_loop`]). So under load many requests share one commit, and an answer always
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
//! **The WAL.** A commit's pages go to the WAL file in one write ([`wal_writes`], a thin VFS
//! over SQLite's own), and a checkpointer thread copies them into the database file beside the
//! writer, starting their write-back as it goes ([`write_back`]), and starts the WAL over when
//! it is long ([`checkpoint_loop`]).
//!
//! **Deadlines.** A request that must answer in time (an intake, `/healthz`) runs inside
//! [`with_deadline`]. Every database call made under it waits for SQLite's file lock only until
//! the deadline, then fails with [`DbError::Deadline`] having done nothing: the writer checks a
//! job's deadline before running it, and a job it ran is answered only after its commit. So
//! when another process holds `klaxon.db` locked, callers get a quick 503 instead of queueing
//! behind each other for seconds, and a call that gave up can never commit later behind the
//! caller's back.

mod page_cache;
mod wal_writes;
mod write_back;

pub use page_cache::truncations as page_cache_truncations;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// How long a call without a deadline (the notifier's workers, the sweep) waits for SQLite's
/// file lock when another process holds it.
const BACKGROUND_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the writer waits for the file lock at a time before it looks at deadlines and new
/// jobs again.
const LOCK_SLICE: Duration = Duration::from_millis(50);
/// Most jobs in one transaction: bounds how long a group holds the others' answers.
const MAX_GROUP: usize = 512;
/// Page size of a new database file.
const PAGE_SIZE: u32 = 2048;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;
/// The background checkpointer's pause between checkpoints: a storm's commits are copied
/// together, not one by one.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);
/// WAL pages after which the checkpointer starts the WAL over (see [`checkpoint_loop`]): 16 MB.
const RESTART_AT: i64 = 8_000;
/// WAL pages after which the writer checkpoints by itself: only a safety net, for when the
/// checkpointer cannot start the WAL over (a long read in another process holds it). The
/// writer used to do it at SQLite's default of 1,000 pages: in a storm that was 40 times a
/// second, each stalling every write behind its copy and two fsyncs, and cost about a fifth of
/// the new alerts a second (without any checkpoint: 9,300/s; with it: 7,000/s).
const WAL_AUTOCHECKPOINT: u32 = 64_000;
/// WAL pages the checkpointer leaves for the writer to wait for, at most: it copies again (up
/// to [`MAX_PASSES`] times) while more are left.
const SMALL_REMAINDER: i64 = 200;
const MAX_PASSES: usize = 4;
/// Copy-and-sync rounds beside the writer before it waits for a checkpoint to finish.
const SYNC_ROUNDS: usize = 2;
/// How long, at most, the checkpointer waits for reads that started before it to finish, while
/// the writer waits for it, or for another connection's checkpoint.
const LOCK_WAIT: Duration = Duration::from_millis(5);
/// Reader connections kept open between reads.
const IDLE_READERS: usize = 8;
/// The writer's page cache, in KiB (SQLite's default is 2 MiB). Every page a commit touches and
/// does not find there is read from the file on the one serial path: with 2 MiB the writer read
/// 12,737 pages in 4 s of a storm on a fresh database (`perf trace`), with 32 MiB none. That
/// takes the page cache of [`page_cache`], which does not walk the whole cache at each commit:
/// with SQLite's own, 32 MiB cost the writer half again its CPU per alert.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

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

/// One job for the writer. A job may run more than once: the writer first runs a group's jobs
/// one after the other without savepoints, and only if one of them fails does it roll the whole
/// group back and run every job again, each in its own savepoint (see [`write_loop`]). So a
/// job's writes must depend only on what the transaction shows it, and its answer is sent only
/// once the group's fate is known.
trait Work: Send {
    /// Runs the job's writes in `tx`; true when they are to be kept.
    fn run(&mut self, tx: &Transaction<'_>) -> bool;
    /// Answers the caller with what the last run did: `failed` is `None` when the group holding
    /// it committed, the reason when the whole group was rolled back.
    fn answer(self: Box<Self>, failed: Option<&str>);
    /// Answers the caller without running.
    fn refuse(self: Box<Self>, e: DbError);
}

/// A job of [`Db::run_or_rollback`] (and, through it, [`Db::run`]) or [`Db::setup`]: the
/// caller's closure, what its last run gave, and where the answer goes.
struct Call<T, E, F> {
    f: F,
    outcome: Option<rusqlite::Result<Result<T, E>>>,
    answer: Answer<T, E>,
}

/// Where a [`Call`]'s answer goes: an awaiting task, or a blocked thread (set-up).
enum Answer<T, E> {
    Task(oneshot::Sender<Result<Result<T, E>, DbError>>),
    Thread(mpsc::Sender<Result<Result<T, E>, DbError>>),
}

impl<T, E> Answer<T, E> {
    fn send(self, answer: Result<Result<T, E>, DbError>) {
        // A caller that went away (a dropped request) needs no answer.
        match self {
            Answer::Task(tx) => _ = tx.send(answer),
            Answer::Thread(tx) => _ = tx.send(answer),
        }
    }
}

impl<T, E, F> Work for Call<T, E, F>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnMut(&Transaction<'_>) -> rusqlite::Result<Result<T, E>> + Send + 'static,
{
    fn run(&mut self, tx: &Transaction<'_>) -> bool {
        let outcome = (self.f)(tx);
        let keep = matches!(outcome, Ok(Ok(_)));
        self.outcome = Some(outcome);
        keep
    }

    fn answer(self: Box<Self>, failed: Option<&str>) {
        let answer = match (self.outcome, failed) {
            (Some(Ok(Ok(_))), Some(e)) => Err(DbError::Commit(e.to_string())),
            (Some(outcome), _) => outcome.map_err(DbError::from),
            (None, _) => Err(DbError::Worker("the database writer dropped a job".into())),
        };
        self.answer.send(answer);
    }

    fn refuse(self: Box<Self>, e: DbError) {
        self.answer.send(Err(e));
    }
}

struct Job {
    deadline: Option<std::time::Instant>,
    queued_at: std::time::Instant,
    work: Box<dyn Work>,
}

#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<std::sync::Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// Woken whenever a committed write put a message into an embedded queue.
    queued: Arc<Notify>,
}

impl Db {
    /// Opens (creating if needed) `DATA_DIR/klaxon.db`.
    pub fn open_in(data_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| DbError::CreateDir { path: data_dir.to_path_buf(), source })?;
        Db::open(&data_dir.join(DB_FILE))
    }

    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_restarting_at(path, RESTART_AT)
    }

    /// [`Db::open`], with the checkpointer starting the WAL over at `restart_at` pages.
    fn open_restarting_at(path: &Path, restart_at: i64) -> Result<Db, DbError> {
        let conn = open_connection(path)?;
        let checkpoints = open_connection(path)?;
        let (writer, jobs) = mpsc::channel::<Job>();
        let (committed, commits) = mpsc::sync_channel::<()>(1);
        let gate = Arc::new(std::sync::Mutex::new(()));
        let thread_path = path.to_path_buf();
        let writer_gate = gate.clone();
        std::thread::Builder::new()
            .name("klaxon-db-writer".into())
            .spawn(move || write_loop(conn, jobs, committed, writer_gate, thread_path))
            .map_err(|e| DbError::Worker(format!("cannot start the database writer: {e}")))?;
        std::thread::Builder::new()
            .name("klaxon-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, commits, gate, restart_at))
            .map_err(|e| DbError::Worker(format!("cannot start the database checkpointer: {e}")))?;
        Ok(Db {
            writer,
            readers: Arc::new(std::sync::Mutex::new(Vec::new())),
            path: path.to_path_buf(),
            queued: Arc::new(Notify::new()),
        })
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
        let work = Box::new(Call { f, outcome: None, answer: Answer::Thread(done) });
        self.send(Job { deadline: None, queued_at: std::time::Instant::now(), work })?;
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
    /// (see [`Work`]); only the last run's writes are kept.
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
    /// than once (see [`Work`]); only the last run's writes are kept.
    pub async fn run_or_rollback<T, E, F>(&self, f: F) -> Result<Result<T, E>, DbError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnMut(&Transaction<'_>) -> rusqlite::Result<Result<T, E>> + Send + 'static,
    {
        let deadline = DEADLINE.try_with(|d| *d).ok().map(Instant::into_std);
        let (answer, answered) = oneshot::channel::<Result<Result<T, E>, DbError>>();
        let work = Box::new(Call { f, outcome: None, answer: Answer::Task(answer) });
        self.send(Job { deadline, queued_at: std::time::Instant::now(), work })?;
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

fn savepoint(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Copies committed pages from the WAL into the database file beside the writer, so that the
/// writer (the one thread every write waits for) never does it. It runs after commits, at most
/// every [`CHECKPOINT_EVERY`], and stops when the writer does. A checkpoint that finds a reader
/// or the writer in its way copies what it can and tries again after the next commit.
///
/// While writes never pause, these checkpoints cannot finish (each commit adds pages), and only
/// a finished checkpoint lets the WAL start over. So once the WAL holds `restart_at` pages the
/// checkpointer starts it over, holding the writer back briefly (see [`start_over`]). That
/// bounds the WAL at `restart_at` pages plus what the writer commits while the checkpointer
/// copies and syncs beside it: in a storm the WAL file stays at 21-23 MB with `restart_at`
/// 8,000 (16 MB).
fn checkpoint_loop(
    mut conn: Connection,
    commits: mpsc::Receiver<()>,
    gate: Arc<std::sync::Mutex<()>>,
    restart_at: i64,
) {
    if let Err(e) = conn.busy_handler(Some(wait_briefly)) {
        tracing::warn!(error = %e, "cannot set the checkpointer's busy handler; SQLite's default waits apply");
    }
    // For syncing the database file beside the writer (any descriptor of a file syncs it all),
    // and for starting the write-back of what the checkpoints copy (see `write_back`).
    let database = match conn.path().map(std::fs::File::open) {
        Some(Ok(file)) => Some(file),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot open the database file to sync it beside the writer; writes wait longer each time the WAL starts over");
            None
        }
        None => None,
    };
    let _paced = database.as_ref().map(write_back::on_this_thread);
    while commits.recv().is_ok() {
        match checkpoint(&conn, "PASSIVE") {
            Ok(pass) if pass.wal >= restart_at => start_over(&conn, database.as_ref(), &gate, restart_at),
            Ok(_) => {}
            Err(e) if is_busy(&e) => {}
            Err(e) => tracing::warn!(error = %e, "background checkpoint failed; retried after the next commit"),
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
    // The connection closes before `database`: closing any descriptor of a file drops every
    // POSIX lock the process holds on it, SQLite's own included (its VFS guards its own
    // descriptors against that, not ours), and parameters are dropped after local variables.
    drop(conn);
}

/// Starts the WAL over while the writer waits as briefly as possible.
///
/// Only a checkpoint that copies every page committed and then finds no read using the WAL
/// lets the WAL start over (SQLite's RESTART), so the writer must pause for it (the gate, which
/// the writer holds around each group's transaction). The checkpoint also syncs the database
/// file, and that sync is what took long: every page copied since the last sync is written back
/// then (SQLite syncs only when a checkpoint finishes), measured at 17-21 ms of every write
/// waiting, about six times a second in a storm. So the copying and syncing happen first beside
/// the writer, twice over (the second sync writes back only what the writer committed during
/// the first), and the writer waits only for the last few hundred pages (copied and written
/// back) and for reads that started before (at most [`LOCK_WAIT`]; a read takes microseconds).
/// Should the writer have taken the WAL past twice `restart_at` meanwhile, the rest of the
/// syncing happens at the gate, so the WAL stays bounded however fast the writes come.
/// A restart that reads kept from finishing (say another process's long read) is tried again
/// after the next commit.
fn start_over(conn: &Connection, database: Option<&std::fs::File>, gate: &std::sync::Mutex<()>, restart_at: i64) {
    for round in 0..=SYNC_ROUNDS {
        let wal = copy_until_small(conn);
        // The writer goes on committing while the checkpointer syncs: once that has taken the
        // WAL past twice the threshold, it waits now instead (the sync then happens at the gate).
        if round == SYNC_ROUNDS || wal >= 2 * restart_at {
            break;
        }
        if let Some(Err(e)) = database.map(std::fs::File::sync_data) {
            tracing::warn!(error = %e, "cannot sync the database file; the WAL is not started over now");
            return;
        }
    }
    let _writes_wait = gate.lock().unwrap_or_else(|p| p.into_inner());
    match checkpoint(conn, "RESTART") {
        Ok(last) if last.done => {}
        Ok(_) => tracing::debug!("reads kept the WAL from starting over; tried again after the next commit"),
        Err(e) => tracing::warn!(error = %e, "the WAL could not be started over; tried again after the next commit"),
    }
}

/// Copies (up to [`MAX_PASSES`] times) while more than [`SMALL_REMAINDER`] pages are left;
/// answers the pages in the WAL (as last seen; 0 if the first checkpoint failed).
fn copy_until_small(conn: &Connection) -> i64 {
    let mut wal = 0;
    for _ in 0..MAX_PASSES {
        match checkpoint(conn, "PASSIVE") {
            Ok(pass) if pass.wal - pass.copied > SMALL_REMAINDER => wal = pass.wal,
            Ok(pass) => return pass.wal,
            Err(_) => return wal,
        }
    }
    wal
}

/// What a checkpoint did: whether it finished (for RESTART: the WAL starts over), the pages
/// in the WAL, and how many of them are in the database file now.
struct Checkpointed {
    done: bool,
    wal: i64,
    copied: i64,
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpointed { done: r.get::<_, i64>(0)? == 0, wal: r.get(1)?, copied: r.get(2)? })
    })
}

/// The checkpointer's busy handler: waits for a lock in steps of 50 µs, up to [`LOCK_WAIT`]
/// (SQLite's own waits a whole millisecond first).
fn wait_briefly(attempt: i32) -> bool {
    const STEP: Duration = Duration::from_micros(50);
    if STEP * (attempt.max(0) as u32) >= LOCK_WAIT {
        return false;
    }
    std::thread::sleep(STEP);
    true
}

/// The writer thread: takes every waiting job, runs them in one transaction, commits, answers,
/// and tells the checkpointer (`committed`). It ends when every [`Db`] handle is gone.
///
/// A group runs optimistically first: its jobs one after the other, without savepoints. Nearly
/// always every job keeps its writes, and the group commits. When one does not (a condition
/// that failed, an SQLite error, a panic), the whole transaction is rolled back and the group
/// runs again carefully: each job in its own savepoint, so that a job that fails undoes only
/// its own writes. Savepoints cost the writer about a tenth of its work in a storm (statements
/// to open and release them, and a copy of every page a job changes that an earlier job in the
/// group had changed already), so they are paid only by the rare group that needs them.
fn write_loop(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    committed: mpsc::SyncSender<()>,
    gate: Arc<std::sync::Mutex<()>>,
    path: PathBuf,
) {
    if let Err(e) = conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}")) {
        tracing::warn!(error = %e, "cannot size the writer's page cache; SQLite's default applies");
    }
    if let Err(e) = conn.query_row(&format!("PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}"), [], |_| Ok(())) {
        tracing::warn!(error = %e, "cannot set the writer's checkpoint threshold; SQLite's default applies");
    }
    let mut group: Vec<Job> = Vec::new();
    // The group in hand failed its optimistic run: it runs again, a savepoint per job.
    let mut careful = false;
    loop {
        if group.is_empty() {
            careful = false;
            match jobs.recv() {
                Ok(job) => group.push(job),
                Err(_) => return,
            }
        }
        // A group run again takes no newcomers: they wait for the next group.
        while !careful && group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // Jobs whose caller's deadline has passed are answered without running.
        let now = std::time::Instant::now();
        let (late, waiting): (Vec<Job>, Vec<Job>) = group.drain(..).partition(|j| j.deadline.is_some_and(|d| d <= now));
        group = waiting;
        for job in late {
            job.work.refuse(DbError::Deadline { path: path.clone() });
        }
        if group.is_empty() {
            continue;
        }
        let soonest = group.iter().filter_map(|j| j.deadline).min();
        let slice = soonest.map_or(LOCK_SLICE, |d| d.saturating_duration_since(now).min(LOCK_SLICE));
        // Held until the group's commit: the checkpointer starts the WAL over only between groups.
        let writing = gate.lock().unwrap_or_else(|p| p.into_inner());
        let tx = match conn
            .busy_timeout(slice)
            .and_then(|()| conn.transaction_with_behavior(TransactionBehavior::Immediate))
        {
            Ok(tx) => tx,
            Err(e) if is_busy(&e) => {
                // Another process holds the lock: keep waiting, but give up on background jobs
                // that have waited their whole allowance.
                let now = std::time::Instant::now();
                let (stale, waiting): (Vec<Job>, Vec<Job>) = group
                    .drain(..)
                    .partition(|j| j.deadline.is_none() && now.duration_since(j.queued_at) >= BACKGROUND_BUSY_TIMEOUT);
                group = waiting;
                for job in stale {
                    job.work.refuse(DbError::Deadline { path: path.clone() });
                }
                continue;
            }
            Err(e) => {
                for job in group.drain(..) {
                    job.work.refuse(DbError::Commit(e.to_string()));
                }
                continue;
            }
        };
        let failed = if careful {
            run_carefully(tx, &mut group)
        } else {
            // A job that panics must not take the writer (and every later write) with it.
            let kept = group.iter_mut().all(|job| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.work.run(&tx))).unwrap_or(false)
            });
            if !kept {
                // Nothing of this run stays; the same group runs again, carefully.
                if let Err(e) = tx.rollback() {
                    tracing::warn!(error = %e, "rolling back a group to run it again failed; SQLite rolls it back when the next one begins");
                }
                drop(writing);
                careful = true;
                continue;
            }
            tx.commit().err().map(|e| e.to_string())
        };
        drop(writing);
        match &failed {
            Some(e) => {
                tracing::error!(error = %e, "a group of database writes was not committed; each caller was told to retry")
            }
            // Full means a checkpoint is already due: nothing to add.
            None => _ = committed.try_send(()),
        }
        for job in group.drain(..) {
            job.work.answer(failed.as_deref());
        }
    }
}

/// Runs each job of `group` in its own savepoint of `tx`, so that a job that fails undoes only
/// its own writes, and commits. Answers why the group was not committed, if it was not: then
/// the jobs it could not run were answered already and taken out of `group`.
fn run_carefully(tx: Transaction<'_>, group: &mut Vec<Job>) -> Option<String> {
    const HALFWAY: &str = "a write in its group failed halfway, so the group was rolled back";
    for (index, job) in group.iter_mut().enumerate() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_savepoint(&tx, job.work.as_mut())));
        let refused = match ran {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => DbError::Sqlite(e),
            Err(_) => DbError::Worker("a database job failed unexpectedly (a bug); nothing of it was written".into()),
        };
        // This job and every one after it are answered now; those before it hear that the group
        // failed.
        let mut unanswered = group.split_off(index).into_iter();
        if let Some(job) = unanswered.next() {
            job.work.refuse(refused);
        }
        for job in unanswered {
            job.work.refuse(DbError::Commit(HALFWAY.into()));
        }
        if let Err(e) = tx.rollback() {
            tracing::warn!(error = %e, "rolling back a group whose write failed halfway failed; SQLite rolls it back when the next one begins");
        }
        return Some(HALFWAY.to_string());
    }
    tx.commit().err().map(|e| e.to_string())
}

/// Runs `work` in a savepoint that is rolled back unless it keeps its writes. An error here is
/// the savepoint's own: the transaction cannot go on.
fn in_savepoint(tx: &Transaction<'_>, work: &mut dyn Work) -> rusqlite::Result<()> {
    savepoint(tx, "SAVEPOINT job")?;
    if work.run(tx) {
        savepoint(tx, "RELEASE job")
    } else {
        savepoint(tx, "ROLLBACK TO job")?;
        savepoint(tx, "RELEASE job")
    }
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
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).expect("a read transaction begins");
        let mut stmt = tx.prepare_cached(sql).expect("the statement compiles");
        stmt.query(params).expect("the statement runs").next().expect("a row is read");
    }
    conn.prepare_cached(sql).expect("the statement is cached").get_status(rusqlite::StatementStatus::RePrepare)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

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
        start_over(&checkpointer, Some(&cannot_sync), &gate, 10 * frames);
        assert!(gate.try_lock().is_ok(), "the writer is not held back after the failed sync");
        insert(300).unwrap();

        let file = std::fs::File::open(&path).unwrap();
        start_over(&checkpointer, Some(&file), &gate, 10 * frames);
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
        let db = Db::open_restarting_at(&path, 200).unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_elsewhere_holds_the_wal_but_not_the_writes_and_the_wal_starts_over_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open_restarting_at(&path, 200).unwrap();
        db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        // Another process's read transaction, open across 4,000 rows of writes: no checkpoint
        // may copy past its snapshot, so the WAL cannot start over while it lasts.
        let mut other = Connection::open(&path).unwrap();
        let read = other.transaction_with_behavior(TransactionBehavior::Deferred).unwrap();
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
