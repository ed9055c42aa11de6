//! Refuses, as an InvalidSpec condition, the health specs whose probes could never pass or whose
//! timings make no sense, so the user learns it from `kubectl describe` before anything runs,
//! rather than from a service restarted for a typo.

use crate::api::Failure;
use crate::api::{HttpProbe, Probe, ProbeAccess, Reason, ServiceHealthSpec, ServiceStackSpec};
use crate::compose::Project;

/// Checks `spec.health` against the project the compose file gave.
///
/// The rules, and why:
/// - `periodSeconds`, `timeoutSeconds`, `failureThreshold`, `successThreshold` are at least 1:
///   a zero period would probe in a busy loop, a zero timeout fail every probe, a zero threshold
///   mark a service unhealthy (or healthy) without a single probe.
/// - `timeoutSeconds` is at most `periodSeconds`: a probe that may outlast its period makes
///   rounds overlap (or the period silently stretch), and then `failureThreshold × periodSeconds`
///   no longer bounds how long a failure goes unnoticed. Equal is allowed: with whole seconds,
///   the 1 s period the runbooks' fast checks use leaves no shorter timeout.
/// - An http URL parses, is http or https, carries no credentials (the URL is quoted in status
///   messages), and its host is a service of the compose file: the operator maps service names
///   to addresses itself and resolves nothing else.
/// - A `passwordVariable` names an entry of `spec.variables` (the message names the variable,
///   never a value); user and database are not empty.
/// - An exec command is not empty.
/// - Ports are not 0, and with `probeAccess: PublishedPorts` every probed port is published by
///   its service (`ports:` in the compose file), or the probe could never connect.
pub fn validate(spec: &ServiceStackSpec, project: &Project) -> Result<(), Failure> {
    validate_unmasked(spec, project).map_err(|mut e| {
        e.message = crate::api::mask(&e.message, &spec.variables, &[]);
        e
    })
}

fn validate_unmasked(spec: &ServiceStackSpec, project: &Project) -> Result<(), Failure> {
    for (service, health) in &spec.health.services {
        let here = format!("spec.health.services.{service}");
        if project.service(service).is_none() {
            return Err(unknown_service(&here, service, project));
        }
        timings(&here, health)?;
        for (i, probe) in health.probes.iter().enumerate() {
            let here = format!("{here}.probes[{i}].{}", crate::probe::kind_name(probe));
            let target = probe_target(&here, probe, service, spec, project)?;
            if let (Some((target_service, port)), ProbeAccess::PublishedPorts) =
                (target, spec.health.probe_access)
            {
                published(&here, &target_service, port, project)?;
            }
        }
    }
    Ok(())
}

fn invalid(message: String) -> Failure {
    Failure::new(Reason::InvalidField, message)
}

fn unknown_service(here: &str, service: &str, project: &Project) -> Failure {
    Failure::new(
        Reason::UnknownService,
        format!(
            "{here} names service `{service}`, which the compose file does not define (it has: {}); fix the name or add the service",
            project.service_names().join(", ")
        ),
    )
}

fn timings(here: &str, h: &ServiceHealthSpec) -> Result<(), Failure> {
    for (field, value) in [
        ("periodSeconds", h.period_seconds),
        ("timeoutSeconds", h.timeout_seconds),
        ("failureThreshold", h.failure_threshold),
        ("successThreshold", h.success_threshold),
    ] {
        if value < 1 {
            return Err(invalid(format!(
                "{here}.{field} is {value}; it must be at least 1"
            )));
        }
    }
    if h.timeout_seconds > h.period_seconds {
        return Err(invalid(format!(
            "{here}.timeoutSeconds ({}) is longer than periodSeconds ({}): probes would overlap; make the timeout at most the period",
            h.timeout_seconds, h.period_seconds
        )));
    }
    Ok(())
}

/// Checks one probe; returns the service and container port it connects to (none for exec).
fn probe_target(
    here: &str,
    probe: &Probe,
    service: &str,
    spec: &ServiceStackSpec,
    project: &Project,
) -> Result<Option<(String, u16)>, Failure> {
    match probe {
        Probe::Http(p) => http_target(here, p, project).map(Some),
        Probe::Tcp(p) => Ok(Some((
            service.to_owned(),
            port(here, "port", Some(p.port), 0)?,
        ))),
        Probe::Postgres(p) => {
            not_empty(here, "user", &p.user)?;
            not_empty(here, "database", &p.database)?;
            password(here, &p.password_variable, spec)?;
            Ok(Some((
                service.to_owned(),
                port(here, "port", p.port, 5432)?,
            )))
        }
        Probe::Redis(p) => {
            password(here, &p.password_variable, spec)?;
            Ok(Some((
                service.to_owned(),
                port(here, "port", p.port, 6379)?,
            )))
        }
        Probe::Exec(p) => {
            if p.command.first().is_none_or(|c| c.trim().is_empty()) {
                return Err(invalid(format!(
                    "{here}.command is empty; give the command and its arguments, e.g. [pg_isready, -q]"
                )));
            }
            Ok(None)
        }
    }
}

/// A probe's port, or its default when none is given; 0 is refused.
fn port(here: &str, field: &str, port: Option<u16>, default: u16) -> Result<u16, Failure> {
    match port {
        Some(0) => Err(invalid(format!(
            "{here}.{field} is 0; give a container port"
        ))),
        Some(p) => Ok(p),
        None => Ok(default),
    }
}

fn password(here: &str, name: &Option<String>, spec: &ServiceStackSpec) -> Result<(), Failure> {
    match name {
        Some(name) if !spec.variables.contains_key(name) => Err(invalid(format!(
            "{here}.passwordVariable names `{name}`, which spec.variables does not define (it has: {}); add it or fix the name",
            if spec.variables.is_empty() {
                "no variables".to_owned()
            } else {
                spec.variables.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ))),
        _ => Ok(()),
    }
}

fn not_empty(here: &str, field: &str, value: &str) -> Result<(), Failure> {
    if value.trim().is_empty() {
        Err(invalid(format!("{here}.{field} is empty")))
    } else {
        Ok(())
    }
}

/// Checks an http probe; returns the service its URL names and the port it connects to.
fn http_target(here: &str, p: &HttpProbe, project: &Project) -> Result<(String, u16), Failure> {
    let url_here = format!("{here}.url");
    let url = reqwest::Url::parse(&p.url).map_err(|e| {
        invalid(format!(
            "{url_here} {:?} is not a URL ({e}); write it as http://SERVICE:PORT/PATH",
            p.url
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "{url_here} {:?} uses scheme `{}`; use http or https",
            p.url,
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "{url_here} carries credentials; they would show in status messages, and probes do not support them"
        )));
    }
    let Some(host) = url.host_str() else {
        return Err(invalid(format!(
            "{url_here} {:?} has no host; write it as http://SERVICE:PORT/PATH",
            p.url
        )));
    };
    if project.service(host).is_none() {
        return Err(unknown_service(&url_here, host, project));
    }
    http_expectations(here, p)?;
    let port = port(
        here,
        "url port",
        url.port(),
        url.port_or_known_default().unwrap_or(80),
    )?;
    Ok((host.to_owned(), port))
}

/// The expected status is an HTTP status, and the JSON field's path has no empty segment.
fn http_expectations(here: &str, p: &HttpProbe) -> Result<(), Failure> {
    if let Some(status) = p.expect_status {
        if !(100..=599).contains(&status) {
            return Err(invalid(format!(
                "{here}.expectStatus is {status}; an HTTP status is between 100 and 599"
            )));
        }
    }
    if let Some(field) = &p.json_field {
        if field.path.split('.').any(str::is_empty) {
            return Err(invalid(format!(
                "{here}.jsonField.path {:?} has an empty segment; write it as `a.b.c`",
                field.path
            )));
        }
    }
    Ok(())
}

fn published(here: &str, service: &str, port: u16, project: &Project) -> Result<(), Failure> {
    let svc = project
        .service(service)
        .expect("probe targets are checked to be services first");
    if svc
        .ports
        .iter()
        .any(|p| p.container_port == port && p.protocol == "tcp")
    {
        return Ok(());
    }
    Err(invalid(format!(
        "{here} probes port {port} of service `{service}`, which it does not publish, and spec.health.probeAccess is PublishedPorts: publish it (e.g. ports: [\"127.0.0.1::{port}\"]) or, with the operator on the Docker host, use probeAccess Network"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ServiceStack, ServiceStackSpec};

    const FILE: &str = r#"
services:
  backend: {image: x, ports: ["127.0.0.1::8000"]}
  postgres: {image: x}
  redis: {image: x, ports: ["6379/udp"]}
"#;

    /// A spec from YAML for `spec.health`, with the compose file above and two variables.
    fn spec(health: &str) -> ServiceStackSpec {
        let yaml = format!(
            "compose: {{file: {FILE:?}}}\nvariables: {{DB_PASSWORD: pg-secret-value, REDIS_PASSWORD: redis-secret-value}}\nhealth: {health}"
        );
        // Through JSON, as the API server hands specs over: the serde_yaml family (yaml_serde) reads enums only
        // from YAML tags (`!http {...}`), not from the `http: {...}` form of the manifests.
        let value: serde_json::Value =
            yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{health}: {e}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{health}: {e}"))
    }

    fn run(health: &str) -> Result<(), Failure> {
        let spec = spec(health);
        // The project alone, without the health spec under test.
        let mut bare = spec.clone();
        bare.health = Default::default();
        let project = crate::compose::load(&ServiceStack::new("p", bare)).unwrap();
        validate(&spec, &project)
    }

    #[test]
    fn accepts_the_design_notes_example() {
        run(r#"
  services:
    backend:
      probes:
        - http: {url: "http://backend:8000/health", expectStatus: 200}
        - http: {url: "http://backend:8000/readiness", jsonField: {path: checks.db, equals: ok}}
        - exec: {command: [demo-app, healthcheck]}
      periodSeconds: 10
      failureThreshold: 3
    postgres: {probes: [{postgres: {database: erni, user: erni, passwordVariable: DB_PASSWORD}}]}
    redis: {probes: [{redis: {passwordVariable: REDIS_PASSWORD}}, {tcp: {port: 6379}}], periodSeconds: 1, timeoutSeconds: 1}
"#)
        .unwrap();
        // PublishedPorts: backend's 8000 is published, so its probes pass validation.
        run(r#"
  probeAccess: PublishedPorts
  services: {backend: {probes: [{http: {url: "https://backend:8000/"}}, {tcp: {port: 8000}}, {exec: {command: [x]}}]}}
"#)
        .unwrap();
    }

    #[test]
    fn refuses_what_could_never_pass() {
        let cases = [
            // (spec.health, reason, what the message must name)
            ("{services: {backnd: {}}}", Reason::UnknownService, "spec.health.services.backnd"),
            (
                r#"{services: {backend: {probes: [{http: {url: "http://frontend:3000/"}}]}}}"#,
                Reason::UnknownService,
                "spec.health.services.backend.probes[0].http.url names service `frontend`",
            ),
            (
                r#"{services: {backend: {probes: [{http: {url: "backend:8000/health"}}]}}}"#,
                Reason::InvalidField,
                "uses scheme `backend`",
            ),
            (
                r#"{services: {backend: {probes: [{http: {url: "http://:8000/health"}}]}}}"#,
                Reason::InvalidField,
                "is not a URL",
            ),
            (
                r#"{services: {backend: {probes: [{http: {url: "ftp://backend/x"}}]}}}"#,
                Reason::InvalidField,
                "use http or https",
            ),
            (
                r#"{services: {backend: {probes: [{http: {url: "http://u:pw@backend:8000/"}}]}}}"#,
                Reason::InvalidField,
                "credentials",
            ),
            (
                r#"{services: {backend: {probes: [{http: {url: "http://backend:8000/", expectStatus: 700}}]}}}"#,
                Reason::InvalidField,
                "expectStatus is 700",
            ),
            (
                r#"{services: {backend: {probes: [{http: {url: "http://backend:8000/", jsonField: {path: "a..b", equals: x}}}]}}}"#,
                Reason::InvalidField,
                "jsonField.path",
            ),
            (
                "{services: {postgres: {probes: [{postgres: {database: d, user: u, passwordVariable: DB_PASWORD}}]}}}",
                Reason::InvalidField,
                "passwordVariable names `DB_PASWORD`, which spec.variables does not define (it has: DB_PASSWORD, REDIS_PASSWORD)",
            ),
            (
                "{services: {redis: {probes: [{redis: {passwordVariable: NOPE}}]}}}",
                Reason::InvalidField,
                "probes[0].redis.passwordVariable names `NOPE`",
            ),
            (
                "{services: {postgres: {probes: [{postgres: {database: d, user: ' '}}]}}}",
                Reason::InvalidField,
                "postgres.user is empty",
            ),
            (
                "{services: {backend: {probes: [{exec: {command: []}}]}}}",
                Reason::InvalidField,
                "probes[0].exec.command is empty",
            ),
            (
                "{services: {backend: {probes: [{tcp: {port: 0}}]}}}",
                Reason::InvalidField,
                "tcp.port is 0",
            ),
            ("{services: {backend: {periodSeconds: 0}}}", Reason::InvalidField, "periodSeconds is 0"),
            ("{services: {backend: {timeoutSeconds: 0}}}", Reason::InvalidField, "timeoutSeconds is 0"),
            ("{services: {backend: {failureThreshold: 0}}}", Reason::InvalidField, "failureThreshold is 0"),
            ("{services: {backend: {successThreshold: 0}}}", Reason::InvalidField, "successThreshold is 0"),
            (
                "{services: {backend: {periodSeconds: 2, timeoutSeconds: 3}}}",
                Reason::InvalidField,
                "timeoutSeconds (3) is longer than periodSeconds (2)",
            ),
            (
                "{probeAccess: PublishedPorts, services: {postgres: {probes: [{postgres: {database: d, user: u}}]}}}",
                Reason::InvalidField,
                "port 5432 of service `postgres`, which it does not publish",
            ),
            (
                // Published, but over UDP: no use to a TCP probe.
                "{probeAccess: PublishedPorts, services: {redis: {probes: [{redis: {}}]}}}",
                Reason::InvalidField,
                "port 6379 of service `redis`",
            ),
            (
                r#"{probeAccess: PublishedPorts, services: {backend: {probes: [{http: {url: "http://backend/"}}]}}}"#,
                Reason::InvalidField,
                "port 80 of service `backend`",
            ),
        ];
        for (health, reason, needle) in cases {
            let err = run(health).expect_err(health);
            assert_eq!(err.reason, reason, "{health}: {}", err.message);
            assert!(err.message.contains(needle), "{health}: {}", err.message);
        }
    }

    #[test]
    fn messages_never_quote_a_variable_value() {
        // A URL that happens to hold a variable's value: the message quotes the URL, masked.
        let err =
            run(r#"{services: {backend: {probes: [{http: {url: "ftp://pg-secret-value/"}}]}}}"#)
                .unwrap_err();
        assert!(
            !err.message.contains("pg-secret-value") && err.message.contains("<redacted>"),
            "{}",
            err.message
        );
    }
}
