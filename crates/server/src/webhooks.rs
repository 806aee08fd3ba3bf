//! Registry push webhooks: `POST /webhooks/{source}` for Docker Hub, GitHub (GHCR), Harbor,
//! Quay and the distribution registry's notifications.
//!
//! Each request is authenticated the way its sender can be configured to prove itself:
//! GitHub signs the body (`X-Hub-Signature-256`, HMAC-SHA256); Harbor and the distribution
//! registry send a configured `Authorization` header; Docker Hub and Quay cannot send anything
//! but a URL, so their secret is the `?secret=` query parameter (never logged: the request log
//! records the path only). Every comparison is constant-time.
//!
//! A payload becomes zero or more [`PushEvent`]s (one per pushed tag) handed to
//! [`Backend::webhook_push`]. Events that are not pushes (pulls, deletes, GitHub pings, npm
//! packages) are acknowledged and dropped. This module must not decide what a push means for an
//! asset; it only says what was pushed.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use crate::AppState;
use crate::backend::{Backend, PushEvent, WebhookSource};
use crate::error::ApiError;
use crate::secret::Secret;

/// The secret of each webhook source; a source without one is disabled (404).
#[derive(Debug, Clone, Default)]
pub struct WebhookSecrets {
    /// Checked against `?secret=` (Docker Hub cannot sign or send headers).
    pub dockerhub: Option<Secret>,
    /// The webhook's secret in GitHub: the HMAC key of `X-Hub-Signature-256`.
    pub github: Option<Secret>,
    /// The "Auth Header" value configured in Harbor, compared with `Authorization`.
    pub harbor: Option<Secret>,
    /// Checked against `?secret=` (Quay does not sign notifications).
    pub quay: Option<Secret>,
    /// The `Authorization` header value set in the registry's `notifications.endpoints[].headers`.
    pub distribution: Option<Secret>,
}

impl WebhookSecrets {
    pub fn get(&self, source: WebhookSource) -> Option<&Secret> {
        match source {
            WebhookSource::DockerHub => self.dockerhub.as_ref(),
            WebhookSource::GitHub => self.github.as_ref(),
            WebhookSource::Harbor => self.harbor.as_ref(),
            WebhookSource::Quay => self.quay.as_ref(),
            WebhookSource::Distribution => self.distribution.as_ref(),
        }
    }

    pub fn set(&mut self, source: WebhookSource, secret: Secret) {
        let slot = match source {
            WebhookSource::DockerHub => &mut self.dockerhub,
            WebhookSource::GitHub => &mut self.github,
            WebhookSource::Harbor => &mut self.harbor,
            WebhookSource::Quay => &mut self.quay,
            WebhookSource::Distribution => &mut self.distribution,
        };
        *slot = Some(secret);
    }
}

/// A payload that cannot be read as its source's push notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(String);

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignored: Option<String>,
}

pub(crate) async fn receive<B: Backend>(
    State(state): State<AppState<B>>,
    Path(source): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(src) = WebhookSource::parse(&source) else {
        return Err(
            ApiError::not_found(format!("unknown webhook source '{source}'"))
                .with_hint("one of: dockerhub, github, harbor, quay, distribution"),
        );
    };
    let webhooks = state.webhooks();
    let Some(secret) = webhooks.get(src) else {
        return Err(
            ApiError::not_found(format!("the {src} webhook is not enabled"))
                .with_hint(format!("configure server.webhooks.{src} with a secret")),
        );
    };
    if let Err(e) = verify(src, secret, &query, &headers, &body) {
        state.metrics.webhook_request(src.as_str(), "unauthorized");
        return Err(e);
    }
    let github_event = headers.get("x-github-event").and_then(|v| v.to_str().ok());
    let events = match parse_payload(src, github_event, &body) {
        Ok(events) => events,
        Err(e) => {
            state.metrics.webhook_request(src.as_str(), "invalid");
            return Err(ApiError::bad_request(format!(
                "not a {src} push notification: {e}"
            )));
        }
    };
    let now = std::time::Instant::now();
    // A delivery seen before (the sender's id, else the payload itself) triggers nothing again.
    let delivery = delivery_key(src, &headers, &body);
    if !state.webhook_guard.first_time(delivery, now) {
        state.metrics.webhook_request(src.as_str(), "replayed");
        tracing::info!(event = "webhook.replayed", source = %src, "a webhook delivery seen before; ignored");
        return Ok((
            StatusCode::OK,
            Json(Accepted {
                accepted: 0,
                ignored: Some("this delivery was received before".to_owned()),
            }),
        )
            .into_response());
    }
    // What a push asks for is a check of a repository: one trigger per repository, however
    // many tags or events the payload lists.
    let received = events.len();
    let mut repositories: Vec<PushEvent> = Vec::new();
    for event in events {
        if !repositories
            .iter()
            .any(|e| e.registry == event.registry && e.repository == event.repository)
        {
            repositories.push(event);
        }
    }
    let unique = repositories.len();
    repositories.truncate(MAX_TRIGGERS_PER_REQUEST);
    let allowed = state.webhook_guard.take(repositories.len(), now);
    if allowed == 0 && unique > 0 {
        state.metrics.webhook_request(src.as_str(), "throttled");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {MAX_TRIGGERS_PER_MINUTE} repositories were announced in the last minute"
            ),
        )
        .with_hint("the next cycle checks every repository anyway; send fewer notifications"));
    }
    repositories.truncate(allowed);
    let accepted = repositories.len();
    for event in repositories {
        state.backend.webhook_push(event).await?;
    }
    state.metrics.webhook_request(src.as_str(), "accepted");
    tracing::info!(
        event = "webhook.accepted",
        source = %src,
        events = received,
        repositories = unique,
        triggered = accepted,
        "registry push announced"
    );
    let ignored = if received == 0 {
        Some("no push of a container image in this payload".to_owned())
    } else if accepted < unique {
        Some(format!(
            "{} of {unique} repositories were not triggered (at most {MAX_TRIGGERS_PER_REQUEST} per request and {MAX_TRIGGERS_PER_MINUTE} per minute); the next cycle checks them",
            unique - accepted
        ))
    } else {
        None
    };
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted, ignored })).into_response())
}

/// Repositories one request may trigger checks of.
pub const MAX_TRIGGERS_PER_REQUEST: usize = 100;
/// Repositories all requests together may trigger checks of in a minute.
pub const MAX_TRIGGERS_PER_MINUTE: usize = 600;
/// How long a delivery is remembered to refuse its replay, and how many at most.
const REPLAY_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);
const REPLAY_ENTRIES: usize = 4096;

/// The delivery's identity: GitHub's `X-GitHub-Delivery` id when it sends one, else a hash of
/// the payload (identical payloads are the same delivery).
fn delivery_key(src: WebhookSource, headers: &HeaderMap, body: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = Sha256::new();
    h.update(src.as_str().as_bytes());
    match headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if src == WebhookSource::GitHub => {
            h.update(b"delivery:");
            h.update(id.as_bytes());
        }
        _ => {
            h.update(b"payload:");
            h.update(body);
        }
    }
    h.finalize().into()
}

/// What keeps webhooks from turning into floods: the deliveries seen lately, and the
/// triggers of the last minute.
#[derive(Debug, Default)]
pub(crate) struct WebhookGuard {
    state: std::sync::Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    seen: std::collections::VecDeque<(std::time::Instant, [u8; 32])>,
    triggers: std::collections::VecDeque<std::time::Instant>,
}

impl WebhookGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `key`; false when it was seen within the replay memory.
    fn first_time(&self, key: [u8; 32], now: std::time::Instant) -> bool {
        let mut st = self.lock();
        while st
            .seen
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REPLAY_MEMORY)
            || st.seen.len() > REPLAY_ENTRIES
        {
            st.seen.pop_front();
        }
        if st.seen.iter().any(|(_, k)| *k == key) {
            return false;
        }
        st.seen.push_back((now, key));
        true
    }

    /// How many of `wanted` triggers fit in the last minute's budget (and takes them).
    fn take(&self, wanted: usize, now: std::time::Instant) -> usize {
        let mut st = self.lock();
        while st
            .triggers
            .front()
            .is_some_and(|at| now.duration_since(*at) > std::time::Duration::from_secs(60))
        {
            st.triggers.pop_front();
        }
        let allowed = wanted.min(MAX_TRIGGERS_PER_MINUTE.saturating_sub(st.triggers.len()));
        st.triggers.extend(std::iter::repeat_n(now, allowed));
        allowed
    }
}

fn verify(
    src: WebhookSource,
    secret: &Secret,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    match src {
        WebhookSource::GitHub => {
            let sig = headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ApiError::unauthorized("missing X-Hub-Signature-256").with_hint(
                        "set a secret on the GitHub webhook; it must equal server.webhooks.github",
                    )
                })?;
            if github_signature_ok(secret, sig, body) {
                Ok(())
            } else {
                Err(ApiError::unauthorized(
                    "the X-Hub-Signature-256 signature does not match",
                ))
            }
        }
        WebhookSource::Harbor | WebhookSource::Distribution => {
            let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
                ApiError::unauthorized("missing Authorization header").with_hint(match src {
                    WebhookSource::Harbor => "set the webhook's Auth Header in Harbor to the configured secret",
                    _ => "add headers: {Authorization: [<secret>]} to the registry's notification endpoint",
                })
            })?;
            let v = value.as_bytes();
            // The registry sends the header exactly as configured; accept "Bearer <secret>"
            // too, since that is what people tend to write there.
            let stripped = v
                .split_at_checked(7)
                .filter(|(s, _)| s.eq_ignore_ascii_case(b"bearer "))
                .map(|(_, rest)| rest);
            let ok_plain = secret.matches(v);
            let ok_bearer = stripped.is_some_and(|s| secret.matches(s));
            if ok_plain | ok_bearer {
                Ok(())
            } else {
                Err(ApiError::unauthorized(
                    "the Authorization header does not match the webhook secret",
                ))
            }
        }
        WebhookSource::DockerHub | WebhookSource::Quay => {
            let presented = query.get("secret").ok_or_else(|| {
                ApiError::unauthorized("missing ?secret= in the webhook URL").with_hint(format!(
                    "register the URL as .../webhooks/{src}?secret=<secret>"
                ))
            })?;
            if secret.matches(presented.as_bytes()) {
                Ok(())
            } else {
                Err(ApiError::unauthorized("the webhook secret does not match"))
            }
        }
    }
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, body), in constant time.
pub fn github_signature_ok(secret: &Secret, header_value: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header_value.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Reads a source's payload into push events. `github_event` is the `X-GitHub-Event` header.
/// Notifications that are not image pushes give an empty list.
pub fn parse_payload(
    source: WebhookSource,
    github_event: Option<&str>,
    body: &[u8],
) -> Result<Vec<PushEvent>, PayloadError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("the body is not JSON ({e})")))?;
    if !v.is_object() {
        return Err(PayloadError("the body is not a JSON object".into()));
    }
    match source {
        WebhookSource::DockerHub => dockerhub(&v),
        WebhookSource::GitHub => github(github_event, &v),
        WebhookSource::Harbor => harbor(&v),
        WebhookSource::Quay => quay(&v),
        WebhookSource::Distribution => distribution(&v),
    }
}

fn dockerhub(v: &Value) -> Result<Vec<PushEvent>, PayloadError> {
    let repository =
        str_at(v, &["repository", "repo_name"]).ok_or_else(|| missing("repository.repo_name"))?;
    let tag = str_at(v, &["push_data", "tag"]).map(str::to_owned);
    Ok(vec![PushEvent {
        registry: Some("docker.io".to_owned()),
        repository: repository.to_owned(),
        tag,
        digest: None,
        source: WebhookSource::DockerHub,
    }])
}

fn github(event: Option<&str>, v: &Value) -> Result<Vec<PushEvent>, PayloadError> {
    let key = match event {
        Some("package") => "package",
        Some("registry_package") => "registry_package",
        // ping, and events this endpoint was not meant to receive.
        Some(_) => return Ok(Vec::new()),
        None if v.get("package").is_some() => "package",
        None if v.get("registry_package").is_some() => "registry_package",
        None => {
            return Err(missing(
                "package or registry_package (and no X-GitHub-Event header)",
            ));
        }
    };
    let pkg = v.get(key).ok_or_else(|| missing(key))?;
    let action = str_at(v, &["action"]).unwrap_or("");
    if action != "published" && action != "updated" {
        return Ok(Vec::new());
    }
    let is_container = [
        str_at(pkg, &["package_type"]),
        str_at(pkg, &["ecosystem"]),
        str_at(pkg, &["registry", "type"]),
    ]
    .into_iter()
    .flatten()
    .any(|s| s.eq_ignore_ascii_case("container") || s.eq_ignore_ascii_case("docker"));
    if !is_container {
        return Ok(Vec::new());
    }
    let pv = pkg
        .get("package_version")
        .ok_or_else(|| missing("package_version"))?;
    let tag = str_at(pv, &["container_metadata", "tag", "name"]).map(str::to_owned);
    let digest = str_at(pv, &["container_metadata", "tag", "digest"])
        .or_else(|| str_at(pv, &["version"]).filter(|s| s.starts_with("sha256:")))
        .map(str::to_owned);
    // package_url is the reference as pulled: "ghcr.io/owner/name:tag".
    let (registry, repository) = match str_at(pv, &["package_url"]).and_then(split_reference) {
        Some((reg, repo, _)) => (reg, repo),
        None => {
            let owner = str_at(pkg, &["owner", "login"]).ok_or_else(|| missing("owner.login"))?;
            let name = str_at(pkg, &["name"]).ok_or_else(|| missing("name"))?;
            (Some("ghcr.io".to_owned()), format!("{owner}/{name}"))
        }
    };
    Ok(vec![PushEvent {
        registry,
        // GHCR shows owners as typed ("Codertocat"); image references are lowercase.
        repository: repository.to_ascii_lowercase(),
        tag,
        digest,
        source: WebhookSource::GitHub,
    }])
}

fn harbor(v: &Value) -> Result<Vec<PushEvent>, PayloadError> {
    let kind = str_at(v, &["type"]).ok_or_else(|| missing("type"))?;
    // Default format: type PUSH_ARTIFACT, event_data; CloudEvents: harbor.artifact.pushed, data.
    let data = match kind {
        "PUSH_ARTIFACT" => v.get("event_data").ok_or_else(|| missing("event_data"))?,
        "harbor.artifact.pushed" => v.get("data").ok_or_else(|| missing("data"))?,
        _ => return Ok(Vec::new()),
    };
    let repository = str_at(data, &["repository", "repo_full_name"])
        .ok_or_else(|| missing("event_data.repository.repo_full_name"))?;
    let resources = data
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("event_data.resources"))?;
    let mut out = Vec::with_capacity(resources.len());
    for r in resources {
        let digest = str_at(r, &["digest"]).map(str::to_owned);
        // Harbor puts the digest into "tag" for a push by digest.
        let tag = str_at(r, &["tag"])
            .filter(|t| !t.starts_with("sha256:"))
            .map(str::to_owned);
        let registry = str_at(r, &["resource_url"])
            .and_then(split_reference)
            .and_then(|(reg, _, _)| reg);
        out.push(PushEvent {
            registry,
            repository: repository.to_owned(),
            tag,
            digest,
            source: WebhookSource::Harbor,
        });
    }
    Ok(out)
}

fn quay(v: &Value) -> Result<Vec<PushEvent>, PayloadError> {
    let repository = str_at(v, &["repository"]).ok_or_else(|| missing("repository"))?;
    let registry = str_at(v, &["docker_url"])
        .and_then(split_reference)
        .and_then(|(reg, _, _)| reg);
    // Documented as a list of tags; older Quay sent an object of tag -> image id.
    let tags: Vec<(String, Option<String>)> = match v.get("updated_tags") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|t| (t.to_owned(), None))
            .collect(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(t, d)| {
                let digest = d
                    .as_str()
                    .filter(|d| d.starts_with("sha256:"))
                    .map(str::to_owned);
                (t.clone(), digest)
            })
            .collect(),
        _ => Vec::new(),
    };
    let make = |tag: Option<String>, digest: Option<String>| PushEvent {
        registry: registry.clone(),
        repository: repository.to_owned(),
        tag,
        digest,
        source: WebhookSource::Quay,
    };
    if tags.is_empty() {
        return Ok(vec![make(None, None)]);
    }
    Ok(tags.into_iter().map(|(t, d)| make(Some(t), d)).collect())
}

fn distribution(v: &Value) -> Result<Vec<PushEvent>, PayloadError> {
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("events"))?;
    let mut out = Vec::new();
    for e in events {
        if str_at(e, &["action"]) != Some("push") {
            continue;
        }
        // Blob uploads are announced as pushes too; only manifests name something pullable.
        let media = str_at(e, &["target", "mediaType"]).unwrap_or("");
        if !is_manifest_media_type(media) {
            continue;
        }
        let repository = str_at(e, &["target", "repository"])
            .ok_or_else(|| missing("events[].target.repository"))?;
        out.push(PushEvent {
            registry: str_at(e, &["request", "host"]).map(str::to_owned),
            repository: repository.to_owned(),
            tag: str_at(e, &["target", "tag"]).map(str::to_owned),
            digest: str_at(e, &["target", "digest"]).map(str::to_owned),
            source: WebhookSource::Distribution,
        });
    }
    Ok(out)
}

fn is_manifest_media_type(media: &str) -> bool {
    media.contains("manifest") || media.contains("image.index")
}

/// Splits `host[:port]/path/name[:tag][@digest]` into (registry, repository, tag). The first
/// segment is a registry only if it looks like a host (has `.` or `:`, or is `localhost`), as
/// the docker CLI decides.
fn split_reference(reference: &str) -> Option<(Option<String>, String, Option<String>)> {
    let r = reference
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let r = r.split('@').next().unwrap_or(r);
    let (first, rest) = match r.split_once('/') {
        Some((f, rest)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (Some(f.to_owned()), rest)
        }
        _ => (None, r),
    };
    let (repo, tag) = match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (rest, None),
    };
    let repo = repo.trim_matches('/');
    if repo.is_empty() {
        return None;
    }
    let tag = tag.filter(|t| !t.is_empty()).map(str::to_owned);
    Some((first, repo.to_owned(), tag))
}

/// A non-empty string at a path of object keys.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn missing(field: &str) -> PayloadError {
    PayloadError(format!("it has no {field}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_like_the_docker_cli() {
        assert_eq!(
            split_reference("ghcr.io/Codertocat/hello-world:"),
            Some((
                Some("ghcr.io".into()),
                "Codertocat/hello-world".into(),
                None
            ))
        );
        assert_eq!(
            split_reference("localhost/harbor/alpine@sha256:954b"),
            Some((Some("localhost".into()), "harbor/alpine".into(), None))
        );
        assert_eq!(
            split_reference("harbor.example.com:8443/lib/web:1.2.3"),
            Some((
                Some("harbor.example.com:8443".into()),
                "lib/web".into(),
                Some("1.2.3".into())
            ))
        );
        assert_eq!(
            split_reference("acme/web:2"),
            Some((None, "acme/web".into(), Some("2".into())))
        );
        assert_eq!(split_reference("quay.io/"), None);
    }

    #[test]
    fn github_signatures_verify_only_with_the_right_key_and_body() {
        // HMAC-SHA256 key "It's a Secret to Everybody", body "Hello, World!": the example
        // GitHub documents for validating webhook deliveries.
        let secret = Secret::new("It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok(&secret, sig, b"Hello, World!"));
        assert!(!github_signature_ok(&secret, sig, b"Hello, World?"));
        assert!(!github_signature_ok(
            &Secret::new("other"),
            sig,
            b"Hello, World!"
        ));
        assert!(!github_signature_ok(&secret, &sig[7..], b"Hello, World!"));
        assert!(!github_signature_ok(&secret, "sha256=zz", b"Hello, World!"));
    }
}
