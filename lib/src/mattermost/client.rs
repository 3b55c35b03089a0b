//! The HTTP calls. Each answer is classified once, here: the notifier decides only between
//! "retry later" and "record why and move on".

use super::error::MattermostError;
use super::types::{
    AppError, Channel, CreateChannel, CreatePost, Post, PostId, Team, TokenResponse, User, WebhookPost,
};
use crate::config::Secret;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Mattermost's own outgoing calls time out after 30 s; a notifier waits less and retries.
/// `KLAXON_MATTERMOST_TIMEOUT_MS` overrides it (the chaos run uses a short one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn request_timeout() -> Duration {
    std::env::var("KLAXON_MATTERMOST_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(REQUEST_TIMEOUT, Duration::from_millis)
}

#[derive(Clone)]
pub struct Mattermost {
    http: reqwest::Client,
    base: url::Url,
    token: Option<Secret>,
    me: std::sync::Arc<OnceCell<User>>,
}

/// Pages of 200 posts read back past the newest 1000 when looking for a card after a crash: a
/// storm's busy channel is walked back 100,000 posts.
const FIND_PAGES: usize = 500;
/// Pages of 200 posts read back past the newest 1000 when mirroring an incident channel.
const MIRROR_PAGES: usize = 50;

/// What a call is, for messages: "create a post in channel X".
#[derive(Clone, Copy)]
struct Call<'a> {
    what: &'a str,
    channel: Option<&'a str>,
}

impl Mattermost {
    /// `base` is the server URL (`https://chat.example.com`); `token` the bot's access token
    /// (needed for everything but incoming webhooks).
    pub fn new(base: url::Url, token: Option<Secret>) -> Mattermost {
        let http = reqwest::Client::builder()
            .timeout(request_timeout())
            .user_agent(concat!("Klaxon/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Mattermost { http, base, token, me: Default::default() }
    }

    /// The same server, acting with another token (a connected user's).
    pub fn with_token(&self, token: Secret) -> Mattermost {
        Mattermost { http: self.http.clone(), base: self.base.clone(), token: Some(token), me: Default::default() }
    }

    /// Exchanges an OAuth authorization code for a token (`POST /oauth/access_token`, the client
    /// secret in the form body as Mattermost requires, §7.1). Errors are AppError JSON.
    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &Secret,
        code: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, MattermostError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        let res = send(self.http.post(self.url("/oauth/access_token")).form(&form)).await?;
        json(res, Call { what: "exchange the authorization code", channel: None }).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, MattermostError> {
        match &self.token {
            Some(t) => Ok(req.bearer_auth(t.expose())),
            None => Err(MattermostError::Permanent {
                status: 0,
                id: String::new(),
                what: "no bot token is configured".into(),
                fix: "set mattermost.bot_token in klaxon.toml, or post through an incoming webhook".into(),
            }),
        }
    }

    /// The bot's own user, asked once and cached (`GET /api/v4/users/me`).
    pub async fn me(&self) -> Result<User, MattermostError> {
        self.me
            .get_or_try_init(|| async {
                let req = self.authed(self.http.get(self.url("/api/v4/users/me")))?;
                let res = send(req).await?;
                json(res, Call { what: "ask who the bot is", channel: None }).await
            })
            .await
            .cloned()
    }

    /// `POST /api/v4/posts` (201 with the post; the same post again for a repeated
    /// `pending_post_id` within 30 s).
    pub async fn create_post<P: serde::Serialize>(&self, post: &CreatePost<P>) -> Result<PostId, MattermostError> {
        let req = self.authed(self.http.post(self.url("/api/v4/posts?set_online=false")).json(post))?;
        let res = send(req).await?;
        json(res, Call { what: "post", channel: Some(&post.channel_id) }).await
    }

    /// `PUT /api/v4/posts/{id}/patch` with message and props: the props are replaced whole, so
    /// send the whole card. (A patch, not a full `PUT`, so that fields Klaxon does not know,
    /// such as a pin, stay as they are.)
    pub async fn update_post(
        &self,
        post_id: &str,
        channel_id: &str,
        message: &str,
        props: &(impl serde::Serialize + Sync),
    ) -> Result<PostId, MattermostError> {
        #[derive(serde::Serialize)]
        struct Patch<'a, P> {
            message: &'a str,
            props: &'a P,
        }
        let body = Patch { message, props };
        let req = self.authed(self.http.put(self.url(&format!("/api/v4/posts/{post_id}/patch"))).json(&body))?;
        let res = send(req).await?;
        json(res, Call { what: "update the alert's card", channel: Some(channel_id) }).await
    }

    /// The bot's root post in `channel_id`, created or changed after `since`, whose props carry
    /// `key` = `value`: how a card created just before a crash is found again. It walks back
    /// from the newest post (see [`Mattermost::walk_since`]), so a busy channel (a storm's
    /// thousands of cards) does not hide it; it stops at the post.
    pub async fn find_post(
        &self,
        channel_id: &str,
        since: jiff::Timestamp,
        key: &str,
        value: &str,
    ) -> Result<Option<Post>, MattermostError> {
        let me = self.me().await?;
        let mut found = None;
        let call = Call { what: "look for the alert's card", channel: Some(channel_id) };
        self.walk_since(channel_id, since.as_millisecond(), FIND_PAGES, call, |p| {
            let hit =
                p.root_id.is_empty() && p.user_id == me.id && p.props.get(key).and_then(|v| v.as_str()) == Some(value);
            if hit {
                found = Some(p);
            }
            hit
        })
        .await?;
        Ok(found)
    }

    /// Posts of a channel created, edited or deleted after `since_ms`, oldest first (see
    /// [`Mattermost::walk_since`]).
    pub async fn posts_since(&self, channel_id: &str, since_ms: i64) -> Result<Vec<Post>, MattermostError> {
        let mut out = Vec::new();
        let call = Call { what: "read the incident channel", channel: Some(channel_id) };
        self.walk_since(channel_id, since_ms, MIRROR_PAGES, call, |p| {
            out.push(p);
            false
        })
        .await?;
        out.reverse();
        Ok(out)
    }

    /// Shows `visit` the posts of a channel created, edited or deleted after `since_ms`, newest
    /// first, until it returns true. Mattermost answers `?since=` with at most 1000 posts (the
    /// newest); when that many come back, the older ones are read page by page
    /// (`?before=&per_page=200`, at most `pages` pages) down to `since_ms`.
    async fn walk_since(
        &self,
        channel_id: &str,
        since_ms: i64,
        pages: usize,
        call: Call<'_>,
        mut visit: impl FnMut(Post) -> bool,
    ) -> Result<(), MattermostError> {
        const SINCE_CAP: usize = 1000;
        const PAGE: usize = 200;
        let newest = self.post_list(channel_id, &format!("since={since_ms}"), call).await?;
        let full = newest.len() >= SINCE_CAP;
        let mut oldest = newest.last().map(|p| p.id.clone());
        if newest.into_iter().any(&mut visit) || !full {
            return Ok(());
        }
        for _ in 0..pages {
            let Some(before) = oldest.take() else { break };
            let page = self.post_list(channel_id, &format!("before={before}&per_page={PAGE}"), call).await?;
            let full = page.len() >= PAGE;
            oldest = page.last().map(|p| p.id.clone());
            let mut newer = page.into_iter().filter(|p| p.update_at > since_ms).peekable();
            if newer.peek().is_none() || newer.any(&mut visit) || !full {
                return Ok(());
            }
        }
        tracing::warn!(
            channel_id,
            pages,
            "stopped reading a channel's posts after {pages} pages of 200; older ones were not read"
        );
        Ok(())
    }

    /// One `GET /api/v4/channels/{id}/posts?...`, the posts of `order` (newest first).
    async fn post_list(&self, channel_id: &str, query: &str, call: Call<'_>) -> Result<Vec<Post>, MattermostError> {
        #[derive(serde::Deserialize)]
        struct PostList {
            #[serde(default)]
            order: Vec<String>,
            #[serde(default)]
            posts: std::collections::HashMap<String, Post>,
        }
        let url = self.url(&format!("/api/v4/channels/{channel_id}/posts?{query}"));
        let res = send(self.authed(self.http.get(url))?).await?;
        let mut list: PostList = json(res, call).await?;
        Ok(list.order.iter().filter_map(|id| list.posts.remove(id)).collect())
    }

    /// The bot's reply in the thread of `root_id` whose props carry `key` = `value`
    /// (`GET /api/v4/posts/{id}/thread`).
    pub async fn find_reply(&self, root_id: &str, key: &str, value: &str) -> Result<Option<Post>, MattermostError> {
        #[derive(serde::Deserialize)]
        struct PostList {
            #[serde(default)]
            posts: std::collections::HashMap<String, Post>,
        }
        let me = self.me().await?;
        let url = self.url(&format!("/api/v4/posts/{root_id}/thread"));
        let res = send(self.authed(self.http.get(url))?).await?;
        let list: PostList = json(res, Call { what: "look for a reply in the card's thread", channel: None }).await?;
        Ok(list.posts.into_values().find(|p| {
            p.root_id == root_id && p.user_id == me.id && p.props.get(key).and_then(|v| v.as_str()) == Some(value)
        }))
    }

    /// Whether the bot is a member of the channel (`GET /api/v4/channels/{id}/members/me`: 200
    /// a member; 403 not a member, or no such channel).
    pub async fn is_member(&self, channel_id: &str) -> Result<bool, MattermostError> {
        let url = self.url(&format!("/api/v4/channels/{channel_id}/members/me"));
        let res = send(self.authed(self.http.get(url))?).await?;
        match res.status() {
            s if s.is_success() => Ok(true),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Ok(false),
            _ => Err(classify(res, Call { what: "check the bot's membership", channel: Some(channel_id) }).await),
        }
    }

    /// The bot's teams (`GET /api/v4/users/me/teams`).
    pub async fn teams(&self) -> Result<Vec<Team>, MattermostError> {
        let res = send(self.authed(self.http.get(self.url("/api/v4/users/me/teams")))?).await?;
        json(res, Call { what: "list the bot's teams", channel: None }).await
    }

    /// The channels of a team the bot is a member of, DMs and GMs included
    /// (`GET /api/v4/users/me/teams/{team}/channels`; 404 when there are none).
    pub async fn channels_in(&self, team_id: &str) -> Result<Vec<Channel>, MattermostError> {
        let url = self.url(&format!("/api/v4/users/me/teams/{team_id}/channels"));
        let res = send(self.authed(self.http.get(url))?).await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        json(res, Call { what: "list the bot's channels", channel: None }).await
    }

    /// Creates a channel (`POST /api/v4/channels`, 201). `Ok(None)`: the name is taken in the
    /// team, by a live or an archived channel (400 `store.sql_channel.save_channel.exists` /
    /// `store.sql_channel.save.archived_channel`).
    pub async fn create_channel(&self, channel: &CreateChannel) -> Result<Option<Channel>, MattermostError> {
        let req = self.authed(self.http.post(self.url("/api/v4/channels")).json(channel))?;
        let res = send(req).await?;
        match json(res, Call { what: "create the incident channel", channel: None }).await {
            Ok(c) => Ok(Some(c)),
            Err(MattermostError::Permanent { id, .. })
                if id == "store.sql_channel.save_channel.exists.app_error"
                    || id == "store.sql_channel.save.archived_channel.app_error" =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A channel of the team by its name, archived ones included
    /// (`GET /api/v4/teams/{team}/channels/name/{name}?include_deleted=true`); `None` on 404,
    /// which is also what a private channel the bot cannot read answers.
    pub async fn channel_by_name(&self, team_id: &str, name: &str) -> Result<Option<Channel>, MattermostError> {
        let url = self.url(&format!("/api/v4/teams/{team_id}/channels/name/{name}?include_deleted=true"));
        let res = send(self.authed(self.http.get(url))?).await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json(res, Call { what: "look up a channel by name", channel: None }).await.map(Some)
    }

    /// Adds users to a channel (`POST /api/v4/channels/{id}/members` with `user_ids`, 201;
    /// members already there are not an error).
    pub async fn add_members(&self, channel_id: &str, user_ids: &[String]) -> Result<(), MattermostError> {
        let url = self.url(&format!("/api/v4/channels/{channel_id}/members"));
        let body = serde_json::json!({ "user_ids": user_ids });
        let res = send(self.authed(self.http.post(url).json(&body))?).await?;
        json::<serde_json::Value>(res, Call { what: "add people to the incident channel", channel: Some(channel_id) })
            .await
            .map(|_| ())
    }

    /// Sets a channel's header (`PUT /api/v4/channels/{id}/patch`).
    pub async fn set_header(&self, channel_id: &str, header: &str) -> Result<(), MattermostError> {
        let url = self.url(&format!("/api/v4/channels/{channel_id}/patch"));
        let body = serde_json::json!({ "header": header });
        let res = send(self.authed(self.http.put(url).json(&body))?).await?;
        json::<Channel>(res, Call { what: "update the incident channel's header", channel: Some(channel_id) })
            .await
            .map(|_| ())
    }

    /// The direct-message channel between the bot and `user_id`, created if needed
    /// (`POST /api/v4/channels/direct`: 201 whether new or not).
    pub async fn direct_channel(&self, user_id: &str) -> Result<Channel, MattermostError> {
        let me = self.me().await?;
        let body = serde_json::json!([me.id, user_id]);
        let res = send(self.authed(self.http.post(self.url("/api/v4/channels/direct")).json(&body))?).await?;
        json(res, Call { what: "open a direct message", channel: None }).await
    }

    /// A user by id (`GET /api/v4/users/{id}`); `None` when there is none (404, or a malformed id).
    pub async fn user(&self, user_id: &str) -> Result<Option<User>, MattermostError> {
        if user_id.len() != 26 || !user_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let url = self.url(&format!("/api/v4/users/{user_id}"));
        let res = send(self.authed(self.http.get(url))?).await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json(res, Call { what: "look up a user", channel: None }).await.map(Some)
    }

    /// A user by username (`GET /api/v4/users/username/{name}`); `None` when there is none.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, MattermostError> {
        let url = self.url(&format!("/api/v4/users/username/{username}"));
        let res = send(self.authed(self.http.get(url))?).await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json(res, Call { what: "look up a user", channel: None }).await.map(Some)
    }

    /// Opens an interactive dialog (`POST /api/v4/actions/dialogs/open`; the `trigger_id` is the
    /// credential, valid for 3 s on older servers and 30 s on current ones).
    pub async fn open_dialog(&self, request: &serde_json::Value) -> Result<(), MattermostError> {
        let req = self.http.post(self.url("/api/v4/actions/dialogs/open")).json(request);
        let req = match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        };
        let res = send(req).await?;
        if res.status().is_success() {
            return Ok(());
        }
        Err(classify(res, Call { what: "open the dialog", channel: None }).await)
    }

    /// Answers a slash command later through its `response_url` (§2.3: 30 minutes, 5 uses).
    /// Only URLs on this Mattermost server are called, so a forged URL cannot point Klaxon
    /// anywhere else.
    pub async fn respond(&self, response_url: &str, body: &serde_json::Value) -> Result<(), MattermostError> {
        let same_server = url::Url::parse(response_url).is_ok_and(|u| {
            u.scheme() == self.base.scheme()
                && u.host_str() == self.base.host_str()
                && u.port_or_known_default() == self.base.port_or_known_default()
                && u.path().starts_with("/hooks/commands/")
        });
        if !same_server {
            return Err(MattermostError::Permanent {
                status: 0,
                id: String::new(),
                what: "answer through the command's response URL".into(),
                fix: "the response URL is not on the configured Mattermost server (mattermost.url must match its SiteURL)".into(),
            });
        }
        let res = send(self.http.post(response_url).json(body)).await?;
        if res.status().is_success() {
            return Ok(());
        }
        Err(classify(res, Call { what: "answer through the command's response URL", channel: None }).await)
    }

    /// Posts through an incoming webhook (`POST /hooks/{id}`, answer `ok`). `url` is the
    /// webhook's full URL, which may be on another server than the bot's.
    pub async fn post_webhook(&self, url: &Secret, post: &WebhookPost) -> Result<(), MattermostError> {
        let res = send(self.http.post(url.expose()).json(post)).await?;
        if res.status().is_success() {
            return Ok(());
        }
        Err(classify(res, Call { what: "post through the incoming webhook", channel: None }).await)
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, MattermostError> {
    // The error's text never holds the URL's path (a webhook URL is a secret): only its kind.
    req.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "no answer in time"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "the request failed"
        };
        MattermostError::Transient { what: kind.into(), retry_after: None }
    })
}

async fn json<T: serde::de::DeserializeOwned>(res: reqwest::Response, call: Call<'_>) -> Result<T, MattermostError> {
    if !res.status().is_success() {
        return Err(classify(res, call).await);
    }
    res.json::<T>().await.map_err(|e| MattermostError::Transient {
        what: format!("an answer Klaxon cannot read ({e})"),
        retry_after: None,
    })
}

/// Seconds from now, from `X-RateLimit-Reset` or `Retry-After` (§8.3: relative seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    ["retry-after", "x-ratelimit-reset"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok()?.trim().parse::<u64>().ok())
        .max()
        .map(Duration::from_secs)
}

async fn classify(res: reqwest::Response, call: Call<'_>) -> MattermostError {
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.unwrap_or_default();
    let app: AppError = serde_json::from_str(&body).unwrap_or_default();
    let what = if app.id.is_empty() {
        format!("{} to {}: HTTP {}", call.what, call.channel.unwrap_or("Mattermost"), status.as_u16())
    } else {
        format!(
            "{}{}: HTTP {} {}",
            call.what,
            call.channel.map(|c| format!(" in channel {c}")).unwrap_or_default(),
            status.as_u16(),
            app.id
        )
    };
    let permanent = |fix: String| MattermostError::Permanent {
        status: status.as_u16(),
        id: app.id.clone(),
        what: what.clone(),
        fix,
    };
    match status {
        StatusCode::TOO_MANY_REQUESTS => MattermostError::Transient { what, retry_after: retry_after(&headers) },
        s if s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED => {
            MattermostError::Transient { what, retry_after: None }
        }
        StatusCode::NOT_IMPLEMENTED => permanent("incoming webhooks are disabled on that server; a system admin can enable them (System Console > Integrations), or use the bot".into()),
        StatusCode::UNAUTHORIZED => permanent("the bot token was refused; create a new access token for the bot and update mattermost.bot_token".into()),
        StatusCode::FORBIDDEN if call.channel.is_some() => permanent(format!(
            "the bot is not a member of channel {} (or the channel does not exist): add the bot to the channel, or fix its channel_id in klaxon.toml",
            call.channel.unwrap_or_default()
        )),
        StatusCode::BAD_REQUEST if app.id == "web.incoming_webhook.invalid.app_error" => {
            permanent("the webhook does not exist any more; create a new incoming webhook and update [mattermost.webhooks]".into())
        }
        StatusCode::NOT_FOUND => permanent("the channel or post does not exist; check channel_id in klaxon.toml".into()),
        _ => permanent("check the channel and the bot's permissions in Mattermost".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_response_url_on_another_server_is_never_called() {
        let mm = Mattermost::new(url::Url::parse("https://chat.example.com").unwrap(), None);
        for bad in [
            "https://evil.example.com/hooks/commands/abc",
            "http://chat.example.com/hooks/commands/abc",
            "https://chat.example.com:8443/hooks/commands/abc",
            "https://chat.example.com/api/v4/users",
            "not a url",
        ] {
            let err = mm.respond(bad, &serde_json::json!({})).await.unwrap_err();
            assert!(matches!(err, MattermostError::Permanent { status: 0, .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn retry_after_takes_the_longer_of_the_two_headers_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert("X-Ratelimit-Reset", "3".parse().unwrap());
        h.insert("Retry-After", "1".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
