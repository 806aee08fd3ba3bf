//! The audit trail as stored: append-only triggers, tampering found by verification, exports,
//! and retention (pruning a prefix behind a checkpoint).

mod common;

use std::path::Path;

use common::{at, event};
use proptest::prelude::*;
use rusqlite::Connection;
use safe_updater_core::audit::{self, AuditEvent, AuditRecord, ProblemKind, VerifyProblem};
use safe_updater_store::{AuditFormat, PRUNED_ACTION, Store, StoreError, testing};

/// A file-backed store holding `n` audit records.
fn store_with(n: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<AuditRecord>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).expect("open");
    let records = (1..=n)
        .map(|i| s.append_audit(event(i)).expect("append"))
        .collect();
    (dir, path, records)
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("raw connection")
}

/// What an attacker with the file does first.
fn drop_triggers(conn: &Connection) {
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .expect("drop triggers");
}

fn problem_after_tampering(path: &Path) -> VerifyProblem {
    let report = Store::open(path)
        .expect("open")
        .verify_audit()
        .expect("verify");
    assert!(!report.ok, "tampering went unnoticed: {report}");
    report.problem.expect("a problem")
}

#[test]
fn triggers_reject_update_and_delete() {
    let (_dir, path, _) = store_with(3);
    let conn = raw(&path);
    let err = conn
        .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
        .expect_err("update must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit WHERE seq = 3", [])
        .expect_err("delete must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit", [])
        .expect_err("delete all must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    drop(conn);
    let s = Store::open(&path).expect("open");
    assert_eq!(s.audit_len().expect("len"), 3);
    assert!(s.verify_audit().expect("verify").ok);
}

#[test]
fn an_edited_record_is_named() {
    let (_dir, path, _) = store_with(10);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute(
        "UPDATE audit SET details = json_set(details, '$.n', 99) WHERE seq = 6",
        [],
    )
    .expect("edit");
    drop(conn);
    let p = problem_after_tampering(&path);
    assert_eq!((p.seq, p.kind), (6, ProblemKind::Altered));
    assert!(
        p.message.contains("record 6 has been altered"),
        "{}",
        p.message
    );
}

#[test]
fn an_edited_and_rehashed_record_breaks_the_next_link() {
    let (_dir, path, records) = store_with(10);
    let mut forged = records[4].clone();
    forged.event.actor = "cli:mallory".into();
    forged.hash = audit::record_hash(forged.seq, &forged.event, &forged.prev_hash);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute(
        "UPDATE audit SET actor = ?1, hash = ?2 WHERE seq = 5",
        [&forged.event.actor, &forged.hash],
    )
    .expect("edit");
    drop(conn);
    let p = problem_after_tampering(&path);
    assert_eq!((p.seq, p.kind), (6, ProblemKind::BrokenLink));
    assert!(
        p.message.contains("does not link to record 5"),
        "{}",
        p.message
    );
}

#[test]
fn a_deleted_record_is_named() {
    let (_dir, path, _) = store_with(10);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute("DELETE FROM audit WHERE seq = 4", [])
        .expect("delete");
    drop(conn);
    let p = problem_after_tampering(&path);
    assert_eq!((p.seq, p.kind), (5, ProblemKind::Missing));
    assert!(p.message.contains("record 4 is missing"), "{}", p.message);
}

#[test]
fn a_deleted_first_record_is_named() {
    let (_dir, path, _) = store_with(5);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute("DELETE FROM audit WHERE seq = 1", [])
        .expect("delete");
    drop(conn);
    let p = problem_after_tampering(&path);
    assert_eq!((p.seq, p.kind), (2, ProblemKind::BadStart));
}

#[test]
fn swapped_records_are_named() {
    let (_dir, path, _) = store_with(10);
    let conn = raw(&path);
    drop_triggers(&conn);
    // Swap the positions of records 3 and 7 (their contents trade seq numbers).
    conn.execute_batch(
        "UPDATE audit SET seq = 1000 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 7;
         UPDATE audit SET seq = 7 WHERE seq = 1000;",
    )
    .expect("swap");
    drop(conn);
    let p = problem_after_tampering(&path);
    assert_eq!((p.seq, p.kind), (3, ProblemKind::BrokenLink));
    assert!(
        p.message.contains("record 3 does not link to record 2"),
        "{}",
        p.message
    );
}

#[test]
fn an_unreadable_record_is_named() {
    let (_dir, path, _) = store_with(4);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute("UPDATE audit SET timestamp = 'yesterday' WHERE seq = 3", [])
        .expect("edit");
    drop(conn);
    let p = problem_after_tampering(&path);
    assert_eq!((p.seq, p.kind), (3, ProblemKind::Unreadable));
}

#[test]
fn removing_the_tail_changes_the_head() {
    // The chain cannot tell that its last records were removed; the head can, when it was
    // kept elsewhere.
    let (_dir, path, records) = store_with(5);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute("DELETE FROM audit WHERE seq = 5", [])
        .expect("delete");
    drop(conn);
    let report = Store::open(&path)
        .expect("open")
        .verify_audit()
        .expect("verify");
    assert!(report.ok);
    assert_ne!(report.head, Some(records[4].head()));
}

#[test]
fn a_pruned_trail_verifies_from_its_checkpoint() {
    let (_dir, path, _records) = store_with(6);
    let mut s = Store::open(&path).expect("open");
    // Records 1..=3 are older than at(4): pruned behind checkpoint 3, stated by #7.
    prune_at(&mut s, 4, 100);
    let report = s.verify_audit().expect("verify");
    assert!(report.ok, "{report}");
    assert_eq!(report.checked, 4);
    // Appending continues the chain.
    assert_eq!(s.append_audit(event(8)).expect("append").seq, 8);
    assert!(s.verify_audit().expect("verify").ok);
}

#[test]
fn a_prefix_deleted_by_hand_behind_a_checkpoint_does_not_verify() {
    let (_dir, path, records) = store_with(6);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created_at) VALUES (3, ?1, ?2)",
        [records[2].hash.as_str(), "2024-05-02T00:00:00.000000000Z"],
    )
    .expect("checkpoint");
    conn.execute("DELETE FROM audit WHERE seq <= 3", [])
        .expect("delete");
    drop(conn);
    let mut s = Store::open(&path).expect("open");
    let report = s.verify_audit().expect("verify");
    assert!(!report.ok, "{report}");
    let p = report.problem.expect("problem");
    assert_eq!((p.seq, p.kind), (1, ProblemKind::Missing), "{p}");
    // And pruning refuses to cover it up with a checkpoint and record of its own.
    let refused = s.prune_audit(at(6), at(100), "cli:alice", None);
    assert!(
        matches!(refused, Err(StoreError::AuditPruneRefused { .. })),
        "{refused:?}"
    );
}

#[test]
fn jsonl_export_parses_back_and_verifies() {
    let (_dir, path, records) = store_with(12);
    let s = Store::open(&path).expect("open");
    let mut out = Vec::new();
    assert_eq!(
        s.export_audit(&mut out, AuditFormat::Jsonl)
            .expect("export"),
        12
    );
    let text = String::from_utf8(out).expect("utf-8");
    let parsed: Vec<AuditRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON record per line"))
        .collect();
    assert_eq!(parsed, records);
    assert!(audit::verify(parsed, None).ok);
    // Timestamps are exported exactly as hashed.
    assert!(text.contains("\"timestamp\":\"2024-05-01T12:00:01.000000000Z\""));
}

#[test]
fn csv_export_parses_back_and_verifies() {
    let (_dir, path, records) = store_with(12);
    let s = Store::open(&path).expect("open");
    let mut out = Vec::new();
    assert_eq!(
        s.export_audit(&mut out, AuditFormat::Csv).expect("export"),
        12
    );
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let headers = reader.headers().expect("header").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "seq",
            "timestamp",
            "actor",
            "action",
            "asset_id",
            "correlation_id",
            "details",
            "prev_hash",
            "hash"
        ]
    );
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let parsed: Vec<AuditRecord> = reader
        .records()
        .map(|row| {
            let row = row.expect("csv row");
            AuditRecord {
                seq: row[0].parse().expect("seq"),
                event: AuditEvent {
                    timestamp: row[1].parse().expect("timestamp"),
                    actor: row[2].to_string(),
                    action: row[3].to_string(),
                    asset_id: opt(&row[4]),
                    correlation_id: opt(&row[5]),
                    details: serde_json::from_str(&row[6]).expect("details"),
                },
                prev_hash: row[7].to_string(),
                hash: row[8].to_string(),
            }
        })
        .collect();
    assert_eq!(parsed, records);
    assert!(audit::verify(parsed, None).ok);
}

#[test]
fn empty_exports() {
    let s = Store::open_in_memory().expect("store");
    let mut out = Vec::new();
    assert_eq!(
        s.export_audit(&mut out, AuditFormat::Jsonl)
            .expect("export"),
        0
    );
    assert!(out.is_empty());
    assert_eq!(
        s.export_audit(&mut out, AuditFormat::Csv).expect("export"),
        0
    );
    assert_eq!(String::from_utf8(out).expect("utf-8").lines().count(), 1);
}

#[test]
fn concurrent_writers_do_not_fork_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    drop(Store::open(&path).expect("create"));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = Store::open(&path).expect("open");
                for i in 0..25 {
                    let mut e = event(i);
                    e.actor = format!("writer-{w}");
                    s.append_audit(e).expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread");
    }
    let s = Store::open(&path).expect("open");
    let report = s.verify_audit().expect("verify");
    assert!(report.ok, "{report}");
    assert_eq!(report.checked, 100);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Details go through SQLite as JSON text and come back; fractional numbers must come
    /// back bit for bit or the record would stop verifying.
    #[test]
    fn any_details_survive_the_store(
        numbers in prop::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 1..8),
        text in "\\PC{0,20}",
        big in any::<u64>(),
        neg in any::<i64>(),
    ) {
        let mut s = Store::open_in_memory().expect("store");
        let mut e = event(1);
        e.details = serde_json::json!({"numbers": numbers, "text": text, "big": big, "neg": neg});
        let appended = s.append_audit(e).expect("append");
        let report = s.verify_audit().expect("verify");
        prop_assert!(report.ok, "{}", report);
        prop_assert_eq!(s.audit_records(1, 1).expect("read"), vec![appended]);
        let mut out = Vec::new();
        s.export_audit(&mut out, AuditFormat::Jsonl).expect("export");
        let parsed: Vec<AuditRecord> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("record"))
            .collect();
        prop_assert!(audit::verify(parsed, None).ok);
    }
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

/// `event(i)` happens at `at(i)`: records 1..=n are one second apart.
fn prune_at(s: &mut Store, older_than: i64, now: i64) -> safe_updater_store::PruneReport {
    s.prune_audit(at(older_than), at(now), "cli:alice", Some("retention test"))
        .expect("prune")
}

fn checkpoint_count(path: &Path) -> i64 {
    raw(path)
        .query_row("SELECT count(*) FROM audit_checkpoints", [], |r| r.get(0))
        .expect("count checkpoints")
}

#[test]
fn pruning_removes_the_old_prefix_and_the_trail_still_verifies() {
    let (_dir, path, records) = store_with(10);
    let mut s = Store::open(&path).expect("open");
    // Records 1..=5 are older than at(6).
    let report = prune_at(&mut s, 6, 1000);
    assert!(!report.dry_run);
    assert_eq!(report.removed, 5);
    assert_eq!(report.first_removed_seq, Some(1));
    let checkpoint = report.checkpoint.clone().expect("a checkpoint");
    assert_eq!((checkpoint.seq, &checkpoint.hash), (5, &records[4].hash));
    assert_eq!(checkpoint.created_at, at(1000));
    assert_eq!(checkpoint.note.as_deref(), Some("retention test"));
    // Records 6..=10 and the record of the pruning itself.
    assert_eq!(report.remaining, 6);
    assert_eq!(report.oldest_remaining, Some(at(6)));
    assert_eq!(s.audit_len().expect("len"), 6);

    // The pruning is on the trail, chained after the last kept record.
    let pruned = report.record.clone().expect("the audit.pruned record");
    assert_eq!(pruned.seq, 11);
    assert_eq!(pruned.prev_hash, records[9].hash);
    assert_eq!(pruned.event.action, PRUNED_ACTION);
    assert_eq!(pruned.event.actor, "cli:alice");
    assert_eq!(pruned.event.timestamp, at(1000));
    assert_eq!(
        pruned.event.details,
        serde_json::json!({
            "removed": 5,
            "first_seq": 1,
            "up_to_seq": 5,
            "up_to_hash": records[4].hash,
            "older_than": "2024-05-01T12:00:06.000000000Z",
            "note": "retention test",
        })
    );
    let kept = s.audit_records(0, 100).expect("read");
    assert_eq!(kept[..5], records[5..]);
    assert_eq!(kept[5], pruned);
    assert_eq!(
        s.audit_checkpoints().expect("checkpoints"),
        vec![checkpoint.clone()]
    );

    let v = s.verify_audit_trail().expect("verify");
    assert!(v.report.ok, "{}", v.report);
    assert_eq!(v.report.checked, 6);
    assert_eq!(v.report.head, Some(pruned.head()));
    assert_eq!(v.checkpoint, Some(checkpoint));
    assert_eq!(v.pruned_by, Some(11));
    assert!(s.verify_audit().expect("verify").ok);

    // New records continue the chain; a reopened store sees the same.
    drop(s);
    let mut s = Store::open(&path).expect("reopen");
    assert_eq!(s.append_audit(event(20)).expect("append").seq, 12);
    assert!(s.verify_audit().expect("verify").ok);
}

#[test]
fn nothing_old_enough_writes_nothing() {
    let (_dir, path, records) = store_with(4);
    let mut s = Store::open(&path).expect("open");
    // No record is older than at(1): record 1 happened exactly then.
    let report = prune_at(&mut s, 1, 1000);
    assert_eq!(report.removed, 0);
    assert_eq!(report.first_removed_seq, None);
    assert_eq!(report.checkpoint, None);
    assert_eq!(report.record, None);
    assert_eq!(report.remaining, 4);
    assert_eq!(report.oldest_remaining, Some(at(1)));
    assert_eq!(s.audit_records(0, 100).expect("read"), records);
    assert_eq!(checkpoint_count(&path), 0);
    let v = s.verify_audit_trail().expect("verify");
    assert!(v.report.ok);
    assert_eq!((v.checkpoint, v.pruned_by), (None, None));

    // An empty trail has nothing to prune either.
    let mut empty = Store::open_in_memory().expect("store");
    let report = prune_at(&mut empty, 1000, 1000);
    assert_eq!((report.removed, report.remaining), (0, 0));
    assert_eq!(report.oldest_remaining, None);
    assert_eq!(empty.audit_len().expect("len"), 0);
}

#[test]
fn pruning_again_removes_only_what_became_old() {
    let (_dir, path, _) = store_with(10);
    let mut s = Store::open(&path).expect("open");
    assert_eq!(prune_at(&mut s, 4, 100).removed, 3);
    // The same cutoff again: nothing more, and no second checkpoint or record.
    let again = prune_at(&mut s, 4, 101);
    assert_eq!(again.removed, 0);
    assert_eq!(s.audit_len().expect("len"), 8);
    assert_eq!(checkpoint_count(&path), 1);

    // Everything is old now, the first pruning's own record (at 100) included.
    let all = prune_at(&mut s, 200, 200);
    assert_eq!(all.removed, 8);
    assert_eq!(all.first_removed_seq, Some(4));
    assert_eq!(all.checkpoint.as_ref().map(|c| c.seq), Some(11));
    assert_eq!(all.remaining, 1);
    assert_eq!(all.oldest_remaining, Some(at(200)));
    let last = all.record.clone().expect("record");
    assert_eq!(last.seq, 12);
    assert_eq!(s.audit_records(0, 100).expect("read"), vec![last]);
    let v = s.verify_audit_trail().expect("verify");
    assert!(v.report.ok, "{}", v.report);
    assert_eq!(v.checkpoint.map(|c| c.seq), Some(11));
    assert_eq!(v.pruned_by, Some(12));
    assert_eq!(checkpoint_count(&path), 2);
}

#[test]
fn only_a_prefix_is_removed_when_clocks_went_backwards() {
    let mut s = Store::open_in_memory().expect("store");
    // Record 3 is young; record 4 carries an old timestamp (a clock set back) and stays,
    // because removing it would cut a hole after record 3.
    for secs in [1, 2, 100, 3, 4] {
        let mut e = event(1);
        e.timestamp = at(secs);
        s.append_audit(e).expect("append");
    }
    let report = prune_at(&mut s, 50, 1000);
    assert_eq!(report.removed, 2);
    assert_eq!(report.checkpoint.map(|c| c.seq), Some(2));
    let seqs: Vec<u64> = s
        .audit_records(0, 100)
        .expect("read")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert!(s.verify_audit().expect("verify").ok);
}

#[test]
fn a_preview_changes_nothing_and_matches_the_pruning() {
    let (_dir, path, records) = store_with(10);
    let mut s = Store::open(&path).expect("open");
    let preview = s
        .preview_audit_prune(at(8), at(1000), Some("why"))
        .expect("preview");
    assert!(preview.dry_run);
    assert_eq!(preview.removed, 7);
    assert_eq!(preview.record, None);
    assert_eq!(s.audit_records(0, 100).expect("read"), records);
    assert_eq!(checkpoint_count(&path), 0);

    let done = s
        .prune_audit(at(8), at(1000), "daemon", Some("why"))
        .expect("prune");
    assert_eq!(done.removed, preview.removed);
    assert_eq!(done.first_removed_seq, preview.first_removed_seq);
    assert_eq!(done.checkpoint, preview.checkpoint);
    assert_eq!(done.remaining, preview.remaining);
    assert_eq!(done.oldest_remaining, preview.oldest_remaining);

    // A preview that would remove everything.
    let all = s
        .preview_audit_prune(at(5000), at(5000), None)
        .expect("preview");
    assert_eq!((all.removed, all.remaining), (4, 1));
    assert_eq!(all.oldest_remaining, Some(at(5000)));
    let none = s
        .preview_audit_prune(at(0), at(5000), None)
        .expect("preview");
    assert_eq!((none.removed, none.remaining), (0, 4));
}

#[test]
fn a_broken_trail_is_never_pruned() {
    let (_dir, path, records) = store_with(8);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])
        .expect("edit");
    drop(conn);
    let mut s = Store::open(&path).expect("open");
    for result in [
        s.preview_audit_prune(at(100), at(100), None),
        s.prune_audit(at(100), at(100), "daemon", None),
    ] {
        let err = result.expect_err("a broken trail must not be pruned");
        assert!(matches!(err, StoreError::AuditPruneRefused { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("broken at record 3"), "{text}");
        assert!(text.contains("evidence"), "{text}");
    }
    // The evidence is still there.
    assert_eq!(s.audit_len().expect("len"), 8);
    assert_eq!(checkpoint_count(&path), 0);
    let report = s.verify_audit().expect("verify");
    assert_eq!(report.problem.map(|p| p.seq), Some(3));
    assert_eq!(s.audit_records(4, 1).expect("read"), records[3..4]);
}

#[test]
fn after_pruning_the_triggers_still_refuse_every_other_delete() {
    let (_dir, path, _) = store_with(10);
    prune_at(&mut Store::open(&path).expect("open"), 6, 1000);
    let conn = raw(&path);
    for sql in [
        // In the middle of the kept trail.
        "DELETE FROM audit WHERE seq = 8",
        // The first kept record, right after the checkpoint.
        "DELETE FROM audit WHERE seq = 6",
        // Everything: the statement fails as a whole.
        "DELETE FROM audit",
        "DELETE FROM audit WHERE seq >= 6",
    ] {
        let err = conn.execute(sql, []).expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let err = conn
        .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 7", [])
        .expect_err("update");
    assert!(err.to_string().contains("append-only"), "{err}");
    drop(conn);
    let s = Store::open(&path).expect("open");
    assert_eq!(s.audit_len().expect("len"), 6);
    assert!(s.verify_audit().expect("verify").ok);
}

#[test]
fn checkpoints_cannot_be_changed_removed_or_forged() {
    let (_dir, path, records) = store_with(10);
    prune_at(&mut Store::open(&path).expect("open"), 6, 1000);
    let conn = raw(&path);
    let forged = "f".repeat(64);
    let err = conn
        .execute(
            "UPDATE audit_checkpoints SET hash = ?1 WHERE seq = 5",
            [&forged],
        )
        .expect_err("changing a checkpoint must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("UPDATE audit_checkpoints SET seq = 9 WHERE seq = 5", [])
        .expect_err("moving a checkpoint must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit_checkpoints", [])
        .expect_err("removing a checkpoint must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    // A checkpoint with another hash than its record's, to delete records under cover.
    let err = conn
        .execute(
            "INSERT INTO audit_checkpoints (seq, hash, created_at) VALUES (8, ?1, ?2)",
            [forged.as_str(), "2024-05-02T00:00:00.000000000Z"],
        )
        .expect_err("a forged checkpoint must be refused");
    assert!(err.to_string().contains("hash of the record"), "{err}");
    drop(conn);
    assert_eq!(checkpoint_count(&path), 1);
    let s = Store::open(&path).expect("open");
    assert!(s.verify_audit().expect("verify").ok);
    assert_eq!(
        s.audit_checkpoints().expect("checkpoints")[0].hash,
        records[4].hash
    );
}

/// Prunes records 1..=5 of 10, then lets `tamper` change the file with every trigger
/// dropped, and returns what verification says.
fn problem_after_pruning_and(tamper: &str) -> VerifyProblem {
    let (_dir, path, _) = store_with(10);
    prune_at(&mut Store::open(&path).expect("open"), 6, 1000);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute_batch(
        "DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;",
    )
    .expect("drop checkpoint triggers");
    conn.execute_batch(tamper).expect("tamper");
    drop(conn);
    problem_after_tampering(&path)
}

#[test]
fn tampering_after_pruning_is_still_detected() {
    let p = problem_after_pruning_and(
        "UPDATE audit SET details = json_set(details, '$.n', 99) WHERE seq = 8",
    );
    assert_eq!((p.seq, p.kind), (8, ProblemKind::Altered), "{p}");

    let p = problem_after_pruning_and("DELETE FROM audit WHERE seq = 7");
    assert_eq!((p.seq, p.kind), (8, ProblemKind::Missing), "{p}");

    // Removing the first kept record: the trail no longer links to its checkpoint.
    let p = problem_after_pruning_and("DELETE FROM audit WHERE seq = 6");
    assert_eq!((p.seq, p.kind), (7, ProblemKind::BadStart), "{p}");

    // A checkpoint whose hash was changed no longer anchors the trail.
    let p = problem_after_pruning_and(&format!(
        "UPDATE audit_checkpoints SET hash = '{}' WHERE seq = 5",
        "0".repeat(64)
    ));
    assert_eq!((p.seq, p.kind), (6, ProblemKind::BadStart), "{p}");

    // A checkpoint removed: the gap before the trail is reported.
    let p = problem_after_pruning_and("DELETE FROM audit_checkpoints");
    assert_eq!((p.seq, p.kind), (6, ProblemKind::BadStart), "{p}");
}

#[test]
fn records_deleted_behind_a_forged_checkpoint_fail_verification() {
    // Deleting up to a checkpoint by hand passes the trigger (that is what pruning does), and
    // the chain from the checkpoint verifies; but no audit.pruned record states the deletion,
    // so the trail is not intact: the first record deleted is named.
    let (_dir, path, records) = store_with(6);
    let conn = raw(&path);
    conn.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created_at) VALUES (3, ?1, ?2)",
        [records[2].hash.as_str(), "2024-05-02T00:00:00.000000000Z"],
    )
    .expect("checkpoint with the right hash");
    conn.execute("DELETE FROM audit WHERE seq <= 3", [])
        .expect("delete behind the checkpoint");
    drop(conn);
    let v = Store::open(&path)
        .expect("open")
        .verify_audit_trail()
        .expect("verify");
    assert!(!v.report.ok, "{}", v.report);
    let p = v.report.problem.clone().expect("a problem");
    assert_eq!((p.seq, p.kind), (1, ProblemKind::Missing), "{p}");
    assert!(p.message.contains("no audit.pruned record"), "{p}");
    assert_eq!(v.checkpoint.map(|c| c.seq), Some(3));
    assert_eq!(v.pruned_by, None);
}

#[test]
fn a_forged_deletion_after_a_real_pruning_names_the_first_record_it_removed() {
    let (_dir, path, _) = store_with(10);
    let mut s = Store::open(&path).expect("open");
    // A real pruning of 1..=5 (checkpoint 5, audit.pruned appended as #11).
    prune_at(&mut s, 6, 1000);
    let all = s.audit_records(0, 100).expect("records");
    assert!(s.verify_audit_trail().expect("verify").report.ok);
    drop(s);
    // Then records 6..=8 deleted behind a checkpoint with record 8's real hash.
    let eight = all.iter().find(|r| r.seq == 8).expect("record 8");
    let conn = raw(&path);
    conn.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created_at) VALUES (8, ?1, ?2)",
        [eight.hash.as_str(), "2024-05-02T00:00:00.000000000Z"],
    )
    .expect("checkpoint");
    conn.execute("DELETE FROM audit WHERE seq <= 8", [])
        .expect("delete behind it");
    drop(conn);
    let v = Store::open(&path)
        .expect("open")
        .verify_audit_trail()
        .expect("verify");
    assert!(!v.report.ok, "{}", v.report);
    let p = v.report.problem.expect("a problem");
    assert_eq!((p.seq, p.kind), (6, ProblemKind::Missing), "{p}");
}

#[test]
fn a_pruned_trail_exports_its_checkpoint_first() {
    let (_dir, path, records) = store_with(10);
    let mut s = Store::open(&path).expect("open");
    let report = prune_at(&mut s, 6, 1000);
    let checkpoint = report.checkpoint.expect("checkpoint");

    // JSONL: a checkpoint line, then records.
    let mut out = Vec::new();
    assert_eq!(
        s.export_audit(&mut out, AuditFormat::Jsonl)
            .expect("export"),
        6
    );
    let text = String::from_utf8(out).expect("utf-8");
    let mut lines = text.lines();
    let first: serde_json::Value =
        serde_json::from_str(lines.next().expect("a first line")).expect("JSON");
    assert_eq!(
        first,
        serde_json::json!({"checkpoint": {
            "seq": 5,
            "hash": records[4].hash,
            "created_at": "2024-05-01T12:16:40.000000000Z",
            "note": "retention test",
        }})
    );
    let parsed: Vec<AuditRecord> = lines
        .map(|l| serde_json::from_str(l).expect("a record per line"))
        .collect();
    assert_eq!(parsed, s.audit_records(0, 100).expect("read"));
    let anchor = (
        first["checkpoint"]["seq"].as_u64().expect("seq"),
        first["checkpoint"]["hash"]
            .as_str()
            .expect("hash")
            .to_string(),
    );
    assert!(audit::verify(parsed.clone(), Some(anchor)).ok);
    // Without its checkpoint, the export does not verify: the line is needed.
    assert!(!audit::verify(parsed, None).ok);

    // CSV: the checkpoint row, then records; each row links to the one above.
    let mut out = Vec::new();
    assert_eq!(
        s.export_audit(&mut out, AuditFormat::Csv).expect("export"),
        6
    );
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("csv row")).collect();
    assert_eq!(rows.len(), 7);
    let cp = &rows[0];
    assert_eq!(&cp[0], "5");
    assert_eq!(&cp[1], "2024-05-01T12:16:40.000000000Z");
    assert_eq!(&cp[2], "");
    assert_eq!(&cp[3], "audit.checkpoint");
    assert_eq!(&cp[6], r#"{"note":"retention test"}"#);
    assert_eq!(&cp[7], "");
    assert_eq!(&cp[8], checkpoint.hash);
    for pair in rows.windows(2) {
        assert_eq!(
            &pair[1][7], &pair[0][8],
            "row {} links to the row above",
            &pair[1][0]
        );
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let parsed: Vec<AuditRecord> = rows[1..]
        .iter()
        .map(|row| AuditRecord {
            seq: row[0].parse().expect("seq"),
            event: AuditEvent {
                timestamp: row[1].parse().expect("timestamp"),
                actor: row[2].to_string(),
                action: row[3].to_string(),
                asset_id: opt(&row[4]),
                correlation_id: opt(&row[5]),
                details: serde_json::from_str(&row[6]).expect("details"),
            },
            prev_hash: row[7].to_string(),
            hash: row[8].to_string(),
        })
        .collect();
    assert!(audit::verify(parsed, Some((5, cp[8].to_string()))).ok);
}

#[test]
fn a_pruned_state_dump_imports_and_replaces() {
    let (_dir, path, _) = store_with(10);
    let mut s = Store::open(&path).expect("open");
    prune_at(&mut s, 6, 1000);
    let dump = s.export_state().expect("export");
    assert_eq!(dump.audit_checkpoints.len(), 1);

    // Into an empty store: verifies from the checkpoint, and continues.
    let mut copy = Store::open_in_memory().expect("store");
    copy.import_state(&dump, false).expect("import");
    let v = copy.verify_audit_trail().expect("verify");
    assert!(v.report.ok, "{}", v.report);
    assert_eq!(
        (v.checkpoint.map(|c| c.seq), v.pruned_by),
        (Some(5), Some(11))
    );

    // The original goes on; replacing the copy with its newer state keeps the copy's
    // checkpoint (checkpoints are append-only) and extends its trail.
    s.append_audit(event(50)).expect("append");
    s.append_audit(event(51)).expect("append");
    let newer = s.export_state().expect("export");
    copy.import_state(&newer, true).expect("replace");
    assert_eq!(copy.audit_len().expect("len"), 8);
    assert!(copy.verify_audit().expect("verify").ok);
    assert_eq!(
        copy.audit_checkpoints().expect("checkpoints"),
        dump.audit_checkpoints
    );
    assert_eq!(
        copy.audit_head().expect("head"),
        s.audit_head().expect("head")
    );
}

#[test]
fn a_version_2_database_gains_the_retention_triggers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    testing::migrate_file_to(&path, 2).expect("v2");
    let mut prev: Option<AuditRecord> = None;
    let conn = raw(&path);
    for n in 1..=6 {
        let r = audit::next(prev.as_ref(), event(n));
        conn.execute(
            "INSERT INTO audit (seq, timestamp, actor, action, asset_id, correlation_id, \
             details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                r.seq as i64,
                audit::canonical_timestamp(&r.event.timestamp),
                r.event.actor,
                r.event.action,
                r.event.asset_id,
                r.event.correlation_id,
                serde_json::to_string(&r.event.details).expect("json"),
                r.prev_hash,
                r.hash,
            ],
        )
        .expect("insert as release 2 did");
        prev = Some(r);
    }
    // Release 2 refused every delete.
    let err = conn
        .execute("DELETE FROM audit WHERE seq = 1", [])
        .expect_err("v2 refuses");
    assert!(err.to_string().contains("append-only"), "{err}");
    drop(conn);

    let mut s = Store::open(&path).expect("open migrates");
    assert_eq!(
        s.schema_version().expect("version"),
        safe_updater_store::SCHEMA_VERSION
    );
    assert!(s.verify_audit().expect("verify").ok);
    assert_eq!(prune_at(&mut s, 4, 1000).removed, 3);
    drop(s);
    let conn = raw(&path);
    let err = conn
        .execute("DELETE FROM audit WHERE seq = 5", [])
        .expect_err("beyond the checkpoint");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit_checkpoints", [])
        .expect_err("checkpoints are append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any interleaving of appends and prunes (at any cutoff) leaves a trail that verifies,
    /// whose export verifies on its own from the checkpoint it names, and whose records are
    /// exactly the ones not yet due.
    #[test]
    fn appends_and_prunes_always_verify(
        steps in prop::collection::vec((1u64..6, 0i64..80), 1..8),
    ) {
        let mut s = Store::open_in_memory().expect("store");
        let mut clock = 0i64;
        for (appends, back) in steps {
            for _ in 0..appends {
                clock += 1;
                let mut e = event(clock as u64);
                e.timestamp = at(clock);
                s.append_audit(e).expect("append");
            }
            clock += 1;
            let cutoff = clock - back;
            let before = s.audit_len().expect("len");
            let report = s
                .prune_audit(at(cutoff), at(clock), "daemon", None)
                .expect("prune");
            prop_assert_eq!(before - report.removed + u64::from(report.removed > 0), report.remaining);
            prop_assert_eq!(s.audit_len().expect("len"), report.remaining);
            let v = s.verify_audit_trail().expect("verify");
            prop_assert!(v.report.ok, "{}", v.report);
            if report.removed > 0 {
                prop_assert_eq!(v.pruned_by, report.record.as_ref().map(|r| r.seq));
            }
            // Every record left but the pruning's own is at or after the cutoff... unless it
            // came after a young one (timestamps here only grow, so never).
            for r in s.audit_records(0, usize::MAX).expect("read") {
                prop_assert!(r.event.timestamp >= at(cutoff), "record {} is due", r.seq);
            }

            let mut out = Vec::new();
            s.export_audit(&mut out, AuditFormat::Jsonl).expect("export");
            let text = String::from_utf8(out).expect("utf-8");
            let mut anchor = None;
            let mut records = Vec::new();
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                if let Some(c) = value.get("checkpoint") {
                    anchor = Some((
                        c["seq"].as_u64().expect("seq"),
                        c["hash"].as_str().expect("hash").to_string(),
                    ));
                } else {
                    records.push(serde_json::from_value::<AuditRecord>(value).expect("record"));
                }
            }
            prop_assert!(audit::verify(records, anchor).ok);
        }
    }
}
