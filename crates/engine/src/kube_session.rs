//! What one command (or one cycle) needs to work on Kubernetes: the connected contexts, the
//! discovery filter, the chart repositories with their secrets read, the base registry
//! configuration, and how to run `helm` — from the `kubernetes:` section of the configuration,
//! with the command line's `--context`/`--namespace`/`--kind` taking precedence.
//!
//! Only settings live here. It must not discover, check or change anything, and it must keep
//! chart repository passwords in the registry crate's masked [`Secret`] (never in `Debug`,
//! errors or logs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use safe_updater_core::asset::AssetKind;
use safe_updater_core::config::{ChartRepoConfig, Config, HelmConfig};
use safe_updater_kube::helm::{ChartSource, Helm, HelmOptions};
use safe_updater_kube::{ConnectOptions, DiscoveryFilter, KubeError, KubeTarget, Mode};
use safe_updater_registry::{ClientConfig, Credential, Secret};

use crate::EngineError;
use crate::kube::KUBE_KINDS;

/// Command-line choices that override the configuration for one run; empty lists keep it.
#[derive(Debug, Clone, Default)]
pub struct KubeOverrides {
    pub contexts: Vec<String>,
    pub namespaces: Vec<String>,
    /// Kinds asked for; `container` is ignored here (it is Docker's).
    pub kinds: Vec<AssetKind>,
}

impl KubeOverrides {
    /// Whether the command line asks for Kubernetes even when the configuration leaves it off.
    pub fn asks_for_kubernetes(&self) -> bool {
        !self.contexts.is_empty() || self.kinds.iter().any(|k| *k != AssetKind::Container)
    }
}

/// One `kubernetes.charts` entry with its password read.
#[derive(Clone)]
pub struct ChartRepo {
    pub entry: ChartRepoConfig,
    pub password: Option<Secret>,
}

impl std::fmt::Debug for ChartRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartRepo")
            .field("url", &safe_updater_core::redact::url(&self.entry.url))
            .field("username", &self.entry.username)
            .finish_non_exhaustive()
    }
}

/// The connected contexts and everything else Kubernetes work needs.
#[derive(Debug)]
pub struct KubeSession {
    pub targets: Vec<KubeTarget>,
    pub filter: DiscoveryFilter,
    pub charts: Vec<ChartRepo>,
    /// The configured registry settings (credentials, `config.json`); a workload's own pull
    /// secrets are laid over them when its images are checked.
    pub registry: ClientConfig,
    pub read_only: bool,
    pub rollout_timeout: Duration,
    kubeconfig: Option<PathBuf>,
    in_cluster: bool,
    helm: HelmConfig,
}

/// The kubeconfig files kubectl would read: the configured one, else every file of
/// `KUBECONFIG`, else `~/.kube/config`.
fn kubeconfig_files(configured: Option<&str>, env: &[(String, String)]) -> Vec<PathBuf> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(p) = configured {
        return vec![PathBuf::from(p)];
    }
    if let Some(list) = get("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list).collect();
    }
    get("HOME")
        .map(|h| vec![Path::new(&h).join(".kube").join("config")])
        .unwrap_or_default()
}

fn read_chart_secret(
    entry: &ChartRepoConfig,
    env: &[(String, String)],
) -> Result<Option<Secret>, EngineError> {
    let Some(secret) = &entry.password else {
        return Ok(None);
    };
    let value = crate::settings::resolve_secret(secret, &crate::settings::env_lookup(env))
        .map_err(|e| {
            EngineError::Kube(safe_updater_core::redact::urls_in(&format!(
                "chart repository {}: {e}",
                entry.url
            )))
        })?;
    Ok(Some(Secret::new(value)))
}

impl KubeSession {
    /// Whether this run works on Kubernetes at all.
    pub fn wanted(config: &Config, overrides: &KubeOverrides) -> bool {
        config.kubernetes.enabled || overrides.asks_for_kubernetes()
    }

    /// Reads the settings and connects to every context (nothing is sent to a cluster yet). A
    /// context the kubeconfig does not have is an error that lists the ones it has.
    pub async fn connect(
        config: &Config,
        overrides: &KubeOverrides,
        registry: ClientConfig,
        env: &[(String, String)],
    ) -> Result<KubeSession, EngineError> {
        let k = &config.kubernetes;
        let contexts: Vec<String> = if overrides.contexts.is_empty() {
            k.contexts.clone()
        } else {
            overrides.contexts.clone()
        };
        let files = kubeconfig_files(k.kubeconfig.as_deref(), env);
        if !k.in_cluster && !contexts.is_empty() {
            let mut known = Vec::new();
            let mut unreadable = Vec::new();
            for f in &files {
                match KubeTarget::contexts(f) {
                    Ok(list) => known.extend(list),
                    Err(e) => unreadable.push(format!("{}: {e}", f.display())),
                }
            }
            let where_ = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if known.is_empty() {
                return Err(EngineError::Kube(format!(
                    "no kubeconfig could be read ({}); set kubernetes.kubeconfig or KUBECONFIG, or kubernetes.in_cluster inside a cluster",
                    if unreadable.is_empty() {
                        "none found".to_owned()
                    } else {
                        unreadable.join("; ")
                    }
                )));
            }
            if let Some(missing) = contexts.iter().find(|c| !known.contains(c)) {
                return Err(EngineError::Kube(format!(
                    "context '{missing}' is not in the kubeconfig ({where_}); its contexts are: {}. Use --context with one of them or fix kubernetes.contexts",
                    known.join(", ")
                )));
            }
        }
        let mode = if k.read_only {
            Mode::ReadOnly
        } else {
            Mode::Update
        };
        let kubeconfig = k.kubeconfig.as_ref().map(PathBuf::from);
        let one = |context: Option<String>| ConnectOptions {
            kubeconfig: kubeconfig.clone(),
            context,
            in_cluster: k.in_cluster,
            mode,
        };
        let options: Vec<ConnectOptions> = if contexts.is_empty() {
            vec![one(None)]
        } else {
            contexts.into_iter().map(|c| one(Some(c))).collect()
        };
        let mut targets = Vec::new();
        for o in options {
            let target = KubeTarget::connect(o).await.map_err(|e| {
                EngineError::Kube(format!(
                    "{e}; check kubernetes.kubeconfig / KUBECONFIG (kubectl config get-contexts lists the contexts)"
                ))
            })?;
            targets.push(target);
        }
        let kinds: Vec<AssetKind> = {
            let asked: Vec<AssetKind> = overrides
                .kinds
                .iter()
                .copied()
                .filter(|k| KUBE_KINDS.contains(k))
                .collect();
            if asked.is_empty() {
                k.kinds.clone()
            } else {
                asked
            }
        };
        let filter = DiscoveryFilter {
            include_namespaces: if overrides.namespaces.is_empty() {
                k.include_namespaces.clone()
            } else {
                overrides.namespaces.clone()
            },
            exclude_namespaces: k.exclude_namespaces.clone(),
            kinds,
            crds: k.crds,
            ..Default::default()
        };
        let mut charts = Vec::new();
        for entry in &k.charts {
            charts.push(ChartRepo {
                password: read_chart_secret(entry, env)?,
                entry: entry.clone(),
            });
        }
        Ok(KubeSession {
            targets,
            filter,
            charts,
            registry,
            read_only: k.read_only,
            rollout_timeout: k.rollout_timeout,
            kubeconfig,
            in_cluster: k.in_cluster,
            helm: k.helm.clone(),
        })
    }

    pub fn target(&self, context: &str) -> Option<&KubeTarget> {
        self.targets.iter().find(|t| t.context() == context)
    }

    pub fn contexts(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| t.context().to_owned())
            .collect()
    }

    /// The chart repository of `chart` as release `namespace/release` uses it.
    pub fn chart_for(&self, chart: &str, namespace: &str, release: &str) -> Option<&ChartRepo> {
        self.charts
            .iter()
            .find(|c| c.entry.matches(chart, namespace, release))
    }

    /// The credential for an OCI chart registry: the entry's own, else the configured one for
    /// that registry host.
    pub fn oci_credential(&self, repo: &ChartRepo) -> Option<(String, Secret)> {
        if let (Some(user), Some(pw)) = (&repo.entry.username, &repo.password) {
            return Some((user.clone(), pw.clone()));
        }
        let host = oci_host(&repo.entry.url)?;
        match self.registry.credentials.get(host) {
            Some(Credential::Basic { username, password }) => {
                Some((username.clone(), password.clone()))
            }
            _ => None,
        }
    }

    /// How `helm` fetches the chart from `repo`.
    pub fn chart_source(&self, repo: &ChartRepo) -> ChartSource {
        let url = repo.entry.url.clone();
        if url.starts_with("oci://") {
            let host = oci_host(&url).unwrap_or_default().to_owned();
            let plain_http = safe_updater_registry::address::is_loopback(&host)
                || self
                    .registry
                    .insecure_registries
                    .iter()
                    .any(|p| safe_updater_registry::address::glob_match(p, &host));
            let (username, password) = self.oci_credential(repo).unzip();
            ChartSource::Oci {
                url,
                plain_http,
                username,
                password,
            }
        } else {
            ChartSource::Repository {
                url,
                username: repo.entry.username.clone(),
                password: repo.password.clone(),
            }
        }
    }

    /// The `helm` CLI for one context (its version is detected: Helm 3 or 4).
    pub async fn helm(&self, context: &str) -> Result<Helm, KubeError> {
        let mode = if self.read_only {
            Mode::ReadOnly
        } else {
            Mode::Update
        };
        Helm::detect(HelmOptions {
            binary: PathBuf::from(&self.helm.binary),
            kubeconfig: self.kubeconfig.clone(),
            context: (!self.in_cluster).then(|| context.to_owned()),
            mode,
            timeout: self.helm.timeout,
        })
        .await
    }
}

/// `oci://host:port/path` → `host:port`.
pub fn oci_host(url: &str) -> Option<&str> {
    url.strip_prefix("oci://")?.split('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        safe_updater_core::config::load("t.yaml", text, &[]).expect("config")
    }

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: not-a-real-token}\ncontexts:\n- name: first\n  context: {cluster: c, user: u}\n- name: second\n  context: {cluster: c, user: u}\ncurrent-context: first\n";

    #[tokio::test]
    async fn flags_override_the_configuration_and_unknown_contexts_list_the_known_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).expect("write");
        let cfg = config(&format!(
            "kubernetes:\n  enabled: true\n  kubeconfig: {}\n  contexts: [first]\n  namespaces: {{include: [apps], exclude: [kube-*]}}\n  kinds: [Deployment]\n  read_only: true\n  charts:\n    - chart: demo-*\n      url: oci://127.0.0.1:5001/charts\n    - url: https://charts.example.com\n      username: bot\n      password_env: CHARTS\n",
            path.display()
        ));
        let env = vec![("CHARTS".to_owned(), "s3cret".to_owned())];
        let s = KubeSession::connect(
            &cfg,
            &KubeOverrides::default(),
            ClientConfig::default(),
            &env,
        )
        .await
        .expect("connects");
        assert_eq!(s.contexts(), ["first"]);
        assert_eq!(s.filter.include_namespaces, ["apps"]);
        assert_eq!(s.filter.kinds, [AssetKind::Deployment]);
        assert!(s.read_only);
        assert_eq!(s.targets[0].mode(), Mode::ReadOnly);
        assert!(matches!(
            s.chart_source(s.chart_for("demo-web", "apps", "web").expect("match")),
            ChartSource::Oci {
                plain_http: true,
                ..
            }
        ));
        let other = s.chart_for("other", "apps", "x").expect("catch-all");
        assert_eq!(other.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");

        let flags = KubeOverrides {
            contexts: vec!["second".into(), "first".into()],
            namespaces: vec!["team-*".into()],
            kinds: vec![AssetKind::Container, AssetKind::HelmRelease],
        };
        let s = KubeSession::connect(&cfg, &flags, ClientConfig::default(), &env)
            .await
            .expect("connects");
        assert_eq!(s.contexts(), ["second", "first"]);
        assert_eq!(s.filter.include_namespaces, ["team-*"]);
        assert_eq!(s.filter.exclude_namespaces, ["kube-*"]);
        assert_eq!(s.filter.kinds, [AssetKind::HelmRelease]);

        let wrong = KubeOverrides {
            contexts: vec!["third".into()],
            ..Default::default()
        };
        let e = KubeSession::connect(&cfg, &wrong, ClientConfig::default(), &env)
            .await
            .expect_err("no such context")
            .to_string();
        assert!(e.contains("'third'") && e.contains("first, second"), "{e}");

        let e = KubeSession::connect(
            &cfg,
            &KubeOverrides::default(),
            ClientConfig::default(),
            &[],
        )
        .await
        .expect_err("the chart password variable is unset")
        .to_string();
        assert!(e.contains("CHARTS is not set"), "{e}");
    }

    #[test]
    fn kubernetes_is_wanted_when_enabled_or_asked_for() {
        let off = config("");
        assert!(!KubeSession::wanted(&off, &KubeOverrides::default()));
        let docker_only = KubeOverrides {
            kinds: vec![AssetKind::Container],
            namespaces: vec!["x".into()],
            ..Default::default()
        };
        assert!(!KubeSession::wanted(&off, &docker_only));
        assert!(KubeSession::wanted(
            &off,
            &KubeOverrides {
                contexts: vec!["c".into()],
                ..Default::default()
            }
        ));
        assert!(KubeSession::wanted(
            &config("kubernetes: {enabled: true}\n"),
            &KubeOverrides::default()
        ));
    }
}
