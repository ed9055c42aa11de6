//! Where a probe connects: "service `backend`, container port 8000" to a socket address.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{ProbeError, ProbeErrorKind};
use crate::api::{ContainerState, ProbeAccess};
use crate::compose::Project;
use crate::docker::{Claim, ObservedContainer};

/// The containers of one stack as probes see them, from one observation.
///
/// `probeAccess: Network` (the default) connects to the container's address on one of the
/// service's project networks: it needs an operator on the Docker host (local mode, or a pod
/// with host networking), where the host routes to bridge networks. `PublishedPorts` connects to
/// the address where the engine's host publishes the port (`ports:` in the compose file): it
/// works from anywhere that reaches that host, but only for published ports.
#[derive(Clone, Debug)]
pub struct Targets {
    access: ProbeAccess,
    services: BTreeMap<String, ServiceTarget>,
}

#[derive(Clone, Debug)]
struct ServiceTarget {
    /// Docker names of the service's networks, in the compose file's order.
    networks: Vec<String>,
    /// The container probes go to, when the service has one.
    container: Option<ObservedContainer>,
}

impl Targets {
    /// Only the stack's own containers count (see [`Claim`]): a namesake project's containers
    /// are never probed.
    pub fn new(
        project: &Project,
        containers: &[ObservedContainer],
        access: ProbeAccess,
        claim: &Claim,
    ) -> Self {
        let services = project
            .services
            .iter()
            .map(|svc| {
                let hash = svc.config_hash();
                // During a recreate a service may briefly have two containers: prefer a running
                // one, then the one created for the current spec.
                let container = containers
                    .iter()
                    .filter(|c| c.service == svc.name && claim.owns(c))
                    .max_by_key(|c| {
                        (
                            c.state == ContainerState::Running,
                            c.config_hash.as_deref() == Some(hash.as_str()),
                        )
                    })
                    .cloned();
                (
                    svc.name.clone(),
                    ServiceTarget {
                        networks: svc.networks.iter().map(|n| n.network.clone()).collect(),
                        container,
                    },
                )
            })
            .collect();
        Self { access, services }
    }

    pub fn access(&self) -> ProbeAccess {
        self.access
    }

    fn service(&self, service: &str) -> Result<&ServiceTarget, ProbeError> {
        self.services.get(service).ok_or_else(|| {
            ProbeError::new(
                ProbeErrorKind::UnknownService,
                format!(
                    "the probe names service `{service}`, which the compose file does not define (it has: {}); fix the probe",
                    self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// The service's running container.
    pub fn container(&self, service: &str) -> Result<&ObservedContainer, ProbeError> {
        let Some(c) = &self.service(service)?.container else {
            return Err(ProbeError::new(
                ProbeErrorKind::NotRunning,
                format!("service `{service}` has no container; it is probed once it runs"),
            ));
        };
        if c.state != ContainerState::Running {
            let state = serde_json::to_value(c.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", c.state));
            let exit = match (c.state, c.exit_code) {
                (ContainerState::Exited | ContainerState::Dead, Some(code)) => {
                    format!(" (exit code {code})")
                }
                _ => String::new(),
            };
            return Err(ProbeError::new(
                ProbeErrorKind::NotRunning,
                format!(
                    "service `{service}` is not running: its container {} is {state}{exit}; see `docker logs {}`",
                    c.name, c.name
                ),
            ));
        }
        Ok(c)
    }

    /// Where to connect to `container_port` (TCP) of the service's running container.
    pub fn address(&self, service: &str, container_port: u16) -> Result<SocketAddr, ProbeError> {
        let target = self.service(service)?;
        let c = self.container(service)?;
        match self.access {
            ProbeAccess::Network => target
                .networks
                .iter()
                .find_map(|net| c.addresses.get(net))
                .map(|ip| SocketAddr::new(*ip, container_port))
                .ok_or_else(|| {
                    ProbeError::new(
                        ProbeErrorKind::Unreachable,
                        format!(
                            "container {} of service `{service}` has no address on the project's networks ({}); it is on: {}",
                            c.name,
                            target.networks.join(", "),
                            if c.addresses.is_empty() {
                                "none".to_owned()
                            } else {
                                c.addresses.keys().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    )
                }),
            ProbeAccess::PublishedPorts => c
                .published
                .get(&format!("{container_port}/tcp"))
                .copied()
                .ok_or_else(|| {
                    ProbeError::new(
                        ProbeErrorKind::NotPublished,
                        format!(
                            "port {container_port} of service `{service}` is not published, and spec.health.probeAccess is PublishedPorts: publish it (e.g. ports: [\"127.0.0.1::{container_port}\"] in the compose file) or, with the operator on the Docker host, use probeAccess Network"
                        ),
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComposeSpec, ServiceStack, ServiceStackSpec};

    fn project() -> Project {
        let file = r#"
services:
  web: {image: x, networks: [front, back]}
  db: {image: x, networks: [back]}
networks: {front: {}, back: {}}
"#;
        let stack = ServiceStack::new(
            "p",
            ServiceStackSpec {
                docker: Default::default(),
                compose: ComposeSpec {
                    project_name: None,
                    file: file.to_owned(),
                    adopt: false,
                },
                variables: Default::default(),
                health: Default::default(),
                maintenance: Default::default(),
                backups: Vec::new(),
                deletion_policy: Default::default(),
                variables_from: Default::default(),
                rollout: Default::default(),
                key_rotation: Default::default(),
                suspend: false,
            },
        );
        crate::compose::load(&stack).unwrap()
    }

    fn container(service: &str, uid: &str, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: format!("{service}-{uid}-id"),
            name: format!("p-{service}-1"),
            service: service.to_owned(),
            uid: Some(uid.to_owned()),
            config_hash: None,
            compose_hash: None,
            revision: None,
            spec_hash: None,
            state,
            health: None,
            image: "x".into(),
            exit_code: Some(if state == ContainerState::Running {
                0
            } else {
                137
            }),
            restart_count: 0,
            addresses: BTreeMap::new(),
            published: BTreeMap::new(),
            oom_killed: false,
            started_at: None,
            finished_at: None,
            restart_policy: None,
        }
    }

    #[test]
    fn network_access_uses_an_address_on_a_project_network() {
        let mut web = container("web", "u1", ContainerState::Running);
        web.addresses
            .insert("bridge".into(), "172.17.0.9".parse().unwrap());
        web.addresses
            .insert("p_back".into(), "10.0.1.2".parse().unwrap());
        let t = Targets::new(
            &project(),
            &[web.clone()],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        assert_eq!(
            t.address("web", 8000).unwrap(),
            "10.0.1.2:8000".parse().unwrap()
        );
        // The first of the service's networks wins when it has several.
        web.addresses
            .insert("p_front".into(), "10.0.0.2".parse().unwrap());
        let t = Targets::new(
            &project(),
            &[web.clone()],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        assert_eq!(
            t.address("web", 8000).unwrap(),
            "10.0.0.2:8000".parse().unwrap()
        );
        // Only on a network the project does not own: no address.
        web.addresses.retain(|k, _| k == "bridge");
        let t = Targets::new(
            &project(),
            &[web],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        let e = t.address("web", 8000).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::Unreachable);
        assert!(
            e.message.contains("p_front, p_back") && e.message.contains("bridge"),
            "{}",
            e.message
        );
    }

    #[test]
    fn published_access_uses_the_published_port_or_says_to_publish_it() {
        let mut web = container("web", "u1", ContainerState::Running);
        web.addresses
            .insert("p_back".into(), "10.0.1.2".parse().unwrap());
        web.published
            .insert("8000/tcp".into(), "127.0.0.1:32768".parse().unwrap());
        web.published
            .insert("53/udp".into(), "127.0.0.1:32769".parse().unwrap());
        let t = Targets::new(
            &project(),
            &[web],
            ProbeAccess::PublishedPorts,
            &Claim::labelled("u1"),
        );
        assert_eq!(t.access(), ProbeAccess::PublishedPorts);
        assert_eq!(
            t.address("web", 8000).unwrap(),
            "127.0.0.1:32768".parse().unwrap()
        );
        // A UDP publication is no use to a TCP probe.
        let e = t.address("web", 53).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotPublished);
        assert!(
            e.message.contains("port 53") && e.message.contains("probeAccess Network"),
            "{}",
            e.message
        );
    }

    #[test]
    fn only_the_stacks_own_running_container_counts() {
        let mut other = container("web", "someone-else", ContainerState::Running);
        other
            .addresses
            .insert("p_front".into(), "10.0.0.66".parse().unwrap());
        let t = Targets::new(
            &project(),
            &[other.clone()],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        let e = t.address("web", 80).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotRunning);
        assert!(e.message.contains("no container"), "{}", e.message);

        let stopped = container("web", "u1", ContainerState::Exited);
        let t = Targets::new(
            &project(),
            &[other.clone(), stopped.clone()],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        let e = t.container("web").unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotRunning);
        assert!(
            e.message.contains("exited (exit code 137)")
                && e.message.contains("docker logs p-web-1"),
            "{}",
            e.message
        );

        // A running one beside the stopped one (a recreate in progress) is the one probed.
        let mut running = container("web", "u1", ContainerState::Running);
        running.id = "new".into();
        let t = Targets::new(
            &project(),
            &[stopped, running, other],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        assert_eq!(t.container("web").unwrap().id, "new");

        let paused = container("db", "u1", ContainerState::Paused);
        let t = Targets::new(
            &project(),
            &[paused],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        let e = t.container("db").unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotRunning);
        assert!(e.message.contains("is paused"), "{}", e.message);
    }

    #[test]
    fn unknown_services_are_named_with_the_known_ones() {
        let t = Targets::new(
            &project(),
            &[],
            ProbeAccess::Network,
            &Claim::labelled("u1"),
        );
        let e = t.address("wbe", 80).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::UnknownService);
        assert!(
            e.message.contains("`wbe`") && e.message.contains("db, web"),
            "{}",
            e.message
        );
    }
}
