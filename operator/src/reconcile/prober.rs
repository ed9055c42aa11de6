//! Probers: one task per stack with probes, running each service's probes on its period and
//! posting verdicts on the [`Board`], where reconciles read them. A verdict that flips wakes the
//! driver, so a failed service is repaired without waiting for the next poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::api::{ContainerState, ProbeRecord, ServiceHealthSpec, ServiceStack};
use crate::compose::Project;
use crate::docker::{Engine, ObservedContainer};
use crate::heal::ProbeVerdict;
use crate::metrics::Metrics;
use crate::probe::{self, Targets};

/// Probe verdicts per stack key and service. In memory: after an operator restart the probes
/// start afresh, as a kubelet's do.
#[derive(Clone, Default)]
pub struct Board {
    verdicts: Arc<Mutex<HashMap<String, BTreeMap<String, ProbeVerdict>>>>,
}

impl Board {
    /// The verdicts of one stack.
    pub fn snapshot(&self, stack: &str) -> BTreeMap<String, ProbeVerdict> {
        self.verdicts
            .lock()
            .expect("probe board lock")
            .get(stack)
            .cloned()
            .unwrap_or_default()
    }

    /// Posts a verdict; returns whether the service's health flipped.
    pub fn post(&self, stack: &str, service: &str, verdict: ProbeVerdict) -> bool {
        let mut all = self.verdicts.lock().expect("probe board lock");
        let services = all.entry(stack.to_owned()).or_default();
        let flipped = services.get(service).map(|v| v.healthy) != Some(verdict.healthy);
        services.insert(service.to_owned(), verdict);
        flipped
    }

    /// Drops a stack's verdicts (stack deleted, or its probes changed).
    pub fn clear(&self, stack: &str) {
        self.verdicts
            .lock()
            .expect("probe board lock")
            .remove(stack);
    }
}

/// The running probers, by stack key, with a fingerprint of what they probe.
#[derive(Default)]
pub struct Probers {
    running: Mutex<HashMap<String, (String, tokio::task::JoinHandle<()>)>>,
}

impl Drop for Probers {
    fn drop(&mut self) {
        for (_, (_, task)) in self.running.lock().expect("probers lock").drain() {
            task.abort();
        }
    }
}

/// What a prober task needs; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub board: Board,
    pub metrics: Arc<Metrics>,
    pub wake: super::Waker,
}

impl Probers {
    /// Makes sure the stack's probes run as its spec says: starts, restarts (after a change) or
    /// stops its prober.
    pub fn ensure(
        &self,
        stack: &ServiceStack,
        project: &Project,
        claim: &crate::docker::Claim,
        engine: &Arc<dyn Engine>,
        shared: &Shared,
    ) {
        let key = stack.key();
        let probed: BTreeMap<String, ServiceHealthSpec> = stack
            .spec
            .health
            .services
            .iter()
            .filter(|(_, h)| !h.probes.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut running = self.running.lock().expect("probers lock");
        if probed.is_empty() || stack.spec.suspend {
            if let Some((_, task)) = running.remove(&key) {
                task.abort();
                shared.board.clear(&key);
            }
            return;
        }
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&probed).expect("health spec serializes"));
            h.update(serde_json::to_vec(&stack.spec.health.probe_access).expect("serializes"));
            h.update(serde_json::to_vec(&stack.spec.variables).expect("serializes"));
            h.update(project.spec_hash());
            h.update(stack.spec.docker.host());
            // Adopting the project changes which containers are probed.
            h.update([u8::from(claim.unlabelled)]);
            hex::encode(h.finalize())
        };
        if running
            .get(&key)
            .is_some_and(|(f, task)| *f == fingerprint && !task.is_finished())
        {
            return;
        }
        if let Some((_, task)) = running.remove(&key) {
            task.abort();
            shared.board.clear(&key);
        }
        let job = Job {
            stack: key.clone(),
            project: project.clone(),
            claim: claim.clone(),
            access: stack.spec.health.probe_access,
            variables: stack.spec.variables.clone(),
            services: probed,
            engine: engine.clone(),
            shared: shared.clone(),
        };
        running.insert(key, (fingerprint, tokio::spawn(job.run())));
    }

    /// Stops every prober (shutdown, or leadership lost).
    pub fn stop_all(&self, board: &Board) {
        for (stack, (_, task)) in self.running.lock().expect("probers lock").drain() {
            task.abort();
            board.clear(&stack);
        }
    }

    /// Stops a deleted stack's prober.
    pub fn stop(&self, stack: &str, board: &Board) {
        if let Some((_, task)) = self.running.lock().expect("probers lock").remove(stack) {
            task.abort();
        }
        board.clear(stack);
    }
}

struct Job {
    stack: String,
    project: Project,
    claim: crate::docker::Claim,
    access: crate::api::ProbeAccess,
    variables: BTreeMap<String, String>,
    services: BTreeMap<String, ServiceHealthSpec>,
    engine: Arc<dyn Engine>,
    shared: Shared,
}

/// How soon a run that has not passed yet is probed again after a failure.
const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// How soon a service with nothing to probe (not running yet) is looked at again.
const SKIPPED_RETRY: Duration = Duration::from_millis(250);

/// How long the prober reuses what it observed of its project when nothing woke the stack: a
/// bound for what no Docker event announces (a container connected to another network).
const OBSERVED_MAX_AGE: Duration = Duration::from_secs(10);

/// What the prober last observed of its project, and when.
struct LastLook {
    /// The stack's wake count then ([`super::Waker::seen`]).
    seen: (u64, u64),
    at: Instant,
    containers: Vec<ObservedContainer>,
}

/// The outcome of one round of a service's probes.
enum Round {
    /// Nothing to probe yet: not running, or within its initial delay.
    Skipped,
    /// The probes cannot run as configured; no verdict on the service.
    Misconfigured(String),
    Done {
        passed: bool,
        message: String,
    },
}

/// Per-service progress between rounds.
struct Track {
    next: Instant,
    verdict: ProbeVerdict,
    /// The container run the counters belong to: a restarted container starts afresh.
    run: Option<(String, Option<chrono::DateTime<Utc>>)>,
    /// When the failing streak that made it unhealthy began, for the time-to-recover metric.
    failing_since: Option<Instant>,
    /// When a failure was last counted toward the threshold.
    last_counted_failure: Option<Instant>,
}

impl Job {
    async fn run(self) {
        let fresh = ProbeVerdict {
            healthy: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last: None,
            misconfigured: None,
            run_started_at: None,
        };
        let mut tracks: BTreeMap<String, Track> = self
            .services
            .keys()
            .map(|s| {
                (
                    s.clone(),
                    Track {
                        next: Instant::now(),
                        verdict: fresh.clone(),
                        run: None,
                        failing_since: None,
                        last_counted_failure: None,
                    },
                )
            })
            .collect();
        let mut observed = None;
        loop {
            let now = Instant::now();
            let due: Vec<String> = tracks
                .iter()
                .filter(|(_, t)| t.next <= now)
                .map(|(s, _)| s.clone())
                .collect();
            if due.is_empty() {
                let next = tracks
                    .values()
                    .map(|t| t.next)
                    .min()
                    .unwrap_or(now + Duration::from_secs(1));
                tokio::time::sleep_until(next.into()).await;
                continue;
            }
            let containers = match self.containers(&mut observed).await {
                Ok(c) => c,
                Err(_) => {
                    // The reconcile reports an unreachable engine; probing resumes when it answers.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let targets = Targets::new(&self.project, &containers, self.access, &self.claim);
            let rounds = due.iter().map(|svc| self.round(svc, &targets));
            let results: Vec<Round> = futures::future::join_all(rounds).await;
            for (svc, result) in due.iter().zip(results) {
                let spec = &self.services[svc];
                let track = tracks.get_mut(svc).expect("tracked");
                track.next =
                    Instant::now() + Duration::from_secs(u64::from(spec.period_seconds.max(1)));
                let (passed, message) = match result {
                    // Not running (crashes are heal's business) or still in its initial delay.
                    Round::Skipped => {
                        // Look again soon: a container coming up should be probed as soon as
                        // it runs, not a whole period later.
                        track.next = Instant::now()
                            + SKIPPED_RETRY
                                .min(Duration::from_secs(u64::from(spec.period_seconds.max(1))));
                        track.verdict = fresh.clone();
                        track.run = None;
                        // Withdraw the old verdict, or a reconcile would act on it.
                        if self.shared.board.post(&self.stack, svc, fresh.clone()) {
                            self.shared.wake.wake(&self.stack);
                        }
                        continue;
                    }
                    Round::Misconfigured(message) => {
                        let mut last = track.verdict.last.clone();
                        note(&mut last, false, message.clone(), Utc::now());
                        let v = ProbeVerdict {
                            misconfigured: Some(message),
                            last,
                            run_started_at: targets.container(svc).ok().and_then(|c| c.started_at),
                            ..fresh.clone()
                        };
                        track.verdict = v.clone();
                        self.shared.board.post(&self.stack, svc, v);
                        continue;
                    }
                    Round::Done { passed, message } => (passed, message),
                };
                let run = targets
                    .container(svc)
                    .ok()
                    .map(|c| (c.id.clone(), c.started_at));
                if track.run != run {
                    track.verdict = ProbeVerdict {
                        run_started_at: run.as_ref().and_then(|r| r.1),
                        ..fresh.clone()
                    };
                    track.run = run;
                    track.last_counted_failure = None;
                }
                let flipped = self.record(svc, spec, track, passed, message);
                if flipped {
                    self.shared.wake.wake(&self.stack);
                }
            }
        }
    }

    /// The project's containers, observed again only when the stack was woken since (a
    /// Docker event for one of its containers, an engine's events stream that broke) or the
    /// last look is older than [`OBSERVED_MAX_AGE`]: a Docker list and an inspect per
    /// container before every round were most of an idle operator's work.
    async fn containers(
        &self,
        observed: &mut Option<LastLook>,
    ) -> Result<Vec<ObservedContainer>, crate::docker::EngineError> {
        let seen = self.shared.wake.seen(&self.stack);
        if let Some(o) = observed.as_ref() {
            if o.seen == seen && o.at.elapsed() < OBSERVED_MAX_AGE {
                return Ok(o.containers.clone());
            }
        }
        let containers = self
            .engine
            .observe(&self.project.name, &[], &[], &[])
            .await?
            .containers;
        *observed = Some(LastLook {
            seen,
            at: Instant::now(),
            containers: containers.clone(),
        });
        Ok(containers)
    }

    /// One round of a service's probes.
    async fn round(&self, svc: &str, targets: &Targets) -> Round {
        let spec = &self.services[svc];
        let Ok(c) = targets.container(svc) else {
            return Round::Skipped;
        };
        if c.state != ContainerState::Running {
            return Round::Skipped;
        }
        let delay = chrono::Duration::seconds(i64::from(spec.initial_delay_seconds));
        if c.started_at.is_some_and(|t| Utc::now() - t < delay) {
            return Round::Skipped;
        }
        let timeout = Duration::from_secs(u64::from(spec.timeout_seconds.max(1)));
        for p in &spec.probes {
            let start = Instant::now();
            let result = probe::check(
                p,
                svc,
                targets,
                &self.variables,
                self.engine.as_ref(),
                timeout,
            )
            .await;
            self.shared.metrics.probed(
                &self.stack,
                svc,
                probe::kind_name(p),
                result.is_ok(),
                start.elapsed(),
            );
            if let Err(e) = result {
                use probe::ProbeErrorKind as K;
                return match e.kind {
                    K::AuthFailed | K::NotPublished | K::UnknownService | K::Misconfigured => {
                        Round::Misconfigured(e.message)
                    }
                    _ => Round::Done {
                        passed: false,
                        message: e.message,
                    },
                };
            }
        }
        Round::Done {
            passed: true,
            message: "all probes passed".to_owned(),
        }
    }

    /// Applies the thresholds; returns whether the verdict flipped.
    fn record(
        &self,
        svc: &str,
        spec: &ServiceHealthSpec,
        track: &mut Track,
        passed: bool,
        message: String,
    ) -> bool {
        let v = &mut track.verdict;
        note(&mut v.last, passed, message, Utc::now());
        if passed {
            v.consecutive_successes += 1;
            v.consecutive_failures = 0;
            if v.healthy != Some(true) && v.consecutive_successes >= spec.success_threshold.max(1) {
                if v.healthy == Some(false) {
                    if let Some(since) = track.failing_since.take() {
                        self.shared
                            .metrics
                            .recovered(&self.stack, svc, since.elapsed());
                    }
                }
                v.healthy = Some(true);
            }
        } else {
            let period = Duration::from_secs(u64::from(spec.period_seconds.max(1)));
            if v.healthy.is_none() {
                // A run not yet decided is retried sooner (see STARTUP_RETRY), so its first
                // success shows at once; its failures still count once per period only, so a
                // slow starter is not declared unhealthy any earlier than without the retries.
                track.next = Instant::now() + STARTUP_RETRY.min(period);
                if track
                    .last_counted_failure
                    .is_some_and(|t| t.elapsed() < period)
                {
                    return self.shared.board.post(&self.stack, svc, v.clone());
                }
            }
            track.last_counted_failure = Some(Instant::now());
            if v.consecutive_failures == 0 && v.healthy == Some(true) {
                track.failing_since = Some(Instant::now());
            }
            v.consecutive_failures += 1;
            v.consecutive_successes = 0;
            if v.consecutive_failures >= spec.failure_threshold.max(1)
                && !crate::heal::still_starting(v, spec, Utc::now())
            {
                v.healthy = Some(false);
            }
        }
        self.shared.board.post(&self.stack, svc, v.clone())
    }
}

/// Keeps `last` as the record of the latest *change* of the probes' result: a round with the
/// same outcome and message as the last one changes nothing, so a steady service does not
/// rewrite its status every round (the rounds themselves are counted in metrics).
fn note(last: &mut Option<ProbeRecord>, passed: bool, message: String, now: chrono::DateTime<Utc>) {
    if last
        .as_ref()
        .is_some_and(|l| l.passed == passed && l.message == message)
    {
        return;
    }
    *last = Some(ProbeRecord {
        time: now,
        passed,
        message,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> chrono::DateTime<Utc> {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_last_probe_record_moves_only_when_the_result_or_its_message_changes() {
        let mut last = None;
        note(&mut last, true, "all probes passed".into(), at(0));
        note(&mut last, true, "all probes passed".into(), at(10));
        assert_eq!(
            last.as_ref().unwrap().time,
            at(0),
            "a steady round is not a change"
        );
        note(&mut last, false, "connection refused".into(), at(20));
        assert_eq!(last.as_ref().unwrap().time, at(20));
        note(&mut last, false, "timed out after 1s".into(), at(30));
        assert_eq!(last.as_ref().unwrap().time, at(30), "a new failure is news");
        note(&mut last, true, "all probes passed".into(), at(40));
        assert!(last.as_ref().unwrap().passed);
        assert_eq!(last.unwrap().time, at(40));
    }
}
