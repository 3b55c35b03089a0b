//! Secrets on AWS: SSM Parameter Store `SecureString` parameters, named in `klaxon.toml` as
//! `${ssm:/klaxon/bot-token}`. The functions read them once at cold start (and again only when a
//! newly pushed configuration names one they have not read); the stack lets each function read
//! only the parameters under its prefix.

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use std::collections::HashMap;

/// `GetParameters` takes at most this many names per call.
const BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "SSM parameter {} does not exist; create it (aws ssm put-parameter --type SecureString, or klaxon config push --put-secrets)",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    #[error(
        "SSM Parameter Store failed: {0}; check that the parameters exist and that this role may read (or write) them"
    )]
    Backend(String),
}

fn backend(e: impl std::error::Error) -> SecretsError {
    SecretsError::Backend(DisplayErrorContext(e).to_string())
}

#[derive(Clone)]
pub struct SsmSecrets {
    client: Client,
}

impl SsmSecrets {
    pub fn new(client: Client) -> Self {
        SsmSecrets { client }
    }

    /// The decrypted values of the named parameters. Fails naming every one that is missing.
    pub async fn fetch(&self, names: &[String]) -> Result<HashMap<String, String>, SecretsError> {
        let mut values = HashMap::new();
        let mut missing = Vec::new();
        for chunk in names.chunks(BATCH) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(backend)?;
            missing.extend(out.invalid_parameters().iter().cloned());
            for p in out.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    values.insert(name.to_string(), value.to_string());
                }
            }
        }
        if missing.is_empty() { Ok(values) } else { Err(SecretsError::Missing(missing)) }
    }

    /// Stores `value` as an encrypted parameter, replacing an older value.
    pub async fn put(&self, name: &str, value: &str) -> Result<(), SecretsError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// The SSM parameter names a configuration refers to (`${ssm:NAME}`), each once.
pub fn ssm_references(config: &crate::config::Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .secrets()
        .iter()
        .flat_map(|(_, s)| s.references())
        .filter_map(|r| r.strip_prefix("ssm:").map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}
