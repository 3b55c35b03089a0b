//! The notifier end to end: jobs on a real queue (SQLite, or SQS on moto), the worker loop that
//! `klaxon serve` runs, delivery records in the store.

use jiff::Timestamp;
use klaxon::app::AppState;
use klaxon::config::Config;
use klaxon::domain::{Actor, Alert, NewAlert, Urgency};
use klaxon::notify::worker::Worker;
use klaxon::notify::{Job, JobError, JobHandler, NotifyJob, Record, Subject};
use klaxon::queue::ReceiveOptions;
use klaxon::repo::deliveries::Delivery;
use std::sync::Arc;
use std::time::Duration;

fn alert(id: &str) -> Alert {
    Alert::trigger(
        NewAlert {
            id: id.into(),
            source: "freezer".into(),
            dedup_key: format!("{id}-key"),
            summary: "Freezer warm".into(),
            details: String::new(),
            urgency: Urgency::Critical,
        },
        Actor::source("freezer"),
        Timestamp::now(),
    )
}

fn job(alert_id: &str, event: &str) -> Job {
    Job::Notify(NotifyJob {
        job_id: format!("{alert_id}:{event}"),
        event: event.into(),
        subject: Subject::Alert { id: alert_id.into() },
        at: Timestamp::now(),
    })
}

fn record(job: &Job) -> Record {
    Record { message_id: "m".into(), body: job.to_message().body, group_id: None, receive_count: 1 }
}

/// Runs the worker loop until `done` says so (or 10 s pass), then stops it cleanly.
async fn run_worker_until(state: &AppState, done: impl AsyncFn() -> bool) {
    run_worker(state, Duration::from_secs(5), Duration::from_secs(10), done).await
}

async fn run_worker(state: &AppState, visibility: Duration, max: Duration, done: impl AsyncFn() -> bool) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker =
        Worker { name: "test", queue: state.notify_queue.clone(), handler: Arc::new(state.notifier()), visibility };
    let handle = tokio::spawn(worker.run(stop_rx));
    let deadline = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    handle.await.unwrap();
}

async fn worker_records_each_job_once_and_empties_the_queue(state: AppState) {
    state.alerts().create(&alert("ALR-1"), None, vec![]).await.unwrap();
    for event in ["alert.triggered", "alert.acknowledged"] {
        state.notify_queue.send(job("ALR-1", event).to_message()).await.unwrap();
    }
    // The same job sent again (a producer retry) must not produce a second delivery.
    state.notify_queue.send(job("ALR-1", "alert.triggered").to_message()).await.unwrap();
    let deliveries = state.deliveries();
    run_worker_until(&state, async || deliveries.get("ALR-1:alert.acknowledged").await.unwrap().is_some()).await;

    for event in ["alert.triggered", "alert.acknowledged"] {
        let rec = deliveries.get(&format!("ALR-1:{event}")).await.unwrap().expect("delivery recorded");
        match rec.delivery {
            Delivery::NotDelivered { reason, .. } => assert!(reason.contains("no Mattermost"), "{reason}"),
            other => panic!("nothing can have been posted, got {other:?}"),
        }
    }
    let left = state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(1))).await.unwrap();
    assert!(left.is_empty(), "finished jobs are deleted: {left:?}");
}

#[tokio::test]
async fn sqlite_worker_records_each_job_once_and_empties_the_queue() {
    let (db, _dir) = klaxon_tests::temp_db();
    worker_records_each_job_once_and_empties_the_queue(AppState::embedded(Config::empty(), db).unwrap()).await;
}

#[tokio::test]
async fn sqs_worker_records_each_job_once_and_empties_the_queue() {
    let Some(endpoint) = klaxon_tests::aws_endpoint() else { return };
    let sdk = klaxon_tests::aws_sdk_config(&endpoint).await;
    let table = klaxon_tests::unique_name("klaxon-notifier");
    klaxon::store::dynamodb::DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await.unwrap();
    let queue = format!("{}.fifo", klaxon_tests::unique_name("klaxon-notify"));
    let (url, _dlq) = klaxon::queue::sqs::SqsQueue::create_with_dead_letter(&aws_sdk_sqs::Client::new(&sdk), &queue, 5)
        .await
        .unwrap();
    let mut state = klaxon_tests::aws_state(&endpoint, &table).await;
    state.notify_queue = Arc::new(klaxon::queue::sqs::SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), url));
    worker_records_each_job_once_and_empties_the_queue(state).await;
}

#[tokio::test]
async fn a_redelivered_job_is_skipped_by_its_delivery_record() {
    let (db, _dir) = klaxon_tests::temp_db();
    let state = AppState::embedded(Config::empty(), db).unwrap();
    state.alerts().create(&alert("ALR-2"), None, vec![]).await.unwrap();
    let notifier = state.notifier();
    let j = job("ALR-2", "alert.triggered");
    notifier.handle(&record(&j)).await.unwrap();
    let first = state.deliveries().get(j.id()).await.unwrap().unwrap();
    notifier.handle(&record(&j)).await.unwrap();
    assert_eq!(state.deliveries().get(j.id()).await.unwrap().unwrap(), first, "the record is not rewritten");
}

#[tokio::test]
async fn malformed_jobs_and_jobs_for_missing_alerts_are_poison_and_record_nothing() {
    let (db, _dir) = klaxon_tests::temp_db();
    let state = AppState::embedded(Config::empty(), db).unwrap();
    let notifier = state.notifier();
    let garbage =
        Record { message_id: "m1".into(), body: "{\"type\":\"launch\"}".into(), group_id: None, receive_count: 1 };
    let err = notifier.handle(&garbage).await.unwrap_err();
    assert!(matches!(err, JobError::Poison(ref m) if m.contains("not a Klaxon job")), "{err}");
    let orphan = job("ALR-404", "alert.triggered");
    let err = notifier.handle(&record(&orphan)).await.unwrap_err();
    assert!(matches!(err, JobError::Poison(ref m) if m.contains("ALR-404")), "{err}");
    assert!(state.deliveries().get(orphan.id()).await.unwrap().is_none());
}

/// Fails every job of one event transiently (Mattermost down, say), and does the rest.
struct FailEvent(&'static str, klaxon::notify::notifier::Notifier);

#[async_trait::async_trait]
impl JobHandler for FailEvent {
    async fn handle(&self, r: &Record) -> Result<(), JobError> {
        if r.body.contains(self.0) {
            Err(JobError::Transient("Mattermost is down".into()))
        } else {
            self.1.handle(r).await
        }
    }
}

#[tokio::test]
async fn a_failing_job_stays_queued_backs_off_and_its_group_waits() {
    let (db, _dir) = klaxon_tests::temp_db();
    let state = AppState::embedded(Config::empty(), db.clone()).unwrap();
    state.alerts().create(&alert("ALR-9"), None, vec![]).await.unwrap();
    state.notify_queue.send(job("ALR-9", "alert.triggered").to_message()).await.unwrap();
    state.notify_queue.send(job("ALR-9", "alert.resolved").to_message()).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handler = Arc::new(FailEvent("alert.triggered", state.notifier()));
    let worker =
        Worker { name: "test", queue: state.notify_queue.clone(), handler, visibility: Duration::from_secs(1) };
    let handle = tokio::spawn(worker.run(stop_rx));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    handle.await.unwrap();
    assert!(state.deliveries().get("ALR-9:alert.resolved").await.unwrap().is_none(), "nothing overtook the failure");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let left = state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
    assert!(left.is_empty(), "pushed back by the retry delay (30 s), not the 1 s visibility timeout: {left:?}");
    let queue =
        klaxon::queue::sqlite::SqliteQueue::open(db, klaxon::app::NOTIFY_QUEUE, klaxon::queue::QueueKind::Fifo, None)
            .unwrap();
    assert_eq!(queue.depth().await.unwrap(), 2, "both jobs are still queued");
}

/// A job that can never work (here: for an alert that does not exist, and a body that is no
/// job) is moved to the dead-letter queue at once, and the jobs behind it in its group go on.
async fn a_poisoned_job_is_set_aside_and_its_group_goes_on(state: AppState) {
    state.alerts().create(&alert("ALR-7"), None, vec![]).await.unwrap();
    let mut orphan = job("ALR-404", "alert.triggered").to_message();
    orphan.group_id = Some("ALR-7".into());
    let garbage = klaxon::queue::OutgoingMessage::fifo("{\"type\":\"launch\"}", "ALR-7", "garbage-1");
    state.notify_queue.send(garbage).await.unwrap();
    state.notify_queue.send(orphan).await.unwrap();
    state.notify_queue.send(job("ALR-7", "alert.triggered").to_message()).await.unwrap();
    let deliveries = state.deliveries();
    run_worker_until(&state, async || deliveries.get("ALR-7:alert.triggered").await.unwrap().is_some()).await;
    assert!(deliveries.get("ALR-7:alert.triggered").await.unwrap().is_some(), "the good job went on");
    let left = state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(1))).await.unwrap();
    assert!(left.is_empty(), "nothing is left to drag the group: {left:?}");
    let dead = klaxon::notify::retry::dead_letters(state.notify_queue.as_ref()).await.unwrap();
    let mut jobs: Vec<_> = dead.iter().map(|d| d.job.clone().unwrap_or_else(|e| e)).collect();
    jobs.sort();
    assert_eq!(jobs.len(), 2, "both set aside, once each: {jobs:?}");
    assert_eq!(jobs[0], "ALR-404:alert.triggered");
    assert!(jobs[1].contains("not a job this version can read"), "{}", jobs[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_poisoned_job_is_set_aside_and_its_group_goes_on() {
    let app = klaxon_tests::embedded_app("version = 1\n").await.unwrap();
    a_poisoned_job_is_set_aside_and_its_group_goes_on(app.state.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_a_poisoned_job_is_set_aside_and_its_group_goes_on() {
    let Some(app) = klaxon_tests::aws_app("version = 1\n").await else { return };
    a_poisoned_job_is_set_aside_and_its_group_goes_on(app.state.clone()).await;
}

/// `klaxon deliveries` on both backends: dead letters are listed and moved back to the queue.
async fn dead_letters_are_listed_and_moved_back(state: AppState) {
    let dlq = state.notify_queue.dead_letter_queue().await.unwrap().expect("the notify queue has a dead-letter queue");
    dlq.send(job("ALR-5", "alert.triggered").to_message()).await.unwrap();
    let listed = klaxon::notify::retry::dead_letters(state.notify_queue.as_ref()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job.as_deref(), Ok("ALR-5:alert.triggered"));
    tokio::time::sleep(Duration::from_millis(5200)).await; // listing hid it for 5 s
    assert_eq!(klaxon::notify::retry::redrive(state.notify_queue.as_ref()).await.unwrap(), 1);
    let back = state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(Job::parse(&back[0].body).unwrap().id(), "ALR-5:alert.triggered");
    assert!(
        dlq.receive(ReceiveOptions::new(10, Duration::from_secs(1))).await.unwrap().is_empty(),
        "moved, not copied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dead_letters_are_listed_and_moved_back() {
    let app = klaxon_tests::embedded_app("version = 1\n").await.unwrap();
    dead_letters_are_listed_and_moved_back(app.state.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_dead_letters_are_listed_and_moved_back() {
    let Some(app) = klaxon_tests::aws_app("version = 1\n").await else { return };
    dead_letters_are_listed_and_moved_back(app.state.clone()).await;
}
