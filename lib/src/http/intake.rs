//! The two intake routes: Mattermost outgoing webhooks and Particle webhooks.

use super::{ApiError, BODY_LIMIT};
use crate::app::AppState;
use crate::config::{SourceConfig, SourceKind};
use crate::embedded::with_deadline;
use crate::ingest::EventKind;
use crate::ingest::apply::{IntakeError, IntakeResult, Outcome};
use crate::ingest::mattermost::{self, Command, Encoding};
use crate::ingest::particle::{self, Interpretation};
use crate::ingest::verify::{self, Verdict};
use crate::notify::routing::{EventFacts, destination};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

/// An intake answers within this, even when the store is stuck: Particle gives up after 20 s
/// and throttles the whole host on errors, and a person in Mattermost is waiting.
pub const INTAKE_DEADLINE: Duration = Duration::from_secs(4);

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        let public = match e {
            IntakeError::Contention(_) => {
                "Klaxon could not record this: the alert was busy with other requests; send it again"
            }
            IntakeError::Store(_) => {
                "Klaxon could not record this: its store is unavailable; nothing was recorded, send it again"
            }
            IntakeError::Stopped => "Klaxon was stopping while it recorded this; send it again",
        };
        ApiError::unavailable("store_unavailable", public, &e)
    }
}

/// The configured source for the URL. The 404 does not list the configured ids: anyone can
/// call this route.
fn source<'c>(state: &'c AppState, id: &str, kind: SourceKind) -> Result<&'c SourceConfig, ApiError> {
    state.config.sources.iter().find(|s| s.id == id && s.kind == kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!(
                "no {kind} source {id:?} is configured; check the URL, or add a [[sources]] entry with kind = \"{kind}\""
            ),
        )
    })
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match media.as_str() {
        "application/x-www-form-urlencoded" => Ok(Encoding::Form),
        "application/json" => Ok(Encoding::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {:?} is not supported; send application/x-www-form-urlencoded or application/json",
                if raw.is_empty() { "(none)" } else { raw }
            ),
        )),
    }
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the {BODY_LIMIT}-byte limit or could not be read; send a shorter message"),
        )
    })
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
}

fn verify(source: &SourceConfig, given: Option<&str>) -> Result<(), ApiError> {
    let fix = match source.kind {
        SourceKind::Mattermost => "an admin must update klaxon.toml with the outgoing webhook's token",
        SourceKind::Particle => "an admin must send the key configured in klaxon.toml from the Particle webhook",
    };
    match verify::check(source.token.as_ref(), given) {
        Verdict::Accepted => Ok(()),
        Verdict::Missing => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            format!("this webhook sent no token, and source `{}` needs one; {fix}", source.id),
        )),
        Verdict::Wrong => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_token",
            format!("this webhook's token does not match source `{}`; {fix}", source.id),
        )),
    }
}

fn where_it_goes(state: &AppState, event: &str, source: &str, result: &IntakeResult) -> String {
    match destination(&state.config, &EventFacts { event, source: Some(source), urgency: result.urgency }) {
        Ok(channel) => format!("Notifications go to `{channel}`."),
        Err(why) => format!("It is not posted anywhere: {why}."),
    }
}

/// The thread reply Mattermost posts under the triggering message.
fn mattermost_reply(state: &AppState, source: &str, user: &str, result: &IntakeResult) -> String {
    let id = result.alert_id.as_deref().unwrap_or("?");
    let urgency = result.urgency.map(|u| u.to_string()).unwrap_or_default();
    let text = match &result.outcome {
        Outcome::Created => format!(
            "Alert **{id}** raised, urgency **{urgency}**. {}",
            where_it_goes(state, "alert.triggered", source, result)
        ),
        Outcome::Grouped => match result.raised_from {
            Some(from) => format!(
                "Grouped into open alert **{id}** (now {} occurrences); urgency raised from {from} to **{urgency}** by @{user}. {}",
                result.occurrences,
                where_it_goes(state, "alert.urgency_raised", source, result)
            ),
            None => format!(
                "Grouped into open alert **{id}** (now {} occurrences, urgency **{urgency}**). {}",
                result.occurrences,
                where_it_goes(state, "alert.repeated", source, result)
            ),
        },
        Outcome::Acknowledged => format!("Alert **{id}** acknowledged by @{user}."),
        Outcome::Resolved => format!("Alert **{id}** resolved by @{user}."),
        Outcome::UnknownAlert => format!("There is no alert {id}; check the id in the alert's card."),
        Outcome::NoOpenAlert => "There is no open alert to act on.".to_string(),
        Outcome::Refused { reason } => format!("Nothing changed: {reason}."),
        Outcome::NotAllowed { reason } => format!("Nothing changed: {reason}."),
    };
    if result.deduplicated && !matches!(result.outcome, Outcome::Grouped) {
        format!("This post was already handled. {text}")
    } else {
        text
    }
}

fn comment(status: StatusCode, text: String, extra: serde_json::Value) -> Response {
    let mut body = json!({ "text": text, "response_type": "comment" });
    if let (Some(b), serde_json::Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    (status, Json(body)).into_response()
}

pub async fn mattermost_hook(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Every answer to Mattermost, refusals included, says in `text` what happened.
    match mattermost_intake(state, &source_id, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.for_chat().into_response(),
    }
}

async fn mattermost_intake(
    state: AppState,
    source_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let source = source(&state, source_id, SourceKind::Mattermost)?;
    let encoding = encoding(headers)?;
    let body = read_body(body).await?;
    // The token first: a caller without it learns nothing about what a valid body looks like.
    verify(source, mattermost::token(encoding, &body).as_deref())?;
    let hook = mattermost::parse(encoding, &body).map_err(bad_request)?;

    let bot = state.bot_user_id().await;
    if bot.as_deref() == Some(hook.user_id.as_str()) || source.ignore_user_ids.contains(&hook.user_id) {
        tracing::debug!(source = %source.id, "post by an ignored user (or Klaxon's bot); nothing to do");
        // An empty object: Mattermost posts nothing back, so there is no loop.
        return Ok((StatusCode::OK, Json(json!({}))).into_response());
    }

    let command = mattermost::read_command(&hook.text, &hook.trigger_word);
    let trigger = if hook.trigger_word.is_empty() { String::new() } else { format!("{} ", hook.trigger_word) };
    let refuse = |status: StatusCode, code: &'static str, message: String| Err(ApiError::new(status, code, message));
    match &command {
        Command::Empty => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "empty_message",
                format!(
                    "Nothing to raise: write what is wrong after the trigger word, e.g. `{trigger}critical checkout is down`."
                ),
            );
        }
        Command::Usage { kind } => {
            let verb = if *kind == EventKind::Acknowledge { "ack" } else { "resolve" };
            return refuse(
                StatusCode::BAD_REQUEST,
                "alert_id_missing",
                format!(
                    "Nothing changed: name the alert, e.g. `{trigger}{verb} ALR-12` (the id is on the alert's card)."
                ),
            );
        }
        Command::ManageUsage { verb } => {
            let example = if *verb == "assign" { "assign ALR-12 @bob" } else { "snooze ALR-12 1h" };
            return refuse(
                StatusCode::BAD_REQUEST,
                "arguments_missing",
                format!("Nothing changed: write it like `{trigger}{example}`."),
            );
        }
        Command::Act { .. } | Command::Assign { .. } | Command::Snooze { .. } if source.chat_actions == Some(false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "chat_actions_disabled",
                format!(
                    "Nothing changed: acknowledging and resolving from chat is turned off for source `{}`.",
                    source.id
                ),
            );
        }
        Command::Act { .. } | Command::Assign { .. } | Command::Snooze { .. } if source.insecure => {
            return refuse(
                StatusCode::FORBIDDEN,
                "insecure_source",
                format!(
                    "Nothing changed: source `{}` accepts requests without a token, so it can raise alerts but not act on them; an admin can give it a token in klaxon.toml.",
                    source.id
                ),
            );
        }
        Command::Assign { alert_id, .. } | Command::Snooze { alert_id, .. } => {
            return manage(&state, source, &hook, &command, alert_id).await;
        }
        _ => {}
    }
    let Some(event) = mattermost::to_event(source, &hook, &command, jiff::Timestamp::now()) else {
        return Err(bad_request("the message holds nothing to act on"));
    };
    let result = with_deadline(INTAKE_DEADLINE, state.intake().apply(&event)).await?;
    tracing::info!(source = %source.id, alert_id = %result.alert_id.as_deref().unwrap_or("-"), outcome = ?result.outcome, deduplicated = result.deduplicated, "mattermost trigger");
    let text = mattermost_reply(&state, &source.id, &hook.user_name, &result);
    Ok(comment(StatusCode::OK, text, json!({ "klaxon": result })))
}

/// `assign` and `snooze` from chat: on the source's own alerts (or those `act_on` lists), as the
/// card's menus do. Answered in the message's thread.
async fn manage(
    state: &AppState,
    source: &crate::config::SourceConfig,
    hook: &mattermost::OutgoingWebhook,
    command: &Command,
    alert_id: &str,
) -> Result<Response, ApiError> {
    let now = jiff::Timestamp::now();
    let owner = match with_deadline(INTAKE_DEADLINE, state.alerts().get(alert_id)).await {
        Ok(Some(a)) => a.value.source,
        Ok(None) => {
            return Ok(comment(
                StatusCode::NOT_FOUND,
                format!("There is no alert {alert_id}; nothing changed."),
                json!({}),
            ));
        }
        Err(e) => return Err(crate::ingest::apply::IntakeError::from(e).into()),
    };
    if !source.may_act_on(&owner) {
        let text = format!(
            "Nothing changed: source `{}` may not act on {alert_id} (raised by source `{owner}`); an admin can add it to `act_on` of source `{}` in klaxon.toml.",
            source.id, source.id
        );
        return Ok(comment(StatusCode::FORBIDDEN, text, json!({})));
    }
    let actor = crate::domain::Actor::user(&hook.user_id, &hook.user_name);
    let intake = state.intake();
    let (changed, done) = match command {
        Command::Assign { user, .. } => {
            let c = intake.change(alert_id, "alert.assigned", now, |a| a.assign(user, actor.clone(), now));
            (with_deadline(INTAKE_DEADLINE, c).await, format!("{alert_id} is assigned to {user}."))
        }
        Command::Snooze { length, .. } => {
            let Some(until) = crate::chatops::action::snooze_until(length, now) else {
                let text = format!(
                    "Nothing changed: {length:?} is not a snooze length; write it like 30m, 1h, 4h or 1d (at most 7d)."
                );
                return Ok(comment(StatusCode::BAD_REQUEST, text, json!({})));
            };
            let c = intake.change(alert_id, "alert.snoozed", now, |a| a.snooze(until, actor.clone(), now));
            let text = format!("{alert_id} is snoozed until {}.", until.strftime("%Y-%m-%d %H:%M UTC"));
            (with_deadline(INTAKE_DEADLINE, c).await, text)
        }
        _ => return Err(bad_request("the message holds nothing to act on")),
    };
    use crate::ingest::apply::Changed;
    match changed? {
        Changed::Done(_) => Ok(comment(StatusCode::OK, done, json!({}))),
        Changed::Refused(why) => Ok(comment(StatusCode::CONFLICT, format!("Nothing changed: {why}."), json!({}))),
        Changed::Unknown => {
            Ok(comment(StatusCode::NOT_FOUND, format!("There is no alert {alert_id}; nothing changed."), json!({})))
        }
    }
}

fn particle_key<'a>(headers: &'a HeaderMap, query: &'a Option<String>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|v| v.trim().to_string());
    bearer.or_else(|| {
        query.as_deref().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
        })
    })
}

pub async fn particle_hook(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let source = source(&state, &source_id, SourceKind::Particle)?;
    verify(source, particle_key(&headers, &query).as_deref())?;
    let encoding = encoding(&headers)?;
    let body = read_body(body).await?;
    let request = particle::parse(encoding, &body).map_err(bad_request)?;
    let event = match particle::interpret(source, &request, &body, jiff::Timestamp::now()) {
        Interpretation::Ignored(reason) => {
            tracing::info!(source = %source.id, reason = %reason, "particle event ignored");
            return Ok((StatusCode::OK, Json(json!({ "status": "ignored", "reason": reason }))).into_response());
        }
        Interpretation::Event(e) => e,
    };
    let result = with_deadline(INTAKE_DEADLINE, state.intake().apply(&event)).await?;
    tracing::info!(source = %source.id, alert_id = %result.alert_id.as_deref().unwrap_or("-"), outcome = ?result.outcome, deduplicated = result.deduplicated, "particle event");
    let status = match (&result.outcome, result.status) {
        (Outcome::NoOpenAlert, _) => "no open alert".to_string(),
        (_, Some(s)) => s.to_string(),
        (_, None) => "unchanged".to_string(),
    };
    let mut body = json!({ "alert_id": result.alert_id, "status": status, "deduplicated": result.deduplicated, "occurrences": result.occurrences });
    if let Outcome::Refused { reason } | Outcome::NotAllowed { reason } = &result.outcome {
        body["note"] = json!(reason);
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}
