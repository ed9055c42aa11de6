//! Revisions: every configuration of a stack the operator applied, numbered, as the history a
//! rollback goes back to (Deployments and StatefulSets keep theirs the same way).
//!
//! A revision has two parts, because in a cluster it is a `ControllerRevision`, whose `data`
//! the API server never lets change: what was applied ([`Revision`], written once, before the
//! first container of it is touched) and how it went ([`Outcome`], updated as the rollout
//! goes on; kept in the object's annotations).
//!
//! Nothing in a revision is a secret: the compose file is kept with every variable value
//! masked, and services are described by image and config hash (the hash the containers'
//! labels already carry), never by their environment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What one revision applies. Written once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Goes up by one with every change; never reused, a revert included (`status.revision`).
    pub number: u64,
    /// Hash of the compose project as resolved (`status.specHash`).
    pub spec_hash: String,
    pub created: DateTime<Utc>,
    pub cause: Cause,
    /// The compose file as written, every variable value replaced by `<redacted>`.
    pub compose: String,
    /// Each service as this revision runs it.
    pub services: BTreeMap<String, ServiceRevision>,
    /// The `beforeDeploy` backups taken just before this revision was applied, by target:
    /// what a rollback that undoes this revision restores when asked to (`--restore-backup`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<String, String>,
}

/// A service as a revision runs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRevision {
    /// The image reference of the compose file.
    pub image: String,
    /// The image id the reference resolved to when the revision was recorded; none for an
    /// image not on the engine yet (built or pulled by the deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The container config hash (the `stackwarden.dev/config-hash` label).
    pub config_hash: String,
}

/// Why a revision exists.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Cause {
    /// The spec changed (a commit, `kubectl apply`, an edited manifest), or the stack is new.
    #[serde(rename_all = "camelCase")]
    SpecChange {
        /// `metadata.generation` of the spec applied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<i64>,
    },
    /// A person asked for a rollback (`stackwarden rollback`, the `stackwarden.dev/rollback`
    /// annotation): revision `to`'s compose file and images, applied as a new revision.
    #[serde(rename_all = "camelCase")]
    Rollback { to: u64 },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::SpecChange {
                generation: Some(g),
            } => write!(f, "spec change (generation {g})"),
            Cause::SpecChange { generation: None } => f.write_str("spec change"),
            Cause::Rollback { to } => write!(f, "rollback to revision {to}"),
        }
    }
}

/// How a revision went. Updated as it goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub phase: Phase,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Where a revision stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    /// Recorded; being applied.
    #[default]
    Progressing,
    /// Applied and Ready: a revision a rollback may go back to.
    Complete,
    /// A newer revision was applied before this one was ever Ready.
    Superseded,
    /// It failed a rollout gate and the revision before it was brought back.
    RolledBack,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Progressing => "Progressing",
            Phase::Complete => "Complete",
            Phase::Superseded => "Superseded",
            Phase::RolledBack => "RolledBack",
        })
    }
}

/// A revision with how it went, as the store keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    pub revision: Revision,
    #[serde(default)]
    pub outcome: Outcome,
}
