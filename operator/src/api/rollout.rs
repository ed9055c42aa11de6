//! `spec.rollout.analysis`: what a new revision's own metrics must show before its rollout
//! counts as good. Every field's doc comment is its `kubectl explain` text.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The metrics gate of a rollout. Each updated service named in `services` is scraped over
/// `windowSeconds` once its probes pass; its share of 5xx answers must stay at or under
/// `maxErrorRate` and, with `latency`, a latency quantile under its limits. A failed gate rolls
/// the stack back to the previous revision.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// The services analysed when a rollout updates them; each must serve the metrics
    /// endpoint. Services not named here are gated by their probes alone.
    pub services: Vec<String>,

    /// Where each of those services serves its Prometheus or OpenMetrics text.
    pub metrics: MetricsEndpoint,

    /// How long a new revision is watched, in seconds. A gate that fails earlier (once
    /// `minRequests` requests were seen) ends the analysis at once. Defaults to 30.
    #[serde(default = "AnalysisSpec::default_window")]
    #[schemars(range(min = 1))]
    pub window_seconds: u32,

    /// How often the endpoint is scraped during the window, in seconds: each scrape is a
    /// chance to catch a failing gate early. At most `windowSeconds`. Defaults to 5.
    #[serde(default = "AnalysisSpec::default_interval")]
    #[schemars(range(min = 1))]
    pub interval_seconds: u32,

    /// The largest share of answers with a 5xx status that passes, as a fraction between 0
    /// and 1 (0.05 is 5 %). Defaults to 0.05.
    #[serde(default = "AnalysisSpec::default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,

    /// The counter of answered requests, labelled with the status code. Written with or
    /// without its `_total` suffix. Defaults to `http_requests_total`.
    #[serde(default = "AnalysisSpec::default_requests_metric")]
    pub requests_metric: String,

    /// The label of `requestsMetric` that holds the HTTP status code. Defaults to `code`.
    #[serde(default = "AnalysisSpec::default_code_label")]
    pub code_label: String,

    /// A latency gate on a histogram of request durations, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyGate>,

    /// Below this many requests in the window, the gates are not judged (too few answers say
    /// nothing about a share or a quantile) and the analysis says so instead of passing or
    /// failing. Defaults to 20.
    #[serde(default = "AnalysisSpec::default_min_requests")]
    pub min_requests: u32,
}

impl AnalysisSpec {
    /// Whether the latency gate judges a rise over the previous revision (`maxIncrease`),
    /// which needs that revision's figure measured before the update.
    pub fn judges_increase(&self) -> bool {
        self.latency
            .as_ref()
            .is_some_and(|l| l.max_increase.is_some())
    }

    pub const DEFAULT_WINDOW_SECONDS: u32 = 30;
    pub const DEFAULT_INTERVAL_SECONDS: u32 = 5;
    pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
    pub const DEFAULT_MIN_REQUESTS: u32 = 20;

    fn default_window() -> u32 {
        Self::DEFAULT_WINDOW_SECONDS
    }
    fn default_interval() -> u32 {
        Self::DEFAULT_INTERVAL_SECONDS
    }
    fn default_max_error_rate() -> f64 {
        Self::DEFAULT_MAX_ERROR_RATE
    }
    fn default_requests_metric() -> String {
        "http_requests_total".to_owned()
    }
    fn default_code_label() -> String {
        "code".to_owned()
    }
    fn default_min_requests() -> u32 {
        Self::DEFAULT_MIN_REQUESTS
    }

    /// Whether a rollout must measure the previous revision's latency before it updates a
    /// service: only `latency.maxIncrease` reads that figure.
    pub fn needs_baseline(&self) -> bool {
        self.latency
            .as_ref()
            .is_some_and(|l| l.max_increase.is_some())
    }

    /// The endpoint's URL at `addr`, the address the caller found for the service's
    /// `metrics.port` (a container address on the project network, or a published port).
    pub fn url(&self, addr: SocketAddr) -> String {
        let scheme = match self.metrics.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{addr}{}", self.metrics.path)
    }
}

/// A service's metrics endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsEndpoint {
    /// The container port the metrics are served on.
    pub port: u16,
    /// The path of the metrics page. Defaults to `/metrics`.
    #[serde(default = "MetricsEndpoint::default_path")]
    pub path: String,
    /// HTTP or HTTPS. Defaults to HTTP. With HTTPS the certificate is verified.
    #[serde(default)]
    pub scheme: Scheme,
}

impl MetricsEndpoint {
    fn default_path() -> String {
        "/metrics".to_owned()
    }
}

/// See `metrics.scheme`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// A limit on a latency quantile of the window, read from a histogram. Give `maxSeconds`,
/// `maxIncrease` or both.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyGate {
    /// The histogram of request durations in seconds (its `_bucket` series with `le`
    /// labels). Defaults to `http_request_duration_seconds`.
    #[serde(default = "LatencyGate::default_metric")]
    pub metric: String,

    /// The quantile judged, between 0 and 1 exclusive (0.95 is the 95th percentile),
    /// interpolated inside the histogram's buckets as Prometheus' `histogram_quantile` does.
    /// Defaults to 0.95.
    #[serde(default = "LatencyGate::default_quantile")]
    pub quantile: f64,

    /// The quantile must stay at or under this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<f64>,

    /// The quantile may rise at most this fraction above the previous revision's own figure,
    /// measured just before the update (0.5 allows +50 %). Not judged on a first rollout, or
    /// when the previous revision served too few requests to have a figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
}

impl LatencyGate {
    pub const DEFAULT_QUANTILE: f64 = 0.95;

    fn default_metric() -> String {
        "http_request_duration_seconds".to_owned()
    }
    fn default_quantile() -> f64 {
        Self::DEFAULT_QUANTILE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_with_only_services_and_port_takes_every_default() {
        let spec: AnalysisSpec = serde_json::from_value(serde_json::json!({
            "services": ["backend"], "metrics": {"port": 8000}, "latency": {"maxSeconds": 0.5}
        }))
        .unwrap();
        assert_eq!(spec.window_seconds, 30);
        assert_eq!(spec.interval_seconds, 5);
        assert_eq!(spec.max_error_rate, 0.05);
        assert_eq!(spec.requests_metric, "http_requests_total");
        assert_eq!(spec.code_label, "code");
        assert_eq!(spec.min_requests, 20);
        let latency = spec.latency.as_ref().unwrap();
        assert_eq!(latency.metric, "http_request_duration_seconds");
        assert_eq!(latency.quantile, 0.95);
        assert!(!spec.needs_baseline());
        assert_eq!(
            spec.url("172.18.0.3:8000".parse().unwrap()),
            "http://172.18.0.3:8000/metrics"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<AnalysisSpec>(serde_json::json!({
            "services": ["backend"], "metrics": {"port": 8000}, "maxErrorRatio": 0.1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("maxErrorRatio"), "{err}");
    }
}
