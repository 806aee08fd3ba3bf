//! Secrets the server compares requests against (API tokens, webhook secrets), and the
//! constant-time comparison itself.
//!
//! A [`Secret`] never shows its value in `Debug` or `Display`, so it cannot reach a log line or
//! an error by accident. Comparisons hash both sides with SHA-256 first, so neither the content
//! nor the length of the configured secret leaks through timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string. `Debug` prints `Secret(***)`.
#[derive(Clone)]
pub struct Secret {
    value: String,
    digest: [u8; 32],
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        let digest = sha256(value.as_bytes());
        Secret { value, digest }
    }

    /// The value, for code that must send it somewhere (never for logging).
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Whether `presented` equals this secret, in time independent of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(sha256(presented).ct_eq(&self.digest))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::new(s)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_value_and_hides_it() {
        let s = Secret::new("s3cr3t-value");
        assert!(s.matches(b"s3cr3t-value"));
        assert!(!s.matches(b"s3cr3t-valuE"));
        assert!(!s.matches(b"s3cr3t-value "));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
