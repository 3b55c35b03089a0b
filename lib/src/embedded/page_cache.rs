//! SQLite's own page cache, without a scan of the whole cache at every commit.
//!
//! At the end of every write transaction SQLite drops the cached pages past the end of the
//! database (`pager_end_transaction` truncates the page cache to the database's size). Its
//! default cache (pcache1) finds those pages by the largest page number it has held since the
//! last truncation: when that is far past the end, it walks every cached page. And it always is
//! in a storm: when a b-tree page splits, SQLite sorts the new pages by number, swapping two of
//! them through a spare number, that of the page that holds the file-lock bytes at 1 GiB
//! (`balance_nonroot`: `pgnoTemp`). No page is ever kept under that number, but pcache1
//! remembers it, so the next commit walks the whole cache, page by page (measured: a 32 MB cache
//! for the writer instead of 2 MB cost it 50 % more CPU per new alert; `perf` showed this walk
//! at 4 % of the writer's time with 2 MB).
//!
//! This wraps the default cache and keeps its own account of the largest page number it holds
//! (every page enters through a fetch or a renumbering), leaving out the lock page's number,
//! which SQLite never keeps a page under (it renumbers the page away within the same call, and
//! refuses to load that page). A truncation that cannot drop anything (nothing held at or past
//! the limit) is not passed on; any other is, and pcache1 then does what it always did.
//!
//! SQLite takes a page cache only before it initialises (the first connection in the process
//! does that), so [`install`] runs before Klaxon opens its first connection; if something else
//! in the process opened one first, SQLite keeps its default and commits cost more.

use rusqlite::ffi;
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The byte SQLite's file locks sit on (`PENDING_BYTE`): the page that holds it is never used.
const LOCK_BYTE: u32 = 0x4000_0000;

/// The default cache's methods, which every method here passes on to.
static INNER: OnceLock<Methods> = OnceLock::new();

/// SQLite's page-cache methods: function pointers and the argument SQLite hands them, which it
/// shares between all its threads itself.
struct Methods(ffi::sqlite3_pcache_methods2);
// SAFETY: see above; the struct is never changed after it is stored.
unsafe impl Send for Methods {}
// SAFETY: as for Send.
unsafe impl Sync for Methods {}

/// Truncations asked for, and passed on to the default cache (for tests and curiosity).
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);
static PASSED_ON: AtomicU64 = AtomicU64::new(0);

/// One cache (SQLite makes one per connection and page size).
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// No page with a larger number is held.
    largest: c_uint,
    /// The number of the page that holds the lock byte, for this page size.
    lock_page: c_uint,
}

/// Installs the page cache for the whole process, once; true if SQLite uses it. Call it before
/// opening any connection.
pub(super) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: both calls follow SQLite's documented use of `sqlite3_config`: GETPCACHE2 fills
        // the struct it is given; PCACHE2 copies the one it is given. They are made once, from
        // this `OnceLock`, and PCACHE2 fails (SQLITE_MISUSE, changing nothing) once SQLite has
        // initialised.
        unsafe {
            let mut inner: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut inner as *mut ffi::sqlite3_pcache_methods2)
                != ffi::SQLITE_OK
                || inner.xCreate.is_none()
            {
                return false;
            }
            let inner = INNER.get_or_init(|| Methods(inner)).0;
            let ours = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: inner.pArg,
                xInit: inner.xInit,
                xShutdown: inner.xShutdown,
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const ffi::sqlite3_pcache_methods2)
                == ffi::SQLITE_OK
        }
    })
}

/// Truncations SQLite asked for so far in this process, and how many were passed on to the
/// default cache (the others could not drop anything).
pub fn truncations() -> (u64, u64) {
    (TRUNCATIONS.load(Ordering::Relaxed), PASSED_ON.load(Ordering::Relaxed))
}

/// The default cache's methods: set before ours are installed, so always there when SQLite
/// calls ours.
fn inner() -> Option<&'static ffi::sqlite3_pcache_methods2> {
    INNER.get().map(|m| &m.0)
}

/// # Safety
/// `cache` must be a cache [`create`] made and [`destroy`] has not freed.
unsafe fn ours<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *cache.cast::<Cache>() }
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let Some(f) = inner().and_then(|m| m.xCreate) else { return std::ptr::null_mut() };
    // SAFETY: the default cache's own constructor, with SQLite's arguments.
    let cache = unsafe { f(page_size, extra, purgeable) };
    if cache.is_null() {
        return cache;
    }
    let lock_page = u32::try_from(page_size).ok().filter(|s| *s > 0).map_or(0, |s| LOCK_BYTE / s + 1);
    Box::into_raw(Box::new(Cache { inner: cache, largest: 0, lock_page })).cast()
}

unsafe extern "C" fn cachesize(cache: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(f) = inner().and_then(|m| m.xCachesize) {
        // SAFETY: passed on to the cache it wraps.
        unsafe { f(ours(cache).inner, pages) }
    }
}

unsafe extern "C" fn pagecount(cache: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: passed on to the cache it wraps.
    inner().and_then(|m| m.xPagecount).map_or(0, |f| unsafe { f(ours(cache).inner) })
}

unsafe extern "C" fn fetch(
    cache: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: passed on to the cache it wraps; the account is this cache's own.
    unsafe {
        let c = ours(cache);
        let Some(f) = inner().and_then(|m| m.xFetch) else { return std::ptr::null_mut() };
        let page = f(c.inner, key, create);
        if !page.is_null() && key != c.lock_page {
            c.largest = c.largest.max(key);
        }
        page
    }
}

unsafe extern "C" fn unpin(cache: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    if let Some(f) = inner().and_then(|m| m.xUnpin) {
        // SAFETY: passed on to the cache it wraps.
        unsafe { f(ours(cache).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    cache: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: passed on to the cache it wraps; the account is this cache's own.
    unsafe {
        let c = ours(cache);
        if let Some(f) = inner().and_then(|m| m.xRekey) {
            f(c.inner, page, old, new);
        }
        if new != c.lock_page {
            c.largest = c.largest.max(new);
        }
    }
}

unsafe extern "C" fn truncate(cache: *mut ffi::sqlite3_pcache, limit: c_uint) {
    TRUNCATIONS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: passed on to the cache it wraps; the account is this cache's own.
    unsafe {
        let c = ours(cache);
        if limit > c.largest {
            return;
        }
        PASSED_ON.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = inner().and_then(|m| m.xTruncate) {
            f(c.inner, limit);
        }
        c.largest = c.largest.min(limit.saturating_sub(1));
    }
}

unsafe extern "C" fn destroy(cache: *mut ffi::sqlite3_pcache) {
    // SAFETY: SQLite destroys each cache once; ours is freed with it.
    unsafe {
        let c = Box::from_raw(cache.cast::<Cache>());
        if let Some(f) = inner().and_then(|m| m.xDestroy) {
            f(c.inner);
        }
    }
}

unsafe extern "C" fn shrink(cache: *mut ffi::sqlite3_pcache) {
    if let Some(f) = inner().and_then(|m| m.xShrink) {
        // SAFETY: passed on to the cache it wraps.
        unsafe { f(ours(cache).inner) }
    }
}
