//! Escalation end to end: a Particle alert through the router, its policy's timers fired by the
//! sweep at chosen times (the clock is the sweep's `now`), the notifier's card and thread
//! against the fake Mattermost. On both storage backends.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jiff::{SignedDuration, Timestamp};
use klaxon_tests::TestApp;
use klaxon_tests::fake_mattermost::{BOT_TOKEN, BOT_USER_ID, CAROL_ID, FakeMattermost};
use serde_json::Value;

const OPS: &str = "0psch4nnel0psch4nnel0psch4";
const ONCALL: &str = "0nca11ch4nn310nca11ch4nn31";
const KEY: &str = "particle-key-0123456789";

fn config(mm: &FakeMattermost) -> String {
    format!(
        r#"
version = 1
[server]
public_url = "https://klaxon.example.com"
signing_secret = "0123456789abcdef0123456789abcdef"
[mattermost]
url = "{url}"
bot_token = "{BOT_TOKEN}"
bot_user_id = "{BOT_USER_ID}"
team_id = "t3amt3amt3amt3amt3amt3amt3"
[incidents]
enabled = true
command_token = "sl4shc0mm4ndt0k3n000000000"
[channels.ops]
channel_id = "{OPS}"
[channels.oncall]
channel_id = "{ONCALL}"
[routing]
default = "ops"
[[sources]]
id = "freezer"
kind = "particle"
token = "{KEY}"
escalation_policy = "default"
[[sources]]
id = "chat"
kind = "mattermost"
token = "7kmxqf1b9jdzfcbj1d3u7uwqyo"
act_on = ["freezer"]
[[sources]]
id = "other"
kind = "mattermost"
token = "0th3rt0k3n0th3rt0k3n0th3rx"
[[escalation_policies]]
id = "default"
repeat = 1
[[escalation_policies.steps]]
after = "5m"
notify = ["rotation:primary"]
[[escalation_policies.steps]]
after = "10m"
notify = ["@carol", "@sre-leads"]
channel = "oncall"
direct_message = true
[[rotations]]
id = "primary"
users = ["alice", "bob"]
shift = "1d"
time_zone = "UTC"
start = "2026-11-01"
"#,
        url = mm.url
    )
}

struct Rig {
    app: TestApp,
    mm: FakeMattermost,
    /// When the alert was raised.
    t0: Timestamp,
}

async fn rig(factory: impl AsyncFnOnce(&str) -> Option<TestApp>) -> Option<Rig> {
    rig_with(factory, "").await
}

/// A rig whose configuration has `extra` appended.
async fn rig_with(factory: impl AsyncFnOnce(&str) -> Option<TestApp>, extra: &str) -> Option<Rig> {
    let mm = FakeMattermost::start().await;
    mm.add_bot_to(OPS);
    mm.add_bot_to(ONCALL);
    let app = factory(&format!("{}{extra}", config(&mm))).await?;
    let rig = Rig { app, mm, t0: Timestamp::now() };
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from("event=ALERT&coreid=dev7&data=-3&published_at=t1"))
        .unwrap();
    assert_eq!(klaxon_tests::route(&rig.app.state, req).await.0, StatusCode::OK);
    rig.notify().await;
    Some(rig)
}

impl Rig {
    async fn notify(&self) {
        let failed = klaxon_tests::drain_notify_queue(&self.app.state).await;
        assert!(failed.is_empty(), "{failed:?}");
    }

    /// Runs the escalation sweep as if it were `minutes` after the alert, then the notifier.
    async fn sweep_at(&self, minutes: i64) -> klaxon::escalation::timers::SweepReport {
        let now = self.t0 + SignedDuration::from_mins(minutes) + SignedDuration::from_secs(1);
        let report = self.app.state.escalator().expect("policies are configured").run_due(now).await.unwrap();
        self.notify().await;
        report
    }

    fn card(&self) -> Value {
        let roots = self.mm.roots_in(OPS);
        assert_eq!(roots.len(), 1, "one card");
        roots.into_iter().next().unwrap()
    }

    fn assigned(&self) -> String {
        let card = self.card();
        card["props"]["attachments"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["title"] == "Assigned")
            .and_then(|f| f["value"].as_str())
            .unwrap_or_default()
            .replace('\u{200B}', "")
    }

    fn thread(&self) -> Vec<String> {
        let card = self.card();
        let id = card["id"].as_str().unwrap();
        self.mm.reply_texts(id)
    }

    /// Who the rotation has on call at minute `m` after the alert.
    fn on_call(&self, minutes: i64) -> String {
        let c = self.app.state.config.rotations[0].clone();
        let r = klaxon::escalation::rotation::Rotation::from_config(&c).unwrap();
        format!("@{}", r.on_call(self.t0 + SignedDuration::from_mins(minutes)).user)
    }

    /// A choice in the card's `assign` or `snooze` menu, as Mattermost sends it (§5.2).
    async fn choose(&self, action: &str, option: &str) -> Value {
        let card = self.card();
        let actions = card["props"]["attachments"][0]["actions"].as_array().unwrap().clone();
        let menu =
            actions.iter().find(|a| a["id"] == action).unwrap_or_else(|| panic!("no {action} menu: {actions:?}"));
        assert_eq!(menu["type"], "select");
        let mut context = menu["integration"]["context"].clone();
        context["selected_option"] = serde_json::json!(option);
        let body = serde_json::json!({"user_id": "b0bb0bb0bb0bb0bb0bb0bb0bb0", "user_name": "bob", "channel_id": OPS,
            "post_id": card["id"], "type": "select", "data_source": if action == "assign" { "users" } else { "" },
            "context": context});
        let req = Request::post("/chatops/action")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, answer) = klaxon_tests::route(&self.app.state, req).await;
        assert_eq!(status, StatusCode::OK);
        self.notify().await;
        answer
    }

    /// `#alert <text>` from source `source` in the ops channel.
    async fn chat(&self, source: &str, token: &str, text: &str) -> (StatusCode, String) {
        let form = serde_urlencoded::to_string([
            ("channel_id", OPS),
            ("channel_name", "ops"),
            ("post_id", &format!("{:0>26}", text.len())),
            ("team_id", "oiw6xsg1uigqxqzfoinhf8d3ae"),
            ("text", text),
            ("timestamp", "1795435200"),
            ("token", token),
            ("trigger_word", "#alert"),
            ("user_id", "b0bb0bb0bb0bb0bb0bb0bb0bb0"),
            ("user_name", "bob"),
        ])
        .unwrap();
        let req = Request::post(format!("/hooks/mattermost/{source}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap();
        let (status, v) = klaxon_tests::route(&self.app.state, req).await;
        self.notify().await;
        (status, v["text"].as_str().unwrap_or_default().to_string())
    }

    /// A Particle ALERT from `device`.
    async fn alert(&self, device: &str) -> Value {
        let req = Request::post("/hooks/particle/freezer")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::from(format!(
                "event=ALERT&coreid={device}&data=-3&published_at=t-{device}-{}",
                uuid::Uuid::new_v4()
            )))
            .unwrap();
        let (_, answer) = klaxon_tests::route(&self.app.state, req).await;
        self.notify().await;
        answer
    }

    /// `/incident <text>`, answered privately.
    async fn slash(&self, text: &str) -> String {
        let form = serde_urlencoded::to_string([
            ("channel_id", OPS),
            ("command", "/incident"),
            ("team_id", "t3amt3amt3amt3amt3amt3amt3"),
            ("text", text),
            ("token", "sl4shc0mm4ndt0k3n000000000"),
            ("user_id", "b0bb0bb0bb0bb0bb0bb0bb0bb0"),
            ("user_name", "bob"),
        ])
        .unwrap();
        let req = Request::post("/chatops/command")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap();
        let (_, v) = klaxon_tests::route(&self.app.state, req).await;
        v["text"].as_str().unwrap_or_default().to_string()
    }

    async fn acknowledge(&self) {
        let alert = self.app.state.alerts().get("ALR-1").await.unwrap().unwrap();
        assert_eq!(alert.value.status, klaxon::domain::AlertStatus::Open);
        let actor = klaxon::domain::Actor::user("b0bb0bb0bb0bb0bb0bb0bb0bb0", "bob");
        let kind = klaxon::ingest::EventKind::Acknowledge;
        self.app.state.intake().act_from_button("ALR-1", kind, actor, Timestamp::now()).await.unwrap();
        self.notify().await;
    }
}

macro_rules! all_cases {
    ($factory:path) => {
        klaxon_tests::rig_tests!(super::rig, $factory;
            level_one_is_assigned_at_once_and_level_two_after_its_wait,
            an_acknowledgement_stops_escalation_and_leaves_stale_timers_harmless,
            an_unacknowledged_alert_runs_every_level_and_repeat_then_is_exhausted,
            assigning_from_the_card_stops_escalation_and_tells_the_new_assignee,
            a_snooze_pauses_escalation_and_the_alert_comes_back_when_it_ends,
            assign_and_snooze_from_chat_on_the_sources_own_alerts,
            a_maintenance_window_holds_alerts_and_its_end_posts_a_summary_and_the_open_ones,
            an_acknowledgement_after_level_two_stops_the_repeats,
            a_window_ends_by_itself);
    };
}

mod sqlite {
    all_cases!(klaxon_tests::embedded_app);
}

mod aws {
    all_cases!(klaxon_tests::aws_app);
}

async fn level_one_is_assigned_at_once_and_level_two_after_its_wait(rig: Rig) {
    let first = rig.on_call(0);
    assert_eq!(rig.assigned(), format!("{first} (level 1 of 2)"));
    assert_eq!(rig.thread(), [format!("ALR-1 is yours, {first} (level 1 of 2).")], "mentioned once, in the thread");
    assert!(!rig.card().to_string().contains(&format!("{first} (level")), "the card itself mentions no one");

    assert_eq!(rig.sweep_at(4).await.fired, 0, "level 1 has five minutes");
    let report = rig.sweep_at(5).await;
    assert_eq!(report.fired, 1, "{report:?}");
    assert_eq!(rig.assigned(), "@carol, @sre-leads (level 2 of 2)");
    assert_eq!(rig.thread().last().unwrap(), "Escalated to level 2 of 2: @carol, @sre-leads.");
    let dms = rig.mm.direct_messages_to(CAROL_ID);
    assert_eq!(
        dms,
        ["**ALR-1** needs you (level 2 of 2): ALERT from dev7. Acknowledge it on its card."],
        "carol gets a DM; the group cannot"
    );
    let oncall = rig.mm.roots_in(ONCALL);
    assert_eq!(oncall.len(), 1, "the step's channel gets a post");
    assert!(oncall[0]["message"].as_str().unwrap().contains("Escalated to level 2 of 2"));
    // The same time again (a second sweeper, a retried tick): nothing more.
    assert_eq!(rig.sweep_at(5).await.fired, 0);
    assert_eq!(rig.thread().len(), 2);
}

async fn an_acknowledgement_stops_escalation_and_leaves_stale_timers_harmless(rig: Rig) {
    rig.acknowledge().await;
    let report = rig.sweep_at(60).await;
    assert_eq!((report.fired, report.stale), (0, 1), "{report:?}");
    assert_eq!(rig.sweep_at(60 * 24).await, Default::default(), "the stale timer is gone");
    let thread = rig.thread();
    assert_eq!(thread.len(), 2, "the assignment and the acknowledgement: {thread:?}");
    assert!(thread[1].starts_with("Acknowledged by bob"), "{thread:?}");
    let alert = rig.app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert_eq!(alert.escalation.unwrap().level, 1, "no escalation after the acknowledgement");
}

async fn an_unacknowledged_alert_runs_every_level_and_repeat_then_is_exhausted(rig: Rig) {
    // Level 1 (5 min) → level 2 (10 min) → level 1 again (repeat 1, 5 min) → level 2 → exhausted.
    for (minute, fired) in [(5, 1), (14, 0), (15, 1), (20, 1), (30, 1)] {
        assert_eq!(rig.sweep_at(minute).await.fired, fired, "minute {minute}");
    }
    let thread = rig.thread();
    assert_eq!(thread.len(), 5, "{thread:#?}");
    assert_eq!(thread[2], format!("Escalated to level 1 of 2: {}.", rig.on_call(15)));
    assert!(
        thread[4].starts_with("Escalation policy default is exhausted: nobody acknowledged ALR-1"),
        "{}",
        thread[4]
    );
    assert_eq!(rig.assigned(), "@carol, @sre-leads (policy default exhausted)");
    assert_eq!(rig.sweep_at(60 * 24 * 3).await, Default::default(), "nothing is left to fire");
    let timeline: Vec<String> = rig
        .app
        .state
        .alerts()
        .get("ALR-1")
        .await
        .unwrap()
        .unwrap()
        .value
        .timeline
        .iter()
        .map(|e| e.what.clone())
        .collect();
    assert_eq!(timeline, ["triggered", "assigned", "escalated", "escalated", "escalated", "escalation_exhausted"]);
}

async fn assigning_from_the_card_stops_escalation_and_tells_the_new_assignee(rig: Rig) {
    let first = rig.on_call(0);
    let answer = rig.choose("assign", CAROL_ID).await;
    assert!(answer["ephemeral_text"].is_null(), "{answer}");
    assert!(answer["update"]["props"].to_string().contains("carol"), "the clicker sees the new card at once");
    assert_eq!(rig.assigned(), "@carol");
    assert_eq!(rig.thread().last().unwrap(), "Assigned to @carol by bob; automatic escalation stopped.");
    let alert = rig.app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    let entry = alert.timeline.iter().rev().find(|e| e.what == "assigned").unwrap();
    assert_eq!(entry.note.as_deref(), Some(format!("{first} → @carol").as_str()), "old and new assignee");
    assert_eq!(rig.sweep_at(60).await.fired, 0, "no automatic escalation after a manual assignment");
    let unknown = rig.choose("assign", "n0b0dyn0b0dyn0b0dyn0b0dyyy").await;
    assert_eq!(unknown["ephemeral_text"], "There is no such user; nothing changed.");
}

async fn a_snooze_pauses_escalation_and_the_alert_comes_back_when_it_ends(rig: Rig) {
    let answer = rig.choose("snooze", "30m").await;
    assert!(answer["ephemeral_text"].is_null(), "{answer}");
    assert!(rig.assigned().contains("snoozed until"), "{}", rig.assigned());
    assert!(rig.thread().last().unwrap().starts_with("Snoozed until "), "{:?}", rig.thread());
    assert_eq!(rig.sweep_at(5).await.fired, 0, "the level-1 check is paused");
    assert_eq!(rig.sweep_at(30).await.fired, 1, "the snooze ends");
    assert_eq!(rig.thread().last().unwrap(), "ALR-1 is back from snooze and still open. Escalation resumes.");
    assert!(!rig.assigned().contains("snoozed"));
    assert_eq!(rig.sweep_at(34).await.fired, 0, "level 1 gets its five minutes again");
    assert_eq!(rig.sweep_at(35).await.fired, 1);
    assert_eq!(rig.assigned(), "@carol, @sre-leads (level 2 of 2)");
    let bad = rig.choose("snooze", "1y").await;
    assert!(bad["ephemeral_text"].as_str().unwrap().contains("not a snooze length"), "{bad}");
}

async fn assign_and_snooze_from_chat_on_the_sources_own_alerts(rig: Rig) {
    let token = "7kmxqf1b9jdzfcbj1d3u7uwqyo";
    let (status, text) = rig.chat("chat", token, "#alert snooze ALR-1 1h").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.starts_with("ALR-1 is snoozed until "), "{text}");
    let (_, text) = rig.chat("chat", token, "#alert assign ALR-1 @carol").await;
    assert_eq!(text, "ALR-1 is assigned to @carol.");
    assert_eq!(rig.assigned(), "@carol");
    let (status, text) = rig.chat("chat", token, "#alert assign ALR-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("`#alert assign ALR-12 @bob`"), "{text}");
    let (_, text) = rig.chat("chat", token, "#alert snooze ALR-9 1h").await;
    assert_eq!(text, "There is no alert ALR-9; nothing changed.");
    let (status, text) = rig.chat("other", "0th3rt0k3n0th3rt0k3n0th3rx", "#alert assign ALR-1 @bob").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("may not act on ALR-1"), "{text}");
    assert_eq!(rig.assigned(), "@carol", "the refused request changed nothing");
}

async fn a_maintenance_window_holds_alerts_and_its_end_posts_a_summary_and_the_open_ones(rig: Rig) {
    let started = rig.slash("maintenance start 2h freezer").await;
    assert!(started.starts_with("Maintenance window started: chat-"), "{started}");
    assert!(rig.slash("maintenance start 2y").await.contains("not a window length"));
    assert!(rig.slash("maintenance start 1h nosuch").await.contains("There is no source"));
    let second = rig.alert("dev8").await;
    rig.alert("dev8").await; // a repeat: grouped, still held
    let third = rig.alert("dev9").await;
    assert_eq!((second["alert_id"].as_str(), third["alert_id"].as_str()), (Some("ALR-2"), Some("ALR-3")));
    assert_eq!(rig.mm.roots_in(OPS).len(), 1, "nothing posted during the window");
    let held = rig.app.state.deliveries().get("ALR-2#0000000001").await.unwrap().unwrap();
    assert!(format!("{held:?}").contains("maintenance window"), "{held:?}");
    assert_eq!(rig.sweep_at(60).await.fired, 1, "held alerts do not escalate (only ALR-1 does)");
    let kind = klaxon::ingest::EventKind::Resolve;
    let actor = klaxon::domain::Actor::user("b0bb0bb0bb0bb0bb0bb0bb0bb0", "bob");
    rig.app.state.intake().act_from_button("ALR-3", kind, actor, Timestamp::now()).await.unwrap();
    rig.notify().await;
    assert!(rig.slash("maintenance list").await.contains("freezer"));

    assert!(rig.slash("maintenance stop").await.starts_with("Stopped: chat-"));
    let tick = rig.app.state.tick();
    let report = tick.run(Timestamp::now() + SignedDuration::from_secs(1)).await;
    assert_eq!(report.windows_closed, 0, "released; the summary waits for ALR-2's card");
    rig.notify().await;
    assert_eq!(tick.run(Timestamp::now() + SignedDuration::from_secs(2)).await.windows_closed, 1);
    let roots = rig.mm.roots_in(OPS);
    let texts: Vec<&str> = roots.iter().map(|p| p["message"].as_str().unwrap_or_default()).collect();
    assert_eq!(roots.len(), 3, "ALR-1's card, ALR-2's card and the summary: {texts:#?}");
    assert_eq!(roots[1]["props"]["klaxon_alert_id"], "ALR-2", "the open one is posted now, the resolved one not");
    let link = format!("[ALR-2]({}/_redirect/pl/{})", rig.mm.url, roots[1]["id"].as_str().unwrap());
    let want = format!("2 alert(s) arrived during it (freezer: 2). Still open, posted now: {link}.");
    assert!(texts[2].contains("ended") && texts[2].contains(&want), "{}", texts[2]);
    let alr2 = rig.app.state.alerts().get("ALR-2").await.unwrap().unwrap().value;
    assert!(alr2.held.is_none() && alr2.escalation.is_some(), "released and escalating from now");
    assert_eq!(alr2.occurrences, 2, "grouped while held");
    assert_eq!(
        rig.app.state.tick().run(Timestamp::now() + SignedDuration::from_secs(2)).await.windows_closed,
        0,
        "an end is handled once"
    );
    assert!(rig.slash("maintenance stop").await.contains("nothing changed"));
}

async fn an_acknowledgement_after_level_two_stops_the_repeats(rig: Rig) {
    assert_eq!(rig.sweep_at(5).await.fired, 1);
    rig.acknowledge().await;
    let report = rig.sweep_at(15).await;
    assert_eq!((report.fired, report.stale), (0, 1), "level 2's timer finds it acknowledged");
    assert_eq!(rig.assigned(), "@carol, @sre-leads (level 2 of 2)", "the last assignee stays on the card");
}

async fn a_window_ends_by_itself(rig: Rig) {
    rig.slash("maint start 1m").await;
    let held = rig.alert("dev8").await;
    assert_eq!(held["alert_id"], "ALR-2");
    let tick = rig.app.state.tick();
    assert_eq!(tick.run(Timestamp::now()).await.windows_closed, 0, "still running");
    tick.run(Timestamp::now() + SignedDuration::from_secs(61)).await;
    rig.notify().await;
    let report = tick.run(Timestamp::now() + SignedDuration::from_secs(62)).await;
    assert_eq!(report.windows_closed, 1, "ended by itself, nobody stopped it");
    let roots = rig.mm.roots_in(OPS);
    assert_eq!(roots.len(), 3, "summary and the held alert's card");
    let later = rig.app.state.windows().list(Timestamp::now() + SignedDuration::from_secs(61)).await.unwrap();
    assert!(later.is_empty(), "nothing is running any more: {later:?}");
}

/// A weekly window from the configuration that started an hour ago, this week's occurrence
/// of one that began a week earlier.
async fn a_configured_weekly_window(factory: impl AsyncFnOnce(&str) -> Option<TestApp>) {
    let first = (Timestamp::now() - SignedDuration::from_hours(7 * 24 + 1)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let extra = format!(
        "[[maintenance]]\nid = \"weekly\"\nsources = [\"freezer\"]\nstart = \"{first}\"\nduration = \"2h\"\nweekly = true\n"
    );
    // The rig's own first alert arrives inside this week's occurrence: held.
    let Some(rig) = rig_with(factory, &extra).await else { return };
    assert!(rig.mm.roots_in(OPS).is_empty(), "held: no card during the window");
    let alert = rig.app.state.alerts().get("ALR-1").await.unwrap().unwrap().value;
    assert!(alert.held.as_deref().is_some_and(|k| k.starts_with("weekly@")), "{:?}", alert.held);
    assert!(rig.slash("maintenance list").await.contains("weekly: "));
    let tick = rig.app.state.tick();
    tick.run(Timestamp::now()).await;
    rig.notify().await;
    assert!(
        rig.mm.roots_in(OPS).is_empty(),
        "last week's occurrence ended quietly (nothing arrived in it); this one runs"
    );
    let after = Timestamp::now() + SignedDuration::from_hours(1) + SignedDuration::from_secs(1);
    tick.run(after).await;
    rig.notify().await;
    assert_eq!(tick.run(after).await.windows_closed, 1);
    rig.notify().await;
    let roots = rig.mm.roots_in(OPS);
    assert_eq!(roots.len(), 2, "the card, then the summary");
    assert!(roots[1]["message"].as_str().unwrap().contains("**Maintenance window weekly ended**"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_configured_weekly_window_holds_and_releases() {
    a_configured_weekly_window(klaxon_tests::embedded_app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_configured_weekly_window_holds_and_releases() {
    a_configured_weekly_window(klaxon_tests::aws_app).await;
}
