//! Store lookups at scale: `get_asset` and `list_assets` by namespace among 100,000 assets in
//! a file-backed store, and the cost of one durable audit append.
//!
//! Run: `cargo bench -p safe-updater-store -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::audit::AuditEvent;
use safe_updater_store::{AssetFilter, Store};
use serde_json::json;

const ASSETS: usize = 100_000;
const NAMESPACES: usize = 200;

fn asset(i: usize, now: Timestamp) -> Asset {
    let namespace = format!("ns-{:03}", i % NAMESPACES);
    let name = format!("app-{i}");
    Asset {
        id: format!("k8s/prod/{namespace}/Deployment/{name}/main"),
        kind: AssetKind::Deployment,
        location: "prod".into(),
        namespace: Some(namespace),
        name: name.clone(),
        container: Some("main".into()),
        image: format!("registry.example/team/{name}:1.{}.0", i % 17),
        digest: Some(format!("sha256:{i:064x}")),
        labels: BTreeMap::from([("app".into(), name), ("tier".into(), "web".into())]),
        annotations: BTreeMap::new(),
        first_seen: now,
        last_seen: now,
        extra: json!({"replicas": 3}),
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path().join("bench.db")).expect("open");
    let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("timestamp");
    let assets: Vec<Asset> = (0..ASSETS).map(|i| asset(i, now)).collect();
    // One transaction for the whole fill.
    store.upsert_assets(&assets).expect("fill");
    assert_eq!(store.count_assets().expect("count"), ASSETS as u64);

    // Visit ids in a scattered order so that lookups do not ride on a warm neighbour.
    let mut i = 0usize;
    c.bench_function("get_asset (100k assets)", |b| {
        b.iter(|| {
            i = (i + 7_919) % ASSETS;
            let found = store.get_asset(black_box(&assets[i].id)).expect("get");
            assert!(found.is_some());
            found
        })
    });

    let mut n = 0usize;
    c.bench_function("list_assets by namespace (500 of 100k)", |b| {
        b.iter(|| {
            n = (n + 37) % NAMESPACES;
            let filter = AssetFilter {
                namespace: Some(format!("ns-{n:03}")),
                ..Default::default()
            };
            let found = store.list_assets(black_box(&filter)).expect("list");
            assert_eq!(found.len(), ASSETS / NAMESPACES);
            found
        })
    });

    let mut seq = 0u64;
    c.bench_function("append_audit (fsynced commit)", |b| {
        b.iter(|| {
            seq += 1;
            store
                .append_audit(AuditEvent {
                    timestamp: now,
                    actor: "daemon".into(),
                    action: "scan".into(),
                    asset_id: None,
                    correlation_id: None,
                    details: json!({"n": seq}),
                })
                .expect("append")
        })
    });
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
