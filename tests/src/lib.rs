//! Shared rig for the workspace tests: adapters for both backends, and the AWS endpoint.
//!
//! The AWS adapters run against moto server, which `tests/run.sh` starts and announces through
//! `KLAXON_TEST_AWS_ENDPOINT`. Without it a local `cargo test` skips the AWS cases with a
//! printed notice; under `CI=true` a missing endpoint fails the run instead.

pub mod fake_mattermost;
pub mod faulty;
pub mod point_partitions;
pub mod queue_contract;
pub mod store_contract;

use klaxon::embedded::Db;
use klaxon::queue::sqlite::{Redrive, SqliteQueue};
use klaxon::queue::sqs::SqsQueue;
use klaxon::queue::{Queue, QueueKind};
use klaxon::store::Store;
use klaxon::store::dynamodb::DynamoStore;
use klaxon::store::sqlite::SqliteStore;
use std::sync::Arc;
use tempfile::TempDir;

pub const ENDPOINT_VAR: &str = "KLAXON_TEST_AWS_ENDPOINT";

/// The moto endpoint, or `None` (after a notice) when AWS tests should be skipped.
///
/// # Panics
/// Under `CI=true` when the endpoint is missing: CI must never silently skip a suite.
pub fn aws_endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{ENDPOINT_VAR} is not set but CI=true: run the suite with tests/run.sh, which starts moto server")
        }
        _ => {
            eprintln!(
                "notice: {ENDPOINT_VAR} is not set, skipping an AWS adapter test (tests/run.sh starts moto and sets it)"
            );
            None
        }
    }
}

pub async fn aws_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "klaxon-tests"))
        .load()
        .await
}

/// A name no other test in this run uses: tests share one moto server and run in parallel.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A store plus whatever keeps it alive (the temporary directory for SQLite).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

pub fn temp_db() -> (Db, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory for the test database");
    let db = Db::open_in(dir.path()).expect("open test database");
    (db, dir)
}

pub async fn sqlite_store() -> Option<TestStore> {
    let (db, dir) = temp_db();
    let store = SqliteStore::new(db).expect("sqlite store");
    Some(TestStore { store: Arc::new(store), _dir: Some(dir) })
}

/// [`sqlite_store`] with every partition a point partition ([`point_partitions`]).
pub async fn sqlite_point_store() -> Option<TestStore> {
    let t = sqlite_store().await?;
    Some(TestStore { store: Arc::new(point_partitions::InPointPartitions(t.store)), _dir: t._dir })
}

/// [`dynamo_store`] with every partition a point partition ([`point_partitions`]).
pub async fn dynamo_point_store() -> Option<TestStore> {
    let t = dynamo_store().await?;
    Some(TestStore { store: Arc::new(point_partitions::InPointPartitions(t.store)), _dir: t._dir })
}

pub async fn dynamo_store() -> Option<TestStore> {
    let endpoint = aws_endpoint()?;
    let client = aws_sdk_dynamodb::Client::new(&aws_sdk_config(&endpoint).await);
    let table = unique_name("klaxon-test");
    DynamoStore::create_table(&client, &table).await.expect("create table on moto");
    Some(TestStore { store: Arc::new(DynamoStore::new(client, table)), _dir: None })
}

/// A queue with its dead-letter queue.
pub struct TestQueue {
    pub queue: Arc<dyn Queue>,
    pub dead_letters: Arc<dyn Queue>,
    _dir: Option<TempDir>,
}

pub async fn sqlite_queue(kind: QueueKind, max_receives: u32) -> Option<TestQueue> {
    let (db, dir) = temp_db();
    let redrive = Redrive { dead_letter_queue: "q-dlq".into(), max_receives };
    let queue = SqliteQueue::open(db.clone(), "q", kind, Some(redrive)).expect("sqlite queue");
    let dead_letters = SqliteQueue::open(db, "q-dlq", kind, None).expect("sqlite dead-letter queue");
    Some(TestQueue { queue: Arc::new(queue), dead_letters: Arc::new(dead_letters), _dir: Some(dir) })
}

pub async fn sqs_queue(kind: QueueKind, max_receives: u32) -> Option<TestQueue> {
    let endpoint = aws_endpoint()?;
    let client = aws_sdk_sqs::Client::new(&aws_sdk_config(&endpoint).await);
    let mut name = unique_name("klaxon-test");
    if kind == QueueKind::Fifo {
        name.push_str(".fifo");
    }
    let (url, dlq_url) =
        SqsQueue::create_with_dead_letter(&client, &name, max_receives).await.expect("create queues on moto");
    Some(TestQueue {
        queue: Arc::new(SqsQueue::new(client.clone(), url)),
        dead_letters: Arc::new(SqsQueue::new(client, dlq_url)),
        _dir: None,
    })
}

/// An AWS-backed application state pointing at `endpoint` (moto, or nothing at all), with a
/// table of the given name and queue URLs that need not exist.
pub async fn aws_state(endpoint: &str, table: &str) -> klaxon::app::AppState {
    let sdk = aws_sdk_config(endpoint).await;
    let empty = klaxon::config::Config::empty();
    klaxon::app::AppState::aws_with(&sdk, empty, table.into(), format!("{endpoint}/q.fifo"), format!("{endpoint}/t"))
}

/// An application built from a `klaxon.toml` text, plus what keeps its storage alive.
pub struct TestApp {
    pub state: klaxon::app::AppState,
    _dir: Option<TempDir>,
}

impl TestApp {
    /// Another state (e.g. another configuration) on the same storage as `app`.
    pub fn from_state(state: klaxon::app::AppState, app: TestApp) -> TestApp {
        TestApp { state, _dir: app._dir }
    }
}

fn config_from(text: &str) -> klaxon::config::Config {
    klaxon::config::Config::from_toml(text, "test klaxon.toml", &|_| None).expect("test configuration is valid")
}

pub async fn embedded_app(config: &str) -> Option<TestApp> {
    let (db, dir) = temp_db();
    let state = klaxon::app::AppState::embedded(config_from(config), db).expect("embedded state");
    Some(TestApp { state, _dir: Some(dir) })
}

/// DynamoDB and SQS on moto: a fresh table, FIFO notify queue and standard timer queue.
pub async fn aws_app(config: &str) -> Option<TestApp> {
    let endpoint = aws_endpoint()?;
    Some(aws_app_through(config, &endpoint, &endpoint).await)
}

/// An app on fresh moto resources (created at `endpoint`) whose clients talk to `clients_to`.
async fn aws_app_through(config: &str, endpoint: &str, clients_to: &str) -> TestApp {
    let sdk = aws_sdk_config(endpoint).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = unique_name("klaxon-app");
    DynamoStore::create_table(&dynamo, &table).await.expect("create table on moto");
    let notify_name = format!("{}.fifo", unique_name("klaxon-notify"));
    let (notify, _) = SqsQueue::create_with_dead_letter(&sqs, &notify_name, 5).await.expect("notify queue");
    let (timer, _) =
        SqsQueue::create_with_dead_letter(&sqs, &unique_name("klaxon-timer"), 5).await.expect("timer queue");
    let clients = aws_sdk_config(clients_to).await;
    let state = klaxon::app::AppState::aws_with(&clients, config_from(config), table, notify, timer);
    TestApp { state, _dir: None }
}

/// Like [`aws_app`], but every DynamoDB and SQS call goes through a fault-injecting proxy in
/// front of moto, which also logs them.
pub async fn aws_app_with_faults(config: &str) -> Option<(TestApp, faulty::FaultyDynamo)> {
    let endpoint = aws_endpoint()?;
    let proxy = faulty::FaultyDynamo::start(&endpoint).await;
    Some((aws_app_through(config, &endpoint, &proxy.url).await, proxy))
}

/// A DynamoDB store on a fresh table, reached through a fault-injecting proxy.
pub async fn faulty_dynamo_store() -> Option<(Arc<dyn Store>, faulty::FaultyDynamo)> {
    let endpoint = aws_endpoint()?;
    let direct = aws_sdk_dynamodb::Client::new(&aws_sdk_config(&endpoint).await);
    let table = unique_name("klaxon-faults");
    DynamoStore::create_table(&direct, &table).await.expect("create table on moto");
    let proxy = faulty::FaultyDynamo::start(&endpoint).await;
    let client = aws_sdk_dynamodb::Client::new(&aws_sdk_config(&proxy.url).await);
    Some((Arc::new(DynamoStore::new(client, table)), proxy))
}

/// Reads a fixture from `tests/fixtures/`.
pub fn fixture(path: &str) -> Vec<u8> {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// Runs the notifier over everything on the notify queue, batch by batch, as the worker does:
/// what succeeded is deleted; what failed stays queued (hidden for a second). Returns the
/// message ids that failed or were poisoned.
pub async fn drain_notify_queue(state: &klaxon::app::AppState) -> Vec<String> {
    use klaxon::queue::ReceiveOptions;
    let notifier = state.notifier();
    let mut failed = Vec::new();
    for _ in 0..100 {
        let got = state.notify_queue.receive(ReceiveOptions::new(10, std::time::Duration::from_secs(1))).await;
        let got = got.expect("receive from the notify queue");
        if got.is_empty() {
            break;
        }
        let records: Vec<klaxon::notify::Record> = got.iter().map(klaxon::notify::Record::from).collect();
        let report = klaxon::notify::handle_batch(&notifier, &records).await;
        for m in &got {
            if report.failed.contains(&m.message_id) || report.poisoned.contains(&m.message_id) {
                failed.push(m.message_id.clone());
            } else {
                state.notify_queue.delete(&m.receipt).await.expect("delete a finished message");
            }
        }
        if !failed.is_empty() {
            break;
        }
    }
    failed
}

/// One `#[tokio::test]` per case, for a test file with a rig: `$rig($factory)` builds it (and
/// answers `None` when the backend cannot be reached outside CI), then `super::$case(rig)` runs.
#[macro_export]
macro_rules! rig_tests {
    ($rig:path, $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(rig) = $rig($factory).await else { return };
                super::$case(rig).await;
            }
        )*
    };
}

/// Sends `req` through `klaxon serve`'s router on `state`: the status and the JSON answer
/// (`null` for an answer that is not JSON).
pub async fn route(
    state: &klaxon::app::AppState,
    req: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let res = klaxon::http::all(state.clone()).oneshot(req).await.expect("the router always answers");
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.expect("a readable body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}
