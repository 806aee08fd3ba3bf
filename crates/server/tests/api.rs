//! The approvals API over real HTTP against the in-memory backend: authentication, identity
//! pass-through, error mapping, ids with slashes, health and readiness, graceful shutdown.

mod common;

use common::{ALICE_TOKEN, BOB_TOKEN, Call, MemBackend, TestServer, client, config};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start() -> TestServer {
    TestServer::start(config(), MemBackend::with_fixtures()).await
}

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("JSON body")
}

#[tokio::test(flavor = "multi_thread")]
async fn without_or_with_a_wrong_token_the_api_answers_401_and_calls_nothing() {
    let s = start().await;
    let c = client();
    let url = s.url("/api/v1/approvals/docker/local/web@2.0.0/approve");

    let res = c.post(&url).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"safe-updater\"")
    );
    let b = body(res).await;
    assert_eq!(b["error"], "missing Authorization header");
    assert!(b["hint"].as_str().is_some_and(|h| h.contains("Bearer")));

    for wrong in [
        "Bearer not-a-token",
        "Bearer alice-token-3f9a1",
        &format!("Basic {ALICE_TOKEN}"),
    ] {
        let res = c
            .post(&url)
            .header("Authorization", wrong)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let res = c
        .get(s.url("/api/v1/approvals"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(s.backend.calls().is_empty());
    assert_eq!(s.backend.lock().pending.len(), 2, "nothing was approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_token_acts_as_its_own_operator() {
    let s = start().await;
    let c = client();

    let res = c
        .get(s.url("/api/v1/approvals"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let b = body(res).await;
    let ids: Vec<&str> = b["approvals"]
        .as_array()
        .expect("approvals array")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "docker/local/web@2.0.0",
            "k8s/prod/shop/Deployment/api/api@1.5.0"
        ]
    );
    assert_eq!(b["approvals"][0]["candidate"], "2.0.0");
    assert_eq!(b["approvals"][0]["requested_at"], "2026-11-20T08:00:00Z");

    // Alice approves one (slashes in the id as they are) ...
    let res = c
        .post(s.url("/api/v1/approvals/docker/local/web@2.0.0/approve"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body(res).await,
        json!({"id": "docker/local/web@2.0.0", "action": "approve", "operator": "alice"})
    );
    // ... Bob rejects the other (id percent-encoded), with a reason.
    let res = c
        .post(s.url("/api/v1/approvals/k8s%2Fprod%2Fshop%2FDeployment%2Fapi%2Fapi%401.5.0/reject"))
        .bearer_auth(BOB_TOKEN)
        .json(&json!({"reason": "  breaks the checkout flow  "}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["operator"], "bob");

    assert_eq!(
        s.backend.calls(),
        vec![
            Call::Approve {
                id: "docker/local/web@2.0.0".into(),
                operator: "alice".into()
            },
            Call::Reject {
                id: "k8s/prod/shop/Deployment/api/api@1.5.0".into(),
                operator: "bob".into(),
                reason: "breaks the checkout flow".into(),
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_are_404_decided_ones_409_and_a_rejection_needs_a_reason() {
    let s = start().await;
    let c = client();
    let post = |path: &str| c.post(s.url(path)).bearer_auth(ALICE_TOKEN);

    let res = post("/api/v1/approvals/docker/local/nope@9.9.9/approve")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(res).await["error"],
        "no pending approval 'docker/local/nope@9.9.9'"
    );

    for (payload, what) in [
        (None, "no body"),
        (Some(json!({})), "no reason"),
        (Some(json!({"reason": "   "})), "blank reason"),
    ] {
        let mut req = post("/api/v1/approvals/docker/local/web@2.0.0/reject");
        if let Some(p) = payload {
            req = req.json(&p);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        let b = body(res).await;
        assert_eq!(b["error"], "a rejection needs a reason", "{what}");
        assert!(b["hint"].as_str().is_some_and(|h| h.contains("reason")));
    }
    let res = post("/api/v1/approvals/docker/local/web@2.0.0/reject")
        .json(&json!({"reson": "typo"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        body(res).await["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown field `reson`"))
    );
    let res = post("/api/v1/approvals/docker/local/web@2.0.0/reject")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = post("/api/v1/approvals/docker/local/web@2.0.0/approve")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = post("/api/v1/approvals/docker/local/web@2.0.0/approve")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CONFLICT);

    let res = post("/api/v1/approvals/docker/local/web@2.0.0/frobnicate")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        body(res).await["hint"]
            .as_str()
            .is_some_and(|h| h.contains("approve|reject"))
    );
    assert_eq!(
        s.backend.calls().len(),
        1,
        "only the one approval reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn asset_actions_work_with_slash_containing_ids() {
    let s = start().await;
    let c = client();
    let k8s = "k8s/prod/shop/Deployment/api/api";

    let res = c
        .get(s.url("/api/v1/assets"))
        .bearer_auth(BOB_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["assets"][1]["id"], k8s);

    let cases = [
        (
            "POST",
            "/api/v1/assets/docker/local/web/skip".to_owned(),
            Some(json!({"version": "1.0.2"})),
            "skip",
        ),
        (
            "POST",
            "/api/v1/assets/docker%2Flocal%2Fweb/snooze".to_owned(),
            Some(json!({"until": "2026-12-01T00:00:00Z"})),
            "snooze",
        ),
        (
            "POST",
            format!("/api/v1/assets/{k8s}/pin"),
            Some(json!({"constraint": "~1.4"})),
            "pin",
        ),
        ("DELETE", format!("/api/v1/assets/{k8s}/pin"), None, "unpin"),
        (
            "DELETE",
            "/api/v1/assets/docker/local/web/snooze".to_owned(),
            None,
            "unsnooze",
        ),
    ];
    for (method, path, payload, action) in cases {
        let mut req = match method {
            "POST" => c.post(s.url(&path)),
            _ => c.delete(s.url(&path)),
        }
        .bearer_auth(BOB_TOKEN);
        if let Some(p) = payload {
            req = req.json(&p);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{method} {path}");
        assert_eq!(body(res).await["action"], action, "{method} {path}");
    }
    assert_eq!(
        s.backend.calls(),
        vec![
            Call::Skip {
                asset: "docker/local/web".into(),
                version: "1.0.2".into(),
                operator: "bob".into()
            },
            Call::Snooze {
                asset: "docker/local/web".into(),
                until: "2026-12-01T00:00:00Z".parse().expect("ts"),
                operator: "bob".into(),
            },
            Call::Pin {
                asset: k8s.into(),
                constraint: "~1.4".into(),
                operator: "bob".into()
            },
            Call::Unpin {
                asset: k8s.into(),
                operator: "bob".into()
            },
            Call::Unsnooze {
                asset: "docker/local/web".into(),
                operator: "bob".into()
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn asset_action_errors_name_the_problem() {
    let s = start().await;
    let c = client();
    let post =
        |path: &str, payload: Value| c.post(s.url(path)).bearer_auth(ALICE_TOKEN).json(&payload);

    let res = post(
        "/api/v1/assets/docker/local/ghost/skip",
        json!({"version": "1.0.2"}),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let b = body(res).await;
    assert_eq!(b["error"], "no asset 'docker/local/ghost'");
    assert_eq!(b["hint"], "GET /api/v1/assets lists them");

    let res = post(
        "/api/v1/assets/docker/local/web/snooze",
        json!({"until": "next tuesday"}),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        body(res).await["hint"]
            .as_str()
            .is_some_and(|h| h.contains("RFC 3339"))
    );

    let res = post(
        "/api/v1/assets/docker/local/web/skip",
        json!({"version": ""}),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(res).await["error"], "'version' is empty");

    let res = post(
        "/api/v1/assets/docker/local/web/pin",
        json!({"constraint": "garbage"}),
    )
    .send()
    .await
    .expect("request");
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "the backend's Invalid maps to 400"
    );
    assert_eq!(body(res).await["hint"], "e.g. ~1.2, ^2, >=1.4 <2");

    let res = c
        .delete(s.url("/api/v1/assets/docker/local/web/skip"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "skip cannot be deleted"
    );
    assert!(s.backend.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_configured_tokens_the_api_is_forbidden() {
    let mut cfg = config();
    cfg.tokens.clear();
    let s = TestServer::start(cfg, MemBackend::with_fixtures()).await;
    let res = client()
        .get(s.url("/api/v1/approvals"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        body(res).await["hint"]
            .as_str()
            .is_some_and(|h| h.contains("server.tokens"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_is_always_200_and_readyz_follows_the_daemon() {
    let s = start().await;
    let c = client();
    let res = c.get(s.url("/healthz")).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["status"], "ok");

    let res = c.get(s.url("/readyz")).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body(res).await,
        json!({"ready": false, "waiting_for": ["store", "first_cycle"]})
    );
    s.readiness.set_store_open();
    let res = c.get(s.url("/readyz")).send().await.expect("request");
    assert_eq!(body(res).await["waiting_for"], json!(["first_cycle"]));
    s.readiness.set_cycle_started();
    let res = c.get(s.url("/readyz")).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, json!({"ready": true}));
    s.readiness.set_shutting_down();
    let res = c.get(s.url("/readyz")).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    let res = c.get(s.url("/nope")).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(res).await["error"], "no such endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_and_frees_the_port() {
    let s = start().await;
    let addr = s.addr;
    let res = client()
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await.expect("serve returns Ok after shutdown");
    let err = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect_err("nothing listens after shutdown");
    assert!(err.is_connect(), "{err}");
}

#[test]
fn config_validation_reports_every_problem() {
    use safe_updater_server::{ApiToken, ConfigError, Secret, WebhookSource};
    let mut cfg = config();
    cfg.tokens = vec![
        ApiToken::new("alice", "same"),
        ApiToken::new("bob", "same"),
        ApiToken::new("", "x1"),
        ApiToken::new("alice", "x2"),
        ApiToken::new("carol", ""),
    ];
    cfg.webhooks.quay = Some(Secret::new(""));
    let errors = cfg.validate().expect_err("invalid");
    assert_eq!(
        errors,
        vec![
            ConfigError::SharedToken {
                first: "alice".into(),
                second: "bob".into()
            },
            ConfigError::EmptyIdentity { index: 2 },
            ConfigError::DuplicateIdentity {
                identity: "alice".into()
            },
            ConfigError::EmptyToken {
                index: 4,
                identity: "carol".into()
            },
            ConfigError::EmptyWebhookSecret {
                webhook: WebhookSource::Quay
            },
        ]
    );
    assert!(
        !format!("{cfg:?}").contains("same"),
        "Debug never shows a secret"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_replaces_tokens_and_webhook_secrets_while_serving() {
    let s = start().await;
    let c = client();
    let get = |token: &'static str| {
        let req = c
            .get(s.url("/api/v1/approvals"))
            .header("Authorization", format!("Bearer {token}"));
        async move { req.send().await.expect("request").status() }
    };
    assert_eq!(get(ALICE_TOKEN).await, StatusCode::OK);
    let hook = |c: &reqwest::Client| {
        c.post(s.url("/webhooks/github"))
            .header("X-GitHub-Event", "package")
            .header("X-Hub-Signature-256", "sha256=00")
            .body("{}")
            .send()
    };
    assert_eq!(
        hook(&c).await.expect("request").status(),
        StatusCode::NOT_FOUND,
        "not enabled yet"
    );

    let mut next = config();
    next.tokens = vec![safe_updater_server::ApiToken::new(
        "carol",
        "carol-token-8d2e4",
    )];
    next.webhooks.github = common::secret("gh-secret-1");
    s.secrets.replace(&next);

    assert_eq!(
        get(ALICE_TOKEN).await,
        StatusCode::UNAUTHORIZED,
        "the old token is gone"
    );
    assert_eq!(get(BOB_TOKEN).await, StatusCode::UNAUTHORIZED);
    assert_eq!(get("carol-token-8d2e4").await, StatusCode::OK);
    assert_eq!(
        hook(&c).await.expect("request").status(),
        StatusCode::UNAUTHORIZED,
        "enabled now, and the wrong signature is refused"
    );
}
