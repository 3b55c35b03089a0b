//! Sequential numbers (ALR-12, INC-42) from a versioned counter item.

use super::RepoError;
use crate::store::{Condition, Item, Store};

const ATTEMPTS: u32 = 20;

/// Hands out the next number of `name`, starting at 1. Concurrent callers each get a different
/// number: the write is conditioned on the version read, and a loser reads again.
pub async fn next(store: &dyn Store, name: &str) -> Result<u64, RepoError> {
    let pk = format!("counter#{name}");
    for _ in 0..ATTEMPTS {
        let current = store.get(&pk, "counter").await?;
        let (n, condition, version) = match &current {
            None => (1, Condition::Absent, 1),
            Some(item) => {
                let last: u64 = item.data.parse().map_err(|_| RepoError::Decode {
                    what: format!("counter {name}"),
                    reason: format!("{:?} is not a number", item.data),
                })?;
                (last + 1, Condition::Version(item.version), item.version + 1)
            }
        };
        match store.put(Item::new(&pk, "counter", n.to_string()).with_version(version), condition).await {
            Ok(()) => return Ok(n),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RepoError::Contention { name: name.to_string(), attempts: ATTEMPTS })
}
