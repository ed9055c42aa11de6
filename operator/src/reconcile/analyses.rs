//! The analysis gate's jobs: one per service of a rollout, in the job registry, each scraping
//! the new container's metrics over its window (`jobs::analysis::analyse`). The verdict is kept
//! here until the rollout step reads it, and the stack is woken when it arrives. A job lost
//! with a killed operator is started again by the rollout (see `decide::rollout`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::api::rollout::AnalysisSpec;
use crate::decide::analysis::Verdict;
use crate::decide::rollout::Analysis;
use crate::jobs::{JobKey, Kind, Registry, Waker};

/// One analysis to run.
pub struct Request {
    pub stack: String,
    pub revision: u64,
    pub service: String,
    pub spec: AnalysisSpec,
    /// The new container's metrics page.
    pub url: String,
}

/// Verdicts of finished analyses, by job key.
#[derive(Default)]
pub struct Analyses {
    done: Mutex<HashMap<JobKey, Verdict>>,
}

fn key(stack: &str, revision: u64, service: &str) -> JobKey {
    JobKey::new(stack, Kind::Analysis, &format!("{service}@{revision}"))
}

impl Analyses {
    /// Starts the analysis unless it runs already.
    pub fn start(
        self: &Arc<Self>,
        jobs: &Registry,
        wake: &Waker,
        metrics: Arc<crate::metrics::Metrics>,
        req: Request,
    ) {
        let key = key(&req.stack, req.revision, &req.service);
        let (me, wake, done_key) = (self.clone(), wake.clone(), key.clone());
        let fingerprint = req.url.clone();
        jobs.ensure(key, &fingerprint, move |cancel| async move {
            let verdict = crate::jobs::analysis::analyse(&req.spec, &req.url, None, cancel).await;
            observed(&metrics, &req, &verdict);
            me.lock().insert(done_key, verdict);
            wake.wake(&req.stack);
        });
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
