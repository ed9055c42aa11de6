//! What a backup target should do next, from its spec, its status, the requests on the stack
//! and `now`. Pure: the runner turns the answer into work.

use chrono::{DateTime, Duration, Utc};

use super::schedule::{due, Due, SlotSchedule};
use crate::api::{
    BackupTarget, BackupTargetStatus, ConditionStatus, DeployBackupState, Job, Reason, Trigger,
};

/// Annotation prefix of a backup request: `backup.stackwarden.dev/TARGET: ANY-NEW-VALUE`.
pub const BACKUP_REQUEST: &str = "backup.stackwarden.dev/";
/// Annotation prefix of a restore request: `restore.stackwarden.dev/TARGET: BACKUP-ID`, with an
/// optional `#NONCE` suffix to restore the same backup again.
pub const RESTORE_REQUEST: &str = "restore.stackwarden.dev/";
/// Annotation prefix of a restore-test request: `verify.stackwarden.dev/TARGET: BACKUP-ID`, or
/// `#NONCE` alone for the newest backup; a new `#NONCE` asks again.
pub const VERIFY_REQUEST: &str = "verify.stackwarden.dev/";

/// The requests standing on a target: annotation values, and the deploy waiting for a backup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Requests {
    pub backup: Option<String>,
    pub restore: Option<String>,
    pub verify: Option<String>,
    /// The spec hash of a deploy that waits for this target's backup (`beforeDeploy`).
    pub deploy: Option<String>,
    /// The restore a manual rollback asks for once its revision runs (`BACKUP-ID#NONCE`).
    pub rollback: Option<String>,
}

/// The next step of an idle target.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing to do until `next_run` (or a request).
    Idle,
    /// Start a job. `backup` is the backup to verify or restore (None: the newest).
    Start {
        job: Job,
        trigger: Trigger,
        slot: Option<DateTime<Utc>>,
        backup: Option<String>,
    },
    /// A scheduled slot came and went while the operator was down, past its starting
    /// deadline: it is recorded as taken and reported, not run.
    SkipSlot { job: Job, slot: DateTime<Utc> },
}

/// The backup id a restore request names (the value without its `#NONCE`).
pub fn restore_id(request: &str) -> &str {
    request.split('#').next().unwrap_or(request).trim()
}

/// The backup id a restore-test request names; None for the newest backup.
pub fn verify_id(request: &str) -> Option<&str> {
    Some(restore_id(request)).filter(|id| !id.is_empty())
}

/// Decides for a target with no job running. Order: an explicit restore, the backup a deploy
/// waits for, an explicit backup, an explicit restore test, the backup schedule, a restore test
/// of a fresh backup (`verify.afterBackup`), the restore test schedule. A request is acted on
/// once: its value is recorded as handled when the job starts. A failed deploy backup is not
/// retried by itself: the deploy waits for a person (see [`deploy_gate`]).
pub fn decide(
    target: &BackupTarget,
    status: &BackupTargetStatus,
    requests: &Requests,
    now: DateTime<Utc>,
) -> Decision {
    requested(target, status, requests)
        .or_else(|| scheduled(target, status, now))
        .unwrap_or(Decision::Idle)
}

/// The first request not handled yet: a restore, the backup a deploy waits for, a backup, a
/// restore test.
fn requested(
    target: &BackupTarget,
    status: &BackupTargetStatus,
    requests: &Requests,
) -> Option<Decision> {
    let manual = |job, backup| Decision::Start {
        job,
        trigger: Trigger::Manual,
        slot: None,
        backup,
    };
    fn new<'a>(request: &'a Option<String>, handled: &Option<String>) -> Option<&'a String> {
        request.as_ref().filter(|r| handled.as_ref() != Some(*r))
    }
    if let Some(r) = new(&requests.restore, &status.handled_restore_request) {
        return Some(manual(Job::Restore, Some(restore_id(r).to_owned())));
    }
    if let Some(r) = new(&requests.rollback, &status.handled_rollback_restore) {
        return Some(manual(Job::Restore, Some(restore_id(r).to_owned())));
    }
    if let (Some(h), true) = (&requests.deploy, target.before_deploy) {
        if status.deploy_backup.as_ref().map(|d| &d.spec_hash) != Some(h) {
            return Some(Decision::Start {
                job: Job::Backup,
                trigger: Trigger::PreDeploy,
                slot: None,
                backup: None,
            });
        }
    }
    if new(&requests.backup, &status.handled_backup_request).is_some() {
        return Some(manual(Job::Backup, None));
    }
    new(&requests.verify, &status.handled_verify_request)
        .map(|r| manual(Job::Verify, verify_id(r).map(str::to_owned)))
}

/// What the schedules ask for: the backup schedule, a restore test of a fresh backup
/// (`verify.afterBackup`), the restore test schedule.
fn scheduled(
    target: &BackupTarget,
    status: &BackupTargetStatus,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let since = status.since.unwrap_or(now);
    let deadline = Duration::seconds(i64::from(target.starting_deadline_seconds));
    let tz = target.time_zone.as_deref();
    let slot = |job, schedule: Option<&str>, last_slot| {
        let s = SlotSchedule::parse(schedule?, tz).ok()?;
        match due(&s, last_slot, since, now, deadline) {
            Due::Run { slot } => Some(Decision::Start {
                job,
                trigger: Trigger::Scheduled,
                slot: Some(slot),
                backup: None,
            }),
            Due::Missed { slot, .. } => Some(Decision::SkipSlot { job, slot }),
            Due::Wait { .. } => None,
        }
    };
    if let Some(d) = slot(Job::Backup, target.schedule.as_deref(), status.last_slot) {
        return Some(d);
    }
    let verify = target.verify.as_ref();
    if let (true, Some(last)) = (verify.is_some_and(|v| v.after_backup), &status.last_success) {
        let tested = status
            .last_verification
            .as_ref()
            .is_some_and(|v| v.id == last.id);
        if last.verified.is_none() && !tested {
            return Some(Decision::Start {
                job: Job::Verify,
                trigger: Trigger::AfterBackup,
                slot: None,
                backup: Some(last.id.clone()),
            });
        }
    }
    slot(
        Job::Verify,
        verify.and_then(|v| v.schedule.as_deref()),
        status.last_verify_slot,
    )
}

/// Whether a deploy of `spec_hash` may go on, as far as backups are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No target wants a backup first, or every one has it.
    Open,
    /// A backup the deploy waits for is yet to start or still running.
    Waiting(String),
    /// A backup the deploy waited for failed: the deploy does not happen until a person acts.
    Failed(String),
}

/// The deploy of `spec_hash` waits for a successful backup of every `beforeDeploy` target,
/// taken for it (or started after it asked, see [`crate::api::DeployBackup`]).
pub fn deploy_gate(
    targets: &[BackupTarget],
    statuses: &std::collections::BTreeMap<String, BackupTargetStatus>,
    spec_hash: &str,
) -> Gate {
    let mut waiting = Vec::new();
    let mut failed = Vec::new();
    for t in targets.iter().filter(|t| t.before_deploy) {
        let d = statuses
            .get(&t.name)
            .and_then(|s| s.deploy_backup.as_ref())
            .filter(|d| d.spec_hash == spec_hash);
        match d.map(|d| (d.state, d)) {
            Some((DeployBackupState::Succeeded, _)) => {}
            Some((DeployBackupState::Failed, d)) => failed.push(format!(
                "{}: backup {} failed: {}",
                t.name,
                d.id,
                d.message.as_deref().unwrap_or("see BackupFailed")
            )),
            Some((DeployBackupState::Running, d)) => {
                waiting.push(format!("{} (backup {} running)", t.name, d.id))
            }
            None => waiting.push(format!("{} (backup to start)", t.name)),
        }
    }
    if !failed.is_empty() {
        Gate::Failed(format!(
            "the deploy of the changed compose file waits for a backup that failed; what runs was left as it was. {}. Fix the cause, then take a backup (`stackwarden backup STACK TARGET`, or the annotation backup.stackwarden.dev/TARGET): a successful one lets the deploy go on. To deploy without it, set beforeDeploy: false",
            failed.join("; ")
        ))
    } else if !waiting.is_empty() {
        Gate::Waiting(format!(
            "backing up before deploying the changed compose file: {}",
            waiting.join(", ")
        ))
    } else {
        Gate::Open
    }
}

/// When the backup schedule runs next.
pub fn next_run(target: &BackupTarget, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = SlotSchedule::parse(target.schedule.as_deref()?, target.time_zone.as_deref()).ok()?;
    s.next_after(now)
}

/// The earliest moment any schedule of the target needs a look.
pub fn next_wake(target: &BackupTarget, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz = target.time_zone.as_deref();
    let verify = target
        .verify
        .as_ref()
        .and_then(|v| v.schedule.as_deref())
        .and_then(|s| SlotSchedule::parse(s, tz).ok())
        .and_then(|s| s.next_after(now));
    next_run(target, now).into_iter().chain(verify).min()
}

/// Whether the target's newest outcome is a failure; the failure if so.
pub fn failing(status: &BackupTargetStatus) -> Option<&crate::api::FailureRecord> {
    let failure = status.last_failure.as_ref()?;
    let newest_good = [
        status.last_success.as_ref().map(|s| s.time),
        status
            .last_verification
            .as_ref()
            .filter(|v| v.passed)
            .map(|v| v.time),
        status
            .last_restore
            .as_ref()
            .filter(|r| r.succeeded)
            .map(|r| r.time),
    ]
    .into_iter()
    .flatten()
    .max();
    match newest_good {
        Some(t) if t >= failure.time => None,
        _ => Some(failure),
    }
}

/// Whether the target has gone longer than `staleAfterHours` without a successful backup:
/// counted from its last success, or from when it was first seen.
pub fn stale(
    target: &BackupTarget,
    status: &BackupTargetStatus,
    now: DateTime<Utc>,
) -> Option<String> {
    let limit = Duration::hours(i64::from(target.stale_after_hours));
    match (&status.last_success, status.since) {
        (Some(s), _) if now - s.time > limit => Some(format!(
            "{}: the last successful backup ({}) finished {} h ago, more than staleAfterHours ({})",
            target.name,
            s.id,
            (now - s.time).num_hours(),
            target.stale_after_hours
        )),
        (None, Some(since)) if now - since > limit => Some(format!(
            "{}: no successful backup in the {} h since the target was declared (staleAfterHours {})",
            target.name,
            (now - since).num_hours(),
            target.stale_after_hours
        )),
        _ => None,
    }
}

/// " (NAME, NAME have none yet)" for targets still waiting for their first backup.
fn never_backed_up(
    targets: &[BackupTarget],
    statuses: &std::collections::BTreeMap<String, BackupTargetStatus>,
) -> String {
    let none: Vec<&str> = targets
        .iter()
        .filter(|t| {
            statuses
                .get(&t.name)
                .is_none_or(|s| s.last_success.is_none())
        })
        .map(|t| t.name.as_str())
        .collect();
    match none.as_slice() {
        [] => String::new(),
        [one] => format!(" ({one} has none yet)"),
        many => format!(" ({} have none yet)", many.join(", ")),
    }
}

/// The BackupFailed and BackupStale verdicts over every target.
pub fn conditions(
    targets: &[BackupTarget],
    statuses: &std::collections::BTreeMap<String, BackupTargetStatus>,
    now: DateTime<Utc>,
) -> Vec<crate::api::Verdict> {
    use crate::api::{ConditionType, Verdict};
    let none = BackupTargetStatus::default();
    let status = |t: &BackupTarget| statuses.get(&t.name).unwrap_or(&none);
    let failures: Vec<(String, Reason, String)> = targets
        .iter()
        .filter_map(|t| failing(status(t)).map(|f| (t.name.clone(), f.reason, f.message.clone())))
        .collect();
    let failed = match failures.first() {
        Some((_, reason, _)) => Verdict::new(
            ConditionType::BackupFailed,
            ConditionStatus::True,
            *reason,
            failures
                .iter()
                .map(|(t, r, m)| format!("{t}: {r}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        None => Verdict::new(
            ConditionType::BackupFailed,
            ConditionStatus::False,
            Reason::BackupsSucceeded,
            if targets.is_empty() {
                "no backup targets are declared".to_owned()
            } else {
                "no backup target's last backup, restore test or restore failed".to_owned()
            },
        ),
    };
    let stale: Vec<String> = targets
        .iter()
        .filter_map(|t| stale(t, status(t), now))
        .collect();
    let stale = if stale.is_empty() {
        Verdict::new(
            ConditionType::BackupStale,
            ConditionStatus::False,
            Reason::BackupsFresh,
            if targets.is_empty() {
                "no backup targets are declared".to_owned()
            } else {
                format!(
                    "no backup target has gone longer than its staleAfterHours without a successful backup{}",
                    never_backed_up(targets, statuses)
                )
            },
        )
    } else {
        Verdict::new(
            ConditionType::BackupStale,
            ConditionStatus::True,
            Reason::BackupOverdue,
            format!(
                "{}; check BackupFailed and the operator's events, or run `stackwarden backup STACK TARGET`",
                stale.join("; ")
            ),
        )
    };
    vec![failed, stale]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupDestination, BackupRecord, FailureRecord, PostgresSource, Retention,
        VerificationRecord, VerifySpec,
    };
    use chrono::TimeZone;

    fn target(schedule: Option<&str>) -> BackupTarget {
        BackupTarget {
            name: "pg".into(),
            postgres: Some(PostgresSource {
                service: "postgres".into(),
                database: "app".into(),
                user: "app".into(),
                password_variable: None,
                port: None,
            }),
            redis: None,
            schedule: schedule.map(Into::into),
            time_zone: None,
            starting_deadline_seconds: 3600,
            retention: Retention::default(),
            verify: None,
            destination: BackupDestination {
                path: Some("/b".into()),
                s3: None,
            },
            stale_after_hours: 24,
            before_deploy: false,
            compression_level: 3,
        }
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap()
    }

    fn since(at: DateTime<Utc>) -> BackupTargetStatus {
        BackupTargetStatus {
            since: Some(at),
            ..Default::default()
        }
    }

    fn start(job: Job, trigger: Trigger, slot: Option<DateTime<Utc>>) -> Decision {
        Decision::Start {
            job,
            trigger,
            slot,
            backup: None,
        }
    }

    #[test]
    fn a_scheduled_slot_runs_once() {
        let tg = target(Some("0 2 * * *"));
        let mut st = since(t(0, 0));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(1, 59)),
            Decision::Idle
        );
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(2, 0)),
            start(Job::Backup, Trigger::Scheduled, Some(t(2, 0)))
        );
        st.last_slot = Some(t(2, 0));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(2, 30)),
            Decision::Idle
        );
    }

    #[test]
    fn a_slot_missed_past_its_deadline_is_skipped_not_run() {
        let tg = target(Some("0 2 * * *"));
        let st = since(t(0, 0));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(3, 0)),
            start(Job::Backup, Trigger::Scheduled, Some(t(2, 0)))
        );
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(3, 1)),
            Decision::SkipSlot {
                job: Job::Backup,
                slot: t(2, 0)
            }
        );
    }

    #[test]
    fn a_new_target_does_not_run_slots_from_before_it_existed() {
        let tg = target(Some("0 2 * * *"));
        assert_eq!(
            decide(&tg, &since(t(2, 30)), &Requests::default(), t(2, 31)),
            Decision::Idle
        );
        // No status at all: `since` is now.
        assert_eq!(
            decide(
                &tg,
                &BackupTargetStatus::default(),
                &Requests::default(),
                t(2, 31)
            ),
            Decision::Idle
        );
    }

    #[test]
    fn requests_come_first_and_are_acted_on_once() {
        let tg = target(Some("0 2 * * *"));
        let mut st = since(t(0, 0));
        let req = Requests {
            backup: Some("r1".into()),
            restore: Some("pg-20260309T020000Z#2".into()),
            verify: Some("#7".into()),
            deploy: None,
            rollback: None,
        };
        assert_eq!(
            decide(&tg, &st, &req, t(2, 0)),
            Decision::Start {
                job: Job::Restore,
                trigger: Trigger::Manual,
                slot: None,
                backup: Some("pg-20260309T020000Z".into())
            }
        );
        st.handled_restore_request = req.restore.clone();
        assert_eq!(
            decide(&tg, &st, &req, t(2, 0)),
            start(Job::Backup, Trigger::Manual, None)
        );
        st.handled_backup_request = req.backup.clone();
        // `#NONCE` alone: a restore test of the newest backup.
        assert_eq!(
            decide(&tg, &st, &req, t(2, 0)),
            start(Job::Verify, Trigger::Manual, None)
        );
        st.handled_verify_request = req.verify.clone();
        assert_eq!(
            decide(&tg, &st, &req, t(2, 0)),
            start(Job::Backup, Trigger::Scheduled, Some(t(2, 0)))
        );
        let named = Requests {
            verify: Some("pg-20260309T020000Z#8".into()),
            ..req
        };
        assert_eq!(
            decide(&tg, &st, &named, t(2, 0)),
            Decision::Start {
                job: Job::Verify,
                trigger: Trigger::Manual,
                slot: None,
                backup: Some("pg-20260309T020000Z".into())
            }
        );
    }

    fn deploy_backup(hash: &str, state: DeployBackupState) -> crate::api::DeployBackup {
        crate::api::DeployBackup {
            spec_hash: hash.into(),
            requested: t(1, 0),
            id: "pg-x".into(),
            state,
            message: Some("pg_dump failed".into()),
        }
    }

    #[test]
    fn a_rollbacks_restore_is_acted_on_once_and_with_a_marker_of_its_own() {
        let tg = target(None);
        let mut st = since(t(0, 0));
        let req = Requests {
            restore: Some("pg-1#a".into()),
            rollback: Some("pg-2#rollback-1".into()),
            ..Default::default()
        };
        // The annotation's request was handled before: the rollback's is new.
        st.handled_restore_request = req.restore.clone();
        assert_eq!(
            decide(&tg, &st, &req, t(1, 0)),
            Decision::Start {
                job: Job::Restore,
                trigger: Trigger::Manual,
                slot: None,
                backup: Some("pg-2".into()),
            }
        );
        st.handled_rollback_restore = req.rollback.clone();
        assert_eq!(decide(&tg, &st, &req, t(1, 0)), Decision::Idle);
    }

    #[test]
    fn a_deploy_gets_one_backup_first_and_only_from_before_deploy_targets() {
        let mut tg = target(Some("0 2 * * *"));
        let mut st = since(t(0, 0));
        let req = Requests {
            deploy: Some("h2".into()),
            restore: Some("pg-1".into()),
            ..Default::default()
        };
        // Not a beforeDeploy target: the request means nothing to it.
        st.handled_restore_request = req.restore.clone();
        assert_eq!(decide(&tg, &st, &req, t(1, 0)), Decision::Idle);
        tg.before_deploy = true;
        // Even before a scheduled slot that is due.
        assert_eq!(
            decide(&tg, &st, &req, t(2, 0)),
            start(Job::Backup, Trigger::PreDeploy, None)
        );
        // But after a restore someone asked for.
        st.handled_restore_request = None;
        assert!(matches!(
            decide(&tg, &st, &req, t(2, 0)),
            Decision::Start {
                job: Job::Restore,
                ..
            }
        ));
        st.handled_restore_request = req.restore.clone();
        // Taken (whatever came of it): never again for the same spec hash.
        for state in [
            DeployBackupState::Running,
            DeployBackupState::Succeeded,
            DeployBackupState::Failed,
        ] {
            st.deploy_backup = Some(deploy_backup("h2", state));
            assert_eq!(decide(&tg, &st, &req, t(1, 0)), Decision::Idle);
        }
        // Another change of the spec asks again.
        st.deploy_backup = Some(deploy_backup("h1", DeployBackupState::Succeeded));
        assert_eq!(
            decide(&tg, &st, &req, t(1, 0)),
            start(Job::Backup, Trigger::PreDeploy, None)
        );
    }

    #[test]
    fn the_deploy_gate_opens_when_every_before_deploy_target_has_its_backup() {
        let plain = target(None);
        let mut a = target(None);
        a.before_deploy = true;
        a.name = "a".into();
        let mut b = a.clone();
        b.name = "b".into();
        let targets = vec![plain.clone(), a.clone(), b.clone()];
        let mut statuses = std::collections::BTreeMap::new();
        assert_eq!(
            deploy_gate(std::slice::from_ref(&plain), &statuses, "h"),
            Gate::Open
        );
        assert!(
            matches!(deploy_gate(&targets, &statuses, "h"), Gate::Waiting(m) if m.contains("a (backup to start), b"))
        );
        let with = |d| BackupTargetStatus {
            deploy_backup: Some(d),
            ..Default::default()
        };
        statuses.insert(
            "a".to_owned(),
            with(deploy_backup("h", DeployBackupState::Succeeded)),
        );
        statuses.insert(
            "b".to_owned(),
            with(deploy_backup("h", DeployBackupState::Running)),
        );
        assert!(
            matches!(deploy_gate(&targets, &statuses, "h"), Gate::Waiting(m) if m.contains("b (backup pg-x running)") && !m.contains("a ("))
        );
        statuses.insert(
            "b".to_owned(),
            with(deploy_backup("h", DeployBackupState::Failed)),
        );
        let Gate::Failed(m) = deploy_gate(&targets, &statuses, "h") else {
            panic!("a failed backup holds the deploy")
        };
        assert!(
            m.contains("b: backup pg-x failed: pg_dump failed")
                && m.contains("beforeDeploy: false"),
            "{m}"
        );
        statuses.insert(
            "b".to_owned(),
            with(deploy_backup("h", DeployBackupState::Succeeded)),
        );
        assert_eq!(deploy_gate(&targets, &statuses, "h"), Gate::Open);
        // A backup for an older spec says nothing about this one.
        assert!(matches!(
            deploy_gate(&targets, &statuses, "h3"),
            Gate::Waiting(_)
        ));
    }

    fn success(id: &str, at: DateTime<Utc>, verified: Option<bool>) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            time: at,
            size: 1,
            sha256: "x".into(),
            location: "/b".into(),
            verified,
            trigger: Trigger::Scheduled,
        }
    }

    #[test]
    fn after_backup_verification_runs_once_per_backup() {
        let mut tg = target(None);
        tg.verify = Some(VerifySpec {
            schedule: None,
            after_backup: true,
        });
        let mut st = since(t(0, 0));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(3, 0)),
            Decision::Idle
        );
        st.last_success = Some(success("pg-1", t(2, 5), None));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(3, 0)),
            Decision::Start {
                job: Job::Verify,
                trigger: Trigger::AfterBackup,
                slot: None,
                backup: Some("pg-1".into())
            }
        );
        // A failed test leaves `verified` false: not tested again and again.
        st.last_success = Some(success("pg-1", t(2, 5), Some(false)));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(3, 0)),
            Decision::Idle
        );
        st.last_success = Some(success("pg-1", t(2, 5), None));
        st.last_verification = Some(VerificationRecord {
            id: "pg-1".into(),
            time: t(2, 10),
            passed: false,
            message: String::new(),
        });
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(3, 0)),
            Decision::Idle
        );
    }

    #[test]
    fn the_verify_schedule_has_its_own_slots() {
        let mut tg = target(Some("0 2 * * *"));
        tg.verify = Some(VerifySpec {
            schedule: Some("0 4 * * *".into()),
            after_backup: false,
        });
        let mut st = since(t(0, 0));
        st.last_slot = Some(t(2, 0));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(4, 0)),
            start(Job::Verify, Trigger::Scheduled, Some(t(4, 0)))
        );
        st.last_verify_slot = Some(t(4, 0));
        assert_eq!(
            decide(&tg, &st, &Requests::default(), t(4, 1)),
            Decision::Idle
        );
        assert_eq!(next_wake(&tg, t(4, 1)), Some(t(2, 0) + Duration::days(1)));
    }

    /// A year of nightly slots as the controller meets them (woken at `next_wake`, a little
    /// late), retention applied after each backup as the runner does: every slot runs exactly
    /// once, at most 30 + 12 + 12 backups are ever stored, and what is left at the end is what
    /// one look at the whole year keeps.
    #[test]
    fn a_simulated_year_of_slots_with_retention_after_each_backup() {
        use super::super::retention::{apply, Candidate};
        use chrono_tz::Europe::Zurich;
        let mut tg = target(Some("0 2 * * *"));
        tg.time_zone = Some("Europe/Zurich".into());
        tg.retention = Retention {
            daily: 30,
            weekly: 12,
            monthly: 12,
        };
        let zurich = |y, m, d| {
            Zurich
                .with_ymd_and_hms(y, m, d, 0, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        let (start, end) = (zurich(2025, 1, 1), zurich(2026, 1, 1));
        let mut st = since(start);
        let mut now = start;
        let mut stored: Vec<Candidate> = Vec::new();
        let mut all: Vec<Candidate> = Vec::new();
        loop {
            let next = next_wake(&tg, now).expect("a schedule");
            if next >= end {
                break;
            }
            now = next + Duration::seconds(30);
            let Decision::Start {
                job: Job::Backup,
                trigger: Trigger::Scheduled,
                slot: Some(slot),
                ..
            } = decide(&tg, &st, &Requests::default(), now)
            else {
                panic!("no backup at {now}");
            };
            st.last_slot = Some(slot);
            let c = Candidate {
                id: slot.with_timezone(&Zurich).format("%Y-%m-%d").to_string(),
                time: slot,
                verified: false,
            };
            all.push(c.clone());
            stored.push(c);
            let d = apply(&stored, &tg.retention, Zurich);
            stored.retain(|c| d.keep.contains(&c.id));
            assert!(stored.len() <= 54, "{} stored at {now}", stored.len());
            // A later look within the same slot starts nothing.
            assert_eq!(
                decide(&tg, &st, &Requests::default(), now + Duration::minutes(20)),
                Decision::Idle
            );
        }
        // One backup per day, the DST change included (02:00 did not exist on 2025-03-30).
        assert_eq!(all.len(), 365);
        let days: std::collections::BTreeSet<&str> = all.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(days.len(), 365);
        let mut kept: Vec<String> = stored.iter().map(|c| c.id.clone()).collect();
        kept.sort();
        let mut once = apply(&all, &tg.retention, Zurich).keep;
        once.sort();
        assert_eq!(kept, once);
        assert_eq!(kept.len(), 47);
        assert_eq!(kept.first().map(String::as_str), Some("2025-01-31"));
        assert_eq!(kept.last().map(String::as_str), Some("2025-12-31"));
    }

    fn failure(at: DateTime<Utc>) -> FailureRecord {
        FailureRecord {
            time: at,
            reason: Reason::DumpFailed,
            message: "pg_dump: connection lost".into(),
        }
    }

    #[test]
    fn a_target_fails_until_something_newer_succeeds() {
        let mut st = since(t(0, 0));
        assert!(failing(&st).is_none());
        st.last_failure = Some(failure(t(2, 0)));
        assert!(failing(&st).is_some());
        st.last_success = Some(success("pg-0", t(1, 0), None));
        assert!(failing(&st).is_some());
        st.last_success = Some(success("pg-1", t(3, 0), None));
        assert!(failing(&st).is_none());
        st.last_failure = Some(failure(t(4, 0)));
        st.last_verification = Some(VerificationRecord {
            id: "pg-1".into(),
            time: t(5, 0),
            passed: false,
            message: String::new(),
        });
        assert!(failing(&st).is_some(), "a failed test is no success");
    }

    #[test]
    fn conditions_name_every_failing_and_stale_target() {
        let tg = target(Some("0 2 * * *"));
        let mut st = since(t(0, 0));
        st.last_failure = Some(failure(t(2, 0)));
        let statuses = [("pg".to_owned(), st.clone())].into_iter().collect();
        let v = conditions(std::slice::from_ref(&tg), &statuses, t(3, 0));
        assert_eq!(v[0].status, ConditionStatus::True);
        assert_eq!(v[0].reason, Reason::DumpFailed);
        assert!(
            v[0].message.starts_with("pg: DumpFailed: pg_dump"),
            "{}",
            v[0].message
        );
        assert_eq!(v[1].status, ConditionStatus::False);
        assert!(
            v[1].message.ends_with("(pg has none yet)"),
            "{}",
            v[1].message
        );
        // 25 hours later with no success: stale.
        let later = t(0, 0) + Duration::hours(25);
        let v = conditions(std::slice::from_ref(&tg), &statuses, later);
        assert_eq!(v[1].status, ConditionStatus::True);
        assert_eq!(v[1].reason, Reason::BackupOverdue);
        st.last_success = Some(success("pg-1", later - Duration::hours(1), None));
        let statuses = [("pg".to_owned(), st)].into_iter().collect();
        let v = conditions(std::slice::from_ref(&tg), &statuses, later);
        assert_eq!(v[0].status, ConditionStatus::False);
        assert_eq!(v[1].status, ConditionStatus::False);
        assert!(!v[1].message.contains("none yet"), "{}", v[1].message);
        let v = conditions(&[], &Default::default(), later);
        assert!(v.iter().all(|v| v.status == ConditionStatus::False));
    }
}
