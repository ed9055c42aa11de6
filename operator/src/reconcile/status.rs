//! The one status writer, and the events that follow a write.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Context, Error};
use crate::api::{condition, ServiceStack, ServiceStackStatus, Verdict};
use crate::api::{EventType, StackEvent};
use crate::decide::report;

/// Writes the status when anything in it changed, then publishes the events of the pass: the
/// ones given (what the pass found out) and one for each condition that turned bad. Events come
/// after the write, so a pass whose write failed (a stale view, another writer) tells nothing it
/// did not commit; the next pass finds the same things and tells them once. A condition that
/// changes is stamped `now`, the moment the pass decided it.
pub(super) async fn finish(
    ctx: &Context,
    stack: &mut ServiceStack,
    mut status: ServiceStackStatus,
    previous: &ServiceStackStatus,
    verdicts: Vec<Verdict>,
    mut events: Vec<StackEvent>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let generation = stack.metadata.generation;
    status.observed_generation = generation;
    status.conditions = condition::merge(&previous.conditions, verdicts, generation, now);
    // Every pass reports, whatever its outcome: an alert on readiness must hear of an invalid
    // spec or an unreachable engine too.
    ctx.metrics.stack_observed(&stack.key(), &status);
    events.extend(report::transition_events(
        &previous.conditions,
        &status.conditions,
    ));
    if stack.status.as_ref() != Some(&status) {
        ctx.store.write_status(stack, status).await?;
        ctx.metrics.status_written(&stack.key());
    }
    for event in events {
        publish(ctx, stack, event).await?;
    }
    Ok(())
}

/// Records an event and logs it, once: Warning events at WARN, the rest at INFO. Every restart,
/// deploy step, backup outcome and condition that turned bad is an event, so the log has one
/// line for each and none for passes where nothing happened.
pub(super) async fn publish(
    ctx: &Context,
    stack: &ServiceStack,
    event: StackEvent,
) -> Result<(), Error> {
    let key = stack.key();
    match event.type_ {
        EventType::Normal => info!(reason = %event.reason, "{}", event.note),
        EventType::Warning => warn!(reason = %event.reason, "{}", event.note),
    }
    ctx.store.record(stack, &event).await?;
    ctx.metrics.event_recorded(&key, event.type_, &event.reason);
    Ok(())
}
