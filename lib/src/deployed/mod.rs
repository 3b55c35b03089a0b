//! Configuration on AWS: `klaxon config push` validates `klaxon.toml` and stores it in the table
//! (versioned); secrets live in SSM Parameter Store; the functions load the deployed version at
//! cold start and look for a newer one after a short cache, so a change needs no redeploy.
//!
//! A CloudFormation parameter cannot carry the file (SAM CLI cuts an unquoted override at the
//! first space), Lambda's 4 KB environment cannot hold what chatops and escalation need, and
//! secrets in environment variables are readable by anyone with
//! `lambda:GetFunctionConfiguration`.

pub mod live;
pub mod push;

pub use live::LiveConfig;
pub use push::{PushError, PushOptions, push};

use crate::config::{Config, ConfigError};
use crate::repo::config::DeployedConfig;
use crate::secrets::{SecretsError, SsmSecrets, ssm_references};
use std::collections::HashMap;

/// Where the functions are allowed to read secrets (the stack's `SecretsPrefix`).
pub const DEFAULT_SECRETS_PREFIX: &str = "/klaxon/";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the deployed configuration (version {version}) cannot be used: {source}")]
    Config { version: u64, source: ConfigError },
    #[error("the deployed configuration (version {version}) names secrets that cannot be read: {source}")]
    Secrets { version: u64, source: SecretsError },
    #[error("cannot read the deployed configuration from the table: {0}")]
    Store(#[from] crate::repo::RepoError),
}

/// Builds the deployed configuration: reads the SSM parameters it names that `cache` does not
/// hold yet (adding them to it), resolves, validates.
pub async fn resolve(
    deployed: &DeployedConfig,
    ssm: &SsmSecrets,
    cache: &mut HashMap<String, String>,
) -> Result<Config, LoadError> {
    let version = deployed.version;
    let origin = format!("deployed configuration v{version}");
    let unresolved =
        Config::parse_unresolved(&deployed.text, &origin).map_err(|source| LoadError::Config { version, source })?;
    let wanted: Vec<String> = ssm_references(&unresolved).into_iter().filter(|n| !cache.contains_key(n)).collect();
    if !wanted.is_empty() {
        let fetched = ssm.fetch(&wanted).await.map_err(|source| LoadError::Secrets { version, source })?;
        cache.extend(fetched);
    }
    let lookup = |name: &str| match name.strip_prefix("ssm:") {
        Some(param) => cache.get(param).cloned(),
        None => std::env::var(name).ok(),
    };
    Config::from_toml(&deployed.text, &origin, &lookup).map_err(|source| LoadError::Config { version, source })
}

/// The deployed configuration's table and the SSM client, from the usual AWS environment
/// (profile or keys, `AWS_REGION`; `AWS_ENDPOINT_URL` for a local stand-in).
pub async fn connect(table: &str) -> (crate::repo::config::ConfigRepo, SsmSecrets) {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let store = std::sync::Arc::new(crate::store::dynamodb::DynamoStore::new(dynamo, table));
    (crate::repo::config::ConfigRepo::new(store), SsmSecrets::new(aws_sdk_ssm::Client::new(&sdk)))
}

/// What `klaxon config show` prints: the version, who pushed it and when, and the text (which
/// holds `${ssm:...}` references, never secret values: push refuses those).
pub fn describe(deployed: &DeployedConfig, table: &str) -> String {
    format!(
        "# klaxon.toml version {} in table {table}, pushed {} by {}\n{}",
        deployed.version,
        deployed.pushed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        deployed.pushed_by,
        deployed.text
    )
}
