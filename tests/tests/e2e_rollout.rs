//! Rollouts on the real Docker engine (issue 11): a changed service is replaced one at a time,
//! beside its old container when it publishes no port, and a new revision that fails its gates
//! is rolled back to the containers of the previous one.

use std::time::Duration;

use stackwarden::api::revision::Phase;
use stackwarden::api::rollout_status::{Method, RolloutPhase};
use stackwarden::api::{ConditionStatus, ConditionType, ServiceStackSpec};
use stackwarden_tests::harness::{
    demo_spec, docker, poller_summary, start_poller, unpublished_demo, Containers, Harness,
};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The same spec with one more environment variable on the backend: a new revision of it.
fn with_backend_env(spec: &ServiceStackSpec, key: &str, value: &str) -> ServiceStackSpec {
    let mut next = spec.clone();
    next.compose.file = next.compose.file.replace(
        "REDIS_HOST: redis",
        &format!("REDIS_HOST: redis\n      {key}: \"{value}\""),
    );
    assert_ne!(
        next.compose.file, spec.compose.file,
        "the demo's backend changed shape"
    );
    next
}

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

    let poller = format!("{}-poller", h.project);
    let _cleanup = Containers(vec![poller.clone()]);
    start_poller(
        &poller,
        &[],
        &format!("{}_default", h.project),
        "http://backend:8000/",
    );

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
async fn a_new_version_failing_its_health_check_is_rolled_back_after_the_progress_deadline() {
    let h = Harness::new("roll-health");
    let mut spec = unpublished_demo(&h.project);
    spec.rollout.progress_deadline_seconds = Some(15);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let message = rolled_back(&h, with_backend_env(&spec, "DEMO_FAIL_HEALTH", "1")).await;
    assert!(
        message.contains("backend") && message.contains("progressDeadlineSeconds 15"),
        "{message}"
    );
}

#[tokio::test]
async fn a_new_version_answering_5xx_above_the_limit_is_rolled_back_by_the_analysis() {
    let h = Harness::new("roll-5xx");
    let mut spec = unpublished_demo(&h.project);
    spec.rollout.analysis = Some(
        serde_json::from_value(serde_json::json!({
            "services": ["backend"],
            "metrics": {"port": 8000},
            "windowSeconds": 20,
            "intervalSeconds": 2,
            "maxErrorRate": 0.1,
            "minRequests": 20,
        }))
        .unwrap(),
    );
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    // Traffic for the analysis to judge: half of it reaches the new container while both run.
    let poller = format!("{}-poller", h.project);
    let _cleanup = Containers(vec![poller.clone()]);
    start_poller(
        &poller,
        &[],
        &format!("{}_default", h.project),
        "http://backend:8000/",
    );
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
}
