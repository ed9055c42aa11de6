//! rollout (issue 11): how fast a bad revision is undone, and what a client sees while a good
//! one goes in. The operator runs in this process as the e2e tests run it ([`Harness`]: the
//! real reconcile against the real engine with the local store, a pass at least every 250 ms),
//! one stack per figure, each the demo (PostgreSQL, Redis, the demo backend), brought up once
//! and rolled out once per run:
//! - network: the backend reached on the project network (no published port: surged), a
//!   `demo-app poll` client on that network asking `backend:8000` every 20 ms;
//! - published: the backend behind a published host port (Recreate), the client polling the
//!   host port; with the new container's time from start to healthy (Docker's events);
//! - compose: the reference, a stack docker-compose brought up itself, the same change applied
//!   by `docker-compose up -d --no-deps backend`, polled both ways;
//! - bad probe: the new backend fails `/health`; from its start (Docker's `start` event) until
//!   the previous revision serves alone again (the new container's `die`: a surged rollback
//!   never takes the old one off the alias, which kept answering throughout);
//! - bad analysis: the new backend answers half its requests with 500, caught by the analysis.
//!
//! Every poller logs each request; a failed one is told with its wall-clock time beside the
//! engine's events of that moment, which is how a lost request is traced to its cause.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use stackwarden::api::rollout_status::{Method, RolloutPhase, RolloutStatus};
use stackwarden::api::{ConditionStatus, ConditionType, ServiceStackSpec};
use stackwarden_tests::harness::{
    demo_spec, docker, poller_summary, start_poller, unpublished_demo, with_backend_env,
    Containers, Harness,
};

use super::{median, round3};

const TIMEOUT: Duration = Duration::from_secs(300);
/// The demo backend's Docker healthcheck: every 1 s, unhealthy after 3 failures. The
/// bad-probe stack sets its start period to 1 s: the image's own (10 s, which Docker merges
/// into a healthcheck that gives none) would count no failure for its first 10 s.
const PROBE_PERIOD_S: u32 = 1;
const PROBE_FAILURES: u32 = 3;
const PROBE_START_PERIOD_S: u32 = 1;
const ANALYSIS_WINDOW_S: u32 = 10;

pub async fn run(runs: usize, surge_only: bool) -> anyhow::Result<()> {
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    stackwarden_tests::images::ensure_images()?;
    if surge_only {
        return surges(runs).await;
    }
    let load_start = loadavg();
    let stacks = Stacks::up().await?;
    let mut rounds = Vec::new();
    for run in 1..=runs {
        let round = stacks.round(run).await?;
        println!("run {run}: {}", round.line());
        rounds.push(round);
    }
    let load_end = loadavg();
    println!("load average (1 5 15 min): at the start {load_start}, at the end {load_end}");
    println!("{}", report(&rounds, &load_start, &load_end));
    Ok(())
}

/// `--surge-only`: the network figure alone, `runs` rollouts of one stack, for chasing a lost
/// request (each is told with the engine's events around it). `BENCH_DEMO_IMAGE` runs the
/// backend from another image of the demo app.
async fn surges(runs: usize) -> anyhow::Result<()> {
    let h = Harness::new("bench-roll-net");
    let mut spec = unpublished_demo(&h.project);
    // Another build of the demo app to measure, as is (the poller stays the test image's).
    if let Ok(image) = std::env::var("BENCH_DEMO_IMAGE") {
        let ours = stackwarden_tests::images::DEMO_APP_IMAGE;
        spec.compose.file = spec.compose.file.replace(ours, &image);
    }
    h.apply(spec.clone());
    h.until_ready(TIMEOUT).await;
    let mut polls = Vec::new();
    for run in 1..=runs {
        let log = EventLog::start()?;
        let poll = good_network(&h, &spec, &(run + 1).to_string(), &log).await?;
        println!("run {run}: network {}", poll.line());
        polls.push(poll);
    }
    let mut gaps: Vec<f64> = polls.iter().map(|p| p.longest_gap_s).collect();
    println!(
        "{}",
        json!({
            "bench": "rollout --surge-only",
            "runs": runs,
            "network_failed_requests": polls.iter().map(|p| p.failed).sum::<u64>(),
            "runs_with_failed_requests": polls.iter().filter(|p| p.failed > 0).count(),
            "network_requests": polls.iter().map(|p| p.requests).sum::<u64>(),
            "network_longest_gap_s": round3(median(&mut gaps)),
            "network_longest_gap_max_s": round3(gaps.last().copied().unwrap_or(f64::NAN)),
            "load_end": loadavg(),
        })
    );
    Ok(())
}

/// What one run measured.
struct Round {
    network: Poll,
    published: Poll,
    published_time_to_healthy_s: f64,
    compose: Poll,
    compose_published: Poll,
    bad_probe_recovery_s: f64,
    bad_analysis_recovery_s: f64,
}

impl Round {
    fn line(&self) -> String {
        format!(
            "network {} | published {} (new container healthy after {:.2} s) | docker-compose: network {} published {} | bad probe undone in {:.2} s, bad analysis in {:.2} s",
            self.network.line(),
            self.published.line(),
            self.published_time_to_healthy_s,
            self.compose.line(),
            self.compose_published.line(),
            self.bad_probe_recovery_s,
            self.bad_analysis_recovery_s,
        )
    }
}

/// A poller's summary.
#[derive(Clone, Copy)]
struct Poll {
    requests: u64,
    failed: u64,
    longest_gap_s: f64,
}

impl Poll {
    fn line(&self) -> String {
        format!(
            "{} requests, {} failed, longest gap {:.3} s",
            self.requests, self.failed, self.longest_gap_s
        )
    }
}

fn report(rounds: &[Round], load_start: &str, load_end: &str) -> Value {
    let col = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let med = |f: &dyn Fn(&Round) -> f64| round3(median(&mut col(f)));
    let max = |f: &dyn Fn(&Round) -> f64| round3(col(f).into_iter().fold(f64::MIN, f64::max));
    let total = |f: &dyn Fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
    json!({
        "bench": "rollout",
        "runs": rounds.len(),
        "operator": "in-process (tests' Harness)",
        "bad_probe_recovery_s": med(&|r| r.bad_probe_recovery_s),
        "bad_probe_recovery_max_s": max(&|r| r.bad_probe_recovery_s),
        "bad_probe_target_s": f64::from(PROBE_START_PERIOD_S + PROBE_FAILURES * PROBE_PERIOD_S + 2),
        "bad_probe_start_period_s": PROBE_START_PERIOD_S,
        "bad_analysis_recovery_s": med(&|r| r.bad_analysis_recovery_s),
        "bad_analysis_recovery_max_s": max(&|r| r.bad_analysis_recovery_s),
        "bad_analysis_target_s": f64::from(ANALYSIS_WINDOW_S + 2),
        "network_failed_requests": total(&|r| r.network.failed),
        "network_requests": total(&|r| r.network.requests),
        "network_longest_gap_s": med(&|r| r.network.longest_gap_s),
        "network_longest_gap_max_s": max(&|r| r.network.longest_gap_s),
        "published_failed_requests": total(&|r| r.published.failed),
        "published_longest_gap_s": med(&|r| r.published.longest_gap_s),
        "published_longest_gap_max_s": max(&|r| r.published.longest_gap_s),
        "published_time_to_healthy_s": med(&|r| r.published_time_to_healthy_s),
        "published_gap_over_time_to_healthy_max_s":
            max(&|r| r.published.longest_gap_s - r.published_time_to_healthy_s),
        "compose_failed_requests": total(&|r| r.compose.failed),
        "compose_longest_gap_s": med(&|r| r.compose.longest_gap_s),
        "compose_longest_gap_max_s": max(&|r| r.compose.longest_gap_s),
        "compose_published_failed_requests": total(&|r| r.compose_published.failed),
        "compose_published_longest_gap_s": med(&|r| r.compose_published.longest_gap_s),
        "load_start": load_start,
        "load_end": load_end,
    })
}

/// The stacks, each brought up once and rolled out once per run.
struct Stacks {
    network: (Harness, ServiceStackSpec),
    published: (Harness, ServiceStackSpec, u16),
    bad_probe: (Harness, ServiceStackSpec),
    bad_analysis: (Harness, ServiceStackSpec),
    compose: Compose,
}

impl Stacks {
    async fn up() -> anyhow::Result<Self> {
        let network = Harness::new("bench-roll-net");
        let net_spec = unpublished_demo(&network.project);
        let published = Harness::new("bench-roll-pub");
        let port = free_port()?;
        let pub_spec = published_on(demo_spec(&published.project), port);
        let bad_probe = Harness::new("bench-roll-probe");
        // The default progress deadline (120 s): a probe verdict of failing ends the rollout
        // at once (decide::rollout), the deadline is for probes that never come to one.
        let mut probe_spec = unpublished_demo(&bad_probe.project);
        let retries = format!("retries: {PROBE_FAILURES}\n");
        anyhow::ensure!(
            probe_spec.compose.file.matches(&retries).count() == 1,
            "the demo backend's healthcheck changed shape"
        );
        probe_spec.compose.file = probe_spec.compose.file.replace(
            &retries,
            &format!("{retries}      start_period: {PROBE_START_PERIOD_S}s\n"),
        );
        let bad_analysis = Harness::new("bench-roll-5xx");
        let analysis_spec = analysed(unpublished_demo(&bad_analysis.project))?;
        let stacks = [
            (&network, &net_spec),
            (&published, &pub_spec),
            (&bad_probe, &probe_spec),
            (&bad_analysis, &analysis_spec),
        ];
        for (h, spec) in stacks {
            h.apply(spec.clone());
        }
        let started = Instant::now();
        futures::future::join_all(stacks.map(|(h, _)| h.until_ready(TIMEOUT))).await;
        let compose = Compose::up(&format!("bench-dc-roll-{}", std::process::id()))?;
        println!(
            "stacks up in {:.1} s (4 under stackwarden, 1 under docker-compose)",
            started.elapsed().as_secs_f64()
        );
        Ok(Self {
            network: (network, net_spec),
            published: (published, pub_spec, port),
            bad_probe: (bad_probe, probe_spec),
            bad_analysis: (bad_analysis, analysis_spec),
            compose,
        })
    }

    async fn round(&self, run: usize) -> anyhow::Result<Round> {
        let release = (run + 1).to_string();
        let log = &EventLog::start()?;
        let network = good_network(&self.network.0, &self.network.1, &release, log).await?;
        let (compose, compose_published) = self.compose.update(&release, log)?;
        let (h, spec, port) = &self.published;
        let (published, published_time_to_healthy_s) =
            good_published(h, spec, *port, &release, log).await?;
        let (h, spec) = &self.bad_probe;
        let bad = with_backend_env(
            &with_backend_env(spec, "DEMO_RELEASE", &release),
            "DEMO_FAIL_HEALTH",
            "1",
        );
        let bad_probe_recovery_s = undone(h, bad, None, &release, log).await?;
        let (h, spec) = &self.bad_analysis;
        let bad = with_backend_env(
            &with_backend_env(spec, "DEMO_RELEASE", &release),
            "DEMO_ERROR_RATE",
            "0.5",
        );
        let traffic = format!("{}_default", h.project);
        let bad_analysis_recovery_s = undone(h, bad, Some(&traffic), &release, log).await?;
        Ok(Round {
            network,
            published,
            published_time_to_healthy_s,
            compose,
            compose_published,
            bad_probe_recovery_s,
            bad_analysis_recovery_s,
        })
    }
}

/// A good rollout of the surged backend, polled on the project network.
async fn good_network(
    h: &Harness,
    spec: &ServiceStackSpec,
    release: &str,
    log: &EventLog,
) -> anyhow::Result<Poll> {
    let poller = Poller::start(
        &format!("{}-poller-{release}", h.project),
        &format!("{}_default", h.project),
        "http://backend:8000/",
    );
    let r = rolled_out(h, with_backend_env(spec, "DEMO_RELEASE", release)).await?;
    anyhow::ensure!(
        r.services[0].method == Method::Surge,
        "the network backend was not surged: {r:?}"
    );
    Ok(poller.finish(&h.project, log))
}

/// A good rollout of the published backend (Recreate), polled on the host port; and the new
/// container's time from start to healthy.
async fn good_published(
    h: &Harness,
    spec: &ServiceStackSpec,
    port: u16,
    release: &str,
    log: &EventLog,
) -> anyhow::Result<(Poll, f64)> {
    let poller = Poller::start(
        &format!("{}-poller-{release}", h.project),
        "host",
        &format!("http://127.0.0.1:{port}/"),
    );
    let r = rolled_out(h, with_backend_env(spec, "DEMO_RELEASE", release)).await?;
    let poll = poller.finish(&h.project, log);
    let s = &r.services[0];
    anyhow::ensure!(
        s.method == Method::Recreate,
        "the published backend was not recreated: {r:?}"
    );
    let new = s
        .new_container
        .as_deref()
        .context("no new container recorded")?;
    let healthy = log.first(new, "health_status: healthy")?;
    println!(
        "  published: new container started {}, healthy {}",
        log.first(new, "start")?.format("%H:%M:%S%.3f"),
        healthy.format("%H:%M:%S%.3f")
    );
    Ok((poll, seconds(log.first(new, "start")?, healthy)))
}

/// Applies `next` and waits for its rollout to complete with the stack Ready.
async fn rolled_out(h: &Harness, next: ServiceStackSpec) -> anyhow::Result<RolloutStatus> {
    let before = h.status().rollout.map(|r| r.revision);
    h.apply(next);
    h.until(
        "the rollout to complete and the stack Ready",
        TIMEOUT,
        |h| {
            let ready = h
                .condition(ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True);
            h.status()
                .rollout
                .is_some_and(|r| Some(r.revision) != before && r.phase == RolloutPhase::Complete)
                && ready
        },
    )
    .await;
    let r = h.status().rollout.context("no rollout recorded")?;
    anyhow::ensure!(r.services.len() == 1, "only the backend changes: {r:?}");
    Ok(r)
}

/// Applies a bad revision of the backend (traffic from a poller on `traffic_on`, for an
/// analysis to judge), waits until it is rolled back, and returns the time from the new
/// container's start until it died, the old one having served alone since.
async fn undone(
    h: &Harness,
    bad: ServiceStackSpec,
    traffic_on: Option<&str>,
    release: &str,
    log: &EventLog,
) -> anyhow::Result<f64> {
    let before = h.status().rollout.map(|r| r.revision);
    let old = backends(&h.project);
    let poller = traffic_on.map(|net| {
        let name = format!("{}-poller-{release}", h.project);
        Poller::start(&name, net, "http://backend:8000/")
    });
    h.apply(bad);
    h.until("the bad rollout to be rolled back", TIMEOUT, |h| {
        h.status()
            .rollout
            .is_some_and(|r| Some(r.revision) != before && r.phase == RolloutPhase::RolledBack)
    })
    .await;
    if let Some(p) = poller {
        // Half the new container's answers are 500s on purpose: its figures say nothing.
        p.stop();
    }
    let r = h.status().rollout.context("no rollout recorded")?;
    let new = r.services[0]
        .new_container
        .as_deref()
        .context("no new container recorded")?;
    anyhow::ensure!(
        backends(&h.project) == old,
        "the old backend does not run alone again"
    );
    println!(
        "  {}: rolled back: {}",
        h.name,
        r.failure.as_deref().unwrap_or("(no failure recorded)")
    );
    Ok(seconds(log.first(new, "start")?, log.first(new, "die")?))
}

/// The demo stack brought up and updated by docker-compose itself, its backend published on
/// a fixed host port.
struct Compose {
    project: String,
    port: u16,
    spec: ServiceStackSpec,
    file: tempfile::NamedTempFile,
}

impl Compose {
    fn up(project: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let spec = published_on(demo_spec(project), port);
        let c = Self {
            project: project.to_owned(),
            port,
            spec,
            file: tempfile::NamedTempFile::new()?,
        };
        c.compose(&c.spec.compose.file, &["up", "-d"])?;
        let start = Instant::now();
        while !c.backend_healthy().1 {
            anyhow::ensure!(
                start.elapsed() < TIMEOUT,
                "docker-compose's demo never got healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(c)
    }

    /// `docker-compose up -d --no-deps backend` with the backend changed, polled on the
    /// project network and on the host port until the new backend is healthy.
    fn update(&self, release: &str, log: &EventLog) -> anyhow::Result<(Poll, Poll)> {
        let (old, _) = self.backend_healthy();
        let net = Poller::start(
            &format!("{}-poller-{release}", self.project),
            &format!("{}_default", self.project),
            "http://backend:8000/",
        );
        let host = Poller::start(
            &format!("{}-hpoller-{release}", self.project),
            "host",
            &format!("http://127.0.0.1:{}/", self.port),
        );
        let next = with_backend_env(&self.spec, "DEMO_RELEASE", release);
        self.compose(&next.compose.file, &["up", "-d", "--no-deps", "backend"])?;
        let start = Instant::now();
        loop {
            let (id, healthy) = self.backend_healthy();
            if healthy && id != old {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < TIMEOUT,
                "docker-compose's new backend never got healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((
            net.finish(&self.project, log),
            host.finish(&self.project, log),
        ))
    }

    fn compose(&self, file: &str, args: &[&str]) -> anyhow::Result<()> {
        std::fs::write(self.file.path(), file)?;
        let path = self.file.path().to_str().context("temp path")?;
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "-f", path])
            .args(args)
            .envs(&self.spec.variables)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "docker-compose {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The running backend's id and whether it is healthy.
    fn backend_healthy(&self) -> (String, bool) {
        let Some(id) = backends(&self.project).into_iter().next() else {
            return (String::new(), false);
        };
        let health = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "healthy")
            .unwrap_or(false);
        (id, health)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        stackwarden_tests::harness::remove_project(&self.project);
    }
}

/// A `demo-app poll` container telling every request on its stderr, removed when dropped.
struct Poller {
    name: String,
    _cleanup: Containers,
}

impl Poller {
    /// Starts it and waits for its first successful answer: a gap is measured between two
    /// answers, so the change must come after one.
    fn start(name: &str, network: &str, url: &str) -> Self {
        let cleanup = Containers(vec![name.to_owned()]);
        start_poller(name, &[("DEMO_POLL_VERBOSE", "1")], network, url);
        let started = Instant::now();
        while !Self::answered(name) {
            assert!(
                started.elapsed() < TIMEOUT,
                "poller {name} never got an answer from {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            name: name.to_owned(),
            _cleanup: cleanup,
        }
    }

    fn answered(name: &str) -> bool {
        Command::new("docker")
            .args(["logs", name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("Ok(())"))
    }

    fn stop(self) {
        docker(&["stop", &self.name]);
    }

    /// Stops it and reads its summary; a failed request is told with what the engine did
    /// around it (`project`'s containers and networks).
    fn finish(self, project: &str, log: &EventLog) -> Poll {
        let s = poller_summary(&self.name);
        let poll = Poll {
            requests: s["requests"].as_u64().unwrap_or(0),
            failed: s["failed"].as_u64().unwrap_or(0),
            longest_gap_s: s["longest_gap_s"].as_f64().unwrap_or(f64::NAN),
        };
        if poll.failed > 0 {
            if let Err(e) = self.tell_failures(project, log) {
                println!("  ({}: could not tell its failures: {e:#})", self.name);
            }
        }
        poll
    }

    /// Each failed request at its wall-clock time (the poller's start plus the offset it
    /// logged), then the engine's events for `project` from 2 s before the first to 2 s after.
    fn tell_failures(&self, project: &str, log: &EventLog) -> anyhow::Result<()> {
        let started = started_at(&self.name)?;
        let logs = Command::new("docker").args(["logs", &self.name]).output()?;
        let stderr = String::from_utf8_lossy(&logs.stderr);
        let failures: Vec<(DateTime<Utc>, &str)> = stderr
            .lines()
            .filter(|l| !l.ends_with("Ok(())"))
            .filter_map(|l| {
                let offset: f64 = l.split(' ').next()?.parse().ok()?;
                Some((
                    started + chrono::Duration::microseconds((offset * 1e6) as i64),
                    l,
                ))
            })
            .collect();
        let (Some(first), Some(last)) = (failures.first(), failures.last()) else {
            return Ok(());
        };
        println!(
            "  {} failed requests (start offset s, duration s, outcome):",
            self.name
        );
        for (at, line) in &failures {
            println!("    {} {line}", at.format("%H:%M:%S%.3f"));
        }
        let window = (
            first.0 - chrono::Duration::seconds(2),
            last.0 + chrono::Duration::seconds(2),
        );
        for line in log.around(project, window) {
            println!("    event {line}");
        }
        Ok(())
    }
}

/// The engine's container and network events from its start on, as `docker events` streams
/// them into a file: the engine keeps only its last 256 events for `--since` to replay, a few
/// seconds' worth with healthchecks running, so a measurement subscribes before it acts.
struct EventLog {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
}

/// One engine event: when, its type (`container`, `network`), action, the actor's id and
/// name, and for a network event the container concerned.
struct Event {
    at: DateTime<Utc>,
    line: String,
    id: String,
}

impl EventLog {
    fn start() -> anyhow::Result<Self> {
        let file = tempfile::NamedTempFile::new()?;
        let since = (Utc::now() - chrono::Duration::seconds(1)).timestamp();
        let child = Command::new("docker")
            .args(["events", "--since", &since.to_string()])
            .args(["--filter", "type=container", "--filter", "type=network"])
            .args([
                "--format",
                "{{.TimeNano}} {{.Actor.ID}} {{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.container}}",
            ])
            .stdout(file.reopen()?)
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("docker events")?;
        Ok(Self { child, file })
    }

    fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(self.file.path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (nanos, rest) = l.split_once(' ')?;
                let (id, line) = rest.split_once(' ')?;
                Some(Event {
                    at: DateTime::from_timestamp_nanos(nanos.parse().ok()?),
                    line: line.to_owned(),
                    id: id.to_owned(),
                })
            })
            .collect()
    }

    /// The time of the first `action` of container `id`, waiting a little for the stream.
    fn first(&self, id: &str, action: &str) -> anyhow::Result<DateTime<Utc>> {
        let start = Instant::now();
        loop {
            let prefix = format!("container {action} ");
            let found = self
                .events()
                .into_iter()
                .find(|e| e.id == id && e.line.starts_with(&prefix));
            if let Some(e) = found {
                return Ok(e.at);
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "no {action} event of container {id} in the engine's events"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The events in `window` that mention `project`, one line each.
    fn around(&self, project: &str, window: (DateTime<Utc>, DateTime<Utc>)) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.at >= window.0 && e.at <= window.1 && e.line.contains(project))
            .filter(|e| !e.line.contains("exec_"))
            .map(|e| format!("{} {}", e.at.format("%H:%M:%S%.3f"), e.line))
            .collect()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn started_at(container: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = docker(&["inspect", "-f", "{{.State.StartedAt}}", container]);
    Ok(DateTime::parse_from_rfc3339(text.trim())?.with_timezone(&Utc))
}

/// Ids of the project's running backend containers.
fn backends(project: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "label=com.docker.compose.service=backend",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The demo with its backend on a fixed host port: a port Docker picks would change with
/// every new container, and the client would lose it.
fn published_on(mut spec: ServiceStackSpec, port: u16) -> ServiceStackSpec {
    let any = "\"127.0.0.1::8000\"";
    assert!(
        spec.compose.file.contains(any),
        "the demo no longer publishes {any}"
    );
    spec.compose.file = spec
        .compose
        .file
        .replace(any, &format!("\"127.0.0.1:{port}:8000\""));
    spec
}

fn analysed(mut spec: ServiceStackSpec) -> anyhow::Result<ServiceStackSpec> {
    spec.rollout.analysis = Some(serde_json::from_value(json!({
        "services": ["backend"],
        "metrics": {"port": 8000},
        "windowSeconds": ANALYSIS_WINDOW_S,
        "intervalSeconds": 2,
        "maxErrorRate": 0.1,
        "minRequests": 20,
    }))?);
    Ok(spec)
}

/// A host port free just now (the kernel's pick, released at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
