//! The PostgreSQL store of the incident-tracking read model. Each read-model generation
//! lives in its own schema, so a rebuild writes fresh tables beside the live ones and the
//! API switches by schema name.

use std::{collections::HashSet, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
    types::Json,
};
use tokio::sync::watch;
use tracing::{Instrument, info_span};
use uuid::Uuid;

use sems_app::AppError;

use crate::{
    AlertQuery, AlertRow, Applied, IncidentDetail, IncidentQuery, IncidentReadModel, IncidentRow,
    IncidentSummary, NoteRow, Page, ProjectedCommit, ProjectionStore, RiskIncidents, cmc, cmc_sql,
    fresh_above,
    projection::{self, Rows},
    wait_until_applied,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const INCIDENT_COLUMNS: &[&str] = &[
    "title",
    "description",
    "status",
    "level",
    "phase",
    "severity",
    "priority",
    "crisis_escalation_requested",
    "roles",
    "resolution",
    "just_culture",
    "opened_by",
    "opened_at",
    "acknowledged_at",
    "tactical_at",
    "escalation_requested_at",
    "resolved_at",
    "closed_at",
    "updated_at",
    "version",
    "position",
    "notifications",
    "authority_notified_at",
    "risks",
];

const ALERT_COLUMNS: &[&str] = &[
    "source",
    "source_ref",
    "title",
    "description",
    "severity",
    "status",
    "incident_id",
    "repeat_count",
    "first_seen_at",
    "last_seen_at",
    "received_at",
    "observables",
    "labels",
    "raw",
    "dismissal_rationale",
    "source_state",
    "source_resolved_at",
    "version",
    "position",
];

/// Where the read model lives.
#[derive(Debug, Clone)]
pub struct PgReadModelConfig {
    /// PostgreSQL URL.
    pub url: String,
    /// Schema of this read-model generation (default `sems`).
    pub schema: String,
    /// Pool size.
    pub max_connections: u32,
}

impl PgReadModelConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "sems".into(),
            max_connections: 8,
        }
    }
}

/// The incident-tracking read model in PostgreSQL.
#[derive(Clone)]
pub struct PgReadModel {
    pool: PgPool,
    name: String,
    schema: String,
    url: String,
    applied: Arc<watch::Sender<u64>>,
    writer: Arc<tokio::sync::Mutex<Option<Writer>>>,
}

fn unavailable(context: &str) -> impl FnOnce(sqlx::Error) -> AppError + '_ {
    move |e| match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => AppError::Unavailable(format!("{context}: {e}")),
        // Class 08 (connection exception) and 57P (operator intervention: shutdown, starting up).
        sqlx::Error::Database(ref db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
        {
            AppError::Unavailable(format!("{context}: {e}"))
        }
        other => AppError::Internal(format!("{context}: {other}")),
    }
}

impl PgReadModel {
    /// Connects, creates the schema when missing and runs the migrations in it.
    pub async fn connect(config: &PgReadModelConfig) -> Result<Self, AppError> {
        let schema = &config.schema;
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(AppError::Invalid {
                field: "read_model_schema".into(),
                message: "use lowercase letters, digits and _".into(),
            });
        }
        let options = PgConnectOptions::from_str(&config.url).map_err(|e| AppError::Invalid {
            field: "database_url".into(),
            message: e.to_string(),
        })?;
        let mut admin = PgConnection::connect_with(&options)
            .await
            .map_err(unavailable("connect to PostgreSQL"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&mut admin)
        .await
        .map_err(unavailable("create schema"))?;
        admin.close().await.map_err(unavailable("close"))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // Plan every statement for its parameters: sqlx prepares statements, and a generic
            // plan made while a table was empty (a seq scan) stays chosen once it holds
            // millions of rows — seen here as one-second row loads during a rebuild.
            .connect_with(options.options([
                ("search_path", schema.as_str()),
                ("plan_cache_mode", "force_custom_plan"),
            ]))
            .await
            .map_err(unavailable("connect to PostgreSQL"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| AppError::Internal(format!("migrate {schema}: {e}")))?;
        let name = format!("incident_tracking_{schema}");
        sqlx::query("INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
            .bind(&name)
            .execute(&pool)
            .await
            .map_err(unavailable("create checkpoint"))?;
        let (applied, _) = watch::channel(0);
        Ok(Self {
            pool,
            name,
            schema: schema.clone(),
            url: config.url.clone(),
            applied: Arc::new(applied),
            writer: Arc::default(),
        })
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every row of every table, as JSON text in key order, for comparing two generations.
    pub async fn dump(&self) -> Result<Vec<String>, AppError> {
        let mut out = Vec::new();
        for (table, key) in [
            ("incidents", "incident_id"),
            ("alerts", "alert_id"),
            ("incident_notes", "position, seq"),
            ("incident_openings_pending", "incident_id"),
        ] {
            let sql = format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY {key}");
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable("dump"))?;
            out.extend(rows.into_iter().map(|r| format!("{table} {r}")));
        }
        out.extend(cmc_sql::postgres::dump(&self.pool).await?);
        Ok(out)
    }

    async fn load_rows(
        tx: &mut PgConnection,
        incidents: &[Uuid],
        alerts: &[Uuid],
        commits: usize,
    ) -> Result<Rows, AppError> {
        let mut rows = Rows::for_batch(commits);
        if !incidents.is_empty() {
            let found: Vec<Json<IncidentRow>> = sqlx::query_scalar(
                "SELECT to_jsonb(i) FROM incidents i WHERE incident_id = ANY($1)",
            )
            .bind(incidents)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable("load incidents"))?;
            rows.incidents = found
                .into_iter()
                .map(|Json(r)| (r.incident_id, r))
                .collect();
        }
        if !alerts.is_empty() {
            let found: Vec<Json<AlertRow>> =
                sqlx::query_scalar("SELECT to_jsonb(a) FROM alerts a WHERE alert_id = ANY($1)")
                    .bind(alerts)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable("load alerts"))?;
            rows.alerts = found.into_iter().map(|Json(r)| (r.alert_id, r)).collect();
        }
        Ok(rows)
    }

    /// Alerts are the most numerous rows: one `INSERT … SELECT FROM UNNEST` of typed arrays,
    /// cheaper for PostgreSQL than populating records from one JSON document.
    async fn write_alerts<'a>(
        tx: &mut PgConnection,
        alerts: impl ExactSizeIterator<Item = &'a AlertRow>,
    ) -> Result<(), AppError> {
        let n = alerts.len();
        let mut c = AlertColumns::with_capacity(n);
        for a in alerts {
            c.push(a)?;
        }
        let set = ALERT_COLUMNS
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO alerts (alert_id, {}) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], \
             $4::text[], $5::text[], $6::int2[], $7::text[], $8::uuid[], $9::int8[], $10::timestamptz[], \
             $11::timestamptz[], $12::timestamptz[], $13::json[], $14::json[], $15::json[], $16::text[], \
             $17::text[], $18::timestamptz[], $19::int8[], $20::int8[]) ON CONFLICT (alert_id) DO UPDATE SET {set}",
            ALERT_COLUMNS.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c.alert_id)
            .bind(c.source)
            .bind(c.source_ref)
            .bind(c.title)
            .bind(c.description)
            .bind(c.severity)
            .bind(c.status)
            .bind(c.incident_id)
            .bind(c.repeat_count)
            .bind(c.first_seen_at)
            .bind(c.last_seen_at)
            .bind(c.received_at)
            .bind(c.observables)
            .bind(c.labels)
            .bind(c.raw)
            .bind(c.dismissal_rationale)
            .bind(c.source_state)
            .bind(c.source_resolved_at)
            .bind(c.version)
            .bind(c.position)
            .execute(&mut *tx)
            .await
            .map_err(unavailable("write alerts"))?;
        Ok(())
    }

    /// Writes a batch's rows. With `copy_unless`, alert rows whose ids it does not hold
    /// (created by this batch) go in by `COPY`, the rest by an upsert.
    /// New alert rows by `COPY … FROM STDIN (FORMAT binary)`: for PostgreSQL, cheaper than
    /// `INSERT … SELECT FROM UNNEST` (no arrays to read, no plan, no set to materialize).
    /// A row that already exists fails the batch: the read model would then be ahead of its
    /// checkpoint, which the checkpoint's transaction rules out.
    async fn copy_alerts(tx: &mut PgConnection, alerts: &[&AlertRow]) -> Result<(), AppError> {
        let data = copy_data(alerts)?;
        let sql = format!(
            "COPY alerts (alert_id, {}) FROM STDIN (FORMAT binary)",
            ALERT_COLUMNS.join(", ")
        );
        let mut copy = tx
            .copy_in_raw(&sql)
            .await
            .map_err(unavailable("copy alerts"))?;
        copy.send(data).await.map_err(unavailable("copy alerts"))?;
        copy.finish().await.map_err(unavailable("copy alerts"))?;
        Ok(())
    }

    async fn write_rows(
        tx: &mut PgConnection,
        rows: &Rows,
        copy_unless: Option<&HashSet<Uuid>>,
    ) -> Result<(), AppError> {
        if !rows.incidents.is_empty() {
            let values: Vec<&IncidentRow> = rows.incidents.values().collect();
            sqlx::query(sqlx::AssertSqlSafe(upsert_sql(
                "incidents",
                "incident_id",
                INCIDENT_COLUMNS,
            )))
            .bind(Json(values))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("write incidents"))?;
        }
        match copy_unless {
            Some(existing) => {
                let (old, new): (Vec<&AlertRow>, Vec<&AlertRow>) = rows
                    .alerts
                    .values()
                    .partition(|a| existing.contains(&a.alert_id));
                if !new.is_empty() {
                    Self::copy_alerts(tx, &new).await?;
                }
                if !old.is_empty() {
                    Self::write_alerts(tx, old.into_iter()).await?;
                }
            }
            None if !rows.alerts.is_empty() => {
                Self::write_alerts(tx, rows.alerts.values()).await?;
            }
            None => {}
        }
        if !rows.pending.is_empty() {
            sqlx::query(
                "INSERT INTO incident_openings_pending \
                 SELECT * FROM jsonb_populate_recordset(NULL::incident_openings_pending, $1) \
                 ON CONFLICT (incident_id) DO NOTHING",
            )
            .bind(Json(&rows.pending))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("write pending openings"))?;
        }
        if !rows.pending.is_empty() || rows.opened_incidents {
            sqlx::query(
                "DELETE FROM incident_openings_pending p \
                 WHERE EXISTS (SELECT 1 FROM incidents i WHERE i.incident_id = p.incident_id)",
            )
            .execute(&mut *tx)
            .await
            .map_err(unavailable("settle pending openings"))?;
        }
        if !rows.notes.is_empty() {
            sqlx::query(
                "INSERT INTO incident_notes SELECT * FROM jsonb_populate_recordset(NULL::incident_notes, $1) \
                 ON CONFLICT (position, seq) DO NOTHING",
            )
            .bind(Json(&rows.notes))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("write notes"))?;
        }
        Ok(())
    }

    async fn current_checkpoint(&self) -> Result<u64, AppError> {
        let p: i64 =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(&self.name)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("read checkpoint"))?
                .unwrap_or(0);
        Ok(u64::try_from(p).unwrap_or(0))
    }
}

/// The columns of a batch of alert rows, as arrays for `UNNEST`.
#[derive(Default)]
struct AlertColumns<'a> {
    alert_id: Vec<Uuid>,
    source: Vec<&'a str>,
    source_ref: Vec<&'a str>,
    title: Vec<&'a str>,
    description: Vec<&'a str>,
    severity: Vec<i16>,
    status: Vec<&'a str>,
    incident_id: Vec<Option<Uuid>>,
    repeat_count: Vec<i64>,
    first_seen_at: Vec<chrono::DateTime<chrono::Utc>>,
    last_seen_at: Vec<chrono::DateTime<chrono::Utc>>,
    received_at: Vec<chrono::DateTime<chrono::Utc>>,
    /// The three JSON columns (`json`, not `jsonb`: migration 0006) as JSON text.
    observables: Vec<String>,
    labels: Vec<String>,
    raw: Vec<Option<String>>,
    dismissal_rationale: Vec<Option<&'a str>>,
    source_state: Vec<&'a str>,
    source_resolved_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    version: Vec<i64>,
    position: Vec<i64>,
}

impl<'a> AlertColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            alert_id: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            source_ref: Vec::with_capacity(n),
            title: Vec::with_capacity(n),
            description: Vec::with_capacity(n),
            severity: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            incident_id: Vec::with_capacity(n),
            repeat_count: Vec::with_capacity(n),
            first_seen_at: Vec::with_capacity(n),
            last_seen_at: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            observables: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            raw: Vec::with_capacity(n),
            dismissal_rationale: Vec::with_capacity(n),
            source_state: Vec::with_capacity(n),
            source_resolved_at: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            position: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, a: &'a AlertRow) -> Result<(), AppError> {
        self.alert_id.push(a.alert_id);
        self.source.push(&a.source);
        self.source_ref.push(&a.source_ref);
        self.title.push(&a.title);
        self.description.push(&a.description);
        self.severity.push(a.severity);
        self.status.push(&a.status);
        self.incident_id.push(a.incident_id);
        self.repeat_count.push(a.repeat_count);
        self.first_seen_at.push(a.first_seen_at);
        self.last_seen_at.push(a.last_seen_at);
        self.received_at.push(a.received_at);
        self.observables.push(json_text(&a.observables)?);
        self.labels.push(json_text(&a.labels)?);
        // JSON null is stored as SQL NULL, as the JSON path did. A NUL character (refused
        // since, but possibly in commits of earlier versions) is shown as U+FFFD: PostgreSQL
        // cannot read it back out of a `json` column as part of the row.
        self.raw.push(raw_text(a)?);
        self.dismissal_rationale
            .push(a.dismissal_rationale.as_deref());
        self.source_state.push(&a.source_state);
        self.source_resolved_at.push(a.source_resolved_at);
        self.version.push(a.version);
        self.position.push(a.position);
        Ok(())
    }
}

/// The `raw` column: JSON null is stored as SQL NULL, as the JSON path did. A NUL character
/// (refused since, but possibly in commits of earlier versions) is shown as U+FFFD:
/// PostgreSQL cannot read it back out of a `json` column as part of the row.
fn raw_text(a: &AlertRow) -> Result<Option<String>, AppError> {
    if a.raw.is_null() {
        Ok(None)
    } else if sems_domain::alert::contains_nul(&a.raw) {
        let mut raw = a.raw.clone();
        sems_domain::alert::replace_nul(&mut raw);
        json_text(&raw).map(Some)
    } else {
        json_text(&a.raw).map(Some)
    }
}

/// Alert rows in PostgreSQL's binary `COPY` format: a header, then per row the field count
/// and each field as its length (-1 for NULL) and its binary value, in the column order of
/// `copy_alerts`; then -1. `json`'s binary value is its text.
fn copy_data(alerts: &[&AlertRow]) -> Result<Vec<u8>, AppError> {
    let mut out = CopyWriter(Vec::with_capacity(64 + alerts.len() * 1024));
    out.0.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.0.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.0.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for a in alerts {
        out.0.extend_from_slice(&COPY_FIELDS.to_be_bytes());
        out.bytes(a.alert_id.as_bytes())?;
        out.bytes(a.source.as_bytes())?;
        out.bytes(a.source_ref.as_bytes())?;
        out.bytes(a.title.as_bytes())?;
        out.bytes(a.description.as_bytes())?;
        out.bytes(&a.severity.to_be_bytes())?;
        out.bytes(a.status.as_bytes())?;
        out.optional(a.incident_id.as_ref().map(|i| i.as_bytes().as_slice()))?;
        out.bytes(&a.repeat_count.to_be_bytes())?;
        out.timestamp(a.first_seen_at)?;
        out.timestamp(a.last_seen_at)?;
        out.timestamp(a.received_at)?;
        out.bytes(json_text(&a.observables)?.as_bytes())?;
        out.bytes(json_text(&a.labels)?.as_bytes())?;
        out.optional(raw_text(a)?.as_deref().map(str::as_bytes))?;
        out.optional(a.dismissal_rationale.as_deref().map(str::as_bytes))?;
        out.bytes(a.source_state.as_bytes())?;
        match a.source_resolved_at {
            Some(t) => out.timestamp(t)?,
            None => out.optional(None)?,
        }
        out.bytes(&a.version.to_be_bytes())?;
        out.bytes(&a.position.to_be_bytes())?;
    }
    out.0.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out.0)
}

/// Fields per row of `copy_data`: the key and `ALERT_COLUMNS`.
const COPY_FIELDS: i16 = 20;
const _: () = assert!(ALERT_COLUMNS.len() + 1 == COPY_FIELDS as usize);

struct CopyWriter(Vec<u8>);

impl CopyWriter {
    fn bytes(&mut self, value: &[u8]) -> Result<(), AppError> {
        // Every string has a documented limit far below 2 GiB.
        let len = i32::try_from(value.len())
            .map_err(|_| AppError::Internal("an alert row's field is over 2 GiB".into()))?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(value);
        Ok(())
    }

    fn optional(&mut self, value: Option<&[u8]>) -> Result<(), AppError> {
        match value {
            Some(v) => self.bytes(v),
            None => {
                self.0.extend_from_slice(&(-1i32).to_be_bytes());
                Ok(())
            }
        }
    }

    /// `timestamptz`: microseconds since 2000-01-01 00:00 UTC, computed as sqlx encodes a
    /// bound `DateTime<Utc>`, so both paths store the same instant.
    fn timestamp(&mut self, t: chrono::DateTime<chrono::Utc>) -> Result<(), AppError> {
        let epoch = chrono::DateTime::from_timestamp_nanos(946_684_800_000_000_000);
        let micros = (t - epoch)
            .num_microseconds()
            .ok_or_else(|| AppError::Internal(format!("timestamp {t} out of range")))?;
        self.bytes(&micros.to_be_bytes())
    }
}

/// JSON text of a column value.
fn json_text(value: &impl serde::Serialize) -> Result<String, AppError> {
    serde_json::to_string(value)
        .map_err(|e| AppError::Internal(format!("encode an alert's JSON column: {e}")))
}

fn upsert_sql(table: &str, key: &str, columns: &[&str]) -> String {
    let set = columns
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1) \
         ON CONFLICT ({key}) DO UPDATE SET {set}"
    )
}

#[async_trait]
impl ProjectionStore for PgReadModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&self) -> Result<u64, AppError> {
        self.current_checkpoint().await
    }

    async fn apply_batch(&self, commits: &[ProjectedCommit]) -> Result<Applied, AppError> {
        let span =
            info_span!("readmodel.apply_batch", projection = %self.name, commits = commits.len());
        async {
            // The leader writes through the connection that holds the projection's lock: if
            // that connection is lost, so is the lock, and the writes fail with it.
            let mut writer = self.writer.lock().await;
            let copy = writer.as_ref().is_some_and(|w| w.copy);
            // The checkpoint as the leader's writer last committed it, taken out here and put
            // back only after a commit: after any failure it is read again.
            let known = writer.as_mut().and_then(|w| w.checkpoint.take());
            if let Some(checkpoint) = known {
                let (fresh, skipped) = fresh_above(commits, checkpoint)?;
                if fresh.is_empty() {
                    return Ok(remember(&mut writer, skipped, checkpoint));
                }
            }
            let mut tx = match writer.as_mut() {
                Some(w) => w.conn.begin().await.map_err(unavailable("begin"))?,
                None => self.pool.begin().await.map_err(unavailable("begin"))?,
            };
            // Without a known checkpoint, read it and lock its row. With one, save that round
            // trip: the write below moves the checkpoint only from the value known, so
            // anything else that moved it makes this batch fail, not apply twice.
            let checkpoint = match known {
                Some(c) => c,
                None => {
                    let c: i64 = sqlx::query_scalar(
                        "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
                    )
                    .bind(&self.name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable("lock checkpoint"))?;
                    u64::try_from(c).unwrap_or(0)
                }
            };
            let (fresh, skipped) = fresh_above(commits, checkpoint)?;
            let Some(last) = fresh.iter().map(|c| c.position).max() else {
                tx.commit().await.map_err(unavailable("commit"))?;
                return Ok(remember(&mut writer, skipped, checkpoint));
            };
            let (incidents, alerts) = projection::touched(fresh.iter().copied());
            let mut rows = Self::load_rows(&mut tx, &incidents, &alerts, fresh.len()).await?;
            let existing: HashSet<Uuid> = rows.alerts.keys().copied().collect();
            let keys = cmc::touched(fresh.iter().copied());
            let mut cmc_rows = cmc::CmcRows::with(cmc_sql::postgres::load(&mut tx, &keys).await?);
            for c in fresh.iter().copied() {
                projection::apply(&mut rows, c).map_err(|e| AppError::Internal(e.to_string()))?;
                cmc::apply(&mut cmc_rows, c).map_err(|e| AppError::Internal(e.to_string()))?;
            }
            cmc_sql::postgres::write(&mut tx, &cmc_rows).await?;
            Self::write_rows(&mut tx, &rows, copy.then_some(&existing)).await?;
            let moved = sqlx::query(
                "UPDATE projection_checkpoints SET position = $2, updated_at = now() \
                 WHERE name = $1 AND position = $3",
            )
            .bind(&self.name)
            .bind(i64::try_from(last).unwrap_or(i64::MAX))
            .bind(i64::try_from(checkpoint).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("write checkpoint"))?
            .rows_affected();
            if moved != 1 {
                // Dropping the transaction rolls the batch back.
                return Err(AppError::Unavailable(format!(
                    "projection {}: its checkpoint is no longer at {checkpoint}, where this \
                     writer left it; the batch is not applied",
                    self.name
                )));
            }
            tx.commit().await.map_err(unavailable("commit"))?;
            if let Some(w) = writer.as_mut() {
                w.checkpoint = Some(last);
            }
            self.applied.send_replace(last);
            Ok(Applied {
                applied: fresh.len(),
                skipped,
                checkpoint: last,
            })
        }
        .instrument(span)
        .await
    }

    async fn try_lock(&self) -> Result<Option<Box<dyn Send + Sync>>, AppError> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| AppError::Internal(format!("database url: {e}")))?
            // The read model is rebuilt from the stream, and a batch's rows and checkpoint
            // commit together: a crash that loses the last unflushed batches loses their
            // checkpoint with them, and the projector (which recreates its consumer when the
            // consumer's ack floor is past the checkpoint) applies them again. So the leader
            // does not wait for each batch's WAL flush.
            .options([
                ("search_path", self.schema.as_str()),
                ("plan_cache_mode", "force_custom_plan"),
                ("synchronous_commit", "off"),
            ]);
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(unavailable("connect for lock"))?;
        let key = lock_key(&self.name);
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable("advisory lock"))?;
        if !got {
            return Ok(None);
        }
        // The lock lives as long as this connection, which the batches then write through.
        let copy = copy_ready(&options);
        *self.writer.lock().await = Some(Writer {
            conn,
            copy,
            checkpoint: None,
        });
        Ok(Some(Box::new(WriterGuard {
            writer: self.writer.clone(),
        })))
    }
}

/// The connection that holds the projection's lock, which the leader writes through.
/// A batch that applied nothing: the leader's writer knows its checkpoint is still
/// `checkpoint`.
fn remember(writer: &mut Option<Writer>, skipped: usize, checkpoint: u64) -> Applied {
    if let Some(w) = writer.as_mut() {
        w.checkpoint = Some(checkpoint);
    }
    Applied {
        applied: 0,
        skipped,
        checkpoint,
    }
}

struct Writer {
    conn: PgConnection,
    /// New alert rows go in by `COPY` (its socket has `TCP_NODELAY`, or is a Unix socket).
    copy: bool,
    /// The checkpoint as this writer last committed it; `None` until read, and after any
    /// batch that failed.
    checkpoint: Option<u64>,
}

/// Whether a connection just made with `options` may `COPY`: with Nagle's algorithm on, each
/// `COPY` would wait ~40 ms for PostgreSQL's delayed acknowledgement (`nodelay.rs`).
fn copy_ready(options: &PgConnectOptions) -> bool {
    // A Unix socket (given as `socket`, or as a host that is a directory, which is also what
    // sqlx picks when no host is given and a local socket exists) has no Nagle delay.
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        return true;
    }
    match crate::nodelay::set_for_peer_port(options.get_port()) {
        Ok(n) if n > 0 => true,
        Ok(_) => {
            tracing::warn!(
                "found no socket to PostgreSQL to set TCP_NODELAY on; new alert rows are written without COPY"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on the sockets to PostgreSQL; new alert rows are written without COPY");
            false
        }
    }
}

/// Releases the projection's lock (closes its connection) when dropped.
struct WriterGuard {
    writer: Arc<tokio::sync::Mutex<Option<Writer>>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Ok(mut writer) = self.writer.try_lock() {
            writer.take();
        }
    }
}

/// A stable 64-bit advisory-lock key for a projection name (FNV-1a).
fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

#[async_trait]
impl IncidentReadModel for PgReadModel {
    async fn wait_for(&self, position: u64, deadline: std::time::Instant) -> Result<(), AppError> {
        wait_until_applied(&self.applied, position, deadline, || {
            self.current_checkpoint()
        })
        .await
    }

    async fn get_incident(&self, id: Uuid) -> Result<Option<IncidentDetail>, AppError> {
        let row = sqlx::query(
            "SELECT to_jsonb(i) AS row, (SELECT count(*) FROM alerts a WHERE a.incident_id = i.incident_id) AS alert_count \
             FROM incidents i WHERE incident_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable("get incident"))?;
        let Some(row) = row else { return Ok(None) };
        let incident = summary(&row)?;
        let alerts: Vec<Json<AlertRow>> = sqlx::query_scalar(
            "SELECT to_jsonb(a) FROM alerts a WHERE incident_id = $1 ORDER BY received_at DESC, alert_id DESC LIMIT 1000",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("incident alerts"))?;
        let notes: Vec<Json<NoteRow>> = sqlx::query_scalar(
            "SELECT to_jsonb(n) FROM incident_notes n WHERE incident_id = $1 ORDER BY position, seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("incident notes"))?;
        Ok(Some(IncidentDetail {
            incident,
            alerts: alerts.into_iter().map(|Json(a)| a).collect(),
            notes: notes.into_iter().map(|Json(n)| n).collect(),
        }))
    }

    async fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<IncidentSummary>, AppError> {
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT to_jsonb(i) AS row, (SELECT count(*) FROM alerts a WHERE a.incident_id = i.incident_id) AS alert_count \
             FROM incidents i WHERE TRUE",
        );
        if !q.statuses.is_empty() {
            b.push(" AND i.status = ANY(")
                .push_bind(q.statuses.clone())
                .push(")");
        }
        if !q.levels.is_empty() {
            b.push(" AND i.level = ANY(")
                .push_bind(q.levels.clone())
                .push(")");
        }
        if !q.severities.is_empty() {
            b.push(" AND i.severity = ANY(")
                .push_bind(q.severities.clone())
                .push(")");
        }
        if !q.priorities.is_empty() {
            b.push(" AND i.priority = ANY(")
                .push_bind(q.priorities.clone())
                .push(")");
        }
        if let Some(from) = q.opened_from {
            b.push(" AND i.opened_at >= ").push_bind(from);
        }
        if let Some(to) = q.opened_to {
            b.push(" AND i.opened_at < ").push_bind(to);
        }
        // Literal, so that the partial index of pending requests serves `true`.
        match q.escalation_requested {
            Some(true) => b.push(" AND i.crisis_escalation_requested"),
            Some(false) => b.push(" AND NOT i.crisis_escalation_requested"),
            None => &mut b,
        };
        if let Some(before) = q.updated_before {
            b.push(" AND i.updated_at < ").push_bind(before);
        }
        if let Some(risk) = &q.risk_ref {
            b.push(" AND i.risks @> jsonb_build_array(jsonb_build_object('risk_ref', ")
                .push_bind(risk.clone())
                .push("::text))");
        }
        if let Some(pattern) = q.like_pattern() {
            b.push(" AND (i.title ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR i.description ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
        let (keys, op, order) = q.sort.keyset();
        if let Some(c) = q.cursor()? {
            b.push(format!(" AND {keys} {op} ("));
            if q.sort.has_num() {
                b.push_bind(c.num).push(", ");
            }
            b.push_bind(c.at).push(", ").push_bind(c.id).push(")");
        }
        b.push(format!(" ORDER BY {order} LIMIT "))
            .push_bind(i64::from(q.page_size) + 1);
        let rows = b
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("list incidents"))?;
        let items = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, q.page_size, |s| s.cursor(q.sort)))
    }

    async fn incidents_per_risk(&self) -> Result<Vec<RiskIncidents>, AppError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT (r->>'risk_ref') COLLATE \"C\", count(*), \
             count(*) FILTER (WHERE i.status NOT IN ('RESOLVED', 'CLOSED')) \
             FROM incidents i, jsonb_array_elements(COALESCE(i.risks, '[]')) r \
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("incidents per risk"))?;
        Ok(rows.into_iter().map(RiskIncidents::from).collect())
    }

    async fn alerts_awaiting_incident(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<AlertRow>, AppError> {
        let rows: Vec<Json<AlertRow>> = sqlx::query_scalar(AWAITING_INCIDENT)
            .bind(older_than.as_secs_f64())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("alerts awaiting an incident"))?;
        Ok(rows.into_iter().map(|Json(a)| a).collect())
    }

    async fn list_alerts(&self, q: &AlertQuery) -> Result<Page<AlertRow>, AppError> {
        let mut b: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT to_jsonb(a) FROM alerts a WHERE TRUE");
        if let Some(id) = q.incident_id {
            b.push(" AND a.incident_id = ").push_bind(id);
        }
        if let Some(status) = &q.status {
            b.push(" AND a.status = ").push_bind(status.clone());
        }
        if let Some(c) = &q.after {
            b.push(" AND (a.received_at, a.alert_id) < (")
                .push_bind(c.at)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        b.push(" ORDER BY a.received_at DESC, a.alert_id DESC LIMIT ")
            .push_bind(i64::from(q.page_size) + 1);
        let rows: Vec<Json<AlertRow>> = b
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("list alerts"))?;
        let items: Vec<AlertRow> = rows.into_iter().map(|Json(a)| a).collect();
        Ok(Page::from_rows(items, q.page_size, AlertRow::cursor))
    }
}

/// `alerts_awaiting_incident` as SQL.
const AWAITING_INCIDENT: &str = "SELECT to_jsonb(a) FROM incident_openings_pending p \
     JOIN alerts a ON a.alert_id = p.alert_id \
     WHERE p.promoted_at < now() - make_interval(secs => $1) \
     ORDER BY p.promoted_at LIMIT $2";

fn summary(row: &sqlx::postgres::PgRow) -> Result<IncidentSummary, AppError> {
    let Json(incident): Json<IncidentRow> = row
        .try_get("row")
        .map_err(|e| AppError::Internal(format!("decode incident row: {e}")))?;
    let alert_count: i64 = row
        .try_get("alert_count")
        .map_err(|e| AppError::Internal(format!("decode alert count: {e}")))?;
    Ok(IncidentSummary {
        row: incident,
        alert_count,
    })
}

cmc_sql::cmc_read_model!(PgReadModel, postgres);
