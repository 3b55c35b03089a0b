//! The notifier's job handler: renders each alert's card from its latest state and delivers it.
//!
//! **Bot mode** (a channel with `channel_id`): one card per alert, in the channel the alert's
//! `alert.triggered` route names, created once and then updated in place; acknowledgements,
//! resolutions and raised urgencies add a short reply in its thread; repeats only update the
//! count (and since the card shows the alert's latest state, a backlog of repeats collapses into
//! one update). **Webhook mode** (a channel with `webhook`): one post per routed event (repeats
//! excepted), rendered the same way; the webhook API cannot thread or update.
//!
//! Failures: transient ones (5xx, 429, timeouts) are retried a few times here, then the job goes
//! back to the queue. Permanent ones (bad token, bot not in the channel, unknown channel or
//! webhook) are recorded with the admin's fix and the job is done, so the alert's later events go
//! on; the next event tries the card again.
//!
//! Incidents: see [`super::incident`].

use super::batch::{JobError, JobHandler, Record};
use super::card;
use super::job::{Job, NotifyJob, Subject};
use super::routing::{EventFacts, destination};
use crate::config::Config;
use crate::domain::Alert;
use crate::mattermost::{CreatePost, Mattermost, MattermostError, WebhookPost};
use crate::repo::RepoError;
use crate::repo::alerts::AlertRepo;
use crate::repo::cards::{Card, CardRepo};
use crate::repo::deliveries::{Delivery, DeliveryRecord, DeliveryRepo};
use crate::repo::incidents::IncidentRepo;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Tries of one Mattermost call within one invocation before the job goes back to the queue.
const CALL_ATTEMPTS: u32 = 3;
/// The longest 429 wait honoured inside an invocation; longer ones go back to the queue.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(10);
/// Mattermost remembers a `pending_post_id` for 30 s. A claim older than this may have created
/// a post that a repeated create would not find again: look for it first.
const PENDING_MEMORY: Duration = Duration::from_secs(25);
pub(super) const NO_MATTERMOST: &str = "no Mattermost is configured (add a [mattermost] section to klaxon.toml)";
/// In an alert storm, a card's count is updated at most this often (a few dozen calls for a
/// thousand repeats); the last count always arrives through a delayed refresh.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(2);

pub struct Notifier {
    pub(super) config: Arc<Config>,
    /// For reading a job's records together (the repositories below sit on the same store).
    store: Arc<dyn crate::store::Store>,
    pub(super) incidents: IncidentRepo,
    /// Connected users' tokens (`/incident connect`): their channels are created as them.
    pub(super) oauth: Option<crate::repo::oauth::OAuthRepo>,
    pub(super) deliveries: DeliveryRepo,
    cards: CardRepo,
    pub(super) mattermost: Option<Mattermost>,
    buttons: Option<card::Buttons>,
    /// Where paced card refreshes are queued (the timer queue).
    timers: Option<Arc<dyn crate::queue::Queue>>,
    /// Told when a job is handled, so that its outbox item goes (DynamoDB only).
    outbox: Option<super::outbox::Outbox>,
}

/// Where Notifier's repositories and clients come from.
pub struct NotifierParts {
    pub config: Arc<Config>,
    pub store: Arc<dyn crate::store::Store>,
    pub incidents: IncidentRepo,
    pub oauth: Option<crate::repo::oauth::OAuthRepo>,
    pub deliveries: DeliveryRepo,
    pub cards: CardRepo,
    pub mattermost: Option<Mattermost>,
    pub buttons: Option<card::Buttons>,
    pub timers: Option<Arc<dyn crate::queue::Queue>>,
    pub outbox: Option<super::outbox::Outbox>,
}

impl From<RepoError> for JobError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Decode { .. } => JobError::Poison(e.to_string()),
            other => JobError::Transient(other.to_string()),
        }
    }
}

/// Why a job could not be delivered now.
pub(super) enum Failure {
    /// Retry the job later.
    Transient(String),
    /// Record this (the admin's fix) and move on.
    Permanent(String),
}

impl From<MattermostError> for Failure {
    fn from(e: MattermostError) -> Self {
        if e.is_transient() { Failure::Transient(e.to_string()) } else { Failure::Permanent(e.to_string()) }
    }
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Self {
        Failure::Transient(e.to_string())
    }
}

/// Keeps a problem every job meets (not delivered, failed for good) from writing a log line per
/// job: one per reason a minute, with the count of the others; each job's outcome is in its
/// delivery record. Process-wide, so that it holds across the invocations of a warm Lambda
/// (each makes its own `Notifier`).
static UNDELIVERED: std::sync::LazyLock<crate::telemetry::Throttle> =
    std::sync::LazyLock::new(crate::telemetry::Throttle::per_minute);
/// In a Mattermost outage every call fails alike: one line per reason a minute, not one per call.
static CALL_RETRIES: std::sync::LazyLock<crate::telemetry::Throttle> =
    std::sync::LazyLock::new(crate::telemetry::Throttle::per_minute);

/// Calls `f` up to [`CALL_ATTEMPTS`] times while it fails transiently, waiting what a 429 asks
/// (up to [`MAX_INLINE_WAIT`]) or a short backoff.
pub(super) async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, MattermostError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MattermostError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(MattermostError::Transient { retry_after, what }) if attempt < CALL_ATTEMPTS => {
                let wait = match retry_after {
                    Some(w) if w > MAX_INLINE_WAIT => return Err(MattermostError::Transient { what, retry_after }),
                    Some(w) => w,
                    None => Duration::from_millis(200 * u64::from(attempt)),
                };
                if let Some(left_out) = CALL_RETRIES.admit(&what) {
                    tracing::info!(attempt, wait_ms = wait.as_millis() as u64, reason = %what, like_this_since_last = left_out, "Mattermost call failed; retrying (one line per reason a minute; the others are counted)");
                }
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Notifier {
    pub fn new(p: NotifierParts) -> Self {
        Notifier {
            config: p.config,
            store: p.store,
            incidents: p.incidents,
            oauth: p.oauth,
            deliveries: p.deliveries,
            cards: p.cards,
            mattermost: p.mattermost,
            buttons: p.buttons,
            timers: p.timers,
            outbox: p.outbox,
        }
    }

    /// `retried`: the job was received before (a previous attempt may have posted its reply).
    async fn notify(&self, job: &NotifyJob, retried: bool) -> Result<(), JobError> {
        let id = match &job.subject {
            Subject::Alert { id } => id,
            Subject::Incident { id } => {
                if self.deliveries.get(&job.job_id).await?.is_some() {
                    tracing::info!(job_id = %job.job_id, "job already handled; redelivery ignored");
                    return Ok(());
                }
                return self.notify_incident(job, id).await;
            }
        };
        // Everything an alert's job starts from, in one batch read: one round trip on DynamoDB,
        // one read transaction on SQLite.
        let keys = [DeliveryRepo::key(&job.job_id), AlertRepo::key(id), CardRepo::key(id)];
        let [delivery, alert, card]: [Option<crate::store::Item>; 3] =
            self.store.get_many(&keys).await.map_err(RepoError::from)?.try_into().map_err(|_| {
                JobError::Transient(
                    "the store answered a batch read with a wrong number of items; the job is retried".into(),
                )
            })?;
        if DeliveryRepo::read(delivery, &job.job_id)?.is_some() {
            tracing::info!(job_id = %job.job_id, "job already handled; redelivery ignored");
            return Ok(());
        }
        let alert = AlertRepo::read(alert, id)?
            .ok_or_else(|| JobError::Poison(format!("alert {id} of job {} does not exist", job.job_id)))?
            .value;
        let card = CardRepo::read(card, id)?;
        if let Some(window) = &alert.held {
            let why = format!(
                "held by maintenance window {window}; the alert is posted when the window ends if it is still open"
            );
            return self.not_delivered(job, None, why).await;
        }
        let facts = EventFacts { event: &job.event, source: Some(&alert.source), urgency: Some(alert.urgency) };
        let channel = match (destination(&self.config, &facts), &self.mattermost) {
            (Ok(c), Some(_)) => c.to_string(),
            (Ok(c), None) => return self.not_delivered(job, Some(c.to_string()), NO_MATTERMOST.into()).await,
            (Err(why), Some(_)) => return self.not_delivered(job, None, why).await,
            (Err(why), None) => return self.not_delivered(job, None, format!("{NO_MATTERMOST}, and {why}")).await,
        };
        let (Some(mm), Some(dest)) = (&self.mattermost, self.config.channels.get(&channel)) else {
            let why = format!("channel {channel} is not defined in [channels]");
            return self.not_delivered(job, Some(channel), why).await;
        };
        // The card lives where the alert's trigger was routed. An event routed elsewhere still
        // brings the card up to date, and gets a post of its own in its channel.
        // Read once: the card decides where the card lives and is where its update starts.
        let card_channel = self.card_channel(&alert, card.as_ref());
        let card_here = card_channel.is_some() && card_channel == dest.channel_id;
        if let Some(card_id) = card_channel.as_ref().filter(|_| !card_here) {
            match self.bot_card(mm, job, &alert, card_id, None, card.clone()).await {
                Ok(_) => {}
                Err(Failure::Transient(why)) => return Err(JobError::Transient(why)),
                Err(Failure::Permanent(why)) => {
                    tracing::warn!(alert_id = %alert.id, reason = %why, "the alert's card could not be updated");
                }
            }
        }
        if job.event == "alert.repeated" && !card_here {
            // Repeats update the count on the card; posted on their own they would flood a channel.
            let why = "repeats only update the alert's card; they are not posted on their own".to_string();
            return self.not_delivered(job, Some(channel), why).await;
        }
        let outcome = match (&dest.channel_id, &dest.webhook) {
            (Some(channel_id), _) if card_here => self.bot_card(mm, job, &alert, channel_id, Some(retried), card).await,
            (Some(channel_id), _) => self.own_post(mm, job, &alert, channel_id).await,
            (None, Some(hook)) => self.webhook_post(mm, job, &alert, hook).await,
            (None, None) => Err(Failure::Permanent(format!("channel {channel} has neither channel_id nor webhook"))),
        };
        // An escalation step may name a channel of its own (a team's on-call channel), and
        // ask for direct messages to its users.
        let outcome = match outcome {
            Ok(post_id) if job.event == "alert.escalated" || job.event == "alert.triggered" => {
                match self.escalation_extras(mm, job, &alert).await {
                    Ok(()) => Ok(post_id),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match outcome {
            Ok(post_id) => {
                let delivery = Delivery::Posted { channel, post_id };
                let record = DeliveryRecord { job_id: job.job_id.clone(), at: jiff::Timestamp::now(), delivery };
                self.deliveries.record(&record).await?;
                Ok(())
            }
            Err(Failure::Transient(why)) => Err(JobError::Transient(why)),
            Err(Failure::Permanent(why)) => {
                if let Some(left_out) = UNDELIVERED.admit(&why) {
                    tracing::error!(job_id = %job.job_id, event = %job.event, subject = %job.subject.id(), channel = %channel, reason = %why, like_this_since_last = left_out, "notification FAILED (one line per reason a minute; the others are counted); `klaxon deliveries` lists them all, `klaxon deliveries retry` sends them again once fixed");
                }
                self.deliveries.record_failure(&Job::Notify(job.clone()), Some(channel), why).await?;
                Ok(())
            }
        }
    }

    /// What the current escalation step asks for besides the thread: direct messages to its
    /// users (on assignment and on each escalation) and a post in its channel (on escalation).
    async fn escalation_extras(&self, mm: &Mattermost, job: &NotifyJob, alert: &Alert) -> Result<(), Failure> {
        let Some(e) = alert.escalation.as_ref().filter(|e| !e.exhausted && !e.manual) else { return Ok(()) };
        let Some(step) = crate::escalation::policy::step(&self.config, e) else { return Ok(()) };
        if step.direct_message {
            for target in &e.assignees {
                let name = target.trim_start_matches('@');
                // A group (@sre-leads) has no user: it is mentioned in the thread only.
                let Some(user) = with_retries(|| mm.user_by_name(name)).await? else { continue };
                let dm = with_retries(|| mm.direct_channel(&user.id)).await?;
                let text = format!(
                    "**{}** needs you (level {} of {}): {}. Acknowledge it on its card.",
                    alert.id,
                    e.level,
                    e.levels,
                    card::neutralise(&alert.summary)
                );
                self.post_once(mm, job, &dm.id, text).await?;
            }
        }
        if job.event != "alert.escalated" {
            return Ok(());
        }
        let Some(name) = step.channel.as_ref() else { return Ok(()) };
        let dest = self
            .config
            .channels
            .get(name)
            .ok_or_else(|| Failure::Permanent(format!("channel {name} is not defined in [channels]")))?;
        match (&dest.channel_id, &dest.webhook) {
            (Some(id), _) => self.own_post(mm, job, alert, id).await.map(|_| ()),
            (None, Some(hook)) => self.webhook_post(mm, job, alert, hook).await.map(|_| ()),
            (None, None) => Err(Failure::Permanent(format!("channel {name} has neither channel_id nor webhook"))),
        }
    }

    /// Records why the job was not delivered, and finishes it.
    pub(super) async fn not_delivered(
        &self,
        job: &NotifyJob,
        channel: Option<String>,
        reason: String,
    ) -> Result<(), JobError> {
        if let Some(left_out) = UNDELIVERED.admit(&reason) {
            tracing::warn!(job_id = %job.job_id, event = %job.event, subject = %job.subject.id(), channel = channel.as_deref().unwrap_or("(none)"), reason = %reason, like_this_since_last = left_out, "notification NOT delivered (one line per reason a minute; the others are counted)");
        }
        let record = DeliveryRecord {
            job_id: job.job_id.clone(),
            at: jiff::Timestamp::now(),
            delivery: Delivery::NotDelivered { channel, reason },
        };
        self.deliveries.record(&record).await?;
        Ok(())
    }

    /// The bot channel id the alert's card lives in: its record's, once it has one (the alert's
    /// urgency may have been raised since, routing its trigger elsewhere), else where its
    /// `alert.triggered` is routed now.
    fn card_channel(&self, alert: &Alert, card: Option<&crate::repo::Versioned<Card>>) -> Option<String> {
        if let Some(card) = card {
            return Some(card.value.channel_id.clone());
        }
        let facts = EventFacts { event: "alert.triggered", source: Some(&alert.source), urgency: Some(alert.urgency) };
        let name = destination(&self.config, &facts).ok()?;
        self.config.channels.get(name).and_then(|c| c.channel_id.clone())
    }

    /// A post of its own for an event routed to another bot channel than the card's.
    async fn own_post(
        &self,
        mm: &Mattermost,
        job: &NotifyJob,
        alert: &Alert,
        channel_id: &str,
    ) -> Result<String, Failure> {
        let (message, attachment) = self.standalone(job, alert);
        let post = CreatePost {
            channel_id: channel_id.to_string(),
            message,
            root_id: String::new(),
            props: card::props(alert, &attachment),
            pending_post_id: format!("klaxon-{}-{channel_id}", job.job_id),
        };
        Ok(with_retries(|| mm.create_post(&post)).await?.id)
    }

    /// A post that stands on its own (another channel than the card's, or a webhook): the card,
    /// with the event's reply line under its message, and buttons signed for "any post".
    fn standalone(&self, job: &NotifyJob, alert: &Alert) -> (String, crate::mattermost::Attachment) {
        let (message, attachment) = card::render_with_buttons(alert, self.buttons.as_ref(), "");
        match card::thread_reply(&job.event, alert) {
            Some(reply) => (format!("{message}\n{reply}"), attachment),
            None => (message, attachment),
        }
    }

    /// Bot mode: make sure the card exists and shows the alert's latest state, then (with
    /// `reply`: whether this job was tried before) add the event's thread reply. Returns the post
    /// the job produced (the reply, or the card).
    async fn bot_card(
        &self,
        mm: &Mattermost,
        job: &NotifyJob,
        alert: &Alert,
        channel_id: &str,
        reply: Option<bool>,
        read: Option<crate::repo::Versioned<Card>>,
    ) -> Result<String, Failure> {
        let mut card = self.ensure_card(mm, alert, channel_id, read).await?;
        let post_id = card.value.post_id.clone().unwrap_or_default();
        if card.value.rendered_revision < alert.revision {
            let now = jiff::Timestamp::now();
            if job.event == "alert.repeated" && self.pace(job, alert, &card, now).await? {
                return Ok(post_id);
            }
            let (message, attachment) = card::render_with_buttons(alert, self.buttons.as_ref(), &post_id);
            let props = card::props(alert, &attachment);
            with_retries(|| mm.update_post(&post_id, &card.value.channel_id, &message, &props)).await?;
            let updated = Card { rendered_revision: alert.revision, updated_at: Some(now), ..card.value.clone() };
            // Losing this race only means another worker rendered the same or a newer state.
            match self.cards.save(&alert.id, &card, &updated).await {
                Ok(saved) => card = saved,
                Err(RepoError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (Some(retried), Some(text)) = (reply, card::thread_reply(&job.event, alert)) else { return Ok(post_id) };
        // A retry of this job within 30 s gets the same reply back for its pending_post_id. A
        // retry after that (the job came back from the queue: its delivery record could not be
        // written) first looks for the reply in the thread, by the job id in its props.
        if retried && let Some(existing) = with_retries(|| mm.find_reply(&post_id, card::JOB_PROP, &job.job_id)).await?
        {
            return Ok(existing.id);
        }
        let reply =
            card::job_post(&card.value.channel_id, &post_id, text, &job.job_id, format!("klaxon-{}", job.job_id));
        Ok(with_retries(|| mm.create_post(&reply)).await?.id)
    }

    /// Paces count-only updates in an alert storm: when the card was updated less than
    /// [`REPEAT_INTERVAL`] ago, a repeat does not update it now; instead one delayed refresh is
    /// queued on the timer queue (per interval, however many repeats come), which renders the
    /// latest count when it fires. Returns whether this repeat was paced (nothing to do now).
    async fn pace(
        &self,
        job: &NotifyJob,
        alert: &Alert,
        card: &crate::repo::Versioned<Card>,
        now: jiff::Timestamp,
    ) -> Result<bool, Failure> {
        let interval = jiff::SignedDuration::try_from(REPEAT_INTERVAL).unwrap_or_default();
        let (Some(timers), Some(last)) = (&self.timers, card.value.updated_at) else { return Ok(false) };
        if now.duration_since(last) >= interval {
            return Ok(false);
        }
        if card.value.refresh_due.is_some_and(|due| due > now) {
            return Ok(true); // a refresh is already on its way
        }
        let refresh = Job::Notify(NotifyJob {
            job_id: format!("{}#refresh-{:010}", alert.id, alert.revision),
            event: "alert.repeated".into(),
            subject: job.subject.clone(),
            at: now,
        });
        let message = crate::queue::OutgoingMessage::standard(crate::repo::encode(&refresh)).delayed(REPEAT_INTERVAL);
        timers.send(message).await.map_err(|e| Failure::Transient(e.to_string()))?;
        let due = Card { refresh_due: Some(now + interval), ..card.value.clone() };
        match self.cards.save(&alert.id, card, &due).await {
            Ok(_) | Err(RepoError::Conflict { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The alert's card, created if it has none yet.
    ///
    /// The record is claimed before the create, so two workers cannot both create. A crash
    /// between the create and saving the post id leaves a claim without a post id: the next
    /// attempt creates again with the same `pending_post_id`, and Mattermost (within 30 s)
    /// returns the post it already made. After that window a repeated create would make a second
    /// card, so an older claim first looks for the card in the channel (its props carry the
    /// alert id) and adopts it.
    async fn ensure_card(
        &self,
        mm: &Mattermost,
        alert: &Alert,
        channel_id: &str,
        read: Option<crate::repo::Versioned<Card>>,
    ) -> Result<crate::repo::Versioned<Card>, Failure> {
        let (claim, fresh) = match read {
            Some(card) if card.value.post_id.is_some() => return Ok(card),
            Some(claim) => (claim, false),
            None => match self.cards.claim(&alert.id, channel_id).await {
                Ok(claim) => (claim, true),
                Err(RepoError::Conflict { .. }) => {
                    return Err(Failure::Transient(format!("another worker is creating the card of {}", alert.id)));
                }
                Err(e) => return Err(e.into()),
            },
        };
        let channel_id = claim.value.channel_id.clone();
        let age = jiff::Timestamp::now().duration_since(claim.value.claimed_at);
        let existing = if age > jiff::SignedDuration::try_from(PENDING_MEMORY).unwrap_or_default() {
            let since = claim.value.claimed_at - jiff::SignedDuration::from_secs(60);
            with_retries(|| mm.find_post(&channel_id, since, card::ALERT_PROP, &alert.id)).await?
        } else {
            None
        };
        // The post id is not known before the create: these buttons are signed for "the card".
        let (message, attachment) = card::render_with_buttons(alert, self.buttons.as_ref(), "");
        let post_id = match existing {
            Some(post) => {
                tracing::info!(alert_id = %alert.id, post_id = %post.id, "found the card created before a crash; adopting it");
                post.id
            }
            None => {
                let create = CreatePost {
                    channel_id: channel_id.clone(),
                    message,
                    root_id: String::new(),
                    props: card::props(alert, &attachment),
                    pending_post_id: format!("klaxon-card-{}", alert.id),
                };
                match with_retries(|| mm.create_post(&create)).await {
                    Ok(created) => created.id,
                    Err(e) if !e.is_transient() => {
                        // Gone for good (e.g. the bot is not in the channel): free the claim so
                        // that the alert's next event tries again, once an admin fixed it.
                        self.cards.release(&alert.id, &claim).await?;
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // A post found again (adopted, or returned for a repeated pending_post_id) may show an
        // older state than this create sent: have the caller render it again.
        let rendered_revision = if fresh { alert.revision } else { 0 };
        let card = Card {
            channel_id,
            post_id: Some(post_id),
            claimed_at: claim.value.claimed_at,
            rendered_revision,
            updated_at: Some(jiff::Timestamp::now()),
            refresh_due: None,
        };
        match self.cards.save(&alert.id, &claim, &card).await {
            Ok(saved) => Ok(saved),
            Err(RepoError::Conflict { .. }) => {
                Err(Failure::Transient(format!("the card of {} changed meanwhile", alert.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Webhook mode: one post per routed event (repeats never get here: they only update a card).
    async fn webhook_post(
        &self,
        mm: &Mattermost,
        job: &NotifyJob,
        alert: &Alert,
        hook: &str,
    ) -> Result<String, Failure> {
        let url = self
            .config
            .mattermost
            .as_ref()
            .and_then(|m| m.webhooks.get(hook))
            .ok_or_else(|| Failure::Permanent(format!("webhook {hook} is not in [mattermost.webhooks]")))?;
        let (text, attachment) = self.standalone(job, alert);
        let post = WebhookPost { text, attachments: vec![attachment] };
        with_retries(|| mm.post_webhook(url, &post)).await?;
        Ok(format!("webhook:{hook}"))
    }
}

#[async_trait]
impl JobHandler for Notifier {
    async fn handle(&self, record: &Record) -> Result<(), JobError> {
        let job = Job::parse(&record.body)
            .map_err(|e| JobError::Poison(format!("message {} is not a Klaxon job: {e}", record.message_id)))?;
        match &job {
            Job::Notify(n) => self.notify(n, record.receive_count > 1).await?,
        }
        if let Some(outbox) = &self.outbox {
            outbox.handled(&job).await;
        }
        Ok(())
    }
}
