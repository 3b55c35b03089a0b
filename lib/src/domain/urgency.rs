//! How loud an alert is. Ordered, so routing and escalation can say "high or above".

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Low,
    Medium,
    High,
    Critical,
}

impl Urgency {
    pub const ALL: [Urgency; 4] = [Urgency::Low, Urgency::Medium, Urgency::High, Urgency::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Low => "low",
            Urgency::Medium => "medium",
            Urgency::High => "high",
            Urgency::Critical => "critical",
        }
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown urgency {0:?}: use one of low, medium, high, critical")]
pub struct UnknownUrgency(pub String);

impl FromStr for Urgency {
    type Err = UnknownUrgency;

    /// Exact names only, case-insensitive. Word matching inside free text (sev1, p2, ...) belongs
    /// to the Mattermost intake, not here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Urgency::ALL
            .into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownUrgency(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgencies_are_ordered_from_low_to_critical() {
        assert!(Urgency::Low < Urgency::Medium);
        assert!(Urgency::Medium < Urgency::High);
        assert!(Urgency::High < Urgency::Critical);
    }

    #[test]
    fn parses_names_case_insensitively_and_round_trips() {
        for u in Urgency::ALL {
            assert_eq!(u.as_str().to_uppercase().parse::<Urgency>(), Ok(u));
            assert_eq!(u.to_string().parse::<Urgency>(), Ok(u));
        }
    }

    #[test]
    fn unknown_name_error_lists_the_allowed_values() {
        let err = "urgent".parse::<Urgency>().unwrap_err();
        assert!(err.to_string().contains("low, medium, high, critical"), "{err}");
    }
}
