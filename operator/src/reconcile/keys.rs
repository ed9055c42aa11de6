//! The keys step: the age of each key of `spec.keyRotation`, from the rotation times the store
//! keeps beside the values, into `status.keys`, the `KeyRotationDue` condition and a Warning
//! event per key and due date. The decisions are `decide::keys`'s. The store is read only for
//! a stack that declares keys.

use chrono::{DateTime, Utc};

use super::{Error, Pass};
use crate::api::{ConditionType, EventReason, EventType, ServiceStackStatus, StackEvent, Verdict};
use crate::decide::keys;

/// What the step adds to the pass's report.
pub(super) struct Keys {
    pub verdict: Option<Verdict>,
    pub events: Vec<StackEvent>,
}

/// Fills `status.keys` and says what the keys' condition and events are.
pub(super) async fn step(
    pass: &Pass<'_>,
    status: &mut ServiceStackStatus,
    previous: &ServiceStackStatus,
    now: DateTime<Utc>,
) -> Result<Keys, Error> {
    let admitted = &pass.admitted.keys;
    let had_condition =
        crate::api::condition::find(&previous.conditions, ConditionType::KeyRotationDue).is_some();
    if admitted.keys.is_empty() {
        status.keys.clear();
        // A stack that stopped declaring keys gets the condition turned off, not left True.
        let verdict = had_condition.then(|| {
            keys::report(&[], &|_| None, &previous.keys, admitted.warn_before, now).verdict
        });
        return Ok(Keys {
            verdict,
            events: Vec::new(),
        });
    }
    let stamps = pass.ctx.store.stamps(pass.stack).await?;
    let rotated = |variable: &str| stamps.get(variable).map(|s| s.rotated_at);
    let declared: Vec<keys::Key> = admitted.keys.iter().map(|k| k.key.clone()).collect();
    let report = keys::report(
        &declared,
        &rotated,
        &previous.keys,
        admitted.warn_before,
        now,
    );
    for (variable, key) in &report.statuses {
        let age = (now - key.since).to_std().unwrap_or_default();
        pass.ctx.metrics.key_age(&pass.stack.key(), variable, age);
    }
    status.keys = report.statuses;
    let events = report
        .warnings
        .into_iter()
        .map(|(_, note)| StackEvent {
            type_: EventType::Warning,
            reason: EventReason::KeyRotationDue,
            note,
            action: "KeyRotation".into(),
        })
        .collect();
    Ok(Keys {
        verdict: Some(report.verdict),
        events,
    })
}
