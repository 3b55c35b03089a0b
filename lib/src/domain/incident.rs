//! The incident lifecycle, after Rootly's: started → mitigated → resolved, with cancelled
//! (false alarm, duplicate) reachable from started or mitigated. Resolved and cancelled are final.
//!
//! Resolving straight from started is allowed (people often fix before they mitigate); the
//! mitigation time is then set to the resolution time, so `mitigated_at <= resolved_at` holds
//! for every resolved incident.

use super::timeline::{Actor, TimelineEntry};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A sequential, human-friendly id such as `INC-42`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IncidentId {
    pub prefix: String,
    pub number: u64,
}

impl IncidentId {
    pub fn new(prefix: impl Into<String>, number: u64) -> Self {
        IncidentId { prefix: prefix.into(), number }
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.prefix, self.number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an incident id: expected PREFIX-NUMBER, for example INC-42")]
pub struct BadIncidentId(pub String);

impl FromStr for IncidentId {
    type Err = BadIncidentId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadIncidentId(s.to_string());
        let (prefix, number) = s.trim().rsplit_once('-').ok_or_else(bad)?;
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        let number = number.parse::<u64>().map_err(|_| bad())?;
        Ok(IncidentId::new(prefix.to_ascii_uppercase(), number))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Started,
    Mitigated,
    Resolved,
    Cancelled,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Started => "started",
            IncidentStatus::Mitigated => "mitigated",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, IncidentStatus::Resolved | IncidentStatus::Cancelled)
    }

    pub fn allowed(self) -> &'static [IncidentAction] {
        use IncidentAction::*;
        match self {
            IncidentStatus::Started => &[Mitigate, Resolve, Cancel, SetSeverity, SetCommander, Update],
            IncidentStatus::Mitigated => &[Resolve, Cancel, SetSeverity, SetCommander, Update],
            IncidentStatus::Resolved | IncidentStatus::Cancelled => &[],
        }
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentAction {
    Mitigate,
    Resolve,
    Cancel,
    SetSeverity,
    SetCommander,
    Update,
}

impl IncidentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentAction::Mitigate => "mitigate",
            IncidentAction::Resolve => "resolve",
            IncidentAction::Cancel => "cancel",
            IncidentAction::SetSeverity => "change the severity of",
            IncidentAction::SetCommander => "change the commander of",
            IncidentAction::Update => "post a status update to",
        }
    }
}

impl fmt::Display for IncidentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    #[error("cannot {action} incident {incident_id}: it is {status}; {allowed}", allowed = allowed_text(.status))]
    InvalidTransition { incident_id: String, action: IncidentAction, status: IncidentStatus },
}

fn allowed_text(status: &IncidentStatus) -> String {
    let allowed = status.allowed();
    if allowed.is_empty() {
        format!("a {status} incident is final; declare a new incident instead")
    } else {
        let names: Vec<&str> = allowed
            .iter()
            .map(|a| match a {
                IncidentAction::SetSeverity => "set severity",
                IncidentAction::SetCommander => "set commander",
                IncidentAction::Update => "update",
                other => other.as_str(),
            })
            .collect();
        format!("allowed now: {}", names.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    pub id: IncidentId,
    pub title: String,
    pub severity: String,
    pub summary: String,
    /// Who leads the response; the declarer when nobody else is named.
    pub commander: Option<Actor>,
    /// Answers to the configured extra dialog fields, by field name.
    pub fields: BTreeMap<String, String>,
    /// Whether its channel is private.
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub title: String,
    pub severity: String,
    pub summary: String,
    pub status: IncidentStatus,
    pub declared_by: Actor,
    /// Who leads the response.
    #[serde(default = "no_commander")]
    pub commander: Actor,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub private: bool,
    /// The dedicated Mattermost channel, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// Its name (what `~name` links to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    /// How far the channel has been read for mirroring: the newest post's `update_at` (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored_until: Option<i64>,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub timeline: Vec<TimelineEntry>,
}

fn no_commander() -> Actor {
    Actor::System
}

impl Incident {
    pub fn declare(new: NewIncident, actor: Actor, at: Timestamp) -> Incident {
        Incident {
            id: new.id,
            title: new.title,
            severity: new.severity,
            summary: new.summary,
            status: IncidentStatus::Started,
            commander: new.commander.unwrap_or_else(|| actor.clone()),
            fields: new.fields,
            private: new.private,
            declared_by: actor.clone(),
            channel_id: None,
            channel_name: None,
            mirrored_until: None,
            started_at: at,
            mitigated_at: None,
            resolved_at: None,
            cancelled_at: None,
            updated_at: at,
            timeline: vec![TimelineEntry::new(at, actor, "started")],
        }
    }

    pub fn mitigate(&mut self, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
        self.check(IncidentAction::Mitigate)?;
        let at = self.record(actor, at, "mitigated", None);
        self.status = IncidentStatus::Mitigated;
        self.mitigated_at = Some(at);
        Ok(())
    }

    pub fn resolve(&mut self, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
        self.check(IncidentAction::Resolve)?;
        let at = self.record(actor, at, "resolved", None);
        self.status = IncidentStatus::Resolved;
        self.mitigated_at.get_or_insert(at);
        self.resolved_at = Some(at);
        Ok(())
    }

    pub fn cancel(&mut self, reason: Option<String>, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
        self.check(IncidentAction::Cancel)?;
        let at = self.record(actor, at, "cancelled", reason);
        self.status = IncidentStatus::Cancelled;
        self.cancelled_at = Some(at);
        Ok(())
    }

    pub fn set_severity(&mut self, severity: String, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
        self.check(IncidentAction::SetSeverity)?;
        let note = format!("{} → {}", self.severity, severity);
        self.record(actor, at, "severity_changed", Some(note));
        self.severity = severity;
        Ok(())
    }

    /// Hands the lead to someone else. Allowed while the incident is open.
    pub fn set_commander(&mut self, commander: Actor, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
        self.check(IncidentAction::SetCommander)?;
        let note = format!("{} → {}", self.commander, commander);
        self.record(actor, at, "commander_changed", Some(note));
        self.commander = commander;
        Ok(())
    }

    /// A status update ("rolled back the deploy, watching errors"): posted in the channel and
    /// announced. Allowed while the incident is open.
    pub fn status_update(&mut self, text: String, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
        self.check(IncidentAction::Update)?;
        self.record(actor, at, "status_update", Some(text));
        Ok(())
    }

    /// The timeline entry of the last change (what a notification of it shows).
    pub fn last_entry(&self) -> Option<&TimelineEntry> {
        self.timeline.last()
    }

    /// Appends a free-form entry (a mirrored channel reply, a status note). Allowed in any status:
    /// people keep talking after an incident is resolved, and the timeline should show it.
    pub fn note(&mut self, actor: Actor, at: Timestamp, text: impl Into<String>) {
        self.record(actor, at, "note", Some(text.into()));
    }

    /// Appends a message people wrote in the incident's channel, once per Mattermost post:
    /// returns false (and changes nothing) when that post is already in the timeline. Allowed in
    /// any status, like [`Incident::note`].
    pub fn mirror(&mut self, post_id: &str, actor: Actor, at: Timestamp, text: impl Into<String>) -> bool {
        if self.timeline.iter().any(|e| e.post_id.as_deref() == Some(post_id)) {
            return false;
        }
        self.record(actor, at, "message", Some(text.into()));
        if let Some(last) = self.timeline.last_mut() {
            last.post_id = Some(post_id.to_string());
        }
        true
    }

    /// How many channel messages the timeline holds.
    pub fn mirrored(&self) -> usize {
        self.timeline.iter().filter(|e| e.post_id.is_some()).count()
    }

    fn check(&self, action: IncidentAction) -> Result<(), IncidentError> {
        if self.status.allowed().contains(&action) {
            Ok(())
        } else {
            Err(IncidentError::InvalidTransition { incident_id: self.id.to_string(), action, status: self.status })
        }
    }

    fn record(&mut self, actor: Actor, at: Timestamp, what: &str, note: Option<String>) -> Timestamp {
        let at = at.max(self.updated_at);
        self.updated_at = at;
        self.timeline.push(TimelineEntry { at, actor, what: what.to_string(), note, post_id: None });
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid test timestamp")
    }

    fn declared() -> Incident {
        Incident::declare(
            NewIncident {
                id: IncidentId::new("INC", 42),
                title: "Checkout down".into(),
                severity: "SEV1".into(),
                summary: String::new(),
                commander: None,
                fields: BTreeMap::new(),
                private: false,
            },
            Actor::user("u1", "alice"),
            t(0),
        )
    }

    #[test]
    fn ids_print_and_parse_as_prefix_dash_number() {
        let id = IncidentId::new("INC", 42);
        assert_eq!(id.to_string(), "INC-42");
        assert_eq!("inc-42".parse::<IncidentId>(), Ok(id));
        for bad in ["INC42", "INC-", "-4", "INC-x", "IN C-4"] {
            let err = bad.parse::<IncidentId>().unwrap_err();
            assert!(err.to_string().contains("INC-42"), "{err}");
        }
    }

    #[test]
    fn full_lifecycle_sets_every_timestamp_in_order() {
        let mut i = declared();
        i.mitigate(Actor::System, t(60)).unwrap();
        i.resolve(Actor::System, t(120)).unwrap();
        assert_eq!(i.status, IncidentStatus::Resolved);
        assert_eq!(i.mitigated_at, Some(t(60)));
        assert_eq!(i.resolved_at, Some(t(120)));
    }

    #[test]
    fn resolving_from_started_also_marks_it_mitigated_at_the_same_time() {
        let mut i = declared();
        i.resolve(Actor::System, t(30)).unwrap();
        assert_eq!(i.mitigated_at, Some(t(30)));
    }

    #[test]
    fn mitigating_twice_is_a_typed_error_that_names_the_allowed_actions() {
        let mut i = declared();
        i.mitigate(Actor::System, t(1)).unwrap();
        let err = i.mitigate(Actor::System, t(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot mitigate incident INC-42: it is mitigated; allowed now: resolve, cancel, set severity, set commander, update"
        );
    }

    #[test]
    fn a_cancelled_incident_is_final() {
        let mut i = declared();
        i.cancel(None, Actor::System, t(1)).unwrap();
        let err = i.resolve(Actor::System, t(2)).unwrap_err();
        assert!(err.to_string().contains("final; declare a new incident"), "{err}");
        assert_eq!(i.status, IncidentStatus::Cancelled);
    }

    #[test]
    fn a_mirrored_post_is_added_once() {
        let mut i = declared();
        assert!(i.mirror("p1", Actor::user("u2", "bob"), t(5), "checking the db"));
        assert!(!i.mirror("p1", Actor::user("u2", "bob"), t(6), "checking the db"), "the same post again");
        assert_eq!(i.timeline.len(), 2);
        assert_eq!(i.mirrored(), 1);
        assert_eq!(i.timeline[1].what, "message");
    }

    #[test]
    fn notes_are_allowed_after_resolution() {
        let mut i = declared();
        i.resolve(Actor::System, t(1)).unwrap();
        i.note(Actor::user("u2", "bob"), t(2), "root cause: expired cert");
        assert_eq!(i.timeline.last().and_then(|e| e.note.as_deref()), Some("root cause: expired cert"));
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Mitigate,
        Resolve,
        Cancel,
        Severity,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![Just(Step::Mitigate), Just(Step::Resolve), Just(Step::Cancel), Just(Step::Severity)]
    }

    fn rank(s: IncidentStatus) -> u8 {
        match s {
            IncidentStatus::Started => 0,
            IncidentStatus::Mitigated => 1,
            IncidentStatus::Resolved | IncidentStatus::Cancelled => 2,
        }
    }

    proptest! {
        #[test]
        fn any_command_sequence_keeps_the_lifecycle_invariants(steps in proptest::collection::vec((step(), -5i64..500), 0..30)) {
            let mut i = declared();
            let mut accepted = 0usize;
            for (s, dt) in steps {
                let before = i.clone();
                let result = match s {
                    Step::Mitigate => i.mitigate(Actor::System, t(dt)),
                    Step::Resolve => i.resolve(Actor::System, t(dt)),
                    Step::Cancel => i.cancel(None, Actor::System, t(dt)),
                    Step::Severity => i.set_severity("SEV2".into(), Actor::System, t(dt)),
                };
                match result {
                    Ok(()) => {
                        accepted += 1;
                        prop_assert!(!before.status.is_final(), "a final incident changed");
                        prop_assert!(rank(i.status) >= rank(before.status), "status went backwards");
                    }
                    Err(IncidentError::InvalidTransition { status, .. }) => {
                        prop_assert_eq!(&i, &before, "refused transition changed the incident");
                        prop_assert_eq!(status, before.status);
                    }
                }
            }
            prop_assert_eq!(i.timeline.len(), accepted + 1);
            if let (Some(m), Some(r)) = (i.mitigated_at, i.resolved_at) { prop_assert!(m <= r); }
            prop_assert_eq!(i.resolved_at.is_some(), i.status == IncidentStatus::Resolved);
            prop_assert_eq!(i.cancelled_at.is_some(), i.status == IncidentStatus::Cancelled);
            if i.status == IncidentStatus::Resolved { prop_assert!(i.mitigated_at.is_some()); }
            prop_assert!(i.timeline.windows(2).all(|w| w[0].at <= w[1].at));
            prop_assert!(i.started_at <= i.updated_at);
        }
    }
}
