//! Operators' overrides (pin, snooze), the pending-review read and the first-verdict-wins write,
//! against real SQLite files: what is stored, what the audit trail says, that nothing is
//! written when there is nothing to change, and that overrides survive export and import.

mod common;

use common::{asset, at, ts};
use safe_updater_core::asset::AssetKind;
use safe_updater_store::{
    Approval, AssetOverrides, DecisionRecord, PinOverride, SnoozeOverride, Store, Verdict,
};

const WEB: &str = "docker/local/web";

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path().join("state.db")).expect("open");
    (dir, s)
}

fn actions(s: &Store) -> Vec<(String, String, Option<String>)> {
    s.audit_records(1, 1000)
        .expect("audit")
        .into_iter()
        .map(|r| (r.event.actor, r.event.action, r.event.asset_id))
        .collect()
}

#[test]
fn pins_and_snoozes_are_stored_replaced_cleared_and_audited() {
    let (_dir, mut s) = store();
    assert_eq!(s.overrides(WEB).expect("read"), None);

    s.set_pin(WEB, "~1.2", "cli:alice", at(1)).expect("pin");
    s.set_snooze(WEB, ts("2026-12-01T00:00:00Z"), "api:ops", at(2))
        .expect("snooze");
    assert_eq!(
        s.overrides(WEB).expect("read"),
        Some(AssetOverrides {
            asset_id: WEB.into(),
            pin: Some(PinOverride {
                constraint: "~1.2".into(),
                by: "cli:alice".into(),
                at: at(1),
            }),
            snooze: Some(SnoozeOverride {
                until: ts("2026-12-01T00:00:00Z"),
                by: "api:ops".into(),
                at: at(2),
            }),
        })
    );

    // A new pin replaces the old one and the trail says what it replaced.
    s.set_pin(WEB, ">=1.2 <1.5", "cli:bob", at(3))
        .expect("repin");
    let o = s.overrides(WEB).expect("read").expect("some");
    assert_eq!(
        o.pin.as_ref().map(|p| p.constraint.as_str()),
        Some(">=1.2 <1.5")
    );
    assert_eq!(o.pin.as_ref().map(|p| p.by.as_str()), Some("cli:bob"));
    let last = s.audit_records(3, 1).expect("audit").remove(0);
    assert_eq!(last.event.details["constraint"], ">=1.2 <1.5");
    assert_eq!(last.event.details["previous"], "~1.2");

    // Clearing returns what was removed; the other part stays.
    let removed = s.clear_pin(WEB, "cli:carol", at(4)).expect("unpin");
    assert_eq!(removed.map(|p| p.by), Some("cli:bob".to_owned()));
    let o = s.overrides(WEB).expect("read").expect("snooze left");
    assert!(o.pin.is_none());
    assert!(o.snooze.is_some());

    // Nothing to clear: nothing changes and nothing is recorded.
    let len = s.audit_len().expect("len");
    assert_eq!(s.clear_pin(WEB, "cli:carol", at(5)).expect("unpin"), None);
    assert_eq!(s.audit_len().expect("len"), len);

    // With neither part left, the row is gone.
    let removed = s.clear_snooze(WEB, "cli:carol", at(6)).expect("unsnooze");
    assert_eq!(removed.map(|x| x.by), Some("api:ops".to_owned()));
    assert_eq!(s.overrides(WEB).expect("read"), None);
    assert!(s.all_overrides().expect("all").is_empty());
    assert_eq!(
        s.clear_snooze(WEB, "cli:carol", at(7)).expect("again"),
        None
    );

    let w = Some(WEB.to_owned());
    assert_eq!(
        actions(&s),
        [
            ("cli:alice".into(), "pin".into(), w.clone()),
            ("api:ops".into(), "snooze".into(), w.clone()),
            ("cli:bob".into(), "pin".into(), w.clone()),
            ("cli:carol".into(), "unpin".into(), w.clone()),
            ("cli:carol".into(), "unsnooze".into(), w),
        ]
    );
    assert!(s.verify_audit().expect("verify").problem.is_none());
}

#[test]
fn overrides_survive_reopening_export_and_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path).expect("open");
        s.upsert_assets(&[asset(WEB, AssetKind::Container, None, "web")])
            .expect("asset");
        s.set_pin(WEB, "~1.2", "cli:alice", at(1)).expect("pin");
        s.set_snooze("docker/local/db", at(9_000), "cli:alice", at(2))
            .expect("snooze");
    }
    let s = Store::open(&path).expect("reopen");
    assert_eq!(s.all_overrides().expect("all").len(), 2);

    let dump = s.export_state().expect("export");
    assert_eq!(dump.overrides, s.all_overrides().expect("all"));
    let text = serde_json::to_string(&dump).expect("json");
    let back: safe_updater_store::StateDump = serde_json::from_str(&text).expect("parse");

    let mut copy = Store::open(dir.path().join("copy.db")).expect("copy");
    copy.import_state(&back, false).expect("import");
    assert_eq!(
        copy.all_overrides().expect("all"),
        s.all_overrides().expect("all")
    );
    assert_eq!(copy.export_state().expect("export again"), dump);

    // A dump without overrides (as older releases wrote it) still reads, with none.
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("value");
    value.as_object_mut().expect("object").remove("overrides");
    let old: safe_updater_store::StateDump = serde_json::from_value(value).expect("old dump");
    assert!(old.overrides.is_empty());
}

fn decision(asset_id: &str, candidate: &str, decision: &str, secs: i64) -> DecisionRecord {
    DecisionRecord {
        asset_id: asset_id.into(),
        at: at(secs),
        actor: "daemon".into(),
        current: "1.0.0".into(),
        candidate: Some(candidate.into()),
        change: "minor".into(),
        gate: "review".into(),
        decision: decision.into(),
        rule: Some("default.minor".into()),
        reason: format!("1.0.0 → {candidate} is a minor update"),
        correlation_id: None,
    }
}

#[test]
fn pending_reviews_are_the_latest_undecided_review_decisions() {
    let (_dir, mut s) = store();
    // web 1.1.0: pending. web 1.2.0: pending, then approved by policy later (latest counts).
    // db 2.0.0: pending but rejected. api 1.1.0: pending twice (only the latest is listed).
    s.record_decision(&decision(WEB, "1.1.0", "pending_review", 1))
        .expect("d");
    s.record_decision(&decision(WEB, "1.2.0", "pending_review", 2))
        .expect("d");
    s.record_decision(&decision(WEB, "1.2.0", "approve", 3))
        .expect("d");
    s.record_decision(&decision("docker/local/db", "2.0.0", "pending_review", 4))
        .expect("d");
    s.record_approval(&Approval {
        asset_id: "docker/local/db".into(),
        candidate: "2.0.0".into(),
        verdict: Verdict::Rejected,
        operator: "cli:alice".into(),
        reason: Some("breaks the schema".into()),
        at: at(5),
        origin: Default::default(),
    })
    .expect("reject");
    s.record_decision(&decision("docker/local/api", "1.1.0", "pending_review", 6))
        .expect("d");
    let api_latest = s
        .record_decision(&decision("docker/local/api", "1.1.0", "pending_review", 7))
        .expect("d");
    s.record_decision(&decision("docker/local/api", "1.0.1", "approve", 8))
        .expect("d");

    let pending: Vec<(i64, String, String)> = s
        .pending_reviews()
        .expect("pending")
        .into_iter()
        .map(|d| {
            (
                d.id,
                d.record.asset_id,
                d.record.candidate.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        pending,
        [
            (1, WEB.to_owned(), "1.1.0".to_owned()),
            (
                api_latest,
                "docker/local/api".to_owned(),
                "1.1.0".to_owned()
            ),
        ]
    );
}

#[test]
fn the_first_verdict_wins_and_a_second_is_not_written() {
    let (_dir, mut s) = store();
    let approve = Approval {
        asset_id: WEB.into(),
        candidate: "1.1.0".into(),
        verdict: Verdict::Approved,
        operator: "cli:alice".into(),
        reason: None,
        at: at(1),
        origin: Default::default(),
    };
    assert_eq!(
        s.record_approval_if_undecided(&approve).expect("first"),
        None
    );
    let reject = Approval {
        verdict: Verdict::Rejected,
        operator: "api:bob".into(),
        reason: Some("too late".into()),
        at: at(2),
        ..approve.clone()
    };
    let existing = s
        .record_approval_if_undecided(&reject)
        .expect("second")
        .expect("refused");
    assert_eq!(existing, approve);
    assert_eq!(s.approvals_for(WEB).expect("approvals"), [approve]);
    // The one verdict has the same audit record record_approval writes.
    let records = s.audit_records(1, 10).expect("audit");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event.action, "approval");
    assert_eq!(records[0].event.actor, "cli:alice");
    assert_eq!(records[0].event.details["candidate"], "1.1.0");
    assert_eq!(records[0].event.details["verdict"], "approved");
}
