//! The configuration a Lambda function runs on: loaded at cold start, re-read after a short
//! cache so that `klaxon config push` takes effect without a redeploy.

use super::{LoadError, resolve};
use crate::config::Config;
use crate::repo::config::ConfigRepo;
use crate::secrets::SsmSecrets;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a function trusts the configuration it has before looking for a newer version.
pub const CACHE_FOR: Duration = Duration::from_secs(60);

pub struct LiveConfig {
    repo: ConfigRepo,
    ssm: SsmSecrets,
    cache_for: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    version: u64,
    config: Arc<Config>,
    /// SSM values read so far, by parameter name: read once, not on every refresh.
    secrets: HashMap<String, String>,
    checked_at: Instant,
}

impl LiveConfig {
    /// Loads the deployed configuration (cold start). No configuration pushed yet is not an
    /// error: the functions run on an empty one (no sources, no channels) and say so.
    pub async fn load(repo: ConfigRepo, ssm: SsmSecrets, cache_for: Duration) -> Result<LiveConfig, LoadError> {
        let mut secrets = HashMap::new();
        let (version, config) = match repo.current().await? {
            Some(deployed) => (deployed.version, resolve(&deployed, &ssm, &mut secrets).await?),
            None => {
                tracing::warn!(
                    "no configuration has been pushed to the table: running on an empty one; run `klaxon config push klaxon.toml`"
                );
                (0, Config::empty())
            }
        };
        tracing::info!(config_version = version, "configuration loaded");
        let inner = Inner { version, config: Arc::new(config), secrets, checked_at: Instant::now() };
        Ok(LiveConfig { repo, ssm, cache_for, inner: Mutex::new(inner) })
    }

    /// The configuration to use now: the cached one, or a newer deployed version once the cache
    /// has run out. A newer version that cannot be used (a secret deleted meanwhile) is logged
    /// and the running one kept, so a bad push never takes a working function down.
    pub async fn current(&self) -> Arc<Config> {
        let mut inner = self.inner.lock().await;
        if inner.checked_at.elapsed() < self.cache_for {
            return inner.config.clone();
        }
        inner.checked_at = Instant::now();
        match self.repo.current().await {
            Ok(Some(deployed)) if deployed.version != inner.version => {
                match resolve(&deployed, &self.ssm, &mut inner.secrets).await {
                    Ok(config) => {
                        tracing::info!(from = inner.version, to = deployed.version, "configuration updated");
                        inner.version = deployed.version;
                        inner.config = Arc::new(config);
                    }
                    Err(e) => {
                        tracing::error!(version = deployed.version, error = %e, running = inner.version, "cannot use the newly pushed configuration; keeping the running one");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check for a newer configuration; keeping the running one"),
        }
        inner.config.clone()
    }

    /// The version in use (0: none pushed yet).
    pub async fn version(&self) -> u64 {
        self.inner.lock().await.version
    }
}
