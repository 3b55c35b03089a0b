//! Escalation timers: due times kept in the table, fired by a sweep.
//!
//! Why not delayed queue messages: SQS delays stop at 900 s, so a 30-minute or 2-day step would
//! need a chain of messages, each hop a chance to lose or double it. A due time in the table is
//! one item (pk `escalation-due`, sk `<due ms>#<alert id>`, sorted by due time), written in the
//! same transaction as the alert change that set it, and a sweep reads the due ones: every 10 s
//! in `klaxon serve`, every minute on AWS (the scheduled tick), the same code on both backends.
//! Each timer carries the escalation's `seq`; a timer fires only if the alert is still open,
//! unacknowledged and at that same `seq`, and its firing (the alert's next level, its
//! notification job, the timer's removal and the next timer) is one conditional write, so a
//! stale, duplicate or concurrently swept timer does nothing. Exactly once in effect.

use super::policy;
use crate::config::Config;
use crate::domain::{Alert, AlertStatus};
use crate::notify::outbox::Outbox;
use crate::notify::{Job, NotifyJob, Subject};
use crate::repo::alerts::AlertRepo;
use crate::repo::{RepoError, decode, encode};
use crate::store::{Condition, Item, Store, Write};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const PK: &str = "escalation-due";
/// Timers handled per sweep at most; the rest wait for the next one.
const PER_SWEEP: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Timer {
    alert_id: String,
    seq: u64,
}

fn sk(due: Timestamp, alert_id: &str) -> String {
    format!("{:013}#{alert_id}", due.as_millisecond().max(0))
}

/// The write that sets the alert's next check (none when escalation is not running).
pub fn schedule(alert: &Alert) -> Option<Write> {
    let e = alert.escalation.as_ref()?;
    let due = e.due.filter(|_| !e.exhausted)?;
    let timer = Timer { alert_id: alert.id.clone(), seq: e.seq };
    Some(Write::Put { item: Item::new(PK, sk(due, &alert.id), encode(&timer)), condition: Condition::None })
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Alerts escalated (or found exhausted).
    pub fired: usize,
    /// Timers that no longer applied (acknowledged, resolved, superseded) and were removed.
    pub stale: usize,
    /// Timers left for the next sweep (a collision with another change of the alert).
    pub deferred: usize,
}

#[derive(Clone)]
pub struct Escalator {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    alerts: AlertRepo,
    outbox: Outbox,
}

impl Escalator {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, outbox: Outbox) -> Self {
        Escalator { config, alerts: AlertRepo::new(store.clone()), store, outbox }
    }

    /// Fires every timer due at `now`.
    pub async fn run_due(&self, now: Timestamp) -> Result<SweepReport, RepoError> {
        let mut report = SweepReport::default();
        let items = self.store.query_prefix(PK, "", Some(PER_SWEEP)).await?;
        let horizon = format!("{:013}$", now.as_millisecond().max(0));
        for item in items.into_iter().take_while(|i| i.sk < horizon) {
            let delete = Write::Delete { pk: PK.into(), sk: item.sk.clone(), condition: Condition::None };
            let timer: Timer = decode(&item, "escalation timer")?.value;
            let Some(read) = self.alerts.get(&timer.alert_id).await? else {
                self.store.transact(vec![delete]).await?;
                report.stale += 1;
                continue;
            };
            let applies = read.value.status == AlertStatus::Open
                && read.value.escalation.as_ref().is_some_and(|e| e.timer_applies(timer.seq));
            if !applies {
                self.store.transact(vec![delete]).await?;
                report.stale += 1;
                continue;
            }
            let mut alert = read.value.clone();
            let snoozed = alert.escalation.as_ref().is_some_and(|e| e.snoozed_until.is_some());
            let event = if snoozed {
                let wait = alert.escalation.as_ref().and_then(|e| policy::level_wait(&self.config, e));
                alert.end_snooze(wait.and_then(|w| now.checked_add(w).ok()), now);
                "alert.unsnoozed"
            } else {
                let next = alert.escalation.as_ref().and_then(|e| policy::next(&self.config, e, now));
                if !alert.escalate(next, now) {
                    self.store.transact(vec![delete]).await?;
                    report.stale += 1;
                    continue;
                }
                "alert.escalated"
            };
            let job = Job::Notify(NotifyJob {
                job_id: format!("{}#{:010}", alert.id, alert.revision),
                event: event.into(),
                subject: Subject::Alert { id: alert.id.clone() },
                at: now,
            });
            let mut writes = vec![self.outbox.write(&job), delete];
            writes.extend(schedule(&alert));
            match self.alerts.update(&read, &alert, writes).await {
                Ok(()) => {
                    report.fired += 1;
                    self.outbox.hand_over(&job).await;
                }
                Err(RepoError::Conflict { .. }) => report.deferred += 1,
                Err(RepoError::Store(e)) if e.is_conflict() => report.deferred += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
