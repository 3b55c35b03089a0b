//! The store contract, run unchanged against both adapters.

mod sqlite {
    klaxon_tests::store_contract_tests!(klaxon_tests::sqlite_store);
}

mod dynamodb {
    klaxon_tests::store_contract_tests!(klaxon_tests::dynamo_store);
}

/// The same contract in point partitions, which the embedded store keeps in a table of their
/// own with an index in memory.
mod sqlite_point_partitions {
    klaxon_tests::store_contract_tests!(klaxon_tests::sqlite_point_store);
}

mod dynamodb_point_partitions {
    klaxon_tests::store_contract_tests!(klaxon_tests::dynamo_point_store);
}

/// The embedded store deletes what has expired (seen and delivery records), in batches, so
/// that klaxon.db does not grow without bound. (DynamoDB's TTL does this on AWS.)
mod sqlite_housekeeping {
    use klaxon::store::{Condition, Item, Write};

    #[tokio::test]
    async fn expired_rows_are_deleted_in_batches_and_live_ones_kept() {
        let t = klaxon_tests::sqlite_store().await.unwrap();
        let now = jiff::Timestamp::now().as_second();
        let expired: Vec<Write> = (0..1200)
            .map(|i| Write::Put {
                item: Item::new("seen#freezer", format!("k{i:05}"), "x").expiring_at(now - 1),
                condition: Condition::None,
            })
            .collect();
        for chunk in expired.chunks(100) {
            t.store.transact(chunk.to_vec()).await.unwrap();
        }
        t.store.put(Item::new("seen#freezer", "live", "y").expiring_at(now + 3600), Condition::None).await.unwrap();
        t.store.put(Item::new("alert#ALR-1", "alert", "z"), Condition::None).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(t.store.purge_expired(500).await.unwrap());
        }
        assert_eq!(got, [500, 500, 200, 0]);
        assert!(t.store.get("seen#freezer", "live").await.unwrap().is_some());
        assert!(t.store.get("alert#ALR-1", "alert").await.unwrap().is_some());
    }
}
