//! The CMC read models' statements. Both stores keep the CMC tables in one layout (ids as
//! text, times as microseconds, documents as JSON text; `migrations/*/…cmc.sql`), so one set
//! of statements, expanded for each database by [`cmc_statements!`], serves both.

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use sems_app::AppError;

use crate::cmc::{ActionRow, CommunicationRow, CrisisRow, DecisionRow, HandoverRow, Record};

/// Rows per multi-row statement (7 binds each: well under both databases' bind limits).
pub(crate) const CHUNK: usize = 500;

/// A page of a crisis's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineQuery {
    /// The crisis.
    pub crisis_id: Uuid,
    /// Only these kinds (all when empty).
    pub kinds: Vec<String>,
    /// Only these levels (all when empty).
    pub levels: Vec<String>,
    /// Only entries that occurred at or after this time.
    pub occurred_from: Option<DateTime<Utc>>,
    /// Only entries that occurred before this time.
    pub occurred_to: Option<DateTime<Utc>>,
    /// Entries after this (position, seq), in log order.
    pub after: Option<(i64, i32)>,
    /// At most this many.
    pub limit: u32,
}

/// A crisis with its actions and communications.
#[derive(Debug, Clone, PartialEq)]
pub struct CrisisDetail {
    /// The crisis.
    pub crisis: CrisisRow,
    /// Its actions, in the order assigned.
    pub actions: Vec<ActionRow>,
    /// Its communications, in the order drafted.
    pub communications: Vec<CommunicationRow>,
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String, AppError> {
    serde_json::to_string(value).map_err(|e| AppError::Internal(format!("encode record: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(doc: &str) -> Result<T, AppError> {
    serde_json::from_str(doc).map_err(|e| AppError::Internal(format!("decode record: {e}")))
}

pub(crate) fn unavailable(what: &'static str) -> impl Fn(sqlx::Error) -> AppError {
    move |e| AppError::Unavailable(format!("read model: {what}: {e}"))
}

pub(crate) fn handovers(records: Vec<Record>) -> Vec<HandoverRow> {
    records
        .into_iter()
        .filter_map(|r| match r {
            Record::Handover(h) => Some(*h),
            _ => None,
        })
        .collect()
}

pub(crate) fn decisions(records: Vec<Record>) -> Vec<DecisionRow> {
    records
        .into_iter()
        .filter_map(|r| match r {
            Record::Decision(d) | Record::IncidentDecision(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// Expands the CMC statements for one database: `load`, `write` (inside the projector's
/// transaction) and the queries (on the pool).
macro_rules! cmc_statements {
    ($db:ty) => {
        use sqlx::{Pool, QueryBuilder};
        use uuid::Uuid;

        use sems_app::{AppError, crisis_id_for};

        use crate::{
            cmc::{CmcRows, Record, RecordKey, TimelineEntry},
            cmc_sql::{
                CHUNK, CrisisDetail, TimelineQuery, decisions, from_json, handovers, micros,
                to_json, unavailable,
            },
        };

        type Conn = <$db as sqlx::Database>::Connection;

        /// Loads the records a batch changes.
        pub(crate) async fn load(
            conn: &mut Conn,
            keys: &[RecordKey],
        ) -> Result<Vec<Record>, AppError> {
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(CHUNK) {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT doc FROM cmc_records WHERE (kind, crisis_id, id) IN (",
                );
                q.push_values(chunk, |mut row, k| {
                    row.push_bind(k.kind)
                        .push_bind(k.crisis_id.to_string())
                        .push_bind(k.id.to_string());
                });
                q.push(")");
                let docs: Vec<String> = q
                    .build_query_scalar()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(unavailable("load CMC records"))?;
                for doc in docs {
                    out.push(from_json(&doc)?);
                }
            }
            Ok(out)
        }

        /// Writes the records a batch changed and the timeline entries it added.
        pub(crate) async fn write(conn: &mut Conn, rows: &CmcRows) -> Result<(), AppError> {
            let records: Vec<&Record> = rows.changed_records().collect();
            for chunk in records.chunks(CHUNK) {
                let docs = chunk.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
                let mut q: QueryBuilder<$db> = QueryBuilder::new(
                    "INSERT INTO cmc_records (kind, crisis_id, id, status, at, position, doc) ",
                );
                q.push_values(chunk.iter().zip(docs), |mut row, (r, doc)| {
                    let k = r.key();
                    row.push_bind(k.kind)
                        .push_bind(k.crisis_id.to_string())
                        .push_bind(k.id.to_string())
                        .push_bind(r.status().to_owned())
                        .push_bind(r.at().map(micros))
                        .push_bind(r.position())
                        .push_bind(doc);
                });
                q.push(
                    " ON CONFLICT (kind, crisis_id, id) DO UPDATE SET status = excluded.status, \
                     at = excluded.at, position = excluded.position, doc = excluded.doc",
                );
                q.build()
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable("write CMC records"))?;
            }
            for chunk in rows.timeline.chunks(CHUNK) {
                let docs = chunk.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
                let mut q: QueryBuilder<$db> = QueryBuilder::new(
                    "INSERT INTO timeline_entries \
                     (crisis_id, position, seq, kind, level, occurred_at, doc) ",
                );
                q.push_values(chunk.iter().zip(docs), |mut row, (t, doc)| {
                    row.push_bind(t.crisis_id.to_string())
                        .push_bind(t.position)
                        .push_bind(t.seq)
                        .push_bind(t.kind.clone())
                        .push_bind(t.level.clone())
                        .push_bind(micros(t.occurred_at))
                        .push_bind(doc);
                });
                q.push(" ON CONFLICT (crisis_id, position, seq) DO NOTHING");
                q.build()
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable("write timeline"))?;
            }
            Ok(())
        }

        async fn records(
            pool: &Pool<$db>,
            mut q: QueryBuilder<$db>,
        ) -> Result<Vec<Record>, AppError> {
            let docs: Vec<String> = q
                .build_query_scalar()
                .fetch_all(pool)
                .await
                .map_err(unavailable("read CMC records"))?;
            docs.iter().map(|d| from_json(d)).collect()
        }

        async fn of_crisis(
            pool: &Pool<$db>,
            kind: &'static str,
            crisis_id: Uuid,
        ) -> Result<Vec<Record>, AppError> {
            let mut q: QueryBuilder<$db> =
                QueryBuilder::new("SELECT doc FROM cmc_records WHERE kind = ");
            q.push_bind(kind)
                .push(" AND crisis_id = ")
                .push_bind(crisis_id.to_string())
                .push(" ORDER BY position, id");
            records(pool, q).await
        }

        async fn one(
            pool: &Pool<$db>,
            kind: &'static str,
            crisis_id: Uuid,
            id: Uuid,
        ) -> Result<Option<Record>, AppError> {
            let mut q: QueryBuilder<$db> =
                QueryBuilder::new("SELECT doc FROM cmc_records WHERE kind = ");
            q.push_bind(kind)
                .push(" AND crisis_id = ")
                .push_bind(crisis_id.to_string())
                .push(" AND id = ")
                .push_bind(id.to_string());
            Ok(records(pool, q).await?.into_iter().next())
        }

        pub(crate) async fn get_handover(
            pool: &Pool<$db>,
            handover_id: Uuid,
        ) -> Result<Option<crate::cmc::HandoverRow>, AppError> {
            let r = one(pool, "handover", crisis_id_for(handover_id), handover_id).await?;
            Ok(r.and_then(|r| handovers(vec![r]).pop()))
        }

        pub(crate) async fn list_handovers(
            pool: &Pool<$db>,
            pending_only: bool,
            incident_id: Option<Uuid>,
            limit: u32,
        ) -> Result<Vec<crate::cmc::HandoverRow>, AppError> {
            let mut q: QueryBuilder<$db> =
                QueryBuilder::new("SELECT doc FROM cmc_records WHERE kind = 'handover'");
            if pending_only {
                q.push(" AND at IS NOT NULL ORDER BY at, id");
            } else {
                q.push(" ORDER BY position DESC, id");
            }
            // Handovers are few (a handful a year): filtering the incident in memory keeps
            // one index serving both orders.
            let rows = handovers(records(pool, q).await?);
            Ok(rows
                .into_iter()
                .filter(|h| incident_id.is_none_or(|i| h.incident_id == i))
                .take(limit as usize)
                .collect())
        }

        pub(crate) async fn get_crisis(
            pool: &Pool<$db>,
            crisis_id: Uuid,
        ) -> Result<Option<CrisisDetail>, AppError> {
            let Some(Record::Crisis(crisis)) = one(pool, "crisis", crisis_id, crisis_id).await?
            else {
                return Ok(None);
            };
            let actions = of_crisis(pool, "action", crisis_id)
                .await?
                .into_iter()
                .filter_map(|r| match r {
                    Record::Action(a) => Some(a),
                    _ => None,
                })
                .collect();
            let communications = of_crisis(pool, "communication", crisis_id)
                .await?
                .into_iter()
                .filter_map(|r| match r {
                    Record::Communication(c) => Some(c),
                    _ => None,
                })
                .collect();
            Ok(Some(CrisisDetail {
                crisis,
                actions,
                communications,
            }))
        }

        pub(crate) async fn list_crises(
            pool: &Pool<$db>,
            limit: u32,
        ) -> Result<Vec<crate::cmc::CrisisRow>, AppError> {
            let mut q: QueryBuilder<$db> = QueryBuilder::new(
                "SELECT doc FROM cmc_records WHERE kind = 'crisis' ORDER BY at DESC, id LIMIT ",
            );
            q.push_bind(i64::from(limit));
            Ok(records(pool, q)
                .await?
                .into_iter()
                .filter_map(|r| match r {
                    Record::Crisis(c) => Some(c),
                    _ => None,
                })
                .collect())
        }

        pub(crate) async fn decision_register(
            pool: &Pool<$db>,
            crisis_id: Uuid,
        ) -> Result<Vec<crate::cmc::DecisionRow>, AppError> {
            Ok(decisions(of_crisis(pool, "decision", crisis_id).await?))
        }

        pub(crate) async fn incident_decisions(
            pool: &Pool<$db>,
            incident_id: Uuid,
        ) -> Result<Vec<crate::cmc::DecisionRow>, AppError> {
            Ok(decisions(
                of_crisis(pool, "incident_decision", incident_id).await?,
            ))
        }

        pub(crate) async fn timeline(
            pool: &Pool<$db>,
            query: &TimelineQuery,
        ) -> Result<Vec<TimelineEntry>, AppError> {
            let mut q: QueryBuilder<$db> =
                QueryBuilder::new("SELECT doc FROM timeline_entries WHERE crisis_id = ");
            q.push_bind(query.crisis_id.to_string());
            for (column, values) in [("kind", &query.kinds), ("level", &query.levels)] {
                if !values.is_empty() {
                    q.push(format!(" AND {column} IN ("));
                    let mut list = q.separated(", ");
                    for v in values {
                        list.push_bind(v.clone());
                    }
                    q.push(")");
                }
            }
            if let Some(from) = query.occurred_from {
                q.push(" AND occurred_at >= ").push_bind(micros(from));
            }
            if let Some(to) = query.occurred_to {
                q.push(" AND occurred_at < ").push_bind(micros(to));
            }
            if let Some((position, seq)) = query.after {
                q.push(" AND (position > ")
                    .push_bind(position)
                    .push(" OR (position = ")
                    .push_bind(position)
                    .push(" AND seq > ")
                    .push_bind(seq)
                    .push("))");
            }
            q.push(" ORDER BY position, seq LIMIT ")
                .push_bind(i64::from(query.limit));
            let docs: Vec<String> = q
                .build_query_scalar()
                .fetch_all(pool)
                .await
                .map_err(unavailable("read timeline"))?;
            docs.iter().map(|d| from_json(d)).collect()
        }

        /// Every CMC row as JSON text in key order, for comparing two generations.
        pub(crate) async fn dump(pool: &Pool<$db>) -> Result<Vec<String>, AppError> {
            let mut out = Vec::new();
            for (table, select) in [
                (
                    "cmc_records",
                    "SELECT doc FROM cmc_records ORDER BY kind, crisis_id, id",
                ),
                (
                    "timeline_entries",
                    "SELECT doc FROM timeline_entries ORDER BY crisis_id, position, seq",
                ),
            ] {
                let rows: Vec<String> = sqlx::query_scalar(select)
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable("dump"))?;
                out.extend(rows.into_iter().map(|r| {
                    // Documents are compared as values: key order is the writer's.
                    let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
                    format!("{table} {v}")
                }));
            }
            Ok(out)
        }
    };
}

/// Implements [`crate::CmcReadModel`] for a store with a `pool` and `current_checkpoint`,
/// through the statements of `cmc_sql::$module`.
macro_rules! cmc_read_model {
    ($store:ty, $module:ident) => {
        #[async_trait::async_trait]
        impl crate::CmcReadModel for $store {
            async fn position(&self) -> Result<u64, sems_app::AppError> {
                self.current_checkpoint().await
            }

            async fn wait_beyond(
                &self,
                position: u64,
                deadline: std::time::Instant,
            ) -> Result<(), sems_app::AppError> {
                crate::wait_until_applied_every(
                    &self.applied,
                    position + 1,
                    deadline,
                    || self.current_checkpoint(),
                    std::time::Duration::from_millis(50),
                )
                .await
            }

            async fn get_handover(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<crate::cmc::HandoverRow>, sems_app::AppError> {
                crate::cmc_sql::$module::get_handover(&self.pool, id).await
            }

            async fn list_handovers(
                &self,
                pending_only: bool,
                incident_id: Option<uuid::Uuid>,
                limit: u32,
            ) -> Result<Vec<crate::cmc::HandoverRow>, sems_app::AppError> {
                crate::cmc_sql::$module::list_handovers(
                    &self.pool,
                    pending_only,
                    incident_id,
                    limit,
                )
                .await
            }

            async fn get_crisis(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<crate::CrisisDetail>, sems_app::AppError> {
                crate::cmc_sql::$module::get_crisis(&self.pool, id).await
            }

            async fn list_crises(
                &self,
                limit: u32,
            ) -> Result<Vec<crate::cmc::CrisisRow>, sems_app::AppError> {
                crate::cmc_sql::$module::list_crises(&self.pool, limit).await
            }

            async fn timeline(
                &self,
                query: &crate::TimelineQuery,
            ) -> Result<Vec<crate::cmc::TimelineEntry>, sems_app::AppError> {
                crate::cmc_sql::$module::timeline(&self.pool, query).await
            }

            async fn decision_register(
                &self,
                crisis_id: uuid::Uuid,
            ) -> Result<Vec<crate::cmc::DecisionRow>, sems_app::AppError> {
                crate::cmc_sql::$module::decision_register(&self.pool, crisis_id).await
            }

            async fn incident_decisions(
                &self,
                incident_id: uuid::Uuid,
            ) -> Result<Vec<crate::cmc::DecisionRow>, sems_app::AppError> {
                crate::cmc_sql::$module::incident_decisions(&self.pool, incident_id).await
            }
        }
    };
}

pub(crate) use cmc_read_model;

pub(crate) mod sqlite {
    cmc_statements!(sqlx::Sqlite);
}

pub(crate) mod postgres {
    cmc_statements!(sqlx::Postgres);
}
