//! From the validated configuration to adapter settings: Docker engine specs and the registry
//! client's configuration, and the one place a secret reference of the configuration (a literal,
//! an environment variable, a file) is read: [`resolve_secret`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use safe_updater_core::config::{DockerConfig, RegistriesConfig};
use safe_updater_core::health::SecretRef;
use safe_updater_docker::{EngineSpec, TlsPaths};
use safe_updater_registry::{ClientConfig, Credential, DockerConfigLocation};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("Docker engine settings: {0}")]
    Docker(#[from] safe_updater_docker::DockerError),
    #[error("registry credentials for {registry}: {source}")]
    Secret {
        registry: String,
        #[source]
        source: SecretError,
    },
    #[error("registry credentials for {registry}: no password given")]
    NoSecret { registry: String },
}

/// Why a secret the configuration names could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the environment variable {0} is not set; export it or name a file instead")]
    MissingEnv(String),
    #[error("cannot read the secret file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The value `secret` names: the literal itself, the variable `env` gives for its name, or the
/// file's content without trailing line breaks (`echo secret > file` writes one; a mounted
/// Kubernetes Secret may have none). `env` is a lookup rather than the process environment so
/// that a reload and a test see exactly the environment they were given.
pub fn resolve_secret(
    secret: &SecretRef,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    match secret {
        SecretRef::Literal(v) => Ok(v.clone()),
        SecretRef::Env(var) => env(var).ok_or_else(|| SecretError::MissingEnv(var.clone())),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|source| SecretError::File {
                path: path.clone(),
                source,
            }),
    }
}

/// [`resolve_secret`]'s lookup over environment pairs.
pub fn env_lookup(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
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
        let Some(secret_ref) = c.secret() else {
            return Err(SettingsError::NoSecret {
                registry: c.registry.clone(),
            });
        };
        let secret = resolve_secret(&secret_ref, &env_lookup(env)).map_err(|source| {
            SettingsError::Secret {
                registry: c.registry.clone(),
                source,
            }
        })?;
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
    cfg.retry.max_retry_after = reg.max_retry_after;
    cfg.listing_timeout = reg.listing_timeout;
    cfg.proxy = safe_updater_registry::ProxyEnv::from_lookup(|name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    });
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safe_updater_core::config::CredentialConfig;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_secret_is_the_literal_the_variable_or_the_file_without_its_line_break() {
        let literal = SecretRef::Literal(" spaced \n".into());
        assert_eq!(
            resolve_secret(&literal, &no_env).ok(),
            Some(" spaced \n".into())
        );

        let env = vec![("TOKEN".to_owned(), "from-env".to_owned())];
        let var = SecretRef::Env("TOKEN".into());
        assert_eq!(
            resolve_secret(&var, &env_lookup(&env)).ok(),
            Some("from-env".into())
        );
        let missing = resolve_secret(&SecretRef::Env("ABSENT".into()), &env_lookup(&env));
        let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("ABSENT is not set"), "{message}");

        let dir = std::env::temp_dir().join(format!("su-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret \r\n").expect("write");
        let from_file = SecretRef::File(file.display().to_string());
        // Only line breaks go: a trailing space may be part of the secret.
        assert_eq!(
            resolve_secret(&from_file, &no_env).ok(),
            Some("s3cret ".into())
        );
        let gone = SecretRef::File(dir.join("absent").display().to_string());
        let message = resolve_secret(&gone, &no_env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("cannot read the secret file"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn registry_credentials_name_the_registry_when_their_secret_is_missing() {
        let reg = RegistriesConfig {
            credentials: vec![CredentialConfig {
                registry: "registry.example".into(),
                username: "bot".into(),
                password: None,
                password_env: Some("REGISTRY_PASSWORD".into()),
                password_file: None,
            }],
            ..RegistriesConfig::default()
        };
        let message = registry_client_config(&reg, &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "registry credentials for registry.example: the environment variable \
             REGISTRY_PASSWORD is not set; export it or name a file instead"
        );
        let env = vec![("REGISTRY_PASSWORD".to_owned(), "pw".to_owned())];
        let cfg = registry_client_config(&reg, &env).expect("configured");
        assert!(cfg.credentials.contains_key("registry.example"));
    }
}
