//! The configuration deployed on AWS: `klaxon config push` stores the file's text here,
//! versioned, and the functions read it at cold start and again after a short cache.
//!
//! Items: pk `config`, sk `current` (the deployed version; the item's version is the
//! configuration's version number), and sk `v#0000000007` (every version ever pushed).

use super::{RepoError, decode, encode};
use crate::store::{Condition, Item, Store, Write};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PK: &str = "config";
const CURRENT: &str = "current";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedConfig {
    pub version: u64,
    /// The TOML text as pushed: secrets are `${ssm:...}` references, never values.
    pub text: String,
    pub pushed_at: Timestamp,
    /// Who pushed it (the operator's user name, as the CLI saw it).
    pub pushed_by: String,
}

#[derive(Clone)]
pub struct ConfigRepo {
    store: Arc<dyn Store>,
}

impl ConfigRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ConfigRepo { store }
    }

    pub async fn current(&self) -> Result<Option<DeployedConfig>, RepoError> {
        match self.store.get(PK, CURRENT).await? {
            None => Ok(None),
            Some(item) => decode(&item, "the deployed configuration").map(|v| Some(v.value)),
        }
    }

    /// Makes `text` the deployed configuration, as the next version; keeps every version.
    /// Two simultaneous pushes: one wins, the other is told to run again.
    pub async fn push(&self, text: &str, pushed_by: &str) -> Result<DeployedConfig, RepoError> {
        let current = self.store.get(PK, CURRENT).await?;
        let (version, condition) = match &current {
            None => (1, Condition::Absent),
            Some(item) => (item.version + 1, Condition::Version(item.version)),
        };
        let deployed = DeployedConfig {
            version,
            text: text.to_string(),
            pushed_at: Timestamp::now(),
            pushed_by: pushed_by.into(),
        };
        let data = encode(&deployed);
        let writes = vec![
            Write::Put { item: Item::new(PK, CURRENT, data.clone()).with_version(version), condition },
            Write::Put { item: Item::new(PK, format!("v#{version:010}"), data), condition: Condition::Absent },
        ];
        self.store.transact(writes).await.map_err(|e| match e {
            e if e.is_conflict() => RepoError::Conflict { what: "the deployed configuration".into() },
            e => e.into(),
        })?;
        Ok(deployed)
    }
}
