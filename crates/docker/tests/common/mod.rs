//! What the real-engine test files share: reaching the dev-env engine and registry, naming what
//! a test creates, and removing it afterwards even when the test fails.
//!
//! Without an engine or registry these helpers FAIL with instructions; a test using them never
//! passes silently. Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::FutureExt;
use safe_updater_docker::bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, RemoveVolumeOptions,
};
use safe_updater_docker::update;
use safe_updater_docker::{ConnectOptions, Engine, EngineSpec};

pub const SETUP: &str =
    "run `scripts/dev-env up`, then `eval \"$(scripts/dev-env env)\"`, and run the tests again";
pub const REPO: &str = "demo/web";

pub struct Env {
    pub engine: Engine,
    pub registry: String,
}

impl Env {
    pub fn image(&self, tag: &str) -> String {
        format!("{}/{REPO}:{tag}", self.registry)
    }
}

/// The engine of the environment variables and the open registry, with `tags` of the test
/// image pulled.
pub async fn env(tags: &[&str]) -> Env {
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
    if let Err(err) = http_get(&registry, "/v2/") {
        panic!("the dev-env registry at {registry} does not answer: {err}\n{SETUP}");
    }
    let network =
        std::env::var("SAFE_UPDATER_E2E_DOCKER_NETWORK").unwrap_or_else(|_| "bridge".to_owned());
    assert_ne!(
        network, "host",
        "these tests need an engine with a bridge network (dev-env reports host networking only)"
    );
    let env = Env { engine, registry };
    for tag in tags {
        update::pull(&env.engine, &env.image(tag), None)
            .await
            .unwrap_or_else(|e| panic!("cannot pull the {tag} test image: {e}\n{SETUP}"));
    }
    env
}

/// A name prefix unique to the test file (`kind`), the test and the run.
pub fn prefix(kind: &str, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or_default();
    format!("sut-{kind}-{test}-{}-{nanos}", std::process::id())
}

/// A bare HTTP/1.0 GET: `(status, body)`.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The directory a test binds into its containers.
pub fn bind_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(prefix)
}

/// Removes every container, network and volume whose name starts with `prefix`, and the bind
/// directory.
pub async fn cleanup(engine: &Engine, prefix: &str) {
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
            // The engine's name filter matches anywhere in the name; only ours go.
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
    for suffix in ["-net", "-net2"] {
        let _ = docker.remove_network(&format!("{prefix}{suffix}")).await;
    }
    let _ = docker
        .remove_volume(&format!("{prefix}-vol"), None::<RemoveVolumeOptions>)
        .await;
    let _ = std::fs::remove_dir_all(bind_dir(prefix));
}

/// Runs `body`, then cleans up whatever happened.
pub async fn guarded<F, Fut>(env: &Env, prefix: &str, body: F)
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

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(kind: &str, what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(prefix(kind, what));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl args` in `dir`, failing the test with openssl's own message.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (package openssl): {e}\n{SETUP}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
