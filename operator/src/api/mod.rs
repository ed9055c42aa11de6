//! The `ServiceStack` resource (`stackwarden.dev/v1alpha1`): what a user declares and what the
//! operator reports back. Every field carries a doc comment because it becomes the
//! `kubectl explain` text.

pub mod backup;
pub mod condition;
pub mod event;
pub mod failure;
pub mod keys;
pub mod revision;
pub mod rollback_status;
pub mod rollout;
pub mod rollout_status;

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use backup::{
    BackupDestination, BackupRecord, BackupTarget, BackupTargetStatus, DeployBackup,
    DeployBackupState, FailureRecord, Job, PostgresSource, RedisSource, RestoreRecord, Retention,
    RunningJob, S3Destination, Trigger, VerificationRecord, VerifySpec,
};
pub use condition::{Condition, ConditionStatus, ConditionType, Reason, Verdict};
pub use event::{EventReason, EventType, StackEvent};
pub use failure::{mask, Failure};

/// Docker engine used when `spec.docker.host` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// What the stack should be: the Docker engine it runs on, its compose file, what healthy
/// means, maintenance and backups.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stackwarden.dev",
    version = "v1alpha1",
    kind = "ServiceStack",
    plural = "servicestacks",
    shortname = "sst",
    // Not `all`: `kubectl get all` is for the cluster's own workloads, and a ServiceStack runs
    // on a Docker host outside the cluster; `kubectl delete all --all` would delete stacks
    // too, and with `deletionPolicy: Delete` their volumes.
    category = "stackwarden",
    namespaced,
    doc = "A Docker Compose stack that stackwarden brings up on a Docker engine and keeps running: it heals crashed and unhealthy services, applies changes to the compose file, runs scheduled restarts, and takes and tests backups. `spec` is what you declare; `status` is what the operator observed, with the Ready, Progressing, Degraded and other conditions.",
    status = "ServiceStackStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","description":"Why the stack is (not) Ready"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message","description":"The Ready condition's message"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStackSpec {
    /// The Docker engine the stack runs on. Defaults to the local socket.
    #[serde(default)]
    pub docker: DockerSpec,

    /// The Docker Compose project: its name and the compose file itself.
    pub compose: ComposeSpec,

    /// Values for `${VAR}`, `${VAR:-default}` and the other interpolation forms in the compose
    /// file. The operator's own environment is never consulted, so a stack means the same thing
    /// wherever it is reconciled. Values may be secrets: they never appear in status, events or logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,

    /// Where else variables come from, for passwords that must not sit in the manifest: a
    /// Secret (in a cluster) or an env file beside the manifest (`stackwarden local`). A key
    /// set in `variables` as well takes that value; among the sources, a later one wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables_from: Vec<VariablesSource>,

    /// Which services must be healthy for the stack to be Ready.
    #[serde(default, skip_serializing_if = "HealthSpec::is_empty")]
    pub health: HealthSpec,

    /// Scheduled maintenance, such as nightly restarts.
    #[serde(default, skip_serializing_if = "MaintenanceSpec::is_empty")]
    pub maintenance: MaintenanceSpec,

    /// Backups: what, when, where, how many to keep, and restore tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupTarget>,

    /// How changes of the compose file are rolled out, and how much history is kept.
    #[serde(default, skip_serializing_if = "RolloutSpec::is_empty")]
    pub rollout: RolloutSpec,

    /// The stack's keys (the variables holding its passwords and secrets): how old each may
    /// get, which the operator rotates itself; and the certificates whose expiry it watches.
    #[serde(default, skip_serializing_if = "keys::KeyRotationSpec::is_empty")]
    pub key_rotation: keys::KeyRotationSpec,

    /// What deleting this ServiceStack does to its containers, networks and volumes.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// When true, the operator only observes and reports: it creates, starts and removes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// How changes are rolled out.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// How many revisions to keep (`stackwarden history`, `kubectl get controllerrevisions`);
    /// the oldest beyond it are forgotten, never the one running or the last good one.
    /// Defaults to 10, as for a Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub revision_history_limit: Option<u32>,

    /// `Auto` (default): a service without a published host port or a fixed `container_name`
    /// is updated without downtime (the new container starts beside the old one, which is
    /// retired once the new one passed its gates); the others are stopped and replaced.
    /// `Recreate`: every service is stopped and replaced.
    #[serde(default, skip_serializing_if = "Strategy::is_auto")]
    pub strategy: Strategy,

    /// Services updated first, in this order; the rest follow in dependency order. One service
    /// at a time, and the services it depends on are never restarted for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,

    /// How long an updated service's new container may take to pass its probes (its compose
    /// healthcheck, and `spec.health` probes) before the rollout is rolled back. Default 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<u32>,

    /// Judge each updated service on its own metrics (its Prometheus endpoint) before the old
    /// container is retired: the 5xx share, and optionally a latency quantile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<rollout::AnalysisSpec>,
}

/// How services are replaced in a rollout.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Strategy {
    #[default]
    Auto,
    Recreate,
}

impl Strategy {
    fn is_auto(&self) -> bool {
        *self == Strategy::Auto
    }
}

impl RolloutSpec {
    /// What `revisionHistoryLimit` means when it is not set.
    pub const DEFAULT_HISTORY_LIMIT: u32 = 10;

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// What `progressDeadlineSeconds` means when it is not set.
    pub const DEFAULT_PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

    pub fn progress_deadline(&self) -> std::time::Duration {
        self.progress_deadline_seconds
            .map_or(Self::DEFAULT_PROGRESS_DEADLINE, |s| {
                std::time::Duration::from_secs(s.into())
            })
    }

    pub fn history_limit(&self) -> usize {
        self.revision_history_limit
            .unwrap_or(Self::DEFAULT_HISTORY_LIMIT)
            .max(1) as usize
    }
}

/// A source of variables: exactly one of `secretRef` (in a cluster) or `file` (in local mode).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum VariablesSource {
    /// A Secret in the ServiceStack's namespace; each of its keys becomes a variable. Cluster
    /// mode only.
    SecretRef(SecretRef),
    /// An env file (`KEY=value` lines, read as docker-compose reads `.env`); each of its
    /// variables becomes one. The path is relative to the manifest file's directory. Local
    /// mode only (`stackwarden local`); keep the file private (`chmod 600`).
    File(String),
}

/// A Secret by name.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// Where the Docker engine is.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerSpec {
    /// Engine address: `unix:///path/to/docker.sock` or `tcp://host:2375`.
    /// Defaults to `unix:///var/run/docker.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl DockerSpec {
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or(DEFAULT_DOCKER_HOST)
    }
}

/// The compose project.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComposeSpec {
    /// Compose project name: prefixes container, network and volume names, and is what
    /// `docker-compose -p NAME ps` takes. Defaults to the ServiceStack's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,

    /// The docker-compose.yml, verbatim.
    pub file: String,

    /// Take over the containers, networks and volumes of a compose project that already runs
    /// (started by `docker-compose up`), as long as no other ServiceStack owns them. Containers
    /// whose config matches the compose file keep running untouched; the rest are recreated.
    /// Without it, containers of the project this stack did not create are a conflict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
}

/// Health requirements per service, and what the operator does when a service fails them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSpec {
    /// Per compose service; every key must name a service of the compose file.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceHealthSpec>,

    /// How failed services are restarted: backoff and budget.
    #[serde(default)]
    pub restart: RestartSpec,

    /// How the operator reaches services to probe them. `Network` (default): on the project
    /// network, by container address, which needs the operator on the Docker host (local mode,
    /// or a pod with host networking). `PublishedPorts`: through the ports the service publishes
    /// on the engine's host, for an operator that runs elsewhere; every probed port must then be
    /// published.
    #[serde(default)]
    pub probe_access: ProbeAccess,
}

impl HealthSpec {
    fn is_empty(&self) -> bool {
        self == &HealthSpec::default()
    }
}

/// See `spec.health.probeAccess`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProbeAccess {
    #[default]
    Network,
    PublishedPorts,
}

/// Health requirements of one service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceHealthSpec {
    /// When true, this service being stopped or unhealthy does not make the stack un-Ready
    /// (a one-shot job, a debugging sidecar). Its state is still reported.
    #[serde(default)]
    pub optional: bool,

    /// Checks the operator runs itself; all must pass for the service to be healthy. Without
    /// probes, the container's own Docker healthcheck (if any) decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,

    /// Seconds between two probe rounds.
    #[serde(default = "default_period")]
    pub period_seconds: u32,

    /// Seconds one probe may take before it counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,

    /// Consecutive failed rounds after which the service is unhealthy (and restarted).
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,

    /// Consecutive passed rounds after which an unhealthy service is healthy again.
    #[serde(default = "default_success_threshold")]
    pub success_threshold: u32,

    /// Seconds after the container starts before the first probe.
    #[serde(default)]
    pub initial_delay_seconds: u32,

    /// Seconds a container run has, from its start, to pass its probes for the first time
    /// before failing probes make it unhealthy (like a Kubernetes startupProbe). A database
    /// that runs initdb, or a backend that migrates, is not restarted for being slow; once a
    /// run has passed, `failureThreshold` alone counts.
    #[serde(default = "default_startup_seconds")]
    pub startup_seconds: u32,
}

impl Default for ServiceHealthSpec {
    fn default() -> Self {
        Self {
            optional: false,
            probes: Vec::new(),
            period_seconds: default_period(),
            timeout_seconds: default_timeout(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
            initial_delay_seconds: 0,
            startup_seconds: default_startup_seconds(),
        }
    }
}

fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    1
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_success_threshold() -> u32 {
    1
}
fn default_startup_seconds() -> u32 {
    60
}

/// One check. Exactly one of its fields is set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Probe {
    /// An HTTP GET to the service.
    Http(HttpProbe),
    /// A TCP connection to a port of the service.
    Tcp(TcpProbe),
    /// Connect to PostgreSQL and run `SELECT 1`.
    Postgres(PostgresProbe),
    /// `AUTH` (when a password is given) and `PING` Redis.
    Redis(RedisProbe),
    /// A command inside the container; exit code 0 passes.
    Exec(ExecProbe),
}

/// An HTTP GET. The URL's host must be a compose service and its port a container port, e.g.
/// `http://backend:8000/health`; the operator maps it to an address it can reach.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// `http://SERVICE:PORT/PATH`.
    pub url: String,
    /// Status the answer must have; any 2xx when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// A field of the JSON body that must have a given value, e.g. `{path: status, equals: healthy}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_field: Option<JsonFieldMatch>,
}

/// A JSON field the body must carry.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonFieldMatch {
    /// Dot-separated path into the body, e.g. `status` or `checks.database`.
    pub path: String,
    /// The value it must have, compared as text.
    pub equals: String,
}

/// A TCP connect.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// Container port.
    pub port: u16,
}

/// A PostgreSQL login and `SELECT 1` against the service the probe belongs to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresProbe {
    /// Container port; 5432 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database to connect to.
    pub database: String,
    /// User to log in as.
    pub user: String,
    /// Name of the entry of `spec.variables` that holds the password (never the password itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_variable: Option<String>,
}

/// A Redis `PING` against the service the probe belongs to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisProbe {
    /// Container port; 6379 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Name of the entry of `spec.variables` that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_variable: Option<String>,
}

/// A command run in the container through the Docker exec API.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    /// The command and its arguments (no shell unless you name one).
    pub command: Vec<String>,
}

/// Restart backoff and budget.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartSpec {
    /// Wait before the second restart of a service; doubles with each further restart.
    /// The first restart of a healthy service is immediate.
    #[serde(default = "default_backoff")]
    pub backoff_seconds: u32,
    /// Upper bound of that wait.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u32,
    /// Restarts of one service allowed in any hour; past it the stack is Degraded and the
    /// service is left alone until the hour has passed or the spec changes.
    #[serde(default = "default_budget")]
    pub max_restarts_per_hour: u32,
    /// Also restart the services that depend on a restarted one (the runbook's "restart backend
    /// to reset its connection pool" after the database came back).
    #[serde(default)]
    pub restart_dependents: bool,
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self {
            backoff_seconds: default_backoff(),
            max_backoff_seconds: default_max_backoff(),
            max_restarts_per_hour: default_budget(),
            restart_dependents: false,
        }
    }
}

fn default_backoff() -> u32 {
    10
}
fn default_max_backoff() -> u32 {
    300
}
fn default_budget() -> u32 {
    5
}

/// Scheduled maintenance.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceSpec {
    /// Restarts on a schedule, e.g. the nightly restart of a backend that leaks memory.
    #[serde(default)]
    pub restarts: Vec<ScheduledRestart>,
}

impl MaintenanceSpec {
    fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

/// One scheduled restart.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduledRestart {
    /// The compose service to restart.
    pub service: String,
    /// Cron expression (5 fields, or 6 with seconds first), e.g. `0 3 * * *`.
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Zurich`; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// What deleting the ServiceStack removes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove containers and networks; keep named volumes (the data).
    #[default]
    Retain,
    /// Remove containers, networks and named volumes. The data is gone.
    Delete,
    /// Remove nothing: the containers keep running, unmanaged.
    Orphan,
}

/// What the operator observed and concluded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStackStatus {
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Number of the applied configuration; goes up by one each time the operator applies a
    /// changed compose file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,

    /// Hash of the compose project that `revision` numbers. With it a restarted operator tells
    /// a changed spec from an unchanged one, so revision numbers never repeat or go back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,

    /// The newest revision the stack was Ready on: what a rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_revision: Option<u64>,

    /// The rollout of the newest revision: phase, the service being updated and its step,
    /// gates passed, and why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<rollout_status::RolloutStatus>,

    /// The manual rollback last asked for: the revision applied instead of the spec while the
    /// spec is unchanged, or why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<rollback_status::RollbackStatus>,

    /// One-word summary of the services: Healthy, Progressing, Unhealthy or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<StackHealth>,

    /// The compose project name in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,

    /// The compose project this stack created or adopted. Its containers that carry no
    /// stackwarden uid (adopted ones, or ones a person's `docker-compose up` replaced) are the
    /// stack's own: managed, healed and backed up, not a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_project: Option<String>,

    /// State of each service's container, as Docker reports it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceStatus>,

    /// Last slot of each scheduled restart (`spec.maintenance.restarts`), keyed
    /// `SERVICE SCHEDULE`: a slot is never run twice, even across operator restarts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub maintenance: BTreeMap<String, chrono::DateTime<chrono::Utc>>,

    /// Each backup target (`spec.backups`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<String, BackupTargetStatus>,

    /// When the newest successful backup of any target finished (the LAST BACKUP column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_backup: Option<chrono::DateTime<chrono::Utc>>,

    /// Standard conditions: Ready, Progressing, Degraded, InvalidSpec, DockerUnreachable,
    /// BackupFailed, BackupStale.
    /// Each key of `spec.keyRotation`: what its age counts from, when it is due, how its last
    /// rotation went. Never a value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: keys::KeyStatuses,

    /// Each certificate of `spec.keyRotation.certificates` that could be read: its subject
    /// and expiry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, keys::CertificateStatus>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One-word stack health for the HEALTH column.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StackHealth {
    Healthy,
    Progressing,
    Unhealthy,
    Unknown,
}

/// The observed state of one service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Container state: running, exited, restarting, created, paused, dead, or missing.
    pub state: ContainerState,
    /// The verdict on the service's health: its probes when it has some, else its Docker
    /// healthcheck; absent when neither exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ContainerHealth>,
    /// Image the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Short container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Exit code of the last run, when the container is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Restarts of this service, by the operator or by Docker's restart policy.
    #[serde(default)]
    pub restarts: i64,
    /// Docker's restart count of the current container (the operator notices Docker's own
    /// restarts by its growth).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub docker_restarts: i64,
    /// Probe rounds failed in a row.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub consecutive_failures: u32,
    /// The latest change of the probes' result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeRecord>,
    /// The last restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<RestartRecord>,
    /// Times of the restarts within the last hour: the budget (`maxRestartsPerHour`) and the
    /// backoff are counted from them, so they survive an operator restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub recent_restarts: Vec<chrono::DateTime<chrono::Utc>>,
    /// The operator switched Docker's restart policy of the container off (`no`): the service
    /// went past its restart budget and Docker's own loop would have gone on restarting it. Put
    /// back when the budget allows a restart again or the spec changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub docker_policy_suspended: bool,
    /// The service fails its probes while a service it depends on is (or just was) down: it is
    /// not restarted for that, the fault being the dependency's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<DependencyWait>,
    /// The service is held: kept stopped, neither started nor repaired, until the hold ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldStatus>,
}

/// Who holds a service stopped, since and until when.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldStatus {
    /// A person (the `by=` of the hold annotation, or `stackwarden hold`'s user), or the
    /// restore that stops the service.
    pub by: String,
    #[schemars(with = "String")]
    pub since: chrono::DateTime<chrono::Utc>,
    /// When the hold ends by itself (absent: when it is withdrawn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A dependent left alone during its dependency's outage.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyWait {
    /// The dependency (`depends_on`) that is or was down.
    pub service: String,
    /// When the dependency was seen healthy again: from then the dependent gets
    /// `failureThreshold` probe rounds of its own before it is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub recovered: Option<chrono::DateTime<chrono::Utc>>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The outcome of a probe round.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRecord {
    /// When the probes' result (pass or fail, and its message) last changed; a round with the
    /// same result does not move it, so a steady service does not rewrite its status.
    #[schemars(with = "String")]
    pub time: chrono::DateTime<chrono::Utc>,
    /// Whether every probe passed.
    pub passed: bool,
    /// What failed and why, or "all probes passed".
    pub message: String,
}

/// One restart.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    /// When it happened.
    #[schemars(with = "String")]
    pub time: chrono::DateTime<chrono::Utc>,
    /// Why: Crashed, OOMKilled, ProbeFailed, Scheduled or Dependency.
    pub reason: RestartReason,
    /// Who restarted it: the operator, or Docker's own restart policy.
    pub by: Restarter,
}

/// Why a service was restarted. The event reason is the same word.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestartReason {
    /// The container exited.
    Crashed,
    /// The kernel's OOM killer ended it (its memory limit).
    OOMKilled,
    /// Its probes (or Docker healthcheck) failed `failureThreshold` times in a row.
    ProbeFailed,
    /// A scheduled maintenance restart.
    Scheduled,
    /// A service it depends on was restarted (`restartDependents`).
    Dependency,
    /// It was stopped on request (`docker stop`, `docker-compose stop`) outside the operator,
    /// which started it again; `stackwarden hold` keeps a service stopped.
    Stopped,
}

impl std::fmt::Display for RestartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who restarted a service.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Restarter {
    Operator,
    Docker,
}

/// Container state as Docker names it, plus `missing` when there is no container.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Running,
    Exited,
    Restarting,
    Created,
    Paused,
    Dead,
    Removing,
    #[default]
    Missing,
}

/// Docker healthcheck status.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

impl ContainerState {
    /// The lowercase name, as in status and `docker ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Restarting => "restarting",
            ContainerState::Created => "created",
            ContainerState::Paused => "paused",
            ContainerState::Dead => "dead",
            ContainerState::Removing => "removing",
            ContainerState::Missing => "missing",
        }
    }
}

impl RestartReason {
    /// The CamelCase name: event reason and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crashed => "Crashed",
            RestartReason::OOMKilled => "OOMKilled",
            RestartReason::ProbeFailed => "ProbeFailed",
            RestartReason::Scheduled => "Scheduled",
            RestartReason::Dependency => "Dependency",
            RestartReason::Stopped => "Stopped",
        }
    }
}

impl ServiceStack {
    /// The compose project name: `spec.compose.projectName`, else the resource name.
    pub fn project_name(&self) -> String {
        self.spec
            .compose
            .project_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// `namespace/name`, the key used in logs, the local store and container labels.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

/// Checks a stack's namespace and name as the API server checks them (a namespace is an RFC
/// 1123 label, a custom resource's name an RFC 1123 subdomain), so that local mode refuses
/// what a cluster would, before either becomes a directory or a Docker label.
pub fn check_names(namespace: &str, name: &str) -> Result<(), String> {
    let shown = |s: &str| {
        let mut short: String = s.chars().take(64).collect();
        if short.len() < s.len() {
            short.push('…');
        }
        short
    };
    if !is_dns1123_label(namespace) {
        return Err(format!(
            "metadata.namespace {:?} is not a valid namespace: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
            shown(namespace)
        ));
    }
    // As the API server's IsDNS1123Subdomain: 253 in all, no bound on a part.
    let subdomain = name.len() <= 253 && name.split('.').all(dns1123_label_format);
    if !subdomain {
        return Err(format!(
            "metadata.name {:?} is not a valid name: at most 253 lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit",
            shown(name)
        ));
    }
    Ok(())
}

fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && dns1123_label_format(s)
}

fn dns1123_label_format(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Reads a ServiceStack from parsed YAML. Through JSON, because yaml_serde (like serde_yaml) reads an enum
/// only from a YAML tag (`!http`), while manifests write probes as `- http: {...}`, the way
/// the Kubernetes API (JSON) reads them too.
pub fn from_yaml_value(value: yaml_serde::Value) -> Result<ServiceStack, String> {
    let json =
        serde_json::to_value(value).map_err(|e| format!("not a JSON-compatible document: {e}"))?;
    serde_json::from_value(json).map_err(|e| e.to_string())
}

/// The CRD as YAML, exactly what `stackwarden crd` prints and `crds/servicestack.yaml` holds.
pub fn crd_yaml() -> String {
    let mut crd = serde_json::to_value(ServiceStack::crd()).expect("CRD serializes");
    for version in crd["spec"]["versions"]
        .as_array_mut()
        .expect("a CRD has versions")
    {
        fit_for_kubectl(&mut version["schema"]["openAPIV3Schema"]);
    }
    yaml_serde::to_string(&crd).expect("CRD renders as YAML")
}

/// Removes, in a schema node and every node below it, what schemars emits but a CRD cannot
/// hold:
/// - `additionalProperties: false`, from `deny_unknown_fields`: a structural schema may not
///   contain it. The API server rejects unknown fields on its own (strict field validation,
///   the `kubectl` default), so nothing is lost.
/// - `null` among the `enum` values of an optional enum: kubectl's client-side validation
///   cannot type a null (`unknown object type "nil"`). The node keeps `nullable: true`, which
///   is what lets the field be null.
fn fit_for_kubectl(schema: &mut serde_json::Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    if node.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
        node.remove("additionalProperties");
    }
    if let Some(serde_json::Value::Array(values)) = node.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for (key, sub) in node.iter_mut() {
        match (key.as_str(), sub) {
            ("properties", serde_json::Value::Object(fields)) => {
                fields.values_mut().for_each(fit_for_kubectl)
            }
            ("items" | "additionalProperties" | "not", sub) => fit_for_kubectl(sub),
            ("allOf" | "anyOf" | "oneOf", serde_json::Value::Array(branches)) => {
                branches.iter_mut().for_each(fit_for_kubectl)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_the_api_server_checks_them() {
        for (ns, name) in [
            ("default", "demo"),
            ("ops", "shop.v2"),
            ("a", "0-9"),
            ("default", &*"a".repeat(253)),
        ] {
            assert_eq!(check_names(ns, name), Ok(()), "{ns}/{name}");
        }
        let long = "a".repeat(308);
        for (ns, name) in [
            ("default", "Demo"),
            ("default", "démo"),
            ("default", "-demo"),
            ("default", "demo-"),
            ("default", "a..b"),
            ("default", ""),
            ("default", &*long),
            ("Ops", "demo"),
            ("ops.team", "demo"),
            (&*"n".repeat(64), "demo"),
        ] {
            assert!(check_names(ns, name).is_err(), "{ns}/{name} passed");
        }
        let e = check_names("default", &long).unwrap_err();
        assert!(e.len() < 300, "the message quotes a long name whole: {e}");
    }

    #[test]
    fn probes_read_from_plain_yaml() {
        let yaml = r#"
apiVersion: stackwarden.dev/v1alpha1
kind: ServiceStack
metadata: {name: demo}
spec:
  compose: {file: "services: {}"}
  health:
    services:
      backend:
        probes:
          - http: {url: "http://backend:8000/health", expectStatus: 200}
          - tcp: {port: 8000}
"#;
        let s = from_yaml_value(yaml_serde::from_str(yaml).unwrap()).unwrap();
        assert_eq!(s.spec.health.services["backend"].probes.len(), 2);
        assert!(matches!(
            s.spec.health.services["backend"].probes[1],
            Probe::Tcp(TcpProbe { port: 8000 })
        ));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let yaml = r#"
apiVersion: stackwarden.dev/v1alpha1
kind: ServiceStack
metadata: {name: demo}
spec:
  compose: {file: "services: {}"}
  backupz: {}
"#;
        let err = yaml_serde::from_str::<ServiceStack>(yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `backupz`"), "{err}");
    }

    #[test]
    fn a_variables_source_is_exactly_one_of_a_secret_or_a_file() {
        // Read as manifests are (`from_yaml_value`): through JSON, where an enum is a one-key map.
        let spec = |sources: &str| {
            let yaml: yaml_serde::Value =
                yaml_serde::from_str(&format!("compose: {{file: x}}\nvariablesFrom: {sources}"))
                    .unwrap();
            serde_json::from_value::<ServiceStackSpec>(serde_json::to_value(yaml).unwrap())
        };
        let parsed = spec("[{secretRef: {name: db}}, {file: stack.env}]").unwrap();
        assert_eq!(
            parsed.variables_from,
            vec![
                VariablesSource::SecretRef(SecretRef { name: "db".into() }),
                VariablesSource::File("stack.env".into()),
            ]
        );
        // Written back in the shape existing manifests have.
        let json = serde_json::to_value(&parsed.variables_from).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"secretRef": {"name": "db"}}, {"file": "stack.env"}])
        );
        for bad in [
            "[{secretRef: {name: db}, file: stack.env}]",
            "[{}]",
            "[{env: x}]",
        ] {
            assert!(spec(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn crd_schema_is_structural_and_documented() {
        let yaml = crd_yaml();
        assert!(!yaml.contains("additionalProperties: false"));
        let crd: serde_json::Value = yaml_serde::from_str(&yaml).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        // Every property of the spec has a description, recursively, so `kubectl explain` helps.
        fn check(path: &str, schema: &serde_json::Value) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    let here = format!("{path}.{name}");
                    assert!(
                        sub.get("description").is_some(),
                        "{here} has no description"
                    );
                    check(&here, sub);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(sub) = schema.get(key) {
                    check(path, sub);
                }
            }
        }
        check("spec", spec);
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "sst");
        let columns = &crd["spec"]["versions"][0]["additionalPrinterColumns"];
        let names: Vec<_> = columns
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Ready",
                "Health",
                "Revision",
                "Last Backup",
                "Age",
                "Reason",
                "Message"
            ]
        );
        // Reason and message only with `-o wide`: they are long.
        for wide in &columns.as_array().unwrap()[5..] {
            assert_eq!(wide["priority"], 1, "{wide}");
        }
        assert_eq!(crd["spec"]["names"]["categories"][0], "stackwarden");
        let description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
            .as_str()
            .unwrap();
        assert!(
            description.starts_with("A Docker Compose stack"),
            "{description}"
        );
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
}
