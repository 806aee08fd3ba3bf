//! Webhooks that cannot be turned into floods: a signed payload listing thousands of pushes
//! triggers one check per repository and writes one log line; one request triggers at most
//! 100 repositories, all requests at most 600 a minute; a delivery seen before is refused.
//! Its own test binary: it installs the global tracing subscriber to count log lines.

mod common;

use common::{LogBuf, MemBackend, TestServer, client, config, secret};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "dist-flood-secret-77aa";

/// A distribution notification envelope: `pushes` manifest pushes, over `repos` repositories,
/// each event with its own id (as the registry sends them).
fn envelope(pushes: usize, repos: usize, salt: &str) -> Vec<u8> {
    let events: Vec<Value> = (0..pushes)
        .map(|i| {
            json!({
                "id": format!("{salt}-{i}"),
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "repository": format!("acme/app-{}", i % repos),
                    "tag": format!("1.0.{i}"),
                },
                "request": { "host": "registry.acme.example:5000" },
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "events": events })).expect("json")
}

async fn post(s: &TestServer, body: Vec<u8>) -> (StatusCode, Value) {
    let res = client()
        .post(s.url("/webhooks/distribution"))
        .header("authorization", SECRET)
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .body(body)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_pushes_is_one_check_per_repository_and_one_log_line() {
    let buf = LogBuf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let mut cfg = config();
    cfg.webhooks.distribution = secret(SECRET);
    let s = TestServer::start(cfg, MemBackend::default()).await;

    // ~1.6 MB, 9,000 pushes of 3 repositories.
    let big = envelope(9_000, 3, "flood");
    assert!(
        big.len() > 1_500_000 && big.len() < 2_000_000,
        "{}",
        big.len()
    );
    let lines_before = String::from_utf8_lossy(&buf.0.lock().expect("buf"))
        .lines()
        .count();
    let (status, body) = post(&s, big.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    assert_eq!(s.backend.pushes().len(), 3);
    let log = String::from_utf8_lossy(&buf.0.lock().expect("buf")).to_string();
    let webhook_lines = log
        .lines()
        .skip(lines_before)
        .filter(|l| l.contains("safe_updater_server::webhooks"))
        .count();
    assert_eq!(webhook_lines, 1, "one line per accepted request:\n{log}");

    // The same delivery again: recognised, nothing triggered.
    let (status, body) = post(&s, big).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 0, "{body}");
    assert_eq!(s.backend.pushes().len(), 3, "a replay triggers nothing");

    // 150 repositories in one request: 100 triggered, the rest named as left to the cycle.
    let (status, body) = post(&s, envelope(150, 150, "wide")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 100, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|t| t.contains("50 of 150")),
        "{body}"
    );

    // The minute's budget (600) runs out: 103 so far, then five more of 100 fill it, and the
    // next request is refused with 429.
    for i in 0..5 {
        let (status, body) = post(&s, envelope(100, 100, &format!("burst{i}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{i}: {body}");
    }
    let (status, body) = post(&s, envelope(10, 10, "late")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(s.backend.pushes().len() <= 600);
    let m = s.metrics.render().expect("render");
    assert!(
        m.contains(
            "safe_updater_webhook_requests_total{source=\"distribution\",status=\"replayed\"} 1"
        ),
        "{m}"
    );
}
