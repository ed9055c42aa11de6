//! The demo app (see `stackwarden_tests::demo`).
//!
//! Usage: `demo-app` serves; `demo-app healthcheck` probes a running one and exits 0 when it
//! is healthy, 1 otherwise.

use std::process::ExitCode;

use stackwarden_tests::demo::{self, config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => serve(),
        Some("healthcheck") => healthcheck(),
        Some(other) => {
            eprintln!("demo-app: unknown argument {other:?}; usage: demo-app [healthcheck]");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let config = match config::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("demo-app: invalid configuration: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("demo-app: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-app: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck() -> ExitCode {
    let result = config::port_from_lookup(|key| std::env::var(key).ok())
        .map_err(|e| format!("{e:#}"))
        .and_then(demo::healthcheck);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-app healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
