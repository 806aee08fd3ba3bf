//! Operator commands: the approval queue (`approvals`, `approve`, `reject`, `skip`), per-asset
//! overrides (`snooze`, `unsnooze`, `pin`, `unpin`), and the daemon's work queue (`queue`).
//!
//! Each command parses, opens the state, calls `safe_updater_engine::operator` and prints. What
//! an operator may do, and every check on the input, lives there (the daemon's REST API calls the
//! same functions); this file only adds what to do next to the error messages.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;
use safe_updater_engine::operator::{self, OperatorError};
use safe_updater_store::{AssetOverrides, Store};
use serde_json::json;

use crate::GlobalArgs;
use crate::context::{load_config, state_path};
use crate::output::{self, OutputFormat, Reported};
use crate::pipeline::actor;

/// What the next step is once something is approved, in words.
const APPLIED_BY: &str =
    "the next `safe-updater run --once` (or daemon cycle) applies it inside its update window";

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The approval id, `<asset id>@<candidate>` as `safe-updater approvals` lists it.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The approval id, `<asset id>@<candidate>` as `safe-updater approvals` lists it.
    pub id: String,
    /// Why this version must not run; kept in the audit trail.
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct SkipArgs {
    /// The asset id (see `list-assets`).
    pub asset: String,
    /// The version never to propose for this asset: a tag as the registry lists it, or a digest.
    // Not named `version`: that id belongs to the propagated `--version` flag.
    #[arg(value_name = "VERSION")]
    pub tag: String,
    /// Why; kept in the audit trail.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnoozeArgs {
    /// The asset id (see `list-assets`).
    pub asset: String,
    /// Until when: a time (2026-12-01T00:00:00Z) or a duration from now (7d, 12h, 1w).
    #[arg(long)]
    pub until: String,
}

#[derive(Debug, Args)]
pub struct AssetArgs {
    /// The asset id (see `list-assets`).
    pub asset: String,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The asset id (see `list-assets`).
    pub asset: String,
    /// A Helm-style version constraint: `~1.2` (1.2.x), `^1` (1.x), `>=1.2 <1.5`.
    pub constraint: String,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Also show finished entries (done, dropped), newest first.
    #[arg(long)]
    pub all: bool,
    /// At most this many entries with --all.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// Opens a store that must already exist: there is nothing to approve in a new one.
fn open_existing(global: &GlobalArgs) -> anyhow::Result<(Store, PathBuf)> {
    let cfg = load_config(global)?;
    let path = state_path(global, &cfg);
    if !path.exists() {
        return Err(Reported(format!(
            "no state database at {}; run `safe-updater scan` and `safe-updater check` first, or point --state at an existing file",
            path.display()
        ))
        .into());
    }
    let store = Store::open(&path)
        .with_context(|| format!("cannot open the state database {}", path.display()))?;
    Ok((store, path))
}

/// An operator error as the CLI shows it: the engine's sentence, plus where to look next.
fn explain(err: OperatorError, hint: &str) -> anyhow::Error {
    match err {
        OperatorError::Store(e) => {
            anyhow::Error::new(e).context("cannot update the state database")
        }
        OperatorError::NotFound(m) if !hint.is_empty() => Reported(format!("{m}; {hint}")).into(),
        other => Reported(other.to_string()).into(),
    }
}

const LIST_HINT: &str = "`safe-updater approvals` lists the updates that wait";
const ASSET_HINT: &str = "`safe-updater list-assets` shows the ids";

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// List instead the versions rejected outright (by `skip`, or rolled away from by
    /// `rollback`) that keep assets from updating; `approve <asset>@<version>` lifts one.
    #[arg(long)]
    pub rejected: bool,
}

pub fn list(global: &GlobalArgs, args: &ApprovalsArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = open_existing(global)?;
    if args.rejected {
        return list_rejected(global, &store);
    }
    let pending = operator::pending(&store).map_err(|e| explain(e, ""))?;
    match global.output {
        OutputFormat::Json => output::json(&pending)?,
        OutputFormat::Table => {
            if pending.is_empty() {
                println!("no updates wait for approval");
            } else {
                let rows = pending
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.change.clone(),
                            p.from.clone(),
                            p.candidate.clone(),
                            p.decided_at.strftime("%Y-%m-%d %H:%M").to_string(),
                            p.rule.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &["ID", "CHANGE", "RUNNING", "CANDIDATE", "SINCE", "RULE"],
                        rows
                    )
                );
                println!(
                    "\n`safe-updater approve ID` lets one proceed; `safe-updater reject ID --reason TEXT` refuses it"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_rejected(global: &GlobalArgs, store: &Store) -> anyhow::Result<ExitCode> {
    let rejected = operator::rejected_versions(store).map_err(|e| explain(e, ""))?;
    match global.output {
        OutputFormat::Json => output::json(&rejected)?,
        OutputFormat::Table if rejected.is_empty() => println!("no version is rejected outright"),
        OutputFormat::Table => {
            let rows = rejected
                .iter()
                .map(|a| {
                    vec![
                        operator::approval_id(&a.asset_id, &a.candidate),
                        a.origin.as_str().to_owned(),
                        a.operator.clone(),
                        a.at.strftime("%Y-%m-%d %H:%M").to_string(),
                        a.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["ID", "BY", "OPERATOR", "AT", "REASON"], rows)
            );
            println!(
                "
`safe-updater approve ID` lifts a rejection"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn queue(global: &GlobalArgs, args: &QueueArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = open_existing(global)?;
    let entries = if args.all {
        store.queue_entries(args.limit)
    } else {
        store.open_queue()
    }
    .context("cannot read the queue")?;
    match global.output {
        OutputFormat::Json => output::json(&entries)?,
        OutputFormat::Table => {
            if entries.is_empty() {
                println!("the queue is empty");
            } else {
                let rows = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            e.asset_id.clone(),
                            e.target.clone(),
                            e.change.clone(),
                            e.reason.clone(),
                            e.priority.to_string(),
                            e.state.to_string(),
                            e.attempts.to_string(),
                            e.enqueued_at.strftime("%Y-%m-%d %H:%M").to_string(),
                            e.outcome
                                .clone()
                                .or_else(|| e.detail.clone())
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &[
                            "ID", "ASSET", "TO", "CHANGE", "REASON", "PRIORITY", "STATE",
                            "ATTEMPTS", "QUEUED", "OUTCOME"
                        ],
                        rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn approve(global: &GlobalArgs, args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let a = operator::approve(&mut store, &args.id, &who, Timestamp::now())
        .map_err(|e| explain(e, LIST_HINT))?;
    match global.output {
        OutputFormat::Json => output::json(&json!({ "id": args.id, "approval": a }))?,
        OutputFormat::Table => println!("approved {} as {who}; {APPLIED_BY}", args.id),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reject(global: &GlobalArgs, args: &RejectArgs) -> anyhow::Result<ExitCode> {
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let a = operator::reject(&mut store, &args.id, &who, &args.reason, Timestamp::now())
        .map_err(|e| explain(e, LIST_HINT))?;
    match global.output {
        OutputFormat::Json => output::json(&json!({ "id": args.id, "approval": a }))?,
        OutputFormat::Table => println!(
            "rejected {} as {who}; {} is not proposed for {} again",
            args.id, a.candidate, a.asset_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn skip(global: &GlobalArgs, args: &SkipArgs) -> anyhow::Result<ExitCode> {
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let a = operator::skip_version(
        &mut store,
        &args.asset,
        &args.tag,
        &who,
        args.reason.as_deref(),
        Timestamp::now(),
    )
    .map_err(|e| explain(e, ASSET_HINT))?;
    match global.output {
        OutputFormat::Json => output::json(&json!({
            "id": operator::approval_id(&a.asset_id, &a.candidate),
            "approval": a,
        }))?,
        OutputFormat::Table => println!(
            "skipped {} for {} as {who}; it is not proposed again",
            a.candidate, a.asset_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_overrides(
    global: &GlobalArgs,
    o: &AssetOverrides,
    sentence: String,
) -> anyhow::Result<()> {
    match global.output {
        OutputFormat::Json => output::json(o),
        OutputFormat::Table => {
            println!("{sentence}");
            Ok(())
        }
    }
}

pub fn snooze(global: &GlobalArgs, args: &SnoozeArgs) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let until = operator::parse_until(&args.until, now).map_err(|e| explain(e, ""))?;
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let o = operator::snooze(&mut store, &args.asset, until, &who, now)
        .map_err(|e| explain(e, ASSET_HINT))?;
    print_overrides(
        global,
        &o,
        format!(
            "snoozed {} until {until} as {who}; no update of it starts before then (`safe-updater unsnooze {}` ends it early)",
            args.asset, args.asset
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn unsnooze(global: &GlobalArgs, args: &AssetArgs) -> anyhow::Result<ExitCode> {
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let s = operator::unsnooze(&mut store, &args.asset, &who, Timestamp::now())
        .map_err(|e| explain(e, ""))?;
    match global.output {
        OutputFormat::Json => output::json(&json!({ "asset_id": args.asset, "removed": s }))?,
        OutputFormat::Table => println!(
            "{} is no longer snoozed (it was until {}, set by {})",
            args.asset, s.until, s.by
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn pin(global: &GlobalArgs, args: &PinArgs) -> anyhow::Result<ExitCode> {
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let o = operator::pin(
        &mut store,
        &args.asset,
        &args.constraint,
        &who,
        Timestamp::now(),
    )
    .map_err(|e| explain(e, ASSET_HINT))?;
    let constraint = o
        .pin
        .as_ref()
        .map_or(args.constraint.as_str(), |p| p.constraint.as_str());
    print_overrides(
        global,
        &o,
        format!(
            "pinned {} to {constraint} as {who}; only versions that satisfy it are proposed",
            args.asset
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn unpin(global: &GlobalArgs, args: &AssetArgs) -> anyhow::Result<ExitCode> {
    let (mut store, _) = open_existing(global)?;
    let who = actor();
    let p = operator::unpin(&mut store, &args.asset, &who, Timestamp::now())
        .map_err(|e| explain(e, ""))?;
    match global.output {
        OutputFormat::Json => output::json(&json!({ "asset_id": args.asset, "removed": p }))?,
        OutputFormat::Table => println!(
            "{} is no longer pinned (it was pinned to {} by {})",
            args.asset, p.constraint, p.by
        ),
    }
    Ok(ExitCode::SUCCESS)
}
