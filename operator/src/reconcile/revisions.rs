//! The history step: a changed compose file is recorded as a revision before any container of
//! it is touched, and a revision the stack got Ready on is marked so (before the status that
//! names it last good is written: a pass cut off in between does it again). The decisions are
//! `decide::history`'s; this step lists, builds and writes.
//!
//! The store is only read when something is to be written: a pass on an unchanged, settled
//! stack makes no call.

use chrono::{DateTime, Utc};

use super::{Error, Pass};
use crate::api::revision::{Cause, Recorded, Revision, ServiceRevision};
use crate::decide::history::{self, Event};
use crate::observe::Observed;

/// Records revision `number` (the compose file as admitted now) unless it is recorded already.
pub(super) async fn record(
    pass: &Pass<'_>,
    number: u64,
    observed: &Observed,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let store = &pass.ctx.store;
    let revision = describe(pass, number, observed, now);
    store.create_revision(pass.stack, &revision, now).await?;
    let stored = store.revisions(pass.stack).await?;
    settle(pass, &stored, Event::Recorded(number), now).await
}

/// Marks revision `number` Complete: the stack is Ready on it. A stack that ran before
/// revisions were kept gets its running revision recorded here first.
pub(super) async fn ready(
    pass: &Pass<'_>,
    number: u64,
    observed: &Observed,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut stored = pass.ctx.store.revisions(pass.stack).await?;
    if !stored.iter().any(|r| r.revision.number == number) {
        let revision = describe(pass, number, observed, now);
        pass.ctx
            .store
            .create_revision(pass.stack, &revision, now)
            .await?;
        stored.push(Recorded {
            revision,
            outcome: Default::default(),
        });
    }
    settle(pass, &stored, Event::Ready(number), now).await
}

async fn settle(
    pass: &Pass<'_>,
    stored: &[Recorded],
    event: Event,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let store = &pass.ctx.store;
    let status = pass.stack.status.as_ref();
    let current = match event {
        Event::Recorded(n) | Event::Ready(n) => n,
    };
    let keep: Vec<u64> = [Some(current), status.and_then(|s| s.last_good_revision)]
        .into_iter()
        .flatten()
        .collect();
    let limit = pass.stack.spec.rollout.history_limit();
    let changes = history::changes(stored, event, limit, &keep, now);
    for (number, outcome) in &changes.outcomes {
        store.set_outcome(pass.stack, *number, outcome).await?;
    }
    for number in changes.forget {
        store.remove_revision(pass.stack, number).await?;
    }
    Ok(())
}

/// The revision as the admitted spec describes it: every variable value masked in the compose
/// text, services by image and config hash.
fn describe(pass: &Pass<'_>, number: u64, observed: &Observed, now: DateTime<Utc>) -> Revision {
    let services = pass
        .project
        .services
        .iter()
        .map(|s| {
            let service = ServiceRevision {
                image: s.image.clone(),
                image_id: observed.image_ids.get(&s.image).cloned(),
                config_hash: s.config_hash(),
            };
            (s.name.clone(), service)
        })
        .collect();
    Revision {
        number,
        spec_hash: pass.project.spec_hash(),
        created: now,
        cause: Cause::SpecChange {
            generation: pass.stack.metadata.generation,
        },
        compose: crate::api::mask(
            &pass.stack.spec.compose.file,
            &pass.stack.spec.variables,
            &[],
        ),
        services,
    }
}
