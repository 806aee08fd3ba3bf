//! Kubernetes discovery into the store: each context's workloads and Helm releases become
//! assets (`safe_updater_kube`'s ids and extras), stored the way Docker scans are — what a
//! context listed in full replaces what was stored for it, kind by kind; a context that cannot be
//! reached, or a kind it would not list, leaves what was stored as it was.
//!
//! This module only records discovery. It must not update anything (execution is
//! `safe_updater_kube::KubeTarget::apply_image` / `helm_upgrade`, wired by the caller with the
//! snapshot stored first), and it keeps Helm values out of the store and the audit trail.

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::audit::AuditEvent;
use safe_updater_core::policy::AssetView;
use safe_updater_core::scope::Selection;
use safe_updater_kube::discover::{self, CrdFact};
use safe_updater_kube::helm_release::HelmRelease;
use safe_updater_kube::{DiscoveryFilter, KubeTarget};
use safe_updater_store::{AssetFilter, Store};
use serde::Serialize;

use crate::EngineError;

/// The kinds a Kubernetes discovery can produce.
pub const KUBE_KINDS: [AssetKind; 6] = [
    AssetKind::Deployment,
    AssetKind::StatefulSet,
    AssetKind::DaemonSet,
    AssetKind::Job,
    AssetKind::CronJob,
    AssetKind::HelmRelease,
];

/// What one context gave.
#[derive(Debug, Clone, Serialize)]
pub struct ContextOutcome {
    pub context: String,
    /// Assets found (and stored), when the context answered.
    pub assets: Option<usize>,
    pub releases: usize,
    pub crds: Vec<CrdFact>,
    /// Kinds or records that could not be read (their stored assets are kept).
    pub warnings: Vec<String>,
    /// Why the context could not be scanned at all.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubeScanReport {
    pub contexts: Vec<ContextOutcome>,
    pub assets: usize,
    /// Assets gone from the namespaces and kinds that were listed in full.
    pub removed: Vec<String>,
}

/// Discovers every target with `filter` and stores what was found.
pub async fn scan_kube(
    store: &mut Store,
    targets: &[KubeTarget],
    filter: &DiscoveryFilter,
    now: Timestamp,
    actor: &str,
) -> Result<KubeScanReport, EngineError> {
    // Unscoped: what an instance without a scope manages.
    scan_kube_with(
        store,
        targets,
        filter,
        &Selection::default(),
        &|_| None,
        now,
        actor,
    )
    .await
}

/// Discovers every context of a session and stores what was found; release assets name the
/// chart repository `kubernetes.charts` gives for them.
pub async fn scan_session(
    store: &mut Store,
    session: &crate::KubeSession,
    selection: &Selection,
    now: Timestamp,
    actor: &str,
) -> Result<KubeScanReport, EngineError> {
    let repo_of = |r: &HelmRelease| {
        session
            .chart_for(&r.chart_name, &r.namespace, &r.name)
            .map(|c| c.entry.url.clone())
    };
    scan_kube_with(
        store,
        &session.targets,
        &session.filter,
        selection,
        &repo_of,
        now,
        actor,
    )
    .await
}

/// [`scan_kube`], with `repo_of` naming a release's chart repository (Helm does not record it;
/// `filter.chart_repositories` does it by chart name only).
pub async fn scan_kube_with(
    store: &mut Store,
    targets: &[KubeTarget],
    filter: &DiscoveryFilter,
    selection: &Selection,
    repo_of: &(dyn Fn(&HelmRelease) -> Option<String> + Sync),
    now: Timestamp,
    actor: &str,
) -> Result<KubeScanReport, EngineError> {
    let mut outcomes = Vec::new();
    let mut stored = 0;
    let mut removed = Vec::new();
    for target in targets {
        let context = target.context().to_owned();
        match target.discover(filter, now).await {
            Err(e) => {
                tracing::warn!(%context, error = %e, "context could not be scanned");
                outcomes.push(ContextOutcome {
                    context,
                    assets: None,
                    releases: 0,
                    crds: Vec::new(),
                    warnings: Vec::new(),
                    error: Some(e.to_string()),
                });
            }
            Ok(mut report) => {
                // Out of scope (another instance's) or not selected: never stored.
                report
                    .assets
                    .retain(|a| selection.selects(&AssetView::from(a)));
                for release in &report.releases {
                    let Some(repo) = repo_of(release) else {
                        continue;
                    };
                    let asset = discover::release_asset(&context, release, Some(&repo), now);
                    if let Some(slot) = report.assets.iter_mut().find(|a| a.id == asset.id) {
                        *slot = asset;
                    }
                }
                for kind in KUBE_KINDS {
                    let wanted = filter.kinds.is_empty() || filter.kinds.contains(&kind);
                    let found: Vec<Asset> = report
                        .assets
                        .iter()
                        .filter(|a| a.kind == kind)
                        .cloned()
                        .collect();
                    if !wanted {
                        continue;
                    }
                    if report.unlisted_kinds.contains(&kind) {
                        // Incomplete: add what was seen, remove nothing.
                        store.upsert_assets(&found)?;
                        continue;
                    }
                    // Assets of namespaces outside the filter were not looked at: keep them.
                    let outside: Vec<Asset> = store
                        .list_assets(&AssetFilter {
                            kind: Some(kind),
                            location: Some(context.clone()),
                            ..Default::default()
                        })?
                        .into_iter()
                        .filter(|a| {
                            let view = AssetView::from(a);
                            !filter.namespace_allowed(a.namespace.as_deref().unwrap_or(""))
                                // A scan narrowed by name or label did not look at the others
                                // of its scope.
                                || (selection.narrows()
                                    && !selection.selects(&view)
                                    && selection
                                        .scope
                                        .admits(&a.labels, &a.annotations))
                        })
                        .collect();
                    let mut keep = found;
                    keep.extend(outside);
                    removed.extend(store.replace_assets_at(&context, kind, &keep)?);
                }
                stored += report.assets.len();
                outcomes.push(ContextOutcome {
                    context,
                    assets: Some(report.assets.len()),
                    releases: report.releases.len(),
                    crds: report.crds,
                    warnings: report.warnings,
                    error: None,
                });
            }
        }
    }
    let summary: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| serde_json::json!({"context": o.context, "assets": o.assets, "releases": o.releases, "error": o.error}))
        .collect();
    store.append_audit(AuditEvent {
        timestamp: now,
        actor: actor.to_owned(),
        action: "scan".into(),
        asset_id: None,
        correlation_id: None,
        details: serde_json::json!({ "contexts": summary, "assets": stored, "removed": removed }),
    })?;
    Ok(KubeScanReport {
        contexts: outcomes,
        assets: stored,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safe_updater_kube::{ConnectOptions, Mode};

    /// Against the real cluster of `scripts/kube-env` (or any, by `SAFE_UPDATER_E2E_KUBECONFIG`):
    /// a namespace's Deployment is stored, then removed from the store once deleted, while an
    /// asset of a namespace outside the filter is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scan_stores_and_replaces_what_a_context_runs() {
        let Some(kubeconfig) = std::env::var_os("SAFE_UPDATER_E2E_KUBECONFIG") else {
            eprintln!(
                "SKIP: SAFE_UPDATER_E2E_KUBECONFIG is unset (eval \"$(scripts/kube-env env)\")"
            );
            return;
        };
        let kubectl =
            std::env::var_os("SAFE_UPDATER_E2E_KUBECTL").unwrap_or_else(|| "kubectl".into());
        let image = format!(
            "{}/demo/web:1.0.0",
            std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN")
                .unwrap_or_else(|_| "127.0.0.1:5001".into())
        );
        let ns = format!("su-engine-scan-{}", std::process::id());
        let run = |args: &[&str], stdin: Option<String>| {
            use std::io::Write as _;
            let mut child = std::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("kubectl runs");
            if let Some(text) = stdin {
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(text.as_bytes())
                    .expect("stdin");
            }
            drop(child.stdin.take());
            assert!(child.wait().expect("kubectl").success(), "kubectl {args:?}");
        };
        run(&["create", "namespace", &ns], None);
        run(
            &["apply", "-n", &ns, "-f", "-"],
            Some(format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: web, image: \"{image}\"}}]\n"
            )),
        );
        let target = KubeTarget::connect(ConnectOptions {
            kubeconfig: Some(kubeconfig.clone().into()),
            mode: Mode::ReadOnly,
            ..Default::default()
        })
        .await
        .expect("connects");
        let mut store = Store::open_in_memory().expect("store");
        let context = target.context().to_owned();
        let mut elsewhere = Asset {
            id: format!("k8s/{context}/other-ns/Deployment/x/x"),
            kind: AssetKind::Deployment,
            location: context.clone(),
            namespace: Some("other-ns".into()),
            name: "x".into(),
            container: Some("x".into()),
            image: image.clone(),
            digest: None,
            labels: Default::default(),
            annotations: Default::default(),
            first_seen: Timestamp::now(),
            last_seen: Timestamp::now(),
            extra: serde_json::Value::Null,
        };
        store
            .upsert_assets(std::slice::from_ref(&elsewhere))
            .expect("seed");
        let filter = DiscoveryFilter {
            include_namespaces: vec![ns.clone()],
            ..Default::default()
        };

        let report = scan_kube(
            &mut store,
            std::slice::from_ref(&target),
            &filter,
            Timestamp::now(),
            "test",
        )
        .await
        .expect("scan");
        assert_eq!(report.contexts[0].error, None);
        let id = format!("k8s/{context}/{ns}/Deployment/web/web");
        let stored = store.get_asset(&id).expect("store").expect("stored");
        assert_eq!(stored.image, image);

        run(
            &["delete", "deployment", "web", "-n", &ns, "--wait=true"],
            None,
        );
        let report = scan_kube(
            &mut store,
            std::slice::from_ref(&target),
            &filter,
            Timestamp::now(),
            "test",
        )
        .await
        .expect("scan");
        assert_eq!(report.removed, std::slice::from_ref(&id));
        assert!(store.get_asset(&id).expect("store").is_none());
        elsewhere.last_seen = store
            .get_asset(&elsewhere.id)
            .expect("store")
            .expect("kept")
            .last_seen;
        assert_eq!(
            store.get_asset(&elsewhere.id).expect("store").as_ref(),
            Some(&elsewhere)
        );
        run(&["delete", "namespace", &ns, "--wait=false"], None);
    }
}
