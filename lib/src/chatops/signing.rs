//! Button contexts signed with the server's `signing_secret`.
//!
//! Mattermost signs nothing it sends to an integration, so anyone who can reach
//! `/chatops/action` could claim to have clicked anything. Each button's `context` therefore
//! carries an HMAC-SHA256 over the alert id, the action, the post id and an expiry; Klaxon
//! refuses a context that is forged, altered or expired. Every card update signs afresh.

use crate::config::Secret;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a card's buttons stay valid; every update of the card renews them.
pub const BUTTON_LIFETIME_SECS: i64 = 7 * 86_400;

/// What a button's `context` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonContext {
    pub alert_id: String,
    /// `acknowledge` or `resolve`.
    pub action: String,
    /// The post the button is on; empty when it was not known at signing time (a card's first
    /// render, a webhook post): then the click's post must be the alert's recorded card, or any
    /// post for a webhook destination.
    pub post_id: String,
    /// Unix seconds.
    pub expires: i64,
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("this button's signature does not match: it was not made by this Klaxon, or was altered")]
    Forged,
    #[error("this button has expired; the card is refreshed with new ones")]
    Expired,
    #[error("this button belongs to another post")]
    WrongPost,
}

#[derive(Clone)]
pub struct Signer {
    /// HMAC-SHA256 keyed with the signing secret once; each signature starts from a copy.
    keyed: Hmac<Sha256>,
}

fn message(alert_id: &str, action: &str, post_id: &str, expires: i64) -> String {
    // Newline-separated: none of the parts can contain one (ids and a fixed action name).
    format!("klaxon-button-v1\n{alert_id}\n{action}\n{post_id}\n{expires}")
}

impl Signer {
    pub fn new(secret: Secret) -> Signer {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let keyed = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        Signer { keyed }
    }

    /// The signature of `text`, hex-encoded.
    fn mac(&self, text: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn sign(&self, alert_id: &str, action: &str, post_id: &str, now: i64) -> ButtonContext {
        let expires = now + BUTTON_LIFETIME_SECS;
        let sig = self.mac(&message(alert_id, action, post_id, expires));
        ButtonContext { alert_id: alert_id.into(), action: action.into(), post_id: post_id.into(), expires, sig }
    }

    /// Checks a context from a click on `clicked_post`, in constant time.
    pub fn verify(&self, c: &ButtonContext, clicked_post: &str, now: i64) -> Result<(), ContextError> {
        let want = self.mac(&message(&c.alert_id, &c.action, &c.post_id, c.expires));
        if !bool::from(want.as_bytes().ct_eq(c.sig.as_bytes())) {
            return Err(ContextError::Forged);
        }
        if c.expires <= now {
            return Err(ContextError::Expired);
        }
        if !c.post_id.is_empty() && c.post_id != clicked_post {
            return Err(ContextError::WrongPost);
        }
        Ok(())
    }
}

/// A signed, expiring `state` bound to one Mattermost user: what a dialog or an OAuth flow
/// echoes back. Mattermost signs neither, so this is the only proof that the submission comes
/// from the flow Klaxon started, for that user, recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// What the state is for (`dialog:new`, `oauth:connect`): a state for one use is refused
    /// for another.
    #[serde(rename = "p")]
    pub purpose: String,
    #[serde(rename = "u")]
    pub user_id: String,
    /// Whatever the flow carries along (e.g. the user's name and the command's response URL).
    #[serde(rename = "d")]
    pub data: serde_json::Value,
    /// Unique per flow: a submission's idempotency key.
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "e")]
    pub expires: i64,
    #[serde(rename = "s", default)]
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("this form's state is missing or unreadable; it was not started by Klaxon")]
    Malformed,
    #[error("this form's signature does not match: it was not started by this Klaxon, or was altered")]
    Forged,
    #[error("this form has expired; run the command again")]
    Expired,
    #[error("this form was started by another user")]
    WrongUser,
}

impl State {
    fn text(&self) -> String {
        format!("klaxon-state-v1\n{}\n{}\n{}\n{}\n{}", self.purpose, self.user_id, self.nonce, self.expires, self.data)
    }
}

impl Signer {
    /// A new state for `purpose` and `user_id`, valid for `lifetime_secs`.
    pub fn sign_state(
        &self,
        purpose: &str,
        user_id: &str,
        data: serde_json::Value,
        now: i64,
        lifetime_secs: i64,
    ) -> String {
        let mut state = State {
            purpose: purpose.into(),
            user_id: user_id.into(),
            data,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            expires: now + lifetime_secs,
            sig: String::new(),
        };
        state.sig = self.mac(&state.text());
        crate::repo::encode(&state)
    }

    /// Checks a state in constant time: signed by this server, for `purpose`, not expired, and
    /// (when `user_id` is given) started by that user.
    pub fn verify_state(&self, raw: &str, purpose: &str, user_id: Option<&str>, now: i64) -> Result<State, StateError> {
        let state: State = serde_json::from_str(raw).map_err(|_| StateError::Malformed)?;
        let want = self.mac(&state.text());
        if !bool::from(want.as_bytes().ct_eq(state.sig.as_bytes())) || state.purpose != purpose {
            return Err(StateError::Forged);
        }
        if state.expires <= now {
            return Err(StateError::Expired);
        }
        if user_id.is_some_and(|u| u != state.user_id) {
            return Err(StateError::WrongUser);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(Secret::new("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn a_signed_context_verifies_and_any_change_is_refused() {
        let s = signer();
        let c = s.sign("ALR-1", "resolve", "p1", 1_000);
        assert_eq!(s.verify(&c, "p1", 1_001), Ok(()));
        for altered in [
            ButtonContext { alert_id: "ALR-2".into(), ..c.clone() },
            ButtonContext { action: "acknowledge".into(), ..c.clone() },
            ButtonContext { post_id: "p2".into(), ..c.clone() },
            ButtonContext { expires: c.expires + 1, ..c.clone() },
            ButtonContext { sig: "00".repeat(32), ..c.clone() },
        ] {
            assert_eq!(s.verify(&altered, "p1", 1_001), Err(ContextError::Forged), "{altered:?}");
        }
        let other = Signer::new(Secret::new("another-secret-another-secret-0000"));
        assert_eq!(other.verify(&c, "p1", 1_001), Err(ContextError::Forged));
    }

    /// Buttons on cards posted before an upgrade stay valid for a week: the signature's text and
    /// encoding must not change. Pinned against Python's `hmac` (lowercase hex of HMAC-SHA256).
    #[test]
    fn a_signature_is_the_lowercase_hex_hmac_of_the_documented_text() {
        let expires = 1_800_000_000;
        let c = signer().sign("ALR-7", "acknowledge", "p1", expires - BUTTON_LIFETIME_SECS);
        assert_eq!(c.expires, expires);
        assert_eq!(c.sig, "46042f7daf3e9935fd7b20fc4ffe99d32c753ca94d70d4c68dc8ae8b33242597");
    }

    #[test]
    fn a_state_is_bound_to_its_purpose_user_and_time() {
        let s = signer();
        let raw = s.sign_state("dialog:new", "u1", serde_json::json!({"name": "bob"}), 1_000, 600);
        let ok = s.verify_state(&raw, "dialog:new", Some("u1"), 1_001).unwrap();
        assert_eq!(ok.data["name"], "bob");
        assert_eq!(s.verify_state(&raw, "oauth:connect", Some("u1"), 1_001), Err(StateError::Forged));
        assert_eq!(s.verify_state(&raw, "dialog:new", Some("u2"), 1_001), Err(StateError::WrongUser));
        assert_eq!(s.verify_state(&raw, "dialog:new", Some("u1"), 1_600), Err(StateError::Expired));
        assert_eq!(s.verify_state("not json", "dialog:new", None, 1_001), Err(StateError::Malformed));
        let mut altered: State = serde_json::from_str(&raw).unwrap();
        altered.data = serde_json::json!({"name": "mallory"});
        let altered = serde_json::to_string(&altered).unwrap();
        assert_eq!(s.verify_state(&altered, "dialog:new", Some("u1"), 1_001), Err(StateError::Forged));
        let other = Signer::new(Secret::new("another-secret-another-secret-0000"));
        assert_eq!(other.verify_state(&raw, "dialog:new", Some("u1"), 1_001), Err(StateError::Forged));
        let again = s.sign_state("dialog:new", "u1", serde_json::json!({}), 1_000, 600);
        assert_ne!(
            s.verify_state(&again, "dialog:new", None, 1_001).unwrap().nonce,
            ok.nonce,
            "each flow its own nonce"
        );
    }

    #[test]
    fn expiry_and_the_post_are_checked() {
        let s = signer();
        let c = s.sign("ALR-1", "resolve", "p1", 1_000);
        assert_eq!(s.verify(&c, "p1", 1_000 + BUTTON_LIFETIME_SECS), Err(ContextError::Expired));
        assert_eq!(s.verify(&c, "p9", 1_001), Err(ContextError::WrongPost));
        let unbound = s.sign("ALR-1", "resolve", "", 1_000);
        assert_eq!(s.verify(&unbound, "any", 1_001), Ok(()));
    }
}
