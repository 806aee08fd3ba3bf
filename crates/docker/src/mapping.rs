//! From what an engine says about a container (its inspect data, its image's inspect data,
//! the status line of the listing) to an [`Asset`]. Pure: the time is a parameter.
//!
//! This module must not talk to an engine, read the clock or the environment; `discover` does
//! the IO and hands the results here, so every rule below is tested over fixture files.

use std::collections::BTreeMap;

use bollard::models::{ContainerInspectResponse, ImageInspect, PortMap};
use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::reference::ImageRef;

use crate::error::MappingError;
use crate::extra::{ContainerExtra, Platform, PortMapping, parse_compose_depends_on};

/// The label docker compose puts the project name in; it becomes the asset's namespace.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label docker compose puts the service name in.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";
/// The label docker compose puts the service's dependencies in.
pub const COMPOSE_DEPENDS_ON_LABEL: &str = "com.docker.compose.depends_on";

/// The asset id of a container: `docker/<engine>/<container name>`. Built from the name, not the
/// container id, so it survives the container being recreated by an update.
pub fn asset_id(engine: &str, container_name: &str) -> String {
    format!("docker/{engine}/{container_name}")
}

/// Turns one container into an asset.
///
/// * `container` — `GET /containers/{id}/json`;
/// * `image` — `GET /images/{id}/json` of the container's image id, or none when the image is
///   gone (removed while the container still uses it): the asset then has no digest and no
///   platform;
/// * `status` — the container's `Status` from `GET /containers/json` (`Up 3 hours`);
/// * `now` — first and last seen.
pub fn container_asset(
    engine: &str,
    container: &ContainerInspectResponse,
    image: Option<&ImageInspect>,
    status: Option<&str>,
    now: Timestamp,
) -> Result<Asset, MappingError> {
    let container_id = container
        .id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or(MappingError::MissingId)?;
    let name = container
        .name
        .as_deref()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .filter(|n| !n.is_empty())
        .ok_or(MappingError::MissingName)?
        .to_owned();
    let config = container.config.as_ref();
    let image_ref = config
        .and_then(|c| c.image.clone())
        .filter(|i| !i.is_empty())
        .ok_or(MappingError::MissingImage)?;
    let labels: BTreeMap<String, String> = config
        .and_then(|c| c.labels.as_ref())
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();

    let repo_digests = image
        .and_then(|i| i.repo_digests.clone())
        .unwrap_or_default();
    let digest = running_digest(&image_ref, &repo_digests);

    let state = container.state.as_ref();
    let running = state.and_then(|s| s.running).unwrap_or(false);
    let extra = ContainerExtra {
        container_id,
        image_id: container.image.clone().unwrap_or_default(),
        repo_digests,
        state: state
            .and_then(|s| s.status)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        status: status.filter(|s| !s.is_empty()).map(str::to_owned),
        created: container.created.as_deref().and_then(parse_time),
        started_at: state
            .and_then(|s| s.started_at.as_deref())
            .and_then(parse_time),
        finished_at: state
            .and_then(|s| s.finished_at.as_deref())
            .and_then(parse_time),
        exit_code: state.and_then(|s| s.exit_code),
        health: state
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        ports: published_ports(container, running),
        compose_service: labels.get(COMPOSE_SERVICE_LABEL).cloned(),
        compose_depends_on: labels
            .get(COMPOSE_DEPENDS_ON_LABEL)
            .map(|l| parse_compose_depends_on(l))
            .unwrap_or_default(),
        platform: image.and_then(platform),
    };
    let extra = extra
        .to_value()
        .map_err(|e| MappingError::Extra(e.to_string()))?;

    Ok(Asset {
        id: asset_id(engine, &name),
        kind: AssetKind::Container,
        location: engine.to_owned(),
        namespace: labels
            .get(COMPOSE_PROJECT_LABEL)
            .filter(|p| !p.is_empty())
            .cloned(),
        name,
        container: None,
        image: image_ref,
        digest,
        labels,
        annotations: BTreeMap::new(),
        first_seen: now,
        last_seen: now,
        extra,
    })
}

/// The digest the container runs for the repository it was created from.
///
/// An image can carry repo digests for several repositories (the same image pulled or pushed
/// under several names); only those of the container's own repository count, compared on the
/// normalized name (`nginx` = `docker.io/library/nginx`). When the reference is pinned to a
/// digest that is among them, that one; otherwise the first matching one in the engine's
/// order. With none matching (a locally built or imported image, or the image gone), a digest
/// written in the reference itself, or none.
pub fn running_digest(image_ref: &str, repo_digests: &[String]) -> Option<String> {
    let wanted = ImageRef::parse(image_ref).ok()?;
    let name = wanted.name();
    let matching: Vec<String> = repo_digests
        .iter()
        .filter_map(|entry| ImageRef::parse(entry).ok())
        .filter(|r| r.name() == name)
        .filter_map(|r| r.digest().map(str::to_owned))
        .collect();
    if let Some(pinned) = wanted.digest()
        && (matching.is_empty() || matching.iter().any(|d| d == pinned))
    {
        return Some(pinned.to_owned());
    }
    matching.into_iter().next()
}

/// Published ports: what the engine bound for a running container, what is configured for one
/// that is not (host port none when the engine picks it at start). Exposed but unpublished
/// ports are left out.
fn published_ports(container: &ContainerInspectResponse, running: bool) -> Vec<PortMapping> {
    let map: Option<&PortMap> = if running {
        container
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
    } else {
        container
            .host_config
            .as_ref()
            .and_then(|h| h.port_bindings.as_ref())
    };
    let mut out: Vec<PortMapping> = Vec::new();
    for (key, bindings) in map.into_iter().flatten() {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            tracing::warn!(port = %key, "ignoring a port the engine reported in an unknown form");
            continue;
        };
        for binding in bindings.iter().flatten() {
            out.push(PortMapping {
                container_port,
                protocol: protocol.to_owned(),
                host_ip: binding.host_ip.clone().filter(|ip| !ip.is_empty()),
                host_port: binding
                    .host_port
                    .as_deref()
                    .and_then(|p| p.parse::<u16>().ok()),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn platform(image: &ImageInspect) -> Option<Platform> {
    let os = image.os.clone().filter(|s| !s.is_empty())?;
    let architecture = image.architecture.clone().filter(|s| !s.is_empty())?;
    Some(Platform {
        os,
        architecture,
        variant: image.variant.clone().filter(|s| !s.is_empty()),
    })
}

/// An RFC 3339 time from the engine; Go's zero time (`0001-01-01T00:00:00Z`, "never") is none.
fn parse_time(text: &str) -> Option<Timestamp> {
    /// `0001-01-01T00:00:00Z` in seconds since the Unix epoch.
    const GO_ZERO_TIME: i64 = -62_135_596_800;
    let t: Timestamp = text.parse().ok()?;
    (t.as_second() > GO_ZERO_TIME).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-06-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("timestamp")
    }

    /// One case: `tests/data/<case>.container.json` and `tests/data/<case>.image.json`, both
    /// as `docker inspect` prints them (a one-element array).
    fn load(container_json: &str, image_json: &str) -> (ContainerInspectResponse, ImageInspect) {
        let mut containers: Vec<ContainerInspectResponse> =
            serde_json::from_str(container_json).expect("container fixture parses");
        let mut images: Vec<ImageInspect> =
            serde_json::from_str(image_json).expect("image fixture parses");
        assert_eq!(containers.len(), 1);
        assert_eq!(images.len(), 1);
        (containers.remove(0), images.remove(0))
    }

    macro_rules! fixture {
        ($case:literal) => {
            load(
                include_str!(concat!("../tests/data/", $case, ".container.json")),
                include_str!(concat!("../tests/data/", $case, ".image.json")),
            )
        };
    }

    fn map(
        c: &ContainerInspectResponse,
        i: Option<&ImageInspect>,
        status: Option<&str>,
    ) -> (Asset, ContainerExtra) {
        let asset = container_asset("local", c, i, status, now()).expect("maps");
        let extra = ContainerExtra::from_asset(&asset).expect("extra reads back");
        (asset, extra)
    }

    fn ts(s: &str) -> Option<Timestamp> {
        Some(s.parse().expect("timestamp"))
    }

    #[test]
    fn plain_container() {
        let (c, i) = fixture!("plain");
        let (asset, extra) = map(&c, Some(&i), Some("Up 2 hours"));
        assert_eq!(asset.id, "docker/local/web");
        assert_eq!(asset.kind, AssetKind::Container);
        assert_eq!(asset.location, "local");
        assert_eq!(asset.namespace, None);
        assert_eq!(asset.name, "web");
        assert_eq!(asset.container, None);
        assert_eq!(asset.image, "nginx:1.27.3");
        assert_eq!(
            asset.digest.as_deref(),
            Some("sha256:0a399eb16751829e1af26fea27b20c3ec28d7ab1fb72182879dcae1cca21206a")
        );
        assert_eq!(
            asset.labels.get("maintainer").map(String::as_str),
            Some("NGINX Docker Maintainers <docker-maint@nginx.com>")
        );
        assert_eq!(
            asset
                .labels
                .get("safe-updater.io/policy")
                .map(String::as_str),
            Some("patch")
        );
        assert!(asset.annotations.is_empty());
        assert_eq!(asset.first_seen, now());
        assert_eq!(asset.last_seen, now());

        assert_eq!(
            extra,
            ContainerExtra {
                container_id: "3f4e2b1c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e"
                    .into(),
                image_id: "sha256:66f8bdd3810c96dc5c28aec39583af731b34a2cd99471530f53c8794ed5b423e"
                    .into(),
                repo_digests: vec![
                    "nginx@sha256:0a399eb16751829e1af26fea27b20c3ec28d7ab1fb72182879dcae1cca21206a"
                        .into()
                ],
                state: "running".into(),
                status: Some("Up 2 hours".into()),
                created: ts("2025-06-01T09:58:41.123456789Z"),
                started_at: ts("2025-06-01T09:58:41.912345678Z"),
                finished_at: None,
                exit_code: Some(0),
                health: None,
                ports: vec![
                    PortMapping {
                        container_port: 80,
                        protocol: "tcp".into(),
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some(8080),
                    },
                    PortMapping {
                        container_port: 80,
                        protocol: "tcp".into(),
                        host_ip: Some("::".into()),
                        host_port: Some(8080),
                    },
                ],
                compose_service: None,
                compose_depends_on: vec![],
                platform: Some(Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                    variant: None,
                }),
            }
        );
    }

    #[test]
    fn compose_service() {
        let (c, i) = fixture!("compose-service");
        let (asset, extra) = map(&c, Some(&i), Some("Up 5 minutes (healthy)"));
        assert_eq!(asset.id, "docker/local/shop-api-1");
        assert_eq!(asset.name, "shop-api-1");
        assert_eq!(asset.namespace.as_deref(), Some("shop"));
        assert_eq!(asset.image, "ghcr.io/acme/shop-api:2.4.1");
        assert_eq!(
            asset.digest.as_deref(),
            Some("sha256:5b9f2a8c4d1e7f3a6b0c9d8e2f1a4b7c3d6e9f0a2b5c8d1e4f7a0b3c6d9e2f5a")
        );
        assert_eq!(extra.compose_service.as_deref(), Some("api"));
        assert_eq!(
            extra.compose_depends_on,
            vec![
                crate::extra::ComposeDependency {
                    service: "db".into(),
                    condition: Some("service_healthy".into()),
                    restart: Some(false),
                },
                crate::extra::ComposeDependency {
                    service: "cache".into(),
                    condition: Some("service_started".into()),
                    restart: Some(true),
                },
            ]
        );
        assert_eq!(extra.health.as_deref(), Some("healthy"));
        assert_eq!(
            extra.ports,
            vec![PortMapping {
                container_port: 8000,
                protocol: "tcp".into(),
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(8000),
            }]
        );
        assert_eq!(
            asset.labels.get(COMPOSE_PROJECT_LABEL).map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            extra.platform,
            Some(Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into()),
            })
        );
    }

    #[test]
    fn stopped_container() {
        let (c, i) = fixture!("stopped");
        let (asset, extra) = map(&c, Some(&i), None);
        assert_eq!(asset.id, "docker/local/nightly-backup");
        assert_eq!(asset.image, "postgres:16.4-bookworm");
        assert_eq!(
            asset.digest.as_deref(),
            Some("sha256:d88a8e2c5f0f6b2d7c4e1a9b3f5d8c2e6a0b4d7f1c3e5a9b2d6f8c0e4a7b1d3f")
        );
        assert_eq!(extra.state, "exited");
        assert_eq!(extra.status, None);
        assert_eq!(extra.exit_code, Some(1));
        assert_eq!(extra.started_at, ts("2025-05-31T02:00:00.532101Z"));
        assert_eq!(extra.finished_at, ts("2025-05-31T02:03:12.889432Z"));
        // Not running: the configured bindings, host port unknown when the engine picks it.
        assert_eq!(
            extra.ports,
            vec![
                PortMapping {
                    container_port: 5432,
                    protocol: "tcp".into(),
                    host_ip: None,
                    host_port: None,
                },
                PortMapping {
                    container_port: 5432,
                    protocol: "tcp".into(),
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(15432),
                },
            ]
        );
    }

    #[test]
    fn digest_pinned_reference() {
        let (c, i) = fixture!("digest-pinned");
        let (asset, extra) = map(&c, Some(&i), Some("Up 3 days"));
        assert_eq!(
            asset.image,
            "redis:7.4.1@sha256:a06cea905344470eb49c972f3d030e22f28f632c1b4f43bbe4a26a4329dd6be5"
        );
        assert_eq!(
            asset.digest.as_deref(),
            Some("sha256:a06cea905344470eb49c972f3d030e22f28f632c1b4f43bbe4a26a4329dd6be5")
        );
        assert_eq!(extra.repo_digests.len(), 1);
    }

    #[test]
    fn locally_built_image_has_no_digest() {
        let (c, i) = fixture!("no-repo-digest");
        let (asset, extra) = map(&c, Some(&i), Some("Up 10 seconds"));
        assert_eq!(asset.image, "myapp:dev");
        assert_eq!(asset.digest, None);
        assert!(extra.repo_digests.is_empty());
        assert!(extra.ports.is_empty());
        assert_eq!(
            extra.image_id,
            "sha256:9c1f5e3a7b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a6c8b0d1f3e"
        );
    }

    #[test]
    fn multiple_repo_digests_pick_the_container_repository() {
        let (c, i) = fixture!("multiple-repo-digests");
        let (asset, extra) = map(&c, Some(&i), Some("Up 1 hour"));
        // The image is known as docker.io/library/nginx and as the mirror's copy; the container
        // was created from the mirror, so the mirror's digest is the one that counts.
        assert_eq!(asset.image, "registry.internal:5000/mirror/nginx:1.27.3");
        assert_eq!(
            asset.digest.as_deref(),
            Some("sha256:7e8a7f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f")
        );
        assert_eq!(extra.repo_digests.len(), 3);
    }

    #[test]
    fn captured_from_docker_20_10_with_a_starting_health_check() {
        // `docker inspect` of a real engine (Docker 20.10, API 1.41, legacy fields such as
        // `ContainerConfig` and `VirtualSize` included), image pulled from a local registry.
        let (c, i) = fixture!("docker-20.10-healthcheck-starting");
        let (asset, extra) = map(&c, Some(&i), Some("Up 1 second (health: starting)"));
        assert_eq!(asset.id, "docker/local/demo-web");
        assert_eq!(asset.image, "127.0.0.1:5001/demo/web:1.0.0");
        assert_eq!(
            asset.digest.as_deref(),
            Some("sha256:b189c1e1e1f818ac09590e6bf5d07bc2d02e6958e5f86786273d3f0c584a1d60")
        );
        assert_eq!(
            asset
                .labels
                .get("org.opencontainers.image.title")
                .map(String::as_str),
            Some("demo/web")
        );
        assert_eq!(extra.health.as_deref(), Some("starting"));
        assert_eq!(extra.state, "running");
        assert_eq!(
            extra.image_id,
            "sha256:777943ae9a999836f750b3e8b652547154f29afe508ccfb38a25e3a4207cd835"
        );
        assert_eq!(
            extra.ports,
            vec![PortMapping {
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(32773),
            }]
        );
        assert_eq!(
            extra.platform,
            Some(Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            })
        );
    }

    #[test]
    fn image_gone_leaves_digest_and_platform_unknown() {
        let (c, _) = fixture!("plain");
        let (asset, extra) = map(&c, None, None);
        assert_eq!(asset.digest, None);
        assert_eq!(extra.platform, None);
        assert!(extra.repo_digests.is_empty());
    }

    #[test]
    fn missing_facts_are_errors() {
        let (c, i) = fixture!("plain");
        let mut no_name = c.clone();
        no_name.name = Some("/".into());
        assert_eq!(
            container_asset("e", &no_name, Some(&i), None, now()),
            Err(MappingError::MissingName)
        );
        let mut no_image = c.clone();
        if let Some(config) = no_image.config.as_mut() {
            config.image = None;
        }
        assert_eq!(
            container_asset("e", &no_image, Some(&i), None, now()),
            Err(MappingError::MissingImage)
        );
        let mut no_id = c;
        no_id.id = None;
        assert_eq!(
            container_asset("e", &no_id, Some(&i), None, now()),
            Err(MappingError::MissingId)
        );
    }

    #[test]
    fn running_digest_rules() {
        let d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let both = vec![
            format!("docker.io/library/nginx@{d1}"),
            format!("nginx@{d2}"),
        ];
        // Familiar and full names are the same repository; first in the engine's order wins.
        assert_eq!(running_digest("nginx:1", &both).as_deref(), Some(d1));
        assert_eq!(
            running_digest("index.docker.io/library/nginx", &both).as_deref(),
            Some(d1)
        );
        // A pinned reference picks its own digest among several.
        assert_eq!(
            running_digest(&format!("nginx@{d2}"), &both).as_deref(),
            Some(d2)
        );
        // Other repositories do not count.
        assert_eq!(running_digest("ghcr.io/x/nginx:1", &both), None);
        // Nothing known: the reference's own digest, else none.
        assert_eq!(
            running_digest(&format!("ghcr.io/x/nginx@{d1}"), &[]).as_deref(),
            Some(d1)
        );
        assert_eq!(running_digest("not a reference", &both), None);
    }

    #[test]
    fn zero_times_are_none() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("garbage"), None);
        assert!(parse_time("2024-01-02T03:04:05.678Z").is_some());
    }
}
