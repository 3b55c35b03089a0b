//! The `/incident` slash command (`POST /chatops/command`, mattermost.md §2).
//!
//! Mattermost shows the user an error for any answer but HTTP 200 and only shows `text`, so
//! every answer is 200 with a `text` that says what happened; ephemeral unless it is meant for
//! the channel. Nothing slow happens here: the incident's channel and announcements are made by
//! the notifier from the incident's jobs.

use super::command::{self, Command, Scope};
use super::dialog;
use crate::app::AppState;
use crate::config::Secret;
use crate::domain::Actor;
use crate::incidents::render;
use crate::incidents::service::{Change, Changed, Declaration, Declared};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

/// The form fields Mattermost sends (§2.1) that Klaxon reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlashRequest {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub trigger_id: String,
    #[serde(default)]
    pub response_url: String,
}

/// Only the user who ran the command sees this.
pub fn ephemeral(text: impl Into<String>) -> Value {
    json!({ "response_type": "ephemeral", "text": text.into() })
}

/// Whether the request carries the configured command token, in the form or in
/// `Authorization: Token ...`; compared in constant time.
pub fn token_matches(expected: &Secret, form_token: &str, authorization: Option<&str>) -> bool {
    let want = expected.expose().as_bytes();
    let header_token = authorization.and_then(|h| h.strip_prefix("Token ")).unwrap_or_default();
    let form_ok = !form_token.is_empty() && bool::from(form_token.as_bytes().ct_eq(want));
    let header_ok = !header_token.is_empty() && bool::from(header_token.trim().as_bytes().ct_eq(want));
    form_ok || header_ok
}

/// The answer to one `/incident` command.
pub async fn handle(state: &AppState, req: &SlashRequest, authorization: Option<&str>) -> Value {
    let inc = &state.config.incidents;
    let Some(expected) = &inc.command_token else {
        return ephemeral(
            "Klaxon's /incident command is not set up: incidents.command_token is missing in klaxon.toml; nothing changed.",
        );
    };
    if !token_matches(expected, &req.token, authorization) {
        tracing::warn!(user_id = %req.user_id, "slash command refused: wrong token");
        return ephemeral(
            "This command's token does not match incidents.command_token in Klaxon's configuration; nothing changed. An admin can copy the token from Integrations > Slash Commands.",
        );
    }
    if !inc.enabled {
        return ephemeral("Incidents are switched off in Klaxon (incidents.enabled = false); nothing changed.");
    }
    let trigger = if req.command.is_empty() { "/incident" } else { req.command.as_str() };
    let (cmd, spec) = match command::parse(&req.text) {
        Ok(parsed) => parsed,
        Err(e) => return ephemeral(e.to_string()),
    };
    let actor = Actor::user(&req.user_id, &req.user_name);
    let now = jiff::Timestamp::now();
    let service = state.incident_service();
    let here = match service.repo().get_by_channel(&req.channel_id).await {
        Ok(found) => found,
        Err(e) => return unavailable(&e),
    };
    if spec.scope == Scope::IncidentChannel && here.is_none() {
        return ephemeral(format!(
            "`{trigger} {}` works in an incident's own channel, and this channel is not one. `{trigger} list` shows the open incidents and their channels.",
            spec.names[0]
        ));
    }
    let change = match cmd {
        Command::Help => return ephemeral(command::help(trigger)),
        Command::New { title } => return dialog::start(state, req, title).await,
        Command::List => return list(state, now).await,
        Command::Status => {
            return match &here {
                Some(i) => ephemeral(render::status(&i.value, now)),
                None => list(state, now).await,
            };
        }
        Command::Timeline => {
            let Some(i) = &here else { return ephemeral("Not an incident channel.") };
            return json!({ "response_type": "in_channel", "text": render::retrospective(&i.value, now) });
        }
        Command::Test => return test(state).await,
        Command::OnCall => return ephemeral(crate::escalation::on_call_text(&state.config, now, 3)),
        Command::MaintenanceStart { length, source } => return maintenance_start(state, &length, source, now).await,
        Command::MaintenanceStop => return maintenance_stop(state, now).await,
        Command::MaintenanceList => return maintenance_list(state, now).await,
        Command::Connect => return ephemeral(super::oauth::connect_text(state, &req.user_id, &req.user_name)),
        Command::Mitigate => Change::Mitigate,
        Command::Resolve => Change::Resolve,
        Command::Cancel { reason } => Change::Cancel { reason },
        Command::Update { text } => Change::Update(text),
        Command::Severity { severity } => match inc.severities.iter().find(|s| s.eq_ignore_ascii_case(&severity)) {
            Some(s) => Change::Severity(s.clone()),
            None => {
                return ephemeral(format!(
                    "{severity} is not a severity here; use one of {}. Nothing changed.",
                    inc.severities.join(", ")
                ));
            }
        },
        Command::Commander { username } => match find_user(state, &username).await {
            Ok(a) => Change::Commander(a),
            Err(text) => return ephemeral(text),
        },
    };
    let Some(read) = here else { return ephemeral("Not an incident channel.") };
    match service.change(read, change.clone(), actor, now).await {
        Ok(Changed::Done(i)) => ephemeral(done_text(&i, &change)),
        Ok(Changed::Refused { reason, .. }) => ephemeral(format!("{reason}. Nothing changed.")),
        Err(e) => {
            tracing::error!(channel_id = %req.channel_id, error = %e, "incident change could not be recorded");
            ephemeral(e.to_string())
        }
    }
}

async fn maintenance_start(state: &AppState, length: &str, source: Option<String>, now: jiff::Timestamp) -> Value {
    let d = match length.parse::<crate::config::ConfigDuration>() {
        Ok(d) if !d.0.is_zero() && d.0 <= std::time::Duration::from_secs(7 * 86_400) => d.0,
        _ => {
            return ephemeral(format!(
                "{length:?} is not a window length; write it like 30m, 2h or 1d (at most 7d). Nothing changed."
            ));
        }
    };
    if let Some(s) = &source
        && state.config.source(s).is_none()
    {
        return ephemeral(format!("There is no source {s:?}; nothing changed."));
    }
    let length = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::ZERO);
    match state.windows().start(source, length, now).await {
        Ok(w) => ephemeral(format!(
            "Maintenance window started: {}. Alerts are recorded but not posted or escalated until it ends; then one summary lists them.",
            crate::escalation::windows::describe(&w)
        )),
        Err(e) => unavailable(&e),
    }
}

async fn maintenance_stop(state: &AppState, now: jiff::Timestamp) -> Value {
    match state.windows().stop(now).await {
        Ok(w) if w.is_empty() => ephemeral("No maintenance window started from chat is running; nothing changed."),
        Ok(w) => ephemeral(format!(
            "Stopped: {}. Alerts that arrived during it are posted and summarised within a minute.",
            w.iter().map(crate::escalation::windows::describe).collect::<Vec<_>>().join("; ")
        )),
        Err(e) => unavailable(&e),
    }
}

async fn maintenance_list(state: &AppState, now: jiff::Timestamp) -> Value {
    match state.windows().list(now).await {
        Ok(w) if w.is_empty() => ephemeral("No maintenance window is running or starting within a week."),
        Ok(w) => {
            let lines: Vec<String> =
                w.iter().map(|w| format!("- {}", crate::escalation::windows::describe(w))).collect();
            ephemeral(format!("**Maintenance windows**\n{}", lines.join("\n")))
        }
        Err(e) => unavailable(&e),
    }
}

fn done_text(i: &crate::domain::Incident, change: &Change) -> String {
    let what = match change {
        Change::Mitigate => "is mitigated".to_string(),
        Change::Resolve => "is resolved; its retrospective draft follows in the channel".to_string(),
        Change::Cancel { .. } => "is cancelled".to_string(),
        Change::Severity(s) => format!("is now {s}"),
        Change::Commander(c) => format!("is now led by {c}"),
        Change::Update(_) => "has your status update".to_string(),
    };
    format!("{} {what}. The channel and the announcement follow in a moment.", i.id)
}

fn unavailable(e: &dyn std::fmt::Display) -> Value {
    tracing::error!(error = %e, "slash command: the store is unavailable");
    ephemeral("Klaxon cannot read its store right now; nothing changed. Try again in a moment.")
}

async fn list(state: &AppState, now: jiff::Timestamp) -> Value {
    match state.incidents().open().await {
        Ok(open) => ephemeral(render::list(&open, now)),
        Err(e) => unavailable(&e),
    }
}

/// The Mattermost user called `username`, as an actor; or the answer saying why not.
async fn find_user(state: &AppState, username: &str) -> Result<Actor, String> {
    let Some(mm) = state.mattermost() else { return Ok(Actor::user("", username)) };
    match mm.user_by_name(username).await {
        Ok(Some(u)) => Ok(Actor::user(u.id, u.username)),
        Ok(None) => Err(format!("There is no Mattermost user @{username}; nothing changed.")),
        Err(e) => Err(format!("Klaxon could not look up @{username} ({e}); nothing changed, try again.")),
    }
}

async fn test(state: &AppState) -> Value {
    let checks = crate::notify::connection::test_connection(&state.config).await;
    let failed = checks.iter().filter(|c| !c.ok).count();
    let mut lines: Vec<String> =
        checks.iter().map(|c| format!("{} {}", if c.ok { ":white_check_mark:" } else { ":x:" }, c.line)).collect();
    lines.insert(
        0,
        if failed == 0 {
            "**Connection test: all good.**".into()
        } else {
            format!("**Connection test: {failed} failed.**")
        },
    );
    ephemeral(lines.join("\n"))
}

/// Declares an incident from the slash command alone (when the dialog cannot open).
pub async fn declare_inline(state: &AppState, req: &SlashRequest, title: String, why: &str) -> Value {
    let inc = &state.config.incidents;
    if title.trim().is_empty() {
        return ephemeral(format!(
            "The incident dialog could not open ({why}). Run `/incident new <title>` to declare one with the default severity; nothing was declared."
        ));
    }
    let severity = inc.default_severity().unwrap_or("SEV3").to_string();
    let d = Declaration {
        title: title.trim().to_string(),
        severity: severity.clone(),
        summary: String::new(),
        commander: None,
        fields: Default::default(),
        private: inc.private_channels,
        declared_by: Actor::user(&req.user_id, &req.user_name),
        request_key: None,
    };
    match state.incident_service().declare(d, jiff::Timestamp::now()).await {
        Ok(Declared::New(i) | Declared::Already(i)) => ephemeral(format!(
            "The incident dialog could not open ({why}), so **{}** was declared with the defaults: severity {severity}, commander you. Its channel is being created and you will be added. Change them there with `/incident severity` and `/incident commander`.",
            i.id
        )),
        Err(e) => ephemeral(e.to_string()),
    }
}
