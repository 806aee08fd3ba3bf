//! The sans-IO core of safe-updater.
//!
//! Everything here is a pure function of its inputs: no network, no files, no clock, no
//! environment. Time, environment variables and file contents are passed in by the caller.
//! Adapters (Docker, Kubernetes, registries, the store) live in other crates and must not be
//! reached from here.

pub mod asset;
pub mod audit;
pub mod config;
pub mod constraint;
pub mod decide;
pub mod health;
pub mod lease;
pub mod policy;
pub mod redact;
pub mod reference;
pub mod scope;
pub mod semver;
pub mod tag;
