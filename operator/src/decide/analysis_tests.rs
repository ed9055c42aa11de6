use super::*;

/// A real scrape of the demo app (tests/src/demo/metrics.rs, OpenMetrics text) after 40
/// requests to `/` with DEMO_ERROR_RATE=0.5 and one to a missing page.
const DEMO_SCRAPE: &str = include_str!("analysis_demo_scrape.txt");

fn spec(json: serde_json::Value) -> AnalysisSpec {
    let mut base = serde_json::json!({"services": ["backend"], "metrics": {"port": 8000}});
    for (k, v) in json.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn reading(requests: &[(&str, f64)], buckets: &[(f64, f64)]) -> Reading {
    Reading {
        requests: requests
            .iter()
            .map(|(c, n)| ((*c).to_owned(), *n))
            .collect(),
        buckets: buckets.to_vec(),
    }
}

const WINDOW: Duration = Duration::from_secs(30);
const INF: f64 = f64::INFINITY;

#[test]
fn reads_the_demo_apps_real_openmetrics_scrape() {
    let r = read(
        DEMO_SCRAPE,
        &spec(serde_json::json!({"latency": {"maxSeconds": 1}})),
    );
    assert_eq!(
        r.requests,
        BTreeMap::from([
            ("200".to_owned(), 25.0),
            ("404".to_owned(), 1.0),
            ("500".to_owned(), 15.0)
        ])
    );
    assert_eq!(r.buckets.len(), 13, "{:?}", r.buckets);
    assert_eq!(r.buckets[0], (0.005, 41.0));
    assert_eq!(r.buckets[12], (INF, 41.0));
    // From the process start: 15 of 41 answers were 5xx.
    let verdict = judge(
        &spec(serde_json::json!({"maxErrorRate": 0.1})),
        &Reading::default(),
        &r,
        WINDOW,
        None,
    );
    assert!(
        matches!(verdict, Verdict::Fail { gate: Gate::ErrorRate, observed, .. } if (observed - 15.0 / 41.0).abs() < 1e-12),
        "{verdict:?}"
    );
}

#[test]
fn reads_classic_prometheus_text_summing_label_sets_by_code_and_bound() {
    let text = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 7 1395066363000
http_requests_total{method="post",code="200"} 3
http_requests_total{method="get",code="503"} 2
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{route="/a",le="0.1"} 4
http_request_duration_seconds_bucket{route="/a",le="+Inf"} 5
http_request_duration_seconds_bucket{route="/b",le="0.1"} 1
http_request_duration_seconds_bucket{route="/b",le="+Inf"} 7
http_request_duration_seconds_sum{route="/a"} 1.5
http_request_duration_seconds_count{route="/a"} 5
"#;
    let r = read(
        text,
        &spec(serde_json::json!({"latency": {"maxSeconds": 1}})),
    );
    assert_eq!(
        r,
        reading(&[("200", 10.0), ("503", 2.0)], &[(0.1, 5.0), (INF, 12.0)])
    );
}

#[test]
fn reads_an_untyped_histogram_from_its_bucket_series() {
    let text = "x_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 3\nreqs{code=\"200\"} 3\n";
    let r = read(
        text,
        &spec(
            serde_json::json!({"requestsMetric": "reqs", "latency": {"metric": "x", "maxSeconds": 1}}),
        ),
    );
    assert_eq!(r, reading(&[("200", 3.0)], &[(1.0, 2.0), (INF, 3.0)]));
}

#[test]
fn the_requests_counter_is_found_with_or_without_its_total_suffix() {
    for name in ["http_requests_total", "http_requests"] {
        let r = read(
            DEMO_SCRAPE,
            &spec(serde_json::json!({"requestsMetric": name})),
        );
        assert_eq!(r.requests.values().sum::<f64>(), 41.0, "{name}");
    }
    // Without a latency gate the histogram is not read.
    assert!(read(DEMO_SCRAPE, &spec(serde_json::json!({})))
        .buckets
        .is_empty());
}

#[test]
fn the_quantile_is_interpolated_inside_its_bucket_as_prometheus_does() {
    let buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (INF, 40.0)];
    let q = |q| histogram_quantile(q, &buckets).unwrap();
    // rank 20 falls in (0.1, 0.2], which holds ranks 11..=30: halfway.
    assert!((q(0.5) - 0.15).abs() < 1e-12, "{}", q(0.5));
    // rank 38 in (0.2, 0.4], ranks 31..=40: 8 of 10 in.
    assert!((q(0.95) - 0.36).abs() < 1e-12, "{}", q(0.95));
    // The lowest bucket starts at 0.
    assert!((q(0.05) - 0.02).abs() < 1e-12, "{}", q(0.05));
    // In the +Inf bucket: the highest finite bound.
    assert_eq!(
        histogram_quantile(0.9, &[(0.1, 5.0), (INF, 10.0)]),
        Some(0.1)
    );
    // A lowest bound of 0 or less is the answer itself.
    assert_eq!(
        histogram_quantile(0.5, &[(0.0, 10.0), (INF, 10.0)]),
        Some(0.0)
    );
}

#[test]
fn the_quantile_is_none_where_prometheus_answers_nan() {
    assert_eq!(histogram_quantile(0.5, &[(0.1, 1.0), (0.2, 2.0)]), None);
    assert_eq!(histogram_quantile(0.5, &[(INF, 2.0)]), None);
    assert_eq!(histogram_quantile(0.5, &[(0.1, 0.0), (INF, 0.0)]), None);
    assert_eq!(histogram_quantile(0.5, &[]), None);
}

/// The reference: every bucket's observations spread evenly over it (the assumption
/// interpolation makes), sorted, and the one at the rank read off. Where the rank is a whole
/// number the interpolation must give exactly that observation.
#[test]
fn the_quantile_matches_a_brute_force_reference_on_many_histograms() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    for _ in 0..200 {
        let bounds: Vec<f64> = (1..=1 + next(8)).map(|i| i as f64 * 0.05).collect();
        let per_bucket: Vec<u64> = bounds.iter().map(|_| next(6)).collect();
        let mut observations = Vec::new();
        let (mut buckets, mut cumulative, mut start) = (Vec::new(), 0, 0.0);
        for (&bound, &n) in bounds.iter().zip(&per_bucket) {
            observations.extend((1..=n).map(|i| start + (bound - start) * i as f64 / n as f64));
            cumulative += n;
            buckets.push((bound, cumulative as f64));
            start = bound;
        }
        buckets.push((INF, cumulative as f64));
        observations.sort_by(f64::total_cmp);
        for k in 1..=cumulative {
            let q = k as f64 / cumulative as f64;
            let got = histogram_quantile(q, &buckets).unwrap();
            let want = observations[k as usize - 1];
            assert!(
                (got - want).abs() < 1e-9,
                "q={q} of {buckets:?}: {got} != {want}"
            );
        }
    }
}

#[test]
fn a_failing_error_rate_says_the_share_the_requests_and_the_limit() {
    let s = spec(serde_json::json!({"maxErrorRate": 0.1}));
    let start = reading(&[("200", 100.0)], &[]);
    let end = reading(&[("200", 298.0), ("500", 100.0), ("502", 2.0)], &[]);
    let verdict = judge(&s, &start, &end, WINDOW, None);
    let Verdict::Fail {
        gate,
        observed,
        limit,
        message,
    } = verdict
    else {
        panic!("{verdict:?}");
    };
    assert_eq!((gate, limit), (Gate::ErrorRate, 0.1));
    assert!((observed - 0.34).abs() < 1e-12);
    assert_eq!(
        message,
        "5xx share 34.0 % over 30 s (102 of 300 requests) is above maxErrorRate 10 %"
    );
}

#[test]
fn only_the_window_counts_not_what_the_counters_held_before_it() {
    // A burst of errors long before the window: the counters still hold it.
    let s = spec(serde_json::json!({"maxErrorRate": 0.1}));
    let start = reading(&[("200", 50.0), ("500", 1000.0)], &[]);
    let end = reading(&[("200", 350.0), ("500", 1001.0)], &[]);
    let verdict = judge(&s, &start, &end, WINDOW, None);
    let Verdict::Pass { figures } = verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!((figures.requests, figures.errors), (301, 1));
}

#[test]
fn a_share_at_the_limit_passes_and_one_above_fails() {
    let s = spec(serde_json::json!({"maxErrorRate": 0.25}));
    let at = reading(&[("200", 75.0), ("500", 25.0)], &[]);
    assert!(matches!(
        judge(&s, &Reading::default(), &at, WINDOW, None),
        Verdict::Pass { .. }
    ));
    let above = reading(&[("200", 75.0), ("500", 26.0)], &[]);
    assert!(matches!(
        judge(&s, &Reading::default(), &above, WINDOW, None),
        Verdict::Fail { .. }
    ));
}

#[test]
fn a_counter_that_went_down_is_a_restart_not_a_rate() {
    let s = spec(serde_json::json!({}));
    let start = reading(&[("200", 500.0), ("500", 3.0)], &[]);
    let end = reading(&[("200", 40.0), ("500", 30.0)], &[]);
    let verdict = judge(&s, &start, &end, WINDOW, None);
    assert!(
        matches!(&verdict, Verdict::Inconclusive { why } if why.contains("http_requests_total{code=\"200\"} went down") && why.contains("restarted")),
        "{verdict:?}"
    );
    // A code that vanished went down to 0 just the same.
    let end = reading(&[("200", 900.0)], &[]);
    assert!(matches!(
        judge(&s, &start, &end, WINDOW, None),
        Verdict::Inconclusive { .. }
    ));
    // So did a histogram bucket.
    let s = spec(serde_json::json!({"latency": {"maxSeconds": 1}}));
    let start = reading(&[("200", 1.0)], &[(0.1, 9.0), (INF, 9.0)]);
    let end = reading(&[("200", 100.0)], &[(0.1, 5.0), (INF, 100.0)]);
    assert!(
        matches!(judge(&s, &start, &end, WINDOW, None), Verdict::Inconclusive { why } if why.contains("_bucket{le=\"0.1\"} went down")),
    );
}

#[test]
fn too_few_requests_are_not_judged_and_the_verdict_says_so() {
    let s = spec(serde_json::json!({"minRequests": 20}));
    let end = reading(&[("500", 19.0)], &[]);
    let verdict = judge(&s, &Reading::default(), &end, WINDOW, None);
    assert!(
        matches!(&verdict, Verdict::Inconclusive { why } if why.contains("only 19 requests over 30 s, fewer than minRequests 20")),
        "{verdict:?}"
    );
}

#[test]
fn a_scrape_without_the_counter_or_its_code_label_names_the_field_to_check() {
    let s = spec(serde_json::json!({}));
    let none = judge(&s, &Reading::default(), &Reading::default(), WINDOW, None);
    assert!(
        matches!(&none, Verdict::Inconclusive { why } if why.contains("requestsMetric")),
        "{none:?}"
    );
    let unlabelled = reading(&[("", 100.0)], &[]);
    let v = judge(&s, &Reading::default(), &unlabelled, WINDOW, None);
    assert!(
        matches!(&v, Verdict::Inconclusive { why } if why.contains("codeLabel")),
        "{v:?}"
    );
    let s = spec(serde_json::json!({"latency": {"maxSeconds": 1}}));
    let v = judge(
        &s,
        &Reading::default(),
        &reading(&[("200", 100.0)], &[]),
        WINDOW,
        None,
    );
    assert!(
        matches!(&v, Verdict::Inconclusive { why } if why.contains("latency.metric")),
        "{v:?}"
    );
}

/// 100 requests: 90 within 0.25 s, 10 within 0.75 s; p95 is at rank 95, halfway into
/// (0.25, 0.75]: 0.5 s.
fn slow_end() -> Reading {
    reading(
        &[("200", 100.0)],
        &[(0.25, 90.0), (0.75, 100.0), (INF, 100.0)],
    )
}

#[test]
fn a_latency_quantile_above_its_absolute_limit_fails() {
    let s = spec(serde_json::json!({"latency": {"maxSeconds": 0.4}}));
    let verdict = judge(&s, &Reading::default(), &slow_end(), WINDOW, None);
    assert_eq!(
        verdict,
        Verdict::Fail {
            gate: Gate::Latency,
            observed: 0.5,
            limit: 0.4,
            message:
                "p95 latency 500.0 ms over 30 s (100 requests) is above latency.maxSeconds 400.0 ms"
                    .into()
        }
    );
    let s = spec(serde_json::json!({"latency": {"maxSeconds": 0.5}}));
    assert!(
        matches!(judge(&s, &Reading::default(), &slow_end(), WINDOW, None), Verdict::Pass { figures } if figures.latency == Some(0.5))
    );
}

#[test]
fn a_latency_rise_over_the_previous_revisions_figure_fails_above_max_increase() {
    let s = spec(serde_json::json!({"latency": {"maxIncrease": 0.5}}));
    let verdict = judge(&s, &Reading::default(), &slow_end(), WINDOW, Some(0.25));
    let Verdict::Fail {
        gate,
        observed,
        limit,
        message,
    } = verdict
    else {
        panic!("{verdict:?}");
    };
    assert_eq!((gate, limit), (Gate::LatencyIncrease, 0.5));
    assert!((observed - 1.0).abs() < 1e-9, "{observed}");
    assert_eq!(message, "p95 latency 500.0 ms over 30 s is 100 % above the previous revision's 250.0 ms, more than latency.maxIncrease 50 %");
    // A rise of exactly maxIncrease passes; without a previous figure it is not judged.
    let s = spec(serde_json::json!({"latency": {"maxIncrease": 1.0}}));
    assert!(matches!(
        judge(&s, &Reading::default(), &slow_end(), WINDOW, Some(0.25)),
        Verdict::Pass { .. }
    ));
    let v = judge(&s, &Reading::default(), &slow_end(), WINDOW, None);
    assert!(
        matches!(v, Verdict::Pass { figures } if figures.baseline.is_none() && figures.latency == Some(0.5))
    );
}

#[test]
fn the_previous_revisions_figure_is_the_quantile_of_its_own_window() {
    let s = spec(serde_json::json!({"latency": {"maxIncrease": 0.5}}));
    let start = reading(
        &[("200", 1000.0)],
        &[(0.25, 1000.0), (0.75, 1000.0), (INF, 1000.0)],
    );
    let end = reading(
        &[("200", 1100.0)],
        &[(0.25, 1090.0), (0.75, 1100.0), (INF, 1100.0)],
    );
    let figure = latency_between(&s, &start, &end).unwrap();
    assert!((figure - 0.5).abs() < 1e-12, "{figure}");
    let few = reading(
        &[("200", 1005.0)],
        &[(0.25, 1005.0), (0.75, 1005.0), (INF, 1005.0)],
    );
    assert!(latency_between(&s, &start, &few)
        .unwrap_err()
        .contains("fewer than minRequests"));
    let no_gate = spec(serde_json::json!({}));
    assert!(latency_between(&no_gate, &start, &end).is_err());
}
