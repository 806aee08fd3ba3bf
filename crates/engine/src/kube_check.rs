//! Detect and decide for Kubernetes assets. Workload images are checked like containers'
//! (`check::check_assets`: one tag listing per repository, digest drift, the core's `evaluate`)
//! but with the credentials the workload's pods pull with — its `imagePullSecrets` and its
//! service account's — laid over the configured ones, so a private registry needs no extra
//! configuration. Helm releases are checked against the chart versions of their repository
//! (`index.yaml` with basic auth, or OCI tags), decided by the same `evaluate` and policy.
//!
//! It decides nothing itself and changes nothing in a cluster; it must not put a pull secret
//! or a chart repository password into a report, the store or a log.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config::Config;
use safe_updater_core::decide::{Available, evaluate};
use safe_updater_kube::charts::{self, ChartRepository, ChartVersion};
use safe_updater_kube::discover::{HelmReleaseExtra, KubeExtra};
use safe_updater_registry::{Credential, Cycle, RegistryClient, RequestCounts};
use safe_updater_store::{AssetFilter, ObservedTagInput, Store};

use crate::check::{check_assets, facts_for, record_decisions};
use crate::kube_session::{ChartRepo, KubeSession};
use crate::{AssetCheck, CheckReport, EngineError};

/// Whether an asset is one the session looks at: a Kubernetes kind, of a connected context, in
/// the namespaces and kinds of its filter.
pub fn in_session(session: &KubeSession, asset: &Asset) -> bool {
    asset.kind != AssetKind::Container
        && session.target(&asset.location).is_some()
        && session
            .filter
            .namespace_allowed(asset.namespace.as_deref().unwrap_or(""))
        && (session.filter.kinds.is_empty() || session.filter.kinds.contains(&asset.kind))
}

/// One report of two (Docker's and Kubernetes'), sorted by asset.
pub fn merge_reports(mut a: CheckReport, b: CheckReport) -> CheckReport {
    a.checks.extend(b.checks);
    a.checks.sort_by(|x, y| x.asset_id.cmp(&y.asset_id));
    add_counts(&mut a.requests, &b.requests);
    a
}

fn add_counts(total: &mut RequestCounts, more: &RequestCounts) {
    total.token += more.token;
    total.tags_page += more.tags_page;
    total.head_manifest += more.head_manifest;
    total.get_manifest += more.get_manifest;
    total.get_blob += more.get_blob;
    total.retries += more.retries;
}

fn failed(asset: &Asset, why: String) -> AssetCheck {
    AssetCheck {
        asset_id: asset.id.clone(),
        image: asset.image.clone(),
        evaluation: None,
        error: Some(why),
    }
}

/// Checks the stored Kubernetes assets of the session that `wanted` selects, and records the
/// decisions.
pub async fn check_kube(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    wanted: &(dyn Fn(&Asset) -> bool + Sync),
) -> Result<CheckReport, EngineError> {
    let mut assets = store.list_assets(&AssetFilter::default())?;
    assets.retain(|a| in_session(session, a) && wanted(a));
    let mut checks = Vec::new();
    let mut requests = RequestCounts::default();

    // Workloads that pull with the same secrets share one registry client.
    type Key = (String, String, Vec<String>, Option<String>);
    let mut groups: BTreeMap<Key, Vec<Asset>> = BTreeMap::new();
    let mut releases = Vec::new();
    for a in assets {
        if a.kind == AssetKind::HelmRelease {
            releases.push(a);
            continue;
        }
        let extra = KubeExtra::from_asset(&a);
        let key = (
            a.location.clone(),
            a.namespace.clone().unwrap_or_default(),
            extra
                .as_ref()
                .map(|x| x.image_pull_secrets.clone())
                .unwrap_or_default(),
            extra.and_then(|x| x.service_account),
        );
        groups.entry(key).or_default().push(a);
    }
    for ((context, namespace, _, _), group) in groups {
        let Some(target) = session.target(&context) else {
            continue;
        };
        let mut client_cfg = session.registry.clone();
        match target.pull_credentials(&group[0]).await {
            Ok(creds) => {
                for p in &creds.problems {
                    tracing::info!(%context, %namespace, problem = %p, "a pull secret could not be used");
                }
                // The workload's own credentials win; configured ones remain for the rest.
                client_cfg.credentials.extend(creds.as_client_credentials());
            }
            Err(e) => {
                tracing::warn!(%context, %namespace, error = %e, "pull secrets not read; checking with the configured credentials")
            }
        }
        let client = match RegistryClient::new(client_cfg) {
            Ok(c) => c,
            Err(e) => {
                checks.extend(
                    group
                        .iter()
                        .map(|a| failed(a, format!("registry client: {e}"))),
                );
                continue;
            }
        };
        let cycle = Cycle::with_budget(client, config.registries.cycle_timeout);
        let report = check_assets(config, store, &cycle, now, actor, correlation_id, group).await?;
        add_counts(&mut requests, &report.requests);
        checks.extend(report.checks);
    }

    let mut versions: HashMap<(String, String), Result<Vec<ChartVersion>, String>> = HashMap::new();
    for asset in releases {
        let check = check_release(
            config,
            store,
            session,
            &asset,
            &mut versions,
            now,
            actor,
            correlation_id,
        )
        .await?;
        checks.push(check);
    }
    checks.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    Ok(CheckReport { checks, requests })
}

/// The versions of `chart` in `repo`.
pub async fn chart_versions(
    session: &KubeSession,
    repo: &ChartRepo,
    chart: &str,
) -> Result<Vec<ChartVersion>, String> {
    let url = &repo.entry.url;
    if url.starts_with("oci://") {
        let mut cfg = session.registry.clone();
        if let (Some(host), Some((user, password))) = (
            crate::kube_session::oci_host(url),
            session.oci_credential(repo),
        ) {
            cfg.credentials.insert(
                host.to_owned(),
                Credential::Basic {
                    username: user,
                    password,
                },
            );
        }
        let client = RegistryClient::new(cfg).map_err(|e| format!("registry client: {e}"))?;
        charts::oci_versions(&client, url, chart)
            .await
            .map_err(|e| e.to_string())
    } else {
        let mut r = ChartRepository::new(url.clone());
        if let (Some(user), Some(pw)) = (&repo.entry.username, &repo.password) {
            r = r.with_basic_auth(user.clone(), pw.clone());
        }
        r.versions(chart).await.map_err(|e| e.to_string())
    }
}

#[allow(clippy::too_many_arguments)]
async fn check_release(
    config: &Config,
    store: &mut Store,
    session: &KubeSession,
    asset: &Asset,
    cache: &mut HashMap<(String, String), Result<Vec<ChartVersion>, String>>,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
) -> Result<AssetCheck, EngineError> {
    let Some(extra) = HelmReleaseExtra::from_asset(asset) else {
        return Ok(failed(
            asset,
            "its release record cannot be read; run `safe-updater scan` again".into(),
        ));
    };
    let namespace = asset.namespace.clone().unwrap_or_default();
    let Some(repo) = session.chart_for(&extra.chart, &namespace, &asset.name) else {
        return Ok(failed(
            asset,
            format!(
                "no chart repository for chart {} (release {namespace}/{}): add one under kubernetes.charts (Helm does not record where a chart came from)",
                extra.chart, asset.name
            ),
        ));
    };
    let key = (repo.entry.url.clone(), extra.chart.clone());
    if !cache.contains_key(&key) {
        let v = chart_versions(session, repo, &extra.chart).await;
        cache.insert(key.clone(), v);
    }
    let versions = match &cache[&key] {
        Ok(v) => v,
        Err(e) => return Ok(failed(asset, e.clone())),
    };
    // First-seen times feed the cooldown; the index's `created` is better when it has one.
    let seen_key = format!("chart:{}/{}", repo.entry.url, extra.chart);
    let inputs: Vec<ObservedTagInput> = versions
        .iter()
        .map(|v| ObservedTagInput {
            tag: v.version.clone(),
            digest: None,
        })
        .collect();
    store.record_observed_tags(&seen_key, &inputs, now)?;
    let seen: HashMap<String, Timestamp> = store
        .observed_tags(&seen_key)?
        .into_iter()
        .map(|o| (o.tag, o.first_seen))
        .collect();
    let available: Vec<Available> = charts::available(versions, None)
        .into_iter()
        .map(|a| Available {
            first_seen: a.first_seen.or_else(|| seen.get(&a.tag).copied()),
            tag: a.tag,
        })
        .collect();
    let facts = facts_for(store, asset, &extra.chart_version, &config.health_checks)?;
    let policy = config.policy.resolve_asset(asset);
    let evaluation = evaluate(&policy, &facts, &available, now);
    record_decisions(store, asset, &evaluation, now, actor, correlation_id)?;
    Ok(AssetCheck {
        asset_id: asset.id.clone(),
        image: asset.image.clone(),
        evaluation: Some(evaluation),
        error: None,
    })
}
