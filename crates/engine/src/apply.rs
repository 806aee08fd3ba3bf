//! Execute and verify one container update, and recover updates a crash interrupted.
//!
//! The order is the safety argument: the snapshot of the running container is committed to the
//! store (`begin_update`) before anything on the host changes; every later step is one the
//! Docker adapter can undo from any intermediate state (`restore`). So whatever the process
//! dies after, the next start finds an `in_progress` update with what it needs, and restores
//! the previous container exactly.
//!
//! An update in progress belongs to the process doing it (its owner and lease are in the
//! store, renewed by a [`LeaseKeeper`]): [`recover`] restores only updates whose owner is gone,
//! and a process that finds another's update of the same asset leaves that asset alone. A
//! [`Stop`] (the CLI's first Ctrl-C) finishes the step in progress and then restores, unless
//! the new version already passed verification.

use safe_updater_core::asset::Asset;
use safe_updater_core::audit::AuditEvent;
use safe_updater_core::config::HealthConfig;
use safe_updater_core::health::{self as health_spec, CheckRule, CheckSpec};
use safe_updater_core::lease::Standing;
use safe_updater_core::policy::{AssetView, OnFailure};
use safe_updater_core::reference::ImageRef;
use safe_updater_docker::Engine;
use safe_updater_docker::health::{self, Check, ExecCheck, HttpCheck, Monitor, TcpCheck};
use safe_updater_docker::lifecycle::{self, HookResult, Stage};
use safe_updater_docker::update::{self, ContainerSnapshot, RegistryAuth};
use safe_updater_registry::Credential;
use safe_updater_store::{Store, StoreError, UpdateId, UpdateOutcome, UpdateStart, UpdateStatus};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::lease::{LeaseKeeper, standing_of};
use crate::progress::Progress;
use crate::stop::Stop;

/// How one update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStatus {
    /// The new version runs and passed verification.
    Succeeded,
    /// The new version failed verification; the previous one was restored.
    RolledBack,
    /// The new version failed verification and was left as it is (`on_failure: freeze`).
    Frozen,
    /// It could not be done: nothing changed, or restoring failed too (`detail` says which;
    /// a failed restore is retried by whoever recovers the update).
    Failed,
    /// A pre-update command declined it.
    Skipped,
    /// It did not start: something it needs is missing (`detail` says what).
    NotStarted,
    /// Nothing to do: the asset already runs that very image.
    Unchanged,
    /// Another live process is updating this asset: left alone.
    Busy,
    /// A stop (SIGINT/SIGTERM) cut it short; the previous version was restored. It says
    /// nothing against the version, which may be tried again.
    Interrupted,
}

impl ApplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyStatus::Succeeded => "succeeded",
            ApplyStatus::RolledBack => "rolled_back",
            ApplyStatus::Frozen => "frozen",
            ApplyStatus::Failed => "failed",
            ApplyStatus::Skipped => "skipped",
            ApplyStatus::NotStarted => "not_started",
            ApplyStatus::Unchanged => "unchanged",
            ApplyStatus::Busy => "busy",
            ApplyStatus::Interrupted => "interrupted",
        }
    }

    /// Whether an update started (its outcome is news: counted, announced).
    pub fn started(self) -> bool {
        !matches!(
            self,
            ApplyStatus::NotStarted
                | ApplyStatus::Busy
                | ApplyStatus::Skipped
                | ApplyStatus::Unchanged
        )
    }

    /// Whether the asset ends where it was asked to be.
    pub fn done(self) -> bool {
        matches!(self, ApplyStatus::Succeeded | ApplyStatus::Unchanged)
    }
}

impl std::fmt::Display for ApplyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<UpdateStatus> for ApplyStatus {
    fn from(s: UpdateStatus) -> Self {
        match s {
            UpdateStatus::Succeeded => ApplyStatus::Succeeded,
            UpdateStatus::RolledBack => ApplyStatus::RolledBack,
            UpdateStatus::Frozen => ApplyStatus::Frozen,
            UpdateStatus::Failed | UpdateStatus::InProgress => ApplyStatus::Failed,
        }
    }
}

/// How one update ended.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyOutcome {
    pub asset_id: String,
    pub from: String,
    pub to: String,
    pub update_id: Option<i64>,
    pub status: ApplyStatus,
    pub detail: Option<String>,
}

impl ApplyOutcome {
    /// An update that did not start, and why.
    pub fn not_started(asset_id: &str, from: &str, to: &str, detail: String) -> ApplyOutcome {
        ApplyOutcome {
            asset_id: asset_id.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            update_id: None,
            status: ApplyStatus::NotStarted,
            detail: Some(detail),
        }
    }
}

/// Everything an update needs besides the asset and its target.
#[derive(Debug, Clone)]
pub struct ApplySettings<'a> {
    pub health: &'a HealthConfig,
    /// Configured checks (`health.checks`); those matching the asset apply.
    pub checks: &'a [CheckRule],
    pub on_failure: OnFailure,
    pub actor: &'a str,
    pub correlation_id: &'a str,
    /// Cuts the update short between steps (see [`apply`]).
    pub stop: Stop,
    /// Hears of each round of the health window.
    pub progress: Progress,
}

/// The engine-side credential for pulling: Basic only (what `X-Registry-Auth` carries for
/// password logins).
pub fn pull_auth(credential: Option<Credential>) -> Option<RegistryAuth> {
    match credential {
        Some(Credential::Basic { username, password }) => Some(RegistryAuth {
            username,
            password: password.expose().to_owned(),
        }),
        _ => None,
    }
}

/// Pull credentials for the registries these assets use, resolved the way the registry client
/// resolves them (config, then Docker's `config.json` and helpers); Basic only, as the engine
/// takes them. A registry whose lookup fails is logged and pulled from anonymously.
pub async fn pull_auths(
    client: &safe_updater_registry::RegistryClient,
    assets: &[Asset],
) -> std::collections::BTreeMap<String, RegistryAuth> {
    let registries = assets
        .iter()
        .filter_map(|a| registry_of(&a.image))
        .collect();
    pull_auths_for(client, registries).await
}

/// The registry host of an image reference, `None` when it cannot be read.
pub fn registry_of(image: &str) -> Option<String> {
    ImageRef::parse(image).ok().map(|r| r.registry().to_owned())
}

/// [`pull_auths`] for these registry hosts.
pub async fn pull_auths_for(
    client: &safe_updater_registry::RegistryClient,
    registries: std::collections::BTreeSet<String>,
) -> std::collections::BTreeMap<String, RegistryAuth> {
    let mut out = std::collections::BTreeMap::new();
    for r in registries {
        match client.credential_for(&r).await {
            Ok(c) => {
                if let Some(auth) = pull_auth(c) {
                    out.insert(r, auth);
                }
            }
            Err(e) => tracing::warn!(registry = %r, error = %e, "no pull credentials"),
        }
    }
    out
}

fn audit(
    store: &mut Store,
    asset: &Asset,
    s: &ApplySettings<'_>,
    action: &str,
    details: serde_json::Value,
) -> Result<(), EngineError> {
    store.append_audit(AuditEvent {
        timestamp: jiff::Timestamp::now(),
        actor: s.actor.to_owned(),
        action: action.to_owned(),
        asset_id: Some(asset.id.clone()),
        correlation_id: Some(s.correlation_id.to_owned()),
        details,
    })?;
    Ok(())
}

/// The checks for a container: its own HEALTHCHECK (or, without one, staying up), the
/// configured checks that match it, and those its labels ask for. Secrets are read here, before
/// anything changes, so a check that cannot be run stops the update instead of failing it.
pub fn checks_for(asset: &Asset, rules: &[CheckRule]) -> Result<Vec<Check>, String> {
    let (specs, problems) = health_spec::checks_for(rules, &AssetView::from(asset));
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let mut checks = vec![Check::Docker];
    for spec in specs {
        checks.push(match spec {
            CheckSpec::Http(h) => {
                let basic_auth = match h.basic_auth {
                    Some((user, secret)) => Some((
                        user,
                        crate::settings::resolve_secret(&secret, &|var| std::env::var(var).ok())
                            .map_err(|e| format!("the health check's password: {e}"))?,
                    )),
                    None => None,
                };
                Check::Http(HttpCheck {
                    url: h.url,
                    method: h.method,
                    headers: h.headers,
                    expected_status: h.expect_status.0..=h.expect_status.1,
                    body_contains: h.body_contains,
                    timeout: h.timeout,
                    tls_verify: h.tls_verify,
                    ca_file: h.ca_file.map(Into::into),
                    follow_redirects: h.follow_redirects,
                    basic_auth,
                })
            }
            CheckSpec::Tcp(t) => Check::Tcp(TcpCheck {
                host: t.host,
                port: t.port,
                timeout: t.timeout,
            }),
            CheckSpec::Exec(e) => Check::Exec(ExecCheck {
                cmd: e.command,
                timeout: e.timeout,
                expect_exit: e.expect_exit,
                output_contains: e.output_contains,
            }),
        });
    }
    Ok(checks)
}

/// What an update would do, for `update --dry-run`: from and to, the change and the rule that
/// allows it, the checks that will verify it, the hooks that will run, and what happens if it
/// fails.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedUpdate {
    pub asset_id: String,
    pub from: String,
    pub to: String,
    /// `patch`, `minor`, ... (`None` for a version an operator named).
    pub change: Option<String>,
    /// The setting that lets it proceed (`default.patch`, `approval`, `operator`).
    pub rule: String,
    pub reason: Option<String>,
    /// What verifies it: `docker` (the image's HEALTHCHECK, or staying up without one),
    /// `rollout` for Kubernetes, then the configured and labelled checks.
    pub checks: Vec<String>,
    /// Lifecycle commands that run around it (their labels).
    pub hooks: Vec<String>,
    /// `rollback` or `freeze`, and the rule that says so.
    pub on_failure: String,
    /// Why the update step would refuse it, when it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The plan of updating `asset` to `to` (a tag or chart version), with the policy's candidate
/// for it when policy chose it.
pub fn plan_update(
    config: &safe_updater_core::config::Config,
    asset: &Asset,
    to: &str,
    candidate: Option<&safe_updater_core::decide::Candidate>,
) -> PlannedUpdate {
    let policy = config.policy.resolve_asset(asset);
    let refused = update_refusal(asset, &config.health_checks);
    let mut checks = Vec::new();
    if asset.kind == safe_updater_core::asset::AssetKind::Container {
        if let Ok(list) = checks_for(asset, &config.health_checks) {
            checks = list.iter().map(Check::label).collect();
        }
    } else {
        checks.push("rollout and readiness".to_owned());
        let (specs, _) = health_spec::checks_for(&config.health_checks, &AssetView::from(asset));
        checks.extend(specs.iter().map(|c| match c {
            CheckSpec::Http(h) => format!(
                "http {} {}",
                h.method,
                safe_updater_core::redact::url(&h.url)
            ),
            CheckSpec::Tcp(t) => format!("tcp {}:{}", t.host, t.port),
            CheckSpec::Exec(e) => format!("exec {}", e.command.join(" ")),
        }));
    }
    let hooks = if asset.kind == safe_updater_core::asset::AssetKind::Container {
        [Stage::PreUpdate, Stage::PostUpdate]
            .into_iter()
            .filter_map(|stage| lifecycle::hook(&asset.labels, stage).ok().flatten())
            .map(|h| h.label)
            .collect()
    } else {
        Vec::new()
    };
    PlannedUpdate {
        asset_id: asset.id.clone(),
        from: asset.image.clone(),
        to: to.to_owned(),
        change: candidate.map(|c| c.change.clone()),
        rule: candidate.map_or_else(|| "operator".to_owned(), |c| c.rule.clone()),
        reason: candidate.map(|c| c.reason.clone()),
        checks,
        hooks,
        on_failure: format!(
            "{} ({})",
            match policy.on_failure.value {
                OnFailure::Rollback => "rollback",
                OnFailure::Freeze => "freeze",
            },
            policy.on_failure.rule
        ),
        refused,
    }
}

/// Why the update step would refuse to run for `asset` whatever the version: health checks
/// that cannot be prepared (a label that does not parse, a password that cannot be read) or
/// lifecycle hook labels that do not parse. The check reads it as a fact, so a refused update
/// is never offered as one that would run.
pub(crate) fn update_refusal(asset: &Asset, rules: &[CheckRule]) -> Option<String> {
    if let Err(e) = checks_for(asset, rules) {
        return Some(format!("its health checks cannot be prepared: {e}"));
    }
    if asset.kind == safe_updater_core::asset::AssetKind::Container {
        for stage in [Stage::PreUpdate, Stage::PostUpdate] {
            if let Err(e) = lifecycle::hook(&asset.labels, stage) {
                return Some(format!("its lifecycle hooks cannot be run: {e}"));
            }
        }
    }
    None
}

/// Updates one container to `target_tag`, verifies it, and rolls back (or freezes) on failure.
///
/// A stop requested before the update begins leaves everything as it is; during the pull the
/// pull is abandoned (nothing changed yet); the container replacement and the post-update
/// command always run to their end, and then the previous container is restored; during the
/// health window the window ends at once and the previous container is restored. An update
/// that already passed verification is kept.
pub async fn apply(
    store: &mut Store,
    engine: &Engine,
    asset: &Asset,
    target_tag: &str,
    auth: Option<RegistryAuth>,
    s: &ApplySettings<'_>,
) -> Result<ApplyOutcome, EngineError> {
    let mut outcome = ApplyOutcome::not_started(&asset.id, &asset.image, "", String::new());
    outcome.detail = None;
    let target = match ImageRef::parse(&asset.image).and_then(|r| r.with_tag(target_tag)) {
        Ok(r) => r.familiar_string(),
        Err(e) => {
            outcome.detail = Some(format!("cannot form the new image reference: {e}"));
            return Ok(outcome);
        }
    };
    outcome.to = target.clone();
    if s.stop.requested() {
        outcome.detail = Some("stopping: not started".into());
        return Ok(outcome);
    }
    let checks = match checks_for(asset, s.checks) {
        Ok(c) => c,
        Err(e) => {
            outcome.detail = Some(format!("cannot prepare the health checks: {e}"));
            return Ok(outcome);
        }
    };
    let (pre_hook, post_hook) = match (
        lifecycle::hook(&asset.labels, Stage::PreUpdate),
        lifecycle::hook(&asset.labels, Stage::PostUpdate),
    ) {
        (Ok(pre), Ok(post)) => (pre, post),
        (Err(e), _) | (_, Err(e)) => {
            outcome.detail = Some(format!("cannot run the lifecycle hooks: {e}"));
            return Ok(outcome);
        }
    };
    // Another process's update of this asset, still in its hands (leave the asset alone), or
    // one that was cut short and is not recovered yet (nothing may start): found before
    // anything is touched; begin_update refuses too, under the write lock.
    if let Some((status, why)) = blocked_by(store, &asset.id)? {
        outcome.status = status;
        outcome.detail = Some(why);
        return Ok(outcome);
    }
    let snap = match update::snapshot(engine, &asset.name).await {
        Ok(snap) => snap,
        Err(e) => {
            outcome.detail = Some(format!("cannot snapshot the container: {e}"));
            return Ok(outcome);
        }
    };
    if target == asset.image {
        // The tag it runs: only a new image behind it (the registry moved the tag) is an
        // update. Pulling changes nothing in the container, so it may come first.
        match update::pull(engine, &target, auth.clone()).await {
            Ok(id) if snap.inspect().ok().and_then(|i| i.image).as_deref() == Some(id.as_str()) => {
                outcome.status = ApplyStatus::Unchanged;
                outcome.detail = Some(format!(
                    "{} already runs {target} ({}); nothing to do",
                    asset.id,
                    id.get(..19).unwrap_or(&id)
                ));
                return Ok(outcome);
            }
            Ok(_) => {}
            Err(e) => {
                outcome.status = ApplyStatus::Failed;
                outcome.detail = Some(format!("pull of {target} failed: {e}"));
                return Ok(outcome);
            }
        }
    }
    if let Some(hook) = &pre_hook {
        // Before the update is recorded: a hook that declines leaves nothing to undo, and its
        // version is not marked as failed.
        let result = lifecycle::run(engine, &snap.id, hook).await;
        let (ok, detail) = match &result {
            HookResult::Succeeded { output } => (true, output.clone()),
            HookResult::SkipRequested { output } => (false, output.clone()),
            HookResult::Failed { reason } => (false, reason.clone()),
        };
        audit(
            store,
            asset,
            s,
            "hook.pre_update",
            serde_json::json!({ "to": target, "ok": ok, "detail": detail,
                "skip_requested": matches!(result, HookResult::SkipRequested { .. }) }),
        )?;
        match result {
            HookResult::Succeeded { .. } => {}
            HookResult::SkipRequested { .. } => {
                outcome.status = ApplyStatus::Skipped;
                outcome.detail = Some(format!(
                    "the pre-update command ({}) exited {} and asked to skip this update",
                    hook.label,
                    lifecycle::EX_TEMPFAIL
                ));
                return Ok(outcome);
            }
            HookResult::Failed { reason } => {
                outcome.detail = Some(format!("the pre-update command failed: {reason}"));
                return Ok(outcome);
            }
        }
    }
    if s.stop.requested() {
        outcome.detail = Some("stopping: not started".into());
        return Ok(outcome);
    }
    let snapshot = serde_json::to_value(&snap).map_err(|e| EngineError::Snapshot(e.to_string()))?;
    let id = match store.begin_update(&UpdateStart {
        asset_id: asset.id.clone(),
        from_ref: asset.image.clone(),
        to_ref: target.clone(),
        snapshot,
        correlation_id: Some(s.correlation_id.to_owned()),
        actor: s.actor.to_owned(),
        at: jiff::Timestamp::now(),
    }) {
        Ok(id) => id,
        Err(e @ StoreError::UpdateInProgress { .. }) => {
            // Another process began one since the check above.
            let (status, why) =
                blocked_by(store, &asset.id)?.unwrap_or((ApplyStatus::Busy, e.to_string()));
            outcome.status = status;
            outcome.detail = Some(why);
            return Ok(outcome);
        }
        Err(e) => return Err(e.into()),
    };
    outcome.update_id = Some(id.0);
    let lease = LeaseKeeper::start(store, id);
    let mut run = Run {
        store,
        engine,
        snap: &snap,
        id,
        lease: &lease,
        s,
        outcome,
    };

    let pulled = tokio::select! {
        r = update::pull(engine, &target, auth) => Some(r),
        () = s.stop.wait() => None,
        () = lease.wait_lost() => return Ok(run.lost()),
    };
    match pulled {
        None => {
            return run
                .interrupted(
                    "stopped by a signal during the pull; nothing had changed",
                    false,
                )
                .await;
        }
        Some(Err(e)) => {
            let why = format!("pull of {target} failed: {e}");
            return run.end(UpdateOutcome::Failed, Some(why));
        }
        Some(Ok(_)) => {}
    }
    if lease.lost() {
        return Ok(run.lost());
    }
    // Not cut short: a container half replaced is what a stop must never leave behind.
    let new_id = match update::replace(engine, &snap, &target, None).await {
        Ok(id) => id,
        Err(e) => {
            let why = format!("the new container could not be started: {e}");
            return run.restore_then(UpdateOutcome::RolledBack, why).await;
        }
    };
    if s.stop.requested() {
        return run
            .interrupted(
                "stopped by a signal before the new container was verified",
                true,
            )
            .await;
    }
    let monitor = Monitor {
        window: s.health.window,
        interval: s.health.interval,
        failure_threshold: s.health.failure_threshold,
        ..Monitor::default()
    };
    let post = match &post_hook {
        Some(hook) => {
            let result = lifecycle::run(engine, &new_id, hook).await;
            let failed = match result {
                HookResult::Failed { reason } => Some(reason),
                _ => None,
            };
            audit(
                run.store,
                asset,
                s,
                "hook.post_update",
                serde_json::json!({ "update_id": id.0, "ok": failed.is_none(), "detail": failed }),
            )?;
            failed
        }
        None => None,
    };
    let report = match post {
        Some(reason) => health::HealthReport {
            healthy: false,
            reason: format!("the post-update command failed: {reason}"),
            observations: Vec::new(),
        },
        None => {
            let on_round = |r: &health::Round| s.progress.round(r);
            tokio::select! {
                r = health::monitor_observed(
                    engine, &new_id, &checks, &monitor, &on_round,
                ) => r,
                () = s.stop.wait() => {
                    return run
                        .interrupted("stopped by a signal during its health window", true)
                        .await;
                }
                () = lease.wait_lost() => return Ok(run.lost()),
            }
        }
    };
    let failures: Vec<String> = report
        .observations
        .iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{}: {}", o.check, o.detail))
        .collect();
    audit(
        run.store,
        asset,
        s,
        "health",
        serde_json::json!({
            "update_id": id.0, "healthy": report.healthy, "reason": report.reason,
            "observations": report.observations.len(),
            "failures": failures.iter().take(5).collect::<Vec<_>>(),
        }),
    )?;
    if lease.lost() {
        return Ok(run.lost());
    }
    if report.healthy {
        if let Err(e) = update::finish(engine, &snap, s.health.remove_old_image).await {
            tracing::warn!(asset = %asset.id, error = %e, "the update succeeded but the old container could not be removed");
        }
        let out = run.end(UpdateOutcome::Succeeded, None)?;
        if out.status == ApplyStatus::Succeeded {
            record_new_image(run.store, asset, &target)?;
        }
        return Ok(out);
    }
    let why = format!("{target} failed its health checks: {}", report.reason);
    match s.on_failure {
        OnFailure::Rollback => run.restore_then(UpdateOutcome::RolledBack, why).await,
        OnFailure::Freeze => {
            // Left as it is: the previous container stays stopped beside it for a person to
            // decide, and no further update of this asset runs until one does.
            let out = run.end(UpdateOutcome::Frozen, Some(why))?;
            if out.status == ApplyStatus::Frozen {
                record_new_image(run.store, asset, &target)?;
            }
            Ok(out)
        }
    }
}

/// Why no update of `asset_id` may start now, if one may not: another live process has an
/// update of it in progress (`Busy`: leave the asset alone), or one was cut short and is not
/// recovered yet (`Failed`: the asset is not where any snapshot would put it).
pub fn blocked_by(
    store: &Store,
    asset_id: &str,
) -> Result<Option<(ApplyStatus, String)>, EngineError> {
    let now = jiff::Timestamp::now();
    for u in store.unfinished_updates()? {
        if u.asset_id != asset_id {
            continue;
        }
        return Ok(Some(match standing_of(store, &u, now) {
            Standing::Held { owner, lease_until } => (
                ApplyStatus::Busy,
                format!(
                    "{asset_id} is being updated by another process: update #{} ({} → {}) is in progress, owned by {owner} (lease until {}); leaving it alone",
                    u.id.0,
                    u.from_ref,
                    u.to_ref,
                    lease_until.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
            ),
            Standing::Mine | Standing::Orphaned(_) => (
                ApplyStatus::Failed,
                format!(
                    "update #{} of {asset_id} ({} → {}) was interrupted and is not recovered yet, so nothing else may start; the next run retries the recovery (see `safe-updater history {asset_id}`)",
                    u.id.0, u.from_ref, u.to_ref
                ),
            ),
        }));
    }
    Ok(None)
}

/// One update after `begin_update`: how it ends is recorded here.
struct Run<'a, 's> {
    store: &'a mut Store,
    engine: &'a Engine,
    snap: &'a ContainerSnapshot,
    id: UpdateId,
    lease: &'a LeaseKeeper,
    s: &'a ApplySettings<'s>,
    outcome: ApplyOutcome,
}

impl Run<'_, '_> {
    /// Records `end` (unless the update is no longer this process's) and fills the outcome.
    fn end(
        &mut self,
        end: UpdateOutcome,
        why: Option<String>,
    ) -> Result<ApplyOutcome, EngineError> {
        // What ends up in history and the audit trail for good: no URL's secret parts.
        let why = why.map(|w| safe_updater_core::redact::urls_in(&w));
        match self.store.finish_update(
            self.id,
            end,
            why.clone(),
            jiff::Timestamp::now(),
            self.s.actor,
        ) {
            Ok(_) => {
                self.outcome.status = end.status().into();
                self.outcome.detail = why;
                Ok(self.outcome.clone())
            }
            Err(StoreError::NotOwner { .. } | StoreError::UpdateAlreadyFinished { .. }) => {
                Ok(self.lost())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Restores the previous container, then records `end` with `why`; a restore that fails
    /// leaves the update in progress for whoever recovers it next.
    async fn restore_then(
        &mut self,
        end: UpdateOutcome,
        why: String,
    ) -> Result<ApplyOutcome, EngineError> {
        if self.lease.lost() {
            return Ok(self.lost());
        }
        match update::restore(self.engine, self.snap).await {
            Ok(()) => self.end(end, Some(why)),
            Err(e) => {
                self.outcome.status = ApplyStatus::Failed;
                self.outcome.detail = Some(format!(
                    "{why}; restoring the previous container failed too ({e}); it is retried by the next run"
                ));
                Ok(self.outcome.clone())
            }
        }
    }

    /// A stop cut the update short: restore (when anything changed), record it as rolled back
    /// and interrupted (no verdict on the version).
    async fn interrupted(
        &mut self,
        what: &str,
        changed: bool,
    ) -> Result<ApplyOutcome, EngineError> {
        let why = if changed {
            format!("{what}; the previous container was restored")
        } else {
            what.to_owned()
        };
        let out = if changed {
            self.restore_then(UpdateOutcome::RolledBack, why).await?
        } else {
            self.end(UpdateOutcome::RolledBack, Some(why))?
        };
        if out.status == ApplyStatus::RolledBack {
            self.store.mark_interrupted(self.id)?;
            self.outcome.status = ApplyStatus::Interrupted;
            return Ok(self.outcome.clone());
        }
        Ok(out)
    }

    /// Another process took the update over: it is that process's to finish.
    fn lost(&mut self) -> ApplyOutcome {
        self.outcome.status = ApplyStatus::Failed;
        self.outcome.detail = Some(
            "another process took this update over (this process did not renew its lease in time); the host is that process's to restore or finish".into(),
        );
        self.outcome.clone()
    }
}

/// The inventory follows the host at once, so that the next decision (or a rollback) starts
/// from what runs; the digest is learnt at the next scan.
fn record_new_image(store: &mut Store, asset: &Asset, image: &str) -> Result<(), EngineError> {
    let mut updated = asset.clone();
    updated.image = image.to_owned();
    updated.digest = None;
    updated.last_seen = jiff::Timestamp::now();
    store.upsert_assets(&[updated])?;
    Ok(())
}

/// What recovery did with one interrupted update.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub update_id: i64,
    pub asset_id: String,
    pub restored: bool,
    pub detail: String,
    /// Another live process owns the update: it was left alone (not a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<safe_updater_core::lease::Owner>,
}

impl Recovery {
    /// Whether the update is still unrecovered and nobody is on it: the service may be down
    /// (its container missing or stopped) until the next run.
    pub fn failed(&self) -> bool {
        !self.restored && self.held_by.is_none()
    }
}

/// What [`recover`] does with an update in progress found in the store: take it over (its
/// owner is gone), or report that it is left alone. `Err`: leave it, with this report.
pub(crate) fn claim_orphan(
    store: &mut Store,
    u: &safe_updater_store::UpdateRecord,
    actor: &str,
) -> Result<Result<(), Recovery>, EngineError> {
    let now = jiff::Timestamp::now();
    let left = |detail: String, held_by| Recovery {
        update_id: u.id.0,
        asset_id: u.asset_id.clone(),
        restored: false,
        detail,
        held_by,
    };
    match standing_of(store, u, now) {
        // This process's own update is in the hands of the code running it.
        Standing::Mine => Ok(Err(left(
            "in progress in this process".into(),
            Some(store.owner().clone()),
        ))),
        Standing::Held { owner, lease_until } => Ok(Err(left(
            format!(
                "in progress, owned by {owner} (lease until {}); left alone",
                lease_until.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
            Some(owner),
        ))),
        Standing::Orphaned(gone) => {
            if store.take_over_update(u.id, u.owner.as_ref(), &gone.to_string(), now, actor)? {
                Ok(Ok(()))
            } else {
                Ok(Err(left(
                    "another process took it over first".into(),
                    u.owner.clone(),
                )))
            }
        }
    }
}

/// Brings every update a crash interrupted (whose owner is gone) back to the container it
/// replaced; updates other live processes own are reported and left alone. `wanted` narrows
/// it to some assets.
pub async fn recover(
    store: &mut Store,
    engines: &[Engine],
    actor: &str,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Recovery>, EngineError> {
    let mut out = Vec::new();
    for u in store.unfinished_updates()? {
        // Kubernetes updates are recovered by `crate::kube_apply::recover_kube`.
        if crate::kube_apply::is_kube_asset_id(&u.asset_id) || !wanted(&u.asset_id) {
            continue;
        }
        let report = |restored: bool, detail: String| Recovery {
            update_id: u.id.0,
            asset_id: u.asset_id.clone(),
            restored,
            detail,
            held_by: None,
        };
        let snap: Option<ContainerSnapshot> = store
            .snapshot(u.id)?
            .and_then(|v| serde_json::from_value(v).ok());
        let Some(snap) = snap else {
            out.push(report(false, "its snapshot cannot be read".into()));
            continue;
        };
        let Some(engine) = engines.iter().find(|e| e.name() == snap.engine) else {
            out.push(report(
                false,
                format!(
                    "engine {} is not reachable; retried on the next run",
                    snap.engine
                ),
            ));
            continue;
        };
        if let Err(left) = claim_orphan(store, &u, actor)? {
            out.push(left);
            continue;
        }
        let _lease = LeaseKeeper::start(store, u.id);
        match update::restore(engine, &snap).await {
            Ok(()) => {
                let why = "interrupted before it was verified; the previous container was restored"
                    .to_owned();
                store.finish_update(
                    u.id,
                    UpdateOutcome::RolledBack,
                    Some(why.clone()),
                    jiff::Timestamp::now(),
                    actor,
                )?;
                // A crash is not the target's fault: it may be tried again.
                store.mark_interrupted(u.id)?;
                out.push(report(true, why));
            }
            Err(e) => out.push(report(
                false,
                format!("restore failed ({e}); retried on the next run"),
            )),
        }
    }
    Ok(out)
}
