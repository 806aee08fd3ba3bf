//! Rollout progress read from a workload's status, the way `kubectl rollout status` reads it,
//! plus the pod-level signs of a rollout that will not succeed (crash loops, image pull errors)
//! that StatefulSets and DaemonSets have no progress deadline for.
//!
//! Pure functions of the objects; the polling loop is in [`crate::update`]. This module must not
//! decide to roll back: it only says Pending, Complete or Failed, and why.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// Not done yet; the text says what is awaited.
    Pending(String),
    Complete,
    /// It will not complete by itself (progress deadline exceeded).
    Failed(String),
}

/// `kubectl rollout status` for a Deployment, including the progress deadline.
pub fn deployment_state(d: &Deployment) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return RolloutState::Pending("no status yet".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::Pending("waiting for the new spec to be observed".into());
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return RolloutState::Failed(format!(
            "progress deadline exceeded: {}",
            c.message.as_deref().unwrap_or("")
        ));
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return RolloutState::Pending(format!("{updated} of {desired} updated replicas"));
    }
    if replicas > updated {
        return RolloutState::Pending(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return RolloutState::Pending(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    RolloutState::Complete
}

/// `kubectl rollout status` for a StatefulSet (RollingUpdate, with partition).
pub fn statefulset_state(s: &StatefulSet) -> RolloutState {
    let generation = s.metadata.generation.unwrap_or(0);
    let Some(status) = s.status.as_ref() else {
        return RolloutState::Pending("no status yet".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::Pending("waiting for the new spec to be observed".into());
    }
    let spec = s.spec.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < desired {
        return RolloutState::Pending(format!("{ready} of {desired} pods ready"));
    }
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete") {
        // Nothing rolls by itself; ready pods are all that can be asked for.
        return RolloutState::Complete;
    }
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partition > 0 {
        let updated = status.updated_replicas.unwrap_or(0);
        let want = desired - partition;
        return if updated < want {
            RolloutState::Pending(format!("{updated} of {want} partitioned pods updated"))
        } else {
            RolloutState::Complete
        };
    }
    if status.update_revision != status.current_revision {
        return RolloutState::Pending(format!(
            "{} pods at the update revision",
            status.updated_replicas.unwrap_or(0)
        ));
    }
    RolloutState::Complete
}

/// `kubectl rollout status` for a DaemonSet.
pub fn daemonset_state(d: &DaemonSet) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return RolloutState::Pending("no status yet".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::Pending("waiting for the new spec to be observed".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated < desired {
        return RolloutState::Pending(format!("{updated} of {desired} updated pods scheduled"));
    }
    if available < desired {
        return RolloutState::Pending(format!("{available} of {desired} updated pods available"));
    }
    RolloutState::Complete
}

/// Waiting reasons that mean a container will not start without a change.
pub const FATAL_WAITING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Restart counts seen when verification began, per `pod/container`: restarts from before an
/// update (a digest update keeps the image string, so old pods are judged too) are not held
/// against it.
pub type RestartBaseline = std::collections::BTreeMap<String, i32>;

/// Records the restart counts of `pods` not yet in `baseline`. Pods first seen later (created by
/// the rollout) start from 0, so their restarts count.
pub fn record_baseline(baseline: &mut RestartBaseline, pods: &[Pod], first: bool) {
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let statuses = pod.status.as_ref().into_iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        });
        for cs in statuses {
            let count = if first { cs.restart_count } else { 0 };
            baseline
                .entry(format!("{name}/{}", cs.name))
                .or_insert(count);
        }
    }
}

/// Problems of the pods that run `image` in `container`: a fatal waiting reason, or restarts
/// beyond `baseline`. Only pods on the image are judged, so old pods being replaced do not count.
pub fn pod_problems(
    pods: &[Pod],
    container: &str,
    image: &str,
    baseline: &RestartBaseline,
) -> Vec<String> {
    let mut out = Vec::new();
    for pod in pods {
        let runs_it = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == container && c.image.as_deref() == Some(image))
        });
        if !runs_it || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let statuses = pod.status.as_ref().into_iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        });
        for cs in statuses {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(reason) = waiting.and_then(|w| w.reason.as_deref())
                && FATAL_WAITING_REASONS.contains(&reason)
            {
                out.push(format!("pod {name} container {}: {reason}", cs.name));
            } else {
                let before = baseline
                    .get(&format!("{name}/{}", cs.name))
                    .copied()
                    .unwrap_or(0);
                if cs.restart_count > before {
                    out.push(format!(
                        "pod {name} container {} restarted {} times",
                        cs.name,
                        cs.restart_count - before
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_from_before_verification_are_not_held_against_an_update() {
        let pod = |name: &str, restarts: i32| -> Pod {
            obj(serde_json::json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "web", "image": "web:latest"}]},
                "status": {"containerStatuses": [{"name": "web", "image": "web:latest", "imageID": "",
                    "ready": true, "restartCount": restarts, "state": {"running": {}}}]}}))
        };
        let mut baseline = RestartBaseline::new();
        record_baseline(&mut baseline, &[pod("old", 3)], true);
        assert!(pod_problems(&[pod("old", 3)], "web", "web:latest", &baseline).is_empty());
        assert_eq!(
            pod_problems(&[pod("old", 4)], "web", "web:latest", &baseline),
            ["pod old container web restarted 1 times"]
        );
        // A pod created by the rollout counts from zero, even if first seen with restarts.
        record_baseline(&mut baseline, &[pod("new", 1)], false);
        assert_eq!(
            pod_problems(&[pod("new", 1)], "web", "web:latest", &baseline),
            ["pod new container web restarted 1 times"]
        );
    }

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        obj(
            serde_json::json!({"metadata": {"name": "d", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": status}),
        )
    }

    #[test]
    fn deployment_rollout() {
        let p = |d| matches!(deployment_state(&d), RolloutState::Pending(_));
        assert!(p(deployment(
            3,
            serde_json::json!({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2})
        )));
        assert!(p(deployment(
            3,
            serde_json::json!({"observedGeneration": 3, "updatedReplicas": 1, "replicas": 3, "availableReplicas": 2})
        )));
        assert!(p(deployment(
            3,
            serde_json::json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 3, "availableReplicas": 2})
        )));
        assert!(p(deployment(
            3,
            serde_json::json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1})
        )));
        assert_eq!(
            deployment_state(&deployment(
                3,
                serde_json::json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2})
            )),
            RolloutState::Complete
        );
        let failed = deployment(
            3,
            serde_json::json!({"observedGeneration": 3, "updatedReplicas": 1, "replicas": 3,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"d-2\" has timed out progressing."}]}),
        );
        assert!(
            matches!(deployment_state(&failed), RolloutState::Failed(m) if m.contains("timed out"))
        );
    }

    #[test]
    fn statefulset_rollout() {
        let sts = |spec: serde_json::Value, status: serde_json::Value| -> StatefulSet {
            let mut spec = spec;
            spec["selector"] = serde_json::json!({});
            spec["template"] = serde_json::json!({});
            spec["serviceName"] = serde_json::json!("s");
            obj(
                serde_json::json!({"metadata": {"name": "s", "generation": 2}, "spec": spec, "status": status}),
            )
        };
        let done = serde_json::json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "currentRevision": "s-2", "updateRevision": "s-2", "updatedReplicas": 2});
        assert_eq!(
            statefulset_state(&sts(serde_json::json!({"replicas": 2}), done.clone())),
            RolloutState::Complete
        );
        let mut rolling = done.clone();
        rolling["currentRevision"] = "s-1".into();
        assert!(matches!(
            statefulset_state(&sts(serde_json::json!({"replicas": 2}), rolling.clone())),
            RolloutState::Pending(_)
        ));
        let mut not_ready = done.clone();
        not_ready["readyReplicas"] = 1.into();
        assert!(matches!(
            statefulset_state(&sts(serde_json::json!({"replicas": 2}), not_ready)),
            RolloutState::Pending(_)
        ));
        // With a partition of 1, one updated pod of two is the goal.
        let mut partial = rolling;
        partial["updatedReplicas"] = 1.into();
        let spec = serde_json::json!({"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
        assert_eq!(
            statefulset_state(&sts(spec, partial)),
            RolloutState::Complete
        );
    }

    #[test]
    fn daemonset_rollout() {
        let ds = |status: serde_json::Value| -> DaemonSet {
            obj(
                serde_json::json!({"metadata": {"name": "ds", "generation": 5},
                "spec": {"selector": {}, "template": {}}, "status": status}),
            )
        };
        let base = serde_json::json!({"observedGeneration": 5, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "numberMisscheduled": 0, "numberReady": 3, "updatedNumberScheduled": 3, "numberAvailable": 3});
        assert_eq!(daemonset_state(&ds(base.clone())), RolloutState::Complete);
        let mut b = base.clone();
        b["updatedNumberScheduled"] = 2.into();
        assert!(matches!(daemonset_state(&ds(b)), RolloutState::Pending(_)));
        let mut b = base.clone();
        b["numberAvailable"] = 2.into();
        assert!(matches!(daemonset_state(&ds(b)), RolloutState::Pending(_)));
        let mut b = base;
        b["observedGeneration"] = 4.into();
        assert!(matches!(daemonset_state(&ds(b)), RolloutState::Pending(_)));
    }

    #[test]
    fn crash_loops_on_the_new_image_only() {
        let pod = |name: &str, image: &str, state: serde_json::Value, restarts: i32| -> Pod {
            obj(serde_json::json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "web", "image": image}]},
                "status": {"containerStatuses": [{"name": "web", "image": image, "imageID": "", "ready": false,
                    "restartCount": restarts, "state": state}]}}))
        };
        let crash = serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let running = serde_json::json!({"running": {}});
        let pods = [
            pod("old", "web:1.0.1", crash.clone(), 4),
            pod("new", "web:1.0.2", crash, 2),
            pod("new2", "web:1.0.2", running.clone(), 0),
        ];
        assert_eq!(
            pod_problems(&pods, "web", "web:1.0.2", &RestartBaseline::new()),
            ["pod new container web: CrashLoopBackOff"]
        );
        assert_eq!(
            pod_problems(
                &[pod("p", "web:1.0.2", running.clone(), 1)],
                "web",
                "web:1.0.2",
                &RestartBaseline::new()
            ),
            ["pod p container web restarted 1 times"]
        );
    }
}
