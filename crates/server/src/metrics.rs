//! The daemon's Prometheus metrics, rendered in the OpenMetrics text format for `/metrics`.
//!
//! [`Metrics`] is a cheap handle (one `Arc`) that the daemon loop, the engine and the handlers
//! update from any task. Names follow the Prometheus conventions: counters are registered
//! without `_total` (prometheus-client appends it to the sample), durations end in `_seconds`,
//! timestamps in `_timestamp_seconds`.
//!
//! Labels are bounded on purpose: `asset_type` (docker / kubernetes / helm), `namespace`,
//! `update_type` (major / minor / patch / prerelease / build / digest) and `status`. Never an
//! asset id, an image or a version: one series per asset would grow without bound. Histograms
//! carry no `namespace` because each label set costs a dozen bucket series.
//!
//! This module must not decide anything: it counts what the caller says happened.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type `/metrics` answers with.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `asset_type` and `status` of a scan.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabels {
    pub asset_type: String,
    /// `ok` or `error`.
    pub status: String,
}

/// Which kind of asset, where, and what kind of change: the labels of the update counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    pub asset_type: String,
    pub namespace: String,
    pub update_type: String,
}

impl UpdateLabels {
    pub fn new(
        asset_type: impl Into<String>,
        namespace: impl Into<String>,
        update_type: impl Into<String>,
    ) -> Self {
        UpdateLabels {
            asset_type: asset_type.into(),
            namespace: namespace.into(),
            update_type: update_type.into(),
        }
    }
}

/// Labels of the update-duration histogram: no namespace (see the module doc).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateDurationLabels {
    asset_type: String,
    update_type: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    asset_type: String,
    namespace: String,
    /// `ok` (restored) or `error` (restoring failed: a person must look).
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    asset_type: String,
    /// `passed` or `failed`.
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedHealthLabels {
    asset_type: String,
    namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssetTypeLabel {
    asset_type: String,
}

/// `asset_type` and `namespace`: the labels of `safe_updater_assets_tracked`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InventoryLabels {
    pub asset_type: String,
    pub namespace: String,
}

/// Labels of `safe_updater_pending_updates`: what waits, where, and for what.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PendingLabels {
    pub asset_type: String,
    pub namespace: String,
    pub update_type: String,
    /// What the update waits for: `approval`, `window`, `cooldown`, `concurrency`, ...
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// How an update attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Applied and verified healthy.
    Succeeded,
    /// Failed and restored from the snapshot.
    RolledBack,
    /// Failed and could not be restored.
    Failed,
}

impl UpdateOutcome {
    fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Succeeded => "succeeded",
            UpdateOutcome::RolledBack => "rolled_back",
            UpdateOutcome::Failed => "failed",
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

// Scans take from milliseconds (one engine) to minutes (a large cluster and slow registries).
const SCAN_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
// An update includes the pull and the whole monitoring window: seconds to tens of minutes.
const UPDATE_BUCKETS: [f64; 11] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];
// A verification runs over a monitoring window (seconds to minutes); a single failing probe
// can end it early.
const HEALTH_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn scan_histogram() -> Histogram {
    Histogram::new(SCAN_BUCKETS)
}
fn update_histogram() -> Histogram {
    Histogram::new(UPDATE_BUCKETS)
}
fn health_histogram() -> Histogram {
    Histogram::new(HEALTH_BUCKETS)
}

struct Inner {
    registry: Registry,
    scans: Family<ScanLabels, Counter>,
    scan_duration: HistogramFamily<AssetTypeLabel>,
    last_successful_scan: Family<AssetTypeLabel, FloatGauge>,
    attempted: Family<UpdateLabels, Counter>,
    succeeded: Family<UpdateLabels, Counter>,
    failed: Family<UpdateLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
    update_duration: HistogramFamily<UpdateDurationLabels>,
    health_duration: HistogramFamily<HealthLabels>,
    failed_health_checks: Family<FailedHealthLabels, Counter>,
    assets_tracked: Family<InventoryLabels, Gauge>,
    pending_updates: Family<PendingLabels, Gauge>,
    oldest_pending_approval: FloatGauge,
    webhook_events: Family<WebhookLabels, Counter>,
    registry_requests: Family<RegistryLabels, Counter>,
    registry_errors: Family<RegistryLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    // The label sets set last time, so that a set that disappeared reads 0 instead of keeping
    // its old value (see `set_gauges`).
    seen_inventory: Mutex<HashSet<InventoryLabels>>,
    seen_pending: Mutex<HashSet<PendingLabels>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    /// As in image references (`docker.io`, `ghcr.io`): as many as the registries in use.
    registry: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    /// The channel as configured, its secrets masked (`slack://***@webhook`).
    channel: String,
    /// `delivered`, `failed` or `dropped`.
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: String,
    /// `accepted`, `unauthorized` or `invalid`.
    status: String,
}

/// The daemon's metrics. Cloning is one reference-count increment; every method takes `&self`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric of the daemon (prefix `safe_updater_`).
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("safe_updater");

        let build = Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        r.register("build", "Version of the running safe-updater", build);

        let scans = Family::<ScanLabels, Counter>::default();
        r.register(
            "scans",
            "Discovery scans finished, by asset type and status (ok, error)",
            scans.clone(),
        );
        let scan_duration: HistogramFamily<AssetTypeLabel> =
            Family::new_with_constructor(scan_histogram);
        r.register(
            "scan_duration_seconds",
            "Duration of discovery scans",
            scan_duration.clone(),
        );
        let last_successful_scan = Family::<AssetTypeLabel, FloatGauge>::default();
        r.register(
            "last_successful_scan_timestamp_seconds",
            "Unix time of the last scan that succeeded, by asset type",
            last_successful_scan.clone(),
        );

        let attempted = Family::<UpdateLabels, Counter>::default();
        r.register(
            "updates_attempted",
            "Updates started (after the snapshot was committed)",
            attempted.clone(),
        );
        let succeeded = Family::<UpdateLabels, Counter>::default();
        r.register(
            "updates_succeeded",
            "Updates applied and verified healthy",
            succeeded.clone(),
        );
        let failed = Family::<UpdateLabels, Counter>::default();
        r.register(
            "updates_failed",
            "Updates that failed (whether or not they were rolled back)",
            failed.clone(),
        );
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        r.register(
            "rollbacks",
            "Rollbacks to the snapshot taken before an update, by status (ok, error)",
            rollbacks.clone(),
        );
        let update_duration: HistogramFamily<UpdateDurationLabels> =
            Family::new_with_constructor(update_histogram);
        r.register(
            "update_duration_seconds",
            "Duration of update attempts from snapshot to verdict, monitoring window included",
            update_duration.clone(),
        );
        let health_duration: HistogramFamily<HealthLabels> =
            Family::new_with_constructor(health_histogram);
        r.register(
            "health_check_duration_seconds",
            "Duration of post-update verifications, by result (passed, failed)",
            health_duration.clone(),
        );
        let failed_health_checks = Family::<FailedHealthLabels, Counter>::default();
        r.register(
            "failed_health_checks",
            "Post-update verifications that failed",
            failed_health_checks.clone(),
        );

        let assets_tracked = Family::<InventoryLabels, Gauge>::default();
        r.register(
            "assets_tracked",
            "Assets in the inventory after the last scan",
            assets_tracked.clone(),
        );
        let pending_updates = Family::<PendingLabels, Gauge>::default();
        r.register(
            "pending_updates",
            "Updates decided but not yet applied, by what they wait for (status)",
            pending_updates.clone(),
        );
        let oldest_pending_approval = FloatGauge::default();
        r.register(
            "oldest_pending_approval_timestamp_seconds",
            "Unix time the oldest pending approval was requested; 0 when none waits",
            oldest_pending_approval.clone(),
        );
        let webhook_events = Family::<WebhookLabels, Counter>::default();
        r.register(
            "webhook_requests",
            "Registry push webhook requests, by source and status (accepted, unauthorized, invalid)",
            webhook_events.clone(),
        );

        let registry_requests = Family::<RegistryLabels, Counter>::default();
        r.register(
            "registry_requests",
            "HTTP requests sent to each registry (retries included)",
            registry_requests.clone(),
        );
        let registry_errors = Family::<RegistryLabels, Counter>::default();
        r.register(
            "registry_errors",
            "Registry requests that ended in an error after their retries, by registry",
            registry_errors.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        r.register(
            "notifications",
            "Notifications, by channel and result (delivered, failed, dropped)",
            notifications.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry: root,
                scans,
                scan_duration,
                last_successful_scan,
                attempted,
                succeeded,
                failed,
                rollbacks,
                update_duration,
                health_duration,
                failed_health_checks,
                assets_tracked,
                pending_updates,
                oldest_pending_approval,
                webhook_events,
                registry_requests,
                registry_errors,
                notifications,
                seen_inventory: Mutex::new(HashSet::new()),
                seen_pending: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Requests a cycle sent to `registry`, and how many of them ended in an error.
    pub fn registry_requests(&self, registry: &str, requests: u64, errors: u64) {
        let labels = RegistryLabels {
            registry: registry.to_owned(),
        };
        let i = &self.inner;
        i.registry_requests.get_or_create(&labels).inc_by(requests);
        i.registry_errors.get_or_create(&labels).inc_by(errors);
    }

    /// `count` more notifications to `channel` ended with `result` (`delivered`, `failed`,
    /// `dropped`).
    pub fn notifications(&self, channel: &str, result: &str, count: u64) {
        self.inner
            .notifications
            .get_or_create(&NotificationLabels {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc_by(count);
    }

    /// A discovery scan of one asset type ended.
    pub fn scan_finished(&self, asset_type: &str, duration: Duration, ok: bool) {
        let i = &self.inner;
        let status = if ok { "ok" } else { "error" };
        i.scans
            .get_or_create(&ScanLabels {
                asset_type: asset_type.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        let at = AssetTypeLabel {
            asset_type: asset_type.to_owned(),
        };
        i.scan_duration
            .get_or_create(&at)
            .observe(duration.as_secs_f64());
        if ok {
            i.last_successful_scan.get_or_create(&at).set(unix_now());
        }
    }

    /// An update started: the snapshot is committed and the first change is about to happen.
    pub fn update_attempted(&self, labels: &UpdateLabels) {
        self.inner.attempted.get_or_create(labels).inc();
    }

    /// An update ended. `RolledBack` and `Failed` both count as failed updates; a rollback is
    /// counted by [`Metrics::rollback`], which the caller reports when it restores.
    pub fn update_finished(
        &self,
        labels: &UpdateLabels,
        outcome: UpdateOutcome,
        duration: Duration,
    ) {
        let i = &self.inner;
        match outcome {
            UpdateOutcome::Succeeded => i.succeeded.get_or_create(labels).inc(),
            UpdateOutcome::RolledBack | UpdateOutcome::Failed => {
                i.failed.get_or_create(labels).inc()
            }
        };
        i.update_duration
            .get_or_create(&UpdateDurationLabels {
                asset_type: labels.asset_type.clone(),
                update_type: labels.update_type.clone(),
                status: outcome.as_str().to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A rollback ran; `ok` is false when restoring failed too.
    pub fn rollback(&self, asset_type: &str, namespace: &str, ok: bool) {
        self.inner
            .rollbacks
            .get_or_create(&RollbackLabels {
                asset_type: asset_type.to_owned(),
                namespace: namespace.to_owned(),
                status: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// A post-update verification ended.
    pub fn health_check_finished(
        &self,
        asset_type: &str,
        namespace: &str,
        duration: Duration,
        passed: bool,
    ) {
        let i = &self.inner;
        i.health_duration
            .get_or_create(&HealthLabels {
                asset_type: asset_type.to_owned(),
                status: if passed { "passed" } else { "failed" }.to_owned(),
            })
            .observe(duration.as_secs_f64());
        if !passed {
            i.failed_health_checks
                .get_or_create(&FailedHealthLabels {
                    asset_type: asset_type.to_owned(),
                    namespace: namespace.to_owned(),
                })
                .inc();
        }
    }

    /// The inventory after a scan: the count per asset type and namespace. Label sets that were
    /// set before and are absent now read 0.
    pub fn set_assets_tracked(&self, counts: impl IntoIterator<Item = (InventoryLabels, i64)>) {
        set_gauges(
            &self.inner.assets_tracked,
            &self.inner.seen_inventory,
            counts,
        );
    }

    /// The pending updates after a cycle. Label sets that were set before and are absent now
    /// read 0.
    pub fn set_pending_updates(&self, counts: impl IntoIterator<Item = (PendingLabels, i64)>) {
        set_gauges(
            &self.inner.pending_updates,
            &self.inner.seen_pending,
            counts,
        );
    }

    /// When the oldest pending approval was requested, or `None` when nothing waits.
    pub fn set_oldest_pending_approval(&self, requested_at: Option<SystemTime>) {
        let v = requested_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.inner.oldest_pending_approval.set(v);
    }

    pub(crate) fn webhook_request(&self, source: &str, status: &str) {
        self.inner
            .webhook_events
            .get_or_create(&WebhookLabels {
                source: source.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric, ending in `# EOF`.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// The same samples in the Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics (older Prometheus, `promtool check metrics`, plain `curl`).
    pub fn render_prometheus_text(&self) -> Result<String, std::fmt::Error> {
        Ok(openmetrics_to_prometheus_text(&self.render()?))
    }
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: a counter family `x` is
/// named `x_total` there (the sample name), an info family `x` becomes the gauge `x_info`,
/// `unknown` is `untyped`, and `# UNIT` and `# EOF` do not exist. Samples are identical.
fn openmetrics_to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // prometheus-client writes HELP before TYPE; the HELP line waits for the TYPE line that
    // decides the family's name in this format.
    let mut help: Option<(&str, &str)> = None;
    let mut counter = false;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                k => ("", k),
            };
            counter = kind == "counter";
            if let Some((hname, doc)) = help.take()
                && hname == name
            {
                out.push_str(&format!("# HELP {name}{suffix} {doc}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        // A counter's `_created` sample has no place in the 0.0.4 format.
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if counter && sample_name.ends_with("_created") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn set_gauges<L>(
    family: &Family<L, Gauge>,
    seen: &Mutex<HashSet<L>>,
    counts: impl IntoIterator<Item = (L, i64)>,
) where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    // A poisoned lock only means another thread panicked mid-update; the set is still usable.
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut now = HashSet::with_capacity(seen.len());
    for (labels, n) in counts {
        family.get_or_create(&labels).set(n);
        now.insert(labels);
    }
    for gone in seen.difference(&now) {
        family.get_or_create(gone).set(0);
    }
    // Keep the zeroed ones too: a series that dropped to 0 must stay at 0, not vanish and
    // come back, so rate() and absent() behave.
    seen.extend(now);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_gauges_zero_when_gone() {
        let m = Metrics::new();
        m.scan_finished("docker", Duration::from_millis(120), true);
        let l = UpdateLabels::new("docker", "local", "patch");
        m.update_attempted(&l);
        m.update_finished(&l, UpdateOutcome::Succeeded, Duration::from_secs(12));
        m.set_assets_tracked([(
            InventoryLabels {
                asset_type: "docker".into(),
                namespace: "local".into(),
            },
            3,
        )]);
        m.set_assets_tracked([]);
        let text = m.render().expect("render");
        assert!(
            text.contains("safe_updater_scans_total{asset_type=\"docker\",status=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "safe_updater_updates_succeeded_total{asset_type=\"docker\",namespace=\"local\",update_type=\"patch\"} 1"
        ));
        assert!(
            text.contains(
                "safe_updater_assets_tracked{asset_type=\"docker\",namespace=\"local\"} 0"
            )
        );
        assert!(text.contains("safe_updater_build_info{version="));
        assert!(text.ends_with("# EOF\n"));
    }
}
