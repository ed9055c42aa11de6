//! Pure mappings between the compose model and Docker's request and response bodies.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HealthConfig, HealthStatusEnum, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};

use super::{labels, ObservedContainer, Owner};
use crate::api::{ContainerHealth, ContainerState};
use crate::compose::{
    HealthcheckSpec, MountSpec, NetworkSpec, RestartPolicy as Restart, ServiceSpec, VolumeSpec,
};

/// The compose version we claim in labels; docker-compose 1.29 reads containers of any version.
const COMPOSE_VERSION: &str = "2.0.0";

fn owner_labels(owner: &Owner) -> HashMap<String, String> {
    HashMap::from([
        (labels::PROJECT.to_owned(), owner.project.clone()),
        (labels::STACK.to_owned(), owner.stack.clone()),
        (labels::UID.to_owned(), owner.uid.clone()),
    ])
}

/// Networks and volumes carry docker-compose's labels only: it warns "label ... has changed"
/// on every `up` for any other label than the file's own, and a stack finds its networks and
/// volumes by project anyway (it owns the project: see [`super::Claim`]).
fn compose_resource_labels(owner: &Owner, kind: &str, key: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::PROJECT.to_owned(), owner.project.clone()),
        (kind.to_owned(), key.to_owned()),
        (labels::VERSION.to_owned(), COMPOSE_VERSION.to_owned()),
    ])
}

pub fn network_body(net: &NetworkSpec, owner: &Owner) -> NetworkCreateRequest {
    let mut l = compose_resource_labels(owner, labels::NETWORK, &net.key);
    l.extend(net.labels.clone());
    NetworkCreateRequest {
        name: net.name.clone(),
        driver: Some(net.driver.clone().unwrap_or_else(|| "bridge".to_owned())),
        internal: Some(net.internal),
        attachable: Some(net.attachable),
        labels: Some(l),
        ..Default::default()
    }
}

pub fn volume_body(vol: &VolumeSpec, owner: &Owner) -> VolumeCreateRequest {
    let mut l = compose_resource_labels(owner, labels::VOLUME, &vol.key);
    l.extend(vol.labels.clone());
    VolumeCreateRequest {
        name: Some(vol.name.clone()),
        driver: vol.driver.clone(),
        driver_opts: Some(vol.driver_opts.clone().into_iter().collect()),
        labels: Some(l),
        ..Default::default()
    }
}

pub fn container_body(
    svc: &ServiceSpec,
    owner: &Owner,
    revision: u64,
    spec_hash: &str,
    image_id: Option<&str>,
) -> ContainerCreateBody {
    let labels = container_labels(svc, owner, revision, spec_hash, image_id);
    let (exposed, bindings) = ports(svc);
    let first_network = svc.networks.first();
    ContainerCreateBody {
        image: Some(svc.image.clone()),
        cmd: svc.command.clone(),
        entrypoint: svc.entrypoint.clone(),
        env: Some(
            svc.environment
                .0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(labels),
        user: svc.user.clone(),
        working_dir: svc.working_dir.clone(),
        hostname: svc.hostname.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: svc.healthcheck.as_ref().map(health_config),
        tty: Some(svc.tty),
        open_stdin: Some(svc.stdin_open),
        stop_signal: svc.stop_signal.clone(),
        stop_timeout: svc.stop_grace_period_s,
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: Some(svc.mounts.iter().map(mount).collect()),
            restart_policy: Some(restart_policy(svc.restart)),
            memory: svc.memory_bytes,
            nano_cpus: svc.nano_cpus,
            init: svc.init.then_some(true),
            extra_hosts: (!svc.extra_hosts.is_empty()).then(|| svc.extra_hosts.clone()),
            network_mode: first_network.map(|n| n.network.clone()),
            ..Default::default()
        }),
        networking_config: first_network.map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.network.clone(),
                EndpointSettings {
                    aliases: Some(n.aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// The file's labels, then the ones docker-compose and the operator read back: the owner, the
/// service, both config hashes, the revision and spec hash it was created for.
fn container_labels(
    svc: &ServiceSpec,
    owner: &Owner,
    revision: u64,
    spec_hash: &str,
    image_id: Option<&str>,
) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = svc.labels.clone().into_iter().collect();
    l.extend(owner_labels(owner));
    for (k, v) in [
        (labels::SERVICE, svc.name.clone()),
        (labels::CONFIG_HASH, svc.compose_hash(image_id)),
        (labels::OWN_CONFIG_HASH, svc.config_hash()),
        (labels::CONTAINER_NUMBER, "1".to_owned()),
        (labels::ONEOFF, "False".to_owned()),
        (labels::VERSION, COMPOSE_VERSION.to_owned()),
        (labels::REVISION, revision.to_string()),
        (labels::SPEC_HASH, spec_hash.to_owned()),
    ] {
        l.insert(k.to_owned(), v);
    }
    l
}

type PortBindings = HashMap<String, Option<Vec<PortBinding>>>;

/// The exposed ports (`expose:` and the published ones, sorted, once each) and the bindings
/// of the published ones.
fn ports(svc: &ServiceSpec) -> (Vec<String>, PortBindings) {
    let mut exposed: Vec<String> = svc
        .expose
        .iter()
        .map(|e| {
            if e.contains('/') {
                e.clone()
            } else {
                format!("{e}/tcp")
            }
        })
        .collect();
    let mut bindings: PortBindings = HashMap::new();
    for p in &svc.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port.map(|h| h.to_string()),
            });
    }
    exposed.sort();
    exposed.dedup();
    (exposed, bindings)
}

fn mount(m: &MountSpec) -> Mount {
    match m {
        MountSpec::Volume {
            source,
            target,
            read_only,
        } => Mount {
            typ: Some(MountType::VOLUME),
            source: Some(source.clone()),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            ..Default::default()
        },
        MountSpec::Anonymous { target } => Mount {
            typ: Some(MountType::VOLUME),
            target: Some(target.clone()),
            ..Default::default()
        },
        MountSpec::Bind {
            source,
            target,
            read_only,
        } => Mount {
            typ: Some(MountType::BIND),
            source: Some(source.clone()),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            ..Default::default()
        },
        MountSpec::Tmpfs { target } => Mount {
            typ: Some(MountType::TMPFS),
            target: Some(target.clone()),
            ..Default::default()
        },
    }
}

fn health_config(h: &HealthcheckSpec) -> HealthConfig {
    match h {
        HealthcheckSpec::Disabled => HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..Default::default()
        },
        HealthcheckSpec::Check {
            test,
            interval_ns,
            timeout_ns,
            retries,
            start_period_ns,
        } => HealthConfig {
            test: (!test.is_empty()).then(|| test.clone()),
            interval: *interval_ns,
            timeout: *timeout_ns,
            retries: *retries,
            start_period: *start_period_ns,
            ..Default::default()
        },
    }
}

/// Docker's form of a compose restart policy.
pub fn restart_policy(policy: Restart) -> RestartPolicy {
    RestartPolicy {
        name: Some(match policy {
            Restart::No => RestartPolicyNameEnum::NO,
            Restart::Always => RestartPolicyNameEnum::ALWAYS,
            Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        }),
        maximum_retry_count: None,
    }
}

pub fn observed_container(id: String, inspect: ContainerInspectResponse) -> ObservedContainer {
    let labels = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let state = inspect.state.as_ref();
    let settings = inspect.network_settings.as_ref();
    ObservedContainer {
        id,
        name: inspect
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        service: labels.get(labels::SERVICE).cloned().unwrap_or_default(),
        uid: labels.get(labels::UID).cloned(),
        config_hash: own_config_hash(&labels),
        compose_hash: labels.get(labels::CONFIG_HASH).cloned(),
        revision: labels.get(labels::REVISION).and_then(|r| r.parse().ok()),
        spec_hash: labels.get(labels::SPEC_HASH).cloned(),
        state: container_state(state.and_then(|s| s.status)),
        health: state
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.status)
            .and_then(container_health),
        image: inspect
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        exit_code: state.and_then(|s| s.exit_code),
        restart_count: inspect.restart_count.unwrap_or(0),
        addresses: settings
            .and_then(|n| n.networks.as_ref())
            .map(addresses)
            .unwrap_or_default(),
        published: settings
            .and_then(|n| n.ports.as_ref())
            .map(published)
            .unwrap_or_default(),
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        started_at: state.and_then(|s| docker_time(s.started_at.as_deref())),
        finished_at: state.and_then(|s| docker_time(s.finished_at.as_deref())),
        restart_policy: inspect
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|p| p.name)
            .map(|n| match n {
                RestartPolicyNameEnum::ALWAYS => Restart::Always,
                RestartPolicyNameEnum::ON_FAILURE => Restart::OnFailure,
                RestartPolicyNameEnum::UNLESS_STOPPED => Restart::UnlessStopped,
                _ => Restart::No,
            }),
    }
}

/// The operator's own config hash of a container.
fn own_config_hash(labels: &HashMap<String, String>) -> Option<String> {
    // Containers of operators before the label existed carry the operator's own hash in
    // docker-compose's label; reading it keeps them from all being recreated on upgrade.
    labels
        .get(labels::OWN_CONFIG_HASH)
        .or_else(|| {
            labels
                .contains_key(labels::UID)
                .then(|| labels.get(labels::CONFIG_HASH))
                .flatten()
        })
        .cloned()
}

fn container_state(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Exited,
    }
}

fn container_health(h: HealthStatusEnum) -> Option<ContainerHealth> {
    match h {
        HealthStatusEnum::STARTING => Some(ContainerHealth::Starting),
        HealthStatusEnum::HEALTHY => Some(ContainerHealth::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(ContainerHealth::Unhealthy),
        _ => None,
    }
}

/// The container's address on each network it is on.
fn addresses(
    networks: &HashMap<String, EndpointSettings>,
) -> std::collections::BTreeMap<String, std::net::IpAddr> {
    networks
        .iter()
        .filter_map(|(name, ep)| Some((name.clone(), ep.ip_address.as_deref()?.parse().ok()?)))
        .collect()
}

/// Where each published port is reachable from the operator's host.
fn published(
    ports: &HashMap<String, Option<Vec<PortBinding>>>,
) -> std::collections::BTreeMap<String, std::net::SocketAddr> {
    ports
        .iter()
        .filter_map(|(port, bindings)| {
            // Prefer the IPv4 binding; 0.0.0.0 means "every address", so loopback works.
            let b = bindings
                .as_ref()?
                .iter()
                .find(|b| b.host_ip.as_deref().is_none_or(|ip| !ip.contains(':')))?;
            let ip = match b.host_ip.as_deref() {
                None | Some("") | Some("0.0.0.0") => "127.0.0.1",
                Some(ip) => ip,
            };
            Some((
                port.clone(),
                format!("{ip}:{}", b.host_port.as_deref()?).parse().ok()?,
            ))
        })
        .collect()
}

/// Docker reports times as RFC 3339, and "0001-01-01T00:00:00Z" for "never".
fn docker_time(t: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = chrono::DateTime::parse_from_rfc3339(t?)
        .ok()?
        .with_timezone(&chrono::Utc);
    (t.timestamp() > 0).then_some(t)
}
