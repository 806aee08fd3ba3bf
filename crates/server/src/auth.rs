//! Bearer-token authentication of the approvals API.
//!
//! Each configured token belongs to a named operator; the name is what reaches the audit trail.
//! Every configured token is compared (no early exit) in constant time, so neither timing nor
//! the order of the list reveals which token came close.

use axum::http::{HeaderMap, StatusCode, header};

use crate::backend::Operator;
use crate::error::ApiError;
use crate::secret::Secret;

/// One API token and the operator it identifies.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// The operator's name as it appears in the audit trail (`alice`, `ci-bot`).
    pub identity: String,
    pub secret: Secret,
}

impl ApiToken {
    pub fn new(identity: impl Into<String>, secret: impl Into<Secret>) -> ApiToken {
        ApiToken {
            identity: identity.into(),
            secret: secret.into(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TokenSet {
    tokens: Vec<ApiToken>,
}

impl TokenSet {
    pub(crate) fn new(tokens: Vec<ApiToken>) -> TokenSet {
        TokenSet { tokens }
    }

    /// The operator whose token the request carries.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Operator, ApiError> {
        if self.tokens.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the approvals API is disabled: no API tokens are configured",
            )
            .with_hint(
                "add server.tokens entries ({name, token_env | token_file}) to the configuration",
            ));
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized("missing Authorization header")
                .with_hint("send 'Authorization: Bearer <token>'"));
        };
        let presented = bearer_token(value.as_bytes()).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not a Bearer token")
                .with_hint("send 'Authorization: Bearer <token>'")
        })?;
        let mut found: Option<&ApiToken> = None;
        for t in &self.tokens {
            // Evaluate every comparison; `Secret::matches` is constant-time itself.
            let m = t.secret.matches(presented);
            if m && found.is_none() {
                found = Some(t);
            }
        }
        match found {
            Some(t) => Ok(Operator {
                name: t.identity.clone(),
            }),
            None => Err(ApiError::unauthorized("invalid token")),
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(v).expect("header"),
        );
        h
    }

    #[test]
    fn bearer_tokens_map_to_their_operator() {
        let set = TokenSet::new(vec![
            ApiToken::new("alice", "token-a"),
            ApiToken::new("bob", "token-b"),
        ]);
        let op = set.authenticate(&headers("Bearer token-b")).expect("bob");
        assert_eq!(op.name, "bob");
        assert_eq!(
            set.authenticate(&headers("bearer token-a"))
                .expect("alice")
                .name,
            "alice"
        );
        for bad in ["Bearer token-c", "Basic dG9rZW4tYQ==", "Bearer ", "token-a"] {
            let e = set.authenticate(&headers(bad)).expect_err(bad);
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        let e = set.authenticate(&HeaderMap::new()).expect_err("none");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn no_tokens_means_forbidden() {
        let e = TokenSet::default()
            .authenticate(&headers("Bearer x"))
            .expect_err("disabled");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }
}
