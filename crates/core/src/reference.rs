//! Container image references (`nginx`, `ghcr.io/o/app:v1`, `[::1]:5000/a@sha256:…`),
//! parsed exactly the way Docker parses them.
//!
//! This is a transliteration of the Go module `github.com/distribution/reference`
//! (v0.6.0, the one the docker CLI uses) and of the digest checks of
//! `github.com/opencontainers/go-digest` (v1.0.0). [`ImageRef::parse`] is Docker's
//! `ParseNormalizedNamed`, [`ImageRef::parse_named`] is `ParseNamed`,
//! [`ImageRef::with_default_tag`] is `TagNameOnly`, [`ImageRef::familiar_name`] and
//! [`ImageRef::familiar_string`] are `FamiliarName` and `FamiliarString`.
//!
//! Fidelity matters more than tidiness here: the updater must find the *same* image the
//! container runtime would pull, so Docker's quirks are reproduced on purpose (they are
//! listed on [`ImageRef::parse`]). `tests/reference_vectors.rs` checks this module against
//! vectors produced by the real Go code (`tools/refvectors`).
//!
//! This module only parses and formats strings. It must not resolve anything: no registry
//! look-ups, no credential or mirror configuration, no guessing of tags.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The registry that names without a registry refer to (Docker Hub).
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// The tag [`ImageRef::with_default_tag`] adds to a reference with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// The longest repository path Docker accepts, in bytes. It limits the path only: the
/// registry part is not counted, but Docker Hub's implicit `library/` prefix is.
pub const REPOSITORY_PATH_MAX_LEN: usize = 255;

/// Docker Hub's historical name; Docker rewrites it to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";

/// Namespace of Docker Hub's official images ("nginx" is really "library/nginx").
const OFFICIAL_REPO_PREFIX: &str = "library/";

/// Docker only treats a bare first component as a registry if it is exactly this.
const LOCALHOST: &str = "localhost";

// The grammar below is copied piece by piece from distribution/reference's regexp.go so
// that a reviewer can diff the two. Two differences are forced by the regex crate:
// Go's `\w` is ASCII-only while Rust's is Unicode, so it is spelled out; and both
// engines use leftmost-first submatch semantics, so the captures agree.
const ALPHANUMERIC: &str = "[a-z0-9]+";
const SEPARATOR: &str = "(?:[._]|__|[-]+)";
const DOMAIN_NAME_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const OPTIONAL_PORT: &str = "(?::[0-9]+)?";
const TAG: &str = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
const IPV6_ADDRESS: &str = r"\[(?:[a-fA-F0-9:]+)\]";

fn domain_and_port() -> String {
    let domain_name = format!("{DOMAIN_NAME_COMPONENT}(?:\\.{DOMAIN_NAME_COMPONENT})*");
    let host = format!("(?:{domain_name}|{IPV6_ADDRESS})");
    format!("{host}{OPTIONAL_PORT}")
}

fn remote_name() -> String {
    let path_component = format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*");
    format!("{path_component}(?:/{path_component})*")
}

fn compile(pattern: &str) -> Regex {
    // The patterns are compile-time constants; failing here is a bug, not bad input.
    Regex::new(pattern).expect("reference grammar regex must compile")
}

/// `^(name)(?::(tag))?(?:@(digest))?$` — Docker's `ReferenceRegexp`.
static REFERENCE_RE: LazyLock<Regex> = LazyLock::new(|| {
    let name = format!("(?:{}/)?{}", domain_and_port(), remote_name());
    compile(&format!("^({name})(?::({TAG}))?(?:@({DIGEST}))?$"))
});

/// Splits a name into (domain, path) — Docker's `anchoredNameRegexp`.
static ANCHORED_NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        "^(?:({})/)?({})$",
        domain_and_port(),
        remote_name()
    ))
});

static ANCHORED_TAG_RE: LazyLock<Regex> = LazyLock::new(|| compile(&format!("^{TAG}$")));

static ANCHORED_DIGEST_RE: LazyLock<Regex> = LazyLock::new(|| compile(&format!("^{DIGEST}$")));

/// A bare image ID; Docker refuses these as names so `docker pull <id>` can't be confused.
static ANCHORED_IDENTIFIER_RE: LazyLock<Regex> = LazyLock::new(|| compile("^[a-f0-9]{64}$"));

/// go-digest's own (stricter, lowercase-only) digest grammar, used to tell an unknown
/// algorithm apart from garbage.
static GO_DIGEST_RE: LazyLock<Regex> =
    LazyLock::new(|| compile("^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"));

/// Why a string is not an image reference. Each variant is one error Docker can return;
/// the doc of each variant quotes Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Docker: "invalid reference format". The string does not fit the grammar at all
    /// (bad characters, empty or doubled components, a bad port, ...).
    #[error("invalid reference format: {input:?} is not a valid image reference")]
    InvalidFormat { input: String },

    /// Docker: "repository name must be lowercase" (or "invalid reference format:
    /// repository name (…) must be lowercase"). Uppercase is allowed in a registry and in
    /// a tag, never in the repository path.
    #[error("invalid reference format: repository name must be lowercase in {input:?}")]
    NameContainsUppercase { input: String },

    /// Docker: "repository name must have at least one component". Docker's `Parse`
    /// returns it for an empty string; `ParseNormalizedNamed` (and so [`ImageRef::parse`])
    /// reports an empty string as [`ReferenceError::InvalidFormat`] instead.
    #[error("repository name must have at least one component: {input:?}")]
    NameEmpty { input: String },

    /// Docker: "repository name must not be more than 255 characters".
    #[error(
        "repository name must not be more than 255 characters: the repository path of {input:?} has {length}"
    )]
    NameTooLong { input: String, length: usize },

    /// Docker: "invalid repository name (…), cannot specify 64-byte hexadecimal strings".
    #[error("invalid repository name ({input}), cannot specify 64-byte hexadecimal strings")]
    HexadecimalName { input: String },

    /// Docker: "repository name must be canonical" (only from [`ImageRef::parse_named`]).
    #[error("repository name must be canonical: {input:?} should be written {canonical:?}")]
    NameNotCanonical { input: String, canonical: String },

    /// go-digest: "invalid checksum digest format".
    #[error("invalid checksum digest format: {digest:?}")]
    DigestInvalidFormat { digest: String },

    /// go-digest: "invalid checksum digest length".
    #[error(
        "invalid checksum digest length: {digest:?} has {actual} hex characters, {algorithm} needs {expected}"
    )]
    DigestInvalidLength {
        digest: String,
        algorithm: String,
        expected: usize,
        actual: usize,
    },

    /// go-digest: "unsupported digest algorithm" (only sha256, sha384 and sha512 are known).
    #[error("unsupported digest algorithm: {algorithm:?} in {digest:?}")]
    DigestUnsupported { digest: String, algorithm: String },

    /// Docker: "invalid tag format" (from [`ImageRef::with_tag`]).
    #[error("invalid tag format: {tag:?}")]
    TagInvalidFormat { tag: String },
}

/// A parsed, normalized image reference: `registry/repository[:tag][@digest]`.
///
/// Always the result of Docker's normalization, so `nginx`, `docker.io/nginx` and
/// `index.docker.io/library/nginx` are the same (equal, same hash) value. Tag and digest
/// may both be present, as Docker allows; the digest is then what identifies the image.
///
/// Serializes as its full normalized string ([`fmt::Display`]) and deserializes by
/// [`ImageRef::parse`], so familiar forms are accepted on input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference the way the docker CLI does (`ParseNormalizedNamed`).
    ///
    /// Docker quirks reproduced on purpose:
    /// - the first path component is a registry only if it contains `.` or `:`, is
    ///   `localhost`, or contains uppercase (`Foo/bar` has registry `Foo`);
    /// - a name without `/` is never a registry: `localhost:5000` is the image
    ///   `docker.io/library/localhost` with tag `5000`;
    /// - `index.docker.io` becomes `docker.io`, but `Docker.io` or `docker.io:443` do not;
    /// - a first component that looks like a registry but is not a valid host
    ///   (`foo_bar.com/x`) leaves the reference with an *empty* registry;
    /// - the 255-byte limit counts the path including an implicit `library/`;
    /// - no tag is added; see [`ImageRef::with_default_tag`].
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        if ANCHORED_IDENTIFIER_RE.is_match(s) {
            return Err(ReferenceError::HexadecimalName {
                input: s.to_owned(),
            });
        }
        let (domain, remainder) = split_docker_domain(s);
        // Docker looks for uppercase before the first ':' only, so that tags may be
        // uppercase; this also catches "name@SHA256:…", whose '@' precedes the ':'.
        let remote = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(before, _)| before);
        if has_uppercase(remote) {
            return Err(ReferenceError::NameContainsUppercase {
                input: s.to_owned(),
            });
        }
        parse_reference(&format!("{domain}/{remainder}"), s)
    }

    /// Parses a reference that must already be in full normalized form (Docker's
    /// `ParseNamed`): `docker.io/library/nginx:1` is accepted, `nginx:1` is not.
    pub fn parse_named(s: &str) -> Result<ImageRef, ReferenceError> {
        let parsed = ImageRef::parse(s)?;
        let canonical = parsed.to_string();
        if canonical != s {
            return Err(ReferenceError::NameNotCanonical {
                input: s.to_owned(),
                canonical,
            });
        }
        Ok(parsed)
    }

    /// The registry host, with port if any: `docker.io`, `localhost:5000`, `[::1]:5000`.
    /// Empty in the rare case described on [`ImageRef::parse`] (`foo_bar.com/x`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/nginx`, `owner/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, `algorithm:hex`, already validated as go-digest does.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Adds the tag `latest` when there is neither tag nor digest (Docker's `TagNameOnly`),
    /// which is what `docker pull nginx` actually pulls.
    pub fn with_default_tag(mut self) -> ImageRef {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The full name without tag or digest: `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        join_name(&self.registry, &self.repository)
    }

    /// The short name Docker shows users (`FamiliarName`): `nginx`, `user/app`,
    /// `localhost:5000/a/b`.
    pub fn familiar_name(&self) -> String {
        let (registry, repository) = self.familiar_parts();
        join_name(registry, repository)
    }

    /// The short form with tag and digest (`FamiliarString`): `nginx:1.25`.
    pub fn familiar_string(&self) -> String {
        let mut out = self.familiar_name();
        self.push_suffix(&mut out);
        out
    }

    /// The same repository with `tag` and no digest.
    ///
    /// Unlike Docker's `WithTag`, which keeps an existing digest, the digest is dropped:
    /// a digest pins the image, so keeping it would make the new tag meaningless.
    pub fn with_tag(&self, tag: &str) -> Result<ImageRef, ReferenceError> {
        if !ANCHORED_TAG_RE.is_match(tag) {
            return Err(ReferenceError::TagInvalidFormat {
                tag: tag.to_owned(),
            });
        }
        Ok(ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// The same reference pinned to `digest`, keeping the tag (as Docker's `WithDigest`).
    ///
    /// Stricter than `WithDigest`, which only checks the grammar: the digest must also
    /// pass go-digest's validation, so that the result parses back to itself.
    pub fn with_digest(&self, digest: &str) -> Result<ImageRef, ReferenceError> {
        if !ANCHORED_DIGEST_RE.is_match(digest) {
            return Err(ReferenceError::DigestInvalidFormat {
                digest: digest.to_owned(),
            });
        }
        validate_digest(digest)?;
        Ok(ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(digest.to_owned()),
        })
    }

    fn familiar_parts(&self) -> (&str, &str) {
        if self.registry != DEFAULT_DOMAIN {
            return (&self.registry, &self.repository);
        }
        // Only a single component under library/ is shortened: "library/a/b" stays, or
        // it could not be told apart from the user namespace "a".
        let repository = match self.repository.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest,
            _ => &self.repository,
        };
        ("", repository)
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
    }
}

impl fmt::Display for ImageRef {
    /// The full normalized form, `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ReferenceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ImageRef::parse(&s)
    }
}

/// Docker's `splitDockerDomain`: decides the registry from the raw input (tag and digest
/// still attached) and returns `(registry, rest)`, adding `library/` on Docker Hub.
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        // A single component is never a registry, even "localhost" or "example.com",
        // otherwise "host:5000" would be ambiguous with "image:tag".
        return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}"));
    };
    let (domain, remote) = if maybe_domain == LOCALHOST {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || has_uppercase(maybe_domain) {
        // Uppercase is forbidden in paths, so Docker assumes such a component is a host.
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        return (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"));
    }
    (domain, remote.to_owned())
}

/// Docker's `Parse` applied to the normalized candidate `s`; errors name `input`, the
/// string the user actually wrote.
fn parse_reference(s: &str, input: &str) -> Result<ImageRef, ReferenceError> {
    let Some(caps) = REFERENCE_RE.captures(s) else {
        if s.is_empty() {
            return Err(ReferenceError::NameEmpty {
                input: input.to_owned(),
            });
        }
        if REFERENCE_RE.is_match(&go_to_lower(s)) {
            return Err(ReferenceError::NameContainsUppercase {
                input: input.to_owned(),
            });
        }
        return Err(ReferenceError::InvalidFormat {
            input: input.to_owned(),
        });
    };
    let name = caps.get(1).map_or("", |m| m.as_str());
    // The name is re-split with the anchored name grammar, exactly as Docker does; the
    // domain group stays empty when the first component is not a valid host.
    let (registry, repository) = match ANCHORED_NAME_RE.captures(name) {
        Some(n) => (
            n.get(1).map_or("", |m| m.as_str()),
            n.get(2).map_or("", |m| m.as_str()),
        ),
        None => ("", name),
    };
    if repository.len() > REPOSITORY_PATH_MAX_LEN {
        return Err(ReferenceError::NameTooLong {
            input: input.to_owned(),
            length: repository.len(),
        });
    }
    let digest = caps.get(3).map(|m| m.as_str());
    if let Some(d) = digest {
        validate_digest(d)?;
    }
    Ok(ImageRef {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        tag: caps.get(2).map(|m| m.as_str().to_owned()),
        digest: digest.map(str::to_owned),
    })
}

/// go-digest's `Digest.Validate`, with the algorithms the docker CLI links in.
fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let invalid_format = || ReferenceError::DigestInvalidFormat {
        digest: digest.to_owned(),
    };
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(invalid_format());
    };
    if algorithm.is_empty() || encoded.is_empty() {
        return Err(invalid_format());
    }
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            // Unknown algorithms are "unsupported" only if they are well-formed in
            // go-digest's stricter (lowercase) grammar; otherwise the format is wrong.
            if !GO_DIGEST_RE.is_match(digest) {
                return Err(invalid_format());
            }
            return Err(ReferenceError::DigestUnsupported {
                digest: digest.to_owned(),
                algorithm: algorithm.to_owned(),
            });
        }
    };
    if encoded.len() != hex_len {
        return Err(ReferenceError::DigestInvalidLength {
            digest: digest.to_owned(),
            algorithm: algorithm.to_owned(),
            expected: hex_len,
            actual: encoded.len(),
        });
    }
    // Lowercase only: the reference grammar admits A-F, go-digest does not.
    if !encoded
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(invalid_format());
    }
    Ok(())
}

/// Go's `strings.ToLower`, which uses Unicode *simple* case mapping. Rust's
/// `str::to_lowercase` uses full mapping and turns 'İ' into two characters where Go
/// yields 'i'; the difference decides between "must be lowercase" and "invalid format".
fn go_to_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\u{130}' {
            out.push('i');
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn has_uppercase(s: &str) -> bool {
    go_to_lower(s) != s
}

fn join_name(registry: &str, repository: &str) -> String {
    if registry.is_empty() {
        repository.to_owned()
    } else {
        format!("{registry}/{repository}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn parts(r: &ImageRef) -> (&str, &str, Option<&str>, Option<&str>) {
        (r.registry(), r.repository(), r.tag(), r.digest())
    }

    #[test]
    fn official_images_get_docker_io_and_library() {
        let r = parse("nginx");
        assert_eq!(parts(&r), ("docker.io", "library/nginx", None, None));
        assert_eq!(r.to_string(), "docker.io/library/nginx");
        assert_eq!(r.name(), "docker.io/library/nginx");
        assert_eq!(r.familiar_name(), "nginx");
        for same in [
            "docker.io/nginx",
            "library/nginx",
            "docker.io/library/nginx",
            "index.docker.io/nginx",
            "index.docker.io/library/nginx",
        ] {
            assert_eq!(parse(same), r, "{same}");
        }
    }

    #[test]
    fn user_repositories_and_nested_library_paths_keep_their_path() {
        let r = parse("user/app:1.0");
        assert_eq!(parts(&r), ("docker.io", "user/app", Some("1.0"), None));
        assert_eq!(r.familiar_name(), "user/app");
        assert_eq!(r.familiar_string(), "user/app:1.0");
        assert_eq!(parse("library/a/b").familiar_name(), "library/a/b");
    }

    #[test]
    fn registry_detection() {
        let cases = [
            ("localhost/foo", "localhost", "foo"),
            ("localhost:5000/a/b", "localhost:5000", "a/b"),
            ("example.com/foo", "example.com", "foo"),
            ("my-registry:5000/foo", "my-registry:5000", "foo"),
            ("Foo/bar", "Foo", "bar"),
            ("foo/bar", "docker.io", "foo/bar"),
            ("[::1]:5000/foo", "[::1]:5000", "foo"),
            ("[2001:db8::1]/foo", "[2001:db8::1]", "foo"),
            (
                "registry-1.docker.io/library/nginx",
                "registry-1.docker.io",
                "library/nginx",
            ),
            ("Docker.io/nginx", "Docker.io", "nginx"),
        ];
        for (input, registry, repository) in cases {
            let r = parse(input);
            assert_eq!(
                (r.registry(), r.repository()),
                (registry, repository),
                "{input}"
            );
        }
        assert_eq!(
            parse("localhost:5000/a/b").familiar_name(),
            "localhost:5000/a/b"
        );
    }

    #[test]
    fn single_component_is_never_a_registry() {
        let r = parse("localhost:5000");
        assert_eq!(
            parts(&r),
            ("docker.io", "library/localhost", Some("5000"), None)
        );
        assert_eq!(parse("example.com").repository(), "library/example.com");
    }

    #[test]
    fn invalid_host_leaves_registry_empty_like_docker() {
        let r = parse("foo_bar.com/x:tag");
        assert_eq!(parts(&r), ("", "foo_bar.com/x", Some("tag"), None));
        assert_eq!(r.to_string(), "foo_bar.com/x:tag");
        assert_eq!(r.familiar_name(), "foo_bar.com/x");
    }

    #[test]
    fn tag_and_digest() {
        let r = parse(&format!("nginx:1.25@{D}"));
        assert_eq!(
            parts(&r),
            ("docker.io", "library/nginx", Some("1.25"), Some(D))
        );
        assert_eq!(r.to_string(), format!("docker.io/library/nginx:1.25@{D}"));
        assert_eq!(r.familiar_string(), format!("nginx:1.25@{D}"));
        let r = parse(&format!("[::1]:5000/foo@{D}"));
        assert_eq!(parts(&r), ("[::1]:5000", "foo", None, Some(D)));
    }

    #[test]
    fn default_tag_only_when_nothing_pins_the_image() {
        assert_eq!(parse("nginx").with_default_tag().tag(), Some("latest"));
        assert_eq!(parse("nginx:1").with_default_tag().tag(), Some("1"));
        let digested = parse(&format!("nginx@{D}")).with_default_tag();
        assert_eq!((digested.tag(), digested.digest()), (None, Some(D)));
    }

    #[test]
    fn with_tag_replaces_tag_and_drops_digest() {
        let r = parse(&format!("nginx:1@{D}"))
            .with_tag("2")
            .expect("valid tag");
        assert_eq!(r.to_string(), "docker.io/library/nginx:2");
        assert_eq!(
            parse("nginx").with_tag("-x"),
            Err(ReferenceError::TagInvalidFormat { tag: "-x".into() })
        );
        assert!(parse("nginx").with_tag(&"t".repeat(129)).is_err());
    }

    #[test]
    fn with_digest_keeps_tag_and_validates() {
        let r = parse("nginx:1").with_digest(D).expect("valid digest");
        assert_eq!(r.to_string(), format!("docker.io/library/nginx:1@{D}"));
        assert!(matches!(
            parse("nginx").with_digest("sha256:abcd"),
            Err(ReferenceError::DigestInvalidFormat { .. })
        ));
        assert!(matches!(
            parse("nginx").with_digest(&format!("sha256:{}", "a".repeat(40))),
            Err(ReferenceError::DigestInvalidLength {
                expected: 64,
                actual: 40,
                ..
            })
        ));
    }

    #[test]
    fn parse_named_requires_the_canonical_form() {
        assert!(ImageRef::parse_named("docker.io/library/foo").is_ok());
        assert!(ImageRef::parse_named("test:8080/foo").is_ok());
        for s in ["foo", "library/foo", "docker.io/foo", "test.com"] {
            assert!(
                matches!(
                    ImageRef::parse_named(s),
                    Err(ReferenceError::NameNotCanonical { .. })
                ),
                "{s}"
            );
        }
    }

    fn err(s: &str) -> ReferenceError {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s:?} should not parse, got {r}"),
            Err(e) => e,
        }
    }

    #[test]
    fn error_kinds() {
        use ReferenceError as E;
        let hex64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
        assert!(matches!(err(""), E::InvalidFormat { .. }));
        assert!(matches!(err("foo//bar"), E::InvalidFormat { .. }));
        assert!(matches!(err("foo/"), E::InvalidFormat { .. }));
        assert!(matches!(err("-foo"), E::InvalidFormat { .. }));
        assert!(matches!(err("foo___bar"), E::InvalidFormat { .. }));
        assert!(matches!(err("[::1]:5000"), E::InvalidFormat { .. }));
        assert!(matches!(err("nginx:-tag"), E::InvalidFormat { .. }));
        assert!(matches!(err("nginx:täg"), E::InvalidFormat { .. }));
        assert!(matches!(
            err("docker/Docker"),
            E::NameContainsUppercase { .. }
        ));
        assert!(matches!(err("Foo_bar/x"), E::NameContainsUppercase { .. }));
        assert!(matches!(err(hex64), E::HexadecimalName { .. }));
        assert!(matches!(
            err(&"a".repeat(248)),
            E::NameTooLong { length: 256, .. }
        ));
        assert!(matches!(
            err(&format!("nginx@sha256:{}", "a".repeat(63))),
            E::DigestInvalidLength { .. }
        ));
        assert!(matches!(
            err(&format!("nginx@md5:{}", "a".repeat(32))),
            E::DigestUnsupported { .. }
        ));
        assert!(matches!(
            err(&format!("nginx@sha256:{}", "A".repeat(64))),
            E::DigestInvalidFormat { .. }
        ));
        // Docker checks lowercase up to the first ':', which here is inside the digest.
        assert!(matches!(
            err(&format!("nginx@SHA256:{}", "a".repeat(64))),
            E::NameContainsUppercase { .. }
        ));
    }

    #[test]
    fn length_limit_is_on_the_path_only() {
        assert!(ImageRef::parse(&"a".repeat(247)).is_ok());
        assert!(ImageRef::parse(&format!("example.com/{}", "a".repeat(255))).is_ok());
        assert!(ImageRef::parse(&format!("{}.com/foo", "a".repeat(300))).is_ok());
    }

    #[test]
    fn go_simple_case_mapping() {
        // 'İ' lowercases to plain 'i' in Go, making this an uppercase error, not a format one.
        assert!(matches!(
            err("\u{130}/x"),
            ReferenceError::NameContainsUppercase { .. }
        ));
        assert_eq!(go_to_lower("\u{212a}"), "k");
    }

    #[test]
    fn messages_name_the_input() {
        let msg = err("docker/Docker").to_string();
        assert!(
            msg.contains("docker/Docker") && msg.contains("lowercase"),
            "{msg}"
        );
        let msg = err("a b").to_string();
        assert!(
            msg.starts_with("invalid reference format") && msg.contains("a b"),
            "{msg}"
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let r = parse("ghcr.io/o/app:v1");
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, r#""ghcr.io/o/app:v1""#);
        let back: ImageRef = serde_json::from_str(r#""nginx""#).expect("deserialize");
        assert_eq!(back, parse("docker.io/library/nginx"));
        assert!(serde_json::from_str::<ImageRef>(r#""Nginx""#).is_err());
        assert_eq!("nginx:1".parse::<ImageRef>(), ImageRef::parse("nginx:1"));
    }
}
