//! Escalation: on-call rotations (who is on call when), and running policies.

pub mod maintenance;
pub mod policy;
pub mod rotation;
pub mod timers;
pub mod windows;

use crate::config::Config;
use jiff::Timestamp;
use rotation::Rotation;

fn local(t: Timestamp, r: &Rotation) -> String {
    t.to_zoned(r.time_zone().clone()).strftime("%a %Y-%m-%d %H:%M %Z").to_string()
}

/// Who is on call now and next in each rotation, and the next `handoffs` handoffs: what
/// `klaxon oncall` and `/incident oncall` show.
pub fn on_call_text(config: &Config, now: Timestamp, handoffs: usize) -> String {
    if config.rotations.is_empty() {
        return "No on-call rotations are configured; add [[rotations]] to klaxon.toml.".into();
    }
    let mut out = Vec::new();
    for c in &config.rotations {
        let r = match Rotation::from_config(c) {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("**{}**: cannot be read ({e})", c.id));
                continue;
            }
        };
        let now_on = r.on_call(now);
        let covering = now_on.covering.as_ref().map(|c| format!(", covering for @{c}")).unwrap_or_default();
        out.push(format!("**{}**: now @{}{covering}, until {}", r.id, now_on.user, local(now_on.shift_end, &r)));
        let next = r.on_call(now_on.shift_end);
        out.push(format!("  next: @{} from {}", next.user, local(now_on.shift_end, &r)));
        for (at, who) in r.handoffs(now, handoffs).into_iter().filter(|(at, _)| *at > now_on.shift_end) {
            out.push(format!("  then: @{} from {}", who.user, local(at, &r)));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_call_text_shows_now_next_and_the_handoffs_after_an_override() {
        let text = "version = 1\n[[rotations]]\nid = \"primary\"\nusers = [\"alice\", \"bob\", \"carol\"]\nshift = \"1w\"\n\
                    time_zone = \"Europe/Berlin\"\nstart = \"2026-11-30\"\n[[rotations.overrides]]\nuser = \"dave\"\ncovers = \"bob\"\n\
                    from = \"2026-12-28T09:00\"\nto = \"2027-01-01T09:00\"\n";
        let config = Config::from_toml(text, "test", &|_| None).unwrap();
        let out = on_call_text(&config, "2026-12-29T12:00:00Z".parse().unwrap(), 3);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "**primary**: now @dave, covering for @bob, until Fri 2027-01-01 09:00 CET");
        assert_eq!(lines[1], "  next: @bob from Fri 2027-01-01 09:00 CET");
        assert_eq!(lines[2], "  then: @carol from Mon 2027-01-04 09:00 CET");
        assert_eq!(lines.len(), 5);
        assert!(on_call_text(&Config::empty(), Timestamp::now(), 3).contains("No on-call rotations"));
    }
}
