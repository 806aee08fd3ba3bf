//! Registry credentials: the secret-holding types, and where credentials are found — the
//! client configuration, then Docker's `config.json` (`credHelpers`, `credsStore`, `auths`).
//!
//! Secrets never reach a log, an error message or a `Debug` string: [`Secret`] prints as
//! `***`, and errors name where a credential came from, never what it is. This module must not
//! cache anything (the client decides how long a credential lives) nor talk to a registry.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use crate::address::{DOCKER_HUB, DOCKER_HUB_CONFIG_KEY, config_key_matches};

/// A secret string (password, token). `Debug` masks it and it has no `Display`, so it cannot be
/// formatted into a log line by accident; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself — for building an `Authorization` header, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What we can prove our identity to a registry with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or a personal access token used as a password).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token ("identity token", what `docker login` stores for some
    /// registries), exchanged at the token service for access tokens.
    IdentityToken(Secret),
}

impl Credential {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credential::Basic {
            username: username.into(),
            password: Secret::new(password),
        }
    }

    pub fn identity_token(token: impl Into<String>) -> Self {
        Credential::IdentityToken(Secret::new(token))
    }
}

impl fmt::Debug for Credential {
    // Written by hand so that no future field can leak through a derive: the username is
    // shown (it identifies the account, it does not unlock it), the secret never.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
            Credential::IdentityToken(_) => f.debug_tuple("IdentityToken").field(&"***").finish(),
        }
    }
}

/// Where a credential came from, so that a refusal can say which one to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `credentials` in the client configuration, under this registry key.
    ClientConfig { registry: String },
    /// An `auths` entry of a Docker `config.json`.
    DockerAuths { path: PathBuf, key: String },
    /// A per-registry `credHelpers` entry of a Docker `config.json`.
    CredentialHelper { helper: String, path: PathBuf },
    /// The default `credsStore` of a Docker `config.json`.
    CredentialStore { helper: String, path: PathBuf },
    /// No credential: requests were anonymous.
    Anonymous,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::ClientConfig { registry } => {
                write!(f, "the client configuration (credentials for {registry:?})")
            }
            CredentialSource::DockerAuths { path, key } => {
                write!(f, "`auths.{key:?}` in {}", path.display())
            }
            CredentialSource::CredentialHelper { helper, path } => write!(
                f,
                "credential helper docker-credential-{helper} (`credHelpers` in {})",
                path.display()
            ),
            CredentialSource::CredentialStore { helper, path } => write!(
                f,
                "credential store docker-credential-{helper} (`credsStore` in {})",
                path.display()
            ),
            CredentialSource::Anonymous => f.write_str("no credentials (anonymous)"),
        }
    }
}

/// The outcome of a lookup: the credential (if any), where it came from, and every place that
/// was looked at, for a "none found" message.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedCredential {
    pub credential: Option<Credential>,
    pub source: CredentialSource,
    pub looked_in: Vec<String>,
}

/// A failure to read a credential source (unreadable config, a helper that crashed).
#[derive(Debug, Clone)]
pub(crate) struct CredentialLookupError {
    pub source: CredentialSource,
    pub detail: String,
}

/// Where to find Docker's `config.json`, and how to run credential helpers.
#[derive(Debug, Clone)]
pub(crate) struct LookupSettings<'a> {
    pub config_credentials: &'a std::collections::BTreeMap<String, Credential>,
    pub docker_config: Option<&'a Path>,
    pub helper_path: Option<&'a OsString>,
    pub helper_timeout: Duration,
}

/// Finds the credential for `registry`: the client configuration first, then Docker's
/// `config.json` the way the docker CLI reads it — a `credHelpers` entry for the registry,
/// else the `credsStore`, else an inline `auths` entry. Docker would not fall back from a
/// `credsStore` that has nothing (or is not installed, as with a `config.json` copied from a
/// desktop) to `auths`; we do, so that anonymous pulls keep working and inline entries count.
pub(crate) async fn resolve(
    registry: &str,
    settings: &LookupSettings<'_>,
) -> Result<ResolvedCredential, CredentialLookupError> {
    let mut looked_in = Vec::new();
    let config_key = settings
        .config_credentials
        .keys()
        .find(|k| k.as_str() == registry || config_key_matches(k, registry));
    if let Some(key) = config_key
        && let Some(credential) = settings.config_credentials.get(key)
    {
        return Ok(ResolvedCredential {
            credential: Some(credential.clone()),
            source: CredentialSource::ClientConfig {
                registry: key.clone(),
            },
            looked_in,
        });
    }
    looked_in.push("the client configuration".to_owned());

    let Some(path) = settings.docker_config else {
        return Ok(anonymous(looked_in));
    };
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            looked_in.push(format!("{} (absent)", path.display()));
            return Ok(anonymous(looked_in));
        }
        Err(e) => {
            return Err(CredentialLookupError {
                source: docker_auths_source(path, ""),
                detail: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    let file: DockerConfigFile =
        serde_json::from_str(&text).map_err(|e| CredentialLookupError {
            source: docker_auths_source(path, ""),
            // serde_json's message gives line and column, never the text around it.
            detail: format!("{} is not a valid Docker config.json: {e}", path.display()),
        })?;

    let server = helper_server_address(registry);
    if let Some(helper) = file
        .cred_helpers
        .iter()
        .find(|(k, _)| config_key_matches(k, registry))
        .map(|(_, h)| h.clone())
    {
        let source = CredentialSource::CredentialHelper {
            helper: helper.clone(),
            path: path.to_owned(),
        };
        // A registry-specific helper is authoritative, as in Docker.
        let credential = run_helper(&helper, &server, settings)
            .await
            .map_err(|detail| CredentialLookupError {
                source: source.clone(),
                detail,
            })?;
        looked_in.push(source.to_string());
        return Ok(match credential {
            Some(c) => found(c, source, looked_in),
            None => anonymous(looked_in),
        });
    }
    if let Some(helper) = file.creds_store.as_deref().filter(|h| !h.is_empty()) {
        let source = CredentialSource::CredentialStore {
            helper: helper.to_owned(),
            path: path.to_owned(),
        };
        match run_helper(helper, &server, settings).await {
            Ok(Some(c)) => return Ok(found(c, source, looked_in)),
            Ok(None) => looked_in.push(source.to_string()),
            Err(detail) => {
                tracing::warn!(
                    registry,
                    %source,
                    %detail,
                    "credential store failed; falling back to auths"
                );
                looked_in.push(format!("{source}: {detail}"));
            }
        }
    }
    let entry = file
        .auths
        .iter()
        .filter(|(k, _)| config_key_matches(k, registry))
        // The canonical spelling first, so that a stale alias cannot shadow it.
        .min_by_key(|(k, _)| k.as_str() != registry && k.as_str() != DOCKER_HUB_CONFIG_KEY);
    if let Some((key, entry)) = entry {
        let source = docker_auths_source(path, key);
        match entry.credential() {
            Ok(Some(c)) => return Ok(found(c, source, looked_in)),
            Ok(None) => {}
            Err(detail) => return Err(CredentialLookupError { source, detail }),
        }
    }
    looked_in.push(format!("`auths` in {}", path.display()));
    Ok(anonymous(looked_in))
}

fn found(
    credential: Credential,
    source: CredentialSource,
    looked_in: Vec<String>,
) -> ResolvedCredential {
    ResolvedCredential {
        credential: Some(credential),
        source,
        looked_in,
    }
}

fn anonymous(looked_in: Vec<String>) -> ResolvedCredential {
    ResolvedCredential {
        credential: None,
        source: CredentialSource::Anonymous,
        looked_in,
    }
}

fn docker_auths_source(path: &Path, key: &str) -> CredentialSource {
    CredentialSource::DockerAuths {
        path: path.to_owned(),
        key: key.to_owned(),
    }
}

/// The server address Docker hands a credential helper for `registry`.
pub(crate) fn helper_server_address(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// The parts of Docker's `config.json` that hold credentials; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEntry")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthEntry {
    fn credential(&self) -> Result<Option<Credential>, String> {
        if let Some(token) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::identity_token(token)));
        }
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| "its `auth` field is not valid base64".to_owned())?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| "its `auth` field does not decode to UTF-8 text".to_owned())?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| "its `auth` field does not decode to `user:password`".to_owned())?;
            return Ok(Some(Credential::basic(user, pass)));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::basic(u, p.as_str()))),
            _ => Ok(None),
        }
    }
}

/// The credentials of a Docker config JSON's `auths` (what a Kubernetes
/// `kubernetes.io/dockerconfigjson` Secret holds), or, with `legacy`, of a `.dockercfg` file
/// (the `auths` map itself, `kubernetes.io/dockercfg`). Keyed by the entry's key as written
/// (`https://index.docker.io/v1/`, `host:5000`); match them with
/// [`crate::address::config_key_matches`], or put them in `ClientConfig::credentials`, whose
/// lookup does. Entries with nothing usable are left out. The error never quotes the input.
pub fn parse_docker_auths(
    json: &[u8],
    legacy: bool,
) -> Result<std::collections::BTreeMap<String, Credential>, String> {
    let auths: std::collections::BTreeMap<String, AuthEntry> = if legacy {
        serde_json::from_slice(json).map_err(|e| format!("not a valid .dockercfg: {e}"))?
    } else {
        serde_json::from_slice::<DockerConfigFile>(json)
            .map_err(|e| format!("not a valid Docker config JSON: {e}"))?
            .auths
    };
    let mut out = std::collections::BTreeMap::new();
    for (key, entry) in auths {
        if let Some(credential) = entry
            .credential()
            .map_err(|detail| format!("entry {key:?}: {detail}"))?
        {
            out.insert(key, credential);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with `server` on stdin. `Ok(None)` when the helper
/// has no credentials for it; `Err` describes a failure without repeating helper output that
/// could hold a secret (only the first line of a failing helper's message).
async fn run_helper(
    helper: &str,
    server: &str,
    settings: &LookupSettings<'_>,
) -> Result<Option<Credential>, String> {
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!("{helper:?} is not a valid credential helper name"));
    }
    let program = format!("docker-credential-{helper}");
    let mut command = tokio::process::Command::new(&program);
    command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = settings.helper_path {
        // With PATH set on the command, the program is also looked up in it.
        command.env("PATH", path);
    }
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{program} is not installed (not found on PATH)")
        } else {
            format!("cannot start {program}: {e}")
        }
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // Docker writes the bare address, no newline, and closes stdin.
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| format!("cannot write to {program}: {e}"))?;
        drop(stdin);
    }
    let output = tokio::time::timeout(settings.helper_timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "{program} did not answer within {} s",
                settings.helper_timeout.as_secs()
            )
        })?
        .map_err(|e| format!("{program} failed: {e}"))?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stdout);
        let message = if message.trim().is_empty() {
            String::from_utf8_lossy(&output.stderr)
        } else {
            message
        };
        let first_line: String = message
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        // The helpers' protocol says "credentials not found in native keychain".
        if first_line
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(format!(
            "{program} get exited with {}: {first_line}",
            output.status
        ));
    }
    let parsed: HelperOutput = serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("{program} get did not print the expected JSON"))?;
    if parsed.secret.is_empty() {
        return Ok(None);
    }
    // The protocol's marker for an identity (refresh) token instead of a password.
    if parsed.username == "<token>" {
        return Ok(Some(Credential::identity_token(parsed.secret)));
    }
    Ok(Some(Credential::basic(parsed.username, parsed.secret)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let basic = Credential::basic("alice", "hunter2-pass");
        let token = Credential::identity_token("refresh-xyz");
        let shown = format!("{basic:?} {token:?} {:?}", Secret::new("s3cret"));
        assert!(shown.contains("alice"));
        for secret in ["hunter2-pass", "refresh-xyz", "s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let entry = AuthEntry {
            auth: Some("YWxpY2U6aHVudGVyMg==".into()),
            username: None,
            password: Some("pw-secret".into()),
            identitytoken: None,
        };
        let shown = format!("{entry:?}");
        assert!(
            !shown.contains("YWxp") && !shown.contains("pw-secret"),
            "{shown}"
        );
    }

    #[test]
    fn auth_entries() {
        let e = |json: &str| {
            serde_json::from_str::<AuthEntry>(json)
                .unwrap()
                .credential()
        };
        assert_eq!(
            e(r#"{"auth":"YWxpY2U6aHVudGVyMg=="}"#).unwrap(),
            Some(Credential::basic("alice", "hunter2"))
        );
        // A password may contain ':'; only the first one separates.
        assert_eq!(
            e(r#"{"auth":"dTpwOnE="}"#).unwrap(),
            Some(Credential::basic("u", "p:q"))
        );
        assert_eq!(
            e(r#"{"username":"bob","password":"pw"}"#).unwrap(),
            Some(Credential::basic("bob", "pw"))
        );
        assert_eq!(
            e(r#"{"identitytoken":"tok"}"#).unwrap(),
            Some(Credential::identity_token("tok"))
        );
        assert_eq!(e(r#"{}"#).unwrap(), None);
        assert!(e(r#"{"auth":"!!!"}"#).is_err());
        assert!(e(r#"{"auth":"bm9jb2xvbg=="}"#).is_err());
    }
}
