//! The whole detect cycle against the real Docker engine and the open registry of
//! `scripts/dev-env` (run `scripts/dev-env up` and `eval "$(scripts/dev-env env)"` first):
//!
//! 1. `demo/web` pushed as 20 repositories, 200 created (not started) containers over them;
//!    one `check` cycle timed (median of several, each with a fresh `Cycle`), its registry
//!    requests counted by kind (one tag list per repository, one `HEAD` per distinct tag,
//!    nothing per container) and the peak resident memory of the process read.
//! 2. 1,000 created containers: `scan` timed against the bare Docker API calls it makes
//!    (list + inspect each container + inspect each image), sequential and concurrent.
//!
//! `cargo bench -p safe-updater-engine --bench docker_cycle`. Sizes can be lowered for a quick
//! try with `SAFE_UPDATER_BENCH_CONTAINERS` and `SAFE_UPDATER_BENCH_SCAN_CONTAINERS`; the
//! results are appended to the README's "## Benchmarks" section only at the full sizes.
//! Everything the bench creates carries the label `safe-updater-bench=1` and is removed on
//! exit, on panic, and (leftovers of an earlier run) at the start.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a panic with a message is the report"
)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;
use safe_updater_core::config::Config;
use safe_updater_core::reference::ImageRef;
use safe_updater_core::scope::{Scope, Selection, WATCHTOWER_SCOPE_LABEL};
use safe_updater_docker::bollard::Docker;
use safe_updater_docker::bollard::models::ContainerCreateBody;
use safe_updater_docker::bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListImagesOptions, RemoveContainerOptions,
};
use safe_updater_docker::{ConnectOptions, DiscoverOptions, Engine, EngineSpec, discover};
use safe_updater_engine::{check, engine_specs, registry_client_config, scan};
use safe_updater_registry::{Cycle, RegistryClient, RequestCounts};
use safe_updater_store::Store;

const LABEL: &str = "safe-updater-bench";
const REPOS: usize = 20;
const TAGS: [&str; 4] = ["1.0.0", "1.0.1", "1.1.0", "2.0.0"];
const CHECK_CYCLES: usize = 5;
const SCAN_RUNS: usize = 3;
/// The concurrency `scan` uses on one engine (`DiscoverOptions::default().concurrency`).
const SCAN_CONCURRENCY: usize = 8;
/// Requests in flight while creating and removing the bench's containers.
const SETUP_CONCURRENCY: usize = 16;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn registry() -> String {
    std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN").unwrap_or_else(|_| {
        panic!("SAFE_UPDATER_E2E_REGISTRY_OPEN is not set: run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"`")
    })
}

fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes every container labelled `safe-updater-bench=1` when dropped (normal exit and
/// panic), through the CLI so that it needs no runtime.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={LABEL}=1")])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return;
        }
        eprintln!("bench: removing {} leftover container(s)", ids.len());
        for chunk in ids.chunks(200) {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(chunk)
                .output();
        }
    }
}

fn label_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{LABEL}=1")])])
}

/// Removes every bench container (by label), concurrently.
async fn remove_bench_containers(docker: &Docker) -> usize {
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter()),
            ..Default::default()
        }))
        .await
        .expect("list bench containers");
    let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
    let n = ids.len();
    stream::iter(ids)
        .map(|id| async move {
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap_or_else(|e| panic!("remove container {id}: {e}"));
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    n
}

fn repo_image(reg: &str, r: usize) -> String {
    format!("{reg}/bench/app{r:02}")
}

/// Pushes `demo/web` as `bench/app00..` (skipping repositories the registry already has with
/// every tag) and makes sure every tag exists locally with its repository digest.
async fn push_repositories(docker: &Docker, client: &RegistryClient, reg: &str) {
    let images = docker
        .list_images(Some(ListImagesOptions::default()))
        .await
        .expect("list images");
    let local: HashSet<String> = images
        .iter()
        .flat_map(|i| i.repo_tags.iter().cloned())
        .collect();
    let local_digests: HashSet<String> = images
        .iter()
        .flat_map(|i| i.repo_digests.iter())
        .filter_map(|d| d.split_once('@').map(|(repo, _)| repo.to_owned()))
        .collect();
    let (mut pushed, mut pulled) = (0, 0);
    let mut pulled_sources = HashSet::new();
    for r in 0..REPOS {
        let repo = repo_image(reg, r);
        let image = ImageRef::parse(&repo).expect("bench repository reference");
        let remote: HashSet<String> = client
            .all_tags(&image)
            .await
            .map(|t| t.into_iter().collect())
            .unwrap_or_default();
        let present = TAGS.iter().all(|t| remote.contains(*t));
        for tag in TAGS {
            let want = format!("{repo}:{tag}");
            if present {
                // In the registry already: only the local tag (with its digest) may be missing.
                if !local.contains(&want) || !local_digests.contains(&repo) {
                    docker_cli(&["pull", "-q", &want]);
                    pulled += 1;
                }
            } else {
                let source = format!("{reg}/demo/web:{tag}");
                if !local.contains(&source) && !pulled_sources.contains(&source) {
                    docker_cli(&["pull", "-q", &source]);
                    pulled_sources.insert(source.clone());
                    pulled += 1;
                }
                docker_cli(&["tag", &source, &want]);
                docker_cli(&["push", &want]);
                pushed += 1;
            }
        }
    }
    eprintln!(
        "bench: {REPOS} repositories ready ({pushed} tag(s) pushed, {pulled} pulled, the rest present)"
    );
}

/// Creates `count` containers (not started), repository `i % REPOS`, tag by `i / REPOS`.
async fn create_containers(docker: &Docker, reg: &str, prefix: &str, from: usize, count: usize) {
    stream::iter(from..from + count)
        .map(|i| {
            let name = format!("{prefix}-{i:04}");
            let image = format!(
                "{}:{}",
                repo_image(reg, i % REPOS),
                TAGS[(i / REPOS) % TAGS.len()]
            );
            async move {
                docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: Some(name.clone()),
                            ..Default::default()
                        }),
                        ContainerCreateBody {
                            image: Some(image),
                            labels: Some(HashMap::from([
                                (LABEL.to_owned(), "1".to_owned()),
                                (WATCHTOWER_SCOPE_LABEL.to_owned(), LABEL.to_owned()),
                            ])),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("create container {name}: {e}"));
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The Docker API calls `scan` makes, without mapping or storing: list all, inspect each
/// container, inspect each distinct image, `concurrency` requests at a time.
async fn bare_listing(docker: &Docker, concurrency: usize) -> usize {
    // The bench's containers only, as the scan in its scope sees them: other containers on
    // the engine are neither the scan's work nor this baseline's.
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter()),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
    let inspected: Vec<_> = stream::iter(ids)
        .map(|id| async move { docker.inspect_container(&id, None).await })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .expect("inspect containers");
    let image_ids: BTreeSet<String> = inspected.iter().filter_map(|c| c.image.clone()).collect();
    let _: Vec<_> = stream::iter(image_ids)
        .map(|id| async move { docker.inspect_image(&id).await })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .expect("inspect images");
    inspected.len()
}

struct CheckFigures {
    containers: usize,
    repos: usize,
    median: Duration,
    first: Duration,
    min: Duration,
    max: Duration,
    requests: RequestCounts,
    last_requests: RequestCounts,
    running_tags: usize,
    expected_heads: usize,
    hwm_kib: u64,
}

struct ScanFigures {
    containers: usize,
    scan: Duration,
    sequential: Duration,
    concurrent: Duration,
}

async fn bench_check(
    engines: &[EngineSpec],
    client: &RegistryClient,
    config: &Config,
) -> CheckFigures {
    // Only the bench's containers go into the store (the engine may run others).
    let now = Timestamp::now();
    let scans = discover(
        engines,
        DiscoverOptions {
            include_stopped: true,
            scope: Scope::Named(LABEL.to_owned()),
            ..Default::default()
        },
        now,
    )
    .await;
    let assets: Vec<_> = scans
        .into_iter()
        .flat_map(|s| s.result.expect("discover the bench containers"))
        .filter(|a| a.labels.get(LABEL).map(String::as_str) == Some("1"))
        .collect();
    let mut store = Store::open_in_memory().expect("in-memory store");
    store.upsert_assets(&assets).expect("store the assets");
    let repos: BTreeSet<String> = assets
        .iter()
        .map(|a| {
            a.image
                .rsplit_once(':')
                .map_or(a.image.clone(), |(r, _)| r.to_owned())
        })
        .collect();
    let running: BTreeSet<(String, String)> = assets
        .iter()
        .filter(|a| a.digest.is_some())
        .filter_map(|a| {
            a.image
                .rsplit_once(':')
                .map(|(r, t)| (r.to_owned(), t.to_owned()))
        })
        .collect();
    assert!(
        running.len() == assets.len().min(REPOS * TAGS.len()),
        "every bench container should run a pushed tag with a known digest ({} of {})",
        running.len(),
        assets.len()
    );

    let mut times = Vec::new();
    let mut first_requests = None;
    let mut last_requests = RequestCounts::default();
    let mut expected_heads = 0;
    for n in 0..CHECK_CYCLES {
        let cycle = Cycle::new(client.clone());
        let started = Instant::now();
        let report = check(
            config,
            &mut store,
            &cycle,
            Timestamp::now(),
            "bench",
            &format!("bench-{n}"),
        )
        .await
        .expect("check cycle");
        times.push(started.elapsed());
        assert_eq!(report.errors(), 0, "check errors: {:?}", report.checks);
        assert_eq!(report.checks.len(), assets.len());
        let req = report.requests;
        assert_eq!(
            req.tags_page as usize,
            repos.len(),
            "one tag list per repository"
        );
        // One HEAD per distinct running tag, plus one per candidate the platform check looked
        // at that no container runs: per repository and tag, never per container.
        let mut heads = running.clone();
        for c in &report.checks {
            if let (Some(ev), Some((repo, _))) = (&c.evaluation, c.image.rsplit_once(':'))
                && let Some(target) = &ev.act_on
            {
                heads.insert((repo.to_owned(), target.clone()));
            }
        }
        expected_heads = heads.len();
        assert_eq!(
            req.head_manifest as usize, expected_heads,
            "HEADs: one per (repository, tag)"
        );
        eprintln!(
            "bench: check cycle {}: {} (requests: {} tag lists, {} HEAD, {} GET manifest, {} token, {} retries)",
            n + 1,
            ms(times[n]),
            req.tags_page,
            req.head_manifest,
            req.get_manifest,
            req.token,
            req.retries
        );
        first_requests.get_or_insert(req);
        last_requests = req;
    }
    let hwm_kib = vm_hwm_kib();
    CheckFigures {
        containers: assets.len(),
        repos: repos.len(),
        first: times[0],
        min: *times.iter().min().expect("cycles"),
        max: *times.iter().max().expect("cycles"),
        median: median(times),
        requests: first_requests.expect("cycles"),
        last_requests,
        running_tags: running.len(),
        expected_heads,
        hwm_kib,
    }
}

async fn bench_scan(docker: &Docker, engines: &[EngineSpec]) -> ScanFigures {
    let mut scans = Vec::new();
    let mut sequential = Vec::new();
    let mut concurrent = Vec::new();
    let mut containers = 0;
    for n in 0..SCAN_RUNS {
        let mut store = Store::open_in_memory().expect("in-memory store");
        let started = Instant::now();
        let selection = Selection::scoped(Scope::Named(LABEL.to_owned()));
        let report = scan(
            &mut store,
            engines,
            true,
            &selection,
            Timestamp::now(),
            "bench",
        )
        .await
        .expect("scan");
        scans.push(started.elapsed());
        assert_eq!(report.failed_engines(), 0, "{report:?}");
        containers = report.assets;

        let started = Instant::now();
        let seen = bare_listing(docker, 1).await;
        sequential.push(started.elapsed());
        let started = Instant::now();
        bare_listing(docker, SCAN_CONCURRENCY).await;
        concurrent.push(started.elapsed());
        eprintln!(
            "bench: scan run {}: scan {} ({containers} assets); bare API sequential {}, concurrent {} ({seen} containers)",
            n + 1,
            ms(scans[n]),
            ms(sequential[n]),
            ms(concurrent[n])
        );
    }
    ScanFigures {
        containers,
        scan: median(scans),
        sequential: median(sequential),
        concurrent: median(concurrent),
    }
}

fn table(c: &CheckFigures, s: &ScanFigures) -> String {
    let r = &c.requests;
    let mut t = String::new();
    t.push_str("| measure | value |\n| --- | --- |\n");
    t.push_str(&format!(
        "| `check`, {} containers over {} repositories, median of {CHECK_CYCLES} cycles (fresh `Cycle` each) | {} (first {}, min {}, max {}) |\n",
        c.containers,
        c.repos,
        ms(c.median),
        ms(c.first),
        ms(c.min),
        ms(c.max)
    ));
    t.push_str(&format!(
        "| registry requests of one `check` cycle | {} tag lists, {} HEAD ({} distinct running repository/tag pairs + {} candidates no container runs, checked for the platform), {} GET manifest in the first cycle and {} later (platforms are cached per digest), {} token, {} retries; nothing per container |\n",
        r.tags_page,
        r.head_manifest,
        c.running_tags,
        c.expected_heads - c.running_tags,
        r.get_manifest,
        c.last_requests.get_manifest,
        r.token,
        r.retries
    ));
    t.push_str(&format!(
        "| peak resident memory (`VmHWM`) after the `check` cycles | {:.1} MiB |\n",
        c.hwm_kib as f64 / 1024.0
    ));
    t.push_str(&format!(
        "| `scan` (include stopped, into an in-memory store), {} containers, median of {SCAN_RUNS} | {} |\n",
        s.containers,
        ms(s.scan)
    ));
    t.push_str(&format!(
        "| the same Docker API calls alone (list + inspect each container + each image), sequential | {} |\n",
        ms(s.sequential)
    ));
    t.push_str(&format!(
        "| the same Docker API calls alone, {SCAN_CONCURRENCY} in flight (as `scan`) | {} |\n",
        ms(s.concurrent)
    ));
    t
}

fn write_readme(table: &str, docker_version: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let mut text = std::fs::read_to_string(&path).expect("read README.md");
    let date = Timestamp::now().strftime("%Y-%m-%d").to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let block = format!(
        "\n`cargo bench -p safe-updater-engine --bench docker_cycle` ({date}; {cpus} vCPUs, Docker \
         {docker_version} from Debian, overlay2, registry 2.8 on loopback; containers created, \
         not started):\n\n{table}"
    );
    if !text.contains("\n## Benchmarks\n") {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("\n## Benchmarks\n");
    }
    text.push_str(&block);
    std::fs::write(&path, text).expect("write README.md");
    eprintln!("bench: results appended to {}", path.display());
}

async fn run() {
    let reg = registry();
    let check_containers = env_usize("SAFE_UPDATER_BENCH_CONTAINERS", 200);
    let scan_containers =
        env_usize("SAFE_UPDATER_BENCH_SCAN_CONTAINERS", 1000).max(check_containers);
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = Config::builtin();
    let engines = engine_specs(&config.docker, &env).expect("engine from DOCKER_HOST");
    let engine = Engine::connect(&engines[0], ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("no Docker engine ({e}): run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"`"));
    let docker = engine.docker();
    let docker_version = docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "?".into());
    let client = RegistryClient::new(
        registry_client_config(&config.registries, &env).expect("registry client settings"),
    )
    .expect("registry client");

    let left = remove_bench_containers(docker).await;
    if left > 0 {
        eprintln!("bench: removed {left} container(s) left by an earlier run");
    }
    push_repositories(docker, &client, &reg).await;

    let prefix = format!("su-bench-{}", std::process::id());
    let started = Instant::now();
    create_containers(docker, &reg, &prefix, 0, check_containers).await;
    eprintln!(
        "bench: {check_containers} containers created in {}",
        ms(started.elapsed())
    );
    let c = bench_check(&engines, &client, &config).await;

    let started = Instant::now();
    create_containers(
        docker,
        &reg,
        &prefix,
        check_containers,
        scan_containers - check_containers,
    )
    .await;
    eprintln!(
        "bench: {} more containers created in {}",
        scan_containers - check_containers,
        ms(started.elapsed())
    );
    let s = bench_scan(docker, &engines).await;

    let t = table(&c, &s);
    println!("\n{t}");
    if check_containers == 200 && scan_containers == 1000 {
        write_readme(&t, &docker_version);
    } else {
        eprintln!("bench: reduced sizes; README.md not written");
    }

    let started = Instant::now();
    let removed = remove_bench_containers(docker).await;
    eprintln!(
        "bench: removed {removed} container(s) in {}",
        ms(started.elapsed())
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than ours means another bench.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"docker_cycle".contains(a.as_str()))
    {
        return;
    }
    let _cleanup = Cleanup;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}
