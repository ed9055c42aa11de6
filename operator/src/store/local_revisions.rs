//! Revisions in the state directory: `<state>/<namespace>/<name>/revisions/<number>.json`, one
//! [`Recorded`] each, private like the record beside them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::local::{names, LocalStore};
use super::{private, StoreError};
use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::ServiceStack;

impl LocalStore {
    fn revisions_dir(&self, stack: &ServiceStack) -> PathBuf {
        let (ns, name) = names(stack);
        self.dir(&ns, &name).join("revisions")
    }

    fn revision_path(&self, stack: &ServiceStack, number: u64) -> PathBuf {
        self.revisions_dir(stack).join(format!("{number}.json"))
    }

    pub(super) fn read_revisions(&self, stack: &ServiceStack) -> Result<Vec<Recorded>, StoreError> {
        let dir = self.revisions_dir(stack);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(Self::io(&dir))?.path();
            // Temporary files of an interrupted write, and anything a person left there.
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            out.push(Self::read_revision(&path)?);
        }
        out.sort_by_key(|r| r.revision.number);
        Ok(out)
    }

    fn read_revision(path: &std::path::Path) -> Result<Recorded, StoreError> {
        let bytes = std::fs::read(path).map_err(Self::io(path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: path.display().to_string(),
            source,
        })
    }

    fn write_revision(&self, stack: &ServiceStack, recorded: &Recorded) -> Result<(), StoreError> {
        let dir = self.revisions_dir(stack);
        private::create_dir(&dir).map_err(Self::io(&dir))?;
        let path = self.revision_path(stack, recorded.revision.number);
        let bytes = serde_json::to_vec_pretty(recorded).expect("revisions serialize");
        private::write_atomic(&path, &bytes).map_err(Self::io(&path))
    }

    pub(super) fn add_revision(
        &self,
        stack: &ServiceStack,
        revision: &Revision,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.revision_path(stack, revision.number).exists() {
            return Ok(());
        }
        let recorded = Recorded {
            revision: revision.clone(),
            outcome: Outcome {
                since: Some(now),
                ..Outcome::default()
            },
        };
        self.write_revision(stack, &recorded)
    }

    pub(super) fn put_outcome(
        &self,
        stack: &ServiceStack,
        number: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let path = self.revision_path(stack, number);
        if !path.exists() {
            return Ok(());
        }
        let mut recorded = Self::read_revision(&path)?;
        recorded.outcome = outcome.clone();
        self.write_revision(stack, &recorded)
    }

    pub(super) fn drop_revision(
        &self,
        stack: &ServiceStack,
        number: u64,
    ) -> Result<(), StoreError> {
        let path = self.revision_path(stack, number);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::io(&path)(e)),
            _ => Ok(()),
        }
    }
}
