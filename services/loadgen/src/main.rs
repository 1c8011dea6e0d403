//! `sems-loadgen`: the benchmark of `docs/BENCHMARKS.md`. Against a running `semsd` (and the
//! NATS and PostgreSQL it uses) it measures, in one run:
//!
//! 1. `raw`: the ceiling — async-nats publishing the same envelope bytes with the same headers
//!    (message id, expected-last-subject-sequence, event type, trace context) to a scratch
//!    JetStream stream, pipelined; and the other raw components the targets were set against,
//!    a bare tonic round trip and PostgreSQL batched inserts (`ceilings.rs`), each also as a
//!    share of the figure, so the unary and rebuild targets can be printed scaled to
//!    the day;
//! 2. `unary`: `IngestAlert` from C concurrent clients — accepted alerts/s, p50/p99 latency —
//!    once with every client on one shared HTTP/2 connection and once with one connection
//!    each (in an order alternating with the run id), as the gRPC ceiling is measured; the
//!    faster counts;
//! 3. `stream`: `IngestAlerts` client streams, each sending its share in calls of at most
//!    10,000 alerts, on a read model that has caught up — accepted alerts/s, and the ratio to
//!    the ceiling; then how far behind the read model was just after the last answer, how
//!    long it took to catch up, the rate from the first call to the read model and the CPU
//!    per alert through to it (`--no-projector` skips this, for a semsd with no projector);
//! 4. `lag`: unary ingestion paced at half the (faster) unary rate — acknowledgement → visible in the
//!    read model (its checkpoint), p50/p99 — once with Poisson arrivals (independent sources)
//!    and once with every client calling at once, once a period (`--lag-arrivals`;
//!    `--lag-rate` sets another rate);
//! 5. `rebuild`: a projector rebuilding a fresh read-model schema from sequence 1 — events/s,
//!    once semsd's own projector has caught up (so one projector is measured, not two).
//!
//! After the unary, stream and rebuild phases it prints the CPU time each process on the box
//! (semsd, nats-server, PostgreSQL, the generator) spent per alert or event (`cpu.rs`).
//!
//! With `--store embedded` it measures the same against a `semsd` on the embedded SQLite
//! store: the ceiling is then sqlx writing the same bytes into a bare SQLite table (WAL,
//! synchronous FULL, one multi-row INSERT of 1,000 rows per transaction), and the ingest
//! phases also report the event log's group commits (fsyncs) per second, read from semsd's
//! `GET /status`.
//!
//! Two more phases, not run by default, measure the CMC (`cmc.rs`): `cmc` (append latency on
//! a crisis of `--cmc-entries` entries, and its first timeline page) and `watch`
//! (`--watchers` live timeline watchers).
//!
//! It sends traffic only to the addresses given (loopback by default) and stops by itself.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use futures::{StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use sems_app::{Envelope, EnvelopeEvent, GENESIS_HASH};
use sems_eventlog::{JetStreamConfig, JetStreamFeed, JetStreamLog};
use sems_proto::v1::{self as pb, alert_service_client::AlertServiceClient};
use sems_readmodel::{PgReadModel, PgReadModelConfig, ProjectionStore, Projector, ProjectorConfig};
use tonic::transport::Channel;
use uuid::Uuid;

mod ceilings;
mod cmc;
mod cpu;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Parser)]
#[command(name = "sems-loadgen", about = "SeMS Response ingest benchmark")]
struct Args {
    /// Worker threads of the load generator's own runtime: 0 = one per core; 1 = a single
    /// thread drives every client (no hand-offs between threads).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// semsd gRPC address.
    #[arg(long, env = "SEMS_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// NATS URL (for the raw ceiling and the rebuild).
    #[arg(long, env = "SEMS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// PostgreSQL URL of semsd's read model (for the lag and the rebuild).
    #[arg(
        long,
        env = "SEMS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// semsd's read-model schema.
    #[arg(long, env = "SEMS_READ_MODEL_SCHEMA", default_value = "sems")]
    schema: String,
    /// Alerts per phase.
    #[arg(long, default_value_t = 100_000)]
    alerts: usize,
    /// Concurrent unary clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Concurrent client streams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Alerts per `IngestAlerts` call: each stream sends its share in calls of at most this
    /// many, one after the other (semsd refuses calls of more than 10,000).
    #[arg(long, default_value_t = 10_000)]
    bulk_call: usize,
    /// Messages in flight for the raw ceiling.
    #[arg(long, default_value_t = 1024)]
    raw_in_flight: usize,
    /// Top the event stream up to this many events (raw, valid alert commits) before the
    /// rebuild; 0 = rebuild what the phases wrote.
    #[arg(long, default_value_t = 0)]
    rebuild_events: u64,
    /// Commits per projector transaction (and per pull request) during the rebuild.
    #[arg(long, default_value_t = ProjectorConfig::default().batch_size)]
    rebuild_batch: usize,
    /// Which store semsd runs on: `jetstream` or `embedded`.
    #[arg(long, default_value = "jetstream")]
    store: String,
    /// semsd's data directory (embedded store).
    #[arg(long, env = "SEMS_DATA_DIR", default_value = "./sems-data")]
    data_dir: std::path::PathBuf,
    /// semsd's `GET /status` URL (embedded store: group commits).
    #[arg(long, default_value = "http://127.0.0.1:8088/status")]
    status_url: String,
    /// Entries of the crisis the `cmc` phase fills.
    #[arg(long, default_value_t = 100_000)]
    cmc_entries: usize,
    /// Concurrent callers filling it.
    #[arg(long, default_value_t = 8)]
    cmc_concurrency: usize,
    /// Concurrent watchers of the `watch` phase.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Entries appended while they watch.
    #[arg(long, default_value_t = 500)]
    watch_entries: usize,
    /// One entry every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    watch_every_ms: u64,
    /// How the lag phase's paced calls arrive, each in a run of its own, in this order:
    /// `poisson` (independent sources; the figure judged against the target) and `bursts`
    /// (every client at once, once a period).
    #[arg(long, value_delimiter = ',', default_value = "poisson,bursts")]
    lag_arrivals: Vec<Arrivals>,
    /// The lag phase's rate (alerts/s) instead of half the faster unary rate (5,000 when
    /// the unary phase does not run): to compare builds at one rate.
    #[arg(long, value_parser = positive_rate)]
    lag_rate: Option<f64>,
    /// Phases to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw,unary,stream,lag,rebuild"
    )]
    phases: Vec<String>,
    /// The semsd under test runs no projector (`--role api`): the stream phase then neither
    /// waits for the read model nor reports its backlog (the lag and rebuild phases need one).
    #[arg(long)]
    no_projector: bool,
}

/// A rate in calls/s: finite, and at least 0.1 (ten seconds of it make one call).
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.1 => Ok(r),
        Ok(_) => Err(format!("{text} is not a rate of at least 0.1 calls/s")),
        Err(e) => Err(format!("{text}: {e}")),
    }
}

/// A realistic alert (~0.5 KiB once in its envelope); `n` makes its dedup key unique.
fn alert(run: &str, n: usize) -> pb::IngestAlertRequest {
    pb::IngestAlertRequest {
        alert: Some(pb::Alert {
            source: "suricata".into(),
            source_ref: format!("{run}-{n}"),
            title: "ET POLICY Suspicious outbound connection to rare domain".into(),
            description: "Host contacted a domain first seen 2 hours ago; beacon-like interval"
                .into(),
            severity: pb::Severity::Low as i32,
            occurred_at: None,
            observables: vec![
                pb::Observable {
                    r#type: "ip".into(),
                    value: format!("10.20.{}.{}", n % 250, n % 199),
                },
                pb::Observable {
                    r#type: "domain".into(),
                    value: "cdn-update-check.example".into(),
                },
            ],
            labels: [
                ("site".to_string(), "LHR".to_string()),
                ("sensor".to_string(), "ids-03".to_string()),
            ]
            .into(),
            raw: None,
        }),
        request_id: String::new(),
    }
}

/// The envelope bytes the server stores for a new alert like [`alert`].
fn envelope_bytes(run: &str, n: usize, aggregate_id: Uuid) -> anyhow::Result<Vec<u8>> {
    let now = Utc::now();
    let request = alert(run, n);
    let a = request.alert.context("alert")?;
    let payload = serde_json::json!({
        "source": a.source, "source_ref": a.source_ref, "title": a.title, "description": a.description,
        "severity": "LOW", "occurred_at": now,
        "observables": a.observables.iter().map(|o| serde_json::json!({"type": o.r#type, "value": o.value})).collect::<Vec<_>>(),
        "labels": a.labels, "raw": null,
    });
    let commit_id = Uuid::now_v7();
    let envelope = Envelope {
        commit_id,
        aggregate_type: "alert".into(),
        aggregate_id,
        aggregate_version: 1,
        recorded_at: now,
        actor: "semsd".into(),
        correlation_id: commit_id,
        causation_id: None,
        trace_context: None,
        prev_hash: GENESIS_HASH.into(),
        events: vec![EnvelopeEvent {
            event_id: Uuid::now_v7(),
            event_type: "AlertReceived".into(),
            schema_version: 1,
            occurred_at: now,
            late_reason: None,
            payload: serde_json::value::to_raw_value(&payload)?,
        }],
    };
    Ok(envelope.encode()?)
}

fn headers(commit_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", commit_id);
    h.insert("Nats-Expected-Last-Subject-Sequence", "0");
    h.insert("Sems-Event-Type", "AlertReceived");
    h.insert("Sems-Aggregate-Type", "alert");
    h.insert("Sems-Correlation-Id", commit_id);
    h.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    h
}

/// Publishes `count` alert commits pipelined, `in_flight` at a time, to `prefix.<uuid>`
/// subjects. The messages are built before the clock starts, so the figure is JetStream's
/// and async-nats', not the generator's. Returns the rate.
async fn publish_raw(
    js: &jetstream::Context,
    prefix: &str,
    run: &str,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let mut messages = Vec::with_capacity(count);
    for n in 0..count {
        let id = Uuid::new_v4();
        let bytes = Bytes::from(envelope_bytes(run, n, id)?);
        messages.push((
            format!("{prefix}.{id}"),
            headers(&Uuid::now_v7().to_string()),
            bytes,
        ));
    }
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    for (subject, headers, bytes) in messages {
        let ack = js.publish_with_headers(subject, headers, bytes).await?;
        pending.push(ack.into_future());
        if pending.len() >= in_flight {
            pending.next().await.context("ack")??;
        }
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

async fn raw_ceiling(args: &Args, run: &str) -> anyhow::Result<f64> {
    let client = async_nats::connect(&args.nats_url).await?;
    let js = jetstream::new(client);
    let name = format!("SEMSRAW_{}", run.replace('-', "_"));
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("raw{run}.>")],
        storage: jetstream::stream::StorageType::File,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(600),
        allow_direct: true,
        ..Default::default()
    })
    .await?;
    let rate = publish_raw(
        &js,
        &format!("raw{run}.alert"),
        run,
        args.alerts,
        args.raw_in_flight,
    )
    .await?;
    js.delete_stream(&name).await?;
    Ok(rate)
}

/// The embedded ceiling: sqlx writing the same envelope bytes (and the same columns as the
/// embedded log) into a bare SQLite table — no index but the position — in WAL mode with
/// synchronous FULL, one multi-row INSERT of 1,000 rows per transaction. Rows are built
/// before the clock starts. Returns rows/s.
async fn raw_sqlite(args: &Args, run: &str) -> anyhow::Result<f64> {
    use sqlx::{Connection as _, QueryBuilder, Sqlite, sqlite::SqliteConnectOptions};
    let path = args.data_dir.join(format!("bench-raw-{run}.db"));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query(
        "CREATE TABLE commits (position INTEGER PRIMARY KEY, commit_id TEXT NOT NULL, \
         aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, event_types TEXT NOT NULL, \
         correlation_id TEXT NOT NULL, traceparent TEXT, tracestate TEXT, bytes BLOB NOT NULL) STRICT",
    )
    .execute(&mut conn)
    .await?;
    let mut rows = Vec::with_capacity(args.alerts);
    for n in 0..args.alerts {
        let id = Uuid::new_v4();
        rows.push((
            i64::try_from(n + 1)?,
            Uuid::now_v7().to_string(),
            id.to_string(),
            envelope_bytes(run, n, id)?,
        ));
    }
    let start = Instant::now();
    for chunk in rows.chunks(1_000) {
        let mut tx = conn.begin().await?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO commits (position, commit_id, aggregate_type, aggregate_id, event_types, \
             correlation_id, traceparent, tracestate, bytes) ",
        );
        q.push_values(
            chunk,
            |mut b, (position, commit_id, aggregate_id, bytes)| {
                b.push_bind(*position)
                    .push_bind(commit_id.as_str())
                    .push_bind("alert")
                    .push_bind(aggregate_id.as_str())
                    .push_bind("AlertReceived")
                    .push_bind(commit_id.as_str())
                    .push_bind("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .push_bind(None::<&str>)
                    .push_bind(bytes.as_slice());
            },
        );
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let rate = rows.len() as f64 / start.elapsed().as_secs_f64();
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    Ok(rate)
}

/// The embedded event log's counters that a phase reports, from semsd's `GET /status`.
#[derive(Debug, Clone, Copy, Default)]
struct LogCounters {
    group_commits: u64,
    wal_rewinds: u64,
    writer_stalled_ms: u64,
}

impl std::ops::Sub for LogCounters {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            group_commits: self.group_commits.saturating_sub(before.group_commits),
            wal_rewinds: self.wal_rewinds.saturating_sub(before.wal_rewinds),
            writer_stalled_ms: self
                .writer_stalled_ms
                .saturating_sub(before.writer_stalled_ms),
        }
    }
}

async fn log_counters(url: &str) -> anyhow::Result<LogCounters> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .context("--status-url must be http://host:port/path")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let status: serde_json::Value = serde_json::from_str(body)
        .with_context(|| format!("{url} answered no status JSON: {raw}"))?;
    let log = &status["event_log"];
    Ok(LogCounters {
        group_commits: log["group_commits"].as_u64().context(
            "no event_log.group_commits in the status (is semsd on the embedded store?)",
        )?,
        // Absent from a semsd older than the counters: reported as none.
        wal_rewinds: log["wal_rewinds"].as_u64().unwrap_or(0),
        writer_stalled_ms: log["writer_stalled_in_rewinds_ms"].as_u64().unwrap_or(0),
    })
}

/// What a phase did to the embedded log: its duration and the counters' growth.
type LogActivity = Option<(f64, LogCounters)>;

/// Runs `phase` and, on the embedded store, notes the group commits (fsyncs) and WAL
/// rewinds it caused.
async fn with_fsyncs<T>(
    args: &Args,
    phase: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, LogActivity)> {
    if args.store != "embedded" {
        return Ok((phase.await?, None));
    }
    let before = log_counters(&args.status_url).await?;
    let start = Instant::now();
    let out = phase.await?;
    let secs = start.elapsed().as_secs_f64();
    let during = log_counters(&args.status_url).await? - before;
    Ok((out, Some((secs, during))))
}

fn fsync_text(activity: LogActivity, commits: usize) -> String {
    activity
        .map(|(secs, c)| {
            let groups = c.group_commits as f64;
            format!(
                "; {:.0} fsyncs/s ({:.1} commits per group commit); {} WAL rewinds, the log's \
                 writer {} ms in them",
                groups / secs.max(f64::EPSILON),
                commits as f64 / groups.max(1.0),
                c.wal_rewinds,
                c.writer_stalled_ms
            )
        })
        .unwrap_or_default()
}

/// Acknowledgements (when, stream position) waiting to become visible in the read model.
type Acks = Arc<Mutex<VecDeque<(Instant, u64)>>>;

struct Unary {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// Paced calls that fell due while their client's call before was still unanswered,
    /// and so left late (only in bursts: Poisson calls leave when due, whatever is in
    /// flight).
    late: usize,
}

async fn channels(server: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            Channel::from_shared(server.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// Waits until semsd answers a query: it binds its port before opening its stores (and
/// migrating them), so a connection succeeds before the read model's tables exist.
async fn wait_until_serving(server: &str) -> anyhow::Result<()> {
    use sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = async {
            let channel = channels(server, 1).await?.remove(0);
            IncidentQueryServiceClient::new(channel)
                .list_incidents(pb::ListIncidentsRequest {
                    page_size: 1,
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(())
        };
        let error = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_owned(),
        };
        if Instant::now() > deadline {
            anyhow::bail!("semsd at {server} is not serving after 120 s: {error}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where unary calls go and what they carry.
#[derive(Debug, Clone)]
struct Target {
    server: String,
    /// Every client on one connection, instead of one connection each.
    shared_connection: bool,
    request: fn(&str, usize) -> pb::IngestAlertRequest,
}

impl Target {
    /// semsd, with the benchmark's alerts.
    fn semsd(args: &Args, shared_connection: bool) -> Self {
        Self {
            server: args.server.clone(),
            shared_connection,
            request: alert,
        }
    }
}

/// How paced calls arrive.
///
/// Poisson calls are sent open-loop: each leaves when due, whatever its client still has
/// in flight. Bursts keep one call in flight per client, as the phase always did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Arrivals {
    /// Each client on its own Poisson process (exponential gaps, each call sent when due
    /// whatever is in flight): independent sources, as alerts from many sensors arrive.
    Poisson,
    /// Every client on the same fixed grid: all of them call at once, once a period (the
    /// load generator's pacing until 2026-11-28). A harsher load than the same rate spread.
    Bursts,
}

impl Arrivals {
    fn name(self) -> &'static str {
        match self {
            Self::Poisson => "Poisson arrivals, open loop",
            Self::Bursts => "in bursts of every client at once",
        }
    }
}

/// A client's pacing: when its next call is due.
struct Pace {
    arrivals: Arrivals,
    period: Duration,
    next: tokio::time::Instant,
    /// splitmix64 state; seeded per client, so runs repeat their schedules.
    seed: u64,
}

impl Pace {
    fn new(arrivals: Arrivals, period: Duration, client: usize) -> Self {
        let mut pace = Self {
            arrivals,
            period,
            next: tokio::time::Instant::now(),
            seed: 0x5eed_0000_0000_0000 ^ client as u64,
        };
        if arrivals == Arrivals::Poisson {
            // Start each client at a random point of its process, not all together.
            let gap = pace.gap();
            pace.next += gap;
        }
        pace
    }

    /// The next gap: fixed for bursts, exponential with mean `period` for Poisson.
    fn gap(&mut self) -> Duration {
        match self.arrivals {
            Arrivals::Bursts => self.period,
            Arrivals::Poisson => {
                self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                // Uniform in (0, 1]: 53 random bits.
                let u = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
                self.period.mul_f64(-u.ln())
            }
        }
    }

    /// Waits until the next call is due (at once if it is overdue: the schedule is set
    /// ahead, whatever the answers take), schedules the one after, and says when this one
    /// was due. A client has one call in flight, so a call falling due before the answer
    /// to the one before leaves late.
    async fn wait(&mut self) -> tokio::time::Instant {
        let due = self.next;
        tokio::time::sleep_until(due).await;
        let gap = self.gap();
        self.next += gap;
        due
    }
}

/// `count` unary calls from `clients` concurrent clients of `target`, optionally paced to
/// `rate` calls/s in total. Each acknowledgement (time, position) goes to `acks` when given.
async fn unary(
    target: &Target,
    run: &str,
    count: usize,
    clients: usize,
    rate: Option<(f64, Arrivals)>,
    acks: Option<Acks>,
) -> anyhow::Result<Unary> {
    let next = Arc::new(AtomicUsize::new(0));
    let connections = if target.shared_connection {
        vec![channels(&target.server, 1).await?.remove(0); clients]
    } else {
        channels(&target.server, clients).await?
    };
    let request = target.request;
    // The clock starts once every client is connected.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, channel) in connections.into_iter().enumerate() {
        let (next, run, acks) = (next.clone(), run.to_owned(), acks.clone());
        let mut pace = rate.map(|(r, arrivals)| {
            Pace::new(arrivals, Duration::from_secs_f64(clients as f64 / r), c)
        });
        tasks.push(tokio::spawn(async move {
            let client = AlertServiceClient::new(channel);
            let mut hist = Histogram::<u64>::new(3)?;
            let mut late = 0;
            let call = |n: usize| {
                let mut client = client.clone();
                let request = request(&run, n);
                async move {
                    let sent = Instant::now();
                    let answer = client.ingest_alert(request).await?.into_inner();
                    anyhow::Ok((sent, Instant::now(), answer.position))
                }
            };
            let mut record = |(sent, done, position): (Instant, Instant, u64)| {
                hist.record((done - sent).as_micros() as u64)?;
                if let Some(acks) = &acks {
                    acks.lock()
                        .map_err(|_| anyhow::anyhow!("lock"))?
                        .push_back((done, position));
                }
                anyhow::Ok(())
            };
            match pace.as_mut() {
                // Open loop: each call leaves when it is due, whatever is still in flight.
                Some(p) if p.arrivals == Arrivals::Poisson => {
                    let mut in_flight = FuturesUnordered::new();
                    let mut sending = true;
                    while sending || !in_flight.is_empty() {
                        tokio::select! {
                            Some(answered) = in_flight.next() => record(answered?)?,
                            _ = p.wait(), if sending => {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                if n < count {
                                    in_flight.push(call(n));
                                } else {
                                    sending = false;
                                }
                            }
                        }
                    }
                }
                // One call in flight: a call due before the answer to the one before
                // leaves late.
                _ => loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    if let Some(p) = pace.as_mut() {
                        let ready = tokio::time::Instant::now();
                        if p.wait().await < ready {
                            late += 1;
                        }
                    }
                    record(call(n).await?)?;
                },
            }
            Ok::<_, anyhow::Error>((hist, late))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut late = 0;
    for t in tasks {
        let (h, l) = t.await??;
        hist.add(h)?;
        late += l;
    }
    Ok(Unary {
        rate: count as f64 / start.elapsed().as_secs_f64(),
        p50: Duration::from_micros(hist.value_at_quantile(0.5)),
        p99: Duration::from_micros(hist.value_at_quantile(0.99)),
        late,
    })
}

/// What the stream phase measured: when its clock started and stopped, and its rate.
struct Streamed {
    started: Instant,
    ended: Instant,
    rate: f64,
}

async fn streaming(args: &Args, run: &str) -> anyhow::Result<Streamed> {
    let per = args.alerts / args.streams;
    let connections = channels(&args.server, args.streams).await?;
    // The clock starts once every stream's connection is up.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, channel) in connections.into_iter().enumerate() {
        let run = run.to_owned();
        let bulk_call = args.bulk_call.max(1);
        tasks.push(tokio::spawn(async move {
            let mut client = AlertServiceClient::new(channel);
            for from in (0..per).step_by(bulk_call) {
                let to = (from + bulk_call).min(per);
                let run = run.clone();
                let items =
                    futures::stream::iter((from..to).map(move |i| alert(&run, s * per + i)));
                let answer = client.ingest_alerts(items).await?.into_inner();
                anyhow::ensure!(
                    answer.accepted as usize == to - from,
                    "accepted {} of {}",
                    answer.accepted,
                    to - from
                );
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ended = Instant::now();
    Ok(Streamed {
        started: start,
        ended,
        rate: (per * args.streams) as f64 / (ended - start).as_secs_f64(),
    })
}

/// Where the lag phase reads the read model's checkpoint and the log's last position.
enum Positions {
    Pg {
        pool: sqlx::PgPool,
        sql: String,
        name: String,
        nats_url: String,
    },
    Sqlite {
        read_model: sqlx::SqlitePool,
        events: sqlx::SqlitePool,
    },
}

impl Positions {
    async fn open(args: &Args) -> anyhow::Result<Self> {
        if args.store == "embedded" {
            let open = |file: &str| {
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(args.data_dir.join(file))
                    .read_only(true)
            };
            Ok(Self::Sqlite {
                read_model: sqlx::SqlitePool::connect_with(open(&format!(
                    "readmodel-{}.db",
                    args.schema
                )))
                .await?,
                events: sqlx::SqlitePool::connect_with(open("events.db")).await?,
            })
        } else {
            Ok(Self::Pg {
                pool: sqlx::PgPool::connect(&args.database_url).await?,
                sql: format!(
                    "SELECT position FROM {}.projection_checkpoints WHERE name = $1",
                    args.schema
                ),
                name: format!("incident_tracking_{}", args.schema),
                nats_url: args.nats_url.clone(),
            })
        }
    }

    async fn checkpoint(&self) -> anyhow::Result<u64> {
        let p: i64 =
            match self {
                Self::Pg {
                    pool, sql, name, ..
                } => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(name)
                        .fetch_one(pool)
                        .await?
                }
                Self::Sqlite { read_model, .. } => sqlx::query_scalar(
                    "SELECT position FROM projection_checkpoints WHERE name = 'incident_tracking'",
                )
                .fetch_one(read_model)
                .await?,
            };
        Ok(u64::try_from(p)?)
    }

    async fn last(&self) -> anyhow::Result<u64> {
        match self {
            Self::Pg { nats_url, .. } => {
                let client = async_nats::connect(nats_url).await?;
                Ok(JetStreamLog::open(client, JetStreamConfig::default())
                    .await?
                    .state()
                    .await?
                    .1)
            }
            Self::Sqlite { events, .. } => {
                let p: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM commits")
                    .fetch_one(events)
                    .await?;
                Ok(u64::try_from(p)?)
            }
        }
    }

    /// Waits until the read model's checkpoint covers the log's last commit (at most ten
    /// minutes: a read model that does not move means no projector is running).
    async fn caught_up(&self) -> anyhow::Result<()> {
        self.reach(self.last().await?, Duration::from_millis(50))
            .await
    }

    /// Waits until the read model's checkpoint covers `last`, looking every `poll` (at most
    /// ten minutes, as [`Positions::caught_up`]).
    async fn reach(&self, last: u64, poll: Duration) -> anyhow::Result<()> {
        let give_up = Instant::now() + Duration::from_secs(600);
        loop {
            let checkpoint = self.checkpoint().await?;
            if checkpoint >= last {
                return Ok(());
            }
            if Instant::now() > give_up {
                anyhow::bail!(
                    "the read model stayed at position {checkpoint} of {last} for ten minutes: \
                     is semsd's projector running?"
                );
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Paced ingestion at `rate`, measuring acknowledgement → read-model checkpoint.
/// What the lag phase measured: the lag's p50 and p99, the alerts, and the paced calls'
/// own latency (so a stall before the acknowledgement shows apart from one after it).
struct Lag {
    p50: Duration,
    p99: Duration,
    alerts: usize,
    calls: Unary,
}

async fn lag(args: &Args, run: &str, rate: f64, arrivals: Arrivals) -> anyhow::Result<Lag> {
    let positions = Positions::open(args).await?;
    // Start from a caught-up read model, so the figure is the lag, not an earlier backlog.
    positions.caught_up().await?;
    let acks: Acks = Arc::default();
    let count = (rate * 10.0) as usize; // ten seconds of traffic
    let load = {
        let (args, run, acks) = (args.clone(), run.to_owned(), acks.clone());
        tokio::spawn(async move {
            unary(
                &Target::semsd(&args, false),
                &run,
                count,
                args.concurrency,
                Some((rate, arrivals)),
                Some(acks),
            )
            .await
        })
    };
    let mut hist = Histogram::<u64>::new(3)?;
    let mut seen = 0;
    while seen < count {
        let checkpoint = positions.checkpoint().await?;
        let now = Instant::now();
        {
            let mut q = acks.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            // Positions arrive nearly in order; scan the whole queue.
            q.retain(|(at, position)| {
                if *position <= checkpoint {
                    let _ = hist.record((now - *at).as_micros() as u64);
                    seen += 1;
                    false
                } else {
                    true
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let calls = load.await??;
    Ok(Lag {
        p50: Duration::from_micros(hist.value_at_quantile(0.5)),
        p99: Duration::from_micros(hist.value_at_quantile(0.99)),
        alerts: count,
        calls,
    })
}

/// Rebuilds a fresh read-model schema from sequence 1: events, events/s, and the CPU each
/// process spent per event.
async fn rebuild(args: &Args, run: &str) -> anyhow::Result<(u64, f64, Option<String>)> {
    let client = async_nats::connect(&args.nats_url).await?;
    let log = JetStreamLog::open(client.clone(), JetStreamConfig::default()).await?;
    let (count, _) = log.state().await?;
    if args.rebuild_events > count {
        let fill = (args.rebuild_events - count) as usize;
        println!("filling the stream with {fill} alert commits for the rebuild");
        publish_raw(
            log.context(),
            "sems.ev.alert",
            &format!("{run}-fill"),
            fill,
            args.raw_in_flight,
        )
        .await?;
    }
    let (events, last) = log.state().await?;
    // semsd's own projector reads the same stream: let it finish projecting the fill first,
    // so the figure is one projector rebuilding, not two sharing the cores.
    let live = Positions::open(args).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while live.checkpoint().await? < last {
        anyhow::ensure!(
            Instant::now() < deadline,
            "semsd's projector did not reach position {last} within 10 minutes: is semsd \
             (role all or projector) running on this stream and database?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("rebuilding {events} events from sequence 1");
    let schema = format!("bench_rebuild_{}", run.replace('-', "_"));
    let mut config = PgReadModelConfig::new(&args.database_url);
    config.schema = schema.clone();
    let store = Arc::new(PgReadModel::connect(&config).await?);
    let feed = JetStreamFeed::new(
        log.clone(),
        format!("sems_projector_{schema}"),
        Duration::from_secs(30),
    )
    .with_pull_batch(args.rebuild_batch);
    let start = Instant::now();
    let cpu = cpu::Sample::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let projector = tokio::spawn(
        Projector::new(
            store.clone(),
            feed,
            ProjectorConfig {
                batch_size: args.rebuild_batch,
                ..ProjectorConfig::default()
            },
        )
        .run(async move {
            let _ = stopped.await;
        }),
    );
    while store.checkpoint().await? < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu.per_unit(&cpu::Sample::now(), events as usize, "event");
    let _ = stop.send(());
    projector.await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(store.pool())
        .await?;
    let js = log.context();
    js.get_stream("SEMS")
        .await?
        .delete_consumer(&format!("sems_projector_{schema}"))
        .await?;
    Ok((events, rate, cpu))
}

/// Prints the CPU each process spent per unit since `before`.
fn print_cpu(before: &cpu::Sample, units: usize, unit: &str) {
    if let Some(line) = before.per_unit(&cpu::Sample::now(), units, unit) {
        println!("{line}");
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Today's shares of the issues' raw figures, per component measured.
#[derive(Debug, Default)]
struct Shares {
    jetstream: Option<ceilings::Share>,
    grpc: Option<ceilings::Share>,
    /// PostgreSQL, or SQLite on the embedded store.
    store: Option<ceilings::Share>,
}

impl Shares {
    fn all(&self) -> Vec<ceilings::Share> {
        [self.jetstream, self.grpc, self.store]
            .into_iter()
            .flatten()
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    runtime.enable_all().build()?.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let has = |p: &str| args.phases.iter().any(|x| x == p);
    anyhow::ensure!(
        !has("stream") || (args.streams >= 1 && args.alerts >= args.streams),
        "the stream phase needs at least one stream and at least one alert per stream \
         (--streams {}, --alerts {})",
        args.streams,
        args.alerts
    );
    println!(
        "sems-loadgen run {run}: {} alerts per phase, {} unary clients, {} streams",
        args.alerts, args.concurrency, args.streams
    );

    if args.phases.iter().any(|p| p != "raw") {
        wait_until_serving(&args.server).await?;
    }
    let embedded = args.store == "embedded";
    // Today's share of what each raw component did when the targets were set.
    let mut shares = Shares::default();
    let raw = if has("raw") {
        if embedded {
            let r = raw_sqlite(&args, &run).await?;
            let share = ceilings::Share::of(r, ceilings::reference::SQLITE_MULTI_ROW);
            println!(
                "raw SQLite ceiling (bare table, WAL, synchronous FULL, one 1,000-row INSERT \
                 per transaction, same bytes): {r:.0} rows/s ({})",
                share.describe("#3", ceilings::reference::SQLITE_MULTI_ROW)
            );
            shares.store = Some(share);
            Some(r)
        } else {
            let r = raw_ceiling(&args, &run).await?;
            let share = ceilings::Share::of(r, ceilings::reference::JETSTREAM);
            println!(
                "raw JetStream ceiling ({} in flight, same bytes and headers): {r:.0} commits/s \
                 ({})",
                args.raw_in_flight,
                share.describe("#2", ceilings::reference::JETSTREAM)
            );
            shares.jetstream = Some(share);
            Some(r)
        }
    } else {
        None
    };
    // The other raw components the targets were set against, measured again today.
    if has("raw") {
        let (addr, stop) = ceilings::answer_only_server()?;
        let mut rates = Vec::new();
        for shared in [true, false] {
            let target = Target {
                server: format!("http://{addr}"),
                shared_connection: shared,
                request: ceilings::tiny_request,
            };
            let calls = ceilings::GRPC_CALLS;
            rates.push(
                unary(&target, &run, calls, ceilings::GRPC_IN_FLIGHT, None, None)
                    .await?
                    .rate,
            );
        }
        let _ = stop.send(());
        let best = rates.iter().copied().fold(0.0, f64::max);
        let share = ceilings::Share::of(best, ceilings::reference::GRPC_UNARY);
        println!(
            "raw gRPC ceiling (tiny unary calls, {} in flight, a tonic server that only \
             answers): {best:.0} calls/s ({}; one shared connection {:.0}, one per client {:.0})",
            ceilings::GRPC_IN_FLIGHT,
            share.describe("#2", ceilings::reference::GRPC_UNARY),
            rates[0],
            rates[1]
        );
        shares.grpc = Some(share);
    }
    if has("raw") && !embedded {
        let r = ceilings::pg_batched_inserts(&args.database_url, &run, args.alerts).await?;
        let share = ceilings::Share::of(r, ceilings::reference::PG_BATCHED_INSERTS);
        println!(
            "raw PostgreSQL ceiling (1,000-row UNNEST inserts of a key and the envelope JSON, \
             one connection): {r:.0} rows/s ({})",
            share.describe("#2", ceilings::reference::PG_BATCHED_INSERTS)
        );
        shares.store = Some(share);
    }
    let ratio = |rate: f64| {
        raw.map(|r| format!(" = {:.0}% of the raw ceiling", 100.0 * rate / r))
            .unwrap_or_default()
    };
    let mut unary_rate = None;
    if has("unary") {
        // Measured as the gRPC ceiling is: the 64 clients on one shared HTTP/2 connection,
        // then each on its own; the faster counts.
        let mut rates = Vec::new();
        let positions = Positions::open(&args).await?;
        // The second mode runs on a bigger table: which goes first alternates from run to
        // run (with the run id), so neither is always the one measured second.
        let shared_first = run.bytes().fold(0u32, |a, b| a.wrapping_add(u32::from(b))) % 2 == 0;
        for shared in [shared_first, !shared_first] {
            // Each mode starts on a read model that has caught up with the one before.
            positions.caught_up().await?;
            let connections = if shared {
                "one shared connection"
            } else {
                "one connection per client"
            };
            let cpu = cpu::Sample::now();
            let (u, fsyncs) = with_fsyncs(
                &args,
                unary(
                    &Target::semsd(&args, shared),
                    &format!("{run}-u{}", if shared { "1" } else { "n" }),
                    args.alerts,
                    args.concurrency,
                    None,
                    None,
                ),
            )
            .await?;
            println!(
                "unary IngestAlert, {} in flight, {connections}: {:.0} alerts/s{}, p50 {}, \
                 p99 {}{}",
                args.concurrency,
                u.rate,
                ratio(u.rate),
                ms(u.p50),
                ms(u.p99),
                fsync_text(fsyncs, args.alerts)
            );
            print_cpu(&cpu, args.alerts, "alert");
            rates.push(u.rate);
        }
        let best = rates.iter().copied().fold(0.0, f64::max);
        // Unary uses every component: gRPC, the log and the read model.
        let target = if embedded { 10_000.0 } else { 15_000.0 };
        println!("  unary, the faster of the two: {best:.0} alerts/s");
        if let Some(line) = ceilings::scaled("unary", target, &shares.all(), best) {
            println!("{line}");
        }
        unary_rate = Some(best);
    }
    if has("stream") {
        let alerts = args.alerts / args.streams * args.streams;
        let positions = if args.no_projector {
            None
        } else {
            let positions = Positions::open(&args).await?;
            // As each unary mode does, the phase starts on a read model that has caught up
            // with the phases before it: their backlog is not this phase's work.
            positions.caught_up().await?;
            Some(positions)
        };
        let cpu = cpu::Sample::now();
        let (streamed, fsyncs) = with_fsyncs(&args, streaming(&args, &format!("{run}-s"))).await?;
        // Read first, before anything is printed: the projector drains tens of commits a
        // millisecond. Nothing is appended after the phase, so the log's end cannot move.
        let checkpoint = match &positions {
            Some(p) => Some(p.checkpoint().await?),
            None => None,
        };
        let s = streamed.rate;
        println!(
            "client-streaming IngestAlerts, {} streams: {s:.0} alerts/s{}{}",
            args.streams,
            ratio(s),
            fsync_text(fsyncs, alerts)
        );
        print_cpu(&cpu, alerts, "alert");
        if let (Some(positions), Some(checkpoint)) = (&positions, checkpoint) {
            // The projector shares the box with the calls and falls behind while they
            // stream; what it has left is work the accepted rate did not pay for. Timing the
            // catch-up gives the rate from the first call to the last alert readable in the
            // read model, and the CPU through to it.
            let last = positions.last().await?;
            let behind = last.saturating_sub(checkpoint);
            let catch_up = if behind == 0 {
                Duration::ZERO
            } else {
                positions.reach(last, Duration::from_millis(5)).await?;
                streamed.ended.elapsed()
            };
            let through =
                alerts as f64 / (streamed.ended - streamed.started + catch_up).as_secs_f64();
            println!(
                "  the read model was {behind} commits behind just after the last answer and \
                 caught up {} later: {through:.0} alerts/s from the first call to the read \
                 model{}",
                ms(catch_up),
                ratio(through)
            );
            if let Some(line) = cpu.per_unit(&cpu::Sample::now(), alerts, "alert") {
                println!("  through to the read model, {}", line.trim_start());
            }
        }
    }
    if has("lag") {
        let rate = args
            .lag_rate
            .unwrap_or_else(|| unary_rate.map_or(5_000.0, |r| r / 2.0));
        for (i, &arrivals) in args.lag_arrivals.iter().enumerate() {
            let l = lag(&args, &format!("{run}-l{i}"), rate, arrivals).await?;
            let late = match arrivals {
                Arrivals::Poisson => String::new(),
                Arrivals::Bursts => format!(
                    "; {:.1}% fell due while their client's call before was unanswered",
                    100.0 * l.calls.late as f64 / l.alerts.max(1) as f64
                ),
            };
            println!(
                "read-model lag at {rate:.0} alerts/s, {} ({} alerts): p50 {}, p99 {} \
                 (the calls themselves: p50 {}, p99 {}{late})",
                arrivals.name(),
                l.alerts,
                ms(l.p50),
                ms(l.p99),
                ms(l.calls.p50),
                ms(l.calls.p99),
            );
        }
    }
    if has("rebuild") && embedded {
        println!("projector rebuild: measured on the JetStream/PostgreSQL pair only");
    } else if has("rebuild") {
        let (events, rate, cpu) = rebuild(&args, &run).await?;
        println!("projector rebuild from sequence 1: {events} events at {rate:.0} events/s");
        if let Some(line) = cpu {
            println!("{line}");
        }
        // The rebuild reads JetStream and writes PostgreSQL.
        let used: Vec<_> = [shares.jetstream, shares.store]
            .into_iter()
            .flatten()
            .collect();
        if let Some(line) = ceilings::scaled("rebuild", 50_000.0, &used, rate) {
            println!("{line}");
        }
    }
    let mut crisis = None;
    if has("cmc") {
        let channel = channels(&args.server, 1).await?.remove(0);
        crisis = Some(cmc::fill(channel, args.cmc_entries, args.cmc_concurrency).await?);
    }
    if has("watch") {
        let channel = channels(&args.server, 1).await?.remove(0);
        let crisis = match crisis {
            Some(c) => c,
            None => cmc::fill(channel.clone(), 1_000, args.cmc_concurrency).await?,
        };
        cmc::watch(
            channel,
            &crisis,
            args.watchers,
            args.watch_entries,
            Duration::from_millis(args.watch_every_ms),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_average_the_period_and_bursts_keep_the_grid() {
        let period = Duration::from_millis(20);
        let mut poisson = Pace::new(Arrivals::Poisson, period, 3);
        let n = 100_000;
        let gaps: Vec<Duration> = (0..n).map(|_| poisson.gap()).collect();
        let mean = gaps.iter().sum::<Duration>().as_secs_f64() / n as f64;
        assert!(
            (mean / period.as_secs_f64() - 1.0).abs() < 0.02,
            "mean gap {mean} s against {period:?}"
        );
        // Exponential: about 1 - 1/e of the gaps are shorter than the mean.
        let short = gaps.iter().filter(|g| **g < period).count() as f64 / n as f64;
        assert!((short - 0.632).abs() < 0.01, "{short}");
        // Clients do not share a schedule.
        let mut other = Pace::new(Arrivals::Poisson, period, 4);
        assert_ne!(
            (0..8).map(|_| other.gap()).collect::<Vec<_>>(),
            gaps[..8].to_vec()
        );
        let mut bursts = Pace::new(Arrivals::Bursts, period, 3);
        assert!(
            bursts.next <= tokio::time::Instant::now(),
            "the first call is due at once"
        );
        assert!((0..5).all(|_| bursts.gap() == period));
    }

    #[test]
    fn a_lag_rate_must_be_a_positive_finite_number() {
        assert_eq!(positive_rate("3400"), Ok(3400.0));
        for bad in ["0", "-1", "NaN", "inf", "0.01", "fast"] {
            assert!(positive_rate(bad).is_err(), "{bad}");
        }
    }
}
