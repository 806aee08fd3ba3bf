//! Semantic Versioning 2.0.0, strictly as <https://semver.org> specifies it.
//!
//! `Version::parse` accepts exactly the SemVer grammar (no `v`, no missing parts, no leading
//! zeros). `Version::parse_lenient` adds the coercions Helm's version library (Masterminds
//! semver) performs for chart versions: an optional `v`, and `1` / `1.2` as `1.0.0` / `1.2.0`.
//! Container tags have their own, looser shapes; those live in `tag.rs` and build on the
//! precedence rules here. This module must stay free of any Docker or policy knowledge.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One dot-separated identifier of a prerelease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    Numeric(u64),
    AlphaNumeric(String),
}

impl Identifier {
    fn parse(s: &str, strict_leading_zero: bool) -> Result<Identifier, SemverError> {
        if s.is_empty() {
            return Err(SemverError::EmptyIdentifier);
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(SemverError::InvalidCharacter(s.to_owned()));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            if strict_leading_zero && s.len() > 1 && s.starts_with('0') {
                return Err(SemverError::LeadingZero(s.to_owned()));
            }
            return match s.parse::<u64>() {
                Ok(n) => Ok(Identifier::Numeric(n)),
                Err(_) => Err(SemverError::NumberTooLarge(s.to_owned())),
            };
        }
        Ok(Identifier::AlphaNumeric(s.to_owned()))
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identifier::Numeric(n) => write!(f, "{n}"),
            Identifier::AlphaNumeric(s) => f.write_str(s),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// SemVer §11.4: numeric identifiers compare numerically, alphanumeric ones in ASCII order,
/// and numeric identifiers always have lower precedence than alphanumeric ones.
impl Ord for Identifier {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Identifier::Numeric(a), Identifier::Numeric(b)) => a.cmp(b),
            (Identifier::Numeric(_), Identifier::AlphaNumeric(_)) => Ordering::Less,
            (Identifier::AlphaNumeric(_), Identifier::Numeric(_)) => Ordering::Greater,
            (Identifier::AlphaNumeric(a), Identifier::AlphaNumeric(b)) => {
                a.as_bytes().cmp(b.as_bytes())
            }
        }
    }
}

/// Compares two prerelease lists by SemVer precedence. An empty list is a release and ranks
/// above every prerelease of the same core version (§11.3).
pub fn compare_prerelease(a: &[Identifier], b: &[Identifier]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // Slice ordering is exactly §11.4.4: a longer list wins when all preceding are equal.
        (false, false) => a.cmp(b),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SemverError {
    #[error("empty version string")]
    Empty,
    #[error("'{0}' is not a semantic version (expected MAJOR.MINOR.PATCH, e.g. 1.2.3)")]
    Malformed(String),
    #[error("'{0}' has a leading zero, which SemVer forbids in numbers")]
    LeadingZero(String),
    #[error("'{0}' is larger than a version number may be")]
    NumberTooLarge(String),
    #[error("empty identifier in prerelease or build metadata")]
    EmptyIdentifier,
    #[error("'{0}' contains a character SemVer does not allow (only [0-9A-Za-z-])")]
    InvalidCharacter(String),
}

/// A semantic version. `Eq` and `Ord` include build metadata so that the order is total and
/// consistent with equality; use [`Version::cmp_precedence`] for SemVer precedence, which
/// ignores build metadata (§10).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Vec<Identifier>,
    pub build: Vec<String>,
}

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            major,
            minor,
            patch,
            pre: Vec::new(),
            build: Vec::new(),
        }
    }

    /// Parses a strict SemVer 2.0.0 string.
    pub fn parse(s: &str) -> Result<Version, SemverError> {
        Self::parse_with(s, false)
    }

    /// Parses the way Helm (Masterminds semver v3.5 `NewVersion`, whose default
    /// `CoerceNewVersion = true` Helm keeps) does:
    /// - an optional leading lowercase `v` (`V` is rejected);
    /// - missing minor/patch taken as zero (`1` is `1.0.0`, `1.2-rc.1` is `1.2.0-rc.1`);
    /// - leading zeros accepted and dropped in major/minor/patch (`01.02.03` is `1.2.3`), but
    ///   still rejected in numeric prerelease identifiers (`1.2.3-rc.01` is an error);
    /// - a numeric prerelease identifier too large for `u64` is accepted and kept as
    ///   alphanumeric, which is how Masterminds compares it (as text, above all numbers);
    /// - inputs longer than 256 bytes (`MaxVersionLen`) rejected; no fourth number part.
    pub fn parse_lenient(s: &str) -> Result<Version, SemverError> {
        Self::parse_with(s, true)
    }

    fn parse_with(input: &str, lenient: bool) -> Result<Version, SemverError> {
        if input.is_empty() {
            return Err(SemverError::Empty);
        }
        // Masterminds `MaxVersionLen`, checked before anything else.
        if lenient && input.len() > 256 {
            return Err(SemverError::Malformed(input.to_owned()));
        }
        let mut s = input;
        if lenient && let Some(rest) = s.strip_prefix('v') {
            s = rest;
        }
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() > 3 || (!lenient && parts.len() != 3) {
            return Err(SemverError::Malformed(input.to_owned()));
        }
        let mut nums = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SemverError::Malformed(input.to_owned()));
            }
            // Masterminds coerces `01` to 1 in the core numbers (only there).
            if !lenient && p.len() > 1 && p.starts_with('0') {
                return Err(SemverError::LeadingZero(input.to_owned()));
            }
            nums[i] = p
                .parse::<u64>()
                .map_err(|_| SemverError::NumberTooLarge((*p).to_owned()))?;
        }
        let pre = match pre {
            Some(p) => p
                .split('.')
                .map(|id| match Identifier::parse(id, true) {
                    // Masterminds never parses prerelease numbers at parse time; when comparing,
                    // a digit string that does not fit a uint64 is treated as text, which is
                    // exactly how an alphanumeric identifier orders.
                    Err(SemverError::NumberTooLarge(_)) if lenient => {
                        Ok(Identifier::AlphaNumeric(id.to_owned()))
                    }
                    other => other,
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let build = match build {
            Some(b) => b
                .split('.')
                .map(|id| {
                    if id.is_empty() {
                        Err(SemverError::EmptyIdentifier)
                    } else if !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                        Err(SemverError::InvalidCharacter(id.to_owned()))
                    } else {
                        Ok(id.to_owned())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(Version {
            major: nums[0],
            minor: nums[1],
            patch: nums[2],
            pre,
            build,
        })
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// SemVer precedence (§11): build metadata does not take part.
    pub fn cmp_precedence(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_prerelease(&self.pre, &other.pre))
    }

    /// The same version without prerelease or build metadata.
    pub fn core(&self) -> Version {
        Version::new(self.major, self.minor, self.patch)
    }

    pub fn pre_string(&self) -> String {
        join(&self.pre)
    }
}

fn join<T: fmt::Display>(ids: &[T]) -> String {
    let mut out = String::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&id.to_string());
    }
    out
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_precedence(other)
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", join(&self.pre))?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", join(&self.build))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Version {
    type Err = SemverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn spec_precedence_example_is_strictly_increasing() {
        // The example chain from SemVer §11.4.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for w in chain.windows(2) {
            assert_eq!(
                v(w[0]).cmp_precedence(&v(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn build_metadata_is_ignored_for_precedence_but_kept_in_eq() {
        let a = v("1.0.0+20130313144700");
        let b = v("1.0.0+exp.sha.5114f85");
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "1.0.0+20130313144700");
    }

    #[test]
    fn strict_rejects_what_the_spec_rejects() {
        for bad in [
            "",
            "1",
            "1.2",
            "v1.2.3",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-01",
            "1.2.3-a..b",
            "1.2.3-a_b",
            "1.2.3.4",
            " 1.2.3",
            "1.2.3 ",
            "a.b.c",
            "-1.2.3",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn strict_accepts_spec_examples() {
        for good in [
            "0.0.4",
            "1.2.3",
            "10.20.30",
            "1.1.2-prerelease+meta",
            "1.1.2+meta",
            "1.1.2+meta-valid",
            "1.0.0-alpha",
            "1.0.0-beta",
            "1.0.0-alpha.beta",
            "1.0.0-alpha.beta.1",
            "1.0.0-alpha.1",
            "1.0.0-alpha0.valid",
            "1.0.0-alpha.0valid",
            "1.0.0-rc.1+build.1",
            "2.0.0-rc.1+build.123",
            "1.2.3-beta",
            "10.2.3-DEV-SNAPSHOT",
            "1.2.3-SNAPSHOT-123",
            "2.0.0+build.1848",
            "2.0.1-alpha.1227",
            "1.0.0-alpha+beta",
            "1.2.3----RC-SNAPSHOT.12.9.1--.12+788",
            "1.2.3----R-S.12.9.1--.12+meta",
            "1.0.0+0.build.1-rc.10000aaa-kk-0.1",
            "1.0.0-0A.is.legal",
            "1.0.0+001",
        ] {
            let parsed = v(good);
            assert_eq!(parsed.to_string(), good, "round trip");
        }
    }

    #[test]
    fn lenient_coerces_like_helm() {
        assert_eq!(Version::parse_lenient("v1.2.3").ok(), Some(v("1.2.3")));
        assert_eq!(Version::parse_lenient("1.2").ok(), Some(v("1.2.0")));
        assert_eq!(Version::parse_lenient("1").ok(), Some(v("1.0.0")));
        assert_eq!(
            Version::parse_lenient("1.2-beta.1").ok(),
            Some(v("1.2.0-beta.1"))
        );
        assert!(Version::parse_lenient("1.2.3.4").is_err());
        assert!(Version::parse_lenient("latest").is_err());
    }

    #[test]
    fn lenient_matches_masterminds_new_version_quirks() {
        let lenient = |s: &str| Version::parse_lenient(s).ok();
        // Leading zeros in the core numbers are coerced away (CoerceNewVersion = true)...
        assert_eq!(lenient("01.02.03"), Some(v("1.2.3")));
        assert_eq!(lenient("v00.1"), Some(v("0.1.0")));
        // ...but not in numeric prerelease identifiers.
        assert!(lenient("1.2.3-beta.01").is_none());
        assert_eq!(lenient("1.2.3-0abc"), Some(v("1.2.3-0abc")));
        assert_eq!(lenient("1.2.3-alpha.-1"), Some(v("1.2.3-alpha.-1")));
        // Only a lowercase `v`, and only one.
        assert!(lenient("V1.2.3").is_none());
        assert!(lenient("vv1.2.3").is_none());
        assert!(lenient("v").is_none());
        assert_eq!(
            lenient("20221209-update-renovatejson-v4"),
            Some(v("20221209.0.0-update-renovatejson-v4"))
        );
        assert_eq!(lenient("1-rc.1+b"), Some(v("1.0.0-rc.1+b")));
        for bad in [
            "",
            "1.",
            "1..2",
            "1.2.3-",
            "1.2.3+",
            "9.8.7+meta+meta",
            "1.0.0-alpha_beta",
            " 1.2.3",
            "\n1.2",
            "18446744073709551616",
        ] {
            assert!(lenient(bad).is_none(), "{bad:?} should be rejected");
        }
        // A prerelease number beyond u64 is accepted and, as in Masterminds, orders as text.
        let huge =
            lenient("1.0.0-18446744073709551616").unwrap_or_else(|| panic!("huge prerelease"));
        assert_eq!(
            huge.pre,
            vec![Identifier::AlphaNumeric("18446744073709551616".to_owned())]
        );
        assert_eq!(huge.cmp_precedence(&v("1.0.0-99")), Ordering::Greater);
        assert_eq!(huge.cmp_precedence(&v("1.0.0-a")), Ordering::Less);
        assert!(
            Version::parse("1.0.0-18446744073709551616").is_err(),
            "strict parse is unchanged"
        );
        // Masterminds MaxVersionLen is 256 bytes.
        let at_limit = format!("1.2.3-{}", "a".repeat(250));
        assert!(lenient(&at_limit).is_some());
        assert!(lenient(&format!("{at_limit}a")).is_none());
    }
}
