//! The embedded database both SQLite adapters share: one file, one connection, every call run
//! on tokio's blocking pool inside an immediate transaction.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        let conn = self.conn.lock().map_err(|e| DbError::Worker(e.to_string()))?;
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
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|e| DbError::Worker(e.to_string()))?;
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
