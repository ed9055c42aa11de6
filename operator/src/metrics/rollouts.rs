//! The rollout series: how rollouts end, how long each step of a service's update takes, and
//! the values the analysis gate observed (what a dashboard puts beside the RolledBack
//! condition's message).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::labels::{GateLabels, RolloutLabels, StackLabels, StepLabels};
use super::{service_labels, Buckets, HistogramFamily, Metrics, StackSeries};

/// Rollouts and their steps: seconds (a step that passes at once) to the longest progress
/// deadline and analysis window one would set.
const ROLLOUT_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Label value of `gate` for the share of 5xx answers (0..1).
pub const GATE_ERROR_RATIO: &str = "error_ratio";
/// Label value of `gate` for the latency quantile, in seconds.
pub const GATE_LATENCY: &str = "latency_seconds";

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

pub(super) struct RolloutFamilies {
    rollouts: Family<RolloutLabels, Counter>,
    duration: HistogramFamily<RolloutLabels>,
    steps: HistogramFamily<StepLabels>,
    gates: Family<GateLabels, FloatGauge>,
}

impl RolloutFamilies {
    pub fn new() -> Self {
        Self {
            rollouts: Family::default(),
            duration: Family::new_with_constructor(Buckets(&ROLLOUT_BUCKETS)),
            steps: Family::new_with_constructor(Buckets(&ROLLOUT_BUCKETS)),
            gates: Family::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "rollouts",
            "Rollouts that ended, by outcome (Complete or RolledBack)",
            self.rollouts.clone(),
        );
        r.register_with_unit(
            "rollout_duration",
            "From a rollout's start to its end, by outcome",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "rollout_step_duration",
            "How long a step of one service's update took (Starting, Verifying, Analysing, Retiring)",
            Unit::Seconds,
            self.steps.clone(),
        );
        r.register(
            "rollout_gate_value",
            "The value the analysis gate last observed for a service's new container (error_ratio 0..1, latency_seconds)",
            self.gates.clone(),
        );
    }

    /// Drops a deleted stack's series.
    pub fn forget(&self, stack: &StackLabels, series: &StackSeries) {
        for outcome in &series.rollouts {
            let labels = RolloutLabels {
                stack: stack.clone(),
                outcome,
            };
            self.rollouts.remove(&labels);
            self.duration.remove(&labels);
        }
        for (service, step) in &series.rollout_steps {
            let service = super::service_labels_of(stack, service);
            self.steps.remove(&StepLabels { service, step });
        }
        for (service, gate) in &series.gates {
            let service = super::service_labels_of(stack, service);
            self.gates.remove(&GateLabels { service, gate });
        }
    }
}

impl Metrics {
    /// A rollout of `stack` ended: `outcome` is "Complete" or "RolledBack".
    pub fn rollout_ended(&self, stack: &str, outcome: &'static str, took: std::time::Duration) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned())
            .or_default()
            .rollouts
            .insert(outcome);
        let labels = RolloutLabels {
            stack: StackLabels::of(stack),
            outcome,
        };
        self.rollout.rollouts.get_or_create(&labels).inc();
        self.rollout
            .duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One step of `service`'s update ended after `took`.
    pub fn rollout_step_ended(
        &self,
        stack: &str,
        service: &str,
        step: &'static str,
        took: std::time::Duration,
    ) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned())
            .or_default()
            .rollout_steps
            .insert((service.to_owned(), step));
        let labels = StepLabels {
            service: service_labels(stack, service),
            step,
        };
        self.rollout
            .steps
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The analysis gate observed `value` for `service` (`gate`: [`GATE_ERROR_RATIO`] or
    /// [`GATE_LATENCY`]).
    pub fn rollout_gate_observed(
        &self,
        stack: &str,
        service: &str,
        gate: &'static str,
        value: f64,
    ) {
        let mut seen = self.seen();
        seen.entry(stack.to_owned())
            .or_default()
            .gates
            .insert((service.to_owned(), gate));
        let labels = GateLabels {
            service: service_labels(stack, service),
            gate,
        };
        self.rollout.gates.get_or_create(&labels).set(value);
    }
}
