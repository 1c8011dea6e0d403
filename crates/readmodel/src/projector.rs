//! The projector: one active instance per projection (the store's lock), reading the log
//! from the checkpoint, applying each batch and its checkpoint in one transaction, and
//! acknowledging only after the commit. On any failure it stops, reports, and resumes from
//! the checkpoint; it never acknowledges past a commit it failed to apply.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use opentelemetry::KeyValue;
use sems_app::{AppError, CommitFeed, FedCommit};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{Applied, HandOff, ProjectedCommit, ProjectionStore};

/// Tuning of a projector.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Commits applied per transaction at most.
    pub batch_size: usize,
    /// How long one wait for new commits lasts before checking for shutdown.
    pub idle_wait: Duration,
    /// Pause before resuming after a failure, or between attempts to take the lock.
    pub retry_delay: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            idle_wait: Duration::from_millis(500),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// How a spell of leading ended.
enum Lead {
    /// Shutdown was asked for.
    ShutDown,
    /// Another instance leads.
    Standby,
}

/// Feeds one projection store from the log.
pub struct Projector<F: CommitFeed> {
    store: Arc<dyn ProjectionStore>,
    feed: F,
    config: ProjectorConfig,
    hand_off: Option<Arc<HandOff>>,
}

impl<F: CommitFeed> Projector<F> {
    /// A projector writing into `store` from `feed`.
    pub fn new(store: Arc<dyn ProjectionStore>, feed: F, config: ProjectorConfig) -> Self {
        Self {
            store,
            feed,
            config,
            hand_off: None,
        }
    }

    /// This projector, taking the commits that `hand_off` holds instead of decoding them
    /// again (where their bytes are the delivered bytes).
    pub fn with_hand_off(mut self, hand_off: Arc<HandOff>) -> Self {
        self.hand_off = Some(hand_off);
        self
    }

    /// Runs until `shutdown` resolves. A batch already fetched is applied and acknowledged
    /// before it returns; only the wait for the next batch is cut short.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let led = self.lead(shutdown.as_mut()).await;
            if let Some(h) = &self.hand_off {
                h.close();
            }
            match led {
                Ok(Lead::ShutDown) => return,
                Ok(Lead::Standby) => {}
                Err(e) => {
                    error!(projection = self.store.name(), error = %e, "projector stopped; resuming from the checkpoint");
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.retry_delay) => {}
            }
        }
    }

    /// Takes the lock, then projects until shutdown or an error.
    async fn lead(
        &mut self,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<Lead, AppError> {
        let lock = tokio::select! {
            () = shutdown.as_mut() => return Ok(Lead::ShutDown),
            lock = self.store.try_lock() => lock?,
        };
        let Some(_lock) = lock else {
            info!(
                projection = self.store.name(),
                "another instance holds the projection; standing by"
            );
            return Ok(Lead::Standby);
        };
        let checkpoint = self.store.checkpoint().await?;
        info!(
            projection = self.store.name(),
            checkpoint, "projector leading"
        );
        self.feed.open(checkpoint).await?;
        if let Some(h) = &self.hand_off {
            h.open(checkpoint);
        }
        // Two stages: while one batch is written (in PostgreSQL), the next is fetched and
        // decoded (here). Batches are still written one after the other, in stream order, and
        // each is acknowledged only after its transaction has committed.
        let mut in_flight: Option<Writing> = None;
        let outcome = loop {
            let batch = tokio::select! {
                biased;
                () = shutdown.as_mut() => break Ok(Lead::ShutDown),
                batch = self.feed.next_batch(self.config.batch_size, self.config.idle_wait) => batch,
            };
            let prepared = match batch
                .map_err(AppError::from)
                .and_then(|b| prepare(self.store.name(), &b, self.hand_off.as_deref()))
            {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // Idle: settle the batch in flight now rather than when traffic resumes,
                    // so it is acknowledged within ack_wait and a failure is seen at once.
                    if let Some(previous) = in_flight.take()
                        && let Err(e) = self.finish(previous).await
                    {
                        break Err(e);
                    }
                    continue;
                }
                Err(e) => break Err(e),
            };
            if let Some(previous) = in_flight.take()
                && let Err(e) = self.finish(previous).await
            {
                break Err(e);
            }
            let store = self.store.clone();
            let Prepared {
                commits,
                last,
                pending,
                span,
            } = prepared;
            let started = std::time::Instant::now();
            let write =
                tokio::spawn(async move { store.apply_batch(&commits).await }.instrument(span));
            in_flight = Some(Writing {
                write,
                last,
                pending,
                started,
            });
        };
        // The batch in hand is committed and acknowledged before leaving, whatever happened.
        if let Some(previous) = in_flight.take()
            && let Err(e) = self.finish(previous).await
        {
            if matches!(outcome, Ok(Lead::ShutDown)) {
                // Shutting down all the same (the shutdown future has completed and must not
                // be awaited again); the batch is re-applied from the checkpoint next start.
                error!(projection = self.store.name(), error = %e, "last batch not settled at shutdown");
                return Ok(Lead::ShutDown);
            }
            return Err(e);
        }
        outcome
    }

    /// Waits for a batch's transaction, then acknowledges its commits.
    async fn finish(&mut self, writing: Writing) -> Result<(), AppError> {
        let applied = writing
            .write
            .await
            .map_err(|e| AppError::Internal(format!("projector batch task: {e}")))??;
        if applied.skipped > 0 {
            warn!(
                skipped = applied.skipped,
                "redelivered commits at or below the checkpoint skipped"
            );
        }
        let m = sems_telemetry::metrics();
        let attrs = [KeyValue::new("projection", self.store.name().to_owned())];
        m.projector_batch_duration
            .record(writing.started.elapsed().as_secs_f64(), &attrs);
        m.projector_commits.add(applied.applied as u64, &attrs);
        m.projector_position.record(applied.checkpoint, &attrs);
        m.projector_lag.record(writing.pending, &attrs);
        self.feed
            .ack_through(writing.last)
            .await
            .map_err(Into::into)
    }
}

/// A batch decoded and ready to write.
struct Prepared {
    commits: Vec<ProjectedCommit>,
    last: u64,
    pending: u64,
    span: tracing::Span,
}

/// A batch being written.
struct Writing {
    write: tokio::task::JoinHandle<Result<Applied, AppError>>,
    last: u64,
    pending: u64,
    started: std::time::Instant,
}

/// Most trace links recorded on one batch span.
const MAX_LINKS: usize = 32;

/// Decodes a fetched batch (or takes its commits from the hand-off); `None` when it is empty.
fn prepare(
    projection: &str,
    batch: &[FedCommit],
    hand_off: Option<&HandOff>,
) -> Result<Option<Prepared>, AppError> {
    let Some((last, pending)) = batch.last().map(|c| (c.commit.position, c.pending)) else {
        return Ok(None);
    };
    let span = info_span!("projector.batch", projection, commits = batch.len(), last);
    for c in batch.iter().take(MAX_LINKS) {
        sems_telemetry::link_remote(&span, c.traceparent.as_deref(), c.tracestate.as_deref());
    }
    let mut handed = hand_off
        .map(|h| h.take(batch))
        .unwrap_or_default()
        .into_iter();
    let commits = batch
        .iter()
        .map(|c| match handed.next().flatten() {
            Some(p) => {
                // The test suite's builds check every handed commit against the log.
                debug_assert_eq!(
                    ProjectedCommit::decode(&c.commit).ok().as_ref(),
                    Some(&p),
                    "the handed commit differs from the log's at position {}",
                    c.commit.position
                );
                Ok(p)
            }
            None => ProjectedCommit::decode(&c.commit),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::Internal(format!("undecodable commit: {e}")))?;
    Ok(Some(Prepared {
        commits,
        last,
        pending,
        span,
    }))
}
