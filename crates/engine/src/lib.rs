//! One cycle of safe-updater, wired together: **discover** (Docker engines → assets in the
//! store), **detect** (registry facts, each repository asked once per cycle) and **decide**
//! (the core's pure `evaluate`, per asset), with every step recorded in the store and its
//! audit trail.
//!
//! Then **execute**, **verify** and **roll back** behind the same store records (snapshot
//! first, then change): Docker in `apply`/`run`, Kubernetes and Helm in `kube_apply` (with
//! `kube_session` for settings, `kube` for discovery and `kube_check` for detection).
//!
//! This crate orchestrates; it holds no policy of its own. What may happen is decided by
//! `safe_updater_core::decide`; what registries, engines and clusters say comes from the
//! adapter crates.

mod apply;
mod check;
pub mod kube;
pub mod kube_apply;
pub mod kube_check;
pub mod kube_session;
pub mod lease;
pub mod operator;
pub mod progress;
mod run;
mod scan;
mod settings;
pub mod stop;

pub use apply::{
    ApplyOutcome, ApplySettings, ApplyStatus, PlannedUpdate, Recovery, apply, blocked_by,
    plan_update, pull_auth, pull_auths, pull_auths_for, recover, registry_of,
};
pub use check::{AssetCheck, CheckReport, check, check_each, check_some};
pub use kube_apply::{
    KubeApplied, KubeRunReport, apply_kube, recover_kube, rollback_kube, run_kube_observed,
    run_kube_once,
};
pub use kube_check::check_kube;
pub use kube_session::{KubeOverrides, KubeSession};
pub use operator::{OperatorError, PendingApproval};
pub use progress::Progress;
pub use run::{
    DependencyNode, RollbackReport, RunReport, WATCHTOWER_DEPENDS_ON, apply_by_policy, apply_one,
    connect_all, dependency_groups, dependency_groups_of, dependency_order, previous_version,
    rollback, run_once,
};
pub use scan::{EngineOutcome, ScanReport, scan};
pub use settings::{
    SecretError, SettingsError, engine_specs, env_lookup, registry_client_config, resolve_secret,
};
pub use stop::{Stop, StopRequest};

/// Errors that stop a whole step. Problems with one asset or one engine are reported in the
/// step's report instead, so the others still proceed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] safe_updater_store::StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot record the container snapshot: {0}")]
    Snapshot(String),
    /// Kubernetes settings that cannot be used (an unknown context, an unreadable kubeconfig or
    /// chart repository password); the message says what to do.
    #[error("{0}")]
    Kube(String),
}
