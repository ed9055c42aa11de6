//! Admission: the whole spec check in one place, beside the types it checks. A `ServiceStack`
//! goes in; one [`Admitted`] value comes out, or one [`Failure`] for the InvalidSpec condition.
//!
//! The order of the checks is the order a user fixes things in: the compose file first (parsed,
//! interpolated and translated by [`crate::compose`]), then what the rest of the spec says about
//! its services: maintenance restarts, health probes, backup targets, the restart budget. The
//! checks import the compose [`Project`] type; compose never calls them.
//!
//! Messages quote the compose file, and after interpolation the file holds the values of
//! `spec.variables` (and in local mode of the env files): every one of them is masked out of
//! the message, whichever check failed.

pub mod backup;
pub mod health;
pub mod maintenance;
pub mod rollout;
pub mod warnings;

use std::collections::BTreeMap;

pub use crate::compose::{LocalInputs, Origin};
pub use backup::{Backup, Destination, Source};
pub use maintenance::Restart;
pub use warnings::Warning;

use crate::api::{Failure, ServiceHealthSpec, ServiceStack};
use crate::compose::Project;

/// A spec that passed every check, in the shapes the later steps use.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The compose file parsed, interpolated and translated.
    pub project: Project,
    /// `spec.health.services`, each naming a service of the project, with timings and probes
    /// that can run.
    pub health: BTreeMap<String, ServiceHealthSpec>,
    /// `spec.backups` in spec order, each with its one source and one destination.
    pub backups: Vec<Backup>,
    /// `spec.maintenance.restarts` in spec order, schedules parsed.
    pub maintenance: Vec<Restart>,
    /// What is valid but risky (the SpecWarning condition), already masked.
    pub warnings: Vec<Warning>,
    /// The services whose health gates `Ready`, in start order.
    pub required: Vec<String>,
}

/// Checks a stack's whole spec. Pure: no Docker, no clock; in local mode, what the edge read
/// of env files and build contexts comes in `origin`.
pub fn admit(stack: &ServiceStack, origin: Origin<'_>) -> Result<Admitted, Failure> {
    let project = crate::compose::load_from(stack, origin)?;
    checked(stack, project).map_err(|mut e| {
        e.message = crate::api::mask(&e.message, &crate::compose::secrets(stack, origin), &[]);
        e
    })
}

/// The checks of the rest of the spec against a project that loaded.
fn checked(stack: &ServiceStack, project: Project) -> Result<Admitted, Failure> {
    let spec = &stack.spec;
    let maintenance = maintenance::validate(spec, &project)?;
    health::validate(spec, &project)?;
    let backups = backup::validate(spec, &project)?;
    maintenance::restart_policy(spec)?;
    rollout::validate_rollout(spec, &project)?;
    Ok(Admitted {
        health: spec.health.services.clone(),
        backups,
        maintenance,
        warnings: warnings::of(spec, &project),
        required: required_services(stack, &project),
        project,
    })
}

/// The names of services whose health gates `Ready`.
pub fn required_services(stack: &ServiceStack, project: &Project) -> Vec<String> {
    let optional: BTreeMap<&str, bool> = stack
        .spec
        .health
        .services
        .iter()
        .map(|(k, v)| (k.as_str(), v.optional))
        .collect();
    project
        .services
        .iter()
        .filter(|s| !optional.get(s.name.as_str()).copied().unwrap_or(false))
        .map(|s| s.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HealthSpec, Reason, ServiceHealthSpec};
    use crate::compose::tests::{stack, DEMO};

    fn load(s: &ServiceStack) -> Result<Project, Failure> {
        admit(s, Origin::Cluster).map(|a| a.project)
    }

    #[test]
    fn a_rollout_order_naming_no_service_is_refused_and_a_latency_increase_gate_admitted() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x")]);
        s.spec.rollout.order = vec!["frontend".into()];
        let err = load(&s).unwrap_err();
        assert_eq!(err.reason, Reason::UnknownService);
        assert!(
            err.message.contains("spec.rollout.order names frontend"),
            "{}",
            err.message
        );

        s.spec.rollout.order = vec!["backend".into()];
        s.spec.rollout.analysis = Some(
            serde_json::from_value(serde_json::json!({
                "services": ["backend"], "metrics": {"port": 8000},
                "latency": {"maxIncrease": 0.5},
            }))
            .unwrap(),
        );
        assert!(load(&s).is_ok());
        let analysis = s.spec.rollout.analysis.as_mut().unwrap();
        analysis.latency.as_mut().unwrap().max_increase = None;
        analysis.latency.as_mut().unwrap().max_seconds = Some(2.0);
        assert!(load(&s).is_ok());
    }

    #[test]
    fn health_must_name_real_services_and_optional_ones_do_not_gate_ready() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x")]);
        s.spec.health = HealthSpec {
            services: [("backnd".to_owned(), ServiceHealthSpec::default())].into(),
            ..Default::default()
        };
        let err = load(&s).unwrap_err();
        assert_eq!(err.reason, Reason::UnknownService);
        assert!(
            err.message.contains("spec.health.services.backnd") && err.message.contains("backend"),
            "{}",
            err.message
        );

        s.spec.health = HealthSpec {
            services: [(
                "redis".to_owned(),
                ServiceHealthSpec {
                    optional: true,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let p = load(&s).unwrap();
        assert_eq!(required_services(&s, &p), ["postgres", "backend"]);
    }

    #[test]
    fn maintenance_and_restart_settings_are_validated() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x")]);
        let entry = |svc: &str, sched: &str, tz: Option<&str>| crate::api::ScheduledRestart {
            service: svc.into(),
            schedule: sched.into(),
            time_zone: tz.map(Into::into),
        };
        for (e, reason, needle) in [
            (
                entry("backnd", "0 3 * * *", None),
                Reason::UnknownService,
                "\"backnd\"",
            ),
            (
                entry("backend", "nightly", None),
                Reason::InvalidField,
                "cron",
            ),
            (
                entry("backend", "0 3 * * *", Some("Europe/Zurch")),
                Reason::InvalidField,
                "IANA",
            ),
        ] {
            s.spec.maintenance.restarts = vec![e];
            let err = load(&s).unwrap_err();
            assert_eq!(err.reason, reason, "{}", err.message);
            assert!(
                err.message.contains(needle)
                    && err.message.contains("spec.maintenance.restarts[0]"),
                "{}",
                err.message
            );
        }
        s.spec.maintenance.restarts = vec![entry("backend", "0 3 * * *", Some("Europe/Zurich"))];
        assert!(load(&s).is_ok());
        s.spec.health.restart.max_restarts_per_hour = 0;
        assert_eq!(load(&s).unwrap_err().reason, Reason::InvalidField);
    }

    #[test]
    fn each_backup_target_comes_out_with_its_one_source_and_one_destination() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x"), ("KEY", "k"), ("SECRET", "s")]);
        s.spec.backups = serde_json::from_value(serde_json::json!([
            {"name": "pg", "postgres": {"service": "postgres", "database": "app", "user": "app"},
             "destination": {"path": "/backups"}},
            {"name": "cache", "redis": {"service": "redis"},
             "destination": {"s3": {"bucket": "b", "accessKeyIdVariable": "KEY",
                                    "secretAccessKeyVariable": "SECRET"}}}
        ]))
        .unwrap();
        let admitted = admit(&s, Origin::Cluster).unwrap();
        let [pg, cache] = &admitted.backups[..] else {
            panic!("{:?}", admitted.backups);
        };
        assert!(matches!(&pg.source, Source::Postgres(p) if p.database == "app"));
        assert_eq!(pg.destination, Destination::Path("/backups".into()));
        assert!(matches!(&cache.source, Source::Redis(r) if r.service == "redis"));
        assert!(matches!(&cache.destination, Destination::S3(d) if d.bucket == "b"));
    }

    #[test]
    fn the_admitted_value_carries_the_required_services_warnings_and_parsed_restarts() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x")]);
        s.spec.maintenance.restarts = vec![crate::api::ScheduledRestart {
            service: "backend".into(),
            schedule: "0 3 * * *".into(),
            time_zone: None,
        }];
        let admitted = admit(&s, Origin::Cluster).unwrap();
        assert_eq!(admitted.required, ["postgres", "redis", "backend"]);
        assert_eq!(admitted.maintenance.len(), 1);
        assert_eq!(admitted.maintenance[0].service, "backend");
        // DEMO binds /etc/hosts only: nothing risky.
        assert_eq!(admitted.warnings, Vec::<Warning>::new());
    }

    #[test]
    fn a_failed_check_after_the_compose_file_still_masks_every_variable_value() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x"), ("BACKEND", "s3cret-name")]);
        s.spec.health.services = [("s3cret-name".to_owned(), ServiceHealthSpec::default())].into();
        let err = admit(&s, Origin::Cluster).unwrap_err();
        assert_eq!(err.reason, Reason::UnknownService);
        assert!(!err.message.contains("s3cret-name"), "{}", err.message);
    }
}
