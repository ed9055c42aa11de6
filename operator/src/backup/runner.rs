//! Runs backups, restore tests and restores in the background, one job per target at a time,
//! and folds what they did into `status.backups`.
//!
//! Crash safety: a job is written into status (`running`) before it starts — the reconcile
//! writes status, then spawns what [`reconcile`] returned. An operator that finds a `running`
//! job with no task behind it was restarted in the middle of it: a backup whose manifest exists
//! was finished and is reported as such; any other job is retried once, then given up as
//! `Interrupted`. A backup is only ever reported done by reading its manifest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::destination::{local::LocalDir, s3, Destination, DestinationError};
use super::pipeline::destination_error;
use super::{backup_id, postgres, redis, Kind, Manifest, Verification};
use crate::api::EventReason;
use crate::api::{
    BackupRecord, BackupTarget, BackupTargetStatus, DeployBackup, DeployBackupState, Failure,
    FailureRecord, Job, Reason, RestoreRecord, RunningJob, ServiceStack, Trigger,
    VerificationRecord,
};
use crate::api::{EventType, StackEvent};
use crate::compose::Project;
use crate::decide::backup::plan::{self, Decision, Requests};
use crate::docker::{Engine, Observed};
use crate::jobs::{JobKey, Kind as JobKind, Registry};

/// Attempts of one job: the first, and one retry after an operator restart cut it off.
const MAX_ATTEMPTS: u32 = 2;

/// The backup jobs of this process, by (stack, target): their progress and outcome here, their
/// tasks in the job registry (one cancellation token each).
#[derive(Clone, Default)]
pub struct Jobs {
    live: Arc<Mutex<HashMap<(String, String), Live>>>,
    registry: Arc<Registry>,
}

struct Live {
    progress: Arc<AtomicU64>,
    finished: Arc<Mutex<Option<Finished>>>,
}

/// What a job did.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The backup taken, tested or restored (None when no backup could be found).
    pub id: Option<String>,
    pub result: Result<Done, Failure>,
}

#[derive(Clone, Debug)]
pub enum Done {
    BackedUp(Box<Manifest>, Pruned),
    Verified(String),
    Restored(String),
}

/// What retention removed after a backup.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    pub deleted: Vec<String>,
    /// Retention could not finish (the backup itself is fine); a warning event.
    pub error: Option<String>,
}

impl Jobs {
    fn key(stack: &str, target: &str) -> (String, String) {
        (stack.to_owned(), target.to_owned())
    }

    /// Bytes so far of a live job, or None when this process runs no job for the target.
    fn progress(&self, stack: &str, target: &str) -> Option<u64> {
        let live = self.live.lock().expect("jobs lock");
        live.get(&Self::key(stack, target))
            .map(|l| l.progress.load(Ordering::Relaxed))
    }

    /// The outcome of a job that ended. It stays here until [`Jobs::committed`]: a pass whose
    /// status write fails (a stale view) must find it again, not mistake the job for one cut
    /// off by a restart and run it a second time.
    fn finished(&self, stack: &str, target: &str) -> Option<Finished> {
        let live = self.live.lock().expect("jobs lock");
        let done = live
            .get(&Self::key(stack, target))?
            .finished
            .lock()
            .expect("job lock")
            .clone();
        done
    }

    /// The status holding these targets' finished jobs is written: forget the jobs.
    pub fn committed(&self, stack: &str, targets: &[String]) {
        let mut live = self.live.lock().expect("jobs lock");
        for t in targets {
            let key = Self::key(stack, t);
            if live
                .get(&key)
                .is_some_and(|l| l.finished.lock().expect("job lock").is_some())
            {
                live.remove(&key);
            }
        }
    }

    /// Whether no job runs or waits to be folded into a status.
    pub fn idle(&self) -> bool {
        self.live.lock().expect("jobs lock").is_empty()
    }

    /// Backup jobs run in `registry` (shared with the probers).
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            live: Arc::default(),
            registry,
        }
    }

    /// Stops every job (shutdown, or leadership lost). Their intent is in status: the next
    /// operator finds them there and recovers them.
    pub fn stop_all(&self) {
        self.registry.cancel_where(|k| k.kind == JobKind::Backup);
        self.live.lock().expect("jobs lock").clear();
    }

    /// Starts a job the reconcile has recorded in status.
    pub fn spawn(&self, spawn: Spawn, wake: crate::jobs::Waker) {
        let (stack, target) = (spawn.work.stack.clone(), spawn.work.target.name.clone());
        let progress = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(Mutex::new(None));
        let (p, f) = (progress.clone(), finished.clone());
        let key = JobKey::new(&stack, JobKind::Backup, &target);
        // The live entry first: the job's end must find it to leave its outcome there.
        let live = Live { progress, finished };
        self.live
            .lock()
            .expect("jobs lock")
            .insert(Self::key(&stack, &target), live);
        self.registry.spawn(key, "", move |_| async move {
            let result = execute(spawn.work, spawn.job, &p).await;
            *f.lock().expect("job lock") = Some(result);
            wake.wake(&stack);
        });
    }

    /// Stops every job of a stack (deleted) or of targets no longer declared.
    pub fn stop(&self, stack: &str, keep: &BTreeSet<String>) {
        let gone = |s: &str, t: &str| s == stack && !keep.contains(t);
        self.registry
            .cancel_where(|k| k.kind == JobKind::Backup && gone(&k.stack, &k.name));
        self.live
            .lock()
            .expect("jobs lock")
            .retain(|(s, t), _| !gone(s, t));
    }
}

/// A job to start once its intent is in status.
pub struct Spawn {
    job: RunningJob,
    work: Work,
}

/// Everything a job needs, resolved before it starts (addresses, secrets).
struct Work {
    stack: String,
    target: BackupTarget,
    engine: Arc<dyn Engine>,
    source: Source,
    destination: DestinationConfig,
    /// Containers to stop before a restore.
    stop: Vec<(String, Option<i64>)>,
    /// Backups retention must not delete (see [`Scope::kept`]).
    kept: BTreeSet<String>,
}

/// The database a job works on, as its module takes it.
enum Client<'a> {
    Postgres(postgres::Postgres<'a>),
    Redis(redis::Redis<'a>),
}

impl Work {
    fn client(&self) -> Client<'_> {
        match &self.source {
            Source::Postgres {
                container,
                addr,
                database,
                user,
                password,
            } => Client::Postgres(postgres::Postgres {
                engine: self.engine.as_ref(),
                container: container.clone(),
                addr: *addr,
                database: database.clone(),
                user: user.clone(),
                password: password.clone(),
            }),
            Source::Redis {
                container,
                addr,
                password,
                image,
            } => Client::Redis(redis::Redis {
                engine: self.engine.as_ref(),
                container: container.clone(),
                addr: *addr,
                password: password.clone(),
                image: image.clone(),
            }),
        }
    }
}

enum Source {
    Postgres {
        container: String,
        addr: std::net::SocketAddr,
        database: String,
        user: String,
        password: Option<String>,
    },
    Redis {
        container: String,
        addr: std::net::SocketAddr,
        password: Option<String>,
        image: String,
    },
}

/// Where a target's backups live, with its credentials resolved.
#[derive(Clone, Debug)]
pub enum DestinationConfig {
    Local(PathBuf),
    S3(s3::S3Config),
}

impl DestinationConfig {
    /// [`Self::of`] for a target as the spec has it (the command line reads manifests, not
    /// admitted specs); None when it names no destination.
    pub fn for_target(stack: &ServiceStack, target: &BackupTarget) -> Option<Self> {
        let destination = match (&target.destination.path, &target.destination.s3) {
            (Some(p), _) => crate::admit::Destination::Path(p.clone()),
            (None, Some(s3)) => crate::admit::Destination::S3(s3.clone()),
            (None, None) => return None,
        };
        Some(Self::of(stack, &target.name, &destination))
    }

    /// The target's own directory or key prefix: `ROOT/NAMESPACE/STACK/TARGET`.
    pub fn of(stack: &ServiceStack, target: &str, destination: &crate::admit::Destination) -> Self {
        let ns = stack.metadata.namespace.as_deref().unwrap_or("default");
        let name = stack.metadata.name.as_deref().unwrap_or_default();
        let s = match destination {
            crate::admit::Destination::Path(p) => {
                return Self::Local(PathBuf::from(p).join(ns).join(name).join(target));
            }
            crate::admit::Destination::S3(s) => s,
        };
        let var = |n: &str| stack.spec.variables.get(n).cloned().unwrap_or_default();
        let prefix = [s.prefix.as_deref().unwrap_or(""), ns, name, target]
            .iter()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Self::S3(s3::S3Config {
            bucket: s.bucket.clone(),
            prefix,
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            access_key_id: var(&s.access_key_id_variable),
            secret_access_key: var(&s.secret_access_key_variable),
        })
    }

    pub fn open(&self) -> Result<Box<dyn Destination>, Failure> {
        match self {
            Self::Local(dir) => Ok(Box::new(LocalDir::new(dir.clone()))),
            Self::S3(cfg) => Ok(Box::new(
                s3::S3::new(cfg.clone()).map_err(destination_error)?,
            )),
        }
    }
}

/// What one pass over the backup targets concluded.
#[derive(Default)]
pub struct Pass {
    pub events: Vec<StackEvent>,
    /// Jobs that ended: (target, job, None on success or the failure's reason), for metrics.
    pub ended: Vec<(String, Job, Option<crate::api::Reason>)>,
    /// Jobs to start after the status holding their intent is written.
    pub spawns: Vec<Spawn>,
    /// A job is running: look again soon to show its progress.
    pub busy: bool,
    /// Targets whose finished job this pass folded into the status, to forget once it is written.
    pub folded: Vec<String>,
    /// The earliest scheduled slot of any target.
    pub next: Option<DateTime<Utc>>,
}

/// The services a running restore keeps stopped, with the backup it restores: they are held
/// (`heal::hold`) until it ends.
pub fn restoring(statuses: &BTreeMap<String, BackupTargetStatus>) -> BTreeMap<String, String> {
    statuses
        .values()
        .filter_map(|s| s.running.as_ref())
        .flat_map(|r| r.paused_services.iter().map(|s| (s.clone(), r.id.clone())))
        .collect()
}

/// The stack a pass backs up and what the pass saw of it: the same for every target.
pub struct Scope<'a> {
    pub stack: &'a ServiceStack,
    pub project: &'a Project,
    pub claim: &'a crate::docker::Claim,
    pub engine: &'a Arc<dyn Engine>,
    pub observed: &'a Observed,
    /// The stack's backup targets as admitted: each with its one source and destination.
    pub backups: &'a [crate::admit::Backup],
    /// The restores a manual rollback asks for now, by target (`BACKUP-ID#NONCE`).
    pub rollback_restores: &'a std::collections::BTreeMap<String, String>,
    /// Backups retention keeps whatever its rules say: those a manual rollback is to restore.
    pub kept: &'a BTreeSet<String>,
}

/// Folds finished jobs into `statuses`, recovers jobs cut off by a restart, and decides
/// which job each idle target starts now. `deploy` is the spec hash of a deploy waiting for
/// the `beforeDeploy` targets' backups, if one is. Without `may_start` (shutting down), no job
/// is started or retried; finished ones are still folded.
pub async fn reconcile(
    jobs: &Jobs,
    scope: &Scope<'_>,
    statuses: &mut BTreeMap<String, BackupTargetStatus>,
    deploy: Option<&str>,
    may_start: bool,
    now: DateTime<Utc>,
) -> Pass {
    let stack = scope.stack;
    let key = stack.key();
    let declared: BTreeSet<String> = scope
        .backups
        .iter()
        .map(|b| b.target.name.clone())
        .collect();
    jobs.stop(&key, &declared);
    statuses.retain(|name, _| declared.contains(name));
    let targets = crate::probe::Targets::new(
        scope.project,
        &scope.observed.containers,
        stack.spec.health.probe_access,
        scope.claim,
    );
    let mut pass = Pass::default();
    for backup in scope.backups {
        let target = &backup.target;
        let st = statuses.entry(target.name.clone()).or_default();
        st.since.get_or_insert(now);
        let ctx = Ctx {
            stack,
            project: scope.project,
            targets: &targets,
            engine: scope.engine,
            target,
            backup,
            observed: scope.observed,
            claim: scope.claim,
            kept: scope.kept,
        };
        if let Some(f) = jobs.finished(&key, &target.name) {
            fold(st, target, f, now, &mut pass);
            pass.folded.push(target.name.clone());
        }
        if let Some(running) = st.running.as_mut() {
            match jobs.progress(&key, &target.name) {
                Some(bytes) => {
                    running.bytes = bytes;
                    pass.busy = true;
                }
                None if may_start => recover(&ctx, st, now, &mut pass).await,
                // Shutting down: the next operator recovers it.
                None => {}
            }
        } else if may_start {
            let mut requests = requests(stack, &target.name, deploy);
            requests.rollback = scope.rollback_restores.get(&target.name).cloned();
            decide(&ctx, st, &requests, now, &mut pass);
        }
        st.next_run = plan::next_run(target, now);
        pass.next = [pass.next, plan::next_wake(target, now)]
            .into_iter()
            .flatten()
            .min();
    }
    pass
}

/// What an idle target does now, as the plan decides.
fn decide(
    ctx: &Ctx<'_>,
    st: &mut BackupTargetStatus,
    requests: &Requests,
    now: DateTime<Utc>,
    pass: &mut Pass,
) {
    let target = ctx.target;
    match plan::decide(target, st, requests, now) {
        Decision::Idle => {}
        Decision::SkipSlot { job, slot } => {
            match job {
                Job::Verify => st.last_verify_slot = Some(slot),
                _ => st.last_slot = Some(slot),
            }
            let note = format!(
                "{}: the {} slot of {slot} was missed by more than startingDeadlineSeconds ({}) while the operator was not running; it was skipped",
                target.name,
                job_word(job),
                target.starting_deadline_seconds
            );
            pass.events.push(StackEvent::new(
                EventType::Warning,
                EventReason::BackupSlotMissed,
                "Backup",
                note,
            ));
        }
        Decision::Start {
            job,
            trigger,
            slot,
            backup,
        } => {
            let id = match (job, backup) {
                (Job::Backup, _) => backup_id(&target.name, now),
                (_, Some(id)) => id,
                // The newest backup, found by the job itself.
                (_, None) => String::new(),
            };
            let running = RunningJob {
                job,
                id,
                trigger,
                slot,
                started: now,
                attempt: 1,
                bytes: 0,
                paused_services: if job == Job::Restore {
                    to_pause(ctx.project, target)
                } else {
                    Vec::new()
                },
            };
            handled(st, requests, &running, now);
            start(ctx, st, running, now, pass);
        }
    }
}

/// Records in status what starting `running` answers: the request it serves, or the slot it
/// takes, so neither starts it again.
fn handled(
    st: &mut BackupTargetStatus,
    requests: &Requests,
    running: &RunningJob,
    now: DateTime<Utc>,
) {
    let slot = running.slot;
    match (running.job, running.trigger) {
        // The annotation's request goes first (see `plan::decide`): the rollback's only
        // when that one was handled already.
        (Job::Restore, _) if requests.restore == st.handled_restore_request => {
            st.handled_rollback_restore = requests.rollback.clone();
        }
        (Job::Restore, _) => st.handled_restore_request = requests.restore.clone(),
        (Job::Backup, Trigger::Manual) => st.handled_backup_request = requests.backup.clone(),
        (Job::Verify, Trigger::Manual) => st.handled_verify_request = requests.verify.clone(),
        (Job::Backup, Trigger::PreDeploy) => {
            st.deploy_backup = requests.deploy.clone().map(|spec_hash| DeployBackup {
                spec_hash,
                requested: now,
                id: running.id.clone(),
                state: DeployBackupState::Running,
                message: None,
            })
        }
        (Job::Verify, _) if slot.is_some() => st.last_verify_slot = slot,
        _ if slot.is_some() => st.last_slot = slot,
        _ => {}
    }
}

/// What `start` and `recover` need to know about the stack.
struct Ctx<'a> {
    stack: &'a ServiceStack,
    project: &'a Project,
    targets: &'a crate::probe::Targets,
    engine: &'a Arc<dyn Engine>,
    target: &'a BackupTarget,
    /// `target` as admitted.
    backup: &'a crate::admit::Backup,
    observed: &'a Observed,
    claim: &'a crate::docker::Claim,
    kept: &'a BTreeSet<String>,
}

impl Ctx<'_> {
    /// Where the target's backups go: its own directory or key prefix.
    fn destination(&self) -> DestinationConfig {
        DestinationConfig::of(self.stack, &self.target.name, &self.backup.destination)
    }
}

/// Records the job as running and queues it, or records why it cannot start.
fn start(
    ctx: &Ctx<'_>,
    st: &mut BackupTargetStatus,
    running: RunningJob,
    now: DateTime<Utc>,
    pass: &mut Pass,
) {
    match prepare(ctx, &running) {
        Ok(work) => {
            info!(stack = %ctx.stack.key(), target = %ctx.target.name, job = ?running.job, attempt = running.attempt, "starting");
            st.running = Some(running.clone());
            pass.busy = true;
            pass.spawns.push(Spawn { job: running, work });
        }
        Err(e) => {
            let f = Finished {
                id: Some(running.id.clone()).filter(|i| !i.is_empty()),
                result: Err(e),
            };
            st.running = Some(running);
            fold(st, ctx.target, f, now, pass);
        }
    }
}

/// A job in status with no task behind it: this operator was restarted while it ran.
async fn recover(ctx: &Ctx<'_>, st: &mut BackupTargetStatus, now: DateTime<Utc>, pass: &mut Pass) {
    let Some(running) = st.running.clone() else {
        return;
    };
    if running.job == Job::Backup {
        // The manifest is written last: if it is there, the backup was finished.
        let found = match ctx.destination().open() {
            Ok(dest) => read_manifest(dest.as_ref(), &running.id).await.ok(),
            Err(_) => None,
        };
        if let Some(m) = found {
            let f = Finished {
                id: Some(m.id.clone()),
                result: Ok(Done::BackedUp(Box::new(m), Pruned::default())),
            };
            fold(st, ctx.target, f, now, pass);
            return;
        }
    }
    if running.attempt >= MAX_ATTEMPTS {
        // A restore given up leaves the services it stopped stopped: start them, as its job
        // would have, rather than leave them to be repaired as crashes.
        let stopped = ctx.observed.containers.iter().filter(|c| {
            ctx.claim.owns(c)
                && running.paused_services.contains(&c.service)
                && c.state != crate::api::ContainerState::Running
        });
        for c in stopped {
            if let Err(e) = ctx.engine.start_container(&c.id).await {
                warn!(stack = %ctx.stack.key(), "starting {} after the interrupted restore failed: {e}; the repair pass will", c.service);
            }
        }
        let f = Finished {
            id: Some(running.id.clone()).filter(|i| !i.is_empty()),
            result: Err(Failure::new(Reason::Interrupted, format!(
                "the operator stopped in the middle of this {} {} times; it is not retried again. Look for why the operator restarts (logs, OOM kills), then ask for a new one",
                job_word(running.job),
                running.attempt
            ))),
        };
        fold(st, ctx.target, f, now, pass);
        return;
    }
    let note = format!(
        "{}: the operator restarted during {} {}; retrying it once",
        ctx.target.name,
        job_word(running.job),
        running.id
    );
    pass.events.push(StackEvent::new(
        EventType::Warning,
        EventReason::BackupRetried,
        "Backup",
        note,
    ));
    let retry = RunningJob {
        attempt: running.attempt + 1,
        started: now,
        bytes: 0,
        ..running
    };
    start(ctx, st, retry, now, pass);
}

fn job_word(job: Job) -> &'static str {
    match job {
        Job::Backup => "backup",
        Job::Verify => "restore test",
        Job::Restore => "restore",
    }
}

/// The requests the stack's annotations carry for a target, and the waiting deploy.
fn requests(stack: &ServiceStack, target: &str, deploy: Option<&str>) -> Requests {
    let get = |prefix: &str| {
        stack
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("{prefix}{target}")))
            .cloned()
    };
    Requests {
        backup: get(plan::BACKUP_REQUEST),
        restore: get(plan::RESTORE_REQUEST),
        verify: get(plan::VERIFY_REQUEST),
        deploy: deploy.map(str::to_owned),
        rollback: None,
    }
}

/// Services a restore stops: those depending on the database (directly or not), so no client
/// writes into a database being replaced; for Redis also Redis itself, whose data file is
/// swapped while it is down.
fn to_pause(project: &Project, target: &BackupTarget) -> Vec<String> {
    let (service, itself) = match (&target.postgres, &target.redis) {
        (Some(pg), _) => (pg.service.clone(), false),
        (_, Some(r)) => (r.service.clone(), true),
        _ => return Vec::new(),
    };
    let mut paused: BTreeSet<String> = BTreeSet::new();
    let mut frontier = vec![service.clone()];
    while let Some(s) = frontier.pop() {
        for svc in &project.services {
            if svc.depends_on.iter().any(|d| d.service == s) && paused.insert(svc.name.clone()) {
                frontier.push(svc.name.clone());
            }
        }
    }
    if itself {
        paused.insert(service);
    }
    paused.into_iter().collect()
}

fn prepare(ctx: &Ctx<'_>, running: &RunningJob) -> Result<Work, Failure> {
    let vars = &ctx.stack.spec.variables;
    let secret = |v: &Option<String>| v.as_ref().and_then(|n| vars.get(n)).cloned();
    let unreachable =
        |e: crate::probe::ProbeError| Failure::new(Reason::DatabaseUnreachable, e.message);
    let source = match &ctx.backup.source {
        crate::admit::Source::Postgres(pg) => Source::Postgres {
            container: ctx
                .targets
                .container(&pg.service)
                .map_err(unreachable)?
                .id
                .clone(),
            addr: ctx
                .targets
                .address(&pg.service, pg.port.unwrap_or(5432))
                .map_err(unreachable)?,
            database: pg.database.clone(),
            user: pg.user.clone(),
            password: secret(&pg.password_variable),
        },
        crate::admit::Source::Redis(r) => {
            // A restore stops Redis itself: its address is not needed then, and may be gone.
            let c = ctx.targets.container(&r.service).map_err(unreachable)?;
            Source::Redis {
                container: c.id.clone(),
                addr: ctx
                    .targets
                    .address(&r.service, r.port.unwrap_or(6379))
                    .map_err(unreachable)?,
                password: secret(&r.password_variable),
                image: c.image.clone(),
            }
        }
    };
    let destination = ctx.destination();
    let stop = running
        .paused_services
        .iter()
        .filter(|s| {
            // Redis itself is stopped by the restore, after reading its settings.
            ctx.target.redis.as_ref().map(|r| &r.service) != Some(*s)
        })
        .filter_map(|s| {
            let c = ctx.targets.container(s).ok()?;
            let grace = ctx
                .project
                .service(s)
                .and_then(|svc| svc.stop_grace_period_s);
            Some((c.id.clone(), grace))
        })
        .collect();
    Ok(Work {
        stack: ctx.stack.key(),
        target: ctx.target.clone(),
        engine: ctx.engine.clone(),
        source,
        destination,
        stop,
        kept: ctx.kept.clone(),
    })
}

/// Puts a job's outcome into status, and the event that tells it.
fn fold(
    st: &mut BackupTargetStatus,
    target: &BackupTarget,
    f: Finished,
    now: DateTime<Utc>,
    pass: &mut Pass,
) {
    let Some(running) = st.running.take() else {
        return;
    };
    pass.ended.push((
        target.name.clone(),
        running.job,
        f.result.as_ref().err().map(|e| e.reason),
    ));
    let events = &mut pass.events;
    let name = &target.name;
    let id = f.id.clone().unwrap_or_else(|| "(none)".to_owned());
    match f.result {
        Ok(Done::BackedUp(m, pruned)) => backed_up(st, name, &m, pruned, events),
        Ok(Done::Verified(message)) => {
            mark_verified(st, &id, true);
            st.last_verification = Some(VerificationRecord {
                id: id.clone(),
                time: now,
                passed: true,
                message: message.clone(),
            });
            events.push(StackEvent::new(
                EventType::Normal,
                EventReason::BackupVerified,
                "Verify",
                format!("{name}: restore test of {id} passed: {message}"),
            ));
        }
        Ok(Done::Restored(message)) => {
            st.last_restore = Some(RestoreRecord {
                id: id.clone(),
                time: now,
                succeeded: true,
                message: message.clone(),
            });
            events.push(StackEvent::new(
                EventType::Normal,
                EventReason::Restored,
                "Restore",
                format!("{name}: restored {id}: {message}"),
            ));
        }
        Err(e) => {
            let failed = Failed {
                running: &running,
                id: &id,
                error: e,
                now,
            };
            failed.fold(st, name, events);
        }
    }
}

/// A backup done: the last success, the deploy it may serve, what retention removed.
fn backed_up(
    st: &mut BackupTargetStatus,
    name: &str,
    m: &Manifest,
    pruned: Pruned,
    events: &mut Vec<StackEvent>,
) {
    let note = format!(
        "{name}: backup {} done: {} bytes, sha256 {}, at {}",
        m.id,
        m.size,
        short(&m.sha256),
        m.object
    );
    // Any backup started since the deploy asked serves it, also one a person took after the
    // deploy's own failed.
    if let Some(d) = st
        .deploy_backup
        .as_mut()
        .filter(|d| d.state != DeployBackupState::Succeeded && m.started >= d.requested)
    {
        d.state = DeployBackupState::Succeeded;
        d.id = m.id.clone();
        d.message = None;
    }
    st.last_success = Some(BackupRecord {
        id: m.id.clone(),
        time: m.finished,
        size: m.size,
        sha256: m.sha256.clone(),
        location: m.object.clone(),
        verified: None,
        trigger: m.trigger,
    });
    events.push(StackEvent::new(
        EventType::Normal,
        EventReason::BackupSucceeded,
        "Backup",
        note,
    ));
    if !pruned.deleted.is_empty() {
        events.push(StackEvent::new(
            EventType::Normal,
            EventReason::BackupsPruned,
            "Backup",
            format!(
                "{name}: retention removed {} old backup(s): {}",
                pruned.deleted.len(),
                pruned.deleted.join(", ")
            ),
        ));
    }
    if let Some(e) = pruned.error {
        events.push(StackEvent::new(
            EventType::Warning,
            EventReason::PruneFailed,
            "Backup",
            format!("{name}: the backup succeeded but retention could not finish: {e}; it is tried again after the next backup"),
        ));
    }
}

/// A job that failed, to fold into status.
struct Failed<'a> {
    running: &'a RunningJob,
    /// The backup it was about, `(none)` when none was found.
    id: &'a str,
    error: Failure,
    now: DateTime<Utc>,
}

impl Failed<'_> {
    /// The failed job's record (a failed restore test also marks its backup unverified), the
    /// last failure, and the warning event.
    fn fold(self, st: &mut BackupTargetStatus, name: &str, events: &mut Vec<StackEvent>) {
        let (running, id, now) = (self.running, self.id, self.now);
        let reason = self.error.reason;
        let message = self.error.to_string();
        match running.job {
            Job::Verify => {
                mark_verified(st, id, false);
                st.last_verification = Some(VerificationRecord {
                    id: id.to_owned(),
                    time: now,
                    passed: false,
                    message: message.clone(),
                });
            }
            Job::Restore => {
                st.last_restore = Some(RestoreRecord {
                    id: id.to_owned(),
                    time: now,
                    succeeded: false,
                    message: message.clone(),
                })
            }
            Job::Backup => {
                if let Some(d) = st
                    .deploy_backup
                    .as_mut()
                    .filter(|d| d.id == running.id && d.state == DeployBackupState::Running)
                {
                    d.state = DeployBackupState::Failed;
                    d.message = Some(format!("{reason}: {message}"));
                }
            }
        }
        st.last_failure = Some(FailureRecord {
            time: now,
            reason,
            message: message.clone(),
        });
        let event_reason = match running.job {
            Job::Backup => EventReason::BackupFailed,
            Job::Verify => Reason::VerificationFailed.into(),
            Job::Restore => Reason::RestoreFailed.into(),
        };
        events.push(StackEvent::new(
            EventType::Warning,
            event_reason,
            "Backup",
            format!(
                "{name}: {} {id} failed ({reason}): {message}",
                job_word(running.job)
            ),
        ));
    }
}

fn mark_verified(st: &mut BackupTargetStatus, id: &str, passed: bool) {
    if let Some(s) = st.last_success.as_mut().filter(|s| s.id == id) {
        s.verified = Some(passed);
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

async fn read_manifest(dest: &dyn Destination, id: &str) -> Result<Manifest, Failure> {
    let bytes = dest
        .get_small(&Manifest::object_name(id))
        .await
        .map_err(|e| match e {
            DestinationError::NotFound(_) => Failure::new(
                Reason::RestoreFailed,
                format!(
                    "there is no backup {id} in {}; `stackwarden backups STACK` lists them",
                    dest.location("")
                ),
            ),
            other => destination_error(other),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            Reason::ChecksumMismatch,
            format!("the manifest of {id} is not readable ({e}); the backup cannot be trusted"),
        )
    })
}

/// Every backup of a target with its newest restore test, newest first. Only backups with a
/// manifest count.
pub async fn catalog(
    dest: &dyn Destination,
) -> Result<Vec<(Manifest, Option<Verification>)>, Failure> {
    let objects = dest.list().await.map_err(destination_error)?;
    let names: BTreeSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let mut out = Vec::new();
    for o in &objects {
        let Some(id) = o.name.strip_suffix(".manifest.json") else {
            continue;
        };
        let m = read_manifest(dest, id).await?;
        let v = if names.contains(Verification::object_name(id).as_str()) {
            dest.get_small(&Verification::object_name(id))
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        };
        out.push((m, v));
    }
    out.sort_by(|a, b| (b.0.started, &b.0.id).cmp(&(a.0.started, &a.0.id)));
    Ok(out)
}

/// Runs one job to its end; never panics on bad input.
async fn execute(work: Work, job: RunningJob, progress: &AtomicU64) -> Finished {
    let dest = match work.destination.open() {
        Ok(d) => d,
        Err(e) => {
            return Finished {
                id: Some(job.id).filter(|i| !i.is_empty()),
                result: Err(e),
            }
        }
    };
    match job.job {
        Job::Backup => Finished {
            id: Some(job.id.clone()),
            result: backup(&work, dest.as_ref(), &job, progress).await,
        },
        Job::Verify | Job::Restore => {
            let id = if job.id.is_empty() {
                match catalog(dest.as_ref()).await {
                    Ok(c) => c.first().map(|(m, _)| m.id.clone()),
                    Err(e) => {
                        return Finished {
                            id: None,
                            result: Err(e),
                        }
                    }
                }
            } else {
                Some(job.id.clone())
            };
            let Some(id) = id else {
                return Finished {
                    id: None,
                    result: Err(Failure::new(
                        Reason::VerificationFailed,
                        format!("there is no backup in {} to test yet", dest.location("")),
                    )),
                };
            };
            let result = test_or_restore(&work, dest.as_ref(), job.job, &id, progress).await;
            if job.job == Job::Verify {
                let v = Verification {
                    id: id.clone(),
                    time: Utc::now(),
                    passed: result.is_ok(),
                    message: match &result {
                        Ok(Done::Verified(m)) => m.clone(),
                        Ok(_) => String::new(),
                        Err(e) => e.to_string(),
                    },
                };
                // Retention keeps the newest verified backup; it learns which from here.
                if let Err(e) = dest
                    .put_small(
                        &Verification::object_name(&id),
                        Bytes::from(serde_json::to_vec_pretty(&v).expect("serializes")),
                    )
                    .await
                {
                    warn!(target = %work.target.name, "recording the restore test of {id} failed: {e}");
                }
            }
            Finished {
                id: Some(id),
                result,
            }
        }
    }
}

async fn backup(
    work: &Work,
    dest: &dyn Destination,
    job: &RunningJob,
    progress: &AtomicU64,
) -> Result<Done, Failure> {
    dest.clean_partial().await.map_err(destination_error)?;
    let kind = match work.source {
        Source::Postgres { .. } => Kind::Postgres,
        Source::Redis { .. } => Kind::Redis,
    };
    let object = format!("{}.{}", job.id, kind.suffix());
    let upload = dest.create(&object).await.map_err(destination_error)?;
    let level = work.target.compression_level;
    let started = Utc::now();
    let mut manifest = Manifest {
        stack: work.stack.clone(),
        target: work.target.name.clone(),
        id: job.id.clone(),
        kind,
        trigger: job.trigger,
        slot: job.slot,
        started,
        finished: started,
        object: object.clone(),
        size: 0,
        sha256: String::new(),
        raw_size: 0,
        compression: format!("zstd-{level}"),
        server_version: String::new(),
        database: None,
        row_counts: BTreeMap::new(),
        key_counts: BTreeMap::new(),
    };
    let sealed = match work.client() {
        Client::Postgres(pg) => {
            let d = postgres::backup(&pg, upload, level, progress).await?;
            manifest.server_version = d.server_version;
            manifest.database = Some(pg.database.clone());
            manifest.row_counts = d.row_counts;
            d.sealed
        }
        Client::Redis(r) => {
            let d = redis::backup(&r, upload, level, progress).await?;
            manifest.server_version = d.server_version;
            manifest.key_counts = d.key_counts;
            d.sealed
        }
    };
    manifest.finished = Utc::now();
    manifest.size = sealed.size;
    manifest.raw_size = sealed.raw_size;
    manifest.sha256 = sealed.sha256;
    manifest.object = dest.location(&object);
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest).expect("manifests serialize"));
    if let Err(e) = dest.put_small(&Manifest::object_name(&job.id), body).await {
        // Without its manifest the data is not a backup; do not leave it taking space.
        let _ = dest.delete(&object).await;
        return Err(destination_error(e));
    }
    let pruned = prune(dest, &work.target, &work.kept).await;
    Ok(Done::BackedUp(Box::new(manifest), pruned))
}

/// Applies retention after a successful backup. Also removes data objects without a manifest:
/// left by a crash between writing the data and its manifest, or between deleting them.
async fn prune(dest: &dyn Destination, target: &BackupTarget, kept: &BTreeSet<String>) -> Pruned {
    let mut pruned = Pruned::default();
    let tz = target
        .time_zone
        .as_deref()
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let result: Result<(), Failure> = async {
        let catalog = catalog(dest).await?;
        let candidates: Vec<crate::decide::backup::retention::Candidate> = catalog
            .iter()
            .map(|(m, v)| crate::decide::backup::retention::Candidate {
                id: m.id.clone(),
                time: m.slot.unwrap_or(m.started),
                verified: v.as_ref().is_some_and(|v| v.passed),
            })
            .collect();
        let decision = crate::decide::backup::retention::apply(&candidates, &target.retention, tz);
        for id in decision.delete.iter().filter(|id| !kept.contains(*id)) {
            let Some((m, _)) = catalog.iter().find(|(m, _)| &m.id == id) else {
                continue;
            };
            // Manifest first: from then on the backup no longer exists for anyone.
            dest.delete(&Manifest::object_name(id))
                .await
                .map_err(destination_error)?;
            dest.delete(&format!("{id}.{}", m.kind.suffix()))
                .await
                .map_err(destination_error)?;
            dest.delete(&Verification::object_name(id))
                .await
                .map_err(destination_error)?;
            pruned.deleted.push(id.clone());
        }
        let ids: BTreeSet<&str> = catalog.iter().map(|(m, _)| m.id.as_str()).collect();
        for o in dest.list().await.map_err(destination_error)? {
            let orphan = [Kind::Postgres, Kind::Redis].iter().any(|k| {
                o.name
                    .strip_suffix(&format!(".{}", k.suffix()))
                    .is_some_and(|id| !ids.contains(id))
            });
            if orphan {
                dest.delete(&o.name).await.map_err(destination_error)?;
            }
        }
        Ok(())
    }
    .await;
    pruned.error = result.err().map(|e| e.to_string());
    pruned
}

async fn test_or_restore(
    work: &Work,
    dest: &dyn Destination,
    job: Job,
    id: &str,
    progress: &AtomicU64,
) -> Result<Done, Failure> {
    let manifest = read_manifest(dest, id).await?;
    let object = format!("{id}.{}", manifest.kind.suffix());
    let stored = dest.open(&object).await.map_err(|e| match e {
        DestinationError::NotFound(_) => Failure::new(
            Reason::ChecksumMismatch,
            format!("the data of backup {id} ({object}) is missing although its manifest exists"),
        ),
        other => destination_error(other),
    })?;
    if job == Job::Restore {
        for (container, grace) in &work.stop {
            work.engine
                .stop_container(container, *grace)
                .await
                .map_err(|e| {
                    Failure::new(
                        Reason::RestoreFailed,
                        format!("stopping a service that uses the database failed: {e}"),
                    )
                })?;
        }
    }
    let result = run_test_or_restore(work, job, stored, &manifest, progress).await;
    if job == Job::Restore {
        // The services stopped for the restore come back now, whatever its outcome; left to
        // the repair pass they would count as crashes against their restart budget.
        for (container, _) in &work.stop {
            if let Err(e) = work.engine.start_container(container).await {
                warn!(target = %work.target.name, "starting {} again after the restore failed: {e}; the repair pass will", crate::docker::short_id(container));
            }
        }
    }
    result
}

async fn run_test_or_restore(
    work: &Work,
    job: Job,
    stored: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    manifest: &Manifest,
    progress: &AtomicU64,
) -> Result<Done, Failure> {
    match work.client() {
        Client::Postgres(pg) => {
            // Leftovers of a test or restore cut off by an operator restart.
            postgres::clean_scratch(&pg).await?;
            if job == Job::Verify {
                postgres::verify(&pg, stored, manifest, progress)
                    .await
                    .map(Done::Verified)
            } else {
                postgres::restore(&pg, stored, manifest, progress)
                    .await
                    .map(Done::Restored)
            }
        }
        Client::Redis(r) => {
            redis::clean_scratch(&r).await?;
            if job == Job::Verify {
                redis::verify(&r, stored, manifest, progress)
                    .await
                    .map(Done::Verified)
            } else {
                redis::restore(&r, stored, manifest, progress)
                    .await
                    .map(Done::Restored)
            }
        }
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
