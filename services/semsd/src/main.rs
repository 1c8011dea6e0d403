//! `semsd`: parses configuration, starts telemetry, binds the listener and runs.

use clap::Parser;
use semsd::{Config, Role, run, shutdown_signal};
use tokio::net::TcpListener;

// glibc's allocator spent a third of the server's CPU time under load (arena locks and
// consolidation across tokio's worker threads); mimalloc does not. See docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = sems_telemetry::init(&sems_telemetry::TelemetryConfig {
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        service_name: "semsd".into(),
        log_filter: config.telemetry.log.clone(),
    })?;
    let listener = match config.role {
        Role::Projector => None,
        Role::All | Role::Api => Some(TcpListener::bind(config.grpc.listen).await?),
    };
    let result = run(config, listener, shutdown_signal()).await;
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "semsd stopped");
    }
    result
}
