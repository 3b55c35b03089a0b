//! `klaxon serve`: every route of every function in one process, the notifier's worker loops
//! in-process, on the embedded store unless the configuration says AWS.

use crate::app::{AppError, AppState, StorageDescription};
use crate::config::{Config, SourceKind};
use crate::notify::worker::Worker;
use crate::store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_CONFIG: &str = "klaxon.toml";
/// How long a job stays hidden after the local worker takes it; a failed job comes back after it.
const VISIBILITY: Duration = Duration::from_secs(30);
/// Worker loops on the notify queue (each handles up to 10 alerts' jobs at once). Each card
/// waits for a few commits of the shared database; with 4 loops a 30 s storm of new alerts
/// (6,600/s) left its last card 40 s behind. With 16 the cards kept up until intake got faster
/// (WAL writes gathered, the restart's sync beside the writer): then a 60 s storm's last card
/// came 8.5-10 s after its end. With 32 it came within a second on a slow hour, and 9-23 s after
/// on a fast one, where intake took the CPU the loops needed; more loops did not help (96: no
/// more cards a second). What keeps the cards in pace now is intake yielding to a notifier that
/// falls behind (`ingest::pace`): 0.9-1.4 s after a 60 s storm's end on a fast hour. Without
/// Mattermost 32 loops cost about 2 % of intake.
const NOTIFY_LOOPS: usize = 32;
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Jobs younger than this are left to the request that wrote them.
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// `None`: `./klaxon.toml` if it exists, else an empty configuration.
    pub config: Option<PathBuf>,
    /// Overrides `storage.data_dir`.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}; choose another address with --addr or KLAXON_ADDR")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
}

/// Loads the configuration the way `serve` does, and says which file it used.
pub fn load_config(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), AppError> {
    if let Some(path) = explicit {
        return Ok((Config::load(path)?, Some(path.to_path_buf())));
    }
    let default = PathBuf::from(DEFAULT_CONFIG);
    if default.exists() { Ok((Config::load(&default)?, Some(default))) } else { Ok((Config::empty(), None)) }
}

pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let (mut config, config_path) = load_config(options.config.as_deref())?;
    if let Some(dir) = &options.data_dir {
        config.storage.data_dir = Some(dir.clone());
    }
    let state = AppState::from_config(config).await?;
    state.load_app_token().await;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: options.addr, source })?;
    let local = listener.local_addr().map_err(ServeError::Server)?;
    println!("{}", banner(&state, config_path.as_deref(), local));

    // This process is the embedded queues' only consumer: what a killed predecessor had in
    // hand resumes now, not after its visibility timeout (then a card it was creating is still
    // within Mattermost's 30 s memory of its pending_post_id, so it is never made twice).
    for queue in [&state.notify_queue, &state.timer_queue] {
        match queue.release_in_flight().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(queue = queue.name(), jobs = n, "resuming jobs a previous run had in hand"),
            Err(e) => {
                tracing::warn!(queue = queue.name(), error = %e, "could not resume the previous run's jobs now; they come back after their visibility timeout")
            }
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let handler = Arc::new(state.notifier());
    // Several loops on the notify queue: each takes a batch of up to 10 jobs, and the FIFO
    // queue never hands one alert's jobs to two loops at once, so order holds per alert.
    let loops = std::iter::repeat_n(("notify", state.notify_queue.clone()), NOTIFY_LOOPS)
        .chain([("timers", state.timer_queue.clone())]);
    let workers: Vec<_> = loops
        .map(|(name, queue)| {
            let worker = Worker { name, queue, handler: handler.clone(), visibility: VISIBILITY };
            tokio::spawn(worker.run(stop_rx.clone()))
        })
        .collect();

    let sweeper = tokio::spawn(sweep_loop(state.outbox(), state.store.clone(), stop_rx.clone()));
    let reader = state.channel_reader().map(|r| tokio::spawn(mirror_loop(r, stop_rx.clone())));
    let timers = Some(tokio::spawn(timer_loop(state.clone(), stop_rx.clone())));

    let app = crate::http::all(state);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    tracing::info!("shutting down: finishing the current batch; queued work stays in the queue for the next start");
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = sweeper.await;
    for task in [reader, timers].into_iter().flatten() {
        let _ = task.await;
    }
    served.map_err(ServeError::Server)?;
    println!("Klaxon stopped.");
    Ok(())
}

/// Queues jobs left in the outbox by a relay that failed (e.g. the queue was briefly
/// unavailable), and deletes expired records from the embedded store.
async fn sweep_loop(outbox: crate::notify::outbox::Outbox, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.changed() => return,
        }
        match outbox.sweep(SWEEP_MIN_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "outbox sweep queued pending notifications"),
            Err(e) => tracing::warn!(error = %e, "outbox sweep failed; trying again later"),
        }
        purge_expired(store.as_ref()).await;
    }
}

/// How often `klaxon serve` reads the open incidents' channels.
const MIRROR_EVERY: Duration = Duration::from_secs(5);

/// Mirrors what people write in incident channels into the incidents' timelines.
async fn mirror_loop(reader: crate::incidents::mirror::ChannelReader, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MIRROR_EVERY) => {}
            _ = stop.changed() => return,
        }
        match reader.read_all().await {
            Ok(r) if r.added > 0 => {
                tracing::info!(messages = r.added, channels = r.channels, "mirrored incident channel messages")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading incident channels failed; trying again later"),
        }
    }
}

/// How often `klaxon serve` looks for due escalation timers and ended maintenance windows.
const TIMERS_EVERY: Duration = Duration::from_secs(5);

/// Fires escalation timers as they come due, and handles the ends of maintenance windows.
async fn timer_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let tick =
        crate::notify::lambda::Tick { reader: None, escalator: state.escalator(), windows: Some(state.windows()) };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TIMERS_EVERY) => {}
            _ = stop.changed() => return,
        }
        let r = tick.run(jiff::Timestamp::now()).await;
        if r.escalated > 0 || r.windows_closed > 0 {
            tracing::info!(escalated = r.escalated, windows_closed = r.windows_closed, "timers fired");
        }
    }
}

/// Rows deleted per purge transaction: small enough not to hold the writer for long.
const PURGE_BATCH: usize = 500;
/// Batches per sweep; a larger backlog (a first start after a long time) shrinks over a few sweeps.
const PURGE_BATCHES: usize = 20;

/// Deletes expired seen and delivery records in batches, so klaxon.db does not grow without
/// bound. On DynamoDB, TTL does it and this deletes nothing.
async fn purge_expired(store: &dyn Store) {
    let mut purged = 0;
    for _ in 0..PURGE_BATCHES {
        match store.purge_expired(PURGE_BATCH).await {
            Ok(n) => {
                purged += n;
                if n < PURGE_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete expired records; trying again later");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(records = purged, "deleted expired records");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// What `serve` prints at start-up: where it listens, what to paste into Mattermost and
/// Particle, and what is not configured.
pub fn banner(state: &AppState, config_path: Option<&Path>, local: SocketAddr) -> String {
    let c = &state.config;
    let base = c
        .server
        .public_url
        .as_ref()
        .map_or_else(|| format!("http://{local}"), |u| u.as_str().trim_end_matches('/').to_string());
    let mut out = vec![format!("Klaxon {} listening on http://{local}", env!("CARGO_PKG_VERSION"))];
    match config_path {
        Some(p) => out.push(format!("configuration: {}", p.display())),
        None => out.push(
            "configuration: none found (./klaxon.toml); running on an empty configuration.\n  \
             To add one: cp klaxon.example.toml klaxon.toml, edit it, then `klaxon config check klaxon.toml`."
                .into(),
        ),
    }
    out.push(match &state.storage {
        StorageDescription::Embedded { path } => format!("storage: embedded SQLite at {}", path.display()),
        StorageDescription::Aws { table } => format!("storage: DynamoDB table {table} and SQS queues"),
    });
    if c.mattermost.is_none() {
        out.push(
            "mattermost: NOT configured. Notifications are not posted anywhere: each is logged with the channel \
             it would have gone to and recorded as not delivered."
                .into(),
        );
    } else {
        out.push("mattermost: configured; alert cards go to bot channels (created once, updated in place, replies in their threads) and incoming webhooks.".into());
    }
    if c.incidents.enabled {
        out.push("incidents: on; /incident creates channels, announces lifecycle events and mirrors channel messages (read every 5 s).".into());
    }
    if c.server.public_url.is_none() {
        out.push("note: server.public_url is not set; the URLs below use the local address, which Mattermost and Particle must be able to reach.".into());
    }
    out.push(String::new());
    out.push("Paste into Mattermost and Particle:".into());
    if c.sources.is_empty() {
        out.push("  (no alert sources configured; add [[sources]] to klaxon.toml)".into());
    }
    for s in &c.sources {
        let (kind, hint) = match s.kind {
            SourceKind::Mattermost => ("mattermost", "outgoing webhook callback URL"),
            SourceKind::Particle => ("particle", "Particle webhook URL"),
        };
        out.push(format!("  {base}/hooks/{kind}/{}    <- {hint} for source {:?}", s.id, s.id));
    }
    if c.incidents.enabled {
        out.push(format!(
            "  {base}/chatops/command    <- request URL of the /incident slash command (Integrations > Slash Commands)"
        ));
        out.push(format!(
            "  {base}/chatops/oauth/callback    <- callback URL of the OAuth 2.0 application (incidents.oauth)"
        ));
        out.push(format!("  {base}/chatops/mirror    <- outgoing webhook callback URL for public incident or mirror channels (optional)"));
    }
    out.push(format!("  {base}/healthz    <- health check"));
    out.push(String::new());
    out.push("Stop with Ctrl-C; queued notifications survive a restart.".into());
    out.join("\n")
}
