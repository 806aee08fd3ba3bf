//! The HTTP client of the OCI distribution API: tag lists, manifest digests, platforms,
//! authentication (anonymous, Basic, Bearer tokens), retries, rate limits, concurrency limits.
//!
//! Everything that touches the network is here; the header and JSON parsing it relies on is
//! pure and lives in [`crate::headers`] and [`crate::manifest`]. It must not decide anything
//! about updates — it reports what a registry says, or a [`RegistryError`] saying why not —
//! and it must never log or format a credential or token (they travel as [`Secret`]s and
//! reach only `Authorization` headers, which are marked sensitive).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LINK, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use safe_updater_core::reference::ImageRef;
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use crate::address::{base_url, check_allowed};
use crate::config::ClientConfig;
use crate::counters::{Counters, RequestCounts, RequestKind};
use crate::credentials::{self, Credential, LookupSettings, ResolvedCredential, Secret};
use crate::error::{ErrorKind, RegistryError, Step};
use crate::headers::{
    Challenge, parse_link_next, parse_rate_limit, parse_retry_after, parse_www_authenticate,
};
use crate::manifest::{
    MANIFEST_ACCEPT, ManifestHead, ParsedManifest, Platform, digest_of, is_valid_digest,
    parse_config_platform, parse_manifest,
};

/// The outcome of a tag listing: how much was delivered and whether it was everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagListing {
    /// Pages fetched.
    pub pages: u32,
    /// Tags delivered to the callback, over all pages.
    pub tags: u64,
    /// `false` when the callback stopped the listing early.
    pub complete: bool,
}

/// A failure to build a [`RegistryClient`] from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("invalid registry client configuration: {0}")]
    Config(String),
    #[error("cannot set up TLS for the registry client: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

type PlatformCell = Arc<OnceCell<Arc<[Platform]>>>;

/// The registry client. Cheap to clone (shared state behind an `Arc`); one per process is
/// intended, so that tokens, concurrency limits and the platform cache are shared.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    docker_config: Option<PathBuf>,
    registries: Mutex<HashMap<String, Arc<RegistryState>>>,
    /// Platforms by manifest digest: content-addressed, so valid for the whole process.
    platforms: Mutex<HashMap<String, PlatformCell>>,
    counters: Counters,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.inner.config)
            .field("docker_config", &self.inner.docker_config)
            .finish_non_exhaustive()
    }
}

/// What we know about one registry, shared by all requests to it.
struct RegistryState {
    /// As in image references (`docker.io`).
    name: String,
    /// API base URL (`https://registry-1.docker.io`).
    base: String,
    semaphore: Semaphore,
    auth: Mutex<AuthMode>,
    /// Resolved once per cycle: helpers are subprocesses, and credentials may be rotated.
    credentials: tokio::sync::Mutex<Option<ResolvedCredential>>,
    /// Bearer tokens by scope. An async mutex held across a token request, so that concurrent
    /// requests for one scope wait for one token instead of each asking for their own.
    tokens: tokio::sync::Mutex<HashMap<String, CachedToken>>,
    /// Set when the rate-limit reserve is reached; cleared by [`RegistryClient::begin_cycle`].
    halt: Mutex<Option<ErrorKind>>,
    counters: Counters,
}

/// How a registry wants to be authenticated, learnt from its first `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthMode {
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct CachedToken {
    token: Secret,
    valid_until: Instant,
}

/// One HTTP answer, body read (within the size limit).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Which credential an attempt carried, to decide what a `401` means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Used {
    Nothing,
    Basic,
    CachedToken(Secret),
    FreshToken,
}

/// The request being made, for errors and counters.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    st: &'a RegistryState,
    repository: &'a str,
    step: Step,
    kind: RequestKind,
}

impl Ctx<'_> {
    fn err(&self, kind: ErrorKind) -> RegistryError {
        RegistryError::new(&self.st.name, self.repository, self.step, kind)
    }

    fn with(&self, step: Step, kind: RequestKind) -> Self {
        Ctx {
            step,
            kind,
            ..*self
        }
    }
}

enum Attempt {
    Reply(Reply),
    /// Connection error, timeout, broken body: worth another attempt.
    Retryable(String),
    Fatal(ErrorKind),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these short locks leaves plain data that is
    // still consistent (every critical section is a single insert/read), so keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RegistryClient {
    /// Builds a client. Reads `DOCKER_CONFIG` / `HOME` once, here, when the configuration
    /// says Docker's `config.json` is found through the environment.
    pub fn new(config: ClientConfig) -> Result<Self, ClientBuildError> {
        if config.retry.max_attempts == 0 {
            return Err(ClientBuildError::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        if config.max_concurrent_requests_per_registry == 0 {
            return Err(ClientBuildError::Config(
                "max_concurrent_requests_per_registry must be at least 1".into(),
            ));
        }
        if config.tags_page_size == 0 || config.max_tag_pages == 0 {
            return Err(ClientBuildError::Config(
                "tags_page_size and max_tag_pages must be at least 1".into(),
            ));
        }
        let docker_config = config.docker_config.resolve(|k| std::env::var_os(k));
        let http = build_http(&config)?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                config,
                docker_config,
                registries: Mutex::new(HashMap::new()),
                platforms: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Requests sent so far by this client, by kind (retries included).
    pub fn requests(&self) -> RequestCounts {
        self.inner.counters.snapshot()
    }

    /// Requests sent so far to one registry (named as in image references).
    pub fn requests_for(&self, registry: &str) -> RequestCounts {
        lock(&self.inner.registries)
            .get(registry)
            .map(|st| st.counters.snapshot())
            .unwrap_or_default()
    }

    /// The requests sent to each registry contacted so far, by registry name.
    pub fn registry_requests(&self) -> Vec<(String, RequestCounts)> {
        let mut out: Vec<(String, RequestCounts)> = lock(&self.inner.registries)
            .iter()
            .map(|(name, st)| (name.clone(), st.counters.snapshot()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Starts a new cycle: registries halted for their rate-limit reserve may be contacted
    /// again, and credentials are looked up afresh. Tokens and the platform cache are kept.
    pub fn begin_cycle(&self) {
        let registries: Vec<Arc<RegistryState>> =
            lock(&self.inner.registries).values().cloned().collect();
        for st in registries {
            *lock(&st.halt) = None;
            // Only if nobody is resolving right now; otherwise that resolution is fresh anyway.
            if let Ok(mut creds) = st.credentials.try_lock() {
                *creds = None;
            }
        }
    }

    /// Lists the tags of `image`'s repository page by page, handing each page to `on_page`,
    /// so that memory stays bounded by one page whatever the repository holds; the callback
    /// keeps what it wants and may stop the listing with `ControlFlow::Break`.
    pub async fn list_tags<F>(
        &self,
        image: &ImageRef,
        mut on_page: F,
    ) -> Result<TagListing, RegistryError>
    where
        F: FnMut(Vec<String>) -> ControlFlow<()> + Send,
    {
        self.list_tags_dyn(image, &mut on_page).await
    }

    /// Every tag of `image`'s repository, in the registry's order.
    pub async fn all_tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let mut all = Vec::new();
        self.list_tags(image, |page| {
            all.extend(page);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(all)
    }

    pub(crate) async fn list_tags_dyn(
        &self,
        image: &ImageRef,
        on_page: &mut (dyn FnMut(Vec<String>) -> ControlFlow<()> + Send),
    ) -> Result<TagListing, RegistryError> {
        let st = self.registry_state(image, Step::ListTags)?;
        let ctx = Ctx {
            st: &st,
            repository: image.repository(),
            step: Step::ListTags,
            kind: RequestKind::TagsPage,
        };
        let mut url = self.url(&ctx, "tags/list")?;
        url.query_pairs_mut()
            .append_pair("n", &self.inner.config.tags_page_size.to_string());
        let mut listing = TagListing::default();
        let started = std::time::Instant::now();
        let budget = self.inner.config.listing_timeout;
        // Every page asked for: a link back to any of them is a loop (A → B → A).
        let mut visited: std::collections::HashSet<String> = std::collections::HashSet::new();
        visited.insert(url.to_string());
        loop {
            let page = tokio::time::timeout(
                budget.saturating_sub(started.elapsed()),
                self.authorized(&ctx, Method::GET, &url, Some("application/json"), true),
            )
            .await;
            let Ok(reply) = page else {
                return Err(ctx.err(ErrorKind::OverBudget {
                    detail: format!(
                        "listing the tags took longer than {}s (registries.listing_timeout) after {} page(s) and {} tag(s); the next cycle tries again",
                        budget.as_secs(),
                        listing.pages,
                        listing.tags
                    ),
                }));
            };
            let reply = reply?;
            expect_success(&ctx, &reply)?;
            let page: TagsPage = serde_json::from_slice(&reply.body).map_err(|e| {
                ctx.err(ErrorKind::InvalidResponse {
                    detail: format!(
                        "tag list page {} is not the expected JSON ({e})",
                        listing.pages + 1
                    ),
                })
            })?;
            // serde would also read a struct from a JSON array; a tag page is an object.
            let is_object = reply
                .body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{');
            if !is_object || (page.name.is_none() && page.tags.is_none()) {
                return Err(ctx.err(ErrorKind::InvalidResponse {
                    detail: format!(
                        "tag list page {} is not an object with `name` and `tags`",
                        listing.pages + 1
                    ),
                }));
            }
            let tags = page.tags.unwrap_or_default();
            listing.pages += 1;
            listing.tags += tags.len() as u64;
            let next = reply
                .headers
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_link_next);
            tracing::debug!(
                registry = %st.name,
                repository = image.repository(),
                page = listing.pages,
                tags = tags.len(),
                more = next.is_some(),
                "tag list page"
            );
            if on_page(tags).is_break() {
                return Ok(listing);
            }
            let Some(next) = next else {
                listing.complete = true;
                return Ok(listing);
            };
            let next_url = url.join(&next).map_err(|e| {
                ctx.err(ErrorKind::InvalidResponse {
                    detail: format!("the next-page link {next:?} is not a URL: {e}"),
                })
            })?;
            // Credentials for this registry must not follow a link to someone else.
            if next_url.origin() != url.origin() {
                return Err(ctx.err(ErrorKind::InvalidResponse {
                    detail: format!("the next-page link {next:?} points to another host"),
                }));
            }
            if next_url == url {
                return Err(ctx.err(ErrorKind::InvalidResponse {
                    detail: "the next-page link points back to the same page".into(),
                }));
            }
            if !visited.insert(next_url.to_string()) {
                return Err(ctx.err(ErrorKind::InvalidResponse {
                    detail: format!(
                        "the next-page links loop: page {} links back to a page already read",
                        listing.pages
                    ),
                }));
            }
            if listing.pages >= self.inner.config.max_tag_pages {
                return Err(ctx.err(ErrorKind::InvalidResponse {
                    detail: format!(
                        "more than {} tag list pages (max_tag_pages)",
                        self.inner.config.max_tag_pages
                    ),
                }));
            }
            url = next_url;
        }
    }

    /// The digest (and media type) `reference` (a tag or a digest) resolves to, by `HEAD`,
    /// accepting OCI and Docker indexes and manifests. Falls back to a `GET` (and hashes the
    /// body) only for a registry that omits `Docker-Content-Digest`.
    pub async fn head_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        let st = self.registry_state(image, Step::HeadManifest)?;
        let ctx = Ctx {
            st: &st,
            repository: image.repository(),
            step: Step::HeadManifest,
            kind: RequestKind::HeadManifest,
        };
        let by_digest = is_valid_digest(reference);
        if !by_digest && !is_valid_tag(reference) {
            return Err(ctx.err(ErrorKind::InvalidRequest {
                detail: format!("{reference:?} is neither a tag nor a digest"),
            }));
        }
        let url = self.url(&ctx, &format!("manifests/{reference}"))?;
        let reply = self
            .authorized(&ctx, Method::HEAD, &url, Some(MANIFEST_ACCEPT), false)
            .await?;
        expect_success(&ctx, &reply)?;
        let media_type = content_type(&reply.headers);
        let size = reply
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let header = reply
            .headers
            .get("docker-content-digest")
            .map(|v| v.to_str().map(|s| s.trim().to_owned()));
        let head = match header {
            Some(Ok(digest)) if is_valid_digest(&digest) => ManifestHead {
                digest,
                media_type,
                size,
            },
            Some(_) => {
                return Err(ctx.err(ErrorKind::InvalidResponse {
                    detail: "the Docker-Content-Digest header is not a digest".into(),
                }));
            }
            None => {
                let gctx = ctx.with(Step::GetManifest, RequestKind::GetManifest);
                let (body, media_type) = self.get_manifest_body(&gctx, &url).await?;
                ManifestHead {
                    digest: digest_of(&body, if by_digest { reference } else { "sha256:" }),
                    media_type,
                    size: Some(body.len() as u64),
                }
            }
        };
        if by_digest && head.digest != reference {
            return Err(ctx.err(ErrorKind::DigestMismatch {
                expected: reference.to_owned(),
                actual: head.digest,
            }));
        }
        Ok(head)
    }

    /// The platforms of the manifest `digest`: those an index/list names, or for a
    /// single-image manifest the one in its config blob. Fetched once per digest per process.
    pub async fn platforms(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Arc<[Platform]>, RegistryError> {
        if !is_valid_digest(digest) {
            return Err(RegistryError::new(
                image.registry(),
                image.repository(),
                Step::GetManifest,
                ErrorKind::InvalidRequest {
                    detail: format!("{digest:?} is not a digest"),
                },
            ));
        }
        let cell = lock(&self.inner.platforms)
            .entry(digest.to_owned())
            .or_default()
            .clone();
        // Concurrent askers wait for the one fetch; a failure is not cached.
        let platforms = cell
            .get_or_try_init(|| self.fetch_platforms(image, digest))
            .await?;
        Ok(platforms.clone())
    }

    /// Whether `tag_or_digest` has an image for `os`/`architecture` (and `variant`, if given).
    pub async fn supports_platform(
        &self,
        image: &ImageRef,
        tag_or_digest: &str,
        os: &str,
        architecture: &str,
        variant: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let digest = if is_valid_digest(tag_or_digest) {
            tag_or_digest.to_owned()
        } else {
            self.head_manifest(image, tag_or_digest).await?.digest
        };
        let platforms = self.platforms(image, &digest).await?;
        Ok(platforms
            .iter()
            .any(|p| p.matches(os, architecture, variant)))
    }

    async fn fetch_platforms(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Arc<[Platform]>, RegistryError> {
        let st = self.registry_state(image, Step::GetManifest)?;
        let ctx = Ctx {
            st: &st,
            repository: image.repository(),
            step: Step::GetManifest,
            kind: RequestKind::GetManifest,
        };
        let url = self.url(&ctx, &format!("manifests/{digest}"))?;
        let (body, media_type) = self.get_manifest_body(&ctx, &url).await?;
        verify_digest(&ctx, digest, &body)?;
        let parsed = parse_manifest(&body, media_type.as_deref())
            .map_err(|detail| ctx.err(ErrorKind::InvalidResponse { detail }))?;
        let platforms = match parsed {
            ParsedManifest::Index(platforms) => platforms,
            ParsedManifest::Image { config_digest } => {
                let bctx = ctx.with(Step::GetBlob, RequestKind::GetBlob);
                let url = self.url(&bctx, &format!("blobs/{config_digest}"))?;
                let reply = self
                    .authorized(&bctx, Method::GET, &url, None, true)
                    .await?;
                expect_success(&bctx, &reply)?;
                verify_digest(&bctx, &config_digest, &reply.body)?;
                let platform = parse_config_platform(&reply.body)
                    .map_err(|detail| bctx.err(ErrorKind::InvalidResponse { detail }))?;
                vec![platform]
            }
        };
        tracing::debug!(registry = %st.name, repository = image.repository(), digest, platforms = platforms.len(), "platforms read");
        Ok(platforms.into())
    }

    async fn get_manifest_body(
        &self,
        ctx: &Ctx<'_>,
        url: &Url,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let reply = self
            .authorized(ctx, Method::GET, url, Some(MANIFEST_ACCEPT), true)
            .await?;
        expect_success(ctx, &reply)?;
        let media_type = content_type(&reply.headers);
        Ok((reply.body, media_type))
    }

    fn registry_state(
        &self,
        image: &ImageRef,
        step: Step,
    ) -> Result<Arc<RegistryState>, RegistryError> {
        let registry = image.registry();
        let config = &self.inner.config;
        let err = |kind| RegistryError::new(registry, image.repository(), step, kind);
        check_allowed(registry, &config.allow, &config.deny)
            .map_err(|reason| err(ErrorKind::Denied { reason }))?;
        let mut map = lock(&self.inner.registries);
        if let Some(st) = map.get(registry) {
            return Ok(st.clone());
        }
        let base = base_url(registry, &config.endpoints, &config.insecure_registries)
            .map_err(|detail| err(ErrorKind::InvalidRequest { detail }))?;
        let st = Arc::new(RegistryState {
            name: registry.to_owned(),
            base,
            semaphore: Semaphore::new(config.max_concurrent_requests_per_registry),
            auth: Mutex::new(AuthMode::Unknown),
            credentials: tokio::sync::Mutex::new(None),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            halt: Mutex::new(None),
            counters: Counters::default(),
        });
        map.insert(registry.to_owned(), st.clone());
        Ok(st)
    }

    fn url(&self, ctx: &Ctx<'_>, tail: &str) -> Result<Url, RegistryError> {
        let text = format!("{}/v2/{}/{tail}", ctx.st.base, ctx.repository);
        Url::parse(&text).map_err(|e| {
            ctx.err(ErrorKind::InvalidRequest {
                detail: format!("{text:?} is not a valid URL: {e}"),
            })
        })
    }

    /// Sends a request with whatever authentication the registry needs, learning it from a
    /// `401` the first time and reusing it afterwards.
    async fn authorized(
        &self,
        ctx: &Ctx<'_>,
        method: Method,
        url: &Url,
        accept: Option<&'static str>,
        read_body: bool,
    ) -> Result<Reply, RegistryError> {
        let scope = format!("repository:{}:pull", ctx.repository);
        // At most: anonymous → 401 → token → 401 (cached, stale) → fresh token. Bounded so
        // that a registry changing its mind on every answer cannot loop us.
        for _ in 0..4 {
            let (header, used) = self.authorization(ctx, &scope).await?;
            let mut request = reqwest::Request::new(method.clone(), url.clone());
            if let Some(accept) = accept {
                request
                    .headers_mut()
                    .insert(ACCEPT, HeaderValue::from_static(accept));
            }
            if let Some(header) = header {
                request.headers_mut().insert(AUTHORIZATION, header);
            }
            let reply = self.send(ctx, request, read_body).await?;
            if reply.status != StatusCode::UNAUTHORIZED {
                return Ok(reply);
            }
            let challenges = parse_www_authenticate(
                reply
                    .headers
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            tracing::debug!(
                registry = %ctx.st.name,
                repository = ctx.repository,
                step = %ctx.step,
                used = used.label(),
                schemes = ?challenges.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
                "401 from registry"
            );
            match used {
                Used::CachedToken(token) => {
                    // The token may have been revoked or have expired early: one fresh token.
                    self.forget_token(ctx.st, &scope, &token).await;
                    self.learn(ctx, &challenges, &reply)?;
                }
                Used::FreshToken => {
                    let creds = self.credentials(ctx).await?;
                    let detail = format!(
                        "the registry refused a token just issued for {scope}{}",
                        registry_message_suffix(&reply.body)
                    );
                    return Err(ctx.err(refused_or_missing(creds, detail)));
                }
                Used::Basic => {
                    let creds = self.credentials(ctx).await?;
                    return Err(ctx.err(ErrorKind::CredentialsRefused {
                        from: creds.source,
                        detail: format!(
                            "the registry answered HTTP 401 to them{}",
                            registry_message_suffix(&reply.body)
                        ),
                    }));
                }
                Used::Nothing => {
                    let mode = self.learn(ctx, &challenges, &reply)?;
                    if mode == AuthMode::Basic {
                        let creds = self.credentials(ctx).await?;
                        if !matches!(creds.credential, Some(Credential::Basic { .. })) {
                            return Err(ctx.err(ErrorKind::CredentialsMissing {
                                looked_in: creds.looked_in,
                            }));
                        }
                    }
                }
            }
        }
        Err(ctx.err(ErrorKind::InvalidResponse {
            detail: "authentication did not settle: the registry kept answering HTTP 401".into(),
        }))
    }

    /// Records the scheme a `401` asks for.
    fn learn(
        &self,
        ctx: &Ctx<'_>,
        challenges: &[Challenge],
        reply: &Reply,
    ) -> Result<AuthMode, RegistryError> {
        let mode = if let Some(bearer) = challenges.iter().find(|c| c.is("bearer")) {
            let realm = bearer
                .param("realm")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    ctx.err(ErrorKind::InvalidResponse {
                        detail: "a Bearer challenge without a realm".into(),
                    })
                })?;
            AuthMode::Bearer {
                realm: realm.to_owned(),
                service: bearer.param("service").map(str::to_owned),
            }
        } else if challenges.iter().any(|c| c.is("basic")) {
            AuthMode::Basic
        } else if challenges.is_empty() {
            return Err(ctx.err(ErrorKind::Status {
                status: 401,
                attempts: 1,
                message: format!(
                    "no WWW-Authenticate challenge{}",
                    registry_message_suffix(&reply.body)
                ),
            }));
        } else {
            return Err(ctx.err(ErrorKind::UnsupportedAuth {
                challenges: challenges
                    .iter()
                    .map(|c| c.scheme.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }));
        };
        *lock(&ctx.st.auth) = mode.clone();
        Ok(mode)
    }

    /// The `Authorization` header for the next attempt, if the registry is known to want one.
    async fn authorization(
        &self,
        ctx: &Ctx<'_>,
        scope: &str,
    ) -> Result<(Option<HeaderValue>, Used), RegistryError> {
        let mode = lock(&ctx.st.auth).clone();
        match mode {
            AuthMode::Unknown => Ok((None, Used::Nothing)),
            AuthMode::Basic => {
                let creds = self.credentials(ctx).await?;
                match &creds.credential {
                    Some(Credential::Basic { username, password }) => {
                        Ok((Some(basic_header(username, password)), Used::Basic))
                    }
                    _ => Ok((None, Used::Nothing)),
                }
            }
            AuthMode::Bearer { realm, service } => {
                let (token, fresh) = self.token(ctx, &realm, service.as_deref(), scope).await?;
                let header = bearer_header(&token);
                let used = if fresh {
                    Used::FreshToken
                } else {
                    Used::CachedToken(token)
                };
                Ok((Some(header), used))
            }
        }
    }

    /// The credential this client would present to `registry` (its configuration first, then
    /// Docker's `config.json` and credential helpers), or `None` for anonymous access — for
    /// handing to a Docker engine that must pull from the same registry.
    pub async fn credential_for(
        &self,
        registry: &str,
    ) -> Result<Option<Credential>, RegistryError> {
        let config = &self.inner.config;
        let settings = LookupSettings {
            config_credentials: &config.credentials,
            docker_config: self.inner.docker_config.as_deref(),
            helper_path: config.credential_helper_path.as_ref(),
            helper_timeout: config.credential_helper_timeout,
        };
        credentials::resolve(registry, &settings)
            .await
            .map(|r| r.credential)
            .map_err(|e| {
                RegistryError::new(
                    registry,
                    "",
                    Step::Credentials,
                    ErrorKind::CredentialLookup {
                        from: e.source,
                        detail: e.detail,
                    },
                )
            })
    }

    async fn credentials(&self, ctx: &Ctx<'_>) -> Result<ResolvedCredential, RegistryError> {
        let mut cached = ctx.st.credentials.lock().await;
        if let Some(resolved) = cached.as_ref() {
            return Ok(resolved.clone());
        }
        let config = &self.inner.config;
        let settings = LookupSettings {
            config_credentials: &config.credentials,
            docker_config: self.inner.docker_config.as_deref(),
            helper_path: config.credential_helper_path.as_ref(),
            helper_timeout: config.credential_helper_timeout,
        };
        let resolved = credentials::resolve(&ctx.st.name, &settings)
            .await
            .map_err(|e| {
                RegistryError::new(
                    &ctx.st.name,
                    ctx.repository,
                    Step::Credentials,
                    ErrorKind::CredentialLookup {
                        from: e.source,
                        detail: e.detail,
                    },
                )
            })?;
        tracing::debug!(registry = %ctx.st.name, source = %resolved.source, "credentials resolved");
        *cached = Some(resolved.clone());
        Ok(resolved)
    }

    /// A bearer token for `scope`: the cached one while it is valid, else a new one. The bool
    /// says whether it was just issued.
    async fn token(
        &self,
        ctx: &Ctx<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(Secret, bool), RegistryError> {
        let mut tokens = ctx.st.tokens.lock().await;
        if let Some(cached) = tokens.get(scope)
            && cached.valid_until > Instant::now()
        {
            return Ok((cached.token.clone(), false));
        }
        let asked_at = Instant::now();
        let (token, expires_in) = self.fetch_token(ctx, realm, service, scope).await?;
        let margin = self.inner.config.token_expiry_margin;
        // Counted from when we asked, not from `issued_at`, so clock skew cannot extend it.
        let lifetime = if expires_in > margin {
            expires_in - margin
        } else {
            expires_in / 2
        };
        tokens.insert(
            scope.to_owned(),
            CachedToken {
                token: token.clone(),
                valid_until: asked_at + lifetime,
            },
        );
        Ok((token, true))
    }

    async fn forget_token(&self, st: &RegistryState, scope: &str, used: &Secret) {
        let mut tokens = st.tokens.lock().await;
        // Someone may already have replaced it with a fresh one; keep that.
        if tokens.get(scope).is_some_and(|t| &t.token == used) {
            tokens.remove(scope);
        }
    }

    /// Asks the token service (`realm`) for a token, with the registry's credentials if any:
    /// Basic for a username/password, the OAuth2 refresh-token grant for an identity token.
    async fn fetch_token(
        &self,
        ctx: &Ctx<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(Secret, Duration), RegistryError> {
        let creds = self.credentials(ctx).await?;
        let tctx = ctx.with(Step::Token, RequestKind::Token);
        let mut url = Url::parse(realm).map_err(|e| {
            tctx.err(ErrorKind::InvalidResponse {
                detail: format!("the token realm {realm:?} is not a URL: {e}"),
            })
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(tctx.err(ErrorKind::InvalidResponse {
                detail: format!("the token realm {realm:?} is not an http(s) URL"),
            }));
        }
        let request = match &creds.credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token");
                if let Some(service) = service {
                    form.append_pair("service", service);
                }
                form.append_pair("scope", scope)
                    .append_pair("client_id", "safe-updater")
                    .append_pair("refresh_token", refresh.expose());
                let mut request = reqwest::Request::new(Method::POST, url.clone());
                request.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                *request.body_mut() = Some(form.finish().into());
                request
            }
            other => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    query.append_pair("scope", scope);
                }
                let mut request = reqwest::Request::new(Method::GET, url.clone());
                if let Some(Credential::Basic { username, password }) = other {
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, basic_header(username, password));
                }
                request
            }
        };
        let reply = self.send(&tctx, request, true).await?;
        let service_host = url.host_str().unwrap_or("?").to_owned();
        match reply.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let detail = format!(
                    "the token service at {service_host} answered HTTP {}{}",
                    reply.status.as_u16(),
                    registry_message_suffix(&reply.body)
                );
                return Err(tctx.err(refused_or_missing(creds, detail)));
            }
            s => {
                return Err(tctx.err(ErrorKind::Status {
                    status: s.as_u16(),
                    attempts: 1,
                    message: registry_message(&reply.body),
                }));
            }
        }
        let parsed: TokenResponse = serde_json::from_slice(&reply.body).map_err(|e| {
            // Not `{e}`: serde can quote the offending value, and here that may be a token.
            tctx.err(ErrorKind::InvalidResponse {
                detail: format!(
                    "the token service at {service_host} did not answer with the expected JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                tctx.err(ErrorKind::InvalidResponse {
                    detail: format!("the token service at {service_host} returned no token"),
                })
            })?;
        // The distribution token spec: 60 seconds when absent.
        let expires_in = Duration::from_secs(parsed.expires_in.filter(|s| *s > 0).unwrap_or(60));
        tracing::debug!(
            registry = %ctx.st.name,
            scope,
            expires_in_seconds = expires_in.as_secs(),
            "bearer token issued"
        );
        Ok((Secret::new(token), expires_in))
    }

    /// Sends one request with retries: exponential backoff with jitter on connection
    /// errors, timeouts and 5xx; `Retry-After` on 429, bounded; the registry's concurrency
    /// limit around each attempt; rate-limit headers observed on every answer.
    async fn send(
        &self,
        ctx: &Ctx<'_>,
        request: reqwest::Request,
        read_body: bool,
    ) -> Result<Reply, RegistryError> {
        let sent = self.send_with_retries(ctx, request, read_body).await;
        if sent.is_err() {
            self.inner.counters.failed();
            ctx.st.counters.failed();
        }
        sent
    }

    async fn send_with_retries(
        &self,
        ctx: &Ctx<'_>,
        request: reqwest::Request,
        read_body: bool,
    ) -> Result<Reply, RegistryError> {
        let config = &self.inner.config;
        let max_attempts = config.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(kind) = lock(&ctx.st.halt).clone() {
                return Err(ctx.err(kind));
            }
            let Some(mut this) = request.try_clone() else {
                return Err(ctx.err(ErrorKind::InvalidRequest {
                    detail: "the request body cannot be replayed".into(),
                }));
            };
            *this.timeout_mut() = Some(config.request_timeout);
            let outcome = {
                let Ok(_permit) = ctx.st.semaphore.acquire().await else {
                    return Err(ctx.err(ErrorKind::InvalidRequest {
                        detail: "the client is shutting down".into(),
                    }));
                };
                self.inner.counters.sent(ctx.kind, attempt > 1);
                ctx.st.counters.sent(ctx.kind, attempt > 1);
                self.attempt(this, read_body).await
            };
            let retry_in = match outcome {
                Attempt::Fatal(kind) => return Err(ctx.err(kind)),
                Attempt::Retryable(detail) => {
                    if attempt >= max_attempts {
                        return Err(ctx.err(ErrorKind::Transport {
                            attempts: attempt,
                            detail,
                        }));
                    }
                    tracing::warn!(registry = %ctx.st.name, repository = ctx.repository, step = %ctx.step, attempt, %detail, "request failed; retrying");
                    self.backoff(attempt)
                }
                Attempt::Reply(reply) => {
                    self.observe_rate_limit(ctx, &reply.headers);
                    let status = reply.status;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.inner.counters.throttled();
                        ctx.st.counters.throttled();
                        let retry_after = reply
                            .headers
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
                        if let Some(wait) = retry_after
                            && wait > config.retry.max_retry_after
                        {
                            return Err(ctx.err(ErrorKind::RateLimited {
                                attempts: attempt,
                                retry_after: Some(wait),
                            }));
                        }
                        if attempt >= max_attempts {
                            return Err(ctx.err(ErrorKind::RateLimited {
                                attempts: attempt,
                                retry_after: None,
                            }));
                        }
                        let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                        tracing::warn!(registry = %ctx.st.name, step = %ctx.step, attempt, wait_ms = wait.as_millis() as u64, "HTTP 429; waiting");
                        wait
                    } else if status.is_server_error() {
                        if attempt >= max_attempts {
                            return Err(ctx.err(ErrorKind::Status {
                                status: status.as_u16(),
                                attempts: attempt,
                                message: registry_message(&reply.body),
                            }));
                        }
                        tracing::warn!(registry = %ctx.st.name, repository = ctx.repository, step = %ctx.step, attempt, status = status.as_u16(), "server error; retrying");
                        self.backoff(attempt)
                    } else {
                        return Ok(reply);
                    }
                }
            };
            tokio::time::sleep(retry_in).await;
        }
    }

    async fn attempt(&self, request: reqwest::Request, read_body: bool) -> Attempt {
        let response = match self.inner.http.execute(request).await {
            Ok(response) => response,
            Err(e) => return Attempt::Retryable(self.describe(&e)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = if read_body {
            match self.read_body(response).await {
                Ok(body) => body,
                Err(outcome) => return outcome,
            }
        } else {
            Vec::new()
        };
        Attempt::Reply(Reply {
            status,
            headers,
            body,
        })
    }

    /// Reads a body up to `max_body_bytes`, chunk by chunk, so that an oversized answer is
    /// refused without being buffered.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Attempt> {
        let limit = self.inner.config.max_body_bytes;
        let too_large = || Attempt::Fatal(ErrorKind::BodyTooLarge { limit });
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(Attempt::Retryable(self.describe(&e))),
            }
        }
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!(
                "timed out after {} s (request_timeout)",
                self.inner.config.request_timeout.as_secs_f64()
            );
        }
        // The whole chain: the useful part ("Connection refused", a certificate problem) is
        // at the bottom. URLs in it never carry credentials (those go in headers or bodies).
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let part = s.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        text
    }

    /// Reads Docker Hub's `RateLimit-Remaining`/`RateLimit-Limit`; below the reserve, halts
    /// the registry for the rest of the cycle.
    fn observe_rate_limit(&self, ctx: &Ctx<'_>, headers: &HeaderMap) {
        let read = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_rate_limit)
        };
        let Some(remaining) = read("ratelimit-remaining") else {
            return;
        };
        let limit = read("ratelimit-limit").map(|l| l.count);
        let reserve = self.inner.config.rate_limit_reserve;
        tracing::debug!(registry = %ctx.st.name, remaining = remaining.count, limit, "rate limit");
        if remaining.count < reserve {
            let mut halt = lock(&ctx.st.halt);
            if halt.is_none() {
                tracing::warn!(
                    registry = %ctx.st.name,
                    remaining = remaining.count,
                    limit,
                    reserve,
                    "rate-limit reserve reached; no more requests to this registry this cycle"
                );
            }
            *halt = Some(ErrorKind::RateLimitReserve {
                remaining: remaining.count,
                limit,
                reserve,
            });
        }
    }

    /// Exponential backoff with "equal jitter": half the step fixed, half random, so that
    /// clients that failed together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let retry = &self.inner.config.retry;
        let exponent = attempt.saturating_sub(1).min(20);
        let step = retry
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(retry.max_backoff);
        let half = step / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) that differs between calls. `RandomState` is randomly keyed per
/// process and per instance, which is all the randomness backoff jitter needs.
fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = std::collections::hash_map::RandomState::new().hash_one(n) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

fn build_http(config: &ClientConfig) -> Result<reqwest::Client, ClientBuildError> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    // ring, handed over explicitly: no process-wide provider to install, and no aws-lc-rs.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Proxies as configured here only (reqwest would read the environment itself, and send
    // loopback registries through a proxy too).
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(config.connect_timeout)
        .user_agent(config.user_agent.clone())
        .no_proxy();
    for p in config.proxy.proxies().map_err(ClientBuildError::Config)? {
        builder = builder.proxy(p);
    }
    Ok(builder.build()?)
}

fn basic_header(username: &str, password: &Secret) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    sensitive_header(&format!("Basic {encoded}"))
}

fn bearer_header(token: &Secret) -> HeaderValue {
    sensitive_header(&format!("Bearer {}", token.expose()))
}

fn sensitive_header(value: &str) -> HeaderValue {
    // A token with bytes not allowed in a header cannot be sent; an empty (thus refused)
    // header makes the registry's 401 say so instead of a panic here.
    let mut header = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn expect_success(ctx: &Ctx<'_>, reply: &Reply) -> Result<(), RegistryError> {
    let status = reply.status;
    if status.is_success() {
        return Ok(());
    }
    let message = registry_message(&reply.body);
    Err(ctx.err(if status == StatusCode::NOT_FOUND {
        ErrorKind::NotFound {
            status: status.as_u16(),
            message,
        }
    } else {
        ErrorKind::Status {
            status: status.as_u16(),
            attempts: 1,
            message,
        }
    }))
}

fn verify_digest(ctx: &Ctx<'_>, expected: &str, content: &[u8]) -> Result<(), RegistryError> {
    let actual = digest_of(content, expected);
    if actual == expected {
        Ok(())
    } else {
        Err(ctx.err(ErrorKind::DigestMismatch {
            expected: expected.to_owned(),
            actual,
        }))
    }
}

fn refused_or_missing(creds: ResolvedCredential, detail: String) -> ErrorKind {
    if creds.credential.is_some() {
        ErrorKind::CredentialsRefused {
            from: creds.source,
            detail,
        }
    } else {
        ErrorKind::CredentialsMissing {
            looked_in: creds.looked_in,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The registry's own error text (`{"errors":[{"code","message"}]}`), if the body has it.
/// Other bodies are not echoed: they may be huge, binary, or reflect what we sent.
fn registry_message(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    parsed
        .errors
        .iter()
        .map(|e| {
            let text: String = format!("{} {}", e.code, e.message)
                .trim()
                .chars()
                .take(300)
                .collect();
            text
        })
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn registry_message_suffix(body: &[u8]) -> String {
    let message = registry_message(body);
    if message.is_empty() {
        message
    } else {
        format!(" ({message})")
    }
}

impl Used {
    fn label(&self) -> &'static str {
        match self {
            Used::Nothing => "nothing",
            Used::Basic => "basic",
            Used::CachedToken(_) => "cached token",
            Used::FreshToken => "fresh token",
        }
    }
}

#[derive(Deserialize)]
struct TagsPage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let mut config = ClientConfig::default();
        config.retry.initial_backoff = Duration::from_millis(100);
        config.retry.max_backoff = Duration::from_millis(1000);
        config.docker_config = crate::DockerConfigLocation::Disabled;
        let client = RegistryClient::new(config).unwrap();
        for attempt in 1..40 {
            let d = client.backoff(attempt);
            let step = Duration::from_millis(100 * (1u64 << (attempt - 1).min(20)))
                .min(Duration::from_millis(1000));
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let values: Vec<f64> = (0..100).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn tags() {
        assert!(is_valid_tag("1.0.0-alpine"));
        assert!(is_valid_tag("_x"));
        assert!(!is_valid_tag("-x"));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag("a/b"));
        assert!(!is_valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn registry_messages() {
        assert_eq!(
            registry_message(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            "MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(registry_message(b"<html>oops</html>"), "");
    }

    #[test]
    fn sensitive_headers_do_not_debug_print() {
        let h = bearer_header(&Secret::new("tok-123"));
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("tok-123"));
        let h = basic_header("u", &Secret::new("pw"));
        assert!(h.is_sensitive());
    }
}
