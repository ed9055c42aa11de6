//! From a pass's outcome to per-service status, the one-word health and the Ready and
//! Progressing verdicts. Pure, like the planner.

use std::collections::BTreeMap;

use super::Outcome;
use crate::api::Condition;
use crate::api::{
    ConditionStatus, ConditionType, ContainerHealth, ContainerState, Reason, ServiceStatus,
    StackHealth, Verdict,
};
use crate::compose::Project;
use crate::docker::short_id;
use crate::store::{EventType, StackEvent};

pub struct Report {
    pub services: BTreeMap<String, ServiceStatus>,
    pub health: StackHealth,
    pub verdicts: Vec<Verdict>,
    /// Something is still expected to change soon: look again quickly.
    pub progressing: bool,
}

/// What the pass knows beside its outcome that changes the verdicts.
#[derive(Default)]
pub struct Facts<'a> {
    /// The services Ready waits for.
    pub required: &'a [String],
    /// `spec.suspend`.
    pub suspended: bool,
    /// A changed compose file waits for its pre-deploy backups: the containers of the old
    /// config are what should run meanwhile, not a sign of trouble.
    pub deploy_held: bool,
    /// Services held stopped on purpose.
    pub holds: BTreeMap<String, crate::api::HoldStatus>,
}

pub fn report(
    project: &Project,
    outcome: &Outcome,
    claim: &crate::docker::Claim,
    facts: &Facts,
    probes: &BTreeMap<String, crate::heal::ProbeVerdict>,
) -> Report {
    let (required, suspended) = (facts.required, facts.suspended);
    let mut held: Vec<String> = Vec::new();
    let mut services = BTreeMap::new();
    let mut not_ready: Vec<String> = Vec::new();
    let mut starting = false;
    for svc in &project.services {
        let container = outcome.container(&svc.name, claim);
        let st = match container {
            None => ServiceStatus::default(),
            Some(c) => ServiceStatus {
                state: c.state,
                health: c.health,
                image: Some(c.image.clone()),
                container_id: Some(short_id(&c.id).to_owned()),
                exit_code: (c.state != ContainerState::Running)
                    .then_some(c.exit_code)
                    .flatten(),
                docker_restarts: c.restart_count,
                ..Default::default()
            },
        };
        // The operator's own probes, when the service has some, decide its health.
        let mut st = st;
        if let Some(v) = probes.get(&svc.name) {
            st.consecutive_failures = v.consecutive_failures;
            st.last_probe = v.last.clone();
            if v.misconfigured.is_some() {
                // The probe says nothing about the service: health unknown, reported below.
                st.health = None;
            } else if st.state == ContainerState::Running {
                st.health = Some(match v.healthy {
                    Some(true) => ContainerHealth::Healthy,
                    Some(false) => ContainerHealth::Unhealthy,
                    None => ContainerHealth::Starting,
                });
            }
        }
        let current = container.is_some_and(|c| super::plan::is_current(svc, c, &outcome.observed));
        let problem = match (st.state, st.health) {
            (ContainerState::Missing, _) => Some("no container".to_owned()),
            (ContainerState::Running, Some(ContainerHealth::Starting)) => {
                starting = true;
                Some("running, health check starting".to_owned())
            }
            (ContainerState::Running, Some(ContainerHealth::Unhealthy)) => {
                Some("running but unhealthy".to_owned())
            }
            (ContainerState::Running, _) if !current && !facts.deploy_held => {
                Some("running an outdated config".to_owned())
            }
            (ContainerState::Running, _) => None,
            (state, _) => Some(match st.exit_code {
                Some(code) => format!("{} (exit code {code})", state.as_str()),
                None => state.as_str().to_owned(),
            }),
        };
        let problem = match probes.get(&svc.name).and_then(|v| v.misconfigured.as_ref()) {
            Some(m) if problem.is_none() => Some(format!(
                "its probe cannot run ({m}); fix spec.health.services.{}.probes",
                svc.name
            )),
            _ => problem,
        };
        let hold = facts.holds.get(&svc.name);
        if hold.is_some() && st.state != ContainerState::Running {
            // Docker keeps the last healthcheck verdict of a stopped container; for a service
            // stopped on purpose it says nothing.
            st.health = None;
        }
        if let (Some(p), true) = (problem, required.contains(&svc.name)) {
            match hold {
                Some(h) if st.state != ContainerState::Running => {
                    held.push(crate::heal::hold::describe(&svc.name, h))
                }
                _ => not_ready.push(format!("{}: {p}", svc.name)),
            }
        }
        services.insert(svc.name.clone(), st);
    }

    let mut verdicts = Vec::new();
    let plan = &outcome.plan;
    let hold_text = |holds: &[super::plan::Hold]| {
        holds
            .iter()
            .map(|h| h.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };

    let (progress_status, progress_reason, progress_msg) = if let Some(conflict) = &plan.conflict {
        (
            ConditionStatus::False,
            Reason::ProjectNameInUse,
            conflict.clone(),
        )
    } else if suspended {
        (
            ConditionStatus::False,
            Reason::Suspended,
            "spec.suspend is true: observing only, changing nothing".to_owned(),
        )
    } else if !outcome.failures.is_empty() {
        let text = outcome
            .failures
            .iter()
            .map(|(s, e)| format!("{s}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        (
            ConditionStatus::False,
            Reason::ApplyFailed,
            format!("{text}; retrying with backoff"),
        )
    } else if let Some(h) = plan.blocked.first() {
        (ConditionStatus::False, h.reason, hold_text(&plan.blocked))
    } else if outcome.acted {
        (
            ConditionStatus::True,
            Reason::Applying,
            format!("applying revision {}", plan.revision),
        )
    } else if !plan.waiting.is_empty() {
        (
            ConditionStatus::True,
            Reason::WaitingForDependencies,
            hold_text(&plan.waiting),
        )
    } else if starting {
        (
            ConditionStatus::True,
            Reason::WaitingForHealthy,
            "containers run; waiting for their health checks to pass".to_owned(),
        )
    } else {
        (
            ConditionStatus::False,
            Reason::Converged,
            format!("revision {} is applied", plan.revision),
        )
    };
    let progressing = progress_status == ConditionStatus::True;
    verdicts.push(Verdict::new(
        ConditionType::Progressing,
        progress_status,
        progress_reason,
        progress_msg.clone(),
    ));

    if plan.conflict.is_some() {
        verdicts.push(Verdict::new(
            ConditionType::InvalidSpec,
            ConditionStatus::True,
            Reason::ProjectNameInUse,
            progress_msg.clone(),
        ));
    }

    let ready = not_ready.is_empty() && held.is_empty() && plan.conflict.is_none();
    let (ready_reason, ready_msg) = if ready {
        (
            Reason::AllServicesReady,
            format!(
                "all {} required services run and pass their health checks",
                required.len()
            ),
        )
    } else if matches!(
        progress_reason,
        Reason::ImageNotFound | Reason::ApplyFailed | Reason::ProjectNameInUse
    ) {
        (
            progress_reason,
            not_ready
                .iter()
                .chain([&progress_msg])
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if not_ready.is_empty() && !held.is_empty() {
        (
            Reason::ServicesHeld,
            format!(
                "{}; `stackwarden resume STACK SERVICE` (or removing the hold annotation) ends a hold",
                held.join("; ")
            ),
        )
    } else {
        (
            Reason::ServicesNotReady,
            not_ready
                .iter()
                .chain(&held)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    verdicts.push(Verdict::new(
        ConditionType::Ready,
        if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        ready_reason,
        ready_msg,
    ));

    // The containers under this project name are someone else's: nothing to say of ours.
    let health = if plan.conflict.is_some() {
        StackHealth::Unknown
    } else if ready {
        StackHealth::Healthy
    } else if progressing {
        StackHealth::Progressing
    } else {
        StackHealth::Unhealthy
    };
    Report {
        services,
        health,
        verdicts,
        progressing,
    }
}

/// Whether a condition in this state is bad news a person should be told of.
fn warns(c: &Condition) -> bool {
    use ConditionType as T;
    match c.type_ {
        T::InvalidSpec | T::DockerUnreachable | T::Degraded | T::SpecWarning => {
            c.status == ConditionStatus::True
        }
        T::Progressing => {
            c.status == ConditionStatus::False
                && matches!(
                    c.reason,
                    Reason::ImageNotFound | Reason::ApplyFailed | Reason::PreDeployBackupFailed
                )
        }
        // Backup outcomes are told by the jobs' own events; Ready follows the others.
        T::Ready | T::BackupFailed | T::BackupStale => false,
    }
}

/// A Warning event for each condition that has turned bad, or is bad with a new message (a
/// second problem with the same reason is news too). A condition that stays as it was tells
/// nothing, so a stack stuck in a bad state does not flood the event log on every retry.
pub fn transition_events(previous: &[Condition], current: &[Condition]) -> Vec<StackEvent> {
    current
        .iter()
        .filter(|c| warns(c))
        .filter(|c| {
            !previous.iter().any(|p| {
                p.type_ == c.type_
                    && p.status == c.status
                    && p.reason == c.reason
                    && p.message == c.message
            })
        })
        .map(|c| {
            let action = match c.reason {
                Reason::PreDeployBackupFailed => "Deploy",
                _ => "Reconcile",
            };
            StackEvent::new(
                EventType::Warning,
                &c.reason.to_string(),
                action,
                c.message.clone(),
            )
        })
        .collect()
}
