//! Discover: every configured Docker engine, concurrently, into the store.

use jiff::Timestamp;
use safe_updater_core::asset::AssetKind;
use safe_updater_core::audit::AuditEvent;
use safe_updater_core::policy::AssetView;
use safe_updater_core::scope::Selection;
use safe_updater_docker::{DiscoverOptions, EngineSpec, discover};
use safe_updater_store::Store;
use serde::Serialize;

use crate::EngineError;

/// What one engine gave.
#[derive(Debug, Clone, Serialize)]
pub struct EngineOutcome {
    pub engine: String,
    pub host: String,
    /// Containers found (and stored), when the engine answered.
    pub containers: Option<usize>,
    /// Why the engine could not be scanned; its assets in the store are left as they were.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub engines: Vec<EngineOutcome>,
    /// Assets stored by this scan.
    pub assets: usize,
    /// Assets of the engines that answered that are gone (their containers no longer exist).
    pub removed: Vec<String>,
}

impl ScanReport {
    pub fn failed_engines(&self) -> usize {
        self.engines.iter().filter(|e| e.error.is_some()).count()
    }
}

/// Scans every engine and stores what the reachable ones run of `selection` (its scope: what
/// is out of it is never inspected nor stored). An engine that is down is reported, not
/// fatal: the others are still scanned and stored.
pub async fn scan(
    store: &mut Store,
    engines: &[EngineSpec],
    include_stopped: bool,
    selection: &Selection,
    now: Timestamp,
    actor: &str,
) -> Result<ScanReport, EngineError> {
    let scans = discover(
        engines,
        DiscoverOptions {
            include_stopped,
            scope: selection.scope.clone(),
            ..Default::default()
        },
        now,
    )
    .await;
    // An asset being updated (by any process) may be between its old and its new container
    // right now: not gone.
    let in_flight: Vec<String> = store
        .unfinished_updates()?
        .into_iter()
        .map(|u| u.asset_id)
        .collect();
    let mut outcomes = Vec::new();
    let mut stored = 0;
    let mut removed = Vec::new();
    for scan in scans {
        let host = engines
            .iter()
            .find(|e| e.name == scan.engine)
            .map(|e| e.host.clone())
            .unwrap_or_default();
        match scan.result {
            Ok(mut found) => {
                if selection.narrows() {
                    found.retain(|a| selection.selects(&AssetView::from(a)));
                }
                outcomes.push(EngineOutcome {
                    engine: scan.engine.clone(),
                    host,
                    containers: Some(found.len()),
                    error: None,
                });
                // Only an engine that answered in full can say a container is gone; one that
                // is down keeps its assets as they were.
                stored += found.len();
                let covered =
                    |a: &safe_updater_core::asset::Asset| selection.selects(&AssetView::from(a));
                let gone = store.replace_assets_at_except(
                    &scan.engine,
                    AssetKind::Container,
                    &found,
                    &in_flight,
                    selection
                        .narrows()
                        .then_some(&covered as &dyn Fn(&safe_updater_core::asset::Asset) -> bool),
                )?;
                if !gone.is_empty() {
                    tracing::info!(engine = %scan.engine, removed = gone.len(), "containers gone since the last scan");
                }
                removed.extend(gone);
            }
            Err(e) => {
                tracing::warn!(engine = %scan.engine, error = %e, "engine could not be scanned");
                outcomes.push(EngineOutcome {
                    engine: scan.engine,
                    host,
                    containers: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    store.append_audit(AuditEvent {
        timestamp: now,
        actor: actor.to_owned(),
        action: "scan".into(),
        asset_id: None,
        correlation_id: None,
        details: serde_json::json!({ "engines": outcomes, "assets": stored, "removed": removed }),
    })?;
    Ok(ScanReport {
        engines: outcomes,
        assets: stored,
        removed,
    })
}
