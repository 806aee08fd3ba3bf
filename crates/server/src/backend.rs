//! The contract between the HTTP handlers and the daemon: the [`Backend`] trait, the data it
//! returns, the operator identity it receives and the errors it may answer with.
//!
//! The daemon implements [`Backend`] with the store and the engine; the handlers only parse,
//! authenticate, call and serialise. Nothing here decides whether an approval is allowed or a
//! pin is sensible: that is the backend's (and the core's) job.

use std::future::Future;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// An authenticated operator: the `name` of the API token that was presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    pub name: String,
}

impl Operator {
    /// The actor recorded in the audit trail: `api:<name>`, next to the CLI's `cli:<user>`.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

/// A decision waiting for a person (gate `review`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Opaque to the server; may contain `/` and `@` (e.g. `docker/local/web@1.1.0`).
    pub id: String,
    pub asset_id: String,
    pub asset_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The current tag or version.
    pub current: String,
    /// The proposed tag or version.
    pub candidate: String,
    /// `major`, `minor`, `patch`, `prerelease`, `build` or `digest`.
    pub update_type: String,
    /// The setting that asked for review (`default.major`, `label:safe-updater.io/major`...).
    pub rule: String,
    /// Why, in words.
    pub reason: String,
    pub requested_at: Timestamp,
}

/// One tracked asset, as `GET /api/v1/assets` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetSummary {
    pub id: String,
    /// `container`, `Deployment`, `HelmRelease`...
    pub kind: String,
    pub asset_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The image or chart reference as deployed.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snoozed_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_versions: Vec<String>,
}

/// A registry told us that something was pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// The registry host as the pusher saw it (`ghcr.io`, `harbor.example.com`,
    /// `127.0.0.1:5001`); `None` when the payload does not say.
    pub registry: Option<String>,
    /// The repository path inside the registry (`library/nginx`, `acme/web`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub source: WebhookSource,
}

/// Where a push webhook came from; also the last segment of its URL, `/webhooks/{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookSource {
    DockerHub,
    GitHub,
    Harbor,
    Quay,
    /// The CNCF distribution registry (`registry:2`, Debian's `docker-registry`) notifications.
    Distribution,
}

impl WebhookSource {
    pub const ALL: [WebhookSource; 5] = [
        WebhookSource::DockerHub,
        WebhookSource::GitHub,
        WebhookSource::Harbor,
        WebhookSource::Quay,
        WebhookSource::Distribution,
    ];

    /// The URL segment: `dockerhub`, `github`, `harbor`, `quay`, `distribution`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookSource::DockerHub => "dockerhub",
            WebhookSource::GitHub => "github",
            WebhookSource::Harbor => "harbor",
            WebhookSource::Quay => "quay",
            WebhookSource::Distribution => "distribution",
        }
    }

    /// Accepts the URL segment and a few names people use (`ghcr`, `registry`).
    pub fn parse(s: &str) -> Option<WebhookSource> {
        Some(match s.to_ascii_lowercase().as_str() {
            "dockerhub" | "docker-hub" | "docker_hub" => WebhookSource::DockerHub,
            "github" | "ghcr" => WebhookSource::GitHub,
            "harbor" => WebhookSource::Harbor,
            "quay" => WebhookSource::Quay,
            "distribution" | "registry" => WebhookSource::Distribution,
            _ => return None,
        })
    }
}

impl std::fmt::Display for WebhookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, as the HTTP status it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is well-formed HTTP but its content is not acceptable.
    Invalid,
    /// 403: the operator is known but may not do this.
    Forbidden,
    /// 404: no such approval or asset.
    NotFound,
    /// 409: the state changed (already approved, superseded by a newer candidate...).
    Conflict,
    /// 503: the daemon cannot serve this right now (store not open yet).
    Unavailable,
    /// 500: a bug or an IO failure; the details go to the log, not to the client.
    Internal,
}

/// An error from the backend, with a sentence for the operator and an optional hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Forbidden, message)
    }
    pub fn internal(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Internal, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> BackendError {
        self.hint = Some(hint.into());
        self
    }
}

/// The result type of every [`Backend`] method.
pub type BackendResult<T> = Result<T, BackendError>;

/// What the HTTP surface needs from the daemon. Each method is one operator action or query;
/// `operator` is the authenticated identity to record in the audit trail.
///
/// Implementations may write `async fn` in the `impl` block; the futures must be `Send`
/// because axum runs handlers on the multi-threaded runtime. SQLite work belongs on
/// `spawn_blocking` inside the implementation, not in the handlers.
pub trait Backend: Send + Sync + 'static {
    /// Decisions waiting for approval, oldest first.
    fn pending_approvals(&self)
    -> impl Future<Output = BackendResult<Vec<PendingApproval>>> + Send;

    fn approve(
        &self,
        id: String,
        operator: Operator,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// `reason` is never empty (the handler refuses that with 400).
    fn reject(
        &self,
        id: String,
        operator: Operator,
        reason: String,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    fn list_assets(&self) -> impl Future<Output = BackendResult<Vec<AssetSummary>>> + Send;

    /// Never propose `version` for this asset.
    fn skip_version(
        &self,
        asset_id: String,
        version: String,
        operator: Operator,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Propose nothing for this asset until `until`.
    fn snooze(
        &self,
        asset_id: String,
        until: Timestamp,
        operator: Operator,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    fn unsnooze(
        &self,
        asset_id: String,
        operator: Operator,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Keep this asset within a constraint (`~1.2`, `1.2.x`); the backend validates its syntax.
    fn pin(
        &self,
        asset_id: String,
        constraint: String,
        operator: Operator,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    fn unpin(
        &self,
        asset_id: String,
        operator: Operator,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// A registry announced a push. Should return quickly (queue a check of the assets that
    /// use `repository`); the registry waits for the answer and retries on errors.
    fn webhook_push(&self, event: PushEvent) -> impl Future<Output = BackendResult<()>> + Send;
}
