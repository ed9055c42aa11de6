use std::collections::BTreeSet;

use chrono::DateTime;
use prometheus_parse::{HistogramCount, Sample, Scrape, Value};

use super::labels::StackLabels;
use super::*;
use crate::api::condition::Reason;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A scrape, parsed back from the text the operator serves.
struct Scraped {
    text: String,
    scrape: Scrape,
}

fn scrape(m: &Metrics) -> Scraped {
    let text = m.render();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    Scraped { text, scrape }
}

impl Scraped {
    fn samples<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.scrape
            .samples
            .iter()
            .filter(move |s| s.metric == metric)
    }

    /// The sample of `metric` whose labels are exactly `labels`.
    fn sample(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.scrape.samples.iter().find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of a counter, gauge or untyped (`_sum`, `_count`) sample.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match &self.sample(metric, labels)?.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            other => panic!("{metric} is not a single number: {other:?}"),
        }
    }

    #[track_caller]
    fn assert(&self, metric: &str, labels: &[(&str, &str)], expected: f64) {
        let text = &self.text;
        assert_eq!(
            self.value(metric, labels),
            Some(expected),
            "{metric}{labels:?} in\n{text}"
        );
    }

    /// The cumulative count of the histogram bucket `le`.
    #[track_caller]
    fn bucket(&self, metric: &str, labels: &[(&str, &str)], le: f64) -> f64 {
        let Some(Sample {
            value: Value::Histogram(buckets),
            ..
        }) = self.sample(metric, labels)
        else {
            panic!("no histogram {metric}{labels:?} in\n{}", self.text);
        };
        buckets
            .iter()
            .find(|HistogramCount { less_than, .. }| *less_than == le)
            .unwrap_or_else(|| panic!("no bucket {le} in {buckets:?}"))
            .count
    }
}

const ERNI: [(&str, &str); 2] = [("namespace", "ops"), ("name", "erni")];

fn erni<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    ERNI.iter().chain(more).copied().collect()
}

fn condition(type_: ConditionType, status: ConditionStatus, reason: Reason) -> Condition {
    Condition {
        type_,
        status,
        reason,
        message: "what a person reads".to_owned(),
        last_transition_time: DateTime::UNIX_EPOCH,
        observed_generation: Some(1),
    }
}

fn service(state: ContainerState, health: Option<ContainerHealth>) -> ServiceStatus {
    ServiceStatus {
        state,
        health,
        ..Default::default()
    }
}

fn running_healthy() -> ServiceStatus {
    service(ContainerState::Running, Some(ContainerHealth::Healthy))
}

fn status(conditions: Vec<Condition>, services: &[(&str, ServiceStatus)]) -> ServiceStackStatus {
    ServiceStackStatus {
        conditions,
        services: services
            .iter()
            .map(|(name, s)| ((*name).to_owned(), s.clone()))
            .collect(),
        ..Default::default()
    }
}

fn ready(status_: ConditionStatus, reason: Reason) -> Condition {
    condition(ConditionType::Ready, status_, reason)
}

/// A stack whose spec went invalid after a pass that saw its backend healthy.
fn invalid_status() -> ServiceStackStatus {
    use ConditionStatus::*;
    status(
        vec![
            ready(False, Reason::MissingVariable),
            condition(ConditionType::Progressing, False, Reason::MissingVariable),
            condition(ConditionType::InvalidSpec, True, Reason::MissingVariable),
        ],
        &[("backend", running_healthy())],
    )
}

#[test]
fn a_stack_key_becomes_namespace_and_name_labels() {
    let of = |key| {
        let l = StackLabels::of(key);
        (l.namespace, l.name)
    };
    assert_eq!(of("ops/erni"), ("ops".into(), "erni".into()));
    assert_eq!(of("erni"), ("default".into(), "erni".into()));
    let m = Metrics::new();
    m.restarted("ops/erni", "backend", "Crashed");
    let s = scrape(&m);
    let labels = erni(&[("service", "backend"), ("reason", "Crashed")]);
    s.assert("stackwarden_restarts_total", &labels, 1.0);
    assert!(!s.text.contains("stack="), "{}", s.text);
}

#[test]
fn build_info_and_leader_are_there_from_the_start() {
    let m = Metrics::new();
    let s = scrape(&m);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    s.assert("stackwarden_build_info", &version, 1.0);
    s.assert("stackwarden_leader", &[], 0.0);
    assert_eq!(s.scrape.samples.len(), 2, "{}", s.text);
    m.set_leader(true);
    scrape(&m).assert("stackwarden_leader", &[], 1.0);
    m.set_leader(false);
    scrape(&m).assert("stackwarden_leader", &[], 0.0);
}

#[test]
fn every_family_is_declared_with_prefix_unit_and_type_once_used() {
    let m = Metrics::new();
    m.reconciled("ops/erni", ms(1), Some("store"));
    m.probed("ops/erni", "backend", "http", true, ms(1));
    m.restarted("ops/erni", "backend", "Crashed");
    m.recovered("ops/erni", "backend", ms(1));
    m.stack_observed("ops/erni", &invalid_status());
    m.status_written("ops/erni");
    m.event_recorded("ops/erni", EventType::Warning, "MissingVariable");
    m.backup_job_ended("ops/erni", "pg", "Backup", None);
    m.backup_last_success("ops/erni", "pg", 1_700_000_000, 42);
    m.rollout_ended("ops/erni", "Complete", ms(1));
    m.rollout_step_ended("ops/erni", "backend", "Starting", ms(1));
    m.rollout_gate_observed("ops/erni", "backend", GATE_LATENCY, 0.1);
    let text = m.render();
    let families = [
        ("stackwarden_build_info", "gauge"),
        ("stackwarden_leader", "gauge"),
        ("stackwarden_reconcile_duration_seconds", "histogram"),
        ("stackwarden_reconcile_errors_total", "counter"),
        ("stackwarden_probes_total", "counter"),
        ("stackwarden_probe_duration_seconds", "histogram"),
        ("stackwarden_restarts_total", "counter"),
        ("stackwarden_time_to_recover_seconds", "histogram"),
        ("stackwarden_status_writes_total", "counter"),
        ("stackwarden_events_total", "counter"),
        ("stackwarden_stack_ready", "gauge"),
        ("stackwarden_stack_condition", "gauge"),
        ("stackwarden_stack_healthy_services", "gauge"),
        ("stackwarden_service_healthy", "gauge"),
        ("stackwarden_backup_jobs_total", "counter"),
        ("stackwarden_backup_last_success_timestamp_seconds", "gauge"),
        ("stackwarden_backup_last_size_bytes", "gauge"),
        ("stackwarden_rollouts_total", "counter"),
        ("stackwarden_rollout_duration_seconds", "histogram"),
        ("stackwarden_rollout_step_duration_seconds", "histogram"),
        ("stackwarden_rollout_gate_value", "gauge"),
    ];
    for (name, kind) in families {
        let declared = format!("# TYPE {name} {kind}\n");
        assert!(text.contains(&declared), "missing `{declared}` in\n{text}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
    }
    assert_eq!(text.matches("# TYPE ").count(), families.len(), "{text}");
    assert!(!text.contains("_total_total"), "{text}");
}

#[test]
fn reconcile_durations_and_errors_by_label() {
    let m = Metrics::new();
    m.reconciled("ops/erni", ms(30), None);
    m.reconciled("ops/erni", ms(200), Some("store"));
    m.reconciled("ops/erni", ms(3), Some("store"));
    m.reconciled("ops/erni", ms(3), Some("cleanup"));
    let s = scrape(&m);
    let h = "stackwarden_reconcile_duration_seconds";
    s.assert(&format!("{h}_count"), &ERNI, 4.0);
    let sum = s.value(&format!("{h}_sum"), &ERNI).unwrap();
    assert!((sum - 0.236).abs() < 1e-9, "{sum}");
    for (le, n) in [(0.005, 2.0), (0.025, 2.0), (0.05, 3.0), (0.25, 4.0)] {
        assert_eq!(s.bucket(h, &ERNI, le), n, "le {le}");
    }
    assert_eq!(s.bucket(h, &ERNI, f64::INFINITY), 4.0);
    let e = "stackwarden_reconcile_errors_total";
    s.assert(e, &erni(&[("error", "store")]), 2.0);
    s.assert(e, &erni(&[("error", "cleanup")]), 1.0);
    // A successful pass creates no error series.
    assert_eq!(s.samples(e).count(), 2, "{}", s.text);
}

#[test]
fn probe_results_are_counted_by_kind_and_result_with_latency() {
    let m = Metrics::new();
    m.probed("ops/erni", "backend", "http", true, ms(4));
    m.probed("ops/erni", "backend", "http", true, ms(6));
    m.probed("ops/erni", "backend", "http", false, ms(2000));
    m.probed("ops/erni", "postgres", "postgres", true, ms(1));
    let s = scrape(&m);
    let c = "stackwarden_probes_total";
    let backend = erni(&[("service", "backend"), ("kind", "http")]);
    let postgres = erni(&[("service", "postgres"), ("kind", "postgres")]);
    let with = |l: &[(&'static str, &'static str)], result| {
        let mut l = l.to_vec();
        l.push(("result", result));
        l
    };
    s.assert(c, &with(&backend, "success"), 2.0);
    s.assert(c, &with(&backend, "failure"), 1.0);
    s.assert(c, &with(&postgres, "success"), 1.0);
    // Postgres never failed: no series for it.
    assert_eq!(s.value(c, &with(&postgres, "failure")), None);
    let h = "stackwarden_probe_duration_seconds";
    s.assert(&format!("{h}_count"), &backend, 3.0);
    for (le, n) in [
        (0.0025, 0.0),
        (0.005, 1.0),
        (0.01, 2.0),
        (1.0, 2.0),
        (2.5, 3.0),
    ] {
        assert_eq!(s.bucket(h, &backend, le), n, "le {le}");
    }
    assert_eq!(s.bucket(h, &postgres, 0.001), 1.0);
}

#[test]
fn restarts_by_reason() {
    let m = Metrics::new();
    m.restarted("ops/erni", "backend", "Crashed");
    m.restarted("ops/erni", "backend", "Crashed");
    m.restarted("ops/erni", "backend", "OOMKilled");
    m.restarted("ops/erni", "backend", "Scheduled");
    m.restarted("ops/other", "redis", "ProbeFailed");
    let s = scrape(&m);
    let c = "stackwarden_restarts_total";
    let backend = |reason| erni(&[("service", "backend"), ("reason", reason)]);
    s.assert(c, &backend("Crashed"), 2.0);
    s.assert(c, &backend("OOMKilled"), 1.0);
    s.assert(c, &backend("Scheduled"), 1.0);
    let redis = [
        ("namespace", "ops"),
        ("name", "other"),
        ("service", "redis"),
        ("reason", "ProbeFailed"),
    ];
    s.assert(c, &redis, 1.0);
    assert_eq!(s.samples(c).count(), 4, "{}", s.text);
}

#[test]
fn time_to_recover_buckets_span_a_tenth_of_a_second_to_ten_minutes() {
    let m = Metrics::new();
    m.recovered("ops/erni", "backend", ms(50));
    m.recovered("ops/erni", "backend", ms(3_500));
    m.recovered("ops/erni", "backend", Duration::from_secs(500));
    m.recovered("ops/erni", "backend", Duration::from_secs(3_600));
    let s = scrape(&m);
    let h = "stackwarden_time_to_recover_seconds";
    let l = erni(&[("service", "backend")]);
    for (le, n) in [
        (0.1, 1.0),
        (3.0, 1.0),
        (4.0, 2.0),
        (300.0, 2.0),
        (600.0, 3.0),
        (f64::INFINITY, 4.0),
    ] {
        assert_eq!(s.bucket(h, &l, le), n, "le {le}");
    }
    s.assert(&format!("{h}_count"), &l, 4.0);
    // 16 bounds plus +Inf.
    let Value::Histogram(buckets) = &s.sample(h, &l).unwrap().value else {
        unreachable!()
    };
    assert_eq!(buckets.len(), 17, "{}", s.text);
}

#[test]
fn a_stack_with_an_invalid_spec_has_its_series_with_ready_0() {
    let m = Metrics::new();
    // Never valid: no service was ever seen.
    let mut never = invalid_status();
    never.services.clear();
    m.stack_observed("ops/never", &never);
    m.stack_observed("ops/erni", &invalid_status());
    let s = scrape(&m);
    let never = [("namespace", "ops"), ("name", "never")];
    s.assert("stackwarden_stack_ready", &never, 0.0);
    s.assert("stackwarden_stack_healthy_services", &never, 0.0);
    s.assert("stackwarden_stack_ready", &ERNI, 0.0);
    let c = "stackwarden_stack_condition";
    let cond =
        |type_, status, reason| erni(&[("type", type_), ("status", status), ("reason", reason)]);
    s.assert(c, &cond("InvalidSpec", "True", "MissingVariable"), 1.0);
    s.assert(c, &cond("Ready", "False", "MissingVariable"), 1.0);
    s.assert(c, &cond("Progressing", "False", "MissingVariable"), 1.0);
    // The running services were left alone: their last observed health stands.
    s.assert(
        "stackwarden_service_healthy",
        &erni(&[("service", "backend")]),
        1.0,
    );
    s.assert("stackwarden_stack_healthy_services", &ERNI, 1.0);
}

#[test]
fn an_unreachable_engine_makes_the_stack_and_every_service_0() {
    use ConditionStatus::*;
    let m = Metrics::new();
    let services = [("backend", running_healthy()), ("redis", running_healthy())];
    let fine = status(vec![ready(True, Reason::AllServicesReady)], &services);
    m.stack_observed("ops/erni", &fine);
    let s = scrape(&m);
    s.assert("stackwarden_stack_ready", &ERNI, 1.0);
    s.assert("stackwarden_stack_healthy_services", &ERNI, 2.0);
    // The status keeps the last pass's services; nothing can be seen healthy now.
    let unreachable = status(
        vec![
            ready(Unknown, Reason::EngineUnreachable),
            condition(
                ConditionType::DockerUnreachable,
                True,
                Reason::EngineUnreachable,
            ),
        ],
        &services,
    );
    m.stack_observed("ops/erni", &unreachable);
    let s = scrape(&m);
    s.assert("stackwarden_stack_ready", &ERNI, 0.0);
    s.assert("stackwarden_stack_healthy_services", &ERNI, 0.0);
    for service in ["backend", "redis"] {
        s.assert(
            "stackwarden_service_healthy",
            &erni(&[("service", service)]),
            0.0,
        );
    }
    let c = "stackwarden_stack_condition";
    let labels = erni(&[
        ("type", "Ready"),
        ("status", "Unknown"),
        ("reason", "EngineUnreachable"),
    ]);
    s.assert(c, &labels, 1.0);
}

/// The condition series of `ops/erni` as (type, status, reason) = value.
fn conditions(s: &Scraped) -> Vec<(String, String, String, f64)> {
    let mut out: Vec<_> = s
        .samples("stackwarden_stack_condition")
        .filter(|x| x.labels.get("name") == Some("erni"))
        .map(|x| {
            let l = |k| x.labels.get(k).unwrap_or_default().to_owned();
            let Value::Gauge(v) = x.value else {
                panic!("{x:?}")
            };
            (l("type"), l("status"), l("reason"), v)
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn row(type_: &str, status: &str, reason: &str) -> (String, String, String, f64) {
    (type_.into(), status.into(), reason.into(), 1.0)
}

#[test]
fn a_condition_that_changes_replaces_its_series() {
    use ConditionStatus::*;
    let m = Metrics::new();
    let progressing = condition(ConditionType::Progressing, True, Reason::Applying);
    let pass = |ready_: Condition, more: Option<&Condition>| {
        let all = std::iter::once(ready_).chain(more.cloned()).collect();
        m.stack_observed("ops/erni", &status(all, &[]));
        conditions(&scrape(&m))
    };
    assert_eq!(
        pass(ready(False, Reason::ServicesNotReady), Some(&progressing)),
        vec![
            row("Progressing", "True", "Applying"),
            row("Ready", "False", "ServicesNotReady"),
        ]
    );
    // Same status, another reason: the old reason's series is gone, not left at 1 or 0.
    assert_eq!(
        pass(ready(False, Reason::ApplyFailed), Some(&progressing)),
        vec![
            row("Progressing", "True", "Applying"),
            row("Ready", "False", "ApplyFailed"),
        ]
    );
    // Another status; and a condition type no longer in the status loses its series.
    assert_eq!(
        pass(ready(True, Reason::AllServicesReady), None),
        vec![row("Ready", "True", "AllServicesReady")]
    );
    // An unchanged condition keeps its one series.
    assert_eq!(
        pass(ready(True, Reason::AllServicesReady), None),
        vec![row("Ready", "True", "AllServicesReady")]
    );
}

#[test]
fn service_health_is_1_only_for_running_and_passing_or_unchecked() {
    use ContainerHealth::*;
    use ContainerState::*;
    let m = Metrics::new();
    let services = [
        ("healthy", running_healthy()),
        ("unchecked", service(Running, None)),
        ("starting", service(Running, Some(Starting))),
        ("unhealthy", service(Running, Some(Unhealthy))),
        ("exited", service(Exited, None)),
        ("missing", service(Missing, None)),
        ("restarting", service(Restarting, Some(Healthy))),
    ];
    let not_ready = || vec![ready(ConditionStatus::False, Reason::ServicesNotReady)];
    m.stack_observed("ops/erni", &status(not_ready(), &services));
    let s = scrape(&m);
    let g = "stackwarden_service_healthy";
    for (name, _) in &services {
        let expected = if ["healthy", "unchecked"].contains(name) {
            1.0
        } else {
            0.0
        };
        s.assert(g, &erni(&[("service", name)]), expected);
    }
    s.assert("stackwarden_stack_healthy_services", &ERNI, 2.0);
    // A service gone from the compose file loses its series.
    m.stack_observed("ops/erni", &status(not_ready(), &services[..2]));
    let s = scrape(&m);
    let left: BTreeSet<_> = s
        .samples(g)
        .map(|x| x.labels.get("service").unwrap().to_owned())
        .collect();
    assert_eq!(left, BTreeSet::from(["healthy".into(), "unchecked".into()]));
}

#[test]
fn status_writes_and_events_are_counted() {
    let m = Metrics::new();
    m.status_written("ops/erni");
    m.status_written("ops/erni");
    m.event_recorded("ops/erni", EventType::Warning, "Crashed");
    m.event_recorded("ops/erni", EventType::Warning, "Crashed");
    m.event_recorded("ops/erni", EventType::Normal, "BackupSucceeded");
    let s = scrape(&m);
    s.assert("stackwarden_status_writes_total", &ERNI, 2.0);
    let e = "stackwarden_events_total";
    s.assert(e, &erni(&[("type", "Warning"), ("reason", "Crashed")]), 2.0);
    let normal = erni(&[("type", "Normal"), ("reason", "BackupSucceeded")]);
    s.assert(e, &normal, 1.0);
    assert_eq!(s.samples(e).count(), 2, "{}", s.text);
}

#[test]
fn backup_jobs_by_result_and_the_newest_success_as_gauges() {
    let m = Metrics::new();
    m.backup_job_ended("ops/erni", "pg", "Backup", None);
    m.backup_job_ended("ops/erni", "pg", "Backup", None);
    m.backup_job_ended("ops/erni", "pg", "Verify", Some("ChecksumMismatch"));
    m.backup_last_success("ops/erni", "pg", 1_764_554_400, 140_442_407);
    let s = scrape(&m);
    let jobs = "stackwarden_backup_jobs_total";
    let job = |job, result| erni(&[("target", "pg"), ("job", job), ("result", result)]);
    s.assert(jobs, &job("Backup", "Succeeded"), 2.0);
    s.assert(jobs, &job("Verify", "ChecksumMismatch"), 1.0);
    let pg = erni(&[("target", "pg")]);
    let last = "stackwarden_backup_last_success_timestamp_seconds";
    s.assert(last, &pg, 1_764_554_400.0);
    s.assert("stackwarden_backup_last_size_bytes", &pg, 140_442_407.0);
}

#[test]
fn rollouts_are_counted_by_outcome_with_their_step_durations_and_gate_values() {
    let m = Metrics::new();
    m.rollout_step_ended("ops/erni", "backend", "Verifying", ms(4_000));
    m.rollout_step_ended("ops/erni", "backend", "Analysing", ms(30_000));
    m.rollout_gate_observed("ops/erni", "backend", GATE_ERROR_RATIO, 0.25);
    m.rollout_gate_observed("ops/erni", "backend", GATE_ERROR_RATIO, 0.5);
    m.rollout_ended("ops/erni", "RolledBack", ms(40_000));
    m.rollout_ended("ops/erni", "Complete", ms(20_000));
    m.rollout_ended("ops/erni", "Complete", ms(25_000));
    let s = scrape(&m);
    let c = "stackwarden_rollouts_total";
    s.assert(c, &erni(&[("outcome", "Complete")]), 2.0);
    s.assert(c, &erni(&[("outcome", "RolledBack")]), 1.0);
    let steps = "stackwarden_rollout_step_duration_seconds_sum";
    s.assert(
        steps,
        &erni(&[("service", "backend"), ("step", "Verifying")]),
        4.0,
    );
    s.assert(
        steps,
        &erni(&[("service", "backend"), ("step", "Analysing")]),
        30.0,
    );
    let d = "stackwarden_rollout_duration_seconds_sum";
    s.assert(d, &erni(&[("outcome", "Complete")]), 45.0);
    // A gauge: the value last observed.
    let g = "stackwarden_rollout_gate_value";
    s.assert(
        g,
        &erni(&[("service", "backend"), ("gate", "error_ratio")]),
        0.5,
    );
}

/// Every family a stack can have a series in.
const STACK_FAMILIES: [&str; 19] = [
    "stackwarden_reconcile_duration_seconds",
    "stackwarden_reconcile_errors_total",
    "stackwarden_probes_total",
    "stackwarden_probe_duration_seconds",
    "stackwarden_restarts_total",
    "stackwarden_time_to_recover_seconds",
    "stackwarden_stack_ready",
    "stackwarden_stack_condition",
    "stackwarden_stack_healthy_services",
    "stackwarden_service_healthy",
    "stackwarden_status_writes_total",
    "stackwarden_events_total",
    "stackwarden_backup_jobs_total",
    "stackwarden_backup_last_success_timestamp_seconds",
    "stackwarden_backup_last_size_bytes",
    "stackwarden_rollouts_total",
    "stackwarden_rollout_duration_seconds",
    "stackwarden_rollout_step_duration_seconds",
    "stackwarden_rollout_gate_value",
];

/// The samples of stack `name` in namespace ops, as `metric{labels}` lines, sorted.
fn of_stack(s: &Scraped, name: &str) -> Vec<String> {
    let mut out: Vec<_> = s
        .scrape
        .samples
        .iter()
        .filter(|x| x.labels.get("namespace") == Some("ops") && x.labels.get("name") == Some(name))
        .map(|x| format!("{}{{{}}} {:?}", x.metric, x.labels, x.value))
        .collect();
    out.sort();
    out
}

/// The family of a sample: a histogram's `_sum` and `_count` belong to the histogram.
fn family(metric: &str) -> &str {
    let histogram = metric.ends_with("_seconds_sum") || metric.ends_with("_seconds_count");
    match metric.rsplit_once('_') {
        Some((family, _)) if histogram => family,
        _ => metric,
    }
}

fn record_everything(m: &Metrics, stack: &str) {
    m.reconciled(stack, ms(10), Some("store"));
    m.probed(stack, "backend", "http", true, ms(3));
    m.probed(stack, "backend", "http", false, ms(3));
    m.probed(stack, "redis", "redis", true, ms(1));
    m.restarted(stack, "backend", "Crashed");
    m.recovered(stack, "backend", ms(900));
    m.stack_observed(stack, &invalid_status());
    m.status_written(stack);
    m.event_recorded(stack, EventType::Warning, "MissingVariable");
    m.backup_job_ended(stack, "pg", "Backup", None);
    m.backup_job_ended(stack, "pg", "Backup", Some("DiskFull"));
    m.backup_last_success(stack, "pg", 1_700_000_000, 42);
    m.rollout_step_ended(stack, "backend", "Verifying", ms(4_000));
    m.rollout_gate_observed(stack, "backend", GATE_ERROR_RATIO, 0.02);
    m.rollout_ended(stack, "RolledBack", ms(30_000));
}

#[test]
fn forget_stack_removes_all_its_series_and_only_its() {
    let m = Metrics::new();
    record_everything(&m, "ops/gone");
    record_everything(&m, "ops/kept");
    let before = scrape(&m);
    // The stack had a series in every family, so each removal below is tested.
    let families: BTreeSet<_> = before
        .scrape
        .samples
        .iter()
        .filter(|x| x.labels.get("name") == Some("gone"))
        .map(|x| family(&x.metric))
        .collect();
    assert_eq!(families, BTreeSet::from(STACK_FAMILIES), "{}", before.text);
    m.forget_stack("ops/gone");
    m.forget_stack("ops/never-seen");
    let after = scrape(&m);
    assert_eq!(of_stack(&after, "gone"), Vec::<String>::new());
    assert!(!after.text.contains(r#"name="gone""#), "{}", after.text);
    assert_eq!(of_stack(&after, "kept"), of_stack(&before, "kept"));
    // The process's own series stay.
    after.assert("stackwarden_leader", &[], 0.0);
    // Recording again after forgetting works and starts from zero.
    m.restarted("ops/gone", "backend", "Crashed");
    m.restarted("ops/kept", "backend", "Crashed");
    let s = scrape(&m);
    let c = "stackwarden_restarts_total";
    let labels = |name| {
        [
            ("namespace", "ops"),
            ("name", name),
            ("service", "backend"),
            ("reason", "Crashed"),
        ]
    };
    s.assert(c, &labels("gone"), 1.0);
    s.assert(c, &labels("kept"), 2.0);
}
