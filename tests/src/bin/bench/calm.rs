//! calm (issue 8): what a steady operator costs. N demo stacks (PostgreSQL, Redis and the demo
//! backend, each with a 1 s Docker healthcheck and the demo's operator probes) idle under the
//! real `stackwarden local` binary, on an engine that also runs unrelated containers with 1 s
//! healthchecks (one labelled as another operator's stack). Over a window of M minutes:
//! reconcile passes per stack-minute, status writes and events (from the operator's
//! /metrics), the operator's CPU (% of one core, from /proc/PID/stat) and its RSS at the end.
//! The reference, measured over the same window: the engine's own event rate (everything
//! `docker events` shows, which the operator's filtered subscription has to stay deaf to) and
//! dockerd's CPU.
//!
//! The binary, not the driver in-process: the figures are those of the process a user runs,
//! and the bench's own threads (the events counter) do not count as the operator's CPU.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::round2;
use anyhow::{bail, Context as _};
use stackwarden::docker::{labels, DECISIVE_ACTIONS};
use stackwarden::store::local::LocalStore;
use stackwarden_tests::harness::{
    demo_stack, local_ready, metric_sum, run_busy, write_manifest, Containers, OperatorProcess,
};

const NAMESPACE: &str = "bench";
/// Unrelated containers with a 1 s healthcheck: the neighbours on a real host.
const BUSY_CONTAINERS: usize = 3;
/// After every stack is Ready, the window starts once no status write or event came for this
/// long (the first probe rounds after Ready may still be news).
const QUIET: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(stacks: usize, minutes: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        stacks > 0 && minutes > 0,
        "--stacks and --minutes must be > 0"
    );
    stackwarden_tests::images::ensure_images()?;
    let binary = stackwarden_tests::harness::operator_binary();
    let tag = std::process::id();
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (1..=stacks).map(|i| format!("calm-{i}-{tag}")).collect();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    for name in &names {
        write_manifest(
            &manifests.join(format!("{name}.yaml")),
            &demo_stack(NAMESPACE, name),
        )?;
    }
    let state = dir.path().join("state");
    let mut operator = Operator::start(&manifests, &state, names.clone())?;
    let _busy = start_busy(tag);
    println!(
        "{stacks} demo stacks and {BUSY_CONTAINERS} unrelated healthchecked containers; operator {} (pid {})",
        binary.display(),
        operator.pid(),
    );
    operator.wait_ready(&LocalStore::new(&state), &names)?;
    let events = EngineEvents::start(&names)?;
    operator.settle()?;
    let window = measure(&mut operator, &events, stacks, minutes)?;
    window.report(stacks, minutes);
    Ok(())
}

/// The unrelated containers, started once the operator watches the engine: their `start`
/// and first `health_status` events come through its subscription too. One is labelled as a
/// stack of another operator sharing the engine (another state directory, a cluster), whose
/// events the operator receives but must not act on.
fn start_busy(tag: u32) -> Containers {
    let busy = Containers(
        (1..=BUSY_CONTAINERS)
            .map(|i| format!("bench-calm-busy-{i}-{tag}"))
            .collect(),
    );
    let (uid, stack) = (
        format!("bench-calm-foreign-{tag}"),
        format!("other/foreign-{tag}"),
    );
    for (i, name) in busy.0.iter().enumerate() {
        if i == 0 {
            run_busy(name, &[(labels::UID, &uid), (labels::STACK, &stack)]);
        } else {
            run_busy(name, &[]);
        }
    }
    busy
}

/// The operator process; stopped when dropped, then the stacks are removed from Docker (in
/// that order, or it would recreate them).
struct Operator {
    process: OperatorProcess,
    projects: Vec<String>,
}

impl Operator {
    fn start(manifests: &Path, state: &Path, projects: Vec<String>) -> anyhow::Result<Self> {
        let path = |p: &Path| p.to_str().map(str::to_owned).context("a UTF-8 path");
        let (manifests, state) = (path(manifests)?, path(state)?);
        let args = [
            "local",
            &manifests,
            "--state-dir",
            &state,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        Ok(Self {
            process: OperatorProcess::start("stackwarden local", &args, "info", &[]),
            projects,
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails, with the end of its log, if the operator exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.exited() {
            let log = self.process.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("the operator exited ({status}):\n{}", tail.join("\n"));
        }
        Ok(())
    }

    fn scrape(&mut self) -> anyhow::Result<Counters> {
        let text = self.process.metrics();
        Ok(Counters {
            reconciles: metric_sum(&text, "stackwarden_reconcile_duration_seconds_count"),
            status_writes: metric_sum(&text, "stackwarden_status_writes_total"),
            events: metric_sum(&text, "stackwarden_events_total"),
        })
    }

    /// Until every stack is Ready (PostgreSQL's initdb in every stack at once is the slow part).
    fn wait_ready(&mut self, store: &LocalStore, names: &[String]) -> anyhow::Result<()> {
        let start = Instant::now();
        let timeout = Duration::from_secs(120 + 30 * names.len() as u64);
        let mut last = usize::MAX;
        loop {
            self.alive()?;
            let ready = names
                .iter()
                .filter(|n| local_ready(store, NAMESPACE, n))
                .count();
            if ready != last {
                println!(
                    "{:>5.1} s: {ready} of {} stacks Ready",
                    start.elapsed().as_secs_f64(),
                    names.len()
                );
                last = ready;
            }
            if ready == names.len() {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "not every stack was Ready in {timeout:?}; its log:\n{}",
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Until no status write or event came for [`QUIET`]; an operator that never quiets down
    /// is measured anyway (that churn is what the benchmark is for).
    fn settle(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        let (mut last, mut since) = (self.scrape()?, Instant::now());
        while since.elapsed() < QUIET {
            if start.elapsed() > SETTLE_TIMEOUT {
                println!("status writes or events never stopped for {QUIET:?}; measuring anyway");
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(1));
            self.alive()?;
            let now = self.scrape()?;
            if (now.status_writes, now.events) != (last.status_writes, last.events) {
                since = Instant::now();
            }
            last = now;
        }
        println!(
            "quiet for {QUIET:?} after {:.1} s; measuring",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // SIGTERM: the operator stops the way a user stops it; SIGKILL if it does not.
        // (OperatorProcess kills it when dropped, below.)
        let _ = Command::new("kill").arg(self.pid().to_string()).output();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.process.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.projects.iter().for_each(|p| super::remove_project(p));
    }
}

/// The operator's own counters, summed over the stacks.
#[derive(Clone, Copy, Default)]
struct Counters {
    reconciles: f64,
    status_writes: f64,
    events: f64,
}

/// Counts everything the engine reports, through `docker events` (the engine's whole stream,
/// unfiltered: what the operator's filtered subscription is spared), in a thread.
struct EngineEvents {
    child: Child,
    counts: Arc<EventCounts>,
}

#[derive(Default)]
struct EventCounts {
    all: AtomicU64,
    /// Carrying a benchmark stack's label.
    stacks: AtomicU64,
    /// Of those, the ones that may wake the stack (start, die, health_status, ...).
    decisive: AtomicU64,
}

impl EngineEvents {
    fn start(stacks: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new("docker")
            .args(["events", "--format", "{{json .}}"])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting docker events")?;
        let stdout = child.stdout.take().expect("piped");
        let counts = Arc::new(EventCounts::default());
        let ours: HashSet<String> = stacks.iter().map(|n| format!("{NAMESPACE}/{n}")).collect();
        let c = counts.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                c.count(&line, &ours);
            }
        });
        Ok(Self { child, counts })
    }

    fn snapshot(&self) -> [u64; 3] {
        let c = &self.counts;
        [&c.all, &c.stacks, &c.decisive].map(|a| a.load(Ordering::Relaxed))
    }
}

impl EventCounts {
    fn count(&self, line: &str, ours: &HashSet<String>) {
        self.all.fetch_add(1, Ordering::Relaxed);
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let stack = event["Actor"]["Attributes"][labels::STACK].as_str();
        if !stack.is_some_and(|s| ours.contains(s)) {
            return;
        }
        self.stacks.fetch_add(1, Ordering::Relaxed);
        let action = event["Action"].as_str().unwrap_or_default();
        let verb = action.split(':').next().unwrap_or_default().trim();
        if event["Type"] == "container" && DECISIVE_ACTIONS.contains(&verb) {
            self.decisive.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for EngineEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything read at one instant of the window.
#[derive(Clone)]
struct Sample {
    at: Instant,
    operator: Counters,
    operator_ticks: u64,
    dockerd_ticks: Option<u64>,
    engine: [u64; 3],
}

fn sample(
    operator: &mut Operator,
    events: &EngineEvents,
    dockerd: Option<u32>,
) -> anyhow::Result<Sample> {
    operator.alive()?;
    Ok(Sample {
        at: Instant::now(),
        operator: operator.scrape()?,
        operator_ticks: cpu_ticks(operator.pid())?,
        dockerd_ticks: dockerd.and_then(|pid| cpu_ticks(pid).ok()),
        engine: events.snapshot(),
    })
}

/// What happened between two samples.
struct Window {
    seconds: f64,
    operator: Counters,
    cpu_percent: f64,
    dockerd_cpu_percent: Option<f64>,
    /// All engine events, those of the stacks, and of those the decisive ones.
    engine: [u64; 3],
    rss_mb: f64,
}

impl Window {
    fn between(a: &Sample, b: &Sample, ticks_per_s: f64, rss_mb: f64) -> Self {
        let seconds = (b.at - a.at).as_secs_f64();
        let cpu = |t0: u64, t1: u64| (t1 - t0) as f64 / ticks_per_s / seconds * 100.0;
        Self {
            seconds,
            operator: Counters {
                reconciles: b.operator.reconciles - a.operator.reconciles,
                status_writes: b.operator.status_writes - a.operator.status_writes,
                events: b.operator.events - a.operator.events,
            },
            cpu_percent: cpu(a.operator_ticks, b.operator_ticks),
            dockerd_cpu_percent: a.dockerd_ticks.zip(b.dockerd_ticks).map(|(x, y)| cpu(x, y)),
            engine: [0, 1, 2].map(|i| b.engine[i] - a.engine[i]),
            rss_mb,
        }
    }

    fn per_stack_minute(&self, stacks: usize) -> f64 {
        self.operator.reconciles / stacks as f64 / (self.seconds / 60.0)
    }

    fn engine_per_s(&self) -> f64 {
        self.engine[0] as f64 / self.seconds
    }

    fn dockerd(&self) -> String {
        self.dockerd_cpu_percent
            .map_or("n/a".to_owned(), |p| format!("{p:.1} %"))
    }

    fn report(&self, stacks: usize, minutes: u64) {
        println!(
            "operator:  {:.2} reconciles per stack-minute ({} in {:.0} s), {} status writes, {} events, {:.2} % of a core, RSS {:.1} MB",
            self.per_stack_minute(stacks),
            self.operator.reconciles,
            self.seconds,
            self.operator.status_writes,
            self.operator.events,
            self.cpu_percent,
            self.rss_mb
        );
        println!(
            "reference: the engine emitted {:.1} events/s ({:.1}/s from the stacks' containers, {} of them decisive), dockerd used {} of a core",
            self.engine_per_s(),
            self.engine[1] as f64 / self.seconds,
            self.engine[2],
            self.dockerd()
        );
        println!("targets:   <= 2 reconciles per stack-minute, 0 status writes, 0 events, < 2 % of a core at 10 stacks");
        println!(
            "{}",
            serde_json::json!({
                "bench": "calm",
                "stacks": stacks,
                "minutes": minutes,
                "reconciles_per_stack_minute": round2(self.per_stack_minute(stacks)),
                "status_writes": self.operator.status_writes,
                "events": self.operator.events,
                "cpu_percent": round2(self.cpu_percent),
                "rss_mb": round2(self.rss_mb),
                "engine_events_per_s": round2(self.engine_per_s()),
                "dockerd_cpu_percent": self.dockerd_cpu_percent.map(round2),
            })
        );
    }
}

/// The measured window, with a line per minute.
fn measure(
    operator: &mut Operator,
    events: &EngineEvents,
    stacks: usize,
    minutes: u64,
) -> anyhow::Result<Window> {
    let ticks_per_s = clock_ticks();
    let dockerd = pid_of("dockerd");
    let first = sample(operator, events, dockerd)?;
    let mut last = first.clone();
    for minute in 1..=minutes {
        let until = first.at + Duration::from_secs(60 * minute);
        while Instant::now() < until {
            std::thread::sleep((until - Instant::now()).min(Duration::from_secs(1)));
            operator.alive()?;
        }
        let now = sample(operator, events, dockerd)?;
        let w = Window::between(&last, &now, ticks_per_s, rss_mb(operator.pid())?);
        println!(
            "minute {minute}: {} reconciles ({:.2} per stack), {} status writes, {} events, operator {:.2} % CPU; engine {:.1} events/s, dockerd {} CPU",
            w.operator.reconciles,
            w.per_stack_minute(stacks),
            w.operator.status_writes,
            w.operator.events,
            w.cpu_percent,
            w.engine_per_s(),
            w.dockerd()
        );
        last = now;
    }
    Ok(Window::between(
        &first,
        &last,
        ticks_per_s,
        rss_mb(operator.pid())?,
    ))
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat, counted
/// after the command name, which is in parentheses and may hold spaces).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .context("/proc/PID/stat has no command name")?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field n is at index n - 3.
    Ok(fields[14 - 3].parse::<u64>()? + fields[15 - 3].parse::<u64>()?)
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb / 1024.0)
}

/// `getconf CLK_TCK`, else the 100 that Linux has used on every common architecture.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The process whose command name is `name`, if one runs here (a remote engine has none).
fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
}
