//! Refuses, as an InvalidSpec condition, rollout analyses that could never judge anything or
//! whose numbers make no sense, so that the user learns it before a rollout is rolled back
//! for a typo.

use crate::api::rollout::{AnalysisSpec, LatencyGate};
use crate::api::{Failure, ProbeAccess, Reason};
use crate::compose::Project;

const HERE: &str = "spec.rollout.analysis";

/// `spec.rollout`: every service `order` names is in the compose file, and the analysis (see
/// [`validate`]).
pub fn validate_rollout(
    spec: &crate::api::ServiceStackSpec,
    project: &Project,
) -> Result<(), Failure> {
    for name in &spec.rollout.order {
        if project.service(name).is_none() {
            return Err(Failure::new(
                Reason::UnknownService,
                format!("spec.rollout.order names {name}, which is not a service of the compose file; fix the name or remove it"),
            ));
        }
    }
    let Some(analysis) = &spec.rollout.analysis else {
        return Ok(());
    };
    validate(analysis, spec.health.probe_access, project)?;
    Ok(())
}

/// Checks `spec.rollout.analysis` against the project the compose file gave.
///
/// The rules, and why:
/// - `services` is not empty and names services of the compose file: an analysis of nothing
///   is a typo, and a name the file lacks is one too.
/// - `metrics.port` is not 0 and `metrics.path` starts with `/`.
/// - `intervalSeconds` and `windowSeconds` are at least 1 and the interval at most the window:
///   otherwise the window ends before the first scrape after the start.
/// - `maxErrorRate` is a fraction in [0, 1]; `latency.quantile` in (0, 1), since the 0th and
///   100th percentiles of a histogram are its first and last bucket bounds, not a latency.
/// - `latency` gives `maxSeconds` (above 0) or `maxIncrease` (0 or more), or both: a latency
///   gate without a limit would judge nothing.
/// - with `probeAccess: PublishedPorts` every analysed service publishes the metrics port, or
///   the operator could never scrape it.
pub fn validate(
    analysis: &AnalysisSpec,
    access: ProbeAccess,
    project: &Project,
) -> Result<(), Failure> {
    services(analysis, access, project)?;
    endpoint(analysis)?;
    timings(analysis)?;
    if !(0.0..=1.0).contains(&analysis.max_error_rate) {
        return Err(invalid(format!(
            "{HERE}.maxErrorRate is {}; it is a fraction between 0 and 1 (0.05 is 5 %)",
            analysis.max_error_rate
        )));
    }
    for (field, value) in [
        ("requestsMetric", &analysis.requests_metric),
        ("codeLabel", &analysis.code_label),
    ] {
        if value.trim().is_empty() {
            return Err(invalid(format!("{HERE}.{field} is empty")));
        }
    }
    match &analysis.latency {
        Some(latency) => latency_gate(latency),
        None => Ok(()),
    }
}

fn invalid(message: String) -> Failure {
    Failure::new(Reason::InvalidField, message)
}

fn services(
    analysis: &AnalysisSpec,
    access: ProbeAccess,
    project: &Project,
) -> Result<(), Failure> {
    if analysis.services.is_empty() {
        return Err(invalid(format!(
            "{HERE}.services is empty; name the services whose metrics gate a rollout"
        )));
    }
    let port = analysis.metrics.port;
    for (i, name) in analysis.services.iter().enumerate() {
        let Some(service) = project.service(name) else {
            return Err(Failure::new(
                Reason::UnknownService,
                format!(
                    "{HERE}.services[{i}] names service `{name}`, which the compose file does not define (it has: {}); fix the name or add the service",
                    project.service_names().join(", ")
                ),
            ));
        };
        let published = service
            .ports
            .iter()
            .any(|p| p.container_port == port && p.protocol == "tcp");
        if access == ProbeAccess::PublishedPorts && !published {
            return Err(invalid(format!(
                "{HERE}.metrics.port {port} is not published by service `{name}`, and spec.health.probeAccess is PublishedPorts: publish it (e.g. ports: [\"127.0.0.1::{port}\"]) or, with the operator on the Docker host, use probeAccess Network"
            )));
        }
    }
    Ok(())
}

fn endpoint(analysis: &AnalysisSpec) -> Result<(), Failure> {
    let metrics = &analysis.metrics;
    if metrics.port == 0 {
        return Err(invalid(format!(
            "{HERE}.metrics.port is 0; give the container port the metrics are served on"
        )));
    }
    if !metrics.path.starts_with('/') {
        return Err(invalid(format!(
            "{HERE}.metrics.path {:?} does not start with `/`; write it as /metrics",
            metrics.path
        )));
    }
    Ok(())
}

fn timings(analysis: &AnalysisSpec) -> Result<(), Failure> {
    for (field, value) in [
        ("windowSeconds", analysis.window_seconds),
        ("intervalSeconds", analysis.interval_seconds),
    ] {
        if value < 1 {
            return Err(invalid(format!(
                "{HERE}.{field} is {value}; it must be at least 1"
            )));
        }
    }
    if analysis.interval_seconds > analysis.window_seconds {
        return Err(invalid(format!(
            "{HERE}.intervalSeconds ({}) is longer than windowSeconds ({}): the window would end before its second scrape; make the interval at most the window",
            analysis.interval_seconds, analysis.window_seconds
        )));
    }
    Ok(())
}

fn latency_gate(latency: &LatencyGate) -> Result<(), Failure> {
    let here = format!("{HERE}.latency");
    if latency.metric.trim().is_empty() {
        return Err(invalid(format!("{here}.metric is empty")));
    }
    if !(latency.quantile > 0.0 && latency.quantile < 1.0) {
        return Err(invalid(format!(
            "{here}.quantile is {}; it is between 0 and 1, both excluded (0.95 is the 95th percentile)",
            latency.quantile
        )));
    }
    match (latency.max_seconds, latency.max_increase) {
        (None, None) => Err(invalid(format!(
            "{here} gives no limit; set maxSeconds (an absolute limit), maxIncrease (a fraction above the previous revision's figure) or both"
        ))),
        (Some(s), _) if !(s > 0.0 && s.is_finite()) => Err(invalid(format!(
            "{here}.maxSeconds is {s}; it must be a number of seconds above 0"
        ))),
        (_, Some(i)) if !(i >= 0.0 && i.is_finite()) => Err(invalid(format!(
            "{here}.maxIncrease is {i}; it is a fraction of 0 or more (0.5 allows +50 %)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceStack;

    const FILE: &str = r#"
services:
  backend: {image: x, ports: ["127.0.0.1::8000"]}
  worker: {image: x}
"#;

    fn project() -> Project {
        let spec = serde_json::from_value(serde_json::json!({"compose": {"file": FILE}})).unwrap();
        crate::compose::load(&ServiceStack::new("p", spec)).unwrap()
    }

    /// The analysis spec of `json` merged over a valid one.
    fn analysis(json: serde_json::Value) -> AnalysisSpec {
        let mut base = serde_json::json!({"services": ["backend"], "metrics": {"port": 8000}});
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn run(json: serde_json::Value, access: ProbeAccess) -> Result<(), Failure> {
        validate(&analysis(json), access, &project())
    }

    #[test]
    fn accepts_a_full_analysis_and_the_defaults() {
        run(serde_json::json!({}), ProbeAccess::Network).unwrap();
        run(
            serde_json::json!({
                "services": ["backend", "worker"], "windowSeconds": 10, "intervalSeconds": 10,
                "maxErrorRate": 0, "latency": {"quantile": 0.99, "maxSeconds": 0.25, "maxIncrease": 0}
            }),
            ProbeAccess::Network,
        )
        .unwrap();
        run(serde_json::json!({}), ProbeAccess::PublishedPorts).unwrap();
    }

    #[test]
    fn refuses_what_could_never_judge_and_says_what_to_fix() {
        let net = ProbeAccess::Network;
        let cases = [
            (
                serde_json::json!({"services": []}),
                net,
                Reason::InvalidField,
                "spec.rollout.analysis.services is empty",
            ),
            (
                serde_json::json!({"services": ["backnd"]}),
                net,
                Reason::UnknownService,
                "services[0] names service `backnd`",
            ),
            (
                serde_json::json!({"metrics": {"port": 0}}),
                net,
                Reason::InvalidField,
                "metrics.port is 0",
            ),
            (
                serde_json::json!({"metrics": {"port": 8000, "path": "metrics"}}),
                net,
                Reason::InvalidField,
                "does not start with `/`",
            ),
            (
                serde_json::json!({"windowSeconds": 0}),
                net,
                Reason::InvalidField,
                "windowSeconds is 0",
            ),
            (
                serde_json::json!({"intervalSeconds": 0}),
                net,
                Reason::InvalidField,
                "intervalSeconds is 0",
            ),
            (
                serde_json::json!({"windowSeconds": 4, "intervalSeconds": 5}),
                net,
                Reason::InvalidField,
                "intervalSeconds (5) is longer than windowSeconds (4)",
            ),
            (
                serde_json::json!({"maxErrorRate": 10}),
                net,
                Reason::InvalidField,
                "maxErrorRate is 10; it is a fraction",
            ),
            (
                serde_json::json!({"maxErrorRate": -0.1}),
                net,
                Reason::InvalidField,
                "maxErrorRate is -0.1",
            ),
            (
                serde_json::json!({"requestsMetric": " "}),
                net,
                Reason::InvalidField,
                "requestsMetric is empty",
            ),
            (
                serde_json::json!({"codeLabel": ""}),
                net,
                Reason::InvalidField,
                "codeLabel is empty",
            ),
            (
                serde_json::json!({"latency": {}}),
                net,
                Reason::InvalidField,
                "latency gives no limit",
            ),
            (
                serde_json::json!({"latency": {"maxSeconds": 1, "quantile": 1}}),
                net,
                Reason::InvalidField,
                "latency.quantile is 1",
            ),
            (
                serde_json::json!({"latency": {"maxSeconds": 1, "quantile": 0}}),
                net,
                Reason::InvalidField,
                "latency.quantile is 0",
            ),
            (
                serde_json::json!({"latency": {"maxSeconds": 0}}),
                net,
                Reason::InvalidField,
                "latency.maxSeconds is 0",
            ),
            (
                serde_json::json!({"latency": {"maxIncrease": -0.5}}),
                net,
                Reason::InvalidField,
                "latency.maxIncrease is -0.5",
            ),
            (
                serde_json::json!({"latency": {"metric": "", "maxSeconds": 1}}),
                net,
                Reason::InvalidField,
                "latency.metric is empty",
            ),
            (
                serde_json::json!({"services": ["worker"]}),
                ProbeAccess::PublishedPorts,
                Reason::InvalidField,
                "metrics.port 8000 is not published by service `worker`",
            ),
        ];
        for (json, access, reason, needle) in cases {
            let err = run(json.clone(), access).expect_err(&json.to_string());
            assert_eq!(err.reason, reason, "{json}: {}", err.message);
            assert!(err.message.contains(needle), "{json}: {}", err.message);
        }
    }
}
