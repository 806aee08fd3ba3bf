//! Kubernetes and Helm adapter: discovery of workloads and Helm releases, image patches,
//! `helm upgrade`/`rollback`, and rollout watching. No policy lives here: what to update is the
//! core's decision; this crate only reports what runs and carries out (or undoes) a change.
//!
//! * [`KubeTarget`] is one cluster context: [`KubeTarget::connect`] (kubeconfig + context, or
//!   in-cluster; [`KubeTarget::contexts`] lists a kubeconfig's contexts),
//!   [`KubeTarget::discover`] → [`DiscoveryReport`] (assets of every container and init
//!   container of Deployments, StatefulSets, DaemonSets, Jobs, CronJobs; Helm releases; CRD
//!   facts), [`KubeTarget::pull_credentials`] (the workload's imagePullSecrets and its service
//!   account's, as registry credentials).
//! * Not Helm-managed workloads: [`KubeTarget::snapshot`], [`KubeTarget::apply_image`] (patch →
//!   rollout → window → restore on failure, returning the snapshot in [`update::Outcome`]),
//!   [`KubeTarget::restore`] (put a stored snapshot back, e.g. after a crash).
//! * Helm: [`helm::Helm`] runs the real `helm` CLI (3 or 4); [`KubeTarget::helm_upgrade`]
//!   (chart version; dry run, verify, `helm rollback` on failure), [`KubeTarget::helm_set_image`]
//!   (a Helm-managed workload's image through the release's values), [`helm::Helm::rollback`]
//!   (field-ownership conflicts retried with `--force-conflicts` on Helm 4).
//! * [`exec`]: [`KubeTarget::exec`] runs a command in a pod's container through the API
//!   server (exit code and bounded output, with a timeout), for exec health checks.
//! * [`charts`] lists chart versions from a Helm repository `index.yaml` or an OCI registry,
//!   as the core's `Available` list filtered by a constraint.
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
pub mod exec;
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
