//! Delivery records: the answer each delivery of a request got, so that a redelivery (Particle
//! retrying, the same post twice) gets the same answer and changes nothing.
//!
//! **Where.** In the partition of the open-alert index entry for the event's (source, dedup
//! key), under `seen#<hash of the delivery key>`. A redelivery has the same body, so the same
//! dedup key, and finds it there. On the embedded store the record lands on the page that the
//! alert's index entry changes anyway, and both are read together. Earlier versions kept it in a
//! partition of its own (`seen#<source>#<delivery key>`): every record went to a random page of
//! one big tree, and after a million alerts that tree cost up to half of what a new alert
//! cost the embedded store.
//!
//! **What.** The answer as one short line (`created|ALR-12|open|high|1|0|`), about 35 bytes
//! instead of 116 of JSON, with the delivery key hashed to 24 hex digits (a Particle body hash
//! is 69 characters): in a storm of new alerts from many devices these records are most of what
//! lands at random places in the store, and every page split they cause is written again.
//!
//! **Before.** Records kept the old way (JSON, under `seen#<source>#<delivery key>`) are still
//! read, in the same batch read, never written: a delivery answered before an upgrade is
//! recognised after it. They expire within a day or the source's grouping window; where there
//! are none, the read finds nothing at the same place every time.

use super::apply::{IntakeResult, Outcome};
use super::{AlertEvent, DeliveryKey};
use crate::domain::{AlertStatus, Urgency};
use crate::repo::alerts::AlertRepo;
use crate::repo::{RepoError, decode, encode};
use crate::store::{Condition, Item, Write};
use sha2::{Digest, Sha256};

/// Keys read per event with a delivery: where its answer is kept, and where it used to be.
pub(super) const KEYS_PER_DELIVERY: usize = 2;

/// Bytes of the delivery key's SHA-256 kept in the record's key: 96 bits, in a partition that
/// holds only the deliveries of one dedup key.
const HASH_BYTES: usize = 12;

/// The keys of the delivery records of those `events` that have a delivery key, in order:
/// [`KEYS_PER_DELIVERY`] each (where it is kept, then where earlier versions kept it).
pub(super) fn keys(events: &[AlertEvent]) -> Vec<(String, String)> {
    events.iter().filter_map(|e| e.delivery.as_ref().map(|d| [key(e, d), legacy_key(e, d)])).flatten().collect()
}

/// Each event's earlier answer (`None` for a first delivery or an event without a delivery
/// key), from the items read under [`keys`] (in that order).
pub(super) fn answered(
    events: &[AlertEvent],
    mut found: impl Iterator<Item = Option<Item>>,
) -> Result<Vec<Option<IntakeResult>>, RepoError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let mut record = None;
        if e.delivery.is_some() {
            for _ in 0..KEYS_PER_DELIVERY {
                let item = found.next().flatten();
                record = record.or(item);
            }
        }
        out.push(record.map(|item| decode_answer(&item)).transpose()?);
    }
    Ok(out)
}

/// The record that answers a later delivery of `event` with `result` (none without a delivery
/// key); it fails the transaction if another request recorded this delivery first.
pub(super) fn record(event: &AlertEvent, result: &IntakeResult) -> Option<Write> {
    event.delivery.as_ref().map(|d| {
        let (pk, sk) = key(event, d);
        let item = Item::new(pk, sk, encode_answer(result)).expiring_at(event.at.as_second() + d.ttl_secs);
        Write::Put { item, condition: Condition::Absent }
    })
}

fn key(event: &AlertEvent, delivery: &DeliveryKey) -> (String, String) {
    let digest = Sha256::digest(delivery.key.as_bytes());
    let mut sk = String::with_capacity(5 + 2 * HASH_BYTES);
    sk.push_str("seen#");
    sk.push_str(&hex::encode(&digest[..HASH_BYTES]));
    (AlertRepo::open_key(&event.source, &event.dedup_key).0, sk)
}

fn legacy_key(event: &AlertEvent, delivery: &DeliveryKey) -> (String, String) {
    (format!("seen#{}#{}", event.source, delivery.key), "seen".to_string())
}

/// `outcome|alert id|status|urgency|occurrences|deduplicated (0/1)|urgency raised from`, for
/// the outcomes a change records; JSON for anything else (an outcome with a reason).
fn encode_answer(r: &IntakeResult) -> String {
    let Some(outcome) = COMPACT_OUTCOMES.iter().find(|(o, _)| *o == r.outcome).map(|(_, name)| *name) else {
        return encode(r);
    };
    let alert_id = r.alert_id.as_deref().unwrap_or_default();
    if alert_id.contains('|') {
        return encode(r);
    }
    format!(
        "{outcome}|{alert_id}|{}|{}|{}|{}|{}",
        r.status.map(AlertStatus::as_str).unwrap_or_default(),
        r.urgency.map(Urgency::as_str).unwrap_or_default(),
        r.occurrences,
        u8::from(r.deduplicated),
        r.raised_from.map(Urgency::as_str).unwrap_or_default(),
    )
}

/// The outcomes written as a line, and their names there (serde's).
const COMPACT_OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Created, "created"),
    (Outcome::Grouped, "grouped"),
    (Outcome::Acknowledged, "acknowledged"),
    (Outcome::Resolved, "resolved"),
];

fn decode_answer(item: &Item) -> Result<IntakeResult, RepoError> {
    if item.data.starts_with('{') {
        return Ok(decode::<IntakeResult>(item, "delivery record")?.value);
    }
    let bad =
        |why: &str| RepoError::Decode { what: "delivery record".into(), reason: format!("{why} in {:?}", item.data) };
    let f: Vec<&str> = item.data.split('|').collect();
    let [outcome, alert_id, status, urgency, occurrences, deduplicated, raised_from] = f[..] else {
        return Err(bad("not 7 fields"));
    };
    let urgency_named = |field: &str| match field {
        "" => Ok(None),
        _ => Urgency::ALL.into_iter().find(|u| u.as_str() == field).map(Some).ok_or_else(|| bad("unknown urgency")),
    };
    Ok(IntakeResult {
        outcome: COMPACT_OUTCOMES
            .iter()
            .find(|(_, name)| *name == outcome)
            .map(|(o, _)| o.clone())
            .ok_or_else(|| bad("unknown outcome"))?,
        alert_id: Some(alert_id.to_string()).filter(|id| !id.is_empty()),
        status: match status {
            "" => None,
            // serde knows every status; its names are `as_str`'s (tested).
            _ => Some(serde_json::from_value(serde_json::Value::from(status)).map_err(|_| bad("unknown status"))?),
        },
        urgency: urgency_named(urgency)?,
        occurrences: occurrences.parse().map_err(|_| bad("occurrences not a number"))?,
        deduplicated: match deduplicated {
            "0" => false,
            "1" => true,
            _ => return Err(bad("deduplicated not 0 or 1")),
        },
        raised_from: urgency_named(raised_from)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Actor;
    use crate::ingest::EventKind;

    fn result(outcome: Outcome, raised_from: Option<Urgency>) -> IntakeResult {
        IntakeResult {
            outcome,
            alert_id: Some("ALR-1770319".into()),
            status: Some(AlertStatus::Acknowledged),
            urgency: Some(Urgency::Critical),
            occurrences: 42,
            deduplicated: true,
            raised_from,
        }
    }

    fn item(data: String) -> Item {
        Item::new("open#s#k", "seen#x", data)
    }

    #[test]
    fn answers_round_trip_in_one_short_line() {
        for outcome in [Outcome::Created, Outcome::Grouped, Outcome::Acknowledged, Outcome::Resolved] {
            for raised in [None, Some(Urgency::Low)] {
                let r = result(outcome.clone(), raised);
                let line = encode_answer(&r);
                assert!(!line.starts_with('{') && line.len() < 64, "{line}");
                assert_eq!(decode_answer(&item(line)).unwrap(), r);
            }
        }
        let first =
            IntakeResult { deduplicated: false, status: Some(AlertStatus::Open), ..result(Outcome::Created, None) };
        assert_eq!(encode_answer(&first), "created|ALR-1770319|open|critical|42|0|");
    }

    #[test]
    fn the_names_in_a_line_are_serdes() {
        for (outcome, name) in &COMPACT_OUTCOMES {
            assert_eq!(serde_json::to_value(outcome).unwrap()["outcome"], *name);
        }
        for s in [AlertStatus::Open, AlertStatus::Acknowledged, AlertStatus::Resolved] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for u in Urgency::ALL {
            assert_eq!(serde_json::to_value(u).unwrap(), u.as_str());
        }
    }

    #[test]
    fn answers_with_a_reason_and_earlier_json_records_are_json() {
        let refused = result(Outcome::Refused { reason: "already resolved | closed".into() }, None);
        let json = encode_answer(&refused);
        assert!(json.starts_with('{'));
        assert_eq!(decode_answer(&item(json)).unwrap(), refused);
        // As versions before 2026-12-01 wrote them.
        let old = r#"{"outcome":"grouped","alert_id":"ALR-1","status":"open","urgency":"high","occurrences":5,"deduplicated":true}"#;
        let decoded = decode_answer(&item(old.into())).unwrap();
        assert_eq!((decoded.outcome, decoded.occurrences, decoded.urgency), (Outcome::Grouped, 5, Some(Urgency::High)));
    }

    #[test]
    fn a_damaged_line_is_an_error_that_says_what_is_wrong() {
        for (line, why) in [
            ("created|ALR-1|open|high|1|0", "not 7 fields"),
            ("opened|ALR-1|open|high|1|0|", "unknown outcome"),
            ("created|ALR-1|shut|high|1|0|", "unknown status"),
            ("created|ALR-1|open|high|x|0|", "occurrences not a number"),
            ("created|ALR-1|open|high|1|2|", "deduplicated not 0 or 1"),
        ] {
            let e = decode_answer(&item(line.into())).unwrap_err().to_string();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn the_record_sits_in_the_open_alert_partition_under_a_short_stable_hash() {
        let event = |key: &str, dedup: &str| AlertEvent {
            kind: EventKind::Trigger,
            source: "freezer".into(),
            dedup_key: dedup.into(),
            summary: String::new(),
            details: String::new(),
            urgency: Urgency::High,
            urgency_named: false,
            actor: Actor::System,
            at: jiff::Timestamp::UNIX_EPOCH,
            alert_id: None,
            delivery: Some(DeliveryKey { key: key.into(), ttl_secs: 600 }),
        };
        let body = format!("body:{}", "ab".repeat(32));
        let keys = keys(&[event(&body, "dev7:alert"), event("event:ev-1", "dev7:alert")]);
        assert_eq!(keys.len(), 2 * KEYS_PER_DELIVERY);
        assert_eq!(keys[0].0, AlertRepo::open_key("freezer", "dev7:alert").0);
        assert_eq!(keys[0].1.len(), "seen#".len() + 2 * HASH_BYTES);
        assert_eq!(keys[1], (format!("seen#freezer#{body}"), "seen".to_string()));
        assert_ne!(keys[0].1, keys[2].1, "different deliveries, different records");
        // The first 12 bytes of SHA-256("event:ev-1") in lower-case hex (Python's hashlib):
        // records written by earlier versions are found under the same key.
        assert_eq!(keys[2].1, "seen#d869ad599ed16ac0399bdc12");
        assert_eq!(keys, super::keys(&[event(&body, "dev7:alert"), event("event:ev-1", "dev7:alert")]));
        let Some(Write::Put { item, condition: Condition::Absent }) =
            record(&event("event:ev-1", "dev7:alert"), &result(Outcome::Created, None))
        else {
            panic!("a put if absent");
        };
        assert_eq!((item.pk.as_str(), item.sk.as_str()), (keys[2].0.as_str(), keys[2].1.as_str()));
        assert_eq!(item.expires_at, Some(600));
    }
}
