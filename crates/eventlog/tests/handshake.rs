//! The Resilience Handshake across aggregates, on both stores: escalation starts a handover,
//! acceptance activates the crisis and passes the incident to STRATEGIC, decline closes the
//! request; a stopped acceptance is completed exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{Duration, SubsecRound, Utc};
use sems_app::{
    AppError, CommandHandler, CommandMeta, HandlerConfig, Sems, SystemClock, crisis_id_for,
    verify_chain,
};
use sems_domain::{
    Level, Severity,
    crisis::Crisis,
    handover::{Confidence, Handover, HandoverBrief, HandoverCommand, HandoverStatus},
    incident::{Incident, IncidentCommand},
};
use sems_testkit::{Backend, TestLog, TestStores, on_both_stores};
use uuid::Uuid;

on_both_stores!(
    an_accepted_handover_activates_the_crisis_and_passes_command_to_strategic,
    a_declined_handover_keeps_command_at_tactical_and_a_new_request_may_follow,
    a_stopped_acceptance_is_completed_exactly_once,
);

fn sems(log: &TestLog, actor: &str) -> Sems {
    let handler = CommandHandler::new(
        log.port(),
        Arc::new(SystemClock),
        HandlerConfig {
            actor: actor.into(),
            ..HandlerConfig::default()
        },
    );
    Sems::new(Arc::new(handler), Severity::High)
}

fn brief() -> HandoverBrief {
    HandoverBrief {
        situation: "Ransomware on 40 file servers at two sites".into(),
        situation_as_at: Some(Utc::now().trunc_subsecs(6) - Duration::minutes(5)),
        confidence: Some(Confidence::Medium),
        history: "h".into(),
        objectives: "o".into(),
        actions_taken: "a".into(),
        resources_committed: "r".into(),
        open_risks: "r".into(),
        open_actions: "a".into(),
        key_contacts: "k".into(),
        communications: "c".into(),
        constraints: "c".into(),
        potential_most_likely: "m".into(),
        potential_worst_case: "w".into(),
        authority_requested: "spend and statements".into(),
        known_unknowns: "access vector".into(),
    }
}

/// A TACTICAL incident with a pending escalation and its handover, offered by `tactical`.
async fn offered(tactical: &Sems) -> (Uuid, Uuid) {
    let meta = CommandMeta::default;
    let (opened, _) = tactical
        .open_incident(
            IncidentCommand::Open {
                title: "Ransomware".into(),
                description: String::new(),
                severity: Severity::Critical,
                priority: None,
                alert_ids: vec![],
            },
            meta(),
        )
        .await
        .unwrap();
    let id = opened.aggregate_id;
    for command in [
        IncidentCommand::Acknowledge,
        IncidentCommand::ChangeLevel {
            to: Level::Tactical,
            reason: "two sites".into(),
        },
    ] {
        tactical
            .incident_command(id, command, meta())
            .await
            .unwrap();
    }
    let escalation = tactical
        .request_crisis_escalation(id, "board decisions needed".into(), "C1".into(), meta())
        .await
        .unwrap();
    let offer = HandoverCommand::Offer {
        brief: Some(brief()),
        answers: String::new(),
    };
    tactical
        .handover_command(escalation.handover_id, offer, meta())
        .await
        .unwrap();
    (id, escalation.handover_id)
}

fn accept() -> HandoverCommand {
    HandoverCommand::Accept {
        effective_at: Utc::now().trunc_subsecs(6),
        authority_delegated: "full crisis authority".into(),
        crisis_id: Uuid::nil(),
    }
}

async fn an_accepted_handover_activates_the_crisis_and_passes_command_to_strategic(
    backend: Backend,
) {
    let stores = TestStores::start(backend).await.unwrap();
    let log = stores.log().await.unwrap();
    let (tactical, cmc) = (sems(&log, "tom.tactical"), sems(&log, "carla.cmc"));
    let (incident, handover) = offered(&tactical).await;

    // The offering side cannot accept its own offer.
    let own = tactical
        .handover_command(handover, accept(), CommandMeta::default())
        .await;
    assert!(matches!(own, Err(AppError::Precondition(_))), "{own:?}");

    let outcome = cmc
        .handover_command(handover, accept(), CommandMeta::default())
        .await
        .unwrap();
    let crisis_id = outcome.crisis_id.unwrap();
    assert_eq!(crisis_id, crisis_id_for(handover));
    let handler = cmc.handler();
    let (i, _) = handler.load_fresh::<Incident>(incident).await.unwrap();
    let s = i.state().unwrap();
    assert_eq!((s.level, s.escalation_requested), (Level::Strategic, false));
    let (c, _) = handler.load_fresh::<Crisis>(crisis_id).await.unwrap();
    assert_eq!(c.state().unwrap().incident_ids, vec![incident]);
    let (h, _) = handler.load_fresh::<Handover>(handover).await.unwrap();
    assert_eq!(h.state().unwrap().status, HandoverStatus::Accepted);

    // Every aggregate's chain verifies; the incident's transfer names the handover.
    let port = log.port();
    for (kind, id) in [
        ("incident", incident),
        ("handover", handover),
        ("crisis", crisis_id),
    ] {
        verify_chain(&port.read_aggregate(kind, id).await.unwrap()).unwrap();
    }
    let last = port.read_aggregate("incident", incident).await.unwrap();
    let envelope = sems_app::Envelope::decode(&last.last().unwrap().bytes).unwrap();
    assert_eq!(envelope.events[0].event_type, "IncidentCommandTransferred");
    assert_eq!(envelope.actor, "carla.cmc");
}

async fn a_declined_handover_keeps_command_at_tactical_and_a_new_request_may_follow(
    backend: Backend,
) {
    let stores = TestStores::start(backend).await.unwrap();
    let log = stores.log().await.unwrap();
    let (tactical, cmc) = (sems(&log, "tom.tactical"), sems(&log, "carla.cmc"));
    let (incident, handover) = offered(&tactical).await;
    let decline = HandoverCommand::Decline {
        reason: "within tactical capability".into(),
    };
    let outcome = cmc
        .handover_command(handover, decline, CommandMeta::default())
        .await
        .unwrap();
    assert!(outcome.crisis_id.is_none());
    let (i, _) = cmc
        .handler()
        .load_fresh::<Incident>(incident)
        .await
        .unwrap();
    let s = i.state().unwrap();
    assert_eq!((s.level, s.escalation_requested), (Level::Tactical, false));
    let again = tactical
        .request_crisis_escalation(
            incident,
            "OT now affected".into(),
            "C2".into(),
            CommandMeta::default(),
        )
        .await
        .unwrap();
    assert_ne!(
        again.handover_id, handover,
        "a new request starts a new handover"
    );
}

async fn a_stopped_acceptance_is_completed_exactly_once(backend: Backend) {
    let stores = TestStores::start(backend).await.unwrap();
    let log = stores.log().await.unwrap();
    let (tactical, cmc) = (sems(&log, "tom.tactical"), sems(&log, "carla.cmc"));
    let (incident, handover) = offered(&tactical).await;
    // The acceptance alone, as a call that stopped right after its first commit leaves it.
    let accept = HandoverCommand::Accept {
        effective_at: Utc::now().trunc_subsecs(6),
        authority_delegated: "full crisis authority".into(),
        crisis_id: crisis_id_for(handover),
    };
    cmc.handler()
        .execute::<Handover>(handover, &accept, &CommandMeta::default())
        .await
        .unwrap();
    let (i, _) = cmc
        .handler()
        .load_fresh::<Incident>(incident)
        .await
        .unwrap();
    assert_eq!(i.state().unwrap().level, Level::Tactical, "not yet passed");

    for _ in 0..2 {
        let (crisis, _) = sems(&log, "sweeper")
            .complete_handover(handover)
            .await
            .unwrap();
        assert_eq!(crisis, Some(crisis_id_for(handover)));
    }
    let port = log.port();
    let crisis = port
        .read_aggregate("crisis", crisis_id_for(handover))
        .await
        .unwrap();
    assert_eq!(crisis.len(), 1, "activated once");
    let transfers = port
        .read_aggregate("incident", incident)
        .await
        .unwrap()
        .iter()
        .filter(|c| {
            sems_app::Envelope::decode(&c.bytes).unwrap().events[0].event_type
                == "IncidentCommandTransferred"
        })
        .count();
    assert_eq!(transfers, 1, "command passed once");
}
