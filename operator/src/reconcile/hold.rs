//! The acting half of holds: [`crate::decide::heal::hold`] decides which services are held, this stops
//! a held service (its hold written into the status first) and starts one whose hold ended,
//! as a resume rather than a crash repair.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Error, Outcome, Pass};
use crate::api::{ContainerState, EventReason, ServiceStackStatus};
use crate::api::{EventType, StackEvent};
use crate::decide::heal::hold::{describe, Holds};

/// Stops what is held and still runs, and starts what was held and is not any more; whether
/// it did either.
pub(super) async fn act(
    pass: &mut Pass<'_>,
    holds: &Holds,
    outcome: &Outcome,
) -> Result<bool, Error> {
    let key = pass.stack.key();
    if !holds.problems.is_empty() && pass.ctx.first_telling(&key, &holds.problems) {
        for p in &holds.problems {
            warn!("{p}");
        }
    }
    let stopped = stop_held(pass, holds, outcome).await?;
    let resumed = resume_ended(pass, holds, outcome).await?;
    Ok(stopped || resumed)
}

/// Stops the held services still up, their holds written into the status first: a stopped
/// service whose hold the status does not show would be repaired as a crash by the next
/// operator.
async fn stop_held(pass: &mut Pass<'_>, holds: &Holds, outcome: &Outcome) -> Result<bool, Error> {
    let claim = pass.claim.clone();
    // A restore stops and starts its services itself, in its own order.
    let to_stop: Vec<_> = holds
        .active
        .keys()
        .filter(|s| !holds.by_restore.contains(*s))
        .filter_map(|s| {
            outcome
                .container(s, &claim)
                .filter(|c| is_up(c.state))
                .map(|c| (s, c))
        })
        .collect();
    if to_stop.is_empty() {
        return Ok(false);
    }
    let mut interim: ServiceStackStatus = pass.stack.status.clone().unwrap_or_default();
    record(&mut interim, holds);
    pass.ctx.store.write_status(pass.stack, interim).await?;
    pass.ctx.metrics.status_written(&pass.stack.key());
    for (service, c) in to_stop {
        let grace = pass
            .project
            .service(service)
            .and_then(|s| s.stop_grace_period_s);
        let note = format!(
            "{}: stopping its container",
            describe(service, &holds.active[service])
        );
        let note = match pass.engine.stop_container(&c.id, grace).await {
            Ok(()) => note,
            Err(e) => format!("{note}; stopping it failed: {e}"),
        };
        let event = StackEvent::new(EventType::Normal, EventReason::Held, "Stop", note);
        super::status::publish(pass.ctx, pass.stack, event).await?;
    }
    Ok(true)
}

/// Starts the services whose hold ended: a resume, not a crash repair.
async fn resume_ended(
    pass: &mut Pass<'_>,
    holds: &Holds,
    outcome: &Outcome,
) -> Result<bool, Error> {
    let mut acted = false;
    for service in &holds.ended {
        let Some(c) = outcome.container(service, &pass.claim) else {
            continue;
        };
        acted = true;
        let mut note = format!("service {service}: its hold ended");
        if !is_up(c.state) {
            note.push_str("; starting it again");
            if let Err(e) = pass.engine.start_container(&c.id).await {
                note = format!("{note}; starting it failed: {e} (the repair pass will try)");
            }
        }
        let event = StackEvent::new(EventType::Normal, EventReason::Resumed, "Start", note);
        super::status::publish(pass.ctx, pass.stack, event).await?;
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
