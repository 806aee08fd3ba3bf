//! Reading what commands share from outside the process: the config file, the environment and
//! the state path. The one place where `SAFE_UPDATER_*` variables are read (clap reads the few
//! that are also flags).

use std::path::{Path, PathBuf};

use anyhow::Context;
use safe_updater_core::config::{self, Config};
use safe_updater_core::scope::Scope;

use crate::GlobalArgs;
use crate::output::Reported;

/// The environment as `(name, value)` pairs, for the config loader's overrides.
pub fn env_pairs() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The configuration a command runs with: `--config` (or the built-in defaults), environment
/// overrides, and `--scope` (or `SAFE_UPDATER_SCOPE`) over the file's `scope`.
pub fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    load_config_with(global.config.as_deref(), global.scope.as_deref())
}

/// [`load_config`] from its parts (the daemon's loader keeps them for each reload).
pub fn load_config_with(path: Option<&Path>, scope: Option<&str>) -> anyhow::Result<Config> {
    let mut cfg = load_file(path)?;
    if let Some(s) = scope {
        cfg.scope = Scope::from_setting(Some(s));
    }
    Ok(cfg)
}

/// Loads `path` (or the built-in defaults when none is given) with environment overrides.
fn load_file(path: Option<&Path>) -> anyhow::Result<Config> {
    let env = env_pairs();
    let Some(path) = path else {
        return config::load("built-in defaults", "", &env)
            .map_err(|e| Reported(e.to_string()).into());
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read config file {}; check the path, or run `safe-updater generate-config > {}` to create one", path.display(), path.display())
    })?;
    let mut cfg = config::load(&path.display().to_string(), &text, &env).map_err(|e| {
        Reported(format!(
            "{e}\n(fix the lines above; `safe-updater validate-config {}` re-checks)",
            path.display()
        ))
    })?;
    // A relative state path in a config file is relative to that file, not to wherever the
    // command happens to run.
    if let Some(p) = &cfg.state_path
        && Path::new(p).is_relative()
        && let Some(dir) = path.parent()
    {
        cfg.state_path = Some(dir.join(p).display().to_string());
    }
    Ok(cfg)
}

/// Where the state database lives: `--state`, else the config's `state.path`, else the XDG
/// state directory.
pub fn state_path(global: &GlobalArgs, cfg: &Config) -> PathBuf {
    if let Some(p) = &global.state {
        return p.clone();
    }
    if let Some(p) = &cfg.state_path {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("safe-updater").join("state.db")
}
