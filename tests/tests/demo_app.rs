//! The demo-app image against real PostgreSQL and Redis containers built from the test
//! images: health follows the dependencies, every fault switch works on a running container,
//! and /metrics counts what was answered.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use stackwarden_tests::images::{ensure_images, DEMO_APP_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE};

// Distinctive, so that finding them anywhere in an answer or a log line is unambiguous.
const DB_PASSWORD: &str = "pg-Secret-4f1c9";
const REDIS_PASSWORD: &str = "redis-Secret-8b27e";

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !output.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Removes everything the test created, whether it passed or panicked, and on failure shows
/// the containers' logs first since they are about to disappear.
struct Cleanup {
    containers: Vec<String>,
    network: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for container in &self.containers {
                if let Ok(output) = Command::new("docker")
                    .args(["logs", "--tail", "50", container])
                    .output()
                {
                    eprintln!(
                        "--- docker logs {container} ---\n{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
        for container in &self.containers {
            // -v: the postgres and redis images declare volumes, anonymous here.
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", container])
                .output();
        }
        if let Some(network) = &self.network {
            let _ = Command::new("docker")
                .args(["network", "rm", network])
                .output();
        }
    }
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(address: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            agent,
            base: format!("http://{address}"),
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self.agent.get(&format!("{}{path}", self.base)).call()?;
        let code = response.status().as_u16();
        Ok((code, response.into_body().read_to_string()?))
    }

    fn get_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let (code, body) = self.get(path)?;
        let json =
            serde_json::from_str(&body).with_context(|| format!("GET {path} answered {body:?}"))?;
        Ok((code, json))
    }

    fn post(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_empty()?;
        let code = response.status().as_u16();
        Ok((code, response.into_body().read_to_string()?))
    }
}

/// Polls `probe` until it returns `Some`, failing with the last thing it saw.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing yet");
    loop {
        match probe() {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(seen) => last = seen,
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn health_matching(
    http: &Http,
    code: u16,
    expected: impl Fn(&Value) -> bool,
) -> Result<Option<Value>, String> {
    match http.get_json("/health") {
        Ok((c, body)) if c == code && expected(&body) => Ok(Some(body)),
        Ok((c, body)) => Err(format!("{c} {body}")),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn requests_by_code(metrics: &str) -> HashMap<u16, u64> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("http_requests_total{code=\""))
        .filter_map(|rest| {
            let (code, rest) = rest.split_once("\"} ")?;
            Some((code.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect()
}

fn exit_code_once_stopped(container: &str) -> i64 {
    wait_for(
        &format!("{container} to exit"),
        Duration::from_secs(15),
        || {
            let state = docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                container,
            ])
            .map_err(|e| format!("{e:#}"))?;
            match state.split_once(' ') {
                Some(("exited", code)) => Ok(Some(code.parse().map_err(|_| state.clone())?)),
                _ => Err(state),
            }
        },
    )
}

fn resident_kib(container: &str) -> u64 {
    let status = docker(&["exec", container, "cat", "/proc/1/status"]).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

#[test]
fn demo_app_follows_its_dependencies_and_faults() {
    ensure_images().expect("building the test images");

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let prefix = format!("swt-demo-{}-{nanos:09}", std::process::id());
    let network = format!("{prefix}-net");
    let postgres = format!("{prefix}-postgres");
    let redis = format!("{prefix}-redis");
    let app = format!("{prefix}-app");
    let crasher = format!("{prefix}-crash-at-start");
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: None,
    };

    docker(&["network", "create", &network]).unwrap();
    cleanup.network = Some(network.clone());

    cleanup.containers.push(postgres.clone());
    let pg_user = "demo_user";
    let pg_db = "demo_db";
    docker(&[
        "run",
        "-d",
        "--name",
        &postgres,
        "--network",
        &network,
        "--network-alias",
        "postgres",
        "-e",
        &format!("POSTGRES_USER={pg_user}"),
        "-e",
        &format!("POSTGRES_PASSWORD={DB_PASSWORD}"),
        "-e",
        &format!("POSTGRES_DB={pg_db}"),
        POSTGRES_IMAGE,
    ])
    .unwrap();
    cleanup.containers.push(redis.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &redis,
        "--network",
        &network,
        "--network-alias",
        "redis",
        "-e",
        &format!("REDIS_PASSWORD={REDIS_PASSWORD}"),
        REDIS_IMAGE,
    ])
    .unwrap();
    cleanup.containers.push(app.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &app,
        "--network",
        &network,
        "-p",
        "127.0.0.1::8000",
        "-e",
        &format!("DB_USER={pg_user}"),
        "-e",
        &format!("DB_PASSWORD={DB_PASSWORD}"),
        "-e",
        &format!("DB_NAME={pg_db}"),
        "-e",
        &format!("REDIS_PASSWORD={REDIS_PASSWORD}"),
        DEMO_APP_IMAGE,
    ])
    .unwrap();

    let address = docker(&["port", &app, "8000"]).unwrap();
    let address = address.lines().next().expect("a published port").to_owned();
    let http = Http::new(&address);

    // Healthy once postgres has run initdb; the first start takes a few seconds.
    let body = wait_for("a healthy /health", Duration::from_secs(60), || {
        health_matching(&http, 200, |_| true)
    });
    assert_eq!(
        body,
        json!({"status": "healthy", "database": "connected", "redis": "connected"})
    );
    assert_eq!(
        http.get_json("/readiness").unwrap(),
        (200, json!({"ready": true}))
    );
    assert_eq!(http.get("/").unwrap(), (200, "ok".to_owned()));

    // The image's HEALTHCHECK runs `demo-app healthcheck`.
    wait_for(
        "Docker to report the app healthy",
        Duration::from_secs(30),
        || {
            let status = docker(&["inspect", "-f", "{{.State.Health.Status}}", &app])
                .map_err(|e| format!("{e:#}"))?;
            if status == "healthy" {
                Ok(Some(()))
            } else {
                Err(status)
            }
        },
    );

    // Redis gone: /health says which dependency failed; readiness only needs the database.
    docker(&["stop", &redis]).unwrap();
    let body = wait_for(
        "/health to report redis disconnected",
        Duration::from_secs(15),
        || health_matching(&http, 503, |body| body["redis"] == "disconnected"),
    );
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"], "connected");
    let error = body["error"].as_str().expect("an error message");
    assert!(error.starts_with("redis: "), "{error}");
    assert!(
        !error.contains(REDIS_PASSWORD) && !error.contains(DB_PASSWORD),
        "{error}"
    );
    assert_eq!(
        http.get_json("/readiness").unwrap(),
        (200, json!({"ready": true}))
    );

    // A fresh connection per check, so recovery is noticed without restarting the app.
    docker(&["start", &redis]).unwrap();
    wait_for(
        "/health to recover with redis back",
        Duration::from_secs(30),
        || health_matching(&http, 200, |_| true),
    );

    // fail-health at runtime: unhealthy while on, and the healthcheck subcommand agrees.
    assert_eq!(http.post("/admin/fail-health?on=true").unwrap().0, 200);
    let (code, body) = http.get_json("/health").unwrap();
    assert_eq!(code, 503);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"], "connected");
    assert_eq!(body["redis"], "connected");
    let probe = Command::new("docker")
        .args(["exec", &app, "demo-app", "healthcheck"])
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(1),
        "healthcheck subcommand while fail-health is on"
    );
    assert_eq!(http.post("/admin/fail-health?on=false").unwrap().0, 200);
    assert_eq!(http.get_json("/health").unwrap().0, 200);
    let probe = Command::new("docker")
        .args(["exec", &app, "demo-app", "healthcheck"])
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(0),
        "healthcheck subcommand once healthy again"
    );

    // error-rate at runtime: 1.0 fails every application request, but not the probes.
    assert_eq!(http.post("/admin/error-rate?rate=2").unwrap().0, 400);
    assert_eq!(http.post("/admin/error-rate?rate=1").unwrap().0, 200);
    for _ in 0..5 {
        assert_eq!(http.get("/").unwrap().0, 500);
    }
    assert_eq!(http.get_json("/health").unwrap().0, 200);
    assert_eq!(http.post("/admin/error-rate?rate=0").unwrap().0, 200);
    assert_eq!(http.get("/").unwrap(), (200, "ok".to_owned()));

    let (code, metrics) = http.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let counts = requests_by_code(&metrics);
    // Only this test causes 500s and 400s; Docker's healthchecks add 200s (and 503s while a
    // fault was on), so those are lower bounds.
    assert_eq!(counts.get(&500), Some(&5), "{metrics}");
    assert_eq!(counts.get(&400), Some(&1), "{metrics}");
    assert!(counts.get(&503).copied().unwrap_or(0) >= 2, "{metrics}");
    assert!(counts.get(&200).copied().unwrap_or(0) >= 10, "{metrics}");

    // leak at runtime: the memory must really be resident, not just reserved.
    let before = resident_kib(&app);
    assert_eq!(http.post("/admin/leak?mb_per_sec=64").unwrap().0, 200);
    let grown = wait_for(
        "the leak to grow resident memory by 128 MiB",
        Duration::from_secs(15),
        || {
            let now = resident_kib(&app);
            if now >= before + 128 * 1024 {
                Ok(Some(now))
            } else {
                Err(format!("VmRSS {now} kB, was {before} kB"))
            }
        },
    );
    assert_eq!(http.post("/admin/leak?mb_per_sec=0").unwrap().0, 200);
    assert!(grown > before);
    let (_, faults) = http.get_json("/admin/faults").unwrap();
    assert!(
        faults["leaked_bytes"].as_u64().unwrap() >= 128 << 20,
        "{faults}"
    );

    // Every switch change is logged, and no password ever is.
    let logs = docker(&["logs", &app]).unwrap();
    for line in [
        "fail-health set to true",
        "error-rate set to 1",
        "leak set to 64 MiB/s",
    ] {
        assert!(logs.contains(line), "missing {line:?} in logs:\n{logs}");
    }
    assert!(
        !logs.contains(DB_PASSWORD) && !logs.contains(REDIS_PASSWORD),
        "{logs}"
    );

    // crash at runtime: the process exits with code 1 without answering.
    assert!(
        http.post("/admin/crash").is_err(),
        "a crash must drop the connection instead of answering"
    );
    assert_eq!(exit_code_once_stopped(&app), 1);

    // crash at start: no dependencies needed to crash.
    cleanup.containers.push(crasher.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &crasher,
        "-e",
        "DEMO_CRASH_AT_START=1",
        DEMO_APP_IMAGE,
    ])
    .unwrap();
    assert_eq!(exit_code_once_stopped(&crasher), 1);
}
