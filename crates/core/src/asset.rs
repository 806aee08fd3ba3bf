//! What the updater tracks: one running thing whose image (or chart) can be updated.
//!
//! This module only describes assets; discovering them is the adapters' job.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The kind of a tracked asset. Kubernetes kinds keep their API names so that policy
/// matching (`kind: Deployment`) reads the way operators write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AssetKind {
    #[serde(rename = "container")]
    Container,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    HelmRelease,
}

impl AssetKind {
    pub const ALL: [AssetKind; 7] = [
        AssetKind::Container,
        AssetKind::Deployment,
        AssetKind::StatefulSet,
        AssetKind::DaemonSet,
        AssetKind::Job,
        AssetKind::CronJob,
        AssetKind::HelmRelease,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Container => "container",
            AssetKind::Deployment => "Deployment",
            AssetKind::StatefulSet => "StatefulSet",
            AssetKind::DaemonSet => "DaemonSet",
            AssetKind::Job => "Job",
            AssetKind::CronJob => "CronJob",
            AssetKind::HelmRelease => "HelmRelease",
        }
    }

    /// Parses a kind case-insensitively, accepting the names users type (`deploy`, `sts`, ...).
    pub fn parse(s: &str) -> Option<AssetKind> {
        let lower = s.to_ascii_lowercase();
        Some(match lower.as_str() {
            "container" | "docker" | "docker-container" => AssetKind::Container,
            "deployment" | "deploy" | "deployments" => AssetKind::Deployment,
            "statefulset" | "sts" | "statefulsets" => AssetKind::StatefulSet,
            "daemonset" | "ds" | "daemonsets" => AssetKind::DaemonSet,
            "job" | "jobs" => AssetKind::Job,
            "cronjob" | "cj" | "cronjobs" => AssetKind::CronJob,
            "helmrelease" | "helm" | "release" | "helm-release" => AssetKind::HelmRelease,
            _ => return None,
        })
    }

    /// The platform family, used as the `asset_type` label in metrics and for grouping.
    pub fn asset_type(self) -> &'static str {
        match self {
            AssetKind::Container => "docker",
            AssetKind::HelmRelease => "helm",
            _ => "kubernetes",
        }
    }
}

impl std::fmt::Display for AssetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tracked asset as discovered. `id` is stable across scans: adapters build it from where the
/// asset lives, never from its current version (e.g. `docker/<engine>/<container-name>` or
/// `k8s/<context>/<namespace>/<kind>/<name>/<container>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub kind: AssetKind,
    /// The Docker engine or Kubernetes context the asset lives on.
    pub location: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The container inside a pod template, when the asset is one container of a workload.
    pub container: Option<String>,
    /// The image reference (or chart reference for Helm releases) exactly as deployed.
    pub image: String,
    /// The digest the asset actually runs, when known (`sha256:...`).
    pub digest: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Adapter-specific facts (owner chain, ports, compose project...) kept opaque to the core.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}
