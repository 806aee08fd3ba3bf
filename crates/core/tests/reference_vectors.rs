//! Checks `reference.rs` against golden vectors produced by Docker's own Go code
//! (`github.com/distribution/reference`, see `tools/refvectors`). The JSON is committed;
//! regenerating it is a manual step described in `tools/refvectors/README.md`.

use safe_updater_core::reference::{ImageRef, ReferenceError};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Vector {
    input: String,
    valid: bool,
    registry: Option<String>,
    repository: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    normalized: Option<String>,
    familiar: Option<String>,
    familiar_string: Option<String>,
    with_default_tag: Option<String>,
    error: Option<String>,
}

const VECTORS: &str = include_str!("data/reference_vectors.json");

fn vectors() -> Vec<Vector> {
    let v: Vec<Vector> = serde_json::from_str(VECTORS).expect("reference_vectors.json parses");
    assert!(
        v.len() >= 150,
        "expected the full vector set, got {}",
        v.len()
    );
    v
}

/// The kind of error Docker reported, keyed by its message. Order matters: the
/// normalizer's uppercase message also starts with "invalid reference format".
fn docker_error_kind(msg: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("must be lowercase", "uppercase"),
        ("cannot specify 64-byte hexadecimal strings", "hexadecimal"),
        ("must have at least one component", "empty"),
        ("must not be more than 255 characters", "too-long"),
        ("must be canonical", "not-canonical"),
        ("invalid checksum digest format", "digest-format"),
        ("invalid checksum digest length", "digest-length"),
        ("unsupported digest algorithm", "digest-unsupported"),
        ("invalid tag format", "tag-format"),
        ("invalid reference format", "format"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| msg.contains(needle))
        .map(|(_, kind)| *kind)
        .unwrap_or_else(|| panic!("unmapped Docker error {msg:?}: extend docker_error_kind"))
}

fn our_error_kind(e: &ReferenceError) -> &'static str {
    match e {
        ReferenceError::NameContainsUppercase { .. } => "uppercase",
        ReferenceError::HexadecimalName { .. } => "hexadecimal",
        ReferenceError::NameEmpty { .. } => "empty",
        ReferenceError::NameTooLong { .. } => "too-long",
        ReferenceError::NameNotCanonical { .. } => "not-canonical",
        ReferenceError::DigestInvalidFormat { .. } => "digest-format",
        ReferenceError::DigestInvalidLength { .. } => "digest-length",
        ReferenceError::DigestUnsupported { .. } => "digest-unsupported",
        ReferenceError::TagInvalidFormat { .. } => "tag-format",
        ReferenceError::InvalidFormat { .. } => "format",
    }
}

fn check(v: &Vector) -> Result<(), String> {
    let got = ImageRef::parse(&v.input);
    match (&got, v.valid) {
        (Ok(r), true) => {
            let ours = (
                Some(r.registry().to_owned()),
                Some(r.repository().to_owned()),
                r.tag().map(str::to_owned),
                r.digest().map(str::to_owned),
                Some(r.to_string()),
                Some(r.familiar_name()),
                Some(r.familiar_string()),
                Some(r.clone().with_default_tag().to_string()),
            );
            let docker = (
                v.registry.clone(),
                v.repository.clone(),
                v.tag.clone(),
                v.digest.clone(),
                v.normalized.clone(),
                v.familiar.clone(),
                v.familiar_string.clone(),
                v.with_default_tag.clone(),
            );
            if ours != docker {
                return Err(format!(
                    "fields differ\n  ours:   {ours:?}\n  docker: {docker:?}"
                ));
            }
            // The normalized form must be a fixed point, and ParseNamed accepts exactly it.
            let normalized = r.to_string();
            let again = ImageRef::parse(&normalized).map_err(|e| format!("reparse: {e}"))?;
            if &again != r {
                return Err(format!("reparse of {normalized:?} gave {again:?}"));
            }
            let strict_ok = ImageRef::parse_named(&v.input).is_ok();
            if strict_ok != (normalized == v.input) {
                return Err(format!("parse_named accepted={strict_ok}"));
            }
            Ok(())
        }
        (Err(e), false) => {
            let msg = v.error.as_deref().unwrap_or_default();
            let (docker, ours) = (docker_error_kind(msg), our_error_kind(e));
            if docker != ours {
                return Err(format!(
                    "error kind: docker {docker} ({msg:?}), ours {ours} ({e})"
                ));
            }
            Ok(())
        }
        (Ok(r), false) => Err(format!("accepted as {r}, Docker says {:?}", v.error)),
        (Err(e), true) => Err(format!(
            "rejected ({e}), Docker accepts as {:?}",
            v.normalized
        )),
    }
}

#[test]
fn matches_docker_on_every_vector() {
    let failures: Vec<String> = vectors()
        .iter()
        .filter_map(|v| check(v).err().map(|why| format!("{:?}: {why}", v.input)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of the vectors disagree with Docker:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn vectors_cover_every_error_kind_docker_can_return() {
    let kinds: std::collections::BTreeSet<&str> = vectors()
        .iter()
        .filter_map(|v| v.error.as_deref())
        .map(docker_error_kind)
        .collect();
    for kind in [
        "format",
        "uppercase",
        "hexadecimal",
        "too-long",
        "digest-format",
        "digest-length",
        "digest-unsupported",
    ] {
        assert!(kinds.contains(kind), "no vector produces {kind}");
    }
}
