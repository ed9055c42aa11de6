//! Benchmarks: programs that print their figures, last line one JSON object, against a
//! reference measured in the same run.
//!
//! `cargo run --release -p stackwarden-tests --bin bench -- converge|heal|backup [--rounds N]`
//! `cargo run --release -p stackwarden-tests --bin bench -- calm [--stacks N] [--minutes M]`
//! `cargo run --release -p stackwarden-tests --bin bench -- rollout [--runs N] [--surge-only]`
//!
//! backup: see [`backup`]. calm: see [`calm`]. rollout: see [`rollout`].
//!
//! converge: from applying the demo manifest to Ready in local mode (the local driver, exactly
//! as `stackwarden local DIR --exit-when-ready` runs it) against `docker-compose up -d` plus
//! waiting until every container is healthy, on the same compose file. Rounds alternate the two
//! tools; every round starts from nothing (fresh containers, network and volumes, so PostgreSQL
//! runs initdb each time for both), which also keeps Docker's restart back-off out of it.

mod backup;
mod calm;
mod rollout;

use std::process::Command;
use std::time::{Duration, Instant};

use stackwarden::driver::local::{run, LocalOptions};
use stackwarden_tests::harness::{demo_spec, demo_stack, docker, write_manifest, LocalDriver};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = option(&args, "--rounds")?;
    match args.first().map(String::as_str) {
        Some("converge") => converge(rounds.unwrap_or(5)).await,
        Some("heal") => heal(rounds.unwrap_or(5)).await,
        Some("backup") => {
            let size_mb = option(&args, "--size-mb")?.unwrap_or(1024);
            backup::run(rounds.unwrap_or(3), size_mb).await
        }
        Some("calm") => calm::run(
            option(&args, "--stacks")?.unwrap_or(10),
            option(&args, "--minutes")?.unwrap_or(3),
        ),
        Some("rollout") => {
            let surge_only = args.iter().any(|a| a == "--surge-only");
            rollout::run(option(&args, "--runs")?.unwrap_or(3), surge_only).await
        }
        _ => anyhow::bail!(
            "usage: bench converge|heal|backup [--rounds N] [--size-mb MB]\n       bench calm [--stacks N] [--minutes M]\n       bench rollout [--runs N] [--surge-only]"
        ),
    }
}

/// The value after `name` on the command line, if given.
fn option<T: std::str::FromStr>(args: &[String], name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().map_err(anyhow::Error::from))
        .transpose()
}

async fn converge(rounds: usize) -> anyhow::Result<()> {
    stackwarden_tests::images::ensure_images()?;
    let mut sw = Vec::new();
    let mut dc = Vec::new();
    for round in 1..=rounds {
        let a = stackwarden_round(round).await?;
        let b = compose_round(round)?;
        println!("round {round}: stackwarden {a:.2} s, docker-compose {b:.2} s");
        sw.push(a);
        dc.push(b);
    }
    let (sw_med, dc_med) = (median(&mut sw), median(&mut dc));
    println!(
        "stackwarden    min {:.2} median {sw_med:.2} max {:.2} s",
        sw[0],
        sw[sw.len() - 1]
    );
    println!(
        "docker-compose min {:.2} median {dc_med:.2} max {:.2} s",
        dc[0],
        dc[dc.len() - 1]
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "converge",
            "rounds": rounds,
            "stackwarden_s": round2(sw_med),
            "docker_compose_s": round2(dc_med),
            "ratio": round2(sw_med / dc_med),
        })
    );
    Ok(())
}

async fn stackwarden_round(round: usize) -> anyhow::Result<f64> {
    let project = format!("bench-sw-{round}-{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    write_manifest(
        &manifests.join("stack.yaml"),
        &demo_stack("default", &project),
    )?;
    let start = Instant::now();
    run(LocalOptions {
        manifests,
        state_dir: dir.path().join("state"),
        exit_when_ready: true,
        timeout: Some(Duration::from_secs(300)),
        metrics_addr: None,
    })
    .await?;
    let elapsed = start.elapsed().as_secs_f64();
    remove_project(&project);
    Ok(elapsed)
}

fn compose_round(round: usize) -> anyhow::Result<f64> {
    let project = format!("bench-dc-{round}-{}", std::process::id());
    let spec = demo_spec(&project);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &spec.compose.file)?;
    let path = file.path().to_str().unwrap().to_owned();
    let start = Instant::now();
    let up = Command::new("docker-compose")
        .args(["-p", &project, "-f", &path, "up", "-d"])
        .envs(&spec.variables)
        .output()?;
    anyhow::ensure!(
        up.status.success(),
        "docker-compose up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // "Waiting for healthy" as a person or script does it: poll until all report healthy.
    loop {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]);
        let ids: Vec<&str> = ids.lines().collect();
        let mut args = vec!["inspect", "-f", "{{.State.Health.Status}}"];
        args.extend(ids.iter().copied());
        let healthy = ids.len() == 3 && docker(&args).lines().all(|l| l == "healthy");
        if healthy {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "docker-compose stack not healthy in 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let down = Command::new("docker-compose")
        .args(["-p", &project, "-f", &path, "down", "-v", "-t", "1"])
        .envs(&spec.variables)
        .output()?;
    anyhow::ensure!(
        down.status.success(),
        "docker-compose down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    Ok(elapsed)
}

/// heal, crash half: from `kill -9` of a Redis server's main process to the service running and
/// answering PING again. stackwarden restarts a `restart: "no"` service (the local driver, woken
/// by Docker's die event); the reference is Docker's own `restart: always` on an identical
/// container. Both use a fresh container every round, because Docker doubles its restart delay
/// for a container that dies within 10 s of starting, and stackwarden backs off too.
async fn heal(rounds: usize) -> anyhow::Result<()> {
    stackwarden_tests::images::ensure_images()?;
    let (mut sw, mut dk) = (Vec::new(), Vec::new());
    let (mut sw_restart, mut dk_restart) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = stackwarden_crash_round(round).await?;
        let b = docker_crash_round(round).await?;
        println!(
            "round {round}: stackwarden {:.0} ms (die -> start {:.0} ms), docker restart:always {:.0} ms (die -> start {:.0} ms)",
            a.answering * 1e3,
            a.restart * 1e3,
            b.answering * 1e3,
            b.restart * 1e3
        );
        sw.push(a.answering);
        dk.push(b.answering);
        sw_restart.push(a.restart);
        dk_restart.push(b.restart);
    }
    let mut unhealthy = Vec::new();
    for round in 1..=rounds {
        let u = unhealthy_round(round).await?;
        println!(
            "round {round}: unhealthy -> healthy {:.0} ms after the first failing probe",
            u * 1e3
        );
        unhealthy.push(u);
    }
    let (sw50, dk50) = (median(&mut sw), median(&mut dk));
    let (sw99, dk99) = (percentile(&sw, 0.99), percentile(&dk, 0.99));
    let (un50, un99) = (median(&mut unhealthy), percentile(&unhealthy, 0.99));
    let (swr50, dkr50) = (median(&mut sw_restart), median(&mut dk_restart));
    println!(
        "crash, die -> start in the engine's events: stackwarden p50 {:.0} ms; docker p50 {:.0} ms",
        swr50 * 1e3,
        dkr50 * 1e3
    );
    println!("unhealthy: p50 {:.0} ms p99 {:.0} ms (target: failureThreshold 3 x period 1 s + 1 s = 4000 ms)", un50 * 1e3, un99 * 1e3);
    println!(
        "crash: stackwarden p50 {:.0} ms p99 {:.0} ms; docker p50 {:.0} ms p99 {:.0} ms",
        sw50 * 1e3,
        sw99 * 1e3,
        dk50 * 1e3,
        dk99 * 1e3
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "heal",
            "rounds": rounds,
            "crash_stackwarden_p50_s": round3(sw50),
            "crash_stackwarden_p99_s": round3(sw99),
            "crash_docker_p50_s": round3(dk50),
            "crash_docker_p99_s": round3(dk99),
            "crash_ratio_p50": round2(sw50 / dk50),
            "restart_stackwarden_p50_s": round3(swr50),
            "restart_docker_p50_s": round3(dkr50),
            "restart_ratio_p50": round2(swr50 / dkr50),
            "unhealthy_p50_s": round3(un50),
            "unhealthy_p99_s": round3(un99),
            "unhealthy_target_s": 4.0,
        })
    );
    Ok(())
}

/// heal, unhealthy half: a service whose exec probe (period 1 s, failureThreshold 3) checks a
/// flag on a tmpfs is made to fail; the restart clears the flag. From the first failing probe
/// (its time as the operator recorded it) to the service reported healthy again.
async fn unhealthy_round(round: usize) -> anyhow::Result<f64> {
    let project = format!("bench-sick-{round}-{}", std::process::id());
    let file = "services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    volumes:\n      - type: tmpfs\n        target: /run/sick\n";
    let driver = LocalDriver::start(&serde_json::json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": project, "namespace": "bench"},
        "spec": {
            "compose": {"projectName": project, "file": file},
            "health": {"services": {"cache": {
                "probes": [{"exec": {"command": ["sh", "-c", "test ! -e /run/sick/flag"]}}],
                "periodSeconds": 1, "failureThreshold": 3,
            }}},
        },
    }));
    let cache = || {
        driver
            .status("bench", &project)
            .services
            .get("cache")
            .cloned()
            .unwrap_or_default()
    };
    let start = Instant::now();
    while cache().health != Some(stackwarden::api::ContainerHealth::Healthy) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "{project}: probes never passed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ])
    .trim()
    .to_owned();
    docker(&["exec", &id, "touch", "/run/sick/flag"]);
    let mut first_failure = None;
    let healthy_again = loop {
        let c = cache();
        if first_failure.is_none() {
            first_failure = c.last_probe.as_ref().filter(|p| !p.passed).map(|p| p.time);
        }
        if c.restarts >= 1 && c.health == Some(stackwarden::api::ContainerHealth::Healthy) {
            break chrono::Utc::now();
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "{project}: not healthy again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(driver);
    remove_project(&project);
    let first =
        first_failure.ok_or_else(|| anyhow::anyhow!("{project}: no failing probe was recorded"))?;
    Ok((healthy_again - first).num_milliseconds() as f64 / 1e3)
}

async fn stackwarden_crash_round(round: usize) -> anyhow::Result<Crash> {
    let project = format!("bench-heal-{round}-{}", std::process::id());
    let file = "services:\n  cache:\n    image: stackwarden-test/redis:7\n    pull_policy: never\n    restart: \"no\"\n";
    let driver = LocalDriver::start(&serde_json::json!({
        "apiVersion": "stackwarden.dev/v1alpha1", "kind": "ServiceStack",
        "metadata": {"name": project, "namespace": "bench"},
        "spec": {"compose": {"projectName": project, "file": file}},
    }));
    let start = Instant::now();
    let id = loop {
        let id = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]);
        if driver.ready("bench", &project) && !id.trim().is_empty() {
            break id.trim().to_owned();
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "stack {project} not Ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = crash_and_time(&id).await;
    drop(driver);
    remove_project(&project);
    took
}

async fn docker_crash_round(round: usize) -> anyhow::Result<Crash> {
    let name = format!("bench-heal-docker-{round}-{}", std::process::id());
    // A network of its own, as compose gives the stackwarden side: the default bridge behaves
    // differently when a container's endpoint goes away and comes back.
    docker(&["network", "create", &name]);
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &name,
        "--restart",
        "always",
        "stackwarden-test/redis:7",
    ])
    .trim()
    .to_owned();
    // Same starting point as the stackwarden side: answering PING.
    let ip = ip_of(&id)?;
    let start = Instant::now();
    while !ping(&ip).await {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "reference redis never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = crash_and_time(&id).await;
    docker(&["rm", "-f", "-v", &id]);
    docker(&["network", "rm", &name]);
    took
}

/// One crash round: from `kill -9` to answering PING again, and the part of it between the
/// engine's `die` and `start` events (the restarter's own share; the rest is the process
/// starting and the host reaching its new network endpoint, the same for either restarter).
struct Crash {
    answering: f64,
    restart: f64,
}

/// `kill -9` the container's main process, then time until it answers PING again.
async fn crash_and_time(id: &str) -> anyhow::Result<Crash> {
    let ip = ip_of(id)?;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id])
        .trim()
        .to_owned();
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let start = Instant::now();
    let kill = Command::new("kill").args(["-9", &pid]).output()?;
    anyhow::ensure!(kill.status.success(), "kill -9 {pid} failed");
    // Wait for the old process to be gone, so a PING answered by it cannot end the clock.
    while ping(&ip).await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while !ping(&ip).await {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "container {id} did not come back in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answering = start.elapsed().as_secs_f64();
    Ok(Crash {
        answering,
        restart: die_to_start(id, since)?,
    })
}

/// The time between the container's `die` and the next `start`, from the engine's own event
/// timestamps (nanoseconds).
fn die_to_start(id: &str, since: chrono::DateTime<chrono::Utc>) -> anyhow::Result<f64> {
    let until = (chrono::Utc::now() + chrono::Duration::seconds(1)).timestamp();
    let out = docker(&[
        "events",
        "--since",
        &since.timestamp().to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={id}"),
        "--filter",
        "event=die",
        "--filter",
        "event=start",
        "--format",
        "{{.TimeNano}} {{.Action}}",
    ]);
    let events: Vec<(i64, &str)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(t, a)| Some((t.parse().ok()?, a)))
        .collect();
    let die = events.iter().find(|(_, a)| *a == "die");
    let started = die.and_then(|(d, _)| events.iter().find(|(t, a)| *a == "start" && t > d));
    match (die, started) {
        (Some((d, _)), Some((s, _))) => Ok((s - d) as f64 / 1e9),
        _ => anyhow::bail!("no die then start event for {id} in: {out}"),
    }
}

fn ip_of(id: &str) -> anyhow::Result<String> {
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        id,
    ]);
    ip.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("container {id} has no address"))
}

/// Whether Redis at `ip` answers PING within 200 ms.
async fn ping(ip: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, 6379)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        buf[..n].starts_with(b"+PONG").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), attempt).await,
        Ok(Some(()))
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn remove_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    for id in docker(&["ps", "-aq", "--filter", &filter]).lines() {
        docker(&["rm", "-f", "-v", id]);
    }
    for net in docker(&["network", "ls", "-q", "--filter", &filter]).lines() {
        docker(&["network", "rm", net]);
    }
    for vol in docker(&["volume", "ls", "-q", "--filter", &filter]).lines() {
        docker(&["volume", "rm", "-f", vol]);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
