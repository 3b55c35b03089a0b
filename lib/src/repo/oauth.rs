//! OAuth 2.0 tokens from Mattermost (`/incident connect` and the admin install), stored
//! encrypted: the store only ever holds ciphertext (see [`crate::chatops::oauth::TokenCipher`]),
//! and the used `state` nonces, so that a link cannot be replayed.

use super::{RepoError, decode, encode};
use crate::config::Secret;
use crate::store::{Condition, Item, Store, Write};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A stored token: encrypted, with whom it belongs to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The Mattermost user the token acts as.
    pub user_id: String,
    pub username: String,
    /// Encrypted access token.
    pub access: String,
    /// Encrypted refresh token, when Mattermost gave one.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    pub connected_at: jiff::Timestamp,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Encrypts tokens at rest with ChaCha20-Poly1305, keyed from `server.signing_secret`.
pub struct TokenCipher {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a stored token cannot be decrypted (server.signing_secret changed?); the user must run /incident connect again"
)]
pub struct DecryptError;

impl TokenCipher {
    pub fn new(signing_secret: &Secret) -> TokenCipher {
        let digest = Sha256::digest(format!("klaxon-token-key-v1\n{}", signing_secret.expose()).as_bytes());
        TokenCipher { cipher: ChaCha20Poly1305::new(Key::from_slice(&digest)) }
    }

    /// `hex(nonce || ciphertext)`, a fresh random nonce each time.
    pub fn encrypt(&self, plain: &str) -> String {
        let nonce_bytes: [u8; 12] = uuid::Uuid::new_v4().as_bytes()[..12].try_into().unwrap_or([0; 12]);
        let nonce = Nonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and nonce only fails for plaintexts over 256 GiB.
        let sealed = self.cipher.encrypt(nonce, plain.as_bytes()).unwrap_or_default();
        let mut out = hex::encode(nonce_bytes);
        out.push_str(&hex::encode(&sealed));
        out
    }

    pub fn decrypt(&self, sealed: &str) -> Result<Secret, DecryptError> {
        let bytes = hex::decode(sealed).map_err(|_| DecryptError)?;
        if bytes.len() < 12 {
            return Err(DecryptError);
        }
        let (nonce, body) = bytes.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), body).map_err(|_| DecryptError)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| DecryptError)
    }
}

#[derive(Clone)]
pub struct OAuthRepo {
    store: Arc<dyn Store>,
    cipher: Arc<TokenCipher>,
}

const SK: &str = "token";

fn user_pk(user_id: &str) -> String {
    format!("oauth-user#{user_id}")
}

const APP_PK: &str = "oauth-app";

impl OAuthRepo {
    /// Tokens are encrypted with a key derived from `signing_secret`.
    pub fn new(store: Arc<dyn Store>, signing_secret: &Secret) -> Self {
        OAuthRepo { store, cipher: Arc::new(TokenCipher::new(signing_secret)) }
    }

    /// A connected user's access token, decrypted; `None` when there is none, it expired, or it
    /// cannot be decrypted (the signing secret changed).
    pub async fn user_token(&self, user_id: &str) -> Result<Option<Secret>, RepoError> {
        let Some(stored) = self.user(user_id).await? else { return Ok(None) };
        if stored.expires_at <= jiff::Timestamp::now().as_second() {
            return Ok(None);
        }
        Ok(self.cipher.decrypt(&stored.access).ok())
    }

    /// Marks a state's nonce used. False: it was used before (a replayed link).
    pub async fn claim_nonce(&self, nonce: &str, expires_at: i64) -> Result<bool, RepoError> {
        let item = Item::new(format!("oauth-state#{nonce}"), "used", "1").expiring_at(expires_at);
        match self.store.transact(vec![Write::Put { item, condition: Condition::Absent }]).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_condition_failed() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The installed app's access token, decrypted (`None` before the install, or when it
    /// cannot be decrypted).
    pub async fn app_token(&self) -> Result<Option<Secret>, RepoError> {
        Ok(self.app().await?.and_then(|t| self.cipher.decrypt(&t.access).ok()))
    }

    pub async fn save_user(&self, token: &StoredToken) -> Result<(), RepoError> {
        let item = Item::new(user_pk(&token.user_id), SK, encode(token));
        Ok(self.store.put(item, Condition::None).await?)
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<StoredToken>, RepoError> {
        match self.store.get(&user_pk(user_id), SK).await? {
            Some(item) => Ok(Some(decode(&item, "a connected user's token")?.value)),
            None => Ok(None),
        }
    }

    pub async fn save_app(&self, token: &StoredToken) -> Result<(), RepoError> {
        Ok(self.store.put(Item::new(APP_PK, SK, encode(token)), Condition::None).await?)
    }

    pub async fn app(&self) -> Result<Option<StoredToken>, RepoError> {
        match self.store.get(APP_PK, SK).await? {
            Some(item) => Ok(Some(decode(&item, "the installed app's token")?.value)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_encrypted_and_a_changed_key_or_byte_fails() {
        let c = TokenCipher::new(&Secret::new("0123456789abcdef0123456789abcdef"));
        let sealed = c.encrypt("xoxo-user-token-26chars0000");
        assert!(!sealed.contains("xoxo"), "ciphertext only");
        assert_ne!(sealed, c.encrypt("xoxo-user-token-26chars0000"), "a fresh nonce each time");
        assert_eq!(c.decrypt(&sealed).unwrap().expose(), "xoxo-user-token-26chars0000");
        let other = TokenCipher::new(&Secret::new("another-secret-another-secret-0000"));
        assert_eq!(other.decrypt(&sealed), Err(DecryptError));
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(c.decrypt(&tampered), Err(DecryptError));
        assert_eq!(c.decrypt("zz"), Err(DecryptError));
        assert_eq!(c.decrypt(&sealed[1..]), Err(DecryptError), "odd length");
        assert_eq!(c.decrypt("00ff"), Err(DecryptError), "shorter than a nonce");
        assert_eq!(c.decrypt(&format!("+{}", &sealed[1..])), Err(DecryptError), "not hex");
    }
}
