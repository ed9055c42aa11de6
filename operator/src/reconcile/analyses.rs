//! The analysis gate's jobs: one per service of a rollout, in the job registry, each scraping
//! the new container's metrics over its window (`jobs::analysis::analyse`), and, for
//! `latency.maxIncrease`, one before it measuring the old container's latency
//! (`jobs::analysis::baseline_latency`). Results are kept here until the rollout step reads
//! them, and the stack is woken when one arrives. A job lost with a killed operator is started
//! again by the rollout (see `decide::rollout`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::api::rollout::AnalysisSpec;
use crate::decide::analysis::Verdict;
use crate::decide::rollout::{Analysis, Baseline};
use crate::jobs::{JobKey, Kind, Registry, Waker};

/// One analysis to run.
pub struct Request {
    pub stack: String,
    pub revision: u64,
    pub service: String,
    pub spec: AnalysisSpec,
    /// The metrics page of the container scraped.
    pub url: String,
    pub job: Job,
}

/// What a job measures.
#[derive(Clone, Copy, Debug)]
pub enum Job {
    /// The new container over the analysis window, judged against the previous revision's
    /// latency when it was measured.
    Analysis { baseline: Option<f64> },
    /// The old container's latency, before the update.
    Baseline,
}

/// Verdicts of finished analyses and baselines, by job key.
#[derive(Default)]
pub struct Analyses {
    done: Mutex<HashMap<JobKey, Verdict>>,
    baselines: Mutex<HashMap<JobKey, Result<f64, String>>>,
}

fn key(stack: &str, revision: u64, service: &str) -> JobKey {
    JobKey::new(stack, Kind::Analysis, &format!("{service}@{revision}"))
}

fn baseline_key(stack: &str, revision: u64, service: &str) -> JobKey {
    JobKey::new(
        stack,
        Kind::Analysis,
        &format!("{service}@{revision}/baseline"),
    )
}

impl Analyses {
    /// Starts the analysis (or baseline) unless it runs already.
    pub fn start(
        self: &Arc<Self>,
        jobs: &Registry,
        wake: &Waker,
        metrics: Arc<crate::metrics::Metrics>,
        req: Request,
    ) {
        let me = self.clone();
        let wake = wake.clone();
        let fingerprint = req.url.clone();
        match req.job {
            Job::Analysis { baseline } => {
                let key = key(&req.stack, req.revision, &req.service);
                let done_key = key.clone();
                jobs.ensure(key, &fingerprint, move |cancel| async move {
                    let verdict =
                        crate::jobs::analysis::analyse(&req.spec, &req.url, baseline, cancel).await;
                    observed(&metrics, &req, &verdict);
                    me.lock().insert(done_key, verdict);
                    wake.wake(&req.stack);
                });
            }
            Job::Baseline => {
                let key = baseline_key(&req.stack, req.revision, &req.service);
                let done_key = key.clone();
                let window = std::time::Duration::from_secs(req.spec.window_seconds.into());
                jobs.ensure(key, &fingerprint, move |cancel| async move {
                    let figure = crate::jobs::analysis::baseline_latency(
                        &req.spec, &req.url, window, cancel,
                    )
                    .await;
                    me.lock_baselines().insert(done_key, figure);
                    wake.wake(&req.stack);
                });
            }
        }
    }

    /// Where the baseline measurement of `service` in `revision` stands.
    pub fn baseline(&self, jobs: &Registry, stack: &str, revision: u64, service: &str) -> Baseline {
        let key = baseline_key(stack, revision, service);
        match self.lock_baselines().get(&key) {
            Some(Ok(seconds)) => Baseline::Measured(*seconds),
            Some(Err(why)) => Baseline::Unavailable(why.clone()),
            None if jobs.running(&key) => Baseline::Running,
            None => Baseline::NotAsked,
        }
    }

    /// Where the analysis of `service` in `revision` stands. An Inconclusive verdict (too few
    /// requests, a scrape that failed) lets the rollout go on, saying why.
    pub fn state(&self, jobs: &Registry, stack: &str, revision: u64, service: &str) -> Analysis {
        let key = key(stack, revision, service);
        match self.lock().get(&key) {
            Some(Verdict::Pass { figures }) => Analysis::Passed(format!(
                "5xx {:.1} % of {} requests over {:.0} s",
                figures.error_rate * 100.0,
                figures.requests,
                figures.seconds
            )),
            Some(Verdict::Fail { message, .. }) => Analysis::Failed(message.clone()),
            Some(Verdict::Inconclusive { why }) => Analysis::Passed(format!("inconclusive: {why}")),
            None if jobs.running(&key) => Analysis::Running,
            None => Analysis::NotAsked,
        }
    }

    /// Forgets the verdicts of a stack's finished rollouts.
    pub fn forget(&self, stack: &str) {
        self.lock().retain(|k, _| k.stack != stack);
        self.lock_baselines().retain(|k, _| k.stack != stack);
    }

    fn lock_baselines(&self) -> std::sync::MutexGuard<'_, HashMap<JobKey, Result<f64, String>>> {
        self.baselines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobKey, Verdict>> {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The gate values a verdict carries, for the `stackwarden_rollout_gate_value` gauge.
fn observed(metrics: &crate::metrics::Metrics, req: &Request, verdict: &Verdict) {
    use crate::decide::analysis::Gate;
    use crate::metrics::{GATE_ERROR_RATIO, GATE_LATENCY};
    let (stack, service) = (&req.stack, &req.service);
    match verdict {
        Verdict::Pass { figures } => {
            metrics.rollout_gate_observed(stack, service, GATE_ERROR_RATIO, figures.error_rate);
            if let Some(latency) = figures.latency {
                metrics.rollout_gate_observed(stack, service, GATE_LATENCY, latency);
            }
        }
        Verdict::Fail { gate, observed, .. } => {
            let gate = match gate {
                Gate::ErrorRate => GATE_ERROR_RATIO,
                Gate::Latency => GATE_LATENCY,
                // A relative figure; the gauge keeps absolute values only.
                Gate::LatencyIncrease => return,
            };
            metrics.rollout_gate_observed(stack, service, gate, *observed);
        }
        Verdict::Inconclusive { .. } => {}
    }
}
