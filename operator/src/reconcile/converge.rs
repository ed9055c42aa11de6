//! Plan, act, look again: the step that brings the containers to the compose file, planned on
//! the pass's snapshot.

use std::collections::BTreeSet;

use crate::api::{EventReason, ServiceStack};
use crate::api::{EventType, StackEvent};
use crate::compose::{self, Project};
use crate::decide::plan::{self, Action, Outcome};
use crate::docker::{Claim, Engine, EngineError, Observed, Owner};

/// Whose containers to converge, toward what, and what must not be touched.
pub struct Target<'a> {
    pub claim: &'a Claim,
    /// The revision and spec hash applied last (None before the first deploy).
    pub last: Option<&'a plan::Applied>,
    /// Held services: neither created, started nor recreated.
    pub paused: &'a BTreeSet<String>,
    /// A deploy waits for its backups (or the operator shuts down): nothing is applied.
    pub hold: bool,
}

/// The plan on `seen` (the pass's snapshot of the engine), less what must not be touched.
pub fn planned(project: &Project, seen: &Observed, target: &Target<'_>) -> plan::Plan {
    let mut plan = plan::plan_claimed(project, seen, target.claim, target.last);
    plan.actions
        .retain(|a| !target.hold && a.service().is_none_or(|s| !target.paused.contains(s)));
    plan
}

/// Carries out `plan` (made by [`planned`] on `seen`); the outcome's `observed` is what runs
/// afterwards: looked at again when anything was done, `seen` itself otherwise.
pub async fn converge(
    stack: &ServiceStack,
    project: &Project,
    owner: &Owner,
    plan: plan::Plan,
    seen: &Observed,
    engine: &dyn Engine,
) -> Result<Outcome, EngineError> {
    if stack.spec.suspend || plan.conflict.is_some() || plan.actions.is_empty() {
        return Ok(Outcome {
            plan,
            observed: seen.clone(),
            failures: Vec::new(),
            acted: false,
            events: Vec::new(),
        });
    }
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut events = Vec::new();
    let spec_hash = project.spec_hash();
    for action in &plan.actions {
        if let Some(svc) = action.service() {
            // A failed service and everything depending on it wait for the next pass.
            let failed_dep = project
                .service(svc)
                .map(|s| {
                    s.depends_on
                        .iter()
                        .any(|d| failures.iter().any(|(f, _)| *f == d.service))
                })
                .unwrap_or(false);
            if failed_dep || failures.iter().any(|(f, _)| f == svc) {
                continue;
            }
        }
        match act(engine, project, owner, plan.revision, &spec_hash, action).await {
            Ok(event) => events.push(event),
            Err(e @ EngineError::Unreachable { .. }) => return Err(e),
            // Told once through Progressing (ApplyFailed), not at every retry.
            Err(e) => {
                let service = action.service().unwrap_or("*").to_owned();
                // A build's output can echo its args, which may carry variable values.
                let message = compose::mask(&e.to_string(), &stack.spec.variables, &[]);
                failures.push((service, message));
                if action.service().is_none() {
                    break;
                }
            }
        }
    }
    let observed = super::snapshot::look(engine, project).await?;
    Ok(Outcome {
        plan,
        observed,
        failures,
        acted: true,
        events,
    })
}

async fn act(
    engine: &dyn Engine,
    project: &Project,
    owner: &Owner,
    revision: u64,
    spec_hash: &str,
    action: &Action,
) -> Result<StackEvent, EngineError> {
    let svc = |name: &str| {
        project
            .service(name)
            .expect("planned services exist in the project")
    };
    let (reason, action_name) = match action {
        Action::CreateNetwork(n) => {
            engine.create_network(n, owner).await?;
            (EventReason::NetworkCreated, "Create")
        }
        Action::CreateVolume(v) => {
            engine.create_volume(v, owner).await?;
            (EventReason::VolumeCreated, "Create")
        }
        Action::PullImage { image, .. } => {
            engine.pull_image(image).await.map_err(|e| EngineError::Api {
                context: format!("image {image} is not on the engine and pulling it failed"),
                status: None,
                message: format!("{e}. Build or load the image (docker build / docker load), or fix `image:`"),
            })?;
            (EventReason::ImagePulled, "Pull")
        }
        Action::BuildImage { build, .. } => {
            engine.build_image(build).await?;
            (EventReason::ImageBuilt, "Build")
        }
        Action::Create { service } => {
            let id = engine
                .create_container(svc(service), owner, revision, spec_hash)
                .await?;
            engine.start_container(&id).await?;
            (EventReason::Created, "Create")
        }
        Action::Start { id, .. } => {
            engine.start_container(id).await?;
            (EventReason::Started, "Start")
        }
        // The old container goes first: with `container_name` the new one needs its name, and
        // the default name is fixed too. Killed between the two, the next pass finds no
        // container for the service and plans a Create: the same end, nothing duplicated.
        Action::Recreate { service, old_id } => {
            let s = svc(service);
            engine
                .remove_container(old_id, s.stop_grace_period_s)
                .await?;
            let id = engine
                .create_container(s, owner, revision, spec_hash)
                .await?;
            engine.start_container(&id).await?;
            (EventReason::Recreated, "Recreate")
        }
        Action::Remove { id, .. } => {
            engine.remove_container(id, None).await?;
            (EventReason::Removed, "Remove")
        }
    };
    Ok(StackEvent::new(
        EventType::Normal,
        reason,
        action_name,
        describe(action),
    ))
}

fn describe(action: &Action) -> String {
    match action {
        Action::CreateNetwork(n) => format!("network {}: create", n.name),
        Action::CreateVolume(v) => format!("volume {}: create", v.name),
        Action::PullImage { service, image } => format!("service {service}: pull image {image}"),
        Action::BuildImage { service, build } => format!(
            "service {service}: build image {} from {}",
            build.image,
            build.context.display()
        ),
        Action::Create { service } => format!("service {service}: create and start its container"),
        Action::Start { service, id } => format!(
            "service {service}: start container {}",
            crate::docker::short_id(id)
        ),
        Action::Recreate { service, old_id } => {
            format!(
                "service {service}: recreate (config changed) replacing container {}",
                crate::docker::short_id(old_id)
            )
        }
        Action::Remove { service, id } => format!(
            "service {service}: remove container {}",
            crate::docker::short_id(id)
        ),
    }
}
