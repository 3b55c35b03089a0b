//! Klaxon: alerting and incident response for teams that work in Mattermost.
//!
//! Every piece of logic lives in this crate; the Lambda functions in `functions/` and the
//! `klaxon` command only wire it together. See `ARCHITECTURE` in the README for the map.

pub mod app;
pub mod backoff;
pub mod chatops;
pub mod config;
pub mod deployed;
pub mod domain;
pub mod embedded;
pub mod escalation;
pub mod http;
pub mod incidents;
pub mod ingest;
pub mod lambda;
pub mod mattermost;
pub mod notify;
pub mod queue;
pub mod repo;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod telemetry;
