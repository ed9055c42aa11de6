//! The demo app (see `stackwarden_tests::demo`).
//!
//! Usage: `demo-app` serves; `demo-app healthcheck` probes a running one and exits 0 when it
//! is healthy, 1 otherwise; `demo-app poll URL [--every-ms N] [--for-s N]` asks URL every N
//! ms (20 by default) until SIGTERM or for N seconds, then prints one JSON line of what it saw
//! (`stackwarden_tests::demo::poll`).

use std::process::ExitCode;

use stackwarden_tests::demo::{self, config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => serve(),
        Some("healthcheck") => healthcheck(),
        Some("poll") => poll(&args[2..]),
        Some(other) => {
            eprintln!("demo-app: unknown argument {other:?}; usage: demo-app [healthcheck | poll URL [--every-ms N] [--for-s N]]");
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

fn poll(args: &[String]) -> ExitCode {
    let parsed = parse_poll(args);
    let (url, every_ms, for_s) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo-app poll: {e}; usage: demo-app poll URL [--every-ms N] [--for-s N]");
            return ExitCode::from(2);
        }
    };
    let summary =
        demo::poll::poll_until_stopped(url, std::time::Duration::from_millis(every_ms), for_s);
    match serde_json::to_string(&summary) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo-app poll: {e}");
            ExitCode::FAILURE
        }
    }
}

/// URL, the period in ms and the optional duration in seconds.
fn parse_poll(args: &[String]) -> Result<(String, u64, Option<u64>), String> {
    let mut url = None;
    let mut every_ms = 20;
    let mut for_s = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            let v = rest.next().ok_or(format!("{flag} needs a number"))?;
            v.parse()
                .map_err(|_| format!("{flag} {v:?} is not a number"))
        };
        match arg.as_str() {
            "--every-ms" => every_ms = number("--every-ms")?,
            "--for-s" => for_s = Some(number("--for-s")?),
            other if url.is_none() && !other.starts_with("--") => url = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok((url.ok_or("no URL given")?, every_ms, for_s))
}
