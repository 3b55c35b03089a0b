//! The checkpointer: a thread that copies committed pages from the WAL into the database file
//! beside the writer, and starts the WAL over when it is long.

use super::{is_busy, wal_writes, write_back};
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The checkpointer's pause between copies: a storm's commits are copied together, not one by
/// one. Each copy ends with the database file's pages written back (see [`write_back`]), and on
/// this VM's disk a commit's fsync waits for that write-back: copies every 200 ms instead of
/// every 20 ms gave a storm 5-12 % more new alerts a second (`lib/benches/load/README.md`).
/// The WAL's length is still looked at after every commit (see [`checkpoint_loop`]).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// The pause after a restart that reads kept from finishing, or a checkpoint that another one
/// kept from starting, before the next try.
const RETRY_RESTART: Duration = Duration::from_millis(20);
/// WAL pages after which the checkpointer starts the WAL over (see [`checkpoint_loop`]): 32 MB.
/// Each restart costs syncs that commits wait for: with copies every 200 ms, 16,000 pages
/// instead of 8,000 (20 restarts in 10 s of a storm instead of 35) gave 2-20 % more new alerts
/// a second (median 12 %, six pairs of runs); 32,000 gave no clear gain more and p99 spikes.
pub(super) const RESTART_AT: i64 = 16_000;
/// WAL pages the checkpointer leaves for the writer to wait for, at most: it copies again (up
/// to [`MAX_PASSES`] times) while more are left.
const SMALL_REMAINDER: i64 = 200;
const MAX_PASSES: usize = 4;
/// Copy-and-sync rounds beside the writer before it waits for a checkpoint to finish.
const SYNC_ROUNDS: usize = 2;
/// How long, at most, the checkpointer waits for reads that started before it to finish, while
/// the writer waits for it, or for another connection's checkpoint.
const LOCK_WAIT: Duration = Duration::from_millis(5);

/// Copies committed pages from the WAL into the database file beside the writer, so that the
/// writer (the one thread every write waits for) never does it. It copies at most `every`
/// ([`CHECKPOINT_EVERY`]) after commits, and stops when the writer does. A checkpoint that finds
/// a reader or the writer in its way copies what it can and tries again at the next.
///
/// While writes never pause, these checkpoints cannot finish (each commit adds pages), and only
/// a finished checkpoint lets the WAL start over. So once the WAL holds `restart_at` pages the
/// checkpointer starts it over, holding the writer back briefly (see [`start_over`]). It learns
/// the WAL's length after every commit (`wal_pages`, which the writer keeps), not only when it
/// copies: that bounds the WAL at `restart_at` pages plus what the writer commits while the
/// checkpointer copies and syncs beside it, whatever the pause between copies. In a storm the
/// WAL file stays at 37-39 MB with `restart_at` 16,000 (32 MB).
pub(super) fn checkpoint_loop(
    mut conn: Connection,
    commits: mpsc::Receiver<()>,
    wal_pages: Arc<AtomicI64>,
    gate: Arc<std::sync::Mutex<()>>,
    restart_at: i64,
    every: Duration,
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
    let _wal_synced = wal_writes::commits_sync_the_wal();
    // When the last copy began, and whether anything was committed since.
    let mut copied_at: Option<Instant> = None;
    let mut uncopied = false;
    loop {
        let next_copy = copied_at.map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed()));
        let woken = if uncopied { commits.recv_timeout(next_copy) } else { commits.recv().map_err(Into::into) };
        match woken {
            Ok(()) => uncopied = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Between copies only a long WAL calls for one now. `wal_pages` may still tell of the
        // WAL before a restart (a commit's wake-up left over): the copy below says how long it is.
        let due = copied_at.is_none_or(|at| at.elapsed() >= every);
        if !due && wal_pages.load(Ordering::Relaxed) < restart_at {
            continue;
        }
        copied_at = Some(Instant::now());
        uncopied = false;
        match checkpoint(&conn, "PASSIVE") {
            Ok(pass) if pass.wal >= restart_at => {
                if !start_over(&conn, database.as_ref(), &gate, &wal_pages, restart_at) {
                    std::thread::sleep(RETRY_RESTART);
                }
            }
            Ok(_) => {}
            // Another connection's checkpoint: no use trying again at every commit meanwhile.
            Err(e) if is_busy(&e) => std::thread::sleep(RETRY_RESTART),
            Err(e) => {
                tracing::warn!(error = %e, "background checkpoint failed; tried again at the next copy, after a commit")
            }
        }
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
/// after the next commit. Answers whether the WAL started over.
pub(super) fn start_over(
    conn: &Connection,
    database: Option<&std::fs::File>,
    gate: &std::sync::Mutex<()>,
    wal_pages: &AtomicI64,
    restart_at: i64,
) -> bool {
    for round in 0..=SYNC_ROUNDS {
        let wal = copy_until_small(conn);
        // The writer goes on committing while the checkpointer syncs: once that has taken the
        // WAL past twice the threshold, it waits now instead (the sync then happens at the gate).
        if round == SYNC_ROUNDS || wal >= 2 * restart_at {
            break;
        }
        if let Some(Err(e)) = database.map(std::fs::File::sync_data) {
            tracing::warn!(error = %e, "cannot sync the database file; the WAL is not started over now");
            return false;
        }
    }
    let _writes_wait = gate.lock().unwrap_or_else(|p| p.into_inner());
    match checkpoint(conn, "RESTART") {
        Ok(last) if last.done => {
            // The WAL is empty now, though SQLite resets its header (what a checkpoint answers)
            // only at the next commit: a wake-up left over from before must not restart it again.
            wal_pages.store(0, Ordering::Relaxed);
            true
        }
        Ok(_) => {
            tracing::debug!("reads kept the WAL from starting over; tried again after the next commit");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "the WAL could not be started over; tried again after the next commit");
            false
        }
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
pub(super) struct Checkpointed {
    pub(super) done: bool,
    pub(super) wal: i64,
    pub(super) copied: i64,
}

pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
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
