//! `safe-updater watch`: cycles on a schedule, for as long as the process runs.
//!
//! One cycle at a time: recover what a crash interrupted, scan, check the assets that are due
//! (or that a registry webhook or an operator's answer concerns), then apply what policy
//! allows with at most `daemon.concurrency` updates in flight, assets that depend on each
//! other one after the other, higher `safe-updater.io/priority` first. Windows, cooldowns,
//! approvals, pins and snoozes are the core's `evaluate`; nothing here decides whether an
//! update may run, only when and how many at once.
//!
//! The queue is persisted (the store's `update_queue`): each cycle queues what policy approves,
//! checks every asset with queued work afresh, and claims an entry (atomically, in the store)
//! only when its update starts; it ends `done` or `dropped` with the reason. A restart loses
//! nothing: queued entries wait for the next cycle, an entry left in flight by a killed process
//! is queued again at start, and `recover` restores the container it left half replaced
//! (such an interruption does not mark the version failed). "Approval needed" is announced
//! once per review, remembered in the store across restarts. SIGTERM stops starting updates, lets those in
//! flight finish (or roll back), then exits. SIGHUP, or a change of the config file, reloads
//! the configuration; one that does not load is refused with its reasons logged and the old
//! one keeps running.

mod backend;
mod cycle;
pub use cycle::{outcome_event, unrecovered_event};
mod kube_cycle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use safe_updater_core::config::Config;
use safe_updater_core::health::SecretRef;
use safe_updater_notify::{Notifier, NotifyOptions};
use safe_updater_server::{ApiToken, Metrics, Readiness, Secret, ServerConfig, WebhookSecrets};
use safe_updater_store::Store;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, mpsc};

pub use backend::DaemonBackend;
pub use cycle::CycleSummary;

/// Loads the configuration (the file and the environment), or says why it cannot.
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the configuration cannot be used: {0}")]
    Config(String),
    #[error("cannot open the state database {path}: {source}")]
    Store {
        path: String,
        source: safe_updater_store::StoreError,
    },
    #[error(
        "cannot listen on {addr}: {source} (set server.listen to a free address, or \"\" to turn the server off)"
    )]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("notifications: {0}")]
    Notify(String),
}

/// What wakes the daemon besides its timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A registry announced a push to this repository.
    Repository {
        registry: Option<String>,
        repository: String,
    },
    /// An operator answered for these assets.
    Assets(Vec<String>),
}

/// How the daemon is started.
#[derive(Clone)]
pub struct DaemonOptions {
    pub loader: ConfigLoader,
    /// The file to watch for changes (none: defaults only, nothing to watch).
    pub config_path: Option<PathBuf>,
    pub state_path: PathBuf,
    /// The process environment, for engine and registry settings.
    pub env: Vec<(String, String)>,
    /// Who the daemon's own actions are recorded as.
    pub actor: String,
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions")
            .field("config_path", &self.config_path)
            .field("state_path", &self.state_path)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// What cycles share.
pub(crate) struct Shared {
    pub options: DaemonOptions,
    pub metrics: Metrics,
    pub notifier: Notifier,
    pub stopping: AtomicBool,
    /// When each asset was last checked, for per-asset check intervals.
    pub last_checked: Mutex<HashMap<String, jiff::Timestamp>>,
    /// When the audit trail was last pruned.
    pub last_pruned: Mutex<Option<jiff::Timestamp>>,
    /// Interrupted updates already counted and announced as not recovered: each once (every
    /// cycle tries again, and logs it).
    pub unrecovered: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// The notifier's counts already added to the metrics, by (channel, result).
    pub notified: std::sync::Mutex<HashMap<(String, &'static str), u64>>,
}

/// Adds to the metrics what the notification channels delivered, failed or dropped since the
/// last call (the channels send in the background; this runs on the daemon's poll tick).
fn record_notifications(shared: &Shared) {
    let Ok(mut seen) = shared.notified.lock() else {
        return;
    };
    for ch in shared.notifier.stats().channels {
        for (result, now) in [
            ("delivered", ch.counts.delivered),
            ("failed", ch.counts.failed),
            ("dropped", ch.counts.dropped),
        ] {
            let before = seen.entry((ch.channel.clone(), result)).or_insert(0);
            if now > *before {
                shared
                    .metrics
                    .notifications(&ch.channel, result, now - *before);
                *before = now;
            }
        }
    }
}

fn read_secret(s: &SecretRef, env: &[(String, String)]) -> Result<Secret, String> {
    safe_updater_engine::resolve_secret(s, &safe_updater_engine::env_lookup(env))
        .map(Secret::new)
        .map_err(|e| e.to_string())
}

/// Whether the checks that read the process environment (variables, secret files) run: a
/// config checked on another machine than the one that runs it skips them, as Vector's
/// `validate --no-environment` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Checked,
    Skipped,
}

/// Every problem that stops `watch` at start beyond what the config loader refuses: the
/// notification URLs and the approve links' base, the server's address, its API tokens and
/// webhook secrets (read, unless `environment` is skipped; two operators sharing a token).
/// `watch` refuses to start, and a reload is refused, on any; `validate-config` reports the
/// same list. Secrets never appear in a problem.
pub fn preflight(cfg: &Config, env: &[(String, String)], environment: Environment) -> Vec<String> {
    let mut problems: Vec<String> = safe_updater_notify::check_urls(&cfg.notifications.urls)
        .into_iter()
        .map(|p| format!("notifications.urls: {p}"))
        .collect();
    if let Err(e) =
        safe_updater_notify::check_approve_base_url(cfg.notifications.approve_base_url.as_deref())
    {
        problems.push(format!("notifications.approve_base_url: {e}"));
    }
    if let Err(mut more) = compile_server(cfg, env, environment) {
        problems.append(&mut more);
    }
    problems
}

fn server_config(cfg: &Config, env: &[(String, String)]) -> Result<Option<ServerConfig>, String> {
    compile_server(cfg, env, Environment::Checked).map_err(|p| p.join("; "))
}

/// The server's settings, every problem collected. Without the environment, a secret that
/// would be read from a variable or a file stands for itself by its reference (so two
/// operators naming the same variable still share a token).
fn compile_server(
    cfg: &Config,
    env: &[(String, String)],
    environment: Environment,
) -> Result<Option<ServerConfig>, Vec<String>> {
    let listen = cfg.server.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let mut problems = Vec::new();
    let listen: Option<SocketAddr> = match listen.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "server.listen: '{listen}' is not an address:port (e.g. 127.0.0.1:8080)"
            ));
            None
        }
    };
    let secret = |s: &SecretRef| -> Result<Secret, String> {
        match (environment, s) {
            (Environment::Skipped, SecretRef::Env(v)) => Ok(Secret::new(format!("env:{v}"))),
            (Environment::Skipped, SecretRef::File(f)) => Ok(Secret::new(format!("file:{f}"))),
            _ => read_secret(s, env),
        }
    };
    let mut tokens = Vec::new();
    for (name, s) in &cfg.server.tokens {
        match secret(s) {
            Ok(s) => tokens.push(ApiToken::new(name.clone(), s)),
            Err(e) => problems.push(format!("server.tokens ({name}): {e}")),
        }
    }
    let mut webhooks = WebhookSecrets::default();
    for (source, s) in &cfg.server.webhooks {
        let s = match secret(s) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("server.webhooks.{source}: {e}"));
                continue;
            }
        };
        match source.as_str() {
            "dockerhub" => webhooks.dockerhub = s,
            "github" => webhooks.github = s,
            "harbor" => webhooks.harbor = s,
            "quay" => webhooks.quay = s,
            _ => webhooks.distribution = s,
        }
    }
    let config = ServerConfig {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        tokens,
        webhooks,
    };
    if let Err(found) = config.validate() {
        problems.extend(found.iter().map(ToString::to_string));
    }
    if problems.is_empty() {
        Ok(Some(config))
    } else {
        Err(problems)
    }
}

fn modified(path: &Option<PathBuf>) -> Option<SystemTime> {
    path.as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

/// Threads for blocking work (the approvals API's store calls, name resolution) at most.
const MAX_BLOCKING: usize = 8;

/// The runtime [`run`] is meant for (and its HTTP API, on a thread of its own, runs on): one
/// thread for the async work, plus a small pool for blocking calls. The work waits on engines,
/// registries and health checks, not on the CPU (long loops yield between items), and every
/// thread that allocates gets its own allocator arena: with one thread, a cycle over 10,000
/// assets leaves one arena to reuse instead of fragments in several (the `daemon_memory` bench
/// measures it).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING)
        .enable_all()
        .build()
}

/// Runs until SIGTERM or SIGINT. Returns once every update in flight has finished.
pub async fn run(options: DaemonOptions) -> Result<(), DaemonError> {
    let cfg = (options.loader)().map_err(DaemonError::Config)?;
    let problems = preflight(&cfg, &options.env, Environment::Checked);
    if !problems.is_empty() {
        return Err(DaemonError::Config(problems.join("; ")));
    }
    let mut cfg = Arc::new(cfg);
    let readiness = Readiness::new();
    let mut store = Store::open(&options.state_path).map_err(|source| DaemonError::Store {
        path: options.state_path.display().to_string(),
        source,
    })?;
    // Work a killed process left in flight goes back to the queue; the first cycle's
    // `recover` restores a container it left half replaced, then tries the update again.
    let requeued = store
        .requeue_in_flight()
        .map_err(|source| DaemonError::Store {
            path: options.state_path.display().to_string(),
            source,
        })?;
    for e in &requeued {
        tracing::warn!(event = "queue.requeued", asset_id = %e.asset_id, to = %e.target, queue_id = e.id, attempts = e.attempts, "an update in flight when the daemon stopped is queued again");
    }
    drop(store);
    readiness.set_store_open();
    let metrics = Metrics::new();
    let notifier = Notifier::from_urls(
        &cfg.notifications.urls,
        NotifyOptions {
            approve_base_url: cfg.notifications.approve_base_url.clone(),
            timeout: cfg.notifications.timeout,
            attempts: cfg.notifications.attempts,
            ..NotifyOptions::default()
        },
    )
    .map_err(|e| DaemonError::Notify(e.to_string()))?;
    for channel in notifier.channels() {
        tracing::info!(event = "notify.channel", channel = %channel, "notifications go to this channel");
    }
    let (trigger_tx, mut trigger_rx) = mpsc::unbounded_channel::<Trigger>();
    let (stop_server_tx, stop_server_rx) = tokio::sync::watch::channel(false);
    let mut server_task = None;
    let mut live_secrets = None;
    if let Some(server) = server_config(&cfg, &options.env).map_err(DaemonError::Config)? {
        // Bound here, so that a taken address stops the start with its reason.
        let listener = std::net::TcpListener::bind(server.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| DaemonError::Listen {
                addr: server.listen.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let backend = Arc::new(DaemonBackend::new(
            options.state_path.clone(),
            trigger_tx.clone(),
        ));
        let state = safe_updater_server::AppState::new(
            &server,
            backend,
            metrics.clone(),
            readiness.clone(),
        );
        live_secrets = Some(state.secrets());
        let router = safe_updater_server::router(state);
        let mut stop = stop_server_rx.clone();
        // The API on a thread of its own: a scrape or a probe never waits for a cycle's work
        // on the daemon's thread, and what it allocates stays out of the cycles' arena.
        let thread = std::thread::Builder::new()
            .name("safe-updater-api".into())
            .spawn(move || {
                let served = runtime().and_then(|rt| {
                    rt.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let shutdown = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        safe_updater_server::serve(listener, router, shutdown).await
                    })
                });
                if let Err(e) = served {
                    tracing::error!(event = "server.failed", error = %e, "the HTTP server stopped");
                }
            })
            .map_err(|source| DaemonError::Listen {
                addr: addr.clone(),
                source,
            })?;
        server_task = Some(thread);
        tracing::info!(event = "server.listening", address = %addr, "serving /healthz, /readyz, /metrics, the approvals API and webhooks");
    }
    let shared = Arc::new(Shared {
        options: options.clone(),
        metrics,
        notifier: notifier.clone(),
        stopping: AtomicBool::new(false),
        last_checked: Mutex::new(HashMap::new()),
        last_pruned: Mutex::new(None),
        unrecovered: std::sync::Mutex::new(std::collections::HashSet::new()),
        notified: std::sync::Mutex::new(HashMap::new()),
    });

    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut config_seen = modified(&options.config_path);
    let mut poll = tokio::time::interval(cfg.daemon.reload_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_cycle = tokio::time::Instant::now();
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    let mut waiting: Vec<Trigger> = Vec::new();
    tracing::info!(
        event = "daemon.started",
        interval = %humantime::format_duration(cfg.daemon.interval),
        concurrency = cfg.daemon.concurrency,
        state = %options.state_path.display(),
        "safe-updater is watching"
    );

    loop {
        // Start work when none runs: a scheduled cycle when due, else what triggers asked.
        if running.as_ref().is_none_or(|h| h.is_finished()) {
            if let Some(h) = running.take() {
                let _ = h.await;
            }
            let now = tokio::time::Instant::now();
            let scope = if now >= next_cycle {
                next_cycle = now + cfg.daemon.interval;
                waiting.clear();
                Some(cycle::Scope::Due)
            } else if !waiting.is_empty() {
                Some(cycle::Scope::Triggered(std::mem::take(&mut waiting)))
            } else {
                None
            };
            if let Some(scope) = scope {
                readiness.set_cycle_started();
                let (shared, cfg) = (Arc::clone(&shared), Arc::clone(&cfg));
                running = Some(tokio::spawn(async move {
                    cycle::run(&shared, &cfg, scope).await;
                }));
            }
        }
        let wake_at = if running.is_some() {
            tokio::time::Instant::now() + Duration::from_millis(200)
        } else {
            next_cycle
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            Some(t) = trigger_rx.recv() => {
                tracing::info!(event = "daemon.triggered", trigger = ?t, "a check was asked for");
                waiting.push(t);
            }
            _ = sighup.recv() => {
                cfg = reload(&options, cfg, live_secrets.as_ref(), "SIGHUP");
                config_seen = modified(&options.config_path);
                next_cycle = next_cycle.min(tokio::time::Instant::now() + cfg.daemon.interval);
            }
            _ = poll.tick() => {
                record_notifications(&shared);
                let now_seen = modified(&options.config_path);
                if now_seen != config_seen {
                    config_seen = now_seen;
                    cfg = reload(&options, cfg, live_secrets.as_ref(), "file change");
                    next_cycle = next_cycle.min(tokio::time::Instant::now() + cfg.daemon.interval);
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    tracing::info!(
        event = "daemon.stopping",
        "stopping: no new update starts; those in flight finish or roll back"
    );
    shared.stopping.store(true, Ordering::SeqCst);
    readiness.set_shutting_down();
    if let Some(h) = running.take() {
        let _ = h.await;
    }
    let report = notifier.flush(Duration::from_secs(10)).await;
    record_notifications(&shared);
    if report.pending > 0 {
        tracing::warn!(
            event = "notify.unsent",
            pending = report.pending,
            "notifications still unsent at shutdown"
        );
    }
    let _ = stop_server_tx.send(true);
    if let Some(t) = server_task {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    tracing::info!(event = "daemon.stopped", "stopped");
    Ok(())
}

/// A new configuration if it loads (server secrets included); otherwise the old one, with the
/// reasons logged. API tokens and webhook secrets take effect at once; the listen address
/// only at the next start (the socket is bound once), which is logged.
fn reload(
    options: &DaemonOptions,
    old: Arc<Config>,
    secrets: Option<&safe_updater_server::LiveSecrets>,
    why: &str,
) -> Arc<Config> {
    let loaded = (options.loader)().and_then(|new| {
        let problems = preflight(&new, &options.env, Environment::Checked);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let server = server_config(&new, &options.env)?;
        Ok((new, server))
    });
    match loaded {
        Ok((new, server)) => {
            tracing::info!(event = "config.reloaded", trigger = why, source = %new.source, "configuration reloaded");
            if new.server.listen.trim() != old.server.listen.trim() {
                tracing::warn!(
                    event = "config.restart_needed",
                    setting = "server.listen",
                    "server.listen changed; the server keeps its address until the next start"
                );
            }
            // Read once at start (the channels hold their queues and their retries): say so
            // rather than look as if the change took effect.
            for (setting, changed) in [
                ("notifications", new.notifications != old.notifications),
                (
                    "daemon.reload_poll",
                    new.daemon.reload_poll != old.daemon.reload_poll,
                ),
                ("state.path", new.state_path != old.state_path),
            ] {
                if changed {
                    tracing::warn!(
                        event = "config.restart_needed",
                        setting,
                        "{setting} changed; it takes effect at the next start"
                    );
                }
            }
            match (secrets, server) {
                (Some(live), Some(server)) => {
                    if new.server.tokens != old.server.tokens
                        || new.server.webhooks != old.server.webhooks
                    {
                        tracing::info!(
                            event = "server.secrets_reloaded",
                            tokens = server.tokens.len(),
                            "API tokens and webhook secrets reloaded"
                        );
                    }
                    // Replaced even when the configuration reads the same: a token_file or
                    // token_env may hold a new value.
                    live.replace(&server);
                }
                (Some(_), None) => tracing::warn!(
                    event = "config.restart_needed",
                    setting = "server.listen",
                    "the server was turned off; it stops at the next start"
                ),
                (None, Some(_)) => tracing::warn!(
                    event = "config.restart_needed",
                    setting = "server.listen",
                    "the server was turned on; it starts at the next start"
                ),
                (None, None) => {}
            }
            Arc::new(new)
        }
        Err(e) => {
            tracing::error!(event = "config.rejected", trigger = why, reason = %e, "the new configuration was refused; the previous one keeps running");
            old
        }
    }
}
