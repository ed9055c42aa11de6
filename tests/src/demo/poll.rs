//! The `poll` subcommand: a client that asks one URL every few milliseconds over a fresh
//! connection each time (resolving the name afresh and trying every address it gets, as curl
//! and Python's requests do), and tells how many requests failed and the longest time without
//! a successful answer. The zero-downtime tests and the rollout benchmark read its one JSON line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a poll saw: the JSON line it prints at its end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub failed: u64,
    /// The longest time between two successful answers, in seconds.
    pub longest_gap_s: f64,
    /// What went wrong first and when (seconds after the start), if anything did.
    pub first_failure: Option<String>,
}

/// The running tally; the clock is a parameter so that the arithmetic is testable.
#[derive(Debug)]
pub struct Tally {
    started: Instant,
    requests: u64,
    failed: u64,
    last_ok: Option<Instant>,
    longest_gap: Duration,
    first_failure: Option<String>,
}

impl Tally {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            requests: 0,
            failed: 0,
            last_ok: None,
            longest_gap: Duration::ZERO,
            first_failure: None,
        }
    }

    /// Counts one request that ended at `at`: Ok for a successful answer, Err with why not.
    pub fn record(&mut self, at: Instant, outcome: Result<(), String>) {
        self.requests += 1;
        match outcome {
            Ok(()) => {
                if let Some(last) = self.last_ok {
                    self.longest_gap = self.longest_gap.max(at.saturating_duration_since(last));
                }
                self.last_ok = Some(at);
            }
            Err(why) => {
                self.failed += 1;
                if self.first_failure.is_none() {
                    let after = at.saturating_duration_since(self.started).as_secs_f64();
                    self.first_failure = Some(format!("after {after:.3} s: {why}"));
                }
            }
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            requests: self.requests,
            failed: self.failed,
            longest_gap_s: self.longest_gap.as_secs_f64(),
            first_failure: self.first_failure.clone(),
        }
    }
}

/// One GET over a connection of its own; any answer but a 2xx is a failure.
fn get_once(url: &str) -> Result<(), String> {
    // No idle connections kept: every request connects (and resolves) anew, so a container
    // taken away between two requests shows as it would to a client that reconnects.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        // Reading the body to its end: an answer cut off midway is a failure too.
        response
            .into_body()
            .read_to_string()
            .map(|_| ())
            .map_err(|e| format!("{status}, body cut off: {e}"))
    } else {
        Err(format!("{status}"))
    }
}

/// Asks `url` every `every` until `stop` is set, and tallies the answers.
/// With `verbose`, every request is told on stderr (start, duration, outcome), for finding out
/// where a gap came from.
pub fn poll(url: &str, every: Duration, stop: &AtomicBool, verbose: bool) -> Summary {
    let started = Instant::now();
    let mut tally = Tally::new(started);
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let outcome = get_once(url);
        if verbose {
            eprintln!(
                "{:.3} {:.3} {:?}",
                began.duration_since(started).as_secs_f64(),
                began.elapsed().as_secs_f64(),
                outcome
            );
        }
        tally.record(Instant::now(), outcome);
        if let Some(rest) = every.checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    tally.summary()
}

/// Polls on a thread of its own until SIGTERM or SIGINT, or `for_s` seconds when given;
/// `DEMO_POLL_VERBOSE=1` tells every request on stderr.
pub fn poll_until_stopped(url: String, every: Duration, for_s: Option<u64>) -> Summary {
    let verbose = std::env::var("DEMO_POLL_VERBOSE").is_ok_and(|v| v == "1");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || poll(&url, every, &stop, verbose))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("an async runtime for the signal handlers");
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        let limit = async {
            match for_s {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            () = limit => {}
        }
    });
    stop.store(true, Ordering::SeqCst);
    poller.join().expect("the poller thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_longest_gap_is_between_two_successful_answers_across_failures() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        tally.record(t0 + ms(20), Ok(()));
        tally.record(t0 + ms(40), Ok(()));
        tally.record(t0 + ms(60), Err("connection refused".into()));
        tally.record(t0 + ms(80), Err("connection refused".into()));
        tally.record(t0 + ms(140), Ok(()));
        tally.record(t0 + ms(160), Ok(()));
        let s = tally.summary();
        assert_eq!((s.requests, s.failed), (6, 2));
        assert!((s.longest_gap_s - 0.1).abs() < 1e-9, "{}", s.longest_gap_s);
    }

    #[test]
    fn the_first_failure_is_kept_with_when_it_happened() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        tally.record(t0 + ms(1500), Err("502 Bad Gateway".into()));
        tally.record(t0 + ms(1600), Err("connection refused".into()));
        assert_eq!(
            tally.summary().first_failure.as_deref(),
            Some("after 1.500 s: 502 Bad Gateway")
        );
    }

    #[test]
    fn a_poll_without_failures_says_none_in_its_json_line() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        tally.record(t0 + ms(20), Ok(()));
        let line = serde_json::to_string(&tally.summary()).unwrap();
        assert_eq!(
            line,
            r#"{"requests":1,"failed":0,"longest_gap_s":0.0,"first_failure":null}"#
        );
    }
}
