//! Load → decide → append, with optimistic concurrency and a bounded retry.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sems_domain::{Aggregate, Context, DomainError, DomainEvent};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::{
    AppError, AppendTap, Clock, Envelope, EventLog, GENESIS_HASH, LogError, NewEvent,
    OfferedCommit, PendingCommit, StoredCommit, TraceContext, cache::Generations, decode_events,
    sha256_hex,
};

/// Namespace of commit ids derived from client request ids.
const COMMIT_NS: Uuid = Uuid::from_u128(0x5e35_c0de_0000_4000_8000_0000_0000_0001);
/// Commit ids remembered per aggregate for idempotency beyond the log's duplicate window.
const REMEMBERED_COMMITS: usize = 256;

/// Tuning of the handler.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// The principal recorded as actor (from server configuration until authentication
    /// lands; never from a request field).
    pub actor: String,
    /// Attempts after the first on a concurrency conflict before answering `ABORTED`.
    pub max_retries: u32,
    /// Aggregates kept in memory at most (at least 2; in two generations of half as many:
    /// one not used for a generation is read from the log again when next needed).
    pub cache_capacity: usize,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            actor: "semsd".into(),
            max_retries: 8,
            cache_capacity: 100_000,
        }
    }
}

/// Everything about a command that is not the command itself.
#[derive(Debug, Clone, Default)]
pub struct CommandMeta {
    /// The authenticated principal making the call; the configured actor when absent.
    pub actor: Option<String>,
    /// Client request id: a retry with the same id appends nothing.
    pub request_id: Option<String>,
    /// Overrides the commit id (for commits a command causes on other aggregates).
    pub commit_id: Option<Uuid>,
    /// World time, when the caller gives it.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Why a late entry is late.
    pub late_reason: Option<String>,
    /// Correlation id; a new one when absent.
    pub correlation_id: Option<Uuid>,
    /// What caused this command.
    pub causation_id: Option<Uuid>,
    /// W3C trace context of the call.
    pub trace_context: Option<TraceContext>,
    /// On a cache miss, decide against an empty aggregate first instead of reading the log
    /// (right for commands that usually create it; a wrong guess costs one conflict retry).
    pub assume_new: bool,
}

/// The result of a command that took effect (or had already taken effect).
#[derive(Debug, Clone)]
pub struct Committed<A: Aggregate> {
    /// The aggregate's id.
    pub aggregate_id: Uuid,
    /// The aggregate after the commit.
    pub state: A,
    /// Its version (number of events) after the commit.
    pub version: u64,
    /// The commit's position in the log.
    pub position: u64,
    /// The commit's id.
    pub commit_id: Uuid,
    /// The request id had been seen: nothing new was appended.
    pub replayed: bool,
    /// The events of the commit; none when the command changed nothing (then nothing was
    /// appended and `position` is the aggregate's last commit).
    pub events: Vec<A::Event>,
}

/// An aggregate as loaded: state, version, position and hash of its last commit.
#[derive(Debug, Clone)]
struct Loaded<A> {
    state: A,
    version: u64,
    last_position: u64,
    last_hash: String,
    recent_commits: VecDeque<(Uuid, u64)>,
}

impl<A: Aggregate> Loaded<A> {
    fn empty() -> Self {
        Self {
            state: A::default(),
            version: 0,
            last_position: 0,
            last_hash: GENESIS_HASH.to_owned(),
            recent_commits: VecDeque::new(),
        }
    }

    fn remember(&mut self, commit_id: Uuid, position: u64) {
        if self.recent_commits.len() == REMEMBERED_COMMITS {
            self.recent_commits.pop_front();
        }
        self.recent_commits.push_back((commit_id, position));
    }

    fn position_of(&self, commit_id: Uuid) -> Option<u64> {
        self.recent_commits
            .iter()
            .find(|(id, _)| *id == commit_id)
            .map(|(_, p)| *p)
    }
}

type CacheKey = (&'static str, Uuid);

/// Executes commands against any aggregate type over one event log.
pub struct CommandHandler {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    config: HandlerConfig,
    cache: Mutex<Generations<CacheKey>>,
    tap: Option<Arc<dyn AppendTap>>,
}

impl CommandHandler {
    /// A handler over `log`.
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>, config: HandlerConfig) -> Self {
        // Sized for the capacity at once: grown from empty, a map is rehashed some 17 times
        // on its way to 100,000 aggregates, under the lock every command takes.
        let cache = Generations::new(config.cache_capacity);
        Self {
            log,
            clock,
            config,
            cache: Mutex::new(cache),
            tap: None,
        }
    }

    /// This handler, showing every commit it appends to `tap`.
    pub fn with_tap(mut self, tap: Arc<dyn AppendTap>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// The recorded actor.
    pub fn actor(&self) -> &str {
        &self.config.actor
    }

    /// The server clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The actor of a call: its authenticated principal, or the configured actor.
    pub fn actor_of<'a>(&'a self, meta: &'a CommandMeta) -> &'a str {
        meta.actor.as_deref().unwrap_or(&self.config.actor)
    }

    /// The commit id a request id maps to for one aggregate: the same request id retried by
    /// the same actor against the same aggregate always gives the same commit id.
    pub fn commit_id_for(
        &self,
        actor: &str,
        request_id: &str,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Uuid {
        let name = format!("{actor}\n{request_id}\n{aggregate_type}\n{aggregate_id}");
        Uuid::new_v5(&COMMIT_NS, name.as_bytes())
    }

    /// The current state of an aggregate (cached, or read from the log).
    pub async fn load<A: Aggregate>(&self, id: Uuid) -> Result<(A, u64), AppError> {
        let loaded = match self.cached::<A>(id) {
            Some(l) => l,
            None => self.read::<A>(id).await?,
        };
        Ok((loaded.state.clone(), loaded.version))
    }

    /// The current state of an aggregate read from the log, bypassing the cache (for checks
    /// whose refusal must not rest on a stale copy).
    pub async fn load_fresh<A: Aggregate>(&self, id: Uuid) -> Result<(A, u64), AppError> {
        let loaded = self.read::<A>(id).await?;
        Ok((loaded.state.clone(), loaded.version))
    }

    /// The position of the log's last acknowledged commit (0 when it is empty).
    pub async fn last_position(&self) -> Result<u64, AppError> {
        Ok(self.log.last_position().await?)
    }

    /// The position of commit `commit_id` of aggregate `id`, when it is one of the
    /// aggregate's recent commits.
    pub async fn commit_position<A: Aggregate>(
        &self,
        id: Uuid,
        commit_id: Uuid,
    ) -> Result<Option<u64>, AppError> {
        let loaded = match self.cached::<A>(id) {
            Some(l) => l,
            None => self.read::<A>(id).await?,
        };
        Ok(loaded.position_of(commit_id))
    }

    /// Runs `command` against aggregate `id`: decide, append with optimistic concurrency,
    /// retry on conflict up to the configured bound.
    pub async fn execute<A: Aggregate>(
        &self,
        id: Uuid,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A>, AppError> {
        let now = self.clock.now();
        let ctx = Context {
            actor: self.actor_of(meta).to_owned(),
            now,
            occurred_at: meta.occurred_at.unwrap_or(now),
            late_reason: meta.late_reason.clone(),
        };
        let commit_id = match (&meta.commit_id, &meta.request_id) {
            (Some(c), _) => *c,
            (None, Some(r)) => self.commit_id_for(self.actor_of(meta), r, A::TYPE, id),
            (None, None) => Uuid::now_v7(),
        };
        let mut fresh = false;
        // The copy whose append the log last refused.
        let mut refused: Option<Arc<Loaded<A>>> = None;
        for attempt in 0..=self.config.max_retries {
            let loaded = match (fresh, self.cached::<A>(id)) {
                (false, Some(l)) => l,
                (false, None) if meta.assume_new => Arc::new(Loaded::empty()),
                (_, cached) => {
                    fresh = true;
                    // What the log says: the cached copy (a prefix of the log) caught up with
                    // the commits after it, never the whole history again.
                    match cached {
                        Some(c) => {
                            let caught = self.catch_up::<A>(id, c).await?;
                            if refused.as_ref().is_some_and(|r| Arc::ptr_eq(&caught, r)) {
                                // The log refused this very copy's last position, yet holds
                                // nothing after it: the copy is ahead of the log (a log that
                                // lost its tail). Only the log is trusted. (A race lost to a
                                // command of this process leaves the winner's copy cached:
                                // another copy, caught up without a read.)
                                warn!(aggregate = A::TYPE, %id, position = caught.last_position, "cached aggregate is ahead of the log; reading it again");
                                self.forget::<A>(id);
                                self.read::<A>(id).await?
                            } else {
                                caught
                            }
                        }
                        None => self.read::<A>(id).await?,
                    }
                }
            };
            if let Some(position) = loaded.position_of(commit_id) {
                return self.replay::<A>(id, commit_id, position).await;
            }
            let events = match loaded.state.decide(command, &ctx) {
                Ok(events) => events,
                // A cached or assumed state may be stale: refuse only on what the log says.
                Err(DomainError::NotFound(_) | DomainError::Precondition(_)) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if events.is_empty() {
                // Nothing to record (e.g. a source repeating a resolve). Decide it on what the
                // log says, not on a cache, before answering that nothing changed.
                if !fresh {
                    fresh = true;
                    continue;
                }
                return Ok(Committed {
                    aggregate_id: id,
                    state: loaded.state.clone(),
                    version: loaded.version,
                    position: loaded.last_position,
                    commit_id,
                    replayed: false,
                    events,
                });
            }
            let envelope = Envelope {
                commit_id,
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: id,
                aggregate_version: loaded.version + events.len() as u64,
                recorded_at: now,
                actor: ctx.actor.clone(),
                correlation_id: meta.correlation_id.unwrap_or(commit_id),
                causation_id: meta.causation_id,
                trace_context: meta.trace_context.clone(),
                prev_hash: loaded.last_hash.clone(),
                events: Vec::new(),
            };
            let new_events = events
                .iter()
                .map(|e| NewEvent::new(e, ctx.occurred_at, ctx.late_reason.clone()))
                .collect::<Result<Vec<_>, DomainError>>()?;
            let bytes = bytes::Bytes::from(envelope.encode_new(&new_events)?);
            let hash = sha256_hex(&bytes);
            let (version, correlation_id) = (envelope.aggregate_version, envelope.correlation_id);
            // Offered before the append: the log may deliver the commit to the projector
            // before its answer reaches this task. Settled when the append is over, however
            // it ends (the guard's drop).
            let mut offer = self
                .tap
                .as_deref()
                .filter(|t| t.accepting())
                .map(|tap| offer(tap, &bytes, envelope, &new_events, &events));
            let pending = PendingCommit {
                aggregate_type: A::TYPE,
                aggregate_id: id,
                commit_id,
                expected_last_position: loaded.last_position,
                bytes,
                event_types: events.iter().map(DomainEvent::event_type).collect(),
                trace_context: meta.trace_context.clone(),
                correlation_id,
            };
            match self.log.append(pending).await {
                Ok(outcome) if outcome.duplicate => {
                    drop(offer);
                    self.forget::<A>(id);
                    return self.replay::<A>(id, commit_id, outcome.position).await;
                }
                Ok(outcome) => {
                    let mut next = (*loaded).clone();
                    for e in &events {
                        next.state.evolve(e);
                    }
                    next.version = version;
                    next.last_position = outcome.position;
                    next.last_hash = hash;
                    next.remember(commit_id, outcome.position);
                    let state = next.state.clone();
                    self.store(id, next);
                    if let Some(offer) = &mut offer {
                        offer.position = Some(outcome.position);
                    }
                    drop(offer);
                    return Ok(Committed {
                        aggregate_id: id,
                        state,
                        version,
                        position: outcome.position,
                        commit_id,
                        replayed: false,
                        events,
                    });
                }
                Err(LogError::Conflict) => {
                    drop(offer);
                    debug!(aggregate = A::TYPE, %id, attempt, "append conflict");
                    // The cached copy is still a prefix of the log: the next attempt catches
                    // it up with the commits that won.
                    fresh = true;
                    refused = Some(loaded.clone());
                    if attempt > 0 {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        warn!(aggregate = A::TYPE, %id, retries = self.config.max_retries, "append conflict retries exhausted");
        Err(AppError::Aborted(format!("{} {id}", A::TYPE)))
    }

    /// The answer to a command whose commit already exists.
    async fn replay<A: Aggregate>(
        &self,
        id: Uuid,
        commit_id: Uuid,
        position: u64,
    ) -> Result<Committed<A>, AppError> {
        let stored = self.log.read_at(position).await?;
        let envelope = Envelope::decode(&stored.bytes)?;
        if envelope.commit_id != commit_id || envelope.aggregate_id != id {
            return Err(AppError::Internal(format!(
                "commit at position {position} is not commit {commit_id}"
            )));
        }
        let events = decode_events::<A::Event>(&envelope)?;
        let current = match self.cached::<A>(id) {
            Some(l) => l,
            None => self.read::<A>(id).await?,
        };
        Ok(Committed {
            aggregate_id: id,
            state: current.state.clone(),
            version: envelope.aggregate_version,
            position,
            commit_id,
            replayed: true,
            events,
        })
    }

    /// Reads an aggregate's whole history from the log, checking its hash chain.
    async fn read<A: Aggregate>(&self, id: Uuid) -> Result<Arc<Loaded<A>>, AppError> {
        let commits = self.log.read_aggregate(A::TYPE, id).await?;
        let mut loaded = Loaded::<A>::empty();
        if let Some(position) = extend(&mut loaded, &commits)? {
            return Err(LogError::Corrupt(format!(
                "{} {id}: hash chain broken at position {position}",
                A::TYPE
            ))
            .into());
        }
        let loaded = Arc::new(loaded);
        if !commits.is_empty() {
            self.insert(id, loaded.clone());
        }
        Ok(loaded)
    }

    /// A cached copy of an aggregate with the commits appended after it, checking that they
    /// continue its hash chain (else the whole history is read again).
    async fn catch_up<A: Aggregate>(
        &self,
        id: Uuid,
        from: Arc<Loaded<A>>,
    ) -> Result<Arc<Loaded<A>>, AppError> {
        let commits = self
            .log
            .read_aggregate_after(A::TYPE, id, from.last_position)
            .await?;
        if commits.is_empty() {
            return Ok(from);
        }
        let mut loaded = (*from).clone();
        if extend(&mut loaded, &commits)?.is_some() {
            // The copy is not a prefix of the log (it cannot happen; if it does, trust only
            // the log).
            self.forget::<A>(id);
            return self.read::<A>(id).await;
        }
        let loaded = Arc::new(loaded);
        self.insert(id, loaded.clone());
        Ok(loaded)
    }

    /// Aggregates held in memory now (at most `HandlerConfig::cache_capacity`, or 2 when
    /// that is less).
    pub fn cached_aggregates(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    fn cached<A: Aggregate>(&self, id: Uuid) -> Option<Arc<Loaded<A>>> {
        let (found, retired) = self.cache.lock().ok()?.get(&(A::TYPE, id));
        let_go(retired);
        found?.downcast::<Loaded<A>>().ok()
    }

    fn store<A: Aggregate>(&self, id: Uuid, loaded: Loaded<A>) {
        self.insert(id, Arc::new(loaded));
    }

    fn insert<A: Aggregate>(&self, id: Uuid, loaded: Arc<Loaded<A>>) {
        // A retired generation is dropped after the lock is released: freeing half the
        // cache takes milliseconds, and every command waits for this lock.
        let retired = match self.cache.lock() {
            Ok(mut cache) => {
                // Never replace a newer copy (written by a concurrent command) with an older
                // one.
                let newer = cache
                    .peek(&(A::TYPE, id))
                    .and_then(|v| v.downcast_ref::<Loaded<A>>())
                    .is_some_and(|c| c.last_position > loaded.last_position);
                if newer {
                    return;
                }
                cache.insert((A::TYPE, id), loaded)
            }
            Err(_) => None,
        };
        let_go(retired);
    }

    fn forget<A: Aggregate>(&self, id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(A::TYPE, id));
        }
    }
}

/// Frees a retired cache generation after the cache's lock is released, on tokio's blocking
/// pool when there is one: up to half the cache (50,000 aggregates by default) takes
/// milliseconds to free, which would stall every task queued behind it on this worker.
fn let_go<T: Send + 'static>(retired: Option<T>) {
    let Some(retired) = retired else { return };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(retired))),
        Err(_) => drop(retired),
    }
}

/// Applies `commits` (the aggregate's next ones, in order) to `loaded`; stops at the first
/// that does not continue its hash chain and returns that commit's position.
fn extend<A: Aggregate>(
    loaded: &mut Loaded<A>,
    commits: &[StoredCommit],
) -> Result<Option<u64>, AppError> {
    for c in commits {
        let envelope = Envelope::decode(&c.bytes)?;
        if envelope.prev_hash != loaded.last_hash {
            return Ok(Some(c.position));
        }
        for e in decode_events::<A::Event>(&envelope)? {
            loaded.state.evolve(&e);
        }
        loaded.version = envelope.aggregate_version;
        loaded.last_position = c.position;
        loaded.last_hash = sha256_hex(&c.bytes);
        loaded.remember(envelope.commit_id, c.position);
    }
    Ok(None)
}

/// Offers a commit about to be appended to `tap`, with the envelope as decoding `bytes`
/// gives it; the guard settles it when dropped.
fn offer<'t, E: Send + Sync + 'static>(
    tap: &'t dyn AppendTap,
    bytes: &bytes::Bytes,
    head: Envelope,
    new_events: &[NewEvent],
    events: &Vec<E>,
) -> Offer<'t> {
    let decoded = new_events.iter().map(NewEvent::to_envelope_event).collect();
    tap.offered(OfferedCommit {
        commit_id: head.commit_id,
        bytes: bytes.clone(),
        envelope: Envelope {
            events: decoded,
            ..head
        },
        events,
    });
    Offer {
        tap,
        commit_id: head.commit_id,
        position: None,
    }
}

/// An offered commit, settled with its position (if the log stored it) when dropped.
struct Offer<'t> {
    tap: &'t dyn AppendTap,
    commit_id: Uuid,
    position: Option<u64>,
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        self.tap.settled(self.commit_id, self.position);
    }
}

fn backoff(attempt: u32) -> Duration {
    let jitter = (Uuid::new_v4().as_u128() % 1000) as u64;
    Duration::from_micros(u64::from(attempt.min(6)) * 500 + jitter)
}
