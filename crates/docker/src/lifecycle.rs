//! Lifecycle hooks around an update, as Watchtower runs them, so its users keep their labels:
//! `com.centurylinklabs.watchtower.lifecycle.pre-update` runs (with `sh -c`) in the old
//! container before it is stopped, `...post-update` in the new one once it has started; their
//! `...-timeout` labels give minutes (default 1, `0` = no limit). `safe-updater.io/pre-update`
//! and `safe-updater.io/post-update` (with `-timeout`) are the same under our own prefix and
//! win over Watchtower's.
//!
//! Semantics (stricter than Watchtower where it matters for safety): a pre-update command that
//! exits 75 (`EX_TEMPFAIL`) asks to skip this update; any other failure also stops the update
//! before anything changes. A post-update failure fails the update, which the engine then rolls
//! back like a failed health check.
//!
//! This module only reads labels and runs the commands; what follows is the engine's call.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::Engine;
use crate::health::{ExecFailure, exec_capture, truncated};

const WATCHTOWER_PREFIX: &str = "com.centurylinklabs.watchtower.lifecycle.";
const OWN_PREFIX: &str = "safe-updater.io/";

/// The exit code with which a pre-update command asks to skip the update.
pub const EX_TEMPFAIL: i64 = 75;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    PreUpdate,
    PostUpdate,
}

impl Stage {
    fn key(self) -> &'static str {
        match self {
            Stage::PreUpdate => "pre-update",
            Stage::PostUpdate => "post-update",
        }
    }
}

/// A command to run and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub stage: Stage,
    /// Given to `sh -c`, as Watchtower does.
    pub command: String,
    pub timeout: Option<Duration>,
    /// The label that defined it, for messages.
    pub label: String,
}

/// What a hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    Succeeded {
        output: String,
    },
    /// Pre-update only: exit 75.
    SkipRequested {
        output: String,
    },
    Failed {
        reason: String,
    },
}

/// The hook the labels define for `stage`, or a message saying what is wrong with them.
pub fn hook(labels: &BTreeMap<String, String>, stage: Stage) -> Result<Option<Hook>, String> {
    for prefix in [OWN_PREFIX, WATCHTOWER_PREFIX] {
        let key = format!("{prefix}{}", stage.key());
        let Some(command) = labels.get(&key).map(|c| c.trim()) else {
            continue;
        };
        if command.is_empty() {
            continue;
        }
        let timeout_key = format!("{key}-timeout");
        let timeout = match labels.get(&timeout_key).map(|t| t.trim()) {
            None | Some("") => Some(Duration::from_secs(60)),
            Some(t) => match t.parse::<u64>() {
                Ok(0) => None,
                Ok(minutes) => Some(Duration::from_secs(minutes.saturating_mul(60))),
                Err(_) => {
                    return Err(format!(
                        "label {timeout_key}={t:?} is not a number of minutes (0 means no limit)"
                    ));
                }
            },
        };
        return Ok(Some(Hook {
            stage,
            command: command.to_owned(),
            timeout,
            label: key,
        }));
    }
    Ok(None)
}

/// Runs `hook` inside the container.
pub async fn run(engine: &Engine, container_id: &str, hook: &Hook) -> HookResult {
    let cmd = vec!["sh".to_owned(), "-c".to_owned(), hook.command.clone()];
    match exec_capture(engine, container_id, cmd, hook.timeout).await {
        Ok((0, output)) => HookResult::Succeeded {
            output: truncated(&output),
        },
        Ok((EX_TEMPFAIL, output)) if hook.stage == Stage::PreUpdate => HookResult::SkipRequested {
            output: truncated(&output),
        },
        Ok((code, output)) => HookResult::Failed {
            reason: format!(
                "{} exited with {code}; output {:?}",
                hook.label,
                truncated(&output)
            ),
        },
        Err(ExecFailure::TimedOut) => HookResult::Failed {
            reason: format!(
                "{} did not finish within {} minute(s)",
                hook.label,
                hook.timeout.map_or(0, |t| t.as_secs() / 60)
            ),
        },
        Err(ExecFailure::Engine(e)) => HookResult::Failed {
            reason: format!("{} could not be run: {e}", hook.label),
        },
        Err(ExecFailure::NoExitCode(output)) => HookResult::Failed {
            reason: format!(
                "{} gave no exit code; output {:?}",
                hook.label,
                truncated(&output)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn watchtower_labels_define_hooks() {
        let l = labels(&[
            (
                "com.centurylinklabs.watchtower.lifecycle.pre-update",
                "/dump.sh",
            ),
            (
                "com.centurylinklabs.watchtower.lifecycle.pre-update-timeout",
                "5",
            ),
            (
                "com.centurylinklabs.watchtower.lifecycle.post-update",
                "echo hi",
            ),
            (
                "com.centurylinklabs.watchtower.lifecycle.post-update-timeout",
                "0",
            ),
        ]);
        let pre = hook(&l, Stage::PreUpdate).expect("valid").expect("hook");
        assert_eq!(pre.command, "/dump.sh");
        assert_eq!(pre.timeout, Some(Duration::from_secs(300)));
        let post = hook(&l, Stage::PostUpdate).expect("valid").expect("hook");
        assert_eq!(post.timeout, None, "0 means no limit");
    }

    #[test]
    fn our_labels_win_and_defaults_apply() {
        let l = labels(&[
            ("com.centurylinklabs.watchtower.lifecycle.pre-update", "a"),
            ("safe-updater.io/pre-update", "b"),
        ]);
        let pre = hook(&l, Stage::PreUpdate).expect("valid").expect("hook");
        assert_eq!(pre.command, "b");
        assert_eq!(pre.timeout, Some(Duration::from_secs(60)));
        assert_eq!(hook(&l, Stage::PostUpdate), Ok(None));
    }

    #[test]
    fn a_bad_timeout_is_reported() {
        let l = labels(&[
            ("safe-updater.io/post-update", "x"),
            ("safe-updater.io/post-update-timeout", "soon"),
        ]);
        let e = hook(&l, Stage::PostUpdate).expect_err("invalid");
        assert!(e.contains("post-update-timeout"), "{e}");
    }
}
