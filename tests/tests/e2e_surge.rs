//! Zero-downtime replacement of one service on the real Docker engine (issue 11): the new
//! backend starts beside the old one under the same aliases, and the old one is retired once
//! the new one is healthy, while a client on the project network asks it every 20 ms.

use std::time::{Duration, Instant};

use stackwarden::api::ContainerHealth;
use stackwarden::compose::ServiceSpec;
use stackwarden::docker::{retire, BollardEngine, Engine, Engines, Owner, Surge};
use stackwarden_tests::harness::{
    docker, poller_summary, start_poller, unpublished_demo, Containers, Harness,
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Waits, looking again every 200 ms, until `done` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn health(engine: &BollardEngine, project: &str, id: &str) -> Option<ContainerHealth> {
    let seen = engine.observe(project, &[], &[], &[]).await.unwrap();
    seen.containers.iter().find(|c| c.id == id)?.health
}

/// How many requests the verbose poller has answered successfully so far.
fn poller_successes(name: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.ends_with("Ok(())"))
        .count()
}

/// `docker-compose ps` of the project from its compose file: does it list both containers?
fn compose_ps(h: &Harness, file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker-compose.yml");
    std::fs::write(&path, file).unwrap();
    let out = std::process::Command::new("docker-compose")
        .args(["-p", &h.project, "-f"])
        .arg(&path)
        .arg("ps")
        .output()
        .expect("docker-compose runs");
    assert!(
        out.status.success(),
        "docker-compose ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The backend as the next rollout wants it: another environment, so really another container.
fn next_backend(h: &Harness) -> ServiceSpec {
    let project = stackwarden::compose::load(&h.stack()).unwrap();
    let mut svc = project.service("backend").unwrap().clone();
    svc.environment
        .0
        .insert("DEMO_RELEASE".into(), "surged".into());
    svc
}

#[tokio::test]
async fn a_surged_backend_replacement_fails_no_request_of_a_client_on_the_project_network() {
    let h = Harness::new("surge");
    let spec = unpublished_demo(&h.project);
    let file = spec.compose.file.clone();
    h.apply(spec);
    h.until_ready(TIMEOUT).await;
    let old = h.containers()["backend"].clone();
    let old_name = docker(&["inspect", "-f", "{{.Name}}", &old]);
    let old_name = old_name.trim().trim_start_matches('/');

    let poller = format!("{}-poller", h.project);
    let _cleanup = Containers(vec![poller.clone()]);
    start_poller(
        &poller,
        &[("DEMO_POLL_VERBOSE", "1")],
        &format!("{}_default", h.project),
        "http://backend:8000/",
    );
    until("the poller's first answer", || async {
        poller_successes(&poller) > 0
    })
    .await;

    let engine = Engines::default()
        .get(stackwarden::api::DEFAULT_DOCKER_HOST)
        .await
        .unwrap();
    let svc = next_backend(&h);
    let owner = Owner {
        project: h.project.clone(),
        stack: format!("e2e/{}", h.name),
        uid: h.uid(),
    };
    let surge = Surge::beside(&svc, &h.project, old_name).expect("the backend can surge");
    assert_eq!(surge.name(), format!("{}-backend-2", h.project));
    let new = engine
        .create_surge_container(&svc, &owner, 2, "surge-test", &surge)
        .await
        .unwrap();
    let again = engine
        .create_surge_container(&svc, &owner, 2, "surge-test", &surge)
        .await
        .expect("creating the same surge again is done, not a conflict");
    assert_eq!(again, new);
    engine.start_container(&new).await.unwrap();
    until("the new backend healthy", || async {
        health(&engine, &h.project, &new).await == Some(ContainerHealth::Healthy)
    })
    .await;

    let listed = compose_ps(&h, &file);
    assert!(
        listed.contains(surge.name()) && listed.contains(old_name),
        "docker-compose ps lists both backends:\n{listed}"
    );

    // Stopped gracefully while still on the network, then removed (see docker::retire).
    let grace = svc.stop_grace_period_s;
    retire(&engine, &old, grace).await.unwrap();
    retire(&engine, &old, grace)
        .await
        .expect("retiring it again is done");

    let after = poller_successes(&poller);
    until("more answers after the retirement", || async {
        poller_successes(&poller) > after + 25
    })
    .await;
    let summary = poller_summary(&poller);
    println!("poller: {summary}");
    assert!(summary["requests"].as_u64().unwrap() > 25, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let left = h.containers()["backend"].clone();
    assert!(
        new.starts_with(&left),
        "the backend left is the new one: {left}"
    );
}

#[tokio::test]
async fn taking_a_container_off_a_network_twice_or_once_gone_is_done() {
    stackwarden_tests::images::ensure_images().unwrap();
    let name = format!("swt-surge-off-{}", std::process::id());
    // Declared first, dropped last: the container goes before its network.
    let net = Network::create(&name);
    let _cleanup = Containers(vec![name.clone()]);
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &net.0,
        stackwarden_tests::images::BASE_IMAGE,
        "sleep",
        "infinity",
    ]);
    let id = id.trim();
    let engine = Engines::default()
        .get(stackwarden::api::DEFAULT_DOCKER_HOST)
        .await
        .unwrap();
    engine.disconnect_network(id, &net.0).await.unwrap();
    let on = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        id,
    ]);
    assert!(!on.contains(&net.0), "still on {}: {on}", net.0);
    engine
        .disconnect_network(id, &net.0)
        .await
        .expect("not on the network is done");
    docker(&["rm", "-f", id]);
    engine
        .disconnect_network(id, &net.0)
        .await
        .expect("a container gone is done");
}

/// A network a test created, removed when dropped (after the containers on it).
struct Network(String);

impl Network {
    fn create(name: &str) -> Self {
        docker(&["network", "create", name]);
        Network(name.to_owned())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}
