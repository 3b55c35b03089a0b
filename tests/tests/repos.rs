//! The repositories, on both store adapters: they are written once on the port, so they must
//! behave identically on SQLite and DynamoDB.

use jiff::Timestamp;
use klaxon::domain::{Actor, Alert, Incident, IncidentId, NewAlert, NewIncident, Urgency};
use klaxon::repo::RepoError;
use klaxon::repo::alerts::AlertRepo;
use klaxon::repo::counter;
use klaxon::repo::deliveries::{Delivery, DeliveryRecord, DeliveryRepo};
use klaxon::repo::incidents::IncidentRepo;
use klaxon::store::{Condition, Item, Store, Write};
use std::collections::BTreeSet;
use std::sync::Arc;

fn alert(id: &str, key: &str) -> Alert {
    Alert::trigger(
        NewAlert {
            id: id.into(),
            source: "freezer".into(),
            dedup_key: key.into(),
            summary: "warm".into(),
            details: String::new(),
            urgency: Urgency::High,
        },
        Actor::source("freezer"),
        Timestamp::now(),
    )
}

macro_rules! repo_tests {
    ($factory:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn counters_hand_out_distinct_sequential_numbers_under_concurrency() {
            let Some(t) = $factory().await else { return };
            super::counters_hand_out_distinct_sequential_numbers_under_concurrency(t.store.clone()).await;
        }

        #[tokio::test]
        async fn an_alert_is_created_with_its_jobs_or_not_at_all() {
            let Some(t) = $factory().await else { return };
            super::an_alert_is_created_with_its_jobs_or_not_at_all(t.store.clone()).await;
        }

        #[tokio::test]
        async fn stale_alert_updates_conflict_and_resolving_frees_the_dedup_key() {
            let Some(t) = $factory().await else { return };
            super::stale_alert_updates_conflict_and_resolving_frees_the_dedup_key(t.store.clone()).await;
        }

        #[tokio::test]
        async fn closing_an_older_alert_leaves_the_newer_one_on_the_key() {
            let Some(t) = $factory().await else { return };
            super::closing_an_older_alert_leaves_the_newer_one_on_the_key(t.store.clone()).await;
        }

        #[tokio::test]
        async fn incidents_are_found_by_number_and_by_channel() {
            let Some(t) = $factory().await else { return };
            super::incidents_are_found_by_number_and_by_channel(t.store.clone()).await;
        }

        #[tokio::test]
        async fn a_delivery_is_recorded_once() {
            let Some(t) = $factory().await else { return };
            super::a_delivery_is_recorded_once(t.store.clone()).await;
        }
    };
}

mod sqlite {
    repo_tests!(klaxon_tests::sqlite_store);
}

mod dynamodb {
    repo_tests!(klaxon_tests::dynamo_store);
}

async fn counters_hand_out_distinct_sequential_numbers_under_concurrency(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { counter::next(s.as_ref(), "alert").await.unwrap() })
        })
        .collect();
    let mut got = BTreeSet::new();
    for t in tasks {
        got.insert(t.await.unwrap());
    }
    assert_eq!(got, (1..=8).collect());

    // Blocks of numbers: 200 concurrent callers get 200 distinct numbers, the next after the
    // counter, with far fewer counter writes than callers (blocks grow while they go fast).
    let blocks = Arc::new(counter::NumberBlocks::new("alert", 1));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (s, b) = (store.clone(), blocks.clone());
            tokio::spawn(async move { AlertRepo::new(s).next_id(&b).await.unwrap() })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids, (9..=208).map(|n| format!("ALR-{n}")).collect());
    let after = counter::next(store.as_ref(), "alert").await.unwrap();
    assert!((209..=209 + 256).contains(&after), "blocks stay bounded: the counter is at {after}");

    // A quiet process takes one number at a time: nothing is left unused.
    let quiet = counter::NumberBlocks::new("alert", 1);
    assert_eq!(AlertRepo::new(store.clone()).next_id(&quiet).await.unwrap(), format!("ALR-{}", after + 1));
    assert_eq!(counter::next(store.as_ref(), "alert").await.unwrap(), after + 2, "one number was taken");

    // A larger block is taken ahead of need; its numbers come without a round trip and are
    // not handed out twice, even beside the one-at-a-time counter.
    let base = after + 2;
    let ahead = counter::NumberBlocks::new("alert", 10);
    ahead.refill_if_empty(store.as_ref()).await.unwrap();
    assert_eq!(counter::next(store.as_ref(), "alert").await.unwrap(), base + 11, "the block took the next 10");
    let mut taken = Vec::new();
    for _ in 0..11 {
        taken.push(ahead.next(store.as_ref()).await.unwrap());
    }
    assert_eq!(&taken[..10], (base + 1..=base + 10).collect::<Vec<_>>().as_slice());
    assert_eq!(taken[10], base + 12, "then a new block starts after the counter");

    // A number given back (taken for a new alert that turned out to be a repeat) is the next
    // one handed out.
    ahead.give_back(taken[4]).await;
    ahead.give_back(taken[3]).await;
    assert_eq!(ahead.next(store.as_ref()).await.unwrap(), taken[3], "the smallest first");
    assert_eq!(ahead.next(store.as_ref()).await.unwrap(), taken[4]);
    assert_eq!(ahead.next(store.as_ref()).await.unwrap(), base + 13, "then the block goes on");
}

async fn an_alert_is_created_with_its_jobs_or_not_at_all(store: Arc<dyn Store>) {
    let repo = AlertRepo::new(store.clone());
    let job = |n: &str| Write::Put { item: Item::new(format!("job#{n}"), "job", "{}"), condition: Condition::Absent };
    repo.create(&alert("ALR-1", "dev1:temp"), None, vec![job("1")]).await.unwrap();
    assert_eq!(repo.find_open("freezer", "dev1:temp").await.unwrap().alert.unwrap().value.id, "ALR-1");
    assert!(store.get("job#1", "job").await.unwrap().is_some());

    // A second open alert with the same key is refused, and its job is not written either.
    let err = repo.create(&alert("ALR-2", "dev1:temp"), None, vec![job("2")]).await.unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err}");
    assert!(repo.get("ALR-2").await.unwrap().is_none());
    assert!(store.get("job#2", "job").await.unwrap().is_none());
}

async fn stale_alert_updates_conflict_and_resolving_frees_the_dedup_key(store: Arc<dyn Store>) {
    let repo = AlertRepo::new(store);
    repo.create(&alert("ALR-1", "k"), None, vec![]).await.unwrap();
    let read = repo.get("ALR-1").await.unwrap().unwrap();

    let mut acked = read.value.clone();
    acked.acknowledge(Actor::user("u1", "alice"), Timestamp::now()).unwrap();
    repo.update(&read, &acked, vec![]).await.unwrap();

    // A second click computed from the same old read loses.
    let mut resolved_from_stale = read.value.clone();
    resolved_from_stale.resolve(Actor::user("u2", "bob"), Timestamp::now()).unwrap();
    let err = repo.update(&read, &resolved_from_stale, vec![]).await.unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err}");
    assert_eq!(repo.get("ALR-1").await.unwrap().unwrap().value.acknowledged_by, Some(Actor::user("u1", "alice")));

    let fresh = repo.get("ALR-1").await.unwrap().unwrap();
    let mut resolved = fresh.value.clone();
    resolved.resolve(Actor::user("u2", "bob"), Timestamp::now()).unwrap();
    repo.update(&fresh, &resolved, vec![]).await.unwrap();
    assert!(repo.find_open("freezer", "k").await.unwrap().alert.is_none());
    repo.create(&alert("ALR-2", "k"), None, vec![]).await.expect("the key is free again");
}

async fn closing_an_older_alert_leaves_the_newer_one_on_the_key(store: Arc<dyn Store>) {
    let repo = AlertRepo::new(store);
    repo.create(&alert("ALR-1", "k"), None, vec![]).await.unwrap();
    let index_version = repo.find_open("freezer", "k").await.unwrap().index_version;
    // A new episode takes over the key while ALR-1 is still open.
    repo.create(&alert("ALR-2", "k"), index_version, vec![]).await.unwrap();
    // A stale index version loses.
    let err = repo.create(&alert("ALR-3", "k"), index_version, vec![]).await.unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err}");
    let old = repo.get("ALR-1").await.unwrap().unwrap();
    let mut resolved = old.value.clone();
    resolved.resolve(Actor::System, Timestamp::now()).unwrap();
    repo.update(&old, &resolved, vec![]).await.unwrap();
    assert_eq!(repo.find_open("freezer", "k").await.unwrap().alert.unwrap().value.id, "ALR-2");
}

async fn incidents_are_found_by_number_and_by_channel(store: Arc<dyn Store>) {
    let repo = IncidentRepo::new(store);
    let id = repo.next_id("INC").await.unwrap();
    assert_eq!(id, IncidentId::new("INC", 1));
    let new = NewIncident {
        id,
        title: "Checkout down".into(),
        severity: "SEV1".into(),
        summary: String::new(),
        commander: None,
        fields: Default::default(),
        private: false,
    };
    let incident = Incident::declare(new, Actor::user("u1", "alice"), Timestamp::now());
    repo.create(&incident, None, vec![]).await.unwrap();
    assert!(repo.get_by_channel("chan").await.unwrap().is_none());

    let read = repo.get(1).await.unwrap().unwrap();
    let mut with_channel = read.value.clone();
    with_channel.channel_id = Some("kb7yc8m3d7gd5g5dwrq1m8jx6w".into());
    repo.update(&read, &with_channel, vec![]).await.unwrap();
    let found = repo.get_by_channel("kb7yc8m3d7gd5g5dwrq1m8jx6w").await.unwrap().unwrap();
    assert_eq!(found.value.id.to_string(), "INC-1");
    assert_eq!(found.version, 2);
    let err = repo.update(&read, &with_channel, vec![]).await.unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err}");

    // The open list, and a request key that creates one incident however often it is sent.
    let second = Incident { id: IncidentId::new("INC", 2), ..incident.clone() };
    repo.create(&second, Some("dialog-n1"), vec![]).await.unwrap();
    let again = Incident { id: IncidentId::new("INC", 3), ..incident.clone() };
    let err = repo.create(&again, Some("dialog-n1"), vec![]).await.unwrap_err();
    assert!(matches!(err, RepoError::AlreadyExists { .. }), "{err}");
    assert!(repo.get(3).await.unwrap().is_none(), "the refused create wrote nothing");
    assert_eq!(repo.get_by_request("dialog-n1").await.unwrap().unwrap().value.id.number, 2);
    let open: Vec<u64> = repo.open().await.unwrap().iter().map(|i| i.id.number).collect();
    assert_eq!(open, [1, 2]);
    let read = repo.get(1).await.unwrap().unwrap();
    let mut resolved = read.value.clone();
    resolved.resolve(Actor::System, Timestamp::now()).unwrap();
    repo.update(&read, &resolved, vec![]).await.unwrap();
    let open: Vec<u64> = repo.open().await.unwrap().iter().map(|i| i.id.number).collect();
    assert_eq!(open, [2], "a resolved incident leaves the open list");
}

async fn a_delivery_is_recorded_once(store: Arc<dyn Store>) {
    let repo = DeliveryRepo::new(store);
    let record = DeliveryRecord {
        job_id: "job-1".into(),
        at: Timestamp::now(),
        delivery: Delivery::NotDelivered { channel: Some("alerts".into()), reason: "no Mattermost".into() },
    };
    assert!(repo.record(&record).await.unwrap());
    assert!(!repo.record(&record).await.unwrap(), "a retry finds the first record");
    assert_eq!(repo.get("job-1").await.unwrap(), Some(record));
}
