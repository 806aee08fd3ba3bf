//! Image updates of workloads Helm does not manage: snapshot the pod template, patch the
//! container's image (strategic merge patch, field manager `safe-updater`, with the previous
//! image and a `kubernetes.io/change-cause` annotation), wait for the rollout, watch it over a
//! window, and on failure restore the snapshot exactly.
//!
//! The snapshot is returned in the [`Outcome`] (and [`KubeTarget::snapshot`] takes one alone),
//! so the engine can store it before anything changes and restore it after a crash. This module
//! must never patch a Helm-managed workload (that is [`crate::helm`]'s job: Helm would undo or
//! fight the change) nor a Job (its template is immutable).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use safe_updater_core::asset::{Asset, AssetKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::discover::{KubeExtra, pod_ready};
use crate::error::KubeError;
use crate::rollout::{self, RolloutState};
use crate::target::KubeTarget;

/// Our field manager: `managedFields` shows which fields the updater set.
pub const FIELD_MANAGER: &str = "safe-updater";
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
pub const PREVIOUS_IMAGE_ANNOTATION: &str = "safe-updater.io/previous-image";

/// The pod template as it was before a change: everything needed to put it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSnapshot {
    pub context: String,
    pub namespace: String,
    pub kind: AssetKind,
    pub name: String,
    pub container: String,
    pub init_container: bool,
    pub previous_image: String,
    /// The whole pod template (`spec.template`, or `spec.jobTemplate.spec.template`).
    pub template: Value,
    /// The workload's uid: a restore never lands on a recreated object of the same name.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub taken_at: Timestamp,
}

/// How to roll out and verify.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How long the rollout may take before it counts as failed.
    pub rollout_timeout: Duration,
    pub poll_interval: Duration,
    /// After the rollout completes, how long it must stay healthy.
    pub window: Duration,
    /// Consecutive bad observations (crash-looping pods, unready pods) that fail the update.
    pub failure_threshold: u32,
    /// `kubernetes.io/change-cause`; a sentence naming the update when `None`.
    pub change_cause: Option<String>,
    /// Restore the snapshot when verification fails.
    pub rollback_on_failure: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            rollout_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            window: Duration::from_secs(30),
            failure_threshold: 3,
            change_cause: None,
            rollback_on_failure: true,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub snapshot: TemplateSnapshot,
    pub new_image: String,
    /// The patch was accepted by the API server.
    pub applied: bool,
    /// The rollout completed and stayed healthy over the window.
    pub healthy: bool,
    /// Why it was judged unhealthy.
    pub failure: Option<String>,
    pub rolled_back: bool,
    /// After a restore: whether the restored template rolled out healthy again.
    pub restored_healthy: Option<bool>,
    /// What was seen, in order (rollout progress, pod problems).
    pub observations: Vec<String>,
}

/// A JSON merge patch (RFC 7386) that turns `current` into exactly `target`: keys only in
/// `current` are set to `null`, arrays and scalars that differ are replaced.
pub fn merge_patch_to(current: &Value, target: &Value) -> Value {
    match (current, target) {
        (Value::Object(cur), Value::Object(tgt)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in tgt {
                match cur.get(k) {
                    Some(c) if c == v => {}
                    Some(c) if c.is_object() && v.is_object() => {
                        out.insert(k.clone(), merge_patch_to(c, v));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in cur.keys().filter(|k| !tgt.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => target.clone(),
    }
}

/// The strategic merge patch that sets one container's image and records the change.
pub fn image_patch(
    kind: AssetKind,
    container: &str,
    init: bool,
    image: &str,
    previous: &str,
    cause: &str,
) -> Value {
    let list = if init { "initContainers" } else { "containers" };
    let pod_spec = json!({ list: [{"name": container, "image": image}] });
    let spec = match kind {
        AssetKind::CronJob => json!({"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}),
        _ => json!({"template": {"spec": pod_spec}}),
    };
    json!({
        "metadata": {"annotations": {CHANGE_CAUSE_ANNOTATION: cause, PREVIOUS_IMAGE_ANNOTATION: previous}},
        "spec": spec,
    })
}

fn template_of(kind: AssetKind, object: &Value) -> Option<&Value> {
    match kind {
        AssetKind::CronJob => object.pointer("/spec/jobTemplate/spec/template"),
        _ => object.pointer("/spec/template"),
    }
}

fn wrap_template(kind: AssetKind, template: Value) -> Value {
    match kind {
        AssetKind::CronJob => json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
        _ => json!({"spec": {"template": template}}),
    }
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

impl KubeTarget {
    /// Reads the workload of `asset` as JSON.
    pub(crate) async fn get_workload(
        &self,
        kind: AssetKind,
        ns: &str,
        name: &str,
    ) -> Result<Value, KubeError> {
        let step = format!("get {kind} {ns}/{name}");
        let c = self.client().clone();
        let v = match kind {
            AssetKind::Deployment => serde_json::to_value(
                Api::<Deployment>::namespaced(c, ns)
                    .get(name)
                    .await
                    .map_err(|e| KubeError::api(&step, e))?,
            ),
            AssetKind::StatefulSet => serde_json::to_value(
                Api::<StatefulSet>::namespaced(c, ns)
                    .get(name)
                    .await
                    .map_err(|e| KubeError::api(&step, e))?,
            ),
            AssetKind::DaemonSet => serde_json::to_value(
                Api::<DaemonSet>::namespaced(c, ns)
                    .get(name)
                    .await
                    .map_err(|e| KubeError::api(&step, e))?,
            ),
            AssetKind::CronJob => serde_json::to_value(
                Api::<CronJob>::namespaced(c, ns)
                    .get(name)
                    .await
                    .map_err(|e| KubeError::api(&step, e))?,
            ),
            other => {
                return Err(KubeError::Invalid(format!(
                    "{other} {ns}/{name} cannot be updated in place"
                )));
            }
        };
        v.map_err(|e| KubeError::Decode {
            what: step,
            detail: e.to_string(),
        })
    }

    async fn patch_workload(
        &self,
        kind: AssetKind,
        ns: &str,
        name: &str,
        patch: &Patch<Value>,
    ) -> Result<(), KubeError> {
        let step = format!("patch {kind} {ns}/{name}");
        let c = self.client().clone();
        let p = params();
        match kind {
            AssetKind::Deployment => Api::<Deployment>::namespaced(c, ns)
                .patch(name, &p, patch)
                .await
                .map(drop),
            AssetKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
                .patch(name, &p, patch)
                .await
                .map(drop),
            AssetKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
                .patch(name, &p, patch)
                .await
                .map(drop),
            AssetKind::CronJob => Api::<CronJob>::namespaced(c, ns)
                .patch(name, &p, patch)
                .await
                .map(drop),
            other => {
                return Err(KubeError::Invalid(format!(
                    "{other} {ns}/{name} cannot be updated in place"
                )));
            }
        }
        .map_err(|e| KubeError::api(step, e))
    }

    /// The pod template of `asset`'s workload now, for storing before a change.
    pub async fn snapshot(
        &self,
        asset: &Asset,
        now: Timestamp,
    ) -> Result<TemplateSnapshot, KubeError> {
        let extra = KubeExtra::from_asset(asset).ok_or_else(|| {
            KubeError::Invalid(format!("{} is not a Kubernetes workload asset", asset.id))
        })?;
        let ns = asset.namespace.clone().unwrap_or_default();
        let container = asset
            .container
            .clone()
            .ok_or_else(|| KubeError::Invalid(format!("{} names no container", asset.id)))?;
        let object = self.get_workload(asset.kind, &ns, &asset.name).await?;
        let template = template_of(asset.kind, &object)
            .cloned()
            .ok_or_else(|| KubeError::Invalid(format!("{} has no pod template", asset.id)))?;
        let list = if extra.init_container {
            "initContainers"
        } else {
            "containers"
        };
        let previous_image = template
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
            })
            .and_then(|c| c.get("image"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                KubeError::Invalid(format!("{} has no container {container:?}", asset.id))
            })?
            .to_owned();
        Ok(TemplateSnapshot {
            context: self.context().to_owned(),
            namespace: ns,
            kind: asset.kind,
            name: asset.name.clone(),
            container,
            init_container: extra.init_container,
            previous_image,
            template,
            uid: object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            generation: object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            taken_at: now,
        })
    }

    /// Sets `new_image` on the asset's container, verifies, and restores on failure. Refuses a
    /// Helm-managed workload (use [`crate::helm::Helm::upgrade`]) and a Job.
    pub async fn apply_image(
        &self,
        asset: &Asset,
        new_image: &str,
        opts: &ApplyOptions,
        now: Timestamp,
    ) -> Result<Outcome, KubeError> {
        self.mode()
            .check_write("patch", asset.kind.as_str(), Some(&asset.name))?;
        let extra = KubeExtra::from_asset(asset).ok_or_else(|| {
            KubeError::Invalid(format!("{} is not a Kubernetes workload asset", asset.id))
        })?;
        if extra.helm_managed {
            let release = extra
                .helm
                .as_ref()
                .map(|h| format!(" (release {}/{})", h.namespace, h.release))
                .unwrap_or_default();
            return Err(KubeError::Invalid(format!(
                "{} is managed by Helm{release}: it is updated through helm upgrade, never patched directly",
                asset.id
            )));
        }
        if !extra.updatable {
            return Err(KubeError::Invalid(format!(
                "{} is a {}: its pod template cannot change",
                asset.id, asset.kind
            )));
        }
        let snapshot = self.snapshot(asset, now).await?;
        let cause = opts.change_cause.clone().unwrap_or_else(|| {
            format!(
                "safe-updater: {} {} -> {}",
                snapshot.container, snapshot.previous_image, new_image
            )
        });
        let patch = image_patch(
            asset.kind,
            &snapshot.container,
            snapshot.init_container,
            new_image,
            &snapshot.previous_image,
            &cause,
        );
        self.patch_workload(
            asset.kind,
            &snapshot.namespace,
            &snapshot.name,
            &Patch::Strategic(patch),
        )
        .await?;
        tracing::info!(asset = %asset.id, from = %snapshot.previous_image, to = %new_image, "image patched");
        let mut outcome = Outcome {
            snapshot,
            new_image: new_image.to_owned(),
            applied: true,
            healthy: false,
            failure: None,
            rolled_back: false,
            restored_healthy: None,
            observations: Vec::new(),
        };
        let s = &outcome.snapshot;
        let verdict = self
            .verify(
                s.kind,
                &s.namespace,
                &s.name,
                Some((&s.container, new_image)),
                opts,
                &mut outcome.observations,
            )
            .await?;
        match verdict {
            Ok(()) => outcome.healthy = true,
            Err(why) => {
                tracing::warn!(asset = %asset.id, %why, "update failed verification");
                outcome.failure = Some(why);
                if opts.rollback_on_failure {
                    let snapshot = outcome.snapshot.clone();
                    self.restore(
                        &snapshot,
                        &format!("safe-updater: rolled back from {new_image}"),
                    )
                    .await?;
                    outcome.rolled_back = true;
                    let restored = self
                        .verify(
                            snapshot.kind,
                            &snapshot.namespace,
                            &snapshot.name,
                            Some((&snapshot.container, &snapshot.previous_image)),
                            opts,
                            &mut outcome.observations,
                        )
                        .await?;
                    outcome.restored_healthy = Some(restored.is_ok());
                }
            }
        }
        Ok(outcome)
    }

    /// Puts the snapshot's pod template back exactly (a merge patch computed against the object
    /// as it is now, with the uid as precondition) and records why in the change cause.
    pub async fn restore(&self, snapshot: &TemplateSnapshot, cause: &str) -> Result<(), KubeError> {
        self.mode()
            .check_write("patch", snapshot.kind.as_str(), Some(&snapshot.name))?;
        let current = self
            .get_workload(snapshot.kind, &snapshot.namespace, &snapshot.name)
            .await?;
        let current_uid = current.pointer("/metadata/uid").and_then(Value::as_str);
        if let (Some(want), Some(have)) = (snapshot.uid.as_deref(), current_uid)
            && want != have
        {
            return Err(KubeError::Invalid(format!(
                "{} {}/{} was recreated since the snapshot (uid {have}, snapshot of {want}); not restoring onto another object",
                snapshot.kind, snapshot.namespace, snapshot.name
            )));
        }
        let current_template = template_of(snapshot.kind, &current)
            .cloned()
            .unwrap_or(Value::Null);
        let mut patch = wrap_template(
            snapshot.kind,
            merge_patch_to(&current_template, &snapshot.template),
        );
        patch["metadata"] = json!({
            "uid": snapshot.uid,
            "annotations": {CHANGE_CAUSE_ANNOTATION: cause, PREVIOUS_IMAGE_ANNOTATION: Value::Null},
        });
        self.patch_workload(
            snapshot.kind,
            &snapshot.namespace,
            &snapshot.name,
            &Patch::Merge(patch),
        )
        .await?;
        if snapshot.kind == AssetKind::StatefulSet {
            self.delete_stuck_pods(snapshot, &current).await?;
        }
        tracing::info!(kind = %snapshot.kind, namespace = %snapshot.namespace, name = %snapshot.name, image = %snapshot.previous_image, "pod template restored");
        Ok(())
    }

    /// Waits for the rollout of `image`, then watches it over the window. `Ok(Err(why))` is a
    /// verdict (unhealthy); `Err` is a failure to observe at all.
    #[allow(clippy::too_many_arguments)]
    pub async fn verify(
        &self,
        kind: AssetKind,
        ns: &str,
        name: &str,
        only: Option<(&str, &str)>,
        opts: &ApplyOptions,
        log: &mut Vec<String>,
    ) -> Result<Result<(), String>, KubeError> {
        let started = tokio::time::Instant::now();
        let deadline = started + opts.rollout_timeout;
        let mut bad_in_a_row = 0u32;
        let mut complete_since: Option<tokio::time::Instant> = None;
        let mut last = String::new();
        let mut baseline = rollout::RestartBaseline::new();
        let mut first_poll = true;
        loop {
            let object = self.get_workload(kind, ns, name).await?;
            let state = rollout_state(kind, &object)?;
            let pods = self.workload_pods(ns, &object).await?;
            rollout::record_baseline(&mut baseline, &pods, first_poll);
            first_poll = false;
            // The container(s) to judge: the one updated, or (Helm) every one of the template.
            let targets: Vec<(String, String)> = match only {
                Some((c, i)) => vec![(c.to_owned(), i.to_owned())],
                None => template_containers(kind, &object),
            };
            let mut problems = Vec::new();
            for (c, i) in &targets {
                problems.extend(rollout::pod_problems(&pods, c, i, &baseline));
            }
            let unready = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| targets.iter().any(|(c, i)| runs(p, c, i)) && !pod_ready(p))
                .count();
            let line =
                format!("{state:?}; problems: {problems:?}; unready on new image: {unready}");
            if line != last {
                log.push(format!("{:>5.1}s {line}", started.elapsed().as_secs_f64()));
                last = line;
            }
            if let RolloutState::Failed(why) = &state {
                return Ok(Err(why.clone()));
            }
            let bad = !problems.is_empty()
                || (complete_since.is_some() && (state != RolloutState::Complete || unready > 0));
            bad_in_a_row = if bad { bad_in_a_row + 1 } else { 0 };
            if bad_in_a_row >= opts.failure_threshold.max(1) {
                let why = if problems.is_empty() {
                    format!("rollout regressed: {state:?}")
                } else {
                    problems.join("; ")
                };
                return Ok(Err(why));
            }
            let now = tokio::time::Instant::now();
            if state == RolloutState::Complete && complete_since.is_none() {
                complete_since = Some(now);
            }
            if let Some(since) = complete_since
                && now.duration_since(since) >= opts.window
                && !bad
            {
                return Ok(Ok(()));
            }
            if now >= deadline && complete_since.is_none() {
                return Ok(Err(format!(
                    "rollout did not complete within {:?}: {state:?}",
                    opts.rollout_timeout
                )));
            }
            tokio::time::sleep(opts.poll_interval).await;
        }
    }

    /// A StatefulSet does not replace a pod that never became Ready after its template is
    /// reverted (Kubernetes' "forced rollback": the pods tried with the bad template must be
    /// deleted by hand). So, after a restore: pods of the set that are not Ready and do not run
    /// the snapshot's image are deleted, and the controller recreates them from the restored
    /// template. Ready pods are never touched.
    async fn delete_stuck_pods(
        &self,
        snapshot: &TemplateSnapshot,
        object: &Value,
    ) -> Result<(), KubeError> {
        let pods = self.workload_pods(&snapshot.namespace, object).await?;
        let api: Api<Pod> = Api::namespaced(self.client().clone(), &snapshot.namespace);
        for pod in pods {
            let on_old_image = runs(&pod, &snapshot.container, &snapshot.previous_image);
            let owned = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == snapshot.uid.as_ref());
            if on_old_image
                || pod_ready(&pod)
                || !owned
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            tracing::info!(namespace = %snapshot.namespace, pod = %name, "deleting a pod stuck on the failed template");
            api.delete(&name, &Default::default()).await.map_err(|e| {
                KubeError::api(format!("delete pod {}/{name}", snapshot.namespace), e)
            })?;
        }
        Ok(())
    }

    /// Pods selected by the workload's `matchLabels`.
    pub(crate) async fn workload_pods(
        &self,
        ns: &str,
        object: &Value,
    ) -> Result<Vec<Pod>, KubeError> {
        let selector = object
            .pointer("/spec/selector/matchLabels")
            .or_else(|| object.pointer("/spec/jobTemplate/spec/template/metadata/labels"))
            .and_then(|v| serde_json::from_value::<BTreeMap<String, String>>(v.clone()).ok())
            .unwrap_or_default();
        let label_selector: Vec<String> =
            selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let api: Api<Pod> = Api::namespaced(self.client().clone(), ns);
        let lp = ListParams::default().labels(&label_selector.join(","));
        Ok(api
            .list(&lp)
            .await
            .map_err(|e| KubeError::api(format!("list pods in {ns}"), e))?
            .items)
    }
}

fn template_containers(kind: AssetKind, object: &Value) -> Vec<(String, String)> {
    let Some(spec) = template_of(kind, object).and_then(|t| t.get("spec")) else {
        return Vec::new();
    };
    ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| {
            Some((
                c.get("name")?.as_str()?.to_owned(),
                c.get("image")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

pub(crate) fn runs(pod: &Pod, container: &str, image: &str) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == container && c.image.as_deref() == Some(image))
    })
}

fn rollout_state(kind: AssetKind, object: &Value) -> Result<RolloutState, KubeError> {
    let decode = |e: serde_json::Error| KubeError::Decode {
        what: format!("{kind} status"),
        detail: e.to_string(),
    };
    Ok(match kind {
        AssetKind::Deployment => {
            rollout::deployment_state(&serde_json::from_value(object.clone()).map_err(decode)?)
        }
        AssetKind::StatefulSet => {
            rollout::statefulset_state(&serde_json::from_value(object.clone()).map_err(decode)?)
        }
        AssetKind::DaemonSet => {
            rollout::daemonset_state(&serde_json::from_value(object.clone()).map_err(decode)?)
        }
        // A CronJob has nothing to roll out: its next Job uses the new template.
        _ => RolloutState::Complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_reaches_the_target_exactly() {
        let current = json!({"metadata": {"labels": {"a": "1", "added": "x"}},
            "spec": {"containers": [{"name": "web", "image": "web:1.0.2", "env": [{"name": "E", "value": "1"}]}], "dnsPolicy": "ClusterFirst"}});
        let target = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "web", "image": "web:1.0.1"}], "dnsPolicy": "ClusterFirst"}});
        let patch = merge_patch_to(&current, &target);
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"added": null}}, "spec": {"containers": [{"name": "web", "image": "web:1.0.1"}]}})
        );
        assert_eq!(apply_merge_patch(current, &patch), target);
    }

    /// RFC 7386 applied, to check the computed patch (the API server does the same).
    fn apply_merge_patch(mut doc: Value, patch: &Value) -> Value {
        if let (Some(d), Some(p)) = (doc.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                if v.is_null() {
                    d.remove(k);
                } else {
                    let cur = d.remove(k).unwrap_or(Value::Null);
                    d.insert(
                        k.clone(),
                        if v.is_object() {
                            apply_merge_patch(cur, v)
                        } else {
                            v.clone()
                        },
                    );
                }
            }
            doc
        } else if patch.is_object() {
            apply_merge_patch(json!({}), patch)
        } else {
            patch.clone()
        }
    }

    #[test]
    fn image_patches_by_kind() {
        let p = image_patch(
            AssetKind::Deployment,
            "web",
            false,
            "web:1.0.1",
            "web:1.0.0",
            "why",
        );
        assert_eq!(
            p.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("web:1.0.1"))
        );
        assert_eq!(
            p.pointer("/metadata/annotations/kubernetes.io~1change-cause"),
            Some(&json!("why"))
        );
        assert_eq!(
            p.pointer("/metadata/annotations/safe-updater.io~1previous-image"),
            Some(&json!("web:1.0.0"))
        );
        let p = image_patch(AssetKind::CronJob, "task", true, "t:2", "t:1", "why");
        assert_eq!(
            p.pointer("/spec/jobTemplate/spec/template/spec/initContainers/0/name"),
            Some(&json!("task"))
        );
    }
}
