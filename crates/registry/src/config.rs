//! The client's configuration: credentials, insecure registries, allow/deny lists, retry,
//! timeout, concurrency and rate-limit settings. Plain data with safe defaults; validation
//! happens when a [`crate::RegistryClient`] is built from it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::Credential;

/// Everything a [`crate::RegistryClient`] is configured with. `Debug` is safe to log:
/// credentials mask their secrets.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Credentials per registry, keyed by the registry as in image references (`docker.io`,
    /// `ghcr.io`, `localhost:5000`). They win over Docker's `config.json`.
    pub credentials: BTreeMap<String, Credential>,
    /// Where Docker's `config.json` is read from, for `auths`, `credHelpers` and `credsStore`.
    pub docker_config: DockerConfigLocation,
    /// `PATH` used to find `docker-credential-*` helpers; `None` uses the process's own.
    pub credential_helper_path: Option<OsString>,
    /// How long a credential helper may take before it is killed.
    pub credential_helper_timeout: Duration,
    /// Glob patterns of registries spoken to over plain `http` (besides loopback hosts,
    /// which always are).
    pub insecure_registries: Vec<String>,
    /// Explicit API base URLs (`http(s)://host[:port]`) per registry: mirrors, or tests.
    pub endpoints: BTreeMap<String, String>,
    /// Glob patterns; when not empty, only matching registries are contacted.
    pub allow: Vec<String>,
    /// Glob patterns of registries never contacted. Wins over `allow`.
    pub deny: Vec<String>,
    pub retry: RetryPolicy,
    /// Limit on one HTTP request, body included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight to one registry at a time (token requests included).
    pub max_concurrent_requests_per_registry: usize,
    /// When Docker Hub's `RateLimit-Remaining` falls below this, the registry is left alone
    /// for the rest of the cycle.
    pub rate_limit_reserve: u64,
    /// `n` asked for on each tag-list page.
    pub tags_page_size: u32,
    /// Tag-list pages followed at most for one repository (a guard against link loops).
    pub max_tag_pages: u32,
    /// The longest one repository's tag listing may take, all its pages together (a registry
    /// that pages slowly, or forever, cannot hold a cycle).
    pub listing_timeout: Duration,
    /// A bearer token is reused until its `expires_in` minus this margin.
    pub token_expiry_margin: Duration,
    /// Largest response body read into memory (a tag page, a manifest, a config blob).
    pub max_body_bytes: usize,
    pub user_agent: String,
    /// Proxies from the environment (loopback and `NO_PROXY` hosts are never proxied).
    pub proxy: crate::proxy::ProxyEnv,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            credentials: BTreeMap::new(),
            docker_config: DockerConfigLocation::FromEnvironment,
            credential_helper_path: None,
            credential_helper_timeout: Duration::from_secs(10),
            insecure_registries: Vec::new(),
            endpoints: BTreeMap::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_concurrent_requests_per_registry: 4,
            rate_limit_reserve: 10,
            tags_page_size: 1000,
            max_tag_pages: 10_000,
            listing_timeout: Duration::from_secs(120),
            token_expiry_margin: Duration::from_secs(10),
            max_body_bytes: 8 * 1024 * 1024,
            user_agent: concat!("safe-updater/", env!("CARGO_PKG_VERSION")).to_owned(),
            proxy: crate::proxy::ProxyEnv::default(),
        }
    }
}

/// Where Docker's `config.json` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerConfigLocation {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json` — read once, when the
    /// client is built.
    FromEnvironment,
    /// This file.
    Path(PathBuf),
    /// Do not read Docker's configuration.
    Disabled,
}

/// Retries for 5xx answers, connection errors and timeouts, and for 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff; it doubles per attempt up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a registry asking for more fails the request at
    /// once rather than stalling the cycle.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl DockerConfigLocation {
    /// The path this location stands for, given the environment. The only place this crate
    /// reads environment variables (`DOCKER_CONFIG`, `HOME`), through the `env` argument.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        match self {
            DockerConfigLocation::Path(p) => Some(p.clone()),
            DockerConfigLocation::Disabled => None,
            DockerConfigLocation::FromEnvironment => {
                if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
                    return Some(PathBuf::from(dir).join("config.json"));
                }
                env("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn docker_config_location() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let loc = DockerConfigLocation::FromEnvironment;
        assert_eq!(
            loc.resolve(env(&[("DOCKER_CONFIG", "/etc/dc"), ("HOME", "/root")])),
            Some(PathBuf::from("/etc/dc/config.json"))
        );
        assert_eq!(
            loc.resolve(env(&[("HOME", "/home/a")])),
            Some(PathBuf::from("/home/a/.docker/config.json"))
        );
        assert_eq!(loc.resolve(env(&[])), None);
        assert_eq!(
            DockerConfigLocation::Disabled.resolve(env(&[("HOME", "/")])),
            None
        );
    }
}
