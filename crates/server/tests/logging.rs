//! The request log never contains an API token or a webhook secret, whether it came in a
//! header, the query string or was wrong. Runs alone in its own binary because it installs the
//! global tracing subscriber (TRACE, every target).

mod common;

use common::{ALICE_TOKEN, BOB_TOKEN, LogBuf, MemBackend, TestServer, client, config, secret};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn no_token_or_secret_reaches_the_log() {
    let buf = LogBuf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let quay = "quay-secret-in-the-url-71c2";
    let dockerhub = "dockerhub-secret-in-the-url-0aa9";
    let harbor = "harbor-auth-header-secret-5e3d";
    let distribution = "distribution-auth-header-secret-19bf";
    let guessed = "guessed-token-that-is-wrong-8f8f";
    let mut cfg = config();
    cfg.webhooks.quay = secret(quay);
    cfg.webhooks.dockerhub = secret(dockerhub);
    cfg.webhooks.harbor = secret(harbor);
    cfg.webhooks.distribution = secret(distribution);
    tracing::info!(config = ?cfg, "starting with this configuration");
    let s = TestServer::start(cfg, MemBackend::with_fixtures()).await;
    let c = client();

    let res = c
        .get(s.url("/api/v1/approvals"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = c
        .post(s.url("/api/v1/approvals/docker/local/web@2.0.0/reject"))
        .bearer_auth(BOB_TOKEN)
        .json(&json!({"reason": "not this week"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = c
        .get(s.url("/api/v1/assets"))
        .bearer_auth(guessed)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c
        .post(s.url("/webhooks/quay"))
        .query(&[("secret", quay)])
        .body(
            r#"{"repository":"acme/web","docker_url":"quay.io/acme/web","updated_tags":["1.0.0"]}"#,
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = c
        .post(s.url("/webhooks/dockerhub"))
        .query(&[("secret", format!("{dockerhub}-wrong"))])
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c
        .post(s.url("/webhooks/harbor"))
        .header("authorization", harbor)
        .body("not json")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = c
        .post(s.url("/webhooks/distribution"))
        .header("authorization", format!("Bearer {distribution}"))
        .body(r#"{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"acme/web","tag":"1.0.0"},"request":{"host":"r.example"}}]}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    s.stop().await.expect("shutdown");

    let log = String::from_utf8(buf.0.lock().expect("log buffer").clone()).expect("UTF-8 log");
    // The log is there and says what happened ...
    for want in [
        "path=\"/api/v1/approvals\" status=200",
        "path=\"/api/v1/assets\" status=401",
        "path=\"/webhooks/quay\" status=202",
        "path=\"/webhooks/dockerhub\" status=401",
        "path=\"/webhooks/harbor\" status=400",
        "registry push announced",
    ] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }
    // ... and no secret, in any form, nor the query string that carried one.
    for secret in [
        ALICE_TOKEN,
        BOB_TOKEN,
        guessed,
        quay,
        dockerhub,
        harbor,
        distribution,
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
    assert!(
        !log.contains("secret="),
        "the log contains a query string:\n{log}"
    );
    assert!(
        !log.to_ascii_lowercase().contains("authorization:"),
        "{log}"
    );
}
