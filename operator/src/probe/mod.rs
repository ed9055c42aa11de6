//! Probes: the runbooks' "check `/health`, `pg_isready`, `redis-cli PING`", run by the operator
//! itself against the containers of a stack.
//!
//! - [`Targets`] turns "service `backend`, container port 8000" into an address the operator can
//!   reach: the container's address on a project network (`probeAccess: Network`, for an operator
//!   on the Docker host) or the port the engine's host publishes (`probeAccess: PublishedPorts`,
//!   for an operator elsewhere).
//! - [`check`] runs one probe, bounded by its timeout, and says what failed and what to check.
//! - [`crate::admit`] refuses, before anything runs, the probe specs that could never pass.
//!
//! Probe messages go into status, events and logs, and a probe handles passwords: every value of
//! `spec.variables` is masked out of every message, in one place ([`check`]'s last step).

mod checks;
mod targets;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::api::Probe;
use crate::docker::Engine;

pub use targets::Targets;

/// Why a probe failed. Stable names: metrics and status carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeErrorKind {
    /// Nothing answered at the address (connection refused, no route, engine unreachable).
    Unreachable,
    /// No answer within `timeoutSeconds`.
    Timeout,
    /// HTTP: the status code was not the expected one.
    BadStatus,
    /// HTTP: the body is not JSON, or its field does not have the expected value.
    BadBody,
    /// PostgreSQL or Redis refused the login, or asked for a password the probe has not got.
    AuthFailed,
    /// PostgreSQL: logged in, but the database is missing or `SELECT 1` failed; Redis: `PING`
    /// did not answer `PONG`.
    QueryFailed,
    /// Exec: the command exited with a non-zero code.
    CommandFailed,
    /// The service has no running container.
    NotRunning,
    /// `probeAccess: PublishedPorts` and the probed port is not published.
    NotPublished,
    /// The probe names a service the compose file does not define.
    UnknownService,
    /// The probe itself cannot be run as written (e.g. its password variable is not defined).
    /// [`crate::admit`] rejects these before they get here.
    Misconfigured,
}

impl ProbeErrorKind {
    /// The CamelCase name, for metrics labels and status.
    pub fn name(self) -> &'static str {
        match self {
            ProbeErrorKind::Unreachable => "Unreachable",
            ProbeErrorKind::Timeout => "Timeout",
            ProbeErrorKind::BadStatus => "BadStatus",
            ProbeErrorKind::BadBody => "BadBody",
            ProbeErrorKind::AuthFailed => "AuthFailed",
            ProbeErrorKind::QueryFailed => "QueryFailed",
            ProbeErrorKind::CommandFailed => "CommandFailed",
            ProbeErrorKind::NotRunning => "NotRunning",
            ProbeErrorKind::NotPublished => "NotPublished",
            ProbeErrorKind::UnknownService => "UnknownService",
            ProbeErrorKind::Misconfigured => "Misconfigured",
        }
    }
}

impl fmt::Display for ProbeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed probe: what kind of failure, and a message saying what failed and what to check.
/// Messages that [`check`] returns never hold a value of `spec.variables`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub kind: ProbeErrorKind,
    pub message: String,
}

impl ProbeError {
    pub fn new(kind: ProbeErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// `http`, `tcp`, `postgres`, `redis` or `exec`: the probe's type, for metrics labels.
pub fn kind_name(probe: &Probe) -> &'static str {
    match probe {
        Probe::Http(_) => "http",
        Probe::Tcp(_) => "tcp",
        Probe::Postgres(_) => "postgres",
        Probe::Redis(_) => "redis",
        Probe::Exec(_) => "exec",
    }
}

/// Runs one probe of `service` (the service whose `spec.health` entry holds it; http probes
/// name their target in the URL instead). Passes with `Ok(())`.
///
/// Everything, connection included, is bounded by `timeout`; past it the probe fails with
/// [`ProbeErrorKind::Timeout`]. Passwords come from `variables` by the name the probe gives.
/// The error message never holds a value of `variables`.
pub async fn check(
    probe: &Probe,
    service: &str,
    targets: &Targets,
    variables: &BTreeMap<String, String>,
    engine: &dyn Engine,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let result = match tokio::time::timeout(
        timeout,
        checks::run(probe, service, targets, variables, engine),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(ProbeError::new(
            ProbeErrorKind::Timeout,
            format!(
                "{} gave no answer within {}: the service may be hung or overloaded; raise timeoutSeconds if it is only slow",
                checks::describe(probe, service),
                seconds(timeout)
            ),
        )),
    };
    result.map_err(|mut e| {
        e.message = mask(&e.message, variables, &password_values(probe, variables));
        e
    })
}

/// The values a probe uses as passwords: masked whatever their length.
fn password_values<'a>(probe: &Probe, variables: &'a BTreeMap<String, String>) -> Vec<&'a str> {
    let name = match probe {
        Probe::Postgres(p) => p.password_variable.as_deref(),
        Probe::Redis(r) => r.password_variable.as_deref(),
        _ => None,
    };
    name.and_then(|n| variables.get(n))
        .map(String::as_str)
        .into_iter()
        .collect()
}

pub(crate) use crate::api::mask;

/// `1 s`, `1.5 s`, `250 ms`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else if d.as_secs() > 0 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(Duration::from_secs(2)), "2 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(300)), "300 ms");
    }
}
