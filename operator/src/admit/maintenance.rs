//! Refuses maintenance restarts and restart settings that could never work: a restart of a
//! service the compose file does not define, a schedule that does not parse, a restart budget
//! that allows no restart at all.

use crate::api::{Failure, Reason, ServiceStackSpec};
use crate::compose::Project;
use crate::decide::heal::Schedule;

/// A scheduled restart as admitted: the service it restarts, with its schedule parsed.
#[derive(Clone, Debug)]
pub struct Restart {
    pub service: String,
    pub schedule: Schedule,
}

/// Checks `spec.maintenance.restarts` against the project; returns them parsed, in spec order.
pub fn validate(spec: &ServiceStackSpec, project: &Project) -> Result<Vec<Restart>, Failure> {
    let mut restarts = Vec::with_capacity(spec.maintenance.restarts.len());
    for (i, entry) in spec.maintenance.restarts.iter().enumerate() {
        if project.service(&entry.service).is_none() {
            return Err(Failure::new(
                Reason::UnknownService,
                format!("spec.maintenance.restarts[{i}].service {:?} is not a service of the compose file", entry.service),
            ));
        }
        let schedule = Schedule::parse(entry).map_err(|e| {
            Failure::new(
                Reason::InvalidField,
                format!("spec.maintenance.restarts[{i}]: {e}"),
            )
        })?;
        restarts.push(Restart {
            service: entry.service.clone(),
            schedule,
        });
    }
    Ok(restarts)
}

/// Checks `spec.health.restart`: a zero budget would never restart, and a backoff cap below the
/// first backoff would make the cap the first wait.
pub fn restart_policy(spec: &ServiceStackSpec) -> Result<(), Failure> {
    let restart = &spec.health.restart;
    if restart.max_restarts_per_hour == 0 || restart.max_backoff_seconds < restart.backoff_seconds {
        return Err(Failure::new(
            Reason::InvalidField,
            "spec.health.restart: maxRestartsPerHour must be at least 1 and maxBackoffSeconds at least backoffSeconds",
        ));
    }
    Ok(())
}
