//! Event-log adapters. [`JetStreamLog`] implements the `sems-app` [`EventLog`] port on one
//! NATS JetStream stream exactly as `DESIGN.md`'s event-log contract says: the stream is
//! created or checked at start-up, one subject per aggregate, one message per commit,
//! `Nats-Expected-Last-Subject-Sequence` concurrency, `Nats-Msg-Id` idempotency, the envelope
//! stored byte for byte. [`JetStreamFeed`] implements the [`CommitFeed`] port projectors read.
//!
//! Depends on `sems-app` (ports, envelope) and async-nats; never on the domain's rules.

mod feed;
mod jetstream;

pub use feed::JetStreamFeed;
pub use jetstream::{JetStreamConfig, JetStreamLog};
pub use sems_app::{CommitFeed, EventLog, FedCommit};
