//! Checks `Constraint` and `Version::parse_lenient` against golden vectors recorded from the
//! Go library Helm uses, `github.com/Masterminds/semver/v3` (see `tools/constraintvectors`).
//! Every disagreement is collected and reported at once, so one run shows the whole picture.

use safe_updater_core::constraint::{Constraint, satisfies};
use safe_updater_core::semver::Version;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    library_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    constraint: String,
    version: String,
    constraint_valid: bool,
    version_valid: bool,
    satisfies: Option<bool>,
}

fn load() -> Vectors {
    let text = include_str!("data/constraint_vectors.json");
    serde_json::from_str(text).expect("constraint_vectors.json parses")
}

#[test]
fn vectors_are_from_masterminds_v3() {
    let vectors = load();
    assert!(
        vectors.library_version.starts_with("v3."),
        "{}",
        vectors.library_version
    );
    assert!(
        vectors.cases.len() >= 300,
        "only {} cases",
        vectors.cases.len()
    );
}

#[test]
fn constraint_and_version_parsing_and_matching_agree_with_masterminds() {
    let vectors = load();
    let mut failures = Vec::new();
    for case in &vectors.cases {
        let c = Constraint::parse(&case.constraint);
        let v = Version::parse_lenient(&case.version);
        if c.is_ok() != case.constraint_valid {
            failures.push(format!(
                "constraint {:?}: Masterminds valid={}, ours {:?}",
                case.constraint, case.constraint_valid, c
            ));
        }
        if v.is_ok() != case.version_valid {
            failures.push(format!(
                "version {:?}: Masterminds valid={}, ours {:?}",
                case.version, case.version_valid, v
            ));
        }
        if let (Ok(c), Ok(v), Some(expected)) = (&c, &v, case.satisfies)
            && c.matches(v) != expected
        {
            failures.push(format!(
                "{:?} matches {:?}: Masterminds {expected}, ours {}",
                case.constraint, case.version, !expected
            ));
        }
        // The convenience entry point must agree too, and report bad input as errors.
        let s = satisfies(&case.constraint, &case.version);
        match (
            case.constraint_valid && case.version_valid,
            &s,
            case.satisfies,
        ) {
            (true, Ok(got), Some(expected)) if *got == expected => {}
            (false, Err(_), None) => {}
            _ => failures.push(format!(
                "satisfies({:?}, {:?}) = {s:?}, Masterminds {:?}",
                case.constraint, case.version, case.satisfies
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors disagree with Masterminds {}:\n{}",
        failures.len(),
        vectors.cases.len(),
        vectors.library_version,
        failures.join("\n")
    );
}
