//! The alert card: one Mattermost post per alert, rendered from the alert's latest state (so a
//! late or repeated job can never roll it back), and the short thread replies that follow it.
//!
//! Text that came from a device or a chat message is neutralised so that it cannot ping anyone:
//! `@channel`, `@all`, `@here` and `@user` are broken with a zero-width space after the `@`.

use crate::chatops::signing::Signer;
use crate::domain::{Actor, Alert, AlertStatus, Urgency};
use crate::mattermost::{Action, ActionOption, Attachment, CreatePost, Field, Integration};
use jiff::Timestamp;
use serde_json::json;

/// Details longer than this are cut on the card (the whole text stays in the alert).
pub const CARD_DETAILS_CHARS: usize = 3_000;
/// The props key that marks a post as an alert's card (found again after a crash).
pub const ALERT_PROP: &str = "klaxon_alert_id";
/// The props key that marks a thread reply with the job that posted it (found again on a retry).
pub const JOB_PROP: &str = "klaxon_job_id";
/// The card's Snooze menu: label and duration.
pub const SNOOZE_OPTIONS: &[(&str, &str)] = &[("30 min", "30m"), ("1 hour", "1h"), ("4 hours", "4h"), ("1 day", "1d")];

/// Breaks every mention in `text`: `@` followed by a zero-width space renders the same and
/// notifies nobody.
pub fn neutralise(text: &str) -> String {
    text.replace('@', "@\u{200B}")
}

fn who(actor: &Actor) -> String {
    match actor {
        Actor::User { name, id } => neutralise(if name.is_empty() { id } else { name }),
        Actor::Source { id } => format!("source {}", neutralise(id)),
        Actor::System => "Klaxon".into(),
    }
}

fn when(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The card's colour: green once resolved, amber while acknowledged, else by urgency.
pub fn colour(alert: &Alert) -> &'static str {
    match (alert.status, alert.urgency) {
        (AlertStatus::Resolved, _) => "#2D9D78",
        (AlertStatus::Acknowledged, _) => "#E8A317",
        (_, Urgency::Critical) => "#D24B4E",
        (_, Urgency::High) => "#E06C23",
        (_, Urgency::Medium) => "#F2B33D",
        (_, Urgency::Low) => "#8A8A8A",
    }
}

fn trimmed(details: &str) -> String {
    let count = details.chars().count();
    if count <= CARD_DETAILS_CHARS {
        return details.to_string();
    }
    let kept: String = details.chars().take(CARD_DETAILS_CHARS).collect();
    format!("{kept}\n… ({} more characters)", count - CARD_DETAILS_CHARS)
}

/// Where a card's buttons send their clicks, and the key that signs them. Without a
/// `server.public_url` and a `server.signing_secret` cards carry no buttons.
#[derive(Clone)]
pub struct Buttons {
    pub signer: Signer,
    /// `<public_url>/chatops/action`.
    pub url: String,
}

impl Buttons {
    /// The buttons the alert's state allows: Acknowledge and Resolve while open, Resolve while
    /// acknowledged, none once resolved. Each context is signed for `post_id` ("" when the post
    /// does not exist yet).
    pub fn for_alert(&self, alert: &Alert, post_id: &str, now: i64) -> Vec<Action> {
        let allowed: &[(&str, &str, &str, &str)] = match alert.status {
            AlertStatus::Open => &[
                ("ack", "Acknowledge", "acknowledge", "primary"),
                ("resolve", "Resolve", "resolve", "good"),
                ("assign", "Assign...", "assign", ""),
                ("snooze", "Snooze", "snooze", ""),
            ],
            AlertStatus::Acknowledged => {
                &[("resolve", "Resolve", "resolve", "good"), ("assign", "Assign...", "assign", "")]
            }
            AlertStatus::Resolved => &[],
        };
        allowed
            .iter()
            .map(|(id, name, action, style)| {
                let context = json!(self.signer.sign(&alert.id, action, post_id, now));
                let mut button = Action {
                    id: id.to_string(),
                    kind: "button".into(),
                    name: name.to_string(),
                    style: style.to_string(),
                    data_source: String::new(),
                    options: Vec::new(),
                    integration: Integration { url: self.url.clone(), context },
                };
                match *action {
                    "assign" => {
                        button.kind = "select".into();
                        button.data_source = "users".into();
                    }
                    "snooze" => {
                        button.kind = "select".into();
                        button.options = SNOOZE_OPTIONS
                            .iter()
                            .map(|(text, value)| ActionOption { text: text.to_string(), value: value.to_string() })
                            .collect();
                    }
                    _ => {}
                }
                button
            })
            .collect()
    }
}

/// The card with its buttons (when configured), signed for `post_id`.
pub fn render_with_buttons(alert: &Alert, buttons: Option<&Buttons>, post_id: &str) -> (String, Attachment) {
    let (message, mut attachment) = render(alert);
    if let Some(b) = buttons {
        attachment.actions = b.for_alert(alert, post_id, Timestamp::now().as_second());
    }
    (message, attachment)
}

/// The card: a one-line message (what notifications and search show) and one attachment.
pub fn render(alert: &Alert) -> (String, Attachment) {
    let summary = neutralise(&alert.summary);
    let status = match alert.status {
        AlertStatus::Open => "Open",
        AlertStatus::Acknowledged => "Acknowledged",
        AlertStatus::Resolved => "Resolved",
    };
    let mut fields = vec![
        Field { title: "Status".into(), value: status.into(), short: true },
        Field { title: "Urgency".into(), value: alert.urgency.to_string(), short: true },
        Field { title: "Source".into(), value: neutralise(&alert.source), short: true },
        Field { title: "Occurrences".into(), value: alert.occurrences.to_string(), short: true },
        Field { title: "First seen".into(), value: when(alert.created_at), short: true },
        Field { title: "Last seen".into(), value: when(alert.last_occurrence()), short: true },
    ];
    let at = |what: &str| alert.timeline.iter().rev().find(|e| e.what == what).map(|e| e.at);
    if let (Some(by), Some(t)) = (&alert.acknowledged_by, at("acknowledged")) {
        fields.push(Field {
            title: "Acknowledged".into(),
            value: format!("by {} at {}", who(by), when(t)),
            short: false,
        });
    }
    if let (Some(by), Some(t)) = (&alert.resolved_by, at("resolved")) {
        fields.push(Field { title: "Resolved".into(), value: format!("by {} at {}", who(by), when(t)), short: false });
    }
    if let Some(e) = &alert.escalation {
        // Names only (no mention): the thread mentions them once, card updates never do.
        let names = neutralise(&e.assignees.join(", "));
        let names = if names.is_empty() { "nobody".to_string() } else { names };
        let mut value = if e.manual || e.levels == 0 {
            names
        } else if e.exhausted {
            format!("{names} (policy {} exhausted)", e.policy)
        } else {
            format!("{names} (level {} of {})", e.level, e.levels)
        };
        if let Some(until) = e.snoozed_until {
            value.push_str(&format!(" · snoozed until {}", when(until)));
        }
        fields.push(Field { title: "Assigned".into(), value, short: false });
    }
    let message = format!("**{}** ({}, {}): {summary}", alert.id, alert.urgency, status.to_lowercase());
    let attachment = Attachment {
        fallback: format!("{} [{}] {summary}", alert.id, alert.urgency),
        color: colour(alert).into(),
        title: format!("{}: {summary}", alert.id),
        text: trimmed(&neutralise(&alert.details)),
        fields,
        footer: format!("Klaxon · {}", alert.id),
        actions: Vec::new(),
    };
    (message, attachment)
}

/// A bot post made by a job (a thread reply, an incident line, an announcement): its props carry
/// the job id, so that a retry after Mattermost's 30 s `pending_post_id` memory can find it.
pub fn job_post(channel_id: &str, root_id: &str, message: String, job_id: &str, pending_post_id: String) -> CreatePost {
    CreatePost {
        channel_id: channel_id.to_string(),
        message,
        root_id: root_id.to_string(),
        props: json!({ "from_bot": "true", JOB_PROP: job_id }),
        pending_post_id,
    }
}

/// The props of a card post: the attachment, and the alert id that marks it as the card
/// ([`ALERT_PROP`]). Serialised straight from the card: built as a `Value`, the props copied the
/// whole card and dropping them walked it again (8 % of a carded alert's instructions).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CardProps<'a> {
    attachments: [&'a Attachment; 1],
    klaxon_alert_id: &'a str,
    from_bot: &'static str,
}

pub fn props<'a>(alert: &'a Alert, attachment: &'a Attachment) -> CardProps<'a> {
    CardProps { attachments: [attachment], klaxon_alert_id: &alert.id, from_bot: "true" }
}

/// The short reply a job adds in the card's thread, if its event deserves one. Repeats add
/// none (they update the count on the card); a new alert is its card.
pub fn thread_reply(event: &str, alert: &Alert) -> Option<String> {
    let last_by = |what: &str| alert.timeline.iter().rev().find(|e| e.what == what).map(|e| who(&e.actor));
    match event {
        "alert.acknowledged" => Some(format!("Acknowledged by {}.", last_by("acknowledged")?)),
        "alert.resolved" => Some(format!("Resolved by {}.", last_by("resolved")?)),
        "alert.urgency_raised" => {
            Some(format!("Urgency raised to {} by {}.", alert.urgency, last_by("urgency_raised")?))
        }
        // Escalation mentions its targets here, once per level.
        "alert.triggered" => {
            let e = alert.escalation.as_ref()?;
            Some(format!("{} is yours, {} (level 1 of {}).", alert.id, e.assignees.join(", "), e.levels))
        }
        "alert.assigned" => {
            let e = alert.escalation.as_ref()?;
            Some(format!(
                "Assigned to {} by {}; automatic escalation stopped.",
                e.assignees.join(", "),
                last_by("assigned")?
            ))
        }
        "alert.snoozed" => {
            let until = alert.escalation.as_ref()?.snoozed_until?;
            Some(format!("Snoozed until {} by {}; escalation pauses.", when(until), last_by("snoozed")?))
        }
        "alert.unsnoozed" => {
            let e = alert.escalation.as_ref()?;
            let tail = if e.due.is_some() { " Escalation resumes." } else { "" };
            Some(format!("{} is back from snooze and still open.{tail}", alert.id))
        }
        "alert.escalated" => {
            let e = alert.escalation.as_ref()?;
            if e.exhausted {
                Some(format!(
                    "Escalation policy {} is exhausted: nobody acknowledged {} through {} level(s). It stays assigned to {}.",
                    e.policy,
                    alert.id,
                    e.levels,
                    e.assignees.join(", ")
                ))
            } else {
                Some(format!("Escalated to level {} of {}: {}.", e.level, e.levels, e.assignees.join(", ")))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewAlert;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_795_435_200 + s).unwrap()
    }

    fn alert() -> Alert {
        let new = NewAlert {
            id: "ALR-7".into(),
            source: "freezer".into(),
            dedup_key: "dev7:alert".into(),
            summary: "Freezer 3 at -3.5 °C @channel".into(),
            details: "ping @here and @alice".into(),
            urgency: Urgency::Critical,
        };
        Alert::trigger(new, Actor::source("freezer"), t(0))
    }

    #[test]
    fn a_new_alert_renders_as_this_card() {
        let a = alert();
        let (message, attachment) = render(&a);
        assert_eq!(message, "**ALR-7** (critical, open): Freezer 3 at -3.5 °C @\u{200B}channel");
        let json = serde_json::to_value(props(&a, &attachment)).unwrap();
        assert_eq!(
            json,
            json!({
                "klaxon_alert_id": "ALR-7",
                "from_bot": "true",
                "attachments": [{
                    "fallback": "ALR-7 [critical] Freezer 3 at -3.5 °C @\u{200B}channel",
                    "color": "#D24B4E",
                    "title": "ALR-7: Freezer 3 at -3.5 °C @\u{200B}channel",
                    "text": "ping @\u{200B}here and @\u{200B}alice",
                    "fields": [
                        {"title": "Status", "value": "Open", "short": true},
                        {"title": "Urgency", "value": "critical", "short": true},
                        {"title": "Source", "value": "freezer", "short": true},
                        {"title": "Occurrences", "value": "1", "short": true},
                        {"title": "First seen", "value": "2026-11-23 12:00:00 UTC", "short": true},
                        {"title": "Last seen", "value": "2026-11-23 12:00:00 UTC", "short": true}
                    ],
                    "footer": "Klaxon · ALR-7"
                }]
            })
        );
    }

    #[test]
    fn an_acknowledged_then_resolved_alert_shows_who_and_when_and_turns_green() {
        let mut a = alert();
        a.repeat(Actor::source("freezer"), t(60)).unwrap();
        a.acknowledge(Actor::user("u1", "bob"), t(120)).unwrap();
        let (_, card) = render(&a);
        assert_eq!(card.color, "#E8A317");
        assert!(
            card.fields.iter().any(|f| f.title == "Acknowledged" && f.value == "by bob at 2026-11-23 12:02:00 UTC")
        );
        assert!(card.fields.iter().any(|f| f.title == "Occurrences" && f.value == "2"));
        assert!(card.fields.iter().any(|f| f.title == "Last seen" && f.value == "2026-11-23 12:01:00 UTC"));
        a.resolve(Actor::user("u2", "alice"), t(180)).unwrap();
        let (message, card) = render(&a);
        assert_eq!(card.color, "#2D9D78");
        assert!(message.contains("resolved"));
        assert_eq!(thread_reply("alert.resolved", &a).as_deref(), Some("Resolved by alice."));
        assert_eq!(thread_reply("alert.acknowledged", &a).as_deref(), Some("Acknowledged by bob."));
        assert_eq!(thread_reply("alert.repeated", &a), None, "repeats update the count, no reply");
    }

    /// What Mattermost receives for an open card's buttons and menus, contexts aside (they are
    /// signed afresh, with an expiry, at every render).
    #[test]
    fn an_open_cards_buttons_and_menus_are_sent_in_mattermosts_shape() {
        let buttons = Buttons {
            signer: Signer::new(crate::config::Secret::new("0123456789abcdef0123456789abcdef")),
            url: "https://klaxon.example.com/chatops/action".into(),
        };
        let (_, card) = render_with_buttons(&alert(), Some(&buttons), "p1");
        let mut json = serde_json::to_value(&card).unwrap();
        let actions = json["actions"].as_array_mut().unwrap();
        for action in actions.iter_mut() {
            let context = action["integration"].as_object_mut().unwrap().remove("context").unwrap();
            assert_eq!(context["post_id"], "p1");
        }
        let integration = json!({ "url": "https://klaxon.example.com/chatops/action" });
        assert_eq!(
            json["actions"],
            json!([
                { "id": "ack", "type": "button", "name": "Acknowledge", "style": "primary", "integration": integration },
                { "id": "resolve", "type": "button", "name": "Resolve", "style": "good", "integration": integration },
                { "id": "assign", "type": "select", "name": "Assign...", "data_source": "users", "integration": integration },
                { "id": "snooze", "type": "select", "name": "Snooze", "integration": integration, "options": [
                    { "text": "30 min", "value": "30m" }, { "text": "1 hour", "value": "1h" },
                    { "text": "4 hours", "value": "4h" }, { "text": "1 day", "value": "1d" } ] },
            ])
        );
    }

    #[test]
    fn buttons_follow_the_state_and_carry_signed_contexts() {
        let buttons = Buttons {
            signer: Signer::new(crate::config::Secret::new("0123456789abcdef0123456789abcdef")),
            url: "https://klaxon.example.com/chatops/action".into(),
        };
        let mut a = alert();
        let names = |a: &Alert| -> Vec<String> {
            render_with_buttons(a, Some(&buttons), "p1").1.actions.iter().map(|b| b.name.clone()).collect()
        };
        assert_eq!(names(&a), ["Acknowledge", "Resolve", "Assign...", "Snooze"]);
        let (_, card) = render_with_buttons(&a, Some(&buttons), "p1");
        assert_eq!((card.actions[2].kind.as_str(), card.actions[2].data_source.as_str()), ("select", "users"));
        assert_eq!(card.actions[3].options.len(), SNOOZE_OPTIONS.len());
        let ctx: crate::chatops::signing::ButtonContext =
            serde_json::from_value(card.actions[1].integration.context.clone()).unwrap();
        assert_eq!((ctx.alert_id.as_str(), ctx.action.as_str(), ctx.post_id.as_str()), ("ALR-7", "resolve", "p1"));
        assert_eq!(buttons.signer.verify(&ctx, "p1", Timestamp::now().as_second()), Ok(()));
        assert_eq!(card.actions[0].id, "ack", "ids are alphanumeric");
        a.acknowledge(Actor::user("u1", "bob"), t(60)).unwrap();
        assert_eq!(names(&a), ["Resolve", "Assign..."]);
        a.resolve(Actor::user("u1", "bob"), t(120)).unwrap();
        assert!(names(&a).is_empty());
        assert!(render_with_buttons(&alert(), None, "p1").1.actions.is_empty(), "no buttons without a signing secret");
    }

    #[test]
    fn long_details_are_trimmed_and_the_card_stays_far_inside_mattermost_limits() {
        let mut a = alert();
        a.details = "x".repeat(20_000);
        let (message, card) = render(&a);
        assert!(card.text.ends_with("… (17000 more characters)"), "{}", &card.text[card.text.len() - 40..]);
        let total = message.chars().count() + serde_json::to_string(&card).unwrap().chars().count();
        assert!(total < 16_383, "{total}");
    }

    #[test]
    fn mentions_are_neutralised_everywhere_text_came_from_outside() {
        for text in ["@channel", "@all", "@here", "@alice", "mail bob@example.com"] {
            let n = neutralise(text);
            assert!(!n.contains("@c") && !n.contains("@a") && !n.contains("@h") && !n.contains("@e"), "{n}");
        }
    }
}
