//! The rollout step: a new revision of a stack that ran before is rolled out one service at a
//! time, each service's container replaced the way `decide::rollout` chose, and rolled back
//! when a gate fails. This step observes the containers concerned, records the rollout in
//! status before it acts (a kill repeats the same acts, each repeat-safe), and acts.

use chrono::{DateTime, Utc};

use super::analyses::Job;
use super::{status, Error, Pass};
use crate::api::revision::{Outcome as RevisionOutcome, Phase};
use crate::api::rollout::AnalysisSpec;
use crate::api::rollout_status::{RolloutPhase, RolloutStatus, ServiceRollout, ServiceStep};
use crate::api::{
    ContainerHealth, ContainerState, DeployBackupState, EventReason, EventType, ServiceStackStatus,
    StackEvent,
};
use crate::decide::plan::Plan;
use crate::decide::rollout::{self, Act, Limits, Probes, Seen};
use crate::docker::{EngineError, Owner, Surge};
use crate::observe::{ObservedContainer, Snapshot};

/// What the step leaves for the rest of the pass.
#[derive(Default)]
pub(super) struct Rolled {
    /// The engine was acted on: what runs must be looked at again.
    pub acted: bool,
    /// An act the engine refused: the service and the message (retried next pass).
    pub failure: Option<(String, String)>,
}

/// Advances or rolls back `rollout` (from [`current`]), recording each step before it acts.
/// `failures`: what converge could not do this pass (an image that did not build or pull): a
/// rollout needing it does not begin, or waits.
pub(super) async fn step(
    pass: &mut Pass<'_>,
    rollout: Option<RolloutStatus>,
    owner: &Owner,
    seen: &Snapshot,
    failures: &[(String, String)],
) -> Result<Rolled, Error> {
    let Some(rollout) = rollout else {
        return Ok(Rolled::default());
    };
    let failed = |name: &str| failures.iter().any(|(s, _)| s == name || s == "*");
    let begun = recorded(pass).is_some_and(|r| r.revision == rollout.revision);
    let waits = if begun {
        rollout::current(&rollout).is_some_and(|s| failed(&s.name))
    } else {
        rollout.services.iter().any(|s| failed(&s.name))
    };
    if waits && rollout.phase == RolloutPhase::Progressing {
        return Ok(Rolled::default());
    }
    if !rollout.phase.active() {
        if recorded(pass) != Some(&rollout) {
            record(pass, &rollout, seen.now).await?;
        }
        return Ok(Rolled::default());
    }
    let observed = observe(pass, &rollout, seen);
    let analysis = rollout::current(&rollout).and_then(|s| analysed(pass, &s.name));
    let limits = Limits {
        progress_deadline: pass.stack.spec.rollout.progress_deadline(),
        analysis: analysis.is_some(),
        baseline: analysis.is_some_and(AnalysisSpec::judges_increase),
    };
    let next = rollout::next(&rollout, &observed, limits, seen.now);
    if recorded(pass) != Some(&next.rollout) {
        record(pass, &next.rollout, seen.now).await?;
    }
    let mut failure = None;
    for act in &next.acts {
        if let Err(e) = perform(pass, &next.rollout, owner, seen, act).await {
            // As converge does: an engine's message can echo a container's config.
            let message = crate::api::mask(&e.to_string(), &pass.stack.spec.variables, &[]);
            failure = Some((act_service(act).to_owned(), message));
            break;
        }
    }
    Ok(Rolled {
        acted: !next.acts.is_empty(),
        failure,
    })
}

fn recorded<'a>(pass: &'a Pass<'_>) -> Option<&'a RolloutStatus> {
    pass.stack.status.as_ref().and_then(|s| s.rollout.as_ref())
}

/// The rollout this pass works on: the recorded one, a new one when the pass applies a new
/// revision that changes services, and an unfinished one for an older spec turned to rolling
/// back (its containers are undone before the new spec is rolled out).
pub(super) fn current(
    pass: &Pass<'_>,
    plan: &Plan,
    seen: &Snapshot,
    applies: bool,
    spec_hash: &str,
) -> Option<RolloutStatus> {
    let previous = &seen.previous;
    let mut rollout = recorded(pass).cloned();
    let idle = rollout.as_ref().is_none_or(|r| !r.phase.active());
    let tried = rollout.as_ref().is_some_and(|r| r.spec_hash == spec_hash);
    // Once per spec: a rollout completed or rolled back is not begun again until the spec
    // changes (and never before the stack was first Ready: see `rolls_out`).
    if applies && idle && !tried {
        let spec = &pass.stack.spec.rollout;
        let changes = rollout::changes(plan, pass.project, spec.strategy);
        if rollout::rolls_out(previous.last_good_revision, &changes) {
            let from = previous.last_good_revision;
            let mut begun = rollout::begin(
                plan.revision,
                spec_hash,
                from,
                &changes,
                &spec.order,
                seen.now,
            );
            // The deploy gate let the revision through: its backups were the first step.
            begun.gates_passed = backed_up_before(previous, spec_hash);
            rollout = Some(begun);
        }
    }
    if let Some(r) = rollout
        .as_mut()
        .filter(|r| r.phase == RolloutPhase::Progressing && r.spec_hash != spec_hash)
    {
        r.phase = RolloutPhase::RollingBack;
        r.failure = Some(format!(
            "the spec changed before revision {} was rolled out; it is undone first",
            r.revision
        ));
    }
    rollout
}

/// The `beforeDeploy` backups taken for this spec, as passed gates of its rollout.
fn backed_up_before(previous: &ServiceStackStatus, spec_hash: &str) -> Vec<String> {
    previous
        .backups
        .iter()
        .filter_map(|(target, st)| {
            let d = st.deploy_backup.as_ref()?;
            let done = d.spec_hash == spec_hash && d.state == DeployBackupState::Succeeded;
            done.then(|| format!("{target}: backed up before the deploy ({})", d.id))
        })
        .collect()
}

/// The current service's containers as the rollout needs to see them.
fn observe(pass: &Pass<'_>, r: &RolloutStatus, seen: &Snapshot) -> rollout::Observed {
    let Some(s) = rollout::current(r) else {
        return rollout::Observed::default();
    };
    let ours: Vec<&ObservedContainer> = seen
        .observed
        .containers
        .iter()
        .filter(|c| c.service == s.name && pass.claim.owns(c))
        .collect();
    let old = ours
        .iter()
        .find(|c| Some(&c.id) == s.old_container.as_ref())
        .copied();
    // Found by the id recorded, or (cut off before it was recorded) as the one carrying the
    // rollout's spec that is not the old one.
    let new = ours
        .iter()
        .find(|c| Some(&c.id) == s.new_container.as_ref())
        .or_else(|| {
            ours.iter().find(|c| {
                Some(&c.id) != s.old_container.as_ref()
                    && c.spec_hash.as_deref() == Some(r.spec_hash.as_str())
            })
        })
        .copied();
    let verdict = seen.probes.get(&s.name);
    rollout::Observed {
        old: old.map(|c| seen_of(c, verdict)),
        new: new.map(|c| seen_of(c, verdict)),
        new_id: new.map(|c| c.id.clone()),
        analysis: pass
            .ctx
            .analyses
            .state(&pass.ctx.jobs, &pass.stack.key(), r.revision, &s.name),
        baseline: pass.ctx.analyses.baseline(
            &pass.ctx.jobs,
            &pass.stack.key(),
            r.revision,
            &s.name,
        ),
    }
}

/// A container's state and probes: Docker's healthcheck when it has one, the prober's verdict
/// when it is about this very container run, else passing once it runs.
fn seen_of(c: &ObservedContainer, verdict: Option<&crate::observe::ProbeVerdict>) -> Seen {
    let running = c.state == ContainerState::Running;
    let prober = verdict
        .filter(|v| v.run_started_at.is_some() && v.run_started_at == c.started_at)
        .and_then(|v| v.healthy.map(|h| (h, v)));
    let probes = match (c.health, prober) {
        (Some(ContainerHealth::Unhealthy), _) => {
            Probes::Failing("its Docker healthcheck reports unhealthy".into())
        }
        (_, Some((false, v))) => Probes::Failing(
            v.last
                .as_ref()
                .map_or_else(|| "its probes fail".into(), |l| l.message.clone()),
        ),
        (Some(ContainerHealth::Starting), _) => Probes::Unknown,
        (Some(ContainerHealth::Healthy), _) | (None, Some((true, _))) => Probes::Passing,
        (None, None) if verdict.is_some() => Probes::Unknown,
        (None, None) => Probes::Passing,
    };
    Seen {
        running,
        probes,
        exit_code: (!running).then_some(c.exit_code).flatten(),
        restarts: c.restart_count,
    }
}

/// Writes the rollout into status before it is acted on; the revision store hears of a
/// rollback.
async fn record(pass: &mut Pass<'_>, r: &RolloutStatus, now: DateTime<Utc>) -> Result<(), Error> {
    let before = recorded(pass).cloned();
    let mut interim = pass.stack.status.clone().unwrap_or_default();
    interim.rollout = Some(r.clone());
    pass.ctx.store.write_status(pass.stack, interim).await?;
    pass.ctx.metrics.status_written(&pass.stack.key());
    measure(pass, before.as_ref(), r, now);
    let phase_changed = before
        .as_ref()
        .is_none_or(|b| b.phase != r.phase || b.revision != r.revision);
    if phase_changed {
        if !r.phase.active() {
            let key = pass.stack.key();
            pass.ctx
                .jobs
                .cancel_where(|k| k.stack == key && k.kind == crate::jobs::Kind::Analysis);
            pass.ctx.analyses.forget(&key);
        }
        if r.phase == RolloutPhase::RolledBack {
            let outcome = RevisionOutcome {
                phase: Phase::RolledBack,
                since: Some(now),
            };
            pass.ctx
                .store
                .set_outcome(pass.stack, r.revision, &outcome)
                .await?;
        }
        status::publish(pass.ctx, pass.stack, phase_event(r)).await?;
    }
    Ok(())
}

/// Tells the metrics which steps and which rollout the recorded change ended. Measured from
/// the times status recorded, so a step that spans an operator restart is measured whole.
fn measure(pass: &Pass<'_>, before: Option<&RolloutStatus>, r: &RolloutStatus, now: DateTime<Utc>) {
    let (metrics, key) = (&pass.ctx.metrics, pass.stack.key());
    let took = |since: DateTime<Utc>| (now - since).to_std().unwrap_or_default();
    let before = before.filter(|b| b.revision == r.revision);
    for was in before.iter().flat_map(|b| &b.services) {
        let step_ended = part(r, &was.name).is_some_and(|s| s.step != was.step);
        let measured = matches!(
            was.step,
            ServiceStep::Starting
                | ServiceStep::Verifying
                | ServiceStep::Analysing
                | ServiceStep::Retiring
        );
        if let (true, true, Some(since)) = (step_ended, measured, was.since) {
            metrics.rollout_step_ended(&key, &was.name, step_label(was.step), took(since));
        }
    }
    let was_active = before.is_some_and(|b| b.phase.active());
    let outcome = match r.phase {
        RolloutPhase::Complete => Some("Complete"),
        RolloutPhase::RolledBack => Some("RolledBack"),
        RolloutPhase::Progressing | RolloutPhase::RollingBack => None,
    };
    if let (true, Some(outcome)) = (was_active, outcome) {
        metrics.rollout_ended(&key, outcome, took(r.started));
    }
}

fn step_label(step: ServiceStep) -> &'static str {
    match step {
        ServiceStep::Pending => "Pending",
        ServiceStep::Baselining => "Baselining",
        ServiceStep::Starting => "Starting",
        ServiceStep::Verifying => "Verifying",
        ServiceStep::Analysing => "Analysing",
        ServiceStep::Retiring => "Retiring",
        ServiceStep::Done => "Done",
        ServiceStep::Reverted => "Reverted",
    }
}

fn phase_event(r: &RolloutStatus) -> StackEvent {
    let names: Vec<&str> = r.services.iter().map(|s| s.name.as_str()).collect();
    let (reason, type_, note) = match r.phase {
        RolloutPhase::Progressing => (
            EventReason::RolloutStarted,
            EventType::Normal,
            format!("rolling out revision {}: {}", r.revision, names.join(", ")),
        ),
        RolloutPhase::Complete => (
            EventReason::Reason(crate::api::Reason::RolloutComplete),
            EventType::Normal,
            format!("revision {} rolled out", r.revision),
        ),
        // The Warning is the RolledBack condition's own event.
        RolloutPhase::RollingBack | RolloutPhase::RolledBack => (
            EventReason::Reason(crate::api::Reason::RollingBack),
            EventType::Normal,
            format!(
                "revision {}: {}",
                r.revision,
                r.failure.as_deref().unwrap_or("rolling back")
            ),
        ),
    };
    StackEvent {
        type_,
        reason,
        note,
        action: "Rollout".into(),
    }
}

fn act_service(act: &Act) -> &str {
    match act {
        Act::StartNew(s)
        | Act::StopOld(s)
        | Act::StartOld(s)
        | Act::RemoveNew(s)
        | Act::Analyse(s)
        | Act::MeasureBaseline(s) => s,
        Act::RemoveOld(_) => "*",
    }
}

fn part<'a>(r: &'a RolloutStatus, service: &str) -> Option<&'a ServiceRollout> {
    r.services.iter().find(|s| s.name == service)
}

/// Carries out one act; each is repeat-safe (a container already started, stopped or gone is
/// done).
async fn perform(
    pass: &Pass<'_>,
    r: &RolloutStatus,
    owner: &Owner,
    seen: &Snapshot,
    act: &Act,
) -> Result<(), EngineError> {
    let engine = &*pass.engine;
    let grace = |service: &str| {
        pass.project
            .service(service)
            .and_then(|s| s.stop_grace_period_s)
    };
    let old = |service: &str| part(r, service).and_then(|s| s.old_container.clone());
    let new = |service: &str| part(r, service).and_then(|s| s.new_container.clone());
    match act {
        Act::StartNew(service) => start_new(pass, r, owner, seen, service).await,
        Act::StopOld(service) => match old(service) {
            Some(id) => match engine.stop_container(&id, grace(service)).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            },
            None => Ok(()),
        },
        Act::StartOld(service) => match old(service) {
            Some(id) => start_old(pass, seen, service, &id).await,
            None => Ok(()),
        },
        // Stopped gracefully while still on its networks, as an old container is retired.
        Act::RemoveNew(service) => match new(service) {
            Some(id) => crate::docker::retire(engine, &id, grace(service)).await,
            None => Ok(()),
        },
        Act::RemoveOld(ids) => {
            for id in ids {
                engine.remove_container(id, Some(0)).await?;
            }
            Ok(())
        }
        Act::Analyse(service) => analyse(pass, r, seen, service, Scrape::New),
        Act::MeasureBaseline(service) => analyse(pass, r, seen, service, Scrape::Old),
    }
}

/// Creates (unless a cut-off try did) and starts the service's container of the new revision:
/// beside the old one under the other docker-compose number, or under the service's own name
/// when it is new.
async fn start_new(
    pass: &Pass<'_>,
    r: &RolloutStatus,
    owner: &Owner,
    seen: &Snapshot,
    service: &str,
) -> Result<(), EngineError> {
    let engine = &*pass.engine;
    let Some(svc) = pass.project.service(service) else {
        return Ok(());
    };
    let part = part(r, service);
    if let Some(id) = part.and_then(|s| s.new_container.as_ref()) {
        return engine.start_container(id).await;
    }
    let spec_hash = &r.spec_hash;
    let old = part.and_then(|s| s.old_container.as_ref());
    let id = match (old, &svc.fixed_name) {
        // The name is the service's: the old container steps aside (stopped, kept for a
        // rollback) and the new one takes it.
        (Some(old_id), Some(fixed)) => {
            if name_of(seen, old_id) == Some(fixed.as_str()) {
                engine.rename_container(old_id, &aside(fixed)).await?;
            }
            engine
                .create_container(svc, owner, r.revision, spec_hash)
                .await?
        }
        (Some(old_id), None) => {
            let old_name = name_of(seen, old_id).unwrap_or_default();
            let surge = Surge::replacing(svc, &pass.project.name, old_name).map_err(|e| {
                EngineError::Api {
                    context: format!("replacing service {service}"),
                    status: None,
                    message: e.to_string(),
                }
            })?;
            engine
                .create_surge_container(svc, owner, r.revision, spec_hash, &surge)
                .await?
        }
        (None, _) => {
            engine
                .create_container(svc, owner, r.revision, spec_hash)
                .await?
        }
    };
    engine.start_container(&id).await
}

/// Starts the kept old container again, under the service's fixed name if it has one (the
/// new container, which held the name, is gone by then: see `decide::rollout`).
async fn start_old(
    pass: &Pass<'_>,
    seen: &Snapshot,
    service: &str,
    id: &str,
) -> Result<(), EngineError> {
    let fixed = pass
        .project
        .service(service)
        .and_then(|s| s.fixed_name.as_deref());
    if let Some(fixed) = fixed {
        if name_of(seen, id) != Some(fixed) {
            pass.engine.rename_container(id, fixed).await?;
        }
    }
    pass.engine.start_container(id).await
}

fn name_of<'a>(seen: &'a Snapshot, id: &str) -> Option<&'a str> {
    seen.observed
        .containers
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.name.as_str())
}

/// Where an old container with a fixed name waits while the new one holds the name.
fn aside(fixed: &str) -> String {
    format!("{fixed}-previous")
}

/// The analysis asked for `service`, if any.
fn analysed<'a>(pass: &'a Pass<'_>, service: &str) -> Option<&'a AnalysisSpec> {
    pass.stack
        .spec
        .rollout
        .analysis
        .as_ref()
        .filter(|a| a.services.iter().any(|s| s == service))
}

/// Which container an analysis job scrapes.
#[derive(Clone, Copy)]
enum Scrape {
    /// The new one, judged over the window (against the baseline recorded, if any).
    New,
    /// The old one, for the baseline figure, before anything is touched.
    Old,
}

/// Starts the analysis of the service's new container (or the baseline measurement on its old
/// one), scraped at its address on the project network.
fn analyse(
    pass: &Pass<'_>,
    r: &RolloutStatus,
    seen: &Snapshot,
    service: &str,
    which: Scrape,
) -> Result<(), EngineError> {
    let Some(spec) = analysed(pass, service) else {
        return Ok(());
    };
    let part = part(r, service);
    let (id, job) = match which {
        Scrape::New => (
            part.and_then(|s| s.new_container.as_deref()),
            Job::Analysis {
                baseline: part.and_then(|s| s.baseline_latency_seconds),
            },
        ),
        Scrape::Old => (part.and_then(|s| s.old_container.as_deref()), Job::Baseline),
    };
    let ip = id
        .and_then(|id| seen.observed.containers.iter().find(|c| c.id == id))
        .and_then(|c| c.addresses.values().next().copied());
    let Some(ip) = ip else {
        return Err(EngineError::Api {
            context: format!("analysing service {service}"),
            status: None,
            message: "its container has no address on a network to scrape its metrics at".into(),
        });
    };
    let url = spec.url(std::net::SocketAddr::new(ip, spec.metrics.port));
    let request = super::analyses::Request {
        stack: pass.stack.key(),
        revision: r.revision,
        service: service.to_owned(),
        spec: spec.clone(),
        url,
        job,
    };
    let ctx = pass.ctx;
    ctx.analyses
        .start(&ctx.jobs, &ctx.wake, ctx.metrics.clone(), request);
    Ok(())
}
