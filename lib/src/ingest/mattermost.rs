//! Mattermost outgoing webhooks: the payload in both encodings, and what the message says.
//!
//! Mattermost sends the same keys as a form (the default; `timestamp` in seconds) or as JSON
//! (`timestamp` in milliseconds); `text` is the whole post, trigger word included
//! (../shared/reference/mattermost.md §1.1).

use super::{AlertEvent, DeliveryKey, EventKind};
use crate::config::{Secret, SourceConfig};
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
    /// `Secret` so that a `Debug` of the payload never prints it.
    pub token: Option<Secret>,
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

/// Only the `token` field, read leniently, so that the caller can be verified before anything
/// else of the body is looked at. `None` when there is none (or the body cannot be decoded).
pub fn token(encoding: Encoding, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenOnly {
        token: Option<String>,
    }
    match encoding {
        Encoding::Form => url::form_urlencoded::parse(body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()),
        Encoding::Json => serde_json::from_slice::<TokenOnly>(body).ok().and_then(|t| t.token),
    }
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
        token: b.token.map(Secret::new),
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
    /// Raise an alert; `urgency` is `None` when the message names none (the source's default).
    Raise { title: String, details: String, urgency: Option<Urgency> },
    /// `<trigger> ack ALR-12` / `<trigger> resolve ALR-12`.
    Act { kind: EventKind, alert_id: String },
    /// An action verb without an alert id: answer with how to write it, raise nothing.
    Usage { kind: EventKind },
    /// `<trigger> assign ALR-12 @bob`.
    Assign { alert_id: String, user: String },
    /// `<trigger> snooze ALR-12 1h`.
    Snooze { alert_id: String, length: String },
    /// `assign` or `snooze` without all its words: answer with how to write it.
    ManageUsage { verb: &'static str },
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

/// The urgency an explicit marker names: `sev1`..`sev4`, `p1`..`p4`, `!critical`,
/// `urgency:critical` or `[critical]` (any urgency word inside the last three). Surrounding
/// punctuation is ignored: `(sev1)`, `p2:` and `[high],` are markers too.
pub fn urgency_marker(token: &str) -> Option<Urgency> {
    let t = token.trim_start_matches('(').trim_end_matches(|c: char| ".,;:!?)".contains(c));
    let lower = t.to_ascii_lowercase();
    let bare = |w: &str| matches!(w, "sev1" | "sev2" | "sev3" | "sev4" | "p1" | "p2" | "p3" | "p4");
    if bare(&lower) {
        return urgency_word(&lower);
    }
    let inner = lower
        .strip_prefix('!')
        .or_else(|| lower.strip_prefix("urgency:"))
        .or_else(|| lower.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
    urgency_word(inner)
}

/// The urgency a message names: a leading urgency word, or explicit markers anywhere; the
/// highest wins when there are several. Plain urgency words later in the text do not count:
/// "low priority: the critical path dashboard is stale" is low, and "not critical, just FYI" on a
/// second line names nothing.
pub fn urgency_in(text: &str) -> Option<Urgency> {
    let mut words = text.split_whitespace();
    let leading = words.next().and_then(|w| urgency_word(w.trim_end_matches(|c: char| !c.is_alphanumeric())));
    let markers = text.split_whitespace().filter_map(urgency_marker);
    leading.into_iter().chain(markers).max()
}

fn action_verb(word: &str) -> Option<EventKind> {
    match word.trim_end_matches(|c: char| !c.is_alphanumeric()).to_ascii_lowercase().as_str() {
        "ack" | "acknowledge" | "acked" | "acknowledged" => Some(EventKind::Acknowledge),
        "resolve" | "resolved" => Some(EventKind::Resolve),
        _ => None,
    }
}

/// `ALR-12` in any case, with trailing punctuation (`ALR-12.`, `alr-12,`) ignored.
fn alert_id(word: &str) -> Option<String> {
    let word = word.trim_start_matches('(').trim_end_matches(|c: char| !c.is_alphanumeric());
    let (prefix, number) = word.split_once('-')?;
    (prefix.eq_ignore_ascii_case("ALR") && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("ALR-{number}"))
}

/// Reads the message: drops the trigger word (the whole first word, which Mattermost matched),
/// then either an action on an alert (`ack ALR-1, on it`) or a title (first line), details (the
/// other lines) and an urgency. A leading urgency word is syntax and leaves the title.
pub fn read_command(text: &str, trigger_word: &str) -> Command {
    let text = text.trim();
    let rest = if !trigger_word.is_empty() && text.starts_with(trigger_word) {
        text.split_once(char::is_whitespace).map_or("", |(_, rest)| rest).trim_start()
    } else {
        text
    };
    let mut words = rest.split_whitespace();
    let first = rest.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
    if first == "assign" || first == "snooze" {
        let (id, arg) = (rest.split_whitespace().nth(1).and_then(alert_id), rest.split_whitespace().nth(2));
        return match (first.as_str(), id, arg) {
            ("assign", Some(alert_id), Some(u)) if u.starts_with('@') && u.len() > 1 => {
                Command::Assign { alert_id, user: u.to_ascii_lowercase() }
            }
            ("snooze", Some(alert_id), Some(l)) => Command::Snooze { alert_id, length: l.to_ascii_lowercase() },
            ("assign", ..) => Command::ManageUsage { verb: "assign" },
            _ => Command::ManageUsage { verb: "snooze" },
        };
    }
    if let Some(kind) = words.next().and_then(action_verb) {
        return match words.next().and_then(alert_id) {
            Some(alert_id) => Command::Act { kind, alert_id },
            None => Command::Usage { kind },
        };
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
    let title = if title.is_empty() { others.trim().lines().next().unwrap_or_default().trim() } else { title };
    // Markers are syntax too: `checkout down [critical]` is the same problem as `checkout down`.
    let title: Vec<&str> = title.split_whitespace().filter(|w| urgency_marker(w).is_none()).collect();
    let title = if title.is_empty() { "(no title)".to_string() } else { title.join(" ") };
    Command::Raise { title, details: others.trim().to_string(), urgency: urgency_in(rest) }
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
        Command::Empty | Command::Usage { .. } | Command::ManageUsage { .. } => return None,
        Command::Assign { .. } | Command::Snooze { .. } => return None,
        Command::Raise { title, details, urgency } => {
            (EventKind::Trigger, title.clone(), details.clone(), *urgency, None)
        }
        Command::Act { kind, alert_id } => (*kind, String::new(), String::new(), None, Some(alert_id.clone())),
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
        urgency: urgency.unwrap_or(source.default_urgency),
        urgency_named: urgency.is_some(),
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
        assert_eq!(token(Encoding::Form, FORM), form.token.as_ref().map(|t| t.expose().to_string()));
        assert_eq!(token(Encoding::Json, JSON).as_deref(), json.token.as_ref().map(|t| t.expose()));
    }

    #[test]
    fn a_debug_of_the_payload_never_prints_the_token() {
        let hook = parse(Encoding::Form, FORM).unwrap();
        let token = token(Encoding::Form, FORM).unwrap();
        let printed = format!("{hook:?}");
        assert!(!printed.contains(&token) && printed.contains("Secret(***)"), "{printed}");
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
    fn urgency_comes_from_a_leading_word_or_explicit_markers_only() {
        assert_eq!(urgency_in("slow response on the highway"), None);
        assert_eq!(urgency_in("low disk"), Some(Urgency::Low));
        assert_eq!(urgency_in("HIGH load"), Some(Urgency::High));
        assert_eq!(urgency_in("db is down (sev1)"), Some(Urgency::Critical));
        assert_eq!(urgency_in("p3: flaky test"), Some(Urgency::Medium));
        assert_eq!(urgency_in("sev4 cosmetic"), Some(Urgency::Low));
        assert_eq!(urgency_in("p10 sev5 criticality"), None);
        assert_eq!(urgency_in("low priority: the critical path dashboard is stale"), Some(Urgency::Low));
        assert_eq!(urgency_in("dashboard stale\nnot critical, just FYI"), None, "plain words later never page");
        assert_eq!(urgency_in("disk full on db-2 critical"), None);
        assert_eq!(urgency_in("checkout down !critical"), Some(Urgency::Critical));
        assert_eq!(urgency_in("checkout down urgency:HIGH"), Some(Urgency::High));
        assert_eq!(urgency_in("checkout down [critical]."), Some(Urgency::Critical));
        assert_eq!(urgency_in("low: fan noisy [high]"), Some(Urgency::High), "the highest named wins");
        assert_eq!(urgency_in("a [note] and ! and urgency: nothing"), None);
    }

    #[test]
    fn the_trigger_word_and_a_leading_urgency_leave_the_title() {
        let c = read_command("#alert critical checkout returns 500s\nsince the deploy", "#alert");
        assert_eq!(
            c,
            Command::Raise {
                title: "checkout returns 500s".into(),
                details: "since the deploy".into(),
                urgency: Some(Urgency::Critical)
            }
        );
        let c = read_command("#alert slow queries on the highway service", "#alert");
        assert_eq!(
            c,
            Command::Raise {
                title: "slow queries on the highway service".into(),
                details: String::new(),
                urgency: None
            }
        );
    }

    #[test]
    fn markers_leave_the_title_so_that_repeats_group() {
        let plain = read_command("#alert disk full on db-2", "#alert");
        let marked = read_command("#alert disk full [critical] on db-2 (sev1)", "#alert");
        let title = |c: &Command| match c {
            Command::Raise { title, .. } => title.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(title(&plain), title(&marked));
        assert!(matches!(marked, Command::Raise { urgency: Some(Urgency::Critical), .. }));
    }

    #[test]
    fn a_channel_hook_without_trigger_word_keeps_the_whole_text() {
        let c = read_command("disk full on db-2", "");
        assert_eq!(c, Command::Raise { title: "disk full on db-2".into(), details: String::new(), urgency: None });
    }

    #[test]
    fn actions_are_read_like_a_person_writes_them() {
        let act = |kind, id: &str| Command::Act { kind, alert_id: id.into() };
        use EventKind::{Acknowledge as Ack, Resolve};
        for (text, want) in [
            ("#alert resolve alr-12", act(Resolve, "ALR-12")),
            ("#alert ack ALR-3 looking", act(Ack, "ALR-3")),
            ("#alert ack ALR-1.", act(Ack, "ALR-1")),
            ("#alert ack ALR-1, on it", act(Ack, "ALR-1")),
            ("#alert Acknowledged alr-7!", act(Ack, "ALR-7")),
            ("#alert acked ALR-8", act(Ack, "ALR-8")),
            ("#alert acknowledge ALR-9:", act(Ack, "ALR-9")),
            ("#alert resolved ALR-10 (fixed)", act(Resolve, "ALR-10")),
        ] {
            assert_eq!(read_command(text, "#alert"), want, "{text}");
        }
    }

    #[test]
    fn a_verb_without_an_alert_id_is_a_usage_question_not_an_alert() {
        assert_eq!(read_command("#alert ack", "#alert"), Command::Usage { kind: EventKind::Acknowledge });
        assert_eq!(read_command("#alert resolve the dns issue", "#alert"), Command::Usage { kind: EventKind::Resolve });
        assert_eq!(read_command("#alert ack: ALR", "#alert"), Command::Usage { kind: EventKind::Acknowledge });
    }

    #[test]
    fn nothing_after_the_trigger_is_empty() {
        assert_eq!(read_command("#alert", "#alert"), Command::Empty);
        assert_eq!(read_command("#alert   critical ", "#alert"), Command::Empty);
    }

    #[test]
    fn dedup_keys_ignore_case_and_spacing() {
        assert_eq!(dedup_key("Checkout  returns 500s"), dedup_key("checkout returns 500S"));
    }
}
