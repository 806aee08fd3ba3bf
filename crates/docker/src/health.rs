//! Health verification of a (new) container over a window: its own Docker HEALTHCHECK, HTTP,
//! TCP and exec probes, plus the container staying up without restarts.
//!
//! [`monitor`] watches one container for [`Monitor::window`] and answers with a
//! [`HealthReport`]: every observation made, and whether the container counts as healthy.
//! Rules: a container that exits or restarts during the window fails at once; Docker
//! `unhealthy` fails at once; `starting` is not yet success; other checks fail after
//! [`Monitor::failure_threshold`] consecutive failures; at the end of the window every check's
//! last observation must have succeeded. With no checks and no HEALTHCHECK, running for the
//! whole window without a restart is the check.
//!
//! This module only observes. It must not stop, restart or roll back anything (that is
//! [`crate::update`], driven by the engine), and it never logs credentials of HTTP checks.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use futures_util::StreamExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use safe_updater_core::redact;

use crate::engine::Engine;

/// What the Docker check observes of a container whose image has no HEALTHCHECK.
const NO_HEALTHCHECK: &str =
    "no HEALTHCHECK (none in the image, or disabled): staying up and the other checks decide";

/// How much captured output or body an observation keeps.
const DETAIL_LIMIT: usize = 512;

/// One way to tell whether a container works.
#[derive(Debug, Clone)]
pub enum Check {
    /// The container's own HEALTHCHECK status.
    Docker,
    Http(HttpCheck),
    Tcp(TcpCheck),
    Exec(ExecCheck),
}

impl Check {
    /// A short name for observations: `docker`, `http GET <url>`, `tcp host:port`, `exec cmd`.
    pub fn label(&self) -> String {
        match self {
            Check::Docker => "docker".to_owned(),
            // The URL may carry a password or a token: never shown.
            Check::Http(h) => format!("http {} {}", h.method, redact::url(&h.url)),
            Check::Tcp(t) => format!("tcp {}:{}", t.host, t.port),
            Check::Exec(e) => format!("exec {}", e.cmd.join(" ")),
        }
    }
}

/// An HTTP request and what its answer must be.
///
/// `url` may contain placeholders, resolved from the container at each probe:
/// `{container_ip}` (its address on its first network, bracketed if IPv6),
/// `{host_port:8080/tcp}` (the host port published for that container port) and
/// `{host_ip:8080/tcp}` (the address it is published on; `0.0.0.0`/`::` become loopback).
#[derive(Clone)]
pub struct HttpCheck {
    pub url: String,
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub expected_status: RangeInclusive<u16>,
    /// A string the body must contain.
    pub body_contains: Option<String>,
    pub timeout: Duration,
    /// Whether to verify the server's certificate (`https://` only).
    pub tls_verify: bool,
    /// PEM certificates to trust instead of the platform's roots.
    pub ca_file: Option<PathBuf>,
    pub follow_redirects: bool,
    pub basic_auth: Option<(String, String)>,
}

impl HttpCheck {
    /// `GET url`, expecting 200–299, 5 s timeout, verified TLS, redirects followed.
    pub fn get(url: impl Into<String>) -> HttpCheck {
        HttpCheck {
            url: url.into(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            expected_status: 200..=299,
            body_contains: None,
            timeout: Duration::from_secs(5),
            tls_verify: true,
            ca_file: None,
            follow_redirects: true,
            basic_auth: None,
        }
    }
}

impl fmt::Debug for HttpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCheck")
            .field("url", &redact::url(&self.url))
            .field("method", &self.method)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("expected_status", &self.expected_status)
            .field("body_contains", &self.body_contains)
            .field("timeout", &self.timeout)
            .field("tls_verify", &self.tls_verify)
            .field("ca_file", &self.ca_file)
            .field("follow_redirects", &self.follow_redirects)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish()
    }
}

/// A TCP connection that must be accepted. `host` is an IPv4 or IPv6 address (brackets
/// optional), a name, or `{container_ip}`.
#[derive(Debug, Clone)]
pub struct TcpCheck {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
}

/// A command run inside the container (`docker exec`) that must exit with `expect_exit` (and
/// print `output_contains`, when set). On timeout the check fails; the engine offers no way to kill the command, which keeps
/// running inside the container until it ends.
#[derive(Debug, Clone)]
pub struct ExecCheck {
    pub cmd: Vec<String>,
    pub timeout: Duration,
    pub expect_exit: i64,
    pub output_contains: Option<String>,
}

/// How soon to probe again after a failure: `initial`, doubling per consecutive failure, at
/// most `max` (and never later than the regular interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// How to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitor {
    /// How long to watch (default 5 minutes).
    pub window: Duration,
    /// Time between rounds of probes while all is well.
    pub interval: Duration,
    /// Consecutive failures of one check that fail the update (at least 1).
    pub failure_threshold: u32,
    /// Time between rounds after a failure.
    pub retries_backoff: Backoff,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            window: Duration::from_secs(300),
            interval: Duration::from_secs(10),
            failure_threshold: 3,
            retries_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(10),
            },
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub at: Timestamp,
    /// [`Check::label`], or `container` for the running/restart observation.
    pub check: String,
    pub ok: bool,
    /// What was seen: status, health, exit code and captured output (truncated).
    pub detail: String,
}

/// What [`monitor`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// One sentence: why healthy or not.
    pub reason: String,
    pub observations: Vec<Observation>,
}

/// The container facts a round needs.
struct Seen {
    running: bool,
    restarting: bool,
    status: String,
    exit_code: i64,
    started_at: String,
    restart_count: i64,
    health: Option<HealthStatusEnum>,
    has_healthcheck: bool,
}

fn seen(c: &ContainerInspectResponse) -> Seen {
    let state = c.state.clone().unwrap_or_default();
    Seen {
        running: state.running == Some(true),
        restarting: state.restarting == Some(true),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        exit_code: state.exit_code.unwrap_or(0),
        started_at: state.started_at.unwrap_or_default(),
        restart_count: c.restart_count.unwrap_or(0),
        health: state.health.and_then(|h| h.status),
        has_healthcheck: c
            .config
            .as_ref()
            .and_then(|cfg| cfg.healthcheck.as_ref())
            .and_then(|h| h.test.as_ref())
            .is_some_and(|t| !t.is_empty() && t[0] != "NONE"),
    }
}

fn observation(check: &str, ok: bool, detail: impl Into<String>) -> Observation {
    Observation {
        at: Timestamp::now(),
        check: check.to_owned(),
        ok,
        detail: detail.into(),
    }
}

fn report(healthy: bool, reason: String, observations: Vec<Observation>) -> HealthReport {
    HealthReport {
        healthy,
        reason,
        observations,
    }
}

/// Where a health window stands after a round of probes that did not end it, for progress on
/// a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// 1 for the first round.
    pub number: u32,
    /// The rounds the window holds when every round passes (failures add retries).
    pub planned: u32,
    pub elapsed: Duration,
    pub window: Duration,
    pub ok: bool,
    /// The round's result in a few words: its first failure, or its last observation.
    pub last: String,
}

impl Monitor {
    fn planned_rounds(&self) -> u32 {
        let interval = self.interval.as_millis().max(1);
        let rounds = self.window.as_millis().div_ceil(interval) + 1;
        u32::try_from(rounds).unwrap_or(u32::MAX)
    }
}

/// Watches `container_id` for `m.window` with `checks` (see the module docs for the rules).
pub async fn monitor(
    engine: &Engine,
    container_id: &str,
    checks: &[Check],
    m: &Monitor,
) -> HealthReport {
    monitor_observed(engine, container_id, checks, m, &|_| {}).await
}

/// [`monitor`], telling `on_round` where the window stands after each round it survives.
pub async fn monitor_observed(
    engine: &Engine,
    container_id: &str,
    checks: &[Check],
    m: &Monitor,
    on_round: &(dyn Fn(&Round) + Send + Sync),
) -> HealthReport {
    let began = tokio::time::Instant::now();
    let deadline = began + m.window;
    let planned = m.planned_rounds();
    let mut number: u32 = 0;
    let threshold = m.failure_threshold.max(1);
    let mut observations = Vec::new();
    let mut baseline: Option<(String, i64)> = None;
    let mut implicit: Vec<Check> = Vec::new();
    let mut failures: Vec<u32> = Vec::new();
    let mut last_ok: Vec<bool> = Vec::new();
    let mut round_failures: u32 = 0;
    loop {
        let inspect = match engine.docker().inspect_container(container_id, None).await {
            Ok(i) => i,
            Err(e) => {
                observations.push(observation("container", false, e.to_string()));
                return report(
                    false,
                    format!("container {container_id} cannot be inspected: {e}"),
                    observations,
                );
            }
        };
        let s = seen(&inspect);
        let checks: &[Check] = if checks.is_empty() {
            if baseline.is_none() && s.has_healthcheck {
                implicit.push(Check::Docker);
            }
            &implicit
        } else {
            checks
        };
        if failures.len() != checks.len() {
            failures = vec![0; checks.len()];
            last_ok = vec![false; checks.len()];
        }
        let (started, restarts) = baseline.get_or_insert((s.started_at.clone(), s.restart_count));
        if !s.running || s.restarting {
            observations.push(observation(
                "container",
                false,
                format!("state {} (exit code {})", s.status, s.exit_code),
            ));
            return report(
                false,
                format!(
                    "the container is not running (state {}, exit code {})",
                    s.status, s.exit_code
                ),
                observations,
            );
        }
        if s.restart_count != *restarts || s.started_at != *started {
            observations.push(observation(
                "container",
                false,
                format!(
                    "restarted: restart count {} → {}, started at {} → {}",
                    restarts, s.restart_count, started, s.started_at
                ),
            ));
            return report(
                false,
                "the container restarted during the window".to_owned(),
                observations,
            );
        }
        let round_start = observations.len();
        observations.push(observation(
            "container",
            true,
            format!("running since {}", s.started_at),
        ));
        let mut failed_now = false;
        for (i, check) in checks.iter().enumerate() {
            let label = check.label();
            let obs = match check {
                // Most images (nginx, redis, postgres...) have no HEALTHCHECK, or it is turned
                // off (`HEALTHCHECK NONE`, `--no-healthcheck`): then there is nothing to ask
                // Docker, and the container staying up (checked above every round) together
                // with the configured checks decides.
                Check::Docker if !s.has_healthcheck => observation(&label, true, NO_HEALTHCHECK),
                Check::Docker => match s.health {
                    Some(HealthStatusEnum::HEALTHY) => observation(&label, true, "healthy"),
                    // A HEALTHCHECK whose first status is not reported yet.
                    Some(HealthStatusEnum::STARTING) | None | Some(HealthStatusEnum::EMPTY) => {
                        // Not yet success, not a failure either.
                        last_ok[i] = false;
                        observations.push(observation(&label, false, "starting"));
                        continue;
                    }
                    Some(HealthStatusEnum::UNHEALTHY) => {
                        let log = health_log(&inspect);
                        observations.push(observation(&label, false, format!("unhealthy; {log}")));
                        return report(
                            false,
                            format!("Docker reports the container unhealthy: {log}"),
                            observations,
                        );
                    }
                    Some(HealthStatusEnum::NONE) => observation(&label, true, NO_HEALTHCHECK),
                },
                other => probe_with(engine, container_id, &inspect, other).await,
            };
            last_ok[i] = obs.ok;
            if obs.ok {
                failures[i] = 0;
            } else {
                failed_now = true;
                failures[i] += 1;
            }
            let detail = obs.detail.clone();
            observations.push(obs);
            if failures[i] >= threshold {
                return report(
                    false,
                    format!("{label} failed {} times in a row: {detail}", failures[i]),
                    observations,
                );
            }
        }
        let now = tokio::time::Instant::now();
        number += 1;
        let this_round = &observations[round_start..];
        let last = this_round
            .iter()
            .find(|o| !o.ok)
            .or(this_round.last())
            .map(|o| format!("{}: {}", o.check, o.detail))
            .unwrap_or_default();
        on_round(&Round {
            number,
            planned: planned.max(number),
            elapsed: now - began,
            window: m.window,
            ok: this_round.iter().all(|o| o.ok),
            last,
        });
        if now >= deadline {
            let not_ok: Vec<String> = checks
                .iter()
                .zip(&last_ok)
                .filter(|(_, ok)| !**ok)
                .map(|(c, _)| c.label())
                .collect();
            if not_ok.is_empty() {
                let probes: Vec<String> = checks
                    .iter()
                    .filter(|c| !matches!(c, Check::Docker) || s.has_healthcheck)
                    .map(Check::label)
                    .collect();
                let what = if probes.is_empty() {
                    let without = if s.has_healthcheck {
                        ""
                    } else {
                        " (no HEALTHCHECK)"
                    };
                    format!("ran for the whole window without a restart{without}")
                } else {
                    format!(
                        "ran for the whole window without a restart and passed {}",
                        probes.join(", ")
                    )
                };
                return report(true, format!("the container {what}"), observations);
            }
            return report(
                false,
                format!(
                    "at the end of the window these checks had not succeeded: {}",
                    not_ok.join(", ")
                ),
                observations,
            );
        }
        let delay = if failed_now {
            round_failures += 1;
            let factor = 1u32 << round_failures.saturating_sub(1).min(16);
            m.retries_backoff
                .initial
                .saturating_mul(factor)
                .min(m.retries_backoff.max)
                .min(m.interval)
        } else {
            round_failures = 0;
            m.interval
        };
        tokio::time::sleep(delay.min(deadline - now)).await;
    }
}

fn health_log(inspect: &ContainerInspectResponse) -> String {
    inspect
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last())
        .map(|r| {
            format!(
                "last check exit code {}, output {:?}",
                r.exit_code.unwrap_or(-1),
                truncate(r.output.as_deref().unwrap_or_default())
            )
        })
        .unwrap_or_else(|| "no health log".to_owned())
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() <= DETAIL_LIMIT {
        return s.to_owned();
    }
    let mut end = DETAIL_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Runs one probe of `check` against the container now (Docker: reads its health status).
pub async fn probe(engine: &Engine, container_id: &str, check: &Check) -> Observation {
    let label = check.label();
    match engine.docker().inspect_container(container_id, None).await {
        Ok(inspect) => match check {
            Check::Docker => {
                let s = seen(&inspect);
                match s.health {
                    Some(HealthStatusEnum::HEALTHY) => observation(&label, true, "healthy"),
                    Some(other) => observation(&label, false, other.to_string()),
                    None => observation(&label, false, "the container has no HEALTHCHECK"),
                }
            }
            other => probe_with(engine, container_id, &inspect, other).await,
        },
        Err(e) => observation(&label, false, format!("cannot inspect the container: {e}")),
    }
}

async fn probe_with(
    engine: &Engine,
    container_id: &str,
    inspect: &ContainerInspectResponse,
    check: &Check,
) -> Observation {
    let label = check.label();
    let (ok, detail) = match check {
        Check::Docker => (false, "not a probe".to_owned()),
        Check::Http(h) => match resolve(&h.url, inspect, true) {
            Ok(url) => http_probe(h, &url).await,
            Err(e) => (false, e),
        },
        Check::Tcp(t) => match resolve(&t.host, inspect, false) {
            Ok(host) => tcp_probe(&host, t.port, t.timeout).await,
            Err(e) => (false, e),
        },
        Check::Exec(e) => exec_probe(engine, container_id, e).await,
    };
    observation(&label, ok, detail)
}

/// Replaces the placeholders of `template` with the container's addresses.
pub fn resolve(
    template: &str,
    inspect: &ContainerInspectResponse,
    in_url: bool,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed placeholder in {template:?}"));
        };
        let key = &after[..end];
        let value = if key == "container_ip" {
            let ip = container_ip(inspect)
                .ok_or_else(|| "the container has no IP address on any network".to_owned())?;
            bracket(ip, in_url)
        } else if let Some(port) = key.strip_prefix("host_port:") {
            published(inspect, port)?.1
        } else if let Some(port) = key.strip_prefix("host_ip:") {
            bracket(published(inspect, port)?.0, in_url)
        } else {
            return Err(format!("unknown placeholder {{{key}}} in {template:?}"));
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn bracket(ip: String, in_url: bool) -> String {
    if in_url && ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    }
}

/// The container's address: on its primary network (`NetworkMode`) if it has one there, else
/// the first network (by name) that gives one; IPv4 before IPv6.
fn container_ip(inspect: &ContainerInspectResponse) -> Option<String> {
    let nets = inspect.network_settings.as_ref()?.networks.as_ref()?;
    let mode = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    let primary = if mode == "default" {
        "bridge".to_owned()
    } else {
        mode
    };
    let mut names: Vec<&String> = nets.keys().collect();
    names.sort_by_key(|n| (**n != primary, (*n).clone()));
    names.into_iter().find_map(|n| {
        let e = &nets[n];
        e.ip_address
            .clone()
            .filter(|ip| !ip.is_empty())
            .or_else(|| e.global_ipv6_address.clone().filter(|ip| !ip.is_empty()))
    })
}

/// `(host ip, host port)` published for `port` (`8080/tcp`; `/tcp` is the default).
fn published(inspect: &ContainerInspectResponse, port: &str) -> Result<(String, String), String> {
    let key = if port.contains('/') {
        port.to_owned()
    } else {
        format!("{port}/tcp")
    };
    let bindings = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|p| p.get(&key))
        .and_then(|b| b.as_ref())
        .ok_or_else(|| format!("container port {key} is not published"))?;
    let binding = bindings
        .iter()
        .find(|b| b.host_port.as_deref().is_some_and(|p| !p.is_empty()))
        .ok_or_else(|| format!("container port {key} has no host port"))?;
    let ip = match binding.host_ip.as_deref().unwrap_or_default() {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "::1".to_owned(),
        other => other.to_owned(),
    };
    Ok((ip, binding.host_port.clone().unwrap_or_default()))
}

fn http_client(h: &HttpCheck) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut tls = if !h.tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else if let Some(path) = &h.ca_file {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        }
        // Text that is not PEM yields no certificates, not an error; an empty store would
        // fail every handshake with "UnknownIssuer", blaming the server instead of the file.
        if roots.is_empty() {
            return Err(format!(
                "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        builder
            .with_platform_verifier()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let redirects = if h.follow_redirects {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(redirects)
        .timeout(h.timeout)
        .no_proxy()
        .user_agent("safe-updater-health")
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// One HTTP probe of `url` (already resolved), judged by `h`: (passed, what was seen). Also used
/// for checks that need no container, such as a Kubernetes Service or Ingress URL.
pub async fn http_probe(h: &HttpCheck, url: &str) -> (bool, String) {
    let client = match http_client(h) {
        Ok(c) => c,
        Err(e) => return (false, e),
    };
    let method = match reqwest::Method::from_bytes(h.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return (false, format!("invalid HTTP method {:?}", h.method)),
    };
    let mut request = client.request(method, url);
    for (name, value) in &h.headers {
        request = request.header(name, value);
    }
    if let Some((user, password)) = &h.basic_auth {
        request = request.basic_auth(user, Some(password));
    }
    let run = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(h.timeout, run).await {
        Err(_) => (
            false,
            format!(
                "{}: no answer within {}s",
                redact::url(url),
                h.timeout.as_secs_f64()
            ),
        ),
        Ok(Err(e)) => {
            let what = if e.is_timeout() {
                format!("no answer within {}s", h.timeout.as_secs_f64())
            } else {
                // The client's own messages name the URL, userinfo and query included.
                redact::urls_in(&error_chain(&e))
            };
            (false, format!("{}: {what}", redact::url(url)))
        }
        Ok(Ok((status, body))) => {
            let status_ok = h.expected_status.contains(&status);
            let body_ok = h
                .body_contains
                .as_deref()
                .is_none_or(|needle| body.contains(needle));
            let mut detail = format!("HTTP {status}; body {:?}", truncate(&body));
            if !status_ok {
                detail.push_str(&format!(
                    "; expected status {}–{}",
                    h.expected_status.start(),
                    h.expected_status.end()
                ));
            }
            if !body_ok {
                detail.push_str(&format!(
                    "; body does not contain {:?}",
                    h.body_contains.as_deref().unwrap_or_default()
                ));
            }
            (status_ok && body_ok, detail)
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(s) = current {
        text.push_str(": ");
        text.push_str(&s.to_string());
        current = s.source();
    }
    text
}

/// One TCP connection attempt: (connected, what was seen).
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> (bool, String) {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await {
        Ok(Ok(_)) => (true, format!("{target}: connected")),
        Ok(Err(e)) => (false, format!("{target}: {e}")),
        Err(_) => (
            false,
            format!("{target}: no connection within {}s", timeout.as_secs_f64()),
        ),
    }
}

/// Why a command inside a container gave no exit code.
#[derive(Debug)]
pub(crate) enum ExecFailure {
    TimedOut,
    Engine(bollard::errors::Error),
    NoExitCode(String),
}

/// Runs `cmd` in the container and returns its exit code and (at most a few KiB of) output.
pub(crate) async fn exec_capture(
    engine: &Engine,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Option<Duration>,
) -> Result<(i64, String), ExecFailure> {
    let docker = engine.docker();
    let run = async {
        let created = docker
            .create_exec(
                container_id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = docker.start_exec(&created.id, None).await?
        {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if output.len() < 4 * DETAIL_LIMIT {
                    output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        }
        // The stream ends as the process does; the exit code follows shortly.
        for _ in 0..50 {
            let inspect = docker.inspect_exec(&created.id).await?;
            if inspect.running != Some(true) {
                return Ok::<_, bollard::errors::Error>((inspect.exit_code, output));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((None, output))
    };
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| ExecFailure::TimedOut)?,
        None => run.await,
    };
    match result {
        Err(e) => Err(ExecFailure::Engine(e)),
        Ok((None, output)) => Err(ExecFailure::NoExitCode(output)),
        Ok((Some(code), output)) => Ok((code, output)),
    }
}

pub(crate) fn truncated(s: &str) -> String {
    truncate(s)
}

async fn exec_probe(engine: &Engine, container_id: &str, e: &ExecCheck) -> (bool, String) {
    match exec_capture(engine, container_id, e.cmd.clone(), Some(e.timeout)).await {
        Err(ExecFailure::TimedOut) => (
            false,
            format!("no exit within {}s", e.timeout.as_secs_f64()),
        ),
        Err(ExecFailure::Engine(err)) => (false, format!("cannot run the command: {err}")),
        Err(ExecFailure::NoExitCode(output)) => (
            false,
            format!("no exit code; output {:?}", truncate(&output)),
        ),
        Ok((code, output)) => {
            let printed = e
                .output_contains
                .as_deref()
                .is_none_or(|w| output.contains(w));
            let missing = match (&e.output_contains, printed) {
                (Some(w), false) => format!("; the output lacks {w:?}"),
                _ => String::new(),
            };
            (
                code == e.expect_exit && printed,
                format!(
                    "exit code {code} (expected {}){missing}; output {:?}",
                    e.expect_exit,
                    truncate(&output)
                ),
            )
        }
    }
}

/// Accepts any server certificate (`tls_verify: false`), still checking signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect() -> ContainerInspectResponse {
        serde_json::from_value(serde_json::json!({
            "HostConfig": {"NetworkMode": "net1"},
            "NetworkSettings": {
                "Ports": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}],
                          "9090/tcp": [{"HostIp": "::", "HostPort": "32769"}]},
                "Networks": {
                    "bridge": {"IPAddress": "172.17.0.5"},
                    "net1": {"IPAddress": "172.18.0.3"}
                }
            }
        }))
        .expect("inspect")
    }

    #[test]
    fn placeholders_resolve() {
        let i = inspect();
        assert_eq!(
            resolve("http://{container_ip}:8080/health", &i, true).expect("ip"),
            "http://172.18.0.3:8080/health"
        );
        assert_eq!(
            resolve("http://{host_ip:8080/tcp}:{host_port:8080/tcp}/", &i, true).expect("port"),
            "http://127.0.0.1:32768/"
        );
        assert_eq!(
            resolve("http://{host_ip:9090}:{host_port:9090}/", &i, true).expect("v6"),
            "http://[::1]:32769/"
        );
        assert!(resolve("{host_port:1/tcp}", &i, true).is_err());
        assert!(resolve("{nope}", &i, true).is_err());
    }

    #[test]
    fn credentials_stay_out_of_debug() {
        let mut h = HttpCheck::get("http://x/");
        h.basic_auth = Some(("u".into(), "hunter2".into()));
        h.headers = vec![("Authorization".into(), "Bearer secret".into())];
        let text = format!("{h:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("secret"),
            "{text}"
        );
    }
}
