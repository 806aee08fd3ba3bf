//! Round trips through every table, and the rules each write follows.

mod common;

use common::{asset, at, ts};
use safe_updater_core::asset::AssetKind;
use safe_updater_core::audit::GENESIS_HASH;
use safe_updater_store::{
    Approval, AssetFilter, DecisionRecord, ObservedTagInput, Store, StoreError, UpdateId,
    UpdateOutcome, UpdateStart, UpdateStatus, Verdict,
};
use serde_json::json;

fn store() -> Store {
    Store::open_in_memory().expect("in-memory store")
}

#[test]
fn assets_round_trip_and_keep_first_seen() {
    let mut s = store();
    let a = asset(
        "k8s/prod/shop/Deployment/web/app",
        AssetKind::Deployment,
        Some("shop"),
        "web",
    );
    let mut docker = asset("docker/local/db", AssetKind::Container, None, "db");
    docker.container = None;
    docker.digest = None;
    docker.extra = serde_json::Value::Null;
    docker.labels.clear();
    assert_eq!(
        s.upsert_assets(&[a.clone(), docker.clone()])
            .expect("upsert"),
        2
    );
    assert_eq!(s.get_asset(&a.id).expect("get"), Some(a.clone()));
    assert_eq!(s.get_asset(&docker.id).expect("get"), Some(docker.clone()));
    assert_eq!(s.get_asset("nope").expect("get"), None);
    assert_eq!(s.count_assets().expect("count"), 2);

    // Re-discovered later with a new image: everything changes but first_seen.
    let mut again = a.clone();
    again.first_seen = at(500);
    again.last_seen = at(500);
    again.image = "registry.example/web:1.2.4".into();
    s.upsert_assets(&[again.clone()]).expect("upsert");
    let stored = s.get_asset(&a.id).expect("get").expect("present");
    assert_eq!(stored.first_seen, at(0));
    assert_eq!(stored.last_seen, at(500));
    assert_eq!(stored.image, again.image);

    // Sub-second timestamps survive exactly.
    let mut precise = docker.clone();
    precise.last_seen = ts("2024-05-01T12:00:00.123456789Z");
    s.upsert_assets(&[precise.clone()]).expect("upsert");
    assert_eq!(
        s.get_asset(&docker.id)
            .expect("get")
            .expect("present")
            .last_seen,
        precise.last_seen
    );
}

#[test]
fn list_assets_filters() {
    let mut s = store();
    s.upsert_assets(&[
        asset("a", AssetKind::Deployment, Some("shop"), "web-frontend"),
        asset("b", AssetKind::StatefulSet, Some("shop"), "postgres"),
        asset("c", AssetKind::Deployment, Some("billing"), "web_api"),
        asset("d", AssetKind::Container, None, "100%-real"),
    ])
    .expect("upsert");
    let ids = |f: AssetFilter| -> Vec<String> {
        s.list_assets(&f)
            .expect("list")
            .into_iter()
            .map(|a| a.id)
            .collect()
    };
    assert_eq!(ids(AssetFilter::default()), ["a", "b", "c", "d"]);
    assert_eq!(
        ids(AssetFilter {
            namespace: Some("shop".into()),
            ..Default::default()
        }),
        ["a", "b"]
    );
    assert_eq!(
        ids(AssetFilter {
            kind: Some(AssetKind::Deployment),
            ..Default::default()
        }),
        ["a", "c"]
    );
    assert_eq!(
        ids(AssetFilter {
            kind: Some(AssetKind::Deployment),
            namespace: Some("shop".into()),
            location: Some("prod".into()),
            ..Default::default()
        }),
        ["a"]
    );
    assert!(
        ids(AssetFilter {
            location: Some("staging".into()),
            ..Default::default()
        })
        .is_empty()
    );
    // Case-insensitive, and LIKE wildcards typed by the user match literally.
    assert_eq!(
        ids(AssetFilter {
            name_contains: Some("WEB".into()),
            ..Default::default()
        }),
        ["a", "c"]
    );
    assert_eq!(
        ids(AssetFilter {
            name_contains: Some("_".into()),
            ..Default::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(AssetFilter {
            name_contains: Some("%".into()),
            ..Default::default()
        }),
        ["d"]
    );
}

#[test]
fn asset_pages_walk_the_filtered_inventory_once() {
    let mut s = store();
    let mut all = Vec::new();
    for i in 0..7 {
        let kind = if i % 3 == 2 {
            AssetKind::Deployment
        } else {
            AssetKind::Container
        };
        all.push(asset(&format!("id-{i}"), kind, None, &format!("n{i}")));
    }
    s.upsert_assets(&all).expect("upsert");
    let containers = AssetFilter {
        kind: Some(AssetKind::Container),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .list_assets_page(&containers, after.as_deref(), 2)
            .expect("page");
        pages.push(page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.into_iter().map(|a| a.id));
    }
    // The filter applies before the limit: full pages of containers only, then the empty end.
    assert_eq!(seen, ["id-0", "id-1", "id-3", "id-4", "id-6"]);
    assert_eq!(pages, [2, 2, 1, 0]);
    assert_eq!(
        s.list_assets_page(&AssetFilter::default(), Some("id-5"), 10)
            .expect("page")
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        ["id-6"]
    );
}

#[test]
fn stale_assets_are_removed() {
    let mut s = store();
    let mut old = asset("old", AssetKind::Container, None, "old");
    old.last_seen = at(10);
    let mut new = asset("new", AssetKind::Container, None, "new");
    new.last_seen = at(100);
    s.upsert_assets(&[old, new]).expect("upsert");
    assert_eq!(s.remove_assets_not_seen_since(at(100)).expect("remove"), 1);
    assert_eq!(s.count_assets().expect("count"), 1);
    assert!(s.get_asset("new").expect("get").is_some());
}

#[test]
fn a_complete_discovery_replaces_its_place_and_kind_only() {
    let mut s = store();
    let on = |id: &str, kind, location: &str| {
        let mut a = asset(id, kind, None, id);
        a.location = location.into();
        a
    };
    s.upsert_assets(&[
        on("a", AssetKind::Container, "local"),
        on("b", AssetKind::Container, "local"),
        on("c", AssetKind::Container, "remote"),
        on("d", AssetKind::Deployment, "local"),
    ])
    .expect("upsert");
    let gone = s
        .replace_assets_at(
            "local",
            AssetKind::Container,
            &[
                on("a", AssetKind::Container, "local"),
                on("e", AssetKind::Container, "local"),
            ],
        )
        .expect("replace");
    assert_eq!(gone, vec!["b".to_owned()]);
    let mut ids: Vec<String> = s
        .list_assets(&AssetFilter::default())
        .expect("list")
        .into_iter()
        .map(|a| a.id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["a", "c", "d", "e"],
        "other places and kinds are untouched"
    );
}

#[test]
fn observed_tags_keep_first_seen() {
    let mut s = store();
    let repo = "registry.example/web";
    let tag = |t: &str, d: Option<&str>| ObservedTagInput {
        tag: t.into(),
        digest: d.map(str::to_string),
    };
    s.record_observed_tags(
        repo,
        &[tag("1.0", Some("sha256:a")), tag("1.1", None)],
        at(0),
    )
    .expect("record");
    s.record_observed_tags("other/repo", &[tag("9", None)], at(0))
        .expect("record");
    s.record_observed_tags(
        repo,
        &[
            tag("1.0", None),
            tag("1.1", Some("sha256:b")),
            tag("1.2", None),
        ],
        at(3600),
    )
    .expect("record");
    let tags = s.observed_tags(repo).expect("read");
    assert_eq!(tags.len(), 3);
    let t10 = &tags[0];
    assert_eq!(
        (t10.tag.as_str(), t10.first_seen, t10.last_seen),
        ("1.0", at(0), at(3600))
    );
    // An unknown digest does not erase a known one, and learning a digest is not a change.
    assert_eq!(t10.digest.as_deref(), Some("sha256:a"));
    assert_eq!(t10.digest_first_seen, at(0));
    let t11 = &tags[1];
    assert_eq!(t11.digest.as_deref(), Some("sha256:b"));
    assert_eq!(t11.first_seen, at(0));
    assert_eq!(t11.digest_first_seen, at(0));
    assert_eq!(tags[2].first_seen, at(3600));

    // Re-pushed tag: first_seen stays, digest_first_seen moves.
    s.record_observed_tags(repo, &[tag("1.0", Some("sha256:c"))], at(7200))
        .expect("record");
    let t10 = &s.observed_tags(repo).expect("read")[0];
    assert_eq!(t10.first_seen, at(0));
    assert_eq!(t10.digest_first_seen, at(7200));
    assert_eq!(t10.digest.as_deref(), Some("sha256:c"));
    assert_eq!(s.observed_tags("nobody/here").expect("read"), vec![]);
}

fn decision(asset: &str, n: i64) -> DecisionRecord {
    DecisionRecord {
        asset_id: asset.into(),
        at: at(n),
        actor: "daemon".into(),
        current: "1.2.3".into(),
        candidate: Some("1.2.4".into()),
        change: "patch".into(),
        gate: "auto".into(),
        decision: "update".into(),
        rule: Some("rules[0]".into()),
        reason: "patch updates are automatic".into(),
        correlation_id: Some(format!("run-{n}")),
    }
}

#[test]
fn decisions_round_trip_with_their_audit_event() {
    let mut s = store();
    let d1 = decision("a", 1);
    let mut d2 = decision("b", 2);
    d2.candidate = None;
    d2.rule = None;
    d2.decision = "hold".into();
    let id1 = s.record_decision(&d1).expect("record");
    let id2 = s.record_decision(&d2).expect("record");
    assert_ne!(id1, id2);
    assert_eq!(
        s.decisions(None, 10).expect("read"),
        vec![d2.clone(), d1.clone()]
    );
    assert_eq!(s.decisions(Some("a"), 10).expect("read"), vec![d1.clone()]);
    assert_eq!(s.decisions(None, 1).expect("read"), vec![d2.clone()]);

    let audit = s.audit_records(1, 10).expect("audit");
    assert_eq!(audit.len(), 2);
    let e = &audit[0].event;
    assert_eq!(audit[0].prev_hash, GENESIS_HASH);
    assert_eq!(
        (e.action.as_str(), e.actor.as_str()),
        ("decision", "daemon")
    );
    assert_eq!(e.asset_id.as_deref(), Some("a"));
    assert_eq!(e.correlation_id.as_deref(), Some("run-1"));
    assert_eq!(e.timestamp, at(1));
    assert_eq!(e.details["candidate"], "1.2.4");
    assert_eq!(e.details["decision_id"], id1);
    assert_eq!(audit[1].event.details["candidate"], serde_json::Value::Null);
}

#[test]
fn approvals_round_trip_and_the_latest_counts() {
    let mut s = store();
    let approve = Approval {
        asset_id: "a".into(),
        candidate: "2.0.0".into(),
        verdict: Verdict::Approved,
        operator: "cli:alice".into(),
        reason: None,
        at: at(10),
        origin: Default::default(),
    };
    let reject = Approval {
        verdict: Verdict::Rejected,
        operator: "api:bob".into(),
        reason: Some("breaks the checkout".into()),
        at: at(20),
        ..approve.clone()
    };
    let other = Approval {
        candidate: "2.1.0".into(),
        at: at(5),
        ..approve.clone()
    };
    s.record_approval(&approve).expect("approve");
    s.record_approval(&reject).expect("reject");
    s.record_approval(&other).expect("approve other");
    assert_eq!(
        s.approvals_for("a").expect("read"),
        vec![other.clone(), approve.clone(), reject.clone()]
    );
    assert_eq!(s.approval_for("a", "2.0.0").expect("read"), Some(reject));
    assert_eq!(s.approval_for("a", "2.1.0").expect("read"), Some(other));
    assert_eq!(s.approval_for("a", "3.0.0").expect("read"), None);
    assert_eq!(s.approval_for("b", "2.0.0").expect("read"), None);

    let actions: Vec<(String, String)> = s
        .audit_records(1, 10)
        .expect("audit")
        .into_iter()
        .map(|r| (r.event.action, r.event.actor))
        .collect();
    assert_eq!(
        actions,
        [
            ("approval".to_string(), "cli:alice".to_string()),
            ("rejection".to_string(), "api:bob".to_string()),
            ("approval".to_string(), "cli:alice".to_string()),
        ]
    );
}

fn start(asset: &str, to: &str, n: i64) -> UpdateStart {
    UpdateStart {
        asset_id: asset.into(),
        from_ref: "web:1.2.3".into(),
        to_ref: to.into(),
        snapshot: json!({"spec": {"image": "web:1.2.3", "replicas": 3}, "ratio": 0.7}),
        correlation_id: Some(format!("run-{n}")),
        actor: "daemon".into(),
        at: at(n),
    }
}

#[test]
fn updates_round_trip_with_snapshots() {
    let mut s = store();
    // An asset has one update in progress at a time: "a" is updated three times in turn.
    let u1 = s.begin_update(&start("a", "web:1.2.4", 1)).expect("begin");
    let u3 = s.begin_update(&start("b", "web:2.0.0", 3)).expect("begin");

    // Begun: in progress, snapshot committed.
    let unfinished: Vec<UpdateId> = s
        .unfinished_updates()
        .expect("read")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(unfinished, [u1, u3]);
    assert_eq!(
        s.snapshot(u1).expect("snapshot"),
        Some(start("a", "", 0).snapshot)
    );
    assert_eq!(s.snapshot(UpdateId(999)).expect("snapshot"), None);

    let done = s
        .finish_update(
            u1,
            UpdateOutcome::Failed,
            Some("pods crash-looping".into()),
            at(11),
            "daemon",
        )
        .expect("finish");
    assert_eq!(done.status, UpdateStatus::Failed);
    assert_eq!(done.finished_at, Some(at(11)));
    let u2 = s.begin_update(&start("a", "web:1.2.5", 2)).expect("begin");
    s.finish_update(
        u2,
        UpdateOutcome::RolledBack,
        Some("health check failed".into()),
        at(12),
        "cli:alice",
    )
    .expect("finish");
    s.finish_update(u3, UpdateOutcome::Succeeded, None, at(13), "daemon")
        .expect("finish");
    let u4 = s.begin_update(&start("a", "web:1.2.6", 4)).expect("begin");

    let history = s.history(Some("a"), 10).expect("history");
    assert_eq!(
        history.iter().map(|u| u.id).collect::<Vec<_>>(),
        [u4, u2, u1]
    );
    assert_eq!(history[1].status, UpdateStatus::RolledBack);
    assert_eq!(history[1].finished_by.as_deref(), Some("cli:alice"));
    assert_eq!(history[1].started_at, at(2));
    assert_eq!(history[0].status, UpdateStatus::InProgress);
    assert_eq!(history[0].finished_at, None);
    assert_eq!(s.history(None, 2).expect("history").len(), 2);
    assert_eq!(
        s.update(u3).expect("read").expect("present").status,
        UpdateStatus::Succeeded
    );

    assert_eq!(s.unfinished_updates().expect("read").len(), 1);
    assert_eq!(
        s.failed_targets("a").expect("failed"),
        ["web:1.2.4", "web:1.2.5"]
    );
    assert!(s.failed_targets("b").expect("failed").is_empty());

    let actions: Vec<String> = s
        .audit_records(1, 100)
        .expect("audit")
        .into_iter()
        .map(|r| r.event.action)
        .collect();
    assert_eq!(
        actions,
        [
            "update.started",
            "update.started",
            "update.failed",
            "update.started",
            "update.rolled_back",
            "update.succeeded",
            "update.started",
        ]
    );
    assert!(s.verify_audit().expect("verify").ok);
}

#[test]
fn an_update_finishes_once() {
    let mut s = store();
    let id = s.begin_update(&start("a", "web:2", 1)).expect("begin");
    s.finish_update(
        id,
        UpdateOutcome::Frozen,
        Some("rollback failed".into()),
        at(2),
        "daemon",
    )
    .expect("finish");
    let err = s
        .finish_update(id, UpdateOutcome::Succeeded, None, at(3), "daemon")
        .expect_err("second finish");
    assert!(matches!(
        err,
        StoreError::UpdateAlreadyFinished {
            status: UpdateStatus::Frozen,
            ..
        }
    ));
    assert!(
        err.to_string().contains("already finished (frozen)"),
        "{err}"
    );
    let err = s
        .finish_update(
            UpdateId(42),
            UpdateOutcome::Succeeded,
            None,
            at(3),
            "daemon",
        )
        .expect_err("unknown");
    assert!(
        matches!(err, StoreError::UnknownUpdate { id: 42, .. }),
        "{err}"
    );
    // Neither failed attempt reached the audit trail.
    assert_eq!(s.audit_len().expect("len"), 2);
    assert_eq!(s.failed_targets("a").expect("failed"), ["web:2"]);
}

#[test]
fn audit_records_page_through_the_trail() {
    let mut s = store();
    let mut appended = Vec::new();
    for n in 0..25 {
        appended.push(s.append_audit(common::event(n)).expect("append"));
    }
    assert_eq!(s.audit_len().expect("len"), 25);
    assert_eq!(s.audit_head().expect("head"), Some(appended[24].head()));
    assert_eq!(s.audit_records(1, 10).expect("page"), appended[0..10]);
    assert_eq!(s.audit_records(21, 10).expect("page"), appended[20..25]);
    assert!(s.audit_records(26, 10).expect("page").is_empty());
    let report = s.verify_audit().expect("verify");
    assert!(report.ok, "{report}");
    assert_eq!(report.checked, 25);
    assert_eq!(report.head, Some(appended[24].head()));
}

#[test]
fn empty_store_verifies_and_has_no_head() {
    let s = store();
    assert_eq!(s.audit_head().expect("head"), None);
    let report = s.verify_audit().expect("verify");
    assert!(report.ok);
    assert_eq!(report.checked, 0);
}

#[test]
fn stats_count_everything() {
    let mut s = store();
    s.upsert_assets(&[
        asset("a", AssetKind::Deployment, Some("shop"), "web"),
        asset("b", AssetKind::Deployment, Some("shop"), "api"),
        asset("c", AssetKind::Container, None, "db"),
    ])
    .expect("upsert");
    s.record_observed_tags(
        "r",
        &[ObservedTagInput {
            tag: "1".into(),
            digest: None,
        }],
        at(0),
    )
    .expect("tags");
    s.record_decision(&decision("a", 1)).expect("decision");
    let id = s.begin_update(&start("a", "web:2", 2)).expect("begin");
    s.begin_update(&start("b", "api:2", 3)).expect("begin");
    s.finish_update(id, UpdateOutcome::Succeeded, None, at(4), "daemon")
        .expect("finish");
    s.record_approval(&Approval {
        asset_id: "c".into(),
        candidate: "2".into(),
        verdict: Verdict::Rejected,
        operator: "cli:alice".into(),
        reason: None,
        at: at(5),
        origin: Default::default(),
    })
    .expect("approval");

    let stats = s.stats().expect("stats");
    assert_eq!(stats.schema_version, safe_updater_store::SCHEMA_VERSION);
    assert_eq!(stats.assets, 3);
    assert_eq!(stats.assets_by_kind.get("Deployment"), Some(&2));
    assert_eq!(stats.assets_by_kind.get("container"), Some(&1));
    assert_eq!(stats.observed_tags, 1);
    assert_eq!(stats.decisions, 1);
    assert_eq!((stats.approvals, stats.rejections), (0, 1));
    assert_eq!(stats.updates_by_status.get("succeeded"), Some(&1));
    assert_eq!(stats.updates_in_progress, 1);
    assert_eq!(stats.audit_len, 5);
    assert_eq!(stats.audit_head.map(|h| h.seq), Some(5));
    assert_eq!(stats.file_size_bytes, None);
    // Serializable, for `stats --output json`.
    let v = serde_json::to_value(s.stats().expect("stats")).expect("json");
    assert_eq!(v["assets_by_kind"]["Deployment"], 2);
}

#[test]
fn file_store_reports_its_size_and_creates_its_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/state.db");
    let mut s = Store::open(&path).expect("open");
    s.append_audit(common::event(1)).expect("append");
    assert_eq!(s.path(), Some(path.as_path()));
    let stats = s.stats().expect("stats");
    assert!(stats.file_size_bytes.is_some_and(|n| n > 0));
    drop(s);
    // Reopening keeps everything and does not migrate again (no backup file).
    let s = Store::open(&path).expect("reopen");
    assert_eq!(s.audit_len().expect("len"), 1);
    let backups = std::fs::read_dir(path.parent().expect("parent"))
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".bak-"))
        .count();
    assert_eq!(backups, 0);
}
