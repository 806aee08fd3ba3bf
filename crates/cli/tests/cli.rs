//! End-to-end tests of the `safe-updater` binary: every command run the way a person or a
//! script runs it, asserting on parsed JSON, exit codes (0 success, 1 negative result or
//! invalid input, 2 usage error) and on the messages people read.
//!
//! State commands read a database filled through the `safe_updater_store` library, exactly as
//! the engine will fill it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::audit::AuditEvent;
use safe_updater_store::{
    Approval, DecisionRecord, ObservedTagInput, Store, UpdateOutcome, UpdateStart, Verdict,
};
use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config.yaml")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

mod common;
use common::{Run, bin, exec};

/// Runs with `args` and checks the exit code.
fn expect_code_with(c: Command, args: &[&str], code: i32) -> Run {
    let r = exec(c, args);
    assert_eq!(
        r.code, code,
        "{:?}: exit code {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
        r.args, r.code, r.stdout, r.stderr
    );
    r
}

fn expect_code(args: &[&str], code: i32) -> Run {
    expect_code_with(bin(), args, code)
}

/// Runs with `-o json` appended, checks the exit code and parses stdout.
fn json_code(args: &[&str], code: i32) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    expect_code(&a, code).json()
}

fn json_ok(args: &[&str]) -> Value {
    json_code(args, 0)
}

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("test timestamp {s}: {e}"))
}

fn obj_keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// parse-ref
// ---------------------------------------------------------------------------------------------

#[test]
fn parse_ref_nginx_is_exactly_the_documented_document() {
    let r = expect_code(&["parse-ref", "nginx", "--output", "json"], 0);
    assert_eq!(
        r.stdout.trim_end(),
        r#"{"valid":true,"registry":"docker.io","repository":"library/nginx","tag":"latest","digest":null,"normalized":"docker.io/library/nginx:latest"}"#
    );
    assert_eq!(r.stdout.lines().count(), 1, "one line of JSON");
    assert_eq!(
        r.json(),
        json!({"valid":true,"registry":"docker.io","repository":"library/nginx","tag":"latest","digest":null,"normalized":"docker.io/library/nginx:latest"})
    );
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

/// (input, registry, repository, tag, digest, normalized)
type RefCase = (
    String,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<String>,
    String,
);

#[test]
fn parse_ref_valid_references() {
    let hex_a = "a".repeat(64);
    let hex_b = "0123456789abcdef".repeat(4);
    let digest_a = format!("sha256:{hex_a}");
    let digest_b = format!("sha256:{hex_b}");
    let cases: Vec<RefCase> = vec![
        (
            "localhost:5000/a/b".into(),
            "localhost:5000",
            "a/b",
            Some("latest"),
            None,
            "localhost:5000/a/b:latest".into(),
        ),
        (
            "[::1]:5000/foo:1".into(),
            "[::1]:5000",
            "foo",
            Some("1"),
            None,
            "[::1]:5000/foo:1".into(),
        ),
        (
            format!("ghcr.io/org/app@{digest_a}"),
            "ghcr.io",
            "org/app",
            None,
            Some(digest_a.clone()),
            format!("ghcr.io/org/app@{digest_a}"),
        ),
        (
            format!("ghcr.io/org/app:1.2.3@{digest_b}"),
            "ghcr.io",
            "org/app",
            Some("1.2.3"),
            Some(digest_b.clone()),
            format!("ghcr.io/org/app:1.2.3@{digest_b}"),
        ),
        (
            "nginx:1.27-alpine".into(),
            "docker.io",
            "library/nginx",
            Some("1.27-alpine"),
            None,
            "docker.io/library/nginx:1.27-alpine".into(),
        ),
        (
            "bitnami/postgresql:16".into(),
            "docker.io",
            "bitnami/postgresql",
            Some("16"),
            None,
            "docker.io/bitnami/postgresql:16".into(),
        ),
        (
            "localhost/app".into(),
            "localhost",
            "app",
            Some("latest"),
            None,
            "localhost/app:latest".into(),
        ),
    ];
    for (input, registry, repository, tag, digest, normalized) in cases {
        let r = expect_code(&["parse-ref", &input, "-o", "json"], 0);
        // The exact document, field order included: the documented order is part of the
        // interface.
        let expected = format!(
            r#"{{"valid":true,"registry":{},"repository":{},"tag":{},"digest":{},"normalized":{}}}"#,
            json!(registry),
            json!(repository),
            json!(tag),
            json!(digest),
            json!(normalized)
        );
        assert_eq!(r.stdout.trim_end(), expected, "{input}");
        let v = r.json();
        assert_eq!(v["valid"], json!(true), "{input}");
        assert_eq!(v["tag"], json!(tag), "{input}");
        assert_eq!(v["digest"], json!(digest), "{input}");
    }
}

#[test]
fn parse_ref_invalid_references_exit_1() {
    let upper_hex = format!("nginx@sha256:{}", "A".repeat(64));
    let short = "nginx@sha256:abc".to_owned();
    let not_hex = format!("nginx@sha256:{}", "g".repeat(64));
    for input in [
        "Nginx",
        "a//b",
        short.as_str(),
        not_hex.as_str(),
        upper_hex.as_str(),
        "",
        "nginx:",
        ":tag",
        "nginx:bad tag",
    ] {
        let v = json_code(&["parse-ref", input], 1);
        assert_eq!(obj_keys(&v), ["error", "valid"], "{input:?}: {v}");
        assert_eq!(v["valid"], json!(false), "{input:?}");
        let err = v["error"].as_str().expect("error is a string");
        assert!(!err.is_empty(), "{input:?}");
    }
    let v = json_code(&["parse-ref", "Nginx"], 1);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("lowercase")),
        "{v}"
    );
}

#[test]
fn parse_ref_table_output_is_readable() {
    let r = expect_code(&["parse-ref", "ghcr.io/org/app:1.2"], 0);
    let fields: BTreeMap<&str, &str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    assert_eq!(fields.get("registry"), Some(&"ghcr.io"), "{}", r.stdout);
    assert_eq!(fields.get("repository"), Some(&"org/app"), "{}", r.stdout);
    assert_eq!(fields.get("tag"), Some(&"1.2"), "{}", r.stdout);
    assert_eq!(fields.get("digest"), Some(&"-"), "{}", r.stdout);
    assert_eq!(
        fields.get("normalized"),
        Some(&"ghcr.io/org/app:1.2"),
        "{}",
        r.stdout
    );
    let r = expect_code(&["parse-ref", "nginx"], 0);
    assert!(
        r.stdout.contains("familiar:   nginx:latest"),
        "{}",
        r.stdout
    );

    let r = expect_code(&["parse-ref", "Nginx"], 1);
    assert!(r.stdout.is_empty(), "nothing on stdout: {}", r.stdout);
    assert!(
        r.stderr.contains("invalid reference") && r.stderr.contains("Nginx"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------------------------

/// (a, b, scheme, ordering, change)
type CompareCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<i64>,
    &'static str,
);

#[test]
fn compare_reports_ordering_and_change() {
    let ls = r"^(?P<version>\d+\.\d+)-ls(?P<build>\d+)$";
    let cases: &[CompareCase] = &[
        ("1.2.3", "1.2.4", None, Some(-1), "patch"),
        ("1.2.3", "1.3.0", None, Some(-1), "minor"),
        ("1.2.3", "2.0.0", None, Some(-1), "major"),
        ("1.2.3", "2.0.0-rc.1", None, Some(-1), "prerelease"),
        ("1.3.0-rc.1", "1.3.0", None, Some(-1), "patch"),
        ("1.2.3-r1", "1.2.3-r2", None, Some(-1), "build"),
        ("1.2.3", "1.2.3", None, Some(0), "none"),
        ("1.2.4", "1.2.3", None, Some(1), "downgrade"),
        ("2.0.0", "1.9.9", None, Some(1), "downgrade"),
        ("1.27-alpine", "1.28-alpine", None, Some(-1), "minor"),
        ("1.27-alpine", "1.28", None, Some(-1), "incomparable"),
        ("16-bookworm", "17-alpine", None, Some(-1), "incomparable"),
        ("v1.2.3", "1.2.4", None, Some(-1), "incomparable"),
        ("latest", "stable", None, None, "incomparable"),
        ("latest", "1.2.3", None, None, "incomparable"),
        ("latest", "latest", None, Some(0), "none"),
        // Strict SemVer reads a hyphen suffix as a prerelease, and build metadata as build.
        ("1.0.0-alpine", "1.0.0", Some("semver"), Some(-1), "patch"),
        ("1.0.0+a", "1.0.0+b", Some("semver"), Some(0), "build"),
        ("1.2.3", "1.2.4", Some("semver"), Some(-1), "patch"),
        ("1.2-ls10", "1.2-ls11", Some(ls), Some(-1), "build"),
        ("1.2-ls10", "1.3-ls1", Some(ls), Some(-1), "minor"),
        ("1.3-ls1", "1.2-ls10", Some(ls), Some(1), "downgrade"),
        ("1.2-ls10", "1.2", Some(ls), None, "incomparable"),
    ];
    for &(a, b, scheme, ordering, change) in cases {
        let mut args = vec!["compare", a, b, "--output", "json"];
        if let Some(s) = scheme {
            args.extend(["--scheme", s]);
        }
        let v = expect_code(&args, 0).json();
        let what = format!("{a} -> {b} ({scheme:?}): {v}");
        assert_eq!(v["a"], json!(a), "{what}");
        assert_eq!(v["b"], json!(b), "{what}");
        assert_eq!(v["ordering"], json!(ordering), "{what}");
        assert_eq!(v["change"], json!(change), "{what}");
        // `note` explains an incomparable answer and is absent otherwise.
        if change == "incomparable" {
            assert_eq!(
                obj_keys(&v),
                ["a", "b", "change", "note", "ordering"],
                "{what}"
            );
            assert!(v["note"].as_str().is_some_and(|n| !n.is_empty()), "{what}");
        } else if a != "latest" {
            assert_eq!(obj_keys(&v), ["a", "b", "change", "ordering"], "{what}");
        }
    }
}

#[test]
fn compare_notes_say_why_tags_are_incomparable() {
    let v = json_ok(&["compare", "1.27-alpine", "1.28"]);
    let note = v["note"].as_str().expect("note");
    assert!(
        note.contains("X.Y-alpine") && note.contains("never moves between families"),
        "{note}"
    );
    let v = json_ok(&["compare", "latest", "stable"]);
    let note = v["note"].as_str().expect("note");
    assert!(note.contains("'latest' is a moving name"), "{note}");
}

#[test]
fn compare_note_for_a_tag_outside_a_custom_pattern_is_a_sentence() {
    let v = json_ok(&[
        "compare",
        "1.2-ls10",
        "1.2",
        "--scheme",
        r"^(?P<version>\d+\.\d+)-ls(?P<build>\d+)$",
    ]);
    let note = v["note"].as_str().expect("note");
    assert!(note.contains("'1.2'"), "{note}");
    // The note is "'<tag>' is <reason>"; the reason must read on after "is".
    assert!(!note.contains(" is does "), "ungrammatical note: {note}");
}

#[test]
fn compare_rejects_a_bad_scheme() {
    let v = json_code(&["compare", "1.0", "1.1", "--scheme", "("], 1);
    assert_eq!(obj_keys(&v), ["error"], "{v}");
    let err = v["error"].as_str().expect("error");
    assert!(
        err.starts_with("--scheme:") && err.contains("invalid regular expression"),
        "{err}"
    );
    // A valid regex without the `version` group is no scheme either.
    let v = json_code(&["compare", "1", "2", "--scheme", r"^\d+$"], 1);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("named group `version`")),
        "{v}"
    );
    // Table output: a sentence on stderr, nothing on stdout.
    let r = expect_code(&["compare", "1.0", "1.1", "--scheme", "("], 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.starts_with("error: --scheme:"), "{}", r.stderr);
}

#[test]
fn compare_table_output() {
    let r = expect_code(&["compare", "1.2.3", "1.3.0"], 0);
    assert_eq!(r.stdout.trim_end(), "1.2.3 < 1.3.0: minor");
    let r = expect_code(&["compare", "2.0.0", "1.0.0"], 0);
    assert_eq!(r.stdout.trim_end(), "2.0.0 > 1.0.0: downgrade");
    let r = expect_code(&["compare", "latest", "stable"], 0);
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("latest ? stable: incomparable"));
    assert!(lines.next().is_some_and(|l| l.contains("moving name")));
}

#[test]
fn compare_usage_errors_exit_2() {
    expect_code(&["compare", "1.0"], 2);
    expect_code(&["compare", "1.0", "1.1", "1.2"], 2);
}

// ---------------------------------------------------------------------------------------------
// satisfies
// ---------------------------------------------------------------------------------------------

#[test]
fn satisfies_follows_helm_constraints() {
    // (constraint, version, satisfies), from Helm's / Masterminds semver's documentation.
    let cases: &[(&str, &str, bool)] = &[
        // Caret: same major (minor for 0.x, patch for 0.0.x).
        ("^1.2.3", "1.2.3", true),
        ("^1.2.3", "1.9.9", true),
        ("^1.2.3", "2.0.0", false),
        ("^1.2.3", "1.2.2", false),
        ("^1.2", "1.2.0", true),
        ("^1.2", "1.3", true),
        ("^0.2.3", "0.2.9", true),
        ("^0.2.3", "0.3.0", false),
        ("^0.0.3", "0.0.3", true),
        ("^0.0.3", "0.0.4", false),
        ("^0", "0.9.0", true),
        ("^0", "1.0.0", false),
        // Tilde: same minor.
        ("~1.2", "1.2.9", true),
        ("~1.2", "1.3.0", false),
        ("~1.2.3", "1.2.9", true),
        ("~1.2.3", "1.2.2", false),
        ("~1.2.3", "1.3.0", false),
        ("~1", "1.9.0", true),
        ("~1", "2.0.0", false),
        // Wildcards.
        ("1.2.x", "1.2.7", true),
        ("1.2.x", "1.3.0", false),
        ("1.x", "1.9.9", true),
        ("1.x", "2.0.0", false),
        ("*", "5.6.7", true),
        ("*", "0.0.0", true),
        ("*", "1.0.0-rc.1", false),
        // AND, with a space or a comma.
        (">=1.2 <2", "1.2.0", true),
        (">=1.2 <2", "1.9.9", true),
        (">=1.2 <2", "2.0.0", false),
        (">=1.2 <2", "1.1.9", false),
        (">=1.2, <2", "1.5.0", true),
        (">=1.2, <2", "2.0.0", false),
        // Hyphen ranges are inclusive; a partial upper bound covers the whole line.
        ("1.2 - 1.4", "1.2.0", true),
        ("1.2 - 1.4", "1.4.9", true),
        ("1.2 - 1.4", "1.5.0", false),
        ("1.2 - 1.4", "1.1.9", false),
        ("1.2.3 - 1.4.5", "1.4.5", true),
        ("1.2.3 - 1.4.5", "1.4.6", false),
        // OR.
        ("^1.2 || ^3", "1.5.0", true),
        ("^1.2 || ^3", "3.1.0", true),
        ("^1.2 || ^3", "2.0.0", false),
        ("<1.0.0 || >=2.0.0", "1.5.0", false),
        ("<1.0.0 || >=2.0.0", "0.9.0", true),
        // Exact and not-equal.
        ("1.2.3", "1.2.3", true),
        ("=1.2.3", "1.2.4", false),
        ("!=1.2.3", "1.2.4", true),
        ("!=1.2.3", "1.2.3", false),
        // Prereleases only satisfy a constraint that mentions one.
        (">=1.2.3", "1.2.4-beta.1", false),
        (">=1.2.3-0", "1.2.4-beta.1", true),
        (">=1.2.3-beta.1", "1.2.3-beta.2", true),
        (">=1.2.3-beta.2", "1.2.3-beta.1", false),
        ("^1.2.3-beta.2", "1.2.3-beta.4", true),
        ("~1.2.3-beta.2", "1.2.3-beta.4", true),
        ("^1.2", "1.5.0-rc.1", false),
        // Helm accepts a `v` prefix and short versions.
        ("^1.2.3", "v1.2.5", true),
        ("^1.2", "1.2", true),
        (">=2", "v2", true),
    ];
    for &(c, version, expected) in cases {
        let v = expect_code(&["satisfies", c, version, "--output", "json"], 0).json();
        assert_eq!(
            v,
            json!({ "satisfies": expected }),
            "satisfies {c:?} {version:?}"
        );
    }
}

#[test]
fn satisfies_invalid_input_exits_1_with_an_error() {
    for (c, version, mentions) in [
        (">>1", "1.0.0", ">>1"),
        ("abc", "1.0.0", "abc"),
        ("", "1.0.0", "constraint"),
        ("^1.2.3", "notaversion", "notaversion"),
        ("^1.2.3", "1.2.3.4.5", "1.2.3.4.5"),
    ] {
        let v = json_code(&["satisfies", c, version], 1);
        assert_eq!(obj_keys(&v), ["error"], "{c:?} {version:?}: {v}");
        let err = v["error"].as_str().expect("error");
        assert!(err.contains(mentions), "{c:?} {version:?}: {err}");
    }
}

#[test]
fn satisfies_table_output_and_usage() {
    let r = expect_code(&["satisfies", "^1.2", "1.3.0"], 0);
    assert_eq!(r.stdout.trim_end(), "1.3.0 satisfies ^1.2");
    let r = expect_code(&["satisfies", "^1.2", "2.0.0"], 0);
    assert_eq!(r.stdout.trim_end(), "2.0.0 does not satisfy ^1.2");
    let r = expect_code(&["satisfies", ">>1", "1.0.0"], 1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.starts_with("error: version constraint"),
        "{}",
        r.stderr
    );
    expect_code(&["satisfies", "^1.2"], 2);
}

// ---------------------------------------------------------------------------------------------
// evaluate
// ---------------------------------------------------------------------------------------------

/// Runs `evaluate` with `-o json`, expecting success.
fn evaluate(args: &[&str]) -> Value {
    let mut a = vec!["evaluate"];
    a.extend_from_slice(args);
    json_ok(&a)
}

fn candidates(v: &Value) -> &Vec<Value> {
    v["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("candidates is an array: {v}"))
}

/// (tag, change, decision) of every candidate, in order.
fn summary(v: &Value) -> Vec<(String, String, String)> {
    candidates(v)
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("tag"), s("change"), s("decision"))
        })
        .collect()
}

fn triple(tag: &str, change: &str, decision: &str) -> (String, String, String) {
    (tag.into(), change.into(), decision.into())
}

fn candidate<'a>(v: &'a Value, tag: &str) -> &'a Value {
    candidates(v)
        .iter()
        .find(|c| c["tag"] == json!(tag))
        .unwrap_or_else(|| panic!("no candidate {tag} in {v}"))
}

const NOW: &str = "2026-11-22T12:00:00Z";

#[test]
fn evaluate_defaults_have_the_documented_shape() {
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.2.5,1.3.0,2.0.0,2.1.0-rc.1,latest,1.2.2",
        "--now",
        NOW,
    ]);
    assert_eq!(
        obj_keys(&v),
        ["act_on", "candidates", "current", "family", "on_failure"],
        "{v}"
    );
    assert_eq!(v["current"], json!("1.2.3"));
    assert_eq!(v["family"], json!("X.Y.Z"));
    assert_eq!(
        summary(&v),
        [
            triple("1.2.5", "patch", "approve"),
            triple("1.3.0", "minor", "pending_review"),
            triple("2.0.0", "major", "manual_approval"),
            triple("2.1.0-rc.1", "prerelease", "skip"),
        ]
    );
    for c in candidates(&v) {
        assert_eq!(
            obj_keys(c),
            ["change", "decision", "gate", "reason", "rule", "tag"],
            "{c}"
        );
    }
    let gates: Vec<&Value> = candidates(&v).iter().map(|c| &c["gate"]).collect();
    assert_eq!(
        gates,
        [
            &json!("auto"),
            &json!("review"),
            &json!("manual"),
            &json!("skip")
        ]
    );
    let rules: Vec<&Value> = candidates(&v).iter().map(|c| &c["rule"]).collect();
    assert_eq!(
        rules,
        [
            &json!("default.patch"),
            &json!("default.minor"),
            &json!("default.major"),
            &json!("default.prerelease")
        ]
    );
    let reason = candidate(&v, "1.2.5")["reason"].as_str().expect("reason");
    assert!(
        reason.contains("1.2.3 → 1.2.5 is a patch update") && reason.ends_with("it may proceed"),
        "{reason}"
    );
    assert_eq!(v["act_on"], json!("1.2.5"));
}

#[test]
fn evaluate_table_is_the_readme_quick_start() {
    let r = expect_code(
        &[
            "evaluate",
            "--current",
            "1.2.3",
            "--available",
            "1.2.4,1.3.0,2.0.0,2.1.0-rc.1,latest",
        ],
        0,
    );
    let expected = "\
current 1.2.3 (family X.Y.Z)
TAG         CHANGE      GATE    DECISION         RULE                REASON
1.2.4       patch       auto    approve          default.patch       1.2.3 → 1.2.4 is a patch update; the gate for patch is auto (default.patch): it may proceed
1.3.0       minor       review  pending_review   default.minor       1.2.3 → 1.3.0 is a minor update; the gate for minor is review (default.minor): it waits for an approval
2.0.0       major       manual  manual_approval  default.major       1.2.3 → 2.0.0 is a major update; the gate for major is manual (default.major): it never runs by itself; an operator must start it
2.1.0-rc.1  prerelease  skip    skip             default.prerelease  1.2.3 → 2.1.0-rc.1 is a prerelease update; the gate for prerelease is skip (default.prerelease): it is ignored
act on: 1.2.4
on failure: roll back (default.on_failure)
";
    assert_eq!(r.stdout, expected);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md is readable");
    assert!(
        readme.contains(expected),
        "the README's quick start must show what the command prints"
    );
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn output_format_from_the_environment_and_logs_on_stderr() {
    let mut c = bin();
    c.env("SAFE_UPDATER_OUTPUT", "json");
    let v = expect_code_with(c, &["satisfies", "^1.2", "1.3.0"], 0).json();
    assert_eq!(v, json!({"satisfies": true}));
    // Verbose logs, in either format, never mix into the JSON on stdout.
    for format in ["text", "json"] {
        let r = expect_code(
            &[
                "evaluate",
                "--current",
                "1.2.3",
                "--available",
                "1.2.4",
                "--now",
                NOW,
                "--log-level",
                "trace",
                "--log-format",
                format,
                "-o",
                "json",
            ],
            0,
        );
        assert_eq!(r.json()["act_on"], json!("1.2.4"), "{format}");
    }
}

#[test]
fn evaluate_available_may_be_repeated_and_comma_separated() {
    let a = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.3.0",
        "--now",
        NOW,
    ]);
    let b = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4",
        "--available",
        "1.3.0",
        "--now",
        NOW,
    ]);
    assert_eq!(a, b);
    assert_eq!(
        summary(&a),
        [
            triple("1.2.4", "patch", "approve"),
            triple("1.3.0", "minor", "pending_review")
        ]
    );
    // Nothing available: no candidate, nothing to act on.
    let v = evaluate(&["--current", "1.2.3", "--now", NOW]);
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(v["act_on"], Value::Null);
}

#[test]
fn evaluate_never_leaves_the_tag_family() {
    let v = evaluate(&[
        "--current",
        "1.27-alpine",
        "--available",
        "1.28,1.27.3-alpine,1.28-alpine,1.28-bookworm",
        "--now",
        NOW,
    ]);
    assert_eq!(v["family"], json!("X.Y-alpine"));
    assert_eq!(
        summary(&v),
        [triple("1.28-alpine", "minor", "pending_review")]
    );
    let v = evaluate(&[
        "--current",
        "16-bookworm",
        "--available",
        "17-alpine,17",
        "--now",
        NOW,
    ]);
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(v["act_on"], Value::Null);
    // Revisions are builds, gated as patch.
    let v = evaluate(&[
        "--current",
        "1.2.3-r1",
        "--available",
        "1.2.3-r2",
        "--now",
        NOW,
    ]);
    assert_eq!(summary(&v), [triple("1.2.3-r2", "build", "approve")]);
    assert_eq!(candidate(&v, "1.2.3-r2")["gate"], json!("auto"));
    assert_eq!(v["act_on"], json!("1.2.3-r2"));
}

fn example(args: &[&str]) -> Value {
    let config = example_config();
    let config = config.to_str().expect("UTF-8 path");
    let mut a = vec!["--config", config];
    a.extend_from_slice(args);
    evaluate(&a)
}

// 2026-11-21 is a Saturday. Europe/Berlin is UTC+1 in November, so the production window
// (sat, sun 02:00-06:00 Berlin) is 01:00-05:00 UTC.
const SAT_IN_WINDOW: &str = "2026-11-21T02:00:00Z";
const FRI_NOON: &str = "2026-11-20T12:00:00Z";

#[test]
fn evaluate_example_config_pins_and_gates_the_database() {
    let postgres = [
        "--kind",
        "StatefulSet",
        "--name",
        "postgres-0",
        "--namespace",
        "production",
        "--current",
        "16.4.1",
        "--available",
        "16.4.2,16.4.3,16.4.4-debug,16.5.0,17.0.0,17.0.0-rc.1",
    ];
    let first_seen = [
        "--first-seen",
        "16.4.2=2026-11-01T00:00:00Z",
        "--first-seen",
        "16.4.3=2026-11-01T00:00:00Z",
        "--first-seen",
        "16.5.0=2026-11-01T00:00:00Z",
        "--first-seen",
        "17.0.0=2026-11-01T00:00:00Z",
    ];
    let mut args: Vec<&str> = postgres.to_vec();
    args.extend(first_seen);
    args.extend(["--now", SAT_IN_WINDOW]);
    let v = example(&args);
    // The constraint ~16.4 keeps 16.5.0 and 17.x out; `-debug$` is excluded globally; the
    // resource's own gate makes patches wait for a review.
    assert_eq!(summary(&v), [triple("16.4.3", "patch", "pending_review")]);
    let c = candidate(&v, "16.4.3");
    assert_eq!(c["gate"], json!("review"));
    assert_eq!(c["rule"], json!("resource.postgres.patch"));
    assert_eq!(v["act_on"], Value::Null);

    // Approved, inside the production window: it may go.
    let mut approved = args.clone();
    approved.extend(["--approved", "16.4.3"]);
    let v = example(&approved);
    let c = candidate(&v, "16.4.3");
    assert_eq!(c["decision"], json!("approve"), "{v}");
    assert_eq!(c["rule"], json!("approval"));
    assert!(
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cli approved it")),
        "{c}"
    );
    assert_eq!(v["act_on"], json!("16.4.3"));

    // The same approval on a Friday: the namespace window holds it back.
    let mut friday: Vec<&str> = postgres.to_vec();
    friday.extend(first_seen);
    friday.extend(["--approved", "16.4.3", "--now", FRI_NOON]);
    let v = example(&friday);
    let c = candidate(&v, "16.4.3");
    assert_eq!(c["decision"], json!("defer"), "{v}");
    assert_eq!(c["rule"], json!("namespace.production.windows"));
    assert_eq!(c["not_before"], json!("2026-11-21T01:00:00Z"));
    assert_eq!(v["act_on"], Value::Null);

    // The resource rule matches by kind: a Deployment of the same name is not pinned.
    let v = example(&[
        "--kind",
        "Deployment",
        "--name",
        "postgres-0",
        "--namespace",
        "staging",
        "--current",
        "16.4.1",
        "--available",
        "16.4.3,16.5.0",
        "--now",
        SAT_IN_WINDOW,
    ]);
    assert_eq!(
        summary(&v),
        [
            triple("16.4.3", "patch", "approve"),
            triple("16.5.0", "minor", "approve")
        ]
    );
    assert_eq!(
        candidate(&v, "16.5.0")["rule"],
        json!("namespace.staging.minor")
    );
    assert_eq!(v["act_on"], json!("16.5.0"));
}

#[test]
fn evaluate_namespace_windows_defer_outside_and_approve_inside() {
    let base = [
        "--kind",
        "Deployment",
        "--name",
        "web",
        "--namespace",
        "production",
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.3.0",
        "--first-seen",
        "1.2.4=2026-11-01T00:00:00Z",
        "--first-seen",
        "1.3.0=2026-11-01T00:00:00Z",
    ];
    let at = |now: &str| {
        let mut a = base.to_vec();
        a.extend(["--now", now]);
        example(&a)
    };

    let v = at(SAT_IN_WINDOW);
    assert_eq!(
        summary(&v),
        [
            triple("1.2.4", "patch", "approve"),
            triple("1.3.0", "minor", "manual_approval")
        ]
    );
    assert_eq!(candidate(&v, "1.2.4")["rule"], json!("global.patch"));
    assert_eq!(
        candidate(&v, "1.3.0")["rule"],
        json!("namespace.production.minor")
    );
    assert!(candidate(&v, "1.2.4").get("not_before").is_none());
    assert_eq!(v["act_on"], json!("1.2.4"));

    // Friday noon: outside; the window opens Saturday 02:00 Berlin = 01:00 UTC.
    let v = at(FRI_NOON);
    let c = candidate(&v, "1.2.4");
    assert_eq!(c["decision"], json!("defer"));
    assert_eq!(c["gate"], json!("auto"));
    assert_eq!(c["rule"], json!("namespace.production.windows"));
    assert_eq!(c["not_before"], json!("2026-11-21T01:00:00Z"));
    assert!(
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("outside every update window")),
        "{c}"
    );
    assert_eq!(v["act_on"], Value::Null);

    // The window's first minute is inside, its end is not: 06:00 Berlin Saturday is out and
    // the next opening is Sunday 02:00 Berlin.
    let v = at("2026-11-21T01:00:00Z");
    assert_eq!(candidate(&v, "1.2.4")["decision"], json!("approve"));
    let v = at("2026-11-21T05:00:00Z");
    let c = candidate(&v, "1.2.4");
    assert_eq!(c["decision"], json!("defer"));
    assert_eq!(c["not_before"], json!("2026-11-22T01:00:00Z"));

    // A namespace without windows is never deferred by them.
    let v = example(&[
        "--namespace",
        "dev",
        "--current",
        "1.2.3",
        "--available",
        "1.2.4",
        "--first-seen",
        "1.2.4=2026-11-01T00:00:00Z",
        "--now",
        FRI_NOON,
    ]);
    assert_eq!(summary(&v), [triple("1.2.4", "patch", "approve")]);
}

#[test]
fn evaluate_cooldown_defers_fresh_releases() {
    // The example's global min_age is 24h. 1.2.5 was first seen 3h before now.
    let v = example(&[
        "--namespace",
        "dev",
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.2.5",
        "--first-seen",
        "1.2.4=2026-11-01T00:00:00Z",
        "--first-seen",
        "1.2.5=2026-11-22T09:00:00Z",
        "--now",
        NOW,
    ]);
    assert_eq!(
        summary(&v),
        [
            triple("1.2.4", "patch", "approve"),
            triple("1.2.5", "patch", "defer")
        ]
    );
    let fresh = candidate(&v, "1.2.5");
    assert_eq!(fresh["rule"], json!("global.min_age"));
    assert_eq!(fresh["not_before"], json!("2026-11-23T09:00:00Z"));
    assert!(
        fresh["reason"]
            .as_str()
            .is_some_and(|r| r.contains("first seen 3h ago and the policy wants 24h")),
        "{fresh}"
    );
    // The mature one goes meanwhile.
    assert_eq!(v["act_on"], json!("1.2.4"));

    // 24 hours later the fresh one is mature too.
    let v = example(&[
        "--namespace",
        "dev",
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.2.5",
        "--first-seen",
        "1.2.4=2026-11-01T00:00:00Z",
        "--first-seen",
        "1.2.5=2026-11-22T09:00:00Z",
        "--now",
        "2026-11-23T09:00:00Z",
    ]);
    assert_eq!(summary(&v), [triple("1.2.5", "patch", "approve")]);
    assert_eq!(v["act_on"], json!("1.2.5"));

    // A tag without --first-seen counts as seen just now: it waits the whole cooldown.
    let v = example(&[
        "--namespace",
        "dev",
        "--current",
        "1.2.3",
        "--available",
        "1.2.5",
        "--now",
        NOW,
    ]);
    let c = candidate(&v, "1.2.5");
    assert_eq!(c["decision"], json!("defer"));
    assert_eq!(c["not_before"], json!("2026-11-23T12:00:00Z"));
    assert_eq!(v["act_on"], Value::Null);

    // staging sets min_age 0s: no cooldown there.
    let v = example(&[
        "--namespace",
        "staging",
        "--current",
        "1.2.3",
        "--available",
        "1.2.5",
        "--now",
        NOW,
    ]);
    assert_eq!(summary(&v), [triple("1.2.5", "patch", "approve")]);
}

#[test]
fn evaluate_labels_and_annotations_override_the_config() {
    let base = [
        "--kind",
        "Deployment",
        "--name",
        "web",
        "--namespace",
        "production",
        "--current",
        "1.2.3",
        "--available",
        "1.3.0",
        "--first-seen",
        "1.3.0=2026-11-01T00:00:00Z",
        "--now",
        SAT_IN_WINDOW,
    ];
    let v = example(&base);
    assert_eq!(candidate(&v, "1.3.0")["decision"], json!("manual_approval"));

    let mut labelled = base.to_vec();
    labelled.extend([
        "--label",
        "safe-updater.io/minor=auto",
        "--label",
        "app=web",
    ]);
    let v = example(&labelled);
    let c = candidate(&v, "1.3.0");
    assert_eq!(c["gate"], json!("auto"));
    assert_eq!(c["decision"], json!("approve"));
    assert_eq!(c["rule"], json!("label:safe-updater.io/minor"));
    assert_eq!(v["act_on"], json!("1.3.0"));

    // Annotations win over labels.
    let mut annotated = labelled.clone();
    annotated.extend(["--annotation", "safe-updater.io/minor=skip"]);
    let v = example(&annotated);
    let c = candidate(&v, "1.3.0");
    assert_eq!(c["decision"], json!("skip"));
    assert_eq!(c["rule"], json!("annotation:safe-updater.io/minor"));
    assert_eq!(v["act_on"], Value::Null);

    // A label can also turn a resource off.
    let mut disabled = base.to_vec();
    disabled.extend(["--label", "safe-updater.io/enabled=false"]);
    let v = example(&disabled);
    assert!(candidates(&v).is_empty(), "{v}");
    assert!(
        v["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("label:safe-updater.io/enabled")),
        "{v}"
    );
}

#[test]
fn evaluate_a_bad_label_stops_everything() {
    for label in [
        "safe-updater.io/major=sometimes",
        "safe-updater.io/min-age=soon",
        "safe-updater.io/colour=blue",
    ] {
        let v = evaluate(&[
            "--current",
            "1.2.3",
            "--available",
            "1.2.4",
            "--label",
            label,
            "--now",
            NOW,
        ]);
        assert!(candidates(&v).is_empty(), "{label}: {v}");
        assert_eq!(v["act_on"], Value::Null, "{label}");
        let notes: Vec<&str> = v["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let key = label.split('=').next().unwrap_or_default();
        assert!(notes.iter().any(|n| n.contains(key)), "{label}: {notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("nothing proceeds")),
            "{label}: {notes:?}"
        );
    }
    // Labels outside our prefix are no concern of ours.
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4",
        "--label",
        "app.kubernetes.io/name=web",
        "--now",
        NOW,
    ]);
    assert_eq!(v["act_on"], json!("1.2.4"));
}

#[test]
fn evaluate_a_moving_tag_is_never_replaced_by_a_version() {
    let v = evaluate(&[
        "--current",
        "latest",
        "--available",
        "1.0.0,2.0.0,latest",
        "--now",
        NOW,
    ]);
    assert_eq!(v["family"], Value::Null);
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(v["act_on"], Value::Null);
    assert!(
        v["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("'latest' is a moving name")),
        "{v}"
    );
}

#[test]
fn evaluate_failed_versions_are_not_proposed_again() {
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.2.5",
        "--failed",
        "1.2.5",
        "--now",
        NOW,
    ]);
    assert_eq!(summary(&v), [triple("1.2.4", "patch", "approve")]);
    assert_eq!(v["act_on"], json!("1.2.4"));
    assert!(
        v["notes"][0]
            .as_str()
            .is_some_and(|n| n.starts_with("1.2.5 failed before")),
        "{v}"
    );
    // A newer version is proposed.
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.5,1.2.6",
        "--failed",
        "1.2.5",
        "--now",
        NOW,
    ]);
    assert_eq!(v["act_on"], json!("1.2.6"));
    // Every failure counts.
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.5,1.2.6",
        "--failed",
        "1.2.5",
        "--failed",
        "1.2.6",
        "--now",
        NOW,
    ]);
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(v["act_on"], Value::Null);
}

#[test]
fn evaluate_approvals_and_rejections() {
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.3.0,2.0.0",
        "--approved",
        "1.3.0",
        "--now",
        NOW,
    ]);
    let c = candidate(&v, "1.3.0");
    assert_eq!(c["decision"], json!("approve"));
    assert_eq!(c["gate"], json!("review"));
    assert_eq!(c["rule"], json!("approval"));
    assert_eq!(candidate(&v, "2.0.0")["decision"], json!("manual_approval"));
    assert_eq!(v["act_on"], json!("1.3.0"));

    // An approved major is an operator starting it.
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.3.0,2.0.0",
        "--approved",
        "1.3.0",
        "--approved",
        "2.0.0",
        "--now",
        NOW,
    ]);
    assert_eq!(candidate(&v, "2.0.0")["decision"], json!("approve"));
    assert_eq!(v["act_on"], json!("2.0.0"));

    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.3.0",
        "--rejected",
        "1.2.4",
        "--rejected",
        "1.3.0",
        "--now",
        NOW,
    ]);
    for tag in ["1.2.4", "1.3.0"] {
        let c = candidate(&v, tag);
        assert_eq!(c["decision"], json!("reject"), "{c}");
        assert_eq!(c["rule"], json!("approval"), "{c}");
        assert!(
            c["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cli rejected it")),
            "{c}"
        );
    }
    assert_eq!(v["act_on"], Value::Null);

    // A skipped class stays skipped, approval or not.
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.3.0-rc.1",
        "--approved",
        "1.3.0-rc.1",
        "--now",
        NOW,
    ]);
    assert_eq!(summary(&v), [triple("1.3.0-rc.1", "prerelease", "skip")]);
    assert_eq!(v["act_on"], Value::Null);
}

#[test]
fn evaluate_digest_drift_behind_the_same_tag() {
    let v = evaluate(&[
        "--current",
        "latest",
        "--running-digest",
        "sha256:aa",
        "--latest-digest",
        "sha256:bb",
        "--now",
        NOW,
    ]);
    assert_eq!(summary(&v), [triple("latest", "digest", "pending_review")]);
    let c = candidate(&v, "latest");
    assert_eq!(c["digest"], json!("sha256:bb"));
    assert_eq!(c["gate"], json!("review"));
    assert_eq!(c["rule"], json!("default.digest"));
    assert_eq!(v["act_on"], Value::Null);

    let v = evaluate(&[
        "--current",
        "latest",
        "--running-digest",
        "sha256:aa",
        "--latest-digest",
        "sha256:bb",
        "--label",
        "safe-updater.io/digest=auto",
        "--now",
        NOW,
    ]);
    assert_eq!(candidate(&v, "latest")["decision"], json!("approve"));
    assert_eq!(v["act_on"], json!("latest"));

    // The same digest: nothing new.
    let v = evaluate(&[
        "--current",
        "latest",
        "--running-digest",
        "sha256:aa",
        "--latest-digest",
        "sha256:aa",
        "--now",
        NOW,
    ]);
    assert!(candidates(&v).is_empty(), "{v}");

    // A digest that failed before is not proposed again.
    let v = evaluate(&[
        "--current",
        "latest",
        "--running-digest",
        "sha256:aa",
        "--latest-digest",
        "sha256:bb",
        "--failed",
        "sha256:bb",
        "--now",
        NOW,
    ]);
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(v["act_on"], Value::Null);

    // On a version tag, a newer version supersedes a refreshed build of the current one.
    let v = evaluate(&[
        "--current",
        "1.2.3",
        "--available",
        "1.2.4",
        "--running-digest",
        "sha256:aa",
        "--latest-digest",
        "sha256:bb",
        "--label",
        "safe-updater.io/digest=auto",
        "--now",
        NOW,
    ]);
    assert_eq!(
        summary(&v),
        [
            triple("1.2.3", "digest", "approve"),
            triple("1.2.4", "patch", "approve")
        ]
    );
    assert_eq!(v["act_on"], json!("1.2.4"));

    // One digest without the other is a usage error.
    expect_code(
        &[
            "evaluate",
            "--current",
            "latest",
            "--running-digest",
            "sha256:aa",
        ],
        2,
    );
    expect_code(
        &[
            "evaluate",
            "--current",
            "latest",
            "--latest-digest",
            "sha256:aa",
        ],
        2,
    );
}

#[test]
fn evaluate_custom_versioning_from_the_config() {
    let v = example(&[
        "--kind",
        "container",
        "--name",
        "plex",
        "--current",
        "1.40.1-ls10",
        "--available",
        "1.40.1-ls11,1.40.2-ls1,1.41.0-ls3,1.40.1",
        "--first-seen",
        "1.40.1-ls11=2026-11-01T00:00:00Z",
        "--first-seen",
        "1.40.2-ls1=2026-11-01T00:00:00Z",
        "--first-seen",
        "1.41.0-ls3=2026-11-01T00:00:00Z",
        "--now",
        NOW,
    ]);
    assert_eq!(
        summary(&v),
        [
            triple("1.40.1-ls11", "build", "approve"),
            triple("1.40.2-ls1", "patch", "approve"),
            triple("1.41.0-ls3", "minor", "pending_review"),
        ]
    );
    assert_eq!(v["act_on"], json!("1.40.2-ls1"));
}

#[test]
fn evaluate_reads_environment_overrides() {
    let mut c = bin();
    c.env("SAFE_UPDATER_POLICY__GATES__MINOR", "auto");
    let v = expect_code_with(
        c,
        &[
            "evaluate",
            "--current",
            "1.2.3",
            "--available",
            "1.3.0",
            "--now",
            NOW,
            "-o",
            "json",
        ],
        0,
    )
    .json();
    let c = candidate(&v, "1.3.0");
    assert_eq!(c["decision"], json!("approve"));
    assert_eq!(c["rule"], json!("global.minor"));

    // A broken override is an error naming the variable.
    let mut c = bin();
    c.env("SAFE_UPDATER_POLICY__GATES__MINOR", "sometimes");
    let v = expect_code_with(
        c,
        &[
            "evaluate",
            "--current",
            "1.2.3",
            "--available",
            "1.3.0",
            "-o",
            "json",
        ],
        1,
    )
    .json();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("SAFE_UPDATER_POLICY__GATES__MINOR")),
        "{v}"
    );
}

#[test]
fn evaluate_is_pure() {
    let config = example_config();
    let args = [
        "evaluate",
        "--config",
        config.to_str().expect("UTF-8 path"),
        "--kind",
        "Deployment",
        "--namespace",
        "production",
        "--name",
        "web",
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.2.5,1.3.0,2.0.0",
        "--first-seen",
        "1.2.4=2026-11-01T00:00:00Z",
        "--now",
        FRI_NOON,
        "-o",
        "json",
    ];
    let first = expect_code(&args, 0);
    let second = expect_code(&args, 0);
    assert_eq!(first.stdout, second.stdout);
    assert!(!candidates(&first.json()).is_empty());
    // The table form too.
    let table = &args[..args.len() - 2];
    assert_eq!(expect_code(table, 0).stdout, expect_code(table, 0).stdout);
}

#[test]
fn evaluate_table_output() {
    let r = expect_code(
        &[
            "evaluate",
            "--current",
            "1.2.3",
            "--available",
            "1.2.4,1.3.0",
            "--failed",
            "1.2.9",
            "--now",
            NOW,
        ],
        0,
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "current 1.2.3 (family X.Y.Z)", "{}", r.stdout);
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["TAG", "CHANGE", "GATE", "DECISION", "RULE", "REASON"]
    );
    assert!(lines[2].starts_with("1.2.4") && lines[2].contains("approve"));
    assert!(lines[3].starts_with("1.3.0") && lines[3].contains("pending_review"));
    assert!(lines.contains(&"act on: 1.2.4"), "{}", r.stdout);
    assert_eq!(
        lines.last(),
        Some(&"on failure: roll back (default.on_failure)"),
        "{}",
        r.stdout
    );

    let r = expect_code(&["evaluate", "--current", "latest", "--now", NOW], 0);
    assert!(r.stdout.contains("no candidate"), "{}", r.stdout);
    assert!(
        r.stdout.contains("note: the current tag 'latest'"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.lines().any(|l| l == "act on: nothing"),
        "{}",
        r.stdout
    );
}

#[test]
fn evaluate_bad_config_path_names_the_path() {
    let dir = TempDir::new().expect("tempdir");
    let missing = dir.path().join("no-such-config.yaml");
    let missing = missing.to_str().expect("UTF-8 path");
    let v = json_code(&["evaluate", "--config", missing, "--current", "1.2.3"], 1);
    let err = v["error"].as_str().expect("error");
    assert!(err.contains(missing), "{err}");
    assert!(err.contains("generate-config"), "{err}");
    let r = expect_code(&["evaluate", "--config", missing, "--current", "1.2.3"], 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.starts_with("error: cannot read config file"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(missing), "{}", r.stderr);

    // The config can come from SAFE_UPDATER_CONFIG too.
    let mut c = bin();
    c.env("SAFE_UPDATER_CONFIG", missing);
    let r = expect_code_with(c, &["evaluate", "--current", "1.2.3"], 1);
    assert!(r.stderr.contains(missing), "{}", r.stderr);

    // A config with problems is refused with its lines.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "policy:\n  min_age: soon\n").expect("write");
    let broken = broken.to_str().expect("UTF-8 path");
    let v = json_code(&["evaluate", "--config", broken, "--current", "1.2.3"], 1);
    let err = v["error"].as_str().expect("error");
    assert!(
        err.contains(&format!("{broken}:2:")) && err.contains("policy.min_age"),
        "{err}"
    );
}

#[test]
fn evaluate_invalid_arguments_exit_1() {
    for (extra, mentions) in [
        (["--kind", "bogus"], "--kind \"bogus\""),
        (["--now", "yesterday"], "--now \"yesterday\""),
        (["--label", "noequals"], "--label \"noequals\""),
        (["--annotation", "=x"], "--annotation \"=x\""),
        (["--first-seen", "1.2.4"], "--first-seen \"1.2.4\""),
        (["--first-seen", "1.2.4=soon"], "--first-seen \"soon\""),
    ] {
        let mut args = vec!["evaluate", "--current", "1.2.3", "--available", "1.2.4"];
        args.extend(extra);
        let v = json_code(&args, 1);
        assert_eq!(obj_keys(&v), ["error"], "{extra:?}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(mentions)),
            "{extra:?}: {v}"
        );
    }
    // --current is required.
    expect_code(&["evaluate", "--available", "1.2.4"], 2);
}

// ---------------------------------------------------------------------------------------------
// generate-config and validate-config
// ---------------------------------------------------------------------------------------------

#[test]
fn generated_config_is_valid_and_means_the_defaults() {
    let r = expect_code(&["generate-config"], 0);
    assert!(r.stdout.starts_with("# safe-updater configuration."));
    let dir = TempDir::new().expect("tempdir");
    let file = dir.path().join("generated.yaml");
    std::fs::write(&file, &r.stdout).expect("write");
    let file = file.to_str().expect("UTF-8 path");

    let v = json_ok(&["validate-config", file]);
    assert_eq!(v, json!({"valid": true, "file": file}));
    let r2 = expect_code(&["validate-config", file], 0);
    assert_eq!(r2.stdout.trim_end(), format!("{file} is valid"));

    // It is YAML the config loader accepts on its own.
    safe_updater_core::config::load("generated", &r.stdout, &[])
        .unwrap_or_else(|e| panic!("generated config does not load: {e}"));

    // And it decides exactly as the built-in defaults do (only rule names differ: `global.*`).
    let args = [
        "--current",
        "1.2.3",
        "--available",
        "1.2.4,1.3.0,2.0.0,2.1.0-rc.1",
        "--now",
        NOW,
    ];
    let builtin = evaluate(&args);
    let mut with = vec!["--config", file];
    with.extend(args);
    let generated = evaluate(&with);
    assert_eq!(summary(&builtin), summary(&generated));
    assert_eq!(builtin["act_on"], generated["act_on"]);
    assert_eq!(
        candidate(&generated, "1.3.0")["rule"],
        json!("global.minor")
    );
}

#[test]
fn validate_config_accepts_the_example() {
    let file = example_config();
    let file = file.to_str().expect("UTF-8 path");
    let v = json_ok(&["validate-config", file]);
    assert_eq!(v["valid"], json!(true));
    assert_eq!(v["file"], json!(file));
    // --config works as the file to check too.
    let v = json_ok(&["--config", file, "validate-config"]);
    assert_eq!(v["valid"], json!(true));
}

/// (line, field) of every problem.
fn problems(v: &Value) -> Vec<(Option<u64>, String)> {
    v["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("problems is an array: {v}"))
        .iter()
        .map(|p| {
            (
                p["line"].as_u64(),
                p["field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn validate(file: &Path, code: i32) -> Value {
    let v = json_code(
        &["validate-config", file.to_str().expect("UTF-8 path")],
        code,
    );
    assert_eq!(v["valid"], json!(code == 0), "{v}");
    assert_eq!(v["file"], json!(file.to_str()), "{v}");
    v
}

#[test]
fn validate_config_reports_every_problem_with_its_line() {
    // Five problems in one file: an unknown key, a bad gate value, a bad duration, a bad
    // regular expression and an unknown time zone. `validate-config` promises every problem
    // at once, each with its line.
    let v = validate(&data("broken.yaml"), 1);
    let mut found = problems(&v);
    found.sort();
    assert_eq!(
        found,
        [
            (Some(5), "policy.gates.minor".to_owned()),
            (Some(6), "policy.min_age".to_owned()),
            (Some(7), "policy.exclude[0]".to_owned()),
            (Some(12), "policy.windows[0].timezone".to_owned()),
            (Some(13), "policy.colour".to_owned()),
        ],
        "{v}"
    );
}

#[test]
fn validate_config_reports_semantic_problems_all_at_once() {
    let v = validate(&data("semantic-problems.yaml"), 1);
    let mut found = problems(&v);
    found.sort();
    assert_eq!(
        found,
        [
            (Some(3), "policy.min_age".to_owned()),
            (Some(4), "policy.exclude[0]".to_owned()),
            (Some(9), "policy.windows[0].timezone".to_owned()),
            (Some(12), "namespaces.prod.constraint".to_owned()),
            (Some(15), "resources[0].match.kind".to_owned()),
            (Some(17), "resources[0].policy.versioning".to_owned()),
        ],
        "{v}"
    );
    let file = data("semantic-problems.yaml");
    let file = file.to_str().expect("UTF-8 path");
    for p in v["problems"].as_array().expect("problems") {
        assert_eq!(
            obj_keys(p),
            ["column", "field", "line", "message", "source"],
            "{p}"
        );
        assert_eq!(p["source"], json!(file), "{p}");
        assert!(p["column"].as_u64().is_some(), "{p}");
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
    }
    let msg = |i: usize| v["problems"][i]["message"].as_str().unwrap_or_default();
    assert!(msg(0).contains("'soon' is not a duration"), "{v}");
    assert!(msg(1).contains("invalid regular expression"), "{v}");
    assert!(msg(2).contains("Mars/Olympus"), "{v}");

    // People read `file:line:column: field: message` on stderr.
    let r = expect_code(&["validate-config", file], 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!(
            "{file}:3:12: policy.min_age: 'soon' is not a duration"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .trim_end()
            .ends_with(&format!("6 problem(s) in {file}")),
        "{}",
        r.stderr
    );
}

#[test]
fn validate_config_unknown_key_and_bad_gate_value() {
    let dir = TempDir::new().expect("tempdir");
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "version: 1\npolicy:\n  gates:\n    patch: auto\n  colour: blue\n",
    )
    .expect("write");
    let v = validate(&unknown, 1);
    assert_eq!(problems(&v), [(Some(5), "policy.colour".to_owned())], "{v}");
    let message = v["problems"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("colour"), "{message}");

    let gate = dir.path().join("gate.yaml");
    std::fs::write(&gate, "policy:\n  gates:\n    minor: sometimes\n").expect("write");
    let v = validate(&gate, 1);
    assert_eq!(
        problems(&v),
        [(Some(3), "policy.gates.minor".to_owned())],
        "{v}"
    );
    let message = v["problems"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("sometimes"), "{message}");
}

#[test]
fn validate_config_table_lines_name_the_field_once() {
    // `file:line:column: field: message` — the message must not repeat the field.
    let dir = TempDir::new().expect("tempdir");
    let gate = dir.path().join("gate.yaml");
    std::fs::write(&gate, "policy:\n  gates:\n    minor: sometimes\n").expect("write");
    let gate = gate.to_str().expect("UTF-8 path");
    let r = expect_code(&["validate-config", gate], 1);
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{gate}:3:")) && first.contains("policy.gates.minor"),
        "{first}"
    );
    assert_eq!(
        first.matches("policy.gates.minor").count(),
        1,
        "field named twice: {first}"
    );
}

#[test]
fn validate_config_yaml_syntax_error_and_duplicate_key() {
    let dir = TempDir::new().expect("tempdir");
    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "policy:\n  gates: [\n").expect("write");
    let v = validate(&syntax, 1);
    let ps = v["problems"].as_array().expect("problems");
    assert_eq!(ps.len(), 1, "{v}");
    assert!(ps[0]["line"].as_u64().is_some(), "{v}");
    assert!(
        ps[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid YAML")),
        "{v}"
    );

    let tab = dir.path().join("tab.yaml");
    std::fs::write(&tab, "policy:\n  gates:\n\tminor: auto\n").expect("write");
    let v = validate(&tab, 1);
    assert_eq!(v["problems"][0]["line"], json!(3), "{v}");

    let dup = dir.path().join("dup.yaml");
    std::fs::write(&dup, "policy:\n  min_age: 1h\n  min_age: 2h\n").expect("write");
    let v = validate(&dup, 1);
    let ps = v["problems"].as_array().expect("problems");
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0]["line"], json!(3), "{v}");
    assert!(
        ps[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("duplicate key 'min_age' (first defined on line 2)")),
        "{v}"
    );
}

#[test]
fn validate_config_names_the_environment_variable() {
    let file = example_config();
    let file = file.to_str().expect("UTF-8 path");
    let mut c = bin();
    c.env("SAFE_UPDATER_POLICY__GATES__MINOR", "sometimes");
    let v = expect_code_with(c, &["validate-config", file, "-o", "json"], 1).json();
    assert_eq!(v["valid"], json!(false));
    let ps = v["problems"].as_array().expect("problems");
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(
        ps[0]["source"],
        json!("environment variable SAFE_UPDATER_POLICY__GATES__MINOR")
    );
    assert_eq!(ps[0]["field"], json!("policy.gates.minor"));
    assert_eq!(ps[0]["line"], Value::Null);
    assert!(
        ps[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sometimes")),
        "{v}"
    );

    // A semantic problem from a variable is attributed to it as well.
    let mut c = bin();
    c.env("SAFE_UPDATER_NAMESPACES__PRODUCTION__MIN_AGE", "later");
    let v = expect_code_with(c, &["validate-config", file, "-o", "json"], 1).json();
    assert_eq!(
        v["problems"][0]["source"],
        json!("environment variable SAFE_UPDATER_NAMESPACES__PRODUCTION__MIN_AGE")
    );
    assert_eq!(
        v["problems"][0]["field"],
        json!("namespaces.production.min_age")
    );

    // A good override keeps the file valid.
    let mut c = bin();
    c.env("SAFE_UPDATER_POLICY__GATES__MINOR", "auto");
    let v = expect_code_with(c, &["validate-config", file, "-o", "json"], 0).json();
    assert_eq!(v["valid"], json!(true));
}

#[test]
fn validate_config_without_a_readable_file_exits_1() {
    let dir = TempDir::new().expect("tempdir");
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().expect("UTF-8 path");
    let v = json_code(&["validate-config", missing], 1);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains(missing)),
        "{v}"
    );
    let v = json_code(&["validate-config"], 1);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no file to check")),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// State commands
// ---------------------------------------------------------------------------------------------

fn asset(id: &str, kind: AssetKind, namespace: Option<&str>, name: &str, image: &str) -> Asset {
    Asset {
        id: id.to_owned(),
        kind,
        location: if kind == AssetKind::Container {
            "local".to_owned()
        } else {
            "prod-cluster".to_owned()
        },
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        container: None,
        image: image.to_owned(),
        digest: Some(format!("sha256:{}", "ab".repeat(32))),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        annotations: BTreeMap::new(),
        first_seen: ts("2026-11-01T10:00:00Z"),
        last_seen: ts("2026-11-20T10:00:00Z"),
        extra: Value::Null,
    }
}

const WEB: &str = "docker/local/web";
const API: &str = "k8s/prod-cluster/production/Deployment/api/app";
const DB: &str = "k8s/prod-cluster/production/StatefulSet/postgres/postgres";

/// The number of audit records [`populate`] leaves.
const AUDIT_RECORDS: u64 = 10;

/// A state database with three assets, observed tags, two decisions, an approval and a
/// rejection, three updates (succeeded, rolled back, in progress) and a scan event.
fn populate(path: &Path) {
    let mut s = Store::open(path).expect("open store");
    s.upsert_assets(&[
        asset(
            WEB,
            AssetKind::Container,
            Some("web"),
            "web",
            "nginx:1.27.1",
        ),
        asset(
            API,
            AssetKind::Deployment,
            Some("production"),
            "api",
            "ghcr.io/acme/api:2.3.0",
        ),
        asset(
            DB,
            AssetKind::StatefulSet,
            Some("production"),
            "postgres",
            "postgres:16.4",
        ),
    ])
    .expect("upsert assets");
    s.record_observed_tags(
        "docker.io/library/nginx",
        &[
            ObservedTagInput {
                tag: "1.27.1".into(),
                digest: Some("sha256:01".into()),
            },
            ObservedTagInput {
                tag: "1.27.2".into(),
                digest: None,
            },
        ],
        ts("2026-11-20T10:00:00Z"),
    )
    .expect("observed tags");
    for (asset_id, candidate, change, gate, decision) in [
        (WEB, "1.27.2", "patch", "auto", "approve"),
        (API, "2.4.0", "minor", "review", "pending_review"),
    ] {
        s.record_decision(&DecisionRecord {
            asset_id: asset_id.into(),
            at: ts("2026-11-20T10:01:00Z"),
            actor: "daemon".into(),
            current: "1.27.1".into(),
            candidate: Some(candidate.into()),
            change: change.into(),
            gate: gate.into(),
            decision: decision.into(),
            rule: Some(format!("default.{change}")),
            reason: "because, \"quoted\"\nand on two lines".into(),
            correlation_id: Some("run-1".into()),
        })
        .expect("record decision");
    }
    for (candidate, verdict, operator) in [
        ("2.4.0", Verdict::Approved, "cli:alice"),
        ("3.0.0", Verdict::Rejected, "cli:bob"),
    ] {
        s.record_approval(&Approval {
            asset_id: API.into(),
            candidate: candidate.into(),
            verdict,
            operator: operator.into(),
            reason: Some("reviewed".into()),
            at: ts("2026-11-20T11:00:00Z"),
            origin: Default::default(),
        })
        .expect("record approval");
    }
    let start = |asset_id: &str, from: &str, to: &str, at: &str| UpdateStart {
        asset_id: asset_id.into(),
        from_ref: from.into(),
        to_ref: to.into(),
        snapshot: json!({"image": from, "env": {"A": "1"}, "replicas": 3}),
        correlation_id: Some("run-1".into()),
        actor: "daemon".into(),
        at: ts(at),
    };
    let first = s
        .begin_update(&start(
            WEB,
            "nginx:1.27.1",
            "nginx:1.27.2",
            "2026-11-20T12:00:00Z",
        ))
        .expect("begin update");
    s.finish_update(
        first,
        UpdateOutcome::Succeeded,
        None,
        ts("2026-11-20T12:01:00Z"),
        "daemon",
    )
    .expect("finish update");
    let second = s
        .begin_update(&start(
            API,
            "ghcr.io/acme/api:2.3.0",
            "ghcr.io/acme/api:2.4.0",
            "2026-11-20T13:00:00Z",
        ))
        .expect("begin update");
    s.finish_update(
        second,
        UpdateOutcome::RolledBack,
        Some("health check failed: 503".into()),
        ts("2026-11-20T13:05:00Z"),
        "daemon",
    )
    .expect("finish update");
    s.begin_update(&start(
        DB,
        "postgres:16.4",
        "postgres:16.5",
        "2026-11-20T14:00:00Z",
    ))
    .expect("begin update");
    s.append_audit(AuditEvent {
        timestamp: ts("2026-11-20T15:00:00Z"),
        actor: "daemon".into(),
        action: "scan".into(),
        asset_id: None,
        correlation_id: Some("run-2".into()),
        details: json!({"assets": 3, "ratio": 0.1}),
    })
    .expect("append audit");
    assert_eq!(s.audit_len().expect("audit length"), AUDIT_RECORDS);
}

fn populated() -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("state.db");
    populate(&path);
    (dir, path)
}

/// Runs a state command on `path` with `-o json`.
fn state_json(path: &Path, args: &[&str], code: i32) -> Value {
    let mut a = vec!["--state", path.to_str().expect("UTF-8 path")];
    a.extend_from_slice(args);
    json_code(&a, code)
}

fn state_run(path: &Path, args: &[&str], code: i32) -> Run {
    let mut a = vec!["--state", path.to_str().expect("UTF-8 path")];
    a.extend_from_slice(args);
    expect_code(&a, code)
}

#[test]
fn list_assets_lists_and_filters() {
    let (_dir, path) = populated();
    let v = state_json(&path, &["list-assets"], 0);
    let all = v.as_array().expect("an array of assets");
    let ids: Vec<&str> = all.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids, [WEB, API, DB]);
    let web = &all[0];
    assert_eq!(web["kind"], json!("container"));
    assert_eq!(web["namespace"], json!("web"));
    assert_eq!(web["name"], json!("web"));
    assert_eq!(web["image"], json!("nginx:1.27.1"));
    assert_eq!(web["labels"], json!({"app": "web"}));
    assert_eq!(web["location"], json!("local"));
    assert_eq!(all[1]["kind"], json!("Deployment"));
    assert_eq!(all[2]["kind"], json!("StatefulSet"));
    // The JSON is the library's own Asset.
    let parsed: Vec<Asset> = serde_json::from_value(v.clone()).expect("Asset JSON");
    assert_eq!(parsed[2].first_seen, ts("2026-11-01T10:00:00Z"));

    let only = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["list-assets"];
        a.extend_from_slice(args);
        state_json(&path, &a, 0)
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(only(&["--kind", "sts"]), [DB]);
    assert_eq!(only(&["--kind", "Deployment"]), [API]);
    assert_eq!(only(&["--namespace", "production"]), [API, DB]);
    assert_eq!(only(&["--location", "local"]), [WEB]);
    assert_eq!(only(&["--name", "POST"]), [DB]);
    assert!(only(&["--namespace", "nowhere"]).is_empty());

    let v = state_json(&path, &["list-assets", "--kind", "bogus"], 1);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("--kind \"bogus\" is not a kind")),
        "{v}"
    );

    // Table.
    let r = state_run(&path, &["list-assets"], 0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "KIND", "NAMESPACE", "NAME", "IMAGE", "LAST", "SEEN"]
    );
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[1].starts_with(WEB) && lines[1].contains("2026-11-20 10:00"));
    let r = state_run(&path, &["list-assets", "--namespace", "nowhere"], 0);
    assert_eq!(r.stdout.trim_end(), "no assets match");
}

#[test]
fn stats_counts_what_is_stored() {
    let (_dir, path) = populated();
    let v = state_json(&path, &["stats"], 0);
    assert_eq!(v["assets"], json!(3));
    assert_eq!(
        v["assets_by_kind"],
        json!({"container": 1, "Deployment": 1, "StatefulSet": 1})
    );
    assert_eq!(v["observed_tags"], json!(2));
    assert_eq!(v["decisions"], json!(2));
    assert_eq!(v["approvals"], json!(1));
    assert_eq!(v["rejections"], json!(1));
    assert_eq!(
        v["updates_by_status"],
        json!({"succeeded": 1, "rolled_back": 1, "in_progress": 1})
    );
    assert_eq!(v["updates_in_progress"], json!(1));
    assert_eq!(v["audit_len"], json!(AUDIT_RECORDS));
    assert_eq!(v["audit_head"]["seq"], json!(AUDIT_RECORDS));
    assert!(
        v["audit_head"]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 64)
    );
    assert!(v["schema_version"].as_i64().is_some_and(|n| n >= 1));
    assert!(v["file_size_bytes"].as_u64().is_some_and(|n| n > 0));

    let r = state_run(&path, &["stats"], 0);
    assert!(
        r.stdout
            .contains(&format!("state:              {}", path.display()))
    );
    assert!(r.stdout.contains("assets:             3"), "{}", r.stdout);
    assert!(
        r.stdout.contains("approvals:          1 (1 rejections)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("audit records:      10"), "{}", r.stdout);
}

#[test]
fn history_lists_updates_newest_first() {
    let (_dir, path) = populated();
    let v = state_json(&path, &["history"], 0);
    let all = v.as_array().expect("array");
    let summary: Vec<(i64, &str, &str)> = all
        .iter()
        .map(|u| {
            (
                u["id"].as_i64().unwrap_or(-1),
                u["asset_id"].as_str().unwrap_or_default(),
                u["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, DB, "in_progress"),
            (2, API, "rolled_back"),
            (1, WEB, "succeeded")
        ]
    );
    let rolled_back = &all[1];
    assert_eq!(rolled_back["from_ref"], json!("ghcr.io/acme/api:2.3.0"));
    assert_eq!(rolled_back["to_ref"], json!("ghcr.io/acme/api:2.4.0"));
    assert_eq!(rolled_back["error"], json!("health check failed: 503"));
    assert_eq!(rolled_back["started_by"], json!("daemon"));
    assert_eq!(all[0]["finished_at"], Value::Null);
    // The history does not carry snapshots; the state export does.
    assert!(all[0].get("snapshot").is_none());

    let v = state_json(&path, &["history", API], 0);
    let ids: Vec<i64> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|u| u["id"].as_i64())
        .collect();
    assert_eq!(ids, [2]);
    let v = state_json(&path, &["history", "--limit", "1"], 0);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["id"], json!(3));
    let v = state_json(&path, &["history", "no/such/asset"], 0);
    assert_eq!(v, json!([]));
    expect_code(
        &[
            "--state",
            path.to_str().expect("UTF-8"),
            "history",
            "--limit",
            "many",
        ],
        2,
    );

    let r = state_run(&path, &["history"], 0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[2].contains("rolled_back") && lines[2].contains("health check failed: 503"));
    let r = state_run(&path, &["history", "no/such/asset"], 0);
    assert_eq!(r.stdout.trim_end(), "no updates recorded");
}

/// Edits audit record `seq` behind the store's back, as someone with the file could.
fn tamper(path: &Path, seq: u64) {
    let conn = rusqlite::Connection::open(path).expect("open the database directly");
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .expect("drop the append-only triggers");
    let changed = conn
        .execute(
            "UPDATE audit SET actor = 'mallory' WHERE seq = ?1",
            [i64::try_from(seq).expect("seq")],
        )
        .expect("edit a record");
    assert_eq!(changed, 1);
}

#[test]
fn audit_verify_passes_on_an_intact_trail_and_fails_after_tampering() {
    let (_dir, path) = populated();
    let v = state_json(&path, &["audit", "verify"], 0);
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["checked"], json!(AUDIT_RECORDS));
    assert_eq!(v["problem"], Value::Null);
    assert_eq!(v["head"]["seq"], json!(AUDIT_RECORDS));
    let head = v["head"]["hash"].as_str().expect("head hash").to_owned();
    let r = state_run(&path, &["audit", "verify"], 0);
    assert_eq!(
        r.stdout.trim_end(),
        format!(
            "audit trail intact: {AUDIT_RECORDS} record(s) verified, head #{AUDIT_RECORDS} {head}"
        )
    );

    tamper(&path, 4);
    let v = state_json(&path, &["audit", "verify"], 1);
    assert_eq!(v["ok"], json!(false), "{v}");
    assert_eq!(v["checked"], json!(3));
    assert_eq!(v["problem"]["seq"], json!(4));
    assert_eq!(v["problem"]["kind"], json!("altered"));
    assert_eq!(v["head"]["seq"], json!(3));
    let r = state_run(&path, &["audit", "verify"], 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.starts_with("audit trail BROKEN at record #4"),
        "{}",
        r.stderr
    );
}

#[test]
fn audit_verify_finds_a_deleted_record() {
    let (_dir, path) = populated();
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 6;")
        .expect("delete a record");
    drop(conn);
    let v = state_json(&path, &["audit", "verify"], 1);
    assert_eq!(v["problem"]["kind"], json!("missing"), "{v}");
    assert_eq!(v["checked"], json!(5));
}

fn audit_records_of(path: &Path) -> Vec<safe_updater_core::audit::AuditRecord> {
    Store::open(path)
        .expect("open")
        .audit_records(0, usize::MAX)
        .expect("records")
}

#[test]
fn audit_export_jsonl() {
    let (dir, path) = populated();
    let r = state_run(&path, &["audit", "export"], 0);
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len() as u64, AUDIT_RECORDS);
    let mut prev_hash: Option<String> = None;
    for (i, rec) in lines.iter().enumerate() {
        assert_eq!(rec["seq"], json!(i + 1), "{rec}");
        assert_eq!(
            obj_keys(rec),
            [
                "action",
                "actor",
                "asset_id",
                "correlation_id",
                "details",
                "hash",
                "prev_hash",
                "seq",
                "timestamp"
            ],
            "{rec}"
        );
        if let Some(p) = &prev_hash {
            assert_eq!(rec["prev_hash"], json!(p), "chain link at {}", i + 1);
        }
        prev_hash = rec["hash"].as_str().map(str::to_owned);
    }
    let actions: Vec<&str> = lines.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "decision",
            "decision",
            "approval",
            "rejection",
            "update.started",
            "update.succeeded",
            "update.started",
            "update.rolled_back",
            "update.started",
            "scan"
        ]
    );
    assert_eq!(lines[9]["details"], json!({"assets": 3, "ratio": 0.1}));
    assert_eq!(
        lines[0]["timestamp"],
        json!("2026-11-20T10:01:00.000000000Z")
    );
    // What was exported is what the store holds, record for record.
    let exported: Vec<safe_updater_core::audit::AuditRecord> = lines
        .iter()
        .map(|l| serde_json::from_value(l.clone()).expect("AuditRecord"))
        .collect();
    assert_eq!(exported, audit_records_of(&path));

    // --to writes the same to a file, and --format jsonl is the default.
    let out = dir.path().join("audit.jsonl");
    let out_s = out.to_str().expect("UTF-8");
    let r2 = state_run(
        &path,
        &["audit", "export", "--format", "jsonl", "--to", out_s],
        0,
    );
    assert!(r2.stdout.is_empty(), "{}", r2.stdout);
    assert_eq!(
        std::fs::read_to_string(&out).expect("read export"),
        r.stdout
    );
    // No temporary file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn audit_export_csv() {
    let (_dir, path) = populated();
    let r = state_run(&path, &["audit", "export", "--format", "csv"], 0);
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("seq,timestamp,actor,action,asset_id,correlation_id,details,prev_hash,hash")
    );
    let records = audit_records_of(&path);
    // Decision details hold a quoted, multi-line reason: RFC 4180 quoting keeps rows intact.
    // Count records by the rows that start with a sequence number followed by the timestamp.
    let starts: Vec<&str> = r
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(1).is_some_and(|t| t.starts_with("2026-")))
        .collect();
    assert_eq!(starts.len(), records.len(), "{}", r.stdout);
    for (line, rec) in starts.iter().zip(&records) {
        assert!(line.starts_with(&format!("{},", rec.seq)), "{line}");
        assert!(
            line.ends_with(&format!("{},{}", rec.prev_hash, rec.hash)),
            "{line}"
        );
    }
    let scan = starts.last().copied().unwrap_or_default();
    assert!(
        scan.contains(",daemon,scan,,run-2,"),
        "empty asset_id field: {scan}"
    );

    expect_code(
        &[
            "--state",
            path.to_str().expect("UTF-8"),
            "audit",
            "export",
            "--format",
            "xml",
        ],
        2,
    );
}

#[test]
fn state_export_import_round_trip_is_identical() {
    let (dir, path) = populated();
    let r = state_run(&path, &["state", "export"], 0);
    let exported = r.json();
    assert_eq!(exported["format_version"], json!(1));
    assert_eq!(exported["assets"].as_array().map(Vec::len), Some(3));
    assert_eq!(exported["decisions"].as_array().map(Vec::len), Some(2));
    assert_eq!(exported["approvals"].as_array().map(Vec::len), Some(2));
    assert_eq!(exported["observed_tags"].as_array().map(Vec::len), Some(2));
    assert_eq!(exported["audit"].as_array().map(Vec::len), Some(10));
    let updates = exported["updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 3);
    assert_eq!(
        updates[0]["snapshot"],
        json!({"image": "nginx:1.27.1", "env": {"A": "1"}, "replicas": 3})
    );

    // To a file: a summary on stdout (JSON), the dump in the file.
    let backup = dir.path().join("backup.json");
    let backup_s = backup.to_str().expect("UTF-8");
    let v = state_json(&path, &["state", "export", backup_s], 0);
    assert_eq!(
        v,
        json!({"exported": backup_s, "assets": 3, "audit_records": 10})
    );
    let from_file: Value =
        serde_json::from_str(&std::fs::read_to_string(&backup).expect("read backup"))
            .expect("backup is JSON");
    assert_eq!(from_file, exported);

    // Into a fresh path (which does not exist yet: import creates it).
    let fresh = dir.path().join("restored/state.db");
    let fresh_s = fresh.to_str().expect("UTF-8");
    let v = state_json(&fresh, &["state", "import", backup_s], 0);
    assert_eq!(
        v,
        json!({"imported": backup_s, "state": fresh_s, "assets": 3, "audit_records": 10})
    );
    let again = state_run(&fresh, &["state", "export"], 0);
    assert_eq!(again.json(), exported);
    assert_eq!(again.stdout, r.stdout, "byte-identical export");
    // The restored trail verifies.
    let v = state_json(&fresh, &["audit", "verify"], 0);
    assert_eq!(v["checked"], json!(10));

    // Importing again into the now non-empty store is refused without --replace...
    let v = state_json(&fresh, &["state", "import", backup_s], 1);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains(backup_s)),
        "{v}"
    );
    // ...and accepted with it, changing nothing.
    state_json(&fresh, &["state", "import", backup_s, "--replace"], 0);
    assert_eq!(state_run(&fresh, &["state", "export"], 0).stdout, r.stdout);
}

#[test]
fn state_import_refuses_bad_input() {
    let (dir, path) = populated();
    let target = dir.path().join("target.db");

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"not\": \"a dump\"}").expect("write");
    let garbage_s = garbage.to_str().expect("UTF-8");
    let v = state_json(&target, &["state", "import", garbage_s], 1);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains(garbage_s) && e.contains("not a safe-updater state export")),
        "{v}"
    );

    let missing = dir.path().join("missing.json");
    let missing_s = missing.to_str().expect("UTF-8");
    let v = state_json(&target, &["state", "import", missing_s], 1);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains(missing_s)),
        "{v}"
    );
    assert!(
        !target.exists(),
        "an unreadable backup must not create the state file"
    );

    // A dump whose audit trail was edited is refused, and nothing is imported.
    let mut dump = state_run(&path, &["state", "export"], 0).json();
    dump["audit"][2]["actor"] = json!("mallory");
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, dump.to_string()).expect("write");
    let v = state_json(
        &target,
        &["state", "import", edited.to_str().expect("UTF-8")],
        1,
    );
    assert!(v["error"].is_string(), "{v}");
    if target.exists() {
        let v = state_json(&target, &["stats"], 0);
        assert_eq!(
            v["assets"],
            json!(0),
            "a refused import leaves nothing: {v}"
        );
        assert_eq!(
            v["audit_len"],
            json!(0),
            "a refused import leaves nothing: {v}"
        );
    }

    expect_code(&["state", "import"], 2);
}

#[test]
fn read_commands_on_a_missing_state_file_say_what_to_do() {
    let dir = TempDir::new().expect("tempdir");
    let missing = dir.path().join("nope/state.db");
    let missing_s = missing.to_str().expect("UTF-8");
    let commands: &[&[&str]] = &[
        &["list-assets"],
        &["stats"],
        &["history"],
        &["audit", "verify"],
        &["audit", "export"],
        &["audit", "export", "--format", "csv"],
        &["state", "export"],
    ];
    for cmd in commands {
        let v = state_json(&missing, cmd, 1);
        let err = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{cmd:?}: {v}"));
        assert!(
            err.contains(missing_s) && err.contains("safe-updater scan") && err.contains("--state"),
            "{cmd:?}: {err}"
        );
        let r = state_run(&missing, cmd, 1);
        assert!(r.stdout.is_empty(), "{cmd:?}: {}", r.stdout);
        assert!(
            r.stderr.starts_with("error: no state database at"),
            "{cmd:?}: {}",
            r.stderr
        );
        assert!(!missing.exists(), "{cmd:?} created the state file");
        assert!(
            !missing.parent().is_some_and(Path::exists),
            "{cmd:?} created its directory"
        );
    }
    // Without --state, the default location is named (here under XDG_STATE_HOME).
    let mut c = bin();
    c.env("XDG_STATE_HOME", dir.path());
    let r = expect_code_with(c, &["stats"], 1);
    let expected = dir.path().join("safe-updater/state.db");
    assert!(
        r.stderr.contains(&expected.display().to_string()),
        "{}",
        r.stderr
    );
}

#[test]
fn state_path_comes_from_env_or_the_config_file() {
    let (dir, path) = populated();
    // SAFE_UPDATER_STATE.
    let mut c = bin();
    c.env("SAFE_UPDATER_STATE", &path);
    let v = expect_code_with(c, &["stats", "-o", "json"], 0).json();
    assert_eq!(v["assets"], json!(3));
    // state.path in a config file, relative to that file.
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).expect("mkdir");
    let conf = conf_dir.join("config.yaml");
    std::fs::write(&conf, "version: 1\nstate:\n  path: ../state.db\n").expect("write");
    let v = json_ok(&["--config", conf.to_str().expect("UTF-8"), "stats"]);
    assert_eq!(v["assets"], json!(3));
    // --state wins over the config.
    let other = dir.path().join("other.db");
    let v = json_code(
        &[
            "--config",
            conf.to_str().expect("UTF-8"),
            "--state",
            other.to_str().expect("UTF-8"),
            "stats",
        ],
        1,
    );
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains(other.to_str().unwrap_or_default())),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------------

const SUBCOMMANDS: &[&[&str]] = &[
    &["parse-ref"],
    &["compare"],
    &["satisfies"],
    &["evaluate"],
    &["generate-config"],
    &["validate-config"],
    &["list-assets"],
    &["stats"],
    &["history"],
    &["audit"],
    &["audit", "verify"],
    &["audit", "export"],
    &["state"],
    &["state", "export"],
    &["state", "import"],
];

#[test]
fn help_works_for_every_subcommand() {
    let r = expect_code(&["--help"], 0);
    for sub in SUBCOMMANDS.iter().filter(|s| s.len() == 1) {
        assert!(r.stdout.contains(sub[0]), "{} missing from --help", sub[0]);
    }
    for sub in SUBCOMMANDS {
        let mut args = sub.to_vec();
        args.push("--help");
        let r = expect_code(&args, 0);
        let usage = format!("Usage: safe-updater {}", sub.join(" "));
        assert!(r.stdout.contains(&usage), "{args:?}:\n{}", r.stdout);
        assert!(
            r.stdout.contains("--output"),
            "{args:?}: global options shown"
        );
        // `help SUB` says the same.
        let mut help = vec!["help"];
        help.extend_from_slice(sub);
        assert_eq!(expect_code(&help, 0).stdout, r.stdout, "{help:?}");
    }
    let r = expect_code(&["--version"], 0);
    assert!(r.stdout.starts_with("safe-updater "), "{}", r.stdout);
}

#[test]
fn usage_errors_exit_2() {
    for sub in SUBCOMMANDS {
        let mut args = sub.to_vec();
        args.push("--no-such-flag");
        let r = expect_code(&args, 2);
        assert!(
            r.stderr.contains("--no-such-flag"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    expect_code(&[], 2);
    expect_code(&["no-such-command"], 2);
    expect_code(&["audit"], 2);
    expect_code(&["state"], 2);
    expect_code(&["parse-ref"], 2);
    expect_code(&["parse-ref", "nginx", "--output", "yaml"], 2);
    // Usage errors stay usage errors with JSON output requested.
    expect_code(&["parse-ref", "-o", "json"], 2);
}
