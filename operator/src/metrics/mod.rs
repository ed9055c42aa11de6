//! What the operator tells Prometheus: reconcile passes, probes, restarts, recoveries and the
//! readiness of each stack, plus the `/metrics`, `/healthz` and `/readyz` endpoints
//! ([`serve`]).
//!
//! Telemetry lives here and nowhere else, in the style of kube-rs's controller-rs example:
//! the reconcile loop, the prober and the healer call one method of [`Metrics`] each, and
//! errors show up as a stable label (`controller::Error::metric_label`), never as a message.
//!
//! Cardinality: series are labelled by stack (`namespace/name`) and service, which are user
//! data but few, and otherwise only by closed sets chosen by the operator's code (probe kind,
//! result, restart reason, error label). Nothing unbounded (messages, URLs, container ids)
//! becomes a label. [`Metrics::forget_stack`] drops every series of a deleted stack, so a
//! long-running operator does not keep (and alert on) stacks that are gone.
//!
//! Exposition is the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), which every
//! Prometheus-compatible scraper reads; counters end in `_total` and durations in `_seconds`.
//! A family appears once it has a series (prometheus-client renders nothing for an empty one).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `stackwarden_reconcile_duration_seconds` | histogram | stack |
//! | `stackwarden_reconcile_errors_total` | counter | stack, error |
//! | `stackwarden_probes_total` | counter | stack, service, kind, result (`success`/`failure`) |
//! | `stackwarden_probe_duration_seconds` | histogram | stack, service, kind |
//! | `stackwarden_restarts_total` | counter | stack, service, reason |
//! | `stackwarden_time_to_recover_seconds` | histogram (0.1 s .. 600 s) | stack, service |
//! | `stackwarden_stack_ready` | gauge (1/0) | stack |
//! | `stackwarden_stack_healthy_services` | gauge | stack |

mod server;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StackLabels {
    pub stack: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub stack: String,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub stack: String,
    pub service: String,
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeKindLabels {
    pub stack: String,
    pub service: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub stack: String,
    pub service: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub stack: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupJobLabels {
    pub stack: String,
    pub target: String,
    /// Backup, Verify or Restore.
    pub job: &'static str,
    /// Succeeded, or the failure's BackupFailed reason (DumpFailed, DiskFull, ...).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub stack: String,
    pub target: String,
}

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

/// The label sets a stack has used, so that [`Metrics::forget_stack`] can remove them
/// (a [`Family`] cannot be filtered).
#[derive(Debug, Default)]
struct StackSeries {
    errors: HashSet<&'static str>,
    probes: HashSet<(String, &'static str)>,
    restarts: HashSet<(String, &'static str)>,
    recovered: HashSet<String>,
    backup_jobs: HashSet<(String, &'static str, String)>,
    backup_targets: HashSet<String>,
}

/// The operator's metrics. Share it as `Arc<Metrics>`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    reconcile_duration: HistogramFamily<StackLabels>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    probe_duration: HistogramFamily<ProbeKindLabels>,
    restarts: Family<RestartLabels, Counter>,
    time_to_recover: HistogramFamily<ServiceLabels>,
    stack_ready: Family<StackLabels, Gauge>,
    healthy_services: Family<StackLabels, Gauge>,
    backup_jobs: Family<BackupJobLabels, Counter>,
    backup_last_success: Family<TargetLabels, Gauge>,
    backup_last_size: Family<TargetLabels, Gauge>,
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
        let mut registry = Registry::with_prefix(PREFIX);
        let reconcile_duration = Family::new_with_constructor(Buckets(&RECONCILE_BUCKETS));
        let reconcile_errors = Family::default();
        let probes = Family::default();
        let probe_duration = Family::new_with_constructor(Buckets(&PROBE_BUCKETS));
        let restarts = Family::default();
        let time_to_recover = Family::new_with_constructor(Buckets(&RECOVERY_BUCKETS));
        let stack_ready = Family::default();
        let healthy_services = Family::default();
        let backup_jobs = Family::default();
        let backup_last_success = Family::default();
        let backup_last_size = Family::default();

        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile pass of a stack",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed, by error",
            reconcile_errors.clone(),
        );
        registry.register(
            "probes",
            "Probes run, by kind and result (success or failure)",
            probes.clone(),
        );
        registry.register_with_unit(
            "probe_duration",
            "Latency of a probe, failed ones included",
            Unit::Seconds,
            probe_duration.clone(),
        );
        registry.register(
            "restarts",
            "Services restarted by the operator, by reason",
            restarts.clone(),
        );
        registry.register_with_unit(
            "time_to_recover",
            "From a service's fault being seen to the service being healthy again",
            Unit::Seconds,
            time_to_recover.clone(),
        );
        registry.register(
            "stack_ready",
            "1 while the stack's Ready condition is True, else 0",
            stack_ready.clone(),
        );
        registry.register(
            "stack_healthy_services",
            "Services of the stack that are healthy",
            healthy_services.clone(),
        );

        registry.register(
            "backup_jobs",
            "Backups, restore tests and restores that ended, by target, job and result (Succeeded or the BackupFailed reason)",
            backup_jobs.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time the newest successful backup of a target finished; alert on time() minus this",
            backup_last_success.clone(),
        );
        registry.register_with_unit(
            "backup_last_size",
            "Stored (compressed) size of the newest successful backup of a target",
            Unit::Bytes,
            backup_last_size.clone(),
        );

        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            probes,
            probe_duration,
            restarts,
            time_to_recover,
            stack_ready,
            healthy_services,
            backup_jobs,
            backup_last_success,
            backup_last_size,
            seen: Mutex::default(),
        }
    }

    /// One reconcile pass of `stack` ("namespace/name") took `took`; `error` is a stable label
    /// such as "store" or "cleanup" (see `controller::Error::metric_label`), None on success.
    pub fn reconciled(&self, stack: &str, took: Duration, error: Option<&'static str>) {
        let mut seen = self.seen();
        let series = seen.entry(stack.to_owned()).or_default();
        let labels = StackLabels {
            stack: stack.to_owned(),
        };
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            series.errors.insert(error);
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    stack: labels.stack,
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
        self.probes
            .get_or_create(&ProbeLabels {
                stack: stack.to_owned(),
                service: service.to_owned(),
                kind,
                result,
            })
            .inc();
        self.probe_duration
            .get_or_create(&ProbeKindLabels {
                stack: stack.to_owned(),
                service: service.to_owned(),
                kind,
            })
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
                stack: stack.to_owned(),
                service: service.to_owned(),
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
            .get_or_create(&ServiceLabels {
                stack: stack.to_owned(),
                service: service.to_owned(),
            })
            .observe(after.as_secs_f64());
    }

    /// The stack's Ready condition (1/0) and how many of its services are healthy, as gauges.
    pub fn stack_state(&self, stack: &str, ready: bool, healthy_services: i64) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned()).or_default();
        let labels = StackLabels {
            stack: stack.to_owned(),
        };
        self.stack_ready
            .get_or_create(&labels)
            .set(i64::from(ready));
        self.healthy_services
            .get_or_create(&labels)
            .set(healthy_services);
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
                stack: stack.to_owned(),
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
            stack: stack.to_owned(),
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
        let labels = StackLabels {
            stack: stack.to_owned(),
        };
        self.reconcile_duration.remove(&labels);
        self.stack_ready.remove(&labels);
        self.healthy_services.remove(&labels);
        for error in series.errors {
            self.reconcile_errors.remove(&ErrorLabels {
                stack: stack.to_owned(),
                error,
            });
        }
        for (service, kind) in series.probes {
            for result in [PROBE_SUCCESS, PROBE_FAILURE] {
                self.probes.remove(&ProbeLabels {
                    stack: stack.to_owned(),
                    service: service.clone(),
                    kind,
                    result,
                });
            }
            self.probe_duration.remove(&ProbeKindLabels {
                stack: stack.to_owned(),
                service,
                kind,
            });
        }
        for (service, reason) in series.restarts {
            self.restarts.remove(&RestartLabels {
                stack: stack.to_owned(),
                service,
                reason,
            });
        }
        for (target, job, result) in series.backup_jobs {
            self.backup_jobs.remove(&BackupJobLabels {
                stack: stack.to_owned(),
                target,
                job,
                result,
            });
        }
        for target in series.backup_targets {
            let labels = TargetLabels {
                stack: stack.to_owned(),
                target,
            };
            self.backup_last_success.remove(&labels);
            self.backup_last_size.remove(&labels);
        }
        for service in series.recovered {
            self.time_to_recover.remove(&ServiceLabels {
                stack: stack.to_owned(),
                service,
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The value of the sample whose name and labels are exactly `series`, if rendered.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().expect("a number"))
    }

    #[track_caller]
    fn assert_sample(text: &str, series: &str, expected: f64) {
        assert_eq!(value(text, series), Some(expected), "{series} in\n{text}");
    }

    #[test]
    fn every_family_is_declared_with_prefix_unit_and_type_once_used() {
        let m = Metrics::new();
        // prometheus-client renders nothing for a family without series.
        assert_eq!(m.render(), "");
        m.reconciled("ops/erni", ms(1), Some("store"));
        m.probed("ops/erni", "backend", "http", true, ms(1));
        m.restarted("ops/erni", "backend", "Crashed");
        m.recovered("ops/erni", "backend", ms(1));
        m.stack_state("ops/erni", true, 1);
        let text = m.render();
        for (name, kind) in [
            ("stackwarden_reconcile_duration_seconds", "histogram"),
            ("stackwarden_reconcile_errors_total", "counter"),
            ("stackwarden_probes_total", "counter"),
            ("stackwarden_probe_duration_seconds", "histogram"),
            ("stackwarden_restarts_total", "counter"),
            ("stackwarden_time_to_recover_seconds", "histogram"),
            ("stackwarden_stack_ready", "gauge"),
            ("stackwarden_stack_healthy_services", "gauge"),
        ] {
            let declared = format!("# TYPE {name} {kind}\n");
            assert!(text.contains(&declared), "missing `{declared}` in\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        }
        assert_eq!(text.matches("# TYPE ").count(), 8, "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn reconcile_durations_and_errors_by_label() {
        let m = Metrics::new();
        m.reconciled("ops/erni", ms(30), None);
        m.reconciled("ops/erni", ms(200), Some("store"));
        m.reconciled("ops/erni", ms(3), Some("store"));
        m.reconciled("ops/erni", ms(3), Some("cleanup"));
        let text = m.render();
        let h = "stackwarden_reconcile_duration_seconds";
        assert_sample(&text, &format!(r#"{h}_count{{stack="ops/erni"}}"#), 4.0);
        let sum = value(&text, &format!(r#"{h}_sum{{stack="ops/erni"}}"#)).unwrap();
        assert!((sum - 0.236).abs() < 1e-9, "{sum}");
        for (le, n) in [("0.005", 2.0), ("0.025", 2.0), ("0.05", 3.0), ("0.25", 4.0)] {
            assert_sample(
                &text,
                &format!(r#"{h}_bucket{{stack="ops/erni",le="{le}"}}"#),
                n,
            );
        }
        assert_sample(
            &text,
            &format!(r#"{h}_bucket{{stack="ops/erni",le="+Inf"}}"#),
            4.0,
        );
        let e = "stackwarden_reconcile_errors_total";
        assert_sample(
            &text,
            &format!(r#"{e}{{stack="ops/erni",error="store"}}"#),
            2.0,
        );
        assert_sample(
            &text,
            &format!(r#"{e}{{stack="ops/erni",error="cleanup"}}"#),
            1.0,
        );
        // A successful pass creates no error series.
        assert_eq!(text.matches(&format!("{e}{{")).count(), 2, "{text}");
    }

    #[test]
    fn probe_results_are_counted_by_kind_and_result_with_latency() {
        let m = Metrics::new();
        m.probed("ops/erni", "backend", "http", true, ms(4));
        m.probed("ops/erni", "backend", "http", true, ms(6));
        m.probed("ops/erni", "backend", "http", false, ms(2000));
        m.probed("ops/erni", "postgres", "postgres", true, ms(1));
        let text = m.render();
        let c = "stackwarden_probes_total";
        let backend = r#"stack="ops/erni",service="backend",kind="http""#;
        let postgres = r#"stack="ops/erni",service="postgres",kind="postgres""#;
        assert_sample(&text, &format!(r#"{c}{{{backend},result="success"}}"#), 2.0);
        assert_sample(&text, &format!(r#"{c}{{{backend},result="failure"}}"#), 1.0);
        assert_sample(
            &text,
            &format!(r#"{c}{{{postgres},result="success"}}"#),
            1.0,
        );
        // Postgres never failed: no series for it.
        assert_eq!(
            value(&text, &format!(r#"{c}{{{postgres},result="failure"}}"#)),
            None
        );
        let h = "stackwarden_probe_duration_seconds";
        assert_sample(&text, &format!("{h}_count{{{backend}}}"), 3.0);
        for (le, n) in [
            ("0.0025", 0.0),
            ("0.005", 1.0),
            ("0.01", 2.0),
            ("1", 2.0),
            ("2.5", 3.0),
        ] {
            assert_sample(&text, &format!(r#"{h}_bucket{{{backend},le="{le}"}}"#), n);
        }
        assert_sample(
            &text,
            &format!(r#"{h}_bucket{{{postgres},le="0.001"}}"#),
            1.0,
        );
    }

    #[test]
    fn restarts_by_reason() {
        let m = Metrics::new();
        m.restarted("ops/erni", "backend", "Crashed");
        m.restarted("ops/erni", "backend", "Crashed");
        m.restarted("ops/erni", "backend", "OOMKilled");
        m.restarted("ops/erni", "backend", "Scheduled");
        m.restarted("ops/other", "redis", "ProbeFailed");
        let text = m.render();
        let c = "stackwarden_restarts_total";
        let backend = r#"stack="ops/erni",service="backend""#;
        assert_sample(&text, &format!(r#"{c}{{{backend},reason="Crashed"}}"#), 2.0);
        assert_sample(
            &text,
            &format!(r#"{c}{{{backend},reason="OOMKilled"}}"#),
            1.0,
        );
        assert_sample(
            &text,
            &format!(r#"{c}{{{backend},reason="Scheduled"}}"#),
            1.0,
        );
        let redis = r#"stack="ops/other",service="redis",reason="ProbeFailed""#;
        assert_sample(&text, &format!("{c}{{{redis}}}"), 1.0);
        assert_eq!(text.matches(&format!("{c}{{")).count(), 4, "{text}");
    }

    #[test]
    fn time_to_recover_buckets_span_a_tenth_of_a_second_to_ten_minutes() {
        let m = Metrics::new();
        m.recovered("ops/erni", "backend", ms(50));
        m.recovered("ops/erni", "backend", ms(3_500));
        m.recovered("ops/erni", "backend", Duration::from_secs(500));
        m.recovered("ops/erni", "backend", Duration::from_secs(3_600));
        let text = m.render();
        let h = "stackwarden_time_to_recover_seconds";
        let l = r#"stack="ops/erni",service="backend""#;
        for (le, n) in [
            ("0.1", 1.0),
            ("3", 1.0),
            ("4", 2.0),
            ("300", 2.0),
            ("600", 3.0),
            ("+Inf", 4.0),
        ] {
            assert_sample(&text, &format!(r#"{h}_bucket{{{l},le="{le}"}}"#), n);
        }
        assert_sample(&text, &format!("{h}_count{{{l}}}"), 4.0);
        // 16 bounds plus +Inf.
        assert_eq!(text.matches(&format!("{h}_bucket{{")).count(), 17, "{text}");
    }

    #[test]
    fn stack_state_gauges_follow_the_last_report() {
        let m = Metrics::new();
        let ready = r#"stackwarden_stack_ready{stack="ops/erni"}"#;
        let healthy = r#"stackwarden_stack_healthy_services{stack="ops/erni"}"#;
        m.stack_state("ops/erni", true, 5);
        let text = m.render();
        assert_sample(&text, ready, 1.0);
        assert_sample(&text, healthy, 5.0);
        m.stack_state("ops/erni", false, 3);
        let text = m.render();
        assert_sample(&text, ready, 0.0);
        assert_sample(&text, healthy, 3.0);
    }

    #[test]
    fn backup_jobs_by_result_and_the_newest_success_as_gauges() {
        let m = Metrics::new();
        m.backup_job_ended("ops/erni", "pg", "Backup", None);
        m.backup_job_ended("ops/erni", "pg", "Backup", None);
        m.backup_job_ended("ops/erni", "pg", "Verify", Some("ChecksumMismatch"));
        m.backup_last_success("ops/erni", "pg", 1_764_554_400, 140_442_407);
        let text = m.render();
        let jobs = "stackwarden_backup_jobs_total";
        assert_sample(
            &text,
            &format!(r#"{jobs}{{stack="ops/erni",target="pg",job="Backup",result="Succeeded"}}"#),
            2.0,
        );
        assert_sample(
            &text,
            &format!(
                r#"{jobs}{{stack="ops/erni",target="pg",job="Verify",result="ChecksumMismatch"}}"#
            ),
            1.0,
        );
        assert_sample(
            &text,
            r#"stackwarden_backup_last_success_timestamp_seconds{stack="ops/erni",target="pg"}"#,
            1_764_554_400.0,
        );
        assert_sample(
            &text,
            r#"stackwarden_backup_last_size_bytes{stack="ops/erni",target="pg"}"#,
            140_442_407.0,
        );
    }

    #[test]
    fn forget_stack_removes_all_its_series_and_only_its() {
        let m = Metrics::new();
        for stack in ["ops/gone", "ops/kept"] {
            m.reconciled(stack, ms(10), Some("store"));
            m.probed(stack, "backend", "http", true, ms(3));
            m.probed(stack, "backend", "http", false, ms(3));
            m.probed(stack, "redis", "redis", true, ms(1));
            m.restarted(stack, "backend", "Crashed");
            m.recovered(stack, "backend", ms(900));
            m.stack_state(stack, false, 1);
            m.backup_job_ended(stack, "pg", "Backup", None);
            m.backup_job_ended(stack, "pg", "Backup", Some("DiskFull"));
            m.backup_last_success(stack, "pg", 1_700_000_000, 42);
        }
        let before = m.render();
        m.forget_stack("ops/gone");
        m.forget_stack("ops/never-seen");
        let text = m.render();
        assert!(!text.contains("ops/gone"), "{text}");
        let kept = |t: &str| {
            t.lines()
                .filter(|l| l.contains(r#"stack="ops/kept""#))
                .count()
        };
        // reconcile 12 + 3; error 1; probes 3 + 2 × (12 + 3); restart 1; recover 16 + 3; 2 gauges;
        // backup jobs 2; backup gauges 2.
        assert_eq!(kept(&text), 15 + 1 + 3 + 30 + 1 + 19 + 2 + 2 + 2, "{text}");
        assert_eq!(kept(&text), kept(&before));
        // Recording again after forgetting works and starts from zero.
        m.restarted("ops/gone", "backend", "Crashed");
        m.restarted("ops/kept", "backend", "Crashed");
        let text = m.render();
        let c = "stackwarden_restarts_total";
        let gone = r#"stack="ops/gone",service="backend",reason="Crashed""#;
        let kept = r#"stack="ops/kept",service="backend",reason="Crashed""#;
        assert_sample(&text, &format!("{c}{{{gone}}}"), 1.0);
        assert_sample(&text, &format!("{c}{{{kept}}}"), 2.0);
    }
}

// TEMPORARY until the metrics branch lands.
impl Metrics {
    pub fn status_written(&self, _stack: &str) {}
    pub fn set_leader(&self, _leader: bool) {}
    pub fn event_recorded(&self, _stack: &str, _type: crate::store::EventType, _reason: &str) {}
}
