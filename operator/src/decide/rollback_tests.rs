//! `decide::rollback`: the request grammar, which revision a request goes back to, every
//! refusal, and how the pinned project's images are chosen.

use std::collections::BTreeMap;

use super::plan_tests::project;
use super::rollback::{images, parse, pin, take, verdict, Refusal, Request};
use crate::api::revision::{Cause, Outcome, Phase, Recorded, Revision, ServiceRevision};
use crate::api::rollback_status::RollbackStatus;
use crate::api::{ConditionStatus, Reason};
use crate::compose::PullPolicy;

const COMPOSE: &str = "services: {app: {image: example/app:1}, db: {image: example/db:1}}";

fn service(image: &str, id: Option<&str>) -> ServiceRevision {
    ServiceRevision {
        image: image.into(),
        image_id: id.map(str::to_owned),
        config_hash: format!("hash of {image}"),
    }
}

fn revision(number: u64, phase: Phase) -> Recorded {
    let services = [
        ("app", service("example/app:1", Some("sha256:app1"))),
        ("db", service("example/db:1", Some("sha256:db1"))),
    ];
    Recorded {
        revision: Revision {
            number,
            spec_hash: format!("h{number}"),
            created: "2026-12-05T00:00:00Z".parse().unwrap(),
            cause: Cause::SpecChange { generation: None },
            compose: COMPOSE.into(),
            services: services
                .into_iter()
                .map(|(n, s)| (n.to_owned(), s))
                .collect(),
            backups: BTreeMap::new(),
        },
        outcome: Outcome { phase, since: None },
    }
}

fn asks(to: Option<u64>, restore_backup: bool) -> Request {
    Request { to, restore_backup }
}

#[test]
fn a_number_previous_or_nothing_reads_with_or_without_a_nonce_and_the_restore_flag() {
    assert_eq!(parse("3"), Ok(asks(Some(3), false)));
    assert_eq!(parse("3#1701"), Ok(asks(Some(3), false)));
    assert_eq!(parse(""), Ok(asks(None, false)));
    assert_eq!(parse("#1701"), Ok(asks(None, false)));
    assert_eq!(parse("previous"), Ok(asks(None, false)));
    assert_eq!(parse("2,restore-backup#x"), Ok(asks(Some(2), true)));
    assert_eq!(parse(",restore-backup"), Ok(asks(None, true)));
}

#[test]
fn anything_else_is_refused_with_the_grammar_in_the_message() {
    for bad in ["two", "-1", "2,restore", "2,restore-backup,x"] {
        let refusal = parse(bad).unwrap_err();
        assert_eq!(refusal, Refusal::Unreadable(bad.into()));
        assert!(refusal.to_string().contains("[N|previous]"));
    }
}

#[test]
fn previous_is_the_newest_complete_revision_before_the_one_running() {
    let revisions = [
        revision(1, Phase::Complete),
        revision(2, Phase::Complete),
        revision(3, Phase::RolledBack),
        revision(4, Phase::Complete),
    ];
    let taken = take(&asks(None, false), &revisions, Some(4)).unwrap();
    assert_eq!(taken.to.revision.number, 2);
    assert!(taken.restores.is_empty());
}

#[test]
fn previous_with_no_complete_revision_before_is_refused() {
    let revisions = [revision(1, Phase::Superseded), revision(2, Phase::Complete)];
    assert_eq!(
        take(&asks(None, false), &revisions, Some(2)).unwrap_err(),
        Refusal::NothingBefore(2)
    );
}

#[test]
fn a_revision_not_kept_not_complete_or_running_is_refused() {
    let revisions = [revision(2, Phase::RolledBack), revision(3, Phase::Complete)];
    let refused = |to| take(&asks(Some(to), false), &revisions, Some(3)).unwrap_err();
    assert_eq!(refused(1), Refusal::NoSuchRevision(1));
    assert_eq!(refused(2), Refusal::NotComplete(2, Phase::RolledBack));
    assert_eq!(refused(3), Refusal::AlreadyRunning(3));
}

#[test]
fn a_compose_file_with_a_secret_written_into_it_is_refused() {
    let mut one = revision(1, Phase::Complete);
    one.revision.compose = "services: {app: {image: x, environment: {P: <redacted>}}}".into();
    let revisions = [one, revision(2, Phase::Complete)];
    let refusal = take(&asks(Some(1), false), &revisions, Some(2)).unwrap_err();
    assert_eq!(refusal, Refusal::SecretInCompose(1));
    assert!(refusal.to_string().contains("change the spec"));
}

#[test]
fn restore_backup_takes_the_backups_recorded_on_the_revision_being_undone() {
    let mut two = revision(2, Phase::Complete);
    two.revision
        .backups
        .insert("db".into(), "db-20261205T010000Z".into());
    let revisions = [revision(1, Phase::Complete), two];
    let taken = take(&asks(Some(1), true), &revisions, Some(2)).unwrap();
    assert_eq!(
        taken.restores,
        BTreeMap::from([("db".to_owned(), "db-20261205T010000Z".to_owned())])
    );
}

#[test]
fn restore_backup_with_no_backup_recorded_on_the_revision_undone_is_refused() {
    let revisions = [revision(1, Phase::Complete), revision(2, Phase::Complete)];
    assert_eq!(
        take(&asks(Some(1), true), &revisions, Some(2)).unwrap_err(),
        Refusal::NoBackup(2)
    );
}

#[test]
fn the_images_looked_up_are_each_services_tag_and_recorded_id() {
    let r = revision(1, Phase::Complete).revision;
    assert_eq!(
        images(&r),
        ["example/app:1", "example/db:1", "sha256:app1", "sha256:db1"]
    );
}

#[test]
fn a_tag_still_naming_the_recorded_image_is_kept_so_the_service_keeps_its_config_hash() {
    let r = revision(1, Phase::Complete).revision;
    let mut p = project(COMPOSE);
    let before = p.clone();
    let present = BTreeMap::from([
        ("example/app:1".to_owned(), "sha256:app1".to_owned()),
        ("example/db:1".to_owned(), "sha256:db1".to_owned()),
        ("sha256:app1".to_owned(), "sha256:app1".to_owned()),
        ("sha256:db1".to_owned(), "sha256:db1".to_owned()),
    ]);
    pin(&mut p, &r, &present).unwrap();
    assert_eq!(p.spec_hash(), before.spec_hash());
}

#[test]
fn a_tag_that_moved_is_replaced_by_the_recorded_id_never_pulled() {
    let r = revision(1, Phase::Complete).revision;
    let mut p = project(COMPOSE);
    let present = BTreeMap::from([
        ("example/app:1".to_owned(), "sha256:app2".to_owned()),
        ("sha256:app1".to_owned(), "sha256:app1".to_owned()),
        ("example/db:1".to_owned(), "sha256:db1".to_owned()),
    ]);
    pin(&mut p, &r, &present).unwrap();
    let app = p.service("app").unwrap();
    assert_eq!(app.image, "sha256:app1");
    assert_eq!(app.pull_policy, PullPolicy::Never);
    assert_eq!(p.service("db").unwrap().image, "example/db:1");
}

#[test]
fn an_image_whose_id_is_gone_and_whose_tag_moved_is_refused_naming_the_service() {
    let r = revision(1, Phase::Complete).revision;
    let mut p = project(COMPOSE);
    let present = BTreeMap::from([
        ("example/app:1".to_owned(), "sha256:app2".to_owned()),
        ("example/db:1".to_owned(), "sha256:db1".to_owned()),
    ]);
    let refusal = pin(&mut p, &r, &present).unwrap_err();
    assert!(matches!(&refusal, Refusal::ImageGone { service, .. } if service == "app"));
    assert!(refusal.to_string().contains("sha256:app1"));
}

fn requested(to: u64, refused: Option<&str>) -> RollbackStatus {
    RollbackStatus {
        request: "1".into(),
        requested: "2026-12-05T00:00:00Z".parse().unwrap(),
        to: Some(to),
        from: Some(2),
        from_spec_hash: "spec2".into(),
        restore_backup: false,
        restores: BTreeMap::new(),
        refused: refused.map(str::to_owned),
    }
}

#[test]
fn the_pin_holds_until_the_spec_changes_and_never_for_a_refused_request() {
    assert_eq!(requested(1, None).pins("spec2"), Some(1));
    assert_eq!(requested(1, None).pins("spec3"), None);
    assert_eq!(requested(1, Some("no")).pins("spec2"), None);
}

#[test]
fn no_rollback_asked_means_no_condition_and_a_refusal_is_true_with_its_reason() {
    assert_eq!(verdict(None, "spec2"), None);
    let refused = verdict(Some(&requested(1, Some("revision 1 is gone"))), "spec2").unwrap();
    assert_eq!(refused.status, ConditionStatus::True);
    assert_eq!(refused.reason, Reason::RollbackNotPossible);
    assert!(refused.message.contains("revision 1 is gone"));
    let taken = verdict(Some(&requested(1, None)), "spec2").unwrap();
    assert_eq!(taken.status, ConditionStatus::False);
    assert!(taken.message.contains("rollback to revision 1 requested"));
    let dropped = verdict(Some(&requested(1, None)), "spec3").unwrap();
    assert!(dropped.message.contains("no longer applies"));
}

fn rollout_of(
    spec_hash: &str,
    phase: crate::api::rollout_status::RolloutPhase,
) -> crate::api::rollout_status::RolloutStatus {
    crate::api::rollout_status::RolloutStatus {
        revision: 3,
        spec_hash: spec_hash.into(),
        from: Some(2),
        phase,
        started: "2026-12-05T00:00:00Z".parse().unwrap(),
        finished: None,
        services: Vec::new(),
        gates_passed: Vec::new(),
        failure: None,
    }
}

#[test]
fn the_backups_are_restored_only_once_the_pinned_revision_is_rolled_out() {
    use super::rollback::restores_due;
    use crate::api::rollout_status::RolloutPhase::{Complete, Progressing, RolledBack};
    use crate::api::ServiceStackStatus;
    let mut r = requested(1, None);
    r.restore_backup = true;
    r.restores.insert("db".into(), "db-20261205T010000Z".into());
    let status = |applied: &str, rollout| ServiceStackStatus {
        spec_hash: Some(applied.into()),
        rollout,
        ..Default::default()
    };
    let asked = restores_due(
        &r,
        "pinned",
        &status("pinned", Some(rollout_of("pinned", Complete))),
    );
    assert_eq!(
        asked,
        BTreeMap::from([("db".to_owned(), r.restore_request("db-20261205T010000Z"))])
    );
    assert!(asked["db"].starts_with("db-20261205T010000Z#rollback-"));
    for not_yet in [
        status("spec2", None),
        status("pinned", Some(rollout_of("pinned", Progressing))),
        status("pinned", Some(rollout_of("pinned", RolledBack))),
    ] {
        assert!(
            restores_due(&r, "pinned", &not_yet).is_empty(),
            "{not_yet:?}"
        );
    }
    r.restore_backup = false;
    assert!(restores_due(&r, "pinned", &status("pinned", None)).is_empty());
}

#[test]
fn while_a_rollback_rolls_out_progressing_says_it_is_one() {
    use crate::api::ConditionType;
    let mut rolling = crate::decide::rollout::verdicts(
        Some(&rollout_of(
            "pinned",
            crate::api::rollout_status::RolloutPhase::Progressing,
        )),
        "pinned",
    );
    super::rollback::name_rollout(&mut rolling, 1);
    let progressing = rolling
        .iter()
        .find(|v| v.type_ == ConditionType::Progressing)
        .unwrap();
    assert!(
        progressing
            .message
            .starts_with("rollback to revision 1 requested: rolling out revision 3"),
        "{}",
        progressing.message
    );
    let ready = rolling
        .iter()
        .find(|v| v.type_ == ConditionType::Ready)
        .unwrap();
    assert!(!ready.message.starts_with("rollback"));
}
