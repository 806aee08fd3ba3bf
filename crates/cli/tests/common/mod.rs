//! What the binary's test files share: the binary with a clean environment, a run's output
//! parsed, and the Docker helpers of the end-to-end tests (containers removed even when a test
//! fails). Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

mod daemon;
mod scoped;
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use scoped::*;

use std::process::Command as Process;

use assert_cmd::Command;
use serde_json::Value;

/// The binary with no `SAFE_UPDATER_*` variable from the shell that runs the tests, and a
/// default state directory that does not exist (so no test can read or create a developer's
/// real state by accident).
pub fn bin() -> Command {
    let mut c = Command::cargo_bin("safe-updater").expect("the safe-updater binary is built");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SAFE_UPDATER_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_STATE_HOME", "/nonexistent/safe-updater-tests/state");
    c
}

/// [`bin`] run as the login `user`, so the actor in the audit trail is `cli:<user>`.
pub fn bin_as(user: &str) -> Command {
    let mut c = bin();
    c.env_remove("SUDO_USER").env("USER", user);
    c
}

/// What a run printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as exactly one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{:?}: stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.args, self.stdout, self.stderr
            )
        })
    }
}

/// One field of every object in a JSON array (a `history` or `list-assets` listing), `""`
/// where an object lacks it or it is not a string.
pub fn column<'a>(rows: &'a Value, field: &str) -> Vec<&'a str> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {rows}"))
        .iter()
        .map(|r| r[field].as_str().unwrap_or(""))
        .collect()
}

/// The Docker host the tests' engine answers on (`scripts/dev-env`'s, by default).
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Runs `c` with `args`.
pub fn exec(mut c: Command, args: &[&str]) -> Run {
    let out = c.args(args).output().expect("run safe-updater");
    Run {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        code: out
            .status
            .code()
            .expect("safe-updater exited (not killed by a signal)"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// A variable of `scripts/dev-env env`; the test fails, saying how to get it, without it.
pub fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"` (or `scripts/test`, which does both)")
    })
}

/// Runs the docker CLI and returns its trimmed stdout; fails the test if docker fails.
pub fn docker(args: &[&str]) -> String {
    let out = Process::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Containers made by one test, removed when it ends (even on panic).
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Process::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

/// A name unique to the test (`prefix`) and the run.
pub fn unique(prefix: &str) -> String {
    format!(
        "su-e2e-{prefix}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    )
}
