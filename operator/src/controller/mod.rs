//! One reconcile for both drivers: observe Docker, [`plan`], act, report status and events.
//!
//! Docker trouble and bad specs are not errors of the reconcile: they end as conditions and a
//! requeue, and nothing running is touched because of them. `Err` is kept for what the
//! operator cannot report (the store itself failing) and for cleanup, which must be retried.

pub mod plan;
pub mod prober;
mod repair;
mod report;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::api::{
    condition, ConditionStatus, ConditionType, DeletionPolicy, Reason, ServiceStack,
    ServiceStackStatus, Verdict,
};
use crate::backup::plan::Gate;
use crate::compose::{self, Project};
use crate::docker::{Engine, EngineError, Engines, Owner};
use crate::store::{EventType, StackEvent, Store, StoreError};

pub use plan::{plan, Action, Plan};

/// How soon to look again while containers are coming up.
pub const PROGRESS_REQUEUE: Duration = Duration::from_millis(500);
/// How often status shows the progress of a running backup.
pub const BACKUP_PROGRESS_REQUEUE: Duration = Duration::from_secs(2);
/// How soon to look again when all is well (drift detection).
pub const STEADY_REQUEUE: Duration = Duration::from_secs(30);

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

/// Shared state of the reconcilers.
pub struct Context {
    pub store: Arc<dyn Store>,
    pub engines: Engines,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Probe verdicts per stack and service, kept current by the probers.
    pub probes: prober::Board,
    pub probers: prober::Probers,
    /// Backups, restore tests and restores running in the background.
    pub backups: crate::backup::runner::Jobs,
    /// Notified when a probe verdict flips: the driver should look again now.
    pub wake: Arc<tokio::sync::Notify>,
    /// Consecutive failed passes per stack, for backoff. Memory only: after a restart the
    /// operator simply retries at once, which is what one wants after a restart anyway.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            engines: Engines::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            probes: prober::Board::default(),
            probers: prober::Probers::default(),
            backups: Default::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
            failures: Mutex::default(),
        })
    }

    fn prober_shared(&self) -> prober::Shared {
        prober::Shared {
            board: self.probes.clone(),
            metrics: self.metrics.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Forgets a deleted stack: its prober, verdicts and metric series.
    pub fn forget(&self, stack: &str) {
        self.probers.stop(stack, &self.probes);
        self.backups.stop(stack, &Default::default());
        self.metrics.forget_stack(stack);
    }

    async fn backoff(&self, key: &str, failed: bool) -> Option<Duration> {
        let mut f = self.failures.lock().await;
        if !failed {
            f.remove(key);
            return None;
        }
        let n = f.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Some(backoff_delay(*n))
    }
}

/// 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// Brings one stack one step closer to its spec and reports what it sees.
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
    // Variables from Secrets join the spec's own (which win), before anything reads them.
    let resolved;
    let stack = match ctx.store.referenced_variables(stack).await {
        Ok(from_secrets) if from_secrets.is_empty() => stack,
        Ok(from_secrets) => {
            let mut s = stack.clone();
            for (k, v) in from_secrets {
                s.spec.variables.entry(k).or_insert(v);
            }
            resolved = s;
            &resolved
        }
        Err(message) => return invalid(ctx, stack, Reason::SecretNotFound, message).await,
    };
    let key = stack.key();
    let previous = stack.status.clone().unwrap_or_default();
    let generation = stack.metadata.generation;
    let mut verdicts = Vec::new();
    let mut status = ServiceStackStatus {
        project: Some(stack.project_name()),
        ..previous.clone()
    };

    // Services a running restore keeps stopped: neither started nor healed until it ends.
    let paused = crate::backup::runner::paused(&previous.backups);

    let project = match compose::load(stack) {
        Ok(p) => {
            verdicts.push(Verdict::new(
                ConditionType::InvalidSpec,
                ConditionStatus::False,
                Reason::SpecValid,
                "the spec is valid",
            ));
            p
        }
        Err(e) => return invalid(ctx, stack, e.reason, e.message).await,
    };

    // A deploy (a compose file other than the one applied last) may have to wait for backups
    // (`beforeDeploy`); until then nothing is applied and the status keeps the old revision.
    let spec_hash = project.spec_hash();
    let deploying = previous
        .spec_hash
        .as_ref()
        .filter(|h| !stack.spec.suspend && **h != spec_hash)
        .map(|_| spec_hash.as_str());
    let gate = deploying.map_or(Gate::Open, |h| {
        crate::backup::plan::deploy_gate(&stack.spec.backups, &previous.backups, h)
    });
    let hold = gate != Gate::Open;

    let host = stack.spec.docker.host().to_owned();
    let owner = Owner {
        project: project.name.clone(),
        stack: key.clone(),
        uid: uid.to_owned(),
    };
    let result =
        match ctx.engines.get(&host).await {
            Ok(engine) => {
                ctx.probers
                    .ensure(stack, &project, uid, &engine, &ctx.prober_shared());
                let last = previous.revision.zip(previous.spec_hash.clone()).map(
                    |(revision, spec_hash)| plan::Applied {
                        revision,
                        spec_hash,
                    },
                );
                converge(
                    stack,
                    &project,
                    &owner,
                    last.as_ref(),
                    &paused,
                    hold,
                    &engine,
                )
                .await
                .map(|o| (engine, o))
            }
            Err(e) => Err(e),
        };
    let (engine, outcome) = match result {
        Ok(o) => o,
        Err(e) => {
            ctx.engines.forget(&host).await;
            let message = format!("{e}; check that the engine runs and spec.docker.host ({host}) is right. Nothing was changed; retrying with backoff");
            verdicts.push(Verdict::new(
                ConditionType::DockerUnreachable,
                ConditionStatus::True,
                Reason::EngineUnreachable,
                message.clone(),
            ));
            verdicts.push(Verdict::new(
                ConditionType::Ready,
                ConditionStatus::Unknown,
                Reason::EngineUnreachable,
                "the Docker engine cannot be reached, so the services' state is unknown",
            ));
            status.health = Some(crate::api::StackHealth::Unknown);
            publish_transition(
                ctx,
                stack,
                &previous,
                ConditionType::DockerUnreachable,
                EventType::Warning,
                Reason::EngineUnreachable,
                &message,
            )
            .await?;
            warn!(stack = %key, "{message}");
            finish(ctx, stack, status, &previous, verdicts, generation).await?;
            let delay = ctx.backoff(&key, true).await.unwrap_or(STEADY_REQUEUE);
            return Ok(Requeue(delay));
        }
    };
    verdicts.push(Verdict::new(
        ConditionType::DockerUnreachable,
        ConditionStatus::False,
        Reason::EngineReachable,
        format!("the Docker engine at {host} answers"),
    ));

    for event in &outcome.events {
        ctx.store.record(stack, event).await?;
    }
    let now = Utc::now();
    let probes = ctx.probes.snapshot(&key);
    let repair = repair::repair(
        ctx, stack, &project, uid, &outcome, &probes, &engine, &paused, now,
    )
    .await?;
    let required = compose::required_services(stack, &project);
    let report = report::report(
        &project,
        &outcome,
        uid,
        &required,
        stack.spec.suspend,
        &probes,
    );
    if !hold {
        status.revision = Some(outcome.plan.revision);
        status.spec_hash = Some(spec_hash.clone());
    }
    status.services = report.services;
    repair.apply_to(&mut status);
    status.health = Some(report.health);
    verdicts.extend(report.verdicts);
    if let Some(v) = gate_verdict(ctx, stack, &previous, &gate).await? {
        verdicts.retain(|v| v.type_ != ConditionType::Progressing);
        verdicts.push(v);
    }
    verdicts.push(match repair.exhausted.first() {
        Some(_) => {
            let message = repair
                .exhausted
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            publish_transition(
                ctx,
                stack,
                &previous,
                ConditionType::Degraded,
                EventType::Warning,
                Reason::RestartBudgetExhausted,
                &message,
            )
            .await?;
            Verdict::new(
                ConditionType::Degraded,
                ConditionStatus::True,
                Reason::RestartBudgetExhausted,
                message,
            )
        }
        None => Verdict::new(
            ConditionType::Degraded,
            ConditionStatus::False,
            Reason::WithinRestartBudget,
            "every service is within its restart budget",
        ),
    });
    let healthy = status
        .services
        .values()
        .filter(|s| {
            s.state == crate::api::ContainerState::Running
                && s.health != Some(crate::api::ContainerHealth::Unhealthy)
        })
        .count();
    let backups = crate::backup::runner::reconcile(
        &ctx.backups,
        stack,
        &project,
        uid,
        &engine,
        &outcome.observed,
        &mut status.backups,
        deploying,
        now,
    )
    .await;
    for event in &backups.events {
        ctx.store.record(stack, event).await?;
    }
    for (target, job, failure) in &backups.ended {
        let failure = failure.map(|r| r.to_string());
        ctx.metrics
            .backup_job_ended(&key, target, job.as_str(), failure.as_deref());
    }
    for (target, b) in &status.backups {
        if let Some(s) = &b.last_success {
            ctx.metrics
                .backup_last_success(&key, target, s.time.timestamp(), s.size);
        }
    }
    status.last_backup = status
        .backups
        .values()
        .filter_map(|b| b.last_success.as_ref().map(|s| s.time))
        .max();
    verdicts.extend(crate::backup::plan::conditions(
        &stack.spec.backups,
        &status.backups,
        now,
    ));
    ctx.metrics.stack_state(
        &key,
        report.health == crate::api::StackHealth::Healthy,
        healthy as i64,
    );
    // The backups a held deploy waited for are done: deploy now, not at the next requeue.
    let deploy_now = hold
        && deploying.is_some_and(|h| {
            crate::backup::plan::deploy_gate(&stack.spec.backups, &status.backups, h) == Gate::Open
        });
    finish(ctx, stack, status, &previous, verdicts, generation).await?;
    // Only now that status holds their intent do the jobs start.
    for spawn in backups.spawns {
        ctx.backups.spawn(spawn, ctx.wake.clone());
    }

    let failed = !outcome.failures.is_empty();
    let delay = ctx.backoff(&key, failed).await;
    let mut next = delay.unwrap_or(if report.progressing {
        PROGRESS_REQUEUE
    } else {
        STEADY_REQUEUE
    });
    // Probe verdicts change between passes; a driver without wake-ups (kube) must look at
    // least as often as the fastest probe.
    if let Some(p) = stack
        .spec
        .health
        .services
        .values()
        .filter(|h| !h.probes.is_empty())
        .map(|h| h.period_seconds.max(1))
        .min()
    {
        next = next.min(Duration::from_secs(u64::from(p)));
    }
    if backups.busy {
        next = next.min(BACKUP_PROGRESS_REQUEUE);
    }
    if deploy_now {
        next = next.min(PROGRESS_REQUEUE);
    }
    if let Some(at) = repair.next.into_iter().chain(backups.next).min() {
        next = next.min(
            (at - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(100)),
        );
    }
    Ok(Requeue(next))
}

/// The Progressing verdict of a deploy held for its backups (None when it is not held), with
/// an event when the backup it waited for has just failed.
async fn gate_verdict(
    ctx: &Context,
    stack: &ServiceStack,
    previous: &ServiceStackStatus,
    gate: &Gate,
) -> Result<Option<Verdict>, Error> {
    Ok(match gate {
        Gate::Open => None,
        Gate::Waiting(message) => Some(Verdict::new(
            ConditionType::Progressing,
            ConditionStatus::True,
            Reason::BackingUpBeforeDeploy,
            message.clone(),
        )),
        Gate::Failed(message) => {
            let was = condition::find(&previous.conditions, ConditionType::Progressing);
            if was.is_none_or(|c| c.reason != Reason::PreDeployBackupFailed) {
                warn!(stack = %stack.key(), "{message}");
                ctx.store
                    .record(
                        stack,
                        &StackEvent::new(
                            EventType::Warning,
                            &Reason::PreDeployBackupFailed.to_string(),
                            "Deploy",
                            message.clone(),
                        ),
                    )
                    .await?;
            }
            Some(Verdict::new(
                ConditionType::Progressing,
                ConditionStatus::False,
                Reason::PreDeployBackupFailed,
                message.clone(),
            ))
        }
    })
}

/// Reports a spec that cannot be applied, and touches nothing.
async fn invalid(
    ctx: &Context,
    stack: &ServiceStack,
    reason: Reason,
    message: String,
) -> Result<Requeue, Error> {
    let previous = stack.status.clone().unwrap_or_default();
    let generation = stack.metadata.generation;
    let status = ServiceStackStatus {
        project: Some(stack.project_name()),
        ..previous.clone()
    };
    let verdicts = vec![
        Verdict::new(ConditionType::InvalidSpec, ConditionStatus::True, reason, message.clone()),
        Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            reason,
            "the spec is invalid (see InvalidSpec); the containers already running were left as they were",
        ),
        Verdict::new(ConditionType::Progressing, ConditionStatus::False, reason, "waiting for a valid spec"),
    ];
    publish_transition(
        ctx,
        stack,
        &previous,
        ConditionType::InvalidSpec,
        EventType::Warning,
        reason,
        &message,
    )
    .await?;
    warn!(stack = %stack.key(), %reason, "invalid spec: {message}");
    finish(ctx, stack, status, &previous, verdicts, generation).await?;
    // A person must change the spec (or create the Secret); the steady requeue looks again.
    Ok(Requeue(STEADY_REQUEUE))
}

/// What a pass did on the engine and what it saw afterwards.
pub struct Outcome {
    pub plan: Plan,
    pub observed: crate::docker::Observed,
    /// Services whose action failed, with the error text.
    pub failures: Vec<(String, String)>,
    pub acted: bool,
    pub events: Vec<StackEvent>,
}

async fn observe(
    engine: &dyn Engine,
    project: &Project,
) -> Result<crate::docker::Observed, EngineError> {
    let nets: Vec<String> = project.networks.iter().map(|n| n.name.clone()).collect();
    let vols: Vec<String> = project.volumes.iter().map(|v| v.name.clone()).collect();
    let images: Vec<String> = project
        .services
        .iter()
        .map(|s| s.image.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    engine.observe(&project.name, &nets, &vols, &images).await
}

/// Observe, plan, act, and observe again when anything was done, so status shows the result.
/// `hold`: a deploy waits for its backups, so nothing is applied (repairs go on elsewhere).
pub async fn converge(
    stack: &ServiceStack,
    project: &Project,
    owner: &Owner,
    last: Option<&plan::Applied>,
    paused: &BTreeSet<String>,
    hold: bool,
    engine: &dyn Engine,
) -> Result<Outcome, EngineError> {
    let observed = observe(engine, project).await?;
    let mut plan = plan::plan(project, &observed, &owner.uid, last);
    plan.actions
        .retain(|a| !hold && a.service().is_none_or(|s| !paused.contains(s)));
    if stack.spec.suspend || plan.conflict.is_some() || plan.actions.is_empty() {
        return Ok(Outcome {
            plan,
            observed,
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
            Ok(event) => {
                info!(stack = %owner.stack, "{}", event.note);
                events.push(event);
            }
            Err(e @ EngineError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                let service = action.service().unwrap_or("*").to_owned();
                let note = format!("{} failed: {e}", describe(action));
                warn!(stack = %owner.stack, "{note}");
                events.push(StackEvent::new(
                    EventType::Warning,
                    "ApplyFailed",
                    "Apply",
                    note,
                ));
                failures.push((service, e.to_string()));
                if action.service().is_none() {
                    break;
                }
            }
        }
    }
    let observed = observe(engine, project).await?;
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
            ("NetworkCreated", "Create")
        }
        Action::CreateVolume(v) => {
            engine.create_volume(v, owner).await?;
            ("VolumeCreated", "Create")
        }
        Action::PullImage { image, .. } => {
            engine.pull_image(image).await.map_err(|e| EngineError::Api {
                context: format!("image {image} is not on the engine and pulling it failed"),
                status: None,
                message: format!("{e}. Build or load the image (docker build / docker load), or fix `image:`"),
            })?;
            ("ImagePulled", "Pull")
        }
        Action::Create { service } => {
            let id = engine
                .create_container(svc(service), owner, revision, spec_hash)
                .await?;
            engine.start_container(&id).await?;
            ("Created", "Create")
        }
        Action::Start { id, .. } => {
            engine.start_container(id).await?;
            ("Started", "Start")
        }
        Action::Recreate { service, old_id } => {
            let s = svc(service);
            engine
                .remove_container(old_id, s.stop_grace_period_s)
                .await?;
            let id = engine
                .create_container(s, owner, revision, spec_hash)
                .await?;
            engine.start_container(&id).await?;
            ("Recreated", "Recreate")
        }
        Action::Remove { id, .. } => {
            engine.remove_container(id, None).await?;
            ("Removed", "Remove")
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

/// Removes a deleted stack's containers and networks, and its volumes under `Delete`.
pub async fn cleanup(stack: &ServiceStack, uid: &str, ctx: &Context) -> Result<(), Error> {
    if stack.spec.deletion_policy == DeletionPolicy::Orphan {
        info!(stack = %stack.key(), "deletionPolicy Orphan: leaving containers, networks and volumes in place");
        return Ok(());
    }
    let engine = ctx.engines.get(stack.spec.docker.host()).await?;
    let owner = Owner {
        project: stack.project_name(),
        stack: stack.key(),
        uid: uid.to_owned(),
    };
    let observed = engine.observe(&owner.project, &[], &[], &[]).await?;
    for c in observed
        .containers
        .iter()
        .filter(|c| c.uid.as_deref() == Some(uid))
    {
        engine.remove_container(&c.id, None).await?;
    }
    let (networks, volumes) = engine.owned_resources(&owner).await?;
    for n in networks {
        engine.remove_network(&n).await?;
    }
    if stack.spec.deletion_policy == DeletionPolicy::Delete {
        for v in volumes {
            engine.remove_volume(&v).await?;
        }
    }
    info!(stack = %stack.key(), policy = ?stack.spec.deletion_policy, "stack removed");
    Ok(())
}

async fn finish(
    ctx: &Context,
    stack: &ServiceStack,
    mut status: ServiceStackStatus,
    previous: &ServiceStackStatus,
    verdicts: Vec<Verdict>,
    generation: Option<i64>,
) -> Result<(), Error> {
    status.observed_generation = generation;
    status.conditions = condition::merge(&previous.conditions, verdicts, generation, Utc::now());
    if &status != previous {
        ctx.store.write_status(stack, &status).await?;
    }
    Ok(())
}

/// Publishes an event only when a condition turns True, so a stack stuck in a bad state
/// does not flood the event log on every retry.
async fn publish_transition(
    ctx: &Context,
    stack: &ServiceStack,
    previous: &ServiceStackStatus,
    type_: ConditionType,
    event_type: EventType,
    reason: Reason,
    message: &str,
) -> Result<(), Error> {
    let was = condition::find(&previous.conditions, type_);
    if was.is_some_and(|c| {
        c.status == ConditionStatus::True && c.reason == reason && c.message == message
    }) {
        return Ok(());
    }
    ctx.store
        .record(
            stack,
            &StackEvent::new(
                event_type,
                &reason.to_string(),
                "Reconcile",
                message.to_owned(),
            ),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod report_tests;
