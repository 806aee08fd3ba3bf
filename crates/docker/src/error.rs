//! Errors of the Docker adapter. Every error names the engine (its name and host) and the step
//! that failed, and, where the cause is recognisable, says what to do about it.
//!
//! This module only describes failures; it must not retry, log or decide anything.

use std::fmt;
use std::time::Duration;

/// The step of talking to an engine that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Building the client (opening TLS files, checking the socket path). No request is sent.
    Connect,
    /// `GET /_ping`.
    Ping,
    /// `GET /containers/json`.
    ListContainers,
    /// `GET /containers/{id}/json`.
    InspectContainer { container: String },
    /// `GET /images/{id}/json`.
    InspectImage { image: String },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Connect => f.write_str("connect"),
            Step::Ping => f.write_str("ping"),
            Step::ListContainers => f.write_str("list containers"),
            Step::InspectContainer { container } => write!(f, "inspect container {container}"),
            Step::InspectImage { image } => write!(f, "inspect image {image}"),
        }
    }
}

/// Why a container's inspect data cannot be turned into an asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    #[error("the engine reported a container without an id")]
    MissingId,
    #[error("the engine reported no name for the container")]
    MissingName,
    #[error("the engine reported no image reference (Config.Image) for the container")]
    MissingImage,
    #[error("cannot encode the container's facts as JSON: {0}")]
    Extra(String),
}

/// A failure of the Docker adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The engine's name cannot be used (empty, contains `/`, or used twice in one scan).
    #[error("Docker engine name {engine:?} is not usable: {reason}")]
    InvalidName { engine: String, reason: String },

    /// The engine's host setting cannot be used.
    #[error(
        "Docker engine {engine:?}: host {host:?} is not usable: {reason}. Write unix:///path/to/docker.sock, \
         tcp://host:port or https://host:port (the last two with TLS files for https)"
    )]
    InvalidHost {
        engine: String,
        host: String,
        reason: String,
    },

    /// A Docker environment variable (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, ...) cannot be used.
    #[error("environment variable {var}={value:?} is not usable: {reason}")]
    Environment {
        var: &'static str,
        value: String,
        reason: String,
    },

    /// A request to the engine failed: it could not be reached, refused the connection, failed
    /// TLS, or answered with an error.
    #[error(
        "Docker engine {engine:?} at {host}: cannot {step}: {source}{}",
        hint_suffix(hint)
    )]
    Request {
        engine: String,
        host: String,
        step: Step,
        /// What to do about it, when the cause is recognised.
        hint: Option<String>,
        /// Boxed: bollard's error is large and this one travels in every `Result`.
        #[source]
        source: Box<bollard::errors::Error>,
    },

    /// The engine did not answer in time.
    #[error(
        "Docker engine {engine:?} at {host}: {step} got no answer within {}s. Is the engine \
         running and reachable from here (firewall, VPN, the port in the host setting)?",
        after.as_secs_f64()
    )]
    Timeout {
        engine: String,
        host: String,
        step: Step,
        after: Duration,
    },

    /// The engine described a container in a way that cannot be used.
    #[error("Docker engine {engine:?}: container {container}: {source}")]
    Malformed {
        engine: String,
        container: String,
        #[source]
        source: MappingError,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(". {h}"),
        None => String::new(),
    }
}

impl DockerError {
    /// The engine the error is about, when it is about one.
    pub fn engine(&self) -> Option<&str> {
        match self {
            DockerError::InvalidName { engine, .. }
            | DockerError::InvalidHost { engine, .. }
            | DockerError::Request { engine, .. }
            | DockerError::Timeout { engine, .. }
            | DockerError::Malformed { engine, .. } => Some(engine),
            DockerError::Environment { .. } => None,
        }
    }

    /// Builds a [`DockerError::Request`] (or [`DockerError::Timeout`] for bollard's own request
    /// timeout), recognising common causes to say what to do.
    pub(crate) fn request(
        engine: &str,
        host: &str,
        step: Step,
        timeout: Duration,
        source: bollard::errors::Error,
    ) -> DockerError {
        if matches!(source, bollard::errors::Error::RequestTimeoutError) {
            return DockerError::Timeout {
                engine: engine.to_owned(),
                host: host.to_owned(),
                step,
                after: timeout,
            };
        }
        DockerError::Request {
            engine: engine.to_owned(),
            host: host.to_owned(),
            hint: hint_for(&source, host),
            step,
            source: Box::new(source),
        }
    }

    /// Whether the engine answered "404 not found" (the object vanished between two calls).
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            DockerError::Request { source, .. } => matches!(
                **source,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                }
            ),
            _ => false,
        }
    }
}

/// What to do about a failed request, for the causes worth recognising.
fn hint_for(error: &bollard::errors::Error, host: &str) -> Option<String> {
    use bollard::errors::Error as B;
    let start = "Start the Docker daemon (`systemctl start docker`, or `dockerd`), or point the \
                 engine's host (DOCKER_HOST) at the right place";
    match error {
        B::SocketNotFoundError(path) => {
            return Some(format!(
                "There is no socket at {path}: the Docker daemon is not running there. {start}"
            ));
        }
        B::CertPathError { .. }
        | B::CertParseError { .. }
        | B::CertMultipleKeys { .. }
        | B::NoNativeCertsError { .. }
        | B::LoadNativeCertsErrors { .. } => {
            return Some(
                "Check the TLS files (ca.pem, cert.pem, key.pem; DOCKER_CERT_PATH): they must \
                 exist, be readable and hold PEM data"
                    .to_owned(),
            );
        }
        B::DockerResponseServerError { status_code, .. } => {
            return match status_code {
                401 | 403 => Some(
                    "The engine refused this client: check the TLS client certificate or the \
                     authorization plugin of the engine"
                        .to_owned(),
                ),
                _ => None,
            };
        }
        _ => {}
    }
    // bollard's `IOError` is transparent: its own `source()` skips the io::Error it wraps.
    let io_kind = match error {
        B::IOError { err } => Some(err.kind()),
        _ => io_error_kind(error),
    };
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            Some(format!("Nothing accepts connections at {host}. {start}"))
        }
        Some(std::io::ErrorKind::NotFound) => Some(format!("Nothing exists at {host}. {start}")),
        Some(std::io::ErrorKind::PermissionDenied) => Some(
            "This user may not open the engine's socket: add it to the `docker` group, or run \
             as a user that may"
                .to_owned(),
        ),
        _ => {
            if chain_mentions(error, &["certificate", "tls", "handshake"]) {
                Some(
                    "The TLS handshake failed: check that ca.pem signed the engine's certificate \
                     and that the engine accepts cert.pem/key.pem"
                        .to_owned(),
                )
            } else if chain_mentions(error, &["dns", "resolve", "lookup"]) {
                Some(format!(
                    "The host name in {host} does not resolve: check the engine's host"
                ))
            } else {
                None
            }
        }
    }
}

/// The kind of the first `std::io::Error` in the error's source chain.
fn io_error_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

fn chain_mentions(error: &(dyn std::error::Error + 'static), words: &[&str]) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if words.iter().any(|w| text.contains(w)) {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_says_what_to_do() {
        let err = DockerError::request(
            "local",
            "unix:///nope/docker.sock",
            Step::Connect,
            Duration::from_secs(5),
            bollard::errors::Error::SocketNotFoundError("/nope/docker.sock".into()),
        );
        let msg = err.to_string();
        assert!(msg.contains("\"local\""), "{msg}");
        assert!(msg.contains("unix:///nope/docker.sock"), "{msg}");
        assert!(msg.contains("cannot connect"), "{msg}");
        assert!(msg.contains("Start the Docker daemon"), "{msg}");
        assert_eq!(err.engine(), Some("local"));
    }

    #[test]
    fn refused_connection_is_recognised_through_the_chain() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = DockerError::request(
            "e1",
            "tcp://127.0.0.1:1",
            Step::Ping,
            Duration::from_secs(5),
            bollard::errors::Error::IOError { err: io },
        );
        let msg = err.to_string();
        assert!(msg.contains("cannot ping"), "{msg}");
        assert!(msg.contains("Nothing accepts connections"), "{msg}");
    }

    #[test]
    fn bollard_timeout_becomes_timeout() {
        let err = DockerError::request(
            "e1",
            "tcp://10.0.0.1:2376",
            Step::ListContainers,
            Duration::from_secs(3),
            bollard::errors::Error::RequestTimeoutError,
        );
        assert!(matches!(err, DockerError::Timeout { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("list containers got no answer within 3s"),
            "{msg}"
        );
    }

    #[test]
    fn not_found_is_detected() {
        let err = DockerError::request(
            "e1",
            "unix:///run/docker.sock",
            Step::InspectContainer {
                container: "abc".into(),
            },
            Duration::from_secs(3),
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such container: abc".into(),
            },
        );
        assert!(err.is_not_found());
        assert!(err.to_string().contains("inspect container abc"));
    }
}
