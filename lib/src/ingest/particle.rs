//! Particle webhooks: the default form and JSON bodies (with the product fields `userid`,
//! `fw_version`, `public`), custom JSON bodies, event mapping and templates
//! (../shared/reference/peers.md §5).

use super::template::{Vars, render};
use super::{AlertEvent, DeliveryKey, EventKind};
use crate::config::{EventAction, SourceConfig};
use crate::domain::Actor;
use jiff::Timestamp;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use super::mattermost::{BadPayload, Encoding};

/// Particle ids an event uniquely; a repeat of one is a redelivery for at least a day.
const EVENT_ID_MEMORY_SECS: i64 = 86_400;
/// Field names under which a custom template may send `{{{PARTICLE_EVENT_ID}}}`.
const EVENT_ID_FIELDS: [&str; 3] = ["PARTICLE_EVENT_ID", "particle_event_id", "event_id"];

pub const DEFAULT_SUMMARY: &str = "{{event}} from {{coreid}}";
pub const DEFAULT_DETAILS: &str = "data: {{data}}\npublished at: {{published_at}}";
pub const DEFAULT_DEDUP: &str = "{{coreid}}:{{event_family}}";

/// The request body as sent: every top-level field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticleRequest {
    pub fields: Map<String, Value>,
}

impl ParticleRequest {
    pub fn text(&self, field: &str) -> Option<String> {
        match self.fields.get(field)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    pub fn event(&self) -> Option<String> {
        self.text("event").filter(|e| !e.is_empty())
    }
}

pub fn parse(encoding: Encoding, body: &[u8]) -> Result<ParticleRequest, BadPayload> {
    let fields = match encoding {
        Encoding::Form => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| BadPayload(format!("the form body cannot be decoded: {e}")))?;
            pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
        }
        Encoding::Json => match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(BadPayload("the JSON body must be an object such as Particle's default data".into())),
            Err(e) => return Err(BadPayload(format!("the JSON body cannot be decoded: {e}"))),
        },
    };
    let request = ParticleRequest { fields };
    if request.event().is_none() {
        return Err(BadPayload(
            "field event is missing or empty; use Particle's default data, or include \"event\": \"{{{PARTICLE_EVENT_NAME}}}\" in a custom body".into(),
        ));
    }
    Ok(request)
}

/// The action for an event name: exact match (Particle matches webhook names by prefix, so an
/// `ALERT` hook also sends `ALERTS`, which must not trigger).
pub fn action_for(source: &SourceConfig, event: &str) -> Option<EventAction> {
    if source.events.is_empty() {
        match event {
            "ALERT" => Some(EventAction::Trigger),
            "RESOLVE" => Some(EventAction::Resolve),
            _ => None,
        }
    } else {
        source.events.get(event).copied()
    }
}

fn mapped_names(source: &SourceConfig) -> String {
    if source.events.is_empty() {
        "ALERT, RESOLVE".into()
    } else {
        source.events.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `temp/ALERT` and `temp/RESOLVE` are one family, `temp`; plain `ALERT` and `RESOLVE` are the
/// family `alert`. That is what lets RESOLVE find what ALERT opened.
pub fn event_family(event: &str) -> String {
    const ACTION_WORDS: [&str; 6] = ["ACKNOWLEDGE", "RESOLVED", "RESOLVE", "ALERT", "TRIGGER", "ACK"];
    let upper = event.to_ascii_uppercase();
    let stem = ACTION_WORDS
        .iter()
        .find(|w| upper.ends_with(*w))
        .map_or(event, |w| &event[..event.len() - w.len()])
        .trim_end_matches(['-', '_', '/', ':', '.', ' ']);
    if stem.is_empty() { "alert".into() } else { stem.to_string() }
}

fn vars(source: &SourceConfig, req: &ParticleRequest, event: &str) -> Vars {
    let mut v = Vars::default();
    for (k, value) in &req.fields {
        v.set(k, value.clone());
    }
    // `data` is a string in Particle's default body; when it holds JSON, its keys become
    // variables too ({{data.temp}}), as in Particle's own templates.
    if let Some(Value::String(s)) = req.fields.get("data")
        && let Ok(parsed @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str::<Value>(s)
    {
        v.set("data", parsed);
    }
    v.set("event_family", event_family(event));
    v.set("source", source.id.clone());
    v
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpretation {
    Event(AlertEvent),
    /// Answered 200 with this reason: Particle throttles a whole hostname on 4xx/5xx answers.
    Ignored(String),
}

pub fn interpret(source: &SourceConfig, req: &ParticleRequest, raw_body: &[u8], now: Timestamp) -> Interpretation {
    let event = req.event().unwrap_or_default();
    let kind = match action_for(source, &event) {
        Some(EventAction::Trigger) => EventKind::Trigger,
        Some(EventAction::Acknowledge) => EventKind::Acknowledge,
        Some(EventAction::Resolve) => EventKind::Resolve,
        Some(EventAction::Ignore) => {
            return Interpretation::Ignored(format!("event {event:?} is mapped to ignore for source {}", source.id));
        }
        None => {
            return Interpretation::Ignored(format!(
                "event {event:?} is not mapped for source {} (mapped, matched exactly: {})",
                source.id,
                mapped_names(source)
            ));
        }
    };
    let v = vars(source, req, &event);
    let pick = |t: &Option<String>, default: &str| render(t.as_deref().unwrap_or(default), &v).trim().to_string();
    let event_id = EVENT_ID_FIELDS.iter().find_map(|f| req.text(f)).filter(|id| !id.is_empty());
    let delivery = match event_id {
        Some(id) => DeliveryKey { key: format!("event:{id}"), ttl_secs: EVENT_ID_MEMORY_SECS },
        None => DeliveryKey {
            key: format!("body:{:x}", Sha256::digest(raw_body)),
            ttl_secs: source.grouping_window().as_secs().max(1) as i64,
        },
    };
    let mut summary = pick(&source.summary_template, DEFAULT_SUMMARY);
    if summary.is_empty() {
        summary = format!("{event} from {}", req.text("coreid").unwrap_or_else(|| "an unknown device".into()));
    }
    let mut dedup_key = pick(&source.dedup_template, DEFAULT_DEDUP);
    if dedup_key.trim_matches(':').is_empty() {
        dedup_key = event_family(&event);
    }
    Interpretation::Event(AlertEvent {
        kind,
        source: source.id.clone(),
        dedup_key,
        summary,
        details: pick(&source.details_template, DEFAULT_DETAILS),
        urgency: source.default_urgency,
        urgency_named: false,
        actor: Actor::source(&source.id),
        at: now,
        alert_id: None,
        delivery: Some(delivery),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const FORM: &[u8] = include_bytes!("../../../tests/fixtures/particle/default.form");
    const JSON: &[u8] = include_bytes!("../../../tests/fixtures/particle/default.json");
    const PRODUCT: &[u8] = include_bytes!("../../../tests/fixtures/particle/product.json");

    fn source(extra: &str) -> SourceConfig {
        let text = format!("version = 1\n[[sources]]\nid = \"freezer\"\nkind = \"particle\"\ninsecure = true\n{extra}");
        Config::from_toml(&text, "t", &|_| None).expect("test config").sources.remove(0)
    }

    fn event(i: Interpretation) -> AlertEvent {
        match i {
            Interpretation::Event(e) => e,
            Interpretation::Ignored(why) => panic!("ignored: {why}"),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_795_435_200).unwrap()
    }

    #[test]
    fn default_form_and_json_bodies_give_the_same_alert() {
        let s = source("");
        let from_form = event(interpret(&s, &parse(Encoding::Form, FORM).unwrap(), FORM, now()));
        let from_json = event(interpret(&s, &parse(Encoding::Json, JSON).unwrap(), JSON, now()));
        assert_eq!(from_form.summary, "ALERT from e00fce68f0a0c9b1d2e3f4a5");
        assert_eq!((from_form.summary.clone(), from_form.dedup_key.clone()), (from_json.summary, from_json.dedup_key));
        assert_eq!(from_form.dedup_key, "e00fce68f0a0c9b1d2e3f4a5:alert");
        assert_eq!(from_form.kind, EventKind::Trigger);
        assert!(
            from_form.details.contains(r#"{"temp":-3.5,"door":"closed"}"#) || from_form.details.contains("temp"),
            "{}",
            from_form.details
        );
    }

    #[test]
    fn product_fields_and_json_data_keys_are_template_variables() {
        let s = source(
            "summary_template = \"{{data.temp}} °C on {{coreid}} fw {{fw_version}} user {{userid}} public {{public}}\"\n",
        );
        let e = event(interpret(&s, &parse(Encoding::Json, PRODUCT).unwrap(), PRODUCT, now()));
        assert_eq!(e.summary, "-3.5 °C on e00fce68f0a0c9b1d2e3f4a5 fw 7 user 5f1e2d3c4b5a69788796a5b4 public false");
    }

    #[test]
    fn missing_template_keys_render_empty_and_never_fail() {
        let s = source("summary_template = \"humidity {{data.humidity}}%\"\ndedup_template = \"{{data.zone}}\"\n");
        let e = event(interpret(&s, &parse(Encoding::Form, FORM).unwrap(), FORM, now()));
        assert_eq!(e.summary, "humidity %");
        assert_eq!(e.dedup_key, "alert", "an empty key falls back to the event family");
    }

    #[test]
    fn event_names_match_exactly() {
        let s = source("");
        let body = b"event=ALERTS&data=x&coreid=d1";
        let req = parse(Encoding::Form, body).unwrap();
        match interpret(&s, &req, body, now()) {
            Interpretation::Ignored(why) => {
                assert!(why.contains("\"ALERTS\" is not mapped") && why.contains("ALERT, RESOLVE"), "{why}")
            }
            other => panic!("ALERTS must not trigger: {other:?}"),
        }
        let custom = source(
            "[sources.events]\n\"temp/ALERT\" = \"trigger\"\n\"temp/OK\" = \"resolve\"\nheartbeat = \"ignore\"\n",
        );
        let body = b"event=ALERT&coreid=d1";
        assert!(matches!(
            interpret(&custom, &parse(Encoding::Form, body).unwrap(), body, now()),
            Interpretation::Ignored(_)
        ));
        let body = b"event=heartbeat&coreid=d1";
        assert!(
            matches!(interpret(&custom, &parse(Encoding::Form, body).unwrap(), body, now()), Interpretation::Ignored(ref w) if w.contains("mapped to ignore"))
        );
        let body = b"event=temp/OK&coreid=d1";
        assert_eq!(
            event(interpret(&custom, &parse(Encoding::Form, body).unwrap(), body, now())).kind,
            EventKind::Resolve
        );
    }

    #[test]
    fn alert_and_resolve_share_a_family() {
        assert_eq!(event_family("ALERT"), "alert");
        assert_eq!(event_family("RESOLVE"), "alert");
        assert_eq!(event_family("temp/ALERT"), "temp");
        assert_eq!(event_family("temp_resolve"), "temp");
        assert_eq!(event_family("door-open"), "door-open");
    }

    #[test]
    fn the_particle_event_id_is_the_delivery_key_when_sent_else_the_body_hash() {
        let s = source("");
        let with_id = br#"{"event":"ALERT","data":"x","coreid":"d1","published_at":"2026-11-23T12:00:00Z","PARTICLE_EVENT_ID":"ev-123"}"#;
        let e = event(interpret(&s, &parse(Encoding::Json, with_id).unwrap(), with_id, now()));
        assert_eq!(e.delivery.unwrap().key, "event:ev-123");
        let e = event(interpret(&s, &parse(Encoding::Form, FORM).unwrap(), FORM, now()));
        let d = e.delivery.unwrap();
        assert!(d.key.starts_with("body:") && d.key.len() == 5 + 64, "{}", d.key);
        assert_eq!(d.ttl_secs, 600, "body hashes are remembered for the grouping window");
    }

    #[test]
    fn bodies_without_event_or_not_objects_are_refused_with_a_reason() {
        assert!(parse(Encoding::Form, b"data=x&coreid=d1").unwrap_err().0.contains("field event"));
        assert!(parse(Encoding::Json, b"[1,2]").unwrap_err().0.contains("object"));
        assert!(parse(Encoding::Json, b"{\"event\":").unwrap_err().0.contains("cannot be decoded"));
    }
}
