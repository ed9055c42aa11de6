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
use crate::api::DeployBackupState;
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
    // A pinned revision is what the stack runs: pruning it would end the pin.
    let keep: Vec<u64> = [
        Some(current),
        status.and_then(|s| s.last_good_revision),
        pass.pin.map(|p| p.to),
    ]
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
    let spec_hash = pass.project.spec_hash();
    let (cause, compose) = match pass.pin {
        Some(pin) => (Cause::Rollback { to: pin.to }, pin.compose.clone()),
        None => (
            Cause::SpecChange {
                generation: pass.stack.metadata.generation,
            },
            crate::api::mask(
                &pass.stack.spec.compose.file,
                &pass.stack.spec.variables,
                &[],
            ),
        ),
    };
    Revision {
        number,
        backups: deploy_backups(pass, &spec_hash),
        spec_hash,
        created: now,
        cause,
        compose,
        services,
    }
}

/// The `beforeDeploy` backups taken for this very spec, by target: the revision is recorded
/// once its deploy gate opened, so they are the ones taken just before it is applied.
fn deploy_backups(pass: &Pass<'_>, spec_hash: &str) -> std::collections::BTreeMap<String, String> {
    let Some(status) = pass.stack.status.as_ref() else {
        return Default::default();
    };
    status
        .backups
        .iter()
        .filter_map(|(target, st)| {
            let d = st.deploy_backup.as_ref()?;
            let taken = d.spec_hash == spec_hash && d.state == DeployBackupState::Succeeded;
            taken.then(|| (target.clone(), d.id.clone()))
        })
        .collect()
}
