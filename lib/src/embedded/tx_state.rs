//! State kept in memory beside the database that the writer's jobs change together with their
//! SQL writes, and that must follow the transaction: a change made by a job that is rolled back
//! is undone, and changes are kept only when the group holding them commits.
//!
//! An adapter asks its [`Db`](super::Db) for its state with [`Db::tx_state`](super::Db::tx_state)
//! (one per type and database, however many adapters ask) and changes it only inside writer
//! jobs; the writer calls the hooks below around every group and every job it runs in a
//! savepoint ([`super::writer::write_loop`]).

use rusqlite::Connection;
use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex, MutexGuard};

/// The writer's hooks on a state that follows its transactions.
pub(crate) trait TxState: Send {
    /// The writer began a group's transaction and holds the write lock: the moment to learn
    /// what other connections (another process) committed since the last group. An error fails
    /// the group's jobs, which are told to retry.
    fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// A point to come back to: taken before a job that runs in a savepoint.
    fn mark(&self) -> usize;
    /// Undoes every change made since `mark` (the job's savepoint was rolled back).
    fn undo_to(&mut self, mark: usize);
    /// The group's transaction ended: its changes are kept if it `committed`, undone if not.
    fn end(&mut self, committed: bool);
}

/// Locks a state, whatever a panicking job left it in (its changes are undone when its group
/// ends, as any other rolled-back change).
pub(crate) fn lock<T: ?Sized>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every state of one database: handed out by type, walked by the writer.
#[derive(Default)]
pub(super) struct States {
    typed: Vec<(TypeId, Arc<dyn Any + Send + Sync>)>,
    hooks: Vec<Arc<Mutex<dyn TxState>>>,
}

impl States {
    /// The state of type `T`, made by `make` the first time it is asked for.
    pub(super) fn get_or_make<T: TxState + 'static>(&mut self, make: impl FnOnce() -> T) -> Arc<Mutex<T>> {
        if let Some((_, any)) = self.typed.iter().find(|(t, _)| *t == TypeId::of::<T>())
            && let Ok(state) = any.clone().downcast::<Mutex<T>>()
        {
            return state;
        }
        let state = Arc::new(Mutex::new(make()));
        self.typed.push((TypeId::of::<T>(), state.clone()));
        self.hooks.push(state.clone());
        state
    }

    /// The states the writer calls, as they are now.
    pub(super) fn hooks(&self) -> Vec<Arc<Mutex<dyn TxState>>> {
        self.hooks.clone()
    }
}

/// The writer's side: the hooks of every state, called for a group.
pub(super) struct Group(Vec<Arc<Mutex<dyn TxState>>>);

impl Group {
    pub(super) fn new(states: &Mutex<States>) -> Group {
        Group(lock(states).hooks())
    }

    pub(super) fn begin(&self, conn: &Connection) -> rusqlite::Result<()> {
        self.0.iter().try_for_each(|s| lock(s).begin(conn))
    }

    pub(super) fn marks(&self) -> Vec<usize> {
        self.0.iter().map(|s| lock(s).mark()).collect()
    }

    pub(super) fn undo_to(&self, marks: &[usize]) {
        for (s, mark) in self.0.iter().zip(marks) {
            lock(s).undo_to(*mark);
        }
    }

    pub(super) fn end(&self, committed: bool) {
        for s in &self.0 {
            lock(s).end(committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of numbers, undone as the hooks say.
    #[derive(Default)]
    struct Log {
        kept: Vec<u32>,
        pending: Vec<u32>,
        begun: usize,
    }

    impl TxState for Log {
        fn begin(&mut self, _: &Connection) -> rusqlite::Result<()> {
            self.begun += 1;
            Ok(())
        }
        fn mark(&self) -> usize {
            self.pending.len()
        }
        fn undo_to(&mut self, mark: usize) {
            self.pending.truncate(mark);
        }
        fn end(&mut self, committed: bool) {
            let pending = std::mem::take(&mut self.pending);
            if committed {
                self.kept.extend(pending);
            }
        }
    }

    #[test]
    fn one_state_per_type_and_the_writer_reaches_it() {
        let states = Mutex::new(States::default());
        let a = lock(&states).get_or_make(Log::default);
        let b = lock(&states).get_or_make(|| Log { kept: vec![99], ..Log::default() });
        assert!(Arc::ptr_eq(&a, &b), "the second ask gets the first state, not a new one");
        let group = Group::new(&states);
        let conn = Connection::open_in_memory().unwrap();
        group.begin(&conn).unwrap();
        lock(&a).pending.push(1);
        let marks = group.marks();
        lock(&a).pending.push(2);
        group.undo_to(&marks);
        group.end(true);
        group.begin(&conn).unwrap();
        lock(&a).pending.push(3);
        group.end(false);
        let log = lock(&a);
        assert_eq!(log.kept, [1], "the job rolled back and the group rolled back left nothing");
        assert_eq!(log.begun, 2);
    }
}
