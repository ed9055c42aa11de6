//! What was observed of a project: plain data, no Docker client. The pure decisions (plan,
//! heal, report) read these; the Docker adapter (`crate::docker`) fills them and re-exports them.
//! A reconcile pass takes one [`Snapshot`] before it does anything, and decides on it.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{ContainerHealth, ContainerState};

/// Which containers of a compose project are a stack's own: those labelled with its uid, and,
/// once the stack owns the project (it created or adopted it, see
/// `status.ownedProject`) or is told to adopt it, those labelled with no stack's uid at all
/// (created by docker-compose, by hand or by a person's `docker-compose up`). Labels cannot be
/// added to a running container, so for the latter ownership lives in the status, not on
/// Docker. The one place that rule lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Claim {
    pub uid: String,
    /// Whether containers without a uid label are the stack's own.
    pub unlabelled: bool,
}

impl Claim {
    /// Only what carries `uid`.
    pub fn labelled(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            unlabelled: false,
        }
    }

    pub fn owns(&self, c: &ObservedContainer) -> bool {
        match &c.uid {
            Some(u) => *u == self.uid,
            None => self.unlabelled,
        }
    }
}

/// One container as Docker reports it, with the labels the planner needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub service: String,
    pub uid: Option<String>,
    /// The operator's own config hash ([`crate::docker::labels::OWN_CONFIG_HASH`]); none on a container
    /// docker-compose created.
    pub config_hash: Option<String>,
    /// docker-compose's `com.docker.compose.config-hash`.
    pub compose_hash: Option<String>,
    pub revision: Option<u64>,
    pub spec_hash: Option<String>,
    pub state: ContainerState,
    pub health: Option<ContainerHealth>,
    pub image: String,
    pub exit_code: Option<i64>,
    pub restart_count: i64,
    /// Docker network name -> the container's address on it (probes reach it there).
    pub addresses: BTreeMap<String, std::net::IpAddr>,
    /// `PORT/PROTO` of the container -> where the engine's host publishes it.
    pub published: BTreeMap<String, std::net::SocketAddr>,
    /// Whether the kernel's OOM killer ended the container's last run.
    pub oom_killed: bool,
    /// When the container last started.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When its last run ended (none while it has never stopped).
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Docker's restart policy as the container has it now: the spec's, unless the operator
    /// switched it off to end a crash loop past its budget (None: not reported).
    pub restart_policy: Option<crate::compose::RestartPolicy>,
}

/// Everything of a project Docker knows about.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Containers labelled with the project, ours or not.
    pub containers: Vec<ObservedContainer>,
    /// Names of networks that exist among those the project uses.
    pub networks: BTreeSet<String>,
    /// Names of volumes that exist among those the project uses.
    pub volumes: BTreeSet<String>,
    /// Images present on the engine among those the project uses.
    pub images: BTreeSet<String>,
    /// Their ids (docker-compose's config hash includes the image id).
    pub image_ids: BTreeMap<String, String>,
}

/// What one reconcile pass sees of its stack, taken once before anything is done: what the
/// pass decides before acting is decided on this view alone, and everything it decides at
/// this one `now`, never at a second reading of the clock. What runs *after* an acting step
/// is that step's own answer (the converge [`Outcome`](crate::decide::plan::Outcome)), not a
/// new snapshot.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The project on the engine.
    pub observed: Observed,
    /// The probers' verdicts, by service.
    pub probes: BTreeMap<String, ProbeVerdict>,
    /// The status as the pass found it.
    pub previous: crate::api::ServiceStackStatus,
    /// The moment the pass decides at.
    pub now: chrono::DateTime<chrono::Utc>,
}

/// The prober's current verdict on a service with probes.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeVerdict {
    /// None until `successThreshold` or `failureThreshold` rounds have decided it.
    pub healthy: Option<bool>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last: Option<crate::api::ProbeRecord>,
    /// The probe cannot do its job as configured (a wrong password, an unpublished port): says
    /// nothing about the service, so it is no fault and causes no restart; the message tells
    /// the user what to fix.
    pub misconfigured: Option<String>,
    /// The start time of the container run the verdict is about. A verdict about an earlier run
    /// (before a restart) says nothing about the current one.
    pub run_started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The 12-character id `docker ps` shows.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}
