//! Incident notifications: the incident's own channel (created on its first job, named by
//! `incidents.channel_name_template`, with the people added and a header kept current), the
//! line each change posts there (the retrospective draft on resolve), and the announcement in
//! `incidents.announce_channel`.
//!
//! Every step can be repeated safely, because a job may run again after a crash or a
//! transient failure: a channel whose name is taken is adopted when its purpose carries this
//! incident's marker (it was created by an earlier attempt), and a post is looked for by the job
//! id in its props before it is created again.

use super::batch::JobError;
use super::card::{JOB_PROP, job_post};
use super::job::NotifyJob;
use super::notifier::{Failure, NO_MATTERMOST, Notifier, with_retries};
use super::routing::{EventFacts, destination};
use crate::domain::{Actor, Incident, IncidentId};
use crate::incidents::service::entry_of_job;
use crate::incidents::{channel_name, render};
use crate::mattermost::{CreateChannel, Mattermost, WebhookPost};
use crate::repo::RepoError;
use crate::repo::deliveries::{Delivery, DeliveryRecord};
use crate::repo::incidents::IncidentRepo;

/// How many taken names (`-2`, `-3`, ...) are tried before giving up.
const NAME_ATTEMPTS: u32 = 20;

/// What a channel created by Klaxon for an incident says in its purpose; how a retry after a
/// crash recognises the channel it created.
pub fn channel_marker(incident: &Incident) -> String {
    format!("Klaxon incident {}", incident.id)
}

impl Notifier {
    pub(super) async fn notify_incident(&self, job: &NotifyJob, id: &str) -> Result<(), JobError> {
        let number = id
            .parse::<IncidentId>()
            .map_err(|e| JobError::Poison(format!("job {} names no incident: {e}", job.job_id)))?
            .number;
        let mut incident = self
            .incidents
            .get(number)
            .await?
            .ok_or_else(|| JobError::Poison(format!("incident {id} of job {} does not exist", job.job_id)))?
            .value;
        let Some(mm) = &self.mattermost else {
            return self.not_delivered(job, None, NO_MATTERMOST.into()).await;
        };
        let mut failures = Vec::new();
        let mut posted = None;
        match self.in_incident_channel(mm, job, &mut incident).await {
            Ok(p) => posted = p,
            Err(Failure::Transient(why)) => return Err(JobError::Transient(why)),
            Err(Failure::Permanent(why)) => failures.push(why),
        }
        let facts = EventFacts { event: &job.event, source: None, urgency: None };
        let announce = destination(&self.config, &facts).ok().map(str::to_string);
        if let Some(channel) = &announce {
            match self.announce(mm, job, &incident, channel).await {
                Ok(p) => posted = posted.or(Some((channel.clone(), p))),
                Err(Failure::Transient(why)) => return Err(JobError::Transient(why)),
                Err(Failure::Permanent(why)) => failures.push(why),
            }
        }
        if !failures.is_empty() {
            let why = failures.join("; ");
            tracing::error!(job_id = %job.job_id, event = %job.event, incident_id = %id, reason = %why, "incident notification FAILED; `klaxon deliveries retry` sends it again once fixed");
            self.deliveries.record_failure(&crate::notify::Job::Notify(job.clone()), announce, why).await?;
            return Ok(());
        }
        let delivery = match posted {
            Some((channel, post_id)) => Delivery::Posted { channel, post_id },
            None => Delivery::NotDelivered { channel: None, reason: "nothing to post for this event".into() },
        };
        self.deliveries
            .record(&DeliveryRecord { job_id: job.job_id.clone(), at: jiff::Timestamp::now(), delivery })
            .await?;
        Ok(())
    }

    /// Makes sure the channel exists, keeps its header and members current, and posts the
    /// change there. Returns (channel name, post id).
    async fn in_incident_channel(
        &self,
        mm: &Mattermost,
        job: &NotifyJob,
        incident: &mut Incident,
    ) -> Result<Option<(String, String)>, Failure> {
        let created = if incident.channel_id.is_none() {
            *incident = self.create_channel(mm, incident).await?;
            true
        } else {
            false
        };
        let (Some(channel_id), Some(name)) = (incident.channel_id.clone(), incident.channel_name.clone()) else {
            return Ok(None);
        };
        if created || matches!(job.event.as_str(), "incident.started" | "incident.commander_changed") {
            let people = people(incident);
            if !people.is_empty() {
                with_retries(|| mm.add_members(&channel_id, &people)).await?;
            }
        }
        let header_changes = matches!(
            job.event.as_str(),
            "incident.mitigated"
                | "incident.resolved"
                | "incident.cancelled"
                | "incident.severity_changed"
                | "incident.commander_changed"
        );
        if header_changes && !created {
            // The header shows the incident as it is now, whichever job got here first.
            let header = render::header(incident);
            with_retries(|| mm.set_header(&channel_id, &header)).await?;
        }
        let entry = entry_of_job(incident, &job.job_id);
        let message = match job.event.as_str() {
            "incident.started" => render::opening(incident),
            "incident.resolved" => format!(
                "{}\n\n{}",
                render::event_line(incident, &job.event, entry),
                render::retrospective(incident, jiff::Timestamp::now())
            ),
            other => render::event_line(incident, other, entry),
        };
        let post_id = self.post_once(mm, job, &channel_id, message).await?;
        Ok(Some((name, post_id)))
    }

    /// Creates the incident's channel (or adopts the one an earlier attempt created) and
    /// records it on the incident. Returns the incident as stored.
    async fn create_channel(&self, mm: &Mattermost, incident: &Incident) -> Result<Incident, Failure> {
        let team_id = self.config.mattermost.as_ref().and_then(|m| m.team_id.clone()).ok_or_else(|| {
            Failure::Permanent("mattermost.team_id is not set, so the incident channel cannot be created; set it (`klaxon channels` lists the bot's teams)".into())
        })?;
        let marker = channel_marker(incident);
        let base =
            channel_name::channel_name(&self.config.incidents.channel_name_template, incident, channel_name::MAX_NAME);
        // A connected declarer's channel is created as them (then the bot is added to it).
        let creator = self.creator(mm, incident).await;
        let client = creator.as_ref().unwrap_or(mm);
        let mut channel = None;
        for attempt in 0..NAME_ATTEMPTS {
            let name = channel_name::with_suffix(&base, attempt, channel_name::MAX_NAME);
            let create = CreateChannel {
                team_id: team_id.clone(),
                name: name.clone(),
                display_name: channel_name::display_name(incident),
                kind: if incident.private { "P" } else { "O" },
                purpose: marker.clone(),
                header: render::header(incident),
            };
            if let Some(c) = with_retries(|| client.create_channel(&create)).await? {
                channel = Some(c);
                break;
            }
            // Taken: by this incident's channel from an earlier attempt, or by someone else's.
            if let Some(c) = with_retries(|| client.channel_by_name(&team_id, &name)).await?
                && c.purpose == marker
            {
                tracing::info!(incident_id = %incident.id, channel = %name, "adopting the channel an earlier attempt created");
                channel = Some(c);
                break;
            }
        }
        let channel = channel.ok_or_else(|| {
            Failure::Permanent(format!(
                "every channel name from {base} to {} is taken; change incidents.channel_name_template",
                channel_name::with_suffix(&base, NAME_ATTEMPTS - 1, channel_name::MAX_NAME)
            ))
        })?;
        if let Some(user) = &creator {
            let bot = with_retries(|| mm.me()).await?.id;
            with_retries(|| user.add_members(&channel.id, std::slice::from_ref(&bot))).await?;
        }
        record_channel(&self.incidents, incident, &channel.id, &channel.name).await.map_err(Failure::from)
    }

    /// A client acting as the incident's declarer, when they connected their account and their
    /// token still works; else `None` (the bot creates the channel).
    async fn creator(&self, mm: &Mattermost, incident: &Incident) -> Option<Mattermost> {
        let (Some(oauth), Actor::User { id, .. }) = (&self.oauth, &incident.declared_by) else { return None };
        let token = oauth.user_token(id).await.ok()??;
        let user = mm.with_token(token);
        match user.me().await {
            Ok(me) if me.id == *id => Some(user),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(incident_id = %incident.id, error = %e, "the declarer's connected token does not work; the bot creates the channel");
                None
            }
        }
    }

    /// Posts `message` as the bot in `channel_id`, once per job: a post this job made before
    /// (its id is in the props) is found instead of made again.
    pub(super) async fn post_once(
        &self,
        mm: &Mattermost,
        job: &NotifyJob,
        channel_id: &str,
        message: String,
    ) -> Result<String, Failure> {
        let since = job.at - jiff::SignedDuration::from_secs(60);
        if let Some(p) = with_retries(|| mm.find_post(channel_id, since, JOB_PROP, &job.job_id)).await? {
            return Ok(p.id);
        }
        let post = job_post(channel_id, "", message, &job.job_id, format!("klaxon-{}-{channel_id}", job.job_id));
        Ok(with_retries(|| mm.create_post(&post)).await?.id)
    }

    /// The announcement in `channel` (a name from `[channels]`): bot post or incoming webhook.
    async fn announce(
        &self,
        mm: &Mattermost,
        job: &NotifyJob,
        incident: &Incident,
        channel: &str,
    ) -> Result<String, Failure> {
        let dest = self
            .config
            .channels
            .get(channel)
            .ok_or_else(|| Failure::Permanent(format!("channel {channel} is not defined in [channels]")))?;
        let text = render::announcement(incident, &job.event, entry_of_job(incident, &job.job_id));
        match (&dest.channel_id, &dest.webhook) {
            (Some(id), _) => self.post_once(mm, job, id, text).await,
            (None, Some(hook)) => {
                let url = self
                    .config
                    .mattermost
                    .as_ref()
                    .and_then(|m| m.webhooks.get(hook))
                    .ok_or_else(|| Failure::Permanent(format!("webhook {hook} is not in [mattermost.webhooks]")))?;
                let post = WebhookPost { text, attachments: vec![] };
                with_retries(|| mm.post_webhook(url, &post)).await?;
                Ok(format!("webhook:{hook}"))
            }
            (None, None) => Err(Failure::Permanent(format!("channel {channel} has neither channel_id nor webhook"))),
        }
    }
}

/// The Mattermost users to add to the channel: the declarer and the commander.
fn people(incident: &Incident) -> Vec<String> {
    let mut ids: Vec<String> = [&incident.declared_by, &incident.commander]
        .into_iter()
        .filter_map(|a| match a {
            Actor::User { id, .. } if !id.is_empty() => Some(id.clone()),
            _ => None,
        })
        .collect();
    ids.dedup();
    ids
}

/// Saves the channel on the incident, re-reading it when a command changed it meanwhile. An
/// incident that already has a channel keeps it.
async fn record_channel(
    repo: &IncidentRepo,
    incident: &Incident,
    channel_id: &str,
    name: &str,
) -> Result<Incident, RepoError> {
    for _ in 0..10 {
        let read = repo
            .get(incident.id.number)
            .await?
            .ok_or_else(|| RepoError::Conflict { what: format!("incident {}", incident.id) })?;
        if read.value.channel_id.is_some() {
            return Ok(read.value);
        }
        let mut updated = read.value.clone();
        updated.channel_id = Some(channel_id.to_string());
        updated.channel_name = Some(name.to_string());
        match repo.update(&read, &updated, vec![]).await {
            Ok(()) => return Ok(updated),
            Err(RepoError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RepoError::Conflict { what: format!("incident {}", incident.id) })
}
