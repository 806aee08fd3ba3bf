//! Execute and verify one container update, and recover updates a crash interrupted.
//!
//! The order is the safety argument: the snapshot of the running container is committed to the
//! store (`begin_update`) before anything on the host changes; every later step is one the
//! Docker adapter can undo from any intermediate state (`restore`). So whatever the process
//! dies after, the next start finds an `in_progress` update with what it needs, and restores
//! the previous container exactly.

use safe_updater_core::asset::Asset;
use safe_updater_core::audit::AuditEvent;
use safe_updater_core::config::HealthConfig;
use safe_updater_core::health::{self as health_spec, CheckRule, CheckSpec};
use safe_updater_core::policy::{AssetView, OnFailure};
use safe_updater_core::reference::ImageRef;
use safe_updater_docker::Engine;
use safe_updater_docker::health::{self, Check, ExecCheck, HttpCheck, Monitor, TcpCheck};
use safe_updater_docker::lifecycle::{self, HookResult, Stage};
use safe_updater_docker::update::{self, ContainerSnapshot, RegistryAuth};
use safe_updater_registry::Credential;
use safe_updater_store::{Store, UpdateOutcome, UpdateStart};
use serde::Serialize;

use crate::EngineError;

/// How one update ended.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyOutcome {
    pub asset_id: String,
    pub from: String,
    pub to: String,
    pub update_id: Option<i64>,
    /// `succeeded`, `rolled_back`, `frozen`, `failed` (nothing changed), `skipped` (a
    /// pre-update command declined it), or `not_started`.
    pub status: String,
    pub detail: Option<String>,
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

/// Updates one container to `target_tag`, verifies it, and rolls back (or freezes) on failure.
pub async fn apply(
    store: &mut Store,
    engine: &Engine,
    asset: &Asset,
    target_tag: &str,
    auth: Option<RegistryAuth>,
    s: &ApplySettings<'_>,
) -> Result<ApplyOutcome, EngineError> {
    let mut outcome = ApplyOutcome {
        asset_id: asset.id.clone(),
        from: asset.image.clone(),
        to: String::new(),
        update_id: None,
        status: "not_started".into(),
        detail: None,
    };
    let target = match ImageRef::parse(&asset.image).and_then(|r| r.with_tag(target_tag)) {
        Ok(r) => r.familiar_string(),
        Err(e) => {
            outcome.detail = Some(format!("cannot form the new image reference: {e}"));
            return Ok(outcome);
        }
    };
    outcome.to = target.clone();
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
    let snap = match update::snapshot(engine, &asset.name).await {
        Ok(snap) => snap,
        Err(e) => {
            outcome.detail = Some(format!("cannot snapshot the container: {e}"));
            return Ok(outcome);
        }
    };
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
                outcome.status = "skipped".into();
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
    let snapshot = serde_json::to_value(&snap).map_err(|e| EngineError::Snapshot(e.to_string()))?;
    let id = store.begin_update(&UpdateStart {
        asset_id: asset.id.clone(),
        from_ref: asset.image.clone(),
        to_ref: target.clone(),
        snapshot,
        correlation_id: Some(s.correlation_id.to_owned()),
        actor: s.actor.to_owned(),
        at: jiff::Timestamp::now(),
    })?;
    outcome.update_id = Some(id.0);

    if let Err(e) = update::pull(engine, &target, auth).await {
        let why = format!("pull of {target} failed: {e}");
        store.finish_update(
            id,
            UpdateOutcome::Failed,
            Some(why.clone()),
            jiff::Timestamp::now(),
            s.actor,
        )?;
        outcome.status = "failed".into();
        outcome.detail = Some(why);
        return Ok(outcome);
    }
    let new_id = match update::replace(engine, &snap, &target, None).await {
        Ok(id) => id,
        Err(e) => {
            let why = format!("the new container could not be started: {e}");
            let restored = update::restore(engine, &snap).await;
            return finish_rolled_back(
                store,
                id,
                outcome,
                why,
                restored.err().map(|e| e.to_string()),
                s.actor,
            );
        }
    };
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
                store,
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
        None => health::monitor(engine, &new_id, &checks, &monitor).await,
    };
    let failures: Vec<String> = report
        .observations
        .iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{}: {}", o.check, o.detail))
        .collect();
    audit(
        store,
        asset,
        s,
        "health",
        serde_json::json!({
            "update_id": id.0, "healthy": report.healthy, "reason": report.reason,
            "observations": report.observations.len(),
            "failures": failures.iter().take(5).collect::<Vec<_>>(),
        }),
    )?;
    if report.healthy {
        if let Err(e) = update::finish(engine, &snap, s.health.remove_old_image).await {
            tracing::warn!(asset = %asset.id, error = %e, "the update succeeded but the old container could not be removed");
        }
        store.finish_update(
            id,
            UpdateOutcome::Succeeded,
            None,
            jiff::Timestamp::now(),
            s.actor,
        )?;
        record_new_image(store, asset, &target)?;
        outcome.status = "succeeded".into();
        return Ok(outcome);
    }
    let why = format!("{target} failed its health checks: {}", report.reason);
    match s.on_failure {
        OnFailure::Rollback => {
            let restored = update::restore(engine, &snap).await;
            finish_rolled_back(
                store,
                id,
                outcome,
                why,
                restored.err().map(|e| e.to_string()),
                s.actor,
            )
        }
        OnFailure::Freeze => {
            // Left as it is: the previous container stays stopped beside it for a person to
            // decide, and no further update of this asset runs until one does.
            store.finish_update(
                id,
                UpdateOutcome::Frozen,
                Some(why.clone()),
                jiff::Timestamp::now(),
                s.actor,
            )?;
            record_new_image(store, asset, &target)?;
            outcome.status = "frozen".into();
            outcome.detail = Some(why);
            Ok(outcome)
        }
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

fn finish_rolled_back(
    store: &mut Store,
    id: safe_updater_store::UpdateId,
    mut outcome: ApplyOutcome,
    why: String,
    restore_error: Option<String>,
    actor: &str,
) -> Result<ApplyOutcome, EngineError> {
    match restore_error {
        None => {
            store.finish_update(
                id,
                UpdateOutcome::RolledBack,
                Some(why.clone()),
                jiff::Timestamp::now(),
                actor,
            )?;
            outcome.status = "rolled_back".into();
            outcome.detail = Some(why);
        }
        Some(e) => {
            // The update stays in progress: the next start tries the restore again rather than
            // recording a rollback that did not happen.
            outcome.status = "failed".into();
            outcome.detail = Some(format!(
                "{why}; restoring the previous container failed too ({e}); it is retried on the next run"
            ));
        }
    }
    Ok(outcome)
}

/// What recovery did with one interrupted update.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub update_id: i64,
    pub asset_id: String,
    pub restored: bool,
    pub detail: String,
}

/// Brings every update a crash interrupted back to the container it replaced.
pub async fn recover(
    store: &mut Store,
    engines: &[Engine],
    actor: &str,
) -> Result<Vec<Recovery>, EngineError> {
    let mut out = Vec::new();
    for u in store.unfinished_updates()? {
        // Kubernetes updates are recovered by `crate::kube_apply::recover_kube`.
        if crate::kube_apply::is_kube_asset_id(&u.asset_id) {
            continue;
        }
        let snap: Option<ContainerSnapshot> = store
            .snapshot(u.id)?
            .and_then(|v| serde_json::from_value(v).ok());
        let Some(snap) = snap else {
            out.push(Recovery {
                update_id: u.id.0,
                asset_id: u.asset_id,
                restored: false,
                detail: "its snapshot cannot be read".into(),
            });
            continue;
        };
        let Some(engine) = engines.iter().find(|e| e.name() == snap.engine) else {
            out.push(Recovery {
                update_id: u.id.0,
                asset_id: u.asset_id,
                restored: false,
                detail: format!(
                    "engine {} is not reachable; retried on the next run",
                    snap.engine
                ),
            });
            continue;
        };
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
                out.push(Recovery {
                    update_id: u.id.0,
                    asset_id: u.asset_id,
                    restored: true,
                    detail: why,
                });
            }
            Err(e) => out.push(Recovery {
                update_id: u.id.0,
                asset_id: u.asset_id,
                restored: false,
                detail: format!("restore failed ({e}); retried on the next run"),
            }),
        }
    }
    Ok(out)
}
