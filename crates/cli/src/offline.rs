//! Commands that need neither a daemon, an engine nor a registry: reference parsing, version
//! comparison, constraints, policy evaluation and configuration checks.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use jiff::Timestamp;
use safe_updater_core::asset::AssetKind;
use safe_updater_core::config::{self, TEMPLATE};
use safe_updater_core::constraint;
use safe_updater_core::decide::{self, ApprovalFact, Available, DigestDrift, Facts};
use safe_updater_core::policy::{AssetView, OnFailure, parse_versioning};
use safe_updater_core::reference::ImageRef;
use safe_updater_core::tag;
use serde::Serialize;
use serde_json::json;

use crate::GlobalArgs;
use crate::context::{env_pairs, load_config};
use crate::output::{self, OutputFormat, Reported};

#[derive(Debug, Args)]
pub struct ParseRefArgs {
    /// An image reference as you would give `docker pull`, e.g. `nginx`, `ghcr.io/org/app:1.2`,
    /// `localhost:5000/a/b@sha256:...`.
    pub reference: String,
}

/// Field order is the documented one, so people reading the JSON find what the docs show.
#[derive(Serialize)]
struct ParsedRef<'a> {
    valid: bool,
    registry: &'a str,
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
    normalized: String,
}

#[derive(Serialize)]
struct InvalidRef {
    valid: bool,
    error: String,
}

pub fn parse_ref(global: &GlobalArgs, args: &ParseRefArgs) -> anyhow::Result<ExitCode> {
    match ImageRef::parse(&args.reference) {
        Ok(r) => {
            let r = r.with_default_tag();
            match global.output {
                OutputFormat::Json => output::json(&ParsedRef {
                    valid: true,
                    registry: r.registry(),
                    repository: r.repository(),
                    tag: r.tag(),
                    digest: r.digest(),
                    normalized: r.to_string(),
                })?,
                OutputFormat::Table => {
                    println!("registry:   {}", r.registry());
                    println!("repository: {}", r.repository());
                    println!("tag:        {}", r.tag().unwrap_or("-"));
                    println!("digest:     {}", r.digest().unwrap_or("-"));
                    println!("normalized: {r}");
                    println!("familiar:   {}", r.familiar_string());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            match global.output {
                OutputFormat::Json => output::json(&InvalidRef {
                    valid: false,
                    error: e.to_string(),
                })?,
                OutputFormat::Table => eprintln!("invalid reference: {e}"),
            }
            Ok(ExitCode::from(1))
        }
    }
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The version (tag) you are on.
    pub a: String,
    /// The version (tag) you would move to.
    pub b: String,
    /// How tags are read: `auto` (Docker-aware), `semver` (strict SemVer 2.0), or a regex with
    /// a `version` named group.
    #[arg(long, default_value = "auto")]
    pub scheme: String,
}

fn ordering_number(o: Option<Ordering>) -> Option<i8> {
    o.map(|o| match o {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    })
}

#[derive(Serialize)]
struct ComparisonOut<'a> {
    a: &'a str,
    b: &'a str,
    ordering: Option<i8>,
    change: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

pub fn compare(global: &GlobalArgs, args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let scheme = parse_versioning(&args.scheme).map_err(|e| Reported(format!("--scheme: {e}")))?;
    let c = tag::compare(&args.a, &args.b, &scheme);
    match global.output {
        OutputFormat::Json => {
            output::json(&ComparisonOut {
                a: &args.a,
                b: &args.b,
                ordering: ordering_number(c.ordering),
                change: c.change.as_str(),
                note: c.note.as_deref(),
            })?;
        }
        OutputFormat::Table => {
            let rel = match c.ordering {
                Some(Ordering::Less) => "<",
                Some(Ordering::Equal) => "=",
                Some(Ordering::Greater) => ">",
                None => "?",
            };
            println!("{} {rel} {}: {}", args.a, args.b, c.change);
            if let Some(n) = c.note {
                println!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct SatisfiesArgs {
    /// A constraint in Helm's syntax: `^1.2.3`, `~1.2`, `1.2.x`, `>=1.2 <2`, `1.2 - 1.4`, `a || b`.
    pub constraint: String,
    /// The version to check (`v` prefix and `1.2` forms accepted, as Helm does).
    #[arg(value_name = "VERSION")]
    pub candidate: String,
}

pub fn satisfies(global: &GlobalArgs, args: &SatisfiesArgs) -> anyhow::Result<ExitCode> {
    match constraint::satisfies(&args.constraint, &args.candidate) {
        Ok(yes) => {
            match global.output {
                OutputFormat::Json => output::json(&json!({ "satisfies": yes }))?,
                OutputFormat::Table => {
                    let word = if yes { "satisfies" } else { "does not satisfy" };
                    println!("{} {word} {}", args.candidate, args.constraint);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(Reported(e.to_string()).into()),
    }
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The tag the asset runs now.
    #[arg(long)]
    pub current: String,
    /// Tags the registry offers, comma-separated (repeatable).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub available: Vec<String>,
    /// Kind of the asset, for policy matching (container, Deployment, StatefulSet, ...).
    #[arg(long, default_value = "container")]
    pub kind: String,
    /// Namespace (Kubernetes) or compose project (Docker), for policy matching.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the asset, for policy matching.
    #[arg(long, default_value = "")]
    pub name: String,
    /// A label on the resource, `key=value` (repeatable); `safe-updater.io/*` labels override policy.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// An annotation on the resource, `key=value` (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// When a tag was first seen, `TAG=2026-11-20T10:00:00Z` (repeatable), for the cooldown.
    /// Tags without one count as seen now.
    #[arg(long = "first-seen", value_name = "TAG=TIME")]
    pub first_seen: Vec<String>,
    /// Evaluate as of this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,
    /// A tag whose update failed before (repeatable).
    #[arg(long = "failed", value_name = "TAG")]
    pub failed: Vec<String>,
    /// A tag an operator approved (repeatable).
    #[arg(long = "approved", value_name = "TAG")]
    pub approved: Vec<String>,
    /// A tag an operator rejected (repeatable).
    #[arg(long = "rejected", value_name = "TAG")]
    pub rejected: Vec<String>,
    /// The asset is frozen after a failed update, for this reason: nothing may proceed.
    #[arg(long, value_name = "REASON")]
    pub frozen: Option<String>,
    /// The digest the asset runs, to detect a new image behind the same tag.
    #[arg(long, requires = "latest_digest")]
    pub running_digest: Option<String>,
    /// The digest the registry serves now for the current tag.
    #[arg(long, requires = "running_digest")]
    pub latest_digest: Option<String>,
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("{what} {s:?} is not KEY=VALUE"),
        })
        .collect()
}

fn parse_time(s: &str, what: &str) -> anyhow::Result<Timestamp> {
    s.parse::<Timestamp>().with_context(|| {
        format!("{what} {s:?} is not an RFC 3339 time such as 2026-11-20T10:00:00Z")
    })
}

pub fn evaluate(global: &GlobalArgs, args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(global)?;
    let kind = AssetKind::parse(&args.kind).ok_or_else(|| {
        Reported(format!(
            "--kind {:?} is not a kind; use one of {}",
            args.kind,
            AssetKind::ALL.map(AssetKind::as_str).join(", ")
        ))
    })?;
    let labels = pairs(&args.labels, "--label")?;
    let annotations = pairs(&args.annotations, "--annotation")?;
    let mut seen = BTreeMap::new();
    for (t, ts) in pairs(&args.first_seen, "--first-seen")? {
        seen.insert(t, parse_time(&ts, "--first-seen")?);
    }
    let now = match &args.now {
        Some(s) => parse_time(s, "--now")?,
        None => Timestamp::now(),
    };
    let view = AssetView {
        kind,
        namespace: args.namespace.as_deref(),
        name: &args.name,
        labels: Some(&labels),
        annotations: Some(&annotations),
    };
    let policy = cfg.policy.resolve(&view);
    let available: Vec<Available> = args
        .available
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| Available {
            tag: t.to_owned(),
            first_seen: seen.get(t).copied(),
        })
        .collect();
    let mut approvals: Vec<ApprovalFact> = Vec::new();
    for (list, approved) in [(&args.approved, true), (&args.rejected, false)] {
        approvals.extend(list.iter().map(|t| ApprovalFact {
            candidate: t.clone(),
            approved,
            operator: "cli".into(),
        }));
    }
    let facts = Facts {
        current: args.current.clone(),
        digest: match (&args.running_digest, &args.latest_digest) {
            (Some(r), Some(l)) => Some(DigestDrift {
                running: r.clone(),
                latest: l.clone(),
                first_seen: None,
            }),
            _ => None,
        },
        failed: args.failed.clone(),
        approvals,
        frozen: args.frozen.clone(),
        unavailable: Vec::new(),
        ..Facts::default()
    };
    let eval = decide::evaluate(&policy, &facts, &available, now);
    match global.output {
        OutputFormat::Json => output::json(&eval)?,
        OutputFormat::Table => {
            match &eval.family {
                Some(f) => println!("current {} (family {f})", eval.current),
                None => println!("current {}", eval.current),
            }
            if eval.candidates.is_empty() {
                println!("no candidate");
            } else {
                let rows = eval
                    .candidates
                    .iter()
                    .map(|c| {
                        vec![
                            c.tag.clone(),
                            c.change.clone(),
                            c.gate.to_string(),
                            c.decision.as_str().to_owned(),
                            c.rule.clone(),
                            c.reason.clone(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &["TAG", "CHANGE", "GATE", "DECISION", "RULE", "REASON"],
                        rows
                    )
                );
            }
            for n in &eval.notes {
                println!("note: {n}");
            }
            println!("act on: {}", eval.act_on.as_deref().unwrap_or("nothing"));
            let action = match eval.on_failure.action {
                OnFailure::Rollback => "roll back",
                OnFailure::Freeze => "freeze and alert",
            };
            println!("on failure: {action} ({})", eval.on_failure.rule);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn generate_config() -> anyhow::Result<ExitCode> {
    print!("{TEMPLATE}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ValidateConfigArgs {
    /// The file to check (default: --config).
    pub file: Option<PathBuf>,
    /// Skip the checks that read this machine's environment (API tokens and webhook secrets
    /// from variables or files): for a config that runs elsewhere.
    #[arg(long)]
    pub no_environment: bool,
}

pub fn validate_config(global: &GlobalArgs, args: &ValidateConfigArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = args.file.as_ref().or(global.config.as_ref()) else {
        return Err(Reported(
            "no file to check: give one (`safe-updater validate-config FILE`) or use --config"
                .into(),
        )
        .into());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let env = env_pairs();
    // What `watch` refuses at start, checked by the same step.
    let loaded = config::load(&path.display().to_string(), &text, &env).and_then(|cfg| {
        let environment = if args.no_environment {
            safe_updater_daemon::Environment::Skipped
        } else {
            safe_updater_daemon::Environment::Checked
        };
        let more = safe_updater_daemon::preflight(&cfg, &env, environment);
        if more.is_empty() {
            return Ok(cfg);
        }
        Err(config::ConfigError {
            problems: more
                .into_iter()
                .map(|m| {
                    let (field, message) = m.split_once(": ").unwrap_or(("", m.as_str()));
                    config::Problem {
                        source: path.display().to_string(),
                        line: None,
                        column: None,
                        field: field.to_owned(),
                        message: message.to_owned(),
                    }
                })
                .collect(),
        })
    });
    match loaded {
        Ok(_) => {
            match global.output {
                OutputFormat::Json => {
                    output::json(&json!({ "valid": true, "file": path.display().to_string() }))?
                }
                OutputFormat::Table => println!("{} is valid", path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            match global.output {
                OutputFormat::Json => {
                    let problems: Vec<_> = e
                        .problems
                        .iter()
                        .map(|p| {
                            json!({"source": p.source, "line": p.line, "column": p.column, "field": p.field, "message": p.message})
                        })
                        .collect();
                    output::json(
                        &json!({ "valid": false, "file": path.display().to_string(), "problems": problems }),
                    )?;
                }
                OutputFormat::Table => {
                    eprintln!("{e}");
                    eprintln!("{} problem(s) in {}", e.problems.len(), path.display());
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}
