//! The Kubernetes part of a daemon cycle: when Kubernetes is enabled in the config, one
//! `engine::run_kube_observed` over the configured contexts after the Docker work (recover
//! interrupted updates, scan, check, apply what policy approves now, verify, roll back), each
//! finished update counted in the metrics and announced like a Docker one.
//!
//! Kubernetes updates run one at a time, so they stay within any concurrency limit, and they
//! are not held in the persisted queue: approved work is found again by the next check, and an
//! update a crash cut short is restored by the engine's recovery first. This module decides
//! nothing; a context that cannot be reached is logged and the next cycle tries again.

use std::time::Instant;

use jiff::Timestamp;
use safe_updater_core::config::Config;
use safe_updater_engine::{KubeApplied, KubeOverrides, KubeSession};
use safe_updater_server::UpdateLabels;
use safe_updater_store::Store;

use crate::Shared;
use crate::cycle::{namespace_of, report_outcome};

/// Runs the Kubernetes cycle if the config asks for it; returns the updates it started.
pub(crate) async fn run(
    shared: &Shared,
    cfg: &Config,
    store: &mut Store,
    now: Timestamp,
    cid: &str,
) -> usize {
    let overrides = KubeOverrides::default();
    if !KubeSession::wanted(cfg, &overrides) {
        return 0;
    }
    let env = &shared.options.env;
    let started = Instant::now();
    let client_cfg = match safe_updater_engine::registry_client_config(&cfg.registries, env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(event = "scan.kubernetes_failed", error = %e, "Kubernetes not scanned");
            return 0;
        }
    };
    let session = match KubeSession::connect(cfg, &overrides, client_cfg, env).await {
        Ok(s) => s,
        Err(e) => {
            shared
                .metrics
                .scan_finished("kubernetes", started.elapsed(), false);
            tracing::error!(event = "scan.kubernetes_failed", error = %e, "no Kubernetes context could be used; the next cycle tries again");
            return 0;
        }
    };
    let mut applied = 0;
    let mut observe = |done: KubeApplied<'_>| {
        if done.outcome.status.started() {
            applied += 1;
            shared.metrics.update_attempted(&UpdateLabels::new(
                done.asset.kind.asset_type(),
                namespace_of(done.asset),
                done.change,
            ));
        }
        tracing::info!(
            event = "update.finished",
            asset_id = %done.asset.id,
            operation = "update",
            result = %done.outcome.status,
            to = %done.outcome.to,
            duration_ms = done.elapsed.as_millis() as u64,
            detail = done.outcome.detail.as_deref().unwrap_or(""),
            "update finished"
        );
        let to = done.outcome.to.clone();
        report_outcome(
            shared,
            done.asset,
            &to,
            done.change,
            done.outcome,
            done.elapsed,
            cid,
        );
    };
    let result = safe_updater_engine::run_kube_observed(
        cfg,
        store,
        &session,
        now,
        &shared.options.actor,
        cid,
        // SIGTERM lets updates in flight finish.
        &safe_updater_engine::Stop::never(),
        &mut observe,
    )
    .await;
    match result {
        Ok(report) => {
            let failed = report.scan.contexts.iter().any(|c| c.error.is_some());
            shared
                .metrics
                .scan_finished("kubernetes", started.elapsed(), !failed);
            for c in report.scan.contexts.iter().filter(|c| c.error.is_some()) {
                tracing::warn!(event = "scan.context_failed", context = %c.context, error = %c.error.clone().unwrap_or_default(), "context not scanned");
            }
            crate::cycle::report_recoveries(shared, store, &report.recovered);
        }
        Err(e) => {
            tracing::error!(event = "cycle.kubernetes_failed", error = %e, "the Kubernetes part of the cycle failed");
        }
    }
    applied
}
