//! Docker engine adapter of safe-updater: discovery of containers on one or many engines.
//!
//! * [`engine`] — where an engine is ([`EngineSpec`], from Docker's environment variables or
//!   from configuration) and a connected, pinged client ([`Engine`]);
//! * [`discover()`] — every engine scanned concurrently, each container an
//!   [`Asset`](safe_updater_core::asset::Asset) with `id` `docker/<engine>/<container name>`;
//! * [`mapping`] — the pure translation of the engine's inspect data into assets;
//! * [`extra`] — the typed Docker facts kept in `Asset::extra` ([`ContainerExtra`]);
//! * [`error`] — errors naming the engine, its host and the failed step.
//!
//! This crate reads engines. It must not decide anything (that is the core's `decide`), and
//! discovery must not change anything on an engine: no pull, create, stop or remove.

pub mod discover;
pub mod engine;
pub mod error;
pub mod extra;
pub mod health;
pub mod lifecycle;
pub mod mapping;
pub mod update;

pub use discover::{DiscoverOptions, EngineScan, discover};
pub use engine::{ConnectOptions, DEFAULT_ENGINE_NAME, DEFAULT_HOST, Engine, EngineSpec, TlsPaths};
pub use error::{DockerError, MappingError, Step};
pub use extra::{ComposeDependency, ContainerExtra, Platform, PortMapping};
pub use health::{
    Backoff, Check, ExecCheck, HealthReport, HttpCheck, Monitor, Observation, TcpCheck, monitor,
};
pub use mapping::container_asset;
pub use update::{
    ContainerSnapshot, NewState, OldState, Phase, RegistryAuth, UpdateCause, UpdateError,
    UpdateState, UpdateStep,
};

/// The bollard version this crate talks through, re-exported so callers and tests use the same
/// types (`bollard::models`, `bollard::query_parameters`).
pub use bollard;
