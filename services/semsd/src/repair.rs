//! The repair sweep: an ingestion is two commits (the alert, then the incident it opens).
//! When the call stops between them and the client never retries, the alert stays promoted
//! into an incident that does not exist. The read model lists such promotions; this sweep
//! opens their incidents, with the same derived commit id a retry would use, so an incident is
//! never opened twice however many API replicas sweep.

use std::{future::Future, sync::Arc, time::Duration};

use sems_app::{CommandMeta, IncidentOpening, Sems};
use sems_domain::Severity;
use sems_readmodel::IncidentReadModel;
use tracing::{info, warn};

/// Promotions repaired per sweep at most.
const PER_SWEEP: u32 = 100;

/// Runs until `shutdown`, every half of `after` (between 100 ms and 10 s), opening the
/// incidents of alerts promoted at least `after` ago whose incident is still missing.
pub async fn run(
    sems: Arc<Sems>,
    reads: Arc<dyn IncidentReadModel>,
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
    }
}
