//! The local driver: ServiceStack manifests in files, status and events in a state directory,
//! the same reconcile as in a cluster. For the one VM without a cluster.
//!
//! Layout of the state directory: `<state>/<namespace>/<name>/record.json` (uid, generation,
//! the spec last seen, where it came from, status) and `events.jsonl` next to it;
//! `<state>/manifests.json` holds what is wrong in the manifest files (see [`Problems`]).
//! Records are written to a temporary file and renamed, so a kill never leaves half a record.
//! They hold `spec.variables` (passwords): every directory is 0700 and every file 0600 (see
//! [`private`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{private, StackEvent, Store, StoreError};
use crate::api::{
    condition, ConditionStatus, ConditionType, Reason, ServiceStack, ServiceStackSpec,
    ServiceStackStatus, Verdict,
};
use crate::reconcile::{self, Context};

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

/// [`Store`] on a state directory.
#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(name)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
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

    fn save_manifest_problems(&self, problems: &Problems) -> Result<(), StoreError> {
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
    fn requests_stamp(&self) -> PathBuf {
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

    async fn referenced_variables(
        &self,
        stack: &ServiceStack,
    ) -> Result<BTreeMap<String, String>, String> {
        match stack.spec.variables_from.first() {
            None => Ok(BTreeMap::new()),
            Some(source) => Err(format!(
                "spec.variablesFrom names Secret {:?}, but local mode has no Secrets; put the values in spec.variables (and keep the manifest file private)",
                source.secret_ref.name
            )),
        }
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

fn names(stack: &ServiceStack) -> (String, String) {
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

/// One manifest document, or why it could not be read.
#[derive(Debug)]
pub enum Manifest {
    Stack(Box<ServiceStack>),
    /// The document names a stack, but is not a valid ServiceStack.
    Invalid {
        namespace: String,
        name: String,
        error: String,
    },
    /// A document of another kind (a Deployment, a ConfigMap): nothing to reconcile, but said,
    /// since a manifest put in the wrong directory is a mistake someone wants to hear of.
    Ignored(String),
}

impl Manifest {
    /// What `stackwarden status` says of this document among its file's problems.
    fn problem(&self) -> Option<String> {
        match self {
            Manifest::Stack(_) => None,
            Manifest::Ignored(p) => Some(p.clone()),
            Manifest::Invalid {
                namespace,
                name,
                error,
            } => Some(format!(
                "{namespace}/{name} is not a valid ServiceStack: {error}; what runs of it was left as it was"
            )),
        }
    }
}

/// Per manifest file, what is wrong in it: the file refused whole, or documents ignored or
/// invalid. Kept in `<state>/manifests.json` for `stackwarden status`.
pub type Problems = BTreeMap<PathBuf, Vec<String>>;

/// The `apiVersion` of ServiceStack manifests.
const API_VERSION: &str = "stackwarden.dev/v1alpha1";

/// What a document's `kind` and `apiVersion` say it is.
enum DocumentKind {
    ServiceStack,
    /// Meant as a ServiceStack (its kind or group says so), but not spelled as one.
    Mistyped(String),
    /// Something else: `kind Deployment (apps/v1)`.
    Foreign(String),
}

impl DocumentKind {
    fn of(value: &serde_yaml::Value) -> Self {
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let (kind, api_version) = (field("kind"), field("apiVersion"));
        if kind == "ServiceStack" && api_version == API_VERSION {
            return Self::ServiceStack;
        }
        let ours = kind.eq_ignore_ascii_case("ServiceStack")
            || api_version.starts_with("stackwarden.dev/");
        let shown = |s: &str| {
            if s.is_empty() {
                "none".to_owned()
            } else {
                format!("`{s}`")
            }
        };
        if ours {
            Self::Mistyped(format!(
                "kind {} and apiVersion {}: a ServiceStack is kind `ServiceStack` in apiVersion `{API_VERSION}`; fix them",
                shown(kind),
                shown(api_version)
            ))
        } else if kind.is_empty() {
            Self::Foreign("a document without a kind".to_owned())
        } else {
            Self::Foreign(format!("kind {} ({})", shown(kind), shown(api_version)))
        }
    }
}

/// Reads every ServiceStack document from `path` (a file, or the `.yaml`/`.yml` files of a
/// directory). A file that cannot be read at all is returned as an error for that file only.
pub fn read_manifests(path: &Path) -> Vec<(PathBuf, Result<Vec<Manifest>, String>)> {
    manifest_files(path)
        .into_iter()
        .map(|f| {
            let r = read_file(&f);
            (f, r)
        })
        .collect()
}

/// The manifest files: `path` itself, or the YAML files in the directory it names.
fn manifest_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
        v.sort();
        v
    } else {
        vec![path.to_owned()]
    }
}

/// The manifest files with their sizes and modification times: what tells a pass whether any
/// of them may have changed without reading them.
type Fingerprint = Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)>;

fn fingerprint(path: &Path) -> Fingerprint {
    manifest_files(path)
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let stamp = meta.and_then(|m| Some((m.len(), m.modified().ok()?)));
            (f, stamp)
        })
        .collect()
}

fn read_file(path: &Path) -> Result<Vec<Manifest>, String> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))?;
        if value.is_null() {
            continue;
        }
        let index = i + 1;
        let meant = match DocumentKind::of(&value) {
            DocumentKind::ServiceStack => None,
            DocumentKind::Mistyped(error) => Some(error),
            DocumentKind::Foreign(what) => {
                out.push(Manifest::Ignored(format!(
                    "document {index} is {what}, not a ServiceStack, and was ignored; `stackwarden local` reads only kind ServiceStack ({API_VERSION}): move it out of the manifests"
                )));
                continue;
            }
        };
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .unwrap_or("default")
            .to_owned();
        let Some(name) = name else {
            return Err(format!(
                "{}: a ServiceStack has no metadata.name",
                path.display()
            ));
        };
        // Nothing can be recorded under a name that is no name: the file is refused whole.
        crate::api::check_names(&namespace, &name)
            .map_err(|e| format!("{}: {e}; rename the stack", path.display()))?;
        // Meant as a ServiceStack but mistyped: refused, and the stack it names kept running
        // (skipping it would delete the stack as if its manifest were gone).
        let variables = raw_variables(&value);
        let parsed = match meant {
            Some(error) => Err(error),
            None => crate::api::from_yaml_value(value),
        };
        match parsed {
            Ok(mut s) => {
                s.metadata.namespace = Some(namespace);
                out.push(Manifest::Stack(Box::new(s)));
            }
            // A type error quotes the value it choked on (`invalid type: integer `4711``),
            // which may be a variable's: the error goes to status, events and the log.
            Err(e) => out.push(Manifest::Invalid {
                namespace,
                name,
                error: crate::compose::mask(&e, &variables, &[]),
            }),
        }
    }
    Ok(out)
}

/// The values under `spec.variables` as written, whatever their YAML type, to mask them out
/// of the error of a document that does not parse.
fn raw_variables(doc: &serde_yaml::Value) -> BTreeMap<String, String> {
    let Some(vars) = doc
        .get("spec")
        .and_then(|s| s.get("variables"))
        .and_then(|v| v.as_mapping())
    else {
        return BTreeMap::new();
    };
    vars.iter()
        .filter_map(|(k, v)| {
            let value = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((format!("{k:?}"), value))
        })
        .collect()
}

/// Options of `stackwarden local`.
pub struct LocalOptions {
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
    /// Exit 0 as soon as every stack is Ready (non-zero if `timeout` passes first).
    pub exit_when_ready: bool,
    pub timeout: Option<Duration>,
    /// Where to serve /metrics, /healthz and /readyz; none for no endpoint.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Manifests are re-read this often. Polling rather than inotify: it also sees edits through
/// symlink swaps (ConfigMaps, atomic deploy tools) and on network filesystems.
const POLL: Duration = Duration::from_millis(500);

/// Runs the local driver until interrupted (or until Ready with `exit_when_ready`).
pub async fn run(opts: LocalOptions) -> anyhow::Result<()> {
    let store = LocalStore::new(&opts.state_dir);
    let Some(_lock) = store.lock()? else {
        anyhow::bail!(
            "another `stackwarden local` already runs on the state directory {}; stop it, or give this one another --state-dir",
            opts.state_dir.display()
        );
    };
    // An earlier version wrote records (which hold spec.variables) world-readable.
    match private::tighten(&opts.state_dir) {
        Ok(0) => {}
        Ok(n) => {
            info!(state = %opts.state_dir.display(), changed = n, "state directory made private to its owner (0700 directories, 0600 files)")
        }
        // Not fatal: the stacks are still better looked after than left alone.
        Err(e) => warn!(
            state = %opts.state_dir.display(),
            "cannot make the state directory private to its owner: {e}; it holds spec.variables: chown it to this user, or `chmod -R go= {}`",
            opts.state_dir.display()
        ),
    }
    let ctx = Context::new(Arc::new(store.clone()));
    ctx.metrics.set_leader(true);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _endpoints = match opts.metrics_addr {
        Some(addr) => {
            let (bound, server) =
                crate::metrics::serve(addr, ctx.metrics.clone(), ready.clone()).await?;
            info!(%bound, "serving /metrics, /healthz and /readyz");
            Some(AbortOnDrop(tokio::spawn(server)))
        }
        None => None,
    };
    let mut wakes = ctx.take_wakes().expect("a fresh context");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _signals = AbortOnDrop(tokio::spawn(super::kube::cancel_on_signal(
        shutdown.clone(),
    )));
    let started = Instant::now();
    let mut driver = Driver::default();
    info!(manifests = %opts.manifests.display(), state = %opts.state_dir.display(), "local mode started");
    loop {
        let all_ready = driver.pass(&store, &ctx, &opts.manifests).await;
        ready.store(true, std::sync::atomic::Ordering::Release);
        if opts.exit_when_ready && all_ready {
            info!("every stack is Ready");
            return Ok(());
        }
        if let Some(t) = opts.timeout {
            if started.elapsed() > t {
                anyhow::bail!(
                    "not every stack was Ready within {t:?}; run `stackwarden status` to see why"
                );
            }
        }
        let wait = driver
            .next_due()
            .map_or(POLL, |t| t.saturating_duration_since(Instant::now()))
            .min(POLL);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(wake) = wakes.recv() => driver.wake(&store, wake),
            _ = shutdown.cancelled() => {
                drain(&ctx, &store, &mut driver, &opts.manifests).await;
                info!("stopped; the stacks keep running");
                return Ok(());
            }
        }
    }
}

/// How long a stopping `stackwarden local` waits for running backup jobs.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Stops starting work and lets running backup jobs finish and be recorded, for a while.
async fn drain(ctx: &Context, store: &LocalStore, driver: &mut Driver, manifests: &Path) {
    if ctx.backups.idle() {
        return;
    }
    info!(timeout = ?SHUTDOWN_TIMEOUT, "stopping: starting no new work, waiting for running backup jobs");
    ctx.drain();
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    while !ctx.backups.idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        driver.due.values_mut().for_each(|t| *t = Instant::now());
        driver.pass(store, ctx, manifests).await;
    }
    if !ctx.backups.idle() {
        warn!("backup jobs still run; the next `stackwarden local` recovers them");
    }
    ctx.stop_all();
}

type Key = (String, String);

/// Stops a background task when the driver returns.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the local loop remembers between passes.
#[derive(Default)]
struct Driver {
    /// When each stack is next due.
    due: BTreeMap<Key, Instant>,
    /// The generation each stack was last reconciled at (a changed spec is due at once).
    generation: BTreeMap<Key, i64>,
    /// The last error reading each manifest file, so it is logged once, not every poll.
    unreadable: BTreeMap<PathBuf, String>,
    /// Deleted stacks whose cleanup failed: when to try again, how often it failed, the error.
    cleanup: BTreeMap<Key, (Instant, u32, String)>,
    /// The manifests as the last full pass saw them, and whether every stack was Ready then.
    last: Option<(Fingerprint, bool)>,
    /// The request annotations each stack was last reconciled with (a new one is due at once).
    requests: BTreeMap<Key, BTreeMap<String, String>>,
    /// The problems of the manifest files as last logged and saved (none yet: not saved).
    problems: Option<Problems>,
    /// The env files and build contexts each stack's compose file names, stamped when the
    /// stack was last reconciled: an edit to one makes the stack due, its manifest unchanged.
    inputs: BTreeMap<Key, (crate::compose::References, super::local_inputs::Stamp)>,
}

impl Driver {
    fn next_due(&self) -> Option<Instant> {
        self.due
            .values()
            .chain(self.cleanup.values().map(|(t, _, _)| t))
            .min()
            .copied()
    }

    /// Makes what a wake names due now: one stack, or every stack on an engine, among those
    /// this loop reconciles (see `pass`); another operator's stacks on the engine wake nothing.
    fn wake(&mut self, store: &LocalStore, wake: reconcile::Wake) {
        let now = Instant::now();
        let keys = match wake {
            reconcile::Wake::Stack(key) => key
                .split_once('/')
                .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
                .into_iter()
                .collect(),
            reconcile::Wake::Engine(host) => store
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.spec.docker.host() == host)
                .map(|r| (r.namespace, r.name))
                .collect::<Vec<_>>(),
        };
        for key in keys {
            if let Some(due) = self.due.get_mut(&key) {
                *due = now;
            }
        }
    }

    /// One sweep over the manifests; returns whether every known stack is Ready.
    async fn pass(&mut self, store: &LocalStore, ctx: &Context, path: &Path) -> bool {
        // Polled twice a second so that an edited manifest is seen at once; with nothing due
        // and no manifest touched, reading and parsing every manifest and state record again
        // would change nothing (and was most of an idle operator's CPU).
        let mut files = fingerprint(path);
        files.extend(fingerprint(&store.requests_stamp()));
        self.due_on_edited_inputs();
        let nothing_due = self.next_due().is_none_or(|t| t > Instant::now());
        if let Some((last, ready)) = &self.last {
            if *last == files && nothing_due && self.unreadable.is_empty() {
                return *ready;
            }
        }
        let all_ready = self.full_pass(store, ctx, path).await;
        self.last = Some((files, all_ready));
        all_ready
    }

    /// Makes due now each stack whose env files or build context changed since it was last
    /// reconciled.
    fn due_on_edited_inputs(&mut self) {
        let now = Instant::now();
        for (key, (refs, stamp)) in &self.inputs {
            if super::local_inputs::stamp(refs) != *stamp {
                self.due.insert(key.clone(), now);
            }
        }
    }

    async fn full_pass(&mut self, store: &LocalStore, ctx: &Context, path: &Path) -> bool {
        let mut seen: BTreeSet<Key> = BTreeSet::new();
        let mut valid: BTreeSet<Key> = BTreeSet::new();
        let mut unreadable: Vec<PathBuf> = Vec::new();
        let mut all_ready = true;
        let mut problems = Problems::new();
        self.unreadable.clear();
        for (file, docs) in read_manifests(path) {
            let docs = match docs {
                Ok(d) => d,
                Err(e) => {
                    let told = format!("{e}; the stacks it held are left as they are");
                    problems.insert(file.clone(), vec![told]);
                    self.unreadable.insert(file.clone(), e);
                    unreadable.push(file);
                    all_ready = false;
                    continue;
                }
            };
            for doc in docs {
                if let Some(p) = doc.problem() {
                    problems.entry(file.clone()).or_default().push(p);
                }
                let ready = self
                    .reconcile_doc(store, ctx, doc, &file, &mut seen, &mut valid)
                    .await;
                all_ready &= ready;
            }
        }
        // Due times only for the stacks reconciled from a valid manifest: one that nothing
        // reconciles (a stack now invalid, deleted or in an unreadable file) would stay in
        // the past, and the loop would spin without a pause.
        self.due.retain(|key, _| valid.contains(key));
        self.tell_problems(store, problems);
        self.inputs.retain(|key, _| valid.contains(key));
        all_ready &= self.delete_missing(store, ctx, &seen, &unreadable).await;
        all_ready
    }

    /// Logs what is new among the manifests' problems, once, and keeps them in the state
    /// directory for `stackwarden status`; a file fixed or removed drops out of both.
    fn tell_problems(&mut self, store: &LocalStore, problems: Problems) {
        if self.problems.as_ref() == Some(&problems) {
            return;
        }
        let before = self.problems.take().unwrap_or_default();
        for (file, list) in &problems {
            let old = before.get(file);
            for p in list.iter().filter(|p| old.is_none_or(|o| !o.contains(p))) {
                if self.unreadable.contains_key(file) {
                    error!(file = %file.display(), "{p}");
                } else {
                    warn!(file = %file.display(), "{p}");
                }
            }
        }
        for file in before.keys().filter(|f| !problems.contains_key(*f)) {
            info!(file = %file.display(), "{} has no problems now (fixed or removed)", file.display());
        }
        if let Err(e) = store.save_manifest_problems(&problems) {
            error!("{e}");
        }
        self.problems = Some(problems);
    }

    async fn reconcile_doc(
        &mut self,
        store: &LocalStore,
        ctx: &Context,
        doc: Manifest,
        file: &Path,
        seen: &mut BTreeSet<Key>,
        valid: &mut BTreeSet<Key>,
    ) -> bool {
        let outcome = match doc {
            // Told with the file's problems; nothing to reconcile.
            Manifest::Ignored(_) => Ok(true),
            Manifest::Invalid {
                namespace,
                name,
                error,
            } => {
                seen.insert((namespace.clone(), name.clone()));
                mark_invalid(store, &namespace, &name, &error)
                    .await
                    .map(|_| false)
            }
            Manifest::Stack(stack) => {
                seen.insert(names(&stack));
                valid.insert(names(&stack));
                self.reconcile_if_due(store, ctx, &stack, file).await
            }
        };
        outcome.unwrap_or_else(|e| {
            error!("{e}");
            false
        })
    }

    /// Stacks whose manifest is gone are deleted, as `kubectl delete` would; a stack whose
    /// file merely failed to parse is kept. A cleanup that fails is retried with backoff.
    async fn delete_missing(
        &mut self,
        store: &LocalStore,
        ctx: &Context,
        seen: &BTreeSet<Key>,
        unreadable: &[PathBuf],
    ) -> bool {
        let mut done = true;
        for record in store.list().unwrap_or_default() {
            let key = (record.namespace.clone(), record.name.clone());
            if seen.contains(&key) || unreadable.contains(&record.source) {
                self.cleanup.remove(&key);
                continue;
            }
            done = false;
            if self
                .cleanup
                .get(&key)
                .is_some_and(|(t, _, _)| *t > Instant::now())
            {
                continue;
            }
            let stack = record.to_stack();
            match reconcile::cleanup(&stack, &record.uid, ctx).await {
                Ok(()) => {
                    if let Err(e) = store.forget(&record.namespace, &record.name) {
                        error!("{e}");
                    }
                    self.due.remove(&key);
                    self.generation.remove(&key);
                    self.cleanup.remove(&key);
                    ctx.forget(&stack.key());
                    info!(stack = %stack.key(), "manifest removed: stack deleted");
                }
                Err(e) => {
                    let (failures, last) = self
                        .cleanup
                        .remove(&key)
                        .map_or((0, String::new()), |(_, n, m)| (n, m));
                    let message = e.to_string();
                    if message != last {
                        warn!(stack = %stack.key(), "deleting the stack failed, will retry with backoff: {message}");
                    }
                    let at = Instant::now() + reconcile::backoff_delay(failures + 1);
                    self.cleanup.insert(key, (at, failures + 1, message));
                }
            }
        }
        done
    }

    async fn reconcile_if_due(
        &mut self,
        store: &LocalStore,
        ctx: &Context,
        stack: &ServiceStack,
        file: &Path,
    ) -> Result<bool, StoreError> {
        let key = names(stack);
        let record = store.admit(&key.0, &key.1, stack.spec.clone(), file)?;
        let changed = self.generation.get(&key) != Some(&record.generation)
            || self.requests.get(&key) != Some(&record.annotations);
        let is_due = self.due.get(&key).is_none_or(|t| *t <= Instant::now());
        let mut status = record.status.clone();
        if changed || is_due {
            self.generation.insert(key.clone(), record.generation);
            self.requests
                .insert(key.clone(), record.annotations.clone());
            let stack = record.to_stack();
            // Stamped before the reconcile reads them: an edit in between is seen next poll.
            let dir = file.parent().unwrap_or(Path::new("."));
            let refs = crate::compose::references(&stack, dir);
            let stamp = super::local_inputs::stamp(&refs);
            self.inputs.insert(key.clone(), (refs, stamp));
            match reconcile::reconcile(&stack, &record.uid, ctx).await {
                Ok(r) => {
                    self.due.insert(key.clone(), Instant::now() + r.0);
                }
                Err(e) => {
                    error!(stack = %stack.key(), "{e}");
                    self.due
                        .insert(key.clone(), Instant::now() + Duration::from_secs(5));
                }
            }
            status = store
                .load(&key.0, &key.1)?
                .map(|r| r.status)
                .unwrap_or_default();
        }
        Ok(condition::find(&status.conditions, ConditionType::Ready)
            .is_some_and(|c| c.status == ConditionStatus::True))
    }
}

/// A manifest that names a stack but does not parse: the stack keeps running, its status says why.
async fn mark_invalid(
    store: &LocalStore,
    namespace: &str,
    name: &str,
    error: &str,
) -> Result<(), StoreError> {
    // Logged, and shown by `stackwarden status`, with its file's problems.
    let Some(mut record) = store.load(namespace, name)? else {
        return Ok(());
    };
    let message = format!("the manifest is not a valid ServiceStack: {error}; the running containers were left as they were");
    let verdicts = vec![
        Verdict::new(
            ConditionType::InvalidSpec,
            ConditionStatus::True,
            Reason::InvalidField,
            message.clone(),
        ),
        Verdict::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::InvalidField,
            "the spec is invalid (see InvalidSpec)",
        ),
    ];
    let before = record.status.conditions.clone();
    record.status.conditions =
        condition::merge(&before, verdicts, Some(record.generation), Utc::now());
    if record.status.conditions != before {
        store.save(&record)?;
    }
    Ok(())
}

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
            maintenance: Default::default(),
            backups: Vec::new(),
            suspend: false,
        }
    }

    #[test]
    fn a_wake_makes_due_only_a_stack_this_loop_reconciles() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut driver = Driver::default();
        driver.wake(&store, reconcile::Wake::Stack("other/foreign".into()));
        assert_eq!(driver.next_due(), None, "another operator's stack");
        let mine = ("ops".to_owned(), "shop".to_owned());
        driver
            .due
            .insert(mine.clone(), Instant::now() + Duration::from_secs(30));
        driver.wake(&store, reconcile::Wake::Stack("ops/shop".into()));
        assert!(driver.due[&mine] <= Instant::now());
    }

    #[tokio::test]
    async fn a_stack_gone_invalid_is_no_longer_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("state"));
        let ctx = Context::new(Arc::new(store.clone()));
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::write(
            manifests.join("a.yaml"),
            "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: shop, namespace: ops}\nspec: {compose: {file: x}, typo: 1}\n",
        )
        .unwrap();
        let mut driver = Driver::default();
        // Reconciled while it was valid; a wake then put its due time in the past.
        driver
            .due
            .insert(("ops".to_owned(), "shop".to_owned()), Instant::now());
        driver.pass(&store, &ctx, &manifests).await;
        assert_eq!(driver.next_due(), None, "nothing reconciles it now");
    }

    #[test]
    fn a_manifest_naming_a_stack_the_api_server_would_refuse_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(
            &file,
            "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: Démo}\nspec: {compose: {file: x}}\n",
        )
        .unwrap();
        let Err(e) = read_file(&file) else {
            panic!("accepted");
        };
        assert!(
            e.contains("metadata.name") && e.contains("rename the stack"),
            "{e}"
        );
    }

    #[test]
    fn a_mistyped_kind_or_api_version_keeps_its_stack_and_a_foreign_kind_is_ignored_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(
            &file,
            "apiVersion: stackwarden.dev/v1\nkind: ServiceStack\nmetadata: {name: one}\nspec: {compose: {file: x}}\n---\n\
             apiVersion: stackwarden.dev/v1alpha1\nkind: Servicestack\nmetadata: {name: two}\nspec: {compose: {file: x}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n\
             just: a map\n",
        )
        .unwrap();
        let docs = read_file(&file).unwrap();
        let problems: Vec<String> = docs.iter().filter_map(Manifest::problem).collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        for (i, name) in [(0, "default/one"), (1, "default/two")] {
            assert!(
                matches!(&docs[i], Manifest::Invalid { .. }),
                "{:?}",
                docs[i]
            );
            assert!(
                problems[i].contains(name) && problems[i].contains(API_VERSION),
                "{}",
                problems[i]
            );
        }
        assert!(
            problems[2].contains("kind `Deployment` (`apps/v1`)"),
            "{}",
            problems[2]
        );
        assert!(problems[3].contains("without a kind"), "{}", problems[3]);
        assert_eq!(
            API_VERSION,
            <ServiceStack as kube::Resource>::api_version(&()),
            "the manifests' apiVersion is the CRD's"
        );
    }

    #[test]
    fn a_variable_value_in_a_parse_error_is_masked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(
            &file,
            "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: one}\nspec: {compose: {file: x}, variables: {PW: secret-pw, PIN: 4711}}\n",
        )
        .unwrap();
        let docs = read_file(&file).unwrap();
        let p = docs[0].problem().unwrap();
        assert!(!p.contains("4711") && !p.contains("secret-pw"), "{p}");
        assert!(p.contains("<redacted>"), "the error quoted no value: {p}");
    }

    #[tokio::test]
    async fn file_problems_are_saved_once_per_change_and_cleared_when_the_file_is_fixed_or_removed()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("state"));
        let ctx = Context::new(Arc::new(store.clone()));
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let (bad, foreign) = (manifests.join("bad.yaml"), manifests.join("web.yaml"));
        std::fs::write(&bad, "kind: ServiceStack\nmetadata: {name: [\n").unwrap();
        std::fs::write(&foreign, "apiVersion: apps/v1\nkind: Deployment\n").unwrap();
        let mut driver = Driver::default();
        driver.pass(&store, &ctx, &manifests).await;
        let problems = store.manifest_problems();
        assert_eq!(problems.keys().collect::<Vec<_>>(), vec![&bad, &foreign]);
        assert!(problems[&bad][0].contains("not valid YAML"), "{problems:?}");
        assert!(problems[&foreign][0].contains("Deployment"), "{problems:?}");
        let text = crate::cli::problems_text(&problems);
        assert!(text.contains(&bad.display().to_string()) && text.contains("Deployment"));

        std::fs::remove_file(&foreign).unwrap();
        std::fs::write(&bad, "# fixed: nothing here yet\n").unwrap();
        driver.pass(&store, &ctx, &manifests).await;
        assert_eq!(store.manifest_problems(), Problems::new());
        assert_eq!(crate::cli::problems_text(&store.manifest_problems()), "");
    }

    #[tokio::test]
    async fn a_pass_with_nothing_due_and_no_manifest_touched_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = LocalStore::new(&state);
        let ctx = Context::new(Arc::new(store.clone()));
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let file = manifests.join("a.yaml");
        // An engine that refuses at once: the stack is recorded, then backs off.
        let text = "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: shop, namespace: ops}\nspec: {compose: {file: 'services: {a: {image: x}}'}, docker: {host: 'tcp://127.0.0.1:1'}}\n";
        std::fs::write(&file, text).unwrap();
        let mut driver = Driver::default();
        driver.pass(&store, &ctx, &manifests).await;
        assert!(store.load("ops", "shop").unwrap().is_some());
        assert!(driver.next_due().is_some_and(|t| t > Instant::now()));

        std::fs::remove_dir_all(&state).unwrap();
        driver.pass(&store, &ctx, &manifests).await;
        assert!(
            store.load("ops", "shop").unwrap().is_none(),
            "the manifests were read and the stack admitted again"
        );

        std::fs::write(&file, format!("{text}# edited\n")).unwrap();
        driver.pass(&store, &ctx, &manifests).await;
        assert!(
            store.load("ops", "shop").unwrap().is_some(),
            "an edited manifest was not read"
        );
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
                    crate::store::EventType::Normal,
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

    #[tokio::test]
    async fn local_mode_refuses_variables_from_secrets_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut stack = ServiceStack::new("demo", spec("services: {a: {image: x}}"));
        assert_eq!(
            store.referenced_variables(&stack).await,
            Ok(BTreeMap::new())
        );
        stack.spec.variables_from = vec![crate::api::VariablesSource {
            secret_ref: crate::api::SecretRef { name: "db".into() },
        }];
        let err = store.referenced_variables(&stack).await.unwrap_err();
        assert!(
            err.contains("\"db\"") && err.contains("spec.variables"),
            "{err}"
        );
    }

    #[test]
    fn manifests_are_read_per_document_and_bad_ones_keep_their_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: one, namespace: ops}\nspec: {compose: {file: 'services: {}'}}\n---\n\
             apiVersion: stackwarden.dev/v1alpha1\nkind: ServiceStack\nmetadata: {name: two}\nspec: {compose: {file: x}, typo: 1}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            "kind: ServiceStack\nmetadata: {name: [\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let files = read_manifests(dir.path());
        assert_eq!(files.len(), 2, "only .yaml and .yml files are read");
        let docs = files[0].1.as_ref().unwrap();
        assert_eq!(docs.len(), 3);
        match &docs[2] {
            Manifest::Ignored(p) => assert!(
                p.contains("document 3") && p.contains("`ConfigMap`") && p.contains("move it out"),
                "{p}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&docs[0], Manifest::Stack(s) if s.metadata.namespace.as_deref() == Some("ops"))
        );
        match &docs[1] {
            Manifest::Invalid {
                namespace,
                name,
                error,
            } => {
                assert_eq!((namespace.as_str(), name.as_str()), ("default", "two"));
                assert!(error.contains("typo"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(files[1].1.as_ref().unwrap_err().contains("not valid YAML"));
    }
}
