//! The projector's view of the stream: a durable pull consumer over every aggregate subject.

use std::{pin::Pin, sync::Arc, time::Duration};

use async_nats::{
    HeaderName,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
    },
};
use async_trait::async_trait;
use futures::{FutureExt, Stream, StreamExt};
use sems_app::{CommitFeed, FedCommit, LogError, StoredCommit};
use tracing::{info, warn};

use crate::{
    JetStreamLog,
    jetstream::{TRACEPARENT, TRACESTATE},
};

/// How long a batch stays open for more commits once it has its first: everything ready is
/// taken at once, and new commits join it until this long after the first. A bound on the
/// whole batch, not on the gap between two commits: under steady traffic a gap rule would
/// never close a batch before it is full (1,000 commits at 5,000/s is 200 ms of lag).
const LINGER: Duration = Duration::from_millis(2);

type Messages = Pin<Box<dyn Stream<Item = Result<jetstream::Message, String>> + Send>>;

/// A durable consumer named after the projection, with one wildcard filter (nats-server 2.9
/// has no multi-filter consumers), acknowledging cumulatively (`AckPolicy::All`) after each
/// applied batch.
pub struct JetStreamFeed {
    log: JetStreamLog,
    durable: String,
    ack_wait: Duration,
    messages: Option<Messages>,
    /// Messages delivered and not yet acknowledged, with their stream sequence (parsed once).
    unacked: Vec<(u64, jetstream::Message)>,
    pull_batch: usize,
}

impl JetStreamFeed {
    /// A feed for the projection `durable` (also the consumer's durable name).
    pub fn new(log: JetStreamLog, durable: impl Into<String>, ack_wait: Duration) -> Self {
        Self {
            log,
            durable: durable.into(),
            ack_wait,
            messages: None,
            unacked: Vec::new(),
            pull_batch: 1_000,
        }
    }

    /// Messages asked of the server per pull request (default 1,000).
    pub fn with_pull_batch(mut self, n: usize) -> Self {
        self.pull_batch = n.max(1);
        self
    }

    fn consumer_config(&self, start: u64) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some("SeMS projector".into()),
            filter_subject: self.log.all_subjects(),
            ack_policy: AckPolicy::All,
            ack_wait: self.ack_wait,
            max_ack_pending: 20_000,
            deliver_policy: if start <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                }
            },
            ..Default::default()
        }
    }
}

#[async_trait]
impl CommitFeed for JetStreamFeed {
    async fn open(&mut self, checkpoint: u64) -> Result<(), LogError> {
        self.messages = None;
        self.unacked.clear();
        let js = self.log.context();
        let stream_name = &self.log.config().stream;
        let stream = js
            .get_stream(stream_name)
            .await
            .map_err(|e| LogError::Unavailable(format!("get stream {stream_name}: {e}")))?;
        crate::beyond_the_end(checkpoint, stream.cached_info().state.last_sequence)?;
        let existing = stream.consumer_info(&self.durable).await.ok();
        let keep = existing.as_ref().is_some_and(|info| {
            // Keep the consumer only when it has delivered nothing past the checkpoint (so
            // nothing is skipped) and follows the same subjects; otherwise start it afresh
            // from the checkpoint.
            info.delivered.stream_sequence <= checkpoint
                && info.ack_floor.stream_sequence <= checkpoint
                && info.config.filter_subject == self.log.all_subjects()
                && info.config.ack_policy == AckPolicy::All
        });
        if existing.is_some() && !keep {
            info!(consumer = %self.durable, checkpoint, "recreating projector consumer from checkpoint");
            stream.delete_consumer(&self.durable).await.map_err(|e| {
                LogError::Unavailable(format!("delete consumer {}: {e}", self.durable))
            })?;
        }
        let consumer: jetstream::consumer::Consumer<pull::Config> = if keep {
            stream
                .get_consumer(&self.durable)
                .await
                .map_err(|e| LogError::Unavailable(format!("get consumer {}: {e}", self.durable)))?
        } else {
            let wanted = self.consumer_config(checkpoint + 1);
            let consumer = stream.create_consumer(wanted.clone()).await.map_err(|e| {
                LogError::Unavailable(format!("create consumer {}: {e}", self.durable))
            })?;
            let held = &consumer.cached_info().config;
            if held.filter_subject != wanted.filter_subject
                || held.ack_policy != wanted.ack_policy
                || held.deliver_policy != wanted.deliver_policy
            {
                return Err(LogError::Internal(format!(
                    "consumer {} not configured as asked: {held:?}",
                    self.durable
                )));
            }
            consumer
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.pull_batch)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| LogError::Unavailable(format!("consume {}: {e}", self.durable)))?;
        self.messages = Some(Box::pin(messages.map(|m| m.map_err(|e| e.to_string()))));
        Ok(())
    }

    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<FedCommit>, LogError> {
        let Some(messages) = self.messages.as_mut() else {
            return Err(LogError::Internal("feed not open".into()));
        };
        let first = match tokio::time::timeout(wait, messages.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(LogError::Unavailable("consumer stream ended".into())),
            Ok(Some(m)) => m,
        };
        let linger_until = tokio::time::Instant::now() + LINGER;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            let message = item.map_err(|e| LogError::Unavailable(format!("consume: {e}")))?;
            let info = message
                .info()
                .map_err(|e| LogError::Internal(format!("message info: {e}")))?;
            let position = info.stream_sequence;
            // By `HeaderName`: looked up by `&str`, a name is copied into a new one first.
            let header = |name: HeaderName| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| Arc::from(v.as_str()))
            };
            batch.push(FedCommit {
                commit: StoredCommit {
                    position,
                    bytes: message.payload.clone(),
                },
                traceparent: header(TRACEPARENT),
                tracestate: header(TRACESTATE),
                pending: info.pending,
            });
            self.unacked.push((position, message));
            if batch.len() >= max {
                break;
            }
            // Take what is ready (catching up: a whole batch at once); otherwise wait for
            // more only until the batch's linger ends, so one transaction carries what a
            // burst brings without holding the first commit back for long.
            next = match messages.next().now_or_never() {
                Some(item) => item,
                None => tokio::time::timeout_at(linger_until, messages.next())
                    .await
                    .ok()
                    .flatten(),
            };
        }
        Ok(batch)
    }

    async fn ack_through(&mut self, position: u64) -> Result<(), LogError> {
        // AckPolicy::All: acknowledging the highest message at or below `position`
        // acknowledges every message delivered before it. (Redelivered copies can sit out of
        // order in `unacked`, so pick by sequence, not by place.)
        let highest = self
            .unacked
            .iter()
            .filter(|(s, _)| *s <= position)
            .max_by_key(|(s, _)| *s);
        if let Some((through, message)) = highest {
            let through = *through;
            if let Err(e) = message.ack_with(AckKind::Ack).await {
                warn!(error = %e, position, "ack failed; the commits will be redelivered and skipped");
                return Err(LogError::Unavailable(format!("ack: {e}")));
            }
            self.unacked.retain(|(s, _)| *s > through);
        }
        Ok(())
    }
}
