//! `semsd`: parses configuration, starts telemetry, binds the listeners and runs.

use clap::Parser;
use semsd::{Config, Listeners, Role, run, shutdown_signal};
use tokio::net::TcpListener;

// glibc's allocator spent a third of the server's CPU time under load (arena locks and
// consolidation across tokio's worker threads); mimalloc does not. See docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Signals are caught from here on, so one sent during start-up stops semsd cleanly.
    let shutdown = shutdown_signal();
    let telemetry = sems_telemetry::init(&sems_telemetry::TelemetryConfig {
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        service_name: "semsd".into(),
        log_filter: config.telemetry.log.clone(),
    })?;
    let listeners = match config.role {
        Role::Projector | Role::Migrate => Listeners::default(),
        Role::All | Role::Api => Listeners {
            grpc: Some(bind(config.grpc.listen, "gRPC (--listen)").await?),
            http: match config.grpc.http_listen.0 {
                Some(addr) => Some(bind(addr, "webhooks (--http-listen)").await?),
                None => None,
            },
        },
    };
    let result = run(config, listeners, shutdown).await;
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "semsd stopped");
    }
    result
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} for {what}"))
}
