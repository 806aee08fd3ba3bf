//! Crash safety against the real engine: an update interrupted after each step (its snapshot
//! already committed to the store, as `apply` does first) is found by `recover` on the next
//! start and the previous container comes back exactly — same id, same name, running — and the
//! update is recorded as rolled back. Needs `scripts/dev-env` (fails, never skips, without it).

use std::process::Command;

use safe_updater_docker::update::{self, ContainerSnapshot};
use safe_updater_docker::{ConnectOptions, Engine, EngineSpec};
use safe_updater_engine::recover;
use safe_updater_store::{Store, UpdateStart, UpdateStatus};

fn registry() -> String {
    std::env::var("SAFE_UPDATER_E2E_REGISTRY_OPEN").unwrap_or_else(|_| {
        panic!("SAFE_UPDATER_E2E_REGISTRY_OPEN is not set: run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"` (or `scripts/test`)")
    })
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", n]).output();
        }
    }
}

async fn engine() -> Engine {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let spec = EngineSpec::from_env_vars("local", &env).expect("engine spec");
    Engine::connect(&spec, ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("no Docker engine ({e}): run `scripts/dev-env up` and `eval \"$(scripts/dev-env env)\"`"))
}

/// Runs the first `steps` steps of an update, as a process killed right after them would.
async fn interrupt_after(engine: &Engine, snap: &ContainerSnapshot, new_image: &str, steps: usize) {
    if steps >= 1 {
        update::step_rename(engine, snap).await.expect("rename");
    }
    if steps >= 2 {
        update::step_stop(engine, snap, None).await.expect("stop");
    }
    if steps >= 3 {
        let id = update::step_create(engine, snap, new_image)
            .await
            .expect("create");
        if steps >= 4 {
            update::step_start(engine, snap, &id).await.expect("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_killed_after_any_step_is_restored_on_the_next_start() {
    let reg = registry();
    let old_image = format!("{reg}/demo/web:1.0.0");
    let new_image = format!("{reg}/demo/web:1.0.1");
    docker(&["pull", "-q", &old_image]);
    docker(&["pull", "-q", &new_image]);
    let engine = engine().await;
    let base = format!("su-recover-{}", std::process::id());
    let mut names = Vec::new();
    for steps in 0..=4 {
        let name = format!("{base}-{steps}");
        names.push(name.clone());
        names.push(format!("{name}.su-old"));
    }
    let _cleanup = Cleanup(names);

    for steps in 0..=4usize {
        let name = format!("{base}-{steps}");
        let id = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            "KEEP=me",
            "--label",
            "case=recovery",
            &old_image,
        ]);
        let mut store = Store::open_in_memory().expect("store");
        // The update is begun by a process that then died ...
        store.act_as(safe_updater_store::testing::departed_process());
        let snap = update::snapshot(&engine, &name).await.expect("snapshot");
        let update_id = store
            .begin_update(&UpdateStart {
                asset_id: format!("docker/local/{name}"),
                from_ref: old_image.clone(),
                to_ref: new_image.clone(),
                snapshot: serde_json::to_value(&snap).expect("snapshot JSON"),
                correlation_id: None,
                actor: "test".into(),
                at: jiff::Timestamp::now(),
            })
            .expect("begin");
        interrupt_after(&engine, &snap, &new_image, steps).await;

        // ... and recovered by the next start.
        store.act_as(safe_updater_store::process::this_process());
        let recovered = recover(&mut store, std::slice::from_ref(&engine), "test", &|_| true)
            .await
            .expect("recover");
        assert_eq!(recovered.len(), 1, "after {steps} step(s): {recovered:?}");
        assert!(
            recovered[0].restored,
            "after {steps} step(s): {recovered:?}"
        );
        assert!(store.unfinished_updates().expect("unfinished").is_empty());
        assert_eq!(
            store.update(update_id).expect("update").map(|u| u.status),
            Some(UpdateStatus::RolledBack)
        );
        // Cut short by a crash, not failed by its target: it may be tried again.
        let asset_id = store
            .update(update_id)
            .expect("update")
            .map(|u| u.asset_id)
            .expect("recorded");
        assert!(
            store.failed_targets(&asset_id).expect("failed").is_empty(),
            "after {steps} step(s): an interrupted update marked its target failed"
        );

        let now = docker(&[
            "inspect",
            "--format",
            "{{.Id}} {{.State.Running}} {{.Config.Image}} {{index .Config.Labels \"case\"}}",
            &name,
        ]);
        assert_eq!(
            now,
            format!("{id} true {old_image} recovery"),
            "after {steps} step(s)"
        );
        let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &name]);
        assert!(env.contains("KEEP=me"), "{env}");
        let leftovers = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.Names}}",
        ]);
        assert_eq!(
            leftovers, name,
            "after {steps} step(s) only the original remains"
        );
    }
}
