//! End-to-end tests against a real cluster: `scripts/kube-env` (a real control plane, a simulated
//! node, real `helm` and `kubectl`, the demo-web chart in a basic-auth Helm repository and as OCI),
//! or any cluster given by `SAFE_UPDATER_E2E_KUBECONFIG` with the same variables.
//!
//! The code under test runs as a service account bound to the roles shipped in `deploy/rbac/`
//! (through `scripts/kube-env sa-kubeconfig`), never as admin; admin (`kubectl`) only creates the
//! fixtures. Each test works in its own namespace, deleted at the end.
//!
//! Skips with a printed reason when `SAFE_UPDATER_E2E_KUBECONFIG` is unset:
//! `eval "$(scripts/kube-env env)"; eval "$(scripts/dev-env env)"` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_kube::charts::{self, ChartRepository};
use safe_updater_kube::discover::{HelmReleaseExtra, KubeExtra};
use safe_updater_kube::helm::{ChartSource, Helm, HelmOptions, UpgradeRequest};
use safe_updater_kube::update::{
    ApplyOptions, CHANGE_CAUSE_ANNOTATION, FIELD_MANAGER, PREVIOUS_IMAGE_ANNOTATION,
};
use safe_updater_kube::{ConnectOptions, DiscoveryFilter, KubeError, KubeTarget, Mode};
use safe_updater_registry::{ClientConfig, DockerConfigLocation, RegistryClient, Secret};

#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Env, Namespace, env, kubectl};

/// The two identities the code runs as: the read-only role's service account
/// (`safe-updater/safe-updater`, as shipped) and one bound to the update role.
struct Identities {
    read_only: PathBuf,
    update: PathBuf,
    _dir: tempfile::TempDir,
}

/// Kubeconfigs of both identities, with short-lived tokens, in a directory removed when the
/// test ends.
fn identities(env: &Env) -> Identities {
    let dir = tempfile::tempdir().expect("tempdir");
    let read_only = cluster::sa_kubeconfig(env, dir.path(), "safe-updater");
    let update = cluster::sa_kubeconfig(env, dir.path(), "safe-updater-writer");
    Identities {
        read_only,
        update,
        _dir: dir,
    }
}

async fn target(kubeconfig: &Path, mode: Mode) -> KubeTarget {
    KubeTarget::connect(ConnectOptions {
        kubeconfig: Some(kubeconfig.to_owned()),
        mode,
        ..Default::default()
    })
    .await
    .expect("connects")
}

fn helm_options(env: &Env, kubeconfig: &Path) -> HelmOptions {
    HelmOptions {
        binary: env.helm.clone(),
        kubeconfig: Some(kubeconfig.to_owned()),
        context: None,
        mode: Mode::Update,
        timeout: Duration::from_secs(120),
    }
}

fn only(ns: &str) -> DiscoveryFilter {
    DiscoveryFilter {
        include_namespaces: vec![ns.to_owned()],
        ..Default::default()
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn quick() -> ApplyOptions {
    ApplyOptions {
        rollout_timeout: Duration::from_secs(120),
        poll_interval: Duration::from_millis(500),
        window: Duration::from_secs(4),
        failure_threshold: 3,
        change_cause: None,
        rollback_on_failure: true,
    }
}

fn deployment_yaml(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{extra_spec}      containers:\n      - name: web\n        image: {image}\n"
    )
}

/// Discovers until `ready(asset)` holds for the asset with `id` (pods take a moment to appear).
async fn discover_until(
    t: &KubeTarget,
    filter: &DiscoveryFilter,
    id: &str,
    ready: impl Fn(&Asset) -> bool,
) -> Vec<Asset> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let report = t.discover(filter, now()).await.expect("discovers");
        if report.assets.iter().any(|a| a.id == id && ready(a)) {
            return report.assets;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never became ready: {:#?} {:?}",
            report.assets,
            report.warnings
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn install_chart(
    env: &Env,
    kubeconfig: &Path,
    ns: &str,
    release: &str,
    version: &str,
    source: ChartSource,
) -> Helm {
    let helm = Helm::detect(helm_options(env, kubeconfig))
        .await
        .expect("helm version");
    let req = UpgradeRequest {
        release: release.into(),
        namespace: ns.into(),
        chart: "demo-web".into(),
        source,
        version: Some(version.into()),
        values: serde_json::json!({"replicaCount": 1}),
        set_string: Vec::new(),
        force_conflicts: false,
        install: true,
    };
    helm.upgrade(&req).await.expect("helm install");
    helm
}

fn repo_source(env: &Env) -> ChartSource {
    ChartSource::Repository {
        url: env.chart_repo.clone(),
        username: Some(env.chart_user.clone()),
        password: Some(Secret::new(env.chart_password.clone())),
    }
}

fn oci_source(env: &Env) -> ChartSource {
    ChartSource::Oci {
        url: env.chart_oci.clone(),
        plain_http: env.chart_oci.contains("127.0.0.1") || env.chart_oci.contains("localhost"),
        username: None,
        password: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_every_kind_and_a_helm_release_as_the_read_only_role() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "discover");
    let image = format!("{}:1.0.0", env.image_repo);
    ns.apply(&deployment_yaml(
        "web",
        &image,
        "      initContainers:\n      - name: init\n        image: IMAGE\n"
            .replace("IMAGE", &image)
            .as_str(),
    ));
    ns.apply(&format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 1\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers: [{{name: db, image: \"{image}\"}}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      containers: [{{name: agent, image: \"{image}\"}}]\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: once}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: task, image: \"{image}\"}}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: task, image: \"{image}\"}}]\n"
    ));
    install_chart(env, &ids.update, &ns.name, "rel", "0.1.0", repo_source(env)).await;
    // A CRD with two versions (cluster-scoped, so named after this process and deleted below).
    let crd_group = format!("e2e{}.safe-updater.io", std::process::id());
    let crd_name = format!("widgets.{crd_group}");
    kubectl(
        env,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {crd_name}}}\nspec:\n  group: {crd_group}\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n  - name: v1beta1\n    served: true\n    storage: false\n    deprecated: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        )),
    );
    struct DeleteCrd<'a>(&'a Env, String);
    impl Drop for DeleteCrd<'_> {
        fn drop(&mut self) {
            let _ = Command::new(&self.0.kubectl)
                .arg("--kubeconfig")
                .arg(&self.0.admin_kubeconfig)
                .args(["delete", "crd", &self.1, "--wait=false"])
                .output();
        }
    }
    let _crd = DeleteCrd(env, crd_name.clone());

    let t = target(&ids.read_only, Mode::ReadOnly).await;
    let mut filter = only(&ns.name);
    filter
        .chart_repositories
        .insert("demo-web".into(), env.chart_repo.clone());
    filter.crds = true;
    let c = t.context().to_owned();
    let n = &ns.name;
    let web_id = format!("k8s/{c}/{n}/Deployment/web/web");
    let assets = discover_until(&t, &filter, &web_id, |a| a.digest.is_some()).await;
    let ids_found: Vec<&str> = assets.iter().map(|a| a.id.as_str()).collect();
    for want in [
        web_id.clone(),
        format!("k8s/{c}/{n}/Deployment/web/init"),
        format!("k8s/{c}/{n}/StatefulSet/db/db"),
        format!("k8s/{c}/{n}/DaemonSet/agent/agent"),
        format!("k8s/{c}/{n}/Job/once/task"),
        format!("k8s/{c}/{n}/CronJob/nightly/task"),
        format!("k8s/{c}/{n}/HelmRelease/rel"),
    ] {
        assert!(
            ids_found.contains(&want.as_str()),
            "{want} missing from {ids_found:?}"
        );
    }
    let web = assets.iter().find(|a| a.id == web_id).expect("web");
    assert!(
        web.digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{web:?}"
    );
    let extra = KubeExtra::from_asset(web).expect("extra");
    let chain: Vec<&str> = extra.owner_chain.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(chain, ["Pod", "ReplicaSet", "Deployment"]);
    assert!(!extra.helm_managed);

    // The chart's Deployment is Helm-managed and names its release.
    let chart_deploy = assets
        .iter()
        .find(|a| {
            a.kind == AssetKind::Deployment
                && KubeExtra::from_asset(a).is_some_and(|x| x.helm_managed)
        })
        .expect("the chart's Deployment");
    let helm = KubeExtra::from_asset(chart_deploy)
        .expect("extra")
        .helm
        .expect("release annotations");
    assert_eq!(
        (helm.release.as_str(), helm.namespace.as_str()),
        ("rel", n.as_str())
    );
    let rel = assets
        .iter()
        .find(|a| a.kind == AssetKind::HelmRelease)
        .expect("release");
    assert_eq!(rel.image, "demo-web:0.1.0");
    let rx = HelmReleaseExtra::from_asset(rel).expect("release extra");
    assert_eq!(
        (rx.chart_version.as_str(), rx.status.as_str(), rx.revision),
        ("0.1.0", "deployed", 1)
    );
    assert_eq!(
        rx.chart_repository.as_deref(),
        Some(env.chart_repo.as_str())
    );

    let report = t.discover(&filter, now()).await.expect("discovers");
    let crd = report
        .crds
        .iter()
        .find(|c| c.name == crd_name)
        .unwrap_or_else(|| {
            panic!(
                "the CRD is not reported: {:?} {:?}",
                report.crds.iter().map(|c| &c.name).collect::<Vec<_>>(),
                report.warnings
            )
        });
    let versions: Vec<(&str, bool, bool, bool)> = crd
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.served, v.storage, v.deprecated))
        .collect();
    assert_eq!(
        versions,
        [("v1", true, true, false), ("v1beta1", true, false, true)]
    );
    assert_eq!(crd.stored_versions, ["v1"]);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // The read-only role really cannot write: a target that would write is refused by the API
    // server (403), and a read-only target refuses before sending anything.
    let writer = target(&ids.read_only, Mode::Update).await;
    let err = writer
        .apply_image(web, &format!("{}:1.0.1", env.image_repo), &quick(), now())
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&err, KubeError::Api { source: kube::Error::Api(s), .. } if s.code == 403),
        "{err}"
    );
    let err = t
        .apply_image(web, &format!("{}:1.0.1", env.image_repo), &quick(), now())
        .await
        .expect_err("read-only");
    assert!(matches!(err, KubeError::ReadOnly { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_update_rolls_out_and_records_the_change() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "patch");
    ns.apply(&deployment_yaml(
        "web",
        &format!("{}:1.0.0", env.image_repo),
        "",
    ));
    let t = target(&ids.update, Mode::Update).await;
    let id = format!("k8s/{}/{}/Deployment/web/web", t.context(), ns.name);
    let assets = discover_until(&t, &only(&ns.name), &id, |a| {
        KubeExtra::from_asset(a).is_some_and(|x| x.ready_pods == 2)
    })
    .await;
    let asset = assets.iter().find(|a| a.id == id).expect("asset");
    let new_image = format!("{}:1.0.1", env.image_repo);

    let outcome = t
        .apply_image(asset, &new_image, &quick(), now())
        .await
        .expect("applies");
    assert!(
        outcome.applied && outcome.healthy && !outcome.rolled_back,
        "{outcome:#?}"
    );
    assert_eq!(
        outcome.snapshot.previous_image,
        format!("{}:1.0.0", env.image_repo)
    );

    let d = Api::<Deployment>::namespaced(t.client().clone(), &ns.name)
        .get("web")
        .await
        .expect("get");
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(
        spec.template.spec.as_ref().expect("pod spec").containers[0]
            .image
            .as_deref(),
        Some(new_image.as_str())
    );
    let annotations = d.metadata.annotations.clone().unwrap_or_default();
    assert!(
        annotations
            .get(CHANGE_CAUSE_ANNOTATION)
            .is_some_and(|c| c.contains("1.0.1")),
        "{annotations:?}"
    );
    assert_eq!(
        annotations.get(PREVIOUS_IMAGE_ANNOTATION),
        Some(&format!("{}:1.0.0", env.image_repo))
    );
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == FIELD_MANAGER), "{managers:?}");
    let status = d.status.expect("status");
    assert_eq!(
        (status.updated_replicas, status.available_replicas),
        (Some(2), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_is_rolled_back_to_the_previous_template() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "bad");
    ns.apply(&deployment_yaml(
        "web",
        &format!("{}:1.0.1", env.image_repo),
        "",
    ));
    ns.apply(&format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers: [{{name: db, image: \"{}:1.0.1\"}}]\n",
        env.image_repo
    ));
    let t = target(&ids.update, Mode::Update).await;
    let bad = format!("{}:1.0.2", env.image_repo);
    for (kind, name, container) in [("Deployment", "web", "web"), ("StatefulSet", "db", "db")] {
        let id = format!("k8s/{}/{}/{kind}/{name}/{container}", t.context(), ns.name);
        let assets = discover_until(&t, &only(&ns.name), &id, |a| {
            KubeExtra::from_asset(a).is_some_and(|x| x.ready_pods == 2)
        })
        .await;
        let asset = assets.iter().find(|a| a.id == id).expect("asset");
        let before = t.snapshot(asset, now()).await.expect("snapshot");

        let outcome = t
            .apply_image(asset, &bad, &quick(), now())
            .await
            .expect("runs");
        assert!(outcome.applied && !outcome.healthy, "{kind}: {outcome:#?}");
        assert!(
            outcome
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("CrashLoopBackOff") || f.contains("restarted")),
            "{kind}: {outcome:#?}"
        );
        assert!(outcome.rolled_back, "{kind}");
        assert_eq!(outcome.restored_healthy, Some(true), "{kind}: {outcome:#?}");
        assert_eq!(
            outcome.snapshot.template, before.template,
            "{kind}: the snapshot is the template before the patch"
        );

        // The template in the cluster is the snapshot again, field for field.
        let after = t.snapshot(asset, now()).await.expect("snapshot after");
        assert_eq!(
            after.template, before.template,
            "{kind}: template not restored exactly"
        );
        assert_eq!(after.previous_image, format!("{}:1.0.1", env.image_repo));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_upgrade_and_a_bad_upgrade_rolled_back() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "helm");
    let helm = install_chart(env, &ids.update, &ns.name, "web", "0.1.0", repo_source(env)).await;
    let t = target(&ids.update, Mode::Update).await;
    let release_id = format!("k8s/{}/{}/HelmRelease/web", t.context(), ns.name);

    // Versions from the basic-auth repository and from OCI, filtered like the release would be.
    let repo = ChartRepository::new(env.chart_repo.clone()).with_basic_auth(
        env.chart_user.clone(),
        Secret::new(env.chart_password.clone()),
    );
    let versions = repo.versions("demo-web").await.expect("index.yaml");
    let mut listed: Vec<String> = versions.iter().map(|v| v.version.clone()).collect();
    listed.sort();
    assert_eq!(listed, ["0.1.0", "0.1.1", "0.1.2", "0.2.0", "1.0.0"]);
    let tilde = safe_updater_core::constraint::Constraint::parse("~0.1").expect("constraint");
    let mut within: Vec<String> = charts::available(&versions, Some(&tilde))
        .into_iter()
        .map(|a| a.tag)
        .collect();
    within.sort();
    assert_eq!(within, ["0.1.0", "0.1.1", "0.1.2"]);
    let anonymous = ChartRepository::new(env.chart_repo.clone())
        .versions("demo-web")
        .await
        .expect_err("401 without credentials");
    assert!(anonymous.to_string().contains("401"), "{anonymous}");
    let registry = RegistryClient::new(ClientConfig {
        docker_config: DockerConfigLocation::Disabled,
        ..Default::default()
    })
    .expect("registry client");
    let mut oci: Vec<String> = charts::oci_versions(&registry, &env.chart_oci, "demo-web")
        .await
        .expect("OCI tags")
        .into_iter()
        .map(|v| v.version)
        .collect();
    oci.sort();
    assert_eq!(oci, listed);

    let release = |assets: &[Asset]| -> HelmReleaseExtra {
        HelmReleaseExtra::from_asset(
            assets
                .iter()
                .find(|a| a.id == release_id)
                .expect("release asset"),
        )
        .expect("extra")
    };
    let assets = discover_until(&t, &only(&ns.name), &release_id, |_| true).await;
    let config = t
        .discover(&only(&ns.name), now())
        .await
        .expect("discovers")
        .releases[0]
        .config
        .clone();
    assert_eq!(release(&assets).revision, 1);
    let upgrade = |version: &str| UpgradeRequest {
        release: "web".into(),
        namespace: ns.name.clone(),
        chart: "demo-web".into(),
        source: repo_source(env),
        version: Some(version.into()),
        values: config.clone(),
        set_string: Vec::new(),
        force_conflicts: false,
        install: false,
    };

    let good = t
        .helm_upgrade(&helm, &upgrade("0.1.1"), 1, &quick())
        .await
        .expect("upgrade runs");
    assert!(
        good.applied && good.healthy && good.rolled_back.is_none(),
        "{good:#?}"
    );
    let after = release(
        &t.discover(&only(&ns.name), now())
            .await
            .expect("discovers")
            .assets,
    );
    assert_eq!(
        (
            after.chart_version.as_str(),
            after.revision,
            after.status.as_str()
        ),
        ("0.1.1", 2, "deployed")
    );

    let bad = t
        .helm_upgrade(&helm, &upgrade("0.1.2"), 2, &quick())
        .await
        .expect("upgrade runs");
    assert!(bad.applied && !bad.healthy, "{bad:#?}");
    assert!(
        bad.failure
            .as_deref()
            .is_some_and(|f| f.contains("CrashLoopBackOff") || f.contains("restarted")),
        "{bad:#?}"
    );
    assert_eq!(
        bad.rolled_back.as_ref().map(|r| r.to_revision),
        Some(2),
        "{bad:#?}"
    );
    assert_eq!(bad.restored_healthy, Some(true), "{bad:#?}");
    let report = t.discover(&only(&ns.name), now()).await.expect("discovers");
    let back = release(&report.assets);
    // The rollback is a new revision (4) of the good chart.
    assert_eq!(
        (
            back.chart_version.as_str(),
            back.revision,
            back.status.as_str()
        ),
        ("0.1.1", 4, "deployed")
    );
    let deploy = report
        .assets
        .iter()
        .find(|a| a.kind == AssetKind::Deployment)
        .expect("chart deployment");
    assert_eq!(deploy.image, format!("{}:1.0.1", env.image_repo));
    // The kept value survived every step.
    assert_eq!(report.releases[0].config, config);
    let history = helm.history("web", &ns.name).await.expect("history");
    assert_eq!(history.len(), 4, "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_rollback_after_someone_else_changed_the_objects() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "conflict");
    let helm = install_chart(env, &ids.update, &ns.name, "web", "0.1.0", oci_source(env)).await;
    let t = target(&ids.update, Mode::Update).await;
    let req = UpgradeRequest {
        release: "web".into(),
        namespace: ns.name.clone(),
        chart: "demo-web".into(),
        source: oci_source(env),
        version: Some("0.1.1".into()),
        values: serde_json::json!({"replicaCount": 1}),
        set_string: Vec::new(),
        force_conflicts: false,
        install: false,
    };
    let up = t
        .helm_upgrade(&helm, &req, 1, &quick())
        .await
        .expect("upgrade");
    assert!(up.healthy, "{up:#?}");
    // Someone changes the image with kubectl: its field manager now owns the image field.
    let deploy = kubectl(env, &["get", "deploy", "-n", &ns.name, "-o", "name"], None);
    let deploy = deploy.trim();
    kubectl(
        env,
        &[
            "set",
            "image",
            "-n",
            &ns.name,
            deploy,
            &format!("web={}:1.1.0", env.image_repo),
        ],
        None,
    );

    let rb = helm
        .rollback("web", &ns.name, 1)
        .await
        .expect("rollback succeeds");
    if helm.major() >= 4 {
        // Helm 4 applies server-side: the first attempt conflicts with kubectl's ownership and
        // the rollback is repeated with conflicts forced, deliberately.
        assert!(
            rb.forced_conflicts,
            "Helm {} rolled back without a conflict: {rb:?}",
            helm.version()
        );
    }
    assert_eq!(ns.image(deploy), format!("{}:1.0.0", env.image_repo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_credentials_come_from_the_workloads_image_pull_secrets() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "pull");
    ns.create_pull_secret("regcred");
    let image = format!("{}/demo/web:1.0.0", env.registry_basic);
    ns.apply(&deployment_yaml(
        "private",
        &image,
        "      imagePullSecrets: [{name: regcred}]\n",
    ));
    let t = target(&ids.read_only, Mode::ReadOnly).await;
    let id = format!("k8s/{}/{}/Deployment/private/web", t.context(), ns.name);
    let assets = discover_until(&t, &only(&ns.name), &id, |_| true).await;
    let asset = assets.iter().find(|a| a.id == id).expect("asset");

    let creds = t.pull_credentials(asset).await.expect("reads pull secrets");
    let (_, from) = creds
        .for_registry(&env.registry_basic)
        .expect("a credential for the basic-auth registry");
    assert_eq!(from, format!("{}/regcred", ns.name));

    let image_ref = safe_updater_core::reference::ImageRef::parse(&image).expect("reference");
    let with = RegistryClient::new(ClientConfig {
        credentials: creds.as_client_credentials(),
        docker_config: DockerConfigLocation::Disabled,
        ..Default::default()
    })
    .expect("client");
    let tags = with
        .all_tags(&image_ref)
        .await
        .expect("tags with the workload's credentials");
    assert!(tags.iter().any(|t| t == "1.0.1"), "{tags:?}");
    let without = RegistryClient::new(ClientConfig {
        docker_config: DockerConfigLocation::Disabled,
        ..Default::default()
    })
    .expect("client");
    assert!(
        without.all_tags(&image_ref).await.is_err(),
        "the registry should refuse anonymous listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_managed_image_is_updated_through_helm_and_never_patched() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "helmimage");
    let helm = install_chart(env, &ids.update, &ns.name, "web", "0.1.0", oci_source(env)).await;
    let t = target(&ids.update, Mode::Update).await;
    let mut filter = only(&ns.name);
    filter.kinds = vec![AssetKind::Deployment, AssetKind::HelmRelease];
    let report = t.discover(&filter, now()).await.expect("discovers");
    let deploy = report
        .assets
        .iter()
        .find(|a| a.kind == AssetKind::Deployment)
        .expect("chart deployment")
        .clone();
    assert_eq!(deploy.image, format!("{}:1.0.0", env.image_repo));

    // Never patched directly.
    let err = t
        .apply_image(
            &deploy,
            &format!("{}:1.0.1", env.image_repo),
            &quick(),
            now(),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, KubeError::Invalid(m) if m.contains("Helm")),
        "{err}"
    );

    let release = report.release_of(&deploy).expect("its release").clone();
    let good = t
        .helm_set_image(
            &helm,
            &release,
            oci_source(env),
            &deploy.image,
            &format!("{}:1.0.1", env.image_repo),
            &quick(),
        )
        .await
        .expect("runs");
    assert!(good.healthy && good.rolled_back.is_none(), "{good:#?}");
    let report = t.discover(&filter, now()).await.expect("discovers");
    let deploy = report
        .assets
        .iter()
        .find(|a| a.kind == AssetKind::Deployment)
        .expect("deployment")
        .clone();
    assert_eq!(deploy.image, format!("{}:1.0.1", env.image_repo));
    let release = report.release_of(&deploy).expect("release").clone();
    assert_eq!(
        (release.chart_version.as_str(), release.revision),
        ("0.1.0", 2)
    );
    assert_eq!(
        release.config["replicaCount"],
        serde_json::json!(1),
        "the release's values are kept"
    );

    let bad = t
        .helm_set_image(
            &helm,
            &release,
            oci_source(env),
            &deploy.image,
            &format!("{}:1.0.2", env.image_repo),
            &quick(),
        )
        .await
        .expect("runs");
    assert!(
        !bad.healthy && bad.rolled_back.is_some() && bad.restored_healthy == Some(true),
        "{bad:#?}"
    );
    let report = t.discover(&filter, now()).await.expect("discovers");
    let deploy = report
        .assets
        .iter()
        .find(|a| a.kind == AssetKind::Deployment)
        .expect("deployment");
    assert_eq!(deploy.image, format!("{}:1.0.1", env.image_repo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_and_cronjob_images_are_patched_and_jobs_refused() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "kinds");
    let image = format!("{}:1.0.0", env.image_repo);
    ns.apply(&format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      containers: [{{name: agent, image: \"{image}\"}}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: task, image: \"{image}\"}}]\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: once}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: task, image: \"{image}\"}}]\n"
    ));
    let t = target(&ids.update, Mode::Update).await;
    let c = t.context().to_owned();
    let ds_id = format!("k8s/{c}/{}/DaemonSet/agent/agent", ns.name);
    let assets = discover_until(&t, &only(&ns.name), &ds_id, |a| {
        KubeExtra::from_asset(a).is_some_and(|x| x.ready_pods == 1)
    })
    .await;
    let new_image = format!("{}:1.0.1", env.image_repo);
    for id in [
        ds_id.clone(),
        format!("k8s/{c}/{}/CronJob/nightly/task", ns.name),
    ] {
        let asset = assets.iter().find(|a| a.id == id).expect("asset");
        let outcome = t
            .apply_image(asset, &new_image, &quick(), now())
            .await
            .expect("applies");
        assert!(
            outcome.healthy && !outcome.rolled_back,
            "{id}: {outcome:#?}"
        );
        assert_eq!(
            t.snapshot(asset, now())
                .await
                .expect("snapshot")
                .previous_image,
            new_image,
            "{id}"
        );
    }
    let job = assets
        .iter()
        .find(|a| a.kind == AssetKind::Job)
        .expect("job");
    let err = t
        .apply_image(job, &new_image, &quick(), now())
        .await
        .expect_err("a Job cannot change");
    assert!(matches!(err, KubeError::Invalid(_)), "{err}");

    // A bad DaemonSet update is restored too.
    let ds = assets.iter().find(|a| a.id == ds_id).expect("ds");
    let bad = t
        .apply_image(ds, &format!("{}:1.0.2", env.image_repo), &quick(), now())
        .await
        .expect("runs");
    assert!(
        !bad.healthy && bad.rolled_back && bad.restored_healthy == Some(true),
        "{bad:#?}"
    );
    assert_eq!(
        t.snapshot(ds, now())
            .await
            .expect("snapshot")
            .previous_image,
        new_image
    );
}

/// Runs the helm binary for a fixture with a private home; `stdin` for `--password-stdin`.
fn helm_fixture(env: &Env, home: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let mut child = Command::new(&env.helm)
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helm runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("helm finishes");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_a_private_oci_registry_with_credentials() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "privoci");
    // Fixture: demo-web 0.1.1 copied into the basic-auth registry under a repository of this run.
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let plain = ["--plain-http"];
    let pulled = h.join("pulled");
    std::fs::create_dir(&pulled).expect("mkdir");
    helm_fixture(
        env,
        h,
        &[
            &[
                "pull",
                &format!("{}/demo-web", env.chart_oci),
                "--version",
                "0.1.1",
                "-d",
                pulled.to_str().expect("utf-8"),
            ][..],
            &plain[..],
        ]
        .concat(),
        None,
    );
    helm_fixture(
        env,
        h,
        &[
            &[
                "registry",
                "login",
                &env.registry_basic,
                "--username",
                &env.registry_user,
                "--password-stdin",
            ][..],
            &plain[..],
        ]
        .concat(),
        Some(&env.registry_password),
    );
    let private = format!(
        "oci://{}/e2e-{}/charts",
        env.registry_basic,
        std::process::id()
    );
    let tgz = pulled.join("demo-web-0.1.1.tgz");
    helm_fixture(
        env,
        h,
        &[
            &["push", tgz.to_str().expect("utf-8"), &private][..],
            &plain[..],
        ]
        .concat(),
        None,
    );

    let helm = Helm::detect(helm_options(env, &ids.update))
        .await
        .expect("helm");
    let request = |with_credentials: bool| UpgradeRequest {
        release: "web".into(),
        namespace: ns.name.clone(),
        chart: "demo-web".into(),
        source: ChartSource::Oci {
            url: private.clone(),
            plain_http: true,
            username: with_credentials.then(|| env.registry_user.clone()),
            password: with_credentials.then(|| Secret::new(env.registry_password.clone())),
        },
        version: Some("0.1.1".into()),
        values: serde_json::json!({"replicaCount": 1}),
        set_string: Vec::new(),
        force_conflicts: false,
        install: true,
    };
    let refused = helm
        .upgrade(&request(false))
        .await
        .expect_err("anonymous pull refused");
    assert!(
        matches!(&refused, KubeError::Helm { step, .. } if step.contains("dry-run")),
        "{refused}"
    );
    helm.upgrade(&request(true))
        .await
        .expect("installs with credentials");
    let t = target(&ids.read_only, Mode::ReadOnly).await;
    let report = t.discover(&only(&ns.name), now()).await.expect("discovers");
    let rel = report
        .releases
        .iter()
        .find(|r| r.name == "web")
        .expect("release");
    assert_eq!(
        (rel.chart_version.as_str(), rel.status.as_str()),
        ("0.1.1", "deployed")
    );

    // The chart's versions, listed with the same credentials through the registry client.
    let creds = [(
        env.registry_basic.clone(),
        safe_updater_registry::Credential::basic(
            env.registry_user.clone(),
            env.registry_password.clone(),
        ),
    )]
    .into();
    let registry = RegistryClient::new(ClientConfig {
        credentials: creds,
        docker_config: DockerConfigLocation::Disabled,
        ..Default::default()
    })
    .expect("client");
    let versions = charts::oci_versions(&registry, &private, "demo-web")
        .await
        .expect("tags");
    assert_eq!(
        versions
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        ["0.1.1"]
    );
}

/// Exec through the real apiserver into kube-env's node (nodesim runs the command in a throwaway
/// container of the pod's image): exit codes from the status channel, output bounded, a
/// timeout; refused to the read-only role, by the guard and by the cluster's RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_the_new_pods_as_the_update_role_and_never_read_only() {
    let Some(env) = env() else { return };
    let ids = identities(env);
    let ns = Namespace::new(env, "su-e2e", "exec");
    let image = format!("{}:1.1.0", env.image_repo);
    ns.apply(&deployment_yaml("web", &image, ""));
    let t = target(&ids.update, Mode::Update).await;
    let id = format!("k8s/{}/{}/Deployment/web/web", t.context(), ns.name);
    discover_until(&t, &only(&ns.name), &id, |a| {
        KubeExtra::from_asset(a).is_some_and(|x| x.ready_pods == 2)
    })
    .await;

    let pods = t
        .exec_pods(AssetKind::Deployment, &ns.name, "web", "web", &image, 5)
        .await
        .expect("lists pods");
    assert_eq!(pods.len(), 2, "{pods:?}");
    let older = format!("{}:1.0.0", env.image_repo);
    let none = t
        .exec_pods(AssetKind::Deployment, &ns.name, "web", "web", &older, 5)
        .await
        .expect("lists pods");
    assert!(none.is_empty(), "no pod runs {older}: {none:?}");

    let cmd = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let t0 = std::time::Instant::now();
    let out = t
        .exec(
            &ns.name,
            &pods[0],
            "web",
            &cmd("echo version=$APP_VERSION; echo oops >&2; exit 4"),
            Duration::from_secs(30),
        )
        .await
        .expect("execs");
    eprintln!("exec round trip: {:?}", t0.elapsed());
    assert_eq!(out.exit_code, 4, "{out:?}");
    assert!(out.output.contains("version=1.1.0"), "{out:?}");
    assert!(out.output.contains("oops"), "{out:?}");
    assert!(!out.truncated);

    let ok = t
        .exec(
            &ns.name,
            &pods[1],
            "web",
            &["true".to_owned()],
            Duration::from_secs(30),
        )
        .await
        .expect("execs");
    assert_eq!((ok.exit_code, ok.output.as_str()), (0, ""));

    // ~130 KB of output: kept to the limit, and the command still ends with its own code.
    let big = t
        .exec(
            &ns.name,
            &pods[0],
            "web",
            &cmd("i=0; while [ $i -lt 3000 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done; exit 7"),
            Duration::from_secs(60),
        )
        .await
        .expect("execs");
    assert_eq!(big.exit_code, 7);
    assert!(big.truncated);
    assert_eq!(big.output.len(), safe_updater_kube::exec::OUTPUT_LIMIT);

    let slow = t
        .exec(
            &ns.name,
            &pods[0],
            "web",
            &cmd("sleep 20"),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(&slow, Err(KubeError::Exec { detail, .. }) if detail.contains("no exit within")),
        "{slow:?}"
    );

    // A missing command: the runtime's failure, reported as an exit code as containerd does.
    let missing = t
        .exec(
            &ns.name,
            &pods[0],
            "web",
            &["/no/such/binary".to_owned()],
            Duration::from_secs(30),
        )
        .await
        .expect("execs");
    assert_ne!(missing.exit_code, 0, "{missing:?}");

    // Read-only: the guard refuses before anything leaves the process ...
    let ro = target(&ids.read_only, Mode::ReadOnly).await;
    let refused = ro
        .exec(
            &ns.name,
            &pods[0],
            "web",
            &["true".to_owned()],
            Duration::from_secs(30),
        )
        .await;
    assert!(
        matches!(refused, Err(KubeError::ReadOnly { .. })),
        "{refused:?}"
    );
    // ... and the read-only role's RBAC refuses too, when the guard is not in the way.
    if env.kube_env.is_some() {
        let unguarded = target(&ids.read_only, Mode::Update).await;
        let forbidden = unguarded
            .exec(
                &ns.name,
                &pods[0],
                "web",
                &["true".to_owned()],
                Duration::from_secs(30),
            )
            .await
            .expect_err("the read-only role may not exec");
        assert_eq!(forbidden.status_code(), Some(403), "{forbidden:?}");
    }
}
