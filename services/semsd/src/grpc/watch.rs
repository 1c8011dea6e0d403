//! Live timelines: one follower per watched crisis reads each new batch of entries once, as
//! the projector applies it, and broadcasts it to every watcher of that crisis. A watcher
//! subscribes first, then reads the history itself; what it sends is always the entries after
//! the last one it sent, so the history and the live entries meet with no gap and no
//! duplicate. A watcher that falls behind the broadcast reads what it missed from the read
//! model.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sems_app::AppError;
use sems_readmodel::{CmcReadModel, TimelineQuery, cmc::TimelineEntry};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;
use tracing::warn;
use uuid::Uuid;

use super::{cmc::entry_view, status};

/// Entries read per query.
const BATCH: u32 = 500;
/// Batches a slow watcher may fall behind before it reads them back itself.
const BACKLOG: usize = 256;

type Batch = Arc<Vec<TimelineEntry>>;

/// The followers of watched crises.
pub struct TimelineHub {
    reads: Arc<dyn CmcReadModel>,
    followers: Mutex<HashMap<Uuid, broadcast::Sender<Batch>>>,
}

impl TimelineHub {
    /// A hub over a read model.
    pub fn new(reads: Arc<dyn CmcReadModel>) -> Arc<Self> {
        Arc::new(Self {
            reads,
            followers: Mutex::default(),
        })
    }

    fn followers(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, broadcast::Sender<Batch>>> {
        self.followers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes to the new entries of a crisis: every entry above the read model's position
    /// at some moment before this call returns is broadcast.
    async fn subscribe(
        self: &Arc<Self>,
        crisis_id: Uuid,
        stopping: watch::Receiver<bool>,
    ) -> Result<broadcast::Receiver<Batch>, AppError> {
        if let Some(tx) = self.followers().get(&crisis_id) {
            return Ok(tx.subscribe());
        }
        let from = self.reads.position().await?;
        let mut followers = self.followers();
        if let Some(tx) = followers.get(&crisis_id) {
            return Ok(tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        followers.insert(crisis_id, tx.clone());
        drop(followers);
        let hub = self.clone();
        tokio::spawn(async move { hub.follow(crisis_id, from, tx, stopping).await });
        Ok(rx)
    }

    /// Reads each new batch of a crisis's entries once and broadcasts it, until nobody
    /// watches.
    async fn follow(
        self: Arc<Self>,
        crisis_id: Uuid,
        from: u64,
        tx: broadcast::Sender<Batch>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut after = (i64::try_from(from).unwrap_or(i64::MAX), i32::MAX);
        loop {
            {
                let mut followers = self.followers();
                if tx.receiver_count() == 0 || *stopping.borrow() {
                    followers.remove(&crisis_id);
                    return;
                }
            }
            let seen = match self.reads.position().await {
                Ok(p) => p,
                Err(e) => {
                    warn!(%crisis_id, error = %e, "timeline follower cannot read the position");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let entries = self
                .reads
                .timeline(&TimelineQuery {
                    crisis_id,
                    after: Some(after),
                    limit: BATCH,
                    ..TimelineQuery::default()
                })
                .await;
            let entries = match entries {
                Ok(e) => e,
                Err(e) => {
                    warn!(%crisis_id, error = %e, "timeline follower cannot read the timeline");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let full = entries.len() == BATCH as usize;
            if let Some(last) = entries.last() {
                after = (last.position, last.seq);
                let _ = tx.send(Arc::new(entries));
            }
            if full {
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            tokio::select! {
                _ = self.reads.wait_beyond(seen, deadline) => {}
                () = async { let _ = stopping.wait_for(|s| *s).await; } => {}
            }
        }
    }
}

/// One watcher: sends the entries of `crisis_id` (of `kinds`, all when empty) after `after`,
/// then each new one, into `out`, until the watcher leaves or the server stops.
pub async fn run(
    hub: Arc<TimelineHub>,
    crisis_id: Uuid,
    kinds: Vec<String>,
    mut after: (i64, i32),
    mut stopping: watch::Receiver<bool>,
    out: mpsc::Sender<Result<sems_proto::v1::TimelineEntry, Status>>,
) {
    let fail = async |out: &mpsc::Sender<_>, e: Status| {
        let _ = out.send(Err(e)).await;
    };
    let mut live = match hub.subscribe(crisis_id, stopping.clone()).await {
        Ok(rx) => rx,
        Err(e) => return fail(&out, status(e)).await,
    };
    let wanted = |e: &TimelineEntry| kinds.is_empty() || kinds.contains(&e.kind);
    // Reads what the read model has after the last entry sent.
    let catch_up = async |after: &mut (i64, i32)| -> Result<bool, Status> {
        loop {
            let entries = hub
                .reads
                .timeline(&TimelineQuery {
                    crisis_id,
                    kinds: kinds.clone(),
                    after: Some(*after),
                    limit: BATCH,
                    ..TimelineQuery::default()
                })
                .await
                .map_err(status)?;
            for e in &entries {
                if out.send(Ok(entry_view(e))).await.is_err() {
                    return Ok(false);
                }
                *after = (e.position, e.seq);
            }
            if entries.len() < BATCH as usize {
                return Ok(true);
            }
        }
    };
    match catch_up(&mut after).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => return fail(&out, e).await,
    }
    loop {
        tokio::select! {
            batch = live.recv() => match batch {
                Ok(batch) => {
                    for e in batch.iter() {
                        if (e.position, e.seq) > after && wanted(e) {
                            if out.send(Ok(entry_view(e))).await.is_err() {
                                return;
                            }
                            after = (e.position, e.seq);
                        } else if (e.position, e.seq) > after {
                            after = (e.position, e.seq);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => match catch_up(&mut after).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => return fail(&out, e).await,
                },
                Err(broadcast::error::RecvError::Closed) => {
                    return fail(&out, Status::unavailable(
                        "the server is stopping; resume from the last entry received",
                    )).await;
                }
            },
            () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                return fail(&out, Status::unavailable(
                    "the server is stopping; resume from the last entry received",
                )).await;
            }
            () = out.closed() => return,
        }
    }
}
