//! Durations written the way people write them: `30s`, `10m`, `1h30m`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl std::str::FromStr for ConfigDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a duration; write it like \"30s\", \"10m\" or \"1h30m\"");
        let s = s.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Ok(ConfigDuration(Duration::from_secs(total)))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        let secs = |s: &str| s.parse::<ConfigDuration>().map(|d| d.0.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("1d"), Ok(86_400));
        assert_eq!(secs("2w"), Ok(14 * 86_400));
    }

    #[test]
    fn refuses_bare_numbers_unknown_units_and_empty_text() {
        for bad in ["10", "5 minutes", "", "m", "1y"] {
            let err = bad.parse::<ConfigDuration>().unwrap_err();
            assert!(err.contains("\"10m\""), "{err}");
        }
    }
}
