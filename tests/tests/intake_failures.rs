//! What intake does when the store or the queue fails: the caller gets a 5xx and nothing
//! half-exists, or the alert is accepted and its job waits in the outbox until the sweep.

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use klaxon::app::AppState;
use klaxon::notify::outbox::Outbox;
use klaxon::queue::{OutgoingMessage, Queue, QueueError, QueueKind, ReceiveOptions, ReceivedMessage};
use klaxon::store::{Condition, Decide, Item, Store, StoreError, Write};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const CONFIG: &str = "version = 1\n[[sources]]\nid = \"freezer\"\nkind = \"particle\"\ninsecure = true\n";

/// A store whose transactions fail (the disk is full, DynamoDB throttles, ...). With `in_place`
/// it decides where it writes, as the embedded store does ([`Store::decide_and_write`]), and
/// fails there too; without, intake reads and then writes, as on DynamoDB.
struct FailingWrites {
    real: Arc<dyn Store>,
    in_place: bool,
}

fn disk_full() -> StoreError {
    StoreError::Backend { backend: "test store", message: "disk full".into() }
}

#[async_trait]
impl Store for FailingWrites {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.real.get(pk, sk).await
    }
    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        self.real.put(item, condition).await
    }
    async fn delete(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        self.real.delete(pk, sk, condition).await
    }
    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.real.query_page(pk, prefix, start_after, limit).await
    }
    async fn transact(&self, _writes: Vec<Write>) -> Result<(), StoreError> {
        Err(disk_full())
    }
    fn decides_where_it_writes(&self) -> bool {
        self.in_place
    }
    async fn decide_and_write(&self, _decide: Decide) -> Result<Box<dyn std::any::Any + Send>, StoreError> {
        Err(disk_full())
    }
    async fn increment_by(&self, pk: &str, sk: &str, by: u64) -> Result<u64, StoreError> {
        self.real.increment_by(pk, sk, by).await
    }
    async fn purge_expired(&self, max: usize) -> Result<usize, StoreError> {
        self.real.purge_expired(max).await
    }
}

/// A queue that is down.
struct DownQueue;

#[async_trait]
impl Queue for DownQueue {
    fn kind(&self) -> QueueKind {
        QueueKind::Fifo
    }
    fn name(&self) -> &str {
        "down"
    }
    async fn send(&self, _m: OutgoingMessage) -> Result<(), QueueError> {
        Err(QueueError::Backend { backend: "test queue", message: "connection refused".into() })
    }
    async fn receive(&self, _o: ReceiveOptions) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(vec![])
    }
    async fn delete(&self, _r: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn change_visibility(&self, _r: &str, _after: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead_letter_queue(&self) -> Result<Option<Arc<dyn Queue>>, QueueError> {
        Ok(None)
    }
}

async fn alert(state: &AppState, body: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = klaxon::http::all(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

async fn queued(queue: &Arc<dyn Queue>) -> usize {
    queue.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap().len()
}

#[tokio::test]
async fn a_failed_write_answers_503_and_leaves_nothing_behind() {
    a_failed_write_changes_nothing(true).await;
}

#[tokio::test]
async fn a_failed_write_after_a_read_answers_503_and_leaves_nothing_behind() {
    a_failed_write_changes_nothing(false).await;
}

async fn a_failed_write_changes_nothing(in_place: bool) {
    let app = klaxon_tests::embedded_app(CONFIG).await.unwrap();
    let real = app.state.clone();
    let mut broken = real.clone();
    broken.store = Arc::new(FailingWrites { real: real.store.clone(), in_place });
    let body = "event=ALERT&coreid=d1&published_at=t1&PARTICLE_EVENT_ID=ev-1";

    let (status, json) = alert(&broken, body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["error"]["code"], "store_unavailable");
    assert!(json["error"]["message"].as_str().unwrap().contains("nothing was recorded"), "{json}");
    assert!(real.alerts().find_open("freezer", "d1:alert").await.unwrap().alert.is_none());
    assert_eq!(real.outbox().pending().await.unwrap(), 0);
    assert_eq!(queued(&real.notify_queue).await, 0);

    // Particle retries the same event: with the store back, it is accepted as new, not as a duplicate.
    let (status, json) = alert(&real, body).await;
    assert_eq!((status, json["deduplicated"].as_bool()), (StatusCode::OK, Some(false)), "{json}");
    // The failed request's number is skipped, not handed out again: whether a failed write
    // committed is not always known.
    assert_eq!(json["alert_id"], "ALR-2", "{json}");
    assert_eq!(queued(&real.notify_queue).await, 1);
}

#[tokio::test]
async fn a_missing_dynamodb_table_answers_503_and_queues_nothing() {
    let Some(app) = klaxon_tests::aws_app(CONFIG).await else { return };
    let mut state = app.state.clone();
    let endpoint = klaxon_tests::aws_endpoint().unwrap();
    let sdk = klaxon_tests::aws_sdk_config(&endpoint).await;
    state.store =
        Arc::new(klaxon::store::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "no-such-table"));
    let (status, json) = alert(&state, "event=ALERT&coreid=d1&published_at=t1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(queued(&app.state.notify_queue).await, 0);
}

#[tokio::test]
async fn with_the_queue_down_the_alert_is_accepted_and_the_sweep_queues_its_job_later() {
    let app = klaxon_tests::embedded_app(CONFIG).await.unwrap();
    let real = app.state.clone();
    let mut degraded = real.clone();
    degraded.notify_queue = Arc::new(DownQueue);

    let (status, json) = alert(&degraded, "event=ALERT&coreid=d1&published_at=t1").await;
    assert_eq!((status, json["alert_id"].as_str()), (StatusCode::OK, Some("ALR-1")), "accepted: the job is durable");
    let (_, json) = alert(&degraded, "event=ALERT&coreid=d1&published_at=t2").await;
    assert_eq!(json["occurrences"], 2);
    assert_eq!(real.outbox().pending().await.unwrap(), 2, "both jobs wait in the outbox");
    assert_eq!(queued(&real.notify_queue).await, 0);

    // Young jobs are left to their request; old enough ones are swept, in order.
    let outbox = Outbox::new(real.store.clone(), real.notify_queue.clone());
    assert_eq!(outbox.sweep(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(outbox.sweep(Duration::ZERO).await.unwrap(), 2);
    assert_eq!(real.outbox().pending().await.unwrap(), 0);
    let jobs = real.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
    let ids: Vec<_> = jobs.iter().map(|m| klaxon::notify::Job::parse(&m.body).unwrap().id().to_string()).collect();
    assert_eq!(ids, ["ALR-1#0000000001", "ALR-1#0000000002"]);
}

#[tokio::test]
async fn the_notifier_lambda_sweeps_the_outbox_on_a_schedule_tick() {
    let app = klaxon_tests::embedded_app(CONFIG).await.unwrap();
    let mut degraded = app.state.clone();
    degraded.notify_queue = Arc::new(DownQueue);
    alert(&degraded, "event=ALERT&coreid=d1&published_at=t1").await;

    let tick: serde_json::Value = serde_json::from_slice(&klaxon_tests::fixture("events/schedule-tick.json")).unwrap();
    let outbox = app.state.outbox();
    // The job is younger than the Lambda sweep's minimum age, so this tick leaves it alone...
    let out =
        klaxon::notify::lambda::handle_event(&app.state.notifier(), &outbox, &[], &app.state.tick(), tick.clone())
            .await
            .unwrap();
    assert_eq!(out, serde_json::json!({"swept": 0, "mirrored": 0, "escalated": 0, "windows_closed": 0}));
    // ...and an unknown event is refused with a reason.
    let err = klaxon::notify::lambda::handle_event(
        &app.state.notifier(),
        &outbox,
        &[],
        &app.state.tick(),
        serde_json::json!({"hello": 1}),
    )
    .await;
    assert!(err.unwrap_err().to_string().contains("neither an SQS batch nor a schedule tick"));
    // An SQS batch (its jobs are about ALR-1, which exists) goes to the batch handler.
    let sqs: serde_json::Value = serde_json::from_slice(&klaxon_tests::fixture("events/sqs-fifo-notify.json")).unwrap();
    let out = klaxon::notify::lambda::handle_event(&app.state.notifier(), &outbox, &[], &app.state.tick(), sqs)
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    for job in ["ALR-1:triggered", "ALR-1:acknowledged", "ALR-1:resolved"] {
        assert!(app.state.deliveries().get(job).await.unwrap().is_some(), "{job} was handled");
    }
}

/// Another process holds klaxon.db's write lock (a backup, `sqlite3` left open, a second
/// Klaxon): the notifier's workers wait on it too, yet an intake answers 503 within its deadline
/// and `/healthz` within its own, with a fixed message, and nothing is written. (Before, a chat
/// trigger waited 15 s behind the queue workers and `/healthz` did not answer within 10 s.)
///
/// The bounds checked are the deadlines the handlers promise (a contract that Particle's 20 s
/// timeout and monitors rely on), with a margin for a loaded machine: not a speed measurement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_database_gets_a_quick_503_and_healthz_answers_in_time() {
    let app = klaxon_tests::embedded_app(CONFIG).await.unwrap();
    let state = app.state.clone();
    let klaxon::app::StorageDescription::Embedded { path } = state.storage.clone() else { unreachable!() };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = klaxon::notify::worker::Worker {
        name: "notify",
        queue: state.notify_queue.clone(),
        handler: Arc::new(state.notifier()),
        visibility: Duration::from_secs(30),
    };
    let worker = tokio::spawn(worker.run(stop_rx));

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // the worker is now stuck on the lock

    let started = std::time::Instant::now();
    let (status, json) = alert(&state, "event=ALERT&coreid=d1&published_at=t1&PARTICLE_EVENT_ID=locked-1").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Klaxon could not record this: its store is unavailable"), "{message}");
    assert!(!message.contains("klaxon.db") && !message.contains("locked"), "no backend detail: {message}");
    let promised = klaxon::http::INTAKE_DEADLINE + Duration::from_secs(1);
    assert!(took < promised, "intake answered after {took:?}; promised {:?}", klaxon::http::INTAKE_DEADLINE);

    let started = std::time::Instant::now();
    let res =
        klaxon::http::all(state.clone()).oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(body["request_id"].is_string(), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("the store is not reachable (request id"), "{body}");
    assert!(!body.to_string().contains("klaxon.db"), "no path, no backend detail: {body}");
    assert!(took < klaxon::http::HEALTH_DEADLINE + Duration::from_millis(700), "healthz took {took:?}");

    other.execute_batch("ROLLBACK").unwrap();
    let (status, json) = alert(&state, "event=ALERT&coreid=d1&published_at=t1&PARTICLE_EVENT_ID=locked-1").await;
    assert_eq!(
        (status, json["alert_id"].as_str(), json["deduplicated"].as_bool()),
        (StatusCode::OK, Some("ALR-1"), Some(false)),
        "the 503 wrote nothing; the retry is new"
    );
    let _ = stop_tx.send(true);
    worker.await.unwrap();
}
