//! The Lambda functions' composition root: resources from the environment the SAM template
//! sets, the configuration from the table (or `KLAXON_CONFIG` under `cargo lambda watch`), and
//! the loop that hands each invocation the current state.

use crate::app::{AppError, AppState};
use crate::config::Config;
use crate::deployed::live::CACHE_FOR;
use crate::deployed::{LiveConfig, LoadError};
use crate::embedded::Db;
use crate::repo::config::ConfigRepo;
use crate::secrets::SsmSecrets;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}; fix it and run `klaxon config push` again")]
    Config(#[from] LoadError),
    #[error("KLAXON_CONFIG is not a valid configuration: {0}")]
    EnvConfig(#[from] crate::config::ConfigError),
    #[error("environment variable {name} is not set; {hint}")]
    MissingEnv { name: &'static str, hint: &'static str },
}

enum Source {
    /// `KLAXON_CONFIG` (the TOML text), for `cargo lambda watch`.
    Fixed(Arc<Config>),
    /// The table's deployed configuration, refreshed after [`CACHE_FOR`].
    Deployed(LiveConfig),
}

/// What a function keeps between invocations.
pub struct LambdaApp {
    base: AppState,
    source: Source,
}

const HINT: &str = "the SAM template sets it; deploy with `sam deploy` (locally, set KLAXON_STORAGE=embedded instead)";

fn env(name: &'static str) -> Result<String, InitError> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or(InitError::MissingEnv { name, hint: HINT })
}

impl LambdaApp {
    /// Cold start. On AWS: the table (`TABLE_NAME`) and queues (`NOTIFY_QUEUE_URL`,
    /// `TIMER_QUEUE_URL`), the configuration last pushed with `klaxon config push`, and its SSM
    /// secrets. `KLAXON_CONFIG` (the TOML text) replaces the table's configuration, and
    /// `KLAXON_STORAGE=embedded` the AWS resources, for local runs under `cargo lambda watch`
    /// only: an explicit opt-in, so that a deployed function without its table fails instead of
    /// writing to Lambda's ephemeral disk.
    pub async fn init() -> Result<LambdaApp, InitError> {
        let fixed = match std::env::var("KLAXON_CONFIG") {
            Ok(text) if !text.trim().is_empty() => {
                Some(Config::from_toml(&text, "KLAXON_CONFIG", &|name| std::env::var(name).ok())?)
            }
            _ => None,
        };
        if std::env::var("KLAXON_STORAGE").is_ok_and(|v| v == "embedded") {
            let config = fixed.unwrap_or_else(Config::empty);
            let dir = std::env::var_os("KLAXON_DATA_DIR").map_or_else(|| config.storage.data_dir(), PathBuf::from);
            tracing::info!(data_dir = %dir.display(), "KLAXON_STORAGE=embedded: using the local SQLite store");
            let db = Db::open_in(&dir).map_err(AppError::from)?;
            let base = AppState::embedded(config, db)?;
            return Ok(LambdaApp { source: Source::Fixed(base.config.clone()), base });
        }
        let (table, notify, timer) = (env("TABLE_NAME")?, env("NOTIFY_QUEUE_URL")?, env("TIMER_QUEUE_URL")?);
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let base = AppState::aws_with(&sdk, Config::empty(), table, notify, timer);
        // The first SDK call pays the TLS handshake (most of a second at 128 MB); loading the
        // configuration pays it here, during init, which runs on a boosted CPU.
        let source = match fixed {
            Some(config) => Source::Fixed(Arc::new(config)),
            None => {
                let repo = ConfigRepo::new(base.store.clone());
                let ssm = SsmSecrets::new(aws_sdk_ssm::Client::new(&sdk));
                Source::Deployed(LiveConfig::load(repo, ssm, CACHE_FOR).await?)
            }
        };
        Ok(LambdaApp { base, source })
    }

    /// The state for one invocation, with the current configuration.
    pub async fn state(&self) -> AppState {
        let config = match &self.source {
            Source::Fixed(c) => c.clone(),
            Source::Deployed(live) => live.current().await,
        };
        let state = AppState { config, ..self.base.clone() };
        state.load_app_token().await;
        state
    }
}

/// Runs an HTTP function: each request goes to `router` built on the current state.
pub async fn run_http(router: fn(AppState) -> axum::Router) -> Result<(), lambda_http::Error> {
    let app = Arc::new(LambdaApp::init().await?);
    lambda_http::run(tower::service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            router(app.state().await).oneshot(req).await
        }
    }))
    .await
}
