//! `/metrics` over real HTTP, checked by Prometheus' own tools: `promtool check metrics` on
//! the text format, a real `prometheus` server scraping the endpoint (it negotiates
//! OpenMetrics), and `promtool check rules` / `promtool test rules` on the shipped alerts.
//!
//! Needs `promtool` and `prometheus` (Debian package `prometheus`). Without them these tests
//! print why and pass without checking anything; set SAFE_UPDATER_REQUIRE_PROMTOOL=1 (CI) to
//! make their absence a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{MemBackend, TestServer, client, config};
use safe_updater_server::{
    InventoryLabels, OPENMETRICS_CONTENT_TYPE, PendingLabels, UpdateLabels, UpdateOutcome,
};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "{name} not found on PATH: install it with `apt-get install -y --no-install-recommends prometheus`"
        );
        if std::env::var_os("SAFE_UPDATER_REQUIRE_PROMTOOL").is_some() {
            panic!("{msg} (SAFE_UPDATER_REQUIRE_PROMTOOL is set)");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

/// Every kind of event the daemon reports, so every family has samples.
fn record_events(s: &TestServer) {
    let m = &s.metrics;
    m.scan_finished("docker", Duration::from_millis(180), true);
    m.scan_finished("kubernetes", Duration::from_secs(3), false);
    let patch = UpdateLabels::new("docker", "local", "patch");
    let minor = UpdateLabels::new("kubernetes", "shop", "minor");
    m.update_attempted(&patch);
    m.update_finished(&patch, UpdateOutcome::Succeeded, Duration::from_secs(14));
    m.update_attempted(&minor);
    m.update_finished(&minor, UpdateOutcome::RolledBack, Duration::from_secs(95));
    m.rollback("kubernetes", "shop", true);
    m.health_check_finished("docker", "local", Duration::from_secs(10), true);
    m.health_check_finished("kubernetes", "shop", Duration::from_secs(31), false);
    m.set_assets_tracked([
        (
            InventoryLabels {
                asset_type: "docker".into(),
                namespace: "local".into(),
            },
            12,
        ),
        (
            InventoryLabels {
                asset_type: "kubernetes".into(),
                namespace: "shop".into(),
            },
            40,
        ),
    ]);
    m.set_pending_updates([(
        PendingLabels {
            asset_type: "docker".into(),
            namespace: "local".into(),
            update_type: "major".into(),
            status: "approval".into(),
        },
        1,
    )]);
    m.set_oldest_pending_approval(Some(
        std::time::SystemTime::now() - Duration::from_secs(600),
    ));
    m.registry_requests("docker.io", 7, 2);
    m.registry_requests("ghcr.io", 3, 0);
    m.notifications("slack://***@webhook", "delivered", 4);
    m.notifications("slack://***@webhook", "failed", 1);
}

fn samples(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_openmetrics_and_promtool_accepts_them() {
    let s = TestServer::start(config(), MemBackend::default()).await;
    record_events(&s);
    let c = client();

    // What Prometheus gets by default: OpenMetrics.
    let res = c
        .get(s.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(OPENMETRICS_CONTENT_TYPE)
    );
    let om = res.text().await.expect("body");
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    for want in [
        "# TYPE safe_updater_scans counter",
        "safe_updater_scans_total{asset_type=\"kubernetes\",status=\"error\"} 1",
        "safe_updater_updates_attempted_total{asset_type=\"docker\",namespace=\"local\",update_type=\"patch\"} 1",
        "safe_updater_updates_succeeded_total{asset_type=\"docker\",namespace=\"local\",update_type=\"patch\"} 1",
        "safe_updater_updates_failed_total{asset_type=\"kubernetes\",namespace=\"shop\",update_type=\"minor\"} 1",
        "safe_updater_rollbacks_total{asset_type=\"kubernetes\",namespace=\"shop\",status=\"ok\"} 1",
        "safe_updater_failed_health_checks_total{asset_type=\"kubernetes\",namespace=\"shop\"} 1",
        "safe_updater_assets_tracked{asset_type=\"kubernetes\",namespace=\"shop\"} 40",
        "safe_updater_pending_updates{asset_type=\"docker\",namespace=\"local\",update_type=\"major\",status=\"approval\"} 1",
        "safe_updater_update_duration_seconds_bucket{le=\"120.0\",asset_type=\"kubernetes\",update_type=\"minor\",status=\"rolled_back\"} 1",
        "safe_updater_health_check_duration_seconds_count{asset_type=\"docker\",status=\"passed\"} 1",
        "safe_updater_scan_duration_seconds_sum{asset_type=\"docker\"} 0.18",
        "# TYPE safe_updater_last_successful_scan_timestamp_seconds gauge",
        "# TYPE safe_updater_oldest_pending_approval_timestamp_seconds gauge",
        "safe_updater_build_info{version=",
        "safe_updater_registry_requests_total{registry=\"docker.io\"} 7",
        "safe_updater_registry_errors_total{registry=\"docker.io\"} 2",
        "safe_updater_registry_errors_total{registry=\"ghcr.io\"} 0",
        "safe_updater_notifications_total{channel=\"slack://***@webhook\",result=\"failed\"} 1",
    ] {
        assert!(om.contains(want), "missing {want:?} in\n{om}");
    }

    // What `curl /metrics | promtool check metrics` reads (no Accept header, or */*), and
    // scrapers without OpenMetrics: text format 0.0.4, same samples.
    for accept in [None, Some("*/*")] {
        let mut req = c.get(s.url("/metrics"));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let res = req.send().await.expect("scrape");
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "Accept {accept:?}"
        );
    }
    let res = c
        .get(s.url("/metrics"))
        .header("Accept", "text/plain;version=0.0.4")
        .send()
        .await
        .expect("scrape");
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = res.text().await.expect("body");
    assert!(text.contains("# TYPE safe_updater_scans_total counter"));
    assert!(text.contains("# TYPE safe_updater_build_info gauge"));
    assert!(!text.contains("# EOF"));
    assert_eq!(
        samples(&om),
        samples(&text),
        "both formats carry the same samples"
    );

    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{report}\n--- input ---\n{text}",
        out.status
    );
    assert!(
        report.trim().is_empty(),
        "promtool has lint findings:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_endpoint() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let s = TestServer::start(config(), MemBackend::default()).await;
    record_events(&s);

    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: safe-updater\n    static_configs:\n      - targets: ['{}']\n",
            s.addr
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let mut child = Command::new(&prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");

    let c = client();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (target, value) = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited ({status}):\n{log}");
        }
        let q = c
            .get(format!("{api}/query"))
            .query(&[("query", "safe_updater_assets_tracked{namespace=\"shop\"}")])
            .send()
            .await;
        if let Ok(res) = q {
            let v: serde_json::Value = res.json().await.unwrap_or_default();
            if let Some(sample) = v["data"]["result"].get(0) {
                let targets: serde_json::Value = c
                    .get(format!("{api}/targets"))
                    .send()
                    .await
                    .expect("targets")
                    .json()
                    .await
                    .expect("targets JSON");
                break (
                    targets["data"]["activeTargets"][0].clone(),
                    sample["value"][1].clone(),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not ingest our metrics within 60s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(value, "40");
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");

    // Counters are queried by their _total name, the histogram by its buckets.
    for (query, want) in [
        ("sum(safe_updater_updates_attempted_total)", "2"),
        ("safe_updater_rollbacks_total{status=\"ok\"}", "1"),
        (
            "safe_updater_update_duration_seconds_count{status=\"rolled_back\"}",
            "1",
        ),
        ("count(safe_updater_build_info)", "1"),
    ] {
        let v: serde_json::Value = c
            .get(format!("{api}/query"))
            .query(&[("query", query)])
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("query JSON");
        assert_eq!(v["data"]["result"][0]["value"][1], want, "{query}: {v}");
    }
    child.kill().await.expect("stop prometheus");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = deploy_dir();
    for args in [
        vec!["check", "rules", "safe-updater-alerts.yml"],
        vec!["test", "rules", "safe-updater-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .await
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
