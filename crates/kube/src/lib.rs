//! Kubernetes and Helm adapter: discovery of workloads and Helm releases, image patches,
//! `helm upgrade`/`rollback`, and rollout watching. No policy lives here: what to update is the
//! core's decision; this crate only reports what runs and carries out (or undoes) a change.
//!
//! * [`KubeTarget`] is one cluster context: [`KubeTarget::connect`], [`KubeTarget::discover`],
//!   [`KubeTarget::pull_credentials`], [`KubeTarget::apply_image`], [`KubeTarget::restore`].
//! * [`helm::Helm`] runs the real `helm` CLI: upgrade (after a server-side dry run), rollback.
//! * [`charts`] lists chart versions from a Helm repository `index.yaml` or an OCI registry.
//! * Sans-IO parts, unit-tested without a cluster: [`helm_release`] (release Secrets),
//!   [`discover`] (objects → assets), [`pull_secrets`], [`rollout`] (status → progress),
//!   [`rbac`] (the table of every API call, checked against `deploy/rbac/`).
//!
//! Writes are refused in one place, [`guard`], a layer under the Kubernetes client: a target
//! connected read-only cannot change the cluster, and no request outside [`rbac::API_CALLS`]
//! leaves the process.

pub mod charts;
pub mod discover;
pub mod error;
pub mod guard;
pub mod helm;
pub mod helm_release;
pub mod pull_secrets;
pub mod rbac;
pub mod rollout;
pub mod target;
pub mod update;

pub use error::KubeError;
pub use guard::Mode;
pub use target::{ConnectOptions, DiscoveryFilter, DiscoveryReport, KubeTarget};
