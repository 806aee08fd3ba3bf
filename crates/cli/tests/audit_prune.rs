//! `safe-updater audit prune` and what `audit verify` and `audit export` say about a pruned
//! trail, run as the built binary on a real state file.
//!
//! The binary prunes relative to the real clock, so the records are written at times relative
//! to now: five from about 200 days ago, three from the last few days.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use safe_updater_core::audit::{self, AuditEvent, AuditRecord};
use safe_updater_store::Store;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Records older than 90 days, and in all.
const OLD: u64 = 5;
const ALL: u64 = 8;

mod common;
use common::{Run, bin_as, exec};

/// Runs `safe-updater --state <path> <args>` as alice and checks the exit code.
fn run(path: &Path, args: &[&str], code: i32) -> Run {
    let mut c = bin_as("alice");
    c.arg("--state").arg(path);
    let r = exec(c, args);
    assert_eq!(r.code, code, "{args:?}: {r:?}");
    r
}

fn days_ago(days: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_hours(24 * days)
}

/// A state file whose trail holds `OLD` records from about 200 days ago and three recent ones.
fn populated() -> (TempDir, PathBuf, Vec<AuditRecord>) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).expect("open store");
    let records = (0..ALL)
        .map(|i| {
            let timestamp = if i < OLD {
                days_ago(200) + SignedDuration::from_mins(i as i64)
            } else {
                days_ago(3) + SignedDuration::from_mins(i as i64)
            };
            s.append_audit(AuditEvent {
                timestamp,
                actor: "daemon".into(),
                action: "scan".into(),
                asset_id: Some(format!("docker/local/app{i}")),
                correlation_id: Some(format!("run-{i}")),
                details: json!({"i": i, "ratio": 0.25}),
            })
            .expect("append")
        })
        .collect();
    (dir, path, records)
}

fn store(path: &Path) -> Store {
    Store::open(path).expect("open store")
}

fn checkpoint_rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open")
        .query_row("SELECT count(*) FROM audit_checkpoints", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn a_dry_run_shows_what_would_go_and_changes_nothing() {
    let (_dir, path, records) = populated();
    let v = run(
        &path,
        &[
            "-o",
            "json",
            "audit",
            "prune",
            "--older-than",
            "90d",
            "--dry-run",
        ],
        0,
    )
    .json();
    assert_eq!(v["dry_run"], json!(true), "{v}");
    assert_eq!(v["removed"], json!(OLD));
    assert_eq!(v["first_removed_seq"], json!(1));
    assert_eq!(v["checkpoint"]["seq"], json!(OLD));
    assert_eq!(
        v["checkpoint"]["hash"],
        json!(records[OLD as usize - 1].hash)
    );
    assert_eq!(v["record"], Value::Null);
    assert_eq!(v["remaining"], json!(ALL - OLD + 1));

    let r = run(
        &path,
        &["audit", "prune", "--older-than", "90d", "--dry-run"],
        0,
    );
    let mut lines = r.stdout.lines();
    let first = lines.next().expect("a first line");
    assert!(
        first.starts_with(&format!(
            "would prune {OLD} audit record(s) older than 90d (before "
        )),
        "{first}"
    );
    let header = lines.next().expect("a table header");
    for column in [
        "REMOVED",
        "RECORDS",
        "CHECKPOINT",
        "CHECKPOINT HASH",
        "REMAINING",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row: Vec<&str> = lines
        .next()
        .expect("a table row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["5", "#1-#5", "#5", records[4].hash.as_str(), "4", "-"]
    );
    assert_eq!(lines.next(), Some("dry run: nothing was changed"));

    // Nothing changed.
    assert_eq!(store(&path).audit_records(0, 100).expect("read"), records);
    assert_eq!(checkpoint_rows(&path), 0);
}

#[test]
fn prune_then_verify_and_export_from_the_checkpoint() {
    let (dir, path, records) = populated();
    let cut = &records[OLD as usize - 1];
    let v = run(
        &path,
        &[
            "-o",
            "json",
            "audit",
            "prune",
            "--older-than",
            "90d",
            "--note",
            "TICKET-7",
        ],
        0,
    )
    .json();
    assert_eq!(v["dry_run"], json!(false), "{v}");
    assert_eq!(v["removed"], json!(OLD));
    assert_eq!(v["checkpoint"]["seq"], json!(OLD));
    assert_eq!(v["checkpoint"]["hash"], json!(cut.hash));
    assert_eq!(v["checkpoint"]["note"], json!("TICKET-7"));
    assert_eq!(v["remaining"], json!(ALL - OLD + 1));
    let pruned = &v["record"];
    assert_eq!(pruned["seq"], json!(ALL + 1));
    assert_eq!(pruned["action"], json!("audit.pruned"));
    assert_eq!(pruned["actor"], json!("cli:alice"));
    assert_eq!(pruned["details"]["removed"], json!(OLD));
    assert_eq!(pruned["details"]["up_to_seq"], json!(OLD));
    assert_eq!(pruned["details"]["up_to_hash"], json!(cut.hash));
    assert_eq!(pruned["details"]["note"], json!("TICKET-7"));

    // The store holds the recent records and the pruning's own.
    let kept = store(&path).audit_records(0, 100).expect("read");
    assert_eq!(kept.len() as u64, ALL - OLD + 1);
    assert_eq!(kept[..3], records[OLD as usize..]);

    // Pruning again: nothing is old enough any more, and nothing is written.
    let r = run(&path, &["audit", "prune", "--older-than", "90d"], 0);
    assert!(
        r.stdout.starts_with(&format!(
            "nothing to prune: none of the {} audit record(s) is older than 90d",
            ALL - OLD + 1
        )),
        "{}",
        r.stdout
    );
    assert_eq!(store(&path).audit_len().expect("len"), ALL - OLD + 1);

    // verify names the checkpoint, for people and for scripts.
    let r = run(&path, &["audit", "verify"], 0);
    let head = kept.last().expect("head");
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "audit trail intact: 4 record(s) verified, head #{} {}",
                head.seq, head.hash
            )
            .as_str()
        )
    );
    let second = lines.next().expect("the checkpoint line");
    assert!(
        second.starts_with(&format!(
            "the trail starts after checkpoint #5 {} (records up to #5 pruned ",
            cut.hash
        )),
        "{second}"
    );
    assert!(second.contains("note \"TICKET-7\""), "{second}");
    assert!(
        second.ends_with("the pruning is recorded in record #9"),
        "{second}"
    );
    let v = run(&path, &["-o", "json", "audit", "verify"], 0).json();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["checked"], json!(4));
    assert_eq!(v["checkpoint"]["seq"], json!(5));
    assert_eq!(v["checkpoint"]["hash"], json!(cut.hash));
    assert_eq!(v["pruned_by"], json!(9));

    // JSONL export: the checkpoint first, then records that verify from it on their own.
    let r = run(&path, &["audit", "export"], 0);
    let mut lines = r.stdout.lines();
    let first: Value = serde_json::from_str(lines.next().expect("first line")).expect("JSON");
    assert_eq!(first["checkpoint"]["seq"], json!(5), "{first}");
    assert_eq!(first["checkpoint"]["hash"], json!(cut.hash));
    let exported: Vec<AuditRecord> = lines
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    assert_eq!(exported, kept);
    let report = audit::verify(exported, Some((5, cut.hash.clone())));
    assert!(report.ok, "{report}");

    // CSV export to a file: the checkpoint row after the header.
    let out = dir.path().join("audit.csv");
    run(
        &path,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--to",
            out.to_str().expect("UTF-8"),
        ],
        0,
    );
    let csv = std::fs::read_to_string(&out).expect("read export");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("seq,timestamp,actor,action,asset_id,correlation_id,details,prev_hash,hash")
    );
    let checkpoint_row = lines.next().expect("checkpoint row");
    assert!(
        checkpoint_row.starts_with("5,") && checkpoint_row.contains(",,audit.checkpoint,,,"),
        "{checkpoint_row}"
    );
    assert!(
        checkpoint_row.ends_with(&format!(",,{}", cut.hash)),
        "{checkpoint_row}"
    );
    let first_record = lines.next().expect("first record row");
    assert!(first_record.starts_with("6,"), "{first_record}");
    assert!(
        first_record.contains(&format!(",{},", cut.hash)),
        "the first record links to the checkpoint: {first_record}"
    );
    assert_eq!(lines.count(), 3);
}

#[test]
fn the_human_table_after_pruning() {
    let (_dir, path, records) = populated();
    let r = run(&path, &["audit", "prune", "--older-than", "12w"], 0);
    let mut lines = r.stdout.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("pruned 5 audit record(s) older than 12w (before ")),
        "{}",
        r.stdout
    );
    let _header = lines.next().expect("header");
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        row,
        [
            "5",
            "#1-#5",
            "#5",
            records[4].hash.as_str(),
            "4",
            "#9",
            "audit.pruned"
        ]
    );
    assert_eq!(lines.next(), None);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn nothing_old_enough_is_said_plainly() {
    let (_dir, path, records) = populated();
    let r = run(&path, &["audit", "prune", "--older-than", "365d"], 0);
    let line = r.stdout.trim_end();
    assert!(
        line.starts_with(&format!(
            "nothing to prune: none of the {ALL} audit record(s) is older than 365d (before "
        )),
        "{line}"
    );
    assert!(line.contains("; the oldest is from "), "{line}");
    let v = run(
        &path,
        &["-o", "json", "audit", "prune", "--older-than", "365d"],
        0,
    )
    .json();
    assert_eq!(v["removed"], json!(0), "{v}");
    assert_eq!(v["checkpoint"], Value::Null);
    assert_eq!(v["record"], Value::Null);
    assert_eq!(v["remaining"], json!(ALL));
    assert_eq!(store(&path).audit_records(0, 100).expect("read"), records);
    assert_eq!(checkpoint_rows(&path), 0);
    // An intact, never-pruned trail: verify prints exactly one line, as before.
    let r = run(&path, &["audit", "verify"], 0);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
}

#[test]
fn bad_retention_periods_are_usage_errors() {
    let (_dir, path, records) = populated();
    let r = run(&path, &["audit", "prune", "--older-than", "0"], 2);
    assert!(r.stderr.contains("must be more than 0"), "{}", r.stderr);
    let r = run(&path, &["audit", "prune", "--older-than", "soon"], 2);
    assert!(
        r.stderr.contains("'soon' is not a duration"),
        "{}",
        r.stderr
    );
    let r = run(&path, &["audit", "prune"], 2);
    assert!(r.stderr.contains("--older-than"), "{}", r.stderr);
    assert_eq!(store(&path).audit_records(0, 100).expect("read"), records);
}

#[test]
fn a_broken_trail_is_not_pruned() {
    let (_dir, path, _) = populated();
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE seq = 2;",
    )
    .expect("tamper");
    drop(conn);
    let r = run(&path, &["audit", "prune", "--older-than", "90d"], 1);
    assert!(
        r.stderr.contains("refusing to prune the audit trail")
            && r.stderr.contains("broken at record 2"),
        "{}",
        r.stderr
    );
    let v = run(
        &path,
        &["-o", "json", "audit", "prune", "--older-than", "90d"],
        1,
    )
    .json();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken at record 2")),
        "{v}"
    );
    assert_eq!(store(&path).audit_len().expect("len"), ALL);
    assert_eq!(checkpoint_rows(&path), 0);
}

#[test]
fn verify_fails_when_no_pruning_record_explains_a_checkpoint() {
    // Records removed behind a checkpoint by hand, not by `audit prune`.
    let (_dir, path, records) = populated();
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created_at) VALUES (2, ?1, ?2)",
        [
            records[1].hash.as_str(),
            &audit::canonical_timestamp(&Timestamp::now()),
        ],
    )
    .expect("checkpoint");
    conn.execute("DELETE FROM audit WHERE seq <= 2", [])
        .expect("delete behind it");
    drop(conn);
    // Not intact: the records the forged checkpoint stands for are missing.
    let r = run(&path, &["audit", "verify"], 1);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        text.contains("records #1 to #2 are missing") && text.contains("no audit.pruned record"),
        "{text}"
    );
    let v = run(&path, &["-o", "json", "audit", "verify"], 1).json();
    assert_eq!(v["checkpoint"]["seq"], json!(2), "{v}");
    assert_eq!(v["pruned_by"], Value::Null);
    assert_eq!(v["ok"], json!(false), "{v}");
    assert_eq!(v["problem"]["seq"], json!(1), "{v}");
}
