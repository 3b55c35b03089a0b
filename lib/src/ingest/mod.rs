//! Alert intake: each source kind turns a verified request into one [`AlertEvent`], and
//! [`apply::Intake`] applies it to the alert it belongs to.

pub mod apply;
pub mod coalesce;
mod delivery;
pub mod mattermost;
pub mod pace;
pub mod particle;
pub mod serial;
pub mod template;
pub mod verify;

use crate::domain::{Actor, Urgency};
use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Trigger,
    Acknowledge,
    Resolve,
}

/// Identifies one delivery of a request, so that a second delivery changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKey {
    /// e.g. `post:<post_id>`, `event:<PARTICLE_EVENT_ID>`, `body:<sha256>`.
    pub key: String,
    /// How long the key is remembered.
    pub ttl_secs: i64,
}

/// What a source said, in Klaxon's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    pub kind: EventKind,
    pub source: String,
    pub dedup_key: String,
    pub summary: String,
    pub details: String,
    pub urgency: Urgency,
    /// The sender named the urgency (a marker or a leading word) rather than getting the
    /// source's default; only a named urgency can raise an open alert's.
    pub urgency_named: bool,
    pub actor: Actor,
    pub at: Timestamp,
    /// Acts on this alert instead of the open alert for `dedup_key` (chat `ack ALR-12`).
    pub alert_id: Option<String>,
    pub delivery: Option<DeliveryKey>,
}

/// Longest summary kept; Mattermost shows a card title on a line or two anyway.
pub const MAX_SUMMARY_CHARS: usize = 500;
/// Longest details kept: well inside Mattermost's 16383-character post and DynamoDB's item limit.
pub const MAX_DETAILS_CHARS: usize = 8_000;
/// Keys longer than this (bytes) are replaced by a hash, so that store keys stay far inside
/// DynamoDB's 2048-byte partition key limit whatever a device or a template produces.
pub const MAX_KEY_BYTES: usize = 256;
pub const TRUNCATED: &str = "… (truncated)";

impl AlertEvent {
    /// The event with its keys and texts inside the store's limits: long delivery ids and dedup
    /// keys become `sha256:<hex>` (still unique, still stable across retries), and long texts are
    /// cut with a visible marker. Every source goes through this, so the same request gets the
    /// same answer on every backend.
    pub fn bounded(mut self) -> AlertEvent {
        self.dedup_key = bounded_key(self.dedup_key);
        if let Some(d) = &mut self.delivery {
            d.key = bounded_key(std::mem::take(&mut d.key));
        }
        self.summary = truncate(self.summary, MAX_SUMMARY_CHARS);
        self.details = truncate(self.details, MAX_DETAILS_CHARS);
        self
    }
}

fn bounded_key(key: String) -> String {
    use sha2::Digest;
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

/// `text` cut to at most `max` characters, the marker included, on a character boundary.
pub fn truncate(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let keep = max.saturating_sub(TRUNCATED.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(TRUNCATED);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, summary: &str) -> AlertEvent {
        AlertEvent {
            kind: EventKind::Trigger,
            source: "s".into(),
            dedup_key: key.into(),
            summary: summary.into(),
            details: "d".repeat(MAX_DETAILS_CHARS + 5),
            urgency: Urgency::High,
            urgency_named: false,
            actor: Actor::System,
            at: Timestamp::UNIX_EPOCH,
            alert_id: None,
            delivery: Some(DeliveryKey { key: format!("event:{}", "e".repeat(2100)), ttl_secs: 60 }),
        }
    }

    #[test]
    fn long_keys_are_hashed_stably_and_short_ones_kept() {
        let a = event(&"k".repeat(300), "x").bounded();
        let b = event(&"k".repeat(300), "x").bounded();
        assert!(a.dedup_key.starts_with("sha256:") && a.dedup_key.len() == 71, "{}", a.dedup_key);
        assert_eq!(a.dedup_key, b.dedup_key, "a retry maps to the same key");
        assert_ne!(a.dedup_key, event(&"k".repeat(301), "x").bounded().dedup_key);
        assert!(a.delivery.unwrap().key.starts_with("sha256:"));
        assert_eq!(event("dev7:alert", "x").bounded().dedup_key, "dev7:alert");
    }

    #[test]
    fn long_texts_are_cut_with_a_visible_marker() {
        let e = event("k", &"ü".repeat(MAX_SUMMARY_CHARS + 1)).bounded();
        assert_eq!(e.summary.chars().count(), MAX_SUMMARY_CHARS);
        assert!(e.summary.ends_with(TRUNCATED));
        assert_eq!(e.details.chars().count(), MAX_DETAILS_CHARS);
        assert_eq!(event("k", "short").bounded().summary, "short");
    }
}
