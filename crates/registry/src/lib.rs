//! OCI distribution (registry) client of safe-updater: tags, digests, auth, retries, rate limits.
