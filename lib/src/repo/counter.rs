//! Sequential numbers (ALR-12, INC-42) from the store's atomic counter.

use super::RepoError;
use crate::store::Store;

/// Hands out the next number of `name`, starting at 1. Concurrent callers each get a different
/// number in one round trip (DynamoDB `UpdateItem ... ADD`, SQLite `UPDATE ... RETURNING`): no
/// read-then-write, so no retries under load. A number taken by a request that then fails is
/// skipped, never reused; ids stay unique, not gapless.
pub async fn next(store: &dyn Store, name: &str) -> Result<u64, RepoError> {
    Ok(store.increment(&format!("counter#{name}"), "counter").await?)
}
