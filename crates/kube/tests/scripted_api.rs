//! The client stack (kube client + our guard layer) against a scripted API server at the HTTP
//! layer: discovery of a Deployment, its pods and a Helm release record end to end, and the
//! read-only guard refusing a write before it leaves the process. The real cluster tests are in
//! cluster_e2e.rs; these need no cluster.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::client::Body;
use safe_updater_core::asset::AssetKind;
use safe_updater_kube::discover::KubeExtra;
use safe_updater_kube::{DiscoveryFilter, KubeError, KubeTarget, Mode};
use serde_json::json;

type Seen = Arc<Mutex<Vec<String>>>;

fn release_record() -> String {
    let release = json!({"name": "web", "namespace": "apps", "version": 2,
        "info": {"status": "deployed", "last_deployed": "2025-01-01T00:00:00Z"},
        "chart": {"metadata": {"name": "demo-web", "version": "0.1.1", "appVersion": "1.0.1"}},
        "config": {"replicaCount": 1}});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes()).expect("gzip");
    let helm_b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
    // The API server base64-encodes Secret data once more.
    base64::engine::general_purpose::STANDARD.encode(helm_b64)
}

/// Answers like an API server for a namespace `apps` holding one Deployment (with a ReplicaSet and
/// a pod) and a Helm release `web` at revisions 1 and 2.
fn answer(path: &str, query: &str) -> (u16, serde_json::Value) {
    let list = |kind: &str, items: serde_json::Value| json!({"kind": kind, "apiVersion": "v1", "metadata": {}, "items": items});
    let digest = format!("sha256:{}", "a".repeat(64));
    match path {
        "/apis/apps/v1/namespaces/apps/deployments" => (
            200,
            list(
                "DeploymentList",
                json!([{
            "metadata": {"name": "web", "namespace": "apps", "uid": "d1", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5001/demo/web:1.0.0"}]}}}}]),
            ),
        ),
        "/apis/apps/v1/namespaces/apps/replicasets" => (
            200,
            list(
                "ReplicaSetList",
                json!([{
            "metadata": {"name": "web-1", "namespace": "apps", "uid": "rs1",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1"}]}}]),
            ),
        ),
        "/api/v1/namespaces/apps/pods" => (
            200,
            list(
                "PodList",
                json!([{
            "metadata": {"name": "web-1-x", "namespace": "apps",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs1"}]},
            "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5001/demo/web:1.0.0"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "image": "127.0.0.1:5001/demo/web:1.0.0",
                    "imageID": format!("127.0.0.1:5001/demo/web@{digest}"), "ready": true, "restartCount": 0}]}}]),
            ),
        ),
        "/api/v1/namespaces/apps/secrets" => {
            assert!(query.contains("labelSelector=owner%3Dhelm"), "{query}");
            let meta = |rev: u32, status: &str| {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": format!("sh.helm.release.v1.web.v{rev}"), "namespace": "apps",
                "labels": {"owner": "helm", "name": "web", "version": rev.to_string(), "status": status}}})
            };
            (
                200,
                json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {},
                "items": [meta(1, "superseded"), meta(2, "deployed")]}),
            )
        }
        "/api/v1/namespaces/apps/secrets/sh.helm.release.v1.web.v2" => (
            200,
            json!({"kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "sh.helm.release.v1.web.v2", "namespace": "apps"},
            "type": "helm.sh/release.v1", "data": {"release": release_record()}}),
        ),
        p if p.starts_with("/apis/") || p.starts_with("/api/") => (200, list("List", json!([]))),
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"}),
        ),
    }
}

fn scripted(seen: Seen) -> tower_test::mock::Mock<Request<Body>, Response<Body>> {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            seen.lock()
                .expect("lock")
                .push(format!("{} {path}", req.method()));
            let (status, body) = answer(&path, &query);
            let resp = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string().into_bytes()))
                .expect("response");
            send.send_response(resp);
        }
    });
    mock
}

#[tokio::test]
async fn discovery_through_the_client_stack() {
    let seen: Seen = Arc::default();
    let target = KubeTarget::from_service(scripted(seen.clone()), "scripted", Mode::ReadOnly);
    let filter = DiscoveryFilter {
        include_namespaces: vec!["apps".into()],
        chart_repositories: [(
            "demo-web".to_owned(),
            "oci://127.0.0.1:5001/charts".to_owned(),
        )]
        .into(),
        ..Default::default()
    };
    let report = target
        .discover(&filter, "2025-01-02T00:00:00Z".parse().expect("ts"))
        .await
        .expect("discovers");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let ids: Vec<&str> = report.assets.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "k8s/scripted/apps/Deployment/web/web",
            "k8s/scripted/apps/HelmRelease/web"
        ]
    );
    let web = &report.assets[0];
    assert_eq!(
        web.digest.as_deref(),
        Some(format!("sha256:{}", "a".repeat(64)).as_str())
    );
    let chain: Vec<String> = KubeExtra::from_asset(web)
        .expect("extra")
        .owner_chain
        .into_iter()
        .map(|l| l.kind)
        .collect();
    assert_eq!(chain, ["Pod", "ReplicaSet", "Deployment"]);
    let rel = &report.assets[1];
    assert_eq!(rel.kind, AssetKind::HelmRelease);
    assert_eq!(rel.image, "127.0.0.1:5001/charts/demo-web:0.1.1");
    assert_eq!(report.releases[0].revision, 2);
    assert_eq!(report.releases[0].config, json!({"replicaCount": 1}));
    // Only the newest revision's record was fetched, and nothing but reads was sent.
    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.iter().any(|s| s.ends_with(".v1")), "{seen:?}");
    assert!(seen.iter().all(|s| s.starts_with("GET ")), "{seen:?}");
}

#[tokio::test]
async fn read_only_refuses_a_write_before_it_leaves_the_process() {
    let seen: Seen = Arc::default();
    let target = KubeTarget::from_service(scripted(seen.clone()), "scripted", Mode::ReadOnly);
    let api: Api<Deployment> = Api::namespaced(target.client().clone(), "apps");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x:2"}]}}}});
    let err = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect_err("refused");
    let err = KubeError::api("patch", err);
    assert!(
        matches!(err, KubeError::ReadOnly { ref verb, .. } if verb == "patch"),
        "{err}"
    );
    // An undeclared call is refused in update mode too.
    let update = KubeTarget::from_service(scripted(seen.clone()), "scripted", Mode::Update);
    let deployments: Api<Deployment> = Api::namespaced(update.client().clone(), "apps");
    let err = KubeError::api(
        "delete",
        deployments
            .delete("web", &Default::default())
            .await
            .expect_err("refused"),
    );
    assert!(matches!(err, KubeError::Undeclared { .. }), "{err}");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a refused request reached the server"
    );
}
