//! Where ServiceStacks' status and events go: the Kubernetes API ([`kube`]) or files on one
//! machine ([`local`]). The reconcile only sees [`Store`]; the drivers (`driver/`) call it.

pub mod kube;
pub mod kube_revisions;
pub mod local;
pub mod local_inputs;
mod local_revisions;
pub mod private;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::{ServiceStack, ServiceStackStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] ::kube::Error),
    #[error("state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    /// The stack changed since this view of it was read (a stale cache, or another writer):
    /// nothing was written, and the pass must be redone on a fresh view.
    #[error("the ServiceStack changed since it was read; retrying on a fresh copy")]
    Conflict,
}

/// Writes what the reconcile concluded.
#[async_trait]
pub trait Store: Send + Sync {
    /// Replaces the stack's status, only if the stack is still the version `stack` was read
    /// at ([`StoreError::Conflict`] otherwise); on success `stack` holds the new status and
    /// version, so the same pass can write again.
    async fn write_status(
        &self,
        stack: &mut ServiceStack,
        status: ServiceStackStatus,
    ) -> Result<(), StoreError>;
    async fn record(&self, stack: &ServiceStack, event: &StackEvent) -> Result<(), StoreError>;
    /// The variables `spec.variablesFrom` brings in. The error message says what to fix and
    /// never holds a value.
    async fn referenced_variables(
        &self,
        stack: &ServiceStack,
    ) -> Result<BTreeMap<String, String>, String>;
    /// The directory of the manifest file the stack was read from: relative `env_file` and
    /// `build` paths are taken from it. None in a cluster, where the compose file is inline.
    fn manifest_dir(&self, _stack: &ServiceStack) -> Option<std::path::PathBuf> {
        None
    }

    /// The stack's revisions, oldest first.
    async fn revisions(&self, stack: &ServiceStack) -> Result<Vec<Recorded>, StoreError>;
    /// Records a revision, with the outcome [`Phase::Progressing`](crate::api::revision::Phase).
    /// A revision is written once: when one with its number exists (a pass cut off after
    /// recording it), that is success and the stored one stays.
    async fn create_revision(
        &self,
        stack: &ServiceStack,
        revision: &Revision,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Records how a revision went; a revision no longer kept is not an error.
    async fn set_outcome(
        &self,
        stack: &ServiceStack,
        number: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError>;
    /// Forgets a revision; one already gone is not an error.
    async fn remove_revision(&self, stack: &ServiceStack, number: u64) -> Result<(), StoreError>;
}

pub use crate::api::event::{EventType, StackEvent};
