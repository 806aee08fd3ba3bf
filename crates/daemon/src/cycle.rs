//! One daemon cycle: recover, scan, check what is due, apply what policy allows with the
//! concurrency limit, record metrics and send notifications. Errors end the cycle with a log
//! line; the next cycle starts afresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config::Config;
use safe_updater_core::decide::Verdict;
use safe_updater_core::policy::{KEY_PREFIX, parse_duration};
use safe_updater_core::reference::ImageRef;
use safe_updater_docker::update::RegistryAuth;
use safe_updater_docker::{ConnectOptions, Engine, EngineSpec};
use safe_updater_engine::{ApplyOutcome, CheckReport, EngineError};
use safe_updater_notify::{Event, EventKind};
use safe_updater_registry::{Cycle, RegistryClient};
use safe_updater_server::{InventoryLabels, PendingLabels, UpdateLabels, UpdateOutcome};
use safe_updater_store::{AssetFilter, Store};
use tokio::sync::Semaphore;

use crate::{Shared, Trigger};

/// Which assets a cycle checks.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Every asset whose own check interval has passed.
    Due,
    /// Only those the triggers concern.
    Triggered(Vec<Trigger>),
}

/// What one cycle did, for logs and tests.
#[derive(Debug, Clone, Default)]
pub struct CycleSummary {
    pub checked: usize,
    pub applied: Vec<ApplyOutcome>,
}

/// The label with which an asset asks to be checked less often than every cycle.
pub const CHECK_INTERVAL_LABEL: &str = "check-interval";
/// The label that orders updates: higher first (default 0).
pub const PRIORITY_LABEL: &str = "priority";

fn label<'a>(asset: &'a Asset, key: &str) -> Option<&'a str> {
    asset
        .labels
        .get(&format!("{KEY_PREFIX}{key}"))
        .or_else(|| asset.annotations.get(&format!("{KEY_PREFIX}{key}")))
        .map(String::as_str)
}

fn priority(asset: &Asset) -> i64 {
    label(asset, PRIORITY_LABEL)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

/// Patches (where security fixes usually land) before minors before majors.
fn change_rank(change: &str) -> u8 {
    match change {
        "digest" | "build" => 0,
        "patch" => 1,
        "minor" => 2,
        "major" => 3,
        _ => 4,
    }
}

fn concerns(trigger: &Trigger, asset: &Asset) -> bool {
    match trigger {
        Trigger::Assets(ids) => ids.contains(&asset.id),
        Trigger::Repository {
            registry,
            repository,
        } => ImageRef::parse(&asset.image).is_ok_and(|r| {
            let repo_matches = r.repository() == repository
                || r.repository().strip_prefix("library/") == Some(repository.as_str());
            let registry_matches = registry.as_deref().is_none_or(|reg| {
                reg == r.registry() || (reg.contains("docker.io") && r.registry() == "docker.io")
            });
            repo_matches && registry_matches
        }),
    }
}

pub(crate) async fn run(shared: &Arc<Shared>, cfg: &Config, scope: Scope) -> CycleSummary {
    let started = Instant::now();
    let now = Timestamp::now();
    let cid = format!("cycle-{}", now.as_millisecond());
    let span = tracing::info_span!("cycle", correlation_id = %cid, operation = "cycle");
    let _enter = span.enter();
    match run_inner(shared, cfg, scope, now, &cid).await {
        Ok(summary) => {
            tracing::info!(
                event = "cycle.finished",
                result = "ok",
                checked = summary.checked,
                applied = summary.applied.len(),
                duration_ms = started.elapsed().as_millis() as u64,
                "cycle finished"
            );
            summary
        }
        Err(e) => {
            tracing::error!(event = "cycle.finished", result = "error", error = %e, "cycle failed");
            CycleSummary::default()
        }
    }
}

async fn run_inner(
    shared: &Arc<Shared>,
    cfg: &Config,
    scope: Scope,
    now: Timestamp,
    cid: &str,
) -> Result<CycleSummary, String> {
    let opts = &shared.options;
    let actor = opts.actor.as_str();
    let mut store = Store::open(&opts.state_path).map_err(|e| e.to_string())?;
    let specs =
        safe_updater_engine::engine_specs(&cfg.docker, &opts.env).map_err(|e| e.to_string())?;
    let client_cfg = safe_updater_engine::registry_client_config(&cfg.registries, &opts.env)
        .map_err(|e| e.to_string())?;
    let client = RegistryClient::new(client_cfg).map_err(|e| e.to_string())?;

    let engines = safe_updater_engine::connect_all(&specs).await;
    let recovered = safe_updater_engine::recover(&mut store, &engines, actor)
        .await
        .map_err(|e| e.to_string())?;
    for r in &recovered {
        tracing::warn!(event = "update.recovered", asset_id = %r.asset_id, restored = r.restored, detail = %r.detail, "an interrupted update was brought back");
    }

    let scan_started = Instant::now();
    let scan =
        safe_updater_engine::scan(&mut store, &specs, cfg.docker.include_stopped, now, actor)
            .await
            .map_err(|e| e.to_string())?;
    shared
        .metrics
        .scan_finished("docker", scan_started.elapsed(), scan.failed_engines() == 0);
    for e in scan.engines.iter().filter(|e| e.error.is_some()) {
        tracing::warn!(event = "scan.engine_failed", engine = %e.engine, error = %e.error.clone().unwrap_or_default(), "engine not scanned");
    }

    // Which assets are checked now.
    let last = shared.last_checked.lock().await.clone();
    let wanted = |a: &Asset| -> bool {
        match &scope {
            Scope::Triggered(triggers) => triggers.iter().any(|t| concerns(t, a)),
            Scope::Due => match label(a, CHECK_INTERVAL_LABEL).map(parse_duration) {
                Some(Ok(every)) => last.get(&a.id).is_none_or(|at| {
                    now.duration_since(*at).unsigned_abs() + std::time::Duration::from_secs(1)
                        >= every
                }),
                _ => true,
            },
        }
    };
    let cycle = Cycle::new(client.clone());
    let report = safe_updater_engine::check_some(cfg, &mut store, &cycle, now, actor, cid, &wanted)
        .await
        .map_err(|e| e.to_string())?;
    {
        let mut last = shared.last_checked.lock().await;
        for c in &report.checks {
            last.insert(c.asset_id.clone(), now);
        }
    }
    let assets = store
        .list_assets(&AssetFilter::default())
        .map_err(|e| e.to_string())?;
    // By id: with 10,000 assets a linear search per check is 10^8 comparisons a cycle.
    let by_id: HashMap<&str, &Asset> = assets.iter().map(|a| (a.id.as_str(), a)).collect();
    record_inventory(shared, &assets, &by_id, &report);
    notify_new_reviews(shared, &store, &by_id, now);

    // The work: approved candidates of containers.
    let mut todo: Vec<(Asset, String, String)> = Vec::new();
    for c in &report.checks {
        let Some(e) = &c.evaluation else { continue };
        let Some(target) = &e.act_on else { continue };
        let Some(cand) = e
            .candidates
            .iter()
            .find(|x| &x.tag == target && x.decision == Verdict::Approve)
        else {
            continue;
        };
        if let Some(asset) = by_id.get(c.asset_id.as_str())
            && asset.kind == AssetKind::Container
        {
            todo.push(((*asset).clone(), target.clone(), cand.change.clone()));
        }
    }
    let todo_assets: Vec<Asset> = todo.iter().map(|(a, _, _)| a.clone()).collect();
    let mut groups = safe_updater_engine::dependency_groups(&todo_assets);
    groups.sort_by_key(|g| {
        let p = g.iter().map(|&i| priority(&todo[i].0)).max().unwrap_or(0);
        let r = g
            .iter()
            .map(|&i| change_rank(&todo[i].2))
            .min()
            .unwrap_or(4);
        (std::cmp::Reverse(p), r, todo[g[0]].0.id.clone())
    });
    let auth = safe_updater_engine::pull_auths(&client, &todo_assets).await;
    let limit = Arc::new(Semaphore::new(cfg.daemon.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let todo = Arc::new(todo);
    let cfg_arc = Arc::new(cfg.clone());
    let specs = Arc::new(specs);
    let auth = Arc::new(auth);
    for group in groups {
        let permit_source = Arc::clone(&limit);
        let (todo, cfg, specs, auth) = (
            Arc::clone(&todo),
            Arc::clone(&cfg_arc),
            Arc::clone(&specs),
            Arc::clone(&auth),
        );
        let shared = Arc::clone(shared);
        let cid = cid.to_owned();
        tasks.spawn(async move {
            let Ok(_permit) = permit_source.acquire_owned().await else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for i in group {
                if shared.stopping.load(Ordering::SeqCst) {
                    tracing::info!(event = "update.not_started", asset_id = %todo[i].0.id, "stopping: not started");
                    break;
                }
                let (asset, target, change) = &todo[i];
                out.push(update_one(&shared, &cfg, &specs, &auth, asset, target, change, &cid).await);
            }
            out
        });
    }
    let mut applied = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(list) = done {
            applied.extend(list);
        }
    }
    prune_audit(shared, cfg, &mut store, now).await;
    Ok(CycleSummary {
        checked: report.checks.len(),
        applied,
    })
}

fn namespace_of(asset: &Asset) -> String {
    asset.namespace.clone().unwrap_or_default()
}

fn tag_of(image: &str) -> Option<String> {
    ImageRef::parse(image)
        .ok()
        .and_then(|r| r.tag().map(str::to_owned))
}

#[allow(clippy::too_many_arguments)]
async fn update_one(
    shared: &Shared,
    cfg: &Config,
    specs: &[EngineSpec],
    auth: &BTreeMap<String, RegistryAuth>,
    asset: &Asset,
    target: &str,
    change: &str,
    cycle_id: &str,
) -> ApplyOutcome {
    let cid = format!("{cycle_id}-{}", asset.name);
    let span = tracing::info_span!("update", correlation_id = %cid, asset_id = %asset.id, operation = "update");
    let _enter = span.enter();
    let labels = UpdateLabels::new(asset.kind.asset_type(), namespace_of(asset), change);
    shared.metrics.update_attempted(&labels);
    tracing::info!(event = "update.started", to = target, "update started");
    let started = Instant::now();
    let outcome = match apply(shared, cfg, specs, auth, asset, target, &cid).await {
        Ok(o) => o,
        Err(e) => ApplyOutcome {
            asset_id: asset.id.clone(),
            from: asset.image.clone(),
            to: target.to_owned(),
            update_id: None,
            status: "failed".into(),
            detail: Some(e.to_string()),
        },
    };
    let elapsed = started.elapsed();
    let (metric, kind) = match outcome.status.as_str() {
        "succeeded" => (Some(UpdateOutcome::Succeeded), Some(EventKind::Applied)),
        "rolled_back" => (Some(UpdateOutcome::RolledBack), Some(EventKind::RolledBack)),
        "skipped" | "not_started" => (None, None),
        _ => (Some(UpdateOutcome::Failed), Some(EventKind::Failed)),
    };
    if let Some(m) = metric {
        shared.metrics.update_finished(&labels, m, elapsed);
        if m == UpdateOutcome::RolledBack {
            shared
                .metrics
                .rollback(asset.kind.asset_type(), &namespace_of(asset), true);
        }
        shared.metrics.health_check_finished(
            asset.kind.asset_type(),
            &namespace_of(asset),
            elapsed,
            m == UpdateOutcome::Succeeded,
        );
    }
    if let Some(kind) = kind {
        let mut event = Event::new(
            kind,
            asset.id.clone(),
            asset.name.clone(),
            asset.kind.as_str(),
            Timestamp::now(),
        );
        event.namespace = asset.namespace.clone();
        event.from = tag_of(&asset.image);
        event.to = Some(target.to_owned());
        event.decision = "approve".into();
        event.reason = outcome
            .detail
            .clone()
            .unwrap_or_else(|| format!("{} is running", target));
        event.correlation_id = Some(cid.clone());
        shared.notifier.notify(event);
    }
    tracing::info!(
        event = "update.finished",
        result = %outcome.status,
        to = target,
        duration_ms = elapsed.as_millis() as u64,
        detail = outcome.detail.as_deref().unwrap_or(""),
        "update finished"
    );
    outcome
}

async fn apply(
    shared: &Shared,
    cfg: &Config,
    specs: &[EngineSpec],
    auth: &BTreeMap<String, RegistryAuth>,
    asset: &Asset,
    target: &str,
    cid: &str,
) -> Result<ApplyOutcome, EngineError> {
    // Each update has its own connection: SQLite (WAL) serialises the few writes, and no
    // update waits on another's health window.
    let mut store = Store::open(&shared.options.state_path)?;
    let not_started = |detail: String| ApplyOutcome {
        asset_id: asset.id.clone(),
        from: asset.image.clone(),
        to: target.to_owned(),
        update_id: None,
        status: "not_started".into(),
        detail: Some(detail),
    };
    let Some(spec) = specs.iter().find(|s| s.name == asset.location) else {
        return Ok(not_started(format!(
            "engine {} is not configured",
            asset.location
        )));
    };
    let engine = match Engine::connect(spec, ConnectOptions::default()).await {
        Ok(e) => e,
        Err(e) => return Ok(not_started(e.to_string())),
    };
    safe_updater_engine::apply_by_policy(
        cfg,
        &mut store,
        &engine,
        asset,
        target,
        auth,
        &shared.options.actor,
        cid,
    )
    .await
}

fn record_inventory(
    shared: &Shared,
    assets: &[Asset],
    by_id: &HashMap<&str, &Asset>,
    report: &CheckReport,
) {
    let mut tracked: BTreeMap<(String, String), i64> = BTreeMap::new();
    for a in assets {
        *tracked
            .entry((a.kind.asset_type().to_owned(), namespace_of(a)))
            .or_default() += 1;
    }
    shared
        .metrics
        .set_assets_tracked(tracked.into_iter().map(|((t, n), c)| {
            (
                InventoryLabels {
                    asset_type: t,
                    namespace: n,
                },
                c,
            )
        }));
    let mut pending: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
    for c in &report.checks {
        let Some(e) = &c.evaluation else { continue };
        let Some(asset) = by_id.get(c.asset_id.as_str()) else {
            continue;
        };
        for cand in &e.candidates {
            let status = match cand.decision {
                Verdict::PendingReview => "approval",
                Verdict::ManualApproval => "manual",
                Verdict::Defer => "deferred",
                _ => continue,
            };
            *pending
                .entry((
                    asset.kind.asset_type().to_owned(),
                    namespace_of(asset),
                    cand.change.clone(),
                    status.to_owned(),
                ))
                .or_default() += 1;
        }
    }
    shared
        .metrics
        .set_pending_updates(pending.into_iter().map(|((t, n, u, s), c)| {
            (
                PendingLabels {
                    asset_type: t,
                    namespace: n,
                    update_type: u,
                    status: s,
                },
                c,
            )
        }));
}

/// "Approval needed", once per review: only for reviews decided in this cycle.
fn notify_new_reviews(
    shared: &Shared,
    store: &Store,
    by_id: &HashMap<&str, &Asset>,
    now: Timestamp,
) {
    let pending = match safe_updater_engine::operator::pending(store) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list pending reviews");
            return;
        }
    };
    let oldest = pending.iter().map(|p| p.decided_at).min();
    shared
        .metrics
        .set_oldest_pending_approval(oldest.map(std::time::SystemTime::from));
    for p in pending.into_iter().filter(|p| p.decided_at >= now) {
        let Some(asset) = by_id.get(p.asset_id.as_str()) else {
            continue;
        };
        let mut event = Event::new(
            EventKind::ApprovalNeeded,
            asset.id.clone(),
            asset.name.clone(),
            asset.kind.as_str(),
            now,
        );
        event.namespace = asset.namespace.clone();
        event.from = tag_of(&asset.image);
        event.to = Some(p.candidate.clone());
        event.decision = "pending_review".into();
        event.reason = p.reason.clone();
        tracing::info!(event = "approval.needed", asset_id = %asset.id, candidate = %p.candidate, approval_id = %p.id, "an update waits for approval");
        shared.notifier.notify(event);
    }
}

/// Prunes the audit trail once a day when `audit.retention` is set.
async fn prune_audit(shared: &Shared, cfg: &Config, store: &mut Store, now: Timestamp) {
    let Some(retention) = cfg.audit.retention else {
        return;
    };
    let mut last = shared.last_pruned.lock().await;
    if last.is_some_and(|at| {
        now.duration_since(at).unsigned_abs() < std::time::Duration::from_secs(24 * 3600)
    }) {
        return;
    }
    *last = Some(now);
    let Ok(span) = jiff::SignedDuration::try_from(retention) else {
        return;
    };
    let Ok(older_than) = now.checked_sub(span) else {
        return;
    };
    match store.prune_audit(
        older_than,
        now,
        &shared.options.actor,
        Some("audit.retention"),
    ) {
        Ok(r) => tracing::info!(
            event = "audit.pruned",
            removed = r.removed,
            "audit records past retention pruned behind a checkpoint"
        ),
        Err(e) => {
            tracing::warn!(event = "audit.prune_failed", error = %e, "the audit trail could not be pruned")
        }
    }
}
