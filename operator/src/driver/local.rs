//! The local driver: ServiceStack manifests in files, status and events in a state directory
//! ([`LocalStore`]), the same reconcile as in a cluster. For the one VM without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{error, info, warn};

use crate::api::{condition, ConditionStatus, ConditionType, Reason, ServiceStack, Verdict};
use crate::reconcile::{self, Context};
use crate::store::local::{names, LocalStore, Problems};
use crate::store::local_inputs;
use crate::store::{private, StoreError};

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
    fn of(value: &yaml_serde::Value) -> Self {
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
    for (i, doc) in yaml_serde::Deserializer::from_str(&text).enumerate() {
        let value = yaml_serde::Value::deserialize(doc)
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
fn raw_variables(doc: &yaml_serde::Value) -> BTreeMap<String, String> {
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
                yaml_serde::Value::String(s) => s.clone(),
                yaml_serde::Value::Number(n) => n.to_string(),
                yaml_serde::Value::Bool(b) => b.to_string(),
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
    inputs: BTreeMap<Key, (crate::compose::References, local_inputs::Stamp)>,
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
            if local_inputs::stamp(refs) != *stamp {
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
            let refs = local_inputs::references(&stack, dir);
            let stamp = local_inputs::stamp(&refs);
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
