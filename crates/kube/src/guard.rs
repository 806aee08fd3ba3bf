//! The one place writes are refused: a tower layer under the Kubernetes client that reads every
//! request as RBAC would ([`crate::rbac::request_attributes`]) and
//!
//! * refuses any write when the client was built read-only, before it leaves the process;
//! * refuses any call missing from [`crate::rbac::API_CALLS`], so the shipped RBAC manifests
//!   (checked against that table) always cover what the code does.
//!
//! The `helm` runner asks [`Mode::check_write`] too, so a read-only target never runs
//! `helm upgrade` or `helm rollback`. This module must not rewrite requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::KubeError;
use crate::rbac;

/// Whether a target may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Discovery and status only: every write is refused.
    #[default]
    ReadOnly,
    /// Image patches, restores, `helm upgrade` and `helm rollback` are allowed.
    Update,
}

impl Mode {
    /// Refuses `verb` on `resource` in read-only mode.
    pub fn check_write(
        self,
        verb: &str,
        resource: &str,
        name: Option<&str>,
    ) -> Result<(), KubeError> {
        match self {
            Mode::Update => Ok(()),
            Mode::ReadOnly => Err(KubeError::ReadOnly {
                verb: verb.to_owned(),
                resource: resource.to_owned(),
                name: name.map(str::to_owned),
            }),
        }
    }
}

/// Why the guard refused a request; travels through kube's `Error::Service` and is turned
/// back into a [`KubeError`] by `KubeError::api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardRefusal {
    ReadOnly {
        verb: String,
        resource: String,
        name: Option<String>,
    },
    Undeclared {
        group: String,
        resource: String,
        verb: String,
    },
}

impl GuardRefusal {
    pub(crate) fn to_error(&self) -> KubeError {
        match self.clone() {
            GuardRefusal::ReadOnly {
                verb,
                resource,
                name,
            } => KubeError::ReadOnly {
                verb,
                resource,
                name,
            },
            GuardRefusal::Undeclared {
                group,
                resource,
                verb,
            } => KubeError::Undeclared {
                group,
                resource,
                verb,
            },
        }
    }
}

impl std::fmt::Display for GuardRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_error())
    }
}

impl std::error::Error for GuardRefusal {}

/// Decides on one request; `Ok` lets it through.
pub fn check_request(
    mode: Mode,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Result<(), GuardRefusal> {
    let Some(attrs) = rbac::request_attributes(method, path, query) else {
        // Non-resource URLs (`/version`, discovery) change nothing; only GET is expected.
        return if method == "GET" {
            Ok(())
        } else {
            Err(GuardRefusal::Undeclared {
                group: String::new(),
                resource: path.to_owned(),
                verb: method.to_owned(),
            })
        };
    };
    if mode == Mode::ReadOnly && rbac::is_write(&attrs.verb) {
        return Err(GuardRefusal::ReadOnly {
            verb: attrs.verb,
            resource: attrs.resource,
            name: attrs.name,
        });
    }
    if rbac::declared(&attrs.group, &attrs.resource, &attrs.verb).is_none() {
        return Err(GuardRefusal::Undeclared {
            group: attrs.group,
            resource: attrs.resource,
            verb: attrs.verb,
        });
    }
    Ok(())
}

/// The tower layer; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct GuardLayer {
    pub mode: Mode,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;
    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService {
            inner,
            mode: self.mode,
        }
    }
}

/// The service [`GuardLayer`] wraps around the client's transport.
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    inner: S,
    mode: Mode,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for GuardService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let uri = req.uri();
        match check_request(self.mode, req.method().as_str(), uri.path(), uri.query()) {
            Ok(()) => {
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Err(refusal) => {
                tracing::warn!(%refusal, "request refused before leaving the process");
                Box::pin(std::future::ready(Err(Box::new(refusal) as BoxError)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_refuses_writes_and_update_allows_declared_ones() {
        let patch = (
            "PATCH",
            "/apis/apps/v1/namespaces/a/deployments/web",
            Some("fieldManager=safe-updater"),
        );
        assert!(matches!(
            check_request(Mode::ReadOnly, patch.0, patch.1, patch.2),
            Err(GuardRefusal::ReadOnly { .. })
        ));
        assert_eq!(
            check_request(Mode::Update, patch.0, patch.1, patch.2),
            Ok(())
        );
        assert_eq!(
            check_request(Mode::ReadOnly, "GET", "/apis/apps/v1/deployments", None),
            Ok(())
        );
        assert_eq!(
            check_request(Mode::ReadOnly, "GET", "/version", None),
            Ok(())
        );
        // Declared nowhere: deleting a Deployment, even in update mode.
        assert!(matches!(
            check_request(
                Mode::Update,
                "DELETE",
                "/apis/apps/v1/namespaces/a/deployments/web",
                None
            ),
            Err(GuardRefusal::Undeclared { .. })
        ));
        assert!(matches!(
            check_request(Mode::Update, "POST", "/version", None),
            Err(GuardRefusal::Undeclared { .. })
        ));
    }

    /// kube-rs opens an exec as a WebSocket GET: a write all the same.
    #[test]
    fn exec_is_a_write() {
        let exec = "/api/v1/namespaces/a/pods/web-1/exec";
        let q = Some("command=sh&stdout=true&stderr=true&container=web");
        assert!(matches!(
            check_request(Mode::ReadOnly, "GET", exec, q),
            Err(GuardRefusal::ReadOnly { ref verb, ref resource, .. })
                if verb == "create" && resource == "pods/exec"
        ));
        assert_eq!(check_request(Mode::Update, "GET", exec, q), Ok(()));
        // Attaching to a running process is declared nowhere.
        assert!(matches!(
            check_request(
                Mode::Update,
                "GET",
                "/api/v1/namespaces/a/pods/web-1/attach",
                q
            ),
            Err(GuardRefusal::Undeclared { .. })
        ));
    }
}
