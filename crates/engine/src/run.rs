//! One whole cycle: recover what a crash interrupted, scan, check, apply what policy allows (in
//! dependency order), verify.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config::Config;
use safe_updater_core::decide::Verdict;
use safe_updater_docker::update::RegistryAuth;
use safe_updater_docker::{ConnectOptions, ContainerExtra, Engine, EngineSpec};
use safe_updater_registry::{Cycle, RegistryApi};
use safe_updater_store::Store;
use serde::Serialize;

use crate::apply::{ApplyOutcome, ApplySettings, Recovery, apply, recover};
use crate::progress::Progress;
use crate::stop::Stop;
use crate::{CheckReport, EngineError, ScanReport, scan};
use safe_updater_core::policy::AssetView;
use safe_updater_core::scope::Selection;

/// Watchtower's dependency label: container names this one depends on, comma-separated.
pub const WATCHTOWER_DEPENDS_ON: &str = "com.centurylinklabs.watchtower.depends-on";

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub recovered: Vec<Recovery>,
    pub scan: ScanReport,
    pub check: CheckReport,
    pub applied: Vec<ApplyOutcome>,
}

/// Connects to every engine that answers; the others are left to `scan` to report.
pub async fn connect_all(specs: &[EngineSpec]) -> Vec<Engine> {
    let mut engines = Vec::new();
    for spec in specs {
        match Engine::connect(spec, ConnectOptions::default()).await {
            Ok(e) => engines.push(e),
            Err(e) => tracing::warn!(engine = %spec.name, error = %e, "engine not reachable"),
        }
    }
    engines
}

/// What the dependency order needs of one asset: the names it answers to (its container
/// name, its compose service) and the names it depends on (compose `depends_on`, Watchtower's
/// `depends-on` label). Small, so that a long list of due updates need not keep the whole
/// assets in memory to be ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyNode {
    keys: Vec<String>,
    deps: Vec<String>,
}

impl DependencyNode {
    pub fn of(a: &Asset) -> Self {
        let extra = ContainerExtra::from_asset(a).ok();
        let mut keys = vec![format!("name:{}/{}", a.location, a.name)];
        let project = a.namespace.clone().unwrap_or_default();
        if let Some(service) = extra.as_ref().and_then(|x| x.compose_service.as_ref()) {
            keys.push(format!("svc:{}/{project}/{service}", a.location));
        }
        let mut deps = Vec::new();
        if let Some(list) = a.labels.get(WATCHTOWER_DEPENDS_ON) {
            deps.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|n| format!("name:{}/{}", a.location, n.trim_start_matches('/'))),
            );
        }
        if let Some(x) = &extra {
            deps.extend(
                x.compose_depends_on
                    .iter()
                    .map(|d| format!("svc:{}/{project}/{}", a.location, d.service)),
            );
        }
        DependencyNode { keys, deps }
    }
}

/// `(dependency, dependent)` index pairs. Unknown names are ignored.
fn dependency_edges(nodes: &[DependencyNode]) -> Vec<(usize, usize)> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for k in &n.keys {
            index.insert(k, i);
        }
    }
    let mut edges = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for d in &n.deps {
            if let Some(&j) = index.get(d.as_str())
                && j != i
            {
                edges.push((j, i));
            }
        }
    }
    edges
}

fn nodes_of(assets: &[Asset]) -> Vec<DependencyNode> {
    assets.iter().map(DependencyNode::of).collect()
}

/// Orders assets so that what others depend on is updated first. Cycles keep the given order
/// for what they involve.
pub fn dependency_order(assets: &[Asset]) -> Vec<usize> {
    order_by_edges(assets.len(), &dependency_edges(&nodes_of(assets)))
}

/// Assets that depend on each other, directly or not, in one group each (in dependency
/// order); groups never share an asset, so they may be updated at the same time while the
/// members of one group never are.
pub fn dependency_groups(assets: &[Asset]) -> Vec<Vec<usize>> {
    dependency_groups_of(&nodes_of(assets))
}

/// [`dependency_groups`] from the assets' [`DependencyNode`]s.
pub fn dependency_groups_of(nodes: &[DependencyNode]) -> Vec<Vec<usize>> {
    let edges = dependency_edges(nodes);
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for &(a, b) in &edges {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order_by_edges(nodes.len(), &edges) {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

/// Kahn's algorithm, always taking the lowest remaining index so the order is stable.
fn order_by_edges(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(j, i) in edges {
        indegree[i] += 1;
        dependents[j].push(i);
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    // What a cycle left behind, in the given order.
    for i in 0..n {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

/// One cycle over what `selection` takes. `auth` holds the pull credentials per registry
/// host. A `stop` lets the update in flight end safely (see [`apply`]) and starts no other.
#[allow(clippy::too_many_arguments)]
pub async fn run_once<R: RegistryApi>(
    config: &Config,
    store: &mut Store,
    cycle: &Cycle<R>,
    specs: &[EngineSpec],
    auth: &BTreeMap<String, RegistryAuth>,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    selection: &Selection,
    stop: &Stop,
    progress: &Progress,
) -> Result<RunReport, EngineError> {
    let engines = connect_all(specs).await;
    let recovered = if selection.narrows() {
        // Only the selected assets' interrupted updates; the asset must still be known to
        // be judged.
        let selected: std::collections::HashSet<String> = store
            .unfinished_updates()?
            .into_iter()
            .filter_map(|u| store.get_asset(&u.asset_id).ok().flatten())
            .filter(|a| selection.selects(&AssetView::from(a)))
            .map(|a| a.id)
            .collect();
        recover(store, &engines, actor, &|id| selected.contains(id)).await?
    } else {
        recover(store, &engines, actor, &|_| true).await?
    };
    let scan_report = scan(
        store,
        specs,
        config.docker.include_stopped,
        selection,
        now,
        actor,
    )
    .await?;
    let wanted = |a: &Asset| selection.selects(&AssetView::from(a));
    let check_report =
        crate::check_some(config, store, cycle, now, actor, correlation_id, &wanted).await?;

    let mut todo: Vec<(Asset, String)> = Vec::new();
    for c in &check_report.checks {
        let Some(e) = &c.evaluation else { continue };
        let Some(target) = &e.act_on else { continue };
        let approved = e
            .candidates
            .iter()
            .any(|cand| &cand.tag == target && cand.decision == Verdict::Approve);
        if !approved {
            continue;
        }
        if let Some(asset) = store.get_asset(&c.asset_id)?
            && asset.kind == AssetKind::Container
        {
            todo.push((asset, target.clone()));
        }
    }
    let assets: Vec<Asset> = todo.iter().map(|(a, _)| a.clone()).collect();
    let mut applied = Vec::new();
    for i in dependency_order(&assets) {
        let (asset, target) = &todo[i];
        let Some(engine) = engines.iter().find(|e| e.name() == asset.location) else {
            continue;
        };
        if stop.requested() {
            break;
        }
        applied.push(
            apply_by_policy(
                config,
                store,
                engine,
                asset,
                target,
                auth,
                actor,
                correlation_id,
                stop,
                progress,
            )
            .await?,
        );
    }
    Ok(RunReport {
        recovered,
        scan: scan_report,
        check: check_report,
        applied,
    })
}

/// Applies one update an operator asked for (`update --to`, `rollback`): the operator's choice
/// is the approval, so no gate is consulted; windows and cooldowns are for automatic updates.
#[allow(clippy::too_many_arguments)]
pub async fn apply_one(
    config: &Config,
    store: &mut Store,
    specs: &[EngineSpec],
    asset_id: &str,
    target_tag: &str,
    auth: &BTreeMap<String, RegistryAuth>,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
    progress: &Progress,
) -> Result<ApplyOutcome, EngineError> {
    let not_started = |detail: String| ApplyOutcome::not_started(asset_id, "", target_tag, detail);
    let Some(asset) = store.get_asset(asset_id)? else {
        return Ok(not_started(format!(
            "no tracked asset {asset_id}; see `safe-updater list-assets`"
        )));
    };
    if asset.kind != AssetKind::Container {
        return Ok(not_started(format!(
            "{asset_id} is a {}; only containers can be updated yet",
            asset.kind
        )));
    }
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
    // This asset's interrupted update first (others are their own commands' business): an
    // update must start from the container its snapshot would restore.
    recover(store, std::slice::from_ref(&engine), actor, &|id| {
        id == asset_id
    })
    .await?;
    apply_by_policy(
        config,
        store,
        &engine,
        &asset,
        target_tag,
        auth,
        actor,
        correlation_id,
        stop,
        progress,
    )
    .await
}

/// Applies with what the asset's policy says about failure, and the pull credentials of its
/// registry.
#[allow(clippy::too_many_arguments)]
pub async fn apply_by_policy(
    config: &Config,
    store: &mut Store,
    engine: &Engine,
    asset: &Asset,
    target: &str,
    auth: &BTreeMap<String, RegistryAuth>,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
    progress: &Progress,
) -> Result<ApplyOutcome, EngineError> {
    let policy = config.policy.resolve_asset(asset);
    let registry = safe_updater_core::reference::ImageRef::parse(&asset.image)
        .map(|r| r.registry().to_owned())
        .unwrap_or_default();
    let settings = ApplySettings {
        health: &config.health,
        checks: &config.health_checks,
        on_failure: policy.on_failure.value,
        actor,
        correlation_id,
        stop: stop.clone(),
        progress: progress.clone(),
    };
    apply(
        store,
        engine,
        asset,
        target,
        auth.get(&registry).cloned(),
        &settings,
    )
    .await
}

/// What `rollback` did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The asset's interrupted updates, recovered (or left to their live owner) first.
    pub recovered: Vec<Recovery>,
    /// The rollback itself; `None` when recovering the interrupted update was the rollback,
    /// or when it could not be recovered.
    pub outcome: Option<ApplyOutcome>,
    /// The versions rolled away from, now rejected in the operator's name.
    pub rejected: Vec<String>,
}

impl RollbackReport {
    /// Whether the asset is back where the operator asked.
    pub fn ok(&self) -> bool {
        !self.recovered.iter().any(|r| !r.restored)
            && self
                .outcome
                .as_ref()
                .is_none_or(|o| o.status == crate::ApplyStatus::Succeeded)
    }
}

/// `rollback ASSET [--to TAG]` for a container. An update of the asset a crash or a signal
/// left in progress is recovered first: that restore is the rollback when no `to` is given.
/// Otherwise the asset goes back to what its last successful update replaced (or to `to`),
/// applied and verified like any update. The version rolled away from is then rejected in the
/// operator's name, so that no cycle applies it again until an operator approves it.
#[allow(clippy::too_many_arguments)]
pub async fn rollback(
    config: &Config,
    store: &mut Store,
    specs: &[EngineSpec],
    asset_id: &str,
    to: Option<&str>,
    auth: &BTreeMap<String, RegistryAuth>,
    actor: &str,
    correlation_id: &str,
    stop: &Stop,
    progress: &Progress,
) -> Result<RollbackReport, EngineError> {
    let mut report = RollbackReport {
        recovered: Vec::new(),
        outcome: None,
        rejected: Vec::new(),
    };
    let not_started = |detail: String| {
        Some(ApplyOutcome::not_started(
            asset_id,
            "",
            to.unwrap_or(""),
            detail,
        ))
    };
    let Some(asset) = store.get_asset(asset_id)? else {
        report.outcome = not_started(format!(
            "no tracked asset {asset_id}; see `safe-updater list-assets`"
        ));
        return Ok(report);
    };
    let Some(spec) = specs.iter().find(|s| s.name == asset.location) else {
        report.outcome = not_started(format!("engine {} is not configured", asset.location));
        return Ok(report);
    };
    let engine = match Engine::connect(spec, ConnectOptions::default()).await {
        Ok(e) => e,
        Err(e) => {
            report.outcome = not_started(e.to_string());
            return Ok(report);
        }
    };
    let interrupted: Vec<_> = store
        .unfinished_updates()?
        .into_iter()
        .filter(|u| u.asset_id == asset_id)
        .collect();
    report.recovered = recover(store, std::slice::from_ref(&engine), actor, &|id| {
        id == asset_id
    })
    .await?;
    if report.recovered.iter().any(|r| !r.restored) {
        return Ok(report);
    }
    let now = Timestamp::now();
    for u in &interrupted {
        if let Some(tag) = tag_of(&u.to_ref) {
            let from = tag_of(&u.from_ref).unwrap_or_default();
            reject(store, asset_id, &tag, actor, &from, now, &mut report)?;
        }
    }
    if !report.recovered.is_empty() && to.is_none() {
        return Ok(report);
    }
    let target = match to {
        Some(t) => t.to_owned(),
        None => match previous_version(store, asset_id)? {
            Some(t) => t,
            None => {
                report.outcome = not_started(format!(
                    "{asset_id} has no successful update to roll back; give the version with --to"
                ));
                return Ok(report);
            }
        },
    };
    let Some(asset) = store.get_asset(asset_id)? else {
        return Ok(report);
    };
    let away_from = tag_of(&asset.image);
    let outcome = apply_by_policy(
        config,
        store,
        &engine,
        &asset,
        &target,
        auth,
        actor,
        correlation_id,
        stop,
        progress,
    )
    .await?;
    if outcome.status == crate::ApplyStatus::Succeeded
        && let Some(from) = away_from.filter(|f| *f != target)
    {
        reject(
            store,
            asset_id,
            &from,
            actor,
            &target,
            Timestamp::now(),
            &mut report,
        )?;
    }
    report.outcome = Some(outcome);
    Ok(report)
}

fn tag_of(image: &str) -> Option<String> {
    safe_updater_core::reference::ImageRef::parse(image)
        .ok()?
        .tag()
        .map(str::to_owned)
}

fn reject(
    store: &mut Store,
    asset_id: &str,
    version: &str,
    actor: &str,
    target: &str,
    now: Timestamp,
    report: &mut RollbackReport,
) -> Result<(), EngineError> {
    match crate::operator::reject_rolled_back(store, asset_id, version, actor, target, now) {
        Ok(_) => {
            report.rejected.push(version.to_owned());
            Ok(())
        }
        Err(crate::OperatorError::Store(e)) => Err(e.into()),
        // An actor the operator module refuses (too long) is the CLI's own name: say so in
        // the log rather than fail a rollback that happened.
        Err(e) => {
            tracing::warn!(asset_id, version, error = %e, "the version rolled away from could not be rejected");
            Ok(())
        }
    }
}

/// The version to roll back to: what the last successful update replaced.
pub fn previous_version(store: &Store, asset_id: &str) -> Result<Option<String>, EngineError> {
    let last = store
        .history(Some(asset_id), 50)?
        .into_iter()
        .find(|u| u.status == safe_updater_store::UpdateStatus::Succeeded);
    Ok(last.and_then(|u| {
        safe_updater_core::reference::ImageRef::parse(&u.from_ref)
            .ok()?
            .tag()
            .map(str::to_owned)
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn asset(
        name: &str,
        project: Option<&str>,
        service: Option<&str>,
        depends: &[&str],
        wt: Option<&str>,
    ) -> Asset {
        let mut labels = BTreeMap::new();
        if let Some(w) = wt {
            labels.insert(WATCHTOWER_DEPENDS_ON.to_owned(), w.to_owned());
        }
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().expect("ts");
        Asset {
            id: format!("docker/local/{name}"),
            kind: AssetKind::Container,
            location: "local".into(),
            namespace: project.map(str::to_owned),
            name: name.into(),
            container: None,
            image: "x:1".into(),
            digest: None,
            labels,
            annotations: BTreeMap::new(),
            first_seen: now,
            last_seen: now,
            extra: serde_json::json!({
                "container_id": name, "image_id": "i", "repo_digests": [], "state": "running", "ports": [],
                "compose_service": service,
                "compose_depends_on": depends.iter().map(|d| serde_json::json!({"service": d})).collect::<Vec<_>>(),
            }),
        }
    }

    #[test]
    fn dependencies_come_first() {
        let assets = vec![
            asset("app-web-1", Some("app"), Some("web"), &["api"], None),
            asset("app-api-1", Some("app"), Some("api"), &["db"], None),
            asset("app-db-1", Some("app"), Some("db"), &[], None),
            asset("proxy", None, None, &[], Some("app-web-1")),
            asset("other-db-1", Some("other"), Some("db"), &[], None),
        ];
        let order: Vec<&str> = dependency_order(&assets)
            .into_iter()
            .map(|i| assets[i].name.as_str())
            .collect();
        assert_eq!(
            order,
            ["app-db-1", "app-api-1", "app-web-1", "proxy", "other-db-1"]
        );
    }

    #[test]
    fn cycles_keep_the_given_order() {
        let assets = vec![
            asset("a", None, None, &[], Some("b")),
            asset("b", None, None, &[], Some("a")),
            asset("c", None, None, &[], None),
        ];
        let order: Vec<&str> = dependency_order(&assets)
            .into_iter()
            .map(|i| assets[i].name.as_str())
            .collect();
        assert_eq!(order, ["c", "a", "b"]);
    }

    #[test]
    fn groups_hold_what_depends_on_each_other_in_order() {
        let assets = vec![
            asset("app-web-1", Some("app"), Some("web"), &["api"], None),
            asset("lone", None, None, &[], None),
            asset("app-api-1", Some("app"), Some("api"), &["db"], None),
            asset("app-db-1", Some("app"), Some("db"), &[], None),
            asset("proxy", None, None, &[], Some("app-web-1")),
            asset("x", None, None, &[], Some("y")),
            asset("y", None, None, &[], None),
        ];
        let groups: Vec<Vec<&str>> = dependency_groups(&assets)
            .into_iter()
            .map(|g| g.into_iter().map(|i| assets[i].name.as_str()).collect())
            .collect();
        assert_eq!(
            groups,
            vec![
                vec!["app-db-1", "app-api-1", "app-web-1", "proxy"],
                vec!["lone"],
                vec!["y", "x"],
            ]
        );
    }
}
