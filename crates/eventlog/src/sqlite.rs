//! The embedded event log: one SQLite database file, written by one task that commits every
//! append waiting at that moment in one transaction (group commit), fsynced before any of
//! them is acknowledged (WAL, `synchronous = FULL`).
//!
//! The contract is the JetStream one, row for message: gapless positions from 1, one row per
//! commit holding the envelope bytes exactly, the aggregate's last position checked before
//! appending (optimistic concurrency), a commit id seen before answered with the original
//! position (idempotency, with no window), and triggers refusing any update or delete.
//!
//! The writer keeps in memory which aggregate ids and commit ids the log certainly does not
//! hold (`Known`, two Bloom filters filled from the log at open and by every commit since), so
//! an append that creates an aggregate with a new commit id — every new alert — is decided
//! without looking the log up. The log stays the arbiter: such appends are decided at
//! positions after the last one this writer saw, and SQLite numbering them otherwise (or a
//! looked-up last position that is not the one it saw, or a commit id refused) means another
//! process appended meanwhile; the writer then reads the ids that process appended and
//! decides the group again.

use std::{
    borrow::Cow,
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use opentelemetry::KeyValue;
use sems_app::{
    AppendOutcome, CommitFeed, EventLog, FedCommit, LogError, PendingCommit, StoredCommit,
    chunks::ValuesText, uuid_text,
};
use sqlx::{
    Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{Instrument, debug, debug_span, error, info, warn};
use uuid::Uuid;

use crate::{
    aggindex::{self, Merge, Sweep, Tail},
    keyfilter::KeyFilter,
    recent::{Recent, RecentCommit},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for a lock another one holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

// `rewind_wal` sets these as literals.
const _: () = assert!(BUSY_TIMEOUT.as_millis() == 5000);

/// Rows per multi-row `INSERT` (SQLite allows 32,766 bound values per statement).
const INSERT_CHUNK: usize = 500;

/// Appends looked up per statement (three bound values each).
const LOOKUP_CHUNK: usize = 300;

/// Aggregate index entries per multi-row `INSERT` of a sweep (two bound values each).
const SWEEP_CHUNK: usize = 1_000;

/// The append's statement, for each chunk size. No position is given: SQLite numbers the
/// rows one after the log's last (`write_group` checks the last number it gave).
static INSERT_COMMITS: ValuesText = ValuesText::new(
    "INSERT OR FAIL INTO commits (commit_id, aggregate_type, aggregate_id, event_types, \
     correlation_id, traceparent, tracestate, bytes)",
    8,
    "",
);

/// A sweep's statement, for each chunk size.
static INSERT_INDEX_ENTRIES: ValuesText = ValuesText::new(
    "INSERT OR IGNORE INTO aggregate_index (aggregate_id, position)",
    2,
    "",
);

/// Largest commit accepted: nats-server's default `max_payload` (1 MiB).
pub const MAX_COMMIT_BYTES: usize = 1024 * 1024;

/// How long a projector's batch stays open for later group commits once it has its first
/// commits: a bound on the whole batch, not on the gap between two group commits (under
/// steady load a gap rule would keep a batch open until it is full).
const LINGER: Duration = Duration::from_millis(2);

/// Rows the feed reads per statement, and the envelope bytes at which it closes a batch
/// (`SqliteFeed::with_limits`; a batch exceeds them by its last commit at most): a batch of
/// thousands of commits of up to `MAX_COMMIT_BYTES` each would otherwise be held in memory
/// whole (twice, while the one before it is written).
const FEED_READ_ROWS: usize = 1_000;
const FEED_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Envelopes larger than this reach the feed in a statement of their own, after the one
/// that read their neighbours. The reader connections buffer up to `FEED_READ_ROWS` rows
/// ahead of the task that takes them, so a statement's read transaction ends as soon as
/// SQLite has stepped through it, not whenever a busy runtime next schedules the projector
/// (a reader in the WAL holds back checkpoints and the writer's rewind); inline envelopes
/// bound what that buffer can hold to 64 MiB.
const FEED_INLINE_BYTES: i64 = 64 * 1024;

/// Bytes of a remembered commit's head compared with the file's before the feed uses it
/// (an envelope's first 52 are `{"commit_id":"<uuid>",`).
const REMEMBERED_HEAD: usize = 64;

/// Where and how the embedded log lives.
#[derive(Debug, Clone)]
pub struct SqliteLogConfig {
    /// The database file (`<data dir>/events.db`).
    pub path: PathBuf,
    /// Most appends committed in one transaction.
    pub max_group: usize,
    /// Connections serving reads (aggregate loads, projectors, audits).
    pub readers: u32,
    /// How often, at most, the background connection copies the WAL into the database file
    /// while commits arrive.
    pub checkpoint_interval: Duration,
    /// Envelope bytes appended after which the WAL is rewound: the writer asks the background
    /// checkpointer to catch up, then finishes the checkpoint itself between two groups, so
    /// that its next transaction writes the WAL from its start again (without waiting for
    /// the catch-up after another quarter of this). SQLite only rewinds the WAL when a writer
    /// starts with all of it copied, which the background checkpointer alone never sees
    /// while appends keep coming: under steady load the WAL grew by ~27 MB/s here, without
    /// bound.
    pub rewind_after_bytes: usize,
    /// Ids read per statement by the scan that tells the writer which ids the log holds
    /// (each statement its own short read); 0: no scan, every append is looked up (for a log
    /// opened to be read).
    pub scan_page: u32,
    /// Commits per sweep of the aggregate index (`aggindex`): the writer holds at most about
    /// this many commits' index entries in memory, and each sweep writes every leaf page of
    /// the index that one of them falls in.
    pub index_sweep_commits: u64,
}

impl SqliteLogConfig {
    /// Defaults for a database file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_group: 1_000,
            readers: 4,
            checkpoint_interval: Duration::from_millis(100),
            rewind_after_bytes: 16 * 1024 * 1024,
            scan_page: 10_000,
            index_sweep_commits: 65_536,
        }
    }
}

/// A commit with what JetStream would keep beside it (subject and headers): what an export
/// to JetStream needs to publish it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The commit.
    pub commit: StoredCommit,
    /// Idempotency key (`Nats-Msg-Id`).
    pub commit_id: Uuid,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: Uuid,
    /// Comma-separated event types.
    pub event_types: String,
    /// Correlation id.
    pub correlation_id: Uuid,
    /// `traceparent` of the producing call.
    pub traceparent: Option<String>,
    /// `tracestate` of the producing call.
    pub tracestate: Option<String>,
}

struct Request {
    commit: PendingCommit,
    reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

struct Inner {
    path: PathBuf,
    readers: SqlitePool,
    appends: mpsc::Sender<Request>,
    last: watch::Sender<u64>,
    groups: AtomicU64,
    /// Appends decided without a lookup (certainly new aggregate and commit id).
    without_lookup: AtomicU64,
    /// Commits another process appended that the writer read.
    learned: AtomicU64,
    /// Groups decided a second time because the log contradicted what the writer knew.
    decided_again: AtomicU64,
    /// The writer knows every id in the log (its start-up scan is done).
    knows_ids: AtomicBool,
    /// The writer is rewinding the WAL: the background checkpointer stands aside, since
    /// SQLite lets one checkpoint run at a time and refuses the other at once.
    rewinding: AtomicBool,
    /// The writer asks the background checkpointer to copy the WAL now, ahead of a rewind
    /// (a permit is kept when it is busy). Apart from `Inner` so the checkpointer can wait
    /// on it without keeping the log alive.
    hurry: Arc<Notify>,
    /// The number of the last catch-up the writer asked for, and of the last one a
    /// finished catch-up covered (it started after the ask).
    asked: AtomicU64,
    caught_up: AtomicU64,
    /// WAL rewinds the writer made, and those that happened without waiting for the
    /// background checkpointer to catch up first (past the hard bound).
    rewinds: AtomicU64,
    forced_rewinds: AtomicU64,
    /// Microseconds the writer spent in its rewinds (appends queue meanwhile).
    rewind_micros: AtomicU64,
    /// Commits above their range's aggregate-index watermark (`aggindex`).
    tail: Arc<std::sync::Mutex<Tail>>,
    /// The commits this process's writer stored last, for the feed (`recent`).
    recent: Arc<std::sync::Mutex<Recent>>,
}

/// The writer's WAL rewinds so far (`SqliteLog::wal_rewinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalRewinds {
    /// Rewinds that happened.
    pub rewinds: u64,
    /// Of those, rewinds made past the hard bound, without waiting for the background
    /// checkpointer to catch up first.
    pub without_catch_up: u64,
    /// Time the writer spent in rewinds and attempts, appends queueing meanwhile.
    pub writer_stalled: Duration,
}

/// The event log in one SQLite file. Clones share the writer task.
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

fn sqlite_error(context: &str) -> impl FnOnce(sqlx::Error) -> LogError + '_ {
    move |e| match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            LogError::Unavailable(format!("{context}: {e}"))
        }
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN (primary codes).
        sqlx::Error::Database(db)
            if db.code().is_some_and(|c| {
                let primary = c.parse::<i32>().unwrap_or(0) & 0xff;
                matches!(primary, 5 | 6 | 10 | 13 | 14)
            }) =>
        {
            LogError::Unavailable(format!("{context}: {e}"))
        }
        _ => LogError::Internal(format!("{context}: {e}")),
    }
}

fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
}

impl SqliteLog {
    /// Opens (creating when missing) the log at `config.path`, migrates it, checks that
    /// SQLite runs it as asked (WAL, `synchronous = FULL`), and starts the writer task.
    pub async fn open(config: SqliteLogConfig) -> Result<Self, LogError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                LogError::Unavailable(format!("create data directory {}: {e}", dir.display()))
            })?;
        }
        let options = connect_options(&config.path);
        // Migrations run through the pool: `Migrator::run` on a `&mut SqliteConnection`
        // makes the caller's future not `Send`.
        let readers = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .connect_with(options.clone().row_buffer_size(FEED_READ_ROWS))
            .await
            .map_err(sqlite_error("open the event log"))?;
        MIGRATOR
            .run(&readers)
            .await
            .map_err(|e| LogError::Internal(format!("migrate the event log: {e}")))?;
        // The writer keeps a 16 MiB page cache (a group's index pages stay in memory instead
        // of spilling mid-transaction), temporary files in memory, and leaves WAL checkpoints
        // to a background task, so a group commit waits for its own WAL fsync only; once
        // every `rewind_after_bytes` it finishes a checkpoint itself (`Rewind`).
        let writer_options = options
            .clone()
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", "0");
        let mut writer = SqliteConnection::connect_with(&writer_options)
            .await
            .map_err(sqlite_error("open the event log writer"))?;
        let checkpointer = SqliteConnection::connect_with(&options)
            .await
            .map_err(sqlite_error("open the event log checkpointer"))?;
        check_pragmas(&mut writer).await?;
        let last = last_with_index_cut(&mut writer).await?;
        let tail = read_tail(&mut writer, last).await?;
        // The sweep goes on from the range furthest behind.
        let behind = (0..aggindex::PREFIXES)
            .min_by_key(|&p| tail.merged_at(p))
            .unwrap_or(0);
        let sweep = Sweep::new(behind, config.index_sweep_commits);
        let mut known = Known::new(last, None);
        for id in tail.ids() {
            known.aggregates.insert(id);
        }
        let tail = Arc::new(std::sync::Mutex::new(tail));
        let recent = Arc::new(std::sync::Mutex::new(Recent::default()));
        let (appends, requests) = mpsc::channel(config.max_group.max(1) * 4);
        let (last, _) = watch::channel(last);
        let inner = Arc::new(Inner {
            path: config.path.clone(),
            readers,
            appends,
            last,
            groups: AtomicU64::new(0),
            without_lookup: AtomicU64::new(0),
            learned: AtomicU64::new(0),
            decided_again: AtomicU64::new(0),
            knows_ids: AtomicBool::new(false),
            rewinding: AtomicBool::new(false),
            hurry: Arc::new(Notify::new()),
            asked: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            rewinds: AtomicU64::new(0),
            forced_rewinds: AtomicU64::new(0),
            rewind_micros: AtomicU64::new(0),
            tail: Arc::clone(&tail),
            recent: Arc::clone(&recent),
        });
        // The scan starts after the last position was read, so it sees at least every
        // commit up to it; the writer records every commit after it (its own, and any other
        // process's that it finds).
        let scan = (config.scan_page > 0).then(|| {
            let (scanned, scan) = oneshot::channel();
            tokio::spawn(scan_ids(inner.readers.clone(), config.scan_page, scanned));
            scan
        });
        known.scan = scan;
        run_on_own_thread(
            "sems-log-writer",
            write_loop(
                writer,
                writer_options,
                requests,
                Arc::downgrade(&inner),
                Writer {
                    known,
                    tail,
                    recent,
                    sweep,
                    type_names: TypeNames::default(),
                },
                config.max_group.max(1),
                config.rewind_after_bytes,
            ),
        );
        // Its own thread too: the writer asks it to catch up and waits for it (up to a bound)
        // before rewinding the WAL itself.
        run_on_own_thread(
            "sems-log-checkpointer",
            checkpoint_loop(
                checkpointer,
                Arc::downgrade(&inner),
                Arc::clone(&inner.hurry),
                config.checkpoint_interval,
            ),
        );
        info!(path = %config.path.display(), "embedded event log open");
        Ok(Self { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Position of the last commit acknowledged by this process's writer.
    pub fn last_position(&self) -> u64 {
        *self.inner.last.borrow()
    }

    /// Group commits the writer has made (each one fsync of the WAL; groups that appended
    /// nothing are not counted).
    pub fn group_commits(&self) -> u64 {
        self.inner.groups.load(Ordering::Relaxed)
    }

    /// Appends decided without looking the log up (see the module's documentation).
    pub fn appends_without_lookup(&self) -> u64 {
        self.inner.without_lookup.load(Ordering::Relaxed)
    }

    /// Whether the writer knows every aggregate id and commit id in the log, so it can
    /// decide appends of new aggregates without a lookup: false until its start-up scan is
    /// done and taken in (by the first group after it), and always with `scan_page` 0.
    pub fn knows_ids(&self) -> bool {
        self.inner.knows_ids.load(Ordering::Relaxed)
    }

    /// Commits another process appended to the same file that this writer found and read
    /// (semsd refuses to share its data directory; the file can still be opened twice).
    pub fn commits_learned(&self) -> u64 {
        self.inner.learned.load(Ordering::Relaxed)
    }

    /// Groups the writer decided a second time, with every append looked up, because the
    /// log contradicted what it knew (another process had appended, or its memory of the
    /// log's ids was wrong).
    pub fn groups_decided_again(&self) -> u64 {
        self.inner.decided_again.load(Ordering::Relaxed)
    }

    /// Commits whose aggregate-index entries are held in memory, above their range's
    /// watermark, until a sweep moves them into the index table
    /// (`SqliteLogConfig::index_sweep_commits`).
    pub fn index_tail_len(&self) -> usize {
        lock(&self.inner.tail).len()
    }

    /// The writer's WAL rewinds so far (see `SqliteLogConfig::rewind_after_bytes`).
    pub fn wal_rewinds(&self) -> WalRewinds {
        WalRewinds {
            rewinds: self.inner.rewinds.load(Ordering::Relaxed),
            without_catch_up: self.inner.forced_rewinds.load(Ordering::Relaxed),
            writer_stalled: Duration::from_micros(self.inner.rewind_micros.load(Ordering::Relaxed)),
        }
    }

    /// Commits stored and the last position.
    pub async fn state(&self) -> Result<(u64, u64), LogError> {
        let (count, last): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(position), 0) FROM commits")
                .fetch_one(&self.inner.readers)
                .await
                .map_err(sqlite_error("read log state"))?;
        Ok((
            u64::try_from(count).unwrap_or(0),
            u64::try_from(last).unwrap_or(0),
        ))
    }

    /// Commits from position `from` on, in order, with their subject and header fields.
    pub async fn read_records(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, LogError> {
        let rows = sqlx::query(
            "SELECT position, bytes, commit_id, aggregate_type, aggregate_id, event_types, \
             correlation_id, traceparent, tracestate FROM commits WHERE position >= ? \
             ORDER BY position LIMIT ?",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.readers)
        .await
        .map_err(sqlite_error("read commits"))?;
        rows.iter()
            .map(|r| {
                let uuid = |col: &str| -> Result<Uuid, LogError> {
                    let text: String = r.try_get(col).map_err(corrupt)?;
                    Uuid::parse_str(&text)
                        .map_err(|e| LogError::Corrupt(format!("{col} {text:?}: {e}")))
                };
                Ok(CommitRecord {
                    commit: stored(r)?,
                    commit_id: uuid("commit_id")?,
                    aggregate_type: r.try_get("aggregate_type").map_err(corrupt)?,
                    aggregate_id: uuid("aggregate_id")?,
                    event_types: r.try_get("event_types").map_err(corrupt)?,
                    correlation_id: uuid("correlation_id")?,
                    traceparent: r.try_get("traceparent").map_err(corrupt)?,
                    tracestate: r.try_get("tracestate").map_err(corrupt)?,
                })
            })
            .collect()
    }
}

/// The aggregate index's tail or the recent commits, whatever a panic elsewhere left them
/// in (they are only changed whole, under the lock, without awaiting).
fn lock<T>(shared: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn corrupt(e: sqlx::Error) -> LogError {
    LogError::Corrupt(format!("read commit row: {e}"))
}

/// A nullable text column as shared text.
fn shared_text(r: &sqlx::sqlite::SqliteRow, column: &str) -> Result<Option<Arc<str>>, LogError> {
    let text: Option<&str> = r.try_get(column).map_err(corrupt)?;
    Ok(text.map(Arc::from))
}

fn stored(r: &sqlx::sqlite::SqliteRow) -> Result<StoredCommit, LogError> {
    let position: i64 = r.try_get("position").map_err(corrupt)?;
    Ok(StoredCommit {
        position: u64::try_from(position)
            .map_err(|_| LogError::Corrupt("negative position".into()))?,
        bytes: r.try_get::<Vec<u8>, _>("bytes").map_err(corrupt)?.into(),
    })
}

/// SQLite ignores nothing silently, but a pragma can still fail to take (a read-only file
/// system refuses WAL): read back what the connection runs with.
async fn check_pragmas(conn: &mut SqliteConnection) -> Result<(), LogError> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlite_error("read journal_mode"))?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlite_error("read synchronous"))?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(LogError::Internal(format!(
            "the embedded event log must run with journal_mode=wal and synchronous=FULL (2); \
             SQLite reports journal_mode={mode}, synchronous={sync}"
        )));
    }
    Ok(())
}

type ScannedIds = Result<(KeyFilter, KeyFilter), LogError>;

/// What the writer knows of the ids in the log: enough to tell, for an append that creates
/// an aggregate, that neither its aggregate id nor its commit id is there, without asking.
struct Known {
    /// Holds every aggregate id in the log (and, rarely, says so of one it does not).
    aggregates: KeyFilter,
    /// Holds every commit id in the log, likewise.
    commits: KeyFilter,
    /// Position of the last commit in the log, as this writer last saw or made it.
    last: u64,
    /// The start-up scan of the ids already in the log, until it is absorbed.
    scan: Option<oneshot::Receiver<ScannedIds>>,
    /// The filters hold every id in the log up to `last`: the scan is absorbed.
    complete: bool,
}

impl Known {
    fn new(last: u64, scan: Option<oneshot::Receiver<ScannedIds>>) -> Self {
        Self {
            aggregates: KeyFilter::default(),
            commits: KeyFilter::default(),
            last,
            scan,
            complete: false,
        }
    }

    /// Takes in the start-up scan once it is done.
    fn absorb_scan(&mut self) {
        let Some(scan) = &mut self.scan else { return };
        match scan.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {}
            Ok(Ok((aggregates, commits))) => {
                self.aggregates.absorb(aggregates);
                self.commits.absorb(commits);
                self.complete = true;
                self.scan = None;
                debug!(
                    filter_bytes = self.aggregates.bytes() + self.commits.bytes(),
                    "the event log writer knows every id in the log"
                );
            }
            Ok(Err(e)) => {
                warn!(error = %e, "could not read the event log's ids; every append is looked up");
                self.scan = None;
            }
            Err(oneshot::error::TryRecvError::Closed) => self.scan = None,
        }
    }

    /// The append creates its aggregate with a commit id the log certainly does not hold.
    fn certainly_new(&self, commit: &PendingCommit) -> bool {
        self.complete
            && commit.expected_last_position == 0
            && !self.aggregates.may_contain(commit.aggregate_id)
            && !self.commits.may_contain(commit.commit_id)
    }

    fn record(&mut self, commit: &PendingCommit) {
        self.aggregates.insert(commit.aggregate_id);
        self.commits.insert(commit.commit_id);
    }

    /// From now on every append is looked up (until a restart scans the log again).
    fn give_up(&mut self) {
        self.complete = false;
        self.scan = None;
    }

    /// Records the ids of every commit after `last` (another process's: positions are
    /// gapless and rows never change, so these are exactly the commits this writer has not
    /// seen) and moves `last` to the log's, which may also be below it. Run inside a write
    /// transaction, so that nothing can be appended between this and the decisions that
    /// follow. Returns how many commits it read. The aggregate index's tail takes them in
    /// too, with the watermarks the other process's sweeps moved.
    async fn catch_up(
        &mut self,
        conn: &mut SqliteConnection,
        tail: &std::sync::Mutex<Tail>,
    ) -> Result<u64, GroupError> {
        let log_last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM commits")
            .fetch_one(&mut *conn)
            .await
            .map_err(sqlite_error("read the log's last position"))?;
        let log_last = u64::try_from(log_last).unwrap_or(0);
        if log_last < self.last {
            // Only commits removed behind the writer's back do this (the append-only
            // triggers dropped, or an older copy of the file put in place under a running
            // semsd). Positions go on from the log's last, without a gap
            // (`forget_lost_commits`).
            return Err(GroupError::LostCommits(log_last));
        }
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT position, aggregate_type, aggregate_id, commit_id FROM commits \
             WHERE position > ?",
        )
        .bind(i64::try_from(self.last).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(sqlite_error("read the commits another process appended"))?;
        let watermarks = read_watermarks(conn).await?;
        let mut tail = lock(tail);
        if !tail.absorb_watermarks(&watermarks) {
            // Another process cut the aggregate index back: the log lost commits.
            return Err(GroupError::LostCommits(log_last));
        }
        self.last = log_last;
        for (position, aggregate_type, aggregate_id, commit_id) in &rows {
            match (Uuid::parse_str(aggregate_id), Uuid::parse_str(commit_id)) {
                (Ok(aggregate_id), Ok(commit_id)) => {
                    self.aggregates.insert(aggregate_id);
                    self.commits.insert(commit_id);
                    let position = u64::try_from(*position).unwrap_or(0);
                    tail.record(aggregate_type, aggregate_id, position);
                }
                _ => {
                    // Lookups compare the stored text, whatever it is.
                    error!(
                        aggregate_id,
                        commit_id,
                        "an id in the event log is not a UUID; every append is looked up from now on"
                    );
                    self.give_up();
                }
            }
        }
        tail.completed(log_last);
        drop(tail);
        warn!(
            commits = rows.len(),
            last_position = self.last,
            "another process appended to the event log; this writer has read what it appended"
        );
        Ok(rows.len() as u64)
    }
}

/// The aggregate index's watermarks, one per range, as the table holds them.
async fn read_watermarks(conn: &mut SqliteConnection) -> Result<Vec<u64>, LogError> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT prefix, through FROM aggregate_index_sweep ORDER BY prefix")
            .fetch_all(&mut *conn)
            .await
            .map_err(sqlite_error("read the aggregate index's watermarks"))?;
    let marks: Vec<u64> = rows
        .iter()
        .enumerate()
        .map(|(i, &(prefix, through))| match u64::try_from(through) {
            Ok(t) if prefix == i as i64 => Ok(t),
            _ => Err(LogError::Corrupt(format!(
                "aggregate index watermark {prefix} = {through}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    if marks.len() != aggindex::PREFIXES {
        return Err(LogError::Corrupt(format!(
            "the aggregate index has {} watermarks, not {}",
            marks.len(),
            aggindex::PREFIXES
        )));
    }
    Ok(marks)
}

/// Removes what the aggregate index holds beyond `last` and lowers the watermarks to it:
/// the log holds nothing after `last` (commits were removed behind the writer's back, or an
/// older copy of the file put in place), and the positions after it will be reused.
async fn cut_index(conn: &mut SqliteConnection, last: u64) -> Result<(), LogError> {
    let last = i64::try_from(last).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM aggregate_index WHERE position > ?")
        .bind(last)
        .execute(&mut *conn)
        .await
        .map_err(sqlite_error("cut the aggregate index"))?;
    sqlx::query("UPDATE aggregate_index_sweep SET through = ? WHERE through > ?")
        .bind(last)
        .bind(last)
        .execute(&mut *conn)
        .await
        .map_err(sqlite_error("lower the aggregate index's watermarks"))?;
    Ok(())
}

/// The log's last position, after cutting the aggregate index back to it when it goes
/// further (`cut_index`), in one write transaction.
async fn last_with_index_cut(conn: &mut SqliteConnection) -> Result<u64, LogError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(sqlite_error("begin"))?;
    let (last, beyond): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(position), 0) FROM commits), \
         (SELECT COALESCE(MAX(through), 0) FROM aggregate_index_sweep)",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(sqlite_error("read the last position"))?;
    let last = u64::try_from(last).unwrap_or(0);
    if u64::try_from(beyond).unwrap_or(0) > last {
        error!(
            last,
            watermark = beyond,
            "the aggregate index goes beyond the event log's last commit (commits were removed); cutting it back"
        );
        cut_index(&mut tx, last).await?;
    }
    tx.commit().await.map_err(sqlite_error("commit"))?;
    Ok(last)
}

/// The commits not yet in the aggregate index (above their range's watermark, up to
/// `last`), read back from the log.
async fn read_tail(conn: &mut SqliteConnection, last: u64) -> Result<Tail, LogError> {
    let mut tail = Tail::new(read_watermarks(conn).await?, 0);
    let mut rows = sqlx::query_as::<_, (i64, String, String)>(
        "SELECT position, aggregate_type, aggregate_id FROM commits \
         WHERE position > ? AND position <= ? ORDER BY position",
    )
    .bind(i64::try_from(tail.lowest_merged()).unwrap_or(i64::MAX))
    .bind(i64::try_from(last).unwrap_or(i64::MAX))
    .fetch(&mut *conn);
    while let Some((position, kind, id)) = rows
        .try_next()
        .await
        .map_err(sqlite_error("read the commits the aggregate index lacks"))?
    {
        // Readers and the writer ask for UUIDs only; a commit under another id is never
        // asked for (as in `Known::catch_up`).
        match Uuid::parse_str(&id) {
            Ok(id) => tail.record(&kind, id, u64::try_from(position).unwrap_or(0)),
            Err(e) => {
                warn!(position, id, error = %e, "an aggregate id in the event log is not a UUID")
            }
        }
    }
    drop(rows);
    tail.completed(last);
    Ok(tail)
}

/// Reads every aggregate id and commit id in the log into filters for the writer, a page at
/// a time (each page its own short read, so WAL checkpoints are not held back by the scan).
async fn scan_ids(readers: SqlitePool, page: u32, done: oneshot::Sender<ScannedIds>) {
    let result = async {
        let aggregates = scan_ids_of(
            &readers,
            page,
            "SELECT DISTINCT aggregate_id FROM aggregate_index WHERE aggregate_id > ? \
             ORDER BY aggregate_id LIMIT ?",
        )
        .await?;
        let commits = scan_ids_of(
            &readers,
            page,
            "SELECT commit_id FROM commits WHERE commit_id > ? ORDER BY commit_id LIMIT ?",
        )
        .await?;
        Ok((aggregates, commits))
    }
    .await;
    let _ = done.send(result);
}

async fn scan_ids_of(
    readers: &SqlitePool,
    page_size: u32,
    sql: &'static str,
) -> Result<KeyFilter, LogError> {
    let mut filter = KeyFilter::default();
    let mut after = String::new();
    loop {
        let mut page: Vec<String> = sqlx::query_scalar(sql)
            .bind(&after)
            .bind(page_size)
            .fetch_all(readers)
            .await
            .map_err(sqlite_error("read the event log's ids"))?;
        for id in &page {
            filter.insert(
                Uuid::parse_str(id)
                    .map_err(|e| LogError::Corrupt(format!("id {id:?} in the event log: {e}")))?,
            );
        }
        let full = page.len() == page_size as usize;
        match page.pop() {
            Some(id) if full => after = id,
            _ => return Ok(filter),
        }
    }
}

/// Runs one of the log's loops (the writer, the checkpointer) on a thread of its own, with a
/// single-threaded runtime, not among the server's tasks. The writer is one serial chain:
/// each group takes several round trips to sqlx's SQLite worker thread, and every answer
/// wakes the loop from that thread. On the shared runtime each wake-up queued behind the
/// calls' tasks (hundreds under load), and the loop spent about half of every group commit
/// waiting to run: the writer, not the cores, set the pace (`docs/BENCHMARKS.md`, session of
/// 2026-11-29 from 19:39 UTC). On its own thread the operating system runs it as soon as it
/// is woken. Each loop ends, as before, once the log is dropped.
fn run_on_own_thread(name: &str, work: impl Future<Output = ()> + Send + 'static) {
    let work = Box::pin(work);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(work),
                // The writer's request channel closes: every append answers that the log is
                // unavailable.
                Err(e) => error!(error = %e, "cannot start an event log thread"),
            }
        });
    if let Err(e) = spawned {
        error!(error = %e, thread = name, "cannot start an event log thread");
    }
}

/// The single writer: takes every append waiting (up to `max_group`), decides each against
/// the log in one `BEGIN IMMEDIATE` transaction, writes the accepted ones with one multi-row
/// INSERT, commits (one fsync), then answers them all.
async fn write_loop(
    mut conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut requests: mpsc::Receiver<Request>,
    inner: std::sync::Weak<Inner>,
    mut writer: Writer,
    max_group: usize,
    rewind_after: usize,
) {
    let mut group = Vec::with_capacity(max_group);
    let mut rewind = Rewind::new(rewind_after);
    while requests.recv_many(&mut group, max_group).await > 0 {
        writer.known.absorb_scan();
        let started = std::time::Instant::now();
        let mut outcome = write_group(&mut conn, &group, &mut writer, false).await;
        if matches!(outcome, Err(GroupError::Foreign)) {
            if let Some(inner) = inner.upgrade() {
                inner.decided_again.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing of the group was written (its transaction is rolled back before the
            // next one begins). Learn what the other process appended, inside the next
            // transaction, where nobody else can append, and decide the group again.
            outcome = write_group(&mut conn, &group, &mut writer, true).await;
            if matches!(outcome, Err(GroupError::Foreign)) {
                // Everything was looked up, under the write lock, after reading what the
                // other process appended: the log contradicts what the writer knows in a
                // way it cannot explain. Stop relying on it.
                error!(
                    "the event log's writer cannot reconcile what it knows with the log; every append is looked up from now on"
                );
                writer.known.give_up();
            }
        }
        if let Err(GroupError::LostCommits(_)) = outcome {
            // Commits were removed behind the writer's back: positions go on from the log's
            // last, without a gap, once the aggregate index is cut back to it and the tail
            // read again; then the group is decided a third time.
            outcome = match forget_lost_commits(&mut conn, &mut writer).await {
                Ok(()) => write_group(&mut conn, &group, &mut writer, true).await,
                Err(e) => Err(GroupError::Log(e)),
            };
        }
        let elapsed = started.elapsed().as_secs_f64();
        let m = sems_telemetry::metrics();
        match outcome.map_err(GroupError::into_log_error) {
            Ok(Written {
                answers,
                last,
                committed,
                without_lookup,
                learned,
                merge,
            }) => {
                {
                    let mut tail = lock(&writer.tail);
                    if let Some(merge) = &merge {
                        tail.merged(merge);
                        writer.sweep.advance(merge.count);
                    }
                    for (request, answer) in group.iter().zip(&answers) {
                        if let Ok(o) = answer
                            && !o.duplicate
                        {
                            let c = &request.commit;
                            tail.record(c.aggregate_type, c.aggregate_id, o.position);
                        }
                    }
                    tail.completed(last);
                }
                for (request, answer) in group.iter().zip(&answers) {
                    if matches!(answer, Ok(o) if !o.duplicate) {
                        writer.known.record(&request.commit);
                    }
                }
                writer.known.last = last;
                rewind.since += group
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| matches!(a, Ok(o) if !o.duplicate))
                    .map(|(r, _)| r.commit.bytes.len())
                    .sum::<usize>();
                // Held for the feed before `last` wakes it. The requests' bytes are not
                // needed past here: the answers carry positions only.
                {
                    let mut recent = lock(&writer.recent);
                    for (request, answer) in group.iter_mut().zip(&answers) {
                        if let Ok(o) = answer
                            && !o.duplicate
                        {
                            let c = &mut request.commit;
                            let (traceparent, tracestate) = match c.trace_context.take() {
                                Some(t) => (Some(t.traceparent), t.tracestate),
                                None => (None, None),
                            };
                            recent.push(RecentCommit {
                                position: o.position,
                                traceparent,
                                tracestate,
                                bytes: std::mem::take(&mut c.bytes),
                            });
                        }
                    }
                }
                if let Some(inner) = inner.upgrade() {
                    if committed {
                        inner.groups.fetch_add(1, Ordering::Relaxed);
                    }
                    inner
                        .without_lookup
                        .fetch_add(without_lookup, Ordering::Relaxed);
                    inner.learned.fetch_add(learned, Ordering::Relaxed);
                    inner
                        .knows_ids
                        .store(writer.known.complete, Ordering::Relaxed);
                    inner.last.send_if_modified(|l| {
                        let moved = last > *l;
                        *l = (*l).max(last);
                        moved
                    });
                }
                for (request, answer) in group.drain(..).zip(answers) {
                    let outcome = match &answer {
                        Ok(o) if o.duplicate => "duplicate",
                        Ok(_) => "appended",
                        Err(LogError::Conflict) => "conflict",
                        Err(_) => "failed",
                    };
                    let aggregate = KeyValue::new("aggregate", request.commit.aggregate_type);
                    m.append_duration
                        .record(elapsed, std::slice::from_ref(&aggregate));
                    m.appends
                        .add(1, &[aggregate, KeyValue::new("outcome", outcome)]);
                    let _ = request.reply.send(answer);
                }
                if let Some(inner) = inner.upgrade() {
                    let waiting = !requests.is_empty();
                    rewind_if_due(&mut conn, &options, &inner, &mut rewind, waiting).await;
                }
            }
            Err(e) => {
                if let Some(inner) = inner.upgrade() {
                    inner
                        .knows_ids
                        .store(writer.known.complete, Ordering::Relaxed);
                }
                error!(error = %e, appends = group.len(), "group commit failed; nothing of it was appended");
                for request in group.drain(..) {
                    m.appends.add(
                        1,
                        &[
                            KeyValue::new("aggregate", request.commit.aggregate_type),
                            KeyValue::new("outcome", "failed"),
                        ],
                    );
                    let _ = request.reply.send(Err(e.clone()));
                }
                // Some failures (disk full, I/O errors) make SQLite roll the transaction back
                // itself; sqlx then still counts it open and refuses every later `BEGIN`.
                reopen(&mut conn, &options).await;
            }
        }
    }
    let _ = conn.close().await;
}

/// After the log lost commits the writer had seen: cuts the aggregate index back to the
/// log's last position, reads the tail again and goes on from there.
async fn forget_lost_commits(
    conn: &mut SqliteConnection,
    writer: &mut Writer,
) -> Result<(), LogError> {
    let last = last_with_index_cut(conn).await?;
    let tail = read_tail(conn, last).await?;
    error!(
        last_position = last,
        known_last = writer.known.last,
        "the event log holds fewer commits than its writer saw (commits were removed); going on from its last position"
    );
    *lock(&writer.tail) = tail;
    lock(&writer.recent).clear();
    writer.known.last = last;
    Ok(())
}

/// Replaces the writer's connection with a fresh one, in a known state.
async fn reopen(conn: &mut SqliteConnection, options: &SqliteConnectOptions) {
    match SqliteConnection::connect_with(options).await {
        Ok(fresh) => {
            let _ = std::mem::replace(conn, fresh).close().await;
        }
        Err(e) => {
            error!(error = %e, "could not reopen the event log writer; keeping the old connection");
        }
    }
}

/// When the writer rewinds the WAL. After `after` bytes of envelopes since the last rewind
/// it asks the background checkpointer to catch up (copy the WAL into the database file and
/// fsync it, while appends go on), and rewinds once that is done, when its own `RESTART` is
/// left only the frames written since to copy; past `after + after / 4` it rewinds without
/// waiting, which bounds the WAL whatever the background checkpointer does.
struct Rewind {
    after: usize,
    /// Envelope bytes appended since the last rewind.
    since: usize,
    /// Catch-ups asked for so far; each is numbered by this count.
    requests: u64,
    /// The number of the catch-up asked for since the last rewind attempt.
    asked: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum RewindStep {
    Wait,
    /// Ask for the catch-up with this number.
    Ask(u64),
    Rewind {
        caught_up: bool,
    },
}

/// What a rewind attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewound {
    Yes,
    /// A reader stayed in the WAL past the wait (or the checkpoint failed).
    ReaderStayed,
    /// Another checkpoint was running (the background checkpointer's pass): SQLite refuses
    /// a second at once, without waiting.
    CheckpointBusy,
}

impl Rewind {
    fn new(after: usize) -> Self {
        Self {
            after,
            since: 0,
            requests: 0,
            asked: None,
        }
    }

    /// What to do after a group, given the number of the last catch-up the checkpointer
    /// finished.
    fn step(&mut self, caught_up: u64) -> RewindStep {
        if self.since < self.after {
            return RewindStep::Wait;
        }
        match self.asked {
            None => {
                self.requests += 1;
                self.asked = Some(self.requests);
                RewindStep::Ask(self.requests)
            }
            Some(asked) if caught_up >= asked => RewindStep::Rewind { caught_up: true },
            Some(_) if self.since >= self.after.saturating_add(self.after / 4) => {
                RewindStep::Rewind { caught_up: false }
            }
            Some(_) => RewindStep::Wait,
        }
    }

    /// After a rewind attempt. One refused because another checkpoint was running is tried
    /// again after the next group; one that a reader held up is tried again after another
    /// eighth of the threshold (asking for a catch-up again), not after every group, since
    /// each such try may wait 20 ms.
    fn attempted(&mut self, outcome: Rewound) {
        match outcome {
            Rewound::CheckpointBusy => {}
            Rewound::Yes => {
                self.asked = None;
                self.since = 0;
            }
            Rewound::ReaderStayed => {
                self.asked = None;
                self.since = self.after - self.after / 8;
            }
        }
    }
}

/// Asks for a catch-up checkpoint, or rewinds the WAL, when `rewind` says so. `waiting`:
/// appends are queued for the next group.
async fn rewind_if_due(
    conn: &mut SqliteConnection,
    options: &SqliteConnectOptions,
    inner: &Inner,
    rewind: &mut Rewind,
    waiting: bool,
) {
    match rewind.step(inner.caught_up.load(Ordering::Acquire)) {
        RewindStep::Wait => {}
        RewindStep::Ask(number) => {
            inner.asked.store(number, Ordering::Release);
            inner.hurry.notify_one();
        }
        RewindStep::Rewind { caught_up } => {
            let started = std::time::Instant::now();
            // The background checkpointer stands aside (between its passes too) until the
            // rewind is done.
            inner.rewinding.store(true, Ordering::Relaxed);
            let outcome = match rewind_wal(conn).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    // The busy timeout may be left at 20 ms: start afresh.
                    tracing::warn!(error = %e, "event log checkpoint failed; reopening the writer");
                    reopen(conn, options).await;
                    Rewound::ReaderStayed
                }
            };
            // Refused while the checkpointer finished a pass: it stays aside for the retry
            // after the next group, unless there is no next group yet (idle, it copies the
            // WAL's tail).
            if outcome != Rewound::CheckpointBusy || !waiting {
                inner.rewinding.store(false, Ordering::Relaxed);
            }
            rewind.attempted(outcome);
            if outcome == Rewound::Yes {
                inner.rewinds.fetch_add(1, Ordering::Relaxed);
                if !caught_up {
                    inner.forced_rewinds.fetch_add(1, Ordering::Relaxed);
                }
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            inner.rewind_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// Finishes copying the WAL into the database file on the writer's own connection, between
/// two groups, and makes sure the next group writes the WAL from its start: `RESTART` waits
/// until no reader still reads from the WAL (SQLite rewinds the WAL only then), at most
/// 20 ms, with appends queueing meanwhile.
async fn rewind_wal(conn: &mut SqliteConnection) -> Result<Rewound, sqlx::Error> {
    sqlx::query("PRAGMA busy_timeout = 20")
        .execute(&mut *conn)
        .await?;
    let checkpoint = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *conn)
        .await;
    sqlx::query("PRAGMA busy_timeout = 5000")
        .execute(&mut *conn)
        .await?;
    Ok(match checkpoint? {
        (0, frames, copied) if frames == copied => Rewound::Yes,
        // SQLite answers -1 frames when it could not start the checkpoint at all.
        (_, -1, _) => Rewound::CheckpointBusy,
        _ => Rewound::ReaderStayed,
    })
}

/// Passes of one catch-up: the first copies the backlog, the second what was appended
/// during the first (or what a reader held the first back from). More passes did not make
/// the rewinds after them shorter: each pass copies about what the writer appends
/// meanwhile (`BENCHMARKS.md`).
const CATCH_UP_PASSES: usize = 2;

/// Copies the WAL into the database file in the background (`PASSIVE`: never blocks the
/// writer or readers), at most every `interval` while commits arrive, and at once when the
/// writer asks (`hurry`), until the log is dropped. Asked, it copies in `CATCH_UP_PASSES`
/// passes (a millisecond apart when a reader held one short), so that the writer's rewind
/// that follows has little left to copy.
async fn checkpoint_loop(
    mut conn: SqliteConnection,
    inner: std::sync::Weak<Inner>,
    hurry: Arc<Notify>,
    interval: Duration,
) {
    let Some(mut commits) = inner.upgrade().map(|i| i.last.subscribe()) else {
        return;
    };
    loop {
        let hurried = tokio::select! {
            biased;
            () = hurry.notified() => true,
            changed = commits.changed() => {
                if changed.is_err() {
                    break;
                }
                tokio::select! {
                    () = hurry.notified() => true,
                    () = tokio::time::sleep(interval) => false,
                }
            }
        };
        let Some(i) = inner.upgrade() else {
            break;
        };
        if i.rewinding.load(Ordering::Relaxed) {
            continue;
        }
        // The catch-up asked for last: this one starts after the ask, so it covers it.
        let covering = i.asked.load(Ordering::Acquire);
        let passes = if hurried { CATCH_UP_PASSES } else { 1 };
        let mut done = false;
        for pass in 1..=passes {
            if i.rewinding.load(Ordering::Relaxed) {
                done = false;
                break;
            }
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut conn)
                .await
            {
                // Refused: the writer's rewind holds the checkpoint.
                Ok((_, -1, _)) => {
                    done = false;
                    break;
                }
                Ok((_, frames, copied)) => {
                    done = true;
                    if copied < frames && pass < passes {
                        // A reader still reads frames the pass could not copy past: give
                        // it a moment to finish.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event log checkpoint failed; the next one retries");
                    done = false;
                    break;
                }
            }
        }
        if hurried && done {
            i.caught_up.fetch_max(covering, Ordering::Release);
        }
    }
    // A last full copy, so a cleanly stopped log leaves a small WAL behind.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
}

/// What a group's transaction did.
struct Written {
    /// One per append, in order.
    answers: Vec<Result<AppendOutcome, LogError>>,
    /// The log's last position after it.
    last: u64,
    /// Something was appended (and fsynced).
    committed: bool,
    /// Appends decided without a lookup.
    without_lookup: u64,
    /// Commits of another process the writer read before deciding.
    learned: u64,
    /// The aggregate index entries the group's transaction moved into the table.
    merge: Option<Merge>,
}

/// What the writer task keeps between groups.
struct Writer {
    known: Known,
    tail: Arc<std::sync::Mutex<Tail>>,
    recent: Arc<std::sync::Mutex<Recent>>,
    sweep: Sweep,
    type_names: TypeNames,
}

/// The aggregate types' names as shared text, bound into every append's row without a copy
/// (sqlx copies borrowed text into the statement's arguments).
#[derive(Default)]
struct TypeNames(Vec<(&'static str, Arc<str>)>);

impl TypeNames {
    fn get(&mut self, name: &'static str) -> Arc<str> {
        if let Some((_, shared)) = self.0.iter().find(|(n, _)| *n == name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.push((name, Arc::clone(&shared)));
        shared
    }
}

enum GroupError {
    Log(LogError),
    /// Another process appended to the log since the writer last saw it: what the writer
    /// knows is stale. Nothing was written.
    Foreign,
    /// The log's last position is below the one the writer knows: commits were removed
    /// behind its back. Nothing was written.
    LostCommits(u64),
}

impl GroupError {
    fn into_log_error(self) -> LogError {
        match self {
            Self::Log(e) => e,
            Self::Foreign => LogError::Internal(
                "the event log's writer could not reconcile what it knows with the log".into(),
            ),
            Self::LostCommits(last) => LogError::Internal(format!(
                "the event log holds fewer commits ({last}) than its writer saw"
            )),
        }
    }
}

impl From<LogError> for GroupError {
    fn from(e: LogError) -> Self {
        Self::Log(e)
    }
}

/// Decides and writes one group in one transaction. Appends `known` says are certainly new
/// are decided without a lookup, at positions after the last one it knows; every other
/// append is looked up. Another process's appends since then are found (a looked-up last
/// position that is not the known one, rows numbered otherwise than decided, a commit id
/// refused) and answered `Foreign`, with nothing written; with `catch_up` they are read
/// into `known` first and every append is looked up.
async fn write_group(
    conn: &mut SqliteConnection,
    group: &[Request],
    writer: &mut Writer,
    catch_up: bool,
) -> Result<Written, GroupError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(sqlite_error("begin"))?;
    let learned = if catch_up {
        writer.known.catch_up(&mut tx, &writer.tail).await?
    } else {
        0
    };
    let known = &writer.known;
    // Everything the decisions need, in one statement per chunk (each statement costs a
    // round trip to sqlx's SQLite worker): the log's last position, which commit ids it
    // already holds, and the last position of each aggregate (one backward index seek each).
    // Only rows that say something come back: commit ids already held and aggregates that
    // exist. A new alert's lookup finds neither; a row of NULLs for each new aggregate (up
    // to 300 per statement) cost at least one hand-off between sqlx's worker thread and
    // this task per 50 rows (its row channel holds 50), and doubled the lookup's time.
    //
    // Appends `known` says create a new aggregate with a new commit id need none of it.
    let mut last = known.last;
    let mut looked_up_last = None;
    // Keyed by ids, not their text: a group decides every append against these, and a
    // commit id the log holds that is not a UUID is none of the group's. Sized for the
    // group at once: grown from empty, the two maps were rehashed some 16 times a group
    // (a callgrind count put that at ~1% of `semsd`'s instructions per streamed alert).
    let mut seen: HashMap<Uuid, u64> = HashMap::with_capacity(group.len());
    let mut heads: HashMap<(Cow<'static, str>, Uuid), u64> = HashMap::with_capacity(group.len());
    let to_look_up: Vec<&Request> = group
        .iter()
        .filter(|r| catch_up || !known.certainly_new(&r.commit))
        .collect();
    let without_lookup = group.len() - to_look_up.len();
    // An aggregate with a commit in the aggregate index's tail has its last one there; the
    // others are looked up in the index table (`in_table`).
    let keys: Vec<(String, &str, String, bool)> = {
        let tail = lock(&writer.tail);
        to_look_up
            .iter()
            .map(|r| {
                let c = &r.commit;
                let id = c.aggregate_id.to_string();
                let in_table = match tail.head(c.aggregate_type, c.aggregate_id) {
                    Some(head) => {
                        heads.insert((Cow::Borrowed(c.aggregate_type), c.aggregate_id), head);
                        false
                    }
                    None => true,
                };
                (c.commit_id.to_string(), c.aggregate_type, id, in_table)
            })
            .collect()
    };
    for chunk in sems_app::chunks::cached(&keys, LOOKUP_CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT 0, NULL, NULL, COALESCE(MAX(position), 0) FROM commits \
             UNION ALL SELECT 1, commit_id, NULL, position FROM commits WHERE commit_id IN (",
        );
        let mut ids = q.separated(", ");
        for (commit_id, ..) in chunk {
            ids.push_bind(commit_id.as_str());
        }
        q.push(")");
        let in_table: Vec<_> = chunk.iter().filter(|k| k.3).collect();
        if !in_table.is_empty() {
            // Each aggregate's last entry in the index table (a backward seek), checked
            // against the commit it names.
            q.push(
                " UNION ALL SELECT 2, kind, id, head FROM (SELECT v.column1 AS kind, \
                 v.column2 AS id, (SELECT i.position FROM aggregate_index i \
                 JOIN commits c ON c.position = i.position \
                 WHERE i.aggregate_id = v.column2 AND c.aggregate_id = v.column2 \
                 AND c.aggregate_type = v.column1 \
                 ORDER BY i.position DESC LIMIT 1) AS head FROM (",
            );
            q.push_values(in_table, |mut row, (_, kind, id, _)| {
                row.push_bind(*kind).push_bind(id.as_str());
            });
            // `LIMIT -1` keeps SQLite from flattening the subquery into the outer one,
            // which would run each existing aggregate's seek twice (in `WHERE` and in the
            // column).
            q.push(") v LIMIT -1) WHERE head IS NOT NULL");
        }
        for row in q
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(sqlite_error("look up commits and aggregates"))?
        {
            let arm: i64 = row.try_get(0).map_err(corrupt)?;
            let position: Option<i64> = row.try_get(3).map_err(corrupt)?;
            let Some(position) = position.and_then(|p| u64::try_from(p).ok()) else {
                continue;
            };
            match arm {
                0 => looked_up_last = Some(position),
                1 => {
                    let commit_id: &str = row.try_get(1).map_err(corrupt)?;
                    if let Ok(commit_id) = Uuid::parse_str(commit_id) {
                        seen.insert(commit_id, position);
                    }
                }
                _ => {
                    let kind: String = row.try_get(1).map_err(corrupt)?;
                    let id: &str = row.try_get(2).map_err(corrupt)?;
                    let id = Uuid::parse_str(id).map_err(|e| {
                        LogError::Corrupt(format!(
                            "the event log holds an aggregate id that is not a UUID ({id}): {e}"
                        ))
                    })?;
                    heads.insert((Cow::Owned(kind), id), position);
                }
            }
        }
    }

    if looked_up_last.is_some_and(|position| position != known.last) {
        return Err(GroupError::Foreign);
    }

    // Decide every append in arrival order, as the stream would.
    let mut answers = Vec::with_capacity(group.len());
    let mut accepted: Vec<(u64, &PendingCommit, Arc<str>)> = Vec::new();
    for request in group {
        let c = &request.commit;
        if let Some(&position) = seen.get(&c.commit_id) {
            answers.push(Ok(AppendOutcome {
                position,
                duplicate: true,
            }));
            continue;
        }
        let key = (Cow::Borrowed(c.aggregate_type), c.aggregate_id);
        let head = heads.get(&key).copied().unwrap_or(0);
        if head != c.expected_last_position {
            answers.push(Err(LogError::Conflict));
            continue;
        }
        last += 1;
        seen.insert(c.commit_id, last);
        heads.insert(key, last);
        accepted.push((last, c, writer.type_names.get(c.aggregate_type)));
        answers.push(Ok(AppendOutcome {
            position: last,
            duplicate: false,
        }));
    }
    if accepted.is_empty() {
        tx.rollback().await.map_err(sqlite_error("rollback"))?;
        return Ok(Written {
            answers,
            last,
            committed: false,
            without_lookup: without_lookup as u64,
            learned,
            merge: None,
        });
    }

    // `OR FAIL`, not the default `ABORT`: a multi-row statement that may abort makes SQLite
    // keep a statement journal (a copy of every page it touches) to undo just that statement.
    // A failure here fails the whole group and the transaction is rolled back anyway; `FAIL`
    // leaves the transaction open for that rollback, as `ROLLBACK` would not.
    for chunk in sems_app::chunks::cached(&accepted, INSERT_CHUNK) {
        // No position is given: SQLite numbers the rows one after the log's last, and the
        // last number it gave must be the one decided. It is not when another process
        // appended (or the log lost commits behind the writer's back) since the last
        // position the writer knows, which a group with no lookup takes on trust.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(INSERT_COMMITS.get(chunk.len())));
        for (_, c, type_name) in chunk {
            let trace = c.trace_context.as_ref();
            // Owned text is moved into the statement's arguments; borrowed text would be
            // copied there first.
            q = q
                .bind(uuid_text(c.commit_id))
                .bind(Arc::clone(type_name))
                .bind(uuid_text(c.aggregate_id))
                .bind(c.event_types.join(","))
                .bind(uuid_text(c.correlation_id))
                .bind(trace.map(|t| t.traceparent.clone()))
                .bind(trace.and_then(|t| t.tracestate.clone()))
                .bind(&c.bytes[..]);
        }
        // A commit id taken means the same (one only another process can have stored).
        let done = q.execute(&mut *tx).await.map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => GroupError::Foreign,
            _ => GroupError::Log(sqlite_error("append commits")(e)),
        })?;
        let decided = chunk.last().map_or(0, |(position, ..)| *position);
        if u64::try_from(done.last_insert_rowid()).ok() != Some(decided) {
            return Err(GroupError::Foreign);
        }
    }
    let merge = sweep(&mut tx, writer, accepted.len()).await?;
    tx.commit().await.map_err(sqlite_error("commit"))?;
    Ok(Written {
        answers,
        last,
        committed: true,
        without_lookup: without_lookup as u64,
        learned,
        merge,
    })
}

/// Raises the watermarks of the ranges a sweep moved: `through`, then the two half-open
/// ranges of `keyspace::two_spans`.
const MOVE_WATERMARKS: &str = "UPDATE aggregate_index_sweep SET through = MAX(through, ?) \
     WHERE (prefix >= ? AND prefix < ?) OR (prefix >= ? AND prefix < ?)";

/// Moves the tail entries of the next ranges of the key space into the aggregate index
/// table, inside the group's transaction (`aggindex`), as many ranges as `commits` earn.
/// The tail lets them go once the transaction is committed (`Tail::merged`).
async fn sweep(
    tx: &mut SqliteConnection,
    writer: &mut Writer,
    commits: usize,
) -> Result<Option<Merge>, LogError> {
    let ranges = writer.sweep.ranges_for(commits);
    if ranges == 0 {
        return Ok(None);
    }
    let merge = {
        let tail = lock(&writer.tail);
        tail.merge(writer.sweep.cursor, ranges, tail.complete_to())
    };
    for chunk in sems_app::chunks::cached(&merge.entries, SWEEP_CHUNK) {
        // `OR IGNORE`: an entry already there is this one (the key is the whole row), put
        // there by another process's sweep this writer has not heard of.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(INSERT_INDEX_ENTRIES.get(chunk.len())));
        for (id, position) in chunk {
            q = q
                .bind(uuid_text(*id))
                .bind(i64::try_from(*position).unwrap_or(i64::MAX));
        }
        q.execute(&mut *tx)
            .await
            .map_err(sqlite_error("sweep the aggregate index"))?;
    }
    // Two rowid ranges (the second empty unless the sweep wrapped past the last prefix):
    // SQLite seeks them, where an expression of the prefix read all 4,096 rows every group.
    let [(a, b), (c, d)] = sems_app::keyspace::two_spans(merge.first, merge.count);
    sqlx::query(MOVE_WATERMARKS)
        .bind(i64::try_from(merge.through).unwrap_or(i64::MAX))
        .bind(a as i64)
        .bind(b as i64)
        .bind(c as i64)
        .bind(d as i64)
        .execute(&mut *tx)
        .await
        .map_err(sqlite_error("move the aggregate index's watermarks"))?;
    Ok(Some(merge))
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn last_position(&self) -> Result<u64, LogError> {
        // The writer answers an append only once it is committed, so the database's last
        // position covers every acknowledged commit.
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM commits")
            .fetch_one(&self.inner.readers)
            .await
            .map_err(sqlite_error("read the log's last position"))?;
        Ok(u64::try_from(last).unwrap_or(0))
    }

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
        // The aggregate's commits are in the index table up to its range's watermark `w` (as
        // this statement's snapshot holds it), in the writer's tail above the watermark the
        // tail knows, up to where the tail is complete (`?5`), and in the log alone after
        // that. The tail lets entries go only once the sweep that moved them is committed,
        // and the snapshot begins after the look at the tail, so `w` is at least the
        // watermark the tail knows: three disjoint arms, whatever a sweep did in between —
        // the table up to `w`, the tail's positions above it, the log after both `w` and
        // `?5` (a rowid range, empty unless another process appended). Each arm checks the
        // commit it finds is the aggregate's.
        let view = lock(&self.inner.tail).view(aggregate_type, aggregate_id);
        let position = |p: u64| i64::try_from(p).unwrap_or(i64::MAX);
        let tail_positions = serde_json::to_string(&view.positions)
            .map_err(|e| LogError::Internal(format!("encode tail positions: {e}")))?;
        let rows = sqlx::query(
            "WITH w(through) AS (SELECT COALESCE((SELECT through FROM aggregate_index_sweep \
               WHERE prefix = ?4), 0)) \
             SELECT position, bytes FROM commits WHERE position IN (SELECT position \
               FROM aggregate_index WHERE aggregate_id = ?1 AND position > ?3 \
               AND position <= (SELECT through FROM w)) \
             AND aggregate_id = ?1 AND aggregate_type = ?2 \
             UNION ALL SELECT position, bytes FROM commits \
             WHERE position IN (SELECT value FROM json_each(?6)) \
             AND position > MAX(?3, (SELECT through FROM w)) AND position <= ?5 \
             AND aggregate_id = ?1 AND aggregate_type = ?2 \
             UNION ALL SELECT position, bytes FROM commits \
             WHERE position > MAX(?3, ?5, (SELECT through FROM w)) \
             AND aggregate_id = ?1 AND aggregate_type = ?2 \
             ORDER BY position",
        )
        .bind(aggregate_id.to_string())
        .bind(aggregate_type)
        .bind(position(after))
        .bind(view.prefix as i64)
        .bind(position(view.complete_to))
        .bind(tail_positions)
        .fetch_all(&self.inner.readers)
        .await
        .map_err(sqlite_error("read aggregate"))?;
        rows.iter().map(stored).collect()
    }

    async fn read_at(&self, position: u64) -> Result<StoredCommit, LogError> {
        let row = sqlx::query("SELECT position, bytes FROM commits WHERE position = ?")
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .fetch_optional(&self.inner.readers)
            .await
            .map_err(sqlite_error("read commit"))?;
        match row {
            Some(r) => stored(&r),
            None => Err(LogError::NotFound(position)),
        }
    }

    async fn append(&self, commit: PendingCommit) -> Result<AppendOutcome, LogError> {
        let span = debug_span!(
            target: sems_telemetry::DETAIL,
            "eventlog.append",
            otel.kind = "producer",
            db.system = "sqlite",
            sems.aggregate = commit.aggregate_type,
            sems.commit_id = %commit.commit_id,
        );
        async {
            // The same ceiling as a JetStream server's default max_payload, so every commit
            // the embedded log accepts can move to JetStream.
            if commit.bytes.len() > MAX_COMMIT_BYTES {
                return Err(LogError::Internal(format!(
                    "commit too large: {} bytes, at most {MAX_COMMIT_BYTES}",
                    commit.bytes.len()
                )));
            }
            let (reply, answer) = oneshot::channel();
            self.inner
                .appends
                .send(Request { commit, reply })
                .await
                .map_err(|_| LogError::Unavailable("the event log writer has stopped".into()))?;
            answer.await.map_err(|_| {
                LogError::Unavailable("the event log writer stopped before answering".into())
            })?
        }
        .instrument(span)
        .await
    }
}

/// The log as a projector reads it: rows above the checkpoint, in position order. The
/// checkpoint in the read model is the only cursor, so acknowledging is a no-op; a new
/// group commit in this process wakes the reader at once, other writers are polled for.
/// Commits this process's writer stored a moment ago come from its memory (`recent`), the
/// others from the file.
pub struct SqliteFeed {
    log: SqliteLog,
    after: u64,
    commits: watch::Receiver<u64>,
    poll: Duration,
    read_rows: usize,
    batch_bytes: usize,
    from_memory: u64,
}

impl Drop for SqliteFeed {
    fn drop(&mut self) {
        lock(&self.log.inner.recent).feed_closed();
    }
}

impl SqliteFeed {
    /// A feed over `log`.
    pub fn new(log: SqliteLog) -> Self {
        let commits = log.inner.last.subscribe();
        lock(&log.inner.recent).feed_opened();
        Self {
            log,
            after: 0,
            commits,
            poll: Duration::from_millis(50),
            read_rows: FEED_READ_ROWS,
            batch_bytes: FEED_BATCH_BYTES,
            from_memory: 0,
        }
    }

    /// Commits delivered from this process's memory rather than read from the file.
    pub fn from_memory(&self) -> u64 {
        self.from_memory
    }

    /// The same feed reading at most `read_rows` commits per statement and closing a batch
    /// at the commit that brings its envelopes to `batch_bytes`.
    #[must_use]
    pub fn with_limits(mut self, read_rows: usize, batch_bytes: usize) -> Self {
        self.read_rows = read_rows.max(1);
        self.batch_bytes = batch_bytes;
        self
    }

    /// Up to `max` commits after `self.after`, stopping at the commit that brings their
    /// envelopes to `budget` bytes: those this process's writer still holds (`recent`)
    /// from memory, the rest from the file.
    async fn read(&mut self, max: usize, budget: usize) -> Result<Vec<FedCommit>, LogError> {
        let (mut read, generation) = {
            let recent = lock(&self.log.inner.recent);
            (recent.after(self.after, max, budget), recent.generation())
        };
        if let (Some(first), Some(last)) = (read.first(), read.last()) {
            // The file still holds the run's first and last commits (their heads, which
            // begin with the commit id, and their lengths), and nothing was forgotten
            // meanwhile: a log file that lost commits behind the process's back, even one
            // another writer has appended to since, is read, not remembered.
            let (first, last) = (&first.commit, &last.commit);
            let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT position, substr(bytes, 1, ?3), length(bytes) FROM commits \
                 WHERE position IN (?1, ?2)",
            )
            .bind(i64::try_from(first.position).unwrap_or(i64::MAX))
            .bind(i64::try_from(last.position).unwrap_or(i64::MAX))
            .bind(REMEMBERED_HEAD as i64)
            .fetch_all(&self.log.inner.readers)
            .await
            .map_err(sqlite_error("check remembered commits"))?;
            let held = |c: &StoredCommit| {
                rows.iter().any(|(position, head, length)| {
                    u64::try_from(*position).ok() == Some(c.position)
                        && usize::try_from(*length).ok() == Some(c.bytes.len())
                        && head[..] == c.bytes[..c.bytes.len().min(REMEMBERED_HEAD)]
                })
            };
            let held = held(first) && held(last);
            let mut recent = lock(&self.log.inner.recent);
            if !held || recent.generation() != generation {
                if !held {
                    warn!(
                        position = last.position,
                        "the event log no longer holds commits this process stored; reading the file"
                    );
                    recent.clear();
                }
                read.clear();
            }
        }
        self.from_memory += read.len() as u64;
        let bytes = read.iter().map(|c| c.commit.bytes.len()).sum::<usize>();
        if read.len() < max && bytes < budget {
            // A commit another process appended, or one no longer held, or nothing more.
            let after = read.last().map_or(self.after, |c| c.commit.position);
            read.extend(
                self.read_stored(after, max - read.len(), budget - bytes)
                    .await?,
            );
        }
        Ok(read)
    }

    /// Up to `max` commits after `after` from the file, stopping at the commit that brings
    /// their envelopes to `budget` bytes. The statement's rows are buffered ahead (up to
    /// `FEED_READ_ROWS`, so with `read_rows` above that its read transaction lasts longer),
    /// but only envelopes of up to `FEED_INLINE_BYTES` come with them; larger ones are
    /// read afterwards, only those the budget takes.
    async fn read_stored(
        &self,
        after: u64,
        max: usize,
        budget: usize,
    ) -> Result<Vec<FedCommit>, LogError> {
        let readers = &self.log.inner.readers;
        let mut rows = sqlx::query(
            "SELECT position, CASE WHEN length(bytes) <= ?3 THEN bytes END AS bytes, \
             length(bytes) AS size, traceparent, tracestate FROM commits WHERE position > ?1 \
             ORDER BY position LIMIT ?2",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(FEED_INLINE_BYTES)
        .fetch(readers);
        let mut read = Vec::new();
        // Commits whose envelopes come apart (by index in `read`).
        let mut apart = Vec::new();
        let mut bytes = 0;
        while bytes < budget
            && let Some(r) = rows
                .try_next()
                .await
                .map_err(sqlite_error("read commits"))?
        {
            let position: i64 = r.try_get("position").map_err(corrupt)?;
            let envelope: Option<Vec<u8>> = r.try_get("bytes").map_err(corrupt)?;
            let size: i64 = r.try_get("size").map_err(corrupt)?;
            if envelope.is_none() {
                apart.push((read.len(), size));
            }
            read.push(FedCommit {
                commit: StoredCommit {
                    position: u64::try_from(position)
                        .map_err(|_| LogError::Corrupt("negative position".into()))?,
                    bytes: envelope.unwrap_or_default().into(),
                },
                traceparent: shared_text(&r, "traceparent")?,
                tracestate: shared_text(&r, "tracestate")?,
                pending: 0,
            });
            bytes += usize::try_from(size).unwrap_or(usize::MAX);
        }
        drop(rows);
        for (i, size) in apart {
            let commit = &mut read[i].commit;
            let bytes: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT bytes FROM commits WHERE position = ?")
                    .bind(i64::try_from(commit.position).unwrap_or(i64::MAX))
                    .fetch_optional(readers)
                    .await
                    .map_err(sqlite_error("read a large commit"))?;
            // Rows are never changed or removed: one that is, between two statements, is
            // not a log this feed can go on from.
            commit.bytes = bytes
                .filter(|b| i64::try_from(b.len()).ok() == Some(size))
                .map(Bytes::from)
                .ok_or_else(|| {
                    LogError::Corrupt(format!(
                        "commit {} changed or vanished while the feed read it",
                        commit.position
                    ))
                })?;
        }
        Ok(read)
    }
}

#[async_trait]
impl CommitFeed for SqliteFeed {
    async fn open(&mut self, checkpoint: u64) -> Result<(), LogError> {
        crate::beyond_the_end(checkpoint, EventLog::last_position(&self.log).await?)?;
        self.after = checkpoint;
        Ok(())
    }

    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<FedCommit>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut linger_until = None;
        let mut batch = Vec::new();
        let mut bytes = 0;
        // Whether the last read returned every row it asked for (more may be waiting).
        let mut was_full = false;
        loop {
            // Mark the current head seen before reading, so a commit landing after the read
            // wakes the wait below.
            self.commits.borrow_and_update();
            let want = (max - batch.len()).min(self.read_rows);
            let more = self
                .read(want, self.batch_bytes.saturating_sub(bytes))
                .await?;
            let got = more.len();
            if let Some(last) = more.last() {
                self.after = last.commit.position;
            }
            bytes += more.iter().map(|c| c.commit.bytes.len()).sum::<usize>();
            batch.extend(more);
            if batch.len() >= max || bytes >= self.batch_bytes {
                break;
            }
            let now = tokio::time::Instant::now();
            if !batch.is_empty() {
                // Catching up or under load: the batch stays open for later group commits,
                // so one transaction carries many of them, until LINGER after its first.
                linger_until.get_or_insert(now + LINGER);
            }
            if got == want {
                // A full read: read on at once.
                was_full = true;
                continue;
            }
            let until = match linger_until {
                None => {
                    if now >= deadline {
                        break;
                    }
                    (now + self.poll).min(deadline)
                }
                // Woken, but nothing new: the batch is done (after a full read, an empty
                // one only means the log had no more yet: linger as after a partial one).
                Some(_) if got == 0 && !was_full => break,
                Some(until) if now >= until => break,
                Some(until) => until,
            };
            was_full = false;
            if tokio::time::timeout_at(until, self.commits.changed())
                .await
                .is_err()
                && !batch.is_empty()
            {
                break;
            }
        }
        let head = (*self.commits.borrow()).max(self.after);
        for c in &mut batch {
            c.pending = head.saturating_sub(c.commit.position);
        }
        Ok(batch)
    }

    async fn ack_through(&mut self, _position: u64) -> Result<(), LogError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{MIGRATOR, MOVE_WATERMARKS, Rewind, RewindStep, Rewound};
    use sqlx::Connection;

    /// The watermark update seeks the ranges it names: an expression of the prefix in its
    /// `WHERE` made SQLite read all 4,096 rows for every group that swept (a fifth of
    /// `semsd`'s instructions per unary call).
    #[tokio::test]
    async fn moving_watermarks_seeks_the_swept_ranges() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        MIGRATOR.run(&mut conn).await.unwrap();
        sems_testkit::assert_watermarks_move_by_seeks(
            &mut conn,
            MOVE_WATERMARKS,
            "aggregate_index_sweep",
        )
        .await;
    }

    /// The writer asks for a catch-up once past the threshold, rewinds once the
    /// background checkpointer has finished the one it asked for, and rewinds regardless
    /// past a quarter more; a rewind refused because another checkpoint ran is tried again
    /// after the next group; one a reader held up is tried again, asking again, an eighth
    /// of the threshold later.
    #[test]
    fn a_rewind_waits_for_its_catch_up_up_to_the_hard_bound() {
        let mut r = Rewind::new(800);
        r.since = 799;
        assert_eq!(r.step(0), RewindStep::Wait);
        r.since = 800;
        assert_eq!(r.step(0), RewindStep::Ask(1));
        assert_eq!(
            r.step(0),
            RewindStep::Wait,
            "asked once, not after every group"
        );
        r.since = 999;
        assert_eq!(r.step(0), RewindStep::Wait);
        assert_eq!(r.step(1), RewindStep::Rewind { caught_up: true });
        r.attempted(Rewound::CheckpointBusy);
        assert_eq!(r.step(1), RewindStep::Rewind { caught_up: true });
        r.attempted(Rewound::Yes);
        assert_eq!((r.since, r.asked), (0, None));

        r.since = 900;
        assert_eq!(r.step(1), RewindStep::Ask(2));
        assert_eq!(
            r.step(1),
            RewindStep::Wait,
            "an earlier catch-up does not answer"
        );
        r.since = 1_000;
        assert_eq!(r.step(1), RewindStep::Rewind { caught_up: false });
        r.attempted(Rewound::ReaderStayed);
        assert_eq!((r.since, r.asked), (700, None));
        assert_eq!(r.step(1), RewindStep::Wait);
        r.since = 800;
        assert_eq!(r.step(2), RewindStep::Ask(3));
        assert_eq!(r.step(3), RewindStep::Rewind { caught_up: true });

        let mut unbounded = Rewind::new(usize::MAX);
        unbounded.since = usize::MAX;
        assert_eq!(unbounded.step(0), RewindStep::Ask(1));
        assert_eq!(unbounded.step(0), RewindStep::Rewind { caught_up: false });
    }
}
