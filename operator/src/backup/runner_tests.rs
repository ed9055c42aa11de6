//! `fold`: how a job's outcome lands in `status.backups[]` and which event tells it.

use chrono::TimeZone;

use super::*;
use crate::api::EventType;

fn target() -> BackupTarget {
    serde_json::from_value(serde_json::json!({
        "name": "pg",
        "postgres": {"service": "postgres", "database": "app", "user": "app"},
        "destination": {"path": "/b"},
    }))
    .expect("a valid target")
}

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 2, minute, 0).unwrap()
}

fn running(job: Job, id: &str) -> RunningJob {
    RunningJob {
        job,
        id: id.into(),
        trigger: Trigger::Manual,
        slot: None,
        started: t(0),
        attempt: 1,
        bytes: 0,
        paused_services: Vec::new(),
    }
}

fn status_running(job: Job, id: &str) -> BackupTargetStatus {
    BackupTargetStatus {
        running: Some(running(job, id)),
        ..Default::default()
    }
}

fn manifest(id: &str) -> Manifest {
    Manifest {
        stack: "ops/shop".into(),
        target: "pg".into(),
        id: id.into(),
        kind: Kind::Postgres,
        trigger: Trigger::Manual,
        slot: None,
        started: t(0),
        finished: t(1),
        object: format!("/b/ops/shop/pg/{id}.pgdump.zst"),
        size: 42,
        sha256: "ab".repeat(32),
        raw_size: 100,
        compression: "zstd-3".into(),
        server_version: "16.2".into(),
        database: Some("app".into()),
        row_counts: BTreeMap::new(),
        key_counts: BTreeMap::new(),
    }
}

fn backed_up(id: &str, pruned: Pruned) -> Finished {
    Finished {
        id: Some(id.into()),
        result: Ok(Done::BackedUp(Box::new(manifest(id)), pruned)),
    }
}

fn failed(id: Option<&str>, reason: Reason, message: &str) -> Finished {
    Finished {
        id: id.map(Into::into),
        result: Err(Failure::new(reason, message)),
    }
}

fn fold_at(st: &mut BackupTargetStatus, f: Finished, now: DateTime<Utc>) -> Pass {
    let mut pass = Pass::default();
    fold(st, &target(), f, now, &mut pass);
    pass
}

fn reasons(pass: &Pass) -> Vec<(EventType, String)> {
    pass.events
        .iter()
        .map(|e| (e.type_, e.reason.to_string()))
        .collect()
}

/// An event as [`reasons`] lists it.
fn ev(type_: EventType, reason: &str) -> (EventType, String) {
    (type_, reason.to_owned())
}

fn verified_backup(id: &str) -> BackupRecord {
    BackupRecord {
        id: id.into(),
        time: t(1),
        size: 42,
        sha256: "ab".repeat(32),
        location: "/b".into(),
        verified: None,
        trigger: Trigger::Manual,
    }
}

#[test]
fn a_finished_backup_becomes_the_last_success_and_the_job_ends() {
    let mut st = status_running(Job::Backup, "pg-1");
    let pass = fold_at(&mut st, backed_up("pg-1", Pruned::default()), t(2));
    assert_eq!(st.running, None);
    let last = st.last_success.expect("a last success");
    assert_eq!(
        (last.id.as_str(), last.time, last.size, last.verified),
        ("pg-1", t(1), 42, None)
    );
    assert_eq!(st.last_failure, None);
    assert_eq!(reasons(&pass), [ev(EventType::Normal, "BackupSucceeded")]);
    assert_eq!(pass.ended, [("pg".to_owned(), Job::Backup, None)]);
}

#[test]
fn a_backup_serves_the_deploy_that_asked_before_it_started_but_not_a_later_one() {
    let deploy = |requested| DeployBackup {
        spec_hash: "h".into(),
        requested,
        id: "pg-0".into(),
        state: DeployBackupState::Failed,
        message: Some("DumpFailed: earlier".into()),
    };
    let mut st = status_running(Job::Backup, "pg-1");
    st.deploy_backup = Some(deploy(t(0)));
    fold_at(&mut st, backed_up("pg-1", Pruned::default()), t(2));
    let served = st.deploy_backup.expect("still recorded");
    assert_eq!(served.state, DeployBackupState::Succeeded);
    assert_eq!((served.id.as_str(), served.message), ("pg-1", None));

    let mut st = status_running(Job::Backup, "pg-1");
    st.deploy_backup = Some(deploy(t(5)));
    fold_at(&mut st, backed_up("pg-1", Pruned::default()), t(6));
    assert_eq!(st.deploy_backup, Some(deploy(t(5))));
}

#[test]
fn what_retention_removed_and_a_retention_that_could_not_finish_are_told() {
    let mut st = status_running(Job::Backup, "pg-3");
    let pruned = Pruned {
        deleted: vec!["pg-1".into(), "pg-2".into()],
        error: Some("the destination is read-only".into()),
    };
    let pass = fold_at(&mut st, backed_up("pg-3", pruned), t(2));
    assert_eq!(
        reasons(&pass),
        [
            ev(EventType::Normal, "BackupSucceeded"),
            ev(EventType::Normal, "BackupsPruned"),
            ev(EventType::Warning, "PruneFailed"),
        ]
    );
    assert!(
        pass.events[1].note.contains("pg-1, pg-2"),
        "{:?}",
        pass.events[1]
    );
}

#[test]
fn a_passed_restore_test_marks_its_backup_verified() {
    let mut st = status_running(Job::Verify, "pg-1");
    st.last_success = Some(verified_backup("pg-1"));
    let done = Finished {
        id: Some("pg-1".into()),
        result: Ok(Done::Verified("restored 3 tables".into())),
    };
    let pass = fold_at(&mut st, done, t(9));
    assert_eq!(st.last_success.unwrap().verified, Some(true));
    let v = st.last_verification.expect("a verification record");
    assert!(v.passed);
    assert_eq!((v.id.as_str(), v.time), ("pg-1", t(9)));
    assert_eq!(reasons(&pass), [ev(EventType::Normal, "BackupVerified")]);
}

#[test]
fn a_failed_restore_test_marks_its_backup_unverified_and_is_the_last_failure() {
    let mut st = status_running(Job::Verify, "pg-1");
    st.last_success = Some(verified_backup("pg-1"));
    let pass = fold_at(
        &mut st,
        failed(Some("pg-1"), Reason::VerificationFailed, "counts differ"),
        t(9),
    );
    assert_eq!(st.last_success.unwrap().verified, Some(false));
    assert!(!st.last_verification.expect("recorded").passed);
    let f = st.last_failure.expect("a failure record");
    assert_eq!(
        (f.reason, f.message.as_str(), f.time),
        (Reason::VerificationFailed, "counts differ", t(9))
    );
    assert_eq!(
        reasons(&pass),
        [ev(EventType::Warning, "VerificationFailed")]
    );
    assert_eq!(
        pass.ended,
        [(
            "pg".to_owned(),
            Job::Verify,
            Some(Reason::VerificationFailed)
        )]
    );
}

#[test]
fn a_restore_test_of_another_backup_leaves_the_last_success_alone() {
    let mut st = status_running(Job::Verify, "pg-0");
    st.last_success = Some(verified_backup("pg-1"));
    fold_at(
        &mut st,
        failed(Some("pg-0"), Reason::ChecksumMismatch, "damaged"),
        t(9),
    );
    assert_eq!(st.last_success.unwrap().verified, None);
}

#[test]
fn a_failed_backup_fails_the_deploy_waiting_for_it_with_reason_and_message() {
    let mut st = status_running(Job::Backup, "pg-1");
    st.deploy_backup = Some(DeployBackup {
        spec_hash: "h".into(),
        requested: t(0),
        id: "pg-1".into(),
        state: DeployBackupState::Running,
        message: None,
    });
    let pass = fold_at(
        &mut st,
        failed(Some("pg-1"), Reason::DiskFull, "no space left"),
        t(3),
    );
    let d = st.deploy_backup.expect("still recorded");
    assert_eq!(d.state, DeployBackupState::Failed);
    assert_eq!(d.message.as_deref(), Some("DiskFull: no space left"));
    assert_eq!(st.last_success, None);
    assert_eq!(reasons(&pass), [ev(EventType::Warning, "BackupFailed")]);
}

#[test]
fn an_interrupted_job_is_a_failure_with_reason_interrupted_and_is_not_retried_here() {
    let mut st = status_running(Job::Backup, "pg-1");
    let pass = fold_at(
        &mut st,
        failed(Some("pg-1"), Reason::Interrupted, "the operator stopped"),
        t(4),
    );
    assert_eq!(st.running, None);
    assert_eq!(st.last_failure.unwrap().reason, Reason::Interrupted);
    assert!(pass.spawns.is_empty());
    assert!(pass.events[0]
        .note
        .contains("backup pg-1 failed (Interrupted)"));
}

#[test]
fn a_restore_records_its_outcome_either_way() {
    let mut st = status_running(Job::Restore, "pg-1");
    let done = Finished {
        id: Some("pg-1".into()),
        result: Ok(Done::Restored("restored".into())),
    };
    let pass = fold_at(&mut st, done, t(5));
    assert!(st.last_restore.expect("recorded").succeeded);
    assert_eq!(reasons(&pass), [ev(EventType::Normal, "Restored")]);

    let mut st = status_running(Job::Restore, "");
    let pass = fold_at(
        &mut st,
        failed(None, Reason::RestoreFailed, "there is no backup"),
        t(5),
    );
    let r = st.last_restore.expect("recorded");
    assert!(!r.succeeded);
    assert_eq!(r.id, "(none)");
    assert_eq!(reasons(&pass), [ev(EventType::Warning, "RestoreFailed")]);
}

#[test]
fn an_outcome_without_a_running_job_changes_nothing() {
    let mut st = BackupTargetStatus::default();
    let pass = fold_at(&mut st, backed_up("pg-1", Pruned::default()), t(2));
    assert_eq!(st, BackupTargetStatus::default());
    assert!(pass.events.is_empty() && pass.ended.is_empty());
}
