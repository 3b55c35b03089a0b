use super::*;

const EXAMPLE: &str = include_str!("../../../klaxon.example.toml");

fn env_all(name: &str) -> Option<String> {
    Some(match name {
        "KLAXON_SIGNING_SECRET" => "0123456789abcdef0123456789abcdef".into(),
        "KLAXON_HOOK_OPS" => "https://chat.example.com/hooks/xyz123".into(),
        _ => format!("value-of-{name}"),
    })
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn issues(text: &str) -> Vec<ConfigIssue> {
    match Config::from_toml(text, "test.toml", &env_all) {
        Err(ConfigError::Invalid { issues, .. }) => issues,
        Ok(_) => panic!("expected validation issues"),
        Err(other) => panic!("expected validation issues, got {other}"),
    }
}

fn fields(text: &str) -> Vec<String> {
    issues(text).into_iter().map(|i| i.field).collect()
}

#[test]
fn the_shipped_example_is_valid() {
    let c = Config::from_toml(EXAMPLE, "klaxon.example.toml", &env_all).expect("example validates");
    assert_eq!(c.sources.len(), 2);
    assert_eq!(c.source("freezer").map(|s| s.grouping_window().as_secs()), Some(600));
    assert_eq!(c.incidents.default_severity(), Some("SEV3"));
    assert_eq!(
        c.mattermost.as_ref().and_then(|m| m.bot_token.as_ref()).map(Secret::expose),
        Some("value-of-KLAXON_BOT_TOKEN")
    );
    let summary = c.summary();
    assert!(summary.contains("sources: 2: chat (mattermost), freezer (particle)"), "{summary}");
    assert!(summary.contains("incidents: on (INC-N, private channels"), "{summary}");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let c = Config::from_toml(EXAMPLE, "klaxon.example.toml", &env_all).unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("value-of-KLAXON_BOT_TOKEN"), "bot token leaked");
    assert!(!dump.contains("0123456789abcdef"), "signing secret leaked");
    assert!(!dump.contains("hooks/xyz123"), "webhook URL leaked");
}

#[test]
fn missing_env_vars_are_each_named_with_their_field() {
    let err = Config::from_toml(EXAMPLE, "klaxon.example.toml", &no_env).unwrap_err();
    let ConfigError::Invalid { issues, .. } = err else { panic!("expected Invalid") };
    let bot = issues.iter().find(|i| i.field == "mattermost.bot_token").expect("bot token issue");
    assert!(bot.problem.contains("KLAXON_BOT_TOKEN is not set"), "{bot}");
    assert!(issues.iter().any(|i| i.field == "sources[1].token"));
    assert!(issues.iter().any(|i| i.field == "incidents.oauth.client_secret"));
    assert_eq!(issues.iter().filter(|i| i.field == "server.signing_secret").count(), 1, "reported once, as missing");
}

#[test]
fn an_empty_file_needs_only_a_version() {
    assert_eq!(fields(""), ["version"]);
    let c = Config::from_toml("version = 1", "t", &no_env).unwrap();
    assert!(c.sources.is_empty() && c.mattermost.is_none());
    assert!(matches!(Config::from_toml("version = 2", "t", &no_env), Err(ConfigError::Invalid { .. })));
}

#[test]
fn unknown_keys_are_syntax_errors_that_name_the_key_and_line() {
    let err = Config::from_toml(
        "version = 1\n[[sources]]\nid = \"a\"\nkind = \"particle\"\ntokn = \"x\"\n",
        "t.toml",
        &no_env,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("tokn") && msg.contains("line 5"), "{msg}");
    let err =
        Config::from_toml("version = 1\n[[sources]]\nid = \"a\"\nkind = \"email\"\n", "t.toml", &no_env).unwrap_err();
    assert!(err.to_string().contains("mattermost") && err.to_string().contains("particle"), "{err}");
}

#[test]
fn a_syntax_error_names_line_and_column_but_never_quotes_the_line() {
    let text = "version = 1\n[mattermost]\nurl = \"https://chat.example.com\"\nbot_token = \"xoxb-s3cr3t-t0ken\n";
    let msg = Config::from_toml(text, "t.toml", &no_env).unwrap_err().to_string();
    assert!(msg.contains("line 4, column"), "{msg}");
    assert!(!msg.contains("s3cr3t"), "the line may hold a secret: {msg}");
    let msg = Config::from_toml("version = 1\n[server]\nsigning_secret = s3cr3t-unquoted\n", "t.toml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 3") && !msg.contains("s3cr3t"), "{msg}");
}

#[test]
fn a_source_without_token_is_refused_unless_marked_insecure() {
    let text = "version = 1\n[[sources]]\nid = \"chat\"\nkind = \"mattermost\"\n";
    let i = issues(text);
    assert_eq!(i[0].field, "sources[0].token");
    assert!(i[0].fix.contains("insecure = true"), "{}", i[0]);
    Config::from_toml(&format!("{text}insecure = true\n"), "t", &no_env).expect("explicitly insecure is allowed");
}

#[test]
fn every_broken_reference_is_reported_at_once() {
    let text = r#"
version = 1
[routing]
default = "nowhere"
[[routing.routes]]
events = ["alert.exploded"]
sources = ["ghost"]
channel = "void"
[[sources]]
id = "dup"
kind = "particle"
token = "long-enough-key"
escalation_policy = "missing"
summary_template = "{{event"
[[sources]]
id = "dup"
kind = "particle"
insecure = true
"#;
    let f = fields(text);
    for expected in [
        "routing.default",
        "routing.routes[0].events",
        "routing.routes[0].sources",
        "routing.routes[0].channel",
        "sources[0].escalation_policy",
        "sources[0].summary_template",
        "sources[1].id",
    ] {
        assert!(f.iter().any(|x| x == expected), "missing {expected} in {f:?}");
    }
}

#[test]
fn channels_need_exactly_one_destination_that_exists() {
    let text = r#"
version = 1
[mattermost]
url = "https://chat.example.com"
webhooks = { ops = "https://chat.example.com/hooks/abc" }
[channels.both]
channel_id = "4xp9fdt2pjrnbqkxhq8w1ctmhe"
webhook = "ops"
[channels.neither]
[channels.nobot]
channel_id = "4xp9fdt2pjrnbqkxhq8w1ctmhe"
[channels.badhook]
webhook = "missing"
"#;
    let i = issues(text);
    let f: Vec<&str> = i.iter().map(|x| x.field.as_str()).collect();
    assert!(f.contains(&"channels.both") && f.contains(&"channels.neither"), "{f:?}");
    assert!(f.contains(&"channels.nobot.channel_id") && f.contains(&"channels.badhook.webhook"), "{f:?}");
}

#[test]
fn the_bots_user_id_is_optional_klaxon_asks_mattermost() {
    let without = EXAMPLE.replace("bot_user_id = \"6zn1q4rd5ibzjgpgxysi5jyrra\"", "");
    let c = Config::from_toml(&without, "t", &env_all).expect("valid without bot_user_id");
    assert!(c.mattermost.unwrap().bot_user_id.is_none());
}

#[test]
fn aws_storage_needs_its_table_and_the_right_queue_kinds() {
    let text = "version = 1\n[storage]\nbackend = \"aws\"\nnotify_queue_url = \"https://sqs/q\"\ntimer_queue_url = \"https://sqs/t.fifo\"\n";
    let i = issues(text);
    let f: Vec<&str> = i.iter().map(|x| x.field.as_str()).collect();
    assert_eq!(f, ["storage.table", "storage.notify_queue_url", "storage.timer_queue_url"]);
    assert!(i[1].problem.contains(".fifo"), "{}", i[1]);
}

#[test]
fn incidents_need_a_bot_a_team_a_command_token_and_a_seq_in_channel_names() {
    let text =
        "version = 1\n[incidents]\nenabled = true\nchannel_name_template = \"inc-{name}\"\ndefault_severity = \"P0\"\n";
    let f = fields(text);
    for expected in [
        "server.signing_secret",
        "incidents.enabled",
        "mattermost.team_id",
        "incidents.channel_name_template",
        "incidents.default_severity",
        "incidents.command_token",
    ] {
        assert!(f.iter().any(|x| x == expected), "missing {expected} in {f:?}");
    }
}

#[test]
fn rotations_and_references_to_them_are_checked() {
    let text = r#"
version = 1
[[escalation_policies]]
id = "p"
[[escalation_policies.steps]]
after = "2d"
notify = ["rotation:primary", "rotation:nope"]
[[rotations]]
id = "primary"
users = ["alice"]
shift = "1w"
time_zone = "Europe/Berlin"
start = "2026-11-30"
[[rotations]]
id = "primary"
users = []
shift = "1w"
time_zone = "Mars/Olympus"
start = "2026-11-30"
"#;
    let f = fields(text);
    assert_eq!(f, ["escalation_policies[0].steps[0].notify", "rotations[1].id", "rotations[1]"], "2d is a valid delay");
}

#[test]
fn maintenance_windows_are_checked() {
    let text = r#"
version = 1
[[maintenance]]
id = "deploy"
sources = ["nope"]
start = "2026-12-01T02:00"
duration = "1h"
weekly = true
time_zone = "Europe/Berlin"
[[maintenance]]
id = "deploy"
start = "2026-12-01T02:00"
"#;
    let f = fields(text);
    assert_eq!(f, ["maintenance[0].sources", "maintenance[1].id", "maintenance[1]"]);
}

#[test]
fn escalation_steps_are_checked() {
    let text = r#"
version = 1
[[escalation_policies]]
id = "p"
repeat = 50
[[escalation_policies.steps]]
after = "10s"
notify = ["alice"]
[[escalation_policies]]
id = "p"
steps = []
"#;
    let f = fields(text);
    for expected in [
        "escalation_policies[0].repeat",
        "escalation_policies[0].steps[0].after",
        "escalation_policies[0].steps[0].notify",
        "escalation_policies[1].id",
        "escalation_policies[1].steps",
    ] {
        assert!(f.iter().any(|x| x == expected), "missing {expected} in {f:?}");
    }
}

#[test]
fn bad_durations_and_urgencies_fail_at_parse_with_the_expected_form() {
    let err = Config::from_toml("version = 1\n[[sources]]\nid = \"a\"\nkind = \"particle\"\ninsecure = true\ngrouping_window = \"ten minutes\"\n", "t", &no_env).unwrap_err();
    assert!(err.to_string().contains("\"10m\""), "{err}");
    let err = Config::from_toml(
        "version = 1\n[[sources]]\nid = \"a\"\nkind = \"particle\"\ninsecure = true\ndefault_urgency = \"urgent\"\n",
        "t",
        &no_env,
    )
    .unwrap_err();
    assert!(err.to_string().contains("critical"), "{err}");
}

#[test]
fn templates_must_close_their_placeholders() {
    assert!(validate::check_template("{{event}} on {{ coreid }}").is_ok());
    assert!(validate::check_template("plain text").is_ok());
    assert!(validate::check_template("{{event").is_err());
    assert!(validate::check_template("{{}}").is_err());
}
