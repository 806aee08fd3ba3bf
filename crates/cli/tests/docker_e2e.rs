//! `scan` and `check` end to end: the built binary against the real Docker engine and the real
//! registries of `scripts/dev-env`. Without that environment these tests fail and say how to
//! start it; they never pass silently.

use std::process::Command;

use assert_cmd::Command as Bin;
use serde_json::Value;
use tempfile::TempDir;

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"` (or `scripts/test`, which does both)")
    })
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Containers made by one test, removed when it ends (even on panic).
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "su-e2e-{prefix}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    )
}

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

fn engine_config(extra_engine: &str) -> String {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    format!("docker:\n  engines:\n    - name: local\n      host: {host}\n{extra_engine}")
}

#[test]
fn scan_then_check_finds_the_patch_and_holds_the_major() {
    let registry = env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN");
    let image = format!("{registry}/demo/web:1.0.0");
    docker(&["pull", "-q", &image]);
    let web = unique("web");
    let held = unique("held");
    let _guard = Containers(vec![web.clone(), held.clone()]);
    docker(&["run", "-d", "--name", &web, &image]);
    docker(&[
        "run",
        "-d",
        "--name",
        &held,
        "--label",
        "safe-updater.io/patch=manual",
        &image,
    ]);

    let dir = TempDir::new().expect("tempdir");
    let config = engine_config("");
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
    docker(&["run", "-d", "--name", &web, &image]);

    let dir = TempDir::new().expect("tempdir");
    let dead = dir.path().join("nothing-listens-here.sock");
    let config = engine_config(&format!(
        "    - name: dead\n      host: unix://{}\n",
        dead.display()
    ));
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
    docker(&[
        "run",
        "-d",
        "--name",
        &good,
        &format!("{registry}/demo/web:1.0.0-alpine"),
    ]);
    let bad_id = docker(&[
        "run",
        "-d",
        "--name",
        &bad,
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
        &format!("{registry}/demo/web:1.1.0"),
    ]);

    let dir = TempDir::new().expect("tempdir");
    // Other containers on the shared engine are left alone: updates are disabled for all but
    // this test's own.
    let config = format!(
        "{}health:\n  window: 8s\n  interval: 1s\n  failure_threshold: 2\npolicy:\n  enabled: false\nresources:\n  - match: {{ name: \"su-e2e-run-*-{}-*\" }}\n    policy: {{ enabled: true }}\n",
        engine_config(""),
        std::process::id()
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
    let statuses: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|u| u["status"].as_str())
        .collect();
    assert_eq!(statuses, ["succeeded", "rolled_back"], "{history}");
    let (code, verify, _) = safe_updater(&dir, &config, &["audit", "verify"]);
    assert_eq!(code, 0, "{verify}");
}
