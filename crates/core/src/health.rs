//! What "healthy" means for one asset after an update: HTTP, TCP and exec check
//! specifications, from the config file (`health.checks`, each with a resource matcher) and
//! from labels on the resource (`safe-updater.io/health-url`, `-tcp`, `-exec`).
//!
//! Pure data and parsing. Probing is the adapters' job, and so is reading secrets: a password
//! is kept here only as a reference ([`SecretRef`]) that the adapter resolves when it probes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::policy::{AssetView, KEY_PREFIX, Matcher};

/// Label keys (after [`KEY_PREFIX`]) that define checks.
pub const LABEL_HTTP: &str = "health-url";
pub const LABEL_TCP: &str = "health-tcp";
pub const LABEL_EXEC: &str = "health-exec";

/// Where a secret comes from. Never the secret itself in logs: `Debug` redacts literals.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Literal(String),
    /// The name of an environment variable.
    Env(String),
    /// A file whose content (trimmed) is the secret.
    File(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Literal(_) => f.write_str("Literal(<redacted>)"),
            SecretRef::Env(v) => write!(f, "Env({v})"),
            SecretRef::File(p) => write!(f, "File({p})"),
        }
    }
}

/// One check to run against the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSpec {
    Http(HttpSpec),
    Tcp(TcpSpec),
    Exec(ExecSpec),
}

/// An HTTP request and what its answer must be. `url` may hold the adapter's placeholders
/// (`{container_ip}`, `{host_port:8080/tcp}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// Inclusive range of accepted status codes.
    pub expect_status: (u16, u16),
    pub body_contains: Option<String>,
    pub timeout: Duration,
    pub tls_verify: bool,
    pub ca_file: Option<String>,
    pub follow_redirects: bool,
    pub basic_auth: Option<(String, SecretRef)>,
}

impl HttpSpec {
    /// `GET url`, expecting 2xx, 5 s timeout, verified TLS, redirects followed.
    pub fn get(url: impl Into<String>) -> HttpSpec {
        HttpSpec {
            url: url.into(),
            method: "GET".into(),
            headers: Vec::new(),
            expect_status: (200, 299),
            body_contains: None,
            timeout: Duration::from_secs(5),
            tls_verify: true,
            ca_file: None,
            follow_redirects: true,
            basic_auth: None,
        }
    }
}

/// A TCP connection that must be accepted. `host` is an address, a name or `{container_ip}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
}

/// A command run inside the container that must exit with `expect_exit` (and, when set,
/// print `output_contains`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub command: Vec<String>,
    pub expect_exit: i64,
    pub output_contains: Option<String>,
    pub timeout: Duration,
}

/// A configured check and the resources it applies to.
#[derive(Debug, Clone)]
pub struct CheckRule {
    pub matcher: Matcher,
    pub check: CheckSpec,
}

/// Parses `200`, `200-399` or `2xx` into an inclusive range.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let t = s.trim();
    let bad = || format!("'{t}' is not a status range; write 200, 200-399 or 2xx");
    let code = |x: &str| -> Result<u16, String> {
        let n: u16 = x.trim().parse().map_err(|_| bad())?;
        if (100..=599).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(d) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
        let d: u16 = d.parse().map_err(|_| bad())?;
        if !(1..=5).contains(&d) {
            return Err(bad());
        }
        return Ok((d * 100, d * 100 + 99));
    }
    match t.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(format!("'{t}': the range is empty ({a} > {b})"));
            }
            Ok((a, b))
        }
        None => code(t).map(|c| (c, c)),
    }
}

/// Parses a `health-tcp` label: `8080` (the container's own address) or `host:port`,
/// `[::1]:8080`.
pub fn parse_tcp_target(s: &str) -> Result<(String, u16), String> {
    let t = s.trim();
    let bad = || format!("'{t}' is not a TCP target; write 5432, host:5432 or [::1]:5432");
    if let Ok(port) = t.parse::<u16>() {
        return Ok(("{container_ip}".into(), port));
    }
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// The checks the labels of a resource ask for, and what is wrong with any of them.
pub fn label_checks(labels: &BTreeMap<String, String>) -> (Vec<CheckSpec>, Vec<String>) {
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    let get = |k: &str| labels.get(&format!("{KEY_PREFIX}{k}"));
    if let Some(url) = get(LABEL_HTTP) {
        if url.trim().is_empty() {
            problems.push(format!("label {KEY_PREFIX}{LABEL_HTTP} is empty"));
        } else {
            checks.push(CheckSpec::Http(HttpSpec::get(url.trim())));
        }
    }
    if let Some(target) = get(LABEL_TCP) {
        match parse_tcp_target(target) {
            Ok((host, port)) => checks.push(CheckSpec::Tcp(TcpSpec {
                host,
                port,
                timeout: Duration::from_secs(5),
            })),
            Err(e) => problems.push(format!("label {KEY_PREFIX}{LABEL_TCP}: {e}")),
        }
    }
    if let Some(cmd) = get(LABEL_EXEC) {
        // Split on whitespace, not by a shell: images without a shell must work too; who
        // needs pipes writes `sh -c '...'` in the config file instead.
        let command: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
        if command.is_empty() {
            problems.push(format!("label {KEY_PREFIX}{LABEL_EXEC} is empty"));
        } else {
            checks.push(CheckSpec::Exec(ExecSpec {
                command,
                expect_exit: 0,
                output_contains: None,
                timeout: Duration::from_secs(10),
            }));
        }
    }
    (checks, problems)
}

/// Every check that applies to `asset`: configured rules that match it, in config order, then
/// those its labels ask for.
pub fn checks_for(rules: &[CheckRule], asset: &AssetView<'_>) -> (Vec<CheckSpec>, Vec<String>) {
    let mut out: Vec<CheckSpec> = rules
        .iter()
        .filter(|r| r.matcher.matches(asset))
        .map(|r| r.check.clone())
        .collect();
    let (from_labels, problems) = asset.labels.map(label_checks).unwrap_or_default();
    for c in from_labels {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::AssetKind;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Ok((200, 200)));
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("2xx"), Ok((200, 299)));
        assert_eq!(parse_status_range(" 3XX "), Ok((300, 399)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("6xx").is_err());
        assert!(parse_status_range("99").is_err());
        assert!(parse_status_range("ok").is_err());
    }

    #[test]
    fn tcp_targets() {
        assert_eq!(
            parse_tcp_target("5432"),
            Ok(("{container_ip}".into(), 5432))
        );
        assert_eq!(parse_tcp_target("db:5432"), Ok(("db".into(), 5432)));
        assert_eq!(parse_tcp_target("[::1]:80"), Ok(("::1".into(), 80)));
        assert!(parse_tcp_target("db").is_err());
        assert!(parse_tcp_target(":80").is_err());
        assert!(parse_tcp_target("db:99999").is_err());
    }

    #[test]
    fn labels_define_checks_and_report_bad_ones() {
        let labels: BTreeMap<String, String> = [
            ("safe-updater.io/health-url", "http://{container_ip}/health"),
            ("safe-updater.io/health-tcp", "8080"),
            ("safe-updater.io/health-exec", "  pg_isready  -h localhost "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (checks, problems) = label_checks(&labels);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            checks,
            vec![
                CheckSpec::Http(HttpSpec::get("http://{container_ip}/health")),
                CheckSpec::Tcp(TcpSpec {
                    host: "{container_ip}".into(),
                    port: 8080,
                    timeout: Duration::from_secs(5)
                }),
                CheckSpec::Exec(ExecSpec {
                    command: vec!["pg_isready".into(), "-h".into(), "localhost".into()],
                    expect_exit: 0,
                    output_contains: None,
                    timeout: Duration::from_secs(10)
                }),
            ]
        );
        let bad: BTreeMap<String, String> = [("safe-updater.io/health-tcp".to_owned(), "x".into())]
            .into_iter()
            .collect();
        let (checks, problems) = label_checks(&bad);
        assert!(checks.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("health-tcp"), "{problems:?}");
    }

    #[test]
    fn rules_apply_by_matcher_then_labels_without_duplicates() {
        let web = CheckRule {
            matcher: Matcher {
                name: Some(crate::policy::glob_regex("web-*").expect("glob")),
                ..Matcher::default()
            },
            check: CheckSpec::Http(HttpSpec::get("http://{container_ip}/health")),
        };
        let all = CheckRule {
            matcher: Matcher::default(),
            check: CheckSpec::Tcp(TcpSpec {
                host: "{container_ip}".into(),
                port: 80,
                timeout: Duration::from_secs(1),
            }),
        };
        let rules = vec![web, all];
        let labels: BTreeMap<String, String> = [(
            "safe-updater.io/health-url".to_owned(),
            "http://{container_ip}/health".to_owned(),
        )]
        .into_iter()
        .collect();
        let view = |name: &'static str, labels| AssetView {
            kind: AssetKind::Container,
            namespace: None,
            name,
            labels,
            annotations: None,
        };
        let (checks, _) = checks_for(&rules, &view("web-1", Some(&labels)));
        assert_eq!(
            checks.len(),
            2,
            "the label repeats the rule's check: kept once"
        );
        let (checks, _) = checks_for(&rules, &view("db", None));
        assert_eq!(checks, vec![rules[1].check.clone()]);
    }

    #[test]
    fn literal_secrets_are_redacted_in_debug() {
        let s = format!("{:?}", SecretRef::Literal("hunter2".into()));
        assert!(!s.contains("hunter2"));
    }
}
