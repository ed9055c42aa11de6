//! Status conditions in the `metav1.Condition` shape.
//!
//! Types and reasons are enums so a typo cannot invent a condition that no dashboard,
//! `kubectl wait` or Argo CD health check knows about; their serialized names are part of
//! the API and must stay stable.

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The condition types stackwarden sets on a `ServiceStack`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum ConditionType {
    /// Every required service runs and passes its health check.
    Ready,
    /// The operator is changing containers, or waiting for them to come up.
    Progressing,
    /// The spec cannot be applied as written; nothing running was changed because of it.
    InvalidSpec,
    /// The Docker engine named in `spec.docker.host` could not be reached.
    DockerUnreachable,
    /// A service used up its restart budget; the operator stopped restarting it.
    Degraded,
    /// The newest backup, restore test or restore of some target failed.
    BackupFailed,
    /// Some target's last successful backup is older than its `staleAfterHours`.
    BackupStale,
    /// The spec is valid and applied, but asks for something risky (the host's root or the
    /// Docker socket bound into a service, backups to `/`, a retention keeping one backup).
    SpecWarning,
    /// The newest revision failed a rollout gate and the previous one runs again; it is not
    /// tried again until the spec changes.
    RolledBack,
    /// The last manual rollback request (`stackwarden.dev/rollback`) could not be carried out;
    /// the message says why and what to do. Nothing running was changed because of it.
    RollbackRefused,
    /// A key (`spec.keyRotation`) is older than its maximum age: rotate it.
    KeyRotationDue,
    /// A certificate of `spec.keyRotation.certificates` expires within its warnBeforeDays.
    CertificateExpiring,
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `True`, `False` or `Unknown`, as in Kubernetes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Machine-readable reasons. Stable CamelCase names: alerts and scripts match on them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Reason {
    /// Ready: every required service is running and healthy.
    AllServicesReady,
    /// Ready: at least one required service is missing, stopped or unhealthy.
    ServicesNotReady,
    /// Required services are held stopped on purpose (`stackwarden hold`, the hold annotation,
    /// a restore); the rest are ready.
    ServicesHeld,
    /// Progressing: containers are being created, recreated, started or removed.
    Applying,
    /// Progressing: a service waits for a dependency to start or become healthy.
    WaitingForDependencies,
    /// Progressing: containers run; waiting for their health checks to pass.
    WaitingForHealthy,
    /// Progressing: what runs matches the spec.
    Converged,
    /// Progressing: reconciliation is suspended by `spec.suspend`.
    Suspended,
    /// Progressing/Ready: a Docker call failed while applying the spec.
    ApplyFailed,
    /// Ready/Progressing: an image is not on the engine and could not be pulled.
    ImageNotFound,
    /// InvalidSpec: the compose file is not valid YAML or not a valid compose file.
    MalformedCompose,
    /// InvalidSpec: the compose file uses a key stackwarden does not support yet.
    UnsupportedComposeKey,
    /// InvalidSpec: a `${VAR}` has no value and no default.
    MissingVariable,
    /// InvalidSpec: `spec.health` (or another section) names a service the compose file lacks.
    UnknownService,
    /// InvalidSpec: another field of the spec is invalid.
    InvalidField,
    /// InvalidSpec: a Secret named in `spec.variablesFrom` cannot be read.
    SecretNotFound,
    /// InvalidSpec: containers of another owner already use this compose project name.
    ProjectNameInUse,
    /// InvalidSpec: the spec is valid.
    SpecValid,
    /// DockerUnreachable: the engine did not answer.
    EngineUnreachable,
    /// DockerUnreachable: the engine answered.
    EngineReachable,
    /// Degraded: a service restarted `maxRestartsPerHour` times within an hour.
    RestartBudgetExhausted,
    /// Degraded: every service is within its restart budget.
    WithinRestartBudget,
    /// BackupFailed: the database could not be reached (service stopped, wrong password).
    DatabaseUnreachable,
    /// BackupFailed: `pg_dump` or the Redis snapshot failed or was cut off.
    DumpFailed,
    /// BackupFailed: the destination has no space left.
    DiskFull,
    /// BackupFailed: the destination could not be reached or refused the write.
    DestinationUnreachable,
    /// BackupFailed: a stored backup's bytes do not match the sha256 its manifest records.
    ChecksumMismatch,
    /// BackupFailed: a restore test failed, or its counts differ from the manifest.
    VerificationFailed,
    /// BackupFailed: a restore failed; the database was left as it was.
    RestoreFailed,
    /// BackupFailed: the operator stopped in the middle of a backup twice for the same slot.
    Interrupted,
    /// BackupFailed: the last attempt of every target succeeded.
    BackupsSucceeded,
    /// BackupStale: a target has no successful backup within its `staleAfterHours`.
    BackupOverdue,
    /// BackupStale: every target has a recent enough backup.
    BackupsFresh,
    /// Progressing: a deploy waits for the backups its targets take first (`beforeDeploy`).
    BackingUpBeforeDeploy,
    /// Progressing: a backup a deploy waited for failed; the deploy did not happen.
    PreDeployBackupFailed,
    /// SpecWarning: a service binds the host's `/`.
    HostRootMounted,
    /// SpecWarning: a service binds the Docker socket (or a directory holding it).
    DockerSocketMounted,
    /// SpecWarning: a backup target's `destination.path` is `/`.
    BackupToRoot,
    /// SpecWarning: a backup target's retention keeps only the newest backup.
    SingleBackupKept,
    /// SpecWarning: nothing risky in the spec.
    NoSpecWarnings,
    /// Progressing, Ready: a revision is being rolled out, one service at a time.
    RollingOut,
    /// Progressing, Ready: a rollout failed a gate; the previous revision is being brought back.
    RollingBack,
    /// RolledBack, Ready: a rollout failed a gate (the message names the service, the gate and
    /// the value against its limit); the previous revision runs.
    GateFailed,
    /// RolledBack: the newest rollout completed.
    RolloutComplete,
    /// RolledBack: no rollout yet.
    NoRollout,
    /// RollbackRefused: the revision asked for is gone, not Complete, holds a secret written
    /// into the compose file, its image is gone, or the request does not parse.
    RollbackNotPossible,
    /// RollbackRefused: the last rollback request was taken.
    RollbackTaken,
    /// KeyRotationDue: some key is older than its maximum age (the message lists them).
    KeyTooOld,
    /// KeyRotationDue: every key is younger than its maximum age.
    KeysFresh,
    /// CertificateExpiring: a certificate expires within its warnBeforeDays, or has expired.
    CertificateExpiresSoon,
    /// CertificateExpiring: no certificate expires within its warnBeforeDays.
    CertificatesValid,
    /// CertificateExpiring: a certificate could not be read or parsed (the message says which
    /// and why).
    CertificateUnreadable,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One condition, field for field the `metav1.Condition` shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition, CamelCase.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// Status of the condition: True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the last transition.
    pub reason: Reason,
    /// Human-readable message: what is wrong and what to do next.
    pub message: String,
    /// When the status last changed.
    #[schemars(with = "String")]
    #[serde(with = "rfc3339")]
    pub last_transition_time: DateTime<Utc>,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What a reconcile pass concluded for one condition type; it becomes a [`Condition`] once
/// merged with the previous one (which keeps the transition time when nothing changed).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl Verdict {
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges fresh verdicts into the previous conditions. `lastTransitionTime` moves only when the
/// status flips, as `kubectl wait` and Argo CD expect; types without a verdict are kept.
pub fn merge(
    previous: &[Condition],
    verdicts: Vec<Verdict>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous.to_vec();
    for v in verdicts {
        let transition = match out.iter().find(|c| c.type_ == v.type_) {
            Some(old) if old.status == v.status => old.last_transition_time,
            _ => now,
        };
        let cond = Condition {
            type_: v.type_,
            status: v.status,
            reason: v.reason,
            message: v.message,
            last_transition_time: transition,
            observed_generation: generation,
        };
        match out.iter_mut().find(|c| c.type_ == cond.type_) {
            Some(slot) => *slot = cond,
            None => out.push(cond),
        }
    }
    out.sort_by_key(|c| c.type_);
    out
}

/// Finds a condition by type.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Kubernetes wants RFC 3339 with second precision and a `Z`.
mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let v = |status, reason| Verdict::new(ConditionType::Ready, status, reason, "m");
        let c1 = merge(
            &[],
            vec![v(ConditionStatus::False, Reason::ServicesNotReady)],
            Some(1),
            t(0),
        );
        assert_eq!(c1[0].last_transition_time, t(0));
        // Same status, new reason and message: the transition time stays.
        let c2 = merge(
            &c1,
            vec![v(ConditionStatus::False, Reason::ApplyFailed)],
            Some(2),
            t(10),
        );
        assert_eq!(c2[0].last_transition_time, t(0));
        assert_eq!(c2[0].reason, Reason::ApplyFailed);
        assert_eq!(c2[0].observed_generation, Some(2));
        let c3 = merge(
            &c2,
            vec![v(ConditionStatus::True, Reason::AllServicesReady)],
            Some(2),
            t(20),
        );
        assert_eq!(c3[0].last_transition_time, t(20));
    }

    #[test]
    fn conditions_without_a_verdict_are_kept_and_sorted() {
        let a = Verdict::new(
            ConditionType::Progressing,
            ConditionStatus::True,
            Reason::Applying,
            "",
        );
        let b = Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ServicesNotReady,
            "",
        );
        let c1 = merge(&[], vec![a, b], None, t(0));
        let c2 = merge(
            &c1,
            vec![Verdict::new(
                ConditionType::InvalidSpec,
                ConditionStatus::False,
                Reason::SpecValid,
                "",
            )],
            None,
            t(1),
        );
        let types: Vec<_> = c2.iter().map(|c| c.type_).collect();
        assert_eq!(
            types,
            vec![
                ConditionType::Ready,
                ConditionType::Progressing,
                ConditionType::InvalidSpec
            ]
        );
    }

    #[test]
    fn serializes_in_metav1_shape() {
        let c = merge(
            &[],
            vec![Verdict::new(
                ConditionType::Ready,
                ConditionStatus::True,
                Reason::AllServicesReady,
                "ok",
            )],
            Some(3),
            t(0),
        );
        let json = serde_json::to_value(&c[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "Ready", "status": "True", "reason": "AllServicesReady", "message": "ok",
                "lastTransitionTime": "2023-11-14T22:13:20Z", "observedGeneration": 3
            })
        );
    }
}
