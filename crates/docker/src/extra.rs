//! The Docker-specific facts of a container asset, as a typed struct stored in
//! [`Asset::extra`](safe_updater_core::asset::Asset::extra): what later steps (detect, execute,
//! verify) need to know about a container beyond the common asset fields.
//!
//! This module only defines the shape and its JSON round trip; it must not read from an engine.

use jiff::Timestamp;
use safe_updater_core::asset::Asset;
use serde::{Deserialize, Serialize};

/// The Docker facts of one container, serialized into `Asset::extra`.
///
/// Read it back with [`ContainerExtra::from_asset`]; unknown fields are ignored and missing
/// optional ones default, so older and newer records both read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExtra {
    /// The container's full id (changes when the container is recreated; the asset id does not).
    pub container_id: String,
    /// The local image id the container runs (`sha256:…`, the image config digest).
    pub image_id: String,
    /// Every `RepoDigests` entry of that image (`repo@sha256:…`), in the engine's order.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The engine's state word: `created`, `running`, `paused`, `restarting`, `removing`,
    /// `exited`, `dead` (empty when the engine gave none).
    pub state: String,
    /// The status as `docker ps` shows it (`Up 3 hours`, `Exited (0) 2 minutes ago`), when the
    /// container came from a listing. Relative to the scan, so it changes from scan to scan.
    #[serde(default)]
    pub status: Option<String>,
    /// When the container was created.
    #[serde(default)]
    pub created: Option<Timestamp>,
    /// When the container last started (none if it never did).
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When the container last stopped (none if it never did).
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// The exit code of the last run (0 while running).
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// The health check's status (`starting`, `healthy`, `unhealthy`), when there is one.
    #[serde(default)]
    pub health: Option<String>,
    /// Published ports, sorted by container port, protocol, host ip, host port.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The compose service (`com.docker.compose.service`), when compose created the container.
    #[serde(default)]
    pub compose_service: Option<String>,
    /// The services this one depends on (`com.docker.compose.depends_on`), in label order.
    #[serde(default)]
    pub compose_depends_on: Vec<ComposeDependency>,
    /// The platform of the image, when the image could be inspected.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// One published port: `host_ip:host_port` on the host → `container_port/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The host address bound (`0.0.0.0`, `::`, `127.0.0.1`); none when the binding is on every
    /// address and the engine did not say which.
    #[serde(default)]
    pub host_ip: Option<String>,
    /// The host port; none when the engine picks one at start and the container is not running.
    #[serde(default)]
    pub host_port: Option<u16>,
}

/// One entry of compose's `depends_on` label: `service:condition:restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComposeDependency {
    pub service: String,
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    #[serde(default)]
    pub condition: Option<String>,
    /// Whether compose restarts this container when the dependency is updated.
    #[serde(default)]
    pub restart: Option<bool>,
}

/// The platform an image was built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// `v7`, `v8`, ... for ARM; none elsewhere.
    #[serde(default)]
    pub variant: Option<String>,
}

impl ContainerExtra {
    /// Reads the facts back from an asset made by this adapter.
    pub fn from_asset(asset: &Asset) -> Result<ContainerExtra, serde_json::Error> {
        ContainerExtra::from_value(&asset.extra)
    }

    pub fn from_value(value: &serde_json::Value) -> Result<ContainerExtra, serde_json::Error> {
        ContainerExtra::deserialize(value)
    }

    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// Parses compose's `com.docker.compose.depends_on` label:
/// `db:service_healthy:false,cache:service_started:true`. Older compose versions wrote
/// `db:service_healthy` or just `db`; those read with the missing parts as none.
pub fn parse_compose_depends_on(label: &str) -> Vec<ComposeDependency> {
    label
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let service = parts.next().unwrap_or_default().to_owned();
            let condition = parts.next().filter(|c| !c.is_empty()).map(str::to_owned);
            let restart = parts.next().and_then(|r| r.parse::<bool>().ok());
            ComposeDependency {
                service,
                condition,
                restart,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_label_forms() {
        assert_eq!(
            parse_compose_depends_on("db:service_healthy:false, cache:service_started:true,old,"),
            vec![
                ComposeDependency {
                    service: "db".into(),
                    condition: Some("service_healthy".into()),
                    restart: Some(false),
                },
                ComposeDependency {
                    service: "cache".into(),
                    condition: Some("service_started".into()),
                    restart: Some(true),
                },
                ComposeDependency {
                    service: "old".into(),
                    condition: None,
                    restart: None,
                },
            ]
        );
        assert!(parse_compose_depends_on("").is_empty());
    }

    #[test]
    fn missing_optional_fields_default() {
        let value = serde_json::json!({
            "container_id": "c",
            "image_id": "sha256:i",
            "state": "running",
            "some_future_field": 1,
        });
        let extra = ContainerExtra::from_value(&value).expect("reads");
        assert_eq!(extra.container_id, "c");
        assert!(extra.ports.is_empty());
        assert_eq!(extra.platform, None);
    }
}
