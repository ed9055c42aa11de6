//! Self-healing on the real Docker engine (issue: self-healing).

use std::time::Duration;

use stackwarden::api::{ConditionStatus, ConditionType, Reason, RestartReason, Restarter};
use stackwarden_tests::harness::{docker, Harness};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Kills the container's main process from the host, as a crash would.
fn crash(id: &str) {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id]);
    let out = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kill -9 {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restarts(h: &Harness, svc: &str) -> i64 {
    h.status().services.get(svc).map_or(0, |s| s.restarts)
}

#[tokio::test]
async fn a_killed_service_is_restarted_and_the_restart_is_in_status_and_events() {
    let h = Harness::new("healkill");
    h.apply(h.spec(
        "services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n",
    ));
    h.until_ready(TIMEOUT).await;
    let id = h.containers()["cache"].clone();
    docker(&["kill", &id]);
    h.until("cache restarted", TIMEOUT, |h| {
        restarts(h, "cache") == 1 && h.states()["cache"] == "running"
    })
    .await;
    h.until_ready(TIMEOUT).await;
    assert_eq!(
        h.containers()["cache"],
        id,
        "restarted in place, not recreated"
    );
    let last = h.status().services["cache"].last_restart.clone().unwrap();
    assert_eq!(
        (last.reason, last.by),
        (RestartReason::Crashed, Restarter::Operator)
    );
    let ev = h
        .events()
        .into_iter()
        .find(|e| e.reason == "Crashed")
        .expect("a Crashed event");
    assert!(ev.note.contains("exited with code 137"), "{}", ev.note);
}

#[tokio::test]
async fn docker_restart_policy_restarts_are_counted_not_doubled() {
    let h = Harness::new("healdocker");
    h.apply(h.spec("services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: always\n"));
    h.until_ready(TIMEOUT).await;
    // A crash, not `docker kill`: Docker treats a killed container as stopped on purpose and
    // does not apply its restart policy to it.
    crash(&h.containers()["cache"]);
    h.until("Docker's restart counted", TIMEOUT, |h| {
        restarts(h, "cache") == 1
    })
    .await;
    h.until_ready(TIMEOUT).await;
    let last = h.status().services["cache"].last_restart.clone().unwrap();
    assert_eq!(
        last.by,
        Restarter::Docker,
        "the operator raced Docker's own restart"
    );
    assert_eq!(restarts(&h, "cache"), 1);
}

#[tokio::test]
async fn a_service_that_crashes_at_start_backs_off_then_is_degraded_and_left_alone() {
    let h = Harness::new("healloop");
    let mut spec = h.spec("services:\n  app:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    entrypoint: [\"sh\", \"-c\", \"exit 3\"]\n");
    spec.health.restart.backoff_seconds = 1;
    spec.health.restart.max_restarts_per_hour = 3;
    h.apply(spec);
    h.until("Degraded", TIMEOUT, |h| {
        h.condition(ConditionType::Degraded)
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    let s = h.status();
    let times = s.services["app"].recent_restarts.clone();
    assert_eq!(times.len(), 3, "{times:?}");
    // Backoff grows: 1 s, then 2 s between restarts (the first is immediate).
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    assert!(
        gaps[0] >= 1000 && gaps[1] >= 2000 && gaps[1] > gaps[0],
        "gaps {gaps:?}"
    );
    let d = h.condition(ConditionType::Degraded).unwrap();
    assert_eq!(d.reason, Reason::RestartBudgetExhausted);
    assert!(
        d.message.contains("service app exited with code 3")
            && d.message.contains("maxRestartsPerHour 3"),
        "{}",
        d.message
    );
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e.reason == "RestartBudgetExhausted")
            .count(),
        1
    );
    // And then no more restarts.
    for _ in 0..8 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(restarts(&h, "app"), 3, "restarted past the budget");
    assert_eq!(h.states()["app"], "exited");

    // A spec change gives a fresh budget.
    let mut fixed =
        h.spec("services:\n  app:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n");
    fixed.health.restart.max_restarts_per_hour = 3;
    h.apply(fixed);
    h.until_ready(TIMEOUT).await;
    assert_eq!(
        h.condition(ConditionType::Degraded).unwrap().status,
        ConditionStatus::False
    );
}

#[tokio::test]
async fn an_unhealthy_service_is_restarted_for_its_failed_healthcheck() {
    let h = Harness::new("healsick");
    // Healthy while /run/sick/flag is absent; /run/sick is a tmpfs, so a restart cures it.
    h.apply(h.spec(
        "services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    volumes:\n      - type: tmpfs\n        target: /run/sick\n    healthcheck:\n      test: [\"CMD-SHELL\", \"test ! -e /run/sick/flag\"]\n      interval: 1s\n      retries: 2\n",
    ));
    h.until_ready(TIMEOUT).await;
    let id = h.containers()["cache"].clone();
    docker(&["exec", &id, "touch", "/run/sick/flag"]);
    h.until("restart for the healthcheck", TIMEOUT, |h| {
        restarts(h, "cache") == 1
    })
    .await;
    h.until_ready(TIMEOUT).await;
    assert_eq!(
        h.status().services["cache"]
            .last_restart
            .clone()
            .unwrap()
            .reason,
        RestartReason::ProbeFailed
    );
    assert!(h
        .events()
        .iter()
        .any(|e| e.reason == "ProbeFailed" && e.note.contains("Docker healthcheck")));
}

#[tokio::test]
async fn an_oom_killed_service_is_restarted_with_reason_oomkilled() {
    let h = Harness::new("healoom");
    let mut spec = h.spec(
        "services:\n  app:\n    image: stackwarden-test/demo-app:latest\n    pull_policy: never\n    mem_limit: 48m\n    environment:\n      DEMO_LEAK_MB_PER_SEC: \"32\"\n    healthcheck: {disable: true}\n",
    );
    spec.health.restart.backoff_seconds = 60;
    h.apply(spec);
    h.until("an OOMKilled restart", TIMEOUT, |h| {
        h.status()
            .services
            .get("app")
            .and_then(|s| s.last_restart.clone())
            .is_some_and(|r| r.reason == RestartReason::OOMKilled)
    })
    .await;
    assert!(
        h.events()
            .iter()
            .any(|e| e.reason == "OOMKilled" && e.note.contains("OOM killer")),
        "{:?}",
        h.events()
    );
}

#[tokio::test]
async fn scheduled_maintenance_restarts_run_once_per_slot() {
    let h = Harness::new("healsched");
    let mut spec = h
        .spec("services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n");
    spec.maintenance.restarts = vec![stackwarden::api::ScheduledRestart {
        service: "cache".into(),
        schedule: "*/4 * * * * *".into(),
        time_zone: Some("Europe/Zurich".into()),
    }];
    h.apply(spec);
    h.until_ready(TIMEOUT).await;
    let started = |h: &Harness| {
        docker(&[
            "inspect",
            "-f",
            "{{.State.StartedAt}}",
            &h.containers()["cache"],
        ])
    };
    // A slot may already have fired while the stack came up: count from here.
    let (before, n0) = (started(&h), restarts(&h, "cache"));
    h.until("a scheduled restart", TIMEOUT, |h| {
        restarts(h, "cache") > n0
    })
    .await;
    let s = h.status();
    assert_eq!(
        s.services["cache"].last_restart.clone().unwrap().reason,
        RestartReason::Scheduled
    );
    assert_ne!(started(&h), before, "the container was not restarted");
    assert_eq!(
        s.maintenance.len(),
        1,
        "the slot is recorded: {:?}",
        s.maintenance
    );
    assert!(
        s.services["cache"].recent_restarts.is_empty(),
        "a scheduled restart used up the crash budget"
    );
    // One restart per slot: over 3 s (less than a slot) at most one more.
    let n = restarts(&h, "cache");
    for _ in 0..6 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        restarts(&h, "cache") <= n + 1,
        "more than one restart per slot"
    );
    assert!(h.events().iter().any(|e| e.reason == "Scheduled"));
}

#[tokio::test]
async fn crashes_are_caught_after_the_events_stream_is_cut() {
    let h = Harness::new("healcut");
    let proxy = stackwarden_tests::harness::SocketProxy::start();
    let mut spec = h
        .spec("services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n");
    spec.docker.host = Some(proxy.host());
    let driver = stackwarden_tests::harness::LocalDriver::start(&serde_json::json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": "cut", "namespace": "e2e"},
        "spec": spec,
    }));
    wait_for("Ready", || driver.ready("e2e", "cut")).await;
    // Let the driver subscribe, then cut every connection, the events stream among them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(proxy.cut() >= 1, "no connection was open through the proxy");
    docker(&["kill", &h.containers()["cache"]]);
    let start = std::time::Instant::now();
    wait_for("the crash to be repaired", || {
        driver
            .status("e2e", "cut")
            .services
            .get("cache")
            .is_some_and(|s| s.restarts >= 1)
            && h.states()["cache"] == "running"
    })
    .await;
    // Well under the 30 s steady poll: the break itself made the driver look again.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo stack with probes on the backend (HTTP, JSON field) and postgres.
fn probed_demo(h: &Harness, pg_password_variable: &str) -> stackwarden::api::ServiceStackSpec {
    let mut spec = stackwarden_tests::harness::demo_spec(&h.project);
    spec.variables
        .insert("WRONG_PASSWORD".into(), "not-the-db-password".into());
    let health: stackwarden::api::HealthSpec = serde_json::from_value(serde_json::json!({
        "services": {
            "backend": {
                "probes": [{"http": {"url": "http://backend:8000/health", "expectStatus": 200,
                                      "jsonField": {"path": "status", "equals": "healthy"}}}],
                "periodSeconds": 1, "failureThreshold": 3,
            },
            "postgres": {
                "probes": [{"postgres": {"database": "demo", "user": "demo", "passwordVariable": pg_password_variable}}],
                "periodSeconds": 1,
            },
        },
        "restart": {"backoffSeconds": 1},
    }))
    .unwrap();
    spec.health = health;
    spec
}

/// Until the probed demo is Ready and the backend's probes have passed.
async fn until_probes_pass(h: &Harness) {
    h.until("probes pass", TIMEOUT, |h| {
        h.condition(ConditionType::Ready)
            .is_some_and(|c| c.status == ConditionStatus::True)
            && h.status().services["backend"]
                .last_probe
                .as_ref()
                .is_some_and(|p| p.passed)
    })
    .await;
}

#[tokio::test]
async fn a_failing_http_probe_restarts_the_service_after_failure_threshold() {
    let h = Harness::new("healprobe");
    h.apply(probed_demo(&h, "DB_PASSWORD"));
    until_probes_pass(&h).await;
    let port = docker(&["port", &h.containers()["backend"], "8000/tcp"]);
    let addr = port.lines().next().unwrap().trim().to_owned();
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            &format!("http://{addr}/admin/fail-health?on=true"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "could not flip the fail-health switch"
    );
    h.until("a ProbeFailed restart", TIMEOUT, |h| {
        h.status().services["backend"]
            .last_restart
            .as_ref()
            .is_some_and(|r| r.reason == RestartReason::ProbeFailed)
    })
    .await;
    let ev = h
        .events()
        .into_iter()
        .find(|e| e.reason == "ProbeFailed")
        .unwrap();
    assert!(
        ev.note.contains("status") && ev.note.contains("backend"),
        "{}",
        ev.note
    );
    // The restart clears the switch (it is not in the environment): healthy again.
    h.until("healthy again", TIMEOUT, |h| {
        h.condition(ConditionType::Ready)
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(restarts(&h, "backend"), 1);
    assert_eq!(restarts(&h, "postgres"), 0);
}

#[tokio::test]
async fn a_probe_with_a_wrong_password_is_reported_and_restarts_nothing() {
    let h = Harness::new("healpw");
    h.apply(probed_demo(&h, "WRONG_PASSWORD"));
    h.until("the misconfigured probe reported", TIMEOUT, |h| {
        h.condition(ConditionType::Ready)
            .is_some_and(|c| c.message.contains("its probe cannot run"))
    })
    .await;
    // Several rounds later: still nothing restarted.
    for _ in 0..8 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = h.status();
    assert!(
        s.services.values().all(|svc| svc.restarts == 0),
        "restarted by mistake: {s:#?}"
    );
    let ready = h.condition(ConditionType::Ready).unwrap();
    assert_eq!(ready.status, ConditionStatus::False);
    assert!(
        ready.message.contains("postgres")
            && ready
                .message
                .contains("spec.health.services.postgres.probes"),
        "{}",
        ready.message
    );
    let all = format!("{s:?}{:?}{:?}", h.events(), ready);
    assert!(
        !all.contains("not-the-db-password") && !all.contains("demo-db-password"),
        "a password leaked"
    );
}

#[tokio::test]
async fn a_probe_on_an_unknown_service_is_an_invalid_spec() {
    let h = Harness::new("healunknown");
    let mut spec = probed_demo(&h, "DB_PASSWORD");
    spec.health.services.get_mut("backend").unwrap().probes =
        serde_json::from_value(serde_json::json!([{"http": {"url": "http://backnd:8000/health"}}]))
            .unwrap();
    h.apply(spec);
    h.pass().await;
    let c = h.condition(ConditionType::InvalidSpec).unwrap();
    assert_eq!(c.status, ConditionStatus::True);
    assert!(c.message.contains("backnd"), "{}", c.message);
    assert!(
        h.containers().is_empty(),
        "an invalid spec deployed something"
    );
}

#[tokio::test]
async fn restart_dependents_restarts_the_services_that_depend_on_a_restarted_one() {
    let h = Harness::new("healdeps");
    let mut spec = h.spec(
        "services:\n  db:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n  app:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    depends_on: [db]\n  other:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n",
    );
    spec.health.restart.restart_dependents = true;
    h.apply(spec);
    h.until_ready(TIMEOUT).await;
    docker(&["kill", &h.containers()["db"]]);
    h.until("db and its dependent restarted", TIMEOUT, |h| {
        restarts(h, "db") == 1 && restarts(h, "app") == 1
    })
    .await;
    h.until_ready(TIMEOUT).await;
    let s = h.status();
    assert_eq!(
        s.services["app"].last_restart.clone().unwrap().reason,
        RestartReason::Dependency
    );
    assert_eq!(
        restarts(&h, "other"),
        0,
        "a service that does not depend on db was restarted"
    );
    assert!(h
        .events()
        .iter()
        .any(|e| e.reason == "Dependency" && e.note.contains("app")));
}

fn restart_policy(id: &str) -> String {
    docker(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", id])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_crash_loop_docker_drives_is_degraded_and_stopped_and_every_looping_service_is_named() {
    let h = Harness::new("healdockerloop");
    let looping = "    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: always\n    entrypoint: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n";
    let mut spec = h.spec(&format!("services:\n  app:\n{looping}  worker:\n{looping}"));
    spec.health.restart.max_restarts_per_hour = 3;
    h.apply(spec);
    h.until("both loops stopped and Degraded", TIMEOUT, |h| {
        let states = h.states();
        h.condition(ConditionType::Degraded)
            .is_some_and(|c| c.status == ConditionStatus::True)
            && states.get("app").is_some_and(|s| s == "exited")
            && states.get("worker").is_some_and(|s| s == "exited")
    })
    .await;
    // The states above are Docker's, read live; the condition is the last pass's, which may
    // have seen one loop still restarting (within its budget, not yet named). One pass more
    // sees both stopped.
    h.pass().await;
    let d = h.condition(ConditionType::Degraded).unwrap();
    assert_eq!(d.reason, Reason::RestartBudgetExhausted);
    assert!(
        d.message.contains("service app ") && d.message.contains("service worker "),
        "every looping service is named: {}",
        d.message
    );
    for svc in ["app", "worker"] {
        let id = h.containers()[svc].clone();
        assert_eq!(restart_policy(&id), "no", "Docker's loop of {svc} goes on");
        assert!(h.status().services[svc].docker_policy_suspended);
    }
    // Docker's restarts counted: at least the budget, and then no more of them.
    let counted = restarts(&h, "app");
    assert!(counted >= 3, "Docker's restarts not counted: {counted}");
    let docker_count = docker(&["inspect", "-f", "{{.RestartCount}}", &h.containers()["app"]]);
    for _ in 0..6 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(h.states()["app"], "exited");
    assert_eq!(
        docker(&["inspect", "-f", "{{.RestartCount}}", &h.containers()["app"]]),
        docker_count,
        "restarted after the loop was stopped"
    );

    // A spec change gives a fresh budget, and Docker's policy is put back.
    let mut fixed = h.spec("services:\n  app:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: always\n    entrypoint: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n  worker:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: always\n    entrypoint: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n");
    fixed.health.restart.max_restarts_per_hour = 50;
    let app = h.containers()["app"].clone();
    h.apply(fixed);
    h.until("Docker's policy back", TIMEOUT, |h| {
        !h.status().services["app"].docker_policy_suspended
    })
    .await;
    assert_eq!(
        h.containers()["app"],
        app,
        "not recreated: only the budget changed"
    );
    assert_eq!(restart_policy(&app), "always");
}

#[tokio::test]
async fn a_database_outage_does_not_restart_the_services_that_depend_on_it() {
    let h = Harness::new("healdep");
    h.apply(probed_demo(&h, "DB_PASSWORD"));
    until_probes_pass(&h).await;
    // Frozen, not stopped: the operator leaves a paused container alone, so the outage lasts
    // as long as the test wants.
    let docker_health = |id: &str| docker(&["inspect", "-f", "{{.State.Health.Status}}", id]);
    let backend = h.containers()["backend"].clone();
    h.until("the backend's healthcheck passes", TIMEOUT, |_| {
        docker_health(&backend).trim() == "healthy"
    })
    .await;
    let pg = h.containers()["postgres"].clone();
    docker(&["pause", &pg]);
    // Its probes and its own Docker healthcheck both fail: any restart rule would fire now.
    h.until(
        "the backend fails its probes and healthcheck",
        TIMEOUT,
        |h| {
            h.status().services["backend"].consecutive_failures >= 4
                && docker_health(&backend).trim() == "unhealthy"
        },
    )
    .await;
    for _ in 0..4 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        restarts(&h, "backend"),
        0,
        "restarted for its database's outage: {:?}",
        h.events()
    );
    let wait = h.status().services["backend"].waiting_for.clone();
    assert_eq!(
        wait.map(|w| w.service).as_deref(),
        Some("postgres"),
        "{:#?}",
        h.status().services["backend"]
    );
    docker(&["unpause", &pg]);
    h.until_ready(TIMEOUT).await;
    // The frozen database itself may be restarted (its Docker healthcheck failed meanwhile);
    // the backend, whose only fault was its database, is not.
    assert_eq!(restarts(&h, "backend"), 0, "{:#?}", h.events());
    assert_eq!(h.status().services["backend"].waiting_for, None);
}

#[tokio::test]
async fn a_held_service_stays_stopped_and_unrepaired_until_resumed_and_is_not_counted_a_crash() {
    let h = Harness::new("healhold");
    // A Docker healthcheck: Docker keeps its last verdict on the stopped container, which a
    // held service must not show.
    h.apply(h.spec("services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: always\n    healthcheck:\n      test: [\"CMD-SHELL\", \"true\"]\n      interval: 1s\n  other:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n"));
    h.until_ready(TIMEOUT).await;
    let id = h.containers()["cache"].clone();
    let key = "hold.stackwarden.dev/cache";
    h.store.request("e2e", &h.name, key, "by=alice").unwrap();
    h.until("cache held and stopped", TIMEOUT, |h| {
        h.states()["cache"] == "exited"
            && h.status().services["cache"]
                .hold
                .as_ref()
                .is_some_and(|x| x.by == "alice")
    })
    .await;
    let ready = h.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status, ready.reason),
        (ConditionStatus::False, Reason::ServicesHeld)
    );
    assert!(
        ready
            .message
            .contains("cache is held by alice until resumed"),
        "{}",
        ready.message
    );
    assert_eq!(
        h.status().services["cache"].health,
        None,
        "a held service has no health"
    );
    // Neither started (Docker's `restart: always` included) nor repaired while held.
    for _ in 0..6 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(h.states()["cache"], "exited");
    assert_eq!(h.states()["other"], "running");
    assert!(h.store.withdraw("e2e", &h.name, key).unwrap());
    h.until_ready(TIMEOUT).await;
    assert_eq!(h.containers()["cache"], id, "resumed in place");
    let cache = h.status().services["cache"].clone();
    assert_eq!((cache.restarts, cache.hold), (0, None));
    let reasons: Vec<_> = h
        .events()
        .into_iter()
        .map(|e| e.reason.to_string())
        .collect();
    assert!(
        reasons.contains(&"Held".to_owned()) && reasons.contains(&"Resumed".to_owned()),
        "{reasons:?}"
    );
    assert!(!reasons.contains(&"Crashed".to_owned()), "{reasons:?}");

    // A hold with an end resumes by itself.
    let until = chrono::Utc::now() + chrono::Duration::seconds(3);
    h.store
        .request(
            "e2e",
            &h.name,
            key,
            &format!("by=bob until={}", until.to_rfc3339()),
        )
        .unwrap();
    h.until("cache held again", TIMEOUT, |h| {
        h.states()["cache"] == "exited"
    })
    .await;
    h.until("the hold to end by itself", TIMEOUT, |h| {
        h.states()["cache"] == "running" && h.status().services["cache"].hold.is_none()
    })
    .await;
    assert_eq!(h.status().services["cache"].restarts, 0);
}

#[tokio::test]
async fn a_docker_stop_is_reported_as_a_stop_and_spends_no_budget() {
    let h = Harness::new("healstop");
    h.apply(h.spec(
        "services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: always\n",
    ));
    h.until_ready(TIMEOUT).await;
    let id = h.containers()["cache"].clone();
    docker(&["stop", "-t", "1", &id]);
    h.until("cache started again", TIMEOUT, |h| {
        h.status().services["cache"].restarts == 1 && h.states()["cache"] == "running"
    })
    .await;
    let cache = h.status().services["cache"].clone();
    assert_eq!(cache.last_restart.unwrap().reason, RestartReason::Stopped);
    assert!(cache.recent_restarts.is_empty(), "a stop spent the budget");
    let ev = h
        .events()
        .into_iter()
        .find(|e| e.reason == "Stopped")
        .expect("a Stopped event");
    assert_eq!(ev.type_, stackwarden::store::EventType::Normal);
    assert!(ev.note.contains("stackwarden hold"), "{}", ev.note);
    assert!(!h.events().iter().any(|e| e.reason == "Crashed"));
}
