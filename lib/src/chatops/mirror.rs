//! `POST /chatops/mirror`: an outgoing webhook on a public incident channel (or an i-Reserve
//! style mirror channel whose messages name the incident, `INC-7 ...`) adds each message to the
//! incident's timeline, once per post. The bot's own posts are skipped (loop protection).
//!
//! Mattermost posts whatever `text` an outgoing webhook answers, so a mirrored message is
//! answered with `{}` (nothing posted); only a refusal (a wrong token, a body that is not a
//! Mattermost payload) answers with a `text`, the one way to tell the admin.

use super::slash::token_matches;
use crate::app::AppState;
use crate::domain::IncidentId;
use crate::incidents::mirror::Message;
use crate::ingest::mattermost::{Encoding, parse};
use serde_json::{Value, json};

fn say(text: impl Into<String>) -> Value {
    json!({ "text": text.into() })
}

/// The incident a message names (`INC-7`, with this server's prefix), if any.
fn named_incident(text: &str, prefix: &str) -> Option<u64> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|w| w.parse::<IncidentId>().ok())
        .find(|id| id.prefix.eq_ignore_ascii_case(prefix))
        .map(|id| id.number)
}

pub async fn handle(state: &AppState, encoding: Encoding, body: &[u8]) -> Value {
    let Some(expected) = &state.config.incidents.mirror_token else {
        return say(
            "Klaxon's mirror webhook is not set up: incidents.mirror_token is missing in klaxon.toml; nothing was recorded.",
        );
    };
    let hook = match parse(encoding, body) {
        Ok(h) => h,
        Err(e) => return say(format!("Klaxon could not read this message ({e}); nothing was recorded.")),
    };
    let token = hook.token.as_ref().map(|t| t.expose().to_string()).unwrap_or_default();
    if !token_matches(expected, &token, None) {
        tracing::warn!(channel_id = %hook.channel_id, "mirror webhook refused: wrong token");
        return say(
            "This outgoing webhook's token does not match incidents.mirror_token in Klaxon's configuration; nothing was recorded.",
        );
    }
    if state.bot_user_id().await.as_deref() == Some(hook.user_id.as_str()) {
        return json!({});
    }
    let repo = state.incidents();
    let number = match repo.get_by_channel(&hook.channel_id).await {
        Ok(Some(i)) => Some(i.value.id.number),
        Ok(None) => named_incident(&hook.text, &state.config.incidents.id_prefix),
        Err(e) => {
            tracing::error!(error = %e, "mirror: the store is unavailable; the message was not recorded");
            return json!({});
        }
    };
    let Some(number) = number else { return json!({}) };
    let message = Message {
        post_id: hook.post_id.clone(),
        user_id: hook.user_id.clone(),
        user_name: hook.user_name.clone(),
        text: hook.text.clone(),
        at: jiff::Timestamp::from_millisecond(hook.timestamp_ms).unwrap_or_else(|_| jiff::Timestamp::now()),
    };
    if let Err(e) = state.incident_service().mirror(number, &[message], None).await {
        tracing::error!(error = %e, post_id = %hook.post_id, "mirror: the message could not be recorded");
    }
    json!({})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_incident_by_this_servers_prefix() {
        assert_eq!(named_incident("INC-7 db is back", "INC"), Some(7));
        assert_eq!(named_incident("see (inc-12).", "INC"), Some(12));
        assert_eq!(named_incident("ALR-3 acked", "INC"), None);
        assert_eq!(named_incident("nothing here", "INC"), None);
    }
}
