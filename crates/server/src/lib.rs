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
use std::time::Duration;

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
    webhook_guard: Arc<webhooks::WebhookGuard>,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            backend: Arc::clone(&self.backend),
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            secrets: self.secrets.clone(),
            webhook_guard: Arc::clone(&self.webhook_guard),
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
            webhook_guard: Arc::default(),
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
        .route("/approvals/{*asset}", get(approval_page))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(logging::log_request))
        .with_state(state)
}

/// Binds `config.listen`.
pub async fn bind(config: &ServerConfig) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.listen).await
}

/// What a client may hold of the server: slow or idle clients must not keep connections (and
/// file descriptors) forever, nor so many that the process has none left for its own work
/// (the state database, the engines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's head must arrive within this (also between two requests on a kept-alive
    /// connection: an idle connection is closed after it).
    pub header_read_timeout: Duration,
    /// A whole request (body included) and its response must be done within this.
    pub request_timeout: Duration,
    /// Connections served at once. At the cap, the oldest that never sent a request is closed
    /// to make room; when all are serving requests, a new one is refused.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// 10 s for a request's head, 60 s for a request, and at most a quarter of the process's
    /// descriptor limit (between 16 and 512) for connections.
    pub fn for_this_process() -> ConnectionLimits {
        let nofile = open_files_limit().unwrap_or(1024);
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: usize::try_from(nofile / 4).unwrap_or(512).clamp(16, 512),
        }
    }
}

/// The connections being served, oldest first: how many requests each is handling now, and
/// how to close it.
#[derive(Debug, Default)]
struct Tracked {
    open: std::collections::BTreeMap<
        u64,
        (
            Arc<std::sync::atomic::AtomicUsize>,
            tokio::task::AbortHandle,
        ),
    >,
}

impl Tracked {
    fn insert(
        &mut self,
        id: u64,
        busy: Arc<std::sync::atomic::AtomicUsize>,
        abort: tokio::task::AbortHandle,
    ) {
        // A connection that already ended (before it was registered) is not kept.
        if !abort.is_finished() {
            self.open.insert(id, (busy, abort));
        }
    }

    fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Whether a connection may be accepted: below `cap`; or after closing the oldest one
    /// that is handling no request; or not (all are handling requests).
    fn make_room(&mut self, cap: usize) -> Room {
        self.open.retain(|_, (_, abort)| !abort.is_finished());
        if self.open.len() < cap {
            return Room::Free;
        }
        let idle = self
            .open
            .iter()
            .find(|(_, (busy, _))| busy.load(std::sync::atomic::Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| self.open.remove(&id)) {
            Some((_, abort)) => {
                abort.abort();
                Room::Made
            }
            None => Room::Full,
        }
    }
}

/// What [`Tracked::make_room`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Free,
    /// An idle connection was closed for the next.
    Made,
    /// Every connection is handling a request.
    Full,
}

fn lock_conns(m: &std::sync::Mutex<Tracked>) -> std::sync::MutexGuard<'_, Tracked> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The soft limit on open files (`/proc/self/limits`), where it can be read.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves until `shutdown` completes, then stops accepting and waits (at most
/// `limits.request_timeout`) for requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        router,
        shutdown,
        ConnectionLimits::for_this_process(),
    )
    .await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let cap = limits.max_connections.max(1);
    let conns: Arc<std::sync::Mutex<Tracked>> = Arc::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request took too long to arrive or to answer",
                )
                .into_response(),
            }
        },
    ));
    tokio::pin!(shutdown);
    let mut next_id: u64 = 0;
    loop {
        // Below the cap before accepting (an accepted connection is a descriptor already): at
        // the cap, the connection that has waited longest without a request in progress makes
        // room — a client that connects and sends nothing, or half a request, cannot keep
        // others out; when every one is handling a request, the next waits in the backlog.
        loop {
            // The lock is released before any await: a connection task takes it when it ends.
            let room = lock_conns(&conns).make_room(cap);
            match room {
                Room::Free => break,
                // The closed connection's descriptor is released when its task is dropped,
                // which happens once this loop lets the runtime run it.
                Room::Made => tokio::task::yield_now().await,
                Room::Full => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a connection reset before it was
                    // accepted: wait a little rather than spin, and go on.
                    tracing::warn!(event = "server.accept_failed", error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        next_id += 1;
        let id = next_id;
        // Requests of this connection being handled now: a connection with none is idle
        // (new, half-sent, or kept alive between requests) and may make room for another.
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let router = router.clone();
        let in_flight = Arc::clone(&busy);
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let router = router.clone();
                let in_flight = Arc::clone(&in_flight);
                in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let response = router.oneshot(req.map(axum::body::Body::new)).await;
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    response
                }
            });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let registry = Arc::clone(&conns);
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            lock_conns(&registry).remove(id);
        });
        lock_conns(&conns).insert(id, busy, task.abort_handle());
    }
    drop(listener);
    // Requests in flight finish; idle connections are told to close.
    let _ = tokio::time::timeout(limits.request_timeout, graceful.shutdown()).await;
    Ok(())
}

#[derive(Serialize)]
struct Alive {
    status: &'static str,
    version: &'static str,
}

/// Where the approve link of an "approval needed" notification lands
/// (`{approve_base_url}/approvals/{asset_id}`): how to answer the review, with the CLI or the
/// API. It shows only what the link itself names; the reviews themselves are behind a token.
async fn approval_page(axum::extract::Path(asset): axum::extract::Path<String>) -> Response {
    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    }
    let asset = escape(&asset);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Review {asset} - safe-updater</title></head><body>\
         <h1>An update of {asset} waits for review</h1>\
         <p>See what waits and why: <code>safe-updater approvals</code>, or \
         <code>GET /api/v1/approvals</code> with an API token.</p>\
         <p>Let it proceed: <code>safe-updater approve {asset}@&lt;version&gt;</code>, or \
         <code>POST /api/v1/approvals/{asset}@&lt;version&gt;/approve</code>.</p>\
         <p>Refuse it: <code>safe-updater reject {asset}@&lt;version&gt; --reason TEXT</code>.</p>\
         </body></html>"
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            ),
        ],
        body,
    )
        .into_response()
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
