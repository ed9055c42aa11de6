//! What the operator tells Prometheus: reconcile passes, probes, restarts, recoveries, the
//! readiness, conditions and service health of each stack, status writes and events, plus the
//! `/metrics`, `/healthz` and `/readyz` endpoints ([`serve`]).
//!
//! Telemetry lives here and nowhere else, in the style of kube-rs's controller-rs example:
//! the reconcile loop, the prober and the healer call one method of [`Metrics`] each, and
//! errors show up as a stable label (`reconcile::Error::metric_label`), never as a message.
//!
//! # What the drivers call
//!
//! Every method takes the stack's key, `namespace/name` as `ServiceStack::key` returns it;
//! the series carry it as two labels, `namespace` and `name`.
//!
//! - [`Metrics::reconciled`] after each pass, with its duration and error label;
//! - [`Metrics::stack_observed`] at the end of **every** pass, with the status the pass
//!   concluded (conditions merged), whether or not it was written: a valid spec, an invalid
//!   one, an unreachable engine and a deploy held for backups alike. This is what keeps
//!   `stackwarden_stack_ready` present, at 0, exactly when a stack is in trouble;
//! - [`Metrics::status_written`] after each status write the API server (or the local store)
//!   accepted, and [`Metrics::event_recorded`] after each event recorded: the churn a calm
//!   operator keeps at zero for a steady stack;
//! - [`Metrics::set_leader`] when this process becomes or stops being the leader (local mode:
//!   `true` once at start, as the state-directory lock makes it the only one);
//! - [`Metrics::rollout_step_ended`] and [`Metrics::rollout_ended`] when the rollout step
//!   records a service's step or the whole rollout ending (measured from the times status
//!   recorded, so an operator restart in between does not cut the figure), and
//!   [`Metrics::rollout_gate_observed`] when an analysis job reaches its verdict;
//! - [`Metrics::forget_stack`] once a stack is deleted;
//! - [`serve`] at start, and the drivers set its `ready` flag after their first pass.
//!
//! # Cardinality
//!
//! Series are labelled by stack and service, which are user data but few, and otherwise only
//! by closed sets chosen by the operator's code (probe kind, result, restart reason, error
//! label, condition type, status and reason, event type and reason). Nothing unbounded
//! (messages, URLs, container ids) becomes a label. [`Metrics::forget_stack`] drops every
//! series of a deleted stack, so a long-running operator does not keep (and alert on) stacks
//! that are gone.
//!
//! # States as series, and alerting on them
//!
//! `stackwarden_stack_condition` has exactly one series per condition type of a stack, at 1,
//! labelled with the condition's current `status` and `reason`. When either changes, the old
//! series is removed, not left at 1 (a stale alert) nor at 0 (a series per reason ever seen):
//! Prometheus marks a series that vanished from a scrape stale at once, so
//! `stackwarden_stack_condition{type="Degraded",status="True"} == 1` fires while the stack is
//! Degraded and resolves at the first scrape after it is not. An alert labelled with the
//! reason restarts its `for:` when the reason changes; to keep one alert across reasons,
//! aggregate it away: `max without (reason) (stackwarden_stack_condition{...})`. (A series per
//! possible status at 0/1, as kube-state-metrics does, does not combine with a `reason`
//! label: the reasons of the other statuses are unknown.)
//!
//! Per-service health is a number, `stackwarden_service_healthy` 1/0, rather than one series
//! per health state: `stackwarden_service_healthy == 0` keeps one identity (and its `for:`)
//! while a service goes from unhealthy to stopped to missing, and
//! `avg_over_time(stackwarden_service_healthy[30d])` is its availability. Why it is not
//! healthy is in the status and the events. 1 means running and passing its health check (the
//! operator's probes, else Docker's healthcheck) or having none; starting counts as 0. The
//! gauge mirrors the status's `services`, except while the engine is unreachable
//! (`DockerUnreachable` True), when nothing is known to be healthy and every service is 0.
//!
//! Useful rules: `stackwarden_stack_ready == 0` (a stack not Ready, invalid spec and
//! unreachable engine included), `stackwarden_service_healthy == 0`,
//! `sum(stackwarden_leader) != 1` (no leader, or two), and
//! `increase(stackwarden_status_writes_total[10m]) > 0` on a steady stack (churn).
//!
//! # Format
//!
//! Exposition is the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), which every
//! Prometheus-compatible scraper reads; counters end in `_total` and durations in `_seconds`.
//! A labelled family appears once it has a series (prometheus-client renders nothing for an
//! empty one); `stackwarden_build_info` and `stackwarden_leader` are there from the start.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `stackwarden_build_info` | gauge (always 1) | version |
//! | `stackwarden_leader` | gauge (1/0): this process acts | — |
//! | `stackwarden_reconcile_duration_seconds` | histogram | namespace, name |
//! | `stackwarden_reconcile_errors_total` | counter | namespace, name, error |
//! | `stackwarden_probes_total` | counter | namespace, name, service, kind, result (`success`/`failure`) |
//! | `stackwarden_probe_duration_seconds` | histogram | namespace, name, service, kind |
//! | `stackwarden_restarts_total` | counter | namespace, name, service, reason |
//! | `stackwarden_time_to_recover_seconds` | histogram (0.1 s .. 600 s) | namespace, name, service |
//! | `stackwarden_stack_ready` | gauge (1/0) | namespace, name |
//! | `stackwarden_stack_condition` | gauge (1, one series per condition type) | namespace, name, type, status, reason |
//! | `stackwarden_stack_healthy_services` | gauge | namespace, name |
//! | `stackwarden_service_healthy` | gauge (1/0) | namespace, name, service |
//! | `stackwarden_status_writes_total` | counter | namespace, name |
//! | `stackwarden_events_total` | counter | namespace, name, type (`Normal`/`Warning`), reason |
//! | `stackwarden_backup_jobs_total` | counter | namespace, name, target, job, result |
//! | `stackwarden_backup_last_success_timestamp_seconds` | gauge | namespace, name, target |
//! | `stackwarden_backup_last_size_bytes` | gauge | namespace, name, target |
//! | `stackwarden_rollouts_total` | counter | namespace, name, outcome (`Complete`/`RolledBack`) |
//! | `stackwarden_rollout_duration_seconds` | histogram | namespace, name, outcome |
//! | `stackwarden_rollout_step_duration_seconds` | histogram | namespace, name, service, step |
//! | `stackwarden_rollout_gate_value` | gauge | namespace, name, service, gate (`error_ratio`/`latency_seconds`) |

mod labels;
mod rollouts;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::api::condition::{self, Condition, ConditionStatus, ConditionType};
use crate::api::EventType;
use crate::api::{ContainerHealth, ContainerState, ServiceStackStatus, ServiceStatus};
use labels::*;

pub use rollouts::{GATE_ERROR_RATIO, GATE_LATENCY};
pub use server::{serve, METRICS_CONTENT_TYPE};

/// Every metric name starts with this and an underscore.
pub const PREFIX: &str = "stackwarden";

/// Reconcile passes: from a few milliseconds (nothing to do) to a minute (pulling, creating).
const RECONCILE_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
/// Probes: a millisecond on the project network up to the longest sensible timeout.
const PROBE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Time to recover: 0.1 s .. 10 min, fine around the seconds where crash recovery lands
/// (Docker's own restart is ~0.4 s, the target for probe failures a few seconds).
const RECOVERY_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Label values of `result` in `stackwarden_probes_total`.
pub const PROBE_SUCCESS: &str = "success";
pub const PROBE_FAILURE: &str = "failure";

/// Label value of `result` in `stackwarden_backup_jobs_total` for a job that succeeded.
pub const JOB_SUCCEEDED: &str = "Succeeded";

/// Makes histograms with fixed buckets for a [`Family`].
#[derive(Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type HistogramFamily<S> = Family<S, Histogram, Buckets>;

/// The label sets a stack has used beyond its [`StackLabels`], so that
/// [`Metrics::forget_stack`] can remove them (a [`Family`] cannot be filtered), and the
/// current state series, so that a state that ended loses its series.
#[derive(Debug, Default)]
struct StackSeries {
    errors: HashSet<&'static str>,
    probes: HashSet<(String, &'static str)>,
    restarts: HashSet<(String, &'static str)>,
    recovered: HashSet<String>,
    /// The one `stackwarden_stack_condition` series at 1 of each condition type.
    conditions: BTreeMap<ConditionType, ConditionLabels>,
    /// Services with a `stackwarden_service_healthy` series.
    services: BTreeSet<String>,
    events: HashSet<(&'static str, String)>,
    backup_jobs: HashSet<(String, &'static str, String)>,
    backup_targets: HashSet<String>,
    rollouts: HashSet<&'static str>,
    rollout_steps: HashSet<(String, &'static str)>,
    gates: HashSet<(String, &'static str)>,
}

/// The operator's metrics. Share it as `Arc<Metrics>`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    build_info: Family<BuildLabels, Gauge>,
    reconcile_duration: HistogramFamily<StackLabels>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    probe_duration: HistogramFamily<ProbeKindLabels>,
    restarts: Family<RestartLabels, Counter>,
    time_to_recover: HistogramFamily<ServiceLabels>,
    stack_ready: Family<StackLabels, Gauge>,
    stack_condition: Family<ConditionLabels, Gauge>,
    healthy_services: Family<StackLabels, Gauge>,
    service_healthy: Family<ServiceLabels, Gauge>,
    status_writes: Family<StackLabels, Counter>,
    events: Family<EventLabels, Counter>,
    backup_jobs: Family<BackupJobLabels, Counter>,
    backup_last_success: Family<TargetLabels, Gauge>,
    backup_last_size: Family<TargetLabels, Gauge>,
    rollout: rollouts::RolloutFamilies,
    /// Held while a series is created or removed, so that forgetting a stack and recording
    /// for it do not interleave.
    seen: Mutex<HashMap<String, StackSeries>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix(PREFIX),
            leader: Gauge::default(),
            build_info: Family::default(),
            reconcile_duration: Family::new_with_constructor(Buckets(&RECONCILE_BUCKETS)),
            reconcile_errors: Family::default(),
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(Buckets(&PROBE_BUCKETS)),
            restarts: Family::default(),
            time_to_recover: Family::new_with_constructor(Buckets(&RECOVERY_BUCKETS)),
            stack_ready: Family::default(),
            stack_condition: Family::default(),
            healthy_services: Family::default(),
            service_healthy: Family::default(),
            status_writes: Family::default(),
            events: Family::default(),
            backup_jobs: Family::default(),
            backup_last_success: Family::default(),
            backup_last_size: Family::default(),
            rollout: rollouts::RolloutFamilies::new(),
            seen: Mutex::default(),
        };
        metrics.register_process();
        metrics.register_passes();
        metrics.register_stacks();
        metrics.register_backups();
        metrics.rollout.register(&mut metrics.registry);
        metrics
            .build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        metrics
    }

    fn register_process(&mut self) {
        let r = &mut self.registry;
        r.register(
            "build_info",
            "Always 1; the operator's version as a label",
            self.build_info.clone(),
        );
        r.register(
            "leader",
            "1 while this process is the one that acts (holds the lease; always in local mode), else 0",
            self.leader.clone(),
        );
    }

    fn register_passes(&mut self) {
        let r = &mut self.registry;
        r.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile pass of a stack",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconcile passes that failed, by error",
            self.reconcile_errors.clone(),
        );
        r.register(
            "probes",
            "Probes run, by kind and result (success or failure)",
            self.probes.clone(),
        );
        r.register_with_unit(
            "probe_duration",
            "Latency of a probe, failed ones included",
            Unit::Seconds,
            self.probe_duration.clone(),
        );
        r.register(
            "restarts",
            "Services restarted by the operator, by reason",
            self.restarts.clone(),
        );
        r.register_with_unit(
            "time_to_recover",
            "From a service's fault being seen to the service being healthy again",
            Unit::Seconds,
            self.time_to_recover.clone(),
        );
        r.register(
            "status_writes",
            "Status writes of a stack; a steady stack has none",
            self.status_writes.clone(),
        );
        r.register(
            "events",
            "Events recorded about a stack, by type and reason; a steady stack has none",
            self.events.clone(),
        );
    }

    fn register_stacks(&mut self) {
        let r = &mut self.registry;
        r.register(
            "stack_ready",
            "1 while the stack's Ready condition is True, else 0 (invalid spec and unreachable engine included)",
            self.stack_ready.clone(),
        );
        r.register(
            "stack_condition",
            "1 for each condition of the stack, labelled with its current status and reason; a replaced one is removed",
            self.stack_condition.clone(),
        );
        r.register(
            "stack_healthy_services",
            "Services of the stack that are healthy",
            self.healthy_services.clone(),
        );
        r.register(
            "service_healthy",
            "1 while the service runs and passes its health check (or has none), else 0",
            self.service_healthy.clone(),
        );
    }

    fn register_backups(&mut self) {
        let r = &mut self.registry;
        r.register(
            "backup_jobs",
            "Backups, restore tests and restores that ended, by target, job and result (Succeeded or the BackupFailed reason)",
            self.backup_jobs.clone(),
        );
        r.register(
            "backup_last_success_timestamp_seconds",
            "Unix time the newest successful backup of a target finished; alert on time() minus this",
            self.backup_last_success.clone(),
        );
        r.register_with_unit(
            "backup_last_size",
            "Stored (compressed) size of the newest successful backup of a target",
            Unit::Bytes,
            self.backup_last_size.clone(),
        );
    }

    /// This process became (true) or stopped being (false) the one that acts.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// One reconcile pass of `stack` ("namespace/name") took `took`; `error` is a stable label
    /// such as "store" or "cleanup" (see `reconcile::Error::metric_label`), None on success.
    pub fn reconciled(&self, stack: &str, took: Duration, error: Option<&'static str>) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        let labels = StackLabels::of(stack);
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            series.errors.insert(error);
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    stack: labels,
                    error,
                })
                .inc();
        }
    }

    /// A probe ran: kind is "http"|"tcp"|"postgres"|"redis"|"exec"; ok or failed; its latency.
    pub fn probed(&self, stack: &str, service: &str, kind: &'static str, ok: bool, took: Duration) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        series.probes.insert((service.to_owned(), kind));
        let result = if ok { PROBE_SUCCESS } else { PROBE_FAILURE };
        let service = service_labels(stack, service);
        self.probes
            .get_or_create(&ProbeLabels {
                service: service.clone(),
                kind,
                result,
            })
            .inc();
        self.probe_duration
            .get_or_create(&ProbeKindLabels { service, kind })
            .observe(took.as_secs_f64());
    }

    /// The operator restarted a service; reason is
    /// "Crashed"|"OOMKilled"|"ProbeFailed"|"Scheduled"|"Dependency".
    pub fn restarted(&self, stack: &str, service: &str, reason: &'static str) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        series.restarts.insert((service.to_owned(), reason));
        self.restarts
            .get_or_create(&RestartLabels {
                service: service_labels(stack, service),
                reason,
            })
            .inc();
    }

    /// A service that had failed is healthy again, `after` from the fault being seen.
    pub fn recovered(&self, stack: &str, service: &str, after: Duration) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        series.recovered.insert(service.to_owned());
        self.time_to_recover
            .get_or_create(&service_labels(stack, service))
            .observe(after.as_secs_f64());
    }

    /// What a pass concluded about `stack`: its readiness, its conditions and the health of
    /// each service, from the status the pass computed (conditions merged), written or not.
    /// Call it at the end of every pass, whatever its outcome (see the module doc).
    pub fn stack_observed(&self, stack: &str, status: &ServiceStackStatus) {
        let is = |type_, value| {
            condition::find(&status.conditions, type_).is_some_and(|c| c.status == value)
        };
        let ready = is(ConditionType::Ready, ConditionStatus::True);
        // Without the engine, the status's services are an older pass's view of them.
        let engine_seen = !is(ConditionType::DockerUnreachable, ConditionStatus::True);
        let labels = StackLabels::of(stack);
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        self.stack_ready
            .get_or_create(&labels)
            .set(i64::from(ready));
        self.observe_conditions(&labels, series, &status.conditions);
        let healthy = self.observe_services(&labels, series, &status.services, engine_seen);
        self.healthy_services.get_or_create(&labels).set(healthy);
    }

    /// Sets the one series of each condition type to its current status and reason, removing
    /// the series of a status or reason that no longer holds and of a type that is gone.
    fn observe_conditions(
        &self,
        stack: &StackLabels,
        series: &mut StackSeries,
        conditions: &[Condition],
    ) {
        let current: BTreeMap<ConditionType, ConditionLabels> = conditions
            .iter()
            .map(|c| {
                let labels = ConditionLabels {
                    stack: stack.clone(),
                    r#type: c.type_.to_string(),
                    status: c.status.to_string(),
                    reason: c.reason.to_string(),
                };
                (c.type_, labels)
            })
            .collect();
        for (type_, old) in &series.conditions {
            if current.get(type_) != Some(old) {
                self.stack_condition.remove(old);
            }
        }
        for labels in current.values() {
            self.stack_condition.get_or_create(labels).set(1);
        }
        series.conditions = current;
    }

    /// Sets each service's health gauge and removes those of services no longer in the
    /// status; returns how many are healthy.
    fn observe_services(
        &self,
        stack: &StackLabels,
        series: &mut StackSeries,
        services: &BTreeMap<String, ServiceStatus>,
        engine_seen: bool,
    ) -> i64 {
        let labels = |service: &str| ServiceLabels {
            stack: stack.clone(),
            service: service.to_owned(),
        };
        for gone in series
            .services
            .iter()
            .filter(|s| !services.contains_key(*s))
        {
            self.service_healthy.remove(&labels(gone));
        }
        let mut healthy = 0;
        for (service, status) in services {
            let up = engine_seen && is_healthy(status);
            healthy += i64::from(up);
            self.service_healthy
                .get_or_create(&labels(service))
                .set(i64::from(up));
        }
        series.services = services.keys().cloned().collect();
        healthy
    }

    /// The status of `stack` was written (the API server or the local store accepted it).
    pub fn status_written(&self, stack: &str) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned()).or_default();
        self.status_writes
            .get_or_create(&StackLabels::of(stack))
            .inc();
    }

    /// An event about `stack` was recorded; `reason` is its CamelCase reason, one of a set
    /// chosen by the operator's code (never a message).
    pub fn event_recorded(
        &self,
        stack: &str,
        type_: EventType,
        reason: &(impl std::fmt::Display + ?Sized),
    ) {
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let reason = reason.to_string();
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        series.events.insert((type_, reason.clone()));
        self.events
            .get_or_create(&EventLabels {
                stack: StackLabels::of(stack),
                r#type: type_,
                reason,
            })
            .inc();
    }

    /// A backup job of `target` ended: `failure` is its BackupFailed reason, None on success.
    pub fn backup_job_ended(
        &self,
        stack: &str,
        target: &str,
        job: &'static str,
        failure: Option<&str>,
    ) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        let result = failure.unwrap_or(JOB_SUCCEEDED).to_owned();
        series
            .backup_jobs
            .insert((target.to_owned(), job, result.clone()));
        self.backup_jobs
            .get_or_create(&BackupJobLabels {
                stack: StackLabels::of(stack),
                target: target.to_owned(),
                job,
                result,
            })
            .inc();
    }

    /// The newest successful backup of `target`, as status records it (so the gauges are right
    /// again after an operator restart).
    pub fn backup_last_success(&self, stack: &str, target: &str, finished_unix: i64, size: u64) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        series.backup_targets.insert(target.to_owned());
        let labels = TargetLabels {
            stack: StackLabels::of(stack),
            target: target.to_owned(),
        };
        self.backup_last_success
            .get_or_create(&labels)
            .set(finished_unix);
        self.backup_last_size
            .get_or_create(&labels)
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    /// Drops every series of `stack` (call it once the stack is deleted): its gauges would
    /// otherwise report a stack that is gone, and its series would pile up.
    pub fn forget_stack(&self, stack: &str) {
        let mut seen = self.seen();
        let Some(series) = seen.remove(stack) else {
            return;
        };
        let labels = StackLabels::of(stack);
        self.rollout.forget(&labels, &series);
        self.reconcile_duration.remove(&labels);
        self.stack_ready.remove(&labels);
        self.healthy_services.remove(&labels);
        self.status_writes.remove(&labels);
        for condition in series.conditions.values() {
            self.stack_condition.remove(condition);
        }
        for error in series.errors {
            let stack = labels.clone();
            self.reconcile_errors.remove(&ErrorLabels { stack, error });
        }
        for (type_, reason) in series.events {
            let stack = labels.clone();
            self.events.remove(&EventLabels {
                stack,
                r#type: type_,
                reason,
            });
        }
        self.forget_services(&labels, series.probes, series.restarts, series.recovered);
        for service in series.services {
            self.service_healthy.remove(&ServiceLabels {
                stack: labels.clone(),
                service,
            });
        }
        for (target, job, result) in series.backup_jobs {
            let stack = labels.clone();
            self.backup_jobs.remove(&BackupJobLabels {
                stack,
                target,
                job,
                result,
            });
        }
        for target in series.backup_targets {
            let stack = labels.clone();
            let labels = TargetLabels { stack, target };
            self.backup_last_success.remove(&labels);
            self.backup_last_size.remove(&labels);
        }
    }

    fn forget_services(
        &self,
        stack: &StackLabels,
        probes: HashSet<(String, &'static str)>,
        restarts: HashSet<(String, &'static str)>,
        recovered: HashSet<String>,
    ) {
        let labels = |service: String| ServiceLabels {
            stack: stack.clone(),
            service,
        };
        for (service, kind) in probes {
            let service = labels(service);
            for result in [PROBE_SUCCESS, PROBE_FAILURE] {
                let service = service.clone();
                self.probes.remove(&ProbeLabels {
                    service,
                    kind,
                    result,
                });
            }
            self.probe_duration
                .remove(&ProbeKindLabels { service, kind });
        }
        for (service, reason) in restarts {
            let service = labels(service);
            self.restarts.remove(&RestartLabels { service, reason });
        }
        for service in recovered {
            self.time_to_recover.remove(&labels(service));
        }
    }

    /// Prometheus text exposition (format 0.0.4, served as [`METRICS_CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and no metric here fails to encode.
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, StackSeries>> {
        // The map holds only label sets: a panic elsewhere leaves it usable.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn service_labels(stack: &str, service: &str) -> ServiceLabels {
    service_labels_of(&StackLabels::of(stack), service)
}

fn service_labels_of(stack: &StackLabels, service: &str) -> ServiceLabels {
    ServiceLabels {
        stack: stack.clone(),
        service: service.to_owned(),
    }
}

/// Running, and passing its health check (the operator's probes, else Docker's healthcheck)
/// or having none. A check still starting is not healthy yet.
fn is_healthy(service: &ServiceStatus) -> bool {
    service.state == ContainerState::Running
        && matches!(service.health, None | Some(ContainerHealth::Healthy))
}
