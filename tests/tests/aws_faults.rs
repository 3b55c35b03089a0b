//! The DynamoDB errors moto never produces, from a fault-injecting endpoint that speaks
//! DynamoDB's JSON protocol (tests/src/faulty.rs): how the adapter maps them, and what intake
//! answers when they happen.
//!
//! Where moto differs from AWS is written down in tests/src/store_contract.rs.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use klaxon::store::{Condition, Item, StoreError, Write};
use serde_json::{Value, json};
use tower::ServiceExt;

fn two_puts() -> Vec<Write> {
    vec![
        Write::Put { item: Item::new("p", "a", "a"), condition: Condition::Absent },
        Write::Put { item: Item::new("p", "b", "b"), condition: Condition::None },
    ]
}

#[tokio::test]
async fn a_transaction_cancelled_for_transaction_conflict_is_a_retryable_conflict() {
    let Some((store, proxy)) = klaxon_tests::faulty_dynamo_store().await else { return };
    proxy.cancel_next_transactions(1, &["None", "TransactionConflict"]);
    let err = store.transact(two_puts()).await.unwrap_err();
    assert!(matches!(&err, StoreError::Contended { sk, .. } if sk == "b"), "{err:?}");
    assert!(err.is_conflict(), "callers reload and retry: {err}");
    assert_eq!(store.get("p", "a").await.unwrap(), None, "nothing was written");
    store.transact(two_puts()).await.expect("the retry goes through");
    assert_eq!(store.get("p", "a").await.unwrap().unwrap().data, "a");
}

#[tokio::test]
async fn a_failed_condition_still_names_its_write_when_another_reason_is_listed_too() {
    let Some((store, proxy)) = klaxon_tests::faulty_dynamo_store().await else { return };
    proxy.cancel_next_transactions(1, &["TransactionConflict", "ConditionalCheckFailed"]);
    let err = store.transact(two_puts()).await.unwrap_err();
    assert!(matches!(err, StoreError::TransactionConflict { index: 1, .. }), "{err:?}");
}

#[tokio::test]
async fn single_item_writes_meeting_a_transaction_are_retryable_conflicts() {
    let Some((store, proxy)) = klaxon_tests::faulty_dynamo_store().await else { return };
    for op in ["PutItem", "DeleteItem", "UpdateItem"] {
        proxy.fail_next(op, 1, 400, "TransactionConflictException", json!({}));
    }
    let put = store.put(Item::new("p", "k", "x"), Condition::None).await.unwrap_err();
    let delete = store.delete("p", "k", Condition::None).await.unwrap_err();
    let increment = store.increment("counter#alert", "counter").await.unwrap_err();
    for err in [put, delete, increment] {
        assert!(matches!(err, StoreError::Contended { .. }), "{err:?}");
    }
    assert_eq!(store.increment("counter#alert", "counter").await.unwrap(), 1, "the retry counts from 1");
}

/// A delivery record that meets a transaction must not pass for "already delivered": the job
/// would be dropped. It is an error, and the job is retried.
#[tokio::test]
async fn a_delivery_record_meeting_a_transaction_is_an_error_not_a_duplicate() {
    let Some((store, proxy)) = klaxon_tests::faulty_dynamo_store().await else { return };
    let deliveries = klaxon::repo::deliveries::DeliveryRepo::new(store);
    let record = klaxon::repo::deliveries::DeliveryRecord {
        job_id: "ALR-1#0000000001".into(),
        at: jiff::Timestamp::now(),
        delivery: klaxon::repo::deliveries::Delivery::NotDelivered { channel: None, reason: "test".into() },
    };
    proxy.fail_next("PutItem", 1, 400, "TransactionConflictException", json!({}));
    assert!(deliveries.record(&record).await.is_err(), "not Ok(false)");
    assert!(deliveries.record(&record).await.unwrap(), "recorded on the retry");
    assert!(!deliveries.record(&record).await.unwrap(), "a real duplicate is still recognised");
}

#[tokio::test]
async fn throttling_and_access_denied_are_backend_failures_not_conflicts() {
    let Some((store, proxy)) = klaxon_tests::faulty_dynamo_store().await else { return };
    // The SDK retries throttling itself (3 attempts in standard mode) before giving up.
    proxy.fail_next("TransactWriteItems", 5, 400, "ThrottlingException", json!({}));
    let err = store.transact(two_puts()).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }) && !err.is_conflict(), "{err:?}");
    assert_eq!(proxy.calls("TransactWriteItems"), 3, "the SDK tried three times");
    proxy.fail_next(
        "GetItem",
        1,
        400,
        "AccessDeniedException",
        json!({"message": "User: arn:aws:sts::123456789012:assumed-role/klaxon-fn is not authorized"}),
    );
    let err = store.get("p", "a").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
}

const CONFIG: &str = r#"
version = 1
[[sources]]
id = "freezer"
kind = "particle"
token = "particle-key-0123456789"
"#;

async fn particle(state: &klaxon::app::AppState, body: &str) -> (StatusCode, Value) {
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", "Bearer particle-key-0123456789")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = klaxon::http::all(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Before the mapping, each of these was a 503 on AWS and the event was lost (Particle retries
/// once at most, Mattermost never).
#[tokio::test]
async fn intake_rides_out_transaction_conflicts_on_new_alerts_and_repeats() {
    let Some((app, proxy)) = klaxon_tests::aws_app_with_faults(CONFIG).await else { return };
    proxy.cancel_next_transactions(2, &["None", "TransactionConflict", "None"]);
    let (status, body) = particle(&app.state, "event=ALERT&coreid=dev1&published_at=t1").await;
    assert_eq!((status, body["alert_id"].as_str()), (StatusCode::OK, Some("ALR-1")), "{body}");
    assert_eq!(proxy.pending_faults(), 0, "both conflicts were met and retried");

    proxy.cancel_next_transactions(3, &["TransactionConflict", "None", "None"]);
    let (status, body) = particle(&app.state, "event=ALERT&coreid=dev1&published_at=t2").await;
    assert_eq!((status, body["occurrences"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    let alert = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.occurrences, 2, "the repeat counted once, despite three collisions");
    // The retried writes were never applied twice: one job per change.
    let jobs = app
        .state
        .notify_queue
        .receive(klaxon::queue::ReceiveOptions::new(10, std::time::Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
}

#[tokio::test]
async fn intake_answers_a_fixed_503_when_access_is_denied_and_keeps_the_detail_in_the_log() {
    let Some((app, proxy)) = klaxon_tests::aws_app_with_faults(CONFIG).await else { return };
    proxy.fail_next(
        "BatchGetItem",
        1,
        400,
        "AccessDeniedException",
        json!({"message": "User: arn:aws:sts::123456789012:assumed-role/klaxon-fn is not authorized to perform: dynamodb:BatchGetItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/klaxon"}),
    );
    let (status, body) = particle(&app.state, "event=ALERT&coreid=dev1&published_at=t1&PARTICLE_EVENT_ID=e1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = body.to_string();
    assert!(!text.contains("arn:aws") && !text.contains("123456789012") && !text.contains("AccessDenied"), "{text}");
    assert!(body["request_id"].as_str().is_some_and(|id| body["error"]["message"].as_str().unwrap().contains(id)));
    // Nothing half-exists, and the retry goes through.
    let (status, body) = particle(&app.state, "event=ALERT&coreid=dev1&published_at=t1&PARTICLE_EVENT_ID=e1").await;
    assert_eq!(
        (status, body["alert_id"].as_str(), body["deduplicated"].as_bool()),
        (StatusCode::OK, Some("ALR-1"), Some(false))
    );
}

/// The round trips of intake's request path on AWS, logged at the proxy that every DynamoDB
/// and SQS call goes through: a new alert waits for at most 3 one after another (calls made
/// side by side count once), as the storms issue asks.
#[tokio::test]
async fn a_new_alert_costs_at_most_three_sequential_round_trips() {
    let Some((app, proxy)) = klaxon_tests::aws_app_with_faults(CONFIG).await else { return };
    let mut per_request = Vec::new();
    for (i, device) in ["dev1", "dev2", "dev1"].iter().enumerate() {
        let mark = proxy.log_len();
        let body = format!("event=ALERT&coreid={device}&published_at=t{i}&PARTICLE_EVENT_ID=rt{i}");
        let (status, json) = particle(&app.state, &body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let calls = proxy.calls_since(mark);
        let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
        println!(
            "request {i}: {} sequential round trips, calls {ops:?}",
            klaxon_tests::faulty::sequential_round_trips(&calls)
        );
        per_request.push((klaxon_tests::faulty::sequential_round_trips(&calls), ops.len(), json));
    }
    // The first new alert also takes this process's first block of numbers, beside its reads.
    let (trips, calls, json) = &per_request[0];
    assert_eq!(json["alert_id"], "ALR-1");
    assert!(*trips <= 3, "the first new alert waited for {trips} round trips");
    assert!(*calls <= 5, "{calls} calls");
    let (trips, calls, json) = &per_request[1];
    assert_eq!(json["alert_id"], "ALR-2");
    assert!(*trips <= 3, "a new alert waited for {trips} round trips");
    assert!(
        *calls <= 4,
        "a new alert with numbers in hand: batch read, windows query, transaction, send: {calls} calls"
    );
    let (trips, _, json) = &per_request[2];
    assert_eq!(json["occurrences"], 2, "the third request repeats the first alert");
    // A repeat also reads its alert, and sends its job after whatever of its subject is still
    // in the outbox (read first, so that it overtakes nothing; SQS drops the copy of the job it
    // has): 6 today, bounded so it cannot silently grow.
    assert!(*trips <= 6, "a repeat waited for {trips} round trips");

    // Nothing was deleted on the request path: the notifier removes a job's outbox item once it
    // has handled it, and then the outbox is empty.
    assert_eq!(app.state.outbox().pending().await.unwrap(), 3, "three jobs wait in the outbox");
    let mark = proxy.log_len();
    klaxon_tests::drain_notify_queue(&app.state).await;
    let notifier: Vec<String> = proxy.calls_since(mark).into_iter().map(|c| c.operation).collect();
    println!("notifier, 3 jobs (no Mattermost configured): {notifier:?}");
    // Each job reads its delivery record, its alert and its card in one batch.
    let reads: Vec<&String> = notifier.iter().filter(|op| op.ends_with("GetItem")).collect();
    assert_eq!(reads, ["BatchGetItem"; 3], "one batch read per job: {notifier:?}");
    assert_eq!(app.state.outbox().pending().await.unwrap(), 0, "the notifier cleared what it handled");
    let mut sizes = Vec::new();
    for id in ["ALR-1", "ALR-2"] {
        let item = app.state.store.get(&format!("alert#{id}"), "alert").await.unwrap().unwrap();
        sizes.push(klaxon::store::item_size(&item));
    }
    println!("alert item sizes (bytes, as DynamoDB counts them): {sizes:?}");
}

/// Under throttling DynamoDB answers part of a `BatchGetItem` and returns the rest as
/// `UnprocessedKeys` (moto never does): the store asks again for those, and gives up with an
/// error, not with items missing, when they stay unprocessed.
#[tokio::test]
async fn a_batch_read_asks_again_for_unprocessed_keys_and_fails_if_they_stay() {
    let Some((app, proxy)) = klaxon_tests::aws_app_with_faults(CONFIG).await else { return };
    let klaxon::app::StorageDescription::Aws { table } = app.state.storage.clone() else { unreachable!() };
    let store = app.state.store.clone();
    store.put(Item::new("a", "1", "first"), Condition::Absent).await.unwrap();
    store.put(Item::new("b", "1", "second"), Condition::Absent).await.unwrap();
    let keys = vec![
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "1".to_string()),
        ("c".to_string(), "1".to_string()),
    ];
    let unprocessed = json!({
        "Responses": { table.clone(): [] },
        "UnprocessedKeys": { table.clone(): {
            "Keys": [ { "pk": { "S": "a" }, "sk": { "S": "1" } }, { "pk": { "S": "b" }, "sk": { "S": "1" } } ],
            "ConsistentRead": true
        } }
    });
    let before = proxy.calls("BatchGetItem");
    proxy.fail_next("BatchGetItem", 1, 200, "BatchGetItemOutput", unprocessed.clone());
    let got = store.get_many(&keys).await.unwrap();
    let data: Vec<Option<&str>> = got.iter().map(|i| i.as_ref().map(|i| i.data.as_str())).collect();
    assert_eq!(data, [Some("first"), Some("second"), None], "asked again, in the order asked");
    assert_eq!(proxy.calls("BatchGetItem") - before, 2);

    proxy.fail_next("BatchGetItem", 10, 200, "BatchGetItemOutput", unprocessed);
    let err = store.get_many(&keys).await.unwrap_err();
    assert!(err.to_string().contains("unprocessed"), "{err}");
    assert_eq!(proxy.pending_faults(), 0, "every attempt was made");
}

/// What the notifier does on AWS for a new alert whose card it posts (bot mode), counted at the
/// proxy every DynamoDB and SQS call goes through: the README's cost table takes its notifier
/// row from here.
#[tokio::test]
async fn a_new_alerts_card_costs_one_batch_read_and_counted_writes_on_aws() {
    use klaxon_tests::fake_mattermost::{BOT_TOKEN, BOT_USER_ID, FakeMattermost};
    const OPS: &str = "0psch4nnel0psch4nnel0psch4";
    let bot = FakeMattermost::start().await;
    bot.add_bot_to(OPS);
    let config = format!(
        r#"{CONFIG}
[server]
public_url = "https://klaxon.example.com"
signing_secret = "0123456789abcdef0123456789abcdef"
[mattermost]
url = "{}"
bot_token = "{BOT_TOKEN}"
bot_user_id = "{BOT_USER_ID}"
[channels.ops]
channel_id = "{OPS}"
[routing]
default = "ops"
"#,
        bot.url
    );
    let Some((app, proxy)) = klaxon_tests::aws_app_with_faults(&config).await else { return };
    let (status, json) = particle(&app.state, "event=ALERT&coreid=dev1&published_at=t0").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let mark = proxy.log_len();
    assert!(klaxon_tests::drain_notify_queue(&app.state).await.is_empty(), "the job succeeded");
    assert_eq!(bot.roots_in(OPS).len(), 1, "the card was posted");
    let ops: Vec<String> = proxy.calls_since(mark).into_iter().map(|c| c.operation).collect();
    println!("notifier, 1 new alert with its card: {ops:?}");
    // DynamoDB: the delivery record, alert and card in one batch read; then the card's claim,
    // the card with its post id, the delivery record, and the outbox copy's delete. (SQS: the
    // receives and the delete, in batches of 10 on Lambda and in `klaxon serve`.)
    let dynamo: Vec<&str> = ops.iter().map(String::as_str).filter(|op| !op.ends_with("Message")).collect();
    assert_eq!(dynamo, ["BatchGetItem", "PutItem", "PutItem", "PutItem", "DeleteItem"]);
}
