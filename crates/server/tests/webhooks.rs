//! Registry push webhooks over real HTTP with each vendor's payload shape (tests/data/webhooks):
//! what reaches the backend, authentication per source, garbage, disabled sources.

mod common;

use std::path::Path;

use common::{MemBackend, TestServer, client, config, secret};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use safe_updater_server::{PushEvent, ServerConfig, WebhookSource};
use serde_json::Value;
use sha2::Sha256;

const DOCKERHUB: &str = "dh-secret-6c1f0e";
const GITHUB: &str = "gh-secret-91ab77";
const HARBOR: &str = "harbor-secret-2f0c55";
const QUAY: &str = "quay-secret-d83e19";
const DISTRIBUTION: &str = "dist-secret-44aa0b";

fn cfg() -> ServerConfig {
    let mut c = config();
    c.webhooks.dockerhub = secret(DOCKERHUB);
    c.webhooks.github = secret(GITHUB);
    c.webhooks.harbor = secret(HARBOR);
    c.webhooks.quay = secret(QUAY);
    c.webhooks.distribution = secret(DISTRIBUTION);
    c
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/webhooks")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn ev(
    source: WebhookSource,
    registry: Option<&str>,
    repository: &str,
    tag: Option<&str>,
    digest: Option<&str>,
) -> PushEvent {
    PushEvent {
        registry: registry.map(str::to_owned),
        repository: repository.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
        source,
    }
}

/// Posts a fixture the way its sender would (with the right credentials).
async fn deliver(
    s: &TestServer,
    source: &str,
    file: &str,
    github_event: Option<&str>,
) -> (StatusCode, Value) {
    let body = fixture(file);
    let c = client();
    let mut req = c
        .post(s.url(&format!("/webhooks/{source}")))
        .header("content-type", "application/json");
    match source {
        "dockerhub" => req = req.query(&[("secret", DOCKERHUB)]),
        "quay" => req = req.query(&[("secret", QUAY)]),
        "harbor" => req = req.header("authorization", HARBOR),
        "distribution" => {
            req = req.header("authorization", DISTRIBUTION).header(
                "content-type",
                "application/vnd.docker.distribution.events.v1+json",
            )
        }
        "github" => {
            req = req
                .header("x-github-event", github_event.unwrap_or("package"))
                // GitHub gives every delivery an id of its own.
                .header("x-github-delivery", format!("72d3162e-cc78-11e3-{file}"))
                .header("x-hub-signature-256", sign(GITHUB, &body))
        }
        other => panic!("no delivery recipe for {other}"),
    }
    let res = req.body(body).send().await.expect("request");
    let status = res.status();
    (status, res.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_vendor_payload_becomes_the_push_events_it_describes() {
    use WebhookSource::*;
    let s = TestServer::start(cfg(), MemBackend::default()).await;
    let cases: Vec<(&str, &str, Option<&str>, Vec<PushEvent>)> = vec![
        (
            "dockerhub",
            "dockerhub-push.json",
            None,
            vec![ev(
                DockerHub,
                Some("docker.io"),
                "acme/web",
                Some("1.4.2"),
                None,
            )],
        ),
        (
            "github",
            "github-package-published.json",
            Some("package"),
            vec![ev(
                GitHub,
                Some("ghcr.io"),
                "acme/web",
                Some("1.4.2"),
                Some("sha256:1b0f6e2f8b1a4e3f9a7c5d2b6e8f0a1c3d5e7f9b2a4c6e8d0f1a3b5c7d9e1f20"),
            )],
        ),
        (
            "github",
            "github-registry-package-published.json",
            Some("registry_package"),
            vec![ev(
                GitHub,
                Some("ghcr.io"),
                "octotest/hello-world",
                None,
                Some("sha256:0c9f3e5a7b2d4f6a8c1e3b5d7f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f5a"),
            )],
        ),
        ("github", "github-package-npm.json", Some("package"), vec![]),
        ("github", "github-ping.json", Some("ping"), vec![]),
        (
            "harbor",
            "harbor-push-artifact.json",
            None,
            // Two artifacts of one repository: one check of it.
            vec![ev(
                Harbor,
                Some("harbor.acme.example"),
                "acme/web",
                Some("1.4.2"),
                Some("sha256:5d41402abc4b2a76b9719d911017c592ae5d41402abc4b2a76b9719d911017c5"),
            )],
        ),
        (
            "harbor",
            "harbor-cloudevents-push.json",
            None,
            vec![ev(
                Harbor,
                Some("harbor.acme.example:8443"),
                "acme/api",
                Some("1.4.2"),
                Some("sha256:5d41402abc4b2a76b9719d911017c592ae5d41402abc4b2a76b9719d911017c5"),
            )],
        ),
        ("harbor", "harbor-pull-artifact.json", None, vec![]),
        (
            "quay",
            "quay-repository-push.json",
            None,
            // Two tags of one repository: one check of it.
            vec![ev(Quay, Some("quay.io"), "acme/web", Some("1.4.2"), None)],
        ),
        (
            "quay",
            "quay-repository-push-legacy.json",
            None,
            vec![ev(
                Quay,
                Some("quay.acme.example"),
                "acme/worker",
                Some("2.1.0"),
                None,
            )],
        ),
        (
            "distribution",
            "distribution-events.json",
            None,
            vec![ev(
                Distribution,
                Some("registry.acme.example:5000"),
                "acme/web",
                Some("1.4.2"),
                Some("sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"),
            )],
        ),
        (
            "distribution",
            "distribution-2.8-real-push.json",
            None,
            vec![ev(
                Distribution,
                Some("127.0.0.1:18932"),
                "capture/web",
                Some("1.0.0"),
                Some("sha256:565565222478b9b8b7ce832976210e0e219583ec05633a84b0d656745b287754"),
            )],
        ),
    ];
    for (source, file, gh_event, want) in cases {
        let before = s.backend.pushes().len();
        let (status, body) = deliver(&s, source, file, gh_event).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{file}: {body}");
        assert_eq!(body["accepted"], want.len(), "{file}: {body}");
        if want.is_empty() {
            assert!(body["ignored"].is_string(), "{file}: {body}");
        }
        assert_eq!(s.backend.pushes()[before..], want[..], "{file}");
    }
    let metrics = s.metrics.render().expect("render");
    assert!(
        metrics.contains(
            "safe_updater_webhook_requests_total{source=\"github\",status=\"accepted\"} 4"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_credentials_are_401_and_reach_nothing() {
    let s = TestServer::start(cfg(), MemBackend::default()).await;
    let c = client();
    let send = |path: &str, file: &str| c.post(s.url(path)).body(fixture(file));
    let body = fixture("github-package-published.json");

    let attempts: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "github: no signature",
            send("/webhooks/github", "github-package-published.json")
                .header("x-github-event", "package"),
        ),
        (
            "github: signed with another key",
            send("/webhooks/github", "github-package-published.json")
                .header("x-github-event", "package")
                .header("x-hub-signature-256", sign("not-the-secret", &body)),
        ),
        (
            "github: body changed after signing",
            c.post(s.url("/webhooks/github"))
                .header("x-github-event", "package")
                .header("x-hub-signature-256", sign(GITHUB, &body))
                .body(String::from_utf8_lossy(&body).replace("1.4.2", "6.6.6")),
        ),
        (
            "github: sha1 signature only",
            send("/webhooks/github", "github-package-published.json")
                .header("x-github-event", "package")
                .header(
                    "x-hub-signature",
                    "sha1=0123456789abcdef0123456789abcdef01234567",
                ),
        ),
        (
            "harbor: no header",
            send("/webhooks/harbor", "harbor-push-artifact.json"),
        ),
        (
            "harbor: wrong header",
            send("/webhooks/harbor", "harbor-push-artifact.json")
                .header("authorization", "harbor-secret-2f0c5"),
        ),
        (
            "distribution: wrong header",
            send("/webhooks/distribution", "distribution-events.json")
                .header("authorization", "Bearer nope"),
        ),
        (
            "quay: no secret",
            send("/webhooks/quay", "quay-repository-push.json"),
        ),
        (
            "quay: wrong secret",
            send("/webhooks/quay", "quay-repository-push.json").query(&[("secret", DOCKERHUB)]),
        ),
        (
            "dockerhub: secret in a header is not enough",
            send("/webhooks/dockerhub", "dockerhub-push.json").header("authorization", DOCKERHUB),
        ),
    ];
    for (what, req) in attempts {
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        let b: Value = res.json().await.expect("JSON");
        assert!(b["error"].is_string(), "{what}: {b}");
    }
    assert!(s.backend.pushes().is_empty());

    // "Bearer <secret>" is accepted where the header is compared.
    let res = send("/webhooks/distribution", "distribution-events.json")
        .header("authorization", format!("Bearer {DISTRIBUTION}"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let m = s.metrics.render().expect("render");
    assert!(
        m.contains(
            "safe_updater_webhook_requests_total{source=\"github\",status=\"unauthorized\"} 4"
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_400_with_a_reason_and_unknown_or_disabled_sources_404() {
    let mut cfg = cfg();
    cfg.webhooks.quay = None;
    let s = TestServer::start(cfg, MemBackend::default()).await;
    let c = client();

    let cases = [
        ("harbor", b"this is not json".to_vec(), "not a harbor push notification: the body is not JSON"),
        ("harbor", b"[1,2]".to_vec(), "not a harbor push notification: the body is not a JSON object"),
        ("harbor", br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[]}}"#.to_vec(), "it has no event_data.repository.repo_full_name"),
        ("distribution", br#"{"event":[]}"#.to_vec(), "not a distribution push notification: it has no events"),
        ("distribution", br#"{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json"}}]}"#.to_vec(), "it has no events[].target.repository"),
    ];
    for (source, body, want) in cases {
        let res = c
            .post(s.url(&format!("/webhooks/{source}")))
            .header(
                "authorization",
                if source == "harbor" {
                    HARBOR
                } else {
                    DISTRIBUTION
                },
            )
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{want}");
        let b: Value = res.json().await.expect("JSON");
        assert!(
            b["error"].as_str().is_some_and(|e| e.contains(want)),
            "{want} vs {b}"
        );
    }
    let body = br#"{"repository":{"name":"web"}}"#;
    let res = c
        .post(s.url("/webhooks/dockerhub"))
        .query(&[("secret", DOCKERHUB)])
        .body(&body[..])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let b: Value = res.json().await.expect("JSON");
    assert_eq!(
        b["error"],
        "not a dockerhub push notification: it has no repository.repo_name"
    );

    let res = c
        .post(s.url("/webhooks/quay"))
        .query(&[("secret", QUAY)])
        .body(fixture("quay-repository-push.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let b: Value = res.json().await.expect("JSON");
    assert_eq!(b["error"], "the quay webhook is not enabled");
    let res = c
        .post(s.url("/webhooks/gitlab"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let b: Value = res.json().await.expect("JSON");
    assert!(
        b["hint"]
            .as_str()
            .is_some_and(|h| h.contains("distribution"))
    );
    let res = c
        .get(s.url("/webhooks/harbor"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(s.backend.pushes().is_empty());
}
