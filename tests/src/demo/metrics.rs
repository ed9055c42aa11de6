//! The demo app's `/metrics`: what a rollout analysis reads to compute the 5xx rate and the
//! latency of a new revision.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What the text encoder produces (OpenMetrics, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    duration: Histogram,
    leaked_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        // The encoder appends `_total` to counters: this is `http_requests_total`.
        registry.register(
            "http_requests",
            "HTTP requests answered, by status code",
            requests.clone(),
        );
        // 5 ms to ~10 s: covers the runbooks' "P95 > 2 s" alert with room either side.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            duration.clone(),
        );
        let leaked_bytes = Gauge::default();
        registry.register(
            "demo_leaked_bytes",
            "Memory leaked on purpose by the leak fault",
            leaked_bytes.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            leaked_bytes,
        }
    }

    pub fn observe(&self, code: u16, seconds: f64) {
        self.requests.get_or_create(&CodeLabels { code }).inc();
        self.duration.observe(seconds);
    }

    pub fn set_leaked_bytes(&self, bytes: u64) {
        self.leaked_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_status_code() {
        let metrics = Metrics::new();
        metrics.observe(200, 0.01);
        metrics.observe(200, 0.02);
        metrics.observe(500, 0.5);
        let text = metrics.render();
        assert!(text.contains("# TYPE http_requests counter"), "{text}");
        assert!(
            text.contains("http_requests_total{code=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("http_requests_total{code=\"500\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("code=\"404\""), "{text}");
    }

    #[test]
    fn renders_latency_histogram_and_leak_gauge() {
        let metrics = Metrics::new();
        metrics.observe(200, 0.003);
        metrics.observe(200, 3.0);
        metrics.set_leaked_bytes(1_048_576);
        let text = metrics.render();
        assert!(
            text.contains("http_request_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("demo_leaked_bytes 1048576\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
