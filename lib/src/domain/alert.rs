//! The alert lifecycle: open → acknowledged → resolved (open → resolved directly too).
//!
//! A repeated trigger for an open or acknowledged alert raises its occurrence count instead of
//! opening a second alert; a resolved alert is closed for good, and the next trigger opens a new one.

use super::timeline::{Actor, TimelineEntry};
use super::urgency::Urgency;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// The actions that are legal from this status.
    pub fn allowed(self) -> &'static [AlertAction] {
        match self {
            AlertStatus::Open => &[AlertAction::Repeat, AlertAction::Acknowledge, AlertAction::Resolve],
            AlertStatus::Acknowledged => &[AlertAction::Repeat, AlertAction::Resolve],
            AlertStatus::Resolved => &[],
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    Repeat,
    Acknowledge,
    Resolve,
}

impl AlertAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Repeat => "repeat",
            AlertAction::Acknowledge => "acknowledge",
            AlertAction::Resolve => "resolve",
        }
    }
}

impl fmt::Display for AlertAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition that the alert's current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("cannot {action} alert {alert_id}: it is {status}{by}; {allowed}", by = by_suffix(.by), allowed = allowed_text(.status))]
    InvalidTransition { alert_id: String, action: AlertAction, status: AlertStatus, by: Option<Actor> },
    /// Assigning needs an alert that is not resolved; snoozing one that is open.
    #[error("cannot {what} alert {alert_id}: it is {status}")]
    NotNow { alert_id: String, what: &'static str, status: AlertStatus },
}

fn by_suffix(by: &Option<Actor>) -> String {
    by.as_ref().map(|a| format!(" (by {a})")).unwrap_or_default()
}

fn allowed_text(status: &AlertStatus) -> String {
    let allowed = status.allowed();
    if allowed.is_empty() {
        "a resolved alert is closed; a new trigger opens a new alert".to_string()
    } else {
        let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
        format!("allowed now: {}", names.join(", "))
    }
}

/// What a source says when it triggers a new alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    pub id: String,
    pub source: String,
    pub dedup_key: String,
    pub summary: String,
    pub details: String,
    pub urgency: Urgency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub source: String,
    pub dedup_key: String,
    pub summary: String,
    pub details: String,
    pub urgency: Urgency,
    pub status: AlertStatus,
    /// How many times the source reported it: 1 on creation, +1 per grouped repeat.
    pub occurrences: u32,
    /// 1 on creation, +1 per change of any kind (repeats included): orders and names the
    /// notifications an alert produces.
    #[serde(default)]
    pub revision: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<Actor>,
    /// Where its escalation policy stands, when its source names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// The maintenance window (occurrence key) it arrived in: recorded, not posted or escalated
    /// until the window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    pub timeline: Vec<TimelineEntry>,
}

/// An alert's place in its escalation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub policy: String,
    /// 1-based level (step) now assigned.
    pub level: u32,
    /// How many levels the policy has.
    pub levels: u32,
    /// 0 on the first pass through the levels, +1 per repeat.
    pub round: u32,
    /// Who is assigned now (`@bob`, `@sre-leads`).
    pub assignees: Vec<String>,
    /// When the next check is due, while escalation runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Timestamp>,
    /// +1 per change of the escalation: a timer carries the number it was set for, so a stale or
    /// duplicate timer does nothing.
    pub seq: u64,
    /// Every level and repeat has passed without an acknowledgement.
    #[serde(default)]
    pub exhausted: bool,
    /// Escalation pauses until then (the due timer then brings the alert back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snoozed_until: Option<Timestamp>,
    /// Someone assigned the alert by hand: automatic escalation stopped.
    #[serde(default)]
    pub manual: bool,
}

impl Escalation {
    /// Whether a timer set for `seq` may act on this alert now.
    pub fn timer_applies(&self, seq: u64) -> bool {
        self.seq == seq && self.due.is_some() && (!self.exhausted || self.snoozed_until.is_some())
    }

    /// Whether escalation continues by itself after a snooze.
    pub fn runs(&self) -> bool {
        !self.manual && !self.exhausted && self.levels > 0
    }

    fn empty() -> Escalation {
        Escalation {
            policy: String::new(),
            level: 0,
            levels: 0,
            round: 0,
            assignees: Vec::new(),
            due: None,
            seq: 0,
            exhausted: false,
            snoozed_until: None,
            manual: false,
        }
    }
}

impl Alert {
    pub fn trigger(new: NewAlert, actor: Actor, at: Timestamp) -> Alert {
        Alert {
            id: new.id,
            source: new.source,
            dedup_key: new.dedup_key,
            summary: new.summary,
            details: new.details,
            urgency: new.urgency,
            status: AlertStatus::Open,
            occurrences: 1,
            revision: 1,
            created_at: at,
            updated_at: at,
            acknowledged_by: None,
            resolved_by: None,
            escalation: None,
            held: None,
            timeline: vec![TimelineEntry::new(at, actor, "triggered")],
        }
    }

    /// Starts escalation on a new alert: level 1 assigned, the first check due. Part of the
    /// trigger (no change of its own), so it is announced with the card.
    pub fn start_escalation(&mut self, mut e: Escalation) {
        e.seq = 1;
        let note = format!("level 1 of {}: {}", e.levels, e.assignees.join(", "));
        let at = self.created_at;
        self.escalation = Some(e);
        self.timeline.push(TimelineEntry { note: Some(note), ..TimelineEntry::new(at, Actor::System, "assigned") });
    }

    /// The maintenance window it arrived in has ended: it is posted (and escalated) from now.
    pub fn release(&mut self, escalation: Option<Escalation>, at: Timestamp) {
        self.held = None;
        self.record(Actor::System, at, "released");
        if let Some(mut e) = escalation.filter(|_| self.status == AlertStatus::Open) {
            e.seq = 1;
            self.escalation = Some(e);
        }
    }

    /// Assigns the alert by hand to `to` (`@bob`): automatic escalation stops. Allowed until it
    /// is resolved.
    pub fn assign(&mut self, to: &str, actor: Actor, at: Timestamp) -> Result<(), AlertError> {
        if self.is_closed() {
            return Err(AlertError::NotNow { alert_id: self.id.clone(), what: "assign", status: self.status });
        }
        let e = self.escalation.get_or_insert_with(Escalation::empty);
        let before = if e.assignees.is_empty() { "nobody".to_string() } else { e.assignees.join(", ") };
        e.seq += 1;
        e.assignees = vec![to.to_string()];
        e.manual = true;
        e.due = None;
        e.snoozed_until = None;
        self.record(actor, at, "assigned");
        if let Some(last) = self.timeline.last_mut() {
            last.note = Some(format!("{before} → {to}"));
        }
        Ok(())
    }

    /// Pauses escalation until `until`. Only an open alert (an acknowledged one does not
    /// escalate).
    pub fn snooze(&mut self, until: Timestamp, actor: Actor, at: Timestamp) -> Result<(), AlertError> {
        if self.status != AlertStatus::Open {
            return Err(AlertError::NotNow { alert_id: self.id.clone(), what: "snooze", status: self.status });
        }
        let e = self.escalation.get_or_insert_with(Escalation::empty);
        e.seq += 1;
        e.snoozed_until = Some(until);
        e.due = Some(until);
        self.record(actor, at, "snoozed");
        if let Some(last) = self.timeline.last_mut() {
            last.note = Some(format!("until {}", until.strftime("%Y-%m-%d %H:%M UTC")));
        }
        Ok(())
    }

    /// The snooze is over: the alert is back, and escalation (if it runs) resumes with its next
    /// check at `next_due`.
    pub fn end_snooze(&mut self, next_due: Option<Timestamp>, at: Timestamp) {
        let Some(e) = self.escalation.as_mut() else { return };
        e.seq += 1;
        e.snoozed_until = None;
        e.due = next_due.filter(|_| e.runs());
        self.record(Actor::System, at, "snooze_ended");
    }

    /// A check found the alert unacknowledged: the next level is assigned (`Some`), or the
    /// policy is exhausted (`None`). Only while the alert is open.
    pub fn escalate(&mut self, next: Option<(u32, u32, Vec<String>, Timestamp)>, at: Timestamp) -> bool {
        if self.status != AlertStatus::Open {
            return false;
        }
        let Some(e) = self.escalation.as_mut().filter(|e| e.runs()) else { return false };
        e.seq += 1;
        let (what, note) = match next {
            Some((level, round, assignees, due)) => {
                let note = format!("level {level} of {}: {}", e.levels, assignees.join(", "));
                (e.level, e.round, e.assignees, e.due) = (level, round, assignees, Some(due));
                ("escalated", note)
            }
            None => {
                e.due = None;
                e.exhausted = true;
                ("escalation_exhausted", format!("no acknowledgement after {} level(s)", e.levels))
            }
        };
        self.record(Actor::System, at, what);
        if let Some(last) = self.timeline.last_mut() {
            last.note = Some(note);
        }
        true
    }

    /// When the source last reported it (creation or the latest grouped repeat).
    pub fn last_occurrence(&self) -> Timestamp {
        self.timeline
            .iter()
            .rev()
            .find(|e| e.what == "triggered" || e.what == "repeated")
            .map_or(self.created_at, |e| e.at)
    }

    pub fn is_closed(&self) -> bool {
        self.status == AlertStatus::Resolved
    }

    /// The source reported the same problem again: count it, keep one alert. Consecutive
    /// repeats share one timeline entry (its time and note follow the latest), so a device that
    /// reports every minute for a week does not grow its alert without bound.
    pub fn repeat(&mut self, actor: Actor, at: Timestamp) -> Result<(), AlertError> {
        self.check(AlertAction::Repeat)?;
        self.occurrences = self.occurrences.saturating_add(1);
        if self.timeline.last().is_some_and(|e| e.what == "repeated") {
            self.timeline.pop();
        }
        self.record(actor, at, "repeated");
        if let Some(last) = self.timeline.last_mut() {
            last.note = Some(format!("{} occurrences", self.occurrences));
        }
        Ok(())
    }

    /// Raises the urgency when `to` is higher (never lowers it), recording who raised it.
    /// Returns whether it changed.
    pub fn raise_urgency(&mut self, to: Urgency, actor: Actor, at: Timestamp) -> bool {
        if to <= self.urgency || self.is_closed() {
            return false;
        }
        let from = self.urgency;
        self.urgency = to;
        self.record(actor, at, "urgency_raised");
        if let Some(last) = self.timeline.last_mut() {
            last.note = Some(format!("{from} → {to}"));
        }
        true
    }

    pub fn acknowledge(&mut self, actor: Actor, at: Timestamp) -> Result<(), AlertError> {
        self.check(AlertAction::Acknowledge)?;
        self.status = AlertStatus::Acknowledged;
        self.acknowledged_by = Some(actor.clone());
        self.record(actor, at, "acknowledged");
        Ok(())
    }

    pub fn resolve(&mut self, actor: Actor, at: Timestamp) -> Result<(), AlertError> {
        self.check(AlertAction::Resolve)?;
        self.status = AlertStatus::Resolved;
        self.resolved_by = Some(actor.clone());
        self.record(actor, at, "resolved");
        Ok(())
    }

    pub fn apply(&mut self, action: AlertAction, actor: Actor, at: Timestamp) -> Result<(), AlertError> {
        match action {
            AlertAction::Repeat => self.repeat(actor, at),
            AlertAction::Acknowledge => self.acknowledge(actor, at),
            AlertAction::Resolve => self.resolve(actor, at),
        }
    }

    fn check(&self, action: AlertAction) -> Result<(), AlertError> {
        if self.status.allowed().contains(&action) {
            return Ok(());
        }
        let by = match self.status {
            AlertStatus::Open => None,
            AlertStatus::Acknowledged => self.acknowledged_by.clone(),
            AlertStatus::Resolved => self.resolved_by.clone(),
        };
        Err(AlertError::InvalidTransition { alert_id: self.id.clone(), action, status: self.status, by })
    }

    fn record(&mut self, actor: Actor, at: Timestamp, what: &str) {
        // Clocks on different Lambdas may disagree slightly; never let time run backwards.
        let at = at.max(self.updated_at);
        self.updated_at = at;
        self.revision += 1;
        self.timeline.push(TimelineEntry::new(at, actor, what));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urgency_is_raised_never_lowered_and_the_raiser_is_recorded() {
        let at = Timestamp::from_second(1_795_435_200).unwrap();
        let new = NewAlert {
            id: "ALR-1".into(),
            source: "chat".into(),
            dedup_key: "k".into(),
            summary: "s".into(),
            details: String::new(),
            urgency: Urgency::Medium,
        };
        let mut a = Alert::trigger(new, Actor::source("chat"), at);
        assert!(!a.raise_urgency(Urgency::Low, Actor::user("u1", "bob"), at));
        assert!(!a.raise_urgency(Urgency::Medium, Actor::user("u1", "bob"), at));
        assert_eq!((a.urgency, a.revision), (Urgency::Medium, 1), "nothing changed");
        assert!(a.raise_urgency(Urgency::Critical, Actor::user("u1", "bob"), at));
        let last = a.timeline.last().unwrap();
        assert_eq!((last.what.as_str(), last.note.as_deref()), ("urgency_raised", Some("medium → critical")));
        assert_eq!(last.actor, Actor::user("u1", "bob"));
        a.resolve(Actor::System, at).unwrap();
        assert!(!a.raise_urgency(Urgency::Critical, Actor::System, at), "a resolved alert stays as it was");
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid test timestamp")
    }

    fn new_alert() -> Alert {
        Alert::trigger(
            NewAlert {
                id: "ALR-1".into(),
                source: "freezer".into(),
                dedup_key: "dev1:temp".into(),
                summary: "Freezer warm".into(),
                details: String::new(),
                urgency: Urgency::High,
            },
            Actor::source("freezer"),
            t(0),
        )
    }

    #[test]
    fn a_new_alert_is_open_with_one_occurrence_and_a_triggered_entry() {
        let a = new_alert();
        assert_eq!(a.status, AlertStatus::Open);
        assert_eq!(a.occurrences, 1);
        assert_eq!(a.timeline.len(), 1);
        assert_eq!(a.timeline[0].what, "triggered");
    }

    #[test]
    fn acknowledge_then_resolve_records_who_and_when() {
        let mut a = new_alert();
        a.acknowledge(Actor::user("u1", "alice"), t(10)).unwrap();
        a.resolve(Actor::user("u2", "bob"), t(20)).unwrap();
        assert_eq!(a.status, AlertStatus::Resolved);
        assert_eq!(a.acknowledged_by, Some(Actor::user("u1", "alice")));
        assert_eq!(a.resolved_by, Some(Actor::user("u2", "bob")));
        let whats: Vec<_> = a.timeline.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats, ["triggered", "acknowledged", "resolved"]);
        assert_eq!(a.updated_at, t(20));
    }

    #[test]
    fn second_acknowledge_says_who_was_first_and_what_is_allowed() {
        let mut a = new_alert();
        a.acknowledge(Actor::user("u1", "alice"), t(1)).unwrap();
        let before = a.clone();
        let err = a.acknowledge(Actor::user("u2", "bob"), t(2)).unwrap_err();
        assert_eq!(a, before, "a refused transition changes nothing");
        let msg = err.to_string();
        assert!(msg.contains("@alice"), "{msg}");
        assert!(msg.contains("allowed now: repeat, resolve"), "{msg}");
    }

    #[test]
    fn resolved_alert_refuses_everything_and_says_a_new_trigger_opens_a_new_alert() {
        let mut a = new_alert();
        a.resolve(Actor::System, t(1)).unwrap();
        for action in [AlertAction::Repeat, AlertAction::Acknowledge, AlertAction::Resolve] {
            let err = a.apply(action, Actor::System, t(2)).unwrap_err();
            assert!(err.to_string().contains("new trigger opens a new alert"), "{err}");
        }
    }

    #[test]
    fn consecutive_repeats_share_one_timeline_entry() {
        let mut a = new_alert();
        for i in 1..=500 {
            a.repeat(Actor::source("freezer"), t(i)).unwrap();
        }
        assert_eq!(a.occurrences, 501);
        assert_eq!(a.revision, 501);
        assert_eq!(a.timeline.len(), 2);
        assert_eq!(a.timeline[1].note.as_deref(), Some("501 occurrences"));
        a.acknowledge(Actor::user("u", "alice"), t(600)).unwrap();
        a.repeat(Actor::source("freezer"), t(601)).unwrap();
        let whats: Vec<_> = a.timeline.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats, ["triggered", "repeated", "acknowledged", "repeated"]);
    }

    #[test]
    fn last_occurrence_follows_repeats_not_acknowledgements() {
        let mut a = new_alert();
        a.repeat(Actor::source("freezer"), t(30)).unwrap();
        a.acknowledge(Actor::user("u", "alice"), t(90)).unwrap();
        assert_eq!(a.last_occurrence(), t(30));
    }

    #[test]
    fn timestamps_never_run_backwards() {
        let mut a = new_alert();
        a.repeat(Actor::source("freezer"), t(-50)).unwrap();
        assert_eq!(a.updated_at, t(0));
        assert!(a.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    }

    fn action() -> impl Strategy<Value = AlertAction> {
        prop_oneof![Just(AlertAction::Repeat), Just(AlertAction::Acknowledge), Just(AlertAction::Resolve)]
    }

    fn rank(s: AlertStatus) -> u8 {
        match s {
            AlertStatus::Open => 0,
            AlertStatus::Acknowledged => 1,
            AlertStatus::Resolved => 2,
        }
    }

    proptest! {
        #[test]
        fn any_action_sequence_keeps_the_lifecycle_invariants(actions in proptest::collection::vec((action(), -5i64..100), 0..40)) {
            let mut a = new_alert();
            let mut accepted = 0usize;
            let mut repeats = 0u32;
            for (act, dt) in actions {
                let before = a.clone();
                match a.apply(act, Actor::System, t(dt)) {
                    Ok(()) => {
                        accepted += 1;
                        if act == AlertAction::Repeat { repeats += 1; }
                        prop_assert!(rank(a.status) >= rank(before.status), "status went backwards");
                        prop_assert!(before.status.allowed().contains(&act));
                    }
                    Err(AlertError::InvalidTransition { status, action, .. }) => {
                        prop_assert_eq!(&a, &before, "refused transition changed the alert");
                        prop_assert_eq!(status, before.status);
                        prop_assert_eq!(action, act);
                        prop_assert!(!before.status.allowed().contains(&act));
                    }
                    Err(e @ AlertError::NotNow { .. }) => prop_assert!(false, "apply never answers {e}"),
                }
            }
            prop_assert_eq!(a.revision, accepted as u64 + 1, "every accepted change is one revision");
            prop_assert_eq!(a.occurrences, 1 + repeats);
            let non_repeats = accepted - repeats as usize;
            prop_assert!(a.timeline.len() <= 2 * non_repeats + 2, "repeats collapse: {} entries", a.timeline.len());
            prop_assert!(a.timeline.windows(2).all(|w| !(w[0].what == "repeated" && w[1].what == "repeated")));
            prop_assert_eq!(a.acknowledged_by.is_some(), a.timeline.iter().any(|e| e.what == "acknowledged"));
            prop_assert_eq!(a.resolved_by.is_some(), a.status == AlertStatus::Resolved);
            prop_assert!(a.timeline.windows(2).all(|w| w[0].at <= w[1].at));
        }

        #[test]
        fn alerts_survive_a_json_round_trip(actions in proptest::collection::vec(action(), 0..6)) {
            let mut a = new_alert();
            for act in actions { let _ = a.apply(act, Actor::user("u", "n"), t(1)); }
            let json = serde_json::to_string(&a).unwrap();
            let back: Alert = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, a);
        }
    }
}
