//! The label sets of the operator's series. Each is a struct, so a family cannot be given a
//! label set of another shape, and every label value is either a stack's or service's name or
//! a closed set chosen by the operator's code.

use prometheus_client::encoding::EncodeLabelSet;

/// `namespace` and `name` of a stack: two labels rather than one `namespace/name`, so that
/// dashboards group by namespace and alerts route by it without a regex.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StackLabels {
    pub namespace: String,
    pub name: String,
}

impl StackLabels {
    /// From a stack key, `namespace/name` as `ServiceStack::key` writes it. Neither part of a
    /// Kubernetes name can hold a `/`, so splitting at the first one is lossless; a key
    /// without one is a name in `default`, where `ServiceStack::key` puts a stack without a
    /// namespace.
    pub fn of(key: &str) -> Self {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ErrorLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ServiceLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProbeLabels {
    #[prometheus(flatten)]
    pub service: ServiceLabels,
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProbeKindLabels {
    #[prometheus(flatten)]
    pub service: ServiceLabels,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RestartLabels {
    #[prometheus(flatten)]
    pub service: ServiceLabels,
    pub reason: &'static str,
}

/// One condition as it stands: `type`, `status` and `reason` are the API's enums, rendered
/// with their stable names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ConditionLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    pub r#type: String,
    pub status: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EventLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    /// Normal or Warning.
    pub r#type: &'static str,
    /// The event's CamelCase reason, chosen by the operator's code.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackupJobLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    pub target: String,
    /// Backup, Verify or Restore.
    pub job: &'static str,
    /// Succeeded, or the failure's BackupFailed reason (DumpFailed, DiskFull, ...).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TargetLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RolloutLabels {
    #[prometheus(flatten)]
    pub stack: StackLabels,
    /// Complete or RolledBack.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StepLabels {
    #[prometheus(flatten)]
    pub service: ServiceLabels,
    /// The rollout step of the service that ended (Starting, Verifying, Analysing, Retiring).
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GateLabels {
    #[prometheus(flatten)]
    pub service: ServiceLabels,
    /// `error_ratio` or `latency_seconds`.
    pub gate: &'static str,
}
