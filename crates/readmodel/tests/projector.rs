//! The projector on both stores: a real nats-server and a real PostgreSQL database, and the
//! embedded SQLite log and read model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{SubsecRound, Utc};
use sems_app::{CommandHandler, CommandMeta, CommitFeed, HandlerConfig, Sems, SystemClock};
use sems_domain::{
    Level, Observable, Severity, alert::AlertReport, crisis::DecisionInput,
    incident::IncidentCommand,
};
use sems_readmodel::{
    AlertQuery, HandOff, IncidentReadModel, ProjectedCommit, Projector, ProjectorConfig, projection,
};
use sems_testkit::{Backend, TestLog, TestReadModel, TestStores, on_both_stores};
use tokio::sync::oneshot;
use uuid::Uuid;

on_both_stores!(
    a_crash_between_commit_and_ack_applies_nothing_twice,
    a_rebuild_from_sequence_1_produces_identical_rows,
    only_one_projector_instance_writes,
    a_gap_in_delivered_commits_is_refused_and_applies_nothing,
    alert_rows_keep_every_character_and_value,
    a_nul_character_in_an_earlier_commit_is_shown_not_fatal,
    a_log_shorter_than_the_read_model_is_refused,
    alerts_are_read_by_incident_through_an_index_of_attached_alerts_only,
);

struct World {
    stores: TestStores,
    log: TestLog,
    sems: Sems,
    /// What the handler appends, decoded, as `semsd`'s role `all` hands it to its projector.
    hand_off: Arc<HandOff>,
}

async fn world(backend: Backend) -> World {
    let stores = TestStores::start(backend).await.unwrap();
    let log = stores.log().await.unwrap();
    let hand_off = Arc::new(HandOff::default());
    let handler = CommandHandler::new(log.port(), Arc::new(SystemClock), HandlerConfig::default())
        .with_tap(hand_off.clone());
    let sems = Sems::new(Arc::new(handler), Severity::High);
    World {
        stores,
        log,
        sems,
        hand_off,
    }
}

fn report(i: usize) -> AlertReport {
    AlertReport {
        source: "siem".into(),
        source_ref: format!("case-{}", i % 40),
        title: format!("Impossible travel for user {i}"),
        description: "two logins 9,000 km apart".into(),
        severity: if i.is_multiple_of(4) {
            Severity::Critical
        } else {
            Severity::Low
        },
        occurred_at: Utc::now(),
        observables: vec![],
        labels: BTreeMap::from([("tenant".to_string(), "ops".to_string())]),
        raw: serde_json::json!({"n": i}),
    }
}

/// Alerts (with repeats), incidents opened from them, and commands on those incidents.
async fn activity(w: &World, round: usize) {
    let mut incidents = Vec::new();
    for i in 0..60 {
        let o = w
            .sems
            .ingest_alert(report(i + round * 7), CommandMeta::default())
            .await
            .unwrap();
        if let Some(id) = o.incident_id {
            incidents.push(id);
        }
    }
    incidents.sort();
    incidents.dedup();
    for (n, id) in incidents.iter().enumerate() {
        let note = IncidentCommand::AddNote {
            text: format!("round {round} note {n}"),
        };
        w.sems
            .incident_command(*id, note, CommandMeta::default())
            .await
            .unwrap();
        let _ = w
            .sems
            .incident_command(*id, IncidentCommand::Acknowledge, CommandMeta::default())
            .await;
        let notify = IncidentCommand::NotifyAuthority {
            authority: "national CSIRT".into(),
            reference: format!("CSIRT-{round}-{n}"),
            summary: "early warning".into(),
        };
        w.sems
            .incident_command(*id, notify, CommandMeta::default())
            .await
            .unwrap();
        let link = IncidentCommand::LinkRisk {
            risk_ref: format!("R-{round}"),
            rationale: "realised".into(),
        };
        w.sems
            .incident_command(*id, link, CommandMeta::default())
            .await
            .unwrap();
        // The incident's decision log: a decision, superseded, the new one amended and the
        // old one reviewed, each its own commit (so some straddle the projector's batches).
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        for command in [
            decision(first, None),
            decision(second, Some(first)),
            IncidentCommand::AmendDecision {
                decision_id: second,
                amendment: format!("round {round}: keep FS-02"),
                reason: "payroll run".into(),
            },
            IncidentCommand::ReviewDecision {
                decision_id: first,
                outcome: "too narrow".into(),
            },
        ] {
            w.sems
                .incident_command(*id, command, CommandMeta::default())
                .await
                .unwrap();
        }
    }
}

fn decision(id: Uuid, supersedes: Option<Uuid>) -> IncidentCommand {
    IncidentCommand::RecordDecision(Box::new(DecisionInput {
        decision_id: id,
        decision: "Isolate the segment".into(),
        rationale: "spreading".into(),
        options: vec![],
        information: vec![],
        assumptions: String::new(),
        risks_accepted: String::new(),
        powers: String::new(),
        decision_maker: "tom.tactical".into(),
        level: Level::Tactical,
        joint_with: String::new(),
        review_by: None,
        supersedes,
    }))
}

async fn store(w: &World, generation: &str) -> TestReadModel {
    w.stores.read_model(generation).await.unwrap()
}

fn feed(w: &World, durable: &str) -> Box<dyn CommitFeed> {
    w.log.feed(durable)
}

fn config() -> ProjectorConfig {
    ProjectorConfig {
        idle_wait: Duration::from_millis(100),
        retry_delay: Duration::from_millis(100),
        ..Default::default()
    }
}

/// Starts a projector; dropping the returned sender stops it.
fn spawn(store: TestReadModel, feed: Box<dyn CommitFeed>) -> oneshot::Sender<()> {
    spawn_with(store, feed, None)
}

/// Starts a projector, taking what `hand_off` holds when there is one.
fn spawn_with(
    store: TestReadModel,
    feed: Box<dyn CommitFeed>,
    hand_off: Option<Arc<HandOff>>,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let mut projector = Projector::new(store.store(), feed, config());
    if let Some(h) = hand_off {
        projector = projector.with_hand_off(h);
    }
    tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    stop
}

async fn caught_up(w: &World, store: &TestReadModel) {
    let (_, last) = w.log.state().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    store
        .wait_for(last, deadline)
        .await
        .expect("projector catches up");
}

/// Compares two dumps, showing only the first difference.
fn same_rows(a: &[String], b: &[String]) {
    if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
        panic!("rows differ:\n  {x}\n  {y}");
    }
    assert_eq!(a.len(), b.len(), "row counts differ");
}

/// Rows of one table in a dump.
fn rows<'a>(dump: &'a [String], table: &str) -> Vec<serde_json::Value> {
    let prefix = format!("{table} ");
    dump.iter()
        .filter_map(|line: &'a String| line.strip_prefix(&prefix))
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}

async fn a_crash_between_commit_and_ack_applies_nothing_twice(backend: Backend) {
    let w = world(backend).await;
    activity(&w, 0).await;
    let live = store(&w, "sems").await;

    // A projector commits a batch, then "crashes" before acknowledging it.
    let mut crashed = feed(&w, "projector_sems");
    crashed.open(0).await.unwrap();
    let (_, last) = w.log.state().await.unwrap();
    let mut batch = Vec::new();
    while batch
        .last()
        .is_none_or(|c: &sems_app::FedCommit| c.commit.position < last)
    {
        batch.extend(
            crashed
                .next_batch(10_000, Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let decoded: Vec<ProjectedCommit> = batch
        .iter()
        .map(|c| ProjectedCommit::decode(&c.commit).unwrap())
        .collect();
    let first = live.store().apply_batch(&decoded).await.unwrap();
    assert_eq!(first.applied, decoded.len());
    drop(crashed);
    let after_crash = live.dump().await.unwrap();

    // The same commits again (a redelivery) change nothing.
    let again = live.store().apply_batch(&decoded).await.unwrap();
    assert_eq!((again.applied, again.skipped), (0, decoded.len()));
    same_rows(&live.dump().await.unwrap(), &after_crash);

    // A restarted projector on the same durable consumer: unacknowledged commits come back
    // after ack_wait and are skipped; new ones are applied once.
    let stop = spawn(live.clone(), feed(&w, "projector_sems"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    same_rows(&live.dump().await.unwrap(), &after_crash); // redeliveries skipped
    activity(&w, 1).await;
    caught_up(&w, &live).await;
    drop(stop);

    let dump = live.dump().await.unwrap();
    let notes = rows(&dump, "incident_notes").len();
    let incidents = rows(&dump, "incidents").len();
    assert_eq!(
        notes,
        2 * incidents,
        "one note per incident per round, none twice"
    );
    let alerts: i64 = rows(&dump, "alerts")
        .iter()
        .map(|a| a["repeat_count"].as_i64().unwrap() + 1)
        .sum();
    assert_eq!(alerts, 120, "every report counted once");
}

async fn a_rebuild_from_sequence_1_produces_identical_rows(backend: Backend) {
    let w = world(backend).await;
    let live = store(&w, "sems").await;
    // The live projection takes the commits the handler hands off (as in `semsd`'s role
    // `all`): those of the first round, all held when it starts, then the others as they
    // come, batch by batch.
    w.hand_off.open(0); // as the projector does when it leads from checkpoint 0
    activity(&w, 0).await;
    let (_, first_round) = w.log.state().await.unwrap();
    let stop = spawn_with(
        live.clone(),
        feed(&w, "projector_sems"),
        Some(w.hand_off.clone()),
    );
    for round in 1..3 {
        activity(&w, round).await;
    }
    caught_up(&w, &live).await;
    drop(stop);
    assert!(
        w.hand_off.used() >= first_round,
        "the live projector took the {first_round} commits held for it: {}",
        w.hand_off.used()
    );

    // A rebuild, decoding every commit from the log: a fresh generation (schema or file) and
    // consumer from sequence 1.
    let rebuilt = store(&w, "sems_v2").await;
    let stop = spawn(rebuilt.clone(), feed(&w, "projector_sems_v2"));
    caught_up(&w, &rebuilt).await;
    drop(stop);

    let (a, b) = (live.dump().await.unwrap(), rebuilt.dump().await.unwrap());
    assert!(a.len() >= 80, "a real amount of rows: {}", a.len());
    same_rows(&a, &b);
    // On the embedded store the alerts' keys were swept out of memory into their table
    // (every 16 rows here), so later commits of those alerts found their rows there.
    for model in [&live, &rebuilt] {
        if let TestReadModel::Sqlite(m) = model {
            let alerts = rows(&a, "alerts").len();
            assert!(
                m.alert_keys_in_memory() < alerts / 2,
                "{} of {alerts} alert keys still in memory",
                m.alert_keys_in_memory()
            );
        }
    }
}

async fn only_one_projector_instance_writes(backend: Backend) {
    let w = world(backend).await;
    let s = store(&w, "sems").await.store();
    let first = s.try_lock().await.unwrap();
    assert!(first.is_some());
    assert!(
        s.try_lock().await.unwrap().is_none(),
        "a second instance stands by"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.try_lock().await.unwrap().is_some(),
        "and takes over when the first goes"
    );
}

async fn a_gap_in_delivered_commits_is_refused_and_applies_nothing(backend: Backend) {
    let w = world(backend).await;
    activity(&w, 0).await;
    let model = store(&w, "sems").await;
    let s = model.store();
    let log = w.log.port();
    let mut commits = Vec::new();
    for position in 1..=20 {
        let c = log.read_at(position).await.unwrap();
        commits.push(ProjectedCommit::decode(&c).unwrap());
    }
    let mut with_gap = commits.clone();
    with_gap.remove(7);
    let err = s.apply_batch(&with_gap).await.unwrap_err();
    assert!(err.to_string().contains("expected position 8"), "{err}");
    assert_eq!(s.checkpoint().await.unwrap(), 0);
    assert!(model.dump().await.unwrap().is_empty(), "nothing applied");
    // Delivered in the wrong order, the same commits are applied in stream order.
    let mut shuffled = commits.clone();
    shuffled.reverse();
    assert_eq!(s.apply_batch(&shuffled).await.unwrap().checkpoint, 20);
}

/// The leader's writer remembers the checkpoint it committed instead of reading it again
/// for every batch; anything else that moved the checkpoint makes the next batch fail and
/// apply nothing, and the batch after it starts from the checkpoint read again.
#[tokio::test]
async fn a_checkpoint_moved_under_the_leader_fails_its_next_batch() {
    let w = world(Backend::JetStream).await;
    activity(&w, 0).await;
    let model = store(&w, "moved").await;
    let s = model.store();
    let _lock = s
        .try_lock()
        .await
        .unwrap()
        .expect("the only instance leads");
    let log = w.log.port();
    let mut commits = Vec::new();
    for position in 1..=30 {
        commits.push(ProjectedCommit::decode(&log.read_at(position).await.unwrap()).unwrap());
    }
    assert_eq!(s.apply_batch(&commits[..10]).await.unwrap().checkpoint, 10);
    // A redelivery is skipped from the remembered checkpoint.
    let again = s.apply_batch(&commits[..10]).await.unwrap();
    assert_eq!(
        (again.applied, again.skipped, again.checkpoint),
        (0, 10, 10)
    );
    let at_10 = model.dump().await.unwrap();

    // Something else moves the checkpoint (here by hand: what the lock rules out).
    let admin = sqlx::PgPool::connect(&w.stores.database_url().unwrap())
        .await
        .unwrap();
    sqlx::query("UPDATE moved.projection_checkpoints SET position = 12")
        .execute(&admin)
        .await
        .unwrap();
    // The leader, remembering 10, writes 11 to 20, but its checkpoint write finds 12: the
    // whole batch is rolled back.
    let err = s.apply_batch(&commits[10..20]).await.unwrap_err();
    assert!(err.to_string().contains("no longer at 10"), "{err}");
    same_rows(&model.dump().await.unwrap(), &at_10);
    assert_eq!(s.checkpoint().await.unwrap(), 12);

    // The next batch starts from the checkpoint read again.
    let after = s.apply_batch(&commits[10..25]).await.unwrap();
    assert_eq!(
        (after.applied, after.skipped, after.checkpoint),
        (13, 2, 25)
    );
    assert_eq!(s.apply_batch(&commits[25..]).await.unwrap().checkpoint, 30);
}

/// A new alert row and the same row changed by a later batch are stored exactly as the pure
/// projection computed them, whatever their text holds (escapes, control characters, `\N`,
/// non-ASCII), on both stores.
async fn alert_rows_keep_every_character_and_value(backend: Backend) {
    let w = world(backend).await;
    let live = store(&w, "sems").await;
    let stop = spawn_with(
        live.clone(),
        feed(&w, "projector_sems"),
        Some(w.hand_off.clone()),
    );
    let tricky = "tab\there, line\nbreak, CR\r, back\\slash \\N \\t \"quoted\" — ünïcødé ✓";
    let report = AlertReport {
        source: "edr".into(),
        source_ref: "case-tricky".into(),
        title: tricky.into(),
        description: format!("{tricky}\n\n{tricky}"),
        severity: Severity::Low,
        // Microseconds, as every API hands times to the domain (and as the stores keep them).
        occurred_at: Utc::now().trunc_subsecs(6),
        observables: vec![Observable {
            kind: "path".into(),
            value: "C:\\Users\\x\t\"y\"".into(),
        }],
        labels: BTreeMap::from([("k\\ey".to_string(), "v\ta\nl".to_string())]),
        raw: serde_json::json!({
            "cmd": "a\\b\t\"c\"\n",
            "nested": [1.5, null, {"x": "\\N"}],
            // Floats whose shortest text a fast parser may read one unit off.
            "floats": [0.1, 0.30000000000000004, 5e-324, 2.2250738585072014e-308,
                       1.7976931348623157e308, 9007199254740993.0, 123456789.12345679]
        }),
    };
    let first = w
        .sems
        .ingest_alert(report.clone(), CommandMeta::default())
        .await
        .unwrap();
    caught_up(&w, &live).await;
    // The new row went in through the leader's connection (by `COPY` on PostgreSQL): it
    // equals the projection of its one commit.
    let opening = w
        .log
        .port()
        .read_aggregate("alert", first.alert_id)
        .await
        .unwrap();
    let mut created = projection::Rows::default();
    projection::apply(&mut created, &ProjectedCommit::decode(&opening[0]).unwrap()).unwrap();
    assert_eq!(
        stored_alerts(&live).await,
        vec![created.alerts[&first.alert_id].clone()]
    );
    // A repeat, in a later batch: the existing row is updated rather than created.
    w.sems
        .ingest_alert(report, CommandMeta::default())
        .await
        .unwrap();
    caught_up(&w, &live).await;
    drop(stop);

    let mut expected = projection::Rows::default();
    let commits = w
        .log
        .port()
        .read_aggregate("alert", first.alert_id)
        .await
        .unwrap();
    assert_eq!(commits.len(), 2);
    for c in &commits {
        projection::apply(&mut expected, &ProjectedCommit::decode(c).unwrap()).unwrap();
    }
    let stored = stored_alerts(&live).await;
    assert_eq!(stored, vec![expected.alerts[&first.alert_id].clone()]);
    assert_eq!(stored[0].repeat_count, 1);
    assert_eq!(stored[0].title, tricky);

    // The first version of the row equals the projection too: a fresh generation given the
    // first commit alone.
    let rebuilt = store(&w, "sems_v2").await;
    let opening = ProjectedCommit::decode(&commits[0]).unwrap();
    rebuilt
        .store()
        .apply_batch(std::slice::from_ref(&opening))
        .await
        .unwrap();
    let mut first_only = projection::Rows::default();
    projection::apply(&mut first_only, &opening).unwrap();
    assert_eq!(
        stored_alerts(&rebuilt).await,
        vec![first_only.alerts[&first.alert_id].clone()]
    );
}

/// The first page of a read model's alerts.
async fn stored_alerts(model: &TestReadModel) -> Vec<sems_readmodel::AlertRow> {
    let query = AlertQuery {
        page_size: 10,
        ..AlertQuery::default()
    };
    model.list_alerts(&query).await.unwrap().items
}

/// Commits of versions that accepted U+0000 in an alert's raw payload (refused since) are
/// projected with it shown as U+FFFD, and the row reads back on both stores (PostgreSQL
/// cannot turn a NUL in a `json` column into the row's JSON).
async fn a_nul_character_in_an_earlier_commit_is_shown_not_fatal(backend: Backend) {
    let w = world(backend).await;
    let report = AlertReport {
        source: "edr".into(),
        source_ref: "case-nul".into(),
        title: "Legacy".into(),
        description: String::new(),
        severity: Severity::Low,
        occurred_at: Utc::now().trunc_subsecs(6),
        observables: vec![],
        labels: BTreeMap::new(),
        raw: serde_json::json!({"cmd": "nul-here"}),
    };
    let ingested = w
        .sems
        .ingest_alert(report, CommandMeta::default())
        .await
        .unwrap();
    let commit = w
        .log
        .port()
        .read_aggregate("alert", ingested.alert_id)
        .await
        .unwrap()
        .remove(0);
    // The same commit as an earlier version would have written it, with a NUL in `raw`.
    let text = String::from_utf8(commit.bytes.to_vec()).unwrap();
    assert!(text.contains(r#""cmd":"nul-here""#), "{text}");
    let legacy = sems_app::StoredCommit {
        position: commit.position,
        bytes: text
            .replace(r#""cmd":"nul-here""#, r#""cmd":"nul\u0000here""#)
            .into_bytes()
            .into(),
    };
    let decoded = ProjectedCommit::decode(&legacy).unwrap();
    let model = store(&w, "sems_nul").await;
    model
        .store()
        .apply_batch(std::slice::from_ref(&decoded))
        .await
        .unwrap();
    let stored = stored_alerts(&model).await;
    assert_eq!(stored.len(), 1);
    let cmd = stored[0].raw["cmd"].as_str().unwrap();
    match backend {
        // PostgreSQL shows it as U+FFFD; the embedded store keeps JSON text as it is.
        Backend::JetStream => assert_eq!(cmd, "nul\u{fffd}here"),
        Backend::Embedded => assert_eq!(cmd, "nul\u{0}here"),
    }
}

/// A log that lost its tail (or a different one under the same name) comes back shorter than
/// the read model: new commits would reuse positions the read model has applied, and be
/// skipped. The projector refuses to feed from it instead.
async fn a_log_shorter_than_the_read_model_is_refused(backend: Backend) {
    let long = world(backend).await;
    activity(&long, 0).await;
    let model = store(&long, "sems").await;
    let stop = spawn(model.clone(), feed(&long, "projector_sems"));
    caught_up(&long, &model).await;
    drop(stop);
    let (_, applied) = long.log.state().await.unwrap();
    let before = model.dump().await.unwrap();

    let short = world(backend).await;
    short
        .sems
        .ingest_alert(report(1), CommandMeta::default())
        .await
        .unwrap();
    let (_, last) = short.log.state().await.unwrap();
    assert!(last < applied);
    let err = feed(&short, "projector_sems")
        .open(applied)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, sems_app::LogError::Corrupt(m) if m.contains(&format!("position {applied}, beyond the log's last position {last}"))),
        "{err}"
    );
    // Fed from the log's end, a feed opens as before.
    feed(&short, "projector_other").open(last).await.unwrap();
    same_rows(&model.dump().await.unwrap(), &before);
}

/// An embedded read model made before the alerts' keys had a table of their own (migrations
/// 0001–0004, a unique index on `alerts.alert_id`) is migrated at open: its rows are kept and
/// numbered, every alert's key is in `alert_keys` with every watermark at the last row, and
/// an alert is found by its key (here by the lookup of alerts awaiting their incident).
#[tokio::test]
async fn an_embedded_read_model_from_before_the_alert_keys_table_is_migrated() {
    use sems_readmodel::{AlertRow, SqliteReadModel, SqliteReadModelConfig};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readmodel-sems.db");
    let migrations =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
    let pool = sems_testkit::sqlite_at_migration(&path, migrations, 4).await;
    let long_ago = Utc::now().trunc_subsecs(3) - chrono::Duration::hours(1);
    let row = |n: u128, status: &str| AlertRow {
        alert_id: Uuid::from_u128(n << 100 | n),
        source: "siem".into(),
        source_ref: format!("case-{n}"),
        title: format!("alert {n}"),
        description: String::new(),
        severity: 4,
        status: status.into(),
        incident_id: None,
        repeat_count: 0,
        first_seen_at: long_ago,
        last_seen_at: long_ago,
        received_at: long_ago,
        observables: vec![],
        labels: BTreeMap::new(),
        raw: serde_json::json!({}),
        dismissal_rationale: None,
        source_state: "firing".into(),
        source_resolved_at: None,
        version: 1,
        position: n as i64,
    };
    let (kept, promoted) = (row(1, "received"), row(2, "promoted"));
    for a in [&kept, &promoted] {
        sqlx::query(
            "INSERT INTO alerts (alert_id, incident_id, status, received_at, doc) \
             VALUES (?, NULL, ?, ?, ?)",
        )
        .bind(a.alert_id.to_string())
        .bind(&a.status)
        .bind(a.received_at.timestamp_micros())
        .bind(serde_json::to_string(a).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO incident_openings_pending (incident_id, alert_id, promoted_at) VALUES (?, ?, ?)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(promoted.alert_id.to_string())
    .bind(long_ago.timestamp_micros())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let model = SqliteReadModel::connect(&SqliteReadModelConfig::new(&path))
        .await
        .unwrap();
    assert_eq!(model.alert_keys_in_memory(), 0, "every key is in the table");
    let awaiting = model
        .alerts_awaiting_incident(Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(awaiting, vec![promoted.clone()]);
    let dump = model.dump().await.unwrap();
    assert_eq!(rows(&dump, "alerts").len(), 2);

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (keys, seqs, watermarks): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM alert_keys k JOIN alerts a ON a.seq = k.seq \
           AND a.alert_id = k.alert_id), \
         (SELECT COUNT(DISTINCT seq) FROM alerts), \
         (SELECT COUNT(*) FROM alert_keys_sweep WHERE through = 2)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((keys, seqs, watermarks), (2, 2, 4096));
}

/// The embedded read model's alert keys that were still in memory when it closed (their
/// ranges not yet swept: batches of one new alert each move a sixteenth of the ranges here)
/// are read back from the file when it opens again, so later commits of those alerts
/// update their rows instead of creating them twice: the result matches a rebuild.
#[tokio::test]
async fn alert_keys_still_in_memory_at_close_are_read_back_at_open() {
    let w = world(Backend::Embedded).await;
    let live = store(&w, "sems").await;
    let stop = spawn(live.clone(), feed(&w, "projector_sems"));
    for i in 0..12 {
        w.sems
            .ingest_alert(report(i * 3 + 1), CommandMeta::default())
            .await
            .unwrap();
        caught_up(&w, &live).await;
    }
    drop(stop);
    let TestReadModel::Sqlite(m) = &live else {
        unreachable!()
    };
    let in_memory = m.alert_keys_in_memory();
    assert!(in_memory > 0, "some keys were not swept");
    assert!(in_memory < 12, "some were");

    let reopened = store(&w, "sems").await;
    let TestReadModel::Sqlite(r) = &reopened else {
        unreachable!()
    };
    assert_eq!(r.alert_keys_in_memory(), in_memory);
    let stop = spawn(reopened.clone(), feed(&w, "projector_sems"));
    for round in 0..2 {
        for i in 0..12 {
            // The same dedup keys: repeats of every alert.
            w.sems
                .ingest_alert(report(i * 3 + 1 + round * 40), CommandMeta::default())
                .await
                .unwrap();
        }
    }
    caught_up(&w, &reopened).await;
    drop(stop);

    let rebuilt = store(&w, "sems_v2").await;
    let stop = spawn(rebuilt.clone(), feed(&w, "projector_sems_v2"));
    caught_up(&w, &rebuilt).await;
    drop(stop);
    let (a, b) = (
        reopened.dump().await.unwrap(),
        rebuilt.dump().await.unwrap(),
    );
    let alerts = rows(&a, "alerts");
    assert_eq!(alerts.len(), 12, "one row per alert");
    assert!(alerts.iter().all(|r| r["repeat_count"] == 2), "{alerts:?}");
    same_rows(&a, &b);
}

/// Most alerts never belong to an incident, so `alerts_incident` holds only those that do
/// (migrations `0010` on PostgreSQL, `0006` on SQLite): an unattached alert costs one index
/// update less. Every read of alerts by incident names one, which implies `NOT NULL`; the
/// statements below have the shape of those in `pg.rs` and `sqlite.rs` (an incident's
/// alerts, and their count per incident), and each must still reach its rows through the
/// index, with an attached alert in it and an unattached one not.
async fn alerts_are_read_by_incident_through_an_index_of_attached_alerts_only(backend: Backend) {
    let w = world(backend).await;
    let live = store(&w, "sems").await;
    let stop = spawn(live.clone(), feed(&w, "projector_sems"));
    // report(0) is critical and opens an incident; report(1) is low and stays unattached.
    let attached = w
        .sems
        .ingest_alert(report(0), CommandMeta::default())
        .await
        .unwrap();
    let incident = attached
        .incident_id
        .expect("a critical alert opens an incident");
    let unattached = w
        .sems
        .ingest_alert(report(1), CommandMeta::default())
        .await
        .unwrap();
    assert!(unattached.incident_id.is_none());
    caught_up(&w, &live).await;
    let listed = live
        .reads()
        .list_alerts(&AlertQuery {
            incident_id: Some(incident),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|a| a.alert_id).collect::<Vec<_>>(),
        vec![attached.alert_id]
    );
    match &live {
        TestReadModel::Pg(m) => {
            let mut c = m.pool().acquire().await.unwrap();
            let def: String =
                sqlx::query_scalar("SELECT pg_get_indexdef('alerts_incident'::regclass)")
                    .fetch_one(&mut *c)
                    .await
                    .unwrap();
            assert!(def.ends_with("WHERE (incident_id IS NOT NULL)"), "{def}");
            // Two rows would be read by a scan whatever the index: forbid it, so a plan
            // that cannot use the index shows as a sequential scan.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *c)
                .await
                .unwrap();
            for sql in [
                "EXPLAIN SELECT to_jsonb(a) FROM alerts a WHERE incident_id = $1 \
                 ORDER BY received_at DESC, alert_id DESC LIMIT 1000",
                "EXPLAIN SELECT (SELECT count(*) FROM alerts a WHERE a.incident_id = i.incident_id) \
                 FROM incidents i WHERE incident_id = $1",
            ] {
                let plan: Vec<String> = sqlx::query_scalar(sql)
                    .bind(incident)
                    .fetch_all(&mut *c)
                    .await
                    .unwrap();
                let plan = plan.join("\n");
                // "Index Scan using …", "Index Only Scan using …" or "Bitmap Index Scan on …".
                assert!(plan.contains("alerts_incident"), "{sql}:\n{plan}");
                assert!(!plan.contains("Seq Scan on alerts"), "{sql}:\n{plan}");
            }
            sqlx::query("RESET enable_seqscan")
                .execute(&mut *c)
                .await
                .unwrap();
            let indexed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM alerts WHERE incident_id IS NOT NULL")
                    .fetch_one(&mut *c)
                    .await
                    .unwrap();
            assert_eq!(indexed, 1);
        }
        TestReadModel::Sqlite(m) => {
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(m.path())
                    .read_only(true),
            )
            .await
            .unwrap();
            let def: String = sqlx::query_scalar(
                "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'alerts_incident'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(def.ends_with("WHERE incident_id IS NOT NULL"), "{def}");
            for sql in [
                "EXPLAIN QUERY PLAN SELECT doc FROM alerts WHERE incident_id = ?1 \
                 ORDER BY received_at DESC, alert_id DESC LIMIT 1000",
                "EXPLAIN QUERY PLAN SELECT (SELECT count(*) FROM alerts a \
                 WHERE a.incident_id = i.incident_id) FROM incidents i WHERE incident_id = ?1",
            ] {
                let rows = sqlx::query(sql)
                    .bind(incident.to_string())
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                let plan = rows
                    .iter()
                    .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(plan.contains("INDEX alerts_incident"), "{sql}:\n{plan}");
                assert!(
                    !plan.contains("SCAN a") && !plan.contains("SCAN alerts"),
                    "{sql}:\n{plan}"
                );
            }
        }
    }
    drop(stop);
}
