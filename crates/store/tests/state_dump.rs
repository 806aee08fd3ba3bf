//! State export and import for backup and restore.

mod common;

use common::{asset, at, event};
use safe_updater_core::asset::AssetKind;
use safe_updater_store::{
    Approval, DecisionRecord, ObservedTagInput, StateDump, Store, StoreError, UpdateOutcome,
    UpdateStart, Verdict,
};
use serde_json::json;

/// A store with something in every table.
fn populated() -> Store {
    let mut s = Store::open_in_memory().expect("store");
    s.upsert_assets(&[
        asset("a", AssetKind::Deployment, Some("shop"), "web"),
        asset("b", AssetKind::HelmRelease, Some("infra"), "ingress"),
    ])
    .expect("assets");
    s.record_observed_tags(
        "registry.example/web",
        &[
            ObservedTagInput {
                tag: "1.2.4".into(),
                digest: Some("sha256:1".into()),
            },
            ObservedTagInput {
                tag: "1.3.0".into(),
                digest: None,
            },
        ],
        at(1),
    )
    .expect("tags");
    s.record_decision(&DecisionRecord {
        asset_id: "a".into(),
        at: at(2),
        actor: "daemon".into(),
        current: "1.2.3".into(),
        candidate: Some("1.2.4".into()),
        change: "patch".into(),
        gate: "auto".into(),
        decision: "update".into(),
        rule: None,
        reason: "patch".into(),
        correlation_id: Some("run-1".into()),
    })
    .expect("decision");
    s.record_approval(&Approval {
        asset_id: "b".into(),
        candidate: "4.0.0".into(),
        verdict: Verdict::Approved,
        operator: "cli:alice".into(),
        reason: Some("change CHG-1".into()),
        at: at(3),
        origin: Default::default(),
    })
    .expect("approval");
    let start = |to: &str, n| UpdateStart {
        asset_id: "a".into(),
        from_ref: "web:1.2.3".into(),
        to_ref: to.into(),
        snapshot: json!({"image": "web:1.2.3", "weights": [0.1, 0.2]}),
        correlation_id: Some("run-1".into()),
        actor: "daemon".into(),
        at: at(n),
    };
    let done = s.begin_update(&start("web:1.2.4", 4)).expect("begin");
    s.finish_update(
        done,
        UpdateOutcome::RolledBack,
        Some("unhealthy".into()),
        at(5),
        "daemon",
    )
    .expect("finish");
    s.begin_update(&start("web:1.2.5", 6)).expect("begin");
    s.append_audit(event(7)).expect("audit");
    s
}

fn to_json(dump: &StateDump) -> String {
    serde_json::to_string_pretty(dump).expect("serialize")
}

#[test]
fn export_import_export_is_identical() {
    let source = populated();
    let first = source.export_state().expect("export");
    assert_eq!(first.assets.len(), 2);
    assert_eq!(first.observed_tags.len(), 2);
    assert_eq!(first.decisions.len(), 1);
    assert_eq!(first.approvals.len(), 1);
    assert_eq!(first.updates.len(), 2);
    assert!(first.updates.iter().all(|u| u.snapshot.is_some()));
    assert_eq!(first.audit.len(), 6);

    // Through JSON text, as a backup file would go.
    let text = to_json(&first);
    let parsed: StateDump = serde_json::from_str(&text).expect("parse");
    assert_eq!(parsed, first);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut target = Store::open(dir.path().join("restored.db")).expect("open");
    target.import_state(&parsed, false).expect("import");
    let second = target.export_state().expect("export again");
    assert_eq!(to_json(&second), text);
    assert!(target.verify_audit().expect("verify").ok);

    // The restored store goes on working: ids and the chain continue.
    let next = target.append_audit(event(8)).expect("append");
    assert_eq!(next.seq, 7);
    assert_eq!(target.unfinished_updates().expect("unfinished").len(), 1);
    assert_eq!(target.failed_targets("a").expect("failed"), ["web:1.2.4"]);
}

#[test]
fn import_refuses_a_non_empty_store_without_replace() {
    let dump = populated().export_state().expect("export");
    let mut target = Store::open_in_memory().expect("store");
    target.append_audit(event(1)).expect("append");
    let err = target.import_state(&dump, false).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::ImportIntoNonEmpty { .. }),
        "{err}"
    );
    assert_eq!(target.audit_len().expect("len"), 1);
}

#[test]
fn import_refuses_a_broken_audit_trail() {
    let mut dump = populated().export_state().expect("export");
    dump.audit[2].event.actor = "cli:mallory".into();
    let mut target = Store::open_in_memory().expect("store");
    let err = target.import_state(&dump, false).expect_err("must refuse");
    match &err {
        StoreError::BrokenDumpAudit { problem, .. } => assert_eq!(problem.seq, 3),
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("record 3"), "{err}");
    assert_eq!(target.export_state().expect("export").assets.len(), 0);

    let mut dump = populated().export_state().expect("export");
    dump.audit.remove(0);
    let err = target.import_state(&dump, false).expect_err("must refuse");
    assert!(matches!(err, StoreError::BrokenDumpAudit { .. }), "{err}");
}

#[test]
fn import_refuses_unknown_formats() {
    let mut dump = populated().export_state().expect("export");
    dump.format_version = 99;
    let mut target = Store::open_in_memory().expect("store");
    let err = target.import_state(&dump, false).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::UnsupportedDumpFormat { found: 99, .. }),
        "{err}"
    );
    dump.format_version = safe_updater_store::DUMP_FORMAT_VERSION;
    dump.schema_version = safe_updater_store::SCHEMA_VERSION + 1;
    let err = target.import_state(&dump, false).expect_err("must refuse");
    assert!(matches!(err, StoreError::DumpSchemaTooNew { .. }), "{err}");
}

#[test]
fn replace_keeps_the_audit_trail_and_extends_it() {
    // An older copy of the state: the first records of the trail.
    let mut older = Store::open_in_memory().expect("store");
    older
        .upsert_assets(&[asset("stale", AssetKind::Container, None, "stale")])
        .expect("assets");
    let full = populated();
    let dump = full.export_state().expect("export");
    for record in &dump.audit[..3] {
        // Same events, same chain.
        older.append_audit(record.event.clone()).expect("append");
    }
    older.import_state(&dump, true).expect("replace");
    assert_eq!(
        to_json(&older.export_state().expect("export")),
        to_json(&dump)
    );
    assert!(older.get_asset("stale").expect("get").is_none());
}

#[test]
fn replace_never_discards_audit_records() {
    let dump = populated().export_state().expect("export");
    // A store whose trail went its own way.
    let mut diverged = Store::open_in_memory().expect("store");
    for n in 0..3 {
        diverged.append_audit(event(100 + n)).expect("append");
    }
    let err = diverged.import_state(&dump, true).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::ReplaceWouldLoseAudit { .. }),
        "{err}"
    );
    assert_eq!(diverged.audit_len().expect("len"), 3);

    // A store ahead of the dump (the dump is an older backup).
    let mut ahead = Store::open_in_memory().expect("store");
    ahead.import_state(&dump, false).expect("import");
    ahead.append_audit(event(50)).expect("append");
    let err = ahead.import_state(&dump, true).expect_err("must refuse");
    assert!(
        err.to_string().contains("never discards audit records"),
        "{err}"
    );
}
