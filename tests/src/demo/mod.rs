//! The demo app: a stand-in for the runbooks' FastAPI backend (`/health`, `/readiness`,
//! `/metrics` over PostgreSQL and Redis) with switches that make it fail the ways the
//! operator must handle: failing health, crashing, leaking memory, answering 5xx.
//! The binary is `src/bin/demo-app.rs`; the image is built by `images/build.sh`.

pub mod checks;
pub mod config;
pub mod drain;
pub mod faults;
pub mod metrics;
pub mod poll;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use config::{Config, RedisConfig};
use faults::Faults;
use metrics::Metrics;
use server::AppState;

/// Runs the server until SIGTERM or SIGINT. Returns only on a clean shutdown.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.port))
        .await
        .with_context(|| format!("binding 0.0.0.0:{}", config.port))?;
    println!(
        "demo-app: listening on 0.0.0.0:{}; {}",
        config.port,
        describe(&config)
    );

    if config.faults.crash_at_start {
        println!("demo-app: DEMO_CRASH_AT_START is on, exiting with code 1");
        std::process::exit(1);
    }

    let faults = Arc::new(Faults::new(&config.faults));
    faults::spawn_leaker(faults.clone());
    let state = AppState {
        config: Arc::new(config),
        faults,
        metrics: Arc::new(Metrics::new()),
    };
    let (close, closing) = tokio::sync::watch::channel(false);
    let listener = drain::DrainingListener::new(listener, closing);
    let shutdown = async move {
        shutdown_signal().await;
        let _ = close.send(true);
        tokio::time::sleep(drain::DRAIN).await;
    };
    axum::serve(listener, server::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    println!("demo-app: shut down");
    Ok(())
}

/// The start-up line: where the dependencies are and which faults are on, never a password.
fn describe(config: &Config) -> String {
    let db = &config.database;
    let redis_auth = |redis: &RedisConfig| {
        if redis.password.is_some() {
            "with password"
        } else {
            "without password"
        }
    };
    let f = &config.faults;
    format!(
        "database {}@{}:{}/{}, redis {}:{} {}; faults: fail_health={} leak_mb_per_sec={} error_rate={}",
        db.user,
        db.host,
        db.port,
        db.name,
        config.redis.host,
        config.redis.port,
        redis_auth(&config.redis),
        f.fail_health,
        f.leak_mb_per_sec,
        f.error_rate,
    )
}

/// As PID 1 in a container the process gets no default signal handling: without this,
/// `docker stop` would wait its full timeout and then SIGKILL.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => println!("demo-app: SIGTERM received, shutting down"),
        _ = int.recv() => println!("demo-app: SIGINT received, shutting down"),
    }
}

/// The `healthcheck` subcommand: GET /health on the local server, so that the image's Docker
/// HEALTHCHECK needs no curl.
pub fn healthcheck(port: u16) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/health");
    let response = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if status.as_u16() == 200 {
        Ok(())
    } else {
        let body = response.into_body().read_to_string().unwrap_or_default();
        Err(format!("GET {url}: {status} {}", body.trim()))
    }
}
