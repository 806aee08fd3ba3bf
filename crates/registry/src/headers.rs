//! Parsers for the HTTP headers a registry conversation depends on: `WWW-Authenticate`
//! (RFC 7235 challenges), `Link` (pagination), `RateLimit-*` (Docker Hub) and `Retry-After`.
//!
//! Pure functions over header text: no IO, no clock (the current time is a parameter). They
//! are lenient — a registry's odd header yields `None` or fewer challenges, never a panic —
//! because a header we cannot read must turn into a clear error at the caller, not a crash.

use std::time::Duration;

/// One authentication challenge from a `WWW-Authenticate` header: `Bearer realm="…",service="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme as sent (`Bearer`, `basic`); compare with [`Challenge::is`].
    pub scheme: String,
    /// `name=value` parameters in order, names lowercased, quoted values unescaped.
    pub params: Vec<(String, String)>,
    /// The `token68` form some schemes use instead of parameters (`Negotiate abc==`).
    pub token68: Option<String>,
}

impl Challenge {
    /// Whether the scheme is `scheme`, ignoring ASCII case as RFC 7235 requires.
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The value of parameter `name` (case-insensitive), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every challenge from one or more `WWW-Authenticate` header values.
///
/// Handles several challenges in one value (`Bearer realm="a", Basic realm="b"`), quoted values
/// containing commas and escaped quotes, unquoted values, whitespace around `=`, and any case of
/// scheme and parameter names. Unreadable fragments are skipped.
pub fn parse_www_authenticate<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        parse_challenges(value, &mut out);
    }
    out
}

fn parse_challenges(value: &str, out: &mut Vec<Challenge>) {
    let mut lx = Lexer::new(value);
    loop {
        lx.skip_ws_and_commas();
        if lx.at_end() {
            return;
        }
        let Some(scheme) = lx.token() else {
            // Not a token: skip the character so that garbage cannot stall the loop.
            lx.bump();
            continue;
        };
        let mut challenge = Challenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
            token68: None,
        };
        lx.skip_ws();
        if lx.is_param_start() {
            parse_params(&mut lx, &mut challenge);
        } else if let Some(t68) = lx.token68() {
            challenge.token68 = Some(t68.to_owned());
        }
        out.push(challenge);
    }
}

fn parse_params(lx: &mut Lexer<'_>, challenge: &mut Challenge) {
    loop {
        let Some(name) = lx.token() else { return };
        let name = name.to_ascii_lowercase();
        lx.skip_ws();
        if !lx.eat(b'=') {
            return;
        }
        lx.skip_ws();
        let value = if lx.peek() == Some(b'"') {
            lx.quoted()
        } else {
            lx.bare_value().to_owned()
        };
        challenge.params.push((name, value));
        lx.skip_ws();
        if lx.peek() != Some(b',') {
            return;
        }
        // After a comma comes either another parameter of this challenge or the next
        // challenge's scheme; only `token =` tells them apart.
        let save = lx.pos;
        lx.skip_ws_and_commas();
        if !lx.is_param_start() {
            lx.pos = save;
            return;
        }
    }
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.s.as_bytes()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        // Advance by one whole UTF-8 character so slicing stays on boundaries.
        if let Some(c) = self.s[self.pos..].chars().next() {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.s[start..self.pos])
    }

    /// `token ws* = ws* (quoted | value)` starts here (without consuming anything).
    fn is_param_start(&self) -> bool {
        let b = self.bytes();
        let mut i = self.pos;
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return false;
        }
        i += 1;
        // `abc==` is a token68, not the parameter `abc` with value `=`.
        if i < b.len() && b[i] == b'=' {
            return false;
        }
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        i < b.len() && b[i] != b','
    }

    /// A quoted-string; the opening quote is at `pos`. An unterminated string takes the rest.
    fn quoted(&mut self) -> String {
        self.pos += 1;
        let mut out = String::new();
        while let Some(c) = self.s[self.pos..].chars().next() {
            self.pos += c.len_utf8();
            match c {
                '"' => return out,
                '\\' => {
                    if let Some(escaped) = self.s[self.pos..].chars().next() {
                        self.pos += escaped.len_utf8();
                        out.push(escaped);
                    }
                }
                _ => out.push(c),
            }
        }
        out
    }

    /// An unquoted value. Wider than RFC 7235's `token` on purpose: some registries send
    /// `realm=https://host/token` unquoted, and `:`/`/` are not token characters.
    fn bare_value(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b' ' | b'\t' | b'"') {
                break;
            }
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            self.pos += 1;
        }
        while self.peek() == Some(b'=') {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.s[start..self.pos])
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The target of the first `rel="next"` link in a `Link` header value
/// (`<url>; rel="next"`, possibly among other links), as written (it may be relative).
pub fn parse_link_next(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        // The parameters of this link run up to the next link's '<' (commas can sit in
        // quoted parameter values, but '<' cannot start a parameter).
        let after = &rest[close + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((name, val)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && val
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_owned());
        }
        rest = &after[params_end..];
    }
}

/// A Docker Hub rate-limit header value, `100;w=21600`: the count and the window in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitValue {
    pub count: u64,
    pub window_seconds: Option<u64>,
}

/// Parses `RateLimit-Limit` / `RateLimit-Remaining` values (`100;w=21600`, or a bare `100`).
pub fn parse_rate_limit(value: &str) -> Option<RateLimitValue> {
    let mut parts = value.split(';');
    let count = parts.next()?.trim().parse().ok()?;
    let window_seconds = parts.find_map(|p| {
        let (name, v) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("w")
            .then(|| v.trim().parse().ok())
            .flatten()
    });
    Some(RateLimitValue {
        count,
        window_seconds,
    })
}

/// How long a `Retry-After` value (delay in seconds, or an HTTP date) asks to wait from `now`.
/// A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let span = when.duration_since(now);
    Some(Duration::try_from(span).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    fn one(value: &str) -> Vec<Challenge> {
        parse_www_authenticate([value])
    }

    #[test]
    fn bearer_challenge_with_all_params() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is("bearer"));
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("SCOPE"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = one(
            r#"Bearer realm="https://a/token",scope="repository:x/y:pull,push",error="insufficient_scope",note="say \"hi\", then go""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("scope"), Some("repository:x/y:pull,push"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert_eq!(c[0].param("note"), Some(r#"say "hi", then go"#));
    }

    #[test]
    fn several_challenges_in_one_value_and_across_values() {
        let c =
            one(r#"Basic realm="Registry Realm", Bearer realm="https://t/token",service="svc""#);
        assert_eq!(c.len(), 2);
        assert!(c[0].is("Basic"));
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert!(c[1].is("Bearer"));
        assert_eq!(c[1].param("service"), Some("svc"));

        let c = parse_www_authenticate([
            r#"Negotiate"#,
            r#"bearer realm=https://t/token , service = svc"#,
        ]);
        assert_eq!(c.len(), 2);
        assert!(c[0].is("negotiate"));
        assert!(c[0].params.is_empty());
        assert_eq!(c[1].param("realm"), Some("https://t/token"));
        assert_eq!(c[1].param("service"), Some("svc"));
    }

    #[test]
    fn token68_and_bare_schemes() {
        let c = one("Negotiate abc+/==, Basic realm=\"r\"");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].token68.as_deref(), Some("abc+/=="));
        assert_eq!(c[1].param("realm"), Some("r"));
        let c = one("Basic, Bearer");
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            "Bearer realm=",
            "Bearer =x",
            "Bearer realm=\"a\",,,service=\"b\"",
            "\u{e9}\u{e9} realm=\"\u{e9}\"",
            "Bearer realm=\"x\\",
        ] {
            let _ = one(s);
        }
        let c = one("Bearer realm=\"a\",,,service=\"b\"");
        assert_eq!(c[0].param("service"), Some("b"));
        let c = one("Bearer realm=\"unterminated");
        assert_eq!(c[0].param("realm"), Some("unterminated"));
    }

    #[test]
    fn link_next_forms() {
        assert_eq!(
            parse_link_next(r#"</v2/demo/web/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/demo/web/tags/list?last=b&n=2")
        );
        assert_eq!(
            parse_link_next(r#"<https://r/x?a=1>; rel="prev", <https://r/y?b=2>; rel=next"#)
                .as_deref(),
            Some("https://r/y?b=2")
        );
        assert_eq!(
            parse_link_next(r#"<https://r/y>; title="a, b"; rel="prefetch next""#).as_deref(),
            Some("https://r/y")
        );
        assert_eq!(parse_link_next(r#"<https://r/x>; rel="prev""#), None);
        assert_eq!(parse_link_next("garbage"), None);
        assert_eq!(parse_link_next("<unclosed; rel=next"), None);
    }

    #[test]
    fn rate_limit_values() {
        assert_eq!(
            parse_rate_limit("100;w=21600"),
            Some(RateLimitValue {
                count: 100,
                window_seconds: Some(21600)
            })
        );
        assert_eq!(
            parse_rate_limit(" 76 ; w=21600"),
            Some(RateLimitValue {
                count: 76,
                window_seconds: Some(21600)
            })
        );
        assert_eq!(
            parse_rate_limit("5"),
            Some(RateLimitValue {
                count: 5,
                window_seconds: None
            })
        );
        assert_eq!(parse_rate_limit("lots;w=1"), None);
        assert_eq!(parse_rate_limit(""), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now: jiff::Timestamp = "2024-01-10T10:34:40Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 10 Jan 2024 10:34:45 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 10 Jan 2024 10:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
