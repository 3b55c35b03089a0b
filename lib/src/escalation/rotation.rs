//! On-call rotations: who is on call at an instant, and the next handoffs. Pure: the
//! configuration and a time in, a username out.
//!
//! Shifts of whole days hand off at the same local time every time (09:00 stays 09:00 across a
//! DST change, so that shift is an hour shorter or longer); shorter shifts are fixed spans of
//! time from the first handoff. Overrides ("alice covers bob from ... to ...") win over the
//! schedule while they last.

use crate::config::RotationConfig;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shift {
    Days(i64),
    Span(SignedDuration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub user: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub covers: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rotation {
    pub id: String,
    users: Vec<String>,
    shift: Shift,
    handoff: Time,
    tz: TimeZone,
    start: Date,
    overrides: Vec<Override>,
}

/// Who is on call, and since / until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCall {
    pub user: String,
    /// Someone covering for the scheduled user (`covering` is who they cover).
    pub covering: Option<String>,
    pub shift_start: Timestamp,
    pub shift_end: Timestamp,
}

/// A local time in `tz` (`2026-12-24T09:00`), or an instant with an offset.
fn instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let dt: DateTime = text.parse().map_err(|_| format!("{text:?} is not a time; write it like 2026-12-24T09:00"))?;
    dt.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| format!("{text:?}: {e}"))
}

impl Rotation {
    /// Builds a rotation from its configuration; the error says which field is wrong.
    pub fn from_config(c: &RotationConfig) -> Result<Rotation, String> {
        if c.users.is_empty() {
            return Err("users is empty; list at least one Mattermost username".into());
        }
        let tz = TimeZone::get(&c.time_zone).map_err(|_| {
            format!("time_zone {:?} is not an IANA time zone; write it like Europe/Berlin", c.time_zone)
        })?;
        let handoff: Time =
            c.handoff.parse().map_err(|_| format!("handoff {:?} is not a time; write it like \"09:00\"", c.handoff))?;
        let start: Date =
            c.start.parse().map_err(|_| format!("start {:?} is not a date; write it like \"2026-11-30\"", c.start))?;
        let secs = i64::try_from(c.shift.0.as_secs()).unwrap_or(i64::MAX);
        let shift = match secs {
            s if s < 3600 => return Err("shift must be at least 1h".into()),
            s if s % 86_400 == 0 => Shift::Days(s / 86_400),
            s => Shift::Span(SignedDuration::from_secs(s)),
        };
        let mut overrides = Vec::new();
        for (i, o) in c.overrides.iter().enumerate() {
            let from = instant(&o.from, &tz).map_err(|e| format!("overrides[{i}].from: {e}"))?;
            let to = instant(&o.to, &tz).map_err(|e| format!("overrides[{i}].to: {e}"))?;
            if to <= from {
                return Err(format!("overrides[{i}]: to is not after from"));
            }
            overrides.push(Override { user: norm(&o.user), from, to, covers: o.covers.as_deref().map(norm) });
        }
        let users = c.users.iter().map(|u| norm(u)).collect();
        Ok(Rotation { id: c.id.clone(), users, shift, handoff, tz, start, overrides })
    }

    /// When shift number `k` starts (shift 0 starts at `start` + `handoff`).
    fn shift_start(&self, k: i64) -> Timestamp {
        let first = self.start.to_datetime(self.handoff);
        let at = match &self.shift {
            Shift::Days(n) => first
                .checked_add(k.saturating_mul(*n).days())
                .ok()
                .and_then(|dt| dt.to_zoned(self.tz.clone()).ok())
                .map(|z| z.timestamp()),
            Shift::Span(d) => first.to_zoned(self.tz.clone()).ok().and_then(|z| {
                let total = d.checked_mul(i32::try_from(k).unwrap_or(i32::MAX))?;
                z.timestamp().checked_add(total).ok()
            }),
        };
        at.unwrap_or(Timestamp::MAX)
    }

    /// The shift `t` falls in.
    fn shift_of(&self, t: Timestamp) -> i64 {
        let guess = match &self.shift {
            Shift::Days(n) => {
                let local = t.to_zoned(self.tz.clone()).date();
                let days = self.start.until(local).map_or(0, |s| i64::from(s.get_days()));
                days.div_euclid(*n)
            }
            Shift::Span(d) => {
                let since = t.duration_since(self.shift_start(0));
                since.as_secs().div_euclid(d.as_secs().max(1))
            }
        };
        // The guess is the local day's shift; before that day's handoff it is the one before.
        let mut k = guess;
        while self.shift_start(k) > t {
            k -= 1;
        }
        while self.shift_start(k + 1) <= t {
            k += 1;
        }
        k
    }

    fn scheduled(&self, k: i64) -> &str {
        let n = self.users.len() as i64;
        &self.users[usize::try_from(k.rem_euclid(n)).unwrap_or(0)]
    }

    /// Who is on call at `t`.
    pub fn on_call(&self, t: Timestamp) -> OnCall {
        let k = self.shift_of(t);
        let scheduled = self.scheduled(k).to_string();
        let (start, end) = (self.shift_start(k), self.shift_start(k + 1));
        let cover = self
            .overrides
            .iter()
            .find(|o| o.from <= t && t < o.to && o.covers.as_deref().is_none_or(|c| c == scheduled));
        match cover {
            Some(o) => OnCall {
                user: o.user.clone(),
                covering: Some(scheduled),
                shift_start: o.from.max(start),
                shift_end: o.to.min(end),
            },
            None => OnCall { user: scheduled, covering: None, shift_start: start, shift_end: end },
        }
    }

    /// The next `n` scheduled handoffs after `t`: when, and who is on call from then.
    pub fn handoffs(&self, t: Timestamp, n: usize) -> Vec<(Timestamp, OnCall)> {
        let k = self.shift_of(t);
        (1..=n as i64)
            .map(|i| {
                let at = self.shift_start(k + i);
                (at, self.on_call(at))
            })
            .collect()
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

fn norm(user: &str) -> String {
    user.trim().trim_start_matches('@').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigDuration, RotationOverride};

    fn config(shift: &str, overrides: Vec<RotationOverride>) -> RotationConfig {
        RotationConfig {
            id: "primary".into(),
            users: vec!["alice".into(), "@Bob".into(), "carol".into()],
            shift: shift.parse::<ConfigDuration>().unwrap(),
            handoff: "09:00".into(),
            time_zone: "Europe/Berlin".into(),
            start: "2026-10-19".into(),
            overrides,
        }
    }

    fn at(local: &str) -> Timestamp {
        instant(local, &TimeZone::get("Europe/Berlin").unwrap()).unwrap()
    }

    #[test]
    fn weekly_shifts_hand_off_at_local_nine_across_the_dst_change() {
        // Berlin leaves summer time on 2026-10-25: the second shift is 169 hours long.
        let r = Rotation::from_config(&config("1w", vec![])).unwrap();
        assert_eq!(r.on_call(at("2026-10-19T09:00")).user, "alice");
        assert_eq!(r.on_call(at("2026-10-26T08:59")).user, "alice");
        let bob = r.on_call(at("2026-10-26T09:00"));
        assert_eq!(bob.user, "bob");
        assert_eq!(
            bob.shift_start.to_zoned(TimeZone::get("Europe/Berlin").unwrap()).hour(),
            9,
            "09:00 local, winter time"
        );
        assert_eq!(bob.shift_start.duration_since(at("2026-10-19T09:00")).as_hours(), 7 * 24 + 1);
        assert_eq!(r.on_call(at("2026-11-02T09:00")).user, "carol");
        assert_eq!(r.on_call(at("2026-11-09T09:00")).user, "alice", "round and round");
        assert_eq!(r.on_call(at("2026-10-19T08:59")).user, "carol", "before the start, the rotation runs backwards");
        // Into summer time: 2027-03-28. Shifts keep starting at 09:00 local.
        let spring = r.on_call(at("2027-03-29T09:00"));
        assert_eq!(spring.shift_start, at("2027-03-29T09:00"));
    }

    #[test]
    fn short_shifts_are_fixed_spans() {
        let r = Rotation::from_config(&config("12h", vec![])).unwrap();
        assert_eq!(r.on_call(at("2026-10-19T20:59")).user, "alice");
        assert_eq!(r.on_call(at("2026-10-19T21:00")).user, "bob");
        // Across the DST change the local handoff time moves by an hour (fixed 12 h spans).
        let after = r.on_call(at("2026-10-25T20:30"));
        assert_eq!(after.shift_start.duration_since(r.shift_start(0)).as_hours() % 12, 0);
    }

    #[test]
    fn overrides_win_while_they_last_and_only_over_whom_they_cover() {
        let overrides = vec![
            RotationOverride {
                user: "dave".into(),
                from: "2026-10-28T12:00".into(),
                to: "2026-10-29T12:00".into(),
                covers: Some("bob".into()),
            },
            RotationOverride {
                user: "erin".into(),
                from: "2026-11-03T00:00".into(),
                to: "2026-11-04T00:00".into(),
                covers: Some("bob".into()),
            },
        ];
        let r = Rotation::from_config(&config("1w", overrides)).unwrap();
        let covered = r.on_call(at("2026-10-28T15:00"));
        assert_eq!((covered.user.as_str(), covered.covering.as_deref()), ("dave", Some("bob")));
        assert_eq!(covered.shift_end, at("2026-10-29T12:00"));
        assert_eq!(r.on_call(at("2026-10-29T12:00")).user, "bob", "the override ended");
        assert_eq!(r.on_call(at("2026-11-03T10:00")).user, "carol", "erin covers bob, but carol is on call then");
    }

    #[test]
    fn the_next_handoffs_are_listed_with_whoever_is_on_call_then() {
        let r = Rotation::from_config(&config("1w", vec![])).unwrap();
        let next = r.handoffs(at("2026-10-20T10:00"), 3);
        let who: Vec<&str> = next.iter().map(|(_, o)| o.user.as_str()).collect();
        assert_eq!(who, ["bob", "carol", "alice"]);
        assert_eq!(next[0].0, at("2026-10-26T09:00"));
    }

    #[test]
    fn bad_configuration_says_which_field() {
        let mut c = config("1w", vec![]);
        c.time_zone = "Mars/Olympus".into();
        assert!(Rotation::from_config(&c).unwrap_err().contains("IANA"));
        let c = config("30m", vec![]);
        assert!(Rotation::from_config(&c).unwrap_err().contains("at least 1h"));
        let mut c = config("1w", vec![]);
        c.handoff = "9am".into();
        assert!(Rotation::from_config(&c).unwrap_err().contains("handoff"));
        let c = config(
            "1w",
            vec![RotationOverride {
                user: "x".into(),
                from: "2026-10-29T12:00".into(),
                to: "2026-10-28T12:00".into(),
                covers: None,
            }],
        );
        assert!(Rotation::from_config(&c).unwrap_err().contains("overrides[0]"));
    }
}
