//! Running a policy, as decisions: who level N notifies at a given time, and what comes after
//! a level nobody acknowledged. Pure.
//!
//! Level N waits its step's `after` for an acknowledgement; then level N+1 is assigned. After
//! the last level the policy starts again at level 1 `repeat` times, then it is exhausted.

use super::rotation::Rotation;
use crate::config::{Config, EscalationPolicy, EscalationStep};
use crate::domain::Escalation;
use jiff::{SignedDuration, Timestamp};

/// The step's targets as mentions, rotations resolved to whoever is on call at `at`.
pub fn targets(config: &Config, step: &EscalationStep, at: Timestamp) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in &step.notify {
        let mention = match n.strip_prefix("rotation:") {
            Some(id) => match config.rotations.iter().find(|r| r.id == id).map(Rotation::from_config) {
                Some(Ok(r)) => format!("@{}", r.on_call(at).user),
                _ => continue,
            },
            None => n.clone(),
        };
        if !out.contains(&mention) {
            out.push(mention);
        }
    }
    out
}

fn wait(step: &EscalationStep) -> SignedDuration {
    SignedDuration::try_from(step.after.0).unwrap_or(SignedDuration::MAX)
}

pub fn policy<'c>(config: &'c Config, id: &str) -> Option<&'c EscalationPolicy> {
    config.escalation_policies.iter().find(|p| p.id == id && !p.steps.is_empty())
}

/// Level 1 of the source's policy for an alert opened at `at`; `None` without a policy.
pub fn start(config: &Config, source: &str, at: Timestamp) -> Option<Escalation> {
    let id = config.source(source)?.escalation_policy.as_deref()?;
    let p = policy(config, id)?;
    let first = &p.steps[0];
    Some(Escalation {
        policy: p.id.clone(),
        level: 1,
        levels: u32::try_from(p.steps.len()).unwrap_or(u32::MAX),
        round: 0,
        assignees: targets(config, first, at),
        due: at.checked_add(wait(first)).ok(),
        seq: 0,
        exhausted: false,
        snoozed_until: None,
        manual: false,
    })
}

/// How long the current level waits (for the next check after a snooze).
pub fn level_wait(config: &Config, e: &Escalation) -> Option<SignedDuration> {
    step(config, e).map(wait)
}

/// What follows the current level at `at`: (level, round, assignees, next due), or `None`
/// when the policy is exhausted (or no longer configured).
pub fn next(config: &Config, e: &Escalation, at: Timestamp) -> Option<(u32, u32, Vec<String>, Timestamp)> {
    let p = policy(config, &e.policy)?;
    let (level, round) = if (e.level as usize) < p.steps.len() {
        (e.level + 1, e.round)
    } else if e.round < p.repeat {
        (1, e.round + 1)
    } else {
        return None;
    };
    let step = &p.steps[level as usize - 1];
    Some((level, round, targets(config, step, at), at.checked_add(wait(step)).ok()?))
}

/// The step of the current level (for its channel and direct-message settings).
pub fn step<'c>(config: &'c Config, e: &Escalation) -> Option<&'c EscalationStep> {
    policy(config, &e.policy)?.steps.get((e.level as usize).checked_sub(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
version = 1
[[sources]]
id = "freezer"
kind = "particle"
token = "particle-key-0123456789"
escalation_policy = "default"
[[escalation_policies]]
id = "default"
repeat = 1
[[escalation_policies.steps]]
after = "5m"
notify = ["rotation:primary", "@alice"]
[[escalation_policies.steps]]
after = "10m"
notify = ["@carol", "@sre-leads"]
[[rotations]]
id = "primary"
users = ["alice", "bob"]
shift = "1d"
time_zone = "UTC"
start = "2026-11-30"
"#;
        Config::from_toml(text, "test", &|_| None).unwrap()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn level_one_resolves_the_rotation_then_levels_repeat_then_exhaust() {
        let c = config();
        let mut e = start(&c, "freezer", t("2026-11-30T10:00:00Z")).unwrap();
        assert_eq!((e.level, e.levels, e.assignees.clone()), (1, 2, vec!["@alice".to_string()]), "alice once");
        assert_eq!(e.due, Some(t("2026-11-30T10:05:00Z")));
        let mut seen = Vec::new();
        while let Some((level, round, who, due)) = next(&c, &e, t("2026-12-01T10:00:00Z")) {
            seen.push((level, round, who.join(" ")));
            (e.level, e.round, e.due) = (level, round, Some(due));
        }
        assert_eq!(
            seen,
            [
                (2, 0, "@carol @sre-leads".to_string()),
                (1, 1, "@bob @alice".to_string()),
                (2, 1, "@carol @sre-leads".to_string())
            ],
            "bob is on call on the second day"
        );
        assert!(start(&c, "unknown", t("2026-11-30T10:00:00Z")).is_none());
    }

    #[test]
    fn long_waits_are_kept_as_due_times_not_queue_delays() {
        let mut c = config();
        c.escalation_policies[0].steps[0].after = "2d".parse().unwrap();
        let e = start(&c, "freezer", t("2026-11-30T10:00:00Z")).unwrap();
        assert_eq!(e.due, Some(t("2026-12-02T10:00:00Z")), "two days, far past SQS's 900 s");
    }
}
