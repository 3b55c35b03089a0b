//! One write per commit to the WAL: a thin VFS over SQLite's default one.
//!
//! SQLite appends every page a commit changed to the WAL with two `pwrite`s (a 24-byte frame
//! header, then the page). In a storm a commit of a dozen alerts is some sixty pages, so about
//! 120 system calls before its fsync: a third of the writer thread's time. This VFS keeps a WAL
//! file's consecutive writes in memory and hands them on as one write as soon as SQLite does
//! anything else with that file: syncs it (every commit does), reads it, asks its size,
//! truncates it, closes it, or writes elsewhere in it. Every other file (the database, its
//! shared memory) passes straight through; a database file's writes are also reported to
//! [`write_back`], which paces the checkpointer's, and a database file is read without the
//! kernel's read-ahead ([`read_ahead`]).
//!
//! Why it is safe: with `synchronous = FULL` (every Klaxon connection sets it before writing)
//! SQLite syncs the WAL before it publishes a commit's frames to readers (the WAL index), and
//! the sync writes out what was gathered first. So no reader can look for a frame that is still
//! in memory, and a commit is durable when it was before. A write that fails when it is handed
//! on fails the call that handed it on (the commit's sync), so the commit fails and is rolled
//! back, as if the write itself had failed. A process that dies loses what was gathered and not
//! synced: an uncommitted transaction, which SQLite ignores anyway.
//!
//! The same VFS skips the checkpointer's syncs of the WAL, which have nothing to write (see
//! [`commits_sync_the_wal`]).

use super::{read_ahead, write_back};
use rusqlite::ffi;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The VFS every Klaxon connection opens its database with.
pub(super) const NAME: &CStr = c"klaxon-wal-writes";

/// More gathered than this (a big transaction spilling pages before its commit) is handed on
/// at once.
const MOST_GATHERED: usize = 1 << 20;
/// The most one write hands to the default VFS: SQLite's unix VFS writes at most 128 KiB - 1
/// per call (it masks the length to 17 bits), and answers SQLITE_FULL for what it left.
const MOST_PER_WRITE: usize = 64 << 10;

/// An open file as SQLite sees it: our methods first, then the default VFS's own file, which
/// lives in the same allocation right after this struct (SQLite allocates `szOsFile` bytes).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// WAL files only: what was written and not yet handed on.
    gathered: Option<Box<Gathered>>,
    /// A main database file: its writes are reported to [`write_back`].
    database: bool,
}

struct Gathered {
    /// Where `bytes` go in the file.
    offset: i64,
    bytes: Vec<u8>,
}

/// Where the default VFS's file starts inside ours (a multiple of its alignment, 8).
const REAL_AT: usize = std::mem::size_of::<File>().next_multiple_of(8);

thread_local! {
    /// Set on the checkpointer's thread (see [`commits_sync_the_wal`]).
    static COMMITS_SYNC_THE_WAL: Cell<bool> = const { Cell::new(false) };
}

/// Until the guard is dropped, this thread's syncs of a WAL file are skipped: for the
/// checkpointer, whose syncs of the WAL find nothing to write.
///
/// Before it copies frames into the database file, a checkpoint syncs the WAL, so that no page
/// reaches the database file before the frame it came from is on disk. But a checkpoint copies
/// only committed frames, and every Klaxon connection commits with `synchronous = FULL`: SQLite
/// syncs the WAL at each commit before it publishes the commit's frames to other connections.
/// So those frames are on disk before any checkpoint can see them, and its own sync of the WAL
/// has nothing left to write; yet on a virtual disk every sync flushes the whole write cache,
/// and the writer's commits wait behind it. In a storm the checkpointer made about 100 such
/// syncs in 10 s. Without them: in 10 s runs 11 of 14 pairs faster (median +18 %), in 20 s runs
/// no clear difference (six pairs, -13 % to +7 %); `lib/benches/load/README.md`. The database
/// file's syncs (a checkpoint that copied everything, the restarts) are kept: they are what
/// lets the WAL start over.
///
/// This holds for writes made by Klaxon. Another program writing to Klaxon's database with
/// `synchronous` below FULL (SQLite's default is FULL) could have its frames copied before they
/// are on disk; the README says to leave the database to Klaxon.
pub(super) fn commits_sync_the_wal() -> CommitsSyncTheWal {
    COMMITS_SYNC_THE_WAL.set(true);
    CommitsSyncTheWal(std::marker::PhantomData)
}

/// See [`commits_sync_the_wal`]; not `Send`, so it ends on the thread that made it.
pub(super) struct CommitsSyncTheWal(std::marker::PhantomData<*const ()>);

impl Drop for CommitsSyncTheWal {
    fn drop(&mut self) {
        COMMITS_SYNC_THE_WAL.set(false);
    }
}

/// Registers the VFS (once per process). Connections ask for it by [`NAME`].
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns its default VFS, which
            // lives for the whole process; the copy registered here is leaked, so it does too.
            unsafe {
                let root = ffi::sqlite3_vfs_find(std::ptr::null());
                if root.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let size = usize::try_from((*root).szOsFile).ok().and_then(|n| c_int::try_from(REAL_AT + n).ok());
                let Some(size) = size else { return Err("SQLite's default VFS reports a bad file size".into()) };
                let mut vfs: ffi::sqlite3_vfs = *root;
                vfs.szOsFile = size;
                vfs.pNext = std::ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.pAppData = root.cast();
                // The default VFS's other methods never look at the VFS they are given (SQLite's
                // unix VFS names the argument `NotUsed`); these two do, so they get their own.
                vfs.xOpen = Some(open);
                vfs.xFullPathname = Some(full_pathname);
                match ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("cannot register Klaxon's SQLite VFS (SQLite error {rc})")),
                }
            }
        })
        .clone()
}

/// The default VFS this one wraps.
///
/// # Safety
/// `vfs` must be the VFS registered by [`register`].
unsafe fn root(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    unsafe { (*vfs).pAppData.cast() }
}

unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    unsafe {
        let root = root(vfs);
        match (*root).xFullPathname {
            Some(f) => f(root, name, n, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us `szOsFile` bytes at `file`: room for a `File` and, at `REAL_AT`,
    // the default VFS's file.
    unsafe {
        let root = root(vfs);
        let ours = file.cast::<File>();
        let real = file.cast::<u8>().add(REAL_AT).cast::<ffi::sqlite3_file>();
        std::ptr::addr_of_mut!((*ours).base).write(ffi::sqlite3_file { pMethods: std::ptr::null() });
        std::ptr::addr_of_mut!((*ours).real).write(real);
        std::ptr::addr_of_mut!((*ours).gathered).write(None);
        std::ptr::addr_of_mut!((*ours).database).write(flags & ffi::SQLITE_OPEN_MAIN_DB != 0);
        (*real).pMethods = std::ptr::null();
        let Some(open_real) = (*root).xOpen else { return ffi::SQLITE_CANTOPEN };
        let rc = open_real(root, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes a file whose open failed only if its methods are set; ours are not,
            // so close the default VFS's file here if it was left half open.
            if let Some(close_real) = methods(real).and_then(|m| m.xClose) {
                close_real(real);
            }
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0
            && let read_ahead::Advice::NotGiven(why) = read_ahead::advise_random(root, real, name)
        {
            tracing::debug!(reason = why, "the database file is read with the kernel's read-ahead");
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            (*ours).gathered = Some(Box::new(Gathered { offset: 0, bytes: Vec::new() }));
        }
        (*ours).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The default VFS's methods for its file, if it has any.
///
/// # Safety
/// `real` must point to an sqlite3_file that its VFS opened (or tried to).
unsafe fn methods<'a>(real: *mut ffi::sqlite3_file) -> Option<&'a ffi::sqlite3_io_methods> {
    unsafe { (*real).pMethods.as_ref() }
}

/// Our part of `file`, and the default VFS's file with its methods.
///
/// # Safety
/// `file` must be a file [`open`] opened successfully and not yet closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (&'a mut File, *mut ffi::sqlite3_file, &'a ffi::sqlite3_io_methods) {
    unsafe {
        let ours = &mut *file.cast::<File>();
        let real = ours.real;
        // `open` set our methods only after the default VFS set its own.
        let m = &*(*real).pMethods;
        (ours, real, m)
    }
}

/// Writes out what was gathered, in one write.
///
/// # Safety
/// As [`parts`].
unsafe fn hand_on(ours: &mut File, real: *mut ffi::sqlite3_file, m: &ffi::sqlite3_io_methods) -> c_int {
    let Some(g) = ours.gathered.as_mut().filter(|g| !g.bytes.is_empty()) else { return ffi::SQLITE_OK };
    #[cfg(test)]
    tests::HANDED_ON.with(|n| n.set(n.get() + 1));
    #[cfg(test)]
    if tests::FAIL_HAND_ON.with(|f| f.replace(false)) {
        g.bytes.clear();
        return ffi::SQLITE_IOERR_WRITE;
    }
    let Some(w) = m.xWrite else { return ffi::SQLITE_IOERR_WRITE };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = g.offset;
    for piece in g.bytes.chunks(MOST_PER_WRITE) {
        // SAFETY: the default VFS's own write on its own file, with our buffer (a piece is at
        // most MOST_PER_WRITE bytes, so its length fits).
        rc = unsafe { w(real, piece.as_ptr().cast(), piece.len() as c_int, offset) };
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += piece.len() as i64;
    }
    // Written or failed, it is not written again: a failure fails the commit it belongs to.
    g.bytes.clear();
    rc
}

/// Hands on what was gathered, then runs `then` on the default VFS's file.
///
/// # Safety
/// As [`parts`].
unsafe fn after_hand_on(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    unsafe {
        let (ours, real, m) = parts(file);
        match hand_on(ours, real, m) {
            ffi::SQLITE_OK => then(real, m),
            rc => rc,
        }
    }
}

/// Runs `then` on the default VFS's file.
///
/// # Safety
/// As [`parts`].
unsafe fn through<T>(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> T,
) -> T {
    unsafe {
        let (_, real, m) = parts(file);
        then(real, m)
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amt: c_int, offset: i64) -> c_int {
    unsafe {
        let (ours, real, m) = parts(file);
        let follows = match ours.gathered.as_ref() {
            None => {
                let rc = match m.xWrite {
                    Some(w) => w(real, buf, amt, offset),
                    None => ffi::SQLITE_IOERR_WRITE,
                };
                if rc == ffi::SQLITE_OK && ours.database {
                    write_back::wrote(offset, i64::from(amt));
                }
                return rc;
            }
            Some(g) => g.bytes.is_empty() || g.offset.checked_add(g.bytes.len() as i64) == Some(offset),
        };
        if !follows {
            let rc = hand_on(ours, real, m);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let (Some(g), Ok(len)) = (ours.gathered.as_mut(), usize::try_from(amt)) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        if g.bytes.is_empty() {
            g.offset = offset;
        }
        // SAFETY: SQLite passes `amt` readable bytes at `buf`.
        g.bytes.extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
        #[cfg(test)]
        tests::GATHERED.with(|n| n.set(n.get() + 1));
        if g.bytes.len() >= MOST_GATHERED { hand_on(ours, real, m) } else { ffi::SQLITE_OK }
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (ours, real, m) = parts(file);
        let handed = hand_on(ours, real, m);
        let closed = m.xClose.map_or(ffi::SQLITE_OK, |c| c(real));
        ours.gathered = None;
        if handed != ffi::SQLITE_OK { handed } else { closed }
    }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amt: c_int, offset: i64) -> c_int {
    unsafe { after_hand_on(file, |real, m| m.xRead.map_or(ffi::SQLITE_IOERR_READ, |f| f(real, buf, amt, offset))) }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe { after_hand_on(file, |real, m| m.xTruncate.map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| f(real, size))) }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe {
        let wal = parts(file).0.gathered.is_some();
        if wal && COMMITS_SYNC_THE_WAL.get() {
            return after_hand_on(file, |_, _| ffi::SQLITE_OK);
        }
        #[cfg(test)]
        if wal {
            tests::WAL_SYNCS.with(|n| n.set(n.get() + 1));
        }
        after_hand_on(file, |real, m| m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |f| f(real, flags)))
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe { after_hand_on(file, |real, m| m.xFileSize.map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(real, size))) }
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    unsafe { after_hand_on(file, |real, m| m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |f| f(real, op, arg))) }
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amt: c_int, out: *mut *mut c_void) -> c_int {
    unsafe {
        after_hand_on(file, |real, m| match m.xFetch.filter(|_| m.iVersion >= 3) {
            Some(f) => f(real, offset, amt, out),
            None => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        })
    }
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    unsafe {
        through(file, |real, m| match m.xUnfetch.filter(|_| m.iVersion >= 3) {
            Some(f) => f(real, offset, page),
            None => ffi::SQLITE_OK,
        })
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { through(file, |real, m| m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |f| f(real, level))) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { through(file, |real, m| m.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |f| f(real, level))) }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        through(file, |real, m| m.xCheckReservedLock.map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |f| f(real, out)))
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe { through(file, |real, m| m.xSectorSize.map_or(4096, |f| f(real))) }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe { through(file, |real, m| m.xDeviceCharacteristics.map_or(0, |f| f(real))) }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        through(file, |real, m| {
            m.xShmMap
                .filter(|_| m.iVersion >= 2)
                .map_or(ffi::SQLITE_IOERR_SHMMAP, |f| f(real, region, size, extend, out))
        })
    }
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    unsafe {
        through(file, |real, m| {
            m.xShmLock.filter(|_| m.iVersion >= 2).map_or(ffi::SQLITE_IOERR_SHMLOCK, |f| f(real, offset, n, flags))
        })
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    unsafe {
        through(file, |real, m| {
            if let Some(f) = m.xShmBarrier.filter(|_| m.iVersion >= 2) {
                f(real)
            }
        })
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        through(file, |real, m| m.xShmUnmap.filter(|_| m.iVersion >= 2).map_or(ffi::SQLITE_OK, |f| f(real, delete)))
    }
}

/// Makes the next WAL write on this thread fail (for tests of a commit that fails: run it in a
/// writer job, and that job's group does not commit).
#[cfg(test)]
pub(crate) fn fail_next_wal_write() {
    tests::FAIL_HAND_ON.with(|f| f.set(true));
}

#[cfg(test)]
mod tests {
    use super::super::open_connection;
    use rusqlite::{Connection, params};
    use std::cell::Cell;

    thread_local! {
        /// WAL writes SQLite asked for on this thread, and writes made of them.
        pub(super) static GATHERED: Cell<u64> = const { Cell::new(0) };
        pub(super) static HANDED_ON: Cell<u64> = const { Cell::new(0) };
        /// Syncs of a WAL file handed to SQLite's own VFS on this thread.
        pub(super) static WAL_SYNCS: Cell<u64> = const { Cell::new(0) };
        /// Makes the next hand-on on this thread fail, as a full disk would.
        pub(super) static FAIL_HAND_ON: Cell<bool> = const { Cell::new(false) };
    }

    /// A Klaxon connection (this VFS) on a new file, with a table; and the counters reset.
    fn klaxon_connection(dir: &tempfile::TempDir) -> Connection {
        let conn = open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
        GATHERED.with(|n| n.set(0));
        HANDED_ON.with(|n| n.set(0));
        conn
    }

    /// Inserts `rows` rows from `from`, with values big enough to fill many pages, in one
    /// transaction.
    fn insert(conn: &mut Connection, from: i64, rows: i64) -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        for k in from..from + rows {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, "x".repeat(500)])?;
        }
        tx.commit()
    }

    /// What a plain connection (SQLite's own VFS) sees in the file: rows, and its integrity.
    fn seen_elsewhere(dir: &tempfile::TempDir) -> (i64, String) {
        let plain = Connection::open(dir.path().join("t.db")).unwrap();
        let rows = plain.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        let integrity = plain.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        (rows, integrity)
    }

    #[test]
    fn a_commit_writes_its_wal_frames_in_a_few_writes_and_every_reader_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = klaxon_connection(&dir);
        insert(&mut conn, 0, 200).unwrap();
        let (asked, made) = (GATHERED.with(Cell::get), HANDED_ON.with(Cell::get));
        // 200 rows of 500 bytes are some 60 pages of 2 KiB: two writes per page asked for.
        assert!(asked >= 100, "SQLite asked for {asked} WAL writes");
        assert!(made <= 3, "{asked} WAL writes were made as {made}");
        assert_eq!(seen_elsewhere(&dir), (200, "ok".to_string()));
        insert(&mut conn, 200, 1).unwrap();
        assert_eq!(seen_elsewhere(&dir).0, 201, "a small commit is seen at once too");
    }

    #[test]
    fn a_failed_write_fails_its_commit_and_the_next_commit_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = klaxon_connection(&dir);
        insert(&mut conn, 0, 10).unwrap();
        FAIL_HAND_ON.with(|f| f.set(true));
        let failed = insert(&mut conn, 10, 50);
        assert!(failed.is_err(), "the commit whose WAL write failed must fail: {failed:?}");
        assert_eq!(seen_elsewhere(&dir), (10, "ok".to_string()), "nothing of the failed commit is seen");
        insert(&mut conn, 10, 50).unwrap();
        assert_eq!(seen_elsewhere(&dir), (60, "ok".to_string()));
        drop(conn);
        // Reopened (the WAL replayed from the file alone): the same.
        let conn = open_connection(&dir.path().join("t.db")).unwrap();
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 60);
    }

    /// A checkpoint on a thread that said the commits sync the WAL (the checkpointer's) does not
    /// sync the WAL again; one elsewhere does. Either way everything committed is in the file.
    #[test]
    fn a_checkpoint_skips_its_wal_sync_only_where_the_commits_sync_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = klaxon_connection(&dir);
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
        let path = dir.path().join("t.db");
        // Answers the WAL syncs a checkpoint made, and whether it copied every frame.
        let checkpoint_on_a_thread = |commits_sync_the_wal: bool| {
            let path = path.clone();
            std::thread::spawn(move || {
                let _guard = commits_sync_the_wal.then(super::commits_sync_the_wal);
                let checkpointer = open_connection(&path).unwrap();
                let before = WAL_SYNCS.with(Cell::get);
                let (wal, copied): (i64, i64) = checkpointer
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
                    .unwrap();
                (WAL_SYNCS.with(Cell::get) - before, wal > 0 && copied == wal)
            })
            .join()
            .unwrap()
        };
        insert(&mut conn, 0, 200).unwrap();
        assert!(WAL_SYNCS.with(Cell::get) >= 1, "the commit did not sync the WAL");
        assert_eq!(
            checkpoint_on_a_thread(false),
            (1, true),
            "a checkpoint elsewhere syncs the WAL once and copies all"
        );
        insert(&mut conn, 200, 200).unwrap();
        assert_eq!(checkpoint_on_a_thread(true), (0, true), "the checkpointer's checkpoint synced the WAL");
        drop(conn);
        assert_eq!(seen_elsewhere(&dir), (400, "ok".to_string()));
    }

    #[test]
    fn a_transaction_bigger_than_what_is_gathered_at_once_commits_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = klaxon_connection(&dir);
        // About 5 MB: handed on in pieces while it is written (and SQLite spills pages before
        // the commit), then once more at the commit.
        insert(&mut conn, 0, 10_000).unwrap();
        assert!(HANDED_ON.with(Cell::get) >= 5);
        assert_eq!(seen_elsewhere(&dir), (10_000, "ok".to_string()));
    }
}
