//! The fake's channels, users and dialogs, as mattermost.md §4.5-§4.10 and §6 describe them.

use super::{
    BOT_USER_ID, FakeMattermost, Shared, TEAM_ID, accept, app_error, authorised, before, now_ms, session_expired,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const ALICE_ID: &str = "a11cea11cea11cea11cea11ce0";
pub const BOB_ID: &str = "b0bb0bb0bb0bb0bb0bb0bb0bb0";
pub const CAROL_ID: &str = "ca201ca201ca201ca201ca2010";
/// A `trigger_id` the fake treats as expired (§6.2).
pub const EXPIRED_TRIGGER: &str = "expired-trigger";
/// The OAuth app registered on the fake (§7.3).
pub const OAUTH_CLIENT_ID: &str = "0authc1i3nt0authc1i3nt0aut";
pub const OAUTH_CLIENT_SECRET: &str = "0auths3cr3t0auths3cr3t0aut";

fn users() -> [(&'static str, &'static str); 3] {
    [(ALICE_ID, "alice"), (BOB_ID, "bob"), (CAROL_ID, "carol")]
}

fn user_json(id: &str, name: &str) -> Value {
    json!({"id": id, "username": name, "is_bot": false, "roles": "system_user", "delete_at": 0})
}

/// Current servers' identifier rule (§4.5): `^[a-z0-9]+([a-z\-\_0-9]+|(__)?)[a-z0-9]*$`, with the
/// 2021 rule's alphanumeric end too, so names valid on old servers are what passes.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.len() >= 2
        && b.len() <= 64
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
        && !name.contains("__")
}

/// Who is calling: the bot (its token), a user (a token issued through OAuth), or nobody.
fn caller(world: &Shared, headers: &HeaderMap) -> Option<String> {
    if authorised(headers) {
        return Some(BOT_USER_ID.to_string());
    }
    let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?.to_string();
    world.lock().expect("fake lock").user_tokens.get(&token).cloned()
}

/// The user a request's OAuth token belongs to, as `GET /users/me` answers.
pub(super) fn user_of_token(world: &Shared, headers: &HeaderMap) -> Option<Value> {
    let id = caller(world, headers).filter(|id| id != BOT_USER_ID)?;
    users().iter().find(|(u, _)| *u == id).map(|(u, n)| user_json(u, n))
}

impl FakeMattermost {
    /// A user approves the OAuth app in their browser: Mattermost redirects with this code.
    pub fn approve(&self, user_id: &str, redirect_uri: &str) -> String {
        self.with(|w| {
            w.next_id += 1;
            let code = format!("c0de{:0>22}", w.next_id);
            w.oauth_codes.insert(code.clone(), (user_id.to_string(), redirect_uri.to_string()));
            code
        })
    }

    /// Whether `user_id` (or the bot) created the channel.
    pub fn channel_creator(&self, channel_id: &str) -> Option<String> {
        self.with(|w| w.channels.get(channel_id).and_then(|c| c["creator_id"].as_str().map(String::from)))
    }

    /// Channels created through the API, oldest first.
    pub fn created_channels(&self) -> Vec<Value> {
        self.with(|w| {
            let mut all: Vec<Value> = w.channels.values().cloned().collect();
            all.sort_by_key(|c| c["create_at"].as_i64().unwrap_or(0));
            all
        })
    }

    /// A channel that someone else created already (a name clash), or an archived one.
    pub fn add_channel(&self, id: &str, name: &str, purpose: &str, archived: bool) {
        self.with(|w| {
            let c = json!({"id": id, "team_id": TEAM_ID, "name": name, "display_name": name, "type": "O",
                           "purpose": purpose, "header": "", "create_at": 0, "delete_at": if archived { 1 } else { 0 }});
            w.channels.insert(id.to_string(), c);
        });
    }

    pub fn channel_members(&self, channel_id: &str) -> Vec<String> {
        self.with(|w| {
            let mut m: Vec<String> = w.channel_members.get(channel_id).into_iter().flatten().cloned().collect();
            m.sort();
            m
        })
    }

    /// A message a person writes in a channel (not through the API Klaxon uses); returns its id.
    pub fn post_as(&self, user_id: &str, channel_id: &str, message: &str) -> String {
        self.with(|w| {
            w.next_id += 1;
            let id = format!("{:0>26}", format!("post{}", w.next_id));
            // Distinct, increasing times even within one millisecond.
            let now = now_ms() + i64::try_from(w.next_id).unwrap_or(0);
            let post = json!({"id": id, "create_at": now, "update_at": now, "delete_at": 0, "user_id": user_id,
                "channel_id": channel_id, "root_id": "", "type": "", "message": message, "props": {}});
            w.posts.insert(id.clone(), post);
            w.order.push(id.clone());
            id
        })
    }

    /// A system message in a channel ("alice joined the channel").
    pub fn system_post(&self, channel_id: &str, message: &str) {
        self.with(|w| {
            w.next_id += 1;
            let id = format!("{:0>26}", format!("post{}", w.next_id));
            let now = now_ms();
            let post = json!({"id": id, "create_at": now, "update_at": now, "delete_at": 0, "user_id": ALICE_ID,
                "channel_id": channel_id, "root_id": "", "type": "system_join_channel", "message": message, "props": {}});
            w.posts.insert(id.clone(), post);
            w.order.push(id);
        });
    }

    /// Direct messages the bot sent `user_id`, oldest first.
    pub fn direct_messages_to(&self, user_id: &str) -> Vec<String> {
        let mut ids = [BOT_USER_ID, user_id];
        ids.sort();
        let name = format!("{}__{}", ids[0], ids[1]);
        self.with(|w| {
            let Some(channel) = w.channels.values().find(|c| c["name"] == name.as_str()).map(|c| c["id"].clone())
            else {
                return Vec::new();
            };
            w.order
                .iter()
                .filter_map(|id| w.posts.get(id))
                .filter(|p| p["channel_id"] == channel)
                .map(|p| p["message"].as_str().unwrap_or_default().to_string())
                .collect()
        })
    }

    /// What was answered through `response_url`s (§2.3), in order.
    pub fn command_responses(&self) -> Vec<Value> {
        self.with(|w| w.command_responses.clone())
    }

    pub fn dialogs(&self) -> Vec<Value> {
        self.with(|w| w.dialogs.clone())
    }
}

pub(super) async fn create(State(world): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(creator) = caller(&world, &headers) else { return session_expired() };
    let mut bot_headers = headers.clone();
    bot_headers.insert("authorization", format!("Bearer {}", super::BOT_TOKEN).parse().expect("header"));
    let (then_502, req) = match accept(&world, "channel", &bot_headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| req[k].as_str().unwrap_or_default().to_string();
    let (team, name, display, kind) = (field("team_id"), field("name"), field("display_name"), field("type"));
    if team.is_empty() || display.is_empty() {
        let which = if team.is_empty() { "team_id" } else { "display_name" };
        return app_error(
            400,
            "api.context.invalid_body_param.app_error",
            &format!("Invalid or missing {which} in request body."),
        );
    }
    if team != TEAM_ID {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    if !valid_name(&name) {
        return app_error(
            400,
            "model.channel.is_valid.1_or_more.app_error",
            "Name must be 1 or more lowercase alphanumeric characters.",
        );
    }
    if display.chars().count() > 64 {
        return app_error(400, "model.channel.is_valid.display_name.app_error", "Invalid display name.");
    }
    if field("header").chars().count() > 1024 {
        return app_error(400, "model.channel.is_valid.header.app_error", "Invalid header.");
    }
    if kind != "O" && kind != "P" {
        return app_error(400, "model.channel.is_valid.type.app_error", "Invalid type.");
    }
    let mut w = world.lock().expect("fake lock");
    if let Some(existing) = w.channels.values().find(|c| c["name"] == name.as_str() && c["team_id"] == team.as_str()) {
        return if existing["delete_at"].as_i64().unwrap_or(0) > 0 {
            app_error(
                400,
                "store.sql_channel.save.archived_channel.app_error",
                "A channel with that name was previously created.",
            )
        } else {
            app_error(
                400,
                "store.sql_channel.save_channel.exists.app_error",
                "A channel with that name already exists on the same team.",
            )
        };
    }
    w.next_id += 1;
    let id = format!("{:0>26}", format!("chan{}", w.next_id));
    let now = now_ms();
    let channel = json!({"id": id, "create_at": now, "update_at": now, "delete_at": 0, "team_id": team, "type": kind,
                         "display_name": display, "name": name, "header": req["header"], "purpose": req["purpose"],
                         "creator_id": creator});
    w.channels.insert(id.clone(), channel.clone());
    w.channel_members.entry(id.clone()).or_default().insert(creator.clone());
    if creator == BOT_USER_ID {
        w.members.insert(id);
    }
    if then_502 {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    (StatusCode::CREATED, Json(channel)).into_response()
}

pub(super) async fn by_name(
    State(world): State<Shared>,
    Path((team, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = before(&world, "channel_by_name").await {
        return r;
    }
    let Some(who) = caller(&world, &headers) else { return session_expired() };
    let w = world.lock().expect("fake lock");
    let found = w.channels.values().find(|c| c["name"] == name.as_str() && c["team_id"] == team.as_str());
    let member =
        |c: &Value| w.channel_members.get(c["id"].as_str().unwrap_or_default()).is_some_and(|m| m.contains(&who));
    match found {
        // A private channel the caller is not in is hidden behind the same 404 (§4.6).
        Some(c) if c["type"] == "P" && !member(c) => {
            app_error(404, "app.channel.get_by_name.missing.app_error", "Channel does not exist.")
        }
        Some(c) => Json(c.clone()).into_response(),
        None => app_error(404, "app.channel.get_by_name.missing.app_error", "Channel does not exist."),
    }
}

pub(super) async fn add_members(
    State(world): State<Shared>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(who) = caller(&world, &headers) else { return session_expired() };
    let mut bot_headers = headers.clone();
    bot_headers.insert("authorization", format!("Bearer {}", super::BOT_TOKEN).parse().expect("header"));
    let (then_502, req) = match accept(&world, "members", &bot_headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut ids: Vec<String> =
        req["user_ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    if let Some(one) = req["user_id"].as_str() {
        ids.push(one.to_string());
    }
    let mut w = world.lock().expect("fake lock");
    if !w.channel_members.get(&channel).is_some_and(|m| m.contains(&who)) && !w.members.contains(&channel) {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    if ids.iter().any(|id| id == BOT_USER_ID) {
        w.members.insert(channel.clone());
    }
    if let Some(unknown) = ids.iter().find(|id| *id != BOT_USER_ID && !users().iter().any(|(u, _)| u == id)) {
        return app_error(
            404,
            "app.team.get_member.missing.app_error",
            &format!("No team member found for user {unknown}."),
        );
    }
    let members = w.channel_members.entry(channel.clone()).or_default();
    members.extend(ids.iter().cloned());
    if then_502 {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    let out: Vec<Value> =
        ids.iter().map(|u| json!({"channel_id": channel, "user_id": u, "roles": "channel_user"})).collect();
    (StatusCode::CREATED, Json(Value::Array(out))).into_response()
}

pub(super) async fn patch(
    State(world): State<Shared>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (then_502, req) = match accept(&world, "patch_channel", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut w = world.lock().expect("fake lock");
    if !w.channels.contains_key(&channel) {
        return app_error(404, "app.channel.get.existing.app_error", "Unable to find the existing channel.");
    }
    let patchable = ["display_name", "name", "header", "purpose"];
    if !patchable.iter().any(|k| req.get(*k).is_some()) {
        return app_error(400, "api.channel.patch_update_channel.no_changes.app_error", "No changes.");
    }
    if !w.members.contains(&channel) {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    if req["header"].as_str().is_some_and(|h| h.chars().count() > 1024) {
        return app_error(400, "model.channel.is_valid.header.app_error", "Invalid header.");
    }
    let Some(c) = w.channels.get_mut(&channel) else {
        return app_error(404, "app.channel.get.existing.app_error", "Unable to find the existing channel.");
    };
    let old_header = c["header"].clone();
    for k in patchable {
        if let Some(v) = req.get(k) {
            c[k] = v.clone();
        }
    }
    let updated = c.clone();
    if let Some(new_header) = req.get("header").filter(|h| **h != old_header) {
        // A changed header posts a system message (§4.9).
        w.next_id += 1;
        let id = format!("{:0>26}", format!("post{}", w.next_id));
        let now = now_ms();
        let post = json!({"id": id, "create_at": now, "update_at": now, "user_id": BOT_USER_ID, "channel_id": channel,
            "root_id": "", "type": "system_header_change", "message": format!("@klaxon-bot updated the channel header to: {}", new_header.as_str().unwrap_or_default()),
            "props": {"username": "klaxon-bot", "old_header": old_header, "new_header": new_header, "from_bot": "true"}});
        w.posts.insert(id.clone(), post);
        w.order.push(id);
    }
    if then_502 {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    Json(updated).into_response()
}

pub(super) async fn user_by_name(Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return session_expired();
    }
    match users().iter().find(|(_, n)| *n == name) {
        Some((id, n)) => Json(user_json(id, n)).into_response(),
        None => app_error(404, "app.user.missing_account.const", "Unable to find the user."),
    }
}

pub(super) async fn user(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return session_expired();
    }
    if id.len() != 26 {
        return app_error(
            400,
            "api.context.invalid_url_param.app_error",
            "Invalid or missing user_id parameter in request URL.",
        );
    }
    match users().iter().find(|(u, _)| *u == id) {
        Some((id, n)) => Json(user_json(id, n)).into_response(),
        None => app_error(404, "app.user.missing_account.const", "Unable to find the user."),
    }
}

/// `POST /api/v4/actions/dialogs/open`: no session needed, the trigger id is the credential.
pub(super) async fn open_dialog(State(world): State<Shared>, body: Bytes) -> Response {
    if let Err(r) = before(&world, "dialog").await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return app_error(
            400,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing dialog in request body.",
        );
    };
    if req["url"].as_str().is_none_or(str::is_empty) {
        return app_error(400, "api.context.invalid_body_param.app_error", "Invalid or missing url in request body.");
    }
    if req["trigger_id"] == EXPIRED_TRIGGER {
        return app_error(
            400,
            "interactive_message.decode_trigger_id.expired",
            "Trigger ID for interactive dialog is expired.",
        );
    }
    world.lock().expect("fake lock").dialogs.push(req);
    Json(json!({"status": "OK"})).into_response()
}

/// `POST /oauth/access_token` (§7.1, §7.2): form fields; AppError JSON on every refusal.
pub(super) async fn access_token(State(world): State<Shared>, body: Bytes) -> Response {
    if let Err(r) = before(&world, "token").await {
        return r;
    }
    let form: std::collections::HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return app_error(400, "api.oauth.get_access_token.bad_grant.app_error", "invalid_request: Bad grant_type.");
    }
    if get("client_id") != OAUTH_CLIENT_ID {
        return app_error(
            404,
            "api.oauth.get_access_token.credentials.app_error",
            "invalid_client: Invalid client credentials.",
        );
    }
    if get("client_secret") != OAUTH_CLIENT_SECRET {
        return app_error(
            403,
            "api.oauth.get_access_token.credentials.app_error",
            "invalid_client: Invalid client credentials.",
        );
    }
    let mut w = world.lock().expect("fake lock");
    let Some((user, redirect)) = w.oauth_codes.remove(&get("code")) else {
        return app_error(
            400,
            "api.oauth.get_access_token.expired_code.app_error",
            "invalid_grant: Invalid or expired authorization code.",
        );
    };
    if redirect != get("redirect_uri") {
        return app_error(
            400,
            "api.oauth.get_access_token.redirect_uri.app_error",
            "invalid_request: Supplied redirect_uri does not match authorization code redirect_uri.",
        );
    }
    w.next_id += 1;
    let token = format!("us3rt0k{:0>19}", w.next_id);
    w.user_tokens.insert(token.clone(), user);
    (
        [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
        Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 2592000, "scope": "user",
                    "refresh_token": format!("r3fr3sh{:0>19}", w.next_id), "id_token": ""})),
    )
        .into_response()
}

/// `POST /hooks/commands/{id}`: a slash command's delayed answer; `ok` as text.
pub(super) async fn command_response(State(world): State<Shared>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return app_error(400, "web.command_webhook.parse.app_error", "Unable to parse incoming data.");
    };
    world.lock().expect("fake lock").command_responses.push(v);
    (StatusCode::OK, [("Content-Type", "text/plain")], "ok").into_response()
}

/// `POST /api/v4/channels/direct` (§4.18): two ids, the caller one of them; 201 new or not.
pub(super) async fn direct(State(world): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(who) = caller(&world, &headers) else { return session_expired() };
    let Ok(ids) = serde_json::from_slice::<Vec<String>>(&body) else {
        return app_error(400, "api.payload.parse.error", "Unable to parse the payload.");
    };
    let mut ids: Vec<String> = ids;
    ids.sort();
    ids.dedup();
    if ids.len() != 2 {
        return app_error(
            400,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing user_ids in request body.",
        );
    }
    if ids.iter().any(|id| id.len() != 26) {
        return app_error(
            400,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing user_id in request body.",
        );
    }
    if !ids.contains(&who) {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    let other = ids.iter().find(|id| **id != who).cloned().unwrap_or_default();
    if other != BOT_USER_ID && !users().iter().any(|(u, _)| *u == other) {
        return app_error(
            400,
            "api.channel.create_direct_channel.invalid_user.app_error",
            "Invalid user ID for direct channel creation.",
        );
    }
    let name = format!("{}__{}", ids[0], ids[1]);
    let mut w = world.lock().expect("fake lock");
    if let Some(existing) = w.channels.values().find(|c| c["name"] == name.as_str()).cloned() {
        return (StatusCode::CREATED, Json(existing)).into_response();
    }
    w.next_id += 1;
    let id = format!("{:0>26}", format!("dm{}", w.next_id));
    let channel = json!({"id": id, "create_at": now_ms(), "team_id": "", "type": "D", "display_name": "", "name": name,
                         "header": "", "purpose": "", "creator_id": who, "delete_at": 0});
    w.channels.insert(id.clone(), channel.clone());
    w.channel_members.entry(id.clone()).or_default().extend(ids);
    w.members.insert(id);
    (StatusCode::CREATED, Json(channel)).into_response()
}
