//! The backup step: fold finished jobs into status, decide what starts, record the metrics.

use chrono::{DateTime, Utc};

use super::{Outcome, Pass};
use crate::api::ServiceStackStatus;

/// Runs the backup step and records its metrics; the events it returns wait for the status.
pub(super) async fn step(
    pass: &Pass<'_>,
    outcome: &Outcome,
    status: &mut ServiceStackStatus,
    deploying: Option<&str>,
    now: DateTime<Utc>,
) -> crate::backup::runner::Pass {
    let Pass {
        ctx,
        ref stack,
        project,
        ref claim,
        ref engine,
        ..
    } = *pass;
    let key = stack.key();
    // While a rollback that restores is pinned, its backups outlive retention until restored.
    let kept: std::collections::BTreeSet<String> = match (pass.pin, &status.rollback) {
        (Some(_), Some(r)) if r.restore_backup => r.restores.values().cloned().collect(),
        _ => Default::default(),
    };
    let rollback_restores = match (pass.pin, &status.rollback) {
        (Some(_), Some(r)) => {
            crate::decide::rollback::restores_due(r, &project.spec_hash(), status)
        }
        _ => Default::default(),
    };
    let scope = crate::backup::runner::Scope {
        stack,
        project,
        claim,
        engine,
        observed: &outcome.observed,
        backups: &pass.admitted.backups,
        rollback_restores: &rollback_restores,
        kept: &kept,
    };
    let backups = crate::backup::runner::reconcile(
        &ctx.backups,
        &scope,
        &mut status.backups,
        deploying,
        !ctx.draining(),
        now,
    )
    .await;
    for (target, job, failure) in &backups.ended {
        let failure = failure.map(|r| r.to_string());
        ctx.metrics
            .backup_job_ended(&key, target, job.as_str(), failure.as_deref());
    }
    for (target, b) in &status.backups {
        if let Some(s) = &b.last_success {
            ctx.metrics
                .backup_last_success(&key, target, s.time.timestamp(), s.size);
        }
    }
    status.last_backup = status
        .backups
        .values()
        .filter_map(|b| b.last_success.as_ref().map(|s| s.time))
        .max();
    backups
}
