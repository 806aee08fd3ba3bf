//! The operator commands run as people and scripts run them: `approvals`, `approve`, `reject`,
//! `skip`, `snooze`, `unsnooze`, `pin`, `unpin` — exit codes (0 done, 1 refused or invalid, 2
//! usage), JSON, the sentences people read, and the audit trail they leave.
//!
//! Most tests fill a real state database through `safe_updater_store` as `check` fills it. The
//! last one runs the whole loop against the real Docker engine and registry of
//! `scripts/dev-env`: a minor update waits for review, a snooze holds it, an approval lets the
//! next `run --once` apply it. Without that environment it is skipped with the reason printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use jiff::{SignedDuration, Timestamp};
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_store::{DecisionRecord, Store};
use serde_json::Value;
use tempfile::TempDir;

const WEB: &str = "docker/local/web";
const IMAGE: &str = "127.0.0.1:5001/demo/web:1.0.0";

mod common;
use common::{Containers, Run, bin_as, docker, exec};

fn bin(user: &str) -> Command {
    bin_as(user)
}

fn run_as(user: &str, state: &Path, args: &[&str]) -> Run {
    let mut c = bin(user);
    c.arg("--state").arg(state);
    exec(c, args)
}

fn run(state: &Path, args: &[&str]) -> Run {
    run_as("alice", state, args)
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn web_asset() -> Asset {
    Asset {
        id: WEB.into(),
        kind: AssetKind::Container,
        location: "local".into(),
        namespace: None,
        name: "web".into(),
        container: None,
        image: IMAGE.into(),
        digest: None,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        first_seen: now(),
        last_seen: now(),
        extra: serde_json::json!({}),
    }
}

fn decision(candidate: &str, change: &str, verdict: &str, gate: &str) -> DecisionRecord {
    DecisionRecord {
        asset_id: WEB.into(),
        at: now(),
        actor: "cli:checker".into(),
        current: "1.0.0".into(),
        candidate: Some(candidate.into()),
        change: change.into(),
        gate: gate.into(),
        decision: verdict.into(),
        rule: Some(format!("default.{change}")),
        reason: format!("1.0.0 → {candidate} is a {change} update"),
        correlation_id: Some("cid".into()),
    }
}

/// A state database as `check` leaves it: `web` runs 1.0.0, 1.1.0 waits for review, 2.0.0 for
/// a person (not in the queue).
fn seeded() -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).expect("store");
    s.upsert_assets(&[web_asset()]).expect("asset");
    s.record_decision(&decision("1.1.0", "minor", "pending_review", "review"))
        .expect("decision");
    s.record_decision(&decision("2.0.0", "major", "manual_approval", "manual"))
        .expect("decision");
    (dir, path)
}

fn audit(path: &Path) -> Vec<(String, String)> {
    let s = Store::open(path).expect("store");
    assert!(s.verify_audit().expect("verify").problem.is_none());
    s.audit_records(1, 1000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.event.action != "decision")
        .map(|r| (r.event.actor, r.event.action))
        .collect()
}

#[test]
fn an_empty_queue_says_so_and_succeeds() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("state.db");
    drop(Store::open(&path).expect("store"));
    let r = run(&path, &["approvals"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "no updates wait for approval");
    let r = run(&path, &["approvals", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json(), serde_json::json!([]));

    // No database at all: say how to get one, create nothing.
    let missing = dir.path().join("missing.db");
    let r = run(&missing, &["approvals"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("safe-updater scan"), "{}", r.stderr);
    assert!(!missing.exists());
}

#[test]
fn approving_from_the_queue_is_recorded_once() {
    let (_dir, path) = seeded();
    let r = run(&path, &["approvals"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", r.stdout);
    assert!(
        lines[1].starts_with("docker/local/web@1.1.0"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].contains("minor") && lines[1].contains(IMAGE),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("2.0.0"),
        "manual updates are not reviews: {}",
        r.stdout
    );

    let list = run(&path, &["approvals", "-o", "json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], "docker/local/web@1.1.0");
    assert_eq!(list[0]["asset_name"], "web");
    assert_eq!(list[0]["from"], IMAGE);
    assert_eq!(list[0]["candidate"], "1.1.0");
    assert_eq!(list[0]["change"], "minor");
    assert_eq!(list[0]["rule"], "default.minor");

    let r = run(&path, &["approve", "docker/local/web@1.1.0"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with(
            "approved docker/local/web@1.1.0 as cli:alice; the next `safe-updater run --once`"
        ),
        "{}",
        r.stdout
    );
    let r = run(&path, &["approvals"]);
    assert_eq!(r.stdout.trim(), "no updates wait for approval");

    // Answering again is refused, naming the first answer; in JSON too.
    let r = run_as("bob", &path, &["approve", "docker/local/web@1.1.0"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("docker/local/web@1.1.0 was already approved by cli:alice"),
        "{}",
        r.stderr
    );
    let r = run_as(
        "bob",
        &path,
        &[
            "reject",
            "docker/local/web@1.1.0",
            "--reason",
            "no",
            "-o",
            "json",
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("already approved by cli:alice")),
        "{}",
        r.stdout
    );
    assert_eq!(
        audit(&path),
        [("cli:alice".to_owned(), "approval".to_owned())]
    );
}

#[test]
fn rejecting_needs_a_reason_and_an_id_from_the_queue() {
    let (_dir, path) = seeded();
    let r = run(&path, &["reject", "docker/local/web@1.1.0"]);
    assert_eq!(r.code, 2, "a missing --reason is a usage error: {r:?}");
    let r = run(
        &path,
        &["reject", "docker/local/web@1.1.0", "--reason", "  "],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("needs a reason"), "{}", r.stderr);
    let r = run(
        &path,
        &["reject", "docker/local/web@1.2.0", "--reason", "x"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(
            "no update waits for approval as docker/local/web@1.2.0; `safe-updater approvals` lists"
        ),
        "{}",
        r.stderr
    );
    let r = run(&path, &["approve", "web"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("<asset id>@<candidate>"), "{}", r.stderr);

    let r = run(
        &path,
        &[
            "reject",
            "docker/local/web@1.1.0",
            "--reason",
            "breaks login",
            "-o",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["approval"]["verdict"], "rejected");
    assert_eq!(j["approval"]["operator"], "cli:alice");
    assert_eq!(j["approval"]["reason"], "breaks login");
    assert_eq!(
        run(&path, &["approvals", "-o", "json"]).json(),
        serde_json::json!([])
    );
    assert_eq!(
        audit(&path),
        [("cli:alice".to_owned(), "rejection".to_owned())]
    );
}

#[test]
fn skip_pin_and_snooze_are_set_checked_and_undone() {
    let (_dir, path) = seeded();

    // skip
    let r = run(
        &path,
        &["skip", WEB, "2.0.0", "--reason", "waits for the new schema"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("skipped 2.0.0 for docker/local/web"),
        "{}",
        r.stdout
    );
    let r = run(&path, &["skip", "docker/local/nope", "2.0.0"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("`safe-updater list-assets` shows the ids"),
        "{}",
        r.stderr
    );
    let r = run(&path, &["skip", WEB, "not a tag"]);
    assert_eq!(r.code, 1, "{r:?}");

    // pin
    let r = run(&path, &["pin", WEB, "~1.x.y.z"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("is not a version constraint"),
        "{}",
        r.stderr
    );
    let r = run(&path, &["pin", WEB, "~1.0", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["pin"]["constraint"], "~1.0");
    assert_eq!(j["pin"]["by"], "cli:alice");
    let r = run_as("bob", &path, &["unpin", WEB]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.trim(),
        "docker/local/web is no longer pinned (it was pinned to ~1.0 by cli:alice)"
    );
    let r = run(&path, &["unpin", WEB]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("docker/local/web is not pinned"),
        "{}",
        r.stderr
    );

    // snooze, by duration and by time
    let before = now();
    let r = run(&path, &["snooze", WEB, "--until", "7d", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let until: Timestamp = r.json()["snooze"]["until"]
        .as_str()
        .expect("until")
        .parse()
        .expect("timestamp");
    let week = SignedDuration::from_hours(7 * 24);
    assert!(until >= before + week && until <= now() + week, "{until}");
    let r = run(&path, &["snooze", WEB, "--until", "2099-01-01T00:00:00Z"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("until 2099-01-01T00:00:00Z"),
        "{}",
        r.stdout
    );
    for bad in ["2001-01-01T00:00:00Z", "soon"] {
        let r = run(&path, &["snooze", WEB, "--until", bad]);
        assert_eq!(r.code, 1, "{bad}: {r:?}");
    }
    let r = run(&path, &["unsnooze", WEB]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&path, &["unsnooze", WEB]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not snoozed"), "{}", r.stderr);

    let who = |u: &str, a: &str| (u.to_owned(), a.to_owned());
    assert_eq!(
        audit(&path),
        [
            who("cli:alice", "rejection"),
            who("cli:alice", "pin"),
            who("cli:bob", "unpin"),
            who("cli:alice", "snooze"),
            who("cli:alice", "snooze"),
            who("cli:alice", "unsnooze"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The whole loop against the real Docker engine and registry.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_approved_review_is_applied_by_the_next_run_once_and_a_snooze_holds_it() {
    // Fails, saying how to start the environment, rather than skips.
    let registry = common::env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let name = format!(
        "su-e2e-approve-{}-{}",
        std::process::id(),
        Timestamp::now().as_millisecond()
    );
    let _guard = Containers(vec![name.clone(), format!("{name}.su-old")]);
    for tag in ["1.0.0", "1.1.0"] {
        docker(&["pull", "-q", &format!("{registry}/demo/web:{tag}")]);
    }
    // Patches are skipped for this container, so the only thing that can happen is the
    // reviewed minor (1.1.0); the major (2.0.0) stays manual.
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &common::in_scope(&name),
        "--label",
        "safe-updater.io/patch=skip",
        &format!("{registry}/demo/web:1.0.0"),
    ]);

    let dir = TempDir::new().expect("tempdir");
    let host = common::docker_host();
    // Other containers on the shared engine are out of scope.
    let config = format!(
        "scope: {name}\ndocker:\n  engines:\n    - name: local\n      host: {host}\nhealth:\n  window: 4s\n  interval: 1s\n  failure_threshold: 2\npolicy:\n  enabled: false\nresources:\n  - match: {{ name: \"{name}\" }}\n    policy: {{ enabled: true }}\n"
    );
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config).expect("config");
    let state = dir.path().join("state.db");
    let cli = |args: &[&str]| -> Run {
        let out = bin("alice")
            .arg("--config")
            .arg(&cfg)
            .arg("--state")
            .arg(&state)
            .args(["--output", "json"])
            .args(args)
            .output()
            .expect("run safe-updater");
        Run {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            code: out.status.code().expect("exited"),
            stdout: String::from_utf8(out.stdout).expect("utf-8"),
            stderr: String::from_utf8(out.stderr).expect("utf-8"),
        }
    };
    let asset_id = format!("docker/local/{name}");
    let applied = |run: &Value| -> Vec<Value> {
        run["applied"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["asset_id"] == asset_id.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };

    // Cycle 1: nothing may proceed by itself; the minor lands in the queue.
    let r = cli(&["run", "--once"]);
    let run1 = r.json();
    assert!(applied(&run1).is_empty(), "{run1} {}", r.stderr);
    let queue = cli(&["approvals"]).json();
    let ids: Vec<&str> = queue
        .as_array()
        .expect("queue")
        .iter()
        .filter(|p| p["asset_id"] == asset_id.as_str())
        .filter_map(|p| p["id"].as_str())
        .collect();
    let id = format!("{asset_id}@1.1.0");
    assert_eq!(ids, [id.as_str()], "{queue}");

    // Approved but snoozed: cycle 2 leaves it alone.
    assert_eq!(cli(&["snooze", &asset_id, "--until", "1h"]).code, 0);
    let r = cli(&["approve", &id]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = cli(&["run", "--once"]);
    let run2 = r.json();
    assert!(applied(&run2).is_empty(), "the snooze holds it: {run2}");
    assert!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &name]).ends_with(":1.0.0"),
        "still on 1.0.0"
    );

    // Snooze ended: cycle 3 applies the approved minor and verifies it.
    assert_eq!(cli(&["unsnooze", &asset_id]).code, 0);
    let r = cli(&["run", "--once"]);
    let run3 = r.json();
    let done = applied(&run3);
    assert_eq!(done.len(), 1, "{run3} {}", r.stderr);
    assert_eq!(done[0]["status"], "succeeded", "{}", done[0]);
    assert!(
        done[0]["to"].as_str().unwrap_or("").ends_with(":1.1.0"),
        "{}",
        done[0]
    );
    assert!(docker(&["inspect", "--format", "{{.Config.Image}}", &name]).ends_with(":1.1.0"));
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &name]),
        "true"
    );
    let r = cli(&["approvals"]);
    assert!(
        !r.stdout.contains(&asset_id),
        "nothing waits for it any more: {}",
        r.stdout
    );

    let trail = audit(&state);
    for action in ["snooze", "approval", "unsnooze"] {
        assert!(
            trail
                .iter()
                .any(|(actor, a)| actor == "cli:alice" && a == action),
            "{action} by cli:alice missing: {trail:?}"
        );
    }
    assert!(
        trail.iter().any(|(_, a)| a == "update.succeeded"),
        "{trail:?}"
    );
}
