//! The adapter's error type. Messages name the context, namespace, object and step, never a
//! secret's content (pull-secret payloads and Helm values stay out of every message).

use std::fmt;

/// What went wrong talking to a cluster, decoding what it holds, or running `helm`.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig or in-cluster configuration could not be loaded.
    #[error("cannot load the Kubernetes configuration{}: {detail}", ctx_suffix(.context))]
    Config {
        context: Option<String>,
        detail: String,
    },
    /// The client refused a write because it was built read-only.
    #[error("read-only mode: refused {verb} {resource}{}", name_suffix(.name))]
    ReadOnly {
        verb: String,
        resource: String,
        name: Option<String>,
    },
    /// A request this code does not declare in [`crate::rbac::API_CALLS`]; the RBAC manifests
    /// are checked against that table, so an undeclared call would fail in clusters.
    #[error(
        "undeclared API call: {verb} {resource} (group {group:?}); add it to rbac::API_CALLS and deploy/rbac"
    )]
    Undeclared {
        group: String,
        resource: String,
        verb: String,
    },
    /// The API server answered with an error.
    #[error("{step}: {source}")]
    Api {
        step: String,
        #[source]
        source: kube::Error,
    },
    /// Something the cluster holds could not be read (a Helm release Secret, a pull Secret).
    #[error("{what}: {detail}")]
    Decode { what: String, detail: String },
    /// The object is not what the request assumed (no such container, Helm-managed...).
    #[error("{0}")]
    Invalid(String),
    /// The `helm` CLI failed or could not be run.
    #[error("helm {step} failed: {detail}")]
    Helm { step: String, detail: String },
    /// A chart repository or registry could not be read.
    #[error("chart source {source_name}: {detail}")]
    Chart { source_name: String, detail: String },
    /// A command run in a pod (`pods/exec`) gave no exit code: timed out, the connection
    /// failed, or the runtime could not run it.
    #[error("{what}: {detail}")]
    Exec { what: String, detail: String },
    /// A rollout did not complete before its deadline.
    #[error("rollout of {object} did not complete: {detail}")]
    Rollout { object: String, detail: String },
}

impl KubeError {
    /// The HTTP status the API server answered with, for an API error.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            KubeError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }

    /// Wraps a client error, bringing the guard's refusals back out as their own variants.
    pub fn api(step: impl fmt::Display, source: kube::Error) -> KubeError {
        // The read-only and table guards travel through kube's error as a service error;
        // bring them back out so callers can match on them.
        if let kube::Error::Service(inner) = &source
            && let Some(guard) = inner.downcast_ref::<crate::guard::GuardRefusal>()
        {
            return guard.to_error();
        }
        KubeError::Api {
            step: step.to_string(),
            source,
        }
    }

    /// Whether the API server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::Api { source: kube::Error::Api(s), .. } if s.code == 404)
    }

    /// Whether the API server answered 409 (a conflict: field ownership or resource version).
    pub fn is_conflict(&self) -> bool {
        matches!(self, KubeError::Api { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}

fn ctx_suffix(context: &Option<String>) -> String {
    context
        .as_deref()
        .map(|c| format!(" (context {c:?})"))
        .unwrap_or_default()
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_deref().map(|n| format!(" {n}")).unwrap_or_default()
}
