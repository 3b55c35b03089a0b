//! Logging: structured tracing events, JSON under Lambda (or with `KLAXON_LOG_FORMAT=json`),
//! compact and readable locally. Level from `RUST_LOG` (default `info`).
//!
//! Nothing logs a token, a secret or a request body: configuration secrets print as `***`, and
//! the HTTP trace layer records only the method and the route template, never the query string
//! (Particle may carry its key there).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    pub fn from_env() -> LogFormat {
        let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let asked_json = std::env::var("KLAXON_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
            || std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        if in_lambda || asked_json { LogFormat::Json } else { LogFormat::Text }
    }
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match LogFormat::from_env() {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.compact().with_target(false).try_init(),
    };
}

/// Lets one log line of a kind through per interval and counts the rest. In a storm, a problem
/// every job meets (no Mattermost configured, a revoked bot token) would otherwise be written
/// once per alert: thousands of identical lines a second that bury everything else (with the
/// request line, also at info then, they cost a storm 10-15 % of its new alerts a second:
/// `lib/benches/load/README.md`). Each job's outcome is in its delivery record whatever the log
/// says.
pub struct Throttle {
    every: std::time::Duration,
    kinds: std::sync::Mutex<Kinds>,
}

#[derive(Default)]
struct Kinds {
    passed: std::collections::HashMap<String, Passed>,
    /// When the full memory was last swept of kinds not seen for an interval: at most once an
    /// interval, so that a flood of distinct kinds does not sweep it on every line.
    swept: Option<std::time::Instant>,
}

struct Passed {
    at: std::time::Instant,
    left_out: u64,
}

/// Kinds remembered at most; past this, kinds not seen for an interval are forgotten (swept at
/// most once an interval), and a new kind that finds no room is logged every time.
const THROTTLE_KINDS: usize = 1024;

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Throttle { every, kinds: Default::default() }
    }

    /// One line of a kind a minute: what the notifier's problems use.
    pub fn per_minute() -> Self {
        Throttle::new(std::time::Duration::from_secs(60))
    }

    /// `Some(n)`: log this one, saying that `n` lines of its kind were left out since the last
    /// one logged; `None`: leave it out (it is counted).
    pub fn admit(&self, kind: &str) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let Kinds { passed: kinds, swept } = &mut *guard;
        if let Some(passed) = kinds.get_mut(kind) {
            if now.duration_since(passed.at) < self.every {
                passed.left_out += 1;
                return None;
            }
            let left_out = std::mem::take(&mut passed.left_out);
            passed.at = now;
            return Some(left_out);
        }
        if kinds.len() >= THROTTLE_KINDS && swept.is_none_or(|at| now.duration_since(at) >= self.every) {
            kinds.retain(|_, p| now.duration_since(p.at) < self.every);
            *swept = Some(now);
        }
        if kinds.len() < THROTTLE_KINDS {
            kinds.insert(kind.to_string(), Passed { at: now, left_out: 0 });
        }
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;
    use std::time::Duration;

    #[test]
    fn one_line_of_a_kind_per_interval_with_the_count_of_those_left_out() {
        let throttle = Throttle::new(Duration::from_millis(200));
        assert_eq!(throttle.admit("no mattermost"), Some(0), "the first of a kind is logged");
        assert_eq!(throttle.admit("no mattermost"), None);
        assert_eq!(throttle.admit("no mattermost"), None);
        assert_eq!(throttle.admit("bad token"), Some(0), "another kind is not held back");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.admit("no mattermost"), Some(2), "the next one says how many were left out");
        assert_eq!(throttle.admit("no mattermost"), None);
    }

    #[test]
    fn new_kinds_past_the_limit_are_logged_every_time_rather_than_lost() {
        let throttle = Throttle::new(Duration::from_secs(60));
        for i in 0..super::THROTTLE_KINDS {
            assert_eq!(throttle.admit(&format!("kind {i}")), Some(0));
        }
        // The memory is full of recent kinds: a new kind is not remembered, so never held back.
        assert_eq!(throttle.admit("one more"), Some(0));
        assert_eq!(throttle.admit("one more"), Some(0));
        assert_eq!(throttle.admit("kind 0"), None, "the kinds remembered are still held back");
    }

    #[test]
    fn a_full_memory_forgets_old_kinds_at_the_next_sweep() {
        let throttle = Throttle::new(Duration::from_millis(200));
        for i in 0..super::THROTTLE_KINDS {
            assert_eq!(throttle.admit(&format!("kind {i}")), Some(0));
        }
        assert_eq!(throttle.admit("early"), Some(0), "full of recent kinds: logged, not remembered");
        assert_eq!(throttle.admit("early"), Some(0), "and the sweep that found nothing is not repeated");
        std::thread::sleep(Duration::from_millis(250));
        // An interval later the old kinds are swept away, and the new one is remembered.
        assert_eq!(throttle.admit("late"), Some(0));
        assert_eq!(throttle.admit("late"), None, "remembered once there was room");
        assert_eq!(throttle.admit("kind 1"), Some(0), "swept kinds start over");
    }
}
