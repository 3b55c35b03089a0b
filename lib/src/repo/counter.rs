//! Sequential numbers (ALR-12, INC-42) from the store's atomic counter.

use super::RepoError;
use crate::store::{Store, StoreError};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Mutex;

/// Hands out the next number of `name`, starting at 1. Concurrent callers each get a different
/// number in one round trip (DynamoDB `UpdateItem ... ADD`, SQLite `UPDATE ... RETURNING`): no
/// read-then-write, so no retries under load. A number taken by a request that then fails is
/// skipped, never reused; ids stay unique, not gapless.
pub async fn next(store: &dyn Store, name: &str) -> Result<u64, RepoError> {
    Ok(store.increment(&counter_pk(name), "counter").await?)
}

fn counter_pk(name: &str) -> String {
    format!("counter#{name}")
}

/// The most numbers one round trip takes.
const MAX_BLOCK: u64 = 256;

/// Numbers taken from the counter in blocks and handed out in this process, so that a storm
/// of new alerts does not make one counter write each.
///
/// A block is as large as the demand at the moment it is taken (the callers waiting for a
/// number), and at least `min_block`. With `min_block = 1` (the embedded store: one process)
/// a quiet system takes one number at a time and leaves no gaps; under load one write serves
/// every waiting caller. With a larger `min_block` (Lambda, where each instance serves one
/// request at a time) the block can be taken beside the request's reads, off its critical path
/// ([`NumberBlocks::refill_if_empty`]); numbers then stay unique but are only increasing per
/// instance, and an instance that ends leaves the rest of its block unused.
pub struct NumberBlocks {
    name: &'static str,
    min_block: u64,
    spare: Mutex<Range<u64>>,
    waiting: AtomicUsize,
}

impl NumberBlocks {
    pub fn new(name: &'static str, min_block: u64) -> Self {
        NumberBlocks {
            name,
            min_block: min_block.clamp(1, MAX_BLOCK),
            spare: Mutex::new(0..0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Whether taking a block ahead of need is worth it (blocks of more than one number).
    pub fn prefetches(&self) -> bool {
        self.min_block > 1
    }

    /// The next number, from this process's block, or from a new block.
    pub async fn next(&self, store: &dyn Store) -> Result<u64, RepoError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut spare = self.spare.lock().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if let Some(n) = spare.next() {
            return Ok(n);
        }
        *spare = self.take(store).await?;
        spare.next().ok_or_else(|| self.corrupt())
    }

    /// Takes a new block now if this process has no number left, so that the next
    /// [`NumberBlocks::next`] needs no round trip.
    pub async fn refill_if_empty(&self, store: &dyn Store) -> Result<(), RepoError> {
        let mut spare = self.spare.lock().await;
        if spare.is_empty() {
            *spare = self.take(store).await?;
        }
        Ok(())
    }

    async fn take(&self, store: &dyn Store) -> Result<Range<u64>, RepoError> {
        let demand = 1 + self.waiting.load(Ordering::SeqCst) as u64;
        let size = demand.clamp(self.min_block, MAX_BLOCK);
        let end = store.increment_by(&counter_pk(self.name), "counter", size).await?;
        if end < size {
            return Err(self.corrupt());
        }
        Ok(end - size + 1..end + 1)
    }

    fn corrupt(&self) -> RepoError {
        RepoError::Store(StoreError::Corrupt {
            pk: counter_pk(self.name),
            sk: "counter".into(),
            reason: "the counter went backwards; it was changed by another program".into(),
        })
    }
}
