//! `validate-config` refuses everything `watch` refuses at start: one table of configs the
//! loader accepts but the daemon cannot run with, each through both commands.

mod common;

use std::time::{Duration, Instant};

use common::{bin, exec, free_port};
use tempfile::TempDir;

/// (what is wrong, the config's body, a word the refusal names, needs the environment)
fn refused(port: u16) -> Vec<(&'static str, String, &'static str, bool)> {
    let listen = format!("server: {{ listen: \"127.0.0.1:{port}\" }}\n");
    let with_server = |rest: &str| format!("server:\n  listen: \"127.0.0.1:{port}\"\n{rest}");
    vec![
        (
            "an unknown notification scheme",
            format!("{listen}notifications: {{ urls: [\"genric://hooks.example/x\"] }}\n"),
            "genric",
            false,
        ),
        (
            "a Slack URL without its token",
            format!("{listen}notifications: {{ urls: [\"slack://webhook\"] }}\n"),
            "slack",
            false,
        ),
        (
            "an unknown event",
            format!(
                "{listen}notifications: {{ urls: [\"generic://hooks.example/x?events=explode\"] }}\n"
            ),
            "explode",
            false,
        ),
        (
            "a notification URL that is not a URL",
            format!("{listen}notifications: {{ urls: [\"not a url\"] }}\n"),
            "notifications.urls",
            false,
        ),
        (
            "two operators sharing one token",
            with_server(
                "  tokens:\n    - { name: alice, token: same-token-1234 }\n    - { name: bob, token: same-token-1234 }\n",
            ),
            "bob",
            false,
        ),
        (
            "token_env unset",
            with_server("  tokens: [{ name: alice, token_env: SU_PREFLIGHT_UNSET_TOKEN }]\n"),
            "SU_PREFLIGHT_UNSET_TOKEN",
            true,
        ),
        (
            "token_file missing",
            with_server(
                "  tokens: [{ name: alice, token_file: /nonexistent/su-preflight.token }]\n",
            ),
            "su-preflight.token",
            true,
        ),
        (
            "webhook secret_env unset",
            with_server("  webhooks: { github: { secret_env: SU_PREFLIGHT_UNSET_SECRET } }\n"),
            "SU_PREFLIGHT_UNSET_SECRET",
            true,
        ),
    ]
}

#[test]
fn validate_config_refuses_what_watch_refuses() {
    let port = free_port();
    for (what, body, names, needs_env) in refused(port) {
        let dir = TempDir::new().expect("tempdir");
        let cfg = dir.path().join("config.yaml");
        // No engine is needed to refuse a config; one that does not answer keeps the test
        // from touching the shared engine should watch start after all.
        std::fs::write(
            &cfg,
            format!(
                "docker:\n  engines:\n    - {{ name: none, host: \"unix:///nonexistent/docker.sock\" }}\n{body}"
            ),
        )
        .expect("config");
        let path = cfg.display().to_string();

        let v = exec(bin(), &["validate-config", &path]);
        assert_eq!(v.code, 1, "{what}: validate-config accepted it: {v:?}");
        assert!(
            v.stderr.contains(names),
            "{what}: the refusal does not name {names:?}: {}",
            v.stderr
        );
        let j = exec(bin(), &["-o", "json", "validate-config", &path]);
        assert_eq!(j.json()["valid"], false, "{what}");

        let lenient = exec(bin(), &["validate-config", "--no-environment", &path]);
        assert_eq!(
            lenient.code,
            if needs_env { 0 } else { 1 },
            "{what}: --no-environment: {lenient:?}"
        );

        let started = Instant::now();
        let mut watch = bin();
        watch
            .arg("--config")
            .arg(&cfg)
            .arg("--state")
            .arg(dir.path().join("state.db"))
            .arg("watch")
            .timeout(Duration::from_secs(20));
        let w = exec(watch, &[]);
        assert_eq!(w.code, 1, "{what}: watch started: {w:?}");
        assert!(
            w.stderr.contains(names),
            "{what}: watch's refusal does not name {names:?}: {}",
            w.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(15), "{what}");
    }
}

#[test]
fn secrets_are_not_shown_in_the_refusals() {
    let port = free_port();
    let dir = TempDir::new().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: \"127.0.0.1:{port}\"\n  tokens:\n    - {{ name: alice, token: s3cret-shared-token }}\n    - {{ name: bob, token: s3cret-shared-token }}\nnotifications: {{ urls: [\"slack://hook:T000/B000/XXXXsecretXXXX@webhook?events=explode\"] }}\n"
        ),
    )
    .expect("config");
    let v = exec(bin(), &["validate-config", &cfg.display().to_string()]);
    assert_eq!(v.code, 1, "{v:?}");
    let all = format!("{}{}", v.stdout, v.stderr);
    assert!(
        !all.contains("s3cret-shared-token") && !all.contains("XXXXsecretXXXX"),
        "{all}"
    );
}
