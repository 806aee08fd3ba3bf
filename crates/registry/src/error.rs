//! The one error type of this crate: which registry, which repository, which step, what
//! went wrong. Messages never contain a credential or token, only where one came from.

use std::fmt;
use std::time::Duration;

use crate::credentials::CredentialSource;

/// What the client was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Looking up credentials (client config, Docker `config.json`, helpers).
    Credentials,
    /// Asking the token service for a bearer token.
    Token,
    /// `GET /v2/<name>/tags/list`.
    ListTags,
    /// `HEAD /v2/<name>/manifests/<reference>`.
    HeadManifest,
    /// `GET /v2/<name>/manifests/<reference>`.
    GetManifest,
    /// `GET /v2/<name>/blobs/<digest>` (the image config, for its platform).
    GetBlob,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Credentials => "looking up credentials",
            Step::Token => "requesting a bearer token",
            Step::ListTags => "listing tags",
            Step::HeadManifest => "resolving a manifest digest (HEAD)",
            Step::GetManifest => "fetching a manifest",
            Step::GetBlob => "fetching the image config blob",
        })
    }
}

/// A registry operation that failed.
///
/// Displays as one sentence with all the context
/// (`registry docker.io, repository library/nginx: listing tags: …`); [`RegistryError::kind`]
/// is there for callers that react differently to, say, a refusal and a timeout.
#[derive(Debug, Clone)]
pub struct RegistryError(Box<Details>);

// Boxed: errors travel in every `Result` of the client, and the `Ok` side should not pay for
// their size.
#[derive(Debug, Clone)]
struct Details {
    registry: String,
    repository: String,
    step: Step,
    kind: ErrorKind,
}

impl RegistryError {
    pub fn new(
        registry: impl Into<String>,
        repository: impl Into<String>,
        step: Step,
        kind: ErrorKind,
    ) -> Self {
        RegistryError(Box::new(Details {
            registry: registry.into(),
            repository: repository.into(),
            step,
            kind,
        }))
    }

    /// The registry as named in the image reference (`docker.io`, not its API host).
    pub fn registry(&self) -> &str {
        &self.0.registry
    }

    pub fn repository(&self) -> &str {
        &self.0.repository
    }

    pub fn step(&self) -> Step {
        self.0.step
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// Whether trying again later (next cycle) may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.0.kind,
            ErrorKind::Transport { .. }
                | ErrorKind::RateLimited { .. }
                | ErrorKind::RateLimitReserve { .. }
        ) || matches!(self.0.kind, ErrorKind::Status { status, .. } if status >= 500)
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        let registry = if d.registry.is_empty() {
            "(none)"
        } else {
            &d.registry
        };
        write!(
            f,
            "registry {registry}, repository {}: {}: {}",
            d.repository, d.step, d.kind
        )
    }
}

// The kind is part of the message above, so it is not also reported as a `source` (a report
// walking the chain would print it twice).
impl std::error::Error for RegistryError {}

/// What went wrong, without the where (that is on [`RegistryError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The allow/deny list forbids this registry; nothing was sent.
    #[error(
        "the registry is not allowed by the client configuration ({reason}); it was not contacted"
    )]
    Denied { reason: String },

    /// Docker Hub's `RateLimit-Remaining` fell below the configured reserve earlier in this
    /// cycle; nothing more is sent to the registry until the next cycle.
    #[error(
        "the registry's rate limit is nearly used up ({remaining} requests left{}; the reserve is {reserve}); no more requests go to it this cycle",
        limit.map(|l| format!(" of {l}")).unwrap_or_default()
    )]
    RateLimitReserve {
        remaining: u64,
        limit: Option<u64>,
        reserve: u64,
    },

    /// HTTP 429 on every attempt, or a `Retry-After` longer than we are willing to wait.
    #[error(
        "rate limited (HTTP 429) after {attempts} attempt(s){}",
        retry_after.map(|d| format!("; the registry asked to wait {} s, more than the configured maximum", d.as_secs())).unwrap_or_default()
    )]
    RateLimited {
        attempts: u32,
        retry_after: Option<Duration>,
    },

    /// The registry or its token service refused the credentials we sent.
    #[error("the credentials from {from} were refused: {detail}")]
    CredentialsRefused {
        from: CredentialSource,
        detail: String,
    },

    /// The registry refused anonymous access and no credentials were found. (Docker Hub answers
    /// so for a repository that does not exist, too.)
    #[error("the registry refused anonymous access and no credentials were found (looked in: {}); or the repository does not exist", looked_in.join("; "))]
    CredentialsMissing { looked_in: Vec<String> },

    /// A credential source could not be read (bad `config.json`, a failing helper).
    #[error("cannot read credentials from {from}: {detail}")]
    CredentialLookup {
        from: CredentialSource,
        detail: String,
    },

    /// The registry asked for an authentication scheme we do not speak.
    #[error("the registry asks for an unsupported authentication scheme: {challenges}")]
    UnsupportedAuth { challenges: String },

    /// 404: the repository, tag or digest does not exist (or is hidden from us).
    #[error("not found (HTTP {status}){}", registry_message(message))]
    NotFound { status: u16, message: String },

    /// Any other unexpected HTTP status (5xx after the configured retries).
    #[error(
        "HTTP {status} after {attempts} attempt(s){}",
        registry_message(message)
    )]
    Status {
        status: u16,
        attempts: u32,
        message: String,
    },

    /// Connection refused, DNS, TLS, timeout… after the configured retries.
    #[error("request failed after {attempts} attempt(s): {detail}")]
    Transport { attempts: u32, detail: String },

    /// A body or header that is not what the protocol says (garbage JSON, wrong shape,
    /// missing digest, a pagination link to another host).
    #[error("invalid response: {detail}")]
    InvalidResponse { detail: String },

    /// The content does not hash to the digest it was fetched by.
    #[error("digest mismatch: asked for {expected}, the content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },

    /// A response body over the configured limit (a registry cannot make us buffer gigabytes).
    #[error("response body larger than the {limit}-byte limit")]
    BodyTooLarge { limit: usize },

    /// The request itself cannot be made (invalid tag or digest, bad configuration).
    #[error("invalid request: {detail}")]
    InvalidRequest { detail: String },

    /// A time budget ran out (a tag listing's, or the cycle's for registry work): what is left
    /// waits for the next cycle.
    #[error("{detail}")]
    OverBudget { detail: String },
}

fn registry_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}
