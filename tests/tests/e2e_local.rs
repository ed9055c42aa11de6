//! End-to-end tests of the reconcile on the real Docker engine (issue: foundation).

use std::time::Duration;

use stackwarden::api::{ConditionStatus, ConditionType, Reason, ServiceStackSpec};
use stackwarden_tests::harness::{demo_spec, docker, redis_spec, Harness};

/// A change that makes a good spec bad.
type Mutation = Box<dyn Fn(&mut ServiceStackSpec)>;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn demo_reaches_ready_and_docker_compose_lists_it() {
    let h = Harness::new("demo");
    let spec = demo_spec(&h.project);
    h.apply(spec.clone());
    h.until_ready(READY_TIMEOUT).await;

    let status = h.status();
    assert_eq!(status.revision, Some(1));
    // A first deploy starts everything as `up` does, backend after its healthy dependencies
    // included: no rollout.
    assert_eq!(status.rollout, None);
    for svc in ["postgres", "redis", "backend"] {
        let s = &status.services[svc];
        assert_eq!(serde_json::to_value(s.state).unwrap(), "running", "{svc}");
        assert_eq!(serde_json::to_value(s.health).unwrap(), "healthy", "{svc}");
    }

    // The stock docker-compose (a client nobody here wrote) sees the stack as its own.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &spec.compose.file).unwrap();
    let out = std::process::Command::new("docker-compose")
        .args(["-p", &h.project, "-f", file.path().to_str().unwrap(), "ps"])
        .envs(&spec.variables)
        .output()
        .expect("docker-compose runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker-compose ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for svc in ["postgres", "redis", "backend"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}-{svc}-1", h.project)))
            .unwrap_or_else(|| panic!("{svc} missing from:\n{text}"));
        assert!(
            line.contains("Up"),
            "{svc} not up in docker-compose ps:\n{text}"
        );
    }

    // A second pass on the unchanged spec touches nothing.
    let before = h.containers();
    let events_before = h.events().len();
    h.pass().await;
    assert_eq!(
        h.containers(),
        before,
        "container ids changed on a no-op pass"
    );
    assert_eq!(
        h.events().len(),
        events_before,
        "a no-op pass emitted events: {:?}",
        &h.events()[events_before..]
    );

    // An environment change recreates exactly that service.
    let mut changed = spec.clone();
    changed.compose.file = changed.compose.file.replace(
        "REDIS_HOST: redis",
        "REDIS_HOST: redis\n      LOG_LEVEL: debug",
    );
    h.apply(changed);
    h.until_ready(READY_TIMEOUT).await;
    let after = h.containers();
    assert_ne!(
        after["backend"], before["backend"],
        "backend was not recreated"
    );
    assert_eq!(
        after["postgres"], before["postgres"],
        "postgres was recreated"
    );
    assert_eq!(after["redis"], before["redis"], "redis was recreated");
    assert_eq!(h.status().revision, Some(2));
    assert!(h
        .events()
        .iter()
        .any(|e| e.reason == "RolloutStarted" && e.note.contains("backend")));

    // Both configurations are in the history, each Complete, with the image ids they ran.
    let revisions = h.store.read_revisions(&h.stack()).unwrap();
    let phases: Vec<_> = revisions
        .iter()
        .map(|r| (r.revision.number, r.outcome.phase.to_string()))
        .collect();
    assert_eq!(phases, [(1, "Complete".into()), (2, "Complete".into())]);
    assert_eq!(h.status().last_good_revision, Some(2));
    let (one, two) = (&revisions[0].revision, &revisions[1].revision);
    assert_ne!(
        one.services["backend"].config_hash,
        two.services["backend"].config_hash
    );
    assert_eq!(one.services["redis"], two.services["redis"]);
    assert!(two.services["backend"]
        .image_id
        .as_deref()
        .is_some_and(|id| id.starts_with("sha256:")));
    assert!(two.compose.contains("LOG_LEVEL: debug"));
    let stored = serde_json::to_string(&revisions).unwrap();
    for secret in spec.variables.values().filter(|v| v.len() >= 3) {
        assert!(
            !stored.contains(secret.as_str()),
            "a variable value is in a revision"
        );
    }

    // Secrets stay out of status and events.
    let everything = format!("{:?}{:?}", h.status(), h.events());
    for secret in spec.variables.values() {
        assert!(
            !everything.contains(secret.as_str()),
            "a variable value leaked into status or events"
        );
    }
}

#[tokio::test]
async fn removing_a_service_removes_its_container_and_keeps_its_volume() {
    let h = Harness::new("remove");
    let mut spec = redis_spec(&h.project, "");
    let two = spec.compose.file.replace(
        "volumes:\n  cachedata: {}",
        "  sidecar:\n    image: stackwarden-test/redis:7\n    pull_policy: never\nvolumes:\n  cachedata: {}",
    );
    let mut with_sidecar = spec.clone();
    with_sidecar.compose.file = two;
    h.apply(with_sidecar);
    h.until_ready(READY_TIMEOUT).await;
    assert_eq!(h.containers().len(), 2);

    // Drop `cache` (the one with the volume): its container goes, the data volume stays.
    let only_sidecar =
        "services:\n  sidecar:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n";
    spec.compose.file = only_sidecar.to_owned();
    h.apply(spec);
    h.until_ready(READY_TIMEOUT).await;
    let c = h.containers();
    assert!(
        !c.contains_key("cache"),
        "cache container still there: {c:?}"
    );
    assert!(c.contains_key("sidecar"));
    assert!(
        h.volume_exists("cachedata"),
        "the volume of the removed service was deleted"
    );

    // Deleting the stack with the default policy (Retain) keeps the volume too.
    h.delete().await;
    assert!(h.containers().is_empty());
    assert!(h.volume_exists("cachedata"));
}

#[tokio::test]
async fn bad_input_gives_a_condition_and_leaves_running_containers_alone() {
    let h = Harness::new("badinput");
    let good = redis_spec(&h.project, "");
    h.apply(good.clone());
    h.until_ready(READY_TIMEOUT).await;
    let running = h.containers();

    let cases: Vec<(&str, Mutation, Reason, &str)> = vec![
        (
            "malformed",
            Box::new(|s| s.compose.file = "services: [unclosed".into()),
            Reason::MalformedCompose,
            "not valid YAML",
        ),
        (
            "unsupported key",
            Box::new(|s| {
                s.compose.file = s
                    .compose
                    .file
                    .replace("pull_policy: never", "pull_policy: never\n    scale: 2")
            }),
            Reason::UnsupportedComposeKey,
            "services.cache.scale",
        ),
        (
            "unknown health service",
            Box::new(|s| s.health.services = [("cahce".to_owned(), Default::default())].into()),
            Reason::UnknownService,
            "spec.health.services.cahce",
        ),
    ];
    for (what, mutate, reason, needle) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        h.apply(bad);
        h.pass().await;
        let c = h.condition(ConditionType::InvalidSpec).unwrap();
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::True, reason),
            "{what}: {}",
            c.message
        );
        assert!(c.message.contains(needle), "{what}: {}", c.message);
        assert_eq!(
            h.condition(ConditionType::Ready).unwrap().status,
            ConditionStatus::False,
            "{what}"
        );
        assert_eq!(h.containers(), running, "{what}: containers were touched");
        assert_eq!(h.states()["cache"], "running", "{what}");
    }

    // An image that is not on the engine: the old container keeps running.
    let mut missing = good.clone();
    missing.compose.file = missing.compose.file.replace(
        "stackwarden-test/redis:7",
        "stackwarden-test/no-such-image:1",
    );
    h.apply(missing);
    h.pass().await;
    let p = h.condition(ConditionType::Progressing).unwrap();
    assert_eq!(
        (p.status, p.reason),
        (ConditionStatus::False, Reason::ImageNotFound),
        "{}",
        p.message
    );
    assert!(
        p.message.contains("stackwarden-test/no-such-image:1") && p.message.contains("docker load"),
        "{}",
        p.message
    );
    assert_eq!(
        h.condition(ConditionType::Ready).unwrap().status,
        ConditionStatus::False
    );
    assert_eq!(
        h.containers(),
        running,
        "the running container was replaced although its new image is missing"
    );
    assert_eq!(h.states()["cache"], "running");

    // Back to the good spec: Ready again, same container, InvalidSpec cleared.
    h.apply(good);
    h.until_ready(READY_TIMEOUT).await;
    assert_eq!(h.containers(), running);
    assert_eq!(
        h.condition(ConditionType::InvalidSpec).unwrap().status,
        ConditionStatus::False
    );
    assert!(
        h.events()
            .iter()
            .any(|e| e.reason == "UnsupportedComposeKey"),
        "no event for the invalid spec"
    );
}

#[tokio::test]
async fn missing_image_with_pull_allowed_reports_the_failed_pull() {
    let h = Harness::new("pull");
    let mut spec = redis_spec(&h.project, "");
    spec.compose.file = spec
        .compose
        .file
        .replace("    pull_policy: never\n", "")
        .replace(
            "stackwarden-test/redis:7",
            "stackwarden-test/no-such-image:1",
        );
    h.apply(spec);
    h.pass().await;
    let p = h.condition(ConditionType::Progressing).unwrap();
    assert_eq!(
        (p.status, p.reason),
        (ConditionStatus::False, Reason::ApplyFailed),
        "{}",
        p.message
    );
    assert!(p.message.contains("pulling it failed"), "{}", p.message);
    assert!(h.containers().is_empty());
}

#[tokio::test]
async fn unreachable_docker_gives_a_condition_backs_off_and_removes_nothing() {
    let h = Harness::new("unreachable");
    let good = redis_spec(&h.project, "");
    h.apply(good.clone());
    h.until_ready(READY_TIMEOUT).await;
    let running = h.containers();

    let mut away = good.clone();
    away.docker.host = Some("unix:///nonexistent/docker.sock".into());
    h.apply(away);
    let first = h.pass().await;
    let second = h.pass().await;
    let third = h.pass().await;
    let c = h.condition(ConditionType::DockerUnreachable).unwrap();
    assert_eq!(
        (c.status, c.reason),
        (ConditionStatus::True, Reason::EngineUnreachable),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("/nonexistent/docker.sock"),
        "{}",
        c.message
    );
    assert_eq!(
        h.condition(ConditionType::Ready).unwrap().status,
        ConditionStatus::Unknown
    );
    assert!(
        first.0 < second.0 && second.0 < third.0,
        "no backoff: {first:?} {second:?} {third:?}"
    );
    // One warning event for the outage, not one per retry.
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e.reason == "EngineUnreachable")
            .count(),
        1
    );
    assert_eq!(h.containers(), running);
    assert_eq!(h.states()["cache"], "running");

    // The engine is back: the condition clears and nothing was recreated.
    h.apply(good);
    h.until_ready(READY_TIMEOUT).await;
    assert_eq!(
        h.condition(ConditionType::DockerUnreachable)
            .unwrap()
            .status,
        ConditionStatus::False
    );
    assert_eq!(h.containers(), running);
}

#[tokio::test]
async fn a_project_name_used_by_someone_else_is_left_alone() {
    let h = Harness::new("foreign");
    // A container someone started by hand under the same compose project.
    let id = docker(&[
        "run",
        "-d",
        "--label",
        &format!("com.docker.compose.project={}", h.project),
        "--label",
        "com.docker.compose.service=cache",
        "stackwarden-test/redis:7",
    ]);
    h.apply(redis_spec(&h.project, ""));
    h.pass().await;
    let c = h.condition(ConditionType::InvalidSpec).unwrap();
    assert_eq!(
        (c.status, c.reason),
        (ConditionStatus::True, Reason::ProjectNameInUse),
        "{}",
        c.message
    );
    let c = h.containers();
    assert_eq!(
        c.len(),
        1,
        "the operator created or removed containers: {c:?}"
    );
    assert!(id.trim().starts_with(&c["cache"]));
}

#[tokio::test]
async fn operator_killed_between_create_and_start_converges_without_duplicates() {
    use stackwarden::docker::{Engine, Owner};
    let h = Harness::new("crashsafe");
    h.apply(redis_spec(&h.project, ""));
    // Do by hand what a pass does up to the kill point: network, volume, container created...
    let stack = h.stack();
    let project = stackwarden::compose::load(&stack).unwrap();
    let engine = h.ctx.engines.get(stack.spec.docker.host()).await.unwrap();
    let owner = Owner {
        project: project.name.clone(),
        stack: stack.key(),
        uid: h.uid(),
    };
    for n in &project.networks {
        engine.create_network(n, &owner).await.unwrap();
    }
    for v in &project.volumes {
        engine.create_volume(v, &owner).await.unwrap();
    }
    let id = engine
        .create_container(&project.services[0], &owner, 1, &project.spec_hash())
        .await
        .unwrap();
    // ...and the operator dies before starting it. The next operator starts that container.
    assert_eq!(h.states()["cache"], "created");
    h.until_ready(READY_TIMEOUT).await;
    let c = h.containers();
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        id.starts_with(&c["cache"]),
        "a second container was created instead of starting the first"
    );
    assert_eq!(h.status().revision, Some(1));

    // A container stopped behind the operator's back is started again, not replaced, and
    // reported as a stop (Docker's `stop` event), not a crash.
    docker(&["stop", "-t", "1", &c["cache"]]);
    h.until_ready(READY_TIMEOUT).await;
    assert_eq!(h.containers(), c);
    assert!(
        h.events()
            .iter()
            .any(|e| e.reason == "Stopped" && e.note.contains("starting it again")),
        "{:?}",
        h.events()
    );
}

#[tokio::test]
async fn local_driver_follows_manifest_files_and_keeps_stacks_whose_file_breaks() {
    use stackwarden::driver::local::{run, LocalOptions};
    use stackwarden::store::local::LocalStore;
    let h = Harness::new("driver");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    let state = dir.path().join("state");
    std::fs::create_dir(&manifests).unwrap();
    let mut spec = redis_spec(&h.project, "");
    spec.deletion_policy = stackwarden::api::DeletionPolicy::Delete;
    let manifest = |spec: &ServiceStackSpec| {
        let mut s = stackwarden::api::ServiceStack::new("driver", spec.clone());
        s.metadata.namespace = Some("ops".into());
        yaml_serde::to_string(&serde_json::to_value(&s).unwrap()).unwrap()
    };
    let file = manifests.join("driver.yaml");
    std::fs::write(&file, manifest(&spec)).unwrap();

    let driver = tokio::spawn(run(LocalOptions {
        manifests: manifests.clone(),
        state_dir: state.clone(),
        exit_when_ready: false,
        timeout: None,
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
    }));
    let store = LocalStore::new(&state);
    let ready = |store: &LocalStore| {
        store.load("ops", "driver").ok().flatten().is_some_and(|r| {
            stackwarden::api::condition::find(&r.status.conditions, ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True)
        })
    };
    let wait = |what: &'static str, cond: Box<dyn Fn() -> bool>| async move {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    {
        let s = store.clone();
        wait("Ready", Box::new(move || ready(&s))).await;
    }
    let running = h.containers();
    assert_eq!(running.len(), 1);

    // A manifest that no longer parses: the stack stays, its status says why.
    std::fs::write(
        &file,
        manifest(&spec).replace(
            "deletionPolicy: Delete",
            "deletionPolicy: Delete\n  backupz: {}",
        ),
    )
    .unwrap();
    {
        let s = store.clone();
        wait(
            "InvalidSpec",
            Box::new(move || {
                s.load("ops", "driver").ok().flatten().is_some_and(|r| {
                    stackwarden::api::condition::find(
                        &r.status.conditions,
                        ConditionType::InvalidSpec,
                    )
                    .is_some_and(|c| {
                        c.status == ConditionStatus::True && c.message.contains("backupz")
                    })
                })
            }),
        )
        .await;
    }
    assert_eq!(
        h.containers(),
        running,
        "an unparseable manifest touched the running stack"
    );

    // The manifest is deleted: the stack is deleted, volumes too under deletionPolicy Delete.
    std::fs::remove_file(&file).unwrap();
    {
        let s = store.clone();
        wait(
            "stack forgotten",
            Box::new(move || s.load("ops", "driver").ok().flatten().is_none()),
        )
        .await;
    }
    assert!(
        h.containers().is_empty(),
        "containers left after the manifest was deleted"
    );
    assert!(
        !h.volume_exists("cachedata"),
        "deletionPolicy Delete kept the volume"
    );
    driver.abort();
}

/// Runs the real `stackwarden` command line; its stdout, or a panic with its stderr.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(stackwarden_tests::harness::operator_binary())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stackwarden {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// Multi-threaded: the command line and the waits block, the driver must go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stackwarden_hold_and_resume_stop_and_start_a_service_through_the_running_operator() {
    use stackwarden_tests::harness::{wait_for, LocalDriver};
    let h = Harness::new("cli-hold");
    let mut stack = stackwarden::api::ServiceStack::new("held", redis_spec(&h.project, ""));
    stack.metadata.namespace = Some("ops".into());
    let d = LocalDriver::start(&serde_json::to_value(&stack).unwrap());
    wait_for("Ready", READY_TIMEOUT, || {
        d.ready("ops", "held")
            .then_some(())
            .ok_or_else(|| "not Ready".to_owned())
    });
    let id = h.containers()["cache"].clone();
    let state = d.state.to_str().unwrap().to_owned();
    let held = cli(&[
        "hold",
        "ops/held",
        "cache",
        "--for",
        "10m",
        "--by",
        "alice",
        "--state-dir",
        &state,
    ]);
    assert!(held.contains("cache is held by alice until"), "{held}");
    assert_eq!(h.states()["cache"], "exited");
    let status = cli(&["status", "ops/held", "--state-dir", &state]);
    assert!(status.contains("exited (held by alice)"), "{status}");
    assert!(status.contains("ServicesHeld"), "{status}");
    // A service that is not in the stack is refused with the names it has.
    let out = std::process::Command::new(stackwarden_tests::harness::operator_binary())
        .args(["hold", "ops/held", "cahce", "--state-dir", &state])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("its services: cache"));

    let resumed = cli(&["resume", "ops/held", "cache", "--state-dir", &state]);
    assert!(resumed.contains("cache resumed: running"), "{resumed}");
    assert_eq!(h.containers()["cache"], id);
    wait_for("Ready again", READY_TIMEOUT, || {
        d.ready("ops", "held")
            .then_some(())
            .ok_or_else(|| "not Ready".to_owned())
    });
    assert_eq!(d.status("ops", "held").services["cache"].restarts, 0);
}
