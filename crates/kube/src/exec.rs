//! Commands run in a pod's container through the API server (`pods/exec` over WebSocket), for
//! exec health checks after an update: [`KubeTarget::exec`] returns the exit code (read from the
//! status channel) and the output, bounded in size and time; [`KubeTarget::exec_pods`] names the
//! pods to run a check in.
//!
//! The read-only guard refuses exec (RBAC's verb for it is `create`), and the call is in
//! [`crate::rbac::API_CALLS`]. This module judges nothing: whether an exit code or output is
//! healthy is the caller's question. It must not send anything on stdin nor allocate a TTY.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use safe_updater_core::asset::AssetKind;
use safe_updater_core::reference::ImageRef;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::discover::pod_ready;
use crate::error::KubeError;
use crate::target::KubeTarget;
use crate::update::runs;

/// At most this much of stdout and of stderr is kept; the rest is read and dropped, so a
/// chatty command cannot stall on a full pipe nor fill memory.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// Standard output, then standard error (each cut at [`OUTPUT_LIMIT`]), lossily UTF-8.
    pub output: String,
    /// Whether either stream was longer than [`OUTPUT_LIMIT`].
    pub truncated: bool,
}

/// Reads the exec status channel's object as the API server's remotecommand protocol writes it:
/// `Success`, or `Failure` with reason `NonZeroExitCode` and a cause `ExitCode` holding the code.
/// Any other failure (no such container, the runtime failed) is an error: no exit code exists.
pub fn exit_code(status: &Status) -> Result<i64, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse::<i64>().ok());
        return code.ok_or_else(|| {
            format!(
                "non-zero exit without an exit code: {}",
                status.message.as_deref().unwrap_or("")
            )
        });
    }
    Err(status
        .message
        .clone()
        .unwrap_or_else(|| format!("exec failed: {status:?}")))
}

/// The pods to run a check in: those running `image` in `container`, Ready and not being
/// deleted — the new revision's serving pods — sorted by name, at most `limit`.
pub fn exec_targets(pods: &[Pod], container: &str, image: &str, limit: usize) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| runs_image(p, container, image) && pod_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names.truncate(limit);
    names
}

/// Whether the pod runs `image` in `container`, comparing references as Docker reads them (a
/// chart may render `docker.io/library/web:2` where the update asked for `web:2`).
fn runs_image(pod: &Pod, container: &str, image: &str) -> bool {
    if runs(pod, container, image) {
        return true;
    }
    let familiar = |s: &str| ImageRef::parse(s).ok().map(|r| r.familiar_string());
    let Some(want) = familiar(image) else {
        return false;
    };
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| {
            c.name == container && c.image.as_deref().and_then(familiar) == Some(want.clone())
        })
    })
}

/// Reads a stream to its end, keeping at most `limit` bytes.
async fn drain<R: AsyncRead + Unpin>(reader: Option<R>, limit: usize) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

impl KubeTarget {
    /// Runs `command` in `container` of pod `ns/pod` and waits at most `timeout` for it to end.
    /// On timeout the connection is closed; like `kubectl exec`, that does not stop a command
    /// still running in the container.
    pub async fn exec(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, KubeError> {
        let what = format!("exec in pod {ns}/{pod} container {container}");
        if command.is_empty() {
            return Err(KubeError::Invalid(format!("{what}: no command")));
        }
        let api: Api<Pod> = Api::namespaced(self.client().clone(), ns);
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true)
            .tty(false);
        let run = async {
            let mut process = api
                .exec(pod, command.to_vec(), &params)
                .await
                .map_err(|e| KubeError::api(&what, e))?;
            let status = process.take_status();
            let ((out, out_cut), (err, err_cut)) = tokio::join!(
                drain(process.stdout(), OUTPUT_LIMIT),
                drain(process.stderr(), OUTPUT_LIMIT)
            );
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            // The connection's own errors (a reset) matter only when no status arrived.
            let joined = process.join().await;
            let status = match (status, joined) {
                (Some(s), _) => s,
                (None, Err(e)) => {
                    return Err(KubeError::Exec {
                        what: what.clone(),
                        detail: format!("the connection failed before the command ended: {e}"),
                    });
                }
                (None, Ok(())) => {
                    return Err(KubeError::Exec {
                        what: what.clone(),
                        detail: "the connection closed without an exit status".into(),
                    });
                }
            };
            let exit_code = exit_code(&status).map_err(|detail| KubeError::Exec {
                what: what.clone(),
                detail,
            })?;
            let mut output = String::from_utf8_lossy(&out).into_owned();
            output.push_str(&String::from_utf8_lossy(&err));
            Ok(ExecOutput {
                exit_code,
                output,
                truncated: out_cut || err_cut,
            })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(KubeError::Exec {
                what,
                detail: format!("no exit within {}s", timeout.as_secs_f64()),
            }),
        }
    }

    /// The pods of workload `kind ns/name` to run a check of `container` on `image` in; see
    /// [`exec_targets`].
    pub async fn exec_pods(
        &self,
        kind: AssetKind,
        ns: &str,
        name: &str,
        container: &str,
        image: &str,
        limit: usize,
    ) -> Result<Vec<String>, KubeError> {
        let object = self.get_workload(kind, ns, name).await?;
        let pods = self.workload_pods(ns, &object).await?;
        Ok(exec_targets(&pods, container, image, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails, Time};

    fn status(json: serde_json::Value) -> Status {
        serde_json::from_value(json).expect("a Status")
    }

    #[test]
    fn exit_codes_from_the_status_channel() {
        assert_eq!(
            exit_code(&status(serde_json::json!({"status": "Success"}))),
            Ok(0)
        );
        // What the kubelet's ServeExec writes for `exit 3`.
        let three = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code: exit status 3".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    field: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(&three), Ok(3));
        let no_code = Status {
            details: None,
            ..three.clone()
        };
        assert!(
            exit_code(&no_code)
                .expect_err("no exit code")
                .contains("without an exit code")
        );
        let internal = status(serde_json::json!({
            "status": "Failure", "reason": "InternalError",
            "message": "error executing command in container: container \"x\" not found"}));
        assert!(
            exit_code(&internal)
                .expect_err("no exit code")
                .contains("not found")
        );
    }

    fn pod(name: &str, image: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "web", "image": image}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .expect("a Pod")
    }

    #[test]
    fn checks_run_in_ready_pods_of_the_new_image_only() {
        let mut deleting = pod("a-deleting", "web:2", true);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let pods = vec![
            pod("c-new", "web:2", true),
            pod("b-old", "web:1", true),
            pod("d-new-unready", "web:2", false),
            pod("a-new", "web:2", true),
            deleting,
            pod("e-new", "web:2", true),
        ];
        assert_eq!(
            exec_targets(&pods, "web", "web:2", 5),
            vec!["a-new", "c-new", "e-new"]
        );
        assert_eq!(
            exec_targets(&pods, "web", "web:2", 2),
            vec!["a-new", "c-new"]
        );
        assert!(exec_targets(&pods, "other", "web:2", 5).is_empty());
        let rendered = vec![pod("a", "docker.io/library/web:2", true)];
        assert_eq!(exec_targets(&rendered, "web", "web:2", 5), vec!["a"]);
    }

    #[tokio::test]
    async fn output_is_bounded_and_drained() {
        let data = vec![b'x'; OUTPUT_LIMIT * 3 + 17];
        let (kept, cut) = drain(Some(&data[..]), OUTPUT_LIMIT).await;
        assert_eq!(kept.len(), OUTPUT_LIMIT);
        assert!(cut);
        let (kept, cut) = drain(Some(&b"ok\n"[..]), OUTPUT_LIMIT).await;
        assert_eq!((kept.as_slice(), cut), (&b"ok\n"[..], false));
        let (kept, cut) = drain(None::<&[u8]>, OUTPUT_LIMIT).await;
        assert!(kept.is_empty() && !cut);
    }
}
