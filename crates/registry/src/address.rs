//! Where a registry lives and whether we may talk to it: the API base URL for a registry
//! name as it appears in image references, and the allow/deny list.
//!
//! Pure: decides from the registry name and the configuration only. It must not resolve
//! names or open connections — a denied registry is refused before any socket exists.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The registry name Docker Hub has in normalized image references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is actually served from.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key Docker's `config.json` and credential helpers use for Docker Hub.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// The base URL (`scheme://host[:port]`, no trailing slash) of `registry`'s API.
///
/// An explicit entry in `endpoints` wins (mirrors, tests). Otherwise `docker.io` is served by
/// `registry-1.docker.io`; loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`) and hosts
/// matching an `insecure` pattern use plain `http`; everything else `https`.
pub fn base_url(
    registry: &str,
    endpoints: &BTreeMap<String, String>,
    insecure: &[String],
) -> Result<String, String> {
    if let Some(url) = endpoints.get(registry) {
        let url = url.trim_end_matches('/');
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("the endpoint {url:?} configured for it is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/" {
            return Err(format!(
                "the endpoint {url:?} configured for it must be http(s)://host[:port] without a path"
            ));
        }
        return Ok(url.to_owned());
    }
    if registry.is_empty() {
        return Err("the image reference has no registry host".to_owned());
    }
    if registry
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
    {
        return Err(format!("{registry:?} is not a registry host"));
    }
    let host = if registry == DOCKER_HUB {
        DOCKER_HUB_API_HOST
    } else {
        registry
    };
    let plain_http = is_loopback(registry) || insecure.iter().any(|p| pattern_matches(p, registry));
    let scheme = if plain_http { "http" } else { "https" };
    Ok(format!("{scheme}://{host}"))
}

/// Whether `host_port` (`localhost:5000`, `127.1.2.3`, `[::1]:5000`) names this machine.
pub fn is_loopback(host_port: &str) -> bool {
    let host = host_only(host_port);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return v6.is_loopback();
    }
    false
}

/// The host without port and without IPv6 brackets.
fn host_only(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// Whether `registry` may be contacted: `Err` says why not.
///
/// Patterns are matched against the registry name as written in normalized references
/// (`docker.io`, `ghcr.io`, `localhost:5000`), with or without its port. A deny match always wins; a non-empty allow
/// list admits only what it matches.
pub fn check_allowed(registry: &str, allow: &[String], deny: &[String]) -> Result<(), String> {
    if let Some(p) = deny.iter().find(|p| pattern_matches(p, registry)) {
        return Err(format!("it matches the deny pattern {p:?}"));
    }
    if !allow.is_empty() && !allow.iter().any(|p| pattern_matches(p, registry)) {
        return Err(format!("it matches none of the allow patterns {allow:?}"));
    }
    Ok(())
}

/// Whether a registry pattern matches `registry`: the whole name (`localhost:5000`), or the
/// host without its port, so that `*.corp.example` also covers `r.corp.example:8443`.
pub fn pattern_matches(pattern: &str, registry: &str) -> bool {
    glob_match(pattern, registry) || glob_match(pattern, host_only(registry))
}

/// Glob match, ASCII case-insensitive (host names are): `*` is any run of characters
/// (including `.` and `:`), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let t: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Classic linear backtracking: remember the last '*' and where it started matching.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The hostname a Docker `config.json` key stands for: `https://index.docker.io/v1/` →
/// `index.docker.io`, `http://host:5000/v2/` → `host:5000` (Docker's `ConvertToHostname`).
pub fn config_key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Whether a `config.json` key (after [`config_key_host`]) designates `registry`. Docker Hub
/// has several spellings; every other registry only its own name.
pub fn config_key_matches(key: &str, registry: &str) -> bool {
    let host = config_key_host(key);
    if registry == DOCKER_HUB {
        ["index.docker.io", "docker.io", "registry-1.docker.io"]
            .iter()
            .any(|h| host.eq_ignore_ascii_case(h))
    } else {
        host.eq_ignore_ascii_case(registry)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    fn base(registry: &str) -> String {
        base_url(registry, &BTreeMap::new(), &["*.insecure.test".to_owned()]).unwrap()
    }

    #[test]
    fn hosts_and_schemes() {
        assert_eq!(base("docker.io"), "https://registry-1.docker.io");
        assert_eq!(base("ghcr.io"), "https://ghcr.io");
        assert_eq!(base("localhost:5000"), "http://localhost:5000");
        assert_eq!(base("localhost"), "http://localhost");
        assert_eq!(base("127.0.0.1:5001"), "http://127.0.0.1:5001");
        assert_eq!(base("127.9.8.7"), "http://127.9.8.7");
        assert_eq!(base("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(base("128.0.0.1:5000"), "https://128.0.0.1:5000");
        assert_eq!(base("reg.insecure.test:80"), "http://reg.insecure.test:80");
        assert_eq!(base("localhost.evil.com"), "https://localhost.evil.com");
        assert!(base_url("", &BTreeMap::new(), &[]).is_err());
    }

    #[test]
    fn endpoint_overrides() {
        let mut endpoints = BTreeMap::new();
        endpoints.insert("docker.io".to_owned(), "http://127.0.0.1:9/".to_owned());
        endpoints.insert("bad.io".to_owned(), "http://127.0.0.1:9/prefix".to_owned());
        assert_eq!(
            base_url("docker.io", &endpoints, &[]).unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(base_url("bad.io", &endpoints, &[]).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "docker.io"));
        assert!(glob_match("*.example.com", "reg.example.com"));
        assert!(!glob_match("*.example.com", "example.com"));
        assert!(glob_match("localhost:*", "localhost:5000"));
        assert!(glob_match("GHCR.IO", "ghcr.io"));
        assert!(glob_match("reg?.io", "reg1.io"));
        assert!(!glob_match("reg?.io", "reg12.io"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn allow_and_deny() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_allowed("docker.io", &[], &[]).is_ok());
        assert!(check_allowed("docker.io", &[], &s(&["docker.io"])).is_err());
        assert!(check_allowed("evil.example:443", &[], &s(&["evil.example"])).is_err());
        assert!(check_allowed("ghcr.io", &s(&["*.example.com"]), &[]).is_err());
        assert!(check_allowed("r.example.com", &s(&["*.example.com"]), &[]).is_ok());
        // Deny wins over allow.
        assert!(
            check_allowed("r.example.com", &s(&["*"]), &s(&["r.example.com"]))
                .unwrap_err()
                .contains("deny")
        );
    }

    #[test]
    fn config_keys() {
        assert!(config_key_matches(
            "https://index.docker.io/v1/",
            "docker.io"
        ));
        assert!(config_key_matches("index.docker.io", "docker.io"));
        assert!(config_key_matches("registry-1.docker.io", "docker.io"));
        assert!(!config_key_matches(
            "https://index.docker.io/v1/",
            "ghcr.io"
        ));
        assert!(config_key_matches("https://ghcr.io", "ghcr.io"));
        assert!(config_key_matches(
            "http://localhost:5000/v2/",
            "localhost:5000"
        ));
        assert!(!config_key_matches("localhost:5000", "localhost:5001"));
    }
}
