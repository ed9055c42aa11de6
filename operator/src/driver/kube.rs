//! The cluster driver: while this process holds the leader Lease, kube-runtime's Controller
//! feeds ServiceStacks to the shared reconcile, which writes through [`KubeStore`]. A finalizer
//! runs the deletion policy before the resource disappears. A standby runs nothing but the
//! election.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt as _;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::api::ServiceStack;
use crate::reconcile::{self, Context, Wake};
use crate::store::kube::{KubeStore, MANAGER};
use crate::store::StoreError;

pub const FINALIZER: &str = "stackwarden.dev/cleanup";

/// Errors of the kube driver: the shared reconcile's, or the finalizer machinery's.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<reconcile::Error>>),
}

/// What the kube driver's reconcilers share: the reconcile context and the client the
/// finalizer patches through.
pub struct KubeContext {
    pub ctx: Arc<Context>,
    pub client: Client,
}

impl KubeContext {
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            ctx: Context::new(Arc::new(KubeStore::new(client.clone()))),
            client,
        })
    }
}

/// One reconcile through the finalizer: `Apply` converges, `Cleanup` runs the deletion policy.
pub async fn reconcile(
    stack: Arc<ServiceStack>,
    kctx: Arc<KubeContext>,
) -> Result<Action, KubeError> {
    use kube::runtime::finalizer::Error as F;
    let api: Api<ServiceStack> =
        Api::namespaced(kctx.client.clone(), &stack.namespace().unwrap_or_default());
    let ctx = &kctx.ctx;
    let key = stack.key();
    let result = finalizer(&api, FINALIZER, stack, |event| async {
        match event {
            Finalizer::Apply(s) => {
                let uid = s.uid().unwrap_or_default();
                let requeue = reconcile::reconcile(&s, &uid, ctx).await?;
                Ok(Action::requeue(requeue.0))
            }
            Finalizer::Cleanup(s) => {
                let uid = s.uid().unwrap_or_default();
                reconcile::cleanup(&s, &uid, ctx).await?;
                ctx.forget(&s.key());
                Ok(Action::await_change())
            }
        }
    })
    .await;
    match result {
        // Our view was stale (our own last write had not come back through the watch yet, or
        // another writer was first): nothing was written; the fresh copy is on its way.
        Err(F::ApplyFailed(reconcile::Error::Store(StoreError::Conflict))) => {
            debug!(stack = %key, "status conflict; looking again on a fresh copy");
            Ok(Action::requeue(CONFLICT_REQUEUE))
        }
        // A second pass over a stack already deleted (queued before the deletion was seen).
        Err(F::RemoveFinalizer(kube::Error::Api(e))) if e.code == 404 => {
            debug!(stack = %key, "already deleted");
            Ok(Action::await_change())
        }
        other => other.map_err(|e| KubeError::Finalizer(Box::new(e))),
    }
}

/// How soon a pass that met a newer version of its stack looks again.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(1);

/// Retries a failed pass; Docker trouble never gets here (it is a condition), only API and
/// cleanup failures do.
pub fn error_policy(stack: Arc<ServiceStack>, err: &KubeError, _ctx: Arc<KubeContext>) -> Action {
    error!(stack = %stack.key(), "reconcile failed: {err}");
    Action::requeue(Duration::from_secs(5))
}

/// How `stackwarden controller` runs.
pub struct ControllerOptions {
    /// Only this namespace's stacks (all when None).
    pub namespace: Option<String>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub lease: LeaseOptions,
}

/// The leader election: one Lease, held by one operator at a time.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub name: String,
    pub namespace: String,
    /// Who holds it: the pod's name in a cluster.
    pub identity: String,
    /// How long a holder that stopped renewing keeps it; a standby takes over within this.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
    /// How long a leader told to stop waits for its running backup jobs to finish.
    pub shutdown_timeout: Duration,
}

/// Runs until SIGTERM or SIGINT: waits for the Lease, leads while it holds it, stands by
/// again when it loses it. On a signal, a leader stops starting work, lets running jobs finish
/// (up to `shutdown_timeout`), and releases the Lease. A standby takes a released Lease at once
/// (it watches the Lease) and one whose holder stopped renewing when its term ends.
pub async fn run(client: Client, opts: ControllerOptions) -> anyhow::Result<()> {
    let api: Api<ServiceStack> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Fail early and clearly when the CRD is missing rather than looping on watch errors.
    api.list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list ServiceStacks ({e}); is the CRD installed? kubectl apply -f crds/"
            )
        })?;
    let kctx = KubeContext::new(client.clone());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(addr) = opts.metrics_addr {
        let (bound, server) =
            crate::metrics::serve(addr, kctx.ctx.metrics.clone(), ready.clone()).await?;
        info!(%bound, "serving /metrics, /healthz and /readyz");
        tokio::spawn(server);
    }
    let (mut leading, mut election) = elect(&client, &opts.lease).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &opts.lease.namespace);
    // A standby is ready too: it is what a rolling update waits for before stopping the leader.
    ready.store(true, std::sync::atomic::Ordering::Release);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let wakes = Arc::new(tokio::sync::Mutex::new(
        kctx.ctx.take_wakes().expect("a fresh context"),
    ));
    info!(namespace = opts.namespace.as_deref().unwrap_or("<all>"), lease = %format!("{}/{}", opts.lease.namespace, opts.lease.name), identity = %opts.lease.identity, "controller started; waiting for the Lease");
    loop {
        let released = tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break } else { false },
            () = released(leases.clone(), opts.lease.name.clone()) => true,
        };
        if released {
            // The election library's standby looks again only when the term it last saw ends:
            // a new election tries for the free Lease now.
            debug!("the Lease was released: trying for it now");
            drop(leading);
            let _ = election.await;
            (leading, election) = elect(&client, &opts.lease).await?;
            continue;
        }
        lead(&api, &kctx, &wakes, &mut leading, &shutdown, &opts.lease).await;
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Closing the channel releases the Lease (if held) and ends the election task.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), election).await {
        Ok(Ok(Ok(_))) => info!("released the Lease; stopped"),
        other => warn!("stopped; releasing the Lease did not finish ({other:?}): a standby takes over when it expires"),
    }
    Ok(())
}

type Election =
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>;

/// Starts trying for the Lease; the receiver says whether this process holds it. Dropping the
/// receiver releases the Lease if held and ends the task.
async fn elect(
    client: &Client,
    lease: &LeaseOptions,
) -> anyhow::Result<(tokio::sync::watch::Receiver<bool>, Election)> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration.as_secs())
        .with_grace(lease.grace.as_secs())
        .with_field_manager(format!("{MANAGER}-lease"))
        .build()
        .await?;
    Ok(manager.watch().await)
}

/// Ends when the Lease, held by someone, is released or deleted: what a leader that stopped
/// cleanly does. Only that transition counts, so a Lease nobody held yet (which the election
/// takes by itself) cannot restart the election over and over.
async fn released(leases: Api<Lease>, name: String) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(leases, config).default_backoff().boxed();
    let mut held = false;
    while let Some(event) = events.next().await {
        let holder = match event {
            Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => l
                .spec
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
            Ok(watcher::Event::Delete(_)) => None,
            Ok(_) => continue,
            Err(e) => {
                debug!("watching the Lease: {e}");
                continue;
            }
        };
        if held && holder.is_none() {
            return;
        }
        held = holder.is_some();
    }
    futures::future::pending().await
}

/// Leads until the Lease is lost or a shutdown is asked for.
async fn lead(
    api: &Api<ServiceStack>,
    kctx: &Arc<KubeContext>,
    wakes: &Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Wake>>>,
    leading: &mut tokio::sync::watch::Receiver<bool>,
    shutdown: &CancellationToken,
    lease: &LeaseOptions,
) {
    info!(identity = %lease.identity, "holding the Lease: leading");
    let ctx = kctx.ctx.clone();
    ctx.metrics.set_leader(true);
    let stop = CancellationToken::new();
    let controller = Controller::new(api.clone(), watcher::Config::default().any_semantic());
    let triggers = wake_refs(wakes.clone(), controller.store());
    let run = controller
        .reconcile_on(triggers)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, kctx.clone())
        .for_each(|_| futures::future::ready(()));
    tokio::pin!(run);
    let lost = async {
        let _ = leading.wait_for(|l| !*l).await;
    };
    tokio::pin!(lost);
    tokio::select! {
        _ = &mut run => warn!("the controller stopped by itself"),
        _ = &mut lost => warn!("lost the Lease: stopping all work and standing by"),
        _ = shutdown.cancelled() => {
            info!(timeout = ?lease.shutdown_timeout, "shutting down: starting no new work, waiting for running backup jobs");
            ctx.drain();
            let idle = async {
                while !ctx.backups.idle() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = &mut run => {}
                _ = &mut lost => {}
                _ = idle => info!("no backup job runs"),
                _ = tokio::time::sleep(lease.shutdown_timeout) => warn!("backup jobs still run; they are left for the next leader to recover"),
            }
        }
    }
    stop.cancel();
    run.await;
    ctx.stop_all();
    ctx.metrics.set_leader(false);
}

/// The stacks the wakes name, as the Controller's triggers: one stack by key, or every
/// cached stack on an engine.
fn wake_refs(
    wakes: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Wake>>>,
    cache: Cache<ServiceStack>,
) -> impl futures::Stream<Item = ObjectRef<ServiceStack>> + Send + 'static {
    futures::stream::unfold(wakes, |wakes| async move {
        let wake = wakes.lock().await.recv().await?;
        Some((wake, wakes))
    })
    .flat_map(move |wake| {
        let refs: Vec<ObjectRef<ServiceStack>> = match wake {
            Wake::Stack(key) => key
                .split_once('/')
                .map(|(ns, name)| ObjectRef::new(name).within(ns))
                .into_iter()
                .collect(),
            Wake::Engine(host) => cache
                .state()
                .iter()
                .filter(|s| s.spec.docker.host() == host)
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect(),
        };
        futures::stream::iter(refs)
    })
}

/// Cancels `token` on SIGTERM (what the kubelet sends) or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
    token.cancel();
}
