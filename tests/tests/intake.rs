//! Alert intake through `klaxon serve`'s router, on the embedded store and on DynamoDB + SQS
//! (moto): every rule of Mattermost trigger words and Particle webhooks, happy and unhappy.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use klaxon::domain::{AlertStatus, Urgency};
use klaxon::notify::Job;
use klaxon::queue::ReceiveOptions;
use klaxon_tests::{TestApp, fixture};
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

const CONFIG: &str = r#"
version = 1
[mattermost]
url = "https://chat.example.com"
bot_user_id = "b0tb0tb0tb0tb0tb0tb0tb0tb0"
webhooks = { ops = "https://chat.example.com/hooks/abc" }
[channels.alerts]
webhook = "ops"
[channels.oncall]
webhook = "ops"
[routing]
default = "alerts"
[[routing.routes]]
events = ["alert.triggered"]
min_urgency = "critical"
channel = "oncall"
[[sources]]
id = "chat"
kind = "mattermost"
token = "7kmxqf1b9jdzfcbj1d3u7uwqyo"
default_urgency = "medium"
ignore_user_ids = ["1gn0red1gn0red1gn0red1gn0r"]
[[sources]]
id = "quiet-chat"
kind = "mattermost"
token = "7kmxqf1b9jdzfcbj1d3u7uwqyo"
chat_actions = false
[[sources]]
id = "freezer"
kind = "particle"
token = "particle-key-0123456789"
default_urgency = "critical"
grouping_window = "10m"
summary_template = "{{event}} from {{coreid}}: {{data.temp}} °C"
[[sources]]
id = "lab"
kind = "particle"
insecure = true
grouping_window = "1s"
[[sources]]
id = "ops-chat"
kind = "mattermost"
token = "opschat-token-0123456789abc"
act_on = ["freezer"]
[[sources]]
id = "open-chat"
kind = "mattermost"
insecure = true
"#;

const MM_TOKEN: &str = "7kmxqf1b9jdzfcbj1d3u7uwqyo";
const KEY: &str = "particle-key-0123456789";

async fn send(app: &TestApp, req: Request<Body>) -> (StatusCode, Value) {
    let res = klaxon::http::all(app.state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

async fn post(app: &TestApp, uri: &str, content_type: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post(uri).header("content-type", content_type).body(body.into()).unwrap();
    send(app, req).await
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// A Mattermost form post like the fixture, with another post id and text.
fn mm_form(post_id: &str, user: &str, text: &str) -> String {
    mm_form_as(post_id, &format!("{user:0<26}")[..26], user, text)
}

fn mm_form_as(post_id: &str, user_id: &str, user: &str, text: &str) -> String {
    serde_urlencoded::to_string([
        ("channel_id", "4xp9fdt2pjrnbqkxhq8w1ctmhe"),
        ("channel_name", "town-square"),
        ("file_ids", ""),
        ("post_id", post_id),
        ("team_domain", "acme"),
        ("team_id", "oiw6xsg1uigqxqzfoinhf8d3ae"),
        ("text", text),
        ("timestamp", "1795435200"),
        ("token", MM_TOKEN),
        ("trigger_word", "#alert"),
        ("user_id", user_id),
        ("user_name", user),
    ])
    .unwrap()
}

async fn particle(app: &TestApp, source: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::post(format!("/hooks/particle/{source}"))
        .header("content-type", FORM)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, req).await
}

async fn queued(app: &TestApp) -> Vec<Job> {
    let mut jobs = Vec::new();
    for _ in 0..5 {
        let got = app.state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap();
        if got.is_empty() {
            break;
        }
        jobs.extend(got.iter().map(|m| Job::parse(&m.body).unwrap()));
    }
    jobs
}

fn events(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| match j {
            Job::Notify(n) => format!("{} {}", n.subject.id(), n.event),
        })
        .collect()
}

async fn nothing_stored(app: &TestApp) {
    assert!(app.state.alerts().get("ALR-1").await.unwrap().is_none(), "no alert was created");
    assert_eq!(app.state.outbox().pending().await.unwrap(), 0, "no job is pending");
    assert!(queued(app).await.is_empty(), "no job was queued");
}

macro_rules! intake_tests {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(app) = $factory(super::CONFIG).await else { return };
                super::$case(app).await;
            }
        )*
    };
}

macro_rules! all_cases {
    ($factory:path) => {
        intake_tests!($factory;
            mattermost_form_trigger_creates_an_alert_queues_its_job_and_replies_in_the_thread,
            mattermost_json_trigger_with_ms_timestamp_works_the_same,
            the_same_post_twice_creates_one_alert,
            mattermost_tokens_are_checked_and_failures_change_nothing,
            unknown_sources_and_wrong_kinds_are_404,
            posts_by_the_bot_and_ignored_users_change_nothing,
            malformed_mattermost_requests_get_exact_errors,
            ack_and_resolve_from_chat_act_on_the_alert_and_say_who_was_first,
            chat_actions_can_be_turned_off,
            mattermost_repeats_within_the_window_are_grouped,
            urgency_words_must_be_whole_words,
            particle_default_form_and_product_json_create_alerts_from_templates,
            particle_key_in_header_or_url,
            particle_unmapped_events_are_ignored_with_200,
            particle_repeats_group_and_redeliveries_change_nothing,
            delivery_records_sit_beside_the_open_alert_index_and_older_ones_still_count,
            particle_resolve_closes_the_open_alert_or_says_there_is_none,
            particle_alert_after_the_window_opens_a_new_alert,
            malformed_particle_requests_get_exact_errors,
            concurrent_triggers_for_one_key_make_one_alert,
            a_flood_of_repeats_is_applied_together_and_each_gets_its_own_answer,
            the_same_delivery_arriving_concurrently_counts_once,
            chat_actions_reach_only_the_alerts_a_source_may_act_on,
            insecure_sources_raise_alerts_but_never_act,
            a_verb_without_an_alert_id_answers_with_usage_and_creates_nothing,
            a_repeat_naming_a_higher_urgency_raises_it_and_is_routed_as_that_urgency,
            every_refusal_to_mattermost_says_what_happened_in_text,
            a_wrong_method_gets_the_json_error,
            oversized_ids_and_texts_get_the_same_answer_on_both_backends,
            two_hundred_simultaneous_new_alerts_all_succeed_with_distinct_ids,
            repeats_and_redeliveries_between_new_alerts_leave_no_gap_in_their_numbers,
            sixty_four_simultaneous_repeats_of_one_alert_all_count);
    };
}

mod sqlite {
    all_cases!(klaxon_tests::embedded_app);
}

mod aws {
    all_cases!(klaxon_tests::aws_app);
}

async fn mattermost_form_trigger_creates_an_alert_queues_its_job_and_replies_in_the_thread(app: TestApp) {
    let (status, body) = post(&app, "/hooks/mattermost/chat", FORM, fixture("mattermost/outgoing-webhook.form")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response_type"], "comment");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("**ALR-1**") && text.contains("**critical**") && text.contains("`oncall`"), "{text}");

    let alert = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.summary, "checkout returns 500s");
    assert_eq!(alert.urgency, Urgency::Critical);
    assert!(alert.details.starts_with("since the 12:00 deploy"), "{}", alert.details);
    assert!(alert.details.contains("@alice in ~town-square"), "{}", alert.details);
    assert_eq!(events(&queued(&app).await), ["ALR-1 alert.triggered"], "queued at once");
    // On the embedded store the job was queued by the alert's own transaction; on DynamoDB its
    // outbox copy stays until the notifier has handled it.
    let kept = usize::from(app.state.storage.kind() == "aws");
    assert_eq!(app.state.outbox().pending().await.unwrap(), kept);
}

async fn mattermost_json_trigger_with_ms_timestamp_works_the_same(app: TestApp) {
    let (status, body) = post(
        &app,
        "/hooks/mattermost/chat",
        "application/json; charset=utf-8",
        fixture("mattermost/outgoing-webhook.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["klaxon"]["alert_id"], "ALR-1");
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.summary, "checkout returns 500s");
}

async fn the_same_post_twice_creates_one_alert(app: TestApp) {
    let form = fixture("mattermost/outgoing-webhook.form");
    post(&app, "/hooks/mattermost/chat", FORM, form.clone()).await;
    let (status, body) = post(&app, "/hooks/mattermost/chat", FORM, form).await;
    assert_eq!(status, StatusCode::OK);
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("This post was already handled.") && text.contains("ALR-1"), "{text}");
    assert_eq!(body["klaxon"]["deduplicated"], true);
    assert!(app.state.alerts().get("ALR-2").await.unwrap().is_none());
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.occurrences, 1);
    assert_eq!(queued(&app).await.len(), 1);
}

async fn mattermost_tokens_are_checked_and_failures_change_nothing(app: TestApp) {
    let good = String::from_utf8(fixture("mattermost/outgoing-webhook.form")).unwrap();
    let wrong = good.replace(MM_TOKEN, "7kmxqf1b9jdzfcbj1d3u7uwqyX");
    let (status, body) = post(&app, "/hooks/mattermost/chat", FORM, wrong).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("wrong_token")));
    let missing = good.replace(&format!("&token={MM_TOKEN}"), "");
    let (status, body) = post(&app, "/hooks/mattermost/chat", FORM, missing).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));
    assert!(!body.to_string().contains(MM_TOKEN), "errors never echo the token");
    nothing_stored(&app).await;
}

async fn unknown_sources_and_wrong_kinds_are_404(app: TestApp) {
    let form = fixture("mattermost/outgoing-webhook.form");
    let (status, body) = post(&app, "/hooks/mattermost/nope", FORM, form.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_source");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"nope\"") && !message.contains("quiet-chat"), "never lists the sources: {body}");
    assert_eq!(body["text"].as_str(), Some(message), "Mattermost shows only text");
    let (status, _) = post(&app, "/hooks/mattermost/freezer", FORM, form).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a Particle source is not a Mattermost source");
    let (status, _) = particle(&app, "chat", "event=ALERT").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    nothing_stored(&app).await;
}

async fn posts_by_the_bot_and_ignored_users_change_nothing(app: TestApp) {
    for user in ["b0tb0tb0tb0tb0tb0tb0tb0tb0", "1gn0red1gn0red1gn0red1gn0r"] {
        let body = mm_form_as("p-loop", user, "klaxon", "#alert critical loop");
        let (status, json) = post(&app, "/hooks/mattermost/chat", FORM, body).await;
        assert_eq!(
            (status, json.clone()),
            (StatusCode::OK, json!({})),
            "an empty object makes Mattermost post nothing"
        );
    }
    nothing_stored(&app).await;
}

async fn malformed_mattermost_requests_get_exact_errors(app: TestApp) {
    let (status, body) = post(&app, "/hooks/mattermost/chat", "text/plain", "hello").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type"))
    );
    // The token is checked before anything else of the body: a broken body without a readable
    // token is refused as unauthenticated, and tells nothing about the payload's shape.
    let (status, body) = post(&app, "/hooks/mattermost/chat", JSON, "{\"post_id\":").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));
    let (status, body) =
        post(&app, "/hooks/mattermost/chat", JSON, format!("{{\"token\":\"{MM_TOKEN}\",\"post_id\":5}}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("JSON body"), "{body}");
    let (status, body) =
        post(&app, "/hooks/mattermost/chat", FORM, format!("token={MM_TOKEN}&user_id=u&text=%23alert+x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("post_id"), "{body}");
    let (status, body) = post(&app, "/hooks/mattermost/chat", FORM, mm_form("p-empty", "alice", "#alert")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "empty_message");
    assert_eq!(body["response_type"], "comment", "the person who typed it sees why in the thread");
    let req = Request::post("/hooks/mattermost/chat")
        .header("content-type", FORM)
        .header("content-length", (klaxon::http::BODY_LIMIT + 1).to_string())
        .body(Body::from(vec![b'a'; klaxon::http::BODY_LIMIT + 1]))
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    nothing_stored(&app).await;
}

async fn ack_and_resolve_from_chat_act_on_the_alert_and_say_who_was_first(app: TestApp) {
    post(&app, "/hooks/mattermost/chat", FORM, mm_form("p1", "alice", "#alert high disk full on db-2")).await;
    let (_, body) = post(&app, "/hooks/mattermost/chat", FORM, mm_form("p2", "bob", "#alert ack alr-1")).await;
    assert_eq!(body["text"], "Alert **ALR-1** acknowledged by @bob.");
    let (_, body) = post(&app, "/hooks/mattermost/chat", FORM, mm_form("p3", "carol", "#alert ack ALR-1")).await;
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("Nothing changed: cannot acknowledge alert ALR-1") && text.contains("@bob"), "{text}");
    let (_, body) = post(&app, "/hooks/mattermost/chat", FORM, mm_form("p4", "carol", "#alert resolve ALR-1")).await;
    assert_eq!(body["text"], "Alert **ALR-1** resolved by @carol.");
    let alert = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.status, AlertStatus::Resolved);
    let (_, body) = post(&app, "/hooks/mattermost/chat", FORM, mm_form("p5", "dan", "#alert resolve ALR-99")).await;
    assert!(body["text"].as_str().unwrap().contains("no alert ALR-99"), "{body}");
    assert_eq!(
        events(&queued(&app).await),
        ["ALR-1 alert.triggered", "ALR-1 alert.acknowledged", "ALR-1 alert.resolved"],
        "one job per change, in order"
    );
}

async fn chat_actions_can_be_turned_off(app: TestApp) {
    post(&app, "/hooks/mattermost/quiet-chat", FORM, mm_form("q1", "alice", "#alert db down")).await;
    let (status, body) =
        post(&app, "/hooks/mattermost/quiet-chat", FORM, mm_form("q2", "bob", "#alert resolve ALR-1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "chat_actions_disabled");
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.status, AlertStatus::Open);
}

async fn mattermost_repeats_within_the_window_are_grouped(app: TestApp) {
    post(&app, "/hooks/mattermost/chat", FORM, mm_form("g1", "alice", "#alert Checkout is slow")).await;
    let (_, body) = post(&app, "/hooks/mattermost/chat", FORM, mm_form("g2", "bob", "#alert checkout  is SLOW")).await;
    let text = body["text"].as_str().unwrap();
    assert_eq!(
        text,
        "Grouped into open alert **ALR-1** (now 2 occurrences, urgency **medium**). Notifications go to `alerts`."
    );
    assert!(app.state.alerts().get("ALR-2").await.unwrap().is_none());
    assert_eq!(events(&queued(&app).await), ["ALR-1 alert.triggered", "ALR-1 alert.repeated"]);
}

async fn urgency_words_must_be_whole_words(app: TestApp) {
    post(&app, "/hooks/mattermost/chat", FORM, mm_form("u1", "alice", "#alert slow response on the highway")).await;
    post(&app, "/hooks/mattermost/chat", FORM, mm_form("u2", "alice", "#alert sev2 payments lagging")).await;
    let first = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(
        (first.urgency, first.summary.as_str()),
        (Urgency::Medium, "slow response on the highway"),
        "source default"
    );
    let second = app.state.alerts().get("ALR-2").await.unwrap().unwrap().value;
    assert_eq!((second.urgency, second.summary.as_str()), (Urgency::High, "payments lagging"));
}

async fn particle_default_form_and_product_json_create_alerts_from_templates(app: TestApp) {
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", FORM)
        .header("authorization", format!("Bearer {KEY}"))
        .header("user-agent", "ParticleBot/1.1 (https://docs.particle.io/webhooks)")
        .body(Body::from(fixture("particle/default.form")))
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"alert_id": "ALR-1", "status": "open", "deduplicated": false, "occurrences": 1}));
    let alert = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.summary, "ALERT from e00fce68f0a0c9b1d2e3f4a5: -3.5 °C");
    assert_eq!(alert.dedup_key, "e00fce68f0a0c9b1d2e3f4a5:alert");
    assert_eq!(alert.urgency, Urgency::Critical);

    let product = String::from_utf8(fixture("particle/product.json")).unwrap().replace("e00fce68", "f11fce68");
    let req = Request::post(format!("/hooks/particle/freezer?key={KEY}"))
        .header("content-type", JSON)
        .body(Body::from(product))
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!((status, body["alert_id"].as_str()), (StatusCode::OK, Some("ALR-2")), "{body}");
    assert_eq!(events(&queued(&app).await), ["ALR-1 alert.triggered", "ALR-2 alert.triggered"]);
}

async fn particle_key_in_header_or_url(app: TestApp) {
    let body = fixture("particle/default.form");
    let req = |uri: String, auth: Option<&str>| {
        let mut b = Request::post(uri).header("content-type", FORM);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(body.clone())).unwrap()
    };
    let (status, json) = send(&app, req("/hooks/particle/freezer".into(), None)).await;
    assert_eq!((status, json["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));
    let (status, _) = send(&app, req("/hooks/particle/freezer?key=wrong".into(), None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&app, req("/hooks/particle/freezer".into(), Some("Bearer wrong-key-0123456789"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    nothing_stored(&app).await;
    let (status, _) = send(&app, req(format!("/hooks/particle/freezer?key={KEY}"), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = send(&app, req("/hooks/particle/freezer".into(), Some(&format!("Bearer {KEY}")))).await;
    assert_eq!((status, json["deduplicated"].as_bool()), (StatusCode::OK, Some(true)), "same body again: a redelivery");
}

async fn particle_unmapped_events_are_ignored_with_200(app: TestApp) {
    let (status, body) =
        particle(&app, "freezer", "event=ALERTS&data=x&coreid=d1&published_at=2026-11-23T12%3A00%3A00Z").await;
    assert_eq!(status, StatusCode::OK, "never 4xx: Particle throttles the whole hostname on errors");
    assert_eq!(body["status"], "ignored");
    assert!(body["reason"].as_str().unwrap().contains("\"ALERTS\" is not mapped"), "{body}");
    nothing_stored(&app).await;
}

async fn particle_repeats_group_and_redeliveries_change_nothing(app: TestApp) {
    let at =
        |t: &str| format!("event=ALERT&data=%7B%22temp%22%3A-2%7D&coreid=dev7&published_at=2026-11-23T12%3A0{t}%3A00Z");
    particle(&app, "freezer", &at("0")).await;
    let (_, body) = particle(&app, "freezer", &at("1")).await;
    assert_eq!(body, json!({"alert_id": "ALR-1", "status": "open", "deduplicated": true, "occurrences": 2}));
    // The same delivery again (identical body): nothing changes.
    let (_, body) = particle(&app, "freezer", &at("1")).await;
    assert_eq!((body["deduplicated"].as_bool(), body["occurrences"].as_u64()), (Some(true), Some(2)));
    // With PARTICLE_EVENT_ID in the body, the id decides even if other fields differ.
    let with_id = |t: &str| format!("{}&PARTICLE_EVENT_ID=ev-42", at(t));
    let (_, body) = particle(&app, "freezer", &with_id("2")).await;
    assert_eq!(body["occurrences"], 3);
    let (_, body) = particle(&app, "freezer", &with_id("3")).await;
    assert_eq!((body["deduplicated"].as_bool(), body["occurrences"].as_u64()), (Some(true), Some(3)));
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.occurrences, 3);
    assert_eq!(events(&queued(&app).await), ["ALR-1 alert.triggered", "ALR-1 alert.repeated", "ALR-1 alert.repeated"]);
}

/// A delivery's answer is kept in the partition of its open-alert index entry (on the embedded
/// store: on the page that entry changes anyway). One kept where earlier versions kept it
/// (`seen#<source>#<delivery key>`) is still recognised, so an upgrade between a delivery and
/// its retry doubles nothing.
async fn delivery_records_sit_beside_the_open_alert_index_and_older_ones_still_count(app: TestApp) {
    let body =
        |id: &str| format!("event=ALERT&data=%7B%22temp%22%3A-2%7D&coreid=dev7&published_at=t0&PARTICLE_EVENT_ID={id}");
    let (status, _) = particle(&app, "freezer", &body("ev-1")).await;
    assert_eq!(status, StatusCode::OK);
    let store = &app.state.store;
    let records = store.query_prefix("open#freezer#dev7:alert", "seen#", None).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].data, "created|ALR-1|open|critical|1|0|");
    assert!(records[0].expires_at.is_some());
    assert!(store.get("open#freezer#dev7:alert", "open").await.unwrap().is_some());
    assert!(store.get("seen#freezer#event:ev-1", "seen").await.unwrap().is_none(), "nothing is written the old way");

    // An answer recorded the old way, before an upgrade: its retry gets that answer, and
    // changes nothing.
    let old = r#"{"outcome":"grouped","alert_id":"ALR-1","status":"open","urgency":"critical","occurrences":5,"deduplicated":true}"#;
    let expires = jiff::Timestamp::now().as_second() + 3600;
    let item = klaxon::store::Item::new("seen#freezer#event:ev-2", "seen", old).expiring_at(expires);
    store.put(item, klaxon::store::Condition::Absent).await.unwrap();
    let (status, answer) = particle(&app, "freezer", &body("ev-2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"alert_id": "ALR-1", "status": "open", "deduplicated": true, "occurrences": 5}));
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.occurrences, 1);
    assert_eq!(events(&queued(&app).await), ["ALR-1 alert.triggered"]);
    // A delivery not seen before is counted.
    let (_, answer) = particle(&app, "freezer", &body("ev-3")).await;
    assert_eq!(answer["occurrences"], 2);
}

async fn particle_resolve_closes_the_open_alert_or_says_there_is_none(app: TestApp) {
    let (status, body) = particle(&app, "freezer", "event=RESOLVE&coreid=dev7&published_at=t0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"alert_id": null, "status": "no open alert", "deduplicated": false, "occurrences": 0}));
    particle(&app, "freezer", "event=ALERT&coreid=dev7&published_at=t1").await;
    particle(&app, "freezer", "event=ALERT&coreid=other&published_at=t1").await;
    let (_, body) = particle(&app, "freezer", "event=RESOLVE&coreid=dev7&published_at=t2").await;
    assert_eq!((body["alert_id"].as_str(), body["status"].as_str()), (Some("ALR-1"), Some("resolved")));
    assert_eq!(
        app.state.alerts().get("ALR-2").await.unwrap().unwrap().value.status,
        AlertStatus::Open,
        "another device's alert"
    );
    let (_, body) = particle(&app, "freezer", "event=RESOLVE&coreid=dev7&published_at=t3").await;
    assert_eq!(body["status"], "no open alert");
}

async fn particle_alert_after_the_window_opens_a_new_alert(app: TestApp) {
    particle(&app, "lab", "event=ALERT&coreid=dev1&published_at=a").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, body) = particle(&app, "lab", "event=ALERT&coreid=dev1&published_at=b").await;
    assert_eq!((body["alert_id"].as_str(), body["deduplicated"].as_bool()), (Some("ALR-2"), Some(false)));
    let open = app.state.alerts().find_open("lab", "dev1:alert").await.unwrap().alert.unwrap().value;
    assert_eq!(open.id, "ALR-2", "the newest episode holds the key");
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.status, AlertStatus::Open);
}

async fn malformed_particle_requests_get_exact_errors(app: TestApp) {
    let (status, body) = particle(&app, "freezer", "data=x&coreid=d1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("field event"), "{body}");
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", "text/plain")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from("event=ALERT"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", JSON)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from("[\"ALERT\"]"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST);
    let (status, _) = particle(&app, "no-such-source", "event=ALERT").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    nothing_stored(&app).await;
}

/// Sends a Particle form post to source `freezer` on a task of its own (so that many run at
/// once): its status and JSON answer.
fn spawn_particle(app: &TestApp, body: String) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let state = app.state.clone();
    tokio::spawn(async move {
        let req = Request::post("/hooks/particle/freezer")
            .header("content-type", FORM)
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::from(body))
            .unwrap();
        klaxon_tests::route(&state, req).await
    })
}

async fn concurrent_triggers_for_one_key_make_one_alert(app: TestApp) {
    let calls: Vec<_> =
        (0..6).map(|i| spawn_particle(&app, format!("event=ALERT&coreid=race&published_at=t{i}"))).collect();
    for c in calls {
        assert_eq!(c.await.unwrap().0, StatusCode::OK);
    }
    let open = app.state.alerts().find_open("freezer", "race:alert").await.unwrap().alert.unwrap().value;
    assert_eq!(open.occurrences, 6, "every trigger counted once, in one alert");
    // Repeats that arrive together are applied as one change with one job, so there are 2 to
    // 6 jobs: the first announces the alert, the last its final revision.
    let jobs = queued(&app).await;
    let ids: Vec<&str> = jobs.iter().map(|j| j.id()).collect();
    assert!((2..=6).contains(&ids.len()), "{ids:?}");
    assert_eq!(ids[0], "ALR-1#0000000001");
    assert_eq!(ids.last().copied(), Some(format!("ALR-1#{:010}", open.revision).as_str()), "{ids:?}");
    assert!(events(&jobs)[1..].iter().all(|e| e.ends_with("alert.repeated")), "{:?}", events(&jobs));
}

/// Sixty-four senders repeating one alert at once: every request is answered 200 with its
/// own occurrence number (1 to 64, each once), the alert counts 64, every delivery is
/// remembered (a redelivery is answered as before), and far fewer jobs than requests are
/// queued (repeats applied together announce themselves once).
async fn a_flood_of_repeats_is_applied_together_and_each_gets_its_own_answer(app: TestApp) {
    let calls: Vec<_> = (0..64)
        .map(|i| spawn_particle(&app, format!("event=ALERT&coreid=flood&published_at=t{i}&PARTICLE_EVENT_ID=f{i}")))
        .collect();
    let mut counts = Vec::new();
    for c in calls {
        let (status, json) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{json}");
        counts.push(json["occurrences"].as_u64().unwrap());
    }
    counts.sort();
    assert_eq!(counts, (1..=64).collect::<Vec<u64>>(), "each request has its own occurrence");
    let open = app.state.alerts().find_open("freezer", "flood:alert").await.unwrap().alert.unwrap().value;
    assert_eq!(open.occurrences, 64);
    let (status, again) =
        particle(&app, "freezer", "event=ALERT&coreid=flood&published_at=t7&PARTICLE_EVENT_ID=f7").await;
    assert_eq!((status, again["deduplicated"].as_bool()), (StatusCode::OK, Some(true)), "{again}");
    assert_eq!(
        app.state.alerts().get(&open.id).await.unwrap().unwrap().value.occurrences,
        64,
        "the redelivery changed nothing"
    );
    let jobs = queued(&app).await;
    assert!(jobs.len() < 64, "repeats were applied together: {} jobs", jobs.len());
}

/// Ten triggers of a key with no alert yet, all queued before the first is applied: the first
/// opens the alert, the rest are repeats of it, and every one is answered (a request once went
/// unanswered, as a 503, when the batch it was in had to open the alert first).
#[tokio::test]
async fn requests_queued_before_their_alert_exists_are_all_answered_sqlite() {
    requests_queued_before_their_alert_exists_are_all_answered(klaxon_tests::embedded_app(CONFIG).await.unwrap()).await;
}

#[tokio::test]
async fn requests_queued_before_their_alert_exists_are_all_answered_aws() {
    let Some(app) = klaxon_tests::aws_app(CONFIG).await else { return };
    requests_queued_before_their_alert_exists_are_all_answered(app).await;
}

async fn requests_queued_before_their_alert_exists_are_all_answered(app: TestApp) {
    let intake = app.state.intake();
    let event = |i: usize| klaxon::ingest::AlertEvent {
        kind: klaxon::ingest::EventKind::Trigger,
        source: "freezer".into(),
        dedup_key: "queued:alert".into(),
        summary: "queued".into(),
        details: String::new(),
        urgency: Urgency::High,
        urgency_named: false,
        actor: klaxon::domain::Actor::System,
        at: jiff::Timestamp::now(),
        alert_id: None,
        delivery: Some(klaxon::ingest::DeliveryKey { key: format!("event:queued-{i}"), ttl_secs: 3600 }),
    };
    // `apply` queues its request before its first await, so on this single-threaded test
    // runtime (plain `#[tokio::test]`) all ten are queued before the task that applies them
    // (spawned by the first) runs.
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let (intake, event) = (intake.clone(), event(i));
            tokio::spawn(async move { intake.apply(&event).await })
        })
        .collect();
    let mut counts = Vec::new();
    for c in calls {
        counts.push(c.await.unwrap().expect("every request is answered").occurrences);
    }
    counts.sort();
    assert_eq!(counts, (1..=10).collect::<Vec<u32>>());
    let open = app.state.alerts().find_open("freezer", "queued:alert").await.unwrap().alert.unwrap().value;
    assert_eq!(open.occurrences, 10);
}

/// Particle delivers at least once and a proxy may retry while the first attempt is still
/// running: simultaneous copies of one delivery must count once, and every copy gets a 200.
async fn the_same_delivery_arriving_concurrently_counts_once(app: TestApp) {
    let particle_copy = || {
        let req = Request::post("/hooks/particle/freezer")
            .header("content-type", FORM)
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::from("event=ALERT&coreid=twin&published_at=t1&PARTICLE_EVENT_ID=ev-twin"))
            .unwrap();
        klaxon::http::all(app.state.clone()).oneshot(req)
    };
    let mattermost_copy = || {
        let req = Request::post("/hooks/mattermost/chat")
            .header("content-type", FORM)
            .body(Body::from(mm_form("twin-post", "alice", "#alert twin outage")))
            .unwrap();
        klaxon::http::all(app.state.clone()).oneshot(req)
    };
    for (copies, key) in [
        (futures_of(5, particle_copy), ("freezer", "twin:alert")),
        (futures_of(5, mattermost_copy), ("chat", "twin outage")),
    ] {
        let mut fresh = 0;
        for res in copies {
            let res = res.await.unwrap().unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            let deduplicated = body.get("klaxon").unwrap_or(&body)["deduplicated"].as_bool().unwrap();
            fresh += usize::from(!deduplicated);
        }
        assert_eq!(fresh, 1, "{key:?}: exactly one copy is the real one");
        let alert = app.state.alerts().find_open(key.0, key.1).await.unwrap().alert.unwrap().value;
        assert_eq!(alert.occurrences, 1, "{key:?}: copies do not count as repeats");
    }
    assert_eq!(queued(&app).await.len(), 2, "one job per alert, none per copy");
}

/// Starts `n` copies of a request at once and returns their handles.
fn futures_of<F, Fut>(
    n: usize,
    make: F,
) -> Vec<tokio::task::JoinHandle<Result<axum::response::Response, std::convert::Infallible>>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + 'static,
{
    (0..n).map(|_| tokio::spawn(make())).collect()
}

async fn mm(app: &TestApp, source: &str, token: &str, post_id: &str, user: &str, text: &str) -> (StatusCode, Value) {
    let form = mm_form(post_id, user, text).replace(MM_TOKEN, token);
    post(app, &format!("/hooks/mattermost/{source}"), FORM, form).await
}

async fn chat_actions_reach_only_the_alerts_a_source_may_act_on(app: TestApp) {
    particle(&app, "freezer", "event=ALERT&coreid=dev7&published_at=t0").await; // ALR-1, source freezer
    // `chat` may act only on its own alerts: a Particle alert is out of its reach.
    let (status, body) = mm(&app, "chat", MM_TOKEN, "s1", "mallory", "#alert resolve ALR-1").await;
    assert_eq!(status, StatusCode::OK);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Nothing changed: source `chat` may not act on ALR-1 (raised by source `freezer`)"),
        "{text}"
    );
    assert_eq!(app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.status, AlertStatus::Open);
    // `ops-chat` lists freezer in act_on.
    let (_, body) = mm(&app, "ops-chat", "opschat-token-0123456789abc", "s2", "bob", "#alert ack ALR-1").await;
    assert_eq!(body["text"], "Alert **ALR-1** acknowledged by @bob.");
    // ...and its own alerts, but not those of `chat`.
    mm(&app, "chat", MM_TOKEN, "s3", "alice", "#alert printer on fire").await; // ALR-2, source chat
    let (_, body) = mm(&app, "ops-chat", "opschat-token-0123456789abc", "s4", "bob", "#alert resolve ALR-2").await;
    assert!(body["text"].as_str().unwrap().contains("may not act on ALR-2"), "{body}");
    let (_, body) = mm(&app, "chat", MM_TOKEN, "s5", "alice", "#alert resolve ALR-2").await;
    assert_eq!(body["text"], "Alert **ALR-2** resolved by @alice.");
    assert_eq!(
        events(&queued(&app).await),
        ["ALR-1 alert.triggered", "ALR-1 alert.acknowledged", "ALR-2 alert.triggered", "ALR-2 alert.resolved"],
        "refusals queue nothing"
    );
}

async fn insecure_sources_raise_alerts_but_never_act(app: TestApp) {
    let (status, body) = mm(&app, "open-chat", "", "i1", "eve", "#alert anything goes").await;
    assert_eq!((status, body["klaxon"]["alert_id"].as_str()), (StatusCode::OK, Some("ALR-1")), "{body}");
    let (status, body) = mm(&app, "open-chat", "", "i2", "eve", "#alert resolve ALR-1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("insecure_source")));
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("Nothing changed: source `open-chat` accepts requests without a token")
    );
    // An insecure Particle source cannot resolve either; Particle still gets a 200.
    particle(&app, "lab", "event=ALERT&coreid=dev1&published_at=a").await;
    let (status, body) = particle(&app, "lab", "event=RESOLVE&coreid=dev1&published_at=b").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("open")), "{body}");
    assert!(body["note"].as_str().unwrap().contains("may not act"), "{body}");
    for id in ["ALR-1", "ALR-2"] {
        assert_eq!(app.state.alerts().get(id).await.unwrap().unwrap().value.status, AlertStatus::Open, "{id}");
    }
}

async fn a_verb_without_an_alert_id_answers_with_usage_and_creates_nothing(app: TestApp) {
    for (i, text) in ["#alert ack", "#alert resolve the dns issue", "#alert acknowledged"].iter().enumerate() {
        let (status, body) = mm(&app, "chat", MM_TOKEN, &format!("v{i}"), "alice", text).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("alert_id_missing")));
        let reply = body["text"].as_str().unwrap();
        assert!(
            reply.starts_with("Nothing changed: name the alert, e.g. `#alert ") && reply.contains("ALR-12"),
            "{reply}"
        );
    }
    nothing_stored(&app).await;
    // Punctuation after the id is how people write.
    mm(&app, "chat", MM_TOKEN, "v8", "alice", "#alert db down").await;
    let (_, body) = mm(&app, "chat", MM_TOKEN, "v9", "bob", "#alert ack ALR-1, on it").await;
    assert_eq!(body["text"], "Alert **ALR-1** acknowledged by @bob.");
    assert!(app.state.alerts().get("ALR-2").await.unwrap().is_none(), "no alert titled after the action");
}

async fn a_repeat_naming_a_higher_urgency_raises_it_and_is_routed_as_that_urgency(app: TestApp) {
    mm(&app, "chat", MM_TOKEN, "r1", "alice", "#alert disk full on db-2").await; // medium (default)
    let (_, body) = mm(&app, "chat", MM_TOKEN, "r2", "bob", "#alert disk full on db-2 [critical]").await;
    assert_eq!(
        body["text"],
        "Grouped into open alert **ALR-1** (now 2 occurrences); urgency raised from medium to **critical** by @bob. Notifications go to `oncall`."
    );
    // A lower urgency never lowers it, and a repeat with no urgency named keeps it.
    let (_, body) = mm(&app, "chat", MM_TOKEN, "r3", "carol", "#alert low disk full on db-2").await;
    assert!(body["text"].as_str().unwrap().contains("urgency **critical**"), "{body}");
    let alert = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!((alert.urgency, alert.occurrences), (Urgency::Critical, 3));
    let raised = alert.timeline.iter().find(|e| e.what == "urgency_raised").expect("recorded in the timeline");
    assert_eq!(raised.actor, klaxon::domain::Actor::user(format!("{:0<26}", "bob"), "bob"));
    assert_eq!(raised.note.as_deref(), Some("medium → critical"));
    assert_eq!(
        events(&queued(&app).await),
        ["ALR-1 alert.triggered", "ALR-1 alert.urgency_raised", "ALR-1 alert.repeated"]
    );
    // "not critical" on a later line is not a marker: nothing is raised.
    let (_, body) = mm(
        &app,
        "chat",
        MM_TOKEN,
        "r4",
        "dan",
        "#alert low priority: critical path dashboard stale\nnot critical, FYI",
    )
    .await;
    assert_eq!(body["klaxon"]["urgency"], "low", "{body}");
}

async fn every_refusal_to_mattermost_says_what_happened_in_text(app: TestApp) {
    let (status, body) = mm(&app, "chat", "7kmxqf1b9jdzfcbj1d3u7uwqyX", "t1", "alice", "#alert db down").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["text"],
        "this webhook's token does not match source `chat`; an admin must update klaxon.toml with the outgoing webhook's token"
    );
    assert_eq!(body["response_type"], "comment");
    let (_, body) = post(&app, "/hooks/mattermost/chat", "text/plain", "x").await;
    assert!(body["text"].as_str().unwrap().contains("not supported"), "{body}");
    let (_, body) = mm(&app, "quiet-chat", MM_TOKEN, "t2", "alice", "#alert ack ALR-1").await;
    assert!(body["text"].as_str().unwrap().contains("turned off"), "{body}");
    nothing_stored(&app).await;
}

async fn a_wrong_method_gets_the_json_error(app: TestApp) {
    for uri in ["/hooks/mattermost/chat", "/hooks/particle/freezer", "/chatops/dialog"] {
        let res =
            klaxon::http::all(app.state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(res.headers()["allow"], "POST");
        let body: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{uri}: {body}");
    }
    let req = Request::delete("/healthz").body(Body::empty()).unwrap();
    assert_eq!(send(&app, req).await.1["error"]["code"], "method_not_allowed");
}

/// DynamoDB refuses keys over 2 KB and items over 400 KB, SQLite takes anything: intake hashes
/// long ids and cuts long texts, so both backends give the same 200.
async fn oversized_ids_and_texts_get_the_same_answer_on_both_backends(app: TestApp) {
    let id = "e".repeat(2100);
    let body = format!("event=ALERT&coreid=dev-long&published_at=t1&PARTICLE_EVENT_ID={id}");
    let (status, first) = particle(&app, "freezer", &body).await;
    assert_eq!((status, first["alert_id"].as_str()), (StatusCode::OK, Some("ALR-1")), "{first}");
    let (status, again) = particle(&app, "freezer", &body).await;
    assert_eq!(
        (status, again["deduplicated"].as_bool(), again["occurrences"].as_u64()),
        (StatusCode::OK, Some(true), Some(1))
    );

    // Just under the body limit: 250 KB of data and a 2 KB device id (the dedup key).
    let data = "x".repeat(250 * 1024);
    let device = "d".repeat(2048);
    let body = format!("event=ALERT&coreid={device}&data={data}&published_at=t2");
    assert!(body.len() < klaxon::http::BODY_LIMIT);
    let (status, json) = particle(&app, "freezer", &body).await;
    assert_eq!((status, json["alert_id"].as_str()), (StatusCode::OK, Some("ALR-2")), "{json}");
    let alert = app.state.alerts().get("ALR-2").await.unwrap().unwrap().value;
    assert!(alert.details.ends_with(klaxon::ingest::TRUNCATED), "visible marker");
    assert!(alert.details.chars().count() <= klaxon::ingest::MAX_DETAILS_CHARS);
    assert!(alert.summary.ends_with(klaxon::ingest::TRUNCATED));
    let (_, json) = particle(&app, "freezer", &body.replace("t2", "t3")).await;
    assert_eq!(
        (json["alert_id"].as_str(), json["occurrences"].as_u64()),
        (Some("ALR-2"), Some(2)),
        "hashed keys group"
    );

    // Over the body limit: the same 413 on both backends, before anything is stored.
    let huge = format!("event=ALERT&coreid=dev-huge&data={}&published_at=t4", "x".repeat(480 * 1024));
    let (status, json) = particle(&app, "freezer", &huge).await;
    assert_eq!((status, json["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));

    let long_title = format!("#alert {}", "disk ".repeat(4000));
    let (status, json) = mm(&app, "chat", MM_TOKEN, "long", "alice", &long_title).await;
    assert_eq!((status, json["klaxon"]["alert_id"].as_str()), (StatusCode::OK, Some("ALR-3")), "{json}");
}

async fn particle_alert(state: klaxon::app::AppState, body: String) -> (StatusCode, Value) {
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", FORM)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from(body))
        .unwrap();
    let res = klaxon::http::all(state).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// In `klaxon serve`, intake yields to a notifier that falls behind (the oldest job it picks up
/// waited over a second, it is finishing jobs, and the CPUs are saturated): a request waits a
/// little first, and is accepted. Once the notifier keeps up, nothing waits.
#[tokio::test]
async fn intake_yields_to_a_notifier_that_falls_behind() {
    let mut app = klaxon_tests::embedded_app(CONFIG).await.unwrap();
    let alert = |i: usize| format!("event=ALERT&coreid=dev{i}&published_at=t&PARTICLE_EVENT_ID=behind-{i}");
    // Whether this machine's CPUs are busy is not this test's business (see pace/cpu.rs).
    let pace = app.state.intake_shared.pace().clone().assuming_cpu_saturated(true);
    app.state.intake_shared = std::sync::Arc::new(klaxon::ingest::apply::Shared::new(1).paced(pace.clone()));
    for i in 1..=2 {
        assert_eq!(particle_alert(app.state.clone(), alert(i)).await.0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let one = ReceiveOptions::new(1, Duration::from_secs(30));
    let queue = &app.state.notify_queue;
    let first = queue.receive(one).await.unwrap();
    queue.delete_batch(&[first[0].receipt.clone()]).await.unwrap();
    let second = queue.receive(one).await.unwrap();
    assert_eq!(second.len(), 1, "the second alert's job, 1.2 s old");
    assert_eq!(pace.paced(), 0);
    let (status, json) = particle_alert(app.state.clone(), alert(3)).await;
    assert_eq!((status, json["alert_id"].as_str()), (StatusCode::OK, Some("ALR-3")), "{json}");
    assert_eq!(pace.paced(), 1, "the request waited for the notifier");

    queue.delete_batch(&[second[0].receipt.clone()]).await.unwrap();
    while !queue.receive(ReceiveOptions::new(10, Duration::from_secs(30))).await.unwrap().is_empty() {}
    let (status, json) = particle_alert(app.state.clone(), alert(4)).await;
    assert_eq!((status, json["alert_id"].as_str()), (StatusCode::OK, Some("ALR-4")), "{json}");
    assert_eq!(pace.paced(), 1, "the notifier keeps up: nothing waited");
}

/// The counter is one atomic increment: no request waits for another's number, none fails, and
/// no number is skipped.
async fn two_hundred_simultaneous_new_alerts_all_succeed_with_distinct_ids(app: TestApp) {
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let body = format!("event=ALERT&coreid=dev{i}&published_at=t&PARTICLE_EVENT_ID=burst-{i}");
            tokio::spawn(particle_alert(app.state.clone(), body))
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(ids.insert(body["alert_id"].as_str().unwrap().to_string()), "duplicate id {body}");
    }
    let expected: std::collections::HashSet<String> = (1..=200).map(|n| format!("ALR-{n}")).collect();
    assert_eq!(ids, expected);
}

/// On the embedded store a trigger takes a number before it knows whether it opens an alert
/// (the writer then only reads and writes); a repeat or a redelivery gives it back, and the next
/// new alert takes it. So no number is lost, one at a time or many at once. (Many at once, a
/// number given back after a later one was taken is left out of the burst: a repeat that arrives
/// alone, after its alert was opened, takes a number like any trigger; the next alerts fill it.)
async fn repeats_and_redeliveries_between_new_alerts_leave_no_gap_in_their_numbers(app: TestApp) {
    let alert = |device: &str, id: &str| format!("event=ALERT&coreid={device}&published_at=t&PARTICLE_EVENT_ID={id}");
    let number = |body: &Value| -> u64 {
        let id = body["alert_id"].as_str().unwrap_or_else(|| panic!("no alert id in {body}"));
        klaxon::repo::alerts::AlertRepo::number_in(id).unwrap_or_else(|| panic!("not an alert number: {id}"))
    };
    let (_, body) = particle_alert(app.state.clone(), alert("d1", "e1")).await;
    assert_eq!(body["alert_id"], "ALR-1");
    let (_, body) = particle_alert(app.state.clone(), alert("d1", "e1")).await;
    assert_eq!((body["alert_id"].as_str(), body["occurrences"].as_u64()), (Some("ALR-1"), Some(1)), "a redelivery");
    let (_, body) = particle_alert(app.state.clone(), alert("d1", "e2")).await;
    assert_eq!((body["alert_id"].as_str(), body["occurrences"].as_u64()), (Some("ALR-1"), Some(2)), "a repeat");
    let (_, body) = particle_alert(app.state.clone(), alert("d1", "e2")).await;
    assert_eq!((body["alert_id"].as_str(), body["occurrences"].as_u64()), (Some("ALR-1"), Some(2)), "a redelivery");
    let (_, body) = particle_alert(app.state.clone(), alert("d2", "e3")).await;
    assert_eq!(body["alert_id"], "ALR-2", "the next new alert takes the next number");

    // Thirty devices, each with a new alert and a repeat, all at once.
    let calls: Vec<_> = (0..60)
        .map(|i| tokio::spawn(particle_alert(app.state.clone(), alert(&format!("dev{}", i % 30), &format!("s{i}")))))
        .collect();
    let mut burst = std::collections::BTreeSet::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        burst.insert(number(&body));
    }
    assert_eq!(burst.len(), 30, "thirty new alerts, each with its own number: {burst:?}");
    let (first, last) = (burst.first().copied(), burst.last().copied().unwrap_or(0));
    assert_eq!(first, Some(3), "the burst did not start at the next number: {burst:?}");
    // The numbers the burst left out go to the next new alerts, smallest first; then the next.
    let left_out: Vec<u64> = (3..=last).filter(|n| !burst.contains(n)).collect();
    let mut taken = Vec::new();
    for k in 0..=left_out.len() {
        let (_, body) = particle_alert(app.state.clone(), alert(&format!("after{k}"), &format!("a{k}"))).await;
        taken.push(number(&body));
    }
    let mut expected = left_out.clone();
    expected.push(last + 1);
    assert_eq!(taken, expected, "numbers were lost: the burst took {burst:?}");
}

/// 64 senders repeating one alert: serialised in process, none answered with an error, every
/// repeat counted once.
async fn sixty_four_simultaneous_repeats_of_one_alert_all_count(app: TestApp) {
    particle_alert(app.state.clone(), "event=ALERT&coreid=storm&published_at=t0".into()).await;
    let calls: Vec<_> = (0..64)
        .map(|i| {
            tokio::spawn(particle_alert(app.state.clone(), format!("event=ALERT&coreid=storm&published_at=t{}", i + 1)))
        })
        .collect();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!((status, body["alert_id"].as_str()), (StatusCode::OK, Some("ALR-1")), "{body}");
    }
    let alert = app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.occurrences, 65);
}
