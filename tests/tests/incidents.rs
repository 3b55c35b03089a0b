//! `/incident` end to end, through the real router: the slash command (form fixtures in
//! Mattermost's exact shape), the dialog and its signed state, the incident's channel made by
//! the notifier against a fake Mattermost, the lifecycle in the channel, announcements, and the
//! retrospective. On both storage backends (SQLite, and DynamoDB + SQS on moto).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use klaxon::repo::deliveries::Delivery;
use klaxon_tests::TestApp;
use klaxon_tests::fake_mattermost::{
    ALICE_ID, BOB_ID, BOT_TOKEN, BOT_USER_ID, CAROL_ID, EXPIRED_TRIGGER, FakeMattermost, Fault, OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET, TEAM_ID,
};
use serde_json::{Value, json};
use tower::ServiceExt;

const ANNOUNCE: &str = "ann0unc3ann0unc3ann0unc3an";
const TOWN_SQUARE: &str = "4xp9fdt2pjrnbqkxhq8w1ctmhe";
const COMMAND_TOKEN: &str = "sl4shc0mm4ndt0k3n000000000";
const MIRROR_TOKEN: &str = "m1rr0rt0k3nm1rr0rt0k3n0000";

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
team_id = "{TEAM_ID}"
[channels.incidents]
channel_id = "{ANNOUNCE}"
[incidents]
enabled = true
channel_name_template = "inc-{{seq}}-{{title}}"
private_channels = false
announce_channel = "incidents"
announce = ["incident.started", "incident.severity_changed", "incident.resolved", "incident.cancelled"]
severities = ["SEV1", "SEV2", "SEV3"]
default_severity = "SEV3"
command_token = "{COMMAND_TOKEN}"
mirror_token = "{MIRROR_TOKEN}"
[incidents.oauth]
client_id = "{OAUTH_CLIENT_ID}"
client_secret = "{OAUTH_CLIENT_SECRET}"
[[incidents.dialog_fields]]
name = "service"
display_name = "Affected service"
type = "select"
options = ["checkout", "search"]
[[incidents.dialog_fields]]
name = "customer_impact"
display_name = "Customer impact"
type = "textarea"
optional = true
"#,
        url = mm.url
    )
}

struct Rig {
    app: TestApp,
    mm: FakeMattermost,
}

async fn rig(factory: impl AsyncFnOnce(&str) -> Option<TestApp>) -> Option<Rig> {
    let mm = FakeMattermost::start().await;
    mm.add_bot_to(ANNOUNCE);
    let app = factory(&config(&mm)).await?;
    Some(Rig { app, mm })
}

async fn call(rig: &Rig, req: Request<Body>) -> Value {
    let (status, answer) = klaxon_tests::route(&rig.app.state, req).await;
    assert_eq!(status, StatusCode::OK, "Mattermost shows anything but 200 as an error");
    assert!(answer.is_object(), "a JSON answer: {answer}");
    answer
}

impl Rig {
    /// `/incident <text>` as `user` in `channel`, in the exact form Mattermost sends (§2.1).
    async fn slash_as(&self, user: (&str, &str), channel: &str, text: &str, trigger: &str) -> Value {
        let fixture = String::from_utf8(klaxon_tests::fixture("mattermost/slash-command.form")).unwrap();
        let form = fixture
            .replace("CHANNEL_ID", channel)
            .replace("TEXT", &serde_urlencoded::to_string([("", text)]).unwrap()[1..])
            .replace("TRIGGER_ID", trigger)
            .replace("https%3A%2F%2Fchat.example.com", &serde_urlencoded::to_string([("", &self.mm.url)]).unwrap()[1..])
            .replace("a11cea11cea11cea11cea11ce0", user.0)
            .replace("user_name=alice", &format!("user_name={}", user.1));
        let req = Request::post("/chatops/command")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Token {COMMAND_TOKEN}"))
            .body(Body::from(form))
            .unwrap();
        call(self, req).await
    }

    async fn slash(&self, channel: &str, text: &str) -> String {
        let v = self.slash_as((ALICE_ID, "alice"), channel, text, "dHJpZ2dlcg==").await;
        assert_eq!(v["response_type"], "ephemeral", "{v}");
        v["text"].as_str().unwrap_or_default().to_string()
    }

    /// Submits the dialog with `state`, starting from the fixture's answers, with `changes`.
    async fn submit(&self, state: &str, user: &str, changes: Value) -> Value {
        let mut body: Value =
            serde_json::from_slice(&klaxon_tests::fixture("mattermost/dialog-submission.json")).unwrap();
        body["state"] = json!(state);
        body["user_id"] = json!(user);
        for (k, v) in changes.as_object().cloned().unwrap_or_default() {
            if k == "cancelled" {
                body["cancelled"] = v;
                body["submission"] = json!({});
            } else {
                body["submission"][k] = v;
            }
        }
        let req = Request::post("/chatops/dialog")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        call(self, req).await
    }

    /// Opens the dialog with `/incident new <title>` and returns its state.
    async fn open_dialog(&self, title: &str) -> String {
        let text = self.slash(TOWN_SQUARE, &format!("new {title}")).await;
        assert_eq!(text, "Fill in the dialog to declare the incident.");
        let dialogs = self.mm.dialogs();
        let d = dialogs.last().expect("a dialog was opened");
        assert_eq!(d["url"], "https://klaxon.example.com/chatops/dialog");
        d["dialog"]["state"].as_str().unwrap().to_string()
    }

    async fn notify(&self) {
        let failed = klaxon_tests::drain_notify_queue(&self.app.state).await;
        assert!(failed.is_empty(), "every job went through: {failed:?}");
    }

    fn incident_channel(&self) -> Value {
        let channels = self.mm.created_channels();
        assert_eq!(channels.len(), 1, "one channel: {channels:#?}");
        channels.into_iter().next().unwrap()
    }

    fn posts_in(&self, channel: &str) -> Vec<String> {
        self.mm
            .roots_in(channel)
            .iter()
            .filter(|p| p["type"] == "" || p["type"].is_null())
            .map(|p| p["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn open_numbers(&self) -> Vec<u64> {
        self.app.state.incidents().open().await.unwrap().iter().map(|i| i.id.number).collect()
    }
}

macro_rules! all_cases {
    ($factory:path) => {
        klaxon_tests::rig_tests!(super::rig, $factory;
            the_dialog_declares_an_incident_with_its_channel_people_header_and_announcement,
            a_second_submission_of_the_same_dialog_declares_nothing_more,
            forged_expired_foreign_and_cancelled_dialogs_declare_nothing,
            field_errors_go_back_by_field_name,
            when_the_dialog_cannot_open_the_title_declares_with_the_defaults,
            the_lifecycle_in_the_channel_updates_header_posts_and_announcements,
            commands_outside_an_incident_channel_say_where_to_run_them,
            a_taken_channel_name_gets_a_suffix_and_a_crashed_create_is_adopted,
            a_bot_that_may_not_create_channels_is_recorded_with_the_fix,
            the_channel_reader_mirrors_each_human_message_once_across_restarts,
            the_channel_reader_pages_back_past_mattermosts_1000_post_cap,
            the_mirror_webhook_adds_each_post_once_and_skips_the_bot,
            a_connected_user_declares_channels_as_themselves_and_the_token_is_stored_encrypted,
            bad_states_other_users_and_refused_codes_get_a_clear_page_and_store_nothing,
            the_admin_install_stores_the_app_token);
    };
}

mod sqlite {
    all_cases!(klaxon_tests::embedded_app);
}

mod aws {
    all_cases!(klaxon_tests::aws_app);
}

async fn the_dialog_declares_an_incident_with_its_channel_people_header_and_announcement(rig: Rig) {
    let state = rig.open_dialog("Checkout is down").await;
    let dialog = &rig.mm.dialogs()[0]["dialog"];
    let names: Vec<&str> = dialog["elements"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["title", "severity", "summary", "commander", "private", "field_service", "field_customer_impact"]
    );
    assert_eq!(dialog["elements"][0]["default"], "Checkout is down", "the title is prefilled");
    assert_eq!(dialog["elements"][1]["default"], "SEV3");
    assert!(rig.app.state.incidents().get(1).await.unwrap().is_none(), "nothing is declared before the submission");

    assert_eq!(rig.submit(&state, ALICE_ID, json!({})).await, json!({}));
    let incident = rig.app.state.incidents().get(1).await.unwrap().expect("INC-1 declared").value;
    assert_eq!(incident.title, "Checkout is down");
    assert_eq!(incident.severity, "SEV2");
    assert_eq!(incident.commander.to_string(), "@carol");
    assert_eq!(incident.declared_by.to_string(), "@alice");
    assert_eq!(incident.fields.get("Affected service").map(String::as_str), Some("checkout"));

    rig.notify().await;
    let channel = rig.incident_channel();
    assert_eq!(channel["name"], "inc-1-checkout-is-down");
    assert_eq!(channel["display_name"], "INC-1: Checkout is down");
    assert_eq!(channel["type"], "P", "the dialog asked for a private channel");
    assert_eq!(channel["team_id"], TEAM_ID);
    assert!(channel["header"].as_str().unwrap().starts_with("**INC-1** · SEV2 · Started · Commander: @carol"));
    let id = channel["id"].as_str().unwrap();
    assert_eq!(rig.mm.channel_members(id), [ALICE_ID, BOT_USER_ID, CAROL_ID]);
    let posts = rig.posts_in(id);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(posts[0].contains("INC-1: Checkout is down") && posts[0].contains("500s on /pay"), "{}", posts[0]);
    let announced = rig.posts_in(ANNOUNCE);
    assert_eq!(announced.len(), 1);
    assert!(
        announced[0].contains("**INC-1** (SEV2)") && announced[0].ends_with("~inc-1-checkout-is-down"),
        "{}",
        announced[0]
    );
    let stored = rig.app.state.incidents().get_by_channel(id).await.unwrap().expect("found by its channel");
    assert_eq!(stored.value.channel_name.as_deref(), Some("inc-1-checkout-is-down"));
    let confirmed = rig.mm.command_responses();
    assert_eq!(confirmed.len(), 1, "the declarer is told through the command's response URL");
    assert_eq!(confirmed[0]["response_type"], "ephemeral");
    assert!(confirmed[0]["text"].as_str().unwrap().starts_with("**INC-1** is declared (SEV2, commander @carol)"));
    let delivery = rig.app.state.deliveries().get("INC-1#0000000001").await.unwrap().unwrap();
    assert!(matches!(delivery.delivery, Delivery::Posted { .. }), "{delivery:?}");
}

async fn a_second_submission_of_the_same_dialog_declares_nothing_more(rig: Rig) {
    let state = rig.open_dialog("Search is slow").await;
    assert_eq!(rig.submit(&state, ALICE_ID, json!({})).await, json!({}));
    assert_eq!(rig.submit(&state, ALICE_ID, json!({})).await, json!({}), "the repeat is answered the same");
    let (a, b) = tokio::join!(rig.submit(&state, ALICE_ID, json!({})), rig.submit(&state, ALICE_ID, json!({})));
    assert_eq!((a, b), (json!({}), json!({})));
    assert_eq!(rig.open_numbers().await, [1], "one incident for one dialog");
    assert_eq!(rig.mm.command_responses().len(), 1, "and one confirmation");
    rig.notify().await;
    assert_eq!(rig.mm.created_channels().len(), 1);
    // A new dialog is a new incident.
    let again = rig.open_dialog("Search is slow").await;
    rig.submit(&again, ALICE_ID, json!({})).await;
    let numbers = rig.open_numbers().await;
    assert_eq!(numbers.len(), 2, "{numbers:?}");
}

async fn forged_expired_foreign_and_cancelled_dialogs_declare_nothing(rig: Rig) {
    let state = rig.open_dialog("Checkout is down").await;
    let mut forged: Value = serde_json::from_str(&state).unwrap();
    forged["u"] = json!(BOB_ID);
    let answer = rig.submit(&forged.to_string(), BOB_ID, json!({})).await;
    assert!(answer["error"].as_str().unwrap().contains("signature does not match"), "{answer}");
    let answer = rig.submit(&state, BOB_ID, json!({})).await;
    assert!(answer["error"].as_str().unwrap().contains("another user"), "{answer}");
    let answer = rig.submit("", ALICE_ID, json!({})).await;
    assert!(answer["error"].as_str().unwrap().contains("not started by Klaxon"), "{answer}");
    let signer = rig.app.state.state_signer().unwrap();
    let old = signer.sign_state("dialog:new", ALICE_ID, json!({"user_name": "alice"}), 1_000, 3600);
    let answer = rig.submit(&old, ALICE_ID, json!({})).await;
    assert!(answer["error"].as_str().unwrap().contains("expired"), "{answer}");
    assert_eq!(rig.submit(&state, ALICE_ID, json!({"cancelled": true})).await, json!({}));
    assert!(rig.open_numbers().await.is_empty(), "nothing was declared");
    rig.notify().await;
    assert!(rig.mm.created_channels().is_empty());
}

async fn field_errors_go_back_by_field_name(rig: Rig) {
    let state = rig.open_dialog("x").await;
    let answer = rig
        .submit(
            &state,
            ALICE_ID,
            json!({"title": "  ", "severity": "SEV9", "field_service": null, "commander": "nobody"}),
        )
        .await;
    let errors = answer["errors"].as_object().expect("errors by field");
    let mut keys: Vec<&String> = errors.keys().collect();
    keys.sort();
    assert_eq!(keys, ["field_service", "severity", "title"]);
    assert!(errors["severity"].as_str().unwrap().contains("SEV1, SEV2, SEV3"));
    let answer = rig.submit(&state, ALICE_ID, json!({"commander": "n0b0dyn0b0dyn0b0dyn0b0dyy"})).await;
    assert_eq!(answer["errors"]["commander"], "There is no such user.", "{answer}");
    let answer = rig.submit(&state, ALICE_ID, json!({"field_service": "billing"})).await;
    assert_eq!(answer["errors"]["field_service"], "Choose one of checkout, search.");
    assert!(rig.open_numbers().await.is_empty());
    // Corrected, the same dialog goes through.
    assert_eq!(rig.submit(&state, ALICE_ID, json!({})).await, json!({}));
    assert_eq!(rig.open_numbers().await, [1]);
}

async fn when_the_dialog_cannot_open_the_title_declares_with_the_defaults(rig: Rig) {
    let v = rig.slash_as((ALICE_ID, "alice"), TOWN_SQUARE, "declare", EXPIRED_TRIGGER).await;
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("could not open (the trigger expired)") && text.contains("nothing was declared"), "{text}");
    assert!(rig.open_numbers().await.is_empty());
    let v = rig.slash_as((ALICE_ID, "alice"), TOWN_SQUARE, "create DB failover", EXPIRED_TRIGGER).await;
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("**INC-1** was declared with the defaults: severity SEV3"), "{text}");
    rig.notify().await;
    assert_eq!(rig.incident_channel()["name"], "inc-1-db-failover");
    assert_eq!(rig.incident_channel()["type"], "O", "private_channels = false");
}

async fn declare(rig: &Rig, title: &str) -> String {
    declare_with(rig, title, false).await
}

async fn declare_with(rig: &Rig, title: &str, private: bool) -> String {
    let state = rig.open_dialog(title).await;
    let answers = json!({"title": title, "commander": null, "private": private});
    assert_eq!(rig.submit(&state, ALICE_ID, answers).await, json!({}));
    rig.notify().await;
    rig.mm.created_channels().last().unwrap()["id"].as_str().unwrap().to_string()
}

async fn the_lifecycle_in_the_channel_updates_header_posts_and_announcements(rig: Rig) {
    let channel = declare(&rig, "Checkout is down").await;
    let header =
        |rig: &Rig| rig.mm.created_channels().last().unwrap()["header"].as_str().unwrap_or_default().to_string();
    assert!(rig.slash(&channel, "sev sev1").await.contains("INC-1 is now SEV1"));
    assert!(rig.slash(&channel, "commander @bob").await.contains("INC-1 is now led by @bob"));
    assert!(rig.slash(&channel, "commander @nobody").await.contains("There is no Mattermost user @nobody"));
    assert!(rig.slash(&channel, "update rolled back the deploy").await.contains("has your status update"));
    assert!(
        rig.slash(&channel, "severity SEV7").await.contains("SEV7 is not a severity here; use one of SEV1, SEV2, SEV3")
    );
    assert!(rig.slash(&channel, "mitigated").await.contains("INC-1 is mitigated"));
    assert!(rig.slash(&channel, "mitigate").await.contains("cannot mitigate incident INC-1: it is mitigated"));
    rig.notify().await;
    assert!(header(&rig).starts_with("**INC-1** · SEV1 · Mitigated · Commander: @bob"), "{}", header(&rig));
    assert!(rig.mm.channel_members(&channel).contains(&BOB_ID.to_string()), "the new commander is added");
    let status = rig.slash(&channel, "status").await;
    assert!(
        status.contains("**Status:** Mitigated") && status.contains("status update: rolled back the deploy"),
        "{status}"
    );

    assert!(rig.slash(&channel, "resolve").await.contains("INC-1 is resolved"));
    let again = rig.slash(&channel, "resolved").await;
    assert!(again.contains("INC-1 is already resolved"), "{again}");
    rig.notify().await;
    assert!(header(&rig).contains("Resolved"));
    let posts = rig.posts_in(&channel);
    assert_eq!(posts.len(), 6, "opening, severity, commander, update, mitigated, resolved: {posts:#?}");
    assert!(posts[1].contains("**Severity** changed by @alice: SEV2 → SEV1"), "{}", posts[1]);
    // Names in typed or recorded text are neutralised (a zero-width space after the @).
    assert!(
        posts[2].replace('\u{200B}', "").contains("**Commander** changed by @alice: @alice → @bob"),
        "{}",
        posts[2]
    );
    assert!(posts[3].contains("**Status update** from @alice: rolled back the deploy"));
    assert!(
        posts[5].contains("Resolved")
            && posts[5].contains("Retrospective draft")
            && posts[5].contains("**Time to resolve:**")
    );
    let announced = rig.posts_in(ANNOUNCE);
    assert_eq!(announced.len(), 3, "started, severity and resolved are announced; the rest is not: {announced:#?}");
    assert!(announced[2].contains("**Resolved** by @alice"));
    assert!(rig.open_numbers().await.is_empty(), "a resolved incident is not open");
    let timeline = rig.slash_as((ALICE_ID, "alice"), &channel, "timeline", "t").await;
    assert_eq!(timeline["response_type"], "in_channel");
    assert!(timeline["text"].as_str().unwrap().contains("**Time to mitigate:**"));
}

async fn commands_outside_an_incident_channel_say_where_to_run_them(rig: Rig) {
    let text = rig.slash(TOWN_SQUARE, "resolve").await;
    assert!(text.contains("works in an incident's own channel") && text.contains("/incident list"), "{text}");
    let text = rig.slash(TOWN_SQUARE, "launch the rockets").await;
    assert!(text.starts_with("Unknown subcommand `launch`.") && text.contains("/incident new [title]"), "{text}");
    let help = rig.slash(TOWN_SQUARE, "help").await;
    assert_eq!(help, klaxon::chatops::command::help("/incident"));
    assert_eq!(rig.slash(TOWN_SQUARE, "list").await, "No open incidents. `/incident new` declares one.");
    assert!(rig.slash(TOWN_SQUARE, "who").await.starts_with("No on-call rotations are configured"));
    let test = rig.slash(TOWN_SQUARE, "test").await;
    assert!(test.starts_with("**Connection test: all good.**") && test.contains("@klaxon-bot"), "{test}");
    let channel = declare(&rig, "Search is slow").await;
    let list = rig.slash(TOWN_SQUARE, "status").await;
    assert!(
        list.contains("**INC-1** (SEV2, started): Search is slow") && list.contains("~inc-1-search-is-slow"),
        "{list}"
    );
    let here = rig.slash(&channel, "status").await;
    assert!(here.starts_with("#### INC-1: Search is slow"), "{here}");
    // A wrong token is refused, with 200 and a text; nothing changes.
    let form = String::from_utf8(klaxon_tests::fixture("mattermost/slash-command.form"))
        .unwrap()
        .replace(COMMAND_TOKEN, "wrongtoken0000000000000000")
        .replace("CHANNEL_ID", &channel)
        .replace("TEXT", "resolve");
    let req = Request::post("/chatops/command")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let v = call(&rig, req).await;
    assert!(v["text"].as_str().unwrap().contains("token does not match"), "{v}");
    assert_eq!(rig.open_numbers().await, [1], "still open");
}

async fn a_taken_channel_name_gets_a_suffix_and_a_crashed_create_is_adopted(rig: Rig) {
    rig.mm.add_channel("s0m3b0dys0m3b0dys0m3b0dys0", "inc-1-checkout-is-down", "team lunch", false);
    rig.mm.add_channel("archiv3darchiv3darchiv3dar", "inc-1-checkout-is-down-2", "", true);
    // INC-1's channel: the first free name is -3. The create happens, but its answer is lost.
    rig.mm.fail_next("channel", 1, Fault::Status(500));
    let state = rig.open_dialog("Checkout is down").await;
    rig.submit(&state, ALICE_ID, json!({"private": false})).await;
    let failed = klaxon_tests::drain_notify_queue(&rig.app.state).await;
    assert_eq!(failed.len(), 0, "a 500 is retried within the job");
    let mine: Vec<Value> = rig.mm.created_channels().into_iter().filter(|c| c["create_at"] != 0).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["name"], "inc-1-checkout-is-down-3");

    rig.mm.fail_next("channel", 1, Fault::DoThen502);
    let state = rig.open_dialog("Search is slow").await;
    rig.submit(&state, ALICE_ID, json!({"title": "Search is slow", "private": false})).await;
    rig.notify().await;
    let mine: Vec<Value> = rig.mm.created_channels().into_iter().filter(|c| c["create_at"] != 0).collect();
    assert_eq!(mine.len(), 2, "the channel created before the 502 was adopted, not made twice: {mine:#?}");
    assert_eq!(mine[1]["name"], "inc-2-search-is-slow");
    let inc2 = rig.app.state.incidents().get(2).await.unwrap().unwrap().value;
    assert_eq!(inc2.channel_id.as_deref(), mine[1]["id"].as_str());
}

async fn a_bot_that_may_not_create_channels_is_recorded_with_the_fix(rig: Rig) {
    rig.mm.fail_next("channel", 1, Fault::Status(403));
    let state = rig.open_dialog("Checkout is down").await;
    rig.submit(&state, ALICE_ID, json!({})).await;
    rig.notify().await;
    assert!(rig.mm.created_channels().is_empty());
    let failed = rig.app.state.deliveries().failed(10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].reason.contains("HTTP 403"), "{}", failed[0].reason);
    assert_eq!(rig.posts_in(ANNOUNCE).len(), 1, "the announcement still went out");
    // Once fixed, `klaxon deliveries retry` creates the channel.
    klaxon::notify::retry::retry(&rig.app.state.deliveries(), rig.app.state.notify_queue.as_ref(), failed[0].job.id())
        .await
        .unwrap();
    rig.notify().await;
    assert_eq!(rig.incident_channel()["name"], "inc-1-checkout-is-down");
}

fn messages(incident: &klaxon::domain::Incident) -> Vec<String> {
    incident
        .timeline
        .iter()
        .filter(|e| e.what == "message")
        .map(|e| format!("{}: {}", e.actor, e.note.as_deref().unwrap_or_default()))
        .collect()
}

async fn the_channel_reader_mirrors_each_human_message_once_across_restarts(rig: Rig) {
    // A private channel: no outgoing webhook could follow it; the bot reads it as a member.
    let channel = declare_with(&rig, "Checkout is down", true).await;
    assert_eq!(rig.incident_channel()["type"], "P");
    rig.mm.post_as(ALICE_ID, &channel, "looking at the db");
    rig.mm.system_post(&channel, "bob joined the channel.");
    rig.mm.post_as(BOB_ID, &channel, "errors dropped after the rollback");
    let reader = rig.app.state.channel_reader().expect("incidents and a bot are configured");
    let report = reader.read_all().await.unwrap();
    assert_eq!((report.channels, report.added), (1, 2), "{report:?}");
    let incident = rig.app.state.incidents().get(1).await.unwrap().unwrap().value;
    assert_eq!(messages(&incident), ["@alice: looking at the db", "@bob: errors dropped after the rollback"]);
    assert!(incident.mirrored_until.is_some());

    // The bot's own posts (the opening, status lines) never come back as messages, and a
    // second pass adds nothing.
    rig.slash(&channel, "update rolled back").await;
    rig.notify().await;
    assert_eq!(reader.read_all().await.unwrap().added, 0);

    // Mattermost down for one pass, then a new process (a restart) reading on from the cursor.
    rig.mm.post_as(CAROL_ID, &channel, "customers confirm it works");
    rig.mm.fail_next("list", 1, Fault::Status(503));
    let report = reader.read_all().await.unwrap();
    assert_eq!((report.added, report.failed.len()), (0, 1), "{report:?}");
    let restarted = TestApp::from_state(rig.app.state.clone(), rig.app);
    let reader = restarted.state.channel_reader().unwrap();
    assert_eq!(reader.read_all().await.unwrap().added, 1);
    let incident = restarted.state.incidents().get(1).await.unwrap().unwrap().value;
    assert_eq!(messages(&incident).len(), 3);
    let status = klaxon::incidents::render::status(&incident, jiff::Timestamp::now());
    assert!(status.contains("@carol · message: customers confirm it works"), "{status}");
}

async fn the_channel_reader_pages_back_past_mattermosts_1000_post_cap(rig: Rig) {
    let channel = declare(&rig, "Noisy").await;
    for i in 0..1100 {
        rig.mm.post_as(BOB_ID, &channel, &format!("msg {i}"));
    }
    let reader = rig.app.state.channel_reader().unwrap();
    let report = reader.read_all().await.unwrap();
    assert_eq!(report.added, klaxon::incidents::mirror::MAX_MIRRORED);
    let incident = rig.app.state.incidents().get(1).await.unwrap().unwrap().value;
    let got = messages(&incident);
    assert_eq!(got[0], "@bob: msg 0", "the oldest posts were read too, by paging back");
    assert_eq!(got[499], "@bob: msg 499");
    assert_eq!(reader.read_all().await.unwrap().added, 0, "the cap holds");
}

async fn mirror_hook(rig: &Rig, channel: &str, user: (&str, &str), post_id: &str, text: &str, token: &str) -> Value {
    let form = String::from_utf8(klaxon_tests::fixture("mattermost/outgoing-webhook.form"))
        .unwrap()
        .replace("4xp9fdt2pjrnbqkxhq8w1ctmhe", channel)
        .replace("ymb5ng8qo3fxtjnz6kby8ttbme", post_id)
        .replace("c9whso3ybtyxjbd6xpwqztmx7c", user.0)
        .replace("user_name=alice", &format!("user_name={}", user.1))
        .replace("7kmxqf1b9jdzfcbj1d3u7uwqyo", token)
        .replace("trigger_word=%23alert", "trigger_word=");
    let text_param = serde_urlencoded::to_string([("text", text)]).unwrap();
    let form = form
        .split('&')
        .map(|kv| if kv.starts_with("text=") { text_param.as_str() } else { kv })
        .collect::<Vec<_>>()
        .join("&");
    let req = Request::post("/chatops/mirror")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    call(rig, req).await
}

async fn the_mirror_webhook_adds_each_post_once_and_skips_the_bot(rig: Rig) {
    let channel = declare(&rig, "Checkout is down").await;
    let alice = (ALICE_ID, "alice");
    assert_eq!(
        mirror_hook(&rig, &channel, alice, "p0st1p0st1p0st1p0st1p0st1p", "db is back", MIRROR_TOKEN).await,
        json!({})
    );
    assert_eq!(
        mirror_hook(&rig, &channel, alice, "p0st1p0st1p0st1p0st1p0st1p", "db is back", MIRROR_TOKEN).await,
        json!({})
    );
    let bot = (BOT_USER_ID, "klaxon-bot");
    mirror_hook(&rig, &channel, bot, "b0tp0stb0tp0stb0tp0stb0tp", "**Mitigated** by @alice", MIRROR_TOKEN).await;
    // A single mirror channel: messages naming the incident go to it, others are ignored.
    mirror_hook(&rig, TOWN_SQUARE, (BOB_ID, "bob"), "p0st2p0st2p0st2p0st2p0st2p", "INC-1: rollback done", MIRROR_TOKEN)
        .await;
    mirror_hook(&rig, TOWN_SQUARE, (BOB_ID, "bob"), "p0st3p0st3p0st3p0st3p0st3p", "lunch?", MIRROR_TOKEN).await;
    let refused =
        mirror_hook(&rig, &channel, alice, "p0st4p0st4p0st4p0st4p0st4p", "sneaky", "wr0ngt0k3nwr0ngt0k3nwr0ngt").await;
    assert!(refused["text"].as_str().unwrap().contains("does not match incidents.mirror_token"), "{refused}");
    let incident = rig.app.state.incidents().get(1).await.unwrap().unwrap().value;
    assert_eq!(messages(&incident), ["@alice: db is back", "@bob: INC-1: rollback done"]);
    // The channel reader does not add the same posts again (the webhook's post ids are the posts').
    let retro = klaxon::incidents::render::retrospective(&incident, jiff::Timestamp::now());
    assert!(retro.contains("@alice · message: db is back"), "{retro}");
}

/// The `state` and `redirect_uri` of a "Connect now" link.
fn link_parts(link: &str) -> (String, String) {
    let query = link.split_once('?').expect("a query").1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    (get("state"), get("redirect_uri"))
}

async fn connect_link(rig: &Rig, user: (&str, &str)) -> String {
    let v = rig.slash_as(user, TOWN_SQUARE, "connect", "t").await;
    let text = v["text"].as_str().unwrap().to_string();
    let link = text.split("](").nth(1).and_then(|r| r.split(')').next()).expect(&text).to_string();
    assert!(
        link.starts_with(&format!("{}/oauth/authorize?response_type=code&client_id={OAUTH_CLIENT_ID}", rig.mm.url)),
        "{link}"
    );
    link
}

async fn callback(rig: &Rig, query: &[(&str, &str)]) -> (StatusCode, String) {
    callback_on(klaxon::http::all(rig.app.state.clone()), query).await
}

async fn callback_on(router: axum::Router, query: &[(&str, &str)]) -> (StatusCode, String) {
    let uri = format!("/chatops/oauth/callback?{}", serde_urlencoded::to_string(query).unwrap());
    let res = router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

async fn a_connected_user_declares_channels_as_themselves_and_the_token_is_stored_encrypted(rig: Rig) {
    let link = connect_link(&rig, (ALICE_ID, "alice")).await;
    let (state, redirect) = link_parts(&link);
    assert_eq!(redirect, "https://klaxon.example.com/chatops/oauth/callback");
    let code = rig.mm.approve(ALICE_ID, &redirect);
    let (status, page) = callback(&rig, &[("code", &code), ("state", &state)]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Connected @alice."), "{page}");
    assert!(!page.contains("us3rt0k"), "the token is never shown");
    let raw = rig.app.state.store.get(&format!("oauth-user#{ALICE_ID}"), "token").await.unwrap().expect("stored");
    assert!(!raw.data.contains("us3rt0k") && !raw.data.contains("r3fr3sh"), "only ciphertext is stored: {}", raw.data);

    // The same link again (a replay, even with a fresh code) changes nothing.
    let again = rig.mm.approve(ALICE_ID, &redirect);
    let (status, page) = callback(&rig, &[("code", &again), ("state", &state)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("already used"), "{page}");

    // Alice's next incident channel is created as Alice, with the bot added to post.
    let channel = declare(&rig, "Checkout is down").await;
    assert_eq!(rig.mm.channel_creator(&channel).as_deref(), Some(ALICE_ID));
    assert!(rig.mm.channel_members(&channel).contains(&BOT_USER_ID.to_string()));
    assert_eq!(rig.posts_in(&channel).len(), 1, "the bot posted the opening");
}

async fn bad_states_other_users_and_refused_codes_get_a_clear_page_and_store_nothing(rig: Rig) {
    let link = connect_link(&rig, (ALICE_ID, "alice")).await;
    let (state, redirect) = link_parts(&link);
    let bad = |page: &str, want: &str| assert!(page.contains(want), "want {want:?} in {page}");
    let mut forged: Value = serde_json::from_str(&state).unwrap();
    forged["u"] = json!(BOB_ID);
    let code = rig.mm.approve(BOB_ID, &redirect);
    let (status, page) = callback(&rig, &[("code", &code), ("state", &forged.to_string())]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    bad(&page, "signature does not match");
    let signer = rig.app.state.state_signer().unwrap();
    let expired = signer.sign_state("oauth:connect", ALICE_ID, json!({}), 1_000, 900);
    bad(&callback(&rig, &[("code", &code), ("state", &expired)]).await.1, "expired");
    // Bob approves Alice's link: refused, nothing stored for either.
    bad(&callback(&rig, &[("code", &code), ("state", &state)]).await.1, "signed in to Mattermost as @bob");
    // Every refusal of the exchange, with the link still usable afterwards.
    bad(&callback(&rig, &[("code", "n0such"), ("state", &state)]).await.1, "expired or was already used");
    let wrong_redirect = rig.mm.approve(ALICE_ID, "https://elsewhere.example.com/cb");
    bad(&callback(&rig, &[("code", &wrong_redirect), ("state", &state)]).await.1, "redirect URI");
    let mut config = (*rig.app.state.config).clone();
    config.incidents.oauth.as_mut().unwrap().client_secret = klaxon::config::Secret::new("wrong-secret");
    let wrong = klaxon::app::AppState { config: std::sync::Arc::new(config), ..rig.app.state.clone() };
    let code = rig.mm.approve(ALICE_ID, &redirect);
    bad(&callback_on(klaxon::http::all(wrong), &[("code", &code), ("state", &state)]).await.1, "client id or secret");
    bad(&callback(&rig, &[("error", "access_denied"), ("state", &state)]).await.1, "did not allow");
    rig.mm.fail_next("token", 1, Fault::Status(503));
    let code = rig.mm.approve(ALICE_ID, &redirect);
    bad(&callback(&rig, &[("code", &code), ("state", &state)]).await.1, "could not be reached");
    let repo = rig.app.state.oauth().unwrap();
    assert!(repo.user(ALICE_ID).await.unwrap().is_none() && repo.user(BOB_ID).await.unwrap().is_none());
    // Still usable: nothing was claimed by the refusals.
    let code = rig.mm.approve(ALICE_ID, &redirect);
    assert_eq!(callback(&rig, &[("code", &code), ("state", &state)]).await.0, StatusCode::OK);
}

async fn the_admin_install_stores_the_app_token(rig: Rig) {
    // A Klaxon without a bot token: nothing to call Mattermost with before the install.
    let mut config = (*rig.app.state.config).clone();
    config.mattermost.as_mut().unwrap().bot_token = None;
    let no_bot = klaxon::app::AppState {
        config: std::sync::Arc::new(config),
        app_token: Default::default(),
        mattermost_client: Default::default(),
        ..rig.app.state.clone()
    };
    no_bot.load_app_token().await;
    assert!(no_bot.mattermost().unwrap().me().await.is_err(), "no token yet");

    let link =
        klaxon::chatops::oauth::authorize_link(&rig.app.state, klaxon::chatops::oauth::INSTALL, "", "admin").unwrap();
    let (state, redirect) = link_parts(&link);
    let code = rig.mm.approve(CAROL_ID, &redirect);
    let (status, page) = callback(&rig, &[("code", &code), ("state", &state)]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("installed as @carol"), "{page}");
    let token = rig.app.state.oauth().unwrap().app_token().await.unwrap().expect("the app token is stored");
    assert!(token.expose().starts_with("us3rt0k"));
    assert!(!format!("{token:?}").contains("us3rt0k"), "Debug never shows it");
    // Loaded at the next start (or invocation), the app's token is what API calls use.
    no_bot.load_app_token().await;
    assert_eq!(no_bot.mattermost().unwrap().me().await.unwrap().username, "carol");
    assert!(no_bot.channel_reader().is_some(), "incidents work without a bot token now");
}
