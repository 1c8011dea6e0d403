//! The ports command handling needs. Adapters: `sems-eventlog` (JetStream and SQLite).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Envelope, TraceContext};

/// A commit as stored: its global position and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCommit {
    /// Position in the log (the JetStream stream sequence).
    pub position: u64,
    /// The envelope bytes exactly as stored. Shared, not copied, between the writer, the
    /// feed and the decode hand-off of one process (`docs/DECISIONS.md`).
    pub bytes: Bytes,
}

/// A commit ready to append.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    /// Aggregate type.
    pub aggregate_type: &'static str,
    /// Aggregate id.
    pub aggregate_id: Uuid,
    /// Idempotency key.
    pub commit_id: Uuid,
    /// Position of the aggregate's last commit as loaded; 0 = the aggregate must not exist.
    pub expected_last_position: u64,
    /// Envelope bytes.
    pub bytes: Bytes,
    /// Event type names, for headers.
    pub event_types: Vec<&'static str>,
    /// Trace context, for headers.
    pub trace_context: Option<TraceContext>,
    /// Correlation id, for headers.
    pub correlation_id: Uuid,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Position of the commit (the original one when `duplicate`).
    pub position: u64,
    /// The commit id was seen before; nothing was appended.
    pub duplicate: bool,
}

/// Why the log refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The aggregate's last commit is not the one expected (optimistic concurrency).
    #[error("wrong expected position")]
    Conflict,
    /// No commit at that position.
    #[error("no commit at position {0}")]
    NotFound(u64),
    /// The log cannot be reached.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not read back as written (broken hash chain, bad envelope).
    #[error("event log corrupt: {0}")]
    Corrupt(String),
    /// Anything else.
    #[error("event log: {0}")]
    Internal(String),
}

/// The event log: one append-only sequence of commits with a global position, one
/// per-aggregate ordering inside it, optimistic concurrency and idempotent appends.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Every commit of one aggregate, in order.
    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<Vec<StoredCommit>, LogError>;

    /// The commits of one aggregate after `after` (a position), in order: how a copy of it
    /// known up to `after` catches up without reading its whole history again.
    async fn read_aggregate_after(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        after: u64,
    ) -> Result<Vec<StoredCommit>, LogError>;

    /// The commit at a position.
    async fn read_at(&self, position: u64) -> Result<StoredCommit, LogError>;

    /// Appends a commit if the aggregate's last commit is still at
    /// `expected_last_position`; a commit id seen before returns the original position.
    async fn append(&self, commit: PendingCommit) -> Result<AppendOutcome, LogError>;

    /// The position of the last commit acknowledged (0 when the log is empty).
    async fn last_position(&self) -> Result<u64, LogError>;
}

/// A commit this process is about to append, as the handler knows it: its id, the bytes
/// the log will store, the envelope with its events, and the domain events themselves (a
/// `Vec` of the aggregate's event type, behind [`Any`](std::any::Any)).
#[derive(Debug)]
pub struct OfferedCommit<'a> {
    /// The commit id (`Envelope::commit_id`).
    pub commit_id: Uuid,
    /// The bytes handed to the log (the same buffer, shared).
    pub bytes: Bytes,
    /// The envelope, as decoding `bytes` gives it.
    pub envelope: Envelope,
    /// The events, as decoding the envelope's payloads gives them: `&Vec<A::Event>`.
    pub events: &'a (dyn std::any::Any + Send + Sync),
}

/// Sees every commit the handler appends. Used in one process that both appends and
/// projects, so that the projector need not parse again what was encoded a moment before
/// (`docs/DECISIONS.md`, "The decode hand-off"). A commit is offered before the append, as
/// the log may deliver it to a projector before the append's answer reaches the handler.
/// It must not block: it runs on the command's path.
pub trait AppendTap: Send + Sync + 'static {
    /// Whether it would take a commit now: asked before the command keeps a copy of its
    /// bytes for it.
    fn accepting(&self) -> bool;

    /// A commit about to be appended (asked for with [`AppendTap::accepting`]).
    fn offered(&self, commit: OfferedCommit<'_>);

    /// Called once for every offered commit, when its append is over: the position the log
    /// stored it at, or `None` when the append stored nothing (refused, failed, a repeat of
    /// a stored commit, or abandoned by a dropped command).
    fn settled(&self, commit_id: Uuid, position: Option<u64>);
}

/// The server clock.
pub trait Clock: Send + Sync + 'static {
    /// Now, UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, to the microsecond: every time the log records has microsecond
/// precision, which both read-model stores keep exactly (PostgreSQL's `timestamptz` would
/// round nanoseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        Utc::now().trunc_subsecs(6)
    }
}

/// A commit delivered to a projector, with the trace context its producer recorded.
#[derive(Debug, Clone)]
pub struct FedCommit {
    /// The commit.
    pub commit: StoredCommit,
    /// `traceparent` of the producing call, from the message headers.
    pub traceparent: Option<Arc<str>>,
    /// `tracestate` of the producing call.
    pub tracestate: Option<Arc<str>>,
    /// Commits after this one not yet delivered to the reader (its lag), when known.
    pub pending: u64,
}

/// The log as a projector reads it: every commit in position order, from a checkpoint on,
/// acknowledged once applied.
#[async_trait]
pub trait CommitFeed: Send {
    /// Starts (or restarts) delivery with the first commit after `checkpoint`. Commits at or
    /// below it may still be redelivered; the projector skips them.
    async fn open(&mut self, checkpoint: u64) -> Result<(), LogError>;

    /// Waits up to `wait` for at least one commit, then returns every commit ready, up to
    /// `max`. An empty batch means nothing arrived in time.
    async fn next_batch(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<FedCommit>, LogError>;

    /// Acknowledges every commit delivered so far, up to and including `position`.
    async fn ack_through(&mut self, position: u64) -> Result<(), LogError>;
}

#[async_trait]
impl<F: CommitFeed + ?Sized> CommitFeed for Box<F> {
    async fn open(&mut self, checkpoint: u64) -> Result<(), LogError> {
        (**self).open(checkpoint).await
    }

    async fn next_batch(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<FedCommit>, LogError> {
        (**self).next_batch(max, wait).await
    }

    async fn ack_through(&mut self, position: u64) -> Result<(), LogError> {
        (**self).ack_through(position).await
    }
}
