//! A second container of a service beside its running one: the new one is started under the
//! same network aliases, the old one retired once the new one is healthy (`maxSurge: 1`).
//! Only the naming and the "can this service surge at all" question live here, both pure;
//! the Docker calls are [`super::Engine::create_surge_container`] and friends.
//!
//! The retirement order was measured on Docker 20.10 (two demo-app containers under one alias,
//! a `demo-app poll` client resolving the name afresh for each request every 20 ms and trying
//! every address it gets, 40 replacements per order): see [`retire`].

use std::collections::HashMap;

use bollard::models::ContainerInspectResponse;

use super::{labels, Engine, EngineError, Owner};
use crate::compose::ServiceSpec;

/// Retires the old container once the new one is healthy: stops it gracefully (its stop
/// signal, `grace_s`) while it is still on its networks, then removes it; a container already
/// gone is done, so a cut-off retirement is simply repeated. Why this order: Stopping it gracefully while it
/// is still on its networks failed no request in 40 tries: on SIGTERM it refuses new
/// connections (the client moves on to the next address at once) and finishes the ones in
/// flight. Taking it off the network first cut one request in flight in 42 tries (its
/// answer had no way back). Either way Docker's DNS keeps answering with the old address for
/// some 10-50 ms after the container exits or leaves the network, so a client that resolves just then stalls on a
/// connect to nowhere (about half the tries, once, 3.3 s with the poller's 5 s budget, ~3 s
/// ARP timeout for others) before trying the new address; no order avoids that window.
/// Clients still reach the old container when it gets SIGTERM (Docker drops it from the alias
/// only when it leaves the network), so no lost request also needs the application to answer
/// the connections it had queued before closing its listener: axum's default graceful
/// shutdown resets them, which lost one request in 15 rollouts under load (BENCHMARKS.md,
/// rollout; the demo app drains them, `demo::drain` in the tests crate).
pub async fn retire(
    engine: &dyn Engine,
    id: &str,
    grace_s: Option<i64>,
) -> Result<(), EngineError> {
    match engine.stop_container(id, grace_s).await {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    }
    engine.remove_container(id, grace_s).await
}

/// Where a surge container goes: the container number docker-compose reads from
/// [`labels::CONTAINER_NUMBER`] and the name made from it, made by [`Surge::beside`] (a
/// container beside a running one) or [`Surge::replacing`] (beside a stopped one).
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

    #[tokio::test]
    async fn a_retirement_stops_before_it_removes_and_repeating_it_is_done() {
        let engine = crate::docker::fake::FakeEngine::default();
        let owner = Owner {
            project: "shop".into(),
            stack: "ops/shop".into(),
            uid: "u1".into(),
        };
        let old = engine
            .create_container(&backend(""), &owner, 1, "h1")
            .await
            .unwrap();
        retire(&engine, &old, Some(5)).await.unwrap();
        retire(&engine, &old, Some(5))
            .await
            .expect("a container already gone is retired");
        assert_eq!(
            engine.calls(),
            ["create backend", "stop backend", "remove backend"]
        );
    }

    #[tokio::test]
    async fn a_surge_made_by_a_cut_off_try_is_answered_again() {
        let engine = crate::docker::fake::FakeEngine::default();
        let owner = Owner {
            project: "shop".into(),
            stack: "ops/shop".into(),
            uid: "u1".into(),
        };
        let svc = backend("");
        let surge = Surge::beside(&svc, "shop", "shop-backend-1").unwrap();
        let first = engine
            .create_surge_container(&svc, &owner, 2, "h2", &surge)
            .await
            .unwrap();
        let again = engine
            .create_surge_container(&svc, &owner, 2, "h2", &surge)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(engine.containers().len(), 1);
    }
}
