//! Version constraints with exactly the semantics Helm uses for chart versions.
//!
//! Helm checks `--version` flags, `dependencies[].version` and `index.yaml` lookups with the Go
//! library `github.com/Masterminds/semver/v3` (`NewConstraint` + `Constraints.Check`). A
//! constraint here must accept, reject and match exactly what that library does, quirks
//! included, because a user who writes `^1.2` for a chart expects what `helm` would pick. The
//! code is therefore a transliteration of Masterminds' `constraints.go` (v3.5.0), down to its
//! regular expressions; `tests/constraint_vectors.rs` checks it against vectors recorded from the
//! real library by `tools/constraintvectors`.
//!
//! This module must not grow its own ideas of what a range means (npm's, Cargo's, ...), must
//! not do I/O, and must not know about Docker tags: tag families have their own rules.
//!
//! The prerelease rule, which surprises people: a prerelease version (`1.2.3-rc.1`) can only
//! satisfy an AND group (the parts between `||`) in which at least one comparison itself names
//! a prerelease (`>=1.2.3-0`, `^2.0.0-alpha`, `1.x-0`, `1.0.0-0 - 2`). Once a group opts in, the
//! comparisons are plain SemVer precedence comparisons, so `^1.2.0-alpha.0` matches
//! `1.5.0-beta` (unlike npm, which confines prereleases to the same `major.minor.patch`).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::semver::{SemverError, Version};

/// Masterminds `MaxConstraintLen`: longer constraint strings are rejected outright.
pub const MAX_CONSTRAINT_LEN: usize = 512;
/// Masterminds `MaxConstraintGroups`: at most this many `||` alternatives.
pub const MAX_CONSTRAINT_GROUPS: usize = 32;

/// Go's RE2 `\s` is ASCII `[\t\n\f\r ]`; Rust's `\s` is Unicode and even its ASCII form adds
/// `\v`, so the class is spelled out to keep whitespace handling identical.
const WS: &str = r"[\t\n\f\r ]";

/// Masterminds' operator alternation, verbatim. The empty alternative after `=` is what makes
/// a bare version (`1.2.3`) a comparison, and the order matters under leftmost-first matching.
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

/// Masterminds `cvRegex`, verbatim. Note `[0-9|x|X|\*]` also admits `|`: a literal pipe in a
/// character class. Such parts later fail version parsing unless a wildcard major discards them.
const CV: &str = concat!(
    r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?",
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?",
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?",
);

fn compile(pattern: &str) -> Regex {
    // The patterns are constants of this module, so failure is a programming error that every
    // test run would catch, not something an input can provoke.
    Regex::new(pattern).expect("constraint regular expressions are valid")
}

/// `^\s*(ops)\s*(cv)\s*$`: one comparison. Groups: 1 operator, 2 version text, 3 major,
/// 4 `.minor`, 5 `.patch`, 6 `-prerelease`.
static CONSTRAINT_RE: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!(r"^{WS}*({OPS}){WS}*({CV}){WS}*$")));

/// `\s*(cv)\s+-\s+(cv)\s*`: a hyphen range. Groups 1 and 11 are the two ends.
static RANGE_RE: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!(r"{WS}*({CV}){WS}+-{WS}+({CV}){WS}*")));

/// `(ops)\s*(cv)`: finds the comparisons inside an AND group.
static FIND_RE: LazyLock<Regex> = LazyLock::new(|| compile(&format!(r"({OPS}){WS}*({CV})")));

/// A whole AND group: comparisons separated by whitespace or a comma.
static VALID_RE: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        r"^({WS}*({OPS}){WS}*({CV}){WS}*)((?:{WS}+|,{WS}*)({OPS}){WS}*({CV}){WS}*)*$"
    ))
});

/// Why a constraint was rejected. `part` is the offending `||` alternative or comparison, as
/// Masterminds sees it: after `A - B` ranges have been rewritten to `>= A, <= B `.
///
/// Note that the empty string is rejected, as by Masterminds; Helm itself substitutes `*` when
/// no `--version` is given, and callers must do the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error(
        "version constraint {prefix:?}... is {len} bytes long, more than the {MAX_CONSTRAINT_LEN} Helm accepts"
    )]
    TooLong { prefix: String, len: usize },
    #[error(
        "version constraint {input:?} has {groups} '||' alternatives, more than the {MAX_CONSTRAINT_GROUPS} Helm accepts"
    )]
    TooManyGroups { input: String, groups: usize },
    #[error(
        "version constraint {input:?} is invalid: {part:?} is not a list of comparisons such as \">=1.2.0 <2.0.0\""
    )]
    Improper { input: String, part: String },
    #[error(
        "version constraint {input:?} is invalid: {part:?} does not compare against a valid version"
    )]
    BadVersion { input: String, part: String },
}

/// Error of [`satisfies`]: either side may be what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SatisfiesError {
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error("{version:?} is not a version Helm can compare: {reason}")]
    Version {
        version: String,
        reason: SemverError,
    },
}

/// One Masterminds `cfunc`. `=` and the bare form share `TildeOrEqual`; the aliases `=>`, `=<`
/// and `~>` map onto `>=`, `<=` and `~`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    TildeOrEqual,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Tilde,
    Caret,
}

impl Op {
    fn from_token(token: &str) -> Option<Op> {
        Some(match token {
            "" | "=" => Op::TildeOrEqual,
            "!=" => Op::NotEqual,
            ">" => Op::Greater,
            "<" => Op::Less,
            ">=" | "=>" => Op::GreaterEqual,
            "<=" | "=<" => Op::LessEqual,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        })
    }
}

/// One comparison, Masterminds' `constraint` struct. Missing or wildcard parts become zeros in
/// `con` and are remembered in the dirty flags, which each operator interprets its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    con: Version,
    /// Some part was a wildcard or missing (`1.2`, `1.x`, `*`).
    dirty: bool,
    /// The minor part was a wildcard or missing (`1`, `1.x`).
    minor_dirty: bool,
    /// The patch part was a wildcard or missing (`1.2`, `1.2.x`).
    patch_dirty: bool,
}

/// One AND group; `include_pre` is Masterminds' `containsPre` for the group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    comparators: Vec<Comparator>,
    include_pre: bool,
}

/// A parsed Helm version constraint: an OR of AND groups of comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    text: String,
    groups: Vec<Group>,
}

impl Constraint {
    /// Parses like Masterminds `NewConstraint`.
    pub fn parse(s: &str) -> Result<Constraint, ConstraintError> {
        if s.len() > MAX_CONSTRAINT_LEN {
            return Err(ConstraintError::TooLong {
                prefix: prefix(s, 40),
                len: s.len(),
            });
        }
        let rewritten = rewrite_ranges(s);
        let ors: Vec<&str> = rewritten.split("||").collect();
        if ors.len() > MAX_CONSTRAINT_GROUPS {
            return Err(ConstraintError::TooManyGroups {
                input: s.to_owned(),
                groups: ors.len(),
            });
        }
        let mut groups = Vec::with_capacity(ors.len());
        for segment in ors {
            if !VALID_RE.is_match(segment) {
                return Err(ConstraintError::Improper {
                    input: s.to_owned(),
                    part: segment.to_owned(),
                });
            }
            // VALID_RE demands at least one comparison, so FIND_RE always finds one; Go's
            // fallback for an empty result (treat the segment as one comparison) is kept anyway.
            let mut parts: Vec<&str> = FIND_RE.find_iter(segment).map(|m| m.as_str()).collect();
            if parts.is_empty() {
                parts.push(segment);
            }
            let mut comparators = Vec::with_capacity(parts.len());
            let mut include_pre = false;
            for part in parts {
                let comparator = parse_comparator(part).map_err(|kind| match kind {
                    PartError::Improper => ConstraintError::Improper {
                        input: s.to_owned(),
                        part: part.to_owned(),
                    },
                    PartError::BadVersion => ConstraintError::BadVersion {
                        input: s.to_owned(),
                        part: part.to_owned(),
                    },
                })?;
                include_pre |= comparator.con.is_prerelease();
                comparators.push(comparator);
            }
            groups.push(Group {
                comparators,
                include_pre,
            });
        }
        Ok(Constraint {
            text: s.to_owned(),
            groups,
        })
    }

    /// Masterminds `Constraints.Check` with `IncludePrerelease` false, which is how Helm calls it.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups
            .iter()
            .any(|g| g.comparators.iter().all(|c| c.check(v, g.include_pre)))
    }

    /// The text the constraint was parsed from, unchanged.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether some `||` alternative opts in to prerelease versions (see the module docs).
    pub fn admits_prereleases(&self) -> bool {
        self.groups.iter().any(|g| g.include_pre)
    }
}

/// Parses `constraint` as Helm would and `version` with [`Version::parse_lenient`] (Helm's
/// `NewVersion`), and tells whether the version satisfies the constraint. An unparsable
/// version is an error rather than `false`, so that typos do not read as "does not match".
pub fn satisfies(constraint: &str, version: &str) -> Result<bool, SatisfiesError> {
    let c = Constraint::parse(constraint)?;
    let v = Version::parse_lenient(version).map_err(|reason| SatisfiesError::Version {
        version: version.to_owned(),
        reason,
    })?;
    Ok(c.matches(&v))
}

fn prefix(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Masterminds `rewriteRange`: every `A - B` becomes `>= A, <= B `. Like Go's
/// `strings.Replace(o, match, t, 1)`, each replacement hits the first occurrence of the matched
/// text in the string rewritten so far, which is not always where the match was found.
fn rewrite_ranges(input: &str) -> String {
    let mut out = input.to_owned();
    for caps in RANGE_RE.captures_iter(input) {
        let whole = caps.get(0).map_or("", |m| m.as_str());
        let low = caps.get(1).map_or("", |m| m.as_str());
        let high = caps.get(11).map_or("", |m| m.as_str());
        if let Some(at) = out.find(whole) {
            out.replace_range(at..at + whole.len(), &format!(">= {low}, <= {high} "));
        }
    }
    out
}

enum PartError {
    Improper,
    BadVersion,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

/// Masterminds `parseConstraint`.
fn parse_comparator(part: &str) -> Result<Comparator, PartError> {
    let caps = CONSTRAINT_RE.captures(part).ok_or(PartError::Improper)?;
    let group = |i: usize| caps.get(i).map_or("", |m| m.as_str());
    let op = Op::from_token(group(1)).ok_or(PartError::Improper)?;
    let (major, minor, patch, pre) = (group(3), group(4), group(5), group(6));
    let trimmed = |s: &'_ str| s.strip_prefix('.').unwrap_or(s).to_owned();

    let (mut dirty, mut minor_dirty, mut patch_dirty) = (false, false, false);
    // Go rebuilds a version string and parses it with NewVersion; doing the same keeps every
    // odd input (pipes, `1x`, over-long or leading-zero parts) failing or passing as there.
    // Wildcard or missing parts become 0, and build metadata after a wildcard is dropped.
    let text = if is_x(major) || major.is_empty() {
        dirty = true;
        format!("0.0.0{pre}")
    } else if is_x(&trimmed(minor)) || minor.is_empty() {
        dirty = true;
        minor_dirty = true;
        format!("{major}.0.0{pre}")
    } else if is_x(&trimmed(patch)) || patch.is_empty() {
        dirty = true;
        patch_dirty = true;
        format!("{major}{minor}.0{pre}")
    } else {
        group(2).to_owned()
    };
    let con = Version::parse_lenient(&text).map_err(|_| PartError::BadVersion)?;
    Ok(Comparator {
        op,
        con,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

impl Comparator {
    /// The `constraint*` functions of Masterminds, one arm each.
    fn check(&self, v: &Version, include_pre: bool) -> bool {
        // Every Masterminds operator starts with this: a prerelease version is out unless its
        // AND group named a prerelease somewhere.
        if v.is_prerelease() && !include_pre {
            return false;
        }
        match self.op {
            Op::TildeOrEqual => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    v.cmp_precedence(&self.con).is_eq()
                }
            }
            Op::NotEqual => self.not_equal(v),
            Op::Greater => self.greater(v),
            Op::Less => v.cmp_precedence(&self.con).is_lt(),
            Op::GreaterEqual => v.cmp_precedence(&self.con).is_ge(),
            Op::LessEqual => self.less_equal(v),
            Op::Tilde => self.tilde(v),
            Op::Caret => self.caret(v),
        }
    }

    fn not_equal(&self, v: &Version) -> bool {
        let c = &self.con;
        if self.dirty {
            if c.major != v.major {
                return true;
            }
            if c.minor != v.minor && !self.minor_dirty {
                return true;
            } else if self.minor_dirty {
                // `!=4.x` excludes the whole 4 line.
                return false;
            } else if c.patch != v.patch && !self.patch_dirty {
                return true;
            } else if self.patch_dirty {
                // `!=4.2.x` excludes 4.2.*, except versions whose prerelease differs from the
                // constraint's (so `!=4.2.x-beta` still admits 4.2.0 and 4.2.7-rc).
                if v.is_prerelease() || c.is_prerelease() {
                    return crate::semver::compare_prerelease(&v.pre, &c.pre).is_ne();
                }
                return false;
            }
            // Only a wildcard major gets here (`!=*`): it then means `!=0.0.0`.
        }
        !v.cmp_precedence(c).is_eq()
    }

    fn greater(&self, v: &Version) -> bool {
        let c = &self.con;
        if !self.dirty {
            return v.cmp_precedence(c).is_gt();
        }
        if v.major > c.major {
            true
        } else if v.major < c.major {
            false
        } else if self.minor_dirty {
            // `>11` needs 12 or higher, 11.5.0 is not greater.
            false
        } else if self.patch_dirty {
            // `>11.1` needs 11.2 or higher.
            v.minor > c.minor
        } else {
            v.cmp_precedence(c).is_gt()
        }
    }

    fn less_equal(&self, v: &Version) -> bool {
        let c = &self.con;
        if !self.dirty {
            return v.cmp_precedence(c).is_le();
        }
        // Only the major and (unless wildcard) minor bound the version; a wildcard major
        // (`<=*`) thus behaves as `<=0.0.x` — Masterminds' behaviour, kept deliberately.
        !(v.major > c.major || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
    }

    /// `~1.2.3` is `>=1.2.3 <1.3.0`, `~1.2` and `~1.2.x` are `>=1.2.0 <1.3.0`, `~1` is
    /// `>=1.0.0 <2.0.0`, `~0.0.0` and `~*` are anything.
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.cmp_precedence(c).is_lt() {
            return false;
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.minor_dirty
    }

    /// `^1.2.3` is `>=1.2.3 <2.0.0`, `^0.2.3` is `>=0.2.3 <0.3.0`, `^0.0.3` is `=0.0.3`,
    /// `^0.0` is `<0.1.0`, `^0` and `^0.x` are `<1.0.0`; `^*` behaves like `^0.0.0`.
    fn caret(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.cmp_precedence(c).is_lt() {
            return false;
        }
        if c.major > 0 || self.minor_dirty {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.patch_dirty {
            return v.minor == c.minor;
        }
        if v.minor > 0 {
            return false;
        }
        c.patch == v.patch
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Constraint {
    type Err = ConstraintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Constraint::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse_lenient(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn check(c: &str, ver: &str) -> bool {
        Constraint::parse(c)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(&v(ver))
    }

    fn table(cases: &[(&str, &str, bool)]) {
        for &(c, ver, want) in cases {
            assert_eq!(check(c, ver), want, "{c:?} vs {ver:?}");
        }
    }

    #[test]
    fn comparison_operators_and_aliases() {
        table(&[
            ("1.2.3", "1.2.3", true),
            ("=1.2.3", "1.2.4", false),
            ("= 1.2.3", "v1.2.3", true),
            ("!=1.2.3", "1.2.3", false),
            ("!=1.2.3", "1.2.4", true),
            (">1.2.3", "1.2.4", true),
            (">1.2.3", "1.2.3", false),
            ("<1.2.3", "1.2.2", true),
            (">=1.2.3", "1.2.3", true),
            ("=>1.2.3", "1.2.3", true),
            ("<=1.2.3", "1.2.3", true),
            ("=<1.2.3", "1.2.4", false),
            ("~1.2.3", "1.2.9", true),
            ("~>1.2.3", "1.3.0", false),
            ("^1.2.3", "1.9.0", true),
            ("^1.2.3", "2.0.0", false),
        ]);
    }

    #[test]
    fn partial_versions_and_wildcards() {
        table(&[
            ("1.2", "1.2.7", true),
            ("1.2", "1.3.0", false),
            ("1", "1.9.9", true),
            ("1.2.x", "1.2.0", true),
            ("1.2.X", "1.2.5", true),
            ("1.2.*", "1.3.0", false),
            ("1.x", "1.0.0", true),
            ("*", "9.9.9", true),
            ("x", "0.0.0", true),
            (">1.2", "1.2.9", false),
            (">1.2", "1.3.0", true),
            (">1", "1.9.0", false),
            ("<=1.2", "1.2.99", true),
            ("<=1.2", "1.3.0", false),
            ("<1.2", "1.1.9", true),
            ("!=1.2.x", "1.2.5", false),
            ("!=1.x", "2.0.0", true),
            ("v1.2.x", "1.2.1", true),
        ]);
    }

    #[test]
    fn caret_on_zero_versions_narrows() {
        table(&[
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.9", true),
            ("^0.0", "0.1.0", false),
            ("^0", "0.9.9", true),
            ("^0", "1.0.0", false),
            ("^0.x", "0.9.0", true),
            ("^1.x", "1.9.0", true),
            // `^*` is not "anything": Masterminds treats it like `^0.0.0`.
            ("^*", "0.0.0", true),
            ("^*", "0.0.1", false),
            ("~*", "5.0.0", true),
            ("~0", "0.9.0", true),
            ("~0.0", "0.1.0", false),
        ]);
    }

    #[test]
    fn prereleases_need_a_prerelease_in_the_same_and_group() {
        table(&[
            ("*", "1.0.0-rc.1", false),
            (">=1.0.0", "1.1.0-rc.1", false),
            ("^1.0.0", "1.1.0-rc.1", false),
            // Opting in with any prerelease comparison in the group.
            (">=1.0.0-0", "1.1.0-rc.1", true),
            ("*-0", "1.0.0-rc.1", true),
            (">0.0.0-0", "0.0.1-alpha", true),
            (">=1.0.0-0 <2.0.0", "1.9.0-beta", true),
            ("<2.0.0 >=1.0.0-0", "1.9.0-beta", true),
            // Once opted in, ordinary precedence applies across patch and minor versions.
            ("^1.2.0-alpha.0", "1.5.0-beta", true),
            ("~1.2.3-beta.2", "1.2.4-beta.2", true),
            ("~1.2.3-beta.2", "1.3.0-beta.2", false),
            // The opt-in does not cross `||`.
            (">=1.0.0-0 <2 || >=3.0.0", "1.5.0-rc.1", true),
            (">=1.0.0-0 <2 || >=3.0.0", "3.1.0-rc.1", false),
            // A prerelease is below its release.
            ("<1.0.0-0", "0.9.9", true),
            ("<=1.0.0-rc.1", "1.0.0", false),
            (">1.0.0-rc.1", "1.0.0-rc.2", true),
            (">1.0.0-rc.9", "1.0.0-rc.10", true),
        ]);
    }

    #[test]
    fn hyphen_ranges_commas_and_ors() {
        table(&[
            ("1.2 - 1.4.5", "1.2.0", true),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("1.2 - 1.4.5", "1.1.9", false),
            // A partial upper end includes its whole line.
            ("1 - 2", "2.9.9", true),
            ("1 - 2", "3.0.0", false),
            ("1.0.0-0 - 2", "1.5.0-rc.1", true),
            (">=1.2, <2", "1.9.0", true),
            (">=1.2,<2", "2.0.0", false),
            (">=1.2 <2", "1.1.0", false),
            ("1.2.3 || 2.0.0", "2.0.0", true),
            ("1.2.3 || 2.0.0", "1.2.4", false),
            ("1 - 2 || >=4", "5.0.0", true),
        ]);
    }

    #[test]
    fn invalid_constraints_are_errors() {
        for bad in [
            "",
            " ",
            "foo",
            ">=",
            "1.2.3.4",
            "V1.2.3",
            ">=1.2,,<2",
            ">=1.2,",
            "||1.2",
            "1.2 | 2",
            "== 1.2",
            ">=1.2<2",
            "1.2.3-01",
            "1x",
            "18446744073709551616",
            "1.2 -1.3",
            ">=1.2\u{b}<2",
        ] {
            assert!(
                Constraint::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let long = ">=1.0.0 ".repeat(70);
        assert!(matches!(
            Constraint::parse(&long),
            Err(ConstraintError::TooLong { len: 560, .. })
        ));
        let many = vec![">=1"; 33].join("||");
        assert!(matches!(
            Constraint::parse(&many),
            Err(ConstraintError::TooManyGroups { groups: 33, .. })
        ));
        assert!(Constraint::parse(&vec![">=1"; 32].join("||")).is_ok());
    }

    #[test]
    fn errors_name_the_input() {
        let e = Constraint::parse(">= 1.2 || foo")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("\">= 1.2 || foo\"") && e.contains("\" foo\""),
            "{e}"
        );
        let e = Constraint::parse("1.2.3-01")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("\"1.2.3-01\""), "{e}");
        let e = satisfies("^1", "banana")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("\"banana\""), "{e}");
    }

    #[test]
    fn satisfies_parses_both_sides() {
        assert_eq!(satisfies("^1.2", "v1.9").ok(), Some(true));
        assert_eq!(satisfies("^1.2", "01.9.0").ok(), Some(true));
        assert_eq!(satisfies("^1.2", "2.0.0").ok(), Some(false));
        assert!(matches!(
            satisfies("^1.2", "1.2.3.4"),
            Err(SatisfiesError::Version { .. })
        ));
        assert!(matches!(
            satisfies("^^1", "1.0.0"),
            Err(SatisfiesError::Constraint(_))
        ));
    }

    #[test]
    fn text_round_trips_through_display_fromstr_and_serde() {
        let c: Constraint = " >=1.2, <2 || 3.x "
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.as_str(), " >=1.2, <2 || 3.x ");
        assert_eq!(c.to_string(), c.as_str());
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert_eq!(json, r#"" >=1.2, <2 || 3.x ""#);
        let back: Constraint = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, c);
        assert!(serde_json::from_str::<Constraint>(r#""nope""#).is_err());
        assert!(!c.admits_prereleases());
        assert!(Constraint::parse("1 - 2.0.0-rc.1").is_ok_and(|c| c.admits_prereleases()));
    }

    fn release() -> impl Strategy<Value = Version> {
        (0u64..4, 0u64..4, 0u64..4).prop_map(|(a, b, c)| Version::new(a, b, c))
    }

    fn range(low: &Version, high: Option<Version>) -> Constraint {
        let text = match high {
            Some(h) => format!(">={low}, <{h}"),
            None => format!(">={low}"),
        };
        Constraint::parse(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        #[test]
        fn caret_is_its_documented_range(base in release(), probe in release()) {
            let caret = Constraint::parse(&format!("^{base}")).unwrap_or_else(|e| panic!("{e}"));
            let high = match (base.major, base.minor) {
                (0, 0) => Version::new(0, 0, base.patch + 1),
                (0, m) => Version::new(0, m + 1, 0),
                (x, _) => Version::new(x + 1, 0, 0),
            };
            prop_assert_eq!(caret.matches(&probe), range(&base, Some(high)).matches(&probe));
        }

        #[test]
        fn tilde_is_its_documented_range(base in release(), probe in release()) {
            let tilde = Constraint::parse(&format!("~{base}")).unwrap_or_else(|e| panic!("{e}"));
            // `~0.0.0` is Masterminds' special case for "anything".
            let high = if base == Version::new(0, 0, 0) {
                None
            } else {
                Some(Version::new(base.major, base.minor + 1, 0))
            };
            prop_assert_eq!(tilde.matches(&probe), range(&base, high).matches(&probe));
        }
    }
}
