//! Command-line and environment configuration: every flag has a `SEMS_…` variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, ValueEnum};

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The gRPC API and the projector in one process.
    All,
    /// The gRPC API only (commands and queries).
    Api,
    /// The projector only.
    Projector,
    /// Copies the embedded event log in --data-dir into the JetStream stream at --nats-url,
    /// byte for byte, then exits (resumable; see docs/DEPLOY.md, "Moving up").
    Migrate,
}

/// SeMS Response server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "semsd",
    version,
    about = "SeMS Response: event-sourced incident and crisis response server"
)]
pub struct Config {
    /// What this process runs.
    #[arg(long, env = "SEMS_ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Where the embedded store keeps its files (used when no NATS and PostgreSQL URLs are
    /// given).
    #[arg(long, env = "SEMS_DATA_DIR", default_value = "./sems-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub grpc: GrpcArgs,
    #[command(flatten)]
    pub domain: DomainArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// NATS JetStream.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL (may carry credentials: never printed). With the database URL, runs
    /// on NATS JetStream and PostgreSQL instead of the embedded store.
    #[arg(long, env = "SEMS_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Event stream name.
    #[arg(long, env = "SEMS_STREAM", default_value = "SEMS")]
    pub stream: String,
    /// Stream replicas (3 in production, on nats-server 2.11 or newer).
    #[arg(long, env = "SEMS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

/// PostgreSQL read models.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of the read models (may carry credentials: never printed). With the
    /// NATS URL, runs on NATS JetStream and PostgreSQL instead of the embedded store.
    #[arg(long, env = "SEMS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema of the read-model generation to read and write (a rebuild uses a new one).
    #[arg(long, env = "SEMS_READ_MODEL_SCHEMA", default_value = "sems")]
    pub read_model_schema: String,
    /// Database connections.
    #[arg(long, env = "SEMS_DATABASE_CONNECTIONS", default_value_t = 8)]
    pub database_connections: u32,
}

/// The gRPC API.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// Address the gRPC API listens on.
    #[arg(long, env = "SEMS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the HTTP webhooks (Alertmanager, PagerDuty Events v2, generic JSON);
    /// "off" to serve none.
    #[arg(long, env = "SEMS_HTTP_LISTEN", default_value = "127.0.0.1:8088")]
    pub http_listen: HttpListen,
    /// Token the webhooks require: `Authorization: Bearer <token>` (Alertmanager, generic),
    /// or the event's `routing_key` (PagerDuty). Never printed.
    #[arg(long, env = "SEMS_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// File of callers' tokens, one `<principal> sha256:<hex of the token>` per line: each
    /// gRPC call must then send `authorization: Bearer <token>`, and its principal is the
    /// actor recorded. Without it, calls are not authenticated and --actor acts.
    #[arg(long, env = "SEMS_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Longest a query waits for its `min_position` (or, with `latest`, the log's last
    /// position) when the call sets no deadline (ms).
    #[arg(long, env = "SEMS_READ_WAIT_MS", default_value_t = 5_000)]
    pub read_wait_ms: u64,
}

/// Where the HTTP webhooks listen, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") || s.is_empty() {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("{s:?} is neither an address (127.0.0.1:8088) nor \"off\": {e}"))
    }
}

impl GrpcArgs {
    /// The read wait as a duration.
    pub fn read_wait(&self) -> Duration {
        Duration::from_millis(self.read_wait_ms)
    }
}

/// Domain settings.
#[derive(Debug, Clone, Args)]
pub struct DomainArgs {
    /// The principal recorded as actor of webhook calls, and of gRPC calls when no
    /// --tokens-file authenticates them.
    #[arg(long, env = "SEMS_ACTOR", default_value = "semsd")]
    pub actor: String,
    /// How long a handover may wait for the CMC's answer (from its first offer, or from the
    /// escalation request before any offer) before it is flagged overdue (seconds).
    #[arg(
        long,
        env = "SEMS_HANDOVER_ACCEPTANCE_TARGET_SECS",
        default_value_t = 900
    )]
    pub handover_acceptance_target_secs: u64,
    /// Alerts at or above this severity open an incident.
    #[arg(
        long,
        env = "SEMS_INCIDENT_THRESHOLD",
        value_enum,
        default_value = "high"
    )]
    pub incident_threshold: Threshold,
    /// An alert promoted this long ago (ms) whose incident was never opened (the ingesting
    /// call stopped half way) gets its incident opened by the repair sweep.
    #[arg(long, env = "SEMS_REPAIR_AFTER_MS", default_value_t = 30_000)]
    pub repair_after_ms: u64,
}

impl DomainArgs {
    /// The repair delay as a duration.
    pub fn repair_after(&self) -> Duration {
        Duration::from_millis(self.repair_after_ms)
    }
}

/// Severity threshold names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    /// INFO and above.
    Info,
    /// LOW and above.
    Low,
    /// MEDIUM and above.
    Medium,
    /// HIGH and above.
    High,
    /// CRITICAL only.
    Critical,
}

impl Threshold {
    /// As a domain severity.
    pub fn severity(self) -> sems_domain::Severity {
        use sems_domain::Severity;
        match self {
            Self::Info => Severity::Info,
            Self::Low => Severity::Low,
            Self::Medium => Severity::Medium,
            Self::High => Severity::High,
            Self::Critical => Severity::Critical,
        }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// OTLP/gRPC endpoint for traces (e.g. http://127.0.0.1:4317); off when empty.
    #[arg(long, env = "SEMS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "SEMS_LOG", default_value = "info")]
    pub log: String,
}

/// Which store a configuration runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// SQLite files in a data directory: nothing to install.
    Embedded {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// NATS JetStream for the event log, PostgreSQL for the read models.
    Scaled {
        /// NATS URL.
        nats_url: String,
        /// PostgreSQL URL.
        database_url: String,
    },
}

impl Config {
    /// A configuration with every default (the embedded store in `./sems-data`), for tests.
    pub fn defaults() -> Self {
        Self::parse_from(["semsd"])
    }

    /// The store: embedded unless both the NATS and the PostgreSQL URL are given.
    pub fn store(&self) -> Result<Store, String> {
        match (&self.nats.nats_url, &self.database.database_url) {
            (None, None) => Ok(Store::Embedded {
                data_dir: self.data_dir.clone(),
            }),
            (Some(nats_url), Some(database_url)) => Ok(Store::Scaled {
                nats_url: nats_url.clone(),
                database_url: database_url.clone(),
            }),
            (Some(_), None) => Err("--nats-url (SEMS_NATS_URL) is set but --database-url \
                 (SEMS_DATABASE_URL) is not: give both to run on NATS and PostgreSQL, or \
                 neither to run on the embedded store in --data-dir"
                .into()),
            (None, Some(_)) => Err("--database-url (SEMS_DATABASE_URL) is set but --nats-url \
                 (SEMS_NATS_URL) is not: give both to run on NATS and PostgreSQL, or neither \
                 to run on the embedded store in --data-dir"
                .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Config, Store};

    #[test]
    fn every_flag_has_a_sems_variable() {
        let command = Config::command();
        let mut seen = std::collections::BTreeSet::new();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str());
            let env = env.unwrap_or_else(|| panic!("--{id} has no SEMS_… variable"));
            assert!(env.starts_with("SEMS_"), "--{id}: {env}");
            assert!(seen.insert(env.to_owned()), "{env} names two flags");
        }
        assert!(seen.len() >= 15, "{seen:?}");
    }

    #[test]
    fn no_flags_runs_embedded_both_urls_run_scaled_one_url_is_an_error() {
        // Flags only: the variables of the environment running the tests are set aside.
        let parse = |args: &[&str]| {
            let mut c = Config::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
            if !args.contains(&"--nats-url") {
                c.nats.nats_url = None;
            }
            if !args.contains(&"--database-url") {
                c.database.database_url = None;
            }
            c
        };
        let embedded = parse(&["semsd"]);
        assert!(matches!(embedded.store(), Ok(Store::Embedded { .. })));
        let scaled = parse(&[
            "semsd",
            "--nats-url",
            "nats://10.0.0.1:4222",
            "--database-url",
            "postgres://db/sems",
        ]);
        assert_eq!(
            scaled.store(),
            Ok(Store::Scaled {
                nats_url: "nats://10.0.0.1:4222".into(),
                database_url: "postgres://db/sems".into()
            })
        );
        let half = parse(&["semsd", "--nats-url", "nats://10.0.0.1:4222"]);
        let err = half.store().err().unwrap_or_default();
        assert!(err.contains("SEMS_DATABASE_URL"), "{err}");
    }
}
