//! The use cases that span aggregates: alert ingestion (which may open an incident) and
//! opening an incident from alerts. Each step is one commit on one aggregate; the steps are
//! idempotent, so a client that retries an unanswered call completes what a crash left
//! half done. See `docs/DECISIONS.md`.

use std::sync::Arc;

use sems_domain::{
    Aggregate, DomainError, Severity,
    alert::{Alert, AlertCommand, AlertEvent, AlertReport, AlertStatus},
    incident::{Incident, IncidentCommand, IncidentStatus},
};
use tracing::warn;
use uuid::Uuid;

use crate::{AppError, CommandHandler, CommandMeta, Committed};

/// Namespace of alert ids derived from the dedup key.
const ALERT_NS: Uuid = Uuid::from_u128(0x5e35_a1e7_0000_4000_8000_0000_0000_0002);
/// Namespace of incident ids derived from the alert that opens them.
const INCIDENT_NS: Uuid = Uuid::from_u128(0x5e35_1c1d_0000_4000_8000_0000_0000_0003);
/// Namespace of ids derived from a client request id.
const REQUEST_NS: Uuid = Uuid::from_u128(0x5e35_0e90_0000_4000_8000_0000_0000_0004);

/// The alert id of a dedup key (source, source_ref): the same key always gives the same
/// alert, which is how repeats are recognised.
pub fn alert_id_for(source: &str, source_ref: &str) -> Uuid {
    let mut name = Vec::with_capacity(source.len() + 1 + source_ref.len());
    name.extend_from_slice(source.as_bytes());
    name.push(b'\n');
    name.extend_from_slice(source_ref.as_bytes());
    Uuid::new_v5(&ALERT_NS, &name)
}

/// The incident an alert was promoted to, to open when it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentOpening {
    /// The promoted alert.
    pub alert_id: Uuid,
    /// The incident it was promoted to.
    pub incident_id: Uuid,
    /// The alert's title.
    pub title: String,
    /// The alert's description.
    pub description: String,
    /// The alert's severity.
    pub severity: Severity,
}

/// What ingesting one alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The alert.
    pub alert_id: Uuid,
    /// The dedup key had been seen before.
    pub repeat: bool,
    /// The incident the alert belongs to, if any.
    pub incident_id: Option<Uuid>,
    /// Position of the last commit the call made (or found).
    pub position: u64,
    /// Alert aggregate version.
    pub version: u64,
    /// The request id had been seen: nothing new was appended.
    pub replayed: bool,
}

/// What a source tool says of an alert it reported earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceSignal {
    /// Acknowledged in the tool.
    Acknowledged,
    /// The condition cleared.
    Resolved,
}

/// What a source update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUpdateOutcome {
    /// The alert (derived from the dedup key).
    pub alert_id: Uuid,
    /// The alert was ever reported; when not, nothing was recorded.
    pub known: bool,
    /// Something was recorded (not a repeat of the source's current view).
    pub changed: bool,
    /// Position of the alert's last commit (0 when unknown).
    pub position: u64,
}

/// The application: use cases over the command handler.
pub struct Sems {
    handler: Arc<CommandHandler>,
    incident_threshold: Severity,
}

impl Sems {
    /// Use cases over `handler`; alerts at or above `incident_threshold` open incidents.
    pub fn new(handler: Arc<CommandHandler>, incident_threshold: Severity) -> Self {
        Self {
            handler,
            incident_threshold,
        }
    }

    /// The command handler.
    pub fn handler(&self) -> &CommandHandler {
        &self.handler
    }

    /// Ingests one alert: a new dedup key is received, a known one repeated; an untriaged
    /// alert at or above the threshold is promoted and its incident opened.
    pub async fn ingest_alert(
        &self,
        report: AlertReport,
        meta: CommandMeta,
    ) -> Result<IngestOutcome, AppError> {
        let alert_id = alert_id_for(&report.source, &report.source_ref);
        // The incident a report would open is only named when its severity can promote the
        // alert (the domain promotes on the same condition): it is a SHA-1, and most
        // alerts are below the threshold.
        let new_incident_id = if report.severity >= self.incident_threshold {
            Uuid::new_v5(&INCIDENT_NS, alert_id.as_bytes())
        } else {
            Uuid::nil()
        };
        let command = AlertCommand::Ingest {
            incident_threshold: self.incident_threshold,
            new_incident_id,
            report: Arc::new(report),
        };
        let meta = CommandMeta {
            assume_new: true,
            ..meta
        };
        let committed: Committed<Alert> = self.handler.execute(alert_id, &command, &meta).await?;
        let repeat = matches!(
            committed.events.first(),
            Some(AlertEvent::AlertRepeated { .. })
        );
        let incident_id = committed.state.incident_id();
        // The incident an alert was promoted to is opened from it (unless it exists); one it
        // was merged into existed before.
        let promoted = committed.state.state().and_then(|s| match s.status {
            AlertStatus::Promoted(id) => Some(id),
            _ => None,
        });
        let mut position = committed.position;
        if let (Some(incident_id), AlertCommand::Ingest { report, .. }) = (promoted, &command) {
            let opening = IncidentOpening {
                alert_id,
                incident_id,
                title: report.title.clone(),
                description: report.description.clone(),
                severity: report.severity,
            };
            let meta = CommandMeta {
                correlation_id: meta.correlation_id.or(Some(committed.commit_id)),
                causation_id: Some(committed.commit_id),
                ..meta
            };
            position = position.max(self.ensure_incident_for(&opening, &meta).await?);
        }
        Ok(IngestOutcome {
            alert_id,
            repeat,
            incident_id,
            position,
            version: committed.version,
            replayed: committed.replayed,
        })
    }

    /// Records what a source tool says of an alert it reported earlier (acknowledged or
    /// resolved there). An alert never reported is not an error — tools send resolves for
    /// alerts from before an integration existed — and records nothing.
    pub async fn alert_source_update(
        &self,
        source: &str,
        source_ref: &str,
        signal: SourceSignal,
        raw: serde_json::Value,
        meta: CommandMeta,
    ) -> Result<SourceUpdateOutcome, AppError> {
        let (source, source_ref) = sems_domain::alert::dedup_key(source, source_ref, "")?;
        let alert_id = alert_id_for(&source, &source_ref);
        let command = match signal {
            SourceSignal::Acknowledged => AlertCommand::AcknowledgeAtSource { raw },
            SourceSignal::Resolved => AlertCommand::ResolveAtSource { raw },
        };
        match self
            .handler
            .execute::<Alert>(alert_id, &command, &meta)
            .await
        {
            Ok(c) => Ok(SourceUpdateOutcome {
                alert_id,
                known: true,
                changed: !c.events.is_empty() || c.replayed,
                position: c.position,
            }),
            Err(AppError::NotFound(_)) => Ok(SourceUpdateOutcome {
                alert_id,
                known: false,
                changed: false,
                position: 0,
            }),
            Err(e) => Err(e),
        }
    }

    /// Opens the incident an alert was promoted to, unless it exists. Returns the position
    /// of the incident's opening commit (0 when it is too old to be remembered). Idempotent:
    /// the opening commit id is derived from the incident id, so a retry, a repeat of the
    /// alert and the repair sweep all open the same incident exactly once.
    pub async fn ensure_incident_for(
        &self,
        opening: &IncidentOpening,
        meta: &CommandMeta,
    ) -> Result<u64, AppError> {
        let incident_id = opening.incident_id;
        let commit_id = Uuid::new_v5(&INCIDENT_NS, incident_id.as_bytes());
        let (incident, _) = self.handler.load::<Incident>(incident_id).await?;
        if incident.exists() {
            return Ok(self
                .handler
                .commit_position::<Incident>(incident_id, commit_id)
                .await?
                .unwrap_or(0));
        }
        let open = IncidentCommand::Open {
            title: opening.title.clone(),
            description: opening.description.clone(),
            severity: opening.severity,
            priority: None,
            alert_ids: vec![opening.alert_id],
        };
        let meta = CommandMeta {
            actor: meta.actor.clone(),
            request_id: None,
            commit_id: Some(commit_id),
            occurred_at: None,
            late_reason: None,
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
            trace_context: meta.trace_context.clone(),
            assume_new: true,
        };
        match self
            .handler
            .execute::<Incident>(incident_id, &open, &meta)
            .await
        {
            Ok(c) => Ok(c.position),
            Err(AppError::Precondition(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Opens an incident, manually or from untriaged alerts, which are then promoted into it.
    /// Returns the incident's opening commit and the last position written.
    pub async fn open_incident(
        &self,
        command: IncidentCommand,
        meta: CommandMeta,
    ) -> Result<(Committed<Incident>, u64), AppError> {
        let IncidentCommand::Open { alert_ids, .. } = &command else {
            return Err(AppError::Internal(
                "open_incident takes an Open command".into(),
            ));
        };
        let incident_id = match &meta.request_id {
            Some(r) => Uuid::new_v5(
                &REQUEST_NS,
                format!("{}\n{r}\nincident", self.handler.actor_of(&meta)).as_bytes(),
            ),
            None => Uuid::now_v7(),
        };
        for (i, alert_id) in alert_ids.iter().enumerate() {
            // Read from the log, not the cache: a refusal must not rest on a stale copy, and
            // nothing is appended until every alert is known to be untriaged.
            let (alert, _) = self.handler.load_fresh::<Alert>(*alert_id).await?;
            let field = format!("alert_ids[{i}]");
            match alert.state().map(|s| s.status) {
                None => return Err(AppError::NotFound(format!("alert {alert_id} ({field})"))),
                Some(AlertStatus::Received) => {}
                // A retry of this same request: the alert is already in this incident.
                Some(AlertStatus::Promoted(id)) if id == incident_id => {}
                Some(AlertStatus::Promoted(other) | AlertStatus::Merged(other)) => {
                    return Err(AppError::Precondition(format!(
                        "{field}: alert {alert_id} already belongs to incident {other}"
                    )));
                }
                Some(AlertStatus::Dismissed) => {
                    return Err(AppError::Precondition(format!(
                        "{field}: alert {alert_id} was dismissed"
                    )));
                }
            }
        }
        let meta = CommandMeta {
            assume_new: true,
            ..meta
        };
        let opened = self
            .handler
            .execute::<Incident>(incident_id, &command, &meta)
            .await?;
        let mut last = opened.position;
        for alert_id in alert_ids {
            let promote = AlertCommand::Promote { incident_id };
            let step = CommandMeta {
                actor: meta.actor.clone(),
                request_id: None,
                commit_id: Some(Uuid::new_v5(&opened.commit_id, alert_id.as_bytes())),
                occurred_at: None,
                late_reason: None,
                correlation_id: meta.correlation_id.or(Some(opened.commit_id)),
                causation_id: Some(opened.commit_id),
                trace_context: meta.trace_context.clone(),
                assume_new: false,
            };
            match self
                .handler
                .execute::<Alert>(*alert_id, &promote, &step)
                .await
            {
                Ok(c) => last = last.max(c.position),
                Err(AppError::Precondition(why)) => {
                    // Triaged by someone else between the check and now: the incident stands.
                    warn!(%alert_id, %incident_id, why, "alert not promoted into incident");
                }
                Err(e) => return Err(e),
            }
        }
        Ok((opened, last))
    }

    /// Any other command on an incident.
    pub async fn incident_command(
        &self,
        incident_id: Uuid,
        command: IncidentCommand,
        meta: CommandMeta,
    ) -> Result<Committed<Incident>, AppError> {
        if matches!(command, IncidentCommand::Open { .. }) {
            return Err(DomainError::Internal("use open_incident".into()).into());
        }
        self.handler
            .execute::<Incident>(incident_id, &command, &meta)
            .await
    }

    /// A command on an alert (dismissal).
    pub async fn alert_command(
        &self,
        alert_id: Uuid,
        command: AlertCommand,
        meta: CommandMeta,
    ) -> Result<Committed<Alert>, AppError> {
        if matches!(command, AlertCommand::Merge { .. }) {
            return Err(DomainError::Internal("use merge_alert".into()).into());
        }
        self.handler
            .execute::<Alert>(alert_id, &command, &meta)
            .await
    }

    /// Merges an untriaged alert into an incident that exists and is not closed.
    pub async fn merge_alert(
        &self,
        alert_id: Uuid,
        incident_id: Uuid,
        reason: String,
        meta: CommandMeta,
    ) -> Result<Committed<Alert>, AppError> {
        // A retry of a merge already made is answered from the log, whatever the incident
        // has become since.
        if let Some(r) = &meta.request_id {
            let commit_id =
                self.handler
                    .commit_id_for(self.handler.actor_of(&meta), r, Alert::TYPE, alert_id);
            if self
                .handler
                .commit_position::<Alert>(alert_id, commit_id)
                .await?
                .is_some()
            {
                let merge = AlertCommand::Merge {
                    incident_id,
                    reason,
                };
                return self.handler.execute::<Alert>(alert_id, &merge, &meta).await;
            }
        }
        // From the log, not the cache: a refusal must not rest on a stale copy. (An incident
        // closed between this read and the merge keeps the alert: a reopen shows it.)
        let (incident, _) = self.handler.load_fresh::<Incident>(incident_id).await?;
        match incident.state().map(|s| s.status) {
            None => return Err(AppError::NotFound(format!("incident {incident_id}"))),
            Some(IncidentStatus::Closed) => {
                return Err(AppError::Precondition(format!(
                    "incident {incident_id} is closed; reopen it to merge alerts into it"
                )));
            }
            Some(_) => {}
        }
        let merge = AlertCommand::Merge {
            incident_id,
            reason,
        };
        self.handler.execute::<Alert>(alert_id, &merge, &meta).await
    }
}
