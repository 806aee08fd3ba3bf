//! The registry client against a scripted fake HTTP server (wiremock) for what a real
//! registry will not do on demand: stale tokens, 429 and 5xx, garbage bodies, 25,000 tags,
//! rate-limit headers, odd challenges, Docker Hub's host mapping. Every test asserts the
//! requests made, so that retries and token reuse are checked, not assumed.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use safe_updater_core::reference::ImageRef;
use safe_updater_registry::manifest::digest_of;
use safe_updater_registry::{
    ClientConfig, Credential, CredentialSource, Cycle, DockerConfigLocation, ErrorKind,
    RegistryClient, Step,
};
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Fast retries, no Docker config from the machine running the tests.
fn config() -> ClientConfig {
    let mut c = ClientConfig {
        docker_config: DockerConfigLocation::Disabled,
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    c.retry.initial_backoff = Duration::from_millis(1);
    c.retry.max_backoff = Duration::from_millis(5);
    c
}

fn client(c: ClientConfig) -> RegistryClient {
    RegistryClient::new(c).expect("client builds")
}

fn image(server: &MockServer, repo: &str) -> ImageRef {
    ImageRef::parse(&format!("{}/{repo}", server.address())).expect("valid reference")
}

fn registry(server: &MockServer) -> String {
    server.address().to_string()
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn digest_ok() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("Docker-Content-Digest", DIGEST_A)
        .insert_header("Content-Type", "application/vnd.oci.image.index.v1+json")
}

fn bearer_challenge(server: &MockServer) -> ResponseTemplate {
    ResponseTemplate::new(401).insert_header(
        "WWW-Authenticate",
        format!(
            r#"Bearer realm="{}/token",service="test-registry",scope="repository:demo/web:pull""#,
            server.uri()
        ),
    )
}

async fn requests_to(server: &MockServer, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p)
        .count()
}

// ---------------------------------------------------------------------------------------
// Tag pagination

/// Serves `total` tags in pages as distribution does: `n` and `last` in, `Link` out.
struct TagPages {
    total: usize,
    max_n_seen: Arc<Mutex<usize>>,
}

fn tag_name(i: usize) -> String {
    format!("1.{}.{}", i / 1000, i % 1000)
}

fn tag_index(tag: &str) -> Option<usize> {
    let mut parts = tag.split('.').skip(1);
    let hi: usize = parts.next()?.parse().ok()?;
    let lo: usize = parts.next()?.parse().ok()?;
    Some(hi * 1000 + lo)
}

impl Respond for TagPages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        let n: usize = query.get("n").and_then(|v| v.parse().ok()).unwrap_or(100);
        {
            let mut max = self.max_n_seen.lock().unwrap();
            *max = (*max).max(n);
        }
        let start = query
            .get("last")
            .and_then(|l| tag_index(l))
            .map_or(0, |i| i + 1);
        let end = (start + n).min(self.total);
        let tags: Vec<String> = (start..end).map(tag_name).collect();
        let mut response =
            ResponseTemplate::new(200).set_body_json(json!({"name": "big/repo", "tags": tags}));
        if end < self.total {
            response = response.insert_header(
                "Link",
                format!(
                    "</v2/big/repo/tags/list?last={}&n={n}>; rel=\"next\"",
                    tag_name(end - 1)
                ),
            );
        }
        response
    }
}

#[tokio::test]
async fn pagination_of_25000_tags_in_bounded_pages() {
    let server = MockServer::start().await;
    let max_n = Arc::new(Mutex::new(0));
    Mock::given(method("GET"))
        .and(path("/v2/big/repo/tags/list"))
        .respond_with(TagPages {
            total: 25_000,
            max_n_seen: max_n.clone(),
        })
        .expect(25)
        .mount(&server)
        .await;
    let mut c = config();
    c.tags_page_size = 1000;
    let client = client(c);
    let mut largest_page = 0;
    let mut count = 0usize;
    let mut previous: Option<usize> = None;
    let listing = client
        .list_tags(&image(&server, "big/repo"), |page| {
            largest_page = largest_page.max(page.len());
            for tag in &page {
                // Delivered in order, none twice, none skipped.
                let i = tag_index(tag).unwrap();
                assert_eq!(i, previous.map_or(0, |p| p + 1));
                previous = Some(i);
            }
            count += page.len();
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(count, 25_000);
    assert_eq!(listing.tags, 25_000);
    assert_eq!(listing.pages, 25);
    assert!(listing.complete);
    assert_eq!(largest_page, 1000, "at most one page in memory");
    assert_eq!(*max_n.lock().unwrap(), 1000);
    assert_eq!(client.requests().tags_page, 25);
}

#[tokio::test]
async fn pagination_stops_when_the_callback_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/big/repo/tags/list"))
        .respond_with(TagPages {
            total: 25_000,
            max_n_seen: Arc::default(),
        })
        .expect(3)
        .mount(&server)
        .await;
    let mut c = config();
    c.tags_page_size = 100;
    let client = client(c);
    let mut pages = 0;
    let listing = client
        .list_tags(&image(&server, "big/repo"), |_| {
            pages += 1;
            if pages == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    assert_eq!((listing.pages, listing.complete), (3, false));
}

#[tokio::test]
async fn pagination_link_to_another_host_or_itself_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/a/b/tags/list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "a/b", "tags": ["1"]}))
                .insert_header(
                    "Link",
                    "<https://elsewhere.example/v2/a/b/tags/list?last=1>; rel=\"next\"",
                ),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/a/c/tags/list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "a/c", "tags": ["1"]}))
                .insert_header("Link", "</v2/a/c/tags/list?n=1000>; rel=\"next\""),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(config());
    let err = client.all_tags(&image(&server, "a/b")).await.unwrap_err();
    assert!(err.to_string().contains("another host"), "{err}");
    let err = client.all_tags(&image(&server, "a/c")).await.unwrap_err();
    assert!(err.to_string().contains("same page"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Bearer tokens

#[tokio::test]
async fn bearer_token_is_fetched_once_and_reused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("scope", "repository:demo/web:pull"))
        .and(query_param("service", "test-registry"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"token": "t1", "expires_in": 300})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path_regex("^/v2/demo/web/manifests/"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .with_priority(10)
        .mount(&server)
        .await;
    let client = client(config());
    let web = image(&server, "demo/web");
    for tag in ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "2.0.0"] {
        let head = client.head_manifest(&web, tag).await.unwrap();
        assert_eq!(head.digest, DIGEST_A);
        assert!(head.is_index());
    }
    let counts = client.requests();
    // One anonymous HEAD to learn the challenge, then five with the one token.
    assert_eq!((counts.token, counts.head_manifest), (1, 6));
}

#[tokio::test]
async fn tokens_are_cached_per_scope_until_expiry_minus_margin() {
    let server = MockServer::start().await;
    // expires_in 1 s is shorter than the 10 s margin: the client keeps it for half of it.
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"token": "short", "expires_in": 1})),
        )
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer short"))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .with_priority(10)
        .mount(&server)
        .await;
    let client = client(config());
    let web = image(&server, "demo/web");
    client.head_manifest(&web, "1").await.unwrap();
    client.head_manifest(&web, "2").await.unwrap();
    assert_eq!(client.requests().token, 1, "reused while valid");
    // Another repository is another scope: its own token, asked for directly (the realm is
    // known by now, so no anonymous 401 first).
    client
        .head_manifest(&image(&server, "demo/other"), "1")
        .await
        .unwrap();
    assert_eq!(
        (client.requests().token, client.requests().head_manifest),
        (2, 4)
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.head_manifest(&web, "3").await.unwrap();
    // Expired: a new token before the request, not after a 401.
    assert_eq!(
        (client.requests().token, client.requests().head_manifest),
        (3, 5)
    );
    let scopes: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    assert_eq!(
        scopes,
        [
            "repository:demo/web:pull",
            "repository:demo/other:pull",
            "repository:demo/web:pull"
        ]
    );
}

#[tokio::test]
async fn a_refused_cached_token_is_refreshed_once() {
    let server = MockServer::start().await;
    // The token service issues t1, then t2.
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "t1"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "t2"})))
        .with_priority(2)
        .mount(&server)
        .await;
    // The registry accepts t1 once, then considers it revoked.
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(digest_ok())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .with_priority(10)
        .mount(&server)
        .await;
    let client = client(config());
    let web = image(&server, "demo/web");
    client.head_manifest(&web, "1.0.0").await.unwrap();
    client.head_manifest(&web, "1.0.1").await.unwrap();
    // And t2 is now the cached one.
    client.head_manifest(&web, "1.0.2").await.unwrap();
    let counts = client.requests();
    // anon 401, t1 200 | t1 401, t2 200 | t2 200
    assert_eq!((counts.token, counts.head_manifest), (2, 5));
}

#[tokio::test]
async fn a_token_refused_even_when_fresh_fails_naming_the_credentials_source() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(header("authorization", basic("alice", "pw-123").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "tok-secret"})))
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server).set_body_json(
            json!({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}),
        ))
        .mount(&server)
        .await;
    let mut c = config();
    c.credentials
        .insert(registry(&server), Credential::basic("alice", "pw-123"));
    let client = client(c);
    let web = image(&server, "demo/web");
    let err = client.head_manifest(&web, "1.0.0").await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::CredentialsRefused {
                from: CredentialSource::ClientConfig { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("client configuration") && text.contains("demo/web"),
        "{text}"
    );
    assert!(
        !text.contains("pw-123") && !text.contains("tok-secret"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("tok-secret"));
    assert_eq!(client.requests().token, 1);
    // Next time: the cached token is refused, one fresh one is asked for, then failure.
    client.head_manifest(&web, "1.0.0").await.unwrap_err();
    let counts = client.requests();
    assert_eq!((counts.token, counts.head_manifest), (2, 4));
}

#[tokio::test]
async fn wrong_password_at_the_token_service_is_a_clear_refusal() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(bearer_challenge(&server))
        .mount(&server)
        .await;
    let mut c = config();
    c.credentials
        .insert(registry(&server), Credential::basic("alice", "wrong-pass"));
    let client = client(c);
    let err = client
        .all_tags(&image(&server, "demo/web"))
        .await
        .unwrap_err();
    assert_eq!(err.step(), Step::Token);
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsRefused { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("token service") && text.contains("401"),
        "{text}"
    );
    assert!(!text.contains("wrong-pass"));
}

#[tokio::test]
async fn anonymous_refused_says_no_credentials_were_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "anon"})))
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .mount(&server)
        .await;
    let client = client(config());
    let err = client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsMissing { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no credentials were found"),
        "{err}"
    );
}

#[tokio::test]
async fn identity_token_uses_the_refresh_token_grant() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-secret"))
        .and(body_string_contains("scope=repository%3Ademo%2Fweb%3Apull"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "a1", "expires_in": 600})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer a1"))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .with_priority(10)
        .mount(&server)
        .await;
    let mut c = config();
    c.credentials
        .insert(registry(&server), Credential::identity_token("rt-secret"));
    let client = client(c);
    let head = client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap();
    assert_eq!(head.digest, DIGEST_A);
}

#[tokio::test]
async fn www_authenticate_with_several_challenges_and_quoted_commas() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/auth/token"))
        .and(query_param("service", "reg, with comma"))
        .and(query_param("scope", "repository:demo/web:pull"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "tq"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer tq"))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(401).insert_header(
            "WWW-Authenticate",
            format!(
                r#"Basic realm="Registry, Inc.", bearer realm = "{}/auth/token", service="reg, with comma", scope="repository:demo/web:pull,push""#,
                server.uri()
            ),
        ))
        .with_priority(10)
        .mount(&server)
        .await;
    let client = client(config());
    client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap();

    // A scheme we do not speak is named in the error.
    let other = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", "Negotiate abc=="),
        )
        .mount(&other)
        .await;
    let err = client
        .head_manifest(&image(&other, "demo/web"), "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::UnsupportedAuth { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Negotiate"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Basic auth and credentials from Docker's config.json

async fn basic_registry(user: &str, pass: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(header("authorization", basic(user, pass).as_str()))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", basic(user, pass).as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"name": "x", "tags": ["1.0.0"]})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("WWW-Authenticate", r#"Basic realm="Registry Realm""#),
        )
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn basic_auth_is_learnt_once_then_sent_up_front() {
    let server = basic_registry("alice", "pw").await;
    let mut c = config();
    c.credentials
        .insert(registry(&server), Credential::basic("alice", "pw"));
    let client = client(c);
    let web = image(&server, "demo/web");
    client.head_manifest(&web, "1.0.0").await.unwrap();
    client.head_manifest(&web, "1.0.1").await.unwrap();
    assert_eq!(client.all_tags(&web).await.unwrap(), ["1.0.0"]);
    let counts = client.requests();
    assert_eq!(
        (counts.head_manifest, counts.tags_page, counts.token),
        (3, 1, 0)
    );

    // Wrong password, and no password at all.
    let mut c = config();
    c.credentials
        .insert(registry(&server), Credential::basic("alice", "nope-secret"));
    let err = crate::client(c)
        .head_manifest(&web, "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsRefused { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("nope-secret"));
    let err = crate::client(config())
        .head_manifest(&web, "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsMissing { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn credentials_from_docker_config_auths() {
    let server = basic_registry("bob", "from-file").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        json!({"auths": {format!("http://{}", registry(&server)): {
            "auth": base64::engine::general_purpose::STANDARD.encode("bob:from-file")
        }}})
        .to_string(),
    )
    .unwrap();
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(path.clone());
    client(c)
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap();

    // A broken config.json is an error naming the file, not a silent anonymous request.
    std::fs::write(&path, "{ not json").unwrap();
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(path.clone());
    let err = client(c)
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap_err();
    assert_eq!(err.step(), Step::Credentials);
    assert!(err.to_string().contains("config.json"), "{err}");
}

/// Writes `docker-credential-test` into `dir`: answers for `host` with alice/`secret`
/// (or an identity token), appends each call to `calls.log`, and otherwise says "not found".
fn write_helper(dir: &std::path::Path, host: &str, username: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let log = dir.join("calls.log");
    let script = format!(
        r#"#!/bin/sh
[ "$1" = "get" ] || exit 3
host=$(cat)
echo "$host" >> '{log}'
if [ "$host" = '{host}' ]; then
  printf '{{"ServerURL":"%s","Username":"{username}","Secret":"{secret}"}}' "$host"
else
  echo "credentials not found in native keychain"
  exit 1
fi
"#,
        log = log.display()
    );
    let path = dir.join("docker-credential-test");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn helper_path(dir: &std::path::Path) -> std::ffi::OsString {
    format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display()).into()
}

#[tokio::test]
async fn credentials_from_a_credential_helper() {
    let server = basic_registry("alice", "helper-pw").await;
    let dir = tempfile::tempdir().unwrap();
    write_helper(dir.path(), &registry(&server), "alice", "helper-pw");
    for config_json in [
        json!({"credHelpers": {registry(&server): "test"}}),
        json!({"credsStore": "test", "auths": {registry(&server): {}}}),
    ] {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config_json.to_string()).unwrap();
        let _ = std::fs::remove_file(dir.path().join("calls.log"));
        let mut c = config();
        c.docker_config = DockerConfigLocation::Path(path);
        c.credential_helper_path = Some(helper_path(dir.path()));
        let client = client(c);
        let web = image(&server, "demo/web");
        client.head_manifest(&web, "1.0.0").await.unwrap();
        client.head_manifest(&web, "1.0.1").await.unwrap();
        // The helper ran once for both requests, with the registry host on stdin.
        let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
        assert_eq!(calls.lines().collect::<Vec<_>>(), [registry(&server)]);
    }
}

#[tokio::test]
async fn a_helper_identity_token_and_a_missing_helper() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=idt-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "a9"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer a9"))
        .respond_with(digest_ok())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .with_priority(10)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    write_helper(dir.path(), &registry(&server), "<token>", "idt-secret");
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        json!({"credHelpers": {registry(&server): "test"}}).to_string(),
    )
    .unwrap();
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(path.clone());
    c.credential_helper_path = Some(helper_path(dir.path()));
    client(c)
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap();

    // A credsStore whose helper is not installed: anonymous, and the error says why.
    std::fs::write(&path, json!({"credsStore": "desktop"}).to_string()).unwrap();
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(path);
    c.credential_helper_path = Some(helper_path(dir.path()));
    let anonymous = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Basic realm="r""#),
        )
        .mount(&anonymous)
        .await;
    let err = client(c)
        .head_manifest(&image(&anonymous, "demo/web"), "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsMissing { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("docker-credential-desktop is not installed"),
        "{err}"
    );
}

#[tokio::test]
async fn docker_hub_is_mapped_and_its_config_key_used() {
    let server = basic_registry("hubuser", "hub-pw").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        json!({"auths": {"https://index.docker.io/v1/": {
            "auth": base64::engine::general_purpose::STANDARD.encode("hubuser:hub-pw")
        }}})
        .to_string(),
    )
    .unwrap();
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(path);
    c.endpoints.insert("docker.io".into(), server.uri());
    let client = client(c);
    let nginx = ImageRef::parse("nginx:1.27").unwrap();
    assert_eq!(client.all_tags(&nginx).await.unwrap(), ["1.0.0"]);
    assert_eq!(requests_to(&server, "/v2/library/nginx/tags/list").await, 2);
    // Without an endpoint override, docker.io means registry-1.docker.io.
    assert_eq!(
        safe_updater_registry::address::base_url("docker.io", &Default::default(), &[]).unwrap(),
        "https://registry-1.docker.io"
    );
}

// ---------------------------------------------------------------------------------------
// Retries, 429, timeouts, connection errors

#[tokio::test]
async fn http_429_with_retry_after_then_success() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(digest_ok())
        .with_priority(2)
        .mount(&server)
        .await;
    let client = client(config());
    let started = Instant::now();
    client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let counts = client.requests();
    assert_eq!(
        (counts.head_manifest, counts.retries, counts.throttled),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn retry_after_beyond_the_maximum_fails_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(config());
    let err = client
        .all_tags(&image(&server, "demo/web"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::RateLimited { attempts: 1, retry_after: Some(d) } if d.as_secs() == 3600),
        "{err:?}"
    );
    assert!(err.to_string().contains("3600 s"), "{err}");
}

#[tokio::test]
async fn server_error_then_success() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"name": "demo/web", "tags": ["1"]})),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let client = client(config());
    assert_eq!(
        client.all_tags(&image(&server, "demo/web")).await.unwrap(),
        ["1"]
    );
    let counts = client.requests();
    assert_eq!((counts.tags_page, counts.retries), (2, 1));
}

#[tokio::test]
async fn server_error_forever_gives_up_after_the_configured_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    let mut c = config();
    c.retry.max_attempts = 3;
    let client = client(c);
    let err = client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Status {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&registry(&server)) && text.contains("demo/web") && text.contains("HEAD"),
        "{text}"
    );
    assert_eq!(client.requests().head_manifest, 3);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // A port nobody listens on: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config();
    c.retry.max_attempts = 2;
    let client = client(c);
    let dead = ImageRef::parse(&format!("127.0.0.1:{port}/demo/web")).unwrap();
    let err = client.head_manifest(&dead, "1.0.0").await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Transport { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(client.requests().head_manifest, 2);
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(digest_ok().set_delay(Duration::from_secs(3)))
        .expect(2)
        .mount(&server)
        .await;
    let mut c = config();
    c.retry.max_attempts = 2;
    c.request_timeout = Duration::from_millis(200);
    let client = client(c);
    let err = client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Transport { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Rate limits, allow/deny, concurrency

#[tokio::test]
async fn rate_limit_below_reserve_stops_requests_for_the_cycle() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(
            digest_ok()
                .insert_header("RateLimit-Limit", "100;w=21600")
                .insert_header("RateLimit-Remaining", "5;w=21600"),
        )
        .mount(&server)
        .await;
    let mut c = config();
    c.rate_limit_reserve = 10;
    let client = client(c);
    let web = image(&server, "demo/web");
    // The answer that reveals the low count is still used...
    client.head_manifest(&web, "1.0.0").await.unwrap();
    // ...but nothing more goes out this cycle.
    let err = client.head_manifest(&web, "1.0.1").await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::RateLimitReserve {
                remaining: 5,
                limit: Some(100),
                reserve: 10
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("5 requests left of 100"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // A new cycle may try again.
    let cycle = Cycle::new(client.clone());
    cycle.head(&web, "1.0.1").await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(cycle.requests().head_manifest, 1);
}

#[tokio::test]
async fn denied_registries_are_never_contacted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut c = config();
    c.deny = vec!["127.0.0.1:*".into()];
    let err = client(c)
        .all_tags(&image(&server, "demo/web"))
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Denied { .. }), "{err:?}");
    assert!(
        err.to_string().contains("deny pattern \"127.0.0.1:*\""),
        "{err}"
    );

    let mut c = config();
    c.allow = vec!["*.example.com".into()];
    let err = client(c)
        .head_manifest(&image(&server, "demo/web"), "1")
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Denied { .. }), "{err:?}");
    assert!(err.to_string().contains("not contacted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_limited_per_registry() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(digest_ok().set_delay(Duration::from_millis(300)))
        .expect(6)
        .mount(&server)
        .await;
    let mut c = config();
    c.max_concurrent_requests_per_registry = 2;
    let client = client(c);
    let web = image(&server, "demo/web");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (client, web) = (client.clone(), web.clone());
        tasks.spawn(async move { client.head_manifest(&web, &format!("1.0.{i}")).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    // 6 requests, 2 at a time, 300 ms each: three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_asks_once_however_many_assets_ask() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/demo/web/tags/list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "demo/web", "tags": ["1.0.0", "1.1.0"]}))
                .set_delay(Duration::from_millis(100)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/v2/demo/web/manifests/1.1.0"))
        .respond_with(digest_ok().set_delay(Duration::from_millis(100)))
        .expect(1)
        .mount(&server)
        .await;
    let cycle = Arc::new(Cycle::new(client(config())));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let cycle = cycle.clone();
        let asset = ImageRef::parse(&format!("{}/demo/web:1.0.{i}", server.address())).unwrap();
        tasks.spawn(async move {
            let tags = cycle.tags(&asset).await.unwrap();
            let head = cycle.head(&asset, "1.1.0").await.unwrap();
            (tags.len(), head.digest)
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap(), (2, DIGEST_A.to_owned()));
    }
    let counts = cycle.requests();
    assert_eq!(
        (counts.tags_page, counts.head_manifest, counts.total()),
        (1, 1, 2)
    );
}

// ---------------------------------------------------------------------------------------
// Manifests and platforms

fn index_body() -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST_A, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST_A, "size": 1,
             "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}
        ]
    })
    .to_string()
}

#[tokio::test]
async fn platforms_of_an_index_fetched_once_per_digest() {
    let server = MockServer::start().await;
    let body = index_body();
    let digest = digest_of(body.as_bytes(), "sha256:");
    Mock::given(method("GET"))
        .and(path(format!("/v2/demo/web/manifests/{digest}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(body.clone(), "application/vnd.oci.image.index.v1+json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/v2/demo/web/manifests/1.0.0"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Docker-Content-Digest", digest.as_str())
                .insert_header("Content-Type", "application/vnd.oci.image.index.v1+json"),
        )
        .mount(&server)
        .await;
    let client = client(config());
    let web = image(&server, "demo/web");
    let platforms = client.platforms(&web, &digest).await.unwrap();
    let shown: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["linux/amd64", "linux/arm/v7"]);
    assert!(
        client
            .supports_platform(&web, "1.0.0", "linux", "amd64", None)
            .await
            .unwrap()
    );
    assert!(
        client
            .supports_platform(&web, &digest, "linux", "arm", Some("v7"))
            .await
            .unwrap()
    );
    assert!(
        !client
            .supports_platform(&web, &digest, "linux", "arm64", None)
            .await
            .unwrap()
    );
    assert!(
        !client
            .supports_platform(&web, &digest, "windows", "amd64", None)
            .await
            .unwrap()
    );
    assert_eq!(client.requests().get_manifest, 1);
}

#[tokio::test]
async fn platform_of_a_single_manifest_comes_from_its_config_blob() {
    let server = MockServer::start().await;
    let config_body = json!({"os": "linux", "architecture": "amd64", "rootfs": {}}).to_string();
    let config_digest = digest_of(config_body.as_bytes(), "sha256:");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config_body.len()},
        "layers": []
    })
    .to_string();
    let digest = digest_of(manifest.as_bytes(), "sha256:");
    Mock::given(method("GET"))
        .and(path(format!("/v2/demo/web/manifests/{digest}")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            manifest,
            "application/vnd.docker.distribution.manifest.v2+json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/demo/web/blobs/{config_digest}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(config_body, "application/octet-stream"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(config());
    let web = image(&server, "demo/web");
    for _ in 0..3 {
        assert!(
            client
                .supports_platform(&web, &digest, "linux", "amd64", None)
                .await
                .unwrap()
        );
    }
    let counts = client.requests();
    assert_eq!((counts.get_manifest, counts.get_blob), (1, 1));
}

#[tokio::test]
async fn head_without_a_digest_header_falls_back_to_get() {
    let server = MockServer::start().await;
    let body = index_body();
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/demo/web/manifests/1.0.0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(body.clone(), "application/vnd.oci.image.index.v1+json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(config());
    let head = client
        .head_manifest(&image(&server, "demo/web"), "1.0.0")
        .await
        .unwrap();
    assert_eq!(head.digest, digest_of(body.as_bytes(), "sha256:"));
    assert!(head.is_index());
}

#[tokio::test]
async fn not_found_is_its_own_error() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}),
        ))
        .mount(&server)
        .await;
    let client = client(config());
    let web = image(&server, "demo/web");
    let err = client.head_manifest(&web, "9.9.9").await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotFound { status: 404, .. }),
        "{err:?}"
    );
    let err = client.all_tags(&web).await.unwrap_err();
    assert!(err.to_string().contains("NAME_UNKNOWN"), "{err}");
    assert!(!err.is_transient());
}

// ---------------------------------------------------------------------------------------
// Garbage

#[tokio::test]
async fn garbage_bodies_and_headers_are_clear_errors() {
    let server = MockServer::start().await;
    let garbage_manifest = "{\"manifests\": \"nope\"".to_string();
    let garbage_digest = digest_of(garbage_manifest.as_bytes(), "sha256:");
    for (repo, response) in [
        (
            "t/notjson",
            ResponseTemplate::new(200).set_body_string("<html>hello</html>"),
        ),
        (
            "t/wrongshape",
            ResponseTemplate::new(200).set_body_json(json!({"tags": 5})),
        ),
        (
            "t/empty",
            ResponseTemplate::new(200).set_body_json(json!({})),
        ),
        (
            "t/array",
            ResponseTemplate::new(200).set_body_json(json!(["a"])),
        ),
        (
            "t/huge",
            ResponseTemplate::new(200).set_body_string("x".repeat(5000)),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/v2/{repo}/tags/list")))
            .respond_with(response)
            .mount(&server)
            .await;
    }
    Mock::given(method("HEAD"))
        .and(path("/v2/t/baddigest/manifests/1"))
        .respond_with(
            ResponseTemplate::new(200).insert_header("Docker-Content-Digest", "sha256:zzz"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v2/t/badmanifest/manifests/{garbage_digest}"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_string(garbage_manifest))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/t/lying/manifests/{DIGEST_A}")))
        .respond_with(ResponseTemplate::new(200).set_body_string(index_body()))
        .mount(&server)
        .await;
    let mut c = config();
    c.max_body_bytes = 1000;
    let client = client(c);
    for repo in ["t/notjson", "t/wrongshape", "t/empty", "t/array"] {
        let err = client.all_tags(&image(&server, repo)).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidResponse { .. }),
            "{repo}: {err:?}"
        );
        assert_eq!(err.step(), Step::ListTags);
        assert!(err.to_string().contains(repo), "{err}");
    }
    let err = client
        .all_tags(&image(&server, "t/huge"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::BodyTooLarge { limit: 1000 }),
        "{err:?}"
    );
    let err = client
        .head_manifest(&image(&server, "t/baddigest"), "1")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidResponse { .. }),
        "{err:?}"
    );
    let err = client
        .platforms(&image(&server, "t/badmanifest"), &garbage_digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidResponse { .. }),
        "{err:?}"
    );
    let err = client
        .platforms(&image(&server, "t/lying"), DIGEST_A)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::DigestMismatch { .. }),
        "{err:?}"
    );
    let err = client
        .head_manifest(&image(&server, "t/x"), "not a tag!")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidRequest { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_from_the_token_service_is_not_echoed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(r#"{"token": 5, "leak": "tok-zzz"}"#),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/token2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"expires_in": 60})))
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path_regex("^/v2/a/"))
        .respond_with(bearer_challenge(&server))
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path_regex("^/v2/b/"))
        .respond_with(ResponseTemplate::new(401).insert_header(
            "WWW-Authenticate",
            format!(r#"Bearer realm="{}/token2""#, server.uri()),
        ))
        .mount(&server)
        .await;
    let client = client(config());
    let err = client
        .head_manifest(&image(&server, "a/web"), "1")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidResponse { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("tok-zzz"), "{err}");
    // The second registry path shares the host, so the learnt realm is the first one's;
    // use a separate client to exercise the second token service.
    let other = crate::client(config());
    let err = other
        .head_manifest(&image(&server, "b/web"), "1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("returned no token"), "{err}");
}

// ---------------------------------------------------------------------------------------
// No secret in logs

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_debug_string() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "TOKEN-SECRET-1"})))
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(header("authorization", "Bearer TOKEN-SECRET-1"))
        .respond_with(digest_ok())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(bearer_challenge(&server))
        .with_priority(10)
        .mount(&server)
        .await;
    let mut c = config();
    c.credentials.insert(
        registry(&server),
        Credential::basic("alice", "PASSWORD-SECRET-2"),
    );
    let client = client(c);
    let web = image(&server, "demo/web");
    client.head_manifest(&web, "1").await.unwrap();
    let err = client.head_manifest(&web, "2").await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("bearer token issued"),
        "logging was captured: {logs}"
    );
    let everything = format!("{logs}\n{err}\n{err:?}\n{client:?}\n{:?}", client.config());
    for secret in ["TOKEN-SECRET-1", "PASSWORD-SECRET-2"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bounded work per registry

#[tokio::test]
async fn a_pagination_loop_through_several_pages_is_detected() {
    let server = MockServer::start().await;
    // Page A links to B, B to C, C back to A: no page links to itself.
    for (from, to) in [("", "b"), ("b", "c"), ("c", "")] {
        let mut m = Mock::given(method("GET")).and(path("/v2/loop/web/tags/list"));
        m = if from.is_empty() {
            m.and(wiremock::matchers::query_param_is_missing("last"))
        } else {
            m.and(query_param("last", from))
        };
        let link = if to.is_empty() {
            "</v2/loop/web/tags/list?n=1000>; rel=\"next\"".to_owned()
        } else {
            format!("</v2/loop/web/tags/list?n=1000&last={to}>; rel=\"next\"")
        };
        m.respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "loop/web", "tags": [format!("1.0.{}", from.len())]}))
                .insert_header("Link", link.as_str()),
        )
        .mount(&server)
        .await;
    }
    let err = client(config())
        .all_tags(&image(&server, "loop/web"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loop"), "{err}");
    // Three pages, each once: the loop is caught at the first link back.
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 3, "{requests:?}");
}

/// Pages forever, each a little slowly, never the same URL twice.
struct Endless;

impl Respond for Endless {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let n: u64 = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "last")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        ResponseTemplate::new(200)
            .set_body_json(json!({"name": "endless/web", "tags": [format!("0.0.{n}")]}))
            .insert_header(
                "Link",
                format!(
                    "</v2/endless/web/tags/list?n=1&last={}>; rel=\"next\"",
                    n + 1
                )
                .as_str(),
            )
            .set_delay(Duration::from_millis(100))
    }
}

#[tokio::test]
async fn a_listing_that_never_ends_is_cut_at_its_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/endless/web/tags/list"))
        .respond_with(Endless)
        .mount(&server)
        .await;
    let mut c = config();
    c.listing_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = client(c)
        .all_tags(&image(&server, "endless/web"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::OverBudget { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("listing_timeout"), "{err}");
    let pages = server.received_requests().await.unwrap_or_default().len();
    // Bounded by the deadline, not by max_tag_pages (10,000).
    assert!((2..=15).contains(&pages), "{pages} pages");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_cycle_stops_asking_when_its_budget_is_spent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/endless/web/tags/list"))
        .respond_with(Endless)
        .mount(&server)
        .await;
    let cycle = Cycle::with_budget(client(config()), Duration::from_millis(500));
    let err = cycle
        .tags(&image(&server, "endless/web"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::OverBudget { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cycle_timeout"), "{err}");
    // Everything after it fails at once, without a request.
    let before = server.received_requests().await.unwrap_or_default().len();
    let err = cycle
        .head(&image(&server, "endless/other"), "1.0.0")
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::OverBudget { .. }),
        "{err:?}"
    );
    assert_eq!(
        server.received_requests().await.unwrap_or_default().len(),
        before
    );
}

#[tokio::test]
async fn retry_after_is_capped_by_the_setting() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "20"))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config();
    c.retry.max_retry_after = Duration::from_secs(5);
    let started = Instant::now();
    let err = client(c)
        .all_tags(&image(&server, "demo/web"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::RateLimited { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "it did not wait 20 s"
    );
}

#[tokio::test]
async fn loopback_registries_are_never_proxied_and_no_proxy_is_honoured() {
    // A proxy that answers every request as the registry would.
    let proxy = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "demo/web", "tags": ["9.9.9"]})),
        )
        .mount(&proxy)
        .await;
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/demo/web/tags/list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "demo/web", "tags": ["1.0.0"]})),
        )
        .mount(&registry)
        .await;
    let proxied = |no_proxy: Option<&str>| {
        let mut c = config();
        c.insecure_registries = vec!["registry.example.invalid".into()];
        c.proxy = safe_updater_registry::ProxyEnv {
            http: Some(format!("http://{}", proxy.address())),
            no_proxy: no_proxy.map(str::to_owned),
            ..Default::default()
        };
        client(c)
    };
    // The loopback registry is reached directly: it answers, the proxy sees nothing.
    let tags = proxied(None)
        .all_tags(&image(&registry, "demo/web"))
        .await
        .expect("direct");
    assert_eq!(tags, ["1.0.0"]);
    assert!(
        proxy
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    // Another host goes through the proxy ...
    let far = ImageRef::parse("registry.example.invalid/demo/web").expect("ref");
    let tags = proxied(None)
        .all_tags(&far)
        .await
        .expect("through the proxy");
    assert_eq!(tags, ["9.9.9"]);
    assert_eq!(proxy.received_requests().await.unwrap_or_default().len(), 1);
    // ... unless NO_PROXY names it (then it is asked directly, and does not exist).
    let err = proxied(Some("example.invalid"))
        .all_tags(&far)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Transport { .. }), "{err:?}");
    assert_eq!(proxy.received_requests().await.unwrap_or_default().len(), 1);
    // The variables are read upper case first, then lower case.
    let env = safe_updater_registry::ProxyEnv::from_lookup(|k| match k {
        "https_proxy" => Some("http://p:3128".into()),
        "NO_PROXY" => Some("corp.example".into()),
        _ => None,
    });
    assert_eq!(env.https.as_deref(), Some("http://p:3128"));
    assert_eq!(env.no_proxy.as_deref(), Some("corp.example"));
}
