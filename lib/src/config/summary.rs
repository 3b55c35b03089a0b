//! The short description `klaxon config check` and `klaxon serve` print.

use super::{Config, StorageBackend};
use std::fmt::Write;

pub(super) fn summary(c: &Config) -> String {
    let mut s = String::new();
    let _ = match c.storage.backend {
        StorageBackend::Embedded => writeln!(s, "storage: embedded SQLite in {}", c.storage.data_dir().display()),
        StorageBackend::Aws => {
            writeln!(s, "storage: DynamoDB table {} and SQS queues", c.storage.table.as_deref().unwrap_or("(unset)"))
        }
    };
    let _ = match &c.mattermost {
        None => writeln!(s, "mattermost: not configured (nothing will be posted)"),
        Some(m) => writeln!(
            s,
            "mattermost: {} ({}, {} incoming webhook(s))",
            m.url,
            if m.bot_token.is_some() { "bot account" } else { "no bot" },
            m.webhooks.len()
        ),
    };
    let sources: Vec<String> = c.sources.iter().map(|src| format!("{} ({})", src.id, src.kind)).collect();
    let _ = writeln!(
        s,
        "sources: {}{}",
        c.sources.len(),
        if sources.is_empty() { String::new() } else { format!(": {}", sources.join(", ")) }
    );
    let _ = writeln!(
        s,
        "routing: {} channel(s), {} route(s), default {}",
        c.channels.len(),
        c.routing.routes.len(),
        c.routing.default.as_deref().unwrap_or("none")
    );
    let inc = &c.incidents;
    let _ = if inc.enabled {
        writeln!(
            s,
            "incidents: on ({}-N, {} channels, severities {})",
            inc.id_prefix,
            if inc.private_channels { "private" } else { "public" },
            inc.severities.join("/")
        )
    } else {
        writeln!(s, "incidents: off")
    };
    let _ = writeln!(s, "escalation policies: {}", c.escalation_policies.len());
    s
}
