//! Discovery against a real Docker engine and the dev-env registry (`scripts/dev-env`).
//!
//! Each test creates its own containers, named with a prefix unique to the test and the run,
//! from `<registry>/demo/web:1.0.0` pulled from the local open registry (so the image has a
//! repo digest), looks only at assets with that prefix (other people's containers may share the
//! engine), and removes its containers afterwards, also when it fails.
//!
//! Without an engine or registry these tests FAIL with instructions; they never pass silently.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_docker::bollard::Docker;
use safe_updater_docker::bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use safe_updater_docker::bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use safe_updater_docker::{
    ConnectOptions, ContainerExtra, DiscoverOptions, DockerError, Engine, EngineSpec, PortMapping,
    Step, discover,
};

const SETUP: &str =
    "run `scripts/dev-env up`, then `eval \"$(scripts/dev-env env)\"`, and run the tests again";
const DEFAULT_REGISTRY: &str = "127.0.0.1:5001";
const REPO: &str = "demo/web";
const TAG: &str = "1.0.0";
/// Every container these tests make carries this label, so leftovers can be found.
const TEST_LABEL: &str = "io.safe-updater.test";
const TEST_LABEL_VALUE: &str = "docker-real-engine";

/// What the tests need from the environment, checked before anything else.
struct Env {
    spec: EngineSpec,
    engine: Engine,
    registry: String,
    network: String,
}

impl Env {
    fn image(&self) -> String {
        format!("{}/{REPO}:{TAG}", self.registry)
    }
}

/// Fails (never skips) when the engine or the registry is missing, saying how to get them.
async fn env() -> Env {
    let host_var = std::env::var("DOCKER_HOST").ok();
    let registry_var = std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN").ok();
    let mut spec = match EngineSpec::from_env() {
        Ok(spec) => spec,
        Err(err) => panic!("the Docker environment variables are not usable: {err}\n{SETUP}"),
    };
    spec.name = "real".to_owned();
    let engine = match Engine::connect(&spec, ConnectOptions::default()).await {
        Ok(engine) => engine,
        Err(err) => panic!(
            "no Docker engine answers (DOCKER_HOST is {}): {err}\n{SETUP}",
            host_var.as_deref().unwrap_or("not set")
        ),
    };
    let registry = registry_var
        .clone()
        .unwrap_or_else(|| DEFAULT_REGISTRY.to_owned());
    if let Err(err) = registry_digest(&registry, REPO, TAG) {
        panic!(
            "the dev-env registry does not serve {registry}/{REPO}:{TAG} \
             (SAFE_UPDATER_E2E_REGISTRY_OPEN is {}): {err}\n{SETUP}",
            registry_var.as_deref().unwrap_or("not set")
        );
    }
    let network =
        std::env::var("SAFE_UPDATER_E2E_DOCKER_NETWORK").unwrap_or_else(|_| "bridge".to_owned());
    let env = Env {
        spec,
        engine,
        registry,
        network,
    };
    remove_stale_leftovers(env.engine.docker()).await;
    pull(env.engine.docker(), &env.image()).await;
    env
}

/// The digest the registry serves for `repo:tag` (`HEAD /v2/<repo>/manifests/<tag>`), read with
/// a bare HTTP/1.1 request so the test does not trust any code under test.
fn registry_digest(registry: &str, repo: &str, tag: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(registry).map_err(|e| format!("connect {registry}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {registry}\r\n\
         Accept: application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send to {registry}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {registry}: {e}"))?;
    let status = response.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        return Err(format!(
            "HEAD /v2/{repo}/manifests/{tag} answered {status:?}"
        ));
    }
    response
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_owned())
        })
        .ok_or_else(|| format!("no Docker-Content-Digest in {response:?}"))
}

async fn pull(docker: &Docker, image: &str) {
    let (from_image, tag) = image.rsplit_once(':').expect("image has a tag");
    let mut progress = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(from_image.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(step) = progress.next().await {
        if let Err(err) = step {
            panic!("cannot pull {image} from the dev-env registry: {err}\n{SETUP}");
        }
    }
}

/// Containers of earlier runs that died before cleaning up (older than an hour, so a run in
/// progress elsewhere is left alone).
async fn remove_stale_leftovers(docker: &Docker) {
    let filters = [(
        "label".to_owned(),
        vec![format!("{TEST_LABEL}={TEST_LABEL_VALUE}")],
    )]
    .into_iter()
    .collect();
    let Ok(old) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    let hour_ago = Timestamp::now().as_second() - 3600;
    for c in old {
        if let (Some(id), Some(created)) = (c.id, c.created)
            && created < hour_ago
        {
            let _ = docker.remove_container(&id, Some(force_remove())).await;
        }
    }
}

fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    }
}

/// A prefix unique to this test in this run: `sut-<test>-<pid>-<nanos>`.
fn prefix(test: &str) -> String {
    format!(
        "sut-{test}-{}-{}",
        std::process::id(),
        Timestamp::now().as_nanosecond() % 1_000_000_000_000
    )
}

/// What to create.
struct Want<'a> {
    name: String,
    labels: Vec<(&'a str, String)>,
    cmd: Option<Vec<&'a str>>,
    publish: bool,
    start: bool,
}

/// Creates (and starts) the containers, runs `body` with their ids, then removes them whatever
/// happened.
async fn with_containers<F, Fut>(env: &Env, wants: Vec<Want<'_>>, body: F)
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let docker = env.engine.docker().clone();
    let mut created: Vec<String> = Vec::new();
    // `created` is filled as containers are made, also when setup fails halfway.
    let setup = AssertUnwindSafe(create_all(&docker, env, wants, &mut created))
        .catch_unwind()
        .await;
    let outcome = match setup {
        Ok(()) => AssertUnwindSafe(body(created.clone())).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    for id in &created {
        let _ = docker.remove_container(id, Some(force_remove())).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn create_all(docker: &Docker, env: &Env, wants: Vec<Want<'_>>, created: &mut Vec<String>) {
    for want in wants {
        let mut labels: std::collections::HashMap<String, String> = want
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        labels.insert(TEST_LABEL.to_owned(), TEST_LABEL_VALUE.to_owned());
        let publish = want.publish && env.network != "host";
        let host_config = HostConfig {
            port_bindings: publish.then(|| {
                [(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(String::new()),
                    }]),
                )]
                .into_iter()
                .collect()
            }),
            network_mode: (env.network == "host").then(|| "host".to_owned()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(env.image()),
            labels: Some(labels),
            cmd: want.cmd.map(|c| c.into_iter().map(str::to_owned).collect()),
            exposed_ports: publish.then(|| vec!["8080/tcp".to_owned()]),
            host_config: Some(host_config),
            ..Default::default()
        };
        let response = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(want.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", want.name));
        created.push(response.id.clone());
        if want.start {
            docker
                .start_container(&response.id, None)
                .await
                .unwrap_or_else(|e| panic!("start {}: {e}", want.name));
        }
    }
}

/// Waits until the container has stopped by itself.
async fn wait_exited(docker: &Docker, id: &str) {
    for _ in 0..100 {
        let inspect = docker
            .inspect_container(id, None)
            .await
            .expect("inspect container");
        if inspect.state.and_then(|s| s.running) == Some(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("container {id} did not exit within 10s");
}

fn mine<'a>(assets: &'a [Asset], prefix: &str) -> BTreeMap<&'a str, &'a Asset> {
    assets
        .iter()
        .filter(|a| a.name.starts_with(prefix))
        .map(|a| (a.name.as_str(), a))
        .collect()
}

fn scan_ok(scan: &safe_updater_docker::EngineScan) -> &[Asset] {
    match &scan.result {
        Ok(assets) => assets,
        Err(err) => panic!("engine {} failed: {err}", scan.engine),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_every_field_of_running_compose_and_stopped_containers() {
    let env = env().await;
    let p = prefix("fields");
    let image = env.image();
    let want_digest = registry_digest(&env.registry, REPO, TAG).expect("registry digest");
    let image_inspect = env
        .engine
        .docker()
        .inspect_image(&image)
        .await
        .expect("inspect the pulled image");
    let image_id = image_inspect.id.clone().expect("image id");
    let project = format!("{p}-shop");
    let wants = vec![
        Want {
            name: format!("{p}-web"),
            labels: vec![("safe-updater.io/policy", "patch".to_owned())],
            cmd: None,
            publish: true,
            start: true,
        },
        Want {
            name: format!("{p}-api"),
            labels: vec![
                ("com.docker.compose.project", project.clone()),
                ("com.docker.compose.service", "api".to_owned()),
                (
                    "com.docker.compose.depends_on",
                    "db:service_healthy:false,cache:service_started:true".to_owned(),
                ),
            ],
            cmd: Some(vec!["sleep", "600"]),
            publish: false,
            start: true,
        },
        Want {
            name: format!("{p}-stopped"),
            labels: vec![],
            cmd: Some(vec!["sh", "-c", "exit 3"]),
            publish: false,
            start: true,
        },
    ];
    let env = &env;
    with_containers(env, wants, |ids| async move {
        let docker = env.engine.docker();
        wait_exited(docker, &ids[2]).await;
        let now: Timestamp = "2030-01-02T03:04:05Z".parse().expect("timestamp");

        // Running only.
        let scans = discover(
            std::slice::from_ref(&env.spec),
            DiscoverOptions {
                include_stopped: false,
                ..Default::default()
            },
            now,
        )
        .await;
        assert_eq!(scans.len(), 1);
        assert_eq!(scans[0].engine, "real");
        let running = mine(scan_ok(&scans[0]), &p);
        assert_eq!(
            running.keys().copied().collect::<Vec<_>>(),
            vec![format!("{p}-api").as_str(), format!("{p}-web").as_str()],
            "running containers only"
        );

        // Everything.
        let scans = discover(
            std::slice::from_ref(&env.spec),
            DiscoverOptions {
                include_stopped: true,
                ..Default::default()
            },
            now,
        )
        .await;
        let all = mine(scan_ok(&scans[0]), &p);
        assert_eq!(all.len(), 3, "{:?}", all.keys());

        // The plain, published container.
        let web = all[format!("{p}-web").as_str()];
        assert_eq!(web.id, format!("docker/real/{p}-web"));
        assert_eq!(web.kind, AssetKind::Container);
        assert_eq!(web.location, "real");
        assert_eq!(web.namespace, None);
        assert_eq!(web.name, format!("{p}-web"));
        assert_eq!(web.container, None);
        assert_eq!(web.image, image);
        assert_eq!(web.digest.as_deref(), Some(want_digest.as_str()));
        assert_eq!(
            web.labels.get("safe-updater.io/policy").map(String::as_str),
            Some("patch")
        );
        assert_eq!(
            web.labels.get(TEST_LABEL).map(String::as_str),
            Some(TEST_LABEL_VALUE)
        );
        // Image labels are part of the container's labels, as Docker merges them.
        assert_eq!(
            web.labels
                .get("org.opencontainers.image.title")
                .map(String::as_str),
            Some("demo/web")
        );
        assert!(web.annotations.is_empty());
        assert_eq!(web.first_seen, now);
        assert_eq!(web.last_seen, now);
        let extra = ContainerExtra::from_asset(web).expect("extra reads back");
        assert_eq!(extra.container_id, ids[0]);
        assert_eq!(extra.image_id, image_id);
        assert!(
            extra
                .repo_digests
                .contains(&format!("{}/{REPO}@{want_digest}", env.registry)),
            "{:?}",
            extra.repo_digests
        );
        assert_eq!(extra.state, "running");
        let status = extra.status.clone().unwrap_or_default();
        assert!(status.starts_with("Up"), "{status:?}");
        let created = extra.created.expect("created");
        assert!(
            (Timestamp::now().as_second() - created.as_second()).abs() < 600,
            "{created}"
        );
        assert!(extra.started_at.is_some());
        assert_eq!(extra.finished_at, None);
        assert_eq!(extra.exit_code, Some(0));
        if env.network == "host" {
            assert!(extra.ports.is_empty(), "host network publishes nothing");
        } else {
            assert_eq!(extra.ports.len(), 1, "{:?}", extra.ports);
            let port = &extra.ports[0];
            assert_eq!(
                (
                    port.container_port,
                    port.protocol.as_str(),
                    port.host_ip.as_deref()
                ),
                (8080, "tcp", Some("127.0.0.1"))
            );
            assert!(matches!(port.host_port, Some(p) if p > 0), "{port:?}");
        }
        assert_eq!(extra.compose_service, None);
        assert!(extra.compose_depends_on.is_empty());
        let platform = extra.platform.expect("platform");
        assert_eq!(platform.os, "linux");
        assert_eq!(
            Some(platform.architecture.as_str()),
            image_inspect.architecture.as_deref()
        );
        assert_eq!(
            platform.variant,
            image_inspect.variant.filter(|v| !v.is_empty())
        );

        // The compose-like service.
        let api = all[format!("{p}-api").as_str()];
        assert_eq!(api.id, format!("docker/real/{p}-api"));
        assert_eq!(api.namespace.as_deref(), Some(project.as_str()));
        assert_eq!(api.digest.as_deref(), Some(want_digest.as_str()));
        let extra = ContainerExtra::from_asset(api).expect("extra");
        assert_eq!(extra.container_id, ids[1]);
        assert_eq!(extra.compose_service.as_deref(), Some("api"));
        let deps: Vec<(&str, Option<&str>, Option<bool>)> = extra
            .compose_depends_on
            .iter()
            .map(|d| (d.service.as_str(), d.condition.as_deref(), d.restart))
            .collect();
        assert_eq!(
            deps,
            vec![
                ("db", Some("service_healthy"), Some(false)),
                ("cache", Some("service_started"), Some(true)),
            ]
        );
        assert_eq!(extra.ports, Vec::<PortMapping>::new());
        assert_eq!(extra.state, "running");

        // The stopped one.
        let stopped = all[format!("{p}-stopped").as_str()];
        assert_eq!(stopped.id, format!("docker/real/{p}-stopped"));
        assert_eq!(stopped.namespace, None);
        assert_eq!(stopped.image, image);
        assert_eq!(stopped.digest.as_deref(), Some(want_digest.as_str()));
        let extra = ContainerExtra::from_asset(stopped).expect("extra");
        assert_eq!(extra.container_id, ids[2]);
        assert_eq!(extra.state, "exited");
        assert_eq!(extra.exit_code, Some(3));
        assert!(extra.finished_at.is_some());
        let status = extra.status.unwrap_or_default();
        assert!(status.starts_with("Exited (3)"), "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_engine_fails_alone_and_the_live_one_is_still_scanned() {
    let env = env().await;
    let p = prefix("dead");
    // A socket file nobody listens on any more: connecting is refused.
    let dir = std::env::temp_dir().join(format!("{p}-sock"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket"));
    let dead = EngineSpec {
        name: "dead".to_owned(),
        host: format!("unix://{}", socket.display()),
        tls: None,
    };
    let missing = EngineSpec {
        name: "missing".to_owned(),
        host: format!("unix://{}", dir.join("absent.sock").display()),
        tls: None,
    };
    let wants = vec![Want {
        name: format!("{p}-web"),
        labels: vec![],
        cmd: Some(vec!["sleep", "600"]),
        publish: false,
        start: true,
    }];
    let env = &env;
    let dead_host = dead.host.clone();
    with_containers(env, wants, |ids| async move {
        let now = Timestamp::now();
        let scans = discover(
            &[dead, env.spec.clone(), missing],
            DiscoverOptions {
                include_stopped: true,
                ..Default::default()
            },
            now,
        )
        .await;
        assert_eq!(
            scans.iter().map(|s| s.engine.as_str()).collect::<Vec<_>>(),
            vec!["dead", "real", "missing"]
        );

        match &scans[0].result {
            Err(err @ DockerError::Request { step, .. }) => {
                assert_eq!(*step, Step::Ping);
                let msg = err.to_string();
                assert!(msg.contains("\"dead\""), "{msg}");
                assert!(msg.contains(&dead_host), "{msg}");
                assert!(msg.contains("Nothing accepts connections"), "{msg}");
                assert!(msg.contains("Start the Docker daemon"), "{msg}");
            }
            other => panic!("dead engine: {other:?}"),
        }
        match &scans[2].result {
            Err(err @ DockerError::Request { step, .. }) => {
                assert_eq!(*step, Step::Connect);
                assert!(err.to_string().contains("There is no socket"), "{err}");
            }
            other => panic!("missing engine: {other:?}"),
        }

        let live = mine(scan_ok(&scans[1]), &p);
        let web = live
            .get(format!("{p}-web").as_str())
            .unwrap_or_else(|| panic!("live engine lacks {p}-web: {:?}", live.keys()));
        let extra = ContainerExtra::from_asset(web).expect("extra");
        assert_eq!(extra.container_id, ids[0]);
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_ping_the_engine_from_the_environment() {
    let env = env().await;
    env.engine.ping().await.expect("ping");
    assert_eq!(env.engine.name(), "real");
    // A second connection from the same spec works too (the client holds no single socket).
    let again = Engine::connect(&env.spec, ConnectOptions::default())
        .await
        .expect("connect again");
    again.ping().await.expect("ping again");
}
