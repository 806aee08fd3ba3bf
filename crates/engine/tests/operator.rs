//! Operator actions through the whole decide loop: `check` over the in-memory registry double
//! records reviews in a real SQLite store, `operator` answers them or sets overrides, and the
//! next `check` decides accordingly (what `run_once` then acts on is `act_on`).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config::Config;
use safe_updater_core::decide::{Evaluation, Verdict};
use safe_updater_core::reference::ImageRef;
use safe_updater_engine::operator::{self, OperatorError};
use safe_updater_engine::{CheckReport, check};
use safe_updater_registry::{Cycle, FakeRegistry, Platform};
use safe_updater_store::Store;

const REPO: &str = "127.0.0.1:5001/demo/web";

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().expect("timestamp")
}

fn later(hours: i64) -> Timestamp {
    now() + SignedDuration::from_hours(hours)
}

fn asset(name: &str, tag: &str) -> Asset {
    Asset {
        id: format!("docker/local/{name}"),
        kind: AssetKind::Container,
        location: "local".into(),
        namespace: None,
        name: name.into(),
        container: None,
        image: format!("{REPO}:{tag}"),
        digest: None,
        labels: BTreeMap::new(),
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

fn registry() -> FakeRegistry {
    let fake = FakeRegistry::new();
    let image = ImageRef::parse(REPO).expect("repo");
    let amd64 = [Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
        os_version: None,
    }];
    for (i, tag) in ["1.0.0", "1.0.1", "1.1.0", "2.0.0"].iter().enumerate() {
        let digest = format!("sha256:{}", format!("{:02x}", i + 1).repeat(32));
        fake.add_tag(&image, tag, &digest, &amd64);
    }
    fake
}

async fn run_check(store: &mut Store, at: Timestamp) -> CheckReport {
    let cycle = Cycle::new(registry());
    check(&Config::builtin(), store, &cycle, at, "daemon", "cid")
        .await
        .expect("check")
}

fn evaluation<'a>(report: &'a CheckReport, name: &str) -> &'a Evaluation {
    report
        .checks
        .iter()
        .find(|c| c.asset_id == format!("docker/local/{name}"))
        .and_then(|c| c.evaluation.as_ref())
        .unwrap_or_else(|| panic!("{name} not evaluated: {report:?}"))
}

fn verdict(e: &Evaluation, tag: &str) -> Option<Verdict> {
    e.candidates
        .iter()
        .find(|c| c.tag == tag)
        .map(|c| c.decision)
}

#[tokio::test]
async fn a_review_waits_in_the_queue_until_approved_then_proceeds() {
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[asset("web", "1.0.0")])
        .expect("asset");
    let report = run_check(&mut store, now()).await;
    let e = evaluation(&report, "web");
    // The defaults: the patch goes by itself, the minor waits for review, the major for a person.
    assert_eq!(e.act_on.as_deref(), Some("1.0.1"));
    assert_eq!(verdict(e, "1.1.0"), Some(Verdict::PendingReview));
    assert_eq!(verdict(e, "2.0.0"), Some(Verdict::ManualApproval));

    let pending = operator::pending(&store).expect("pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let p = &pending[0];
    assert_eq!(p.id, "docker/local/web@1.1.0");
    assert_eq!(p.asset_id, "docker/local/web");
    assert_eq!(p.asset_name, "web");
    assert_eq!(p.kind, AssetKind::Container);
    assert_eq!(p.from, format!("{REPO}:1.0.0"));
    assert_eq!(p.candidate, "1.1.0");
    assert_eq!(p.change, "minor");
    assert_eq!(p.rule.as_deref(), Some("default.minor"));
    assert!(p.reason.contains("waits for an approval"), "{}", p.reason);
    assert_eq!(p.decided_at, now());

    // A second check does not queue it twice.
    run_check(&mut store, later(1)).await;
    assert_eq!(operator::pending(&store).expect("pending").len(), 1);

    let a = operator::approve(&mut store, &p.id, "api:alice", later(2)).expect("approve");
    assert_eq!(a.operator, "api:alice");
    assert!(operator::pending(&store).expect("pending").is_empty());
    // The first verdict stands.
    match operator::approve(&mut store, &p.id, "cli:bob", later(2)) {
        Err(OperatorError::AlreadyDecided {
            operator, verdict, ..
        }) => {
            assert_eq!(operator, "api:alice");
            assert_eq!(verdict, safe_updater_store::Verdict::Approved);
        }
        other => panic!("expected AlreadyDecided, got {other:?}"),
    }
    assert!(matches!(
        operator::reject(&mut store, &p.id, "cli:bob", "no", later(2)),
        Err(OperatorError::AlreadyDecided { .. })
    ));

    // The next cycle acts on the approved minor (newer than the patch).
    let report = run_check(&mut store, later(3)).await;
    let e = evaluation(&report, "web");
    assert_eq!(e.act_on.as_deref(), Some("1.1.0"));
    let c = e
        .candidates
        .iter()
        .find(|c| c.tag == "1.1.0")
        .expect("1.1.0");
    assert_eq!(c.rule, "approval");
    assert!(c.reason.contains("api:alice approved it"), "{}", c.reason);

    // The trail names the operator.
    let records = store.audit_records(1, 1000).expect("audit");
    assert!(
        records
            .iter()
            .any(|r| r.event.action == "approval" && r.event.actor == "api:alice"),
        "{records:?}"
    );
    assert!(store.verify_audit().expect("verify").problem.is_none());
}

#[tokio::test]
async fn rejected_and_skipped_versions_are_not_proposed_again() {
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[asset("web", "1.0.0")])
        .expect("asset");
    run_check(&mut store, now()).await;

    assert!(matches!(
        operator::reject(
            &mut store,
            "docker/local/web@1.1.0",
            "cli:erin",
            "  ",
            later(1)
        ),
        Err(OperatorError::Invalid(_))
    ));
    let r = operator::reject(
        &mut store,
        "docker/local/web@1.1.0",
        "cli:erin",
        "breaks the login page",
        later(1),
    )
    .expect("reject");
    assert_eq!(r.reason.as_deref(), Some("breaks the login page"));
    assert!(operator::pending(&store).expect("pending").is_empty());

    // Skip the patch too, outside the queue.
    operator::skip_version(
        &mut store,
        "docker/local/web",
        "1.0.1",
        "cli:erin",
        None,
        later(1),
    )
    .expect("skip");
    assert!(matches!(
        operator::skip_version(
            &mut store,
            "docker/local/web",
            "1.0.1",
            "cli:erin",
            None,
            later(1)
        ),
        Err(OperatorError::AlreadyDecided { .. })
    ));
    assert!(matches!(
        operator::skip_version(
            &mut store,
            "docker/local/web",
            "1.0.0",
            "cli:erin",
            None,
            later(1)
        ),
        Err(OperatorError::Invalid(_))
    ));
    assert!(matches!(
        operator::skip_version(
            &mut store,
            "docker/local/nope",
            "1.0.1",
            "cli:erin",
            None,
            later(1)
        ),
        Err(OperatorError::NotFound(_))
    ));

    let state = operator::operator_state(&store, "docker/local/web", later(1)).expect("state");
    assert_eq!(state.skipped_versions, ["1.0.1", "1.1.0"]);
    assert_eq!((state.pin, state.snooze), (None, None));

    let report = run_check(&mut store, later(2)).await;
    let e = evaluation(&report, "web");
    assert_eq!(verdict(e, "1.1.0"), Some(Verdict::Reject));
    assert_eq!(verdict(e, "1.0.1"), Some(Verdict::Reject));
    assert_eq!(e.act_on, None);
    assert!(operator::pending(&store).expect("pending").is_empty());
}

#[tokio::test]
async fn pins_and_snoozes_change_what_the_next_check_allows() {
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[asset("web", "1.0.0")])
        .expect("asset");
    let web = "docker/local/web";
    // Approve the minor so that without overrides the asset would move to 1.1.0.
    run_check(&mut store, now()).await;
    operator::approve(&mut store, "docker/local/web@1.1.0", "cli:alice", now()).expect("approve");

    assert!(matches!(
        operator::pin(&mut store, web, "~1.x.y.z", "cli:alice", now()),
        Err(OperatorError::Invalid(_))
    ));
    assert!(matches!(
        operator::pin(&mut store, "docker/local/nope", "~1.0", "cli:alice", now()),
        Err(OperatorError::NotFound(_))
    ));
    let o = operator::pin(&mut store, web, "~1.0", "cli:alice", now()).expect("pin");
    assert_eq!(o.pin.as_ref().map(|p| p.constraint.as_str()), Some("~1.0"));
    let report = run_check(&mut store, later(1)).await;
    let e = evaluation(&report, "web");
    assert_eq!(e.act_on.as_deref(), Some("1.0.1"));
    assert_eq!(verdict(e, "1.1.0"), None);
    assert!(
        e.candidates[0]
            .reason
            .contains("within operator pin ~1.0 by cli:alice"),
        "{}",
        e.candidates[0].reason
    );
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("held back by operator pin ~1.0 by cli:alice")),
        "{:?}",
        e.notes
    );

    let removed = operator::unpin(&mut store, web, "cli:bob", later(1)).expect("unpin");
    assert_eq!(removed.by, "cli:alice");
    assert!(matches!(
        operator::unpin(&mut store, web, "cli:bob", later(1)),
        Err(OperatorError::NotFound(_))
    ));

    assert!(matches!(
        operator::snooze(&mut store, web, now(), "cli:carol", later(1)),
        Err(OperatorError::Invalid(_))
    ));
    let until = operator::parse_until("1d", later(1)).expect("1d");
    operator::snooze(&mut store, web, until, "cli:carol", later(1)).expect("snooze");
    let state = operator::operator_state(&store, web, later(1)).expect("state");
    assert_eq!(
        state.snooze.map(|s| (s.until, s.by)),
        Some((until, "cli:carol".to_owned()))
    );
    assert!(state.skipped_versions.is_empty());
    let state = operator::operator_state(&store, web, until).expect("state");
    assert_eq!(state.snooze, None, "an ended snooze is not shown");
    let report = run_check(&mut store, later(2)).await;
    let e = evaluation(&report, "web");
    assert_eq!(e.act_on, None);
    for tag in ["1.0.1", "1.1.0"] {
        let c = e
            .candidates
            .iter()
            .find(|c| c.tag == tag)
            .expect("candidate");
        assert_eq!(c.decision, Verdict::Defer, "{c:?}");
        assert_eq!(c.not_before, Some(until));
        assert!(c.reason.contains("cli:carol snoozed"), "{}", c.reason);
    }
    // After the snooze ends by itself, the approved minor goes ahead.
    let report = run_check(&mut store, until + SignedDuration::from_secs(1)).await;
    assert_eq!(evaluation(&report, "web").act_on.as_deref(), Some("1.1.0"));

    // Ended early by an operator, likewise.
    operator::snooze(&mut store, web, later(100), "cli:carol", later(30)).expect("snooze");
    assert_eq!(
        run_check(&mut store, later(31)).await.checks[0]
            .evaluation
            .as_ref()
            .and_then(|e| e.act_on.clone()),
        None
    );
    operator::unsnooze(&mut store, web, "cli:dave", later(32)).expect("unsnooze");
    let report = run_check(&mut store, later(33)).await;
    assert_eq!(evaluation(&report, "web").act_on.as_deref(), Some("1.1.0"));

    let actions: Vec<(String, String)> = store
        .audit_records(1, 1000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.event.actor.starts_with("cli:"))
        .map(|r| (r.event.actor, r.event.action))
        .collect();
    let expected: Vec<(String, String)> = [
        ("cli:alice", "approval"),
        ("cli:alice", "pin"),
        ("cli:bob", "unpin"),
        ("cli:carol", "snooze"),
        ("cli:carol", "snooze"),
        ("cli:dave", "unsnooze"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(actions, expected);
}

#[tokio::test]
async fn a_review_leaves_the_queue_once_the_asset_runs_it_or_something_newer() {
    let mut store = Store::open_in_memory().expect("store");
    store
        .upsert_assets(&[
            asset("a", "1.0.0"),
            asset("b", "1.0.0"),
            asset("gone", "1.0.0"),
        ])
        .expect("assets");
    run_check(&mut store, now()).await;
    let ids = |store: &Store| -> Vec<String> {
        operator::pending(store)
            .expect("pending")
            .into_iter()
            .map(|p| p.id)
            .collect()
    };
    assert_eq!(
        ids(&store),
        [
            "docker/local/a@1.1.0",
            "docker/local/b@1.1.0",
            "docker/local/gone@1.1.0"
        ]
    );
    // a was updated to the candidate by hand, b past it; gone is no longer tracked.
    let mut a = asset("a", "1.1.0");
    let mut b = asset("b", "2.0.0");
    a.last_seen = later(1);
    b.last_seen = later(1);
    store.upsert_assets(&[a, b]).expect("assets");
    store
        .remove_assets_not_seen_since(later(1))
        .expect("remove");
    assert!(ids(&store).is_empty(), "{:?}", ids(&store));
    assert!(matches!(
        operator::approve(&mut store, "docker/local/a@1.1.0", "cli:alice", later(2)),
        Err(OperatorError::NotFound(_))
    ));
    assert!(matches!(
        operator::approve(&mut store, "docker/local/a", "cli:alice", later(2)),
        Err(OperatorError::Invalid(_))
    ));
    assert!(matches!(
        operator::approve(&mut store, "docker/local/b@1.1.0", "", later(2)),
        Err(OperatorError::Invalid(_))
    ));
}

/// More assets than a check reads at a time and more reviews than a page: the check decides
/// each asset once, `pending` lists every review, and walking `pending_page` finds the same
/// reviews in the same order.
#[tokio::test]
async fn reviews_and_checks_span_pages_without_loss_or_repetition() {
    let mut store = Store::open_in_memory().expect("store");
    let assets: Vec<Asset> = (0..600)
        .map(|i| asset(&format!("app-{i:04}"), "1.0.0"))
        .collect();
    store.upsert_assets(&assets).expect("assets");
    let report = run_check(&mut store, now()).await;
    let ids: Vec<&str> = report.checks.iter().map(|c| c.asset_id.as_str()).collect();
    let mut expected: Vec<&str> = assets.iter().map(|a| a.id.as_str()).collect();
    expected.sort();
    assert_eq!(ids, expected, "each asset checked exactly once");
    assert!(report.checks.iter().all(|c| c.error.is_none()));

    let all = operator::pending(&store).expect("pending");
    assert_eq!(all.len(), 600);
    let mut walked = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (page, next) = operator::pending_page(&store, after, 250).expect("page");
        pages += 1;
        walked.extend(page.into_iter().map(|p| p.id));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(walked, all.into_iter().map(|p| p.id).collect::<Vec<_>>());
}
