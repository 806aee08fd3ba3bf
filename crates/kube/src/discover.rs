//! Discovery as pure functions: Kubernetes objects (as `k8s-openapi` types) → [`Asset`]s, one
//! per container and init container of each workload's pod template, plus Helm releases and
//! CRD facts.
//!
//! The IO (listing objects) is in [`crate::target`]; everything here takes what was listed and
//! `now`, so it is tested on hand-written objects. This module must not decide anything about
//! updates; it only records what runs, who owns it and whether Helm manages it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use safe_updater_core::asset::{Asset, AssetKind};
use serde::{Deserialize, Serialize};

use crate::helm_release::HelmRelease;

/// The label Helm (and most charts) put on what they manage.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Annotations Helm 3+ puts on every object of a release.
pub const RELEASE_NAME_ANNOTATION: &str = "meta.helm.sh/release-name";
pub const RELEASE_NAMESPACE_ANNOTATION: &str = "meta.helm.sh/release-namespace";

/// A workload as listed, with its kind. (Variants are large and similar in size except the
/// CronJob; boxing would only add allocations on a path that lists them once.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    Job(Job),
    CronJob(CronJob),
}

impl Workload {
    pub fn kind(&self) -> AssetKind {
        match self {
            Workload::Deployment(_) => AssetKind::Deployment,
            Workload::StatefulSet(_) => AssetKind::StatefulSet,
            Workload::DaemonSet(_) => AssetKind::DaemonSet,
            Workload::Job(_) => AssetKind::Job,
            Workload::CronJob(_) => AssetKind::CronJob,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(o) => &o.metadata,
            Workload::StatefulSet(o) => &o.metadata,
            Workload::DaemonSet(o) => &o.metadata,
            Workload::Job(o) => &o.metadata,
            Workload::CronJob(o) => &o.metadata,
        }
    }

    /// The pod template, where the images are.
    pub fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Workload::Deployment(o) => o.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(o) => o.spec.as_ref().map(|s| &s.template),
            Workload::DaemonSet(o) => o.spec.as_ref().map(|s| &s.template),
            Workload::Job(o) => o.spec.as_ref().map(|s| &s.template),
            Workload::CronJob(o) => o
                .spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .map(|s| &s.template),
        }
    }

    /// Whether its image can be changed in place. A Job's pod template is immutable: a Job is
    /// reported, never patched (its CronJob, if any, is what gets updated).
    pub fn updatable(&self) -> bool {
        !matches!(self, Workload::Job(_))
    }
}

/// The Helm release that manages an object, from its annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelmOwner {
    pub release: String,
    pub namespace: String,
}

/// Whether Helm manages an object, and which release: the release annotations when present
/// (Helm 3+ writes them on every object), else only the `managed-by: Helm` label.
pub fn helm_owner(meta: &ObjectMeta) -> (bool, Option<HelmOwner>) {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v.eq_ignore_ascii_case("helm"));
    let annotations = meta.annotations.as_ref();
    let release = annotations.and_then(|a| a.get(RELEASE_NAME_ANNOTATION));
    let owner = release.map(|release| HelmOwner {
        release: release.clone(),
        namespace: annotations
            .and_then(|a| a.get(RELEASE_NAMESPACE_ANNOTATION))
            .cloned()
            .or_else(|| meta.namespace.clone())
            .unwrap_or_default(),
    });
    (labelled || owner.is_some(), owner)
}

/// One link of an owner chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerLink {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a Kubernetes asset carries in `Asset::extra` (typed here, JSON in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeExtra {
    pub api_version: String,
    /// `uid` of the workload, so a deleted and recreated workload can be told apart.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// Whether the container is an init container.
    pub init_container: bool,
    /// Pod → ReplicaSet → Deployment → HelmRelease (the pod part when a pod was found).
    pub owner_chain: Vec<OwnerLink>,
    pub helm_managed: bool,
    pub helm: Option<HelmOwner>,
    pub image_pull_secrets: Vec<String>,
    pub service_account: Option<String>,
    /// Pods of the workload that run this container's image, and how many are ready.
    pub pods: u32,
    pub ready_pods: u32,
    /// False for Jobs, whose pod template is immutable.
    pub updatable: bool,
}

impl KubeExtra {
    /// Reads the extra back from an asset discovered by this crate.
    pub fn from_asset(asset: &Asset) -> Option<KubeExtra> {
        serde_json::from_value(asset.extra.clone()).ok()
    }
}

/// What a Helm release asset carries in `Asset::extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelmReleaseExtra {
    pub chart: String,
    pub chart_version: String,
    pub app_version: Option<String>,
    pub revision: u64,
    pub status: String,
    /// Where the chart comes from (`https://…` Helm repository or `oci://…`), when known.
    pub chart_repository: Option<String>,
    pub last_deployed: Option<String>,
}

impl HelmReleaseExtra {
    pub fn from_asset(asset: &Asset) -> Option<HelmReleaseExtra> {
        serde_json::from_value(asset.extra.clone()).ok()
    }
}

/// The id of one container of a workload.
pub fn asset_id(
    context: &str,
    namespace: &str,
    kind: AssetKind,
    name: &str,
    container: &str,
) -> String {
    format!(
        "k8s/{context}/{namespace}/{}/{name}/{container}",
        kind.as_str()
    )
}

/// The id of a Helm release.
pub fn release_id(context: &str, namespace: &str, release: &str) -> String {
    format!("k8s/{context}/{namespace}/HelmRelease/{release}")
}

/// What else was listed in the workload's namespace, for digests and owner chains.
#[derive(Debug, Default, Clone, Copy)]
pub struct NamespaceObjects<'a> {
    pub pods: &'a [Pod],
    pub replica_sets: &'a [ReplicaSet],
    pub jobs: &'a [Job],
}

/// Whether a Job is owned by a CronJob (then the CronJob is the asset).
pub fn owned_by_cronjob(job: &Job) -> bool {
    owner_refs(&job.metadata).any(|o| o.kind == "CronJob")
}

/// The assets of one workload: one per container and init container.
pub fn workload_assets(
    context: &str,
    workload: &Workload,
    objects: NamespaceObjects<'_>,
    now: Timestamp,
) -> Vec<Asset> {
    let meta = workload.meta();
    let Some(template) = workload.template() else {
        return Vec::new();
    };
    let Some(spec) = template.spec.as_ref() else {
        return Vec::new();
    };
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let kind = workload.kind();
    let (helm_managed, helm) = helm_owner(meta);
    let pods = owned_pods(workload, objects);

    let mut chain_above: Vec<OwnerLink> = vec![OwnerLink {
        kind: kind.as_str().to_owned(),
        name: name.clone(),
        namespace: None,
    }];
    // A Job's or workload's own controller (a CronJob, an operator's resource).
    for o in owner_refs(meta) {
        chain_above.push(OwnerLink {
            kind: o.kind.clone(),
            name: o.name.clone(),
            namespace: None,
        });
    }
    if let Some(h) = &helm {
        chain_above.push(OwnerLink {
            kind: "HelmRelease".to_owned(),
            name: h.release.clone(),
            namespace: Some(h.namespace.clone()),
        });
    }

    let containers = spec.containers.iter().map(|c| (c, false));
    let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
    containers
        .chain(inits)
        .filter_map(|(container, init)| {
            let image = container.image.clone().filter(|i| !i.is_empty())?;
            let running: Vec<(&Pod, Option<&ContainerStatus>)> = pods
                .iter()
                .copied()
                .filter(|p| pod_runs_image(p, &container.name, &image, init))
                .map(|p| (p, container_status(p, &container.name, init)))
                .collect();
            let ready_pods = running.iter().filter(|(p, _)| pod_ready(p)).count() as u32;
            let mut chain = Vec::new();
            if let Some((pod, _)) = running.first() {
                chain.push(OwnerLink {
                    kind: "Pod".to_owned(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    namespace: None,
                });
                if let Some(rs) = owner_refs(&pod.metadata).find(|o| o.kind == "ReplicaSet") {
                    chain.push(OwnerLink {
                        kind: "ReplicaSet".to_owned(),
                        name: rs.name.clone(),
                        namespace: None,
                    });
                }
                if let Some(job) = owner_refs(&pod.metadata).find(|o| o.kind == "Job")
                    && kind == AssetKind::CronJob
                {
                    chain.push(OwnerLink {
                        kind: "Job".to_owned(),
                        name: job.name.clone(),
                        namespace: None,
                    });
                }
            }
            chain.extend(chain_above.iter().cloned());
            let extra = KubeExtra {
                api_version: api_version(kind).to_owned(),
                uid: meta.uid.clone(),
                generation: meta.generation,
                init_container: init,
                owner_chain: chain,
                helm_managed,
                helm: helm.clone(),
                image_pull_secrets: spec
                    .image_pull_secrets
                    .iter()
                    .flatten()
                    .map(|s| s.name.clone())
                    .collect(),
                service_account: spec
                    .service_account_name
                    .clone()
                    .or_else(|| spec.service_account.clone()),
                pods: running.len() as u32,
                ready_pods,
                updatable: workload.updatable(),
            };
            Some(Asset {
                id: asset_id(context, &namespace, kind, &name, &container.name),
                kind,
                location: context.to_owned(),
                namespace: Some(namespace.clone()),
                name: name.clone(),
                container: Some(container.name.clone()),
                digest: running_digest(&running),
                image,
                labels: merged(
                    meta.labels.as_ref(),
                    template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
                ),
                annotations: merged(
                    meta.annotations.as_ref(),
                    template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.annotations.as_ref()),
                ),
                first_seen: now,
                last_seen: now,
                extra: serde_json::to_value(extra).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

/// The asset of a Helm release. `chart_repository` is where its chart comes from, when the
/// caller knows (Helm does not record it): an `oci://` source makes the image an OCI
/// reference (`host/path/chart:version`) so its tags can be listed like an image's.
pub fn release_asset(
    context: &str,
    release: &HelmRelease,
    chart_repository: Option<&str>,
    now: Timestamp,
) -> Asset {
    let image = match chart_repository.and_then(|r| r.strip_prefix("oci://")) {
        Some(base) => format!(
            "{}/{}:{}",
            base.trim_end_matches('/'),
            release.chart_name,
            release.chart_version
        ),
        None => format!("{}:{}", release.chart_name, release.chart_version),
    };
    let extra = HelmReleaseExtra {
        chart: release.chart_name.clone(),
        chart_version: release.chart_version.clone(),
        app_version: release.app_version.clone(),
        revision: release.revision,
        status: release.status.clone(),
        chart_repository: chart_repository.map(str::to_owned),
        last_deployed: release.last_deployed.clone(),
    };
    Asset {
        id: release_id(context, &release.namespace, &release.name),
        kind: AssetKind::HelmRelease,
        location: context.to_owned(),
        namespace: Some(release.namespace.clone()),
        name: release.name.clone(),
        container: None,
        image,
        digest: None,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        first_seen: now,
        last_seen: now,
        extra: serde_json::to_value(extra).unwrap_or(serde_json::Value::Null),
    }
}

/// A CRD and its versions: facts for the report, not an updatable asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdFact {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub scope: String,
    pub versions: Vec<CrdVersion>,
    /// Versions objects are (or were) stored in (`status.storedVersions`): a version still listed
    /// here cannot be dropped from the CRD yet.
    pub stored_versions: Vec<String>,
    pub helm: Option<HelmOwner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdVersion {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub deprecated: bool,
}

pub fn crd_fact(crd: &CustomResourceDefinition) -> CrdFact {
    CrdFact {
        name: crd.metadata.name.clone().unwrap_or_default(),
        group: crd.spec.group.clone(),
        kind: crd.spec.names.kind.clone(),
        scope: crd.spec.scope.clone(),
        versions: crd
            .spec
            .versions
            .iter()
            .map(|v| CrdVersion {
                name: v.name.clone(),
                served: v.served,
                storage: v.storage,
                deprecated: v.deprecated.unwrap_or(false),
            })
            .collect(),
        stored_versions: crd
            .status
            .as_ref()
            .and_then(|s| s.stored_versions.clone())
            .unwrap_or_default(),
        helm: helm_owner(&crd.metadata).1,
    }
}

/// The `sha256:…` digest from a container status `imageID` (`docker-pullable://repo@sha256:…`,
/// `repo@sha256:…`, or a bare `sha256:…`, which some runtimes report as the *image* id rather
/// than the manifest digest — only an `@` form is a registry digest).
pub fn digest_from_image_id(image_id: &str) -> Option<String> {
    let (_, digest) = image_id.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_owned())
}

/// Whether a pod is Ready: its `Ready` condition is true, which the kubelet sets only when every
/// container is ready *and* every readiness gate's condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let is_true = |t: &str| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let gates_ok = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| is_true(&g.condition_type));
    is_true("Ready") && gates_ok
}

fn api_version(kind: AssetKind) -> &'static str {
    match kind {
        AssetKind::Job | AssetKind::CronJob => "batch/v1",
        _ => "apps/v1",
    }
}

fn owner_refs(
    meta: &ObjectMeta,
) -> impl Iterator<Item = &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    meta.owner_references.iter().flatten()
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    owner_refs(meta).any(|o| o.uid == uid)
}

/// Pods of a workload, through the owner references Kubernetes sets.
fn owned_pods<'a>(workload: &Workload, objects: NamespaceObjects<'a>) -> Vec<&'a Pod> {
    let Some(uid) = workload.meta().uid.as_deref() else {
        return Vec::new();
    };
    let parents: Vec<&str> = match workload {
        Workload::Deployment(_) => objects
            .replica_sets
            .iter()
            .filter(|rs| owned_by(&rs.metadata, uid))
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect(),
        Workload::CronJob(_) => objects
            .jobs
            .iter()
            .filter(|j| owned_by(&j.metadata, uid))
            .filter_map(|j| j.metadata.uid.as_deref())
            .collect(),
        _ => vec![uid],
    };
    objects
        .pods
        .iter()
        .filter(|p| parents.iter().any(|parent| owned_by(&p.metadata, parent)))
        .collect()
}

fn containers_of(spec: &PodSpec, init: bool) -> &[Container] {
    if init {
        spec.init_containers.as_deref().unwrap_or(&[])
    } else {
        &spec.containers
    }
}

fn pod_runs_image(pod: &Pod, container: &str, image: &str, init: bool) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        containers_of(s, init)
            .iter()
            .any(|c| c.name == container && c.image.as_deref() == Some(image))
    })
}

fn container_status<'a>(pod: &'a Pod, container: &str, init: bool) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let list = if init {
        status.init_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    list?.iter().find(|c| c.name == container)
}

/// The digest the pods run, when they agree; a rollout in flight (two digests) gives `None`
/// rather than a guess.
fn running_digest(running: &[(&Pod, Option<&ContainerStatus>)]) -> Option<String> {
    let mut digests = running
        .iter()
        .filter_map(|(_, s)| s.and_then(|s| digest_from_image_id(&s.image_id)));
    let first = digests.next()?;
    digests.all(|d| d == first).then_some(first)
}

fn merged(
    a: Option<&BTreeMap<String, String>>,
    b: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    // The workload's own metadata wins over the pod template's: that is where operators put
    // policy labels, and it is what `kubectl label deploy` changes.
    let mut out: BTreeMap<String, String> = b.cloned().unwrap_or_default();
    out.extend(a.cloned().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    fn now() -> Timestamp {
        "2025-01-01T00:00:00Z".parse().expect("timestamp")
    }

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn deployment() -> Deployment {
        from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "apps", "uid": "dep-uid", "generation": 4,
                "labels": {"app.kubernetes.io/managed-by": "Helm", "tier": "front"},
                "annotations": {"meta.helm.sh/release-name": "web-rel", "meta.helm.sh/release-namespace": "apps"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web", "tier": "pod-tier"}},
                "spec": {"serviceAccountName": "web-sa", "imagePullSecrets": [{"name": "pull"}],
                    "initContainers": [{"name": "migrate", "image": "reg.example/demo/migrate:1.0.0"}],
                    "containers": [{"name": "web", "image": "127.0.0.1:5002/demo/web:1.0.0"},
                                   {"name": "sidecar", "image": "busybox:1.36"}]}}}
        }))
    }

    fn objects_json() -> (Vec<Pod>, Vec<ReplicaSet>) {
        let rs: ReplicaSet = from_json(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "apps", "uid": "rs-uid",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep-uid", "controller": true}]}
        }));
        let pod = |name: &str, ready: &str, image_id: &str| -> Pod {
            from_json(serde_json::json!({
                "metadata": {"name": name, "namespace": "apps", "uid": format!("{name}-uid"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-uid", "controller": true}]},
                "spec": {"initContainers": [{"name": "migrate", "image": "reg.example/demo/migrate:1.0.0"}],
                    "containers": [{"name": "web", "image": "127.0.0.1:5002/demo/web:1.0.0"},
                                   {"name": "sidecar", "image": "busybox:1.36"}]},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                    "containerStatuses": [{"name": "web", "image": "127.0.0.1:5002/demo/web:1.0.0",
                        "imageID": image_id, "ready": ready == "True", "restartCount": 0}]}
            }))
        };
        (
            vec![
                pod(
                    "web-abc-1",
                    "True",
                    &format!("docker-pullable://127.0.0.1:5002/demo/web@{DIGEST}"),
                ),
                pod(
                    "web-abc-2",
                    "False",
                    &format!("127.0.0.1:5002/demo/web@{DIGEST}"),
                ),
            ],
            vec![rs],
        )
    }

    #[test]
    fn deployment_containers_become_assets_with_owner_chain_and_digest() {
        let (pods, rss) = objects_json();
        let w = Workload::Deployment(deployment());
        let assets = workload_assets(
            "kind-dev",
            &w,
            NamespaceObjects {
                pods: &pods,
                replica_sets: &rss,
                jobs: &[],
            },
            now(),
        );
        let ids: Vec<&str> = assets.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "k8s/kind-dev/apps/Deployment/web/web",
                "k8s/kind-dev/apps/Deployment/web/sidecar",
                "k8s/kind-dev/apps/Deployment/web/migrate"
            ]
        );
        let web = &assets[0];
        assert_eq!(web.kind, AssetKind::Deployment);
        assert_eq!(web.location, "kind-dev");
        assert_eq!(web.namespace.as_deref(), Some("apps"));
        assert_eq!(web.image, "127.0.0.1:5002/demo/web:1.0.0");
        assert_eq!(web.digest.as_deref(), Some(DIGEST));
        // The workload's label wins over the template's.
        assert_eq!(web.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
        let extra = KubeExtra::from_asset(web).expect("typed extra");
        assert!(extra.helm_managed);
        assert_eq!(
            extra.helm,
            Some(HelmOwner {
                release: "web-rel".into(),
                namespace: "apps".into()
            })
        );
        let chain: Vec<(&str, &str)> = extra
            .owner_chain
            .iter()
            .map(|l| (l.kind.as_str(), l.name.as_str()))
            .collect();
        assert_eq!(
            chain,
            [
                ("Pod", "web-abc-1"),
                ("ReplicaSet", "web-abc"),
                ("Deployment", "web"),
                ("HelmRelease", "web-rel")
            ]
        );
        assert_eq!((extra.pods, extra.ready_pods), (2, 1));
        assert_eq!(extra.image_pull_secrets, ["pull"]);
        assert_eq!(extra.service_account.as_deref(), Some("web-sa"));
        assert!(extra.updatable);
        // No status for the sidecar: no digest, no guess.
        assert_eq!(assets[1].digest, None);
        assert!(
            KubeExtra::from_asset(&assets[2])
                .expect("extra")
                .init_container
        );
    }

    #[test]
    fn pods_on_two_digests_give_no_digest() {
        let (mut pods, rss) = objects_json();
        let other = format!("repo@sha256:{}", "2".repeat(64));
        if let Some(s) = pods[1]
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            s[0].image_id = other;
        }
        let assets = workload_assets(
            "c",
            &Workload::Deployment(deployment()),
            NamespaceObjects {
                pods: &pods,
                replica_sets: &rss,
                jobs: &[],
            },
            now(),
        );
        assert_eq!(assets[0].digest, None);
    }

    #[test]
    fn cronjob_pods_are_found_through_their_jobs_and_jobs_are_not_updatable() {
        let cj: CronJob = from_json(serde_json::json!({
            "metadata": {"name": "nightly", "namespace": "b", "uid": "cj-uid"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "task", "image": "demo/task:2.0.0"}]}}}}}
        }));
        let job: Job = from_json(serde_json::json!({
            "metadata": {"name": "nightly-1", "namespace": "b", "uid": "job-uid",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "cj-uid"}]},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "task", "image": "demo/task:2.0.0"}]}}}
        }));
        let pod: Pod = from_json(serde_json::json!({
            "metadata": {"name": "nightly-1-x", "namespace": "b",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-1", "uid": "job-uid"}]},
            "spec": {"containers": [{"name": "task", "image": "demo/task:2.0.0"}]},
            "status": {"containerStatuses": [{"name": "task", "image": "demo/task:2.0.0", "imageID": format!("demo/task@{DIGEST}"), "ready": false, "restartCount": 0}]}
        }));
        let pods = [pod];
        let jobs = [job.clone()];
        let objects = NamespaceObjects {
            pods: &pods,
            replica_sets: &[],
            jobs: &jobs,
        };
        let assets = workload_assets("c", &Workload::CronJob(cj), objects, now());
        assert_eq!(assets.len(), 1);
        assert_eq!(assets[0].id, "k8s/c/b/CronJob/nightly/task");
        assert_eq!(assets[0].digest.as_deref(), Some(DIGEST));
        let extra = KubeExtra::from_asset(&assets[0]).expect("extra");
        let chain: Vec<&str> = extra.owner_chain.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(chain, ["Pod", "Job", "CronJob"]);
        assert!(owned_by_cronjob(&job));
        let job_assets = workload_assets("c", &Workload::Job(job), objects, now());
        assert!(
            !KubeExtra::from_asset(&job_assets[0])
                .expect("extra")
                .updatable
        );
    }

    #[test]
    fn image_ids_and_readiness_gates() {
        assert_eq!(
            digest_from_image_id(&format!("docker-pullable://r/x@{DIGEST}")).as_deref(),
            Some(DIGEST)
        );
        assert_eq!(
            digest_from_image_id(DIGEST),
            None,
            "a bare image id is not a manifest digest"
        );
        assert_eq!(digest_from_image_id("r/x@sha256:abc"), None);
        let pod = |conds: serde_json::Value| -> Pod {
            from_json(
                serde_json::json!({"metadata": {}, "spec": {"containers": [], "readinessGates": [{"conditionType": "lb/ready"}]},
                "status": {"conditions": conds}}),
            )
        };
        assert!(!pod_ready(&pod(
            serde_json::json!([{"type": "Ready", "status": "True"}])
        )));
        assert!(pod_ready(&pod(
            serde_json::json!([{"type": "Ready", "status": "True"}, {"type": "lb/ready", "status": "True"}])
        )));
        assert!(!pod_ready(&pod(
            serde_json::json!([{"type": "Ready", "status": "False"}, {"type": "lb/ready", "status": "True"}])
        )));
    }

    #[test]
    fn helm_release_assets_and_crds() {
        let rel = HelmRelease {
            name: "web".into(),
            namespace: "apps".into(),
            revision: 2,
            status: "deployed".into(),
            chart_name: "demo-web".into(),
            chart_version: "0.1.1".into(),
            app_version: Some("1.0.1".into()),
            config: serde_json::json!({}),
            chart_values: serde_json::Value::Null,
            last_deployed: None,
            description: None,
        };
        let a = release_asset("ctx", &rel, Some("oci://127.0.0.1:5001/charts/"), now());
        assert_eq!(a.id, "k8s/ctx/apps/HelmRelease/web");
        assert_eq!(a.image, "127.0.0.1:5001/charts/demo-web:0.1.1");
        let b = release_asset("ctx", &rel, Some("http://127.0.0.1:5010"), now());
        assert_eq!(b.image, "demo-web:0.1.1");
        let extra = HelmReleaseExtra::from_asset(&b).expect("extra");
        assert_eq!(
            extra.chart_repository.as_deref(),
            Some("http://127.0.0.1:5010")
        );
        assert_eq!(extra.revision, 2);

        let crd: CustomResourceDefinition = from_json(serde_json::json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true},
                             {"name": "v1beta1", "served": true, "storage": false, "deprecated": true}]},
            "status": {"storedVersions": ["v1beta1", "v1"]}
        }));
        let f = crd_fact(&crd);
        assert_eq!(f.kind, "Widget");
        assert_eq!(
            f.versions[1],
            CrdVersion {
                name: "v1beta1".into(),
                served: true,
                storage: false,
                deprecated: true
            }
        );
        assert_eq!(f.stored_versions, ["v1beta1", "v1"]);
    }
}
