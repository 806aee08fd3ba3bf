//! `safe-updater watch`: the daemon. Everything it does lives in `safe_updater_daemon`; this
//! only gathers the config loader, the state path and the environment, and runs it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::GlobalArgs;
use crate::context::{env_pairs, load_config, load_config_with, state_path};

#[derive(Debug, Args)]
pub struct WatchArgs {}

pub fn watch(global: &GlobalArgs, _args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(global)?;
    let path = state_path(global, &cfg);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    let config_path = global.config.clone();
    let loader_path = config_path.clone();
    let scope = global.scope.clone();
    let loader: safe_updater_daemon::ConfigLoader = Arc::new(move || {
        load_config_with(loader_path.as_deref(), scope.as_deref()).map_err(|e| format!("{e:#}"))
    });
    let options = safe_updater_daemon::DaemonOptions {
        loader,
        config_path,
        state_path: path,
        env: env_pairs(),
        actor: "daemon".into(),
    };
    let rt = safe_updater_daemon::runtime().context("cannot start the async runtime")?;
    rt.block_on(safe_updater_daemon::run(options))?;
    Ok(ExitCode::SUCCESS)
}
