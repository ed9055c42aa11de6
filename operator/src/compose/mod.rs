//! From the compose file in a `ServiceStack` to a [`Project`]: the networks, volumes and
//! containers the stack should have, in start order, each with a config hash.
//!
//! Parsing and validation of the compose format is compose_spec's job. This module adds what the
//! operator needs on top: interpolation from `spec.variables`, a clear refusal of every key it
//! cannot honour yet (a key silently ignored is a production surprise), and a normalized
//! [`ServiceSpec`] whose hash decides when a container must be recreated.

mod interpolate;
mod model;
mod translate;

use std::collections::BTreeMap;

pub use interpolate::{interpolate, InterpolationError};
pub use model::*;

use crate::api::{Reason, ServiceStack};

/// Why a spec cannot be applied. `message` says what to change; it never holds variable values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub reason: Reason,
    pub message: String,
}

impl SpecError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// Builds the project a stack asks for. Pure: no Docker, no clock.
pub fn load(stack: &ServiceStack) -> Result<Project, SpecError> {
    let project = stack.project_name();
    validate_project_name(&project)?;
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&stack.spec.compose.file)
        .map_err(|e| SpecError::new(Reason::MalformedCompose, format!("spec.compose.file is not valid YAML: {e}")))?;
    interpolate::interpolate_value(&mut doc, &stack.spec.variables).map_err(|e| {
        let reason = match e {
            InterpolationError::Missing { .. } | InterpolationError::Required { .. } => Reason::MissingVariable,
            InterpolationError::Syntax { .. } => Reason::MalformedCompose,
        };
        SpecError::new(reason, format!("spec.compose.file: {e}"))
    })?;
    translate::check_supported_keys(&doc)?;
    let compose: compose_spec::Compose = serde_yaml::from_value(doc).map_err(|e| {
        SpecError::new(Reason::MalformedCompose, format!("spec.compose.file is not a valid compose file: {e}"))
    })?;
    let project = translate::project(&project, compose)?;
    for name in stack.spec.health.services.keys() {
        if project.service(name).is_none() {
            return Err(SpecError::new(
                Reason::UnknownService,
                format!(
                    "spec.health.services.{name} names a service the compose file does not define (it has: {}); fix the name or add the service",
                    project.service_names().join(", ")
                ),
            ));
        }
    }
    Ok(project)
}

/// The names of services whose health gates `Ready`.
pub fn required_services(stack: &ServiceStack, project: &Project) -> Vec<String> {
    let optional: BTreeMap<&str, bool> =
        stack.spec.health.services.iter().map(|(k, v)| (k.as_str(), v.optional)).collect();
    project
        .services
        .iter()
        .filter(|s| !optional.get(s.name.as_str()).copied().unwrap_or(false))
        .map(|s| s.name.clone())
        .collect()
}

/// Compose's own rule, so `docker-compose -p NAME` accepts the same name.
fn validate_project_name(name: &str) -> Result<(), SpecError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(SpecError::new(
            Reason::InvalidField,
            format!(
                "compose project name {name:?} is invalid: use lowercase letters, digits, '-' and '_', starting with a letter or digit (set spec.compose.projectName)"
            ),
        ))
    }
}
