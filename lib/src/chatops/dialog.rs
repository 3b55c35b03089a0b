//! The "declare an incident" dialog (mattermost.md §6): opened by `/incident new` with the
//! command's `trigger_id`, submitted to `POST /chatops/dialog`.
//!
//! A submission carries no signature, so the dialog's `state` is signed by Klaxon and bound to
//! the user who ran the command and to an expiry ([`super::signing::State`]); its nonce makes a
//! repeated submission create one incident. The answer to a submission is `{}` (close the
//! dialog), `{"errors": {field: message}}` (shown under the fields), or `{"error": message}`.

use super::slash::{SlashRequest, declare_inline, ephemeral};
use crate::app::AppState;
use crate::config::{Config, DialogFieldKind};
use crate::domain::Actor;
use crate::incidents::service::{Declaration, Declared};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// What a dialog's state is for.
const PURPOSE: &str = "dialog:new";
/// How long a dialog may stay open before its submission is refused.
pub const DIALOG_LIFETIME_SECS: i64 = 3600;
const MAX_TITLE: usize = 200;
const MAX_SUMMARY: usize = 3000;

/// The dialog, with the title prefilled.
pub fn dialog(config: &Config, title: &str, state: String) -> Value {
    let inc = &config.incidents;
    let options = |values: &[String]| values.iter().map(|v| json!({ "text": v, "value": v })).collect::<Vec<_>>();
    let mut elements = vec![
        json!({ "display_name": "Title", "name": "title", "type": "text", "default": title.chars().take(150).collect::<String>(),
                "placeholder": "What is wrong, in a few words", "max_length": MAX_TITLE }),
        json!({ "display_name": "Severity", "name": "severity", "type": "select", "options": options(&inc.severities),
                "default": inc.default_severity().unwrap_or_default() }),
        json!({ "display_name": "Summary", "name": "summary", "type": "textarea", "optional": true,
                "placeholder": "What is known so far", "max_length": MAX_SUMMARY }),
        json!({ "display_name": "Commander", "name": "commander", "type": "select", "data_source": "users",
                "optional": true, "help_text": "Who leads the response. Empty: you." }),
        json!({ "display_name": "Private channel", "name": "private", "type": "bool", "optional": true,
                "default": inc.private_channels.to_string(), "placeholder": "Only invited people can see the incident channel" }),
    ];
    for f in &inc.dialog_fields {
        let kind = match f.kind {
            DialogFieldKind::Text => "text",
            DialogFieldKind::Textarea => "textarea",
            DialogFieldKind::Select => "select",
        };
        let mut e = json!({ "display_name": f.display_name, "name": field_name(&f.name), "type": kind, "optional": f.optional });
        if f.kind == DialogFieldKind::Select {
            e["options"] = Value::Array(options(&f.options));
        }
        elements.push(e);
    }
    json!({
        "callback_id": "klaxon-incident-new",
        "title": "Declare an incident",
        "introduction_text": "Klaxon creates the incident, its channel, and announces it.",
        "submit_label": "Declare",
        "notify_on_cancel": false,
        "state": state,
        "elements": elements,
    })
}

/// Extra fields are prefixed so that they can never collide with the built-in ones.
fn field_name(name: &str) -> String {
    format!("field_{name}")
}

/// `/incident new [title]`: opens the dialog, or declares from the title when it cannot.
pub async fn start(state: &AppState, req: &SlashRequest, title: String) -> Value {
    let (Some(signer), Some(public)) = (state.state_signer(), state.config.server.public_url.as_ref()) else {
        return declare_inline(state, req, title, "server.public_url or server.signing_secret is not set").await;
    };
    let Some(mm) = state.mattermost() else {
        return declare_inline(state, req, title, "no Mattermost is configured").await;
    };
    if req.trigger_id.is_empty() {
        return declare_inline(state, req, title, "Mattermost sent no trigger_id").await;
    }
    let now = jiff::Timestamp::now().as_second();
    let data = json!({ "user_name": req.user_name, "channel_id": req.channel_id, "response_url": req.response_url });
    let signed = signer.sign_state(PURPOSE, &req.user_id, data, now, DIALOG_LIFETIME_SECS);
    let request = json!({
        "trigger_id": req.trigger_id,
        "url": format!("{}/chatops/dialog", public.as_str().trim_end_matches('/')),
        "dialog": dialog(&state.config, &title, signed),
    });
    match mm.open_dialog(&request).await {
        Ok(()) => ephemeral("Fill in the dialog to declare the incident."),
        Err(e) => {
            tracing::warn!(error = %e, "the incident dialog could not be opened; declaring from the command");
            let why = if e.to_string().contains("decode_trigger_id") {
                "the trigger expired"
            } else {
                "Mattermost refused it"
            };
            declare_inline(state, req, title, why).await
        }
    }
}

/// What Mattermost posts when the dialog is submitted (§6.3).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Submission {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub submission: Map<String, Value>,
    #[serde(default)]
    pub cancelled: bool,
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn truthy(v: Option<&Value>) -> Option<bool> {
    match v {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s == "true" => Some(true),
        Some(Value::String(s)) if s == "false" => Some(false),
        _ => None,
    }
}

/// The answer to a submission.
pub async fn submit(state: &AppState, s: &Submission) -> Value {
    let Some(signer) = state.state_signer() else {
        return json!({ "error": "Klaxon's server.signing_secret is not set, so this form cannot be checked; nothing was declared." });
    };
    let verified = match signer.verify_state(&s.state, PURPOSE, Some(&s.user_id), jiff::Timestamp::now().as_second()) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(user_id = %s.user_id, error = %e, "dialog submission refused");
            return json!({ "error": format!("{e}; nothing was declared.") });
        }
    };
    if s.cancelled {
        return json!({});
    }
    let inc = &state.config.incidents;
    let mut errors = Map::new();
    let title = text_of(s.submission.get("title"));
    if title.is_empty() {
        errors.insert("title".into(), json!("Say in a few words what is wrong."));
    } else if title.chars().count() > MAX_TITLE {
        errors.insert("title".into(), json!(format!("At most {MAX_TITLE} characters.")));
    }
    let severity = text_of(s.submission.get("severity"));
    let severity = match inc.severities.iter().find(|x| x.eq_ignore_ascii_case(&severity)) {
        Some(x) => x.clone(),
        None => {
            errors.insert("severity".into(), json!(format!("Choose one of {}.", inc.severities.join(", "))));
            String::new()
        }
    };
    let summary = text_of(s.submission.get("summary"));
    if summary.chars().count() > MAX_SUMMARY {
        errors.insert("summary".into(), json!(format!("At most {MAX_SUMMARY} characters.")));
    }
    let mut fields = BTreeMap::new();
    for f in &inc.dialog_fields {
        let key = field_name(&f.name);
        let value = text_of(s.submission.get(&key));
        if value.is_empty() {
            if !f.optional {
                errors.insert(key, json!("Required."));
            }
            continue;
        }
        if f.kind == DialogFieldKind::Select && !f.options.contains(&value) {
            errors.insert(key, json!(format!("Choose one of {}.", f.options.join(", "))));
            continue;
        }
        fields.insert(f.display_name.clone(), value);
    }
    if !errors.is_empty() {
        return json!({ "errors": errors });
    }
    let user_name = verified.data["user_name"].as_str().unwrap_or_default().to_string();
    let commander = match text_of(s.submission.get("commander")) {
        id if id.is_empty() || id == s.user_id => None,
        id => match commander(state, &id).await {
            Ok(a) => Some(a),
            Err(message) => return json!({ "errors": { "commander": message } }),
        },
    };
    let d = Declaration {
        title,
        severity,
        summary,
        commander,
        fields,
        private: truthy(s.submission.get("private")).unwrap_or(inc.private_channels),
        declared_by: Actor::user(&s.user_id, user_name),
        request_key: Some(format!("dialog-{}", verified.nonce)),
    };
    match state.incident_service().declare(d, jiff::Timestamp::now()).await {
        Ok(Declared::New(i)) => {
            tracing::info!(incident_id = %i.id, "incident declared from the dialog");
            confirm(state, verified.data["response_url"].as_str().unwrap_or_default(), &i).await;
            json!({})
        }
        Ok(Declared::Already(i)) => {
            tracing::info!(incident_id = %i.id, "repeated dialog submission; the incident exists already");
            json!({})
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// Tells the declarer, privately, that it worked (the dialog just closes): through the
/// command's `response_url`. A failure is only logged; the channel and announcement follow anyway.
async fn confirm(state: &AppState, response_url: &str, i: &crate::domain::Incident) {
    let (Some(mm), false) = (state.mattermost(), response_url.is_empty()) else { return };
    let text = format!(
        "**{}** is declared ({}, commander {}). Its channel is being created and you will be added to it.",
        i.id, i.severity, i.commander
    );
    if let Err(e) = mm.respond(response_url, &ephemeral(text)).await {
        tracing::warn!(incident_id = %i.id, error = %e, "could not confirm the declaration to its declarer");
    }
}

/// The commander chosen in the dialog (a user id from the users list), with their name.
async fn commander(state: &AppState, user_id: &str) -> Result<Actor, String> {
    let Some(mm) = state.mattermost() else { return Ok(Actor::user(user_id, user_id)) };
    match mm.user(user_id).await {
        Ok(Some(u)) => Ok(Actor::user(u.id, u.username)),
        Ok(None) => Err("There is no such user.".into()),
        Err(e) => Err(format!("Klaxon could not look this user up ({e}); submit again.")),
    }
}
