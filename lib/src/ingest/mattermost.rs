//! Mattermost outgoing webhooks: the payload in both encodings, and what the message says.
//!
//! Mattermost sends the same keys as a form (the default; `timestamp` in seconds) or as JSON
//! (`timestamp` in milliseconds); `text` is the whole post, trigger word included
//! (../shared/reference/mattermost.md §1.1).

use super::{AlertEvent, DeliveryKey, EventKind};
use crate::config::SourceConfig;
use crate::domain::{Actor, Urgency};
use jiff::Timestamp;
use serde::Deserialize;

/// How long a post id is remembered: Mattermost does not retry, but the same post can reach
/// Klaxon twice (two hooks with the same URL, a proxy retry).
const POST_ID_MEMORY_SECS: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Form,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingWebhook {
    pub token: Option<String>,
    pub team_id: String,
    pub channel_id: String,
    pub channel_name: String,
    /// Milliseconds since the epoch, whichever encoding it came in.
    pub timestamp_ms: i64,
    pub user_id: String,
    pub user_name: String,
    pub post_id: String,
    pub text: String,
    pub trigger_word: String,
    pub file_ids: String,
}

/// The wire shape; `T` is the timestamp's type: seconds as text in a form, ms as a number in JSON.
#[derive(Debug, Deserialize)]
struct Raw<T> {
    token: Option<String>,
    team_id: Option<String>,
    channel_id: Option<String>,
    channel_name: Option<String>,
    timestamp: Option<T>,
    user_id: Option<String>,
    user_name: Option<String>,
    post_id: Option<String>,
    text: Option<String>,
    trigger_word: Option<String>,
    file_ids: Option<String>,
}

impl<T> Raw<T> {
    fn with_timestamp<U>(self, timestamp: Option<U>) -> Raw<U> {
        Raw {
            token: self.token,
            team_id: self.team_id,
            channel_id: self.channel_id,
            channel_name: self.channel_name,
            timestamp,
            user_id: self.user_id,
            user_name: self.user_name,
            post_id: self.post_id,
            text: self.text,
            trigger_word: self.trigger_word,
            file_ids: self.file_ids,
        }
    }
}

/// A payload that cannot be read; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPayload(pub String);

fn required(value: Option<String>, field: &str) -> Result<String, BadPayload> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        BadPayload(format!("field {field} is missing or empty; is this request from a Mattermost outgoing webhook?"))
    })
}

pub fn parse(encoding: Encoding, body: &[u8]) -> Result<OutgoingWebhook, BadPayload> {
    let b: Raw<i64> = match encoding {
        Encoding::Form => {
            let f: Raw<String> = serde_urlencoded::from_bytes(body)
                .map_err(|e| BadPayload(format!("the form body cannot be decoded: {e}")))?;
            let timestamp_ms = match f.timestamp.as_deref() {
                None | Some("") => None,
                Some(t) => Some(
                    t.parse::<i64>()
                        .map_err(|_| BadPayload(format!("field timestamp must be whole seconds, not {t:?}")))?
                        .saturating_mul(1000),
                ),
            };
            f.with_timestamp(timestamp_ms)
        }
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| BadPayload(format!("the JSON body cannot be decoded: {e}")))?
        }
    };
    Ok(OutgoingWebhook {
        token: b.token,
        team_id: b.team_id.unwrap_or_default(),
        channel_id: b.channel_id.unwrap_or_default(),
        channel_name: b.channel_name.unwrap_or_default(),
        timestamp_ms: b.timestamp.unwrap_or_default(),
        user_id: required(b.user_id, "user_id")?,
        user_name: b.user_name.unwrap_or_default(),
        post_id: required(b.post_id, "post_id")?,
        text: b.text.unwrap_or_default(),
        trigger_word: b.trigger_word.unwrap_or_default(),
        file_ids: b.file_ids.unwrap_or_default(),
    })
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Raise an alert.
    Raise { title: String, details: String, urgency: Urgency },
    /// `<trigger> ack ALR-12` / `<trigger> resolve ALR-12`.
    Act { kind: EventKind, alert_id: String },
    /// Nothing after the trigger word.
    Empty,
}

/// The urgency a whole word names: `critical`, `high`, `medium`, `low`, `sev1`..`sev4`,
/// `p1`..`p4` (1 is critical, 4 is low), case-insensitive.
pub fn urgency_word(word: &str) -> Option<Urgency> {
    match word.to_ascii_lowercase().as_str() {
        "critical" | "sev1" | "p1" => Some(Urgency::Critical),
        "high" | "sev2" | "p2" => Some(Urgency::High),
        "medium" | "sev3" | "p3" => Some(Urgency::Medium),
        "low" | "sev4" | "p4" => Some(Urgency::Low),
        _ => None,
    }
}

/// The urgency named in `text`, matching whole words only ("slow" is not low, "highway" is not
/// high). When several are named, the highest wins: under-paging is the costlier mistake.
pub fn urgency_in(text: &str) -> Option<Urgency> {
    text.split(|c: char| !c.is_alphanumeric()).filter_map(urgency_word).max()
}

fn alert_id(word: &str) -> Option<String> {
    let (prefix, number) = word.split_once('-')?;
    (prefix.eq_ignore_ascii_case("ALR") && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("ALR-{number}"))
}

/// Reads the message: drops the trigger word (the whole first word, which Mattermost matched),
/// then either an action on an alert or a title (first line), details (the other lines) and an
/// urgency. A leading urgency word is syntax and leaves the title.
pub fn read_command(text: &str, trigger_word: &str, default: Urgency) -> Command {
    let text = text.trim();
    let rest = if !trigger_word.is_empty() && text.starts_with(trigger_word) {
        text.split_once(char::is_whitespace).map_or("", |(_, rest)| rest).trim_start()
    } else {
        text
    };
    let mut words = rest.split_whitespace();
    let first = words.next().unwrap_or_default();
    let action = match first.to_ascii_lowercase().as_str() {
        "ack" | "acknowledge" => Some(EventKind::Acknowledge),
        "resolve" => Some(EventKind::Resolve),
        _ => None,
    };
    if let (Some(kind), Some(id)) = (action, words.next().and_then(alert_id)) {
        return Command::Act { kind, alert_id: id };
    }
    let (first_line, others) = rest.split_once('\n').unwrap_or((rest, ""));
    let mut title = first_line.trim();
    if let Some((word, after)) = title.split_once(char::is_whitespace)
        && urgency_word(word.trim_end_matches(|c: char| !c.is_alphanumeric())).is_some()
    {
        title = after.trim_start();
    } else if urgency_word(title).is_some() {
        title = "";
    }
    if title.is_empty() && others.trim().is_empty() {
        return Command::Empty;
    }
    let urgency = urgency_in(rest).unwrap_or(default);
    let title = if title.is_empty() { others.trim().lines().next().unwrap_or_default().trim() } else { title };
    Command::Raise { title: title.to_string(), details: others.trim().to_string(), urgency }
}

/// Two triggers with the same words (case and spacing aside) are the same problem.
pub fn dedup_key(title: &str) -> String {
    let key: String = title.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    key.chars().take(200).collect()
}

/// The event a command becomes, or `None` for an empty message.
pub fn to_event(
    source: &SourceConfig,
    hook: &OutgoingWebhook,
    command: &Command,
    now: Timestamp,
) -> Option<AlertEvent> {
    let delivery = Some(DeliveryKey { key: format!("post:{}", hook.post_id), ttl_secs: POST_ID_MEMORY_SECS });
    let actor = Actor::user(&hook.user_id, &hook.user_name);
    let (kind, title, details, urgency, alert_id) = match command {
        Command::Empty => return None,
        Command::Raise { title, details, urgency } => {
            (EventKind::Trigger, title.clone(), details.clone(), *urgency, None)
        }
        Command::Act { kind, alert_id } => {
            (*kind, String::new(), String::new(), source.default_urgency, Some(alert_id.clone()))
        }
    };
    let mut details = details;
    if kind == EventKind::Trigger && !hook.channel_name.is_empty() {
        let origin = format!("Raised by @{} in ~{}", hook.user_name, hook.channel_name);
        details = if details.is_empty() { origin } else { format!("{details}\n\n{origin}") };
    }
    Some(AlertEvent {
        kind,
        source: source.id.clone(),
        dedup_key: dedup_key(&title),
        summary: title,
        details,
        urgency,
        actor,
        at: now,
        alert_id,
        delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &[u8] = include_bytes!("../../../tests/fixtures/mattermost/outgoing-webhook.form");
    const JSON: &[u8] = include_bytes!("../../../tests/fixtures/mattermost/outgoing-webhook.json");

    #[test]
    fn both_encodings_give_the_same_payload_with_the_timestamp_in_ms() {
        let form = parse(Encoding::Form, FORM).unwrap();
        let json = parse(Encoding::Json, JSON).unwrap();
        assert_eq!(form.timestamp_ms, 1_795_435_200_000, "form seconds become ms");
        assert_eq!(json.timestamp_ms, 1_795_435_200_123);
        assert_eq!(form.post_id, json.post_id);
        assert_eq!(form.text, "#alert critical checkout returns 500s\nsince the 12:00 deploy");
        assert_eq!(form.trigger_word, "#alert");
        assert_eq!(form.file_ids, "");
    }

    #[test]
    fn missing_required_fields_and_garbage_are_named() {
        let err = parse(Encoding::Form, b"token=x&text=hi&user_id=u").unwrap_err();
        assert!(err.0.contains("post_id"), "{err}");
        let err = parse(Encoding::Json, b"{\"post_id\": 5}").unwrap_err();
        assert!(err.0.contains("JSON body"), "{err}");
        let err = parse(Encoding::Form, b"post_id=p&user_id=u&timestamp=soon").unwrap_err();
        assert!(err.0.contains("timestamp"), "{err}");
    }

    #[test]
    fn urgency_matches_whole_words_only() {
        assert_eq!(urgency_in("slow response on the highway"), None);
        assert_eq!(urgency_in("low disk"), Some(Urgency::Low));
        assert_eq!(urgency_in("HIGH load"), Some(Urgency::High));
        assert_eq!(urgency_in("db is down (sev1)"), Some(Urgency::Critical));
        assert_eq!(urgency_in("p3: flaky test"), Some(Urgency::Medium));
        assert_eq!(urgency_in("sev4 cosmetic"), Some(Urgency::Low));
        assert_eq!(urgency_in("low disk on critical db"), Some(Urgency::Critical), "the highest named wins");
        assert_eq!(urgency_in("p10 sev5 criticality"), None);
    }

    #[test]
    fn the_trigger_word_and_a_leading_urgency_leave_the_title() {
        let c = read_command("#alert critical checkout returns 500s\nsince the deploy", "#alert", Urgency::High);
        assert_eq!(
            c,
            Command::Raise {
                title: "checkout returns 500s".into(),
                details: "since the deploy".into(),
                urgency: Urgency::Critical
            }
        );
        let c = read_command("#alert slow queries on the highway service", "#alert", Urgency::Medium);
        assert_eq!(
            c,
            Command::Raise {
                title: "slow queries on the highway service".into(),
                details: String::new(),
                urgency: Urgency::Medium
            }
        );
    }

    #[test]
    fn a_channel_hook_without_trigger_word_keeps_the_whole_text() {
        let c = read_command("disk full on db-2", "", Urgency::Low);
        assert_eq!(
            c,
            Command::Raise { title: "disk full on db-2".into(), details: String::new(), urgency: Urgency::Low }
        );
    }

    #[test]
    fn ack_and_resolve_with_an_alert_id_are_actions() {
        assert_eq!(
            read_command("#alert resolve alr-12", "#alert", Urgency::High),
            Command::Act { kind: EventKind::Resolve, alert_id: "ALR-12".into() }
        );
        assert_eq!(
            read_command("#alert ack ALR-3 looking", "#alert", Urgency::High),
            Command::Act { kind: EventKind::Acknowledge, alert_id: "ALR-3".into() }
        );
        assert!(matches!(read_command("#alert resolve the dns issue", "#alert", Urgency::High), Command::Raise { .. }));
    }

    #[test]
    fn nothing_after_the_trigger_is_empty() {
        assert_eq!(read_command("#alert", "#alert", Urgency::High), Command::Empty);
        assert_eq!(read_command("#alert   critical ", "#alert", Urgency::High), Command::Empty);
    }

    #[test]
    fn dedup_keys_ignore_case_and_spacing() {
        assert_eq!(dedup_key("Checkout  returns 500s"), dedup_key("checkout returns 500S"));
    }
}
