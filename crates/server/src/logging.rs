//! One log line per HTTP request: method, path, status, duration, peer.
//!
//! It records the path only, never the query string (Docker Hub and Quay webhooks carry their
//! secret in `?secret=`), never a header (Authorization holds API tokens and webhook secrets)
//! and never a body.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let peer = peer.map(|p| p.to_string());
    let peer = peer.as_deref().unwrap_or("-");
    if res.status().is_server_error() {
        tracing::warn!(%method, path, status, elapsed_ms, peer, "http request");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, peer, "http request");
    }
    res
}
