//! Event-log adapters. [`JetStreamLog`] implements the `sems-app` [`EventLog`] port on one
//! NATS JetStream stream exactly as `DESIGN.md`'s event-log contract says: the stream is
//! created or checked at start-up, one subject per aggregate, one message per commit,
//! `Nats-Expected-Last-Subject-Sequence` concurrency, `Nats-Msg-Id` idempotency, the envelope
//! stored byte for byte. [`JetStreamFeed`] implements the [`CommitFeed`] port projectors read.
//! [`SqliteLog`] and [`SqliteFeed`] are the same two ports on one embedded SQLite file, for a
//! single box with nothing installed; [`copy_to_jetstream`] moves a site from the second to
//! the first, byte for byte.
//!
//! Depends on `sems-app` (ports, envelope), async-nats and sqlx; never on the domain's rules.

mod feed;
mod jetstream;
mod migrate;
mod sqlite;

pub use feed::JetStreamFeed;
pub use jetstream::{JetStreamConfig, JetStreamLog};
pub use migrate::{CopyReport, copy_to_jetstream};
pub use sems_app::{CommitFeed, EventLog, FedCommit};
pub use sqlite::{CommitRecord, SqliteFeed, SqliteLog, SqliteLogConfig};
