//! Sequential numbers (ALR-12, INC-42) from the store's atomic counter.

use super::RepoError;
use crate::store::{Store, StoreError};
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
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
/// A block is at least `min_block` and at least the demand at the moment it is taken (the
/// callers waiting for a number); when a block lasts less than [`BUSY`], the next one is twice
/// as large (up to [`MAX_BLOCK`]), and when one lasts longer than [`QUIET`] the next is half.
/// So with `min_block = 1` (the embedded store: one process) a quiet system takes one number at
/// a time, and a storm takes one counter write per hundreds of alerts. Numbers left in a block
/// are used by later alerts, and so are numbers taken for an alert that then was not opened
/// ([`NumberBlocks::give_back`]); only a process that stops leaves its unused ones as a gap.
/// With a larger `min_block` (Lambda, where each instance serves one request at a time) the
/// block can be taken beside the request's reads, off its critical path
/// ([`NumberBlocks::refill_if_empty`]); numbers then stay unique but are only increasing per
/// instance, and an instance that ends leaves the rest of its block unused.
pub struct NumberBlocks {
    name: &'static str,
    min_block: u64,
    spare: Mutex<Spare>,
    waiting: AtomicUsize,
}

/// A block that lasted less than this was too small.
const BUSY: Duration = Duration::from_millis(200);
/// A block that lasted more than this was too large.
const QUIET: Duration = Duration::from_secs(2);

struct Spare {
    numbers: Range<u64>,
    /// Numbers taken and then not used ([`NumberBlocks::give_back`]): handed out first,
    /// smallest first, so that ids stay close to the order alerts were opened in.
    returned: BTreeSet<u64>,
    /// The size of the next block.
    next_size: u64,
    taken_at: Option<Instant>,
}

impl NumberBlocks {
    pub fn new(name: &'static str, min_block: u64) -> Self {
        let min_block = min_block.clamp(1, MAX_BLOCK);
        let spare = Spare { numbers: 0..0, returned: BTreeSet::new(), next_size: min_block, taken_at: None };
        NumberBlocks { name, min_block, spare: Mutex::new(spare), waiting: AtomicUsize::new(0) }
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
        if let Some(n) = spare.returned.pop_first().or_else(|| spare.numbers.next()) {
            return Ok(n);
        }
        self.take(store, &mut spare).await?;
        spare.numbers.next().ok_or_else(|| self.corrupt())
    }

    /// Takes back a number handed out and certainly not used (a new alert was expected and the
    /// request turned out to be a repeat or a redelivery), so that it goes to the next alert
    /// instead of leaving a gap.
    pub async fn give_back(&self, n: u64) {
        self.spare.lock().await.returned.insert(n);
    }

    /// Takes a new block now if this process has no number left, so that the next
    /// [`NumberBlocks::next`] needs no round trip.
    pub async fn refill_if_empty(&self, store: &dyn Store) -> Result<(), RepoError> {
        let mut spare = self.spare.lock().await;
        if spare.numbers.is_empty() && spare.returned.is_empty() {
            self.take(store, &mut spare).await?;
        }
        Ok(())
    }

    async fn take(&self, store: &dyn Store, spare: &mut Spare) -> Result<(), RepoError> {
        let now = Instant::now();
        if let Some(lasted) = spare.taken_at.map(|at| now.duration_since(at)) {
            if lasted < BUSY {
                spare.next_size = (spare.next_size * 2).min(MAX_BLOCK);
            } else if lasted > QUIET {
                spare.next_size = (spare.next_size / 2).max(self.min_block);
            }
        }
        let demand = 1 + self.waiting.load(Ordering::SeqCst) as u64;
        let size = demand.max(spare.next_size).min(MAX_BLOCK);
        let end = store.increment_by(&counter_pk(self.name), "counter", size).await?;
        if end < size {
            return Err(self.corrupt());
        }
        spare.numbers = end - size + 1..end + 1;
        spare.taken_at = Some(now);
        Ok(())
    }

    fn corrupt(&self) -> RepoError {
        RepoError::Store(StoreError::Corrupt {
            pk: counter_pk(self.name),
            sk: "counter".into(),
            reason: "the counter went backwards; it was changed by another program".into(),
        })
    }
}
