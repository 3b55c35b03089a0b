//! A click on an alert card's button (`POST /chatops/action`, mattermost.md §5.2-§5.4).
//!
//! Mattermost shows the clicker an error for any answer but 200, and posts nothing else, so
//! every answer is 200: `update` (the card as it is now, so the clicker sees the change at once)
//! and, when nothing changed, `ephemeral_text` saying why, which only the clicker sees.

use super::signing::{ButtonContext, ContextError};
use crate::app::AppState;
use crate::domain::Actor;
use crate::ingest::EventKind;
use crate::ingest::apply::Outcome;
use crate::notify::card;
use serde::Deserialize;
use serde_json::{Value, json};

/// The keys of Mattermost's request that Klaxon reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActionRequest {
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub post_id: String,
    #[serde(default)]
    pub context: Option<Value>,
}

fn ephemeral(text: impl Into<String>) -> Value {
    json!({ "ephemeral_text": text.into() })
}

/// The answer to a click.
pub async fn handle(state: &AppState, req: &ActionRequest) -> Value {
    let Some(buttons) = state.buttons() else {
        return ephemeral(
            "Klaxon's buttons are not configured (server.public_url and server.signing_secret); nothing changed.",
        );
    };
    let Some(ctx) = req.context.clone().and_then(|c| serde_json::from_value::<ButtonContext>(c).ok()) else {
        return ephemeral("This is not a Klaxon button; nothing changed.");
    };
    let now = jiff::Timestamp::now();
    let refresh = match buttons.signer.verify(&ctx, &req.post_id, now.as_second()) {
        Ok(()) => false,
        Err(ContextError::Expired) => true,
        Err(e) => {
            tracing::warn!(alert_id = %ctx.alert_id, post_id = %req.post_id, error = %e, "button click refused");
            return ephemeral(format!("{e}; nothing changed."));
        }
    };
    let selected = req.context.as_ref().and_then(|c| c.get("selected_option")).and_then(|v| v.as_str()).unwrap_or("");
    let kind = match ctx.action.as_str() {
        "acknowledge" => EventKind::Acknowledge,
        "resolve" => EventKind::Resolve,
        "assign" | "snooze" if refresh => EventKind::Acknowledge, // answered below as expired
        "assign" => {
            return menu_answer(
                state,
                &buttons,
                req,
                &ctx.alert_id,
                assign(state, req, &ctx.alert_id, selected, now).await,
            )
            .await;
        }
        "snooze" => {
            return menu_answer(
                state,
                &buttons,
                req,
                &ctx.alert_id,
                snooze(state, req, &ctx.alert_id, selected, now).await,
            )
            .await;
        }
        other => return ephemeral(format!("Unknown action {other:?}; nothing changed.")),
    };
    let mut note = None;
    if refresh {
        note = Some(format!(
            "This button had expired, so nothing changed; the card now has fresh ones. Click again, or write `ack {}`.",
            ctx.alert_id
        ));
    } else {
        let actor = Actor::user(&req.user_id, &req.user_name);
        match state.intake().act_from_button(&ctx.alert_id, kind, actor, now).await {
            Ok(r) => match r.outcome {
                Outcome::Acknowledged | Outcome::Resolved => {}
                Outcome::Refused { reason } | Outcome::NotAllowed { reason } => {
                    note = Some(format!("Nothing changed: {reason}."))
                }
                Outcome::UnknownAlert => {
                    return ephemeral(format!("There is no alert {}; nothing changed.", ctx.alert_id));
                }
                _ => {}
            },
            Err(e) => {
                tracing::error!(alert_id = %ctx.alert_id, error = %e, "button click could not be recorded");
                return ephemeral(
                    "Klaxon could not record this click (its store is unavailable); nothing changed, click again.",
                );
            }
        }
    }
    menu_answer(state, &buttons, req, &ctx.alert_id, note).await
}

/// Assigns from the card's user menu (`selected_option` is the chosen user's id).
async fn assign(
    state: &AppState,
    req: &ActionRequest,
    alert_id: &str,
    user_id: &str,
    now: jiff::Timestamp,
) -> Option<String> {
    let name = match state.mattermost() {
        Some(mm) => match mm.user(user_id).await {
            Ok(Some(u)) => u.username,
            Ok(None) => return Some("There is no such user; nothing changed.".into()),
            Err(e) => return Some(format!("Klaxon could not look this user up ({e}); nothing changed, try again.")),
        },
        None => return Some("No Mattermost is configured; nothing changed.".into()),
    };
    let actor = Actor::user(&req.user_id, &req.user_name);
    let to = format!("@{name}");
    let changed = state.intake().change(alert_id, "alert.assigned", now, |a| a.assign(&to, actor.clone(), now)).await;
    refusal(changed)
}

/// Snoozes from the card's menu (`selected_option` is a duration such as `1h`).
async fn snooze(
    state: &AppState,
    req: &ActionRequest,
    alert_id: &str,
    choice: &str,
    now: jiff::Timestamp,
) -> Option<String> {
    let Some(until) = snooze_until(choice, now) else {
        return Some(format!("{choice:?} is not a snooze length; choose one from the menu. Nothing changed."));
    };
    let actor = Actor::user(&req.user_id, &req.user_name);
    let changed = state.intake().change(alert_id, "alert.snoozed", now, |a| a.snooze(until, actor.clone(), now)).await;
    refusal(changed)
}

/// `now` plus a duration like `30m`, `1h`, `1d` (at most a week).
pub fn snooze_until(text: &str, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let d = text.parse::<crate::config::ConfigDuration>().ok()?.0;
    if d.is_zero() || d > std::time::Duration::from_secs(7 * 86_400) {
        return None;
    }
    now.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok()
}

/// What to tell the clicker when a change did not happen (`None`: it did).
fn refusal(changed: Result<crate::ingest::apply::Changed, crate::ingest::apply::IntakeError>) -> Option<String> {
    use crate::ingest::apply::Changed;
    match changed {
        Ok(Changed::Done(_)) => None,
        Ok(Changed::Refused(why)) => Some(format!("Nothing changed: {why}.")),
        Ok(Changed::Unknown) => Some("There is no such alert; nothing changed.".into()),
        Err(e) => {
            tracing::error!(error = %e, "a card menu choice could not be recorded");
            Some("Klaxon could not record this (its store is unavailable); nothing changed, try again.".into())
        }
    }
}

/// The answer to a click or a menu choice: the card as it is now, re-signed, so the clicker
/// sees the change (or the current state), and a note when nothing changed.
async fn menu_answer(
    state: &AppState,
    buttons: &crate::notify::card::Buttons,
    req: &ActionRequest,
    alert_id: &str,
    note: Option<String>,
) -> Value {
    let mut answer = match state.alerts().get(alert_id).await {
        Ok(Some(alert)) => {
            let (message, attachment) = card::render_with_buttons(&alert.value, Some(buttons), &req.post_id);
            json!({ "update": { "message": message, "props": card::props(&alert.value, &attachment) } })
        }
        _ => json!({}),
    };
    if let Some(text) = note {
        answer["ephemeral_text"] = json!(text);
    }
    answer
}
