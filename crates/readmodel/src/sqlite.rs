//! The embedded (SQLite) store of the incident-tracking read model: the same projection,
//! checkpoint-in-the-same-transaction and queries as the PostgreSQL store, in one file. Each
//! row keeps its whole record as JSON and copies out the columns that queries filter and
//! sort on; key times are integer microseconds, so sorting and paging match PostgreSQL.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{
    Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{Mutex, watch};
use tracing::{Instrument, info_span};
use uuid::Uuid;

use sems_app::{
    AppError,
    chunks::ValuesText,
    keyspace::{PREFIXES, Sweep, prefix_of},
    uuid_text,
};

use crate::{
    AlertQuery, AlertRow, Applied, IncidentDetail, IncidentQuery, IncidentReadModel, IncidentRow,
    IncidentSummary, NoteRow, Page, ProjectedCommit, ProjectionStore, RiskIncidents,
    alertkeys::{KeyMerge, KeyTail},
    cmc, cmc_sql, fresh_above,
    projection::{self, Rows},
    wait_until_applied,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row statement: sqlx hands every SQLite statement to a worker thread, so
/// one statement per row would cost ~60 µs each.
const CHUNK: usize = 500;

/// New alert rows, for each chunk size.
static INSERT_ALERTS: ValuesText = ValuesText::new(
    "INSERT OR FAIL INTO alerts (seq, alert_id, incident_id, status, received_at, doc)",
    6,
    "",
);

/// A sweep of the alert keys, for each chunk size.
static INSERT_ALERT_KEYS: ValuesText =
    ValuesText::new("INSERT OR FAIL INTO alert_keys (alert_id, seq)", 2, "");

/// Where the embedded read model lives.
#[derive(Debug, Clone)]
pub struct SqliteReadModelConfig {
    /// The database file (`<data dir>/readmodel.db`); a rebuild writes a new file.
    pub path: PathBuf,
    /// Connections serving queries.
    pub readers: u32,
    /// Alert rows per sweep of the alert keys (`alertkeys`): the projector holds at most
    /// about this many keys in memory.
    pub key_sweep_rows: u64,
}

/// Commits the projector applies per transaction at most on this store. SQLite's WAL
/// holds whole pages, and every new alert landed on a random page of the `alerts` key
/// index (before the keys went behind the projector, `alertkeys`): a transaction of N
/// alerts wrote nearly N such pages, so larger transactions shared more of them. In
/// alternating benchmark runs, 4,000 instead of 1,000 took 4–11% less `semsd` CPU per
/// streamed alert (docs/BENCHMARKS.md). Batches only reach the bound while the projector
/// catches up; the feed also closes a batch at 64 MiB of envelopes.
pub const PROJECTOR_BATCH: usize = 4_000;

impl SqliteReadModelConfig {
    /// Defaults for a database file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readers: 4,
            key_sweep_rows: 65_536,
        }
    }
}

/// The incident-tracking read model in SQLite.
#[derive(Clone)]
pub struct SqliteReadModel {
    pool: SqlitePool,
    writer: Arc<Mutex<SqliteConnection>>,
    writer_options: SqliteConnectOptions,
    name: String,
    path: PathBuf,
    applied: Arc<watch::Sender<u64>>,
    /// The alert keys not yet in `alert_keys`, and the sweep that moves them there.
    keys: Arc<std::sync::Mutex<Keys>>,
    key_sweep_rows: u64,
}

struct Keys {
    tail: KeyTail,
    sweep: Sweep,
}

/// The alert keys, whatever a panic elsewhere left them in (they are only changed under the
/// lock, without awaiting).
fn lock(keys: &std::sync::Mutex<Keys>) -> std::sync::MutexGuard<'_, Keys> {
    keys.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The alert keys' watermarks and the rows above them, read back from the file.
async fn read_keys(conn: &mut SqliteConnection, per_sweep: u64) -> Result<Keys, AppError> {
    let marks: Vec<(i64, i64)> =
        sqlx::query_as("SELECT prefix, through FROM alert_keys_sweep ORDER BY prefix")
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable("read the alert keys' watermarks"))?;
    if marks.len() != PREFIXES || marks.iter().enumerate().any(|(i, m)| m.0 != i as i64) {
        return Err(AppError::Internal(format!(
            "the read model has {} alert key watermarks, not {PREFIXES}",
            marks.len()
        )));
    }
    let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM alerts")
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable("read the last alert row"))?;
    let mut tail = KeyTail::new(marks.iter().map(|m| m.1).collect(), last);
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, alert_id FROM alerts WHERE seq > ? ORDER BY seq")
            .bind(tail.lowest_merged())
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable("read the alert keys not yet swept"))?;
    for (seq, id) in rows {
        let id = Uuid::parse_str(&id)
            .map_err(|e| AppError::Internal(format!("alert id {id:?} in row {seq}: {e}")))?;
        tail.record(id, seq);
    }
    // The sweep goes on from the range furthest behind.
    let behind = (0..PREFIXES)
        .min_by_key(|&p| tail.merged_at(p))
        .unwrap_or(0);
    Ok(Keys {
        tail,
        sweep: Sweep::new(behind, per_sweep),
    })
}

/// The rows of alerts `ids` that exist, with their row numbers: the keys in `alert_keys` up
/// to their range's watermark (as this statement's snapshot holds it), the rows the tail
/// names above it, and the rows after the tail's last one. The tail lets keys go only once
/// the sweep that moved them is committed, and the snapshot begins after the look at the
/// tail, so no row falls between (and the projector's own lookups, inside its batch's
/// transaction, run while no sweep can: the projector is the one that sweeps).
async fn load_alerts(
    conn: &mut SqliteConnection,
    ids: &[Uuid],
    keys: &std::sync::Mutex<Keys>,
) -> Result<Vec<(i64, AlertRow)>, AppError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in sems_app::chunks::cached(ids, CHUNK) {
        let (seqs, last): (Vec<Option<i64>>, i64) = {
            let keys = lock(keys);
            (
                chunk.iter().map(|id| keys.tail.get(*id)).collect(),
                keys.tail.last(),
            )
        };
        // `CROSS JOIN` keeps SQLite's join order: the few ids outside, each row found by
        // its key or its number.
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("WITH ids(alert_id, prefix, tail_seq) AS (");
        q.push_values(chunk.iter().zip(&seqs), |mut row, (id, seq)| {
            row.push_bind(id.to_string())
                .push_bind(prefix_of(*id) as i64)
                .push_bind(*seq);
        });
        q.push(
            ") SELECT a.seq, a.doc FROM ids CROSS JOIN alert_keys_sweep w \
             CROSS JOIN alert_keys k CROSS JOIN alerts a \
             WHERE w.prefix = ids.prefix AND k.alert_id = ids.alert_id \
             AND k.seq <= w.through AND a.seq = k.seq \
             UNION ALL SELECT a.seq, a.doc FROM ids CROSS JOIN alert_keys_sweep w \
             CROSS JOIN alerts a WHERE w.prefix = ids.prefix AND a.seq = ids.tail_seq \
             AND a.seq > w.through AND a.alert_id = ids.alert_id \
             UNION ALL SELECT a.seq, a.doc FROM ids CROSS JOIN alert_keys_sweep w \
             CROSS JOIN alerts a WHERE w.prefix = ids.prefix \
             AND a.seq > MAX(",
        );
        q.push_bind(last)
            .push(", w.through) AND a.alert_id = ids.alert_id");
        let rows: Vec<(i64, String)> = q
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable("load alert rows"))?;
        for (seq, doc) in rows {
            out.push((seq, from_doc(&doc)?));
        }
    }
    Ok(out)
}

fn unavailable(context: &str) -> impl FnOnce(sqlx::Error) -> AppError + '_ {
    move |e| match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            AppError::Unavailable(format!("{context}: {e}"))
        }
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN.
        sqlx::Error::Database(db)
            if db.code().is_some_and(|c| {
                matches!(c.parse::<i32>().unwrap_or(0) & 0xff, 5 | 6 | 10 | 13 | 14)
            }) =>
        {
            AppError::Unavailable(format!("{context}: {e}"))
        }
        _ => AppError::Internal(format!("{context}: {e}")),
    }
}

/// Raises the watermarks of the ranges a sweep of the alert keys moved: `through`, then the
/// two half-open ranges of `keyspace::two_spans`.
const MOVE_KEY_WATERMARKS: &str = "UPDATE alert_keys_sweep SET through = MAX(through, ?) \
     WHERE (prefix >= ? AND prefix < ?) OR (prefix >= ? AND prefix < ?)";

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn to_doc(value: &impl Serialize) -> Result<String, AppError> {
    // Into a buffer sized for a typical alert row: `to_string` starts at 128 bytes and
    // grows (and copies) three times for one.
    let mut doc = Vec::with_capacity(1024);
    serde_json::to_writer(&mut doc, value)
        .map_err(|e| AppError::Internal(format!("encode row: {e}")))?;
    String::from_utf8(doc).map_err(|e| AppError::Internal(format!("encode row: {e}")))
}

fn from_doc<T: DeserializeOwned>(doc: &str) -> Result<T, AppError> {
    serde_json::from_str(doc).map_err(|e| AppError::Internal(format!("decode row: {e}")))
}

impl SqliteReadModel {
    /// Opens (creating when missing) the read model at `config.path` and migrates it.
    pub async fn connect(config: &SqliteReadModelConfig) -> Result<Self, AppError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                AppError::Unavailable(format!("create data directory {}: {e}", dir.display()))
            })?;
        }
        // Rows and checkpoint commit together and the log is the source of truth, so a
        // power loss that drops the last transactions only makes the projector apply them
        // again: the read model does not fsync every batch (WAL, synchronous = NORMAL).
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        // Migrations run through the pool: `Migrator::run` on a `&mut SqliteConnection`
        // makes the caller's future not `Send`.
        let pool = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .connect_with(options.clone())
            .await
            .map_err(unavailable("open the read model"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| AppError::Internal(format!("migrate the read model: {e}")))?;
        let name = "incident_tracking".to_owned();
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES (?, 0, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&name)
        .bind(Utc::now().to_rfc3339())
        .execute(&pool)
        .await
        .map_err(unavailable("create checkpoint"))?;
        let writer_options = options
            .clone()
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "memory");
        let mut writer = SqliteConnection::connect_with(&writer_options)
            .await
            .map_err(unavailable("open the read-model writer"))?;
        let keys = read_keys(&mut writer, config.key_sweep_rows).await?;
        let model = Self {
            pool,
            writer: Arc::new(Mutex::new(writer)),
            writer_options,
            name,
            path: config.path.clone(),
            applied: Arc::new(watch::channel(0).0),
            keys: Arc::new(std::sync::Mutex::new(keys)),
            key_sweep_rows: config.key_sweep_rows,
        };
        model
            .applied
            .send_replace(model.current_checkpoint().await?);
        Ok(model)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every row of every table, as JSON text in key order, for comparing two generations.
    pub async fn dump(&self) -> Result<Vec<String>, AppError> {
        let mut out = Vec::new();
        for (table, select) in [
            (
                "incidents",
                "SELECT doc FROM incidents ORDER BY incident_id",
            ),
            ("alerts", "SELECT doc FROM alerts ORDER BY alert_id"),
            (
                "incident_notes",
                "SELECT doc FROM incident_notes ORDER BY position, seq",
            ),
            (
                "incident_openings_pending",
                "SELECT json_array(incident_id, alert_id, promoted_at) FROM incident_openings_pending \
                 ORDER BY incident_id",
            ),
        ] {
            let rows: Vec<String> = sqlx::query_scalar(select)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable("dump"))?;
            out.extend(rows.into_iter().map(|r| format!("{table} {r}")));
        }
        out.extend(cmc_sql::sqlite::dump(&self.pool).await?);
        Ok(out)
    }

    async fn current_checkpoint(&self) -> Result<u64, AppError> {
        let p: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = ?")
                .bind(&self.name)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("read checkpoint"))?;
        Ok(u64::try_from(p.unwrap_or(0)).unwrap_or(0))
    }

    async fn load_docs<T: DeserializeOwned>(
        conn: &mut SqliteConnection,
        table: &str,
        key: &str,
        ids: &[Uuid],
    ) -> Result<Vec<T>, AppError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("SELECT doc FROM {table} WHERE {key} IN ("));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            q.push(")");
            let docs: Vec<String> = q
                .build_query_scalar()
                .fetch_all(&mut *conn)
                .await
                .map_err(unavailable("load rows"))?;
            for doc in docs {
                out.push(from_doc(&doc)?);
            }
        }
        Ok(out)
    }

    /// One batch in one transaction on the writer connection.
    async fn apply_locked(
        &self,
        writer: &mut SqliteConnection,
        commits: &[ProjectedCommit],
    ) -> Result<Applied, AppError> {
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable("begin"))?;
        // With the checkpoint, the last alert row: when it is not the one the key tail
        // knows, the file moved on without this writer (another instance led, or a commit
        // reported failed had committed), and the tail is read again from the file.
        let (checkpoint, last_seq): (i64, i64) = sqlx::query_as(
            "SELECT position, (SELECT COALESCE(MAX(seq), 0) FROM alerts) \
             FROM projection_checkpoints WHERE name = ?",
        )
        .bind(&self.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable("read checkpoint"))?;
        if last_seq != lock(&self.keys).tail.last() {
            let keys = read_keys(&mut tx, self.key_sweep_rows).await?;
            *lock(&self.keys) = keys;
        }
        let checkpoint = u64::try_from(checkpoint).unwrap_or(0);
        let (fresh, skipped) = fresh_above(commits, checkpoint)?;
        let Some(last) = fresh.iter().map(|c| c.position).max() else {
            tx.rollback().await.map_err(unavailable("rollback"))?;
            return Ok(Applied {
                applied: 0,
                skipped,
                checkpoint,
            });
        };
        let (incidents, alerts) = projection::touched(fresh.iter().copied());
        let mut rows = Rows::for_batch(fresh.len());
        for r in
            Self::load_docs::<IncidentRow>(&mut tx, "incidents", "incident_id", &incidents).await?
        {
            rows.incidents.insert(r.incident_id, r);
        }
        let mut alert_seqs = HashMap::new();
        for (seq, r) in load_alerts(&mut tx, &alerts, &self.keys).await? {
            alert_seqs.insert(r.alert_id, seq);
            rows.alerts.insert(r.alert_id, r);
        }
        let existing: HashSet<Uuid> = rows
            .incidents
            .keys()
            .chain(rows.alerts.keys())
            .copied()
            .collect();
        let keys = cmc::touched(fresh.iter().copied());
        let mut cmc_rows = cmc::CmcRows::with(cmc_sql::sqlite::load(&mut tx, &keys).await?);
        for c in fresh.iter().copied() {
            projection::apply(&mut rows, c).map_err(|e| AppError::Internal(e.to_string()))?;
            cmc::apply(&mut cmc_rows, c).map_err(|e| AppError::Internal(e.to_string()))?;
        }
        cmc_sql::sqlite::write(&mut tx, &cmc_rows).await?;
        let last_seq = lock(&self.keys).tail.last();
        let created = Self::write_rows(&mut tx, &rows, &existing, &alert_seqs, last_seq).await?;
        let merge = self.sweep_keys(&mut tx, &created).await?;
        sqlx::query(
            "UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ?",
        )
        .bind(i64::try_from(last).unwrap_or(i64::MAX))
        .bind(Utc::now().to_rfc3339())
        .bind(&self.name)
        .execute(&mut *tx)
        .await
        .map_err(unavailable("write checkpoint"))?;
        tx.commit().await.map_err(unavailable("commit"))?;
        {
            let mut keys = lock(&self.keys);
            if let Some(merge) = &merge {
                keys.tail.merged(merge);
                keys.sweep.advance(merge.count);
            }
            for (id, seq) in created {
                keys.tail.record(id, seq);
            }
        }
        self.applied.send_replace(last);
        Ok(Applied {
            applied: fresh.len(),
            skipped,
            checkpoint: last,
        })
    }

    /// Writes the batch's rows: rows it created with plain inserts, rows it loaded (`existing`)
    /// with upserts. The inserts are `INSERT OR FAIL`: with the default `ABORT` SQLite keeps a
    /// statement journal (a copy of each page a multi-row statement touches) to undo that one
    /// statement, while any failure here fails the batch, rolled back as a whole. An upsert's
    /// `DO UPDATE` keeps its journal whatever the `OR` says.
    /// Alert rows the batch creates are numbered after `last_seq`, in order; the rows it
    /// loaded are updated by their numbers (`alert_seqs`). Returns the created alerts' rows.
    async fn write_rows(
        conn: &mut SqliteConnection,
        rows: &Rows,
        existing: &HashSet<Uuid>,
        alert_seqs: &HashMap<Uuid, i64>,
        last_seq: i64,
    ) -> Result<Vec<(Uuid, i64)>, AppError> {
        let (updated, created): (Vec<&IncidentRow>, Vec<&IncidentRow>) = rows
            .incidents
            .values()
            .partition(|i| existing.contains(&i.incident_id));
        for (chunk, upsert) in created
            .chunks(CHUNK)
            .map(|c| (c, false))
            .chain(updated.chunks(CHUNK).map(|c| (c, true)))
        {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR FAIL INTO incidents (incident_id, status, level, severity, priority, opened_at, \
                 updated_at, title, description, doc) ",
            );
            let docs = chunk.iter().map(to_doc).collect::<Result<Vec<_>, _>>()?;
            q.push_values(chunk.iter().zip(docs), |mut row, (i, doc)| {
                row.push_bind(i.incident_id.to_string())
                    .push_bind(i.status.as_str())
                    .push_bind(i.level.as_str())
                    .push_bind(i.severity)
                    .push_bind(i.priority)
                    .push_bind(micros(i.opened_at))
                    .push_bind(micros(i.updated_at))
                    .push_bind(i.title.as_str())
                    .push_bind(i.description.as_str())
                    .push_bind(doc);
            });
            if upsert {
                q.push(
                    " ON CONFLICT (incident_id) DO UPDATE SET status = excluded.status, \
                     level = excluded.level, severity = excluded.severity, \
                     priority = excluded.priority, opened_at = excluded.opened_at, \
                     updated_at = excluded.updated_at, title = excluded.title, \
                     description = excluded.description, doc = excluded.doc",
                );
            }
            q.build()
                .execute(&mut *conn)
                .await
                .map_err(unavailable("write incidents"))?;
        }
        let (updated, created): (Vec<&AlertRow>, Vec<&AlertRow>) = rows
            .alerts
            .values()
            .partition(|a| existing.contains(&a.alert_id));
        let created: Vec<(i64, &AlertRow)> = (last_seq + 1..).zip(created).collect();
        for chunk in sems_app::chunks::cached(&created, CHUNK) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(INSERT_ALERTS.get(chunk.len())));
            for (seq, a) in chunk {
                q = q
                    .bind(*seq)
                    .bind(uuid_text(a.alert_id))
                    .bind(a.incident_id.map(uuid_text))
                    .bind(a.status.as_str())
                    .bind(micros(a.received_at))
                    .bind(to_doc(a)?);
            }
            q.execute(&mut *conn)
                .await
                .map_err(unavailable("write alerts"))?;
        }
        for chunk in sems_app::chunks::cached(&updated, CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE OR FAIL alerts SET incident_id = v.column2, status = v.column3, \
                 received_at = v.column4, doc = v.column5 FROM (",
            );
            let docs = chunk.iter().map(to_doc).collect::<Result<Vec<_>, _>>()?;
            let mut values = Vec::with_capacity(chunk.len());
            for (a, doc) in chunk.iter().zip(docs) {
                let seq = alert_seqs.get(&a.alert_id).copied().ok_or_else(|| {
                    AppError::Internal(format!("alert {} was loaded without its row", a.alert_id))
                })?;
                values.push((seq, a, doc));
            }
            q.push_values(values, |mut row, (seq, a, doc)| {
                row.push_bind(seq)
                    .push_bind(a.incident_id.map(uuid_text))
                    .push_bind(a.status.as_str())
                    .push_bind(micros(a.received_at))
                    .push_bind(doc);
            });
            q.push(") AS v WHERE alerts.seq = v.column1");
            q.build()
                .execute(&mut *conn)
                .await
                .map_err(unavailable("write alerts"))?;
        }
        let created = created.iter().map(|(seq, a)| (a.alert_id, *seq)).collect();
        for chunk in rows.pending.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR FAIL INTO incident_openings_pending (incident_id, alert_id, promoted_at) ",
            );
            q.push_values(chunk, |mut row, p| {
                row.push_bind(p.incident_id.to_string())
                    .push_bind(p.alert_id.to_string())
                    .push_bind(micros(p.promoted_at));
            });
            q.push(" ON CONFLICT (incident_id) DO NOTHING");
            q.build()
                .execute(&mut *conn)
                .await
                .map_err(unavailable("write pending openings"))?;
        }
        if !rows.pending.is_empty() || rows.opened_incidents {
            sqlx::query(
                "DELETE FROM incident_openings_pending \
                 WHERE incident_id IN (SELECT incident_id FROM incidents)",
            )
            .execute(&mut *conn)
            .await
            .map_err(unavailable("settle pending openings"))?;
        }
        for chunk in rows.notes.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR FAIL INTO incident_notes (position, seq, incident_id, doc) ",
            );
            let docs = chunk.iter().map(to_doc).collect::<Result<Vec<_>, _>>()?;
            q.push_values(chunk.iter().zip(docs), |mut row, (n, doc)| {
                row.push_bind(n.position)
                    .push_bind(n.seq)
                    .push_bind(n.incident_id.to_string())
                    .push_bind(doc);
            });
            q.push(" ON CONFLICT (position, seq) DO NOTHING");
            q.build()
                .execute(&mut *conn)
                .await
                .map_err(unavailable("write notes"))?;
        }
        Ok(created)
    }

    /// Moves the keys of the next ranges into `alert_keys` (the tail's, and those of the
    /// rows the batch `created`), in the batch's transaction, as many ranges as the created
    /// rows earn (`alertkeys`).
    async fn sweep_keys(
        &self,
        conn: &mut SqliteConnection,
        created: &[(Uuid, i64)],
    ) -> Result<Option<KeyMerge>, AppError> {
        let merge = {
            let mut keys = lock(&self.keys);
            let ranges = keys.sweep.ranges_for(created.len());
            if ranges == 0 {
                return Ok(None);
            }
            keys.tail.merge(keys.sweep.cursor, ranges, created)
        };
        for chunk in sems_app::chunks::cached(&merge.keys, CHUNK) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(INSERT_ALERT_KEYS.get(chunk.len())));
            for (id, seq) in chunk {
                q = q.bind(uuid_text(*id)).bind(*seq);
            }
            q.execute(&mut *conn)
                .await
                .map_err(unavailable("sweep the alert keys"))?;
        }
        // Two rowid ranges, as the event log's aggregate index sweep (`two_spans`).
        let [(a, b), (c, d)] = sems_app::keyspace::two_spans(merge.first, merge.count);
        sqlx::query(MOVE_KEY_WATERMARKS)
            .bind(merge.through)
            .bind(a as i64)
            .bind(b as i64)
            .bind(c as i64)
            .bind(d as i64)
            .execute(&mut *conn)
            .await
            .map_err(unavailable("move the alert keys' watermarks"))?;
        Ok(Some(merge))
    }

    /// Alert rows the projector holds the keys of in memory, above their range's watermark
    /// (`SqliteReadModelConfig::key_sweep_rows`).
    pub fn alert_keys_in_memory(&self) -> usize {
        lock(&self.keys).tail.len()
    }

    async fn summaries(
        &self,
        mut q: QueryBuilder<Sqlite>,
    ) -> Result<Vec<IncidentSummary>, AppError> {
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("read incidents"))?;
        rows.iter()
            .map(|r| {
                let doc: String = r
                    .try_get(0)
                    .map_err(|e| AppError::Internal(format!("decode incident row: {e}")))?;
                let alert_count: i64 = r
                    .try_get(1)
                    .map_err(|e| AppError::Internal(format!("decode alert count: {e}")))?;
                Ok(IncidentSummary {
                    row: from_doc(&doc)?,
                    alert_count,
                })
            })
            .collect()
    }

    async fn docs<T: DeserializeOwned>(
        &self,
        mut q: QueryBuilder<Sqlite>,
        context: &str,
    ) -> Result<Vec<T>, AppError> {
        let docs: Vec<String> = q
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable(context))?;
        docs.iter().map(|d| from_doc(d)).collect()
    }
}

#[async_trait]
impl ProjectionStore for SqliteReadModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&self) -> Result<u64, AppError> {
        self.current_checkpoint().await
    }

    async fn apply_batch(&self, commits: &[ProjectedCommit]) -> Result<Applied, AppError> {
        let span = info_span!("readmodel.apply_batch", projection = %self.name, store = "sqlite", commits = commits.len());
        async {
            let mut writer = self.writer.lock().await;
            let applied = self.apply_locked(&mut writer, commits).await;
            if applied.is_err() {
                // Some failures (disk full, I/O errors) make SQLite roll the transaction back
                // itself; sqlx then still counts it open and refuses every later `BEGIN`. A
                // fresh connection is in a known state.
                match SqliteConnection::connect_with(&self.writer_options).await {
                    Ok(fresh) => {
                        let _ = std::mem::replace(&mut *writer, fresh).close().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not reopen the read-model writer; keeping the old connection");
                    }
                }
            }
            applied
        }
        .instrument(span)
        .await
    }

    async fn try_lock(&self) -> Result<Option<Box<dyn Send + Sync>>, AppError> {
        // One active projector per read-model file, across processes: an exclusive lock on
        // a file beside it, released when the guard (the open file) is dropped or the
        // process dies.
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| AppError::Unavailable(format!("open projector lock: {e}")))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(AppError::Unavailable(format!("projector lock: {e}")))
            }
        }
    }
}

#[async_trait]
impl IncidentReadModel for SqliteReadModel {
    async fn wait_for(&self, position: u64, deadline: std::time::Instant) -> Result<(), AppError> {
        wait_until_applied(&self.applied, position, deadline, || {
            self.current_checkpoint()
        })
        .await
    }

    async fn get_incident(&self, id: Uuid) -> Result<Option<IncidentDetail>, AppError> {
        let mut q = QueryBuilder::new(
            "SELECT doc, (SELECT count(*) FROM alerts a WHERE a.incident_id = i.incident_id) \
             FROM incidents i WHERE incident_id = ",
        );
        q.push_bind(id.to_string());
        let Some(incident) = self.summaries(q).await?.pop() else {
            return Ok(None);
        };
        let mut q = QueryBuilder::new("SELECT doc FROM alerts WHERE incident_id = ");
        q.push_bind(id.to_string())
            .push(" ORDER BY received_at DESC, alert_id DESC LIMIT 1000");
        let alerts = self.docs(q, "incident alerts").await?;
        let mut q = QueryBuilder::new("SELECT doc FROM incident_notes WHERE incident_id = ");
        q.push_bind(id.to_string()).push(" ORDER BY position, seq");
        let notes: Vec<NoteRow> = self.docs(q, "incident notes").await?;
        Ok(Some(IncidentDetail {
            incident,
            alerts,
            notes,
        }))
    }

    async fn list_incidents(&self, q: &IncidentQuery) -> Result<Page<IncidentSummary>, AppError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT i.doc, (SELECT count(*) FROM alerts a WHERE a.incident_id = i.incident_id) \
             FROM incidents i WHERE 1",
        );
        fn any_of<T>(b: &mut QueryBuilder<Sqlite>, column: &str, values: &[T])
        where
            for<'t> &'t T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>,
        {
            if values.is_empty() {
                return;
            }
            b.push(format!(" AND {column} IN ("));
            let mut list = b.separated(", ");
            for v in values {
                list.push_bind(v);
            }
            b.push(")");
        }
        any_of(&mut b, "i.status", &q.statuses);
        any_of(&mut b, "i.level", &q.levels);
        any_of(&mut b, "i.severity", &q.severities);
        any_of(&mut b, "i.priority", &q.priorities);
        if let Some(from) = q.opened_from {
            b.push(" AND i.opened_at >= ").push_bind(micros(from));
        }
        if let Some(to) = q.opened_to {
            b.push(" AND i.opened_at < ").push_bind(micros(to));
        }
        // Literal, and the very term of the partial index of pending requests, which then
        // serves `true` (the flag lives in the row's document, not a column of its own).
        match q.escalation_requested {
            Some(true) => b.push(" AND json_extract(i.doc, '$.crisis_escalation_requested') = 1"),
            Some(false) => b.push(" AND json_extract(i.doc, '$.crisis_escalation_requested') = 0"),
            None => &mut b,
        };
        if let Some(before) = q.updated_before {
            b.push(" AND i.updated_at < ").push_bind(micros(before));
        }
        if let Some(risk) = &q.risk_ref {
            b.push(
                " AND EXISTS (SELECT 1 FROM json_each(i.doc, '$.risks') r \
                 WHERE json_extract(r.value, '$.risk_ref') = ",
            )
            .push_bind(risk.clone())
            .push(")");
        }
        if let Some(pattern) = q.like_pattern() {
            // LIKE is case-insensitive for ASCII letters in SQLite (docs/DECISIONS.md).
            b.push(" AND (i.title LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR i.description LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\')");
        }
        let (keys, op, order) = q.sort.keyset();
        if let Some(c) = q.cursor()? {
            b.push(format!(" AND {keys} {op} ("));
            if q.sort.has_num() {
                b.push_bind(c.num).push(", ");
            }
            b.push_bind(micros(c.at))
                .push(", ")
                .push_bind(c.id.to_string())
                .push(")");
        }
        b.push(format!(" ORDER BY {order} LIMIT "))
            .push_bind(i64::from(q.page_size) + 1);
        let items = self.summaries(b).await?;
        Ok(Page::from_rows(items, q.page_size, |s| s.cursor(q.sort)))
    }

    async fn incidents_per_risk(&self) -> Result<Vec<RiskIncidents>, AppError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT json_extract(r.value, '$.risk_ref'), count(*), \
             count(*) FILTER (WHERE i.status NOT IN ('RESOLVED', 'CLOSED')) \
             FROM incidents i, json_each(i.doc, '$.risks') r \
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("incidents per risk"))?;
        Ok(rows.into_iter().map(RiskIncidents::from).collect())
    }

    async fn list_alerts(&self, q: &AlertQuery) -> Result<Page<AlertRow>, AppError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT doc FROM alerts a WHERE 1");
        if let Some(id) = q.incident_id {
            b.push(" AND a.incident_id = ").push_bind(id.to_string());
        }
        if let Some(status) = &q.status {
            b.push(" AND a.status = ").push_bind(status.clone());
        }
        if let Some(c) = &q.after {
            b.push(" AND (a.received_at, a.alert_id) < (")
                .push_bind(micros(c.at))
                .push(", ")
                .push_bind(c.id.to_string())
                .push(")");
        }
        b.push(" ORDER BY a.received_at DESC, a.alert_id DESC LIMIT ")
            .push_bind(i64::from(q.page_size) + 1);
        let items: Vec<AlertRow> = self.docs(b, "list alerts").await?;
        Ok(Page::from_rows(items, q.page_size, AlertRow::cursor))
    }

    async fn alerts_awaiting_incident(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<AlertRow>, AppError> {
        let cutoff = micros(Utc::now())
            .saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX));
        // The alerts are looked up by their keys (`load_alerts`), each lookup its own
        // snapshot taken after its look at the key tail (rows never go away, so the pending
        // openings need not share it).
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(unavailable("alerts awaiting an incident"))?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT alert_id FROM incident_openings_pending WHERE promoted_at < ? \
             ORDER BY promoted_at LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable("alerts awaiting an incident"))?;
        let ids: Vec<Uuid> = ids
            .iter()
            .map(|id| {
                Uuid::parse_str(id).map_err(|e| {
                    AppError::Internal(format!("pending opening's alert id {id:?}: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut rows: HashMap<Uuid, AlertRow> = load_alerts(&mut conn, &ids, &self.keys)
            .await?
            .into_iter()
            .map(|(_, a)| (a.alert_id, a))
            .collect();
        Ok(ids.iter().filter_map(|id| rows.remove(id)).collect())
    }
}

cmc_sql::cmc_read_model!(SqliteReadModel, sqlite);

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::{MIGRATOR, MOVE_KEY_WATERMARKS};

    /// An alert row's document leaves out what the alert does not have, and documents
    /// written before, with those fields as `null`, read back the same.
    #[test]
    fn alert_documents_leave_out_absent_fields_and_read_old_ones() {
        use crate::AlertRow;
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-29T17:10:00.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let row = AlertRow {
            alert_id: uuid::Uuid::from_u128(7),
            source: "suricata".into(),
            source_ref: "42".into(),
            title: "t".into(),
            description: String::new(),
            severity: 1,
            status: "received".into(),
            incident_id: None,
            repeat_count: 0,
            first_seen_at: at,
            last_seen_at: at,
            received_at: at,
            observables: Vec::new(),
            labels: Default::default(),
            raw: serde_json::Value::Null,
            dismissal_rationale: None,
            source_state: "firing".into(),
            source_resolved_at: None,
            version: 1,
            position: 1,
        };
        let doc = super::to_doc(&row).unwrap();
        for absent in [
            "incident_id",
            "raw",
            "dismissal_rationale",
            "source_resolved_at",
        ] {
            assert!(!doc.contains(absent), "{absent} in {doc}");
        }
        assert_eq!(super::from_doc::<AlertRow>(&doc).unwrap(), row);
        let mut old: serde_json::Value = serde_json::from_str(&doc).unwrap();
        for absent in [
            "incident_id",
            "raw",
            "dismissal_rationale",
            "source_resolved_at",
        ] {
            old[absent] = serde_json::Value::Null;
        }
        assert_eq!(
            super::from_doc::<AlertRow>(&old.to_string()).unwrap(),
            row,
            "a document with explicit nulls"
        );
        let linked = AlertRow {
            incident_id: Some(uuid::Uuid::from_u128(9)),
            raw: serde_json::json!({"k": 1}),
            dismissal_rationale: Some("dup".into()),
            source_resolved_at: Some(at),
            ..row
        };
        let doc = super::to_doc(&linked).unwrap();
        assert_eq!(super::from_doc::<AlertRow>(&doc).unwrap(), linked);
    }

    /// The alert keys' watermark update seeks the ranges it names, as the event log's does.
    #[tokio::test]
    async fn moving_key_watermarks_seeks_the_swept_ranges() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        MIGRATOR.run(&mut conn).await.unwrap();
        sems_testkit::assert_watermarks_move_by_seeks(
            &mut conn,
            MOVE_KEY_WATERMARKS,
            "alert_keys_sweep",
        )
        .await;
    }
}
