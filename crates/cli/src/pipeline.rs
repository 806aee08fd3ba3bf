//! Commands that run the pipeline against real engines and registries: `scan` and `check`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;
use safe_updater_engine::{check, engine_specs, registry_client_config, scan};
use safe_updater_registry::{Cycle, RegistryClient};
use safe_updater_store::Store;

use crate::GlobalArgs;
use crate::context::{env_pairs, load_config, state_path};
use crate::output::{self, OutputFormat, Reported};

/// Who is acting, for the audit trail: the CLI and the login user.
pub fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
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
        let cfg = load_config(global.config.as_deref())?;
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
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Also track stopped containers (default: the config's docker.include_stopped).
    #[arg(long)]
    pub include_stopped: bool,
}

pub fn run_scan(global: &GlobalArgs, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let Session {
        cfg,
        specs: engines,
        path,
        mut store,
        ..
    } = Session::open(global, false)?;
    if global.output == OutputFormat::Table {
        eprintln!("scanning {} engine(s)...", engines.len());
    }
    let now = Timestamp::now();
    let include_stopped = args.include_stopped || cfg.docker.include_stopped;
    let report = runtime()?.block_on(scan(&mut store, &engines, include_stopped, now, &actor()))?;
    match global.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Table => {
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
            println!("stored {} asset(s) in {}", report.assets, path.display());
        }
    }
    // Some engines answered and were stored; the run as a whole is still not a success.
    Ok(if report.failed_engines() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run_check(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, true)?;
    let client = session.registry_client()?;
    let Session { cfg, mut store, .. } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    if global.output == OutputFormat::Table {
        eprintln!("checking tracked assets against their registries...");
    }
    let report = runtime()?.block_on(async {
        let cycle = Cycle::new(client);
        check(&cfg, &mut store, &cycle, now, &actor(), &cid).await
    })?;
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

/// Pull credentials for every registry the tracked containers use.
async fn pull_auth_map(
    client: &RegistryClient,
    store: &Store,
) -> anyhow::Result<std::collections::BTreeMap<String, safe_updater_docker::update::RegistryAuth>> {
    let assets = store.list_assets(&safe_updater_store::AssetFilter::default())?;
    Ok(safe_updater_engine::pull_auths(client, &assets).await)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run one cycle and exit (`safe-updater watch` runs cycles on a schedule).
    #[arg(long, required = true)]
    pub once: bool,
}

pub fn run_cycle(global: &GlobalArgs, _args: &RunArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, false)?;
    let client = session.registry_client()?;
    let Session {
        cfg,
        specs,
        mut store,
        ..
    } = session;
    let now = Timestamp::now();
    let cid = correlation_id(now);
    let table = global.output == OutputFormat::Table;
    if table {
        eprintln!(
            "one cycle: recover, scan, check, apply, verify (health window {})...",
            humantime::format_duration(cfg.health.window)
        );
    }
    let report = runtime()?.block_on(async {
        let auth = pull_auth_map(&client, &store).await?;
        let cycle = Cycle::new(client.clone());
        safe_updater_engine::run_once(&cfg, &mut store, &cycle, &specs, &auth, now, &actor(), &cid)
            .await
            .map_err(anyhow::Error::from)
    })?;
    match global.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Table => {
            for r in &report.recovered {
                println!(
                    "recovered update #{} of {}: {}",
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
                            a.status.clone(),
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
    let bad = report.applied.iter().any(|a| a.status != "succeeded")
        || report.scan.failed_engines() > 0
        || report.check.errors() > 0;
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
}

pub fn run_update(global: &GlobalArgs, args: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(global, true)?;
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
    let rt = runtime()?;
    // The plan: an explicit --to, or what policy allows now.
    let mut plan: Vec<(String, String)> = Vec::new();
    if let (Some(asset), Some(to)) = (&args.asset, &args.to) {
        plan.push((asset.clone(), to.clone()));
    } else {
        let report = rt.block_on(async {
            let cycle = Cycle::new(client.clone());
            check(&cfg, &mut store, &cycle, now, &who, &cid).await
        })?;
        for c in &report.checks {
            if args.asset.as_ref().is_some_and(|a| a != &c.asset_id) {
                continue;
            }
            if let Some(e) = &c.evaluation
                && let Some(t) = &e.act_on
                && e.candidates
                    .iter()
                    .any(|x| &x.tag == t && x.decision.as_str() == "approve")
            {
                plan.push((c.asset_id.clone(), t.clone()));
            }
        }
    }
    if args.dry_run {
        match global.output {
            OutputFormat::Json => output::json(
                &plan
                    .iter()
                    .map(|(a, t)| serde_json::json!({"asset_id": a, "to": t}))
                    .collect::<Vec<_>>(),
            )?,
            OutputFormat::Table if plan.is_empty() => println!("nothing to update"),
            OutputFormat::Table => {
                println!(
                    "{}",
                    output::table(
                        &["ASSET", "TO"],
                        plan.iter()
                            .map(|(a, t)| vec![a.clone(), t.clone()])
                            .collect()
                    )
                );
                println!("(dry run: nothing changed)");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut outcomes = Vec::new();
    for (asset, to) in &plan {
        if args.to.is_some() {
            store.record_approval(&safe_updater_store::Approval {
                asset_id: asset.clone(),
                candidate: to.clone(),
                verdict: safe_updater_store::Verdict::Approved,
                operator: who.clone(),
                reason: Some("update --to".into()),
                at: now,
            })?;
        }
        if global.output == OutputFormat::Table {
            eprintln!(
                "updating {asset} to {to} (verifying for {})...",
                humantime::format_duration(cfg.health.window)
            );
        }
        let outcome = rt.block_on(async {
            let auth = pull_auth_map(&client, &store).await?;
            safe_updater_engine::apply_one(&cfg, &mut store, &specs, asset, to, &auth, &who, &cid)
                .await
                .map_err(anyhow::Error::from)
        })?;
        outcomes.push(outcome);
    }
    print_outcomes(global, &outcomes)?;
    Ok(if outcomes.iter().all(|o| o.status == "succeeded") {
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
                        a.status.clone(),
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
    let client = session.registry_client()?;
    let Session {
        cfg,
        specs,
        mut store,
        ..
    } = session;
    let target = match &args.to {
        Some(t) => t.clone(),
        None => safe_updater_engine::previous_version(&store, &args.asset)?.ok_or_else(|| {
            Reported(format!(
                "{} has no successful update to roll back; give the version with --to",
                args.asset
            ))
        })?,
    };
    let now = Timestamp::now();
    let cid = correlation_id(now);
    let who = actor();
    if global.output == OutputFormat::Table {
        eprintln!("rolling {} back to {target}...", args.asset);
    }
    let outcome = runtime()?.block_on(async {
        let auth = pull_auth_map(&client, &store).await?;
        safe_updater_engine::apply_one(
            &cfg,
            &mut store,
            &specs,
            &args.asset,
            &target,
            &auth,
            &who,
            &cid,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    let ok = outcome.status == "succeeded";
    print_outcomes(global, std::slice::from_ref(&outcome))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
