//! Docker engines: where they are ([`EngineSpec`], read from Docker's environment variables by
//! [`EngineSpec::from_env`]) and a connected client ([`Engine`]) that has answered a ping.
//!
//! This module only opens connections and pings. It must not list, inspect or change anything
//! (that is `discover` and, later, the executor), and it reads the process environment in one
//! place only, [`EngineSpec::from_env`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};
use serde::{Deserialize, Serialize};

use crate::error::{DockerError, Step};

/// The socket Docker listens on by default, and the default `host` of an engine.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The name [`EngineSpec::from_env`] gives the engine it describes (Docker's own name for the
/// context the environment selects).
pub const DEFAULT_ENGINE_NAME: &str = "default";

/// Docker's default port for plain TCP (`tcp://host` without a port).
const DEFAULT_HTTP_PORT: u16 = 2375;
/// Docker's default port for TCP with TLS.
const DEFAULT_TLS_PORT: u16 = 2376;

/// Where an engine is, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSpec {
    /// The engine's name in this tool: part of every asset id (`docker/<name>/<container>`), so
    /// it must be non-empty, must not contain `/`, and must stay the same across runs.
    pub name: String,
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `http://host:2375`, `https://host:2376`.
    pub host: String,
    /// Client TLS files; required for `https://`, turns `tcp://` into TLS with verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPaths>,
}

/// The TLS files of a Docker client, as `docker --tlsverify` uses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPaths {
    /// The CA that signed the engine's certificate (`ca.pem`).
    pub ca: PathBuf,
    /// The client certificate (`cert.pem`).
    pub cert: PathBuf,
    /// The client key (`key.pem`).
    pub key: PathBuf,
}

impl TlsPaths {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir`, Docker's layout of `DOCKER_CERT_PATH`.
    pub fn in_dir(dir: &Path) -> TlsPaths {
        TlsPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

impl EngineSpec {
    /// The local engine on Docker's default socket.
    pub fn local(name: &str) -> EngineSpec {
        EngineSpec {
            name: name.to_owned(),
            host: DEFAULT_HOST.to_owned(),
            tls: None,
        }
    }

    /// The engine the docker CLI would talk to, from the process environment: see
    /// [`EngineSpec::from_env_vars`]. The engine is named [`DEFAULT_ENGINE_NAME`].
    pub fn from_env() -> Result<EngineSpec, DockerError> {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        EngineSpec::from_env_vars(DEFAULT_ENGINE_NAME, &vars)
    }

    /// The engine described by Docker's environment variables, the docker CLI's way:
    ///
    /// * `DOCKER_HOST` (unset or empty: [`DEFAULT_HOST`]); `unix://`, `tcp://`, `http://` and
    ///   `https://` are supported, `ssh://` and `npipe://` are not;
    /// * `DOCKER_TLS_VERIFY` non-empty: TLS with verification of the engine, using `ca.pem`,
    ///   `cert.pem` and `key.pem` from `DOCKER_CERT_PATH`, or else from the docker
    ///   configuration directory (`DOCKER_CONFIG`, or `$HOME/.docker`);
    /// * `DOCKER_TLS` without `DOCKER_TLS_VERIFY` (TLS without verifying the engine) is refused,
    ///   since this tool will not talk to an engine it cannot authenticate.
    ///
    /// TLS applies to TCP hosts only; with a `unix://` host the TLS variables are ignored, as
    /// the docker CLI does.
    pub fn from_env_vars(name: &str, vars: &[(String, String)]) -> Result<EngineSpec, DockerError> {
        let get = |key: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let host = get("DOCKER_HOST").unwrap_or(DEFAULT_HOST).to_owned();
        let scheme = host.split_once("://").map(|(s, _)| s).unwrap_or("");
        if !matches!(scheme, "unix" | "tcp" | "http" | "https") {
            return Err(DockerError::Environment {
                var: "DOCKER_HOST",
                value: host.clone(),
                reason:
                    "only unix://, tcp://, http:// and https:// hosts are supported (not ssh:// \
                         or npipe://)"
                        .to_owned(),
            });
        }
        let verify = get("DOCKER_TLS_VERIFY").is_some();
        let tls_only = get("DOCKER_TLS");
        let tcp = matches!(scheme, "tcp" | "https");
        let tls = if tcp && verify {
            let dir = match (get("DOCKER_CERT_PATH"), get("DOCKER_CONFIG"), get("HOME")) {
                (Some(path), _, _) => PathBuf::from(path),
                (None, Some(config), _) => PathBuf::from(config),
                (None, None, Some(home)) => Path::new(home).join(".docker"),
                (None, None, None) => {
                    return Err(DockerError::Environment {
                        var: "DOCKER_CERT_PATH",
                        value: String::new(),
                        reason: "DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH, \
                                 DOCKER_CONFIG nor HOME says where ca.pem, cert.pem and key.pem \
                                 are"
                        .to_owned(),
                    });
                }
            };
            Some(TlsPaths::in_dir(&dir))
        } else if tcp && scheme == "https" {
            return Err(DockerError::Environment {
                var: "DOCKER_HOST",
                value: host.clone(),
                reason: "an https:// host needs DOCKER_TLS_VERIFY=1 and the TLS files in \
                         DOCKER_CERT_PATH"
                    .to_owned(),
            });
        } else if let (true, Some(value)) = (tcp, tls_only) {
            return Err(DockerError::Environment {
                var: "DOCKER_TLS",
                value: value.to_owned(),
                reason:
                    "TLS without verifying the engine is not supported: set DOCKER_TLS_VERIFY=1 \
                         and give the engine's CA as ca.pem in DOCKER_CERT_PATH"
                        .to_owned(),
            });
        } else {
            None
        };
        Ok(EngineSpec {
            name: name.to_owned(),
            host,
            tls,
        })
    }

    /// Checks the name and the host without connecting.
    pub fn validate(&self) -> Result<(), DockerError> {
        validate_name(&self.name)?;
        self.endpoint().map(|_| ())
    }

    fn invalid_host(&self, reason: &str) -> DockerError {
        DockerError::InvalidHost {
            engine: self.name.clone(),
            host: self.host.clone(),
            reason: reason.to_owned(),
        }
    }

    /// How to connect, from `host` and `tls`.
    fn endpoint(&self) -> Result<Endpoint, DockerError> {
        let Some((scheme, rest)) = self.host.split_once("://") else {
            return Err(self.invalid_host("it has no scheme"));
        };
        match scheme {
            "unix" => {
                if rest.is_empty() || !rest.starts_with('/') {
                    return Err(self.invalid_host("a unix socket needs an absolute path"));
                }
                if self.tls.is_some() {
                    return Err(
                        self.invalid_host("TLS files are set but the host is a unix socket")
                    );
                }
                Ok(Endpoint::Unix(format!("unix://{rest}")))
            }
            "tcp" | "http" | "https" => {
                let authority = rest.trim_end_matches('/');
                if authority.is_empty() || authority.contains('/') {
                    return Err(self.invalid_host("expected host:port after the scheme"));
                }
                let with_tls = self.tls.is_some();
                if scheme == "http" && with_tls {
                    return Err(self.invalid_host("TLS files are set but the host says http://"));
                }
                if scheme == "https" && !with_tls {
                    return Err(self.invalid_host("an https:// host needs TLS files"));
                }
                let authority = if has_port(authority) {
                    authority.to_owned()
                } else {
                    let port = if with_tls {
                        DEFAULT_TLS_PORT
                    } else {
                        DEFAULT_HTTP_PORT
                    };
                    format!("{authority}:{port}")
                };
                Ok(match &self.tls {
                    Some(tls) => Endpoint::Https(authority, tls.clone()),
                    None => Endpoint::Http(authority),
                })
            }
            _ => Err(self.invalid_host(&format!("the scheme {scheme}:// is not supported"))),
        }
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((before, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!before.starts_with('[') || before.ends_with(']'))
        }
        None => false,
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), DockerError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') {
        "it contains '/', which separates the parts of asset ids"
    } else if name.chars().any(char::is_whitespace) {
        "it contains whitespace"
    } else {
        return Ok(());
    };
    Err(DockerError::InvalidName {
        engine: name.to_owned(),
        reason: reason.to_owned(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `unix:///path`.
    Unix(String),
    /// `host:port`, plain HTTP.
    Http(String),
    /// `host:port`, TLS with verification and a client certificate.
    Https(String, TlsPaths),
}

/// How long to wait for an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// How long the first ping may take before the engine counts as down.
    pub connect_timeout: Duration,
    /// How long any later request may take (bollard counts whole seconds; at least 1s).
    pub request_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A client of one engine that has answered a ping.
#[derive(Debug, Clone)]
pub struct Engine {
    spec: EngineSpec,
    options: ConnectOptions,
    docker: Docker,
}

impl Engine {
    /// Builds the client for `spec`, pings the engine within `options.connect_timeout` and
    /// negotiates the API version down to the engine's when it is older than bollard's.
    pub async fn connect(
        spec: &EngineSpec,
        options: ConnectOptions,
    ) -> Result<Engine, DockerError> {
        validate_name(&spec.name)?;
        let endpoint = spec.endpoint()?;
        let secs = options.request_timeout.as_secs().max(1);
        let request_timeout = Duration::from_secs(secs);
        let built = match &endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(path, secs, API_DEFAULT_VERSION),
            Endpoint::Http(authority) => {
                Docker::connect_with_http(authority, secs, API_DEFAULT_VERSION)
            }
            Endpoint::Https(authority, tls) => {
                install_crypto_provider();
                Docker::connect_with_ssl(
                    authority,
                    &tls.key,
                    &tls.cert,
                    &tls.ca,
                    secs,
                    API_DEFAULT_VERSION,
                )
            }
        };
        let docker = built.map_err(|e| {
            DockerError::request(&spec.name, &spec.host, Step::Connect, request_timeout, e)
        })?;
        let engine = Engine {
            spec: spec.clone(),
            options: ConnectOptions {
                connect_timeout: options.connect_timeout,
                request_timeout,
            },
            docker,
        };
        engine.ping().await?;
        // bollard asks `/version` and lowers its API version to the engine's when that is
        // older. A failure here is not fatal: the engine answered the ping, and requests then
        // go out with bollard's version (which the engine may refuse, reported at that step).
        match engine.docker.clone().negotiate_version().await {
            Ok(docker) => Ok(Engine { docker, ..engine }),
            Err(err) => {
                tracing::debug!(engine = %spec.name, error = %err, "API version negotiation failed");
                Ok(engine)
            }
        }
    }

    /// `GET /_ping`, within the connect timeout.
    pub async fn ping(&self) -> Result<(), DockerError> {
        let after = self.options.connect_timeout;
        match tokio::time::timeout(after, self.docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error(Step::Ping, e)),
            Err(_) => Err(DockerError::Timeout {
                engine: self.spec.name.clone(),
                host: self.spec.host.clone(),
                step: Step::Ping,
                after,
            }),
        }
    }

    pub fn spec(&self) -> &EngineSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The bollard client, for the adapter's own steps and for tests that set up containers.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub(crate) fn error(&self, step: Step, source: bollard::errors::Error) -> DockerError {
        let hint = connection_hint(&self.spec, &step, &source);
        let mut err = DockerError::request(
            &self.spec.name,
            &self.spec.host,
            step,
            self.options.request_timeout,
            source,
        );
        if let (Some(better), DockerError::Request { hint, .. }) = (hint, &mut err) {
            *hint = Some(better);
        }
        err
    }
}

/// What to do about a failed request when the cause lies in TLS (or in its absence): the
/// generic hints of the error module cannot tell an untrusted engine from a refused client
/// certificate, and bollard's message shows none of it ("client error (Connect)").
fn connection_hint(
    spec: &EngineSpec,
    step: &Step,
    error: &bollard::errors::Error,
) -> Option<String> {
    match (&spec.tls, tls_cause(error)) {
        (Some(tls), Some(cause)) => Some(tls_hint(tls, cause)),
        // Plain HTTP to an engine that speaks TLS: the engine hangs up at the first request.
        (None, _) if *step == Step::Ping && !spec.host.starts_with("unix://") && hung_up(error) => {
            Some(
                "The engine closed the connection without answering: if it expects TLS \
                 (Docker's TLS port is 2376), set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or \
                 give the engine's TLS files (ca, cert, key)"
                    .to_owned(),
            )
        }
        _ => None,
    }
}

fn tls_hint(tls: &TlsPaths, cause: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let (ca, cert, key) = (tls.ca.display(), tls.cert.display(), tls.key.display());
    // bollard sends no client certificate, silently, when it cannot read the files.
    let unreadable: Vec<String> = [&tls.cert, &tls.key]
        .into_iter()
        .filter(|p| std::fs::File::open(p).is_err())
        .map(|p| p.display().to_string())
        .collect();
    let no_client_cert = if unreadable.is_empty() {
        String::new()
    } else {
        format!(
            "; no client certificate was sent because {} cannot be read",
            unreadable.join(" and ")
        )
    };
    match cause {
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "TLS: the engine's certificate does not name the host or address of the engine's \
             host setting ({cause}); use a name or address from its subjectAltName"
        ),
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!(
            "TLS: the engine's certificate is outside its validity period ({cause}); renew it, \
             or check this machine's clock"
        ),
        E::InvalidCertificate(_) => format!(
            "TLS: the engine's certificate is not trusted ({cause}): it must be signed by the CA \
             in {ca}"
        ),
        E::AlertReceived(A::CertificateRequired) => format!(
            "TLS: the engine requires a client certificate and did not get one ({cause}){no_client_cert}. \
             Give the client certificate and key ({cert}, {key})"
        ),
        E::AlertReceived(
            A::UnknownCA
            | A::BadCertificate
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied
            | A::DecryptError,
        ) => format!(
            "TLS: the engine refused the client certificate {cert} ({cause}){no_client_cert}: it \
             must be signed by a CA the engine trusts (its --tlscacert) and be valid now"
        ),
        other => format!(
            "TLS: the handshake with the engine failed ({other}){no_client_cert}. Check that \
             {ca} signed the engine's certificate and that the engine accepts {cert}/{key}"
        ),
    }
}

/// Each error in the chain, looking inside `std::io::Error`s too: their `source()` skips the
/// error they wrap, which is where rustls puts its own.
fn for_each_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
    mut visit: impl FnMut(&'a (dyn std::error::Error + 'static)) -> bool,
) {
    let mut current = Some(error);
    while let Some(e) = current {
        if visit(e) {
            return;
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
}

/// Where to start looking: bollard's `IOError` is transparent, its `source()` skips the
/// `std::io::Error` it holds.
fn first_cause(error: &bollard::errors::Error) -> &(dyn std::error::Error + 'static) {
    match error {
        bollard::errors::Error::IOError { err } => err,
        other => other,
    }
}

fn tls_cause(error: &bollard::errors::Error) -> Option<&rustls::Error> {
    let mut found = None;
    for_each_cause(first_cause(error), |e| {
        found = e.downcast_ref::<rustls::Error>();
        found.is_some()
    });
    found
}

fn hung_up(error: &bollard::errors::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut yes = false;
    for_each_cause(first_cause(error), |e| {
        yes = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe
            )
        }) || e
            .to_string()
            .contains("connection closed before message completed");
        yes
    });
    yes
}

/// Makes `ring` the process's rustls provider unless one is installed already, so that TLS
/// works even when another crate in the build enables a second rustls provider (rustls then
/// refuses to pick one by itself).
fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn empty_environment_is_the_default_socket() {
        let spec = EngineSpec::from_env_vars("default", &[]).expect("spec");
        assert_eq!(spec, EngineSpec::local("default"));
        let spec =
            EngineSpec::from_env_vars("default", &vars(&[("DOCKER_HOST", "")])).expect("spec");
        assert_eq!(spec.host, DEFAULT_HOST);
    }

    #[test]
    fn tls_verify_uses_the_cert_path() {
        let spec = EngineSpec::from_env_vars(
            "prod",
            &vars(&[
                ("DOCKER_HOST", "tcp://docker.example:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", "/etc/docker-certs"),
            ]),
        )
        .expect("spec");
        assert_eq!(spec.host, "tcp://docker.example:2376");
        assert_eq!(
            spec.tls,
            Some(TlsPaths {
                ca: "/etc/docker-certs/ca.pem".into(),
                cert: "/etc/docker-certs/cert.pem".into(),
                key: "/etc/docker-certs/key.pem".into(),
            })
        );
    }

    #[test]
    fn tls_files_default_to_the_docker_config_directory() {
        let spec = EngineSpec::from_env_vars(
            "e",
            &vars(&[
                ("DOCKER_HOST", "tcp://h:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("HOME", "/home/ops"),
            ]),
        )
        .expect("spec");
        assert_eq!(
            spec.tls.map(|t| t.ca),
            Some(PathBuf::from("/home/ops/.docker/ca.pem"))
        );
        let spec = EngineSpec::from_env_vars(
            "e",
            &vars(&[
                ("DOCKER_HOST", "tcp://h:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CONFIG", "/cfg"),
                ("HOME", "/home/ops"),
            ]),
        )
        .expect("spec");
        assert_eq!(spec.tls.map(|t| t.key), Some(PathBuf::from("/cfg/key.pem")));
    }

    #[test]
    fn tls_is_ignored_for_unix_sockets() {
        let spec = EngineSpec::from_env_vars(
            "e",
            &vars(&[
                ("DOCKER_HOST", "unix:///run/user/1000/docker.sock"),
                ("DOCKER_TLS_VERIFY", "1"),
            ]),
        )
        .expect("spec");
        assert_eq!(spec.tls, None);
        assert_eq!(
            spec.endpoint().expect("endpoint"),
            Endpoint::Unix("unix:///run/user/1000/docker.sock".into())
        );
    }

    #[test]
    fn unsupported_environment_is_refused_with_the_variable() {
        let err = EngineSpec::from_env_vars("e", &vars(&[("DOCKER_HOST", "ssh://me@host")]))
            .expect_err("ssh");
        assert!(err.to_string().contains("DOCKER_HOST"), "{err}");
        let err = EngineSpec::from_env_vars(
            "e",
            &vars(&[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_TLS", "1")]),
        )
        .expect_err("tls without verify");
        assert!(err.to_string().contains("DOCKER_TLS="), "{err}");
        let err = EngineSpec::from_env_vars("e", &vars(&[("DOCKER_HOST", "https://h")]))
            .expect_err("https without tls");
        assert!(err.to_string().contains("DOCKER_TLS_VERIFY"), "{err}");
    }

    #[test]
    fn endpoints_get_docker_default_ports() {
        let mut spec = EngineSpec {
            name: "e".into(),
            host: "tcp://10.1.2.3".into(),
            tls: None,
        };
        assert_eq!(
            spec.endpoint().expect("endpoint"),
            Endpoint::Http("10.1.2.3:2375".into())
        );
        spec.tls = Some(TlsPaths::in_dir(Path::new("/c")));
        assert_eq!(
            spec.endpoint().expect("endpoint"),
            Endpoint::Https("10.1.2.3:2376".into(), TlsPaths::in_dir(Path::new("/c")))
        );
        spec.host = "tcp://[::1]:2377/".into();
        assert_eq!(
            spec.endpoint().expect("endpoint"),
            Endpoint::Https("[::1]:2377".into(), TlsPaths::in_dir(Path::new("/c")))
        );
        spec.host = "tcp://[::1]".into();
        assert!(matches!(spec.endpoint(), Ok(Endpoint::Https(a, _)) if a == "[::1]:2376"));
    }

    #[test]
    fn bad_hosts_and_names_are_refused() {
        for host in [
            "docker.sock",
            "unix://relative.sock",
            "unix://",
            "tcp://",
            "ssh://h",
            "tcp://h:1/path",
        ] {
            let spec = EngineSpec {
                name: "e".into(),
                host: host.into(),
                tls: None,
            };
            let err = spec.validate().expect_err(host);
            assert!(
                matches!(err, DockerError::InvalidHost { .. }),
                "{host}: {err}"
            );
        }
        for name in ["", "a/b", "a b"] {
            let spec = EngineSpec::local(name);
            assert!(
                matches!(spec.validate(), Err(DockerError::InvalidName { .. })),
                "{name:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_engine_that_never_answers_times_out_at_ping() {
        // Accepts connections (the kernel's backlog does) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spec = EngineSpec {
            name: "silent".into(),
            host: format!("tcp://{addr}"),
            tls: None,
        };
        let options = ConnectOptions {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
        };
        let started = std::time::Instant::now();
        let err = Engine::connect(&spec, options)
            .await
            .expect_err("no answer");
        assert!(started.elapsed() < Duration::from_secs(3));
        match &err {
            DockerError::Timeout { engine, step, .. } => {
                assert_eq!(engine, "silent");
                assert_eq!(*step, Step::Ping);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("ping got no answer within 0.3s"),
            "{err}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_names_the_engine_and_step() {
        let spec = EngineSpec {
            name: "gone".into(),
            host: "unix:///nonexistent/safe-updater/docker.sock".into(),
            tls: None,
        };
        let err = Engine::connect(&spec, ConnectOptions::default())
            .await
            .expect_err("no socket");
        let msg = err.to_string();
        assert!(msg.contains("\"gone\""), "{msg}");
        assert!(msg.contains("cannot connect"), "{msg}");
        assert!(msg.contains("Start the Docker daemon"), "{msg}");
    }

    /// rustls's error as hyper-rustls hands it over: inside two `std::io::Error`s.
    fn wrapped(cause: rustls::Error) -> bollard::errors::Error {
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, cause);
        bollard::errors::Error::IOError {
            err: std::io::Error::other(inner),
        }
    }

    #[test]
    fn tls_causes_are_found_inside_io_errors_and_explained() {
        use rustls::CertificateError as C;
        let tls = TlsPaths::in_dir(Path::new("/certs"));
        let explain = |cause: rustls::Error| {
            let err = wrapped(cause);
            let found = tls_cause(&err).expect("rustls error found in the chain");
            tls_hint(&tls, found)
        };
        let name = explain(rustls::Error::InvalidCertificate(C::NotValidForName));
        assert!(name.contains("does not name the host"), "{name}");
        let expired = explain(rustls::Error::InvalidCertificate(C::Expired));
        assert!(expired.contains("validity period"), "{expired}");
        let issuer = explain(rustls::Error::InvalidCertificate(C::UnknownIssuer));
        assert!(
            issuer.contains("signed by the CA in /certs/ca.pem"),
            "{issuer}"
        );
        let required = explain(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(
            required.contains("/certs/cert.pem and /certs/key.pem cannot be read"),
            "{required}"
        );
        assert_eq!(
            tls_cause(&bollard::errors::Error::RequestTimeoutError),
            None
        );
    }

    #[test]
    fn a_hang_up_on_plain_http_suggests_tls_only_at_the_ping_of_a_tcp_host() {
        let reset = || bollard::errors::Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        let tcp = EngineSpec {
            name: "e".into(),
            host: "tcp://127.0.0.1:2376".into(),
            tls: None,
        };
        let hint = connection_hint(&tcp, &Step::Ping, &reset()).expect("a hint");
        assert!(hint.contains("if it expects TLS"), "{hint}");
        assert_eq!(connection_hint(&tcp, &Step::ListContainers, &reset()), None);
        assert_eq!(
            connection_hint(&EngineSpec::local("l"), &Step::Ping, &reset()),
            None
        );
    }
}
