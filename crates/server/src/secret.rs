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

    /// Reads a secret from a file (`token_file`, a mounted Kubernetes Secret). One trailing
    /// newline is dropped, since `echo token > file` writes one; anything else is kept.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Secret> {
        let text = std::fs::read_to_string(path)?;
        let value = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Ok(Secret::new(value))
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

    #[test]
    fn a_secret_file_loses_one_trailing_newline_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (content, want) in [
            ("tok\n", "tok"),
            ("tok", "tok"),
            ("tok\r\n", "tok"),
            (" tok \n\n", " tok \n"),
        ] {
            let p = dir.path().join("t");
            std::fs::write(&p, content).expect("write");
            assert_eq!(
                Secret::from_file(&p).expect("read").expose(),
                want,
                "{content:?}"
            );
        }
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }
}
