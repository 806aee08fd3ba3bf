//! Registry credentials a workload pulls with: the `kubernetes.io/dockerconfigjson` (and legacy
//! `kubernetes.io/dockercfg`) Secrets named in the pod template's `imagePullSecrets`, then in
//! its service account's, in that order — the order the kubelet tries them.
//!
//! Pure parsing here; fetching the Secrets is in [`crate::target`]. Credentials are handed to the
//! registry client as [`Credential`]s, which never print their secret; this module must not log
//! or return any part of a Secret other than those.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use safe_updater_registry::Credential;
use safe_updater_registry::address::config_key_matches;

use crate::error::KubeError;

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG_TYPE: &str = "kubernetes.io/dockercfg";

/// Credentials found for a workload, per registry key, with the Secret each came from.
#[derive(Debug, Clone, Default)]
pub struct PullCredentials {
    /// `(config key, credential, "namespace/secret")`, in the kubelet's order of preference.
    pub entries: Vec<(String, Credential, String)>,
    /// Secrets that were named but could not be used (absent, wrong type, unreadable), with why.
    pub problems: Vec<String>,
}

impl PullCredentials {
    /// The first credential whose key designates `registry` (as in image references:
    /// `docker.io`, `127.0.0.1:5002`).
    pub fn for_registry(&self, registry: &str) -> Option<(&Credential, &str)> {
        self.entries
            .iter()
            .find(|(key, _, _)| key == registry || config_key_matches(key, registry))
            .map(|(_, c, from)| (c, from.as_str()))
    }

    /// The credentials as the registry client's configuration takes them (first one per key
    /// wins, as with the kubelet).
    pub fn as_client_credentials(&self) -> BTreeMap<String, Credential> {
        let mut out = BTreeMap::new();
        for (key, credential, _) in &self.entries {
            out.entry(key.clone()).or_insert_with(|| credential.clone());
        }
        out
    }

    /// Adds the entries of one Secret (or records why it could not be used).
    pub fn add_secret(&mut self, namespace: &str, name: &str, secret: Option<&Secret>) {
        let from = format!("{namespace}/{name}");
        match secret {
            None => self.problems.push(format!("{from}: not found")),
            Some(secret) => match credentials_from_secret(secret) {
                Ok(map) => self
                    .entries
                    .extend(map.into_iter().map(|(k, c)| (k, c, from.clone()))),
                Err(e) => self.problems.push(format!("{from}: {e}")),
            },
        }
    }
}

/// The credentials of one pull Secret, keyed by registry key as written.
pub fn credentials_from_secret(secret: &Secret) -> Result<BTreeMap<String, Credential>, KubeError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let err = |detail: String| KubeError::Decode {
        what: format!("pull secret {name:?}"),
        detail,
    };
    let data = secret.data.as_ref();
    let (key, legacy) = match secret.type_.as_deref() {
        Some(DOCKER_CONFIG_JSON_TYPE) => (".dockerconfigjson", false),
        Some(DOCKER_CFG_TYPE) => (".dockercfg", true),
        other => {
            return Err(err(format!(
                "type {:?} is not {DOCKER_CONFIG_JSON_TYPE} or {DOCKER_CFG_TYPE}",
                other.unwrap_or("")
            )));
        }
    };
    let bytes = data
        .and_then(|d| d.get(key))
        .ok_or_else(|| err(format!("has no {key} key")))?;
    safe_updater_registry::credentials::parse_docker_auths(&bytes.0, legacy).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, key: &str, json: &str) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("pull".into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some([(key.to_owned(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn dockerconfigjson_and_legacy_dockercfg() {
        // `auth` is base64("tester:pw:with:colons").
        let json = r#"{"auths":{"127.0.0.1:5002":{"auth":"dGVzdGVyOnB3OndpdGg6Y29sb25z"},
            "https://index.docker.io/v1/":{"username":"hub","password":"hp"},
            "empty.example":{}}}"#;
        let map =
            credentials_from_secret(&secret(DOCKER_CONFIG_JSON_TYPE, ".dockerconfigjson", json))
                .expect("parses");
        assert_eq!(
            map.get("127.0.0.1:5002"),
            Some(&Credential::basic("tester", "pw:with:colons"))
        );
        assert_eq!(map.len(), 2, "entries without credentials are left out");
        let legacy = r#"{"reg.example:443":{"username":"u","password":"p","email":"x@y"}}"#;
        let map = credentials_from_secret(&secret(DOCKER_CFG_TYPE, ".dockercfg", legacy))
            .expect("parses");
        assert_eq!(
            map.get("reg.example:443"),
            Some(&Credential::basic("u", "p"))
        );
    }

    #[test]
    fn order_of_preference_and_docker_hub_spellings() {
        let mut creds = PullCredentials::default();
        let first = secret(
            DOCKER_CONFIG_JSON_TYPE,
            ".dockerconfigjson",
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"a","password":"1"}}}"#,
        );
        let second = secret(
            DOCKER_CONFIG_JSON_TYPE,
            ".dockerconfigjson",
            r#"{"auths":{"docker.io":{"username":"b","password":"2"},"r.example":{"username":"c","password":"3"}}}"#,
        );
        creds.add_secret("ns", "first", Some(&first));
        creds.add_secret("ns", "missing", None);
        creds.add_secret("ns", "second", Some(&second));
        let (c, from) = creds.for_registry("docker.io").expect("hub credential");
        assert_eq!((c, from), (&Credential::basic("a", "1"), "ns/first"));
        assert_eq!(
            creds.for_registry("r.example").map(|(_, f)| f),
            Some("ns/second")
        );
        assert_eq!(creds.for_registry("other.example"), None);
        assert_eq!(creds.problems, ["ns/missing: not found"]);
        assert_eq!(creds.as_client_credentials().len(), 3);
    }

    #[test]
    fn wrong_type_or_garbage_is_an_error_that_does_not_quote_the_secret() {
        let e = credentials_from_secret(&secret("Opaque", ".dockerconfigjson", "{}"))
            .expect_err("type");
        assert!(e.to_string().contains("Opaque"), "{e}");
        let e = credentials_from_secret(&secret(
            DOCKER_CONFIG_JSON_TYPE,
            ".dockerconfigjson",
            r#"{"auths":{"r":{"auth":"c2VjcmV0LW5vLWNvbG9u"}}}"#,
        ))
        .expect_err("bad auth");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        assert!(
            credentials_from_secret(&secret(DOCKER_CONFIG_JSON_TYPE, ".dockercfg", "{}")).is_err()
        );
    }
}
