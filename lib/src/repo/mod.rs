//! Repositories: alerts, incidents, counters and delivery records, written once on top of the
//! store port, so they behave the same on SQLite and DynamoDB.
//!
//! Key layout (one table):
//!
//! | pk                               | sk         | data                                  |
//! |----------------------------------|------------|---------------------------------------|
//! | `alert#ALR-12`                   | `alert`    | the alert (JSON)                      |
//! | `open#<source>#<dedup key>`      | `open`     | id of the open alert with that key    |
//! | `open#<source>#<dedup key>`      | `seen#<hash of the delivery key>` | the answer a delivery got, one line (expires; `ingest/delivery.rs`) |
//! | `seen#<source>#<delivery key>`   | `seen`     | the same in JSON, as earlier versions kept it: read, never written |
//! | `incident#42`                    | `incident` | the incident (JSON)                   |
//! | `incident-channel#<channel id>`  | `incident` | number of the channel's incident      |
//! | `incidents-open`                 | number     | one per open incident (`/incident list`) |
//! | `incident-request#<key>`         | `incident` | the incident a dialog submission made |
//! | `oauth-user#<user id>`, `oauth-app` | `token` | an OAuth token, encrypted             |
//! | `oauth-state#<nonce>`            | `used`     | a used OAuth link (expires)           |
//! | `escalation-due`                 | `<ms>#<alert>` | an escalation timer               |
//! | `maintenance`                    | window id  | a window started from chat (expires)  |
//! | `held#<window key>`              | alert id   | an alert a window held (expires)      |
//! | `maintenance-closed`             | window key | a window end already handled (expires)|
//! | `counter#<name>`                 | `counter`  | last number handed out                |
//! | `delivery#<job id>`              | `delivery` | what the notifier did with a job      |
//! | `card#ALR-12`                    | `card`     | the alert's card post in Mattermost   |
//! | `config`                         | `current`  | the deployed klaxon.toml (on AWS)     |
//! | `config`                         | `v#<n>`    | every version ever pushed             |

pub mod alerts;
pub mod cards;
pub mod config;
pub mod counter;
pub mod deliveries;
pub mod incidents;
pub mod maintenance;
pub mod oauth;

use crate::store::{Condition, Item, StoreError, Write};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value with the store version it was read at; updates are conditioned on that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} changed while it was being updated (someone else was first); reload it and try again")]
    Conflict { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("stored {what} cannot be read: {reason}")]
    Decode { what: String, reason: String },
}

pub(crate) fn encode<T: Serialize>(value: &T) -> String {
    // Serialising our own plain structs to JSON cannot fail (no maps with non-string keys).
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"encode_error\":\"{e}\"}}"))
}

pub(crate) fn decode<T: DeserializeOwned>(item: &Item, what: &str) -> Result<Versioned<T>, RepoError> {
    serde_json::from_str(&item.data)
        .map(|value| Versioned { value, version: item.version })
        .map_err(|e| RepoError::Decode { what: what.to_string(), reason: e.to_string() })
}

/// A put that creates `value` under the key, failing if something is already there.
pub(crate) fn create_write<T: Serialize>(pk: String, sk: &str, value: &T) -> Write {
    Write::Put { item: Item::new(pk, sk, encode(value)), condition: Condition::Absent }
}

/// A put that replaces the value read at `version`, failing if it changed meanwhile.
pub(crate) fn update_write<T: Serialize>(pk: String, sk: &str, value: &T, version: u64) -> Write {
    Write::Put {
        item: Item::new(pk, sk, encode(value)).with_version(version + 1),
        condition: Condition::Version(version),
    }
}
