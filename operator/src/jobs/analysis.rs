//! One rollout analysis: the scrapes of a window, each judged as it comes, so that a failing
//! gate ends the analysis at the first scrape that shows it rather than at the window's end.
//! Also the previous revision's own latency figure, measured before an update, for
//! `latency.maxIncrease`.
//!
//! The caller records in status that the analysis runs (and the baseline figure, once
//! measured) before it starts this in the [`super::Registry`] (`Kind::Analysis`): an operator
//! that restarts mid-window runs the analysis again from a fresh start scrape, which is safe
//! since nothing here acts; measuring the baseline again would measure the new revision.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::act::metrics::{scrape, ScrapeError};
use crate::api::rollout::AnalysisSpec;
use crate::decide::analysis::{self, Reading, Verdict};

/// The longest a scrape may take; shorter with a shorter interval, so that one slow answer
/// does not push the scrapes after it.
const MAX_SCRAPE_TIME: Duration = Duration::from_secs(10);

/// Watches the metrics page at `url` (see `AnalysisSpec::url`) for `windowSeconds`: a scrape
/// at the start, every `intervalSeconds`, and at the end. Every scrape after the first is
/// judged against the first; a Fail is returned at once, otherwise the verdict of the last
/// scrape. `baseline` is the previous revision's figure from [`baseline_latency`].
///
/// A scrape that fails is skipped (the window starts at the first one that answers); when no
/// two scrapes answered, the verdict is Inconclusive with the last scrape error. Cancelled, it
/// is Inconclusive too.
pub async fn analyse(
    spec: &AnalysisSpec,
    url: &str,
    baseline: Option<f64>,
    cancel: CancellationToken,
) -> Verdict {
    let timeout = scrape_timeout(spec);
    let watched = watch(spec, baseline, || scrape(url, timeout));
    cancel
        .run_until_cancelled(watched)
        .await
        .unwrap_or_else(|| Verdict::Inconclusive {
            why: "the analysis was cancelled before its window ended".to_owned(),
        })
}

/// The previous revision's own latency figure (the latency gate's quantile, in seconds) over
/// `window`, from a scrape at each end: call it before the update, with the address of the
/// container still serving. A few scrape intervals are enough for a busy service; a quiet one
/// needs longer to see `minRequests` requests. Err says why there is no figure, in a sentence.
pub async fn baseline_latency(
    spec: &AnalysisSpec,
    url: &str,
    window: Duration,
    cancel: CancellationToken,
) -> Result<f64, String> {
    let timeout = scrape_timeout(spec);
    let measured = async {
        let read = |text: String| analysis::read(&text, spec);
        let start = scrape(url, timeout).await.map(read);
        tokio::time::sleep(window).await;
        let end = scrape(url, timeout).await.map(read);
        match (start, end) {
            (Ok(start), Ok(end)) => analysis::latency_between(spec, &start, &end),
            (Err(e), _) | (_, Err(e)) => Err(e.message),
        }
    };
    cancel
        .run_until_cancelled(measured)
        .await
        .unwrap_or_else(|| Err("the baseline measurement was cancelled".to_owned()))
}

fn scrape_timeout(spec: &AnalysisSpec) -> Duration {
    Duration::from_secs(spec.interval_seconds.into()).clamp(Duration::from_secs(1), MAX_SCRAPE_TIME)
}

/// The loop of [`analyse`], with the scrape given so that tests can script the pages.
async fn watch<S, F>(spec: &AnalysisSpec, baseline: Option<f64>, mut scrape: S) -> Verdict
where
    S: FnMut() -> F,
    F: Future<Output = Result<String, ScrapeError>>,
{
    let interval = Duration::from_secs(spec.interval_seconds.max(1).into());
    let mut at = Instant::now();
    let deadline = at + Duration::from_secs(spec.window_seconds.into());
    let mut start: Option<(Instant, Reading)> = None;
    let mut last: Option<Verdict> = None;
    let mut error: Option<String> = None;
    loop {
        tokio::time::sleep_until(at).await;
        match scrape().await {
            Ok(text) => {
                let reading = analysis::read(&text, spec);
                let now = Instant::now();
                match &start {
                    None => start = Some((now, reading)),
                    Some((began, first)) => {
                        let verdict =
                            analysis::judge(spec, first, &reading, now - *began, baseline);
                        if matches!(verdict, Verdict::Fail { .. }) {
                            return verdict;
                        }
                        last = Some(verdict);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e.message, "rollout analysis: a scrape failed");
                error = Some(e.message);
            }
        }
        if at >= deadline {
            break;
        }
        at = (at + interval).min(deadline);
    }
    last.unwrap_or_else(|| Verdict::Inconclusive {
        why: match error {
            Some(e) => format!("the metrics page could not be scraped twice in the window: {e}"),
            None => {
                "the window held a single scrape; make intervalSeconds shorter than windowSeconds"
                    .to_owned()
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::metrics::ScrapeFailure;
    use crate::act::ClientError;
    use crate::decide::analysis::Gate;
    use std::sync::{Arc, Mutex};

    fn spec(json: serde_json::Value) -> AnalysisSpec {
        let mut base = serde_json::json!({"services": ["backend"], "metrics": {"port": 8000},
            "windowSeconds": 30, "intervalSeconds": 5, "minRequests": 20, "maxErrorRate": 0.1});
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    type Page = std::future::Ready<Result<String, ScrapeError>>;
    type Scraped = Arc<Mutex<Vec<Duration>>>;

    /// A service whose counters grow with (paused) time: `per_second` requests a second,
    /// `errors` of them 5xx; and the instants it was scraped at, from the start.
    fn service(per_second: u64, errors: f64) -> (impl FnMut() -> Page, Scraped) {
        let began = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let seen = times.clone();
        let scrape = move || {
            let t = began.elapsed();
            seen.lock().unwrap().push(t);
            let total = per_second as f64 * t.as_secs_f64();
            let bad = (total * errors).round();
            std::future::ready(Ok(format!(
                "http_requests_total{{code=\"200\"}} {}\nhttp_requests_total{{code=\"500\"}} {bad}\n",
                total - bad
            )))
        };
        (scrape, times)
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_service_passes_at_the_end_of_the_window_after_every_scrape() {
        let (scrape, times) = service(10, 0.0);
        let verdict = watch(&spec(serde_json::json!({})), None, scrape).await;
        assert!(
            matches!(&verdict, Verdict::Pass { figures } if figures.requests == 300),
            "{verdict:?}"
        );
        let secs: Vec<u64> = times
            .lock()
            .unwrap()
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(secs, [0, 5, 10, 15, 20, 25, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_error_rate_ends_the_analysis_at_the_first_scrape_that_shows_it() {
        let (scrape, times) = service(10, 0.5);
        let verdict = watch(&spec(serde_json::json!({})), None, scrape).await;
        assert!(
            matches!(
                verdict,
                Verdict::Fail {
                    gate: Gate::ErrorRate,
                    ..
                }
            ),
            "{verdict:?}"
        );
        // 50 requests by the second scrape: more than minRequests, judged there.
        assert_eq!(times.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_that_never_answers_is_inconclusive_with_the_scrape_error() {
        let scrape = || {
            std::future::ready(Err(ClientError {
                kind: ScrapeFailure::Unreachable,
                message: "GET http://10.0.0.1:8000/metrics: Connection refused".to_owned(),
            }))
        };
        let verdict = watch(&spec(serde_json::json!({})), None, scrape).await;
        assert!(
            matches!(&verdict, Verdict::Inconclusive { why } if why.contains("Connection refused")),
            "{verdict:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_analysis_is_inconclusive() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let verdict = analyse(
            &spec(serde_json::json!({})),
            "http://127.0.0.1:9/metrics",
            None,
            cancel,
        )
        .await;
        assert!(matches!(verdict, Verdict::Inconclusive { why } if why.contains("cancelled")));
    }
}
