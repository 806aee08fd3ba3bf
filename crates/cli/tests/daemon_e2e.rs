//! `safe-updater watch` end to end, against the real Docker engine and registry of
//! `scripts/dev-env`: a window holds updates back and a reload opens it; a broken config sent
//! with SIGHUP is refused while the daemon keeps running; 20 eligible updates never exceed the
//! concurrency limit (the maximum in flight is measured from the recorded history); a review
//! approved through the REST API is applied; a webhook receiver gets every notification;
//! `/metrics` passes `promtool check metrics`; SIGTERM during an update lets it finish.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

mod common;

use common::*;

#[test]
fn the_daemon_schedules_reloads_limits_approves_notifies_and_stops_gracefully() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let pid = std::process::id();
    let n = |what: &str| format!("su-e2e-watch-{what}-{pid}");
    let autos: Vec<String> = (0..20).map(|i| n(&format!("auto{i:02}"))).collect();
    let (review, bad, term) = (n("review"), n("bad"), n("term"));
    let mut names = autos.clone();
    names.extend([review.clone(), bad.clone(), term.clone()]);
    let mut cleanup = Cleanup(names, None);
    for tag in ["1.0.0", "1.0.1"] {
        docker(&["pull", "-q", &format!("{registry}/demo/web:{tag}")]);
    }
    let web = |tag: &str| format!("{registry}/demo/web:{tag}");
    let scope = format!("su-e2e-watch-{pid}");
    let label = common::in_scope(&scope);
    for a in &autos {
        docker(&["run", "-d", "--name", a, "--label", &label, &web("1.0.0")]);
    }
    run_for_review(&review, &web("1.0.1"), &scope);
    docker(&[
        "run",
        "-d",
        "--name",
        &bad,
        "--label",
        &label,
        &web("1.0.1"),
    ]);

    let (hook_port, notes) = receiver();
    let port = free_port();
    let dir = TempDir::new().expect("tempdir");
    let cfg_path = dir.path().join("config.yaml");
    let host = docker_host();
    let config = |window: &str| {
        format!(
            "scope: {scope}\ndocker:\n  engines:\n    - {{ name: local, host: \"{host}\" }}\n\
             daemon: {{ interval: 2s, concurrency: 3, reload_poll: 1h }}\n\
             server:\n  listen: \"127.0.0.1:{port}\"\n  tokens: [{{ name: alice, token_env: SU_E2E_TOKEN }}]\n\
             notifications:\n  urls: [\"http://127.0.0.1:{hook_port}/hook\"]\n\
             health: {{ window: 8s, interval: 1s, failure_threshold: 2 }}\n\
             policy:\n  enabled: false\n{window}\
             resources:\n  - match: {{ name: \"su-e2e-watch-*-{pid}\" }}\n    policy: {{ enabled: true }}\n"
        )
    };
    // A window that is essentially never open: at 00:00 on 1 January, for a minute.
    let closed = "  windows:\n    - { cron: \"0 0 1 1 *\", duration: 1m }\n";
    std::fs::write(&cfg_path, config(closed)).expect("config");
    let stderr_path = dir.path().join("daemon.log");
    let child = Command::new(assert_cmd::cargo::cargo_bin("safe-updater"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["--log-format", "json", "watch"])
        .env("SU_E2E_TOKEN", "e2e-secret-token-42")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("log file"))
        .spawn()
        .expect("watch starts");
    cleanup.1 = Some(child);
    let child_ref = || cleanup.1.as_ref().expect("child");
    wait_for("/healthz", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/healthz", &[], "").0 == 200
    });

    // Outside the window: cycles run, nothing is applied.
    wait_for("two cycles", Duration::from_secs(60), || {
        metric(port, "safe_updater_scans_total") >= 2.0
    });
    assert!(
        autos.iter().all(|a| image_of(a).ends_with(":1.0.0")),
        "applied outside the window"
    );

    // A broken config sent with SIGHUP is refused; the daemon keeps running on the old one.
    std::fs::write(&cfg_path, "daemon: { concurrency: many }\n").expect("broken config");
    signal(child_ref(), "HUP");
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        std::fs::read_to_string(&stderr_path)
            .unwrap_or_default()
            .contains("config.rejected")
    });
    assert_eq!(http(port, "GET", "/healthz", &[], "").0, 200);

    // The window opens with a valid config: every eligible update runs, at most 3 at once.
    std::fs::write(&cfg_path, config("")).expect("config");
    signal(child_ref(), "HUP");
    wait_for("20 patches applied", Duration::from_secs(240), || {
        autos.iter().all(|a| image_of(a).ends_with(":1.0.1"))
    });
    wait_for("the bad patch rolled back", Duration::from_secs(60), || {
        cli_json(&dir, &["history", &format!("docker/local/{bad}")])
            .as_array()
            .is_some_and(|h| h.iter().any(|u| u["status"] == "rolled_back"))
    });
    let history = cli_json(&dir, &["history", "--limit", "500"]);
    let spans: Vec<(jiff::Timestamp, jiff::Timestamp)> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|u| {
            Some((
                u["started_at"].as_str()?.parse().ok()?,
                u["finished_at"].as_str()?.parse().ok()?,
            ))
        })
        .collect();
    assert!(spans.len() >= 21, "{history}");
    let max_in_flight = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0);
    eprintln!(
        "maximum updates in flight: {max_in_flight} (limit 3, {} updates)",
        spans.len()
    );
    assert!(
        max_in_flight <= 3,
        "the limit was exceeded: {max_in_flight}"
    );
    assert!(
        max_in_flight >= 2,
        "updates never ran in parallel: {max_in_flight}"
    );

    // The review waits; approved through the API (as alice), it is applied.
    let token = ("Authorization", "Bearer e2e-secret-token-42");
    assert_eq!(http(port, "GET", "/api/v1/approvals", &[], "").0, 401);
    let mut id = String::new();
    wait_for("the review in the API", Duration::from_secs(30), || {
        let (_, body) = http(port, "GET", "/api/v1/approvals", &[token], "");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Some(p) = v["approvals"].as_array().and_then(|a| {
            a.iter()
                .find(|p| p["asset_id"] == format!("docker/local/{review}"))
        }) {
            id = p["id"].as_str().unwrap_or_default().to_owned();
            return true;
        }
        false
    });
    assert!(id.ends_with("@1.1.0"), "{id}");
    let (status, body) = http(
        port,
        "POST",
        &format!("/api/v1/approvals/{id}/approve"),
        &[token, ("Content-Type", "application/json")],
        "{}",
    );
    assert!((200..300).contains(&status), "{status} {body}");
    wait_for(
        "the approved review applied",
        Duration::from_secs(60),
        || image_of(&review).ends_with(":1.1.0"),
    );
    let audit = Command::new(assert_cmd::cargo::cargo_bin("safe-updater"))
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["audit", "export"])
        .output()
        .expect("export");
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.contains("api:alice"), "the operator is on the trail");

    // Notifications: applied, rolled back, approval needed.
    wait_for("notifications", Duration::from_secs(30), || {
        let got = notes.lock().expect("lock");
        ["applied", "rolled_back", "approval_needed"]
            .iter()
            .all(|k| got.iter().any(|n| n["event"] == *k))
    });

    // /metrics passes Prometheus' own checker.
    // The approved review's container is replaced before its health window ends: wait for
    // its verdict too (20 patches + 1 minor).
    wait_for(
        "21 verified updates in /metrics",
        Duration::from_secs(60),
        || metric(port, "safe_updater_updates_succeeded_total") >= 21.0,
    );
    let (_, text) = http(port, "GET", "/metrics", &[("Accept", "text/plain")], "");
    assert!(text.contains("safe_updater_rollbacks_total"), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by scripts/dev-env)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // SIGTERM while an update is being verified: it finishes, then the daemon exits.
    std::fs::write(&cfg_path, config("").replace("window: 8s", "window: 12s")).expect("config");
    signal(child_ref(), "HUP");
    std::thread::sleep(Duration::from_secs(1));
    // Its update goes to the good 1.0.1 (the bad 1.0.2 is excluded), so "finished" means
    // verified and kept.
    docker(&[
        "run",
        "-d",
        "--name",
        &term,
        "--label",
        &label,
        "--label",
        "safe-updater.io/exclude=^1\\.0\\.2$",
        &web("1.0.0"),
    ]);
    wait_for(
        "the update of the new container in flight",
        Duration::from_secs(60),
        || {
            cli_json(&dir, &["history", &format!("docker/local/{term}")])
                .as_array()
                .is_some_and(|h| h.iter().any(|u| u["status"] == "in_progress"))
        },
    );
    signal(child_ref(), "TERM");
    let started = Instant::now();
    let mut child = cleanup.1.take().expect("child");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "exit status {status}");
    let h = cli_json(&dir, &["history", &format!("docker/local/{term}")]);
    assert_eq!(h[0]["status"], "succeeded", "{h}");
    assert!(image_of(&term).ends_with(":1.0.1"));
    let old = Command::new("docker")
        .args(["inspect", &format!("{term}.su-old")])
        .output()
        .expect("docker");
    assert!(!old.status.success(), "the old container was left behind");

    // The token never reaches the log.
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !log.contains("e2e-secret-token-42"),
        "the API token leaked into the log"
    );
    assert!(
        log.contains("\"correlation_id\""),
        "log lines carry the correlation id"
    );
}
