//! The store on AWS: one DynamoDB table with string keys `pk` and `sk`, a number `v` (version),
//! a string `data`, and the TTL attribute `expires_at` (Unix seconds).
//!
//! Expired items are hidden here, not left to DynamoDB: TTL deletion may run up to 48 hours
//! late, so every read filters and every condition treats an expired item as absent.

use super::{
    Condition, Found, Item, Store, StoreError, Write, check_batch_get, check_item, check_key, now_unix,
    validate_transaction,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, ConditionCheck, Delete, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use std::collections::HashMap;

type Attrs = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const SK: &str = "sk";
const VERSION: &str = "v";
const DATA: &str = "data";
const EXPIRES_AT: &str = "expires_at";

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn backend(e: impl std::error::Error) -> StoreError {
    StoreError::Backend { backend: "DynamoDB", message: DisplayErrorContext(e).to_string() }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with Klaxon's key schema and TTL attribute (for tests and first runs;
    /// on AWS the SAM template owns the table).
    pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(backend)
        };
        let key =
            |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(backend);
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .send()
            .await
            .map_err(backend)?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder().attribute_name(EXPIRES_AT).enabled(true).build().map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn key(pk: &str, sk: &str) -> Attrs {
        HashMap::from([
            (PK.to_string(), AttributeValue::S(pk.to_string())),
            (SK.to_string(), AttributeValue::S(sk.to_string())),
        ])
    }
}

fn to_attrs(item: &Item) -> Attrs {
    let mut m = DynamoStore::key(&item.pk, &item.sk);
    m.insert(VERSION.into(), AttributeValue::N(item.version.to_string()));
    m.insert(DATA.into(), AttributeValue::S(item.data.clone()));
    if let Some(e) = item.expires_at {
        m.insert(EXPIRES_AT.into(), AttributeValue::N(e.to_string()));
    }
    m
}

fn from_attrs(m: &Attrs) -> Result<Item, StoreError> {
    let s = |name: &str| m.get(name).and_then(|v| v.as_s().ok()).cloned();
    let n = |name: &str| m.get(name).and_then(|v| v.as_n().ok()).map(|n| n.parse::<i64>());
    let pk = s(PK).unwrap_or_default();
    let sk = s(SK).unwrap_or_default();
    let corrupt = |reason: &str| StoreError::Corrupt { pk: pk.clone(), sk: sk.clone(), reason: reason.to_string() };
    let version = match n(VERSION) {
        Some(Ok(v)) if v >= 0 => v as u64,
        _ => {
            return Err(corrupt("attribute v is missing or not a non-negative number"));
        }
    };
    let data = s(DATA).ok_or_else(|| corrupt("attribute data is missing or not a string"))?;
    let expires_at = match n(EXPIRES_AT) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => return Err(corrupt("attribute expires_at is not a whole number")),
    };
    Ok(Item { pk, sk, version, data, expires_at })
}

/// A condition expression with its names and values, ready to attach to any request.
struct Expr {
    text: String,
    names: HashMap<String, String>,
    values: Attrs,
}

fn condition_expr(condition: Condition, now: i64) -> Option<Expr> {
    let now_v = AttributeValue::N(now.to_string());
    match condition {
        Condition::None => None,
        Condition::Absent => Some(Expr {
            text: "attribute_not_exists(#pk) OR #exp <= :now".into(),
            names: HashMap::from([("#pk".into(), PK.into()), ("#exp".into(), EXPIRES_AT.into())]),
            values: HashMap::from([(":now".into(), now_v)]),
        }),
        Condition::Version(v) => Some(Expr {
            text: "#v = :v AND (attribute_not_exists(#exp) OR #exp > :now)".into(),
            names: HashMap::from([("#v".into(), VERSION.into()), ("#exp".into(), EXPIRES_AT.into())]),
            values: HashMap::from([(":v".into(), AttributeValue::N(v.to_string())), (":now".into(), now_v)]),
        }),
    }
}

/// A ConditionCheck needs some expression; this one always holds.
fn always_true() -> Expr {
    Expr {
        text: "attribute_exists(#pk) OR attribute_not_exists(#pk)".into(),
        names: HashMap::from([("#pk".into(), PK.into())]),
        values: HashMap::new(),
    }
}

/// What a failed condition found, from the ALL_OLD item DynamoDB returns with the failure.
fn found_in(old: Option<&Attrs>, now: i64) -> Found {
    match old.map(from_attrs) {
        Some(Ok(item)) if !item.is_expired(now) => Found::Version(item.version),
        _ => Found::Nothing,
    }
}

macro_rules! with_expr {
    ($builder:expr, $expr:expr) => {{
        let mut b = $builder;
        if let Some(e) = $expr {
            b = b.condition_expression(e.text).set_expression_attribute_names(Some(e.names));
            if !e.values.is_empty() {
                b = b.set_expression_attribute_values(Some(e.values));
            }
        }
        b
    }};
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        check_key(pk, sk)?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        match out.item() {
            None => Ok(None),
            Some(attrs) => {
                let item = from_attrs(attrs)?;
                Ok((!item.is_expired(now_unix())).then_some(item))
            }
        }
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        check_item(&item)?;
        let now = now_unix();
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_attrs(&item)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match with_expr!(req, condition_expr(condition, now)).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let old = match e.err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item(),
                    _ => None,
                };
                Err(StoreError::ConditionFailed {
                    pk: item.pk,
                    sk: item.sk,
                    expected: condition,
                    found: found_in(old, now),
                })
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::TransactionConflictException(_)) => {
                Err(StoreError::Contended { pk: item.pk, sk: item.sk })
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete(&self, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        check_key(pk, sk)?;
        let now = now_unix();
        let req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match with_expr!(req, condition_expr(condition, now)).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), DeleteItemError::ConditionalCheckFailedException(_)) =>
            {
                let old = match e.err() {
                    DeleteItemError::ConditionalCheckFailedException(c) => c.item(),
                    _ => None,
                };
                Err(StoreError::ConditionFailed {
                    pk: pk.to_string(),
                    sk: sk.to_string(),
                    expected: condition,
                    found: found_in(old, now),
                })
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), DeleteItemError::TransactionConflictException(_)) => {
                Err(StoreError::Contended { pk: pk.to_string(), sk: sk.to_string() })
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn query_page(
        &self,
        pk: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        check_key(pk, prefix)?;
        let now = now_unix();
        let mut items = Vec::new();
        let mut start: Option<Attrs> = start_after.map(|sk| Self::key(pk, sk));
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
                .set_exclusive_start_key(start.take());
            req = if prefix.is_empty() {
                req.key_condition_expression("#pk = :pk")
            } else {
                req.key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
            };
            // Expired items are filtered here rather than with a FilterExpression, because
            // DynamoDB applies Limit before filters and a page could come back short.
            let out = req.send().await.map_err(backend)?;
            for attrs in out.items() {
                let item = from_attrs(attrs)?;
                if !item.is_expired(now) {
                    items.push(item);
                    if items.len() >= limit {
                        return Ok(items);
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        let now = now_unix();
        let mut items = Vec::with_capacity(writes.len());
        for w in &writes {
            let twi = match w {
                Write::Put { item, condition } => {
                    let b = Put::builder().table_name(&self.table).set_item(Some(to_attrs(item)));
                    TransactWriteItem::builder()
                        .put(with_expr!(b, condition_expr(*condition, now)).build().map_err(backend)?)
                }
                Write::Delete { pk, sk, condition } => {
                    let b = Delete::builder().table_name(&self.table).set_key(Some(Self::key(pk, sk)));
                    TransactWriteItem::builder()
                        .delete(with_expr!(b, condition_expr(*condition, now)).build().map_err(backend)?)
                }
                Write::Check { pk, sk, condition } => {
                    let b = ConditionCheck::builder().table_name(&self.table).set_key(Some(Self::key(pk, sk)));
                    let expr = condition_expr(*condition, now).unwrap_or_else(always_true);
                    TransactWriteItem::builder().condition_check(with_expr!(b, Some(expr)).build().map_err(backend)?)
                }
                Write::Enqueue { queue, .. } => {
                    return Err(StoreError::InvalidTransaction(format!(
                        "DynamoDB cannot queue a message to {queue} inside a transaction; write the job to the outbox instead"
                    )));
                }
            };
            items.push(twi.build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => {
                let mapped = match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        cancelled(&writes, c.cancellation_reasons())
                    }
                    _ => None,
                };
                Err(mapped.unwrap_or_else(|| backend(SdkError::ServiceError(e))))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>, StoreError> {
        check_batch_get(keys)?;
        let now = now_unix();
        let mut found: HashMap<(String, String), Item> = HashMap::new();
        let mut wanted: Vec<Attrs> = Vec::new();
        for (pk, sk) in keys {
            let key = Self::key(pk, sk);
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
        // DynamoDB may answer part of a batch and return the rest as unprocessed keys (under
        // throttling); those are asked again, a bounded number of times.
        for attempt in 0..crate::backoff::Backoff::CONTENDED_WRITE.attempts {
            if wanted.is_empty() {
                break;
            }
            if attempt > 0 {
                crate::backoff::Backoff::CONTENDED_WRITE.wait(attempt).await;
            }
            let ask = KeysAndAttributes::builder().set_keys(Some(std::mem::take(&mut wanted))).consistent_read(true);
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, ask.build().map_err(backend)?)
                .send()
                .await
                .map_err(backend)?;
            for attrs in out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                let item = from_attrs(attrs)?;
                if !item.is_expired(now) {
                    found.insert((item.pk.clone(), item.sk.clone()), item);
                }
            }
            if let Some(rest) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                wanted = rest.keys().to_vec();
            }
        }
        if !wanted.is_empty() {
            return Err(StoreError::Backend {
                backend: "DynamoDB",
                message: format!("{} keys stayed unprocessed after every retry (throttled)", wanted.len()),
            });
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn increment_by(&self, pk: &str, sk: &str, by: u64) -> Result<u64, StoreError> {
        check_key(pk, sk)?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .update_expression("SET #d = if_not_exists(#d, :empty) ADD #v :one")
            .expression_attribute_names("#d", DATA)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":empty", AttributeValue::S(String::new()))
            .expression_attribute_values(":one", AttributeValue::N(by.max(1).to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::TransactionConflictException(_)) => {
                return Err(StoreError::Contended { pk: pk.to_string(), sk: sk.to_string() });
            }
            Err(e) => return Err(backend(e)),
        };
        let n = out.attributes().and_then(|a| a.get(VERSION)).and_then(|v| v.as_n().ok());
        n.and_then(|n| n.parse::<u64>().ok()).ok_or_else(|| StoreError::Corrupt {
            pk: pk.to_string(),
            sk: sk.to_string(),
            reason: "the counter's attribute v is not a number after the increment".into(),
        })
    }

    async fn purge_expired(&self, _max: usize) -> Result<usize, StoreError> {
        // DynamoDB's TTL deletes expired items (reads already hide them until it does).
        Ok(0)
    }
}

/// What a cancelled transaction means, from its per-write reasons: a condition that did not
/// hold (the caller reloads and decides again), or a collision with another transaction (the
/// caller retries). DynamoDB lists one reason per write, `None` for the writes that were fine.
/// Anything else (throttling, validation) is left to the caller as a backend failure.
fn cancelled(writes: &[Write], reasons: &[CancellationReason]) -> Option<StoreError> {
    let at = |code: &str| {
        reasons.iter().position(|r| r.code() == Some(code)).and_then(|i| writes.get(i).map(|w| (i, w.key())))
    };
    if let Some((index, (pk, sk))) = at("ConditionalCheckFailed") {
        return Some(StoreError::TransactionConflict { index, pk: pk.into(), sk: sk.into() });
    }
    at("TransactionConflict").map(|(_, (pk, sk))| StoreError::Contended { pk: pk.into(), sk: sk.into() })
}
