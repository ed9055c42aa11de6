//! Benchmarks: programs that print their figures, last line one JSON object, against a
//! reference measured in the same run.
//!
//! `cargo run --release -p stackwarden-tests --bin bench -- converge [--rounds N]`
//!
//! converge: from applying the demo manifest to Ready in local mode (the local driver, exactly
//! as `stackwarden local DIR --exit-when-ready` runs it) against `docker-compose up -d` plus
//! waiting until every container is healthy, on the same compose file. Rounds alternate the two
//! tools; every round starts from nothing (fresh containers, network and volumes, so PostgreSQL
//! runs initdb each time for both), which also keeps Docker's restart back-off out of it.

use std::process::Command;
use std::time::{Duration, Instant};

use stackwarden::store::local::{run, LocalOptions};
use stackwarden_tests::harness::{demo_manifest, demo_spec, docker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5usize);
    match args.first().map(String::as_str) {
        Some("converge") => converge(rounds).await,
        _ => anyhow::bail!("usage: bench converge [--rounds N]"),
    }
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
    let mut manifest = demo_manifest();
    manifest.metadata.name = Some(project.clone());
    manifest.spec = demo_spec(&project);
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    std::fs::write(
        manifests.join("stack.yaml"),
        serde_yaml::to_string(&manifest)?,
    )?;
    let start = Instant::now();
    run(LocalOptions {
        manifests,
        state_dir: dir.path().join("state"),
        exit_when_ready: true,
        timeout: Some(Duration::from_secs(300)),
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
