//! The conditions of a pass, assembled from what each step found. Pure.

use chrono::{DateTime, Utc};

use super::{repair, Pass};
use crate::api::{ConditionStatus, ConditionType, Reason, ServiceStackStatus, Verdict};
use crate::decide::backup::plan::Gate;
use crate::decide::report;

/// Every condition of a pass on a reachable engine.
pub(super) fn applied(
    pass: &Pass<'_>,
    report: &report::Report,
    repair: &repair::Repair,
    gate: &Gate,
    status: &ServiceStackStatus,
    now: DateTime<Utc>,
) -> Vec<Verdict> {
    let mut verdicts = vec![
        spec_valid(),
        Verdict::new(
            ConditionType::DockerUnreachable,
            ConditionStatus::False,
            Reason::EngineReachable,
            format!(
                "the Docker engine at {} answers",
                pass.stack.spec.docker.host()
            ),
        ),
        degraded(&repair.exhausted),
        crate::admit::warnings::verdict(&pass.admitted.warnings),
    ];
    // Later verdicts of a type win: the report's (a project-name conflict is an invalid spec),
    // then a held deploy's Progressing.
    verdicts.extend(report.verdicts.iter().cloned());
    if let Some(v) = gate_verdict(gate) {
        verdicts.push(v);
    }
    // Last: a stack running two revisions, or rolled back, is not Ready whatever the report saw.
    let spec_hash = pass.project.spec_hash();
    let mut rolling = crate::decide::rollout::verdicts(status.rollout.as_ref(), &spec_hash);
    if let Some(pin) = pass.pin {
        crate::decide::rollback::name_rollout(&mut rolling, pin.to);
    }
    verdicts.extend(rolling);
    // What failed to apply (an image that did not build) is what a person must act on.
    let failed = report.verdicts.iter().filter(|v| {
        v.type_ == ConditionType::Progressing
            && matches!(v.reason, Reason::ApplyFailed | Reason::ImageNotFound)
    });
    verdicts.extend(failed.cloned());
    // The spec's own hash: a changed spec ends a pin.
    let spec_hash = pass.pin.map_or(spec_hash, |p| p.spec_hash.clone());
    verdicts.extend(crate::decide::rollback::verdict(
        status.rollback.as_ref(),
        &spec_hash,
    ));
    verdicts.extend(crate::decide::backup::plan::conditions(
        &pass.stack.spec.backups,
        &status.backups,
        now,
    ));
    verdicts
}

/// The Degraded verdict: which services used up their restart budget.
fn degraded(exhausted: &[(String, String)]) -> Verdict {
    if exhausted.is_empty() {
        return Verdict::new(
            ConditionType::Degraded,
            ConditionStatus::False,
            Reason::WithinRestartBudget,
            "every service is within its restart budget",
        );
    }
    let message = exhausted
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::new(
        ConditionType::Degraded,
        ConditionStatus::True,
        Reason::RestartBudgetExhausted,
        message,
    )
}

/// The Progressing verdict of a deploy held for its backups (None when it is not held).
fn gate_verdict(gate: &Gate) -> Option<Verdict> {
    match gate {
        Gate::Open => None,
        Gate::Waiting(message) => Some(Verdict::new(
            ConditionType::Progressing,
            ConditionStatus::True,
            Reason::BackingUpBeforeDeploy,
            message.clone(),
        )),
        Gate::Failed(message) => Some(Verdict::new(
            ConditionType::Progressing,
            ConditionStatus::False,
            Reason::PreDeployBackupFailed,
            message.clone(),
        )),
    }
}

/// The conditions of an engine that cannot be reached: nothing is known of the services.
pub(super) fn unreachable(host: &str, e: &crate::docker::EngineError) -> Vec<Verdict> {
    let message = format!("{e}; check that the engine runs and spec.docker.host ({host}) is right. Nothing was changed; retrying with backoff");
    vec![
        spec_valid(),
        Verdict::new(
            ConditionType::DockerUnreachable,
            ConditionStatus::True,
            Reason::EngineUnreachable,
            message,
        ),
        Verdict::new(
            ConditionType::Ready,
            ConditionStatus::Unknown,
            Reason::EngineUnreachable,
            "the Docker engine cannot be reached, so the services' state is unknown",
        ),
    ]
}

/// The conditions of a spec that cannot be applied: the containers running are left alone.
pub(super) fn invalid(failure: crate::api::Failure) -> Vec<Verdict> {
    let reason = failure.reason;
    vec![
        Verdict::new(ConditionType::InvalidSpec, ConditionStatus::True, reason, failure.message),
        Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            reason,
            "the spec is invalid (see InvalidSpec); the containers already running were left as they were",
        ),
        Verdict::new(ConditionType::Progressing, ConditionStatus::False, reason, "waiting for a valid spec"),
    ]
}

fn spec_valid() -> Verdict {
    Verdict::new(
        ConditionType::InvalidSpec,
        ConditionStatus::False,
        Reason::SpecValid,
        "the spec is valid",
    )
}
