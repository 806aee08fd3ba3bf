//! No secret reaches a log line, even when a server echoes the URL (with its token) back.
//! Alone in its binary: a thread-local subscriber only sees every event when no other test
//! runs beside it (tracing caches per-callsite interest across threads).

mod common;

use std::time::Duration;

use common::*;
use safe_updater_notify::{Channel, EventKind, Notifier};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn no_secret_in_logs_even_when_servers_echo_the_url() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path_regex("^/retry-me/"))
        .respond_with(ResponseTemplate::new(500).set_body_string("try again"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(EchoUrl)
        .mount(&server)
        .await;
    let refused = refused_port();
    let channels = vec![
        channel(SLACK_HOOK, &server),
        channel(SLACK_BOT, &server),
        channel(&discord_url(), &server),
        channel(&teams_connector_url(), &server),
        channel(&teams_workflow_url(), &server),
        channel(
            "generic://hooks.example.com/x?token=GenericQuerySecret&@XApiKey=GenericHeaderSecret",
            &server,
        ),
        Channel::parse(&format!(
            "http://127.0.0.1:{refused}/{DISCORD_TOKEN}?k=GenericQuerySecret"
        ))
        .expect("refused"),
        Channel::parse(&format!("{}/retry-me/{DISCORD_TOKEN}", server.uri())).expect("retry"),
    ];
    let notifier = Notifier::new(channels, options()).expect("notifier");
    tracing::info!(channels = ?notifier.channels(), notifier = ?notifier, "configured");
    notifier.notify(event(EventKind::Failed));
    let report = notifier.flush(Duration::from_secs(10)).await;
    assert!(report.completed, "{report:?}");
    assert_eq!(report.stats.total.failed, 8, "{report:?}");
    assert!(report.stats.total.retries >= 4, "{report:?}");

    // Servers did receive the secrets (the echo is real) ...
    let echoed = server.received_requests().await.expect("recording");
    assert!(
        echoed
            .iter()
            .any(|r| r.url.as_str().contains(DISCORD_TOKEN))
    );
    // ... yet the log, which reports each failure and retry, holds none of them.
    let text = String::from_utf8(log.0.lock().expect("lock").clone()).expect("utf8");
    assert_eq!(text.matches("notification failed").count(), 8, "{text}");
    assert!(text.contains("notification will be retried"), "{text}");
    assert!(text.contains("HTTP 404: no webhook at http://"), "{text}");
    assert!(text.contains("***"), "{text}");
    // The server's newline did not start a line of its own in the log.
    assert!(text.contains(" FORGED log line"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
    assert_clean("log", &text);
    assert_clean("stats", &format!("{:?}", notifier.stats()));
}
