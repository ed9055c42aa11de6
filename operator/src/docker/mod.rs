//! The Docker edge: what runs (observe) and the few changes the planner asks for (act), over
//! bollard. Everything the operator must remember after a crash lives in the labels written
//! here, so a restarted operator rebuilds its view from Docker alone.

mod archive;
mod build;
mod create;
#[cfg(test)]
pub mod fake;
mod stream;
mod surge;

pub use archive::{Brief, FileStat, SCRATCH_LABEL};
pub use stream::{ExecDone, ExecStream, Exited};
pub use surge::{retire, CannotSurge, Surge};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, InspectContainerOptions, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::compose::{BuildSpec, NetworkSpec, ServiceSpec, VolumeSpec};
// The plain data of what was observed lives in `observe`, where the pure decisions may use it.
pub use crate::observe::{short_id, Claim, Observed, ObservedContainer};

/// Labels docker-compose itself writes and reads; `docker-compose -p NAME ps` finds containers by them.
pub mod labels {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
    /// docker-compose 1.29's hash of the service (see [`crate::compose::ServiceSpec::compose_hash`]):
    /// equal to what it computes, it recreates nothing on `docker-compose up`.
    pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
    pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    pub const VERSION: &str = "com.docker.compose.version";
    pub const NETWORK: &str = "com.docker.compose.network";
    pub const VOLUME: &str = "com.docker.compose.volume";
    /// `namespace/name` of the owning ServiceStack.
    pub const STACK: &str = "stackwarden.dev/stack";
    /// uid of the owning ServiceStack: tells our containers from a namesake project's.
    pub const UID: &str = "stackwarden.dev/uid";
    /// Revision number the container was created for.
    pub const REVISION: &str = "stackwarden.dev/revision";
    /// Hash of the whole project at that revision.
    pub const SPEC_HASH: &str = "stackwarden.dev/spec-hash";
    /// The operator's own hash of the service's config: what its change detection compares,
    /// so nothing it does depends on reproducing docker-compose's hash exactly.
    pub const OWN_CONFIG_HASH: &str = "stackwarden.dev/config-hash";
}

/// Who owns what is created: written into every label set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub project: String,
    pub stack: String,
    pub uid: String,
}

/// Why a Docker call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker engine at {host} is unreachable: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("{context}: {message}")]
    Api {
        context: String,
        status: Option<u16>,
        message: String,
    },
}

impl EngineError {
    fn from_bollard(host: &str, context: impl Into<String>, e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Api {
                context: context.into(),
                status: Some(status_code),
                message,
            },
            B::JsonDataError { .. } | B::JsonSerdeError { .. } | B::DockerStreamError { .. } => {
                EngineError::Api {
                    context: context.into(),
                    status: None,
                    message: e.to_string(),
                }
            }
            other => EngineError::Unreachable {
                host: host.to_owned(),
                reason: other.to_string(),
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            EngineError::Api {
                status: Some(404),
                ..
            }
        )
    }
}

/// What a command run in a container did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i64,
    /// The first bytes of its combined output, for the probe's message.
    pub output: String,
}

/// Container event actions that can change what the operator decides. `health_status`
/// arrives as `health_status: healthy` and Docker emits it only when the status changes.
pub const DECISIVE_ACTIONS: [&str; 7] = [
    "start",
    "die",
    "oom",
    "kill",
    "stop",
    "destroy",
    "health_status",
];

/// A change to a managed container: which stack it belongs to and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerChange {
    /// `namespace/name` from the container's [`labels::STACK`].
    pub stack: String,
    pub action: String,
    /// The container's id.
    pub container: String,
    /// When the engine saw it.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

impl ContainerChange {
    /// The change an event message describes, or None when it is not one that matters (the
    /// engine's filter should already have dropped those) or names no stack.
    pub fn from_event(m: bollard::models::EventMessage) -> Option<Self> {
        let action = m.action?;
        let verb = action.split(':').next().unwrap_or_default().trim();
        if !DECISIVE_ACTIONS.contains(&verb) {
            return None;
        }
        let time = m
            .time_nano
            .map(chrono::DateTime::from_timestamp_nanos)
            .or_else(|| m.time.and_then(|t| chrono::DateTime::from_timestamp(t, 0)));
        let mut actor = m.actor?;
        let container = actor.id.take().unwrap_or_default();
        let stack = actor.attributes?.remove(labels::STACK)?;
        Some(Self {
            stack,
            action,
            container,
            time,
        })
    }
}

/// A byte stream out of or into a container.
pub type Bytes = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// How many bytes of a command's output [`Engine::exec`] reads for its message.
const EXEC_READ: usize = 2048;
/// How many characters of that the message keeps.
const EXEC_QUOTE: usize = 512;

/// The engine operations reconcile, probes and backups need. Small on purpose: the planner
/// decides, this acts.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The project's containers (one-offs left out), and which of `networks`, `volumes` and
    /// `images` exist on the engine, whoever made them.
    async fn observe(
        &self,
        project: &str,
        networks: &[String],
        volumes: &[String],
        images: &[String],
    ) -> Result<Observed, EngineError>;
    /// Which of `images` (tags or ids) are on the engine, with their ids; nothing else looked
    /// at.
    async fn image_ids(&self, images: &[String]) -> Result<BTreeMap<String, String>, EngineError> {
        Ok(self.observe("", &[], &[], images).await?.image_ids)
    }
    async fn create_network(&self, net: &NetworkSpec, owner: &Owner) -> Result<(), EngineError>;
    async fn create_volume(&self, vol: &VolumeSpec, owner: &Owner) -> Result<(), EngineError>;
    async fn pull_image(&self, image: &str) -> Result<(), EngineError>;
    /// Builds a service's image from its context and tags it `build.image` (and
    /// `build.also_tag`); the error holds the end of the build's output.
    async fn build_image(&self, build: &BuildSpec) -> Result<(), EngineError>;
    /// Creates (not starts) the container; returns its id.
    async fn create_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
    ) -> Result<String, EngineError>;
    /// Creates (not starts) `surge`, a second container of the service beside its running one:
    /// the same config, aliases and labels under another name and container number. One left
    /// by a cut-off earlier try (same stack, slot and spec) is answered as made.
    async fn create_surge_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
        surge: &Surge,
    ) -> Result<String, EngineError>;
    async fn start_container(&self, id: &str) -> Result<(), EngineError>;
    /// Takes a container off a network, its aliases there with it; a container not on it, or
    /// gone, is done.
    async fn disconnect_network(&self, id: &str, network: &str) -> Result<(), EngineError>;
    /// Stops (with the service's grace period) and removes; a missing container is not an error.
    async fn remove_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError>;
    /// Networks and volumes labelled with the owner's compose project, for cleanup.
    async fn owned_resources(
        &self,
        owner: &Owner,
    ) -> Result<(Vec<String>, Vec<String>), EngineError>;
    async fn remove_network(&self, name: &str) -> Result<(), EngineError>;
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;
    /// Restarts a container in place (same id, volumes and address), as `docker restart` does.
    async fn restart_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError>;
    /// Runs a command in a running container and waits for it to finish; the output is cut to
    /// a message's worth.
    async fn exec(&self, id: &str, command: &[String]) -> Result<ExecOutcome, EngineError> {
        let mut outcome = self.exec_capture(id, command, EXEC_READ).await?;
        let cut = outcome
            .output
            .char_indices()
            .nth(EXEC_QUOTE)
            .map_or(outcome.output.len(), |(i, _)| i);
        outcome.output.truncate(cut);
        Ok(outcome)
    }
    /// Like [`exec`](Engine::exec), keeping up to `limit` bytes of output (command output that
    /// is parsed, such as `INFO`).
    async fn exec_capture(
        &self,
        id: &str,
        command: &[String],
        limit: usize,
    ) -> Result<ExecOutcome, EngineError>;
    /// Runs `command` in the running container `id` with its stdout as a stream. `env` entries
    /// (`K=V`) are passed to the exec (for PGPASSWORD; they appear in no message). With `stdin`
    /// given, it is copied into the command's stdin, which is closed at its end (for
    /// pg_restore). Fails, naming the container, when it is not running.
    async fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<Bytes>,
    ) -> Result<ExecStream, EngineError>;
    /// Streams one regular file out of a container (running or stopped), with its size, owner
    /// and mode. A stream that ends before the file's size is an error, not a short file;
    /// a missing file is [`EngineError::is_missing`].
    async fn open_file(&self, id: &str, path: &str) -> Result<(FileStat, Bytes), EngineError>;
    /// Writes `data`, exactly `stat.size` bytes, as file `path` (owner and mode from `stat`)
    /// into a container, running or stopped. Data that fails or has another length cuts the
    /// upload off with that reason; Docker may have left a partial file.
    async fn upload_file(
        &self,
        id: &str,
        path: &str,
        data: Bytes,
        stat: FileStat,
    ) -> Result<(), EngineError>;
    /// Whether a container runs, and where it can be reached.
    async fn brief(&self, id: &str) -> Result<Brief, EngineError>;
    /// Creates (does not start) a throwaway container from `image` running `cmd`: no network,
    /// labelled [`SCRATCH_LABEL`], kept after it exits (its logs tell why) until removed.
    async fn create_scratch(
        &self,
        image: &str,
        name: &str,
        cmd: &[String],
        entrypoint: Option<&[String]>,
    ) -> Result<String, EngineError>;
    /// Ids of the scratch containers (any state) whose name starts with `prefix`.
    async fn scratch_containers(&self, prefix: &str) -> Result<Vec<String>, EngineError>;
    /// The last `lines` lines of a container's output, for a failure message.
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError>;
    /// Stops a container (with the grace period) and leaves it there, as `docker stop` does.
    async fn stop_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError>;
    /// Renames a container, as `docker rename` does (a rollout moves an old container with a
    /// fixed `container_name` aside, and back).
    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError>;
    /// Changes Docker's restart policy of a container in place, as `docker update --restart`.
    async fn set_restart_policy(
        &self,
        id: &str,
        policy: crate::compose::RestartPolicy,
    ) -> Result<(), EngineError>;
}

/// Connects to engines by address and keeps one negotiated client per address.
#[derive(Default, Clone)]
pub struct Engines {
    clients: Arc<Mutex<HashMap<String, Docker>>>,
    /// Engines given for an address instead of connecting to it: the unit tests' fake.
    stand_ins: Arc<std::sync::Mutex<HashMap<String, Arc<dyn Engine>>>>,
}

impl Engines {
    /// The engine at `host`, behind its trait: the one the reconcile, its jobs and probers use.
    pub async fn engine(&self, host: &str) -> Result<Arc<dyn Engine>, EngineError> {
        if let Some(e) = self.stand_in_for(host) {
            return Ok(e);
        }
        Ok(Arc::new(self.get(host).await?))
    }

    /// Uses `engine` for `host` from now on instead of connecting to it.
    pub fn stand_in(&self, host: &str, engine: Arc<dyn Engine>) {
        self.stand_ins
            .lock()
            .expect("stand-ins lock")
            .insert(host.to_owned(), engine);
    }

    /// The engine standing in for `host`, if one does: it has no Docker events to watch.
    pub fn stand_in_for(&self, host: &str) -> Option<Arc<dyn Engine>> {
        self.stand_ins
            .lock()
            .expect("stand-ins lock")
            .get(host)
            .cloned()
    }

    /// A client for `host`, negotiating the API version on first use: these machines run an
    /// engine (API 1.41) older than bollard's default, and an unnegotiated client gets
    /// "client version too new" on every call.
    pub async fn get(&self, host: &str) -> Result<BollardEngine, EngineError> {
        if let Some(d) = self.clients.lock().await.get(host) {
            return Ok(BollardEngine {
                docker: d.clone(),
                host: host.to_owned(),
            });
        }
        let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
            host: host.to_owned(),
            reason: e.to_string(),
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)
                .map_err(unreachable)?
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, 60, bollard::API_DEFAULT_VERSION)
                .map_err(unreachable)?
        } else {
            return Err(EngineError::Unreachable {
                host: host.to_owned(),
                reason: "the address must start with unix:// or tcp://".into(),
            });
        };
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        self.clients
            .lock()
            .await
            .insert(host.to_owned(), docker.clone());
        Ok(BollardEngine {
            docker,
            host: host.to_owned(),
        })
    }

    /// Forgets a client after a connection failure, so the next pass renegotiates (the engine
    /// may have been upgraded or replaced meanwhile).
    pub async fn forget(&self, host: &str) {
        self.clients.lock().await.remove(host);
    }
}

/// What a container is created as: the service at a revision, under a name and docker-compose
/// container number.
#[derive(Clone, Copy)]
struct CreateAs<'a> {
    svc: &'a ServiceSpec,
    owner: &'a Owner,
    revision: u64,
    spec_hash: &'a str,
    name: &'a str,
    number: u8,
}

/// [`Engine`] over a bollard client.
#[derive(Clone)]
pub struct BollardEngine {
    docker: Docker,
    host: String,
}

impl BollardEngine {
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn err(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> EngineError + '_ {
        let context = context.into();
        move |e| EngineError::from_bollard(&self.host, context, e)
    }

    /// Changes to containers the operator manages that can change a decision (see
    /// [`DECISIVE_ACTIONS`]), each with the stack whose label the container carries, as they
    /// happen: the drivers wake that stack alone instead of waiting for its next poll. A busy
    /// engine emits dozens of `exec_*` events a second (healthchecks); those never get here.
    /// The stream ends or errs when the connection breaks; the caller resubscribes.
    pub fn container_changes(
        &self,
    ) -> futures::stream::BoxStream<'static, Result<ContainerChange, EngineError>> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![labels::UID.to_owned()]),
            (
                "event".to_owned(),
                DECISIVE_ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
            ),
        ]);
        let opts = bollard::query_parameters::EventsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let host = self.host.clone();
        self.docker
            .events(Some(opts))
            .filter_map(move |e| {
                let change = match e {
                    Ok(m) => ContainerChange::from_event(m).map(Ok),
                    Err(e) => Some(Err(EngineError::from_bollard(&host, "watching events", e))),
                };
                futures::future::ready(change)
            })
            .boxed()
    }

    /// Which of `networks` exist. One list of the networks labelled with the compose project
    /// (ours and docker-compose's) answers for most; a name not on it (an external network,
    /// or a namesake made by someone else, which exists all the same) is looked up by itself.
    /// Nothing is asked when there is no name to look for: the prober observes a project
    /// several times a second for its containers alone.
    async fn existing_networks(
        &self,
        project: &str,
        networks: &[String],
    ) -> Result<BTreeSet<String>, EngineError> {
        if networks.is_empty() {
            return Ok(BTreeSet::new());
        }
        let filters = Self::label_filter(labels::PROJECT, project);
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let labelled = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(self.err("listing networks"))?
            .into_iter()
            .filter_map(|n| n.name);
        let (mut found, unlisted) = sort_out(networks, labelled);
        for name in unlisted {
            match self.docker.inspect_network(name, None).await {
                // The engine also matches an id prefix; only the name counts here.
                Ok(n) if n.name.as_deref() == Some(name.as_str()) => {
                    found.insert(name.clone());
                }
                Ok(_) => {}
                Err(e) => self.absent_or(e, format!("inspecting network {name}"))?,
            }
        }
        Ok(found)
    }

    /// Which of `volumes` exist (see [`Self::existing_networks`]).
    async fn existing_volumes(
        &self,
        project: &str,
        volumes: &[String],
    ) -> Result<BTreeSet<String>, EngineError> {
        if volumes.is_empty() {
            return Ok(BTreeSet::new());
        }
        let filters = Self::label_filter(labels::PROJECT, project);
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let labelled = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(self.err("listing volumes"))?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name);
        let (mut found, unlisted) = sort_out(volumes, labelled);
        for name in unlisted {
            match self.docker.inspect_volume(name).await {
                Ok(_) => {
                    found.insert(name.clone());
                }
                Err(e) => self.absent_or(e, format!("inspecting volume {name}"))?,
            }
        }
        Ok(found)
    }

    /// A 404 is an answer (it does not exist); anything else is the error it is.
    fn absent_or(&self, e: bollard::errors::Error, context: String) -> Result<(), EngineError> {
        let e = EngineError::from_bollard(&self.host, context, e);
        if e.is_not_found() {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Which of `images` are present, with their ids.
    async fn existing_images(
        &self,
        images: &[String],
    ) -> Result<BTreeMap<String, String>, EngineError> {
        let mut present = BTreeMap::new();
        for image in images {
            match self.docker.inspect_image(image).await {
                Ok(i) => {
                    present.insert(image.clone(), i.id.unwrap_or_default());
                }
                Err(e) => {
                    let e = EngineError::from_bollard(&self.host, "inspecting an image", e);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(present)
    }

    /// Creates the container `spec` describes and connects it to the service's other
    /// networks; None when the name is taken.
    async fn create_named(&self, spec: &CreateAs<'_>) -> Result<Option<String>, EngineError> {
        let CreateAs { svc, name, .. } = *spec;
        let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(name)
            .build();
        let image_id = self
            .existing_images(std::slice::from_ref(&svc.image))
            .await?
            .remove(&svc.image);
        let mut body = create::container_body(
            svc,
            spec.owner,
            spec.revision,
            spec.spec_hash,
            image_id.as_deref(),
        );
        if let Some(l) = body.labels.as_mut() {
            l.insert(labels::CONTAINER_NUMBER.to_owned(), spec.number.to_string());
        }
        let id = match self.docker.create_container(Some(opts), body).await {
            Ok(created) => created.id,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => return Ok(None),
            Err(e) => return Err(self.err(format!("creating container {name}"))(e)),
        };
        self.connect_rest(svc, &id, name, &BTreeSet::new()).await?;
        Ok(Some(id))
    }

    /// API 1.41 takes one network at create time; the rest are connected before start, those
    /// in `already` left out.
    async fn connect_rest(
        &self,
        svc: &ServiceSpec,
        id: &str,
        name: &str,
        already: &BTreeSet<String>,
    ) -> Result<(), EngineError> {
        for net in svc.networks.iter().skip(1) {
            if already.contains(&net.network) {
                continue;
            }
            let req = bollard::models::NetworkConnectRequest {
                container: id.to_owned(),
                endpoint_config: Some(bollard::models::EndpointSettings {
                    aliases: Some(net.aliases.clone()),
                    ..Default::default()
                }),
            };
            self.docker
                .connect_network(&net.network, req)
                .await
                .map_err(self.err(format!("connecting {name} to network {}", net.network)))?;
        }
        Ok(())
    }

    /// The surge's name is taken: by this very surge from a cut-off try (finish connecting it
    /// and answer its id), or by something else, which the caller must clear first.
    async fn adopt_surge(&self, spec: &CreateAs<'_>, surge: &Surge) -> Result<String, EngineError> {
        let name = surge.name();
        let found = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(self.err(format!("inspecting container {name}")))?;
        if !surge.is_this(&found, spec.owner, spec.svc, spec.spec_hash) {
            return Err(EngineError::Api {
                context: format!("creating container {name} beside the running one of service {}", spec.svc.name),
                status: Some(409),
                message: format!(
                    "the name {name} is taken by another container (a leftover of an earlier rollout, or not this stack's); remove it (docker rm) and the rollout goes on"
                ),
            });
        }
        let id = found.id.clone().unwrap_or_default();
        let on: BTreeSet<String> = found
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        self.connect_rest(spec.svc, &id, name, &on).await?;
        Ok(id)
    }

    /// Every change the operator makes must be safe to repeat after a crash, and Docker answers
    /// a repeated request with a status that means "already so" (304 already started or
    /// stopped, 404 already gone, 409 already exists or already being removed). Those count as
    /// success, per request, as `already` lists them.
    fn settled<T>(
        &self,
        res: Result<T, bollard::errors::Error>,
        already: &[u16],
        context: String,
    ) -> Result<(), EngineError> {
        match res {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
                if already.contains(&status_code) =>
            {
                Ok(())
            }
            Err(e) => Err(EngineError::from_bollard(&self.host, context, e)),
        }
    }

    fn label_filter(label: &str, value: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_owned(), vec![format!("{label}={value}")])])
    }
}

/// Which of `wanted` are among `labelled`, and which are not there and must be looked up by
/// name.
fn sort_out(
    wanted: &[String],
    labelled: impl IntoIterator<Item = String>,
) -> (BTreeSet<String>, Vec<&String>) {
    let found: BTreeSet<String> = labelled
        .into_iter()
        .filter(|name| wanted.contains(name))
        .collect();
    let unlisted = wanted.iter().filter(|w| !found.contains(*w)).collect();
    (found, unlisted)
}

#[async_trait]
impl Engine for BollardEngine {
    async fn observe(
        &self,
        project: &str,
        networks: &[String],
        volumes: &[String],
        images: &[String],
    ) -> Result<Observed, EngineError> {
        let list = self
            .labelled_containers(labels::PROJECT, project, "listing containers")
            .await?;
        let mut containers = Vec::new();
        for summary in list {
            // One-off containers (`docker-compose run`, a runbook's migration) are a person's,
            // not a service's: docker-compose leaves them out of `up` and so does the operator.
            let one_off = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::ONEOFF))
                .is_some_and(|v| v == "True");
            if one_off {
                continue;
            }
            let Some(id) = summary.id else { continue };
            // Summaries lack health and restart count; inspect gives both. A container removed
            // between list and inspect is simply gone.
            let inspect = match self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(i) => i,
                Err(e) => {
                    let e = EngineError::from_bollard(&self.host, "inspecting a container", e);
                    if e.is_not_found() {
                        continue;
                    }
                    return Err(e);
                }
            };
            containers.push(create::observed_container(id, inspect));
        }
        let image_ids = self.existing_images(images).await?;
        Ok(Observed {
            containers,
            networks: self.existing_networks(project, networks).await?,
            volumes: self.existing_volumes(project, volumes).await?,
            images: image_ids.keys().cloned().collect(),
            image_ids,
        })
    }

    async fn image_ids(&self, images: &[String]) -> Result<BTreeMap<String, String>, EngineError> {
        self.existing_images(images).await
    }

    async fn create_network(&self, net: &NetworkSpec, owner: &Owner) -> Result<(), EngineError> {
        // 409: created by a previous pass that was cut off before it could record anything.
        let res = self
            .docker
            .create_network(create::network_body(net, owner))
            .await;
        self.settled(res, &[409], format!("creating network {}", net.name))
    }

    async fn create_volume(&self, vol: &VolumeSpec, owner: &Owner) -> Result<(), EngineError> {
        self.docker
            .create_volume(create::volume_body(vol, owner))
            .await
            .map(|_| ())
            .map_err(self.err(format!("creating volume {}", vol.name)))
    }

    async fn pull_image(&self, image: &str) -> Result<(), EngineError> {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(self.err(format!("pulling image {image}")))?;
        }
        Ok(())
    }

    async fn build_image(&self, build: &BuildSpec) -> Result<(), EngineError> {
        self.build(build).await
    }

    async fn create_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
    ) -> Result<String, EngineError> {
        let name = svc.container_name(&owner.project);
        let spec = CreateAs {
            svc,
            owner,
            revision,
            spec_hash,
            name: &name,
            number: 1,
        };
        match self.create_named(&spec).await? {
            Some(id) => Ok(id),
            // The planner removes this stack's own container before creating its successor,
            // so a name still taken belongs to someone else: say whose and what to do.
            None => Err(EngineError::Api {
                context: format!("creating container {name} for service {}", svc.name),
                status: Some(409),
                message: format!(
                    "the name {name} is already used by a container this stack does not manage; remove or rename that container (docker rm / docker rename), or change container_name"
                ),
            }),
        }
    }

    async fn create_surge_container(
        &self,
        svc: &ServiceSpec,
        owner: &Owner,
        revision: u64,
        spec_hash: &str,
        surge: &Surge,
    ) -> Result<String, EngineError> {
        let spec = CreateAs {
            svc,
            owner,
            revision,
            spec_hash,
            name: surge.name(),
            number: surge.number(),
        };
        if let Some(id) = self.create_named(&spec).await? {
            return Ok(id);
        }
        self.adopt_surge(&spec, surge).await
    }

    async fn disconnect_network(&self, id: &str, network: &str) -> Result<(), EngineError> {
        let context = format!("taking container {} off network {network}", short_id(id));
        let req = bollard::models::NetworkDisconnectRequest {
            container: id.to_owned(),
            force: Some(false),
        };
        match self.docker.disconnect_network(network, req).await {
            Ok(()) => Ok(()),
            // Docker 20.10 answers "is not connected to network" with a 500, not a 304.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("is not connected") =>
            {
                Ok(())
            }
            Err(e) => Err(EngineError::from_bollard(&self.host, context, e)),
        }
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        // 304: already running, which is what was asked.
        let res = self.docker.start_container(id, None).await;
        self.settled(res, &[304], format!("starting container {}", short_id(id)))
    }

    async fn remove_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError> {
        let stop = StopContainerOptionsBuilder::default()
            .t(grace_s.unwrap_or(10) as i32)
            .build();
        let res = self.docker.stop_container(id, Some(stop)).await;
        self.settled(
            res,
            &[304, 404],
            format!("stopping container {}", short_id(id)),
        )?;
        // Anonymous volumes go with the container, as with `docker-compose rm -v`; named ones
        // stay. 409: a removal already in progress (a previous pass); the next observe settles it.
        let rm = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let res = self.docker.remove_container(id, Some(rm)).await;
        self.settled(
            res,
            &[404, 409],
            format!("removing container {}", short_id(id)),
        )
    }

    async fn owned_resources(
        &self,
        owner: &Owner,
    ) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let filters = Self::label_filter(labels::PROJECT, &owner.project);
        let nets = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(self.err("listing networks"))?
            .into_iter()
            .filter_map(|n| n.name)
            .collect();
        let vols = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(self.err("listing volumes"))?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        Ok((nets, vols))
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let opts = bollard::query_parameters::RenameContainerOptionsBuilder::default()
            .name(name)
            .build();
        self.docker
            .rename_container(id, opts)
            .await
            .map_err(self.err(format!("renaming container {} to {name}", short_id(id))))
    }

    async fn stop_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError> {
        let stop = StopContainerOptionsBuilder::default()
            .t(grace_s.unwrap_or(10) as i32)
            .build();
        let res = self.docker.stop_container(id, Some(stop)).await;
        // 304: already stopped, which is what was asked.
        self.settled(res, &[304], format!("stopping container {}", short_id(id)))
    }

    async fn set_restart_policy(
        &self,
        id: &str,
        policy: crate::compose::RestartPolicy,
    ) -> Result<(), EngineError> {
        let body = bollard::models::ContainerUpdateBody {
            restart_policy: Some(create::restart_policy(policy)),
            ..Default::default()
        };
        let res = self.docker.update_container(id, body).await;
        self.settled(
            res,
            &[],
            format!(
                "setting the restart policy of container {} to {}",
                short_id(id),
                policy.docker_name()
            ),
        )
    }

    async fn restart_container(&self, id: &str, grace_s: Option<i64>) -> Result<(), EngineError> {
        let opts = bollard::query_parameters::RestartContainerOptionsBuilder::default()
            .t(grace_s.unwrap_or(10) as i32)
            .build();
        let res = self.docker.restart_container(id, Some(opts)).await;
        self.settled(res, &[], format!("restarting container {}", short_id(id)))
    }

    async fn exec_capture(
        &self,
        id: &str,
        command: &[String],
        limit: usize,
    ) -> Result<ExecOutcome, EngineError> {
        BollardEngine::exec_capture(self, id, command, limit).await
    }

    async fn exec_stream(
        &self,
        id: &str,
        command: &[String],
        env: &[String],
        stdin: Option<Bytes>,
    ) -> Result<ExecStream, EngineError> {
        BollardEngine::exec_stream(self, id, command, env, stdin).await
    }

    async fn open_file(&self, id: &str, path: &str) -> Result<(FileStat, Bytes), EngineError> {
        BollardEngine::open_file(self, id, path).await
    }

    async fn upload_file(
        &self,
        id: &str,
        path: &str,
        data: Bytes,
        stat: FileStat,
    ) -> Result<(), EngineError> {
        BollardEngine::upload_file(self, id, path, data, stat).await
    }

    async fn brief(&self, id: &str) -> Result<Brief, EngineError> {
        BollardEngine::brief(self, id).await
    }

    async fn create_scratch(
        &self,
        image: &str,
        name: &str,
        cmd: &[String],
        entrypoint: Option<&[String]>,
    ) -> Result<String, EngineError> {
        BollardEngine::create_scratch(self, image, name, cmd, entrypoint).await
    }

    async fn scratch_containers(&self, prefix: &str) -> Result<Vec<String>, EngineError> {
        BollardEngine::scratch_containers(self, prefix).await
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        BollardEngine::logs_tail(self, id, lines).await
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        let res = self.docker.remove_network(name).await;
        self.settled(res, &[404], format!("removing network {name}"))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveVolumeOptionsBuilder::default().force(false).build();
        let res = self.docker.remove_volume(name, Some(opts)).await;
        self.settled(res, &[404], format!("removing volume {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::sort_out;

    #[test]
    fn a_name_the_project_list_lacks_is_left_to_be_looked_up_by_name() {
        let wanted = ["shop_default".to_owned(), "shared".to_owned()];
        let labelled = ["shop_default".to_owned(), "shop_other".to_owned()];
        let (found, unlisted) = sort_out(&wanted, labelled);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["shop_default"]);
        assert_eq!(unlisted, [&"shared".to_owned()]);
    }
}
