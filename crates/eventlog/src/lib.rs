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

mod aggindex;
mod feed;
mod jetstream;
mod keyfilter;
mod migrate;
mod recent;
mod sqlite;

pub use feed::JetStreamFeed;
pub use jetstream::{JetStreamConfig, JetStreamLog};
pub use migrate::{CopyReport, copy_to_jetstream};
pub use sems_app::{CommitFeed, EventLog, FedCommit};
pub use sqlite::{CommitRecord, SqliteFeed, SqliteLog, SqliteLogConfig, WalRewinds};

/// Refuses to feed a projection whose checkpoint lies beyond the log's last position: the
/// log lost commits the read model already holds (a store restored from an older backup, a
/// NATS server that lost writes it had acknowledged — 2.9 syncs its file store once a minute —
/// or another stream under the same name). Positions would then be reused by new commits,
/// which the projection would skip as already applied; so nothing is fed until an operator
/// has found out why and rebuilt the read model.
pub(crate) fn beyond_the_end(checkpoint: u64, last: u64) -> Result<(), sems_app::LogError> {
    if checkpoint > last {
        return Err(sems_app::LogError::Corrupt(format!(
            "the read model's checkpoint is position {checkpoint}, beyond the log's last \
             position {last}: the log has lost commits the read model holds (restored from an \
             older backup, a server that lost acknowledged writes, or another stream of the \
             same name); nothing is applied until the read model is rebuilt (docs/DEPLOY.md)"
        )));
    }
    Ok(())
}
