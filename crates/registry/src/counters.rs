//! Request counters by kind, read by the engine (per cycle) and by benchmarks. Every HTTP
//! request actually sent counts, retries included, so the numbers are what a registry's
//! rate limiter sees.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of request counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Token-service requests.
    pub token: u64,
    /// `GET …/tags/list` pages.
    pub tags_page: u64,
    /// `HEAD …/manifests/…`.
    pub head_manifest: u64,
    /// `GET …/manifests/…`.
    pub get_manifest: u64,
    /// `GET …/blobs/…`.
    pub get_blob: u64,
    /// Of the requests above, how many were retries (a second or later attempt).
    pub retries: u64,
    /// Answers with HTTP 429.
    pub throttled: u64,
    /// Requests that ended in an error after their retries (what the caller saw fail).
    pub errors: u64,
}

impl RequestCounts {
    /// Requests sent, of every kind.
    pub fn total(&self) -> u64 {
        self.token + self.tags_page + self.head_manifest + self.get_manifest + self.get_blob
    }

    /// The counts since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            token: self.token.saturating_sub(earlier.token),
            tags_page: self.tags_page.saturating_sub(earlier.tags_page),
            head_manifest: self.head_manifest.saturating_sub(earlier.head_manifest),
            get_manifest: self.get_manifest.saturating_sub(earlier.get_manifest),
            get_blob: self.get_blob.saturating_sub(earlier.get_blob),
            retries: self.retries.saturating_sub(earlier.retries),
            throttled: self.throttled.saturating_sub(earlier.throttled),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// The kind of a request, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Token,
    TagsPage,
    HeadManifest,
    GetManifest,
    GetBlob,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    token: AtomicU64,
    tags_page: AtomicU64,
    head_manifest: AtomicU64,
    get_manifest: AtomicU64,
    get_blob: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    pub(crate) fn sent(&self, kind: RequestKind, retry: bool) {
        let counter = match kind {
            RequestKind::Token => &self.token,
            RequestKind::TagsPage => &self.tags_page,
            RequestKind::HeadManifest => &self.head_manifest,
            RequestKind::GetManifest => &self.get_manifest,
            RequestKind::GetBlob => &self.get_blob,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            token: self.token.load(Ordering::Relaxed),
            tags_page: self.tags_page.load(Ordering::Relaxed),
            head_manifest: self.head_manifest.load(Ordering::Relaxed),
            get_manifest: self.get_manifest.load(Ordering::Relaxed),
            get_blob: self.get_blob.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}
