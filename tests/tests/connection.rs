//! `klaxon test-connection` and `klaxon channels` against fake Mattermost servers.

use klaxon::config::Config;
use klaxon::notify::connection::{TEST_POST, list_channels, test_connection};
use klaxon_tests::fake_mattermost::{BOT_TOKEN, FakeMattermost};

const OPS: &str = "0psch4nnel0psch4nnel0psch4";
const LOST: &str = "l0stch4nnell0stch4nnell0st";

fn config(bot: &FakeMattermost, token: &str, hook_url: &str) -> Config {
    let text = format!(
        r#"
version = 1
[server]
signing_secret = "0123456789abcdef0123456789abcdef"
[mattermost]
url = "{url}"
bot_token = "{token}"
bot_user_id = "b0tb0tb0tb0tb0tb0tb0tb0tb0"
webhooks = {{ lab = "{hook_url}" }}
[channels.ops]
channel_id = "{OPS}"
[channels.lost]
channel_id = "{LOST}"
[channels.lab]
webhook = "lab"
[routing]
default = "ops"
[[routing.routes]]
events = ["alert.triggered"]
channel = "lost"
"#,
        url = bot.url
    );
    Config::from_toml(&text, "t.toml", &|_| None).unwrap()
}

#[tokio::test]
async fn every_destination_is_checked_with_the_reason_and_fix_for_each_failure() {
    let bot = FakeMattermost::start().await;
    let hooks = FakeMattermost::start().await;
    bot.add_bot_to(OPS);
    let checks = test_connection(&config(&bot, BOT_TOKEN, &hooks.webhook("lab-hook"))).await;
    let lines: Vec<(bool, &str)> = checks.iter().map(|c| (c.ok, c.line.as_str())).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[0].0 && lines[0].1.starts_with("bot: @klaxon-bot"), "{lines:#?}");
    let find =
        |name: &str| lines.iter().find(|(_, l)| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {lines:#?}"));
    assert!(find("ops").0 && find("ops").1.contains("can post here") && find("ops").1.contains("[routes: default]"));
    let lost = find("lost");
    assert!(!lost.0 && lost.1.contains("is not a member") && lost.1.contains("add the bot to the channel"), "{lost:?}");
    assert!(lost.1.contains("[routes: alert.triggered]"), "{lost:?}");
    assert!(find("lab").0, "{lines:#?}");
    let posts = hooks.webhook_posts("lab-hook");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["text"], TEST_POST, "clearly marked as a test");
}

#[tokio::test]
async fn a_refused_token_and_a_dead_webhook_fail_with_their_fixes() {
    let bot = FakeMattermost::start().await;
    bot.add_bot_to(OPS);
    let checks = test_connection(&config(&bot, "wrong-token-000000000000", &format!("{}/hooks/gone", bot.url))).await;
    assert!(checks.iter().all(|c| !c.ok), "{checks:#?}");
    assert!(checks[0].line.contains("create a new access token"), "{}", checks[0].line);
    let lab = checks.iter().find(|c| c.line.starts_with("lab")).unwrap();
    assert!(lab.line.contains("create a new incoming webhook"), "{}", lab.line);
    assert!(!lab.line.contains("/hooks/gone"), "the webhook URL is a secret: {}", lab.line);
}

#[tokio::test]
async fn channels_lists_the_public_and_private_channels_of_the_bot() {
    let bot = FakeMattermost::start().await;
    bot.add_bot_to(OPS);
    let rows = list_channels(&config(&bot, BOT_TOKEN, "http://127.0.0.1:9/hooks/x")).await.unwrap();
    assert_eq!(rows.len(), 1, "DMs are left out: {rows:?}");
    assert_eq!((rows[0].team.as_str(), rows[0].id.as_str(), rows[0].private), ("acme", OPS, false));
}
