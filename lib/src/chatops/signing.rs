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
    secret: Secret,
}

fn message(alert_id: &str, action: &str, post_id: &str, expires: i64) -> String {
    // Newline-separated: none of the parts can contain one (ids and a fixed action name).
    format!("klaxon-button-v1\n{alert_id}\n{action}\n{post_id}\n{expires}")
}

impl Signer {
    pub fn new(secret: Secret) -> Signer {
        Signer { secret }
    }

    fn mac(&self, text: &str) -> Vec<u8> {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    pub fn sign(&self, alert_id: &str, action: &str, post_id: &str, now: i64) -> ButtonContext {
        let expires = now + BUTTON_LIFETIME_SECS;
        let sig = hex(&self.mac(&message(alert_id, action, post_id, expires)));
        ButtonContext { alert_id: alert_id.into(), action: action.into(), post_id: post_id.into(), expires, sig }
    }

    /// Checks a context from a click on `clicked_post`, in constant time.
    pub fn verify(&self, c: &ButtonContext, clicked_post: &str, now: i64) -> Result<(), ContextError> {
        let want = hex(&self.mac(&message(&c.alert_id, &c.action, &c.post_id, c.expires)));
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
