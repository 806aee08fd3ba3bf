//! The registry client against real registries: Debian's `docker-registry` (distribution
//! v2.8) started by `scripts/dev-env` on 127.0.0.1 — open (5001), htpasswd Basic (5002), and
//! bearer tokens (5003, issuer on 5004) — holding `demo/web` (and `public/web` on the token
//! registry, pullable anonymously).
//!
//! The variables come from `scripts/dev-env env`. Without them these tests FAIL, on purpose:
//! a real-registry test that passes by not running proves nothing.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use safe_updater_core::reference::ImageRef;
use safe_updater_registry::manifest::{DOCKER_MANIFEST, MANIFEST_ACCEPT, digest_of};
use safe_updater_registry::{
    ClientConfig, Credential, CredentialSource, Cycle, DockerConfigLocation, ErrorKind,
    RegistryClient, Step,
};

const HOW_TO: &str = "the real-registry tests need the dev environment: run `scripts/dev-env up` \
     and `eval \"$(scripts/dev-env env)\"`, then the tests again (or just `scripts/test`, which does both)";

const TAGS: [&str; 11] = [
    "1.0.0",
    "1.0.1",
    "1.0.2",
    "1.1.0",
    "2.0.0",
    "1.0.0-alpine",
    "1.0.1-alpine",
    "1.0.0-plain",
    "1.0.1-plain",
    "1.0.2-plain",
    "latest",
];

struct Env {
    open: String,
    basic: String,
    token: String,
    user: String,
    password: String,
    docker_config: PathBuf,
    repo: String,
    public_repo: String,
}

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set; {HOW_TO}"),
    }
}

fn env() -> Env {
    let docker_config = PathBuf::from(var("SAFE_UPDATER_E2E_DOCKER_CONFIG"));
    // Given as a DOCKER_CONFIG-style directory; a path to the file itself works too.
    let docker_config = if docker_config.is_dir() {
        docker_config.join("config.json")
    } else {
        docker_config
    };
    Env {
        open: var("SAFE_UPDATER_E2E_REGISTRY_OPEN"),
        basic: var("SAFE_UPDATER_E2E_REGISTRY_BASIC"),
        token: var("SAFE_UPDATER_E2E_REGISTRY_TOKEN"),
        user: var("SAFE_UPDATER_E2E_REGISTRY_USER"),
        password: var("SAFE_UPDATER_E2E_REGISTRY_PASSWORD"),
        docker_config,
        repo: std::env::var("SAFE_UPDATER_E2E_IMAGE_REPO").unwrap_or_else(|_| "demo/web".into()),
        public_repo: std::env::var("SAFE_UPDATER_E2E_IMAGE_PUBLIC_REPO")
            .unwrap_or_else(|_| "public/web".into()),
    }
}

fn config() -> ClientConfig {
    let mut c = ClientConfig {
        docker_config: DockerConfigLocation::Disabled,
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    c.retry.initial_backoff = Duration::from_millis(50);
    c
}

fn with_credentials(registry: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = config();
    c.credentials
        .insert(registry.to_owned(), Credential::basic(user, password));
    c
}

fn client(c: ClientConfig) -> RegistryClient {
    RegistryClient::new(c).expect("client builds")
}

fn image(registry: &str, repo: &str) -> ImageRef {
    ImageRef::parse(&format!("{registry}/{repo}")).expect("valid reference")
}

fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no mapping for host architecture {other}"),
    };
    ("linux", arch)
}

fn sorted(mut tags: Vec<String>) -> Vec<String> {
    tags.sort();
    tags
}

fn expected_tags() -> Vec<String> {
    sorted(TAGS.iter().map(|t| t.to_string()).collect())
}

/// The registry's own answer for a manifest, fetched without our client: the digest it
/// reports on GET, and the sha256 of the bytes it serves.
async fn served_digest(
    registry: &str,
    repo: &str,
    tag: &str,
    auth: Option<String>,
) -> (String, String) {
    // Plain reqwest for an independent view; it needs a process-wide TLS provider even for
    // http (reqwest here is built without one). Ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut request = http
        .get(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("Accept", MANIFEST_ACCEPT);
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = request.send().await.expect("registry answers");
    assert!(
        response.status().is_success(),
        "GET manifest {registry}/{repo}:{tag}: {}",
        response.status()
    );
    let header = response
        .headers()
        .get("docker-content-digest")
        .expect("Docker-Content-Digest on GET")
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.bytes().await.unwrap();
    (header, digest_of(&body, "sha256:"))
}

async fn issued_token(e: &Env, scope: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let realm = var("SAFE_UPDATER_E2E_TOKEN_REALM");
    let service = var("SAFE_UPDATER_E2E_TOKEN_SERVICE");
    let response = reqwest::Client::new()
        .get(format!("{realm}?service={service}&scope={scope}"))
        .basic_auth(&e.user, Some(&e.password))
        .send()
        .await
        .expect("issuer answers");
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    json["token"].as_str().expect("a token").to_owned()
}

#[tokio::test]
async fn open_registry_lists_every_pushed_tag() {
    let e = env();
    let client = client(config());
    let web = image(&e.open, &e.repo);
    let tags = client.all_tags(&web).await.unwrap();
    assert_eq!(sorted(tags), expected_tags());
    // Small pages: distribution paginates with Link headers too.
    let mut c = config();
    c.tags_page_size = 3;
    let paged = crate::client(c);
    let mut pages = Vec::new();
    let listing = paged
        .list_tags(&web, |page| {
            pages.push(page.len());
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert!(listing.complete);
    assert_eq!(listing.tags, TAGS.len() as u64);
    // distribution v2.8 ignores `n` on tag lists (tag pagination came with v3) and answers
    // in one page; a registry that honours it must give pages of at most 3. The paging itself
    // is covered against the fake server (25,000 tags).
    assert!(
        pages == [TAGS.len()] || pages.iter().all(|n| *n <= 3),
        "{pages:?}"
    );
    assert_eq!(paged.requests().tags_page, pages.len() as u64);
}

#[tokio::test]
async fn head_digests_are_what_each_registry_serves() {
    let e = env();
    let basic_auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", e.user, e.password)
        )
    );
    let bearer = format!(
        "Bearer {}",
        issued_token(&e, &format!("repository:{}:pull", e.repo)).await
    );
    for (registry, auth) in [
        (&e.open, None),
        (&e.basic, Some(basic_auth)),
        (&e.token, Some(bearer)),
    ] {
        let client = client(with_credentials(registry, &e.user, &e.password));
        let web = image(registry, &e.repo);
        let mut latest = None;
        let mut first = None;
        for tag in TAGS {
            let head = client.head_manifest(&web, tag).await.unwrap();
            let (reported, hashed) = served_digest(registry, &e.repo, tag, auth.clone()).await;
            assert_eq!(
                head.digest, reported,
                "{registry} {tag}: HEAD vs GET digest"
            );
            assert_eq!(
                head.digest, hashed,
                "{registry} {tag}: HEAD digest vs sha256 of the manifest"
            );
            assert_eq!(
                head.media_type.as_deref(),
                Some(DOCKER_MANIFEST),
                "{registry} {tag}"
            );
            assert!(!head.is_index());
            // And by digest, the same.
            let again = client.head_manifest(&web, &head.digest).await.unwrap();
            assert_eq!(again.digest, head.digest);
            match tag {
                "latest" => latest = Some(head.digest),
                "1.0.0" => first = Some(head.digest),
                _ => {}
            }
        }
        assert_eq!(latest, first, "{registry}: latest is pushed as 1.0.0");
    }
}

#[tokio::test]
async fn platforms_come_from_the_config_blob_once_per_digest() {
    let e = env();
    let client = client(config());
    let web = image(&e.open, &e.repo);
    let head = client.head_manifest(&web, "1.0.0").await.unwrap();
    let platforms = client.platforms(&web, &head.digest).await.unwrap();
    let (os, arch) = host_platform();
    assert_eq!(
        platforms
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!("{os}/{arch}")]
    );
    assert!(
        client
            .supports_platform(&web, "1.0.0", os, arch, None)
            .await
            .unwrap()
    );
    assert!(
        client
            .supports_platform(&web, &head.digest, os, arch, None)
            .await
            .unwrap()
    );
    assert!(
        !client
            .supports_platform(&web, "1.0.0", "linux", "s390x", None)
            .await
            .unwrap()
    );
    assert!(
        !client
            .supports_platform(&web, "1.0.0", "windows", arch, None)
            .await
            .unwrap()
    );
    let counts = client.requests();
    // One manifest and one config blob for the digest, however often it was asked.
    assert_eq!((counts.get_manifest, counts.get_blob), (1, 1));
    // Unknown tag: a clear not-found.
    let err = client.head_manifest(&web, "9.9.9").await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn basic_auth_registry() {
    let e = env();
    let web = image(&e.basic, &e.repo);
    let ok = client(with_credentials(&e.basic, &e.user, &e.password));
    assert_eq!(sorted(ok.all_tags(&web).await.unwrap()), expected_tags());
    ok.head_manifest(&web, "1.1.0").await.unwrap();
    let counts = ok.requests();
    // One 401 to learn Basic, then credentials up front; no token service involved.
    assert_eq!(
        (counts.tags_page, counts.head_manifest, counts.token),
        (2, 1, 0)
    );

    let wrong = format!("wrong-{}", e.password);
    let refused = client(with_credentials(&e.basic, &e.user, &wrong));
    let err = refused.all_tags(&web).await.unwrap_err();
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
        text.contains(&e.basic) && text.contains("were refused"),
        "{text}"
    );
    assert!(
        !text.contains(&wrong) && !text.contains(&e.password),
        "{text}"
    );

    let err = client(config()).all_tags(&web).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsMissing { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn bearer_token_registry() {
    let e = env();
    let web = image(&e.token, &e.repo);
    let ok = client(with_credentials(&e.token, &e.user, &e.password));
    assert_eq!(sorted(ok.all_tags(&web).await.unwrap()), expected_tags());
    for tag in TAGS {
        ok.head_manifest(&web, tag).await.unwrap();
    }
    let counts = ok.requests();
    // One anonymous 401, then one token for repository:demo/web:pull reused for everything.
    assert_eq!(counts.token, 1, "{counts:?}");
    assert_eq!(
        (counts.tags_page, counts.head_manifest),
        (2, TAGS.len() as u64),
        "{counts:?}"
    );

    let wrong = format!("wrong-{}", e.password);
    let err = client(with_credentials(&e.token, &e.user, &wrong))
        .head_manifest(&web, "1.0.0")
        .await
        .unwrap_err();
    assert_eq!(err.step(), Step::Token, "{err}");
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsRefused { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("token service"), "{err}");
    assert!(!err.to_string().contains(&wrong));
}

#[tokio::test]
async fn bearer_token_registry_anonymous() {
    let e = env();
    let anonymous = client(config());
    let public = image(&e.token, &e.public_repo);
    assert_eq!(
        sorted(anonymous.all_tags(&public).await.unwrap()),
        expected_tags()
    );
    let head = anonymous.head_manifest(&public, "1.0.0").await.unwrap();
    assert!(
        anonymous
            .supports_platform(
                &public,
                &head.digest,
                host_platform().0,
                host_platform().1,
                None
            )
            .await
            .unwrap()
    );
    // The private repository: an anonymous token is issued but refused by the registry.
    let err = anonymous
        .all_tags(&image(&e.token, &e.repo))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CredentialsMissing { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn credentials_from_the_dev_env_docker_config() {
    let e = env();
    assert!(
        e.docker_config.is_file(),
        "{} is missing; {HOW_TO}",
        e.docker_config.display()
    );
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(e.docker_config.clone());
    let client = client(c);
    for registry in [&e.basic, &e.token] {
        let web = image(registry, &e.repo);
        assert_eq!(
            sorted(client.all_tags(&web).await.unwrap()),
            expected_tags(),
            "{registry}"
        );
        client.head_manifest(&web, "2.0.0").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_over_real_registries_asks_each_thing_once() {
    let e = env();
    let mut c = config();
    c.docker_config = DockerConfigLocation::Path(e.docker_config.clone());
    let cycle = std::sync::Arc::new(Cycle::new(client(c)));
    let mut tasks = tokio::task::JoinSet::new();
    for registry in [&e.open, &e.basic, &e.token] {
        for tag in TAGS {
            // Many assets per repository, each running some tag.
            let asset = ImageRef::parse(&format!("{registry}/{}:{tag}", e.repo)).unwrap();
            let cycle = cycle.clone();
            tasks.spawn(async move {
                let tags = cycle.tags(&asset).await.unwrap();
                let newest = cycle.head(&asset, "2.0.0").await.unwrap();
                (tags.len(), newest.digest)
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        let (count, digest) = result.unwrap();
        assert_eq!(count, TAGS.len());
        assert!(digest.starts_with("sha256:"));
    }
    let counts = cycle.requests();
    // Per registry one listing and one HEAD; the authenticated ones add a learning 401
    // each for the first request, and the token registry one token.
    assert_eq!(counts.tags_page, 3 + 2, "{counts:?}");
    assert_eq!(counts.head_manifest, 3, "{counts:?}");
    assert_eq!(counts.token, 1, "{counts:?}");
}
