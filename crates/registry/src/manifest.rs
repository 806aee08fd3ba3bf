//! Manifest media types, platforms, and the reading of manifest / index / image-config JSON.
//!
//! Pure: bytes in, typed values or a description of what is wrong out. Garbage must become
//! an `Err(String)` the client turns into [`crate::ErrorKind::InvalidResponse`], never a panic.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use sha2::Digest as _;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header for manifests: indexes/lists first, so that a multi-platform tag
/// resolves to the digest `docker pull` would record, not one platform's.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// What a `HEAD` (or, as a fallback, `GET`) of a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`: the digest `docker pull` pins (`sha256:…`).
    pub digest: String,
    /// `Content-Type`, when the registry sent one.
    pub media_type: Option<String>,
    /// `Content-Length`, when the registry sent one.
    pub size: Option<u64>,
}

impl ManifestHead {
    /// Whether this is a multi-platform index / manifest list.
    pub fn is_index(&self) -> bool {
        self.media_type
            .as_deref()
            .is_some_and(|m| m == OCI_INDEX || m == DOCKER_MANIFEST_LIST)
    }
}

/// An image platform: `linux/amd64`, `linux/arm64/v8`, `windows/amd64` (with `os.version`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
}

impl Platform {
    /// Whether this platform runs on `os`/`architecture` (and `variant`, if given). Without a variant any
    /// variant matches; `arm64` without a variant is `v8`, as in containerd's normalization.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if !self.os.eq_ignore_ascii_case(os)
            || !self.architecture.eq_ignore_ascii_case(architecture)
        {
            return false;
        }
        let Some(wanted) = variant else { return true };
        match self.variant.as_deref() {
            Some(v) => v.eq_ignore_ascii_case(wanted),
            None => self.architecture == "arm64" && wanted == "v8",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A fetched manifest, as far as platforms are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedManifest {
    /// An OCI index or Docker manifest list: the platforms it names (attestations dropped).
    Index(Vec<Platform>),
    /// A single-image manifest: its config blob, which holds the platform.
    Image { config_digest: String },
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(rename = "os.version", default)]
    os_version: Option<String>,
}

impl From<RawPlatform> for Platform {
    fn from(p: RawPlatform) -> Self {
        Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant.filter(|v| !v.is_empty()),
            os_version: p.os_version.filter(|v| !v.is_empty()),
        }
    }
}

/// Reads a manifest body; `content_type` is the response's `Content-Type` (the body's own
/// `mediaType` is used when the header is missing or generic).
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, String> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| format!("the manifest is not the expected JSON: {e}"))?;
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| is_manifest_type(c));
    let media_type = header_type.or(raw.media_type.as_deref());
    let is_index = match media_type {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        // Neither header nor body says: go by shape, as the OCI spec allows `mediaType` out.
        _ => raw.manifests.is_some() && raw.config.is_none(),
    };
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| "an index without a `manifests` list".to_owned())?;
        let platforms = manifests
            .into_iter()
            .filter(|d| !is_attestation(d))
            .filter_map(|d| d.platform)
            .map(Platform::from)
            .filter(|p| !(p.os == "unknown" && p.architecture == "unknown"))
            .collect();
        return Ok(ParsedManifest::Index(platforms));
    }
    let config_digest = raw
        .config
        .and_then(|c| c.digest)
        .ok_or_else(|| "an image manifest without `config.digest`".to_owned())?;
    if !is_valid_digest(&config_digest) {
        return Err(format!(
            "the config digest {config_digest:?} is not a digest"
        ));
    }
    Ok(ParsedManifest::Image { config_digest })
}

fn is_attestation(d: &RawDescriptor) -> bool {
    // buildx adds in-toto attestation manifests to an index with platform unknown/unknown.
    d.annotations.as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    })
}

fn is_manifest_type(t: &str) -> bool {
    matches!(
        t,
        OCI_INDEX | OCI_MANIFEST | DOCKER_MANIFEST_LIST | DOCKER_MANIFEST
    )
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(rename = "os.version", default)]
    os_version: Option<String>,
}

/// The platform in an image config blob.
pub fn parse_config_platform(body: &[u8]) -> Result<Platform, String> {
    let raw: RawConfig = serde_json::from_slice(body)
        .map_err(|e| format!("the image config is not the expected JSON: {e}"))?;
    match (raw.os, raw.architecture) {
        (Some(os), Some(architecture)) if !os.is_empty() && !architecture.is_empty() => {
            Ok(Platform {
                os,
                architecture,
                variant: raw.variant.filter(|v| !v.is_empty()),
                os_version: raw.os_version.filter(|v| !v.is_empty()),
            })
        }
        _ => Err("the image config has no `os` and `architecture`".to_owned()),
    }
}

/// `algorithm:hex` with a known algorithm and the right hex length.
pub fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The digest of `content` with the algorithm of `like` (`sha256` unless `like` says
/// `sha384`/`sha512`).
pub fn digest_of(content: &[u8], like: &str) -> String {
    match like.split_once(':').map(|(a, _)| a) {
        Some("sha512") => format!("sha512:{}", hex::encode(sha2::Sha512::digest(content))),
        Some("sha384") => format!("sha384:{}", hex::encode(sha2::Sha384::digest(content))),
        _ => format!("sha256:{}", hex::encode(sha2::Sha256::digest(content))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    const INDEX: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":1,
         "platform":{"architecture":"amd64","os":"linux"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":1,
         "platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":1,
         "annotations":{"vnd.docker.reference.type":"attestation-manifest"},
         "platform":{"architecture":"unknown","os":"unknown"}}
      ]
    }"#;

    #[test]
    fn index_platforms_without_attestations() {
        let parsed = parse_manifest(INDEX.as_bytes(), None).unwrap();
        let ParsedManifest::Index(platforms) = parsed else {
            panic!("not an index")
        };
        let shown: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64/v8"]);
        assert!(platforms[1].matches("linux", "arm64", Some("v8")));
        assert!(platforms[1].matches("linux", "arm64", None));
        assert!(!platforms[0].matches("linux", "arm64", None));
    }

    #[test]
    fn image_manifest_gives_config_digest() {
        let body = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd","size":7},"layers":[]}"#;
        assert_eq!(
            parse_manifest(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap(),
            ParsedManifest::Image {
                config_digest:
                    "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
                        .to_owned()
            }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for body in [
            "",
            "not json",
            "[]",
            "{\"config\":5}",
            "{}",
            "{\"config\":{\"digest\":\"x\"}}",
        ] {
            assert!(parse_manifest(body.as_bytes(), None).is_err(), "{body}");
        }
        assert!(parse_manifest(b"{}", Some(OCI_INDEX)).is_err());
        assert!(parse_config_platform(b"{\"os\":\"linux\"}").is_err());
        assert!(parse_config_platform(b"\xff").is_err());
        assert_eq!(
            parse_config_platform(br#"{"os":"linux","architecture":"arm","variant":"v7"}"#)
                .unwrap()
                .to_string(),
            "linux/arm/v7"
        );
    }

    #[test]
    fn digests() {
        assert!(is_valid_digest(&digest_of(b"x", "sha256:")));
        assert!(is_valid_digest(&digest_of(b"x", "sha512:")));
        assert!(!is_valid_digest("sha256:abc"));
        assert!(!is_valid_digest("md5:d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(
            digest_of(b"", "sha256:"),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
