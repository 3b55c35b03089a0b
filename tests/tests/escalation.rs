//! Escalation end to end: a Particle alert through the router, its policy's timers fired by the
//! sweep at chosen times (the clock is the sweep's `now`), the notifier's card and thread
//! against the fake Mattermost. On both storage backends.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jiff::{SignedDuration, Timestamp};
use klaxon_tests::TestApp;
use klaxon_tests::fake_mattermost::{BOT_TOKEN, BOT_USER_ID, FakeMattermost};
use serde_json::Value;
use tower::ServiceExt;

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
    let mm = FakeMattermost::start().await;
    mm.add_bot_to(OPS);
    mm.add_bot_to(ONCALL);
    let app = factory(&config(&mm)).await?;
    let rig = Rig { app, mm, t0: Timestamp::now() };
    let req = Request::post("/hooks/particle/freezer")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from("event=ALERT&coreid=dev7&data=-3&published_at=t1"))
        .unwrap();
    let res = klaxon::http::all(rig.app.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
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
        self.mm.replies_to(id).iter().map(|p| p["message"].as_str().unwrap_or_default().to_string()).collect()
    }

    /// Who the rotation has on call at minute `m` after the alert.
    fn on_call(&self, minutes: i64) -> String {
        let c = self.app.state.config.rotations[0].clone();
        let r = klaxon::escalation::rotation::Rotation::from_config(&c).unwrap();
        format!("@{}", r.on_call(self.t0 + SignedDuration::from_mins(minutes)).user)
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

macro_rules! escalation_tests {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(rig) = super::rig($factory).await else { return };
                super::$case(rig).await;
            }
        )*
    };
}

macro_rules! all_cases {
    ($factory:path) => {
        escalation_tests!($factory;
            level_one_is_assigned_at_once_and_level_two_after_its_wait,
            an_acknowledgement_stops_escalation_and_leaves_stale_timers_harmless,
            an_unacknowledged_alert_runs_every_level_and_repeat_then_is_exhausted);
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
