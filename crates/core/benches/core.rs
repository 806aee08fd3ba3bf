//! Benchmarks of the sans-IO core's hot paths.
//!
//! * `tag/analyze`: reading a mixed set of ~50 realistic tags.
//! * `tag/compare`: comparing pairs of tags as `safe-updater compare` does.
//! * `evaluate/10k_assets_50_tags/*`: one whole decision cycle on one thread: 10,000 assets,
//!   each offered 50 tags, policy resolved per asset (namespace and resource overrides, labels)
//!   from a configuration loaded from YAML. `shared_repos`: 200 repositories, each tag list
//!   analysed once per cycle and shared; `distinct_repos`: every asset has its own tag list,
//!   analysed from strings. The goal is the whole cycle under 100 ms on one core.
//!
//! Run: `cargo bench -p safe-updater-core --bench core -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;

use safe_updater_core::asset::AssetKind;
use safe_updater_core::config::{self, Config};
use safe_updater_core::decide::{
    AnalyzedTags, Available, DigestDrift, Facts, evaluate, evaluate_analyzed,
};
use safe_updater_core::policy::AssetView;
use safe_updater_core::tag::{self, Scheme};

const ASSETS: usize = 10_000;
const REPOS: usize = 200;
const TAGS_PER_REPO: usize = 50;

/// A configuration as an operator would write it: a global policy, a namespace override and
/// resource overrides matched by kind, name, namespace and labels.
const CONFIG: &str = r#"
version: 1
policy:
  gates: { patch: auto, minor: review, major: manual, prerelease: skip, digest: review }
  min_age: 24h
namespaces:
  prod:
    gates: { patch: review, minor: manual }
    min_age: 72h
    windows: [{ days: [sat, sun], start: "02:00", end: "06:00", timezone: Europe/Berlin }]
resources:
  - name: databases
    match: { kind: StatefulSet, name: "pg-*" }
    policy:
      on_failure: freeze
      gates: { minor: manual, major: skip }
      constraint: "<100"
  - name: frontends
    match: { namespace: "web-*", labels: { tier: frontend } }
    policy:
      gates: { minor: auto }
      variant: loose
      exclude: ['-rc', 'beta']
"#;

/// A tiny deterministic generator (xorshift64*), so the data set is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a repository spells its version tags.
#[derive(Clone, Copy)]
enum Style {
    /// `1.2.3`
    Plain,
    /// `v1.2.3`
    V,
    /// `16.4-bookworm`
    TwoPartVariant,
    /// `1.27.2-alpine3.20`
    Alpine,
    /// `1.2.3-debian-12-r5` (Bitnami)
    Bitnami,
}

const STYLES: [Style; 5] = [
    Style::Plain,
    Style::V,
    Style::TwoPartVariant,
    Style::Alpine,
    Style::Bitnami,
];

fn release(style: Style, maj: u64, min: u64, pat: u64) -> String {
    match style {
        Style::Plain => format!("{maj}.{min}.{pat}"),
        Style::V => format!("v{maj}.{min}.{pat}"),
        Style::TwoPartVariant => format!("{maj}.{}-bookworm", min * 3 + pat),
        Style::Alpine => format!("{maj}.{min}.{pat}-alpine3.20"),
        Style::Bitnami => format!("{maj}.{min}.{pat}-debian-12-r{}", (min + pat) % 4),
    }
}

fn prerelease(style: Style, maj: u64, min: u64, n: u64) -> String {
    match style {
        Style::Plain => format!("{maj}.{min}.0-rc.{n}"),
        Style::V => format!("v{maj}.{min}.0-beta.{n}"),
        Style::TwoPartVariant => format!("{maj}.{min}-rc{n}-bookworm"),
        Style::Alpine => format!("{maj}.{min}.0-rc.{n}-alpine3.20"),
        Style::Bitnami => format!("{maj}.{min}.0-rc.{n}-debian-12-r0"),
    }
}

/// Other families the same repository publishes (variants, shorter precisions).
fn others(maj: u64, min: u64, pat: u64) -> [String; 6] {
    [
        format!("{maj}.{min}"),
        format!("{maj}"),
        format!("{maj}.{min}.{pat}-alpine"),
        format!("{maj}.{min}.{pat}-slim"),
        format!("{maj}.{min}-alpine3.19"),
        format!("{maj}.{min}.{pat}-bullseye"),
    ]
}

/// One repository's tag list: exactly 50 tags — 30 releases of the main family over three
/// majors (patches, minors, majors), 4 prereleases, 12 tags of other families and 4 names
/// that are not versions. Returns the list and a current tag from the oldest major, so each
/// asset has patch, minor, major and prerelease candidates to decide on.
fn repo_tags(seed: u64) -> (Vec<Available>, String) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let style = STYLES[usize::try_from(seed % 5).unwrap_or(0)];
    let base = 1 + rng.below(20);
    let seen = |rng: &mut Rng| {
        // First sightings spread over the last 30 days; some unknown.
        (rng.below(8) != 0).then(|| {
            let secs = i64::try_from(rng.below(30 * 24 * 3600)).unwrap_or(0);
            Timestamp::from_second(now().as_second() - secs).unwrap_or(Timestamp::UNIX_EPOCH)
        })
    };
    let mut tags = Vec::with_capacity(TAGS_PER_REPO);
    for maj in base..base + 3 {
        for min in 0..5 {
            for pat in 0..2 {
                tags.push(release(style, maj, min, pat));
            }
        }
    }
    for n in 1..=4 {
        tags.push(prerelease(style, base + 3, 0, n));
    }
    for maj in base..base + 2 {
        tags.extend(others(maj, rng.below(5), rng.below(3)));
    }
    tags.extend([
        "latest".to_owned(),
        "stable".to_owned(),
        "alpine".to_owned(),
        format!("sha-{:07x}", rng.below(1 << 28)),
    ]);
    assert_eq!(tags.len(), TAGS_PER_REPO);
    let current = release(style, base, rng.below(3), 0);
    let available = tags
        .into_iter()
        .map(|tag| Available {
            tag,
            first_seen: seen(&mut rng),
        })
        .collect();
    (available, current)
}

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z"
        .parse()
        .expect("a valid timestamp literal")
}

/// One asset of the inventory, with everything policy resolution and the decision read.
struct Asset {
    kind: AssetKind,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    repo: usize,
    facts: Facts,
}

impl Asset {
    fn view(&self) -> AssetView<'_> {
        AssetView {
            kind: self.kind,
            namespace: Some(&self.namespace),
            name: &self.name,
            labels: Some(&self.labels),
            annotations: None,
        }
    }
}

fn inventory(current_of: impl Fn(usize) -> String) -> Vec<Asset> {
    let mut rng = Rng(0x5eed);
    let namespaces = [
        "prod",
        "staging",
        "web-shop",
        "web-blog",
        "dev",
        "monitoring",
    ];
    (0..ASSETS)
        .map(|i| {
            let repo = i % REPOS;
            let (kind, name, tier) = match rng.below(10) {
                0 => (AssetKind::StatefulSet, format!("pg-{i}"), "database"),
                1 => (AssetKind::Container, format!("worker-{i}"), "backend"),
                2..=4 => (AssetKind::Deployment, format!("api-{i}"), "backend"),
                _ => (AssetKind::Deployment, format!("web-{i}"), "frontend"),
            };
            let mut labels: BTreeMap<String, String> = [
                ("app".to_owned(), name.clone()),
                ("tier".to_owned(), tier.to_owned()),
                ("team".to_owned(), format!("team-{}", i % 17)),
            ]
            .into();
            if rng.below(10) == 0 {
                labels.insert("safe-updater.io/minor".into(), "auto".into());
            }
            let current = current_of(i);
            let mut facts = Facts {
                current,
                ..Facts::default()
            };
            if rng.below(10) == 0 {
                facts.digest = Some(DigestDrift {
                    running: "sha256:aaaa".into(),
                    latest: "sha256:bbbb".into(),
                    first_seen: None,
                });
            }
            Asset {
                kind,
                namespace: namespaces[usize::try_from(rng.below(6)).unwrap_or(0)].to_owned(),
                name,
                labels,
                repo,
                facts,
            }
        })
        .collect()
}

fn load_config() -> Config {
    config::load("bench.yaml", CONFIG, &[]).expect("the bench configuration loads")
}

fn bench_tags(c: &mut Criterion) {
    let tags: Vec<&str> = vec![
        "1.2.3",
        "v1.2.3",
        "1.27",
        "1.27.2-alpine3.20",
        "1.27-alpine",
        "16.4-bookworm",
        "16-bookworm",
        "17-alpine",
        "1.2.3-rc.1",
        "1.3.0-beta2",
        "3.9.0b1",
        "1.28.0-rc.1-alpine",
        "1.0.0-0.3.7",
        "2024.01.15",
        "20240115",
        "1.2.3-r1",
        "1.2.3-debian-12-r5",
        "11.4.2-debian-12-r0",
        "8.0.36-debian-12-r3",
        "3.12-management-alpine",
        "3.12.14-management",
        "7.2.5-alpine3.20",
        "7.2",
        "7",
        "1.25.4-bullseye",
        "1.25.4-slim-bookworm",
        "21.0.3_9-jdk-jammy",
        "21-jdk",
        "v2.11.0",
        "v2.11.0-rc.3",
        "v0.27.1",
        "4.5-ls12",
        "1.2.3.4",
        "2.4.58-alpine",
        "10.11.8-jammy",
        "6.0.16-ubi9",
        "latest",
        "stable",
        "mainline",
        "alpine",
        "edge",
        "nightly",
        "sha-5114f85",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "8u292",
        "123456789012",
        "1.2.3.4.5",
        "1.2.3-",
        "2.0.0+build.5",
        "1.2.3-SNAPSHOT",
    ];
    let mut g = c.benchmark_group("tag");
    g.throughput(Throughput::Elements(tags.len() as u64));
    g.bench_function("analyze", |b| {
        b.iter(|| {
            for t in &tags {
                black_box(tag::analyze(black_box(t), &Scheme::Auto));
            }
        });
    });
    let pairs: Vec<(&str, &str)> = tags
        .iter()
        .zip(tags.iter().cycle().skip(7))
        .map(|(a, b)| (*a, *b))
        .chain([
            ("1.2.3", "1.2.4"),
            ("1.27-alpine", "1.28-alpine"),
            ("16-bookworm", "17-bookworm"),
            ("1.2.3-r1", "1.2.3-r2"),
            ("1.3.0-rc.1", "1.3.0"),
        ])
        .collect();
    g.throughput(Throughput::Elements(pairs.len() as u64));
    g.bench_function("compare", |b| {
        b.iter(|| {
            for (x, y) in &pairs {
                black_box(tag::compare(black_box(x), black_box(y), &Scheme::Auto));
            }
        });
    });
    g.finish();
}

fn bench_evaluate(c: &mut Criterion) {
    let cfg = load_config();
    let now = now();
    let repos: Vec<(Vec<Available>, String)> = (0..REPOS as u64).map(repo_tags).collect();
    let shared = inventory(|i| repos[i % REPOS].1.clone());
    // Every asset its own list: seeds above the shared ones, so no two lists are equal.
    let own: Vec<(Vec<Available>, String)> =
        (0..ASSETS as u64).map(|i| repo_tags(1_000 + i)).collect();
    let distinct = inventory(|i| own[i].1.clone());

    let mut g = c.benchmark_group("evaluate/10k_assets_50_tags");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(ASSETS as u64));
    g.bench_function("shared_repos", |b| {
        b.iter(|| {
            // What a cycle does: analyse each repository's tags once, then decide per asset.
            let analyzed: Vec<AnalyzedTags> = repos
                .iter()
                .map(|(tags, _)| AnalyzedTags::new(tags, &Scheme::Auto))
                .collect();
            let mut acted = 0usize;
            for a in &shared {
                let policy = cfg.policy.resolve(&a.view());
                let e = evaluate_analyzed(&policy, &a.facts, &analyzed[a.repo], now);
                acted += usize::from(e.act_on.is_some());
                black_box(e);
            }
            acted
        });
    });
    g.bench_function("distinct_repos", |b| {
        b.iter(|| {
            let mut acted = 0usize;
            for (a, (tags, _)) in distinct.iter().zip(&own) {
                let policy = cfg.policy.resolve(&a.view());
                let e = evaluate(&policy, &a.facts, tags, now);
                acted += usize::from(e.act_on.is_some());
                black_box(e);
            }
            acted
        });
    });
    g.finish();
}

criterion_group!(benches, bench_tags, bench_evaluate);
criterion_main!(benches);
