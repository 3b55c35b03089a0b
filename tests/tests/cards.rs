//! Alert cards in Mattermost, end to end: intake through the router, jobs on the real queue
//! (SQLite, or SQS on moto), the notifier, and a fake Mattermost that behaves as
//! mattermost.md says. Bot mode and webhook mode, every failure class, the crash window.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use klaxon::notify::{JobError, JobHandler, Record};
use klaxon::queue::ReceiveOptions;
use klaxon::repo::deliveries::Delivery;
use klaxon_tests::TestApp;
use klaxon_tests::fake_mattermost::{BOT_TOKEN, BOT_USER_ID, FakeMattermost, Fault};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

const OPS: &str = "0psch4nnel0psch4nnel0psch4";
const KEY: &str = "particle-key-0123456789";

fn config(bot: &FakeMattermost, hooks: &FakeMattermost) -> String {
    format!(
        r#"
version = 1
[server]
public_url = "https://klaxon.example.com"
signing_secret = "0123456789abcdef0123456789abcdef"
[mattermost]
url = "{bot_url}"
bot_token = "{BOT_TOKEN}"
bot_user_id = "{BOT_USER_ID}"
webhooks = {{ lab = "{hook}" }}
[channels.ops]
channel_id = "{OPS}"
[channels.lab]
webhook = "lab"
[routing]
default = "ops"
[[routing.routes]]
events = ["alert.*"]
sources = ["lab"]
channel = "lab"
[[sources]]
id = "freezer"
kind = "particle"
token = "{KEY}"
[[sources]]
id = "lab"
kind = "particle"
token = "{KEY}"
[[sources]]
id = "chat"
kind = "mattermost"
token = "7kmxqf1b9jdzfcbj1d3u7uwqyo"
act_on = ["freezer"]
"#,
        bot_url = bot.url,
        hook = hooks.webhook("lab-hook"),
    )
}

struct Rig {
    app: TestApp,
    bot: FakeMattermost,
    hooks: FakeMattermost,
}

async fn rig(factory: impl AsyncFnOnce(&str) -> Option<TestApp>) -> Option<Rig> {
    rig_with(factory, "").await
}

/// A rig whose configuration has `extra` appended (more routes).
async fn rig_with(factory: impl AsyncFnOnce(&str) -> Option<TestApp>, extra: &str) -> Option<Rig> {
    let bot = FakeMattermost::start().await;
    let hooks = FakeMattermost::start().await; // another server than the bot's
    bot.add_bot_to(OPS);
    let app = factory(&format!("{}{extra}", config(&bot, &hooks))).await?;
    Some(Rig { app, bot, hooks })
}

impl Rig {
    async fn particle(&self, source: &str, body: &str) -> Value {
        let req = Request::post(format!("/hooks/particle/{source}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = klaxon::http::all(self.app.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn chat(&self, post_id: &str, user: &str, text: &str) -> Value {
        let form = serde_urlencoded::to_string([
            ("channel_id", OPS),
            ("channel_name", "ops"),
            ("post_id", post_id),
            ("team_id", "oiw6xsg1uigqxqzfoinhf8d3ae"),
            ("text", text),
            ("timestamp", "1795435200"),
            ("token", "7kmxqf1b9jdzfcbj1d3u7uwqyo"),
            ("trigger_word", "#alert"),
            ("user_id", &format!("{user:0<26}")[..26]),
            ("user_name", user),
        ])
        .unwrap();
        let req = Request::post("/hooks/mattermost/chat")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap();
        let res = klaxon::http::all(self.app.state.clone()).oneshot(req).await.unwrap();
        let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Runs the notifier over everything queued, as the worker would: in order, deleting what
    /// succeeded. Returns the errors of the jobs that failed (they stay queued).
    async fn notify(&self) -> Vec<JobError> {
        let notifier = self.app.state.notifier();
        let mut errors = Vec::new();
        for _ in 0..50 {
            let got =
                self.app.state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(1))).await.unwrap();
            if got.is_empty() {
                break;
            }
            let mut failed_groups = std::collections::HashSet::new();
            for m in got {
                if m.group_id.as_ref().is_some_and(|g| failed_groups.contains(g)) {
                    continue;
                }
                match notifier.handle(&Record::from(&m)).await {
                    Ok(()) => self.app.state.notify_queue.delete(&m.receipt).await.unwrap(),
                    Err(e) => {
                        failed_groups.extend(m.group_id.clone());
                        errors.push(e);
                    }
                }
            }
            if !errors.is_empty() {
                break;
            }
        }
        errors
    }

    /// The texts of the replies in `card`'s thread, in order.
    fn replies_to(&self, card: &Value) -> Vec<String> {
        self.bot.reply_texts(card["id"].as_str().unwrap())
    }

    fn card(&self) -> Value {
        let roots = self.bot.roots_in(OPS);
        assert_eq!(roots.len(), 1, "exactly one card: {roots:#?}");
        roots.into_iter().next().unwrap()
    }
}

impl Rig {
    /// A button click as Mattermost sends it (§5.2), with `context` and `post_id` filled in.
    async fn click(&self, user: &str, post_id: &str, context: &Value) -> Value {
        let mut body: Value = serde_json::from_slice(&klaxon_tests::fixture("mattermost/button-click.json")).unwrap();
        body["user_id"] = Value::String(format!("{user:0<26}")[..26].to_string());
        body["user_name"] = Value::String(user.to_string());
        body["post_id"] = Value::String(post_id.to_string());
        body["context"] = context.clone();
        let req = Request::post("/chatops/action")
            .header("content-type", "application/json")
            .header("user-agent", "Mattermost-Bot/1.1")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = klaxon::http::all(self.app.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "Mattermost shows anything else as an error");
        let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }
}

/// The context of the card's button named `name`.
fn button(card_props: &Value, name: &str) -> Value {
    card_props["attachments"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no {name} button in {card_props}"))["integration"]["context"]
        .clone()
}

fn buttons(card_props: &Value) -> Vec<String> {
    card_props["attachments"][0]["actions"]
        .as_array()
        .map(|a| a.iter().map(|b| b["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

impl Rig {
    /// Runs the notifier over the timer queue (paced card refreshes), as the timer worker would.
    async fn notify_timers(&self) -> usize {
        let notifier = self.app.state.notifier();
        let got = self.app.state.timer_queue.receive(ReceiveOptions::new(10, Duration::from_secs(5))).await.unwrap();
        for m in &got {
            assert_eq!(m.group_id, None, "the timer queue is a standard queue");
            notifier.handle(&Record::from(m)).await.unwrap();
            self.app.state.timer_queue.delete(&m.receipt).await.unwrap();
        }
        got.len()
    }
}

fn field<'a>(card: &'a Value, title: &str) -> &'a str {
    card["props"]["attachments"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"] == title)
        .and_then(|f| f["value"].as_str())
        .unwrap_or("")
}

macro_rules! all_cases {
    ($factory:path) => {
        klaxon_tests::rig_tests!(super::rig, $factory;
            an_alert_gets_one_card_updated_in_place_with_replies_in_its_thread,
            a_backlog_of_repeats_collapses_into_one_update_showing_the_latest_count,
            a_redelivered_job_posts_nothing_twice,
            a_create_answered_502_after_it_happened_makes_one_card,
            a_create_answered_with_json_that_is_no_post_is_retried_not_saved,
            a_claim_older_than_mattermosts_memory_finds_its_card_instead_of_making_a_second,
            a_card_buried_under_a_storms_newer_posts_is_found_not_doubled,
            a_walk_back_that_mattermost_fails_halfway_retries_and_makes_no_second_card,
            a_bot_outside_the_channel_is_recorded_with_the_fix_and_the_next_event_tries_again,
            rate_limits_and_outages_are_retried_and_never_lose_the_job,
            webhook_destinations_get_one_post_per_event_on_their_own_server,
            a_click_acknowledges_answers_with_the_new_card_and_threads_the_reply,
            forged_altered_foreign_and_expired_buttons_change_nothing,
            two_simultaneous_clicks_have_one_winner_and_a_click_on_a_resolved_alert_says_so,
            without_bot_user_id_the_bots_own_posts_are_recognised_by_asking_mattermost_once,
            a_failed_delivery_is_listed_with_its_fix_and_sent_again_by_retry,
            a_reply_posted_before_a_lost_record_is_found_again_not_doubled,
            a_live_storm_of_repeats_is_paced_and_the_last_count_still_arrives,
            a_refused_bot_token_is_recorded_as_failed_with_its_fix,
            an_alerts_jobs_in_one_batch_make_one_card_and_its_replies_in_order);
    };
}

mod sqlite {
    all_cases!(klaxon_tests::embedded_app);
}

mod aws {
    all_cases!(klaxon_tests::aws_app);
}

async fn an_alert_gets_one_card_updated_in_place_with_replies_in_its_thread(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&data=%40channel+warm&published_at=t1").await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    assert_eq!(card["user_id"], BOT_USER_ID);
    assert_eq!(card["props"]["klaxon_alert_id"], "ALR-1");
    assert_eq!(field(&card, "Status"), "Open");
    assert!(!card.to_string().contains("@channel"), "mentions are neutralised: {card}");

    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    rig.chat("c2", "alice", "#alert resolve ALR-1").await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    assert_eq!(field(&card, "Status"), "Resolved", "updated in place");
    assert!(field(&card, "Acknowledged").starts_with("by bob at "));
    assert_eq!(card["props"]["attachments"][0]["color"], "#2D9D78");
    let replies = rig.replies_to(&card);
    assert_eq!(replies, ["Acknowledged by bob.", "Resolved by alice."], "in order, in the card's thread");
    let record = rig.app.state.deliveries().get("ALR-1#0000000003").await.unwrap().unwrap();
    assert!(matches!(record.delivery, Delivery::Posted { ref channel, .. } if channel == "ops"), "{record:?}");
}

async fn a_backlog_of_repeats_collapses_into_one_update_showing_the_latest_count(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    for i in 1..=40 {
        rig.particle("freezer", &format!("event=ALERT&coreid=dev7&published_at=t{i}")).await;
    }
    assert!(rig.notify().await.is_empty());
    assert_eq!(field(&rig.card(), "Occurrences"), "41");
    assert_eq!(rig.bot.calls("create"), 1, "one card, no reply per repeat");
    assert!(rig.bot.calls("update") <= 1, "41 jobs, at most one update: {}", rig.bot.calls("update"));
}

async fn a_redelivered_job_posts_nothing_twice(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    assert!(rig.notify().await.is_empty());
    let (creates, updates) = (rig.bot.calls("create"), rig.bot.calls("update"));
    // The producer sends the same jobs again (an outbox sweep racing a relay, a Lambda retry).
    for revision in [1, 2] {
        let job = klaxon::notify::Job::Notify(klaxon::notify::NotifyJob {
            job_id: format!("ALR-1#{revision:010}"),
            event: if revision == 1 { "alert.triggered".into() } else { "alert.acknowledged".into() },
            subject: klaxon::notify::Subject::Alert { id: "ALR-1".into() },
            at: jiff::Timestamp::now(),
        });
        let mut message = job.to_message();
        message.dedup_id = Some(format!("again-{revision}"));
        rig.app.state.notify_queue.send(message).await.unwrap();
    }
    assert!(rig.notify().await.is_empty());
    assert_eq!((rig.bot.calls("create"), rig.bot.calls("update")), (creates, updates), "nothing posted twice");
    assert_eq!(rig.bot.replies_to(rig.card()["id"].as_str().unwrap()).len(), 1);
}

/// Mattermost created the card, then the answer was lost (a proxy answered 502). The retry
/// creates with the same pending_post_id, and Mattermost returns the post it already made.
async fn a_create_answered_502_after_it_happened_makes_one_card(rig: Rig) {
    rig.bot.fail_next("create", 1, Fault::DoThen502);
    rig.bot.fail_next("create", 2, Fault::Status(503));
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    let errors = rig.notify().await;
    assert!(matches!(errors.as_slice(), [JobError::Transient(_)]), "back to the queue: {errors:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the visibility timeout
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    assert_eq!(card["props"]["klaxon_alert_id"], "ALR-1");
    let saved = rig.app.state.store.get("card#ALR-1", "card").await.unwrap().unwrap();
    assert!(saved.data.contains(card["id"].as_str().unwrap()), "the record holds the one card");
}

/// A create answered 200 with JSON that is no post (a misrouted proxy): Klaxon keeps only the
/// post id of an answer, so it must notice there is none, save no card with an empty id, and
/// try again (three times within the job, then from the queue).
async fn a_create_answered_with_json_that_is_no_post_is_retried_not_saved(rig: Rig) {
    rig.bot.fail_next("create", 3, Fault::OkWithoutPost);
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    let errors = rig.notify().await;
    assert!(
        matches!(errors.as_slice(), [JobError::Transient(why)] if why.contains("cannot read")),
        "back to the queue: {errors:?}"
    );
    let claim = rig.app.state.store.get("card#ALR-1", "card").await.unwrap().unwrap();
    assert!(claim.data.contains("\"post_id\":null"), "no post id saved: {}", claim.data);
    tokio::time::sleep(Duration::from_millis(1100)).await; // the visibility timeout
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    let saved = rig.app.state.store.get("card#ALR-1", "card").await.unwrap().unwrap();
    assert!(saved.data.contains(card["id"].as_str().unwrap()), "the record holds the one card");
    assert_eq!(rig.bot.calls("create"), 4, "three answers without a post, then the card");
}

/// The crash window beyond Mattermost's 30 s memory: the claim is there, the post was made, the
/// record never got its id. A repeated create would make a second card; the notifier finds the
/// card by its alert id instead.
async fn a_claim_older_than_mattermosts_memory_finds_its_card_instead_of_making_a_second(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    crash_after_creating_the_card(&rig, 0).await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    assert_eq!(field(&card, "Status"), "Open", "adopted, then rendered with the alert's state");
    assert_eq!(rig.bot.calls("create"), 1, "only the create before the crash");
}

/// The same crash in a storm: by the time the job comes back, 1,100 newer posts fill the
/// channel, more than Mattermost's `?since=` answer holds (the newest 1000). The card is found
/// by walking back page by page, not made twice.
async fn a_card_buried_under_a_storms_newer_posts_is_found_not_doubled(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    crash_after_creating_the_card(&rig, 1100).await;
    assert!(rig.notify().await.is_empty());
    let cards: Vec<Value> =
        rig.bot.roots_in(OPS).into_iter().filter(|p| p["props"]["klaxon_alert_id"] == "ALR-1").collect();
    assert_eq!(cards.len(), 1, "one card for ALR-1");
    assert_eq!(field(&cards[0], "Status"), "Open", "adopted, then rendered with the alert's state");
    assert_eq!(rig.bot.calls("create"), 1 + 1100, "only the creates before the crash");
    assert!(rig.bot.calls("list") >= 2, "read past the newest 1000: {}", rig.bot.calls("list"));
}

/// The same walk when Mattermost answers 500 to every page past the newest 1000 (the first
/// list of each try passes): the notifier must not take "not found" from a walk it could not
/// finish, so it makes no second card; the job goes back, and its retry adopts the card.
async fn a_walk_back_that_mattermost_fails_halfway_retries_and_makes_no_second_card(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    crash_after_creating_the_card(&rig, 1100).await;
    for _ in 0..3 {
        rig.bot.fail_next("list", 1, Fault::Slow(Duration::ZERO)); // `?since=` passes
        rig.bot.fail_next("list", 1, Fault::Status(500)); // the first `?before=` page fails
    }
    let errors = rig.notify().await;
    assert!(matches!(errors.as_slice(), [JobError::Transient(_)]), "back to the queue: {errors:?}");
    assert_eq!(rig.bot.calls("create"), 1 + 1100, "no second card while the walk could not finish");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the visibility timeout
    assert!(rig.notify().await.is_empty());
    let cards = rig.bot.roots_in(OPS).into_iter().filter(|p| p["props"]["klaxon_alert_id"] == "ALR-1").count();
    assert_eq!(cards, 1, "one card for ALR-1");
    assert_eq!(rig.bot.calls("create"), 1 + 1100, "adopted, not created again");
}

/// Simulates a crash between a card's create and its record: the card was posted, then `newer`
/// other posts; the claim is five minutes old (beyond Mattermost's 30 s `pending_post_id`
/// memory) and has no post id.
async fn crash_after_creating_the_card(rig: &Rig, newer: usize) {
    rig.bot.remember_pending_for(None);
    let mm =
        klaxon::mattermost::Mattermost::new(rig.bot.url.parse().unwrap(), Some(klaxon::config::Secret::new(BOT_TOKEN)));
    let post = |message: String, props: Value| klaxon::mattermost::CreatePost {
        channel_id: OPS.into(),
        message,
        root_id: String::new(),
        props,
        pending_post_id: String::new(),
    };
    let card = klaxon::mattermost::CreatePost {
        pending_post_id: "klaxon-card-ALR-1".into(),
        ..post("old render".into(), serde_json::json!({"klaxon_alert_id": "ALR-1"}))
    };
    mm.create_post(&card).await.unwrap();
    for i in 0..newer {
        mm.create_post(&post(format!("another alert {i}"), serde_json::json!({"klaxon_alert_id": format!("X-{i}")})))
            .await
            .unwrap();
    }
    let claim = klaxon::repo::cards::Card {
        channel_id: OPS.into(),
        post_id: None,
        claimed_at: jiff::Timestamp::now() - jiff::SignedDuration::from_mins(5),
        rendered_revision: 0,
        updated_at: None,
        refresh_due: None,
    };
    let item = klaxon::store::Item::new("card#ALR-1", "card", serde_json::to_string(&claim).unwrap());
    rig.app.state.store.put(item, klaxon::store::Condition::Absent).await.unwrap();
}

async fn a_bot_outside_the_channel_is_recorded_with_the_fix_and_the_next_event_tries_again(rig: Rig) {
    let bot = FakeMattermost::start().await; // a server where the bot is in no channel
    let mut state = rig.app.state.clone();
    let mut config = (*state.config).clone();
    if let Some(m) = config.mattermost.as_mut() {
        m.url = bot.url.parse().unwrap();
    }
    state.config = std::sync::Arc::new(config);
    let rig = Rig { app: TestApp::from_state(state, rig.app), bot, hooks: rig.hooks };
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    assert!(rig.notify().await.is_empty(), "a permanent failure finishes the job");
    let record = rig.app.state.deliveries().get("ALR-1#0000000001").await.unwrap().unwrap();
    match record.delivery {
        Delivery::Failed { reason, .. } => assert!(reason.contains("add the bot to the channel"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(rig.app.state.store.get("card#ALR-1", "card").await.unwrap().is_none(), "the claim was released");
    // The admin adds the bot; the alert's next event creates the card.
    rig.bot.add_bot_to(OPS);
    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    assert!(rig.notify().await.is_empty());
    assert_eq!(field(&rig.card(), "Status"), "Acknowledged");
}

async fn rate_limits_and_outages_are_retried_and_never_lose_the_job(rig: Rig) {
    rig.bot.fail_next("create", 1, Fault::RateLimited(1));
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    assert!(rig.notify().await.is_empty(), "a 429 with a 1 s reset is waited out inside the invocation");
    assert_eq!(rig.bot.calls("create"), 2);

    rig.bot.fail_next("update", 10, Fault::Status(500));
    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    let errors = rig.notify().await;
    assert!(matches!(errors.as_slice(), [JobError::Transient(m)] if m.contains("HTTP 500")), "{errors:?}");
    assert!(rig.app.state.deliveries().get("ALR-1#0000000002").await.unwrap().is_none(), "not recorded: retried later");
    // Mattermost comes back after the outage (10 failed calls): the job was kept and goes through.
    for _ in 0..10 {
        if rig.app.state.deliveries().get("ALR-1#0000000002").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        rig.notify().await;
    }
    assert_eq!(rig.bot.calls("update"), 11, "ten failures, then the update");
    assert_eq!(field(&rig.card(), "Status"), "Acknowledged");
    assert!(rig.app.state.deliveries().get("ALR-1#0000000002").await.unwrap().is_some());
}

async fn webhook_destinations_get_one_post_per_event_on_their_own_server(rig: Rig) {
    rig.particle("lab", "event=ALERT&coreid=probe&published_at=t0").await;
    rig.particle("lab", "event=ALERT&coreid=probe&published_at=t1").await; // a repeat: not posted
    assert!(rig.notify().await.is_empty());
    let posts = rig.hooks.webhook_posts("lab-hook");
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["attachments"][0]["title"], "ALR-1: ALERT from probe");
    let repeat = rig.app.state.deliveries().get("ALR-1#0000000002").await.unwrap().unwrap();
    assert!(
        matches!(repeat.delivery, Delivery::NotDelivered { .. }),
        "a repeat is deliberately not posted, not a failure: {repeat:?}"
    );
    assert!(klaxon::notify::retry::list(&rig.app.state.deliveries()).await.unwrap().is_empty());
    assert!(rig.bot.roots_in(OPS).is_empty(), "nothing on the bot's server");

    rig.hooks.disable_webhooks();
    rig.particle("lab", "event=RESOLVE&coreid=probe&published_at=t2").await;
    assert!(rig.notify().await.is_empty(), "501 is permanent");
    let record = rig.app.state.deliveries().get("ALR-1#0000000003").await.unwrap().unwrap();
    assert!(
        matches!(record.delivery, Delivery::Failed { ref reason, .. } if reason.contains("disabled")),
        "{record:?}"
    );
}

async fn a_click_acknowledges_answers_with_the_new_card_and_threads_the_reply(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    let post_id = card["id"].as_str().unwrap();
    assert_eq!(buttons(&card["props"]), ["Acknowledge", "Resolve", "Assign...", "Snooze"]);
    let ack = button(&card["props"], "Acknowledge");
    assert_eq!(ack["action"], "acknowledge");
    assert_eq!(ack["alert_id"], "ALR-1");

    let answer = rig.click("bob", post_id, &ack).await;
    assert!(answer.get("ephemeral_text").is_none(), "{answer}");
    let update = &answer["update"];
    assert_eq!(field(update, "Status"), "Acknowledged", "the clicker sees the new card at once");
    assert_eq!(update["props"]["from_bot"], "true");
    assert_eq!(buttons(&update["props"]), ["Resolve", "Assign..."]);
    assert_eq!(button(&update["props"], "Resolve")["post_id"], post_id, "re-signed for this post");
    let alert = rig.app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.acknowledged_by, Some(klaxon::domain::Actor::user(format!("{:0<26}", "bob"), "bob")));

    assert!(rig.notify().await.is_empty());
    let replies = rig.bot.reply_texts(post_id);
    assert_eq!(replies, ["Acknowledged by bob."]);
    let resolve = button(&rig.card()["props"], "Resolve");
    let answer = rig.click("alice", post_id, &resolve).await;
    assert_eq!(field(&answer["update"], "Status"), "Resolved");
    assert!(buttons(&answer["update"]["props"]).is_empty(), "no buttons once resolved");
}

async fn forged_altered_foreign_and_expired_buttons_change_nothing(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    rig.particle("freezer", "event=ALERT&coreid=dev8&published_at=t0").await;
    assert!(rig.notify().await.is_empty());
    let cards = rig.bot.roots_in(OPS);
    let (first, second) = (&cards[0], &cards[1]);
    let post_id = first["id"].as_str().unwrap();
    let good = button(&first["props"], "Resolve");

    let mut altered = good.clone();
    altered["alert_id"] = "ALR-2".into();
    let answer = rig.click("mallory", post_id, &altered).await;
    assert!(answer["ephemeral_text"].as_str().unwrap().contains("signature does not match"), "{answer}");
    assert!(answer.get("update").is_none());

    let answer = rig.click("mallory", post_id, &serde_json::json!({"action": "resolve", "alert_id": "ALR-1"})).await;
    assert!(answer["ephemeral_text"].as_str().unwrap().contains("not a Klaxon button"), "{answer}");

    // A context signed for one post, replayed on another.
    let signer = rig.app.state.buttons().unwrap().signer;
    let bound =
        serde_json::to_value(signer.sign("ALR-1", "resolve", post_id, jiff::Timestamp::now().as_second())).unwrap();
    let answer = rig.click("mallory", second["id"].as_str().unwrap(), &bound).await;
    assert!(answer["ephemeral_text"].as_str().unwrap().contains("another post"), "{answer}");

    let old = jiff::Timestamp::now().as_second() - klaxon::chatops::signing::BUTTON_LIFETIME_SECS - 60;
    let expired = serde_json::to_value(signer.sign("ALR-1", "resolve", post_id, old)).unwrap();
    let answer = rig.click("bob", post_id, &expired).await;
    assert!(answer["ephemeral_text"].as_str().unwrap().contains("expired"), "{answer}");
    assert_eq!(buttons(&answer["update"]["props"]), ["Acknowledge", "Resolve", "Assign...", "Snooze"], "fresh buttons");

    for id in ["ALR-1", "ALR-2"] {
        let alert = rig.app.state.alerts().get(id).await.unwrap().unwrap().value;
        assert_eq!(alert.status, klaxon::domain::AlertStatus::Open, "{id} unchanged");
    }
    assert!(rig.notify().await.is_empty());
    assert!(rig.bot.replies_to(post_id).is_empty(), "no reply for refused clicks");
}

async fn two_simultaneous_clicks_have_one_winner_and_a_click_on_a_resolved_alert_says_so(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    let post_id = card["id"].as_str().unwrap().to_string();
    let ack = button(&card["props"], "Acknowledge");
    let (a, b) = tokio::join!(rig.click("bob", &post_id, &ack), rig.click("carol", &post_id, &ack));
    let notes: Vec<&Value> = [&a, &b].into_iter().filter(|x| x.get("ephemeral_text").is_some()).collect();
    assert_eq!(notes.len(), 1, "one winner: {a} / {b}");
    let winner = rig.app.state.alerts().get("ALR-1").await.unwrap().unwrap().value.acknowledged_by.unwrap();
    assert!(
        notes[0]["ephemeral_text"].as_str().unwrap().contains(&format!("(by {winner})")),
        "told who was first: {}",
        notes[0]
    );

    let resolve = button(&card["props"], "Resolve");
    rig.click("bob", &post_id, &resolve).await;
    let answer = rig.click("dan", &post_id, &resolve).await;
    let text = answer["ephemeral_text"].as_str().unwrap();
    assert!(text.starts_with("Nothing changed: cannot resolve alert ALR-1: it is resolved (by @bob)"), "{text}");
    assert_eq!(field(&answer["update"], "Status"), "Resolved", "the stale card is refreshed");
}

/// Resolutions of freezer alerts go to the lab webhook: the card in ops is still updated, the
/// lab channel gets its own post, and the card's thread gets no reply for it.
const RESOLVED_TO_LAB: &str =
    "[[routing.routes]]\nevents = [\"alert.resolved\"]\nsources = [\"freezer\"]\nchannel = \"lab\"\n";

async fn an_event_routed_elsewhere_updates_the_card_and_posts_in_its_own_channel(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    rig.chat("c2", "alice", "#alert resolve ALR-1").await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    assert_eq!(field(&card, "Status"), "Resolved", "the card is still updated");
    let replies = rig.replies_to(&card);
    assert_eq!(replies, ["Acknowledged by bob."], "the resolution went to its own channel");
    let lab = rig.hooks.webhook_posts("lab-hook");
    assert_eq!(lab.len(), 1, "{lab:#?}");
    assert!(lab[0]["text"].as_str().unwrap().ends_with("Resolved by alice."), "{}", lab[0]["text"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_event_routed_elsewhere_updates_the_card_and_posts_in_its_own_channel() {
    let Some(rig) = rig_with(klaxon_tests::embedded_app, RESOLVED_TO_LAB).await else { return };
    an_event_routed_elsewhere_updates_the_card_and_posts_in_its_own_channel(rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_an_event_routed_elsewhere_updates_the_card_and_posts_in_its_own_channel() {
    let Some(rig) = rig_with(klaxon_tests::aws_app, RESOLVED_TO_LAB).await else { return };
    an_event_routed_elsewhere_updates_the_card_and_posts_in_its_own_channel(rig).await;
}

async fn without_bot_user_id_the_bots_own_posts_are_recognised_by_asking_mattermost_once(rig: Rig) {
    let mut state = rig.app.state.clone();
    let mut config = (*state.config).clone();
    if let Some(m) = config.mattermost.as_mut() {
        m.bot_user_id = None;
    }
    state.config = std::sync::Arc::new(config);
    let rig = Rig { app: TestApp::from_state(state, rig.app), bot: rig.bot, hooks: rig.hooks };
    for i in 0..3 {
        let body = rig.chat(&format!("b{i}"), "b0tb0tb0tb0tb0tb0tb0tb0tb0", "#alert ALR-1 resolved by a card").await;
        assert_eq!(body, serde_json::json!({}), "the bot's own post raises nothing and gets no reply");
    }
    assert_eq!(rig.bot.calls("me"), 1, "asked once, then remembered");
    let body = rig.chat("p1", "alice", "#alert disk full").await;
    assert_eq!(body["klaxon"]["alert_id"], "ALR-1", "people still raise alerts");
}

async fn a_failed_delivery_is_listed_with_its_fix_and_sent_again_by_retry(rig: Rig) {
    rig.hooks.disable_webhooks();
    rig.particle("lab", "event=ALERT&coreid=probe&published_at=t0").await;
    assert!(rig.notify().await.is_empty(), "a permanent failure finishes the job");
    let deliveries = rig.app.state.deliveries();
    let failed = klaxon::notify::retry::list(&deliveries).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].job.id(), failed[0].channel.as_deref()), ("ALR-1#0000000001", Some("lab")));
    assert!(failed[0].reason.contains("incoming webhooks are disabled"), "{}", failed[0].reason);

    let err = klaxon::notify::retry::retry(&deliveries, rig.app.state.notify_queue.as_ref(), "ALR-9#0000000001").await;
    assert!(err.unwrap_err().to_string().contains("no failed delivery"));

    // The admin enables webhooks again; the retry goes through, once.
    let hooks = FakeMattermost::start().await;
    let mut state = rig.app.state.clone();
    let mut config = (*state.config).clone();
    if let Some(m) = config.mattermost.as_mut() {
        m.webhooks.insert("lab".into(), klaxon::config::Secret::new(hooks.webhook("lab-hook")));
    }
    state.config = std::sync::Arc::new(config);
    let rig = Rig { app: TestApp::from_state(state, rig.app), bot: rig.bot, hooks };
    klaxon::notify::retry::retry(&deliveries, rig.app.state.notify_queue.as_ref(), "ALR-1#0000000001").await.unwrap();
    assert!(rig.notify().await.is_empty());
    assert_eq!(rig.hooks.webhook_posts("lab-hook").len(), 1);
    assert!(klaxon::notify::retry::list(&deliveries).await.unwrap().is_empty(), "no longer listed");
    let record = deliveries.get("ALR-1#0000000001").await.unwrap().unwrap();
    assert!(matches!(record.delivery, Delivery::Posted { .. }), "{record:?}");
}

/// The reply was posted, then the delivery record could not be written, and the job came back
/// from the queue after Mattermost had forgotten its pending_post_id: the reply is found in the
/// thread by its job id, not posted twice.
async fn a_reply_posted_before_a_lost_record_is_found_again_not_doubled(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    assert!(rig.notify().await.is_empty());
    let root = rig.card()["id"].as_str().unwrap().to_string();
    assert_eq!(rig.bot.replies_to(&root).len(), 1);
    rig.app.state.store.delete("delivery#ALR-1#0000000002", "delivery", klaxon::store::Condition::None).await.unwrap();
    rig.bot.remember_pending_for(None);
    let job = klaxon::notify::Job::Notify(klaxon::notify::NotifyJob {
        job_id: "ALR-1#0000000002".into(),
        event: "alert.acknowledged".into(),
        subject: klaxon::notify::Subject::Alert { id: "ALR-1".into() },
        at: jiff::Timestamp::now(),
    });
    let record = Record {
        message_id: "m".into(),
        body: job.to_message().body,
        group_id: Some("ALR-1".into()),
        receive_count: 2,
    };
    rig.app.state.notifier().handle(&record).await.unwrap();
    assert_eq!(rig.bot.replies_to(&root).len(), 1, "found, not doubled");
    assert_eq!(rig.bot.calls("thread"), 1);
    let delivered = rig.app.state.deliveries().get("ALR-1#0000000002").await.unwrap().unwrap();
    assert!(matches!(delivered.delivery, Delivery::Posted { .. }));
}

const ONCALL: &str = "0nc4ll0nc4ll0nc4ll0nc4ll0n";

fn critical_to_oncall() -> String {
    format!(
        "[channels.oncall]\nchannel_id = \"{ONCALL}\"\n[[routing.routes]]\nevents = [\"alert.triggered\"]\nmin_urgency = \"critical\"\nchannel = \"oncall\"\n"
    )
}

/// A repeat raises the urgency to critical, whose triggers are routed to oncall: the card stays
/// in ops and is updated there, and oncall gets a post of its own, as a critical trigger would.
async fn a_raised_urgency_is_posted_where_that_urgency_is_routed_and_the_card_stays(rig: Rig) {
    rig.bot.add_bot_to(ONCALL);
    let first = rig.chat("r1", "alice", "#alert disk full on db-2").await;
    assert_eq!(first["klaxon"]["alert_id"], "ALR-1", "{first}");
    assert!(rig.notify().await.is_empty(), "the card is posted in ops while the alert is high");
    rig.chat("r2", "bob", "#alert disk full on db-2 [critical]").await;
    assert!(rig.notify().await.is_empty());
    let card = rig.card();
    assert_eq!(field(&card, "Urgency"), "critical", "the card in ops shows the raised urgency");
    let oncall = rig.bot.roots_in(ONCALL);
    assert_eq!(oncall.len(), 1, "{oncall:#?}");
    assert!(
        oncall[0]["message"].as_str().unwrap().ends_with("Urgency raised to critical by bob."),
        "{}",
        oncall[0]["message"]
    );
    assert!(rig.bot.replies_to(card["id"].as_str().unwrap()).is_empty(), "the raise was posted in oncall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_raised_urgency_is_posted_where_that_urgency_is_routed_and_the_card_stays() {
    let Some(rig) = rig_with(klaxon_tests::embedded_app, &critical_to_oncall()).await else { return };
    a_raised_urgency_is_posted_where_that_urgency_is_routed_and_the_card_stays(rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_raised_urgency_is_posted_where_that_urgency_is_routed_and_the_card_stays() {
    let Some(rig) = rig_with(klaxon_tests::aws_app, &critical_to_oncall()).await else { return };
    a_raised_urgency_is_posted_where_that_urgency_is_routed_and_the_card_stays(rig).await;
}

/// A storm the notifier keeps pace with (each repeat processed as it arrives): the card is
/// updated at most every 2 s, one delayed refresh is queued per interval, and it brings the
/// card to the final count.
async fn a_live_storm_of_repeats_is_paced_and_the_last_count_still_arrives(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    assert!(rig.notify().await.is_empty());
    let started = std::time::Instant::now();
    for i in 1..=30 {
        rig.particle("freezer", &format!("event=ALERT&coreid=dev7&published_at=t{i}")).await;
        assert!(rig.notify().await.is_empty());
    }
    // At most one update and one queued refresh per 2 s interval of the burst.
    let intervals = started.elapsed().as_secs() as usize / 2 + 1;
    let updates = rig.bot.calls("update");
    assert!(updates <= intervals, "30 live repeats in {intervals} interval(s): {updates} updates");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refreshes = rig.notify_timers().await;
    assert!((1..=intervals).contains(&refreshes), "{refreshes} refreshes for {intervals} interval(s)");
    assert_eq!(field(&rig.card(), "Occurrences"), "31", "the last count arrived");
    assert!(rig.bot.calls("update") < 30 / 2, "far fewer calls than repeats: {}", rig.bot.calls("update"));
}

async fn a_refused_bot_token_is_recorded_as_failed_with_its_fix(rig: Rig) {
    let mut state = rig.app.state.clone();
    let mut config = (*state.config).clone();
    if let Some(m) = config.mattermost.as_mut() {
        m.bot_token = Some(klaxon::config::Secret::new("revoked-token-000000000000"));
    }
    state.config = std::sync::Arc::new(config);
    let rig = Rig { app: TestApp::from_state(state, rig.app), bot: rig.bot, hooks: rig.hooks };
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t0").await;
    assert!(rig.notify().await.is_empty(), "a 401 is permanent: the job is finished, not retried");
    let failed = klaxon::notify::retry::list(&rig.app.state.deliveries()).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].reason.contains("create a new access token"), "{}", failed[0].reason);
    assert!(!failed[0].reason.contains("revoked-token"), "the token never appears: {}", failed[0].reason);
    assert!(rig.bot.roots_in(OPS).is_empty());
}

/// A batch holding an alert's trigger, acknowledgement and resolution beside other alerts'
/// triggers, handled as the worker does (the groups side by side): each job of the alert
/// starts from what the jobs before it did, so there is one card, and its replies come in order.
async fn an_alerts_jobs_in_one_batch_make_one_card_and_its_replies_in_order(rig: Rig) {
    rig.particle("freezer", "event=ALERT&coreid=dev7&published_at=t1").await;
    rig.chat("c1", "bob", "#alert ack ALR-1").await;
    rig.particle("freezer", "event=ALERT&coreid=dev8&published_at=t1").await;
    rig.chat("c2", "alice", "#alert resolve ALR-1").await;
    rig.particle("freezer", "event=ALERT&coreid=dev9&published_at=t1").await;
    let got = rig.app.state.notify_queue.receive(ReceiveOptions::new(10, Duration::from_secs(5))).await.unwrap();
    assert_eq!(got.len(), 5, "every job in one batch: {got:#?}");
    let records: Vec<Record> = got.iter().map(Record::from).collect();
    let report = klaxon::notify::handle_batch(&rig.app.state.notifier(), &records).await;
    assert_eq!(report, klaxon::notify::BatchReport::default(), "every job done");

    let roots = rig.bot.roots_in(OPS);
    let mut alerts: Vec<&str> = roots.iter().filter_map(|r| r["props"]["klaxon_alert_id"].as_str()).collect();
    alerts.sort();
    assert_eq!(alerts, ["ALR-1", "ALR-2", "ALR-3"], "one card per alert: {roots:#?}");
    let card = roots.iter().find(|r| r["props"]["klaxon_alert_id"] == "ALR-1").unwrap();
    assert_eq!(field(card, "Status"), "Resolved");
    let replies = rig.replies_to(card);
    assert_eq!(replies, ["Acknowledged by bob.", "Resolved by alice."], "in order, in the card's thread");
}
