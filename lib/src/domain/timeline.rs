//! Who did what, when: the audit trail every alert and incident carries.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whoever caused a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A Mattermost user (id and username as Mattermost gave them).
    User { id: String, name: String },
    /// An alert source from the configuration (a Particle device hook, a trigger word hook, ...).
    Source { id: String },
    /// Klaxon itself (escalation timers, expiry).
    System,
}

impl Actor {
    pub fn user(id: impl Into<String>, name: impl Into<String>) -> Self {
        Actor::User { id: id.into(), name: name.into() }
    }

    pub fn source(id: impl Into<String>) -> Self {
        Actor::Source { id: id.into() }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User { name, .. } => write!(f, "@{name}"),
            Actor::Source { id } => write!(f, "source {id}"),
            Actor::System => f.write_str("Klaxon"),
        }
    }
}

/// One entry of a timeline. `what` is a short machine-readable event name
/// (`triggered`, `repeated`, `acknowledged`, ...); `note` is optional human text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    pub actor: Actor,
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The Mattermost post this entry mirrors (a reply in an incident channel), so that the same
    /// post is never added twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
}

impl TimelineEntry {
    pub fn new(at: Timestamp, actor: Actor, what: impl Into<String>) -> Self {
        TimelineEntry { at, actor, what: what.into(), note: None, post_id: None }
    }
}
