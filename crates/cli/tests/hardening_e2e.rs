//! What comes from outside, end to end: the daemon's log lines name the update they belong to
//! when several run at once; what `check` promises is what `update` does; the CLI behaves like
//! a Unix tool (a closed pipe, unknown assets, JSON errors, the operator's name, snooze times).
//! The engine tests run in a scope of their own (see `common::Scoped`).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Scoped, bin_as, exec, free_port, http, wait_for};
use serde_json::Value;

#[test]
fn every_log_line_of_an_update_names_its_own_asset() {
    let mut env = Scoped::new("logs");
    let port = free_port();
    env.config(&format!(
        "health: {{ window: 4s, interval: 500ms, failure_threshold: 2 }}\n\
         daemon: {{ interval: 2s, concurrency: 4, reload_poll: 1h }}\n\
         server: {{ listen: \"127.0.0.1:{port}\" }}\n"
    ));
    let names: Vec<String> = (0..4)
        .map(|i| {
            env.start(
                &format!("w{i}"),
                "1.0.0",
                &["--label", "safe-updater.io/exclude=^1\\.0\\.2$"],
            )
        })
        .collect();
    env.spawn("watch.log", &["--log-format", "json", "watch"]);
    common::wait_healthy(port);
    let ids: Vec<String> = (0..4).map(|i| env.id(&format!("w{i}"))).collect();
    wait_for("every update done", Duration::from_secs(90), || {
        ids.iter().all(|id| {
            env.cli(&["history", id])
                .json()
                .as_array()
                .is_some_and(|h| h.iter().any(|u| u["status"] == "succeeded"))
        })
    });
    for n in &names {
        assert_eq!(common::image_of(n), env.image("1.0.1"));
    }
    // Which asset each queue entry was for.
    let queue = env.cli(&["queue", "--all"]).json();
    let asset_of: HashMap<i64, String> = queue
        .as_array()
        .expect("queue")
        .iter()
        .filter_map(|e| Some((e["id"].as_i64()?, e["asset_id"].as_str()?.to_owned())))
        .collect();
    let log = env.log("watch.log");
    let mut started = 0;
    let mut in_updates = 0;
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let update_span = v["spans"]
            .as_array()
            .and_then(|s| s.iter().rev().find(|s| s["name"] == "update"))
            .cloned();
        if let Some(span) = &update_span {
            in_updates += 1;
            let asset = span["asset_id"].as_str().unwrap_or("");
            let cid = span["correlation_id"].as_str().unwrap_or("");
            assert!(
                cid.ends_with(asset.rsplit('/').next().unwrap_or("?")),
                "an update's correlation id and asset disagree: {line}"
            );
            if let Some(q) = v["queue_id"].as_i64() {
                assert_eq!(
                    asset_of.get(&q).map(String::as_str),
                    Some(asset),
                    "a line of queue entry {q} names another asset: {line}"
                );
            }
        }
        if v["event"] == "update.started" {
            started += 1;
            assert!(
                update_span.is_some(),
                "update.started outside its update's span: {line}"
            );
        }
        if v["event"] == "update.finished" {
            let span = update_span.unwrap_or_else(|| panic!("outside its span: {line}"));
            let to = v["to"].as_str().unwrap_or("");
            assert_eq!(to, "1.0.1", "{line}");
            assert!(
                ids.iter().any(|id| span["asset_id"] == id.as_str()),
                "{line}"
            );
        }
    }
    assert!(started >= 4, "{started} update.started lines:\n{log}");
    assert!(in_updates >= 8, "{in_updates} lines in update spans");
}

#[test]
fn what_check_promises_update_does() {
    let mut env = Scoped::new("promise");
    env.config("health: { window: 2s, interval: 500ms }\n");
    // A health-check label that cannot be read: the update step would refuse, so check must
    // not offer the patch as what would run now.
    let broken = env.start(
        "broken",
        "1.0.0",
        &["--label", "safe-updater.io/health-tcp=not-a-port"],
    );
    let fine = env.start("fine", "1.0.0", &[]);
    assert_eq!(env.cli(&["scan"]).code, 0);
    let check = env.cli(&["check"]).json();
    let eval_of = |id: &str| -> Value {
        check["checks"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["asset_id"] == id))
            .map(|c| c["evaluation"].clone())
            .unwrap_or_else(|| panic!("{id} not checked: {check}"))
    };
    let b = eval_of(&env.id("broken"));
    assert!(
        b["act_on"].is_null(),
        "offered although update refuses: {b}"
    );
    let reason = b["candidates"][0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("health-tcp") && reason.contains("cannot be prepared"),
        "{b}"
    );
    assert_eq!(eval_of(&env.id("fine"))["act_on"], "1.0.2");

    // The dry run shows the whole plan: the change, the rule that allows it, what verifies it
    // and what happens on failure; it changes nothing.
    let r = env.cli(&["update", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let plan = r.json();
    let p = plan
        .as_array()
        .and_then(|a| a.iter().find(|p| p["asset_id"] == env.id("fine")))
        .unwrap_or_else(|| panic!("fine not planned: {plan}"));
    assert_eq!(p["to"], "1.0.2", "{p}");
    assert_eq!(p["from"], env.image("1.0.0"), "{p}");
    assert_eq!(p["change"], "patch", "{p}");
    assert!(p["rule"].as_str().unwrap_or("").contains("patch"), "{p}");
    assert!(
        p["checks"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c.as_str().unwrap_or("").contains("docker"))),
        "{p}"
    );
    assert!(
        p["on_failure"]
            .as_str()
            .unwrap_or("")
            .starts_with("rollback"),
        "{p}"
    );
    assert!(p.get("refused").is_none(), "{p}");
    let broken_plan = env.cli(&["update", &env.id("broken"), "--to", "1.0.1", "--dry-run"]);
    let bp = &broken_plan.json()[0];
    assert!(
        bp["refused"].as_str().unwrap_or("").contains("health-tcp"),
        "{bp}"
    );
    let table = env.cli_table(&["update", "--dry-run"]);
    assert!(
        table.stdout.contains("ON FAILURE") && table.stdout.contains("dry run"),
        "{table:?}"
    );
    assert_eq!(
        common::image_of(&fine),
        env.image("1.0.0"),
        "dry run changed it"
    );

    let r = env.cli(&["update"]);
    let ids = common::column(&r.json(), "asset_id")
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(!ids.contains(&env.id("broken")), "{r:?}");
    assert_eq!(common::image_of(&broken), env.image("1.0.0"));

    // `update --to` the tag it runs, whose image did not move: nothing to do, and it says so.
    let id = env.id("fine");
    let before = env.cli(&["history", &id]).json();
    let started_at = common::image_of(&fine);
    let r = env.cli(&["update", &id, "--to", "1.0.0"]);
    assert_eq!(r.code, 0, "{r:?}");
    let o = &r.json()[0];
    assert_eq!(o["status"], "unchanged", "{o}");
    assert!(
        o["detail"].as_str().unwrap_or("").contains("already runs"),
        "{o}"
    );
    assert_eq!(
        env.cli(&["history", &id]).json(),
        before,
        "no update was recorded"
    );
    assert_eq!(common::image_of(&fine), started_at);
}

fn asset(name: &str, now: jiff::Timestamp) -> safe_updater_core::asset::Asset {
    safe_updater_core::asset::Asset {
        id: format!("docker/local/{name}"),
        kind: safe_updater_core::asset::AssetKind::Container,
        location: "local".into(),
        namespace: None,
        name: name.into(),
        container: None,
        image: "web:1.0.0".into(),
        digest: None,
        labels: Default::default(),
        annotations: Default::default(),
        first_seen: now,
        last_seen: now,
        extra: serde_json::json!({}),
    }
}

/// A state file with many assets and update records, without any engine.
fn busy_history() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let mut s = safe_updater_store::Store::open(&path).expect("state");
    let now = jiff::Timestamp::now();
    let assets: Vec<_> = (0..400).map(|i| asset(&format!("app-{i}"), now)).collect();
    s.upsert_assets(&assets).expect("assets");
    for i in 0..400 {
        let id = s
            .begin_update(&safe_updater_store::UpdateStart {
                asset_id: format!("docker/local/app-{i}"),
                from_ref: "web:1.0.0".into(),
                to_ref: "web:1.0.1".into(),
                snapshot: serde_json::json!({}),
                correlation_id: None,
                actor: "cli:test".into(),
                at: jiff::Timestamp::now(),
            })
            .expect("begin");
        s.finish_update(
            id,
            safe_updater_store::UpdateOutcome::Succeeded,
            None,
            jiff::Timestamp::now(),
            "cli:test",
        )
        .expect("finish");
    }
    (dir, path)
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let (_dir, path) = busy_history();
    for args in [vec!["history", "--limit", "400"], vec!["audit", "export"]] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("safe-updater"))
            .arg("--state")
            .arg(&path)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        // Like `| head -1`: read a line, then close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("a line");
        assert!(!first.is_empty());
        let out = child.wait_with_output().expect("ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn unknown_assets_are_errors_that_suggest_what_was_meant() {
    let (_dir, path) = busy_history();
    let p = path.display().to_string();
    // The inventory: an asset named like the one asked for.
    safe_updater_store::Store::open(&path)
        .expect("state")
        .upsert_assets(&[asset("web", jiff::Timestamp::now())])
        .expect("asset");
    for asked in ["web", "docker/local/wbe"] {
        let r = exec(bin_as("alice"), &["--state", &p, "update", asked]);
        assert_eq!(r.code, 1, "{asked}: {r:?}");
        assert!(
            r.stderr.contains("did you mean docker/local/web"),
            "{asked}: {}",
            r.stderr
        );
        // Under -o json the error is JSON on stdout, with the same exit code.
        let j = exec(
            bin_as("alice"),
            &["--state", &p, "-o", "json", "update", asked],
        );
        assert_eq!(j.code, 1);
        assert!(
            j.json()["error"]
                .as_str()
                .unwrap_or("")
                .contains("did you mean"),
            "{j:?}"
        );
        assert!(
            !j.stderr.contains('\u{1b}'),
            "no colour codes: {}",
            j.stderr
        );
    }
    let r = exec(
        bin_as("alice"),
        &["--state", &p, "rollback", "docker/local/nope"],
    );
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn the_operator_is_named_and_snoozes_read_as_people_write_them() {
    let (_dir, path) = busy_history();
    let p = path.display().to_string();
    // No USER, SUDO_USER or LOGNAME (cron, a container): the OS user still names the operator.
    let mut c = common::bin();
    c.env_remove("USER")
        .env_remove("SUDO_USER")
        .env_remove("LOGNAME");
    let r = exec(
        c,
        &[
            "--state",
            &p,
            "-o",
            "json",
            "snooze",
            "docker/local/app-1",
            "--until",
            "tomorrow",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let out = r.json();
    let by = serde_json::to_string(&out).expect("json");
    assert!(!by.contains("cli:unknown"), "{by}");
    assert!(by.contains("cli:"), "{by}");
    let until: jiff::Timestamp = out["until"]
        .as_str()
        .or_else(|| out["snooze"]["until"].as_str())
        .unwrap_or_else(|| panic!("no until in {out}"))
        .parse()
        .expect("a time");
    let hours = until.duration_since(jiff::Timestamp::now()).as_hours();
    assert!((0..=24).contains(&hours), "{until}");
    for when in ["monday", "2030-01-02", "2030-01-02 09:30"] {
        let mut c = common::bin();
        c.env("USER", "alice");
        let r = exec(
            c,
            &[
                "--state",
                &p,
                "snooze",
                "docker/local/app-2",
                "--until",
                when,
            ],
        );
        assert_eq!(r.code, 0, "{when}: {r:?}");
    }
}

/// Secrets planted where users put them — a password and a token in a health-check URL, a
/// password in a container's environment — appear in no output of an update run at trace
/// level: not the outcome, the log, `history`, the audit trail or `state export`.
#[test]
fn no_planted_secret_leaves_through_an_output() {
    let mut env = Scoped::new("secrets");
    env.config("health: { window: 3s, interval: 500ms, failure_threshold: 2 }\n");
    let url = "http://probe:planted-url-pass@{host_ip:8080/tcp}:{host_port:8080/tcp}/missing?token=planted-url-token&x=1";
    env.start(
        "web",
        "1.0.0",
        &[
            "-p",
            "127.0.0.1::8080",
            "-e",
            "DB_PASSWORD=planted-env-password",
            "--label",
            &format!("safe-updater.io/health-url={url}"),
        ],
    );
    let id = env.id("web");
    let trace = |args: &[&str]| {
        let mut all = vec!["--log-level", "trace", "--log-format", "json"];
        all.extend_from_slice(args);
        env.cli(&all)
    };
    let mut outputs = Vec::new();
    for args in [
        vec!["scan"],
        vec!["check"],
        vec!["update", id.as_str(), "--to", "1.0.1"],
        vec!["history"],
        vec!["audit", "export"],
        vec!["state", "export"],
        vec!["list-assets"],
    ] {
        let r = trace(&args);
        let mut stdout = r.stdout.clone();
        if args == ["state", "export"] {
            // A backup holds what restoring needs: each update's snapshot of the container
            // (its environment included) and the assets' labels as the engine reported them.
            // What the product wrote itself — errors, decisions, the audit trail — is checked.
            let mut dump: Value = serde_json::from_str(&stdout).expect("a dump");
            for u in dump["updates"].as_array_mut().expect("updates") {
                u["snapshot"] = Value::Null;
            }
            for a in dump["assets"].as_array_mut().expect("assets") {
                a["labels"] = Value::Null;
            }
            stdout = dump.to_string();
        }
        outputs.push((args.join(" "), format!("{stdout}\n{}", r.stderr)));
    }
    let update = &outputs[2].1;
    assert!(
        update.contains("rolled_back"),
        "the check failed the update: {update}"
    );
    assert!(
        update.contains("http://***@") && update.contains("token=***"),
        "the URL is shown, masked: {update}"
    );
    for (what, text) in &outputs {
        for planted in [
            "planted-url-pass",
            "planted-url-token",
            "planted-env-password",
        ] {
            assert!(
                !text.contains(planted),
                "`{what}` printed {planted}:\n{text}"
            );
        }
    }
}

/// A daemon with 128 file descriptors against 300 clients that connect and send nothing or
/// half a request: `/healthz` keeps answering, its cycles keep opening the state database,
/// and the idle connections are closed within the header-read timeout (10 s).
#[test]
fn slow_and_idle_clients_do_not_starve_the_daemon() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let env = Scoped::new("slowloris");
    let port = free_port();
    env.config(&format!(
        "daemon: {{ interval: 1s, reload_poll: 1h }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\n"
    ));
    let bin = assert_cmd::cargo::cargo_bin("safe-updater");
    let log = env.dir.path().join("watch.log");
    let mut daemon = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
        .arg(&bin)
        .arg("--config")
        .arg(env.config_path())
        .arg("--state")
        .arg(env.state_path())
        .args(["--log-format", "json", "watch"])
        .env_remove("SAFE_UPDATER_CONFIG")
        .env_remove("SAFE_UPDATER_STATE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("watch starts");
    let healthz = || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/healthz", &[], "").0 == 200
    };
    wait_for("/healthz", Duration::from_secs(30), healthz);
    let cycles = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("\"cycle.finished\"")
            .count()
    };
    let mut idle = Vec::new();
    for i in 0..300 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        }
        idle.push(s);
    }
    assert!(idle.len() >= 250, "only {} connections opened", idle.len());
    let before = cycles();
    // While they hang on: the daemon answers, and its cycles go on.
    for round in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = http(port, "GET", "/healthz", &[], "");
        assert_eq!(
            status,
            200,
            "round {round}: /healthz stopped answering under 300 idle connections after {:?}: {body}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for("two more cycles", Duration::from_secs(20), || {
        cycles() >= before + 2
    });
    // Every idle connection is closed by the daemon within the header-read timeout.
    let started = std::time::Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        // EOF, a reset, or a 408 then EOF: closed.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "idle connections were kept for {:?}",
        started.elapsed()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("unable to open database") && !text.contains("Too many open files"),
        "{text}"
    );
    assert!(healthz());
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// `update`, `rollback` and `run --once` notify like `watch`: an applied update, a rolled-back
/// one and a rollback reach the configured channel before the command exits; the approve link
/// of an approval notification opens a page (it was a 404).
#[test]
fn cli_commands_notify_like_the_daemon() {
    let mut env = Scoped::new("notify");
    let (hook, notes) = common::receiver();
    env.config(&format!(
        "health: {{ window: 3s, interval: 500ms, failure_threshold: 2 }}\n\
         notifications: {{ urls: [\"http://127.0.0.1:{hook}/hook\"] }}\n"
    ));
    env.start("web", "1.0.0", &[]);
    let id = env.id("web");
    assert_eq!(env.cli(&["scan"]).code, 0);
    let r = env.cli(&["update", &id, "--to", "1.0.1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = env.cli(&["rollback", &id]);
    assert_eq!(r.code, 0, "{r:?}");
    // The best patch, 1.0.2, fails its health check: rolled back, announced.
    let r = env.cli(&["run", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    let events: Vec<(String, String)> = notes
        .lock()
        .expect("lock")
        .iter()
        .filter(|n| n["asset_id"] == id.as_str())
        .map(|n| {
            (
                n["event"].as_str().unwrap_or("").to_owned(),
                n["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("applied".to_owned(), "1.0.1".to_owned()),
            ("applied".to_owned(), "1.0.0".to_owned()),
            ("rolled_back".to_owned(), "1.0.2".to_owned()),
        ],
        "{events:?}"
    );

    // The approve link's page exists.
    let port = free_port();
    env.config(&format!("server: {{ listen: \"127.0.0.1:{port}\" }}\n"));
    env.spawn("watch.log", &["watch"]);
    common::wait_healthy(port);
    let (status, body) = http(port, "GET", &format!("/approvals/{id}"), &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("safe-updater approve"), "{body}");
}

#[test]
fn a_long_health_window_shows_its_progress_on_a_terminal() {
    let mut env = Scoped::new("progress");
    env.config("health: { window: 3s, interval: 500ms }\n");
    // An image without a HEALTHCHECK: every round passes from the first.
    let web = env.start("web", "1.0.0-plain", &[]);
    assert_eq!(env.cli(&["scan"]).code, 0);
    let id = env.id("web");
    // `script` gives the command a real terminal, as an operator's shell does.
    let bin = assert_cmd::cargo::cargo_bin("safe-updater");
    let command = format!(
        "{} --config {} --state {} update {id} --to 1.0.1-plain",
        bin.display(),
        env.config_path().display(),
        env.state_path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("XDG_STATE_HOME", "/nonexistent/safe-updater-tests/state")
        .env_remove("SAFE_UPDATER_SCOPE")
        .output()
        .expect("script runs");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(seen.contains("health round 1 of 7, 0s of 3s: ok"), "{seen}");
    assert!(seen.contains("3s of 3s: ok"), "the last round: {seen}");
    assert!(seen.contains("succeeded"), "{seen}");
    assert_eq!(common::image_of(&web), env.image("1.0.1-plain"));

    // Off a terminal the same command draws nothing.
    let r = env.cli_table(&["update", &id, "--to", "1.0.0-plain"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("health round"), "{r:?}");
}
