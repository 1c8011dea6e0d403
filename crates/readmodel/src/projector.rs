//! The projector: one active instance per projection (the store's lock), reading the log
//! from the checkpoint, applying each batch and its checkpoint in one transaction, and
//! acknowledging only after the commit. On any failure it stops, reports, and resumes from
//! the checkpoint; it never acknowledges past a commit it failed to apply.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use sems_app::{AppError, CommitFeed, FedCommit};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{ProjectedCommit, ProjectionStore};

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
}

impl<F: CommitFeed> Projector<F> {
    /// A projector writing into `store` from `feed`.
    pub fn new(store: Arc<dyn ProjectionStore>, feed: F, config: ProjectorConfig) -> Self {
        Self {
            store,
            feed,
            config,
        }
    }

    /// Runs until `shutdown` resolves. A batch already fetched is applied and acknowledged
    /// before it returns; only the wait for the next batch is cut short.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            match self.lead(shutdown.as_mut()).await {
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
        loop {
            let batch = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(Lead::ShutDown),
                batch = self.feed.next_batch(self.config.batch_size, self.config.idle_wait) => batch?,
            };
            self.apply(batch).await?;
        }
    }

    /// One batch: wait for commits, apply them with the checkpoint, acknowledge.
    pub async fn step(&mut self) -> Result<usize, AppError> {
        let batch = self
            .feed
            .next_batch(self.config.batch_size, self.config.idle_wait)
            .await?;
        self.apply(batch).await
    }

    /// Applies a batch with its checkpoint, then acknowledges it.
    async fn apply(&mut self, batch: Vec<FedCommit>) -> Result<usize, AppError> {
        let Some(last) = batch.last().map(|c| c.commit.position) else {
            return Ok(0);
        };
        let span = info_span!(
            "projector.batch",
            projection = self.store.name(),
            commits = batch.len(),
            last
        );
        for c in &batch {
            sems_telemetry::link_remote(&span, c.traceparent.as_deref(), c.tracestate.as_deref());
        }
        async {
            let decoded = batch
                .iter()
                .map(|c| ProjectedCommit::decode(&c.commit))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AppError::Internal(format!("undecodable commit: {e}")))?;
            let applied = self.store.apply_batch(&decoded).await?;
            if applied.skipped > 0 {
                warn!(
                    skipped = applied.skipped,
                    "redelivered commits at or below the checkpoint skipped"
                );
            }
            self.feed.ack_through(last).await?;
            Ok(applied.applied)
        }
        .instrument(span)
        .await
    }

    /// Opens the feed at the store's checkpoint without taking the lock (tests, tools).
    pub async fn open(&mut self) -> Result<(), AppError> {
        let checkpoint = self.store.checkpoint().await?;
        self.feed.open(checkpoint).await.map_err(Into::into)
    }
}
