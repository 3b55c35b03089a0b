//! Alert intake: each source kind turns a verified request into one [`AlertEvent`], and
//! [`apply::Intake`] applies it to the alert it belongs to.

pub mod apply;
pub mod mattermost;
pub mod particle;
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
    pub actor: Actor,
    pub at: Timestamp,
    /// Acts on this alert instead of the open alert for `dedup_key` (chat `ack ALR-12`).
    pub alert_id: Option<String>,
    pub delivery: Option<DeliveryKey>,
}
