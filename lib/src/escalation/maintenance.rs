//! Maintenance windows: when they are, and which sources they cover. Pure.
//!
//! A window from the configuration may repeat weekly (at the same local time, DST or not); a
//! window started from chat (`/incident maintenance start 2h`) is stored and has one
//! occurrence. Each occurrence has a key (`ID@<start ms>`), under which the alerts it held are
//! indexed and its end is handled once.

use crate::config::MaintenanceConfig;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// One occurrence of a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub id: String,
    /// Empty: every source.
    pub sources: Vec<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Where its end summary goes (a `[channels]` name); `None`: routing.default.
    #[serde(default)]
    pub channel: Option<String>,
}

impl Window {
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.start.as_millisecond())
    }

    pub fn covers(&self, source: &str, at: Timestamp) -> bool {
        self.start <= at && at < self.end && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }
}

/// A configured window, ready to answer "which occurrence is at `t`".
#[derive(Debug, Clone)]
pub struct Schedule {
    first: Window,
    local_start: DateTime,
    tz: TimeZone,
    length: SignedDuration,
    weekly: bool,
}

fn instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let dt: DateTime = text.parse().map_err(|_| format!("{text:?} is not a time; write it like 2026-12-01T02:00"))?;
    dt.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| format!("{text:?}: {e}"))
}

impl Schedule {
    pub fn from_config(c: &MaintenanceConfig) -> Result<Schedule, String> {
        let zone = c.time_zone.as_deref().unwrap_or("UTC");
        let tz = TimeZone::get(zone).map_err(|_| format!("time_zone {zone:?} is not an IANA time zone"))?;
        let start = instant(&c.start, &tz).map_err(|e| format!("start: {e}"))?;
        let end = match (&c.duration, &c.end) {
            (Some(d), None) => start
                .checked_add(SignedDuration::try_from(d.0).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?,
            (None, Some(e)) => instant(e, &tz).map_err(|e| format!("end: {e}"))?,
            _ => return Err("give either duration or end".into()),
        };
        if end <= start {
            return Err("the window ends before it starts".into());
        }
        let length = end.duration_since(start);
        if c.weekly && length > SignedDuration::from_hours(7 * 24) {
            return Err("a weekly window cannot last longer than a week".into());
        }
        let local_start = start.to_zoned(tz.clone()).datetime();
        let first = Window { id: c.id.clone(), sources: c.sources.clone(), start, end, channel: c.channel.clone() };
        Ok(Schedule { first, local_start, tz, length, weekly: c.weekly })
    }

    fn occurrence(&self, k: i64) -> Option<Window> {
        if k == 0 {
            return Some(self.first.clone());
        }
        let start =
            self.local_start.checked_add(k.checked_mul(7)?.days()).ok()?.to_zoned(self.tz.clone()).ok()?.timestamp();
        Some(Window { start, end: start.checked_add(self.length).ok()?, ..self.first.clone() })
    }

    /// The occurrences that overlap `[from, to]`, oldest first.
    pub fn between(&self, from: Timestamp, to: Timestamp) -> Vec<Window> {
        if !self.weekly {
            let w = &self.first;
            return if w.end >= from && w.start <= to { vec![w.clone()] } else { vec![] };
        }
        let week = SignedDuration::from_hours(7 * 24);
        let k0 = from.duration_since(self.first.start).as_secs().div_euclid(week.as_secs()) - 1;
        (k0.max(0)..).map_while(|k| self.occurrence(k).filter(|w| w.start <= to)).filter(|w| w.end >= from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(weekly: bool) -> MaintenanceConfig {
        MaintenanceConfig {
            id: "deploy".into(),
            sources: vec!["freezer".into()],
            start: "2026-10-20T02:00".into(),
            duration: Some("1h".parse().unwrap()),
            end: None,
            weekly,
            time_zone: Some("Europe/Berlin".into()),
            channel: None,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_weekly_window_keeps_its_local_time_across_dst() {
        let s = Schedule::from_config(&config(true)).unwrap();
        let found = s.between(t("2026-10-27T00:00:00Z"), t("2026-10-27T05:00:00Z"));
        assert_eq!(found.len(), 1);
        // 02:00 in Berlin: 00:00Z in summer, 01:00Z after 2026-10-25.
        assert_eq!(found[0].start, t("2026-10-27T01:00:00Z"));
        assert!(found[0].covers("freezer", t("2026-10-27T01:30:00Z")));
        assert!(!found[0].covers("lab", t("2026-10-27T01:30:00Z")), "only its sources");
        assert!(!found[0].covers("freezer", t("2026-10-27T02:00:00Z")), "it has ended");
        assert_ne!(found[0].key(), s.between(t("2026-10-20T00:00:00Z"), t("2026-10-20T01:00:00Z"))[0].key());
        assert!(s.between(t("2026-10-10T00:00:00Z"), t("2026-10-19T00:00:00Z")).is_empty(), "not before its start");
    }

    #[test]
    fn a_one_off_window_and_bad_ones() {
        let s = Schedule::from_config(&config(false)).unwrap();
        assert_eq!(s.between(t("2026-10-20T00:00:00Z"), t("2026-10-20T00:30:00Z")).len(), 1);
        assert!(s.between(t("2026-10-27T00:00:00Z"), t("2026-10-28T00:00:00Z")).is_empty());
        let mut c = config(false);
        c.end = Some("2026-10-20T01:00".into());
        assert!(Schedule::from_config(&c).unwrap_err().contains("either duration or end"));
        c.duration = None;
        assert!(Schedule::from_config(&c).unwrap_err().contains("ends before"));
    }
}
