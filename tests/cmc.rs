//! The Resilience Handshake and the CMC timeline end to end over gRPC, on both stores, with
//! each party calling under their own token: alert → incident → TACTICAL → handover offered
//! → clarification → accepted → crisis active → information, conflicting information,
//! decision, superseding decision, action, communication approved and sent → stood down.
//! The handover, timeline and decision-register read models are asserted entry by entry,
//! each rejected transition appends nothing, and a watch that connects mid-crisis misses
//! nothing and repeats nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chrono::Utc;
use sems_proto::v1::{
    self as pb, cmc_query_service_client::CmcQueryServiceClient,
    crisis_service_client::CrisisServiceClient, handover_service_client::HandoverServiceClient,
    incident_service_client::IncidentServiceClient,
};
use sems_testkit::{Backend, on_both_stores};
use support::Server;
use tonic::{
    Code, Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use uuid::Uuid;

on_both_stores!(
    the_full_story_from_alert_to_stand_down,
    calls_without_a_valid_token_are_refused,
    an_acceptance_a_stopped_call_left_half_done_is_finished_by_the_repair_sweep,
    a_stand_down_a_stopped_call_left_half_done_is_finished_by_the_repair_sweep,
    a_withdrawn_handover_closes_the_request_and_the_incident_resolves_at_tactical,
    an_escalation_a_stopped_call_left_without_its_handover_is_started_by_the_repair_sweep,
    a_sent_statement_is_retracted_by_the_role_that_approves_it,
    a_withdrawal_a_stopped_call_left_half_done_is_finished_by_the_repair_sweep,
    information_is_corroborated_and_superseded_and_decisions_record_its_standing,
);

const PEOPLE: [&str; 4] = ["tom.tactical", "carla.cmc", "lena.loggist", "paul.press"];

fn token(person: &str) -> String {
    format!("token-of-{person}")
}

/// semsd with a token per person.
async fn start(backend: Backend) -> Server {
    start_with(backend, |_| {}).await
}

async fn start_with(backend: Backend, configure: impl FnOnce(&mut semsd::Config)) -> Server {
    let path = std::env::temp_dir().join(format!("sems-tokens-{}", Uuid::new_v4()));
    let lines: String = PEOPLE
        .iter()
        .map(|p| format!("{p} sha256:{}\n", sems_app::sha256_hex(token(p).as_bytes())))
        .collect();
    std::fs::write(&path, lines).unwrap();
    Server::start_with(backend, |c| {
        c.grpc.tokens_file = Some(path);
        configure(c);
    })
    .await
}

#[derive(Clone)]
struct Bearer(String);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// The clients of one person.
struct As {
    handovers: HandoverServiceClient<Authed>,
    crisis: CrisisServiceClient<Authed>,
    incidents: IncidentServiceClient<Authed>,
    reads: CmcQueryServiceClient<Authed>,
}

fn as_(s: &Server, person: &str) -> As {
    let b = Bearer(token(person));
    As {
        handovers: HandoverServiceClient::with_interceptor(s.channel.clone(), b.clone()),
        crisis: CrisisServiceClient::with_interceptor(s.channel.clone(), b.clone()),
        incidents: IncidentServiceClient::with_interceptor(s.channel.clone(), b.clone()),
        reads: CmcQueryServiceClient::with_interceptor(s.channel.clone(), b),
    }
}

fn at(min_position: u64) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        min_position,
        latest: false,
    })
}

fn ts(t: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn full_brief() -> pb::HandoverBrief {
    pb::HandoverBrief {
        situation: "Ransomware on the baggage OT network; two sorters down".into(),
        situation_as_at: ts(Utc::now()),
        confidence: pb::Confidence::Medium as i32,
        history: "Detected 14:02 by EDR; isolated the OT VLAN at 14:20".into(),
        objectives: "Contain spread to airside; keep flights moving".into(),
        actions_taken: "VLAN isolated; IR retainer engaged".into(),
        resources_committed: "SOC shift, vendor IR team".into(),
        open_risks: "Spread to check-in systems".into(),
        open_actions: "Forensic image of FS-01".into(),
        key_contacts: "Airport duty manager; NCSC liaison".into(),
        communications: "Staff notice sent; no public statement".into(),
        constraints: "Regulator notification within 72h".into(),
        potential_most_likely: "Contained within 24h".into(),
        potential_worst_case: "Terminal closure".into(),
        authority_requested: "Authorise shutdown of OT systems; public statements".into(),
        known_unknowns: "Entry vector; data exfiltration".into(),
    }
}

fn grade(reliability: &str, credibility: u32, assumption: bool) -> Option<pb::Grade> {
    Some(pb::Grade {
        reliability: reliability.into(),
        credibility,
        assumption,
    })
}

fn decision(crisis_id: &str, id: Uuid, text: &str, info: &[Uuid]) -> pb::RecordDecisionRequest {
    pb::RecordDecisionRequest {
        crisis_id: crisis_id.into(),
        decision_id: id.to_string(),
        decision: text.into(),
        rationale: "prevent spread to airside systems".into(),
        options: vec![pb::OptionConsidered {
            option: "monitor only".into(),
            why_not: "spread would be detected too late".into(),
        }],
        information_ids: info.iter().map(Uuid::to_string).collect(),
        decision_maker: "carla.cmc".into(),
        level: pb::Level::Strategic as i32,
        ..Default::default()
    }
}

/// A critical alert's incident, acknowledged, at TACTICAL, with crisis escalation requested
/// by `tom`: its id and its handover's.
async fn escalated(s: &Server, tom: &mut As, source_ref: &str) -> (String, String) {
    let incident_id = tactical(s, tom, source_ref).await;
    let handover_id = tom
        .incidents
        .request_crisis_escalation(pb::RequestCrisisEscalationRequest {
            incident_id: incident_id.clone(),
            reason: "airside operations at risk".into(),
            criteria_met: "C2: passenger operations disrupted".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .handover_id;
    (incident_id, handover_id)
}

/// A critical alert's incident, acknowledged and at TACTICAL by `tom`.
async fn tactical(s: &Server, tom: &mut As, source_ref: &str) -> String {
    let mut alerts = sems_proto::v1::alert_service_client::AlertServiceClient::with_interceptor(
        s.channel.clone(),
        Bearer(token("tom.tactical")),
    );
    let incident_id = alerts
        .ingest_alert(pb::IngestAlertRequest {
            alert: Some(pb::Alert {
                source: "crowdstrike".into(),
                source_ref: source_ref.into(),
                title: "Ransomware on baggage OT".into(),
                description: "mass renames on FS-01".into(),
                severity: pb::Severity::Critical as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    tom.incidents
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: incident_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    tom.incidents
        .change_level(pb::ChangeLevelRequest {
            incident_id: incident_id.clone(),
            to: pb::Level::Tactical as i32,
            reason: "multiple sites affected".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    incident_id
}

/// As [`escalated`], with the handover offered by `tom` with a complete brief.
async fn offered(s: &Server, tom: &mut As, source_ref: &str) -> (String, String) {
    let (incident_id, handover_id) = escalated(s, tom, source_ref).await;
    tom.handovers
        .offer_handover(pb::OfferHandoverRequest {
            handover_id: handover_id.clone(),
            brief: Some(full_brief()),
            ..Default::default()
        })
        .await
        .unwrap();
    (incident_id, handover_id)
}

/// A command handler on the server's log acting as `actor`, bypassing the API: a call that
/// stops after its first commit.
async fn handler_of(s: &Server, actor: &str) -> sems_app::CommandHandler {
    sems_app::CommandHandler::new(
        s.log().await,
        std::sync::Arc::new(sems_app::SystemClock),
        sems_app::HandlerConfig {
            actor: actor.into(),
            ..sems_app::HandlerConfig::default()
        },
    )
}

fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> Code {
    r.expect_err("the call must be refused").code()
}

async fn the_full_story_from_alert_to_stand_down(backend: Backend) {
    let s = start(backend).await;
    let mut tom = as_(&s, "tom.tactical");
    let mut carla = as_(&s, "carla.cmc");
    let mut lena = as_(&s, "lena.loggist");
    let mut paul = as_(&s, "paul.press");

    // An alert opens an incident, which goes to TACTICAL and asks for the CMC.
    let (incident_id, handover_id) = escalated(&s, &mut tom, "det-cmc-1").await;

    // An incomplete brief is not offered, and nothing is appended.
    let before = s.message_count().await;
    let mut incomplete = full_brief();
    incomplete.known_unknowns.clear();
    let err = tom
        .handovers
        .offer_handover(pb::OfferHandoverRequest {
            handover_id: handover_id.clone(),
            brief: Some(incomplete),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("known_unknowns"),
        "{}",
        err.message()
    );
    assert_eq!(s.message_count().await, before);

    tom.handovers
        .offer_handover(pb::OfferHandoverRequest {
            handover_id: handover_id.clone(),
            brief: Some(full_brief()),
            ..Default::default()
        })
        .await
        .unwrap();
    // The pending handover waits for the CMC.
    let pending = carla
        .reads
        .list_handovers(pb::ListHandoversRequest {
            pending_only: true,
            consistency: at(s.stores.log().await.unwrap().state().await.unwrap().0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.handovers.len(), 1);
    assert_eq!(pending.handovers[0].status, "OFFERED");
    assert!(!pending.handovers[0].overdue);
    assert_eq!(pending.acceptance_target_seconds, 900);

    // The offering party cannot accept its own offer.
    let before = s.message_count().await;
    assert_eq!(
        code(
            tom.handovers
                .accept_handover(pb::AcceptHandoverRequest {
                    handover_id: handover_id.clone(),
                    authority_delegated: "all".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(s.message_count().await, before);

    carla
        .handovers
        .request_clarification(pb::RequestClarificationRequest {
            handover_id: handover_id.clone(),
            questions: vec!["Is check-in affected?".into()],
            request_id: String::new(),
        })
        .await
        .unwrap();
    tom.handovers
        .offer_handover(pb::OfferHandoverRequest {
            handover_id: handover_id.clone(),
            brief: None,
            answers: "Check-in is on a separate network and unaffected".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let accepted = carla
        .handovers
        .accept_handover(pb::AcceptHandoverRequest {
            handover_id: handover_id.clone(),
            effective_at: None,
            authority_delegated: "OT shutdown, public statements, regulator contact".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let crisis_id = accepted.crisis_id.clone();
    assert!(!crisis_id.is_empty());
    let position = accepted.commit.unwrap().position;

    // The handover read model: parties, rounds, latency; nothing pending any more.
    let h = carla
        .reads
        .get_handover(pb::GetHandoverRequest {
            handover_id: handover_id.clone(),
            consistency: at(position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, "ACCEPTED");
    assert_eq!(h.incident_id, incident_id);
    assert_eq!(h.crisis_id, crisis_id);
    assert_eq!(h.offered_by, "tom.tactical");
    assert_eq!(h.accepted_by, "carla.cmc");
    assert_eq!(h.revision, 2);
    assert_eq!(h.clarifications.len(), 1);
    assert_eq!(h.clarifications[0].requested_by, "carla.cmc");
    assert_eq!(
        h.clarifications[0].answers,
        "Check-in is on a separate network and unaffected"
    );
    assert!(h.acceptance_latency_ms >= 0 && h.accepted_at.is_some());
    assert_eq!(
        h.brief.unwrap().known_unknowns,
        "Entry vector; data exfiltration"
    );
    assert!(!h.overdue && h.waiting_since.is_none());
    let pending = carla
        .reads
        .list_handovers(pb::ListHandoversRequest {
            pending_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pending.handovers.is_empty());
    // The incident is now commanded from STRATEGIC.
    let detail = sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient::with_interceptor(
        s.channel.clone(),
        Bearer(token("carla.cmc")),
    )
    .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: at(position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.incident.unwrap().level, pb::Level::Strategic as i32);
    // The CMC has declined nothing: declining now is refused.
    assert_eq!(
        code(
            carla
                .handovers
                .decline_handover(pb::DeclineHandoverRequest {
                    handover_id: handover_id.clone(),
                    reason: "too late".into(),
                    request_id: String::new(),
                })
                .await
        ),
        Code::FailedPrecondition
    );

    // The CMC at work.
    for (person, role) in [
        ("carla.cmc", pb::CmcRole::CrisisLead),
        ("paul.press", pb::CmcRole::Communications),
        ("lena.loggist", pb::CmcRole::Loggist),
    ] {
        lena.crisis
            .log_attendance(pb::LogAttendanceRequest {
                crisis_id: crisis_id.clone(),
                person: person.into(),
                role: role as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    carla
        .crisis
        .set_objectives(pb::SetObjectivesRequest {
            crisis_id: crisis_id.clone(),
            objectives: vec!["Protect life".into(), "Restore baggage operations".into()],
            rationale: "JDM: working strategy".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (i1, i2) = (Uuid::new_v4(), Uuid::new_v4());
    lena.crisis
        .receive_information(pb::ReceiveInformationRequest {
            crisis_id: crisis_id.clone(),
            information_id: i1.to_string(),
            source: "vendor IR team".into(),
            content: "The OT gateway is the entry point".into(),
            grade: grade("B", 2, false),
            ..Default::default()
        })
        .await
        .unwrap();

    // A bad grade names its field and appends nothing.
    let before = s.message_count().await;
    let err = lena
        .crisis
        .receive_information(pb::ReceiveInformationRequest {
            crisis_id: crisis_id.clone(),
            source: "rumour".into(),
            content: "x".into(),
            grade: grade("B", 7, false),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("grade.credibility"),
        "{}",
        err.message()
    );
    assert_eq!(s.message_count().await, before);

    // A watcher connects mid-crisis, from the start of the timeline.
    let mut watch = carla
        .reads
        .watch_timeline(pb::WatchTimelineRequest {
            crisis_id: crisis_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    lena.crisis
        .receive_information(pb::ReceiveInformationRequest {
            crisis_id: crisis_id.clone(),
            information_id: i2.to_string(),
            source: "airport police".into(),
            content: "The entry point was a phishing e-mail".into(),
            grade: grade("D", 4, true),
            ..Default::default()
        })
        .await
        .unwrap();
    lena.crisis
        .flag_conflict(pb::FlagConflictRequest {
            crisis_id: crisis_id.clone(),
            information_ids: vec![i1.to_string(), i2.to_string()],
            note: "Entry vector reports disagree".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (d1, d2, d3, d4) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    carla
        .crisis
        .record_decision(decision(&crisis_id, d1, "Shut the OT gateway", &[i1]))
        .await
        .unwrap();
    lena.crisis
        .regrade_information(pb::RegradeInformationRequest {
            crisis_id: crisis_id.clone(),
            information_id: i1.to_string(),
            grade: grade("E", 5, false),
            reason: "vendor retracted".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut superseding = decision(
        &crisis_id,
        d2,
        "Shut all OT and block the phishing domain",
        &[i1, i2],
    );
    superseding.supersedes = d1.to_string();
    superseding.review_by = ts(Utc::now() + chrono::Duration::hours(4));
    carla.crisis.record_decision(superseding).await.unwrap();
    // A superseded decision cannot be superseded again.
    let mut again = decision(&crisis_id, Uuid::new_v4(), "x", &[]);
    again.supersedes = d1.to_string();
    assert_eq!(
        code(carla.crisis.record_decision(again).await),
        Code::FailedPrecondition
    );

    let action = Uuid::new_v4();
    lena.crisis
        .assign_action(pb::AssignActionRequest {
            crisis_id: crisis_id.clone(),
            action_id: action.to_string(),
            description: "Brief the airport duty manager".into(),
            owner: "omar.ops".into(),
            due_at: ts(Utc::now() + chrono::Duration::hours(1)),
            decision_id: d2.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    lena.crisis
        .change_action_status(pb::ChangeActionStatusRequest {
            crisis_id: crisis_id.clone(),
            action_id: action.to_string(),
            status: pb::ActionStatus::InProgress as i32,
            ..Default::default()
        })
        .await
        .unwrap();

    let statement = Uuid::new_v4();
    paul.crisis
        .draft_communication(pb::DraftCommunicationRequest {
            crisis_id: crisis_id.clone(),
            communication_id: statement.to_string(),
            audience: pb::Audience::Media as i32,
            channel: "press release".into(),
            tlp: pb::Tlp::Clear as i32,
            content: "Some baggage is delayed by an IT problem.".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let send = || pb::SendCommunicationRequest {
        crisis_id: crisis_id.clone(),
        communication_id: statement.to_string(),
        ..Default::default()
    };
    let approve = |role: pb::CmcRole| pb::ApproveCommunicationRequest {
        crisis_id: crisis_id.clone(),
        communication_id: statement.to_string(),
        role: role as i32,
        ..Default::default()
    };
    let before = s.message_count().await;
    assert_eq!(
        code(paul.crisis.send_communication(send()).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            paul.crisis
                .approve_communication(approve(pb::CmcRole::Communications))
                .await
        ),
        Code::FailedPrecondition,
        "a media statement needs the crisis lead, and never its drafter"
    );
    assert_eq!(s.message_count().await, before);
    carla
        .crisis
        .approve_communication(approve(pb::CmcRole::CrisisLead))
        .await
        .unwrap();
    paul.crisis.send_communication(send()).await.unwrap();

    carla
        .crisis
        .declare_stabilising(pb::DeclareStabilisingRequest {
            crisis_id: crisis_id.clone(),
            reason: "spread contained; sorters back on line".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A late entry: made two hours ago, its review already due.
    let mut late = decision(&crisis_id, d3, "Close car park 4 (phoned in)", &[]);
    late.occurred_at = ts(Utc::now() - chrono::Duration::hours(2));
    late.review_by = ts(Utc::now() - chrono::Duration::hours(1));
    let err = carla
        .crisis
        .record_decision(late.clone())
        .await
        .unwrap_err();
    assert!(err.message().contains("late_reason"), "{}", err.message());
    late.late_reason = "decided by phone at the car park, logged on return".into();
    carla.crisis.record_decision(late).await.unwrap();

    carla
        .crisis
        .record_decision(decision(&crisis_id, d4, "Stand the CMC down", &[]))
        .await
        .unwrap();
    // While the CMC commands, the incident is not resolved below it.
    let resolve = || pb::ResolveIncidentRequest {
        incident_id: incident_id.clone(),
        resolution: "sorters restored from clean images".into(),
        ..Default::default()
    };
    let before = s.message_count().await;
    let refused = tom.incidents.resolve_incident(resolve()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("CMC"), "{}", refused.message());
    assert_eq!(s.message_count().await, before);
    let stood_down = carla
        .crisis
        .stand_down(pb::StandDownRequest {
            crisis_id: crisis_id.clone(),
            handed_to: "tom.tactical".into(),
            decision_id: d4.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A stood-down crisis refuses everything but its review, action progress and retractions.
    assert_eq!(
        code(
            lena.crisis
                .receive_information(pb::ReceiveInformationRequest {
                    crisis_id: crisis_id.clone(),
                    source: "x".into(),
                    content: "y".into(),
                    grade: grade("A", 1, false),
                    ..Default::default()
                })
                .await
        ),
        Code::FailedPrecondition
    );

    // The stand-down gave command back to TACTICAL, within the same call.
    let incidents = || {
        sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient::with_interceptor(
            s.channel.clone(),
            Bearer(token("tom.tactical")),
        )
    };
    let returned = incidents()
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: at(stood_down.position),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(returned.level, pb::Level::Tactical as i32);
    let resolved = tom
        .incidents
        .resolve_incident(resolve())
        .await
        .unwrap()
        .into_inner();
    let resolved = incidents()
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: at(resolved.position),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(
        (resolved.status, resolved.level),
        (
            pb::IncidentStatus::Resolved as i32,
            pb::Level::Tactical as i32
        )
    );

    // The timeline, entry by entry, in the order recorded.
    let timeline = carla
        .reads
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: crisis_id.clone(),
            page_size: 1000,
            consistency: at(stood_down.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, &str, &str)> = timeline
        .entries
        .iter()
        .map(|e| (e.kind.as_str(), e.event_type.as_str(), e.actor.as_str()))
        .collect();
    let expected = [
        ("escalation", "HandoverStarted", "tom.tactical"),
        ("handover", "HandoverOffered", "tom.tactical"),
        ("handover", "HandoverClarificationRequested", "carla.cmc"),
        ("handover", "HandoverOffered", "tom.tactical"),
        ("handover", "HandoverAccepted", "carla.cmc"),
        ("handover", "CommandTransferred", "carla.cmc"),
        ("crisis", "CrisisActivated", "carla.cmc"),
        ("attendance", "CrisisAttendanceLogged", "lena.loggist"),
        ("attendance", "CrisisAttendanceLogged", "lena.loggist"),
        ("attendance", "CrisisAttendanceLogged", "lena.loggist"),
        ("objectives", "StrategicObjectivesSet", "carla.cmc"),
        ("information", "InformationReceived", "lena.loggist"),
        ("information", "InformationReceived", "lena.loggist"),
        ("information", "InformationConflictFlagged", "lena.loggist"),
        ("decision", "DecisionRecorded", "carla.cmc"),
        ("information", "InformationRegraded", "lena.loggist"),
        ("decision", "DecisionRecorded", "carla.cmc"),
        ("decision", "DecisionSuperseded", "carla.cmc"),
        ("action", "ActionAssigned", "lena.loggist"),
        ("action", "ActionStatusChanged", "lena.loggist"),
        ("communication", "CommunicationDrafted", "paul.press"),
        ("communication", "CommunicationApproved", "carla.cmc"),
        ("communication", "CommunicationSent", "paul.press"),
        ("crisis", "CrisisStabilising", "carla.cmc"),
        ("decision", "DecisionRecorded", "carla.cmc"),
        ("decision", "DecisionRecorded", "carla.cmc"),
        ("crisis", "CrisisStoodDown", "carla.cmc"),
    ];
    assert_eq!(got, expected);
    assert!(timeline.next_page_token.is_empty());
    let e = &timeline.entries;
    assert_eq!(e[0].level, pb::Level::Tactical as i32);
    assert_eq!(e[4].level, pb::Level::Strategic as i32);
    assert!(
        e.iter()
            .all(|e| e.recorded_at.is_some() && e.occurred_at.is_some())
    );
    assert_eq!(e[20].tlp, "CLEAR", "a communication carries its own TLP");
    assert_eq!(e[14].tlp, "AMBER", "other entries the crisis's");
    assert!(e[11].summary.contains("[B2 Fact]"), "{}", e[11].summary);
    let late = &e[24];
    assert_eq!(
        late.late_reason,
        "decided by phone at the car park, logged on return"
    );
    let late_by = late.recorded_at.unwrap().seconds - late.occurred_at.unwrap().seconds;
    assert!(
        late_by >= 7_100,
        "occurred two hours before recorded: {late_by}"
    );

    // Pages of five give the same entries; filters by kind and level.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = carla
            .reads
            .get_timeline(pb::GetTimelineRequest {
                crisis_id: crisis_id.clone(),
                page_size: 5,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, timeline.entries);
    let decisions = carla
        .reads
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: crisis_id.clone(),
            kinds: vec!["decision".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decisions.entries.len(), 5);
    let tactical = carla
        .reads
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: crisis_id.clone(),
            levels: vec![pb::Level::Tactical as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        tactical.entries.len(),
        3,
        "the escalation and the two offers"
    );
    assert_eq!(
        code(
            carla
                .reads
                .get_timeline(pb::GetTimelineRequest {
                    crisis_id: crisis_id.clone(),
                    kinds: vec!["gossip".into()],
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument
    );

    // The watcher got every entry once, in order, across history and live entries.
    let mut watched = Vec::new();
    while watched.len() < timeline.entries.len() {
        let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the watch stalled")
            .unwrap()
            .unwrap();
        watched.push(next);
    }
    assert_eq!(watched, timeline.entries);
    // Resuming after the tenth entry sends the rest, and only the rest.
    let tenth = &timeline.entries[9];
    let mut resumed = carla
        .reads
        .watch_timeline(pb::WatchTimelineRequest {
            crisis_id: crisis_id.clone(),
            after_position: tenth.position,
            after_seq: tenth.seq,
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut rest = Vec::new();
    while rest.len() < timeline.entries.len() - 10 {
        rest.push(resumed.message().await.unwrap().unwrap());
    }
    assert_eq!(rest, timeline.entries[10..]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.message())
            .await
            .is_err(),
        "nothing more until something new is recorded"
    );

    // The decision register.
    let register = carla
        .reads
        .get_decision_register(pb::GetDecisionRegisterRequest {
            crisis_id: crisis_id.clone(),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids = |v: &[pb::DecisionView]| v.iter().map(|d| d.decision_id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&register.current),
        vec![d2.to_string(), d3.to_string(), d4.to_string()]
    );
    assert_eq!(ids(&register.superseded), vec![d1.to_string()]);
    assert_eq!(ids(&register.due_for_review), vec![d3.to_string()]);
    let old = &register.superseded[0];
    assert_eq!(old.superseded_by, d2.to_string());
    // The superseded decision keeps the grade its information had when it was taken.
    let basis = old.information_basis[0].grade.clone().unwrap();
    assert_eq!((basis.reliability.as_str(), basis.credibility), ("B", 2));
    let newer = &register.current[0];
    assert_eq!(newer.supersedes, d1.to_string());
    let basis = newer.information_basis[0].grade.clone().unwrap();
    assert_eq!((basis.reliability.as_str(), basis.credibility), ("E", 5));

    // The crisis: stood down, with its people, objectives, action and communication.
    let crisis = carla
        .reads
        .get_crisis(pb::GetCrisisRequest {
            crisis_id: crisis_id.clone(),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let c = crisis.crisis.unwrap();
    assert_eq!(c.status, "STOOD_DOWN");
    assert_eq!(c.handed_to, "tom.tactical");
    assert_eq!(c.handover_id, handover_id);
    assert_eq!(c.incident_ids, vec![incident_id.clone()]);
    assert_eq!(c.present.len(), 3);
    assert_eq!(c.objectives_version, 1);
    assert_eq!((c.information_items, c.decisions), (2, 4));
    assert_eq!(c.entries as usize, timeline.entries.len() - 6);
    assert_eq!(crisis.actions[0].status, "IN_PROGRESS");
    assert!(!crisis.actions[0].overdue);
    let m = &crisis.communications[0];
    assert_eq!(
        (
            m.status.as_str(),
            m.approved_by.as_str(),
            m.required_role.as_str()
        ),
        ("SENT", "carla.cmc", "CRISIS_LEAD")
    );
    assert!(c.stabilising_at.is_some());

    // After stand-down, only the post-crisis review, once; then nothing.
    let reviewed = lena
        .crisis
        .record_crisis_review(pb::RecordCrisisReviewRequest {
            crisis_id: crisis_id.clone(),
            findings: "Handover took 40 minutes; simplify the brief".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = carla
        .reads
        .get_crisis(pb::GetCrisisRequest {
            crisis_id: crisis_id.clone(),
            consistency: at(reviewed.position),
        })
        .await
        .unwrap()
        .into_inner()
        .crisis
        .unwrap();
    assert_eq!(after.status, "REVIEWED");
    assert_eq!(
        after.review_findings,
        "Handover took 40 minutes; simplify the brief"
    );
    assert_eq!(
        code(
            lena.crisis
                .record_crisis_review(pb::RecordCrisisReviewRequest {
                    crisis_id: crisis_id.clone(),
                    findings: "again".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::FailedPrecondition
    );
    s.stop().await;
}

async fn calls_without_a_valid_token_are_refused(backend: Backend) {
    let s = start(backend).await;
    let before = s.message_count().await;
    let mut anonymous = CrisisServiceClient::new(s.channel.clone());
    let declare = pb::DeclareCrisisRequest {
        title: "Bomb threat, terminal 2".into(),
        incident_ids: vec![Uuid::new_v4().to_string()],
        criteria: "credible threat to life".into(),
        ..Default::default()
    };
    assert_eq!(
        code(anonymous.declare_crisis(declare.clone()).await),
        Code::Unauthenticated
    );
    let mut forged =
        CrisisServiceClient::with_interceptor(s.channel.clone(), Bearer("guess".into()));
    assert_eq!(
        code(forged.declare_crisis(declare.clone()).await),
        Code::Unauthenticated
    );
    assert_eq!(s.message_count().await, before);
    // A declared crisis needs its criteria; with them, it is recorded under the caller.
    let mut carla = as_(&s, "carla.cmc");
    let mut no_criteria = declare.clone();
    no_criteria.criteria.clear();
    let err = carla.crisis.declare_crisis(no_criteria).await.unwrap_err();
    assert!(err.message().contains("criteria"), "{}", err.message());
    let declared = carla
        .crisis
        .declare_crisis(declare)
        .await
        .unwrap()
        .into_inner();
    let timeline = carla
        .reads
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: declared.aggregate_id.clone(),
            consistency: at(declared.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(timeline.entries.len(), 1);
    assert_eq!(timeline.entries[0].actor, "carla.cmc");
    assert_eq!(
        timeline.entries[0].summary,
        "Crisis declared: Bomb threat, terminal 2"
    );
    s.stop().await;
}

async fn an_acceptance_a_stopped_call_left_half_done_is_finished_by_the_repair_sweep(
    backend: Backend,
) {
    use sems_app::{CommandMeta, crisis_id_for};
    use sems_domain::handover::{Handover, HandoverCommand};
    let s = start_with(backend, |c| c.domain.repair_after_ms = 300).await;
    let mut tom = as_(&s, "tom.tactical");
    let mut carla = as_(&s, "carla.cmc");
    let (incident_id, handover_id) = offered(&s, &mut tom, "half-accepted").await;

    // The first of the acceptance's three commits, and no more: the call stopped there.
    let handover_id = Uuid::parse_str(&handover_id).unwrap();
    let crisis_id = crisis_id_for(handover_id);
    let handler = handler_of(&s, "carla.cmc").await;
    handler
        .execute::<Handover>(
            handover_id,
            &HandoverCommand::Accept {
                effective_at: Utc::now(),
                authority_delegated: "payroll decisions".into(),
                crisis_id,
            },
            &CommandMeta::default(),
        )
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let crisis = loop {
        let found = carla
            .reads
            .get_crisis(pb::GetCrisisRequest {
                crisis_id: crisis_id.to_string(),
                consistency: None,
            })
            .await;
        match found {
            Ok(d) => break d.into_inner().crisis.unwrap(),
            Err(e) if e.code() == Code::NotFound && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the sweep did not activate the crisis: {e}"),
        }
    };
    assert_eq!(crisis.handover_id, handover_id.to_string());
    assert_eq!(crisis.incident_ids, vec![incident_id.clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let i = sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient::with_interceptor(
            s.channel.clone(),
            Bearer(token("carla.cmc")),
        )
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
        if i.level == pb::Level::Strategic as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not pass command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

async fn a_stand_down_a_stopped_call_left_half_done_is_finished_by_the_repair_sweep(
    backend: Backend,
) {
    use sems_app::CommandMeta;
    use sems_domain::crisis::{Crisis, CrisisCommand};
    let s = start_with(backend, |c| c.domain.repair_after_ms = 300).await;
    let mut tom = as_(&s, "tom.tactical");
    let mut carla = as_(&s, "carla.cmc");
    let (incident_id, handover_id) = offered(&s, &mut tom, "half-stood-down").await;
    let accepted = carla
        .handovers
        .accept_handover(pb::AcceptHandoverRequest {
            handover_id: handover_id.clone(),
            authority_delegated: "all".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let crisis_id = accepted.crisis_id;
    let decided = Uuid::now_v7();
    carla
        .crisis
        .record_decision(decision(&crisis_id, decided, "Stand the CMC down", &[]))
        .await
        .unwrap();

    // The stand-down's own commit, and no more: the call stopped before giving command back.
    let handler = handler_of(&s, "carla.cmc").await;
    let stood_down = handler
        .execute::<Crisis>(
            Uuid::parse_str(&crisis_id).unwrap(),
            &CrisisCommand::StandDown {
                handed_to: "tom.tactical".into(),
                decision_id: decided,
            },
            &CommandMeta::default(),
        )
        .await
        .unwrap();
    let mut reads =
        sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient::with_interceptor(
            s.channel.clone(),
            Bearer(token("tom.tactical")),
        );
    let level = |i: pb::IncidentDetail| i.incident.unwrap().level;
    let at_stand_down = reads
        .get_incident(pb::GetIncidentRequest {
            incident_id: incident_id.clone(),
            consistency: at(stood_down.position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(level(at_stand_down), pb::Level::Strategic as i32);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let i = reads
            .get_incident(pb::GetIncidentRequest {
                incident_id: incident_id.clone(),
                consistency: None,
            })
            .await
            .unwrap()
            .into_inner();
        if level(i) == pb::Level::Tactical as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not return command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

async fn a_withdrawn_handover_closes_the_request_and_the_incident_resolves_at_tactical(
    backend: Backend,
) {
    let s = start(backend).await;
    let mut tom = as_(&s, "tom.tactical");
    let mut carla = as_(&s, "carla.cmc");
    let (incident_id, handover_id) = escalated(&s, &mut tom, "withdrawn").await;
    let resolve = || pb::ResolveIncidentRequest {
        incident_id: incident_id.clone(),
        resolution: "contained at site A before the CMC answered".into(),
        ..Default::default()
    };
    let withdraw = |reason: &str| pb::WithdrawHandoverRequest {
        handover_id: handover_id.clone(),
        reason: reason.into(),
        request_id: String::new(),
    };

    // While the request is pending the incident is not resolved; a withdrawal needs a reason.
    let before = s.message_count().await;
    assert_eq!(
        code(tom.incidents.resolve_incident(resolve()).await),
        Code::FailedPrecondition
    );
    let no_reason = tom
        .handovers
        .withdraw_handover(withdraw(" "))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    assert!(
        no_reason.message().contains("reason"),
        "{}",
        no_reason.message()
    );
    assert_eq!(s.message_count().await, before);

    // Withdrawn while still drafting: the handover is closed, the request too.
    let answer = tom
        .handovers
        .withdraw_handover(withdraw("contained at site A; no CMC needed"))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.crisis_id.is_empty());
    let position = answer.commit.unwrap().position;
    let h = carla
        .reads
        .get_handover(pb::GetHandoverRequest {
            handover_id: handover_id.clone(),
            consistency: at(position),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            h.status.as_str(),
            h.withdrawn_by.as_str(),
            h.withdraw_reason.as_str(),
            h.command_stays_at.as_str()
        ),
        (
            "WITHDRAWN",
            "tom.tactical",
            "contained at site A; no CMC needed",
            "TACTICAL"
        )
    );
    assert!(h.withdrawn_at.is_some() && h.waiting_since.is_none());
    let pending = carla
        .reads
        .list_handovers(pb::ListHandoversRequest {
            pending_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pending
            .handovers
            .iter()
            .all(|p| p.handover_id != handover_id)
    );
    let incident = sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient::with_interceptor(
        s.channel.clone(),
        Bearer(token("tom.tactical")),
    )
    .get_incident(pb::GetIncidentRequest {
        incident_id: incident_id.clone(),
        consistency: at(position),
    })
    .await
    .unwrap()
    .into_inner()
    .incident
    .unwrap();
    assert!(!incident.crisis_escalation_requested);
    assert_eq!(incident.level, pb::Level::Tactical as i32);

    // Closed: neither side changes it any more, and nothing is appended.
    let before = s.message_count().await;
    assert_eq!(
        code(tom.handovers.withdraw_handover(withdraw("again")).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            carla
                .handovers
                .decline_handover(pb::DeclineHandoverRequest {
                    handover_id: handover_id.clone(),
                    reason: "too late".into(),
                    request_id: String::new(),
                })
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(s.message_count().await, before);
    tom.incidents.resolve_incident(resolve()).await.unwrap();
    s.stop().await;
}

async fn an_escalation_a_stopped_call_left_without_its_handover_is_started_by_the_repair_sweep(
    backend: Backend,
) {
    use sems_app::CommandMeta;
    use sems_domain::incident::{Incident, IncidentCommand};
    let s = start_with(backend, |c| c.domain.repair_after_ms = 300).await;
    let mut tom = as_(&s, "tom.tactical");
    let mut carla = as_(&s, "carla.cmc");
    let incident_id = tactical(&s, &mut tom, "unstarted").await;

    // The request's own commit, and no more: the call stopped before starting the handover.
    let handler = handler_of(&s, "tom.tactical").await;
    let handover_id = Uuid::now_v7();
    handler
        .execute::<Incident>(
            Uuid::parse_str(&incident_id).unwrap(),
            &IncidentCommand::RequestCrisisEscalation {
                reason: "airside operations at risk".into(),
                criteria_met: String::new(),
                handover_id,
            },
            &CommandMeta::default(),
        )
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let started = loop {
        let found = carla
            .reads
            .get_handover(pb::GetHandoverRequest {
                handover_id: handover_id.to_string(),
                consistency: None,
            })
            .await;
        match found {
            Ok(h) => break h.into_inner(),
            Err(e) if e.code() == Code::NotFound && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the sweep did not start the handover: {e}"),
        }
    };
    assert_eq!(
        (
            started.status.as_str(),
            started.incident_id.as_str(),
            started.reason.as_str(),
            started.started_by.as_str()
        ),
        (
            "DRAFTING",
            incident_id.as_str(),
            "airside operations at risk",
            "tom.tactical"
        )
    );
    // The request it belongs to can now be answered: withdrawn, here.
    tom.handovers
        .withdraw_handover(pb::WithdrawHandoverRequest {
            handover_id: handover_id.to_string(),
            reason: "contained".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    s.stop().await;
}

async fn a_sent_statement_is_retracted_by_the_role_that_approves_it(backend: Backend) {
    let s = start(backend).await;
    let mut carla = as_(&s, "carla.cmc");
    let mut paul = as_(&s, "paul.press");
    let mut lena = as_(&s, "lena.loggist");
    let crisis_id = carla
        .crisis
        .declare_crisis(pb::DeclareCrisisRequest {
            title: "Check-in outage".into(),
            incident_ids: vec![Uuid::new_v4().to_string()],
            criteria: "passenger operations disrupted".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .aggregate_id;
    for (person, role) in [
        ("carla.cmc", pb::CmcRole::CrisisLead),
        ("paul.press", pb::CmcRole::Communications),
    ] {
        lena.crisis
            .log_attendance(pb::LogAttendanceRequest {
                crisis_id: crisis_id.clone(),
                person: person.into(),
                role: role as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let statement = Uuid::now_v7().to_string();
    paul.crisis
        .draft_communication(pb::DraftCommunicationRequest {
            crisis_id: crisis_id.clone(),
            communication_id: statement.clone(),
            audience: pb::Audience::Media as i32,
            channel: "press release".into(),
            tlp: pb::Tlp::Clear as i32,
            content: "Check-in is slow because of an IT problem.".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    carla
        .crisis
        .approve_communication(pb::ApproveCommunicationRequest {
            crisis_id: crisis_id.clone(),
            communication_id: statement.clone(),
            role: pb::CmcRole::CrisisLead as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    paul.crisis
        .send_communication(pb::SendCommunicationRequest {
            crisis_id: crisis_id.clone(),
            communication_id: statement.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let retract = |reason: &str, role: pb::CmcRole| pb::RetractCommunicationRequest {
        crisis_id: crisis_id.clone(),
        communication_id: statement.clone(),
        reason: reason.into(),
        role: role as i32,
        ..Default::default()
    };
    let why = "the outage is a cyber attack, not an IT problem";

    let before = s.message_count().await;
    let err = carla
        .crisis
        .retract_communication(retract(" ", pb::CmcRole::CrisisLead))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{}", err.message());
    assert_eq!(
        code(
            paul.crisis
                .retract_communication(retract(why, pb::CmcRole::Communications))
                .await
        ),
        Code::FailedPrecondition,
        "a media statement is retracted by the crisis lead"
    );
    assert_eq!(s.message_count().await, before);

    let retracted = carla
        .crisis
        .retract_communication(retract(why, pb::CmcRole::CrisisLead))
        .await
        .unwrap()
        .into_inner();
    let detail = carla
        .reads
        .get_crisis(pb::GetCrisisRequest {
            crisis_id: crisis_id.clone(),
            consistency: at(retracted.position),
        })
        .await
        .unwrap()
        .into_inner();
    let m = &detail.communications[0];
    assert_eq!(
        (
            m.status.as_str(),
            m.retracted_by.as_str(),
            m.retraction_reason.as_str()
        ),
        ("RETRACTED", "carla.cmc", why)
    );
    assert!(m.retracted_at.is_some() && m.sent_at.is_some(), "both kept");
    let timeline = carla
        .reads
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: crisis_id.clone(),
            consistency: at(retracted.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let last = timeline.entries.last().unwrap();
    assert_eq!(
        (
            last.event_type.as_str(),
            last.actor.as_str(),
            last.tlp.as_str()
        ),
        ("CommunicationRetracted", "carla.cmc", "AMBER"),
        "the reason is the CMC's own, shared as the crisis is, not as the statement"
    );
    assert_eq!(
        code(
            carla
                .crisis
                .retract_communication(retract(why, pb::CmcRole::CrisisLead))
                .await
        ),
        Code::FailedPrecondition,
        "retracted once"
    );
    s.stop().await;
}

async fn a_withdrawal_a_stopped_call_left_half_done_is_finished_by_the_repair_sweep(
    backend: Backend,
) {
    use sems_app::CommandMeta;
    use sems_domain::handover::{Handover, HandoverCommand};
    let s = start_with(backend, |c| c.domain.repair_after_ms = 300).await;
    let mut tom = as_(&s, "tom.tactical");
    let (incident_id, handover_id) = escalated(&s, &mut tom, "half-withdrawn").await;

    // The handover's withdrawal, and no more: the call stopped before closing the request.
    let handler = handler_of(&s, "tom.tactical").await;
    handler
        .execute::<Handover>(
            Uuid::parse_str(&handover_id).unwrap(),
            &HandoverCommand::Withdraw {
                reason: "contained".into(),
            },
            &CommandMeta::default(),
        )
        .await
        .unwrap();
    let mut reads =
        sems_proto::v1::incident_query_service_client::IncidentQueryServiceClient::with_interceptor(
            s.channel.clone(),
            Bearer(token("tom.tactical")),
        );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Read without waiting: the read model may not have the incident yet.
        let closed = reads
            .get_incident(pb::GetIncidentRequest {
                incident_id: incident_id.clone(),
                consistency: None,
            })
            .await
            .ok()
            .and_then(|d| d.into_inner().incident)
            .is_some_and(|i| !i.crisis_escalation_requested);
        if closed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not close the request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

async fn information_is_corroborated_and_superseded_and_decisions_record_its_standing(
    backend: Backend,
) {
    let s = start(backend).await;
    let mut carla = as_(&s, "carla.cmc");
    let mut lena = as_(&s, "lena.loggist");
    let crisis_id = carla
        .crisis
        .declare_crisis(pb::DeclareCrisisRequest {
            title: "Ransomware at two sites".into(),
            incident_ids: vec![Uuid::new_v4().to_string()],
            criteria: "operations disrupted".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .aggregate_id;
    let items: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    for (i, item) in items.iter().enumerate() {
        lena.crisis
            .receive_information(pb::ReceiveInformationRequest {
                crisis_id: crisis_id.clone(),
                information_id: item.to_string(),
                source: "vendor IR team".into(),
                content: format!("report {i}"),
                grade: grade("B", 2, false),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let [confirmed, confirming, disputed, newer] = [items[0], items[1], items[2], items[3]];

    // Refusals name the field and append nothing.
    let before = s.message_count().await;
    let err = lena
        .crisis
        .corroborate_information(pb::CorroborateInformationRequest {
            crisis_id: crisis_id.clone(),
            information_id: confirmed.to_string(),
            corroborated_by: vec!["nope".into()],
            note: "same IOCs".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("corroborated_by[0]"),
        "{}",
        err.message()
    );
    assert_eq!(s.message_count().await, before);

    lena.crisis
        .corroborate_information(pb::CorroborateInformationRequest {
            crisis_id: crisis_id.clone(),
            information_id: confirmed.to_string(),
            corroborated_by: vec![confirming.to_string()],
            note: "the police saw the same IOCs".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    lena.crisis
        .flag_conflict(pb::FlagConflictRequest {
            crisis_id: crisis_id.clone(),
            information_ids: vec![confirming.to_string(), disputed.to_string()],
            note: "spreading vs contained".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    lena.crisis
        .supersede_information(pb::SupersedeInformationRequest {
            crisis_id: crisis_id.clone(),
            information_id: disputed.to_string(),
            superseded_by: newer.to_string(),
            reason: "a newer scan of site B".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let before = s.message_count().await;
    let err = carla
        .crisis
        .record_decision(decision(
            &crisis_id,
            Uuid::now_v7(),
            "Isolate site B",
            &[disputed],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("information_ids[0]"),
        "{}",
        err.message()
    );
    assert_eq!(s.message_count().await, before);

    let taken = carla
        .crisis
        .record_decision(decision(
            &crisis_id,
            Uuid::now_v7(),
            "Isolate site B",
            &[confirmed, confirming, newer],
        ))
        .await
        .unwrap()
        .into_inner();
    let register = carla
        .reads
        .get_decision_register(pb::GetDecisionRegisterRequest {
            crisis_id: crisis_id.clone(),
            consistency: at(taken.position),
        })
        .await
        .unwrap()
        .into_inner();
    let standing: Vec<(bool, bool)> = register.current[0]
        .information_basis
        .iter()
        .map(|b| (b.corroborated, b.contradicted))
        .collect();
    assert_eq!(standing, [(true, false), (false, true), (false, false)]);
    let timeline = carla
        .reads
        .get_timeline(pb::GetTimelineRequest {
            crisis_id: crisis_id.clone(),
            kinds: vec!["information".into()],
            consistency: at(taken.position),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let types: Vec<&str> = timeline
        .entries
        .iter()
        .map(|e| e.event_type.as_str())
        .skip(4)
        .collect();
    assert_eq!(
        types,
        [
            "InformationCorroborated",
            "InformationConflictFlagged",
            "InformationSuperseded"
        ]
    );
    s.stop().await;
}
