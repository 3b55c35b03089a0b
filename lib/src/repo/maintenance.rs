//! Maintenance windows started from chat, the alerts each window held, and which window ends
//! have been handled.
//!
//! | pk                       | sk         | data                       |
//! |--------------------------|------------|----------------------------|
//! | `maintenance`            | window id  | the window (JSON)          |
//! | `held#<window key>`      | alert id   | the alert's source         |
//! | `maintenance-closed`     | window key | when its end was handled   |

use super::{RepoError, decode, encode};
use crate::escalation::maintenance::Window;
use crate::store::{Condition, Item, PageQuery, Store, Write};
use std::sync::Arc;

const WINDOWS: &str = "maintenance";
const CLOSED: &str = "maintenance-closed";
/// Windows, held-alert entries and end markers are kept this long after the window ends (a
/// day more than the sweep looks back), then expire.
const KEEP_SECS: i64 = 8 * 86_400;

fn held_pk(key: &str) -> String {
    format!("held#{key}")
}

#[derive(Clone)]
pub struct MaintenanceRepo {
    store: Arc<dyn Store>,
}

impl MaintenanceRepo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        MaintenanceRepo { store }
    }

    pub async fn save(&self, w: &Window) -> Result<(), RepoError> {
        let item = Item::new(WINDOWS, w.id.clone(), encode(w)).expiring_at(w.end.as_second().saturating_add(KEEP_SECS));
        Ok(self.store.put(item, Condition::None).await?)
    }

    /// What [`MaintenanceRepo::started`] reads, for reading it together with other items
    /// ([`Store::get_many_and_page`]); [`MaintenanceRepo::started_in`] decodes what was read.
    pub const STARTED: PageQuery<'static> = PageQuery { pk: WINDOWS, prefix: "", limit: 500 };

    /// Windows started from chat that have not expired (at most 500).
    pub async fn started(&self) -> Result<Vec<Window>, RepoError> {
        let q = Self::STARTED;
        Self::started_in(&self.store.query_page(q.pk, q.prefix, None, q.limit).await?)
    }

    /// The windows among items read under [`MaintenanceRepo::STARTED`].
    pub fn started_in(items: &[Item]) -> Result<Vec<Window>, RepoError> {
        items.iter().map(|i| decode(i, "maintenance window").map(|v| v.value)).collect()
    }

    /// The write that indexes an alert under the window that holds it.
    pub fn hold(w: &Window, alert_id: &str, source: &str) -> Write {
        let item =
            Item::new(held_pk(&w.key()), alert_id, source).expiring_at(w.end.as_second().saturating_add(KEEP_SECS));
        Write::Put { item, condition: Condition::None }
    }

    /// The alerts a window held: (alert id, source).
    pub async fn held(&self, key: &str) -> Result<Vec<(String, String)>, RepoError> {
        let items = self.store.query_prefix(&held_pk(key), "", None).await?;
        Ok(items.into_iter().map(|i| (i.sk, i.data)).collect())
    }

    pub async fn is_closed(&self, key: &str) -> Result<bool, RepoError> {
        Ok(self.store.get(CLOSED, key).await?.is_some())
    }

    /// Marks a window's end handled; false when it already was.
    pub async fn close(&self, w: &Window, at: jiff::Timestamp) -> Result<bool, RepoError> {
        let item = Item::new(CLOSED, w.key(), at.to_string()).expiring_at(w.end.as_second().saturating_add(KEEP_SECS));
        match self.store.transact(vec![Write::Put { item, condition: Condition::Absent }]).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_condition_failed() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
