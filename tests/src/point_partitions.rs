//! The store contract in point partitions: a store seen through [`InPointPartitions`] puts
//! every partition key under [`POINT_PARTITION_PREFIX`], so the whole contract runs again on
//! the partitions an adapter may keep apart (the embedded store keeps them in a table of their
//! own, found through an index in memory).

use async_trait::async_trait;
use klaxon::store::{Decide, Decided, Item, POINT_PARTITION_PREFIX, PageQuery, ReadNow, Store, StoreError, Write};
use std::sync::Arc;

/// `inner`, with every partition key moved under [`POINT_PARTITION_PREFIX`] on the way in and
/// back on the way out (items and errors).
pub struct InPointPartitions(pub Arc<dyn Store>);

fn inside(pk: &str) -> String {
    format!("{POINT_PARTITION_PREFIX}{pk}")
}

fn outside(pk: String) -> String {
    pk.strip_prefix(POINT_PARTITION_PREFIX).map(str::to_string).unwrap_or(pk)
}

fn item_in(mut item: Item) -> Item {
    item.pk = inside(&item.pk);
    item
}

fn item_out(mut item: Item) -> Item {
    item.pk = outside(item.pk);
    item
}

fn keys_in(keys: &[(String, String)]) -> Vec<(String, String)> {
    keys.iter().map(|(pk, sk)| (inside(pk), sk.clone())).collect()
}

fn write_in(write: Write) -> Write {
    match write {
        Write::Put { item, condition } => Write::Put { item: item_in(item), condition },
        Write::Delete { pk, sk, condition } => Write::Delete { pk: inside(&pk), sk, condition },
        Write::Check { pk, sk, condition } => Write::Check { pk: inside(&pk), sk, condition },
        enqueue @ Write::Enqueue { .. } => enqueue,
    }
}

fn error_out(e: StoreError) -> StoreError {
    match e {
        StoreError::ConditionFailed { pk, sk, expected, found } => {
            StoreError::ConditionFailed { pk: outside(pk), sk, expected, found }
        }
        StoreError::TransactionConflict { index, pk, sk } => {
            StoreError::TransactionConflict { index, pk: outside(pk), sk }
        }
        StoreError::Contended { pk, sk } => StoreError::Contended { pk: outside(pk), sk },
        other => other,
    }
}

fn items_out(items: Vec<Option<Item>>) -> Vec<Option<Item>> {
    items.into_iter().map(|i| i.map(item_out)).collect()
}

/// A decision's reads, moved the same way.
struct ReadsIn<'a>(&'a dyn ReadNow);

impl ReadNow for ReadsIn<'_> {
    fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError> {
        self.0.get_many(&keys_in(keys)).map(items_out)
    }

    fn page(&self, page: &PageQuery<'_>) -> Result<Vec<Item>, StoreError> {
        let pk = inside(page.pk);
        let page = PageQuery { pk: &pk, ..*page };
        Ok(self.0.page(&page)?.into_iter().map(item_out).collect())
    }
}

#[async_trait]
impl Store for InPointPartitions {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        Ok(self.0.get(&inside(pk), sk).await.map_err(error_out)?.map(item_out))
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError> {
        self.0.get_many(&keys_in(keys)).await.map(items_out).map_err(error_out)
    }

    fn enqueues(&self) -> bool {
        self.0.enqueues()
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.0.probe().await
    }

    async fn put(&self, item: Item, condition: klaxon::store::Condition) -> Result<(), StoreError> {
        self.0.put(item_in(item), condition).await.map_err(error_out)
    }

    async fn delete(&self, pk: &str, sk: &str, condition: klaxon::store::Condition) -> Result<(), StoreError> {
        self.0.delete(&inside(pk), sk, condition).await.map_err(error_out)
    }

    async fn get_many_and_page(
        &self,
        keys: &[(String, String)],
        page: &PageQuery<'_>,
    ) -> Result<(Vec<Option<Item>>, Vec<Item>), StoreError> {
        let pk = inside(page.pk);
        let page = PageQuery { pk: &pk, ..*page };
        let (items, found) = self.0.get_many_and_page(&keys_in(keys), &page).await.map_err(error_out)?;
        Ok((items_out(items), found.into_iter().map(item_out).collect()))
    }

    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let found = self.0.query_page(&inside(pk), prefix, start_after, limit).await.map_err(error_out)?;
        Ok(found.into_iter().map(item_out).collect())
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.0.transact(writes.into_iter().map(write_in).collect()).await.map_err(error_out)
    }

    fn decides_where_it_writes(&self) -> bool {
        self.0.decides_where_it_writes()
    }

    async fn decide_and_write(&self, mut decide: Decide) -> Result<Box<dyn std::any::Any + Send>, StoreError> {
        let moved: Decide = Box::new(move |read: &dyn ReadNow| {
            let Decided { writes, answer } = decide(&ReadsIn(read)).map_err(error_out)?;
            Ok(Decided { writes: writes.into_iter().map(write_in).collect(), answer })
        });
        self.0.decide_and_write(moved).await.map_err(error_out)
    }

    async fn increment_by(&self, pk: &str, sk: &str, by: u64) -> Result<u64, StoreError> {
        self.0.increment_by(&inside(pk), sk, by).await.map_err(error_out)
    }

    async fn purge_expired(&self, max: usize) -> Result<usize, StoreError> {
        self.0.purge_expired(max).await
    }
}
