//! The update steps (`snapshot`, `pull`, `replace`, `restore`, `finish`, `state`) against a real
//! Docker engine and the dev-env registry (`scripts/dev-env`).
//!
//! Every test names what it creates (containers, networks, volumes, a bind directory) with a
//! prefix unique to the test and the run, touches nothing else on the shared engine, and removes
//! everything it made afterwards, also when it fails.
//!
//! Without an engine or registry these tests FAIL with instructions; they never pass silently.

use std::collections::HashMap;
use std::time::Duration;

use safe_updater_docker::bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use safe_updater_docker::bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions,
};
use safe_updater_docker::update::{self, Phase};
use safe_updater_docker::{Check, ContainerSnapshot, Engine, HttpCheck, Monitor};

mod common;
use common::{Env, bind_dir, guarded, http_get};

async fn env() -> Env {
    common::env(&["1.0.0"]).await
}

fn prefix(test: &str) -> String {
    common::prefix("upd", test)
}

/// Retries `GET path` on the container's published 8080 until it answers (up to 15 s).
async fn get_published(engine: &Engine, container: &str, path: &str) -> (u16, String) {
    let mut last = String::new();
    for _ in 0..75 {
        let inspect = engine
            .docker()
            .inspect_container(container, None)
            .await
            .expect("inspect");
        let port = host_port(&inspect);
        if let Some(port) = port {
            match http_get(&format!("127.0.0.1:{port}"), path) {
                Ok(answer) => return answer,
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{container} never answered GET {path}: {last}");
}

fn host_port(inspect: &ContainerInspectResponse) -> Option<String> {
    inspect
        .network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get("8080/tcp")?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.clone().filter(|p| !p.is_empty()))
}

async fn create_rich(env: &Env, p: &str, tag: &str) -> String {
    let docker = env.engine.docker();
    for suffix in ["-net", "-net2"] {
        docker
            .create_network(NetworkCreateRequest {
                name: format!("{p}{suffix}"),
                ..Default::default()
            })
            .await
            .expect("create network");
    }
    let bind = bind_dir(p);
    std::fs::create_dir_all(&bind).expect("bind dir");
    std::fs::write(bind.join("hello.txt"), "from the host").expect("bind file");
    let net = format!("{p}-net");
    let body = ContainerCreateBody {
        image: Some(env.image(tag)),
        env: Some(vec!["FOO=bar".into(), "PORT=8080".into()]),
        labels: Some(
            [
                ("io.safe-updater.test".to_owned(), "update-real".to_owned()),
                ("app".to_owned(), "web".to_owned()),
            ]
            .into(),
        ),
        exposed_ports: Some(vec!["8080/tcp".into()]),
        hostname: Some("webhost".into()),
        stop_signal: Some("SIGINT".into()),
        stop_timeout: Some(7),
        working_dir: Some("/www".into()),
        host_config: Some(HostConfig {
            binds: Some(vec![
                format!("{p}-vol:/data"),
                format!("{}:/bind:ro", bind.display()),
            ]),
            tmpfs: Some([("/scratch".to_owned(), "size=1m".to_owned())].into()),
            port_bindings: Some(
                [(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )]
                .into(),
            ),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: Some(0),
            }),
            network_mode: Some(net.clone()),
            memory: Some(64 * 1024 * 1024),
            nano_cpus: Some(500_000_000),
            extra_hosts: Some(vec!["db.example:10.1.2.3".into()]),
            dns: Some(vec!["10.9.9.9".into()]),
            cap_add: Some(vec!["NET_ADMIN".into()]),
            cap_drop: Some(vec!["MKNOD".into()]),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(
                [(
                    net.clone(),
                    EndpointSettings {
                        aliases: Some(vec!["webalias".into()]),
                        ..Default::default()
                    },
                )]
                .into(),
            ),
        }),
        ..Default::default()
    };
    let name = format!("{p}-web");
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .expect("create the test container");
    docker
        .connect_network(
            &format!("{p}-net2"),
            NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec!["second".into()]),
                    ..Default::default()
                }),
            },
        )
        .await
        .expect("connect the second network");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start the test container");
    name
}

/// A plain published container from `tag` with restart policy `always`. Started.
async fn create_plain(env: &Env, p: &str, tag: &str) -> String {
    let name = format!("{p}-web");
    let docker = env.engine.docker();
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(env.image(tag)),
                env: Some(vec!["FOO=plain".into()]),
                // The graceful stop goes through Watchtower's label (kill SIGINT, then wait).
                labels: Some(
                    [(
                        "com.centurylinklabs.watchtower.stop-signal".to_owned(),
                        "SIGINT".to_owned(),
                    )]
                    .into(),
                ),
                host_config: Some(HostConfig {
                    port_bindings: Some(
                        [(
                            "8080/tcp".to_owned(),
                            Some(vec![PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some(String::new()),
                            }]),
                        )]
                        .into(),
                    ),
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::ALWAYS),
                        maximum_retry_count: Some(0),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create the test container");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start the test container");
    name
}

async fn inspect(env: &Env, name: &str) -> ContainerInspectResponse {
    env.engine
        .docker()
        .inspect_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("inspect {name}: {e}"))
}

async fn exists(env: &Env, name: &str) -> bool {
    env.engine
        .docker()
        .inspect_container(name, None)
        .await
        .is_ok()
}

/// Networks with their aliases minus the engine's automatic short-id alias.
fn networks(i: &ContainerInspectResponse) -> Vec<(String, Vec<String>)> {
    let id = i.id.clone().unwrap_or_default();
    let mut nets: Vec<(String, Vec<String>)> = i
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, e)| {
            let mut aliases: Vec<String> = e
                .aliases
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !id.starts_with(a.as_str()))
                .collect();
            aliases.sort();
            (name, aliases)
        })
        .collect();
    nets.sort();
    nets
}

/// The host is back to the snapshot: same id under the same name, same running state, same
/// configuration, same networks; no `.su-old` and no other container under the name.
async fn assert_restored(env: &Env, snap: &ContainerSnapshot) {
    let now = inspect(env, &snap.name).await;
    let then = snap.inspect().expect("snapshot inspect");
    assert_eq!(
        now.id, then.id,
        "the original container is back under its name"
    );
    assert_eq!(now.name, then.name);
    let running = |i: &ContainerInspectResponse| i.state.as_ref().and_then(|s| s.running);
    assert_eq!(
        running(&now),
        running(&then),
        "running state as in the snapshot"
    );
    assert_eq!(now.config, then.config, "Config as in the snapshot");
    assert_eq!(
        now.host_config, then.host_config,
        "HostConfig as in the snapshot"
    );
    assert_eq!(
        networks(&now),
        networks(&then),
        "networks as in the snapshot"
    );
    assert!(
        !exists(env, &snap.old_name()).await,
        "no {} left",
        snap.old_name()
    );
    let state = update::state(&env.engine, snap).await.expect("state");
    assert_eq!(state.phase(snap), Phase::Untouched, "{state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_keeps_every_setting_and_finish_removes_the_old_container() {
    let env = env().await;
    let p = prefix("keep");
    guarded(&env, &p, || async {
        let name = create_rich(&env, &p, "1.0.0").await;
        let (status, body) = get_published(&env.engine, &name, "/version").await;
        assert_eq!((status, body.as_str()), (200, "1.0.0"));

        let snap = update::snapshot(&env.engine, &name)
            .await
            .expect("snapshot");
        assert_eq!(snap.name, name);
        assert_eq!(snap.image, env.image("1.0.0"));
        assert_eq!(snap.engine, "real");
        // The snapshot survives a round trip through JSON (the store keeps it that way).
        let text = serde_json::to_string(&snap).expect("serialize");
        let snap: ContainerSnapshot = serde_json::from_str(&text).expect("deserialize");

        let new_image = env.image("1.0.1");
        let image_id = update::pull(&env.engine, &new_image, None)
            .await
            .expect("pull 1.0.1");
        assert!(image_id.starts_with("sha256:"), "{image_id}");

        let new_id = update::replace(&env.engine, &snap, &new_image, Some(Duration::from_secs(5)))
            .await
            .expect("replace");
        assert_ne!(new_id, snap.id);
        let state = update::state(&env.engine, &snap).await.expect("state");
        assert_eq!(state.phase(&snap), Phase::Started, "{state:?}");
        let old = state.old.expect("old present");
        assert_eq!(old.name, snap.old_name());
        assert!(!old.running);

        // Running replace again changes nothing (idempotent).
        let again = update::replace(&env.engine, &snap, &new_image, None)
            .await
            .expect("replace again");
        assert_eq!(again, new_id);

        let before = snap.inspect().expect("snapshot inspect");
        let after = inspect(&env, &name).await;
        assert_eq!(after.id.as_deref(), Some(new_id.as_str()));
        assert_eq!(after.name, before.name, "same name");
        let (bc, ac) = (
            before.config.clone().expect("config"),
            after.config.clone().expect("config"),
        );
        assert_eq!(ac.image.as_deref(), Some(new_image.as_str()));
        let user_env = |env: &Option<Vec<String>>| {
            let mut v: Vec<String> = env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !e.starts_with("APP_VERSION="))
                .collect();
            v.sort();
            v
        };
        assert_eq!(user_env(&ac.env), user_env(&bc.env), "env");
        assert!(
            ac.env.iter().flatten().any(|e| e == "APP_VERSION=1.0.1"),
            "the new image's env defaults apply: {:?}",
            ac.env
        );
        let user_labels = |l: &Option<HashMap<String, String>>| {
            let mut v: Vec<(String, String)> = l
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| {
                    !k.starts_with("org.opencontainers.") && !k.starts_with("org.safe-updater.dev.")
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(user_labels(&ac.labels), user_labels(&bc.labels), "labels");
        assert_eq!(
            ac.labels
                .as_ref()
                .and_then(|l| l.get("org.opencontainers.image.version")),
            Some(&"1.0.1".to_owned()),
            "the new image's labels apply"
        );
        assert_eq!(
            ac.cmd, bc.cmd,
            "cmd (the image default, same in both images)"
        );
        assert_eq!(ac.entrypoint, bc.entrypoint);
        assert_eq!(ac.hostname, bc.hostname, "hostname");
        assert_eq!(ac.hostname.as_deref(), Some("webhost"));
        assert_eq!(ac.working_dir, bc.working_dir, "working dir");
        assert_eq!(ac.user, bc.user, "user");
        assert_eq!(ac.exposed_ports, bc.exposed_ports, "exposed ports");
        assert_eq!(ac.stop_signal, bc.stop_signal, "stop signal");
        assert_eq!(ac.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(ac.stop_timeout, bc.stop_timeout, "stop timeout");
        assert_eq!(ac.healthcheck, bc.healthcheck, "healthcheck");
        assert_eq!(ac.volumes, bc.volumes, "volumes");
        // Everything in HostConfig is the same (ids and runtime paths are not in it).
        assert_eq!(after.host_config, before.host_config, "HostConfig");
        let hc = after.host_config.clone().expect("host config");
        assert_eq!(hc.memory, Some(64 * 1024 * 1024));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(networks(&after), networks(&before), "networks and aliases");
        let nets = networks(&after);
        assert_eq!(nets.len(), 2, "{nets:?}");
        assert_eq!(nets[0].0, format!("{p}-net"));
        assert!(nets[0].1.contains(&"webalias".to_owned()), "{nets:?}");
        assert_eq!(nets[1].0, format!("{p}-net2"));
        assert!(nets[1].1.contains(&"second".to_owned()), "{nets:?}");
        let mounts = |i: &ContainerInspectResponse| {
            let mut m: Vec<(String, String, bool)> = i
                .mounts
                .iter()
                .flatten()
                .map(|m| {
                    (
                        m.destination.clone().unwrap_or_default(),
                        m.name.clone().or(m.source.clone()).unwrap_or_default(),
                        m.rw.unwrap_or(false),
                    )
                })
                .collect();
            m.sort();
            m
        };
        assert_eq!(mounts(&after), mounts(&before), "mounts");

        let (status, body) = get_published(&env.engine, &name, "/version").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "1.0.1"),
            "the new version answers"
        );

        update::finish(&env.engine, &snap, false)
            .await
            .expect("finish");
        assert!(
            !exists(&env, &snap.id).await,
            "the old container is removed"
        );
        let state = update::state(&env.engine, &snap).await.expect("state");
        assert_eq!(state.phase(&snap), Phase::Finished);
        update::finish(&env.engine, &snap, false)
            .await
            .expect("finish is idempotent");
        // The new container keeps running.
        let (status, _) = get_published(&env.engine, &name, "/health").await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_is_found_unhealthy_and_restored() {
    let env = env().await;
    let p = prefix("bad");
    guarded(&env, &p, || async {
        let name = create_rich(&env, &p, "1.0.0").await;
        let _ = get_published(&env.engine, &name, "/health").await;
        let snap = update::snapshot(&env.engine, &name)
            .await
            .expect("snapshot");
        let bad = env.image("1.0.2");
        update::pull(&env.engine, &bad, None)
            .await
            .expect("pull 1.0.2");
        let new_id = update::replace(&env.engine, &snap, &bad, Some(Duration::from_secs(5)))
            .await
            .expect("replace");

        let mut http = HttpCheck::get("http://{host_ip:8080/tcp}:{host_port:8080/tcp}/health");
        http.timeout = Duration::from_secs(2);
        let m = Monitor {
            window: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            failure_threshold: 3,
            retries_backoff: safe_updater_docker::Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(1),
            },
        };
        let report = safe_updater_docker::monitor(
            &env.engine,
            &new_id,
            &[Check::Docker, Check::Http(http)],
            &m,
        )
        .await;
        assert!(!report.healthy, "{report:#?}");
        assert!(
            report
                .observations
                .iter()
                .any(|o| o.check.starts_with("http") && !o.ok && o.detail.contains("HTTP 404")),
            "{report:#?}"
        );

        update::restore(&env.engine, &snap).await.expect("restore");
        assert_restored(&env, &snap).await;
        assert!(!exists(&env, &new_id).await, "the bad container is removed");
        let (status, body) = get_published(&env.engine, &name, "/version").await;
        assert_eq!((status, body.as_str()), (200, "1.0.0"));
        // Restore again: nothing to do, still fine.
        update::restore(&env.engine, &snap)
            .await
            .expect("restore again");
        assert_restored(&env, &snap).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_every_intermediate_point() {
    let env = env().await;
    let new_image = env.image("1.0.1");
    update::pull(&env.engine, &new_image, None)
        .await
        .expect("pull 1.0.1");
    for (point, want) in [
        (1, Phase::Renamed),
        (2, Phase::Stopped),
        (3, Phase::Created),
        (4, Phase::Started),
    ] {
        let p = prefix(&format!("crash{point}"));
        let new_image = new_image.clone();
        let env = &env;
        let pp = p.clone();
        guarded(env, &p, || async move {
            let p = pp;
            let name = create_plain(env, &p, "1.0.0").await;
            let snap = update::snapshot(&env.engine, &name)
                .await
                .expect("snapshot");
            let state = update::state(&env.engine, &snap).await.expect("state");
            assert_eq!(state.phase(&snap), Phase::Untouched);

            update::step_rename(&env.engine, &snap)
                .await
                .expect("rename");
            update::step_rename(&env.engine, &snap)
                .await
                .expect("rename is idempotent");
            if point >= 2 {
                update::step_stop(&env.engine, &snap, Some(Duration::from_secs(5)))
                    .await
                    .expect("stop");
            }
            let mut new_id = None;
            if point >= 3 {
                new_id = Some(
                    update::step_create(&env.engine, &snap, &new_image)
                        .await
                        .expect("create"),
                );
            }
            if point >= 4 {
                let id = new_id.clone().expect("created");
                update::step_start(&env.engine, &snap, &id)
                    .await
                    .expect("start");
            }
            let state = update::state(&env.engine, &snap).await.expect("state");
            assert_eq!(state.phase(&snap), want, "point {point}: {state:?}");
            let old = state.old.clone().expect("old present");
            assert_eq!(old.name, snap.old_name(), "point {point}");
            assert_eq!(old.running, point < 2, "point {point}");
            match (&state.new, &new_id) {
                (Some(new), Some(id)) => {
                    assert_eq!(&new.id, id);
                    assert_eq!(new.image, new_image);
                    assert_eq!(new.running, point >= 4);
                    assert_eq!(new.restart_count, 0);
                }
                (None, None) => {}
                other => panic!("point {point}: new container {other:?}"),
            }

            update::restore(&env.engine, &snap).await.expect("restore");
            assert_restored(env, &snap).await;
            let (status, body) = get_published(&env.engine, &name, "/version").await;
            assert_eq!((status, body.as_str()), (200, "1.0.0"), "point {point}");

            // After a restore, a full replace still works from scratch.
            if point == 3 {
                let id =
                    update::replace(&env.engine, &snap, &new_image, Some(Duration::from_secs(5)))
                        .await
                        .expect("replace after restore");
                let (_, body) = get_published(&env.engine, &name, "/version").await;
                assert_eq!(body, "1.0.1");
                update::restore(&env.engine, &snap).await.expect("restore");
                assert_restored(env, &snap).await;
                assert!(!exists(env, &id).await);
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replace_continues_and_a_missing_old_container_is_recreated() {
    let env = env().await;
    let p = prefix("resume");
    let new_image = env.image("1.0.1");
    update::pull(&env.engine, &new_image, None)
        .await
        .expect("pull 1.0.1");
    guarded(&env, &p, || async {
        let name = create_plain(&env, &p, "1.0.0").await;
        let snap = update::snapshot(&env.engine, &name)
            .await
            .expect("snapshot");
        // Crash after create: replace again finishes the job.
        update::step_rename(&env.engine, &snap)
            .await
            .expect("rename");
        update::step_stop(&env.engine, &snap, Some(Duration::from_secs(5)))
            .await
            .expect("stop");
        let created = update::step_create(&env.engine, &snap, &new_image)
            .await
            .expect("create");
        let id = update::replace(&env.engine, &snap, &new_image, None)
            .await
            .expect("replace resumes");
        assert_ne!(
            id, created,
            "a created-but-not-started container is made again"
        );
        let (_, body) = get_published(&env.engine, &name, "/version").await;
        assert_eq!(body, "1.0.1");

        // The old container vanishes (someone removed it): restore recreates it from the
        // snapshot with the old image.
        env.engine
            .docker()
            .remove_container(
                &snap.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .expect("remove the old container");
        update::restore(&env.engine, &snap).await.expect("restore");
        let now = inspect(&env, &name).await;
        assert_ne!(now.id, Some(id.clone()));
        assert_eq!(
            now.config.as_ref().and_then(|c| c.image.clone()),
            Some(env.image("1.0.0"))
        );
        assert_eq!(
            now.host_config,
            snap.inspect().expect("inspect").host_config
        );
        let (_, body) = get_published(&env.engine, &name, "/version").await;
        assert_eq!(body, "1.0.0");
    })
    .await;
}

/// A process killed while the engine removed the new container leaves the engine removing
/// it: the next restore meets `409 removal ... already in progress` (or a container in state
/// `removing`) and waits it out instead of giving up with no container holding the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_waits_out_a_removal_already_in_progress() {
    let env = env().await;
    let new_image = env.image("1.0.1");
    update::pull(&env.engine, &new_image, None)
        .await
        .expect("pull 1.0.1");
    for round in 0..3 {
        let p = prefix(&format!("removing{round}"));
        let new_image = new_image.clone();
        let env = &env;
        let pp = p.clone();
        guarded(env, &p, || async move {
            let name = create_plain(env, &pp, "1.0.0").await;
            let snap = update::snapshot(&env.engine, &name)
                .await
                .expect("snapshot");
            let new_id =
                update::replace(&env.engine, &snap, &new_image, Some(Duration::from_secs(5)))
                    .await
                    .expect("replace");
            // Another client starts removing the new container and does not wait for it.
            let docker = env.engine.docker().clone();
            let id = new_id.clone();
            let removal = tokio::spawn(async move {
                docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: false,
                            link: false,
                        }),
                    )
                    .await
            });
            // Spread the restore over the removal's lifetime.
            tokio::time::sleep(Duration::from_millis(round * 15)).await;
            update::restore(&env.engine, &snap)
                .await
                .expect("the restore waits for the removal in progress");
            let _ = removal.await;
            assert_restored(env, &snap).await;
            assert!(!exists(env, &new_id).await);
        })
        .await;
    }
}
