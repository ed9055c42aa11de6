//! The cluster driver: kube-runtime's Controller feeds ServiceStacks to the shared reconcile;
//! status goes through the status subresource, events through kube's recorder, and a
//! finalizer runs the deletion policy before the resource disappears.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{error, info};

use super::{EventType, StackEvent, Store, StoreError};
use crate::api::{ServiceStack, ServiceStackStatus};
use crate::controller::{self, Context};

pub const FINALIZER: &str = "stackwarden.dev/cleanup";
const MANAGER: &str = "stackwarden";

/// [`Store`] on the Kubernetes API.
pub struct KubeStore {
    client: Client,
    reporter: Reporter,
}

impl KubeStore {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self { client, reporter }
    }
}

/// A JSON merge patch from `previous` to `new`: `new`, plus `null` for every key `previous`
/// had and `new` lacks. A plain merge patch would keep those keys forever (a service removed
/// from the compose file would stay in `status.services`).
fn merge_patch(previous: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (previous, new) {
        (Value::Object(p), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                out.insert(
                    k.clone(),
                    p.get(k).map_or_else(|| v.clone(), |pv| merge_patch(pv, v)),
                );
            }
            for k in p.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        (_, n) => n.clone(),
    }
}

#[async_trait]
impl Store for KubeStore {
    async fn write_status(
        &self,
        stack: &ServiceStack,
        status: &ServiceStackStatus,
    ) -> Result<(), StoreError> {
        let api: Api<ServiceStack> =
            Api::namespaced(self.client.clone(), &stack.namespace().unwrap_or_default());
        let previous = serde_json::to_value(stack.status.clone().unwrap_or_default())
            .expect("status serializes");
        let patch = serde_json::json!({ "status": merge_patch(&previous, &serde_json::to_value(status).expect("status serializes")) });
        api.patch_status(
            &stack.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn referenced_variables(
        &self,
        stack: &ServiceStack,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let ns = stack.namespace().unwrap_or_default();
        let api: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &ns);
        let mut out = std::collections::BTreeMap::new();
        for source in &stack.spec.variables_from {
            let name = &source.secret_ref.name;
            let secret = match api.get(name).await {
                Ok(s) => s,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    return Err(format!("Secret {ns}/{name} named in spec.variablesFrom does not exist; create it or fix the name"))
                }
                Err(e) => return Err(format!("Secret {ns}/{name} named in spec.variablesFrom cannot be read ({e}); check the operator's RBAC")),
            };
            for (k, v) in secret.data.unwrap_or_default() {
                let text = String::from_utf8(v.0)
                    .map_err(|_| format!("key {k} of Secret {ns}/{name} is not UTF-8 text"))?;
                out.insert(k, text);
            }
        }
        Ok(out)
    }

    async fn record(&self, stack: &ServiceStack, event: &StackEvent) -> Result<(), StoreError> {
        let ev = Event {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.note.clone()),
            action: event.action.clone(),
            secondary: None,
        };
        // A fresh recorder each time: its cache folds events with the same reason into one
        // series and keeps the first note, so a second, different problem with the same reason
        // would be shown with the first one's text. Repeats are already suppressed upstream
        // (events are published on transitions and actions only).
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(&ev, &stack.object_ref(&()))
            .await?;
        Ok(())
    }
}

/// Errors of the kube driver: the shared reconcile's, or the finalizer machinery's.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<controller::Error>>),
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
    let api: Api<ServiceStack> =
        Api::namespaced(kctx.client.clone(), &stack.namespace().unwrap_or_default());
    let ctx = &kctx.ctx;
    finalizer(&api, FINALIZER, stack, |event| async {
        match event {
            Finalizer::Apply(s) => {
                let uid = s.uid().unwrap_or_default();
                let requeue = controller::reconcile(&s, &uid, ctx).await?;
                Ok(Action::requeue(requeue.0))
            }
            Finalizer::Cleanup(s) => {
                let uid = s.uid().unwrap_or_default();
                controller::cleanup(&s, &uid, ctx).await?;
                ctx.forget(&s.key());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| KubeError::Finalizer(Box::new(e)))
}

/// Retries a failed pass; Docker trouble never gets here (it is a condition), only API and
/// cleanup failures do.
pub fn error_policy(stack: Arc<ServiceStack>, err: &KubeError, _ctx: Arc<KubeContext>) -> Action {
    error!(stack = %stack.name_any(), "reconcile failed: {err}");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until a shutdown signal.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let api: Api<ServiceStack> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Fail early and clearly when the CRD is missing rather than looping on watch errors.
    api.list(&Default::default()).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot list ServiceStacks ({e}); is the CRD installed? kubectl apply -f crds/"
        )
    })?;
    let ctx = KubeContext::new(client);
    if let Some(addr) = metrics_addr {
        // Ready as soon as the API answered the list above: the controller can do its work.
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (bound, server) = crate::metrics::serve(addr, ctx.ctx.metrics.clone(), ready).await?;
        info!(%bound, "serving /metrics, /healthz and /readyz");
        tokio::spawn(server);
    }
    info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controller started"
    );
    let triggers = futures::stream::select(
        docker_changes(
            ctx.ctx.engines.clone(),
            crate::api::DEFAULT_DOCKER_HOST.to_owned(),
        ),
        futures::stream::unfold(ctx.ctx.wake.clone(), |w| async move {
            w.notified().await;
            Some(((), w))
        }),
    );
    Controller::new(api, watcher::Config::default().any_semantic())
        .reconcile_all_on(triggers)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    Ok(())
}

/// One item per change to a managed container on `host` (die, start, health status...), so
/// crashes are acted on at once rather than at the next requeue. The stream resubscribes after a
/// break, and yields once then too: events may have been missed, so everything is looked at.
/// Stacks on other engines are covered by their requeue.
fn docker_changes(
    engines: crate::docker::Engines,
    host: String,
) -> impl futures::Stream<Item = ()> + Send {
    type Changes = futures::stream::BoxStream<'static, Result<String, crate::docker::EngineError>>;
    futures::stream::unfold(
        (engines, host, None::<Changes>),
        |(engines, host, mut current)| async move {
            loop {
                let stream = match current.as_mut() {
                    Some(s) => s,
                    None => match engines.get(&host).await {
                        Ok(engine) => current.insert(engine.container_changes()),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            continue;
                        }
                    },
                };
                return match stream.next().await {
                    Some(Ok(_)) => Some(((), (engines, host, current))),
                    Some(Err(_)) | None => Some(((), (engines, host, None))),
                };
            }
        },
    )
}
