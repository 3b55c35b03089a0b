//! `klaxon config push`: refuse anything the functions could not use, then store the file.

use super::{DEFAULT_SECRETS_PREFIX, LoadError, resolve};
use crate::config::{Config, ConfigError, ConfigIssue};
use crate::repo::RepoError;
use crate::repo::config::{ConfigRepo, DeployedConfig};
use crate::secrets::{SecretsError, SsmSecrets};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Store secrets given as `${VAR}` (from this shell's environment) in SSM, and push the file
    /// with `${ssm:...}` references to them instead.
    pub put_secrets: bool,
    /// SSM parameters must live under this prefix, which the stack lets the functions read.
    pub prefix: String,
    /// Recorded with the version.
    pub pushed_by: String,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { put_secrets: false, prefix: DEFAULT_SECRETS_PREFIX.into(), pushed_by: "unknown".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin} cannot be pushed; nothing was changed:\n{}", issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    NotDeployable { origin: String, issues: Vec<ConfigIssue> },
    #[error("{0}; nothing was changed")]
    Secrets(#[from] SecretsError),
    #[error("cannot store the configuration: {0}")]
    Store(#[from] RepoError),
}

/// The SSM parameter a `${VAR}` secret goes to with `--put-secrets`: `/klaxon/mm-bot-token` for
/// `MM_BOT_TOKEN`.
pub fn parameter_for(prefix: &str, var: &str) -> String {
    format!("{prefix}{}", var.to_ascii_lowercase().replace('_', "-"))
}

/// Checks `text` for AWS, stores its `${VAR}` secrets in SSM when asked, and pushes it as the
/// next version. Nothing is written (no parameter, no version) unless every check passes.
pub async fn push(
    text: &str,
    origin: &str,
    repo: &ConfigRepo,
    ssm: &SsmSecrets,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    options: &PushOptions,
) -> Result<DeployedConfig, PushError> {
    let parsed = Config::parse_unresolved(text, origin)?;
    let mut issues = Vec::new();
    let mut to_put: BTreeMap<String, (String, String)> = BTreeMap::new(); // var -> (parameter, value)
    for (field, secret) in parsed.secrets() {
        let refs = secret.references();
        if refs.is_empty() {
            issues.push(ConfigIssue {
                field: field.clone(),
                problem: "holds its value in the file, which would sit in the table in clear text".into(),
                fix: format!(
                    "write ${{ssm:{prefix}name}}, or ${{VAR}} and push with --put-secrets",
                    prefix = options.prefix
                ),
            });
        }
        for r in refs {
            match r.strip_prefix("ssm:") {
                Some(param) if !param.starts_with(&options.prefix) => issues.push(ConfigIssue {
                    field: field.clone(),
                    problem: format!(
                        "names SSM parameter {param}, outside {}, which the functions may not read",
                        options.prefix
                    ),
                    fix: format!("move the parameter under {}", options.prefix),
                }),
                Some(_) => {}
                None if !options.put_secrets => issues.push(ConfigIssue {
                    field: field.clone(),
                    problem: format!("reads environment variable {r}, which the Lambda functions do not have"),
                    fix: "push with --put-secrets to store it in SSM, or write ${ssm:...}".into(),
                }),
                None => match env(&r) {
                    Some(value) => {
                        to_put.insert(r.clone(), (parameter_for(&options.prefix, &r), value));
                    }
                    None => issues.push(ConfigIssue {
                        field: field.clone(),
                        problem: format!("environment variable {r} is not set, so --put-secrets has nothing to store"),
                        fix: format!("export {r} and push again"),
                    }),
                },
            }
        }
    }
    if !issues.is_empty() {
        return Err(PushError::NotDeployable { origin: origin.into(), issues });
    }
    let mut deployed_text = text.to_string();
    for (var, (param, _)) in &to_put {
        deployed_text = deployed_text.replace(&format!("${{{var}}}"), &format!("${{ssm:{param}}}"));
    }

    // Validate exactly what the functions will load, with the values about to be stored.
    let mut known: HashMap<String, String> = to_put.values().map(|(p, v)| (p.clone(), v.clone())).collect();
    let preview = DeployedConfig {
        version: 0,
        text: deployed_text.clone(),
        pushed_at: jiff::Timestamp::now(),
        pushed_by: String::new(),
    };
    resolve(&preview, ssm, &mut known).await.map_err(|e| match e {
        LoadError::Config { source, .. } => PushError::Config(source),
        LoadError::Secrets { source, .. } => PushError::Secrets(source),
        LoadError::Store(e) => PushError::Store(e),
    })?;

    for (param, value) in to_put.values() {
        ssm.put(param, value).await?;
    }
    Ok(repo.push(&deployed_text, &options.pushed_by).await?)
}
