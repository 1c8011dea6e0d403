//! Read models: the pure incident-tracking projection, its PostgreSQL store (writer and
//! reader, migrations, checkpoint), and the projector that feeds it from the event log.
//!
//! Two ports live here, so that a second (SQLite) store slots in without touching the domain
//! or the services: [`ProjectionStore`] (what a projector writes through) and
//! [`IncidentReadModel`] (what queries read through). Depends on `sems-domain` and
//! `sems-app`; never on NATS.

mod pg;
pub mod projection;
mod projector;
mod query;

use std::time::Instant;

use async_trait::async_trait;
use sems_app::AppError;
use uuid::Uuid;

pub use pg::{PgReadModel, PgReadModelConfig};
pub use projection::{AlertRow, IncidentRow, NoteRow, ProjectedCommit, RoleHolder};
pub use projector::{Projector, ProjectorConfig};
pub use query::{
    AlertQuery, Cursor, IncidentDetail, IncidentQuery, IncidentSort, IncidentSummary, Page,
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

    /// Alerts promoted at least `older_than` ago into an incident the read model does not
    /// have (the call that promoted them stopped before opening it), oldest first.
    async fn alerts_awaiting_incident(
        &self,
        older_than: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<AlertRow>, AppError>;
}
