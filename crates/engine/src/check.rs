//! Detect and decide: for every tracked asset, what its registry offers and what policy allows.
//!
//! Registry traffic is shaped here: assets are grouped by repository, each repository's tags
//! are listed once per cycle and each (repository, tag) resolved once (the registry crate's
//! `Cycle` guarantees it), so the number of requests grows with repositories, not containers.
//! A manifest is fetched only to check that the candidate the engine would act on has an
//! image for the asset's platform.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::constraint::Constraint;
use safe_updater_core::decide::{
    ApprovalFact, Available, DigestDrift, Evaluation, Facts, PinFact, evaluate,
};
use safe_updater_core::reference::ImageRef;
use safe_updater_docker::ContainerExtra;
use safe_updater_registry::{Cycle, RegistryApi, RegistryError, RequestCounts};
use safe_updater_store::{
    AssetFilter, DecisionRecord, ObservedTagInput, Store, UpdateStatus, Verdict,
};
use serde::Serialize;

use crate::EngineError;

/// Registry requests in flight at once across repositories (each registry also has its own
/// limit in the client).
const PARALLEL: usize = 8;

/// The outcome for one asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetCheck {
    pub asset_id: String,
    pub image: String,
    /// The decision, when the registry could be asked.
    pub evaluation: Option<Evaluation>,
    /// Why the asset could not be checked.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub checks: Vec<AssetCheck>,
    /// Registry requests this cycle made, by kind.
    pub requests: RequestCounts,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.checks.iter().filter(|c| c.error.is_some()).count()
    }
}

/// Per tag of a repository: when it was first seen, and when its current digest was.
type SeenTags = HashMap<String, (Timestamp, Timestamp)>;

fn repo_key(image: &ImageRef) -> String {
    format!("{}/{}", image.registry(), image.repository())
}

/// Assets read from the store and checked together. A check holds one page of the inventory
/// and its evaluations at a time, so its memory follows this number, not the inventory's size;
/// the registry is asked no more often for it (the `Cycle` remembers every answer).
const PAGE: usize = 256;

/// Checks every tracked asset and records the decisions (deduplicated: a decision already on
/// record for the same candidate is not written again).
pub async fn check<R: RegistryApi>(
    config: &safe_updater_core::config::Config,
    store: &mut Store,
    cycle: &Cycle<R>,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
) -> Result<CheckReport, EngineError> {
    check_some(config, store, cycle, now, actor, correlation_id, &|_| true).await
}

/// [`check`] for the tracked assets `wanted` selects: those due by their own check interval,
/// or those using a repository a registry webhook just announced.
pub async fn check_some<R: RegistryApi>(
    config: &safe_updater_core::config::Config,
    store: &mut Store,
    cycle: &Cycle<R>,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    wanted: &(dyn Fn(&Asset) -> bool + Sync),
) -> Result<CheckReport, EngineError> {
    let mut checks = Vec::new();
    let requests = check_each(
        config,
        store,
        cycle,
        now,
        actor,
        correlation_id,
        wanted,
        &mut |_, c| checks.push(c),
    )
    .await?;
    checks.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    Ok(CheckReport { checks, requests })
}

/// [`check_some`] handing each outcome to `sink` with its asset as soon as it is decided,
/// instead of collecting them: what the daemon uses, so that a cycle over a large inventory
/// keeps only what it needs of each outcome. Returns the registry requests made.
#[allow(clippy::too_many_arguments)]
pub async fn check_each<R: RegistryApi>(
    config: &safe_updater_core::config::Config,
    store: &mut Store,
    cycle: &Cycle<R>,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    wanted: &(dyn Fn(&Asset) -> bool + Sync),
    sink: &mut (dyn FnMut(&Asset, AssetCheck) + Send),
) -> Result<RequestCounts, EngineError> {
    // Kubernetes assets need their cluster's pull secrets and chart repositories:
    // `crate::kube_check` checks them through `check_assets` below.
    let containers = AssetFilter {
        kind: Some(AssetKind::Container),
        ..AssetFilter::default()
    };
    let mut checker = Checker::new(config, cycle, now, actor, correlation_id);
    let mut after: Option<String> = None;
    loop {
        let mut page = store.list_assets_page(&containers, after.as_deref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let more = page.len() == PAGE;
        page.retain(|a| wanted(a));
        checker.check(store, page, sink).await?;
        if !more {
            break;
        }
    }
    Ok(cycle.requests())
}

/// Detects and decides for `assets` with the registry of `cycle`.
pub(crate) async fn check_assets<R: RegistryApi>(
    config: &safe_updater_core::config::Config,
    store: &mut Store,
    cycle: &Cycle<R>,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
    assets: Vec<Asset>,
) -> Result<CheckReport, EngineError> {
    let mut checks: Vec<AssetCheck> = Vec::with_capacity(assets.len());
    Checker::new(config, cycle, now, actor, correlation_id)
        .check(store, assets, &mut |_, c| checks.push(c))
        .await?;
    checks.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    Ok(CheckReport {
        checks,
        requests: cycle.requests(),
    })
}

/// One check, page after page of assets.
struct Checker<'a, R: RegistryApi> {
    config: &'a safe_updater_core::config::Config,
    cycle: &'a Cycle<R>,
    now: Timestamp,
    actor: &'a str,
    correlation_id: &'a str,
    /// Per repository checked so far: when each tag was first seen (recorded once per check).
    first_seen: HashMap<String, SeenTags>,
}

impl<'a, R: RegistryApi> Checker<'a, R> {
    fn new(
        config: &'a safe_updater_core::config::Config,
        cycle: &'a Cycle<R>,
        now: Timestamp,
        actor: &'a str,
        correlation_id: &'a str,
    ) -> Self {
        Checker {
            config,
            cycle,
            now,
            actor,
            correlation_id,
            first_seen: HashMap::new(),
        }
    }

    async fn check(
        &mut self,
        store: &mut Store,
        assets: Vec<Asset>,
        sink: &mut (dyn FnMut(&Asset, AssetCheck) + Send),
    ) -> Result<(), EngineError> {
        let (config, cycle, now) = (self.config, self.cycle, self.now);
        let (actor, correlation_id) = (self.actor, self.correlation_id);
        // Parse every reference first; a reference Docker itself would refuse is one asset's
        // problem, not the cycle's.
        let mut parsed: Vec<(usize, ImageRef)> = Vec::new();
        for (i, a) in assets.iter().enumerate() {
            match ImageRef::parse(&a.image) {
                Ok(r) => parsed.push((i, r.with_default_tag())),
                Err(e) => sink(
                    a,
                    AssetCheck {
                        asset_id: a.id.clone(),
                        image: a.image.clone(),
                        evaluation: None,
                        error: Some(format!("image reference cannot be read: {e}")),
                    },
                ),
            }
        }

        // One tag listing per repository.
        let mut repos: BTreeMap<String, ImageRef> = BTreeMap::new();
        for (_, r) in &parsed {
            repos.entry(repo_key(r)).or_insert_with(|| r.clone());
        }
        let listings: HashMap<String, Result<Arc<[String]>, RegistryError>> = stream::iter(repos)
            .map(|(key, image)| async move { (key, cycle.tags(&image).await) })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;

        // One HEAD per (repository, tag) that an asset runs with a known digest: digest drift.
        let heads: HashMap<(String, String), Result<String, RegistryError>> = stream::iter(
            parsed
                .iter()
                .filter(|(i, r)| assets[*i].digest.is_some() && r.tag().is_some())
                .map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
        )
        .map(|image| async move {
            let tag = image.tag().unwrap_or("latest").to_owned();
            let head = cycle.head(&image, &tag).await.map(|h| h.digest);
            ((repo_key(&image), tag), head)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;

        // Remember when each tag was first seen: the cooldown reads it.
        for (key, listing) in &listings {
            let Ok(tags) = listing else { continue };
            if self.first_seen.contains_key(key) {
                continue;
            }
            let inputs: Vec<ObservedTagInput> = tags
                .iter()
                .map(|t| ObservedTagInput {
                    tag: t.clone(),
                    digest: None,
                })
                .collect();
            store.record_observed_tags(key, &inputs, now)?;
            let seen = store
                .observed_tags(key)?
                .into_iter()
                .map(|o| (o.tag, (o.first_seen, o.digest_first_seen)))
                .collect();
            self.first_seen.insert(key.clone(), seen);
        }

        for (i, image) in parsed {
            let asset = &assets[i];
            let key = repo_key(&image);
            let tags = match listings.get(&key) {
                Some(Ok(t)) => t.clone(),
                Some(Err(e)) => {
                    sink(
                        asset,
                        AssetCheck {
                            asset_id: asset.id.clone(),
                            image: asset.image.clone(),
                            evaluation: None,
                            error: Some(e.to_string()),
                        },
                    );
                    continue;
                }
                None => Arc::from(Vec::new()),
            };
            let seen = self.first_seen.get(&key);
            let available: Vec<Available> = tags
                .iter()
                .map(|t| Available {
                    tag: t.clone(),
                    first_seen: seen.and_then(|s| s.get(t)).map(|x| x.0),
                })
                .collect();
            let current = image.tag().unwrap_or("latest").to_owned();
            let mut facts = facts_for(store, asset, &current, &self.config.health_checks)?;
            if let (Some(running), Some(Ok(latest))) =
                (&asset.digest, heads.get(&(key.clone(), current.clone())))
            {
                facts.digest = Some(DigestDrift {
                    running: running.clone(),
                    latest: latest.clone(),
                    first_seen: seen.and_then(|s| s.get(&current)).map(|x| x.1),
                });
            }
            let policy = config.policy.resolve_asset(asset);
            let platform = ContainerExtra::from_asset(asset)
                .ok()
                .and_then(|x| x.platform);
            // Never propose a tag without an image for the platform the container runs on:
            // check the one the engine would act on, exclude it if it fails, decide again
            // (bounded).
            let mut evaluation = evaluate(&policy, &facts, &available, now);
            for _ in 0..4 {
                let Some(target) = evaluation.act_on.clone() else {
                    break;
                };
                if target == current {
                    break;
                }
                let Some(p) = &platform else { break };
                let candidate = image.with_tag(&target).unwrap_or_else(|_| image.clone());
                let why = match cycle
                    .supports_platform(
                        &candidate,
                        &target,
                        &p.os,
                        &p.architecture,
                        p.variant.as_deref(),
                    )
                    .await
                {
                    Ok(true) => break,
                    Ok(false) => format!("no image for {}/{} in {target}", p.os, p.architecture),
                    Err(e) => format!("its platforms could not be read ({e})"),
                };
                facts.unavailable.push((target, why));
                evaluation = evaluate(&policy, &facts, &available, now);
            }
            record_decisions(store, asset, &evaluation, now, actor, correlation_id)?;
            // Between assets, the runtime's other work (a daemon's API) gets its turn.
            tokio::task::yield_now().await;
            sink(
                asset,
                AssetCheck {
                    asset_id: asset.id.clone(),
                    image: asset.image.clone(),
                    evaluation: Some(evaluation),
                    error: None,
                },
            );
        }
        Ok(())
    }
}

/// The history-derived facts: failed targets, approvals, freeze; and whatever keeps the
/// update step from running for this asset (unusable health-check or hook labels), so that
/// what `check` promises is what `update` does.
pub(crate) fn facts_for(
    store: &Store,
    asset: &Asset,
    current: &str,
    rules: &[safe_updater_core::health::CheckRule],
) -> Result<Facts, EngineError> {
    let failed = store
        .failed_targets(&asset.id)?
        .into_iter()
        .map(|r| match ImageRef::parse(&r) {
            Ok(parsed) => parsed.tag().map(str::to_owned).unwrap_or(r),
            Err(_) => r,
        })
        .collect();
    let approvals = store
        .approvals_for(&asset.id)?
        .into_iter()
        .map(|a| ApprovalFact {
            candidate: a.candidate,
            approved: a.verdict == Verdict::Approved,
            operator: a.operator,
        })
        .collect();
    let frozen = store
        .history(Some(&asset.id), 1)?
        .into_iter()
        .find(|u| u.status == UpdateStatus::Frozen)
        .map(|u| {
            u.error
                .unwrap_or_else(|| format!("update to {} failed", u.to_ref))
        });
    // Operators' overrides. A stored pin that no longer parses stops the asset rather than
    // being ignored: ignoring it would let through exactly what the operator held back.
    let overrides = store.overrides(&asset.id)?;
    let mut pin = None;
    let mut blocked = None;
    if let Some(p) = overrides.as_ref().and_then(|o| o.pin.as_ref()) {
        match Constraint::parse(&p.constraint) {
            Ok(constraint) => {
                pin = Some(PinFact {
                    constraint,
                    operator: p.by.clone(),
                });
            }
            Err(e) => {
                blocked = Some(format!(
                    "the operator pin {:?} set by {} cannot be read ({e}); unpin it or pin a valid constraint",
                    p.constraint, p.by
                ));
            }
        }
    }
    let snoozed_until = overrides.and_then(|o| o.snooze).map(|s| (s.until, s.by));
    if blocked.is_none() {
        blocked = crate::apply::update_refusal(asset, rules);
    }
    Ok(Facts {
        current: current.to_owned(),
        failed,
        approvals,
        frozen,
        pin,
        snoozed_until,
        blocked,
        ..Facts::default()
    })
}

pub(crate) fn record_decisions(
    store: &mut Store,
    asset: &Asset,
    evaluation: &Evaluation,
    now: Timestamp,
    actor: &str,
    correlation_id: &str,
) -> Result<(), EngineError> {
    let recent = store.decisions(Some(&asset.id), 50)?;
    for c in &evaluation.candidates {
        let decision = c.decision.as_str();
        let candidate = c.digest.clone().unwrap_or_else(|| c.tag.clone());
        // The same verdict on the same candidate is already on record: writing it again every
        // cycle would bury the trail in repetition.
        if recent
            .iter()
            .any(|d| d.candidate.as_deref() == Some(&candidate) && d.decision == decision)
        {
            continue;
        }
        store.record_decision(&DecisionRecord {
            asset_id: asset.id.clone(),
            at: now,
            actor: actor.to_owned(),
            current: evaluation.current.clone(),
            candidate: Some(candidate),
            change: c.change.clone(),
            gate: c.gate.as_str().to_owned(),
            decision: decision.to_owned(),
            rule: Some(c.rule.clone()),
            reason: c.reason.clone(),
            correlation_id: Some(correlation_id.to_owned()),
        })?;
    }
    Ok(())
}
