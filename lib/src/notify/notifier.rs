//! The notifier's job handler.
//!
//! Posting to Mattermost (rendering alert cards, threads, buttons) is not built in this version.
//! Until it is, each job is routed, logged with the channel it would have gone to, and recorded
//! as *not delivered* with the reason: nothing pretends to have been posted.

use super::batch::{JobError, JobHandler, Record};
use super::job::{Job, NotifyJob, Subject};
use super::routing::{EventFacts, destination};
use crate::config::Config;
use crate::repo::RepoError;
use crate::repo::alerts::AlertRepo;
use crate::repo::deliveries::{Delivery, DeliveryRecord, DeliveryRepo};
use async_trait::async_trait;
use std::sync::Arc;

pub struct Notifier {
    config: Arc<Config>,
    alerts: AlertRepo,
    deliveries: DeliveryRepo,
}

impl From<RepoError> for JobError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Decode { .. } => JobError::Poison(e.to_string()),
            other => JobError::Transient(other.to_string()),
        }
    }
}

impl Notifier {
    pub fn new(config: Arc<Config>, alerts: AlertRepo, deliveries: DeliveryRepo) -> Self {
        Notifier { config, alerts, deliveries }
    }

    async fn notify(&self, job: &NotifyJob) -> Result<(), JobError> {
        if self.deliveries.get(&job.job_id).await?.is_some() {
            tracing::info!(job_id = %job.job_id, "job already handled; redelivery ignored");
            return Ok(());
        }
        let (source, urgency) = match &job.subject {
            Subject::Alert { id } => {
                let alert = self
                    .alerts
                    .get(id)
                    .await?
                    .ok_or_else(|| JobError::Poison(format!("alert {id} of job {} does not exist", job.job_id)))?;
                (Some(alert.value.source), Some(alert.value.urgency))
            }
            Subject::Incident { .. } => (None, None),
        };
        let facts = EventFacts { event: &job.event, source: source.as_deref(), urgency };
        let routed = destination(&self.config, &facts);
        let channel = routed.as_ref().ok().map(|c| c.to_string());
        let reason = match (&self.config.mattermost, routed) {
            (None, Ok(_)) => "no Mattermost is configured (add a [mattermost] section to klaxon.toml)".to_string(),
            (None, Err(why)) => format!("no Mattermost is configured, and {why}"),
            (Some(_), Ok(_)) => "posting to Mattermost is not built in this version of Klaxon".to_string(),
            (Some(_), Err(why)) => why,
        };
        tracing::warn!(
            job_id = %job.job_id,
            event = %job.event,
            subject = %job.subject.id(),
            channel = channel.as_deref().unwrap_or("(none)"),
            reason = %reason,
            "notification NOT delivered"
        );
        let record = DeliveryRecord {
            job_id: job.job_id.clone(),
            at: jiff::Timestamp::now(),
            delivery: Delivery::NotDelivered { channel, reason },
        };
        self.deliveries.record(&record).await?;
        Ok(())
    }
}

#[async_trait]
impl JobHandler for Notifier {
    async fn handle(&self, record: &Record) -> Result<(), JobError> {
        let job = Job::parse(&record.body)
            .map_err(|e| JobError::Poison(format!("message {} is not a Klaxon job: {e}", record.message_id)))?;
        match &job {
            Job::Notify(n) => self.notify(n).await,
        }
    }
}
