//! Rollouts on the real Docker engine (issue 11): a changed service is replaced one at a time,
//! beside its old container when it publishes no port, and a new revision that fails its gates
//! is rolled back to the containers of the previous one.

use std::time::Duration;

use stackwarden::api::revision::Phase;
use stackwarden::api::rollout_status::{Method, RolloutPhase, ServiceStep};
use stackwarden::api::{ConditionStatus, ConditionType, ServiceStackSpec};
use stackwarden::store::local::LocalStore;
use stackwarden_tests::harness::{
    demo_spec, docker, metric_sum, poller_summary, start_poller, unpublished_demo,
    with_backend_env, Containers, Harness,
};
use stackwarden_tests::trap::{Act, Trapped};

const TIMEOUT: Duration = Duration::from_secs(180);

fn rollout_phase(h: &Harness) -> Option<RolloutPhase> {
    h.status().rollout.map(|r| r.phase)
}

fn ready(h: &Harness) -> bool {
    h.condition(ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True)
}

#[tokio::test]
async fn a_good_update_is_surged_in_without_a_failed_request_and_both_revisions_are_kept() {
    let h = Harness::new("roll-good");
    let spec = unpublished_demo(&h.project);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let old = h.containers()["backend"].clone();

    let (poller, _cleanup) = poll_backend(&h);

    h.apply(with_backend_env(&spec, "DEMO_RELEASE", "2"));
    h.until(
        "the rollout to complete and the stack Ready",
        TIMEOUT,
        |h| rollout_phase(h) == Some(RolloutPhase::Complete) && ready(h),
    )
    .await;
    let summary = poller_summary(&poller);

    let rollout = h.status().rollout.unwrap();
    assert_eq!(rollout.revision, 2);
    assert_eq!(
        rollout.services.len(),
        1,
        "only the backend changed: {rollout:?}"
    );
    assert_eq!(rollout.services[0].method, Method::Surge);
    assert!(summary["requests"].as_u64().unwrap() > 0, "{summary}");
    // The old backend is still on the alias when it gets SIGTERM: the demo app answers what it
    // had queued before it closes its listener (demo::drain), so no request is lost.
    assert_eq!(
        summary["failed"].as_u64(),
        Some(0),
        "requests failed during the rollout: {summary}"
    );
    assert_eq!(backends(&h).len(), 1, "the old backend is gone");
    assert_ne!(h.containers()["backend"], old);
    let history = h.store.read_revisions(&h.stack()).unwrap();
    let phases: Vec<(u64, Phase)> = history
        .iter()
        .map(|r| (r.revision.number, r.outcome.phase))
        .collect();
    assert_eq!(phases, [(1, Phase::Complete), (2, Phase::Complete)]);
    let metrics = h.ctx.metrics.render();
    let complete =
        r#"stackwarden_rollouts_total{namespace="e2e",name="roll-good",outcome="Complete"} 1"#;
    assert!(metrics.contains(complete), "{metrics}");
    // Starting, Verifying and Retiring of the backend, each measured once.
    let steps = metric_sum(&metrics, "stackwarden_rollout_step_duration_seconds_count");
    assert_eq!(steps, 3.0, "{metrics}");
}

/// Applies `bad` on a Ready stack and waits for it to be rolled back; returns the RolledBack
/// message.
async fn rolled_back(h: &Harness, bad: ServiceStackSpec) -> String {
    let old = h.containers()["backend"].clone();
    let warnings_before = warnings(h);
    h.apply(bad);
    h.until("the rollout to be rolled back", TIMEOUT, |h| {
        rollout_phase(h) == Some(RolloutPhase::RolledBack)
    })
    .await;
    // The previous revision's container serves again, and nothing else of the backend runs.
    h.until("the old backend alone and healthy", TIMEOUT, |h| {
        backends(h) == [old.clone()] && health(&old) == "healthy"
    })
    .await;
    let ready = h.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        ready.status,
        ConditionStatus::False,
        "a rolled-back stack is not Ready"
    );
    let rolled = h
        .condition(ConditionType::RolledBack)
        .expect("RolledBack condition");
    assert_eq!(rolled.status, ConditionStatus::True);
    let new_warnings: Vec<String> = warnings(h)
        .into_iter()
        .skip(warnings_before.len())
        .collect();
    assert_eq!(new_warnings.len(), 1, "one Warning event: {new_warnings:?}");
    // Not tried again while the spec stays as it is.
    let calls_rev = h.status().rollout.unwrap().revision;
    h.pass().await;
    h.pass().await;
    assert_eq!(h.containers()["backend"], old);
    assert_eq!(rollout_phase(h), Some(RolloutPhase::RolledBack));
    assert_eq!(h.status().rollout.unwrap().revision, calls_rev);
    let history = h.store.read_revisions(&h.stack()).unwrap();
    assert_eq!(history.last().unwrap().outcome.phase, Phase::RolledBack);
    rolled.message
}

/// A client on the project network calling the backend every 20 ms (see `start_poller`);
/// its name, and the guard that removes it.
fn poll_backend(h: &Harness) -> (String, Containers) {
    let poller = format!("{}-poller", h.project);
    let cleanup = Containers(vec![poller.clone()]);
    let network = format!("{}_default", h.project);
    start_poller(&poller, &[], &network, "http://backend:8000/");
    (poller, cleanup)
}

/// The spec with the backend judged by its own metrics (port 8000), with these settings.
fn analysed(mut spec: ServiceStackSpec, settings: serde_json::Value) -> ServiceStackSpec {
    let mut analysis = serde_json::json!({"services": ["backend"], "metrics": {"port": 8000}});
    let extra = settings
        .as_object()
        .expect("settings are an object")
        .clone();
    analysis.as_object_mut().unwrap().extend(extra);
    spec.rollout.analysis = Some(serde_json::from_value(analysis).unwrap());
    spec
}

/// Ids (as `docker ps` shows them) of every backend container of the project, any state.
fn backends(h: &Harness) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", h.project),
        "--filter",
        "label=com.docker.compose.service=backend",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn health(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Health.Status}}", id])
        .trim()
        .to_owned()
}

fn warnings(h: &Harness) -> Vec<String> {
    h.events()
        .into_iter()
        .filter(|e| e.type_ == stackwarden::api::EventType::Warning)
        .map(|e| format!("{}: {}", e.reason, e.note))
        .collect()
}

#[tokio::test]
async fn a_new_version_that_crashes_is_rolled_back_to_the_previous_container() {
    let h = Harness::new("roll-crash");
    let spec = demo_spec(&h.project);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let message = rolled_back(&h, with_backend_env(&spec, "DEMO_CRASH_AT_START", "1")).await;
    assert!(
        message.contains("backend: its new container")
            && (message.contains("exited") || message.contains("crashed")),
        "{message}"
    );
}

#[tokio::test]
async fn a_new_version_failing_its_health_check_is_rolled_back_once_its_healthcheck_says_unhealthy()
{
    let h = Harness::new("roll-health");
    // A deadline it never reaches: the unhealthy verdict (3 failed checks 1 s apart) is enough.
    let spec = unpublished_demo(&h.project);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let message = rolled_back(&h, with_backend_env(&spec, "DEMO_FAIL_HEALTH", "1")).await;
    assert_eq!(
        message,
        "revision 2 was rolled back to revision 1: backend: the new container fails its probes: its Docker healthcheck reports unhealthy; it is not tried again until the spec changes"
    );
}

#[tokio::test]
async fn a_new_version_answering_5xx_above_the_limit_is_rolled_back_by_the_analysis() {
    let h = Harness::new("roll-5xx");
    let spec = analysed(
        unpublished_demo(&h.project),
        serde_json::json!({
            "windowSeconds": 20,
            "intervalSeconds": 2,
            "maxErrorRate": 0.1,
            "minRequests": 20,
        }),
    );
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    // Traffic for the analysis to judge: half of it reaches the new container while both run.
    let (_, _cleanup) = poll_backend(&h);
    let message = rolled_back(&h, with_backend_env(&spec, "DEMO_ERROR_RATE", "0.5")).await;
    assert!(
        message.contains("backend: analysis failed: 5xx share")
            && message.contains("maxErrorRate 10 %"),
        "{message}"
    );
    let rollout = h.status().rollout.unwrap();
    assert!(
        rollout
            .gates_passed
            .iter()
            .any(|g| g == "backend: probes pass"),
        "{rollout:?}"
    );
    let metrics = h.ctx.metrics.render();
    let rolled_back = metric_sum(&metrics, "stackwarden_rollouts_total");
    assert_eq!(rolled_back, 1.0, "{metrics}");
    assert!(metrics.contains(r#"outcome="RolledBack"} 1"#), "{metrics}");
    let ratio = metric_sum(&metrics, "stackwarden_rollout_gate_value");
    assert!(ratio > 0.1, "the 5xx share the gate saw: {metrics}");
}

/// Runs passes of a new operator whose engine hangs at the first action `pick` chooses, until
/// it does; then that operator is dropped mid-pass (killed between recording the act and doing
/// it) and a fresh one takes over the same state.
async fn killed_at(h: &mut Harness, what: &str, pick: stackwarden_tests::trap::Pick) {
    h.restart_operator();
    let host = h.stack().spec.docker.host().to_owned();
    let real = h.ctx.engines.engine(&host).await.unwrap();
    let trap = Trapped::new(real, pick);
    h.ctx.engines.stand_in(&host, trap.clone());
    let start = std::time::Instant::now();
    while !trap.has_sprung() {
        tokio::select! {
            r = h.pass() => {
                never_mixed_and_ready(h);
                tokio::time::sleep(r.0.min(Duration::from_millis(250))).await;
            }
            () = trap.sprung() => {}
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the operator never reached {what}: {:#?}",
            h.status()
        );
    }
    h.restart_operator();
}

/// The invariant of every pass: a stack whose service runs two revisions is not Ready.
fn never_mixed_and_ready(h: &Harness) {
    let running = running_backends(h);
    assert!(
        !(ready(h) && running.len() > 1),
        "Ready while {} backend containers run: {:#?}",
        running.len(),
        h.status()
    );
}

fn running_backends(h: &Harness) -> Vec<String> {
    backends(h)
        .into_iter()
        .filter(|id| docker(&["inspect", "-f", "{{.State.Running}}", id]).trim() == "true")
        .collect()
}

fn step_of(h: &Harness, service: &str) -> Option<ServiceStep> {
    let rollout = h.status().rollout?;
    let s = rollout.services.iter().find(|s| s.name == service)?;
    Some(s.step)
}

/// Reads the stack's recorded rollout phase from a pick (which runs inside an engine call).
fn phase_in(store: &LocalStore, name: &str) -> Option<RolloutPhase> {
    let record = store.load("e2e", name).ok()??;
    record.to_stack().status?.rollout.map(|r| r.phase)
}

#[tokio::test]
async fn an_operator_killed_at_each_step_of_a_surge_finishes_it_once_and_is_never_ready_mixed() {
    let mut h = Harness::new("roll-kill");
    let spec = analysed(
        unpublished_demo(&h.project),
        serde_json::json!({
            "windowSeconds": 6,
            "intervalSeconds": 2,
            "minRequests": 5,
        }),
    );
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let old = h.containers()["backend"].clone();
    let (_, _cleanup) = poll_backend(&h);
    h.apply(with_backend_env(&spec, "DEMO_RELEASE", "2"));

    // 1. The new container is created, then the operator dies before starting it.
    let old_id = old.clone();
    killed_at(
        &mut h,
        "the start of the new container",
        Box::new(move |act| matches!(act, Act::Start { id } if !id.starts_with(&old_id))),
    )
    .await;
    assert_eq!(backends(&h).len(), 2, "the new container was created");
    // 2. Killed while the analysis gate runs: both containers serve.
    h.until("the analysis gate to run", TIMEOUT, |h| {
        never_mixed_and_ready(h);
        step_of(h, "backend") == Some(ServiceStep::Analysing)
    })
    .await;
    assert_eq!(running_backends(&h).len(), 2, "both run during the gate");
    h.restart_operator();
    // 3. Killed as the old container is being retired.
    let old_id = old.clone();
    killed_at(
        &mut h,
        "the retirement of the old container",
        Box::new(move |act| matches!(act, Act::Retire { id } if old_id.starts_with(id.as_str()) || id.starts_with(&old_id))),
    )
    .await;

    h.until(
        "the rollout to complete and the stack Ready",
        TIMEOUT,
        |h| {
            never_mixed_and_ready(h);
            rollout_phase(h) == Some(RolloutPhase::Complete) && ready(h)
        },
    )
    .await;
    let left = backends(&h);
    assert_eq!(left.len(), 1, "the old backend is gone: {left:?}");
    assert_ne!(left[0], old);
    let rollout = h.status().rollout.unwrap();
    assert!(
        rollout
            .gates_passed
            .iter()
            .any(|g| g.starts_with("backend: analysis")),
        "the analysis ran again after the kill and passed: {rollout:?}"
    );
    let history = h.store.read_revisions(&h.stack()).unwrap();
    let phases: Vec<(u64, Phase)> = history
        .iter()
        .map(|r| (r.revision.number, r.outcome.phase))
        .collect();
    assert_eq!(phases, [(1, Phase::Complete), (2, Phase::Complete)]);
    // Started once: no rollout began again, and one RolloutStarted event was written.
    let started = h
        .events()
        .iter()
        .filter(|e| e.reason == stackwarden::api::EventReason::RolloutStarted)
        .count();
    assert_eq!(started, 1, "{:#?}", h.events());
}

#[tokio::test]
async fn an_operator_killed_during_a_rollback_brings_the_previous_container_back_once() {
    let mut h = Harness::new("roll-kill-back");
    let mut spec = demo_spec(&h.project);
    spec.rollout.progress_deadline_seconds = Some(15);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let old = h.containers()["backend"].clone();
    h.apply(with_backend_env(&spec, "DEMO_FAIL_HEALTH", "1"));

    // The published port makes this a Recreate: killed at the rollback's first act.
    let (store, name) = (h.store.clone(), h.name.clone());
    killed_at(
        &mut h,
        "the rollback",
        Box::new(move |_| phase_in(&store, &name) == Some(RolloutPhase::RollingBack)),
    )
    .await;
    h.until("the previous backend alone and healthy", TIMEOUT, |h| {
        never_mixed_and_ready(h);
        rollout_phase(h) == Some(RolloutPhase::RolledBack)
            && backends(h) == [old.clone()]
            && health(&old) == "healthy"
    })
    .await;
    let rolled = h.condition(ConditionType::RolledBack).unwrap();
    assert_eq!(rolled.status, ConditionStatus::True);
    assert!(rolled.message.contains("backend"), "{}", rolled.message);
    let warnings = warnings(&h);
    assert_eq!(warnings.len(), 1, "one Warning event: {warnings:?}");
    let history = h.store.read_revisions(&h.stack()).unwrap();
    assert_eq!(history.last().unwrap().outcome.phase, Phase::RolledBack);
}

#[tokio::test]
async fn a_new_version_much_slower_than_the_previous_one_is_rolled_back_by_the_latency_increase_gate(
) {
    let h = Harness::new("roll-slow");
    let spec = analysed(
        unpublished_demo(&h.project),
        serde_json::json!({
            "windowSeconds": 6,
            "intervalSeconds": 2,
            "minRequests": 10,
            "latency": {"quantile": 0.9, "maxIncrease": 0.5},
        }),
    );
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let (_, _cleanup) = poll_backend(&h);
    let message = rolled_back(&h, with_backend_env(&spec, "DEMO_LATENCY_MS", "300")).await;
    assert!(
        message.contains("backend: analysis failed")
            && message.contains("above the previous revision's")
            && message.contains("latency.maxIncrease 50 %"),
        "{message}"
    );
    let rollout = h.status().rollout.unwrap();
    let baseline = rollout.services[0].baseline_latency_seconds;
    assert!(
        baseline.is_some_and(|s| s < 0.1),
        "the old container's own latency was measured first: {rollout:?}"
    );
    assert!(
        rollout.gates_passed[0].starts_with("backend: previous revision's latency"),
        "{rollout:?}"
    );
}

#[tokio::test]
async fn services_are_updated_in_the_order_given_one_at_a_time_and_what_they_depend_on_is_not_restarted(
) {
    let h = Harness::new("roll-order");
    let spec = unpublished_demo(&h.project);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let before = h.containers();
    // Backend and Redis change, backend named first. Postgres, which the backend depends on,
    // does not change and must not be restarted.
    let mut next = with_backend_env(&spec, "DEMO_RELEASE", "2");
    next.compose.file = next.compose.file.replace(
        "REDIS_PASSWORD: ${REDIS_PASSWORD}\n    volumes",
        "REDIS_PASSWORD: ${REDIS_PASSWORD}\n      REDIS_RELEASE: \"2\"\n    volumes",
    );
    assert!(
        next.compose.file.contains("REDIS_RELEASE"),
        "the demo's redis changed shape"
    );
    next.rollout.order = vec!["backend".into()];
    h.apply(next);
    let seen = std::cell::RefCell::new(Vec::<Vec<ServiceStep>>::new());
    h.until(
        "the rollout to complete and the stack Ready",
        TIMEOUT,
        |h| {
            never_mixed_and_ready(h);
            if let Some(r) = h.status().rollout.filter(|r| r.revision == 2) {
                seen.borrow_mut()
                    .push(r.services.iter().map(|s| s.step).collect());
            }
            rollout_phase(h) == Some(RolloutPhase::Complete) && ready(h)
        },
    )
    .await;
    let rollout = h.status().rollout.unwrap();
    let order: Vec<(&str, Method)> = rollout
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.method))
        .collect();
    // Redis writes its volume: stopped first, never two at once.
    assert_eq!(
        order,
        [("backend", Method::Surge), ("redis", Method::Recreate)]
    );
    // One at a time: Redis was Pending as long as the backend was not Done.
    for steps in seen.borrow().iter() {
        assert!(
            steps[0] == ServiceStep::Done || steps[1] == ServiceStep::Pending,
            "{steps:?}"
        );
    }
    let after = h.containers();
    assert_eq!(
        after["postgres"], before["postgres"],
        "postgres was not touched"
    );
    assert_ne!(after["backend"], before["backend"]);
    assert_ne!(after["redis"], before["redis"]);
}
