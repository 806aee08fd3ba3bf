//! Container tags as people really push them, and the *families* they belong to.
//!
//! A tag is either a version (`v1.2.3`, `1.27`, `16.4-bookworm`, `1.27.2-alpine3.20`,
//! `1.2.3-rc.1`, `2024.01.15`, `20240115`, `1.2.3-r1`) or something that is not (`latest`,
//! `stable`, `mainline`, a digest). A version tag has a *family*: its shape — `v` prefix,
//! number of numeric parts, variant suffix, whether it carries a `-rN` revision, date or not.
//! The updater only ever proposes a tag from the family the asset already runs, so
//! `1.27-alpine` never becomes `1.28` and `16-bookworm` never becomes `17-alpine`.
//!
//! How an ambiguous hyphen suffix is read (the way Docker users expect, not the way a SemVer
//! parser would): after `MAJOR[.MINOR[.PATCH[.BUILD]]]`, the suffix is split on `-`.
//! * Leading segments whose first dot-separated identifier is a prerelease word (`alpha`,
//!   `beta`, `rc`, `pre`, `preview`, `dev`, `snapshot`, `nightly`, `canary`, `next`, `ea`,
//!   `m`/`milestone`, `a`, `b`, `cr`, each optionally followed by digits) or a plain number are
//!   the *prerelease*: `1.2.3-rc.1`, `1.2.3-beta2`, `1.0.0-0.3.7`.
//! * A last segment `rN` is a *revision* (Alpine/Bitnami rebuilds): `1.2.3-r1`,
//!   `1.2.3-debian-12-r5`. Revisions order after the version and change class `build`.
//! * Everything else is the *variant*: `alpine3.20`, `bookworm`, `debian-12`. So `-alpine` is a
//!   variant, never a prerelease, although SemVer's grammar would accept it as one.
//!
//! Strict SemVer 2.0 semantics remain available through [`Scheme::SemVer`]; see `semver.rs`.
//! This module knows nothing about policy: it only says what a tag is and how two compare.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::semver::{Identifier, Version, compare_prerelease};

/// How tags are read.
#[derive(Debug, Clone, Default)]
pub enum Scheme {
    /// The Docker-aware reading described in the module docs. The default.
    #[default]
    Auto,
    /// Strict SemVer 2.0: the whole tag must be a SemVer string (a leading `v` is allowed and
    /// becomes part of the family); any hyphen suffix is a prerelease.
    SemVer,
    /// A user-supplied regular expression with named groups: `version` (required), and
    /// optionally `prerelease`, `build` (a number that orders rebuilds of one version) and
    /// `variant` (or `compatibility`). Tags that do not match are not versions.
    Custom(CustomPattern),
}

/// A validated custom versioning pattern.
#[derive(Debug, Clone)]
pub struct CustomPattern {
    regex: Regex,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("invalid regular expression: {0}")]
    Regex(String),
    #[error(
        "the pattern has no named group `version`; write it like ^(?P<version>\\d+\\.\\d+)-ls(?P<build>\\d+)$"
    )]
    NoVersionGroup,
}

impl CustomPattern {
    pub fn new(pattern: &str) -> Result<CustomPattern, PatternError> {
        let regex = Regex::new(pattern).map_err(|e| PatternError::Regex(e.to_string()))?;
        if !regex.capture_names().any(|n| n == Some("version")) {
            return Err(PatternError::NoVersionGroup);
        }
        Ok(CustomPattern { regex })
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// Which calendar shape a date tag has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Dotted numbers (`1`, `1.2`, `1.2.3`, `1.2.3.4`), SemVer or not.
    Numeric,
    /// `YYYY.MM.DD`.
    Date,
    /// `YYYYMMDD`.
    CompactDate,
    /// Read through a custom pattern.
    Custom,
}

/// The shape of a version tag. Two tags are candidates for each other only when their
/// families are equal (or equal after [`Family::loosened`] when the policy allows it).
///
/// Equality and order are field by field in declaration order, exactly as derived; they are
/// written out only to compare strings through `eq_str` / `cmp_str` (and `Hash` with them,
/// as derived, to stay consistent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Family {
    pub kind: Kind,
    pub prefix: String,
    pub precision: u8,
    pub variant: String,
    pub revision: bool,
}

/// `a == b` for strings, without a call to `memcmp` when one is empty. Most families have an
/// empty prefix or variant, and an empty `String`'s pointer is dangling (address 1): glibc's
/// AVX-512 `memcmp` performs even a zero-length compare as a fully masked load from that
/// address, which the CPU resolves with a microcode assist (~150 ns measured, against ~5 ns
/// for a short non-empty compare). Same result as `==`.
fn eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// `a.cmp(b)` for strings, without `memcmp` when one is empty (see `eq_str`).
fn cmp_str(a: &str, b: &str) -> Ordering {
    if a.is_empty() || b.is_empty() {
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && eq_str(&self.prefix, &other.prefix)
            && self.precision == other.precision
            && eq_str(&self.variant, &other.variant)
            && self.revision == other.revision
    }
}

impl Eq for Family {}

impl Hash for Family {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.prefix.hash(state);
        self.precision.hash(state);
        self.variant.hash(state);
        self.revision.hash(state);
    }
}

impl PartialOrd for Family {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Family {
    fn cmp(&self, other: &Self) -> Ordering {
        self.kind
            .cmp(&other.kind)
            .then_with(|| cmp_str(&self.prefix, &other.prefix))
            .then_with(|| self.precision.cmp(&other.precision))
            .then_with(|| cmp_str(&self.variant, &other.variant))
            .then_with(|| self.revision.cmp(&other.revision))
    }
}

impl Family {
    /// The family with digits removed from the variant, so `alpine3.20` and `alpine3.21`
    /// match. Used only when the policy opts in (`variant: loose`).
    pub fn loosened(&self) -> Family {
        let mut variant: String = self
            .variant
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        // "alpine3.20" -> "alpine." ; drop separators left dangling by removed digits.
        while variant.ends_with(['.', '-', '_']) {
            variant.pop();
        }
        Family {
            variant,
            ..self.clone()
        }
    }

    /// `self.loosened() == other.loosened()`, without building either (no allocation).
    pub(crate) fn loosely_equals(&self, other: &Family) -> bool {
        /// The loosened variant's characters. Dropping the digits and then the separators left
        /// at the end is the same as keeping the variant up to its last character that is
        /// neither a digit nor a separator, without its digits.
        fn loose_variant(v: &str) -> impl Iterator<Item = char> + '_ {
            let end = v
                .char_indices()
                .rev()
                .find(|&(_, c)| !c.is_ascii_digit() && !matches!(c, '.' | '-' | '_'))
                .map_or(0, |(i, c)| i + c.len_utf8());
            v[..end].chars().filter(|c| !c.is_ascii_digit())
        }
        self.kind == other.kind
            && eq_str(&self.prefix, &other.prefix)
            && self.precision == other.precision
            && self.revision == other.revision
            && loose_variant(&self.variant).eq(loose_variant(&other.variant))
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)?;
        match self.kind {
            Kind::Date => f.write_str("YYYY.MM.DD")?,
            Kind::CompactDate => f.write_str("YYYYMMDD")?,
            Kind::Numeric | Kind::Custom => {
                let names = ["X", "Y", "Z", "W"];
                for i in 0..usize::from(self.precision) {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(names.get(i).copied().unwrap_or("N"))?;
                }
            }
        }
        if !self.variant.is_empty() {
            write!(f, "-{}", self.variant)?;
        }
        if self.revision {
            f.write_str("-rN")?;
        }
        if self.kind == Kind::Custom {
            f.write_str(" (custom pattern)")?;
        }
        Ok(())
    }
}

/// A tag that reads as a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagVersion {
    pub raw: String,
    pub family: Family,
    /// The numeric parts; for dates `[year, month, day]`.
    pub release: Vec<u64>,
    pub pre: Vec<Identifier>,
    pub revision: Option<u64>,
    pub build: Vec<String>,
}

impl TagVersion {
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// Version precedence: numbers, then prerelease (SemVer rules), then revision. Ignores
    /// build metadata, prefix and variant, so compare only tags of one family with it.
    pub fn cmp_precedence(&self, other: &TagVersion) -> Ordering {
        let n = self.release.len().max(other.release.len());
        for i in 0..n {
            let a = self.release.get(i).copied().unwrap_or(0);
            let b = other.release.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        compare_prerelease(&self.pre, &other.pre).then_with(|| self.revision.cmp(&other.revision))
    }
}

impl PartialOrd for TagVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A total order consistent with `Eq`: precedence first, then everything else that can make
/// two tags differ, so sorting is deterministic.
impl Ord for TagVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_precedence(other)
            .then_with(|| self.release.len().cmp(&other.release.len()))
            .then_with(|| self.family.cmp(&other.family))
            .then_with(|| self.build.cmp(&other.build))
            .then_with(|| self.raw.cmp(&other.raw))
    }
}

/// What a tag is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    Version(TagVersion),
    NotVersion { raw: String, why: NotVersionReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotVersionReason {
    /// `latest`, `stable`, `mainline`, `alpine`...: a name that moves.
    MovingName,
    /// `sha256:...`: a digest, not a tag.
    Digest,
    /// Starts like a version but has a shape no scheme understands.
    UnknownShape,
    /// The custom pattern does not match.
    NoPatternMatch,
    /// Not a valid SemVer string under the strict scheme.
    NotSemVer,
}

impl NotVersionReason {
    /// Completes the sentence "'<tag>' is ...".
    pub fn describe(self) -> &'static str {
        match self {
            NotVersionReason::MovingName => "a moving name, not a version",
            NotVersionReason::Digest => "a digest, not a tag",
            NotVersionReason::UnknownShape => {
                "not a version: no versioning scheme understands its shape"
            }
            NotVersionReason::NoPatternMatch => "not matched by the custom versioning pattern",
            NotVersionReason::NotSemVer => "not a SemVer 2.0 version",
        }
    }
}

impl Tag {
    pub fn raw(&self) -> &str {
        match self {
            Tag::Version(v) => &v.raw,
            Tag::NotVersion { raw, .. } => raw,
        }
    }

    pub fn version(&self) -> Option<&TagVersion> {
        match self {
            Tag::Version(v) => Some(v),
            Tag::NotVersion { .. } => None,
        }
    }
}

/// Reads a tag with the given scheme.
pub fn analyze(raw: &str, scheme: &Scheme) -> Tag {
    let not = |why| Tag::NotVersion {
        raw: raw.to_owned(),
        why,
    };
    if is_digest_like(raw) {
        return not(NotVersionReason::Digest);
    }
    let parsed = match scheme {
        Scheme::Auto => parse_auto(raw),
        Scheme::SemVer => parse_semver(raw),
        Scheme::Custom(p) => parse_custom(raw, p),
    };
    match parsed {
        Ok(v) => Tag::Version(v),
        Err(why) => not(why),
    }
}

fn is_digest_like(raw: &str) -> bool {
    match raw.split_once(':') {
        Some((alg, hex)) => {
            !alg.is_empty() && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn split_prefix(raw: &str) -> (&str, &str) {
    let b = raw.as_bytes();
    if b.len() > 1 && (b[0] == b'v' || b[0] == b'V') && b[1].is_ascii_digit() {
        (&raw[..1], &raw[1..])
    } else {
        ("", raw)
    }
}

/// Prerelease words as they appear in real tags. Matched on the first identifier of a segment.
fn is_prerelease_word(ident: &str) -> bool {
    let word = ident.trim_end_matches(|c: char| c.is_ascii_digit());
    if word.is_empty() {
        // A plain number (`1.0.0-1`) is a SemVer prerelease, and SemVer is what the tag follows.
        return !ident.is_empty();
    }
    matches!(
        word.to_ascii_lowercase().as_str(),
        "alpha"
            | "a"
            | "beta"
            | "b"
            | "rc"
            | "cr"
            | "pre"
            | "preview"
            | "dev"
            | "snapshot"
            | "nightly"
            | "canary"
            | "next"
            | "ea"
            | "m"
            | "milestone"
    )
}

fn is_revision(seg: &str) -> Option<u64> {
    let digits = seg.strip_prefix('r')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_identifiers(s: &str) -> Option<Vec<Identifier>> {
    let mut out = Vec::new();
    for id in s.split('.') {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        if id.bytes().all(|b| b.is_ascii_digit()) {
            // Tags are not strict SemVer: "01" is read as 1 rather than refused.
            out.push(Identifier::Numeric(id.parse().ok()?));
        } else {
            out.push(Identifier::AlphaNumeric(id.to_owned()));
        }
    }
    Some(out)
}

/// Splits `1.2.3rest` into its numeric parts, the number of digits of the first part, and
/// the rest.
fn split_numbers(s: &str) -> Option<(Vec<u64>, usize, &str)> {
    let mut parts = Vec::with_capacity(4);
    let mut first_len = 0;
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let text = &rest[..end];
        // More than 18 digits is a hash or a build id, not a version number.
        if text.len() > 18 {
            return None;
        }
        parts.push(text.parse().ok()?);
        if parts.len() == 1 {
            first_len = text.len();
        }
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix('.')
            && after.starts_with(|c: char| c.is_ascii_digit())
        {
            rest = after;
            continue;
        }
        return Some((parts, first_len, rest));
    }
}

/// `first_len` is the number of digits of the first part.
fn date_kind(parts: &[u64], first_len: usize) -> Option<(Kind, Vec<u64>)> {
    let valid = |y: u64, m: u64, d: u64| {
        (1970..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
    };
    match parts {
        // Calendar versions (`2024.1.0`, Home Assistant's `2024.12.31`...) are read by shape
        // alone: checking month and day would put `2024.1.0` and `2024.1.1` in different
        // families and never offer one for the other.
        [y, m, d] if first_len == 4 && (1970..=2100).contains(y) => {
            Some((Kind::Date, vec![*y, *m, *d]))
        }
        [n] if first_len == 8 => {
            let (y, m, d) = (n / 10_000, (n / 100) % 100, n % 100);
            valid(y, m, d).then(|| (Kind::CompactDate, vec![y, m, d]))
        }
        _ => None,
    }
}

fn parse_auto(raw: &str) -> Result<TagVersion, NotVersionReason> {
    let (prefix, body) = split_prefix(raw);
    if !body.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(NotVersionReason::MovingName);
    }
    let (numbers, build) = match body.split_once('+') {
        Some((n, b)) => (n, b.split('.').map(str::to_owned).collect::<Vec<_>>()),
        None => (body, Vec::new()),
    };
    if build.iter().any(String::is_empty) {
        return Err(NotVersionReason::UnknownShape);
    }
    let (release, first_len, mut rest) =
        split_numbers(numbers).ok_or(NotVersionReason::UnknownShape)?;
    if release.len() > 4 {
        return Err(NotVersionReason::UnknownShape);
    }
    let (kind, release) = match date_kind(&release, first_len) {
        Some((k, r)) => (k, r),
        None if release.len() == 1 && first_len >= 8 => {
            // A long bare number that is not a date is a build id or a timestamp: ordering it
            // as a version would be a guess.
            return Err(NotVersionReason::UnknownShape);
        }
        None => (Kind::Numeric, release),
    };
    let precision = u8::try_from(if kind == Kind::CompactDate {
        1
    } else {
        release.len()
    })
    .map_err(|_| NotVersionReason::UnknownShape)?;

    let mut pre = Vec::new();
    // `1.2.3rc1`, `3.9.0b1`: a prerelease glued to the numbers.
    if rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let end = rest.find('-').unwrap_or(rest.len());
        let glued = &rest[..end];
        let first = glued.split('.').next().unwrap_or("");
        if !is_prerelease_word(first) {
            return Err(NotVersionReason::UnknownShape);
        }
        pre = parse_identifiers(glued).ok_or(NotVersionReason::UnknownShape)?;
        rest = &rest[end..];
    }
    // The suffix's `-` segments: leading prerelease segments (unless the prerelease was
    // glued on), then the variant, then an optional `rN` revision. The variant is therefore
    // one contiguous slice of the suffix and is taken as such, without splitting and joining.
    let mut variant = "";
    let mut revision = None;
    if !rest.is_empty() {
        let mut suffix = rest
            .strip_prefix('-')
            .ok_or(NotVersionReason::UnknownShape)?;
        if suffix.split('-').any(str::is_empty) {
            return Err(NotVersionReason::UnknownShape);
        }
        let last = suffix.rsplit('-').next().unwrap_or(suffix);
        if let Some(r) = is_revision(last) {
            revision = Some(r);
            suffix = suffix[..suffix.len() - last.len()].trim_end_matches('-');
        }
        if pre.is_empty() {
            while !suffix.is_empty() {
                let (seg, after) = suffix.split_once('-').unwrap_or((suffix, ""));
                let first = seg.split('.').next().unwrap_or("");
                if !is_prerelease_word(first) {
                    break;
                }
                pre.extend(parse_identifiers(seg).ok_or(NotVersionReason::UnknownShape)?);
                suffix = after;
            }
        }
        variant = suffix;
    }
    Ok(TagVersion {
        raw: raw.to_owned(),
        family: Family {
            kind,
            prefix: prefix.to_ascii_lowercase(),
            precision,
            variant: variant.to_owned(),
            revision: revision.is_some(),
        },
        release,
        pre,
        revision,
        build,
    })
}

fn parse_semver(raw: &str) -> Result<TagVersion, NotVersionReason> {
    let (prefix, body) = split_prefix(raw);
    let v = Version::parse(body).map_err(|_| NotVersionReason::NotSemVer)?;
    Ok(TagVersion {
        raw: raw.to_owned(),
        family: Family {
            kind: Kind::Numeric,
            prefix: prefix.to_ascii_lowercase(),
            precision: 3,
            variant: String::new(),
            revision: false,
        },
        release: vec![v.major, v.minor, v.patch],
        pre: v.pre,
        revision: None,
        build: v.build,
    })
}

fn parse_custom(raw: &str, pattern: &CustomPattern) -> Result<TagVersion, NotVersionReason> {
    let caps = pattern
        .regex
        .captures(raw)
        .ok_or(NotVersionReason::NoPatternMatch)?;
    let version = caps
        .name("version")
        .ok_or(NotVersionReason::NoPatternMatch)?
        .as_str();
    let (prefix, body) = split_prefix(version);
    let (release, _, rest) = split_numbers(body).ok_or(NotVersionReason::UnknownShape)?;
    if !rest.is_empty() || release.len() > 4 {
        return Err(NotVersionReason::UnknownShape);
    }
    let pre = match caps.name("prerelease") {
        Some(m) if !m.as_str().is_empty() => {
            parse_identifiers(m.as_str()).ok_or(NotVersionReason::UnknownShape)?
        }
        _ => Vec::new(),
    };
    let revision = match caps.name("build") {
        Some(m) if !m.as_str().is_empty() => Some(
            m.as_str()
                .parse()
                .map_err(|_| NotVersionReason::UnknownShape)?,
        ),
        _ => None,
    };
    let variant = caps
        .name("variant")
        .or_else(|| caps.name("compatibility"))
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    Ok(TagVersion {
        raw: raw.to_owned(),
        family: Family {
            kind: Kind::Custom,
            prefix: prefix.to_ascii_lowercase(),
            precision: u8::try_from(release.len()).map_err(|_| NotVersionReason::UnknownShape)?,
            variant,
            revision: caps.name("build").is_some(),
        },
        release,
        pre,
        revision,
        build: Vec::new(),
    })
}

/// What going from one version to another changes. Serialized in snake_case, as the CLI prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Major,
    Minor,
    Patch,
    Prerelease,
    Build,
    None,
    Downgrade,
    Incomparable,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Major => "major",
            Change::Minor => "minor",
            Change::Patch => "patch",
            Change::Prerelease => "prerelease",
            Change::Build => "build",
            Change::None => "none",
            Change::Downgrade => "downgrade",
            Change::Incomparable => "incomparable",
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies going from `from` to `to` (both assumed to be of one family).
///
/// An upgrade *onto* a prerelease is `prerelease` whatever else changes: the prerelease gate
/// exists so that nobody is moved onto an unfinished release by surprise. Leaving a prerelease
/// for the release of the same numbers (`1.3.0-rc.2` → `1.3.0`) is `patch`: it is the same
/// version, made stable. Otherwise the class is the most significant number that changed
/// (first = major, second = minor, third or fourth = patch), then `build` for a new revision or
/// different build metadata.
pub fn classify(from: &TagVersion, to: &TagVersion) -> Change {
    match from.cmp_precedence(to) {
        Ordering::Greater => Change::Downgrade,
        Ordering::Equal => {
            if from.build == to.build {
                Change::None
            } else {
                Change::Build
            }
        }
        Ordering::Less => {
            if to.is_prerelease() {
                return Change::Prerelease;
            }
            let n = from.release.len().max(to.release.len());
            for i in 0..n {
                if from.release.get(i).copied().unwrap_or(0)
                    != to.release.get(i).copied().unwrap_or(0)
                {
                    return match i {
                        0 => Change::Major,
                        1 => Change::Minor,
                        _ => Change::Patch,
                    };
                }
            }
            if from.is_prerelease() {
                Change::Patch
            } else {
                Change::Build
            }
        }
    }
}

/// The result of comparing two tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// How `a` compares to `b`; `None` when neither ordering makes sense (not versions).
    pub ordering: Option<Ordering>,
    pub change: Change,
    /// Why the answer is `incomparable`, for people.
    pub note: Option<String>,
}

/// Compares two tags as the updater would: `change` describes going from `a` to `b`.
/// Tags of different families are `incomparable` (the updater never crosses families), but
/// `ordering` still reports their numeric precedence so scripts can sort them.
pub fn compare(a: &str, b: &str, scheme: &Scheme) -> Comparison {
    let (ta, tb) = (analyze(a, scheme), analyze(b, scheme));
    match (ta.version(), tb.version()) {
        (Some(va), Some(vb)) => {
            let ordering = Some(va.cmp_precedence(vb));
            if va.family != vb.family {
                return Comparison {
                    ordering,
                    change: Change::Incomparable,
                    note: Some(format!(
                        "'{a}' is of family {} and '{b}' of family {}; the updater never moves between families",
                        va.family, vb.family
                    )),
                };
            }
            Comparison {
                ordering,
                change: classify(va, vb),
                note: None,
            }
        }
        _ => {
            let why = |t: &Tag| match t {
                Tag::NotVersion { raw, why } => Some(format!("'{raw}' is {}", why.describe())),
                Tag::Version(_) => None,
            };
            let note = [why(&ta), why(&tb)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            let ordering = (a == b).then_some(Ordering::Equal);
            let change = if a == b {
                Change::None
            } else {
                Change::Incomparable
            };
            Comparison {
                ordering,
                change,
                note: Some(note),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(s: &str) -> TagVersion {
        match analyze(s, &Scheme::Auto) {
            Tag::Version(v) => v,
            other => panic!("{s} should be a version, got {other:?}"),
        }
    }

    fn fam(s: &str) -> String {
        ver(s).family.to_string()
    }

    #[test]
    fn real_world_tags_read_as_people_expect() {
        assert_eq!(ver("v1.2.3").release, [1, 2, 3]);
        assert_eq!(fam("v1.2.3"), "vX.Y.Z");
        assert_eq!(fam("1.2"), "X.Y");
        assert_eq!(fam("1"), "X");
        let a = ver("1.27.2-alpine3.20");
        assert_eq!(
            (
                a.release.as_slice(),
                a.family.variant.as_str(),
                a.pre.is_empty()
            ),
            (&[1, 27, 2][..], "alpine3.20", true)
        );
        assert_eq!(fam("16.4-bookworm"), "X.Y-bookworm");
        assert_eq!(ver("2024.01.15").family.kind, Kind::Date);
        assert_eq!(ver("20240115").release, [2024, 1, 15]);
        assert_eq!(ver("20240115").family.kind, Kind::CompactDate);
        let r = ver("1.2.3-r1");
        assert_eq!((r.revision, r.family.variant.as_str()), (Some(1), ""));
        let b = ver("1.2.3-debian-12-r5");
        assert_eq!(
            (b.revision, b.family.variant.as_str()),
            (Some(5), "debian-12")
        );
        let rc = ver("1.28.0-rc.1-alpine");
        assert_eq!((rc.pre.len(), rc.family.variant.as_str()), (2, "alpine"));
        assert!(ver("1.2.3-beta2").is_prerelease());
        assert!(ver("3.9.0b1").is_prerelease());
        assert!(ver("1.0.0-0.3.7").is_prerelease());
    }

    #[test]
    fn non_versions_are_recognised() {
        for (t, why) in [
            ("latest", NotVersionReason::MovingName),
            ("stable", NotVersionReason::MovingName),
            ("mainline", NotVersionReason::MovingName),
            ("alpine", NotVersionReason::MovingName),
            (
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                NotVersionReason::Digest,
            ),
            ("1.2.3.4.5", NotVersionReason::UnknownShape),
            ("1.2.3-", NotVersionReason::UnknownShape),
            ("1..2", NotVersionReason::UnknownShape),
            ("8u292", NotVersionReason::UnknownShape),
            ("123456789012", NotVersionReason::UnknownShape),
        ] {
            assert_eq!(
                analyze(t, &Scheme::Auto),
                Tag::NotVersion {
                    raw: t.to_owned(),
                    why
                },
                "{t}"
            );
        }
    }

    #[test]
    fn families_keep_variants_apart() {
        assert_ne!(ver("1.27-alpine").family, ver("1.28").family);
        assert_ne!(ver("16-bookworm").family, ver("17-alpine").family);
        assert_eq!(ver("16-bookworm").family, ver("17-bookworm").family);
        assert_ne!(ver("1.27").family, ver("1.28.1").family);
        assert_eq!(
            ver("1.2.3").family,
            ver("1.3.0-rc.1").family,
            "prerelease stays in family"
        );
        assert_ne!(ver("1.2.3").family, ver("v1.2.4").family);
        assert_ne!(
            ver("1.2.3-alpine3.20").family,
            ver("1.2.4-alpine3.21").family
        );
        assert_eq!(
            ver("1.2.3-alpine3.20").family.loosened(),
            ver("1.2.4-alpine3.21").family.loosened()
        );
    }

    #[test]
    fn classification() {
        let c = |a: &str, b: &str| compare(a, b, &Scheme::Auto).change;
        assert_eq!(c("1.2.3", "1.2.4"), Change::Patch);
        assert_eq!(c("1.2.3", "1.3.0"), Change::Minor);
        assert_eq!(c("1.2.3", "2.0.0"), Change::Major);
        assert_eq!(c("1.2.3", "1.3.0-rc.1"), Change::Prerelease);
        assert_eq!(c("1.3.0-rc.1", "1.3.0-rc.2"), Change::Prerelease);
        assert_eq!(c("1.3.0-rc.2", "1.3.0"), Change::Patch);
        assert_eq!(c("1.2.3", "1.2.3"), Change::None);
        assert_eq!(c("1.2.4", "1.2.3"), Change::Downgrade);
        assert_eq!(c("1.2.3-r1", "1.2.3-r2"), Change::Build);
        assert_eq!(c("1.2.3+a", "1.2.3+b"), Change::Build);
        assert_eq!(c("1.27", "1.28"), Change::Minor);
        assert_eq!(c("16-bookworm", "17-bookworm"), Change::Major);
        assert_eq!(c("1.27-alpine", "1.28"), Change::Incomparable);
        assert_eq!(c("latest", "stable"), Change::Incomparable);
        assert_eq!(c("latest", "latest"), Change::None);
        assert_eq!(c("2024.01.15", "2024.02.01"), Change::Minor);
        assert_eq!(c("1.2.3.4", "1.2.3.5"), Change::Patch);
    }

    #[test]
    fn incomparable_still_orders_numbers() {
        let cmp = compare("1.27-alpine", "1.28", &Scheme::Auto);
        assert_eq!(cmp.ordering, Some(Ordering::Less));
        assert!(cmp.note.unwrap_or_default().contains("X.Y-alpine"));
        assert_eq!(compare("latest", "stable", &Scheme::Auto).ordering, None);
    }

    #[test]
    fn strict_semver_scheme() {
        let t = analyze("1.0.0-alpine", &Scheme::SemVer);
        let v = t
            .version()
            .cloned()
            .unwrap_or_else(|| panic!("valid semver"));
        assert!(
            v.is_prerelease(),
            "under strict SemVer any suffix is a prerelease"
        );
        assert!(matches!(
            analyze("1.2", &Scheme::SemVer),
            Tag::NotVersion {
                why: NotVersionReason::NotSemVer,
                ..
            }
        ));
    }

    #[test]
    fn custom_pattern() {
        let p = CustomPattern::new(r"^(?P<version>\d+\.\d+)-ls(?P<build>\d+)$")
            .unwrap_or_else(|e| panic!("{e}"));
        let s = Scheme::Custom(p);
        assert_eq!(compare("4.5-ls12", "4.5-ls13", &s).change, Change::Build);
        assert_eq!(compare("4.5-ls12", "4.6-ls1", &s).change, Change::Minor);
        assert_eq!(
            compare("4.5-ls12", "latest", &s).change,
            Change::Incomparable
        );
        assert!(CustomPattern::new(r"^\d+$").is_err());
        assert!(CustomPattern::new(r"^(?P<version>").is_err());
    }

    #[test]
    fn revision_orders_after_version() {
        let mut tags = [ver("1.2.4-r0"), ver("1.2.3-r10"), ver("1.2.3-r2")];
        tags.sort();
        let raws: Vec<_> = tags.iter().map(|t| t.raw.as_str()).collect();
        assert_eq!(raws, ["1.2.3-r2", "1.2.3-r10", "1.2.4-r0"]);
    }

    #[test]
    fn loosely_equals_is_equality_of_loosened_families() {
        let variants = [
            "",
            "alpine",
            "alpine3.20",
            "alpine3.21",
            "alpine.",
            "3.20",
            "1-",
            "debian-12",
            "debian",
            "slim-bookworm",
            "a1b2",
            "ab",
            "x_1",
            "x",
            "é1",
            "é",
        ];
        for a in variants {
            for b in variants {
                let fa = Family {
                    variant: a.to_owned(),
                    ..ver("1.2.3").family
                };
                let fb = Family {
                    variant: b.to_owned(),
                    ..ver("1.2.3").family
                };
                assert_eq!(
                    fa.loosely_equals(&fb),
                    fa.loosened() == fb.loosened(),
                    "{a:?} vs {b:?}"
                );
            }
        }
        assert!(
            !ver("1.2.3-alpine")
                .family
                .loosely_equals(&ver("v1.2.3-alpine").family)
        );
    }
}
