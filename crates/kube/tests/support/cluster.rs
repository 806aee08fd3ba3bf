//! The Kubernetes end-to-end suites' shared harness (included by path from this crate's
//! `cluster_e2e` and the binary's `kube_e2e`): the cluster's variables, admin `kubectl` for
//! fixtures, the shipped roles applied once, service-account kubeconfigs, and namespaces
//! deleted when a test ends.
//!
//! Admin credentials only make fixtures; the code under test runs as the shipped roles. Nothing
//! here decides a test's outcome.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Env {
    pub admin_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    /// `scripts/kube-env`, for `sa-kubeconfig`; unset on other clusters.
    pub kube_env: Option<PathBuf>,
    pub chart_repo: String,
    pub chart_user: String,
    pub chart_password: String,
    pub chart_oci: String,
    /// The open registry's demo/web repository (`127.0.0.1:5001/demo/web`).
    pub image_repo: String,
    pub registry_basic: String,
    pub registry_user: String,
    pub registry_password: String,
}

pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The cluster of `SAFE_UPDATER_E2E_KUBECONFIG`, or `None` (printing why the tests skip).
pub fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let Some(kubeconfig) = var("SAFE_UPDATER_E2E_KUBECONFIG") else {
            eprintln!("SKIP: SAFE_UPDATER_E2E_KUBECONFIG is unset (eval \"$(scripts/dev-env env)\"; eval \"$(scripts/kube-env env)\" to run against the local cluster)");
            return None;
        };
        let need = |n: &str| var(n).unwrap_or_else(|| panic!("SAFE_UPDATER_E2E_KUBECONFIG is set but {n} is not"));
        let open = var("SAFE_UPDATER_E2E_REGISTRY_OPEN").unwrap_or_else(|| "127.0.0.1:5001".into());
        Some(Env {
            admin_kubeconfig: kubeconfig.into(),
            kubectl: var("SAFE_UPDATER_E2E_KUBECTL").unwrap_or_else(|| "kubectl".into()).into(),
            helm: var("SAFE_UPDATER_E2E_HELM").unwrap_or_else(|| "helm".into()).into(),
            kube_env: var("SAFE_UPDATER_E2E_KUBE_ENV").map(PathBuf::from),
            chart_repo: need("SAFE_UPDATER_E2E_CHART_REPO"),
            chart_user: need("SAFE_UPDATER_E2E_CHART_REPO_USER"),
            chart_password: need("SAFE_UPDATER_E2E_CHART_REPO_PASSWORD"),
            chart_oci: need("SAFE_UPDATER_E2E_CHART_OCI"),
            image_repo: format!("{open}/demo/web"),
            registry_basic: need("SAFE_UPDATER_E2E_REGISTRY_BASIC"),
            registry_user: need("SAFE_UPDATER_E2E_REGISTRY_USER"),
            registry_password: need("SAFE_UPDATER_E2E_REGISTRY_PASSWORD"),
        })
    })
    .as_ref()
}

/// Runs a tool (`kubectl`, `helm`) with `--kubeconfig` and `stdin` when given; panics on
/// failure with the tool's own message.
pub fn run(program: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new(program);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("fixture tool runs");
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("fixture tool finishes");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Admin kubectl (fixtures only).
pub fn kubectl(env: &Env, args: &[&str], stdin: Option<&str>) -> String {
    run(&env.kubectl, &env.admin_kubeconfig, args, stdin)
}

/// The shipped roles, applied once per test run: read-only bound to
/// `safe-updater/safe-updater`, update bound to a second account `safe-updater-writer`, so both
/// identities exist at once.
pub fn apply_rbac(env: &Env) {
    static RBAC: OnceLock<()> = OnceLock::new();
    RBAC.get_or_init(|| {
        let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac");
        let read_only =
            std::fs::read_to_string(rbac.join("read-only.yaml")).expect("read-only.yaml");
        kubectl(env, &["apply", "-f", "-"], Some(&read_only));
        let update = std::fs::read_to_string(rbac.join("update.yaml")).expect("update.yaml");
        let update: Vec<String> = update
            .split("\n---")
            .map(|doc| {
                if doc.contains("kind: ServiceAccount") || doc.contains("kind: ClusterRoleBinding")
                {
                    doc.replace("name: safe-updater\n", "name: safe-updater-writer\n")
                } else {
                    doc.to_owned()
                }
            })
            .collect();
        kubectl(env, &["apply", "-f", "-"], Some(&update.join("\n---")));
    });
}

/// A kubeconfig in `dir` for the service account `sa` of namespace `safe-updater` (short-lived
/// token), after the shipped roles are applied. Without `scripts/kube-env` (another cluster)
/// the admin kubeconfig, saying so.
pub fn sa_kubeconfig(env: &Env, dir: &Path, sa: &str) -> PathBuf {
    apply_rbac(env);
    let Some(script) = &env.kube_env else {
        eprintln!(
            "NOTE: SAFE_UPDATER_E2E_KUBE_ENV unset: running as the admin kubeconfig, not the shipped roles"
        );
        return env.admin_kubeconfig.clone();
    };
    let out = dir.join(format!("{sa}.kubeconfig"));
    let status = Command::new(script)
        .args(["sa-kubeconfig", "safe-updater", sa])
        .arg(&out)
        .arg("1h")
        .stdout(Stdio::null())
        .status()
        .expect("kube-env sa-kubeconfig runs");
    assert!(
        status.success(),
        "kube-env sa-kubeconfig safe-updater {sa} failed"
    );
    out
}

/// A namespace of the test's own, deleted when dropped.
pub struct Namespace<'a> {
    pub env: &'a Env,
    pub name: String,
}

impl<'a> Namespace<'a> {
    /// `<suite>-<test>-<pid>`.
    pub fn new(env: &'a Env, suite: &str, test: &str) -> Namespace<'a> {
        let name = format!("{suite}-{test}-{}", std::process::id());
        kubectl(env, &["create", "namespace", &name], None);
        Namespace { env, name }
    }

    pub fn apply(&self, yaml: &str) {
        kubectl(
            self.env,
            &["apply", "-n", &self.name, "-f", "-"],
            Some(yaml),
        );
    }

    /// `kubectl get <what> -o jsonpath=<jsonpath>` in this namespace.
    pub fn get(&self, what: &str, jsonpath: &str) -> String {
        kubectl(
            self.env,
            &[
                "get",
                what,
                "-n",
                &self.name,
                "-o",
                &format!("jsonpath={jsonpath}"),
            ],
            None,
        )
    }

    /// The image of the first container of a workload's pod template (`deployment/web`).
    pub fn image(&self, workload: &str) -> String {
        self.get(workload, "{.spec.template.spec.containers[0].image}")
    }

    /// A `docker-registry` Secret `name` holding the basic-auth registry's credentials.
    pub fn create_pull_secret(&self, name: &str) {
        let env = self.env;
        kubectl(
            env,
            &[
                "create",
                "secret",
                "docker-registry",
                name,
                "-n",
                &self.name,
                &format!("--docker-server={}", env.registry_basic),
                &format!("--docker-username={}", env.registry_user),
                &format!("--docker-password={}", env.registry_password),
            ],
            None,
        );
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = Command::new(&self.env.kubectl)
            .arg("--kubeconfig")
            .arg(&self.env.admin_kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}
