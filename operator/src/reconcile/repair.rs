//! The acting half of self-healing: [`crate::decide::heal`] decides, this records and restarts.
//!
//! A restart is written into the status (`recentRestarts`, `lastRestart`) before it is done, so
//! an operator killed right after restarting cannot forget it and overspend the budget.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::{Error, Outcome, Pass};
use crate::api::{EventType, StackEvent};
use crate::api::{
    RestartReason, RestartRecord, Restarter, ServiceStack, ServiceStackStatus, ServiceStatus,
};
use crate::compose::{Project, ServiceSpec};
use crate::decide::heal::{self, Decision, ProbeVerdict, Schedule};
use crate::docker::{short_id, ObservedContainer};
use crate::observe::Snapshot;
use tracing::{info, warn};

/// What the repair pass leaves for the status report.
#[derive(Default)]
pub struct Repair {
    /// Restart history per service, to merge into the status.
    pub history: BTreeMap<String, ServiceStatus>,
    /// Services past their budget, with the message for the Degraded condition.
    pub exhausted: Vec<(String, String)>,
    /// The earliest time a waiting restart (backoff, budget) or a schedule is due.
    pub next: Option<DateTime<Utc>>,
    /// Last slot of each maintenance entry, keyed `service schedule`.
    pub maintenance: BTreeMap<String, DateTime<Utc>>,
    /// What was seen (Docker's own restarts), told once the status holding it is written.
    pub events: Vec<StackEvent>,
    /// Services restarted by this pass: what was observed of them before is out of date.
    restarted: std::collections::BTreeSet<String>,
}

impl Repair {
    /// Writes the restart history and maintenance slots into `status`.
    pub fn apply_to(&self, status: &mut ServiceStackStatus) {
        for (name, h) in &self.history {
            if let Some(slot) = status.services.get_mut(name) {
                slot.restarts = h.restarts;
                slot.recent_restarts = h.recent_restarts.clone();
                slot.last_restart = h.last_restart.clone();
                slot.docker_policy_suspended = h.docker_policy_suspended;
                slot.waiting_for = h.waiting_for.clone();
            }
        }
        status.maintenance = self.maintenance.clone();
    }

    fn due_at(&mut self, t: DateTime<Utc>) {
        self.next = Some(self.next.map_or(t, |n| n.min(t)));
    }
}

/// The repair step: Docker's own restarts counted, faults restarted within the budget, Docker's
/// loop switched off past it, and maintenance restarts run when their slot comes.
pub(super) async fn repair(
    pass: &mut Pass<'_>,
    outcome: &Outcome,
    seen: &Snapshot,
    hands_off: &BTreeSet<String>,
) -> Result<Repair, Error> {
    let mut out = histories(pass, outcome, hands_off, seen.now);
    // Shutting down: nothing is restarted (the next operator looks again).
    let suspended =
        pass.stack.spec.suspend || outcome.plan.conflict.is_some() || pass.ctx.draining();
    // Services the planner changed this pass are in its hands until the next one; a restore
    // keeps some services stopped on purpose until it ends.
    let skip = |name: &str| {
        suspended
            || hands_off.contains(name)
            || outcome
                .plan
                .actions
                .iter()
                .any(|a| a.service() == Some(name))
    };
    let claim = pass.claim.clone();
    let ours = |name: &str| outcome.container(name, &claim);
    // Decisions come after every history is in place: restarting one service may restart
    // others (restartDependents), whose history must not be overwritten afterwards.
    let services: Vec<ServiceSpec> = pass.project.services.clone();
    for svc in services.iter().filter(|s| !skip(&s.name)) {
        heal_service(pass, &mut out, svc, &ours, seen).await?;
    }
    if !suspended {
        budgets(pass, &mut out, &ours, &skip, seen.now).await?;
    }
    // Scheduled restarts wait while the stack is being changed or is coming up.
    let busy = !outcome.plan.actions.is_empty() || !outcome.plan.waiting.is_empty();
    maintenance(pass, &mut out, &ours, busy || suspended, seen.now).await?;
    Ok(out)
}

/// Each service's restart history as the status had it, its window moved on to `now` (and
/// emptied by a spec change: a new generation starts with a fresh budget), with Docker's own
/// restarts since counted in.
fn histories(
    pass: &Pass<'_>,
    outcome: &Outcome,
    hands_off: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Repair {
    let (stack, project, claim) = (&*pass.stack, pass.project, &pass.claim);
    let previous = stack.status.clone().unwrap_or_default();
    let spec_changed = previous.observed_generation.is_some()
        && previous.observed_generation != stack.metadata.generation;
    let mut out = Repair {
        maintenance: previous.maintenance.clone(),
        ..Default::default()
    };
    for svc in &project.services {
        let mut h = previous
            .services
            .get(&svc.name)
            .cloned()
            .unwrap_or_default();
        h.recent_restarts = if spec_changed {
            Vec::new()
        } else {
            heal::in_window(&h.recent_restarts, now)
        };
        // Docker's restarts of a container in other hands (a rollout's new one, judged by
        // its gate) are not the service's faults.
        let counted = outcome
            .container(&svc.name, claim)
            .filter(|_| !hands_off.contains(&svc.name));
        if let Some(c) = counted {
            out.events.extend(count_docker_restarts(&mut h, c, now));
        }
        out.history.insert(svc.name.clone(), h);
    }
    out
}

/// One service's fault, if it has one, and what the budget allows for it.
async fn heal_service<'a>(
    pass: &mut Pass<'_>,
    out: &mut Repair,
    svc: &ServiceSpec,
    ours: &(dyn Fn(&str) -> Option<&'a ObservedContainer> + Sync),
    seen: &Snapshot,
) -> Result<(), Error> {
    let now = seen.now;
    let c = ours(&svc.name);
    // Left to Docker's restart policy for a moment: look again when that moment is over.
    if let Some(t) = c.and_then(|c| heal::docker_restart_deadline(svc, c)) {
        if t > now {
            out.due_at(t);
        }
    }
    let Some(fault) = heal::fault(pass.project, svc, c, seen.probes.get(&svc.name), now) else {
        if let Some(h) = out.history.get_mut(&svc.name) {
            h.waiting_for = None;
        }
        return Ok(());
    };
    let Some(c) = c else { return Ok(()) };
    let fault = match fault {
        heal::Fault::Crashed { .. } if pass.ctx.stops.stopped_since(&c.id, c.started_at) => {
            heal::Fault::Stopped
        }
        f => f,
    };
    if matches!(fault, heal::Fault::Unhealthy { .. })
        && waits_for_dependency(pass.stack, pass.project, svc, &ours, &seen.probes, out, now)
    {
        return Ok(());
    }
    let h = out.history.get(&svc.name).cloned().unwrap_or_default();
    let spec = pass.stack.spec.health.restart.clone();
    match heal::decide(&h.recent_restarts, &spec, now) {
        Decision::Restart => {
            let note = restart_note(svc, &fault, h.recent_restarts.len(), &spec);
            let what = Restart::new(&svc.name, c, fault.reason(), note);
            restart(pass, out, what, now).await?;
            if spec.restart_dependents {
                restart_dependents(pass, out, svc, ours, now).await?;
            }
        }
        Decision::Wait { until } => out.due_at(until),
        Decision::Exhausted { until } => {
            out.due_at(until);
            out.exhausted.push((
                svc.name.clone(),
                format!(
                    "service {} {} and was restarted {} times within the hour (maxRestartsPerHour {}); the operator stopped restarting it until {} or the next spec change. Check its logs (docker logs {})",
                    svc.name,
                    fault.describe(),
                    h.recent_restarts.len(),
                    spec.max_restarts_per_hour,
                    until.format("%H:%M:%S UTC"),
                    c.name
                ),
            ));
        }
    }
    Ok(())
}

fn restart_note(
    svc: &ServiceSpec,
    fault: &heal::Fault,
    recent: usize,
    spec: &crate::api::RestartSpec,
) -> String {
    match fault {
        heal::Fault::Stopped => format!(
            "service {} {}; starting it again",
            svc.name,
            fault.describe()
        ),
        _ => format!(
            "service {} {}; restarting it (restart {} of at most {} per hour)",
            svc.name,
            fault.describe(),
            recent + 1,
            spec.max_restarts_per_hour
        ),
    }
}

/// `restartDependents`: the running services that depend on `svc` are restarted after it.
async fn restart_dependents<'a>(
    pass: &mut Pass<'_>,
    out: &mut Repair,
    svc: &ServiceSpec,
    ours: &(dyn Fn(&str) -> Option<&'a ObservedContainer> + Sync),
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let dependents: Vec<String> = pass
        .project
        .services
        .iter()
        .filter(|s| s.depends_on.iter().any(|d| d.service == svc.name))
        .map(|s| s.name.clone())
        .collect();
    for dep in dependents {
        let Some(dc) = ours(&dep).filter(|dc| dc.state == crate::api::ContainerState::Running)
        else {
            continue;
        };
        let note = format!(
            "service {dep} restarted because {} it depends on was restarted (restartDependents)",
            svc.name
        );
        restart(
            pass,
            out,
            Restart::new(&dep, dc, RestartReason::Dependency, note),
            now,
        )
        .await?;
    }
    Ok(())
}

/// Maintenance restarts (`spec.maintenance.restarts`): each entry's slot, taken once when it
/// comes; `hold_off` (the stack busy or suspended) puts a due slot off for a few seconds.
async fn maintenance<'a>(
    pass: &mut Pass<'_>,
    out: &mut Repair,
    ours: &(dyn Fn(&str) -> Option<&'a ObservedContainer> + Sync),
    hold_off: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for entry in &pass.stack.spec.maintenance.restarts.clone() {
        // Validated by admit, so a parse error here cannot happen; skip rather than panic.
        let Ok(schedule) = Schedule::parse(entry) else {
            continue;
        };
        let key = format!("{} {}", entry.service, entry.schedule);
        // A new entry starts counting from now: no restart for slots before it existed.
        let after = *out.maintenance.entry(key.clone()).or_insert(now);
        match schedule.due(after, now) {
            Some(slot) if !hold_off => {
                out.maintenance.insert(key, slot);
                let Some(c) =
                    ours(&entry.service).filter(|c| c.state == crate::api::ContainerState::Running)
                else {
                    continue;
                };
                let note = format!(
                    "service {}: scheduled restart ({} {})",
                    entry.service,
                    entry.schedule,
                    entry.time_zone.as_deref().unwrap_or("UTC")
                );
                let what = Restart::new(&entry.service, c, RestartReason::Scheduled, note);
                restart(pass, out, what, now).await?;
            }
            // Due, but the stack is busy: look again shortly.
            Some(_) => out.due_at(now + chrono::Duration::seconds(5)),
            None => {
                if let Some(next) = schedule.next(now) {
                    out.due_at(next);
                }
            }
        }
    }
    Ok(())
}

/// Whether `svc`, failing its probes, waits for a dependency instead of being restarted; the
/// wait goes into its history so the status shows it and a restarted operator keeps it.
fn waits_for_dependency<'a>(
    stack: &ServiceStack,
    project: &Project,
    svc: &ServiceSpec,
    ours: &impl Fn(&str) -> Option<&'a ObservedContainer>,
    probes: &BTreeMap<String, ProbeVerdict>,
    out: &mut Repair,
    now: DateTime<Utc>,
) -> bool {
    let failing = heal::failing_dependency(project, svc, ours, probes, now);
    // The dependent's own probe rounds after the dependency is back: enough to pass again.
    let grace = stack.spec.health.services.get(&svc.name).map_or(0, |h| {
        i64::from(h.failure_threshold) * i64::from(h.period_seconds + h.timeout_seconds)
    });
    let h = out.history.entry(svc.name.clone()).or_default();
    match heal::dependency_gate(
        failing.as_deref(),
        h.waiting_for.as_ref(),
        chrono::Duration::seconds(grace),
        now,
    ) {
        heal::DependencyGate::Open => {
            h.waiting_for = None;
            false
        }
        heal::DependencyGate::Closed { wait, until } => {
            if h.waiting_for.as_ref().map(|w| &w.service) != Some(&wait.service) {
                info!("service {} fails its probes while {} it depends on is not healthy; it is not restarted for that", svc.name, wait.service);
            }
            h.waiting_for = Some(wait);
            if let Some(t) = until {
                out.due_at(t);
            }
            true
        }
    }
}

/// Honest budgets. A service past its budget is Degraded whoever did the restarting (a crash
/// loop that Docker's `restart: always` drives never shows a fault the repair loop above could
/// see), and Docker's own loop is switched off too, intent recorded first; the spec's policy is
/// put back once the budget allows restarts again or the spec changes.
async fn budgets<'a>(
    pass: &mut Pass<'_>,
    out: &mut Repair,
    ours: &(dyn Fn(&str) -> Option<&'a ObservedContainer> + Sync),
    skip: &(dyn Fn(&str) -> bool + Sync),
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let spec = pass.stack.spec.health.restart.clone();
    let services: Vec<ServiceSpec> = pass.project.services.clone();
    for svc in services.iter().filter(|s| !skip(&s.name)) {
        let Some(c) = ours(&svc.name) else { continue };
        let Some(h) = out.history.get_mut(&svc.name) else {
            continue;
        };
        let until = match heal::decide(&h.recent_restarts, &spec, now) {
            Decision::Exhausted { until } => Some(until),
            _ => None,
        };
        let step = heal::docker_policy(
            svc.restart,
            c.restart_policy,
            h.docker_policy_suspended,
            until.is_some(),
        );
        let policy = match step {
            heal::PolicyStep::Keep => None,
            heal::PolicyStep::Forget => {
                h.docker_policy_suspended = false;
                None
            }
            heal::PolicyStep::Suspend => {
                h.docker_policy_suspended = true;
                Some(crate::compose::RestartPolicy::No)
            }
            heal::PolicyStep::Restore => Some(svc.restart),
        };
        let recent = h.recent_restarts.len();
        if let Some(policy) = policy {
            // Intent first: a suspension the status does not know of would never be undone.
            record_intent(pass, out).await?;
            if let Err(e) = pass.engine.set_restart_policy(&c.id, policy).await {
                warn!("{e}");
            } else if step == heal::PolicyStep::Restore {
                if let Some(h) = out.history.get_mut(&svc.name) {
                    h.docker_policy_suspended = false;
                }
                info!(
                    "service {}: Docker's restart policy {} is back",
                    svc.name,
                    policy.docker_name()
                );
            }
        }
        let Some(until) = until else { continue };
        out.due_at(until);
        // A service that spent its budget exactly and runs well is not degraded (yet); one
        // that went past it (Docker restarted on), or is down, is.
        let down =
            c.state != crate::api::ContainerState::Running && !out.restarted.contains(&svc.name);
        let named = out.exhausted.iter().any(|(name, _)| *name == svc.name);
        if named || !(down || recent > spec.max_restarts_per_hour as usize) {
            continue;
        }
        out.exhausted.push((
            svc.name.clone(),
            format!(
                "service {} was restarted {recent} times within the hour (maxRestartsPerHour {}); neither the operator nor Docker's restart policy restarts it again until {} or the next spec change. Check its logs (docker logs {})",
                svc.name,
                spec.max_restarts_per_hour,
                until.format("%H:%M:%S UTC"),
                c.name
            ),
        ));
    }
    Ok(())
}

/// Writes the restart history as it now stands, before an action it announces: a stale view
/// (another writer got there first) fails here, before anything is done.
async fn record_intent(pass: &mut Pass<'_>, out: &Repair) -> Result<(), Error> {
    let mut interim: ServiceStackStatus = pass.stack.status.clone().unwrap_or_default();
    for (name, hist) in &out.history {
        // Docker's count too, so a kill before the final status cannot count its restarts twice.
        let slot = interim.services.entry(name.clone()).or_default();
        slot.docker_restarts = hist.docker_restarts;
        slot.container_id = hist.container_id.clone();
        slot.docker_policy_suspended = hist.docker_policy_suspended;
    }
    out.apply_to(&mut interim);
    pass.ctx.store.write_status(pass.stack, interim).await?;
    pass.ctx.metrics.status_written(&pass.stack.key());
    Ok(())
}

/// Docker restarted the container itself (its restart policy): count it like our own restarts,
/// and say so.
fn count_docker_restarts(
    h: &mut ServiceStatus,
    c: &ObservedContainer,
    now: DateTime<Utc>,
) -> Option<StackEvent> {
    let same = h.container_id.as_deref() == Some(short_id(&c.id));
    let delta = if same {
        c.restart_count - h.docker_restarts
    } else {
        0
    };
    h.docker_restarts = c.restart_count;
    h.container_id = Some(short_id(&c.id).to_owned());
    if delta <= 0 {
        return None;
    }
    let reason = if c.oom_killed {
        RestartReason::OOMKilled
    } else {
        RestartReason::Crashed
    };
    h.restarts += delta;
    for _ in 0..delta {
        h.recent_restarts.push(now);
    }
    h.last_restart = Some(RestartRecord {
        time: now,
        reason,
        by: Restarter::Docker,
    });
    let note = format!(
        "service {} {} and Docker's restart policy restarted it",
        c.service,
        if c.oom_killed {
            "was OOM-killed"
        } else {
            "exited"
        }
    );
    Some(StackEvent::new(EventType::Warning, reason, "Restart", note))
}

/// A restart to do: which container, why, and what to tell.
struct Restart<'a> {
    service: &'a str,
    container: &'a ObservedContainer,
    reason: RestartReason,
    note: String,
}

impl<'a> Restart<'a> {
    fn new(
        service: &'a str,
        container: &'a ObservedContainer,
        reason: RestartReason,
        note: String,
    ) -> Self {
        Self {
            service,
            container,
            reason,
            note,
        }
    }
}

/// Restarts (or starts) one container, the restart written into the status first.
async fn restart(
    pass: &mut Pass<'_>,
    out: &mut Repair,
    what: Restart<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let Restart {
        service,
        container: c,
        reason,
        note,
    } = what;
    out.restarted.insert(service.to_owned());
    let h = out.history.entry(service.to_owned()).or_default();
    h.restarts += 1;
    // The budget stops crash loops; a planned restart, or one after a person's stop, is no
    // sign of one and must not use it up.
    let deliberate = matches!(reason, RestartReason::Scheduled | RestartReason::Stopped);
    if !deliberate {
        h.recent_restarts.push(now);
    }
    h.last_restart = Some(RestartRecord {
        time: now,
        reason,
        by: Restarter::Operator,
    });
    // Intent first: the restart is in the status before it happens.
    record_intent(pass, out).await?;

    let result = match c.state {
        crate::api::ContainerState::Running => pass.engine.restart_container(&c.id, None).await,
        _ => pass.engine.start_container(&c.id).await,
    };
    let note = match result {
        Ok(()) => note,
        Err(e) => format!("{note}; the restart failed: {e}"),
    };
    // A restart is told at once: it happened, whatever the rest of the pass does.
    let kind = if deliberate {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let event = StackEvent::new(kind, reason, "Restart", note);
    super::status::publish(pass.ctx, pass.stack, event).await?;
    pass.ctx
        .metrics
        .restarted(&pass.stack.key(), service, reason.as_str());
    Ok(())
}
