//! What people read about an incident: the channel header, the line each change posts, the
//! announcement, `/incident status`, and the retrospective draft with its durations.

use crate::domain::{Actor, Incident, IncidentStatus, TimelineEntry};
use jiff::{SignedDuration, Timestamp};

/// Mattermost's header limit, in runes (mattermost.md §4.9).
const MAX_HEADER: usize = 1024;

/// "1 h 05 min", "47 min", "30 s".
pub fn duration(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// A link to the incident's channel (`~name`), or its id while it has none.
pub fn channel_link(i: &Incident) -> String {
    match &i.channel_name {
        Some(name) => format!("~{name}"),
        None => "(its channel is being created)".into(),
    }
}

fn status_word(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Started => "Started",
        IncidentStatus::Mitigated => "Mitigated",
        IncidentStatus::Resolved => "Resolved",
        IncidentStatus::Cancelled => "Cancelled",
    }
}

/// The channel header: id, severity, status and commander.
pub fn header(i: &Incident) -> String {
    let text = format!(
        "**{}** · {} · {} · Commander: {} · {}",
        i.id,
        i.severity,
        status_word(i.status),
        i.commander,
        neutral(&i.title)
    );
    text.chars().take(MAX_HEADER).collect()
}

/// Text people typed, made safe to repeat: no @-mentions that would notify anyone.
fn neutral(text: &str) -> String {
    text.replace('@', "@\u{200B}")
}

/// The first post in the incident's channel.
pub fn opening(i: &Incident) -> String {
    let mut lines = vec![
        format!("#### :rotating_light: {}: {}", i.id, neutral(&i.title)),
        format!("**Severity:** {} · **Commander:** {} · **Declared by:** {}", i.severity, i.commander, i.declared_by),
    ];
    if !i.summary.trim().is_empty() {
        lines.push(String::new());
        lines.push(neutral(i.summary.trim()));
    }
    for (name, value) in &i.fields {
        lines.push(format!("**{}:** {}", name, neutral(value)));
    }
    lines.push(String::new());
    lines.push("Run `/incident help` here for what you can do: mitigate, resolve, severity, commander, update.".into());
    lines.join("\n")
}

/// The line a change posts in the incident's channel; `entry` is the change's timeline entry
/// (the incident may have changed again since).
pub fn event_line(i: &Incident, event: &str, entry: Option<&TimelineEntry>) -> String {
    let Some(e) = entry.or(i.last_entry()) else { return format!("{} changed.", i.id) };
    let by = &e.actor;
    let note = e.note.as_deref().map(neutral).unwrap_or_default();
    match event {
        "incident.started" => format!("{} declared by {by}.", i.id),
        "incident.mitigated" => format!(":large_orange_diamond: **Mitigated** by {by}."),
        "incident.resolved" => format!(":white_check_mark: **Resolved** by {by}."),
        "incident.cancelled" if note.is_empty() => format!(":heavy_multiplication_x: **Cancelled** by {by}."),
        "incident.cancelled" => format!(":heavy_multiplication_x: **Cancelled** by {by}: {note}"),
        "incident.severity_changed" => format!("**Severity** changed by {by}: {note}"),
        "incident.commander_changed" => format!("**Commander** changed by {by}: {note}"),
        "incident.updated" => format!("**Status update** from {by}: {note}"),
        other => format!("{other} by {by}."),
    }
}

/// What the announcement channel reads: the incident, the change, and a link to the channel.
pub fn announcement(i: &Incident, event: &str, entry: Option<&TimelineEntry>) -> String {
    let title = format!("**{}** ({}): {}", i.id, i.severity, neutral(&i.title));
    let what = match event {
        "incident.started" => format!("declared by {}, commander {}", i.declared_by, i.commander),
        _ => event_line(i, event, entry).trim_end_matches('.').to_string(),
    };
    format!("{title} · {what} · {}", channel_link(i))
}

fn entry_line(e: &TimelineEntry) -> String {
    let what = e.what.replace('_', " ");
    match &e.note {
        Some(n) => format!("- {} · {} · {what}: {}", e.at.strftime("%H:%M:%S"), actor(&e.actor), neutral(n)),
        None => format!("- {} · {} · {what}", e.at.strftime("%H:%M:%S"), actor(&e.actor)),
    }
}

fn actor(a: &Actor) -> String {
    a.to_string()
}

/// The durations so far: to mitigation, to resolution (or how long it has been open).
fn durations(i: &Incident, now: Timestamp) -> Vec<String> {
    let since = |t: Timestamp| duration(t.duration_since(i.started_at));
    let mut out = Vec::new();
    if let Some(m) = i.mitigated_at {
        out.push(format!("**Time to mitigate:** {}", since(m)));
    }
    match (i.resolved_at, i.cancelled_at) {
        (Some(r), _) => out.push(format!("**Time to resolve:** {}", since(r))),
        (None, Some(c)) => out.push(format!("**Cancelled after:** {}", since(c))),
        (None, None) => out.push(format!("**Open for:** {}", since(now))),
    }
    out
}

/// `/incident status` in an incident's channel.
pub fn status(i: &Incident, now: Timestamp) -> String {
    let mut lines = vec![
        format!("#### {}: {}", i.id, neutral(&i.title)),
        format!(
            "**Status:** {} · **Severity:** {} · **Commander:** {} · **Channel:** {}",
            status_word(i.status),
            i.severity,
            i.commander,
            channel_link(i)
        ),
        format!("**Started:** {} by {}", time(i.started_at), i.declared_by),
    ];
    lines.extend(durations(i, now));
    lines.push(String::new());
    lines.push("**Timeline**".into());
    lines.extend(i.timeline.iter().map(entry_line));
    lines.join("\n")
}

/// One line per open incident, for `/incident list`.
pub fn list(open: &[Incident], now: Timestamp) -> String {
    if open.is_empty() {
        return "No open incidents. `/incident new` declares one.".into();
    }
    let mut lines = vec![format!("**Open incidents ({})**", open.len())];
    for i in open {
        lines.push(format!(
            "- **{}** ({}, {}): {} · commander {} · open {} · {}",
            i.id,
            i.severity,
            i.status,
            neutral(&i.title),
            i.commander,
            duration(now.duration_since(i.started_at)),
            channel_link(i)
        ));
    }
    lines.join("\n")
}

/// The retrospective draft: durations, commander, severity changes, status updates and the
/// whole timeline, posted on resolve and by `/incident timeline`.
pub fn retrospective(i: &Incident, now: Timestamp) -> String {
    let mut lines = vec![
        format!("#### Retrospective draft: {}: {}", i.id, neutral(&i.title)),
        format!(
            "**Status:** {} · **Severity:** {} · **Commander:** {}",
            status_word(i.status),
            i.severity,
            i.commander
        ),
        format!("**Started:** {} by {}", time(i.started_at), i.declared_by),
    ];
    lines.extend(durations(i, now));
    let of = |what: &str| i.timeline.iter().filter(|e| e.what == what).map(entry_line).collect::<Vec<_>>();
    for (title, what) in [
        ("Severity changes", "severity_changed"),
        ("Commanders", "commander_changed"),
        ("Status updates", "status_update"),
    ] {
        let entries = of(what);
        if !entries.is_empty() {
            lines.push(String::new());
            lines.push(format!("**{title}**"));
            lines.extend(entries);
        }
    }
    lines.push(String::new());
    lines.push("**Timeline**".into());
    lines.extend(i.timeline.iter().map(entry_line));
    lines.push(String::new());
    lines.push("_Draft: add the impact, the root cause and the follow-ups._".into());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IncidentId, NewIncident};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_795_435_200 + secs).unwrap()
    }

    fn incident() -> Incident {
        Incident::declare(
            NewIncident {
                id: IncidentId::new("INC", 7),
                title: "Checkout down for @all".into(),
                severity: "SEV3".into(),
                summary: "500s on /pay".into(),
                commander: None,
                fields: [("service".to_string(), "checkout".to_string())].into(),
                private: false,
            },
            Actor::user("u1", "bob"),
            t(0),
        )
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(duration(SignedDuration::from_secs(30)), "30 s");
        assert_eq!(duration(SignedDuration::from_secs(47 * 60)), "47 min");
        assert_eq!(duration(SignedDuration::from_secs(3900)), "1 h 05 min");
        assert_eq!(duration(SignedDuration::from_secs(90_000)), "1 d 1 h");
    }

    #[test]
    fn the_retrospective_has_the_durations_the_changes_and_the_timeline() {
        let mut i = incident();
        let alice = Actor::user("u2", "alice");
        i.set_severity("SEV1".into(), alice.clone(), t(120)).unwrap();
        i.status_update("rolled back the deploy".into(), alice.clone(), t(600)).unwrap();
        i.mitigate(alice.clone(), t(720)).unwrap();
        i.resolve(alice, t(2820)).unwrap();
        let r = retrospective(&i, t(3000));
        assert!(r.contains("**Time to mitigate:** 12 min"), "{r}");
        assert!(r.contains("**Time to resolve:** 47 min"), "{r}");
        assert!(r.contains("**Severity changes**\n- 12:02:00 · @alice · severity changed: SEV3 → SEV1"), "{r}");
        assert!(r.contains("**Status updates**\n- 12:10:00 · @alice · status update: rolled back the deploy"), "{r}");
        assert!(r.contains("**Commander:** @bob"), "{r}");
        assert_eq!(r.matches("\n- ").count(), 5 + 2, "five timeline entries and two highlighted");
    }

    #[test]
    fn typed_text_cannot_mention_anyone() {
        let i = incident();
        assert!(!opening(&i).contains("@all"));
        assert!(!header(&i).contains("@all"));
        assert!(header(&i).starts_with("**INC-7** · SEV3 · Started · Commander: @bob"));
    }

    #[test]
    fn an_open_incident_shows_how_long_it_has_been_open() {
        let s = status(&incident(), t(3600));
        assert!(s.contains("**Open for:** 1 h 00 min"), "{s}");
        assert!(s.contains("(its channel is being created)"));
    }

    #[test]
    fn announcements_link_the_channel() {
        let mut i = incident();
        i.channel_name = Some("inc-7-checkout".into());
        let a = announcement(&i, "incident.started", None);
        assert!(a.contains("declared by @bob, commander @bob") && a.ends_with("~inc-7-checkout"), "{a}");
        i.cancel(Some("duplicate".into()), Actor::user("u2", "alice"), t(5)).unwrap();
        let cancelled = i.timeline.last().cloned();
        assert!(announcement(&i, "incident.cancelled", None).contains("**Cancelled** by @alice: duplicate"));
        // Rendered later, after another change, a job still shows its own entry.
        i.note(Actor::user("u3", "carol"), t(9), "more");
        assert!(announcement(&i, "incident.cancelled", cancelled.as_ref()).contains("by @alice: duplicate"));
    }
}
