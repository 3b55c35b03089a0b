//! Klaxon's page cache (`embedded::page_cache`) in a process of its own: SQLite takes a page
//! cache only before its first connection, which in the library's unit tests any test may open
//! first. One test, so that nothing else in this process opens a connection before it.

use klaxon::embedded::{Db, page_cache_truncations};

/// Random-looking keys, so that inserts land all over the tree and split its pages (the case
/// that made SQLite's default cache walk every cached page at each commit).
fn key(n: u64) -> String {
    format!("{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[tokio::test]
async fn commits_skip_truncations_that_drop_nothing_and_a_rollback_still_drops_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("klaxon.db")).unwrap();
    db.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID").unwrap();

    // 200 commits of 30 rows of 300 bytes at random places: pages split in most of them.
    let (asked_before, passed_before) = page_cache_truncations();
    for commit in 0..200u64 {
        db.run(move |tx| {
            for i in 0..30 {
                tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (key(commit * 30 + i), "v".repeat(300)))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }
    let (asked, passed) = page_cache_truncations();
    assert!(asked - asked_before >= 200, "every commit asks for a truncation: {} asked", asked - asked_before);
    assert!(
        passed - passed_before <= 20,
        "commits that grew the file have nothing past its end to drop: {} of {} passed on",
        passed - passed_before,
        asked - asked_before
    );

    // A transaction that grows the file and is rolled back leaves pages past the end in the
    // writer's cache: that truncation must reach SQLite's cache, and nothing of it stays.
    let (_, passed_before) = page_cache_truncations();
    let failed = db
        .run_or_rollback(|tx| {
            for i in 0..2_000u64 {
                tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (format!("rolled-back-{i:06}"), "w".repeat(300)))?;
            }
            Ok(Err::<(), &str>("changed its mind"))
        })
        .await
        .unwrap();
    assert_eq!(failed, Err("changed its mind"));
    let (_, passed) = page_cache_truncations();
    assert!(passed > passed_before, "the rollback's truncation was not passed on");

    // The writer goes on from the file as it is: the rows of the commits, none of the rollback,
    // and a sound file, read by the writer itself and by a reader.
    let written = db
        .run(|tx| {
            tx.execute("INSERT INTO t (k, v) VALUES ('after', 'x')", [])?;
            tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))
        })
        .await
        .unwrap();
    assert_eq!(written, 6_001);
    let (rows, integrity) = db
        .read(|c| {
            let rows: i64 = c.query_row("SELECT COUNT(*) FROM t WHERE k NOT LIKE 'rolled-back-%'", [], |r| r.get(0))?;
            let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            Ok((rows, integrity))
        })
        .await
        .unwrap();
    assert_eq!((rows, integrity.as_str()), (6_001, "ok"));
}
