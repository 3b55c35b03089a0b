//! The writer thread: every write call is a job sent to it; it runs the jobs waiting in one
//! transaction, commits once and then answers each caller (why: the module documentation, in `mod.rs`).

use super::tx_state::{self, States};
use super::{BACKGROUND_BUSY_TIMEOUT, DbError, is_busy};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long the writer waits for the file lock at a time before it looks at deadlines and new
/// jobs again.
const LOCK_SLICE: Duration = Duration::from_millis(50);
/// Most jobs in one transaction: bounds how long a group holds the others' answers.
pub(super) const MAX_GROUP: usize = 512;
/// WAL pages after which the writer checkpoints by itself: only a safety net, for when the
/// checkpointer cannot start the WAL over (a long read in another process holds it). The
/// writer used to do it at SQLite's default of 1,000 pages: in a storm that was 40 times a
/// second, each stalling every write behind its copy and two fsyncs, and cost about a fifth of
/// the new alerts a second (without any checkpoint: 9,300/s; with it: 7,000/s).
const WAL_AUTOCHECKPOINT: std::ffi::c_int = 64_000;
/// The writer's page cache, in KiB (SQLite's default is 2 MiB). Every page a commit touches and
/// does not find there is read from the file on the one serial path: with 2 MiB the writer read
/// 12,737 pages in 4 s of a storm on a fresh database (`perf trace`), with 32 MiB none. That
/// takes the page cache of [`super::page_cache`], which does not walk the whole cache at each commit:
/// with SQLite's own, 32 MiB cost the writer half again its CPU per alert.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// One job for the writer. A job may run more than once: the writer first runs a group's jobs
/// one after the other without savepoints, and only if one of them fails does it roll the whole
/// group back and run every job again, each in its own savepoint (see [`write_loop`]). So a
/// job's writes must depend only on what the transaction shows it, and its answer is sent only
/// once the group's fate is known.
pub(super) trait Work: Send {
    /// Runs the job's writes in `tx`; true when they are to be kept.
    fn run(&mut self, tx: &Transaction<'_>) -> bool;
    /// Answers the caller with what the last run did: `failed` is `None` when the group holding
    /// it committed, the reason when the whole group was rolled back.
    fn answer(self: Box<Self>, failed: Option<&str>);
    /// Answers the caller without running.
    fn refuse(self: Box<Self>, e: DbError);
}

/// A job of [`Db::run_or_rollback`](super::Db::run_or_rollback) (and, through it, `Db::run`) or `Db::setup`: the
/// caller's closure, what its last run gave, and where the answer goes.
pub(super) struct Call<T, E, F> {
    f: F,
    outcome: Option<rusqlite::Result<Result<T, E>>>,
    answer: Answer<T, E>,
}

/// Where a [`Call`]'s answer goes: an awaiting task, or a blocked thread (set-up).
pub(super) enum Answer<T, E> {
    Task(oneshot::Sender<Result<Result<T, E>, DbError>>),
    Thread(mpsc::Sender<Result<Result<T, E>, DbError>>),
}

impl<T, E, F> Call<T, E, F> {
    pub(super) fn new(f: F, answer: Answer<T, E>) -> Self {
        Call { f, outcome: None, answer }
    }
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

pub(super) struct Job {
    deadline: Option<std::time::Instant>,
    queued_at: std::time::Instant,
    work: Box<dyn Work>,
}

impl Job {
    /// `work`, to be refused without running once `deadline` has passed.
    pub(super) fn new(deadline: Option<std::time::Instant>, work: Box<dyn Work>) -> Job {
        Job { deadline, queued_at: std::time::Instant::now(), work }
    }
}

/// The writer thread: takes every waiting job, runs them in one transaction, commits, answers,
/// and tells the checkpointer (`committed`, and the WAL's length after the commit in
/// `wal_pages`). It ends when every [`Db`](super::Db) handle is gone.
///
/// A group runs optimistically first: its jobs one after the other, without savepoints. Nearly
/// always every job keeps its writes, and the group commits. When one does not (a condition
/// that failed, an SQLite error, a panic), the whole transaction is rolled back and the group
/// runs again carefully: each job in its own savepoint, so that a job that fails undoes only
/// its own writes. Savepoints cost the writer about a tenth of its work in a storm (statements
/// to open and release them, and a copy of every page a job changes that an earlier job in the
/// group had changed already), so they are paid only by the rare group that needs them.
pub(super) fn write_loop(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    committed: mpsc::SyncSender<()>,
    wal_pages: Arc<AtomicI64>,
    gate: Arc<std::sync::Mutex<()>>,
    states: Arc<std::sync::Mutex<States>>,
    path: PathBuf,
) {
    if let Err(e) = conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}")) {
        tracing::warn!(error = %e, "cannot size the writer's page cache; SQLite's default applies");
    }
    // After each commit: the WAL's length for the checkpointer, and the writer's own checkpoint
    // (this replaces SQLite's, which checkpoints at 1,000 pages). The hook must answer Ok: an
    // error would fail a commit that has happened.
    let hook = conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
        wal_pages.store(i64::from(pages), Ordering::Relaxed);
        if pages >= WAL_AUTOCHECKPOINT
            && let Err(e) = wal.checkpoint()
        {
            tracing::debug!(error = %e, "the writer's own checkpoint did not finish; the checkpointer goes on");
        }
        Ok(())
    }));
    if let Err(e) = hook {
        tracing::warn!(error = %e, "cannot watch the WAL's length; SQLite checkpoints every 1,000 pages instead");
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
        // The in-memory states that follow the transaction (`tx_state`) learn what other
        // connections committed before any job runs.
        let states = tx_state::Group::new(&states);
        if let Err(e) = states.begin(&tx) {
            states.end(false);
            drop(tx);
            drop(writing);
            for job in group.drain(..) {
                job.work.refuse(DbError::Commit(e.to_string()));
            }
            continue;
        }
        let failed = if careful {
            run_carefully(tx, &mut group, &states)
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
                states.end(false);
                drop(writing);
                careful = true;
                continue;
            }
            tx.commit().err().map(|e| e.to_string())
        };
        // A commit that failed was rolled back (rusqlite rolls back a transaction it could not
        // commit), and so is everything the jobs changed beside it.
        states.end(failed.is_none());
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
fn run_carefully(tx: Transaction<'_>, group: &mut Vec<Job>, states: &tx_state::Group) -> Option<String> {
    const HALFWAY: &str = "a write in its group failed halfway, so the group was rolled back";
    for (index, job) in group.iter_mut().enumerate() {
        let marks = states.marks();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_savepoint(&tx, job.work.as_mut())));
        let refused = match ran {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => {
                states.undo_to(&marks);
                continue;
            }
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

/// Runs `work` in a savepoint that is rolled back unless it keeps its writes; true if it kept
/// them. An error here is the savepoint's own: the transaction cannot go on.
fn in_savepoint(tx: &Transaction<'_>, work: &mut dyn Work) -> rusqlite::Result<bool> {
    savepoint(tx, "SAVEPOINT job")?;
    if work.run(tx) {
        savepoint(tx, "RELEASE job")?;
        Ok(true)
    } else {
        savepoint(tx, "ROLLBACK TO job")?;
        savepoint(tx, "RELEASE job")?;
        Ok(false)
    }
}

fn savepoint(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}
