//! Secrets in the configuration: written inline or as `${ENV_VAR}` references, never printed.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A token, key or webhook URL. `Debug` and `Display` print `***`, so a config dump or a log
/// line can never leak one.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where it is used (an HTTP header, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names of its `${NAME}` references, in order (`ssm:/klaxon/x` for an SSM parameter).
    pub fn references(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            names.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
        names
    }

    /// Replaces every `${NAME}` with the variable's value. Returns the names that are not set.
    pub(crate) fn resolve(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), Vec<String>> {
        let mut out = String::with_capacity(self.0.len());
        let mut missing = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    match env(name) {
                        Some(v) => out.push_str(&v),
                        None => missing.push(name.to_string()),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    // Not a reference after all; keep the text as written.
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        if missing.is_empty() {
            self.0 = out;
            Ok(())
        } else {
            Err(missing)
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "HOST" => Some("chat.example.com".into()),
            _ => None,
        }
    }

    #[test]
    fn resolves_whole_and_embedded_references() {
        let mut s = Secret::new("${TOKEN}");
        s.resolve(&env).unwrap();
        assert_eq!(s.expose(), "s3cr3t");
        let mut s = Secret::new("https://${HOST}/hooks/${TOKEN}");
        s.resolve(&env).unwrap();
        assert_eq!(s.expose(), "https://chat.example.com/hooks/s3cr3t");
    }

    #[test]
    fn reports_every_missing_variable_and_keeps_the_value() {
        let mut s = Secret::new("${A}-${TOKEN}-${B}");
        assert_eq!(s.resolve(&env), Err(vec!["A".to_string(), "B".to_string()]));
        assert_eq!(s.expose(), "${A}-${TOKEN}-${B}");
    }

    #[test]
    fn literal_values_and_unclosed_braces_stay_as_written() {
        let mut s = Secret::new("plain-${value");
        s.resolve(&env).unwrap();
        assert_eq!(s.expose(), "plain-${value");
    }

    #[test]
    fn lists_its_references() {
        let s = Secret::new("https://${HOST}/hooks/${ssm:/klaxon/hook}");
        assert_eq!(s.references(), ["HOST", "ssm:/klaxon/hook"]);
        assert!(Secret::new("literal").references().is_empty());
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }
}
