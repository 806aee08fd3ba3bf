//! One daemon cycle: recover, scan, check what is due (and every asset with queued work), queue
//! what policy approves, run the queued entries that policy still approves with the
//! concurrency limit, record metrics and send notifications. Memory stays proportional to the
//! work in flight, not to the inventory: the check report is dropped before the assets of the
//! work are read, and an update's task is spawned only once it has a concurrency permit. Errors end the cycle with a log
//! line; the next cycle starts afresh.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config::Config;
use safe_updater_core::decide::Verdict;
use safe_updater_core::policy::{AssetView, KEY_PREFIX, parse_duration};
use safe_updater_core::reference::ImageRef;
use safe_updater_core::scope::Selection;
use safe_updater_docker::update::RegistryAuth;
use safe_updater_docker::{ConnectOptions, Engine, EngineSpec};
use safe_updater_engine::{ApplyOutcome, ApplyStatus, AssetCheck, EngineError, Recovery, Stop};
use safe_updater_notify::{Event, EventKind};
use safe_updater_registry::{Cycle, RegistryClient};
use safe_updater_server::{InventoryLabels, PendingLabels, UpdateLabels, UpdateOutcome};
use safe_updater_store::{Enqueued, NewQueueEntry, QueueEnd, QueueEntry, QueueState, Store};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

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
    /// Updates started (whatever their outcome).
    pub applied: usize,
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
    // Instrumented, never entered across an await: the updates of a cycle interleave on one
    // thread, and an entered span would label their lines with whichever was entered last.
    match run_inner(shared, cfg, scope, now, &cid)
        .instrument(span.clone())
        .await
    {
        Ok(summary) => {
            span.in_scope(|| {
                tracing::info!(
                    event = "cycle.finished",
                    result = "ok",
                    checked = summary.checked,
                    applied = summary.applied,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "cycle finished"
                )
            });
            summary
        }
        Err(e) => {
            span.in_scope(|| {
                tracing::error!(event = "cycle.finished", result = "error", error = %e, "cycle failed")
            });
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
    let recovered = safe_updater_engine::recover(&mut store, &engines, actor, &|_| true)
        .await
        .map_err(|e| e.to_string())?;
    drop(engines);
    report_recoveries(shared, &store, &recovered);

    let scan_started = Instant::now();
    let selection = Selection::scoped(cfg.scope.clone());
    let scan = safe_updater_engine::scan(
        &mut store,
        &specs,
        cfg.docker.include_stopped,
        &selection,
        now,
        actor,
    )
    .await
    .map_err(|e| e.to_string())?;
    shared
        .metrics
        .scan_finished("docker", scan_started.elapsed(), scan.failed_engines() == 0);
    for e in scan.engines.iter().filter(|e| e.error.is_some()) {
        tracing::warn!(event = "scan.engine_failed", engine = %e.engine, error = %e.error.clone().unwrap_or_default(), "engine not scanned");
    }
    drop(scan);

    // Which assets are checked now: those due (or triggered), and every asset with queued
    // work, so that nothing runs on a stale decision (a window that closed, a pin set since).
    let mut open: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for e in store.open_queue().map_err(|e| e.to_string())? {
        open.entry(e.asset_id).or_default().push((e.id, e.target));
    }
    // Held through the check: cycles are the only users, and a copy would be as large as the
    // inventory.
    let mut last = shared.last_checked.lock().await;
    let wanted = |a: &Asset| -> bool {
        selection.selects(&AssetView::from(a))
            && (open.contains_key(&a.id) || in_scope(&scope, &last, a, now))
    };
    let cycle = Cycle::with_budget(client.clone(), cfg.registries.cycle_timeout);
    let mut tally = Tally::new(&scope, &open, cid);
    safe_updater_engine::check_each(
        cfg,
        &mut store,
        &cycle,
        now,
        actor,
        cid,
        &wanted,
        &mut |asset, check| tally.take(asset, check),
    )
    .await
    .map_err(|e| e.to_string())?;
    drop(cycle);
    for (registry, counts) in client.registry_requests() {
        shared
            .metrics
            .registry_requests(&registry, counts.total(), counts.errors);
    }
    let checked = tally.checked.len();
    for id in std::mem::take(&mut tally.checked) {
        last.insert(id, now);
    }
    drop(last);
    record_inventory(shared, &store, std::mem::take(&mut tally.pending));

    // Queue what policy approves now, then take from the queue what may run now.
    let approved = enqueue_approved(&mut store, std::mem::take(&mut tally.approved), now)?;
    let entries = runnable(&mut store, &tally.fates, &approved, now)?;
    drop(tally);
    drop((approved, open));
    notify_new_reviews(shared, &mut store, now);

    // Ordering the work needs only each asset's dependency names; the assets themselves are
    // read group by group as the groups start, so that a long queue is not held in memory.
    let mut work_entries = Vec::with_capacity(entries.len());
    let mut nodes = Vec::with_capacity(entries.len());
    let mut registries = BTreeSet::new();
    for entry in entries {
        if let Some(asset) = store
            .get_asset(&entry.asset_id)
            .map_err(|e| e.to_string())?
        {
            nodes.push(safe_updater_engine::DependencyNode::of(&asset));
            registries.extend(safe_updater_engine::registry_of(&asset.image));
            work_entries.push(entry);
        }
    }
    let mut groups = safe_updater_engine::dependency_groups_of(&nodes);
    drop(nodes);
    groups.sort_by_key(|g| {
        let p = g
            .iter()
            .map(|&i| work_entries[i].priority)
            .max()
            .unwrap_or(0);
        let r = g
            .iter()
            .map(|&i| change_rank(&work_entries[i].change))
            .min()
            .unwrap_or(4);
        (std::cmp::Reverse(p), r, work_entries[g[0]].asset_id.clone())
    });
    let auth = safe_updater_engine::pull_auths_for(&client, registries).await;
    let mut slots: Vec<Option<Work>> = work_entries.into_iter().map(Some).collect();
    let limit = Arc::new(Semaphore::new(cfg.daemon.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let cfg_arc = Arc::new(cfg.clone());
    let specs = Arc::new(specs);
    let auth = Arc::new(auth);
    let mut applied = 0;
    let mut count = |list: Vec<ApplyOutcome>| {
        applied += list.iter().filter(|o| o.status.started()).count();
    };
    for group in groups {
        // A task is spawned only once it has a permit: at most `concurrency` futures exist
        // at a time, however many updates are due (each holds a whole update's state).
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        while let Some(done) = tasks.try_join_next() {
            if let Ok(list) = done {
                count(list);
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            tracing::info!(
                event = "update.not_started",
                remaining = group.len(),
                "stopping: not started; the entries stay queued"
            );
            break;
        }
        let mut work: Vec<(Work, Asset)> = Vec::with_capacity(group.len());
        for entry in group.iter().filter_map(|&i| slots[i].take()) {
            // An asset gone since is the next cycle's to drop; a store error is logged, not
            // returned: returning would abort the updates in flight.
            match store.get_asset(&entry.asset_id) {
                Ok(Some(asset)) => work.push((entry, asset)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(event = "update.not_started", asset_id = %entry.asset_id, error = %e, "cannot read the asset; the entry stays queued");
                }
            }
        }
        let (cfg, specs, auth) = (Arc::clone(&cfg_arc), Arc::clone(&specs), Arc::clone(&auth));
        let shared = Arc::clone(shared);
        let cid = cid.to_owned();
        tasks.spawn(async move {
            let _permit = permit;
            let mut out = Vec::new();
            for (entry, asset) in &work {
                if shared.stopping.load(Ordering::SeqCst) {
                    tracing::info!(event = "update.not_started", asset_id = %asset.id, "stopping: not started; the entry stays queued");
                    break;
                }
                out.push(update_one(&shared, &cfg, &specs, &auth, entry, asset, &cid).await);
            }
            out
        }.in_current_span());
    }
    drop(slots);
    while let Some(done) = tasks.join_next().await {
        if let Ok(list) = done {
            count(list);
        }
    }
    // Kubernetes after Docker, one update at a time (see kube_cycle), in scheduled cycles only:
    // a registry webhook's trigger names repositories the Docker check already covered.
    if matches!(scope, Scope::Due) && !shared.stopping.load(Ordering::SeqCst) {
        applied += crate::kube_cycle::run(shared, cfg, &mut store, now, cid).await;
    }
    prune_audit(shared, cfg, &mut store, now).await;
    Ok(CycleSummary { checked, applied })
}

/// Logs what recovery found, and counts and announces every update it could not bring back:
/// its service may be down until a later cycle manages. Updates other live processes own are
/// only logged.
pub(crate) fn report_recoveries(shared: &Shared, store: &Store, recovered: &[Recovery]) {
    for r in recovered {
        if r.held_by.is_some() {
            tracing::info!(event = "update.left_alone", asset_id = %r.asset_id, update = r.update_id, detail = %r.detail, "an update another process owns was left alone");
        } else if r.restored {
            tracing::warn!(event = "update.recovered", asset_id = %r.asset_id, update = r.update_id, restored = true, detail = %r.detail, "an interrupted update was brought back");
        } else {
            tracing::error!(event = "update.unrecovered", asset_id = %r.asset_id, update = r.update_id, restored = false, detail = %r.detail, "an interrupted update could not be brought back");
            let first = shared
                .unrecovered
                .lock()
                .is_ok_and(|mut seen| seen.insert(r.update_id));
            if !first {
                continue;
            }
            let asset = store.get_asset(&r.asset_id).ok().flatten();
            let (asset_type, namespace) = match &asset {
                Some(a) => (a.kind.asset_type(), namespace_of(a)),
                None => ("docker", String::new()),
            };
            shared.metrics.rollback(asset_type, &namespace, false);
            shared.notifier.notify(unrecovered_event(r, asset.as_ref()));
        }
    }
}

fn in_scope(scope: &Scope, last: &HashMap<String, Timestamp>, a: &Asset, now: Timestamp) -> bool {
    match scope {
        Scope::Triggered(triggers) => triggers.iter().any(|t| concerns(t, a)),
        Scope::Due => match label(a, CHECK_INTERVAL_LABEL).map(parse_duration) {
            Some(Ok(every)) => last.get(&a.id).is_none_or(|at| {
                now.duration_since(*at).unsigned_abs() + std::time::Duration::from_secs(1) >= every
            }),
            _ => true,
        },
    }
}

/// Entries claimed this many times and never finished are dropped: something about them
/// keeps killing the process.
const MAX_ATTEMPTS: u32 = 3;

/// What a cycle keeps of each check outcome: counters and the queue's business, never the
/// evaluations themselves (there are as many as assets checked).
struct Tally<'a> {
    scope: &'a Scope,
    /// The open queue entries by asset: `(entry id, target)`.
    open: &'a HashMap<String, Vec<(i64, String)>>,
    cid: &'a str,
    checked: Vec<String>,
    /// `safe_updater_pending_updates`: (asset type, namespace, update type, status).
    pending: BTreeMap<(String, String, String, String), i64>,
    /// Container candidates policy approves now (`act_on`), to be queued.
    approved: Vec<NewQueueEntry>,
    /// The open entries of the assets checked, judged by the fresh evaluation.
    fates: HashMap<i64, Fate>,
}

/// A queued entry that may run now: what its update needs of it (a long queue is held in
/// this form until its turn).
struct Work {
    id: i64,
    asset_id: String,
    target: String,
    change: String,
    priority: i64,
    attempts: u32,
}

impl From<QueueEntry> for Work {
    fn from(e: QueueEntry) -> Self {
        Work {
            id: e.id,
            asset_id: e.asset_id,
            target: e.target,
            change: e.change,
            priority: e.priority,
            attempts: e.attempts,
        }
    }
}

/// What becomes of a queued entry after its asset's check.
enum Fate {
    Run,
    /// Deferred (a window, a cooldown, a snooze) or its asset could not be checked.
    Keep,
    /// No longer approved: why.
    Drop(String),
}

impl<'a> Tally<'a> {
    fn new(scope: &'a Scope, open: &'a HashMap<String, Vec<(i64, String)>>, cid: &'a str) -> Self {
        Tally {
            scope,
            open,
            cid,
            checked: Vec::new(),
            pending: BTreeMap::new(),
            approved: Vec::new(),
            fates: HashMap::new(),
        }
    }

    fn take(&mut self, asset: &Asset, check: AssetCheck) {
        self.checked.push(check.asset_id);
        let entries = self.open.get(&asset.id).map(Vec::as_slice).unwrap_or(&[]);
        let Some(e) = check.evaluation else {
            for (id, _) in entries {
                self.fates.insert(*id, Fate::Keep);
            }
            return;
        };
        for cand in &e.candidates {
            let status = match cand.decision {
                Verdict::PendingReview => "approval",
                Verdict::ManualApproval => "manual",
                Verdict::Defer => "deferred",
                _ => continue,
            };
            *self
                .pending
                .entry((
                    asset.kind.asset_type().to_owned(),
                    namespace_of(asset),
                    cand.change.clone(),
                    status.to_owned(),
                ))
                .or_default() += 1;
        }
        if let Some(target) = &e.act_on
            && asset.kind == AssetKind::Container
            && let Some(cand) = e
                .candidates
                .iter()
                .find(|x| &x.tag == target && x.decision == Verdict::Approve)
        {
            let reason = if cand.rule == "approval" {
                "approved"
            } else if let Scope::Triggered(ts) = self.scope
                && ts
                    .iter()
                    .any(|t| matches!(t, Trigger::Repository { .. }) && concerns(t, asset))
            {
                "webhook"
            } else {
                "auto"
            };
            self.approved.push(NewQueueEntry {
                asset_id: asset.id.clone(),
                target: target.clone(),
                change: cand.change.clone(),
                reason: reason.to_owned(),
                priority: priority(asset),
                correlation_id: Some(self.cid.to_owned()),
            });
        }
        for (id, target) in entries {
            let cand = e.candidates.iter().find(|c| &c.tag == target);
            let fate = if e.act_on.as_deref() == Some(target.as_str())
                && cand.is_some_and(|c| c.decision == Verdict::Approve)
            {
                Fate::Run
            } else {
                match cand {
                    Some(c) if c.decision == Verdict::Defer => Fate::Keep,
                    Some(c) => Fate::Drop(format!("no longer approved: {}", c.reason)),
                    None if &e.current == target => Fate::Drop("it already runs".into()),
                    None => Fate::Drop("no longer proposed".into()),
                }
            };
            self.fates.insert(*id, fate);
        }
    }
}

/// Queues what policy approves now; returns the approved target of each asset.
fn enqueue_approved(
    store: &mut Store,
    new: Vec<NewQueueEntry>,
    now: Timestamp,
) -> Result<HashMap<String, String>, String> {
    if new.is_empty() {
        return Ok(HashMap::new());
    }
    let results = store.enqueue(&new, now).map_err(|e| e.to_string())?;
    for (e, r) in new.iter().zip(results) {
        match r {
            Enqueued::Added(id) | Enqueued::Superseded { added: id, .. } => {
                tracing::debug!(event = "queue.added", asset_id = %e.asset_id, to = %e.target, queue_id = id, reason = %e.reason, "update queued");
            }
            Enqueued::Present(_) | Enqueued::Busy(_) => {}
        }
    }
    Ok(new.into_iter().map(|e| (e.asset_id, e.target)).collect())
}

/// The queued entries that may run now: the fresh evaluation of the asset still acts on the
/// entry's target. Entries whose target policy now refuses (or that are moot) are dropped
/// with the reason; those merely deferred (a window, a cooldown, a snooze) or whose asset
/// could not be checked stay queued.
fn runnable(
    store: &mut Store,
    fates: &HashMap<i64, Fate>,
    approved: &HashMap<String, String>,
    now: Timestamp,
) -> Result<Vec<Work>, String> {
    let mut out = Vec::new();
    for entry in store.open_queue().map_err(|e| e.to_string())? {
        if entry.state != QueueState::Queued {
            continue;
        }
        let drop_it = |store: &mut Store, why: &str| -> Result<(), String> {
            tracing::info!(event = "queue.dropped", asset_id = %entry.asset_id, to = %entry.target, reason = %why, "queued update dropped");
            store
                .finish_queued(entry.id, QueueEnd::Dropped, None, Some(why), now)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if entry.attempts >= MAX_ATTEMPTS {
            drop_it(
                store,
                &format!("claimed {} times without finishing", entry.attempts),
            )?;
            continue;
        }
        match fates.get(&entry.id) {
            Some(Fate::Run) => out.push(Work::from(entry)),
            Some(Fate::Keep) => {}
            Some(Fate::Drop(why)) => drop_it(store, why)?,
            // Queued by this cycle.
            None if approved.get(&entry.asset_id) == Some(&entry.target) => {
                out.push(Work::from(entry));
            }
            None => {
                if store
                    .get_asset(&entry.asset_id)
                    .map_err(|e| e.to_string())?
                    .is_none()
                {
                    drop_it(store, "the asset is no longer tracked")?;
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn namespace_of(asset: &Asset) -> String {
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
    entry: &Work,
    asset: &Asset,
    cycle_id: &str,
) -> ApplyOutcome {
    let (target, change) = (entry.target.as_str(), entry.change.as_str());
    let cid = format!("{cycle_id}-{}", asset.name);
    let span = tracing::info_span!("update", correlation_id = %cid, asset_id = %asset.id, operation = "update");
    let labels = UpdateLabels::new(asset.kind.asset_type(), namespace_of(asset), change);
    let started = Instant::now();
    let outcome = match apply(shared, cfg, specs, auth, entry, asset, &labels, &cid)
        .instrument(span.clone())
        .await
    {
        Ok(o) => o,
        Err(e) => ApplyOutcome {
            asset_id: asset.id.clone(),
            from: asset.image.clone(),
            to: target.to_owned(),
            update_id: None,
            status: ApplyStatus::Failed,
            detail: Some(e.to_string()),
        },
    };
    let elapsed = started.elapsed();
    span.in_scope(|| {
        report_outcome(shared, asset, target, change, &outcome, elapsed, &cid);
        tracing::info!(
            event = "update.finished",
            result = %outcome.status,
            to = target,
            duration_ms = elapsed.as_millis() as u64,
            detail = outcome.detail.as_deref().unwrap_or(""),
            "update finished"
        );
    });
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    shared: &Shared,
    cfg: &Config,
    specs: &[EngineSpec],
    auth: &BTreeMap<String, RegistryAuth>,
    entry: &Work,
    asset: &Asset,
    labels: &UpdateLabels,
    cid: &str,
) -> Result<ApplyOutcome, EngineError> {
    let target = entry.target.as_str();
    let not_started =
        |detail: String| ApplyOutcome::not_started(&asset.id, &asset.image, target, detail);
    // Nothing is claimed (nor a store opened) for an update that cannot start: the entry
    // stays queued for the next cycle.
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
    // Each update has its own connection: SQLite (WAL) serialises the few writes, and no
    // update waits on another's health window.
    let mut store = Store::open(&shared.options.state_path)?;
    if !store.claim_queued(entry.id, Timestamp::now())? {
        return Ok(not_started("the queue entry was taken or dropped".into()));
    }
    shared.metrics.update_attempted(labels);
    tracing::info!(
        event = "update.started",
        to = target,
        queue_id = entry.id,
        attempt = entry.attempts + 1,
        "update started"
    );
    let result = safe_updater_engine::apply_by_policy(
        cfg,
        &mut store,
        &engine,
        asset,
        target,
        auth,
        &shared.options.actor,
        cid,
        // SIGTERM lets the updates in flight finish; none is cut short.
        &Stop::never(),
        &safe_updater_engine::Progress::none(),
    )
    .await;
    match &result {
        Ok(o) if o.status == ApplyStatus::Busy => {
            // Another process (a CLI command, another daemon) is updating the asset: the
            // entry waits for it, and the attempt is not counted against it.
            store.unclaim(entry.id, o.detail.as_deref().unwrap_or("busy"))?;
        }
        Ok(o) => {
            store.finish_queued(
                entry.id,
                QueueEnd::Done,
                Some(o.status.as_str()),
                o.detail.as_deref(),
                Timestamp::now(),
            )?;
        }
        Err(e) => {
            // Not the update's verdict: back to the queue, the attempt counted.
            store.release_claim(entry.id, &e.to_string())?;
        }
    }
    result
}

/// Counts a finished update in the metrics and announces it (applied, failed, rolled back);
/// an update that did not start is neither. Docker's and Kubernetes' updates alike.
pub(crate) fn report_outcome(
    shared: &Shared,
    asset: &Asset,
    target: &str,
    change: &str,
    outcome: &ApplyOutcome,
    elapsed: std::time::Duration,
    cid: &str,
) {
    let labels = UpdateLabels::new(asset.kind.asset_type(), namespace_of(asset), change);
    let (metric, kind) = match outcome.status {
        ApplyStatus::Succeeded => (Some(UpdateOutcome::Succeeded), Some(EventKind::Applied)),
        ApplyStatus::RolledBack | ApplyStatus::Interrupted => {
            (Some(UpdateOutcome::RolledBack), Some(EventKind::RolledBack))
        }
        ApplyStatus::Skipped
        | ApplyStatus::NotStarted
        | ApplyStatus::Busy
        | ApplyStatus::Unchanged => (None, None),
        ApplyStatus::Failed | ApplyStatus::Frozen => {
            (Some(UpdateOutcome::Failed), Some(EventKind::Failed))
        }
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
    if kind.is_some()
        && let Some(event) = outcome_event(asset, target, outcome, cid)
    {
        shared.notifier.notify(event);
    }
}

/// The notification of how an update of `asset` to `target` (a tag, or a chart version)
/// ended: applied, rolled back, failed; `None` for an update that did not start or had
/// nothing to do. What `watch` and the CLI commands send.
pub fn outcome_event(
    asset: &Asset,
    target: &str,
    outcome: &ApplyOutcome,
    cid: &str,
) -> Option<Event> {
    let kind = match outcome.status {
        ApplyStatus::Succeeded => EventKind::Applied,
        ApplyStatus::RolledBack | ApplyStatus::Interrupted => EventKind::RolledBack,
        ApplyStatus::Failed | ApplyStatus::Frozen => EventKind::Failed,
        ApplyStatus::Skipped
        | ApplyStatus::NotStarted
        | ApplyStatus::Busy
        | ApplyStatus::Unchanged => return None,
    };
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
    event.correlation_id = Some(cid.to_owned());
    Some(event)
}

/// The notification of an interrupted update nobody could bring back.
pub fn unrecovered_event(r: &Recovery, asset: Option<&Asset>) -> Event {
    let (kind, name) = match asset {
        Some(a) => (a.kind.as_str(), a.name.clone()),
        None => ("", r.asset_id.clone()),
    };
    let mut event = Event::new(
        EventKind::Failed,
        r.asset_id.clone(),
        name,
        kind,
        Timestamp::now(),
    );
    event.namespace = asset.and_then(|a| a.namespace.clone());
    event.reason = format!(
        "update #{} was interrupted and could not be brought back: {}",
        r.update_id, r.detail
    );
    event
}

fn record_inventory(
    shared: &Shared,
    store: &Store,
    pending: BTreeMap<(String, String, String, String), i64>,
) {
    // Counted by the database: the inventory itself is not read into memory.
    match store.count_assets_by_kind_namespace() {
        Ok(counts) => {
            let mut tracked: BTreeMap<(String, String), i64> = BTreeMap::new();
            for (kind, namespace, n) in counts {
                *tracked
                    .entry((kind.asset_type().to_owned(), namespace.unwrap_or_default()))
                    .or_default() += i64::try_from(n).unwrap_or(i64::MAX);
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
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the tracked assets"),
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

/// "Approval needed", once per review: the store remembers which reviews were announced, so
/// neither a later cycle nor a restart announces one again. Walks the reviews a page at a time:
/// there can be as many as assets.
fn notify_new_reviews(shared: &Shared, store: &mut Store, now: Timestamp) {
    let mut oldest: Option<Timestamp> = None;
    let mut after = None;
    loop {
        let (page, next) = match safe_updater_engine::operator::pending_page(store, after, 256) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pending reviews");
                return;
            }
        };
        oldest = page.iter().map(|p| p.decided_at).chain(oldest).min();
        let pairs: Vec<(String, String)> = page
            .iter()
            .map(|p| (p.asset_id.clone(), p.candidate.clone()))
            .collect();
        let fresh = match store.mark_reviews_notified(&pairs, now) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record review notices; none sent this cycle");
                return;
            }
        };
        for (p, fresh) in page.into_iter().zip(fresh) {
            if !fresh {
                continue;
            }
            let mut event = Event::new(
                EventKind::ApprovalNeeded,
                p.asset_id.clone(),
                p.asset_name.clone(),
                p.kind.as_str(),
                now,
            );
            event.namespace = p.namespace.clone();
            event.from = tag_of(&p.from);
            event.to = Some(p.candidate.clone());
            event.decision = "pending_review".into();
            event.reason = p.reason.clone();
            tracing::info!(event = "approval.needed", asset_id = %p.asset_id, candidate = %p.candidate, approval_id = %p.id, "an update waits for approval");
            shared.notifier.notify(event);
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    shared
        .metrics
        .set_oldest_pending_approval(oldest.map(std::time::SystemTime::from));
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
