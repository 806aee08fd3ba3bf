//! `scan` and `check` end to end: the built binary against the real Docker engine and the real
//! registries of `scripts/dev-env`. Without that environment these tests fail and say how to
//! start it; they never pass silently.

use assert_cmd::Command as Bin;
use serde_json::Value;
use tempfile::TempDir;

mod common;
use common::{Containers, docker, env_var, unique};

fn safe_updater(dir: &TempDir, config: &str, args: &[&str]) -> (i32, Value, String) {
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config).expect("config written");
    let state = dir.path().join("state.db");
    let out = Bin::cargo_bin("safe-updater")
        .expect("binary built")
        .arg("--config")
        .arg(&cfg)
        .arg("--state")
        .arg(&state)
        .args(["--output", "json"])
        .args(args)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The local engine (and `extra_engine`), in the test's own `scope`: containers the test did
/// not start (with that scope's label) are never looked at.
fn engine_config(scope: &str, extra_engine: &str) -> String {
    let host = common::docker_host();
    format!(
        "scope: {scope}\ndocker:\n  engines:\n    - name: local\n      host: {host}\n{extra_engine}"
    )
}

/// `--label <scope label>=<scope>`, for `docker run`.
fn scope_label(scope: &str) -> String {
    format!("{}={scope}", common::SCOPE_LABEL)
}

#[test]
fn scan_then_check_finds_the_patch_and_holds_the_major() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let image = format!("{registry}/demo/web:1.0.0");
    docker(&["pull", "-q", &image]);
    let web = unique("web");
    let held = unique("held");
    let _guard = Containers(vec![web.clone(), held.clone()]);
    let scope = unique("scan");
    let label = scope_label(&scope);
    docker(&["run", "-d", "--name", &web, "--label", &label, &image]);
    docker(&[
        "run",
        "-d",
        "--name",
        &held,
        "--label",
        &label,
        "--label",
        "safe-updater.io/patch=manual",
        &image,
    ]);

    let dir = TempDir::new().expect("tempdir");
    let config = engine_config(&scope, "");
    let (code, scan, stderr) = safe_updater(&dir, &config, &["scan"]);
    assert_eq!(code, 0, "{scan} {stderr}");
    assert_eq!(scan["engines"][0]["engine"], "local");
    assert!(scan["engines"][0]["error"].is_null(), "{scan}");

    let (code, check, stderr) = safe_updater(&dir, &config, &["check"]);
    assert_eq!(code, 0, "{check} {stderr}");
    let find = |name: &str| -> Value {
        check["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["asset_id"] == format!("docker/local/{name}"))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not checked: {check}"))
    };
    let e = &find(&web)["evaluation"];
    // The best patch is 1.0.2 (the bad build: only the health check will tell); 1.1.0 waits for
    // review, 2.0.0 for an operator, the -alpine family is never offered.
    assert_eq!(e["act_on"], "1.0.2", "{e}");
    let tags: Vec<&str> = e["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .filter_map(|c| c["tag"].as_str())
        .collect();
    assert_eq!(tags, ["1.0.2", "1.1.0", "2.0.0"], "{e}");
    assert_eq!(e["candidates"][2]["decision"], "manual_approval");
    let held_eval = &find(&held)["evaluation"];
    assert!(held_eval["act_on"].is_null(), "{held_eval}");
    assert_eq!(
        held_eval["candidates"][0]["rule"],
        "label:safe-updater.io/patch"
    );

    // Requests grow with repositories, not containers: one tag list for the one repository.
    assert_eq!(check["requests"]["tags_page"], 1, "{}", check["requests"]);
}

#[test]
fn an_engine_that_is_down_is_reported_and_the_others_are_still_scanned() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let image = format!("{registry}/demo/web:1.0.0");
    docker(&["pull", "-q", &image]);
    let web = unique("alive");
    let _guard = Containers(vec![web.clone()]);
    let scope = unique("down");
    docker(&[
        "run",
        "-d",
        "--name",
        &web,
        "--label",
        &scope_label(&scope),
        &image,
    ]);

    let dir = TempDir::new().expect("tempdir");
    let dead = dir.path().join("nothing-listens-here.sock");
    let config = engine_config(
        &scope,
        &format!("    - name: dead\n      host: unix://{}\n", dead.display()),
    );
    let (code, scan, _) = safe_updater(&dir, &config, &["scan"]);
    assert_eq!(
        code, 1,
        "a failed engine makes the scan a negative result: {scan}"
    );
    let engines = scan["engines"].as_array().expect("engines");
    let dead_outcome = engines
        .iter()
        .find(|e| e["engine"] == "dead")
        .expect("dead engine reported");
    assert!(
        dead_outcome["error"]
            .as_str()
            .unwrap_or("")
            .contains("dead"),
        "{dead_outcome}"
    );
    let local = engines
        .iter()
        .find(|e| e["engine"] == "local")
        .expect("local engine reported");
    assert!(local["error"].is_null(), "{local}");

    let (code, assets, _) = safe_updater(&dir, &config, &["list-assets", "--name", &web]);
    assert_eq!(code, 0);
    assert_eq!(assets.as_array().map(Vec::len), Some(1), "{assets}");
}

#[test]
fn run_once_applies_the_patch_rolls_back_the_bad_build_and_holds_the_major() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let good = unique("run-good");
    let bad = unique("run-bad");
    let major = unique("run-major");
    let _guard = Containers(vec![
        good.clone(),
        bad.clone(),
        major.clone(),
        format!("{bad}.su-old"),
        format!("{good}.su-old"),
    ]);
    for tag in ["1.0.0-alpine", "1.0.0", "1.1.0"] {
        docker(&["pull", "-q", &format!("{registry}/demo/web:{tag}")]);
    }
    let scope = unique("run");
    let label = scope_label(&scope);
    docker(&[
        "run",
        "-d",
        "--name",
        &good,
        "--label",
        &label,
        &format!("{registry}/demo/web:1.0.0-alpine"),
    ]);
    let bad_id = docker(&[
        "run",
        "-d",
        "--name",
        &bad,
        "--label",
        &label,
        "-e",
        "GREETING=hello",
        "--restart",
        "unless-stopped",
        &format!("{registry}/demo/web:1.0.0"),
    ]);
    docker(&[
        "run",
        "-d",
        "--name",
        &major,
        "--label",
        &label,
        &format!("{registry}/demo/web:1.1.0"),
    ]);

    let dir = TempDir::new().expect("tempdir");
    // Other containers on the shared engine are out of the test's scope.
    let config = format!(
        "{}health:\n  window: 8s\n  interval: 1s\n  failure_threshold: 2\n",
        engine_config(&scope, ""),
    );
    let (_, run1, stderr) = safe_updater(&dir, &config, &["run", "--once"]);
    let applied = |run: &Value, name: &str| -> Option<Value> {
        run["applied"].as_array().and_then(|a| {
            a.iter()
                .find(|x| x["asset_id"] == format!("docker/local/{name}"))
                .cloned()
        })
    };
    let g = applied(&run1, &good).unwrap_or_else(|| panic!("{good} not updated: {run1} {stderr}"));
    assert_eq!(g["status"], "succeeded", "{g}");
    assert!(
        g["to"].as_str().unwrap_or("").ends_with(":1.0.1-alpine"),
        "{g}"
    );
    let b = applied(&run1, &bad).unwrap_or_else(|| panic!("{bad} not tried: {run1}"));
    assert_eq!(b["status"], "rolled_back", "{b}");
    assert!(b["to"].as_str().unwrap_or("").ends_with(":1.0.2"), "{b}");
    assert!(
        applied(&run1, &major).is_none(),
        "the major is held: {run1}"
    );

    // The bad build's container is back exactly: same id, running, same configuration.
    let now = docker(&[
        "inspect",
        "--format",
        "{{.Id}} {{.State.Running}} {{.HostConfig.RestartPolicy.Name}}",
        &bad,
    ]);
    assert_eq!(now, format!("{bad_id} true unless-stopped"));
    assert!(
        docker(&["inspect", "--format", "{{json .Config.Env}}", &bad]).contains("GREETING=hello")
    );
    assert!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &good]).ends_with(":1.0.1-alpine")
    );

    // The next cycle does not retry 1.0.2; it takes 1.0.1.
    let (_, run2, _) = safe_updater(&dir, &config, &["run", "--once"]);
    let b2 = applied(&run2, &bad)
        .unwrap_or_else(|| panic!("{bad} not updated in the second cycle: {run2}"));
    assert_eq!(b2["status"], "succeeded", "{b2}");
    assert!(b2["to"].as_str().unwrap_or("").ends_with(":1.0.1"), "{b2}");

    // History and audit tell the story, and the trail verifies.
    let (_, history, _) = safe_updater(&dir, &config, &["history", &format!("docker/local/{bad}")]);
    assert_eq!(
        common::column(&history, "status"),
        ["succeeded", "rolled_back"],
        "{history}"
    );
    let (code, verify, _) = safe_updater(&dir, &config, &["audit", "verify"]);
    assert_eq!(code, 0, "{verify}");
}

fn asset_ids(dir: &TempDir, config: &str) -> Vec<String> {
    let (_, list, _) = safe_updater(dir, config, &["list-assets"]);
    list.as_array()
        .expect("list-assets prints an array")
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}

fn audit_actions(dir: &TempDir, config: &str, asset: &str) -> Vec<Value> {
    let out = Bin::cargo_bin("safe-updater")
        .expect("binary built")
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["audit", "export", "--format", "jsonl"])
        .output()
        .expect("runs");
    let _ = config;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["asset_id"] == asset)
        .collect()
}

/// Pulls from the basic-auth and the bearer-token registries with the credentials of the
/// config (and fails without them); Watchtower's lifecycle hooks run and decide; configured
/// TCP and exec checks verify; a container that is gone leaves the inventory.
#[test]
fn private_registries_hooks_and_configured_checks() {
    let basic = env_var("SAFE_UPDATER_E2E_REGISTRY_BASIC");
    let token = env_var("SAFE_UPDATER_E2E_REGISTRY_TOKEN");
    let open = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let user = env_var("SAFE_UPDATER_E2E_REGISTRY_USER");
    let docker_config = env_var("SAFE_UPDATER_E2E_DOCKER_CONFIG");
    let pid = std::process::id();
    let n = |what: &str| format!("su-e2e-priv-{what}-{pid}");
    let names = [
        "basic", "token", "pre75", "prefail", "post", "postbad", "checks", "checkbad",
    ];
    let mut guard: Vec<String> = names.iter().map(|w| n(w)).collect();
    guard.extend(names.iter().map(|w| format!("{}.su-old", n(w))));
    let _guard = Containers(guard);
    let with_config = |args: &[&str]| {
        let mut full = vec!["--config", docker_config.as_str()];
        full.extend_from_slice(args);
        docker(&full)
    };
    with_config(&["pull", "-q", &format!("{basic}/demo/web:1.0.0")]);
    with_config(&["pull", "-q", &format!("{token}/demo/web:1.0.0")]);
    docker(&["pull", "-q", &format!("{open}/demo/web:1.0.0")]);
    let scope = format!("su-e2e-priv-{pid}");
    let label = scope_label(&scope);
    let run = |name: &str, image: &str, labels: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--label", &label];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push(image);
        docker(&args);
    };
    run(&n("basic"), &format!("{basic}/demo/web:1.0.0"), &[]);
    run(&n("token"), &format!("{token}/demo/web:1.0.0"), &[]);
    let web = format!("{open}/demo/web:1.0.0");
    run(
        &n("pre75"),
        &web,
        &["com.centurylinklabs.watchtower.lifecycle.pre-update=echo not now; exit 75"],
    );
    run(
        &n("prefail"),
        &web,
        &["com.centurylinklabs.watchtower.lifecycle.pre-update=exit 2"],
    );
    run(
        &n("post"),
        &web,
        &[
            "com.centurylinklabs.watchtower.lifecycle.pre-update=echo draining",
            "com.centurylinklabs.watchtower.lifecycle.post-update=grep -q 1.0.1 /www/version",
        ],
    );
    run(
        &n("postbad"),
        &web,
        &["safe-updater.io/post-update=echo migration failed; exit 3"],
    );
    run(&n("checks"), &web, &["safe-updater.io/health-tcp=8080"]);
    run(&n("checkbad"), &web, &[]);

    let dir = TempDir::new().expect("tempdir");
    let base = format!(
        "{}health:\n  window: 4s\n  interval: 1s\n  failure_threshold: 2\n  checks:\n    - match: {{ name: \"{checks}\" }}\n      exec: {{ command: [cat, /www/version], output_contains: \"1.0.1\" }}\n    - match: {{ name: \"{checkbad}\" }}\n      exec: {{ command: [cat, /www/missing] }}\npolicy:\n  enabled: false\nresources:\n  - match: {{ name: \"su-e2e-priv-*-{pid}\" }}\n    policy: {{ enabled: true }}\nregistries:\n  docker_config: {dir}/no-such-docker-config.json\n",
        engine_config(&scope, ""),
        checks = n("checks"),
        checkbad = n("checkbad"),
        dir = dir.path().display(),
    );
    let (code, scan, stderr) = safe_updater(&dir, &base, &["scan"]);
    assert_eq!(code, 0, "{scan} {stderr}");
    let update = |config: &str, what: &str| -> Value {
        let (_, out, stderr) = safe_updater(
            &dir,
            config,
            &[
                "update",
                &format!("docker/local/{}", n(what)),
                "--to",
                "1.0.1",
            ],
        );
        let one = out
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or(out);
        assert!(one.get("status").is_some(), "{what}: {one} {stderr}");
        one
    };

    // Without credentials the private pulls fail, and nothing changes.
    for what in ["basic", "token"] {
        let o = update(&base, what);
        assert_eq!(o["status"], "failed", "{what}: {o}");
        assert!(
            docker(&["inspect", "--format", "{{.Config.Image}}", &n(what)]).ends_with(":1.0.0")
        );
    }
    // With them (from the environment, never in the file) they succeed.
    let password_var = "SAFE_UPDATER_E2E_REGISTRY_PASSWORD";
    let creds = format!(
        "{base}  credentials:\n    - {{ registry: \"{basic}\", username: {user}, password_env: {password_var} }}\n    - {{ registry: \"{token}\", username: {user}, password_env: {password_var} }}\n"
    );
    // A failed version is not retried, so these go to 1.0.1 by a fresh state's eyes: clear it.
    std::fs::remove_file(dir.path().join("state.db")).expect("state removed");
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("state.db{ext}")));
    }
    let (code, _, stderr) = safe_updater(&dir, &creds, &["scan"]);
    assert_eq!(code, 0, "{stderr}");
    for what in ["basic", "token"] {
        let o = update(&creds, what);
        assert_eq!(o["status"], "succeeded", "{what}: {o}");
        assert!(
            docker(&["inspect", "--format", "{{.Config.Image}}", &n(what)]).ends_with(":1.0.1")
        );
    }

    // Lifecycle hooks.
    let o = update(&creds, "pre75");
    assert_eq!(o["status"], "skipped", "{o}");
    assert!(docker(&["inspect", "--format", "{{.Config.Image}}", &n("pre75")]).ends_with(":1.0.0"));
    let o = update(&creds, "prefail");
    assert_eq!(o["status"], "not_started", "{o}");
    assert!(
        o["detail"].as_str().unwrap_or("").contains("exited with 2"),
        "{o}"
    );
    let o = update(&creds, "post");
    assert_eq!(o["status"], "succeeded", "{o}");
    let post_audit = audit_actions(&dir, &creds, &format!("docker/local/{}", n("post")));
    let actions: Vec<&str> = post_audit
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"hook.pre_update") && actions.contains(&"hook.post_update"),
        "{actions:?}"
    );
    let o = update(&creds, "postbad");
    assert_eq!(o["status"], "rolled_back", "{o}");
    assert!(
        o["detail"].as_str().unwrap_or("").contains("post-update"),
        "{o}"
    );
    assert!(
        docker(&[
            "inspect",
            "--format",
            "{{.Config.Image}} {{.State.Running}}",
            &n("postbad")
        ])
        .ends_with(":1.0.0 true")
    );

    // Configured exec check (and the TCP label) pass on 1.0.1; a failing one rolls back.
    let o = update(&creds, "checks");
    assert_eq!(o["status"], "succeeded", "{o}");
    let o = update(&creds, "checkbad");
    assert_eq!(o["status"], "rolled_back", "{o}");
    assert!(
        o["detail"]
            .as_str()
            .unwrap_or("")
            .contains("exec cat /www/missing"),
        "{o}"
    );

    // A container that is gone leaves the inventory at the next scan.
    let gone = format!("docker/local/{}", n("checkbad"));
    assert!(asset_ids(&dir, &creds).contains(&gone));
    docker(&["rm", "-f", &n("checkbad")]);
    let (code, scan, _) = safe_updater(&dir, &creds, &["scan"]);
    assert_eq!(code, 0);
    assert!(
        scan["removed"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == gone.as_str())),
        "{scan}"
    );
    assert!(!asset_ids(&dir, &creds).contains(&gone));
}
