//! Revisions as `ControllerRevision` objects, the way Deployments and StatefulSets keep theirs:
//! owned by the ServiceStack (deleted with it), labelled with its uid, named
//! `<stack>.<number>`. `data` holds the [`Revision`] (the API server never lets it change);
//! the annotation [`OUTCOME`] holds how it went.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use super::kube::{KubeStore, MANAGER};
use super::StoreError;
use crate::api::revision::{Outcome, Recorded, Revision};
use crate::api::ServiceStack;

/// Label holding the owning stack's uid: a stack's revisions are listed by it.
pub const STACK_UID: &str = "stackwarden.dev/stack-uid";
/// Annotation holding the revision's [`Outcome`] as JSON.
pub const OUTCOME: &str = "stackwarden.dev/outcome";

pub fn name(stack: &ServiceStack, number: u64) -> String {
    format!("{}.{number}", stack.name_any())
}

impl KubeStore {
    fn revisions_api(&self, stack: &ServiceStack) -> Api<ControllerRevision> {
        Api::namespaced(self.client(), &stack.namespace().unwrap_or_default())
    }

    pub(super) async fn list_revisions(
        &self,
        stack: &ServiceStack,
    ) -> Result<Vec<Recorded>, StoreError> {
        let uid = stack.uid().unwrap_or_default();
        let params = ListParams::default().labels(&format!("{STACK_UID}={uid}"));
        let list = self.revisions_api(stack).list(&params).await?;
        let mut out: Vec<Recorded> = list.items.iter().filter_map(parse).collect();
        out.sort_by_key(|r| r.revision.number);
        Ok(out)
    }

    pub(super) async fn post_revision(
        &self,
        stack: &ServiceStack,
        revision: &Revision,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outcome = Outcome {
            since: Some(now),
            ..Outcome::default()
        };
        let object = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name(stack, revision.number)),
                namespace: stack.namespace(),
                labels: Some([(STACK_UID.to_owned(), stack.uid().unwrap_or_default())].into()),
                annotations: Some([(OUTCOME.to_owned(), to_json(&outcome))].into()),
                owner_references: stack.controller_owner_ref(&()).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(
                serde_json::to_value(revision).expect("revisions serialize"),
            )),
            revision: i64::try_from(revision.number).unwrap_or(i64::MAX),
        };
        match self
            .revisions_api(stack)
            .create(&PostParams::default(), &object)
            .await
        {
            // Recorded by a pass that was cut off before it could write status.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    pub(super) async fn patch_outcome(
        &self,
        stack: &ServiceStack,
        number: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let patch =
            serde_json::json!({ "metadata": { "annotations": { OUTCOME: to_json(outcome) } } });
        let res = self
            .revisions_api(stack)
            .patch(
                &name(stack, number),
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await;
        gone_is_done(res.map(|_| ()))
    }

    pub(super) async fn delete_revision(
        &self,
        stack: &ServiceStack,
        number: u64,
    ) -> Result<(), StoreError> {
        let res = self
            .revisions_api(stack)
            .delete(&name(stack, number), &DeleteParams::default())
            .await;
        gone_is_done(res.map(|_| ()))
    }
}

fn gone_is_done(res: Result<(), kube::Error>) -> Result<(), StoreError> {
    match res {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map_err(StoreError::from),
    }
}

fn to_json(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).expect("outcomes serialize")
}

/// A stored revision; None for an object that is not one of ours (or that a person edited
/// into something else): it is left alone, not fatal.
fn parse(object: &ControllerRevision) -> Option<Recorded> {
    let revision: Revision = serde_json::from_value(object.data.as_ref()?.0.clone()).ok()?;
    let outcome = object
        .annotations()
        .get(OUTCOME)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    Some(Recorded { revision, outcome })
}
