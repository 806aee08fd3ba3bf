//! Secrets out of what is printed: a URL's userinfo (`user:PASSWORD@`) and query values
//! (`?token=...`) are replaced before the URL reaches an error, an observation, the audit
//! trail or a log line. Everything the product prints about a URL a user configured goes
//! through [`url`] or [`urls_in`].
//!
//! Pure string work; it knows nothing of where the text goes.

use std::sync::LazyLock;

use regex::Regex;

/// What stands for a removed secret.
pub const MASK: &str = "***";

/// `url` with its userinfo and every query value masked: `http://probe:PASS@h/x?t=1&a`
/// becomes `http://***@h/x?t=***&a`. Text that is not a URL is returned as it is.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The authority ends at the first '/', '?' or '#'.
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("{MASK}{}", &authority[at..]),
        None => authority.to_owned(),
    };
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let masked_tail = match before_fragment.split_once('?') {
        None => before_fragment.to_owned(),
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) if !v.is_empty() => format!("{k}={MASK}"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    };
    format!("{scheme}{authority}{masked_tail}{fragment}")
}

/// `text` with every URL in it passed through [`url`]: for messages of other libraries
/// (an HTTP client's error names the URL it failed on).
pub fn urls_in(text: &str) -> String {
    static URL: LazyLock<Regex> = LazyLock::new(|| {
        // Braces belong to the URL: health-check URLs carry `{container_ip}` placeholders.
        Regex::new(r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>()\[\]]+"#).expect("the URL pattern")
    });
    URL.replace_all(text, |c: &regex::Captures<'_>| url(&c[0]))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_values_are_masked() {
        assert_eq!(
            url("http://probe:PASS@host:8080/health?token=abc&x=1&flag#frag"),
            "http://***@host:8080/health?token=***&x=***&flag#frag"
        );
        assert_eq!(url("https://host/health"), "https://host/health");
        assert_eq!(url("http://user@host"), "http://***@host");
        assert_eq!(url("http://h/p?=v"), "http://h/p?=***");
        assert_eq!(url("not a url"), "not a url");
        // An '@' in the path is not userinfo.
        assert_eq!(url("http://h/a@b"), "http://h/a@b");
    }

    #[test]
    fn urls_inside_messages_are_masked() {
        let msg = "error sending request for url (http://probe:PASS@10.0.0.1:8080/health?token=s3cret): connection refused";
        let out = urls_in(msg);
        assert!(!out.contains("PASS") && !out.contains("s3cret"), "{out}");
        assert!(
            out.contains("http://***@10.0.0.1:8080/health?token=***"),
            "{out}"
        );
        assert!(out.ends_with("): connection refused"), "{out}");
        assert_eq!(urls_in("no url here"), "no url here");
        assert_eq!(
            urls_in("http://u:p@{host_ip:8080/tcp}:{host_port:8080/tcp}/x?t=s"),
            "http://***@{host_ip:8080/tcp}:{host_port:8080/tcp}/x?t=***"
        );
    }
}
