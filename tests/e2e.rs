//! End to end over gRPC: every role of `semsd` in-process on port 0, on both stores: a real
//! nats-server with a real PostgreSQL database, and the embedded SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use sems_app::Envelope;
use sems_proto::v1::{self as pb, cmc_query_service_client::CmcQueryServiceClient};
use sems_testkit::{Backend, on_both_stores};
use support::Server;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use uuid::Uuid;

on_both_stores!(
    alert_to_incident_to_tactical_to_escalation_read_at_once,
    a_low_alert_repeated_at_high_severity_opens_its_incident,
    malformed_requests_name_the_field_and_append_nothing,
    bulk_ingest_streams_alerts_and_rejects_only_the_bad_one,
    a_retried_request_id_is_answered_from_the_log,
    lists_filter_sort_and_page,
    a_query_ahead_of_the_read_model_times_out_with_deadline_exceeded,
    health_reflection_and_trace_context_work,
    an_incident_a_stopped_ingestion_left_unopened_is_opened_by_the_repair_sweep,
    metrics_count_appends_rejections_and_projector_progress,
    an_analyst_merges_an_alert_into_an_existing_incident,
    notifications_to_authorities_are_recorded_with_when_they_were_sent,
    a_tactical_commander_logs_decisions_and_nothing_is_erased,
    incidents_link_the_register_risks_they_realised_and_are_counted_per_risk,
    a_query_asking_for_the_latest_sees_every_acknowledged_commit,
    the_latest_is_waited_for_like_a_min_position,
    concurrent_calls_on_one_connection_are_each_answered_their_own,
    the_embedded_projector_runs_on_its_own_thread_until_semsd_stops,
);

fn alert(source_ref: &str, severity: pb::Severity) -> pb::IngestAlertRequest {
    pb::IngestAlertRequest {
        alert: Some(pb::Alert {
            source: "crowdstrike".into(),
            source_ref: source_ref.into(),
            title: "Ransomware behaviour on FS-01".into(),
            description: "mass file renames with .lockbit extension".into(),
            severity: severity as i32,
            occurred_at: None,
            observables: vec![pb::Observable {
                r#type: "host".into(),
                value: "FS-01".into(),
            }],
            labels: [("site".to_string(), "LHR".to_string())].into(),
            raw: None,
        }),
        request_id: String::new(),
    }
}

fn consistency(min_position: u64) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        min_position,
        latest: false,
    })
}

async fn alert_to_incident_to_tactical_to_escalation_read_at_once(backend: Backend) {
    let s = Server::start(backend).await;
    let ingested = s
        .alerts()
        .ingest_alert(alert("det-1", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner();
    assert!(!ingested.repeat);
    let incident_id = ingested.incident_id.clone();
    assert!(
        !incident_id.is_empty(),
        "a critical alert opens an incident"
    );

    // A repeat of the same detection attaches to the same alert and incident.
    let repeat = s
        .alerts()
        .ingest_alert(alert("det-1", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.repeat);
    assert_eq!(
        (repeat.alert_id.as_str(), repeat.incident_id.as_str()),
        (ingested.alert_id.as_str(), incident_id.as_str())
    );

    let mut incidents = s.incidents();
    let ack = incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: incident_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.aggregate_id, incident_id);
    assert_eq!(ack.version, 2);
    let tactical = incidents
        .change_level(pb::ChangeLevelRequest {
            incident_id: incident_id.clone(),
            to: pb::Level::Tactical as i32,
            reason: "encryption spreading to a second site".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tactical.position > ack.position);

    // Read your write: the list shows TACTICAL at once.
    let list = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            levels: vec![pb::Level::Tactical as i32],
            consistency: consistency(tactical.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.incidents.len(), 1);
    let listed = &list.incidents[0];
    assert_eq!(listed.incident_id, incident_id);
    assert_eq!(listed.level, pb::Level::Tactical as i32);
    assert_eq!(listed.status, pb::IncidentStatus::Responding as i32);
    assert_eq!(listed.alert_count, 1);
    assert!(listed.acknowledged_at.is_some() && listed.tactical_at.is_some());

    let escalation = incidents
        .request_crisis_escalation(pb::RequestCrisisEscalationRequest {
            incident_id: incident_id.clone(),
            reason: "payments platform down; regulator notification likely".into(),
            criteria_met: "business-critical service outage > 1h".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let handover_id = escalation.handover_id.clone();
    let escalation = escalation.commit.unwrap();
    // The request started the Resilience Handshake: its handover is the last commit.
    let started = s.log().await.read_at(escalation.position).await.unwrap();
    let started = Envelope::decode(&started.bytes).unwrap();
    assert_eq!(started.aggregate_type, "handover");
    assert_eq!(started.aggregate_id.to_string(), handover_id);
    assert_eq!(started.events[0].event_type, "HandoverStarted");
    assert!(started.events[0].payload.get().contains(&incident_id));
    let detail = s
        .queries()
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: consistency(escalation.position),
        })
        .await
        .unwrap()
        .into_inner();
    let i = detail.incident.unwrap();
    assert!(i.crisis_escalation_requested);
    assert!(i.escalation_requested_at.is_some());
    assert_eq!(i.version, 4);
    assert_eq!(detail.alerts.len(), 1);
    assert_eq!(detail.alerts[0].repeat_count, 1);
    assert_eq!(detail.alerts[0].status, "promoted");

    // The actor is the server's configured principal, never a request field.
    let log = s.log().await;
    let commits = log
        .read_aggregate("incident", Uuid::parse_str(&incident_id).unwrap())
        .await
        .unwrap();
    assert!(
        commits
            .iter()
            .all(|c| Envelope::decode(&c.bytes).unwrap().actor == "e2e-operator")
    );
    s.stop().await;
}

/// An alert below the incident threshold opens nothing; its repeat at a severity that
/// reaches the threshold promotes it and opens its incident, readable at once.
async fn a_low_alert_repeated_at_high_severity_opens_its_incident(backend: Backend) {
    let s = Server::start(backend).await;
    let low = s
        .alerts()
        .ingest_alert(alert("det-low", pb::Severity::Low))
        .await
        .unwrap()
        .into_inner();
    assert!(low.incident_id.is_empty(), "a low alert opens no incident");
    let high = s
        .alerts()
        .ingest_alert(alert("det-low", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner();
    assert!(high.repeat);
    assert_eq!(high.alert_id, low.alert_id);
    assert!(
        !high.incident_id.is_empty(),
        "the critical repeat promotes it"
    );
    assert_ne!(high.incident_id, Uuid::nil().to_string());
    let detail = s
        .queries()
        .get_incident(pb::GetIncidentRequest {
            incident_id: high.incident_id.clone(),
            consistency: consistency(high.position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.incident.unwrap().incident_id, high.incident_id);
    assert_eq!(detail.alerts.len(), 1);
    assert_eq!(detail.alerts[0].alert_id, low.alert_id);
    assert_eq!(detail.alerts[0].status, "promoted");
}

async fn malformed_requests_name_the_field_and_append_nothing(backend: Backend) {
    let s = Server::start(backend).await;
    let opened = s
        .alerts()
        .ingest_alert(alert("det-9", pb::Severity::High))
        .await
        .unwrap()
        .into_inner();
    let before = s.message_count().await;

    let mut bad = alert("det-10", pb::Severity::High);
    bad.alert.as_mut().unwrap().title = String::new();
    let err = s.alerts().ingest_alert(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("alert.title"), "{}", err.message());
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "alert.title"
    );

    let mut bad = alert("det-11", pb::Severity::High);
    bad.alert.as_mut().unwrap().severity = 0;
    let err = s.alerts().ingest_alert(bad).await.unwrap_err();
    assert!(
        err.message().contains("alert.severity"),
        "{}",
        err.message()
    );

    let mut bad = alert("det-12", pb::Severity::High);
    bad.alert
        .as_mut()
        .unwrap()
        .observables
        .push(pb::Observable {
            r#type: "ip".into(),
            value: "x".repeat(3000),
        });
    let err = s.alerts().ingest_alert(bad).await.unwrap_err();
    assert!(
        err.message().contains("alert.observables[1].value"),
        "{}",
        err.message()
    );

    let mut incidents = s.incidents();
    let err = incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: "not-a-uuid".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("incident_id"));

    let err = incidents
        .change_level(pb::ChangeLevelRequest {
            incident_id: opened.incident_id.clone(),
            to: pb::Level::Strategic as i32,
            reason: "crisis".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("invalid to"), "{}", err.message());

    let err = incidents
        .change_level(pb::ChangeLevelRequest {
            incident_id: opened.incident_id.clone(),
            to: pb::Level::Tactical as i32,
            reason: "not acknowledged yet".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let err = incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: Uuid::now_v7().to_string(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            page_size: 501,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("page_size"));

    // The lists and tokens a query takes are bounded too: a filter names at most 20 values,
    // a page token is at most 512 characters.
    let open = pb::IncidentStatus::Open as i32;
    for (request, field) in [
        (
            pb::ListIncidentsRequest {
                statuses: vec![open; 21],
                ..Default::default()
            },
            "statuses",
        ),
        (
            pb::ListIncidentsRequest {
                page_token: "A".repeat(513),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let err = s.queries().list_incidents(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    let within = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            statuses: vec![open; 20],
            ..Default::default()
        })
        .await;
    assert!(within.is_ok(), "{within:?}");
    let mut cmc = CmcQueryServiceClient::new(s.channel.clone());
    let err = cmc
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: Uuid::now_v7().to_string(),
            kinds: vec!["decision".into(); 21],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("kinds"), "{err:?}");

    assert_eq!(
        s.message_count().await,
        before,
        "no rejected command appended anything"
    );
    s.stop().await;
}

async fn bulk_ingest_streams_alerts_and_rejects_only_the_bad_one(backend: Backend) {
    let s = Server::start(backend).await;
    let mut requests: Vec<pb::IngestAlertRequest> = (0..200)
        .map(|i| alert(&format!("bulk-{}", i % 150), pb::Severity::Low))
        .collect();
    requests[42].alert.as_mut().unwrap().source = String::new();
    let answer = s
        .alerts()
        .ingest_alerts(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results.len(), 200);
    assert_eq!(answer.accepted, 199);
    assert_eq!(
        answer.repeats, 49,
        "bulk-42 was rejected, so its second report is the first"
    );
    assert_eq!(answer.rejected.len(), 1);
    assert_eq!(
        (answer.rejected[0].index, answer.rejected[0].field.as_str()),
        (42, "alert.source")
    );
    assert!(answer.results[42].alert_id.is_empty());

    let page = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            page_size: 500,
            consistency: consistency(answer.last_position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.alerts.len(), 150);
    assert_eq!(
        page.alerts.iter().map(|a| a.repeat_count).sum::<u64>(),
        49,
        "200 sent, 1 rejected, 150 distinct"
    );

    // One alert more than a bulk call may carry: refused whole, naming the field, and
    // nothing of it is appended (the call is read in full before any alert is ingested).
    let before = s.message_count().await;
    let too_many = (0..=semsd::BULK_MAX_ALERTS)
        .map(|i| alert(&format!("over-{i}"), pb::Severity::Low))
        .collect::<Vec<_>>();
    let err = s
        .alerts()
        .ingest_alerts(futures::stream::iter(too_many))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("alerts") && err.message().contains("10000"),
        "{}",
        err.message()
    );
    assert_eq!(
        s.message_count().await,
        before,
        "an over-long call appends nothing"
    );

    // So is a call over 16 MiB, however few its alerts (each would be refused for its long
    // description anyway; the size limit refuses the call before any alert is looked at).
    let mut heavy = alert("heavy", pb::Severity::Low);
    heavy.alert.as_mut().unwrap().description = "x".repeat(60_000);
    let err = s
        .alerts()
        .ingest_alerts(futures::stream::iter(vec![heavy; 300]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("16 MiB"), "{}", err.message());
    assert_eq!(
        s.message_count().await,
        before,
        "an over-large call appends nothing"
    );

    // Exactly the limit is one call.
    let just_enough = (0..semsd::BULK_MAX_ALERTS)
        .map(|i| alert(&format!("limit-{i}"), pb::Severity::Low))
        .collect::<Vec<_>>();
    let answer = s
        .alerts()
        .ingest_alerts(futures::stream::iter(just_enough))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted as usize, semsd::BULK_MAX_ALERTS);
    s.stop().await;
}

async fn a_retried_request_id_is_answered_from_the_log(backend: Backend) {
    let s = Server::start(backend).await;
    let mut a = alert("det-r", pb::Severity::Critical);
    a.request_id = "soc-batch-7-item-3".into();
    let first = s
        .alerts()
        .ingest_alert(a.clone())
        .await
        .unwrap()
        .into_inner();
    let count = s.message_count().await;
    let again = s.alerts().ingest_alert(a).await.unwrap().into_inner();
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.position, again.alert_id),
        (first.position, first.alert_id)
    );
    assert_eq!(again.incident_id, first.incident_id);
    assert_eq!(s.message_count().await, count);
    s.stop().await;
}

async fn lists_filter_sort_and_page(backend: Backend) {
    let s = Server::start(backend).await;
    let mut incidents = s.incidents();
    let mut last = 0;
    for (i, severity) in [
        pb::Severity::Low,
        pb::Severity::Critical,
        pb::Severity::Medium,
        pb::Severity::High,
    ]
    .iter()
    .cycle()
    .take(7)
    .enumerate()
    {
        let c = incidents
            .open_incident(pb::OpenIncidentRequest {
                title: format!("Phishing wave {i}"),
                description: if i == 3 {
                    "targets finance".into()
                } else {
                    String::new()
                },
                severity: *severity as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        last = c.position;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .queries()
            .list_incidents(pb::ListIncidentsRequest {
                sort: pb::IncidentSort::SeverityDesc as i32,
                page_size: 3,
                page_token: token.clone(),
                consistency: consistency(last),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.incidents
                .iter()
                .map(|i| (i.severity, i.incident_id.clone())),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 7);
    assert!(
        seen.windows(2).all(|w| w[0].0 >= w[1].0),
        "most severe first across pages"
    );
    let mut ids: Vec<_> = seen.iter().map(|s| s.1.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "no incident on two pages");

    let finance = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            text: "FINANCE".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finance.incidents.len(), 1);
    let critical = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            severities: vec![pb::Severity::Critical as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(critical.incidents.len(), 2);
    s.stop().await;
}

async fn a_query_ahead_of_the_read_model_times_out_with_deadline_exceeded(backend: Backend) {
    let s = Server::start(backend).await;
    let mut request = Request::new(pb::ListIncidentsRequest {
        consistency: consistency(1_000_000),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(1));
    let err = s.queries().list_incidents(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    s.stop().await;
}

async fn health_reflection_and_trace_context_work(backend: Backend) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let s = Server::start(backend).await;
    let health = HealthClient::new(s.channel.clone())
        .check(HealthCheckRequest {
            service: "sems.v1.AlertService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(s.channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"sems.v1.IncidentService".to_string()),
        "{names:?}"
    );
    // Older clients (grpcurl before 1.8.8) ask `v1alpha`; both versions reflect the error
    // details' types, so a client can show a refusal's `BadRequest`.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "google.rpc.BadRequest".into(),
            )),
        };
        let answer = ServerReflectionClient::new(s.channel.clone())
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response;
        assert!(
            matches!(&answer, Some(MessageResponse::FileDescriptorResponse(f))
                if !f.file_descriptor_proto.is_empty()),
            "{answer:?}"
        );
    }

    // The caller's trace id travels into the stored commit.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(alert("det-t", pb::Severity::Low));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let answer = s.alerts().ingest_alert(request).await.unwrap().into_inner();
    let stored = s.log().await.read_at(answer.position).await.unwrap();
    let envelope = Envelope::decode(&stored.bytes).unwrap();
    assert!(
        envelope
            .trace_context
            .unwrap()
            .traceparent
            .contains(trace_id)
    );

    // So does it into every commit of a bulk call: all of them under the call's trace.
    let bulk_trace = "0af7651916cd43dd8448eb211c80319c";
    let alerts: Vec<_> = (0..3)
        .map(|n| alert(&format!("det-bulk-{n}"), pb::Severity::Low))
        .collect();
    let mut request = Request::new(futures::stream::iter(alerts));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{bulk_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let answer = s
        .alerts()
        .ingest_alerts(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 3);
    let mut positions: Vec<u64> = answer.results.iter().map(|r| r.position).collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 3, "one commit per alert: {positions:?}");
    for position in positions {
        let stored = s.log().await.read_at(position).await.unwrap();
        let traceparent = Envelope::decode(&stored.bytes)
            .unwrap()
            .trace_context
            .unwrap()
            .traceparent;
        assert!(traceparent.contains(bulk_trace), "{traceparent}");
    }
    s.stop().await;
}

async fn an_incident_a_stopped_ingestion_left_unopened_is_opened_by_the_repair_sweep(
    backend: Backend,
) {
    use sems_app::{CommandHandler, CommandMeta, HandlerConfig, SystemClock, alert_id_for};
    use sems_domain::{
        Severity,
        alert::{Alert, AlertCommand, AlertReport},
    };
    let s = Server::start_with(backend, |c| c.domain.repair_after_ms = 300).await;

    // The first of an ingestion's two commits, and no second: the alert is promoted into an
    // incident that was never opened.
    let log = s.log().await;
    let handler = CommandHandler::new(
        log.clone(),
        std::sync::Arc::new(SystemClock),
        HandlerConfig {
            actor: "e2e-operator".into(),
            ..HandlerConfig::default()
        },
    );
    let incident_id = Uuid::now_v7();
    let report = AlertReport {
        source: "edr".into(),
        source_ref: "half-done".into(),
        title: "Credential dumping on DC-02".into(),
        description: "lsass memory read by unsigned binary".into(),
        severity: Severity::Critical,
        occurred_at: chrono::Utc::now(),
        observables: vec![],
        labels: Default::default(),
        raw: serde_json::Value::Null,
    };
    let ingest = AlertCommand::Ingest {
        report: report.into(),
        incident_threshold: Severity::High,
        new_incident_id: incident_id,
    };
    let alert_id = alert_id_for("edr", "half-done");
    handler
        .execute::<Alert>(alert_id, &ingest, &CommandMeta::default())
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let detail = loop {
        let found = s
            .queries()
            .get_incident(pb::GetIncidentRequest {
                incident_id: incident_id.to_string(),
                consistency: None,
            })
            .await;
        match found {
            Ok(d) => break d.into_inner(),
            Err(e) if e.code() == Code::NotFound && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the sweep did not open the incident: {e}"),
        }
    };
    let incident = detail.incident.unwrap();
    assert_eq!(incident.title, "Credential dumping on DC-02");
    assert_eq!(incident.severity, pb::Severity::Critical as i32);
    assert_eq!(detail.alerts.len(), 1);
    assert_eq!(detail.alerts[0].alert_id, alert_id.to_string());
    // Opened once, however often the sweep ran.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        log.read_aggregate("incident", incident_id)
            .await
            .unwrap()
            .len(),
        1
    );
    s.stop().await;
}

async fn metrics_count_appends_rejections_and_projector_progress(backend: Backend) {
    let s = Server::start(backend).await;
    let answer = s
        .alerts()
        .ingest_alert(alert("det-m", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner();
    let refused = s
        .incidents()
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: "nope".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    s.queries()
        .list_incidents(pb::ListIncidentsRequest {
            consistency: consistency(answer.position),
            ..Default::default()
        })
        .await
        .unwrap();

    // Other tests of this process record into the same instruments: check lower bounds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = sems_telemetry::test_metrics();
        let projected = m.get("sems.projector.commits").copied().unwrap_or(0.0);
        if projected >= 2.0 || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let get = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
    };
    assert!(get("sems.appends") >= 2.0, "the alert and its incident");
    assert!(get("sems.append.duration") > 0.0);
    assert!(get("sems.commands.rejected") >= 1.0);
    assert!(get("sems.projector.commits") >= 2.0);
    assert!(get("sems.projector.batch.duration") > 0.0);
    get("sems.projector.position");
    get("sems.projector.lag");
    s.stop().await;
}

async fn an_analyst_merges_an_alert_into_an_existing_incident(backend: Backend) {
    let s = Server::start(backend).await;
    let opened = s
        .alerts()
        .ingest_alert(alert("det-merge-1", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner();
    let incident_id = opened.incident_id;
    // A low alert opens nothing; the analyst finds it is part of the incident.
    let low = s
        .alerts()
        .ingest_alert(alert("det-merge-2", pb::Severity::Low))
        .await
        .unwrap()
        .into_inner();
    assert!(low.incident_id.is_empty());
    let merge = |alert_id: &str, incident_id: &str, reason: &str| pb::MergeAlertRequest {
        alert_id: alert_id.into(),
        incident_id: incident_id.into(),
        reason: reason.into(),
        request_id: String::new(),
    };

    // Refusals name what is wrong and append nothing.
    let before = s.message_count().await;
    let err = s
        .alerts()
        .merge_alert(merge(&low.alert_id, &incident_id, " "))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{}", err.message());
    let err = s
        .alerts()
        .merge_alert(merge(&low.alert_id, "not-a-uuid", "same host"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("incident_id"), "{}", err.message());
    let unknown = Uuid::now_v7().to_string();
    let err = s
        .alerts()
        .merge_alert(merge(&low.alert_id, &unknown, "same host"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // An alert already in an incident is not merged into it again.
    let err = s
        .alerts()
        .merge_alert(merge(&opened.alert_id, &incident_id, "same host"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(s.message_count().await, before);

    let mut first = merge(
        &low.alert_id,
        &incident_id,
        "beaconing from the same host as the ransomware",
    );
    first.request_id = "merge-1".into();
    let merged = s
        .alerts()
        .merge_alert(first.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.aggregate_id, low.alert_id);
    let detail = s
        .queries()
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: consistency(merged.position),
        })
        .await
        .unwrap()
        .into_inner();
    let mut statuses: Vec<(String, String)> = detail
        .alerts
        .iter()
        .map(|a| (a.alert_id.clone(), a.status.clone()))
        .collect();
    statuses.sort();
    let mut expected = vec![
        (opened.alert_id.clone(), "promoted".to_string()),
        (low.alert_id.clone(), "merged".to_string()),
    ];
    expected.sort();
    assert_eq!(statuses, expected);
    let listed = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            status: "merged".into(),
            consistency: consistency(merged.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.alerts.len(), 1);
    // A repeat of the merged alert answers its incident.
    let repeat = s
        .alerts()
        .ingest_alert(alert("det-merge-2", pb::Severity::Low))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat.incident_id, incident_id);

    // Closed, the incident takes no more alerts; a retry of the merge made before is still
    // answered from the log.
    let mut incidents = s.incidents();
    incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: incident_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    incidents
        .resolve_incident(pb::ResolveIncidentRequest {
            incident_id: incident_id.clone(),
            resolution: "host reimaged".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    incidents
        .close_incident(pb::CloseIncidentRequest {
            incident_id: incident_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let retried = s.alerts().merge_alert(first).await.unwrap().into_inner();
    assert!(retried.replayed);
    assert_eq!(retried.position, merged.position);
    let late = s
        .alerts()
        .ingest_alert(alert("det-merge-3", pb::Severity::Low))
        .await
        .unwrap()
        .into_inner();
    let before = s.message_count().await;
    let err = s
        .alerts()
        .merge_alert(merge(&late.alert_id, &incident_id, "same host"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("closed"), "{}", err.message());
    assert_eq!(s.message_count().await, before);
    s.stop().await;
}

async fn notifications_to_authorities_are_recorded_with_when_they_were_sent(backend: Backend) {
    let s = Server::start(backend).await;
    let incident_id = s
        .alerts()
        .ingest_alert(alert("det-notify", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let notify = |authority: &str, sent: chrono::DateTime<chrono::Utc>, late: &str| {
        pb::NotifyAuthorityRequest {
            incident_id: incident_id.clone(),
            authority: authority.into(),
            reference: "CSIRT-2026-0042".into(),
            summary: "NIS2 early warning: ransomware, cross-border impact not excluded".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: sent.timestamp(),
                nanos: 0,
            }),
            late_reason: late.into(),
            request_id: String::new(),
        }
    };
    let now = chrono::Utc::now();
    let earlier = now - chrono::Duration::hours(3);

    // Refusals name the field and append nothing.
    let before = s.message_count().await;
    let mut incidents = s.incidents();
    let err = incidents
        .notify_authority(notify(" ", now, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("authority"), "{}", err.message());
    let err = incidents
        .notify_authority(notify("national CSIRT", earlier, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("late_reason"), "{}", err.message());
    assert_eq!(s.message_count().await, before);

    incidents
        .notify_authority(notify("national CSIRT", now, ""))
        .await
        .unwrap();
    // The DPA was phoned three hours ago and it is logged now: late, with the reason.
    let late = incidents
        .notify_authority(notify(
            "data protection authority",
            earlier,
            "phoned in from the data centre, logged on return",
        ))
        .await
        .unwrap()
        .into_inner();
    let detail = s
        .queries()
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: consistency(late.position),
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, &str, i64)> = detail
        .notifications
        .iter()
        .map(|n| {
            (
                n.authority.as_str(),
                n.late_reason.as_str(),
                n.occurred_at.as_ref().unwrap().seconds,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("national CSIRT", "", now.timestamp()),
            (
                "data protection authority",
                "phoned in from the data centre, logged on return",
                earlier.timestamp()
            ),
        ],
        "in the order recorded"
    );
    assert_eq!(detail.notifications[0].reference, "CSIRT-2026-0042");
    // The first notification is the earliest sent, whatever the order recorded.
    let i = detail.incident.unwrap();
    assert_eq!(
        i.authority_notified_at.unwrap().seconds,
        earlier.timestamp()
    );
    s.stop().await;
}

async fn a_tactical_commander_logs_decisions_and_nothing_is_erased(backend: Backend) {
    let s = Server::start(backend).await;
    let incident_id = s
        .alerts()
        .ingest_alert(alert("det-decide", pb::Severity::Critical))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let mut incidents = s.incidents();
    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| {
        Some(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        })
    };
    let first = Uuid::now_v7();
    let decide = |id: Uuid, text: &str, supersedes: &str| pb::RecordIncidentDecisionRequest {
        incident_id: incident_id.clone(),
        decision_id: id.to_string(),
        decision: text.into(),
        rationale: "encryption is spreading over SMB".into(),
        options: vec![pb::OptionConsidered {
            option: "monitor only".into(),
            why_not: "every hour costs another share".into(),
        }],
        assumptions: "backups are offline".into(),
        risks_accepted: "finance cannot post invoices today".into(),
        powers: "IR playbook 3.1".into(),
        decision_maker: "tom.tactical".into(),
        level: pb::Level::Tactical as i32,
        review_by: ts(now + chrono::Duration::hours(2)),
        supersedes: supersedes.into(),
        ..Default::default()
    };

    // Before anybody has taken the incident, and with bad input: refused, nothing appended.
    let before = s.message_count().await;
    let err = incidents
        .record_decision(decide(first, "Isolate FS-01", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let ack = incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: incident_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let before = before + 1;
    assert_eq!(s.message_count().await, before);
    for (field, bad) in [
        ("level", {
            let mut r = decide(first, "Isolate FS-01", "");
            r.level = pb::Level::Strategic as i32;
            r
        }),
        ("rationale", {
            let mut r = decide(first, "Isolate FS-01", "");
            r.rationale = " ".into();
            r
        }),
        ("options[0].why_not", {
            let mut r = decide(first, "Isolate FS-01", "");
            r.options[0].why_not.clear();
            r
        }),
        ("review_by", {
            let mut r = decide(first, "Isolate FS-01", "");
            r.review_by = ts(now - chrono::Duration::minutes(10));
            r
        }),
        (
            "supersedes",
            decide(first, "Isolate FS-01", &Uuid::now_v7().to_string()),
        ),
        ("late_reason", {
            let mut r = decide(first, "Isolate FS-01", "");
            r.occurred_at = ts(now - chrono::Duration::hours(3));
            r.review_by = None;
            r
        }),
    ] {
        let err = incidents.record_decision(bad).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert_eq!(
            err.get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    assert_eq!(s.message_count().await, before);

    incidents
        .record_decision(decide(first, "Isolate FS-01", ""))
        .await
        .unwrap();
    let second = Uuid::now_v7();
    let superseding = incidents
        .record_decision(decide(
            second,
            "Isolate the whole file-server VLAN",
            &first.to_string(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(superseding.aggregate_id, incident_id);
    // The superseded decision is neither amended nor superseded again, but it is reviewed.
    let err = incidents
        .amend_decision(pb::AmendIncidentDecisionRequest {
            incident_id: incident_id.clone(),
            decision_id: first.to_string(),
            amendment: "keep FS-02 online".into(),
            reason: "payroll run".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    incidents
        .amend_decision(pb::AmendIncidentDecisionRequest {
            incident_id: incident_id.clone(),
            decision_id: second.to_string(),
            amendment: "keep the print server online".into(),
            reason: "payroll run".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let reviewed = incidents
        .review_decision(pb::ReviewIncidentDecisionRequest {
            incident_id: incident_id.clone(),
            decision_id: first.to_string(),
            outcome: "too narrow: FS-02 was already encrypting".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reviewed.position > ack.position);

    // Read at once, with every entry kept.
    let log = s
        .queries()
        .get_decision_log(pb::GetIncidentDecisionLogRequest {
            incident_id: incident_id.clone(),
            consistency: consistency(reviewed.position),
        })
        .await
        .unwrap()
        .into_inner();
    let ids = |list: &[pb::DecisionView]| -> Vec<String> {
        list.iter().map(|d| d.decision_id.clone()).collect()
    };
    assert_eq!(ids(&log.current), vec![second.to_string()]);
    assert_eq!(ids(&log.superseded), vec![first.to_string()]);
    assert!(
        log.due_for_review.is_empty(),
        "the review is due in two hours"
    );
    let old = &log.superseded[0];
    assert_eq!(old.decision, "Isolate FS-01");
    assert_eq!(old.superseded_by, second.to_string());
    assert_eq!(old.status, "SUPERSEDED");
    assert_eq!(
        old.reviews,
        vec!["too narrow: FS-02 was already encrypting"]
    );
    assert_eq!(old.level, pb::Level::Tactical as i32);
    assert_eq!(old.recorded_by, "e2e-operator");
    let new = &log.current[0];
    assert_eq!(new.supersedes, first.to_string());
    assert_eq!(
        new.amendments,
        vec!["keep the print server online — payroll run"]
    );
    assert_eq!(new.options[0].why_not, "every hour costs another share");
    assert!(new.information_basis.is_empty());

    // An unknown incident has no log.
    let err = s
        .queries()
        .get_decision_log(pb::GetIncidentDecisionLogRequest {
            incident_id: Uuid::now_v7().to_string(),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.stop().await;
}

async fn incidents_link_the_register_risks_they_realised_and_are_counted_per_risk(
    backend: Backend,
) {
    let s = Server::start(backend).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let opened = s
            .alerts()
            .ingest_alert(alert(&format!("det-risk-{n}"), pb::Severity::Critical))
            .await
            .unwrap()
            .into_inner();
        ids.push(opened.incident_id);
    }
    let mut incidents = s.incidents();
    let link = |id: &str, risk: &str| pb::LinkRiskRequest {
        incident_id: id.into(),
        risk_ref: risk.into(),
        rationale: "phished credentials gave the way in".into(),
        request_id: String::new(),
    };

    let before = s.message_count().await;
    for (field, bad) in [
        ("risk_ref", link(&ids[0], " ")),
        ("risk_ref", link(&ids[0], &"R".repeat(101))),
        ("rationale", {
            let mut r = link(&ids[0], "R-042");
            r.rationale.clear();
            r
        }),
    ] {
        let err = incidents.link_risk(bad).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert_eq!(
            err.get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    assert_eq!(s.message_count().await, before);

    incidents.link_risk(link(&ids[0], "R-042")).await.unwrap();
    incidents.link_risk(link(&ids[0], "R-007")).await.unwrap();
    incidents.link_risk(link(&ids[1], "R-042")).await.unwrap();
    let err = incidents
        .link_risk(link(&ids[1], "R-042"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    incidents.link_risk(link(&ids[1], "R-007")).await.unwrap();
    incidents.link_risk(link(&ids[2], "R-042")).await.unwrap();
    // References match exactly, case included: a different risk (and ties order by bytes).
    incidents.link_risk(link(&ids[2], "r-042")).await.unwrap();
    // The third was linked in error.
    let last = incidents
        .unlink_risk(pb::UnlinkRiskRequest {
            incident_id: ids[2].clone(),
            risk_ref: "R-042".into(),
            reason: "wrong register entry: it was the supplier risk".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The first is resolved: still counted, no longer open.
    incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: ids[0].clone(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let last = incidents
        .resolve_incident(pb::ResolveIncidentRequest {
            incident_id: ids[0].clone(),
            resolution: "accounts reset".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .position
        .max(last.position);

    let counts = s
        .queries()
        .count_incidents_by_risk(pb::CountIncidentsByRiskRequest {
            consistency: consistency(last),
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, u64, u64)> = counts
        .risks
        .iter()
        .map(|r| (r.risk_ref.as_str(), r.incidents, r.open))
        .collect();
    assert_eq!(got, vec![("R-007", 2, 1), ("R-042", 2, 1), ("r-042", 1, 1)]);

    let listed = s
        .queries()
        .list_incidents(pb::ListIncidentsRequest {
            risk_ref: "R-042".into(),
            sort: pb::IncidentSort::OpenedAsc as i32,
            consistency: consistency(last),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&str> = listed
        .incidents
        .iter()
        .map(|i| i.incident_id.as_str())
        .collect();
    assert_eq!(listed, vec![ids[0].as_str(), ids[1].as_str()]);

    let detail = s
        .queries()
        .get_incident(pb::GetIncidentRequest {
            incident_id: ids[0].clone(),
            consistency: consistency(last),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.incident.unwrap().risk_refs, vec!["R-042", "R-007"]);
    assert_eq!(
        detail.risks[0].rationale,
        "phished credentials gave the way in"
    );
    assert_eq!(detail.risks[0].linked_by, "e2e-operator");
    let third = s
        .queries()
        .get_incident(pb::GetIncidentRequest {
            incident_id: ids[2].clone(),
            consistency: consistency(last),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        third.incident.unwrap().risk_refs,
        vec!["r-042"],
        "the link made in error is gone"
    );
    s.stop().await;
}

async fn a_query_asking_for_the_latest_sees_every_acknowledged_commit(backend: Backend) {
    let s = Server::start(backend).await;
    // On an empty log there is nothing to wait for.
    let page = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            consistency: latest(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.alerts.is_empty());
    // A reader that was told no position (the writes were another client's) sees them all.
    let requests: Vec<pb::IngestAlertRequest> = (0..300)
        .map(|i| alert(&format!("latest-{i}"), pb::Severity::Low))
        .collect();
    let answer = s
        .alerts()
        .ingest_alerts(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 300);
    let page = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            page_size: 500,
            consistency: latest(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.alerts.len(), 300);
}

async fn the_latest_is_waited_for_like_a_min_position(backend: Backend) {
    // No projector in this process: the read model stays where it is, so what a query waits
    // for shows.
    let s = Server::start_with(backend, |c| {
        c.role = semsd::Role::Api;
        c.grpc.read_wait_ms = 300;
    })
    .await;
    let ingested = s
        .alerts()
        .ingest_alert(alert("latest-api", pb::Severity::Low))
        .await
        .unwrap()
        .into_inner();
    let list = |consistency| pb::ListAlertsRequest {
        consistency,
        ..Default::default()
    };
    let err = s.queries().list_alerts(list(latest())).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains(&ingested.position.to_string()),
        "{err:?}"
    );
    // Without it, the same query answers at once, from the read model as it is.
    let stale = s
        .queries()
        .list_alerts(list(None))
        .await
        .unwrap()
        .into_inner();
    assert!(stale.alerts.is_empty());
}

fn latest() -> Option<pb::Consistency> {
    Some(pb::Consistency {
        min_position: 0,
        latest: true,
    })
}

/// Many unary calls in flight on one HTTP/2 connection (the server writes the answers that are
/// ready together in one write): each gets its own answer, and every acknowledged alert is in
/// the log once.
async fn concurrent_calls_on_one_connection_are_each_answered_their_own(backend: Backend) {
    let s = Server::start(backend).await;
    let calls = (0..256).map(|i| {
        let mut client = s.alerts();
        async move {
            let answer = client
                .ingest_alert(alert(&format!("concurrent-{i}"), pb::Severity::Low))
                .await
                .unwrap()
                .into_inner();
            (i, answer)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut positions: Vec<u64> = answers.iter().map(|(_, a)| a.position).collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=256).collect::<Vec<u64>>(),
        "one commit per call"
    );
    let page = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            page_size: 500,
            consistency: consistency(256),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.alerts.len(), 256);
    for (i, answer) in &answers {
        let listed = page
            .alerts
            .iter()
            .find(|a| a.alert_id == answer.alert_id)
            .unwrap_or_else(|| panic!("call {i}: its alert is listed"));
        assert_eq!(listed.source_ref, format!("concurrent-{i}"), "call {i}");
    }
}

/// Threads of this process with the given name.
fn threads_named(name: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| t.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// On the embedded store the projector runs on a thread of its own (its loop is a chain of
/// round trips to a SQLite thread), still projects every commit, and its thread ends when
/// semsd stops; on JetStream and PostgreSQL it stays a task of the runtime.
async fn the_embedded_projector_runs_on_its_own_thread_until_semsd_stops(backend: Backend) {
    let before = threads_named("sems-projector");
    let s = Server::start(backend).await;
    let answer = s
        .alerts()
        .ingest_alert(alert("own-thread", pb::Severity::Low))
        .await
        .unwrap()
        .into_inner();
    let page = s
        .queries()
        .list_alerts(pb::ListAlertsRequest {
            consistency: consistency(answer.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.alerts.len(), 1, "projected");
    // Looked for once it has projected: a new thread names itself when it starts.
    let ours: Vec<String> = threads_named("sems-projector")
        .difference(&before)
        .cloned()
        .collect();
    match backend {
        Backend::Embedded => assert!(!ours.is_empty(), "the projector has a thread of its own"),
        Backend::JetStream => assert!(ours.is_empty(), "the projector is a task"),
    }
    s.stop().await;
    // `run` returned: it waited for the projector's thread to finish its loop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ours
        .iter()
        .any(|t| threads_named("sems-projector").contains(t))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the projector's thread outlives semsd"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
