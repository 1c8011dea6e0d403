//! `sems.v1.IncidentService`: every command parses its request, runs one use case and
//! answers the commit it made.

use sems_app::{AppError, Committed};
use sems_domain::{
    JustCulture, JustCultureDetermination, Phase, Role,
    crisis::DecisionInput,
    incident::{Incident, IncidentCommand},
};
use sems_proto::v1::{
    AcknowledgeIncidentRequest, AddNoteRequest, AmendIncidentDecisionRequest, AssignRoleRequest,
    ChangeLevelRequest, ChangePhaseRequest, ClassifyIncidentRequest, CloseIncidentRequest,
    CommitInfo, CrisisEscalationResponse, LinkRiskRequest, NotifyAuthorityRequest,
    OpenIncidentRequest, RecordIncidentDecisionRequest, ReopenIncidentRequest,
    RequestCrisisEscalationRequest, ResolveIncidentRequest, ReviewIncidentDecisionRequest,
    UnlinkRiskRequest, incident_service_server::IncidentService,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use super::{Api, command_meta, convert, principal, rpc_span, status};

fn info(c: &Committed<Incident>, position: u64) -> CommitInfo {
    CommitInfo {
        aggregate_id: c.aggregate_id.to_string(),
        version: c.version,
        position,
        replayed: c.replayed,
    }
}

impl Api {
    /// Runs a command parsed by `parse` on the incident `incident_id`.
    async fn on_incident(
        &self,
        method: &str,
        metadata: &tonic::metadata::MetadataMap,
        actor: Option<String>,
        incident_id: &str,
        request_id: &str,
        parse: impl FnOnce() -> Result<IncidentCommand, AppError>,
    ) -> Result<Response<CommitInfo>, Status> {
        let span = rpc_span("IncidentService", method, metadata);
        async move {
            let run = async {
                let id = convert::uuid("incident_id", incident_id)?;
                let meta = command_meta(actor, convert::request_id(request_id)?);
                let command = parse()?;
                self.sems.incident_command(id, command, meta).await
            };
            let c = run.await.map_err(status)?;
            Ok(Response::new(info(&c, c.position)))
        }
        .instrument(span)
        .await
    }

    /// Runs a command parsed by `parse` that records an entry with its world time and, when
    /// late, the reason (as the CMC's log takes them).
    #[allow(clippy::too_many_arguments)]
    async fn on_entry(
        &self,
        method: &str,
        metadata: &tonic::metadata::MetadataMap,
        actor: Option<String>,
        incident_id: &str,
        request_id: &str,
        occurred_at: Option<&prost_types::Timestamp>,
        late_reason: &str,
        parse: impl FnOnce() -> Result<IncidentCommand, AppError>,
    ) -> Result<Response<CommitInfo>, Status> {
        let span = rpc_span("IncidentService", method, metadata);
        async move {
            let run = async {
                let id = convert::uuid("incident_id", incident_id)?;
                let meta = super::cmc::entry_meta(actor, request_id, occurred_at, late_reason)?;
                let command = parse()?;
                self.sems.incident_command(id, command, meta).await
            };
            let c = run.await.map_err(status)?;
            Ok(Response::new(info(&c, c.position)))
        }
        .instrument(span)
        .await
    }
}

#[tonic::async_trait]
impl IncidentService for Api {
    async fn open_incident(
        &self,
        request: Request<OpenIncidentRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let span = rpc_span("IncidentService", "OpenIncident", request.metadata());
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let severity = convert::severity("severity", r.severity)?;
                let priority = match r.priority {
                    0 => None,
                    p => Some(convert::priority("priority", p)?),
                };
                let alert_ids = r
                    .alert_ids
                    .iter()
                    .enumerate()
                    .map(|(i, a)| convert::uuid(&format!("alert_ids[{i}]"), a))
                    .collect::<Result<Vec<Uuid>, _>>()?;
                let mut meta = command_meta(actor, convert::request_id(&r.request_id)?);
                meta.occurred_at = convert::time("occurred_at", r.occurred_at.as_ref())?;
                let command = IncidentCommand::Open {
                    title: r.title,
                    description: r.description,
                    severity,
                    priority,
                    alert_ids,
                };
                self.sems.open_incident(command, meta).await
            };
            let (c, last) = run.await.map_err(status)?;
            Ok(Response::new(info(&c, last)))
        }
        .instrument(span)
        .await
    }

    async fn acknowledge_incident(
        &self,
        request: Request<AcknowledgeIncidentRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "AcknowledgeIncident",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || Ok(IncidentCommand::Acknowledge),
        )
        .await
    }

    async fn assign_role(
        &self,
        request: Request<AssignRoleRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        let now = self.sems.handler().now();
        self.on_incident(
            "AssignRole",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::AssignRole {
                    role: Role::from_code("role", r.role)?,
                    person: r.person.clone(),
                    level: convert::level("level", r.level)?,
                    effective_at: convert::time("effective_at", r.effective_at.as_ref())?
                        .unwrap_or(now),
                })
            },
        )
        .await
    }

    async fn classify_incident(
        &self,
        request: Request<ClassifyIncidentRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "ClassifyIncident",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::Classify {
                    severity: convert::severity("severity", r.severity)?,
                    priority: convert::priority("priority", r.priority)?,
                    rationale: r.rationale.clone(),
                })
            },
        )
        .await
    }

    async fn add_note(
        &self,
        request: Request<AddNoteRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let span = rpc_span("IncidentService", "AddNote", request.metadata());
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let id = convert::uuid("incident_id", &r.incident_id)?;
                let meta = super::cmc::entry_meta(
                    actor,
                    &r.request_id,
                    r.occurred_at.as_ref(),
                    &r.late_reason,
                )?;
                self.sems
                    .incident_command(id, IncidentCommand::AddNote { text: r.text }, meta)
                    .await
            };
            let c = run.await.map_err(status)?;
            Ok(Response::new(info(&c, c.position)))
        }
        .instrument(span)
        .await
    }

    async fn notify_authority(
        &self,
        request: Request<NotifyAuthorityRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_entry(
            "NotifyAuthority",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            r.occurred_at.as_ref(),
            &r.late_reason,
            || {
                Ok(IncidentCommand::NotifyAuthority {
                    authority: r.authority.clone(),
                    reference: r.reference.clone(),
                    summary: r.summary.clone(),
                })
            },
        )
        .await
    }

    async fn link_risk(
        &self,
        request: Request<LinkRiskRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident("LinkRisk", &m, actor, &r.incident_id, &r.request_id, || {
            Ok(IncidentCommand::LinkRisk {
                risk_ref: r.risk_ref.clone(),
                rationale: r.rationale.clone(),
            })
        })
        .await
    }

    async fn unlink_risk(
        &self,
        request: Request<UnlinkRiskRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "UnlinkRisk",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::UnlinkRisk {
                    risk_ref: r.risk_ref.clone(),
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }

    async fn record_decision(
        &self,
        request: Request<RecordIncidentDecisionRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_entry(
            "RecordDecision",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            r.occurred_at.as_ref(),
            &r.late_reason,
            || {
                Ok(IncidentCommand::RecordDecision(Box::new(DecisionInput {
                    decision_id: super::cmc::id_or_new("decision_id", &r.decision_id)?,
                    decision: r.decision.clone(),
                    rationale: r.rationale.clone(),
                    options: super::cmc::options(&r.options),
                    information: Vec::new(),
                    assumptions: r.assumptions.clone(),
                    risks_accepted: r.risks_accepted.clone(),
                    powers: r.powers.clone(),
                    decision_maker: r.decision_maker.clone(),
                    level: convert::level("level", r.level)?,
                    joint_with: r.joint_with.clone(),
                    review_by: convert::time("review_by", r.review_by.as_ref())?,
                    supersedes: super::cmc::optional_uuid("supersedes", &r.supersedes)?,
                })))
            },
        )
        .await
    }

    async fn amend_decision(
        &self,
        request: Request<AmendIncidentDecisionRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_entry(
            "AmendDecision",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            r.occurred_at.as_ref(),
            &r.late_reason,
            || {
                Ok(IncidentCommand::AmendDecision {
                    decision_id: convert::uuid("decision_id", &r.decision_id)?,
                    amendment: r.amendment.clone(),
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }

    async fn review_decision(
        &self,
        request: Request<ReviewIncidentDecisionRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_entry(
            "ReviewDecision",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            r.occurred_at.as_ref(),
            &r.late_reason,
            || {
                Ok(IncidentCommand::ReviewDecision {
                    decision_id: convert::uuid("decision_id", &r.decision_id)?,
                    outcome: r.outcome.clone(),
                })
            },
        )
        .await
    }

    async fn change_level(
        &self,
        request: Request<ChangeLevelRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "ChangeLevel",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::ChangeLevel {
                    to: convert::level("to", r.to)?,
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }

    async fn change_phase(
        &self,
        request: Request<ChangePhaseRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "ChangePhase",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::ChangePhase {
                    phase: Phase::from_code("phase", r.phase)?,
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }

    async fn resolve_incident(
        &self,
        request: Request<ResolveIncidentRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "ResolveIncident",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                let just_culture = if r.people_involved {
                    Some(JustCulture {
                        determination: JustCultureDetermination::from_code(
                            "determination",
                            r.determination,
                        )?,
                        rationale: r.determination_rationale.clone(),
                    })
                } else if r.determination != 0 {
                    return Err(convert::invalid(
                        "people_involved",
                        "must be true when a determination is given",
                    ));
                } else {
                    None
                };
                Ok(IncidentCommand::Resolve {
                    resolution: r.resolution.clone(),
                    just_culture,
                })
            },
        )
        .await
    }

    async fn close_incident(
        &self,
        request: Request<CloseIncidentRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "CloseIncident",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::Close {
                    note: r.note.clone(),
                })
            },
        )
        .await
    }

    async fn reopen_incident(
        &self,
        request: Request<ReopenIncidentRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let actor = principal(&request);
        let (m, r) = (request.metadata().clone(), request.into_inner());
        self.on_incident(
            "ReopenIncident",
            &m,
            actor,
            &r.incident_id,
            &r.request_id,
            || {
                Ok(IncidentCommand::Reopen {
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }

    /// Records the request and starts the Resilience Handshake's handover; the answer's
    /// position covers both.
    async fn request_crisis_escalation(
        &self,
        request: Request<RequestCrisisEscalationRequest>,
    ) -> Result<Response<CrisisEscalationResponse>, Status> {
        let span = rpc_span(
            "IncidentService",
            "RequestCrisisEscalation",
            request.metadata(),
        );
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let id = convert::uuid("incident_id", &r.incident_id)?;
                let meta = command_meta(actor, convert::request_id(&r.request_id)?);
                self.sems
                    .request_crisis_escalation(id, r.reason, r.criteria_met, meta)
                    .await
            };
            let o = run.await.map_err(status)?;
            Ok(Response::new(CrisisEscalationResponse {
                commit: Some(info(&o.incident, o.position)),
                handover_id: o.handover_id.to_string(),
            }))
        }
        .instrument(span)
        .await
    }
}
