//! A fake Mattermost that behaves as ../shared/reference/mattermost.md says, for the calls Klaxon
//! makes: `GET /api/v4/users/me`, `POST /api/v4/posts` (201 with the post; 403
//! `api.context.permissions.app_error` when the bot is not in the channel, unknown channels
//! included; `pending_post_id` returning the same post within 30 s), `PUT /api/v4/posts/{id}/patch`
//! (props, when given, replaced whole), `GET /api/v4/channels/{id}/posts?since=`, and incoming
//! webhooks (`ok`; 400 "Invalid webhook"; 501 when disabled). Errors are AppError JSON, and
//! 429 is `text/plain` "limit exceeded" with `X-Ratelimit-*` and `Retry-After` headers.
//!
//! For incidents (channels.rs): channels created, found by name, joined and patched; users by id
//! and by username; interactive dialogs opened.
//!
//! Scriptable: the next N calls of a route fail with a status, a 429, a hang, or are carried out
//! and then answered 502 (the crash window of a create).

mod channels;

pub use channels::{ALICE_ID, BOB_ID, CAROL_ID, EXPIRED_TRIGGER, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BOT_TOKEN: &str = "bot-token-0123456789abcdefgh";
pub const BOT_USER_ID: &str = "b0tb0tb0tb0tb0tb0tb0tb0tb0";

/// What the next call of a route does instead of its job.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status with an AppError body.
    Status(u16),
    /// 429 `limit exceeded` with `X-Ratelimit-Reset` / `Retry-After` of this many seconds.
    RateLimited(u64),
    /// Wait this long before doing the work (longer than the client's timeout: a hang).
    Slow(Duration),
    /// Do the work, then answer 502 as a proxy in front of a crashed server would.
    DoThen502,
    /// Answer 200 with JSON that is no post (`{"status":"OK"}`, what Mattermost's status routes
    /// answer) instead of doing the work, as a misrouted proxy in front of the server might.
    OkWithoutPost,
}

#[derive(Default)]
struct World {
    posts: HashMap<String, Value>,
    /// Creation order.
    order: Vec<String>,
    members: HashSet<String>,
    pending: HashMap<String, (String, Instant)>,
    pending_ttl: Option<Duration>,
    hooks: HashMap<String, Vec<Value>>,
    hooks_disabled: bool,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    calls: HashMap<&'static str, usize>,
    next_id: u64,
    /// Root posts created, all channels (cheap to read while a benchmark polls).
    roots: usize,
    /// Chaos: this share of the calls (0 to 1) fails with a random fault.
    chaos: f64,
    faults_injected: usize,
    /// Channels created through the API, by id.
    channels: HashMap<String, Value>,
    /// Members of those channels (the bot included), by channel id.
    channel_members: HashMap<String, HashSet<String>>,
    /// Dialogs opened, in order.
    dialogs: Vec<Value>,
    /// OAuth authorization codes not yet exchanged: code -> (user id, redirect URI).
    oauth_codes: HashMap<String, (String, String)>,
    /// Access tokens issued through OAuth: token -> user id.
    user_tokens: HashMap<String, String>,
    /// Delayed slash-command answers (`response_url`), in order.
    command_responses: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeMattermost {
    pub url: String,
    world: Arc<Mutex<World>>,
}

type Shared = Arc<Mutex<World>>;

fn app_error(status: u16, id: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"id": id, "message": message, "detailed_error": "", "request_id": "fakerequestid0000000000000", "status_code": status, "is_oauth": false});
    (code, [("X-Request-Id", "fakerequestid0000000000000")], Json(body)).into_response()
}

fn rate_limited(secs: u64) -> Response {
    let s = secs.to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Ratelimit-Limit", "101"),
            ("X-Ratelimit-Remaining", "0"),
            ("X-Ratelimit-Reset", s.as_str()),
            ("Retry-After", s.as_str()),
        ],
        "limit exceeded\n",
    )
        .into_response()
}

impl FakeMattermost {
    pub async fn start() -> FakeMattermost {
        let world: Shared =
            Arc::new(Mutex::new(World { pending_ttl: Some(Duration::from_secs(30)), ..Default::default() }));
        let app = axum::Router::new()
            .route("/api/v4/users/me", get(me))
            .route("/api/v4/posts", post(create_post))
            .route("/api/v4/posts/{id}/patch", put(patch_post))
            .route("/api/v4/channels/{id}/posts", get(channel_posts))
            .route("/api/v4/posts/{id}/thread", get(thread))
            .route("/api/v4/channels/{id}/members/me", get(membership))
            .route("/api/v4/users/me/teams", get(teams))
            .route("/api/v4/users/me/teams/{team}/channels", get(team_channels))
            .route("/hooks/{id}", post(webhook))
            .route("/api/v4/channels", post(channels::create))
            .route("/api/v4/channels/direct", post(channels::direct))
            .route("/api/v4/teams/{team}/channels/name/{name}", get(channels::by_name))
            .route("/api/v4/channels/{id}/members", post(channels::add_members))
            .route("/api/v4/channels/{id}/patch", put(channels::patch))
            .route("/api/v4/users/username/{name}", get(channels::user_by_name))
            .route("/api/v4/users/{id}", get(channels::user))
            .route("/api/v4/actions/dialogs/open", post(channels::open_dialog))
            .route("/oauth/access_token", post(channels::access_token))
            .route("/hooks/commands/{id}", post(channels::command_response))
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Mattermost");
        let url = format!("http://{}", listener.local_addr().expect("fake address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeMattermost { url, world }
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("fake lock"))
    }

    /// Adds the bot to a channel (which then exists).
    pub fn add_bot_to(&self, channel_id: &str) {
        self.with(|w| {
            w.members.insert(channel_id.to_string());
        });
    }

    /// An incoming webhook that exists; returns its URL.
    pub fn webhook(&self, id: &str) -> String {
        self.with(|w| {
            w.hooks.entry(id.to_string()).or_default();
        });
        format!("{}/hooks/{id}", self.url)
    }

    pub fn disable_webhooks(&self) {
        self.with(|w| w.hooks_disabled = true);
    }

    /// How long a `pending_post_id` is remembered (30 s like Mattermost; `None` never).
    pub fn remember_pending_for(&self, ttl: Option<Duration>) {
        self.with(|w| w.pending_ttl = ttl);
    }

    /// The next `times` calls of `route` ("create", "update", "me", "webhook", "list") meet `fault`.
    pub fn fail_next(&self, route: &'static str, times: usize, fault: Fault) {
        self.with(|w| w.faults.entry(route).or_default().extend(std::iter::repeat_n(fault, times)));
    }

    pub fn calls(&self, route: &'static str) -> usize {
        self.with(|w| w.calls.get(route).copied().unwrap_or(0))
    }

    /// From now on, `share` (0 to 1) of the calls fail with a random fault: 500, 429 with a 1 s
    /// reset, a 1.5 s hang, or carried out and then answered 502.
    pub fn chaos(&self, share: f64) {
        self.with(|w| w.chaos = share);
    }

    pub fn faults_injected(&self) -> usize {
        self.with(|w| w.faults_injected)
    }

    /// Every post, in creation order.
    pub fn all_posts(&self) -> Vec<Value> {
        self.with(|w| w.order.iter().filter_map(|id| w.posts.get(id)).cloned().collect())
    }

    /// How many root posts were created, in all channels.
    pub fn root_count(&self) -> usize {
        self.with(|w| w.roots)
    }

    /// Root posts in a channel, oldest first.
    pub fn roots_in(&self, channel_id: &str) -> Vec<Value> {
        self.with(|w| {
            w.order
                .iter()
                .filter_map(|id| w.posts.get(id))
                .filter(|p| p["channel_id"] == channel_id && p["root_id"] == "")
                .cloned()
                .collect()
        })
    }

    /// Replies in a thread, oldest first.
    pub fn replies_to(&self, root_id: &str) -> Vec<Value> {
        self.with(|w| {
            w.order.iter().filter_map(|id| w.posts.get(id)).filter(|p| p["root_id"] == root_id).cloned().collect()
        })
    }

    /// The messages of the replies to `root_id`, in the order they were posted.
    pub fn reply_texts(&self, root_id: &str) -> Vec<String> {
        self.replies_to(root_id).iter().map(|r| r["message"].as_str().unwrap_or_default().to_string()).collect()
    }

    pub fn webhook_posts(&self, id: &str) -> Vec<Value> {
        self.with(|w| w.hooks.get(id).cloned().unwrap_or_default())
    }
}

/// Counts the call and takes its scripted fault, if any.
fn take_fault(world: &Shared, route: &'static str) -> Option<Fault> {
    let mut w = world.lock().expect("fake lock");
    *w.calls.entry(route).or_default() += 1;
    if let Some(f) = w.faults.get_mut(route).and_then(VecDeque::pop_front) {
        return Some(f);
    }
    if w.chaos > 0.0 && route != "me" {
        let r = random_unit();
        if r < w.chaos {
            w.faults_injected += 1;
            // 5xx, 429 with a reset, a hang past the client's timeout, created-then-502.
            return Some(match (r / w.chaos * 4.0) as u32 {
                0 => Fault::Status(500),
                1 => Fault::RateLimited(1),
                2 => Fault::Slow(Duration::from_millis(1500)),
                _ => Fault::DoThen502,
            });
        }
    }
    None
}

fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Applies a fault that answers instead of the work; `Ok(true)` means "then answer 502".
async fn before(world: &Shared, route: &'static str) -> Result<bool, Response> {
    match take_fault(world, route) {
        None => Ok(false),
        Some(Fault::Status(s)) => Err(app_error(s, "fake.injected.app_error", "injected by the test")),
        Some(Fault::RateLimited(secs)) => Err(rate_limited(secs)),
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            Ok(false)
        }
        Some(Fault::DoThen502) => Ok(true),
        Some(Fault::OkWithoutPost) => Err(Json(json!({"status": "OK"})).into_response()),
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(&format!("Bearer {BOT_TOKEN}")))
}

fn session_expired() -> Response {
    app_error(401, "api.context.session_expired.app_error", "Invalid or expired session, please login again.")
}

async fn me(State(world): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = before(&world, "me").await {
        return r;
    }
    if let Some(user) = channels::user_of_token(&world, &headers) {
        return Json(user).into_response();
    }
    if !authorised(&headers) {
        return session_expired();
    }
    Json(json!({"id": BOT_USER_ID, "username": "klaxon-bot", "is_bot": true, "roles": "system_user"})).into_response()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// What every post-writing route does first: its scripted fault, the bot token, a JSON body.
/// `Ok((then_502, body))`, or the answer to give instead.
async fn accept(
    world: &Shared,
    route: &'static str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(bool, Value), Response> {
    let then_502 = before(world, route).await?;
    if !authorised(headers) {
        return Err(session_expired());
    }
    serde_json::from_slice::<Value>(body).map(|v| (then_502, v)).map_err(|_| {
        app_error(400, "api.context.invalid_body_param.app_error", "Invalid or missing post in request body.")
    })
}

async fn create_post(State(world): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (then_502, req) = match accept(&world, "create", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let channel = req["channel_id"].as_str().unwrap_or_default().to_string();
    let mut w = world.lock().expect("fake lock");
    if !w.members.contains(&channel) {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    let root = req["root_id"].as_str().unwrap_or_default().to_string();
    if !root.is_empty() && w.posts.get(&root).is_none_or(|p| p["channel_id"] != channel.as_str() || p["root_id"] != "")
    {
        return app_error(400, "api.post.create_post.root_id.app_error", "Invalid RootId parameter.");
    }
    let pending = req["pending_post_id"].as_str().unwrap_or_default().to_string();
    let ttl = w.pending_ttl;
    if let (Some(ttl), false) = (ttl, pending.is_empty())
        && let Some((id, at)) = w.pending.get(&pending)
        && at.elapsed() < ttl
    {
        let existing = w.posts[id].clone();
        return (StatusCode::CREATED, Json(existing)).into_response();
    }
    w.next_id += 1;
    let id = format!("{:0>26}", format!("post{}", w.next_id));
    let now = now_ms();
    let post = json!({
        "id": id, "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0, "is_pinned": false,
        "user_id": BOT_USER_ID, "channel_id": channel, "root_id": root, "original_id": "",
        "message": req["message"], "type": "", "props": req["props"], "hashtags": "", "file_ids": [],
        "pending_post_id": pending, "reply_count": 0, "last_reply_at": 0, "participants": null,
        "metadata": {}
    });
    w.posts.insert(id.clone(), post.clone());
    w.order.push(id.clone());
    if root.is_empty() {
        w.roots += 1;
    }
    if !pending.is_empty() {
        w.pending.insert(pending, (id, Instant::now()));
    }
    if then_502 {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    (StatusCode::CREATED, Json(post)).into_response()
}

async fn patch_post(State(world): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (then_502, req) = match accept(&world, "update", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut w = world.lock().expect("fake lock");
    let Some(post) = w.posts.get_mut(&id) else {
        return app_error(404, "app.post.get.app_error", "Unable to get the post.");
    };
    // A patch changes only the fields it carries; `props`, when given, replaces the props whole.
    for key in ["message", "props", "is_pinned", "file_ids", "has_reactions"] {
        if let Some(v) = req.get(key) {
            post[key] = v.clone();
        }
    }
    post["update_at"] = json!(now_ms());
    post["edit_at"] = json!(now_ms());
    let post = post.clone();
    if then_502 {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    Json(post).into_response()
}

async fn channel_posts(
    State(world): State<Shared>,
    Path(channel): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = before(&world, "list").await {
        return r;
    }
    if !authorised(&headers) {
        return session_expired();
    }
    let since: Option<i64> = q.get("since").and_then(|s| s.parse().ok());
    let w = world.lock().expect("fake lock");
    if !w.members.contains(&channel) {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    let in_channel = |id: &&String| w.posts[*id]["channel_id"] == channel.as_str();
    let mut order: Vec<String> = match (since, q.get("before")) {
        // `since`: created, edited or deleted after it, newest first, at most 1000 (§4.20).
        (Some(since), _) => {
            let mut ids: Vec<String> = w
                .order
                .iter()
                .filter(in_channel)
                .filter(|id| w.posts[*id]["update_at"].as_i64().unwrap_or(0) > since)
                .cloned()
                .collect();
            ids.reverse();
            ids.truncate(1000);
            ids
        }
        // `before`: the page of posts created before that one, newest first.
        (None, Some(before)) => {
            let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(60).min(200);
            let Some(pos) = w.order.iter().position(|id| id == before) else {
                return app_error(400, "api.context.invalid_body_param.app_error", "Invalid before parameter.");
            };
            let mut ids: Vec<String> = w.order[..pos].iter().filter(in_channel).cloned().collect();
            ids.reverse();
            ids.truncate(per_page);
            ids
        }
        (None, None) => {
            let mut ids: Vec<String> = w.order.iter().filter(in_channel).cloned().collect();
            ids.reverse();
            ids.truncate(60);
            ids
        }
    };
    order.dedup();
    let posts: serde_json::Map<String, Value> = order.iter().map(|id| (id.clone(), w.posts[id].clone())).collect();
    Json(json!({"order": order, "posts": posts, "next_post_id": "", "prev_post_id": ""})).into_response()
}

async fn thread(State(world): State<Shared>, Path(root): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = before(&world, "thread").await {
        return r;
    }
    if !authorised(&headers) {
        return session_expired();
    }
    let w = world.lock().expect("fake lock");
    if !w.posts.contains_key(&root) {
        return app_error(404, "app.post.get.app_error", "Unable to get the post.");
    }
    let ids: Vec<String> =
        w.order.iter().filter(|id| **id == root || w.posts[*id]["root_id"] == root.as_str()).cloned().collect();
    let posts: serde_json::Map<String, Value> = ids.iter().map(|id| (id.clone(), w.posts[id].clone())).collect();
    Json(json!({"order": ids, "posts": posts, "next_post_id": "", "prev_post_id": ""})).into_response()
}

async fn membership(State(world): State<Shared>, Path(channel): Path<String>, headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return session_expired();
    }
    let w = world.lock().expect("fake lock");
    if !w.members.contains(&channel) {
        return app_error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.");
    }
    Json(json!({"channel_id": channel, "user_id": BOT_USER_ID, "roles": "channel_user"})).into_response()
}

pub const TEAM_ID: &str = "t3amt3amt3amt3amt3amt3amt3";

async fn teams(headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return session_expired();
    }
    Json(json!([{"id": TEAM_ID, "name": "acme", "display_name": "Acme", "type": "O"}])).into_response()
}

async fn team_channels(State(world): State<Shared>, Path(team): Path<String>, headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return session_expired();
    }
    let w = world.lock().expect("fake lock");
    let mut channels: Vec<Value> = w
        .members
        .iter()
        .filter(|_| team == TEAM_ID)
        .map(|id| json!({"id": id, "team_id": TEAM_ID, "name": format!("ch-{}", &id[..6]), "display_name": id, "type": "O"}))
        .collect();
    channels.push(
        json!({"id": "dmdmdmdmdmdmdmdmdmdmdmdmdm", "team_id": "", "name": "a__b", "display_name": "", "type": "D"}),
    );
    if channels.len() == 1 {
        return app_error(404, "app.channel.get_channels.not_found.app_error", "No channels were found.");
    }
    Json(Value::Array(channels)).into_response()
}

async fn webhook(State(world): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(r) = before(&world, "webhook").await {
        return r;
    }
    let mut w = world.lock().expect("fake lock");
    if w.hooks_disabled {
        return app_error(
            501,
            "web.incoming_webhook.disabled.app_error",
            "Incoming webhooks have been disabled by the system admin.",
        );
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return app_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.");
    };
    let Some(posts) = w.hooks.get_mut(&id) else {
        return app_error(400, "web.incoming_webhook.invalid.app_error", "Invalid webhook.");
    };
    posts.push(payload);
    (StatusCode::OK, [("Content-Type", "text/plain")], "ok").into_response()
}
