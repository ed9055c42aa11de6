//! The normalized project: what the Docker layer creates and what the planner compares.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A compose project, services in start order (every service after its dependencies).
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub name: String,
    pub networks: Vec<NetworkSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub services: Vec<ServiceSpec>,
}

impl Project {
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services.iter().map(|s| s.name.clone()).collect()
    }

    /// Hash of the whole project; a change of any service changes it. Used to number revisions.
    pub fn spec_hash(&self) -> String {
        let mut h = Sha256::new();
        for s in &self.services {
            h.update(s.name.as_bytes());
            h.update(s.config_hash().as_bytes());
        }
        hex::encode(h.finalize())[..16].to_owned()
    }
}

/// A network the project owns (or uses, when external).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkSpec {
    /// Key in the compose file (`default` for the implicit one).
    pub key: String,
    /// Docker name: `<project>_<key>` unless `name:` or external says otherwise.
    pub name: String,
    pub driver: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    /// Created by someone else; never created or removed by the operator.
    pub external: bool,
}

/// A named volume the project owns (or uses, when external).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VolumeSpec {
    pub key: String,
    /// Docker name: `<project>_<key>` unless `name:` or external says otherwise.
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub external: bool,
}

/// One service, normalized. Everything that, when changed, needs a new container is in here,
/// and nothing else: its hash is the `stackwarden.dev/config-hash` label.
#[derive(Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    /// docker-compose 1.29's view of the same service, for its `config-hash` label (None where
    /// it cannot be reproduced). Derived from the rest, so out of [`Self::config_hash`].
    #[serde(skip)]
    pub compose_v1: Option<super::compose_v1::ComposeV1Config>,
    pub pull_policy: PullPolicy,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: Environment,
    pub ports: Vec<PortSpec>,
    pub expose: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub networks: Vec<ServiceNetwork>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<HealthcheckSpec>,
    pub restart: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub stop_signal: Option<String>,
    pub stop_grace_period_s: Option<i64>,
    pub init: bool,
    pub tty: bool,
    pub stdin_open: bool,
    pub extra_hosts: Vec<String>,
    /// `container_name:`: the container is named exactly so, instead of `<project>-<service>-1`.
    /// Left out of the hash when unset, so containers created before it existed keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_name: Option<String>,
    /// `build:` (local mode only): `image` is then the build's content tag, which already stands
    /// for everything here, so the build itself stays out of the config hash.
    #[serde(skip)]
    pub build: Option<BuildSpec>,
}

/// How to build a service's image, resolved: absolute context, and the tag its content gives.
#[derive(Clone, PartialEq)]
pub struct BuildSpec {
    /// `stackwarden-build/<project>-<service>:<12 hex of content, Dockerfile, args, target>`.
    pub image: String,
    pub context: std::path::PathBuf,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    /// Build args; may hold variable values, so never logged.
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The service's `image:` when it has one besides `build:`: the build is tagged so too, as
    /// `docker-compose build` does, so the runbooks' `docker run IMAGE` finds the latest build.
    pub also_tag: Option<String>,
}

impl fmt::Debug for BuildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Build args are often tokens: their names only.
        f.debug_struct("BuildSpec")
            .field("image", &self.image)
            .field("context", &self.context)
            .field("dockerfile", &self.dockerfile)
            .field("args", &self.args.keys().collect::<Vec<_>>())
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ServiceSpec {
    /// Stable hash of the container-defining config. Environment values go in hashed, never in
    /// clear, so the label reveals nothing.
    pub fn config_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("service spec serializes");
        hex::encode(Sha256::digest(json))
    }

    /// The `com.docker.compose.config-hash` docker-compose 1.29 computes for this service, given
    /// the id of its image on the engine; this operator's own hash where that cannot be
    /// reproduced.
    pub fn compose_hash(&self, image_id: Option<&str>) -> String {
        self.compose_v1
            .as_ref()
            .map_or_else(|| self.config_hash(), |c| c.hash(image_id))
    }

    /// Docker container name: `container_name:` when given, else in Compose v2 style so
    /// `docker compose` and `docker-compose` both recognise it.
    pub fn container_name(&self, project: &str) -> String {
        match &self.fixed_name {
            Some(name) => name.clone(),
            None => format!("{project}-{}-1", self.name),
        }
    }
}

/// Environment of a container. Its values are often passwords, so `Debug` prints keys only.
#[derive(Clone, Default, PartialEq, Serialize)]
pub struct Environment(pub BTreeMap<String, String>);

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Command lines can carry secrets too (`--requirepass $PW`); show only the shape.
        f.debug_struct("ServiceSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("environment", &self.environment)
            .field("ports", &self.ports)
            .field("depends_on", &self.depends_on)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PullPolicy {
    /// Pull only when the image is not on the engine (compose's `missing`, the default).
    Missing,
    /// Never pull; a missing image is an error.
    Never,
    /// Pull before every create.
    Always,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortSpec {
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: Option<String>,
    /// None: Docker picks a free host port.
    pub host_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum MountSpec {
    /// A named volume; `source` is the Docker volume name.
    Volume {
        source: String,
        target: String,
        read_only: bool,
    },
    /// Anonymous volume at `target`.
    Anonymous {
        target: String,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceNetwork {
    /// Docker network name.
    pub network: String,
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dependency {
    pub service: String,
    pub condition: DependencyCondition,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DependencyCondition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HealthcheckSpec {
    /// `disable: true` or `test: ["NONE"]`: turn off the image's healthcheck.
    Disabled,
    Check {
        /// Docker's form: `["CMD", ...]` or `["CMD-SHELL", "..."]`; empty keeps the image's test.
        test: Vec<String>,
        interval_ns: Option<i64>,
        timeout_ns: Option<i64>,
        retries: Option<i64>,
        start_period_ns: Option<i64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn docker_name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}
