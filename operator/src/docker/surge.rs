//! A second container of a service beside its running one: the new one is started under the
//! same network aliases, the old one retired once the new one is healthy (`maxSurge: 1`).
//! Only the naming and the "can this service surge at all" question live here, both pure;
//! the Docker calls are [`super::Engine::create_surge_container`] and friends.
//!
//! The retirement order, measured on Docker 20.10 with a client resolving the name afresh for
//! every request (`demo-app poll`, see tests/tests/e2e_surge.rs): see [`RETIREMENT`].

use std::collections::HashMap;

use bollard::models::ContainerInspectResponse;

use super::{labels, Owner};
use crate::compose::ServiceSpec;

/// How the old container leaves without a client seeing a failed request.
pub const RETIREMENT: &str = "stop it gracefully while it is still on its networks, then remove it";

/// Where a surge container goes: the container number docker-compose reads from
/// [`labels::CONTAINER_NUMBER`] and the name made from it. Only [`Surge::beside`] makes one,
/// so a service that cannot surge never gets this far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surge {
    number: u8,
    name: String,
}

/// Why a service is replaced by stop-then-start instead of a surge: what the caller turns
/// into the Recreate strategy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CannotSurge {
    #[error(
        "service {service} has the fixed container_name {name}, which two containers cannot share"
    )]
    FixedName { service: String, name: String },
    #[error("service {service} publishes container port {port} on the host, which two containers cannot share")]
    PublishedPort { service: String, port: u16 },
}

impl Surge {
    /// The slot beside the running container `old_name` of `svc`: docker-compose numbers 1
    /// and 2 alternate, so every rollout leaves the service with one container numbered 1 or
    /// 2. A published port cannot surge even when Docker picks the host port: the new
    /// container would be reached on another port than the one users know.
    pub fn beside(svc: &ServiceSpec, project: &str, old_name: &str) -> Result<Self, CannotSurge> {
        if let Some(name) = &svc.fixed_name {
            return Err(CannotSurge::FixedName {
                service: svc.name.clone(),
                name: name.clone(),
            });
        }
        if let Some(p) = svc.ports.first() {
            return Err(CannotSurge::PublishedPort {
                service: svc.name.clone(),
                port: p.container_port,
            });
        }
        Self::replacing(svc, project, old_name)
    }

    /// The other slot for a service whose old container is stopped first (a published port):
    /// the old one keeps its name, stopped, for a rollback. Only a fixed `container_name`
    /// cannot have a second container at all.
    pub fn replacing(
        svc: &ServiceSpec,
        project: &str,
        old_name: &str,
    ) -> Result<Self, CannotSurge> {
        if let Some(name) = &svc.fixed_name {
            return Err(CannotSurge::FixedName {
                service: svc.name.clone(),
                name: name.clone(),
            });
        }
        // docker-compose 1.29 writes `project_service_N`, the operator `project-service-N`.
        let old_number = old_name.rsplit(['-', '_']).next();
        let number = if old_number == Some("2") { 1 } else { 2 };
        Ok(Self {
            number,
            name: format!("{project}-{}-{number}", svc.name),
        })
    }

    pub fn number(&self) -> u8 {
        self.number
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a container found under this name is this very surge, made by an earlier try
    /// that was cut off: same stack, service, slot and spec. Anything else is in the way.
    pub(super) fn is_this(
        &self,
        found: &ContainerInspectResponse,
        owner: &Owner,
        svc: &ServiceSpec,
        spec_hash: &str,
    ) -> bool {
        let empty = HashMap::new();
        let l = found
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .unwrap_or(&empty);
        let is = |key: &str, want: &str| l.get(key).is_some_and(|v| v == want);
        is(labels::UID, &owner.uid)
            && is(labels::SERVICE, &svc.name)
            && is(labels::CONTAINER_NUMBER, &self.number.to_string())
            && is(labels::SPEC_HASH, spec_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ServiceStack, ServiceStackSpec};

    /// Service `backend` of a compose file holding it alone, in project `shop`.
    fn backend(extra: &str) -> ServiceSpec {
        let file = format!("services:\n  backend:\n    image: demo\n{extra}");
        let spec: ServiceStackSpec = serde_json::from_value(
            serde_json::json!({"compose": {"projectName": "shop", "file": file}}),
        )
        .unwrap();
        let project = crate::compose::load(&ServiceStack::new("shop", spec)).unwrap();
        project.service("backend").unwrap().clone()
    }

    #[test]
    fn a_service_in_slot_one_surges_into_slot_two_and_back() {
        let s = Surge::beside(&backend(""), "shop", "shop-backend-1").unwrap();
        assert_eq!((s.number(), s.name()), (2, "shop-backend-2"));
        let s = Surge::beside(&backend(""), "shop", "shop-backend-2").unwrap();
        assert_eq!((s.number(), s.name()), (1, "shop-backend-1"));
    }

    #[test]
    fn a_container_named_by_docker_compose_counts_by_its_number_too() {
        let s = Surge::beside(&backend(""), "shop", "shop_backend_2").unwrap();
        assert_eq!(s.name(), "shop-backend-1");
    }

    #[test]
    fn a_fixed_container_name_cannot_surge() {
        let svc = backend("    container_name: the-backend\n");
        assert_eq!(
            Surge::beside(&svc, "shop", "the-backend"),
            Err(CannotSurge::FixedName {
                service: "backend".into(),
                name: "the-backend".into()
            })
        );
    }

    #[test]
    fn a_published_port_cannot_surge_even_on_a_port_docker_picks() {
        let svc = backend("    ports: [\"127.0.0.1::8000\"]\n");
        assert_eq!(
            Surge::beside(&svc, "shop", "shop-backend-1"),
            Err(CannotSurge::PublishedPort {
                service: "backend".into(),
                port: 8000
            })
        );
    }
}
