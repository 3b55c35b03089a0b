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
    let kind = match ctx.action.as_str() {
        "acknowledge" => EventKind::Acknowledge,
        "resolve" => EventKind::Resolve,
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
    // The card as it is now, re-signed, so the clicker sees the change (or the current state).
    let mut answer = match state.alerts().get(&ctx.alert_id).await {
        Ok(Some(alert)) => {
            let (message, attachment) = card::render_with_buttons(&alert.value, Some(&buttons), &req.post_id);
            json!({ "update": { "message": message, "props": card::props(&alert.value, &attachment) } })
        }
        _ => json!({}),
    };
    if let Some(text) = note {
        answer["ephemeral_text"] = json!(text);
    }
    answer
}
