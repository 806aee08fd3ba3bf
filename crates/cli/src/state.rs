//! Commands that read (or back up and restore) the state store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use jiff::{SignedDuration, Timestamp};
use safe_updater_core::asset::AssetKind;
use safe_updater_store::{
    AssetFilter, AuditFormat, AuditVerification, PruneReport, StateDump, Store,
};
use serde_json::json;

use crate::GlobalArgs;
use crate::context::{load_config, state_path};
use crate::output::{self, OutputFormat, Reported};
use crate::pipeline::actor;

/// Opens a store that must already exist: a read command never creates an empty one and then
/// reports that nothing is there.
fn open_existing(global: &GlobalArgs) -> anyhow::Result<(Store, PathBuf)> {
    let cfg = load_config(global)?;
    let path = state_path(global, &cfg);
    if !path.exists() {
        return Err(Reported(format!(
            "no state database at {}; run `safe-updater scan` to create one, or point --state at an existing file",
            path.display()
        ))
        .into());
    }
    let store = Store::open(&path)
        .with_context(|| format!("cannot open the state database {}", path.display()))?;
    Ok((store, path))
}

#[derive(Debug, Args)]
pub struct ListAssetsArgs {
    /// Only this kind (container, Deployment, StatefulSet, DaemonSet, Job, CronJob, HelmRelease).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this namespace (or compose project).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this engine or cluster context.
    #[arg(long)]
    pub location: Option<String>,
    /// Only names containing this text.
    #[arg(long)]
    pub name: Option<String>,
}

pub fn list_assets(global: &GlobalArgs, args: &ListAssetsArgs) -> anyhow::Result<ExitCode> {
    let kind = match &args.kind {
        Some(k) => Some(AssetKind::parse(k).ok_or_else(|| {
            Reported(format!(
                "--kind {k:?} is not a kind; use one of {}",
                AssetKind::ALL.map(AssetKind::as_str).join(", ")
            ))
        })?),
        None => None,
    };
    let (store, _) = open_existing(global)?;
    let filter = AssetFilter {
        kind,
        namespace: args.namespace.clone(),
        location: args.location.clone(),
        name_contains: args.name.clone(),
    };
    let mut assets = store.list_assets(&filter).context("cannot list assets")?;
    // Labels and annotations may hold URLs with credentials (a health-check URL): shown
    // masked. The store keeps them as the engine reported them.
    for a in &mut assets {
        for v in a.labels.values_mut().chain(a.annotations.values_mut()) {
            *v = safe_updater_core::redact::urls_in(v);
        }
    }
    match global.output {
        OutputFormat::Json => output::json(&assets)?,
        OutputFormat::Table => {
            if assets.is_empty() {
                println!("no assets match");
            } else {
                let rows = assets
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.clone(),
                            a.kind.to_string(),
                            a.namespace.clone().unwrap_or_else(|| "-".into()),
                            a.name.clone(),
                            a.image.clone(),
                            a.last_seen.strftime("%Y-%m-%d %H:%M").to_string(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &["ID", "KIND", "NAMESPACE", "NAME", "IMAGE", "LAST SEEN"],
                        rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (store, path) = open_existing(global)?;
    let s = store.stats().context("cannot read statistics")?;
    match global.output {
        OutputFormat::Json => output::json(&s)?,
        OutputFormat::Table => {
            println!("state:              {}", path.display());
            println!("schema version:     {}", s.schema_version);
            println!("assets:             {}", s.assets);
            for (k, n) in &s.assets_by_kind {
                println!("  {k:<17} {n}");
            }
            println!("observed tags:      {}", s.observed_tags);
            println!("decisions:          {}", s.decisions);
            println!(
                "approvals:          {} ({} rejections)",
                s.approvals, s.rejections
            );
            for (k, n) in &s.updates_by_status {
                println!("updates {k:<11} {n}");
            }
            println!("updates in progress: {}", s.updates_in_progress);
            println!("audit records:      {}", s.audit_len);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The asset id (see `list-assets`); all assets when omitted.
    pub asset: Option<String>,
    /// At most this many updates.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub filter: crate::pipeline::KubeArgs,
}

pub fn history(global: &GlobalArgs, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = open_existing(global)?;
    let records = if args.filter.is_empty() {
        store
            .history(args.asset.as_deref(), args.limit)
            .context("cannot read the update history")?
    } else {
        let mut assets = std::collections::HashMap::new();
        let mut out = Vec::new();
        for u in store
            .history(args.asset.as_deref(), usize::MAX >> 1)
            .context("cannot read the update history")?
        {
            if !assets.contains_key(&u.asset_id) {
                let a = store.get_asset(&u.asset_id)?;
                assets.insert(u.asset_id.clone(), a);
            }
            if args
                .filter
                .selects_id(&u.asset_id, assets[&u.asset_id].as_ref())
            {
                out.push(u);
                if out.len() >= args.limit {
                    break;
                }
            }
        }
        out
    };
    match global.output {
        OutputFormat::Json => output::json(&records)?,
        OutputFormat::Table => {
            if records.is_empty() {
                println!("no updates recorded");
            } else {
                let rows = records
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.0.to_string(),
                            u.asset_id.clone(),
                            u.from_ref.clone(),
                            u.to_ref.clone(),
                            u.status.to_string(),
                            u.started_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                            u.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &["ID", "ASSET", "FROM", "TO", "STATUS", "STARTED", "ERROR"],
                        rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and report the first edited, deleted or reordered record.
    ///
    /// A pruned trail is verified from its checkpoint, which the output names.
    Verify,
    /// Write the audit trail for compliance archives.
    ///
    /// A pruned trail's export starts with the checkpoint it continues from: in JSONL a first
    /// line `{"checkpoint":{"seq":…,"hash":…,"created_at":…,"note":…}}`, in CSV a first row
    /// with action `audit.checkpoint`, the checkpoint's seq and hash and an empty prev_hash.
    /// The next record's prev_hash is that hash, so the export verifies on its own.
    Export(AuditExportArgs),
    /// Remove the records older than a retention period from the start of the trail.
    ///
    /// The trail must verify first. The last removed record's seq and hash are kept as a
    /// checkpoint the rest of the trail verifies from, and an `audit.pruned` record says what
    /// was removed. Export the trail before records age out: the checkpoint proves an archived
    /// export matches what was removed.
    Prune(AuditPruneArgs),
}

#[derive(Debug, Args)]
pub struct AuditPruneArgs {
    /// Remove records older than this: 90d, 12w, 8760h, 1y.
    #[arg(long, value_name = "DURATION", value_parser = parse_retention)]
    pub older_than: Retention,
    /// Show what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Kept with the checkpoint and in the `audit.pruned` record (a ticket, a reason).
    #[arg(long)]
    pub note: Option<String>,
}

/// A retention period as the user wrote it (shown back in messages) and its length.
#[derive(Debug, Clone)]
pub struct Retention {
    pub text: String,
    pub duration: std::time::Duration,
}

/// `--older-than`: a positive duration; 0 would remove the whole trail.
fn parse_retention(s: &str) -> Result<Retention, String> {
    let duration = safe_updater_core::policy::parse_duration(s)?;
    if duration.is_zero() {
        return Err("must be more than 0 (it would remove every record)".into());
    }
    Ok(Retention {
        text: s.trim().to_string(),
        duration,
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub to: Option<PathBuf>,
}

/// Where a verified trail starts, for people: nothing for a trail that starts at record 1.
fn starting_point(v: &AuditVerification) -> Option<String> {
    let c = v.checkpoint.as_ref()?;
    let note = c
        .note
        .as_deref()
        .map(|n| format!(", note {n:?}"))
        .unwrap_or_default();
    let recorded = match v.pruned_by {
        Some(seq) => format!("the pruning is recorded in record #{seq}"),
        None => "no audit.pruned record states it: the records before it were removed \
                 outside `safe-updater audit prune`"
            .to_string(),
    };
    Some(format!(
        "the trail starts after checkpoint #{} {} (records up to #{} pruned {}{note}); {recorded}",
        c.seq,
        c.hash,
        c.seq,
        c.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    ))
}

pub fn audit(global: &GlobalArgs, cmd: &AuditCommand) -> anyhow::Result<ExitCode> {
    let (mut store, path) = open_existing(global)?;
    match cmd {
        AuditCommand::Verify => {
            let v = store
                .verify_audit_trail()
                .context("cannot read the audit trail")?;
            let report = &v.report;
            match global.output {
                OutputFormat::Json => output::json(&v)?,
                OutputFormat::Table => match &report.problem {
                    None => println!(
                        "audit trail intact: {} record(s) verified{}{}",
                        report.checked,
                        report
                            .head
                            .as_ref()
                            .map(|h| format!(", head #{} {}", h.seq, h.hash))
                            .unwrap_or_default(),
                        starting_point(&v)
                            .map(|s| format!("\n{s}"))
                            .unwrap_or_default()
                    ),
                    Some(p) => {
                        eprintln!("audit trail BROKEN at record #{}: {}", p.seq, p.message);
                        if let Some(s) = starting_point(&v) {
                            eprintln!("{s}");
                        }
                    }
                },
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Prune(a) => prune(global, &mut store, a),
        AuditCommand::Export(a) => {
            let format = match a.format {
                ExportFormat::Jsonl => AuditFormat::Jsonl,
                ExportFormat::Csv => AuditFormat::Csv,
            };
            match &a.to {
                Some(file) => write_atomically(file, |w| {
                    store
                        .export_audit(w, format)
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                })
                .with_context(|| {
                    format!(
                        "cannot export the audit trail of {} to {}",
                        path.display(),
                        file.display()
                    )
                })?,
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    store
                        .export_audit(&mut lock, format)
                        .context("cannot export the audit trail")?;
                    lock.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn prune(global: &GlobalArgs, store: &mut Store, a: &AuditPruneArgs) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let retention = &a.older_than.text;
    let older_than = SignedDuration::try_from(a.older_than.duration)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .ok_or_else(|| Reported(format!("--older-than {retention} is too long")))?;
    let report = if a.dry_run {
        store.preview_audit_prune(older_than, now, a.note.as_deref())
    } else {
        store.prune_audit(older_than, now, &actor(), a.note.as_deref())
    }
    .context("cannot prune the audit trail")?;
    match global.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Table => print_prune(&report, retention),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_prune(report: &PruneReport, retention: &str) {
    let when = |t: &Timestamp| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
    let cutoff = when(&report.older_than);
    let Some(checkpoint) = &report.checkpoint else {
        let oldest = report
            .oldest_remaining
            .as_ref()
            .map(|t| format!("; the oldest is from {}", when(t)))
            .unwrap_or_default();
        println!(
            "nothing to prune: none of the {} audit record(s) is older than {retention} (before \
             {cutoff}){oldest}",
            report.remaining
        );
        return;
    };
    let range = match report.first_removed_seq {
        Some(first) if first != checkpoint.seq => format!("#{first}-#{}", checkpoint.seq),
        _ => format!("#{}", checkpoint.seq),
    };
    println!(
        "{} {} audit record(s) older than {retention} (before {cutoff})",
        if report.dry_run {
            "would prune"
        } else {
            "pruned"
        },
        report.removed
    );
    println!(
        "{}",
        output::table(
            &[
                "REMOVED",
                "RECORDS",
                "CHECKPOINT",
                "CHECKPOINT HASH",
                "REMAINING",
                "RECORDED AS"
            ],
            vec![vec![
                report.removed.to_string(),
                range,
                format!("#{}", checkpoint.seq),
                checkpoint.hash.clone(),
                report.remaining.to_string(),
                report
                    .record
                    .as_ref()
                    .map(|r| format!("#{} {}", r.seq, r.event.action))
                    .unwrap_or_else(|| "-".into()),
            ]],
        )
    );
    if report.dry_run {
        println!("dry run: nothing was changed");
    }
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Write the whole state (assets, history, approvals, audit trail) as JSON.
    Export {
        /// Write to this file instead of stdout.
        file: Option<PathBuf>,
    },
    /// Restore a JSON backup into the state database (which must be empty unless --replace).
    Import {
        file: PathBuf,
        /// Replace everything in a non-empty database.
        #[arg(long)]
        replace: bool,
    },
}

/// Writes through a temporary file renamed into place, so a crash never leaves half a backup
/// under the final name.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("export"),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn state(global: &GlobalArgs, cmd: &StateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StateCommand::Export { file } => {
            let (store, path) = open_existing(global)?;
            let dump = store
                .export_state()
                .with_context(|| format!("cannot export the state of {}", path.display()))?;
            match file {
                Some(f) => {
                    write_atomically(f, |w| {
                        serde_json::to_writer_pretty(&mut *w, &dump)?;
                        w.write_all(b"\n")?;
                        Ok(())
                    })
                    .with_context(|| format!("cannot write {}", f.display()))?;
                    if global.output == OutputFormat::Json {
                        output::json(
                            &json!({"exported": f.display().to_string(), "assets": dump.assets.len(), "audit_records": dump.audit.len()}),
                        )?;
                    } else {
                        eprintln!(
                            "exported {} asset(s) and {} audit record(s) to {}",
                            dump.assets.len(),
                            dump.audit.len(),
                            f.display()
                        );
                    }
                }
                None => output::json(&dump)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCommand::Import { file, replace } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let dump: StateDump = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a safe-updater state export", file.display())
            })?;
            let cfg = load_config(global)?;
            let path = state_path(global, &cfg);
            let existed = path.exists();
            let imported = Store::open(&path)
                .with_context(|| format!("cannot open the state database {}", path.display()))
                .and_then(|mut store| {
                    store.import_state(&dump, *replace).with_context(|| {
                        format!("cannot import {} into {}", file.display(), path.display())
                    })
                });
            if let Err(e) = imported {
                // A failed import must not leave a fresh, empty database behind that later
                // commands would read as "nothing tracked".
                if !existed {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                    }
                }
                return Err(e);
            }
            match global.output {
                OutputFormat::Json => output::json(
                    &json!({"imported": file.display().to_string(), "state": path.display().to_string(), "assets": dump.assets.len(), "audit_records": dump.audit.len()}),
                )?,
                OutputFormat::Table => println!(
                    "imported {} asset(s) and {} audit record(s) into {}",
                    dump.assets.len(),
                    dump.audit.len(),
                    path.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
