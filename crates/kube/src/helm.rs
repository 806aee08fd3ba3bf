//! The real `helm` CLI as a subprocess: version detection (Helm 3 or 4), `upgrade` after a
//! server-side dry run, `rollback` (with field-ownership conflicts handled deliberately), and
//! `history`.
//!
//! Argument lists are built by pure functions (unit-tested for both majors); running them is
//! `Helm::run`. Secrets never reach argv or a log: repository passwords go through
//! `--password-stdin` into a private Helm home, and the release's values through a file readable
//! only by us. This module must not decide whether to upgrade; every write goes through
//! [`Mode::check_write`], so a read-only target never runs one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use safe_updater_registry::Secret;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::error::KubeError;
use crate::guard::Mode;
use crate::helm_release::HelmRelease;
use crate::target::KubeTarget;
use crate::update::ApplyOptions;
use safe_updater_core::asset::AssetKind;

/// The step name of the real (not dry) `helm upgrade` run.
const UPGRADE_STEP: &str = "upgrade";

/// How to run `helm` against one context.
#[derive(Debug, Clone)]
pub struct HelmOptions {
    pub binary: PathBuf,
    /// `None`: helm's own defaults (`KUBECONFIG`, or in-cluster).
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub mode: Mode,
    /// `--timeout` for each helm operation.
    pub timeout: Duration,
}

/// Where a chart comes from.
#[derive(Clone)]
pub enum ChartSource {
    /// A classic repository (`index.yaml`), optionally with basic auth.
    Repository {
        url: String,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// An OCI registry: `oci://host/path` (the chart name is appended), optionally with
    /// credentials (`helm registry login` into a private Helm home, password on stdin).
    Oci {
        url: String,
        plain_http: bool,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// A chart directory or `.tgz` on disk.
    Local(PathBuf),
}

impl std::fmt::Debug for ChartSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChartSource::Repository { url, username, .. } => f
                .debug_struct("Repository")
                .field("url", url)
                .field("username", username)
                .finish_non_exhaustive(),
            ChartSource::Oci {
                url,
                plain_http,
                username,
                ..
            } => f
                .debug_struct("Oci")
                .field("url", url)
                .field("plain_http", plain_http)
                .field("username", username)
                .finish_non_exhaustive(),
            ChartSource::Local(p) => f.debug_tuple("Local").field(p).finish(),
        }
    }
}

/// One `helm upgrade`.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub release: String,
    pub namespace: String,
    pub chart: String,
    pub source: ChartSource,
    /// The chart version to install; `None` keeps helm's choice (the newest).
    pub version: Option<String>,
    /// The release's user-supplied values (from its release record), kept across the upgrade.
    pub values: serde_json::Value,
    /// `--set-string` overrides, e.g. `("image.tag", "1.0.1")` for an image update.
    pub set_string: Vec<(String, String)>,
    /// `--force-conflicts` (Helm 4, server-side apply).
    pub force_conflicts: bool,
    /// `--install`: install the release when it does not exist yet.
    pub install: bool,
}

/// An entry of `helm history -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub revision: u64,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default)]
    pub description: String,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackResult {
    pub to_revision: u64,
    /// The first attempt hit a server-side apply field-ownership conflict (someone else changed
    /// the release's objects) and was repeated with conflicts forced.
    pub forced_conflicts: bool,
}

/// The `helm` CLI for one context.
#[derive(Debug, Clone)]
pub struct Helm {
    opts: HelmOptions,
    version: String,
    major: u32,
}

/// Reads `v3.16.2` / `v4.1.4` into the major number.
pub fn parse_major(version: &str) -> Option<u32> {
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Whether helm's error text is a server-side apply field-ownership conflict.
pub fn is_conflict(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("conflict") && (s.contains("field") || s.contains("manager") || s.contains("apply"))
}

impl Helm {
    /// Runs `helm version` to learn the major version.
    pub async fn detect(opts: HelmOptions) -> Result<Helm, KubeError> {
        let mut helm = Helm {
            opts,
            version: String::new(),
            major: 0,
        };
        let out = helm
            .run(
                "version",
                vec!["version".into(), "--template".into(), "{{.Version}}".into()],
                None,
                None,
            )
            .await?;
        let version = out.trim().to_owned();
        let major = parse_major(&version).ok_or_else(|| KubeError::Helm {
            step: "version".into(),
            detail: format!("unreadable version {version:?}"),
        })?;
        if major < 3 {
            return Err(KubeError::Helm {
                step: "version".into(),
                detail: format!("Helm {version} is not supported (3 or newer)"),
            });
        }
        helm.version = version;
        helm.major = major;
        Ok(helm)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    /// The flag that makes helm undo a failed upgrade itself: `--atomic` (Helm 3) or
    /// `--rollback-on-failure` (Helm 4). We roll back ourselves, after our own verification, so
    /// this is for callers who want helm's behaviour.
    pub fn native_rollback_flag(&self) -> &'static str {
        if self.major >= 4 {
            "--rollback-on-failure"
        } else {
            "--atomic"
        }
    }

    fn connection_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(k) = &self.opts.kubeconfig {
            a.push("--kubeconfig".into());
            a.push(k.clone().into());
        }
        if let Some(c) = &self.opts.context {
            a.push("--kube-context".into());
            a.push(c.into());
        }
        a
    }

    /// The `helm upgrade` arguments. `chart_ref` is what helm should install (`repo/chart`,
    /// `oci://…/chart`, a path); `values_file` holds the kept values.
    pub fn upgrade_args(
        &self,
        req: &UpgradeRequest,
        chart_ref: &str,
        values_file: &Path,
        dry_run: bool,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "upgrade".into(),
            req.release.clone().into(),
            chart_ref.into(),
        ];
        a.extend(["--namespace".into(), req.namespace.clone().into()]);
        if req.install {
            a.push("--install".into());
        }
        if let Some(v) = &req.version {
            a.extend(["--version".into(), v.into()]);
        }
        // Chart defaults of the new version, then the release's own values, then overrides:
        // what `--reset-then-reuse-values` means, spelled out so it works on every Helm 3.
        a.extend([
            "--reset-values".into(),
            "-f".into(),
            values_file.as_os_str().to_owned(),
        ]);
        for (k, v) in &req.set_string {
            a.extend(["--set-string".into(), format!("{k}={v}").into()]);
        }
        if let ChartSource::Oci {
            plain_http: true, ..
        } = req.source
        {
            a.push("--plain-http".into());
        }
        if req.force_conflicts && self.major >= 4 {
            a.push("--force-conflicts".into());
        }
        if dry_run {
            a.push("--dry-run=server".into());
        }
        a.extend([
            "--timeout".into(),
            format!("{}s", self.opts.timeout.as_secs().max(1)).into(),
        ]);
        a.extend(self.connection_args());
        a
    }

    /// The `helm rollback` arguments.
    pub fn rollback_args(
        &self,
        release: &str,
        namespace: &str,
        revision: u64,
        force_conflicts: bool,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "rollback".into(),
            release.into(),
            revision.to_string().into(),
        ];
        a.extend(["--namespace".into(), namespace.into()]);
        if force_conflicts {
            a.push("--force-conflicts".into());
        }
        a.extend([
            "--timeout".into(),
            format!("{}s", self.opts.timeout.as_secs().max(1)).into(),
        ]);
        a.extend(self.connection_args());
        a
    }

    /// `helm upgrade`, first as a server-side dry run (nothing changes if it fails), then for
    /// real. Returns helm's output of the real run.
    pub async fn upgrade(&self, req: &UpgradeRequest) -> Result<String, KubeError> {
        self.opts
            .mode
            .check_write("helm upgrade", "release", Some(&req.release))?;
        let home = tempfile::Builder::new()
            .prefix("safe-updater-helm")
            .tempdir()
            .map_err(|e| helm_err("upgrade", e.to_string()))?;
        let values_file = home.path().join("values.json");
        write_private(
            &values_file,
            &serde_json::to_vec(&req.values).unwrap_or_else(|_| b"{}".to_vec()),
        )
        .await?;
        let chart_ref = match &req.source {
            ChartSource::Repository {
                url,
                username,
                password,
            } => {
                let mut args: Vec<OsString> = vec![
                    "repo".into(),
                    "add".into(),
                    "su-source".into(),
                    url.into(),
                    "--force-update".into(),
                ];
                if let Some(u) = username {
                    args.extend(["--username".into(), u.into(), "--password-stdin".into()]);
                }
                let stdin = password.as_ref().map(|p| p.expose().as_bytes().to_vec());
                self.run("repo add", args, Some(home.path()), stdin).await?;
                format!("su-source/{}", req.chart)
            }
            ChartSource::Oci {
                url,
                plain_http,
                username: Some(user),
                password,
            } => {
                let host = url
                    .trim_start_matches("oci://")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let mut args: Vec<OsString> = vec![
                    "registry".into(),
                    "login".into(),
                    host.into(),
                    "--username".into(),
                    user.into(),
                    "--password-stdin".into(),
                ];
                if *plain_http {
                    args.push("--plain-http".into());
                }
                let stdin = password.as_ref().map(|p| p.expose().as_bytes().to_vec());
                self.run("registry login", args, Some(home.path()), stdin)
                    .await?;
                format!("{}/{}", url.trim_end_matches('/'), req.chart)
            }
            ChartSource::Oci { url, .. } => format!("{}/{}", url.trim_end_matches('/'), req.chart),
            ChartSource::Local(p) => p.display().to_string(),
        };
        self.run(
            "upgrade --dry-run=server",
            self.upgrade_args(req, &chart_ref, &values_file, true),
            Some(home.path()),
            None,
        )
        .await?;
        self.run(
            UPGRADE_STEP,
            self.upgrade_args(req, &chart_ref, &values_file, false),
            Some(home.path()),
            None,
        )
        .await
    }

    /// `helm rollback` to `revision`. A field-ownership conflict (Helm 4 server-side apply,
    /// after someone else changed the release's objects) is retried once with conflicts forced:
    /// restoring the known-good revision is the point of a rollback, and the retry is reported.
    pub async fn rollback(
        &self,
        release: &str,
        namespace: &str,
        revision: u64,
    ) -> Result<RollbackResult, KubeError> {
        self.opts
            .mode
            .check_write("helm rollback", "release", Some(release))?;
        match self
            .run(
                "rollback",
                self.rollback_args(release, namespace, revision, false),
                None,
                None,
            )
            .await
        {
            Ok(_) => Ok(RollbackResult {
                to_revision: revision,
                forced_conflicts: false,
            }),
            Err(KubeError::Helm { detail, .. }) if is_conflict(&detail) && self.major >= 4 => {
                tracing::warn!(
                    release,
                    namespace,
                    revision,
                    "rollback hit a field-ownership conflict; retrying with --force-conflicts"
                );
                self.run(
                    "rollback --force-conflicts",
                    self.rollback_args(release, namespace, revision, true),
                    None,
                    None,
                )
                .await?;
                Ok(RollbackResult {
                    to_revision: revision,
                    forced_conflicts: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `helm history -o json`.
    pub async fn history(
        &self,
        release: &str,
        namespace: &str,
    ) -> Result<Vec<HistoryEntry>, KubeError> {
        let mut args: Vec<OsString> = vec![
            "history".into(),
            release.into(),
            "--namespace".into(),
            namespace.into(),
            "-o".into(),
            "json".into(),
        ];
        args.extend(self.connection_args());
        let out = self.run("history", args, None, None).await?;
        serde_json::from_str(&out)
            .map_err(|e| helm_err("history", format!("unexpected output: {e}")))
    }

    /// Runs helm with a private home (config, cache, data) when given, so that nothing of the
    /// user's `~/.config/helm` is read or written.
    async fn run(
        &self,
        step: &str,
        args: Vec<OsString>,
        home: Option<&Path>,
        stdin: Option<Vec<u8>>,
    ) -> Result<String, KubeError> {
        let mut cmd = tokio::process::Command::new(&self.opts.binary);
        cmd.args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(h) = home {
            cmd.env("HELM_CONFIG_HOME", h.join("config"))
                .env("HELM_CACHE_HOME", h.join("cache"))
                .env("HELM_DATA_HOME", h.join("data"));
        }
        tracing::debug!(step, "running helm");
        let mut child = cmd.spawn().map_err(|e| {
            helm_err(
                step,
                format!("cannot run {}: {e}", self.opts.binary.display()),
            )
        })?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(&bytes)
                .await
                .map_err(|e| helm_err(step, e.to_string()))?;
            drop(pipe);
        }
        // helm has its own --timeout; this bounds a helm that hangs before it applies it.
        let limit = self.opts.timeout + Duration::from_secs(60);
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| helm_err(step, format!("no answer within {limit:?}")))?
            .map_err(|e| helm_err(step, e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail: String = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
                .chars()
                .take(2000)
                .collect();
            return Err(helm_err(step, format!("exit {}: {detail}", out.status)));
        }
        Ok(stdout)
    }
}

/// What a Helm upgrade did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelmOutcome {
    pub release: String,
    pub namespace: String,
    /// The revision before the upgrade: what a rollback returns to.
    pub from_revision: u64,
    pub to_version: Option<String>,
    /// `helm upgrade` ran (the dry run passed).
    pub applied: bool,
    pub healthy: bool,
    pub failure: Option<String>,
    pub rolled_back: Option<RollbackResult>,
    pub restored_healthy: Option<bool>,
    pub observations: Vec<String>,
}

impl KubeTarget {
    /// Upgrades a release with the real `helm` (dry run first), verifies the rollout of every
    /// workload of the release, and on failure runs `helm rollback` to `from_revision` (the
    /// revision the release was at, from discovery) and verifies again.
    pub async fn helm_upgrade(
        &self,
        helm: &Helm,
        req: &UpgradeRequest,
        from_revision: u64,
        opts: &ApplyOptions,
    ) -> Result<HelmOutcome, KubeError> {
        self.mode()
            .check_write("helm upgrade", "release", Some(&req.release))?;
        let mut outcome = HelmOutcome {
            release: req.release.clone(),
            namespace: req.namespace.clone(),
            from_revision,
            to_version: req.version.clone(),
            applied: false,
            healthy: false,
            failure: None,
            rolled_back: None,
            restored_healthy: None,
            observations: Vec::new(),
        };
        let upgraded = helm.upgrade(req).await;
        let verdict = match upgraded {
            // Only the real `helm upgrade` step changes the release; a failure before it (the
            // repository, the dry run, the values file) changed nothing and is not rolled back.
            Err(KubeError::Helm { step, detail }) if step == UPGRADE_STEP => {
                outcome.applied = true;
                Err(format!("helm upgrade failed: {detail}"))
            }
            Err(e) => return Err(e),
            Ok(_) => {
                outcome.applied = true;
                self.verify_release(
                    &req.release,
                    &req.namespace,
                    opts,
                    &mut outcome.observations,
                )
                .await?
            }
        };
        match verdict {
            Ok(()) => outcome.healthy = true,
            Err(why) => {
                tracing::warn!(release = %req.release, namespace = %req.namespace, %why, "Helm upgrade failed verification");
                outcome.failure = Some(why);
                if opts.rollback_on_failure {
                    let rb = helm
                        .rollback(&req.release, &req.namespace, from_revision)
                        .await?;
                    outcome.rolled_back = Some(rb);
                    let again = self
                        .verify_release(
                            &req.release,
                            &req.namespace,
                            opts,
                            &mut outcome.observations,
                        )
                        .await?;
                    outcome.restored_healthy = Some(again.is_ok());
                }
            }
        }
        Ok(outcome)
    }

    /// Changes the image a Helm-managed workload runs through its release's values (the same
    /// chart version, the release's values kept, the image value found by
    /// [`crate::helm_release::find_image_value`] set with `--set-string`), then verifies and rolls
    /// back like [`Self::helm_upgrade`]. The override becomes part of the release's values.
    pub async fn helm_set_image(
        &self,
        helm: &Helm,
        release: &HelmRelease,
        source: ChartSource,
        current_image: &str,
        new_image: &str,
        opts: &ApplyOptions,
    ) -> Result<HelmOutcome, KubeError> {
        let value = crate::helm_release::find_image_value(release, current_image).ok_or_else(|| {
            KubeError::Invalid(format!(
                "no value of release {}/{} sets the image {current_image}: upgrade its chart instead",
                release.namespace, release.name
            ))
        })?;
        let pair = value.set_string(new_image).ok_or_else(|| {
            KubeError::Invalid(format!("{new_image} has no tag to set in {value:?}"))
        })?;
        let req = UpgradeRequest {
            release: release.name.clone(),
            namespace: release.namespace.clone(),
            chart: release.chart_name.clone(),
            source,
            version: Some(release.chart_version.clone()),
            values: release.config.clone(),
            set_string: vec![pair],
            force_conflicts: false,
            install: false,
        };
        self.helm_upgrade(helm, &req, release.revision, opts).await
    }

    /// Verifies every Deployment, StatefulSet and DaemonSet of a release (by Helm's
    /// `meta.helm.sh/release-name` annotation).
    pub async fn verify_release(
        &self,
        release: &str,
        namespace: &str,
        opts: &ApplyOptions,
        log: &mut Vec<String>,
    ) -> Result<Result<(), String>, KubeError> {
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
        use kube::api::{Api, ListParams};
        let ours = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            crate::discover::helm_owner(m)
                .1
                .is_some_and(|h| h.release == release && h.namespace == namespace)
        };
        let lp = ListParams::default();
        let c = self.client().clone();
        let mut workloads: Vec<(AssetKind, String)> = Vec::new();
        let step = |k: &str| format!("list {k} in {namespace}");
        for d in Api::<Deployment>::namespaced(c.clone(), namespace)
            .list(&lp)
            .await
            .map_err(|e| KubeError::api(step("deployments"), e))?
            .items
        {
            if ours(&d.metadata) {
                workloads.push((AssetKind::Deployment, d.metadata.name.unwrap_or_default()));
            }
        }
        for d in Api::<StatefulSet>::namespaced(c.clone(), namespace)
            .list(&lp)
            .await
            .map_err(|e| KubeError::api(step("statefulsets"), e))?
            .items
        {
            if ours(&d.metadata) {
                workloads.push((AssetKind::StatefulSet, d.metadata.name.unwrap_or_default()));
            }
        }
        for d in Api::<DaemonSet>::namespaced(c, namespace)
            .list(&lp)
            .await
            .map_err(|e| KubeError::api(step("daemonsets"), e))?
            .items
        {
            if ours(&d.metadata) {
                workloads.push((AssetKind::DaemonSet, d.metadata.name.unwrap_or_default()));
            }
        }
        for (kind, name) in workloads {
            log.push(format!("{kind} {namespace}/{name}"));
            if let Err(why) = self.verify(kind, namespace, &name, None, opts, log).await? {
                return Ok(Err(format!("{kind} {namespace}/{name}: {why}")));
            }
        }
        Ok(Ok(()))
    }
}

fn helm_err(step: &str, detail: String) -> KubeError {
    KubeError::Helm {
        step: step.to_owned(),
        detail,
    }
}

async fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KubeError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .await
        .map_err(|e| helm_err("values", e.to_string()))?;
    f.write_all(bytes)
        .await
        .map_err(|e| helm_err("values", e.to_string()))?;
    f.flush()
        .await
        .map_err(|e| helm_err("values", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helm(major: u32) -> Helm {
        Helm {
            opts: HelmOptions {
                binary: "helm".into(),
                kubeconfig: Some("/k/config".into()),
                context: Some("ctx".into()),
                mode: Mode::Update,
                timeout: Duration::from_secs(90),
            },
            version: format!("v{major}.0.0"),
            major,
        }
    }

    fn strings(a: Vec<OsString>) -> Vec<String> {
        a.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn versions_and_flags_by_major() {
        assert_eq!(parse_major("v3.16.2"), Some(3));
        assert_eq!(parse_major("v4.1.4\n"), Some(4));
        assert_eq!(parse_major("garbage"), None);
        assert_eq!(helm(3).native_rollback_flag(), "--atomic");
        assert_eq!(helm(4).native_rollback_flag(), "--rollback-on-failure");
    }

    #[test]
    fn upgrade_arguments() {
        let req = UpgradeRequest {
            release: "web".into(),
            namespace: "apps".into(),
            chart: "demo-web".into(),
            source: ChartSource::Oci {
                url: "oci://127.0.0.1:5001/charts".into(),
                plain_http: true,
                username: None,
                password: None,
            },
            version: Some("0.1.1".into()),
            values: serde_json::json!({"replicaCount": 1}),
            set_string: vec![("image.tag".into(), "1.0.1".into())],
            force_conflicts: true,
            install: false,
        };
        let a = strings(helm(4).upgrade_args(
            &req,
            "oci://127.0.0.1:5001/charts/demo-web",
            Path::new("/t/values.json"),
            true,
        ));
        assert_eq!(
            a,
            [
                "upgrade",
                "web",
                "oci://127.0.0.1:5001/charts/demo-web",
                "--namespace",
                "apps",
                "--version",
                "0.1.1",
                "--reset-values",
                "-f",
                "/t/values.json",
                "--set-string",
                "image.tag=1.0.1",
                "--plain-http",
                "--force-conflicts",
                "--dry-run=server",
                "--timeout",
                "90s",
                "--kubeconfig",
                "/k/config",
                "--kube-context",
                "ctx"
            ]
        );
        // Helm 3 has no --force-conflicts.
        let a = strings(helm(3).upgrade_args(&req, "x", Path::new("/v"), false));
        assert!(
            !a.iter()
                .any(|s| s == "--force-conflicts" || s == "--dry-run=server"),
            "{a:?}"
        );
        let r = strings(helm(4).rollback_args("web", "apps", 3, true));
        assert_eq!(
            &r[..6],
            [
                "rollback",
                "web",
                "3",
                "--namespace",
                "apps",
                "--force-conflicts"
            ]
        );
    }

    #[test]
    fn conflicts_are_recognised() {
        assert!(is_conflict(
            "Error: UPGRADE FAILED: conflict occurred while applying object apps/web apps/v1, Kind=Deployment: Apply failed with 1 conflict: conflict with \"kubectl-set\" using apps/v1: .spec.template.spec.containers[name=\"web\"].image"
        ));
        assert!(!is_conflict("Error: release: not found"));
    }

    #[test]
    fn debug_of_a_source_hides_the_password() {
        let oci = ChartSource::Oci {
            url: "oci://r/c".into(),
            plain_http: false,
            username: Some("u".into()),
            password: Some(Secret::new("oci-pw-9")),
        };
        assert!(!format!("{oci:?}").contains("oci-pw-9"));
        let s = ChartSource::Repository {
            url: "http://r".into(),
            username: Some("u".into()),
            password: Some(Secret::new("pw-123")),
        };
        assert!(!format!("{s:?}").contains("pw-123"));
    }

    #[tokio::test]
    async fn read_only_never_runs_helm_writes() {
        let mut h = helm(4);
        h.opts.mode = Mode::ReadOnly;
        // The binary does not exist: reaching it would be a different error.
        h.opts.binary = "/nonexistent/helm".into();
        let e = h.rollback("web", "apps", 1).await.expect_err("refused");
        assert!(matches!(e, KubeError::ReadOnly { .. }), "{e}");
    }
}
