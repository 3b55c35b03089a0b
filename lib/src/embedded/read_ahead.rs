//! The database file is read without the kernel's read-ahead.
//!
//! Why: Klaxon reads its database a page at a time, at the places a B-tree lookup leads to.
//! Linux reads ahead of a read that missed its page cache whenever the pages just before it
//! are cached, taking it for a stream: up to `read_ahead_kb` at once (8 MB on the build
//! machine). A large database of which only some pages were dropped from the page cache (memory
//! pressure, or this VM's proactive reclaim of pages untouched for a minute, after a quiet
//! spell) is exactly that: its lookups read megabytes around the pages they need. Measured on a 776,000-alert database with about half its
//! pages dropped, a fresh `klaxon serve`, 20 s at 64 senders then 20 s at 8, three alternating
//! pairs: 6,427, 7,913 and 7,605 new alerts/s at 64 senders (p99 182, 31, 36 ms) and 5,068,
//! 5,855 and 6,004/s at 8 (p99 72, 8, 27 ms) with the advice below, against 5,714, 7,340 and
//! 6,536/s (p99 611, 141, 52 ms) and 4,506, 5,485 and 4,715/s (p99 303, 10, 28 ms) without;
//! the disk read 1.0-1.2 KB per new alert against 1.9-2.4 (`lib/benches/load/README.md`).
//! With every page dropped the kernel reads single pages anyway: no difference there. So every
//! Klaxon connection asks the kernel to treat its descriptor of the database file as read at
//! random (`posix_fadvise` with `POSIX_FADV_RANDOM`): each miss reads the pages asked for.
//!
//! How: SQLite keeps the descriptor inside its unix VFS's file (`struct unixFile` in sqlite3.c:
//! three pointers, then the descriptor, in the SQLite that rusqlite bundles here, 3.54; should
//! a later one move it, the check below finds another file or none, and nothing is advised). The VFS in `wal_writes`
//! hands each database file it opens to [`advise_random`], which reads the descriptor there only
//! if the file was opened by a unix VFS, and advises it only if it is the very file SQLite was
//! asked to open (same device and inode). Advice changes nothing SQLite relies on, only how
//! much the kernel reads; so a file it cannot be given to is read as before, and noted.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};

/// What became of the advice for one database file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Advice {
    /// The kernel reads this descriptor at random from now on.
    Given,
    /// Not given: the reason, for a debug line.
    NotGiven(&'static str),
}

/// The start of SQLite's `struct unixFile`, as far as the descriptor.
#[repr(C)]
struct UnixFileHead {
    methods: *const c_void,
    vfs: *const c_void,
    inode: *const c_void,
    fd: c_int,
}

/// Advises the kernel to read the database file `real` (just opened by `root`, the default VFS,
/// under the name `name`) without read-ahead.
///
/// # Safety
/// `root` must be the VFS that opened `real`, successfully, from `name` (a C string).
pub(super) unsafe fn advise_random(
    root: *const ffi::sqlite3_vfs,
    real: *const ffi::sqlite3_file,
    name: *const c_char,
) -> Advice {
    // SAFETY: `root` is a registered VFS, whose name is a C string; `real` holds at least
    // `szOsFile` bytes, and a unix VFS's file starts with `UnixFileHead`.
    unsafe {
        if name.is_null() {
            return Advice::NotGiven("the file has no name");
        }
        if (*root).zName.is_null() || !CStr::from_ptr((*root).zName).to_bytes().starts_with(b"unix") {
            return Advice::NotGiven("SQLite's default VFS is not its unix VFS");
        }
        if !usize::try_from((*root).szOsFile).is_ok_and(|n| n >= std::mem::size_of::<UnixFileHead>()) {
            return Advice::NotGiven("SQLite's unix VFS file is smaller than expected");
        }
        advise_descriptor((*real.cast::<UnixFileHead>()).fd, CStr::from_ptr(name))
    }
}

/// Advises `fd` if it is a descriptor of the file named `name`.
#[cfg(target_os = "linux")]
fn advise_descriptor(fd: c_int, name: &CStr) -> Advice {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let Ok(named) = std::fs::metadata(path) else { return Advice::NotGiven("the file's name does not stat") };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the space given, and only reads the descriptor number
    // (a closed or foreign number is refused or describes another file, checked below).
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Advice::NotGiven("the descriptor found does not stat");
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    if st.st_dev != named.dev() || st.st_ino != named.ino() {
        return Advice::NotGiven("the descriptor found is not the database file's");
    }
    // SAFETY: a plain system call on a descriptor of the database file; no memory is passed.
    match unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_RANDOM) } {
        0 => Advice::Given,
        _ => Advice::NotGiven("the kernel refused the advice"),
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_descriptor(_fd: c_int, _name: &CStr) -> Advice {
    Advice::NotGiven("read-ahead advice is only given on Linux")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::super::open_connection;
    use super::*;
    use rusqlite::{Connection, params};
    use std::os::fd::AsRawFd;

    /// Rows of 1 KB in rowid order: about 8 MB, laid out from the start of the file to its end.
    const ROWS: i64 = 8000;

    fn database(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("t.db");
        let mut conn = open_connection(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
        let tx = conn.transaction().unwrap();
        for k in 0..ROWS {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, format!("{k:01000}")]).unwrap();
        }
        tx.commit().unwrap();
        // Everything into the database file, the WAL gone.
        drop(conn);
        path
    }

    /// Drops the file's pages from the kernel's page cache (they are clean once synced).
    fn evict(path: &std::path::Path) {
        let file = std::fs::File::open(path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: a plain system call on a descriptor open here; no memory is passed.
        assert_eq!(unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
    }

    /// How many bytes of the file are in the kernel's page cache (`mincore` over a mapping).
    fn cached_bytes(path: &std::path::Path) -> usize {
        let file = std::fs::File::open(path).unwrap();
        let len = usize::try_from(file.metadata().unwrap().len()).unwrap();
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let mut resident = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of the whole file, unmapped below; `resident` has a
        // byte per page of it.
        unsafe {
            let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        resident.iter().filter(|r| *r & 1 == 1).count() * page
    }

    /// Reads the first `rows` rows (about `rows` KB from the start of the file) on `conn`.
    fn read_first(conn: &Connection, rows: i64) {
        let n: i64 =
            conn.query_row("SELECT count(*) FROM t WHERE k < ?1 AND length(v) > 0", [rows], |r| r.get(0)).unwrap();
        assert_eq!(n, rows);
    }

    #[test]
    fn a_klaxon_connection_reads_its_database_file_without_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        evict(&path);
        let conn = open_connection(&path).unwrap();
        read_first(&conn, 2000);
        // 2,000 rows of 1 KB and the pages above them (2.06 MB measured); read-ahead brings
        // megabytes more (see the test below).
        let cached = cached_bytes(&path);
        assert!(cached <= 2560 << 10, "{cached} bytes of the file are cached after reading about 2 MB");
    }

    #[test]
    fn the_same_reads_without_the_advice_read_ahead_here() {
        // What the test above guards against, shown on this machine: a plain SQLite connection
        // makes the kernel read well past the rows it needs. (Should this fail, read-ahead is
        // off here and the test above proves nothing; see /sys/block/*/queue/read_ahead_kb.)
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        evict(&path);
        let conn = Connection::open(&path).unwrap();
        read_first(&conn, 2000);
        // 4.19 MB measured on the build machine (`read_ahead_kb` 8192).
        let cached = cached_bytes(&path);
        assert!(cached >= 3 << 20, "only {cached} bytes of the file are cached after reading about 2 MB");
    }

    fn c_name(path: &std::path::Path) -> std::ffi::CString {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
    }

    #[test]
    fn advice_is_given_only_to_a_descriptor_of_the_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(advise_descriptor(file.as_raw_fd(), &c_name(&path)), Advice::Given);
        assert_eq!(
            advise_descriptor(file.as_raw_fd(), &c_name(&other)),
            Advice::NotGiven("the descriptor found is not the database file's")
        );
        assert_eq!(advise_descriptor(-1, &c_name(&path)), Advice::NotGiven("the descriptor found does not stat"));
        assert_eq!(
            advise_descriptor(file.as_raw_fd(), &c_name(&dir.path().join("gone"))),
            Advice::NotGiven("the file's name does not stat")
        );
    }

    #[test]
    fn no_descriptor_is_read_from_a_file_another_vfs_opened() {
        // A file whose descriptor sits where a unix VFS keeps it: only a VFS named unix*, with
        // files at least that large, is trusted to have put it there.
        let dir = tempfile::tempdir().unwrap();
        let path = database(&dir);
        let file = std::fs::File::open(&path).unwrap();
        let head = UnixFileHead {
            methods: std::ptr::null(),
            vfs: std::ptr::null(),
            inode: std::ptr::null(),
            fd: file.as_raw_fd(),
        };
        let real = std::ptr::from_ref(&head).cast::<ffi::sqlite3_file>();
        let name = c_name(&path);
        let vfs = |vfs_name: &CStr, size: usize| {
            // SAFETY: every field of sqlite3_vfs is an integer, a raw pointer or an optional
            // function pointer, for which all zeroes is a valid value.
            let mut vfs: ffi::sqlite3_vfs = unsafe { std::mem::zeroed() };
            vfs.zName = vfs_name.as_ptr();
            vfs.szOsFile = c_int::try_from(size).unwrap();
            vfs
        };
        let size = std::mem::size_of::<UnixFileHead>();
        let advise = |v: &ffi::sqlite3_vfs, name: *const c_char| {
            // SAFETY: `real` points to a `UnixFileHead` (what a unix VFS's file starts with),
            // and `name` is null or a C string.
            unsafe { advise_random(v, real, name) }
        };
        assert_eq!(advise(&vfs(c"unix", size), name.as_ptr()), Advice::Given);
        assert_eq!(
            advise(&vfs(c"memdb", size), name.as_ptr()),
            Advice::NotGiven("SQLite's default VFS is not its unix VFS")
        );
        assert_eq!(
            advise(&vfs(c"unix", size - 1), name.as_ptr()),
            Advice::NotGiven("SQLite's unix VFS file is smaller than expected")
        );
        assert_eq!(advise(&vfs(c"unix", size), std::ptr::null()), Advice::NotGiven("the file has no name"));
    }
}
