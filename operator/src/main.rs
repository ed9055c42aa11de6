use std::io::IsTerminal;

use clap::Parser;
use stackwarden::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    // Before anything can open a TLS connection.
    stackwarden::install_crypto_provider();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    // The error chain alone: a user's mistake is not a crash, so no backtrace even when
    // RUST_BACKTRACE is set.
    if let Err(e) = stackwarden::cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Libraries whose debug and trace lines print request and response bodies: container create
/// and exec bodies (a service's environment, `PGPASSWORD`), Secrets as the API server sends
/// them. They never log below INFO, whatever RUST_LOG says, so no level leaks a secret.
const BODY_LOGGERS: [&str; 9] = [
    "bollard",
    "hyper",
    "tower_http",
    "h2",
    "reqwest",
    "kube_client",
    "tokio_postgres",
    "redis",
    "object_store",
];

/// Logs to stderr, filtered by RUST_LOG (default `info`).
fn init_logs(format: LogFormat) {
    // Colour codes are noise in a file, a pipe or a log collector.
    let colour = format == LogFormat::Text && std::io::stderr().is_terminal();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in BODY_LOGGERS {
        filter = filter.add_directive(format!("{target}=info").parse().expect("a valid directive"));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
