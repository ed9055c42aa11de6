//! One reconcile for both drivers: observe Docker, [`plan`], act, report status and events.
//!
//! Docker trouble and bad specs are not errors of the reconcile: they end as conditions and a
//! requeue, and nothing running is touched because of them. `Err` is kept for what the
//! operator cannot report (the store itself failing) and for cleanup, which must be retried.

mod hold;
pub mod plan;
pub mod prober;
mod repair;
mod report;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::docker::{BollardEngine, Claim, Engine, EngineError, Engines, Owner};
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
    /// Asks the driver to look at one stack now (a probe verdict flipped, a job ended, one of
    /// its containers changed).
    pub wake: Waker,
    /// The other end of `wake`, taken once by the driver.
    wakes: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Wake>>>,
    /// Docker events subscriptions, one per engine in use.
    watches: watch::EngineWatches,
    /// Containers stopped on request, as the events told.
    stops: watch::Stops,
    /// Set on shutdown: passes still observe, report and fold finished jobs, but start nothing.
    draining: std::sync::atomic::AtomicBool,
    /// Consecutive failed passes per stack, for backoff. Memory only: after a restart the
    /// operator simply retries at once, which is what one wants after a restart anyway.
    failures: Mutex<HashMap<String, u32>>,
    /// Hold warnings already logged, per stack, so each is logged once per change.
    told: std::sync::Mutex<HashMap<String, Vec<String>>>,
}

/// What the driver should look at now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// One stack, by key (`namespace/name`).
    Stack(String),
    /// Every stack on the engine at this address (its events stream broke: events may have
    /// been missed).
    Engine(String),
}

/// Sends wakes to the driver. A channel rather than a `Notify`: a wake sent while the driver
/// is busy is kept, not lost, and it names what to look at, so nothing else is woken.
///
/// It also counts the wakes per stack, so that what was observed of a stack can be reused
/// until something (a Docker event above all) says it may have changed: see [`Waker::seen`].
#[derive(Clone)]
pub struct Waker {
    tx: tokio::sync::mpsc::UnboundedSender<Wake>,
    counts: Arc<std::sync::Mutex<WakeCounts>>,
}

#[derive(Default)]
struct WakeCounts {
    stacks: HashMap<String, u64>,
    /// Bumped by every engine-wide wake: it concerns every stack.
    engines: u64,
}

impl Waker {
    fn new(tx: tokio::sync::mpsc::UnboundedSender<Wake>) -> Self {
        Self {
            tx,
            counts: Arc::default(),
        }
    }

    pub fn wake(&self, stack: &str) {
        self.send(Wake::Stack(stack.to_owned()));
    }

    /// Counts that change whenever the stack is woken (by its own wake or an engine-wide
    /// one); equal answers mean no wake between.
    pub fn seen(&self, stack: &str) -> (u64, u64) {
        let counts = self.counts.lock().expect("wake counts lock");
        (
            counts.stacks.get(stack).copied().unwrap_or(0),
            counts.engines,
        )
    }

    fn forget(&self, stack: &str) {
        self.counts
            .lock()
            .expect("wake counts lock")
            .stacks
            .remove(stack);
    }

    fn send(&self, wake: Wake) {
        {
            let mut counts = self.counts.lock().expect("wake counts lock");
            match &wake {
                Wake::Stack(key) => *counts.stacks.entry(key.clone()).or_default() += 1,
                Wake::Engine(_) => counts.engines += 1,
            }
        }
        // The driver is gone when this fails: nothing is left to wake.
        let _ = self.tx.send(wake);
    }
}

impl Context {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Self {
            store,
            engines: Engines::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            probes: prober::Board::default(),
            probers: prober::Probers::default(),
            backups: Default::default(),
            wake: Waker::new(tx),
            wakes: std::sync::Mutex::new(Some(rx)),
            watches: Default::default(),
            stops: Default::default(),
            draining: Default::default(),
            failures: Mutex::default(),
            told: Default::default(),
        })
    }

    /// Whether `messages` differ from what was last told for this stack (and remembers them):
    /// warnings a pass finds again and again are logged once per change.
    pub fn first_telling(&self, stack: &str, messages: &[String]) -> bool {
        let mut told = self.told.lock().expect("told lock");
        if told.get(stack).map(Vec::as_slice) == Some(messages) {
            return false;
        }
        told.insert(stack.to_owned(), messages.to_vec());
        true
    }

    /// What to look at now; for the driver, which takes it once.
    pub fn take_wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wake>> {
        self.wakes.lock().expect("wakes lock").take()
    }

    /// Stops starting work (restarts, deploys, backup jobs) for a shutdown; passes go on
    /// observing, reporting and folding the jobs that finish.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops everything running in the background: probers, Docker subscriptions and jobs (a
    /// job cut off here is in status as running, and the next operator recovers it).
    pub fn stop_all(&self) {
        self.probers.stop_all(&self.probes);
        self.watches.stop_all();
        self.backups.stop_all();
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
        self.wake.forget(stack);
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
    // Variables from Secrets join the spec's own (which win), before anything reads them. The
    // copy also carries the resource version forward across this pass's own status writes.
    let mut stack = stack.clone();
    match ctx.store.referenced_variables(&stack).await {
        Ok(from_secrets) => {
            for (k, v) in from_secrets {
                stack.spec.variables.entry(k).or_insert(v);
            }
        }
        Err(message) => return invalid(ctx, &mut stack, Reason::SecretNotFound, message).await,
    }
    let loaded = match ctx.store.manifest_dir(&stack) {
        None => compose::load(&stack),
        Some(dir) => {
            // Reading env files and hashing build contexts is blocking file I/O.
            let for_read = stack.clone();
            let inputs = tokio::task::spawn_blocking(move || {
                crate::store::local_inputs::gather(&for_read, &dir)
            })
            .await
            .unwrap_or_default();
            compose::load_local(&stack, &inputs)
        }
    };
    let project = match loaded {
        Ok(p) => p,
        Err(e) => return invalid(ctx, &mut stack, e.reason, e.message).await,
    };
    let host = stack.spec.docker.host().to_owned();
    match ctx.engines.get(&host).await {
        Ok(engine) => apply(ctx, &mut stack, &project, uid, &engine).await,
        Err(e) => unreachable(ctx, &mut stack, e).await,
    }
}

/// The pass of a valid stack on an engine that answered: converge, repair, report, back up.
async fn apply(
    ctx: &Context,
    stack: &mut ServiceStack,
    project: &Project,
    uid: &str,
    engine: &BollardEngine,
) -> Result<Requeue, Error> {
    let key = stack.key();
    let previous = stack.status.clone().unwrap_or_default();
    // Held services (a person's hold, a running restore's): neither started nor healed.
    let holds = crate::heal::hold::holds(
        project,
        stack
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&BTreeMap::new()),
        &crate::backup::runner::restoring(&previous.backups),
        &previous.services,
        Utc::now(),
    );
    let paused = holds.held();
    let deploy = Deploy::of(stack, project, &previous);
    // Shutting down: nothing new is applied either.
    let hold = deploy.gate != Gate::Open || ctx.draining();
    let owner = Owner {
        project: project.name.clone(),
        stack: key.clone(),
        uid: uid.to_owned(),
    };
    ctx.watches.ensure(
        stack.spec.docker.host(),
        &ctx.engines,
        &ctx.wake,
        &ctx.stops,
    );
    let claim = claim(stack, project, uid, &previous);
    // Probers and backup jobs outlive the pass: they hold the engine behind its trait.
    let held: Arc<dyn Engine> = Arc::new(engine.clone());
    ctx.probers
        .ensure(stack, project, &claim, &held, &ctx.prober_shared());
    let last = previous
        .revision
        .zip(previous.spec_hash.clone())
        .map(|(revision, spec_hash)| plan::Applied {
            revision,
            spec_hash,
        });
    let outcome = match converge(
        stack,
        project,
        &owner,
        &claim,
        last.as_ref(),
        &paused,
        hold,
        engine,
    )
    .await
    {
        Ok(o) => o,
        Err(e) => return unreachable(ctx, stack, e).await,
    };
    for event in &outcome.events {
        publish(ctx, stack, event.clone()).await?;
    }
    let mut outcome = outcome;
    // Suspended: holds are recorded and reported, but nothing is stopped or started.
    let may_act = !ctx.draining() && !stack.spec.suspend;
    if may_act && hold::act(ctx, stack, project, &claim, &holds, &outcome, engine).await? {
        // What the status reports must be what runs after the stop or start.
        match observe(engine, project).await {
            Ok(o) => outcome.observed = o,
            Err(e) => return unreachable(ctx, stack, e).await,
        }
    }
    let now = Utc::now();
    let probes = ctx.probes.snapshot(&key);
    // A service resumed this pass was started by `hold::act`, not seen running yet: not a crash.
    let hands_off: BTreeSet<String> = paused.union(&holds.ended).cloned().collect();
    let repair = repair::repair(
        ctx, stack, project, &claim, &outcome, &probes, engine, &hands_off, now,
    )
    .await?;
    let required = compose::required_services(stack, project);
    let facts = report::Facts {
        required: &required,
        suspended: stack.spec.suspend,
        deploy_held: deploy.gate != Gate::Open,
        holds: holds.active.clone(),
    };
    let report = report::report(project, &outcome, &claim, &facts, &probes);
    let mut status = ServiceStackStatus {
        project: Some(stack.project_name()),
        services: report.services.clone(),
        health: Some(report.health),
        ..previous.clone()
    };
    // A held deploy, or a stack refused for its project name, applied nothing new.
    if !hold && outcome.plan.conflict.is_none() {
        status.revision = Some(outcome.plan.revision);
        status.spec_hash = Some(deploy.spec_hash.clone());
    }
    if outcome.plan.conflict.is_none() {
        status.owned_project = Some(project.name.clone());
    }
    repair.apply_to(&mut status);
    hold::record(&mut status, &holds);
    let deploying = deploy.deploying();
    let backups = back_up(
        ctx,
        stack,
        project,
        &claim,
        &held,
        &outcome,
        &mut status,
        deploying,
        now,
    )
    .await;
    let verdicts = verdicts(stack, project, &report, &repair, &deploy.gate, &status, now);
    // The backups a held deploy waited for are done: deploy now, not at the next requeue.
    let deploy_now = deploy.gate != Gate::Open && deploy.gate_after(stack, &status) == Gate::Open;
    let later = repair
        .events
        .iter()
        .chain(&backups.events)
        .cloned()
        .collect();
    finish(ctx, stack, status, &previous, verdicts, later).await?;
    // Only now that status holds their intent do the jobs start; and only now are the results
    // folded into it let go of (a pass whose write failed folds them again).
    for spawn in backups.spawns {
        ctx.backups.spawn(spawn, ctx.wake.clone());
    }
    ctx.backups.committed(&key, &backups.folded);
    let failed = !outcome.failures.is_empty();
    let base = ctx
        .backoff(&key, failed)
        .await
        .unwrap_or(if report.progressing {
            PROGRESS_REQUEUE
        } else {
            STEADY_REQUEUE
        });
    // Look again soon after a resume, to report the service running.
    let resumed = (!holds.ended.is_empty()).then(|| now + chrono::Duration::seconds(1));
    let due = [repair.next, backups.next, hold::next_end(&holds), resumed]
        .into_iter()
        .flatten()
        .min();
    Ok(Requeue(next_pass(base, backups.busy, deploy_now, due, now)))
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

/// A compose file other than the one applied last, and whether its `beforeDeploy` backups
/// let it through yet; until they do, nothing is applied and status keeps the old revision.
struct Deploy {
    spec_hash: String,
    /// Whether the spec hash differs from the one applied (and the stack is not suspended).
    changed: bool,
    gate: Gate,
}

impl Deploy {
    fn of(stack: &ServiceStack, project: &Project, previous: &ServiceStackStatus) -> Self {
        let spec_hash = project.spec_hash();
        let changed =
            !stack.spec.suspend && previous.spec_hash.as_ref().is_some_and(|h| *h != spec_hash);
        let gate = if changed {
            crate::backup::plan::deploy_gate(&stack.spec.backups, &previous.backups, &spec_hash)
        } else {
            Gate::Open
        };
        Self {
            spec_hash,
            changed,
            gate,
        }
    }

    fn deploying(&self) -> Option<&str> {
        self.changed.then_some(self.spec_hash.as_str())
    }

    /// The gate again, on the backups as this pass left them.
    fn gate_after(&self, stack: &ServiceStack, status: &ServiceStackStatus) -> Gate {
        match self.deploying() {
            Some(h) => crate::backup::plan::deploy_gate(&stack.spec.backups, &status.backups, h),
            None => Gate::Open,
        }
    }
}

/// Every condition of a pass on a reachable engine.
fn verdicts(
    stack: &ServiceStack,
    project: &Project,
    report: &report::Report,
    repair: &repair::Repair,
    gate: &Gate,
    status: &ServiceStackStatus,
    now: chrono::DateTime<Utc>,
) -> Vec<Verdict> {
    let mut verdicts = vec![
        Verdict::new(
            ConditionType::InvalidSpec,
            ConditionStatus::False,
            Reason::SpecValid,
            "the spec is valid",
        ),
        Verdict::new(
            ConditionType::DockerUnreachable,
            ConditionStatus::False,
            Reason::EngineReachable,
            format!("the Docker engine at {} answers", stack.spec.docker.host()),
        ),
        degraded(&repair.exhausted),
        compose::warnings::verdict(&compose::warnings::of(&stack.spec, project)),
    ];
    // Later verdicts of a type win: the report's (a project-name conflict is an invalid spec),
    // then a held deploy's Progressing.
    verdicts.extend(report.verdicts.iter().cloned());
    if let Some(v) = gate_verdict(gate) {
        verdicts.push(v);
    }
    verdicts.extend(crate::backup::plan::conditions(
        &stack.spec.backups,
        &status.backups,
        now,
    ));
    verdicts
}

/// When to look again: `base` (steady, progressing or backoff), sooner while a backup job runs
/// (its progress), when a held deploy may go on, or when a restart, schedule or slot is due.
fn next_pass(
    base: Duration,
    busy: bool,
    deploy_now: bool,
    due: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Duration {
    let mut next = base;
    if busy {
        next = next.min(BACKUP_PROGRESS_REQUEUE);
    }
    if deploy_now {
        next = next.min(PROGRESS_REQUEUE);
    }
    if let Some(at) = due {
        let until = (at - now).to_std().unwrap_or(Duration::ZERO);
        next = next.min(until.max(Duration::from_millis(100)));
    }
    next
}

/// Runs the backup step and records its metrics; the events it returns wait for the status.
#[allow(clippy::too_many_arguments)]
async fn back_up(
    ctx: &Context,
    stack: &ServiceStack,
    project: &Project,
    claim: &Claim,
    engine: &Arc<dyn Engine>,
    outcome: &Outcome,
    status: &mut ServiceStackStatus,
    deploying: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> crate::backup::runner::Pass {
    let key = stack.key();
    let scope = crate::backup::runner::Scope {
        stack,
        project,
        claim,
        engine,
        observed: &outcome.observed,
    };
    let backups = crate::backup::runner::reconcile(
        &ctx.backups,
        &scope,
        &mut status.backups,
        deploying,
        !ctx.draining(),
        now,
    )
    .await;
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
    backups
}

/// The Degraded verdict: which services used up their restart budget.
fn degraded(exhausted: &[(String, String)]) -> Verdict {
    if exhausted.is_empty() {
        return Verdict::new(
            ConditionType::Degraded,
            ConditionStatus::False,
            Reason::WithinRestartBudget,
            "every service is within its restart budget",
        );
    }
    let message = exhausted
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::new(
        ConditionType::Degraded,
        ConditionStatus::True,
        Reason::RestartBudgetExhausted,
        message,
    )
}

/// The Progressing verdict of a deploy held for its backups (None when it is not held).
fn gate_verdict(gate: &Gate) -> Option<Verdict> {
    match gate {
        Gate::Open => None,
        Gate::Waiting(message) => Some(Verdict::new(
            ConditionType::Progressing,
            ConditionStatus::True,
            Reason::BackingUpBeforeDeploy,
            message.clone(),
        )),
        Gate::Failed(message) => Some(Verdict::new(
            ConditionType::Progressing,
            ConditionStatus::False,
            Reason::PreDeployBackupFailed,
            message.clone(),
        )),
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
    let message = format!("{e}; check that the engine runs and spec.docker.host ({host}) is right. Nothing was changed; retrying with backoff");
    let verdicts = vec![
        Verdict::new(
            ConditionType::InvalidSpec,
            ConditionStatus::False,
            Reason::SpecValid,
            "the spec is valid",
        ),
        Verdict::new(
            ConditionType::DockerUnreachable,
            ConditionStatus::True,
            Reason::EngineUnreachable,
            message,
        ),
        Verdict::new(
            ConditionType::Ready,
            ConditionStatus::Unknown,
            Reason::EngineUnreachable,
            "the Docker engine cannot be reached, so the services' state is unknown",
        ),
    ];
    let status = ServiceStackStatus {
        project: Some(stack.project_name()),
        health: Some(crate::api::StackHealth::Unknown),
        ..previous.clone()
    };
    finish(ctx, stack, status, &previous, verdicts, Vec::new()).await?;
    let delay = ctx
        .backoff(&stack.key(), true)
        .await
        .unwrap_or(STEADY_REQUEUE);
    Ok(Requeue(delay))
}

/// Reports a spec that cannot be applied, touches nothing, and backs off: a person must change
/// the spec (or create the Secret), and until then a look now and then is enough.
async fn invalid(
    ctx: &Context,
    stack: &mut ServiceStack,
    reason: Reason,
    message: String,
) -> Result<Requeue, Error> {
    let previous = stack.status.clone().unwrap_or_default();
    let status = ServiceStackStatus {
        project: Some(stack.project_name()),
        ..previous.clone()
    };
    let verdicts = vec![
        Verdict::new(ConditionType::InvalidSpec, ConditionStatus::True, reason, message),
        Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            reason,
            "the spec is invalid (see InvalidSpec); the containers already running were left as they were",
        ),
        Verdict::new(ConditionType::Progressing, ConditionStatus::False, reason, "waiting for a valid spec"),
    ];
    finish(ctx, stack, status, &previous, verdicts, Vec::new()).await?;
    let delay = ctx
        .backoff(&stack.key(), true)
        .await
        .unwrap_or(STEADY_REQUEUE);
    Ok(Requeue(delay))
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

impl Outcome {
    /// The container of `service` that `claim` owns, as observed.
    pub fn container(
        &self,
        service: &str,
        claim: &crate::docker::Claim,
    ) -> Option<&crate::docker::ObservedContainer> {
        self.observed
            .containers
            .iter()
            .find(|c| c.service == service && claim.owns(c))
    }
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
#[allow(clippy::too_many_arguments)]
pub async fn converge(
    stack: &ServiceStack,
    project: &Project,
    owner: &Owner,
    claim: &Claim,
    last: Option<&plan::Applied>,
    paused: &BTreeSet<String>,
    hold: bool,
    engine: &dyn Engine,
) -> Result<Outcome, EngineError> {
    let observed = observe(engine, project).await?;
    let mut plan = plan::plan_claimed(project, &observed, claim, last);
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
        Action::BuildImage { build, .. } => {
            engine.build_image(build).await?;
            ("ImageBuilt", "Build")
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
    let status = stack.status.clone().unwrap_or_default();
    let claim = Claim {
        uid: uid.to_owned(),
        unlabelled: status.owned_project.as_deref() == Some(owner.project.as_str()),
    };
    let mut owns_project = claim.unlabelled;
    for c in observed.containers.iter().filter(|c| claim.owns(c)) {
        owns_project = true;
        engine.remove_container(&c.id, None).await?;
    }
    // Networks and volumes carry only docker-compose's labels: they go with the project, and
    // only when the project is this stack's (never a namesake project's).
    if !owns_project {
        info!(stack = %stack.key(), "the compose project {} is not this stack's; nothing removed", owner.project);
        return Ok(());
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

/// Writes the status when anything in it changed, then publishes the events of the pass: the
/// ones given (what the pass found out) and one for each condition that turned bad. Events come
/// after the write, so a pass whose write failed (a stale view, another writer) tells nothing it
/// did not commit; the next pass finds the same things and tells them once.
async fn finish(
    ctx: &Context,
    stack: &mut ServiceStack,
    mut status: ServiceStackStatus,
    previous: &ServiceStackStatus,
    verdicts: Vec<Verdict>,
    mut events: Vec<StackEvent>,
) -> Result<(), Error> {
    let generation = stack.metadata.generation;
    status.observed_generation = generation;
    status.conditions = condition::merge(&previous.conditions, verdicts, generation, Utc::now());
    // Every pass reports, whatever its outcome: an alert on readiness must hear of an invalid
    // spec or an unreachable engine too.
    ctx.metrics.stack_observed(&stack.key(), &status);
    events.extend(report::transition_events(
        &previous.conditions,
        &status.conditions,
    ));
    if stack.status.as_ref() != Some(&status) {
        ctx.store.write_status(stack, status).await?;
        ctx.metrics.status_written(&stack.key());
    }
    for event in events {
        publish(ctx, stack, event).await?;
    }
    Ok(())
}

/// Records an event and logs it, once: Warning events at WARN, the rest at INFO. Every restart,
/// deploy step, backup outcome and condition that turned bad is an event, so the log has one
/// line for each and none for passes where nothing happened.
async fn publish(ctx: &Context, stack: &ServiceStack, event: StackEvent) -> Result<(), Error> {
    let key = stack.key();
    match event.type_ {
        EventType::Normal => info!(stack = %key, reason = %event.reason, "{}", event.note),
        EventType::Warning => warn!(stack = %key, reason = %event.reason, "{}", event.note),
    }
    ctx.store.record(stack, &event).await?;
    ctx.metrics.event_recorded(&key, event.type_, &event.reason);
    Ok(())
}

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod report_tests;

#[cfg(test)]
mod waker_tests {
    use super::*;

    #[test]
    fn what_was_seen_of_a_stack_changes_with_its_own_wakes_and_every_engine_wake_only() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let waker = Waker::new(tx);
        let before = waker.seen("ops/shop");
        waker.wake("ops/other");
        assert_eq!(waker.seen("ops/shop"), before, "another stack's wake");
        waker.wake("ops/shop");
        let woken = waker.seen("ops/shop");
        assert_ne!(woken, before);
        waker.send(Wake::Engine("unix:///var/run/docker.sock".into()));
        assert_ne!(waker.seen("ops/shop"), woken, "an engine's events broke");
        // The driver still gets every wake.
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
