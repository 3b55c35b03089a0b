//! Declaring incidents and changing them. Every change is one conditional write that carries
//! its notification job (the outbox), so what Mattermost is told always matches what was
//! recorded, in order per incident; the slow parts (the channel, announcements) happen in the
//! notifier.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::domain::{Actor, Incident, IncidentError, IncidentId, NewIncident};
use crate::notify::outbox::Outbox;
use crate::notify::{Job, NotifyJob, Subject};
use crate::repo::incidents::IncidentRepo;
use crate::repo::{RepoError, Versioned};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IncidentsError {
    #[error("Klaxon could not record this ({0}); nothing changed, try again in a moment")]
    Store(#[from] RepoError),
    #[error("{incident} changed {tries} times while this was being recorded; nothing changed, try again")]
    Busy { incident: String, tries: u32 },
}

/// What a `/incident new` or a dialog asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub title: String,
    pub severity: String,
    pub summary: String,
    pub commander: Option<Actor>,
    pub fields: BTreeMap<String, String>,
    pub private: bool,
    pub declared_by: Actor,
    /// Makes a retried request create one incident (a dialog's nonce).
    pub request_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    New(Incident),
    /// The same request had created this one already.
    Already(Incident),
}

/// A change to an open incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Mitigate,
    Resolve,
    Cancel { reason: Option<String> },
    Severity(String),
    Commander(Actor),
    Update(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Done(Incident),
    /// The lifecycle does not allow it ("INC-7 is already resolved"); nothing changed.
    Refused {
        incident: Incident,
        reason: String,
    },
}

/// The event each change announces (`incidents.announce` and routing name them).
pub fn event_of(change: &Change) -> &'static str {
    match change {
        Change::Mitigate => "incident.mitigated",
        Change::Resolve => "incident.resolved",
        Change::Cancel { .. } => "incident.cancelled",
        Change::Severity(_) => "incident.severity_changed",
        Change::Commander(_) => "incident.commander_changed",
        Change::Update(_) => "incident.updated",
    }
}

#[derive(Clone)]
pub struct Incidents {
    config: Arc<Config>,
    repo: IncidentRepo,
    outbox: Outbox,
}

/// The job announcing the incident's latest change; its id sorts by the timeline's length.
pub fn job_for(incident: &Incident, event: &str, at: Timestamp) -> Job {
    Job::Notify(NotifyJob {
        job_id: format!("{}#{:010}", incident.id, incident.timeline.len()),
        event: event.to_string(),
        subject: Subject::Incident { id: incident.id.to_string() },
        at,
    })
}

/// The timeline entry a job of [`job_for`] announces (its id ends in the timeline's length then).
pub fn entry_of_job<'i>(incident: &'i Incident, job_id: &str) -> Option<&'i crate::domain::TimelineEntry> {
    let n: usize = job_id.rsplit_once('#')?.1.parse().ok()?;
    incident.timeline.get(n.checked_sub(1)?)
}

impl Incidents {
    pub fn new(config: Arc<Config>, repo: IncidentRepo, outbox: Outbox) -> Self {
        Incidents { config, repo, outbox }
    }

    pub fn repo(&self) -> &IncidentRepo {
        &self.repo
    }

    /// Creates the incident (`INC-n` from the atomic counter) with its `incident.started` job.
    pub async fn declare(&self, d: Declaration, at: Timestamp) -> Result<Declared, IncidentsError> {
        if let Some(key) = &d.request_key
            && let Some(existing) = self.repo.get_by_request(key).await?
        {
            return Ok(Declared::Already(existing.value));
        }
        let id: IncidentId = self.repo.next_id(&self.config.incidents.id_prefix).await?;
        let new = NewIncident {
            id,
            title: d.title,
            severity: d.severity,
            summary: d.summary,
            commander: d.commander,
            fields: d.fields,
            private: d.private,
        };
        let incident = Incident::declare(new, d.declared_by, at);
        let job = job_for(&incident, "incident.started", at);
        match self.repo.create(&incident, d.request_key.as_deref(), vec![self.outbox.write(&job)]).await {
            Ok(()) => {}
            Err(RepoError::AlreadyExists { .. }) if d.request_key.is_some() => {
                let key = d.request_key.as_deref().unwrap_or_default();
                if let Some(existing) = self.repo.get_by_request(key).await? {
                    return Ok(Declared::Already(existing.value));
                }
                return Err(RepoError::Conflict { what: format!("request {key}") }.into());
            }
            Err(e) => return Err(e.into()),
        }
        self.outbox.hand_over(&job).await;
        Ok(Declared::New(incident))
    }

    /// Applies a change to the incident whose channel this is. `None`: no incident has it.
    pub async fn change_in_channel(
        &self,
        channel_id: &str,
        change: Change,
        actor: Actor,
        at: Timestamp,
    ) -> Result<Option<Changed>, IncidentsError> {
        let Some(read) = self.repo.get_by_channel(channel_id).await? else { return Ok(None) };
        self.change(read, change, actor, at).await.map(Some)
    }

    /// Applies a change with a conditional write, re-reading and retrying when someone else
    /// changed the incident meanwhile.
    pub async fn change(
        &self,
        mut read: Versioned<Incident>,
        change: Change,
        actor: Actor,
        at: Timestamp,
    ) -> Result<Changed, IncidentsError> {
        let backoff = Backoff::CONTENDED_WRITE;
        for attempt in 0..backoff.attempts {
            let mut incident = read.value.clone();
            if let Err(e) = apply(&mut incident, &change, actor.clone(), at) {
                return Ok(Changed::Refused { incident: read.value, reason: refusal(&e) });
            }
            let job = job_for(&incident, event_of(&change), at);
            match self.repo.update(&read, &incident, vec![self.outbox.write(&job)]).await {
                Ok(()) => {
                    self.outbox.hand_over(&job).await;
                    return Ok(Changed::Done(incident));
                }
                Err(RepoError::Conflict { .. }) => {
                    backoff.wait(attempt + 1).await;
                    let number = read.value.id.number;
                    read = self
                        .repo
                        .get(number)
                        .await?
                        .ok_or_else(|| RepoError::Conflict { what: format!("incident {}", read.value.id) })?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IncidentsError::Busy { incident: read.value.id.to_string(), tries: backoff.attempts })
    }
}

fn apply(incident: &mut Incident, change: &Change, actor: Actor, at: Timestamp) -> Result<(), IncidentError> {
    match change.clone() {
        Change::Mitigate => incident.mitigate(actor, at),
        Change::Resolve => incident.resolve(actor, at),
        Change::Cancel { reason } => incident.cancel(reason, actor, at),
        Change::Severity(s) => incident.set_severity(s, actor, at),
        Change::Commander(c) => incident.set_commander(c, actor, at),
        Change::Update(text) => incident.status_update(text, actor, at),
    }
}

/// "INC-7 is already resolved", said the way a person in the channel wants to read it.
fn refusal(e: &IncidentError) -> String {
    match e {
        IncidentError::InvalidTransition { incident_id, status, .. } if status.is_final() => {
            format!("{incident_id} is already {status}; declare a new incident with `/incident new` if it is back")
        }
        other => other.to_string(),
    }
}
