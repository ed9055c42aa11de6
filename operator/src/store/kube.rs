//! [`Store`] on the Kubernetes API, for the cluster driver (`driver/kube.rs`): status
//! is written by server-side apply with the version it was computed from (a stale view cannot
//! overwrite a newer status), events go through `events.k8s.io`. Variables come from Secrets,
//! and rotated values go back into them (with their stamps in an annotation).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use super::variables::Found;
use super::{
    EventType, Location, Rewrite, StackEvent, Stamp, Store, StoreError, Variable, Variables,
};
use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::{Failure, Reason, ServiceStack, ServiceStackStatus, VariablesSource};
use chrono::{DateTime, Utc};

/// Field manager of the status and reporting controller of events.
pub const MANAGER: &str = "stackwarden";

/// [`Store`] on the Kubernetes API.
pub struct KubeStore {
    client: Client,
    reporter: Reporter,
}

/// The annotation on a Secret recording when each of its keys was last rotated: one JSON object
/// of key to [`Stamp`], not an annotation per key, because an annotation's name part allows at
/// most 63 characters and must start and end with a letter or digit, which a Secret key (up
/// to 253 characters, `.`, `_` and `-` anywhere) need not.
pub const ROTATIONS: &str = "stackwarden.dev/rotations";

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

    fn secrets(&self, stack: &ServiceStack) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &stack.namespace().unwrap_or_default())
    }

    /// The Secret `name`, which `field` of the spec names (for the failure's message).
    async fn secret(&self, ns: &str, name: &str, field: &str) -> Result<Secret, Failure> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.get(name).await {
            Ok(s) => Ok(s),
            Err(kube::Error::Api(e)) if e.code == 404 => Err(Failure::new(
                Reason::SecretNotFound,
                format!("Secret {ns}/{name} named in {field} does not exist; create it or fix the name"),
            )),
            Err(e) => Err(Failure::new(
                Reason::SecretNotFound,
                format!("Secret {ns}/{name} named in {field} cannot be read ({e}); check the operator's RBAC"),
            )),
        }
    }
}

/// The Secret a source names; an env file is refused: a cluster has no directory to read it from.
fn secret_name(source: &VariablesSource) -> Result<&String, Failure> {
    match source {
        VariablesSource::SecretRef(r) => Ok(&r.name),
        VariablesSource::File(path) => Err(Failure::new(
            Reason::InvalidField,
            format!("spec.variablesFrom names the env file {path:?}, but in a cluster there is no directory to read it from; put the values in a Secret and name it instead: `variablesFrom: [{{secretRef: {{name: ...}}}}]`"),
        )),
    }
}

/// The rotation stamps the Secret's [`ROTATIONS`] annotation records.
fn rotations(secret: &Secret, name: &str) -> Result<BTreeMap<String, Stamp>, StoreError> {
    let Some(json) = secret.annotations().get(ROTATIONS) else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        path: format!("annotation {ROTATIONS} of Secret {name}"),
        source,
    })
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

    async fn referenced_variables(&self, stack: &ServiceStack) -> Result<Variables, Failure> {
        let ns = stack.namespace().unwrap_or_default();
        let mut out = Variables::new();
        for source in &stack.spec.variables_from {
            let name = secret_name(source)?;
            let secret = self.secret(&ns, name, "spec.variablesFrom").await?;
            for (key, v) in secret.data.unwrap_or_default() {
                let value = String::from_utf8(v.0).map_err(|_| {
                    Failure::new(
                        Reason::InvalidField,
                        format!("key {key} of Secret {ns}/{name} is not UTF-8 text"),
                    )
                })?;
                let location = Location::Secret {
                    name: name.clone(),
                    key: key.clone(),
                };
                out.insert(key, Variable { value, location });
            }
        }
        Ok(out)
    }

    async fn certificate_pem(
        &self,
        stack: &ServiceStack,
        source: &crate::admit::keys::CertificateSource,
    ) -> Result<Vec<u8>, String> {
        let crate::admit::keys::CertificateSource::Secret { name, key } = source else {
            return Err("a file is read in local mode only; use secretRef".into());
        };
        let ns = stack.namespace().unwrap_or_default();
        let field = "spec.keyRotation.certificates";
        let secret = self.secret(&ns, name, field).await.map_err(|f| f.message)?;
        secret
            .data
            .and_then(|mut d| d.remove(key))
            .map(|v| v.0)
            .ok_or_else(|| format!("Secret {ns}/{name} has no key {key}"))
    }

    async fn write_variable(
        &self,
        stack: &ServiceStack,
        rewrite: Rewrite<'_>,
    ) -> Result<(), StoreError> {
        let Location::Secret { name, key } = rewrite.location else {
            return Err(StoreError::Refused(format!(
                "variable {} lives in an env file, which a cluster does not have",
                rewrite.location.key()
            )));
        };
        let api = self.secrets(stack);
        let mut secret = api.get(name).await?;
        let current = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
        let mut stamps = rotations(&secret, name)?;
        let found = rewrite.found(current.as_deref());
        if found == Found::Changed {
            return Err(StoreError::Conflict);
        }
        if found == Found::Done && stamps.get(key) == Some(&rewrite.stamp) {
            return Ok(());
        }
        secret
            .data
            .get_or_insert_default()
            .insert(key.clone(), ByteString(rewrite.value.as_bytes().to_vec()));
        stamps.insert(key.clone(), rewrite.stamp);
        let stamps = serde_json::to_string(&stamps).expect("stamps serialize");
        secret.annotations_mut().insert(ROTATIONS.into(), stamps);
        // A replace carries the resourceVersion it was read at: the API server refuses it (409)
        // if another writer changed the Secret in between.
        match api.replace(name, &PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    async fn stamps(&self, stack: &ServiceStack) -> Result<BTreeMap<String, Stamp>, StoreError> {
        let api = self.secrets(stack);
        let mut out = BTreeMap::new();
        for source in &stack.spec.variables_from {
            if let VariablesSource::SecretRef(r) = source {
                out.extend(rotations(&api.get(&r.name).await?, &r.name)?);
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
