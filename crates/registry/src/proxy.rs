//! Which registry requests go through a proxy: the one `HTTPS_PROXY`, `HTTP_PROXY` or
//! `ALL_PROXY` names (either case, as curl reads them), except for loopback hosts — never
//! proxied, as Go's client and Docker do — and the hosts `NO_PROXY` lists.
//!
//! The variables come in as [`ProxyEnv`] (read by the caller, like every other environment
//! value this crate uses).

/// The proxy variables of the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: Option<String>,
    pub https: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// From a variable lookup: upper case first, then lower case; empty values are unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let var = |name: &str| {
            get(name)
                .or_else(|| get(&name.to_ascii_lowercase()))
                .filter(|v| !v.trim().is_empty())
        };
        ProxyEnv {
            http: var("HTTP_PROXY"),
            https: var("HTTPS_PROXY"),
            all: var("ALL_PROXY"),
            no_proxy: var("NO_PROXY"),
        }
    }

    /// `NO_PROXY` with the loopback hosts added.
    fn bypass(&self) -> String {
        let mut list = self.no_proxy.clone().unwrap_or_default();
        for host in ["localhost", "127.0.0.0/8", "::1"] {
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(host);
        }
        list
    }

    /// The proxies for a client; an empty list means direct connections only. The error
    /// names the variable, never its value (a proxy URL may hold a password).
    pub(crate) fn proxies(&self) -> Result<Vec<reqwest::Proxy>, String> {
        let bypass = self.bypass();
        let mut out = Vec::new();
        let bad = |name: &str| format!("{name} is not a proxy URL");
        if let Some(u) = &self.https {
            out.push(reqwest::Proxy::https(u.as_str()).map_err(|_| bad("HTTPS_PROXY"))?);
        }
        if let Some(u) = &self.http {
            out.push(reqwest::Proxy::http(u.as_str()).map_err(|_| bad("HTTP_PROXY"))?);
        }
        if let Some(u) = &self.all {
            out.push(reqwest::Proxy::all(u.as_str()).map_err(|_| bad("ALL_PROXY"))?);
        }
        Ok(out
            .into_iter()
            .map(|p| p.no_proxy(reqwest::NoProxy::from_string(&bypass)))
            .collect())
    }
}
