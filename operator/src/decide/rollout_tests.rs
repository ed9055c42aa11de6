//! The rollout state machine, step by step: what is recorded and what is done, forward, on a
//! failed gate, and after a kill.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::rollout::*;
use crate::api::rollout_status::{Method, RolloutPhase, RolloutStatus, ServiceStep};

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

const LIMITS: Limits = Limits {
    progress_deadline: Duration::from_secs(60),
    analysis: false,
    baseline: false,
};

const ANALYSED: Limits = Limits {
    progress_deadline: Duration::from_secs(60),
    analysis: true,
    baseline: false,
};

/// An analysis with `latency.maxIncrease`.
const BASELINED: Limits = Limits {
    progress_deadline: Duration::from_secs(60),
    analysis: true,
    baseline: true,
};

fn change(service: &str, old: Option<&str>, can_surge: bool) -> Change {
    Change {
        service: service.into(),
        old_container: old.map(str::to_owned),
        can_surge,
    }
}

fn up(probes: Probes) -> Option<Seen> {
    Some(Seen {
        running: true,
        probes,
        exit_code: None,
        restarts: 0,
    })
}

fn stopped() -> Option<Seen> {
    Some(Seen {
        running: false,
        probes: Probes::Unknown,
        exit_code: Some(0),
        restarts: 0,
    })
}

fn seen(old: Option<Seen>, new: Option<Seen>) -> Observed {
    Observed {
        new_id: new.as_ref().map(|_| "new-id".to_owned()),
        old,
        new,
        analysis: Analysis::NotAsked,
        baseline: Baseline::NotAsked,
    }
}

/// One backend behind the network (surge) and one frontend with a published port.
fn two() -> RolloutStatus {
    begin(
        4,
        "h4",
        Some(3),
        &[
            change("backend", Some("old-b"), true),
            change("frontend", Some("old-f"), false),
        ],
        &[],
        t(0),
    )
}

fn steps(r: &RolloutStatus) -> Vec<ServiceStep> {
    r.services.iter().map(|s| s.step).collect()
}

#[test]
fn services_in_order_go_first_then_the_rest_in_dependency_order() {
    let r = begin(
        2,
        "h",
        Some(1),
        &[
            change("db", Some("a"), true),
            change("api", Some("b"), true),
            change("web", None, true),
            change("worker", Some("c"), false),
        ],
        &["web".into(), "api".into()],
        t(0),
    );
    let names: Vec<&str> = r.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "api", "db", "worker"]);
    let methods: Vec<Method> = r.services.iter().map(|s| s.method).collect();
    assert_eq!(
        methods,
        [
            Method::Create,
            Method::Surge,
            Method::Surge,
            Method::Recreate
        ]
    );
}

#[test]
fn a_surge_starts_the_new_container_beside_the_old_one_and_retires_the_old_after_its_probes_pass() {
    let r = two();
    let n = next(&r, &seen(up(Probes::Passing), None), LIMITS, t(1));
    assert_eq!(n.acts, [Act::StartNew("backend".into())]);
    assert_eq!(n.rollout.services[0].step, ServiceStep::Starting);

    let n = next(
        &n.rollout,
        &seen(up(Probes::Passing), up(Probes::Unknown)),
        LIMITS,
        t(2),
    );
    assert_eq!(n.rollout.services[0].step, ServiceStep::Verifying);
    assert_eq!(
        n.rollout.services[0].new_container.as_deref(),
        Some("new-id")
    );
    assert!(n.acts.is_empty());

    let n = next(
        &n.rollout,
        &seen(up(Probes::Passing), up(Probes::Passing)),
        LIMITS,
        t(5),
    );
    assert_eq!(n.acts, [Act::StopOld("backend".into())]);
    assert_eq!(n.rollout.services[0].step, ServiceStep::Retiring);
    assert_eq!(n.rollout.gates_passed, ["backend: probes pass"]);
}

#[test]
fn once_the_old_container_is_stopped_the_next_service_starts_in_the_same_pass() {
    let mut r = two();
    r.services[0].step = ServiceStep::Retiring;
    let n = next(&r, &seen(stopped(), up(Probes::Passing)), LIMITS, t(9));
    assert_eq!(
        steps(&n.rollout),
        [ServiceStep::Done, ServiceStep::Starting]
    );
    // Published port: the old frontend stops before the new one can start.
    assert_eq!(
        n.acts,
        [
            Act::StopOld("frontend".into()),
            Act::StartNew("frontend".into())
        ]
    );
}

#[test]
fn the_rollout_completes_when_every_service_is_done_and_removes_the_kept_old_containers() {
    let mut r = two();
    r.services[0].step = ServiceStep::Done;
    r.services[1].step = ServiceStep::Retiring;
    let n = next(&r, &seen(stopped(), up(Probes::Passing)), LIMITS, t(20));
    assert_eq!(n.rollout.phase, RolloutPhase::Complete);
    assert_eq!(n.rollout.finished, Some(t(20)));
    assert_eq!(
        n.acts,
        [Act::RemoveOld(vec!["old-b".into(), "old-f".into()])]
    );
}

#[test]
fn probes_failing_roll_back_at_once_and_probes_never_judged_at_the_deadline() {
    let mut r = two();
    r.services[0].new_container = Some("new-id".into());
    r.services[0].step = ServiceStep::Verifying;
    r.services[0].since = Some(t(0));
    let unjudged = seen(up(Probes::Passing), up(Probes::Unknown));
    let n = next(&r, &unjudged, LIMITS, t(59));
    assert_eq!(n.rollout, r);
    assert!(n.acts.is_empty());
    let n = next(&r, &unjudged, LIMITS, t(61));
    assert_eq!(n.rollout.phase, RolloutPhase::RollingBack);
    assert_eq!(
        n.rollout.failure.as_deref(),
        Some(
            "backend: the new container did not pass its probes within progressDeadlineSeconds 60"
        )
    );

    let failing = seen(
        up(Probes::Passing),
        up(Probes::Failing("/health answered 500".into())),
    );
    let n = next(&r, &failing, LIMITS, t(3));
    assert_eq!(n.rollout.phase, RolloutPhase::RollingBack);
    let failure = n.rollout.failure.clone().unwrap();
    assert_eq!(
        failure,
        "backend: the new container fails its probes: /health answered 500"
    );
    // The old container still runs and passes: the new one goes at once, without a gap.
    assert_eq!(n.acts, [Act::RemoveNew("backend".into())]);
}

#[test]
fn a_new_container_that_exits_or_restarts_fails_at_once() {
    let mut r = two();
    r.services[0].step = ServiceStep::Verifying;
    r.services[0].since = Some(t(0));
    let mut crashed = stopped().unwrap();
    crashed.exit_code = Some(3);
    let n = next(&r, &seen(up(Probes::Passing), Some(crashed)), LIMITS, t(1));
    assert!(n.rollout.failure.unwrap().contains("exited with code 3"));
    let mut looping = up(Probes::Unknown).unwrap();
    looping.restarts = 2;
    let n = next(&r, &seen(up(Probes::Passing), Some(looping)), LIMITS, t(1));
    assert!(n.rollout.failure.unwrap().contains("restarted 2 time(s)"));
}

#[test]
fn with_an_analysis_the_old_container_serves_until_the_analysis_passed() {
    let mut r = two();
    r.services[0].step = ServiceStep::Verifying;
    r.services[0].since = Some(t(0));
    let both = seen(up(Probes::Passing), up(Probes::Passing));
    let n = next(&r, &both, ANALYSED, t(3));
    assert_eq!(n.acts, [Act::Analyse("backend".into())]);
    assert_eq!(n.rollout.services[0].step, ServiceStep::Analysing);

    let running = Observed {
        analysis: Analysis::Running,
        ..both.clone()
    };
    assert!(next(&n.rollout, &running, ANALYSED, t(10)).acts.is_empty());
    let passed = Observed {
        analysis: Analysis::Passed("5xx 0.0 % of 310".into()),
        ..both
    };
    let n = next(&n.rollout, &passed, ANALYSED, t(40));
    assert_eq!(n.acts, [Act::StopOld("backend".into())]);
    assert_eq!(
        n.rollout.gates_passed,
        [
            "backend: probes pass",
            "backend: analysis (5xx 0.0 % of 310)"
        ]
    );
}

#[test]
fn with_a_latency_increase_gate_the_old_containers_latency_is_measured_before_anything_is_touched()
{
    let r = two();
    let old_only = seen(up(Probes::Passing), None);
    let n = next(&r, &old_only, BASELINED, t(1));
    assert_eq!(n.acts, [Act::MeasureBaseline("backend".into())]);
    assert_eq!(n.rollout.services[0].step, ServiceStep::Baselining);

    let running = Observed {
        baseline: Baseline::Running,
        ..old_only.clone()
    };
    assert!(next(&n.rollout, &running, BASELINED, t(10)).acts.is_empty());
    // Cut off while measuring: measured again (nothing new runs, so it is still the old one).
    assert_eq!(
        next(&n.rollout, &old_only, BASELINED, t(12)).acts,
        [Act::MeasureBaseline("backend".into())]
    );
    let measured = Observed {
        baseline: Baseline::Measured(0.25),
        ..old_only
    };
    let n = next(&n.rollout, &measured, BASELINED, t(31));
    assert_eq!(n.acts, [Act::StartNew("backend".into())]);
    let s = &n.rollout.services[0];
    assert_eq!(s.step, ServiceStep::Starting);
    assert_eq!(s.baseline_latency_seconds, Some(0.25));
    assert_eq!(
        n.rollout.gates_passed,
        ["backend: previous revision's latency 250.0 ms measured"]
    );
}

#[test]
fn a_baseline_that_cannot_be_measured_lets_the_rollout_go_on_saying_the_increase_is_not_judged() {
    let mut r = two();
    r.services[1].step = ServiceStep::Baselining;
    r.services[0].step = ServiceStep::Done;
    let unavailable = Observed {
        baseline: Baseline::Unavailable(
            "3 requests in the window, fewer than minRequests 20".into(),
        ),
        ..seen(up(Probes::Passing), None)
    };
    let n = next(&r, &unavailable, BASELINED, t(31));
    // The frontend publishes a port: its old container stops first.
    assert_eq!(
        n.acts,
        [
            Act::StopOld("frontend".into()),
            Act::StartNew("frontend".into())
        ]
    );
    assert_eq!(n.rollout.services[1].baseline_latency_seconds, None);
    assert_eq!(
        n.rollout.gates_passed,
        ["frontend: no previous latency to compare with (3 requests in the window, fewer than minRequests 20); latency.maxIncrease not judged"]
    );
}

#[test]
fn a_new_service_has_no_previous_latency_to_measure() {
    let r = begin(2, "h", Some(1), &[change("web", None, true)], &[], t(0));
    let n = next(&r, &seen(None, None), BASELINED, t(1));
    assert_eq!(n.acts, [Act::StartNew("web".into())]);
}

#[test]
fn a_failed_analysis_rolls_back_naming_the_gate_and_the_value() {
    let mut r = two();
    r.services[0].step = ServiceStep::Analysing;
    r.services[0].since = Some(t(0));
    let failed = Observed {
        analysis: Analysis::Failed("5xx share 34.0 % is above maxErrorRate 10 %".into()),
        ..seen(up(Probes::Passing), up(Probes::Passing))
    };
    let n = next(&r, &failed, ANALYSED, t(12));
    assert_eq!(n.rollout.phase, RolloutPhase::RollingBack);
    assert_eq!(
        n.rollout.failure.as_deref(),
        Some("backend: analysis failed: 5xx share 34.0 % is above maxErrorRate 10 %")
    );
    assert_eq!(n.acts, [Act::RemoveNew("backend".into())]);
}

#[test]
fn an_analysis_lost_with_a_killed_operator_starts_again() {
    let mut r = two();
    r.services[0].new_container = Some("new-id".into());
    r.services[0].step = ServiceStep::Analysing;
    r.services[0].since = Some(t(0));
    let n = next(
        &r,
        &seen(up(Probes::Passing), up(Probes::Passing)),
        ANALYSED,
        t(5),
    );
    assert_eq!(n.acts, [Act::Analyse("backend".into())]);
    assert_eq!(n.rollout, r);
}

#[test]
fn a_kill_between_recording_starting_and_starting_repeats_the_start() {
    let mut r = two();
    r.services[1].step = ServiceStep::Starting;
    r.services[0].step = ServiceStep::Done;
    // The old frontend was stopped, the new one never created.
    let n = next(&r, &seen(stopped(), None), LIMITS, t(5));
    assert_eq!(n.acts, [Act::StartNew("frontend".into())]);
    assert_eq!(n.rollout, r);
    // Killed before even the stop: both again.
    let n = next(&r, &seen(up(Probes::Passing), None), LIMITS, t(5));
    assert_eq!(
        n.acts,
        [
            Act::StopOld("frontend".into()),
            Act::StartNew("frontend".into())
        ]
    );
}

#[test]
fn a_rollback_brings_services_back_newest_first_each_old_container_running_before_the_new_goes() {
    let mut r = two();
    r.phase = RolloutPhase::RollingBack;
    r.services[0].step = ServiceStep::Done;
    r.services[1].step = ServiceStep::Verifying;
    // frontend (published port): the new container goes first, then the old one starts.
    let n = next(&r, &seen(stopped(), up(Probes::Passing)), LIMITS, t(1));
    assert_eq!(n.acts, [Act::RemoveNew("frontend".into())]);
    let n = next(&n.rollout, &seen(stopped(), None), LIMITS, t(2));
    assert_eq!(n.acts, [Act::StartOld("frontend".into())]);
    let n = next(&n.rollout, &seen(up(Probes::Unknown), None), LIMITS, t(3));
    assert_eq!(
        steps(&n.rollout),
        [ServiceStep::Done, ServiceStep::Reverted]
    );
    assert_eq!(n.rollout.phase, RolloutPhase::RollingBack);

    // backend (surge): its old container starts beside the new one and must pass first.
    let n = next(
        &n.rollout,
        &seen(stopped(), up(Probes::Passing)),
        LIMITS,
        t(4),
    );
    assert_eq!(n.acts, [Act::StartOld("backend".into())]);
    let n2 = next(
        &n.rollout,
        &seen(up(Probes::Unknown), up(Probes::Passing)),
        LIMITS,
        t(5),
    );
    assert!(n2.acts.is_empty());
    let n = next(
        &n2.rollout,
        &seen(up(Probes::Passing), up(Probes::Passing)),
        LIMITS,
        t(6),
    );
    assert_eq!(n.acts, [Act::RemoveNew("backend".into())]);
    let n = next(&n.rollout, &seen(up(Probes::Passing), None), LIMITS, t(7));
    assert_eq!(n.rollout.phase, RolloutPhase::RolledBack);
    assert_eq!(n.rollout.finished, Some(t(7)));
    assert_eq!(
        steps(&n.rollout),
        [ServiceStep::Reverted, ServiceStep::Reverted]
    );
}

#[test]
fn a_new_service_is_simply_removed_on_rollback() {
    let mut r = begin(2, "h", Some(1), &[change("cache", None, true)], &[], t(0));
    r.phase = RolloutPhase::RollingBack;
    r.services[0].step = ServiceStep::Verifying;
    let n = next(
        &r,
        &seen(None, up(Probes::Failing("refused".into()))),
        LIMITS,
        t(1),
    );
    assert_eq!(n.acts, [Act::RemoveNew("cache".into())]);
    let n = next(&n.rollout, &seen(None, None), LIMITS, t(2));
    assert_eq!(n.rollout.phase, RolloutPhase::RolledBack);
}

#[test]
fn a_finished_rollout_does_nothing_more() {
    let mut r = two();
    for phase in [RolloutPhase::Complete, RolloutPhase::RolledBack] {
        r.phase = phase;
        let n = next(
            &r,
            &seen(up(Probes::Passing), up(Probes::Passing)),
            LIMITS,
            t(99),
        );
        assert_eq!(
            n,
            Next {
                rollout: r.clone(),
                acts: vec![]
            }
        );
    }
}

fn verdict(vs: &[crate::api::Verdict], t: crate::api::ConditionType) -> &crate::api::Verdict {
    vs.iter()
        .rev()
        .find(|v| v.type_ == t)
        .expect("a verdict of that type")
}

#[test]
fn a_stack_running_two_revisions_is_never_ready_and_the_message_is_stable_between_passes() {
    use crate::api::{ConditionStatus, ConditionType, Reason};
    let mut r = two();
    r.services[0].step = ServiceStep::Verifying;
    r.services[0].since = Some(t(5));
    let vs = verdicts(Some(&r), "h4");
    let ready = verdict(&vs, ConditionType::Ready);
    assert_eq!(
        (ready.status, ready.reason),
        (ConditionStatus::False, Reason::RollingOut)
    );
    let progressing = verdict(&vs, ConditionType::Progressing);
    assert_eq!(
        progressing.message,
        "rolling out revision 4: backend 1/2: waiting for its new container's probes since 08:00:05Z"
    );
    assert_eq!(verdicts(Some(&r), "h4"), vs);
}

#[test]
fn a_rolled_back_stack_is_not_ready_and_rolled_back_says_why() {
    use crate::api::{ConditionStatus, ConditionType, Reason};
    let mut r = two();
    r.phase = RolloutPhase::RolledBack;
    r.failure =
        Some("backend: analysis failed: 5xx share 34.0 % is above maxErrorRate 10 %".into());
    let vs = verdicts(Some(&r), "h4");
    let rolled = verdict(&vs, ConditionType::RolledBack);
    assert_eq!(
        (rolled.status, rolled.reason),
        (ConditionStatus::True, Reason::GateFailed)
    );
    assert!(
        rolled.message.starts_with(
            "revision 4 was rolled back to revision 3: backend: analysis failed: 5xx share 34.0 %"
        ),
        "{}",
        rolled.message
    );
    assert_eq!(
        verdict(&vs, ConditionType::Ready).status,
        ConditionStatus::False
    );
    assert_eq!(
        verdict(&vs, ConditionType::Progressing).status,
        ConditionStatus::False
    );

    let moved_on = verdicts(Some(&r), "h5");
    assert_eq!(
        verdict(&moved_on, ConditionType::RolledBack).status,
        ConditionStatus::False
    );
    r.phase = RolloutPhase::Complete;
    r.gates_passed = vec!["backend: probes pass".into()];
    let vs = verdicts(Some(&r), "h4");
    assert_eq!(
        vs.len(),
        1,
        "a completed rollout leaves Ready to the report"
    );
    assert_eq!(
        verdict(&vs, ConditionType::RolledBack).status,
        ConditionStatus::False
    );
}

#[test]
fn only_services_publishing_no_port_writing_no_volume_and_without_a_fixed_name_surge_and_recreate_forces_a_stop_first(
) {
    use crate::api::Strategy;
    use crate::decide::plan::{Action, Plan};
    let project = super::plan_tests::project(
        "services:\n  api:\n    image: a:2\n  web:\n    image: w:2\n    ports: ['8080:80']\n  \
         db:\n    image: d:2\n    container_name: shop-db\n  any:\n    image: x:2\n    ports: ['80']\n  new:\n    image: n:1\n  \
         pg:\n    image: p:2\n    volumes: ['pgdata:/var/lib/postgresql/data']\n  \
         files:\n    image: f:2\n    volumes: ['/srv/data:/data']\n  \
         ro:\n    image: r:2\n    volumes: ['pgdata:/seed:ro', '/tmp']\n\
         volumes:\n  pgdata: {}\n",
    );
    let recreate = |s: &str| Action::Recreate {
        service: s.into(),
        old_id: format!("old-{s}"),
    };
    let plan = Plan {
        actions: vec![
            recreate("db"),
            recreate("api"),
            recreate("web"),
            recreate("any"),
            recreate("pg"),
            recreate("files"),
            recreate("ro"),
            Action::Create {
                service: "new".into(),
            },
            Action::PullImage {
                service: "api".into(),
                image: "a:2".into(),
            },
        ],
        ..Plan::default()
    };
    let surge = |strategy| {
        changes(&plan, &project, strategy)
            .into_iter()
            .map(|c| (c.service, c.can_surge))
            .collect::<Vec<_>>()
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        surge(Strategy::Auto),
        [
            (s("db"), false),
            (s("api"), true),
            (s("web"), false),
            (s("any"), false),
            (s("pg"), false),
            (s("files"), false),
            (s("ro"), true),
            (s("new"), true)
        ]
    );
    assert!(surge(Strategy::Recreate).iter().all(|(_, can)| !can));
    assert!(!rolls_out(None, &changes(&plan, &project, Strategy::Auto)));
    assert!(rolls_out(
        Some(1),
        &changes(&plan, &project, Strategy::Auto)
    ));
}

#[test]
fn converge_leaves_a_rollouts_services_alone_and_a_rolled_back_spec_until_it_changes() {
    let mut r = two();
    let both = std::collections::BTreeSet::from(["backend".to_owned(), "frontend".to_owned()]);
    assert_eq!(held(Some(&r), "h4"), both);
    r.phase = RolloutPhase::RolledBack;
    assert_eq!(held(Some(&r), "h4"), both);
    assert!(
        held(Some(&r), "h5").is_empty(),
        "a changed spec is rolled out afresh"
    );
    r.phase = RolloutPhase::Complete;
    assert!(held(Some(&r), "h4").is_empty());
    assert!(held(None, "h4").is_empty());
}

#[test]
fn a_changed_service_waiting_for_a_changed_dependency_is_part_of_the_same_rollout() {
    use crate::api::Strategy;
    use crate::decide::plan::{Action, Plan};
    let project = super::plan_tests::project(
        "services:\n  redis:\n    image: r:2\n    healthcheck: {test: ['CMD', 'true']}\n  \
         api:\n    image: a:2\n    depends_on: {redis: {condition: service_healthy}}\n",
    );
    let plan = Plan {
        actions: vec![Action::Recreate {
            service: "redis".into(),
            old_id: "old-r".into(),
        }],
        deferred: vec![Action::Recreate {
            service: "api".into(),
            old_id: "old-a".into(),
        }],
        ..Plan::default()
    };
    let names: Vec<String> = changes(&plan, &project, Strategy::Auto)
        .into_iter()
        .map(|c| c.service)
        .collect();
    assert_eq!(names, ["redis", "api"]);
}
