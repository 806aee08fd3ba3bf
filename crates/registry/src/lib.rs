//! OCI distribution (registry) client of safe-updater: the **detect** step's window on
//! registries — tags, manifest digests, platforms — with authentication, retries, rate limits
//! and per-cycle request de-duplication.
//!
//! * [`RegistryClient`] speaks the distribution API over HTTP (reqwest + rustls on `ring`):
//!   tag lists page by page, manifest digests by `HEAD`, platforms of an index or image, for
//!   anonymous, Basic and Bearer-token registries, with credentials from its configuration or
//!   Docker's `config.json` (including credential helpers).
//! * [`Cycle`] is what the engine uses during one cycle: each repository listed once, each
//!   (repository, tag) resolved once, and the cycle's [`RequestCounts`].
//! * [`RegistryApi`] is the narrow interface both implement over; [`FakeRegistry`] is the
//!   in-memory stand-in for tests above this crate.
//!
//! What it must not do: decide anything about updates (it reports registry facts), contact a
//! registry the allow/deny list forbids, keep contacting a registry whose rate-limit reserve
//! is reached, or let a credential or token reach a log line, an error message or a `Debug`
//! string. Errors ([`RegistryError`]) name the registry, repository and step.

pub mod address;
mod client;
mod config;
mod counters;
pub mod credentials;
mod cycle;
mod error;
pub mod headers;
pub mod manifest;
mod proxy;

pub use client::{ClientBuildError, RegistryClient, TagListing};
pub use config::{ClientConfig, DockerConfigLocation, RetryPolicy};
pub use counters::RequestCounts;
pub use credentials::{Credential, CredentialSource, Secret};
pub use cycle::{Cycle, FakeRegistry, RegistryApi};
pub use error::{ErrorKind, RegistryError, Step};
pub use manifest::{ManifestHead, Platform};
pub use proxy::ProxyEnv;
