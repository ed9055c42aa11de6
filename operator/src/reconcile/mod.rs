//! One reconcile for both drivers, as a chain of steps over one stack. Data flows one way:
//!
//! ```text
//! admit      secrets joined, compose file loaded and checked          (or: InvalidSpec, stop)
//! engine     the stack's Docker engine                                (or: DockerUnreachable, stop)
//! rollback   a rollback request recorded; a pinned revision's project  (rollback.rs, decide/rollback.rs)
//!            replaces the spec's for the rest of the pass
//! observe    one Snapshot: engine, probe verdicts, status, `now`      (snapshot.rs, observe/)
//! intent     held services and the deploy gate                        (heal::hold, Deploy)
//! converge   plan on the snapshot -> act -> look again if it acted    (converge.rs, decide/plan.rs)
//! holds      stop what is held, resume what is not; look again if so  (hold.rs)
//! repair     restarts and budgets, each written into status first     (repair.rs)
//! report     per-service status, health, Ready and Progressing        (decide/report.rs)
//! backups    fold finished jobs, decide what starts                   (backups.rs)
//! write      one status write, then the events                        (status.rs)
//! jobs       the backup jobs whose intent the write recorded
//! requeue    when to look again                                       (requeue.rs, pure)
//! ```
//!
//! The engine is observed once before anything is done, and every decision of the pass reads
//! that snapshot and its one `now`. An acting step that changed what runs (converge, holds)
//! looks again once done and hands that after-view on in its [`Outcome`]: repair, report and
//! backups see what runs afterwards (the snapshot's own view when nothing was done).
//!
//! Docker trouble and bad specs are not errors of the reconcile: they end as conditions and a
//! requeue, and nothing running is touched because of them. `Err` is kept for what the
//! operator cannot report (the store itself failing) and for cleanup, which must be retried.

mod analyses;
mod backups;
mod cleanup;
mod context;
mod converge;
mod deploy;
mod hold;
mod keys;
pub mod prober;
mod repair;
pub mod requeue;
mod revisions;
mod rollback;
mod rollout;
mod snapshot;
mod status;
mod verdicts;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::admit::{self, Admitted};
use crate::api::{ConditionStatus, ConditionType, ServiceStack, ServiceStackStatus, Verdict};
use crate::compose::Project;
use crate::decide::backup::plan::Gate;
use crate::decide::heal::hold::Holds;
use crate::decide::{plan, report};
use crate::docker::{Claim, Engine, EngineError};
use crate::observe::Snapshot;
use crate::store::StoreError;

pub use crate::decide::plan::{plan, Action, Outcome, Plan};
pub use crate::jobs::{Wake, Waker};
pub use cleanup::cleanup;
pub use context::Context;
pub use converge::converge;
pub use requeue::{backoff_delay, BACKUP_PROGRESS_REQUEUE, PROGRESS_REQUEUE, STEADY_REQUEUE};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status or events failed: {0}")]
    Store(#[from] StoreError),
    #[error("cleanup failed: {0}")]
    Cleanup(#[from] EngineError),
}

impl Error {
    /// Stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Cleanup(_) => "cleanup",
        }
    }
}

/// What a reconcile pass tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeue(pub Duration);

/// One pass over a valid stack on an engine that answered: what every acting step needs.
pub(crate) struct Pass<'a> {
    pub ctx: &'a Context,
    /// The stack as last written: a step that records intent writes its status, and the copy
    /// carries the resource version forward to the next write.
    pub stack: &'a mut ServiceStack,
    /// The spec as admitted: everything in it checked, every choice typed.
    pub admitted: &'a Admitted,
    /// `admitted.project`, the compose file as the engine gets it.
    pub project: &'a Project,
    /// Which containers are the stack's own.
    pub claim: Claim,
    /// The stack's engine; jobs and probers that outlive the pass hold it too.
    pub engine: Arc<dyn Engine>,
    /// The revision a manual rollback pins the stack to, applied instead of the spec.
    pub pin: Option<&'a rollback::Pin>,
}

/// Brings one stack one step closer to its spec and reports what it sees.
#[tracing::instrument(name = "reconcile", skip_all, fields(stack = %stack.key()))]
pub async fn reconcile(stack: &ServiceStack, uid: &str, ctx: &Context) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_once(stack, uid, ctx).await;
    ctx.metrics.reconciled(
        &stack.key(),
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_once(stack: &ServiceStack, uid: &str, ctx: &Context) -> Result<Requeue, Error> {
    // The copy carries the resource version forward across this pass's own status writes.
    let mut stack = stack.clone();
    let admitted = match admitted(ctx, &mut stack).await {
        Ok(a) => a,
        Err(e) => return invalid(ctx, &mut stack, e).await,
    };
    let host = stack.spec.docker.host().to_owned();
    let engine = match ctx.engines.engine(&host).await {
        Ok(engine) => engine,
        Err(e) => return unreachable(ctx, &mut stack, e).await,
    };
    match rollback::step(ctx, &mut stack, admitted, &*engine, Utc::now()).await? {
        Ok((admitted, pin)) => apply(ctx, &mut stack, &admitted, pin.as_ref(), uid, engine).await,
        Err(e) => invalid(ctx, &mut stack, e).await,
    }
}

/// The admit step: variables from Secrets and env files join the spec's own (which win) before anything
/// reads them, then the compose file (with what the local driver read beside the manifest).
async fn admitted(
    ctx: &Context,
    stack: &mut ServiceStack,
) -> Result<Admitted, crate::api::Failure> {
    let referenced = ctx.store.referenced_variables(stack).await?;
    for (k, v) in crate::store::variables::values(referenced) {
        stack.spec.variables.entry(k).or_insert(v);
    }
    admit_as(ctx, stack).await
}

/// Admits `stack` as it is (its variables joined already).
async fn admit_as(ctx: &Context, stack: &ServiceStack) -> Result<Admitted, crate::api::Failure> {
    let Some(dir) = ctx.store.manifest_dir(stack) else {
        return admit::admit(stack, admit::Origin::Cluster);
    };
    // Reading env files and hashing build contexts is blocking file I/O.
    let for_read = stack.clone();
    let inputs =
        tokio::task::spawn_blocking(move || crate::store::local_inputs::gather(&for_read, &dir))
            .await
            .unwrap_or_default();
    admit::admit(stack, admit::Origin::Local(&inputs))
}

/// What the pass may do, decided before it does anything.
struct Intent {
    /// Held services (a person's hold, a running restore's): neither started nor healed.
    holds: Holds,
    deploy: deploy::Deploy,
    /// Nothing new is applied: a deploy waits for its backups, or the operator shuts down.
    hold_deploy: bool,
}

impl Intent {
    fn of(ctx: &Context, stack: &ServiceStack, project: &Project, seen: &Snapshot) -> Self {
        let previous = &seen.previous;
        let holds = crate::decide::heal::hold::holds(
            project,
            stack
                .metadata
                .annotations
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
            &crate::backup::runner::restoring(&previous.backups),
            &previous.services,
            seen.now,
        );
        let deploy = deploy::Deploy::of(stack, project, previous);
        let hold_deploy = deploy.gate != Gate::Open || ctx.draining();
        Self {
            holds,
            deploy,
            hold_deploy,
        }
    }

    /// Services the repair step leaves alone: held ones, and those resumed this pass (started
    /// by the holds step, not seen running yet: not a crash).
    fn hands_off(&self) -> BTreeSet<String> {
        self.holds
            .held()
            .union(&self.holds.ended)
            .cloned()
            .collect()
    }
}

/// The pass of a valid stack on an engine that answered: converge, repair, report, back up.
async fn apply(
    ctx: &Context,
    stack: &mut ServiceStack,
    admitted: &Admitted,
    pin: Option<&rollback::Pin>,
    uid: &str,
    engine: Arc<dyn Engine>,
) -> Result<Requeue, Error> {
    let project = &admitted.project;
    let previous = stack.status.clone().unwrap_or_default();
    let claim = claim(stack, project, uid, &previous);
    ctx.watches.ensure(
        stack.spec.docker.host(),
        &ctx.engines,
        &ctx.wake,
        &ctx.stops,
    );
    let shared = ctx.prober_shared();
    prober::ensure(&ctx.jobs, stack, project, &claim, &engine, &shared);
    // Read after the prober is started or cancelled: the board then holds this spec's verdicts.
    let seen = match snapshot::take(ctx, &stack.key(), &*engine, project, previous).await {
        Ok(s) => s,
        Err(e) => return unreachable(ctx, stack, e).await,
    };
    let intent = Intent::of(ctx, stack, project, &seen);
    let mut pass = Pass {
        ctx,
        stack,
        admitted,
        project,
        claim,
        engine,
        pin,
    };
    let outcome = match converged(&mut pass, &intent, uid, &seen).await? {
        Ok(o) => o,
        Err(e) => return unreachable(ctx, pass.stack, e).await,
    };
    let mut hands_off = intent.hands_off();
    // A rollout's containers are the rollout's to judge: a new one that crashes fails its gate
    // rather than being restarted.
    let rollout = pass.stack.status.as_ref().and_then(|s| s.rollout.as_ref());
    if let Some(r) = rollout.filter(|r| r.phase.active()) {
        hands_off.extend(r.services.iter().map(|s| s.name.clone()));
    }
    let repair = repair::repair(&mut pass, &outcome, &seen, &hands_off).await?;
    finish_pass(pass, &intent, outcome, &seen, repair).await
}

/// The converge and holds steps: the containers brought to the compose file, held services
/// stopped and resumed, and what runs afterwards. The inner `Err` is an engine that stopped
/// answering.
async fn converged(
    pass: &mut Pass<'_>,
    intent: &Intent,
    uid: &str,
    seen: &Snapshot,
) -> Result<Result<Outcome, EngineError>, Error> {
    let owner = crate::docker::Owner {
        project: pass.project.name.clone(),
        stack: pass.stack.key(),
        uid: uid.to_owned(),
    };
    let (plan, rollout) = planned(pass, intent, seen).await?;
    let converged = converge(
        pass.stack,
        pass.project,
        &owner,
        plan,
        &seen.observed,
        &*pass.engine,
    );
    let mut outcome = match converged.await {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    for event in std::mem::take(&mut outcome.events) {
        status::publish(pass.ctx, pass.stack, event).await?;
    }
    // After converge, which pulled or built the new images and made the networks.
    let rolled = rollout::step(pass, rollout, &owner, seen, &outcome.failures).await?;
    outcome.failures.extend(rolled.failure);
    outcome.acted |= rolled.acted;
    let mut look_again = rolled.acted;
    // Suspended: holds are recorded and reported, but nothing is stopped or started.
    let may_act = !pass.ctx.draining() && !pass.stack.spec.suspend;
    if may_act && hold::act(pass, &intent.holds, &outcome).await? {
        look_again = true;
    }
    // What the status reports must be what runs after the acts.
    if look_again {
        match snapshot::look(&*pass.engine, pass.project).await {
            Ok(o) => outcome.observed = o,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(outcome))
}

/// The plan on the snapshot, the new revision recorded before anything of it is done, and the
/// rollout that takes the services it changes one at a time (converge leaves those alone).
async fn planned(
    pass: &mut Pass<'_>,
    intent: &Intent,
    seen: &Snapshot,
) -> Result<
    (
        plan::Plan,
        Option<crate::api::rollout_status::RolloutStatus>,
    ),
    Error,
> {
    let previous = &seen.previous;
    let last = previous
        .revision
        .zip(previous.spec_hash.clone())
        .map(|(revision, spec_hash)| plan::Applied {
            revision,
            spec_hash,
        });
    let target = converge::Target {
        claim: &pass.claim,
        last: last.as_ref(),
        paused: &intent.holds.held(),
        hold: intent.hold_deploy,
    };
    let mut plan = converge::planned(pass.project, &seen.observed, &target);
    let applies = !intent.hold_deploy && !pass.stack.spec.suspend && plan.conflict.is_none();
    if applies && previous.revision != Some(plan.revision) {
        revisions::record(pass, plan.revision, &seen.observed, seen.now).await?;
    }
    let spec_hash = &intent.deploy.spec_hash;
    let rollout = rollout::current(pass, &plan, seen, applies, spec_hash);
    let held = crate::decide::rollout::held(rollout.as_ref(), spec_hash);
    // Images are still pulled and built here; the containers are the rollout's.
    plan.actions.retain(|a| match a {
        Action::Create { service }
        | Action::Start { service, .. }
        | Action::Recreate { service, .. }
        | Action::Remove { service, .. } => !held.contains(service),
        _ => true,
    });
    Ok((plan, rollout))
}

/// The report, backups, write, jobs and requeue steps.
async fn finish_pass(
    pass: Pass<'_>,
    intent: &Intent,
    outcome: Outcome,
    snapshot: &Snapshot,
    repair: repair::Repair,
) -> Result<Requeue, Error> {
    let (ctx, project, now) = (pass.ctx, pass.project, snapshot.now);
    let previous = &snapshot.previous;
    let key = pass.stack.key();
    let facts = report::Facts {
        required: &pass.admitted.required,
        suspended: pass.stack.spec.suspend,
        deploy_held: intent.deploy.gate != Gate::Open,
        holds: intent.holds.active.clone(),
    };
    let report = report::report(project, &outcome, &pass.claim, &facts, &snapshot.probes);
    let mut status = reported_status(&pass, intent, previous, &outcome, &report);
    let keys = keys::step(&pass, &mut status, previous, now).await?;
    repair.apply_to(&mut status);
    hold::record(&mut status, &intent.holds);
    let deploying = intent.deploy.deploying();
    let backups = backups::step(&pass, &outcome, &mut status, deploying, now).await;
    let gate = &intent.deploy.gate;
    let mut verdicts = verdicts::applied(&pass, &report, &repair, gate, &status, now);
    verdicts.extend(keys.verdicts);
    // The backups a held deploy waited for are done: deploy now, not at the next requeue.
    let deploy_now =
        *gate != Gate::Open && intent.deploy.gate_after(pass.stack, &status) == Gate::Open;
    let ready = ready_on(&verdicts, &status, &outcome).filter(|_| !pass.stack.spec.suspend);
    if let Some(n) = ready.filter(|n| previous.last_good_revision != Some(*n)) {
        // The revision is marked Complete before the status naming it last good is written.
        revisions::ready(&pass, n, &outcome.observed, now).await?;
        status.last_good_revision = Some(n);
    }
    let later = repair
        .events
        .iter()
        .chain(&backups.events)
        .chain(&keys.events)
        .cloned()
        .collect();
    // A rollout's steps wait on containers starting and probes passing: look again soon.
    let rolling = status
        .rollout
        .as_ref()
        .is_some_and(|r| r.phase.active())
        .then(|| now + chrono::Duration::seconds(1));
    status::finish(ctx, pass.stack, status, previous, verdicts, later, now).await?;
    // Only now that status holds their intent do the jobs start; and only now are the results
    // folded into it let go of (a pass whose write failed folds them again).
    for spawn in backups.spawns {
        ctx.backups.spawn(spawn, ctx.wake.clone());
    }
    ctx.backups.committed(&key, &backups.folded);
    let base = ctx.backoff(&key, !outcome.failures.is_empty()).await;
    // Look again soon after a resume, to report the service running.
    let resumed = (!intent.holds.ended.is_empty()).then(|| now + chrono::Duration::seconds(1));
    let at = [
        repair.next,
        backups.next,
        hold::next_end(&intent.holds),
        resumed,
        rolling,
    ]
    .into_iter()
    .flatten()
    .min();
    let due = requeue::Due {
        base,
        progressing: report.progressing,
        job_running: backups.busy,
        deploy_now,
        at,
    };
    Ok(Requeue(requeue::next_pass(due, now)))
}

/// The revision the stack is Ready on, all of it applied.
fn ready_on(verdicts: &[Verdict], status: &ServiceStackStatus, outcome: &Outcome) -> Option<u64> {
    let ready = verdicts
        .iter()
        .rev()
        .find(|v| v.type_ == ConditionType::Ready)
        .is_some_and(|v| v.status == ConditionStatus::True);
    (ready && outcome.failures.is_empty())
        .then_some(status.revision)
        .flatten()
}

/// The status as the report sees it, before repairs, holds and backups add theirs.
fn reported_status(
    pass: &Pass<'_>,
    intent: &Intent,
    previous: &ServiceStackStatus,
    outcome: &Outcome,
    report: &report::Report,
) -> ServiceStackStatus {
    let mut status = ServiceStackStatus {
        project: Some(pass.stack.project_name()),
        services: report.services.clone(),
        health: Some(report.health),
        // As the rollout step recorded it this pass.
        rollout: pass.stack.status.as_ref().and_then(|s| s.rollout.clone()),
        ..previous.clone()
    };
    // A held deploy, or a stack refused for its project name, applied nothing new.
    if !intent.hold_deploy && outcome.plan.conflict.is_none() {
        status.revision = Some(outcome.plan.revision);
        status.spec_hash = Some(intent.deploy.spec_hash.clone());
    }
    if outcome.plan.conflict.is_none() {
        status.owned_project = Some(pass.project.name.clone());
    }
    status
}

/// Which containers of the project are the stack's (see [`Claim`]): containers without a uid
/// too once the status records the project as the stack's own, or when told to adopt it.
fn claim(
    stack: &ServiceStack,
    project: &Project,
    uid: &str,
    previous: &ServiceStackStatus,
) -> Claim {
    Claim {
        uid: uid.to_owned(),
        unlabelled: stack.spec.compose.adopt
            || previous.owned_project.as_deref() == Some(project.name.as_str()),
    }
}

/// Reports an engine that cannot be reached, touches nothing, and backs off.
async fn unreachable(
    ctx: &Context,
    stack: &mut ServiceStack,
    e: EngineError,
) -> Result<Requeue, Error> {
    let host = stack.spec.docker.host().to_owned();
    ctx.engines.forget(&host).await;
    let previous = stack.status.clone().unwrap_or_default();
    let status = ServiceStackStatus {
        project: Some(stack.project_name()),
        health: Some(crate::api::StackHealth::Unknown),
        ..previous.clone()
    };
    let verdicts = verdicts::unreachable(&host, &e);
    backed_off(ctx, stack, status, &previous, verdicts).await
}

/// Reports a spec that cannot be applied, touches nothing, and backs off: a person must change
/// the spec (or create the Secret), and until then a look now and then is enough.
async fn invalid(
    ctx: &Context,
    stack: &mut ServiceStack,
    failure: crate::api::Failure,
) -> Result<Requeue, Error> {
    let previous = stack.status.clone().unwrap_or_default();
    let status = ServiceStackStatus {
        project: Some(stack.project_name()),
        ..previous.clone()
    };
    let verdicts = verdicts::invalid(failure);
    backed_off(ctx, stack, status, &previous, verdicts).await
}

/// Writes the status of a pass that touched nothing, and backs off.
async fn backed_off(
    ctx: &Context,
    stack: &mut ServiceStack,
    status: ServiceStackStatus,
    previous: &ServiceStackStatus,
    verdicts: Vec<Verdict>,
) -> Result<Requeue, Error> {
    let now = Utc::now();
    status::finish(ctx, stack, status, previous, verdicts, Vec::new(), now).await?;
    let delay = ctx
        .backoff(&stack.key(), true)
        .await
        .unwrap_or(STEADY_REQUEUE);
    Ok(Requeue(delay))
}

#[cfg(test)]
mod tests;
