//! From a pass's outcome to per-service status, the one-word health and the Ready and
//! Progressing verdicts. Pure, like the planner.

use std::collections::BTreeMap;

use super::plan::Outcome;
use crate::api::Condition;
use crate::api::{
    ConditionStatus, ConditionType, ContainerHealth, ContainerState, Reason, ServiceStatus,
    StackHealth, Verdict,
};
use crate::api::{EventType, StackEvent};
use crate::compose::Project;
use crate::observe::short_id;

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
    claim: &crate::observe::Claim,
    facts: &Facts,
    probes: &BTreeMap<String, crate::decide::heal::ProbeVerdict>,
) -> Report {
    let seen = services(project, outcome, claim, facts, probes);
    let plan = &outcome.plan;
    let progress = progress(outcome, facts.suspended, seen.starting);
    let progressing = progress.status == ConditionStatus::True;
    let mut verdicts = vec![Verdict::new(
        ConditionType::Progressing,
        progress.status,
        progress.reason,
        progress.message.clone(),
    )];
    if plan.conflict.is_some() {
        verdicts.push(Verdict::new(
            ConditionType::InvalidSpec,
            ConditionStatus::True,
            Reason::ProjectNameInUse,
            progress.message.clone(),
        ));
    }
    let ready = seen.not_ready.is_empty() && seen.held.is_empty() && plan.conflict.is_none();
    let (ready_reason, ready_msg) = readiness(ready, &seen, &progress, facts.required);
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
        services: seen.services,
        health,
        verdicts,
        progressing,
    }
}

/// What the services' states say, before any verdict.
struct Seen {
    services: BTreeMap<String, ServiceStatus>,
    /// Required services held stopped on purpose, described.
    held: Vec<String>,
    /// Required services with a problem: `service: problem`.
    not_ready: Vec<String>,
    /// Some service's health check is still starting.
    starting: bool,
}

/// Each service's status, and which required ones are not ready, or held.
fn services(
    project: &Project,
    outcome: &Outcome,
    claim: &crate::observe::Claim,
    facts: &Facts,
    probes: &BTreeMap<String, crate::decide::heal::ProbeVerdict>,
) -> Seen {
    let mut seen = Seen {
        services: BTreeMap::new(),
        held: Vec::new(),
        not_ready: Vec::new(),
        starting: false,
    };
    for svc in &project.services {
        let container = outcome.container(&svc.name, claim);
        let probe = probes.get(&svc.name);
        let mut st = service_status(container, probe);
        let current = container.is_some_and(|c| super::plan::is_current(svc, c, &outcome.observed));
        seen.starting |=
            st.state == ContainerState::Running && st.health == Some(ContainerHealth::Starting);
        let problem = problem(&st, current, facts.deploy_held);
        let problem = match probe.and_then(|v| v.misconfigured.as_ref()) {
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
        if let (Some(p), true) = (problem, facts.required.contains(&svc.name)) {
            match hold {
                Some(h) if st.state != ContainerState::Running => seen
                    .held
                    .push(crate::decide::heal::hold::describe(&svc.name, h)),
                _ => seen.not_ready.push(format!("{}: {p}", svc.name)),
            }
        }
        seen.services.insert(svc.name.clone(), st);
    }
    seen
}

/// A service's status from its container and, when it has probes, their verdict.
fn service_status(
    container: Option<&crate::observe::ObservedContainer>,
    probe: Option<&crate::decide::heal::ProbeVerdict>,
) -> ServiceStatus {
    let mut st = match container {
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
    if let Some(v) = probe {
        st.consecutive_failures = v.consecutive_failures;
        st.last_probe = v.last.clone();
        if v.misconfigured.is_some() {
            // The probe says nothing about the service: health unknown, reported as a problem.
            st.health = None;
        } else if st.state == ContainerState::Running {
            st.health = Some(match v.healthy {
                Some(true) => ContainerHealth::Healthy,
                Some(false) => ContainerHealth::Unhealthy,
                None => ContainerHealth::Starting,
            });
        }
    }
    st
}

/// What keeps a service from being ready, if anything.
fn problem(st: &ServiceStatus, current: bool, deploy_held: bool) -> Option<String> {
    match (st.state, st.health) {
        (ContainerState::Missing, _) => Some("no container".to_owned()),
        (ContainerState::Running, Some(ContainerHealth::Starting)) => {
            Some("running, health check starting".to_owned())
        }
        (ContainerState::Running, Some(ContainerHealth::Unhealthy)) => {
            Some("running but unhealthy".to_owned())
        }
        (ContainerState::Running, _) if !current && !deploy_held => {
            Some("running an outdated config".to_owned())
        }
        (ContainerState::Running, _) => None,
        (state, _) => Some(match st.exit_code {
            Some(code) => format!("{} (exit code {code})", state.as_str()),
            None => state.as_str().to_owned(),
        }),
    }
}

/// The Progressing condition's content.
struct Progress {
    status: ConditionStatus,
    reason: Reason,
    message: String,
}

/// Progressing: the first that applies of a conflict, suspension, failed actions, a blocked
/// service, actions taken, services waiting for dependencies, health checks starting.
fn progress(outcome: &Outcome, suspended: bool, starting: bool) -> Progress {
    let plan = &outcome.plan;
    let hold_text = |holds: &[super::plan::Hold]| {
        holds
            .iter()
            .map(|h| h.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (status, reason, message) = if let Some(conflict) = &plan.conflict {
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
    Progress {
        status,
        reason,
        message,
    }
}

/// The Ready condition's reason and message.
fn readiness(
    ready: bool,
    seen: &Seen,
    progress: &Progress,
    required: &[String],
) -> (Reason, String) {
    if ready {
        (
            Reason::AllServicesReady,
            format!(
                "all {} required services run and pass their health checks",
                required.len()
            ),
        )
    } else if matches!(
        progress.reason,
        Reason::ImageNotFound | Reason::ApplyFailed | Reason::ProjectNameInUse
    ) {
        (
            progress.reason,
            seen.not_ready
                .iter()
                .chain([&progress.message])
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if seen.not_ready.is_empty() && !seen.held.is_empty() {
        (
            Reason::ServicesHeld,
            format!(
                "{}; `stackwarden resume STACK SERVICE` (or removing the hold annotation) ends a hold",
                seen.held.join("; ")
            ),
        )
    } else {
        (
            Reason::ServicesNotReady,
            seen.not_ready
                .iter()
                .chain(&seen.held)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// Whether a condition in this state is bad news a person should be told of.
fn warns(c: &Condition) -> bool {
    use ConditionType as T;
    match c.type_ {
        T::InvalidSpec
        | T::DockerUnreachable
        | T::Degraded
        | T::SpecWarning
        | T::RolledBack
        | T::CertificateExpiring
        | T::RollbackRefused => c.status == ConditionStatus::True,
        T::Progressing => {
            c.status == ConditionStatus::False
                && matches!(
                    c.reason,
                    Reason::ImageNotFound | Reason::ApplyFailed | Reason::PreDeployBackupFailed
                )
        }
        // Backup outcomes are told by the jobs' own events, keys by their own Warnings (one
        // per key and due date); Ready follows the others.
        T::Ready | T::BackupFailed | T::BackupStale | T::KeyRotationDue => false,
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
            StackEvent::new(EventType::Warning, c.reason, action, c.message.clone())
        })
        .collect()
}
