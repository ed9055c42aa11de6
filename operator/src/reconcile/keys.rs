//! The keys step: the age of each key of `spec.keyRotation`, from the rotation times the store
//! keeps beside the values, into `status.keys`, the `KeyRotationDue` condition and a Warning
//! event per key and due date; and each certificate's expiry into `status.certificates` and
//! `CertificateExpiring`. The decisions are `decide::keys`'s and `decide::certificates`'s. The
//! store is read only for a stack that declares keys or certificates.

use chrono::{DateTime, Utc};

use super::{Error, Pass};
use crate::api::{ConditionType, EventReason, EventType, ServiceStackStatus, StackEvent, Verdict};
use crate::decide::keys;

/// What the step adds to the pass's report.
pub(super) struct Keys {
    pub verdicts: Vec<Verdict>,
    pub events: Vec<StackEvent>,
}

/// Fills `status.keys` and `status.certificates` and says what their conditions and events
/// are.
pub(super) async fn step(
    pass: &Pass<'_>,
    status: &mut ServiceStackStatus,
    previous: &ServiceStackStatus,
    now: DateTime<Utc>,
) -> Result<Keys, Error> {
    let mut out = ages(pass, status, previous, now).await?;
    out.verdicts
        .extend(certificates(pass, status, previous, now).await);
    Ok(out)
}

async fn ages(
    pass: &Pass<'_>,
    status: &mut ServiceStackStatus,
    previous: &ServiceStackStatus,
    now: DateTime<Utc>,
) -> Result<Keys, Error> {
    let admitted = &pass.admitted.keys;
    if admitted.keys.is_empty() {
        status.keys.clear();
        // A stack that stopped declaring keys gets the condition turned off, not left True.
        let verdict = had(previous, ConditionType::KeyRotationDue).then(|| {
            keys::report(&[], &|_| None, &previous.keys, admitted.warn_before, now).verdict
        });
        return Ok(Keys {
            verdicts: verdict.into_iter().collect(),
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
        verdicts: vec![report.verdict],
        events,
    })
}

/// Reads and judges each certificate; the condition turning True is the Warning event.
async fn certificates(
    pass: &Pass<'_>,
    status: &mut ServiceStackStatus,
    previous: &ServiceStackStatus,
    now: DateTime<Utc>,
) -> Option<Verdict> {
    let declared = &pass.admitted.keys.certificates;
    if declared.is_empty() {
        status.certificates.clear();
        let off = crate::decide::certificates::report(&[], now).1;
        return had(previous, ConditionType::CertificateExpiring).then_some(off);
    }
    let mut read = Vec::with_capacity(declared.len());
    for cert in declared {
        let pem = pass
            .ctx
            .store
            .certificate_pem(pass.stack, &cert.source)
            .await;
        read.push((
            cert,
            pem.and_then(|p| crate::decide::certificates::parse(&p)),
        ));
    }
    let (statuses, verdict) = crate::decide::certificates::report(&read, now);
    for (name, cert) in &statuses {
        let left = (cert.not_after - now).num_seconds();
        pass.ctx
            .metrics
            .certificate_expiry(&pass.stack.key(), name, left);
    }
    status.certificates = statuses;
    Some(verdict)
}

fn had(previous: &ServiceStackStatus, type_: ConditionType) -> bool {
    crate::api::condition::find(&previous.conditions, type_).is_some()
}
