//! Execute and verify one Kubernetes or Helm update, roll it back, and recover updates a crash
//! interrupted — the Kubernetes side of `apply.rs`, with the same order of safety:
//!
//! 1. everything that can refuse is asked first (read-only mode, the context, the release and
//!    its chart repository, the health checks, `helm` itself);
//! 2. the snapshot (the pod template, or the Helm release's revision) is committed to the store
//!    with the update record (`begin_update`) before anything in the cluster changes;
//! 3. the change: a workload Helm does not manage gets its image patched
//!    (`KubeTarget::apply_image`), a Helm-managed workload gets its image value through
//!    `helm upgrade` (`helm_set_image`), a release its new chart version (`helm_upgrade`);
//! 4. verification: the rollout, readiness and restarts over `health.window` with
//!    `health.failure_threshold`, then the configured HTTP/TCP checks that match the asset and
//!    its exec checks, run in the new revision's Ready pods through the API server;
//! 5. on failure the snapshot is restored (or `helm rollback` to the recorded revision), or the
//!    asset is frozen when its policy says so; the result is recorded and audited.
//!
//! No decision is made here: what to update comes from `kube_check` and the core's `evaluate`,
//! or from an operator's explicit choice. It must never patch a Helm-managed object directly.

use std::time::Duration;

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::audit::AuditEvent;
use safe_updater_core::config::{Config, HealthConfig};
use safe_updater_core::decide::Verdict as Decision;
use safe_updater_core::policy::OnFailure;
use safe_updater_core::reference::ImageRef;
use safe_updater_docker::health::{self, Check};
use safe_updater_kube::discover::{HelmReleaseExtra, KubeExtra};
use safe_updater_kube::exec::ExecOutput;
use safe_updater_kube::helm::{Helm, HelmOutcome, UpgradeRequest};
use safe_updater_kube::helm_release::HelmRelease;
use safe_updater_kube::update::{ApplyOptions, Outcome, TemplateSnapshot};
use safe_updater_kube::{DiscoveryFilter, KubeError, KubeTarget};
use safe_updater_store::{Store, UpdateId, UpdateOutcome, UpdateStart, UpdateStatus};
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyOutcome, ApplyStatus, Recovery, checks_for, claim_orphan};
use crate::kube::KubeScanReport;
use crate::kube_session::KubeSession;
use crate::lease::LeaseKeeper;
use crate::stop::Stop;
use crate::{CheckReport, EngineError};

/// Kubernetes asset ids start with this (`k8s/<context>/<namespace>/<Kind>/<name>[/<container>]`).
pub fn is_kube_asset_id(id: &str) -> bool {
    id.starts_with("k8s/")
}

/// What is stored before a Kubernetes update changes anything: enough to undo it after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kube", rename_all = "snake_case")]
pub enum KubeSnapshot {
    /// The workload's pod template as it was.
    Template(TemplateSnapshot),
    /// The Helm release's revision before the upgrade.
    Helm {
        context: String,
        namespace: String,
        release: String,
        revision: u64,
        chart_version: String,
    },
}

/// How one change went, whichever way it was made.
#[derive(Debug, Default)]
struct Verdict {
    healthy: bool,
    failure: Option<String>,
    rolled_back: bool,
    restored_healthy: Option<bool>,
    observations: Vec<String>,
}

impl From<Outcome> for Verdict {
    fn from(o: Outcome) -> Self {
        Verdict {
            healthy: o.healthy,
            failure: o.failure,
            rolled_back: o.rolled_back,
            restored_healthy: o.restored_healthy,
            observations: o.observations,
        }
    }
}

impl From<HelmOutcome> for Verdict {
    fn from(o: HelmOutcome) -> Self {
        Verdict {
            healthy: o.healthy,
            failure: o.failure,
            rolled_back: o.rolled_back.is_some(),
            restored_healthy: o.restored_healthy,
            observations: o.observations,
        }
    }
}

/// What kind of change an asset takes.
enum Work {
    Patch(TemplateSnapshot),
    HelmImage(HelmRelease),
    HelmChart(HelmRelease),
}

fn not_started(asset: &Asset, to: &str, detail: String) -> ApplyOutcome {
    ApplyOutcome::not_started(&asset.id, &asset.image, to, detail)
}

fn read_only_refusal(asset_id: &str) -> String {
    format!(
        "kubernetes.read_only is true: safe-updater does not write to the cluster, so {asset_id} was not changed. Set kubernetes.read_only: false and bind the update role (deploy/rbac/update.yaml) to update it"
    )
}

/// The newest revision of one Helm release, decoded (values included).
async fn find_release(
    target: &KubeTarget,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Result<HelmRelease, String> {
    let filter = DiscoveryFilter {
        include_namespaces: vec![namespace.to_owned()],
        kinds: vec![AssetKind::HelmRelease],
        ..Default::default()
    };
    let report = target
        .discover(&filter, now)
        .await
        .map_err(|e| e.to_string())?;
    let warnings = report.warnings.join("; ");
    report
        .releases
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| {
            let why = if warnings.is_empty() {
                String::new()
            } else {
                format!(" ({warnings})")
            };
            format!("Helm release {namespace}/{name} was not found{why}")
        })
}

/// The configured HTTP, TCP and exec checks matching a Kubernetes asset. HTTP and TCP checks
/// must name a literal address (a Service, an Ingress): the `{container_ip}`-style placeholders
/// name a Docker container. Exec checks run in the workload's pods; a Helm release, a (Cron)Job
/// and an init container skip them.
pub fn kube_probes(
    asset: &Asset,
    rules: &[safe_updater_core::health::CheckRule],
) -> Result<Vec<Check>, String> {
    let mut out = Vec::new();
    // A release has no container of its own; an init container and a (Cron)Job's pods run to
    // completion, so no Ready pod would be there to run a command in.
    let no_exec = matches!(
        asset.kind,
        AssetKind::HelmRelease | AssetKind::CronJob | AssetKind::Job
    ) || KubeExtra::from_asset(asset).is_some_and(|x| x.init_container);
    for check in checks_for(asset, rules)? {
        match &check {
            Check::Docker => {}
            Check::Exec(e) if no_exec => {
                tracing::info!(asset = %asset.id, command = ?e.cmd, "exec checks run in a workload's running container; not run for a Helm release, a (Cron)Job or an init container");
            }
            Check::Http(h) if h.url.contains('{') => {
                return Err(format!(
                    "{}: placeholders name a Docker container's address; a check of a Kubernetes asset needs a literal URL (a Service or an Ingress)",
                    safe_updater_core::redact::url(&h.url)
                ));
            }
            Check::Tcp(t) if t.host.contains('{') => {
                return Err(format!(
                    "tcp check on port {}: give its host (a Service or an Ingress address) for a Kubernetes asset",
                    t.port
                ));
            }
            _ => out.push(check),
        }
    }
    Ok(out)
}

/// An exec check runs in every Ready pod of the new revision (those running the new image in
/// the updated container), up to this many, sorted by name: all of a small workload, a bounded
/// and stable sample of a large one, each round.
pub const EXEC_POD_LIMIT: usize = 5;

/// Where exec checks run: the updated container of the workload's new revision.
struct ExecIn<'a> {
    target: &'a KubeTarget,
    kind: AssetKind,
    namespace: String,
    workload: String,
    container: String,
    image: String,
}

/// Judges one exec result against the check: the exit code must be `expect_exit` and the output
/// (stdout and stderr) must hold `output_contains` when set. Pure.
pub fn exec_verdict(
    check: &health::ExecCheck,
    result: &Result<ExecOutput, KubeError>,
) -> (bool, String) {
    match result {
        Err(e) => (false, e.to_string()),
        Ok(out) => {
            let printed = check
                .output_contains
                .as_deref()
                .is_none_or(|w| out.output.contains(w));
            let missing = match (&check.output_contains, printed) {
                (Some(w), false) => format!("; the output lacks {w:?}"),
                _ => String::new(),
            };
            let shown: String = out.output.chars().take(200).collect();
            (
                out.exit_code == check.expect_exit && printed,
                format!(
                    "exit code {} (expected {}){missing}; output {shown:?}",
                    out.exit_code, check.expect_exit
                ),
            )
        }
    }
}

/// Runs one exec check in the new revision's Ready pods; passes only when it passes in each.
async fn exec_round(place: &ExecIn<'_>, check: &health::ExecCheck) -> (bool, String) {
    let pods = match place
        .target
        .exec_pods(
            place.kind,
            &place.namespace,
            &place.workload,
            &place.container,
            &place.image,
            EXEC_POD_LIMIT,
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return (false, format!("cannot list the pods: {e}")),
    };
    if pods.is_empty() {
        return (
            false,
            format!(
                "no Ready pod runs {} in container {}",
                place.image, place.container
            ),
        );
    }
    let mut failed = Vec::new();
    for pod in &pods {
        let result = place
            .target
            .exec(
                &place.namespace,
                pod,
                &place.container,
                &check.cmd,
                check.timeout,
            )
            .await;
        let (ok, detail) = exec_verdict(check, &result);
        if !ok {
            failed.push(format!("pod {pod}: {detail}"));
        }
    }
    if failed.is_empty() {
        (true, String::new())
    } else {
        (false, failed.join("; "))
    }
}

/// Probes the checks each `interval` for `window`; fails after `failure_threshold` failed
/// rounds in a row, and passes only on a passing round. Exec checks need `exec` (they fail without it).
async fn run_probes(
    probes: &[Check],
    exec: Option<&ExecIn<'_>>,
    h: &HealthConfig,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + h.window;
    let mut bad = 0u32;
    loop {
        let mut failures = Vec::new();
        for p in probes {
            let (ok, detail) = match (p, exec) {
                (Check::Http(c), _) => health::http_probe(c, &c.url).await,
                (Check::Tcp(c), _) => health::tcp_probe(&c.host, c.port, c.timeout).await,
                (Check::Exec(c), Some(place)) => exec_round(place, c).await,
                (Check::Exec(_), None) => (false, "no workload to run it in".into()),
                _ => (true, String::new()),
            };
            if !ok {
                failures.push(format!("{}: {detail}", p.label()));
            }
        }
        if failures.is_empty() {
            bad = 0;
        } else {
            bad += 1;
            log.push(format!(
                "checks failed ({bad} in a row): {}",
                failures.join("; ")
            ));
            if bad >= h.failure_threshold.max(1) {
                return Err(failures.join("; "));
            }
        }
        // A window that ends on a failed round goes on until a round passes or the threshold is
        // reached: slow rounds (exec in several pods) must not outlast the window into a pass.
        if tokio::time::Instant::now() >= deadline && bad == 0 {
            return Ok(());
        }
        tokio::time::sleep(h.interval.min(Duration::from_secs(60))).await;
    }
}

/// An error that means the cluster was not changed: refused before or at the first write.
fn changed_nothing(e: &KubeError) -> bool {
    match e {
        KubeError::ReadOnly { .. }
        | KubeError::Undeclared { .. }
        | KubeError::Invalid(_)
        | KubeError::Config { .. }
        | KubeError::Chart { .. } => true,
        KubeError::Api { .. } => e.status_code().is_some_and(|c| (400..500).contains(&c)),
        // Every helm step but the real upgrade and a rollback leaves the release as it was.
        KubeError::Helm { step, .. } => step != "upgrade" && !step.starts_with("rollback"),
        _ => false,
    }
}

fn audit(
    store: &mut Store,
    asset_id: &str,
    actor: &str,
    cid: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), EngineError> {
    store.append_audit(AuditEvent {
        timestamp: Timestamp::now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        asset_id: Some(asset_id.to_owned()),
        correlation_id: Some(cid.to_owned()),
        details,
    })?;
    Ok(())
}

/// The inventory follows the cluster at once (the next scan fills in the rest).
fn record_new_version(
    store: &mut Store,
    asset: &Asset,
    image: &str,
    chart_version: Option<&str>,
) -> Result<(), EngineError> {
    let mut updated = asset.clone();
    updated.image = image.to_owned();
    updated.digest = None;
    updated.last_seen = Timestamp::now();
    if let (Some(v), Some(mut extra)) = (chart_version, HelmReleaseExtra::from_asset(asset)) {
        extra.chart_version = v.to_owned();
        updated.extra = serde_json::to_value(extra).unwrap_or(serde_json::Value::Null);
    }
    store.upsert_assets(&[updated])?;
    Ok(())
}

/// Puts the snapshot back (after a failed extra check, an error mid-update, or a crash).
async fn undo(
    session: &KubeSession,
    snapshot: &KubeSnapshot,
    opts: &ApplyOptions,
    log: &mut Vec<String>,
) -> Result<bool, String> {
    match snapshot {
        KubeSnapshot::Template(s) => {
            let target = session
                .target(&s.context)
                .ok_or_else(|| format!("context {} is not connected", s.context))?;
            target
                .restore(s, "safe-updater: rolled back")
                .await
                .map_err(|e| e.to_string())?;
            let verdict = target
                .verify(
                    s.kind,
                    &s.namespace,
                    &s.name,
                    Some((&s.container, &s.previous_image)),
                    opts,
                    log,
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(verdict.is_ok())
        }
        KubeSnapshot::Helm {
            context,
            namespace,
            release,
            revision,
            ..
        } => {
            let target = session
                .target(context)
                .ok_or_else(|| format!("context {context} is not connected"))?;
            let helm = session.helm(context).await.map_err(|e| e.to_string())?;
            helm.rollback(release, namespace, *revision)
                .await
                .map_err(|e| e.to_string())?;
            let verdict = target
                .verify_release(release, namespace, opts, log)
                .await
                .map_err(|e| e.to_string())?;
            Ok(verdict.is_ok())
        }
    }
}

fn apply_options(config: &Config, session: &KubeSession, rollback: bool) -> ApplyOptions {
    ApplyOptions {
        rollout_timeout: session.rollout_timeout,
        poll_interval: config.health.interval,
        window: config.health.window,
        failure_threshold: config.health.failure_threshold,
        change_cause: None,
        rollback_on_failure: rollback,
    }
}

/// Updates one Kubernetes asset to `target_tag` (an image tag, or a release's chart version),
/// verifies it, and rolls back (or freezes) on failure.
#[allow(clippy::too_many_arguments)]
pub async fn apply_kube(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    asset: &Asset,
    target_tag: &str,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
) -> Result<ApplyOutcome, EngineError> {
    let new_ref = match ImageRef::parse(&asset.image).and_then(|r| r.with_tag(target_tag)) {
        Ok(r) if asset.kind == AssetKind::HelmRelease => {
            // The release's `image` is the chart as written at discovery (`demo-web:0.1.0`).
            match asset.image.rsplit_once(':') {
                Some((name, _)) => format!("{name}:{target_tag}"),
                None => r.familiar_string(),
            }
        }
        Ok(r) => r.familiar_string(),
        Err(e) => {
            return Ok(not_started(
                asset,
                target_tag,
                format!("cannot form the new reference: {e}"),
            ));
        }
    };
    let refuse = |d: String| Ok(not_started(asset, &new_ref, d));
    if session.read_only {
        return refuse(read_only_refusal(&asset.id));
    }
    let Some(target) = session.target(&asset.location) else {
        return refuse(format!(
            "context {} is not among those connected ({}); pass --context {} or list it in kubernetes.contexts",
            asset.location,
            session.contexts().join(", "),
            asset.location
        ));
    };
    let probes = match kube_probes(asset, &config.health_checks) {
        Ok(p) => p,
        Err(e) => return refuse(format!("cannot prepare the health checks: {e}")),
    };
    let policy = config.policy.resolve_asset(asset);
    let rollback = policy.on_failure.value == OnFailure::Rollback;
    let opts = apply_options(config, session, rollback);
    let now = Timestamp::now();
    let namespace = asset.namespace.clone().unwrap_or_default();

    // What to do, and the snapshot that undoes it.
    let work = if asset.kind == AssetKind::HelmRelease {
        match find_release(target, &namespace, &asset.name, now).await {
            Ok(r) => Work::HelmChart(r),
            Err(e) => return refuse(e),
        }
    } else {
        let Some(extra) = KubeExtra::from_asset(asset) else {
            return refuse(
                "its discovery record cannot be read; run `safe-updater scan` again".into(),
            );
        };
        if !extra.updatable {
            return refuse(format!(
                "{} is a {}: its pod template cannot change (update what creates it)",
                asset.id, asset.kind
            ));
        }
        if extra.helm_managed {
            let Some(owner) = extra.helm else {
                return refuse(format!(
                    "{} is managed by Helm but names no release (meta.helm.sh annotations); update it with helm",
                    asset.id
                ));
            };
            match find_release(target, &owner.namespace, &owner.release, now).await {
                Ok(r) => Work::HelmImage(r),
                Err(e) => return refuse(e),
            }
        } else {
            match target.snapshot(asset, now).await {
                Ok(s) => Work::Patch(s),
                Err(e) => return refuse(format!("cannot snapshot the workload: {e}")),
            }
        }
    };
    let helm_parts = match &work {
        Work::Patch(_) => None,
        Work::HelmImage(r) | Work::HelmChart(r) => {
            let Some(repo) = session.chart_for(&r.chart_name, &r.namespace, &r.name) else {
                return refuse(format!(
                    "no chart repository for chart {} of release {}/{}: add one under kubernetes.charts (helm upgrade needs the chart)",
                    r.chart_name, r.namespace, r.name
                ));
            };
            let helm: Helm = match session.helm(&asset.location).await {
                Ok(h) => h,
                Err(e) => {
                    return refuse(format!(
                        "{e}; set kubernetes.helm.binary to the helm (3 or 4) to use"
                    ));
                }
            };
            Some((session.chart_source(repo), helm))
        }
    };
    let snapshot = match &work {
        Work::Patch(s) => KubeSnapshot::Template(s.clone()),
        Work::HelmImage(r) | Work::HelmChart(r) => KubeSnapshot::Helm {
            context: asset.location.clone(),
            namespace: r.namespace.clone(),
            release: r.name.clone(),
            revision: r.revision,
            chart_version: r.chart_version.clone(),
        },
    };
    let snapshot_json =
        serde_json::to_value(&snapshot).map_err(|e| EngineError::Snapshot(e.to_string()))?;
    let id = store.begin_update(&UpdateStart {
        asset_id: asset.id.clone(),
        from_ref: asset.image.clone(),
        to_ref: new_ref.clone(),
        snapshot: snapshot_json,
        correlation_id: Some(correlation_id.to_owned()),
        actor: actor.to_owned(),
        at: now,
    });
    let id = match id {
        Ok(id) => id,
        Err(e) => return busy_or(store, e, asset, &new_ref),
    };
    let _lease = LeaseKeeper::start(store, id);
    let mut outcome = ApplyOutcome {
        asset_id: asset.id.clone(),
        from: asset.image.clone(),
        to: new_ref.clone(),
        update_id: Some(id.0),
        status: ApplyStatus::NotStarted,
        detail: None,
    };

    let result: Result<Verdict, KubeError> = match (&work, &helm_parts) {
        // A stop cuts a patch's rollout watch short and undoes the patch; a Helm upgrade (a
        // subprocess that must not be killed halfway) runs to its end.
        (Work::Patch(_), _) => tokio::select! {
            r = target.apply_image(asset, &new_ref, &opts, now) => r.map(Verdict::from),
            () = stop.wait() => {
                let mut log = Vec::new();
                let undone = undo(session, &snapshot, &opts, &mut log).await;
                let out = finish_undone(
                    store,
                    id,
                    outcome,
                    "stopped by a signal before the new version was verified".into(),
                    undone,
                    actor,
                )?;
                if out.status == ApplyStatus::RolledBack {
                    store.mark_interrupted(id)?;
                    return Ok(ApplyOutcome { status: ApplyStatus::Interrupted, ..out });
                }
                return Ok(out);
            }
        },
        (Work::HelmImage(r), Some((source, helm))) => target
            .helm_set_image(helm, r, source.clone(), &asset.image, &new_ref, &opts)
            .await
            .map(Verdict::from),
        (Work::HelmChart(r), Some((source, helm))) => {
            let req = UpgradeRequest {
                release: r.name.clone(),
                namespace: r.namespace.clone(),
                chart: r.chart_name.clone(),
                source: source.clone(),
                version: Some(target_tag.to_owned()),
                values: r.config.clone(),
                set_string: Vec::new(),
                force_conflicts: false,
                install: false,
            };
            target
                .helm_upgrade(helm, &req, r.revision, &opts)
                .await
                .map(Verdict::from)
        }
        _ => Err(KubeError::Invalid("no helm for a Helm update".into())),
    };
    let mut verdict = match result {
        Ok(v) => v,
        Err(e) if changed_nothing(&e) => {
            let why = format!("{new_ref} was not applied: {e}");
            finish(
                store,
                id,
                &mut outcome,
                UpdateOutcome::Failed,
                Some(why),
                actor,
            )?;
            return Ok(outcome);
        }
        Err(e) => {
            let mut log = Vec::new();
            return finish_undone(
                store,
                id,
                outcome,
                format!("the update to {new_ref} failed midway: {e}"),
                undo(session, &snapshot, &opts, &mut log).await,
                actor,
            );
        }
    };
    // Exec checks run in the updated container of the workload (a Helm-managed one included:
    // its image changed through `helm upgrade`, its pods are the same).
    let exec_in = match (&asset.container, asset.kind) {
        (Some(container), kind) if kind != AssetKind::HelmRelease => Some(ExecIn {
            target,
            kind,
            namespace: namespace.clone(),
            workload: asset.name.clone(),
            container: container.clone(),
            image: new_ref.clone(),
        }),
        _ => None,
    };
    if verdict.healthy
        && !probes.is_empty()
        && let Err(why) = run_probes(
            &probes,
            exec_in.as_ref(),
            &config.health,
            &mut verdict.observations,
        )
        .await
    {
        verdict.healthy = false;
        verdict.failure = Some(format!("configured checks failed: {why}"));
        if rollback {
            verdict.rolled_back = true;
            match undo(session, &snapshot, &opts, &mut verdict.observations).await {
                Ok(ok) => verdict.restored_healthy = Some(ok),
                Err(e) => {
                    let why = verdict.failure.clone().unwrap_or_default();
                    return finish_undone(store, id, outcome, why, Err(e), actor);
                }
            }
        }
    }
    let tail: Vec<&String> = verdict.observations.iter().rev().take(5).rev().collect();
    audit(
        store,
        &asset.id,
        actor,
        correlation_id,
        "health",
        serde_json::json!({
            "update_id": id.0, "healthy": verdict.healthy, "reason": verdict.failure,
            "rolled_back": verdict.rolled_back, "restored_healthy": verdict.restored_healthy,
            "observations": verdict.observations.len(), "last": tail,
        }),
    )?;
    let chart_version = (asset.kind == AssetKind::HelmRelease).then_some(target_tag);
    if verdict.healthy {
        finish(
            store,
            id,
            &mut outcome,
            UpdateOutcome::Succeeded,
            None,
            actor,
        )?;
        record_new_version(store, asset, &new_ref, chart_version)?;
        return Ok(outcome);
    }
    let mut why = format!(
        "{new_ref} failed verification: {}",
        verdict.failure.unwrap_or_else(|| "unhealthy".into())
    );
    if verdict.rolled_back {
        if verdict.restored_healthy == Some(false) {
            why.push_str("; the previous version was restored but is not healthy either");
        }
        finish(
            store,
            id,
            &mut outcome,
            UpdateOutcome::RolledBack,
            Some(why),
            actor,
        )?;
    } else {
        // `on_failure: freeze`: left as it is for a person to decide; no further update of the
        // asset runs until one does.
        finish(
            store,
            id,
            &mut outcome,
            UpdateOutcome::Frozen,
            Some(why),
            actor,
        )?;
        record_new_version(store, asset, &new_ref, chart_version)?;
    }
    Ok(outcome)
}

/// Another live process's update of the asset is in progress: a `busy` outcome naming it;
/// any other store error stops the step.
fn busy_or(
    store: &Store,
    e: safe_updater_store::StoreError,
    asset: &Asset,
    to: &str,
) -> Result<ApplyOutcome, EngineError> {
    match e {
        e @ safe_updater_store::StoreError::UpdateInProgress { .. } => {
            let (status, why) = crate::apply::blocked_by(store, &asset.id)?
                .unwrap_or((ApplyStatus::Busy, e.to_string()));
            let mut out = not_started(asset, to, why);
            out.status = status;
            Ok(out)
        }
        e => Err(e.into()),
    }
}

/// Records how the update ended and says so in `outcome` (its status, and why).
fn finish(
    store: &mut Store,
    id: UpdateId,
    outcome: &mut ApplyOutcome,
    end: UpdateOutcome,
    why: Option<String>,
    actor: &str,
) -> Result<(), EngineError> {
    store.finish_update(id, end, why.clone(), Timestamp::now(), actor)?;
    outcome.status = end.status().into();
    if why.is_some() {
        outcome.detail = why;
    }
    Ok(())
}

fn finish_undone(
    store: &mut Store,
    id: UpdateId,
    mut outcome: ApplyOutcome,
    why: String,
    undone: Result<bool, String>,
    actor: &str,
) -> Result<ApplyOutcome, EngineError> {
    match undone {
        Ok(healthy) => {
            let why = if healthy {
                why
            } else {
                format!("{why}; the previous version was restored but is not healthy either")
            };
            finish(
                store,
                id,
                &mut outcome,
                UpdateOutcome::RolledBack,
                Some(why),
                actor,
            )?;
        }
        Err(e) => {
            // Left in progress: the next start (recover_kube) tries the restore again rather
            // than recording a rollback that did not happen.
            outcome.status = ApplyStatus::Failed;
            outcome.detail = Some(format!(
                "{why}; restoring the previous version failed too ({e}); it is retried on the next run"
            ));
        }
    }
    Ok(outcome)
}

/// `rollback`: a workload goes back to the image its last successful update replaced (or
/// `to`), verified like any update; a Helm release goes back with `helm rollback` to the
/// revision recorded before its last successful update (or is upgraded to chart version `to`).
#[allow(clippy::too_many_arguments)]
pub async fn rollback_kube(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    asset_id: &str,
    to: Option<&str>,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
) -> Result<ApplyOutcome, EngineError> {
    let Some(asset) = store.get_asset(asset_id)? else {
        return Ok(ApplyOutcome::not_started(
            asset_id,
            "",
            to.unwrap_or_default(),
            format!("no tracked asset {asset_id}; see `safe-updater list-assets`"),
        ));
    };
    if let Some(t) = to {
        let out = apply_kube(
            config,
            store,
            session,
            &asset,
            t,
            actor,
            correlation_id,
            stop,
        )
        .await?;
        return reject_rolled_away(store, &asset, out, t, actor);
    }
    let last = store
        .history(Some(asset_id), 50)?
        .into_iter()
        .find(|u| u.status == UpdateStatus::Succeeded);
    let Some(last) = last else {
        return Ok(not_started(
            &asset,
            "",
            format!("{asset_id} has no successful update to roll back; give the version with --to"),
        ));
    };
    if asset.kind != AssetKind::HelmRelease {
        let Some(previous) = ImageRef::parse(&last.from_ref)
            .ok()
            .and_then(|r| r.tag().map(str::to_owned))
        else {
            return Ok(not_started(
                &asset,
                "",
                format!(
                    "{} names no tag to go back to; give it with --to",
                    last.from_ref
                ),
            ));
        };
        let out = apply_kube(
            config,
            store,
            session,
            &asset,
            &previous,
            actor,
            correlation_id,
            stop,
        )
        .await?;
        return reject_rolled_away(store, &asset, out, &previous, actor);
    }
    // A release: back to the revision recorded before its last successful upgrade.
    let snapshot: Option<KubeSnapshot> = store
        .snapshot(last.id)?
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(KubeSnapshot::Helm {
        revision,
        chart_version,
        ..
    }) = snapshot
    else {
        return Ok(not_started(
            &asset,
            "",
            format!(
                "update #{} of {asset_id} kept no Helm revision; give the chart version with --to",
                last.id.0
            ),
        ));
    };
    if session.read_only {
        return Ok(not_started(
            &asset,
            &last.from_ref,
            read_only_refusal(asset_id),
        ));
    }
    let Some(target) = session.target(&asset.location) else {
        return Ok(not_started(
            &asset,
            &last.from_ref,
            format!(
                "context {} is not connected; pass --context {}",
                asset.location, asset.location
            ),
        ));
    };
    let now = Timestamp::now();
    let namespace = asset.namespace.clone().unwrap_or_default();
    let current = match find_release(target, &namespace, &asset.name, now).await {
        Ok(r) => r,
        Err(e) => return Ok(not_started(&asset, &last.from_ref, e)),
    };
    let helm = match session.helm(&asset.location).await {
        Ok(h) => h,
        Err(e) => return Ok(not_started(&asset, &last.from_ref, e.to_string())),
    };
    let here = KubeSnapshot::Helm {
        context: asset.location.clone(),
        namespace: namespace.clone(),
        release: asset.name.clone(),
        revision: current.revision,
        chart_version: current.chart_version.clone(),
    };
    let id = store.begin_update(&UpdateStart {
        asset_id: asset.id.clone(),
        from_ref: asset.image.clone(),
        to_ref: last.from_ref.clone(),
        snapshot: serde_json::to_value(&here).map_err(|e| EngineError::Snapshot(e.to_string()))?,
        correlation_id: Some(correlation_id.to_owned()),
        actor: actor.to_owned(),
        at: now,
    });
    let id = match id {
        Ok(id) => id,
        Err(e) => return busy_or(store, e, &asset, &last.from_ref),
    };
    let _lease = LeaseKeeper::start(store, id);
    let mut outcome = ApplyOutcome {
        asset_id: asset.id.clone(),
        from: asset.image.clone(),
        to: last.from_ref.clone(),
        update_id: Some(id.0),
        status: ApplyStatus::Failed,
        detail: None,
    };
    let opts = apply_options(config, session, false);
    let mut log = Vec::new();
    let result = match helm.rollback(&asset.name, &namespace, revision).await {
        Ok(rb) => {
            if rb.forced_conflicts {
                log.push("field-ownership conflicts were forced".into());
            }
            target
                .verify_release(&asset.name, &namespace, &opts, &mut log)
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    audit(
        store,
        &asset.id,
        actor,
        correlation_id,
        "health",
        serde_json::json!({"update_id": id.0, "rollback_to_revision": revision, "result": format!("{result:?}"), "observations": log.len()}),
    )?;
    match result {
        Ok(Ok(())) => {
            finish(
                store,
                id,
                &mut outcome,
                UpdateOutcome::Succeeded,
                None,
                actor,
            )?;
            record_new_version(store, &asset, &last.from_ref, Some(&chart_version))?;
            outcome.detail = Some(format!("helm rollback to revision {revision}"));
            if current.chart_version != chart_version {
                crate::operator::reject_rolled_back(
                    store,
                    &asset.id,
                    &current.chart_version,
                    actor,
                    &chart_version,
                    Timestamp::now(),
                )
                .map_err(|e| EngineError::Kube(e.to_string()))?;
            }
        }
        Ok(Err(why)) | Err(why) => {
            let why = format!("helm rollback to revision {revision}: {why}");
            finish(
                store,
                id,
                &mut outcome,
                UpdateOutcome::Failed,
                Some(why),
                actor,
            )?;
        }
    }
    Ok(outcome)
}

/// After a successful rollback of a workload to `target`, the image tag it ran before is
/// rejected in the operator's name (no cycle applies it again until an approval lifts it).
fn reject_rolled_away(
    store: &mut Store,
    asset: &Asset,
    out: ApplyOutcome,
    target: &str,
    actor: &str,
) -> Result<ApplyOutcome, EngineError> {
    let from = ImageRef::parse(&asset.image)
        .ok()
        .and_then(|r| r.tag().map(str::to_owned));
    if out.status == ApplyStatus::Succeeded
        && let Some(from) = from.filter(|f| f != target)
    {
        crate::operator::reject_rolled_back(
            store,
            &asset.id,
            &from,
            actor,
            target,
            Timestamp::now(),
        )
        .map_err(|e| EngineError::Kube(e.to_string()))?;
    }
    Ok(out)
}

/// Brings every Kubernetes update a crash interrupted back to its snapshot: the pod template
/// restored, or `helm rollback` to the recorded revision when the release moved past it.
pub async fn recover_kube(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    actor: &str,
) -> Result<Vec<Recovery>, EngineError> {
    let mut out = Vec::new();
    let opts = apply_options(config, session, true);
    for u in store.unfinished_updates()? {
        if !is_kube_asset_id(&u.asset_id) {
            continue;
        }
        let report = |restored: bool, detail: String| Recovery {
            update_id: u.id.0,
            asset_id: u.asset_id.clone(),
            restored,
            detail,
            held_by: None,
        };
        let snapshot: Option<KubeSnapshot> = store
            .snapshot(u.id)?
            .and_then(|v| serde_json::from_value(v).ok());
        let Some(snapshot) = snapshot else {
            out.push(report(false, "its snapshot cannot be read".into()));
            continue;
        };
        let context = match &snapshot {
            KubeSnapshot::Template(s) => s.context.clone(),
            KubeSnapshot::Helm { context, .. } => context.clone(),
        };
        if session.target(&context).is_none() {
            out.push(report(
                false,
                format!("context {context} is not connected; retried on the next run"),
            ));
            continue;
        }
        if session.read_only {
            out.push(report(
                false,
                "read-only mode: restoring needs update mode; retried on the next run".into(),
            ));
            continue;
        }
        if let Err(left) = claim_orphan(store, &u, actor)? {
            out.push(left);
            continue;
        }
        let _lease = LeaseKeeper::start(store, u.id);
        // A Helm upgrade interrupted before it ran left nothing to undo; like any update a
        // crash cut short, it says nothing against its version, which may be tried again.
        if let KubeSnapshot::Helm {
            namespace,
            release,
            revision,
            ..
        } = &snapshot
            && let Some(target) = session.target(&context)
            && let Ok(now_release) =
                find_release(target, namespace, release, Timestamp::now()).await
            && now_release.revision <= *revision
        {
            let why = "interrupted before helm changed the release; nothing to restore".to_owned();
            store.finish_update(
                u.id,
                UpdateOutcome::RolledBack,
                Some(why.clone()),
                Timestamp::now(),
                actor,
            )?;
            store.mark_interrupted(u.id)?;
            out.push(report(true, why));
            continue;
        }
        let mut log = Vec::new();
        match undo(session, &snapshot, &opts, &mut log).await {
            Ok(_) => {
                let why = "interrupted before it was verified; the previous version was restored"
                    .to_owned();
                store.finish_update(
                    u.id,
                    UpdateOutcome::RolledBack,
                    Some(why.clone()),
                    Timestamp::now(),
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

/// One Kubernetes cycle.
#[derive(Debug, Clone, Serialize)]
pub struct KubeRunReport {
    pub recovered: Vec<Recovery>,
    pub scan: KubeScanReport,
    pub check: CheckReport,
    pub applied: Vec<ApplyOutcome>,
}

/// One cycle over a session's contexts: recover, scan, check, apply what policy approves now
/// (nothing in read-only mode), verify. What the daemon calls for Kubernetes, beside
/// `run_once`/its own Docker cycle.
pub async fn run_kube_once(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
) -> Result<KubeRunReport, EngineError> {
    run_kube_observed(
        config,
        store,
        session,
        now,
        actor,
        correlation_id,
        stop,
        &mut |_| {},
    )
    .await
}

/// One update [`run_kube_observed`] carried out, as it finished.
#[derive(Debug)]
pub struct KubeApplied<'a> {
    pub asset: &'a Asset,
    /// The change class of the update (`patch`, `minor`, ...).
    pub change: &'a str,
    pub outcome: &'a ApplyOutcome,
    pub elapsed: std::time::Duration,
}

/// [`run_kube_once`], telling `observe` about each update as it finishes, so that a caller
/// (the daemon) can count and announce it at once rather than after the whole cycle.
#[allow(clippy::too_many_arguments)]
pub async fn run_kube_observed(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
    observe: &mut (dyn FnMut(KubeApplied<'_>) + Send),
) -> Result<KubeRunReport, EngineError> {
    let recovered = recover_kube(config, store, session, actor).await?;
    let scan = crate::kube::scan_session(
        store,
        session,
        &safe_updater_core::scope::Selection::scoped(config.scope.clone()),
        now,
        actor,
    )
    .await?;
    let check =
        crate::kube_check::check_kube(config, store, session, now, actor, correlation_id, &|_| {
            true
        })
        .await?;
    let mut applied = Vec::new();
    if !session.read_only {
        for c in &check.checks {
            let Some(e) = &c.evaluation else { continue };
            let Some(target) = &e.act_on else { continue };
            let Some(chosen) = e
                .candidates
                .iter()
                .find(|x| &x.tag == target && x.decision == Decision::Approve)
            else {
                continue;
            };
            let Some(asset) = store.get_asset(&c.asset_id)? else {
                continue;
            };
            if asset.kind == AssetKind::Job {
                continue;
            }
            let started = std::time::Instant::now();
            if stop.requested() {
                break;
            }
            let outcome = apply_kube(
                config,
                store,
                session,
                &asset,
                target,
                actor,
                correlation_id,
                stop,
            )
            .await?;
            observe(KubeApplied {
                asset: &asset,
                change: &chosen.change,
                outcome: &outcome,
                elapsed: started.elapsed(),
            });
            applied.push(outcome);
        }
    }
    Ok(KubeRunReport {
        recovered,
        scan,
        check,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn deployment() -> Asset {
        let now = Timestamp::now();
        Asset {
            id: "k8s/ctx/apps/Deployment/web/web".into(),
            kind: AssetKind::Deployment,
            location: "ctx".into(),
            namespace: Some("apps".into()),
            name: "web".into(),
            container: Some("web".into()),
            image: "127.0.0.1:5001/demo/web:1.0.0".into(),
            digest: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            first_seen: now,
            last_seen: now,
            extra: serde_json::Value::Null,
        }
    }

    fn rules(checks: &str) -> Config {
        safe_updater_core::config::load("t.yaml", &format!("health:\n  checks:\n{checks}"), &[])
            .expect("config")
    }

    #[test]
    fn kubernetes_checks_need_a_literal_address_and_exec_runs_in_workloads_only() {
        let asset = deployment();
        let cfg = rules(
            "    - match: {kind: Deployment}\n      http: {url: 'http://{container_ip}:8080/health'}\n",
        );
        let e = kube_probes(&asset, &cfg.health_checks).expect_err("placeholder");
        assert!(e.contains("literal URL"), "{e}");
        let cfg = rules("    - match: {kind: Deployment}\n      tcp: {port: 5432}\n");
        let e = kube_probes(&asset, &cfg.health_checks).expect_err("no host");
        assert!(e.contains("give its host"), "{e}");
        let cfg = rules(
            "    - match: {name: web}\n      http: {url: 'https://web.apps.example/health'}\n    - exec: {command: [true]}\n    - match: {kind: container}\n      tcp: {port: 1}\n",
        );
        let probes = kube_probes(&asset, &cfg.health_checks).expect("literal URL");
        assert_eq!(
            probes.len(),
            2,
            "the HTTP and exec checks; the container rule does not match: {probes:?}"
        );
        assert!(matches!(&probes[0], Check::Http(h) if h.url == "https://web.apps.example/health"));
        assert!(matches!(&probes[1], Check::Exec(e) if e.cmd == ["true"]));

        // A Helm release has no container to run a command in.
        let mut release = deployment();
        release.kind = AssetKind::HelmRelease;
        release.container = None;
        let cfg = rules("    - exec: {command: [true]}\n");
        assert!(
            kube_probes(&release, &cfg.health_checks)
                .expect("ok")
                .is_empty()
        );
    }

    fn exec_check(expect_exit: i64, output_contains: Option<&str>) -> health::ExecCheck {
        health::ExecCheck {
            cmd: vec!["cat".into(), "/version".into()],
            timeout: Duration::from_secs(5),
            expect_exit,
            output_contains: output_contains.map(str::to_owned),
        }
    }

    #[test]
    fn exec_results_are_judged_by_exit_code_and_output() {
        let out = |code, text: &str| -> Result<ExecOutput, KubeError> {
            Ok(ExecOutput {
                exit_code: code,
                output: text.into(),
                truncated: false,
            })
        };
        assert!(exec_verdict(&exec_check(0, None), &out(0, "")).0);
        assert!(exec_verdict(&exec_check(0, Some("1.1.0")), &out(0, "version 1.1.0\n")).0);
        let (ok, why) = exec_verdict(&exec_check(0, Some("2.0.0")), &out(0, "version 1.1.0\n"));
        assert!(!ok);
        assert!(why.contains("lacks \"2.0.0\""), "{why}");
        let (ok, why) = exec_verdict(&exec_check(0, None), &out(3, ""));
        assert!(!ok);
        assert!(why.contains("exit code 3 (expected 0)"), "{why}");
        assert!(exec_verdict(&exec_check(3, None), &out(3, "")).0);
        let timed_out = Err(KubeError::Exec {
            what: "exec in pod a/b container web".into(),
            detail: "no exit within 5s".into(),
        });
        let (ok, why) = exec_verdict(&exec_check(0, None), &timed_out);
        assert!(!ok);
        assert!(why.contains("no exit within 5s"), "{why}");
    }

    #[tokio::test]
    async fn an_exec_check_without_a_workload_fails() {
        let health = HealthConfig {
            window: Duration::from_millis(10),
            interval: Duration::from_millis(5),
            failure_threshold: 2,
            ..HealthConfig::default()
        };
        let mut log = Vec::new();
        let e = run_probes(&[Check::Exec(exec_check(0, None))], None, &health, &mut log)
            .await
            .expect_err("nowhere to run it");
        assert!(e.contains("no workload"), "{e}");
    }

    #[tokio::test]
    async fn probes_pass_while_they_answer_and_fail_after_the_threshold() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open_port = open.local_addr().expect("addr").port();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let health = HealthConfig {
            window: Duration::from_millis(300),
            interval: Duration::from_millis(50),
            failure_threshold: 3,
            ..HealthConfig::default()
        };
        let tcp = |port| {
            Check::Tcp(health::TcpCheck {
                host: "127.0.0.1".into(),
                port,
                timeout: Duration::from_secs(1),
            })
        };
        let mut log = Vec::new();
        run_probes(&[tcp(open_port)], None, &health, &mut log)
            .await
            .expect("an open port passes over the window");
        assert!(log.is_empty(), "{log:?}");
        let e = run_probes(&[tcp(open_port), tcp(closed_port)], None, &health, &mut log)
            .await
            .expect_err("a closed port fails");
        assert!(e.contains(&closed_port.to_string()), "{e}");
        assert_eq!(log.len(), 3, "failed rounds up to the threshold: {log:?}");

        // A window shorter than one round still needs the threshold's rounds to pass.
        let short = HealthConfig {
            window: Duration::ZERO,
            ..health.clone()
        };
        let mut log = Vec::new();
        let e = run_probes(&[tcp(closed_port)], None, &short, &mut log)
            .await
            .expect_err("a failing check never passes when the window ends");
        assert!(e.contains(&closed_port.to_string()), "{e}");
        assert_eq!(log.len(), 3, "{log:?}");
    }

    #[test]
    fn what_changed_nothing_is_failed_and_the_rest_is_undone() {
        assert!(changed_nothing(&KubeError::ReadOnly {
            verb: "patch".into(),
            resource: "Deployment".into(),
            name: None
        }));
        assert!(changed_nothing(&KubeError::Helm {
            step: "upgrade --dry-run".into(),
            detail: "x".into()
        }));
        assert!(!changed_nothing(&KubeError::Helm {
            step: "upgrade".into(),
            detail: "x".into()
        }));
        assert!(!changed_nothing(&KubeError::Helm {
            step: "rollback".into(),
            detail: "x".into()
        }));
        assert!(!changed_nothing(&KubeError::Rollout {
            object: "x".into(),
            detail: "y".into()
        }));
    }

    #[test]
    fn snapshots_read_back_and_are_told_apart_from_dockers() {
        let helm = KubeSnapshot::Helm {
            context: "c".into(),
            namespace: "n".into(),
            release: "r".into(),
            revision: 3,
            chart_version: "0.1.0".into(),
        };
        let v = serde_json::to_value(&helm).expect("json");
        assert_eq!(v["kube"], "helm");
        assert!(matches!(
            serde_json::from_value::<KubeSnapshot>(v).expect("reads"),
            KubeSnapshot::Helm { revision: 3, .. }
        ));
        assert!(is_kube_asset_id("k8s/c/n/Deployment/web/web"));
        assert!(!is_kube_asset_id("docker/local/web"));
    }
}
