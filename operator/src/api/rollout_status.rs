//! `status.rollout`: where the rollout of a revision stands. Written before each step is
//! acted on, so an operator killed at any point finds in it what it was doing (which service,
//! which containers) and finishes the rollout or rolls it back, never starting it twice.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The rollout of one revision, one service at a time.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The revision being rolled out (or rolled back, or that was).
    pub revision: u64,
    /// The spec hash of that revision: a rolled-back revision is not tried again until the
    /// spec hash changes.
    pub spec_hash: String,
    /// The revision it replaces (the last good one); what a rollback brings back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    pub phase: RolloutPhase,
    #[schemars(with = "String")]
    pub started: DateTime<Utc>,
    /// When the phase became Complete or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished: Option<DateTime<Utc>>,
    /// Every service the revision changes, in the order they are updated.
    pub services: Vec<ServiceRollout>,
    /// Gates passed so far, as `SERVICE: gate (observed value)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates_passed: Vec<String>,
    /// Why the rollout was rolled back: the service, the gate and the value observed against
    /// its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Where a rollout stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// Services are being updated, one at a time.
    Progressing,
    /// A gate failed: the services already updated are being brought back.
    RollingBack,
    /// Every service runs the revision and passed its gates.
    Complete,
    /// A gate failed and the previous revision runs again.
    RolledBack,
}

impl RolloutPhase {
    /// Whether the rollout still has steps to take.
    pub fn active(self) -> bool {
        matches!(self, RolloutPhase::Progressing | RolloutPhase::RollingBack)
    }
}

/// One service's part in a rollout.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRollout {
    pub name: String,
    /// How its container is replaced.
    pub method: Method,
    pub step: ServiceStep,
    /// When the step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub since: Option<DateTime<Utc>>,
    /// The container of the previous revision (kept stopped until the rollout ends, so a
    /// rollback only starts it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_container: Option<String>,
    /// The container of the new revision, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_container: Option<String>,
    /// The previous revision's own latency figure (the analysis's latency quantile, in
    /// seconds), measured on the old container before the update, that `latency.maxIncrease`
    /// judges the new one against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_latency_seconds: Option<f64>,
}

/// How a service's container is replaced.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Method {
    /// The new container starts beside the old one under the same aliases; the old one is
    /// retired once the new one passed its gates. No gap.
    Surge,
    /// The old container is stopped first (a published host port or a fixed
    /// `container_name`, which two containers cannot share; a writable volume or bind mount,
    /// which two must not write at once; or `strategy: Recreate`). A gap
    /// as long as the new container takes to become healthy.
    Recreate,
    /// The service is new in this revision: there is no old container.
    Create,
}

/// Where one service stands in a rollout.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceStep {
    /// Not started yet: the old container runs.
    Pending,
    /// The old container's latency is measured over the analysis window before anything is
    /// touched (`latency.maxIncrease` is judged against it).
    Baselining,
    /// The new container is being created and started (and, for Recreate, the old one was
    /// stopped first).
    Starting,
    /// The new container runs; waiting for its probes to pass within the progress deadline.
    Verifying,
    /// Its probes pass; the metrics analysis runs over its window.
    Analysing,
    /// Gates passed; the old container is being stopped.
    Retiring,
    /// Runs the new revision.
    Done,
    /// Brought back to the previous revision.
    Reverted,
}
