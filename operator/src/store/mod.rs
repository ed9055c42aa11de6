//! Where ServiceStacks' status and events go: the Kubernetes API ([`kube`]) or files on one
//! machine ([`local`]). The reconcile only sees [`Store`]; the drivers (`driver/`) call it.

pub mod kube;
pub mod kube_revisions;
pub mod local;
pub mod local_inputs;
mod local_revisions;
pub mod private;
pub mod variables;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::{Failure, ServiceStack, ServiceStackStatus};
pub use variables::{Location, Rewrite, Stamp, Variable, Variables};

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
    /// What was written to changed since it was read (a stale cache, another writer): nothing
    /// was written, and the work must be redone on a fresh view.
    #[error("the ServiceStack or Secret changed since it was read; retrying on a fresh copy")]
    Conflict,
    /// A write asked of the wrong store (a Secret of the local one) or of a file that does not
    /// parse. The message names the place (file, line), never a value.
    #[error("{0}")]
    Refused(String),
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
    /// The variables `spec.variablesFrom` brings in, each with where it lives (a later source
    /// wins). The failure says what to fix and never holds a value.
    async fn referenced_variables(&self, stack: &ServiceStack) -> Result<Variables, Failure>;
    /// Puts one variable's new value where it lives, with its rotation stamp (see
    /// [`Rewrite`]: a compare-and-swap, idempotent). The caller records its intent first and,
    /// after a crash, retries the same rewrite, which completes whatever half was not done.
    /// Errors never hold a value.
    async fn write_variable(
        &self,
        stack: &ServiceStack,
        rewrite: Rewrite<'_>,
    ) -> Result<(), StoreError>;
    /// The rotation stamps of the stack's variables, by key (keys never rotated are absent).
    async fn stamps(&self, stack: &ServiceStack) -> Result<BTreeMap<String, Stamp>, StoreError>;
    /// The directory of the manifest file the stack was read from: relative `env_file` and
    /// `build` paths are taken from it. None in a cluster, where the compose file is inline.
    fn manifest_dir(&self, _stack: &ServiceStack) -> Option<std::path::PathBuf> {
        None
    }

    /// The PEM text of a certificate to watch: a file beside the manifest (local mode), or a
    /// Secret's key (a cluster, where the kube store reads it). Err says why, in a sentence.
    async fn certificate_pem(
        &self,
        stack: &ServiceStack,
        source: &crate::admit::keys::CertificateSource,
    ) -> Result<Vec<u8>, String> {
        use crate::admit::keys::CertificateSource;
        match (source, self.manifest_dir(stack)) {
            (CertificateSource::File(path), Some(dir)) => {
                let path = dir.join(path);
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| format!("{} cannot be read: {e}", path.display()))
            }
            (CertificateSource::File(path), None) => Err(format!(
                "{path} is a file, which a cluster has no directory for"
            )),
            (CertificateSource::Secret { name, .. }, _) => {
                Err(format!("Secret {name} is read in a cluster only"))
            }
        }
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
