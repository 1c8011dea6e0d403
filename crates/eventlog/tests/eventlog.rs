//! The event-log contract, on both stores: a real nats-server started on a free port, and
//! the embedded SQLite log in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use sems_app::{
    AppError, AppendTap, CommandHandler, CommandMeta, CommitFeed, Envelope, EventLog, GENESIS_HASH,
    HandlerConfig, LogError, OfferedCommit, PendingCommit, Sems, SystemClock, sha256_hex,
    verify_chain,
};
use sems_domain::{
    Severity,
    alert::AlertReport,
    incident::{Incident, IncidentCommand},
};
use sems_eventlog::{
    JetStreamConfig, JetStreamLog, SqliteFeed, SqliteLog, SqliteLogConfig, WalRewinds,
};
use sems_testkit::{Backend, NatsServer, TestLog, TestStores, on_both_stores};
use uuid::Uuid;

on_both_stores!(
    two_concurrent_commands_on_one_incident_both_take_effect_in_order,
    a_repeated_request_id_returns_the_original_position_and_appends_nothing,
    a_restart_of_the_store_loses_no_acknowledged_commit,
    the_hash_chain_links_every_commit_and_detects_tampering,
    alerts_are_deduplicated_and_promoted_alerts_open_one_incident,
    a_steady_trickle_of_commits_does_not_hold_a_projector_batch_open,
    a_burst_of_appends_is_decided_per_aggregate_against_the_log,
    the_feed_delivers_each_commit_s_trace_context,
);

async fn connect(server: &NatsServer) -> JetStreamLog {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamLog::open(client, JetStreamConfig::default())
        .await
        .unwrap()
}

async fn start(backend: Backend) -> (TestStores, TestLog) {
    let stores = TestStores::start(backend).await.unwrap();
    let log = stores.log().await.unwrap();
    (stores, log)
}

fn handler(log: &TestLog, actor: &str) -> Arc<CommandHandler> {
    Arc::new(CommandHandler::new(
        log.port(),
        Arc::new(SystemClock),
        HandlerConfig {
            actor: actor.into(),
            ..HandlerConfig::default()
        },
    ))
}

/// Records what a handler offers of its appends and how it settles them (as `semsd`'s role
/// `all` hands them to its projector).
#[derive(Default)]
struct Shown(std::sync::Mutex<ShownCommits>);

#[derive(Default)]
struct ShownCommits {
    offered: Vec<(Uuid, Vec<u8>, Envelope)>,
    settled: Vec<(Uuid, Option<u64>)>,
}

/// One commit id's offers (bytes and envelope) and settlements, in order.
type OffersOfOne = (Vec<(Vec<u8>, Envelope)>, Vec<Option<u64>>);

impl AppendTap for Shown {
    fn accepting(&self) -> bool {
        true
    }

    fn offered(&self, commit: OfferedCommit<'_>) {
        self.0.lock().unwrap().offered.push((
            commit.commit_id,
            commit.bytes.to_vec(),
            commit.envelope,
        ));
    }

    fn settled(&self, commit_id: Uuid, position: Option<u64>) {
        self.0.lock().unwrap().settled.push((commit_id, position));
    }
}

impl Shown {
    /// The positions commits were settled at, in order, after checking that every offer
    /// was settled once, and that each one stored is what the log holds at its position:
    /// the same bytes, and the envelope they decode to.
    async fn checked_against(&self, log: &TestLog) -> Vec<u64> {
        let (offered, settled) = {
            let shown = self.0.lock().unwrap();
            (shown.offered.clone(), shown.settled.clone())
        };
        // One command's offers and settlements alternate (a retry offers again); commands
        // running at once interleave theirs.
        let mut by_id: std::collections::HashMap<Uuid, OffersOfOne> =
            std::collections::HashMap::new();
        for (id, bytes, envelope) in offered {
            assert_eq!(envelope.commit_id, id);
            by_id.entry(id).or_default().0.push((bytes, envelope));
        }
        for (id, position) in settled {
            by_id.entry(id).or_default().1.push(position);
        }
        let mut positions = Vec::new();
        for (id, (offers, settlements)) in by_id {
            assert_eq!(
                offers.len(),
                settlements.len(),
                "every offer of {id} settled once"
            );
            for ((bytes, envelope), position) in offers.into_iter().zip(settlements) {
                let Some(position) = position else { continue };
                let stored = log.port().read_at(position).await.unwrap();
                assert_eq!(stored.bytes, bytes, "bytes offered for position {position}");
                assert_eq!(Envelope::decode(&stored.bytes).unwrap(), envelope);
                positions.push(position);
            }
        }
        positions.sort();
        positions
    }
}

fn handler_showing(log: &TestLog, actor: &str, shown: &Arc<Shown>) -> Arc<CommandHandler> {
    Arc::new(
        CommandHandler::new(
            log.port(),
            Arc::new(SystemClock),
            HandlerConfig {
                actor: actor.into(),
                ..HandlerConfig::default()
            },
        )
        .with_tap(shown.clone()),
    )
}

fn open() -> IncidentCommand {
    IncidentCommand::Open {
        title: "Credential stuffing on VPN".into(),
        description: String::new(),
        severity: Severity::High,
        priority: None,
        alert_ids: vec![],
    }
}

fn note(text: &str) -> IncidentCommand {
    IncidentCommand::AddNote { text: text.into() }
}

async fn opened_incident(h: &CommandHandler) -> (Uuid, u64) {
    let id = Uuid::now_v7();
    let c = h
        .execute::<Incident>(id, &open(), &CommandMeta::default())
        .await
        .unwrap();
    (id, c.position)
}

fn report(source_ref: &str, severity: Severity) -> AlertReport {
    AlertReport {
        source: "edr".into(),
        source_ref: source_ref.into(),
        title: "Suspicious PowerShell".into(),
        description: String::new(),
        severity,
        occurred_at: Utc::now(),
        observables: vec![],
        labels: BTreeMap::new(),
        raw: serde_json::json!({"id": source_ref}),
    }
}

#[tokio::test]
async fn the_stream_is_created_as_the_contract_says_and_a_wrong_one_is_refused() {
    let server = NatsServer::start().unwrap();
    let log = connect(&server).await;
    let info = log
        .context()
        .get_stream("SEMS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert!(info.config.deny_delete && info.config.deny_purge && info.config.allow_direct);
    assert_eq!(info.config.max_age, Duration::ZERO);
    // Opening again checks and accepts the existing stream.
    connect(&server).await;

    // A stream under another name that would expire history is refused.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LOSSY".into(),
        subjects: vec!["lossy.>".into()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let config = JetStreamConfig {
        stream: "LOSSY".into(),
        subject_prefix: "lossy".into(),
        ..Default::default()
    };
    let err = JetStreamLog::open(client.clone(), config)
        .await
        .err()
        .expect("a lossy stream must be refused");
    assert!(err.to_string().contains("max_age"), "{err}");

    // One that stores commits without acknowledging them is refused too.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SILENT".into(),
        subjects: vec!["silent.>".into()],
        no_ack: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let config = JetStreamConfig {
        stream: "SILENT".into(),
        subject_prefix: "silent".into(),
        ..Default::default()
    };
    let err = JetStreamLog::open(client.clone(), config)
        .await
        .err()
        .expect("a stream without acknowledgements must be refused");
    assert!(err.to_string().contains("no_ack"), "{err}");

    // Replicas need a server whose clustered concurrency checks hold (2.11 or newer).
    let config = JetStreamConfig {
        stream: "REPLICATED".into(),
        subject_prefix: "replicated".into(),
        replicas: 3,
        ..Default::default()
    };
    let err = JetStreamLog::open(client, config)
        .await
        .err()
        .expect("replicas on nats-server 2.9 must be refused");
    assert!(err.to_string().contains("2.11 or newer"), "{err}");
}

async fn two_concurrent_commands_on_one_incident_both_take_effect_in_order(backend: Backend) {
    let (_stores, log) = start(backend).await;
    // Two handlers with their own caches: two API replicas racing on one incident.
    let shown = Arc::new(Shown::default());
    let (a, b) = (
        handler_showing(&log, "ana", &shown),
        handler_showing(&log, "bo", &shown),
    );
    let (id, _) = opened_incident(&a).await;
    b.load::<Incident>(id).await.unwrap(); // both caches hold version 1

    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            h.execute::<Incident>(id, &note(&format!("note {i}")), &CommandMeta::default())
                .await
        }));
    }
    let mut positions = Vec::new();
    let mut aborted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) => positions.push((c.position, c.version)),
            Err(AppError::Aborted(_)) => aborted += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let commits = log.port().read_aggregate("incident", id).await.unwrap();
    assert_eq!(
        commits.len(),
        1 + positions.len(),
        "every success is in the log, nothing else"
    );
    assert_eq!(positions.len() + aborted, 20);
    assert!(
        positions.len() >= 2,
        "at least two concurrent commands took effect"
    );
    // Versions are strictly increasing with positions: one order, no lost update.
    positions.sort();
    for w in positions.windows(2) {
        assert!(w[0].1 < w[1].1);
    }
    let versions: Vec<u64> = commits
        .iter()
        .map(|c| Envelope::decode(&c.bytes).unwrap().aggregate_version)
        .collect();
    assert_eq!(versions, (1..=commits.len() as u64).collect::<Vec<_>>());
    verify_chain(&commits).unwrap();
    // Each commit that took effect was offered and settled at its position, as stored;
    // attempts that lost a conflict settled with none.
    let stored: Vec<u64> = commits.iter().map(|c| c.position).collect();
    assert_eq!(shown.checked_against(&log).await, stored);
}

async fn a_repeated_request_id_returns_the_original_position_and_appends_nothing(backend: Backend) {
    let (_stores, log) = start(backend).await;
    let shown = Arc::new(Shown::default());
    let h = handler_showing(&log, "ana", &shown);
    let (id, opened) = opened_incident(&h).await;
    let meta = CommandMeta {
        request_id: Some("req-42".into()),
        ..Default::default()
    };
    let first = h
        .execute::<Incident>(id, &note("isolated host"), &meta)
        .await
        .unwrap();
    let (count, _) = log.state().await.unwrap();

    let again = h
        .execute::<Incident>(id, &note("isolated host"), &meta)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.position, again.version),
        (first.position, first.version)
    );

    // A fresh process (no cache) retrying the same request: the log's dedup answers.
    let other = handler_showing(&log, "ana", &shown);
    let third = other
        .execute::<Incident>(id, &note("isolated host"), &meta)
        .await
        .unwrap();
    assert!(third.replayed);
    assert_eq!(third.position, first.position);
    assert_eq!(log.state().await.unwrap().0, count, "nothing appended");

    // The same request id from another actor is another request.
    let bo = handler_showing(&log, "bo", &shown);
    let fourth = bo
        .execute::<Incident>(id, &note("isolated host"), &meta)
        .await
        .unwrap();
    assert!(!fourth.replayed);
    assert_eq!(log.state().await.unwrap().0, count + 1);
    // An append the log found to be a repeat settles with no position: only the three
    // commits appended were stored.
    assert_eq!(
        shown.checked_against(&log).await,
        vec![opened, first.position, fourth.position]
    );
}

/// JetStream: nats-server killed with SIGKILL and started again. Embedded: every handle on
/// the file closed and the file opened again (a killed process: `tests/crash.rs`).
async fn a_restart_of_the_store_loses_no_acknowledged_commit(backend: Backend) {
    let (mut stores, log) = start(backend).await;
    let sems = Arc::new(Sems::new(handler(&log, "soc"), Severity::High));
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let sems = sems.clone();
        tasks.push(tokio::spawn(async move {
            let severity = if i.is_multiple_of(10) {
                Severity::Critical
            } else {
                Severity::Low
            };
            sems.ingest_alert(report(&format!("r-{i}"), severity), CommandMeta::default())
                .await
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        let o = t.await.unwrap().unwrap();
        acked.push(o);
    }
    let mut before = Vec::new();
    for o in &acked {
        before.push(
            log.port()
                .read_aggregate("alert", o.alert_id)
                .await
                .unwrap(),
        );
    }

    drop((sems, log));
    if let Some(server) = stores.nats() {
        server.kill(); // SIGKILL: no clean shutdown
        server.restart().unwrap();
    }
    let reopened = stores.log().await.unwrap();
    let (count, last) = reopened.state().await.unwrap();
    let log = reopened.port();
    assert_eq!(count, 300 + 30, "300 alerts and 30 incidents opened");
    assert_eq!(last, count);
    for (o, b) in acked.iter().zip(before) {
        let after = log.read_aggregate("alert", o.alert_id).await.unwrap();
        assert_eq!(after, b, "alert {} reads back byte for byte", o.alert_id);
        if let Some(incident) = o.incident_id {
            assert_eq!(
                log.read_aggregate("incident", incident)
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
    }
}

async fn the_hash_chain_links_every_commit_and_detects_tampering(backend: Backend) {
    let (_stores, test_log) = start(backend).await;
    let h = handler(&test_log, "ana");
    let log = test_log.port();
    let (id, _) = opened_incident(&h).await;
    h.execute::<Incident>(id, &IncidentCommand::Acknowledge, &CommandMeta::default())
        .await
        .unwrap();
    for i in 0..5 {
        h.execute::<Incident>(id, &note(&format!("n{i}")), &CommandMeta::default())
            .await
            .unwrap();
    }
    // Another aggregate interleaved in the stream has its own chain.
    let (other, _) = opened_incident(&h).await;
    h.execute::<Incident>(id, &note("last"), &CommandMeta::default())
        .await
        .unwrap();

    let commits = log.read_aggregate("incident", id).await.unwrap();
    assert_eq!(commits.len(), 8);
    let mut prev = GENESIS_HASH.to_string();
    for c in &commits {
        let e = Envelope::decode(&c.bytes).unwrap();
        assert_eq!(e.prev_hash, prev);
        prev = sha256_hex(&c.bytes);
    }
    assert_eq!(verify_chain(&commits).unwrap(), prev);
    verify_chain(&log.read_aggregate("incident", other).await.unwrap()).unwrap();

    let mut tampered = commits.clone();
    let text = String::from_utf8(tampered[3].bytes.to_vec())
        .unwrap()
        .replace("n1", "n9");
    tampered[3].bytes = text.into_bytes().into();
    let err = verify_chain(&tampered).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("position {}", tampered[4].position)),
        "{err}"
    );
}

async fn alerts_are_deduplicated_and_promoted_alerts_open_one_incident(backend: Backend) {
    let (_stores, test_log) = start(backend).await;
    let sems = Sems::new(handler(&test_log, "soc"), Severity::High);
    let log = test_log.port();
    let low = sems
        .ingest_alert(report("a-1", Severity::Low), CommandMeta::default())
        .await
        .unwrap();
    assert!(!low.repeat && low.incident_id.is_none());
    let again = sems
        .ingest_alert(report("a-1", Severity::Low), CommandMeta::default())
        .await
        .unwrap();
    assert!(again.repeat);
    assert_eq!(again.alert_id, low.alert_id);
    assert_eq!(again.version, 2);

    // The repeat at a higher severity promotes the untriaged alert and opens an incident.
    let high = sems
        .ingest_alert(report("a-1", Severity::Critical), CommandMeta::default())
        .await
        .unwrap();
    let incident = high.incident_id.expect("promoted");
    let more = sems
        .ingest_alert(report("a-1", Severity::Critical), CommandMeta::default())
        .await
        .unwrap();
    assert_eq!(more.incident_id, Some(incident));
    assert_eq!(
        log.read_aggregate("incident", incident)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        log.read_aggregate("alert", low.alert_id)
            .await
            .unwrap()
            .len(),
        4
    );
}

/// Threads of this process named `sems-log-writer`.
fn writer_threads() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == "sems-log-writer").then(|| t.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// The embedded writer runs on a thread of its own, not among the runtime's tasks (where
/// each of its wake-ups queued behind the calls' tasks), and that thread ends with the log.
#[tokio::test]
async fn the_embedded_writer_runs_on_its_own_thread_and_ends_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let before = writer_threads();
    let log = SqliteLog::open(SqliteLogConfig::new(dir.path().join("events.db")))
        .await
        .unwrap();
    let test_log = TestLog::Sqlite(log.clone());
    let h = handler(&test_log, "ana");
    let (_, position) = opened_incident(&h).await;
    assert_eq!(position, 1);
    // Looked for once the writer has answered: a new thread names itself when it starts.
    let ours: Vec<String> = writer_threads().difference(&before).cloned().collect();
    assert!(!ours.is_empty(), "the writer has a thread of its own");
    drop((h, test_log, log));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ours.iter().any(|t| writer_threads().contains(t)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer's thread outlives its log"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_embedded_log_refuses_changes_to_stored_commits_and_keeps_positions_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
    let test_log = TestLog::Sqlite(log.clone());
    let h = handler(&test_log, "ana");
    let (id, _) = opened_incident(&h).await;
    h.execute::<Incident>(id, &note("contained"), &CommandMeta::default())
        .await
        .unwrap();
    assert_eq!(log.state().await.unwrap(), (2, 2));

    // Another connection to the file, as an intruder with file access would open it.
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for statement in [
        "UPDATE commits SET bytes = x'00' WHERE position = 1",
        "DELETE FROM commits WHERE position = 2",
    ] {
        let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    let commits = log.read_aggregate("incident", id).await.unwrap();
    assert_eq!(
        commits.iter().map(|c| c.position).collect::<Vec<_>>(),
        [1, 2]
    );
    verify_chain(&commits).unwrap();

    // Commits keep what an export to JetStream needs as subject and headers.
    let records = log.read_records(1, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].aggregate_id, id);
    assert_eq!(records[1].event_types, "NoteAdded");
    assert_eq!(records[1].commit, commits[1]);
}

fn raw_commit(
    aggregate_type: &'static str,
    aggregate_id: Uuid,
    commit_id: Uuid,
    expected_last_position: u64,
) -> PendingCommit {
    PendingCommit {
        aggregate_type,
        aggregate_id,
        commit_id,
        expected_last_position,
        bytes: format!("{{\"commit\":\"{commit_id}\"}}")
            .into_bytes()
            .into(),
        event_types: vec!["AlertReceived"],
        trace_context: None,
        correlation_id: commit_id,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Appended,
    Conflict,
    Duplicate(u64),
}

/// Appends arriving together (on the embedded log, a few group commits for the whole burst)
/// are each decided against the log: an aggregate's head is found whether or not other
/// aggregates of the burst exist, a stale expected position is refused, a new aggregate is
/// refused only when the append expected it to exist, an aggregate of another type with
/// the same id is another aggregate, and a commit id already stored answers its original
/// position.
async fn a_burst_of_appends_is_decided_per_aggregate_against_the_log(backend: Backend) {
    let (_stores, log) = start(backend).await;
    let port = log.port();
    let existing: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut heads = BTreeMap::new();
    let mut first_commits = BTreeMap::new();
    for id in &existing {
        let commit_id = Uuid::now_v7();
        let outcome = port
            .append(raw_commit("alert", *id, commit_id, 0))
            .await
            .unwrap();
        heads.insert(*id, outcome.position);
        first_commits.insert(*id, commit_id);
    }
    let before = port.last_position().await.unwrap();
    let groups_before = match &log {
        TestLog::Sqlite(l) => l.group_commits(),
        TestLog::JetStream(_) => 0,
    };

    // Interleaved, for each existing aggregate and a new one: appends at the right and at a
    // stale expected position for each, an incident with the alert's id, and now and then
    // the alert's first commit sent again.
    let fresh: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut burst = Vec::new();
    for (i, (old, new)) in existing.iter().zip(&fresh).enumerate() {
        let head = heads[old];
        burst.push(("alert", *old, Uuid::now_v7(), head, Expect::Appended));
        burst.push(("alert", *new, Uuid::now_v7(), 0, Expect::Appended));
        burst.push(("alert", *old, Uuid::now_v7(), 0, Expect::Conflict));
        burst.push(("alert", *new, Uuid::now_v7(), head, Expect::Conflict));
        burst.push(("incident", *old, Uuid::now_v7(), 0, Expect::Appended));
        if i % 8 == 0 {
            burst.push((
                "alert",
                *old,
                first_commits[old],
                0,
                Expect::Duplicate(head),
            ));
        }
    }
    let outcomes =
        futures::future::join_all(burst.iter().map(|(kind, id, commit_id, expected, _)| {
            let port = port.clone();
            let commit = raw_commit(kind, *id, *commit_id, *expected);
            async move { port.append(commit).await }
        }))
        .await;
    for ((kind, id, _, expected, expect), outcome) in burst.iter().zip(&outcomes) {
        let got = match outcome {
            Ok(o) if o.duplicate => Expect::Duplicate(o.position),
            Ok(_) => Expect::Appended,
            Err(LogError::Conflict) => Expect::Conflict,
            Err(e) => panic!("{kind} {id} expecting {expected}: {e}"),
        };
        assert_eq!(
            got, *expect,
            "{kind} {id} expecting {expected}: {outcome:?}"
        );
    }
    let appended = burst.iter().filter(|b| b.4 == Expect::Appended).count() as u64;
    assert_eq!(port.last_position().await.unwrap(), before + appended);
    for id in existing.iter().chain(&fresh) {
        let alerts = port.read_aggregate("alert", *id).await.unwrap();
        let incidents = port.read_aggregate("incident", *id).await.unwrap();
        let (alerts_expected, incidents_expected) = if heads.contains_key(id) {
            (2, 1)
        } else {
            (1, 0)
        };
        assert_eq!(alerts.len(), alerts_expected, "alert {id}");
        assert_eq!(incidents.len(), incidents_expected, "incident {id}");
    }
    // The burst was decided in groups, not one append per group.
    if let TestLog::Sqlite(l) = &log {
        let groups = l.group_commits() - groups_before;
        assert!(
            groups * 10 <= burst.len() as u64,
            "{} appends in {groups} group commits",
            burst.len()
        );
    }
}

/// Waits until the embedded writer knows every id in its log (its start-up scan is done).
async fn knowing_ids(log: &SqliteLog) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        if log.knows_ids() {
            return;
        }
        // The writer takes the scan in at its next group: an append nobody else makes.
        let _ = log
            .append(raw_commit("probe", Uuid::new_v4(), Uuid::now_v7(), 0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the writer never finished reading the log's ids");
}

/// The embedded writer decides an append that creates an aggregate with a new commit id
/// without looking the log up, from what it knows of the ids in the log; reopened, it learns
/// them again by scanning the log (here a few ids per statement, so across many pages and
/// with aggregates spanning page boundaries), so every stored aggregate still refuses a
/// second first commit and every stored commit id still answers its original position.
#[tokio::test]
async fn the_embedded_writer_knows_the_ids_in_its_log_without_looking_them_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let config = SqliteLogConfig {
        scan_page: 7,
        ..SqliteLogConfig::new(&path)
    };
    let mut stored = Vec::new();
    {
        let log = SqliteLog::open(config.clone()).await.unwrap();
        knowing_ids(&log).await;
        let without_before = log.appends_without_lookup();
        let ids: Vec<Uuid> = (0..120).map(|_| Uuid::new_v4()).collect();
        let outcomes = futures::future::join_all(ids.iter().map(|id| {
            let commit_id = Uuid::now_v7();
            let log = log.clone();
            async move {
                let o = log
                    .append(raw_commit("alert", *id, commit_id, 0))
                    .await
                    .unwrap();
                (*id, commit_id, o)
            }
        }))
        .await;
        // New aggregates with new commit ids: none needed a lookup.
        assert_eq!(log.appends_without_lookup() - without_before, 120);
        for (id, commit_id, o) in outcomes {
            assert!(!o.duplicate);
            stored.push((id, commit_id, o.position));
            // Every third aggregate gets more commits: the aggregate scan reads each once,
            // the commit-id scan every one.
            if stored.len() % 3 == 0 {
                let mut head = o.position;
                for _ in 0..4 {
                    let commit_id = Uuid::now_v7();
                    head = log
                        .append(raw_commit("alert", id, commit_id, head))
                        .await
                        .unwrap()
                        .position;
                    stored.push((id, commit_id, head));
                }
            }
        }
        // The same commit id again, and the same aggregate created again, each with the
        // other new: neither is certainly new, both are decided from the log.
        let (id, commit_id, position) = stored[0];
        let again = log
            .append(raw_commit("alert", Uuid::new_v4(), commit_id, 0))
            .await
            .unwrap();
        assert!(again.duplicate && again.position == position, "{again:?}");
        let err = log
            .append(raw_commit("alert", id, Uuid::now_v7(), 0))
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Conflict), "{err}");
    }
    // Closed, then opened again: what the writer knows comes from the scan alone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = SqliteLog::open(config).await.unwrap();
    knowing_ids(&log).await;
    let without_before = log.appends_without_lookup();
    let outcomes = futures::future::join_all(stored.iter().map(|(id, commit_id, _)| {
        let log = log.clone();
        let (id, commit_id) = (*id, *commit_id);
        async move {
            (
                log.append(raw_commit("alert", Uuid::new_v4(), commit_id, 0))
                    .await,
                log.append(raw_commit("alert", id, Uuid::now_v7(), 0)).await,
            )
        }
    }))
    .await;
    for ((id, commit_id, position), (same_commit, same_aggregate)) in stored.iter().zip(outcomes) {
        let same_commit = same_commit.unwrap();
        assert!(
            same_commit.duplicate && same_commit.position == *position,
            "commit {commit_id}: {same_commit:?}"
        );
        assert!(
            matches!(same_aggregate, Err(LogError::Conflict)),
            "aggregate {id}: {same_aggregate:?}"
        );
    }
    assert_eq!(log.appends_without_lookup(), without_before);
    let fresh = log
        .append(raw_commit("alert", Uuid::new_v4(), Uuid::now_v7(), 0))
        .await
        .unwrap();
    assert!(!fresh.duplicate);
    assert_eq!(log.appends_without_lookup(), without_before + 1);
    // A commit id the scan missed would have been refused by the log's unique index and its
    // group decided again with every append looked up (answered right, but counted).
    assert_eq!(log.groups_decided_again(), 0);
    assert_eq!(log.commits_learned(), 0);
    assert!(log.knows_ids());
}

/// Two processes appending to one embedded log (semsd refuses to share its data directory,
/// but the file can be opened twice): what one writer knows of the log's ids goes stale when
/// the other appends. The log itself tells the stale writer — SQLite numbers the rows it
/// inserts after the other's, a commit id the other stored is refused, or the last position
/// it looks up is not the one it knows — and it reads what the other process appended
/// before deciding again: an aggregate the other created is
/// not created twice, and a commit id the other stored answers its position.
#[tokio::test]
async fn an_embedded_writer_whose_log_another_process_appended_to_decides_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    // Each group sweeps the whole aggregate index, so each writer finds entries and
    // watermarks the other moved.
    let config = SqliteLogConfig {
        index_sweep_commits: 1,
        ..SqliteLogConfig::new(&path)
    };
    let ours = SqliteLog::open(config.clone()).await.unwrap();
    knowing_ids(&ours).await;
    let other = SqliteLog::open(config).await.unwrap();

    // Found by the numbering: the other creates an aggregate, then ours is asked to create
    // it too, in a group of appends that need no lookup.
    let id = Uuid::new_v4();
    let theirs = other
        .append(raw_commit("alert", id, Uuid::now_v7(), 0))
        .await
        .unwrap();
    let err = ours
        .append(raw_commit("alert", id, Uuid::now_v7(), 0))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict), "{err}");
    assert_eq!(ours.commits_learned(), 1);
    assert_eq!(ours.groups_decided_again(), 1);
    let commits = ours.read_aggregate("alert", id).await.unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].position, theirs.position);

    // Likewise for a commit id only the other stored.
    let commit_id = Uuid::now_v7();
    let stored = other
        .append(raw_commit("alert", Uuid::new_v4(), commit_id, 0))
        .await
        .unwrap();
    let again = ours
        .append(raw_commit("alert", Uuid::new_v4(), commit_id, 0))
        .await
        .unwrap();
    assert!(
        again.duplicate && again.position == stored.position,
        "{again:?}"
    );
    assert_eq!(ours.commits_learned(), 2);
    assert_eq!(ours.groups_decided_again(), 2);

    // Found by the last position looked up, in a group that writes nothing (a stale
    // expected position): what the other appended is read all the same, so the aggregate
    // it created is known when ours is next asked to create it.
    let existing = Uuid::new_v4();
    let head = ours
        .append(raw_commit("alert", existing, Uuid::now_v7(), 0))
        .await
        .unwrap()
        .position;
    let id = Uuid::new_v4();
    other
        .append(raw_commit("alert", id, Uuid::now_v7(), 0))
        .await
        .unwrap();
    let err = ours
        .append(raw_commit("alert", existing, Uuid::now_v7(), head - 1))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict), "{err}");
    assert_eq!(ours.commits_learned(), 3);
    assert_eq!(ours.groups_decided_again(), 3);
    let err = ours
        .append(raw_commit("alert", id, Uuid::now_v7(), 0))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict), "{err}");
    assert_eq!(ours.read_aggregate("alert", id).await.unwrap().len(), 1);
    assert!(ours.knows_ids());

    // Positions stay gapless and both writers go on appending.
    for log in [&ours, &other, &ours] {
        let o = log
            .append(raw_commit("alert", Uuid::new_v4(), Uuid::now_v7(), 0))
            .await
            .unwrap();
        assert_eq!(o.position, log.state().await.unwrap().1);
    }
    let (count, last) = ours.state().await.unwrap();
    assert_eq!(count, last);
    for log in [&ours, &other] {
        let commits = log.read_aggregate("alert", existing).await.unwrap();
        assert_eq!(commits.len(), 1, "each instance reads what the other swept");
    }
}

/// Another process appending while a writer's start-up scan is still reading the log's ids:
/// the scan may already be past the new aggregate's id (here it sorts first), and the
/// writer's groups until the scan is in are looked up. Such a group finds the log's last
/// position is not the one the writer knows, and the writer reads what was appended, so
/// once the scan is in, the aggregate the other process created is not created again.
#[tokio::test]
async fn another_process_appending_during_the_start_up_scan_is_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let mut stored = Vec::new();
    {
        let log = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
        let outcomes = futures::future::join_all((0..4_000).map(|_| {
            let log = log.clone();
            let id = Uuid::new_v4();
            async move {
                let o = log
                    .append(raw_commit("alert", id, Uuid::now_v7(), 0))
                    .await
                    .unwrap();
                (id, o.position)
            }
        }))
        .await;
        stored.extend(outcomes);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // One id per statement: the scan takes thousands of statements.
    let other = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
    let ours = SqliteLog::open(SqliteLogConfig {
        scan_page: 1,
        ..SqliteLogConfig::new(&path)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let first = Uuid::from_u128(1);
    other
        .append(raw_commit("alert", first, Uuid::now_v7(), 0))
        .await
        .unwrap();
    let (existing, head) = stored[0];
    ours.append(raw_commit("alert", existing, Uuid::now_v7(), head))
        .await
        .unwrap();
    assert!(
        !ours.knows_ids(),
        "the scan finished before the group it should race with"
    );
    assert_eq!(ours.commits_learned(), 1);

    knowing_ids(&ours).await;
    let err = ours
        .append(raw_commit("alert", first, Uuid::now_v7(), 0))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict), "{err}");
    assert_eq!(ours.read_aggregate("alert", first).await.unwrap().len(), 1);
}

/// The bundled SQLite is built (`.cargo/config.toml`, `LIBSQLITE3_FLAGS`) without the two
/// process-wide locks its default build takes: one around every allocation (memory
/// statistics) and one around every page-cache lookup (one cache shared by all connections).
/// With the log's writer, its readers and the read model's writer on separate threads they
/// contended on every page; without them the embedded store ingests ~10% faster
/// (`docs/BENCHMARKS.md`). A build that loses the flags fails here.
#[tokio::test]
async fn the_bundled_sqlite_runs_without_process_wide_allocation_and_page_cache_locks() {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{options:?}"
    );
    assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
}

/// A log that lost its tail (here: a commit deleted behind the log's back, as a power loss or
/// an older backup would lose it) is behind the handler's cached copy of an aggregate. The
/// append is refused, and catching the copy up finds nothing: the handler must read the
/// aggregate again from the log, or every later command on it would be refused as a conflict.
#[tokio::test]
async fn a_cached_aggregate_ahead_of_a_log_that_lost_its_tail_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
    let test_log = TestLog::Sqlite(log.clone());
    let h = handler(&test_log, "ana");
    let (id, _) = opened_incident(&h).await;
    let lost = h
        .execute::<Incident>(id, &note("lost with the tail"), &CommandMeta::default())
        .await
        .unwrap();
    assert_eq!((lost.position, lost.version), (2, 2));

    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for statement in [
        "DROP TRIGGER commits_no_delete",
        "DELETE FROM commits WHERE position = 2",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }

    let after = h
        .execute::<Incident>(id, &note("after the loss"), &CommandMeta::default())
        .await
        .unwrap();
    assert_eq!(after.version, 2, "decided on what the log holds");
    let commits = log.read_aggregate("incident", id).await.unwrap();
    assert_eq!(commits.len(), 2);
    verify_chain(&commits).unwrap();
}

/// Under steady appends the background checkpointer never finds the whole WAL copied, and
/// SQLite rewinds the WAL only when it is: without the writer's own checkpoint every few
/// megabytes the WAL grew without bound (549 MB in 20 s of benchmark load). The background
/// checkpointer's periodic copies are kept out of the way here (it copies only when the
/// writer asks it to catch up before a rewind), so what bounds the WAL is the writer's
/// rewinds; the same load with rewinding switched off shows the WAL the test would
/// otherwise find.
#[tokio::test]
async fn the_embedded_log_rewinds_its_wal_under_steady_appends() {
    async fn wal_after_load(rewind_after_bytes: usize) -> (u64, WalRewinds) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let log = SqliteLog::open(SqliteLogConfig {
            checkpoint_interval: Duration::from_secs(3600),
            rewind_after_bytes,
            ..SqliteLogConfig::new(&path)
        })
        .await
        .unwrap();
        let h = handler(&TestLog::Sqlite(log.clone()), "ana");
        let text = "x".repeat(2_000);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let h = h.clone();
                let text = text.clone();
                tokio::spawn(async move {
                    let (id, _) = opened_incident(&h).await;
                    for _ in 0..40 {
                        h.execute::<Incident>(id, &note(&text), &CommandMeta::default())
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.state().await.unwrap().0, 32 * 41);
        let mut wal = path.into_os_string();
        wal.push("-wal");
        (std::fs::metadata(&wal).unwrap().len(), log.wal_rewinds())
    }
    // 1,312 commits of ~2.5 KB: ~3.3 MB of envelopes, more in WAL frames.
    let (unbounded, none) = wal_after_load(usize::MAX).await;
    let (rewound, rewinds) = wal_after_load(64 * 1024).await;
    assert_eq!(none.rewinds, 0);
    assert!(
        rewinds.rewinds > rewinds.without_catch_up,
        "some rewinds should have followed the background checkpointer's catch-up: {rewinds:?}"
    );
    assert!(
        unbounded > 3 * 1024 * 1024,
        "without rewinding the WAL should hold every commit: {unbounded} bytes"
    );
    assert!(
        rewound < 1024 * 1024,
        "the writer should have rewound the WAL every 64 KiB of commits: {rewound} bytes"
    );
}

/// The embedded feed reads a batch in statements of a bounded number of rows, and closes it
/// once it holds enough envelope bytes: a batch bound of thousands of commits of up to
/// 1 MiB each must not mean gigabytes held in memory.
#[tokio::test]
async fn the_embedded_feed_reads_in_bounded_statements_and_closes_a_batch_at_its_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(SqliteLogConfig::new(dir.path().join("events.db")))
        .await
        .unwrap();
    let h = handler(&TestLog::Sqlite(log.clone()), "ana");
    let (id, _) = opened_incident(&h).await;
    let text = "x".repeat(5_000);
    for _ in 0..9 {
        h.execute::<Incident>(id, &note(&text), &CommandMeta::default())
            .await
            .unwrap();
    }
    let sizes = |batch: &[sems_app::FedCommit]| {
        (
            batch.iter().map(|c| c.commit.position).collect::<Vec<_>>(),
            batch.iter().map(|c| c.commit.bytes.len()).sum::<usize>(),
        )
    };

    // Three rows per statement, no byte bound: one batch of all ten, read on while full.
    let mut feed = SqliteFeed::new(log.clone()).with_limits(3, usize::MAX);
    feed.open(0).await.unwrap();
    let (positions, _) = sizes(
        &feed
            .next_batch(1_000, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    assert_eq!(positions, (1..=10).collect::<Vec<_>>());

    // Two rows per statement and a bound of 15,000 bytes: each note's commit is over 5,000
    // bytes, so a batch closes at its third or fourth commit, wherever the bound is reached.
    let mut feed = SqliteFeed::new(log.clone()).with_limits(2, 15_000);
    feed.open(0).await.unwrap();
    let mut batches = Vec::new();
    loop {
        let batch = feed
            .next_batch(1_000, Duration::from_millis(100))
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        batches.push(sizes(&batch));
    }
    let positions: Vec<_> = batches.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        positions,
        [vec![1, 2, 3, 4], vec![5, 6, 7], vec![8, 9, 10]],
        "batch sizes in bytes: {:?}",
        batches.iter().map(|(_, b)| b).collect::<Vec<_>>()
    );
    assert!(batches.iter().all(|(_, b)| *b >= 15_000));

    // Within one statement, the batch closes at the commit that reaches the byte bound.
    let mut feed = SqliteFeed::new(log.clone()).with_limits(1_000, 15_000);
    feed.open(0).await.unwrap();
    let (positions, bytes) = sizes(
        &feed
            .next_batch(1_000, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    assert_eq!(positions, [1, 2, 3, 4], "{bytes} bytes");

    // The batch bound still holds within a read.
    let mut feed = SqliteFeed::new(log).with_limits(2, usize::MAX);
    feed.open(4).await.unwrap();
    let (positions, _) = sizes(&feed.next_batch(3, Duration::from_secs(5)).await.unwrap());
    assert_eq!(positions, [5, 6, 7]);
}

/// A handler keeps a bounded number of aggregates in memory (two generations of half each);
/// an evicted aggregate is read back from the log, so commands on it go on deciding against
/// its whole history (versions continue, nothing is refused as stale).
#[tokio::test]
async fn aggregates_evicted_from_the_handlers_cache_are_read_back_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = TestLog::Sqlite(
        SqliteLog::open(SqliteLogConfig::new(dir.path().join("events.db")))
            .await
            .unwrap(),
    );
    let h = CommandHandler::new(
        log.port(),
        Arc::new(SystemClock),
        HandlerConfig {
            actor: "ana".into(),
            cache_capacity: 4,
            ..HandlerConfig::default()
        },
    );
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(opened_incident(&h).await.0);
    }
    for round in 2..=3u64 {
        for id in &ids {
            let c = h
                .execute::<Incident>(*id, &note("still here"), &CommandMeta::default())
                .await
                .unwrap();
            assert_eq!(c.version, round, "incident {id} after {round} commits");
            assert!(
                h.cached_aggregates() <= 4,
                "{} cached",
                h.cached_aggregates()
            );
        }
    }
}

/// The embedded feed reads envelopes of up to 64 KiB inline and larger ones in a statement
/// of their own: either way the projector gets every byte, in position order, and a
/// large envelope still counts towards the batch's byte bound.
#[tokio::test]
async fn the_embedded_feed_delivers_envelopes_read_apart_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(SqliteLogConfig::new(dir.path().join("events.db")))
        .await
        .unwrap();
    let sizes = [100, 64 * 1024, 64 * 1024 + 1, 300, 1024 * 1024, 200_000, 10];
    let mut appended = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let mut commit = raw_commit("alert", Uuid::new_v4(), Uuid::now_v7(), 0);
        commit.bytes = (0..*size).map(|b| (b * 7 + i) as u8).collect();
        appended.push(commit.bytes.clone());
        log.append(commit).await.unwrap();
    }

    let first_batch = |feed: SqliteFeed| async move {
        let mut feed = feed;
        feed.open(0).await.unwrap();
        let batch = feed
            .next_batch(1_000, Duration::from_secs(5))
            .await
            .unwrap();
        let positions = batch.iter().map(|c| c.commit.position).collect::<Vec<_>>();
        (batch, positions)
    };
    let (batch, positions) = first_batch(SqliteFeed::new(log.clone())).await;
    assert_eq!(positions, (1..=7).collect::<Vec<_>>());
    for (fed, bytes) in batch.iter().zip(&appended) {
        assert!(
            fed.commit.bytes == *bytes,
            "commit {} came back with {} bytes instead of its {}",
            fed.commit.position,
            fed.commit.bytes.len(),
            bytes.len()
        );
    }

    // A bound of 100 KiB closes the batch at the first large envelope read apart.
    let (batch, positions) = first_batch(SqliteFeed::new(log).with_limits(1_000, 100 * 1024)).await;
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(batch[2].commit.bytes, appended[2]);
}

/// A projector's batch takes what is ready and stays open only briefly for more: commits
/// arriving one after another without pause must not keep it open until it is full (that
/// was tens of milliseconds of read-model lag under steady traffic).
async fn a_steady_trickle_of_commits_does_not_hold_a_projector_batch_open(backend: Backend) {
    let (_stores, log) = start(backend).await;
    let h = handler(&log, "ana");
    let (id, _) = opened_incident(&h).await;
    const NOTES: usize = 400;
    let trickle = tokio::spawn({
        let h = h.clone();
        async move {
            for i in 0..NOTES {
                h.execute::<Incident>(id, &note(&format!("note {i}")), &CommandMeta::default())
                    .await
                    .unwrap();
            }
        }
    });
    let mut feed = log.feed("trickle");
    feed.open(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = feed
        .next_batch(1_000, Duration::from_secs(5))
        .await
        .unwrap();
    trickle.await.unwrap();
    assert!(!batch.is_empty());
    assert!(
        batch.len() < NOTES / 2,
        "one batch held {} of {} commits appended back to back",
        batch.len(),
        NOTES + 1
    );
    // Positions run on from the first commit, without gaps.
    for (i, c) in batch.iter().enumerate() {
        assert_eq!(c.commit.position, i as u64 + 1);
    }
}

/// The projector's feed delivers the trace context each commit was appended under (its
/// batch span links to the producing calls), and none for a commit appended without.
async fn the_feed_delivers_each_commit_s_trace_context(backend: Backend) {
    let (_stores, log) = start(backend).await;
    // Made first, as semsd's projector is: the embedded feed then takes the commits from
    // the writer's memory.
    let mut feed = log.feed("traces");
    let h = handler(&log, "ana");
    let (id, _) = opened_incident(&h).await;
    let traced = CommandMeta {
        trace_context: Some(sems_app::TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("sems=1,other=2".into()),
        }),
        ..Default::default()
    };
    let with = h
        .execute::<Incident>(id, &note("traced"), &traced)
        .await
        .unwrap();
    let without = h
        .execute::<Incident>(id, &note("untraced"), &CommandMeta::default())
        .await
        .unwrap();
    // Then a feed made afterwards, with the first gone: the embedded one reads the file.
    for (round, name) in [(1, "traces"), (2, "traces-later")] {
        if round == 2 {
            drop(feed);
            feed = log.feed(name);
        }
        feed.open(0).await.unwrap();
        let mut fed = Vec::new();
        while fed.len() < 3 {
            let batch = feed
                .next_batch(1_000, Duration::from_secs(5))
                .await
                .unwrap();
            assert!(!batch.is_empty(), "all three commits delivered");
            fed.extend(batch);
        }
        let at = |position: u64| fed.iter().find(|c| c.commit.position == position).unwrap();
        let traced_at = at(with.position);
        assert_eq!(
            traced_at.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "round {round}"
        );
        assert_eq!(traced_at.tracestate.as_deref(), Some("sems=1,other=2"));
        let untraced_at = at(without.position);
        assert_eq!(
            (
                untraced_at.traceparent.as_deref(),
                untraced_at.tracestate.as_deref()
            ),
            (None, None)
        );
    }
}

/// The embedded log's aggregate index is written behind the log, in sweeps over the key
/// space (here one every 32 commits): readers running while groups commit and sweeps move
/// entries from the writer's memory into the index table find every acknowledged commit of
/// an aggregate, once each and in order; the writer finds each aggregate's last position
/// wherever it is (a stale expected position is refused); a reopened log, whose memory is
/// read back from the log, finds them all again; and the table and the memory together hold
/// one entry per commit.
#[tokio::test]
async fn the_aggregate_index_written_behind_the_log_misses_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let config = SqliteLogConfig {
        index_sweep_commits: 32,
        ..SqliteLogConfig::new(&path)
    };
    let log = SqliteLog::open(config.clone()).await.unwrap();
    let acked: Arc<std::sync::Mutex<BTreeMap<Uuid, Vec<u64>>>> = Arc::default();
    let owners: Vec<Vec<Uuid>> = (0..8)
        .map(|_| (0..8).map(|_| Uuid::new_v4()).collect())
        .collect();
    let writers = owners.iter().cloned().map(|ids| {
        let (log, acked) = (log.clone(), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut heads: BTreeMap<Uuid, u64> = BTreeMap::new();
            for _ in 0..25 {
                for id in &ids {
                    let head = heads.get(id).copied().unwrap_or(0);
                    let o = log
                        .append(raw_commit("alert", *id, Uuid::now_v7(), head))
                        .await
                        .unwrap();
                    heads.insert(*id, o.position);
                    acked
                        .lock()
                        .unwrap()
                        .entry(*id)
                        .or_default()
                        .push(o.position);
                }
            }
        })
    });
    let writers: Vec<_> = writers.collect();
    let all: Vec<Uuid> = owners.concat();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (log, acked, all) = (log.clone(), Arc::clone(&acked), all.clone());
            tokio::spawn(async move {
                let mut reads = 0;
                for i in (r..).step_by(2) {
                    let id = all[i % all.len()];
                    let before = acked.lock().unwrap().get(&id).cloned().unwrap_or_default();
                    let read: Vec<u64> = log
                        .read_aggregate("alert", id)
                        .await
                        .unwrap()
                        .iter()
                        .map(|c| c.position)
                        .collect();
                    assert!(read.windows(2).all(|w| w[0] < w[1]), "{id}: {read:?}");
                    assert!(
                        before.iter().all(|p| read.contains(p)),
                        "{id}: acknowledged {before:?}, read {read:?}"
                    );
                    reads += 1;
                    if acked.lock().unwrap().values().map(Vec::len).sum::<usize>() == 64 * 25 {
                        return reads;
                    }
                }
                unreachable!()
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total = 64 * 25;
    assert_eq!(log.state().await.unwrap(), (total, total));
    // Sweeps ran: most entries are in the table, the memory holds about a sweep's worth.
    assert!(
        log.index_tail_len() < 200,
        "{} in memory",
        log.index_tail_len()
    );

    let check = |log: SqliteLog| {
        let acked = acked.clone();
        async move {
            for (id, positions) in &acked {
                let read: Vec<u64> = log
                    .read_aggregate("alert", *id)
                    .await
                    .unwrap()
                    .iter()
                    .map(|c| c.position)
                    .collect();
                assert_eq!(&read, positions, "{id}");
                assert!(
                    log.read_aggregate("incident", *id)
                        .await
                        .unwrap()
                        .is_empty()
                );
                let head = *positions.last().unwrap();
                let err = log
                    .append(raw_commit("alert", *id, Uuid::now_v7(), head - 1))
                    .await
                    .unwrap_err();
                assert!(matches!(err, LogError::Conflict), "{err}");
            }
        }
    };
    check(log.clone()).await;
    let in_memory = log.index_tail_len() as i64;
    drop(log);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let in_table: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM aggregate_index")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_table + in_memory, total as i64);
    pool.close().await;

    let reopened = SqliteLog::open(config).await.unwrap();
    assert_eq!(reopened.index_tail_len() as i64, in_memory);
    check(reopened.clone()).await;
    for (id, positions) in &acked {
        let head = *positions.last().unwrap();
        reopened
            .append(raw_commit("alert", *id, Uuid::now_v7(), head))
            .await
            .unwrap();
    }
}

/// A log made before the aggregate index had a table of its own (migration 0001 alone,
/// with SQLite's index on `commits`) is migrated at open: every commit gets its entry, the
/// old index goes, and aggregates read and append as before.
#[tokio::test]
async fn a_log_from_before_the_aggregate_index_table_is_migrated_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let migrations =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
    let pool = sems_testkit::sqlite_at_migration(&path, migrations, 1).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (position, id) in [(1, a), (2, b), (3, a)] {
        let commit_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO commits (position, commit_id, aggregate_type, aggregate_id, \
             event_types, correlation_id, bytes) VALUES (?, ?, 'alert', ?, 'AlertReceived', ?, ?)",
        )
        .bind(position)
        .bind(commit_id.to_string())
        .bind(id.to_string())
        .bind(commit_id.to_string())
        .bind(format!("{{\"commit\":\"{commit_id}\"}}").into_bytes())
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let log = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
    let positions = |commits: Vec<sems_app::StoredCommit>| -> Vec<u64> {
        commits.iter().map(|c| c.position).collect()
    };
    assert_eq!(
        positions(log.read_aggregate("alert", a).await.unwrap()),
        [1, 3]
    );
    assert_eq!(
        positions(log.read_aggregate("alert", b).await.unwrap()),
        [2]
    );
    assert_eq!(log.index_tail_len(), 0);
    let err = log
        .append(raw_commit("alert", a, Uuid::now_v7(), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict), "{err}");
    let o = log
        .append(raw_commit("alert", a, Uuid::now_v7(), 3))
        .await
        .unwrap();
    assert_eq!(o.position, 4);
    assert_eq!(
        positions(log.read_aggregate("alert", a).await.unwrap()),
        [1, 3, 4]
    );

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (old_index, entries, watermarks): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE name = 'commits_aggregate'), \
         (SELECT COUNT(*) FROM aggregate_index WHERE position <= 3), \
         (SELECT COUNT(*) FROM aggregate_index_sweep WHERE through >= 3)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((old_index, entries, watermarks), (0, 3, 4096));
}

/// A log that lost commits the writer had seen (deleted behind its back, or an older copy of
/// the file put in place) after sweeps had moved them into the aggregate index: the writer
/// cuts the index back to the log's last position, positions go on from there without a
/// gap, and a commit at a reused position is found by readers and by the writer's
/// concurrency check, also after a reopen.
#[tokio::test]
async fn a_log_that_lost_commits_cuts_its_aggregate_index_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    // Every group sweeps every range: what the log held is in the index table at once.
    let config = SqliteLogConfig {
        index_sweep_commits: 1,
        ..SqliteLogConfig::new(&path)
    };
    let log = SqliteLog::open(config.clone()).await.unwrap();
    let (a, b, c, d) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    for (id, expected) in [(a, 0), (b, 0), (a, 1), (d, 0)] {
        log.append(raw_commit("alert", id, Uuid::now_v7(), expected))
            .await
            .unwrap();
    }
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let swept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM aggregate_index")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(swept, 3, "a@1, b@2 and a@3 are in the table");
    for statement in [
        "DROP TRIGGER commits_no_delete",
        "DELETE FROM commits WHERE position > 1",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }

    let o = log
        .append(raw_commit("alert", c, Uuid::now_v7(), 0))
        .await
        .unwrap();
    assert_eq!(o.position, 2, "positions go on from the log's last");
    let check = |log: SqliteLog| async move {
        let positions = |commits: Vec<sems_app::StoredCommit>| -> Vec<u64> {
            commits.iter().map(|c| c.position).collect()
        };
        assert_eq!(
            positions(log.read_aggregate("alert", c).await.unwrap()),
            [2]
        );
        assert!(log.read_aggregate("alert", b).await.unwrap().is_empty());
        let err = log
            .append(raw_commit("alert", c, Uuid::now_v7(), 0))
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Conflict), "{err}");
    };
    check(log.clone()).await;
    assert_eq!(log.read_aggregate("alert", a).await.unwrap().len(), 1);
    // More groups sweep again, over the cut index.
    let o = log
        .append(raw_commit("alert", a, Uuid::now_v7(), 1))
        .await
        .unwrap();
    assert_eq!(o.position, 3);
    drop(log);
    let reopened = SqliteLog::open(config).await.unwrap();
    check(reopened.clone()).await;
    let commits = reopened.read_aggregate("alert", a).await.unwrap();
    assert_eq!(
        commits.iter().map(|c| c.position).collect::<Vec<_>>(),
        [1, 3]
    );

    // Lost while the log is closed: the cut happens at open.
    let (e, f, g) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for id in [e, f] {
        reopened
            .append(raw_commit("alert", id, Uuid::now_v7(), 0))
            .await
            .unwrap();
    }
    drop(reopened);
    let watermark: i64 = sqlx::query_scalar("SELECT MAX(through) FROM aggregate_index_sweep")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(watermark, 4, "e@4 was swept when f was appended");
    sqlx::query("DELETE FROM commits WHERE position > 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let log = SqliteLog::open(SqliteLogConfig {
        index_sweep_commits: 1,
        ..SqliteLogConfig::new(&path)
    })
    .await
    .unwrap();
    assert_eq!(
        log.append(raw_commit("alert", g, Uuid::now_v7(), 0))
            .await
            .unwrap()
            .position,
        4
    );
    assert_eq!(log.read_aggregate("alert", g).await.unwrap().len(), 1);
    assert!(log.read_aggregate("alert", e).await.unwrap().is_empty());
    let err = log
        .append(raw_commit("alert", g, Uuid::now_v7(), 0))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict), "{err}");
}

/// The embedded feed takes the commits its own process's writer stored from memory and
/// reads the others from the file: commits another process appended in between come in
/// their places, byte for byte; a file that lost commits this process stored, and where
/// another process stored others at their positions since, is read as it is, not as
/// remembered.
#[tokio::test]
async fn the_embedded_feed_takes_its_own_commits_from_memory_and_others_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let ours = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
    let theirs = SqliteLog::open(SqliteLogConfig::new(&path)).await.unwrap();
    // Each process has a feed from the start, as semsd's projector: a log holds its
    // commits in memory only while one exists.
    let (_ours_feed, _theirs_feed) = (
        SqliteFeed::new(ours.clone()),
        SqliteFeed::new(theirs.clone()),
    );
    let commit_padded = |padding: usize| {
        let mut commit = raw_commit("alert", Uuid::new_v4(), Uuid::now_v7(), 0);
        let mut bytes = commit.bytes.to_vec();
        bytes.extend_from_slice(&[b' '; 1_000][..padding]);
        commit.bytes = bytes.into();
        commit
    };
    let mut appended = Vec::new();
    for (log, n) in [
        (&ours, 3),
        (&theirs, 2),
        (&ours, 3),
        (&theirs, 1),
        (&ours, 2),
    ] {
        for _ in 0..n {
            let commit = commit_padded(appended.len() * 37 % 1_000);
            let bytes = commit.bytes.clone();
            let outcome = log.append(commit).await.unwrap();
            appended.push((outcome.position, bytes));
        }
    }
    assert_eq!(
        appended.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    let delivered = |mut feed: SqliteFeed, max: usize| async move {
        feed.open(0).await.unwrap();
        let mut all = Vec::new();
        loop {
            let batch = feed
                .next_batch(max, Duration::from_millis(100))
                .await
                .unwrap();
            if batch.is_empty() {
                break;
            }
            all.extend(
                batch
                    .into_iter()
                    .map(|c| (c.commit.position, c.commit.bytes)),
            );
        }
        (all, feed.from_memory())
    };
    let shape =
        |all: &[(u64, bytes::Bytes)]| all.iter().map(|(p, b)| (*p, b.len())).collect::<Vec<_>>();

    // One commit per batch: each of ours from memory, each of theirs from the file.
    let (all, from_memory) = delivered(SqliteFeed::new(ours.clone()), 1).await;
    assert!(all == appended, "one at a time: {:?}", shape(&all));
    assert_eq!(from_memory, 8);
    // Whole batches: a run of ours from memory, the rest of the batch from the file.
    let (all, from_memory) = delivered(SqliteFeed::new(ours.clone()), 1_000).await;
    assert!(all == appended, "in batches: {:?}", shape(&all));
    assert_eq!(from_memory, 3);
    // The other process's feed remembers its own three.
    let (all, from_memory) = delivered(SqliteFeed::new(theirs.clone()), 1).await;
    assert!(all == appended);
    assert_eq!(from_memory, 3);

    // Commits 10 and 11 (ours) are lost behind the process's back, and the other process
    // stores two commits of the same lengths at their positions: the feed delivers what the
    // file holds.
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for statement in [
        "DROP TRIGGER commits_no_delete",
        "DELETE FROM commits WHERE position >= 10",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    appended.truncate(9);
    for padding in [9 * 37, 10 * 37] {
        let commit = commit_padded(padding);
        let bytes = commit.bytes.clone();
        let outcome = theirs.append(commit).await.unwrap();
        appended.push((outcome.position, bytes));
    }
    assert_eq!(appended[9].0, 10, "the lost positions are stored again");
    let (all, from_memory) = delivered(SqliteFeed::new(ours.clone()), 1).await;
    assert!(all == appended, "after the loss: {:?}", shape(&all));
    assert_eq!(
        from_memory, 6,
        "1–3 and 6–8 from memory; 10, checked against the file, was forgotten"
    );
}
