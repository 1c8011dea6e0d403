//! Raw component ceilings beside the JetStream one, so a run says how fast this box is today
//! compared with the day the targets were set. The issues state their targets together with
//! what the raw components did then ("a raw tonic unary round trip ~48,000 calls/s at 64 in
//! flight", "PostgreSQL ~130,000–155,000 rows/s as batched inserts"); this machine's speed
//! moves by tens of percent from day to day, and not by the same amount for every component,
//! so each ceiling is measured again in the same run.
//!
//! * gRPC: `IngestAlert` calls carrying only a request id (the reference measured a tiny
//!   message), 64 in flight, answered by a tonic server that does nothing but answer. It
//!   runs on a two-thread runtime of its own, in this process. Both one shared connection and
//!   one connection per client are measured; the faster counts.
//! * PostgreSQL: 1,000-row `UNNEST` inserts of a sequential key and an alert's envelope JSON.
//!
//! Each target is then printed scaled by every component its phase uses, as a range: from the
//! slowest component's share of its reference (taken against the high end of the reference's
//! range) to the fastest one's (against the low end). A figure above the whole range meets
//! the target at any scale, one below it misses at any scale; in between, the day's speed
//! cannot tell.

use std::{net::SocketAddr, time::Instant};

use sems_proto::v1::{
    self as pb,
    alert_service_server::{AlertService, AlertServiceServer},
};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

/// What the issues measured when they set the targets, as (low, high) ends of the range
/// they quote.
pub mod reference {
    /// Raw JetStream commits/s with per-subject concurrency headers and message ids
    /// (issue #2).
    pub const JETSTREAM: (f64, f64) = (107_000.0, 107_000.0);
    /// Raw tonic unary round trips/s of a tiny message at 64 in flight (issue #2's 48,000; the
    /// notes it comes from give 48,000–76,000).
    pub const GRPC_UNARY: (f64, f64) = (48_000.0, 76_000.0);
    /// PostgreSQL rows/s as batched inserts: multi-row `INSERT` and `UNNEST` (issue #2).
    pub const PG_BATCHED_INSERTS: (f64, f64) = (130_000.0, 155_000.0);
    /// sqlx writing 1,000-row multi-row `INSERT`s into a bare SQLite table, WAL, synchronous
    /// full (issue #3: ~60,000 rows/s); the embedded `raw` phase measures the same.
    pub const SQLITE_MULTI_ROW: (f64, f64) = (60_000.0, 60_000.0);
}

/// Calls in flight in the gRPC ceiling, as in the reference.
pub const GRPC_IN_FLIGHT: usize = 64;

/// Calls per connection layout in the gRPC ceiling.
pub const GRPC_CALLS: usize = 100_000;

/// A component's speed today as a share of the issue's figure for it.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    /// Against the high end of the reference range.
    pub low: f64,
    /// Against the low end.
    pub high: f64,
}

impl Share {
    /// Today's `rate` against `reference`.
    pub fn of(rate: f64, reference: (f64, f64)) -> Self {
        Self {
            low: rate / reference.1,
            high: rate / reference.0,
        }
    }

    /// "48–78% of issue #2's 48,000–76,000", say.
    pub fn describe(&self, issue: &str, reference: (f64, f64)) -> String {
        if reference.0 == reference.1 {
            format!(
                "{:.0}% of issue {issue}'s {:.0}",
                self.high * 100.0,
                reference.0
            )
        } else {
            format!(
                "{:.0}–{:.0}% of issue {issue}'s {:.0}–{:.0}",
                self.low * 100.0,
                self.high * 100.0,
                reference.0,
                reference.1
            )
        }
    }
}

/// A server that answers `IngestAlert` at once and does nothing else.
struct AnswerOnly;

#[tonic::async_trait]
impl AlertService for AnswerOnly {
    async fn ingest_alert(
        &self,
        request: Request<pb::IngestAlertRequest>,
    ) -> Result<Response<pb::IngestAlertResponse>, Status> {
        Ok(Response::new(pb::IngestAlertResponse {
            alert_id: request.into_inner().request_id,
            ..Default::default()
        }))
    }

    async fn ingest_alerts(
        &self,
        _request: Request<Streaming<pb::IngestAlertRequest>>,
    ) -> Result<Response<pb::IngestAlertsResponse>, Status> {
        Err(Status::unimplemented(
            "the raw ceiling measures unary calls",
        ))
    }

    async fn dismiss_alert(
        &self,
        _request: Request<pb::DismissAlertRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        Err(Status::unimplemented(
            "the raw ceiling measures unary calls",
        ))
    }

    async fn merge_alert(
        &self,
        _request: Request<pb::MergeAlertRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        Err(Status::unimplemented(
            "the raw ceiling measures unary calls",
        ))
    }
}

/// An answer-only gRPC server on a free loopback port, on its own two-thread runtime; it stops
/// when the returned sender is dropped or sent to.
pub fn answer_only_server() -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("raw-grpc".into())
        .spawn(move || {
            runtime.block_on(async move {
                let incoming = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true))
                    }
                    Err(e) => {
                        eprintln!("raw gRPC ceiling: {e}");
                        return;
                    }
                };
                let served = tonic::transport::Server::builder()
                    .add_service(AlertServiceServer::new(AnswerOnly))
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    eprintln!("raw gRPC ceiling: {e}");
                }
            });
        })?;
    Ok((addr, stop))
}

/// Batched inserts as the reference measured them: 1,000 rows per transaction through
/// `UNNEST`, each row a sequential `bigint` key and the ~0.5 KiB JSON of an alert's envelope
/// as text, on one connection, into a scratch table of the database at `url` that is dropped
/// afterwards: a minimal table, so today's figure is not held down by a heavier shape than the
/// reference's.
/// Rows are built before the clock starts. Returns rows/s.
pub async fn pg_batched_inserts(url: &str, run: &str, rows: usize) -> anyhow::Result<f64> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let table = format!("sems_raw_{}", run.replace('-', "_"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (position bigint PRIMARY KEY, payload text NOT NULL)"
    )))
    .execute(&pool)
    .await?;
    let insert = format!(
        "INSERT INTO {table} (position, payload) SELECT * FROM UNNEST($1::bigint[], $2::text[])"
    );
    let mut batches = Vec::new();
    for start in (0..rows).step_by(1_000) {
        let n = 1_000.min(rows - start);
        let mut positions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for i in start..start + n {
            positions.push(i64::try_from(i + 1)?);
            payloads.push(String::from_utf8(super::envelope_bytes(
                run,
                i,
                Uuid::new_v4(),
            )?)?);
        }
        batches.push((positions, payloads));
    }
    let timed = async {
        let start = Instant::now();
        for (positions, payloads) in &batches {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(positions)
                .bind(payloads)
                .execute(&pool)
                .await?;
        }
        Ok::<_, sqlx::Error>(rows as f64 / start.elapsed().as_secs_f64())
    }
    .await;
    // Dropped whatever happened, so a failed run leaves nothing in semsd's database.
    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await;
    let rate = timed?;
    dropped?;
    pool.close().await;
    Ok(rate)
}

/// The tiny request of the gRPC ceiling.
pub fn tiny_request(_run: &str, n: usize) -> pb::IngestAlertRequest {
    pb::IngestAlertRequest {
        alert: None,
        request_id: n.to_string(),
    }
}

/// `target` scaled by the `shares` of the components a phase uses, and what `measured` says
/// against that range, as one line.
pub fn scaled(what: &str, target: f64, shares: &[Share], measured: f64) -> Option<String> {
    let low = shares.iter().map(|s| s.low).reduce(f64::min)?;
    let high = shares.iter().map(|s| s.high).reduce(f64::max)?;
    let (from, to) = (target * low, target * high);
    let verdict = if measured >= to {
        "met at every scale"
    } else if measured < from {
        "missed at every scale"
    } else {
        "inside the range: today's speed cannot tell"
    };
    Some(format!(
        "  {what}: target {target:.0}/s; its components ran at {:.0}–{:.0}% of the issue's \
         figures today, so it scales to {from:.0}–{to:.0}/s: measured {measured:.0}/s, {verdict}",
        low * 100.0,
        high * 100.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_scales_over_its_components_and_says_where_the_figure_falls() {
        let grpc = Share::of(24_000.0, reference::GRPC_UNARY); // 32–50%
        let pg = Share::of(130_000.0, reference::PG_BATCHED_INSERTS); // 84–100%
        let line = |measured| scaled("unary", 15_000.0, &[grpc, pg], measured).unwrap();
        assert!(
            line(4_000.0).contains("scales to 4737–15000/s"),
            "{}",
            line(4_000.0)
        );
        assert!(
            line(4_000.0).contains("ran at 32–100%"),
            "{}",
            line(4_000.0)
        );
        assert!(line(4_000.0).ends_with("missed at every scale"));
        assert!(line(15_000.0).ends_with("met at every scale"));
        assert!(line(9_000.0).ends_with("today's speed cannot tell"));
        assert!(scaled("unary", 15_000.0, &[], 1.0).is_none());
    }

    #[test]
    fn a_share_names_the_reference_range() {
        let s = Share::of(37_434.0, reference::GRPC_UNARY);
        assert_eq!(
            s.describe("#2", reference::GRPC_UNARY),
            "49–78% of issue #2's 48000–76000"
        );
        let s = Share::of(62_233.0, reference::JETSTREAM);
        assert_eq!(
            s.describe("#2", reference::JETSTREAM),
            "58% of issue #2's 107000"
        );
    }
}
