//! The Docker executor's steps: [`snapshot`] a container, [`pull`] the new image, [`replace`]
//! the container by one with identical configuration and only the image changed, [`restore`]
//! the snapshot from any intermediate state, [`finish`] by removing the old container, and
//! [`state`] to see where an interrupted update stands.
//!
//! Every step is idempotent and safe to crash after: the old container is never removed before
//! [`finish`], only renamed to `<name>.su-old` and stopped, so [`restore`] can always bring the
//! host back to the snapshot (same container id, name, configuration and running state).
//!
//! This module changes containers only when told to; it must not decide whether to update,
//! judge health (that is [`crate::health`]), retry, or record anything (the engine does, before
//! calling these steps). Registry credentials are passed through to the engine and never logged.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerUpdateBody, EndpointSettings,
    HealthStatusEnum, HostConfig, ImageConfig, NetworkConnectRequest, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, RemoveContainerOptions,
    RemoveImageOptions, RenameContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;

/// The suffix of the old container's name while an update is in progress.
pub const OLD_SUFFIX: &str = ".su-old";

/// Watchtower's label naming the signal that stops a container gracefully.
pub const WATCHTOWER_STOP_SIGNAL_LABEL: &str = "com.centurylinklabs.watchtower.stop-signal";

/// How long a stop waits when neither the caller nor the container says (Docker's default).
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to bring a container back: taken before anything changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ContainerSnapshot {
    /// The engine's name (as in its [`EngineSpec`](crate::EngineSpec)).
    pub engine: String,
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The container's full id.
    pub id: String,
    /// The image reference the container was created from (`Config.Image`).
    pub image: String,
    /// The full `ContainerInspectResponse` as the engine answered it.
    pub inspect: serde_json::Value,
}

impl ContainerSnapshot {
    /// The inspect data, typed.
    pub fn inspect(&self) -> Result<ContainerInspectResponse, serde_json::Error> {
        serde_json::from_value(self.inspect.clone())
    }

    /// The name the old container carries during an update.
    pub fn old_name(&self) -> String {
        format!("{}{OLD_SUFFIX}", self.name)
    }
}

/// Credentials for a registry, sent to the engine as `X-Registry-Auth`. Debug output hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The step of an update that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStep {
    Inspect,
    InspectImage {
        image: String,
    },
    Pull {
        image: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Stop,
    SetRestartPolicy,
    Create {
        image: String,
    },
    ConnectNetwork {
        network: String,
    },
    Start,
    Remove {
        id: String,
    },
    RemoveImage {
        image: String,
    },
    /// Reading the snapshot back.
    Snapshot,
}

impl fmt::Display for UpdateStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateStep::Inspect => f.write_str("inspect"),
            UpdateStep::InspectImage { image } => write!(f, "inspect image {image}"),
            UpdateStep::Pull { image } => write!(f, "pull {image}"),
            UpdateStep::Rename { from, to } => write!(f, "rename {from} to {to}"),
            UpdateStep::Stop => f.write_str("stop"),
            UpdateStep::SetRestartPolicy => f.write_str("set the restart policy"),
            UpdateStep::Create { image } => write!(f, "create from {image}"),
            UpdateStep::ConnectNetwork { network } => write!(f, "connect network {network}"),
            UpdateStep::Start => f.write_str("start"),
            UpdateStep::Remove { id } => write!(f, "remove container {id}"),
            UpdateStep::RemoveImage { image } => write!(f, "remove image {image}"),
            UpdateStep::Snapshot => f.write_str("read the snapshot"),
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateCause {
    /// The engine refused or failed the request.
    #[error("{0}")]
    Engine(#[source] Box<bollard::errors::Error>),
    /// The engine did not answer within the engine's request timeout.
    #[error("the engine did not answer within the request timeout")]
    Timeout,
    /// The host is in a state the step must not touch (an unknown container holds a name).
    #[error("{0}")]
    Conflict(String),
    /// Something the step needs does not exist.
    #[error("{0}")]
    Missing(String),
    /// The engine's or the snapshot's data cannot be used.
    #[error("{0}")]
    Malformed(String),
}

/// A failed update step, naming the engine, the container and the step.
#[derive(Debug, thiserror::Error)]
#[error("Docker engine {engine:?} at {host}: container {container:?}: cannot {step}: {cause}")]
pub struct UpdateError {
    pub engine: String,
    pub host: String,
    pub container: String,
    /// Boxed to keep the `Result`s small.
    pub step: Box<UpdateStep>,
    #[source]
    pub cause: UpdateCause,
}

impl UpdateError {
    /// Whether the engine answered 404 (the object does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(&self.cause, UpdateCause::Engine(e) if is_404(e))
    }
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_304(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The engine and container a step is about, to build errors.
struct Ctx<'a> {
    engine: &'a Engine,
    container: &'a str,
}

impl Ctx<'_> {
    fn err(&self, step: UpdateStep, cause: UpdateCause) -> UpdateError {
        UpdateError {
            engine: self.engine.name().to_owned(),
            host: self.engine.spec().host.clone(),
            container: self.container.to_owned(),
            step: Box::new(step),
            cause,
        }
    }

    fn engine_err(&self, step: UpdateStep, e: bollard::errors::Error) -> UpdateError {
        let cause = match e {
            bollard::errors::Error::RequestTimeoutError => UpdateCause::Timeout,
            other => UpdateCause::Engine(Box::new(other)),
        };
        self.err(step, cause)
    }

    /// [`Ctx::find`], after waiting out a removal the engine has in progress for it (a
    /// process killed while it removed a container leaves the engine removing it): such a
    /// container is about to be gone, and must be treated as gone.
    async fn find_settled(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, UpdateError> {
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
        loop {
            let found = self.find(name).await?;
            let removing = found.as_ref().is_some_and(|c| {
                c.state.as_ref().and_then(|s| s.status)
                    == Some(bollard::models::ContainerStateStatusEnum::REMOVING)
            });
            if !removing || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The container called exactly `name` (not an id prefix), if there is one.
    async fn find(&self, name: &str) -> Result<Option<ContainerInspectResponse>, UpdateError> {
        match self.engine.docker().inspect_container(name, None).await {
            Ok(c) => {
                let same_name = c.name.as_deref().map(|n| n.trim_start_matches('/')) == Some(name);
                let same_id = c.id.as_deref() == Some(name);
                Ok((same_name || same_id).then_some(c))
            }
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(self.engine_err(UpdateStep::Inspect, e)),
        }
    }
}

fn id_of(c: &ContainerInspectResponse) -> &str {
    c.id.as_deref().unwrap_or_default()
}

fn running(c: &ContainerInspectResponse) -> bool {
    c.state
        .as_ref()
        .is_some_and(|s| s.running == Some(true) || s.restarting == Some(true))
}

fn snapshot_inspect(
    ctx: &Ctx<'_>,
    snap: &ContainerSnapshot,
) -> Result<ContainerInspectResponse, UpdateError> {
    snap.inspect()
        .map_err(|e| ctx.err(UpdateStep::Snapshot, UpdateCause::Malformed(e.to_string())))
}

/// Inspects the container `name` and keeps everything needed to restore it.
pub async fn snapshot(engine: &Engine, name: &str) -> Result<ContainerSnapshot, UpdateError> {
    let ctx = Ctx {
        engine,
        container: name,
    };
    let Some(inspect) = ctx.find(name).await? else {
        return Err(ctx.err(
            UpdateStep::Inspect,
            UpdateCause::Missing(format!("no container is named {name}")),
        ));
    };
    let malformed = |m: &str| ctx.err(UpdateStep::Inspect, UpdateCause::Malformed(m.to_owned()));
    let id = inspect
        .id
        .clone()
        .ok_or_else(|| malformed("the engine reported no id"))?;
    let image = inspect
        .config
        .as_ref()
        .and_then(|c| c.image.clone())
        .ok_or_else(|| malformed("the engine reported no Config.Image"))?;
    let value = serde_json::to_value(&inspect).map_err(|e| malformed(&e.to_string()))?;
    Ok(ContainerSnapshot {
        engine: engine.name().to_owned(),
        name: inspect
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| name.to_owned()),
        id,
        image,
        inspect: value,
    })
}

/// Splits `repo:tag` / `repo@digest` into what `POST /images/create` wants.
fn split_reference(image: &str) -> (String, Option<String>) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_owned(), Some(digest.to_owned()));
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), Some(tag.to_owned())),
        _ => (image.to_owned(), Some("latest".to_owned())),
    }
}

/// The registry host of a reference, for the credentials' `serveraddress`.
fn registry_of(repo: &str) -> String {
    match repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "https://index.docker.io/v1/".to_owned(),
    }
}

/// Pulls `image` (`repo:tag` or `repo@digest`) and returns the local image id.
pub async fn pull(
    engine: &Engine,
    image: &str,
    auth: Option<RegistryAuth>,
) -> Result<String, UpdateError> {
    let ctx = Ctx {
        engine,
        container: "",
    };
    let step = || UpdateStep::Pull {
        image: image.to_owned(),
    };
    let (repo, tag) = split_reference(image);
    let credentials = auth.map(|a| DockerCredentials {
        username: Some(a.username),
        password: Some(a.password),
        serveraddress: Some(registry_of(&repo)),
        ..Default::default()
    });
    let mut progress = engine.docker().create_image(
        Some(CreateImageOptions {
            from_image: Some(repo),
            tag,
            ..Default::default()
        }),
        None,
        credentials,
    );
    while let Some(item) = progress.next().await {
        if let Err(e) = item {
            return Err(ctx.engine_err(step(), e));
        }
    }
    let inspect = engine.docker().inspect_image(image).await.map_err(|e| {
        ctx.engine_err(
            UpdateStep::InspectImage {
                image: image.to_owned(),
            },
            e,
        )
    })?;
    inspect.id.ok_or_else(|| {
        ctx.err(
            step(),
            UpdateCause::Malformed("the pulled image has no id".to_owned()),
        )
    })
}

/// Replaces the snapshot's container by one from `new_image` with the same configuration:
/// rename the old one to `<name>.su-old`, stop it, create `<name>`, start it. Returns the new
/// container's id. Run again after a crash, it continues where the last run stopped.
pub async fn replace(
    engine: &Engine,
    snap: &ContainerSnapshot,
    new_image: &str,
    stop_timeout: Option<Duration>,
) -> Result<String, UpdateError> {
    step_rename(engine, snap).await?;
    step_stop(engine, snap, stop_timeout).await?;
    let id = step_create(engine, snap, new_image).await?;
    step_start(engine, snap, &id).await?;
    Ok(id)
}

/// Step 1 of [`replace`]: `<name>` → `<name>.su-old`. Idempotent.
pub async fn step_rename(engine: &Engine, snap: &ContainerSnapshot) -> Result<(), UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    let old_name = snap.old_name();
    if let Some(held) = ctx.find(&old_name).await? {
        if id_of(&held) == snap.id {
            return Ok(());
        }
        return Err(ctx.err(
            UpdateStep::Rename {
                from: snap.name.clone(),
                to: old_name.clone(),
            },
            UpdateCause::Conflict(format!(
                "another container ({}) is already named {old_name}: a previous update was not \
                 finished; restore or finish it first",
                id_of(&held)
            )),
        ));
    }
    let Some(current) = ctx.find(&snap.id).await? else {
        return Err(ctx.err(
            UpdateStep::Rename {
                from: snap.name.clone(),
                to: old_name,
            },
            UpdateCause::Missing(format!("the snapshot's container {} is gone", snap.id)),
        ));
    };
    let current_name = current
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    engine
        .docker()
        .rename_container(
            &snap.id,
            RenameContainerOptions {
                name: old_name.clone(),
            },
        )
        .await
        .map_err(|e| {
            ctx.engine_err(
                UpdateStep::Rename {
                    from: current_name,
                    to: old_name,
                },
                e,
            )
        })
}

/// The signal that stops the container gracefully when it differs from the container's own
/// `StopSignal` (which `docker stop` already honours): Watchtower's label.
fn label_stop_signal(inspect: &ContainerInspectResponse) -> Option<String> {
    inspect
        .config
        .as_ref()?
        .labels
        .as_ref()?
        .get(WATCHTOWER_STOP_SIGNAL_LABEL)
        .filter(|s| !s.trim().is_empty())
        .cloned()
}

/// Step 2 of [`replace`]: stop the old container gracefully and keep its restart policy from
/// starting it again (a daemon restart would otherwise bring back `always` containers).
pub async fn step_stop(
    engine: &Engine,
    snap: &ContainerSnapshot,
    stop_timeout: Option<Duration>,
) -> Result<(), UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    let Some(current) = ctx.find(&snap.id).await? else {
        return Err(ctx.err(
            UpdateStep::Stop,
            UpdateCause::Missing(format!("the snapshot's container {} is gone", snap.id)),
        ));
    };
    // Keep the daemon from starting the old container again while it is set aside.
    let policy = current
        .host_config
        .as_ref()
        .and_then(|h| h.restart_policy.as_ref())
        .and_then(|p| p.name);
    if matches!(
        policy,
        Some(
            RestartPolicyNameEnum::ALWAYS
                | RestartPolicyNameEnum::UNLESS_STOPPED
                | RestartPolicyNameEnum::ON_FAILURE
        )
    ) {
        set_restart_policy(
            &ctx,
            &snap.id,
            RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: Some(0),
            },
        )
        .await?;
    }
    if !running(&current) {
        return Ok(());
    }
    let timeout = stop_timeout
        .or_else(|| {
            current
                .config
                .as_ref()
                .and_then(|c| c.stop_timeout)
                .and_then(|t| u64::try_from(t).ok())
                .map(Duration::from_secs)
        })
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
    if let Some(signal) = label_stop_signal(&current) {
        match engine
            .docker()
            .kill_container(
                &snap.id,
                Some(KillContainerOptions {
                    signal: signal.clone(),
                }),
            )
            .await
        {
            Ok(()) => {}
            // 409: not running any more.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => return Ok(()),
            Err(e) => return Err(ctx.engine_err(UpdateStep::Stop, e)),
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            match ctx.find(&snap.id).await? {
                Some(c) if running(&c) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => return Ok(()),
            }
        }
    }
    let result = engine
        .docker()
        .stop_container(
            &snap.id,
            Some(StopContainerOptions {
                signal: None,
                t: Some(secs),
            }),
        )
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if is_304(&e) => Ok(()),
        Err(e) => Err(ctx.engine_err(UpdateStep::Stop, e)),
    }
}

async fn set_restart_policy(
    ctx: &Ctx<'_>,
    id: &str,
    policy: RestartPolicy,
) -> Result<(), UpdateError> {
    ctx.engine
        .docker()
        .update_container(
            id,
            ContainerUpdateBody {
                restart_policy: Some(policy),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ctx.engine_err(UpdateStep::SetRestartPolicy, e))
}

/// Step 3 of [`replace`]: create `<name>` from `new_image` with the snapshot's configuration
/// and connect its extra networks. A container already named `<name>` that is not the old one
/// is the product of an earlier, interrupted run: kept if it runs `new_image` and is running,
/// else removed and created again. Returns the new container's id.
pub async fn step_create(
    engine: &Engine,
    snap: &ContainerSnapshot,
    new_image: &str,
) -> Result<String, UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    let inspect = snapshot_inspect(&ctx, snap)?;
    if let Some(existing) = ctx.find(&snap.name).await? {
        if id_of(&existing) == snap.id {
            return Err(ctx.err(
                UpdateStep::Create {
                    image: new_image.to_owned(),
                },
                UpdateCause::Conflict(format!(
                    "the old container still carries the name {}; rename it first",
                    snap.name
                )),
            ));
        }
        let image = existing.config.as_ref().and_then(|c| c.image.as_deref());
        if image == Some(new_image) && running(&existing) {
            return Ok(id_of(&existing).to_owned());
        }
        remove_container(&ctx, id_of(&existing)).await?;
    }
    let old_image = old_image_config(&ctx, &inspect).await?;
    create_from(&ctx, &inspect, old_image.as_ref(), new_image, &snap.name).await
}

/// The configuration of the image the snapshot's container runs (by id, so a moved tag does
/// not matter). Present while the old container exists, since Docker keeps images in use.
async fn old_image_config(
    ctx: &Ctx<'_>,
    inspect: &ContainerInspectResponse,
) -> Result<Option<ImageConfig>, UpdateError> {
    let Some(image_id) = inspect.image.as_deref() else {
        return Ok(None);
    };
    match ctx.engine.docker().inspect_image(image_id).await {
        Ok(image) => Ok(image.config),
        Err(e) if is_404(&e) => Ok(None),
        Err(e) => Err(ctx.engine_err(
            UpdateStep::InspectImage {
                image: image_id.to_owned(),
            },
            e,
        )),
    }
}

async fn create_from(
    ctx: &Ctx<'_>,
    inspect: &ContainerInspectResponse,
    old_image: Option<&ImageConfig>,
    image: &str,
    name: &str,
) -> Result<String, UpdateError> {
    let plan = create_plan(inspect, old_image, image);
    let step = || UpdateStep::Create {
        image: image.to_owned(),
    };
    let created = ctx
        .engine
        .docker()
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            plan.body,
        )
        .await
        .map_err(|e| ctx.engine_err(step(), e))?;
    for (network, endpoint) in plan.connect_after {
        let result = ctx
            .engine
            .docker()
            .connect_network(
                &network,
                NetworkConnectRequest {
                    container: created.id.clone(),
                    endpoint_config: Some(endpoint),
                },
            )
            .await;
        if let Err(e) = result {
            // Leave nothing half-made behind: the next run creates it again.
            let _ = remove_container(ctx, &created.id).await;
            return Err(ctx.engine_err(UpdateStep::ConnectNetwork { network }, e));
        }
    }
    Ok(created.id)
}

/// What to create: the body of `POST /containers/create` and the networks to connect after.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    pub body: ContainerCreateBody,
    pub connect_after: Vec<(String, EndpointSettings)>,
}

/// The creation request that reproduces `inspect` with `image` instead of its image. Settings
/// equal to the old image's defaults (cmd, entrypoint, env entries, labels, exposed ports,
/// volumes, working dir, user, healthcheck, stop signal) are left unset, so the new image's
/// defaults apply, as Watchtower does. Pure.
pub fn create_plan(
    inspect: &ContainerInspectResponse,
    old_image: Option<&ImageConfig>,
    image: &str,
) -> CreatePlan {
    let config = inspect.config.clone().unwrap_or_default();
    let empty = ImageConfig::default();
    let img = old_image.unwrap_or(&empty);
    let id = inspect.id.as_deref().unwrap_or_default();
    let short_id = id.get(..12).unwrap_or(id);

    let entrypoint_inherited = config.entrypoint == img.entrypoint
        || (is_empty_vec(&config.entrypoint) && is_empty_vec(&img.entrypoint));
    let entrypoint = if entrypoint_inherited {
        None
    } else {
        config.entrypoint.clone()
    };
    // With an entrypoint of its own, Docker does not take the image's cmd, so whatever cmd
    // the container has was given explicitly.
    let cmd = if entrypoint_inherited && config.cmd == img.cmd {
        None
    } else {
        config.cmd.clone()
    };
    let env = subtract_vec(config.env.clone(), img.env.as_ref());
    let exposed_ports = subtract_vec(config.exposed_ports.clone(), img.exposed_ports.as_ref());
    let volumes = subtract_vec(config.volumes.clone(), img.volumes.as_ref());
    let labels = config.labels.clone().map(|mut labels| {
        if let Some(image_labels) = &img.labels {
            labels.retain(|k, v| image_labels.get(k) != Some(v));
        }
        labels
    });
    let unless_equal = |mine: &Option<String>, theirs: &Option<String>| {
        if mine == theirs || mine.as_deref().unwrap_or_default().is_empty() {
            None
        } else {
            mine.clone()
        }
    };
    let healthcheck = if config.healthcheck == img.healthcheck {
        None
    } else {
        config.healthcheck.clone()
    };
    // Docker sets the hostname to the short id when none is given.
    let hostname = config
        .hostname
        .clone()
        .filter(|h| !h.is_empty() && !id.starts_with(h.as_str()));

    let mut host_config = inspect.host_config.clone().unwrap_or_default();
    // Recomputed by the daemon from `security_opt`; passing the old defaults adds nothing.
    host_config.masked_paths = None;
    host_config.readonly_paths = None;
    // Inspect shows links as `/other:/name/alias`; create wants `other:alias`.
    host_config.links = host_config.links.map(|links| {
        links
            .into_iter()
            .map(|l| match l.split_once(':') {
                Some((target, alias)) => format!(
                    "{}:{}",
                    target.trim_start_matches('/'),
                    alias.rsplit('/').next().unwrap_or(alias)
                ),
                None => l,
            })
            .collect()
    });
    keep_anonymous_volumes(inspect, &mut host_config);

    let (networking_config, connect_after) = networks(inspect, &host_config, short_id);

    let body = ContainerCreateBody {
        hostname,
        domainname: config.domainname.clone().filter(|d| !d.is_empty()),
        user: unless_equal(&config.user, &img.user),
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env,
        cmd,
        healthcheck,
        args_escaped: None,
        image: Some(image.to_owned()),
        volumes,
        working_dir: unless_equal(&config.working_dir, &img.working_dir),
        entrypoint,
        network_disabled: config.network_disabled,
        on_build: None,
        labels,
        stop_signal: unless_equal(&config.stop_signal, &img.stop_signal),
        stop_timeout: config.stop_timeout,
        shell: if config.shell == img.shell {
            None
        } else {
            config.shell.clone()
        },
        host_config: Some(host_config),
        networking_config,
    };
    CreatePlan {
        body,
        connect_after,
    }
}

fn is_empty_vec(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// `mine` without the entries also in `theirs`; none when nothing is left.
fn subtract_vec(mine: Option<Vec<String>>, theirs: Option<&Vec<String>>) -> Option<Vec<String>> {
    let mine = mine?;
    let theirs: HashSet<&String> = theirs.into_iter().flatten().collect();
    let left: Vec<String> = mine.into_iter().filter(|e| !theirs.contains(e)).collect();
    (!left.is_empty()).then_some(left)
}

/// Anonymous volumes (an image `VOLUME` or `-v /path`) would be new and empty in the new
/// container; they are bound by name instead, so the data stays.
fn keep_anonymous_volumes(inspect: &ContainerInspectResponse, host_config: &mut HostConfig) {
    let mut covered: HashSet<String> = HashSet::new();
    for bind in host_config.binds.iter().flatten() {
        let mut parts = bind.split(':');
        let first = parts.next().unwrap_or_default();
        let dest = parts.next().unwrap_or(first);
        covered.insert(dest.to_owned());
    }
    for mount in host_config.mounts.iter().flatten() {
        if let Some(target) = &mount.target {
            covered.insert(target.clone());
        }
    }
    for dest in host_config.tmpfs.iter().flat_map(HashMap::keys) {
        covered.insert(dest.clone());
    }
    for mount in inspect.mounts.iter().flatten() {
        let is_volume = mount
            .typ
            .as_ref()
            .is_some_and(|t| serde_json::to_value(t).ok() == Some(serde_json::json!("volume")));
        let (Some(name), Some(dest)) = (&mount.name, &mount.destination) else {
            continue;
        };
        if !is_volume || covered.contains(dest) {
            continue;
        }
        let mode = if mount.rw == Some(false) { ":ro" } else { "" };
        host_config
            .binds
            .get_or_insert_with(Vec::new)
            .push(format!("{name}:{dest}{mode}"));
    }
}

/// The endpoint of the primary network (given at create) and the others (connected after:
/// engines before API 1.44 accept one endpoint at create). Ids, addresses and the automatic
/// short-id alias are left out; static addresses (IPAM config), aliases, links and driver
/// options are kept.
fn networks(
    inspect: &ContainerInspectResponse,
    host_config: &HostConfig,
    short_id: &str,
) -> (Option<NetworkingConfig>, Vec<(String, EndpointSettings)>) {
    let Some(nets) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
    else {
        return (None, Vec::new());
    };
    let mode = host_config.network_mode.as_deref().unwrap_or("default");
    if mode == "host" || mode == "none" || mode.starts_with("container:") {
        return (None, Vec::new());
    }
    let primary = if mode == "default" { "bridge" } else { mode };
    let mut names: Vec<&String> = nets.keys().collect();
    names.sort();
    let mut first = None;
    let mut after = Vec::new();
    for name in names {
        let e = &nets[name];
        let endpoint = EndpointSettings {
            ipam_config: e.ipam_config.clone(),
            links: e.links.clone(),
            aliases: e.aliases.clone().map(|a| {
                a.into_iter()
                    .filter(|alias| alias != short_id)
                    .collect::<Vec<_>>()
            }),
            driver_opts: e.driver_opts.clone(),
            ..Default::default()
        };
        if name == primary {
            first = Some((name.clone(), endpoint));
        } else {
            after.push((name.clone(), endpoint));
        }
    }
    let networking_config = first.map(|(name, endpoint)| NetworkingConfig {
        endpoints_config: Some([(name, endpoint)].into_iter().collect()),
    });
    (networking_config, after)
}

/// Step 4 of [`replace`]: start the new container. Idempotent.
pub async fn step_start(
    engine: &Engine,
    snap: &ContainerSnapshot,
    new_id: &str,
) -> Result<(), UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    match engine.docker().start_container(new_id, None).await {
        Ok(()) => Ok(()),
        Err(e) if is_304(&e) => Ok(()),
        Err(e) => Err(ctx.engine_err(UpdateStep::Start, e)),
    }
}

/// Whether the engine refused because another operation on the object is still running
/// ("removal of container ... is already in progress"): what a process killed mid-request
/// leaves behind, and what waiting resolves.
fn is_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } if message.contains("in progress")
    )
}

/// How long an operation the engine has in progress is waited out.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(60);

async fn remove_container(ctx: &Ctx<'_>, id: &str) -> Result<(), UpdateError> {
    let step = || UpdateStep::Remove { id: id.to_owned() };
    match ctx
        .engine
        .docker()
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: false,
                link: false,
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_404(&e) => Ok(()),
        Err(e) if is_in_progress(&e) => {
            // Another removal (of a process that was killed while it waited for it) is under
            // way: its end is what this one wanted.
            let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
            while ctx.find(id).await?.is_some() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ctx.err(
                        step(),
                        UpdateCause::Conflict(format!(
                            "the engine has been removing container {id} for more than {}s; \
                             check `docker inspect {id}` and the engine's log",
                            IN_PROGRESS_WAIT.as_secs()
                        )),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(())
        }
        Err(e) => Err(ctx.engine_err(step(), e)),
    }
}

/// Brings the host back to the snapshot from any state [`replace`] may have left: removes a
/// container named `<name>` that is not the snapshot's, gives the old container its name and
/// restart policy back, and starts it if it was running. If the old container is gone (it
/// should never be), creates it again from the snapshot with the old image.
pub async fn restore(engine: &Engine, snap: &ContainerSnapshot) -> Result<(), UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    let inspect = snapshot_inspect(&ctx, snap)?;
    if let Some(holder) = ctx.find_settled(&snap.name).await?
        && id_of(&holder) != snap.id
    {
        remove_container(&ctx, id_of(&holder)).await?;
    }
    let target_id = match ctx.find_settled(&snap.id).await? {
        Some(old) => {
            let name = old
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            if name != snap.name {
                engine
                    .docker()
                    .rename_container(
                        &snap.id,
                        RenameContainerOptions {
                            name: snap.name.clone(),
                        },
                    )
                    .await
                    .map_err(|e| {
                        ctx.engine_err(
                            UpdateStep::Rename {
                                from: name,
                                to: snap.name.clone(),
                            },
                            e,
                        )
                    })?;
            }
            let policy = inspect
                .host_config
                .as_ref()
                .and_then(|h| h.restart_policy.clone());
            let now = old
                .host_config
                .as_ref()
                .and_then(|h| h.restart_policy.clone());
            if let Some(policy) = policy
                && Some(&policy) != now.as_ref()
            {
                set_restart_policy(&ctx, &snap.id, policy).await?;
            }
            snap.id.clone()
        }
        None => {
            tracing::warn!(engine = %engine.name(), container = %snap.name, id = %snap.id,
                "the old container is gone; creating it again from the snapshot");
            let image = recreate_image(&ctx, &inspect, snap).await?;
            let old_image = old_image_config(&ctx, &inspect).await?;
            create_from(&ctx, &inspect, old_image.as_ref(), &image, &snap.name).await?
        }
    };
    let was_running = running(&inspect);
    let current = ctx.find(&target_id).await?;
    let is_running = current.as_ref().is_some_and(running);
    if was_running && !is_running {
        step_start(engine, snap, &target_id).await?;
    } else if !was_running && is_running {
        engine
            .docker()
            .stop_container(&target_id, None::<StopContainerOptions>)
            .await
            .or_else(|e| if is_304(&e) { Ok(()) } else { Err(e) })
            .map_err(|e| ctx.engine_err(UpdateStep::Stop, e))?;
    }
    Ok(())
}

/// The reference to recreate the old container from: its own reference while that still
/// names the old image, else the old image's id.
async fn recreate_image(
    ctx: &Ctx<'_>,
    inspect: &ContainerInspectResponse,
    snap: &ContainerSnapshot,
) -> Result<String, UpdateError> {
    let old_id = inspect.image.clone().unwrap_or_default();
    match ctx.engine.docker().inspect_image(&snap.image).await {
        Ok(i) if i.id.as_deref() == Some(old_id.as_str()) || old_id.is_empty() => {
            Ok(snap.image.clone())
        }
        Ok(_) => Ok(old_id),
        Err(e) if is_404(&e) && !old_id.is_empty() => Ok(old_id),
        Err(e) => Err(ctx.engine_err(
            UpdateStep::InspectImage {
                image: snap.image.clone(),
            },
            e,
        )),
    }
}

/// Ends a successful update: removes `<name>.su-old` (the snapshot's container) and, when
/// asked, the old image if no container uses it any more. Idempotent.
pub async fn finish(
    engine: &Engine,
    snap: &ContainerSnapshot,
    remove_old_image: bool,
) -> Result<(), UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    let inspect = snapshot_inspect(&ctx, snap)?;
    if let Some(old) = ctx.find(&snap.id).await? {
        let name = old
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/');
        if name == snap.name {
            return Err(ctx.err(
                UpdateStep::Remove {
                    id: snap.id.clone(),
                },
                UpdateCause::Conflict(format!(
                    "the old container still carries the name {name}: the update did not \
                     replace it, so it is not removed"
                )),
            ));
        }
        remove_container(&ctx, &snap.id).await?;
    }
    if remove_old_image && let Some(image_id) = inspect.image.as_deref() {
        let in_use = engine
            .docker()
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some([("ancestor".to_owned(), vec![image_id.to_owned()])].into()),
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                ctx.engine_err(
                    UpdateStep::RemoveImage {
                        image: image_id.to_owned(),
                    },
                    e,
                )
            })?;
        if in_use.is_empty() {
            match engine
                .docker()
                .remove_image(image_id, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_) => {}
                // 404: gone already; 409: still used or referenced (another tag's container).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => {}
                Err(e) => {
                    return Err(ctx.engine_err(
                        UpdateStep::RemoveImage {
                            image: image_id.to_owned(),
                        },
                        e,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The old container as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldState {
    pub id: String,
    /// Its current name: the snapshot's, or `<name>.su-old`.
    pub name: String,
    pub running: bool,
}

/// The container named `<name>` that is not the old one (the replacement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewState {
    pub id: String,
    /// Its image reference (`Config.Image`).
    pub image: String,
    pub running: bool,
    /// `starting`, `healthy`, `unhealthy`; none without a HEALTHCHECK.
    pub health: Option<String>,
    pub restart_count: i64,
}

/// Where an update stands, read from the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    pub old: Option<OldState>,
    pub new: Option<NewState>,
}

/// How far [`replace`] got, as far as the engine shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The old container has its name; nothing was replaced.
    Untouched,
    /// The old container is renamed and still running.
    Renamed,
    /// The old container is renamed and stopped; no new container yet.
    Stopped,
    /// The new container exists but is not running.
    Created,
    /// The new container is running (health unknown here).
    Started,
    /// The old container is gone and the new one exists: finished.
    Finished,
    /// Neither exists.
    Missing,
}

impl UpdateState {
    /// The phase these facts show.
    pub fn phase(&self, snap: &ContainerSnapshot) -> Phase {
        match (&self.old, &self.new) {
            (None, None) => Phase::Missing,
            (None, Some(_)) => Phase::Finished,
            (Some(_), Some(new)) if new.running => Phase::Started,
            (Some(_), Some(_)) => Phase::Created,
            (Some(old), None) if old.name == snap.name => Phase::Untouched,
            (Some(old), None) if old.running => Phase::Renamed,
            (Some(_), None) => Phase::Stopped,
        }
    }
}

/// Reads what exists now, for crash recovery: the snapshot's container (by id, whatever its
/// name) and a container named `<name>` that is a different one.
pub async fn state(engine: &Engine, snap: &ContainerSnapshot) -> Result<UpdateState, UpdateError> {
    let ctx = Ctx {
        engine,
        container: &snap.name,
    };
    let old = ctx.find(&snap.id).await?.map(|c| OldState {
        id: snap.id.clone(),
        name: c
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        running: running(&c),
    });
    let new = ctx
        .find(&snap.name)
        .await?
        .filter(|c| id_of(c) != snap.id)
        .map(|c| NewState {
            id: id_of(&c).to_owned(),
            image: c
                .config
                .as_ref()
                .and_then(|cfg| cfg.image.clone())
                .unwrap_or_default(),
            running: running(&c),
            health: c
                .state
                .as_ref()
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status)
                .and_then(|s| match s {
                    HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
                    other => Some(other.to_string()),
                }),
            restart_count: c.restart_count.unwrap_or(0),
        });
    Ok(UpdateState { old, new })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_for_the_pull() {
        assert_eq!(
            split_reference("127.0.0.1:5001/demo/web:1.0.1"),
            ("127.0.0.1:5001/demo/web".into(), Some("1.0.1".into()))
        );
        assert_eq!(
            split_reference("127.0.0.1:5001/demo/web"),
            ("127.0.0.1:5001/demo/web".into(), Some("latest".into()))
        );
        assert_eq!(
            split_reference("nginx@sha256:abc"),
            ("nginx".into(), Some("sha256:abc".into()))
        );
        assert_eq!(registry_of("127.0.0.1:5001/demo/web"), "127.0.0.1:5001");
        assert_eq!(registry_of("library/nginx"), "https://index.docker.io/v1/");
    }

    #[test]
    fn credentials_are_not_in_debug_output() {
        let auth = RegistryAuth {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn image_defaults_are_left_to_the_new_image() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "0123456789abcdef0123",
            "Config": {
                "Hostname": "0123456789ab",
                "Env": ["APP_VERSION=1.0.0", "MINE=1"],
                "Cmd": ["/bin/serve"],
                "Labels": {"a": "1", "img": "x"},
                "ExposedPorts": {"8080/tcp": {}},
                "Image": "web:1.0.0",
                "StopSignal": "SIGINT"
            },
            "HostConfig": {"NetworkMode": "net1", "MaskedPaths": ["/proc/kcore"]},
            "NetworkSettings": {"Networks": {
                "net1": {"Aliases": ["0123456789ab", "web"], "IPAddress": "172.18.0.2"},
                "net2": {"Aliases": ["other"]}
            }}
        }))
        .expect("inspect");
        let image: ImageConfig = serde_json::from_value(serde_json::json!({
            "Env": ["APP_VERSION=1.0.0"],
            "Cmd": ["/bin/serve"],
            "Labels": {"img": "x"},
            "ExposedPorts": {"8080/tcp": {}}
        }))
        .expect("image");
        let plan = create_plan(&inspect, Some(&image), "web:1.0.1");
        let b = &plan.body;
        assert_eq!(b.image.as_deref(), Some("web:1.0.1"));
        assert_eq!(b.env, Some(vec!["MINE=1".to_owned()]));
        assert_eq!(b.cmd, None);
        assert_eq!(b.hostname, None);
        assert_eq!(b.exposed_ports, None);
        assert_eq!(b.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(
            b.labels
                .as_ref()
                .map(|l| l.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_owned()])
        );
        let hc = b.host_config.as_ref().expect("host config");
        assert_eq!(hc.masked_paths, None);
        let primary = b
            .networking_config
            .as_ref()
            .and_then(|n| n.endpoints_config.as_ref())
            .and_then(|e| e.get("net1"))
            .expect("primary endpoint");
        assert_eq!(primary.aliases, Some(vec!["web".to_owned()]));
        assert_eq!(primary.ip_address, None);
        assert_eq!(plan.connect_after.len(), 1);
        assert_eq!(plan.connect_after[0].0, "net2");
    }

    #[test]
    fn an_own_entrypoint_keeps_the_cmd() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc",
            "Config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["/bin/serve"], "Image": "w"}
        }))
        .expect("inspect");
        let image: ImageConfig =
            serde_json::from_value(serde_json::json!({"Cmd": ["/bin/serve"]})).expect("image");
        let plan = create_plan(&inspect, Some(&image), "w2");
        assert_eq!(plan.body.cmd, Some(vec!["/bin/serve".to_owned()]));
        assert_eq!(
            plan.body.entrypoint,
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned()])
        );
    }
}
