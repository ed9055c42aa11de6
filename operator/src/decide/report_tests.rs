//! How a pass's outcome becomes per-service status, the Ready and Progressing conditions and
//! the one-word stack health. Pure: no Docker, no clock.

use super::plan::Outcome;
use super::plan::{Hold, Plan};
use super::plan_tests::{exited, project, running, stack_with, UID};
use super::report::Report;
use crate::api::EventType;
use crate::api::{
    Condition, ConditionStatus, ConditionType, ContainerHealth, ContainerState, Reason,
    ServiceStatus, StackHealth, Verdict,
};
use crate::compose::{self, Project};
use crate::docker::{Observed, ObservedContainer};

/// db has a healthcheck, api waits for it, cache has no healthcheck.
/// The report of the stack that owns containers labelled with [`UID`].
fn report(p: &Project, o: &Outcome, required: &[String], suspended: bool) -> Report {
    let facts = super::report::Facts {
        required,
        suspended,
        ..Default::default()
    };
    super::report::report(
        p,
        o,
        &crate::docker::Claim::labelled(UID),
        &facts,
        &Default::default(),
    )
}

const STACK: &str = r#"
services:
  api:
    image: example/api:1
    depends_on:
      db: {condition: service_healthy}
  db:
    image: example/db:1
    healthcheck: {test: ["CMD-SHELL", "pg_isready"], interval: 1s, retries: 3}
  cache:
    image: example/cache:1
"#;

/// A pass that changed nothing (revision 3) and then saw these containers.
fn outcome(containers: Vec<ObservedContainer>) -> Outcome {
    Outcome {
        plan: Plan {
            revision: 3,
            ..Default::default()
        },
        observed: Observed {
            containers,
            ..Default::default()
        },
        failures: Vec::new(),
        acted: false,
        events: Vec::new(),
    }
}

/// Every service of `p` running its current config, healthy where it has a healthcheck.
fn all_up(p: &Project) -> Vec<ObservedContainer> {
    p.services.iter().map(|s| running(p, &s.name)).collect()
}

/// All up, except `service`'s container, which is replaced by `f(it)` (or absent for `None`).
fn all_up_but(
    p: &Project,
    service: &str,
    f: impl Fn(ObservedContainer) -> Option<ObservedContainer>,
) -> Vec<ObservedContainer> {
    all_up(p)
        .into_iter()
        .filter_map(|c| if c.service == service { f(c) } else { Some(c) })
        .collect()
}

/// Every service required (no `spec.health.services.*.optional`).
fn all_required(p: &Project) -> Vec<String> {
    p.service_names()
}

fn verdict(r: &Report, type_: ConditionType) -> &Verdict {
    r.verdicts
        .iter()
        .find(|v| v.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} verdict in {:#?}", r.verdicts))
}

fn assert_verdict(r: &Report, type_: ConditionType, status: ConditionStatus, reason: Reason) {
    let v = verdict(r, type_);
    assert_eq!(
        (v.status, v.reason),
        (status, reason),
        "{type_}: {}",
        v.message
    );
}

fn hold(service: &str, reason: Reason, message: &str) -> Hold {
    Hold {
        service: service.to_owned(),
        reason,
        message: message.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Ready
// ---------------------------------------------------------------------------------------------

#[test]
fn ready_when_every_required_service_runs_its_current_config_and_is_healthy() {
    let p = project(STACK);
    let r = report(&p, &outcome(all_up(&p)), &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::AllServicesReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "all 3 required services run and pass their health checks"
    );
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::Converged,
    );
    assert_eq!(
        verdict(&r, ConditionType::Progressing).message,
        "revision 3 is applied"
    );
    assert!(
        r.verdicts
            .iter()
            .all(|v| v.type_ != ConditionType::InvalidSpec),
        "no conflict, no InvalidSpec verdict"
    );
    assert_eq!(r.health, StackHealth::Healthy);
    assert!(!r.progressing);
}

#[test]
fn a_running_service_without_healthcheck_counts_as_ready() {
    let p = project(STACK);
    let r = report(&p, &outcome(all_up(&p)), &["cache".to_owned()], false);
    assert_eq!(r.services["cache"].health, None);
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::AllServicesReady,
    );
}

#[test]
fn a_required_service_without_a_container_is_not_ready() {
    let p = project(STACK);
    let r = report(
        &p,
        &outcome(all_up_but(&p, "cache", |_| None)),
        &all_required(&p),
        false,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ServicesNotReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "cache: no container"
    );
    assert_eq!(r.services["cache"], ServiceStatus::default());
    assert_eq!(r.services["cache"].state, ContainerState::Missing);
    assert_eq!(r.health, StackHealth::Unhealthy);
}

#[test]
fn an_unhealthy_required_service_is_not_ready() {
    let p = project(STACK);
    let containers = all_up_but(&p, "db", |c| {
        Some(ObservedContainer {
            health: Some(ContainerHealth::Unhealthy),
            ..c
        })
    });
    let r = report(&p, &outcome(containers), &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ServicesNotReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "db: running but unhealthy"
    );
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::Converged,
    );
    assert_eq!(r.health, StackHealth::Unhealthy);
}

#[test]
fn a_required_service_running_an_outdated_config_is_not_ready() {
    let p = project(STACK);
    let containers = all_up_but(&p, "api", |c| {
        Some(ObservedContainer {
            config_hash: Some("0ld".into()),
            ..c
        })
    });
    let r = report(&p, &outcome(containers), &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ServicesNotReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "api: running an outdated config"
    );
}

#[test]
fn an_adopted_container_docker_compose_created_from_the_same_file_is_ready() {
    let p = project(STACK);
    let adopted = |c: ObservedContainer| {
        let svc = p.service(&c.service).unwrap();
        ObservedContainer {
            uid: None,
            config_hash: None,
            compose_hash: Some(svc.compose_hash(None)),
            ..c
        }
    };
    let containers: Vec<_> = all_up(&p).into_iter().map(adopted).collect();
    let claim = crate::docker::Claim {
        uid: UID.to_owned(),
        unlabelled: true,
    };
    let required = all_required(&p);
    let facts = super::report::Facts {
        required: &required,
        ..Default::default()
    };
    let r = super::report::report(
        &p,
        &outcome(containers),
        &claim,
        &facts,
        &Default::default(),
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::AllServicesReady,
    );
}

#[test]
fn a_stopped_required_service_is_not_ready_and_its_exit_code_is_shown() {
    let p = project(STACK);
    let r = report(
        &p,
        &outcome(all_up_but(&p, "cache", |c| Some(exited(c, 137)))),
        &all_required(&p),
        false,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ServicesNotReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "cache: exited (exit code 137)"
    );
    assert_eq!(r.services["cache"].state, ContainerState::Exited);
    assert_eq!(r.services["cache"].exit_code, Some(137));
}

#[test]
fn every_not_ready_required_service_is_named_in_the_message() {
    let p = project(STACK);
    let r = report(
        &p,
        &outcome(vec![running(&p, "db")]),
        &all_required(&p),
        false,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "api: no container; cache: no container"
    );
}

#[test]
fn an_optional_service_being_down_keeps_the_stack_ready() {
    let stack = stack_with(
        STACK,
        serde_json::json!({ "health": { "services": { "cache": { "optional": true } } } }),
    );
    let p = compose::load(&stack).expect("valid");
    let required = crate::admit::required_services(&stack, &p);
    assert_eq!(required, ["db", "api"]);
    let r = report(
        &p,
        &outcome(all_up_but(&p, "cache", |c| Some(exited(c, 1)))),
        &required,
        false,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::AllServicesReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "all 2 required services run and pass their health checks"
    );
    assert_eq!(r.health, StackHealth::Healthy);
    // Its state is still reported.
    assert_eq!(r.services["cache"].state, ContainerState::Exited);
    assert_eq!(r.services["cache"].exit_code, Some(1));
}

// ---------------------------------------------------------------------------------------------
// Progressing, in order of precedence
// ---------------------------------------------------------------------------------------------

#[test]
fn a_starting_health_check_is_progressing_waiting_for_healthy() {
    let p = project(STACK);
    let containers = all_up_but(&p, "db", |c| {
        Some(ObservedContainer {
            health: Some(ContainerHealth::Starting),
            ..c
        })
    });
    let r = report(&p, &outcome(containers), &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::True,
        Reason::WaitingForHealthy,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ServicesNotReady,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        "db: running, health check starting"
    );
    assert_eq!(r.health, StackHealth::Progressing);
    assert!(r.progressing);
}

#[test]
fn waiting_for_dependencies_is_progressing_and_says_who_waits_for_what() {
    let p = project(STACK);
    let mut o = outcome(all_up_but(&p, "api", |_| None));
    o.plan.waiting = vec![hold(
        "api",
        Reason::WaitingForDependencies,
        "api waits for db to be healthy",
    )];
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::True,
        Reason::WaitingForDependencies,
    );
    assert_eq!(
        verdict(&r, ConditionType::Progressing).message,
        "api waits for db to be healthy"
    );
    assert_eq!(r.health, StackHealth::Progressing);
}

#[test]
fn a_pass_that_acted_is_progressing_applying_its_revision() {
    let p = project(STACK);
    let mut o = outcome(all_up_but(&p, "api", |_| None));
    o.acted = true;
    o.plan.waiting = vec![hold(
        "api",
        Reason::WaitingForDependencies,
        "api waits for db to be healthy",
    )];
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::True,
        Reason::Applying,
    );
    assert_eq!(
        verdict(&r, ConditionType::Progressing).message,
        "applying revision 3"
    );
    assert_eq!(r.health, StackHealth::Progressing);
    assert!(r.progressing);
}

#[test]
fn a_blocked_service_stops_progress_even_while_others_are_applied() {
    let p = project(STACK);
    let mut o = outcome(all_up_but(&p, "api", |_| None));
    o.acted = true;
    let why = "image example/api:1 of service api is not on the engine and pull_policy is never; build or load it";
    o.plan.blocked = vec![hold("api", Reason::ImageNotFound, why)];
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::ImageNotFound,
    );
    assert_eq!(verdict(&r, ConditionType::Progressing).message, why);
    // Ready carries the reason a person must act on, and both what is down and why.
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ImageNotFound,
    );
    assert_eq!(
        verdict(&r, ConditionType::Ready).message,
        format!("api: no container; {why}")
    );
    assert_eq!(r.health, StackHealth::Unhealthy);
    assert!(!r.progressing);
}

#[test]
fn a_missing_external_resource_is_reported_as_apply_failed() {
    let p = project(STACK);
    let mut o = outcome(all_up_but(&p, "db", |_| None));
    o.plan.blocked = vec![hold(
        "db",
        Reason::ApplyFailed,
        "external volume backups does not exist; create it",
    )];
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::ApplyFailed,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ApplyFailed,
    );
}

#[test]
fn failures_stop_progress_with_apply_failed_and_ready_false_for_that_reason() {
    let p = project(STACK);
    let mut o = outcome(all_up_but(&p, "api", |_| None));
    o.acted = true;
    o.failures = vec![(
        "api".to_owned(),
        "creating container demo-api-1: no space left on device".to_owned(),
    )];
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::ApplyFailed,
    );
    let progressing = &verdict(&r, ConditionType::Progressing).message;
    assert_eq!(
        progressing,
        "api: creating container demo-api-1: no space left on device; retrying with backoff"
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ApplyFailed,
    );
    let ready = &verdict(&r, ConditionType::Ready).message;
    assert!(
        ready.starts_with("api: no container; ") && ready.contains("no space left on device"),
        "{ready}"
    );
    assert_eq!(r.health, StackHealth::Unhealthy);
    assert!(!r.progressing);
}

#[test]
fn a_failure_that_leaves_every_required_service_up_keeps_the_stack_ready() {
    let p = project(STACK);
    let mut o = outcome(all_up(&p));
    o.acted = true;
    o.failures = vec![(
        "worker".to_owned(),
        "removing container: conflict".to_owned(),
    )];
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::ApplyFailed,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::AllServicesReady,
    );
    assert_eq!(r.health, StackHealth::Healthy);
}

#[test]
fn a_project_name_conflict_is_an_invalid_spec_and_never_ready() {
    let p = project(STACK);
    let mut o = outcome(Vec::new());
    let conflict = "containers not created by this ServiceStack already use compose project \"demo\" (demo-db-1); remove them or set spec.compose.projectName to another name";
    o.plan.conflict = Some(conflict.to_owned());
    let r = report(&p, &o, &all_required(&p), false);
    assert_verdict(
        &r,
        ConditionType::InvalidSpec,
        ConditionStatus::True,
        Reason::ProjectNameInUse,
    );
    assert_eq!(verdict(&r, ConditionType::InvalidSpec).message, conflict);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::ProjectNameInUse,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ProjectNameInUse,
    );
    assert!(verdict(&r, ConditionType::Ready)
        .message
        .ends_with(conflict));
    // The containers are someone else's: nothing is known of this stack's own.
    assert_eq!(r.health, StackHealth::Unknown);
    assert!(!r.progressing);
}

#[test]
fn a_conflict_outranks_suspend() {
    let p = project(STACK);
    let mut o = outcome(Vec::new());
    o.plan.conflict = Some("containers not created by this ServiceStack ...".to_owned());
    let r = report(&p, &o, &all_required(&p), true);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::ProjectNameInUse,
    );
}

#[test]
fn a_suspended_stack_is_not_progressing_and_still_reports_readiness() {
    let p = project(STACK);
    let r = report(&p, &outcome(all_up(&p)), &all_required(&p), true);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::Suspended,
    );
    assert!(verdict(&r, ConditionType::Progressing)
        .message
        .contains("spec.suspend"));
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::AllServicesReady,
    );
    assert_eq!(r.health, StackHealth::Healthy);
    assert!(!r.progressing);
}

#[test]
fn a_suspended_stack_with_a_service_down_is_unhealthy_not_progressing() {
    let p = project(STACK);
    let mut o = outcome(all_up_but(&p, "api", |_| None));
    // The planner still has work, but a suspended stack does none of it.
    o.plan.waiting = vec![hold(
        "api",
        Reason::WaitingForDependencies,
        "api waits for db to be healthy",
    )];
    let r = report(&p, &o, &all_required(&p), true);
    assert_verdict(
        &r,
        ConditionType::Progressing,
        ConditionStatus::False,
        Reason::Suspended,
    );
    assert_verdict(
        &r,
        ConditionType::Ready,
        ConditionStatus::False,
        Reason::ServicesNotReady,
    );
    assert_eq!(r.health, StackHealth::Unhealthy);
}

#[test]
fn stack_health_is_healthy_when_ready_progressing_while_work_goes_on_unhealthy_otherwise() {
    let p = project(STACK);
    let starting = all_up_but(&p, "db", |c| {
        Some(ObservedContainer {
            health: Some(ContainerHealth::Starting),
            ..c
        })
    });
    let unhealthy = all_up_but(&p, "db", |c| {
        Some(ObservedContainer {
            health: Some(ContainerHealth::Unhealthy),
            ..c
        })
    });
    let cases = [
        ("all up", all_up(&p), StackHealth::Healthy),
        ("health check starting", starting, StackHealth::Progressing),
        (
            "unhealthy, nothing left to do",
            unhealthy,
            StackHealth::Unhealthy,
        ),
        (
            "nothing runs, nothing planned",
            Vec::new(),
            StackHealth::Unhealthy,
        ),
    ];
    for (what, containers, health) in cases {
        assert_eq!(
            report(&p, &outcome(containers), &all_required(&p), false).health,
            health,
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Per-service status
// ---------------------------------------------------------------------------------------------

#[test]
fn service_status_shows_state_health_image_short_id_and_restarts() {
    let p = project(STACK);
    let db = ObservedContainer {
        restart_count: 2,
        exit_code: Some(0),
        ..running(&p, "db")
    };
    let r = report(&p, &outcome(vec![db.clone()]), &all_required(&p), false);
    assert_eq!(
        r.services["db"],
        ServiceStatus {
            state: ContainerState::Running,
            health: Some(ContainerHealth::Healthy),
            image: Some("example/db:1".into()),
            container_id: Some(db.id[..12].to_owned()),
            // A running container has no exit code to show, even if Docker kept the last one.
            exit_code: None,
            docker_restarts: 2,
            ..Default::default()
        }
    );
    assert_eq!(
        r.services.keys().collect::<Vec<_>>(),
        ["api", "cache", "db"]
    );
}

#[test]
fn containers_without_a_stackwarden_uid_are_not_shown_as_the_services() {
    let p = project(STACK);
    let by_hand = ObservedContainer {
        uid: None,
        ..running(&p, "db")
    };
    let r = report(&p, &outcome(vec![by_hand]), &all_required(&p), false);
    assert_eq!(r.services["db"].state, ContainerState::Missing);
}

#[test]
fn a_conflicting_stack_does_not_report_another_stacks_containers_as_its_own() {
    let p = project(STACK);
    let theirs: Vec<_> = all_up(&p)
        .into_iter()
        .map(|c| ObservedContainer {
            uid: Some("another-stack".into()),
            ..c
        })
        .collect();
    let mut o = outcome(theirs);
    o.plan.conflict = Some(
        "containers not created by this ServiceStack already use compose project \"demo\""
            .to_owned(),
    );
    let r = report(&p, &o, &all_required(&p), false);
    assert_eq!(r.services["db"].state, ContainerState::Missing);
}

#[test]
fn ready_message_of_a_conflict_has_no_leading_separator() {
    let p = project(STACK);
    let mut o = outcome(Vec::new());
    o.plan.conflict = Some(
        "containers not created by this ServiceStack already use compose project \"demo\""
            .to_owned(),
    );
    // Every service optional: nothing is "not ready", only the conflict.
    let r = report(&p, &o, &[], false);
    let msg = &verdict(&r, ConditionType::Ready).message;
    assert!(!msg.starts_with("; "), "{msg:?}");
}

fn cond(type_: ConditionType, status: ConditionStatus, reason: Reason, message: &str) -> Condition {
    Condition {
        type_,
        status,
        reason,
        message: message.to_owned(),
        last_transition_time: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        observed_generation: Some(1),
    }
}

fn told(previous: &[Condition], current: &[Condition]) -> Vec<(String, String)> {
    super::report::transition_events(previous, current)
        .into_iter()
        .map(|e| {
            assert_eq!(e.type_, EventType::Warning);
            (e.reason.to_string(), e.note)
        })
        .collect()
}

#[test]
fn a_condition_that_turns_bad_is_told_once_and_not_again_while_it_stays() {
    use ConditionStatus::{False, True};
    let ok = [cond(
        ConditionType::Degraded,
        False,
        Reason::WithinRestartBudget,
        "fine",
    )];
    let bad = [cond(
        ConditionType::Degraded,
        True,
        Reason::RestartBudgetExhausted,
        "api crashed 5 times",
    )];
    assert_eq!(
        told(&ok, &bad),
        [(
            "RestartBudgetExhausted".to_owned(),
            "api crashed 5 times".to_owned()
        )]
    );
    assert!(
        told(&bad, &bad).is_empty(),
        "a stack stuck in a bad state tells nothing new"
    );
    assert!(told(&bad, &ok).is_empty(), "recovering is not a warning");
    assert_eq!(
        told(&[], &bad).len(),
        1,
        "a first status that is bad is told"
    );
}

#[test]
fn a_second_problem_with_the_same_reason_is_told_with_its_own_message() {
    use ConditionStatus::True;
    let first = [cond(
        ConditionType::InvalidSpec,
        True,
        Reason::MalformedCompose,
        "line 3: bad indent",
    )];
    let second = [cond(
        ConditionType::InvalidSpec,
        True,
        Reason::MalformedCompose,
        "line 9: tab",
    )];
    assert_eq!(
        told(&first, &second),
        [("MalformedCompose".to_owned(), "line 9: tab".to_owned())]
    );
}

#[test]
fn only_conditions_that_mean_trouble_are_told() {
    use ConditionStatus::{False, True};
    let quiet = [
        cond(
            ConditionType::Ready,
            False,
            Reason::ServicesNotReady,
            "api: no container",
        ),
        cond(
            ConditionType::Progressing,
            True,
            Reason::Applying,
            "applying revision 2",
        ),
        cond(
            ConditionType::Progressing,
            False,
            Reason::Converged,
            "revision 2 is applied",
        ),
        cond(
            ConditionType::BackupFailed,
            True,
            Reason::DumpFailed,
            "told by the job's own event",
        ),
        cond(
            ConditionType::DockerUnreachable,
            False,
            Reason::EngineReachable,
            "answers",
        ),
        cond(
            ConditionType::SpecWarning,
            False,
            Reason::NoSpecWarnings,
            "nothing risky in the spec",
        ),
    ];
    for c in &quiet {
        assert!(told(&[], std::slice::from_ref(c)).is_empty(), "{c:?}");
    }
    for (type_, status, reason) in [
        (ConditionType::Progressing, False, Reason::ImageNotFound),
        (ConditionType::Progressing, False, Reason::ApplyFailed),
        (
            ConditionType::Progressing,
            False,
            Reason::PreDeployBackupFailed,
        ),
        (
            ConditionType::DockerUnreachable,
            True,
            Reason::EngineUnreachable,
        ),
        (ConditionType::InvalidSpec, True, Reason::ProjectNameInUse),
        (
            ConditionType::SpecWarning,
            True,
            Reason::DockerSocketMounted,
        ),
    ] {
        let c = cond(type_, status, reason, "trouble");
        assert_eq!(told(&[], &[c]).len(), 1, "{reason:?}");
    }
}
