//! The registry as one detect cycle sees it: each repository's tag list fetched once and
//! each (repository, tag) `HEAD` made once, however many assets ask, with the request counts
//! of the cycle. Also the narrow [`RegistryApi`] trait the cycle (and the engine's tests)
//! work against, and an in-memory [`FakeRegistry`] implementing it.
//!
//! A cycle caches failures too: a repository whose listing failed is not asked again in the
//! same cycle (the client already retried), so that a broken or rate-limited registry costs
//! one failure per repository, not one per asset. It must not outlive its cycle: the next
//! cycle starts empty and sees new tags.

use std::collections::HashMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use safe_updater_core::reference::ImageRef;
use tokio::sync::OnceCell;

use crate::client::{RegistryClient, TagListing};
use crate::counters::RequestCounts;
use crate::error::{ErrorKind, RegistryError, Step};
use crate::manifest::{ManifestHead, Platform, is_valid_digest};

/// What the engine needs from a registry. Implemented by [`RegistryClient`] and by
/// [`FakeRegistry`]; retries, rate limits and concurrency are inside the client because they
/// apply per HTTP request (token requests included), below this interface.
pub trait RegistryApi: Send + Sync {
    /// Tags of `image`'s repository, page by page (see [`RegistryClient::list_tags`]).
    fn list_tags(
        &self,
        image: &ImageRef,
        on_page: &mut (dyn FnMut(Vec<String>) -> ControlFlow<()> + Send),
    ) -> impl Future<Output = Result<TagListing, RegistryError>> + Send;

    /// The digest a tag or digest resolves to.
    fn head_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> impl Future<Output = Result<ManifestHead, RegistryError>> + Send;

    /// The platforms of a manifest digest.
    fn platforms(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> impl Future<Output = Result<Arc<[Platform]>, RegistryError>> + Send;

    /// A new cycle begins (lift per-cycle halts, re-read credentials).
    fn begin_cycle(&self);

    /// Requests sent so far.
    fn requests(&self) -> RequestCounts;
}

impl RegistryApi for RegistryClient {
    async fn list_tags(
        &self,
        image: &ImageRef,
        on_page: &mut (dyn FnMut(Vec<String>) -> ControlFlow<()> + Send),
    ) -> Result<TagListing, RegistryError> {
        self.list_tags_dyn(image, on_page).await
    }

    async fn head_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        RegistryClient::head_manifest(self, image, reference).await
    }

    async fn platforms(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Arc<[Platform]>, RegistryError> {
        RegistryClient::platforms(self, image, digest).await
    }

    fn begin_cycle(&self) {
        RegistryClient::begin_cycle(self);
    }

    fn requests(&self) -> RequestCounts {
        RegistryClient::requests(self)
    }
}

type Shared<T> = Arc<OnceCell<Result<T, RegistryError>>>;
type RepoKey = (String, String);

/// One cycle's view of the registries. Share it (`&Cycle` or `Arc<Cycle>`) between the
/// assets of a cycle; concurrent askers of the same repository wait for one request.
#[derive(Debug)]
pub struct Cycle<R: RegistryApi = RegistryClient> {
    registry: R,
    tags: Mutex<HashMap<RepoKey, Shared<Arc<[String]>>>>,
    heads: Mutex<HashMap<(RepoKey, String), Shared<ManifestHead>>>,
    started: RequestCounts,
    /// When the cycle's registry work must end (`None`: no limit); what comes after is left
    /// to the next cycle.
    deadline: Option<(std::time::Instant, std::time::Duration)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn repo_key(image: &ImageRef) -> RepoKey {
    (image.registry().to_owned(), image.repository().to_owned())
}

impl<R: RegistryApi> Cycle<R> {
    /// Starts a cycle on `registry` (a [`RegistryClient`] clone, or a fake).
    pub fn new(registry: R) -> Self {
        registry.begin_cycle();
        let started = registry.requests();
        Cycle {
            registry,
            tags: Mutex::new(HashMap::new()),
            heads: Mutex::new(HashMap::new()),
            started,
            deadline: None,
        }
    }

    /// [`Cycle::new`] whose registry requests all end within `budget` from now: a registry
    /// that answers slowly, pages forever or asks to wait cannot hold the cycle (the rest of
    /// its repositories fail with "over budget" and are asked again next cycle).
    pub fn with_budget(registry: R, budget: std::time::Duration) -> Self {
        let mut c = Cycle::new(registry);
        c.deadline = Some((std::time::Instant::now() + budget, budget));
        c
    }

    /// Runs `work` within the cycle's budget.
    async fn within<T>(
        &self,
        image: &ImageRef,
        step: Step,
        work: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let Some((deadline, budget)) = self.deadline else {
            return work.await;
        };
        let over = || {
            RegistryError::new(
                image.registry(),
                image.repository(),
                step,
                ErrorKind::OverBudget {
                    detail: format!(
                        "the cycle's {}s for registry requests (registries.cycle_timeout) are used up; the next cycle asks again",
                        budget.as_secs()
                    ),
                },
            )
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(over());
        }
        tokio::time::timeout(left, work)
            .await
            .unwrap_or_else(|_| Err(over()))
    }

    pub fn registry(&self) -> &R {
        &self.registry
    }

    /// Requests sent since the cycle started (by everyone using the same client).
    pub fn requests(&self) -> RequestCounts {
        self.registry.requests().since(&self.started)
    }

    /// Every tag of `image`'s repository, fetched once per cycle.
    pub async fn tags(&self, image: &ImageRef) -> Result<Arc<[String]>, RegistryError> {
        let cell = lock(&self.tags).entry(repo_key(image)).or_default().clone();
        cell.get_or_init(|| {
            self.within(image, Step::ListTags, async {
                let mut all = Vec::new();
                self.registry
                    .list_tags(image, &mut |page| {
                        all.extend(page);
                        ControlFlow::Continue(())
                    })
                    .await?;
                Ok(Arc::from(all))
            })
        })
        .await
        .clone()
    }

    /// The manifest `reference` (tag or digest) resolves to, asked once per cycle.
    pub async fn head(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        let key = (repo_key(image), reference.to_owned());
        let cell = lock(&self.heads).entry(key).or_default().clone();
        cell.get_or_init(|| {
            self.within(
                image,
                Step::HeadManifest,
                self.registry.head_manifest(image, reference),
            )
        })
        .await
        .clone()
    }

    /// The platforms of a digest (cached by the client for the whole process).
    pub async fn platforms(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Arc<[Platform]>, RegistryError> {
        self.registry.platforms(image, digest).await
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
            self.head(image, tag_or_digest).await?.digest
        };
        let platforms = self.platforms(image, &digest).await?;
        Ok(platforms
            .iter()
            .any(|p| p.matches(os, architecture, variant)))
    }
}

/// An in-memory registry for tests of code above this crate: repositories with tags,
/// digests and platforms, injectable failures, and request counts like the real client's.
#[derive(Debug, Clone, Default)]
pub struct FakeRegistry {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    tags: HashMap<RepoKey, Vec<String>>,
    digests: HashMap<(RepoKey, String), ManifestHead>,
    platforms: HashMap<String, Arc<[Platform]>>,
    failures: HashMap<RepoKey, ErrorKind>,
    counts: RequestCounts,
    cycles: u64,
}

impl FakeRegistry {
    pub fn new() -> Self {
        FakeRegistry::default()
    }

    /// Adds `tag` to the repository, resolving to `digest` with `platforms`.
    pub fn add_tag(&self, image: &ImageRef, tag: &str, digest: &str, platforms: &[Platform]) {
        let mut st = lock(&self.state);
        let key = repo_key(image);
        st.tags.entry(key.clone()).or_default().push(tag.to_owned());
        let head = ManifestHead {
            digest: digest.to_owned(),
            media_type: Some(crate::manifest::OCI_INDEX.to_owned()),
            size: None,
        };
        st.digests
            .insert((key.clone(), tag.to_owned()), head.clone());
        st.digests.insert((key, digest.to_owned()), head);
        st.platforms.insert(digest.to_owned(), platforms.into());
    }

    /// Makes every request for the repository fail with `kind`.
    pub fn fail(&self, image: &ImageRef, kind: ErrorKind) {
        lock(&self.state).failures.insert(repo_key(image), kind);
    }

    /// How many cycles have begun.
    pub fn cycles(&self) -> u64 {
        lock(&self.state).cycles
    }

    fn check(&self, st: &FakeState, image: &ImageRef, step: Step) -> Result<(), RegistryError> {
        match st.failures.get(&repo_key(image)) {
            Some(kind) => Err(RegistryError::new(
                image.registry(),
                image.repository(),
                step,
                kind.clone(),
            )),
            None => Ok(()),
        }
    }

    fn not_found(image: &ImageRef, step: Step) -> RegistryError {
        RegistryError::new(
            image.registry(),
            image.repository(),
            step,
            ErrorKind::NotFound {
                status: 404,
                message: String::new(),
            },
        )
    }
}

impl RegistryApi for FakeRegistry {
    async fn list_tags(
        &self,
        image: &ImageRef,
        on_page: &mut (dyn FnMut(Vec<String>) -> ControlFlow<()> + Send),
    ) -> Result<TagListing, RegistryError> {
        let tags = {
            let mut st = lock(&self.state);
            st.counts.tags_page += 1;
            self.check(&st, image, Step::ListTags)?;
            st.tags
                .get(&repo_key(image))
                .cloned()
                .ok_or_else(|| Self::not_found(image, Step::ListTags))?
        };
        let count = tags.len() as u64;
        let complete = on_page(tags).is_continue();
        Ok(TagListing {
            pages: 1,
            tags: count,
            complete,
        })
    }

    async fn head_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        let mut st = lock(&self.state);
        st.counts.head_manifest += 1;
        self.check(&st, image, Step::HeadManifest)?;
        st.digests
            .get(&(repo_key(image), reference.to_owned()))
            .cloned()
            .ok_or_else(|| Self::not_found(image, Step::HeadManifest))
    }

    async fn platforms(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Arc<[Platform]>, RegistryError> {
        let mut st = lock(&self.state);
        st.counts.get_manifest += 1;
        self.check(&st, image, Step::GetManifest)?;
        st.platforms
            .get(digest)
            .cloned()
            .ok_or_else(|| Self::not_found(image, Step::GetManifest))
    }

    fn begin_cycle(&self) {
        lock(&self.state).cycles += 1;
    }

    fn requests(&self) -> RequestCounts {
        lock(&self.state).counts
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
        }
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[tokio::test]
    async fn each_repository_and_head_once_per_cycle() {
        let fake = FakeRegistry::new();
        let web = image("demo/web");
        fake.add_tag(&web, "1.0.0", D1, &[linux_amd64()]);
        fake.add_tag(&web, "1.1.0", D1, &[linux_amd64()]);
        let cycle = Cycle::new(fake.clone());
        // Many assets, same repository (with different tags in their references).
        let assets = [
            image("demo/web:1.0.0"),
            image("demo/web:1.1.0"),
            image("docker.io/demo/web"),
        ];
        let results = futures_join(&cycle, &assets).await;
        assert!(results.iter().all(|t| t.len() == 2));
        for _ in 0..5 {
            assert_eq!(cycle.head(&web, "1.0.0").await.unwrap().digest, D1);
        }
        assert!(
            cycle
                .supports_platform(&web, "1.0.0", "linux", "amd64", None)
                .await
                .unwrap()
        );
        let counts = cycle.requests();
        assert_eq!((counts.tags_page, counts.head_manifest), (1, 1));
        // Failures are cached too.
        let missing = image("demo/missing");
        assert!(cycle.tags(&missing).await.is_err());
        assert!(cycle.tags(&missing).await.is_err());
        assert_eq!(cycle.requests().tags_page, 2);
        // A new cycle asks again.
        let next = Cycle::new(fake.clone());
        next.tags(&web).await.unwrap();
        assert_eq!(next.requests().tags_page, 1);
        assert_eq!(fake.cycles(), 2);
    }

    async fn futures_join(cycle: &Cycle<FakeRegistry>, assets: &[ImageRef]) -> Vec<Arc<[String]>> {
        let mut out = Vec::new();
        for a in assets {
            out.push(cycle.tags(a).await.unwrap());
        }
        out
    }
}
