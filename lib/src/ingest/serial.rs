//! Serialises changes people make to one alert (assigning, snoozing: [`super::apply::Intake::change`])
//! inside this process, so that concurrent ones queue instead of colliding and retrying. Events
//! from sources are serialised, and repeats applied together, by [`super::coalesce`]. Other
//! processes (more Lambda instances) still collide now and then; the optimistic retry with
//! backoff handles those.

use std::hash::{BuildHasher, Hash};
use tokio::sync::{Mutex, MutexGuard};

/// Enough stripes that unrelated alerts seldom share one.
const STRIPES: usize = 256;

pub struct KeyLocks {
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(), hasher: Default::default() }
    }
}

impl KeyLocks {
    /// Waits until no other task of this process holds `key` (or a key sharing its stripe).
    /// Fair: waiters get the lock in the order they asked.
    pub async fn lock(&self, key: &(impl Hash + ?Sized)) -> MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one(key) as usize) % STRIPES;
        self.stripes[stripe].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn holders_of_one_key_never_overlap() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                tokio::spawn(async move {
                    let _g = locks.lock("freezer/dev7").await;
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "someone else held the key");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}
