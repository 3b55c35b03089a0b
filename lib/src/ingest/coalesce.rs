//! Applies concurrent requests about one alert together.
//!
//! In a storm, dozens of senders repeat the same alert at once. Applied one by one, each waits
//! for the previous one's commit (they all change the same item), so one alert would take one
//! commit per request. Instead, requests for one alert key queue here; one task at a time (the
//! leader) takes everything queued and applies a run of repeats as one change: the alert's
//! count goes up by the run's length, every request gets its own answer (its own occurrence
//! number) and its own delivery record, and the run announces itself with one notification job
//! (the notifier collapses repeats into one card update anyway).
//!
//! Anything that is not a plain repeat (a new alert, an acknowledgement, a chat action, a
//! repeat outside the grouping window) is applied on its own, in arrival order.
//!
//! The leader runs in its own task, so a sender that hangs up does not strand the requests it
//! was carrying; it runs each round under the earliest deadline of the requests in it.

use super::AlertEvent;
use super::EventKind;
use super::apply::{Intake, IntakeError, IntakeResult, Outcome, event_name};
use super::delivery::{self, KEYS_PER_DELIVERY};
use crate::backoff::Backoff;
use crate::embedded::{current_deadline, with_deadline_at};
use crate::notify::{Job, NotifyJob, Subject};
use crate::repo::RepoError;
use crate::repo::alerts::AlertRepo;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Most requests applied as one change: each adds a delivery record to the transaction, which
/// holds at most 100 writes (the alert, its index and its job come first), and each adds
/// [`KEYS_PER_DELIVERY`] keys to the run's first read.
const MAX_RUN: usize = 49;
// A run's first read asks for the open-alert index and its delivery records in one batch.
const _: () = assert!(MAX_RUN * KEYS_PER_DELIVERY < crate::store::MAX_BATCH_GET);
const _: () = assert!(MAX_RUN + 3 <= crate::store::MAX_TRANSACTION_WRITES);

type Answer = Result<IntakeResult, IntakeError>;

struct Waiter {
    event: AlertEvent,
    deadline: Option<tokio::time::Instant>,
    reply: oneshot::Sender<Answer>,
}

impl Waiter {
    fn answer(self, answer: Answer) {
        let _ = self.reply.send(answer);
    }
}

/// Requests waiting, per alert key. A key present in the map has a leader working on it.
#[derive(Default)]
pub struct Pending {
    queues: std::sync::Mutex<HashMap<String, Vec<Waiter>>>,
}

impl Pending {
    /// Queues `waiter`; true when no leader works on `key` yet (the caller must start one).
    fn push(&self, key: &str, waiter: Waiter) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        match queues.get_mut(key) {
            Some(queue) => {
                queue.push(waiter);
                false
            }
            None => {
                queues.insert(key.to_string(), vec![waiter]);
                true
            }
        }
    }

    /// Drops everything queued for `key` (each waiter then hears that intake stopped) and
    /// releases the key.
    fn abandon(&self, key: &str) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.remove(key);
    }

    /// Everything queued for `key`; `None` (and the key is released) when nothing is.
    fn take(&self, key: &str) -> Option<Vec<Waiter>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        match queues.get_mut(key) {
            Some(queue) if !queue.is_empty() => Some(std::mem::take(queue)),
            _ => {
                queues.remove(key);
                None
            }
        }
    }
}

fn key_of(event: &AlertEvent) -> String {
    match &event.alert_id {
        Some(id) => format!("id\u{0}{id}"),
        None => format!("key\u{0}{}\u{0}{}", event.source, event.dedup_key),
    }
}

/// A trigger that may be a repeat of the open alert for its key.
fn may_repeat(event: &AlertEvent) -> bool {
    event.kind == EventKind::Trigger && event.alert_id.is_none()
}

impl Intake {
    /// Applies one event. Work on one alert is serialised inside this process (and concurrent
    /// repeats applied together); a collision with another process (a conditional write that
    /// lost, DynamoDB's `TransactionConflict`) is retried after a jittered pause, so contention
    /// never reaches the caller as an error unless it lasts through every attempt.
    pub async fn apply(&self, event: &AlertEvent) -> Result<IntakeResult, IntakeError> {
        self.shared.pace.wait().await;
        let event = event.clone().bounded();
        let key = key_of(&event);
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter { event, deadline: current_deadline(), reply };
        if self.shared.pending.push(&key, waiter) {
            let leader = self.clone();
            // Boxed: the leader's future is about 6.5 KB, which tokio would otherwise copy into
            // its task on every spawn and again when the task finishes (perf, 64 senders: memcpy
            // 5.1 and 4.6 % of a storm's CPU samples before, 4.1 and 4.2 % after).
            tokio::spawn(Box::pin(async move { leader.lead(key).await }));
        }
        answer.await.unwrap_or(Err(IntakeError::Stopped))
    }

    async fn lead(&self, key: String) {
        // Should the leader fail (a panic), the requests still queued are answered with an
        // error (their senders are dropped) and the key is freed for the next request.
        struct Abandon<'a>(&'a Pending, &'a str);
        impl Drop for Abandon<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.abandon(self.1);
                }
            }
        }
        let _guard = Abandon(&self.shared.pending, &key);
        while let Some(batch) = self.shared.pending.take(&key) {
            let deadline = batch.iter().filter_map(|w| w.deadline).min();
            match deadline {
                Some(at) => with_deadline_at(at, self.apply_batch(batch)).await,
                None => self.apply_batch(batch).await,
            }
        }
    }

    /// Applies a batch in order: runs of repeats together, everything else on its own.
    async fn apply_batch(&self, batch: Vec<Waiter>) {
        let mut rest = std::collections::VecDeque::from(batch);
        while let Some(first) = rest.pop_front() {
            let run_len = if may_repeat(&first.event) {
                rest.iter().take(MAX_RUN - 1).take_while(|w| may_repeat(&w.event)).count()
            } else {
                0
            };
            if run_len == 0 {
                let answer = self.apply_one(&first.event).await;
                first.answer(answer);
                continue;
            }
            let mut run = vec![first];
            run.extend(rest.drain(..run_len));
            // What the run could not apply as repeats (the first needs a new alert, say) goes
            // back to the front, in order; its first request is then applied on its own.
            let left = self.repeat_run(run).await;
            let mut left = left.into_iter();
            if let Some(head) = left.next() {
                let answer = self.apply_one(&head.event).await;
                head.answer(answer);
            }
            for w in left.rev() {
                rest.push_front(w);
            }
        }
    }

    /// Applies the leading repeats of `run` to the open alert as one change and answers them;
    /// returns the requests it did not apply (from the first that is not a repeat within the
    /// grouping window), in order.
    async fn repeat_run(&self, run: Vec<Waiter>) -> Vec<Waiter> {
        let backoff = Backoff::CONTENDED_WRITE;
        let events: Vec<AlertEvent> = run.iter().map(|w| w.event.clone()).collect();
        let mut outcome = Err(IntakeError::Contention(events[0].dedup_key.clone()));
        for attempt in 0..backoff.attempts {
            if attempt > 0 {
                backoff.wait(attempt).await;
            }
            match self.try_repeat_run(&events).await {
                Err(RepoError::Conflict { .. }) => continue,
                Err(RepoError::Store(e)) if e.is_conflict() => continue,
                Err(e) => {
                    outcome = Err(IntakeError::Store(e));
                    break;
                }
                Ok(done) => {
                    outcome = Ok(done);
                    break;
                }
            }
        }
        match outcome {
            Err(e) => {
                for w in run {
                    w.answer(Err(e.for_each_request()));
                }
                Vec::new()
            }
            Ok((answers, job)) => {
                if let Some(job) = &job {
                    self.outbox.hand_over(job).await;
                }
                // Not `zip`: it would take (and drop, unanswered) the first request after the
                // answers run out.
                let mut run = run.into_iter();
                for answer in answers {
                    if let Some(w) = run.next() {
                        w.answer(Ok(answer));
                    }
                }
                run.collect()
            }
        }
    }

    /// One attempt: the answers of the leading events it applied (or found already applied),
    /// and the job of the change, if it wrote one.
    async fn try_repeat_run(&self, events: &[AlertEvent]) -> Result<(Vec<IntakeResult>, Option<Job>), RepoError> {
        let first = &events[0];
        let open_key = AlertRepo::open_key(&first.source, &first.dedup_key);
        let (pointer, seen) = self.read_with_deliveries(open_key, events).await?;
        let open = self.alerts.resolve_open(pointer).await?;
        let Some(read) = open.alert else { return Ok((Vec::new(), None)) };
        let window = self.config.source(&first.source).map(|s| s.grouping_window()).unwrap_or_default();
        let window = jiff::SignedDuration::try_from(window).unwrap_or_default();
        let mut alert = read.value.clone();
        let mut answers: Vec<IntakeResult> = Vec::new();
        let mut in_run: HashMap<&str, IntakeResult> = HashMap::new();
        let mut writes = Vec::new();
        let mut raised = false;
        for (event, seen) in events.iter().zip(seen) {
            if let Some(previous) = seen {
                answers.push(IntakeResult { deduplicated: true, ..previous });
                continue;
            }
            let delivery = event.delivery.as_ref().map(|d| d.key.as_str());
            if let Some(previous) = delivery.and_then(|k| in_run.get(k)) {
                answers.push(IntakeResult { deduplicated: true, ..previous.clone() });
                continue;
            }
            if event.at.duration_since(alert.last_occurrence()) > window {
                break;
            }
            let mut next = alert.clone();
            if next.repeat(event.actor.clone(), event.at).is_err() {
                break;
            }
            let before = next.urgency;
            let raised_now = event.urgency_named && next.raise_urgency(event.urgency, event.actor.clone(), event.at);
            raised |= raised_now;
            let mut result = IntakeResult::about(Outcome::Grouped, &next, true);
            result.raised_from = raised_now.then_some(before);
            writes.extend(delivery::record(event, &result));
            if let Some(k) = delivery {
                in_run.insert(k, result.clone());
            }
            answers.push(result);
            alert = next;
        }
        if alert.revision == read.value.revision {
            // Nothing new to write: every answer came from an earlier delivery.
            return Ok((answers, None));
        }
        let job = Job::Notify(NotifyJob {
            job_id: format!("{}#{:010}", alert.id, alert.revision),
            event: event_name(EventKind::Trigger, &Outcome::Grouped, raised).to_string(),
            subject: Subject::Alert { id: alert.id.clone() },
            at: alert.last_occurrence(),
        });
        writes.insert(0, self.outbox.write(&job));
        self.alerts.update(&read, &alert, writes).await?;
        Ok((answers, Some(job)))
    }
}
