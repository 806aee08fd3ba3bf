//! From the validated configuration to adapter settings: Docker engine specs and the registry
//! client's configuration, including reading secrets named by `password_env`/`password_file`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use safe_updater_core::config::{DockerConfig, RegistriesConfig};
use safe_updater_docker::{EngineSpec, TlsPaths};
use safe_updater_registry::{ClientConfig, Credential, DockerConfigLocation};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("Docker engine settings: {0}")]
    Docker(#[from] safe_updater_docker::DockerError),
    #[error(
        "registry credentials for {registry}: environment variable {var} is not set; export it or use password_file"
    )]
    MissingEnv { registry: String, var: String },
    #[error("registry credentials for {registry}: cannot read {path}: {source}")]
    SecretFile {
        registry: String,
        path: String,
        source: std::io::Error,
    },
    #[error("registry credentials for {registry}: no password given")]
    NoSecret { registry: String },
}

/// The engines to scan: those configured, or one from the environment (`DOCKER_HOST`, ...).
pub fn engine_specs(
    docker: &DockerConfig,
    env: &[(String, String)],
) -> Result<Vec<EngineSpec>, SettingsError> {
    if docker.engines.is_empty() {
        return Ok(vec![EngineSpec::from_env_vars("local", env)?]);
    }
    let specs = docker
        .engines
        .iter()
        .map(|e| EngineSpec {
            name: e.name.clone(),
            host: e.host.clone(),
            tls: e.tls.as_ref().map(|t| TlsPaths {
                ca: PathBuf::from(&t.ca),
                cert: PathBuf::from(&t.cert),
                key: PathBuf::from(&t.key),
            }),
        })
        .collect::<Vec<_>>();
    for s in &specs {
        s.validate()?;
    }
    Ok(specs)
}

/// The registry client's configuration. Secrets are read here, once, and kept only in the
/// client's masked credential type.
pub fn registry_client_config(
    reg: &RegistriesConfig,
    env: &[(String, String)],
) -> Result<ClientConfig, SettingsError> {
    let mut credentials = BTreeMap::new();
    for c in &reg.credentials {
        let secret = if let Some(p) = &c.password {
            p.clone()
        } else if let Some(var) = &c.password_env {
            env.iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| SettingsError::MissingEnv {
                    registry: c.registry.clone(),
                    var: var.clone(),
                })?
        } else if let Some(path) = &c.password_file {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|source| SettingsError::SecretFile {
                    registry: c.registry.clone(),
                    path: path.clone(),
                    source,
                })?
        } else {
            return Err(SettingsError::NoSecret {
                registry: c.registry.clone(),
            });
        };
        credentials.insert(
            c.registry.clone(),
            Credential::basic(c.username.clone(), secret),
        );
    }
    let mut cfg = ClientConfig {
        credentials,
        docker_config: match &reg.docker_config {
            Some(p) => DockerConfigLocation::Path(PathBuf::from(p)),
            None => DockerConfigLocation::FromEnvironment,
        },
        insecure_registries: reg.insecure.clone(),
        allow: reg.allow.clone(),
        deny: reg.deny.clone(),
        request_timeout: reg.timeout,
        max_concurrent_requests_per_registry: reg.max_concurrency,
        ..ClientConfig::default()
    };
    cfg.retry.max_attempts = reg.attempts;
    Ok(cfg)
}
