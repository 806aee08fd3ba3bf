//! The audit trail as stored: append-only triggers, tampering found by verification, exports.

mod common;

use std::path::Path;

use common::event;
use proptest::prelude::*;
use rusqlite::Connection;
use safe_updater_core::audit::{self, AuditEvent, AuditRecord, ProblemKind, VerifyProblem};
use safe_updater_store::{AuditFormat, Store};

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
    let (_dir, path, records) = store_with(6);
    let conn = raw(&path);
    drop_triggers(&conn);
    conn.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created_at) VALUES (3, ?1, ?2)",
        [records[2].hash.as_str(), "2024-05-02T00:00:00.000000000Z"],
    )
    .expect("checkpoint");
    conn.execute("DELETE FROM audit WHERE seq <= 3", [])
        .expect("prune");
    drop(conn);
    let mut s = Store::open(&path).expect("open");
    let report = s.verify_audit().expect("verify");
    assert!(report.ok, "{report}");
    assert_eq!(report.checked, 3);
    // Appending continues the chain.
    assert_eq!(s.append_audit(event(7)).expect("append").seq, 7);
    assert!(s.verify_audit().expect("verify").ok);
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
