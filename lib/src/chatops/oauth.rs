//! OAuth 2.0 with Mattermost as the provider (mattermost.md §7), Rootly's two flows on one
//! callback, `GET /chatops/oauth/callback`:
//!
//! * **`/incident connect`**: a user gets a "Connect now" link to Mattermost's
//!   `/oauth/authorize`, with a signed, expiring `state` bound to them. The callback exchanges
//!   the code, checks with `GET /api/v4/users/me` that the token is that user's, and stores the
//!   link. Channels the user declares are then created as them.
//! * **Admin install** (`klaxon oauth install-url`): the app's own token, used for API calls when
//!   no bot token is configured.
//!
//! A forged, expired or replayed `state`, another user, and every refusal of the code exchange
//! get a page that says what happened, and change nothing. Tokens are stored encrypted
//! ([`TokenCipher`], a key derived from `server.signing_secret`) and never logged.

use crate::app::AppState;
use crate::config::Secret;
use crate::mattermost::MattermostError;
use crate::repo::oauth::{OAuthRepo, StoredToken, TokenCipher};
use serde::Deserialize;

pub const CONNECT: &str = "oauth:connect";
pub const INSTALL: &str = "oauth:install";
/// How long a "Connect now" link works (Mattermost's codes live 10 minutes).
pub const LINK_LIFETIME_SECS: i64 = 900;

/// The redirect URI registered with the Mattermost OAuth app (it must match exactly).
pub fn redirect_uri(state: &AppState) -> Option<String> {
    let public = state.config.server.public_url.as_ref()?;
    Some(format!("{}/chatops/oauth/callback", public.as_str().trim_end_matches('/')))
}

/// The authorize link for `purpose` (a user's connect, or the admin install).
pub fn authorize_link(state: &AppState, purpose: &str, user_id: &str, user_name: &str) -> Result<String, String> {
    let oauth = state.config.incidents.oauth.as_ref().ok_or("incidents.oauth is not configured in klaxon.toml")?;
    let mm = state.config.mattermost.as_ref().ok_or("no [mattermost] section is configured")?;
    let signer = state.state_signer().ok_or("server.signing_secret is not set")?;
    let redirect = redirect_uri(state).ok_or("server.public_url is not set")?;
    let now = jiff::Timestamp::now().as_second();
    let signed =
        signer.sign_state(purpose, user_id, serde_json::json!({ "user_name": user_name }), now, LINK_LIFETIME_SECS);
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", oauth.client_id.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("state", signed.as_str()),
    ])
    .map_err(|e| e.to_string())?;
    Ok(format!("{}/oauth/authorize?{query}", mm.url.as_str().trim_end_matches('/')))
}

/// `/incident connect`'s answer.
pub fn connect_text(state: &AppState, user_id: &str, user_name: &str) -> String {
    match authorize_link(state, CONNECT, user_id, user_name) {
        Ok(link) => format!(
            "[Connect now]({link}) to let Klaxon create the incident channels you declare as you. The link works for 15 minutes, for you only."
        ),
        Err(why) => format!("Connecting accounts is not set up ({why}); nothing changed."),
    }
}

/// What Mattermost sends to the callback.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Callback {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub error: String,
}

/// The page shown after the callback: whether it worked, and the words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub ok: bool,
    pub title: &'static str,
    pub text: String,
}

fn refused(text: impl Into<String>) -> Page {
    Page { ok: false, title: "Not connected", text: text.into() }
}

/// What a refused code exchange means, for the person in front of the page.
fn exchange_refusal(e: &MattermostError) -> String {
    match e {
        MattermostError::Permanent { id, .. } if id.contains("expired_code") => {
            "Mattermost says this authorization code is expired or was already used. Run /incident connect again.".into()
        }
        MattermostError::Permanent { id, .. } if id.contains("redirect_uri") => {
            "Mattermost refused the redirect URI: the OAuth app's callback URL must be exactly <public_url>/chatops/oauth/callback. An admin must fix the app.".into()
        }
        MattermostError::Permanent { id, .. } if id.contains("credentials") => {
            "Mattermost refused Klaxon's client id or secret: an admin must check incidents.oauth in klaxon.toml.".into()
        }
        MattermostError::Permanent { status, id, .. } => {
            format!("Mattermost refused the authorization code (HTTP {status} {id}). Run /incident connect again, or ask an admin.")
        }
        MattermostError::Transient { .. } => "Mattermost could not be reached to finish connecting. Run /incident connect again in a moment.".into(),
    }
}

/// Handles the callback. Nothing is stored unless every check passed.
pub async fn callback(state: &AppState, cb: &Callback) -> Page {
    if !cb.error.is_empty() {
        return refused("You did not allow Klaxon to act as you; nothing changed.");
    }
    let (Some(signer), Some(oauth), Some(secret)) =
        (state.state_signer(), state.config.incidents.oauth.as_ref(), state.config.server.signing_secret.as_ref())
    else {
        return refused(
            "Klaxon's OAuth app is not configured (incidents.oauth, server.signing_secret); nothing changed.",
        );
    };
    let Some(mm) = state.mattermost() else { return refused("No Mattermost is configured; nothing changed.") };
    let now = jiff::Timestamp::now().as_second();
    // The state says which flow it belongs to; its signature covers that (checked next).
    let claimed = serde_json::from_str::<crate::chatops::signing::State>(&cb.state).map(|s| s.purpose);
    let purpose = if claimed.ok().as_deref() == Some(INSTALL) { INSTALL } else { CONNECT };
    let verified = match signer.verify_state(&cb.state, purpose, None, now) {
        Ok(v) => v,
        Err(e) => return refused(format!("This link cannot be used: {e}. Nothing changed.")),
    };
    let repo = OAuthRepo::new(state.store.clone(), secret);
    let redirect = redirect_uri(state).unwrap_or_default();
    let token = match mm.exchange_code(&oauth.client_id, &oauth.client_secret, &cb.code, &redirect).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "oauth: the code exchange was refused");
            return refused(exchange_refusal(&e));
        }
    };
    let as_user = mm.with_token(Secret::new(token.access_token.clone()));
    let me = match as_user.me().await {
        Ok(me) => me,
        Err(e) => return refused(exchange_refusal(&e)),
    };
    if purpose == CONNECT && me.id != verified.user_id {
        return refused(format!(
            "You signed in to Mattermost as @{}, but /incident connect was run by another user. Nothing was stored; run /incident connect yourself.",
            me.username
        ));
    }
    // Last check before anything is stored: each link works once.
    match repo.claim_nonce(&verified.nonce, verified.expires).await {
        Ok(true) => {}
        Ok(false) => {
            return refused("This link was already used. Run /incident connect again for a new one; nothing changed.");
        }
        Err(e) => {
            tracing::error!(error = %e, "oauth: cannot record the state");
            return refused("Klaxon cannot reach its store right now; nothing changed. Try again in a moment.");
        }
    }
    let cipher = TokenCipher::new(secret);
    let stored = StoredToken {
        user_id: me.id.clone(),
        username: me.username.clone(),
        access: cipher.encrypt(&token.access_token),
        refresh: (!token.refresh_token.is_empty()).then(|| cipher.encrypt(&token.refresh_token)),
        expires_at: now + token.expires_in.max(0),
        connected_at: jiff::Timestamp::now(),
    };
    let saved = if purpose == CONNECT { repo.save_user(&stored).await } else { repo.save_app(&stored).await };
    if let Err(e) = saved {
        tracing::error!(error = %e, "oauth: cannot store the token");
        return refused("Klaxon cannot reach its store right now; nothing was stored. Run /incident connect again.");
    }
    tracing::info!(user = %me.username, flow = purpose, "oauth: connected");
    if purpose == CONNECT {
        Page {
            ok: true,
            title: "Connected",
            text: format!(
                "Connected @{}. Incident channels you declare are now created as you. You can close this tab.",
                me.username
            ),
        }
    } else {
        // From now on this process uses it; others load it on their next start or invocation.
        *state.app_token.write().unwrap_or_else(|p| p.into_inner()) = Some(Secret::new(token.access_token.clone()));
        Page {
            ok: true,
            title: "Installed",
            text: format!(
                "Klaxon is installed as @{}; it uses this token when no bot token is configured. You can close this tab.",
                me.username
            ),
        }
    }
}

/// A connected user's token, decrypted, when it has not expired.
pub async fn user_token(state: &AppState, user_id: &str) -> Option<Secret> {
    let secret = state.config.server.signing_secret.as_ref()?;
    OAuthRepo::new(state.store.clone(), secret).user_token(user_id).await.ok()?
}
