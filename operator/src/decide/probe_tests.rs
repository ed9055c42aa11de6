use super::*;

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

/// A clock `ms` milliseconds after a fixed start, both faces moving together.
struct Clock {
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    fn at_ms(&self, ms: u64) -> Now {
        Now {
            instant: self.start + Duration::from_millis(ms),
            wall: at(0) + chrono::Duration::milliseconds(ms as i64),
        }
    }

    fn at(&self, s: u64) -> Now {
        self.at_ms(s * 1000)
    }
}

/// Period 10 s, unhealthy after 3 failures, healthy after 2 passes, no startup grace.
fn spec() -> ServiceHealthSpec {
    ServiceHealthSpec {
        period_seconds: 10,
        failure_threshold: 3,
        success_threshold: 2,
        startup_seconds: 0,
        ..ServiceHealthSpec::default()
    }
}

fn run(id: &str) -> Run {
    Run {
        container: id.to_owned(),
        started_at: Some(at(-100)),
    }
}

fn pass() -> Round {
    Round::Done {
        passed: true,
        message: "all probes passed".to_owned(),
    }
}

fn fail() -> Round {
    Round::Done {
        passed: false,
        message: "connection refused".to_owned(),
    }
}

/// Feeds `rounds` to the track, one per period from second `from`, about the run `r`.
fn feed(track: &mut Track, rounds: &[Round], r: &Run, clock: &Clock, from: u64) -> Vec<Step> {
    rounds
        .iter()
        .enumerate()
        .map(|(i, round)| {
            let s = step(
                &spec(),
                track,
                round,
                Some(r),
                clock.at(from + 10 * i as u64),
            );
            *track = s.track.clone();
            s
        })
        .collect()
}

fn healthy_track(clock: &Clock) -> Track {
    let mut track = Track::new(clock.at(0).instant);
    feed(&mut track, &[pass(), pass()], &run("a"), clock, 0);
    assert_eq!(track.verdict.healthy, Some(true));
    track
}

#[test]
fn failure_threshold_consecutive_failures_make_a_healthy_service_unhealthy() {
    let clock = Clock::new();
    let mut track = healthy_track(&clock);
    let steps = feed(&mut track, &[fail(), fail(), fail()], &run("a"), &clock, 20);
    let health: Vec<_> = steps.iter().map(|s| s.track.verdict.healthy).collect();
    assert_eq!(health, [Some(true), Some(true), Some(false)]);
    let wakes: Vec<_> = steps.iter().map(|s| s.wake).collect();
    assert_eq!(
        wakes,
        [false, false, true],
        "only the flip wakes the reconcile"
    );
    assert_eq!(track.verdict.consecutive_failures, 3);
}

#[test]
fn a_pass_between_failures_starts_the_count_again() {
    let clock = Clock::new();
    let mut track = healthy_track(&clock);
    feed(
        &mut track,
        &[fail(), fail(), pass(), fail(), fail()],
        &run("a"),
        &clock,
        20,
    );
    assert_eq!(track.verdict.healthy, Some(true));
    assert_eq!(track.verdict.consecutive_failures, 2);
}

#[test]
fn success_threshold_passes_make_an_unhealthy_service_healthy_again_and_record_the_recovery() {
    let clock = Clock::new();
    let mut track = healthy_track(&clock);
    feed(&mut track, &[fail(), fail(), fail()], &run("a"), &clock, 20);
    assert_eq!(track.verdict.healthy, Some(false));
    let steps = feed(&mut track, &[pass(), pass()], &run("a"), &clock, 50);
    assert_eq!(
        steps[0].track.verdict.healthy,
        Some(false),
        "one pass is not enough"
    );
    assert!(!steps[0].wake);
    assert_eq!(steps[0].recovered, None);
    assert_eq!(steps[1].track.verdict.healthy, Some(true));
    assert!(steps[1].wake);
    assert_eq!(
        steps[1].recovered,
        Some(Duration::from_secs(40)),
        "failing since the first failure at 20 s, healthy at 60 s"
    );
}

#[test]
fn a_restarted_container_starts_afresh() {
    let clock = Clock::new();
    let mut track = healthy_track(&clock);
    feed(&mut track, &[fail(), fail(), fail()], &run("a"), &clock, 20);
    assert_eq!(track.verdict.healthy, Some(false));
    let restarted = Run {
        container: "a".to_owned(),
        started_at: Some(at(45)),
    };
    let s = step(&spec(), &track, &fail(), Some(&restarted), clock.at(50));
    assert_eq!(
        s.track.verdict.healthy, None,
        "the old run's verdict is gone"
    );
    assert_eq!(s.track.verdict.consecutive_failures, 1);
    assert_eq!(s.track.verdict.run_started_at, Some(at(45)));
    assert_eq!(s.track.run, Some(restarted));
    assert!(s.wake, "unhealthy to undecided is a flip");
}

#[test]
fn a_new_run_counts_its_first_failure_even_within_a_period_of_the_last_counted_one() {
    let clock = Clock::new();
    let mut track = Track::new(clock.at(0).instant);
    feed(&mut track, &[fail()], &run("a"), &clock, 0);
    let s = step(&spec(), &track, &fail(), Some(&run("b")), clock.at(1));
    assert_eq!(s.track.verdict.consecutive_failures, 1);
    assert_eq!(s.track.last_counted_failure, Some(clock.at(1).instant));
}

#[test]
fn an_undecided_runs_failures_count_once_per_period_though_it_is_retried_sooner() {
    let clock = Clock::new();
    let r = run("a");
    let mut track = Track::new(clock.at(0).instant);
    let mut counts = Vec::new();
    let mut nexts = Vec::new();
    for s in [0, 1, 2, 9, 10, 11, 20] {
        let now = clock.at(s);
        track = step(&spec(), &track, &fail(), Some(&r), now).track;
        counts.push(track.verdict.consecutive_failures);
        nexts.push(track.next - now.instant);
    }
    assert_eq!(counts, [1, 1, 1, 1, 2, 2, 3]);
    assert!(nexts.iter().all(|n| *n == STARTUP_RETRY), "{nexts:?}");
    assert_eq!(track.verdict.healthy, Some(false));
}

#[test]
fn a_decided_service_counts_every_failure_and_waits_a_period() {
    let clock = Clock::new();
    let track = healthy_track(&clock);
    let a = step(&spec(), &track, &fail(), Some(&run("a")), clock.at(20));
    let b = step(&spec(), &a.track, &fail(), Some(&run("a")), clock.at(21));
    assert_eq!(b.track.verdict.consecutive_failures, 2);
    assert_eq!(b.track.next, clock.at(31).instant);
    assert_eq!(b.track.failing_since, Some(clock.at(20).instant));
}

#[test]
fn a_run_still_starting_counts_its_failures_but_is_not_made_unhealthy() {
    let clock = Clock::new();
    let starting = ServiceHealthSpec {
        startup_seconds: 60,
        ..spec()
    };
    let r = Run {
        container: "a".to_owned(),
        started_at: Some(at(0)),
    };
    let mut track = Track::new(clock.at(0).instant);
    for s in [0, 10, 20, 30] {
        track = step(&starting, &track, &fail(), Some(&r), clock.at(s)).track;
    }
    assert_eq!(track.verdict.consecutive_failures, 4);
    assert_eq!(track.verdict.healthy, None);
    track = step(&starting, &track, &fail(), Some(&r), clock.at(60)).track;
    assert_eq!(track.verdict.healthy, Some(false), "startupSeconds is over");
}

#[test]
fn a_misconfigured_probe_gives_no_verdict_and_wakes_nobody() {
    let clock = Clock::new();
    let mut track = healthy_track(&clock);
    feed(&mut track, &[fail(), fail(), fail()], &run("a"), &clock, 20);
    let round = Round::Misconfigured("password authentication failed".to_owned());
    let s = step(&spec(), &track, &round, Some(&run("a")), clock.at(50));
    let v = &s.track.verdict;
    assert_eq!(v.healthy, None);
    assert_eq!(
        v.misconfigured.as_deref(),
        Some("password authentication failed")
    );
    assert_eq!((v.consecutive_failures, v.consecutive_successes), (0, 0));
    assert_eq!(v.run_started_at, Some(at(-100)));
    let last = v.last.as_ref().unwrap();
    assert!(!last.passed);
    assert_eq!(last.message, "password authentication failed");
    assert!(!s.wake);
    assert_eq!(s.track.next, clock.at(60).instant);
}

#[test]
fn a_service_with_nothing_to_probe_withdraws_its_verdict_and_is_looked_at_again_soon() {
    let clock = Clock::new();
    let track = healthy_track(&clock);
    let s = step(&spec(), &track, &Round::Skipped, None, clock.at(20));
    assert_eq!(s.track.verdict, fresh());
    assert_eq!(s.track.run, None);
    assert!(s.wake, "healthy to no verdict is a flip");
    assert_eq!(s.track.next, clock.at_ms(20_250).instant);
}

#[test]
fn the_first_verdict_posted_wakes_the_reconcile_even_when_undecided() {
    let clock = Clock::new();
    let track = Track::new(clock.at(0).instant);
    let s = step(&spec(), &track, &fail(), Some(&run("a")), clock.at(0));
    assert_eq!(s.track.verdict.healthy, None);
    assert!(s.wake);
    let again = step(&spec(), &s.track, &fail(), Some(&run("a")), clock.at(10));
    assert!(!again.wake);
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
