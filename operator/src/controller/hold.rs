//! The acting half of holds: [`crate::heal::hold`] decides which services are held, this stops
//! a held service (its hold written into the status first) and starts one whose hold ended,
//! as a resume rather than a crash repair.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Context, Error, Outcome};
use crate::api::EventReason;
use crate::api::{ContainerState, ServiceStack, ServiceStackStatus};
use crate::compose::Project;
use crate::docker::Engine;
use crate::heal::hold::{describe, Holds};
use crate::store::{EventType, StackEvent};

/// Stops what is held and still runs, and starts what was held and is not any more; whether
/// it did either.
pub async fn act(
    ctx: &Context,
    stack: &mut ServiceStack,
    project: &Project,
    claim: &crate::docker::Claim,
    holds: &Holds,
    outcome: &Outcome,
    engine: &dyn Engine,
) -> Result<bool, Error> {
    let key = stack.key();
    if !holds.problems.is_empty() && ctx.first_telling(&key, &holds.problems) {
        for p in &holds.problems {
            warn!(stack = %key, "{p}");
        }
    }
    let previous = stack.status.clone().unwrap_or_default();
    let ours = |name: &str| outcome.container(name, claim);
    // A restore stops and starts its services itself, in its own order.
    let to_stop: Vec<_> = holds
        .active
        .keys()
        .filter(|s| !holds.by_restore.contains(*s))
        .filter_map(|s| ours(s).filter(|c| is_up(c.state)).map(|c| (s, c)))
        .collect();
    if !to_stop.is_empty() {
        // Intent first: a stopped service whose hold the status does not show would be
        // repaired as a crash by the next operator.
        let mut interim: ServiceStackStatus = previous.clone();
        record(&mut interim, holds);
        ctx.store.write_status(stack, interim).await?;
        ctx.metrics.status_written(&key);
    }
    let mut acted = !to_stop.is_empty();
    for (service, c) in to_stop {
        let grace = project.service(service).and_then(|s| s.stop_grace_period_s);
        let note = format!(
            "{}: stopping its container",
            describe(service, &holds.active[service])
        );
        let note = match engine.stop_container(&c.id, grace).await {
            Ok(()) => note,
            Err(e) => format!("{note}; stopping it failed: {e}"),
        };
        info!(stack = %key, "{note}");
        super::publish(
            ctx,
            stack,
            StackEvent::new(EventType::Normal, EventReason::Held, "Stop", note),
        )
        .await?;
    }
    for service in &holds.ended {
        let Some(c) = ours(service) else { continue };
        acted = true;
        let mut note = format!("service {service}: its hold ended");
        if !is_up(c.state) {
            note.push_str("; starting it again");
            if let Err(e) = engine.start_container(&c.id).await {
                note = format!("{note}; starting it failed: {e} (the repair pass will try)");
            }
        }
        info!(stack = %key, "{note}");
        super::publish(
            ctx,
            stack,
            StackEvent::new(EventType::Normal, EventReason::Resumed, "Start", note),
        )
        .await?;
    }
    Ok(acted)
}

/// Writes the holds in force into the services' status.
pub fn record(status: &mut ServiceStackStatus, holds: &Holds) {
    for (name, slot) in status.services.iter_mut() {
        slot.hold = holds.active.get(name).cloned();
    }
    for (name, hold) in &holds.active {
        status.services.entry(name.clone()).or_default().hold = Some(hold.clone());
    }
}

fn is_up(state: ContainerState) -> bool {
    matches!(state, ContainerState::Running | ContainerState::Restarting)
}

/// When a hold ends by itself: the pass to wake for it.
pub fn next_end(holds: &Holds) -> Option<DateTime<Utc>> {
    holds.active.values().filter_map(|h| h.until).min()
}
