//! Maintenance windows at run time: which one holds a new alert, starting and stopping them
//! from chat, and what happens when one ends (held alerts released, one summary post).

use super::maintenance::{Schedule, Window};
use super::{policy, timers};
use crate::config::Config;
use crate::domain::AlertStatus;
use crate::mattermost::{CreatePost, Mattermost, WebhookPost};
use crate::notify::outbox::Outbox;
use crate::notify::routing::{EventFacts, destination};
use crate::notify::{Job, NotifyJob, Subject};
use crate::repo::RepoError;
use crate::repo::alerts::AlertRepo;
use crate::repo::maintenance::MaintenanceRepo;
use crate::store::Store;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Window ends older than this are not looked at any more.
const LOOK_BACK: SignedDuration = SignedDuration::from_hours(7 * 24);
/// How long the summary waits for the released alerts' cards, to link them.
const CARD_WAIT: SignedDuration = SignedDuration::from_mins(3);

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "the end summary of maintenance window {key} could not be posted ({why}); it is tried again on the next sweep"
    )]
    Summary { key: String, why: String },
}

#[derive(Clone)]
pub struct Windows {
    config: Arc<Config>,
    repo: MaintenanceRepo,
    alerts: AlertRepo,
    cards: crate::repo::cards::CardRepo,
    outbox: Outbox,
    mattermost: Option<Mattermost>,
}

/// Every window occurrence overlapping `[from, to]`: configured ones and those started from chat.
async fn windows(
    config: &Config,
    repo: &MaintenanceRepo,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Window>, RepoError> {
    Ok(overlapping(config, repo.started().await?, from, to))
}

/// Every window occurrence overlapping `[from, to]`: configured ones and those of `started`.
fn overlapping(config: &Config, started: Vec<Window>, from: Timestamp, to: Timestamp) -> Vec<Window> {
    let mut out: Vec<Window> = config
        .maintenance
        .iter()
        .filter_map(|c| Schedule::from_config(c).ok())
        .flat_map(|s| s.between(from, to))
        .collect();
    out.extend(started.into_iter().filter(|w| w.end >= from && w.start <= to));
    out
}

/// The window holding a new alert from `source` at `at`, if any: a configured one, or one of
/// `started` (the windows started from chat, as [`MaintenanceRepo::STARTED`] reads them).
pub fn holding(config: &Config, started: Vec<Window>, source: &str, at: Timestamp) -> Option<Window> {
    overlapping(config, started, at, at).into_iter().find(|w| w.covers(source, at))
}

impl Windows {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, outbox: Outbox, mattermost: Option<Mattermost>) -> Self {
        Windows {
            config,
            repo: MaintenanceRepo::new(store.clone()),
            alerts: AlertRepo::new(store.clone()),
            cards: crate::repo::cards::CardRepo::new(store),
            outbox,
            mattermost,
        }
    }

    /// Starts a window now for `length`, for one source or all.
    pub async fn start(
        &self,
        source: Option<String>,
        length: SignedDuration,
        now: Timestamp,
    ) -> Result<Window, RepoError> {
        let id = format!("chat-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let end = now.checked_add(length).unwrap_or(Timestamp::MAX);
        let w = Window { id, sources: source.into_iter().collect(), start: now, end, channel: None };
        self.repo.save(&w).await?;
        Ok(w)
    }

    /// Ends every window started from chat that is running now; returns them.
    pub async fn stop(&self, now: Timestamp) -> Result<Vec<Window>, RepoError> {
        let mut stopped = Vec::new();
        for mut w in self.repo.started().await? {
            if w.start <= now && now < w.end {
                w.end = now;
                self.repo.save(&w).await?;
                stopped.push(w);
            }
        }
        Ok(stopped)
    }

    /// Windows running now or starting within a week.
    pub async fn list(&self, now: Timestamp) -> Result<Vec<Window>, RepoError> {
        let mut all = windows(&self.config, &self.repo, now, now + LOOK_BACK).await?;
        all.retain(|w| w.end > now);
        all.sort_by_key(|w| w.start);
        Ok(all)
    }

    /// Handles every window that ended (within the last week) and was not handled yet: each
    /// alert it held is released (the open ones posted and escalated from now), then, once their
    /// cards exist (or after a few minutes), one summary is posted with links to them. Safe to run again: a released alert is not released twice, and the
    /// end is marked handled only after the summary.
    pub async fn close_ended(&self, now: Timestamp) -> Result<usize, WindowError> {
        let mut closed = 0;
        for w in windows(&self.config, &self.repo, now - LOOK_BACK, now).await? {
            let key = w.key();
            if w.end > now || self.repo.is_closed(&key).await? {
                continue;
            }
            let held = self.repo.held(&key).await?;
            let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
            let mut open = Vec::new();
            for (alert_id, source) in &held {
                *per_source.entry(source.clone()).or_default() += 1;
                if self.release(alert_id, &key, now).await? {
                    open.push(alert_id.clone());
                }
            }
            // The summary links the open alerts' cards, which the notifier is making now: wait
            // for them (a later sweep comes back), but not for ever.
            let mut links = Vec::new();
            for id in &open {
                match self.cards.get(id).await?.and_then(|c| c.value.post_id) {
                    Some(post) => links.push(self.link(id, &post)),
                    None if now.duration_since(w.end) < CARD_WAIT => {
                        tracing::debug!(window = %w.id, alert_id = %id, "waiting for the card before the summary");
                        break;
                    }
                    None => links.push(id.clone()),
                }
            }
            if links.len() < open.len() {
                continue;
            }
            // A window nothing arrived in ends quietly (an old occurrence at a first start, a
            // quiet night): the summary is about what was held.
            if !held.is_empty() {
                self.summary(&w, &per_source, &links, held.len()).await?;
            }
            self.repo.close(&w, now).await?;
            closed += 1;
        }
        Ok(closed)
    }

    /// Releases one held alert; returns whether it is still open (and so is posted now).
    async fn release(&self, alert_id: &str, key: &str, now: Timestamp) -> Result<bool, RepoError> {
        for _ in 0..10 {
            let Some(read) = self.alerts.get(alert_id).await? else { return Ok(false) };
            let still_open = read.value.status == AlertStatus::Open;
            if read.value.held.as_deref() != Some(key) {
                return Ok(still_open); // released by an earlier sweep
            }
            let mut alert = read.value.clone();
            alert.release(policy::start(&self.config, &alert.source, now), now);
            let mut writes = Vec::new();
            let mut released = None;
            if still_open {
                // Its card, as a trigger's would have been (and its first escalation level).
                let job = Job::Notify(NotifyJob {
                    job_id: format!("{}#{:010}", alert.id, alert.revision),
                    event: "alert.triggered".into(),
                    subject: Subject::Alert { id: alert.id.clone() },
                    at: now,
                });
                writes.push(self.outbox.write(&job));
                writes.extend(timers::schedule(&alert));
                released = Some(job);
            }
            match self.alerts.update(&read, &alert, writes).await {
                Ok(()) => {
                    if let Some(job) = &released {
                        self.outbox.hand_over(job).await;
                    }
                    return Ok(still_open);
                }
                Err(RepoError::Conflict { .. }) => continue,
                Err(RepoError::Store(e)) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RepoError::Conflict { what: format!("alert {alert_id}") })
    }

    /// `[ALR-12](<server>/_redirect/pl/<post>)`: Mattermost's permalink that finds the team itself.
    fn link(&self, alert_id: &str, post_id: &str) -> String {
        match &self.config.mattermost {
            Some(m) => format!("[{alert_id}]({}/_redirect/pl/{post_id})", m.url.as_str().trim_end_matches('/')),
            None => alert_id.to_string(),
        }
    }

    async fn summary(
        &self,
        w: &Window,
        per_source: &BTreeMap<String, usize>,
        open: &[String],
        total: usize,
    ) -> Result<(), WindowError> {
        let fail = |why: String| WindowError::Summary { key: w.key(), why };
        let counts: Vec<String> = per_source.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let mut text = format!(
            "**Maintenance window {} ended** ({} to {} UTC). {} alert(s) arrived during it{}.",
            w.id,
            w.start.strftime("%Y-%m-%d %H:%M"),
            w.end.strftime("%Y-%m-%d %H:%M"),
            total,
            if counts.is_empty() { String::new() } else { format!(" ({})", counts.join(", ")) }
        );
        if !open.is_empty() {
            text.push_str(&format!(" Still open, posted now: {}.", open.join(", ")));
        }
        let channel = match &w.channel {
            Some(c) => c.clone(),
            None => {
                match destination(&self.config, &EventFacts { event: "alert.triggered", source: None, urgency: None }) {
                    Ok(c) => c.to_string(),
                    Err(_) => {
                        tracing::info!(window = %w.id, "maintenance window ended; no channel for its summary (routing.default is not set)");
                        return Ok(());
                    }
                }
            }
        };
        let (Some(mm), Some(dest)) = (&self.mattermost, self.config.channels.get(&channel)) else {
            tracing::info!(window = %w.id, summary = %text, "maintenance window ended; no Mattermost or channel to post its summary to");
            return Ok(());
        };
        match (&dest.channel_id, &dest.webhook) {
            (Some(id), _) => {
                let post = CreatePost {
                    channel_id: id.clone(),
                    message: text,
                    root_id: String::new(),
                    props: serde_json::json!({ "from_bot": "true" }),
                    pending_post_id: format!("klaxon-maintenance-{}", w.key()),
                };
                mm.create_post(&post).await.map(|_| ()).map_err(|e| fail(e.to_string()))
            }
            (None, Some(hook)) => {
                let Some(url) = self.config.mattermost.as_ref().and_then(|m| m.webhooks.get(hook)) else {
                    return Err(fail(format!("webhook {hook} is not in [mattermost.webhooks]")));
                };
                mm.post_webhook(url, &WebhookPost { text, attachments: vec![] }).await.map_err(|e| fail(e.to_string()))
            }
            (None, None) => Err(fail(format!("channel {channel} has neither channel_id nor webhook"))),
        }
    }
}

/// `2026-12-01 02:00 to 03:00 UTC, freezer` for lists.
pub fn describe(w: &Window) -> String {
    let scope = if w.sources.is_empty() { "all sources".to_string() } else { w.sources.join(", ") };
    format!("{}: {} to {} UTC, {scope}", w.id, w.start.strftime("%Y-%m-%d %H:%M"), w.end.strftime("%Y-%m-%d %H:%M"))
}
