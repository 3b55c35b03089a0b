//! The checkpointer starts the database file's write-back while it copies, two megabytes at a
//! time, instead of leaving it all to the next sync.
//!
//! Why: a checkpoint copies pages from the WAL into the database file; the kernel keeps them in
//! memory until a sync (SQLite syncs the database file whenever a checkpoint has copied
//! everything, and the checkpointer when it starts the WAL over). That sync then sends
//! everything to the disk at once, and on a virtual disk with a write cache the writer's next
//! WAL sync waits behind it: traced at 8 senders, 143 of the writer's 149 syncs that took over
//! 5 ms ran beside a sync of the checkpointer's, and those were what set the 99th percentile of
//! an alert's answer (a sync is a flush of the disk's write cache, and the writer's flush waited
//! for the checkpointer's data). Started as the pages are copied, the write-back reaches the
//! disk in small pieces and the syncs find little left to send (figures in
//! `lib/benches/load/README.md`).
//!
//! How: the checkpointer thread hands its descriptor of the database file over
//! ([`on_this_thread`]); on that thread, the VFS in `wal_writes` reports every write to a
//! database file ([`wrote`]: in WAL mode only checkpoints write there), and once
//! [`START_EVERY`] bytes were written the kernel is asked to start writing that range back
//! (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which starts the I/O and returns). That
//! makes nothing durable and changes nothing that SQLite relies on: its own syncs still decide
//! when a page is on disk. So a request that fails changes nothing either: it is noted and the
//! sync does the work. Linux only; elsewhere the kernel is never asked.

use std::cell::RefCell;
use std::fs::File;

/// How many bytes written to the database file start their write-back. Smaller starts cost
/// throughput: the checkpointer makes more system calls, and more of the writer's syncs find
/// some of the checkpointer's data to wait for (alternating runs at 64 senders: every 32 KiB
/// took 7 % fewer new alerts per second, every 512 KiB 2-5 %, every 2 MiB about 3 %, within
/// the noise of the pairs). At 2 MiB the 99th percentile at 8 senders was 15-16 ms instead of
/// 18-50.
const START_EVERY: u64 = 2 << 20;

/// The pacing of the current thread, if it asked for it.
struct Pacing {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fd: i32,
    /// The range written since the last start: `from..to` (empty when `written` is 0).
    from: i64,
    to: i64,
    written: u64,
}

thread_local! {
    static PACING: RefCell<Option<Pacing>> = const { RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Starts asked for on this thread, and how many the kernel refused.
    static STARTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Paces this thread's writes to `database` until the guard is dropped.
pub(super) fn on_this_thread(database: &File) -> Paced<'_> {
    #[cfg(unix)]
    let fd = std::os::fd::AsRawFd::as_raw_fd(database);
    #[cfg(not(unix))]
    let fd = -1;
    PACING.with(|p| *p.borrow_mut() = Some(Pacing { fd, from: 0, to: 0, written: 0 }));
    Paced { _database: database }
}

/// While it lives, the thread that made it paces its database writes (and the descriptor they
/// use stays open).
pub(super) struct Paced<'a> {
    _database: &'a File,
}

impl Drop for Paced<'_> {
    fn drop(&mut self) {
        PACING.with(|p| *p.borrow_mut() = None);
    }
}

/// `len` bytes were written at `offset` to a database file on this thread.
pub(super) fn wrote(offset: i64, len: i64) {
    PACING.with(|p| {
        let mut p = p.borrow_mut();
        let Some(p) = p.as_mut() else { return };
        if p.written == 0 {
            (p.from, p.to) = (offset, offset + len);
        } else {
            p.from = p.from.min(offset);
            p.to = p.to.max(offset + len);
        }
        p.written += len.max(0) as u64;
        if p.written >= START_EVERY {
            let refused = !start(p.fd, p.from, p.to - p.from);
            #[cfg(test)]
            STARTS.with(|s| {
                let (asked, failed) = s.get();
                s.set((asked + 1, failed + u64::from(refused)));
            });
            if refused {
                tracing::debug!("the kernel did not start the database file's write-back; the next sync writes it");
            }
            p.written = 0;
        }
    })
}

/// Asks the kernel to start writing back `len` bytes at `offset`; false if it refused.
#[cfg(target_os = "linux")]
fn start(fd: i32, offset: i64, len: i64) -> bool {
    // SAFETY: a plain system call on a descriptor the thread's `Paced` guard keeps open (or, in
    // tests, on one that is not open at all, which the kernel refuses); no memory is passed.
    unsafe { libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn start(_fd: i32, _offset: i64, _len: i64) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::super::open_connection;
    use super::*;
    use rusqlite::{Connection, params};

    /// Rows of 1 KB: about 10 MB in the WAL.
    const ROWS: i64 = 9000;

    /// A Klaxon connection on a new file whose WAL holds `rows` rows of 1 KB (not yet copied
    /// into the database file), and the counters reset.
    fn wal_with_rows(dir: &tempfile::TempDir, rows: i64) -> Connection {
        let mut conn = open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let tx = conn.transaction().unwrap();
        for k in 0..rows {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, format!("{k:01000}")]).unwrap();
        }
        tx.commit().unwrap();
        STARTS.with(|s| s.set((0, 0)));
        conn
    }

    fn checkpoint(conn: &Connection) -> (i64, i64) {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?))).unwrap()
    }

    fn rows_and_integrity(dir: &tempfile::TempDir) -> (i64, String) {
        let plain = Connection::open(dir.path().join("t.db")).unwrap();
        let rows = plain.query_row("SELECT COUNT(*) FROM t WHERE length(v) = 1000", [], |r| r.get(0)).unwrap();
        (rows, plain.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap())
    }

    #[test]
    fn a_checkpoint_on_a_pacing_thread_starts_the_write_back_every_two_megabytes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = wal_with_rows(&dir, ROWS);
        let database = File::open(dir.path().join("t.db")).unwrap();
        let paced = on_this_thread(&database);
        let (wal, copied) = checkpoint(&conn);
        drop(paced);
        assert_eq!(wal, copied, "the checkpoint copies everything");
        // About 10 MB copied: four or five starts of 2 MiB, every one accepted.
        let (asked, refused) = STARTS.with(std::cell::Cell::get);
        assert!((4..=6).contains(&asked), "{asked} write-back starts for {copied} pages");
        assert_eq!(refused, 0);
        assert_eq!(rows_and_integrity(&dir), (ROWS, "ok".to_string()));
    }

    #[test]
    fn other_threads_and_a_finished_guard_start_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conn = wal_with_rows(&dir, ROWS);
        let database = File::open(dir.path().join("t.db")).unwrap();
        drop(on_this_thread(&database));
        checkpoint(&conn);
        assert_eq!(STARTS.with(std::cell::Cell::get), (0, 0));
        assert_eq!(rows_and_integrity(&dir), (ROWS, "ok".to_string()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_start_the_kernel_refuses_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conn = wal_with_rows(&dir, ROWS);
        // A descriptor that is no file's: every start is refused.
        PACING.with(|p| *p.borrow_mut() = Some(Pacing { fd: -1, from: 0, to: 0, written: 0 }));
        let (wal, copied) = checkpoint(&conn);
        PACING.with(|p| *p.borrow_mut() = None);
        let (asked, refused) = STARTS.with(std::cell::Cell::get);
        assert!(asked >= 4 && refused == asked, "{refused} of {asked} starts refused");
        assert_eq!(wal, copied);
        drop(conn);
        assert_eq!(rows_and_integrity(&dir), (ROWS, "ok".to_string()));
    }
}
