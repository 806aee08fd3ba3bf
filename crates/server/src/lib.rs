//! The daemon's HTTP surface: `/healthz`, `/readyz`, `/metrics`, the approvals REST API and
//! registry push webhooks.
//!
//! Handlers translate HTTP to calls on the [`Backend`] trait and back; no policy lives here.
//! The daemon builds an [`AppState`] from a [`ServerConfig`], its backend, its [`Metrics`] and
//! its [`Readiness`], then calls [`router`] and [`serve`].
//!
//! Routes:
//!
//! | method | path | auth |
//! | --- | --- | --- |
//! | GET | `/healthz`, `/readyz`, `/metrics` | none |
//! | GET | `/api/v1/approvals`, `/api/v1/assets` | Bearer token |
//! | POST | `/api/v1/approvals/{id}/approve`, `/api/v1/approvals/{id}/reject` `{"reason"}` | Bearer token |
//! | POST | `/api/v1/assets/{id}/skip` `{"version"}`, `/snooze` `{"until"}`, `/pin` `{"constraint"}` | Bearer token |
//! | DELETE | `/api/v1/assets/{id}/snooze`, `/api/v1/assets/{id}/pin` | Bearer token |
//! | POST | `/webhooks/{dockerhub,github,harbor,quay,distribution}` | per source, see [`webhooks`] |
//!
//! Ids may contain `/` as they are, or percent-encoded.

mod api;
mod auth;
pub mod backend;
mod error;
pub mod health;
mod logging;
pub mod metrics;
pub mod secret;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

pub use auth::ApiToken;
pub use backend::{
    AssetSummary, Backend, BackendError, BackendResult, ErrorKind, Operator, PendingApproval,
    PushEvent, WebhookSource,
};
pub use error::ApiError;
pub use health::{Readiness, ReadyStatus};
pub use metrics::{
    InventoryLabels, Metrics, OPENMETRICS_CONTENT_TYPE, PendingLabels, UpdateLabels, UpdateOutcome,
};
pub use secret::Secret;
pub use webhooks::WebhookSecrets;

/// What the server needs from the configuration, with every secret already resolved
/// (`token_env` / `token_file` are read by the caller).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    pub webhooks: WebhookSecrets,
}

/// A configuration the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("server.tokens[{index}]: the name is empty")]
    EmptyIdentity { index: usize },
    #[error("server.tokens[{index}] ({identity}): the token is empty")]
    EmptyToken { index: usize, identity: String },
    #[error(
        "server.tokens: '{first}' and '{second}' have the same token, so the audit trail could not tell them apart"
    )]
    SharedToken { first: String, second: String },
    #[error("server.tokens: the name '{identity}' appears twice")]
    DuplicateIdentity { identity: String },
    #[error("server.webhooks.{webhook}: the secret is empty")]
    EmptyWebhookSecret { webhook: WebhookSource },
}

impl ServerConfig {
    /// Every problem at once, in configuration order.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        for (index, t) in self.tokens.iter().enumerate() {
            if t.identity.trim().is_empty() {
                errors.push(ConfigError::EmptyIdentity { index });
            }
            if t.secret.is_empty() {
                errors.push(ConfigError::EmptyToken {
                    index,
                    identity: t.identity.clone(),
                });
            }
            for earlier in &self.tokens[..index] {
                if earlier.identity == t.identity {
                    errors.push(ConfigError::DuplicateIdentity {
                        identity: t.identity.clone(),
                    });
                } else if !t.secret.is_empty()
                    && earlier.secret.matches(t.secret.expose().as_bytes())
                {
                    errors.push(ConfigError::SharedToken {
                        first: earlier.identity.clone(),
                        second: t.identity.clone(),
                    });
                }
            }
        }
        for source in WebhookSource::ALL {
            if self.webhooks.get(source).is_some_and(Secret::is_empty) {
                errors.push(ConfigError::EmptyWebhookSecret { webhook: source });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The API tokens and webhook secrets in force. A configuration reload replaces them while the
/// server runs ([`LiveSecrets::replace`]); a request uses the set that was in force when it
/// arrived.
#[derive(Clone)]
pub struct LiveSecrets {
    tokens: Arc<RwLock<Arc<auth::TokenSet>>>,
    webhooks: Arc<RwLock<Arc<WebhookSecrets>>>,
}

impl LiveSecrets {
    fn new(config: &ServerConfig) -> LiveSecrets {
        LiveSecrets {
            tokens: Arc::new(RwLock::new(Arc::new(auth::TokenSet::new(
                config.tokens.clone(),
            )))),
            webhooks: Arc::new(RwLock::new(Arc::new(config.webhooks.clone()))),
        }
    }

    /// Puts `config`'s tokens and webhook secrets in force (its listen address is not read:
    /// the socket is bound once).
    pub fn replace(&self, config: &ServerConfig) {
        let tokens = Arc::new(auth::TokenSet::new(config.tokens.clone()));
        let webhooks = Arc::new(config.webhooks.clone());
        // A poisoned lock only means a reader panicked while it held an Arc clone: the value
        // inside is whole, so it is replaced all the same.
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
        *self.webhooks.write().unwrap_or_else(|e| e.into_inner()) = webhooks;
    }

    fn tokens(&self) -> Arc<auth::TokenSet> {
        Arc::clone(&self.tokens.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn webhooks(&self) -> Arc<WebhookSecrets> {
        Arc::clone(&self.webhooks.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for LiveSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSecrets")
            .field("webhooks", &self.webhooks())
            .finish_non_exhaustive()
    }
}

/// Everything the handlers share. Cloning copies a few `Arc`s.
pub struct AppState<B> {
    backend: Arc<B>,
    metrics: Metrics,
    readiness: Readiness,
    secrets: LiveSecrets,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            backend: Arc::clone(&self.backend),
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            secrets: self.secrets.clone(),
        }
    }
}

impl<B> std::fmt::Debug for AppState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("readiness", &self.readiness)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> AppState<B> {
    pub fn new(
        config: &ServerConfig,
        backend: Arc<B>,
        metrics: Metrics,
        readiness: Readiness,
    ) -> AppState<B> {
        AppState {
            backend,
            metrics,
            readiness,
            secrets: LiveSecrets::new(config),
        }
    }

    /// The handle with which a reload replaces the tokens and webhook secrets in force.
    pub fn secrets(&self) -> LiveSecrets {
        self.secrets.clone()
    }

    pub(crate) fn tokens(&self) -> Arc<auth::TokenSet> {
        self.secrets.tokens()
    }

    pub(crate) fn webhooks(&self) -> Arc<WebhookSecrets> {
        self.secrets.webhooks()
    }
}

/// Every route, with request logging.
pub fn router<B: Backend>(state: AppState<B>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<B>))
        .route("/metrics", get(metrics_handler::<B>))
        .route("/api/v1/approvals", get(api::list_approvals::<B>))
        .route("/api/v1/approvals/{*rest}", post(api::decide_approval::<B>))
        .route("/api/v1/assets", get(api::list_assets::<B>))
        .route(
            "/api/v1/assets/{*rest}",
            post(api::asset_action::<B>).delete(api::asset_undo::<B>),
        )
        .route("/webhooks/{source}", post(webhooks::receive::<B>))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(logging::log_request))
        .with_state(state)
}

/// Binds `config.listen`.
pub async fn bind(config: &ServerConfig) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.listen).await
}

/// Serves until `shutdown` completes, then stops accepting and waits for requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[derive(Serialize)]
struct Alive {
    status: &'static str,
    version: &'static str,
}

async fn healthz() -> Response {
    axum::Json(Alive {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

async fn readyz<B: Backend>(State(state): State<AppState<B>>) -> Response {
    let status = state.readiness.status();
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(status)).into_response()
}

async fn metrics_handler<B: Backend>(
    State(state): State<AppState<B>>,
    headers: HeaderMap,
) -> Response {
    let classic = wants_prometheus_text(&headers);
    let rendered = if classic {
        state.metrics.render_prometheus_text()
    } else {
        state.metrics.render()
    };
    match rendered {
        Ok(body) => {
            let ct = if classic {
                "text/plain; version=0.0.4; charset=utf-8"
            } else {
                OPENMETRICS_CONTENT_TYPE
            };
            ([(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering the metrics failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed",
            )
            .into_response()
        }
    }
}

/// The Prometheus text format (0.0.4) unless the client asks for OpenMetrics, as the
/// Prometheus client libraries do: `curl /metrics | promtool check metrics` works, and
/// Prometheus itself (which asks for OpenMetrics first) gets OpenMetrics.
fn wants_prometheus_text(headers: &HeaderMap) -> bool {
    let accept: String = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    !accept.contains("application/openmetrics-text")
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint").with_hint(
        "see /api/v1/approvals, /api/v1/assets, /webhooks/{source}, /metrics, /healthz, /readyz",
    )
}
