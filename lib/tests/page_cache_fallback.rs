//! When something in the process opened an SQLite connection before Klaxon did, SQLite keeps
//! its own page cache (it takes another only before it initialises): Klaxon's database must work
//! the same, only without `embedded::page_cache`. A process of its own, so that the connection
//! below is the first.

use klaxon::embedded::{Db, page_cache_truncations};

#[tokio::test]
async fn a_database_opened_after_sqlite_initialised_works_with_sqlites_own_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = rusqlite::Connection::open(dir.path().join("other.db")).unwrap();
    first.execute_batch("CREATE TABLE x (k INTEGER PRIMARY KEY)").unwrap();

    let db = Db::open(&dir.path().join("klaxon.db")).unwrap();
    db.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
    for i in 0..50i64 {
        db.run(move |tx| tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (i, "v".repeat(500)))).await.unwrap();
    }
    let (rows, integrity) = db
        .read(|c| {
            let rows: i64 = c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
            let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            Ok((rows, integrity))
        })
        .await
        .unwrap();
    assert_eq!((rows, integrity.as_str()), (50, "ok"));
    assert_eq!(page_cache_truncations(), (0, 0), "SQLite had initialised: its own cache was kept");
}
