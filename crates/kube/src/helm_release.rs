//! Helm releases as Helm stores them: Secrets of type `helm.sh/release.v1`, named
//! `sh.helm.release.v1.<release>.v<revision>`, labelled `owner=helm`, `name`, `status`,
//! `version`, whose `release` data is base64 of gzip of the release JSON.
//!
//! Pure functions on bytes and JSON, so that every format quirk is unit-tested without a
//! cluster. This module must not do IO, and must not keep or return a release's rendered
//! manifest or templates: only the facts the updater uses (values are returned because an
//! upgrade must keep them, and callers must treat them as possibly secret).

use std::io::Read as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::KubeError;

/// The Secret type Helm 3 and 4 use for release records.
pub const RELEASE_SECRET_TYPE: &str = "helm.sh/release.v1";
/// The label Helm puts on every release Secret.
pub const OWNER_LABEL_SELECTOR: &str = "owner=helm";
/// Largest decompressed release record read; a release carries its chart's templates, and a
/// corrupt or hostile Secret must not make us allocate without bound.
pub const MAX_RELEASE_BYTES: u64 = 64 * 1024 * 1024;

/// What the updater needs from one release record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelmRelease {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    /// `deployed`, `failed`, `superseded`, `pending-upgrade`, ...
    pub status: String,
    pub chart_name: String,
    pub chart_version: String,
    pub app_version: Option<String>,
    /// The values the user supplied (`helm get values`), not the chart's defaults.
    pub config: serde_json::Value,
    /// The chart's default values (`values.yaml` of the deployed chart version).
    #[serde(default)]
    pub chart_values: serde_json::Value,
    pub last_deployed: Option<String>,
    pub description: Option<String>,
}

/// The labels of a release Secret, read without decoding its payload, so that only the newest
/// revision of each release needs to be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSecretLabels {
    pub name: String,
    pub revision: u64,
    pub status: String,
}

impl ReleaseSecretLabels {
    /// Reads `name`, `version` and `status` labels; `None` when the Secret is not a release
    /// record Helm wrote.
    pub fn from_labels(labels: &std::collections::BTreeMap<String, String>) -> Option<Self> {
        if labels.get("owner").map(String::as_str) != Some("helm") {
            return None;
        }
        Some(ReleaseSecretLabels {
            name: labels.get("name")?.clone(),
            revision: labels.get("version")?.parse().ok()?,
            status: labels.get("status").cloned().unwrap_or_default(),
        })
    }
}

/// Decodes the `release` data of a release Secret (the bytes after Kubernetes' own base64,
/// i.e. what `Secret.data["release"]` holds): base64, then gzip when the magic bytes say so
/// (Helm 2-era records and some tools store plain JSON), then JSON.
pub fn decode_release(data: &[u8]) -> Result<HelmRelease, KubeError> {
    let decode_err = |detail: String| KubeError::Decode {
        what: "Helm release record".to_owned(),
        detail,
    };
    let trimmed: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&trimmed)
        .map_err(|e| decode_err(format!("not base64: {e}")))?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_RELEASE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| decode_err(format!("not valid gzip: {e}")))?;
        if out.len() as u64 > MAX_RELEASE_BYTES {
            return Err(decode_err(format!(
                "larger than {MAX_RELEASE_BYTES} bytes once decompressed"
            )));
        }
        out
    } else {
        raw
    };
    release_from_json(&json)
}

/// Reads the release JSON (Helm's `release.Release`), ignoring the manifest, templates and
/// hooks.
pub fn release_from_json(json: &[u8]) -> Result<HelmRelease, KubeError> {
    let wire: WireRelease = serde_json::from_slice(json).map_err(|e| KubeError::Decode {
        what: "Helm release JSON".to_owned(),
        detail: e.to_string(),
    })?;
    let chart = wire.chart.unwrap_or_default();
    let metadata = chart.metadata.unwrap_or_default();
    let info = wire.info.unwrap_or_default();
    Ok(HelmRelease {
        name: wire.name,
        namespace: wire.namespace,
        revision: wire.version,
        status: info.status.unwrap_or_default(),
        chart_name: metadata.name.unwrap_or_default(),
        chart_version: metadata.version.unwrap_or_default(),
        app_version: metadata.app_version.filter(|a| !a.is_empty()),
        config: match wire.config {
            Some(serde_json::Value::Null) | None => serde_json::Value::Object(Default::default()),
            Some(v) => v,
        },
        chart_values: chart.values.unwrap_or(serde_json::Value::Null),
        last_deployed: info.last_deployed,
        description: info.description,
    })
}

/// From the labels of every release Secret in a namespace, the revision to decode for each
/// release: the newest one. Helm's own `helm list` shows the newest revision whatever its
/// status, so a failed upgrade is visible as failed rather than hidden behind the last good one.
pub fn newest_revisions(
    secrets: impl IntoIterator<Item = ReleaseSecretLabels>,
) -> Vec<ReleaseSecretLabels> {
    let mut newest: std::collections::BTreeMap<String, ReleaseSecretLabels> = Default::default();
    for s in secrets {
        match newest.get(&s.name) {
            Some(have) if have.revision >= s.revision => {}
            _ => {
                newest.insert(s.name.clone(), s);
            }
        }
    }
    newest.into_values().collect()
}

/// Where a release's values set a container's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageValue {
    /// `<path>` is a tag next to a `repository` (the common `image: {repository, tag}` shape):
    /// set it to the new tag.
    Tag(String),
    /// `<path>` holds the whole reference (`image: repo:tag`): set it to the new image.
    Full(String),
}

impl ImageValue {
    /// The `--set-string` pair that makes the release run `new_image`.
    pub fn set_string(&self, new_image: &str) -> Option<(String, String)> {
        match self {
            ImageValue::Tag(path) => {
                let tag = image_tag(new_image)?;
                Some((path.clone(), tag.to_owned()))
            }
            ImageValue::Full(path) => Some((path.clone(), new_image.to_owned())),
        }
    }
}

/// The tag of an image reference (`host:5000/a/b:1.2` → `1.2`), not confused by a port.
fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next()?;
    let last = without_digest.rsplit('/').next()?;
    last.split_once(':').map(|(_, t)| t)
}

fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match image_tag(without_digest) {
        Some(tag) => &without_digest[..without_digest.len() - tag.len() - 1],
        None => without_digest,
    }
}

/// Finds the value of a release that sets `image` (what a workload of the release runs), in its
/// chart defaults merged with the user's values: an object with `repository` (optionally
/// `registry`) and `tag`, or a string equal to the image. `None` when no value matches (then the
/// image cannot be changed through values; a chart upgrade is the way).
pub fn find_image_value(release: &HelmRelease, image: &str) -> Option<ImageValue> {
    let mut merged = release.chart_values.clone();
    merge_values(&mut merged, &release.config);
    let repo = image_repository(image);
    let tag = image_tag(image);
    let mut found = None;
    walk(&merged, &mut Vec::new(), &mut |path, v| {
        if found.is_some() {
            return;
        }
        let dotted = path.join(".");
        match v {
            serde_json::Value::String(s) if s == image && !path.is_empty() => {
                found = Some(ImageValue::Full(dotted));
            }
            serde_json::Value::Object(m) => {
                let Some(r) = m.get("repository").and_then(|r| r.as_str()) else {
                    return;
                };
                let full_repo = match m
                    .get("registry")
                    .and_then(|r| r.as_str())
                    .filter(|r| !r.is_empty())
                {
                    Some(reg) => format!("{reg}/{r}"),
                    None => r.to_owned(),
                };
                let tag_value = match m.get("tag") {
                    Some(serde_json::Value::String(t)) => Some(t.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                let repo_matches = full_repo == repo || repo.ends_with(&format!("/{full_repo}"));
                if repo_matches && tag_value.as_deref() == tag {
                    let prefix = if dotted.is_empty() {
                        String::new()
                    } else {
                        format!("{dotted}.")
                    };
                    found = Some(ImageValue::Tag(format!("{prefix}tag")));
                }
            }
            _ => {}
        }
    });
    found
}

fn walk<'a>(
    v: &'a serde_json::Value,
    path: &mut Vec<&'a str>,
    f: &mut dyn FnMut(&[&'a str], &'a serde_json::Value),
) {
    f(path, v);
    if let serde_json::Value::Object(m) = v {
        for (k, child) in m {
            path.push(k);
            walk(child, path, f);
            path.pop();
        }
    }
}

/// Helm's coalescing of user values over chart defaults: maps merge, everything else replaces.
fn merge_values(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_values(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[derive(Deserialize)]
struct WireRelease {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    info: Option<WireInfo>,
    #[serde(default)]
    chart: Option<WireChart>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Default, Deserialize)]
struct WireInfo {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    last_deployed: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Default, Deserialize)]
struct WireChart {
    #[serde(default)]
    metadata: Option<WireMetadata>,
    #[serde(default)]
    values: Option<serde_json::Value>,
}

#[derive(Default, Deserialize)]
struct WireMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default, rename = "appVersion")]
    app_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn helm_encode(json: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.as_bytes()).expect("gzip");
        let bytes = gz.finish().expect("gzip");
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    }

    const RELEASE: &str = r#"{"name":"web","info":{"first_deployed":"2024-01-01T00:00:00Z",
        "last_deployed":"2024-02-01T10:00:00Z","deleted":"","description":"Upgrade complete",
        "status":"deployed"},"chart":{"metadata":{"name":"demo-web","version":"0.1.1",
        "appVersion":"1.0.1","apiVersion":"v2"},"lock":null,"templates":[{"name":"templates/d.yaml",
        "data":"YXBpVmVyc2lvbjogdjE="}],"values":{"image":{"tag":"1.0.0"}},"schema":null,
        "files":[]},"config":{"replicaCount":2},"manifest":"---\nkind: Deployment\n",
        "version":3,"namespace":"apps"}"#;

    #[test]
    fn decodes_gzip_base64_release() {
        let r = decode_release(&helm_encode(RELEASE)).expect("decodes");
        assert_eq!(r.name, "web");
        assert_eq!(r.namespace, "apps");
        assert_eq!(r.revision, 3);
        assert_eq!(r.status, "deployed");
        assert_eq!(r.chart_name, "demo-web");
        assert_eq!(r.chart_version, "0.1.1");
        assert_eq!(r.app_version.as_deref(), Some("1.0.1"));
        assert_eq!(r.config, serde_json::json!({"replicaCount": 2}));
        assert_eq!(r.last_deployed.as_deref(), Some("2024-02-01T10:00:00Z"));
    }

    #[test]
    fn plain_json_records_and_null_config() {
        let json = r#"{"name":"x","namespace":"n","version":1,"config":null,
            "chart":{"metadata":{"name":"c","version":"1.2.3"}},"info":{"status":"failed"}}"#;
        let data = base64::engine::general_purpose::STANDARD.encode(json);
        let r = decode_release(data.as_bytes()).expect("decodes");
        assert_eq!(r.status, "failed");
        assert_eq!(r.config, serde_json::json!({}));
        assert_eq!(r.app_version, None);
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        let e = decode_release(b"!!!not base64").expect_err("garbage");
        assert!(e.to_string().contains("not base64"), "{e}");
        let not_gzip = base64::engine::general_purpose::STANDARD.encode([0x1f, 0x8b, 0, 1, 2]);
        let e = decode_release(not_gzip.as_bytes()).expect_err("bad gzip");
        assert!(e.to_string().contains("gzip"), "{e}");
        let not_json = base64::engine::general_purpose::STANDARD.encode("{");
        assert!(decode_release(not_json.as_bytes()).is_err());
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // 80 MiB of zeros compresses to ~80 KiB.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..80 {
            gz.write_all(&zeros).expect("gzip");
        }
        let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
        let e = decode_release(data.as_bytes()).expect_err("bomb");
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn image_values_are_found_in_defaults_merged_with_user_values() {
        let mut r = decode_release(&helm_encode(RELEASE)).expect("decodes");
        assert_eq!(
            r.chart_values,
            serde_json::json!({"image": {"tag": "1.0.0"}})
        );
        r.chart_values = serde_json::json!({
            "image": {"repository": "127.0.0.1:5001/demo/web", "tag": "1.0.0", "pullPolicy": "IfNotPresent"},
            "sidecar": {"image": "busybox:1.36"},
            "db": {"image": {"registry": "docker.io", "repository": "bitnami/postgresql", "tag": 16}}
        });
        r.config = serde_json::json!({"image": {"tag": "1.0.1"}});
        // The user's value wins: the running image is 1.0.1.
        assert_eq!(find_image_value(&r, "127.0.0.1:5001/demo/web:1.0.0"), None);
        let v = find_image_value(&r, "127.0.0.1:5001/demo/web:1.0.1").expect("found");
        assert_eq!(v, ImageValue::Tag("image.tag".into()));
        assert_eq!(
            v.set_string("127.0.0.1:5001/demo/web:1.1.0"),
            Some(("image.tag".into(), "1.1.0".into()))
        );
        assert_eq!(
            find_image_value(&r, "busybox:1.36"),
            Some(ImageValue::Full("sidecar.image".into()))
        );
        assert_eq!(
            find_image_value(&r, "docker.io/bitnami/postgresql:16"),
            Some(ImageValue::Tag("db.image.tag".into()))
        );
        assert_eq!(image_tag("host:5000/a/b"), None);
        assert_eq!(
            image_repository("host:5000/a/b:1.2@sha256:00"),
            "host:5000/a/b"
        );
    }

    #[test]
    fn newest_revision_per_release() {
        let l = |name: &str, rev: u64, status: &str| ReleaseSecretLabels {
            name: name.into(),
            revision: rev,
            status: status.into(),
        };
        let got = newest_revisions([
            l("a", 1, "superseded"),
            l("a", 3, "failed"),
            l("b", 1, "deployed"),
            l("a", 2, "superseded"),
        ]);
        assert_eq!(got, vec![l("a", 3, "failed"), l("b", 1, "deployed")]);
        let labels: std::collections::BTreeMap<String, String> = [
            ("owner", "helm"),
            ("name", "web"),
            ("version", "7"),
            ("status", "deployed"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            ReleaseSecretLabels::from_labels(&labels),
            Some(l("web", 7, "deployed"))
        );
        let mut not_helm = labels.clone();
        not_helm.insert("owner".into(), "someone".into());
        assert_eq!(ReleaseSecretLabels::from_labels(&not_helm), None);
    }
}
