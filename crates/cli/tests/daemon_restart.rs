//! `safe-updater watch` across a SIGKILL, and reloading on a file change, against the real
//! Docker engine and registry of `scripts/dev-env` (fails, never skips, without it).
//!
//! * A daemon killed with updates queued and one in its health window: the restarted daemon
//!   queues the interrupted entry again, `recover` restores the half-replaced container, and
//!   every update ends applied exactly once; "approval needed" was announced once in all.
//! * Editing the config file (no signal): a valid edit takes effect (a window opens, new API
//!   tokens replace the old at once), a broken edit is refused with its reason logged while the
//!   old configuration keeps running, and a new listen address is logged as needing a restart.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn start(dir: &TempDir, cfg: &std::path::Path, log: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("safe-updater"));
    cmd.arg("--config")
        .arg(cfg)
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["--log-format", "json", "watch"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join(log)).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("watch starts")
}

fn log_of(dir: &TempDir, log: &str) -> String {
    std::fs::read_to_string(dir.path().join(log)).unwrap_or_default()
}

fn healthy(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
        && http(port, "GET", "/healthz", &[], "").0 == 200
}

fn approvals_needed(notes: &std::sync::Mutex<Vec<Value>>, asset: &str) -> usize {
    notes
        .lock()
        .expect("lock")
        .iter()
        .filter(|n| n["event"] == "approval_needed" && n["asset_id"] == asset)
        .count()
}

#[test]
fn a_killed_daemon_restarts_and_finishes_its_queue_exactly_once() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let pid = std::process::id();
    let n = |what: &str| format!("su-e2e-restart-{what}-{pid}");
    let workers: Vec<String> = (0..4).map(|i| n(&format!("q{i}"))).collect();
    let review = n("review");
    let mut names = workers.clone();
    names.push(review.clone());
    let mut cleanup = Cleanup(names, None);
    let web = |tag: &str| format!("{registry}/demo/web:{tag}");
    for tag in ["1.0.0", "1.0.1"] {
        docker(&["pull", "-q", &web(tag)]);
    }
    // The bad 1.0.2 (fails its health check) is excluded: each goes to 1.0.1 in one update.
    let scope = format!("su-e2e-restart-{pid}");
    for w in &workers {
        docker(&[
            "run",
            "-d",
            "--name",
            w,
            "--label",
            &common::in_scope(&scope),
            "--label",
            "safe-updater.io/exclude=^1\\.0\\.2$",
            &web("1.0.0"),
        ]);
    }
    run_for_review(&review, &web("1.0.1"), &scope);

    let (hook_port, notes) = receiver();
    let port = free_port();
    let dir = TempDir::new().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    let host = docker_host();
    // One at a time with a long health window: when the first update is in flight, the others
    // wait in the queue.
    std::fs::write(
        &cfg,
        format!(
            "scope: {scope}\ndocker:\n  engines:\n    - {{ name: local, host: \"{host}\" }}\n\
             daemon: {{ interval: 2s, concurrency: 1, reload_poll: 1h }}\n\
             server: {{ listen: \"127.0.0.1:{port}\" }}\n\
             notifications:\n  urls: [\"http://127.0.0.1:{hook_port}/hook\"]\n\
             health: {{ window: 10s, interval: 1s, failure_threshold: 2 }}\n\
             policy:\n  enabled: false\n\
             resources:\n  - match: {{ name: \"su-e2e-restart-*-{pid}\" }}\n    policy: {{ enabled: true }}\n"
        ),
    )
    .expect("config");
    cleanup.1 = Some(start(&dir, &cfg, "first.log", &[]));
    wait_for("/healthz", Duration::from_secs(30), || healthy(port));
    let review_id = format!("docker/local/{review}");
    wait_for("approval needed announced", Duration::from_secs(60), || {
        approvals_needed(&notes, &review_id) == 1
    });
    // Wait for an update in its health window, with the rest still queued.
    wait_for(
        "one update in flight, others queued",
        Duration::from_secs(90),
        || {
            let q = cli_json(&dir, &["queue"]);
            let states: Vec<&str> = q
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["state"].as_str()).collect())
                .unwrap_or_default();
            let in_progress = workers.iter().any(|w| {
                cli_json(&dir, &["history", &format!("docker/local/{w}")])
                    .as_array()
                    .is_some_and(|h| h.iter().any(|u| u["status"] == "in_progress"))
            });
            in_progress
                && states.contains(&"in_flight")
                && states.iter().filter(|s| **s == "queued").count() >= 2
        },
    );
    // SIGKILL: no chance to finish or roll back.
    let mut first = cleanup.1.take().expect("child");
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let before = cli_json(&dir, &["queue"]);
    let in_flight: Vec<&Value> = before
        .as_array()
        .expect("queue")
        .iter()
        .filter(|e| e["state"] == "in_flight")
        .collect();
    assert_eq!(in_flight.len(), 1, "{before}");
    let killed_asset = in_flight[0]["asset_id"].as_str().expect("asset").to_owned();
    eprintln!("killed with {killed_asset} in flight; queue: {before}");

    cleanup.1 = Some(start(&dir, &cfg, "second.log", &[]));
    wait_for("/healthz after restart", Duration::from_secs(30), || {
        healthy(port)
    });
    wait_for(
        "every queued update applied",
        Duration::from_secs(180),
        || {
            workers.iter().all(|w| image_of(w).ends_with(":1.0.1"))
                && cli_json(&dir, &["queue"])
                    .as_array()
                    .is_some_and(Vec::is_empty)
        },
    );
    // A few more cycles: nothing is applied again, no review is announced again.
    let scans = metric(port, "safe_updater_scans_total");
    wait_for("three more cycles", Duration::from_secs(60), || {
        metric(port, "safe_updater_scans_total") >= scans + 3.0
    });
    signal(cleanup.1.as_ref().expect("child"), "TERM");
    let mut second = cleanup.1.take().expect("child");
    assert!(second.wait().expect("exit").success());

    let log = log_of(&dir, "second.log");
    assert!(log.contains("queue.requeued"), "{log}");
    assert!(log.contains("update.recovered"), "{log}");
    for w in &workers {
        let id = format!("docker/local/{w}");
        let history = cli_json(&dir, &["history", &id]);
        let updates = history.as_array().expect("history");
        let succeeded: Vec<&Value> = updates
            .iter()
            .filter(|u| u["status"] == "succeeded")
            .collect();
        assert_eq!(succeeded.len(), 1, "{id} applied exactly once: {history}");
        assert!(
            succeeded[0]["to_ref"]
                .as_str()
                .is_some_and(|t| t.ends_with(":1.0.1")),
            "{history}"
        );
        if id == killed_asset {
            assert!(
                updates.iter().any(|u| u["status"] == "rolled_back"
                    && u["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("interrupted"))),
                "the interrupted attempt is on record: {history}"
            );
        } else {
            assert_eq!(updates.len(), 1, "{history}");
        }
    }
    let all = cli_json(&dir, &["queue", "--all"]);
    for w in &workers {
        let id = format!("docker/local/{w}");
        let entries: Vec<&Value> = all
            .as_array()
            .expect("queue")
            .iter()
            .filter(|e| e["asset_id"] == id.as_str())
            .collect();
        assert_eq!(entries.len(), 1, "one entry per update: {all}");
        assert_eq!(entries[0]["state"], "done", "{all}");
        assert_eq!(entries[0]["outcome"], "succeeded", "{all}");
        let attempts = if id == killed_asset { 2 } else { 1 };
        assert_eq!(entries[0]["attempts"], attempts, "{all}");
    }
    assert_eq!(
        approvals_needed(&notes, &review_id),
        1,
        "announced once across the restart"
    );
}

#[test]
fn a_config_file_edit_reloads_without_a_signal_and_a_broken_one_is_refused() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let pid = std::process::id();
    let name = format!("su-e2e-reload-web-{pid}");
    let mut cleanup = Cleanup(vec![name.clone()], None);
    let web = |tag: &str| format!("{registry}/demo/web:{tag}");
    for tag in ["1.0.0", "1.0.1"] {
        docker(&["pull", "-q", &web(tag)]);
    }
    let scope = format!("su-e2e-reload-{pid}");
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &common::in_scope(&scope),
        &web("1.0.0"),
    ]);
    let port = free_port();
    let other_port = free_port();
    let dir = TempDir::new().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    let host = docker_host();
    let config = |listen: u16, token: &str, window: &str| {
        format!(
            "scope: {scope}\ndocker:\n  engines:\n    - {{ name: local, host: \"{host}\" }}\n\
             daemon: {{ interval: 2s, reload_poll: 1s }}\n\
             server:\n  listen: \"127.0.0.1:{listen}\"\n  tokens: [{{ name: alice, token_file: \"{token}\" }}]\n\
             health: {{ window: 3s, interval: 1s, failure_threshold: 2 }}\n\
             policy:\n  enabled: false\n{window}\
             resources:\n  - match: {{ name: \"su-e2e-reload-*-{pid}\" }}\n    policy: {{ enabled: true }}\n"
        )
    };
    let first_token = dir.path().join("first.token");
    let second_token = dir.path().join("second.token");
    std::fs::write(&first_token, "first-token-7f3a").expect("token");
    std::fs::write(&second_token, "second-token-c91e").expect("token");
    let first = first_token.display().to_string();
    let second = second_token.display().to_string();
    let closed = "  windows:\n    - { cron: \"0 0 1 1 *\", duration: 1m }\n";
    std::fs::write(&cfg, config(port, &first, closed)).expect("config");
    cleanup.1 = Some(start(&dir, &cfg, "daemon.log", &[]));
    wait_for("/healthz", Duration::from_secs(30), || healthy(port));
    wait_for("two cycles", Duration::from_secs(60), || {
        metric(port, "safe_updater_scans_total") >= 2.0
    });
    assert!(
        image_of(&name).ends_with(":1.0.0"),
        "applied outside the window"
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let get = |t: &str| {
        http(
            port,
            "GET",
            "/api/v1/approvals",
            &[("Authorization", &bearer(t))],
            "",
        )
        .0
    };
    assert_eq!(get("first-token-7f3a"), 200);
    assert_eq!(get("second-token-c91e"), 401);

    // A broken edit: refused with its reason, the old configuration keeps running.
    std::fs::write(&cfg, "daemon: { concurrency: many }\n").expect("broken config");
    wait_for("the refusal in the log", Duration::from_secs(15), || {
        let log = log_of(&dir, "daemon.log");
        log.lines().any(|l| {
            l.contains("config.rejected") && l.contains("file change") && l.contains("concurrency")
        })
    });
    assert!(healthy(port));
    assert_eq!(get("first-token-7f3a"), 200);
    let scans = metric(port, "safe_updater_scans_total");
    wait_for("cycles go on", Duration::from_secs(30), || {
        metric(port, "safe_updater_scans_total") > scans
    });
    assert!(
        image_of(&name).ends_with(":1.0.0"),
        "the old window still holds"
    );

    // A valid edit, no signal: the window opens, the new token replaces the old at once, and
    // the new listen address waits for a restart.
    std::fs::write(&cfg, config(other_port, &second, "")).expect("config");
    wait_for("the new token accepted", Duration::from_secs(15), || {
        get("second-token-c91e") == 200
    });
    assert_eq!(
        get("first-token-7f3a"),
        401,
        "the old token is refused at once"
    );
    wait_for("the update applied", Duration::from_secs(90), || {
        image_of(&name).ends_with(":1.0.1")
    });
    assert!(
        healthy(port),
        "the server keeps its address until a restart"
    );
    let log = log_of(&dir, "daemon.log");
    assert!(
        log.lines()
            .any(|l| l.contains("config.reloaded") && l.contains("file change")),
        "{log}"
    );
    assert!(log.contains("server.secrets_reloaded"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("config.restart_needed") && l.contains("server.listen")),
        "{log}"
    );
    assert!(
        !log.contains("first-token-7f3a") && !log.contains("second-token-c91e"),
        "a token reached the log"
    );
    signal(cleanup.1.as_ref().expect("child"), "TERM");
    let mut child = cleanup.1.take().expect("child");
    assert!(child.wait().expect("exit").success());
}
