//! Incidents, numbered in sequence, and the index from a channel to its incident.

use super::{RepoError, Versioned, counter, create_write, decode, update_write};
use crate::domain::{Incident, IncidentId};
use crate::store::{Condition, Item, Store, Write};
use std::sync::Arc;

#[derive(Clone)]
pub struct IncidentRepo {
    store: Arc<dyn Store>,
}

fn incident_pk(number: u64) -> String {
    format!("incident#{number}")
}

fn channel_pk(channel_id: &str) -> String {
    format!("incident-channel#{channel_id}")
}

/// One item per open incident, so that `/incident list` is one query.
const OPEN_PK: &str = "incidents-open";

fn open_sk(number: u64) -> String {
    format!("{number:012}")
}

fn request_pk(key: &str) -> String {
    format!("incident-request#{key}")
}

/// At most this many open incidents are listed.
pub const OPEN_LIMIT: usize = 200;

impl IncidentRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        IncidentRepo { store }
    }

    pub async fn next_id(&self, prefix: &str) -> Result<IncidentId, RepoError> {
        Ok(IncidentId::new(prefix, counter::next(self.store.as_ref(), "incident").await?))
    }

    pub async fn get(&self, number: u64) -> Result<Option<Versioned<Incident>>, RepoError> {
        match self.store.get(&incident_pk(number), "incident").await? {
            None => Ok(None),
            Some(item) => decode(&item, &format!("incident {number}")).map(Some),
        }
    }

    /// The incident whose dedicated channel this is (how `/incident resolve` finds its target).
    pub async fn get_by_channel(&self, channel_id: &str) -> Result<Option<Versioned<Incident>>, RepoError> {
        let Some(pointer) = self.store.get(&channel_pk(channel_id), "incident").await? else {
            return Ok(None);
        };
        let number = pointer.data.parse::<u64>().map_err(|_| RepoError::Decode {
            what: format!("channel index {channel_id}"),
            reason: format!("{:?} is not an incident number", pointer.data),
        })?;
        self.get(number).await
    }

    /// The incident a request created, by the request's idempotency key (a dialog's nonce).
    pub async fn get_by_request(&self, key: &str) -> Result<Option<Versioned<Incident>>, RepoError> {
        let Some(pointer) = self.store.get(&request_pk(key), "incident").await? else { return Ok(None) };
        match pointer.data.parse::<u64>() {
            Ok(number) => self.get(number).await,
            Err(_) => {
                Err(RepoError::Decode { what: format!("request {key}"), reason: "not an incident number".into() })
            }
        }
    }

    /// The incidents that are neither resolved nor cancelled, oldest first.
    pub async fn open(&self) -> Result<Vec<Incident>, RepoError> {
        let items = self.store.query_prefix(OPEN_PK, "", Some(OPEN_LIMIT)).await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Ok(number) = item.data.parse::<u64>() else { continue };
            if let Some(i) = self.get(number).await? {
                out.push(i.value);
            }
        }
        Ok(out)
    }

    /// Creates the incident. With `request`, an idempotency key: a second create with the same
    /// key fails with `AlreadyExists` and writes nothing (`get_by_request` finds the first).
    pub async fn create(&self, incident: &Incident, request: Option<&str>, extra: Vec<Write>) -> Result<(), RepoError> {
        let number = incident.id.number;
        let mut writes = vec![create_write(incident_pk(number), "incident", incident)];
        if !incident.status.is_final() {
            let item = Item::new(OPEN_PK, open_sk(number), number.to_string());
            writes.push(Write::Put { item, condition: Condition::Absent });
        }
        if let Some(key) = request {
            let item = Item::new(request_pk(key), "incident", number.to_string());
            writes.push(Write::Put { item, condition: Condition::Absent });
        }
        writes.extend(self.channel_index(incident, None));
        writes.extend(extra);
        self.store.transact(writes).await.map_err(|e| match e {
            e if e.is_condition_failed() => RepoError::AlreadyExists { what: format!("incident {}", incident.id) },
            e if e.is_conflict() => RepoError::Conflict { what: format!("incident {}", incident.id) },
            e => e.into(),
        })
    }

    pub async fn update(
        &self,
        read: &Versioned<Incident>,
        updated: &Incident,
        extra: Vec<Write>,
    ) -> Result<(), RepoError> {
        let mut writes = vec![update_write(incident_pk(updated.id.number), "incident", updated, read.version)];
        if updated.status.is_final() && !read.value.status.is_final() {
            writes.push(Write::Delete {
                pk: OPEN_PK.into(),
                sk: open_sk(updated.id.number),
                condition: Condition::None,
            });
        }
        writes.extend(self.channel_index(updated, read.value.channel_id.as_deref()));
        writes.extend(extra);
        self.store.transact(writes).await.map_err(|e| match e {
            e if e.is_conflict() => RepoError::Conflict { what: format!("incident {}", updated.id) },
            e => e.into(),
        })
    }

    /// The index entry for a channel the incident gained (a channel is never reused).
    fn channel_index(&self, incident: &Incident, before: Option<&str>) -> Option<Write> {
        let channel = incident.channel_id.as_deref()?;
        (before != Some(channel)).then(|| Write::Put {
            item: Item::new(channel_pk(channel), "incident", incident.id.number.to_string()),
            condition: Condition::Absent,
        })
    }
}
