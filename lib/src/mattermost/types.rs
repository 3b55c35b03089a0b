//! The JSON Klaxon sends to and reads from Mattermost.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /api/v4/posts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreatePost<P = Value> {
    pub channel_id: String,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub root_id: String,
    /// Anything that serialises to a JSON object: a `Value`, or a card's typed props, which are
    /// written straight from the card instead of through a copy as a `Value`.
    pub props: P,
    /// Idempotency key: a repeat within 30 s returns the post already created.
    pub pending_post_id: String,
}

/// What Klaxon keeps of the post a create or an update answers with: its id. The rest of the
/// answer (the whole post, the card's props included) is skipped without being built up, which
/// in a storm was a twentieth of Klaxon's CPU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostId {
    pub id: String,
}

/// A post as Mattermost returns it (the keys Klaxon reads; the rest is kept in `extra` so that
/// an update sends the post back whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub id: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub root_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub props: Value,
    #[serde(default)]
    pub create_at: i64,
    #[serde(default)]
    pub update_at: i64,
    #[serde(default)]
    pub delete_at: i64,
    /// `""` for a message people wrote; `system_*` for join, header and other system posts.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub is_bot: bool,
}

/// Mattermost's error body (`AppError`): match on `id`, never on the translated `message`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AppError {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub request_id: String,
}

/// One message attachment (§5.1): the card's body.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Attachment {
    pub fallback: String,
    pub color: String,
    pub title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    pub fields: Vec<Field>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub footer: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

/// A button or a menu on an attachment (Mattermost's `PostAction`); a click goes to
/// `integration.url` with `integration.context`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// Letters and digits only: Mattermost's router never delivers clicks on other ids.
    pub id: String,
    /// `button` or `select`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub style: String,
    /// A menu's built-in source of options (`users`, `channels`), instead of `options`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub data_source: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<ActionOption>,
    pub integration: Integration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionOption {
    pub text: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Integration {
    pub url: String,
    pub context: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub title: String,
    pub value: String,
    pub short: bool,
}

/// An incoming-webhook post (§3.2); attachments at the top level, where Mattermost reads them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookPost {
    pub text: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Team {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    /// `O` public, `P` private, `D` direct, `G` group.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub header: String,
}

/// `POST /api/v4/channels` (§4.5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateChannel {
    pub team_id: String,
    pub name: String,
    pub display_name: String,
    /// `O` public, `P` private.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub purpose: String,
    pub header: String,
}

/// The answer to `POST /oauth/access_token` (§7.2). `Debug` never prints the tokens.
#[derive(Clone, PartialEq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
    /// Seconds; the SSO session length (30 days by default).
    #[serde(default)]
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}
