//! The observe step: one look at the engine, the probers' verdicts and the clock, taken before
//! anything is done (see [`Snapshot`]). A step that changes what runs looks again once it is
//! done ([`look`]), so the report shows what runs afterwards; nothing looks in between.

use std::collections::BTreeSet;

use chrono::Utc;

use super::Context;
use crate::api::ServiceStackStatus;
use crate::compose::Project;
use crate::docker::{Engine, EngineError, Observed};
use crate::observe::Snapshot;

/// The pass's one view of its stack, `previous` being the status it started from.
pub(super) async fn take(
    ctx: &Context,
    key: &str,
    engine: &dyn Engine,
    project: &Project,
    previous: ServiceStackStatus,
) -> Result<Snapshot, EngineError> {
    let observed = look(engine, project).await?;
    Ok(Snapshot {
        observed,
        probes: ctx.probes.snapshot(key),
        previous,
        now: Utc::now(),
    })
}

/// The project's containers, and which of its networks, volumes and images exist.
pub(super) async fn look(engine: &dyn Engine, project: &Project) -> Result<Observed, EngineError> {
    let nets: Vec<String> = project.networks.iter().map(|n| n.name.clone()).collect();
    let vols: Vec<String> = project.volumes.iter().map(|v| v.name.clone()).collect();
    let images: Vec<String> = project
        .services
        .iter()
        .map(|s| s.image.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    engine.observe(&project.name, &nets, &vols, &images).await
}
