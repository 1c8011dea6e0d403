//! Read models: the pure incident-tracking projection, its two stores — PostgreSQL and the
//! embedded SQLite file — (writer and reader, migrations, checkpoint), and the projector that
//! feeds them from the event log.
//!
//! Two ports live here, so that either store serves the same projector and the same queries: [`ProjectionStore`] (what a projector writes through) and
//! [`IncidentReadModel`] (what queries read through). Depends on `sems-domain` and
//! `sems-app`; never on NATS.

mod alertkeys;
pub mod cmc;
mod cmc_sql;
mod handoff;
mod nodelay;
mod pg;
pub mod projection;
mod projector;
mod query;
mod sqlite;

use std::{future::Future, time::Instant};

use async_trait::async_trait;
use sems_app::AppError;
use tokio::sync::watch;
use uuid::Uuid;

pub use cmc_sql::{CrisisDetail, TimelineQuery};
pub use handoff::{HAND_OFF_CAPACITY, HandOff};
pub use pg::{PgReadModel, PgReadModelConfig};
pub use projection::{
    AlertRow, AuthorityNotification, IncidentRow, LinkedRisk, NoteRow, ProjectedCommit, RoleHolder,
};
pub use projector::{Projector, ProjectorConfig};
pub use query::{
    AlertQuery, Cursor, IncidentDetail, IncidentQuery, IncidentSort, IncidentSummary, Page,
    RiskIncidents,
};
pub use sqlite::{
    PROJECTOR_BATCH as SQLITE_PROJECTOR_BATCH, SqliteReadModel, SqliteReadModelConfig,
};

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Commits applied.
    pub applied: usize,
    /// Commits at or below the checkpoint, skipped (redeliveries).
    pub skipped: usize,
    /// The checkpoint after the batch.
    pub checkpoint: u64,
}

/// Where a projector writes: rows and checkpoint, in one transaction per batch.
#[async_trait]
pub trait ProjectionStore: Send + Sync + 'static {
    /// The projection's name (its checkpoint row and consumer name).
    fn name(&self) -> &str;

    /// Position of the last commit applied.
    async fn checkpoint(&self) -> Result<u64, AppError>;

    /// Applies the commits above the checkpoint and moves the checkpoint, atomically.
    async fn apply_batch(&self, commits: &[ProjectedCommit]) -> Result<Applied, AppError>;

    /// Takes the single-writer lock of the projection; `None` when another instance holds
    /// it. The lock is held while the returned guard lives.
    async fn try_lock(&self) -> Result<Option<Box<dyn Send + Sync>>, AppError>;
}

/// What the incident queries read.
#[async_trait]
pub trait IncidentReadModel: Send + Sync + 'static {
    /// Waits until the read model has applied the commit at `position`, or the deadline.
    async fn wait_for(&self, position: u64, deadline: Instant) -> Result<(), AppError>;

    /// One incident with its alerts, roles and notes.
    async fn get_incident(&self, id: Uuid) -> Result<Option<IncidentDetail>, AppError>;

    /// A page of incidents.
    async fn list_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Page<IncidentSummary>, AppError>;

    /// A page of alerts.
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Page<AlertRow>, AppError>;

    /// How many incidents each register risk is linked to, most first (ties by reference,
    /// byte order), the first 1,000 risks.
    async fn incidents_per_risk(&self) -> Result<Vec<RiskIncidents>, AppError>;

    /// Alerts promoted at least `older_than` ago into an incident the read model does not
    /// have (the call that promoted them stopped before opening it), oldest first.
    async fn alerts_awaiting_incident(
        &self,
        older_than: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<AlertRow>, AppError>;
}

/// What the CMC queries read: handovers, crises, their timelines and decision registers.
#[async_trait]
pub trait CmcReadModel: IncidentReadModel {
    /// The position of the last commit applied.
    async fn position(&self) -> Result<u64, AppError>;

    /// Waits until the read model applies a commit past `position`, or the deadline: at once
    /// when a projector in this process applies it, within 50 ms when one elsewhere does (a
    /// cheaper wait than [`IncidentReadModel::wait_for`], for followers that wait most of the
    /// time).
    async fn wait_beyond(&self, position: u64, deadline: Instant) -> Result<(), AppError>;

    /// One handover.
    async fn get_handover(&self, id: Uuid) -> Result<Option<cmc::HandoverRow>, AppError>;

    /// Handovers: pending ones oldest first, or all, latest change first.
    async fn list_handovers(
        &self,
        pending_only: bool,
        incident_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<cmc::HandoverRow>, AppError>;

    /// One crisis with its actions and communications.
    async fn get_crisis(&self, id: Uuid) -> Result<Option<CrisisDetail>, AppError>;

    /// Crises, latest activated first.
    async fn list_crises(&self, limit: u32) -> Result<Vec<cmc::CrisisRow>, AppError>;

    /// A page of a crisis's timeline, in log order.
    async fn timeline(&self, query: &TimelineQuery) -> Result<Vec<cmc::TimelineEntry>, AppError>;

    /// Every decision of a crisis, in the order recorded.
    async fn decision_register(&self, crisis_id: Uuid) -> Result<Vec<cmc::DecisionRow>, AppError>;

    /// Every decision of an incident's own log, in the order recorded.
    async fn incident_decisions(
        &self,
        incident_id: Uuid,
    ) -> Result<Vec<cmc::DecisionRow>, AppError>;
}

/// Read-your-writes for a store: waits until `applied` (moved by a projector in this
/// process) or the stored checkpoint (moved by one elsewhere, polled every 5 ms) reaches
/// `position`, or the deadline passes. The deadline bounds the database reads too.
pub(crate) async fn wait_until_applied<F, Fut>(
    applied: &watch::Sender<u64>,
    position: u64,
    deadline: Instant,
    checkpoint: F,
) -> Result<(), AppError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, AppError>>,
{
    wait_until_applied_every(
        applied,
        position,
        deadline,
        checkpoint,
        std::time::Duration::from_millis(5),
    )
    .await
}

/// [`wait_until_applied`], polling the stored checkpoint every `poll`.
pub(crate) async fn wait_until_applied_every<F, Fut>(
    applied: &watch::Sender<u64>,
    position: u64,
    deadline: Instant,
    checkpoint: F,
    poll: std::time::Duration,
) -> Result<(), AppError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, AppError>>,
{
    if position == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut changes = applied.subscribe();
    loop {
        // Copy the value out: a watch borrow must not be held across an await.
        let local = *changes.borrow_and_update();
        if local >= position {
            return Ok(());
        }
        let stored = tokio::time::timeout_at(deadline, checkpoint())
            .await
            .map_err(|_| AppError::NotCaughtUp(position))??;
        if stored >= position {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(AppError::NotCaughtUp(position));
        }
        let wake = (now + poll).min(deadline);
        let _ = tokio::time::timeout_at(wake, changes.changed()).await;
    }
}

/// The commits of a batch above `checkpoint`, in position order and once each, and how many
/// were skipped (redeliveries). The log has no gaps (one wildcard over all its subjects,
/// deletes denied): a missing position means commits were lost on the way, and applying past
/// them would lose them for good, so the batch is refused.
pub(crate) fn fresh_above(
    commits: &[ProjectedCommit],
    checkpoint: u64,
) -> Result<(Vec<&ProjectedCommit>, usize), AppError> {
    let mut fresh: Vec<&ProjectedCommit> =
        commits.iter().filter(|c| c.position > checkpoint).collect();
    fresh.sort_by_key(|c| c.position);
    fresh.dedup_by_key(|c| c.position);
    for (expected, c) in (checkpoint + 1..).zip(&fresh) {
        if c.position != expected {
            return Err(AppError::Unavailable(format!(
                "commits out of order or missing: expected position {expected}, got {}",
                c.position
            )));
        }
    }
    let skipped = commits.len() - fresh.len();
    Ok((fresh, skipped))
}
