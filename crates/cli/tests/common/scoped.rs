//! A test's own corner of the shared engine: a scope of its own (Watchtower's scope label on
//! every container it starts, `scope:` in its config), a state file, and cleanup of every
//! container it made, even when it fails. The binary run with that config acts on nothing
//! else the engine runs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::{Run, bin, docker, docker_host, env_var};

/// Watchtower's scope label, which the tests' containers carry.
pub const SCOPE_LABEL: &str = "com.centurylinklabs.watchtower.scope";

/// `<scope label>=<scope>`, for `docker run --label`.
pub fn in_scope(scope: &str) -> String {
    format!("{SCOPE_LABEL}={scope}")
}

pub struct Scoped {
    pub dir: TempDir,
    /// The scope, also the prefix of every container name.
    pub scope: String,
    pub registry: String,
    containers: Vec<String>,
    children: Vec<Child>,
}

impl Scoped {
    /// A scope named after the test and this run.
    pub fn new(test: &str) -> Scoped {
        let scope = format!(
            "su-{test}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_millisecond() % 1_000_000
        );
        Scoped {
            dir: TempDir::new().expect("tempdir"),
            scope,
            registry: env_var("SAFE_UPDATER_E2E_REGISTRY_OPEN"),
            containers: Vec::new(),
            children: Vec::new(),
        }
    }

    /// `<registry>/demo/web:<tag>`.
    pub fn image(&self, tag: &str) -> String {
        format!("{}/demo/web:{tag}", self.registry)
    }

    /// The name of this test's container `short`.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.scope)
    }

    /// The asset id of container `short`.
    pub fn id(&self, short: &str) -> String {
        format!("docker/local/{}", self.name(short))
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Writes the config: the local engine, this scope, then `extra` (YAML, top level).
    pub fn config(&self, extra: &str) {
        let host = docker_host();
        std::fs::write(
            self.config_path(),
            format!(
                "scope: {}\ndocker:\n  engines:\n    - {{ name: local, host: \"{host}\" }}\n{extra}",
                self.scope
            ),
        )
        .expect("config written");
    }

    /// Starts container `short` from `tag` in this scope, with `args` before the image;
    /// returns its name.
    pub fn start(&mut self, short: &str, tag: &str, args: &[&str]) -> String {
        let name = self.name(short);
        self.containers.push(name.clone());
        let image = self.image(tag);
        let label = format!("{SCOPE_LABEL}={}", self.scope);
        let mut all = vec!["run", "-d", "--name", &name, "--label", &label];
        all.extend_from_slice(args);
        all.push(&image);
        docker(&all);
        name
    }

    /// The binary with this test's config and state, `--output json`, and `args`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let mut c = bin();
        c.arg("--config")
            .arg(self.config_path())
            .arg("--state")
            .arg(self.state_path())
            .args(["--output", "json"]);
        super::exec(c, args)
    }

    /// [`Scoped::cli`] with table output, as an operator at a terminal reads it.
    pub fn cli_table(&self, args: &[&str]) -> Run {
        let mut c = bin();
        c.arg("--config")
            .arg(self.config_path())
            .arg("--state")
            .arg(self.state_path());
        super::exec(c, args)
    }

    /// The binary started in the background with this test's config and state; stderr goes
    /// to `<dir>/<log>`. Killed when the test ends.
    pub fn spawn(&mut self, log: &str, args: &[&str]) -> &mut Child {
        let child = self
            .command(log, args)
            .spawn()
            .expect("safe-updater starts");
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }

    /// What [`Scoped::spawn`] runs, for a test that keeps the child itself.
    pub fn command(&self, log: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("safe-updater"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SAFE_UPDATER_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("XDG_STATE_HOME", "/nonexistent/safe-updater-tests/state")
            .arg("--config")
            .arg(self.config_path())
            .arg("--state")
            .arg(self.state_path())
            .args(["--output", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join(log)).expect("log file"));
        cmd
    }

    /// What `<dir>/<log>` holds so far.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }

    /// The containers of the engine whose name is exactly `name`, or is `name` with the
    /// executor's `.su-old` suffix: (name, state, image).
    pub fn containers_named(&self, name: &str) -> Vec<(String, String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.Names}}\t{{.State}}\t{{.Image}}",
        ]);
        out.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((
                    f.next()?.to_owned(),
                    f.next()?.to_owned(),
                    f.next()?.to_owned(),
                ))
            })
            .filter(|(n, _, _)| n == name || n == &format!("{name}.su-old"))
            .collect()
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", n]).output();
            let _ = Command::new("docker")
                .args(["rm", "-f", &format!("{n}.su-old")])
                .output();
        }
    }
}
