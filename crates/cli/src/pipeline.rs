//! Commands that run the pipeline against real engines, clusters and registries: `scan`,
//! `check`, `update`, `rollback` and `run`. Docker and Kubernetes go through the same commands;
//! `--kind`, `--namespace` and `--context` narrow both and override the configuration.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::policy::AssetView;
use safe_updater_core::scope::Selection;
use safe_updater_engine::kube_apply::is_kube_asset_id;
use safe_updater_engine::{
    ApplyStatus, KubeOverrides, KubeSession, engine_specs, registry_client_config, scan,
};
use safe_updater_registry::{Cycle, RegistryClient};
use safe_updater_store::Store;

use crate::GlobalArgs;
use crate::context::{env_pairs, load_config, state_path};
use crate::output::{self, OutputFormat, Reported};

/// Who is acting, for the audit trail: the CLI and the login user (`SUDO_USER`, `USER`,
/// `LOGNAME`, else the name of this process's user id in /etc/passwd, else `uid:N`).
pub fn actor() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .or_else(os_user)
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// The name of this process's real user id (a cron job or a container has no `USER`).
fn os_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid).then(|| name.to_owned())
        })
    });
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

/// An id that ties together every record one command writes.
pub fn correlation_id(now: Timestamp) -> String {
    format!("{:x}-{:x}", now.as_nanosecond(), std::process::id())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What every pipeline command starts from: the configuration, the environment, the engines
/// and the state database.
struct Session {
    cfg: safe_updater_core::config::Config,
    env: Vec<(String, String)>,
    specs: Vec<safe_updater_docker::EngineSpec>,
    path: std::path::PathBuf,
    store: Store,
}

impl Session {
    /// `existing`: the state database must already exist (commands that read what `scan` stored).
    fn open(global: &GlobalArgs, existing: bool) -> anyhow::Result<Session> {
        let cfg = load_config(global)?;
        let env = env_pairs();
        let specs = engine_specs(&cfg.docker, &env).map_err(|e| Reported(e.to_string()))?;
        let path = state_path(global, &cfg);
        if existing && !path.exists() {
            return Err(Reported(format!(
                "no state database at {}; run `safe-updater scan` first, or point --state at an existing file",
                path.display()
            ))
            .into());
        }
        let store = Store::open(&path)
            .with_context(|| format!("cannot open the state database {}", path.display()))?;
        Ok(Session {
            cfg,
            env,
            specs,
            path,
            store,
        })
    }

    fn registry_client(&self) -> anyhow::Result<RegistryClient> {
        let client_cfg = registry_client_config(&self.cfg.registries, &self.env)
            .map_err(|e| Reported(e.to_string()))?;
        RegistryClient::new(client_cfg).context("cannot set up the registry client")
    }

    /// The Kubernetes session, when the configuration enables it or the flags ask for it
    /// (`force_contexts`: contexts an explicitly named asset lives in).
    fn kube(
        &self,
        rt: &tokio::runtime::Runtime,
        args: &KubeArgs,
        force_contexts: &[String],
    ) -> anyhow::Result<Option<KubeSession>> {
        let mut over = args.overrides();
        if !force_contexts.is_empty() {
            if over.contexts.is_empty() && !self.cfg.kubernetes.contexts.is_empty() {
                over.contexts = self.cfg.kubernetes.contexts.clone();
            }
            for c in force_contexts {
                if !over.contexts.contains(c) {
                    over.contexts.push(c.clone());
                }
            }
        } else if !KubeSession::wanted(&self.cfg, &over) {
            return Ok(None);
        }
        let registry = registry_client_config(&self.cfg.registries, &self.env)
            .map_err(|e| Reported(e.to_string()))?;
        let session = rt
            .block_on(KubeSession::connect(&self.cfg, &over, registry, &self.env))
            .map_err(|e| Reported(e.to_string()))?;
        Ok(Some(session))
    }
}

fn parse_kind(s: &str) -> Result<AssetKind, String> {
    AssetKind::parse(s).ok_or_else(|| {
        format!(
            "'{s}' is not a kind; use one of {}",
            AssetKind::ALL.map(AssetKind::as_str).join(", ")
        )
    })
}

/// `--kind`, `--namespace`, `--context`: narrow a command to some assets, Docker or Kubernetes.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// Only these kinds: container, Deployment, StatefulSet, DaemonSet, Job, CronJob,
    /// HelmRelease (repeat, or separate with commas). A Kubernetes kind turns Kubernetes on for
    /// this run; without `container`, Docker is left out.
    #[arg(long = "kind", value_name = "KIND", value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<AssetKind>,
    /// Only these namespaces (Kubernetes) or compose projects (Docker); globs like `team-*`
    /// work. Overrides kubernetes.namespaces.include.
    #[arg(long = "namespace", value_name = "NS", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Kubernetes contexts of the kubeconfig to work on (repeat for several); overrides
    /// kubernetes.contexts and turns Kubernetes on for this run. Docker is left out unless
    /// `--kind container` is given too.
    #[arg(long = "context", value_name = "NAME")]
    pub contexts: Vec<String>,
}

impl KubeArgs {
    fn overrides(&self) -> KubeOverrides {
        KubeOverrides {
            contexts: self.contexts.clone(),
            namespaces: self.namespaces.clone(),
            kinds: self.kinds.clone(),
        }
    }

    /// Whether Docker engines are part of this run.
    fn docker(&self) -> bool {
        if self.kinds.is_empty() {
            self.contexts.is_empty()
        } else {
            self.kinds.contains(&AssetKind::Container)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.namespaces.is_empty() && self.contexts.is_empty()
    }

    /// Whether the asset of a history record is selected: by the stored asset, or (when it is
    /// gone) by what its id says (`k8s/<context>/<namespace>/<Kind>/<name>…`, `docker/…`).
    pub fn selects_id(&self, id: &str, stored: Option<&Asset>) -> bool {
        if let Some(a) = stored {
            return self.selects(a);
        }
        let parts: Vec<&str> = id.split('/').collect();
        let (kind, location, namespace) = match parts.as_slice() {
            ["k8s", ctx, ns, kind, ..] => (AssetKind::parse(kind), *ctx, Some(*ns)),
            ["docker", engine, ..] => (Some(AssetKind::Container), *engine, None),
            _ => (None, "", None),
        };
        let Some(kind) = kind else { return false };
        let probe = Asset {
            id: id.to_owned(),
            kind,
            location: location.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: String::new(),
            container: None,
            image: String::new(),
            digest: None,
            labels: Default::default(),
            annotations: Default::default(),
            first_seen: Timestamp::UNIX_EPOCH,
            last_seen: Timestamp::UNIX_EPOCH,
            extra: serde_json::Value::Null,
        };
        self.selects(&probe)
    }

    /// Whether an asset is among those the flags select.
    fn selects(&self, a: &Asset) -> bool {
        use safe_updater_registry::address::glob_match;
        (self.kinds.is_empty() || self.kinds.contains(&a.kind))
            && (self.namespaces.is_empty()
                || self
                    .namespaces
                    .iter()
                    .any(|n| glob_match(n, a.namespace.as_deref().unwrap_or(""))))
            && (self.contexts.is_empty()
                || a.kind == AssetKind::Container
                || self.contexts.contains(&a.location))
            && (a.kind != AssetKind::Container || self.docker())
    }
}

/// `--name`, `--label`: narrow a command to some assets of this instance's scope.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectArgs {
    /// Only assets with this name (a glob: `web-*`; repeat, or separate with commas): the
    /// container name, or the workload or release name.
    #[arg(long = "name", value_name = "GLOB", value_delimiter = ',')]
    pub names: Vec<String>,
    /// Only assets with this label (or annotation): `key=value`, `key!=value`, `key` (set),
    /// `!key` (not set). Repeat for several; all must match.
    #[arg(long = "label", value_name = "SELECTOR")]
    pub labels: Vec<String>,
}

impl SelectArgs {
    /// The configured scope, narrowed by these flags.
    fn selection(&self, cfg: &safe_updater_core::config::Config) -> anyhow::Result<Selection> {
        Selection::new(cfg.scope.clone(), &self.names, &self.labels).map_err(|e| Reported(e).into())
    }
}

/// The contexts of the Kubernetes assets among `ids` (as stored).
fn contexts_of(store: &Store, ids: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for id in ids.iter().filter(|i| is_kube_asset_id(i)) {
        if let Some(a) = store.get_asset(id)?
            && !out.contains(&a.location)
        {
            out.push(a.location);
        }
    }
    Ok(out)
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Also track stopped containers (default: the config's docker.include_stopped).
    #[arg(long)]
    pub include_stopped: bool,
    #[command(flatten)]
    pub filter: KubeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `scan --output json`: Docker's report as before, with `kubernetes` beside it when
/// Kubernetes was scanned.
#[derive(serde::Serialize)]
struct ScanOutput {
    #[serde(flatten)]
    docker: safe_updater_engine::ScanReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<safe_updater_engine::kube::KubeScanReport>,
}

pub fn run_scan(global: &GlobalArgs, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, false)?;
    let rt = runtime()?;
    let kube = session.kube(&rt, &args.filter, &[])?;
    let Session {
        cfg,
        specs: engines,
        path,
        mut store,
        ..
    } = session;
    let docker = args.filter.docker();
    let table = global.output == OutputFormat::Table;
    if table {
        match (&kube, docker) {
            (Some(k), true) => eprintln!(
                "scanning {} engine(s) and Kubernetes context(s) {}...",
                engines.len(),
                k.contexts().join(", ")
            ),
            (Some(k), false) => eprintln!(
                "scanning Kubernetes context(s) {}...",
                k.contexts().join(", ")
            ),
            (None, _) => eprintln!("scanning {} engine(s)...", engines.len()),
        }
    }
    let now = Timestamp::now();
    let include_stopped = args.include_stopped || cfg.docker.include_stopped;
    let selection = args.select.selection(&cfg)?;
    let report = if docker {
        rt.block_on(scan(
            &mut store,
            &engines,
            include_stopped,
            &selection,
            now,
            &actor(),
        ))?
    } else {
        safe_updater_engine::ScanReport {
            engines: Vec::new(),
            assets: 0,
            removed: Vec::new(),
        }
    };
    let kube_report = match &kube {
        Some(k) => Some(rt.block_on(safe_updater_engine::kube::scan_session(
            &mut store,
            k,
            &selection,
            now,
            &actor(),
        ))?),
        None => None,
    };
    let failed_contexts = kube_report.as_ref().map_or(0, |r| {
        r.contexts.iter().filter(|c| c.error.is_some()).count()
    });
    let failed = report.failed_engines() + failed_contexts;
    match global.output {
        OutputFormat::Json => output::json(&ScanOutput {
            docker: report,
            kubernetes: kube_report,
        })?,
        OutputFormat::Table => {
            if docker {
                let rows = report
                    .engines
                    .iter()
                    .map(|e| {
                        vec![
                            e.engine.clone(),
                            e.host.clone(),
                            e.containers.map_or_else(|| "-".into(), |n| n.to_string()),
                            e.error.clone().unwrap_or_else(|| "ok".into()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["ENGINE", "HOST", "CONTAINERS", "STATUS"], rows)
                );
            }
            let mut stored = report.assets;
            if let Some(k) = &kube_report {
                let rows = k
                    .contexts
                    .iter()
                    .map(|c| {
                        vec![
                            c.context.clone(),
                            c.assets.map_or_else(|| "-".into(), |n| n.to_string()),
                            c.releases.to_string(),
                            c.error.clone().unwrap_or_else(|| "ok".into()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["CONTEXT", "ASSETS", "RELEASES", "STATUS"], rows)
                );
                for c in &k.contexts {
                    for w in &c.warnings {
                        eprintln!("warning: {}: {w}", c.context);
                    }
                }
                stored += k.assets;
            }
            println!("stored {stored} asset(s) in {}", path.display());
        }
    }
    // Some engines or contexts answered and were stored; the run as a whole is still not a
    // success.
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub filter: KubeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Docker's check and (when in this run) Kubernetes', as one report.
#[allow(clippy::too_many_arguments)]
fn check_all(
    rt: &tokio::runtime::Runtime,
    cfg: &safe_updater_core::config::Config,
    store: &mut Store,
    client: &RegistryClient,
    kube: Option<&KubeSession>,
    filter: &KubeArgs,
    selection: &Selection,
    now: Timestamp,
    cid: &str,
) -> anyhow::Result<safe_updater_engine::CheckReport> {
    let who = actor();
    let wanted = |a: &Asset| filter.selects(a) && selection.selects(&AssetView::from(a));
    let docker = rt.block_on(async {
        let cycle = Cycle::with_budget(client.clone(), cfg.registries.cycle_timeout);
        safe_updater_engine::check_some(cfg, store, &cycle, now, &who, cid, &wanted).await
    })?;
    Ok(match kube {
        Some(k) => {
            let kr = rt.block_on(safe_updater_engine::check_kube(
                cfg, store, k, now, &who, cid, &wanted,
            ))?;
            safe_updater_engine::kube_check::merge_reports(docker, kr)
        }
        None => docker,
    })
}

pub fn run_check(global: &GlobalArgs, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, true)?;
    let client = session.registry_client()?;
    let rt = runtime()?;
    let kube = session.kube(&rt, &args.filter, &[])?;
    let Session { cfg, mut store, .. } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    if global.output == OutputFormat::Table {
        eprintln!("checking tracked assets against their registries...");
    }
    let selection = args.select.selection(&cfg)?;
    let report = check_all(
        &rt,
        &cfg,
        &mut store,
        &client,
        kube.as_ref(),
        &args.filter,
        &selection,
        now,
        &cid,
    )?;
    match global.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Table => {
            let mut rows = Vec::new();
            for c in &report.checks {
                match (&c.evaluation, &c.error) {
                    (_, Some(err)) => rows.push(vec![
                        c.asset_id.clone(),
                        c.image.clone(),
                        "-".into(),
                        "-".into(),
                        "error".into(),
                        "-".into(),
                        err.clone(),
                    ]),
                    (Some(e), None) if e.candidates.is_empty() => {
                        let note = e
                            .notes
                            .first()
                            .cloned()
                            .unwrap_or_else(|| "up to date".into());
                        rows.push(vec![
                            c.asset_id.clone(),
                            e.current.clone(),
                            "-".into(),
                            "-".into(),
                            "none".into(),
                            "-".into(),
                            note,
                        ]);
                    }
                    (Some(e), None) => {
                        for cand in &e.candidates {
                            let marker = if e.act_on.as_deref() == Some(cand.tag.as_str())
                                && cand.decision.as_str() == "approve"
                            {
                                " *"
                            } else {
                                ""
                            };
                            rows.push(vec![
                                c.asset_id.clone(),
                                e.current.clone(),
                                format!("{}{marker}", cand.tag),
                                cand.change.clone(),
                                cand.decision.as_str().to_owned(),
                                cand.rule.clone(),
                                cand.reason.clone(),
                            ]);
                        }
                    }
                    (None, None) => {}
                }
            }
            if rows.is_empty() {
                println!("no assets tracked; run `safe-updater scan` first");
            } else {
                println!(
                    "{}",
                    output::table(
                        &[
                            "ASSET",
                            "CURRENT",
                            "CANDIDATE",
                            "CHANGE",
                            "DECISION",
                            "RULE",
                            "REASON"
                        ],
                        rows
                    )
                );
                println!("* = what `run --once` would apply now");
            }
            let r = &report.requests;
            eprintln!(
                "registry requests: {} tag page(s), {} HEAD, {} manifest GET, {} blob GET, {} token(s), {} retr(ies)",
                r.tags_page, r.head_manifest, r.get_manifest, r.get_blob, r.token, r.retries
            );
        }
    }
    Ok(if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends the notifications `watch` would for these outcomes and recoveries (applied, rolled
/// back, failed, not recovered) to `notifications.urls`, and waits (at most 10 s) for them to
/// go out. A channel that cannot be set up or reached is a warning, never the command's
/// failure.
fn announce(
    rt: &tokio::runtime::Runtime,
    cfg: &safe_updater_core::config::Config,
    store: &Store,
    outcomes: &[safe_updater_engine::ApplyOutcome],
    recovered: &[safe_updater_engine::Recovery],
    cid: &str,
) {
    if cfg.notifications.urls.is_empty() {
        return;
    }
    let _inside = rt.enter();
    let notifier = match safe_updater_notify::Notifier::from_urls(
        &cfg.notifications.urls,
        safe_updater_notify::NotifyOptions {
            approve_base_url: cfg.notifications.approve_base_url.clone(),
            timeout: cfg.notifications.timeout,
            attempts: cfg.notifications.attempts,
            ..safe_updater_notify::NotifyOptions::default()
        },
    ) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: notifications not sent: {e}");
            return;
        }
    };
    let mut sent = 0;
    for o in outcomes {
        let Ok(Some(asset)) = store.get_asset(&o.asset_id) else {
            continue;
        };
        let tag = safe_updater_core::reference::ImageRef::parse(&o.to)
            .ok()
            .and_then(|r| r.tag().map(str::to_owned))
            .unwrap_or_else(|| o.to.clone());
        if let Some(event) = safe_updater_daemon::outcome_event(&asset, &tag, o, cid) {
            notifier.notify(event);
            sent += 1;
        }
    }
    for r in recovered.iter().filter(|r| r.failed()) {
        let asset = store.get_asset(&r.asset_id).ok().flatten();
        notifier.notify(safe_updater_daemon::unrecovered_event(r, asset.as_ref()));
        sent += 1;
    }
    if sent == 0 {
        return;
    }
    let report = rt.block_on(notifier.flush(std::time::Duration::from_secs(10)));
    if report.pending > 0 {
        eprintln!(
            "warning: {} notification(s) still unsent after 10 s",
            report.pending
        );
    }
}

/// Pull credentials for every registry the tracked containers use.
async fn pull_auth_map(
    client: &RegistryClient,
    store: &Store,
) -> anyhow::Result<std::collections::BTreeMap<String, safe_updater_docker::update::RegistryAuth>> {
    let assets = store.list_assets(&safe_updater_store::AssetFilter::default())?;
    Ok(safe_updater_engine::pull_auths(client, &assets).await)
}

/// `run --output json`: Docker's report as before, with `kubernetes` beside it when enabled.
#[derive(serde::Serialize)]
struct RunOutput<'a> {
    #[serde(flatten)]
    docker: &'a safe_updater_engine::RunReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<&'a safe_updater_engine::KubeRunReport>,
}

/// `run` follows the configuration only: Kubernetes when `kubernetes.enabled`.
fn session_kube_for_run(
    rt: &tokio::runtime::Runtime,
    cfg: &safe_updater_core::config::Config,
    env: &[(String, String)],
) -> anyhow::Result<Option<KubeSession>> {
    if !cfg.kubernetes.enabled {
        return Ok(None);
    }
    let registry =
        registry_client_config(&cfg.registries, env).map_err(|e| Reported(e.to_string()))?;
    Ok(Some(
        rt.block_on(KubeSession::connect(
            cfg,
            &KubeOverrides::default(),
            registry,
            env,
        ))
        .map_err(|e| Reported(e.to_string()))?,
    ))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run one cycle and exit (`safe-updater watch` runs cycles on a schedule).
    #[arg(long, required = true)]
    pub once: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run_cycle(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, false)?;
    let client = session.registry_client()?;
    let Session {
        cfg,
        specs,
        mut store,
        env,
        ..
    } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    let table = global.output == OutputFormat::Table;
    let selection = args.select.selection(&cfg)?;
    if table {
        eprintln!(
            "one cycle: recover, scan, check, apply, verify (health window {})...",
            humantime::format_duration(cfg.health.window)
        );
    }
    let rt = runtime()?;
    let stop = crate::signals::stop_on_signals(&rt);
    let kube = session_kube_for_run(&rt, &cfg, &env)?;
    let (progress, line) = crate::progress::health_window(table);
    let report = rt.block_on(async {
        let auth = pull_auth_map(&client, &store).await?;
        let cycle = Cycle::with_budget(client.clone(), cfg.registries.cycle_timeout);
        safe_updater_engine::run_once(
            &cfg,
            &mut store,
            &cycle,
            &specs,
            &auth,
            now,
            &actor(),
            &cid,
            &selection,
            &stop,
            &progress,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    line.finish();
    let kube_report = match &kube {
        Some(_) if stop.requested() => None,
        Some(k) => Some(rt.block_on(safe_updater_engine::run_kube_once(
            &cfg,
            &mut store,
            k,
            now,
            &actor(),
            &cid,
            &stop,
        ))?),
        None => None,
    };
    match global.output {
        OutputFormat::Json => output::json(&RunOutput {
            docker: &report,
            kubernetes: kube_report.as_ref(),
        })?,
        OutputFormat::Table => {
            let mut report = report.clone();
            if let Some(k) = &kube_report {
                report.recovered.extend(k.recovered.iter().cloned());
                report.check.checks.extend(k.check.checks.iter().cloned());
                report.applied.extend(k.applied.iter().cloned());
            }
            for r in &report.recovered {
                let what = if r.held_by.is_some() {
                    "left alone"
                } else if r.restored {
                    "recovered"
                } else {
                    "COULD NOT RECOVER"
                };
                println!(
                    "{what} update #{} of {}: {}",
                    r.update_id, r.asset_id, r.detail
                );
            }
            let held = report
                .check
                .checks
                .iter()
                .filter_map(|c| c.evaluation.as_ref().map(|e| (c, e)))
                .flat_map(|(c, e)| {
                    e.candidates
                        .iter()
                        .filter(|x| {
                            matches!(
                                x.decision.as_str(),
                                "pending_review" | "manual_approval" | "defer"
                            )
                        })
                        .map(move |x| {
                            vec![
                                c.asset_id.clone(),
                                e.current.clone(),
                                x.tag.clone(),
                                x.decision.as_str().to_owned(),
                                x.reason.clone(),
                            ]
                        })
                })
                .collect::<Vec<_>>();
            if report.applied.is_empty() {
                println!("nothing to apply");
            } else {
                let rows = report
                    .applied
                    .iter()
                    .map(|a| {
                        vec![
                            a.asset_id.clone(),
                            a.from.clone(),
                            a.to.clone(),
                            a.status.to_string(),
                            a.detail.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["ASSET", "FROM", "TO", "RESULT", "DETAIL"], rows)
                );
            }
            if !held.is_empty() {
                println!("\nheld back:");
                println!(
                    "{}",
                    output::table(
                        &["ASSET", "CURRENT", "CANDIDATE", "DECISION", "REASON"],
                        held
                    )
                );
            }
        }
    }
    let mut all_applied = report.applied.clone();
    let mut all_recovered = report.recovered.clone();
    if let Some(k) = &kube_report {
        all_applied.extend(k.applied.iter().cloned());
        all_recovered.extend(k.recovered.iter().cloned());
    }
    announce(&rt, &cfg, &store, &all_applied, &all_recovered, &cid);
    // An asset another process is updating is that process's: not a failure of this run. An
    // interrupted update nobody could bring back is (its service may be down).
    let failed =
        |a: &safe_updater_engine::ApplyOutcome| !(a.status.done() || a.status == ApplyStatus::Busy);
    let bad = report.applied.iter().any(failed)
        || report.recovered.iter().any(|r| r.failed())
        || report.scan.failed_engines() > 0
        || report.check.errors() > 0
        || kube_report.as_ref().is_some_and(|k| {
            k.applied.iter().any(failed)
                || k.recovered.iter().any(|r| r.failed())
                || k.check.errors() > 0
                || k.scan.contexts.iter().any(|c| c.error.is_some())
        });
    if let Some(code) = crate::signals::exit_code() {
        if table {
            eprintln!("stopped by a signal: the results above are what was done");
        }
        return Ok(ExitCode::from(code));
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The asset to update (see `list-assets`); all tracked assets when omitted.
    pub asset: Option<String>,
    /// Move to this tag: an operator's explicit choice, recorded as an approval.
    #[arg(long, requires = "asset")]
    pub to: Option<String>,
    /// Show what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: KubeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run_update(global: &GlobalArgs, args: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, true)?;
    let client = session.registry_client()?;
    let rt = runtime()?;
    let stop = crate::signals::stop_on_signals(&rt);
    let (progress, line) = crate::progress::health_window(global.output == OutputFormat::Table);
    // An asset named on the command line must exist; the error names what was meant.
    if let Some(a) = &args.asset {
        safe_updater_engine::operator::tracked_asset(&session.store, a)
            .map_err(|e| Reported(e.to_string()))?;
    }
    // A Kubernetes asset named on the command line brings its own context.
    let named: Vec<&str> = args.asset.iter().map(String::as_str).collect();
    let force = contexts_of(&session.store, &named)?;
    let kube = session.kube(&rt, &args.filter, &force)?;
    let Session {
        cfg,
        specs,
        mut store,
        ..
    } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    let who = actor();
    // The plan: an explicit --to, or what policy allows now (with the candidate that allows
    // it).
    let mut plan: Vec<(String, String)> = Vec::new();
    let mut chosen: Vec<Option<safe_updater_core::decide::Candidate>> = Vec::new();
    if let (Some(asset), Some(to)) = (&args.asset, &args.to) {
        plan.push((asset.clone(), to.clone()));
        chosen.push(None);
    } else {
        let selection = args.select.selection(&cfg)?;
        let report = check_all(
            &rt,
            &cfg,
            &mut store,
            &client,
            kube.as_ref(),
            &args.filter,
            &selection,
            now,
            &cid,
        )?;
        for c in &report.checks {
            if args.asset.as_ref().is_some_and(|a| a != &c.asset_id) {
                continue;
            }
            // A Job's pod template is immutable: it is reported, never updated.
            let job = args.asset.is_none()
                && store
                    .get_asset(&c.asset_id)?
                    .is_some_and(|a| a.kind == AssetKind::Job);
            if let Some(e) = &c.evaluation
                && let Some(t) = &e.act_on
                && !job
                && let Some(cand) = e
                    .candidates
                    .iter()
                    .find(|x| &x.tag == t && x.decision.as_str() == "approve")
            {
                plan.push((c.asset_id.clone(), t.clone()));
                chosen.push(Some(cand.clone()));
            }
        }
    }
    if args.dry_run {
        let mut planned = Vec::new();
        for ((asset_id, to), cand) in plan.iter().zip(&chosen) {
            if let Some(asset) = store.get_asset(asset_id)? {
                planned.push(safe_updater_engine::plan_update(
                    &cfg,
                    &asset,
                    to,
                    cand.as_ref(),
                ));
            }
        }
        match global.output {
            OutputFormat::Json => output::json(&planned)?,
            OutputFormat::Table if planned.is_empty() => println!("nothing to update"),
            OutputFormat::Table => {
                let rows = planned
                    .iter()
                    .map(|p| {
                        vec![
                            p.asset_id.clone(),
                            p.from.clone(),
                            p.to.clone(),
                            p.change.clone().unwrap_or_else(|| "-".into()),
                            p.rule.clone(),
                            p.checks.join(", "),
                            if p.hooks.is_empty() {
                                "-".into()
                            } else {
                                p.hooks.join(", ")
                            },
                            p.refused
                                .clone()
                                .map_or_else(|| p.on_failure.clone(), |r| format!("REFUSED: {r}")),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &[
                            "ASSET",
                            "FROM",
                            "TO",
                            "CHANGE",
                            "RULE",
                            "VERIFIED BY",
                            "HOOKS",
                            "ON FAILURE"
                        ],
                        rows
                    )
                );
                println!("(dry run: nothing changed)");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Updates a crash interrupted are put back first, as Docker's are before each update.
    if let Some(k) = &kube
        && plan.iter().any(|(a, _)| is_kube_asset_id(a))
    {
        for r in rt.block_on(safe_updater_engine::recover_kube(&cfg, &mut store, k, &who))? {
            if global.output == OutputFormat::Table {
                eprintln!(
                    "recovered update #{} of {}: {}",
                    r.update_id, r.asset_id, r.detail
                );
            }
            tracing::info!(update = r.update_id, asset = %r.asset_id, restored = r.restored, detail = %r.detail, "interrupted update");
        }
    }
    let mut outcomes = Vec::new();
    for (asset, to) in &plan {
        if stop.requested() {
            break;
        }
        if args.to.is_some() {
            store.record_approval(&safe_updater_store::Approval {
                asset_id: asset.clone(),
                candidate: to.clone(),
                verdict: safe_updater_store::Verdict::Approved,
                operator: who.clone(),
                reason: Some("update --to".into()),
                at: now,
                origin: safe_updater_store::ApprovalOrigin::Update,
            })?;
        }
        if global.output == OutputFormat::Table {
            eprintln!(
                "updating {asset} to {to} (verifying for {})...",
                humantime::format_duration(cfg.health.window)
            );
        }
        let outcome = match (&kube, is_kube_asset_id(asset)) {
            (Some(k), true) => rt.block_on(async {
                match store.get_asset(asset)? {
                    Some(a) => safe_updater_engine::apply_kube(
                        &cfg, &mut store, k, &a, to, &who, &cid, &stop,
                    )
                    .await
                    .map_err(anyhow::Error::from),
                    None => Err(Reported(format!(
                        "no tracked asset {asset}; see `safe-updater list-assets`"
                    ))
                    .into()),
                }
            })?,
            _ => rt.block_on(async {
                let auth = pull_auth_map(&client, &store).await?;
                safe_updater_engine::apply_one(
                    &cfg, &mut store, &specs, asset, to, &auth, &who, &cid, &stop, &progress,
                )
                .await
                .map_err(anyhow::Error::from)
            })?,
        };
        line.finish();
        outcomes.push(outcome);
    }
    print_outcomes(global, &outcomes)?;
    announce(&rt, &cfg, &store, &outcomes, &[], &cid);
    if let Some(code) = crate::signals::exit_code() {
        return Ok(ExitCode::from(code));
    }
    Ok(if outcomes.iter().all(|o| o.status.done()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_outcomes(
    global: &GlobalArgs,
    outcomes: &[safe_updater_engine::ApplyOutcome],
) -> anyhow::Result<()> {
    match global.output {
        OutputFormat::Json => output::json(&outcomes)?,
        OutputFormat::Table if outcomes.is_empty() => println!("nothing to update"),
        OutputFormat::Table => {
            let rows = outcomes
                .iter()
                .map(|a| {
                    vec![
                        a.asset_id.clone(),
                        a.from.clone(),
                        a.to.clone(),
                        a.status.to_string(),
                        a.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["ASSET", "FROM", "TO", "RESULT", "DETAIL"], rows)
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The asset to roll back (see `list-assets`).
    pub asset: String,
    /// Go to this tag instead of the version the last successful update replaced.
    #[arg(long)]
    pub to: Option<String>,
}

pub fn run_rollback(global: &GlobalArgs, args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, true)?;
    safe_updater_engine::operator::tracked_asset(&session.store, &args.asset)
        .map_err(|e| Reported(e.to_string()))?;
    if is_kube_asset_id(&args.asset) {
        return rollback_kube(global, args, session);
    }
    let client = session.registry_client()?;
    let Session {
        cfg,
        specs,
        mut store,
        ..
    } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    let who = actor();
    let table = global.output == OutputFormat::Table;
    if table {
        say_rolling_back(args);
    }
    let rt = runtime()?;
    let stop = crate::signals::stop_on_signals(&rt);
    let (progress, line) = crate::progress::health_window(table);
    let report = rt.block_on(async {
        let auth = pull_auth_map(&client, &store).await?;
        safe_updater_engine::rollback(
            &cfg,
            &mut store,
            &specs,
            &args.asset,
            args.to.as_deref(),
            &auth,
            &who,
            &cid,
            &stop,
            &progress,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    line.finish();
    match global.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Table => {
            for r in &report.recovered {
                let what = match (&r.held_by, r.restored) {
                    (Some(_), _) => "left alone",
                    (None, true) => "recovered the interrupted",
                    (None, false) => "COULD NOT RECOVER",
                };
                println!(
                    "{what} update #{} of {}: {}",
                    r.update_id, r.asset_id, r.detail
                );
            }
            if let Some(o) = &report.outcome {
                print_outcomes(global, std::slice::from_ref(o))?;
            }
            for v in &report.rejected {
                println!(
                    "{v} is now rejected for {} by {who}: no cycle applies it again until `safe-updater approve {}`",
                    args.asset,
                    safe_updater_engine::operator::approval_id(&args.asset, v)
                );
            }
        }
    }
    announce(
        &rt,
        &cfg,
        &store,
        report.outcome.as_slice(),
        &report.recovered,
        &cid,
    );
    if let Some(code) = crate::signals::exit_code() {
        return Ok(ExitCode::from(code));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn say_rolling_back(args: &RollbackArgs) {
    eprintln!(
        "rolling {} back{}...",
        args.asset,
        args.to
            .as_deref()
            .map(|t| format!(" to {t}"))
            .unwrap_or_default()
    );
}

/// `rollback` of a Kubernetes asset: the previous image, or `helm rollback` for a release.
fn rollback_kube(
    global: &GlobalArgs,
    args: &RollbackArgs,
    session: Session,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let stop = crate::signals::stop_on_signals(&rt);
    let force = contexts_of(&session.store, &[args.asset.as_str()])?;
    if force.is_empty() {
        return Err(Reported(format!(
            "no tracked asset {}; see `safe-updater list-assets`",
            args.asset
        ))
        .into());
    }
    let kube = session
        .kube(&rt, &KubeArgs::default(), &force)?
        .ok_or_else(|| Reported("Kubernetes is not configured".into()))?;
    let Session { cfg, mut store, .. } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    if global.output == OutputFormat::Table {
        say_rolling_back(args);
    }
    for r in rt.block_on(safe_updater_engine::recover_kube(
        &cfg,
        &mut store,
        &kube,
        &actor(),
    ))? {
        tracing::info!(update = r.update_id, asset = %r.asset_id, restored = r.restored, detail = %r.detail, "interrupted update");
    }
    let outcome = rt.block_on(safe_updater_engine::rollback_kube(
        &cfg,
        &mut store,
        &kube,
        &args.asset,
        args.to.as_deref(),
        &actor(),
        &cid,
        &stop,
    ))?;
    let ok = outcome.status == ApplyStatus::Succeeded;
    print_outcomes(global, std::slice::from_ref(&outcome))?;
    announce(&rt, &cfg, &store, std::slice::from_ref(&outcome), &[], &cid);
    if let Some(code) = crate::signals::exit_code() {
        return Ok(ExitCode::from(code));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
