//! Caller verification: tokens are compared in constant time.

use crate::config::Secret;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// No token was sent (answer 401).
    Missing,
    /// A token was sent and it is wrong (answer 403).
    Wrong,
}

/// Checks `given` against the source's token. A source without a token has passed config
/// validation only because it is explicitly `insecure`, so it accepts anything.
pub fn check(expected: Option<&Secret>, given: Option<&str>) -> Verdict {
    let Some(expected) = expected else { return Verdict::Accepted };
    match given {
        None | Some("") => Verdict::Missing,
        // `ct_eq` on slices of different lengths returns false without comparing contents;
        // the length of a token is not the secret.
        Some(g) if bool::from(g.as_bytes().ct_eq(expected.expose().as_bytes())) => Verdict::Accepted,
        Some(_) => Verdict::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_match_exactly() {
        let t = Secret::new("s3cret-token");
        assert_eq!(check(Some(&t), Some("s3cret-token")), Verdict::Accepted);
        assert_eq!(check(Some(&t), Some("s3cret-tokeN")), Verdict::Wrong);
        assert_eq!(check(Some(&t), Some("s3cret")), Verdict::Wrong);
        assert_eq!(check(Some(&t), Some("")), Verdict::Missing);
        assert_eq!(check(Some(&t), None), Verdict::Missing);
        assert_eq!(check(None, None), Verdict::Accepted);
    }
}
