//! Manual rollback on the real Docker engine (issue 11 item 6): `stackwarden.dev/rollback`
//! brings an earlier revision back as a new one, through the rollout, until the spec changes;
//! with `restore-backup` the database is restored to the backup taken before the revision
//! undone.
//!
//! Revision 1's images must still be on the engine: a second checkout on the same machine whose
//! test images differ rebuilds `stackwarden-test/demo-app:latest` under the tests' feet, and the
//! rollback is then (rightly) refused with `RollbackRefused` naming the image gone.

use std::time::Duration;

use stackwarden::api::revision::Cause;
use stackwarden::api::rollout_status::RolloutPhase;
use stackwarden::api::{BackupTarget, ConditionStatus, ConditionType};
use stackwarden::decide::rollback::ROLLBACK_ANNOTATION;
use stackwarden_tests::harness::{demo_spec, docker, unpublished_demo, with_backend_env, Harness};

const TIMEOUT: Duration = Duration::from_secs(240);

/// The backend container's environment, one `K=V` a line.
fn backend_env(h: &Harness) -> String {
    let id = &h.containers()["backend"];
    docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        id,
    ])
}

fn ask_rollback(h: &Harness, value: &str) {
    h.store
        .request("e2e", &h.name, ROLLBACK_ANNOTATION, value)
        .unwrap();
}

/// Revision `n` applied, its rollout (if any) complete, and the stack Ready.
fn settled_on(h: &Harness, n: u64) -> bool {
    let st = h.status();
    let rolled = st.rollout.as_ref().is_none_or(|r| !r.phase.active());
    st.revision == Some(n)
        && rolled
        && h.condition(ConditionType::Ready)
            .is_some_and(|c| c.status == ConditionStatus::True)
}

fn cause(h: &Harness, n: u64) -> Cause {
    h.store
        .read_revisions(&h.stack())
        .unwrap()
        .into_iter()
        .find(|r| r.revision.number == n)
        .unwrap_or_else(|| panic!("revision {n} is kept"))
        .revision
        .cause
}

#[tokio::test]
async fn a_rollback_brings_the_old_backend_back_as_a_new_revision_until_the_spec_changes() {
    let h = Harness::new("rb-manual");
    let spec = unpublished_demo(&h.project);
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    h.apply(with_backend_env(&spec, "DEMO_RELEASE", "2"));
    h.until("revision 2 rolled out", TIMEOUT, |h| settled_on(h, 2))
        .await;
    assert!(backend_env(&h).contains("DEMO_RELEASE=2"));
    let postgres = h.containers()["postgres"].clone();

    ask_rollback(&h, "1#e2e");
    h.until("the rollback to revision 1", TIMEOUT, |h| settled_on(h, 3))
        .await;
    assert!(
        !backend_env(&h).contains("DEMO_RELEASE"),
        "the backend runs revision 1's config"
    );
    assert_eq!(cause(&h, 3), Cause::Rollback { to: 1 });
    let rollout = h.status().rollout.expect("the rollback was rolled out");
    assert_eq!(
        (rollout.revision, rollout.phase),
        (3, RolloutPhase::Complete)
    );
    assert_eq!(h.containers()["postgres"], postgres, "postgres untouched");
    // The spec is the person's own: still revision 2's.
    assert!(h.stack().spec.compose.file.contains("DEMO_RELEASE"));
    assert!(h
        .events()
        .iter()
        .any(|e| e.note.contains("rollback to revision 1 requested")));

    // A changed spec drops the pin and is rolled out as usual.
    h.apply(with_backend_env(&spec, "DEMO_RELEASE", "4"));
    h.until("revision 4 rolled out", TIMEOUT, |h| settled_on(h, 4))
        .await;
    assert!(backend_env(&h).contains("DEMO_RELEASE=4"));
    assert!(matches!(cause(&h, 4), Cause::SpecChange { .. }));
}

fn pg_target(dir: &std::path::Path) -> BackupTarget {
    serde_json::from_value(serde_json::json!({
        "name": "pg",
        "postgres": {"service": "postgres", "database": "demo", "user": "demo", "passwordVariable": "DB_PASSWORD"},
        "destination": {"path": dir},
        "retention": {"daily": 30},
        "beforeDeploy": true,
    }))
    .unwrap()
}

fn psql(h: &Harness, sql: &str) -> String {
    let id = &h.containers()["postgres"];
    docker(&["exec", id, "psql", "-U", "demo", "-d", "demo", "-Atqc", sql])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_rollback_with_restore_backup_loses_the_rows_written_since_the_deploy_backup() {
    let h = Harness::new("rb-restore");
    let root = tempfile::tempdir().unwrap();
    let mut spec = demo_spec(&h.project);
    spec.backups = vec![pg_target(root.path())];
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    psql(
        &h,
        "CREATE TABLE marks (x int); INSERT INTO marks VALUES (1)",
    );

    h.apply(with_backend_env(&spec, "DEMO_RELEASE", "2"));
    h.until("revision 2 deployed", TIMEOUT, |h| settled_on(h, 2))
        .await;
    let deploy_backup = h.status().backups["pg"]
        .deploy_backup
        .clone()
        .expect("the deploy's backup")
        .id;
    let revisions = h.store.read_revisions(&h.stack()).unwrap();
    let two = revisions.iter().find(|r| r.revision.number == 2).unwrap();
    assert_eq!(two.revision.backups["pg"], deploy_backup);
    psql(&h, "INSERT INTO marks VALUES (2)");

    ask_rollback(&h, "1,restore-backup#e2e");
    h.until("the rollback and its restore", TIMEOUT, |h| {
        let st = h.status();
        let Some(rb) = st.rollback.as_ref() else {
            return false;
        };
        let pg = &st.backups["pg"];
        let restored = pg.handled_rollback_restore.as_deref()
            == Some(rb.restore_request(&deploy_backup).as_str())
            && pg.running.is_none();
        restored && settled_on(h, 3)
    })
    .await;
    let st = h.status();
    let restore = st.backups["pg"].last_restore.clone().expect("a restore");
    let files: Vec<_> = walkdir(root.path());
    assert!(
        restore.succeeded,
        "{} {files:?} {:#?}",
        restore.message,
        h.events()
    );
    assert_eq!(restore.id, deploy_backup);
    assert_eq!(psql(&h, "SELECT string_agg(x::text, ',') FROM marks"), "1");
    assert!(!backend_env(&h).contains("DEMO_RELEASE"));
}

fn walkdir(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// Runs the real `stackwarden` command line: whether it succeeded, stdout, stderr.
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(stackwarden_tests::harness::operator_binary())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: the command line and the waits block, the driver must go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stackwarden_rollback_rolls_back_through_the_running_operator_and_refuses_clearly() {
    use stackwarden_tests::harness::{redis_spec, wait_for, LocalDriver};
    let h = Harness::new("rb-cli");
    let stack = |extra: &str| {
        let mut s = stackwarden::api::ServiceStack::new("rb", redis_spec(&h.project, extra));
        s.metadata.namespace = Some("ops".into());
        serde_json::to_value(&s).unwrap()
    };
    let d = LocalDriver::start(&stack(""));
    let settled = |n: u64| {
        let st = d.status("ops", "rb");
        (st.revision == Some(n) && st.rollout.as_ref().is_none_or(|r| !r.phase.active()))
            && d.ready("ops", "rb")
    };
    wait_for("revision 1 Ready", TIMEOUT, || {
        settled(1).then_some(()).ok_or_else(|| "not yet".to_owned())
    });
    let two = yaml_serde::to_string(&stack("CACHE_RELEASE: \"2\"")).unwrap();
    std::fs::write(&d.manifest, two).unwrap();
    wait_for("revision 2 Ready", TIMEOUT, || {
        settled(2).then_some(()).ok_or_else(|| "not yet".to_owned())
    });
    let state = d.state.to_str().unwrap().to_owned();

    let (ok, _, err) = cli(&["rollback", "ops/rb", "--to", "9", "--state-dir", &state]);
    assert!(!ok && err.contains("revision 9 is not kept"), "{err}");
    let (ok, _, err) = cli(&[
        "rollback",
        "ops/rb",
        "--restore-backup",
        "--state-dir",
        &state,
    ]);
    assert!(
        !ok && err.contains("no beforeDeploy backup was recorded for revision 2"),
        "{err}"
    );
    assert_eq!(d.status("ops", "rb").revision, Some(2), "nothing was asked");

    let (ok, out, err) = cli(&["rollback", "ops/rb", "--state-dir", &state]);
    assert!(ok, "{err}");
    assert!(
        out.contains("rolled back to revision 1 (now running as revision 3)"),
        "{out}"
    );
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &h.containers()["cache"],
    ]);
    assert!(!env.contains("CACHE_RELEASE"), "{env}");
    assert!(env.contains("REDIS_PASSWORD=test-redis-password"));
}
