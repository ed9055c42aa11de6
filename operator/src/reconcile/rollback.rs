//! The rollback step, right after admit: a new `stackwarden.dev/rollback` request is decided
//! (`decide::rollback`) and recorded in `status.rollback` before anything of it is done; while
//! that record pins the stack (the spec unchanged since), the pass goes on with the pinned
//! revision's project instead of the spec's, and converge, the deploy gate, revisions and the
//! rollout treat it as they treat any new spec.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{status, Context, Error};
use crate::admit::Admitted;
use crate::api::revision::Recorded;
use crate::api::rollback_status::RollbackStatus;
use crate::api::{EventReason, EventType, Failure, Reason, ServiceStack, StackEvent};
use crate::decide::rollback::{self, Refusal, ROLLBACK_ANNOTATION};
use crate::docker::Engine;

/// The revision a pass applies instead of the spec.
pub(crate) struct Pin {
    pub to: u64,
    /// The spec's own hash (the pinned project hashes otherwise).
    pub spec_hash: String,
    /// Revision `to`'s compose file, variable values masked, as the new revision records it.
    pub compose: String,
}

/// What the pass goes on with: the spec's project, or the pinned one. The inner `Err` is a pin
/// that cannot be applied any more (its revision or image gone since): reported as an invalid
/// spec, nothing touched.
pub(super) async fn step(
    ctx: &Context,
    stack: &mut ServiceStack,
    admitted: Admitted,
    engine: &dyn Engine,
    now: DateTime<Utc>,
) -> Result<Result<(Admitted, Option<Pin>), Failure>, Error> {
    let spec_hash = admitted.project.spec_hash();
    if let Some(value) = new_request(stack) {
        // Not decided while the engine does not answer: asked again next pass.
        if let Some(taken) = decide(ctx, stack, engine, &value, &spec_hash, now).await? {
            record(ctx, stack, taken).await?;
        }
    }
    let pinned = stack
        .status
        .as_ref()
        .and_then(|s| s.rollback.as_ref())
        .and_then(|r| r.pins(&spec_hash));
    let Some(to) = pinned else {
        return Ok(Ok((admitted, None)));
    };
    let revisions = ctx.store.revisions(stack).await?;
    Ok(pinned_project(ctx, stack, engine, &revisions, to)
        .await
        .map(|(admitted, compose)| {
            let pin = Pin {
                to,
                spec_hash,
                compose,
            };
            (admitted, Some(pin))
        }))
}

/// The annotation's value when it was not acted on yet.
fn new_request(stack: &ServiceStack) -> Option<String> {
    let value = stack
        .metadata
        .annotations
        .as_ref()?
        .get(ROLLBACK_ANNOTATION)?;
    let handled = stack
        .status
        .as_ref()
        .and_then(|s| s.rollback.as_ref())
        .map(|r| r.request.as_str());
    (handled != Some(value.as_str())).then(|| value.clone())
}

/// The request decided: the rollback to record, refused or not; None when the engine did not
/// answer (no refusal for that: the request is decided again). Only the store failing is an
/// error.
async fn decide(
    ctx: &Context,
    stack: &ServiceStack,
    engine: &dyn Engine,
    value: &str,
    spec_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<RollbackStatus>, Error> {
    let current = stack.status.as_ref().and_then(|s| s.revision);
    let mut record = RollbackStatus {
        request: value.to_owned(),
        requested: now,
        to: None,
        from: current,
        from_spec_hash: spec_hash.to_owned(),
        restore_backup: false,
        restores: BTreeMap::new(),
        refused: None,
    };
    let revisions = ctx.store.revisions(stack).await?;
    let taken = rollback::parse(value).and_then(|request| {
        record.restore_backup = request.restore_backup;
        rollback::take(&request, &revisions, current)
    });
    match taken {
        Ok(t) => {
            record.to = Some(t.to.revision.number);
            record.restores = t.restores;
            // Whether it can be applied at all: refused now rather than failing later.
            let to = t.to.revision.number;
            match pinned_project(ctx, stack, engine, &revisions, to).await {
                Err(f) if f.reason == Reason::EngineUnreachable => return Ok(None),
                Err(f) => record.refused = Some(f.message),
                Ok(_) => {}
            }
        }
        Err(refusal) => record.refused = Some(refusal.to_string()),
    }
    Ok(Some(record))
}

/// Writes the decision into status before anything of it is done, and tells it.
async fn record(ctx: &Context, stack: &mut ServiceStack, r: RollbackStatus) -> Result<(), Error> {
    let event = match (&r.refused, r.to) {
        (None, Some(to)) => Some(StackEvent {
            type_: EventType::Normal,
            reason: EventReason::Reason(Reason::RollbackTaken),
            note: format!(
                "rollback to revision {to} requested{}",
                if r.restore_backup {
                    "; the backups taken before the revision undone are restored once it runs"
                } else {
                    ""
                }
            ),
            action: "Rollback".into(),
        }),
        // The RollbackRefused condition turning True is its own Warning event.
        _ => None,
    };
    let mut interim = stack.status.clone().unwrap_or_default();
    interim.rollback = Some(r);
    ctx.store.write_status(stack, interim).await?;
    ctx.metrics.status_written(&stack.key());
    if let Some(e) = event {
        status::publish(ctx, stack, e).await?;
    }
    Ok(())
}

/// Revision `to`'s compose file admitted with today's variables, pinned to the images it ran;
/// and that compose file, masked as stored.
async fn pinned_project(
    ctx: &Context,
    stack: &ServiceStack,
    engine: &dyn Engine,
    revisions: &[Recorded],
    to: u64,
) -> Result<(Admitted, String), Failure> {
    let refused = |r: Refusal| Failure::new(Reason::RollbackNotPossible, r.to_string());
    let revision = &revisions
        .iter()
        .find(|r| r.revision.number == to)
        .ok_or_else(|| refused(Refusal::NoSuchRevision(to)))?
        .revision;
    let mut old = stack.clone();
    old.spec.compose.file.clone_from(&revision.compose);
    let mut admitted = super::admit_as(ctx, &old).await.map_err(|f| {
        let message = format!(
            "revision {to}'s compose file does not admit with today's variables: {}; change the spec instead",
            f.message
        );
        Failure::new(Reason::RollbackNotPossible, message)
    })?;
    let images = rollback::images(revision);
    let present = engine.image_ids(&images).await.map_err(|e| {
        let message = format!("could not look up revision {to}'s images: {e}");
        Failure::new(Reason::EngineUnreachable, message)
    })?;
    rollback::pin(&mut admitted.project, revision, &present).map_err(refused)?;
    Ok((admitted, revision.compose.clone()))
}
