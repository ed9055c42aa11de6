//! Self-healing decisions: what is wrong with a service, whether to restart it now, later, or
//! no more (the budget), and which scheduled restarts are due. Pure, with the clock an input,
//! like the planner; the controller acts on the answers.
//!
//! Who restarts what: Docker's own restart policy (`restart: always` ...) stays in force, so a
//! stack keeps restarting crashed containers even while the operator is down. The operator
//! restarts what Docker does not: containers that exited under `restart: no` (or were stopped
//! behind its back), and running containers that fail their probes or Docker healthcheck, which
//! Docker never restarts. Docker's restarts are counted against the same budget, so a crash
//! loop shows up as Degraded whoever does the restarting.

pub mod hold;

use chrono::{DateTime, Duration, Utc};

use crate::api::{ContainerHealth, ContainerState, RestartReason, RestartSpec, ScheduledRestart};
use crate::compose::{DependencyCondition, Project, RestartPolicy, ServiceSpec};
use crate::decide::backup::schedule::SlotSchedule;
use crate::observe::ObservedContainer;
// Probe verdicts are observations; the decisions here read them.
pub use crate::observe::ProbeVerdict;

/// The window of the restart budget.
pub const BUDGET_WINDOW: Duration = Duration::hours(1);

/// Docker restarts a container within about a second of its exit (for one that keeps dying it
/// waits longer, but shows `restarting` meanwhile). An `exited` container past this grace, under a
/// policy that would restart it, was stopped on purpose or given up on.
const DOCKER_RESTART_GRACE: Duration = Duration::seconds(2);

/// Whether a container run whose probes fail is still starting: it never passed them and is
/// younger than `startupSeconds`. Its failures are counted, but do not make it unhealthy yet.
pub fn still_starting(
    verdict: &ProbeVerdict,
    spec: &crate::api::ServiceHealthSpec,
    now: DateTime<Utc>,
) -> bool {
    verdict.healthy.is_none()
        && verdict
            .run_started_at
            .is_some_and(|t| now - t < Duration::seconds(i64::from(spec.startup_seconds)))
}

/// What is wrong with a service.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Crashed {
        exit_code: Option<i64>,
    },
    /// Stopped on request outside the operator (Docker's `stop` event was seen): started
    /// again, but no sign of a crash loop.
    Stopped,
    OomKilled,
    Unhealthy {
        message: String,
    },
}

impl Fault {
    pub fn reason(&self) -> RestartReason {
        match self {
            Fault::Crashed { .. } => RestartReason::Crashed,
            Fault::Stopped => RestartReason::Stopped,
            Fault::OomKilled => RestartReason::OOMKilled,
            Fault::Unhealthy { .. } => RestartReason::ProbeFailed,
        }
    }

    /// A sentence for events and conditions.
    pub fn describe(&self) -> String {
        match self {
            Fault::Crashed { exit_code: Some(c) } => format!("exited with code {c}"),
            Fault::Crashed { exit_code: None } => "exited".to_owned(),
            Fault::Stopped => "was stopped outside the operator (docker stop, docker-compose stop); to keep it stopped, hold it (stackwarden hold, or the hold.stackwarden.dev annotation)".to_owned(),
            Fault::OomKilled => {
                "was killed by the kernel's OOM killer (memory limit reached)".to_owned()
            }
            Fault::Unhealthy { message } => format!("failed its health checks: {message}"),
        }
    }
}

/// What is wrong with `svc` now, if anything the operator should repair.
pub fn fault(
    project: &Project,
    svc: &ServiceSpec,
    c: Option<&ObservedContainer>,
    probe: Option<&ProbeVerdict>,
    now: DateTime<Utc>,
) -> Option<Fault> {
    // No container at all is the planner's business (it creates one).
    let c = c?;
    match c.state {
        // Docker reports `starting` until the container's own healthcheck first passes (or
        // fails `retries` times): a database still running initdb is not broken yet, however
        // long a loaded machine makes that take, so failing probes wait for Docker's verdict.
        ContainerState::Running if c.health == Some(ContainerHealth::Starting) => None,
        ContainerState::Running => match probe.filter(|p| p.run_started_at == c.started_at) {
            Some(p) => (p.healthy == Some(false)).then(|| Fault::Unhealthy {
                message: p
                    .last
                    .as_ref()
                    .map_or_else(|| "probe failed".to_owned(), |l| l.message.clone()),
            }),
            None => (c.health == Some(ContainerHealth::Unhealthy)).then(|| Fault::Unhealthy {
                message: "its Docker healthcheck reports unhealthy".to_owned(),
            }),
        },
        ContainerState::Exited | ContainerState::Dead => {
            if finished_job(project, svc, c) || docker_will_restart(svc, c, now) {
                return None;
            }
            Some(if c.oom_killed {
                Fault::OomKilled
            } else {
                Fault::Crashed {
                    exit_code: c.exit_code,
                }
            })
        }
        // Created: the planner starts it. Restarting: Docker is on it. Paused: someone's choice.
        _ => None,
    }
}

/// The dependency (`depends_on`) of `svc` that is down or not healthy, if any. A service failing
/// its probes then is not restarted: its `/health` fails because its database is down, the
/// fault is the dependency's, and restarting the dependent would only spend its budget. It is
/// looked at again once the dependency is healthy. Jobs waited on for completion are not
/// dependencies in this sense.
pub fn failing_dependency<'c>(
    project: &Project,
    svc: &ServiceSpec,
    container: impl Fn(&str) -> Option<&'c ObservedContainer>,
    probes: &std::collections::BTreeMap<String, ProbeVerdict>,
    now: DateTime<Utc>,
) -> Option<String> {
    svc.depends_on
        .iter()
        .filter(|d| d.condition != DependencyCondition::CompletedSuccessfully)
        .map(|d| d.service.as_str())
        .find(|dep| {
            let Some(spec) = project.service(dep) else {
                return false;
            };
            let c = container(dep);
            let well = c.is_some_and(|c| {
                c.state == ContainerState::Running
                    && !matches!(
                        c.health,
                        Some(ContainerHealth::Starting | ContainerHealth::Unhealthy)
                    )
            });
            !well || fault(project, spec, c, probes.get(*dep), now).is_some()
        })
        .map(str::to_owned)
}

/// Whether a dependent failing its probes may be restarted, given what it waits for.
#[derive(Clone, Debug, PartialEq)]
pub enum DependencyGate {
    Open,
    /// Not now; `wait` is what the status keeps, `until` when to look again (None: when the
    /// dependency changes).
    Closed {
        wait: crate::api::DependencyWait,
        until: Option<DateTime<Utc>>,
    },
}

/// The gate for a dependent failing its probes: closed while `failing` names a dependency that
/// is down, and for `grace` after it is healthy again (the dependent's own probe rounds), open
/// after that. `previous` is the wait the status recorded.
pub fn dependency_gate(
    failing: Option<&str>,
    previous: Option<&crate::api::DependencyWait>,
    grace: Duration,
    now: DateTime<Utc>,
) -> DependencyGate {
    use crate::api::DependencyWait;
    match (failing, previous) {
        (Some(dep), _) => DependencyGate::Closed {
            wait: DependencyWait {
                service: dep.to_owned(),
                recovered: None,
            },
            until: None,
        },
        (None, None) => DependencyGate::Open,
        (None, Some(w)) => {
            let recovered = w.recovered.unwrap_or(now);
            if now - recovered >= grace {
                return DependencyGate::Open;
            }
            DependencyGate::Closed {
                wait: DependencyWait {
                    service: w.service.clone(),
                    recovered: Some(recovered),
                },
                until: Some(recovered + grace),
            }
        }
    }
}

/// A finished one-shot job: a service others wait on with `service_completed_successfully`,
/// that exited 0 under a policy that would not rerun it. Restarting it would redo its work.
pub fn finished_job(project: &Project, svc: &ServiceSpec, c: &ObservedContainer) -> bool {
    let is_job = project.services.iter().any(|s| {
        s.depends_on.iter().any(|d| {
            d.service == svc.name && d.condition == DependencyCondition::CompletedSuccessfully
        })
    });
    is_job
        && c.exit_code == Some(0)
        && matches!(svc.restart, RestartPolicy::No | RestartPolicy::OnFailure)
}

fn docker_will_restart(svc: &ServiceSpec, c: &ObservedContainer, now: DateTime<Utc>) -> bool {
    docker_restart_deadline(svc, c).is_some_and(|t| now < t)
}

/// Until when an exited container is left to Docker's restart policy: past it, the operator
/// must look again (no event may come: a container Docker does not restart stays silent), so
/// the pass that saw it exit asks to be woken then.
pub fn docker_restart_deadline(svc: &ServiceSpec, c: &ObservedContainer) -> Option<DateTime<Utc>> {
    // The container's own policy: the operator may have switched the spec's off (a crash loop
    // past its budget), and then Docker restarts nothing.
    let policy = match c.restart_policy.unwrap_or(svc.restart) {
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure => c.exit_code != Some(0),
        RestartPolicy::No => false,
    };
    let exited = matches!(c.state, ContainerState::Exited | ContainerState::Dead);
    c.finished_at
        .filter(|_| policy && exited)
        .map(|t| t + DOCKER_RESTART_GRACE)
}

/// What to do with Docker's own restart policy of a service's container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyStep {
    Keep,
    /// Past the budget: switch Docker's loop off too (`docker update --restart=no`), or it would
    /// go on restarting a service the operator has given up on.
    Suspend,
    /// The budget allows restarts again (the window passed, or the spec changed and with it the
    /// budget): put the spec's policy back.
    Restore,
    /// The container has a policy of its own again (it was recreated): nothing to put back.
    Forget,
}

/// The step for Docker's restart policy: `spec` is the compose file's, `container` what the
/// container has now, `suspended` whether the operator switched it off, `exhausted` whether the
/// budget is spent.
pub fn docker_policy(
    spec: RestartPolicy,
    container: Option<RestartPolicy>,
    suspended: bool,
    exhausted: bool,
) -> PolicyStep {
    let Some(container) = container else {
        return PolicyStep::Keep;
    };
    match (suspended, container == RestartPolicy::No) {
        (false, false) if exhausted => PolicyStep::Suspend,
        (true, true) if spec == RestartPolicy::No => PolicyStep::Forget,
        (true, true) if !exhausted => PolicyStep::Restore,
        (true, false) => PolicyStep::Forget,
        _ => PolicyStep::Keep,
    }
}

/// Whether to restart a faulty service now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Restart,
    /// Backoff: not before `until`.
    Wait {
        until: DateTime<Utc>,
    },
    /// The budget is spent: no restart before `until`, when the oldest counted restart leaves
    /// the window.
    Exhausted {
        until: DateTime<Utc>,
    },
}

/// The restarts that still count against the budget.
pub fn in_window(recent: &[DateTime<Utc>], now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut v: Vec<_> = recent
        .iter()
        .copied()
        .filter(|t| now - *t < BUDGET_WINDOW)
        .collect();
    v.sort();
    v
}

/// Decides from the restarts of the last hour. The first restart is immediate; each further one
/// waits `backoffSeconds`, doubled per restart, up to `maxBackoffSeconds`.
pub fn decide(recent: &[DateTime<Utc>], spec: &RestartSpec, now: DateTime<Utc>) -> Decision {
    let window = in_window(recent, now);
    let n = window.len() as u32;
    if n >= spec.max_restarts_per_hour {
        let oldest = window.first().copied().unwrap_or(now);
        return Decision::Exhausted {
            until: oldest + BUDGET_WINDOW,
        };
    }
    let Some(last) = window.last().copied() else {
        return Decision::Restart;
    };
    let until = last + backoff(spec, n);
    if now >= until {
        Decision::Restart
    } else {
        Decision::Wait { until }
    }
}

/// The wait after `n` restarts (n ≥ 1).
pub fn backoff(spec: &RestartSpec, n: u32) -> Duration {
    let secs =
        u64::from(spec.backoff_seconds).saturating_mul(1u64 << (n.saturating_sub(1)).min(20));
    Duration::seconds(secs.min(u64::from(spec.max_backoff_seconds)) as i64)
}

/// A parsed maintenance schedule: the cron schedule backups use too, read from a restart entry.
#[derive(Clone, Debug)]
pub struct Schedule(SlotSchedule);

impl Schedule {
    /// Parses `schedule` and `timeZone`; the error says what is wrong, for InvalidSpec.
    pub fn parse(entry: &ScheduledRestart) -> Result<Self, String> {
        SlotSchedule::parse(&entry.schedule, entry.time_zone.as_deref()).map(Self)
    }

    /// The first slot after `after`.
    pub fn next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.next_after(after)
    }

    /// The latest slot after `after` and at or before `now`, if any: a restart that is due.
    /// Several missed slots make one restart, not a burst.
    pub fn due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.newest_at_or_before(now).filter(|slot| *slot > after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn spec(backoff: u32, max: u32, budget: u32) -> RestartSpec {
        RestartSpec {
            backoff_seconds: backoff,
            max_backoff_seconds: max,
            max_restarts_per_hour: budget,
            restart_dependents: false,
        }
    }

    #[test]
    fn first_restart_is_immediate_then_backoff_doubles_up_to_the_cap() {
        let s = spec(10, 35, 10);
        assert_eq!(decide(&[], &s, t(0)), Decision::Restart);
        // One restart at 0: the next waits 10 s.
        assert_eq!(decide(&[t(0)], &s, t(5)), Decision::Wait { until: t(10) });
        assert_eq!(decide(&[t(0)], &s, t(10)), Decision::Restart);
        // Two: 20 s after the last; three: 40 s capped to 35 s.
        assert_eq!(
            decide(&[t(0), t(10)], &s, t(11)),
            Decision::Wait { until: t(30) }
        );
        assert_eq!(
            decide(&[t(0), t(10), t(30)], &s, t(31)),
            Decision::Wait { until: t(65) }
        );
    }

    #[test]
    fn budget_stops_restarts_until_the_oldest_leaves_the_hour() {
        let s = spec(1, 1, 3);
        let recent = [t(0), t(1), t(3)];
        assert_eq!(
            decide(&recent, &s, t(10)),
            Decision::Exhausted { until: t(3600) }
        );
        assert_eq!(
            decide(&recent, &s, t(3599)),
            Decision::Exhausted { until: t(3600) }
        );
        // At 3600 the restart at 0 no longer counts: two left in the window, backoff long past.
        assert_eq!(decide(&recent, &s, t(3600)), Decision::Restart);
        assert_eq!(in_window(&recent, t(3600)), vec![t(1), t(3)]);
    }

    #[test]
    fn restarts_older_than_an_hour_do_not_count() {
        let s = spec(10, 300, 2);
        assert_eq!(decide(&[t(-7200), t(-3601)], &s, t(0)), Decision::Restart);
    }

    #[test]
    fn backoff_never_overflows() {
        assert_eq!(backoff(&spec(u32::MAX, 300, 5), 60), Duration::seconds(300));
    }

    fn project(file: &str) -> Project {
        let stack = crate::api::ServiceStack::new(
            "s",
            yaml_serde::from_str(&format!(
                "compose: {{file: {}}}",
                serde_json::to_string(file).unwrap()
            ))
            .unwrap(),
        );
        crate::compose::load(&stack).unwrap()
    }

    fn container(state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: "c".into(),
            name: "n".into(),
            service: "app".into(),
            uid: Some("u".into()),
            config_hash: None,
            compose_hash: None,
            revision: None,
            spec_hash: None,
            state,
            health: None,
            image: "i".into(),
            exit_code: None,
            restart_count: 0,
            addresses: Default::default(),
            published: Default::default(),
            oom_killed: false,
            started_at: None,
            finished_at: None,
            restart_policy: None,
        }
    }

    #[test]
    fn a_run_that_never_passed_is_starting_for_startup_seconds() {
        let spec = crate::api::ServiceHealthSpec {
            startup_seconds: 60,
            ..Default::default()
        };
        let undecided = ProbeVerdict {
            healthy: None,
            consecutive_failures: 5,
            consecutive_successes: 0,
            last: None,
            misconfigured: None,
            run_started_at: Some(t(0)),
        };
        assert!(still_starting(&undecided, &spec, t(59)));
        assert!(!still_starting(&undecided, &spec, t(60)));
        // Once healthy, a failing streak is judged by failureThreshold alone.
        let was_healthy = ProbeVerdict {
            healthy: Some(true),
            ..undecided.clone()
        };
        assert!(!still_starting(&was_healthy, &spec, t(1)));
        // A run whose start Docker did not report gets no grace.
        let unknown = ProbeVerdict {
            run_started_at: None,
            ..undecided
        };
        assert!(!still_starting(&unknown, &spec, t(1)));
    }

    #[test]
    fn faults_are_named_by_what_happened() {
        let p = project("services: {app: {image: x}}");
        let svc = p.service("app").unwrap();
        let now = t(100);
        let exited = ObservedContainer {
            exit_code: Some(3),
            finished_at: Some(t(0)),
            ..container(ContainerState::Exited)
        };
        assert_eq!(
            fault(&p, svc, Some(&exited), None, now),
            Some(Fault::Crashed { exit_code: Some(3) })
        );
        let oom = ObservedContainer {
            oom_killed: true,
            ..exited.clone()
        };
        assert_eq!(
            fault(&p, svc, Some(&oom), None, now).unwrap().reason(),
            RestartReason::OOMKilled
        );
        let running = container(ContainerState::Running);
        assert_eq!(fault(&p, svc, Some(&running), None, now), None);
        let unhealthy = ObservedContainer {
            health: Some(ContainerHealth::Unhealthy),
            ..running.clone()
        };
        assert_eq!(
            fault(&p, svc, Some(&unhealthy), None, now)
                .unwrap()
                .reason(),
            RestartReason::ProbeFailed
        );
        // Probes, when present, overrule Docker's healthcheck either way.
        let passing = ProbeVerdict {
            healthy: Some(true),
            consecutive_failures: 0,
            consecutive_successes: 3,
            last: None,
            misconfigured: None,
            run_started_at: None,
        };
        assert_eq!(fault(&p, svc, Some(&unhealthy), Some(&passing), now), None);
        let failing = ProbeVerdict {
            healthy: Some(false),
            consecutive_failures: 3,
            consecutive_successes: 0,
            last: None,
            misconfigured: None,
            run_started_at: None,
        };
        assert!(matches!(
            fault(&p, svc, Some(&running), Some(&failing), now),
            Some(Fault::Unhealthy { .. })
        ));
        // A verdict about an earlier run of the container (before a restart) is no evidence.
        let stale = ProbeVerdict {
            run_started_at: Some(t(1)),
            ..failing.clone()
        };
        assert_eq!(
            fault(
                &p,
                svc,
                Some(&ObservedContainer {
                    started_at: Some(t(50)),
                    ..running.clone()
                }),
                Some(&stale),
                now
            ),
            None
        );
        // While Docker's own healthcheck still says `starting`, failing probes are no fault.
        let starting = ObservedContainer {
            health: Some(ContainerHealth::Starting),
            ..running.clone()
        };
        assert_eq!(fault(&p, svc, Some(&starting), Some(&failing), now), None);
        // Undecided probes (not enough rounds yet) are no fault.
        let undecided = ProbeVerdict {
            healthy: None,
            ..failing
        };
        assert_eq!(fault(&p, svc, Some(&running), Some(&undecided), now), None);
        assert_eq!(fault(&p, svc, None, None, now), None);
        assert_eq!(
            fault(
                &p,
                svc,
                Some(&container(ContainerState::Restarting)),
                None,
                now
            ),
            None
        );
        assert_eq!(
            fault(&p, svc, Some(&container(ContainerState::Paused)), None, now),
            None
        );
    }

    #[test]
    fn docker_restarts_what_its_policy_covers_and_the_operator_the_rest() {
        let p = project(
            "services: {app: {image: x, restart: always}, job: {image: x, restart: on-failure}}",
        );
        let app = p.service("app").unwrap();
        let just_died = ObservedContainer {
            exit_code: Some(137),
            finished_at: Some(t(99)),
            ..container(ContainerState::Exited)
        };
        assert_eq!(
            fault(&p, app, Some(&just_died), None, t(100)),
            None,
            "Docker is about to restart it"
        );
        // Still exited well after: stopped on purpose (docker stop); the operator starts it.
        assert!(fault(&p, app, Some(&just_died), None, t(110)).is_some());
        let job = p.service("job").unwrap();
        let clean_exit = ObservedContainer {
            exit_code: Some(0),
            finished_at: Some(t(99)),
            ..container(ContainerState::Exited)
        };
        assert!(
            fault(&p, job, Some(&clean_exit), None, t(100)).is_some(),
            "on-failure does not restart exit 0"
        );
    }

    #[test]
    fn a_container_left_to_docker_is_looked_at_again_when_its_grace_is_over() {
        let p = project("services: {app: {image: x, restart: always}, plain: {image: x}}");
        let (app, plain) = (p.service("app").unwrap(), p.service("plain").unwrap());
        let just_died = ObservedContainer {
            exit_code: Some(137),
            finished_at: Some(t(99)),
            ..container(ContainerState::Exited)
        };
        let deadline = docker_restart_deadline(app, &just_died).expect("left to Docker");
        assert!(deadline > t(99));
        // The fault shows exactly when the deadline passes, so a wake-up then finds it.
        assert_eq!(
            fault(
                &p,
                app,
                Some(&just_died),
                None,
                deadline - Duration::milliseconds(1)
            ),
            None
        );
        assert!(fault(&p, app, Some(&just_died), None, deadline).is_some());
        assert_eq!(
            docker_restart_deadline(plain, &just_died),
            None,
            "restart: no"
        );
        let running = container(ContainerState::Running);
        assert_eq!(
            docker_restart_deadline(app, &running),
            None,
            "nothing to wait for"
        );
    }

    #[test]
    fn docker_loops_are_switched_off_past_the_budget_and_back_on_when_it_allows() {
        use RestartPolicy::{Always, No};
        // Within the budget Docker's policy is left alone.
        assert_eq!(
            docker_policy(Always, Some(Always), false, false),
            PolicyStep::Keep
        );
        // Past it, switched off, and left off while the budget stays spent.
        assert_eq!(
            docker_policy(Always, Some(Always), false, true),
            PolicyStep::Suspend
        );
        assert_eq!(
            docker_policy(Always, Some(No), true, true),
            PolicyStep::Keep
        );
        // Back on once the budget allows restarts again.
        assert_eq!(
            docker_policy(Always, Some(No), true, false),
            PolicyStep::Restore
        );
        // A recreated container, or a spec now saying `no`, has nothing to put back.
        assert_eq!(
            docker_policy(Always, Some(Always), true, true),
            PolicyStep::Forget
        );
        assert_eq!(docker_policy(No, Some(No), true, false), PolicyStep::Forget);
        // A `restart: no` service has no loop to stop; an unknown policy is not touched.
        assert_eq!(docker_policy(No, Some(No), false, true), PolicyStep::Keep);
        assert_eq!(docker_policy(Always, None, false, true), PolicyStep::Keep);
    }

    #[test]
    fn a_dependent_waits_out_its_dependencys_outage_and_then_its_own_probe_rounds() {
        let grace = Duration::seconds(30);
        // Nothing waited for: open.
        assert_eq!(
            dependency_gate(None, None, grace, t(0)),
            DependencyGate::Open
        );
        // The database is down: closed, until it changes.
        let DependencyGate::Closed { wait, until } =
            dependency_gate(Some("postgres"), None, grace, t(0))
        else {
            panic!("open during the outage");
        };
        assert_eq!(
            (wait.service.as_str(), wait.recovered, until),
            ("postgres", None, None)
        );
        // Back: closed for the grace from the first pass that saw it back.
        let DependencyGate::Closed { wait, until } =
            dependency_gate(None, Some(&wait), grace, t(100))
        else {
            panic!("open at once after the outage");
        };
        assert_eq!((wait.recovered, until), (Some(t(100)), Some(t(130))));
        assert!(matches!(
            dependency_gate(None, Some(&wait), grace, t(129)),
            DependencyGate::Closed { .. }
        ));
        assert_eq!(
            dependency_gate(None, Some(&wait), grace, t(130)),
            DependencyGate::Open
        );
        // Down again meanwhile: the grace starts over.
        let DependencyGate::Closed { wait, .. } =
            dependency_gate(Some("postgres"), Some(&wait), grace, t(120))
        else {
            panic!();
        };
        assert_eq!(wait.recovered, None);
    }

    #[test]
    fn a_finished_job_is_no_fault() {
        let p = project("services: {migrate: {image: x}, app: {image: x, depends_on: {migrate: {condition: service_completed_successfully}}}}");
        let m = p.service("migrate").unwrap();
        let done = ObservedContainer {
            exit_code: Some(0),
            ..container(ContainerState::Exited)
        };
        assert_eq!(fault(&p, m, Some(&done), None, t(0)), None);
        let failed = ObservedContainer {
            exit_code: Some(1),
            ..done
        };
        assert!(fault(&p, m, Some(&failed), None, t(0)).is_some());
    }

    #[test]
    fn schedules_fire_once_per_slot_in_their_time_zone() {
        let entry = |tz: Option<&str>| ScheduledRestart {
            service: "b".into(),
            schedule: "0 3 * * *".into(),
            time_zone: tz.map(Into::into),
        };
        let zurich = Schedule::parse(&entry(Some("Europe/Zurich"))).unwrap();
        let day = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        // 03:00 in Zurich is 02:00 UTC in winter.
        assert_eq!(zurich.due(day, day + Duration::hours(1)), None);
        let slot = Utc.with_ymd_and_hms(2026, 1, 10, 2, 0, 0).unwrap();
        assert_eq!(zurich.due(day, day + Duration::hours(2)), Some(slot));
        // Once done (recorded as `after`), not again the same day.
        assert_eq!(zurich.due(slot, slot + Duration::hours(20)), None);
        // Three missed nights make one restart, for the latest slot.
        assert_eq!(
            zurich.due(day, day + Duration::days(3)),
            Some(slot + Duration::days(2))
        );
        assert!(Schedule::parse(&entry(Some("Mars/Olympus")))
            .unwrap_err()
            .contains("IANA"));
        let bad = ScheduledRestart {
            schedule: "every night".into(),
            ..entry(None)
        };
        assert!(Schedule::parse(&bad).unwrap_err().contains("cron"));
    }
}
