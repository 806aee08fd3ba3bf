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

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Also track stopped containers (default: the config's docker.include_stopped).
    #[arg(long)]
    pub include_stopped: bool,
}

pub fn run_scan(global: &GlobalArgs, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(global.config.as_deref())?;
    let env = env_pairs();
    let engines = engine_specs(&cfg.docker, &env).map_err(|e| Reported(e.to_string()))?;
    let path = state_path(global, &cfg);
    let mut store = Store::open(&path)
        .with_context(|| format!("cannot open the state database {}", path.display()))?;
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
    let cfg = load_config(global.config.as_deref())?;
    let env = env_pairs();
    let path = state_path(global, &cfg);
    if !path.exists() {
        return Err(Reported(format!(
            "no state database at {}; run `safe-updater scan` first, or point --state at an existing file",
            path.display()
        ))
        .into());
    }
    let mut store = Store::open(&path)
        .with_context(|| format!("cannot open the state database {}", path.display()))?;
    let client_cfg =
        registry_client_config(&cfg.registries, &env).map_err(|e| Reported(e.to_string()))?;
    let client = RegistryClient::new(client_cfg).context("cannot set up the registry client")?;
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
