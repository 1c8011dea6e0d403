//! Moving up: copies an embedded (SQLite) event log into a JetStream stream, byte for byte,
//! so a site that outgrows one box runs on NATS and rebuilds its read models in PostgreSQL.
//!
//! Every commit is published in position order to its aggregate's subject with the headers
//! the live log writes, its commit id as `Nats-Msg-Id` and the aggregate's previous position
//! as the expected last subject sequence, so the stream assigns each commit the position it
//! had. The copy checks the hash chain of every aggregate as it goes (a broken chain stops
//! it), checks that every acknowledgement lands at the same position, and resumes where a
//! stopped copy left off. It never writes into a stream that holds anything else.

use std::collections::{HashMap, VecDeque};

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use sems_app::{Envelope, EventLog, GENESIS_HASH, LogError, sha256_hex};
use tracing::info;
use uuid::Uuid;

use crate::{
    CommitRecord, JetStreamLog, SqliteLog,
    jetstream::{AGGREGATE_TYPE_HEADER, CORRELATION_HEADER, EVENT_TYPE_HEADER},
};

/// Commits read from the source at a time.
const PAGE: usize = 1_000;
/// Publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyReport {
    /// Commits the stream already held (from an earlier, stopped copy).
    pub already: u64,
    /// Commits published by this copy.
    pub copied: u64,
    /// The last position, now the same in both logs.
    pub last_position: u64,
}

/// The last position and hash of every aggregate seen so far.
#[derive(Default)]
struct Heads(HashMap<(String, Uuid), (u64, String)>);

impl Heads {
    /// Checks that `record` continues its aggregate's chain and moves the head. Returns the
    /// aggregate's previous position (0 for its first commit).
    fn advance(&mut self, record: &CommitRecord) -> Result<u64, LogError> {
        let envelope = Envelope::decode(&record.commit.bytes)?;
        let key = (record.aggregate_type.clone(), record.aggregate_id);
        let (previous, expected) = self
            .0
            .get(&key)
            .map_or((0, GENESIS_HASH), |(p, h)| (*p, h.as_str()));
        if envelope.prev_hash != expected
            || envelope.aggregate_id != record.aggregate_id
            || envelope.aggregate_type != record.aggregate_type
            || envelope.commit_id != record.commit_id
        {
            return Err(LogError::Corrupt(format!(
                "the embedded log does not verify at position {}: the commit does not continue \
                 the hash chain of {} {} (or its columns disagree with its bytes); nothing after \
                 it was copied",
                record.commit.position, record.aggregate_type, record.aggregate_id
            )));
        }
        self.0.insert(
            key,
            (record.commit.position, sha256_hex(&record.commit.bytes)),
        );
        Ok(previous)
    }
}

fn headers(record: &CommitRecord) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(EVENT_TYPE_HEADER, record.event_types.as_str());
    h.insert(AGGREGATE_TYPE_HEADER, record.aggregate_type.as_str());
    h.insert(
        CORRELATION_HEADER,
        record.correlation_id.to_string().as_str(),
    );
    if let Some(tp) = &record.traceparent {
        h.insert("traceparent", tp.as_str());
    }
    if let Some(ts) = &record.tracestate {
        h.insert("tracestate", ts.as_str());
    }
    h
}

/// Copies `source` into `target` (see the module documentation).
pub async fn copy_to_jetstream(
    source: &SqliteLog,
    target: &JetStreamLog,
) -> Result<CopyReport, LogError> {
    let (count, last) = source.state().await?;
    if count != last {
        return Err(LogError::Corrupt(format!(
            "the embedded log holds {count} commits but its last position is {last}: positions are missing"
        )));
    }
    let (held, held_last) = target.state().await?;
    if held_last > last || held != held_last {
        return Err(LogError::Internal(format!(
            "stream {} already holds {held} commits up to position {held_last}, which the \
             embedded log ({last} commits) does not explain: copy into a new, empty stream",
            target.config().stream
        )));
    }
    if held_last > 0 {
        let theirs = target.read_at(held_last).await?;
        let ours = source.read_records(held_last, 1).await?;
        if ours.first().map(|r| &r.commit) != Some(&theirs) {
            return Err(LogError::Internal(format!(
                "stream {} holds a commit at position {held_last} that differs from the \
                 embedded log's: it is not an earlier copy of this log; copy into a new stream",
                target.config().stream
            )));
        }
        info!(
            resume_after = held_last,
            "the stream holds the start of this log; resuming the copy"
        );
    }

    let mut heads = Heads::default();
    let mut report = CopyReport {
        already: held_last,
        copied: 0,
        last_position: last,
    };
    let mut acks = VecDeque::new();
    let mut next = 1;
    while next <= last {
        let page = source.read_records(next, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for record in page {
            if record.commit.position != next {
                return Err(LogError::Corrupt(format!(
                    "the embedded log skips from position {} to {}",
                    next - 1,
                    record.commit.position
                )));
            }
            next += 1;
            let previous = heads.advance(&record)?;
            if record.commit.position <= held_last {
                continue;
            }
            let headers = headers(&record);
            let subject = target.subject(&record.aggregate_type, record.aggregate_id);
            let publish = PublishMessage::build()
                .payload(record.commit.bytes)
                .headers(headers)
                .message_id(record.commit_id.to_string())
                .expected_last_subject_sequence(previous)
                // Refused unless it lands right after the commit before it: a publish lost
                // in flight cannot let the next one take its position.
                .expected_last_sequence(record.commit.position - 1);
            let ack = target
                .context()
                .send_publish(subject, publish)
                .await
                .map_err(|e| LogError::Unavailable(format!("publish: {e}")))?;
            acks.push_back((record.commit.position, ack));
            while acks.len() >= IN_FLIGHT {
                settle(&mut acks, &mut report).await?;
            }
        }
        info!(copied_through = next - 1, last, "copying the event log");
    }
    while !acks.is_empty() {
        settle(&mut acks, &mut report).await?;
    }
    let (_, source_now) = source.state().await?;
    if source_now != last {
        return Err(LogError::Internal(format!(
            "the embedded log grew from {last} to {source_now} commits during the copy: stop \
             the embedded semsd and run the copy again (it resumes)"
        )));
    }
    let (_, now_last) = target.state().await?;
    if now_last != last {
        return Err(LogError::Internal(format!(
            "after the copy the stream ends at {now_last}, the embedded log at {last}"
        )));
    }
    Ok(report)
}

async fn settle(
    acks: &mut VecDeque<(u64, async_nats::jetstream::context::PublishAckFuture)>,
    report: &mut CopyReport,
) -> Result<(), LogError> {
    let Some((position, ack)) = acks.pop_front() else {
        return Ok(());
    };
    let ack = ack.await.map_err(|e| {
        LogError::Unavailable(format!(
            "publish of position {position} not acknowledged: {e}; run the copy again to resume"
        ))
    })?;
    if ack.duplicate || ack.sequence != position {
        return Err(LogError::Internal(format!(
            "the commit at position {position} landed at stream sequence {}{}: another writer \
             is using the stream",
            ack.sequence,
            if ack.duplicate { " as a duplicate" } else { "" }
        )));
    }
    report.copied += 1;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sems_app::StoredCommit;

    use super::*;

    fn record(position: u64, aggregate_id: Uuid, prev_hash: &str) -> CommitRecord {
        let commit_id = Uuid::from_u128(u128::from(position));
        let bytes = serde_json::json!({
            "commit_id": commit_id,
            "aggregate_type": "incident",
            "aggregate_id": aggregate_id,
            "aggregate_version": position,
            "recorded_at": "2026-11-27T12:00:00Z",
            "actor": "ana",
            "correlation_id": commit_id,
            "causation_id": null,
            "trace_context": null,
            "prev_hash": prev_hash,
            "events": [],
        })
        .to_string()
        .into_bytes();
        CommitRecord {
            commit: StoredCommit {
                position,
                bytes: bytes.into(),
            },
            commit_id,
            aggregate_type: "incident".into(),
            aggregate_id,
            event_types: String::new(),
            correlation_id: commit_id,
            traceparent: None,
            tracestate: None,
        }
    }

    #[test]
    fn the_copy_follows_each_chain_and_stops_where_one_breaks() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut heads = Heads::default();
        let first = record(1, a, GENESIS_HASH);
        assert_eq!(heads.advance(&first).unwrap(), 0);
        assert_eq!(heads.advance(&record(2, b, GENESIS_HASH)).unwrap(), 0);
        let second = record(3, a, &sha256_hex(&first.commit.bytes));
        assert_eq!(heads.advance(&second).unwrap(), 1);
        let forged = record(4, a, &sha256_hex(&first.commit.bytes));
        let err = heads.advance(&forged).unwrap_err();
        assert!(err.to_string().contains("position 4"), "{err}");
    }
}
