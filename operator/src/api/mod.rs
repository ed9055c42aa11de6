//! The `ServiceStack` resource (`stackwarden.dev/v1alpha1`): what a user declares and what the
//! operator reports back. Every field carries a doc comment because it becomes the
//! `kubectl explain` text.

pub mod condition;

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use condition::{Condition, ConditionStatus, ConditionType, Reason, Verdict};

/// Docker engine used when `spec.docker.host` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// A Docker Compose stack that stackwarden brings up on a Docker engine and keeps running.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stackwarden.dev",
    version = "v1alpha1",
    kind = "ServiceStack",
    plural = "servicestacks",
    shortname = "sst",
    namespaced,
    status = "ServiceStackStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStackSpec {
    /// The Docker engine the stack runs on. Defaults to the local socket.
    #[serde(default)]
    pub docker: DockerSpec,

    /// The Docker Compose project: its name and the compose file itself.
    pub compose: ComposeSpec,

    /// Values for `${VAR}`, `${VAR:-default}` and the other interpolation forms in the compose
    /// file. The operator's own environment is never consulted, so a stack means the same thing
    /// wherever it is reconciled. Values may be secrets: they never appear in status, events or logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,

    /// Which services must be healthy for the stack to be Ready.
    #[serde(default, skip_serializing_if = "HealthSpec::is_empty")]
    pub health: HealthSpec,

    /// What deleting this ServiceStack does to its containers, networks and volumes.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// When true, the operator only observes and reports: it creates, starts and removes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Where the Docker engine is.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerSpec {
    /// Engine address: `unix:///path/to/docker.sock` or `tcp://host:2375`.
    /// Defaults to `unix:///var/run/docker.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl DockerSpec {
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or(DEFAULT_DOCKER_HOST)
    }
}

/// The compose project.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComposeSpec {
    /// Compose project name: prefixes container, network and volume names, and is what
    /// `docker-compose -p NAME ps` takes. Defaults to the ServiceStack's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,

    /// The docker-compose.yml, verbatim.
    pub file: String,
}

/// Health requirements per service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSpec {
    /// Per compose service; every key must name a service of the compose file.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceHealthSpec>,
}

impl HealthSpec {
    fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Health requirements of one service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceHealthSpec {
    /// When true, this service being stopped or unhealthy does not make the stack un-Ready
    /// (a one-shot job, a debugging sidecar). Its state is still reported.
    #[serde(default)]
    pub optional: bool,
}

/// What deleting the ServiceStack removes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove containers and networks; keep named volumes (the data).
    #[default]
    Retain,
    /// Remove containers, networks and named volumes. The data is gone.
    Delete,
    /// Remove nothing: the containers keep running, unmanaged.
    Orphan,
}

/// What the operator observed and concluded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStackStatus {
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Number of the applied configuration; goes up by one each time the operator applies a
    /// changed compose file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,

    /// Hash of the compose project that `revision` numbers. With it a restarted operator tells
    /// a changed spec from an unchanged one, so revision numbers never repeat or go back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,

    /// One-word summary of the services: Healthy, Progressing, Unhealthy or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<StackHealth>,

    /// The compose project name in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,

    /// State of each service's container, as Docker reports it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceStatus>,

    /// Standard conditions: Ready, Progressing, InvalidSpec, DockerUnreachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One-word stack health for the HEALTH column.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StackHealth {
    Healthy,
    Progressing,
    Unhealthy,
    Unknown,
}

/// The observed state of one service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Container state: running, exited, restarting, created, paused, dead, or missing.
    pub state: ContainerState,
    /// Docker healthcheck status (healthy, unhealthy, starting); absent without a healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ContainerHealth>,
    /// Image the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Short container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Exit code of the last run, when the container is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// How many times Docker restarted the container (its restart policy).
    #[serde(default)]
    pub restarts: i64,
}

/// Container state as Docker names it, plus `missing` when there is no container.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Running,
    Exited,
    Restarting,
    Created,
    Paused,
    Dead,
    Removing,
    #[default]
    Missing,
}

/// Docker healthcheck status.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

impl ServiceStack {
    /// The compose project name: `spec.compose.projectName`, else the resource name.
    pub fn project_name(&self) -> String {
        self.spec
            .compose
            .project_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// `namespace/name`, the key used in logs, the local store and container labels.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

/// The CRD as YAML, exactly what `stackwarden crd` prints and `crds/servicestack.yaml` holds.
pub fn crd_yaml() -> String {
    let mut crd = serde_json::to_value(ServiceStack::crd()).expect("CRD serializes");
    strip_additional_properties_false(&mut crd);
    serde_yaml::to_string(&crd).expect("CRD renders as YAML")
}

/// `deny_unknown_fields` makes schemars emit `additionalProperties: false`, which a structural
/// CRD schema may not contain. The API server rejects unknown fields on its own (strict field
/// validation, the `kubectl` default), so the schema can drop it without losing anything.
fn strip_additional_properties_false(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            map.values_mut().for_each(strip_additional_properties_false);
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(strip_additional_properties_false)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let yaml = r#"
apiVersion: stackwarden.dev/v1alpha1
kind: ServiceStack
metadata: {name: demo}
spec:
  compose: {file: "services: {}"}
  backupz: {}
"#;
        let err = serde_yaml::from_str::<ServiceStack>(yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `backupz`"), "{err}");
    }

    #[test]
    fn crd_schema_is_structural_and_documented() {
        let yaml = crd_yaml();
        assert!(!yaml.contains("additionalProperties: false"));
        let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        // Every property of the spec has a description, recursively, so `kubectl explain` helps.
        fn check(path: &str, schema: &serde_json::Value) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    let here = format!("{path}.{name}");
                    assert!(
                        sub.get("description").is_some(),
                        "{here} has no description"
                    );
                    check(&here, sub);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(sub) = schema.get(key) {
                    check(path, sub);
                }
            }
        }
        check("spec", spec);
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "sst");
        let columns = &crd["spec"]["versions"][0]["additionalPrinterColumns"];
        let names: Vec<_> = columns
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Ready", "Health", "Revision", "Age"]);
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
}
