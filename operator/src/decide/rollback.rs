//! Manual rollback: what a `stackwarden.dev/rollback` request asks, whether it can be carried
//! out, and the project it pins the stack to. Pure: the caller reads the request, the stored
//! revisions and which images the engine has, records the answer in `status.rollback` before
//! anything is done, and from then on hands the pinned project to the same converge and
//! rollout steps a spec change goes through.
//!
//! The request's value is `[N | previous][,restore-backup][#NONCE]`: revision N, or (empty or
//! `previous`) the newest Complete revision before the one running; `restore-backup` to also
//! restore the `beforeDeploy` backups taken before the revision being undone; a new `#NONCE`
//! asks for the same rollback again. A request is acted on once (its value is the handled
//! marker).
//!
//! A rollback the operator cannot carry out faithfully is refused, with a [`Refusal`] saying
//! why and what to do instead, and nothing running is touched: a revision gone or never
//! Complete, a compose file that had a secret written into it (the revision keeps it masked,
//! so it cannot be applied again), an image whose recorded id is no longer on the engine (its
//! tag may now name something else), or a backup to restore that was never taken.

use std::collections::BTreeMap;

use crate::api::revision::{Phase, Recorded, Revision};
use crate::api::rollback_status::RollbackStatus;
use crate::api::rollout_status::RolloutPhase;
use crate::api::{ConditionStatus, ConditionType, Reason, ServiceStackStatus, Verdict};
use crate::compose::{Project, PullPolicy};

/// The annotation a rollback is asked for with (`stackwarden rollback` writes it locally).
pub const ROLLBACK_ANNOTATION: &str = "stackwarden.dev/rollback";

/// What the text a masked compose file holds in place of each variable value.
const MASKED: &str = "<redacted>";

/// A request, as its value reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The revision asked for; None: the newest Complete one before the one running.
    pub to: Option<u64>,
    pub restore_backup: bool,
}

/// Why a rollback is not carried out; its message says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the rollback request {0:?} does not read as `[N|previous][,restore-backup][#NONCE]`; set the annotation to a revision number `stackwarden history` lists")]
    Unreadable(String),
    #[error("there is no Complete revision before revision {0} to roll back to; `stackwarden history` lists the revisions")]
    NothingBefore(u64),
    #[error("revision {0} is not kept (or was never recorded); `stackwarden history` lists the revisions a rollback can go back to")]
    NoSuchRevision(u64),
    #[error(
        "revision {0} is {1}: only a revision the stack was once Ready on can be rolled back to"
    )]
    NotComplete(u64, Phase),
    #[error("revision {0} is the one running; there is nothing to roll back")]
    AlreadyRunning(u64),
    #[error("revision {0}'s compose file had a secret value written into it, which the revision keeps masked: it cannot be applied again; put the value in a variable or Secret and change the spec instead")]
    SecretInCompose(u64),
    #[error("the image of service {service} in revision {revision} ({image}, {image_id}) is no longer on the engine, and its tag names another image or none; load that image again or change the spec instead")]
    ImageGone {
        revision: u64,
        service: String,
        image: String,
        image_id: String,
    },
    #[error("no beforeDeploy backup was recorded for revision {0}, the one being undone, so there is nothing to restore; roll back without restoring, or restore a backup by hand (`stackwarden backups`)")]
    NoBackup(u64),
}

/// Reads a request's value (see the module doc).
pub fn parse(value: &str) -> Result<Request, Refusal> {
    let unreadable = || Refusal::Unreadable(value.to_owned());
    let asked = value.split('#').next().unwrap_or_default();
    let mut parts = asked.split(',').map(str::trim);
    let to = match parts.next().unwrap_or_default() {
        "" | "previous" => None,
        n => Some(n.parse::<u64>().map_err(|_| unreadable())?),
    };
    let mut restore_backup = false;
    for flag in parts {
        match flag {
            "restore-backup" => restore_backup = true,
            _ => return Err(unreadable()),
        }
    }
    Ok(Request { to, restore_backup })
}

/// A request taken: the revision to go back to and, with `restore-backup`, the backups to
/// restore by target.
#[derive(Clone, Debug, PartialEq)]
pub struct Taken<'a> {
    pub to: &'a Recorded,
    pub restores: BTreeMap<String, String>,
}

/// Decides a request against the stored revisions and the revision running (`current`).
pub fn take<'a>(
    request: &Request,
    revisions: &'a [Recorded],
    current: Option<u64>,
) -> Result<Taken<'a>, Refusal> {
    let number = match request.to {
        Some(n) => n,
        None => {
            let before = current.unwrap_or(u64::MAX);
            revisions
                .iter()
                .filter(|r| r.revision.number < before && r.outcome.phase == Phase::Complete)
                .map(|r| r.revision.number)
                .max()
                .ok_or(Refusal::NothingBefore(before))?
        }
    };
    if Some(number) == current {
        return Err(Refusal::AlreadyRunning(number));
    }
    let to = revisions
        .iter()
        .find(|r| r.revision.number == number)
        .ok_or(Refusal::NoSuchRevision(number))?;
    // A revision that is Complete now, or was, before a later one replaced it.
    if to.outcome.phase != Phase::Complete {
        return Err(Refusal::NotComplete(number, to.outcome.phase));
    }
    if to.revision.compose.contains(MASKED) {
        return Err(Refusal::SecretInCompose(number));
    }
    let restores = if request.restore_backup {
        let undone = current.unwrap_or_default();
        let backups = revisions
            .iter()
            .find(|r| r.revision.number == undone)
            .map(|r| r.revision.backups.clone())
            .unwrap_or_default();
        if backups.is_empty() {
            return Err(Refusal::NoBackup(undone));
        }
        backups
    } else {
        BTreeMap::new()
    };
    Ok(Taken { to, restores })
}

/// The images `revision` needs looked up on the engine: each service's tag and recorded id.
pub fn images(revision: &Revision) -> Vec<String> {
    let mut out: Vec<String> = revision
        .services
        .values()
        .flat_map(|s| std::iter::once(s.image.clone()).chain(s.image_id.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Pins `project` (revision's compose file admitted with today's variables) to the images the
/// revision ran: a tag that still names the recorded image is kept (an unchanged service
/// keeps its config hash and is not recreated), else the image id itself, never pulled. A
/// build is never run again. `present`: reference -> id of what the engine has, of
/// [`images`].
pub fn pin(
    project: &mut Project,
    revision: &Revision,
    present: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    for svc in &mut project.services {
        let Some(ran) = revision.services.get(&svc.name) else {
            continue;
        };
        let Some(id) = &ran.image_id else {
            // Not on the engine when recorded (pulled by that deploy): the tag is all there is.
            continue;
        };
        let tag_same = present.get(&ran.image) == Some(id);
        if tag_same && svc.pull_policy != PullPolicy::Always {
            svc.image.clone_from(&ran.image);
        } else if present.contains_key(id) {
            svc.image.clone_from(id);
            svc.pull_policy = PullPolicy::Never;
        } else {
            return Err(Refusal::ImageGone {
                revision: revision.number,
                service: svc.name.clone(),
                image: ran.image.clone(),
                image_id: ran.image_id.clone().unwrap_or_default(),
            });
        }
        svc.build = None;
    }
    Ok(())
}

/// The `RollbackRefused` condition, once a rollback was asked for (none before: a stack never
/// rolled back by hand carries no such condition).
pub fn verdict(rollback: Option<&RollbackStatus>, spec_hash: &str) -> Option<Verdict> {
    let r = rollback?;
    let (status, reason, message) = match (&r.refused, r.to) {
        (Some(why), _) => (
            ConditionStatus::True,
            Reason::RollbackNotPossible,
            format!("rollback not done: {why}"),
        ),
        (None, Some(to)) if r.pins(spec_hash).is_some() => (
            ConditionStatus::False,
            Reason::RollbackTaken,
            format!("rollback to revision {to} requested; it applies until the spec changes"),
        ),
        (None, to) => (
            ConditionStatus::False,
            Reason::RollbackTaken,
            format!(
                "the rollback to revision {} no longer applies: the spec changed since",
                to.unwrap_or_default()
            ),
        ),
    };
    Some(Verdict::new(
        ConditionType::RollbackRefused,
        status,
        reason,
        message,
    ))
}

/// The restores a rollback with `restore-backup` asks of each target's restore machinery
/// (`BACKUP-ID#NONCE`, acted on once): only once the pinned revision (`pinned_hash`) is
/// applied and its rollout, if it had one, completed; never while it rolls out, nor when it
/// was rolled back.
pub fn restores_due(
    r: &RollbackStatus,
    pinned_hash: &str,
    status: &ServiceStackStatus,
) -> BTreeMap<String, String> {
    let applied = status.spec_hash.as_deref() == Some(pinned_hash);
    let rolled_out = status
        .rollout
        .as_ref()
        .is_none_or(|o| o.spec_hash != pinned_hash || o.phase == RolloutPhase::Complete);
    if !(r.restore_backup && applied && rolled_out) {
        return BTreeMap::new();
    }
    r.restores
        .iter()
        .map(|(target, id)| (target.clone(), r.restore_request(id)))
        .collect()
}

/// While a rollback is rolled out, `Progressing` says first that it is one.
pub fn name_rollout(verdicts: &mut [Verdict], to: u64) {
    let progressing = |v: &&mut Verdict| {
        v.type_ == ConditionType::Progressing && v.status == ConditionStatus::True
    };
    for v in verdicts.iter_mut().filter(progressing) {
        v.message = format!("rollback to revision {to} requested: {}", v.message);
    }
}
