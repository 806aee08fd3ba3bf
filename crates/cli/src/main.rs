//! The `safe-updater` binary: a thin command layer over the core and the store.
//!
//! Commands parse arguments, read files and the environment, call the library, and print.
//! No decision is made here; if a command starts to grow logic, that logic belongs in
//! `safe-updater-core` (pure) or an adapter crate (IO).
//!
//! Exit codes: 0 success; 1 a negative result or invalid input (an invalid reference, a failed
//! audit verification, a broken config); 2 a usage error (clap's own).

/// `println!` that ends the process quietly when stdout is a closed pipe (`history | head`)
/// instead of panicking as std's does; every command prints through it.
macro_rules! println {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

mod approvals;
mod context;
mod offline;
mod output;
mod pipeline;
mod progress;
mod signals;
mod state;
mod watch;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::OutputFormat;

/// Keeps Docker containers, Kubernetes workloads and Helm releases up to date, safely.
///
/// safe-updater finds what runs, asks registries what newer versions exist, decides by
/// semantic-versioning policy whether an update may go ahead, applies it, checks health and
/// rolls back by itself when the update hurts. Every decision is recorded in a hash-chained
/// audit trail.
#[derive(Debug, Parser)]
#[command(
    name = "safe-updater",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (YAML). Without it the built-in safe defaults apply; see
    /// `safe-updater generate-config`.
    #[arg(long, global = true, env = "SAFE_UPDATER_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// State database (SQLite). Default: the config's `state.path`, else
    /// $XDG_STATE_HOME/safe-updater/state.db (~/.local/state/safe-updater/state.db).
    #[arg(long, global = true, env = "SAFE_UPDATER_STATE", value_name = "PATH")]
    pub state: Option<std::path::PathBuf>,
    /// Manage only the assets of this scope (their label `safe-updater.io/scope` or
    /// `com.centurylinklabs.watchtower.scope`); without one, only assets without a scope.
    /// Overrides the config's `scope`.
    #[arg(long, global = true, env = "SAFE_UPDATER_SCOPE", value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', global = true, env = "SAFE_UPDATER_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter. Logs go to stderr.
    #[arg(long, global = true, env = "SAFE_UPDATER_LOG", default_value = "warn")]
    pub log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, env = "SAFE_UPDATER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process; boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Discover containers on the configured Docker engines (and, when enabled or asked for
    /// with --context/--kind, Kubernetes workloads and Helm releases) and store them.
    Scan(pipeline::ScanArgs),
    /// Ask registries (and chart repositories) what newer versions exist for every tracked
    /// asset, and decide by policy.
    Check(pipeline::CheckArgs),
    /// Update one asset (or every asset policy allows) and verify it; roll back on failure.
    Update(pipeline::UpdateArgs),
    /// Put an asset back on the version before its last update (or on --to).
    Rollback(pipeline::RollbackArgs),
    /// One whole cycle: recover interrupted updates, scan, check, apply what policy allows, verify.
    Run(pipeline::RunArgs),
    /// Parse an image reference exactly as Docker does and show its parts.
    #[command(name = "parse-ref")]
    ParseRef(offline::ParseRefArgs),
    /// Compare two tags or versions: ordering and the kind of change from A to B.
    Compare(offline::CompareArgs),
    /// Check a version against a Helm-style constraint (`^1.2`, `~1.2.3`, `>=1.2 <2`, ...).
    Satisfies(offline::SatisfiesArgs),
    /// Decide, by policy, which of the available tags an asset may move to, and why.
    Evaluate(offline::EvaluateArgs),
    /// Print a commented configuration holding every default.
    #[command(name = "generate-config")]
    GenerateConfig,
    /// Check a configuration file and report every problem with its line.
    #[command(name = "validate-config")]
    ValidateConfig(offline::ValidateConfigArgs),
    /// List the tracked assets in the state store.
    #[command(name = "list-assets")]
    ListAssets(state::ListAssetsArgs),
    /// Summary counts from the state store.
    Stats,
    /// Update history, newest first, for one asset or all.
    History(state::HistoryArgs),
    /// Verify or export the hash-chained audit trail.
    #[command(subcommand)]
    Audit(state::AuditCommand),
    /// Back up or restore the whole state as JSON.
    #[command(subcommand)]
    State(state::StateCommand),
    /// List the updates that wait for an operator's approval (or, with --rejected, the
    /// versions rejected outright).
    Approvals(approvals::ApprovalsArgs),
    /// The daemon's work queue: what it will apply, is applying, and what became of it.
    Queue(approvals::QueueArgs),
    /// Let a reviewed update proceed (the next cycle applies it inside its window).
    Approve(approvals::ApproveArgs),
    /// Refuse a reviewed update, for a reason; it is not proposed again.
    Reject(approvals::RejectArgs),
    /// Never propose one version for an asset (whether or not it waits for review).
    Skip(approvals::SkipArgs),
    /// Hold back every update of an asset until a time (`--until 7d`, or a date).
    Snooze(approvals::SnoozeArgs),
    /// End an asset's snooze.
    Unsnooze(approvals::AssetArgs),
    /// Restrict an asset's updates to versions that satisfy a constraint (`~1.2`).
    Pin(approvals::PinArgs),
    /// Remove an asset's pin.
    Unpin(approvals::AssetArgs),
    /// Run as a daemon: cycles on a schedule (daemon.interval), at most daemon.concurrency
    /// updates at once, /healthz /readyz /metrics and the approvals API on server.listen.
    /// SIGHUP (or editing the config file) reloads; SIGTERM lets updates in flight finish.
    Watch(watch::WatchArgs),
}

/// Libraries whose debug and trace output holds what must never be logged (the Docker
/// engine's answers carry containers' environment values, HTTP clients print headers): held
/// at `warn` whatever level is asked for.
const QUIET_LIBRARIES: &[&str] = &[
    "bollard",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "kube",
    "kube_client",
    "tower",
    "rustls",
    "tungstenite",
];

/// The tracing filter for `--log-level`: a plain level applies to safe-updater's own crates
/// (others stay at `warn`); a filter expression is taken as written; either way the
/// libraries above stay at `warn`.
fn log_filter(level: &str) -> String {
    let level = level.trim();
    let own = if ["error", "warn", "info", "debug", "trace", "off"]
        .contains(&level.to_ascii_lowercase().as_str())
    {
        format!(
            "warn,safe_updater={level},safe_updater_core={level},safe_updater_store={level},safe_updater_registry={level},safe_updater_docker={level},safe_updater_engine={level},safe_updater_kube={level},safe_updater_notify={level},safe_updater_server={level},safe_updater_daemon={level}"
        )
    } else {
        level.to_owned()
    };
    let quiet: Vec<String> = QUIET_LIBRARIES
        .iter()
        .map(|l| format!("{l}=warn"))
        .collect();
    format!("{own},{}", quiet.join(","))
}

fn init_logging(global: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&global.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests running main twice) is harmless; ignore its error.
    let _ = match global.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // A daemon is read through its logs: info unless asked otherwise.
    if matches!(cli.command, Command::Watch(_))
        && cli.global.log_level == "warn"
        && std::env::var_os("SAFE_UPDATER_LOG").is_none()
    {
        cli.global.log_level = "info".into();
    }
    init_logging(&cli.global);
    let format = cli.global.output;
    let result = match cli.command {
        Command::Scan(a) => pipeline::run_scan(&cli.global, &a),
        Command::Check(a) => pipeline::run_check(&cli.global, &a),
        Command::Update(a) => pipeline::run_update(&cli.global, &a),
        Command::Rollback(a) => pipeline::run_rollback(&cli.global, &a),
        Command::Run(a) => pipeline::run_cycle(&cli.global, &a),
        Command::ParseRef(a) => offline::parse_ref(&cli.global, &a),
        Command::Compare(a) => offline::compare(&cli.global, &a),
        Command::Satisfies(a) => offline::satisfies(&cli.global, &a),
        Command::Evaluate(a) => offline::evaluate(&cli.global, &a),
        Command::GenerateConfig => offline::generate_config(),
        Command::ValidateConfig(a) => offline::validate_config(&cli.global, &a),
        Command::ListAssets(a) => state::list_assets(&cli.global, &a),
        Command::Stats => state::stats(&cli.global),
        Command::History(a) => state::history(&cli.global, &a),
        Command::Audit(c) => state::audit(&cli.global, &c),
        Command::State(c) => state::state(&cli.global, &c),
        Command::Approvals(a) => approvals::list(&cli.global, &a),
        Command::Queue(a) => approvals::queue(&cli.global, &a),
        Command::Approve(a) => approvals::approve(&cli.global, &a),
        Command::Reject(a) => approvals::reject(&cli.global, &a),
        Command::Skip(a) => approvals::skip(&cli.global, &a),
        Command::Snooze(a) => approvals::snooze(&cli.global, &a),
        Command::Unsnooze(a) => approvals::unsnooze(&cli.global, &a),
        Command::Pin(a) => approvals::pin(&cli.global, &a),
        Command::Unpin(a) => approvals::unpin(&cli.global, &a),
        Command::Watch(a) => watch::watch(&cli.global, &a),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): what it wanted, it got.
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::print_error(format, &err);
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
