//! Refuses, as an InvalidSpec condition, backup targets that could never run, so a typo shows
//! up in `kubectl describe` at apply time rather than as a missing backup at 02:00.

use std::collections::BTreeSet;

use crate::api::Failure;
use crate::api::{
    BackupTarget, PostgresSource, Reason, RedisSource, S3Destination, ServiceStackSpec,
};
use crate::compose::Project;
use crate::decide::backup::schedule::SlotSchedule;

/// A backup target as admitted: the spec's target with its one source and its one destination
/// chosen, so no later step decides again which of two optional fields is set.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub target: BackupTarget,
    pub source: Source,
    pub destination: Destination,
}

/// What a target backs up: exactly one of the spec's `postgres` and `redis`.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Postgres(PostgresSource),
    Redis(RedisSource),
}

/// Where a target's backups go: exactly one of the spec's `destination.path` and `.s3`.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    /// An absolute directory on the operator's host.
    Path(String),
    S3(S3Destination),
}

/// Longest target name: it prefixes backup names and object keys, and appears in annotation
/// keys (`backup.stackwarden.dev/NAME`, whose name part allows 63 characters).
const MAX_NAME: usize = 40;

/// Checks `spec.backups` against the project.
///
/// The rules, and why:
/// - names are unique DNS labels of at most 40 characters: they become file names, object
///   keys and annotation keys;
/// - exactly one of `postgres`/`redis`, naming a service of the compose file, and exactly one
///   of `destination.path` (absolute) and `destination.s3`;
/// - every `...Variable` names an entry of `spec.variables` (the message names the variable,
///   never a value);
/// - schedules and the time zone parse; `compressionLevel` is 1 to 19; `staleAfterHours` is
///   at least 1.
pub fn validate(spec: &ServiceStackSpec, project: &Project) -> Result<Vec<Backup>, Failure> {
    let mut names = BTreeSet::new();
    let mut admitted = Vec::with_capacity(spec.backups.len());
    for (i, t) in spec.backups.iter().enumerate() {
        let here = format!("spec.backups[{i}]");
        name(&here, &t.name)?;
        if !names.insert(t.name.as_str()) {
            return Err(invalid(format!(
                "{here}.name `{}` is used by another target; names must be unique",
                t.name
            )));
        }
        let source = source(&here, t, spec, project)?;
        let destination = destination(&here, t, spec)?;
        schedules(&here, t)?;
        if !(1..=19).contains(&t.compression_level) {
            return Err(invalid(format!(
                "{here}.compressionLevel is {}; zstd levels go from 1 (fastest) to 19 (smallest)",
                t.compression_level
            )));
        }
        if t.stale_after_hours == 0 {
            return Err(invalid(format!(
                "{here}.staleAfterHours is 0; it must be at least 1"
            )));
        }
        admitted.push(Backup {
            target: t.clone(),
            source,
            destination,
        });
    }
    Ok(admitted)
}

fn invalid(message: String) -> Failure {
    Failure::new(Reason::InvalidField, message)
}

fn name(here: &str, name: &str) -> Result<(), Failure> {
    let label = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if label {
        Ok(())
    } else {
        Err(invalid(format!(
            "{here}.name `{name}` must be 1 to {MAX_NAME} lowercase letters, digits or `-`, not starting or ending with `-`"
        )))
    }
}

fn source(
    here: &str,
    t: &BackupTarget,
    spec: &ServiceStackSpec,
    project: &Project,
) -> Result<Source, Failure> {
    let source = match (&t.postgres, &t.redis) {
        (Some(pg), None) => {
            for (f, v) in [("database", &pg.database), ("user", &pg.user)] {
                if v.is_empty() {
                    return Err(invalid(format!("{here}.postgres.{f} is empty")));
                }
            }
            Source::Postgres(pg.clone())
        }
        (None, Some(r)) => Source::Redis(r.clone()),
        _ => {
            return Err(invalid(format!(
                "{here} must set exactly one of `postgres` and `redis`"
            )))
        }
    };
    let (service, password, field) = match &source {
        Source::Postgres(pg) => (&pg.service, &pg.password_variable, "postgres"),
        Source::Redis(r) => (&r.service, &r.password_variable, "redis"),
    };
    if project.service(service).is_none() {
        return Err(Failure::new(
            Reason::UnknownService,
            format!(
                "{here}.{field}.service names service `{service}`, which the compose file does not define (it has: {}); fix the name or add the service",
                project.service_names().join(", ")
            ),
        ));
    }
    if let Some(v) = password {
        variable(&format!("{here}.{field}.passwordVariable"), v, spec)?;
    }
    Ok(source)
}

fn variable(here: &str, name: &str, spec: &ServiceStackSpec) -> Result<(), Failure> {
    if spec.variables.contains_key(name) {
        Ok(())
    } else {
        Err(Failure::new(
            Reason::MissingVariable,
            format!("{here} names variable `{name}`, which spec.variables does not define; add it (or fix the name)"),
        ))
    }
}

fn destination(
    here: &str,
    t: &BackupTarget,
    spec: &ServiceStackSpec,
) -> Result<Destination, Failure> {
    match (&t.destination.path, &t.destination.s3) {
        (Some(p), None) if std::path::Path::new(p).is_absolute() => {
            Ok(Destination::Path(p.clone()))
        }
        (Some(p), None) => Err(invalid(format!(
            "{here}.destination.path `{p}` is relative; give an absolute path"
        ))),
        (None, Some(s3)) => {
            if s3.bucket.is_empty() {
                return Err(invalid(format!("{here}.destination.s3.bucket is empty")));
            }
            if let Some(e) = &s3.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(invalid(format!(
                        "{here}.destination.s3.endpoint `{e}` must start with http:// or https://"
                    )));
                }
            }
            variable(
                &format!("{here}.destination.s3.accessKeyIdVariable"),
                &s3.access_key_id_variable,
                spec,
            )?;
            variable(
                &format!("{here}.destination.s3.secretAccessKeyVariable"),
                &s3.secret_access_key_variable,
                spec,
            )?;
            Ok(Destination::S3(s3.clone()))
        }
        _ => Err(invalid(format!(
            "{here}.destination must set exactly one of `path` and `s3`"
        ))),
    }
}

fn schedules(here: &str, t: &BackupTarget) -> Result<(), Failure> {
    let tz = t.time_zone.as_deref();
    if let Some(s) = &t.schedule {
        SlotSchedule::parse(s, tz).map_err(|e| invalid(format!("{here}.schedule: {e}")))?;
    }
    if let Some(s) = t.verify.as_ref().and_then(|v| v.schedule.as_ref()) {
        SlotSchedule::parse(s, tz).map_err(|e| invalid(format!("{here}.verify.schedule: {e}")))?;
    }
    if let Some(z) = tz {
        // Also when no schedule uses it: retention's calendar does.
        z.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(format!(
                "{here}.timeZone {z:?} is not an IANA time zone name (e.g. Europe/Zurich)"
            ))
        })?;
    }
    Ok(())
}
