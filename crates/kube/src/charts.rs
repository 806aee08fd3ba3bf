//! Chart versions for Helm releases: from a classic repository's `index.yaml` (with basic auth,
//! a size cap, and only the one chart's entries parsed) or from an OCI registry's tag list
//! (through the registry client), turned into the core's [`Available`] list and filtered by the
//! release's version constraint (Masterminds semantics, as Helm applies them).
//!
//! This module must not pick a version: [`safe_updater_core::decide`] does, like for images.

use std::time::Duration;

use jiff::Timestamp;
use safe_updater_core::constraint::Constraint;
use safe_updater_core::decide::Available;
use safe_updater_core::reference::ImageRef;
use safe_updater_core::semver::Version;
use safe_updater_registry::{RegistryClient, Secret};
use serde::{Deserialize, Serialize};

use crate::error::KubeError;

/// The largest `index.yaml` read (big public repositories are tens of MiB).
pub const DEFAULT_MAX_INDEX_BYTES: usize = 64 * 1024 * 1024;

/// One version of a chart as a repository lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartVersion {
    pub version: String,
    pub app_version: Option<String>,
    pub created: Option<Timestamp>,
    pub deprecated: bool,
    pub digest: Option<String>,
    pub urls: Vec<String>,
}

/// The part of `index.yaml` under `entries.<chart>`, cut out by indentation so the rest of a
/// large index is never parsed. Helm writes indexes with `entries:` at column 0 and chart names
/// indented; `None` when the layout is not that (the caller then parses the whole document).
pub fn chart_block(index: &str, chart: &str) -> Option<String> {
    let mut lines = index.lines();
    lines.by_ref().find(|l| l.trim_end() == "entries:")?;
    let mut block: Option<(usize, Vec<&str>)> = None;
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent == 0 {
            break; // `generated:`, `apiVersion:` — the end of `entries`.
        }
        match &mut block {
            Some((chart_indent, body)) => {
                // Helm writes the list at the key's own indentation (`  demo-web:` then
                // `  - name: …`); the next key at that indentation ends the block.
                let same_level_item = indent == *chart_indent && trimmed.starts_with('-');
                if indent < *chart_indent || (indent == *chart_indent && !same_level_item) {
                    break;
                }
                body.push(line);
            }
            None => {
                let key = trimmed
                    .trim_end_matches(':')
                    .trim_matches(|c| c == '"' || c == '\'');
                if trimmed.ends_with(':') && key == chart {
                    block = Some((indent, Vec::new()));
                }
            }
        }
    }
    let (_, body) = block?;
    Some(format!("versions:\n{}\n", body.join("\n")))
}

/// The versions of `chart` in an `index.yaml` text.
pub fn parse_index(index: &str, chart: &str) -> Result<Vec<ChartVersion>, KubeError> {
    let err = |detail: String| KubeError::Chart {
        source_name: "index.yaml".into(),
        detail,
    };
    let (doc, path): (String, [&str; 2]) = match chart_block(index, chart) {
        Some(block) => (block, ["versions", ""]),
        None => (index.to_owned(), ["entries", chart]),
    };
    let node = marked_yaml::parse_yaml(0, &doc).map_err(|e| err(format!("not YAML: {e}")))?;
    let root = node
        .as_mapping()
        .ok_or_else(|| err("not a mapping".into()))?;
    let list = if path[1].is_empty() {
        root.get_sequence(path[0])
    } else {
        root.get_mapping(path[0])
            .and_then(|m| m.get_sequence(path[1]))
    };
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in list.iter() {
        let Some(m) = entry.as_mapping() else {
            continue;
        };
        let s = |k: &str| {
            m.get_scalar(k)
                .map(|v| v.as_str().to_owned())
                .filter(|v| !v.is_empty())
        };
        let Some(version) = s("version") else {
            continue;
        };
        out.push(ChartVersion {
            version,
            app_version: s("appVersion"),
            created: s("created").and_then(|c| c.parse().ok()),
            deprecated: s("deprecated").is_some_and(|d| d == "true"),
            digest: s("digest"),
            urls: m
                .get_sequence("urls")
                .map(|u| {
                    u.iter()
                        .filter_map(|n| n.as_scalar().map(|x| x.as_str().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Versions as the core's decision takes them, without deprecated ones and, when a constraint
/// is given, only those satisfying it (unparsable versions are left out, as Helm does).
pub fn available(versions: &[ChartVersion], constraint: Option<&Constraint>) -> Vec<Available> {
    versions
        .iter()
        .filter(|v| !v.deprecated)
        .filter(|v| match constraint {
            None => true,
            Some(c) => Version::parse_lenient(&v.version).is_ok_and(|parsed| c.matches(&parsed)),
        })
        .map(|v| Available {
            tag: v.version.clone(),
            first_seen: v.created,
        })
        .collect()
}

/// A classic Helm chart repository.
#[derive(Clone)]
pub struct ChartRepository {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub max_index_bytes: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for ChartRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartRepository")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ChartRepository {
    pub fn new(url: impl Into<String>) -> ChartRepository {
        ChartRepository {
            url: url.into(),
            username: None,
            password: None,
            max_index_bytes: DEFAULT_MAX_INDEX_BYTES,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn with_basic_auth(
        mut self,
        username: impl Into<String>,
        password: Secret,
    ) -> ChartRepository {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }

    /// Downloads `index.yaml` (refusing one larger than the cap while it streams) and returns
    /// `chart`'s versions.
    pub async fn versions(&self, chart: &str) -> Result<Vec<ChartVersion>, KubeError> {
        let err = |detail: String| KubeError::Chart {
            source_name: self.url.clone(),
            detail,
        };
        let http = http_client(self.timeout).map_err(err)?;
        let url = format!("{}/index.yaml", self.url.trim_end_matches('/'));
        let mut req = http.get(&url);
        if let Some(user) = &self.username {
            req = req.basic_auth(user, self.password.as_ref().map(Secret::expose));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| err(format!("GET index.yaml: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(err(format!("GET index.yaml: HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| err(format!("reading index.yaml: {}", e.without_url())))?
        {
            if body.len() + chunk.len() > self.max_index_bytes {
                return Err(err(format!(
                    "index.yaml is larger than {} bytes",
                    self.max_index_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| err("index.yaml is not UTF-8".into()))?;
        parse_index(&text, chart).map_err(|e| err(e.to_string()))
    }
}

/// Chart versions in an OCI registry: the tags of `<oci base>/<chart>`, with Helm's `_` for `+`
/// turned back (OCI tags cannot hold `+`).
pub async fn oci_versions(
    registry: &RegistryClient,
    oci_base: &str,
    chart: &str,
) -> Result<Vec<ChartVersion>, KubeError> {
    let err = |detail: String| KubeError::Chart {
        source_name: oci_base.to_owned(),
        detail,
    };
    let base = oci_base
        .strip_prefix("oci://")
        .ok_or_else(|| err("not an oci:// reference".into()))?;
    let image = ImageRef::parse(&format!("{}/{chart}", base.trim_end_matches('/')))
        .map_err(|e| err(e.to_string()))?;
    let tags = registry
        .all_tags(&image)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(tags
        .into_iter()
        .map(|t| ChartVersion {
            version: t.replace('_', "+"),
            app_version: None,
            created: None,
            deprecated: false,
            digest: None,
            urls: Vec::new(),
        })
        .collect())
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .user_agent(concat!("safe-updater/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"apiVersion: v1
entries:
  other:
  - name: other
    version: 9.9.9
  demo-web:
  - apiVersion: v2
    appVersion: 2.0.0
    created: "2025-03-01T10:00:00.000000000Z"
    digest: abc
    name: demo-web
    urls:
    - charts/demo-web-1.0.0.tgz
    version: 1.0.0
  - appVersion: 1.0.2
    created: "2025-02-01T10:00:00Z"
    name: demo-web
    version: 0.1.2
    deprecated: true
  - name: demo-web
    version: 0.1.1
  - name: demo-web
    version: 0.2.0-rc.1
  - name: demo-web
    version: not-a-version
  zzz:
  - name: zzz
    version: 1.0.0
generated: "2025-03-01T10:00:00Z"
"#;

    #[test]
    fn only_the_charts_block_is_cut_out_and_parsed() {
        let block = chart_block(INDEX, "demo-web").expect("helm layout");
        assert!(
            !block.contains("9.9.9") && !block.contains("zzz"),
            "{block}"
        );
        let v = parse_index(INDEX, "demo-web").expect("parses");
        let versions: Vec<&str> = v.iter().map(|c| c.version.as_str()).collect();
        assert_eq!(
            versions,
            ["1.0.0", "0.1.2", "0.1.1", "0.2.0-rc.1", "not-a-version"]
        );
        assert_eq!(v[0].app_version.as_deref(), Some("2.0.0"));
        assert_eq!(
            v[0].created,
            Some("2025-03-01T10:00:00Z".parse().expect("ts"))
        );
        assert_eq!(v[0].urls, ["charts/demo-web-1.0.0.tgz"]);
        assert!(v[1].deprecated);
        assert!(parse_index(INDEX, "absent").expect("parses").is_empty());
    }

    #[test]
    fn other_layouts_fall_back_to_the_whole_document() {
        let json =
            r#"{"apiVersion":"v1","entries":{"demo-web":[{"name":"demo-web","version":"0.1.0"}]}}"#;
        assert_eq!(chart_block(json, "demo-web"), None);
        let v = parse_index(json, "demo-web").expect("JSON is YAML");
        assert_eq!(v[0].version, "0.1.0");
        assert!(parse_index("entries: [", "x").is_err());
    }

    #[test]
    fn constraint_and_deprecation_filter() {
        let v = parse_index(INDEX, "demo-web").expect("parses");
        let all: Vec<String> = available(&v, None).into_iter().map(|a| a.tag).collect();
        assert_eq!(all, ["1.0.0", "0.1.1", "0.2.0-rc.1", "not-a-version"]);
        let c = Constraint::parse("~0.1 || ^0.2.0-0").expect("constraint");
        let within: Vec<String> = available(&v, Some(&c)).into_iter().map(|a| a.tag).collect();
        assert_eq!(within, ["0.1.1", "0.2.0-rc.1"]);
        let c = Constraint::parse("<1.0.0").expect("constraint");
        let within: Vec<String> = available(&v, Some(&c)).into_iter().map(|a| a.tag).collect();
        assert_eq!(
            within,
            ["0.1.1"],
            "prereleases are excluded unless the constraint names one"
        );
    }
}
