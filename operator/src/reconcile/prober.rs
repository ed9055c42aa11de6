//! Probers: one task per stack with probes, running each service's probes on its period and
//! posting verdicts on the [`Board`], where reconciles read them. A verdict that flips wakes the
//! driver, so a failed service is repaired without waiting for the next poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::api::{ContainerState, ServiceHealthSpec, ServiceStack};
use crate::compose::Project;
use crate::decide::heal::ProbeVerdict;
use crate::decide::probe::{self as decide, Now, Round, Run, Track};
use crate::docker::{Engine, ObservedContainer};
use crate::jobs::{JobKey, Kind, Registry};
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

    /// Posts a verdict (whether to wake the reconcile is `decide::probe::step`'s answer).
    pub fn post(&self, stack: &str, service: &str, verdict: ProbeVerdict) {
        let mut all = self.verdicts.lock().expect("probe board lock");
        all.entry(stack.to_owned())
            .or_default()
            .insert(service.to_owned(), verdict);
    }

    /// Drops a stack's verdicts (stack deleted, or its probes changed).
    pub fn clear(&self, stack: &str) {
        self.verdicts
            .lock()
            .expect("probe board lock")
            .remove(stack);
    }
}

/// What a prober task needs; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub board: Board,
    pub metrics: Arc<Metrics>,
    pub wake: super::Waker,
}

/// The prober of a stack in the job registry.
fn job_key(stack: &str) -> JobKey {
    JobKey::new(stack, Kind::Prober, "")
}

/// Makes sure the stack's probes run as its spec says: starts, restarts (after a change) or
/// stops its prober.
pub fn ensure(
    jobs: &Registry,
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
    if probed.is_empty() || stack.spec.suspend {
        if jobs.cancel(&job_key(&key)) {
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
    let board = shared.board.clone();
    jobs.ensure(job_key(&key), &fingerprint, move |_| {
        // The verdicts of what was probed before are withdrawn with it.
        board.clear(&key);
        job.run()
    });
}

/// Stops a deleted stack's prober and withdraws its verdicts.
pub fn stop(jobs: &Registry, stack: &str, board: &Board) {
    jobs.cancel(&job_key(stack));
    board.clear(stack);
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

impl Job {
    async fn run(self) {
        let start = Instant::now();
        let mut tracks: BTreeMap<String, Track> = self
            .services
            .keys()
            .map(|s| (s.clone(), Track::new(start)))
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
            let Ok(containers) = self.containers(&mut observed).await else {
                // The reconcile reports an unreachable engine; probing resumes when it answers.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let targets = Targets::new(&self.project, &containers, self.access, &self.claim);
            let rounds = due.iter().map(|svc| self.round(svc, &targets));
            let results: Vec<Round> = futures::future::join_all(rounds).await;
            for (svc, result) in due.iter().zip(results) {
                let track = tracks.get_mut(svc).expect("tracked");
                self.record(svc, track, &result, &targets);
            }
        }
    }

    /// Applies a round's result to the service's track ([`decide::step`]) and posts the verdict.
    fn record(&self, svc: &str, track: &mut Track, result: &Round, targets: &Targets) {
        let run = targets.container(svc).ok().map(|c| Run {
            container: c.id.clone(),
            started_at: c.started_at,
        });
        let now = Now {
            instant: Instant::now(),
            wall: Utc::now(),
        };
        let step = decide::step(&self.services[svc], track, result, run.as_ref(), now);
        *track = step.track;
        if let Some(after) = step.recovered {
            self.shared.metrics.recovered(&self.stack, svc, after);
        }
        self.shared
            .board
            .post(&self.stack, svc, track.verdict.clone());
        if step.wake {
            self.shared.wake.wake(&self.stack);
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
}
