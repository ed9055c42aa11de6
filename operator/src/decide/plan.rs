//! The decision: given the project a spec asks for and what Docker reports, which actions bring
//! one step closer. Pure and synchronous: no Docker, no clock, so every case is a unit test.
//!
//! Each pass plans from scratch on fresh observations (level-triggered), so an operator killed
//! between two actions simply plans the rest on its next pass.

use std::collections::BTreeSet;

use crate::api::{ContainerHealth, ContainerState, Reason};
use crate::compose::{
    BuildSpec, DependencyCondition, NetworkSpec, Project, PullPolicy, ServiceSpec, VolumeSpec,
};
use crate::observe::{Claim, Observed, ObservedContainer};

/// One change to make on the engine, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateNetwork(NetworkSpec),
    CreateVolume(VolumeSpec),
    PullImage {
        service: String,
        image: String,
    },
    /// Build the service's image from its context (local mode), tagged by the context's content.
    BuildImage {
        service: String,
        build: BuildSpec,
    },
    /// Create and start the service's container.
    Create {
        service: String,
    },
    /// Start the existing, stopped container.
    Start {
        service: String,
        id: String,
    },
    /// Replace a container whose config drifted from the spec: remove it, then create and start.
    Recreate {
        service: String,
        old_id: String,
    },
    /// Remove a container the spec no longer asks for (or a duplicate).
    Remove {
        service: String,
        id: String,
    },
}

impl Action {
    /// The service the action is for; network and volume actions concern every service.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::CreateNetwork(_) | Action::CreateVolume(_) => None,
            Action::PullImage { service, .. }
            | Action::BuildImage { service, .. }
            | Action::Create { service }
            | Action::Start { service, .. }
            | Action::Recreate { service, .. }
            | Action::Remove { service, .. } => Some(service),
        }
    }
}

/// A service the plan cannot act on yet, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub service: String,
    pub reason: Reason,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Revision number of the project being applied.
    pub revision: u64,
    /// Services waiting for a dependency (the normal course of a start).
    pub waiting: Vec<Hold>,
    /// What a waiting service will need once its dependencies allow (a create or recreate):
    /// a rollout takes these in its own order, one service at a time, as it takes `actions`.
    pub deferred: Vec<Action>,
    /// Services that cannot proceed without a change by a person (e.g. a missing image).
    pub blocked: Vec<Hold>,
    /// Containers of another owner use the project name: nothing may be touched.
    pub conflict: Option<String>,
}

/// The revision the status last recorded, and the project hash it numbered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub revision: u64,
    pub spec_hash: String,
}

/// Plans the next step for `project`, owned by the stack with `uid` (its labelled containers
/// only); `last` is what the status last recorded (none on a first pass, or when the status
/// was lost).
pub fn plan(project: &Project, observed: &Observed, uid: &str, last: Option<&Applied>) -> Plan {
    plan_claimed(project, observed, &Claim::labelled(uid), last)
}

/// [`plan`] for the containers `claim` says are the stack's.
pub fn plan_claimed(
    project: &Project,
    observed: &Observed,
    claim: &Claim,
    last: Option<&Applied>,
) -> Plan {
    let out = Plan {
        revision: revision(project, observed, &claim.uid, last),
        ..Default::default()
    };
    let mut planner = Planner {
        project,
        observed,
        out,
        will_run: BTreeSet::new(),
        blocked: BTreeSet::new(),
    };
    if let Some(conflict) = conflict(project, observed, claim) {
        planner.out.conflict = Some(conflict);
        return planner.out;
    }
    planner.networks();
    planner.volumes();
    planner.blocked = planner
        .out
        .blocked
        .iter()
        .map(|h| h.service.clone())
        .collect();
    for svc in &project.services {
        planner.service(svc);
    }
    planner.orphans();
    planner.out
}

/// One pass's plan as it is built, step by step.
struct Planner<'a> {
    project: &'a Project,
    observed: &'a Observed,
    out: Plan,
    /// Services this pass will leave running (started, created or untouched), in start order,
    /// so a `service_started` dependency created earlier in the same pass counts as met.
    will_run: BTreeSet<&'a str>,
    /// Services that cannot start this pass, so neither can what depends on them.
    blocked: BTreeSet<String>,
}

impl<'a> Planner<'a> {
    /// Creates the project's missing networks; an external one missing blocks its services.
    fn networks(&mut self) {
        let project = self.project;
        for net in &project.networks {
            if self.observed.networks.contains(&net.name) {
                continue;
            }
            if !net.external {
                self.out.actions.push(Action::CreateNetwork(net.clone()));
                continue;
            }
            for svc in project
                .services
                .iter()
                .filter(|s| s.networks.iter().any(|n| n.network == net.name))
            {
                self.out.blocked.push(Hold {
                    service: svc.name.clone(),
                    reason: Reason::ApplyFailed,
                    message: format!(
                        "external network {} does not exist; create it (docker network create {})",
                        net.name, net.name
                    ),
                });
            }
        }
    }

    /// Creates the missing volumes some service uses; an external one missing blocks its
    /// services.
    fn volumes(&mut self) {
        let project = self.project;
        for vol in &project.volumes {
            if self.observed.volumes.contains(&vol.name) {
                continue;
            }
            if !vol.external {
                if project.services.iter().any(|s| s.uses_volume(&vol.name)) {
                    self.out.actions.push(Action::CreateVolume(vol.clone()));
                }
                continue;
            }
            for svc in project.services.iter().filter(|s| s.uses_volume(&vol.name)) {
                self.out.blocked.push(Hold {
                    service: svc.name.clone(),
                    reason: Reason::ApplyFailed,
                    message: format!(
                        "external volume {} does not exist; create it (docker volume create {})",
                        vol.name, vol.name
                    ),
                });
            }
        }
    }

    /// Plans one service: duplicates removed, then its container created, recreated or
    /// started once its dependencies allow and its image is there.
    fn service(&mut self, svc: &'a ServiceSpec) {
        let Some(change) = self.change(svc) else {
            self.will_run.insert(&svc.name);
            return;
        };
        if let Some(dep) = svc
            .depends_on
            .iter()
            .find(|d| self.blocked.contains(&d.service))
        {
            self.blocked.insert(svc.name.clone());
            self.out.waiting.push(Hold {
                service: svc.name.clone(),
                reason: Reason::WaitingForDependencies,
                message: format!("{} waits for {}, which cannot start", svc.name, dep.service),
            });
            return;
        }
        if self.blocked.contains(&svc.name) {
            return;
        }
        let unmet = unmet_dependency(
            self.project,
            svc,
            self.observed,
            &self.will_run,
            &self.out.actions,
        );
        if let Some(msg) = unmet {
            self.out.waiting.push(Hold {
                service: svc.name.clone(),
                reason: Reason::WaitingForDependencies,
                message: msg,
            });
            if !matches!(change, Action::Start { .. }) {
                self.out.deferred.push(change);
            }
            return;
        }
        if !matches!(change, Action::Start { .. }) && !self.image(svc) {
            return;
        }
        self.out.actions.push(change);
        self.will_run.insert(&svc.name);
    }

    /// Removes the service's duplicate containers and says what its remaining one needs, if
    /// anything.
    fn change(&mut self, svc: &ServiceSpec) -> Option<Action> {
        let observed = self.observed;
        let mut mine: Vec<&ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.service == svc.name)
            .collect();
        // Keep the best container (current config first, then running), remove the others:
        // duplicates only appear when a pass was cut off mid-recreate by an outside hand.
        mine.sort_by_key(|c| {
            (
                !is_current(svc, c, observed),
                c.state != ContainerState::Running,
                c.id.clone(),
            )
        });
        for extra in mine.iter().skip(1) {
            self.out.actions.push(Action::Remove {
                service: svc.name.clone(),
                id: extra.id.clone(),
            });
        }
        match mine.first().copied() {
            None => Some(Action::Create {
                service: svc.name.clone(),
            }),
            Some(c) if !is_current(svc, c, observed) => Some(Action::Recreate {
                service: svc.name.clone(),
                old_id: c.id.clone(),
            }),
            Some(c) if needs_start(c) => Some(Action::Start {
                service: svc.name.clone(),
                id: c.id.clone(),
            }),
            Some(_) => None,
        }
    }

    /// Builds or pulls the service's image as its pull policy says; false when the image is
    /// missing and may not be pulled (the service is blocked).
    fn image(&mut self, svc: &ServiceSpec) -> bool {
        let present = self.observed.images.contains(&svc.image);
        match svc.pull_policy {
            // The tag is the content's: present means built from this very context.
            _ if svc.build.is_some() => {
                if let Some(build) = svc.build.as_ref().filter(|_| !present) {
                    self.out.actions.push(Action::BuildImage {
                        service: svc.name.clone(),
                        build: build.clone(),
                    });
                }
            }
            PullPolicy::Never if !present => {
                self.blocked.insert(svc.name.clone());
                self.out.blocked.push(Hold {
                    service: svc.name.clone(),
                    reason: Reason::ImageNotFound,
                    message: format!(
                        "image {} of service {} is not on the engine and pull_policy is never; build or load it (docker build / docker load), or fix `image:`",
                        svc.image, svc.name
                    ),
                });
                return false;
            }
            PullPolicy::Always => self.out.actions.push(Action::PullImage {
                service: svc.name.clone(),
                image: svc.image.clone(),
            }),
            PullPolicy::Missing if !present => self.out.actions.push(Action::PullImage {
                service: svc.name.clone(),
                image: svc.image.clone(),
            }),
            _ => {}
        }
        true
    }

    /// Removes the containers of services the spec no longer has.
    fn orphans(&mut self) {
        let wanted: BTreeSet<&str> = self
            .project
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for c in &self.observed.containers {
            if !wanted.contains(c.service.as_str()) {
                self.out.actions.push(Action::Remove {
                    service: c.service.clone(),
                    id: c.id.clone(),
                });
            }
        }
    }
}

/// Why the stack may not touch the project, if it may not: a container of another stack (its
/// uid label), or one nobody's (no uid: docker-compose's) while the stack neither owns the
/// project nor was told to adopt it.
fn conflict(project: &Project, observed: &Observed, claim: &Claim) -> Option<String> {
    let foreign: Vec<&ObservedContainer> = observed
        .containers
        .iter()
        .filter(|c| !claim.owns(c))
        .collect();
    let names = |cs: &[&ObservedContainer]| {
        cs.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (others, unowned): (Vec<_>, Vec<_>) = foreign.iter().partition(|c| c.uid.is_some());
    if !others.is_empty() {
        return Some(format!(
            "containers of another ServiceStack already use compose project {:?} ({}); set spec.compose.projectName to another name",
            project.name,
            names(&others)
        ));
    }
    if !unowned.is_empty() {
        return Some(format!(
            "containers not created by this ServiceStack already use compose project {:?} ({}); to take them over (e.g. a stack started with docker-compose up), set spec.compose.adopt: true: containers matching the compose file keep running, the others are recreated. Otherwise remove them or set spec.compose.projectName to another name",
            project.name,
            names(&unowned)
        ));
    }
    None
}

/// Whether `c` runs `svc`'s current config: by the operator's own hash when the container has
/// it; by docker-compose's when it does not (docker-compose created it), equal only when
/// docker-compose created it from this very config and the image it has now.
pub fn is_current(svc: &ServiceSpec, c: &ObservedContainer, observed: &Observed) -> bool {
    match &c.config_hash {
        Some(own) => *own == svc.config_hash(),
        None => {
            let image_id = observed.image_ids.get(&svc.image).map(String::as_str);
            c.compose_hash.as_deref() == Some(svc.compose_hash(image_id).as_str())
        }
    }
}

/// Starts a container that was created but never started (an operator killed between create
/// and start). A container that ran and stopped is a fault for [`crate::decide::heal`], which restarts
/// it with backoff and a budget rather than on every pass.
fn needs_start(c: &ObservedContainer) -> bool {
    c.state == ContainerState::Created
}

/// Why `svc` may not be created or started yet, if anything.
fn unmet_dependency(
    project: &Project,
    svc: &ServiceSpec,
    observed: &Observed,
    will_run: &BTreeSet<&str>,
    planned: &[Action],
) -> Option<String> {
    for dep in &svc.depends_on {
        let touched = planned.iter().any(|a| {
            a.service() == Some(dep.service.as_str())
                && !matches!(a, Action::PullImage { .. } | Action::BuildImage { .. })
        });
        let container = observed.containers.iter().find(|c| {
            c.service == dep.service
                && project
                    .service(&dep.service)
                    .is_some_and(|d| is_current(d, c, observed))
        });
        let met = match dep.condition {
            DependencyCondition::Started => will_run.contains(dep.service.as_str()),
            DependencyCondition::Healthy => {
                !touched
                    && container.is_some_and(|c| {
                        c.state == ContainerState::Running
                            && c.health == Some(ContainerHealth::Healthy)
                    })
            }
            DependencyCondition::CompletedSuccessfully => {
                !touched
                    && container.is_some_and(|c| {
                        c.state == ContainerState::Exited && c.exit_code == Some(0)
                    })
            }
        };
        if !met {
            let what = match dep.condition {
                DependencyCondition::Started => "to start",
                DependencyCondition::Healthy => match container.and_then(|c| c.health) {
                    None if container.is_some_and(|c| c.state == ContainerState::Running) => {
                        "to be healthy, but it has no healthcheck (add one, or use condition: service_started)"
                    }
                    _ => "to be healthy",
                },
                DependencyCondition::CompletedSuccessfully => "to complete successfully",
            };
            return Some(format!("{} waits for {} {what}", svc.name, dep.service));
        }
    }
    None
}

/// The revision being applied. Unchanged spec: the recorded number. A container that already
/// carries this spec's hash under a higher number: a pass was cut off before it could record
/// status, so that number. Otherwise a new change (a revert included): one more than any number
/// seen, in status or on a label, so numbers never repeat or go back.
fn revision(project: &Project, observed: &Observed, uid: &str, last: Option<&Applied>) -> u64 {
    let hash = project.spec_hash();
    let last_rev = last.map_or(0, |a| a.revision);
    if let Some(a) = last.filter(|a| a.spec_hash == hash) {
        return a.revision;
    }
    let ours = || {
        observed
            .containers
            .iter()
            .filter(|c| c.uid.as_deref() == Some(uid))
    };
    let labelled = ours()
        .filter(|c| c.spec_hash.as_deref() == Some(hash.as_str()))
        .filter_map(|c| c.revision)
        .max();
    if let Some(r) = labelled.filter(|r| *r > last_rev) {
        return r;
    }
    ours()
        .filter_map(|c| c.revision)
        .max()
        .unwrap_or(0)
        .max(last_rev)
        + 1
}

impl ServiceSpec {
    fn uses_volume(&self, docker_name: &str) -> bool {
        self.mounts
            .iter()
            .any(|m| matches!(m, crate::compose::MountSpec::Volume { source, .. } if source == docker_name))
    }
}

/// What a pass did on the engine and what it saw afterwards.
pub struct Outcome {
    pub plan: Plan,
    /// What runs after the pass's actions: looked at again by a step that acted (converge,
    /// holds), the pass's snapshot otherwise.
    pub observed: crate::observe::Observed,
    /// Services whose action failed, with the error text.
    pub failures: Vec<(String, String)>,
    pub acted: bool,
    pub events: Vec<crate::api::StackEvent>,
}

impl Outcome {
    /// The container of `service` that `claim` owns, as observed.
    pub fn container(
        &self,
        service: &str,
        claim: &crate::observe::Claim,
    ) -> Option<&crate::observe::ObservedContainer> {
        self.observed
            .containers
            .iter()
            .find(|c| c.service == service && claim.owns(c))
    }
}
