//! The rollout of a revision, one service at a time, and its rollback. Pure: [`begin`] lays the
//! rollout out; [`next`] takes it, what was observed of the containers concerned and `now`,
//! and returns the rollout as it must be recorded and what to do on the engine afterwards.
//! The caller writes the status first (intent), then acts; a kill in between repeats the
//! same acts on the next pass, and each act is repeat-safe.
//!
//! A service goes Pending → Starting → Verifying → (Analysing) → Retiring → Done:
//! - Starting: `Surge` starts the new container beside the old one; `Recreate` stops the old
//!   one first (it is kept, stopped, until the rollout ends); `Create` has no old one.
//! - Verifying: the new container's probes must pass within the progress deadline; it must not
//!   exit or restart.
//! - Analysing: the metrics analysis over its window, when asked for.
//! - Retiring: the old container is stopped (kept, stopped, for a rollback).
//!
//! A failed gate turns the rollout to RollingBack: every service it touched, newest first, gets
//! its old container running again before the new one is removed, and the rollout ends
//! RolledBack with the failure (service, gate, observed value against its limit). A completed
//! rollout removes the old containers it kept.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::api::rollout_status::{
    Method, RolloutPhase, RolloutStatus, ServiceRollout, ServiceStep,
};
use crate::api::{ConditionStatus, ConditionType, Reason, Strategy, Verdict};
use crate::compose::Project;
use crate::decide::plan::{Action, Plan};

/// A service the revision changes, as the caller found it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub service: String,
    /// Its running container, if any (None: the service is new).
    pub old_container: Option<String>,
    /// Whether two containers of it can run at once (no published host port, no fixed
    /// `container_name`, and the strategy allows it).
    pub can_surge: bool,
}

/// Lays out the rollout of `revision`: the services of `order` first, then the others as
/// `changes` lists them (dependency order).
pub fn begin(
    revision: u64,
    spec_hash: &str,
    from: Option<u64>,
    changes: &[Change],
    order: &[String],
    now: DateTime<Utc>,
) -> RolloutStatus {
    let rank = |c: &Change| {
        order
            .iter()
            .position(|o| *o == c.service)
            .unwrap_or(order.len())
    };
    let mut ordered: Vec<&Change> = changes.iter().collect();
    // Stable: services outside `order` keep their dependency order.
    ordered.sort_by_key(|c| rank(c));
    let services = ordered
        .into_iter()
        .map(|c| ServiceRollout {
            name: c.service.clone(),
            method: match (&c.old_container, c.can_surge) {
                (None, _) => Method::Create,
                (Some(_), true) => Method::Surge,
                (Some(_), false) => Method::Recreate,
            },
            step: ServiceStep::Pending,
            since: None,
            old_container: c.old_container.clone(),
            new_container: None,
            baseline_latency_seconds: None,
        })
        .collect();
    RolloutStatus {
        revision,
        spec_hash: spec_hash.to_owned(),
        from,
        phase: RolloutPhase::Progressing,
        started: now,
        finished: None,
        services,
        gates_passed: Vec::new(),
        failure: None,
    }
}

/// A container as the step needs to see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub running: bool,
    /// Its probes (compose healthcheck and `spec.health` probes): passing, failing with why,
    /// or not judged yet.
    pub probes: Probes,
    /// Exit code of its last run, if it ended.
    pub exit_code: Option<i64>,
    pub restarts: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Probes {
    Passing,
    Failing(String),
    Unknown,
}

/// What was observed of the current service's containers (None: no such container).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub old: Option<Seen>,
    /// The new container, found by the id the rollout recorded (or by its revision label
    /// when the id was not recorded yet).
    pub new: Option<Seen>,
    pub new_id: Option<String>,
    pub analysis: Analysis,
    /// The measurement of the old container's latency (`latency.maxIncrease`).
    pub baseline: Baseline,
}

/// The previous revision's latency, measured on the old container before the update.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Baseline {
    #[default]
    NotAsked,
    Running,
    Measured(f64),
    /// No figure (too few requests, no scrape): why, in a sentence.
    Unavailable(String),
}

/// The metrics analysis of the current service.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Analysis {
    /// None asked for (`spec.rollout.analysis` unset).
    #[default]
    NotAsked,
    Running,
    Passed(String),
    Failed(String),
}

/// What to do on the engine, after the rollout is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// Create (if absent) and start the new container of the service.
    StartNew(String),
    /// Stop the old container gracefully, keeping it.
    StopOld(String),
    /// Start the kept old container again.
    StartOld(String),
    /// Stop and remove the new container.
    RemoveNew(String),
    /// Start the metrics analysis of the service's new container.
    Analyse(String),
    /// Start measuring the latency of the service's old container.
    MeasureBaseline(String),
    /// Remove the old containers kept for a rollback (the rollout completed).
    RemoveOld(Vec<String>),
}

/// The progress deadline and whether an analysis is asked for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub progress_deadline: std::time::Duration,
    pub analysis: bool,
    /// The analysis judges `latency.maxIncrease`: the old container's latency is measured
    /// first.
    pub baseline: bool,
}

/// The rollout as it must be recorded, and what to do once it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Next {
    pub rollout: RolloutStatus,
    pub acts: Vec<Act>,
}

/// The next step of `rollout`, given what was observed of its current service.
pub fn next(rollout: &RolloutStatus, seen: &Observed, limits: Limits, now: DateTime<Utc>) -> Next {
    let mut r = rollout.clone();
    let acts = match r.phase {
        RolloutPhase::Progressing => forward(&mut r, seen, limits, now),
        RolloutPhase::RollingBack => back(&mut r, seen, now),
        RolloutPhase::Complete | RolloutPhase::RolledBack => Vec::new(),
    };
    Next { rollout: r, acts }
}

/// The service being worked on: the first not yet Done (forward), or the newest touched one
/// not yet Reverted (backward).
pub fn current(rollout: &RolloutStatus) -> Option<&ServiceRollout> {
    match rollout.phase {
        RolloutPhase::Progressing => rollout
            .services
            .iter()
            .find(|s| s.step != ServiceStep::Done),
        RolloutPhase::RollingBack => rollout.services.iter().rev().find(|s| touched(s)),
        _ => None,
    }
}

fn touched(s: &ServiceRollout) -> bool {
    !matches!(s.step, ServiceStep::Pending | ServiceStep::Reverted)
}

fn forward(r: &mut RolloutStatus, seen: &Observed, limits: Limits, now: DateTime<Utc>) -> Vec<Act> {
    let Some(i) = r.services.iter().position(|s| s.step != ServiceStep::Done) else {
        return complete(r, now);
    };
    let name = r.services[i].name.clone();
    if let Some(failure) = failed(&r.services[i], seen, limits, now) {
        return fail(r, failure, seen, now);
    }
    let s = &mut r.services[i];
    if s.new_container.is_none() {
        s.new_container.clone_from(&seen.new_id);
    }
    let step = |s: &mut ServiceRollout, step| {
        s.step = step;
        s.since = Some(now);
    };
    match s.step {
        ServiceStep::Pending if limits.baseline && s.old_container.is_some() => {
            step(s, ServiceStep::Baselining);
            vec![Act::MeasureBaseline(name)]
        }
        ServiceStep::Pending => {
            step(s, ServiceStep::Starting);
            start(s)
        }
        ServiceStep::Baselining => baselined(r, i, &seen.baseline, now),
        ServiceStep::Starting => match &seen.new {
            Some(n) if n.running => {
                step(s, ServiceStep::Verifying);
                Vec::new()
            }
            // Cut off before the container was started (or created): the same acts again.
            _ => {
                let mut acts = Vec::new();
                if s.method == Method::Recreate && seen.old.as_ref().is_some_and(|o| o.running) {
                    acts.push(Act::StopOld(name.clone()));
                }
                acts.push(Act::StartNew(name));
                acts
            }
        },
        ServiceStep::Verifying => match seen.new.as_ref().map(|n| &n.probes) {
            Some(Probes::Passing) => {
                r.gates_passed.push(format!("{name}: probes pass"));
                let s = &mut r.services[i];
                if limits.analysis {
                    step(s, ServiceStep::Analysing);
                    vec![Act::Analyse(name)]
                } else {
                    step(s, ServiceStep::Retiring);
                    retire(s)
                }
            }
            _ => Vec::new(),
        },
        ServiceStep::Analysing => match &seen.analysis {
            Analysis::Passed(figures) => {
                r.gates_passed.push(format!("{name}: analysis ({figures})"));
                let s = &mut r.services[i];
                step(s, ServiceStep::Retiring);
                retire(s)
            }
            // Cut off after recording the step: the analysis starts again.
            Analysis::NotAsked => vec![Act::Analyse(name)],
            Analysis::Running | Analysis::Failed(_) => Vec::new(),
        },
        ServiceStep::Retiring => {
            if seen.old.as_ref().is_some_and(|o| o.running) {
                retire(s)
            } else {
                step(s, ServiceStep::Done);
                // Straight on to the next service in the same pass: it is Pending (or there is
                // none and the rollout completes), which needs nothing observed.
                forward(r, &Observed::default(), limits, now)
            }
        }
        ServiceStep::Done | ServiceStep::Reverted => Vec::new(),
    }
}

/// Every service is done: the rollout completes, and the old containers kept for a rollback
/// go.
fn complete(r: &mut RolloutStatus, now: DateTime<Utc>) -> Vec<Act> {
    r.phase = RolloutPhase::Complete;
    r.finished = Some(now);
    let old: Vec<String> = r
        .services
        .iter()
        .filter_map(|s| s.old_container.clone())
        .collect();
    if old.is_empty() {
        Vec::new()
    } else {
        vec![Act::RemoveOld(old)]
    }
}

/// The baseline step of service `i`: once the old container's latency is measured (or known
/// not to be measurable), it is recorded and the new container goes in.
fn baselined(r: &mut RolloutStatus, i: usize, baseline: &Baseline, now: DateTime<Utc>) -> Vec<Act> {
    let name = r.services[i].name.clone();
    let note = match baseline {
        Baseline::Measured(seconds) => {
            r.services[i].baseline_latency_seconds = Some(*seconds);
            let ms = seconds * 1000.0;
            format!("{name}: previous revision's latency {ms:.1} ms measured")
        }
        Baseline::Unavailable(why) => format!(
            "{name}: no previous latency to compare with ({why}); latency.maxIncrease not judged"
        ),
        // Cut off after recording the step: measured again (nothing of the new revision runs
        // yet, so it still measures the old one).
        Baseline::NotAsked => return vec![Act::MeasureBaseline(name)],
        Baseline::Running => return Vec::new(),
    };
    r.gates_passed.push(note);
    let s = &mut r.services[i];
    s.step = ServiceStep::Starting;
    s.since = Some(now);
    start(s)
}

/// The acts that put the new container in: for Recreate, the old one stops first.
fn start(s: &ServiceRollout) -> Vec<Act> {
    let mut acts = Vec::new();
    if s.method == Method::Recreate {
        acts.push(Act::StopOld(s.name.clone()));
    }
    acts.push(Act::StartNew(s.name.clone()));
    acts
}

fn retire(s: &ServiceRollout) -> Vec<Act> {
    match s.method {
        Method::Surge => vec![Act::StopOld(s.name.clone())],
        // Recreate stopped it before starting the new one; Create has none.
        Method::Recreate | Method::Create => Vec::new(),
    }
}

/// The gate the current service failed, as a sentence; None while it may still pass.
fn failed(
    s: &ServiceRollout,
    seen: &Observed,
    limits: Limits,
    now: DateTime<Utc>,
) -> Option<String> {
    let watching = matches!(s.step, ServiceStep::Verifying | ServiceStep::Analysing);
    if !watching {
        return None;
    }
    let name = &s.name;
    let Some(new) = &seen.new else {
        return Some(format!("{name}: the new container disappeared"));
    };
    if !new.running {
        let code = new
            .exit_code
            .map_or(String::new(), |c| format!(" with code {c}"));
        return Some(format!(
            "{name}: its new container exited{code} (it must keep running)"
        ));
    }
    if new.restarts > 0 {
        return Some(format!(
            "{name}: its new container crashed and was restarted {} time(s) (it must keep running)",
            new.restarts
        ));
    }
    if let Analysis::Failed(why) = &seen.analysis {
        return Some(format!("{name}: analysis failed: {why}"));
    }
    let since = s.since.unwrap_or(now);
    let deadline = limits.progress_deadline;
    let late = now - since > chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::MAX);
    // Failing is a verdict already (failureThreshold probes in a row, or Docker's unhealthy
    // after its retries): the old container comes back at once, not at the deadline. The
    // deadline is for probes that never come to a verdict.
    match (&new.probes, s.step) {
        (Probes::Failing(why), ServiceStep::Analysing) => {
            Some(format!("{name}: probes failed during the analysis: {why}"))
        }
        (Probes::Failing(why), _) => {
            Some(format!("{name}: the new container fails its probes: {why}"))
        }
        (Probes::Passing, _) => None,
        (Probes::Unknown, _) if late => Some(format!(
            "{name}: the new container did not pass its probes within progressDeadlineSeconds {}",
            deadline.as_secs()
        )),
        (Probes::Unknown, _) => None,
    }
}

fn fail(r: &mut RolloutStatus, failure: String, seen: &Observed, now: DateTime<Utc>) -> Vec<Act> {
    r.phase = RolloutPhase::RollingBack;
    r.failure = Some(failure);
    back(r, seen, now)
}

/// One step back: the newest service touched gets its old container running (healthy, for a
/// surge: no gap), then loses the new one.
fn back(r: &mut RolloutStatus, seen: &Observed, now: DateTime<Utc>) -> Vec<Act> {
    let Some(i) = r.services.iter().rposition(touched) else {
        // Failed before anything was touched.
        r.phase = RolloutPhase::RolledBack;
        r.finished = Some(now);
        return Vec::new();
    };
    let s = &mut r.services[i];
    let name = s.name.clone();
    let old_up = seen.old.as_ref().is_some_and(|o| o.running);
    let old_ready = seen
        .old
        .as_ref()
        .is_some_and(|o| o.running && o.probes == Probes::Passing);
    match (s.method, seen.new.is_some()) {
        // Nothing of the new revision left: this service is back. The next one is looked at
        // on the next pass, on what is observed of it.
        (_, false) if old_up || s.method == Method::Create => {
            s.step = ServiceStep::Reverted;
            s.since = Some(now);
            if !r.services.iter().any(touched) {
                r.phase = RolloutPhase::RolledBack;
                r.finished = Some(now);
            }
            Vec::new()
        }
        (_, false) => vec![Act::StartOld(name)],
        (Method::Create, true) => vec![Act::RemoveNew(name)],
        // The new container goes first: the two cannot run at once.
        (Method::Recreate, true) => vec![Act::RemoveNew(name)],
        (Method::Surge, true) if old_ready => vec![Act::RemoveNew(name)],
        (Method::Surge, true) if old_up => Vec::new(),
        (Method::Surge, true) => vec![Act::StartOld(name)],
    }
}

/// The conditions a rollout sets, later in the list than the report's so they win: while a
/// rollout runs, services run two revisions and the stack is not Ready; a rolled-back stack is
/// not Ready either (it does not run its spec), and `RolledBack` says why, so `kubectl wait
/// --for=condition=Ready` and Argo CD tell it from a healthy one.
/// A rolled-back rollout counts only while the spec is still the one it rolled back.
pub fn verdicts(rollout: Option<&RolloutStatus>, spec_hash: &str) -> Vec<Verdict> {
    use ConditionStatus::{False, True};
    use ConditionType::{Progressing, Ready, RolledBack};
    let Some(r) = rollout else {
        return vec![Verdict::new(
            RolledBack,
            False,
            Reason::NoRollout,
            "no rollout yet",
        )];
    };
    if r.phase == RolloutPhase::RolledBack && r.spec_hash != spec_hash {
        let message = format!(
            "revision {} was rolled back; the spec has changed since",
            r.revision
        );
        return vec![Verdict::new(RolledBack, False, Reason::NoRollout, message)];
    }
    let n = r.revision;
    let back_to = r
        .from
        .map_or("the previous revision".into(), |f| format!("revision {f}"));
    match r.phase {
        RolloutPhase::Progressing => {
            let step = describe(r);
            vec![
                Verdict::new(
                    Progressing,
                    True,
                    Reason::RollingOut,
                    format!("rolling out revision {n}: {step}"),
                ),
                Verdict::new(
                    Ready,
                    False,
                    Reason::RollingOut,
                    format!("revision {n} is rolling out: {step}"),
                ),
            ]
        }
        RolloutPhase::RollingBack => {
            let why = r.failure.clone().unwrap_or_default();
            let message = format!("rolling revision {n} back to {back_to}: {why}");
            vec![
                Verdict::new(Progressing, True, Reason::RollingBack, message.clone()),
                Verdict::new(Ready, False, Reason::RollingBack, message),
            ]
        }
        RolloutPhase::RolledBack => {
            let why = r.failure.clone().unwrap_or_default();
            let message = format!(
                "revision {n} was rolled back to {back_to}: {why}; it is not tried again until the spec changes"
            );
            vec![
                Verdict::new(RolledBack, True, Reason::GateFailed, message.clone()),
                Verdict::new(Ready, False, Reason::GateFailed, message),
                Verdict::new(
                    Progressing,
                    False,
                    Reason::GateFailed,
                    format!("{back_to} runs; revision {n} was rolled back"),
                ),
            ]
        }
        RolloutPhase::Complete => {
            let gates = if r.gates_passed.is_empty() {
                String::new()
            } else {
                format!("; gates passed: {}", r.gates_passed.join(", "))
            };
            let message = format!("revision {n} rolled out{gates}");
            vec![Verdict::new(
                RolledBack,
                False,
                Reason::RolloutComplete,
                message,
            )]
        }
    }
}

/// `backend 1/2: waiting for its new container's probes since 10:04:05Z`.
fn describe(r: &RolloutStatus) -> String {
    let Some((i, s)) = r
        .services
        .iter()
        .enumerate()
        .find(|(_, s)| s.step != ServiceStep::Done)
    else {
        return "every service updated".into();
    };
    let doing = match s.step {
        ServiceStep::Baselining => "measuring its old container's latency",
        ServiceStep::Pending | ServiceStep::Starting => "starting its new container",
        ServiceStep::Verifying => "waiting for its new container's probes",
        ServiceStep::Analysing => "analysing its metrics",
        ServiceStep::Retiring => "stopping its old container",
        ServiceStep::Done | ServiceStep::Reverted => "done",
    };
    // A time, not an age: the message must not change at every pass (calm status writes).
    let since = s
        .since
        .map(|t| format!(" since {}", t.format("%H:%M:%SZ")))
        .unwrap_or_default();
    format!("{} {}/{}: {doing}{since}", s.name, i + 1, r.services.len())
}

/// The services a plan changes, as a rollout takes them: a recreate (the old container is
/// known) or a create (a new service), in the plan's order, which is dependency order, those
/// waiting for a dependency last.
/// Only a service that publishes no port, writes no volume or bind mount and has no fixed
/// `container_name` can have two containers at once.
pub fn changes(plan: &Plan, project: &Project, strategy: Strategy) -> Vec<Change> {
    // A changed service waiting for a dependency that changes too is part of the same
    // revision: the rollout takes it after that dependency passed its gates.
    plan.actions
        .iter()
        .chain(&plan.deferred)
        .filter_map(|a| {
            let (service, old) = match a {
                Action::Recreate { service, old_id } => (service, Some(old_id.clone())),
                Action::Create { service } => (service, None),
                _ => return None,
            };
            let spec = project.service(service)?;
            // Even a port Docker picks: the new container would answer on another host port
            // than the one its users know. And two containers writing the same volume (a
            // database's files) would corrupt it: a stateful service is stopped first.
            let can_surge = strategy == Strategy::Auto
                && spec.ports.is_empty()
                && spec.fixed_name.is_none()
                && !writes_shared_data(spec);
            Some(Change {
                service: service.clone(),
                old_container: old,
                can_surge,
            })
        })
        .collect()
}

/// Whether the service writes to a named volume or a bind mount, which the old container
/// would go on writing while the new one starts. Anonymous volumes and tmpfs are each
/// container's own.
fn writes_shared_data(spec: &crate::compose::ServiceSpec) -> bool {
    use crate::compose::MountSpec;
    spec.mounts.iter().any(|m| match m {
        MountSpec::Volume { read_only, .. } | MountSpec::Bind { read_only, .. } => !read_only,
        MountSpec::Anonymous { .. } | MountSpec::Tmpfs { .. } => false,
    })
}

/// Whether the changes are rolled out step by step: only on a stack that was Ready before
/// (`last_good`); until then (a first deploy, its later services included) everything starts
/// at once, as `up` does.
pub fn rolls_out(last_good: Option<u64>, changes: &[Change]) -> bool {
    last_good.is_some() && !changes.is_empty()
}

/// The services converge must leave alone because the rollout holds them: all of an active
/// rollout's, and a rolled-back one's while the spec is still the one that was rolled back
/// (it is not tried again until the spec changes).
pub fn held(rollout: Option<&RolloutStatus>, spec_hash: &str) -> BTreeSet<String> {
    match rollout {
        Some(r)
            if r.phase.active()
                || (r.phase == RolloutPhase::RolledBack && r.spec_hash == spec_hash) =>
        {
            r.services.iter().map(|s| s.name.clone()).collect()
        }
        _ => BTreeSet::new(),
    }
}
