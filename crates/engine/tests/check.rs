//! The check step over the in-memory registry double and a real SQLite store: which requests it
//! makes, what it decides, what it records.

use std::collections::BTreeMap;

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config::{self, Config};
use safe_updater_core::decide::Verdict;
use safe_updater_core::reference::ImageRef;
use safe_updater_engine::check;
use safe_updater_registry::{Cycle, ErrorKind, FakeRegistry, Platform};
use safe_updater_store::{Store, UpdateOutcome, UpdateStart};

fn amd64() -> Vec<Platform> {
    vec![Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
        os_version: None,
    }]
}

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().expect("timestamp")
}

fn asset(name: &str, image: &str, digest: Option<&str>, labels: &[(&str, &str)]) -> Asset {
    Asset {
        id: format!("docker/local/{name}"),
        kind: AssetKind::Container,
        location: "local".into(),
        namespace: None,
        name: name.into(),
        container: None,
        image: image.into(),
        digest: digest.map(str::to_owned),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        annotations: BTreeMap::new(),
        first_seen: now(),
        last_seen: now(),
        extra: serde_json::json!({
            "container_id": "c0ffee", "image_id": "sha256:00", "repo_digests": [], "state": "running",
            "ports": [], "compose_depends_on": [],
            "platform": {"os": "linux", "architecture": "amd64"}
        }),
    }
}

fn registry_with(repo: &str, tags: &[(&str, &str)], platforms: &[Platform]) -> FakeRegistry {
    let fake = FakeRegistry::new();
    let image = ImageRef::parse(repo).expect("repo");
    for (tag, digest) in tags {
        fake.add_tag(&image, tag, digest, platforms);
    }
    fake
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn config(text: &str) -> Config {
    config::load("test", text, &[]).expect("config")
}

#[tokio::test]
async fn decides_per_asset_and_asks_each_repository_once() {
    let d = [digest(1), digest(2), digest(3), digest(4)];
    let fake = registry_with(
        "127.0.0.1:5001/demo/web",
        &[
            ("1.0.0", &d[0]),
            ("1.0.1", &d[1]),
            ("1.1.0", &d[2]),
            ("2.0.0", &d[3]),
            ("latest", &d[0]),
        ],
        &amd64(),
    );
    let mut store = Store::open_in_memory().expect("store");
    let assets: Vec<Asset> = (0..10)
        .map(|i| {
            asset(
                &format!("web{i}"),
                "127.0.0.1:5001/demo/web:1.0.0",
                Some(&d[0]),
                &[],
            )
        })
        .collect();
    store.upsert_assets(&assets).expect("upsert");
    let cycle = Cycle::new(fake.clone());
    let report = check(
        &Config::builtin(),
        &mut store,
        &cycle,
        now(),
        "test",
        "cid-1",
    )
    .await
    .expect("check");

    assert_eq!(report.checks.len(), 10);
    assert_eq!(report.errors(), 0);
    for c in &report.checks {
        let e = c.evaluation.as_ref().expect("evaluation");
        assert_eq!(e.act_on.as_deref(), Some("1.0.1"), "{c:?}");
        let verdicts: Vec<(&str, Verdict)> = e
            .candidates
            .iter()
            .map(|c| (c.tag.as_str(), c.decision))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("1.0.1", Verdict::Approve),
                ("1.1.0", Verdict::PendingReview),
                ("2.0.0", Verdict::ManualApproval)
            ]
        );
    }
    // Ten containers, one repository: one tag list, one HEAD for the shared current tag, and
    // one platform check for the shared candidate — nothing per container.
    assert_eq!(report.requests.tags_page, 1, "{:?}", report.requests);
    assert_eq!(report.requests.head_manifest, 2, "{:?}", report.requests);

    // Decisions are on record, each once, with the cycle's correlation id.
    let decisions = store
        .decisions(Some("docker/local/web0"), 10)
        .expect("decisions");
    assert_eq!(decisions.len(), 3);
    assert!(
        decisions
            .iter()
            .all(|d| d.correlation_id.as_deref() == Some("cid-1"))
    );
    // A second cycle with the same facts writes nothing new.
    let cycle = Cycle::new(fake);
    check(
        &Config::builtin(),
        &mut store,
        &cycle,
        now(),
        "test",
        "cid-2",
    )
    .await
    .expect("check");
    assert_eq!(
        store
            .decisions(Some("docker/local/web0"), 10)
            .expect("decisions")
            .len(),
        3
    );
}

#[tokio::test]
async fn a_candidate_without_the_containers_platform_is_never_proposed() {
    let fake = FakeRegistry::new();
    let image = ImageRef::parse("127.0.0.1:5001/demo/web").expect("repo");
    fake.add_tag(&image, "1.0.0", &digest(1), &amd64());
    fake.add_tag(&image, "1.0.1", &digest(2), &amd64());
    let arm_only = [Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: None,
        os_version: None,
    }];
    fake.add_tag(&image, "1.0.2", &digest(3), &arm_only);
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[asset("web", "127.0.0.1:5001/demo/web:1.0.0", None, &[])])
        .expect("upsert");
    let report = check(
        &Config::builtin(),
        &mut store,
        &Cycle::new(fake),
        now(),
        "test",
        "cid",
    )
    .await
    .expect("check");
    let e = report.checks[0].evaluation.as_ref().expect("evaluation");
    assert_eq!(e.act_on.as_deref(), Some("1.0.1"));
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("1.0.2 is not proposed: no image for linux/amd64")),
        "{:?}",
        e.notes
    );
}

#[tokio::test]
async fn digest_drift_on_latest_is_detected() {
    let fake = registry_with(
        "127.0.0.1:5001/demo/web",
        &[("latest", &digest(9))],
        &amd64(),
    );
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[asset(
            "web",
            "127.0.0.1:5001/demo/web:latest",
            Some(&digest(1)),
            &[],
        )])
        .expect("upsert");
    let cfg = config("policy:\n  gates:\n    digest: auto\n");
    let report = check(&cfg, &mut store, &Cycle::new(fake), now(), "test", "cid")
        .await
        .expect("check");
    let e = report.checks[0].evaluation.as_ref().expect("evaluation");
    assert_eq!(e.candidates.len(), 1, "{e:?}");
    assert_eq!(e.candidates[0].change, "digest");
    assert_eq!(e.candidates[0].digest.as_deref(), Some(digest(9).as_str()));
    assert_eq!(e.act_on.as_deref(), Some("latest"));
}

#[tokio::test]
async fn a_registry_failure_is_that_assets_error_and_the_others_proceed() {
    let fake = registry_with(
        "127.0.0.1:5001/demo/web",
        &[("1.0.0", &digest(1)), ("1.0.1", &digest(2))],
        &amd64(),
    );
    let broken = ImageRef::parse("127.0.0.1:5002/demo/web").expect("repo");
    fake.add_tag(&broken, "1.0.0", &digest(1), &amd64());
    fake.fail(
        &broken,
        ErrorKind::Status {
            status: 500,
            message: "boom".into(),
            attempts: 3,
        },
    );
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[
            asset("good", "127.0.0.1:5001/demo/web:1.0.0", None, &[]),
            asset("bad", "127.0.0.1:5002/demo/web:1.0.0", None, &[]),
            asset("weird", "Not/A/Valid/Ref", None, &[]),
        ])
        .expect("upsert");
    let report = check(
        &Config::builtin(),
        &mut store,
        &Cycle::new(fake),
        now(),
        "test",
        "cid",
    )
    .await
    .expect("check");
    assert_eq!(report.errors(), 2);
    let by_id = |id: &str| {
        report
            .checks
            .iter()
            .find(|c| c.asset_id == id)
            .expect("check present")
    };
    assert!(
        by_id("docker/local/bad")
            .error
            .as_deref()
            .unwrap_or("")
            .contains("127.0.0.1:5002")
    );
    assert!(
        by_id("docker/local/weird")
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cannot be read")
    );
    assert_eq!(
        by_id("docker/local/good")
            .evaluation
            .as_ref()
            .and_then(|e| e.act_on.as_deref()),
        Some("1.0.1")
    );
}

#[tokio::test]
async fn history_feeds_the_decision_failed_versions_and_freeze() {
    let fake = registry_with(
        "127.0.0.1:5001/demo/web",
        &[
            ("1.0.0", &digest(1)),
            ("1.0.1", &digest(2)),
            ("1.0.2", &digest(3)),
        ],
        &amd64(),
    );
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[asset("web", "127.0.0.1:5001/demo/web:1.0.0", None, &[])])
        .expect("upsert");
    let id = store
        .begin_update(&UpdateStart {
            asset_id: "docker/local/web".into(),
            from_ref: "127.0.0.1:5001/demo/web:1.0.0".into(),
            to_ref: "127.0.0.1:5001/demo/web:1.0.2".into(),
            snapshot: serde_json::json!({}),
            correlation_id: None,
            actor: "test".into(),
            at: now(),
        })
        .expect("begin");
    store
        .finish_update(
            id,
            UpdateOutcome::RolledBack,
            Some("health check failed".into()),
            now(),
            "test",
        )
        .expect("finish");
    let report = check(
        &Config::builtin(),
        &mut store,
        &Cycle::new(fake.clone()),
        now(),
        "test",
        "cid",
    )
    .await
    .expect("check");
    let e = report.checks[0].evaluation.as_ref().expect("evaluation");
    assert_eq!(
        e.act_on.as_deref(),
        Some("1.0.1"),
        "the rolled-back 1.0.2 is not retried: {e:?}"
    );

    let id = store
        .begin_update(&UpdateStart {
            asset_id: "docker/local/web".into(),
            from_ref: "127.0.0.1:5001/demo/web:1.0.0".into(),
            to_ref: "127.0.0.1:5001/demo/web:1.0.1".into(),
            snapshot: serde_json::json!({}),
            correlation_id: None,
            actor: "test".into(),
            at: now(),
        })
        .expect("begin");
    store
        .finish_update(
            id,
            UpdateOutcome::Frozen,
            Some("migration cannot be undone".into()),
            now(),
            "test",
        )
        .expect("finish");
    let report = check(
        &Config::builtin(),
        &mut store,
        &Cycle::new(fake),
        now(),
        "test",
        "cid",
    )
    .await
    .expect("check");
    let e = report.checks[0].evaluation.as_ref().expect("evaluation");
    assert_eq!(
        e.act_on, None,
        "a frozen asset proceeds with nothing: {e:?}"
    );
}
