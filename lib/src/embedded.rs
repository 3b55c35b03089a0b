//! The embedded database both SQLite adapters share: one file, one connection, every call run
//! on tokio's blocking pool inside an immediate transaction.
//!
//! **Deadlines.** A request that must answer in time (an intake, `/healthz`) runs inside
//! [`with_deadline`]. Every database call made under it waits for the connection and for
//! SQLite's file lock only until the deadline, then fails with [`DbError::Deadline`] having
//! done nothing. So when another process holds `klaxon.db` locked, callers get a quick 503
//! instead of queueing behind each other for seconds, and a call that gave up can never
//! commit later behind the caller's back.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a call without a deadline (the notifier's workers, the sweep) waits for SQLite's
/// file lock when another process holds it.
const BACKGROUND_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `fut` with every database call in it bounded by `within` from now (or by an enclosing
/// deadline, if that is sooner).
pub async fn with_deadline<F: Future>(within: Duration, fut: F) -> F::Output {
    let mut deadline = Instant::now() + within;
    if let Ok(outer) = DEADLINE.try_with(|d| *d) {
        deadline = deadline.min(outer);
    }
    DEADLINE.scope(deadline, fut).await
}

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "klaxon.db";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the data directory {path}: {source}; check the path and its permissions")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the SQLite database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database worker stopped unexpectedly ({0}); restart Klaxon")]
    Worker(String),
    #[error("the database did not answer in time (another process may hold {path} locked); nothing was written, retry")]
    Deadline { path: PathBuf },
}

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) `DATA_DIR/klaxon.db`.
    pub fn open_in(data_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| DbError::CreateDir { path: data_dir.to_path_buf(), source })?;
        Db::open(&data_dir.join(DB_FILE))
    }

    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable
        // before we acknowledge it ("nothing accepted is ever lost").
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(open_err)?;
        conn.busy_timeout(BACKGROUND_BUSY_TIMEOUT).map_err(open_err)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs set-up SQL (schemas), before the database is shared with running tasks.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        let conn = self.conn.try_lock().map_err(|_| DbError::Worker("the database is in use during set-up".into()))?;
        conn.execute_batch(sql)?;
        Ok(())
    }

    /// Runs `f` in one transaction and commits whatever it did.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_or_rollback(move |tx| f(tx).map(Ok::<T, std::convert::Infallible>)).await.map(|r| match r {
            Ok(v) => v,
            Err(never) => match never {},
        })
    }

    /// Runs `f` in one transaction; commits only if it returns `Ok(Ok(_))`.
    pub async fn run_or_rollback<T, E, F>(&self, f: F) -> Result<Result<T, E>, DbError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<Result<T, E>> + Send + 'static,
    {
        let deadline = DEADLINE.try_with(|d| *d).ok();
        let late = || DbError::Deadline { path: self.path.clone() };
        let mut conn = match deadline {
            Some(at) => tokio::time::timeout_at(at, Arc::clone(&self.conn).lock_owned()).await.map_err(|_| late())?,
            None => Arc::clone(&self.conn).lock_owned().await,
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let busy = match deadline {
                None => BACKGROUND_BUSY_TIMEOUT,
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(DbError::Deadline { path }),
                },
            };
            conn.busy_timeout(busy)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            if out.is_ok() {
                tx.commit()?;
            } else {
                tx.rollback()?;
            }
            Ok(out)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}
