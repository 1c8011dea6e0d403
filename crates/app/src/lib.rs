//! Command handling: load an aggregate (from cache or the log), decide with the pure domain,
//! append one commit with optimistic concurrency, retry a bounded number of times. Also the
//! ports the adapters implement (the event log, the clock) and the commit envelope with its
//! per-aggregate hash chain, which every event-log adapter stores byte for byte.
//!
//! Depends on `sems-domain` only; never on NATS, SQL, gRPC or OpenTelemetry.

mod cache;
pub mod chunks;
mod envelope;
mod error;
mod handler;
mod handshake;
pub mod keyspace;
mod ports;
mod service;

pub use envelope::{
    Envelope, EnvelopeEvent, GENESIS_HASH, NewEvent, TraceContext, decode_events, sha256_hex,
    verify_chain,
};
pub use error::AppError;
pub use handler::{CommandHandler, CommandMeta, Committed, HandlerConfig};
pub use handshake::{EscalationOutcome, HandoverOutcome, crisis_id_for};
pub use ports::{
    AppendOutcome, AppendTap, Clock, CommitFeed, EventLog, FedCommit, LogError, OfferedCommit,
    PendingCommit, StoredCommit, SystemClock,
};
pub use service::{
    IncidentOpening, IngestOutcome, Sems, SourceSignal, SourceUpdateOutcome, alert_id_for,
};

/// A UUID's hyphenated lower-case text (as `to_string` gives it), written straight into a
/// buffer of its size: ids are turned into text several times for every alert ingested, and
/// `to_string` goes through the formatting machinery each time.
pub fn uuid_text(id: uuid::Uuid) -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text).to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_text_is_to_string() {
        for id in [
            uuid::Uuid::nil(),
            uuid::Uuid::max(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::new_v4(),
        ] {
            assert_eq!(super::uuid_text(id), id.to_string());
        }
    }
}
