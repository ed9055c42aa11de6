//! [`Store`] on a state directory, for the local driver (`driver/local.rs`): status,
//! events and requests in files, for the one VM without a cluster.
//!
//! Layout of the state directory: `<state>/<namespace>/<name>/record.json` (uid, generation,
//! the spec last seen, where it came from, status) and `events.jsonl` next to it;
//! `<state>/manifests.json` holds what is wrong in the manifest files (see [`Problems`]);
//! `secrets.json` beside a record, when each variable of `spec.variablesFrom` was last rotated
//! (the values stay in the env files the manifest names).
//! Records are written to a temporary file and renamed, so a kill never leaves half a record.
//! They hold `spec.variables` (passwords): every directory is 0700 and every file 0600 (see
//! [`private`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::variables::Found;
use super::{
    private, Location, Rewrite, StackEvent, Stamp, Store, StoreError, Variable, Variables,
};
use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::{
    Failure, Reason, ServiceStack, ServiceStackSpec, ServiceStackStatus, VariablesSource,
};
use crate::env_file;

/// What the state directory remembers of a stack.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub namespace: String,
    pub name: String,
    /// Stands in for `metadata.uid`: written into container labels, so it must never change.
    /// Derived from namespace and name (see [`local_uid`]).
    pub uid: String,
    /// Stands in for `metadata.generation`: goes up when the spec changes.
    pub generation: i64,
    pub created: DateTime<Utc>,
    /// Manifest file the stack was last read from.
    pub source: PathBuf,
    pub spec: ServiceStackSpec,
    #[serde(default)]
    pub status: ServiceStackStatus,
    /// Requests from the command line (`stackwarden backup`, `stackwarden restore`), as the
    /// annotations they are in a cluster. Kept in `requests.json` beside the record, which only
    /// the command line writes, so the two processes never write the same file.
    #[serde(skip)]
    pub annotations: BTreeMap<String, String>,
}

impl Record {
    /// The ServiceStack as the reconcile sees it.
    pub fn to_stack(&self) -> ServiceStack {
        let mut s = ServiceStack::new(&self.name, self.spec.clone());
        s.metadata.namespace = Some(self.namespace.clone());
        s.metadata.uid = Some(self.uid.clone());
        s.metadata.generation = Some(self.generation);
        s.status = Some(self.status.clone());
        if !self.annotations.is_empty() {
            s.metadata.annotations = Some(self.annotations.clone());
        }
        s
    }
}

/// Beside the namespaces' directories: what is wrong in the manifest files.
const PROBLEMS_FILE: &str = "manifests.json";
/// Beside a stack's record: when each of its variables was last rotated (stamps, never values).
const STAMPS_FILE: &str = "secrets.json";

/// [`Store`] on a state directory.
#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub(super) fn dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(name)
    }

    pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub fn load(&self, namespace: &str, name: &str) -> Result<Option<Record>, StoreError> {
        let path = self.dir(namespace, name).join("record.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut r: Record =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: path.display().to_string(),
                        source,
                    })?;
                r.annotations = self.requests(namespace, name);
                Ok(Some(r))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let dir = self.dir(&record.namespace, &record.name);
        private::create_dir(&dir).map_err(Self::io(&dir))?;
        let path = dir.join("record.json");
        let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        private::write_atomic(&path, &bytes).map_err(Self::io(&path))
    }

    fn requests(&self, namespace: &str, name: &str) -> BTreeMap<String, String> {
        std::fs::read(self.dir(namespace, name).join("requests.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The problems of the manifest files as the running `stackwarden local` last saw them.
    pub fn manifest_problems(&self) -> Problems {
        std::fs::read(self.root.join(PROBLEMS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn save_manifest_problems(&self, problems: &Problems) -> Result<(), StoreError> {
        private::create_dir(&self.root).map_err(Self::io(&self.root))?;
        let path = self.root.join(PROBLEMS_FILE);
        let bytes = serde_json::to_vec_pretty(problems).expect("problems serialize");
        private::write_atomic(&path, &bytes).map_err(Self::io(&path))
    }

    /// Sets a request annotation on a stack (what `kubectl annotate` does in a cluster).
    pub fn request(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let mut requests = self.requests(namespace, name);
        requests.insert(key.to_owned(), value.to_owned());
        self.write_requests(namespace, name, &requests)
    }

    /// Removes a request annotation (what `kubectl annotate KEY-` does); whether it was there.
    pub fn withdraw(&self, namespace: &str, name: &str, key: &str) -> Result<bool, StoreError> {
        let mut requests = self.requests(namespace, name);
        if requests.remove(key).is_none() {
            return Ok(false);
        }
        self.write_requests(namespace, name, &requests)?;
        Ok(true)
    }

    fn write_requests(
        &self,
        namespace: &str,
        name: &str,
        requests: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let dir = self.dir(namespace, name);
        let path = dir.join("requests.json");
        let bytes = serde_json::to_vec_pretty(requests).expect("requests serialize");
        private::write_atomic(&path, &bytes).map_err(Self::io(&path))?;
        // Tells the running `stackwarden local` at its next poll, without it reading every
        // stack's requests twice a second.
        let stamp = self.requests_stamp();
        private::write_atomic(&stamp, Utc::now().to_rfc3339().as_bytes()).map_err(Self::io(&stamp))
    }

    /// Rewritten whenever a request is made or withdrawn.
    pub(crate) fn requests_stamp(&self) -> PathBuf {
        self.root.join("requests.stamp")
    }

    /// Takes the lock that makes one `stackwarden local` per state directory: two would both
    /// start every backup job. Held as long as the returned file lives.
    pub fn lock(&self) -> Result<Option<std::fs::File>, StoreError> {
        private::create_dir(&self.root).map_err(Self::io(&self.root))?;
        let path = self.root.join(".lock");
        let file = private::open(&path).map_err(Self::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Self::io(&path)(e)),
        }
    }

    /// Whether a `stackwarden local` runs on this state directory.
    pub fn operator_running(&self) -> bool {
        matches!(self.lock(), Ok(None))
    }

    pub fn forget(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let dir = self.dir(namespace, name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::io(&dir)(e)),
            _ => Ok(()),
        }
    }

    /// The rotation stamps of a stack's variables, from `secrets.json` beside its record.
    fn load_stamps(&self, ns: &str, name: &str) -> Result<BTreeMap<String, Stamp>, StoreError> {
        let path = self.dir(ns, name).join(STAMPS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn save_stamp(&self, stack: &ServiceStack, key: &str, stamp: &Stamp) -> Result<(), StoreError> {
        let (ns, name) = names(stack);
        let mut stamps = self.load_stamps(&ns, &name)?;
        if stamps.get(key) == Some(stamp) {
            return Ok(());
        }
        stamps.insert(key.to_owned(), stamp.clone());
        let dir = self.dir(&ns, &name);
        private::create_dir(&dir).map_err(Self::io(&dir))?;
        let path = dir.join(STAMPS_FILE);
        let bytes = serde_json::to_vec_pretty(&stamps).expect("stamps serialize");
        private::write_durable(&path, &bytes).map_err(Self::io(&path))
    }

    /// Every stack the state directory knows, sorted by namespace and name.
    pub fn list(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for ns in namespaces.flatten() {
            let Ok(names) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for name in names.flatten() {
                let (ns, name) = (
                    ns.file_name().to_string_lossy().into_owned(),
                    name.file_name().to_string_lossy().into_owned(),
                );
                if let Some(r) = self.load(&ns, &name)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }

    pub fn events(&self, namespace: &str, name: &str) -> Vec<(DateTime<Utc>, StackEvent)> {
        let path = self.dir(namespace, name).join("events.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<TimedEvent>(l).ok())
            .map(|t| (t.time, t.event))
            .collect()
    }

    /// Registers a stack read from `source`: a new uid the first time, a new generation when
    /// the spec changed. The status is kept.
    pub fn admit(
        &self,
        namespace: &str,
        name: &str,
        spec: ServiceStackSpec,
        source: &Path,
    ) -> Result<Record, StoreError> {
        let record = match self.load(namespace, name)? {
            // Unchanged: nothing to write (manifests are read twice a second).
            Some(r) if r.spec == spec && r.source == source => return Ok(r),
            Some(mut r) => {
                if r.spec != spec {
                    r.generation += 1;
                    r.spec = spec;
                }
                r.source = source.to_owned();
                r
            }
            None => Record {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: local_uid(namespace, name),
                generation: 1,
                created: Utc::now(),
                source: source.to_owned(),
                spec,
                status: Default::default(),
                annotations: BTreeMap::new(),
            },
        };
        self.save(&record)?;
        Ok(record)
    }
}

/// The env file a `spec.variablesFrom` source names (relative to the manifest's directory); a
/// Secret is refused: local mode has none.
fn env_file_of(source: &VariablesSource) -> Result<&String, Failure> {
    match source {
        VariablesSource::File(file) => Ok(file),
        VariablesSource::SecretRef(r) => Err(Failure::new(
            Reason::InvalidField,
            format!("spec.variablesFrom names Secret {:?}, but local mode has no Secrets; put the values in an env file beside the manifest (KEY=value lines, chmod 600) and name it instead: `variablesFrom: [{{file: stack.env}}]`", r.name),
        )),
    }
}

/// The variables of the env file at `path`. The failure names the file and line, never a value.
fn read_env_file(path: &Path) -> Result<Variables, Failure> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::NotFound {
            format!("env file {shown} named in spec.variablesFrom does not exist; create it (KEY=value lines, chmod 600) or fix the path (relative paths are taken from the manifest file's directory)")
        } else {
            format!("env file {shown} named in spec.variablesFrom cannot be read ({e}); check its permissions")
        };
        Failure::new(Reason::SecretNotFound, message)
    })?;
    let vars = env_file::parse(&text).map_err(|e| {
        Failure::new(
            Reason::InvalidField,
            format!("env file {shown} named in spec.variablesFrom: {e}; fix that line"),
        )
    })?;
    Ok(vars
        .into_iter()
        .map(|(key, value)| {
            let location = Location::File {
                path: path.to_owned(),
                key: key.clone(),
            };
            (key, Variable { value, location })
        })
        .collect())
}

#[derive(Serialize, Deserialize)]
struct TimedEvent {
    time: DateTime<Utc>,
    #[serde(flatten)]
    event: StackEvent,
}

/// Events kept per stack; older ones are dropped, as the API server's TTL does in a cluster.
const MAX_EVENTS: usize = 200;

#[async_trait]
impl Store for LocalStore {
    async fn write_status(
        &self,
        stack: &mut ServiceStack,
        status: ServiceStackStatus,
    ) -> Result<(), StoreError> {
        let (ns, name) = names(stack);
        // One `stackwarden local` per state directory (the lock) is the only writer of
        // records, so there is no other version to conflict with. The record may have been
        // forgotten meanwhile (stack deleted); then there is nothing to write.
        if let Some(mut r) = self.load(&ns, &name)? {
            r.status = status.clone();
            self.save(&r)?;
        }
        stack.status = Some(status);
        Ok(())
    }

    async fn referenced_variables(&self, stack: &ServiceStack) -> Result<Variables, Failure> {
        let files: Vec<&String> = stack
            .spec
            .variables_from
            .iter()
            .map(env_file_of)
            .collect::<Result<_, _>>()?;
        if files.is_empty() {
            return Ok(Variables::new());
        }
        let dir = self.manifest_dir(stack).ok_or_else(|| {
            Failure::new(
                Reason::InvalidField,
                "the stack's manifest file is not known yet; spec.variablesFrom is read on the next pass",
            )
        })?;
        let mut out = Variables::new();
        for file in files {
            out.extend(read_env_file(&dir.join(file))?);
        }
        Ok(out)
    }

    async fn write_variable(
        &self,
        stack: &ServiceStack,
        rewrite: Rewrite<'_>,
    ) -> Result<(), StoreError> {
        let Location::File { path, key } = rewrite.location else {
            return Err(StoreError::Refused(format!(
                "variable {} lives in a Secret, which local mode does not have",
                rewrite.location.key()
            )));
        };
        // The file a symlink points to is rewritten, not the symlink replaced by a copy.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let unparsable =
            |e: String| StoreError::Refused(format!("env file {}: {e}", path.display()));
        let current = env_file::get(&text, key).map_err(unparsable)?;
        match rewrite.found(current.as_deref()) {
            Found::Changed => return Err(StoreError::Conflict),
            Found::Done => {}
            Found::Expected => {
                let new = env_file::set(&text, key, rewrite.value).map_err(unparsable)?;
                private::write_durable(&path, new.as_bytes()).map_err(Self::io(&path))?;
            }
        }
        // After the value: a crash in between leaves the value written and the stamp old, which
        // the caller's retry (finding its value there) completes.
        self.save_stamp(stack, key, &rewrite.stamp)
    }

    async fn stamps(&self, stack: &ServiceStack) -> Result<BTreeMap<String, Stamp>, StoreError> {
        let (ns, name) = names(stack);
        self.load_stamps(&ns, &name)
    }

    fn manifest_dir(&self, stack: &ServiceStack) -> Option<PathBuf> {
        let (ns, name) = names(stack);
        let record = self.load(&ns, &name).ok().flatten()?;
        Some(
            record
                .source
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
        )
    }

    async fn revisions(&self, stack: &ServiceStack) -> Result<Vec<Recorded>, StoreError> {
        self.read_revisions(stack)
    }

    async fn create_revision(
        &self,
        stack: &ServiceStack,
        revision: &Revision,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.add_revision(stack, revision, now)
    }

    async fn set_outcome(
        &self,
        stack: &ServiceStack,
        number: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        self.put_outcome(stack, number, outcome)
    }

    async fn remove_revision(&self, stack: &ServiceStack, number: u64) -> Result<(), StoreError> {
        self.drop_revision(stack, number)
    }

    async fn record(&self, stack: &ServiceStack, event: &StackEvent) -> Result<(), StoreError> {
        let (ns, name) = names(stack);
        let dir = self.dir(&ns, &name);
        private::create_dir(&dir).map_err(Self::io(&dir))?;
        let path = dir.join("events.jsonl");
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.push(
            serde_json::to_string(&TimedEvent {
                time: Utc::now(),
                event: event.clone(),
            })
            .expect("events serialize"),
        );
        let skip = lines.len().saturating_sub(MAX_EVENTS);
        private::write_atomic(&path, (lines[skip..].join("\n") + "\n").as_bytes())
            .map_err(Self::io(&path))
    }
}

pub(crate) fn names(stack: &ServiceStack) -> (String, String) {
    (
        stack
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        stack.metadata.name.clone().unwrap_or_default(),
    )
}

/// The uid of a local stack, derived from its key rather than random: losing the state directory
/// must not turn the stack's own containers into strangers (they carry the uid in a label).
/// Two stacks with different names still get different uids, which is what the label is for.
pub fn local_uid(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(format!(
        "stackwarden-local/{namespace}/{name}"
    )));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Per manifest file, what is wrong in it: the file refused whole, or documents ignored or
/// invalid. Kept in `<state>/manifests.json` for `stackwarden status`.
pub type Problems = BTreeMap<PathBuf, Vec<String>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ComposeSpec;

    fn spec(file: &str) -> ServiceStackSpec {
        ServiceStackSpec {
            docker: Default::default(),
            compose: ComposeSpec {
                project_name: None,
                file: file.into(),
                adopt: false,
            },
            variables: Default::default(),
            health: Default::default(),
            deletion_policy: Default::default(),
            variables_from: Default::default(),
            rollout: Default::default(),
            key_rotation: Default::default(),
            maintenance: Default::default(),
            backups: Vec::new(),
            suspend: false,
        }
    }

    #[test]
    fn generation_moves_with_the_spec_and_the_uid_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let src = Path::new("/m/stack.yaml");
        let a = store
            .admit("ops", "shop", spec("services: {a: {image: x}}"), src)
            .unwrap();
        assert_eq!(a.generation, 1);
        let same = store
            .admit("ops", "shop", spec("services: {a: {image: x}}"), src)
            .unwrap();
        assert_eq!(same.generation, 1);
        let changed = store
            .admit("ops", "shop", spec("services: {a: {image: y}}"), src)
            .unwrap();
        assert_eq!(changed.generation, 2);
        assert_eq!(changed.uid, a.uid);

        // Losing the state directory does not change the uid the containers carry.
        store.forget("ops", "shop").unwrap();
        let again = store
            .admit("ops", "shop", spec("services: {a: {image: y}}"), src)
            .unwrap();
        assert_eq!(again.uid, a.uid);
        assert_ne!(local_uid("ops", "other"), a.uid);
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn status_and_events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let r = store
            .admit(
                "default",
                "demo",
                spec("services: {a: {image: x}}"),
                Path::new("/m"),
            )
            .unwrap();
        let mut stack = r.to_stack();
        let status = ServiceStackStatus {
            revision: Some(3),
            ..Default::default()
        };
        store.write_status(&mut stack, status).await.unwrap();
        store
            .record(
                &stack,
                &StackEvent::new(
                    crate::api::EventType::Normal,
                    crate::api::EventReason::Created,
                    "Create",
                    "n".into(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .load("default", "demo")
                .unwrap()
                .unwrap()
                .status
                .revision,
            Some(3)
        );
        assert_eq!(store.events("default", "demo")[0].1.reason, "Created");
    }

    const PW: &str = "s3cret-Zebra-90210";

    /// A stack admitted from `dir/stack.yaml` whose variables come from `dir/stack.env`.
    fn with_env_file(store: &LocalStore, dir: &Path) -> ServiceStack {
        let mut spec = spec("services: {a: {image: x}}");
        spec.variables_from = vec![VariablesSource::File("stack.env".into())];
        let record = store
            .admit("default", "demo", spec, &dir.join("stack.yaml"))
            .unwrap();
        record.to_stack()
    }

    fn stamp(version: u64) -> Stamp {
        Stamp {
            rotated_at: DateTime::UNIX_EPOCH + chrono::Duration::days(version as i64),
            version,
            reason: Some("scheduled".into()),
        }
    }

    fn pw_in(dir: &Path) -> Location {
        Location::File {
            path: dir.join("stack.env"),
            key: "PW".into(),
        }
    }

    #[tokio::test]
    async fn local_mode_refuses_variables_from_secrets_and_says_to_use_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut stack = ServiceStack::new("demo", spec("services: {a: {image: x}}"));
        assert_eq!(
            store.referenced_variables(&stack).await,
            Ok(Variables::new())
        );
        stack.spec.variables_from = vec![VariablesSource::SecretRef(crate::api::SecretRef {
            name: "db".into(),
        })];
        let err = store.referenced_variables(&stack).await.unwrap_err();
        assert_eq!(err.reason, Reason::InvalidField);
        assert!(
            err.message.contains("\"db\"") && err.message.contains("file: stack.env"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn variables_are_read_from_the_env_file_beside_the_manifest_with_where_they_live() {
        let (state, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = LocalStore::new(state.path());
        let stack = with_env_file(&store, manifests.path());
        std::fs::write(
            manifests.path().join("stack.env"),
            format!("PW='{PW}'\nUSER=app\n"),
        )
        .unwrap();
        let vars = store.referenced_variables(&stack).await.unwrap();
        assert_eq!(vars["PW"].value, PW);
        assert_eq!(vars["PW"].location, pw_in(manifests.path()));
        assert_eq!(vars["USER"].value, "app");
    }

    #[tokio::test]
    async fn a_missing_or_broken_env_file_is_named_without_its_values() {
        let (state, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = LocalStore::new(state.path());
        let stack = with_env_file(&store, manifests.path());
        let err = store.referenced_variables(&stack).await.unwrap_err();
        assert_eq!(err.reason, Reason::SecretNotFound);
        let path = manifests.path().join("stack.env");
        assert!(
            err.message.contains(&path.display().to_string()) && err.message.contains("create it"),
            "{err}"
        );
        std::fs::write(&path, format!("USER=app\nPW=\"{PW}\n")).unwrap();
        let err = store.referenced_variables(&stack).await.unwrap_err();
        assert_eq!(err.reason, Reason::InvalidField);
        assert!(
            err.message.contains("stack.env") && err.message.contains("line 2"),
            "{err}"
        );
        assert!(!err.message.contains(PW), "{err}");
    }

    #[tokio::test]
    async fn a_rotated_value_replaces_only_its_line_in_a_private_file_and_its_stamp_holds_no_value()
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let (state, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = LocalStore::new(state.path());
        let stack = with_env_file(&store, manifests.path());
        let env = manifests.path().join("stack.env");
        std::fs::write(
            &env,
            "# database\nUSER=app # who\n\nPW=old\nexport TOKEN='t'\n",
        )
        .unwrap();
        let location = pw_in(manifests.path());
        let rewrite = Rewrite {
            location: &location,
            expected: Some("old"),
            value: PW,
            stamp: stamp(1),
        };
        store.write_variable(&stack, rewrite.clone()).await.unwrap();
        let text = std::fs::read_to_string(&env).unwrap();
        assert_eq!(
            text,
            format!("# database\nUSER=app # who\n\nPW={PW}\nexport TOKEN='t'\n")
        );
        let meta = std::fs::metadata(&env).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let left: Vec<_> = std::fs::read_dir(manifests.path())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1, "a temporary file was left behind: {left:?}");
        assert_eq!(store.stamps(&stack).await.unwrap()["PW"], stamp(1));
        let stamps =
            std::fs::read_to_string(state.path().join("default/demo/secrets.json")).unwrap();
        assert!(!stamps.contains(PW) && !stamps.contains("old"), "{stamps}");

        // Done already (a retry after a crash): nothing is written again.
        store.write_variable(&stack, rewrite).await.unwrap();
        assert_eq!(
            std::fs::metadata(&env).unwrap().ino(),
            meta.ino(),
            "rewritten"
        );
        assert_eq!(
            store.referenced_variables(&stack).await.unwrap()["PW"].value,
            PW
        );
    }

    #[tokio::test]
    async fn a_rotation_over_a_value_someone_else_wrote_is_a_conflict_that_writes_nothing() {
        let (state, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = LocalStore::new(state.path());
        let stack = with_env_file(&store, manifests.path());
        let env = manifests.path().join("stack.env");
        std::fs::write(&env, "PW=edited-by-hand\n").unwrap();
        let location = pw_in(manifests.path());
        let rewrite = Rewrite {
            location: &location,
            expected: Some("old"),
            value: PW,
            stamp: stamp(2),
        };
        let err = store.write_variable(&stack, rewrite).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{err}");
        assert!(!err.to_string().contains(PW));
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            "PW=edited-by-hand\n"
        );
        assert!(store.stamps(&stack).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_new_key_is_appended_and_the_stamp_of_a_value_already_there_is_still_recorded() {
        let (state, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = LocalStore::new(state.path());
        let stack = with_env_file(&store, manifests.path());
        let env = manifests.path().join("stack.env");
        std::fs::write(&env, "USER=app").unwrap();
        let location = pw_in(manifests.path());
        let rewrite = |version| Rewrite {
            location: &location,
            expected: None,
            value: PW,
            stamp: stamp(version),
        };
        store.write_variable(&stack, rewrite(1)).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            format!("USER=app\nPW={PW}\n")
        );
        // The value written, then a crash before the stamp: the retry records the stamp.
        store.write_variable(&stack, rewrite(2)).await.unwrap();
        assert_eq!(store.stamps(&stack).await.unwrap()["PW"].version, 2);
    }

    #[tokio::test]
    async fn a_secret_location_and_a_broken_env_file_are_refused_without_values() {
        let (state, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = LocalStore::new(state.path());
        let stack = with_env_file(&store, manifests.path());
        let secret = Location::Secret {
            name: "db".into(),
            key: "PW".into(),
        };
        let rewrite = |location| Rewrite {
            location,
            expected: Some("0ld-v4lue"),
            value: PW,
            stamp: stamp(1),
        };
        let err = store
            .write_variable(&stack, rewrite(&secret))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Refused(_)), "{err}");
        std::fs::write(manifests.path().join("stack.env"), "PW='0ld-v4lue\n").unwrap();
        let file = pw_in(manifests.path());
        let err = store
            .write_variable(&stack, rewrite(&file))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("stack.env") && text.contains("line 1"),
            "{text}"
        );
        assert!(!text.contains(PW) && !text.contains("0ld-v4lue"), "{text}");
    }
}
