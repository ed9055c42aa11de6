//! The operator beside the real docker-compose 1.29 (issue 9, points 1 and 2): the runbook's
//! `docker-compose up -d` on a managed stack changes nothing, containers a person's compose run
//! replaced anyway stay managed, and a stack docker-compose started is adopted without a
//! restart of what already matches.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use stackwarden::api::{ConditionStatus, ConditionType, Reason, ServiceStackSpec};
use stackwarden::reconcile::Context;
use stackwarden_tests::harness::{demo_spec, docker, redis_spec, Harness};

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The stack's compose file on disk, as the runbook keeps it, for the real docker-compose.
struct ComposeFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl ComposeFile {
    fn of(spec: &ServiceStackSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker-compose.yml");
        std::fs::write(&path, &spec.compose.file).unwrap();
        Self { _dir: dir, path }
    }
}

/// `docker-compose -p PROJECT -f FILE ARGS...` with the stack's variables in its environment,
/// as the runbook's `.env` gives them; panics when it fails.
fn docker_compose(
    project: &str,
    file: &ComposeFile,
    spec: &ServiceStackSpec,
    args: &[&str],
) -> Output {
    let out = Command::new("docker-compose")
        .args(["-p", project, "-f", file.path.to_str().unwrap()])
        .args(args)
        .envs(&spec.variables)
        .output()
        .expect("docker-compose runs");
    assert!(
        out.status.success(),
        "docker-compose {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stackwarden_labelled(id: &str) -> bool {
    !docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"stackwarden.dev/uid\"}}",
        id,
    ])
    .trim()
    .is_empty()
}

fn ready(h: &Harness) -> bool {
    h.condition(ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True)
}

fn assert_not_in_conflict(h: &Harness) {
    let invalid = h
        .condition(ConditionType::InvalidSpec)
        .expect("InvalidSpec");
    assert_eq!(invalid.status, ConditionStatus::False, "{invalid:?}");
    assert_ne!(invalid.reason, Reason::ProjectNameInUse, "{invalid:?}");
}

#[tokio::test]
async fn docker_compose_up_on_a_managed_stack_changes_nothing() {
    let h = Harness::new("coexist");
    let spec = demo_spec(&h.project);
    h.apply(spec.clone());
    h.until_ready(READY_TIMEOUT).await;
    let before = h.containers();
    assert_eq!(before.len(), 3, "{before:?}");

    let file = ComposeFile::of(&spec);
    let out = docker_compose(&h.project, &file, &spec, &["up", "-d"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        h.containers(),
        before,
        "docker-compose up recreated containers:\n{said}"
    );
    assert!(!said.contains("Recreating"), "{said}");
    assert!(!said.contains("WARNING"), "docker-compose warned:\n{said}");

    // A runbook's one-off (`docker-compose run`) in the project is a person's: left alone.
    docker_compose(
        &h.project,
        &file,
        &spec,
        &["run", "-d", "--no-deps", "redis", "sleep", "600"],
    );
    h.pass().await;
    assert!(ready(&h), "{:#?}", h.status());
    assert_not_in_conflict(&h);
    let in_project = |oneoff: &str| -> std::collections::BTreeSet<String> {
        let project = format!("label=com.docker.compose.project={}", h.project);
        let oneoff = format!("label=com.docker.compose.oneoff={oneoff}");
        docker(&["ps", "-q", "--filter", &project, "--filter", &oneoff])
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(in_project("True").len(), 1, "the one-off was removed");
    assert_eq!(
        in_project("False"),
        before.values().cloned().collect(),
        "the operator changed containers"
    );
    assert_eq!(
        h.status().owned_project.as_deref(),
        Some(h.project.as_str())
    );
}

#[tokio::test]
async fn containers_a_forced_docker_compose_run_replaced_stay_managed_and_healed() {
    let h = Harness::new("forced");
    let spec = demo_spec(&h.project);
    h.apply(spec.clone());
    h.until_ready(READY_TIMEOUT).await;
    let before = h.containers();

    let file = ComposeFile::of(&spec);
    docker_compose(&h.project, &file, &spec, &["up", "-d", "--force-recreate"]);
    let replaced = h.containers();
    for (svc, id) in &replaced {
        assert_ne!(before.get(svc), Some(id), "{svc} was not replaced");
        assert!(
            !stackwarden_labelled(id),
            "{svc} still has stackwarden labels"
        );
    }

    // The operator keeps managing the project it owns: Ready again, no conflict, and the
    // containers docker-compose created from the same file are kept, not recreated again.
    h.until(
        "Ready with docker-compose's containers",
        READY_TIMEOUT,
        ready,
    )
    .await;
    assert_not_in_conflict(&h);
    assert_eq!(h.containers(), replaced);

    // And healed: a killed adopted container is restarted.
    docker(&["kill", &replaced["redis"]]);
    h.until("redis restarted", READY_TIMEOUT, |h| {
        ready(h) && h.status().services["redis"].restarts >= 1
    })
    .await;
    assert_eq!(
        h.containers()["redis"],
        replaced["redis"],
        "restarted in place"
    );
}

/// The demo stack brought up by docker-compose alone, as a runbook user has it; then the
/// ServiceStack for it, with `spec.compose.file` `file` (the runbook's or a changed one).
async fn started_by_docker_compose(h: &Harness) -> (ServiceStackSpec, BTreeMap<String, String>) {
    let spec = demo_spec(&h.project);
    let file = ComposeFile::of(&spec);
    docker_compose(&h.project, &file, &spec, &["up", "-d"]);
    let ids = h.containers();
    assert_eq!(ids.len(), 3, "{ids:?}");
    (spec, ids)
}

#[tokio::test]
async fn adopting_a_stack_docker_compose_started_keeps_what_matches_and_recreates_the_rest() {
    let mut h = Harness::new("adopt");
    let (mut spec, started) = started_by_docker_compose(&h).await;
    spec.compose.adopt = true;
    // The backend's config differs from the running one; postgres and redis match.
    spec.compose.file = spec.compose.file.replace(
        "REDIS_HOST: redis",
        "REDIS_HOST: redis\n      LOG_LEVEL: debug",
    );
    h.apply(spec);
    h.until_ready(READY_TIMEOUT).await;
    assert_not_in_conflict(&h);

    let now = h.containers();
    assert_eq!(
        now["postgres"], started["postgres"],
        "postgres was recreated"
    );
    assert_eq!(now["redis"], started["redis"], "redis was recreated");
    assert_ne!(
        now["backend"], started["backend"],
        "backend was not recreated"
    );
    assert!(stackwarden_labelled(&now["backend"]));
    assert_eq!(
        h.status().owned_project.as_deref(),
        Some(h.project.as_str())
    );
    // The adopted volumes were kept: the database still has docker-compose's data volume.
    assert!(h.volume_exists("pgdata"));

    // A restarted operator knows the adopted containers from the status alone (they carry no
    // stackwarden label), even once `adopt` is gone from the spec; and backs them up.
    h.ctx = Context::new(Arc::new(h.store.clone()));
    let root = tempfile::tempdir().unwrap();
    let mut spec = h.stack().spec;
    spec.compose.adopt = false;
    spec.backups = vec![serde_json::from_value(serde_json::json!({
        "name": "pg",
        "postgres": {"service": "postgres", "database": "demo", "user": "demo", "passwordVariable": "DB_PASSWORD"},
        "destination": {"path": root.path()},
        "schedule": "*/5 * * * * *",
    }))
    .unwrap()];
    h.apply(spec);
    h.until("a backup of the adopted postgres", READY_TIMEOUT, |h| {
        h.status()
            .backups
            .get("pg")
            .is_some_and(|b| b.last_success.is_some())
    })
    .await;
    assert!(ready(&h), "{:#?}", h.status());
    assert_eq!(h.containers()["postgres"], started["postgres"]);

    // Deleting the stack removes the adopted containers and keeps the volumes (Retain).
    h.delete().await;
    assert!(h.containers().is_empty(), "{:?}", h.containers());
    let filter = format!("label=com.docker.compose.project={}", h.project);
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &filter]).trim(),
        ""
    );
    assert!(h.volume_exists("pgdata"));
}

#[tokio::test]
async fn without_adopt_a_stack_docker_compose_started_is_a_conflict_that_names_adopt() {
    let h = Harness::new("noadopt");
    let (spec, started) = started_by_docker_compose(&h).await;
    h.apply(spec);
    h.until("a conflict", READY_TIMEOUT, |h| {
        h.condition(ConditionType::InvalidSpec)
            .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    let invalid = h.condition(ConditionType::InvalidSpec).unwrap();
    assert_eq!(invalid.reason, Reason::ProjectNameInUse);
    assert!(
        invalid.message.contains("spec.compose.adopt: true"),
        "{}",
        invalid.message
    );
    assert!(!ready(&h));
    assert_eq!(h.containers(), started, "containers were touched");
    assert_eq!(h.status().owned_project, None);
}

#[tokio::test]
async fn adopt_never_takes_the_containers_of_another_servicestack() {
    let owner = Harness::new("owner");
    owner.apply(redis_spec(&owner.project, ""));
    owner.until_ready(READY_TIMEOUT).await;
    let theirs = owner.containers();

    let taker = Harness::new("taker");
    let mut spec = redis_spec(&owner.project, "");
    spec.compose.adopt = true;
    taker.apply(spec);
    taker.pass().await;
    let invalid = taker.condition(ConditionType::InvalidSpec).unwrap();
    assert_eq!(
        (invalid.status, invalid.reason),
        (ConditionStatus::True, Reason::ProjectNameInUse),
        "{}",
        invalid.message
    );
    assert!(
        invalid.message.contains("another ServiceStack"),
        "{}",
        invalid.message
    );
    assert_eq!(
        owner.containers(),
        theirs,
        "the other stack's containers were touched"
    );
    owner.pass().await;
    assert!(ready(&owner));
}

/// The README's migration path as a runbook user walks it: a stack `docker-compose up -d`
/// started, then its manifest with `adopt: true` in `stackwarden local`: Ready with no
/// container restarted, and the runbook's `docker-compose up -d` still changes nothing.
#[tokio::test]
async fn stackwarden_local_adopts_a_runbook_stack_without_restarting_anything() {
    let h = Harness::new("migrate");
    let (mut spec, started) = started_by_docker_compose(&h).await;
    spec.compose.adopt = true;
    let started_at = |ids: &BTreeMap<String, String>| -> Vec<String> {
        ids.values()
            .map(|id| docker(&["inspect", "--format", "{{.State.StartedAt}}", id]))
            .collect()
    };
    let first_start = started_at(&started);
    let driver = stackwarden_tests::harness::LocalDriver::start(&serde_json::json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": "migrate", "namespace": "e2e"},
        "spec": spec,
    }));
    let start = std::time::Instant::now();
    while !driver.ready("e2e", "migrate") {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "not Ready: {:#?}",
            driver.status("e2e", "migrate")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.containers(), started, "a container was recreated");
    assert_eq!(
        started_at(&started),
        first_start,
        "a container was restarted"
    );

    let file = ComposeFile::of(&spec);
    docker_compose(&h.project, &file, &spec, &["up", "-d"]);
    assert_eq!(h.containers(), started);
}
