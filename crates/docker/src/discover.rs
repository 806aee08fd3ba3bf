//! Discovery: the containers of one or many engines, as assets.
//!
//! Per engine: one listing, then the containers and their images inspected with bounded
//! concurrency (each image once), then [`crate::mapping`] turns the answers into assets.
//! Engines are scanned concurrently and independently: one that is down yields its own error
//! and the others are still scanned.
//!
//! This module only reads from engines; it must not create, stop, pull or remove anything, and
//! it takes the time of the scan as a parameter.

use std::collections::{BTreeSet, HashMap, HashSet};

use bollard::models::{ContainerInspectResponse, ImageInspect};
use bollard::query_parameters::ListContainersOptions;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use jiff::Timestamp;
use safe_updater_core::asset::Asset;
use safe_updater_core::scope::{Scope, scope_in};

use crate::engine::{ConnectOptions, Engine, EngineSpec, validate_name};
use crate::error::{DockerError, Step};
use crate::mapping::container_asset;

/// What to discover and how hard to push the engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// Also stopped (created, exited, dead) containers, as `docker ps --all`.
    pub include_stopped: bool,
    /// Only the containers of this scope (their labels, as the listing gives them, decide
    /// before anything is inspected): other instances' containers are never looked at.
    pub scope: Scope,
    /// Timeouts of the connection to each engine.
    pub connect: ConnectOptions,
    /// How many inspect requests may be in flight at once on one engine (at least 1).
    pub concurrency: usize,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            include_stopped: false,
            scope: Scope::Unscoped,
            connect: ConnectOptions::default(),
            concurrency: 8,
        }
    }
}

/// The outcome of scanning one engine.
#[derive(Debug)]
pub struct EngineScan {
    /// The engine's name, as in its [`EngineSpec`].
    pub engine: String,
    /// Its containers as assets, sorted by name, or why the engine could not be scanned.
    pub result: Result<Vec<Asset>, DockerError>,
}

/// Scans every engine concurrently. The result has one [`EngineScan`] per engine, in the order
/// of `engines`; an engine that fails does not affect the others. Two engines with the same
/// name would give assets the same ids, so the second is refused.
pub async fn discover(
    engines: &[EngineSpec],
    opts: DiscoverOptions,
    now: Timestamp,
) -> Vec<EngineScan> {
    let mut seen = HashSet::new();
    let opts = &opts;
    let scans = engines.iter().map(|spec| {
        let duplicate = !seen.insert(spec.name.as_str());
        async move {
            let result = if duplicate {
                Err(DockerError::InvalidName {
                    engine: spec.name.clone(),
                    reason: "another engine of the same scan has this name".to_owned(),
                })
            } else {
                scan_engine(spec, opts, now).await
            };
            match &result {
                Ok(assets) => tracing::info!(engine = %spec.name, containers = assets.len(), "scanned Docker engine"),
                Err(err) => tracing::warn!(engine = %spec.name, error = %err, "cannot scan Docker engine"),
            }
            EngineScan {
                engine: spec.name.clone(),
                result,
            }
        }
    });
    join_all(scans).await
}

async fn scan_engine(
    spec: &EngineSpec,
    opts: &DiscoverOptions,
    now: Timestamp,
) -> Result<Vec<Asset>, DockerError> {
    validate_name(&spec.name)?;
    let engine = Engine::connect(spec, opts.connect).await?;
    engine.containers(opts, now).await
}

impl Engine {
    /// This engine's containers as assets, sorted by name. A container or image removed
    /// between the listing and its inspection is skipped (the container) or left without
    /// digest and platform (the image).
    pub async fn containers(
        &self,
        opts: &DiscoverOptions,
        now: Timestamp,
    ) -> Result<Vec<Asset>, DockerError> {
        let listed = self
            .docker()
            .list_containers(Some(ListContainersOptions {
                all: opts.include_stopped,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error(Step::ListContainers, e))?;
        let concurrency = opts.concurrency.max(1);

        let targets: Vec<(String, Option<String>)> = listed
            .into_iter()
            // The executor's parked old container is part of an update, not an asset.
            .filter(|summary| {
                !summary
                    .names
                    .iter()
                    .flatten()
                    .any(|n| n.ends_with(crate::update::OLD_SUFFIX))
            })
            .filter(|summary| {
                let labels = summary.labels.as_ref();
                opts.scope.admits_scope(scope_in(|k| {
                    labels.and_then(|l| l.get(k)).map(String::as_str)
                }))
            })
            .filter_map(|summary| summary.id.map(|id| (id, summary.status)))
            .collect();
        let containers: Vec<(Option<String>, ContainerInspectResponse)> = stream::iter(targets)
            .map(|(id, status)| async move {
                Ok::<_, DockerError>(
                    self.inspect_container(&id)
                        .await?
                        .map(|inspect| (status, inspect)),
                )
            })
            .buffer_unordered(concurrency)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;

        let image_ids: BTreeSet<String> = containers
            .iter()
            .filter_map(|(_, c)| c.image.clone())
            .filter(|id| !id.is_empty())
            .collect();
        let images: HashMap<String, ImageInspect> = stream::iter(image_ids)
            .map(|id| async move {
                Ok::<_, DockerError>(self.inspect_image(&id).await?.map(|image| (id, image)))
            })
            .buffer_unordered(concurrency)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;

        let mut assets = containers
            .iter()
            .map(|(status, container)| {
                let image = container.image.as_ref().and_then(|id| images.get(id));
                container_asset(self.name(), container, image, status.as_deref(), now).map_err(
                    |source| DockerError::Malformed {
                        engine: self.name().to_owned(),
                        container: container
                            .name
                            .clone()
                            .or_else(|| container.id.clone())
                            .unwrap_or_default(),
                        source,
                    },
                )
            })
            .collect::<Result<Vec<Asset>, DockerError>>()?;
        assets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(assets)
    }

    /// The container's inspect data, or none if it no longer exists.
    async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self.docker().inspect_container(id, None).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(source) => {
                let err = self.error(
                    Step::InspectContainer {
                        container: id.to_owned(),
                    },
                    source,
                );
                if err.is_not_found() {
                    tracing::debug!(engine = %self.name(), container = %id, "container vanished during the scan");
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The image's inspect data, or none if it no longer exists.
    async fn inspect_image(&self, id: &str) -> Result<Option<ImageInspect>, DockerError> {
        match self.docker().inspect_image(id).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(source) => {
                let err = self.error(
                    Step::InspectImage {
                        image: id.to_owned(),
                    },
                    source,
                );
                if err.is_not_found() {
                    tracing::debug!(engine = %self.name(), image = %id, "image of a container is gone");
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_engine_and_a_duplicate_name_each_get_their_own_error() {
        let dead = EngineSpec {
            name: "dead".into(),
            host: "unix:///nonexistent/safe-updater-test/docker.sock".into(),
            tls: None,
        };
        let now: Timestamp = "2025-06-01T12:00:00Z".parse().expect("ts");
        let scans = discover(
            &[dead.clone(), dead.clone()],
            DiscoverOptions::default(),
            now,
        )
        .await;
        assert_eq!(scans.len(), 2);
        assert_eq!(scans[0].engine, "dead");
        assert!(matches!(
            scans[0].result,
            Err(DockerError::Request {
                step: Step::Connect,
                ..
            })
        ));
        assert!(matches!(
            scans[1].result,
            Err(DockerError::InvalidName { .. })
        ));
    }
}
