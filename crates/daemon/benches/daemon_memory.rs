//! The daemon's footprint with 10,000 tracked assets, and `/metrics` response time.
//!
//! Runs `safe_updater_daemon::run` in this process against the real engine and registry of
//! `scripts/dev-env` (`eval "$(scripts/dev-env env)"` first): 10,000 container assets on
//! `127.0.0.1:5001/demo/web` are put in a fresh state database (on an engine named `bench` that
//! is not configured, so the scan of the real engine keeps them, and their 10,000 approved
//! patches are queued but none can start), the daemon runs three cycles (scan, check of all
//! 10,000, decisions recorded, 10,000 reviews listed, 10,000 queue entries re-evaluated), then
//! `/metrics` is fetched 200 times over real HTTP. Reports the process's resident memory (`VmRSS` after
//! the cycles, `VmHWM` peak) and the response-time distribution, after the cycles and while they
//! run.
//!
//! Policy is enabled only for the benchmark's own assets (`app-*`), so containers of other tests
//! on the same engine are never touched.
//!
//! `cargo bench -p safe-updater-daemon --bench daemon_memory`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::config;
use safe_updater_core::scope::SCOPE_LABEL;
use safe_updater_store::Store;

const ASSETS: usize = 10_000;

/// A `kB` field of this process's `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    kib_in(
        &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        field,
    )
}

/// A `kB` field of a `/proc/<pid>/status` text.
fn kib_in(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn get(port: u16, path: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out.len())
}

fn metric(port: u16, name: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let Ok(registry) = std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN") else {
        eprintln!(
            "skipped: SAFE_UPDATER_E2E_REGISTRY_OPEN is not set; run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"`"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.db");
    let baseline_kib = status_kib("VmRSS:");
    {
        let mut store = Store::open(&state).expect("store");
        let now = jiff::Timestamp::now();
        let assets: Vec<Asset> = (0..ASSETS)
            .map(|i| Asset {
                id: format!("docker/bench/app-{i:05}"),
                kind: AssetKind::Container,
                location: "bench".into(),
                namespace: Some(format!("project-{}", i % 50)),
                name: format!("app-{i:05}"),
                container: None,
                image: format!("{registry}/demo/web:1.0.{}", i % 2),
                digest: None,
                labels: BTreeMap::from([
                    ("app".to_owned(), format!("app-{}", i % 100)),
                    (SCOPE_LABEL.to_owned(), BENCH_SCOPE.to_owned()),
                ]),
                annotations: BTreeMap::new(),
                first_seen: now,
                last_seen: now,
                extra: serde_json::Value::Null,
            })
            .collect();
        store.upsert_assets(&assets).expect("assets stored");
    }
    // The same starting state for the shipped binary, when it is measured too.
    let bin_state = dir.path().join("bin-state.db");
    std::fs::copy(&state, &bin_state).expect("state copied");
    let port = free_port();
    let text = config_text(port);
    let cfg_path = dir.path().join("config.yaml");
    std::fs::write(&cfg_path, &text).expect("config");
    let loader_text = text.clone();
    let options = safe_updater_daemon::DaemonOptions {
        loader: Arc::new(move || {
            config::load("bench.yaml", &loader_text, &[]).map_err(|e| e.to_string())
        }),
        config_path: Some(cfg_path),
        state_path: state,
        env: std::env::vars().collect(),
        actor: "daemon".into(),
    };
    // The measurements from a thread of their own; the daemon runs on the main thread, on the
    // runtime `safe-updater watch` runs on, as in the binary.
    let measure = std::thread::spawn(move || {
        let started = Instant::now();
        // `/metrics` is also timed while the cycles run.
        let mut during = Vec::new();
        while metric_ready(port) < 3.0 {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "three cycles did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let t = Instant::now();
                let (status, _) = get(port, "/metrics");
                during.push(t.elapsed());
                assert_eq!(status, 200);
            }
        }
        let cycles_took = started.elapsed();
        during.sort();
        let rss_kib = status_kib("VmRSS:");
        let hwm_kib = status_kib("VmHWM:");
        let (anon_kib, file_kib) = (status_kib("RssAnon:"), status_kib("RssFile:"));
        let tracked = metric(port, "safe_updater_assets_tracked");

        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..200 {
            let t = Instant::now();
            let (status, n) = get(port, "/metrics");
            times.push(t.elapsed());
            assert_eq!(status, 200);
            bytes = n;
        }
        times.sort();
        let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];

        let _ = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status();

        println!(
            "daemon with {tracked} tracked assets ({ASSETS} stored), 3 cycles in {:.1} s",
            cycles_took.as_secs_f64()
        );
        println!(
            "resident memory after the cycles: {:.1} MiB (process before the daemon started: {:.1} MiB); peak (VmHWM) {:.1} MiB",
            rss_kib as f64 / 1024.0,
            baseline_kib as f64 / 1024.0,
            hwm_kib as f64 / 1024.0
        );
        println!(
            "  of which anonymous (heap, stacks) {:.1} MiB, mapped files (the binary) {:.1} MiB",
            anon_kib as f64 / 1024.0,
            file_kib as f64 / 1024.0
        );
        println!(
            "/metrics over HTTP, 200 requests ({bytes} bytes): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(50).as_secs_f64() * 1e3,
            pct(90).as_secs_f64() * 1e3,
            pct(99).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
        if !during.is_empty() {
            let at = |p: usize| during[(during.len() * p / 100).min(during.len() - 1)];
            println!(
                "/metrics while the cycles ran, {} requests: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                during.len(),
                at(50).as_secs_f64() * 1e3,
                at(90).as_secs_f64() * 1e3,
                at(99).as_secs_f64() * 1e3,
                during[during.len() - 1].as_secs_f64() * 1e3
            );
        }
    });
    let runtime = safe_updater_daemon::runtime().expect("runtime");
    if let Err(e) = runtime.block_on(safe_updater_daemon::run(options)) {
        panic!("the daemon failed: {e}");
    }
    measure.join().expect("measurements");

    match std::env::var("SAFE_UPDATER_BIN") {
        Ok(bin) => measure_binary(&bin, dir.path(), &bin_state),
        Err(_) => println!(
            "(set SAFE_UPDATER_BIN to a `safe-updater` binary to measure `safe-updater watch` as shipped, too)"
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The bench's own scope: the daemon it runs manages its synthetic assets and nothing else
/// the engine runs.
const BENCH_SCOPE: &str = "safe-updater-bench-memory";

fn config_text(port: u16) -> String {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    format!(
        "docker:\n  engines:\n    - {{ name: local, host: \"{host}\" }}\n\
         scope: {BENCH_SCOPE}\n\
         daemon: {{ interval: 4s }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\n\
         policy: {{ enabled: false }}\n\
         resources:\n  - match: {{ name: \"app-*\" }}\n    policy: {{ enabled: true }}\n"
    )
}

/// The same three cycles run by `safe-updater watch` itself, its memory read from `/proc`.
fn measure_binary(bin: &str, dir: &std::path::Path, state: &std::path::Path) {
    let port = free_port();
    let cfg = dir.join("bin-config.yaml");
    std::fs::write(&cfg, config_text(port)).expect("config");
    let mut child = std::process::Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .arg("--state")
        .arg(state)
        .arg("watch")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("safe-updater watch started");
    let started = Instant::now();
    while metric_ready(port) < 3.0 {
        if started.elapsed() > Duration::from_secs(300) || child.try_wait().ok().flatten().is_some()
        {
            let _ = child.kill();
            panic!("safe-updater watch did not finish three cycles");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let kib = |field: &str| kib_in(&status, field) as f64 / 1024.0;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    println!(
        "safe-updater watch ({bin}), 3 cycles in {:.1} s: resident {:.1} MiB (anonymous {:.1}, mapped files {:.1}); peak (VmHWM) {:.1} MiB",
        took.as_secs_f64(),
        kib("VmRSS:"),
        kib("RssAnon:"),
        kib("RssFile:"),
        kib("VmHWM:")
    );
}

/// Cycles finished: scans counted by the daemon (0 until the server answers).
fn metric_ready(port: u16) -> f64 {
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        return 0.0;
    }
    metric(port, "safe_updater_scans_total")
}
