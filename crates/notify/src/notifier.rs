//! The [`Notifier`]: one bounded queue and one background task per channel, so that a slow,
//! failing or unreachable channel never delays the caller nor the other channels.
//!
//! What it must not do: block or await in [`Notifier::notify`] (it only tries to enqueue),
//! grow without bound (a full queue drops and counts), or log a channel's secrets (channels
//! are logged through their masking `Display`, errors after `redact`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use url::Url;

use crate::channel::{Channel, UrlError};
use crate::event::Event;
use crate::send::{self, SendError};

/// How the notifier behaves. `Default` suits a daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyOptions {
    /// Base of the approve link for `approval_needed` (and any event with a target version):
    /// `https://updater.example.com` gives `https://updater.example.com/approvals/<asset id>`.
    /// A base containing `{asset_id}` is used as a template instead (`{to}` is replaced too).
    pub approve_base_url: Option<String>,
    /// Timeout of one HTTP attempt (connect, send, answer).
    pub timeout: Duration,
    /// Attempts per notification per channel, the first included.
    pub attempts: u32,
    /// Notifications waiting per channel; beyond it new ones are dropped and counted.
    pub queue_capacity: usize,
    /// First wait between attempts; it doubles each time up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest `Retry-After` honoured; a service asking for more fails the notification
    /// rather than holding the channel's queue.
    pub max_retry_wait: Duration,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        NotifyOptions {
            approve_base_url: None,
            timeout: Duration::from_secs(10),
            attempts: 4,
            queue_capacity: 100,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(60),
        }
    }
}

/// One unusable URL of the list, by position (`notifications.urls[index]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notifications.urls[{index}] ({scheme}): {source}")]
pub struct UrlProblem {
    pub index: usize,
    /// The URL's scheme, or `?` when there is none to read.
    pub scheme: String,
    #[source]
    pub source: UrlError,
}

/// Why a notifier could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Every unusable URL, not just the first.
    #[error("{}", join_lines(.0))]
    Urls(Vec<UrlProblem>),
    #[error("notifications.approve_base_url: {0}")]
    ApproveBaseUrl(String),
    #[error("notifications: the HTTP client could not be built: {0}")]
    Client(String),
    #[error("notifications: the notifier must be created inside a tokio runtime")]
    NoRuntime,
}

fn join_lines(problems: &[UrlProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The approve links' base (`notifications.approve_base_url`), checked: an http(s) URL, or
/// none when empty.
pub fn check_approve_base_url(base: Option<&str>) -> Result<Option<String>, NotifyError> {
    match base {
        Some(b) if !b.trim().is_empty() => {
            let probe = b.replace("{asset_id}", "x").replace("{to}", "x");
            let u =
                Url::parse(probe.trim()).map_err(|e| NotifyError::ApproveBaseUrl(e.to_string()))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(NotifyError::ApproveBaseUrl(
                    "must be an http or https URL".into(),
                ));
            }
            Ok(Some(b.trim().to_owned()))
        }
        _ => Ok(None),
    }
}

/// Every problem of a list of channel URLs, for a `validate` command; empty when all parse.
pub fn check_urls(urls: &[String]) -> Vec<UrlProblem> {
    urls.iter()
        .enumerate()
        .filter_map(|(index, u)| {
            Channel::parse(u).err().map(|source| UrlProblem {
                index,
                scheme: scheme_of(u),
                source,
            })
        })
        .collect()
}

/// The outcome of [`Notifier::send_now`] for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The channel, masked.
    pub channel: String,
    /// The attempts it took, or why it failed.
    pub result: Result<u32, SendError>,
}

/// Counters of one channel, or of all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted into the queue.
    pub enqueued: u64,
    /// Accepted by the service.
    pub delivered: u64,
    /// Given up after the last attempt, or refused outright.
    pub failed: u64,
    /// Not queued because the queue was full (or the notifier shutting down).
    pub dropped: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Not meant for this channel (its `events=` filter).
    pub filtered: u64,
}

/// One channel's counters, named by its masked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub channel: String,
    pub service: &'static str,
    pub counts: Counts,
}

/// A snapshot of the notifier's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyStats {
    pub total: Counts,
    /// Queued or being sent right now, over all channels.
    pub pending: usize,
    pub channels: Vec<ChannelStats>,
}

/// What [`Notifier::flush`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Everything queued before the call was delivered or given up.
    pub completed: bool,
    /// Still queued or in flight when the call returned.
    pub pending: usize,
    pub stats: NotifyStats,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    filtered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A notification waiting in a channel's queue.
struct Job {
    event: Event,
    approve_url: Option<String>,
}

struct Lane {
    channel: Arc<Channel>,
    label: String,
    tx: mpsc::Sender<Arc<Job>>,
    counters: Arc<Counters>,
}

struct Inner {
    lanes: Vec<Lane>,
    /// The client and options the lanes use; `None` without channels.
    sender: Option<(reqwest::Client, Arc<NotifyOptions>)>,
    /// Queued plus in flight, over all lanes; `flush` waits for it to reach zero.
    pending: Arc<watch::Sender<usize>>,
    approve_base: Option<String>,
}

/// Sends [`Event`]s to every configured channel in the background. Clone it freely: clones
/// share the queues. When the last clone is dropped, the background tasks finish what is
/// queued and end.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "channels",
                &self
                    .inner
                    .lanes
                    .iter()
                    .map(|l| l.label.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Notifier {
    /// Parses every URL (all problems are reported by position, without secrets) and starts
    /// one background task per channel on the current tokio runtime.
    pub fn from_urls(urls: &[String], opts: NotifyOptions) -> Result<Notifier, NotifyError> {
        let problems = check_urls(urls);
        if !problems.is_empty() {
            return Err(NotifyError::Urls(problems));
        }
        let channels = urls.iter().filter_map(|u| Channel::parse(u).ok()).collect();
        Notifier::new(channels, opts)
    }

    /// A notifier for channels already parsed (e.g. with an endpoint override).
    pub fn new(channels: Vec<Channel>, opts: NotifyOptions) -> Result<Notifier, NotifyError> {
        let approve_base = check_approve_base_url(opts.approve_base_url.as_deref())?;
        let pending = Arc::new(watch::Sender::new(0usize));
        let mut lanes = Vec::with_capacity(channels.len());
        let mut sender = None;
        if !channels.is_empty() {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| NotifyError::NoRuntime)?;
            let http = build_http(&opts)?;
            let opts = Arc::new(opts);
            for channel in channels {
                let channel = Arc::new(channel);
                let label = channel.to_string();
                let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
                let counters = Arc::new(Counters::default());
                runtime.spawn(run_lane(
                    rx,
                    channel.clone(),
                    http.clone(),
                    opts.clone(),
                    counters.clone(),
                    pending.clone(),
                ));
                lanes.push(Lane {
                    channel,
                    label,
                    tx,
                    counters,
                });
            }
            sender = Some((http, opts));
        }
        Ok(Notifier {
            inner: Arc::new(Inner {
                lanes,
                sender,
                pending,
                approve_base,
            }),
        })
    }

    /// A notifier with no channels: `notify` does nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            inner: Arc::new(Inner {
                lanes: Vec::new(),
                sender: None,
                pending: Arc::new(watch::Sender::new(0)),
                approve_base: None,
            }),
        }
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.inner.lanes.len()
    }

    /// The channels, masked, for a startup log line.
    pub fn channels(&self) -> Vec<String> {
        self.inner.lanes.iter().map(|l| l.label.clone()).collect()
    }

    /// Queues `event` for every channel that wants it and returns at once; it never waits on
    /// the network. A channel whose queue is full drops the event (counted and logged).
    pub fn notify(&self, event: Event) {
        if self.inner.lanes.is_empty() {
            return;
        }
        let approve_url = self.approve_url(&event);
        let job = Arc::new(Job { event, approve_url });
        for lane in &self.inner.lanes {
            if !lane.channel.wants(job.event.kind) {
                bump(&lane.counters.filtered);
                continue;
            }
            // Counted before the send so the worker can never take it below zero.
            self.inner.pending.send_modify(|n| *n += 1);
            match lane.tx.try_send(job.clone()) {
                Ok(()) => bump(&lane.counters.enqueued),
                Err(e) => {
                    self.inner.pending.send_modify(|n| *n = n.saturating_sub(1));
                    bump(&lane.counters.dropped);
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "channel task ended",
                    };
                    tracing::warn!(
                        channel = %lane.label,
                        event = job.event.kind.as_str(),
                        asset_id = %job.event.asset_id,
                        reason = why,
                        "notification dropped"
                    );
                }
            }
        }
    }

    /// Sends `event` to every channel now, past the queues and the `events=` filters, with the
    /// usual retries, and reports each channel's outcome. For a "send a test notification"
    /// command; unlike [`Notifier::notify`] it waits for the network. Counters are not touched.
    pub async fn send_now(&self, event: &Event) -> Vec<DeliveryReport> {
        let Some((http, opts)) = &self.inner.sender else {
            return Vec::new();
        };
        let approve_url = self.approve_url(event);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, lane) in self.inner.lanes.iter().enumerate() {
            let (http, opts, channel) = (http.clone(), opts.clone(), lane.channel.clone());
            let (event, approve_url) = (event.clone(), approve_url.clone());
            tasks.spawn(async move {
                let r = send::deliver(
                    &http,
                    &channel,
                    &event,
                    approve_url.as_deref(),
                    &opts,
                    |_, _| {},
                )
                .await;
                (i, r)
            });
        }
        let mut results: Vec<Option<Result<u32, SendError>>> = vec![None; self.inner.lanes.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined {
                results[i] = Some(r);
            }
        }
        self.inner
            .lanes
            .iter()
            .zip(results)
            .map(|(lane, r)| DeliveryReport {
                channel: lane.label.clone(),
                result: r.unwrap_or_else(|| {
                    Err(SendError::Build("the sending task ended early".into()))
                }),
            })
            .collect()
    }

    /// Waits until everything queued so far is delivered or given up, or `timeout` passes.
    /// For graceful shutdown; new notifications may still be queued meanwhile.
    pub async fn flush(&self, timeout: Duration) -> FlushReport {
        let mut rx = self.inner.pending.subscribe();
        let completed = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok());
        let stats = self.stats();
        FlushReport {
            completed,
            pending: stats.pending,
            stats,
        }
    }

    /// The counters now.
    pub fn stats(&self) -> NotifyStats {
        let mut total = Counts::default();
        let channels = self
            .inner
            .lanes
            .iter()
            .map(|l| {
                let counts = l.counters.snapshot();
                total.enqueued += counts.enqueued;
                total.delivered += counts.delivered;
                total.failed += counts.failed;
                total.dropped += counts.dropped;
                total.retries += counts.retries;
                total.filtered += counts.filtered;
                ChannelStats {
                    channel: l.label.clone(),
                    service: l.channel.service_name(),
                    counts,
                }
            })
            .collect();
        NotifyStats {
            total,
            pending: *self.inner.pending.borrow(),
            channels,
        }
    }

    /// The approve link of `event`, when a base is configured and there is something to
    /// approve (an `approval_needed` event).
    pub fn approve_url(&self, event: &Event) -> Option<String> {
        if event.kind != crate::EventKind::ApprovalNeeded {
            return None;
        }
        let base = self.inner.approve_base.as_deref()?;
        Some(approve_url(base, event))
    }
}

/// `{base}/approvals/{asset_id}`, or the template with `{asset_id}` and `{to}` filled in;
/// both percent-encoded.
pub(crate) fn approve_url(base: &str, event: &Event) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let id = utf8_percent_encode(&event.asset_id, SEGMENT).to_string();
    if base.contains("{asset_id}") {
        let to = utf8_percent_encode(event.to.as_deref().unwrap_or(""), SEGMENT).to_string();
        base.replace("{asset_id}", &id).replace("{to}", &to)
    } else {
        format!("{}/approvals/{id}", base.trim_end_matches('/'))
    }
}

fn scheme_of(url: &str) -> String {
    match url.trim().split_once("://") {
        Some((s, _))
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') =>
        {
            s.to_ascii_lowercase()
        }
        _ => "?".to_owned(),
    }
}

async fn run_lane(
    mut rx: mpsc::Receiver<Arc<Job>>,
    channel: Arc<Channel>,
    http: reqwest::Client,
    opts: Arc<NotifyOptions>,
    counters: Arc<Counters>,
    pending: Arc<watch::Sender<usize>>,
) {
    let label = channel.to_string();
    while let Some(job) = rx.recv().await {
        let result = send::deliver(
            &http,
            &channel,
            &job.event,
            job.approve_url.as_deref(),
            &opts,
            |err, wait| {
                bump(&counters.retries);
                tracing::debug!(channel = %label, error = %err, wait_ms = wait.as_millis() as u64, "notification will be retried");
            },
        )
        .await;
        match result {
            Ok(attempts) => {
                bump(&counters.delivered);
                tracing::debug!(
                    channel = %label,
                    event = job.event.kind.as_str(),
                    asset_id = %job.event.asset_id,
                    attempts,
                    "notification delivered"
                );
            }
            Err(err) => {
                bump(&counters.failed);
                tracing::warn!(
                    channel = %label,
                    event = job.event.kind.as_str(),
                    asset_id = %job.event.asset_id,
                    correlation_id = job.event.correlation_id.as_deref().unwrap_or(""),
                    error = %err,
                    "notification failed"
                );
            }
        }
        pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn build_http(opts: &NotifyOptions) -> Result<reqwest::Client, NotifyError> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    // ring, handed over explicitly: no process-wide provider to install, and no aws-lc-rs.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyError::Client(e.to_string()))?
        .with_platform_verifier()
        .map_err(|e| NotifyError::Client(e.to_string()))?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(opts.timeout)
        // A redirect could carry the request (and its secret path) elsewhere; webhooks do not
        // redirect.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("safe-updater/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotifyError::Client(e.without_url().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    #[test]
    fn approve_urls_from_a_base_or_a_template() {
        let mut e = Event::new(
            EventKind::ApprovalNeeded,
            "docker:local/web 1",
            "web",
            "container",
            jiff::Timestamp::UNIX_EPOCH,
        );
        e.to = Some("1.1.0".into());
        assert_eq!(
            approve_url("https://su.example.com/", &e),
            "https://su.example.com/approvals/docker%3Alocal%2Fweb%201"
        );
        assert_eq!(
            approve_url("https://su.example.com/ui/#/assets/{asset_id}?to={to}", &e),
            "https://su.example.com/ui/#/assets/docker%3Alocal%2Fweb%201?to=1.1.0"
        );
    }

    #[test]
    fn scheme_is_read_without_the_rest() {
        assert_eq!(scheme_of("slack://hook:SECRET@webhook"), "slack");
        assert_eq!(scheme_of("not a url with SECRET"), "?");
    }
}
