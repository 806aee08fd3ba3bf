//! The configuration file: YAML in, a validated [`Config`] out, or every problem at once, each
//! naming the file, line and field (or the environment variable that set it).
//!
//! Loading is two-phase. Phase one reads the YAML into typed, still raw structures (unknown
//! keys and wrong types stop here, with their position). Phase two compiles every value —
//! durations, regular expressions, constraints, windows, time zones — and collects all problems
//! instead of stopping at the first. Environment variables are applied between the two.
//!
//! Pure: the caller reads the file and the environment and passes both in.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};
use regex::Regex;
use serde::Deserialize;

use crate::asset::AssetKind;
use crate::constraint::Constraint;
use crate::health::{
    CheckRule, CheckSpec, ExecSpec, HttpSpec, SecretRef, TcpSpec, parse_status_range,
};
use crate::policy::{
    CronWindow, Gate, GateClass, Layer, Matcher, OnFailure, Policy, Setting, VariantMatch, Window,
    glob_regex, parse_duration, parse_versioning,
};
use crate::scope::Scope;

/// The commented default configuration printed by `generate-config`.
pub const TEMPLATE: &str = include_str!("default-config.yaml");

/// Environment variables that start with this and contain `__` override file values.
pub const ENV_PREFIX: &str = "SAFE_UPDATER_";

/// A loaded, validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where the configuration came from (a path, or `built-in defaults`).
    pub source: String,
    pub policy: Policy,
    pub state_path: Option<String>,
    pub docker: DockerConfig,
    pub kubernetes: KubernetesConfig,
    pub registries: RegistriesConfig,
    pub health: HealthConfig,
    /// Configured health checks (`health.checks`), each for the resources it matches.
    pub health_checks: Vec<CheckRule>,
    pub daemon: DaemonConfig,
    pub server: ServerSettings,
    pub notifications: NotificationsConfig,
    pub audit: AuditConfig,
    /// What this instance manages (`scope`): see [`crate::scope`].
    pub scope: Scope,
}

/// How `safe-updater watch` runs cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Between the starts of two cycles (assets may ask for a longer one with the label
    /// `safe-updater.io/check-interval`).
    pub interval: std::time::Duration,
    /// Updates in flight at once (1–100).
    pub concurrency: usize,
    /// How often the config file is looked at for changes (SIGHUP reloads at once).
    pub reload_poll: std::time::Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            interval: std::time::Duration::from_secs(30 * 60),
            concurrency: 3,
            reload_poll: std::time::Duration::from_secs(5),
        }
    }
}

/// The daemon's HTTP server: health, metrics, approvals API, registry webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `host:port`; empty turns the server off.
    pub listen: String,
    /// API tokens, each naming the operator it authenticates.
    pub tokens: Vec<(String, SecretRef)>,
    /// Webhook secrets by source (`dockerhub`, `github`, `harbor`, `quay`, `distribution`).
    pub webhooks: BTreeMap<String, SecretRef>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            tokens: Vec::new(),
            webhooks: BTreeMap::new(),
        }
    }
}

/// Where notifications go. URLs carry tokens: `Debug` shows only how many there are.
#[derive(Clone, PartialEq, Eq)]
pub struct NotificationsConfig {
    /// Watchtower/shoutrrr-style channel URLs (`slack://`, `discord://`, `teams://`,
    /// `generic://`, `https://`).
    pub urls: Vec<String>,
    /// Base of the approve link in "approval needed" messages.
    pub approve_base_url: Option<String>,
    pub timeout: std::time::Duration,
    pub attempts: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            urls: Vec::new(),
            approve_base_url: None,
            timeout: std::time::Duration::from_secs(10),
            attempts: 4,
        }
    }
}

impl fmt::Debug for NotificationsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationsConfig")
            .field("urls", &format_args!("<{} redacted>", self.urls.len()))
            .field("approve_base_url", &self.approve_base_url)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// Audit trail upkeep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// Records older than this are pruned (behind a checkpoint, so verification still
    /// passes); `None` keeps everything.
    pub retention: Option<std::time::Duration>,
}

/// How an update is verified after it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How long the new version is watched before the update counts as a success.
    pub window: std::time::Duration,
    /// Time between two rounds of checks.
    pub interval: std::time::Duration,
    /// Consecutive failed rounds that fail the update.
    pub failure_threshold: u32,
    /// Remove the previous image once the update has succeeded.
    pub remove_old_image: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: std::time::Duration::from_secs(300),
            interval: std::time::Duration::from_secs(5),
            failure_threshold: 3,
            remove_old_image: false,
        }
    }
}

/// Which Docker engines to scan. No engine listed means one engine from the environment
/// (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`, else the local socket).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    pub engines: Vec<EngineConfig>,
    /// Also track stopped containers.
    pub include_stopped: bool,
}

/// One Docker engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Names the engine in asset ids (`docker/<name>/<container>`) and messages.
    pub name: String,
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`.
    pub host: String,
    /// Client TLS (paths to PEM files), for `tcp://` engines that require it.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Kubernetes clusters and Helm releases. Off by default, so a Docker-only configuration sees
/// no change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub enabled: bool,
    /// A kubeconfig file; unset: `KUBECONFIG`, else `~/.kube/config`, as kubectl reads them.
    pub kubeconfig: Option<String>,
    /// Contexts of the kubeconfig to work on; empty: its current context.
    pub contexts: Vec<String>,
    /// Use the pod's own service account (when safe-updater runs inside the cluster).
    pub in_cluster: bool,
    /// Namespace names or globs looked at; empty: every namespace.
    pub include_namespaces: Vec<String>,
    /// Namespace names or globs never looked at (wins over the include list).
    pub exclude_namespaces: Vec<String>,
    /// Never write to the cluster: discover and check only.
    pub read_only: bool,
    /// Kinds discovered; empty: all of them.
    pub kinds: Vec<AssetKind>,
    /// Also report CRDs and their versions (needs cluster-wide `list` on CRDs).
    pub crds: bool,
    /// How long a rollout may take before the update counts as failed.
    pub rollout_timeout: std::time::Duration,
    pub helm: HelmConfig,
    /// Where the charts of releases come from (Helm does not record it in the release).
    pub charts: Vec<ChartRepoConfig>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            kubeconfig: None,
            contexts: Vec::new(),
            in_cluster: false,
            include_namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            read_only: false,
            kinds: Vec::new(),
            crds: false,
            rollout_timeout: std::time::Duration::from_secs(300),
            helm: HelmConfig::default(),
            charts: Vec::new(),
        }
    }
}

/// The `helm` CLI safe-updater runs for Helm-managed workloads and releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmConfig {
    /// A path, or a name looked up on `PATH`.
    pub binary: String,
    /// `--timeout` of each helm operation.
    pub timeout: std::time::Duration,
}

impl Default for HelmConfig {
    fn default() -> Self {
        HelmConfig {
            binary: "helm".into(),
            timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// One chart repository, for the releases it matches (the first entry that matches wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartRepoConfig {
    /// Glob on the chart name; unset: any chart.
    pub chart: Option<String>,
    /// Glob on the release, `name` or `namespace/name`; unset: any release.
    pub release: Option<String>,
    /// `https://…` (a classic repository with `index.yaml`) or `oci://host/path`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
}

impl ChartRepoConfig {
    /// Whether this entry is the source of `chart` as used by release `namespace/release`.
    pub fn matches(&self, chart: &str, namespace: &str, release: &str) -> bool {
        let glob = |g: &str, v: &str| glob_regex(g).is_ok_and(|r| r.is_match(v));
        self.chart.as_deref().is_none_or(|g| glob(g, chart))
            && self
                .release
                .as_deref()
                .is_none_or(|g| glob(g, release) || glob(g, &format!("{namespace}/{release}")))
    }
}

/// How registries are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistriesConfig {
    /// Registry host globs that may be contacted; empty means all.
    pub allow: Vec<String>,
    /// Registry host globs that must never be contacted (wins over `allow`).
    pub deny: Vec<String>,
    /// Hosts spoken to over plain HTTP (loopback always is).
    pub insecure: Vec<String>,
    /// Docker's `config.json` for credentials; unset means `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub docker_config: Option<String>,
    pub credentials: Vec<CredentialConfig>,
    /// Requests in flight per registry.
    pub max_concurrency: usize,
    /// Per-request timeout.
    pub timeout: std::time::Duration,
    /// Attempts for a request that fails with 5xx, 429 or a timeout.
    pub attempts: u32,
    /// The longest `Retry-After` (HTTP 429) waited for; a registry asking more fails the
    /// request at once.
    pub max_retry_after: std::time::Duration,
    /// The longest one repository's tag listing may take, all pages together.
    pub listing_timeout: std::time::Duration,
    /// The longest a cycle's registry requests may take together.
    pub cycle_timeout: std::time::Duration,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            insecure: Vec::new(),
            docker_config: None,
            credentials: Vec::new(),
            max_concurrency: 4,
            timeout: std::time::Duration::from_secs(30),
            attempts: 4,
            max_retry_after: std::time::Duration::from_secs(30),
            listing_timeout: std::time::Duration::from_secs(120),
            cycle_timeout: std::time::Duration::from_secs(900),
        }
    }
}

/// Credentials for one registry. The secret is never kept in the config text if it can be
/// avoided: `password_env` names an environment variable and `password_file` a file, read when
/// the registry is first contacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialConfig {
    pub registry: String,
    pub username: String,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

impl CredentialConfig {
    /// Where the password is, as the one kind of secret reference every section uses; `None`
    /// when none is given (validation reports that).
    pub fn secret(&self) -> Option<SecretRef> {
        match (&self.password, &self.password_env, &self.password_file) {
            (Some(p), _, _) => Some(SecretRef::Literal(p.clone())),
            (None, Some(v), _) => Some(SecretRef::Env(v.clone())),
            (None, None, Some(f)) => Some(SecretRef::File(f.clone())),
            (None, None, None) => None,
        }
    }
}

impl fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl Config {
    /// The configuration used when no file is given: the built-in defaults.
    pub fn builtin() -> Config {
        Config {
            source: "built-in defaults".into(),
            ..Config::default()
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name, or `environment variable NAME`.
    pub source: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the field, e.g. `policy.gates.minor` or `resources[1].match.kind`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<u32>,
    scope: Option<String>,
    state: Option<RawState>,
    policy: Option<RawPolicy>,
    #[serde(default)]
    namespaces: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    resources: Vec<RawResource>,
    docker: Option<RawDocker>,
    kubernetes: Option<RawKubernetes>,
    registries: Option<RawRegistries>,
    health: Option<RawHealth>,
    daemon: Option<RawDaemon>,
    server: Option<RawServer>,
    notifications: Option<RawNotifications>,
    audit: Option<RawAudit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interval: Option<String>,
    concurrency: Option<usize>,
    reload_poll: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    webhooks: BTreeMap<String, RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
}

impl fmt::Debug for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<String>,
}

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSecret").finish_non_exhaustive()
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    #[serde(default)]
    urls: Vec<String>,
    approve_base_url: Option<String>,
    timeout: Option<String>,
    attempts: Option<u32>,
}

impl fmt::Debug for RawNotifications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawNotifications").finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    window: Option<String>,
    interval: Option<String>,
    failure_threshold: Option<u32>,
    remove_old_image: Option<bool>,
    /// Removed: refused with a message that says why (see `compile_health`).
    max_attempts: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    /// Removed: refused with a message that says why (see `compile_checks`).
    name: Option<serde::de::IgnoredAny>,
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    http: Option<RawHttp>,
    tcp: Option<RawTcp>,
    exec: Option<RawExec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect_status: Option<String>,
    body_contains: Option<String>,
    timeout: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<String>,
    follow_redirects: Option<bool>,
    basic_auth: Option<RawBasicAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
}

impl fmt::Debug for RawBasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBasicAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    host: Option<String>,
    port: u16,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Vec<String>,
    expect_exit: Option<i64>,
    output_contains: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    #[serde(default)]
    engines: Vec<RawEngine>,
    include_stopped: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    enabled: Option<bool>,
    kubeconfig: Option<String>,
    #[serde(default)]
    contexts: Vec<String>,
    in_cluster: Option<bool>,
    namespaces: Option<RawNamespaceFilter>,
    read_only: Option<bool>,
    #[serde(default)]
    kinds: Vec<String>,
    crds: Option<bool>,
    rollout_timeout: Option<String>,
    helm: Option<RawHelm>,
    #[serde(default)]
    charts: Vec<RawChartRepo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespaceFilter {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHelm {
    binary: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChartRepo {
    chart: Option<String>,
    release: Option<String>,
    url: String,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
}

impl fmt::Debug for RawChartRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawChartRepo")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    name: Option<String>,
    host: String,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: String,
    cert: String,
    key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistries {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    insecure: Vec<String>,
    docker_config: Option<String>,
    #[serde(default)]
    credentials: Vec<RawCredential>,
    max_concurrency: Option<usize>,
    timeout: Option<String>,
    attempts: Option<u32>,
    max_retry_after: Option<String>,
    listing_timeout: Option<String>,
    cycle_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    registry: String,
    username: String,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
}

impl fmt::Debug for RawCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCredential")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    enabled: Option<bool>,
    gates: Option<RawGates>,
    min_age: Option<String>,
    on_failure: Option<String>,
    variant: Option<String>,
    versioning: Option<String>,
    windows: Option<Vec<RawWindow>>,
    constraint: Option<String>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGates {
    patch: Option<String>,
    minor: Option<String>,
    major: Option<String>,
    prerelease: Option<String>,
    digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Option<Vec<String>>,
    start: Option<String>,
    end: Option<String>,
    cron: Option<String>,
    duration: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: Option<String>,
    #[serde(rename = "match")]
    matcher: RawMatch,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Where problems are located: the parsed YAML tree and which paths the environment set.
struct Locator<'a> {
    source: &'a str,
    root: &'a Node,
    env_paths: Vec<(String, String)>,
}

enum Seg<'s> {
    Key(&'s str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            if let Ok(i) = inner[..end].parse() {
                segs.push(Seg::Index(i));
            }
            rest = &inner[end + 1..];
        }
    }
    segs
}

impl Locator<'_> {
    fn problem(&self, field: &str, message: impl Into<String>) -> Problem {
        if let Some((_, var)) = self
            .env_paths
            .iter()
            .find(|(p, _)| field == p || field.starts_with(&format!("{p}.")))
        {
            return Problem {
                source: format!("environment variable {var}"),
                line: None,
                column: None,
                field: field.to_owned(),
                message: message.into(),
            };
        }
        let (line, column) = self.position(field).unzip();
        Problem {
            source: self.source.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The position of the deepest node on `path` that exists in the file.
    fn position(&self, path: &str) -> Option<(usize, usize)> {
        let mut node = self.root;
        let mut best = node.span().start().map(|m| (m.line(), m.column()));
        for seg in split_path(path) {
            let next = match (seg, node) {
                (Seg::Key(k), Node::Mapping(m)) => m.get_node(k),
                (Seg::Index(i), Node::Sequence(s)) => s.get_node(i),
                _ => None,
            };
            match next {
                Some(n) => {
                    node = n;
                    if let Some(m) = n.span().start() {
                        best = Some((m.line(), m.column()));
                    }
                }
                None => break,
            }
        }
        best
    }
}

/// Applies `SAFE_UPDATER_A__B__C=value` overrides to the tree; returns (path, variable) pairs.
fn apply_env(
    root: &mut Node,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, Vec<Problem>> {
    let mut applied = Vec::new();
    let mut problems = Vec::new();
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let segs: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segs.iter().any(String::is_empty) {
            problems.push(Problem {
                source: format!("environment variable {name}"),
                line: None,
                column: None,
                field: String::new(),
                message: "empty path segment; write it like SAFE_UPDATER_POLICY__GATES__MINOR"
                    .into(),
            });
            continue;
        }
        let new_value = if value.trim_start().starts_with(['[', '{']) {
            match marked_yaml::parse_yaml(1, format!("v: {value}")) {
                Ok(Node::Mapping(m)) => m.get_node("v").cloned(),
                _ => None,
            }
        } else {
            Some(Node::Scalar(MarkedScalarNode::new(
                Span::new_blank(),
                value.clone(),
            )))
        };
        let Some(new_value) = new_value else {
            problems.push(Problem {
                source: format!("environment variable {name}"),
                line: None,
                column: None,
                field: segs.join("."),
                message: format!("{value:?} is not valid YAML"),
            });
            continue;
        };
        let mut node = &mut *root;
        let mut path = String::new();
        let mut ok = true;
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let index = seg.parse::<usize>().ok();
            path = match index {
                Some(n) => format!("{path}[{n}]"),
                None if path.is_empty() => seg.clone(),
                None => format!("{path}.{seg}"),
            };
            node = match (node, index) {
                (Node::Sequence(s), Some(n)) if n < s.len() => {
                    if last {
                        s[n] = new_value.clone();
                        break;
                    }
                    &mut s[n]
                }
                (Node::Mapping(m), _) => {
                    let key = MarkedScalarNode::new(Span::new_blank(), seg.clone());
                    if last {
                        m.insert(key, new_value.clone());
                        break;
                    }
                    let entry = m.entry(key).or_insert_with(|| {
                        Node::Mapping(MarkedMappingNode::new_empty(Span::new_blank()))
                    });
                    if matches!(entry, Node::Scalar(s) if s.as_str().is_empty()) {
                        *entry = Node::Mapping(MarkedMappingNode::new_empty(Span::new_blank()));
                    }
                    entry
                }
                _ => {
                    ok = false;
                    break;
                }
            };
        }
        if ok {
            applied.push((
                segs.iter()
                    .fold(String::new(), |acc, s| match s.parse::<usize>() {
                        Ok(n) => format!("{acc}[{n}]"),
                        Err(_) if acc.is_empty() => s.clone(),
                        Err(_) => format!("{acc}.{s}"),
                    }),
                name.clone(),
            ));
        } else {
            problems.push(Problem {
                source: format!("environment variable {name}"),
                line: None,
                column: None,
                field: path,
                message: "does not name a field that can be set here".into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(applied)
    } else {
        Err(problems)
    }
}

/// `null`, `~` and the empty string in an optional text field mean "not set".
fn present(s: &Option<String>) -> Option<&str> {
    match s.as_deref().map(str::trim) {
        None | Some("" | "~" | "null" | "Null" | "NULL") => None,
        Some(v) => Some(v),
    }
}

fn parse_days(days: &[String]) -> Result<[bool; 7], String> {
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut out = [false; 7];
    for d in days {
        let d = d.trim().to_ascii_lowercase();
        match d.as_str() {
            "daily" | "*" | "all" => out = [true; 7],
            "weekdays" => out[..5].iter_mut().for_each(|x| *x = true),
            "weekends" => out[5..].iter_mut().for_each(|x| *x = true),
            other => match names
                .iter()
                .position(|n| other.starts_with(n) && full_day_name(n).starts_with(other))
            {
                Some(i) => out[i] = true,
                None => {
                    return Err(format!(
                        "'{other}' is not a day; use mon..sun, weekdays, weekends or daily"
                    ));
                }
            },
        }
    }
    Ok(out)
}

fn full_day_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

fn parse_time(s: &str) -> Result<Time, String> {
    s.trim()
        .parse::<Time>()
        .map_err(|_| format!("'{s}' is not a time of day; write it like \"02:00\""))
}

fn compile_layer(
    loc: &Locator<'_>,
    base: &str,
    rule: &str,
    raw: &RawPolicy,
    problems: &mut Vec<Problem>,
) -> Layer {
    let mut layer = Layer::default();
    let field = |f: &str| {
        if base.is_empty() {
            f.to_owned()
        } else {
            format!("{base}.{f}")
        }
    };
    let rule_of = |f: &str| -> crate::policy::Rule { format!("{rule}.{f}").into() };
    if let Some(e) = raw.enabled {
        layer.enabled = Some(Setting {
            value: e,
            rule: rule_of("enabled"),
        });
    }
    if let Some(g) = &raw.gates {
        for (class, gate) in [
            (GateClass::Patch, &g.patch),
            (GateClass::Minor, &g.minor),
            (GateClass::Major, &g.major),
            (GateClass::Prerelease, &g.prerelease),
            (GateClass::Digest, &g.digest),
        ] {
            if let Some(text) = present(gate) {
                match Gate::parse(text) {
                    Some(gate) => layer.set_gate(class, gate, rule_of(class.as_str())),
                    None => problems.push(loc.problem(
                        &format!("{}.{}", field("gates"), class.as_str()),
                        format!("'{text}' is not a gate; use auto, review, manual or skip"),
                    )),
                }
            }
        }
    }
    if let Some(s) = present(&raw.min_age) {
        match parse_duration(s) {
            Ok(d) => {
                layer.min_age = Some(Setting {
                    value: d,
                    rule: rule_of("min_age"),
                })
            }
            Err(e) => problems.push(loc.problem(&field("min_age"), e)),
        }
    }
    if let Some(text) = present(&raw.on_failure) {
        match OnFailure::parse(text) {
            Some(o) => {
                layer.on_failure = Some(Setting {
                    value: o,
                    rule: rule_of("on_failure"),
                })
            }
            None => problems.push(loc.problem(
                &field("on_failure"),
                format!("'{text}' is not an action; use rollback or freeze"),
            )),
        }
    }
    if let Some(text) = present(&raw.variant) {
        match VariantMatch::parse(text) {
            Some(v) => {
                layer.variant = Some(Setting {
                    value: v,
                    rule: rule_of("variant"),
                })
            }
            None => problems.push(loc.problem(
                &field("variant"),
                format!("'{text}' is not a variant mode; use exact or loose"),
            )),
        }
    }
    if let Some(s) = present(&raw.versioning) {
        match parse_versioning(s) {
            Ok(v) => {
                layer.versioning = Some(Setting {
                    value: v,
                    rule: rule_of("versioning"),
                })
            }
            Err(e) => problems.push(loc.problem(&field("versioning"), e)),
        }
    }
    if let Some(s) = present(&raw.constraint) {
        match Constraint::parse(s) {
            Ok(c) => {
                layer.constraint = Some(Setting {
                    value: c,
                    rule: rule_of("constraint"),
                })
            }
            Err(e) => problems.push(loc.problem(&field("constraint"), e.to_string())),
        }
    }
    for (name, list, slot) in [
        ("include", &raw.include, &mut layer.include),
        ("exclude", &raw.exclude, &mut layer.exclude),
    ] {
        if let Some(list) = list {
            let mut res = Vec::new();
            for (i, pat) in list.iter().enumerate() {
                match Regex::new(pat) {
                    Ok(r) => res.push(r),
                    Err(e) => problems.push(loc.problem(
                        &format!("{}[{i}]", field(name)),
                        format!("invalid regular expression: {e}"),
                    )),
                }
            }
            *slot = Some(Setting {
                value: Arc::new(res),
                rule: rule_of(name),
            });
        }
    }
    if let Some(windows) = &raw.windows {
        let mut out = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let at = |f: &str| format!("{}[{i}].{f}", field("windows"));
            let days = match &w.days {
                Some(d) => parse_days(d)
                    .map_err(|e| problems.push(loc.problem(&at("days"), e)))
                    .ok(),
                None => Some([true; 7]),
            };
            let (mut start, mut end, mut cron) = (None, None, None);
            match (present(&w.cron), present(&w.start), present(&w.end)) {
                (Some(expr), None, None) => {
                    let duration = match present(&w.duration).map(parse_duration) {
                        Some(Ok(d)) => Some(d),
                        Some(Err(e)) => {
                            problems.push(loc.problem(&at("duration"), e));
                            None
                        }
                        None => {
                            problems.push(loc.problem(
                                &at("duration"),
                                "a cron window needs a duration, e.g. 2h",
                            ));
                            None
                        }
                    };
                    if let Some(d) = duration {
                        match CronWindow::parse(expr, d) {
                            Ok(c) => {
                                cron = Some(c);
                                start = Some(Time::midnight());
                                end = Some(Time::midnight());
                            }
                            Err(e) => problems.push(loc.problem(&at("cron"), e)),
                        }
                    }
                }
                (Some(_), _, _) => problems.push(loc.problem(
                    &at("cron"),
                    "give either cron (with duration) or start and end, not both",
                )),
                (None, Some(s), Some(e)) => {
                    start = parse_time(s)
                        .map_err(|e| problems.push(loc.problem(&at("start"), e)))
                        .ok();
                    end = parse_time(e)
                        .map_err(|e| problems.push(loc.problem(&at("end"), e)))
                        .ok();
                }
                (None, _, _) => problems.push(loc.problem(
                    &at("start"),
                    "a window needs start and end (e.g. 02:00 and 05:00), or cron and duration",
                )),
            }
            let tz_name = present(&w.timezone).unwrap_or("UTC").to_owned();
            let tz = TimeZone::get(&tz_name)
                .map_err(|_| {
                    problems.push(loc.problem(
                        &at("timezone"),
                        format!(
                            "'{tz_name}' is not a known IANA time zone (e.g. Europe/Berlin, UTC)"
                        ),
                    ))
                })
                .ok();
            if let (Some(days), Some(start), Some(end), Some(tz)) = (days, start, end, tz) {
                out.push(Window {
                    days,
                    start,
                    end,
                    tz,
                    tz_name,
                    cron,
                });
            }
        }
        layer.windows = Some(Setting {
            value: Arc::new(out),
            rule: rule_of("windows"),
        });
    }
    layer
}

/// Loads a configuration from its text. `source` names it in messages (usually the path);
/// `env` is the process environment (only `SAFE_UPDATER_*__*` variables are read).
pub fn load(source: &str, text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut root = if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        Node::Mapping(MarkedMappingNode::new_empty(Span::new_blank()))
    } else {
        let opts = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        marked_yaml::parse_yaml_with_options(0, text, opts).map_err(|e| ConfigError {
            problems: vec![load_error_problem(source, &e)],
        })?
    };
    let env_paths = apply_env(&mut root, env).map_err(|problems| ConfigError { problems })?;
    let loc = Locator {
        source,
        root: &root,
        env_paths,
    };
    // Unknown keys are reported (all of them) and removed, so the values around them are still
    // checked in the same run.
    let mut problems = Vec::new();
    let mut pruned = root.clone();
    check_keys(&mut pruned, "", &ROOT, &loc, &mut problems);
    let raw: RawConfig = marked_yaml::from_node(&pruned).map_err(|e| {
        let field = e.path().unwrap_or("").to_owned();
        let message = clean_serde_message(&e.to_string());
        let mut p = loc.problem(&field, message);
        if (p.line.is_none() || field.is_empty())
            && let Some(m) = e.start_mark()
        {
            p.line = Some(m.line());
            p.column = Some(m.column());
        }
        problems.push(p);
        ConfigError {
            problems: problems.clone(),
        }
    })?;

    if let Some(v) = raw.version
        && v != 1
    {
        problems.push(loc.problem(
            "version",
            format!("version {v} is not supported by this safe-updater; it reads version 1"),
        ));
    }
    let mut policy = Policy::default();
    if let Some(p) = &raw.policy {
        policy.global = compile_layer(&loc, "policy", "global", p, &mut problems);
    }
    for (ns, p) in &raw.namespaces {
        let layer = compile_layer(
            &loc,
            &format!("namespaces.{ns}"),
            &format!("namespace.{ns}"),
            p,
            &mut problems,
        );
        policy.namespaces.insert(ns.clone(), layer);
    }
    for (i, r) in raw.resources.iter().enumerate() {
        let base = format!("resources[{i}]");
        let rule = match present(&r.name) {
            Some(n) => format!("resource.{n}"),
            None => format!("resource[{i}]"),
        };
        let matcher = compile_matcher(&loc, &base, &r.matcher, &mut problems);
        let layer = compile_layer(
            &loc,
            &format!("{base}.policy"),
            &rule,
            &r.policy,
            &mut problems,
        );
        policy.resources.push((matcher, layer));
    }
    let docker = compile_docker(&loc, raw.docker.as_ref(), &mut problems);
    let kubernetes = compile_kubernetes(&loc, raw.kubernetes.as_ref(), &mut problems);
    let registries = compile_registries(&loc, raw.registries.as_ref(), &mut problems);
    let health = compile_health(&loc, raw.health.as_ref(), &mut problems);
    let health_checks = compile_checks(&loc, raw.health.as_ref(), &mut problems);
    let (daemon, server, notifications, audit) = compile_service(&loc, &raw, &mut problems);
    if !problems.is_empty() {
        // In file order, so the report reads top to bottom; environment problems come last.
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        return Err(ConfigError { problems });
    }
    Ok(Config {
        source: source.to_owned(),
        policy,
        docker,
        kubernetes,
        registries,
        health,
        health_checks,
        daemon,
        server,
        notifications,
        audit,
        scope: Scope::from_setting(raw.scope.as_deref()),
        state_path: raw
            .state
            .as_ref()
            .and_then(|s| present(&s.path))
            .map(str::to_owned),
    })
}

fn compile_matcher(
    loc: &Locator<'_>,
    base: &str,
    raw: &RawMatch,
    problems: &mut Vec<Problem>,
) -> Matcher {
    let mut matcher = Matcher {
        labels: raw.labels.clone(),
        ..Matcher::default()
    };
    if let Some(k) = present(&raw.kind) {
        match AssetKind::parse(k) {
            Some(kind) => matcher.kind = Some(kind),
            None => problems.push(loc.problem(
                &format!("{base}.match.kind"),
                format!(
                    "'{k}' is not a kind; use one of {}",
                    AssetKind::ALL.map(AssetKind::as_str).join(", ")
                ),
            )),
        }
    }
    for (f, val, slot) in [
        ("namespace", &raw.namespace, &mut matcher.namespace),
        ("name", &raw.name, &mut matcher.name),
    ] {
        if let Some(g) = present(val) {
            match glob_regex(g) {
                Ok(re) => *slot = Some(re),
                Err(e) => problems.push(loc.problem(
                    &format!("{base}.match.{f}"),
                    format!("invalid pattern: {e}"),
                )),
            }
        }
    }
    matcher
}

fn compile_checks(
    loc: &Locator<'_>,
    raw: Option<&RawHealth>,
    problems: &mut Vec<Problem>,
) -> Vec<CheckRule> {
    let mut out = Vec::new();
    let Some(raw) = raw else { return out };
    for (i, c) in raw.checks.iter().enumerate() {
        let base = format!("health.checks[{i}]");
        let matcher = compile_matcher(loc, &base, &c.matcher, problems);
        let kinds = [c.http.is_some(), c.tcp.is_some(), c.exec.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if kinds != 1 {
            problems
                .push(loc.problem(&base, "give exactly one of http, tcp or exec in each check"));
            continue;
        }
        let duration =
            |field: &str, value: &Option<String>, default: u64, problems: &mut Vec<Problem>| {
                let d = std::time::Duration::from_secs(default);
                let Some(t) = present(value) else { return d };
                match parse_duration(t) {
                    Ok(v) if !v.is_zero() => v,
                    Ok(_) => {
                        problems
                            .push(loc.problem(&format!("{base}.{field}"), "must be longer than 0"));
                        d
                    }
                    Err(e) => {
                        problems.push(loc.problem(&format!("{base}.{field}"), e));
                        d
                    }
                }
            };
        let check = if let Some(h) = &c.http {
            let timeout = duration("http.timeout", &h.timeout, 5, problems);
            let mut spec = HttpSpec::get(h.url.trim());
            spec.timeout = timeout;
            if !(spec.url.starts_with("http://") || spec.url.starts_with("https://")) {
                problems.push(loc.problem(
                    &format!("{base}.http.url"),
                    format!("'{}' is not an http:// or https:// URL", spec.url),
                ));
            }
            if let Some(m) = present(&h.method) {
                spec.method = m.to_ascii_uppercase();
            }
            spec.headers = h.headers.clone().into_iter().collect();
            if let Some(r) = present(&h.expect_status) {
                match parse_status_range(r) {
                    Ok(range) => spec.expect_status = range,
                    Err(e) => problems.push(loc.problem(&format!("{base}.http.expect_status"), e)),
                }
            }
            spec.body_contains = h.body_contains.clone();
            spec.tls_verify = h.tls_verify.unwrap_or(true);
            spec.ca_file = present(&h.ca_file).map(str::to_owned);
            spec.follow_redirects = h.follow_redirects.unwrap_or(true);
            if let Some(a) = &h.basic_auth {
                let secret = match (
                    present(&a.password),
                    present(&a.password_env),
                    present(&a.password_file),
                ) {
                    (Some(p), None, None) => Some(SecretRef::Literal(p.to_owned())),
                    (None, Some(v), None) => Some(SecretRef::Env(v.to_owned())),
                    (None, None, Some(f)) => Some(SecretRef::File(f.to_owned())),
                    _ => {
                        problems.push(loc.problem(
                            &format!("{base}.http.basic_auth"),
                            "give exactly one of password, password_env or password_file",
                        ));
                        None
                    }
                };
                spec.basic_auth = secret.map(|s| (a.username.clone(), s));
            }
            CheckSpec::Http(spec)
        } else if let Some(t) = &c.tcp {
            CheckSpec::Tcp(TcpSpec {
                host: present(&t.host).unwrap_or("{container_ip}").to_owned(),
                port: t.port,
                timeout: duration("tcp.timeout", &t.timeout, 5, problems),
            })
        } else if let Some(e) = &c.exec {
            if e.command.is_empty() || e.command[0].trim().is_empty() {
                problems.push(loc.problem(
                    &format!("{base}.exec.command"),
                    "must name a program, e.g. [pg_isready, -q]",
                ));
            }
            CheckSpec::Exec(ExecSpec {
                command: e.command.clone(),
                expect_exit: e.expect_exit.unwrap_or(0),
                output_contains: e.output_contains.clone(),
                timeout: duration("exec.timeout", &e.timeout, 10, problems),
            })
        } else {
            continue;
        };
        if c.name.is_some() {
            problems.push(loc.problem(
                &format!("{base}.name"),
                "is no longer a setting: it was never shown anywhere (checks are named by what \
                 they probe, e.g. `http GET <url>`). Delete it, or make it a YAML comment",
            ));
        }
        out.push(CheckRule { matcher, check });
    }
    out
}

fn secret_of(
    loc: &Locator<'_>,
    field: &str,
    [(lit, lit_name), (env, env_name), (file, file_name)]: [(&Option<String>, &str); 3],
    problems: &mut Vec<Problem>,
) -> Option<SecretRef> {
    match (present(lit), present(env), present(file)) {
        (Some(v), None, None) => Some(SecretRef::Literal(v.to_owned())),
        (None, Some(v), None) => Some(SecretRef::Env(v.to_owned())),
        (None, None, Some(v)) => Some(SecretRef::File(v.to_owned())),
        _ => {
            problems.push(loc.problem(
                field,
                format!("give exactly one of {lit_name}, {env_name} or {file_name}"),
            ));
            None
        }
    }
}

fn positive_duration(
    loc: &Locator<'_>,
    field: &str,
    value: &Option<String>,
    slot: &mut std::time::Duration,
    problems: &mut Vec<Problem>,
) {
    if let Some(t) = present(value) {
        match parse_duration(t) {
            Ok(d) if !d.is_zero() => *slot = d,
            Ok(_) => problems.push(loc.problem(field, "must be longer than 0")),
            Err(e) => problems.push(loc.problem(field, e)),
        }
    }
}

fn compile_service(
    loc: &Locator<'_>,
    raw: &RawConfig,
    problems: &mut Vec<Problem>,
) -> (
    DaemonConfig,
    ServerSettings,
    NotificationsConfig,
    AuditConfig,
) {
    let mut daemon = DaemonConfig::default();
    if let Some(d) = &raw.daemon {
        positive_duration(
            loc,
            "daemon.interval",
            &d.interval,
            &mut daemon.interval,
            problems,
        );
        positive_duration(
            loc,
            "daemon.reload_poll",
            &d.reload_poll,
            &mut daemon.reload_poll,
            problems,
        );
        if let Some(n) = d.concurrency {
            if !(1..=100).contains(&n) {
                problems.push(loc.problem("daemon.concurrency", "must be between 1 and 100"));
            }
            daemon.concurrency = n.clamp(1, 100);
        }
    }
    let mut server = ServerSettings::default();
    if let Some(sv) = &raw.server {
        if let Some(l) = &sv.listen {
            let l = l.trim();
            if !l.is_empty() && l.parse::<std::net::SocketAddr>().is_err() {
                problems.push(loc.problem(
                    "server.listen",
                    format!("'{l}' is not an address:port like 127.0.0.1:8080 (empty turns the server off)"),
                ));
            }
            server.listen = l.to_owned();
        }
        for (i, t) in sv.tokens.iter().enumerate() {
            let field = format!("server.tokens[{i}]");
            if t.name.trim().is_empty() {
                problems.push(loc.problem(
                    &format!("{field}.name"),
                    "names the operator; must not be empty",
                ));
            } else if server.tokens.iter().any(|(n, _)| n == &t.name) {
                problems.push(loc.problem(
                    &format!("{field}.name"),
                    format!("operator '{}' has two tokens", t.name),
                ));
            }
            if let Some(secret) = secret_of(
                loc,
                &field,
                [
                    (&t.token, "token"),
                    (&t.token_env, "token_env"),
                    (&t.token_file, "token_file"),
                ],
                problems,
            ) {
                server.tokens.push((t.name.trim().to_owned(), secret));
            }
        }
        for (source, w) in &sv.webhooks {
            let field = format!("server.webhooks.{source}");
            if !["dockerhub", "github", "harbor", "quay", "distribution"].contains(&source.as_str())
            {
                problems.push(loc.problem(
                    &field,
                    format!("'{source}' is not a webhook source; use dockerhub, github, harbor, quay or distribution"),
                ));
                continue;
            }
            if let Some(secret) = secret_of(
                loc,
                &field,
                [
                    (&w.secret, "secret"),
                    (&w.secret_env, "secret_env"),
                    (&w.secret_file, "secret_file"),
                ],
                problems,
            ) {
                server.webhooks.insert(source.clone(), secret);
            }
        }
    }
    let mut notifications = NotificationsConfig::default();
    if let Some(n) = &raw.notifications {
        notifications.urls = n
            .urls
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        notifications.approve_base_url = present(&n.approve_base_url).map(str::to_owned);
        positive_duration(
            loc,
            "notifications.timeout",
            &n.timeout,
            &mut notifications.timeout,
            problems,
        );
        if let Some(a) = n.attempts {
            if a == 0 {
                problems.push(loc.problem("notifications.attempts", "must be at least 1"));
            }
            notifications.attempts = a.max(1);
        }
    }
    let mut audit = AuditConfig::default();
    if let Some(a) = &raw.audit
        && let Some(t) = present(&a.retention)
    {
        match parse_duration(t) {
            Ok(d) if d.is_zero() => audit.retention = None,
            Ok(d) if d < std::time::Duration::from_secs(24 * 3600) => problems.push(loc.problem(
                "audit.retention",
                "must be at least 1d (0 keeps everything)",
            )),
            Ok(d) => audit.retention = Some(d),
            Err(e) => problems.push(loc.problem("audit.retention", e)),
        }
    }
    (daemon, server, notifications, audit)
}

fn compile_docker(
    loc: &Locator<'_>,
    raw: Option<&RawDocker>,
    problems: &mut Vec<Problem>,
) -> DockerConfig {
    let Some(raw) = raw else {
        return DockerConfig::default();
    };
    let mut engines: Vec<EngineConfig> = Vec::new();
    for (i, e) in raw.engines.iter().enumerate() {
        let at = |f: &str| format!("docker.engines[{i}].{f}");
        let host = e.host.trim();
        if !(host.starts_with("unix://")
            || host.starts_with("tcp://")
            || host.starts_with("http://")
            || host.starts_with("https://"))
        {
            problems.push(loc.problem(&at("host"), format!("'{host}' is not an engine address; write unix:///var/run/docker.sock or tcp://host:2376")));
        }
        let name = present(&e.name).map_or_else(
            || {
                if i == 0 {
                    "local".to_owned()
                } else {
                    format!("engine{i}")
                }
            },
            str::to_owned,
        );
        if name.is_empty() || name.contains('/') {
            problems.push(loc.problem(
                &at("name"),
                format!("'{name}' cannot name an engine: it appears in asset ids, so no '/'"),
            ));
        } else if engines.iter().any(|x| x.name == name) {
            problems.push(loc.problem(
                &at("name"),
                format!("engine name '{name}' is used twice; asset ids would collide"),
            ));
        }
        let tls = e.tls.as_ref().map(|t| TlsFiles {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        });
        engines.push(EngineConfig {
            name,
            host: host.to_owned(),
            tls,
        });
    }
    DockerConfig {
        engines,
        include_stopped: raw.include_stopped.unwrap_or(false),
    }
}

fn compile_kubernetes(
    loc: &Locator<'_>,
    raw: Option<&RawKubernetes>,
    problems: &mut Vec<Problem>,
) -> KubernetesConfig {
    let mut out = KubernetesConfig::default();
    let Some(raw) = raw else { return out };
    out.enabled = raw.enabled.unwrap_or(false);
    out.kubeconfig = present(&raw.kubeconfig).map(str::to_owned);
    out.in_cluster = raw.in_cluster.unwrap_or(false);
    out.read_only = raw.read_only.unwrap_or(false);
    out.crds = raw.crds.unwrap_or(false);
    if out.in_cluster && out.kubeconfig.is_some() {
        problems.push(loc.problem(
            "kubernetes.in_cluster",
            "in_cluster uses the pod's service account; remove kubeconfig or set in_cluster: false",
        ));
    }
    for (i, c) in raw.contexts.iter().enumerate() {
        let c = c.trim();
        if c.is_empty() {
            problems.push(loc.problem(
                &format!("kubernetes.contexts[{i}]"),
                "names a context of the kubeconfig; must not be empty",
            ));
        } else if out.contexts.iter().any(|x| x == c) {
            problems.push(loc.problem(
                &format!("kubernetes.contexts[{i}]"),
                format!("context '{c}' is listed twice"),
            ));
        } else {
            out.contexts.push(c.to_owned());
        }
    }
    if out.in_cluster && out.contexts.len() > 1 {
        problems.push(loc.problem(
            "kubernetes.contexts",
            "in_cluster reaches one cluster; list at most one context (its name in asset ids)",
        ));
    }
    if let Some(ns) = &raw.namespaces {
        for (field, list, slot) in [
            ("include", &ns.include, &mut out.include_namespaces),
            ("exclude", &ns.exclude, &mut out.exclude_namespaces),
        ] {
            for (i, g) in list.iter().enumerate() {
                let g = g.trim();
                if g.is_empty() {
                    problems.push(loc.problem(
                        &format!("kubernetes.namespaces.{field}[{i}]"),
                        "must not be empty",
                    ));
                } else if let Err(e) = glob_regex(g) {
                    problems.push(loc.problem(
                        &format!("kubernetes.namespaces.{field}[{i}]"),
                        format!("invalid pattern: {e}"),
                    ));
                } else {
                    slot.push(g.to_owned());
                }
            }
        }
    }
    for (i, k) in raw.kinds.iter().enumerate() {
        match AssetKind::parse(k.trim()) {
            Some(AssetKind::Container) | None => problems.push(loc.problem(
                &format!("kubernetes.kinds[{i}]"),
                format!(
                    "'{k}' is not a Kubernetes kind; use one of {}",
                    AssetKind::ALL[1..].iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
            Some(kind) if !out.kinds.contains(&kind) => out.kinds.push(kind),
            Some(_) => {}
        }
    }
    positive_duration(
        loc,
        "kubernetes.rollout_timeout",
        &raw.rollout_timeout,
        &mut out.rollout_timeout,
        problems,
    );
    if let Some(h) = &raw.helm {
        if let Some(b) = &h.binary {
            if b.trim().is_empty() {
                problems.push(loc.problem(
                    "kubernetes.helm.binary",
                    "a path or a name on PATH, e.g. helm or /usr/local/bin/helm",
                ));
            } else {
                out.helm.binary = b.trim().to_owned();
            }
        }
        positive_duration(
            loc,
            "kubernetes.helm.timeout",
            &h.timeout,
            &mut out.helm.timeout,
            problems,
        );
    }
    for (i, c) in raw.charts.iter().enumerate() {
        let base = format!("kubernetes.charts[{i}]");
        let url = c.url.trim().trim_end_matches('/').to_owned();
        if !["https://", "http://", "oci://"]
            .iter()
            .any(|p| url.starts_with(p) && url.len() > p.len())
        {
            problems.push(loc.problem(
                &format!("{base}.url"),
                format!("'{}' is not a chart repository; write https://charts.example.com (index.yaml) or oci://registry.example.com/charts", c.url.trim()),
            ));
        }
        for (f, g) in [("chart", &c.chart), ("release", &c.release)] {
            if let Some(g) = present(g)
                && let Err(e) = glob_regex(g)
            {
                problems.push(loc.problem(&format!("{base}.{f}"), format!("invalid pattern: {e}")));
            }
        }
        let username = present(&c.username).map(str::to_owned);
        let any_secret = [&c.password, &c.password_env, &c.password_file]
            .iter()
            .any(|s| present(s).is_some());
        let password = match (&username, any_secret) {
            (None, false) => None,
            (None, true) => {
                problems
                    .push(loc.problem(&format!("{base}.username"), "a password needs a username"));
                None
            }
            (Some(_), _) => secret_of(
                loc,
                &base,
                [
                    (&c.password, "password"),
                    (&c.password_env, "password_env"),
                    (&c.password_file, "password_file"),
                ],
                problems,
            ),
        };
        out.charts.push(ChartRepoConfig {
            chart: present(&c.chart).map(str::to_owned),
            release: present(&c.release).map(str::to_owned),
            url,
            username,
            password,
        });
    }
    out
}

fn compile_health(
    loc: &Locator<'_>,
    raw: Option<&RawHealth>,
    problems: &mut Vec<Problem>,
) -> HealthConfig {
    let mut out = HealthConfig::default();
    let Some(raw) = raw else { return out };
    for (name, value, slot) in [
        ("window", &raw.window, &mut out.window),
        ("interval", &raw.interval, &mut out.interval),
    ] {
        if let Some(t) = present(value) {
            match parse_duration(t) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => {
                    problems.push(loc.problem(&format!("health.{name}"), "must be longer than 0"))
                }
                Err(e) => problems.push(loc.problem(&format!("health.{name}"), e)),
            }
        }
    }
    if let Some(n) = raw.failure_threshold {
        if n == 0 {
            problems.push(loc.problem("health.failure_threshold", "must be at least 1"));
        }
        out.failure_threshold = n.max(1);
    }
    if raw.max_attempts.is_some() {
        // It was accepted and never read; a setting that does nothing must not look as if
        // it did something.
        problems.push(loc.problem(
            "health.max_attempts",
            "is no longer a setting: it never had an effect. Updates cannot loop anyway: a \
             version that fails is never tried again, and an update interrupted three times is \
             given up. Delete this line",
        ));
    }
    out.remove_old_image = raw.remove_old_image.unwrap_or(false);
    out
}

fn compile_registries(
    loc: &Locator<'_>,
    raw: Option<&RawRegistries>,
    problems: &mut Vec<Problem>,
) -> RegistriesConfig {
    let mut out = RegistriesConfig::default();
    let Some(raw) = raw else { return out };
    for (name, list) in [("allow", &raw.allow), ("deny", &raw.deny)] {
        for (i, g) in list.iter().enumerate() {
            if let Err(e) = glob_regex(g) {
                problems.push(loc.problem(
                    &format!("registries.{name}[{i}]"),
                    format!("invalid pattern: {e}"),
                ));
            }
        }
    }
    out.allow = raw.allow.clone();
    out.deny = raw.deny.clone();
    out.insecure = raw.insecure.clone();
    out.docker_config = present(&raw.docker_config).map(str::to_owned);
    if let Some(n) = raw.max_concurrency {
        if n == 0 {
            problems.push(loc.problem("registries.max_concurrency", "must be at least 1"));
        }
        out.max_concurrency = n.max(1);
    }
    if let Some(t) = present(&raw.timeout) {
        match parse_duration(t) {
            Ok(d) if !d.is_zero() => out.timeout = d,
            Ok(_) => problems.push(loc.problem("registries.timeout", "must be longer than 0")),
            Err(e) => problems.push(loc.problem("registries.timeout", e)),
        }
    }
    for (name, value, slot) in [
        (
            "max_retry_after",
            &raw.max_retry_after,
            &mut out.max_retry_after,
        ),
        (
            "listing_timeout",
            &raw.listing_timeout,
            &mut out.listing_timeout,
        ),
        ("cycle_timeout", &raw.cycle_timeout, &mut out.cycle_timeout),
    ] {
        if let Some(t) = present(value) {
            match parse_duration(t) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => problems
                    .push(loc.problem(&format!("registries.{name}"), "must be longer than 0")),
                Err(e) => problems.push(loc.problem(&format!("registries.{name}"), e)),
            }
        }
    }
    if let Some(a) = raw.attempts {
        if a == 0 {
            problems.push(loc.problem("registries.attempts", "must be at least 1"));
        }
        out.attempts = a.max(1);
    }
    for (i, c) in raw.credentials.iter().enumerate() {
        let secrets = [&c.password, &c.password_env, &c.password_file]
            .iter()
            .filter(|s| present(s).is_some())
            .count();
        if secrets != 1 {
            problems.push(loc.problem(
                &format!("registries.credentials[{i}]"),
                "give exactly one of password, password_env (an environment variable's name) or password_file",
            ));
        }
        out.credentials.push(CredentialConfig {
            registry: c.registry.trim().to_owned(),
            username: c.username.clone(),
            password: present(&c.password).map(str::to_owned),
            password_env: present(&c.password_env).map(str::to_owned),
            password_file: present(&c.password_file).map(str::to_owned),
        });
    }
    out
}

fn load_error_problem(source: &str, e: &marked_yaml::LoadError) -> Problem {
    use marked_yaml::LoadError as L;
    let (mark, message) = match e {
        L::TopLevelMustBeMapping(m) => (
            Some(*m),
            "the top level must be a mapping of settings (key: value)".to_owned(),
        ),
        L::TopLevelMustBeSequence(m) => (Some(*m), "the top level must be a sequence".to_owned()),
        L::UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported; repeat the value".to_owned(),
        ),
        L::MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".to_owned()),
        L::UnexpectedTag(m) => (Some(*m), "YAML tags (!!...) are not supported".to_owned()),
        L::ScanError(m, err) => (Some(*m), format!("invalid YAML: {err}")),
        L::DuplicateKey(d) => (
            d.key.span().start().copied(),
            format!(
                "duplicate key '{}' (first defined on line {})",
                d.key.as_str(),
                d.prev_key.span().start().map_or(0, |m| m.line())
            ),
        ),
    };
    Problem {
        source: source.to_owned(),
        line: mark.map(|m| m.line()),
        column: mark.map(|m| m.column()),
        field: String::new(),
        message,
    }
}

/// The shape of the configuration, for reporting every unknown key (serde stops at the first).
/// Kept beside the `Raw*` structs, which still deny unknown fields as a second line.
enum Shape {
    Map(&'static [(&'static str, &'static Shape)]),
    /// A mapping with free keys (namespace names, label names).
    Dict(&'static Shape),
    Seq(&'static Shape),
    Scalar,
}

const SCALAR: Shape = Shape::Scalar;
const SCALARS: Shape = Shape::Seq(&SCALAR);
const GATES: Shape = Shape::Map(&[
    ("patch", &SCALAR),
    ("minor", &SCALAR),
    ("major", &SCALAR),
    ("prerelease", &SCALAR),
    ("digest", &SCALAR),
]);
const WINDOW: Shape = Shape::Map(&[
    ("days", &SCALARS),
    ("start", &SCALAR),
    ("end", &SCALAR),
    ("cron", &SCALAR),
    ("duration", &SCALAR),
    ("timezone", &SCALAR),
]);
const WINDOWS: Shape = Shape::Seq(&WINDOW);
const POLICY: Shape = Shape::Map(&[
    ("enabled", &SCALAR),
    ("gates", &GATES),
    ("min_age", &SCALAR),
    ("on_failure", &SCALAR),
    ("variant", &SCALAR),
    ("versioning", &SCALAR),
    ("windows", &WINDOWS),
    ("constraint", &SCALAR),
    ("include", &SCALARS),
    ("exclude", &SCALARS),
]);
const LABELS: Shape = Shape::Dict(&SCALAR);
const MATCH: Shape = Shape::Map(&[
    ("kind", &SCALAR),
    ("namespace", &SCALAR),
    ("name", &SCALAR),
    ("labels", &LABELS),
]);
const RESOURCE: Shape = Shape::Map(&[("name", &SCALAR), ("match", &MATCH), ("policy", &POLICY)]);
const RESOURCES: Shape = Shape::Seq(&RESOURCE);
const NAMESPACES: Shape = Shape::Dict(&POLICY);
const STATE: Shape = Shape::Map(&[("path", &SCALAR)]);
const TLS: Shape = Shape::Map(&[("ca", &SCALAR), ("cert", &SCALAR), ("key", &SCALAR)]);
const ENGINE: Shape = Shape::Map(&[("name", &SCALAR), ("host", &SCALAR), ("tls", &TLS)]);
const ENGINES: Shape = Shape::Seq(&ENGINE);
const DOCKER: Shape = Shape::Map(&[("engines", &ENGINES), ("include_stopped", &SCALAR)]);
const CHART_REPO: Shape = Shape::Map(&[
    ("chart", &SCALAR),
    ("release", &SCALAR),
    ("url", &SCALAR),
    ("username", &SCALAR),
    ("password", &SCALAR),
    ("password_env", &SCALAR),
    ("password_file", &SCALAR),
]);
const KUBERNETES: Shape = Shape::Map(&[
    ("enabled", &SCALAR),
    ("kubeconfig", &SCALAR),
    ("contexts", &SCALARS),
    ("in_cluster", &SCALAR),
    (
        "namespaces",
        &Shape::Map(&[("include", &SCALARS), ("exclude", &SCALARS)]),
    ),
    ("read_only", &SCALAR),
    ("kinds", &SCALARS),
    ("crds", &SCALAR),
    ("rollout_timeout", &SCALAR),
    (
        "helm",
        &Shape::Map(&[("binary", &SCALAR), ("timeout", &SCALAR)]),
    ),
    ("charts", &Shape::Seq(&CHART_REPO)),
]);
const CREDENTIAL: Shape = Shape::Map(&[
    ("registry", &SCALAR),
    ("username", &SCALAR),
    ("password", &SCALAR),
    ("password_env", &SCALAR),
    ("password_file", &SCALAR),
]);
const CREDENTIALS: Shape = Shape::Seq(&CREDENTIAL);
const REGISTRIES: Shape = Shape::Map(&[
    ("allow", &SCALARS),
    ("deny", &SCALARS),
    ("insecure", &SCALARS),
    ("docker_config", &SCALAR),
    ("credentials", &CREDENTIALS),
    ("max_concurrency", &SCALAR),
    ("timeout", &SCALAR),
    ("attempts", &SCALAR),
    ("max_retry_after", &SCALAR),
    ("listing_timeout", &SCALAR),
    ("cycle_timeout", &SCALAR),
]);
const HEALTH: Shape = Shape::Map(&[
    ("window", &SCALAR),
    ("interval", &SCALAR),
    ("failure_threshold", &SCALAR),
    ("remove_old_image", &SCALAR),
    ("max_attempts", &SCALAR),
    ("checks", &CHECKS),
]);
const BASIC_AUTH: Shape = Shape::Map(&[
    ("username", &SCALAR),
    ("password", &SCALAR),
    ("password_env", &SCALAR),
    ("password_file", &SCALAR),
]);
const HTTP_CHECK: Shape = Shape::Map(&[
    ("url", &SCALAR),
    ("method", &SCALAR),
    ("headers", &LABELS),
    ("expect_status", &SCALAR),
    ("body_contains", &SCALAR),
    ("timeout", &SCALAR),
    ("tls_verify", &SCALAR),
    ("ca_file", &SCALAR),
    ("follow_redirects", &SCALAR),
    ("basic_auth", &BASIC_AUTH),
]);
const TCP_CHECK: Shape = Shape::Map(&[("host", &SCALAR), ("port", &SCALAR), ("timeout", &SCALAR)]);
const EXEC_CHECK: Shape = Shape::Map(&[
    ("command", &SCALARS),
    ("expect_exit", &SCALAR),
    ("output_contains", &SCALAR),
    ("timeout", &SCALAR),
]);
const CHECK: Shape = Shape::Map(&[
    ("name", &SCALAR),
    ("match", &MATCH),
    ("http", &HTTP_CHECK),
    ("tcp", &TCP_CHECK),
    ("exec", &EXEC_CHECK),
]);
const CHECKS: Shape = Shape::Seq(&CHECK);
const DAEMON: Shape = Shape::Map(&[
    ("interval", &SCALAR),
    ("concurrency", &SCALAR),
    ("reload_poll", &SCALAR),
]);
const TOKEN: Shape = Shape::Map(&[
    ("name", &SCALAR),
    ("token", &SCALAR),
    ("token_env", &SCALAR),
    ("token_file", &SCALAR),
]);
const SECRET: Shape = Shape::Map(&[
    ("secret", &SCALAR),
    ("secret_env", &SCALAR),
    ("secret_file", &SCALAR),
]);
const SERVER: Shape = Shape::Map(&[
    ("listen", &SCALAR),
    ("tokens", &Shape::Seq(&TOKEN)),
    ("webhooks", &Shape::Dict(&SECRET)),
]);
const NOTIFICATIONS: Shape = Shape::Map(&[
    ("urls", &SCALARS),
    ("approve_base_url", &SCALAR),
    ("timeout", &SCALAR),
    ("attempts", &SCALAR),
]);
const AUDIT: Shape = Shape::Map(&[("retention", &SCALAR)]);
const ROOT: Shape = Shape::Map(&[
    ("version", &SCALAR),
    ("scope", &SCALAR),
    ("state", &STATE),
    ("policy", &POLICY),
    ("namespaces", &NAMESPACES),
    ("resources", &RESOURCES),
    ("docker", &DOCKER),
    ("kubernetes", &KUBERNETES),
    ("registries", &REGISTRIES),
    ("health", &HEALTH),
    ("daemon", &DAEMON),
    ("server", &SERVER),
    ("notifications", &NOTIFICATIONS),
    ("audit", &AUDIT),
]);

fn check_keys(
    node: &mut Node,
    path: &str,
    shape: &Shape,
    loc: &Locator<'_>,
    problems: &mut Vec<Problem>,
) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (shape, node) {
        (Shape::Map(fields), Node::Mapping(m)) => {
            let mut unknown = Vec::new();
            for (key, value) in m.iter_mut() {
                match fields.iter().find(|(name, _)| *name == key.as_str()) {
                    Some((_, sub)) => check_keys(value, &join(key.as_str()), sub, loc, problems),
                    None => unknown.push(key.clone()),
                }
            }
            for key in unknown {
                let known = fields
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut p = loc.problem(
                    &join(key.as_str()),
                    format!("unknown setting '{}'; known here: {known}", key.as_str()),
                );
                if let Some(mark) = key.span().start() {
                    p.line = Some(mark.line());
                    p.column = Some(mark.column());
                }
                problems.push(p);
                m.remove(&key);
            }
        }
        (Shape::Dict(sub), Node::Mapping(m)) => {
            for (key, value) in m.iter_mut() {
                check_keys(value, &join(key.as_str()), sub, loc, problems);
            }
        }
        (Shape::Seq(sub), Node::Sequence(s)) => {
            for (i, value) in s.iter_mut().enumerate() {
                check_keys(value, &format!("{path}[{i}]"), sub, loc, problems);
            }
        }
        // Wrong types are left for serde, which names the expected type.
        _ => {}
    }
}

/// serde's messages name Rust things; keep the useful part for people.
fn clean_serde_message(msg: &str) -> String {
    // marked-yaml appends its own position ("... at 3:5"); the Problem carries the position.
    let msg = match msg.rfind(" at ") {
        Some(i) if msg[i + 4..].chars().all(|c| c.is_ascii_digit() || c == ':') => &msg[..i],
        _ => msg,
    };
    // The field travels in the Problem; drop marked-yaml's copy of the path.
    let msg = match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest,
        _ => msg,
    };
    let msg = msg.replace("invalid type: ", "wrong type: ");
    // "expected struct RawGates" names a Rust type; people wrote a mapping.
    match msg.find("expected struct ") {
        Some(i) => format!("{}expected a mapping of settings", &msg[..i]),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AssetView, defaults};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn view(kind: AssetKind, ns: Option<&str>, name: &str) -> AssetView<'static> {
        // Leaked for brevity in tests only.
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let ns = ns.map(|n| &*Box::leak(n.to_owned().into_boxed_str()));
        AssetView {
            kind,
            namespace: ns,
            name,
            labels: None,
            annotations: None,
        }
    }

    fn err_of(text: &str) -> Vec<String> {
        match load("cfg.yaml", text, &[]) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn template_is_exactly_the_defaults() {
        let cfg = load("template", TEMPLATE, &[]).unwrap_or_else(|e| panic!("{e}"));
        let eff = cfg
            .policy
            .resolve(&view(AssetKind::Deployment, Some("x"), "y"));
        let d = defaults();
        for c in GateClass::ALL {
            assert_eq!(eff.gate(c).value, d.gate(c).value, "{}", c.as_str());
        }
        assert_eq!(eff.min_age.value, d.min_age.value);
        assert_eq!(eff.on_failure.value, d.on_failure.value);
        assert_eq!(eff.variant.value, d.variant.value);
        assert!(eff.windows.value.is_empty());
        assert!(eff.constraint.is_none());
        assert_eq!(cfg.state_path, None);
        assert_eq!(cfg.docker, DockerConfig::default());
        assert_eq!(cfg.kubernetes, KubernetesConfig::default());
        assert_eq!(cfg.registries, RegistriesConfig::default());
        assert_eq!(cfg.health, HealthConfig::default());
        assert!(cfg.health_checks.is_empty());
        assert_eq!(cfg.daemon, DaemonConfig::default());
        assert_eq!(cfg.server, ServerSettings::default());
        assert_eq!(cfg.notifications, NotificationsConfig::default());
        assert_eq!(cfg.audit, AuditConfig::default());
    }

    #[test]
    fn service_sections_compile_and_hide_secrets() {
        let text = r#"
daemon: { interval: 10m, concurrency: 20 }
server:
  listen: "127.0.0.1:9099"
  tokens:
    - { name: alice, token: s3cret-token }
    - { name: bot, token_env: BOT_TOKEN }
  webhooks:
    github: { secret_file: /run/gh }
notifications:
  urls: ["slack://hook:AAA-BBB-CCC@webhook"]
audit: { retention: 365d }
policy:
  windows:
    - cron: "0 2 * * SAT"
      duration: 3h
      timezone: Europe/Berlin
"#;
        let cfg = load("c.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.daemon.interval, std::time::Duration::from_secs(600));
        assert_eq!(cfg.daemon.concurrency, 20);
        assert_eq!(cfg.server.listen, "127.0.0.1:9099");
        assert_eq!(
            cfg.server.tokens[1],
            ("bot".into(), SecretRef::Env("BOT_TOKEN".into()))
        );
        assert_eq!(
            cfg.server.webhooks["github"],
            SecretRef::File("/run/gh".into())
        );
        assert_eq!(
            cfg.audit.retention,
            Some(std::time::Duration::from_secs(365 * 86400))
        );
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("s3cret-token") && !debug.contains("AAA-BBB"),
            "{debug}"
        );
        let eff = cfg.policy.resolve(&view(AssetKind::Container, None, "w"));
        assert!(eff.windows.value[0].contains("2026-11-28T01:30:00Z".parse().expect("ts")));
        assert!(!eff.windows.value[0].contains("2026-11-28T05:30:00Z".parse().expect("ts")));

        let problems = err_of(
            "daemon: { concurrency: 101, interval: 0 }\nserver:\n  listen: nowhere\n  tokens: [{ name: a }]\n  webhooks: { gitlab: { secret: x } }\naudit: { retention: 1h }\npolicy:\n  windows:\n    - { cron: \"0 2 * * SAT\" }\n    - { cron: \"bad\", duration: 1h }\n    - { start: \"02:00\" }\n",
        );
        for want in [
            "daemon.concurrency",
            "daemon.interval",
            "server.listen",
            "server.tokens[0]: give exactly one",
            "server.webhooks.gitlab",
            "audit.retention",
            "policy.windows[0].duration",
            "policy.windows[1].cron",
            "policy.windows[2].start",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{want}: {problems:#?}"
            );
        }
    }

    #[test]
    fn settings_that_never_had_an_effect_are_refused_saying_why() {
        let text =
            "health:\n  max_attempts: 2\n  checks:\n    - name: web\n      tcp: { port: 80 }\n";
        let err = load("c.yaml", text, &[]).expect_err("refused");
        let problems: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("health.max_attempts")
                && problems[0].contains("never had an effect"),
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("health.checks[0].name") && problems[1].contains("comment"),
            "{problems:#?}"
        );
        // The commented configuration holds only settings that do something.
        let generated = TEMPLATE;
        assert!(!generated.contains("max_attempts"), "{generated}");
        load("default.yaml", generated, &[]).expect("the generated config loads");
    }

    #[test]
    fn health_checks_compile_with_their_matchers() {
        let text = r#"
health:
  checks:
    - match: { name: "web-*" }
      http:
        url: "https://{container_ip}:8443/health"
        method: head
        headers: { X-Probe: su }
        expect_status: 2xx
        body_contains: ok
        timeout: 2s
        tls_verify: false
        basic_auth: { username: probe, password_env: PROBE_PW }
    - tcp: { host: "::1", port: 5432 }
    - match: { labels: { app: pg } }
      exec: { command: [pg_isready, -q], expect_exit: 0, output_contains: accepting, timeout: 3s }
"#;
        let cfg = load("c.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.health_checks.len(), 3);
        assert!(
            cfg.health_checks[0]
                .matcher
                .name
                .as_ref()
                .is_some_and(|n| n.is_match("web-1"))
        );
        let CheckSpec::Http(h) = &cfg.health_checks[0].check else {
            panic!("expected http")
        };
        assert_eq!(h.method, "HEAD");
        assert_eq!(h.expect_status, (200, 299));
        assert_eq!(h.timeout, std::time::Duration::from_secs(2));
        assert!(!h.tls_verify);
        assert_eq!(
            h.basic_auth,
            Some(("probe".into(), SecretRef::Env("PROBE_PW".into())))
        );
        assert!(
            cfg.health_checks[0]
                .matcher
                .matches(&view(AssetKind::Container, None, "web-1"))
        );
        assert!(
            !cfg.health_checks[0]
                .matcher
                .matches(&view(AssetKind::Container, None, "db"))
        );
        assert_eq!(
            cfg.health_checks[1].check,
            CheckSpec::Tcp(TcpSpec {
                host: "::1".into(),
                port: 5432,
                timeout: std::time::Duration::from_secs(5)
            })
        );
        let CheckSpec::Exec(e) = &cfg.health_checks[2].check else {
            panic!("expected exec")
        };
        assert_eq!(e.command, ["pg_isready", "-q"]);
        assert_eq!(e.output_contains.as_deref(), Some("accepting"));
    }

    #[test]
    fn bad_health_checks_are_all_reported_with_positions() {
        let text = "health:\n  checks:\n    - http: { url: ftp://x, expect_status: 700 }\n    - tcp: { port: 1 }\n      exec: { command: [x] }\n    - http: { url: http://x, basic_auth: { username: u } }\n    - exec: { command: [] , timeout: soon }\n";
        let problems = err_of(text);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].starts_with("cfg.yaml:3:"), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("health.checks[0].http.url"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("health.checks[0].http.expect_status"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("health.checks[1]: give exactly one"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("health.checks[2].http.basic_auth"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("health.checks[3].exec.command"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("health.checks[3].exec.timeout"))
        );
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let cfg = load("empty", "# nothing\n", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.policy.namespaces.is_empty());
    }

    #[test]
    fn hierarchy_global_namespace_resource() {
        let text = r#"
policy:
  gates: { minor: auto }
namespaces:
  prod:
    gates: { minor: manual, patch: review }
resources:
  - name: db
    match: { kind: StatefulSet, name: "pg-*" }
    policy:
      gates: { patch: manual }
      on_failure: freeze
"#;
        let cfg = load("c.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
        let dev = cfg
            .policy
            .resolve(&view(AssetKind::Deployment, Some("dev"), "web"));
        assert_eq!(
            (
                dev.gate(GateClass::Minor).value,
                dev.gate(GateClass::Minor).rule.as_ref()
            ),
            (Gate::Auto, "global.minor")
        );
        let prod = cfg
            .policy
            .resolve(&view(AssetKind::Deployment, Some("prod"), "web"));
        assert_eq!(&*prod.gate(GateClass::Minor).rule, "namespace.prod.minor");
        assert_eq!(prod.gate(GateClass::Patch).value, Gate::Review);
        let db = cfg
            .policy
            .resolve(&view(AssetKind::StatefulSet, Some("prod"), "pg-main"));
        assert_eq!(
            (
                db.gate(GateClass::Patch).value,
                db.gate(GateClass::Patch).rule.as_ref()
            ),
            (Gate::Manual, "resource.db.patch")
        );
        assert_eq!(&*db.gate(GateClass::Minor).rule, "namespace.prod.minor");
        assert_eq!(db.on_failure.value, OnFailure::Freeze);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_field() {
        let e = err_of("policy:\n  gates:\n    minr: auto\n");
        assert!(e[0].starts_with("cfg.yaml:3:"), "{e:?}");
        assert!(e[0].contains("minr"), "{e:?}");
        let e = err_of("policy:\n  gates:\n    minor: sometimes\n");
        assert!(e[0].starts_with("cfg.yaml:3:"), "{e:?}");
        assert!(e[0].contains("policy.gates.minor"), "{e:?}");
        assert!(e[0].contains("sometimes"), "{e:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = "policy:\n  min_age: soon\n  constraint: '>>1'\n  include: ['(']\n  windows:\n    - days: [funday]\n      start: '25:00'\n      end: '03:00'\n      timezone: Mars/Olympus\n";
        let e = err_of(text);
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(
            e[0].starts_with("cfg.yaml:2:") && e[0].contains("policy.min_age"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|p| p.starts_with("cfg.yaml:9:") && p.contains("policy.windows[0].timezone")),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_together() {
        let text = "policy:\n  colour: blue\n  gates:\n    minor: sometimes\n    majr: auto\n  on_failure: explode\n";
        let e = err_of(text);
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("cfg.yaml:2:3: policy.colour: unknown setting 'colour'"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("cfg.yaml:4:")
                && e[1].contains("policy.gates.minor: 'sometimes' is not a gate"),
            "{e:?}"
        );
        assert!(e[2].starts_with("cfg.yaml:5:5: policy.gates.majr"), "{e:?}");
        assert!(
            e[3].starts_with("cfg.yaml:6:") && e[3].contains("rollback or freeze"),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_types_name_the_field_once() {
        let e = err_of("policy:\n  gates: 5\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].matches("policy.gates").count(), 1, "{e:?}");
    }

    #[test]
    fn docker_and_registries_sections() {
        let text = "docker:\n  engines:\n    - host: unix:///var/run/docker.sock\n    - name: edge\n      host: tcp://10.0.0.5:2376\n      tls: { ca: ca.pem, cert: cert.pem, key: key.pem }\n  include_stopped: true\nregistries:\n  deny: ['*.evil.example']\n  credentials:\n    - registry: ghcr.io\n      username: bot\n      password_env: GHCR_TOKEN\n  timeout: 10s\n";
        let cfg = load("c.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.docker.engines.len(), 2);
        assert_eq!(cfg.docker.engines[0].name, "local");
        assert!(cfg.docker.engines[1].tls.is_some());
        assert!(cfg.docker.include_stopped);
        assert_eq!(cfg.registries.timeout, std::time::Duration::from_secs(10));
        assert_eq!(
            cfg.registries.credentials[0].password_env.as_deref(),
            Some("GHCR_TOKEN")
        );

        let bad = "docker:\n  engines:\n    - host: /var/run/docker.sock\n    - name: local\n      host: tcp://x:1\nregistries:\n  credentials:\n    - registry: ghcr.io\n      username: bot\n";
        let e = err_of(bad);
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("cfg.yaml:3:") && e[0].contains("docker.engines[0].host"),
            "{e:?}"
        );
        assert!(e[1].contains("used twice"), "{e:?}");
        assert!(e[2].contains("exactly one of password"), "{e:?}");
    }

    #[test]
    fn kubernetes_section_compiles() {
        let text = "kubernetes:\n  enabled: true\n  kubeconfig: /etc/su/kubeconfig\n  contexts: [prod, staging]\n  namespaces:\n    include: ['team-*', apps]\n    exclude: [team-secret]\n  read_only: true\n  kinds: [deploy, HelmRelease]\n  crds: true\n  rollout_timeout: 90s\n  helm: { binary: /opt/helm, timeout: 2m }\n  charts:\n    - chart: demo-*\n      url: https://charts.example.com/\n      username: bot\n      password_env: CHARTS\n    - release: 'prod/*'\n      url: oci://registry.example.com/charts\n";
        let cfg = load("c.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
        let k = &cfg.kubernetes;
        assert!(k.enabled && k.read_only && k.crds && !k.in_cluster);
        assert_eq!(k.kubeconfig.as_deref(), Some("/etc/su/kubeconfig"));
        assert_eq!(k.contexts, ["prod", "staging"]);
        assert_eq!(k.include_namespaces, ["team-*", "apps"]);
        assert_eq!(k.exclude_namespaces, ["team-secret"]);
        assert_eq!(k.kinds, [AssetKind::Deployment, AssetKind::HelmRelease]);
        assert_eq!(k.rollout_timeout, std::time::Duration::from_secs(90));
        assert_eq!(k.helm.binary, "/opt/helm");
        assert_eq!(k.helm.timeout, std::time::Duration::from_secs(120));
        assert_eq!(
            k.charts[0].url, "https://charts.example.com",
            "trailing / dropped"
        );
        assert_eq!(k.charts[0].password, Some(SecretRef::Env("CHARTS".into())));
        assert!(k.charts[0].matches("demo-web", "any", "rel"));
        assert!(!k.charts[0].matches("other", "any", "rel"));
        assert!(k.charts[1].matches("anything", "prod", "web"));
        assert!(!k.charts[1].matches("anything", "dev", "web"));
        assert_eq!(k.charts[1].username, None);

        // The environment overrides like everywhere else.
        let cfg = load(
            "c.yaml",
            "",
            &env(&[
                ("SAFE_UPDATER_KUBERNETES__ENABLED", "true"),
                ("SAFE_UPDATER_KUBERNETES__CONTEXTS", "[a]"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.kubernetes.enabled);
        assert_eq!(cfg.kubernetes.contexts, ["a"]);
    }

    #[test]
    fn kubernetes_problems_are_all_reported_with_lines() {
        let bad = "kubernetes:\n  in_cluster: true\n  kubeconfig: /x\n  contexts: [a, a, '']\n  namespaces: { include: [''] }\n  kinds: [container, Pod]\n  rollout_timeout: soon\n  helm: { binary: '' }\n  charts:\n    - url: ftp://x\n    - url: https://c.example\n      username: bot\n    - url: oci://r.example/c\n      password: p\n  colour: blue\n";
        let e = err_of(bad);
        let has = |line: usize, text: &str| {
            assert!(
                e.iter()
                    .any(|p| p.starts_with(&format!("cfg.yaml:{line}:")) && p.contains(text)),
                "no problem on line {line} containing {text:?}: {e:#?}"
            );
        };
        has(2, "remove kubeconfig");
        has(4, "listed twice");
        has(4, "must not be empty");
        has(5, "kubernetes.namespaces.include[0]: must not be empty");
        has(6, "'container' is not a Kubernetes kind");
        has(6, "'Pod' is not a Kubernetes kind");
        has(7, "not a duration");
        has(8, "kubernetes.helm.binary");
        has(10, "not a chart repository");
        has(11, "exactly one of password");
        has(13, "needs a username");
        has(15, "unknown setting 'colour'");
    }

    #[test]
    fn without_a_kubernetes_section_it_is_off() {
        let cfg = load("c.yaml", "docker:\n  include_stopped: true\n", &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.kubernetes, KubernetesConfig::default());
        assert!(!cfg.kubernetes.enabled);
    }

    #[test]
    fn credentials_never_show_their_password() {
        let text = "registries:\n  credentials:\n    - registry: r.example\n      username: u\n      password: hunter2-secret\n";
        let cfg = load("c.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{cfg:?}").contains("hunter2-secret"));
    }

    #[test]
    fn yaml_syntax_and_duplicate_keys() {
        let e = err_of("policy:\n  gates: [\n");
        assert!(e[0].starts_with("cfg.yaml:"), "{e:?}");
        let e = err_of("policy:\n  min_age: 1h\n  min_age: 2h\n");
        assert!(e[0].contains("duplicate key 'min_age'"), "{e:?}");
    }

    #[test]
    fn environment_overrides_file_values() {
        let cfg = load(
            "c.yaml",
            "policy:\n  gates:\n    minor: review\n",
            &env(&[
                ("SAFE_UPDATER_POLICY__GATES__MINOR", "auto"),
                ("SAFE_UPDATER_NAMESPACES__PROD__MIN_AGE", "2h"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let eff = cfg
            .policy
            .resolve(&view(AssetKind::Deployment, Some("prod"), "w"));
        assert_eq!(eff.gate(GateClass::Minor).value, Gate::Auto);
        assert_eq!(eff.min_age.value, std::time::Duration::from_secs(7200));

        let e = load(
            "c.yaml",
            "",
            &env(&[("SAFE_UPDATER_POLICY__MIN_AGE", "later")]),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "environment variable SAFE_UPDATER_POLICY__MIN_AGE: policy.min_age: 'later' is not a duration; write it like 30m, 48h or 7d"
            )
        );
        let e = load("c.yaml", "", &env(&[("SAFE_UPDATER_POLICY__BOGUS", "1")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("SAFE_UPDATER_POLICY__BOGUS") && e.contains("bogus"),
            "{e}"
        );
    }
}
