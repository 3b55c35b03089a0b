//! Which channel an event goes to. Pure: configuration in, a channel name (or why none) out.

use crate::config::{Config, Route};
use crate::domain::Urgency;

/// The facts routing looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFacts<'a> {
    pub event: &'a str,
    pub source: Option<&'a str>,
    pub urgency: Option<Urgency>,
}

fn pattern_matches(pattern: &str, event: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

/// A raised urgency is routed as a trigger at the new urgency would have been, so a route
/// that pages on-call for critical triggers also hears of an alert that became critical.
fn event_matches(pattern: &str, event: &str) -> bool {
    pattern_matches(pattern, event) || (event == "alert.urgency_raised" && pattern_matches(pattern, "alert.triggered"))
}

fn route_matches(route: &Route, f: &EventFacts<'_>) -> bool {
    route.events.iter().any(|p| event_matches(p, f.event))
        && (route.sources.is_empty() || f.source.is_some_and(|s| route.sources.iter().any(|r| r == s)))
        && route.min_urgency.is_none_or(|min| f.urgency.is_some_and(|u| u >= min))
}

/// The channel (a name from `[channels]`) for an event, or why it is not posted.
pub fn destination<'c>(config: &'c Config, f: &EventFacts<'_>) -> Result<&'c str, String> {
    if f.event.starts_with("incident.") {
        let inc = &config.incidents;
        if let Some(list) = &inc.announce
            && !list.iter().any(|e| e == f.event)
        {
            return Err(format!("{} is not in incidents.announce", f.event));
        }
        if let Some(ch) = &inc.announce_channel {
            return Ok(ch);
        }
    }
    config
        .routing
        .routes
        .iter()
        .find(|r| route_matches(r, f))
        .map(|r| r.channel.as_str())
        .or(config.routing.default.as_deref())
        .ok_or_else(|| format!("no route matches {} and routing.default is not set", f.event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
version = 1
[mattermost]
url = "https://chat.example.com"
webhooks = { a = "https://chat.example.com/hooks/a" }
[channels.alerts]
webhook = "a"
[channels.oncall]
webhook = "a"
[channels.freezers]
webhook = "a"
[channels.incidents]
webhook = "a"
[routing]
default = "alerts"
[[routing.routes]]
events = ["alert.triggered", "alert.escalated"]
min_urgency = "critical"
channel = "oncall"
[[routing.routes]]
events = ["alert.*"]
sources = ["freezer"]
channel = "freezers"
[[sources]]
id = "freezer"
kind = "particle"
insecure = true
[[sources]]
id = "chat"
kind = "mattermost"
insecure = true
[incidents]
announce_channel = "incidents"
announce = ["incident.started", "incident.resolved"]
"#;
        Config::from_toml(text, "t", &|_| None).expect("test config")
    }

    fn facts<'a>(event: &'a str, source: Option<&'a str>, urgency: Option<Urgency>) -> EventFacts<'a> {
        EventFacts { event, source, urgency }
    }

    #[test]
    fn the_first_matching_route_wins() {
        let c = config();
        assert_eq!(destination(&c, &facts("alert.triggered", Some("freezer"), Some(Urgency::Critical))), Ok("oncall"));
        assert_eq!(destination(&c, &facts("alert.triggered", Some("freezer"), Some(Urgency::High))), Ok("freezers"));
        assert_eq!(destination(&c, &facts("alert.resolved", Some("freezer"), Some(Urgency::Critical))), Ok("freezers"));
    }

    #[test]
    fn unmatched_events_fall_back_to_the_default() {
        let c = config();
        assert_eq!(destination(&c, &facts("alert.resolved", Some("chat"), Some(Urgency::Low))), Ok("alerts"));
        let mut c = c;
        c.routing.default = None;
        let why = destination(&c, &facts("alert.resolved", Some("chat"), None)).unwrap_err();
        assert!(why.contains("routing.default"), "{why}");
    }

    #[test]
    fn urgency_filters_never_match_events_without_urgency() {
        let c = config();
        assert_eq!(destination(&c, &facts("alert.escalated", Some("chat"), None)), Ok("alerts"));
    }

    #[test]
    fn incident_events_go_to_the_announce_channel_if_announced() {
        let c = config();
        assert_eq!(destination(&c, &facts("incident.started", None, None)), Ok("incidents"));
        let why = destination(&c, &facts("incident.mitigated", None, None)).unwrap_err();
        assert!(why.contains("incidents.announce"), "{why}");
    }
}
