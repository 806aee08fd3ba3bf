//! `/metrics` rendering cost at the scale of 10,000 assets.
//!
//! Metrics are per label set, not per asset, so what grows with an estate is the number of
//! (asset_type, namespace) pairs, not the asset count. The population here is a large but
//! realistic estate of 10,000 assets: 150 Kubernetes namespaces, 50 Helm release namespaces and
//! 10 Docker engines (210 pairs), every update type (6) seen in every pair, rollbacks both ok
//! and failed everywhere, pending updates waiting for 3 different reasons in every pair, and
//! every histogram label set observed: about 9,000 sample lines, an upper bound (a real estate
//! touches a fraction of these combinations).
//!
//! Measured: rendering OpenMetrics and the 0.0.4 text in process, and a scrape over real HTTP
//! (keep-alive client against the real server on 127.0.0.1). Goal: under 10 ms per scrape.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use safe_updater_server::{
    AppState, AssetSummary, Backend, BackendError, BackendResult, InventoryLabels, Metrics,
    Operator, PendingApproval, PendingLabels, PushEvent, Readiness, ServerConfig, UpdateLabels,
    UpdateOutcome, WebhookSecrets, router, serve,
};

const UPDATE_TYPES: [&str; 6] = ["major", "minor", "patch", "prerelease", "build", "digest"];
const WAITING_FOR: [&str; 3] = ["approval", "window", "cooldown"];

fn pairs() -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    p.extend((0..150).map(|i| ("kubernetes", format!("team-{i:03}"))));
    p.extend((0..50).map(|i| ("helm", format!("release-ns-{i:02}"))));
    p.extend((0..10).map(|i| ("docker", format!("engine-{i}"))));
    p
}

fn populated() -> Metrics {
    let m = Metrics::new();
    let pairs = pairs();
    for t in ["docker", "kubernetes", "helm"] {
        m.scan_finished(t, Duration::from_millis(800), true);
        m.scan_finished(t, Duration::from_secs(40), false);
    }
    let mut inventory = Vec::new();
    let mut pending = Vec::new();
    for (asset_type, ns) in &pairs {
        // 10,000 assets spread over 210 pairs.
        inventory.push((
            InventoryLabels {
                asset_type: (*asset_type).into(),
                namespace: ns.clone(),
            },
            10_000 / pairs.len() as i64,
        ));
        for u in UPDATE_TYPES {
            let l = UpdateLabels::new(*asset_type, ns.clone(), u);
            m.update_attempted(&l);
            m.update_finished(&l, UpdateOutcome::Succeeded, Duration::from_secs(20));
            m.update_attempted(&l);
            m.update_finished(&l, UpdateOutcome::RolledBack, Duration::from_secs(140));
            for w in WAITING_FOR {
                pending.push((
                    PendingLabels {
                        asset_type: (*asset_type).into(),
                        namespace: ns.clone(),
                        update_type: u.into(),
                        status: w.into(),
                    },
                    2,
                ));
            }
        }
        m.rollback(asset_type, ns, true);
        m.rollback(asset_type, ns, false);
        m.health_check_finished(asset_type, ns, Duration::from_secs(30), true);
        m.health_check_finished(asset_type, ns, Duration::from_secs(31), false);
        let l = UpdateLabels::new(*asset_type, ns.clone(), "patch");
        m.update_attempted(&l);
        m.update_finished(&l, UpdateOutcome::Failed, Duration::from_secs(300));
    }
    m.set_assets_tracked(inventory);
    m.set_pending_updates(pending);
    m.set_oldest_pending_approval(Some(std::time::SystemTime::now()));
    m
}

/// Only `/metrics` is exercised; every backend call fails.
struct NoBackend;

fn unused<T>() -> BackendResult<T> {
    Err(BackendError::internal("not used by the benchmark"))
}

impl Backend for NoBackend {
    async fn pending_approvals(&self) -> BackendResult<Vec<PendingApproval>> {
        unused()
    }
    async fn approve(&self, _: String, _: Operator) -> BackendResult<()> {
        unused()
    }
    async fn reject(&self, _: String, _: Operator, _: String) -> BackendResult<()> {
        unused()
    }
    async fn list_assets(&self) -> BackendResult<Vec<AssetSummary>> {
        unused()
    }
    async fn skip_version(&self, _: String, _: String, _: Operator) -> BackendResult<()> {
        unused()
    }
    async fn snooze(&self, _: String, _: Timestamp, _: Operator) -> BackendResult<()> {
        unused()
    }
    async fn unsnooze(&self, _: String, _: Operator) -> BackendResult<()> {
        unused()
    }
    async fn pin(&self, _: String, _: String, _: Operator) -> BackendResult<()> {
        unused()
    }
    async fn unpin(&self, _: String, _: Operator) -> BackendResult<()> {
        unused()
    }
    async fn webhook_push(&self, _: PushEvent) -> BackendResult<()> {
        unused()
    }
}

fn bench(c: &mut Criterion) {
    let m = populated();
    let om = m.render().expect("render");
    let lines = om.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!(
        "population: {lines} sample lines, {} KiB of OpenMetrics",
        om.len() / 1024
    );

    c.bench_function("render_openmetrics_10k_assets", |b| {
        b.iter(|| black_box(m.render().expect("render")))
    });
    c.bench_function("render_prometheus_text_10k_assets", |b| {
        b.iter(|| black_box(m.render_prometheus_text().expect("render")))
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: Vec::new(),
        webhooks: WebhookSecrets::default(),
    };
    let state = AppState::new(&config, Arc::new(NoBackend), m.clone(), Readiness::new());
    let (url, stop) = rt.block_on(async {
        let listener = safe_updater_server::bind(&config).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router(state), async {
            let _ = rx.await;
        }));
        (format!("http://{addr}/metrics"), tx)
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    c.bench_function("scrape_over_http_10k_assets", |b| {
        b.iter(|| {
            rt.block_on(async {
                let res = client
                    .get(&url)
                    .header("Accept", "application/openmetrics-text;version=1.0.0")
                    .send()
                    .await
                    .expect("scrape");
                black_box(res.bytes().await.expect("body").len())
            })
        })
    });
    let _ = stop.send(());
}

criterion_group!(benches, bench);
criterion_main!(benches);
