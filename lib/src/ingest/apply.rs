//! Applies an [`AlertEvent`] to the alert it belongs to: a new alert, a grouped repeat, an
//! acknowledgement or a resolution. The alert, its notification jobs (through the outbox) and the
//! delivery's "seen" record are one store transaction, so a retried request changes nothing
//! and a failed write leaves nothing behind.

use super::coalesce::Pending;
use super::pace::Pace;
use super::serial::KeyLocks;
use super::{AlertEvent, EventKind, delivery};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::domain::{Alert, AlertStatus, NewAlert, Urgency};
use crate::notify::outbox::Outbox;
use crate::notify::{Job, NotifyJob, Subject};
use crate::repo::alerts::AlertRepo;
use crate::repo::counter::NumberBlocks;
use crate::repo::maintenance::MaintenanceRepo;
use crate::repo::{RepoError, Versioned};
use crate::store::{Decide, Decided, Item, ReadNow, Store, Write};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new alert was opened.
    Created,
    /// A repeat within the grouping window raised the open alert's occurrence count.
    Grouped,
    Acknowledged,
    Resolved,
    /// A resolve or acknowledge found no open alert for its key.
    NoOpenAlert,
    /// A chat action named an alert that does not exist.
    UnknownAlert,
    /// The alert's state does not allow the action (e.g. already resolved); nothing changed.
    Refused {
        reason: String,
    },
    /// This source may not act on that alert (another source's alert); nothing changed.
    NotAllowed {
        reason: String,
    },
}

/// What happened, as callers report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeResult {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub alert_id: Option<String>,
    pub status: Option<AlertStatus>,
    pub urgency: Option<Urgency>,
    pub occurrences: u32,
    /// True when this request opened nothing new: a grouped repeat or a repeated delivery.
    pub deduplicated: bool,
    /// Set when this request raised the open alert's urgency: the urgency it had before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_from: Option<Urgency>,
}

impl IntakeResult {
    pub(super) fn about(outcome: Outcome, alert: &Alert, deduplicated: bool) -> Self {
        IntakeResult {
            outcome,
            alert_id: Some(alert.id.clone()),
            status: Some(alert.status),
            urgency: Some(alert.urgency),
            occurrences: alert.occurrences,
            deduplicated,
            raised_from: None,
        }
    }

    fn nothing(outcome: Outcome) -> Self {
        IntakeResult {
            outcome,
            alert_id: None,
            status: None,
            urgency: None,
            occurrences: 0,
            deduplicated: false,
            raised_from: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the alert could not be stored ({0}); nothing was recorded, so the request can be retried")]
    Store(#[from] RepoError),
    #[error(
        "alert {0} kept changing under concurrent requests from other Klaxon instances; nothing was recorded, retry"
    )]
    Contention(String),
    #[error("the request was being applied when Klaxon's intake stopped; nothing may have been recorded, retry")]
    Stopped,
}

impl IntakeError {
    /// The same failure, for each of several requests that were applied together.
    pub(super) fn for_each_request(&self) -> IntakeError {
        match self {
            IntakeError::Store(e) => IntakeError::Store(RepoError::Store(crate::store::StoreError::Backend {
                backend: "store",
                message: e.to_string(),
            })),
            IntakeError::Contention(what) => IntakeError::Contention(what.clone()),
            IntakeError::Stopped => IntakeError::Stopped,
        }
    }
}

/// What one attempt did: the answer, and the job its write carried (none when nothing changed).
struct Applied {
    result: IntakeResult,
    job: Option<Job>,
}

impl Applied {
    fn nothing(result: IntakeResult) -> Self {
        Applied { result, job: None }
    }
}

/// What a trigger reads before it decides (the default: nothing found).
#[derive(Default)]
struct TriggerReads {
    /// The open-alert index entry for the event's key.
    pointer: Option<Item>,
    /// The alert `pointer` names (read only when there is one).
    alert: Option<Item>,
    /// How an earlier delivery of this request was answered.
    answered: Option<IntakeResult>,
    /// The maintenance windows started from chat ([`MaintenanceRepo::STARTED`]).
    started: Vec<Item>,
}

impl TriggerReads {
    /// The keys a trigger reads first: the open-alert index entry, then its delivery record.
    fn keys(event: &AlertEvent) -> Vec<(String, String)> {
        let mut keys = vec![AlertRepo::open_key(&event.source, &event.dedup_key)];
        keys.extend(delivery::keys(std::slice::from_ref(event)));
        keys
    }

    /// Nothing found: a new alert, as most triggers in a storm are.
    fn is_empty(&self) -> bool {
        self.pointer.is_none() && self.alert.is_none() && self.answered.is_none() && self.started.is_empty()
    }

    /// Everything, read where the trigger's writes will happen (`keys`: [`TriggerReads::keys`]).
    fn now(store: &dyn ReadNow, event: &AlertEvent, keys: &[(String, String)]) -> Result<TriggerReads, RepoError> {
        let mut items = store.get_many(keys)?.into_iter();
        let pointer = items.next().flatten();
        let answered = delivery::answered(std::slice::from_ref(event), items)?.pop().flatten();
        let alert = match (&pointer, &answered) {
            (Some(p), None) => store.get_many(&[AlertRepo::pointed_at(p)])?.pop().flatten(),
            _ => None,
        };
        let started = match answered {
            Some(_) => Vec::new(),
            None => store.page(&MaintenanceRepo::STARTED)?,
        };
        Ok(TriggerReads { pointer, alert, answered, started })
    }
}

/// What a trigger decided.
enum TriggerPlan {
    /// An earlier delivery of this request was answered so; nothing to write.
    Answered(IntakeResult),
    /// A new alert is due, and needs a number first.
    NeedsNumber,
    Write {
        change: Box<Change>,
        applied: Applied,
    },
}

/// The change a trigger makes.
enum Change {
    Create { alert: Alert, index_version: Option<u64>, extra: Vec<Write> },
    Repeat { read: Box<Versioned<Alert>>, alert: Alert, extra: Vec<Write> },
}

impl TriggerPlan {
    /// The writes that carry the plan out in one transaction, and what the request gets then.
    fn into_writes(self) -> Result<(Vec<Write>, Applied), RepoError> {
        match self {
            TriggerPlan::Answered(result) => Ok((Vec::new(), Applied::nothing(result))),
            TriggerPlan::Write { change, applied } => {
                let writes = match *change {
                    Change::Create { alert, index_version, extra } => {
                        AlertRepo::create_writes(&alert, index_version, extra)
                    }
                    Change::Repeat { read, alert, extra } => AlertRepo::update_open_writes(&read, &alert, extra),
                };
                Ok((writes, applied))
            }
            TriggerPlan::NeedsNumber => Err(RepoError::Store(crate::store::StoreError::Backend {
                backend: "store",
                message: "a trigger was decided without a number for its new alert; this is a bug in Klaxon".into(),
            })),
        }
    }
}

/// What [`Intake::change`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Done(Box<Alert>),
    /// Not allowed now (the text says why); nothing changed.
    Refused(String),
    /// No such alert.
    Unknown,
}

#[derive(Clone)]
pub struct Intake {
    store: Arc<dyn Store>,
    pub(super) alerts: AlertRepo,
    pub(super) outbox: Outbox,
    pub(super) config: Arc<Config>,
    pub(super) shared: Arc<Shared>,
}

/// What every request of one process shares: the per-alert serialisation, the requests waiting
/// to be applied together, this process's block of alert numbers, and what intake yields to.
pub struct Shared {
    locks: KeyLocks,
    pub(super) pending: Pending,
    numbers: NumberBlocks,
    pub(super) pace: Pace,
}

impl Shared {
    /// `min_number_block`: see [`NumberBlocks`] (1 for the embedded store). Never paced.
    pub fn new(min_number_block: u64) -> Self {
        Shared {
            locks: KeyLocks::default(),
            pending: Pending::default(),
            numbers: NumberBlocks::new("alert", min_number_block),
            pace: Pace::never(),
        }
    }

    /// Intake that yields to a notifier that falls behind (see [`super::pace`]).
    pub fn paced(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }

    pub fn pace(&self) -> &Pace {
        &self.pace
    }
}

pub(super) fn event_name(kind: EventKind, outcome: &Outcome, raised: bool) -> &'static str {
    match (kind, outcome) {
        (_, Outcome::Grouped) if raised => "alert.urgency_raised",
        (_, Outcome::Grouped) => "alert.repeated",
        (EventKind::Trigger, _) => "alert.triggered",
        (EventKind::Acknowledge, _) => "alert.acknowledged",
        (EventKind::Resolve, _) => "alert.resolved",
    }
}

impl Intake {
    pub fn new(store: Arc<dyn Store>, outbox: Outbox, config: Arc<Config>, shared: Arc<Shared>) -> Self {
        Intake { alerts: AlertRepo::new(store.clone()), store, outbox, config, shared }
    }

    /// Applies one event on its own (the caller already serialised work on its alert).
    pub(super) async fn apply_one(&self, event: &AlertEvent) -> Result<IntakeResult, IntakeError> {
        let result = self.apply_with_retries(event).await?;
        if let Some(job) = &result.job {
            self.outbox.hand_over(job).await;
        }
        Ok(result.result)
    }

    async fn apply_with_retries(&self, event: &AlertEvent) -> Result<Applied, IntakeError> {
        let backoff = Backoff::CONTENDED_WRITE;
        // A number taken for a new alert is kept across retries, so collisions leave no gaps.
        let mut reserved_id = None;
        for attempt in 0..backoff.attempts {
            if attempt > 0 {
                backoff.wait(attempt).await;
            }
            // A trigger reads its delivery record with everything else it needs (see `trigger`).
            if event.kind != EventKind::Trigger
                && let Some(previous) = self.seen(event).await?
            {
                return Ok(Applied::nothing(IntakeResult { deduplicated: true, ..previous }));
            }
            match self.try_apply(event, &mut reserved_id).await {
                Ok(result) => return Ok(result),
                Err(RepoError::Conflict { what }) => {
                    tracing::debug!(attempt, what, "write collided with another request; retrying");
                }
                Err(RepoError::Store(e)) if e.is_conflict() => {
                    tracing::debug!(attempt, error = %e, "write collided with another request; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IntakeError::Contention(event.alert_id.clone().unwrap_or_else(|| event.dedup_key.clone())))
    }

    /// A click on a card's button. Its signed context already proved which alert and action,
    /// and Mattermost who clicked, so no source scope applies (the event has no source).
    pub async fn act_from_button(
        &self,
        alert_id: &str,
        kind: EventKind,
        actor: crate::domain::Actor,
        at: jiff::Timestamp,
    ) -> Result<IntakeResult, IntakeError> {
        let event = AlertEvent {
            kind,
            source: String::new(),
            dedup_key: String::new(),
            summary: String::new(),
            details: String::new(),
            urgency: Urgency::Low,
            urgency_named: false,
            actor,
            at,
            alert_id: Some(alert_id.to_string()),
            delivery: None,
        };
        self.apply(&event).await
    }

    /// A change people make that is not an event from a source (assigning, snoozing): `change`
    /// is applied to the alert as it is now, with `event` announced, in one conditional write,
    /// retried when another change was first.
    pub async fn change(
        &self,
        alert_id: &str,
        event: &'static str,
        at: jiff::Timestamp,
        change: impl Fn(&mut Alert) -> Result<(), crate::domain::AlertError>,
    ) -> Result<Changed, IntakeError> {
        let backoff = Backoff::CONTENDED_WRITE;
        let changed = {
            let _serial = self.shared.locks.lock(&format!("id\u{0}{alert_id}")).await;
            let mut outcome = None;
            for attempt in 0..backoff.attempts {
                if attempt > 0 {
                    backoff.wait(attempt).await;
                }
                let Some(read) = self.alerts.get(alert_id).await? else { return Ok(Changed::Unknown) };
                let mut alert = read.value.clone();
                if let Err(e) = change(&mut alert) {
                    return Ok(Changed::Refused(e.to_string()));
                }
                let job = Job::Notify(NotifyJob {
                    job_id: format!("{}#{:010}", alert.id, alert.revision),
                    event: event.to_string(),
                    subject: Subject::Alert { id: alert.id.clone() },
                    at,
                });
                let mut writes = vec![self.outbox.write(&job)];
                writes.extend(crate::escalation::timers::schedule(&alert));
                match self.alerts.update(&read, &alert, writes).await {
                    Ok(()) => {
                        outcome = Some((alert, job));
                        break;
                    }
                    Err(RepoError::Conflict { .. }) => continue,
                    Err(RepoError::Store(e)) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            outcome.ok_or_else(|| IntakeError::Contention(alert_id.to_string()))?
        };
        self.outbox.hand_over(&changed.1).await;
        Ok(Changed::Done(Box::new(changed.0)))
    }

    async fn seen(&self, event: &AlertEvent) -> Result<Option<IntakeResult>, RepoError> {
        Ok(self.seen_many(std::slice::from_ref(event)).await?.pop().flatten())
    }

    /// What earlier deliveries of these events were answered (`None` for a first delivery or
    /// an event without a delivery key), in one read.
    async fn seen_many(&self, events: &[AlertEvent]) -> Result<Vec<Option<IntakeResult>>, RepoError> {
        let keys = delivery::keys(events);
        let found = if keys.is_empty() { Vec::new() } else { self.store.get_many(&keys).await? };
        delivery::answered(events, found.into_iter())
    }

    /// One batch read of the item under `key` (the open-alert index) together with what earlier
    /// deliveries of `events` were answered: a trigger's, or a run of repeats', first round trip.
    pub(super) async fn read_with_deliveries(
        &self,
        key: (String, String),
        events: &[AlertEvent],
    ) -> Result<(Option<Item>, Vec<Option<IntakeResult>>), RepoError> {
        let mut keys = vec![key];
        keys.extend(delivery::keys(events));
        let mut found = self.store.get_many(&keys).await?.into_iter();
        let item = found.next().flatten();
        Ok((item, delivery::answered(events, found)?))
    }

    async fn try_apply(&self, event: &AlertEvent, reserved_id: &mut Option<String>) -> Result<Applied, RepoError> {
        match event.kind {
            EventKind::Trigger => self.trigger(event, reserved_id).await,
            EventKind::Acknowledge | EventKind::Resolve => self.act(event).await,
        }
    }

    /// A trigger reads what it needs, decides ([`Intake::decide_trigger`]) and writes. Where the
    /// store can do all three as one step ([`Store::decide_and_write`]: the embedded store, on
    /// its writer) it does ([`Intake::trigger_in_place`]); otherwise
    /// ([`Intake::trigger_by_round_trips`]) it reads everything it may need in one round trip
    /// and then writes under conditions.
    async fn trigger(&self, event: &AlertEvent, reserved_id: &mut Option<String>) -> Result<Applied, RepoError> {
        if !self.store.decides_where_it_writes() {
            return self.trigger_by_round_trips(event, reserved_id).await;
        }
        let outcome = self.trigger_in_place(event, reserved_id).await;
        // A number that no new alert took, for a request that was answered (a repeat, a
        // redelivery), goes back, so that the next alert takes it and no gap is left. After a
        // failure it stays reserved for the retry, as on the round-trip path: whether a failed
        // write committed is not always known, and a number must never be handed out twice.
        if let Ok(applied) = &outcome
            && applied.result.alert_id != *reserved_id
            && let Some(n) = reserved_id.take().as_deref().and_then(AlertRepo::number_in)
        {
            self.shared.numbers.give_back(n).await;
        }
        outcome
    }

    /// [`Intake::trigger`] as one job on the store's writer. The writer is the one serial path
    /// of a storm, so the likeliest outcome (a new alert: nothing open for its key, no earlier
    /// delivery, no maintenance window started from chat) is worked out here beforehand, with a
    /// number taken for it (given back by [`Intake::trigger`] if unused); the writer then only
    /// reads, and uses it if the reads bear it out.
    async fn trigger_in_place(
        &self,
        event: &AlertEvent,
        reserved_id: &mut Option<String>,
    ) -> Result<Applied, RepoError> {
        let id = match reserved_id {
            Some(id) => id.clone(),
            None => reserved_id.insert(self.alerts.next_id(&self.shared.numbers).await?).clone(),
        };
        let mut likely = match self.decide_trigger(event, &TriggerReads::default(), Some(&id))? {
            plan @ TriggerPlan::Write { .. } => Some(plan.into_writes()?),
            _ => None,
        };
        // Here too, not on the writer: a delivery record's key is a hash.
        let keys = TriggerReads::keys(event);
        let intake = self.clone();
        let this = event.clone();
        let decide: Decide = Box::new(move |store: &dyn ReadNow| {
            let done = match TriggerReads::now(store, &this, &keys) {
                Ok(reads) => match likely.take() {
                    Some(done) if reads.is_empty() => Ok(done),
                    _ => intake.decide_trigger(&this, &reads, Some(&id)).and_then(TriggerPlan::into_writes),
                },
                Err(RepoError::Store(e)) => return Err(e),
                Err(e) => Err(e),
            };
            let (writes, answer) = match done {
                Ok((writes, applied)) => (writes, Ok(applied)),
                Err(e) => (Vec::new(), Err(e)),
            };
            Ok(Decided { writes, answer: Box::new(answer) })
        });
        let answer = self
            .store
            .decide_and_write(decide)
            .await
            .map_err(|e| AlertRepo::create_failed(&event.source, &event.dedup_key, e))?;
        match answer.downcast::<Result<Applied, RepoError>>() {
            Ok(answer) => *answer,
            Err(_) => Err(RepoError::Store(crate::store::StoreError::Backend {
                backend: "store",
                message: "a trigger's decision on the writer came back as something else; this is a bug in Klaxon"
                    .into(),
            })),
        }
    }

    /// A trigger over round trips. The first asks for everything it may need at once: its
    /// delivery record, the open-alert index and the maintenance windows started from chat (a
    /// batch read beside a query on DynamoDB), and, where numbers come in blocks ahead of need,
    /// a new block. A new alert then needs only its transaction and its hand-over to the queue.
    async fn trigger_by_round_trips(
        &self,
        event: &AlertEvent,
        reserved_id: &mut Option<String>,
    ) -> Result<Applied, RepoError> {
        let events = std::slice::from_ref(event);
        let numbers = async {
            match self.shared.numbers.prefetches() && reserved_id.is_none() {
                true => self.shared.numbers.refill_if_empty(self.store.as_ref()).await,
                false => Ok(()),
            }
        };
        let keys = TriggerReads::keys(event);
        let (found, refilled) = tokio::join!(self.store.get_many_and_page(&keys, &MaintenanceRepo::STARTED), numbers);
        let (items, started) = found?;
        let mut items = items.into_iter();
        let pointer = items.next().flatten();
        if let Some(previous) = delivery::answered(events, items)?.into_iter().next().flatten() {
            return Ok(Applied::nothing(IntakeResult { deduplicated: true, ..previous }));
        }
        refilled?;
        let alert = match &pointer {
            Some(p) => {
                let (pk, sk) = AlertRepo::pointed_at(p);
                self.store.get(&pk, &sk).await?
            }
            None => None,
        };
        let reads = TriggerReads { pointer, alert, answered: None, started };
        loop {
            match self.decide_trigger(event, &reads, reserved_id.as_deref())? {
                TriggerPlan::Answered(result) => return Ok(Applied::nothing(result)),
                TriggerPlan::NeedsNumber => *reserved_id = Some(self.alerts.next_id(&self.shared.numbers).await?),
                TriggerPlan::Write { change, applied } => {
                    match *change {
                        Change::Create { alert, index_version, extra } => {
                            self.alerts.create(&alert, index_version, extra).await?
                        }
                        Change::Repeat { read, alert, extra } => self.alerts.update(&read, &alert, extra).await?,
                    }
                    return Ok(applied);
                }
            }
        }
    }

    /// What a trigger does, given what it read and the id a new alert would take (`None`: none
    /// taken yet). Reads nothing and writes nothing: it runs wherever the reads were made.
    fn decide_trigger(
        &self,
        event: &AlertEvent,
        reads: &TriggerReads,
        id: Option<&str>,
    ) -> Result<TriggerPlan, RepoError> {
        if let Some(previous) = &reads.answered {
            return Ok(TriggerPlan::Answered(IntakeResult { deduplicated: true, ..previous.clone() }));
        }
        let open = AlertRepo::open_lookup(reads.pointer.clone(), reads.alert.clone())?;
        let window = self.config.source(&event.source).map(|s| s.grouping_window()).unwrap_or_default();
        if let Some(read) = open.alert {
            let since = event.at.duration_since(read.value.last_occurrence());
            if since <= jiff::SignedDuration::try_from(window).unwrap_or_default() {
                let mut alert = read.value.clone();
                if alert.repeat(event.actor.clone(), event.at).is_ok() {
                    let before = alert.urgency;
                    let raised =
                        event.urgency_named && alert.raise_urgency(event.urgency, event.actor.clone(), event.at);
                    let mut result = IntakeResult::about(Outcome::Grouped, &alert, true);
                    result.raised_from = raised.then_some(before);
                    let (job, extra) = self.extra_writes(event, &alert, &result);
                    let applied = Applied { result, job: Some(job) };
                    let change = Box::new(Change::Repeat { read: Box::new(read), alert, extra });
                    return Ok(TriggerPlan::Write { change, applied });
                }
            }
        }
        // No open alert, or the last occurrence is older than the window: a new episode. It
        // takes over the key; an older alert that is still open stays open on its own.
        let Some(id) = id else { return Ok(TriggerPlan::NeedsNumber) };
        let new = NewAlert {
            id: id.to_string(),
            source: event.source.clone(),
            dedup_key: event.dedup_key.clone(),
            summary: event.summary.clone(),
            details: event.details.clone(),
            urgency: event.urgency,
        };
        let mut alert = Alert::trigger(new, event.actor.clone(), event.at);
        // In a maintenance window the alert is recorded (and grouped) but neither posted nor
        // escalated until the window ends.
        let started = MaintenanceRepo::started_in(&reads.started)?;
        let window = crate::escalation::windows::holding(&self.config, started, &event.source, event.at);
        if let Some(w) = &window {
            alert.held = Some(w.key());
        } else if let Some(e) = crate::escalation::policy::start(&self.config, &event.source, event.at) {
            alert.start_escalation(e);
        }
        let result = IntakeResult::about(Outcome::Created, &alert, false);
        let (job, mut extra) = self.extra_writes(event, &alert, &result);
        extra.extend(crate::escalation::timers::schedule(&alert));
        if let Some(w) = &window {
            extra.push(crate::repo::maintenance::MaintenanceRepo::hold(w, &alert.id, &alert.source));
        }
        let applied = Applied { result, job: Some(job) };
        let change = Box::new(Change::Create { alert, index_version: open.index_version, extra });
        Ok(TriggerPlan::Write { change, applied })
    }

    async fn act(&self, event: &AlertEvent) -> Result<Applied, RepoError> {
        let read: Versioned<Alert> = match &event.alert_id {
            Some(id) => match self.alerts.get(id).await? {
                Some(a) => a,
                None => {
                    return Ok(Applied::nothing(IntakeResult {
                        alert_id: Some(id.clone()),
                        ..IntakeResult::nothing(Outcome::UnknownAlert)
                    }));
                }
            },
            None => match self.alerts.find_open(&event.source, &event.dedup_key).await?.alert {
                Some(a) => a,
                None => return Ok(Applied::nothing(IntakeResult::nothing(Outcome::NoOpenAlert))),
            },
        };
        // An event without a source is a card button's, authorised by its signature.
        if !event.source.is_empty() && !self.may_act_on(&event.source, &read.value.source) {
            let reason = format!(
                "source `{}` may not act on {} (raised by source `{}`); an admin can add it to `act_on` of source `{}` in klaxon.toml",
                event.source, read.value.id, read.value.source, event.source
            );
            return Ok(Applied::nothing(IntakeResult::about(Outcome::NotAllowed { reason }, &read.value, false)));
        }
        let mut alert = read.value.clone();
        let (applied, outcome) = match event.kind {
            EventKind::Acknowledge => (alert.acknowledge(event.actor.clone(), event.at), Outcome::Acknowledged),
            _ => (alert.resolve(event.actor.clone(), event.at), Outcome::Resolved),
        };
        if let Err(refused) = applied {
            let refused = Outcome::Refused { reason: refused.to_string() };
            return Ok(Applied::nothing(IntakeResult::about(refused, &read.value, false)));
        }
        let result = IntakeResult::about(outcome, &alert, false);
        let (job, extra) = self.extra_writes(event, &alert, &result);
        self.alerts.update(&read, &alert, extra).await?;
        Ok(Applied { result, job: Some(job) })
    }

    /// Whether a source may acknowledge or resolve alerts that `owner` raised: its own always,
    /// others only when its `act_on` lists them. An `insecure` source (no token) never acts.
    fn may_act_on(&self, actor: &str, owner: &str) -> bool {
        self.config.source(actor).is_some_and(|s| s.may_act_on(owner))
    }

    /// The job announcing this change, and the writes that carry it and the delivery's "seen"
    /// record.
    fn extra_writes(&self, event: &AlertEvent, alert: &Alert, result: &IntakeResult) -> (Job, Vec<Write>) {
        let job = Job::Notify(NotifyJob {
            job_id: format!("{}#{:010}", alert.id, alert.revision),
            event: event_name(event.kind, &result.outcome, result.raised_from.is_some()).to_string(),
            subject: Subject::Alert { id: alert.id.clone() },
            at: event.at,
        });
        let mut writes = vec![self.outbox.write(&job)];
        writes.extend(delivery::record(event, result));
        (job, writes)
    }
}
