//! Applies an [`AlertEvent`] to the alert it belongs to: a new alert, a grouped repeat, an
//! acknowledgement or a resolution. The alert, its notification jobs (through the outbox) and the
//! delivery's "seen" record are one store transaction, so a retried request changes nothing
//! and a failed write leaves nothing behind.

use super::{AlertEvent, EventKind};
use crate::config::Config;
use crate::domain::{Alert, AlertStatus, NewAlert, Urgency};
use crate::notify::outbox::{self, Outbox};
use crate::notify::{Job, NotifyJob, Subject};
use crate::repo::alerts::AlertRepo;
use crate::repo::{RepoError, Versioned, decode, encode};
use crate::store::{Condition, Item, Store, Write};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Optimistic retries when another request changed the same alert at the same moment.
const ATTEMPTS: u32 = 8;

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
}

impl IntakeResult {
    fn about(outcome: Outcome, alert: &Alert, deduplicated: bool) -> Self {
        IntakeResult {
            outcome,
            alert_id: Some(alert.id.clone()),
            status: Some(alert.status),
            urgency: Some(alert.urgency),
            occurrences: alert.occurrences,
            deduplicated,
        }
    }

    fn nothing(outcome: Outcome) -> Self {
        IntakeResult { outcome, alert_id: None, status: None, urgency: None, occurrences: 0, deduplicated: false }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the alert could not be stored ({0}); nothing was recorded, so the request can be retried")]
    Store(#[from] RepoError),
    #[error("alert {0} kept changing under concurrent requests; nothing was recorded, retry")]
    Contention(String),
}

#[derive(Clone)]
pub struct Intake {
    store: Arc<dyn Store>,
    alerts: AlertRepo,
    outbox: Outbox,
    config: Arc<Config>,
}

fn seen_pk(source: &str, key: &str) -> String {
    format!("seen#{source}#{key}")
}

fn event_name(kind: EventKind, outcome: &Outcome) -> &'static str {
    match (kind, outcome) {
        (_, Outcome::Grouped) => "alert.repeated",
        (EventKind::Trigger, _) => "alert.triggered",
        (EventKind::Acknowledge, _) => "alert.acknowledged",
        (EventKind::Resolve, _) => "alert.resolved",
    }
}

impl Intake {
    pub fn new(store: Arc<dyn Store>, outbox: Outbox, config: Arc<Config>) -> Self {
        Intake { alerts: AlertRepo::new(store.clone()), store, outbox, config }
    }

    pub async fn apply(&self, event: &AlertEvent) -> Result<IntakeResult, IntakeError> {
        for _ in 0..ATTEMPTS {
            if let Some(previous) = self.seen(event).await? {
                return Ok(IntakeResult { deduplicated: true, ..previous });
            }
            match self.try_apply(event).await {
                Ok(result) => {
                    if let Some(id) = &result.alert_id {
                        self.relay(id).await;
                    }
                    return Ok(result);
                }
                Err(RepoError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IntakeError::Contention(event.alert_id.clone().unwrap_or_else(|| event.dedup_key.clone())))
    }

    /// Queues the alert's jobs now. If that fails they stay in the outbox for the sweep: the
    /// alert is accepted either way.
    async fn relay(&self, alert_id: &str) {
        if let Err(e) = self.outbox.relay(alert_id).await {
            tracing::warn!(alert_id, error = %e, "could not queue notifications now; the outbox sweep will");
        }
    }

    async fn seen(&self, event: &AlertEvent) -> Result<Option<IntakeResult>, RepoError> {
        let Some(d) = &event.delivery else { return Ok(None) };
        match self.store.get(&seen_pk(&event.source, &d.key), "seen").await? {
            None => Ok(None),
            Some(item) => decode::<IntakeResult>(&item, "delivery record").map(|v| Some(v.value)),
        }
    }

    async fn try_apply(&self, event: &AlertEvent) -> Result<IntakeResult, RepoError> {
        match event.kind {
            EventKind::Trigger => self.trigger(event).await,
            EventKind::Acknowledge | EventKind::Resolve => self.act(event).await,
        }
    }

    async fn trigger(&self, event: &AlertEvent) -> Result<IntakeResult, RepoError> {
        let open = self.alerts.find_open(&event.source, &event.dedup_key).await?;
        let window = self.config.source(&event.source).map(|s| s.grouping_window()).unwrap_or_default();
        if let Some(read) = open.alert {
            let since = event.at.duration_since(read.value.last_occurrence());
            if since <= jiff::SignedDuration::try_from(window).unwrap_or_default() {
                let mut alert = read.value.clone();
                if alert.repeat(event.actor.clone(), event.at).is_ok() {
                    let result = IntakeResult::about(Outcome::Grouped, &alert, true);
                    let extra = self.extra_writes(event, &alert, &result);
                    self.alerts.update(&read, &alert, extra).await?;
                    return Ok(result);
                }
            }
        }
        // No open alert, or the last occurrence is older than the window: a new episode. It
        // takes over the key; an older alert that is still open stays open on its own.
        let new = NewAlert {
            id: self.alerts.next_id().await?,
            source: event.source.clone(),
            dedup_key: event.dedup_key.clone(),
            summary: event.summary.clone(),
            details: event.details.clone(),
            urgency: event.urgency,
        };
        let alert = Alert::trigger(new, event.actor.clone(), event.at);
        let result = IntakeResult::about(Outcome::Created, &alert, false);
        let extra = self.extra_writes(event, &alert, &result);
        self.alerts.create(&alert, open.index_version, extra).await?;
        Ok(result)
    }

    async fn act(&self, event: &AlertEvent) -> Result<IntakeResult, RepoError> {
        let read: Versioned<Alert> = match &event.alert_id {
            Some(id) => match self.alerts.get(id).await? {
                Some(a) => a,
                None => {
                    return Ok(IntakeResult {
                        alert_id: Some(id.clone()),
                        ..IntakeResult::nothing(Outcome::UnknownAlert)
                    });
                }
            },
            None => match self.alerts.find_open(&event.source, &event.dedup_key).await?.alert {
                Some(a) => a,
                None => return Ok(IntakeResult::nothing(Outcome::NoOpenAlert)),
            },
        };
        let mut alert = read.value.clone();
        let (applied, outcome) = match event.kind {
            EventKind::Acknowledge => (alert.acknowledge(event.actor.clone(), event.at), Outcome::Acknowledged),
            _ => (alert.resolve(event.actor.clone(), event.at), Outcome::Resolved),
        };
        if let Err(refused) = applied {
            return Ok(IntakeResult::about(Outcome::Refused { reason: refused.to_string() }, &read.value, false));
        }
        let result = IntakeResult::about(outcome, &alert, false);
        let extra = self.extra_writes(event, &alert, &result);
        self.alerts.update(&read, &alert, extra).await?;
        Ok(result)
    }

    /// The job announcing this change, and the delivery's "seen" record.
    fn extra_writes(&self, event: &AlertEvent, alert: &Alert, result: &IntakeResult) -> Vec<Write> {
        let job = Job::Notify(NotifyJob {
            job_id: format!("{}#{:010}", alert.id, alert.revision),
            event: event_name(event.kind, &result.outcome).to_string(),
            subject: Subject::Alert { id: alert.id.clone() },
            at: event.at,
        });
        let mut writes = vec![outbox::write(&job)];
        if let Some(d) = &event.delivery {
            let item = Item::new(seen_pk(&event.source, &d.key), "seen", encode(result))
                .expiring_at(event.at.as_second() + d.ttl_secs);
            writes.push(Write::Put { item, condition: Condition::Absent });
        }
        writes
    }
}
