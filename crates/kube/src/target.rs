//! One cluster context: connecting (kubeconfig with a chosen context, or in-cluster), listing
//! what runs there into a [`DiscoveryReport`], and reading a workload's pull credentials.
//!
//! Every request goes through [`crate::guard`], so a target connected read-only cannot write.
//! Mapping objects to assets is [`crate::discover`]'s job; this module only fetches. It must not
//! log Secret contents (pull secrets and Helm release records are decoded, never printed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use safe_updater_core::asset::{Asset, AssetKind};
use serde::de::DeserializeOwned;

use crate::discover::{self, CrdFact, KubeExtra, NamespaceObjects, Workload};
use crate::error::KubeError;
use crate::guard::{GuardLayer, Mode};
use crate::helm_release::{self, HelmRelease, ReleaseSecretLabels};
use crate::pull_secrets::PullCredentials;

/// Where the cluster is and what we may do there.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file; `None` reads `KUBECONFIG` / `~/.kube/config` as kubectl does.
    pub kubeconfig: Option<PathBuf>,
    /// The context to use; `None` is the kubeconfig's current context.
    pub context: Option<String>,
    /// Use the pod's service account (in-cluster) instead of a kubeconfig.
    pub in_cluster: bool,
    pub mode: Mode,
}

/// What to look at.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryFilter {
    /// Namespace names or globs (`team-*`); empty means every namespace. With literal names only,
    /// listing is done per namespace, so a namespaced Role is enough.
    pub include_namespaces: Vec<String>,
    /// Namespace names or globs never looked at; wins over `include_namespaces`.
    pub exclude_namespaces: Vec<String>,
    /// Kinds to list; empty means all (Deployment, StatefulSet, DaemonSet, Job, CronJob,
    /// HelmRelease).
    pub kinds: Vec<AssetKind>,
    /// Where charts come from, by chart name (`demo-web` → `https://charts.example` or
    /// `oci://registry/charts`); Helm does not record it in the release.
    pub chart_repositories: BTreeMap<String, String>,
    /// Also report CRDs and their versions (needs cluster-wide `list` on CRDs).
    pub crds: bool,
}

impl DiscoveryFilter {
    pub fn namespace_allowed(&self, ns: &str) -> bool {
        use safe_updater_registry::address::glob_match;
        if self.exclude_namespaces.iter().any(|p| glob_match(p, ns)) {
            return false;
        }
        self.include_namespaces.is_empty()
            || self.include_namespaces.iter().any(|p| glob_match(p, ns))
    }

    fn wants(&self, kind: AssetKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// The namespaces to list one by one, when the include list names them literally.
    fn literal_namespaces(&self) -> Option<Vec<String>> {
        if self.include_namespaces.is_empty()
            || self
                .include_namespaces
                .iter()
                .any(|p| p.contains(['*', '?', '[']))
        {
            return None;
        }
        Some(
            self.include_namespaces
                .iter()
                .filter(|n| self.namespace_allowed(n))
                .cloned()
                .collect(),
        )
    }
}

/// What one discovery found.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryReport {
    pub context: String,
    pub assets: Vec<Asset>,
    /// The decoded newest revision of each Helm release (values included: treat as secret).
    pub releases: Vec<HelmRelease>,
    pub crds: Vec<CrdFact>,
    /// What could not be listed or decoded (forbidden kinds, unreadable release records).
    pub warnings: Vec<String>,
    /// Kinds that could not be listed (forbidden or not served) in some namespace listed: what
    /// the report holds of them is incomplete, so their absence proves nothing.
    pub unlisted_kinds: Vec<AssetKind>,
}

impl DiscoveryReport {
    /// The Helm release that manages a workload asset, if it was discovered too.
    pub fn release_of(&self, asset: &Asset) -> Option<&HelmRelease> {
        let owner = KubeExtra::from_asset(asset)?.helm?;
        self.releases
            .iter()
            .find(|r| r.name == owner.release && r.namespace == owner.namespace)
    }
}

/// One Kubernetes context.
#[derive(Clone)]
pub struct KubeTarget {
    client: Client,
    context: String,
    mode: Mode,
    options: ConnectOptions,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("context", &self.context)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl KubeTarget {
    /// Connects to one context (nothing is sent until the first request).
    pub async fn connect(options: ConnectOptions) -> Result<KubeTarget, KubeError> {
        let config_err = |detail: String| KubeError::Config {
            context: options.context.clone(),
            detail,
        };
        let (config, context) = if options.in_cluster {
            let config = Config::incluster().map_err(|e| config_err(e.to_string()))?;
            (
                config,
                options
                    .context
                    .clone()
                    .unwrap_or_else(|| "in-cluster".to_owned()),
            )
        } else {
            let kubeconfig = match &options.kubeconfig {
                Some(path) => Kubeconfig::read_from(path)
                    .map_err(|e| config_err(format!("{}: {e}", path.display())))?,
                None => Kubeconfig::from_env()
                    .map_err(|e| config_err(e.to_string()))?
                    .map(Ok)
                    .unwrap_or_else(|| {
                        let home = std::env::var_os("HOME")
                            .ok_or_else(|| config_err("no KUBECONFIG and no HOME".into()))?;
                        let path = PathBuf::from(home).join(".kube").join("config");
                        Kubeconfig::read_from(&path)
                            .map_err(|e| config_err(format!("{}: {e}", path.display())))
                    })?,
            };
            let context = options
                .context
                .clone()
                .or_else(|| kubeconfig.current_context.clone())
                .ok_or_else(|| {
                    config_err("no context given and the kubeconfig has no current-context".into())
                })?;
            if !kubeconfig.contexts.iter().any(|c| c.name == context) {
                return Err(config_err(format!(
                    "the kubeconfig has no context {context:?}"
                )));
            }
            let kopts = KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            let config = Config::from_custom_kubeconfig(kubeconfig, &kopts)
                .await
                .map_err(|e| config_err(e.to_string()))?;
            (config, context)
        };
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| config_err(e.to_string()))?
            .with_layer(&GuardLayer { mode: options.mode })
            .build();
        Ok(KubeTarget {
            client,
            context,
            mode: options.mode,
            options,
        })
    }

    /// Every context of a kubeconfig, for `--context` lists and "all contexts" scans.
    pub fn contexts(kubeconfig: &std::path::Path) -> Result<Vec<String>, KubeError> {
        let k = Kubeconfig::read_from(kubeconfig).map_err(|e| KubeError::Config {
            context: None,
            detail: e.to_string(),
        })?;
        Ok(k.contexts.into_iter().map(|c| c.name).collect())
    }

    /// A target over a client built elsewhere (tests: a scripted HTTP fake); the guard is added.
    pub fn from_service<S, B>(service: S, context: &str, mode: Mode) -> KubeTarget
    where
        S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let guarded = tower::Layer::layer(&GuardLayer { mode }, service);
        KubeTarget {
            client: Client::new(guarded, "default"),
            context: context.to_owned(),
            mode,
            options: ConnectOptions {
                context: Some(context.to_owned()),
                mode,
                ..Default::default()
            },
        }
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// Lists workloads (and Helm releases, CRDs) into assets.
    pub async fn discover(
        &self,
        filter: &DiscoveryFilter,
        now: Timestamp,
    ) -> Result<DiscoveryReport, KubeError> {
        let mut report = DiscoveryReport {
            context: self.context.clone(),
            ..Default::default()
        };
        let scopes: Vec<Option<String>> = match filter.literal_namespaces() {
            Some(list) => list.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut workloads: Vec<Workload> = Vec::new();
        let mut pods: Vec<Pod> = Vec::new();
        let mut rss: Vec<ReplicaSet> = Vec::new();
        let mut jobs: Vec<Job> = Vec::new();
        let need_jobs = filter.wants(AssetKind::Job) || filter.wants(AssetKind::CronJob);
        for scope in &scopes {
            let ns = scope.as_deref();
            if filter.wants(AssetKind::Deployment) {
                workloads.extend(
                    self.list_soft::<Deployment>(ns, &mut report)
                        .await?
                        .into_iter()
                        .map(Workload::Deployment),
                );
                rss.extend(self.list_soft::<ReplicaSet>(ns, &mut report).await?);
            }
            if filter.wants(AssetKind::StatefulSet) {
                workloads.extend(
                    self.list_soft::<StatefulSet>(ns, &mut report)
                        .await?
                        .into_iter()
                        .map(Workload::StatefulSet),
                );
            }
            if filter.wants(AssetKind::DaemonSet) {
                workloads.extend(
                    self.list_soft::<DaemonSet>(ns, &mut report)
                        .await?
                        .into_iter()
                        .map(Workload::DaemonSet),
                );
            }
            if need_jobs {
                jobs.extend(self.list_soft::<Job>(ns, &mut report).await?);
            }
            if filter.wants(AssetKind::CronJob) {
                workloads.extend(
                    self.list_soft::<CronJob>(ns, &mut report)
                        .await?
                        .into_iter()
                        .map(Workload::CronJob),
                );
            }
            if !workloads.is_empty() {
                pods.extend(self.list_soft::<Pod>(ns, &mut report).await?);
            }
            if filter.wants(AssetKind::HelmRelease) {
                self.discover_releases(ns, filter, now, &mut report).await?;
            }
        }
        if filter.wants(AssetKind::Job) {
            workloads.extend(
                jobs.iter()
                    .filter(|j| !discover::owned_by_cronjob(j))
                    .cloned()
                    .map(Workload::Job),
            );
        }
        let in_scope = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            filter.namespace_allowed(meta.namespace.as_deref().unwrap_or(""))
        };
        // Group the helpers by namespace once, so mapping stays linear in the objects listed.
        let mut by_ns: BTreeMap<String, NamespaceLists> = BTreeMap::new();
        for p in pods.into_iter().filter(|p| in_scope(&p.metadata)) {
            by_ns
                .entry(p.metadata.namespace.clone().unwrap_or_default())
                .or_default()
                .0
                .push(p);
        }
        for r in rss.into_iter().filter(|r| in_scope(&r.metadata)) {
            by_ns
                .entry(r.metadata.namespace.clone().unwrap_or_default())
                .or_default()
                .1
                .push(r);
        }
        for j in jobs.into_iter().filter(|j| in_scope(&j.metadata)) {
            by_ns
                .entry(j.metadata.namespace.clone().unwrap_or_default())
                .or_default()
                .2
                .push(j);
        }
        let empty = (Vec::new(), Vec::new(), Vec::new());
        for w in workloads.iter().filter(|w| in_scope(w.meta())) {
            let (p, r, j) = by_ns
                .get(w.meta().namespace.as_deref().unwrap_or(""))
                .unwrap_or(&empty);
            let objects = NamespaceObjects {
                pods: p,
                replica_sets: r,
                jobs: j,
            };
            report
                .assets
                .extend(discover::workload_assets(&self.context, w, objects, now));
        }
        if filter.crds {
            match Self::list_all::<CustomResourceDefinition>(Api::all(self.client.clone())).await {
                Ok(list) => report.crds = list.iter().map(discover::crd_fact).collect(),
                Err(e) => report.warnings.push(format!("CRDs not listed: {e}")),
            }
        }
        report.assets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(report)
    }

    /// Helm releases of one namespace (or all): release Secrets' metadata listed, then only the
    /// newest revision of each decoded.
    async fn discover_releases(
        &self,
        ns: Option<&str>,
        filter: &DiscoveryFilter,
        now: Timestamp,
        report: &mut DiscoveryReport,
    ) -> Result<(), KubeError> {
        let api: Api<Secret> = self.api(ns);
        let lp = ListParams::default()
            .labels(helm_release::OWNER_LABEL_SELECTOR)
            .fields(&format!("type={}", helm_release::RELEASE_SECRET_TYPE))
            .limit(500);
        let mut metas = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut page_lp = lp.clone();
            if let Some(t) = &token {
                page_lp = page_lp.continue_token(t);
            }
            let page = match api.list_metadata(&page_lp).await {
                Ok(page) => page,
                Err(e) => {
                    soft(KubeError::api("list Helm release Secrets", e), report)?;
                    report.unlisted_kinds.push(AssetKind::HelmRelease);
                    return Ok(());
                }
            };
            metas.extend(page.items);
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        let mut by_ns: BTreeMap<String, Vec<ReleaseSecretLabels>> = BTreeMap::new();
        for m in &metas {
            let Some(namespace) = m.metadata.namespace.clone() else {
                continue;
            };
            if !filter.namespace_allowed(&namespace) {
                continue;
            }
            if let Some(labels) = m
                .metadata
                .labels
                .as_ref()
                .and_then(ReleaseSecretLabels::from_labels)
            {
                by_ns.entry(namespace).or_default().push(labels);
            }
        }
        for (namespace, labels) in by_ns {
            for newest in helm_release::newest_revisions(labels) {
                let secret_name =
                    format!("sh.helm.release.v1.{}.v{}", newest.name, newest.revision);
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
                let secret = match secrets.get(&secret_name).await {
                    Ok(s) => s,
                    Err(e) => {
                        report.warnings.push(format!(
                            "{namespace}/{secret_name}: {}",
                            KubeError::api("get", e)
                        ));
                        continue;
                    }
                };
                let Some(data) = secret.data.as_ref().and_then(|d| d.get("release")) else {
                    report
                        .warnings
                        .push(format!("{namespace}/{secret_name}: no `release` data"));
                    continue;
                };
                match helm_release::decode_release(&data.0) {
                    Ok(mut release) => {
                        if release.namespace.is_empty() {
                            release.namespace = namespace.clone();
                        }
                        let repo = filter
                            .chart_repositories
                            .get(&release.chart_name)
                            .map(String::as_str);
                        report.assets.push(discover::release_asset(
                            &self.context,
                            &release,
                            repo,
                            now,
                        ));
                        report.releases.push(release);
                    }
                    Err(e) => report
                        .warnings
                        .push(format!("{namespace}/{secret_name}: {e}")),
                }
            }
        }
        Ok(())
    }

    /// The credentials a workload's pods pull with: its pod template's `imagePullSecrets`, then
    /// its service account's.
    pub async fn pull_credentials(&self, asset: &Asset) -> Result<PullCredentials, KubeError> {
        let extra = KubeExtra::from_asset(asset).ok_or_else(|| {
            KubeError::Invalid(format!("{} is not a Kubernetes workload asset", asset.id))
        })?;
        let namespace = asset.namespace.clone().unwrap_or_default();
        let mut names: Vec<String> = extra.image_pull_secrets.clone();
        let sa_name = extra
            .service_account
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let mut creds = PullCredentials::default();
        match sas.get_opt(&sa_name).await {
            Ok(Some(sa)) => {
                names.extend(sa.image_pull_secrets.into_iter().flatten().map(|r| r.name))
            }
            Ok(None) => creds
                .problems
                .push(format!("{namespace}/{sa_name}: service account not found")),
            Err(e) => creds.problems.push(format!(
                "service account {namespace}/{sa_name}: {}",
                KubeError::api("get", e)
            )),
        }
        let mut seen = BTreeSet::new();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        for name in names.into_iter().filter(|n| seen.insert(n.clone())) {
            match secrets.get_opt(&name).await {
                Ok(secret) => creds.add_secret(&namespace, &name, secret.as_ref()),
                Err(e) => creds
                    .problems
                    .push(format!("{namespace}/{name}: {}", KubeError::api("get", e))),
            }
        }
        Ok(creds)
    }

    pub(crate) fn api<K>(&self, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Lists every object of a kind, page by page.
    async fn list_all<K>(api: Api<K>) -> Result<Vec<K>, KubeError>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = api.list(&lp).await.map_err(|e| {
                KubeError::api(format!("list {}", K::plural(&Default::default())), e)
            })?;
            out.extend(page.items);
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Like [`Self::list_all`], but a kind we may not list (403) or the cluster does not serve
    /// (404) is a warning, not a failure of the whole discovery.
    async fn list_soft<K>(
        &self,
        ns: Option<&str>,
        report: &mut DiscoveryReport,
    ) -> Result<Vec<K>, KubeError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        match Self::list_all::<K>(self.api(ns)).await {
            Ok(v) => Ok(v),
            Err(e) => {
                soft(e, report)?;
                if let Some(kind) = AssetKind::parse(&K::kind(&Default::default())) {
                    report.unlisted_kinds.push(kind);
                }
                Ok(Vec::new())
            }
        }
    }
}

/// Pods, ReplicaSets and Jobs of one namespace.
type NamespaceLists = (Vec<Pod>, Vec<ReplicaSet>, Vec<Job>);

fn soft(e: KubeError, report: &mut DiscoveryReport) -> Result<(), KubeError> {
    let forbidden_or_missing = matches!(&e, KubeError::Api { source: kube::Error::Api(s), .. } if s.code == 403 || s.code == 404);
    if forbidden_or_missing {
        report.warnings.push(e.to_string());
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_filters() {
        let f = DiscoveryFilter {
            include_namespaces: vec!["team-*".into(), "apps".into()],
            exclude_namespaces: vec!["team-secret".into()],
            ..Default::default()
        };
        assert!(f.namespace_allowed("team-a"));
        assert!(f.namespace_allowed("apps"));
        assert!(!f.namespace_allowed("team-secret"), "exclude wins");
        assert!(!f.namespace_allowed("kube-system"));
        // A glob means listing cluster-wide and filtering.
        assert_eq!(f.literal_namespaces(), None);
        let literal = DiscoveryFilter {
            include_namespaces: vec!["a".into(), "b".into()],
            exclude_namespaces: vec!["b".into()],
            ..Default::default()
        };
        assert_eq!(literal.literal_namespaces(), Some(vec!["a".to_owned()]));
        let all = DiscoveryFilter {
            exclude_namespaces: vec!["kube-*".into()],
            ..Default::default()
        };
        assert!(all.namespace_allowed("default") && !all.namespace_allowed("kube-system"));
        assert_eq!(all.literal_namespaces(), None);
    }

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: 'https://127.0.0.1:1'}
- name: two
  cluster: {server: 'https://127.0.0.2:1'}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: first
  context: {cluster: one, user: u}
- name: second
  context: {cluster: two, user: u, namespace: apps}
current-context: first
";

    #[tokio::test]
    async fn several_contexts_of_one_kubeconfig() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).expect("write");
        assert_eq!(
            KubeTarget::contexts(&path).expect("reads"),
            ["first", "second"]
        );
        let connect = |context: Option<&str>| {
            KubeTarget::connect(ConnectOptions {
                kubeconfig: Some(path.clone()),
                context: context.map(str::to_owned),
                ..Default::default()
            })
        };
        // Nothing is sent while connecting: these servers do not exist.
        assert_eq!(connect(None).await.expect("current").context(), "first");
        let second = connect(Some("second")).await.expect("second");
        assert_eq!(second.context(), "second");
        assert_eq!(second.mode(), Mode::ReadOnly, "read-only unless asked");
        let e = connect(Some("third")).await.expect_err("no such context");
        assert!(e.to_string().contains("third"), "{e}");
    }
}
