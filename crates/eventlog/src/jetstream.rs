//! The JetStream event log.

use std::time::Duration;

use async_nats::{
    HeaderMap, HeaderName,
    jetstream::{
        self, Context,
        context::PublishErrorKind,
        message::PublishMessage,
        stream::{self, DirectGetErrorKind, DiscardPolicy, RetentionPolicy, StorageType},
    },
};
use async_trait::async_trait;
use opentelemetry::KeyValue;
use sems_app::{AppendOutcome, EventLog, LogError, PendingCommit, StoredCommit};
use tracing::{Instrument, debug_span, info, warn};
use uuid::Uuid;

/// Header carrying the comma-separated event types of a commit.
pub const EVENT_TYPE_HEADER: &str = "Sems-Event-Type";
/// Header carrying the aggregate type.
pub const AGGREGATE_TYPE_HEADER: &str = "Sems-Aggregate-Type";
/// Header carrying the correlation id.
pub const CORRELATION_HEADER: &str = "Sems-Correlation-Id";

/// The W3C trace context headers, as names async-nats need not copy (published and read by
/// the feed).
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Where and how the stream lives.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Stream name (default `SEMS`).
    pub stream: String,
    /// Subject prefix; aggregates live at `<prefix>.<type>.<id>` (default `sems.ev`).
    pub subject_prefix: String,
    /// How long JetStream remembers a `Nats-Msg-Id` (default 10 minutes); beyond it, the
    /// command handler's own check of recent commit ids applies.
    pub duplicate_window: Duration,
    /// Replicas: 1 here; 3 in production on nats-server 2.11 or newer (`docs/DEPLOY.md`).
    pub replicas: usize,
    /// Publishes retried with the same message id when the ack times out.
    pub publish_attempts: u32,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            stream: "SEMS".into(),
            subject_prefix: "sems.ev".into(),
            duplicate_window: Duration::from_secs(600),
            replicas: 1,
            publish_attempts: 3,
        }
    }
}

/// The event log on one JetStream stream.
#[derive(Clone)]
pub struct JetStreamLog {
    js: Context,
    stream: jetstream::stream::Stream,
    config: JetStreamConfig,
}

impl JetStreamLog {
    /// Connects to the stream, creating it when missing, and checks that the configuration
    /// the server holds is the one asked for (nats-server 2.9 silently ignores settings it
    /// does not know).
    pub async fn open(
        client: async_nats::Client,
        config: JetStreamConfig,
    ) -> Result<Self, LogError> {
        if config.replicas > 1 {
            let version = client.server_info().version;
            if !at_least(&version, (2, 11)) {
                return Err(LogError::Internal(format!(
                    "a stream of {} replicas needs nats-server 2.11 or newer (clustered \
                     per-subject concurrency and dedup had bugs fixed only in 2.9.21, 2.10.19 \
                     and 2.11; docs/DEPLOY.md); this server is {version:?}",
                    config.replicas
                )));
            }
        }
        let js = jetstream::new(client);
        let wanted = stream_config(&config);
        let stream = match js.get_stream(&config.stream).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref js)
                        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                info!(stream = %config.stream, "creating event stream");
                js.create_stream(wanted.clone()).await.map_err(|e| {
                    LogError::Unavailable(format!("create stream {}: {e}", config.stream))
                })?
            }
            Err(e) => {
                return Err(LogError::Unavailable(format!(
                    "get stream {}: {e}",
                    config.stream
                )));
            }
        };
        let mut stream = stream;
        let held = stream
            .info()
            .await
            .map_err(|e| LogError::Unavailable(format!("stream info {}: {e}", config.stream)))?
            .config
            .clone();
        check_config(&wanted, &held)?;
        Ok(Self { js, stream, config })
    }

    /// The subject of one aggregate.
    pub fn subject(&self, aggregate_type: &str, aggregate_id: Uuid) -> String {
        format!(
            "{}.{aggregate_type}.{aggregate_id}",
            self.config.subject_prefix
        )
    }

    /// The wildcard covering every aggregate (what projectors consume).
    pub fn all_subjects(&self) -> String {
        format!("{}.>", self.config.subject_prefix)
    }

    /// The JetStream context.
    pub fn context(&self) -> &Context {
        &self.js
    }

    /// The configuration.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// Messages in the stream and the last position.
    pub async fn state(&self) -> Result<(u64, u64), LogError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| LogError::Unavailable(format!("stream info: {e}")))?;
        Ok((info.state.messages, info.state.last_sequence))
    }

    /// Every commit in the stream from `from` on, in position order (for auditors and
    /// verification; reads from the stream leader).
    pub async fn read_from(&self, from: u64, limit: usize) -> Result<Vec<StoredCommit>, LogError> {
        let (_, last) = self.state().await?;
        let mut out = Vec::new();
        let mut seq = from.max(1);
        while seq <= last && out.len() < limit {
            match self.read_at(seq).await {
                Ok(c) => out.push(c),
                Err(LogError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            seq += 1;
        }
        Ok(out)
    }
}

/// The stream configuration of the event-log contract: file storage, nothing ever expires,
/// `discard: new`, deny delete and purge, no rollups, direct get on.
fn stream_config(config: &JetStreamConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("SeMS Response event log: append-only, one subject per aggregate".into()),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::New,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_message_size: -1,
        max_consumers: -1,
        max_age: Duration::ZERO,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        allow_direct: true,
        ..Default::default()
    }
}

/// Whether a server version (`2.9.10`, `2.11.0-RC.1`) is at least `major.minor`; a version
/// that does not read as one is not.
fn at_least(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.trim_start_matches('v').parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Compares the configuration the server holds with the one asked for, field by field.
fn check_config(wanted: &stream::Config, held: &stream::Config) -> Result<(), LogError> {
    let mut diffs = Vec::new();
    macro_rules! same {
        ($field:ident) => {
            if wanted.$field != held.$field {
                diffs.push(format!(
                    "{}: wanted {:?}, server has {:?}",
                    stringify!($field),
                    wanted.$field,
                    held.$field
                ));
            }
        };
    }
    same!(subjects);
    same!(storage);
    same!(retention);
    same!(discard);
    same!(max_bytes);
    same!(max_messages);
    same!(max_messages_per_subject);
    same!(max_age);
    same!(num_replicas);
    same!(duplicate_window);
    same!(deny_delete);
    same!(deny_purge);
    same!(allow_rollup);
    same!(allow_direct);
    same!(sealed);
    // Fields no contract setting names, whose other values break it: `no_ack` stores commits
    // without acknowledging them (every append would time out as unavailable), a mirror or
    // sources would let messages in that no command wrote, a message or consumer limit would
    // refuse appends or projectors.
    same!(no_ack);
    same!(max_message_size);
    same!(max_consumers);
    if held.mirror.is_some() {
        diffs.push(format!("mirror: wanted none, server has {:?}", held.mirror));
    }
    if held.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        diffs.push(format!(
            "sources: wanted none, server has {:?}",
            held.sources
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(LogError::Internal(format!(
            "stream {} is not configured as the event-log contract requires: {}",
            wanted.name,
            diffs.join("; ")
        )))
    }
}

#[async_trait]
impl EventLog for JetStreamLog {
    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<Vec<StoredCommit>, LogError> {
        self.read_aggregate_after(aggregate_type, aggregate_id, 0)
            .await
    }

    async fn read_aggregate_after(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        after: u64,
    ) -> Result<Vec<StoredCommit>, LogError> {
        let subject = self.subject(aggregate_type, aggregate_id);
        let mut commits = Vec::new();
        let mut next = after + 1;
        loop {
            match self
                .stream
                .direct_get_next_for_subject(subject.clone(), Some(next))
                .await
            {
                Ok(m) => {
                    next = m.sequence + 1;
                    commits.push(StoredCommit {
                        position: m.sequence,
                        bytes: m.payload.clone(),
                    });
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(commits),
                Err(e) => return Err(LogError::Unavailable(format!("read {subject}: {e}"))),
            }
        }
    }

    async fn read_at(&self, position: u64) -> Result<StoredCommit, LogError> {
        match self.stream.get_raw_message(position).await {
            Ok(m) => Ok(StoredCommit {
                position: m.sequence,
                bytes: m.payload.clone(),
            }),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                Err(LogError::NotFound(position))
            }
            Err(e) => Err(LogError::Unavailable(format!(
                "read position {position}: {e}"
            ))),
        }
    }

    async fn last_position(&self) -> Result<u64, LogError> {
        Ok(self.state().await?.1)
    }

    async fn append(&self, commit: PendingCommit) -> Result<AppendOutcome, LogError> {
        let subject = self.subject(commit.aggregate_type, commit.aggregate_id);
        let span = debug_span!(
            target: sems_telemetry::DETAIL,
            "eventlog.append",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            sems.commit_id = %commit.commit_id,
        );
        let aggregate = commit.aggregate_type;
        let started = std::time::Instant::now();
        let result = async {
            // Built for each attempt (a retry is rare) rather than cloned for every publish;
            // static names and owned values, so building them copies no name and no string
            // twice.
            let headers = || {
                let mut headers = HeaderMap::new();
                headers.insert(
                    HeaderName::from_static(EVENT_TYPE_HEADER),
                    commit.event_types.join(","),
                );
                headers.insert(
                    HeaderName::from_static(AGGREGATE_TYPE_HEADER),
                    commit.aggregate_type,
                );
                headers.insert(
                    HeaderName::from_static(CORRELATION_HEADER),
                    commit.correlation_id.to_string(),
                );
                if let Some(tc) = &commit.trace_context {
                    headers.insert(
                        TRACEPARENT,
                        &*tc.traceparent,
                    );
                    if let Some(ts) = &tc.tracestate {
                        headers.insert(TRACESTATE, &**ts);
                    }
                }
                headers
            };
            let payload = commit.bytes;
            let msg_id = commit.commit_id.to_string();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let publish = PublishMessage::build()
                    .payload(payload.clone())
                    .headers(headers())
                    .message_id(&msg_id)
                    .expected_last_subject_sequence(commit.expected_last_position);
                let result = match self.js.send_publish(subject.clone(), publish).await {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(ack) => return Ok(AppendOutcome { position: ack.sequence, duplicate: ack.duplicate }),
                    Err(e) => match e.kind() {
                        PublishErrorKind::WrongLastSequence => return Err(LogError::Conflict),
                        // Outcome unknown: retry with the same message id, never a new one.
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending
                            if attempt < self.config.publish_attempts =>
                        {
                            warn!(attempt, %subject, commit_id = %msg_id, error = %e, "publish outcome unknown, retrying with the same message id");
                            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                        }
                        PublishErrorKind::MaxPayloadExceeded => {
                            return Err(LogError::Internal(format!("commit too large: {e}")));
                        }
                        _ => return Err(LogError::Unavailable(format!("publish to {subject}: {e}"))),
                    },
                }
            }
        }
        .instrument(span)
        .await;
        let outcome = match &result {
            Ok(o) if o.duplicate => "duplicate",
            Ok(_) => "appended",
            Err(LogError::Conflict) => "conflict",
            Err(_) => "failed",
        };
        let m = sems_telemetry::metrics();
        let attrs = [KeyValue::new("aggregate", aggregate)];
        m.append_duration
            .record(started.elapsed().as_secs_f64(), &attrs);
        m.appends
            .add(1, &[attrs[0].clone(), KeyValue::new("outcome", outcome)]);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::at_least;

    #[test]
    fn server_versions_compare_by_major_and_minor() {
        assert!(!at_least("2.9.10", (2, 11)));
        assert!(!at_least("2.10.19", (2, 11)));
        assert!(at_least("2.11.0", (2, 11)));
        assert!(at_least("2.11.0-RC.1", (2, 11)));
        assert!(at_least("v2.12.3", (2, 11)));
        assert!(at_least("3.0.0", (2, 11)));
        assert!(!at_least("", (2, 11)));
        assert!(!at_least("unknown", (2, 11)));
    }
}
