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

    /// The stack's revisions, oldest first.
    pub fn read_revisions(&self, stack: &ServiceStack) -> Result<Vec<Recorded>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::revision::{Cause, Phase};
    use crate::store::Store;

    fn stack() -> ServiceStack {
        let spec: crate::api::ServiceStackSpec =
            yaml_serde::from_str("compose:\n  file: 'services: {}'\n").unwrap();
        let mut s = ServiceStack::new("shop", spec);
        s.metadata.namespace = Some("ops".into());
        s
    }

    fn revision(number: u64) -> Revision {
        Revision {
            number,
            spec_hash: format!("h{number}"),
            created: "2026-12-05T00:00:00Z".parse().unwrap(),
            cause: Cause::SpecChange {
                generation: Some(1),
            },
            compose: "services: {}".into(),
            services: Default::default(),
            backups: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_revision_is_written_once_and_its_outcome_updated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let (s, now) = (stack(), chrono::Utc::now());
        store.create_revision(&s, &revision(2), now).await.unwrap();
        store.create_revision(&s, &revision(1), now).await.unwrap();
        // A second create of the same number (a pass cut off after recording) keeps the first.
        let mut other = revision(2);
        other.spec_hash = "changed".into();
        store.create_revision(&s, &other, now).await.unwrap();
        let done = Outcome {
            phase: Phase::Complete,
            since: Some(now),
        };
        store.set_outcome(&s, 2, &done).await.unwrap();
        store.set_outcome(&s, 9, &done).await.unwrap();
        let listed = store.revisions(&s).await.unwrap();
        let numbers: Vec<u64> = listed.iter().map(|r| r.revision.number).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(listed[1].revision.spec_hash, "h2");
        assert_eq!(listed[1].outcome, done);
        assert_eq!(listed[0].outcome.phase, Phase::Progressing);
    }

    #[tokio::test]
    async fn removed_revisions_are_gone_and_removing_twice_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let (s, now) = (stack(), chrono::Utc::now());
        store.create_revision(&s, &revision(1), now).await.unwrap();
        store.remove_revision(&s, 1).await.unwrap();
        store.remove_revision(&s, 1).await.unwrap();
        assert!(store.revisions(&s).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn revision_files_are_private_and_leftovers_of_a_cut_write_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let s = stack();
        store
            .create_revision(&s, &revision(1), chrono::Utc::now())
            .await
            .unwrap();
        let revisions = dir.path().join("ops/shop/revisions");
        std::fs::write(revisions.join(".tmp-k3Jx9q"), b"{half").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&revisions), 0o700);
        assert_eq!(mode(&revisions.join("1.json")), 0o600);
        assert_eq!(store.revisions(&s).await.unwrap().len(), 1);
    }
}
