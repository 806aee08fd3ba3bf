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
