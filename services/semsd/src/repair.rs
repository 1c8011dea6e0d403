//! The repair sweep. An ingestion is two commits (the alert, then the incident it opens), and
//! a handover's answer is up to three (the handover, then the crisis it activates and the
//! incident's command, or the incident's closed request). When a call stops between them and
//! the client never retries, the read model shows it: an alert promoted into an incident that
//! does not exist; an accepted handover whose crisis is missing or whose incident is not at
//! `STRATEGIC`; a declined or withdrawn one whose incident still waits for an answer; a
//! stood-down crisis whose incident is still at `STRATEGIC`; a crisis-escalation request whose
//! handover never started. This sweep finishes them (among
//! the 100 newest handovers), with the same derived commit ids a retry would use, so nothing
//! is done twice however many API replicas sweep.

use std::{future::Future, sync::Arc, time::Duration};

use sems_app::{CommandMeta, IncidentOpening, Sems};
use sems_domain::Severity;
use sems_readmodel::{CmcReadModel, IncidentQuery, IncidentSort};
use tracing::{info, warn};

/// Promotions repaired per sweep at most.
const PER_SWEEP: u32 = 100;

/// Runs until `shutdown`, every half of `after` (between 100 ms and 10 s), opening the
/// incidents of alerts promoted at least `after` ago whose incident is still missing.
pub async fn run(
    sems: Arc<Sems>,
    reads: Arc<dyn CmcReadModel>,
    after: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let every = (after / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
        let pending = match reads.alerts_awaiting_incident(after, PER_SWEEP).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "repair sweep cannot read the read model");
                continue;
            }
        };
        for alert in pending {
            let Some(incident_id) = alert.incident_id else {
                continue;
            };
            let opening = IncidentOpening {
                alert_id: alert.alert_id,
                incident_id,
                title: alert.title,
                description: alert.description,
                severity: Severity::from_code("severity", i32::from(alert.severity))
                    .unwrap_or(Severity::High),
            };
            match sems
                .ensure_incident_for(&opening, &CommandMeta::default())
                .await
            {
                Ok(position) => {
                    info!(%incident_id, alert_id = %alert.alert_id, position, "opened an incident its ingestion left unopened")
                }
                Err(e) => warn!(%incident_id, error = %e, "repair sweep could not open incident"),
            }
        }
        finish_handovers(&sems, reads.as_ref(), after).await;
        start_handovers(&sems, reads.as_ref(), after).await;
    }
}

/// Starts the handovers of crisis-escalation requests whose call stopped before starting
/// them: an incident waiting for the CMC, at least `after` since its last change, whose
/// latest handover is not its pending request's (none, or an older one already answered).
async fn start_handovers(sems: &Sems, reads: &dyn CmcReadModel, after: Duration) {
    let settled_before = chrono::Utc::now() - chrono::Duration::from_std(after).unwrap_or_default();
    let query = IncidentQuery {
        escalation_requested: Some(true),
        updated_before: Some(settled_before),
        sort: IncidentSort::UpdatedDesc,
        page_size: PER_SWEEP,
        ..IncidentQuery::default()
    };
    let waiting = match reads.list_incidents(&query).await {
        Ok(page) => page.items,
        Err(e) => {
            warn!(error = %e, "repair sweep cannot read incidents");
            return;
        }
    };
    for incident in waiting {
        let i = &incident.row;
        let latest = match reads.list_handovers(false, Some(i.incident_id), 1).await {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "repair sweep cannot read handovers");
                return;
            }
        };
        if latest.first().is_some_and(|h| h.is_pending()) {
            continue;
        }
        match sems.complete_escalation(i.incident_id).await {
            Ok(0) => {}
            Ok(position) => {
                info!(incident_id = %i.incident_id, position, "started the handover a crisis-escalation request left unstarted")
            }
            Err(e) => {
                warn!(incident_id = %i.incident_id, error = %e, "repair sweep could not start a handover")
            }
        }
    }
}

/// Finishes the handovers answered at least `after` ago whose follow-up steps are missing.
async fn finish_handovers(sems: &Sems, reads: &dyn CmcReadModel, after: Duration) {
    let recent = match reads.list_handovers(false, None, PER_SWEEP).await {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "repair sweep cannot read handovers");
            return;
        }
    };
    let settled_before = chrono::Utc::now() - chrono::Duration::from_std(after).unwrap_or_default();
    // Newest first: only an incident's latest handover may still hold its pending request
    // (an older, declined one must never close a newer escalation's request).
    let mut latest = std::collections::HashSet::new();
    for h in recent {
        if !latest.insert(h.incident_id) {
            continue;
        }
        let Some(answered) = h.accepted_at.or(h.declined_at).or(h.withdrawn_at) else {
            continue;
        };
        if answered > settled_before {
            continue;
        }
        let incident = match reads.get_incident(h.incident_id).await {
            Ok(i) => i.map(|d| d.incident.row),
            Err(e) => {
                warn!(error = %e, "repair sweep cannot read an incident");
                return;
            }
        };
        let at_strategic = incident.as_ref().is_some_and(|i| i.level == "STRATEGIC");
        // Resolved or closed at STRATEGIC (allowed before command returned at stand-down):
        // nothing returns such an incident, so nothing is tried.
        let in_response = incident
            .as_ref()
            .is_some_and(|i| !matches!(i.status.as_str(), "RESOLVED" | "CLOSED"));
        let unfinished = match h.status.as_str() {
            "ACCEPTED" => {
                let crisis = match reads.get_crisis(h.crisis_id).await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "repair sweep cannot read a crisis");
                        return;
                    }
                };
                match crisis.map(|c| c.crisis.stood_down_at) {
                    None => true,
                    // Active: the incident must be at STRATEGIC.
                    Some(None) => incident.is_some() && !at_strategic,
                    // Stood down: its incident's command must have returned (the incident's
                    // latest handover names the crisis that commands it). A transfer still
                    // undone is finished first; the next sweep then returns it.
                    Some(Some(at)) => {
                        if at_strategic && in_response && at <= settled_before {
                            match sems.complete_stand_down(h.crisis_id).await {
                                Ok(0) => {}
                                Ok(position) => {
                                    info!(crisis_id = %h.crisis_id, incident_id = %h.incident_id, position, "returned the command a stand-down left at STRATEGIC")
                                }
                                Err(e) => {
                                    warn!(crisis_id = %h.crisis_id, error = %e, "repair sweep could not return an incident's command")
                                }
                            }
                        }
                        incident.is_some_and(|i| i.crisis_escalation_requested)
                    }
                }
            }
            "DECLINED" | "WITHDRAWN" => incident.is_some_and(|i| i.crisis_escalation_requested),
            _ => false,
        };
        if !unfinished {
            continue;
        }
        match sems.complete_handover(h.handover_id).await {
            Ok((crisis, position)) => {
                info!(handover_id = %h.handover_id, ?crisis, position, "finished a handover its answering call left half done")
            }
            Err(e) => {
                warn!(handover_id = %h.handover_id, error = %e, "repair sweep could not finish a handover")
            }
        }
    }
}
