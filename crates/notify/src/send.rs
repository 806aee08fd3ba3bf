//! Delivering one notification to one channel over HTTP: the request, how each service says
//! "accepted", and retries with bounded exponential backoff that honour `Retry-After`.
//!
//! What it must not do: wait without bound (every wait is capped, every request has a
//! timeout), or return an error text that holds a secret (the URL is stripped from HTTP errors
//! and everything is passed through the channel's `redact`).

use std::time::Duration;

use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::NotifyOptions;
use crate::channel::{Channel, Service};
use crate::event::Event;
use crate::payload;

/// Why a delivery did not succeed. The text is already free of secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("HTTP {status}{detail}")]
    Status { status: u16, detail: String },
    #[error("{0}")]
    Transport(String),
    #[error("the service refused the message: {0}")]
    Refused(String),
    #[error("rate limited: the service asks to wait {0:?}, longer than max_retry_wait")]
    RetryAfterTooLong(Duration),
    #[error("{0}")]
    Build(String),
}

/// The outcome of one attempt.
enum Attempt {
    Done,
    /// Worth trying again; with the wait the service asked for, if it did.
    Retry(SendError, Option<Duration>),
    Fail(SendError),
}

#[derive(Clone, Copy)]
enum Acceptance {
    /// 2xx and a body of `ok` or nothing (Slack's incoming webhooks).
    SlackWebhook,
    /// 2xx and `{"ok": true}` (Slack's Web API answers 200 for its own errors).
    SlackApi,
    /// Any 2xx.
    Status,
}

struct Prepared {
    method: Method,
    url: url::Url,
    headers: HeaderMap,
    body: Vec<u8>,
    acceptance: Acceptance,
}

fn prepare(
    channel: &Channel,
    event: &Event,
    approve_url: Option<&str>,
) -> Result<Prepared, SendError> {
    let url = channel
        .target()
        .map_err(|e| SendError::Build(format!("target URL: {e}")))?;
    let mut headers = HeaderMap::new();
    let (method, body, acceptance) = match &channel.service {
        Service::Slack(s) => {
            let body = payload::slack(event, approve_url, s);
            let acceptance = if s.is_webhook() {
                Acceptance::SlackWebhook
            } else {
                let mut auth = HeaderValue::from_str(s.authorization().expose()).map_err(|_| {
                    SendError::Build("the Slack token is not a valid header value".into())
                })?;
                auth.set_sensitive(true);
                headers.insert(AUTHORIZATION, auth);
                Acceptance::SlackApi
            };
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            (Method::POST, body, acceptance)
        }
        Service::Discord(d) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            (
                Method::POST,
                payload::discord(event, approve_url, d),
                Acceptance::Status,
            )
        }
        Service::Teams(t) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            (
                Method::POST,
                payload::teams(event, approve_url, t),
                Acceptance::Status,
            )
        }
        Service::Generic(g) => {
            let ct = HeaderValue::from_str(&g.content_type)
                .map_err(|_| SendError::Build("contenttype is not a valid header value".into()))?;
            headers.insert(CONTENT_TYPE, ct);
            for (name, value) in &g.headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| SendError::Build("a custom header name is invalid".into()))?;
                let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                    SendError::Build(format!("the value of header {name} is invalid"))
                })?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            (
                g.method.clone(),
                payload::generic(event, approve_url, g),
                Acceptance::Status,
            )
        }
    };
    let body = serde_json::to_vec(&body).map_err(|e| SendError::Build(format!("payload: {e}")))?;
    Ok(Prepared {
        method,
        url,
        headers,
        body,
        acceptance,
    })
}

/// Sends with retries. `on_retry` is called before each wait (for the retry counter).
pub(crate) async fn deliver(
    http: &reqwest::Client,
    channel: &Channel,
    event: &Event,
    approve_url: Option<&str>,
    opts: &NotifyOptions,
    mut on_retry: impl FnMut(&SendError, Duration),
) -> Result<u32, SendError> {
    let prepared = prepare(channel, event, approve_url)?;
    let attempts = opts.attempts.max(1);
    let mut attempt = 1;
    loop {
        match attempt_once(http, &prepared, opts).await {
            Attempt::Done => return Ok(attempt),
            Attempt::Fail(e) => return Err(redact(channel, e)),
            Attempt::Retry(e, _) if attempt >= attempts => return Err(redact(channel, e)),
            Attempt::Retry(e, asked) => {
                let wait = match asked {
                    Some(w) if w > opts.max_retry_wait => {
                        return Err(SendError::RetryAfterTooLong(w));
                    }
                    Some(w) => w,
                    None => backoff(attempt, opts),
                };
                let e = redact(channel, e);
                on_retry(&e, wait);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

fn redact(channel: &Channel, e: SendError) -> SendError {
    match e {
        SendError::Status { status, detail } => SendError::Status {
            status,
            detail: channel.redact(&detail),
        },
        SendError::Transport(t) => SendError::Transport(channel.redact(&t)),
        SendError::Refused(t) => SendError::Refused(channel.redact(&t)),
        SendError::Build(t) => SendError::Build(channel.redact(&t)),
        other @ SendError::RetryAfterTooLong(_) => other,
    }
}

/// `base · 2^(attempt-1)`, capped, with up to 25 % jitter so many daemons do not retry in step.
fn backoff(attempt: u32, opts: &NotifyOptions) -> Duration {
    let exp = opts
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(opts.backoff_max);
    capped.mul_f64(1.0 - 0.25 * jitter())
}

fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = std::collections::hash_map::RandomState::new().hash_one(n) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

async fn attempt_once(http: &reqwest::Client, p: &Prepared, opts: &NotifyOptions) -> Attempt {
    let request = http
        .request(p.method.clone(), p.url.clone())
        .headers(p.headers.clone())
        .body(p.body.clone())
        .timeout(opts.timeout);
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(SendError::Transport(describe(e, opts)), None),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // The body matters for Slack and for error details; a little is enough.
    let body = match tokio::time::timeout(opts.timeout, read_capped(response, BODY_CAP)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if status.is_success() => {
            return Attempt::Retry(SendError::Transport(describe(e, opts)), None);
        }
        Err(_) if status.is_success() => {
            return Attempt::Retry(
                SendError::Transport("timed out reading the answer".into()),
                None,
            );
        }
        _ => Default::default(),
    };
    // Control characters would let a server forge log lines.
    let text = String::from_utf8_lossy(&body[..body.len().min(512)])
        .replace(|c: char| c.is_control(), " ")
        .trim()
        .to_owned();
    if status.is_success() {
        return accept(p.acceptance, &body, &text);
    }
    let err = SendError::Status {
        status: status.as_u16(),
        detail: if text.is_empty() {
            String::new()
        } else {
            format!(": {}", text.chars().take(200).collect::<String>())
        },
    };
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Attempt::Retry(err, retry_after)
    } else {
        Attempt::Fail(err)
    }
}

/// The most of an answer's body that is read; webhooks answer with a few bytes.
const BODY_CAP: usize = 16 * 1024;

async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

fn accept(acceptance: Acceptance, body: &[u8], text: &str) -> Attempt {
    match acceptance {
        Acceptance::Status => Attempt::Done,
        Acceptance::SlackWebhook => {
            if text.is_empty() || text == "ok" {
                Attempt::Done
            } else {
                Attempt::Fail(SendError::Refused(text.chars().take(200).collect()))
            }
        }
        Acceptance::SlackApi => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if v.get("ok").and_then(Value::as_bool) == Some(true) {
                return Attempt::Done;
            }
            let error = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no `ok` in the answer")
                .to_owned();
            if error == "ratelimited" {
                Attempt::Retry(SendError::Refused(error), None)
            } else {
                Attempt::Fail(SendError::Refused(error))
            }
        }
    }
}

/// The error and its causes, without the URL (which holds the token).
fn describe(e: reqwest::Error, opts: &NotifyOptions) -> String {
    if e.is_timeout() {
        return format!("timed out after {:?}", opts.timeout);
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// `Retry-After`: delay-seconds (Discord sends fractions) or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    let delta = when.duration_since(now);
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_fractions_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let future = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let text = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&future)
            .expect("prints");
        let got = parse_retry_after(&text).expect("parses");
        assert!(
            got > Duration::from_secs(100) && got <= Duration::from_secs(120),
            "{got:?}"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let opts = NotifyOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            ..NotifyOptions::default()
        };
        let b1 = backoff(1, &opts);
        let b2 = backoff(2, &opts);
        let b5 = backoff(5, &opts);
        assert!(b1 <= Duration::from_millis(100) && b1 >= Duration::from_millis(75));
        assert!(b2 <= Duration::from_millis(200) && b2 >= Duration::from_millis(150));
        assert!(b5 <= Duration::from_millis(350) && b5 >= Duration::from_millis(262));
    }
}
