//! The probe threshold rule: how one round's result moves a service's verdict. Pure, with the
//! clock an argument; the prober runs the rounds and posts what [`step`] decides.
//!
//! - `failureThreshold` consecutive failed rounds make a service unhealthy, `successThreshold`
//!   passed rounds make it healthy (again). A run that never passed and is younger than
//!   `startupSeconds` is still starting: its failures count but do not make it unhealthy.
//! - The counters belong to one container run: a restarted container starts afresh.
//! - A run not yet decided is probed again soon after a failure ([`STARTUP_RETRY`]) so its
//!   first success shows at once, but its failures still count at most once per period, so a
//!   slow starter is not declared unhealthy any earlier than without the retries.
//! - A service with nothing to probe (not running, in its initial delay) has no verdict: the old
//!   one is withdrawn, or a reconcile would act on it.
//! - A misconfigured probe says nothing about the service: no verdict, no wake, and the message
//!   tells the user what to fix.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::api::{ProbeRecord, ServiceHealthSpec};
use crate::decide::heal::{still_starting, ProbeVerdict};

/// How soon a run that has not passed yet is probed again after a failure.
pub const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// How soon a service with nothing to probe (not running yet) is looked at again.
pub const SKIPPED_RETRY: Duration = Duration::from_millis(250);

/// The outcome of one round of a service's probes.
#[derive(Clone, Debug, PartialEq)]
pub enum Round {
    /// Nothing to probe yet: not running, or within its initial delay.
    Skipped,
    /// The probes cannot run as configured; no verdict on the service.
    Misconfigured(String),
    Done {
        passed: bool,
        message: String,
    },
}

/// The container run a round probed: its id and start time.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub container: String,
    pub started_at: Option<DateTime<Utc>>,
}

/// The clock, read once per round: monotonic for the prober's timing, wall for the records and
/// `startupSeconds`.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub instant: Instant,
    pub wall: DateTime<Utc>,
}

/// Per-service progress between rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// When the service is due for its next round.
    pub next: Instant,
    /// The verdict as last posted (a fresh one before the first post).
    pub verdict: ProbeVerdict,
    /// Whether a verdict was posted yet: the first one is news to the reconcile whatever it says.
    pub posted: bool,
    /// The container run the counters belong to.
    pub run: Option<Run>,
    /// When the failing streak that made it unhealthy began, for the time-to-recover metric.
    pub failing_since: Option<Instant>,
    /// When a failure was last counted toward the threshold.
    pub last_counted_failure: Option<Instant>,
}

impl Track {
    /// A service not probed yet, due at once.
    pub fn new(now: Instant) -> Self {
        Self {
            next: now,
            verdict: fresh(),
            posted: false,
            run: None,
            failing_since: None,
            last_counted_failure: None,
        }
    }
}

/// What a round changed: the new track (its `verdict` is what to post), whether the reconcile
/// should look now, and a recovery to record in metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub track: Track,
    /// The service's health flipped from what was last posted (or nothing was posted yet). A
    /// misconfigured probe never wakes: it says nothing about the service.
    pub wake: bool,
    /// How long the service was failing before it became healthy again.
    pub recovered: Option<Duration>,
}

/// A verdict that says nothing yet.
pub fn fresh() -> ProbeVerdict {
    ProbeVerdict {
        healthy: None,
        consecutive_failures: 0,
        consecutive_successes: 0,
        last: None,
        misconfigured: None,
        run_started_at: None,
    }
}

/// Applies one round's result, about the container run `run`, to a service's track.
pub fn step(
    spec: &ServiceHealthSpec,
    track: &Track,
    round: &Round,
    run: Option<&Run>,
    now: Now,
) -> Step {
    let period = Duration::from_secs(u64::from(spec.period_seconds.max(1)));
    let mut next = track.clone();
    next.posted = true;
    let mut recovered = None;
    match round {
        Round::Skipped => {
            // A container coming up should be probed as soon as it runs, not a period later.
            next.next = now.instant + SKIPPED_RETRY.min(period);
            next.verdict = fresh();
            next.run = None;
        }
        Round::Misconfigured(message) => {
            next.next = now.instant + period;
            let mut last = track.verdict.last.clone();
            note(&mut last, false, message.clone(), now.wall);
            next.verdict = ProbeVerdict {
                misconfigured: Some(message.clone()),
                last,
                run_started_at: run.and_then(|r| r.started_at),
                ..fresh()
            };
            return Step {
                track: next,
                wake: false,
                recovered,
            };
        }
        Round::Done { passed, message } => {
            next.next = now.instant + period;
            if next.run.as_ref() != run {
                next.verdict = ProbeVerdict {
                    run_started_at: run.and_then(|r| r.started_at),
                    ..fresh()
                };
                next.run = run.cloned();
                next.last_counted_failure = None;
            }
            note(&mut next.verdict.last, *passed, message.clone(), now.wall);
            if *passed {
                recovered = count_success(spec, &mut next, now);
            } else {
                count_failure(spec, &mut next, period, now);
            }
        }
    }
    let wake = !track.posted || track.verdict.healthy != next.verdict.healthy;
    Step {
        track: next,
        wake,
        recovered,
    }
}

/// Counts a passed round; returns the failing time when it ends an unhealthy spell.
fn count_success(spec: &ServiceHealthSpec, track: &mut Track, now: Now) -> Option<Duration> {
    let v = &mut track.verdict;
    v.consecutive_successes += 1;
    v.consecutive_failures = 0;
    if v.healthy == Some(true) || v.consecutive_successes < spec.success_threshold.max(1) {
        return None;
    }
    let recovered = if v.healthy == Some(false) {
        track
            .failing_since
            .take()
            .map(|since| now.instant.saturating_duration_since(since))
    } else {
        None
    };
    v.healthy = Some(true);
    recovered
}

/// Counts a failed round, at most once per period while the run is undecided.
fn count_failure(spec: &ServiceHealthSpec, track: &mut Track, period: Duration, now: Now) {
    let v = &mut track.verdict;
    if v.healthy.is_none() {
        track.next = now.instant + STARTUP_RETRY.min(period);
        if track
            .last_counted_failure
            .is_some_and(|t| now.instant.saturating_duration_since(t) < period)
        {
            return;
        }
    }
    track.last_counted_failure = Some(now.instant);
    if v.consecutive_failures == 0 && v.healthy == Some(true) {
        track.failing_since = Some(now.instant);
    }
    v.consecutive_failures += 1;
    v.consecutive_successes = 0;
    if v.consecutive_failures >= spec.failure_threshold.max(1) && !still_starting(v, spec, now.wall)
    {
        v.healthy = Some(false);
    }
}

/// Keeps `last` as the record of the latest *change* of the probes' result: a round with the
/// same outcome and message as the last one changes nothing, so a steady service does not
/// rewrite its status every round (the rounds themselves are counted in metrics).
pub fn note(last: &mut Option<ProbeRecord>, passed: bool, message: String, now: DateTime<Utc>) {
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
#[path = "probe_tests.rs"]
mod tests;
