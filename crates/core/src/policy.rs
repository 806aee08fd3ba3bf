//! Update policy: gates per change class, cooldowns, windows, pins and tag filters, and the
//! hierarchy that resolves them for one asset: built-in defaults → `policy` (global) →
//! `namespaces.<name>` → every matching `resources[]` entry in file order → the resource's own
//! labels → its annotations. The last layer that sets a field wins, and every resolved field
//! remembers the rule that set it, so a decision can say *why*.
//!
//! This module holds compiled, validated policy only. Reading YAML is `config.rs`'s job;
//! deciding about versions is `decide.rs`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::asset::AssetKind;
use crate::constraint::Constraint;
use crate::tag::{CustomPattern, Scheme};

/// What happens to an update of a given change class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Proceeds by itself (inside windows, after the cooldown).
    Auto,
    /// Waits for an approval (CLI, API or UI), then proceeds.
    Review,
    /// Never runs by itself; only an operator starts it.
    Manual,
    /// Ignored: not proposed at all.
    Skip,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Auto => "auto",
            Gate::Review => "review",
            Gate::Manual => "manual",
            Gate::Skip => "skip",
        }
    }

    pub fn parse(s: &str) -> Option<Gate> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Gate::Auto),
            "review" => Some(Gate::Review),
            "manual" => Some(Gate::Manual),
            "skip" => Some(Gate::Skip),
            _ => None,
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classes a gate is configured for. A `build` change (a new `-rN` revision or build
/// metadata of the same version) is gated as `patch`: it is a rebuild of what already runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateClass {
    Patch,
    Minor,
    Major,
    Prerelease,
    Digest,
}

impl GateClass {
    pub const ALL: [GateClass; 5] = [
        GateClass::Patch,
        GateClass::Minor,
        GateClass::Major,
        GateClass::Prerelease,
        GateClass::Digest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateClass::Patch => "patch",
            GateClass::Minor => "minor",
            GateClass::Major => "major",
            GateClass::Prerelease => "prerelease",
            GateClass::Digest => "digest",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to do when an update fails its health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Restore the snapshot taken before the update.
    Rollback,
    /// Leave the new version in place, alert, and stop updating the asset: for services whose
    /// migrations cannot be undone, where rolling back would do more harm.
    Freeze,
}

impl OnFailure {
    pub fn parse(s: &str) -> Option<OnFailure> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rollback" => Some(OnFailure::Rollback),
            "freeze" => Some(OnFailure::Freeze),
            _ => None,
        }
    }
}

/// Whether a tag's variant must match exactly (`alpine3.20` only) or by name (`alpine*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantMatch {
    Exact,
    Loose,
}

impl VariantMatch {
    pub fn parse(s: &str) -> Option<VariantMatch> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exact" => Some(VariantMatch::Exact),
            "loose" => Some(VariantMatch::Loose),
            _ => None,
        }
    }
}

/// A weekly update window in a time zone. `end` not after `start` means the window runs past
/// midnight (`22:00`–`04:00`); `start == end` means the whole day.
#[derive(Debug, Clone)]
pub struct Window {
    pub days: [bool; 7],
    pub start: Time,
    pub end: Time,
    pub tz: TimeZone,
    pub tz_name: String,
    /// A cron window instead: open for `duration` after each time the expression fires (in
    /// `tz`); `days`, `start` and `end` are then unused.
    pub cron: Option<CronWindow>,
}

/// `cron: "0 2 * * SAT"` with `duration: 3h`.
#[derive(Debug, Clone)]
pub struct CronWindow {
    pub expr: String,
    pub cron: croner::Cron,
    pub duration: Duration,
}

/// The longest cron window: windows are scanned minute by minute.
pub const MAX_CRON_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl CronWindow {
    pub fn parse(expr: &str, duration: Duration) -> Result<CronWindow, String> {
        use std::str::FromStr as _;
        if duration.is_zero() || duration > MAX_CRON_WINDOW {
            return Err("the duration of a cron window must be between 1m and 7d".into());
        }
        let cron = croner::Cron::from_str(expr.trim())
            .map_err(|e| format!("'{}' is not a cron expression: {e}", expr.trim()))?;
        Ok(CronWindow {
            expr: expr.trim().to_owned(),
            cron,
            duration,
        })
    }

    /// Whether the expression fires at the minute `t` falls in, read in `tz`.
    fn fires_at(&self, t: Timestamp, tz: &TimeZone) -> bool {
        let zoned = t.to_zoned(tz.clone());
        let Some(offset) = chrono::FixedOffset::east_opt(zoned.offset().seconds()) else {
            return false;
        };
        let dt = zoned.datetime();
        let Some(naive) = chrono::NaiveDate::from_ymd_opt(
            i32::from(dt.year()),
            u32::try_from(dt.month()).unwrap_or(1),
            u32::try_from(dt.day()).unwrap_or(1),
        )
        .and_then(|d| {
            d.and_hms_opt(
                u32::try_from(dt.hour()).unwrap_or(0),
                u32::try_from(dt.minute()).unwrap_or(0),
                0,
            )
        }) else {
            return false;
        };
        let Some(local) = naive.and_local_timezone(offset).single() else {
            return false;
        };
        self.cron.is_time_matching(&local).unwrap_or(false)
    }

    /// The start of the firing this window is open for at `now`, if any.
    fn open_since(&self, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let minute = now.as_second().div_euclid(60) * 60;
        let minutes = self.duration.as_secs().div_ceil(60);
        (0..minutes.max(1)).find_map(|back| {
            let at = Timestamp::from_second(minute - i64::try_from(back).ok()? * 60).ok()?;
            let open = now.duration_since(at).unsigned_abs() < self.duration;
            (open && self.fires_at(at, tz)).then_some(at)
        })
    }
}

fn weekday_index(w: Weekday) -> usize {
    usize::try_from(w.to_monday_zero_offset()).unwrap_or(0)
}

impl Window {
    /// Whether `now` falls inside this window.
    pub fn contains(&self, now: Timestamp) -> bool {
        if let Some(c) = &self.cron {
            return c.open_since(now, &self.tz).is_some();
        }
        let local = now.to_zoned(self.tz.clone());
        let t = local.time();
        let day = weekday_index(local.weekday());
        let prev = (day + 6) % 7;
        if self.start == self.end {
            return self.days[day];
        }
        if self.start < self.end {
            self.days[day] && self.start <= t && t < self.end
        } else {
            (self.days[day] && t >= self.start) || (self.days[prev] && t < self.end)
        }
    }

    /// The next moment at or after `now` when the window is open.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.contains(now) {
            return Some(now);
        }
        if let Some(c) = &self.cron {
            let first = now.as_second().div_euclid(60) * 60 + 60;
            return (0..MAX_CRON_WINDOW.as_secs() / 60).find_map(|i| {
                let at = Timestamp::from_second(first + i64::try_from(i).ok()? * 60).ok()?;
                c.fires_at(at, &self.tz).then_some(at)
            });
        }
        let today = now.to_zoned(self.tz.clone()).date();
        for offset in 0..=7i64 {
            let date = today.checked_add(jiff::Span::new().days(offset)).ok()?;
            if !self.days[weekday_index(date.weekday())] {
                continue;
            }
            let open = date
                .to_datetime(self.start)
                .to_zoned(self.tz.clone())
                .ok()?
                .timestamp();
            if open > now {
                return Some(open);
            }
        }
        None
    }
}

/// A resolved setting and the rule that produced it (`default.patch`, `global.min_age`,
/// `namespace.prod.minor`, `resource.payments-db.on_failure`, `label:safe-updater.io/major`).
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub rule: Rule,
}

/// The name of a rule. Shared, not copied: every asset's resolved policy points at the same
/// few strings, and resolving runs once per asset per cycle.
pub type Rule = Arc<str>;

impl<T> Setting<T> {
    fn new(value: T, rule: impl Into<Rule>) -> Setting<T> {
        Setting {
            value,
            rule: rule.into(),
        }
    }
}

/// One layer of the hierarchy, every field optional.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub enabled: Option<Setting<bool>>,
    pub gates: [Option<Setting<Gate>>; 5],
    pub min_age: Option<Setting<Duration>>,
    pub on_failure: Option<Setting<OnFailure>>,
    pub variant: Option<Setting<VariantMatch>>,
    pub windows: Option<Setting<Arc<Vec<Window>>>>,
    pub constraint: Option<Setting<Constraint>>,
    pub include: Option<Setting<Arc<Vec<Regex>>>>,
    pub exclude: Option<Setting<Arc<Vec<Regex>>>>,
    pub versioning: Option<Setting<Scheme>>,
}

impl Layer {
    pub fn set_gate(&mut self, class: GateClass, gate: Gate, rule: impl Into<Rule>) {
        self.gates[class.index()] = Some(Setting::new(gate, rule));
    }
}

/// Which resources a `resources[]` entry applies to. Every given criterion must match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub kind: Option<AssetKind>,
    pub namespace: Option<Regex>,
    pub name: Option<Regex>,
    pub labels: BTreeMap<String, String>,
}

impl Matcher {
    pub fn matches(&self, asset: &AssetView<'_>) -> bool {
        if self.kind.is_some_and(|k| k != asset.kind) {
            return false;
        }
        if let Some(ns) = &self.namespace
            && !ns.is_match(asset.namespace.unwrap_or(""))
        {
            return false;
        }
        if let Some(name) = &self.name
            && !name.is_match(asset.name)
        {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| asset.labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// Turns a shell-style glob (`payments-*`, `web-?`) into an anchored regex.
pub fn glob_regex(glob: &str) -> Result<Regex, regex::Error> {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re)
}

/// The compiled policy of a whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub global: Layer,
    pub namespaces: BTreeMap<String, Layer>,
    pub resources: Vec<(Matcher, Layer)>,
}

/// The facts about an asset that policy resolution looks at.
#[derive(Debug, Clone, Copy)]
pub struct AssetView<'a> {
    pub kind: AssetKind,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
}

/// The policy in force for one asset, every field with its rule.
#[derive(Debug, Clone)]
pub struct EffectivePolicy {
    pub enabled: Setting<bool>,
    pub gates: [Setting<Gate>; 5],
    pub min_age: Setting<Duration>,
    pub on_failure: Setting<OnFailure>,
    pub variant: Setting<VariantMatch>,
    pub windows: Setting<Arc<Vec<Window>>>,
    pub constraint: Option<Setting<Constraint>>,
    pub include: Option<Setting<Arc<Vec<Regex>>>>,
    pub exclude: Option<Setting<Arc<Vec<Regex>>>>,
    pub versioning: Setting<Scheme>,
    /// Labels or annotations on the resource that could not be understood. While any exist,
    /// nothing proceeds automatically for this asset.
    pub problems: Vec<String>,
}

impl EffectivePolicy {
    pub fn gate(&self, class: GateClass) -> &Setting<Gate> {
        &self.gates[class.index()]
    }
}

/// The safe defaults: patch auto, minor review, major manual, prerelease skip, digest review
/// (a re-pushed tag is a change nobody versioned, so a person looks first).
pub fn defaults() -> EffectivePolicy {
    static DEFAULTS: std::sync::LazyLock<EffectivePolicy> =
        std::sync::LazyLock::new(build_defaults);
    DEFAULTS.clone()
}

fn build_defaults() -> EffectivePolicy {
    let d = |f: &str| format!("default.{f}");
    EffectivePolicy {
        enabled: Setting::new(true, d("enabled")),
        gates: [
            Setting::new(Gate::Auto, d("patch")),
            Setting::new(Gate::Review, d("minor")),
            Setting::new(Gate::Manual, d("major")),
            Setting::new(Gate::Skip, d("prerelease")),
            Setting::new(Gate::Review, d("digest")),
        ],
        min_age: Setting::new(Duration::ZERO, d("min_age")),
        on_failure: Setting::new(OnFailure::Rollback, d("on_failure")),
        variant: Setting::new(VariantMatch::Exact, d("variant")),
        windows: Setting::new(Arc::new(Vec::new()), d("windows")),
        constraint: None,
        include: None,
        exclude: None,
        versioning: Setting::new(Scheme::Auto, d("versioning")),
        problems: Vec::new(),
    }
}

fn apply(eff: &mut EffectivePolicy, layer: &Layer) {
    fn over<T: Clone>(dst: &mut Setting<T>, src: &Option<Setting<T>>) {
        if let Some(s) = src {
            *dst = s.clone();
        }
    }
    fn over_opt<T: Clone>(dst: &mut Option<Setting<T>>, src: &Option<Setting<T>>) {
        if let Some(s) = src {
            *dst = Some(s.clone());
        }
    }
    over(&mut eff.enabled, &layer.enabled);
    for (dst, src) in eff.gates.iter_mut().zip(layer.gates.iter()) {
        over(dst, src);
    }
    over(&mut eff.min_age, &layer.min_age);
    over(&mut eff.on_failure, &layer.on_failure);
    over(&mut eff.variant, &layer.variant);
    over(&mut eff.windows, &layer.windows);
    over_opt(&mut eff.constraint, &layer.constraint);
    over_opt(&mut eff.include, &layer.include);
    over_opt(&mut eff.exclude, &layer.exclude);
    over(&mut eff.versioning, &layer.versioning);
}

/// The prefix of every label and annotation key safe-updater reads.
pub const KEY_PREFIX: &str = "safe-updater.io/";

/// The label/annotation keys (after [`KEY_PREFIX`]) and what they set.
pub const RESOURCE_KEYS: &[(&str, &str)] = &[
    (
        "enabled",
        "`true` or `false`: whether the asset is updated at all",
    ),
    (
        "patch",
        "gate for patch updates: auto, review, manual or skip",
    ),
    ("minor", "gate for minor updates"),
    ("major", "gate for major updates"),
    ("prerelease", "gate for updates onto a prerelease"),
    ("digest", "gate for a new digest behind the same tag"),
    (
        "constraint",
        "version constraint (pin), Helm syntax, e.g. `~1.27` or `>=1.2 <2`",
    ),
    ("include", "regular expression a candidate tag must match"),
    (
        "exclude",
        "regular expression a candidate tag must not match",
    ),
    (
        "versioning",
        "`auto`, `semver`, or a regex with a `version` named group",
    ),
    (
        "min-age",
        "cooldown before a new release may be applied, e.g. `48h`",
    ),
    ("on-failure", "`rollback` or `freeze`"),
    ("variant", "`exact` or `loose` matching of tag variants"),
    (
        "health-url",
        "HTTP health check after an update, e.g. `http://{container_ip}:8080/health`",
    ),
    (
        "health-tcp",
        "TCP health check: a port of the container (`5432`) or `host:port`",
    ),
    (
        "health-exec",
        "command run in the container that must exit 0, e.g. `pg_isready -q`",
    ),
    (
        "pre-update",
        "command (sh -c) run in the old container before it stops; exit 75 skips the update",
    ),
    (
        "post-update",
        "command (sh -c) run in the new container once started; failing rolls back",
    ),
    (
        "pre-update-timeout",
        "minutes for the pre-update command (0: none)",
    ),
    (
        "post-update-timeout",
        "minutes for the post-update command (0: none)",
    ),
    (
        "check-interval",
        "check this asset at most this often under `watch`, e.g. `6h`",
    ),
    (
        "priority",
        "update order under `watch`: higher first (default 0)",
    ),
];

/// Watchtower's labels, honoured so that its users can switch without relabelling.
pub const WATCHTOWER_ENABLE: &str = "com.centurylinklabs.watchtower.enable";
pub const WATCHTOWER_MONITOR_ONLY: &str = "com.centurylinklabs.watchtower.monitor-only";

/// Parses the `versioning` setting shared by the config file and labels.
pub fn parse_versioning(s: &str) -> Result<Scheme, String> {
    match s.trim() {
        "" | "auto" => Ok(Scheme::Auto),
        "semver" => Ok(Scheme::SemVer),
        pattern => CustomPattern::new(pattern)
            .map(Scheme::Custom)
            .map_err(|e| e.to_string()),
    }
}

/// Parses a human duration (`48h`, `30m`, `2d`, `0`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    // humantime's own message points at a byte offset, which helps nobody reading a config.
    humantime::parse_duration(t)
        .map_err(|_| format!("'{t}' is not a duration; write it like 30m, 48h or 7d"))
}

/// Builds the layer a resource's labels (or annotations) define. Unknown keys under our
/// prefix and bad values are reported, never ignored silently.
pub fn resource_layer(source: &str, map: &BTreeMap<String, String>) -> (Layer, Vec<String>) {
    let mut layer = Layer::default();
    let mut problems = Vec::new();
    for (key, value) in map {
        let Some(field) = key.strip_prefix(KEY_PREFIX) else {
            continue;
        };
        let rule = format!("{source}:{key}");
        let bad = |what: &str| format!("{source} {key}={value:?}: {what}");
        match field {
            "enabled" => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => layer.enabled = Some(Setting::new(true, rule)),
                "false" | "no" | "0" => layer.enabled = Some(Setting::new(false, rule)),
                _ => problems.push(bad("expected true or false")),
            },
            "patch" | "minor" | "major" | "prerelease" | "digest" => {
                let class = match field {
                    "patch" => GateClass::Patch,
                    "minor" => GateClass::Minor,
                    "major" => GateClass::Major,
                    "prerelease" => GateClass::Prerelease,
                    _ => GateClass::Digest,
                };
                match Gate::parse(value) {
                    Some(g) => layer.set_gate(class, g, rule),
                    None => problems.push(bad("expected auto, review, manual or skip")),
                }
            }
            "constraint" => match Constraint::parse(value) {
                Ok(c) => layer.constraint = Some(Setting::new(c, rule)),
                Err(e) => problems.push(bad(&e.to_string())),
            },
            "include" | "exclude" => match Regex::new(value) {
                Ok(re) => {
                    let s = Some(Setting::new(Arc::new(vec![re]), rule));
                    if field == "include" {
                        layer.include = s;
                    } else {
                        layer.exclude = s;
                    }
                }
                Err(e) => problems.push(bad(&format!("invalid regular expression: {e}"))),
            },
            "versioning" => match parse_versioning(value) {
                Ok(s) => layer.versioning = Some(Setting::new(s, rule)),
                Err(e) => problems.push(bad(&e)),
            },
            "min-age" => match parse_duration(value) {
                Ok(d) => layer.min_age = Some(Setting::new(d, rule)),
                Err(e) => problems.push(bad(&e)),
            },
            "on-failure" => match OnFailure::parse(value) {
                Some(o) => layer.on_failure = Some(Setting::new(o, rule)),
                None => problems.push(bad("expected rollback or freeze")),
            },
            // Read by the executor when it verifies an update, not by policy.
            "health-url"
            | "health-tcp"
            | "health-exec"
            | "pre-update"
            | "post-update"
            | "pre-update-timeout"
            | "post-update-timeout" => {}
            // Read by the daemon's scheduler.
            "check-interval" => {
                if let Err(e) = parse_duration(value) {
                    problems.push(bad(&e));
                }
            }
            "priority" => {
                if value.trim().parse::<i64>().is_err() {
                    problems.push(bad("expected a whole number; higher goes first"));
                }
            }
            "variant" => match VariantMatch::parse(value) {
                Some(v) => layer.variant = Some(Setting::new(v, rule)),
                None => problems.push(bad("expected exact or loose")),
            },
            _ => problems.push(format!(
                "{source} {key}: unknown key; known keys are {}",
                RESOURCE_KEYS
                    .iter()
                    .map(|(k, _)| format!("{KEY_PREFIX}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    (layer, problems)
}

/// Watchtower's opt-out and monitor-only labels as a policy layer (below our own labels, so
/// `safe-updater.io/*` still wins): `enable=false` disables updates; `monitor-only=true`
/// makes every gate `manual` — reported, never applied by itself.
fn watchtower_layer(labels: &BTreeMap<String, String>) -> Layer {
    let mut layer = Layer::default();
    let is = |k: &str, v: &str| {
        labels
            .get(k)
            .is_some_and(|x| x.trim().eq_ignore_ascii_case(v))
    };
    // `true` matters for Watchtower's opt-in mode (`--label-enable`), which here is
    // `policy.enabled: false` globally: only containers labelled enable=true are then updated.
    if is(WATCHTOWER_ENABLE, "false") {
        layer.enabled = Some(Setting::new(false, format!("label:{WATCHTOWER_ENABLE}")));
    } else if is(WATCHTOWER_ENABLE, "true") {
        layer.enabled = Some(Setting::new(true, format!("label:{WATCHTOWER_ENABLE}")));
    }
    if is(WATCHTOWER_MONITOR_ONLY, "true") {
        for class in GateClass::ALL {
            layer.set_gate(
                class,
                Gate::Manual,
                format!("label:{WATCHTOWER_MONITOR_ONLY}"),
            );
        }
    }
    layer
}

impl<'a> From<&'a crate::asset::Asset> for AssetView<'a> {
    fn from(a: &'a crate::asset::Asset) -> Self {
        AssetView {
            kind: a.kind,
            namespace: a.namespace.as_deref(),
            name: &a.name,
            labels: Some(&a.labels),
            annotations: Some(&a.annotations),
        }
    }
}

impl Policy {
    /// Resolves the policy for a tracked asset (its kind, namespace, name, labels, annotations).
    pub fn resolve_asset(&self, asset: &crate::asset::Asset) -> EffectivePolicy {
        self.resolve(&AssetView::from(asset))
    }

    /// Resolves the policy for one asset through the whole hierarchy.
    pub fn resolve(&self, asset: &AssetView<'_>) -> EffectivePolicy {
        let mut eff = defaults();
        apply(&mut eff, &self.global);
        if let Some(ns) = asset.namespace
            && let Some(layer) = self.namespaces.get(ns)
        {
            apply(&mut eff, layer);
        }
        for (matcher, layer) in &self.resources {
            if matcher.matches(asset) {
                apply(&mut eff, layer);
            }
        }
        if let Some(labels) = asset.labels {
            apply(&mut eff, &watchtower_layer(labels));
        }
        for (source, map) in [("label", asset.labels), ("annotation", asset.annotations)] {
            if let Some(map) = map {
                let (layer, problems) = resource_layer(source, map);
                apply(&mut eff, &layer);
                eff.problems.extend(problems);
            }
        }
        eff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &str, start: &str, end: &str, tz: &str) -> Window {
        let mut d = [false; 7];
        for (i, name) in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .enumerate()
        {
            d[i] = days.contains(name);
        }
        Window {
            days: d,
            start: start.parse().unwrap_or_else(|e| panic!("{e}")),
            end: end.parse().unwrap_or_else(|e| panic!("{e}")),
            tz: TimeZone::get(tz).unwrap_or_else(|e| panic!("{e}")),
            tz_name: tz.to_owned(),
            cron: None,
        }
    }

    fn cron_window(expr: &str, duration: &str, tz: &str) -> Window {
        Window {
            cron: Some(
                CronWindow::parse(
                    expr,
                    parse_duration(duration).unwrap_or_else(|e| panic!("{e}")),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            ..window("", "00:00", "00:00", tz)
        }
    }

    #[test]
    fn cron_windows_open_for_their_duration_in_their_time_zone() {
        // Saturdays 02:00 for 3 hours, Berlin time (UTC+1 in November).
        let w = cron_window("0 2 * * SAT", "3h", "Europe/Berlin");
        assert!(!w.contains(ts("2026-11-28T00:59:00Z")), "01:59 Berlin");
        assert!(w.contains(ts("2026-11-28T01:00:00Z")), "02:00 Berlin");
        assert!(w.contains(ts("2026-11-28T03:59:59Z")), "04:59 Berlin");
        assert!(
            !w.contains(ts("2026-11-28T04:00:00Z")),
            "05:00 Berlin: closed"
        );
        assert!(!w.contains(ts("2026-11-27T01:30:00Z")), "a Friday");
        assert_eq!(
            w.next_open(ts("2026-11-22T07:00:00Z")),
            Some(ts("2026-11-28T01:00:00Z"))
        );
        // Every 15 minutes, open 5 minutes.
        let w = cron_window("*/15 * * * *", "5m", "UTC");
        assert!(w.contains(ts("2026-11-22T10:31:00Z")));
        assert!(!w.contains(ts("2026-11-22T10:36:00Z")));
        assert!(CronWindow::parse("61 * * * *", std::time::Duration::from_secs(60)).is_err());
        assert!(CronWindow::parse("* * * * *", std::time::Duration::ZERO).is_err());
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn windows_respect_days_hours_and_zones() {
        // 2026-11-21 is a Saturday.
        let w = window("sat,sun", "02:00", "05:00", "Europe/Berlin");
        assert!(w.contains(ts("2026-11-21T02:30:00Z"))); // 03:30 in Berlin
        assert!(!w.contains(ts("2026-11-21T04:30:00Z"))); // 05:30 in Berlin
        assert!(!w.contains(ts("2026-11-20T02:30:00Z"))); // a Friday
        assert_eq!(
            w.next_open(ts("2026-11-20T12:00:00Z")),
            Some(ts("2026-11-21T01:00:00Z"))
        );
    }

    #[test]
    fn windows_past_midnight_belong_to_the_day_they_start() {
        let w = window("fri", "22:00", "04:00", "UTC");
        assert!(w.contains(ts("2026-11-20T23:00:00Z"))); // Friday night
        assert!(w.contains(ts("2026-11-21T03:59:00Z"))); // early Saturday
        assert!(!w.contains(ts("2026-11-21T23:00:00Z"))); // Saturday night
        assert!(!w.contains(ts("2026-11-20T03:00:00Z"))); // early Friday (Thursday's night)
    }

    #[test]
    fn labels_override_config_and_bad_labels_are_problems() {
        let mut policy = Policy::default();
        policy
            .global
            .set_gate(GateClass::Minor, Gate::Auto, "global.minor");
        let labels: BTreeMap<String, String> = [
            ("safe-updater.io/minor".to_owned(), "manual".to_owned()),
            ("safe-updater.io/major".to_owned(), "sometimes".to_owned()),
            ("app".to_owned(), "web".to_owned()),
        ]
        .into();
        let view = AssetView {
            kind: AssetKind::Deployment,
            namespace: Some("prod"),
            name: "web",
            labels: Some(&labels),
            annotations: None,
        };
        let eff = policy.resolve(&view);
        assert_eq!(eff.gate(GateClass::Minor).value, Gate::Manual);
        assert_eq!(
            &*eff.gate(GateClass::Minor).rule,
            "label:safe-updater.io/minor"
        );
        assert_eq!(&*eff.gate(GateClass::Patch).rule, "default.patch");
        assert_eq!(eff.problems.len(), 1, "{:?}", eff.problems);
    }

    #[test]
    fn watchtower_labels_are_honoured_below_ours() {
        let policy = Policy::default();
        let labels: BTreeMap<String, String> = [
            (WATCHTOWER_MONITOR_ONLY.to_owned(), "true".to_owned()),
            ("safe-updater.io/patch".to_owned(), "auto".to_owned()),
        ]
        .into();
        let view = AssetView {
            kind: AssetKind::Container,
            namespace: None,
            name: "web",
            labels: Some(&labels),
            annotations: None,
        };
        let eff = policy.resolve(&view);
        assert_eq!(eff.gate(GateClass::Minor).value, Gate::Manual);
        assert_eq!(
            &*eff.gate(GateClass::Minor).rule,
            format!("label:{WATCHTOWER_MONITOR_ONLY}").as_str()
        );
        assert_eq!(
            eff.gate(GateClass::Patch).value,
            Gate::Auto,
            "our own label wins"
        );
        let labels: BTreeMap<String, String> =
            [(WATCHTOWER_ENABLE.to_owned(), "false".to_owned())].into();
        let view = AssetView {
            labels: Some(&labels),
            ..view
        };
        assert!(!policy.resolve(&view).enabled.value);

        // Opt-in (Watchtower's --label-enable): disabled globally, enabled by the label.
        let mut opt_in = Policy::default();
        opt_in.global.enabled = Some(Setting::new(false, "global"));
        let plain = AssetView {
            labels: None,
            ..view
        };
        assert!(!opt_in.resolve(&plain).enabled.value);
        let labels: BTreeMap<String, String> =
            [(WATCHTOWER_ENABLE.to_owned(), "true".to_owned())].into();
        let labelled = AssetView {
            labels: Some(&labels),
            ..view
        };
        let eff = opt_in.resolve(&labelled);
        assert!(eff.enabled.value);
        assert_eq!(
            &*eff.enabled.rule,
            format!("label:{WATCHTOWER_ENABLE}").as_str()
        );
    }

    #[test]
    fn globs() {
        let re = glob_regex("payments-*").unwrap_or_else(|e| panic!("{e}"));
        assert!(re.is_match("payments-db"));
        assert!(!re.is_match("xpayments-db"));
        assert!(glob_regex("a.b").is_ok_and(|r| !r.is_match("axb")));
    }
}
