//! [`Store`] on the Kubernetes API, for the cluster driver (`driver/kube.rs`): status
//! is written by server-side apply with the version it was computed from (a stale view cannot
//! overwrite a newer status), events go through `events.k8s.io`.

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use super::{EventType, StackEvent, Store, StoreError};
use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::{ServiceStack, ServiceStackStatus};
use chrono::{DateTime, Utc};

/// Field manager of the status and reporting controller of events.
pub const MANAGER: &str = "stackwarden";

/// [`Store`] on the Kubernetes API.
pub struct KubeStore {
    client: Client,
    reporter: Reporter,
}

impl KubeStore {
    pub(super) fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self { client, reporter }
    }
}

#[async_trait]
impl Store for KubeStore {
    async fn write_status(
        &self,
        stack: &mut ServiceStack,
        status: ServiceStackStatus,
    ) -> Result<(), StoreError> {
        let api: Api<ServiceStack> =
            Api::namespaced(self.client.clone(), &stack.namespace().unwrap_or_default());
        // The whole status, applied: fields left out (a service removed from the compose
        // file) are dropped. The resource version makes it conditional: the API server refuses
        // it (409) if the stack changed since this pass read it.
        let patch = serde_json::json!({
            "apiVersion": ServiceStack::api_version(&()),
            "kind": ServiceStack::kind(&()),
            "metadata": {
                "name": stack.name_any(),
                "resourceVersion": stack.resource_version(),
            },
            "status": status,
        });
        let params = PatchParams::apply(MANAGER).force();
        match api
            .patch_status(&stack.name_any(), &params, &Patch::Apply(&patch))
            .await
        {
            Ok(written) => {
                stack.metadata.resource_version = written.resource_version();
                stack.status = Some(status);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
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

    async fn revisions(&self, stack: &ServiceStack) -> Result<Vec<Recorded>, StoreError> {
        self.list_revisions(stack).await
    }

    async fn create_revision(
        &self,
        stack: &ServiceStack,
        revision: &Revision,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.post_revision(stack, revision, now).await
    }

    async fn set_outcome(
        &self,
        stack: &ServiceStack,
        number: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        self.patch_outcome(stack, number, outcome).await
    }

    async fn remove_revision(&self, stack: &ServiceStack, number: u64) -> Result<(), StoreError> {
        self.delete_revision(stack, number).await
    }

    async fn record(&self, stack: &ServiceStack, event: &StackEvent) -> Result<(), StoreError> {
        let ev = Event {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.to_string(),
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
