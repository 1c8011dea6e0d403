//! `sems.v1.HandoverService`, `sems.v1.CrisisService` and `sems.v1.CmcQueryService`: the
//! Resilience Handshake, the CMC log, and the handover, timeline and decision-register reads
//! (with the live watch of a timeline).

use std::pin::Pin;

use chrono::{DateTime, Utc};
use sems_app::{AppError, CommandMeta, Committed};
use sems_domain::{
    Level, Limits,
    crisis::{
        ActionStatus, Attendance, Audience, Basis, CmcRole, Credibility, CrisisCommand,
        DecisionInput, Grade, OptionConsidered, Reliability, SitrepBody, Tlp,
    },
    handover::{Confidence, HandoverBrief, HandoverCommand},
};
use sems_proto::v1::{
    self as pb, cmc_query_service_server::CmcQueryService, crisis_service_server::CrisisService,
    handover_service_server::HandoverService,
};
use sems_readmodel::{
    TimelineQuery,
    cmc::{ActionRow, CommunicationRow, CrisisRow, DecisionRow, HandoverRow, TimelineEntry},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use super::{Api, command_meta, convert, principal, rpc_span, status};

/// Default and largest timeline pages.
const DEFAULT_TIMELINE_PAGE: u32 = 100;
const MAX_TIMELINE_PAGE: u32 = 1_000;
/// Entries a watch reads per query.
const WATCH_BATCH: u32 = 500;

pub(super) fn commit_info<A: sems_domain::Aggregate>(
    c: &Committed<A>,
    position: u64,
) -> pb::CommitInfo {
    pb::CommitInfo {
        aggregate_id: c.aggregate_id.to_string(),
        version: c.version,
        position,
        replayed: c.replayed,
    }
}

/// A list of ids, each error naming its index (`field[i]`).
fn uuids(field: &str, values: &[String]) -> Result<Vec<Uuid>, AppError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| convert::uuid(&format!("{field}[{i}]"), v))
        .collect()
}

pub(super) fn optional_uuid(field: &str, value: &str) -> Result<Option<Uuid>, AppError> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        convert::uuid(field, value).map(Some)
    }
}

/// A caller-chosen id, or a new one.
pub(super) fn id_or_new(field: &str, value: &str) -> Result<Uuid, AppError> {
    Ok(optional_uuid(field, value)?.unwrap_or_else(Uuid::now_v7))
}

fn confidence(field: &str, code: i32) -> Result<Confidence, AppError> {
    match pb::Confidence::try_from(code) {
        Ok(pb::Confidence::Low) => Ok(Confidence::Low),
        Ok(pb::Confidence::Medium) => Ok(Confidence::Medium),
        Ok(pb::Confidence::High) => Ok(Confidence::High),
        Ok(pb::Confidence::Unspecified) => Err(convert::invalid(field, "is required")),
        Err(_) => Err(convert::invalid(field, format!("unknown value {code}"))),
    }
}

fn confidence_code(c: Option<Confidence>) -> i32 {
    match c {
        None => pb::Confidence::Unspecified as i32,
        Some(Confidence::Low) => pb::Confidence::Low as i32,
        Some(Confidence::Medium) => pb::Confidence::Medium as i32,
        Some(Confidence::High) => pb::Confidence::High as i32,
    }
}

fn brief(b: Option<pb::HandoverBrief>) -> Result<HandoverBrief, AppError> {
    let b = b.unwrap_or_default();
    Ok(HandoverBrief {
        situation: b.situation,
        situation_as_at: convert::time("brief.situation_as_at", b.situation_as_at.as_ref())?,
        confidence: match b.confidence {
            0 => None,
            c => Some(confidence("brief.confidence", c)?),
        },
        history: b.history,
        objectives: b.objectives,
        actions_taken: b.actions_taken,
        resources_committed: b.resources_committed,
        open_risks: b.open_risks,
        open_actions: b.open_actions,
        key_contacts: b.key_contacts,
        communications: b.communications,
        constraints: b.constraints,
        potential_most_likely: b.potential_most_likely,
        potential_worst_case: b.potential_worst_case,
        authority_requested: b.authority_requested,
        known_unknowns: b.known_unknowns,
    })
}

fn brief_view(b: &HandoverBrief) -> pb::HandoverBrief {
    pb::HandoverBrief {
        situation: b.situation.clone(),
        situation_as_at: convert::ts_opt(b.situation_as_at),
        confidence: confidence_code(b.confidence),
        history: b.history.clone(),
        objectives: b.objectives.clone(),
        actions_taken: b.actions_taken.clone(),
        resources_committed: b.resources_committed.clone(),
        open_risks: b.open_risks.clone(),
        open_actions: b.open_actions.clone(),
        key_contacts: b.key_contacts.clone(),
        communications: b.communications.clone(),
        constraints: b.constraints.clone(),
        potential_most_likely: b.potential_most_likely.clone(),
        potential_worst_case: b.potential_worst_case.clone(),
        authority_requested: b.authority_requested.clone(),
        known_unknowns: b.known_unknowns.clone(),
    }
}

fn grade(field: &str, g: Option<pb::Grade>) -> Result<Grade, AppError> {
    let Some(g) = g else {
        return Err(convert::invalid(field, "is required"));
    };
    let reliability = match g.reliability.trim().to_ascii_uppercase().as_str() {
        "A" => Reliability::A,
        "B" => Reliability::B,
        "C" => Reliability::C,
        "D" => Reliability::D,
        "E" => Reliability::E,
        "F" => Reliability::F,
        "" => {
            return Err(convert::invalid(
                format!("{field}.reliability"),
                "is required",
            ));
        }
        other => {
            return Err(convert::invalid(
                format!("{field}.reliability"),
                format!("{other:?} is not A to F"),
            ));
        }
    };
    let credibility = u8::try_from(g.credibility).unwrap_or(u8::MAX);
    Ok(Grade {
        reliability,
        credibility: Credibility::new(&format!("{field}.credibility"), credibility)?,
        basis: if g.assumption {
            Basis::Assumption
        } else {
            Basis::Fact
        },
    })
}

fn grade_view(g: &Grade) -> pb::Grade {
    pb::Grade {
        reliability: format!("{:?}", g.reliability),
        credibility: u32::from(g.credibility.value()),
        assumption: g.basis == Basis::Assumption,
    }
}

fn required_time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<DateTime<Utc>, AppError> {
    convert::time(field, t)?.ok_or_else(|| convert::invalid(field, "is required"))
}

fn level_of(name: &str) -> i32 {
    Level::parse("level", name).map_or(0, Level::code)
}

/// The fields every CMC command request shares.
trait CrisisEntry {
    fn crisis_id(&self) -> &str;
    fn request_id(&self) -> &str;
    fn occurred_at(&self) -> Option<&prost_types::Timestamp>;
    fn late_reason(&self) -> &str;
}

macro_rules! crisis_entries {
    ($($t:ty),+ $(,)?) => {$(
        impl CrisisEntry for $t {
            fn crisis_id(&self) -> &str { &self.crisis_id }
            fn request_id(&self) -> &str { &self.request_id }
            fn occurred_at(&self) -> Option<&prost_types::Timestamp> { self.occurred_at.as_ref() }
            fn late_reason(&self) -> &str { &self.late_reason }
        }
    )+};
}

crisis_entries!(
    pb::LinkIncidentRequest,
    pb::LogAttendanceRequest,
    pb::SetObjectivesRequest,
    pb::ReceiveInformationRequest,
    pb::RegradeInformationRequest,
    pb::FlagConflictRequest,
    pb::CorroborateInformationRequest,
    pb::SupersedeInformationRequest,
    pb::IssueSituationReportRequest,
    pb::RecordDecisionRequest,
    pb::AmendDecisionRequest,
    pb::ReviewDecisionRequest,
    pb::AssignActionRequest,
    pb::ChangeActionStatusRequest,
    pb::DraftCommunicationRequest,
    pb::ApproveCommunicationRequest,
    pb::SendCommunicationRequest,
    pb::RetractCommunicationRequest,
    pb::StandDownRequest,
    pb::DeclareStabilisingRequest,
    pb::RecordCrisisReviewRequest,
);

/// The options a decision request lists.
pub(super) fn options(options: &[pb::OptionConsidered]) -> Vec<OptionConsidered> {
    options
        .iter()
        .map(|o| OptionConsidered {
            option: o.option.clone(),
            why_not: o.why_not.clone(),
        })
        .collect()
}

pub(super) fn entry_meta(
    actor: Option<String>,
    request_id: &str,
    occurred_at: Option<&prost_types::Timestamp>,
    late_reason: &str,
) -> Result<CommandMeta, AppError> {
    let mut meta = command_meta(actor, convert::request_id(request_id)?);
    meta.occurred_at = convert::time("occurred_at", occurred_at)?;
    let late = sems_domain::Text::optional("late_reason", late_reason, Limits::RATIONALE)?;
    meta.late_reason = (!late.is_empty()).then_some(late);
    Ok(meta)
}

impl Api {
    /// Runs the crisis command `parse` makes of a request.
    async fn on_crisis<R: CrisisEntry>(
        &self,
        method: &str,
        request: Request<R>,
        parse: impl FnOnce(&R) -> Result<CrisisCommand, AppError>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        let span = rpc_span("CrisisService", method, request.metadata());
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let id = convert::uuid("crisis_id", r.crisis_id())?;
                let meta = entry_meta(actor, r.request_id(), r.occurred_at(), r.late_reason())?;
                let command = parse(&r)?;
                self.sems.crisis_command(id, command, meta).await
            };
            let (c, position) = run.await.map_err(status)?;
            Ok(Response::new(commit_info(&c, position)))
        }
        .instrument(span)
        .await
    }

    /// Runs a handover command.
    async fn on_handover(
        &self,
        method: &str,
        metadata: &tonic::metadata::MetadataMap,
        actor: Option<String>,
        handover_id: &str,
        request_id: &str,
        parse: impl FnOnce() -> Result<HandoverCommand, AppError>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let span = rpc_span("HandoverService", method, metadata);
        async move {
            let run = async {
                let id = convert::uuid("handover_id", handover_id)?;
                let meta = command_meta(actor, convert::request_id(request_id)?);
                let command = parse()?;
                self.sems.handover_command(id, command, meta).await
            };
            let o = run.await.map_err(status)?;
            Ok(Response::new(pb::HandoverCommandResponse {
                commit: Some(commit_info(&o.handover, o.position)),
                crisis_id: o.crisis_id.map(|c| c.to_string()).unwrap_or_default(),
            }))
        }
        .instrument(span)
        .await
    }

    fn handover_view(&self, h: &HandoverRow, now: DateTime<Utc>) -> pb::HandoverView {
        let target = chrono::Duration::from_std(self.acceptance_target).unwrap_or_default();
        pb::HandoverView {
            handover_id: h.handover_id.to_string(),
            incident_id: h.incident_id.to_string(),
            crisis_id: h.crisis_id.to_string(),
            status: h.status.clone(),
            reason: h.reason.clone(),
            started_by: h.started_by.clone(),
            started_at: Some(convert::ts(h.started_at)),
            brief: Some(brief_view(&h.brief)),
            revision: h.revision,
            offered_by: h.offered_by.clone().unwrap_or_default(),
            first_offered_at: convert::ts_opt(h.first_offered_at),
            last_offered_at: convert::ts_opt(h.last_offered_at),
            clarifications: h
                .clarifications
                .iter()
                .map(|c| pb::ClarificationRound {
                    revision: c.revision,
                    questions: c.questions.clone(),
                    requested_by: c.requested_by.clone(),
                    requested_at: Some(convert::ts(c.requested_at)),
                    answers: c.answers.clone().unwrap_or_default(),
                })
                .collect(),
            accepted_by: h.accepted_by.clone().unwrap_or_default(),
            accepted_at: convert::ts_opt(h.accepted_at),
            effective_at: convert::ts_opt(h.effective_at),
            authority_delegated: h.authority_delegated.clone().unwrap_or_default(),
            acceptance_latency_ms: h.acceptance_latency_ms.unwrap_or_default(),
            declined_by: h.declined_by.clone().unwrap_or_default(),
            declined_at: convert::ts_opt(h.declined_at),
            decline_reason: h.decline_reason.clone().unwrap_or_default(),
            withdrawn_by: h.withdrawn_by.clone().unwrap_or_default(),
            withdrawn_at: convert::ts_opt(h.withdrawn_at),
            withdraw_reason: h.withdraw_reason.clone().unwrap_or_default(),
            command_stays_at: h.command_stays_at.clone().unwrap_or_default(),
            overdue: h.is_pending() && now - h.waiting_since() > target,
            waiting_since: h.is_pending().then(|| convert::ts(h.waiting_since())),
            position: h.position as u64,
        }
    }
}

fn crisis_view(c: &CrisisRow) -> pb::CrisisView {
    pb::CrisisView {
        crisis_id: c.crisis_id.to_string(),
        title: c.title.clone(),
        status: c.status.clone(),
        incident_ids: c.incident_ids.iter().map(Uuid::to_string).collect(),
        handover_id: c.handover_id.map(|h| h.to_string()).unwrap_or_default(),
        criteria: c.criteria.clone(),
        tlp: c.tlp.clone(),
        activated_by: c.activated_by.clone(),
        activated_at: Some(convert::ts(c.activated_at)),
        present: c
            .present
            .iter()
            .map(|a| pb::Attendee {
                person: a.person.clone(),
                role: a.role.clone(),
                arrived_at: Some(convert::ts(a.arrived_at)),
            })
            .collect(),
        objectives_version: c.objectives_version,
        objectives: c.objectives.clone(),
        information_items: c.information_items as u64,
        decisions: c.decisions as u64,
        first_decision_at: convert::ts_opt(c.first_decision_at),
        stood_down_at: convert::ts_opt(c.stood_down_at),
        handed_to: c.handed_to.clone().unwrap_or_default(),
        entries: c.entries as u64,
        position: c.position as u64,
        stabilising_at: convert::ts_opt(c.stabilising_at),
        reviewed_at: convert::ts_opt(c.reviewed_at),
        review_findings: c.review_findings.clone().unwrap_or_default(),
    }
}

fn action_view(a: &ActionRow, now: DateTime<Utc>) -> pb::ActionView {
    pb::ActionView {
        action_id: a.action_id.to_string(),
        description: a.description.clone(),
        owner: a.owner.clone(),
        due_at: Some(convert::ts(a.due_at)),
        status: a.status.clone(),
        overdue: a.is_overdue(now),
        decision_id: a.decision_id.map(|d| d.to_string()).unwrap_or_default(),
        transferred_to: a.transferred_to.clone().unwrap_or_default(),
    }
}

fn communication_view(c: &CommunicationRow) -> pb::CommunicationView {
    pb::CommunicationView {
        communication_id: c.communication_id.to_string(),
        audience: c.audience.clone(),
        channel: c.channel.clone(),
        tlp: c.tlp.clone(),
        content: c.content.clone(),
        status: c.status.clone(),
        required_role: c.required_role.clone(),
        drafted_by: c.drafted_by.clone(),
        approved_by: c.approved_by.clone().unwrap_or_default(),
        approved_role: c.approved_role.clone().unwrap_or_default(),
        sent_at: convert::ts_opt(c.sent_at),
        retracted_by: c.retracted_by.clone().unwrap_or_default(),
        retracted_at: convert::ts_opt(c.retracted_at),
        retraction_reason: c.retraction_reason.clone().unwrap_or_default(),
    }
}

/// A decision register (a crisis's or an incident's) as it stands at `now`.
pub(super) fn register(rows: &[DecisionRow], now: DateTime<Utc>) -> pb::DecisionRegister {
    let view = |pick: &dyn Fn(&DecisionRow) -> bool| {
        rows.iter()
            .filter(|d| pick(d))
            .map(|d| decision_view(d, now))
            .collect()
    };
    pb::DecisionRegister {
        current: view(&|d| d.status == "CURRENT"),
        superseded: view(&|d| d.status == "SUPERSEDED"),
        due_for_review: view(&|d| d.due_for_review(now)),
    }
}

fn decision_view(d: &DecisionRow, now: DateTime<Utc>) -> pb::DecisionView {
    let r = &d.record;
    pb::DecisionView {
        decision_id: r.decision_id.to_string(),
        decision: r.decision.clone(),
        rationale: r.rationale.clone(),
        options: r
            .options
            .iter()
            .map(|o| pb::OptionConsidered {
                option: o.option.clone(),
                why_not: o.why_not.clone(),
            })
            .collect(),
        information_basis: r
            .information_basis
            .iter()
            .map(|b| pb::InformationBasis {
                information_id: b.information_id.to_string(),
                grade: Some(grade_view(&b.grade)),
                corroborated: b.corroborated,
                contradicted: b.contradicted,
                superseded: b.superseded,
            })
            .collect(),
        assumptions: r.assumptions.clone(),
        risks_accepted: r.risks_accepted.clone(),
        powers: r.powers.clone(),
        decision_maker: r.decision_maker.clone(),
        level: r.level.code(),
        joint_with: r.joint_with.clone(),
        review_by: convert::ts_opt(r.review_by),
        supersedes: r.supersedes.map(|s| s.to_string()).unwrap_or_default(),
        superseded_by: d.superseded_by.map(|s| s.to_string()).unwrap_or_default(),
        status: d.status.clone(),
        made_at: Some(convert::ts(d.made_at)),
        recorded_at: Some(convert::ts(d.recorded_at)),
        late_reason: d.late_reason.clone().unwrap_or_default(),
        recorded_by: r.recorded_by.clone(),
        amendments: d
            .amendments
            .iter()
            .map(|a| format!("{} — {}", a.amendment, a.reason))
            .collect(),
        reviews: d.reviews.iter().map(|v| v.outcome.clone()).collect(),
        due_for_review: d.due_for_review(now),
    }
}

/// A timeline entry for the wire.
pub(crate) fn entry_view(e: &TimelineEntry) -> pb::TimelineEntry {
    pb::TimelineEntry {
        crisis_id: e.crisis_id.to_string(),
        position: e.position as u64,
        seq: e.seq as u32,
        kind: e.kind.clone(),
        event_type: e.event_type.clone(),
        occurred_at: Some(convert::ts(e.occurred_at)),
        recorded_at: Some(convert::ts(e.recorded_at)),
        late_reason: e.late_reason.clone().unwrap_or_default(),
        actor: e.actor.clone(),
        level: level_of(&e.level),
        tlp: e.tlp.clone(),
        summary: e.summary.clone(),
        detail_json: e.detail.to_string(),
    }
}

fn timeline_token(position: i64, seq: i32) -> String {
    format!("{position}.{seq}")
}

fn parse_timeline_token(token: &str) -> Result<(i64, i32), AppError> {
    let bad = || convert::invalid("page_token", "is not a token this server gave");
    if token.len() > sems_readmodel::Cursor::TOKEN_MAX {
        return Err(convert::invalid(
            "page_token",
            format!(
                "is longer than {} characters",
                sems_readmodel::Cursor::TOKEN_MAX
            ),
        ));
    }
    let (p, s) = token.split_once('.').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?))
}

const KINDS: [&str; 10] = [
    "escalation",
    "handover",
    "crisis",
    "attendance",
    "objectives",
    "information",
    "sitrep",
    "decision",
    "action",
    "communication",
];

fn kinds(field: &str, given: &[String]) -> Result<Vec<String>, AppError> {
    convert::filter_values(field, given)?
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let k = k.trim().to_ascii_lowercase();
            if KINDS.contains(&k.as_str()) {
                Ok(k)
            } else {
                Err(convert::invalid(
                    format!("{field}[{i}]"),
                    format!("unknown kind {k:?}; kinds are {}", KINDS.join(", ")),
                ))
            }
        })
        .collect()
}

#[tonic::async_trait]
impl HandoverService for Api {
    async fn draft_brief(
        &self,
        request: Request<pb::DraftBriefRequest>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let actor = principal(&request);
        let (metadata, _, r) = request.into_parts();
        self.on_handover(
            "DraftBrief",
            &metadata,
            actor,
            &r.handover_id,
            &r.request_id,
            || {
                Ok(HandoverCommand::Draft {
                    brief: brief(r.brief.clone())?,
                })
            },
        )
        .await
    }

    async fn offer_handover(
        &self,
        request: Request<pb::OfferHandoverRequest>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let actor = principal(&request);
        let (metadata, _, r) = request.into_parts();
        self.on_handover(
            "OfferHandover",
            &metadata,
            actor,
            &r.handover_id,
            &r.request_id,
            || {
                Ok(HandoverCommand::Offer {
                    brief: r.brief.clone().map(|b| brief(Some(b))).transpose()?,
                    answers: r.answers.clone(),
                })
            },
        )
        .await
    }

    async fn request_clarification(
        &self,
        request: Request<pb::RequestClarificationRequest>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let actor = principal(&request);
        let (metadata, _, r) = request.into_parts();
        self.on_handover(
            "RequestClarification",
            &metadata,
            actor,
            &r.handover_id,
            &r.request_id,
            || {
                Ok(HandoverCommand::RequestClarification {
                    questions: r.questions.clone(),
                })
            },
        )
        .await
    }

    async fn accept_handover(
        &self,
        request: Request<pb::AcceptHandoverRequest>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let actor = principal(&request);
        let (metadata, _, r) = request.into_parts();
        let now = self.sems.handler().now();
        self.on_handover(
            "AcceptHandover",
            &metadata,
            actor,
            &r.handover_id,
            &r.request_id,
            || {
                Ok(HandoverCommand::Accept {
                    effective_at: convert::time("effective_at", r.effective_at.as_ref())?
                        .unwrap_or(now),
                    authority_delegated: r.authority_delegated.clone(),
                    // Named by the use case: the crisis id is derived from the handover.
                    crisis_id: Uuid::nil(),
                })
            },
        )
        .await
    }

    async fn decline_handover(
        &self,
        request: Request<pb::DeclineHandoverRequest>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let actor = principal(&request);
        let (metadata, _, r) = request.into_parts();
        self.on_handover(
            "DeclineHandover",
            &metadata,
            actor,
            &r.handover_id,
            &r.request_id,
            || {
                Ok(HandoverCommand::Decline {
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }

    async fn withdraw_handover(
        &self,
        request: Request<pb::WithdrawHandoverRequest>,
    ) -> Result<Response<pb::HandoverCommandResponse>, Status> {
        let actor = principal(&request);
        let (metadata, _, r) = request.into_parts();
        self.on_handover(
            "WithdrawHandover",
            &metadata,
            actor,
            &r.handover_id,
            &r.request_id,
            || {
                Ok(HandoverCommand::Withdraw {
                    reason: r.reason.clone(),
                })
            },
        )
        .await
    }
}

fn code<T>(
    field: &str,
    code: i32,
    parse: impl Fn(&str, i32) -> Result<T, sems_domain::DomainError>,
) -> Result<T, AppError> {
    parse(field, code).map_err(AppError::from)
}

#[tonic::async_trait]
impl CrisisService for Api {
    async fn declare_crisis(
        &self,
        request: Request<pb::DeclareCrisisRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        let span = rpc_span("CrisisService", "DeclareCrisis", request.metadata());
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let meta =
                    entry_meta(actor, &r.request_id, r.occurred_at.as_ref(), &r.late_reason)?;
                let incident_ids = uuids("incident_ids", &r.incident_ids)?;
                let tlp = match r.tlp {
                    0 => None,
                    c => Some(code("tlp", c, Tlp::from_code)?),
                };
                let command = CrisisCommand::Activate {
                    title: r.title.clone(),
                    incident_ids,
                    handover_id: None,
                    criteria: r.criteria.clone(),
                    tlp,
                };
                self.sems.declare_crisis(command, meta).await
            };
            let c = run.await.map_err(status)?;
            Ok(Response::new(commit_info(&c, c.position)))
        }
        .instrument(span)
        .await
    }

    async fn link_incident(
        &self,
        request: Request<pb::LinkIncidentRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("LinkIncident", request, |r| {
            Ok(CrisisCommand::LinkIncident {
                incident_id: convert::uuid("incident_id", &r.incident_id)?,
            })
        })
        .await
    }

    async fn log_attendance(
        &self,
        request: Request<pb::LogAttendanceRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("LogAttendance", request, |r| {
            Ok(CrisisCommand::LogAttendance {
                person: r.person.clone(),
                role: code("role", r.role, CmcRole::from_code)?,
                change: if r.left {
                    Attendance::Left
                } else {
                    Attendance::Arrived
                },
            })
        })
        .await
    }

    async fn set_objectives(
        &self,
        request: Request<pb::SetObjectivesRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("SetObjectives", request, |r| {
            Ok(CrisisCommand::SetObjectives {
                objectives: r.objectives.clone(),
                rationale: r.rationale.clone(),
            })
        })
        .await
    }

    async fn receive_information(
        &self,
        request: Request<pb::ReceiveInformationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        let now = self.sems.handler().now();
        self.on_crisis("ReceiveInformation", request, |r| {
            Ok(CrisisCommand::ReceiveInformation {
                information_id: id_or_new("information_id", &r.information_id)?,
                source: r.source.clone(),
                content: r.content.clone(),
                grade: grade("grade", r.grade.clone())?,
                observed_at: convert::time("observed_at", r.observed_at.as_ref())?.unwrap_or(now),
            })
        })
        .await
    }

    async fn regrade_information(
        &self,
        request: Request<pb::RegradeInformationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("RegradeInformation", request, |r| {
            Ok(CrisisCommand::RegradeInformation {
                information_id: convert::uuid("information_id", &r.information_id)?,
                grade: grade("grade", r.grade.clone())?,
                reason: r.reason.clone(),
            })
        })
        .await
    }

    async fn flag_conflict(
        &self,
        request: Request<pb::FlagConflictRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("FlagConflict", request, |r| {
            Ok(CrisisCommand::FlagConflict {
                information_ids: uuids("information_ids", &r.information_ids)?,
                note: r.note.clone(),
            })
        })
        .await
    }

    async fn corroborate_information(
        &self,
        request: Request<pb::CorroborateInformationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("CorroborateInformation", request, |r| {
            Ok(CrisisCommand::CorroborateInformation {
                information_id: convert::uuid("information_id", &r.information_id)?,
                corroborated_by: uuids("corroborated_by", &r.corroborated_by)?,
                note: r.note.clone(),
            })
        })
        .await
    }

    async fn supersede_information(
        &self,
        request: Request<pb::SupersedeInformationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("SupersedeInformation", request, |r| {
            Ok(CrisisCommand::SupersedeInformation {
                information_id: convert::uuid("information_id", &r.information_id)?,
                superseded_by: convert::uuid("superseded_by", &r.superseded_by)?,
                reason: r.reason.clone(),
            })
        })
        .await
    }

    async fn issue_situation_report(
        &self,
        request: Request<pb::IssueSituationReportRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        use pb::issue_situation_report_request::Body;
        self.on_crisis("IssueSituationReport", request, |r| {
            let body = match r.body.clone() {
                Some(Body::Methane(m)) => SitrepBody::Methane {
                    major_incident: m.major_incident,
                    exact_location: m.exact_location,
                    incident_type: m.incident_type,
                    hazards: m.hazards,
                    access: m.access,
                    casualties: m.casualties,
                    emergency_services: m.emergency_services,
                },
                Some(Body::FreeText(text)) => SitrepBody::Free { text },
                None => {
                    return Err(convert::invalid(
                        "body",
                        "is required: methane or free_text",
                    ));
                }
            };
            Ok(CrisisCommand::IssueSituationReport {
                report_id: id_or_new("report_id", &r.report_id)?,
                body,
                as_at: required_time("as_at", r.as_at.as_ref())?,
                confidence: confidence("confidence", r.confidence)?,
                known_unknowns: r.known_unknowns.clone(),
            })
        })
        .await
    }

    async fn record_decision(
        &self,
        request: Request<pb::RecordDecisionRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("RecordDecision", request, |r| {
            Ok(CrisisCommand::RecordDecision(Box::new(DecisionInput {
                decision_id: id_or_new("decision_id", &r.decision_id)?,
                decision: r.decision.clone(),
                rationale: r.rationale.clone(),
                options: options(&r.options),
                information: uuids("information_ids", &r.information_ids)?,
                assumptions: r.assumptions.clone(),
                risks_accepted: r.risks_accepted.clone(),
                powers: r.powers.clone(),
                decision_maker: r.decision_maker.clone(),
                level: convert::level("level", r.level)?,
                joint_with: r.joint_with.clone(),
                review_by: convert::time("review_by", r.review_by.as_ref())?,
                supersedes: optional_uuid("supersedes", &r.supersedes)?,
            })))
        })
        .await
    }

    async fn amend_decision(
        &self,
        request: Request<pb::AmendDecisionRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("AmendDecision", request, |r| {
            Ok(CrisisCommand::AmendDecision {
                decision_id: convert::uuid("decision_id", &r.decision_id)?,
                amendment: r.amendment.clone(),
                reason: r.reason.clone(),
            })
        })
        .await
    }

    async fn review_decision(
        &self,
        request: Request<pb::ReviewDecisionRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("ReviewDecision", request, |r| {
            Ok(CrisisCommand::ReviewDecision {
                decision_id: convert::uuid("decision_id", &r.decision_id)?,
                outcome: r.outcome.clone(),
            })
        })
        .await
    }

    async fn assign_action(
        &self,
        request: Request<pb::AssignActionRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("AssignAction", request, |r| {
            Ok(CrisisCommand::AssignAction {
                action_id: id_or_new("action_id", &r.action_id)?,
                description: r.description.clone(),
                owner: r.owner.clone(),
                due_at: required_time("due_at", r.due_at.as_ref())?,
                decision_id: optional_uuid("decision_id", &r.decision_id)?,
            })
        })
        .await
    }

    async fn change_action_status(
        &self,
        request: Request<pb::ChangeActionStatusRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("ChangeActionStatus", request, |r| {
            Ok(CrisisCommand::ChangeActionStatus {
                action_id: convert::uuid("action_id", &r.action_id)?,
                status: code("status", r.status, ActionStatus::from_code)?,
                note: r.note.clone(),
                transferred_to: r.transferred_to.clone(),
            })
        })
        .await
    }

    async fn draft_communication(
        &self,
        request: Request<pb::DraftCommunicationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("DraftCommunication", request, |r| {
            Ok(CrisisCommand::DraftCommunication {
                communication_id: id_or_new("communication_id", &r.communication_id)?,
                audience: code("audience", r.audience, Audience::from_code)?,
                channel: r.channel.clone(),
                tlp: code("tlp", r.tlp, Tlp::from_code)?,
                content: r.content.clone(),
            })
        })
        .await
    }

    async fn approve_communication(
        &self,
        request: Request<pb::ApproveCommunicationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("ApproveCommunication", request, |r| {
            Ok(CrisisCommand::ApproveCommunication {
                communication_id: convert::uuid("communication_id", &r.communication_id)?,
                role: code("role", r.role, CmcRole::from_code)?,
            })
        })
        .await
    }

    async fn send_communication(
        &self,
        request: Request<pb::SendCommunicationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("SendCommunication", request, |r| {
            Ok(CrisisCommand::SendCommunication {
                communication_id: convert::uuid("communication_id", &r.communication_id)?,
            })
        })
        .await
    }

    async fn retract_communication(
        &self,
        request: Request<pb::RetractCommunicationRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("RetractCommunication", request, |r| {
            Ok(CrisisCommand::RetractCommunication {
                communication_id: convert::uuid("communication_id", &r.communication_id)?,
                reason: r.reason.clone(),
                role: code("role", r.role, CmcRole::from_code)?,
            })
        })
        .await
    }

    async fn stand_down(
        &self,
        request: Request<pb::StandDownRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("StandDown", request, |r| {
            Ok(CrisisCommand::StandDown {
                handed_to: r.handed_to.clone(),
                decision_id: convert::uuid("decision_id", &r.decision_id)?,
            })
        })
        .await
    }

    async fn declare_stabilising(
        &self,
        request: Request<pb::DeclareStabilisingRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("DeclareStabilising", request, |r| {
            Ok(CrisisCommand::DeclareStabilising {
                reason: r.reason.clone(),
            })
        })
        .await
    }

    async fn record_crisis_review(
        &self,
        request: Request<pb::RecordCrisisReviewRequest>,
    ) -> Result<Response<pb::CommitInfo>, Status> {
        self.on_crisis("RecordCrisisReview", request, |r| {
            Ok(CrisisCommand::RecordReview {
                findings: r.findings.clone(),
            })
        })
        .await
    }
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::TimelineEntry, Status>> + Send>>;

#[tonic::async_trait]
impl CmcQueryService for Api {
    type WatchTimelineStream = EntryStream;

    async fn get_handover(
        &self,
        request: Request<pb::GetHandoverRequest>,
    ) -> Result<Response<pb::HandoverView>, Status> {
        let span = rpc_span("CmcQueryService", "GetHandover", request.metadata());
        async move {
            let r = request.get_ref();
            let id = convert::uuid("handover_id", &r.handover_id).map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let h = self
                .reads
                .get_handover(id)
                .await
                .map_err(status)?
                .ok_or_else(|| Status::not_found(format!("handover {id} not found")))?;
            Ok(Response::new(self.handover_view(&h, Utc::now())))
        }
        .instrument(span)
        .await
    }

    async fn list_handovers(
        &self,
        request: Request<pb::ListHandoversRequest>,
    ) -> Result<Response<pb::ListHandoversResponse>, Status> {
        let span = rpc_span("CmcQueryService", "ListHandovers", request.metadata());
        async move {
            let r = request.get_ref();
            let incident = optional_uuid("incident_id", &r.incident_id).map_err(status)?;
            let limit = match r.limit {
                0 => 50,
                n if n > 500 => {
                    return Err(status(convert::invalid("limit", "at most 500")));
                }
                n => n,
            };
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let rows = self
                .reads
                .list_handovers(r.pending_only, incident, limit)
                .await
                .map_err(status)?;
            let now = Utc::now();
            Ok(Response::new(pb::ListHandoversResponse {
                handovers: rows.iter().map(|h| self.handover_view(h, now)).collect(),
                acceptance_target_seconds: self.acceptance_target.as_secs() as u32,
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_crisis(
        &self,
        request: Request<pb::GetCrisisRequest>,
    ) -> Result<Response<pb::CrisisDetail>, Status> {
        let span = rpc_span("CmcQueryService", "GetCrisis", request.metadata());
        async move {
            let r = request.get_ref();
            let id = convert::uuid("crisis_id", &r.crisis_id).map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let d = self
                .reads
                .get_crisis(id)
                .await
                .map_err(status)?
                .ok_or_else(|| Status::not_found(format!("crisis {id} not found")))?;
            let now = Utc::now();
            Ok(Response::new(pb::CrisisDetail {
                crisis: Some(crisis_view(&d.crisis)),
                actions: d.actions.iter().map(|a| action_view(a, now)).collect(),
                communications: d.communications.iter().map(communication_view).collect(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_crises(
        &self,
        request: Request<pb::ListCrisesRequest>,
    ) -> Result<Response<pb::ListCrisesResponse>, Status> {
        let span = rpc_span("CmcQueryService", "ListCrises", request.metadata());
        async move {
            let r = request.get_ref();
            let limit = match r.limit {
                0 => 50,
                n => n.min(500),
            };
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let rows = self.reads.list_crises(limit).await.map_err(status)?;
            Ok(Response::new(pb::ListCrisesResponse {
                crises: rows.iter().map(crisis_view).collect(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        let span = rpc_span("CmcQueryService", "GetTimeline", request.metadata());
        async move {
            let r = request.get_ref();
            let parse = || -> Result<TimelineQuery, AppError> {
                let limit = match r.page_size {
                    0 => DEFAULT_TIMELINE_PAGE,
                    n if n > MAX_TIMELINE_PAGE => {
                        return Err(convert::invalid(
                            "page_size",
                            format!("at most {MAX_TIMELINE_PAGE}"),
                        ));
                    }
                    n => n,
                };
                Ok(TimelineQuery {
                    crisis_id: convert::uuid("crisis_id", &r.crisis_id)?,
                    kinds: kinds("kinds", &r.kinds)?,
                    levels: convert::filter_values("levels", &r.levels)?
                        .iter()
                        .enumerate()
                        .map(|(i, l)| {
                            Ok(convert::level(&format!("levels[{i}]"), *l)?
                                .as_str()
                                .to_owned())
                        })
                        .collect::<Result<_, AppError>>()?,
                    occurred_from: convert::time(
                        "occurred.from",
                        r.occurred.as_ref().and_then(|o| o.from.as_ref()),
                    )?,
                    occurred_to: convert::time(
                        "occurred.to",
                        r.occurred.as_ref().and_then(|o| o.to.as_ref()),
                    )?,
                    after: match r.page_token.as_str() {
                        "" => None,
                        t => Some(parse_timeline_token(t)?),
                    },
                    // One more than the page, to know whether another follows.
                    limit: limit + 1,
                })
            };
            let mut query = parse().map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let mut entries = self.reads.timeline(&query).await.map_err(status)?;
            query.limit -= 1;
            let next = if entries.len() > query.limit as usize {
                entries.truncate(query.limit as usize);
                entries
                    .last()
                    .map(|e| timeline_token(e.position, e.seq))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(pb::GetTimelineResponse {
                entries: entries.iter().map(entry_view).collect(),
                next_page_token: next,
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_decision_register(
        &self,
        request: Request<pb::GetDecisionRegisterRequest>,
    ) -> Result<Response<pb::DecisionRegister>, Status> {
        let span = rpc_span("CmcQueryService", "GetDecisionRegister", request.metadata());
        async move {
            let r = request.get_ref();
            let id = convert::uuid("crisis_id", &r.crisis_id).map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            if self.reads.get_crisis(id).await.map_err(status)?.is_none() {
                return Err(Status::not_found(format!("crisis {id} not found")));
            }
            let rows = self.reads.decision_register(id).await.map_err(status)?;
            Ok(Response::new(register(&rows, Utc::now())))
        }
        .instrument(span)
        .await
    }

    /// Sends what exists after the caller's position, then each new entry as the projector
    /// applies it (`watch.rs`: one follower per crisis reads each batch once for every
    /// watcher). A watcher sends only entries after the last one it sent, in log order, from
    /// a read model that commits whole batches in log order: so nothing is missed and nothing
    /// is sent twice, across the boundary between history and live entries too.
    async fn watch_timeline(
        &self,
        request: Request<pb::WatchTimelineRequest>,
    ) -> Result<Response<Self::WatchTimelineStream>, Status> {
        let r = request.into_inner();
        let crisis_id = convert::uuid("crisis_id", &r.crisis_id).map_err(status)?;
        let kinds = kinds("kinds", &r.kinds).map_err(status)?;
        let after_seq = i32::try_from(r.after_seq)
            .map_err(|_| status(convert::invalid("after_seq", "is out of range")))?;
        let after_position = i64::try_from(r.after_position)
            .map_err(|_| status(convert::invalid("after_position", "is out of range")))?;
        let known = self
            .reads
            .get_crisis(crisis_id)
            .await
            .map_err(status)?
            .is_some()
            || !self
                .reads
                .timeline(&TimelineQuery {
                    crisis_id,
                    limit: 1,
                    ..TimelineQuery::default()
                })
                .await
                .map_err(status)?
                .is_empty();
        if !known {
            return Err(Status::not_found(format!("crisis {crisis_id} not found")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BATCH as usize);
        let watcher = super::watch::run(
            self.hub.clone(),
            crisis_id,
            kinds,
            (after_position, after_seq),
            self.stopping.clone(),
            tx.clone(),
        );
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            // A watcher blocked on a client that stopped reading must not hold up shutdown:
            // stopping drops it (and its sender), which ends the stream.
            tokio::select! {
                () = watcher => {}
                () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    let _ = tx.try_send(Err(Status::unavailable(
                        "the server is stopping; resume from the last entry received",
                    )));
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
