//! Logging: structured tracing events, JSON under Lambda (or with `KLAXON_LOG_FORMAT=json`),
//! compact and readable locally. Level from `RUST_LOG` (default `info`).
//!
//! Nothing logs a token, a secret or a request body: configuration secrets print as `***`, and
//! the HTTP trace layer records only the method and the route template, never the query string
//! (Particle may carry its key there).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    pub fn from_env() -> LogFormat {
        let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let asked_json = std::env::var("KLAXON_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
            || std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        if in_lambda || asked_json { LogFormat::Json } else { LogFormat::Text }
    }
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match LogFormat::from_env() {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.compact().with_target(false).try_init(),
    };
}
