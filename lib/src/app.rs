//! The composition root: builds the store, queues and repositories a process needs, from
//! `klaxon.toml` (for `klaxon serve`) or from the Lambda environment.

use crate::config::{Config, ConfigError, StorageBackend};
use crate::embedded::{Db, DbError};
use crate::ingest::apply::Intake;
use crate::ingest::pace::Pace;
use crate::mattermost::Mattermost;
use crate::notify::Notifier;
use crate::notify::outbox::Outbox;
use crate::queue::sqlite::{Redrive, SqliteQueue};
use crate::queue::sqs::SqsQueue;
use crate::queue::{Queue, QueueError, QueueKind};
use crate::repo::alerts::AlertRepo;
use crate::repo::cards::CardRepo;
use crate::repo::deliveries::DeliveryRepo;
use crate::repo::incidents::IncidentRepo;
use crate::store::dynamodb::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// Names of the embedded queues inside `klaxon.db`, and when they dead-letter.
pub const NOTIFY_QUEUE: &str = "notify";
pub const TIMER_QUEUE: &str = "timers";
/// Receives before a job goes to the dead-letter queue; with the backoff of
/// [`crate::notify::batch::retry_delay`] that is more than a day of retries.
pub const MAX_RECEIVES: u32 = 24;
/// Alert numbers a process takes at once on AWS, beside a request's reads (see
/// [`crate::repo::counter::NumberBlocks`]): a Lambda instance that ends leaves at most this
/// many unused.
pub const AWS_NUMBER_BLOCK: u64 = 10;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub notify_queue: Arc<dyn Queue>,
    pub timer_queue: Arc<dyn Queue>,
    /// Where the data lives, for start-up messages and `/healthz`.
    pub storage: StorageDescription,
    /// What intake requests of this process share: per-alert serialisation, requests waiting
    /// to be applied together, and alert numbers taken from the counter and not yet used.
    pub intake_shared: Arc<crate::ingest::apply::Shared>,
    /// The Mattermost client, kept between requests and invocations (its connections and its
    /// answer to "who is the bot" are reused), with the server URL and token fingerprint it was
    /// made for: a pushed configuration with another server or token gets a new one.
    pub mattermost_client: Arc<std::sync::Mutex<Option<(String, Mattermost)>>>,
    /// The token of the installed OAuth app (`klaxon oauth install-url`), used for API calls
    /// when no bot token is configured. Loaded by [`AppState::load_app_token`].
    pub app_token: Arc<std::sync::RwLock<Option<crate::config::Secret>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageDescription {
    Embedded { path: PathBuf },
    Aws { table: String },
}

impl StorageDescription {
    pub fn kind(&self) -> &'static str {
        match self {
            StorageDescription::Embedded { .. } => "embedded",
            StorageDescription::Aws { .. } => "aws",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("environment variable {name} is not set; {hint}")]
    MissingEnv { name: &'static str, hint: &'static str },
}

impl AppState {
    pub fn alerts(&self) -> AlertRepo {
        AlertRepo::new(self.store.clone())
    }

    pub fn incidents(&self) -> IncidentRepo {
        IncidentRepo::new(self.store.clone())
    }

    pub fn deliveries(&self) -> DeliveryRepo {
        DeliveryRepo::new(self.store.clone())
    }

    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.store.clone(), self.notify_queue.clone())
    }

    pub fn incident_service(&self) -> crate::incidents::service::Incidents {
        crate::incidents::service::Incidents::new(self.config.clone(), self.incidents(), self.outbox())
    }

    /// Fires escalation timers, when any escalation policy is configured.
    pub fn escalator(&self) -> Option<crate::escalation::timers::Escalator> {
        if self.config.escalation_policies.is_empty() {
            return None;
        }
        Some(crate::escalation::timers::Escalator::new(self.config.clone(), self.store.clone(), self.outbox()))
    }

    /// Maintenance windows: started from chat, and their ends handled.
    pub fn windows(&self) -> crate::escalation::windows::Windows {
        crate::escalation::windows::Windows::new(
            self.config.clone(),
            self.store.clone(),
            self.outbox(),
            self.mattermost(),
        )
    }

    /// What the scheduled tick (and `klaxon serve`'s timer loop) runs besides the outbox sweep.
    pub fn tick(&self) -> crate::notify::lambda::Tick {
        crate::notify::lambda::Tick {
            reader: self.channel_reader(),
            escalator: self.escalator(),
            windows: Some(self.windows()),
        }
    }

    /// Reads open incidents' channels into their timelines, when incidents are on and a bot
    /// is configured.
    pub fn channel_reader(&self) -> Option<crate::incidents::mirror::ChannelReader> {
        let bot = self.config.mattermost.as_ref()?.bot_token.is_some();
        let installed = self.app_token.read().unwrap_or_else(|p| p.into_inner()).is_some();
        if !self.config.incidents.enabled || !(bot || installed) {
            return None;
        }
        Some(crate::incidents::mirror::ChannelReader {
            incidents: self.incident_service(),
            mattermost: self.mattermost()?,
        })
    }

    pub fn intake(&self) -> Intake {
        Intake::new(self.store.clone(), self.outbox(), self.config.clone(), self.intake_shared.clone())
    }

    /// The client for the configured Mattermost (`None` without a `[mattermost]` section).
    pub fn mattermost(&self) -> Option<Mattermost> {
        use sha2::Digest;
        let mm = self.config.mattermost.as_ref()?;
        let installed = self.app_token.read().unwrap_or_else(|p| p.into_inner()).clone();
        let secret = mm.bot_token.clone().or(installed);
        let token = secret.as_ref().map(|t| t.expose()).unwrap_or_default();
        let digest = sha2::Sha256::digest(format!("{}\n{token}", mm.url).as_bytes());
        let key = hex::encode(digest);
        // A poisoned lock only means another thread panicked mid-swap; the value is still usable.
        let mut cached = self.mattermost_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, client)) = cached.as_ref()
            && *k == key
        {
            return Some(client.clone());
        }
        let client = Mattermost::new(mm.url.clone(), secret);
        *cached = Some((key, client.clone()));
        Some(client)
    }

    /// The bot's user id, for loop protection: `mattermost.bot_user_id`, or else Mattermost's
    /// answer to `GET /api/v4/users/me`, asked once per client. `None` without a bot, or when
    /// Mattermost cannot be asked now (then it cannot take the bot's posts either).
    pub async fn bot_user_id(&self) -> Option<String> {
        let mm = self.config.mattermost.as_ref()?;
        if let Some(id) = &mm.bot_user_id {
            return Some(id.clone());
        }
        // Without a bot token there is no bot whose posts could loop back.
        let _bot = mm.bot_token.as_ref()?;
        match self.mattermost()?.me().await {
            Ok(me) => Some(me.id),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask Mattermost for the bot's user id; set mattermost.bot_user_id to avoid the call");
                None
            }
        }
    }

    /// Without a bot token, reads the installed OAuth app's token (once it is there).
    pub async fn load_app_token(&self) {
        let no_bot = self.config.mattermost.as_ref().is_some_and(|m| m.bot_token.is_none());
        let loaded = self.app_token.read().unwrap_or_else(|p| p.into_inner()).is_some();
        if !no_bot || loaded || self.config.incidents.oauth.is_none() {
            return;
        }
        let Some(repo) = self.oauth() else { return };
        match repo.app_token().await {
            Ok(Some(token)) => *self.app_token.write().unwrap_or_else(|p| p.into_inner()) = Some(token),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the installed app's token; trying again later"),
        }
    }

    /// Connected users' and the installed app's tokens (needs `server.signing_secret`, their key).
    pub fn oauth(&self) -> Option<crate::repo::oauth::OAuthRepo> {
        let secret = self.config.server.signing_secret.as_ref()?;
        Some(crate::repo::oauth::OAuthRepo::new(self.store.clone(), secret))
    }

    /// Signs and checks dialog and OAuth states (`server.signing_secret`).
    pub fn state_signer(&self) -> Option<crate::chatops::signing::Signer> {
        self.config.server.signing_secret.clone().map(crate::chatops::signing::Signer::new)
    }

    /// The cards' buttons, when `server.public_url` and `server.signing_secret` are set.
    pub fn buttons(&self) -> Option<crate::notify::card::Buttons> {
        let server = &self.config.server;
        let (url, secret) = (server.public_url.as_ref()?, server.signing_secret.as_ref()?);
        let url = format!("{}/chatops/action", url.as_str().trim_end_matches('/'));
        Some(crate::notify::card::Buttons { signer: crate::chatops::signing::Signer::new(secret.clone()), url })
    }

    pub fn notifier(&self) -> Notifier {
        Notifier::new(crate::notify::notifier::NotifierParts {
            config: self.config.clone(),
            store: self.store.clone(),
            incidents: self.incidents(),
            oauth: self.oauth(),
            deliveries: self.deliveries(),
            cards: CardRepo::new(self.store.clone()),
            mattermost: self.mattermost(),
            buttons: self.buttons(),
            timers: Some(self.timer_queue.clone()),
            outbox: Some(self.outbox()),
        })
    }

    /// Builds everything from the configuration's `[storage]` section.
    pub async fn from_config(config: Config) -> Result<AppState, AppError> {
        match config.storage.backend {
            StorageBackend::Embedded => {
                let db = Db::open_in(&config.storage.data_dir())?;
                Ok(AppState::embedded(config, db)?)
            }
            StorageBackend::Aws => {
                let s = &config.storage;
                // Validation guarantees these are set for the aws backend.
                let table = s.table.clone().unwrap_or_default();
                let notify = s.notify_queue_url.clone().unwrap_or_default();
                let timer = s.timer_queue_url.clone().unwrap_or_default();
                Ok(AppState::aws(config, table, notify, timer).await)
            }
        }
    }

    /// SQLite store and queues in `db`.
    pub fn embedded(config: Config, db: Db) -> Result<AppState, AppError> {
        let redrive = |dlq: &str| Some(Redrive { dead_letter_queue: dlq.to_string(), max_receives: MAX_RECEIVES });
        let notify = SqliteQueue::open(db.clone(), NOTIFY_QUEUE, QueueKind::Fifo, redrive("notify-dlq"))?;
        let timer = SqliteQueue::open(db.clone(), TIMER_QUEUE, QueueKind::Standard, redrive("timers-dlq"))?;
        let pace = Pace::by(notify.backlog());
        Ok(AppState {
            config: Arc::new(config),
            store: Arc::new(SqliteStore::new(db.clone())?),
            notify_queue: Arc::new(notify),
            timer_queue: Arc::new(timer),
            storage: StorageDescription::Embedded { path: db.path().to_path_buf() },
            // One process owns the file: numbers one at a time when quiet, so no gaps. Its
            // notifier shares the machine: intake yields to it when it falls behind.
            intake_shared: Arc::new(crate::ingest::apply::Shared::new(1).paced(pace)),
            mattermost_client: Arc::default(),
            app_token: Arc::default(),
        })
    }

    /// DynamoDB and SQS, with credentials, region and endpoint from the usual AWS environment.
    pub async fn aws(config: Config, table: String, notify_url: String, timer_url: String) -> AppState {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        AppState::aws_with(&sdk, config, table, notify_url, timer_url)
    }

    /// DynamoDB and SQS clients built from `sdk` (tests point it at moto).
    pub fn aws_with(
        sdk: &aws_config::SdkConfig,
        config: Config,
        table: String,
        notify_url: String,
        timer_url: String,
    ) -> AppState {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        AppState {
            config: Arc::new(config),
            store: Arc::new(DynamoStore::new(dynamo, table.clone())),
            notify_queue: Arc::new(SqsQueue::new(sqs.clone(), notify_url)),
            timer_queue: Arc::new(SqsQueue::new(sqs, timer_url)),
            storage: StorageDescription::Aws { table },
            intake_shared: Arc::new(crate::ingest::apply::Shared::new(AWS_NUMBER_BLOCK)),
            mattermost_client: Arc::default(),
            app_token: Arc::default(),
        }
    }
}
