//! Updates that are safe under real conditions, end to end: the built binary against the real
//! engine and registry of `scripts/dev-env`, each test in a scope of its own so that it touches
//! nothing else the engine runs.
//!
//! - images without a HEALTHCHECK are updated, judged by staying up and their checks;
//! - an update in flight belongs to its process: a second CLI, the daemon, or a second daemon
//!   on the same state leave it alone; a SIGKILLed owner's update is recovered by the next;
//! - Ctrl-C: the step finishes and the update is restored (or kept once verified); twice exits
//!   at once; `rollback` recovers the interrupted update first;
//! - scope: other containers, also those on a registry that answers 500, are never looked at;
//! - a manual rollback is not undone by the next cycle;
//! - a kill at any moment of an update or its rollback leaves exactly one running container.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{Scoped, docker, free_port, http, receiver, signal, wait_for};
use serde_json::Value;

/// The status of every update of `asset`, newest first.
fn statuses(env: &Scoped, asset: &str) -> Vec<String> {
    let r = env.cli(&["history", asset]);
    r.json()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| u["status"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn in_window(env: &Scoped, asset: &str) -> bool {
    statuses(env, asset).first().map(String::as_str) == Some("in_progress")
}

/// Waits for `child` and returns (exit code, stdout as JSON, or Null).
fn finish(child: &mut Child) -> (i32, Value) {
    let status = child.wait().expect("wait");
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut out);
    }
    (
        status.code().unwrap_or(-1),
        serde_json::from_str(out.trim()).unwrap_or(Value::Null),
    )
}

/// One outcome of a run's JSON (`applied` of `run --once`, or the list `update` prints).
fn outcome_of<'a>(list: &'a Value, asset: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|o| o["asset_id"] == asset))
        .unwrap_or_else(|| panic!("no outcome for {asset}: {list}"))
}

const WINDOW: &str = "health: { window: 8s, interval: 1s, failure_threshold: 2 }\n";

#[test]
fn images_without_a_healthcheck_are_updated_by_staying_up_and_their_checks() {
    let mut env = Scoped::new("nohc");
    env.config("health: { window: 6s, interval: 1s, failure_threshold: 2 }\n");
    // No HEALTHCHECK in the image; the best patch, 1.0.2-plain, exits three seconds after it
    // starts.
    let plain = env.start("plain", "1.0.0-plain", &[]);
    // A HEALTHCHECK turned off on the command line.
    let off = env.start(
        "off",
        "1.0.0",
        &[
            "--no-healthcheck",
            "--label",
            "safe-updater.io/exclude=^1\\.0\\.2$",
        ],
    );
    // No HEALTHCHECK, and an HTTP check label on the published port.
    let probed = env.start(
        "probed",
        "1.0.0-plain",
        &[
            "-p",
            "127.0.0.1::8080",
            "--label",
            "safe-updater.io/health-url=http://{host_ip:8080/tcp}:{host_port:8080/tcp}/health",
            "--label",
            "safe-updater.io/exclude=^1\\.0\\.2",
        ],
    );
    let r = env.cli(&["run", "--once"]);
    assert_eq!(
        r.code, 1,
        "the crashing patch makes the run a failure: {r:?}"
    );
    let first = r.json();
    let applied = &first["applied"];
    let o = outcome_of(applied, &env.id("plain"));
    assert_eq!(o["status"], "rolled_back", "{o}");
    let why = o["detail"].as_str().unwrap_or("");
    assert!(why.contains("not running"), "{why}");
    assert!(!why.contains("HEALTHCHECK"), "{why}");
    for short in ["off", "probed"] {
        let o = outcome_of(applied, &env.id(short));
        assert_eq!(o["status"], "succeeded", "{short}: {o}");
    }
    assert_eq!(
        common::image_of(&off),
        env.image("1.0.1"),
        "--no-healthcheck"
    );
    assert_eq!(common::image_of(&probed), env.image("1.0.1-plain"));
    // The crashed build is not retried: the next cycle takes the good patch.
    let r = env.cli(&["run", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let o = outcome_of(&r.json()["applied"], &env.id("plain")).clone();
    assert_eq!(o["status"], "succeeded", "{o}");
    assert_eq!(common::image_of(&plain), env.image("1.0.1-plain"));
    let (name, state, _) = &env.containers_named(&plain)[0];
    assert_eq!((name.as_str(), state.as_str()), (plain.as_str(), "running"));
}

#[test]
fn a_second_cli_leaves_an_update_in_flight_alone() {
    let mut env = Scoped::new("clicli");
    env.config(WINDOW);
    let web = env.start("web", "1.0.0", &["-e", "KEEP=me"]);
    let id = env.id("web");
    assert_eq!(env.cli(&["scan"]).code, 0);
    let mut first = env
        .command("first.log", &["update", &id, "--to", "1.0.1"])
        .spawn()
        .expect("first update");
    wait_for(
        "the first update in its window",
        Duration::from_secs(30),
        || in_window(&env, &id),
    );

    // Another `run --once`: recovery leaves the update to its owner, the asset is busy.
    let r = env.cli(&["run", "--once"]);
    assert_eq!(
        r.code, 0,
        "another process's update is not this run's failure: {r:?}"
    );
    let run = r.json();
    let held = run["recovered"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("the in-flight update is not reported: {run}"));
    assert_eq!(held["restored"], false);
    assert_eq!(held["held_by"]["pid"], first.id(), "{held}");
    let o = outcome_of(&run["applied"], &id);
    assert_eq!(o["status"], "busy", "{o}");
    // And an explicit update of the same asset says who has it.
    let r = env.cli(&["update", &id, "--to", "1.0.1"]);
    assert_eq!(r.code, 1, "{r:?}");
    let o = outcome_of(&r.json(), &id).clone();
    assert_eq!(o["status"], "busy");
    let detail = o["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(&format!("pid {}", first.id())) && detail.contains("leaving it alone"),
        "{detail}"
    );

    let (code, out) = finish(&mut first);
    assert_eq!(
        code,
        0,
        "the first update was not disturbed: {out} {}",
        env.log("first.log")
    );
    assert_eq!(outcome_of(&out, &id)["status"], "succeeded");
    assert_eq!(statuses(&env, &id), ["succeeded"]);
    assert_eq!(common::image_of(&web), env.image("1.0.1"));
    assert_eq!(env.containers_named(&web).len(), 1);
}

#[test]
fn a_killed_owner_is_recovered_by_the_next_process() {
    let mut env = Scoped::new("killed");
    env.config(WINDOW);
    let web = env.start("web", "1.0.0", &["-e", "KEEP=me"]);
    let id = env.id("web");
    assert_eq!(env.cli(&["scan"]).code, 0);
    let mut owner = env
        .command("owner.log", &["update", &id, "--to", "1.0.1"])
        .spawn()
        .expect("update");
    wait_for("the update in its window", Duration::from_secs(30), || {
        in_window(&env, &id)
    });
    owner.kill().expect("SIGKILL");
    owner.wait().expect("reaped");
    // The owner is provably dead on this host: the next command restores at once.
    let r = env.cli(&["rollback", &id]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = r.json();
    assert_eq!(out["recovered"][0]["restored"], true, "{out}");
    assert_eq!(common::image_of(&web), env.image("1.0.0"));
    let keep = docker(&["inspect", "--format", "{{json .Config.Env}}", &web]);
    assert!(keep.contains("KEEP=me"), "{keep}");
    assert_eq!(env.containers_named(&web).len(), 1);
    // The version the operator rolled away from is rejected in their name.
    assert_eq!(out["rejected"], serde_json::json!(["1.0.1"]), "{out}");
    // And a crash says nothing against the version: an explicit update may take it again.
    let r = env.cli(&["update", &id, "--to", "1.0.1"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn ctrl_c_restores_before_exiting_and_a_second_exits_at_once() {
    let mut env = Scoped::new("sigint");
    env.config(WINDOW);
    let web = env.start("web", "1.0.0", &["-e", "KEEP=me"]);
    let id = env.id("web");
    assert_eq!(env.cli(&["scan"]).code, 0);

    // One SIGINT in the health window: restored, then exit 130.
    let mut child = env
        .command("once.log", &["update", &id, "--to", "1.0.1"])
        .spawn()
        .expect("update");
    wait_for("the update in its window", Duration::from_secs(30), || {
        in_window(&env, &id)
    });
    let started = Instant::now();
    signal(&child, "INT");
    let (code, out) = finish(&mut child);
    assert_eq!(code, 130, "{out} {}", env.log("once.log"));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the window was cut short"
    );
    let o = outcome_of(&out, &id);
    assert_eq!(o["status"], "interrupted", "{o}");
    assert!(
        env.log("once.log").contains("stopping"),
        "{}",
        env.log("once.log")
    );
    assert_eq!(common::image_of(&web), env.image("1.0.0"));
    assert_eq!(env.containers_named(&web).len(), 1, "no {web}.su-old left");
    assert_eq!(statuses(&env, &id), ["rolled_back"]);

    // SIGTERM after verification keeps the new version (a long window is not needed: the
    // signal comes when the update is finishing) — here: SIGINT twice exits at once and
    // leaves the update in progress for the next command.
    let mut child = env
        .command("twice.log", &["update", &id, "--to", "1.0.1"])
        .spawn()
        .expect("update");
    wait_for("the update in its window", Duration::from_secs(30), || {
        in_window(&env, &id)
    });
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(50));
    signal(&child, "INT");
    let (code, _) = finish(&mut child);
    assert_eq!(code, 130);
    if in_window(&env, &id) {
        // Killed before it could restore: `rollback` recovers the interrupted update first.
        let r = env.cli(&["rollback", &id]);
        assert_eq!(r.code, 0, "{r:?}");
        let out = r.json();
        assert_eq!(out["recovered"][0]["restored"], true, "{out}");
        assert!(
            out["outcome"].is_null(),
            "the recovery was the rollback: {out}"
        );
    }
    assert_eq!(common::image_of(&web), env.image("1.0.0"));
    assert_eq!(env.containers_named(&web).len(), 1);
    let state = docker(&["inspect", "--format", "{{.State.Status}}", &web]);
    assert_eq!(state, "running");
}

#[test]
fn the_cli_and_the_daemon_never_touch_each_others_updates() {
    let mut env = Scoped::new("cliwatch");
    let (hook, notes) = receiver();
    let port = free_port();
    env.config(&format!(
        "{WINDOW}daemon: {{ interval: 2s, concurrency: 2, reload_poll: 1h }}\n\
         server: {{ listen: \"127.0.0.1:{port}\" }}\n\
         notifications:\n  urls: [\"http://127.0.0.1:{hook}/hook\"]\n"
    ));
    // The daemon's: a patch by policy (the bad 1.0.2 excluded).
    let daemons = env.start(
        "auto",
        "1.0.0",
        &["--label", "safe-updater.io/exclude=^1\\.0\\.2$"],
    );
    // The operator's: patches are manual, so only the CLI updates it.
    let operators = env.start(
        "manual",
        "1.0.0",
        &["--label", "safe-updater.io/patch=manual"],
    );
    let (auto_id, manual_id) = (env.id("auto"), env.id("manual"));
    assert_eq!(env.cli(&["scan"]).code, 0);
    env.spawn("watch.log", &["--log-format", "json", "watch"]);
    common::wait_healthy(port);

    // The daemon updates its container; while it is in its window, the CLI runs a cycle and
    // asks for the same update.
    wait_for(
        "the daemon's update in its window",
        Duration::from_secs(60),
        || in_window(&env, &auto_id),
    );
    let r = env.cli(&["run", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["recovered"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["restored"] == false)),
        "{}",
        r.stdout
    );
    let r = env.cli(&["update", &auto_id, "--to", "1.0.1"]);
    assert_eq!(outcome_of(&r.json(), &auto_id)["status"], "busy", "{r:?}");

    // The operator updates the other one while the daemon's cycles (every 2 s) go on.
    let mut cli = env
        .command("cli.log", &["update", &manual_id, "--to", "1.0.1"])
        .spawn()
        .expect("update");
    let (code, out) = finish(&mut cli);
    assert_eq!(code, 0, "{out} {}", env.log("cli.log"));
    assert_eq!(outcome_of(&out, &manual_id)["status"], "succeeded");

    wait_for("the daemon's update done", Duration::from_secs(60), || {
        statuses(&env, &auto_id).first().map(String::as_str) == Some("succeeded")
    });
    assert_eq!(statuses(&env, &auto_id), ["succeeded"]);
    assert_eq!(statuses(&env, &manual_id), ["succeeded"]);
    assert_eq!(common::image_of(&daemons), env.image("1.0.1"));
    assert_eq!(common::image_of(&operators), env.image("1.0.1"));
    wait_for(
        "the daemon announces its update",
        Duration::from_secs(20),
        || {
            notes
                .lock()
                .expect("lock")
                .iter()
                .any(|n| n["event"] == "applied" && n["asset_id"] == auto_id.as_str())
        },
    );
    let bad: Vec<Value> = notes
        .lock()
        .expect("lock")
        .iter()
        .filter(|n| n["event"] == "failed" || n["event"] == "rolled_back")
        .cloned()
        .collect();
    assert!(
        bad.is_empty(),
        "nothing failed, nothing was rolled back: {bad:?}"
    );
    let log = env.log("watch.log");
    assert!(
        !log.contains("\"update.recovered\""),
        "the daemon restored an update it did not own: {log}"
    );
}

#[test]
fn two_daemons_on_one_state_apply_each_update_once() {
    let mut env = Scoped::new("twowatch");
    let (hook, notes) = receiver();
    let (p1, p2) = (free_port(), free_port());
    let base = format!(
        "{WINDOW}daemon: {{ interval: 2s, concurrency: 3, reload_poll: 1h }}\n\
         notifications:\n  urls: [\"http://127.0.0.1:{hook}/hook\"]\n"
    );
    let names: Vec<String> = (0..3)
        .map(|i| {
            env.start(
                &format!("w{i}"),
                "1.0.0",
                &["--label", "safe-updater.io/exclude=^1\\.0\\.2$"],
            )
        })
        .collect();
    // Two configs that differ only in their listen address, on one state file.
    env.config(&format!("{base}server: {{ listen: \"127.0.0.1:{p1}\" }}\n"));
    let second_cfg = env.dir.path().join("second.yaml");
    std::fs::write(
        &second_cfg,
        std::fs::read_to_string(env.config_path())
            .expect("config")
            .replace(&format!("127.0.0.1:{p1}"), &format!("127.0.0.1:{p2}")),
    )
    .expect("second config");
    env.spawn("a.log", &["--log-format", "json", "watch"]);
    std::thread::sleep(Duration::from_millis(700));
    let mut b = env.command("b.log", &["--log-format", "json", "watch"]);
    b.arg("--config").arg(&second_cfg);
    let b = b.spawn().expect("second daemon");
    let _b = common::Cleanup(Vec::new(), Some(b));
    let ids: Vec<String> = (0..3).map(|i| env.id(&format!("w{i}"))).collect();
    wait_for("every update done", Duration::from_secs(120), || {
        ids.iter()
            .all(|id| statuses(&env, id).first().map(String::as_str) == Some("succeeded"))
    });
    // Let both daemons run a few more cycles over the finished work.
    std::thread::sleep(Duration::from_secs(5));
    for (id, name) in ids.iter().zip(&names) {
        assert_eq!(
            statuses(&env, id),
            ["succeeded"],
            "{id}: exactly one update"
        );
        assert_eq!(common::image_of(name), env.image("1.0.1"));
        assert_eq!(env.containers_named(name).len(), 1);
    }
    let notes = notes.lock().expect("lock").clone();
    let applied = notes.iter().filter(|n| n["event"] == "applied").count();
    assert_eq!(applied, 3, "one announcement per update: {notes:?}");
    assert!(
        !notes
            .iter()
            .any(|n| n["event"] == "failed" || n["event"] == "rolled_back"),
        "{notes:?}"
    );
}

#[test]
fn only_the_scope_is_touched_and_selections_narrow_it() {
    let mut env = Scoped::new("scope");
    env.config("health: { window: 3s, interval: 1s }\n");
    let mine = env.start(
        "mine",
        "1.0.0",
        &["--label", "safe-updater.io/exclude=^1\\.0\\.2$"],
    );
    let other = env.start(
        "other",
        "1.0.0",
        &[
            "--label",
            "tier=db",
            "--label",
            "safe-updater.io/exclude=^1\\.0\\.2$",
        ],
    );
    // Not this test's: unscoped, and in another scope, both on a registry that does not
    // answer.
    let broken = "127.0.0.1:9/clutter/app:1.0.0";
    docker(&["tag", &env.image("1.0.0"), broken]);
    let outsider = format!("{}-outsider", env.scope);
    let foreign = format!("{}-foreign", env.scope);
    let _guard = common::Containers(vec![outsider.clone(), foreign.clone()]);
    docker(&["run", "-d", "--name", &outsider, broken]);
    docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--label",
        &format!("{}=somebody-else", common::SCOPE_LABEL),
        broken,
    ]);

    let r = env.cli(&["scan"]);
    assert_eq!(r.code, 0, "{r:?}");
    let listed = env.cli(&["list-assets"]).json();
    let ids = common::column(&listed, "id");
    assert_eq!(
        ids.len(),
        2,
        "only the scope's containers are stored: {listed}"
    );
    assert!(ids.contains(&env.id("mine").as_str()) && ids.contains(&env.id("other").as_str()));

    // --label and --name narrow a check and a run to part of the scope.
    let r = env.cli(&["check", "--label", "tier=db"]);
    assert_eq!(r.code, 0, "{r:?}");
    let checked = common::column(&r.json()["checks"], "asset_id")
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(checked, [env.id("other")]);
    let r = env.cli(&["run", "--once", "--name", &mine]);
    assert_eq!(r.code, 0, "{r:?}");
    let applied = common::column(&r.json()["applied"], "asset_id")
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(applied, [env.id("mine")]);
    assert_eq!(common::image_of(&mine), env.image("1.0.1"));
    assert_eq!(common::image_of(&other), env.image("1.0.0"));
    // A scan narrowed by name keeps the rest of the scope.
    let r = env.cli(&["scan", "--name", &mine]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        common::column(&env.cli(&["list-assets"]).json(), "id").len(),
        2
    );
    // The outsiders were never changed.
    assert_eq!(common::image_of(&outsider), broken);
    assert_eq!(common::image_of(&foreign), broken);
    assert!(env.cli(&["--label", "=bad", "check"]).code != 0);
}

#[test]
fn a_manual_rollback_is_not_undone_until_an_operator_approves() {
    let mut env = Scoped::new("rollback");
    env.config("health: { window: 3s, interval: 1s }\n");
    let web = env.start(
        "web",
        "1.0.0",
        &["--label", "safe-updater.io/exclude=^1\\.0\\.2$"],
    );
    let id = env.id("web");
    let r = env.cli(&["run", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(common::image_of(&web), env.image("1.0.1"));

    let r = common::exec(
        {
            let mut c = common::bin_as("alice");
            c.arg("--config")
                .arg(env.config_path())
                .arg("--state")
                .arg(env.state_path())
                .args(["--output", "json"]);
            c
        },
        &["rollback", &id],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["rejected"], serde_json::json!(["1.0.1"]));
    assert_eq!(common::image_of(&web), env.image("1.0.0"));

    // The next cycles leave it where the operator put it.
    for _ in 0..2 {
        let r = env.cli(&["run", "--once"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            r.json()["applied"].as_array().is_some_and(Vec::is_empty),
            "{}",
            r.stdout
        );
        assert_eq!(common::image_of(&web), env.image("1.0.0"));
    }
    let check = env.cli(&["check"]).json();
    let cand = &check["checks"][0]["evaluation"]["candidates"][0];
    assert_eq!(cand["tag"], "1.0.1");
    assert_eq!(cand["decision"], "reject", "{cand}");
    assert!(
        cand["reason"].as_str().unwrap_or("").contains("cli:alice"),
        "{cand}"
    );
    let rejected = env.cli(&["approvals", "--rejected"]).json();
    assert_eq!(rejected[0]["candidate"], "1.0.1", "{rejected}");
    assert_eq!(rejected[0]["origin"], "rollback");
    assert_eq!(rejected[0]["operator"], "cli:alice");

    // An explicit approval lifts it.
    let r = env.cli(&["approve", &format!("{id}@1.0.1")]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = env.cli(&["run", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(common::image_of(&web), env.image("1.0.1"));
}

/// Kills `run --once` (SIGKILL) at moments spread over an update that succeeds and one that
/// is rolled back (the new version exits after three seconds), then lets the next `run --once`
/// recover: every time, exactly one container has the service's name, it runs, and it kept
/// its configuration.
#[test]
fn a_kill_at_any_moment_leaves_exactly_one_running_container() {
    let mut env = Scoped::new("faults");
    let apply = "health: { window: 5s, interval: 500ms, failure_threshold: 2 }\n";
    // The recovering run changes nothing else: policy off (recovery is not policy's).
    let recover = "policy: { enabled: false }\n";
    let mut trials = 0;
    let mut recovered = 0;
    for (path, from, to) in [
        ("success", "1.0.0-plain", "1.0.1-plain"),
        ("rollback", "1.0.1-plain", "1.0.2-plain"),
    ] {
        for i in 0..12u64 {
            let short = format!("{path}{i}");
            let name = env.start(
                &short,
                from,
                &[
                    "-e",
                    "KEEP=me",
                    "--label",
                    "case=faults",
                    "--restart",
                    "unless-stopped",
                ],
            );
            // Spread over pull, replace, the window, the restore.
            let at = Duration::from_millis(150 + i * 550);
            // Only this trial's container may be updated: resource rules apply in file order.
            env.config(&format!(
                "{apply}resources:\n  - match: {{ name: \"{}-*\" }}\n    policy: {{ enabled: false }}\n  - match: {{ name: \"{name}\" }}\n    policy: {{ enabled: true, include: [\"^{}$\"] }}\n",
                env.scope,
                regex_escape(to),
            ));
            let mut run = env
                .command(&format!("{short}.log"), &["run", "--once"])
                .spawn()
                .expect("run");
            std::thread::sleep(at);
            let _ = run.kill();
            let _ = run.wait();
            env.config(&format!("{apply}{recover}"));
            let r = env.cli(&["run", "--once"]);
            assert_eq!(
                r.code, 0,
                "{path} killed after {at:?}: the recovery run failed: {r:?}"
            );
            if r.json()["recovered"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                recovered += 1;
            }
            let found = env.containers_named(&name);
            assert_eq!(
                found.len(),
                1,
                "{path} killed after {at:?}: {found:?} {}",
                r.stdout
            );
            assert_eq!(found[0].0, name, "{found:?}");
            assert_eq!(
                found[0].1, "running",
                "{path} killed after {at:?}: {found:?}"
            );
            let cfg = docker(&[
                "inspect",
                "--format",
                "{{json .Config.Env}} {{json .Config.Labels}} {{.HostConfig.RestartPolicy.Name}}",
                &name,
            ]);
            assert!(
                cfg.contains("KEEP=me")
                    && cfg.contains("\"case\":\"faults\"")
                    && cfg.ends_with("unless-stopped"),
                "{path} killed after {at:?}: configuration lost: {cfg}"
            );
            trials += 1;
        }
    }
    assert_eq!(trials, 24);
    // The spread reached updates in flight, not only runs killed before they began one.
    assert!(
        recovered >= 8,
        "only {recovered} of {trials} kills left an update to recover"
    );
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\\\.")
}

/// An interrupted update nobody can bring back (its engine does not answer) is a failure, not
/// silence: `run --once` exits 1 naming it, and the daemon counts it
/// (`safe_updater_rollbacks_total{status="error"}`) and announces it (`failed`).
#[test]
fn an_update_that_cannot_be_recovered_is_reported_as_a_failure() {
    let mut env = Scoped::new("unrecovered");
    let (hook, notes) = receiver();
    let port = free_port();
    env.config(&format!(
        "daemon: {{ interval: 2s, reload_poll: 1h }}\n\
         server: {{ listen: \"127.0.0.1:{port}\" }}\n\
         notifications:\n  urls: [\"http://127.0.0.1:{hook}/hook\"]\n"
    ));
    // What a process that crashed mid-update on an engine that is now down left behind.
    let asset = "docker/elsewhere/web";
    {
        let mut store = safe_updater_store::Store::open(env.state_path()).expect("state");
        store.act_as(safe_updater_store::testing::departed_process());
        store
            .begin_update(&safe_updater_store::UpdateStart {
                asset_id: asset.into(),
                from_ref: "web:1.0.0".into(),
                to_ref: "web:1.0.1".into(),
                snapshot: serde_json::json!({
                    "engine": "elsewhere", "name": "web", "id": "0123", "image": "web:1.0.0",
                    "inspect": {}
                }),
                correlation_id: None,
                actor: "cli:crashed".into(),
                at: jiff::Timestamp::now(),
            })
            .expect("begin");
    }
    let r = env.cli(&["run", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    let out = r.json();
    let rec = &out["recovered"][0];
    assert_eq!(rec["asset_id"], asset, "{out}");
    assert_eq!(rec["restored"], false);
    assert!(
        rec["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not reachable"),
        "{rec}"
    );

    env.spawn("watch.log", &["--log-format", "json", "watch"]);
    common::wait_healthy(port);
    wait_for("the failure counted", Duration::from_secs(30), || {
        let (_, body) = http(port, "GET", "/metrics", &[("Accept", "text/plain")], "");
        body.lines().any(|l| {
            l.starts_with("safe_updater_rollbacks_total")
                && l.contains("status=\"error\"")
                && !l.ends_with(" 0")
        })
    });
    wait_for("the failure announced", Duration::from_secs(30), || {
        notes
            .lock()
            .expect("lock")
            .iter()
            .any(|n| n["event"] == "failed" && n["asset_id"] == asset)
    });
    assert!(env.log("watch.log").contains("update.unrecovered"));
}
