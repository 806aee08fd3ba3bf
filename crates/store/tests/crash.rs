//! Crash safety: a writer killed with SIGKILL at arbitrary points loses nothing it reported as
//! committed, and leaves a database that passes SQLite's integrity check and whose audit
//! trail verifies.
//!
//! The test binary runs itself as the writer: `crash_child` does nothing in a normal test run,
//! and writes in a loop when `SU_STORE_CHILD` names a database.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use safe_updater_store::{Store, UpdateId, UpdateOutcome, UpdateStart, UpdateStatus};
use serde_json::json;

const CHILD_ENV: &str = "SU_STORE_CHILD";

/// The writer. Prints a line after each commit: `audit <seq> <hash>`, `update <id>` after
/// `begin_update`, `finished <id>` after `finish_update`.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = Store::open(&path).expect("child: open");
    let stdout = std::io::stdout();
    let started = Instant::now();
    // Bounded, in case the parent dies without killing it.
    for n in 0u64..200_000 {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let mut out = stdout.lock();
        if n % 4 == 3 {
            let id = store
                .begin_update(&UpdateStart {
                    // One asset per update: an asset has at most one update in progress.
                    asset_id: format!("asset-{}-{n}", std::process::id()),
                    from_ref: "app:1".into(),
                    to_ref: format!("app:{n}"),
                    snapshot: json!({"n": n, "spec": {"image": "app:1"}}),
                    correlation_id: Some(format!("child-{}", std::process::id())),
                    actor: "daemon".into(),
                    at: common::at(n as i64),
                })
                .expect("child: begin update");
            writeln!(out, "update {}", id.0).expect("child: stdout");
            if n % 8 == 7 {
                store
                    .finish_update(
                        id,
                        UpdateOutcome::Succeeded,
                        None,
                        common::at(n as i64),
                        "daemon",
                    )
                    .expect("child: finish update");
                writeln!(out, "finished {}", id.0).expect("child: stdout");
            }
        } else {
            let record = store.append_audit(common::event(n)).expect("child: append");
            writeln!(out, "audit {} {}", record.seq, record.hash).expect("child: stdout");
        }
        out.flush().expect("child: flush");
    }
}

#[test]
fn killed_writer_loses_nothing_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let exe = std::env::current_exe().expect("test binary");

    let mut audit: BTreeMap<u64, String> = BTreeMap::new();
    let mut begun: Vec<i64> = Vec::new();
    let mut finished: Vec<i64> = Vec::new();
    // (lines to read before the kill, pause before the kill in microseconds)
    let rounds = [
        (150, 0),
        (401, 700),
        (3, 0),
        (260, 2_500),
        (77, 150),
        (333, 0),
    ];
    for (round, (stop_after, pause_us)) in rounds.into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut read = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("audit"), Some(seq), Some(hash)) => {
                    audit.insert(seq.parse().expect("seq"), hash.to_string());
                }
                (Some("update"), Some(id), None) => begun.push(id.parse().expect("id")),
                (Some("finished"), Some(id), None) => finished.push(id.parse().expect("id")),
                // libtest's own lines.
                _ => continue,
            }
            read += 1;
            if read >= stop_after {
                break;
            }
        }
        assert_eq!(read, stop_after, "round {round}: the child stopped early");
        if pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
        // SIGKILL: no destructor, no rollback, possibly in the middle of a commit.
        child.kill().expect("kill child");
        child.wait().expect("reap child");
    }

    let conn = Connection::open(&path).expect("raw open");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    drop(conn);

    let store = Store::open(&path).expect("open after crashes");
    let report = store.verify_audit().expect("verify");
    assert!(report.ok, "{report}");
    let stored: BTreeMap<u64, String> = store
        .audit_records(1, usize::MAX)
        .expect("records")
        .into_iter()
        .map(|r| (r.seq, r.hash))
        .collect();
    for (seq, hash) in &audit {
        assert_eq!(
            stored.get(seq),
            Some(hash),
            "committed record {seq} lost or changed"
        );
    }
    for id in &begun {
        let update = store.update(UpdateId(*id)).expect("read update");
        assert!(update.is_some(), "committed update {id} lost");
        assert!(store.snapshot(UpdateId(*id)).expect("snapshot").is_some());
    }
    for id in &finished {
        let update = store.update(UpdateId(*id)).expect("read").expect("present");
        assert_eq!(update.status, UpdateStatus::Succeeded, "update {id}");
    }
    assert!(audit.len() > 500, "only {} records written", audit.len());
    // Shown with --nocapture: how far past the last line read the writers got.
    eprintln!(
        "{} rounds: {} audit records reported, {} stored; {} updates begun, {} left unfinished",
        rounds.len(),
        audit.len(),
        stored.len(),
        begun.len(),
        store.unfinished_updates().expect("unfinished").len()
    );
}
