//! The `safe-updater` binary end to end on Kubernetes and Helm: `scan`, `check`, `update`,
//! `rollback` and `history` against a real cluster — `scripts/kube-env` (a real control plane,
//! a simulated node on which `:1.0.2` images crash-loop, real `helm`, the demo-web chart in a
//! basic-auth Helm repository and as OCI) or any cluster given by `SAFE_UPDATER_E2E_KUBECONFIG`
//! with the same variables.
//!
//! The binary runs as a service account bound to the roles shipped in `deploy/rbac/` (kubeconfigs
//! from `scripts/kube-env sa-kubeconfig`), never as admin; admin (`kubectl`, `helm`) only makes
//! the fixtures. Each test has its own namespace (deleted at the end) and state database.
//!
//! Tests that need the cluster skip with a printed reason when `SAFE_UPDATER_E2E_KUBECONFIG` is
//! unset: `eval "$(scripts/dev-env env)"; eval "$(scripts/kube-env env)"` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command as Bin;
use serde_json::Value;
use tempfile::TempDir;

#[path = "../../kube/tests/support/cluster.rs"]
mod cluster;
mod common;
use cluster::{Env, Namespace, env, run};

/// A kubeconfig of one service account of the shipped roles (`safe-updater` read-only,
/// `safe-updater-writer` update), in `dir`.
fn identity(env: &Env, dir: &Path, sa: &str) -> PathBuf {
    cluster::sa_kubeconfig(env, dir, sa)
}

fn current_context(env: &Env, kubeconfig: &Path) -> String {
    run(
        &env.kubectl,
        kubeconfig,
        &["config", "current-context"],
        None,
    )
    .trim()
    .to_owned()
}

impl Namespace<'_> {
    /// `helm install` as admin (a fixture), from the OCI copy of the chart.
    fn install_chart(&self, release: &str, version: &str) {
        let chart = format!("{}/demo-web", self.env.chart_oci);
        let mut args = vec![
            "install",
            release,
            chart.as_str(),
            "--namespace",
            &self.name,
            "--version",
            version,
            "--set",
            "replicaCount=1",
            "--wait",
            "--timeout",
            "2m",
        ];
        if self.env.chart_oci.contains("127.0.0.1") || self.env.chart_oci.contains("localhost") {
            args.push("--plain-http");
        }
        run(&self.env.helm, &self.env.admin_kubeconfig, &args, None);
    }
}

/// A Deployment of the demo image. The readiness probe makes `:1.0.2` (whose `/health` is 404)
/// fail on a real cluster too; kube-env's simulated node fails it by its tag.
fn deployment(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{extra_spec}      containers:\n      - name: web\n        image: {image}\n        readinessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 2}}\n"
    )
}

/// The configuration the tests run with: Kubernetes through `kubeconfig`, the chart repository
/// with basic auth (password from an environment variable), no registry credentials at all
/// (an empty Docker config), and a short health window.
fn config(env: &Env, dir: &Path, kubeconfig: &Path, extra: &str) -> String {
    let docker_config = dir.join("docker-config.json");
    std::fs::write(&docker_config, "{}").expect("empty docker config");
    format!(
        "kubernetes:\n  kubeconfig: {}\n  rollout_timeout: 2m\n  helm: {{binary: {}, timeout: 2m}}\n  charts:\n    - chart: demo-web\n      url: {}\n      username: {}\n      password_env: SU_E2E_CHART_PASSWORD\n{extra}registries:\n  docker_config: {}\nhealth: {{window: 4s, interval: 500ms, failure_threshold: 3}}\n",
        kubeconfig.display(),
        env.helm.display(),
        env.chart_repo,
        env.chart_user,
        docker_config.display(),
    )
}

/// Runs the binary with `--output json`; returns (exit code, JSON, stderr).
fn su(env: &Env, dir: &Path, config: &str, args: &[&str]) -> (i32, Value, String) {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, config).expect("config written");
    let out = Bin::cargo_bin("safe-updater")
        .expect("binary built")
        .arg("--config")
        .arg(&cfg)
        .arg("--state")
        .arg(dir.join("state.db"))
        .args(["--output", "json"])
        .args(args)
        .env("SU_E2E_CHART_PASSWORD", &env.chart_password)
        .env_remove("KUBECONFIG")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Scans until `ready` holds for what is stored (pods take a moment to appear).
fn scan_until(
    env: &Env,
    dir: &Path,
    cfg: &str,
    args: &[&str],
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, report, err) = su(env, dir, cfg, &[&["scan"], args].concat());
        assert_eq!(code, 0, "scan failed: {report} {err}");
        let (_, assets, _) = su(env, dir, cfg, &["list-assets"]);
        let list = assets.as_array().cloned().unwrap_or_default();
        if ready(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "never ready: {list:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Scans the namespace's Deployments until `ready` holds for what is stored; the first one's id.
fn deployment_id(
    env: &Env,
    dir: &Path,
    cfg: &str,
    namespace: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> String {
    let list = scan_until(
        env,
        dir,
        cfg,
        &["--namespace", namespace, "--kind", "Deployment"],
        ready,
    );
    list[0]["id"].as_str().expect("id").to_owned()
}

#[test]
fn scan_discovers_every_kind_and_a_release_and_the_flags_narrow_it() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let reader = identity(env, dir.path(), "safe-updater");
    let ctx = current_context(env, &reader);
    let ns = Namespace::new(env, "su-cli", "scan");
    let image = format!("{}:1.0.0", env.image_repo);
    ns.apply(&deployment("web", &image, ""));
    ns.apply(&format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 1\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers: [{{name: db, image: \"{image}\"}}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      containers: [{{name: agent, image: \"{image}\"}}]\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: once}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: task, image: \"{image}\"}}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: task, image: \"{image}\"}}]\n"
    ));
    ns.install_chart("rel", "0.1.0");
    // Kubernetes is off in the file and Docker is not scanned: --context turns it on.
    let cfg = config(env, dir.path(), &reader, "  read_only: true\n");
    let n = &ns.name;
    let id = |kind: &str, rest: &str| format!("k8s/{ctx}/{n}/{kind}/{rest}");
    let want = [
        id("Deployment", "web/web"),
        id("StatefulSet", "db/db"),
        id("DaemonSet", "agent/agent"),
        id("Job", "once/task"),
        id("CronJob", "nightly/task"),
        id("HelmRelease", "rel"),
        id("Deployment", "rel-demo-web/web"),
    ];
    let assets = scan_until(
        env,
        dir.path(),
        &cfg,
        &["--context", &ctx, "--namespace", n],
        |list| {
            list.iter()
                .any(|a| a["id"] == want[0].as_str() && !a["digest"].is_null())
        },
    );
    let found = ids(&Value::Array(assets.clone()));
    for w in &want {
        assert!(found.contains(w), "{w} missing from {found:?}");
    }
    let release = assets
        .iter()
        .find(|a| a["kind"] == "HelmRelease")
        .expect("release");
    assert_eq!(release["image"], "demo-web:0.1.0");
    assert_eq!(
        release["extra"]["chart_repository"],
        env.chart_repo.as_str()
    );
    let chart_deploy = assets
        .iter()
        .find(|a| a["id"] == want[6].as_str())
        .expect("chart deployment");
    assert_eq!(chart_deploy["extra"]["helm_managed"], true);

    let (code, report, err) = su(
        env,
        dir.path(),
        &cfg,
        &["scan", "--context", &ctx, "--namespace", n],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        report["engines"],
        Value::Array(Vec::new()),
        "Docker left out"
    );
    assert_eq!(report["kubernetes"]["contexts"][0]["context"], ctx.as_str());
    assert_eq!(report["kubernetes"]["contexts"][0]["releases"], 1);
    assert_eq!(report["kubernetes"]["contexts"][0]["error"], Value::Null);

    // --kind narrows what is scanned (a fresh state database shows only what was stored).
    let narrow = TempDir::new().expect("tempdir");
    let ncfg = config(env, narrow.path(), &reader, "  read_only: true\n");
    let (code, _, err) = su(
        env,
        narrow.path(),
        &ncfg,
        &[
            "scan",
            "--context",
            &ctx,
            "--namespace",
            n,
            "--kind",
            "deploy,HelmRelease",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, stored, _) = su(env, narrow.path(), &ncfg, &["list-assets"]);
    let mut kinds: Vec<String> = stored
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["kind"].as_str().expect("kind").to_owned())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["Deployment", "HelmRelease"]);
    // --namespace narrows it too: another namespace holds none of these.
    let (code, report, err) = su(
        env,
        narrow.path(),
        &ncfg,
        &[
            "scan",
            "--context",
            &ctx,
            "--namespace",
            "su-cli-nothing-here",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["kubernetes"]["assets"], 0);

    // A context the kubeconfig does not have: the error lists the ones it has.
    let (code, report, _) = su(
        env,
        dir.path(),
        &cfg,
        &["scan", "--context", "no-such-context"],
    );
    assert_eq!(code, 1);
    let msg = report["error"].as_str().expect("error").to_owned();
    assert!(
        msg.contains("no-such-context") && msg.contains(&ctx),
        "{msg}"
    );
}

#[test]
fn check_finds_a_private_patch_with_only_the_pods_pull_secrets() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let reader = identity(env, dir.path(), "safe-updater");
    let ns = Namespace::new(env, "su-cli", "pull");
    ns.create_pull_secret("regcred");
    let image = format!("{}/demo/web:1.0.0", env.registry_basic);
    ns.apply(&deployment(
        "private",
        &image,
        "      imagePullSecrets: [{name: regcred}]\n",
    ));
    // The same image without the secret: the registry refuses it, which shows the credential
    // above came from the pod's secret and nowhere else.
    ns.apply(&deployment("nosecret", &image, ""));
    let cfg = config(
        env,
        dir.path(),
        &reader,
        "  enabled: true\n  read_only: true\n",
    );
    let n = ns.name.clone();
    scan_until(
        env,
        dir.path(),
        &cfg,
        &["--kind", "Deployment", "--namespace", &n],
        |l| l.len() >= 2,
    );
    let (code, report, err) = su(env, dir.path(), &cfg, &["check", "--namespace", &n]);
    assert_eq!(
        code, 1,
        "the asset without credentials is an error: {report} {err}"
    );
    let checks = report["checks"].as_array().expect("checks");
    let private = checks
        .iter()
        .find(|c| {
            c["asset_id"]
                .as_str()
                .is_some_and(|i| i.contains("/private/"))
        })
        .expect("private checked");
    assert_eq!(private["error"], Value::Null, "{private}");
    let candidates: Vec<&str> = private["evaluation"]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["tag"].as_str().expect("tag"))
        .collect();
    assert_eq!(
        candidates,
        ["1.0.2", "1.1.0", "2.0.0"],
        "the best of each class"
    );
    assert_eq!(
        private["evaluation"]["act_on"], "1.0.2",
        "the best patch, by policy"
    );
    let unauth = checks
        .iter()
        .find(|c| {
            c["asset_id"]
                .as_str()
                .is_some_and(|i| i.contains("/nosecret/"))
        })
        .expect("nosecret checked");
    assert!(
        unauth["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{unauth}"
    );
}

#[test]
fn update_rolls_out_a_patch_rolls_back_a_bad_one_and_rollback_restores() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "update");
    ns.apply(&deployment("web", &format!("{}:1.0.0", env.image_repo), ""));
    let cfg = config(env, dir.path(), &writer, "  enabled: true\n");
    let n = ns.name.clone();
    let id = deployment_id(env, dir.path(), &cfg, &n, |l| {
        l.iter().any(|a| a["extra"]["ready_pods"] == 2)
    });
    let template_before = ns.get("deployment/web", "{.spec.template}");

    // Policy's pick is the newest patch, 1.0.2, which crash-loops: rolled back by itself.
    let (code, out, err) = su(env, dir.path(), &cfg, &["update", "--namespace", &n]);
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out[0]["to"], format!("{}:1.0.2", env.image_repo));
    assert_eq!(out[0]["status"], "rolled_back", "{out}");
    assert!(
        out[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("CrashLoopBackOff")),
        "{out}"
    );
    assert_eq!(
        ns.get("deployment/web", "{.spec.template}"),
        template_before,
        "the previous pod template is restored exactly"
    );

    // 1.0.2 failed and is not proposed again: the next update takes 1.0.1 and rolls it out.
    let (code, out, err) = su(env, dir.path(), &cfg, &["update", &id]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out[0]["status"], "succeeded", "{out}");
    assert_eq!(
        ns.image("deployment/web"),
        format!("{}:1.0.1", env.image_repo)
    );
    assert_eq!(
        ns.get(
            "deployment/web",
            "{.metadata.annotations.safe-updater\\.io/previous-image}"
        ),
        format!("{}:1.0.0", env.image_repo)
    );
    let managers = ns.get("deployment/web", "{.metadata.managedFields[*].manager}");
    assert!(managers.contains("safe-updater"), "{managers}");

    // `rollback` puts the previous image back, verified like an update.
    let (code, out, err) = su(env, dir.path(), &cfg, &["rollback", &id]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out[0]["to"], format!("{}:1.0.0", env.image_repo));
    assert_eq!(
        ns.image("deployment/web"),
        format!("{}:1.0.0", env.image_repo)
    );

    let (code, history, _) = su(
        env,
        dir.path(),
        &cfg,
        &["history", "--kind", "Deployment", "--namespace", &n],
    );
    assert_eq!(code, 0);
    assert_eq!(
        common::column(&history, "status"),
        ["succeeded", "succeeded", "rolled_back"]
    );
    let (_, none, _) = su(env, dir.path(), &cfg, &["history", "--kind", "HelmRelease"]);
    assert_eq!(none, Value::Array(Vec::new()), "--kind narrows history");
}

/// The snapshot is stored before the patch: `update` killed (SIGKILL) mid-rollout leaves an
/// `in_progress` record, and the next `update` first restores the previous template from it.
#[test]
fn an_update_killed_mid_rollout_is_restored_on_the_next_start() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "crash");
    let image = format!("{}:1.0.0", env.image_repo);
    ns.apply(&deployment("web", &image, ""));
    // A long window, so the process is surely still verifying when it is killed.
    let cfg =
        config(env, dir.path(), &writer, "  enabled: true\n").replace("window: 4s", "window: 5m");
    let n = ns.name.clone();
    let id = deployment_id(env, dir.path(), &cfg, &n, |l| !l.is_empty());
    let template_before = ns.get("deployment/web", "{.spec.template}");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("safe-updater"))
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["update", &id, "--to", "1.0.1"])
        .env("SU_E2E_CHART_PASSWORD", &env.chart_password)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("update starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ns.image("deployment/web") != format!("{}:1.0.1", env.image_repo) {
        if let Some(status) = child.try_wait().expect("child") {
            use std::io::Read as _;
            let mut err = String::new();
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err);
            panic!("update ended ({status}) before the patch landed: {err}");
        }
        assert!(Instant::now() < deadline, "the patch never landed");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let (_, history, _) = su(env, dir.path(), &cfg, &["history", &id]);
    assert_eq!(history[0]["status"], "in_progress", "{history}");

    // The next start restores the snapshot before doing what it was asked (here: 1.0.0 again,
    // which is where the restore already put it).
    let cfg = cfg.replace("window: 5m", "window: 2s");
    let (code, out, err) = su(env, dir.path(), &cfg, &["update", &id, "--to", "1.0.0"]);
    assert_eq!(code, 0, "{out} {err}");
    let (_, history, _) = su(env, dir.path(), &cfg, &["history", &id]);
    let rows: Vec<(&str, &str)> = common::column(&history, "status")
        .into_iter()
        .zip(common::column(&history, "error"))
        .collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert_eq!(rows[0].0, "succeeded");
    assert_eq!(rows[1].0, "rolled_back");
    assert!(rows[1].1.contains("interrupted"), "{history}");
    assert_eq!(
        ns.get("deployment/web", "{.spec.template}"),
        template_before,
        "the template is the one before the interrupted update"
    );
    // A crash says nothing against the version it was installing: policy (with the bad
    // 1.0.2 out of the way) proposes 1.0.1 again, and it is applied.
    let cfg = format!("{cfg}policy: {{ exclude: [\"^1\\\\.0\\\\.2$\"] }}\n");
    let (_, check, err) = su(
        env,
        dir.path(),
        &cfg,
        &["check", "--kind", "Deployment", "--namespace", &n],
    );
    let eval = check["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["asset_id"] == id.as_str()))
        .map(|c| c["evaluation"].clone())
        .unwrap_or_else(|| panic!("{id} not checked: {check} {err}"));
    let retried = eval["candidates"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["tag"] == "1.0.1"))
        .unwrap_or_else(|| panic!("1.0.1 is no longer proposed after the crash: {eval}"));
    assert_eq!(retried["decision"], "approve", "{retried}");
    let (code, out, err) = su(env, dir.path(), &cfg, &["update", &id, "--to", "1.0.1"]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(
        ns.image("deployment/web"),
        format!("{}:1.0.1", env.image_repo)
    );
}

#[test]
fn helm_chart_upgrade_a_bad_upgrade_rolled_back_and_helm_rollback() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "helm");
    ns.install_chart("rel", "0.1.0");
    let cfg = config(env, dir.path(), &writer, "");
    let n = ns.name.clone();
    let ctx = current_context(env, &writer);
    scan_until(
        env,
        dir.path(),
        &cfg,
        &[
            "--context",
            &ctx,
            "--namespace",
            &n,
            "--kind",
            "HelmRelease",
        ],
        |l| !l.is_empty(),
    );
    let id = format!("k8s/{ctx}/{n}/HelmRelease/rel");
    let image = || ns.image("deployment/rel-demo-web");

    // The chart versions come from the basic-auth repository; policy picks 0.1.2 (image
    // 1.0.2, which crash-loops): helm rollback to revision 1 by itself.
    let (code, out, err) = su(
        env,
        dir.path(),
        &cfg,
        &["update", "--context", &ctx, "--namespace", &n],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out[0]["asset_id"], id.as_str());
    assert_eq!(out[0]["to"], "demo-web:0.1.2");
    assert_eq!(out[0]["status"], "rolled_back", "{out}");
    assert_eq!(image(), format!("{}:1.0.0", env.image_repo));

    let (code, out, err) = su(env, dir.path(), &cfg, &["update", &id]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out[0]["to"], "demo-web:0.1.1");
    assert_eq!(out[0]["status"], "succeeded", "{out}");
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));
    let helm_history = run(
        &env.helm,
        &env.admin_kubeconfig,
        &["history", "rel", "--namespace", &n, "-o", "json"],
        None,
    );
    let revisions: Value = serde_json::from_str(&helm_history).expect("helm history JSON");
    let charts: Vec<&str> = revisions
        .as_array()
        .expect("revisions")
        .iter()
        .map(|r| r["chart"].as_str().expect("chart"))
        .collect();
    assert_eq!(
        charts,
        [
            "demo-web-0.1.0",
            "demo-web-0.1.2",
            "demo-web-0.1.0",
            "demo-web-0.1.1"
        ],
        "install, bad upgrade, rollback, good upgrade"
    );

    // `rollback`: helm rollback to the revision before the last upgrade.
    let (code, out, err) = su(env, dir.path(), &cfg, &["rollback", &id]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("revision 3")),
        "{out}"
    );
    assert_eq!(image(), format!("{}:1.0.0", env.image_repo));

    let (_, history, _) = su(env, dir.path(), &cfg, &["history", &id]);
    let rows: Vec<(&str, &str)> = common::column(&history, "to_ref")
        .into_iter()
        .zip(common::column(&history, "status"))
        .collect();
    assert_eq!(
        rows,
        [
            ("demo-web:0.1.0", "succeeded"),
            ("demo-web:0.1.1", "succeeded"),
            ("demo-web:0.1.2", "rolled_back")
        ]
    );

    // The chart's Deployment is Helm-managed: its image changes through `helm upgrade` of the
    // release (same chart version, the image value set), never by a patch of ours.
    let workload = format!("k8s/{ctx}/{n}/Deployment/rel-demo-web/web");
    scan_until(
        env,
        dir.path(),
        &cfg,
        &["--context", &ctx, "--namespace", &n, "--kind", "Deployment"],
        |l| l.iter().any(|a| a["id"] == workload.as_str()),
    );
    let (code, out, err) = su(
        env,
        dir.path(),
        &cfg,
        &["update", &workload, "--to", "1.0.1"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out[0]["status"], "succeeded", "{out}");
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));
    let values = run(
        &env.helm,
        &env.admin_kubeconfig,
        &["get", "values", "rel", "--namespace", &n, "-o", "json"],
        None,
    );
    assert!(
        values.contains("1.0.1"),
        "the release's values carry the tag: {values}"
    );
    let last: Value = serde_json::from_str(&run(
        &env.helm,
        &env.admin_kubeconfig,
        &[
            "history",
            "rel",
            "--namespace",
            &n,
            "--max",
            "1",
            "-o",
            "json",
        ],
        None,
    ))
    .expect("helm history JSON");
    assert_eq!(last[0]["chart"], "demo-web-0.1.0", "same chart version");
    let managers = ns.get(
        "deployment/rel-demo-web",
        "{.metadata.managedFields[*].manager}",
    );
    assert!(
        !managers.contains("safe-updater"),
        "never patched by us: {managers}"
    );
}

/// `run --once` with `kubernetes.enabled`: the Kubernetes cycle (recover, scan, check, apply by
/// policy, verify) beside Docker's. The Docker engine here is one that does not exist, so only
/// the cluster is touched (and the run reports the engine, exit 1).
#[test]
fn run_once_updates_kubernetes_by_policy() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "run");
    ns.apply(&deployment("web", &format!("{}:1.0.0", env.image_repo), ""));
    let cfg = format!(
        "{}docker:\n  engines:\n    - name: none\n      host: unix:///nonexistent/docker.sock\n",
        config(
            env,
            dir.path(),
            &writer,
            &format!(
                "  enabled: true\n  namespaces: {{include: [{}]}}\n",
                ns.name
            ),
        )
    );
    let image = || ns.image("deployment/web");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The first cycle may find the pods not yet Ready; policy still picks 1.0.2, which fails.
    let (_, out, err) = loop {
        let r = su(env, dir.path(), &cfg, &["run", "--once"]);
        if r.1["kubernetes"]["applied"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "nothing applied: {} {}",
            r.1,
            r.2
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(out["scan"]["engines"][0]["error"].is_string(), "{out}");
    let applied = &out["kubernetes"]["applied"][0];
    assert_eq!(
        applied["to"],
        format!("{}:1.0.2", env.image_repo),
        "{out} {err}"
    );
    assert_eq!(applied["status"], "rolled_back", "{out}");
    assert_eq!(image(), format!("{}:1.0.0", env.image_repo));

    let (_, out, err) = su(env, dir.path(), &cfg, &["run", "--once"]);
    let applied = &out["kubernetes"]["applied"][0];
    assert_eq!(
        applied["to"],
        format!("{}:1.0.1", env.image_repo),
        "{out} {err}"
    );
    assert_eq!(applied["status"], "succeeded", "{out}");
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));
    assert_eq!(
        out["kubernetes"]["scan"]["contexts"][0]["error"],
        Value::Null
    );
}

/// Configured health checks (`health.checks`) that match a workload run after its rollout: a
/// TCP check against a port nobody listens on fails a good image (rolled back); the same check
/// against a listening port lets it through.
#[test]
fn configured_checks_fail_and_pass_a_kubernetes_update() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "checks");
    ns.apply(&deployment("web", &format!("{}:1.0.0", env.image_repo), ""));
    let listening = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open_port = listening.local_addr().expect("addr").port();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let with_check = |port: u16| {
        config(env, dir.path(), &writer, "  enabled: true\n").replace(
            "health: {window: 4s, interval: 500ms, failure_threshold: 3}\n",
            &format!("health:\n  window: 2s\n  interval: 300ms\n  failure_threshold: 3\n  checks:\n    - match: {{kind: Deployment, name: web}}\n      tcp: {{host: 127.0.0.1, port: {port}, timeout: 1s}}\n"),
        )
    };
    let n = ns.name.clone();
    let id = deployment_id(env, dir.path(), &with_check(closed_port), &n, |l| {
        !l.is_empty()
    });
    let image = || ns.image("deployment/web");

    let (code, out, err) = su(
        env,
        dir.path(),
        &with_check(closed_port),
        &["update", &id, "--to", "1.0.1"],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out[0]["status"], "rolled_back", "{out}");
    let detail = out[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("configured checks failed") && detail.contains(&closed_port.to_string()),
        "{detail}"
    );
    assert_eq!(image(), format!("{}:1.0.0", env.image_repo));

    let (code, out, err) = su(
        env,
        dir.path(),
        &with_check(open_port),
        &["update", &id, "--to", "1.0.1"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out[0]["status"], "succeeded", "{out}");
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));
    drop(listening);
}

/// Exec checks run in the new revision's pods through the real apiserver (kube-env's node runs
/// the command in a container of the pod's image): a check the new image passes lets the update
/// stand; output it lacks, or a non-zero exit, rolls the update back.
#[test]
fn exec_checks_in_the_new_pods_pass_and_fail_a_kubernetes_update() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "exec");
    ns.apply(&deployment("web", &format!("{}:1.0.0", env.image_repo), ""));
    let with_check = |exec: &str| {
        config(env, dir.path(), &writer, "  enabled: true\n").replace(
            "health: {window: 4s, interval: 500ms, failure_threshold: 3}\n",
            &format!("health:\n  window: 2s\n  interval: 300ms\n  failure_threshold: 2\n  checks:\n    - match: {{kind: Deployment, name: web}}\n      exec: {exec}\n"),
        )
    };
    let prints = |version: &str| {
        format!(
            "{{command: [sh, -c, 'echo version=$APP_VERSION'], output_contains: 'version={version}', timeout: 10s}}"
        )
    };
    let n = ns.name.clone();
    let id = deployment_id(env, dir.path(), &with_check(&prints("1.0.1")), &n, |l| {
        !l.is_empty()
    });
    let image = || ns.image("deployment/web");

    // The output lacks what the check wants: rolled back.
    let (code, out, err) = su(
        env,
        dir.path(),
        &with_check(&prints("9.9.9")),
        &["update", &id, "--to", "1.0.1"],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out[0]["status"], "rolled_back", "{out}");
    let detail = out[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("configured checks failed")
            && detail.contains("lacks \"version=9.9.9\"")
            && detail.contains("version=1.0.1"),
        "the check ran in the new image and missed: {detail}"
    );
    assert_eq!(image(), format!("{}:1.0.0", env.image_repo));

    // The new image prints its own version: the update stands.
    let (code, out, err) = su(
        env,
        dir.path(),
        &with_check(&prints("1.0.1")),
        &["update", &id, "--to", "1.0.1"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out[0]["status"], "succeeded", "{out}");
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));

    // A non-zero exit: rolled back to 1.0.1.
    let (code, out, err) = su(
        env,
        dir.path(),
        &with_check("{command: [sh, -c, 'exit 2'], timeout: 10s}"),
        &["update", &id, "--to", "1.1.0"],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out[0]["status"], "rolled_back", "{out}");
    let detail = out[0]["detail"].as_str().expect("detail");
    assert!(detail.contains("exit code 2 (expected 0)"), "{detail}");
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));
}

#[test]
fn read_only_mode_refuses_update_with_a_clear_error() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    // Even with the update role bound, read_only keeps safe-updater from writing.
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "ro");
    let image = format!("{}:1.0.0", env.image_repo);
    ns.apply(&deployment("web", &image, ""));
    let cfg = config(
        env,
        dir.path(),
        &writer,
        "  enabled: true\n  read_only: true\n",
    );
    let n = ns.name.clone();
    let id = deployment_id(env, dir.path(), &cfg, &n, |l| !l.is_empty());
    let (code, out, err) = su(env, dir.path(), &cfg, &["update", &id, "--to", "1.0.1"]);
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out[0]["status"], "not_started");
    assert!(
        out[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("kubernetes.read_only is true")),
        "{out}"
    );
    assert_eq!(ns.image("deployment/web"), image);
    let (_, history, _) = su(env, dir.path(), &cfg, &["history"]);
    assert_eq!(
        history,
        Value::Array(Vec::new()),
        "nothing was recorded as started"
    );
}

/// Without a cluster: a configuration whose `kubernetes` section is off (or absent) behaves as
/// before — `scan` prints Docker's report alone, reads no kubeconfig, and `check` leaves stored
/// Kubernetes assets alone.
#[test]
fn kubernetes_disabled_behaves_as_before() {
    let dir = TempDir::new().expect("tempdir");
    let docker =
        "docker:\n  engines:\n    - name: gone\n      host: unix:///nonexistent/docker.sock\n";
    let run = |cfg: &str, args: &[&str]| {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, cfg).expect("config");
        let out = Bin::cargo_bin("safe-updater")
            .expect("binary")
            .arg("--config")
            .arg(&path)
            .arg("--state")
            .arg(dir.path().join("state.db"))
            .args(["--output", "json"])
            .args(args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .expect("runs");
        let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        (out.status.code(), json)
    };
    let absent = run(docker, &["scan"]);
    let off = run(
        &format!(
            "{docker}kubernetes:\n  enabled: false\n  kubeconfig: /nonexistent/kubeconfig\n  contexts: [nowhere]\n"
        ),
        &["scan"],
    );
    assert_eq!(absent.0, Some(1), "the engine is down: {:?}", absent.1);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&absent.1), ["assets", "engines", "removed"]);
    assert_eq!(absent, off, "a disabled section changes nothing");

    // Kubernetes assets in the store are not checked when Kubernetes is off (before, check
    // knew nothing of them either), and no kubeconfig is read.
    let mut store = safe_updater_store::Store::open(dir.path().join("state.db")).expect("store");
    let now = jiff::Timestamp::now();
    store
        .upsert_assets(&[safe_updater_core::asset::Asset {
            id: "k8s/ctx/apps/Deployment/web/web".into(),
            kind: safe_updater_core::asset::AssetKind::Deployment,
            location: "ctx".into(),
            namespace: Some("apps".into()),
            name: "web".into(),
            container: Some("web".into()),
            image: "127.0.0.1:1/none:1.0.0".into(),
            digest: None,
            labels: Default::default(),
            annotations: Default::default(),
            first_seen: now,
            last_seen: now,
            extra: Value::Null,
        }])
        .expect("seed");
    drop(store);
    let (code, report) = run(docker, &["check"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["checks"], Value::Array(Vec::new()));
}

/// The daemon stopped (SIGTERM, then SIGKILL) when the test ends, also on failure.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `safe-updater watch` runs the Kubernetes part of each cycle as the shipped update role: the
/// bad patch (`:1.0.2`) is tried and rolled back, the next cycle applies 1.0.1, `/metrics` counts
/// both under `asset_type="kubernetes"`, and SIGTERM ends the daemon with exit 0.
#[test]
fn the_daemon_updates_kubernetes_workloads_by_policy() {
    let Some(env) = env() else { return };
    let dir = TempDir::new().expect("tempdir");
    let writer = identity(env, dir.path(), "safe-updater-writer");
    let ns = Namespace::new(env, "su-cli", "watch");
    ns.apply(&deployment("web", &format!("{}:1.0.0", env.image_repo), ""));
    let port = common::free_port();
    let cfg = format!(
        "{}docker:\n  engines:\n    - name: none\n      host: unix:///nonexistent/docker.sock\ndaemon: {{interval: 3s}}\nserver: {{listen: \"127.0.0.1:{port}\"}}\n",
        config(
            env,
            dir.path(),
            &writer,
            &format!(
                "  enabled: true\n  namespaces: {{include: [{}]}}\n",
                ns.name
            ),
        )
    );
    let cfg_path = dir.path().join("config.yaml");
    std::fs::write(&cfg_path, cfg).expect("config written");
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let bin = assert_cmd::cargo::cargo_bin("safe-updater");
    let child = Command::new(bin)
        .arg("--config")
        .arg(&cfg_path)
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["--log-format", "json", "watch"])
        .env("SU_E2E_CHART_PASSWORD", &env.chart_password)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the daemon starts");
    let mut daemon = Daemon(child);
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let image = || ns.image("deployment/web");

    let deadline = Instant::now() + Duration::from_secs(150);
    while image() != format!("{}:1.0.1", env.image_repo) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not apply 1.0.1 (image {}); log:\n{}",
            image(),
            log_text()
        );
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("the daemon exited ({status}); log:\n{}", log_text());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The rollout of 1.0.1 is done; its health window may still be running.
    let metric = |body: &str, name: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains("asset_type=\"kubernetes\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = common::http(port, "GET", "/metrics", &[("Accept", "text/plain")], "");
        if status == 200 && metric(&body, "safe_updater_updates_succeeded_total") >= 1.0 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no succeeded Kubernetes update in /metrics:\n{body}\nlog:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        metric(&body, "safe_updater_rollbacks_total") >= 1.0,
        "the rolled-back 1.0.2 is not counted:\n{body}"
    );
    assert!(
        metric(&body, "safe_updater_updates_attempted_total") >= 2.0,
        "{body}"
    );
    let log = log_text();
    assert!(log.contains("rolled_back"), "{log}");
    assert!(
        !log.contains(&env.chart_password),
        "the chart repository password reached the log"
    );

    common::signal(&daemon.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(0), "log:\n{}", log_text());
    assert_eq!(image(), format!("{}:1.0.1", env.image_repo));
}
