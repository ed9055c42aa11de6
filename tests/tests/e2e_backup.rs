//! End-to-end tests of backups, restore tests and restores (issue: backups) on the real Docker
//! engine, with the demo's real PostgreSQL and Redis, and real destinations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;
use stackwarden::api::{
    BackupTarget, BackupTargetStatus, ConditionStatus, ConditionType, Job, Reason, ServiceStackSpec,
};
use stackwarden::backup::Manifest;
use stackwarden_tests::harness::{demo_spec, docker, with_backend_env, Harness};

const READY: Duration = Duration::from_secs(120);
const JOB: Duration = Duration::from_secs(180);

fn pg_target(name: &str, dir: &Path, extra: serde_json::Value) -> BackupTarget {
    let mut t = serde_json::json!({
        "name": name,
        "postgres": {"service": "postgres", "database": "demo", "user": "demo", "passwordVariable": "DB_PASSWORD"},
        "destination": {"path": dir},
        "retention": {"daily": 30, "weekly": 12, "monthly": 12},
    });
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    serde_json::from_value(t).unwrap()
}

/// The demo stack, Ready, with a directory for its backups.
async fn ready_demo(tag: &str) -> (Harness, tempfile::TempDir, ServiceStackSpec) {
    let h = Harness::new(tag);
    let spec = demo_spec(&h.project);
    h.apply(spec.clone());
    h.until_ready(READY).await;
    (h, tempfile::tempdir().unwrap(), spec)
}

fn with_backups(mut spec: ServiceStackSpec, targets: Vec<BackupTarget>) -> ServiceStackSpec {
    spec.backups = targets;
    spec
}

fn psql(h: &Harness, sql: &str) -> String {
    let id = &h.containers()["postgres"];
    docker(&["exec", id, "psql", "-U", "demo", "-d", "demo", "-Atqc", sql])
        .trim()
        .to_owned()
}

fn target_status(h: &Harness, target: &str) -> BackupTargetStatus {
    h.status().backups.get(target).cloned().unwrap_or_default()
}

/// The directory one target's backups land in.
fn target_dir(root: &Path, h: &Harness, target: &str) -> PathBuf {
    root.join("e2e").join(&h.name).join(target)
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn manifests(dir: &Path) -> Vec<Manifest> {
    let mut v: Vec<Manifest> = files(dir)
        .iter()
        .filter(|f| f.ends_with(".manifest.json"))
        .map(|f| serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap())
        .collect();
    v.sort_by_key(|m| m.started);
    v
}

fn sha256_file(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Asks for a backup the way `stackwarden backup` does, and waits for its outcome.
async fn request_backup(h: &Harness, target: &str) -> BackupTargetStatus {
    let token = chrono::Utc::now().to_rfc3339();
    h.store
        .request(
            "e2e",
            &h.name,
            &format!("backup.stackwarden.dev/{target}"),
            &token,
        )
        .unwrap();
    h.until("the requested backup to end", JOB, |h| {
        let st = target_status(h, target);
        st.handled_backup_request.as_deref() == Some(token.as_str()) && st.running.is_none()
    })
    .await;
    target_status(h, target)
}

async fn request_restore(h: &Harness, target: &str, id: &str) -> BackupTargetStatus {
    let value = format!("{id}#{}", chrono::Utc::now().timestamp_millis());
    h.store
        .request(
            "e2e",
            &h.name,
            &format!("restore.stackwarden.dev/{target}"),
            &value,
        )
        .unwrap();
    h.until("the restore to end", JOB, |h| {
        let st = target_status(h, target);
        st.handled_restore_request.as_deref() == Some(value.as_str()) && st.running.is_none()
    })
    .await;
    target_status(h, target)
}

/// Adds `rows` rows of `width` distinct md5 texts (32 hex characters each) to `table`: about
/// 16 bytes a md5 that zstd cannot take away. The inner query refers to `g`, so PostgreSQL
/// evaluates it per row rather than once (which would repeat one value everywhere).
fn fill(h: &Harness, table: &str, rows: u32, width: u32) {
    psql(
        h,
        &format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int, body text); \
             INSERT INTO {table} SELECT g, (SELECT string_agg(md5(random()::text || g::text || i::text), '') \
             FROM generate_series(1, {width}) i) FROM generate_series(1, {rows}) g"
        ),
    );
}

#[tokio::test]
async fn scheduled_backup_lands_with_manifest_and_a_restore_brings_back_dropped_rows() {
    let (h, root, spec) = ready_demo("bk-pg").await;
    fill(&h, "orders", 1000, 1);
    fill(&h, "customers", 50, 1);

    // Every five seconds: the first slot comes quickly.
    let target = pg_target(
        "pg",
        root.path(),
        serde_json::json!({"schedule": "*/5 * * * * *", "verify": {"afterBackup": true}}),
    );
    h.apply(with_backups(spec.clone(), vec![target.clone()]));
    h.until("a scheduled backup", JOB, |h| {
        target_status(h, "pg").last_success.is_some()
    })
    .await;
    // Stop the schedule so nothing else runs while the test looks.
    let mut manual = target.clone();
    manual.schedule = None;
    h.apply(with_backups(spec.clone(), vec![manual]));

    let st = target_status(&h, "pg");
    let last = st.last_success.clone().unwrap();
    assert_eq!(last.trigger, stackwarden::api::Trigger::Scheduled);
    let slot = st.last_slot.expect("the slot is recorded");
    let dir = target_dir(root.path(), &h, "pg");
    let ms = manifests(&dir);
    let m = ms.iter().find(|m| m.id == last.id).expect("manifest");
    assert_eq!(m.slot, Some(slot));
    assert_eq!(m.database.as_deref(), Some("demo"));
    assert_eq!(m.row_counts.get("public.orders"), Some(&1000));
    assert_eq!(m.row_counts.get("public.customers"), Some(&50));
    assert!(m.server_version.starts_with("15"), "{}", m.server_version);
    let data = dir.join(format!("{}.pgdump.zst", m.id));
    assert_eq!(sha256_file(&data), m.sha256);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), m.size);
    assert_eq!(last.sha256, m.sha256);
    assert!(
        files(&dir).iter().all(|f| !f.starts_with('.')),
        "{:?}",
        files(&dir)
    );
    let event = h
        .events()
        .into_iter()
        .find(|e| e.reason == "BackupSucceeded")
        .expect("an event");
    assert!(event.note.contains(&m.id), "{}", event.note);

    // verify.afterBackup: the restore test runs and passes.
    h.until("the restore test", JOB, |h| {
        target_status(h, "pg")
            .last_success
            .unwrap()
            .verified
            .is_some()
    })
    .await;
    assert_eq!(
        target_status(&h, "pg").last_success.unwrap().verified,
        Some(true)
    );
    assert_eq!(
        h.condition(ConditionType::BackupFailed).unwrap().status,
        ConditionStatus::False
    );
    assert_eq!(
        h.condition(ConditionType::BackupStale).unwrap().status,
        ConditionStatus::False
    );

    // Damage, then restore.
    psql(&h, "DELETE FROM orders WHERE id > 10; DROP TABLE customers");
    assert_eq!(psql(&h, "SELECT count(*) FROM orders"), "10");
    let backend_before = h.containers()["backend"].clone();
    let st = request_restore(&h, "pg", &m.id).await;
    let restore = st.last_restore.expect("a restore record");
    assert!(restore.succeeded, "{restore:?}");
    assert!(
        restore.message.contains("before_restore"),
        "{}",
        restore.message
    );
    assert_eq!(psql(&h, "SELECT count(*) FROM orders"), "1000");
    assert_eq!(psql(&h, "SELECT count(*) FROM customers"), "50");
    // The replaced database is kept, not dropped.
    let dbs = psql(&h, "SELECT datname FROM pg_database");
    assert!(dbs.contains("demo_before_restore_"), "{dbs}");
    // The backend was stopped for the restore and comes back.
    h.until_ready(READY).await;
    assert_eq!(
        h.containers()["backend"],
        backend_before,
        "same container, restarted"
    );
    // Started again by the restore itself, not repaired as a crash against its budget.
    assert_eq!(h.status().services["backend"].restarts, 0);
    assert!(
        !h.events().iter().any(|e| e.reason == "Crashed"),
        "{:#?}",
        h.events()
    );
    let reasons: Vec<String> = h
        .events()
        .into_iter()
        .map(|e| e.reason.to_string())
        .collect();
    assert!(reasons.contains(&"Restored".to_owned()), "{reasons:?}");
}

#[tokio::test]
async fn a_corrupted_backup_fails_its_restore_test() {
    let (h, root, spec) = ready_demo("bk-corrupt").await;
    fill(&h, "t", 20_000, 2);
    let target = pg_target("pg", root.path(), serde_json::json!({}));
    h.apply(with_backups(spec.clone(), vec![target.clone()]));
    let st = request_backup(&h, "pg").await;
    let id = st.last_success.expect("backed up").id;
    let data = target_dir(root.path(), &h, "pg").join(format!("{id}.pgdump.zst"));
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    for i in [n / 3, n / 2, 2 * n / 3] {
        bytes[i] ^= 0xff;
    }
    std::fs::write(&data, &bytes).unwrap();

    // A restore test every 3 seconds.
    let mut verified = target.clone();
    verified.verify = Some(stackwarden::api::VerifySpec {
        schedule: Some("*/3 * * * * *".into()),
        after_backup: false,
    });
    h.apply(with_backups(spec.clone(), vec![verified]));
    h.until("the restore test", JOB, |h| {
        target_status(h, "pg").last_verification.is_some()
    })
    .await;
    let st = target_status(&h, "pg");
    let v = st.last_verification.unwrap();
    assert!(!v.passed);
    assert_eq!(v.id, id);
    assert_eq!(st.last_success.unwrap().verified, Some(false));
    let c = h.condition(ConditionType::BackupFailed).unwrap();
    assert_eq!(c.status, ConditionStatus::True);
    assert_eq!(c.reason, Reason::ChecksumMismatch, "{}", c.message);
    // The damaged backup is reported, not deleted.
    assert!(data.exists());
    // No scratch database is left behind.
    let dbs = psql(&h, "SELECT datname FROM pg_database");
    assert!(!dbs.contains("verify"), "{dbs}");
}

#[tokio::test]
async fn postgres_stopped_mid_dump_fails_cleanly_and_keeps_older_backups() {
    let (h, root, spec) = ready_demo("bk-stop").await;
    let target = pg_target("pg", root.path(), serde_json::json!({}));
    h.apply(with_backups(spec.clone(), vec![target]));
    let first = request_backup(&h, "pg")
        .await
        .last_success
        .expect("first backup");
    let dir = target_dir(root.path(), &h, "pg");
    let before: Vec<(String, String)> = files(&dir)
        .into_iter()
        .map(|f| (f.clone(), sha256_file(&dir.join(&f))))
        .collect();

    // Big enough that the dump takes a while.
    fill(&h, "big", 600_000, 8);
    let token = chrono::Utc::now().to_rfc3339();
    h.store
        .request("e2e", &h.name, "backup.stackwarden.dev/pg", &token)
        .unwrap();
    h.until("the dump to be under way", JOB, |h| {
        target_status(h, "pg").running.is_some_and(|r| r.bytes > 0)
    })
    .await;
    docker(&["stop", "-t", "1", &h.containers()["postgres"]]);
    h.until("the backup to fail", JOB, |h| {
        let st = target_status(h, "pg");
        st.running.is_none() && st.last_failure.is_some()
    })
    .await;
    let st = target_status(&h, "pg");
    let f = st.last_failure.unwrap();
    assert!(
        matches!(f.reason, Reason::DumpFailed | Reason::DatabaseUnreachable),
        "{f:?}"
    );
    assert_eq!(st.last_success.unwrap().id, first.id, "not reported done");
    let c = h.condition(ConditionType::BackupFailed).unwrap();
    assert_eq!(c.status, ConditionStatus::True);
    // Exactly the files from before, byte for byte: no partial file, nothing lost.
    let after: Vec<(String, String)> = files(&dir)
        .into_iter()
        .map(|f| (f.clone(), sha256_file(&dir.join(&f))))
        .collect();
    assert_eq!(after, before);
}

/// A tmpfs of `size`, unmounted when dropped (the directory is removed after that).
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.path().to_owned(), dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_destination_gives_disk_full_and_loses_nothing() {
    let h = Harness::new("bk-full");
    let fs = Tmpfs::mount("2m");
    let spec = demo_spec(&h.project);
    h.apply(spec.clone());
    h.until_ready(READY).await;
    let target = pg_target("pg", &fs.0, serde_json::json!({}));
    h.apply(with_backups(spec.clone(), vec![target]));
    let first = request_backup(&h, "pg")
        .await
        .last_success
        .expect("small backup fits");
    let dir = target_dir(&fs.0, &h, "pg");
    let before: Vec<(String, String)> = files(&dir)
        .into_iter()
        .map(|f| (f.clone(), sha256_file(&dir.join(&f))))
        .collect();

    // 60,000 rows of four distinct md5s: about 8 MB of hex that zstd cannot shrink below 2 MB.
    fill(&h, "noise", 60_000, 4);
    let st = request_backup(&h, "pg").await;
    let f = st.last_failure.expect("the backup failed");
    assert_eq!(f.reason, Reason::DiskFull, "{f:?}");
    assert!(
        f.message.contains(&fs.0.display().to_string()),
        "{}",
        f.message
    );
    assert_eq!(st.last_success.unwrap().id, first.id);
    let c = h.condition(ConditionType::BackupFailed).unwrap();
    assert_eq!(
        (c.status, c.reason),
        (ConditionStatus::True, Reason::DiskFull)
    );
    let after: Vec<(String, String)> = files(&dir)
        .into_iter()
        .map(|f| (f.clone(), sha256_file(&dir.join(&f))))
        .collect();
    assert_eq!(
        after, before,
        "a partial file was left, or an old backup lost"
    );
    // Ready is about the services, and they are fine.
    assert_eq!(
        h.condition(ConditionType::Ready).unwrap().status,
        ConditionStatus::True
    );
}

#[tokio::test]
async fn an_operator_killed_mid_backup_retries_the_slot_once_and_never_reports_it_early() {
    let (h, root, spec) = ready_demo("bk-kill").await;
    fill(&h, "big", 600_000, 8);
    let target = pg_target("pg", root.path(), serde_json::json!({}));
    h.apply(with_backups(spec.clone(), vec![target]));
    let dir = target_dir(root.path(), &h, "pg");

    let token = chrono::Utc::now().to_rfc3339();
    h.store
        .request("e2e", &h.name, "backup.stackwarden.dev/pg", &token)
        .unwrap();
    h.until("the dump to be under way", JOB, |h| {
        target_status(h, "pg").running.is_some_and(|r| r.bytes > 0)
    })
    .await;
    // The operator dies: its task stops mid-write, the status still says running.
    h.ctx.backups.stop(&h.stack().key(), &Default::default());
    let running = target_status(&h, "pg")
        .running
        .expect("still running in status");
    assert_eq!(running.attempt, 1);
    assert!(manifests(&dir).is_empty(), "reported done before it was");

    // A new operator process.
    let fresh = stackwarden::reconcile::Context::new(std::sync::Arc::new(h.store.clone()));
    let pass = || async {
        stackwarden::reconcile::reconcile(&h.stack(), &h.uid(), &fresh)
            .await
            .unwrap()
    };
    pass().await;
    let retry = target_status(&h, "pg").running.expect("retried");
    assert_eq!((retry.attempt, retry.id.clone()), (2, running.id.clone()));
    assert!(h.events().iter().any(|e| e.reason == "BackupRetried"));
    let start = std::time::Instant::now();
    while target_status(&h, "pg").running.is_some() {
        assert!(start.elapsed() < JOB, "{:#?}", h.status());
        tokio::time::sleep(Duration::from_millis(250)).await;
        pass().await;
    }
    let st = target_status(&h, "pg");
    let done = st.last_success.clone().unwrap_or_else(|| {
        panic!(
            "the retried backup did not succeed: {:#?}\n{:#?}",
            st,
            h.events()
        )
    });
    assert_eq!(done.id, running.id);
    let ms = manifests(&dir);
    assert_eq!(ms.len(), 1, "one backup for the request");
    assert_eq!(ms[0].row_counts["public.big"], 600_000);
    assert!(
        files(&dir).iter().all(|f| !f.starts_with('.')),
        "{:?}",
        files(&dir)
    );

    // Killed twice: given up as Interrupted, not retried forever.
    let token = chrono::Utc::now().to_rfc3339();
    h.store
        .request("e2e", &h.name, "backup.stackwarden.dev/pg", &token)
        .unwrap();
    let wait_running = |ctx: std::sync::Arc<stackwarden::reconcile::Context>| {
        let h = &h;
        async move {
            let start = std::time::Instant::now();
            loop {
                stackwarden::reconcile::reconcile(&h.stack(), &h.uid(), &ctx)
                    .await
                    .unwrap();
                if target_status(h, "pg").running.is_some_and(|r| r.bytes > 0) {
                    return;
                }
                assert!(start.elapsed() < JOB);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_running(fresh.clone()).await;
    fresh.backups.stop(&h.stack().key(), &Default::default());
    let second = stackwarden::reconcile::Context::new(std::sync::Arc::new(h.store.clone()));
    wait_running(second.clone()).await;
    second.backups.stop(&h.stack().key(), &Default::default());
    let third = stackwarden::reconcile::Context::new(std::sync::Arc::new(h.store.clone()));
    stackwarden::reconcile::reconcile(&h.stack(), &h.uid(), &third)
        .await
        .unwrap();
    let st = target_status(&h, "pg");
    assert!(st.running.is_none());
    assert_eq!(st.last_failure.unwrap().reason, Reason::Interrupted);
    assert_eq!(manifests(&dir).len(), 1);
}

#[tokio::test]
async fn redis_snapshot_and_restore_round_trip() {
    let h = Harness::new("bk-redis");
    let root = tempfile::tempdir().unwrap();
    let mut spec = stackwarden_tests::harness::redis_spec(&h.project, "");
    h.apply(spec.clone());
    h.until_ready(READY).await;
    let cache = h.containers()["cache"].clone();
    let cli = |args: &[&str]| {
        let mut a = vec![
            "exec",
            "-e",
            "REDISCLI_AUTH=test-redis-password",
            cache.as_str(),
            "redis-cli",
        ];
        a.extend_from_slice(args);
        docker(&a).trim().to_owned()
    };
    for i in 0..200 {
        cli(&["SET", &format!("k{i}"), "v"]);
    }
    spec.backups = vec![serde_json::from_value(serde_json::json!({
        "name": "cache",
        "redis": {"service": "cache", "passwordVariable": "REDIS_PASSWORD"},
        "destination": {"path": root.path()},
        "verify": {"afterBackup": true},
    }))
    .unwrap()];
    h.apply(spec.clone());
    let st = request_backup(&h, "cache").await;
    let last = st.last_success.expect("snapshot taken");
    let dir = target_dir(root.path(), &h, "cache");
    let m = manifests(&dir).pop().unwrap();
    assert_eq!(m.key_counts.get(&0), Some(&200));
    h.until("the restore test", JOB, |h| {
        target_status(h, "cache")
            .last_success
            .unwrap()
            .verified
            .is_some()
    })
    .await;
    assert_eq!(
        target_status(&h, "cache").last_success.unwrap().verified,
        Some(true)
    );

    cli(&["FLUSHALL"]);
    assert_eq!(cli(&["DBSIZE"]), "0");
    let st = request_restore(&h, "cache", &last.id).await;
    assert!(
        st.last_restore.as_ref().unwrap().succeeded,
        "{:?}",
        st.last_restore
    );
    h.until_ready(READY).await;
    let cache = h.containers()["cache"].clone();
    let dbsize = docker(&[
        "exec",
        "-e",
        "REDISCLI_AUTH=test-redis-password",
        &cache,
        "redis-cli",
        "DBSIZE",
    ]);
    assert_eq!(dbsize.trim(), "200");
    assert_eq!(
        h.condition(ConditionType::BackupFailed).unwrap().status,
        ConditionStatus::False
    );
    let _ = Job::Backup;
}

/// When Docker created a container (RFC 3339).
fn created(id: &str) -> chrono::DateTime<chrono::Utc> {
    docker(&["inspect", "-f", "{{.Created}}", id])
        .trim()
        .parse()
        .expect("docker inspect gives RFC 3339")
}

#[tokio::test]
async fn a_deploy_waits_for_its_backup_and_a_failed_one_holds_it_until_a_backup_succeeds() {
    let (h, root, spec) = ready_demo("bk-deploy").await;
    fill(&h, "orders", 5000, 1);
    let target = pg_target("pg", root.path(), serde_json::json!({"beforeDeploy": true}));
    let spec = with_backups(spec, vec![target.clone()]);
    h.apply(spec.clone());
    h.pass().await;
    // Declaring the target is no deploy: nothing is backed up yet.
    assert!(target_status(&h, "pg").deploy_backup.is_none());
    let revision = h.status().revision.unwrap();
    let backend = h.containers()["backend"].clone();

    // A deploy: the backup comes first, then the backend is recreated.
    h.apply(with_backend_env(&spec, "DEPLOY_MARK", "2"));
    let seen = std::cell::RefCell::new(Vec::new());
    h.until("the deploy", JOB, |h| {
        if let Some(c) = h.condition(ConditionType::Progressing) {
            // The old containers are what should run while the backup runs: running them is
            // no reason to be not Ready (their own health check may still be starting).
            if c.reason == Reason::BackingUpBeforeDeploy {
                let ready = h.condition(ConditionType::Ready).unwrap();
                assert!(
                    !ready.message.contains("outdated config"),
                    "{}",
                    ready.message
                );
            }
            seen.borrow_mut().push(c.reason);
        }
        h.containers()["backend"] != backend
            && h.condition(ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert!(
        seen.borrow().contains(&Reason::BackingUpBeforeDeploy),
        "{:?}",
        seen.borrow()
    );
    let st = target_status(&h, "pg");
    let d = st.deploy_backup.clone().expect("the deploy's backup");
    assert_eq!(d.state, stackwarden::api::DeployBackupState::Succeeded);
    assert_eq!(Some(&d.spec_hash), h.status().spec_hash.as_ref());
    assert_eq!(h.status().revision, Some(revision + 1));
    let m = manifests(&target_dir(root.path(), &h, "pg"))
        .into_iter()
        .find(|m| m.id == d.id)
        .expect("its manifest");
    assert_eq!(m.trigger, stackwarden::api::Trigger::PreDeploy);
    assert_eq!(m.row_counts["public.orders"], 5000);
    let recreated = h.containers()["backend"].clone();
    // The backup was the rollout's first step.
    let rollout = h.status().rollout.expect("the deploy was rolled out");
    assert_eq!(rollout.revision, revision + 1);
    assert_eq!(
        rollout.gates_passed.first(),
        Some(&format!("pg: backed up before the deploy ({})", d.id)),
        "{rollout:?}"
    );
    assert!(m.finished <= rollout.started, "{rollout:?}");
    assert!(
        m.finished <= created(&recreated),
        "the backup ({}) finished after the new backend was created ({})",
        m.finished,
        created(&recreated)
    );

    // The destination breaks (a path below a regular file): the next deploy is held.
    let file = root.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let mut broken = target.clone();
    broken.destination.path = Some(file.display().to_string());
    let held = with_backend_env(
        &with_backups(spec.clone(), vec![broken]),
        "DEPLOY_MARK",
        "3",
    );
    h.apply(held.clone());
    h.until("the held deploy", JOB, |h| {
        h.condition(ConditionType::Progressing)
            .is_some_and(|c| c.reason == Reason::PreDeployBackupFailed)
    })
    .await;
    for _ in 0..4 {
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(h.containers()["backend"], recreated, "nothing was deployed");
    assert_eq!(h.status().revision, Some(revision + 1));
    let rollout = h.status().rollout.unwrap();
    assert_eq!(
        rollout.revision,
        revision + 1,
        "no rollout began: {rollout:?}"
    );
    let c = h.condition(ConditionType::Progressing).unwrap();
    assert_eq!(c.status, ConditionStatus::False);
    assert!(
        c.message.contains("stackwarden backup") && c.message.contains("beforeDeploy: false"),
        "{}",
        c.message
    );
    assert_eq!(
        h.condition(ConditionType::BackupFailed).unwrap().status,
        ConditionStatus::True
    );
    let held_events = h
        .events()
        .into_iter()
        .filter(|e| e.reason == "PreDeployBackupFailed")
        .count();
    assert_eq!(held_events, 1, "one event, not one per pass");
    // The services still run the previous revision.
    assert_eq!(
        h.states().values().filter(|s| *s == "running").count(),
        3,
        "{:?}",
        h.states()
    );

    // Fixed, and a person takes a backup: the deploy goes on.
    h.apply(with_backend_env(&spec, "DEPLOY_MARK", "3"));
    let st = request_backup(&h, "pg").await;
    assert!(st.last_success.is_some());
    h.until("the deploy after the fix", JOB, |h| {
        h.containers()["backend"] != recreated
            && h.condition(ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(h.status().revision, Some(revision + 2));
    assert_eq!(
        target_status(&h, "pg").deploy_backup.unwrap().state,
        stackwarden::api::DeployBackupState::Succeeded
    );
}

#[tokio::test]
async fn the_same_flow_against_s3_backs_up_prunes_verifies_on_request_and_restores() {
    use stackwarden::backup::destination::s3::{S3Config, S3};
    use stackwarden_tests::s3::Moto;
    // moto takes any credentials; distinctive ones can be looked for in what the operator says.
    const ACCESS_KEY_ID: &str = "AKIA-e2e-key-id-5521";
    const SECRET_ACCESS_KEY: &str = "s3-Secret-Access-Key-9431";
    let moto = Moto::start().expect("moto server");
    let h = Harness::new("bk-s3");
    let mut spec = demo_spec(&h.project);
    spec.variables
        .insert("S3_KEY_ID".into(), ACCESS_KEY_ID.into());
    spec.variables
        .insert("S3_SECRET".into(), SECRET_ACCESS_KEY.into());
    h.apply(spec.clone());
    h.until_ready(READY).await;
    fill(&h, "orders", 2000, 1);
    let s3 = |schedule: Option<&str>| -> BackupTarget {
        let mut t = serde_json::json!({
            "name": "pg",
            "postgres": {"service": "postgres", "database": "demo", "user": "demo", "passwordVariable": "DB_PASSWORD"},
            "destination": {"s3": {
                "bucket": moto.bucket(), "prefix": "backups", "endpoint": moto.endpoint(),
                "accessKeyIdVariable": "S3_KEY_ID", "secretAccessKeyVariable": "S3_SECRET",
            }},
            // All backups of the test fall on one day: one is kept.
            "retention": {"daily": 1},
        });
        if let Some(s) = schedule {
            t["schedule"] = s.into();
        }
        serde_json::from_value(t).unwrap()
    };
    h.apply(with_backups(spec.clone(), vec![s3(Some("*/4 * * * * *"))]));
    let first = std::cell::RefCell::new(None::<String>);
    h.until("two scheduled backups", JOB, |h| {
        let id = target_status(h, "pg").last_success.map(|s| s.id);
        let mut f = first.borrow_mut();
        if f.is_none() {
            *f = id.clone();
        }
        id.is_some() && *f != id
    })
    .await;
    h.apply(with_backups(spec.clone(), vec![s3(None)]));
    h.pass().await;
    let last = target_status(&h, "pg").last_success.unwrap();
    assert!(last.location.starts_with("s3://"), "{}", last.location);

    // What the bucket holds: only the newest backup (retention), with its manifest.
    let bucket = S3::new(S3Config {
        bucket: moto.bucket().to_owned(),
        prefix: format!("backups/e2e/{}/pg", h.name),
        endpoint: Some(moto.endpoint()),
        region: None,
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
    })
    .unwrap();
    let catalog = stackwarden::backup::runner::catalog(&bucket).await.unwrap();
    let ids: Vec<&str> = catalog.iter().map(|(m, _)| m.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![last.id.as_str()],
        "retention keeps the newest only"
    );
    let m = &catalog[0].0;
    assert_eq!(m.sha256, last.sha256);
    assert_eq!(m.row_counts["public.orders"], 2000);
    assert!(h.events().iter().any(
        |e| e.reason == "BackupsPruned" && e.note.contains(first.borrow().as_deref().unwrap())
    ));

    // A restore test on request (the newest backup), then a restore round trip.
    let value = format!("#{}", chrono::Utc::now().timestamp_millis());
    h.store
        .request("e2e", &h.name, "verify.stackwarden.dev/pg", &value)
        .unwrap();
    h.until("the requested restore test", JOB, |h| {
        let st = target_status(h, "pg");
        st.handled_verify_request.as_deref() == Some(value.as_str()) && st.running.is_none()
    })
    .await;
    let v = target_status(&h, "pg").last_verification.unwrap();
    assert!(v.passed && v.id == last.id, "{v:?}");
    assert!(
        v.message.contains("2000 rows; counts match"),
        "{}",
        v.message
    );

    psql(&h, "DELETE FROM orders");
    let st = request_restore(&h, "pg", &last.id).await;
    assert!(
        st.last_restore.as_ref().unwrap().succeeded,
        "{:?}",
        st.last_restore
    );
    assert_eq!(psql(&h, "SELECT count(*) FROM orders"), "2000");
    h.until_ready(READY).await;
    // No secret in status, events or the manifest.
    let text = format!(
        "{:?}{:?}{}",
        h.status(),
        h.events(),
        serde_json::to_string(m).unwrap()
    );
    for secret in [SECRET_ACCESS_KEY, &spec.variables["DB_PASSWORD"]] {
        assert!(!text.contains(secret), "a secret leaked");
    }
}

#[tokio::test]
async fn a_restore_given_up_after_two_operator_kills_starts_the_services_it_stopped() {
    use stackwarden::reconcile::{reconcile, Context};
    let (h, root, spec) = ready_demo("bk-rkill").await;
    fill(&h, "orders", 100, 1);
    h.apply(with_backups(
        spec,
        vec![pg_target("pg", root.path(), serde_json::json!({}))],
    ));
    let id = request_backup(&h, "pg").await.last_success.unwrap().id;

    h.store
        .request(
            "e2e",
            &h.name,
            "restore.stackwarden.dev/pg",
            &format!("{id}#1"),
        )
        .unwrap();
    // Each "operator" records the restore and is killed before its job runs a single step
    // (the test's runtime has one thread: the spawned job is not polled before the abort).
    let killed = |ctx: std::sync::Arc<Context>| {
        let h = &h;
        async move {
            reconcile(&h.stack(), &h.uid(), &ctx).await.unwrap();
            ctx.backups.stop(&h.stack().key(), &Default::default());
        }
    };
    let fresh = || Context::new(std::sync::Arc::new(h.store.clone()));
    killed(fresh()).await;
    let running = target_status(&h, "pg")
        .running
        .expect("the restore is recorded");
    assert_eq!(running.paused_services, vec!["backend".to_owned()]);
    // As if the killed job had got as far as stopping the backend.
    docker(&["stop", "-t", "1", &h.containers()["backend"]]);
    killed(fresh()).await;
    assert_eq!(target_status(&h, "pg").running.unwrap().attempt, 2);
    reconcile(&h.stack(), &h.uid(), &fresh()).await.unwrap();
    let st = target_status(&h, "pg");
    assert!(st.running.is_none());
    assert_eq!(st.last_failure.unwrap().reason, Reason::Interrupted);
    assert_eq!(h.states()["backend"], "running", "started again at once");
    h.until_ready(READY).await;
    assert_eq!(h.status().services["backend"].restarts, 0);
    assert!(!h.events().iter().any(|e| e.reason == "Crashed"));
}

#[tokio::test]
async fn an_operator_killed_mid_restore_resumes_the_services_it_stopped_without_counting_a_crash() {
    use stackwarden::reconcile::{reconcile, Context};
    let (h, root, spec) = ready_demo("bk-rkill1").await;
    fill(&h, "orders", 100, 1);
    h.apply(with_backups(
        spec,
        vec![pg_target("pg", root.path(), serde_json::json!({}))],
    ));
    let id = request_backup(&h, "pg").await.last_success.unwrap().id;
    let value = format!("{id}#1");
    h.store
        .request("e2e", &h.name, "restore.stackwarden.dev/pg", &value)
        .unwrap();
    // The operator records the restore, its job stops the backend, and it is killed there.
    let ctx = Context::new(std::sync::Arc::new(h.store.clone()));
    reconcile(&h.stack(), &h.uid(), &ctx).await.unwrap();
    ctx.backups.stop(&h.stack().key(), &Default::default());
    docker(&["stop", "-t", "1", &h.containers()["backend"]]);
    // The next operator finishes the restore.
    h.until("the restore to end", JOB, |h| {
        let st = target_status(h, "pg");
        st.handled_restore_request.as_deref() == Some(value.as_str()) && st.running.is_none()
    })
    .await;
    assert!(target_status(&h, "pg").last_restore.unwrap().succeeded);
    h.until_ready(READY).await;
    let backend = h.status().services["backend"].clone();
    assert_eq!(backend.restarts, 0, "{:#?}", h.events());
    assert!(backend.hold.is_none());
    assert!(
        !h.events().iter().any(|e| e.reason == "Crashed"),
        "{:#?}",
        h.events()
    );
}
