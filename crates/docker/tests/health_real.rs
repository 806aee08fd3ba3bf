//! Health checks (`health::probe`, `monitor`) against a real Docker engine and the dev-env
//! registry (`scripts/dev-env`): HTTP, TCP (IPv4 and `::1`), exec, the container's own
//! HEALTHCHECK, and the running-without-restart rule.
//!
//! Every container is named with a prefix unique to the test and the run and removed
//! afterwards, also when the test fails. Without an engine or registry these tests FAIL with
//! instructions; they never pass silently.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use safe_updater_docker::bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, PortBinding,
};
use safe_updater_docker::bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use safe_updater_docker::health::probe;
use safe_updater_docker::update;
use safe_updater_docker::{
    Backoff, Check, ConnectOptions, Engine, EngineSpec, ExecCheck, HttpCheck, Monitor, TcpCheck,
    monitor,
};

const SETUP: &str =
    "run `scripts/dev-env up`, then `eval \"$(scripts/dev-env env)\"`, and run the tests again";

struct Env {
    engine: Engine,
    registry: String,
}

async fn env() -> Env {
    let mut spec = match EngineSpec::from_env() {
        Ok(spec) => spec,
        Err(err) => panic!("the Docker environment variables are not usable: {err}\n{SETUP}"),
    };
    spec.name = "real".to_owned();
    let engine = match Engine::connect(&spec, ConnectOptions::default()).await {
        Ok(engine) => engine,
        Err(err) => panic!(
            "no Docker engine answers (DOCKER_HOST is {:?}): {err}\n{SETUP}",
            std::env::var("DOCKER_HOST").ok()
        ),
    };
    let registry = std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN")
        .unwrap_or_else(|_| "127.0.0.1:5001".to_owned());
    let network =
        std::env::var("SAFE_UPDATER_E2E_DOCKER_NETWORK").unwrap_or_else(|_| "bridge".to_owned());
    assert_ne!(
        network, "host",
        "these tests need an engine with a bridge network (dev-env reports host networking only)"
    );
    let env = Env { engine, registry };
    for tag in ["1.0.0", "1.0.2"] {
        update::pull(
            &env.engine,
            &format!("{}/demo/web:{tag}", env.registry),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("cannot pull the {tag} test image: {e}\n{SETUP}"));
    }
    env
}

fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or_default();
    format!("sut-health-{test}-{}-{nanos}", std::process::id())
}

async fn cleanup(engine: &Engine, prefix: &str) {
    let docker = engine.docker();
    let filters: HashMap<String, Vec<String>> =
        [("name".to_owned(), vec![prefix.to_owned()])].into();
    if let Ok(list) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    {
        for c in list {
            let mine = c
                .names
                .iter()
                .flatten()
                .any(|n| n.trim_start_matches('/').starts_with(prefix));
            if let (true, Some(id)) = (mine, c.id) {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
        }
    }
}

async fn guarded<F, Fut>(env: &Env, prefix: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(body()).catch_unwind().await;
    cleanup(&env.engine, prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Creates and starts `<prefix>-<suffix>` from `tag`, published on 127.0.0.1; returns its id.
async fn run(
    env: &Env,
    name: &str,
    tag: &str,
    cmd: Option<Vec<&str>>,
    healthcheck: Option<HealthConfig>,
) -> String {
    let docker = env.engine.docker();
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(format!("{}/demo/web:{tag}", env.registry)),
                cmd: cmd.map(|c| c.into_iter().map(str::to_owned).collect()),
                healthcheck,
                host_config: Some(HostConfig {
                    port_bindings: Some(
                        [(
                            "8080/tcp".to_owned(),
                            Some(vec![PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some(String::new()),
                            }]),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start");
    created.id
}

/// Waits until `GET /version` on the published port answers 200 (httpd is up).
async fn wait_listening(env: &Env, id: &str) {
    let check = Check::Http(HttpCheck::get(
        "http://{host_ip:8080/tcp}:{host_port:8080/tcp}/version",
    ));
    for _ in 0..75 {
        if probe(&env.engine, id, &check).await.ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{id} never answered on its published port");
}

async fn published_port(env: &Env, id: &str) -> u16 {
    let inspect = env
        .engine
        .docker()
        .inspect_container(id, None)
        .await
        .expect("inspect");
    inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse().ok())
        .expect("published port")
}

fn quick_monitor(window: u64) -> Monitor {
    Monitor {
        window: Duration::from_secs(window),
        interval: Duration::from_millis(500),
        failure_threshold: 3,
        retries_backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(500),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks() {
    let env = env().await;
    let p = prefix("http");
    guarded(&env, &p, || async {
        let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
        wait_listening(&env, &id).await;
        let published = "http://{host_ip:8080/tcp}:{host_port:8080/tcp}";

        let mut ok = HttpCheck::get(format!("{published}/health"));
        ok.body_contains = Some("ok".into());
        let o = probe(&env.engine, &id, &Check::Http(ok)).await;
        assert!(o.ok, "{o:?}");
        assert!(o.detail.contains("HTTP 200"), "{o:?}");

        // By the container's IP on the bridge.
        let mut by_ip = HttpCheck::get("http://{container_ip}:8080/version");
        by_ip.body_contains = Some("1.0.0".into());
        let o = probe(&env.engine, &id, &Check::Http(by_ip)).await;
        assert!(o.ok, "{o:?}");

        let missing = HttpCheck::get(format!("{published}/nope"));
        let o = probe(&env.engine, &id, &Check::Http(missing.clone())).await;
        assert!(!o.ok, "{o:?}");
        assert!(o.detail.contains("HTTP 404"), "{o:?}");

        let mut expect_404 = missing;
        expect_404.expected_status = 404..=404;
        let o = probe(&env.engine, &id, &Check::Http(expect_404)).await;
        assert!(o.ok, "a status range that includes 404: {o:?}");

        let mut wrong_body = HttpCheck::get(format!("{published}/version"));
        wrong_body.body_contains = Some("2.0.0".into());
        let o = probe(&env.engine, &id, &Check::Http(wrong_body)).await;
        assert!(!o.ok, "{o:?}");
        assert!(o.detail.contains("does not contain"), "{o:?}");

        // A server that accepts and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let mut slow = HttpCheck::get(format!("http://{addr}/"));
        slow.timeout = Duration::from_millis(700);
        let started = std::time::Instant::now();
        let o = probe(&env.engine, &id, &Check::Http(slow)).await;
        assert!(!o.ok, "{o:?}");
        assert!(o.detail.contains("no answer within 0.7s"), "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(silent);

        // Nothing listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let o = probe(
            &env.engine,
            &id,
            &Check::Http(HttpCheck::get(format!("http://{addr}/"))),
        )
        .await;
        assert!(!o.ok, "{o:?}");

        // A port that is not published.
        let o = probe(
            &env.engine,
            &id,
            &Check::Http(HttpCheck::get("http://127.0.0.1:{host_port:9999/tcp}/")),
        )
        .await;
        assert!(!o.ok && o.detail.contains("not published"), "{o:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_ipv4_and_ipv6() {
    let env = env().await;
    let p = prefix("tcp");
    guarded(&env, &p, || async {
        let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
        let port = published_port(&env, &id).await;
        let tcp = |host: &str, port: u16| {
            Check::Tcp(TcpCheck {
                host: host.to_owned(),
                port,
                timeout: Duration::from_secs(2),
            })
        };
        let o = probe(&env.engine, &id, &tcp("127.0.0.1", port)).await;
        assert!(o.ok, "{o:?}");
        // httpd needs a moment after the start; retry on the container's own address.
        let mut o = probe(&env.engine, &id, &tcp("{container_ip}", 8080)).await;
        for _ in 0..50 {
            if o.ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            o = probe(&env.engine, &id, &tcp("{container_ip}", 8080)).await;
        }
        assert!(o.ok, "the container's own address: {o:?}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let o = probe(&env.engine, &id, &tcp("127.0.0.1", closed_port)).await;
        assert!(!o.ok, "{o:?}");

        let v6 = std::net::TcpListener::bind("[::1]:0")
            .expect("this test needs IPv6 on the loopback interface (::1)");
        let v6_port = v6.local_addr().expect("addr").port();
        let o = probe(&env.engine, &id, &tcp("::1", v6_port)).await;
        assert!(o.ok, "{o:?}");
        let o = probe(&env.engine, &id, &tcp("[::1]", v6_port)).await;
        assert!(o.ok, "bracketed: {o:?}");
        drop(v6);
        let o = probe(&env.engine, &id, &tcp("::1", v6_port)).await;
        assert!(!o.ok, "closed ::1 port: {o:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_checks() {
    let env = env().await;
    let p = prefix("exec");
    guarded(&env, &p, || async {
        let id = run(&env, &format!("{p}-web"), "1.0.0", None, None).await;
        let exec = |cmd: &str, expect_exit: i64, timeout_ms: u64| {
            Check::Exec(ExecCheck {
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: Duration::from_millis(timeout_ms),
                expect_exit,
                output_contains: None,
            })
        };
        let printing = |cmd: &str, wanted: &str| {
            Check::Exec(ExecCheck {
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: Duration::from_secs(5),
                expect_exit: 0,
                output_contains: Some(wanted.into()),
            })
        };
        let o = probe(&env.engine, &id, &printing("echo ready to serve", "ready")).await;
        assert!(o.ok, "{o:?}");
        let o = probe(&env.engine, &id, &printing("echo still booting", "ready")).await;
        assert!(!o.ok && o.detail.contains("lacks \"ready\""), "{o:?}");
        let o = probe(
            &env.engine,
            &id,
            &exec("echo hello; echo oops >&2; exit 3", 3, 5000),
        )
        .await;
        assert!(o.ok, "{o:?}");
        assert!(o.detail.contains("exit code 3"), "{o:?}");
        assert!(
            o.detail.contains("hello") && o.detail.contains("oops"),
            "{o:?}"
        );

        let o = probe(&env.engine, &id, &exec("cat /www/version", 0, 5000)).await;
        assert!(o.ok && o.detail.contains("1.0.0"), "{o:?}");

        let o = probe(&env.engine, &id, &exec("exit 1", 0, 5000)).await;
        assert!(!o.ok && o.detail.contains("exit code 1"), "{o:?}");

        let started = std::time::Instant::now();
        let o = probe(&env.engine, &id, &exec("sleep 5", 0, 800)).await;
        assert!(!o.ok && o.detail.contains("no exit within 0.8s"), "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_rules() {
    let env = env().await;
    let p = prefix("mon");
    guarded(&env, &p, || async {
        // Healthy: Docker's own check turns healthy within the window, HTTP answers.
        let good = run(&env, &format!("{p}-good"), "1.0.0", None, None).await;
        let http = HttpCheck::get("http://{host_ip:8080/tcp}:{host_port:8080/tcp}/health");
        let report = monitor(
            &env.engine,
            &good,
            &[Check::Docker, Check::Http(http)],
            &quick_monitor(6),
        )
        .await;
        assert!(report.healthy, "{report:#?}");
        assert!(
            report
                .observations
                .iter()
                .any(|o| o.check == "docker" && o.ok)
        );

        // No checks, but a HEALTHCHECK: used implicitly. 1.0.2 turns unhealthy.
        let bad = run(&env, &format!("{p}-bad"), "1.0.2", None, None).await;
        let report = monitor(&env.engine, &bad, &[], &quick_monitor(15)).await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("unhealthy"), "{report:#?}");

        // `starting` for the whole window is not success.
        let slow = HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), "exit 1".into()]),
            interval: Some(60_000_000_000),
            timeout: Some(1_000_000_000),
            start_period: Some(60_000_000_000),
            retries: Some(3),
            start_interval: None,
        };
        let starting = run(&env, &format!("{p}-starting"), "1.0.0", None, Some(slow)).await;
        let report = monitor(&env.engine, &starting, &[Check::Docker], &quick_monitor(2)).await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("had not succeeded"), "{report:#?}");

        // No checks and no HEALTHCHECK: running for the whole window is the check.
        let none = HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        };
        let plain = run(
            &env,
            &format!("{p}-plain"),
            "1.0.0",
            None,
            Some(none.clone()),
        )
        .await;
        let report = monitor(&env.engine, &plain, &[], &quick_monitor(2)).await;
        assert!(report.healthy, "{report:#?}");
        assert!(report.reason.contains("without a restart"), "{report:#?}");

        // A container that exits during the window fails.
        let dying = run(
            &env,
            &format!("{p}-dying"),
            "1.0.0",
            Some(vec!["sh", "-c", "sleep 1; exit 4"]),
            Some(none),
        )
        .await;
        let report = monitor(&env.engine, &dying, &[], &quick_monitor(5)).await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("not running"), "{report:#?}");
        assert!(report.reason.contains("exit code 4"), "{report:#?}");

        // A check that keeps failing fails after the threshold, before the window ends.
        let started = std::time::Instant::now();
        let missing = HttpCheck::get("http://{host_ip:8080/tcp}:{host_port:8080/tcp}/nope");
        let report = monitor(
            &env.engine,
            &good,
            &[Check::Http(missing)],
            &quick_monitor(30),
        )
        .await;
        assert!(!report.healthy, "{report:#?}");
        assert!(report.reason.contains("3 times in a row"), "{report:#?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await;
}
