//! The approvals REST API (`/api/v1/...`): authenticate, parse, call the [`Backend`], answer.
//!
//! Ids may contain slashes (`docker/local/web`, `docker/local/web@1.1.0`), so the routes end in
//! a wildcard and the action is the last segment: `POST /api/v1/assets/docker/local/web/pin`.
//! A percent-encoded id (`docker%2Flocal%2Fweb`) works the same. Only the shape of the input is
//! checked here (a reason is present, a time parses); whether the action is allowed is the
//! backend's decision.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::backend::{AssetSummary, Backend, Operator, PendingApproval};
use crate::error::ApiError;

#[derive(Serialize)]
struct Approvals {
    approvals: Vec<PendingApproval>,
}

#[derive(Serialize)]
struct Assets {
    assets: Vec<AssetSummary>,
}

/// What an accepted action answers: what was done, to what, by whom.
#[derive(Serialize)]
struct Done<'a> {
    id: &'a str,
    action: &'a str,
    operator: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipBody {
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnoozeBody {
    until: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    constraint: String,
}

pub(crate) async fn list_approvals<B: Backend>(
    State(state): State<AppState<B>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.tokens().authenticate(&headers)?;
    let approvals = state.backend.pending_approvals().await?;
    Ok(Json(Approvals { approvals }).into_response())
}

pub(crate) async fn list_assets<B: Backend>(
    State(state): State<AppState<B>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.tokens().authenticate(&headers)?;
    let assets = state.backend.list_assets().await?;
    Ok(Json(Assets { assets }).into_response())
}

/// `POST /api/v1/approvals/{id}/approve` and `POST /api/v1/approvals/{id}/reject`.
pub(crate) async fn decide_approval<B: Backend>(
    State(state): State<AppState<B>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = state.tokens().authenticate(&headers)?;
    let (id, action) = split_action(&rest, &["approve", "reject"], "approvals")?;
    match action {
        "approve" => {
            state
                .backend
                .approve(id.to_owned(), operator.clone())
                .await?;
        }
        _ => {
            let reason = if body.is_empty() {
                None
            } else {
                parse_json::<RejectBody>(&body)?.reason
            };
            let reason = reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request("a rejection needs a reason")
                        .with_hint("send {\"reason\": \"why this version must not be applied\"}")
                })?;
            state
                .backend
                .reject(id.to_owned(), operator.clone(), reason)
                .await?;
        }
    }
    Ok(done(id, action, &operator))
}

/// `POST /api/v1/assets/{asset_id}/{skip|snooze|pin}`.
pub(crate) async fn asset_action<B: Backend>(
    State(state): State<AppState<B>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = state.tokens().authenticate(&headers)?;
    let (asset, action) = split_action(&rest, &["skip", "snooze", "pin"], "assets")?;
    let backend = &state.backend;
    match action {
        "skip" => {
            let b: SkipBody = parse_json(&body)?;
            let version = non_empty(b.version, "version", "{\"version\": \"1.2.3\"}")?;
            backend
                .skip_version(asset.to_owned(), version, operator.clone())
                .await?;
        }
        "snooze" => {
            let b: SnoozeBody = parse_json(&body)?;
            let until: Timestamp = b.until.trim().parse().map_err(|e| {
                ApiError::bad_request(format!("'until' is not a time: {e}"))
                    .with_hint("an RFC 3339 time with an offset, e.g. 2026-12-01T00:00:00Z")
            })?;
            backend
                .snooze(asset.to_owned(), until, operator.clone())
                .await?;
        }
        _ => {
            let b: PinBody = parse_json(&body)?;
            let constraint = non_empty(b.constraint, "constraint", "{\"constraint\": \"~1.2\"}")?;
            backend
                .pin(asset.to_owned(), constraint, operator.clone())
                .await?;
        }
    }
    Ok(done(asset, action, &operator))
}

/// `DELETE /api/v1/assets/{asset_id}/{snooze|pin}`.
pub(crate) async fn asset_undo<B: Backend>(
    State(state): State<AppState<B>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = state.tokens().authenticate(&headers)?;
    let (asset, action) = split_action(&rest, &["snooze", "pin"], "assets")?;
    if action == "snooze" {
        state
            .backend
            .unsnooze(asset.to_owned(), operator.clone())
            .await?;
    } else {
        state
            .backend
            .unpin(asset.to_owned(), operator.clone())
            .await?;
    }
    let undone = if action == "snooze" {
        "unsnooze"
    } else {
        "unpin"
    };
    Ok(done(asset, undone, &operator))
}

fn done(id: &str, action: &str, operator: &Operator) -> Response {
    (
        StatusCode::OK,
        Json(Done {
            id,
            action,
            operator: &operator.name,
        }),
    )
        .into_response()
}

/// Splits `<id>/<action>`, where the id may itself contain slashes.
fn split_action<'a>(
    rest: &'a str,
    actions: &[&'static str],
    collection: &str,
) -> Result<(&'a str, &'static str), ApiError> {
    let usage = || {
        format!(
            "/api/v1/{collection}/<id>/{{{}}} (ids may contain '/', or be percent-encoded)",
            actions.join("|")
        )
    };
    let (id, action) = rest.rsplit_once('/').ok_or_else(|| {
        ApiError::not_found(format!("no such endpoint: /api/v1/{collection}/{rest}"))
            .with_hint(usage())
    })?;
    let id = id.trim_matches('/');
    if id.is_empty() {
        return Err(ApiError::not_found("the id is empty").with_hint(usage()));
    }
    let action = actions
        .iter()
        .find(|a| **a == action)
        .copied()
        .ok_or_else(|| {
            ApiError::not_found(format!("unknown action '{action}' on {collection}"))
                .with_hint(usage())
        })?;
    Ok((id, action))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the JSON body is not acceptable: {e}")))
}

fn non_empty(value: String, field: &str, example: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("'{field}' is empty"))
            .with_hint(format!("send {example}")));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_slashes_and_the_action_is_the_last_segment() {
        let acts = ["skip", "snooze", "pin"];
        assert_eq!(
            split_action("docker/local/web/pin", &acts, "assets").expect("ok"),
            ("docker/local/web", "pin")
        );
        assert_eq!(
            split_action("docker/local/skip/skip", &acts, "assets").expect("ok"),
            ("docker/local/skip", "skip")
        );
        assert_eq!(
            split_action("pin", &acts, "assets")
                .expect_err("no id")
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            split_action("a/b/frobnicate", &acts, "assets")
                .expect_err("bad action")
                .status,
            StatusCode::NOT_FOUND
        );
    }
}
