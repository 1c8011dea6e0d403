//! Moving up: `semsd --role migrate` copies an embedded event log into a JetStream stream,
//! byte for byte with its hash chains, and semsd on NATS and PostgreSQL rebuilds the same
//! read model from it and carries on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use sems_app::{EventLog, verify_chain};
use sems_proto::v1 as pb;
use sems_testkit::{Backend, TestLog, TestStores};
use semsd::{Config, Role};
use support::Server;
use uuid::Uuid;

async fn activity(s: &Server) -> u64 {
    let mut last = 0;
    for n in 0..12 {
        let severity = if n % 3 == 0 {
            pb::Severity::Critical
        } else {
            pb::Severity::Low
        };
        let r = s
            .alerts()
            .ingest_alert(pb::IngestAlertRequest {
                alert: Some(pb::Alert {
                    source: "zeek".into(),
                    source_ref: format!("conn-{}", n % 9),
                    title: format!("Beaconing to rare domain {n}"),
                    severity: severity as i32,
                    labels: [("site".to_string(), "LHR".to_string())].into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        last = last.max(r.position);
        if !r.incident_id.is_empty() && !r.repeat {
            let c = s
                .incidents()
                .acknowledge_incident(pb::AcknowledgeIncidentRequest {
                    incident_id: r.incident_id.clone(),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            last = last.max(c.position);
        }
    }
    last
}

async fn snapshot(s: &Server, min_position: u64) -> (Vec<pb::Incident>, Vec<pb::AlertView>) {
    let incidents = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            page_size: 500,
            consistency: Some(pb::Consistency {
                min_position,
                latest: false,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incidents;
    let alerts = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            page_size: 500,
            consistency: Some(pb::Consistency {
                min_position,
                latest: false,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    (incidents, alerts)
}

fn migrate_config(embedded: &TestStores, target: &TestStores) -> Config {
    let mut config = Config::defaults();
    config.role = Role::Migrate;
    config.data_dir = embedded.data_dir();
    config.nats.nats_url = target.nats_url();
    config.database.database_url = None;
    config
}

#[tokio::test]
async fn an_embedded_log_moves_to_jetstream_byte_for_byte_and_the_read_model_rebuilds() {
    // A site on the embedded store.
    let small = Server::start(Backend::Embedded).await;
    let last = activity(&small).await;
    let before = snapshot(&small, last).await;
    assert!(before.0.len() >= 3 && before.1.len() == 9);
    let embedded = small.into_stores().await;

    // Moving up: the log into a new stream, twice (the second run resumes and copies nothing).
    let scaled = TestStores::start(Backend::JetStream).await.unwrap();
    for _ in 0..2 {
        semsd::run(
            migrate_config(&embedded, &scaled),
            Default::default(),
            async {},
        )
        .await
        .unwrap();
    }

    let TestLog::Sqlite(source) = embedded.log().await.unwrap() else {
        panic!("embedded")
    };
    let TestLog::JetStream(target) = scaled.log().await.unwrap() else {
        panic!("jetstream")
    };
    let (count, source_last) = source.state().await.unwrap();
    assert_eq!(target.state().await.unwrap(), (count, source_last));
    let records = source.read_records(1, 100_000).await.unwrap();
    let mut aggregates = BTreeSet::new();
    for r in &records {
        let copied = target.read_at(r.commit.position).await.unwrap();
        assert_eq!(
            copied, r.commit,
            "position {} byte for byte",
            r.commit.position
        );
        aggregates.insert((r.aggregate_type.clone(), r.aggregate_id));
    }
    // Subjects and headers as the live log writes them.
    let raw = target
        .context()
        .get_stream("SEMS")
        .await
        .unwrap()
        .get_raw_message(records[0].commit.position)
        .await
        .unwrap();
    assert_eq!(
        raw.subject.as_str(),
        format!(
            "sems.ev.{}.{}",
            records[0].aggregate_type, records[0].aggregate_id
        )
    );
    let headers = raw.headers;
    assert_eq!(
        headers.get("Sems-Event-Type").map(|v| v.as_str()),
        Some(records[0].event_types.as_str())
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()),
        Some(records[0].commit_id.to_string())
    );
    // Every aggregate's chain verifies on the stream.
    for (kind, id) in &aggregates {
        verify_chain(&target.read_aggregate(kind, *id).await.unwrap()).unwrap();
    }

    // semsd on NATS and PostgreSQL rebuilds the same read model and carries on.
    let big = Server::start_on(scaled, |_| {}).await;
    let after = snapshot(&big, source_last).await;
    assert_eq!(
        after, before,
        "the rebuilt read model answers as the embedded one did"
    );
    let incident = before.0[0].incident_id.clone();
    let c = big
        .incidents()
        .change_level(pb::ChangeLevelRequest {
            incident_id: incident.clone(),
            to: pb::Level::Tactical as i32,
            reason: "moved up; continuing".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.position, source_last + 1);
    let chain = big
        .log()
        .await
        .read_aggregate("incident", Uuid::parse_str(&incident).unwrap())
        .await
        .unwrap();
    verify_chain(&chain).unwrap();
    big.stop().await;
}

#[tokio::test]
async fn a_running_semsd_or_a_stream_holding_other_commits_is_refused() {
    let small = Server::start(Backend::Embedded).await;
    activity(&small).await;
    // Not while the embedded semsd still writes to the log.
    let target = TestStores::start(Backend::JetStream).await.unwrap();
    let err = semsd::run(
        migrate_config(&small.stores, &target),
        Default::default(),
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("another semsd is running"),
        "{err:#}"
    );
    let embedded = small.into_stores().await;
    // A stream some other site already wrote to.
    let other = Server::start(Backend::JetStream).await;
    activity(&other).await;
    activity(&other).await;
    let scaled = other.into_stores().await;
    let err = semsd::run(
        migrate_config(&embedded, &scaled),
        Default::default(),
        async {},
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("new, empty stream"), "{err:#}");

    // Without a NATS URL, the role says what it needs.
    let mut config = migrate_config(&embedded, &scaled);
    config.nats.nats_url = None;
    let err = semsd::run(config, Default::default(), async {})
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--nats-url"), "{err:#}");
}
