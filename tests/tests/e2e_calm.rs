//! Calm on the real engine (issue 8): a Docker event wakes only the stack whose container it
//! concerns, and only when it can change a decision; a steady, healthy stack writes no status
//! and records no event, whatever its probes and the engine's other containers do.

use std::time::{Duration, Instant};

use futures::StreamExt;
use stackwarden::docker::{ContainerChange, Engines, DECISIVE_ACTIONS};
use stackwarden_tests::harness::{demo_spec, docker, metric_sum, run_busy, Containers, Harness};
use stackwarden_tests::images::ensure_images;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn docker_events_reach_only_their_stack_and_only_when_they_matter() {
    ensure_images().expect("test images");
    let tag = std::process::id();
    let (ours, foreign) = (
        format!("swt-events-ours-{tag}"),
        format!("swt-events-foreign-{tag}"),
    );
    let _cleanup = Containers(vec![ours.clone(), foreign.clone()]);
    let stack = format!("e2e/events-{tag}");
    let engine = Engines::default()
        .get(stackwarden::api::DEFAULT_DOCKER_HOST)
        .await
        .expect("the local engine");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ContainerChange>();
    let watch = tokio::spawn(async move {
        let mut changes = engine.container_changes();
        while let Some(Ok(c)) = changes.next().await {
            let _ = tx.send(c);
        }
    });
    run_busy(&foreign, &[]);
    let uid = format!("uid-{tag}");
    run_busy(
        &ours,
        &[
            (stackwarden::docker::labels::UID, uid.as_str()),
            (stackwarden::docker::labels::STACK, stack.as_str()),
        ],
    );
    // The subscription connects in the background: a harmless signal (a `kill` event) is sent
    // until one comes through, so what follows is surely watched. Other tests' stacks may
    // have changes meanwhile; only this stack's are looked at.
    let started = Instant::now();
    let mut ours_seen: Vec<ContainerChange> = Vec::new();
    'connected: loop {
        assert!(
            started.elapsed() < TIMEOUT,
            "the subscription never delivered"
        );
        docker(&["kill", "--signal", "CONT", &ours]);
        while let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            if c.stack == stack && c.action == "kill" {
                break 'connected;
            }
        }
    }
    // Healthchecks of both containers run every second, plus execs into both: dozens of
    // exec_* events, none of which may come through; the unlabelled container's nothing at all.
    for _ in 0..5 {
        docker(&["exec", &ours, "true"]);
        docker(&["exec", &foreign, "true"]);
    }
    docker(&["kill", &ours]);
    while !ours_seen.iter().any(|c| c.action == "die") {
        let c = next(&mut rx).await;
        if c.stack == stack {
            ours_seen.push(c);
        }
    }
    watch.abort();
    for c in &ours_seen {
        let verb = c.action.split(':').next().unwrap();
        assert!(
            DECISIVE_ACTIONS.contains(&verb),
            "{c:?} cannot change a decision"
        );
    }
    let actions: Vec<&str> = ours_seen.iter().map(|c| c.action.as_str()).collect();
    assert!(actions.ends_with(&["kill", "die"]), "{actions:?}");
}

/// The next change the subscription forwarded.
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ContainerChange>) -> ContainerChange {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("a change within the timeout")
        .expect("the subscription is open")
}

#[tokio::test]
async fn a_steady_healthy_stack_writes_no_status_and_tells_nothing() {
    let h = Harness::new("calm");
    h.apply(demo_spec(&h.project));
    h.until_ready(TIMEOUT).await;
    // Let the first rounds after Ready settle (the last probes turning healthy are news).
    let settled = Instant::now();
    let mut before = h.status();
    loop {
        h.pass().await;
        let now = h.status();
        if now == before && settled.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            settled.elapsed() < TIMEOUT,
            "status never settled: {now:#?}"
        );
        before = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = h.events().len();
    let metrics = h.ctx.metrics.render();
    let (rounds, writes) = (
        metric_sum(&metrics, "stackwarden_probes_total"),
        metric_sum(&metrics, "stackwarden_status_writes_total"),
    );

    // Three more probe rounds of every probed service (the demo probes all three), with a
    // pass after each: none of it is news.
    let probed = 3.0;
    let started = Instant::now();
    loop {
        h.pass().await;
        let m = h.ctx.metrics.render();
        if metric_sum(&m, "stackwarden_probes_total") >= rounds + 3.0 * probed {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "the probes stopped running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    h.pass().await;
    assert_eq!(
        h.status(),
        before,
        "a steady stack's status must not change"
    );
    assert_eq!(
        h.events().len(),
        events,
        "nothing happened, so nothing is told: {:#?}",
        &h.events()[events..]
    );
    assert_eq!(
        metric_sum(&h.ctx.metrics.render(), "stackwarden_status_writes_total"),
        writes,
        "no status write"
    );
}
