//! The store contract: every adapter must pass every case here, unchanged.
//!
//! # Where moto differs from DynamoDB
//!
//! The contract describes DynamoDB. moto (the DynamoDB adapter's test double) differs in ways
//! that must never be "fixed" by bending the SQLite adapter to match moto:
//!
//! * **Transactions are serialised.** moto never answers `TransactionConflict` (a
//!   `TransactionCanceledException` with that reason, or `TransactionConflictException` on a
//!   single-item write that meets a running transaction), never throttles and never denies
//!   access. Those paths are tested against the fault-injecting endpoint in
//!   `tests/src/faulty.rs` (`tests/tests/aws_faults.rs`).
//! * **It is not thread-safe.** Concurrent `TransactWriteItems` can crash moto's request thread
//!   (HTTP 500, "dictionary changed size during iteration"); `tests/moto_server.py` therefore lets
//!   one request into moto at a time.
//! * **TTL never deletes.** Expired items stay in moto forever; the adapter hides them, as it
//!   must on AWS too (TTL deletes up to 48 h late).
//! * **Item size** is cut at 405,000 bytes in moto, a little over 409,000 on AWS; the store
//!   port's own limit (400,000) is under both.
//! * **Expression errors** (a syntax error, an undefined placeholder) are HTTP 500 in moto and
//!   400 `ValidationException` on AWS.

use klaxon::store::{
    Condition, Found, Item, MAX_ITEM_BYTES, MAX_PK_BYTES, MAX_SK_BYTES, MAX_TRANSACTION_WRITES, Store, StoreError,
    Write, item_size,
};
use std::sync::Arc;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Generates one `#[tokio::test]` per contract case for an adapter factory.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@cases $factory;
            get_of_a_missing_key_is_none, put_then_get_round_trips_every_field,
            put_if_absent_refuses_a_live_item_and_reports_its_version,
            version_condition_accepts_the_current_version_and_refuses_a_stale_one,
            version_condition_on_a_missing_item_fails, delete_respects_its_condition,
            query_returns_only_the_prefix_in_byte_order_and_honours_the_limit,
            transaction_writes_everything_when_all_conditions_hold,
            transaction_with_one_failed_condition_writes_nothing,
            transaction_check_failure_cancels_the_other_writes,
            invalid_transactions_are_refused_before_writing,
            expired_items_are_invisible_and_count_as_absent,
            concurrent_creators_of_one_key_have_exactly_one_winner,
            concurrent_versioned_updates_never_lose_an_increment,
            increment_counts_from_one_and_keeps_counting,
            concurrent_increments_hand_out_distinct_numbers,
            query_page_resumes_after_a_sort_key,
            keys_and_items_over_dynamodb_limits_are_refused_and_change_nothing,
            purge_expired_never_touches_live_items,
            keys_and_a_page_are_read_together);
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(t) = $factory().await else { return };
                $crate::store_contract::$case(t.store.clone()).await;
            }
        )*
    };
}

pub async fn get_of_a_missing_key_is_none(s: Arc<dyn Store>) {
    assert_eq!(s.get("p", "missing").await.unwrap(), None);
}

pub async fn put_then_get_round_trips_every_field(s: Arc<dyn Store>) {
    let item = Item::new("alert#ALR-1", "meta", r#"{"summary":"Gefrierschrank \u00fcber -10 °C ❄"}"#)
        .with_version(7)
        .expiring_at(now() + 3600);
    s.put(item.clone(), Condition::None).await.unwrap();
    assert_eq!(s.get("alert#ALR-1", "meta").await.unwrap(), Some(item));
}

pub async fn put_if_absent_refuses_a_live_item_and_reports_its_version(s: Arc<dyn Store>) {
    s.put(Item::new("p", "k", "first").with_version(3), Condition::Absent).await.unwrap();
    let err = s.put(Item::new("p", "k", "second"), Condition::Absent).await.unwrap_err();
    match err {
        StoreError::ConditionFailed { found, expected, .. } => {
            assert_eq!(found, Found::Version(3));
            assert_eq!(expected, Condition::Absent);
        }
        other => panic!("expected ConditionFailed, got {other:?}"),
    }
    assert_eq!(s.get("p", "k").await.unwrap().unwrap().data, "first", "the refused write changed nothing");
}

pub async fn version_condition_accepts_the_current_version_and_refuses_a_stale_one(s: Arc<dyn Store>) {
    s.put(Item::new("p", "k", "v1"), Condition::Absent).await.unwrap();
    s.put(Item::new("p", "k", "v2").with_version(2), Condition::Version(1)).await.unwrap();
    let err = s.put(Item::new("p", "k", "lost update").with_version(2), Condition::Version(1)).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(matches!(err, StoreError::ConditionFailed { found: Found::Version(2), .. }), "{err:?}");
    let stored = s.get("p", "k").await.unwrap().unwrap();
    assert_eq!((stored.data.as_str(), stored.version), ("v2", 2));
}

pub async fn version_condition_on_a_missing_item_fails(s: Arc<dyn Store>) {
    let err = s.put(Item::new("p", "ghost", "x").with_version(2), Condition::Version(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { found: Found::Nothing, .. }), "{err:?}");
    assert_eq!(s.get("p", "ghost").await.unwrap(), None);
}

pub async fn delete_respects_its_condition(s: Arc<dyn Store>) {
    s.put(Item::new("p", "k", "x").with_version(4), Condition::None).await.unwrap();
    let err = s.delete("p", "k", Condition::Version(3)).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { found: Found::Version(4), .. }), "{err:?}");
    assert!(s.get("p", "k").await.unwrap().is_some(), "a refused delete keeps the item");
    s.delete("p", "k", Condition::Version(4)).await.unwrap();
    assert_eq!(s.get("p", "k").await.unwrap(), None);
    s.delete("p", "k", Condition::None).await.unwrap();
    let err = s.delete("p", "k", Condition::Version(4)).await.unwrap_err();
    assert!(err.is_conflict());
}

pub async fn query_returns_only_the_prefix_in_byte_order_and_honours_the_limit(s: Arc<dyn Store>) {
    for sk in ["ev#3", "ev#1", "ev#10", "ev#z", "ev#é", "other#1", "ev"] {
        s.put(Item::new("alert#A", sk, sk), Condition::None).await.unwrap();
    }
    s.put(Item::new("alert#B", "ev#0", "other partition"), Condition::None).await.unwrap();
    let keys = |items: Vec<Item>| items.into_iter().map(|i| i.sk).collect::<Vec<_>>();
    // Byte order, as DynamoDB sorts strings: "1" < "10" < "3" < "z" < "é" (0xC3...).
    assert_eq!(keys(s.query_prefix("alert#A", "ev#", None).await.unwrap()), ["ev#1", "ev#10", "ev#3", "ev#z", "ev#é"]);
    assert_eq!(keys(s.query_prefix("alert#A", "ev#", Some(2)).await.unwrap()), ["ev#1", "ev#10"]);
    assert_eq!(s.query_prefix("alert#A", "", None).await.unwrap().len(), 7);
    assert!(s.query_prefix("alert#C", "ev#", None).await.unwrap().is_empty());
}

pub async fn transaction_writes_everything_when_all_conditions_hold(s: Arc<dyn Store>) {
    s.put(Item::new("p", "old", "x").with_version(1), Condition::None).await.unwrap();
    s.put(Item::new("p", "guard", "x").with_version(9), Condition::None).await.unwrap();
    s.transact(vec![
        Write::Put { item: Item::new("p", "new", "n"), condition: Condition::Absent },
        Write::Delete { pk: "p".into(), sk: "old".into(), condition: Condition::Version(1) },
        Write::Check { pk: "p".into(), sk: "guard".into(), condition: Condition::Version(9) },
    ])
    .await
    .unwrap();
    assert!(s.get("p", "new").await.unwrap().is_some());
    assert_eq!(s.get("p", "old").await.unwrap(), None);
    assert_eq!(s.get("p", "guard").await.unwrap().unwrap().version, 9, "a check writes nothing");
}

pub async fn transaction_with_one_failed_condition_writes_nothing(s: Arc<dyn Store>) {
    s.put(Item::new("p", "taken", "x"), Condition::None).await.unwrap();
    let err = s
        .transact(vec![
            Write::Put { item: Item::new("p", "a", "a"), condition: Condition::Absent },
            Write::Put { item: Item::new("p", "b", "b"), condition: Condition::None },
            Write::Put { item: Item::new("p", "taken", "y"), condition: Condition::Absent },
        ])
        .await
        .unwrap_err();
    match err {
        StoreError::TransactionConflict { index, sk, .. } => {
            assert_eq!((index, sk.as_str()), (2, "taken"))
        }
        other => panic!("expected TransactionConflict, got {other:?}"),
    }
    assert_eq!(s.get("p", "a").await.unwrap(), None, "all or nothing");
    assert_eq!(s.get("p", "b").await.unwrap(), None, "all or nothing");
    assert_eq!(s.get("p", "taken").await.unwrap().unwrap().data, "x");
}

pub async fn transaction_check_failure_cancels_the_other_writes(s: Arc<dyn Store>) {
    let err = s
        .transact(vec![
            Write::Check { pk: "p".into(), sk: "must-exist".into(), condition: Condition::Version(1) },
            Write::Put { item: Item::new("p", "a", "a"), condition: Condition::None },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TransactionConflict { index: 0, .. }), "{err:?}");
    assert_eq!(s.get("p", "a").await.unwrap(), None);
}

pub async fn invalid_transactions_are_refused_before_writing(s: Arc<dyn Store>) {
    assert!(matches!(s.transact(vec![]).await, Err(StoreError::InvalidTransaction(_))));
    let twice = vec![
        Write::Put { item: Item::new("p", "k0", "a"), condition: Condition::None },
        Write::Delete { pk: "p".into(), sk: "k0".into(), condition: Condition::None },
    ];
    let err = s.transact(twice).await.unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let too_many: Vec<Write> = (0..=MAX_TRANSACTION_WRITES)
        .map(|i| Write::Put { item: Item::new("p", format!("k{i}"), "x"), condition: Condition::None })
        .collect();
    let err = s.transact(too_many).await.unwrap_err();
    assert!(err.to_string().contains("split it"), "{err}");
    assert_eq!(s.get("p", "k0").await.unwrap(), None);
}

pub async fn expired_items_are_invisible_and_count_as_absent(s: Arc<dyn Store>) {
    s.put(Item::new("p", "old", "x").expiring_at(now() - 10), Condition::None).await.unwrap();
    s.put(Item::new("p", "live", "y").expiring_at(now() + 3600), Condition::None).await.unwrap();
    assert_eq!(s.get("p", "old").await.unwrap(), None);
    let keys: Vec<_> = s.query_prefix("p", "", None).await.unwrap().into_iter().map(|i| i.sk).collect();
    assert_eq!(keys, ["live"]);
    let err = s.put(Item::new("p", "old", "z").with_version(2), Condition::Version(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { found: Found::Nothing, .. }), "{err:?}");
    s.put(Item::new("p", "old", "reborn"), Condition::Absent).await.unwrap();
    assert_eq!(s.get("p", "old").await.unwrap().unwrap().data, "reborn");
}

pub async fn concurrent_creators_of_one_key_have_exactly_one_winner(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.put(Item::new("race", "k", format!("writer {i}")), Condition::Absent).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(e) => assert!(e.is_conflict(), "losers see a conflict, not {e}"),
        }
    }
    assert_eq!(wins, 1);
}

pub async fn concurrent_versioned_updates_never_lose_an_increment(s: Arc<dyn Store>) {
    s.put(Item::new("counter", "n", "0"), Condition::Absent).await.unwrap();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    let cur = s.get("counter", "n").await.unwrap().unwrap();
                    let n: u64 = cur.data.parse().unwrap();
                    let next = Item::new("counter", "n", (n + 1).to_string()).with_version(cur.version + 1);
                    match s.put(next, Condition::Version(cur.version)).await {
                        Ok(()) => return,
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let end = s.get("counter", "n").await.unwrap().unwrap();
    assert_eq!((end.data.as_str(), end.version), ("5", 6));
}

pub async fn increment_counts_from_one_and_keeps_counting(s: Arc<dyn Store>) {
    assert_eq!(s.increment("counter#alert", "counter").await.unwrap(), 1);
    assert_eq!(s.increment("counter#alert", "counter").await.unwrap(), 2);
    assert_eq!(s.increment("counter#incident", "counter").await.unwrap(), 1, "counters are independent");
    assert_eq!(s.increment("counter#alert", "counter").await.unwrap(), 3);
    let item = s.get("counter#alert", "counter").await.unwrap().unwrap();
    assert_eq!((item.version, item.data.as_str(), item.expires_at), (3, "", None), "readable like any item");
}

/// The counter behind ALR-n and INC-n: one round trip each, no retries, and no two callers
/// ever get the same number.
pub async fn concurrent_increments_hand_out_distinct_numbers(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.increment("counter#race", "counter").await })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().expect("an increment never fails under contention"));
    }
    got.sort_unstable();
    assert_eq!(got, (1..=60).collect::<Vec<u64>>());
}

pub async fn query_page_resumes_after_a_sort_key(s: Arc<dyn Store>) {
    for sk in ["ALR-1#01", "ALR-1#02", "ALR-1#03", "ALR-2#01", "ALR-3#01"] {
        s.put(Item::new("outbox", sk, "x"), Condition::None).await.unwrap();
    }
    let keys = |items: Vec<Item>| items.into_iter().map(|i| i.sk).collect::<Vec<_>>();
    assert_eq!(keys(s.query_page("outbox", "", None, 2).await.unwrap()), ["ALR-1#01", "ALR-1#02"]);
    assert_eq!(keys(s.query_page("outbox", "", Some("ALR-1#02"), 2).await.unwrap()), ["ALR-1#03", "ALR-2#01"]);
    // The key to resume after need not exist: skipping the rest of a subject.
    assert_eq!(keys(s.query_page("outbox", "", Some("ALR-1#\u{10FFFF}"), 5).await.unwrap()), ["ALR-2#01", "ALR-3#01"]);
    assert_eq!(keys(s.query_page("outbox", "ALR-1#", Some("ALR-1#01"), 5).await.unwrap()), ["ALR-1#02", "ALR-1#03"]);
}

/// DynamoDB refuses keys over 2048/1024 bytes and items over 400 KB; SQLite would take them.
/// Both adapters refuse them the same way, so a request gets the same answer on both.
pub async fn keys_and_items_over_dynamodb_limits_are_refused_and_change_nothing(s: Arc<dyn Store>) {
    let long_pk = "p".repeat(MAX_PK_BYTES + 1);
    let long_sk = "é".repeat(MAX_SK_BYTES / 2 + 1); // 2 bytes each: counted in bytes, not characters
    let too_large = |r: Result<(), StoreError>| matches!(r, Err(StoreError::TooLarge { .. }));
    assert!(too_large(s.put(Item::new(&long_pk, "k", "x"), Condition::None).await));
    assert!(too_large(s.put(Item::new("p", &long_sk, "x"), Condition::None).await));
    assert!(matches!(s.get(&long_pk, "k").await, Err(StoreError::TooLarge { .. })));
    let mut big = Item::new("p", "big", "x".repeat(MAX_ITEM_BYTES));
    assert!(item_size(&big) > MAX_ITEM_BYTES);
    assert!(too_large(s.put(big.clone(), Condition::None).await));
    let err = s
        .transact(vec![
            Write::Put { item: Item::new("p", "small", "x"), condition: Condition::None },
            Write::Put { item: big.clone(), condition: Condition::None },
        ])
        .await;
    assert!(too_large(err), "a transaction with one oversized item writes nothing");
    assert_eq!(s.get("p", "small").await.unwrap(), None);
    // Just under the limit is fine on both.
    big.data.truncate(MAX_ITEM_BYTES - item_size(&Item::new("p", "big", "")) - 10);
    s.put(big.clone(), Condition::None).await.unwrap();
    assert_eq!(s.get("p", "big").await.unwrap().unwrap().data.len(), big.data.len());
    let at_limit = "k".repeat(MAX_SK_BYTES);
    s.put(Item::new("p", &at_limit, "x"), Condition::None).await.unwrap();
}

pub async fn purge_expired_never_touches_live_items(s: Arc<dyn Store>) {
    s.put(Item::new("p", "old", "x").expiring_at(now() - 10), Condition::None).await.unwrap();
    s.put(Item::new("p", "live", "y").expiring_at(now() + 3600), Condition::None).await.unwrap();
    s.put(Item::new("p", "forever", "z"), Condition::None).await.unwrap();
    s.purge_expired(100).await.unwrap();
    let keys: Vec<_> = s.query_prefix("p", "", None).await.unwrap().into_iter().map(|i| i.sk).collect();
    assert_eq!(keys, ["forever", "live"]);
}

pub async fn keys_and_a_page_are_read_together(s: Arc<dyn Store>) {
    s.put(Item::new("open#k", "open", "ALR-1"), Condition::None).await.unwrap();
    for sk in ["w2", "w1", "w3", "x1"] {
        s.put(Item::new("windows", sk, sk), Condition::None).await.unwrap();
    }
    s.put(Item::new("windows", "w0", "gone").expiring_at(now() - 10), Condition::None).await.unwrap();
    let keys = [("open#k".to_string(), "open".to_string()), ("seen#k".to_string(), "seen".to_string())];
    let page = klaxon::store::PageQuery { pk: "windows", prefix: "w", limit: 2 };
    let (items, found) = s.get_many_and_page(&keys, &page).await.unwrap();
    assert_eq!(items.iter().map(|i| i.as_ref().map(|i| i.data.as_str())).collect::<Vec<_>>(), [Some("ALR-1"), None]);
    assert_eq!(found.iter().map(|i| i.sk.as_str()).collect::<Vec<_>>(), ["w1", "w2"], "prefix, order, limit, expiry");
    let nothing = klaxon::store::PageQuery { pk: "nowhere", prefix: "", limit: 10 };
    let (items, found) = s.get_many_and_page(&keys[..1], &nothing).await.unwrap();
    assert_eq!((items.len(), found.len()), (1, 0));
}
