//! The real distribution registry (Debian's `docker-registry`, the one `scripts/dev-env` runs)
//! notifying our server of a real `docker push`.
//!
//! The test starts its own registry on a free loopback port with two notification endpoints
//! pointing at the server: one with the right `Authorization` header, one with a wrong one. It
//! pushes an image with the docker CLI and expects exactly one push event for the tag, with the
//! digest docker printed, and the wrong endpoint's deliveries refused with 401.
//!
//! Needs the dev-env (`scripts/dev-env up`, then `eval "$(scripts/dev-env env)"`): without
//! SAFE_UPDATER_E2E_REGISTRY_OPEN it prints why and checks nothing.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{MemBackend, TestServer, client, config, secret};
use safe_updater_server::WebhookSource;
use tokio::process::Command;

const SECRET: &str = "registry-notify-secret-5b1e";

async fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_registry_push_reaches_the_backend() {
    let Ok(open_registry) = std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN") else {
        eprintln!(
            "SKIPPED: SAFE_UPDATER_E2E_REGISTRY_OPEN is not set; run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"`"
        );
        return;
    };
    let registry_bin = std::env::var("SAFE_UPDATER_DEV_REGISTRY_BIN")
        .unwrap_or_else(|_| "/usr/bin/docker-registry".to_owned());
    assert!(
        std::path::Path::new(&registry_bin).is_file(),
        "{registry_bin} is missing (package docker-registry; scripts/dev-env up installs it)"
    );

    let mut cfg = config();
    cfg.webhooks.distribution = secret(SECRET);
    let s = TestServer::start(cfg, MemBackend::default()).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let hook = s.url("/webhooks/distribution");
    let reg_cfg = dir.path().join("config.yml");
    std::fs::write(
        &reg_cfg,
        format!(
            r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {data}
http:
  addr: 127.0.0.1:{port}
notifications:
  endpoints:
    - name: safe-updater
      url: {hook}
      headers:
        Authorization: [{SECRET}]
      timeout: 2s
      threshold: 5
      backoff: 1s
    - name: impostor
      url: {hook}
      headers:
        Authorization: [not-the-secret]
      timeout: 2s
      threshold: 5
      backoff: 1s
"#,
            data = dir.path().join("data").display()
        ),
    )
    .expect("registry config");
    let log_path = dir.path().join("registry.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut registry = Command::new(&registry_bin)
        .arg("serve")
        .arg(&reg_cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start docker-registry");
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(st)) = registry.try_wait() {
            panic!(
                "registry exited ({st}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if c.get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registry did not answer within 20s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An image to push: the dev-env's local build, else pulled from the open registry.
    let local = std::env::var("SAFE_UPDATER_E2E_IMAGE_LOCAL")
        .unwrap_or_else(|_| "safe-updater-dev/web".into());
    let mut source = format!("{local}:1.0.0");
    if !docker(&["image", "inspect", &source]).await.0 {
        source = format!("{open_registry}/demo/web:1.0.0");
        let (ok, out) = docker(&["pull", &source]).await;
        assert!(ok, "docker pull {source}: {out}");
    }
    let tag = format!("e2e-{}-{}", std::process::id(), port);
    let target = format!("127.0.0.1:{port}/notify-e2e/web:{tag}");
    let (ok, out) = docker(&["tag", &source, &target]).await;
    assert!(ok, "docker tag: {out}");
    let (ok, out) = docker(&["push", &target]).await;
    let _ = docker(&["rmi", &target]).await;
    assert!(ok, "docker push {target}: {out}");
    let pushed_digest = out
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no digest in docker push output: {out}"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let unauthorized =
        "safe_updater_webhook_requests_total{source=\"distribution\",status=\"unauthorized\"}";
    loop {
        let pushes = s.backend.pushes();
        let ours: Vec<_> = pushes
            .iter()
            .filter(|p| p.tag.as_deref() == Some(tag.as_str()))
            .collect();
        let metrics = s.metrics.render().expect("render");
        if !ours.is_empty() && metrics.contains(unauthorized) {
            assert_eq!(
                ours.len(),
                1,
                "one manifest push, one event (blob pushes are not events): {pushes:?}"
            );
            let e = ours[0];
            assert_eq!(e.source, WebhookSource::Distribution);
            assert_eq!(e.repository, "notify-e2e/web");
            assert_eq!(
                e.registry.as_deref(),
                Some(format!("127.0.0.1:{port}").as_str())
            );
            assert_eq!(e.digest.as_deref(), Some(pushed_digest.as_str()));
            assert!(
                pushes.iter().all(|p| p.repository == "notify-e2e/web"),
                "only our repository: {pushes:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 30s: want a push event for tag {tag} and a refused impostor delivery; got {pushes:?}\nregistry log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    registry.kill().await.expect("stop registry");
}
