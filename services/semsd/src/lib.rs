//! The SeMS Response server: the gRPC API (commands and queries), the projector, or both,
//! on the embedded SQLite store (the default) or on NATS JetStream and PostgreSQL. `main.rs` parses configuration and starts telemetry;
//! [`run`] takes an already-bound listener and a shutdown future, so tests run every role
//! in-process on port 0.

mod config;
mod grpc;
mod http;
mod repair;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use sems_app::{CommandHandler, CommitFeed, EventLog, HandlerConfig, Sems, SystemClock};
use sems_eventlog::{
    JetStreamConfig, JetStreamFeed, JetStreamLog, SqliteFeed, SqliteLog, SqliteLogConfig,
    copy_to_jetstream,
};
use sems_readmodel::{
    CmcReadModel, HandOff, PgReadModel, PgReadModelConfig, ProjectionStore, Projector,
    ProjectorConfig, SQLITE_PROJECTOR_BATCH, SqliteReadModel, SqliteReadModelConfig,
};
use tokio::{net::TcpListener, sync::watch};
use tracing::info;

pub use config::{Config, HttpListen, Role, Store, Threshold};
pub use grpc::{BULK_MAX_ALERTS, BULK_MAX_BYTES};

/// The sockets the API serves on, bound by the caller (tests bind port 0).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The gRPC API.
    pub grpc: Option<TcpListener>,
    /// The HTTP webhooks; none serves no webhooks.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// gRPC only.
    pub fn grpc(listener: TcpListener) -> Self {
        Self {
            grpc: Some(listener),
            http: None,
        }
    }
}

/// Runs the roles `config` asks for until `shutdown` resolves: the API stops accepting
/// calls and finishes those in flight, the projector applies and acknowledges the batch
/// in hand.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.role == Role::Migrate {
        return migrate(&config).await;
    }
    let Stores {
        log,
        feed,
        projection,
        reads,
        projector,
        status,
        lock,
    } = open_stores(&config).await?;
    // Only the embedded store holds a data directory's lock (until `run` returns); its
    // projector runs on a thread of its own (below).
    let own_thread = lock.is_some();
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    // One process appending and projecting: the projector takes the commits the handler
    // has just encoded instead of decoding them again (docs/DECISIONS.md).
    let hand_off = (config.role == Role::All).then(|| Arc::new(HandOff::default()));

    if !matches!(config.role, Role::All | Role::Projector) {
        // No projector here: an embedded log keeps nothing in memory for a feed no one reads.
        drop(feed);
    } else {
        let mut projector = Projector::new(projection, feed, projector);
        if let Some(h) = &hand_off {
            projector = projector.with_hand_off(h.clone());
        }
        let done = until_stopped();
        if own_thread {
            // Like the embedded log's writer (docs/DECISIONS.md), the embedded projector's
            // loop is a chain of round trips to a SQLite thread, and on the shared runtime
            // each of its wake-ups waited behind the calls' tasks: on a thread of its own,
            // read-model lag p99 fell by a fifth (docs/BENCHMARKS.md).
            let (finished, ended) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
            std::thread::Builder::new()
                .name("sems-projector".into())
                .spawn(move || {
                    let outcome = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map(|runtime| runtime.block_on(projector.run(done)))
                        .context("start the projector's runtime");
                    let _ = finished.send(outcome);
                })
                .context("start the projector's thread")?;
            tasks.spawn(async move {
                ended
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the projector's thread panicked")))
            });
        } else {
            tasks.spawn(async move {
                projector.run(done).await;
                Ok(())
            });
        }
    }

    if matches!(config.role, Role::All | Role::Api) {
        let listener = listeners
            .grpc
            .context("the api role needs a gRPC listener")?;
        let mut handler = CommandHandler::new(
            log,
            Arc::new(SystemClock),
            HandlerConfig {
                actor: config.domain.actor.clone(),
                ..HandlerConfig::default()
            },
        );
        if let Some(h) = hand_off {
            handler = handler.with_tap(h);
        }
        let sems = Arc::new(Sems::new(
            Arc::new(handler),
            config.domain.incident_threshold.severity(),
        ));
        let sweep = repair::run(
            sems.clone(),
            reads.clone(),
            config.domain.repair_after(),
            until_stopped(),
        );
        tasks.spawn(async move {
            sweep.await;
            Ok(())
        });
        if let Some(http) = listeners.http {
            let webhooks =
                http::Webhooks::new(sems.clone(), config.grpc.webhook_token.clone(), status);
            let addr = http.local_addr()?;
            let done = until_stopped();
            tasks.spawn(async move { http::serve(webhooks, http, done).await });
            info!(%addr, "http webhooks listening");
        }
        let tokens = match &config.grpc.tokens_file {
            None => grpc::Tokens::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read tokens file {}", path.display()))?;
                let tokens = grpc::Tokens::parse(&path.display().to_string(), &text)?;
                info!(
                    principals = tokens.principals(),
                    "grpc calls need a bearer token"
                );
                tokens
            }
        };
        let api = grpc::Api::new(sems, reads, config.grpc.read_wait())
            .with_tokens(tokens)
            .with_acceptance_target(std::time::Duration::from_secs(
                config.domain.handover_acceptance_target_secs,
            ));
        let addr = listener.local_addr()?;
        let done = until_stopped();
        tasks.spawn(async move { grpc::serve(api, listener, done).await });
        info!(%addr, "grpc api listening");
    }

    info!(role = ?config.role, "semsd started");
    tokio::select! {
        () = shutdown => info!("shutting down"),
        Some(ended) = tasks.join_next() => {
            let _ = stop.send(true);
            ended.context("task panicked")?.context("a role stopped")?;
        }
    }
    let _ = stop.send(true);
    while let Some(ended) = tasks.join_next().await {
        ended.context("task panicked")??;
    }
    info!("semsd stopped");
    Ok(())
}

/// Role `migrate`: copies the embedded event log into the JetStream stream.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let nats_url =
        config.nats.nats_url.as_deref().context(
            "--role migrate needs --nats-url (SEMS_NATS_URL): the NATS server to copy into",
        )?;
    let events = config.data_dir.join("events.db");
    let _lock = lock_data_dir(&config.data_dir, "copying its event log")?;
    if !events.is_file() {
        anyhow::bail!(
            "no embedded event log at {}: --data-dir (SEMS_DATA_DIR) must name the directory \
             the embedded semsd ran in",
            events.display()
        );
    }
    info!(
        "copying the embedded event log {} into stream {} at {}",
        events.display(),
        config.nats.stream,
        redact(nats_url)
    );
    // Only read: its writer need not learn the log's ids.
    let source = SqliteLog::open(SqliteLogConfig {
        scan_page: 0,
        ..SqliteLogConfig::new(&events)
    })
    .await
    .with_context(|| format!("open {}", events.display()))?;
    let client = nats_options(nats_url)
        .name("semsd-migrate")
        .connection_timeout(Duration::from_secs(5))
        .connect(nats_url)
        .await
        .with_context(|| format!("connect to NATS at {}", redact(nats_url)))?;
    let target = JetStreamLog::open(
        client,
        JetStreamConfig {
            stream: config.nats.stream.clone(),
            replicas: config.nats.stream_replicas,
            ..JetStreamConfig::default()
        },
    )
    .await
    .context("open the event stream")?;
    let report = copy_to_jetstream(&source, &target)
        .await
        .context("copy the event log")?;
    info!(
        copied = report.copied,
        already_there = report.already,
        last_position = report.last_position,
        "event log copied and verified: start semsd with --nats-url and --database-url; its \
         projector rebuilds the read models from position 1"
    );
    Ok(())
}

/// The event log, the projector's feed and the read model of the configured store.
struct Stores {
    log: Arc<dyn EventLog>,
    feed: Box<dyn CommitFeed>,
    projection: Arc<dyn ProjectionStore>,
    reads: Arc<dyn CmcReadModel>,
    /// How the projector runs on this store.
    projector: ProjectorConfig,
    status: http::StatusFn,
    /// The embedded data directory's lock, held while semsd runs.
    lock: Option<std::fs::File>,
}

/// Takes the embedded data directory's lock: one semsd (or one migration) at a time.
fn lock_data_dir(data_dir: &std::path::Path, what: &str) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    let path = data_dir.join("semsd.lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another semsd is running on the data directory {} (it holds {}); stop it before {what}",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("lock {}", path.display()))
        }
    }
}

/// Opens the embedded store, or NATS JetStream and PostgreSQL, and says which and where.
async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    let schema = &config.database.read_model_schema;
    let store = config.store().map_err(anyhow::Error::msg)?;
    Ok(match &store {
        Store::Embedded { data_dir } => {
            let lock = lock_data_dir(data_dir, "starting another")?;
            let events = data_dir.join("events.db");
            let read_model = data_dir.join(format!("readmodel-{schema}.db"));
            info!(
                "store: embedded SQLite; event log {}, read model {}",
                events.display(),
                read_model.display()
            );
            let log = SqliteLog::open(SqliteLogConfig::new(&events))
                .await
                .with_context(|| format!("open the event log {}", events.display()))?;
            let read_model = Arc::new(
                SqliteReadModel::connect(&SqliteReadModelConfig::new(&read_model))
                    .await
                    .with_context(|| format!("open the read model {}", read_model.display()))?,
            );
            let status: http::StatusFn = {
                let (log, events, model, keys) = (
                    log.clone(),
                    events.clone(),
                    read_model.path().to_owned(),
                    read_model.clone(),
                );
                Arc::new(move || {
                    let rewinds = log.wal_rewinds();
                    serde_json::json!({
                        "store": "embedded",
                        "event_log": {
                            "path": events.display().to_string(),
                            "last_position": log.last_position(),
                            "group_commits": log.group_commits(),
                            "appends_without_lookup": log.appends_without_lookup(),
                            "knows_ids": log.knows_ids(),
                            "commits_learned": log.commits_learned(),
                            "groups_decided_again": log.groups_decided_again(),
                            "wal_rewinds": rewinds.rewinds,
                            "wal_rewinds_without_catch_up": rewinds.without_catch_up,
                            "writer_stalled_in_rewinds_ms": u64::try_from(rewinds.writer_stalled.as_millis()).unwrap_or(u64::MAX),
                            "aggregate_index_in_memory": log.index_tail_len(),
                        },
                        "read_model": {
                            "path": model.display().to_string(),
                            "alert_keys_in_memory": keys.alert_keys_in_memory(),
                        },
                    })
                })
            };
            Stores {
                log: Arc::new(log.clone()),
                feed: Box::new(SqliteFeed::new(log)),
                projection: read_model.clone(),
                reads: read_model,
                projector: ProjectorConfig {
                    batch_size: SQLITE_PROJECTOR_BATCH,
                    ..ProjectorConfig::default()
                },
                status,
                lock: Some(lock),
            }
        }
        Store::Scaled {
            nats_url,
            database_url,
        } => {
            info!(
                "store: NATS JetStream {} (stream {}), PostgreSQL {} (schema {schema})",
                redact(nats_url),
                config.nats.stream,
                redact(database_url)
            );
            let client = nats_options(nats_url)
                .name("semsd")
                .retry_on_initial_connect()
                .connection_timeout(Duration::from_secs(5))
                .connect(nats_url)
                .await
                .with_context(|| format!("connect to NATS at {}", redact(nats_url)))?;
            let log = JetStreamLog::open(
                client,
                JetStreamConfig {
                    stream: config.nats.stream.clone(),
                    replicas: config.nats.stream_replicas,
                    ..JetStreamConfig::default()
                },
            )
            .await
            .context("open the event stream")?;
            let read_model = Arc::new(
                PgReadModel::connect(&PgReadModelConfig {
                    url: database_url.clone(),
                    schema: schema.clone(),
                    max_connections: config.database.database_connections,
                })
                .await
                .context("open the read model")?,
            );
            let durable = format!("sems_projector_{schema}");
            let status: http::StatusFn = {
                let (stream, schema) = (config.nats.stream.clone(), schema.clone());
                Arc::new(move || {
                    serde_json::json!({
                        "store": "nats+postgresql",
                        "event_log": { "stream": stream },
                        "read_model": { "schema": schema },
                    })
                })
            };
            Stores {
                log: Arc::new(log.clone()),
                feed: Box::new(JetStreamFeed::new(log, durable, Duration::from_secs(30))),
                projection: read_model.clone(),
                reads: read_model,
                projector: ProjectorConfig::default(),
                status,
                lock: None,
            }
        }
    })
}

/// Connection options carrying the credentials of `url`: `user:password@` as user and
/// password, a bare `token@` as a token (percent-decoded), as NATS clients read them.
/// async-nats itself ignores credentials in the URL (nats-io/nats.rs#1623), so without this
/// a password-protected server refuses semsd.
fn nats_options(url: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new();
    match url_credentials(url) {
        Some((user, Some(password))) => options.user_and_password(user, password),
        Some((token, None)) => options.token(token),
        None => options,
    }
}

/// The user (or token) and password of the first server of a NATS URL.
fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let first = url.split(',').next()?;
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(percent_decode(p))),
        None => (userinfo, None),
    };
    Some((percent_decode(user), password))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL without its credentials, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM. Both are caught from the moment this is called,
/// not from the future's first poll: a signal that arrives while `semsd` starts (opening and
/// migrating its stores) then stops it cleanly once started, instead of killing it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        async move {
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = int => {}
                () = term => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, url_credentials};

    #[test]
    fn credentials_in_a_nats_url_are_read_as_nats_clients_read_them() {
        assert_eq!(
            url_credentials("nats://semsd:p%40ss%3Aw@127.0.0.1:4222"),
            Some(("semsd".into(), Some("p@ss:w".into())))
        );
        assert_eq!(
            url_credentials("nats://s3cr3t@127.0.0.1:4222"),
            Some(("s3cr3t".into(), None))
        );
        assert_eq!(url_credentials("nats://127.0.0.1:4222"), None);
        assert_eq!(url_credentials("127.0.0.1:4222"), None);
        assert_eq!(
            url_credentials("nats://a:b@n1:4222,nats://a:b@n2:4222"),
            Some(("a".into(), Some("b".into())))
        );
        // An `@` in a path or a query is not credentials; one in a password is.
        assert_eq!(url_credentials("nats://127.0.0.1:4222/x@y"), None);
        assert_eq!(url_credentials("nats://127.0.0.1:4222?x@y"), None);
        assert_eq!(
            url_credentials("nats://u:p@ss@[::1]:4222"),
            Some(("u".into(), Some("p@ss".into())))
        );
        assert_eq!(
            url_credentials("semsd:pw@127.0.0.1:4222"),
            Some(("semsd".into(), Some("pw".into())))
        );
        // Only `%` and two hex digits decode.
        assert_eq!(
            url_credentials("nats://a:%+f%zz%4@h"),
            Some(("a".into(), Some("%+f%zz%4".into())))
        );
    }

    #[test]
    fn credentials_never_reach_the_logs() {
        assert_eq!(
            redact("nats://semsd:s3cret@10.0.0.1:4222"),
            "nats://***@10.0.0.1:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("semsd:s3cret@10.0.0.1:4222"), "***@10.0.0.1:4222");
    }
}
