//! The rollout analysis gate, pure: what two scrapes of a service's metrics say about the
//! window between them, and whether that passes `spec.rollout.analysis`.
//!
//! Counters and histogram buckets are cumulative since the process started, so every figure
//! is a difference between the scrape at the start of the window and a later one; a value
//! that went down means the process restarted in between, and the window says nothing then.
//! The latency quantile is interpolated inside the buckets as Prometheus' `histogram_quantile`
//! does, so the figure matches the one a dashboard shows.
//!
//! Scrapes are parsed with `prometheus-parse`, which reads the classic Prometheus text and
//! the OpenMetrics text (the `# EOF` line and `_created` series are skipped). It types an
//! OpenMetrics counter under its family name only, so samples are read by name whatever their
//! type; that is why the requests counter matches with or without its `_total` suffix. Its
//! label parsing is plain: a label value holding a comma, `=` or `}` is misread (status codes
//! and bucket bounds never hold one).

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use crate::api::rollout::{AnalysisSpec, LatencyGate};

/// What one scrape says that the gates read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Cumulative requests by the value of the code label (summed over the other labels; a
    /// series without the label is under ""). Empty when the scrape has no such counter.
    pub requests: BTreeMap<String, f64>,
    /// The latency histogram's cumulative buckets as (upper bound, count), summed over the
    /// other labels and sorted by bound. Empty without a latency gate or such a histogram.
    pub buckets: Vec<(f64, f64)>,
}

/// The figures of a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// How long the window was, in seconds.
    pub seconds: f64,
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    /// The latency gate's quantile over the window, in seconds (none without a latency gate).
    pub latency: Option<f64>,
    /// The previous revision's own figure the increase was judged against, when there was one.
    pub baseline: Option<f64>,
}

/// Which gate failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The share of 5xx answers, against `maxErrorRate`.
    ErrorRate,
    /// The latency quantile in seconds, against `latency.maxSeconds`.
    Latency,
    /// The latency quantile's rise over the previous revision's, as a fraction, against
    /// `latency.maxIncrease`.
    LatencyIncrease,
}

/// What an analysis concluded.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every gate that could be judged passed.
    Pass { figures: Figures },
    /// A gate failed. `observed` and `limit` are in the gate's unit (a fraction for
    /// ErrorRate and LatencyIncrease, seconds for Latency); `message` is a sentence naming the
    /// gate and the observed value against its limit, for the RolledBack condition (the caller
    /// puts the service's name in front).
    Fail {
        gate: Gate,
        observed: f64,
        limit: f64,
        message: String,
    },
    /// Nothing could be judged: too few requests, a restart inside the window, a metric
    /// missing from the scrape, or no scrape at all. `why` is a sentence saying which and
    /// what to do.
    Inconclusive { why: String },
}

/// Reads the series the gates need from a scrape's text.
pub fn read(text: &str, spec: &AnalysisSpec) -> Reading {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let Ok(scrape) = Scrape::parse(lines) else {
        unreachable!("lines of a string cannot fail to read");
    };
    let names = counter_names(&spec.requests_metric);
    let mut requests = BTreeMap::new();
    for sample in &scrape.samples {
        if let (true, Value::Counter(v) | Value::Untyped(v)) =
            (names.contains(&sample.metric), &sample.value)
        {
            let code = sample.labels.get(&spec.code_label).unwrap_or("");
            *requests.entry(code.to_owned()).or_default() += v;
        }
    }
    let buckets = spec
        .latency
        .as_ref()
        .map(|l| histogram(&scrape, l))
        .unwrap_or_default();
    Reading { requests, buckets }
}

/// The names a counter given as `name` may carry: OpenMetrics names the family without the
/// `_total` its samples carry, and people write either.
fn counter_names(name: &str) -> [String; 2] {
    match name.strip_suffix("_total") {
        Some(family) => [name.to_owned(), family.to_owned()],
        None => [name.to_owned(), format!("{name}_total")],
    }
}

/// The histogram's buckets summed by bound. A histogram without a TYPE line comes through as
/// untyped `_bucket` samples with an `le` label; they are read too.
fn histogram(scrape: &Scrape, gate: &LatencyGate) -> Vec<(f64, f64)> {
    let bucket_name = format!("{}_bucket", gate.metric);
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut add = |bound: f64, count: f64| match buckets.iter_mut().find(|(b, _)| *b == bound) {
        Some((_, c)) => *c += count,
        None => buckets.push((bound, count)),
    };
    for sample in &scrape.samples {
        match &sample.value {
            Value::Histogram(counts) if sample.metric == gate.metric => {
                for h in counts {
                    add(h.less_than, h.count);
                }
            }
            Value::Untyped(count) if sample.metric == bucket_name => {
                if let Some(bound) = sample.labels.get("le").and_then(parse_bound) {
                    add(bound, *count);
                }
            }
            _ => {}
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

/// The `q` quantile of a histogram given as cumulative (upper bound, count) buckets sorted by
/// bound, interpolated linearly inside the bucket it falls in, as Prometheus'
/// `histogram_quantile` does: the lowest bucket starts at 0 (unless its bound is 0 or less),
/// and a quantile in the `+Inf` bucket is the highest finite bound. None where Prometheus
/// answers NaN: no `+Inf` bucket, fewer than two buckets, or no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let (&(last_bound, observations), finite) = buckets.split_last()?;
    if last_bound != f64::INFINITY || finite.is_empty() || observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let Some(b) = finite.iter().position(|&(_, count)| count >= rank) else {
        return Some(finite[finite.len() - 1].0);
    };
    let (bound, count) = finite[b];
    if b == 0 && bound <= 0.0 {
        return Some(bound);
    }
    let (start, below) = if b == 0 { (0.0, 0.0) } else { finite[b - 1] };
    let inside = count - below;
    if inside <= 0.0 {
        return Some(bound);
    }
    Some(start + (bound - start) * ((rank - below) / inside))
}

/// What happened between two readings: the increases, or why there are none.
struct Delta {
    requests: f64,
    errors: f64,
    buckets: Vec<(f64, f64)>,
}

fn delta(start: &Reading, end: &Reading, spec: &AnalysisSpec) -> Result<Delta, String> {
    let restarted = |what: String, from: f64, to: f64| {
        format!(
            "{what} went down between two scrapes (from {from} to {to}): the service restarted during the window, so the window's figures are lost"
        )
    };
    let (mut requests, mut errors) = (0.0, 0.0);
    for (code, &from) in &start.requests {
        let to = end.requests.get(code).copied().unwrap_or(0.0);
        if to < from {
            let series = format!("{}{{{}=\"{code}\"}}", spec.requests_metric, spec.code_label);
            return Err(restarted(series, from, to));
        }
    }
    for (code, &to) in &end.requests {
        let d = to - start.requests.get(code).copied().unwrap_or(0.0);
        requests += d;
        if is_server_error(code) {
            errors += d;
        }
    }
    let mut buckets = Vec::with_capacity(end.buckets.len());
    for &(bound, from) in &start.buckets {
        let to = end
            .buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, c)| *c);
        if to < from {
            let metric = spec.latency.as_ref().map_or("", |l| l.metric.as_str());
            return Err(restarted(
                format!("{metric}_bucket{{le=\"{bound}\"}}"),
                from,
                to,
            ));
        }
        buckets.push((bound, to - from));
    }
    if start.buckets.is_empty() {
        buckets.clone_from(&end.buckets);
    }
    Ok(Delta {
        requests,
        errors,
        buckets,
    })
}

fn is_server_error(code: &str) -> bool {
    code.len() == 3 && code.starts_with('5') && code.bytes().all(|b| b.is_ascii_digit())
}

/// Judges the window from `start` to `end`, `elapsed` long, against the gates; `baseline` is
/// the previous revision's own latency figure (see [`latency_between`]), if it has one.
///
/// A gate fails when its figure is above its limit (equal passes). Called on every scrape of
/// the window: a Fail is final at once, a Pass only at the window's end.
pub fn judge(
    spec: &AnalysisSpec,
    start: &Reading,
    end: &Reading,
    elapsed: Duration,
    baseline: Option<f64>,
) -> Verdict {
    if let Err(why) = readable(spec, end) {
        return Verdict::Inconclusive { why };
    }
    let d = match delta(start, end, spec) {
        Ok(d) => d,
        Err(why) => return Verdict::Inconclusive { why },
    };
    let seconds = elapsed.as_secs_f64();
    if d.requests < f64::from(spec.min_requests) {
        return Verdict::Inconclusive {
            why: format!(
                "only {} requests over {seconds:.0} s, fewer than minRequests {}: the gates are not judged; send traffic during the window or lower minRequests",
                d.requests, spec.min_requests
            ),
        };
    }
    let mut figures = Figures {
        seconds,
        requests: d.requests.round() as u64,
        errors: d.errors.round() as u64,
        error_rate: d.errors / d.requests,
        latency: None,
        baseline: baseline.filter(|b| b.is_finite() && *b > 0.0),
    };
    if figures.error_rate > spec.max_error_rate {
        return Verdict::Fail {
            gate: Gate::ErrorRate,
            observed: figures.error_rate,
            limit: spec.max_error_rate,
            message: format!(
                "5xx share {:.1} % over {seconds:.0} s ({} of {} requests) is above maxErrorRate {} %",
                figures.error_rate * 100.0,
                figures.errors,
                figures.requests,
                trimmed(spec.max_error_rate * 100.0)
            ),
        };
    }
    let Some(gate) = &spec.latency else {
        return Verdict::Pass { figures };
    };
    match histogram_quantile(gate.quantile, &d.buckets) {
        Some(latency) => figures.latency = Some(latency),
        None => {
            return Verdict::Inconclusive {
                why: format!(
                    "the histogram `{}` observed nothing over {seconds:.0} s, or has no +Inf bucket: latency is not judged; check latency.metric",
                    gate.metric
                ),
            }
        }
    }
    latency_verdict(gate, figures)
}

/// Whether the scrape has what the gates read; if not, what to check.
fn readable(spec: &AnalysisSpec, end: &Reading) -> Result<(), String> {
    if end.requests.is_empty() {
        return Err(format!(
            "the scrape has no `{}` series: nothing is judged; check spec.rollout.analysis.requestsMetric and that the service counts its requests",
            spec.requests_metric
        ));
    }
    if end.requests.keys().all(String::is_empty) {
        return Err(format!(
            "no `{}` series carries the label `{}`: 5xx answers cannot be told apart; check spec.rollout.analysis.codeLabel",
            spec.requests_metric, spec.code_label
        ));
    }
    if let (Some(gate), true) = (&spec.latency, end.buckets.is_empty()) {
        return Err(format!(
            "the scrape has no histogram `{}` (its `_bucket` series with `le` labels): latency is not judged; check spec.rollout.analysis.latency.metric",
            gate.metric
        ));
    }
    Ok(())
}

fn latency_verdict(gate: &LatencyGate, figures: Figures) -> Verdict {
    let latency = figures.latency.expect("set by the caller");
    let name = format!("p{} latency", trimmed(gate.quantile * 100.0));
    let over = format!("over {:.0} s", figures.seconds);
    if let Some(max) = gate.max_seconds.filter(|max| latency > *max) {
        return Verdict::Fail {
            gate: Gate::Latency,
            observed: latency,
            limit: max,
            message: format!(
                "{name} {} {over} ({} requests) is above latency.maxSeconds {}",
                duration(latency),
                figures.requests,
                duration(max)
            ),
        };
    }
    if let (Some(max), Some(baseline)) = (gate.max_increase, figures.baseline) {
        let increase = latency / baseline - 1.0;
        if increase > max {
            return Verdict::Fail {
                gate: Gate::LatencyIncrease,
                observed: increase,
                limit: max,
                message: format!(
                    "{name} {} {over} is {:.0} % above the previous revision's {}, more than latency.maxIncrease {} %",
                    duration(latency),
                    increase * 100.0,
                    duration(baseline),
                    trimmed(max * 100.0)
                ),
            };
        }
    }
    Verdict::Pass { figures }
}

/// The latency gate's quantile over the window from `start` to `end`: the previous revision's
/// own figure, measured before an update. Err says why there is none (too few requests, a
/// restart, no histogram).
pub fn latency_between(spec: &AnalysisSpec, start: &Reading, end: &Reading) -> Result<f64, String> {
    let gate = spec
        .latency
        .as_ref()
        .ok_or("spec.rollout.analysis has no latency gate")?;
    readable(spec, end)?;
    let d = delta(start, end, spec)?;
    if d.requests < f64::from(spec.min_requests) {
        return Err(format!(
            "the previous revision answered {} requests, fewer than minRequests {}",
            d.requests, spec.min_requests
        ));
    }
    histogram_quantile(gate.quantile, &d.buckets)
        .ok_or_else(|| format!("the histogram `{}` observed nothing", gate.metric))
}

/// A number with at most three decimals and no trailing zeros: 10, 2.5, 99.9.
fn trimmed(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Seconds as people read latencies: `412.0 ms`, `1.25 s`.
fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;
