//! The Docker adapter over `tcp://` with mutual TLS, against the real engine behind the dev-env
//! TLS endpoint (`scripts/dev-env`: socat on 127.0.0.1:2376, which requires a client certificate
//! signed by the dev CA, in front of the engine's unix socket).
//!
//! Both ways of describing the engine are covered: an explicit [`EngineSpec`] with [`TlsPaths`],
//! and Docker's environment variables read by the pure [`EngineSpec::from_env_vars`] (the process
//! environment is never changed, so tests running in parallel cannot see each other's values).
//! Then the failures a user meets: no client certificate, an engine certificate from another CA,
//! nothing listening, plain HTTP to the TLS port.
//!
//! These tests SKIP, printing why, when `SAFE_UPDATER_E2E_DOCKER_TLS_HOST` is unset (dev-env
//! sets it only when it can put the TLS endpoint in front of a local engine). Once it is set,
//! a missing engine or registry fails them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use jiff::Timestamp;
use safe_updater_docker::bollard::models::ContainerCreateBody;
use safe_updater_docker::bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, RemoveContainerOptions,
};
use safe_updater_docker::{
    ConnectOptions, ContainerExtra, DiscoverOptions, DockerError, Engine, EngineSpec, Step,
    TlsPaths, discover,
};

mod common;
use common::{SETUP, TempDir, openssl};

const TEST_LABEL: &str = "io.safe-updater.test";
const TEST_LABEL_VALUE: &str = "docker-tls-real";

/// The TLS endpoint and the client's `DOCKER_CERT_PATH` directory.
struct Tls {
    host: String,
    cert_dir: PathBuf,
}

impl Tls {
    fn spec(&self, name: &str) -> EngineSpec {
        EngineSpec {
            name: name.to_owned(),
            host: self.host.clone(),
            tls: Some(TlsPaths::in_dir(&self.cert_dir)),
        }
    }

    /// `127.0.0.1:2376` from `tcp://127.0.0.1:2376`.
    fn authority(&self) -> &str {
        self.host
            .split_once("://")
            .map_or(self.host.as_str(), |(_, rest)| rest)
            .trim_end_matches('/')
    }
}

/// The endpoint from the environment, or `None` after printing why the test is skipped.
fn tls_env(test: &str) -> Option<Tls> {
    let Some(host) = std::env::var("SAFE_UPDATER_E2E_DOCKER_TLS_HOST")
        .ok()
        .filter(|h| !h.is_empty())
    else {
        eprintln!(
            "SKIPPED {test}: SAFE_UPDATER_E2E_DOCKER_TLS_HOST is not set (no Docker engine over \
             TCP+TLS to test against); {SETUP}"
        );
        return None;
    };
    let cert_dir = std::env::var("SAFE_UPDATER_E2E_DOCKER_CERT_PATH")
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "SAFE_UPDATER_E2E_DOCKER_TLS_HOST is set but SAFE_UPDATER_E2E_DOCKER_CERT_PATH \
                 (the client's ca.pem, cert.pem, key.pem) is not\n{SETUP}"
            )
        });
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(
            cert_dir.join(file).is_file(),
            "{} is missing\n{SETUP}",
            cert_dir.join(file).display()
        );
    }
    Some(Tls { host, cert_dir })
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(60),
    }
}

async fn connect(spec: &EngineSpec) -> Engine {
    match Engine::connect(spec, quick()).await {
        Ok(engine) => engine,
        Err(err) => panic!(
            "cannot reach the engine over TLS at {}: {err}\n{SETUP}",
            spec.host
        ),
    }
}

/// The engine on the local socket (`DOCKER_HOST`), to compare with what TLS reaches.
async fn local_engine() -> Engine {
    let mut spec = EngineSpec::from_env().unwrap_or_else(|e| panic!("{e}\n{SETUP}"));
    spec.name = "local".to_owned();
    match Engine::connect(&spec, ConnectOptions::default()).await {
        Ok(engine) => engine,
        Err(err) => panic!("no engine at {}: {err}\n{SETUP}", spec.host),
    }
}

/// The engine's id, which tells two connections to the same engine from two engines.
async fn engine_id(engine: &Engine) -> String {
    engine
        .docker()
        .info()
        .await
        .unwrap_or_else(|e| panic!("info through {}: {e}", engine.spec().host))
        .id
        .expect("the engine reports an ID")
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A CA of our own in `dir` (`other-ca.pem`, `other-ca-key.pem`) that signed neither the
/// engine's certificate nor the client's, and a client certificate it signed
/// (`other-cert.pem`, `other-key.pem`).
fn other_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "other-ca-key.pem",
            "-out",
            "other-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=safe-updater test: some other CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .expect("write ext");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "other-key.pem",
            "-out",
            "other.csr",
            "-subj",
            "/CN=safe-updater test: stranger",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "other.csr",
            "-CA",
            "other-ca.pem",
            "-CAkey",
            "other-ca-key.pem",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            "other-cert.pem",
        ],
    );
}

/// Connecting must fail at the ping with a request error; returns its message.
async fn connect_fails(spec: &EngineSpec) -> String {
    let started = std::time::Instant::now();
    let err = Engine::connect(spec, quick())
        .await
        .expect_err("the connection must be refused");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a refusal is quick, not a timeout: {err}"
    );
    match &err {
        DockerError::Request { engine, step, .. } => {
            assert_eq!(engine, &spec.name);
            assert_eq!(*step, Step::Ping, "{err}");
        }
        other => panic!("want a request error at the ping, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("{:?}", spec.name)), "{msg}");
    assert!(msg.contains(&spec.host), "{msg}");
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_tls_spec_reaches_the_same_engine_as_the_socket() {
    let Some(tls) = tls_env("explicit_tls_spec_reaches_the_same_engine_as_the_socket") else {
        return;
    };
    let spec = tls.spec("tls");
    spec.validate().expect("valid spec");
    let engine = connect(&spec).await;
    engine.ping().await.expect("ping over TLS");
    assert_eq!(engine.name(), "tls");
    let local = local_engine().await;
    assert_eq!(
        engine_id(&engine).await,
        engine_id(&local).await,
        "the TLS endpoint fronts the local engine"
    );
    let version = engine.docker().version().await.expect("version over TLS");
    assert!(
        version
            .api_version
            .as_deref()
            .is_some_and(|v| !v.is_empty()),
        "{version:?}"
    );

    // The same endpoint written as https://.
    let https = EngineSpec {
        host: format!("https://{}", tls.authority()),
        ..tls.spec("tls-https")
    };
    connect(&https).await.ping().await.expect("ping https://");

    // Without a port, a TLS host gets Docker's TLS port, 2376.
    if let Some(addr) = tls.authority().strip_suffix(":2376") {
        let portless = EngineSpec {
            host: format!("tcp://{addr}"),
            ..tls.spec("tls-default-port")
        };
        connect(&portless)
            .await
            .ping()
            .await
            .expect("ping on the default TLS port");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_environment_variables_describe_the_tls_engine() {
    let Some(tls) = tls_env("docker_environment_variables_describe_the_tls_engine") else {
        return;
    };
    let dir = tls.cert_dir.to_str().expect("utf-8 cert path");

    // DOCKER_HOST + DOCKER_TLS_VERIFY + DOCKER_CERT_PATH, as the docker CLI reads them.
    let from_env = EngineSpec::from_env_vars(
        "tls-env",
        &vars(&[
            ("DOCKER_HOST", &tls.host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", dir),
            ("DOCKER_CONFIG", "/nonexistent/docker-config"),
        ]),
    )
    .expect("usable environment");
    assert_eq!(from_env, tls.spec("tls-env"));
    let engine = connect(&from_env).await;
    engine.ping().await.expect("ping");
    let local = local_engine().await;
    assert_eq!(engine_id(&engine).await, engine_id(&local).await);

    // Without DOCKER_CERT_PATH the files come from $HOME/.docker: a home made for the test.
    let home = TempDir::new("tls", "home");
    let dot_docker = home.path().join(".docker");
    std::fs::create_dir_all(&dot_docker).expect("mkdir .docker");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(tls.cert_dir.join(file), dot_docker.join(file)).expect("copy TLS file");
    }
    let from_home = EngineSpec::from_env_vars(
        "tls-home",
        &vars(&[
            ("DOCKER_HOST", &tls.host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("HOME", home.path().to_str().expect("utf-8")),
        ]),
    )
    .expect("usable environment");
    assert_eq!(
        from_home.tls.as_ref().map(|t| t.cert.clone()),
        Some(dot_docker.join("cert.pem"))
    );
    connect(&from_home).await.ping().await.expect("ping");

    // DOCKER_TLS_VERIFY unset: plain HTTP to the TLS port, which the endpoint cannot answer.
    let plain = EngineSpec::from_env_vars("tls-plain", &vars(&[("DOCKER_HOST", &tls.host)]))
        .expect("usable environment");
    assert_eq!(plain.tls, None);
    let msg = connect_fails(&plain).await;
    eprintln!("plain HTTP to the TLS endpoint: {msg}");
    assert!(msg.contains("if it expects TLS"), "{msg}");
    assert!(msg.contains("DOCKER_TLS_VERIFY=1"), "{msg}");

    // TLS without verifying the engine is refused before any connection.
    let err = EngineSpec::from_env_vars(
        "tls-noverify",
        &vars(&[("DOCKER_HOST", &tls.host), ("DOCKER_TLS", "1")]),
    )
    .expect_err("DOCKER_TLS without DOCKER_TLS_VERIFY");
    assert!(err.to_string().contains("DOCKER_TLS_VERIFY=1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_a_container_through_tls() {
    let Some(tls) = tls_env("discovers_a_container_through_tls") else {
        return;
    };
    let registry = std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN")
        .unwrap_or_else(|_| "127.0.0.1:5001".to_owned());
    let image = format!("{registry}/demo/web:1.0.0");
    let spec = tls.spec("tls");
    let engine = connect(&spec).await;
    let docker = engine.docker().clone();

    // Pulled, created and started through the TLS endpoint too.
    let mut pull = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(format!("{registry}/demo/web")),
            tag: Some("1.0.0".to_owned()),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(step) = pull.next().await {
        if let Err(err) = step {
            panic!("cannot pull {image} through the TLS endpoint: {err}\n{SETUP}");
        }
    }
    let name = format!(
        "sut-tls-discover-{}-{}",
        std::process::id(),
        Timestamp::now().as_nanosecond() % 1_000_000_000_000
    );
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["sleep".to_owned(), "600".to_owned()]),
                labels: Some(HashMap::from([(
                    TEST_LABEL.to_owned(),
                    TEST_LABEL_VALUE.to_owned(),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create {name} over TLS: {e}"));
    let id = created.id.clone();
    let outcome = AssertUnwindSafe(async {
        docker
            .start_container(&id, None)
            .await
            .expect("start over TLS");
        let now = Timestamp::now();
        let options = DiscoverOptions {
            include_stopped: false,
            ..Default::default()
        };
        let local = EngineSpec {
            name: "local".to_owned(),
            ..local_engine().await.spec().clone()
        };
        let scans = discover(&[spec.clone(), local], options, now).await;
        assert_eq!(
            scans.iter().map(|s| s.engine.as_str()).collect::<Vec<_>>(),
            vec!["tls", "local"]
        );
        let find = |i: usize| {
            let assets = match &scans[i].result {
                Ok(assets) => assets,
                Err(err) => panic!("engine {} failed: {err}", scans[i].engine),
            };
            assets
                .iter()
                .find(|a| a.name == name)
                .unwrap_or_else(|| panic!("{} does not list {name}", scans[i].engine))
                .clone()
        };
        let over_tls = find(0);
        let over_socket = find(1);
        assert_eq!(over_tls.id, format!("docker/tls/{name}"));
        assert_eq!(over_tls.location, "tls");
        assert_eq!(over_tls.image, image);
        assert!(
            over_tls
                .digest
                .as_deref()
                .is_some_and(|d| d.starts_with("sha256:")),
            "{:?}",
            over_tls.digest
        );
        assert_eq!(over_tls.digest, over_socket.digest);
        let extra = ContainerExtra::from_asset(&over_tls).expect("extra");
        assert_eq!(extra.container_id, id);
        assert_eq!(extra.state, "running");
        assert_eq!(
            ContainerExtra::from_asset(&over_socket)
                .expect("extra")
                .container_id,
            id
        );
        assert_eq!(
            over_tls.labels.get(TEST_LABEL).map(String::as_str),
            Some(TEST_LABEL_VALUE)
        );
    })
    .catch_unwind()
    .await;
    let removed = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    removed.expect("remove the container over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_requires_a_client_certificate_refuses_a_client_without_one() {
    let Some(tls) =
        tls_env("an_engine_that_requires_a_client_certificate_refuses_a_client_without_one")
    else {
        return;
    };
    let tmp = TempDir::new("tls", "nocert");
    // The engine's CA, but no client certificate or key.
    let spec = EngineSpec {
        tls: Some(TlsPaths {
            ca: tls.cert_dir.join("ca.pem"),
            cert: tmp.path().join("cert.pem"),
            key: tmp.path().join("key.pem"),
        }),
        ..tls.spec("tls-nocert")
    };
    let msg = connect_fails(&spec).await;
    eprintln!("no client certificate: {msg}");
    assert!(
        msg.contains("the engine requires a client certificate and did not get one"),
        "{msg}"
    );
    assert!(msg.contains("CertificateRequired"), "{msg}");
    assert!(
        msg.contains(&format!("{} and", tmp.path().join("cert.pem").display()))
            && msg.contains("cannot be read"),
        "names the files it could not read: {msg}"
    );

    // A client certificate the engine's CA did not sign.
    other_ca(tmp.path());
    let stranger = EngineSpec {
        tls: Some(TlsPaths {
            ca: tls.cert_dir.join("ca.pem"),
            cert: tmp.path().join("other-cert.pem"),
            key: tmp.path().join("other-key.pem"),
        }),
        ..tls.spec("tls-stranger")
    };
    let msg = connect_fails(&stranger).await;
    eprintln!("untrusted client certificate: {msg}");
    assert!(
        msg.contains(&format!(
            "the engine refused the client certificate {}",
            tmp.path().join("other-cert.pem").display()
        )),
        "{msg}"
    );
    assert!(msg.contains("UnknownCA"), "{msg}");
    assert!(
        !msg.contains("cannot be read"),
        "the files were read: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_certificate_from_another_ca_is_not_trusted() {
    let Some(tls) = tls_env("an_engine_certificate_from_another_ca_is_not_trusted") else {
        return;
    };
    let tmp = TempDir::new("tls", "wrongca");
    other_ca(tmp.path());
    let spec = EngineSpec {
        tls: Some(TlsPaths {
            ca: tmp.path().join("other-ca.pem"),
            ..TlsPaths::in_dir(&tls.cert_dir)
        }),
        ..tls.spec("tls-wrongca")
    };
    let msg = connect_fails(&spec).await;
    eprintln!("wrong CA: {msg}");
    assert!(
        msg.contains(
            "the engine's certificate is not trusted (invalid peer certificate: UnknownIssuer)"
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "signed by the CA in {}",
            tmp.path().join("other-ca.pem").display()
        )),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_where_nothing_listens_is_reported() {
    let Some(tls) = tls_env("a_tls_port_where_nothing_listens_is_reported") else {
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let spec = EngineSpec {
        host: format!("tcp://{addr}"),
        ..tls.spec("tls-closed")
    };
    let msg = connect_fails(&spec).await;
    eprintln!("closed port: {msg}");
    assert!(msg.contains("Nothing accepts connections"), "{msg}");

    // A CA file that does not exist is caught before any connection.
    let missing = EngineSpec {
        tls: Some(TlsPaths {
            ca: PathBuf::from("/nonexistent/safe-updater/ca.pem"),
            ..TlsPaths::in_dir(&tls.cert_dir)
        }),
        ..tls.spec("tls-missing-ca")
    };
    let err = Engine::connect(&missing, quick())
        .await
        .expect_err("no CA file");
    match &err {
        DockerError::Request { step, .. } => assert_eq!(*step, Step::Connect, "{err}"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("Check the TLS files"), "{err}");
}
