//! Whether the machine's CPUs are nearly all busy, from Linux's `/proc/stat`: intake yields to
//! the notifier only then. A notifier that is behind because its calls wait (a Mattermost that
//! answers slowly or not at all) is not helped by a slower intake, and the CPU then has time
//! to spare.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Busy at least this share of the time between two samples: saturated.
pub const SATURATED: f64 = 0.9;
/// How often the CPU times are read (only while the notifier is behind).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A sample older than this is no baseline for now: the next one starts afresh.
const STALE: Duration = Duration::from_secs(1);

/// CPU time since boot, in the kernel's ticks: (busy, total) over all CPUs.
pub fn times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let fields: Vec<u64> = line.split_whitespace().take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields.try_into().ok()?;
    let total = user + nice + system + idle + iowait + irq + softirq + steal;
    // Waiting for the disk is time a runnable notifier could have had.
    Some((total - idle - iowait, total))
}

/// Whether the CPUs were busy at least [`SATURATED`] of the time from `before` to `after`
/// (each `(busy, total)`); `None` when no time passed between them.
pub fn saturated_between(before: (u64, u64), after: (u64, u64)) -> Option<bool> {
    let total = after.1.checked_sub(before.1).filter(|t| *t > 0)?;
    let busy = after.0.saturating_sub(before.0);
    Some(busy as f64 >= SATURATED * total as f64)
}

/// The machine's CPUs, read at most every [`SAMPLE_EVERY`] by whichever request asks first.
#[derive(Debug)]
pub struct Cpu {
    /// Answers without reading: a machine without `/proc/stat`, or a test.
    fixed: Option<bool>,
    /// `/proc/stat`, or a test's stand-in.
    stat: std::path::PathBuf,
    last: Mutex<Option<(Instant, (u64, u64))>>,
    verdict: AtomicBool,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::machine()
    }
}

impl Cpu {
    /// The machine this process runs on.
    pub fn machine() -> Cpu {
        Cpu { fixed: None, stat: "/proc/stat".into(), last: Mutex::new(None), verdict: AtomicBool::new(true) }
    }

    /// Always says `saturated` (for a machine whose CPU times cannot be read, and tests).
    pub fn assumed(saturated: bool) -> Cpu {
        Cpu {
            fixed: Some(saturated),
            stat: "/proc/stat".into(),
            last: Mutex::new(None),
            verdict: AtomicBool::new(saturated),
        }
    }

    /// Whether the CPUs have been nearly all busy lately. Where `/proc/stat` cannot be read
    /// (not Linux), it says yes: intake then yields to the notifier's lag alone.
    pub fn saturated(&self) -> bool {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        // One request reads; the others take the last verdict.
        let Ok(mut last) = self.last.try_lock() else { return self.verdict.load(Ordering::Relaxed) };
        let now = Instant::now();
        if last.is_some_and(|(at, _)| now.duration_since(at) < SAMPLE_EVERY) {
            return self.verdict.load(Ordering::Relaxed);
        }
        let Some(sample) = std::fs::read_to_string(&self.stat).ok().as_deref().and_then(times) else {
            self.verdict.store(true, Ordering::Relaxed);
            return true;
        };
        // Without a recent baseline (the first read in a while) the CPU is taken as busy until
        // the next read, a tenth of a second later, says otherwise.
        let verdict = match *last {
            Some((at, before)) if now.duration_since(at) <= STALE => saturated_between(before, sample).unwrap_or(true),
            _ => true,
        };
        *last = Some((now, sample));
        self.verdict.store(verdict, Ordering::Relaxed);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_waiting_for_the_disk() {
        let stat = "cpu  1504854 0 478877 8042973 142382 0 55726 15670 0 0\ncpu0 722472 0 205625 4134252 29389 0 28162 6230 0 0\n";
        assert_eq!(times(stat), Some((1504854 + 478877 + 55726 + 15670, 10240482)));
        assert_eq!(times("intr 1 2 3\n"), None);
        assert_eq!(times("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(times("cpu  1 2 3\n"), None, "too few fields");
    }

    #[test]
    fn saturated_is_nine_tenths_busy_or_more_between_two_samples() {
        assert_eq!(saturated_between((0, 0), (90, 100)), Some(true));
        assert_eq!(saturated_between((0, 0), (89, 100)), Some(false));
        assert_eq!(saturated_between((500, 1000), (700, 1200)), Some(true));
        assert_eq!(saturated_between((500, 1000), (500, 1000)), None, "no time passed");
    }

    #[test]
    fn the_verdict_follows_the_times_read_and_an_unreadable_file_means_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        let cpu = Cpu { stat: path.clone(), ..Cpu::machine() };
        assert!(cpu.saturated(), "no file: taken as busy");
        let next = |stat: &str| {
            std::fs::write(&path, stat).unwrap();
            std::thread::sleep(SAMPLE_EVERY + Duration::from_millis(20));
            cpu.saturated()
        };
        assert!(next("cpu  10 0 0 90 0 0 0 0 0 0\n"), "the first read has no baseline: busy");
        assert!(!next("cpu  15 0 0 185 0 0 0 0 0 0\n"), "5 of 100 ticks busy");
        assert!(next("cpu  110 0 0 190 0 0 0 0 0 0\n"), "95 of 100 ticks busy");
        std::fs::write(&path, "cpu  110 0 0 290 0 0 0 0 0 0\n").unwrap();
        assert!(cpu.saturated(), "read again within 100 ms: the last verdict, not this file's");
    }

    #[test]
    fn an_assumed_cpu_answers_without_reading() {
        assert!(Cpu::assumed(true).saturated());
        assert!(!Cpu::assumed(false).saturated());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machines_cpu_times_can_be_read() {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let (busy, total) = times(&stat).expect("the first line of /proc/stat");
        assert!(busy <= total && total > 0);
    }
}
