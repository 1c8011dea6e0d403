//! The CMC read models as a pure function: handover and crisis commits in, records and
//! timeline entries out. Three read models come from it:
//!
//! * **handover**: every handover with its brief, state, parties, clarification rounds and
//!   offer→accept latency;
//! * **CMC timeline**: one log per crisis of every escalation and handover step and every
//!   crisis entry, in the order recorded, each with occurred_at, recorded_at, actor, level
//!   and TLP;
//! * **decision register**: each decision of a crisis with what superseded what, its
//!   amendments and reviews; each incident keeps its own (operational and tactical
//!   decisions), as `incident_decision` records keyed by the incident.
//!
//! A handover's steps go on the timeline of the crisis it would activate
//! ([`sems_app::crisis_id_for`]), so the escalation and the handshake open the crisis's log.
//! Records are documents keyed by (kind, crisis, id) with the few columns queries filter on.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sems_app::{EnvelopeEvent, crisis_id_for};
use sems_domain::{
    Level,
    crisis::{ActionStatus, CrisisEvent, DecisionRecord, SitrepBody, Tlp},
    handover::{HandoverBrief, HandoverEvent},
    incident::IncidentEvent,
};

use crate::projection::{Events, ProjectedCommit, ProjectionError};

/// One clarification round of a handover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClarificationRound {
    /// The offer questioned.
    pub revision: u32,
    /// The questions.
    pub questions: Vec<String>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// The answers given with the next offer.
    pub answers: Option<String>,
}

/// A handover as the handover read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverRow {
    pub handover_id: Uuid,
    pub incident_id: Uuid,
    /// The crisis an acceptance activates (its timeline holds the handover's steps).
    pub crisis_id: Uuid,
    /// `DRAFTING`, `OFFERED`, `CLARIFICATION_REQUESTED`, `ACCEPTED`, `DECLINED`,
    /// `WITHDRAWN`.
    pub status: String,
    pub reason: String,
    pub from_level: String,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub brief: HandoverBrief,
    pub revision: u32,
    pub offered_by: Option<String>,
    pub first_offered_at: Option<DateTime<Utc>>,
    pub last_offered_at: Option<DateTime<Utc>>,
    pub clarifications: Vec<ClarificationRound>,
    pub accepted_by: Option<String>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub effective_at: Option<DateTime<Utc>>,
    pub authority_delegated: Option<String>,
    /// From the first offer to the acceptance, in milliseconds.
    pub acceptance_latency_ms: Option<i64>,
    pub command_transferred_at: Option<DateTime<Utc>>,
    pub declined_by: Option<String>,
    pub declined_at: Option<DateTime<Utc>>,
    pub decline_reason: Option<String>,
    pub command_stays_at: Option<String>,
    #[serde(default)]
    pub withdrawn_by: Option<String>,
    #[serde(default)]
    pub withdrawn_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub withdraw_reason: Option<String>,
    pub version: i64,
    pub position: i64,
}

impl HandoverRow {
    /// Still waiting for the CMC's answer (or for the brief).
    pub fn is_pending(&self) -> bool {
        !matches!(self.status.as_str(), "ACCEPTED" | "DECLINED" | "WITHDRAWN")
    }

    /// Since when the handover waits: its first offer, or its start before any offer.
    pub fn waiting_since(&self) -> DateTime<Utc> {
        self.first_offered_at.unwrap_or(self.started_at)
    }
}

/// A person in the CMC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attendee {
    pub person: String,
    pub role: String,
    pub arrived_at: DateTime<Utc>,
}

/// A crisis as the crisis read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrisisRow {
    pub crisis_id: Uuid,
    pub title: String,
    /// `ACTIVE`, `STABILISING`, `STOOD_DOWN` or `REVIEWED`.
    pub status: String,
    pub incident_ids: Vec<Uuid>,
    pub handover_id: Option<Uuid>,
    pub criteria: String,
    pub tlp: String,
    pub activated_by: String,
    pub activated_at: DateTime<Utc>,
    pub present: Vec<Attendee>,
    pub objectives_version: u32,
    pub objectives: Vec<String>,
    pub information_items: i64,
    pub decisions: i64,
    pub first_decision_at: Option<DateTime<Utc>>,
    pub stood_down_at: Option<DateTime<Utc>>,
    pub stood_down_by: Option<String>,
    pub handed_to: Option<String>,
    pub stand_down_decision: Option<Uuid>,
    #[serde(default)]
    pub stabilising_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reviewed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub review_findings: Option<String>,
    pub entries: i64,
    pub version: i64,
    pub position: i64,
}

/// An amendment of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amendment {
    pub amendment: String,
    pub reason: String,
    pub amended_by: String,
    pub amended_at: DateTime<Utc>,
}

/// A review of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub outcome: String,
    pub reviewed_by: String,
    pub reviewed_at: DateTime<Utc>,
}

/// A decision as the decision register shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// The crisis, or for an incident's decision the incident, whose register holds it.
    #[serde(rename = "crisis_id")]
    pub register_id: Uuid,
    /// The record as taken (its information basis as graded then).
    pub record: DecisionRecord,
    /// When it was made (world time).
    pub made_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub late_reason: Option<String>,
    /// `CURRENT` or `SUPERSEDED`.
    pub status: String,
    pub superseded_by: Option<Uuid>,
    pub superseded_at: Option<DateTime<Utc>>,
    pub amendments: Vec<Amendment>,
    pub reviews: Vec<Review>,
    /// Recorded at this position (the register's order).
    pub position: i64,
}

impl DecisionRow {
    /// A decision as recorded at `position` in `register_id`'s register, current.
    fn new(
        register_id: Uuid,
        record: &DecisionRecord,
        made_at: DateTime<Utc>,
        commit: &ProjectedCommit,
        meta: &EnvelopeEvent,
        position: i64,
    ) -> Self {
        Self {
            register_id,
            record: record.clone(),
            made_at,
            recorded_at: commit.envelope.recorded_at,
            late_reason: meta.late_reason.clone(),
            status: "CURRENT".into(),
            superseded_by: None,
            superseded_at: None,
            amendments: Vec::new(),
            reviews: Vec::new(),
            position,
        }
    }

    fn supersede(&mut self, by: Uuid, at: DateTime<Utc>) {
        self.status = "SUPERSEDED".into();
        self.superseded_by = Some(by);
        self.superseded_at = Some(at);
    }

    fn review(&mut self, outcome: &str, reviewed_by: &str, at: DateTime<Utc>) {
        self.reviews.push(Review {
            outcome: outcome.into(),
            reviewed_by: reviewed_by.into(),
            reviewed_at: at,
        });
    }

    fn amend(&mut self, amendment: &str, reason: &str, amended_by: &str, at: DateTime<Utc>) {
        self.amendments.push(Amendment {
            amendment: amendment.into(),
            reason: reason.into(),
            amended_by: amended_by.into(),
            amended_at: at,
        });
    }

    /// Due for review at `now`: current, a review time passed, and no review recorded.
    pub fn due_for_review(&self, now: DateTime<Utc>) -> bool {
        self.review_due_at().is_some_and(|at| at <= now)
    }

    fn review_due_at(&self) -> Option<DateTime<Utc>> {
        if self.status == "CURRENT" && self.reviews.is_empty() {
            self.record.review_by
        } else {
            None
        }
    }
}

/// A status change of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionChange {
    pub from: String,
    pub to: String,
    pub note: String,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

/// An action of a crisis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRow {
    pub crisis_id: Uuid,
    pub action_id: Uuid,
    pub description: String,
    pub owner: String,
    pub due_at: DateTime<Utc>,
    pub status: String,
    pub decision_id: Option<Uuid>,
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
    pub transferred_to: Option<String>,
    pub history: Vec<ActionChange>,
    pub position: i64,
}

impl ActionRow {
    /// Not finished and past its due time at `now` (derived, never stored).
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.open_due_at().is_some_and(|at| at < now)
    }

    fn open_due_at(&self) -> Option<DateTime<Utc>> {
        let open = ActionStatus::parse("status", &self.status).is_ok_and(|s| !s.is_final());
        open.then_some(self.due_at)
    }
}

/// A communication of a crisis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommunicationRow {
    pub crisis_id: Uuid,
    pub communication_id: Uuid,
    pub audience: String,
    pub channel: String,
    pub tlp: String,
    pub content: String,
    /// `DRAFTED`, `APPROVED`, `SENT`, `RETRACTED`.
    pub status: String,
    pub required_role: String,
    pub drafted_by: String,
    pub drafted_at: DateTime<Utc>,
    pub approved_by: Option<String>,
    pub approved_role: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub sent_by: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retracted_by: Option<String>,
    #[serde(default)]
    pub retracted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retraction_reason: Option<String>,
    pub position: i64,
}

/// A CMC record: one document of the handover, crisis, decision, action or communication
/// read models, or of an incident's decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Handover(Box<HandoverRow>),
    Crisis(CrisisRow),
    Decision(DecisionRow),
    Action(ActionRow),
    Communication(CommunicationRow),
    /// A decision of an incident's own log (its `crisis_id` column is the incident).
    IncidentDecision(DecisionRow),
}

/// The key of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// `handover`, `crisis`, `decision`, `action`, `communication`, `incident_decision`.
    pub kind: &'static str,
    /// The crisis it belongs to (the incident, for `incident_decision`).
    pub crisis_id: Uuid,
    /// Its id within the crisis.
    pub id: Uuid,
}

impl Record {
    /// Its key.
    pub fn key(&self) -> RecordKey {
        let (kind, crisis_id, id) = match self {
            Self::Handover(r) => ("handover", r.crisis_id, r.handover_id),
            Self::Crisis(r) => ("crisis", r.crisis_id, r.crisis_id),
            Self::Decision(r) => ("decision", r.register_id, r.record.decision_id),
            Self::IncidentDecision(r) => ("incident_decision", r.register_id, r.record.decision_id),
            Self::Action(r) => ("action", r.crisis_id, r.action_id),
            Self::Communication(r) => ("communication", r.crisis_id, r.communication_id),
        };
        RecordKey {
            kind,
            crisis_id,
            id,
        }
    }

    /// The status column.
    pub fn status(&self) -> &str {
        match self {
            Self::Handover(r) => &r.status,
            Self::Crisis(r) => &r.status,
            Self::Decision(r) | Self::IncidentDecision(r) => &r.status,
            Self::Action(r) => &r.status,
            Self::Communication(r) => &r.status,
        }
    }

    /// The time column queries filter on: a pending handover's waiting-since, a decision's
    /// review-due time, an open action's due time, a crisis's activation.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Handover(r) => r.is_pending().then(|| r.waiting_since()),
            Self::Crisis(r) => Some(r.activated_at),
            Self::Decision(r) | Self::IncidentDecision(r) => r.review_due_at(),
            Self::Action(r) => r.open_due_at(),
            Self::Communication(_) => None,
        }
    }

    /// The position it was last changed at (decisions: recorded at, the register's order).
    pub fn position(&self) -> i64 {
        match self {
            Self::Handover(r) => r.position,
            Self::Crisis(r) => r.position,
            Self::Decision(r) | Self::IncidentDecision(r) => r.position,
            Self::Action(r) => r.position,
            Self::Communication(r) => r.position,
        }
    }
}

/// One entry of a crisis's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub crisis_id: Uuid,
    /// The commit's position in the log.
    pub position: i64,
    /// The event's index within its commit.
    pub seq: i32,
    /// `escalation`, `handover`, `crisis`, `attendance`, `objectives`, `information`,
    /// `sitrep`, `decision`, `action`, `communication`.
    pub kind: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub late_reason: Option<String>,
    pub actor: String,
    pub level: String,
    pub tlp: String,
    /// One line for people.
    pub summary: String,
    /// The event's stored payload.
    pub detail: serde_json::Value,
}

/// What one batch reads and writes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CmcRows {
    /// Records, as loaded and then changed.
    pub records: HashMap<RecordKey, Record>,
    /// Keys changed by the batch (only these are written).
    pub changed: std::collections::BTreeSet<RecordKey>,
    /// Timeline entries added by the batch.
    pub timeline: Vec<TimelineEntry>,
}

impl CmcRows {
    /// Rows holding the records loaded for a batch.
    pub fn with(records: impl IntoIterator<Item = Record>) -> Self {
        Self {
            records: records.into_iter().map(|r| (r.key(), r)).collect(),
            ..Self::default()
        }
    }

    fn get_mut<T>(
        &mut self,
        key: RecordKey,
        pick: impl FnOnce(&mut Record) -> Option<&mut T>,
    ) -> Option<&mut T> {
        self.changed.insert(key);
        self.records.get_mut(&key).and_then(pick)
    }

    fn put(&mut self, record: Record) {
        let key = record.key();
        self.changed.insert(key);
        self.records.insert(key, record);
    }

    /// The changed records.
    pub fn changed_records(&self) -> impl Iterator<Item = &Record> {
        self.changed.iter().filter_map(|k| self.records.get(k))
    }
}

fn key(kind: &'static str, crisis_id: Uuid, id: Uuid) -> RecordKey {
    RecordKey {
        kind,
        crisis_id,
        id,
    }
}

/// The records a batch must load before applying: those its commits change that exist
/// before it (the crisis's own record for every crisis commit; the decision, action or
/// communication an event names; the handover of every handover commit).
pub fn touched<'a>(commits: impl IntoIterator<Item = &'a ProjectedCommit>) -> Vec<RecordKey> {
    let mut keys = std::collections::BTreeSet::new();
    for c in commits {
        let id = c.envelope.aggregate_id;
        match &c.events {
            Events::Handover(_) => {
                keys.insert(key("handover", crisis_id_for(id), id));
            }
            Events::Crisis(events) => {
                keys.insert(key("crisis", id, id));
                for e in events {
                    let named = match e {
                        CrisisEvent::DecisionSuperseded { decision_id, .. }
                        | CrisisEvent::DecisionReviewed { decision_id, .. }
                        | CrisisEvent::DecisionAmended { decision_id, .. } => {
                            Some(("decision", *decision_id))
                        }
                        CrisisEvent::ActionStatusChanged { action_id, .. } => {
                            Some(("action", *action_id))
                        }
                        CrisisEvent::CommunicationApproved {
                            communication_id, ..
                        }
                        | CrisisEvent::CommunicationSent {
                            communication_id, ..
                        }
                        | CrisisEvent::CommunicationRetracted {
                            communication_id, ..
                        } => Some(("communication", *communication_id)),
                        _ => None,
                    };
                    if let Some((kind, named)) = named {
                        keys.insert(key(kind, id, named));
                    }
                }
            }
            Events::Incident(events) => {
                for e in events {
                    if let IncidentEvent::IncidentDecisionSuperseded { decision_id, .. }
                    | IncidentEvent::IncidentDecisionReviewed { decision_id, .. }
                    | IncidentEvent::IncidentDecisionAmended { decision_id, .. } = e
                    {
                        keys.insert(key("incident_decision", id, *decision_id));
                    }
                }
            }
            _ => {}
        }
    }
    keys.into_iter().collect()
}

fn clip(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && line.len() == text.len() {
        line.to_owned()
    } else {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    }
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// Applies one commit's handover or crisis events.
pub fn apply(rows: &mut CmcRows, commit: &ProjectedCommit) -> Result<(), ProjectionError> {
    let e = &commit.envelope;
    let fail = |message: String| ProjectionError {
        position: commit.position,
        message,
    };
    let missing_decision =
        |decision_id: Uuid| fail(format!("decision {decision_id} is not in the read model"));
    let position =
        i64::try_from(commit.position).map_err(|_| fail("position out of range".into()))?;
    let version =
        i64::try_from(e.aggregate_version).map_err(|_| fail("version out of range".into()))?;
    let id = e.aggregate_id;
    match &commit.events {
        Events::Handover(events) => {
            let crisis_id = crisis_id_for(id);
            let k = key("handover", crisis_id, id);
            for (seq, (event, meta)) in events.iter().zip(&e.events).enumerate() {
                let at = meta.occurred_at;
                let mut level = Level::Tactical;
                let summary = if let HandoverEvent::HandoverStarted {
                    incident_id,
                    reason,
                    from_level,
                    started_by,
                } = event
                {
                    rows.put(Record::Handover(Box::new(HandoverRow {
                        handover_id: id,
                        incident_id: *incident_id,
                        crisis_id,
                        status: "DRAFTING".into(),
                        reason: reason.clone(),
                        from_level: from_level.as_str().into(),
                        started_by: started_by.clone(),
                        started_at: at,
                        brief: HandoverBrief::default(),
                        revision: 0,
                        offered_by: None,
                        first_offered_at: None,
                        last_offered_at: None,
                        clarifications: Vec::new(),
                        accepted_by: None,
                        accepted_at: None,
                        effective_at: None,
                        authority_delegated: None,
                        acceptance_latency_ms: None,
                        command_transferred_at: None,
                        declined_by: None,
                        declined_at: None,
                        decline_reason: None,
                        command_stays_at: None,
                        withdrawn_by: None,
                        withdrawn_at: None,
                        withdraw_reason: None,
                        version,
                        position,
                    })));
                    format!(
                        "Crisis escalation requested for incident {incident_id}: {}",
                        clip(reason, 160)
                    )
                } else {
                    let h = rows
                        .get_mut(k, |r| match r {
                            Record::Handover(h) => Some(h.as_mut()),
                            _ => None,
                        })
                        .ok_or_else(|| fail(format!("handover {id} is not in the read model")))?;
                    h.version = version;
                    h.position = position;
                    match event {
                        HandoverEvent::HandoverStarted { .. } => unreachable!("handled above"),
                        HandoverEvent::HandoverBriefDrafted { brief, .. } => {
                            h.brief = brief.clone();
                            "Handover brief drafted".to_owned()
                        }
                        HandoverEvent::HandoverOffered {
                            brief,
                            revision,
                            answers,
                            offered_by,
                            offered_at,
                        } => {
                            h.brief = brief.clone();
                            h.revision = *revision;
                            h.status = "OFFERED".into();
                            h.offered_by = Some(offered_by.clone());
                            h.first_offered_at.get_or_insert(*offered_at);
                            h.last_offered_at = Some(*offered_at);
                            if let (Some(answers), Some(round)) =
                                (answers, h.clarifications.last_mut())
                            {
                                round.answers = Some(answers.clone());
                            }
                            format!(
                                "Handover offered (revision {revision}): {}",
                                clip(&brief.situation, 160)
                            )
                        }
                        HandoverEvent::HandoverClarificationRequested {
                            questions,
                            revision,
                            requested_by,
                        } => {
                            h.status = "CLARIFICATION_REQUESTED".into();
                            h.clarifications.push(ClarificationRound {
                                revision: *revision,
                                questions: questions.clone(),
                                requested_by: requested_by.clone(),
                                requested_at: at,
                                answers: None,
                            });
                            level = Level::Strategic;
                            format!(
                                "CMC requested clarification of revision {revision}: {} question(s)",
                                questions.len()
                            )
                        }
                        HandoverEvent::HandoverAccepted {
                            accepted_by,
                            effective_at,
                            authority_delegated,
                            revision,
                            ..
                        } => {
                            h.status = "ACCEPTED".into();
                            h.accepted_by = Some(accepted_by.clone());
                            h.accepted_at = Some(at);
                            h.effective_at = Some(*effective_at);
                            h.authority_delegated = Some(authority_delegated.clone());
                            h.acceptance_latency_ms = h.first_offered_at.map(|o| millis(o, at));
                            level = Level::Strategic;
                            format!(
                                "Handover accepted by {accepted_by} (revision {revision}), effective {}",
                                effective_at.to_rfc3339()
                            )
                        }
                        HandoverEvent::CommandTransferred {
                            from_level,
                            to_level,
                            from_party,
                            to_party,
                            effective_at,
                            ..
                        } => {
                            h.command_transferred_at = Some(*effective_at);
                            level = *to_level;
                            format!(
                                "Command transferred from {} ({from_party}) to {} ({to_party})",
                                from_level.as_str(),
                                to_level.as_str()
                            )
                        }
                        HandoverEvent::HandoverDeclined {
                            declined_by,
                            reason,
                            command_stays_at,
                        } => {
                            h.status = "DECLINED".into();
                            h.declined_by = Some(declined_by.clone());
                            h.declined_at = Some(at);
                            h.decline_reason = Some(reason.clone());
                            h.command_stays_at = Some(command_stays_at.as_str().into());
                            level = Level::Strategic;
                            format!(
                                "Handover declined by {declined_by}; command stays at {}: {}",
                                command_stays_at.as_str(),
                                clip(reason, 160)
                            )
                        }
                        HandoverEvent::HandoverWithdrawn {
                            withdrawn_by,
                            reason,
                            command_stays_at,
                        } => {
                            h.status = "WITHDRAWN".into();
                            h.withdrawn_by = Some(withdrawn_by.clone());
                            h.withdrawn_at = Some(at);
                            h.withdraw_reason = Some(reason.clone());
                            h.command_stays_at = Some(command_stays_at.as_str().into());
                            format!(
                                "Handover withdrawn by {withdrawn_by}; command stays at {}: {}",
                                command_stays_at.as_str(),
                                clip(reason, 160)
                            )
                        }
                    }
                };
                let kind = if matches!(event, HandoverEvent::HandoverStarted { .. }) {
                    "escalation"
                } else {
                    "handover"
                };
                rows.timeline.push(entry(
                    commit,
                    crisis_id,
                    seq,
                    meta,
                    kind,
                    level,
                    Tlp::Amber,
                    summary,
                )?);
            }
        }
        Events::Crisis(events) => {
            for (seq, (event, meta)) in events.iter().zip(&e.events).enumerate() {
                let at = meta.occurred_at;
                if let CrisisEvent::CrisisActivated {
                    title,
                    incident_ids,
                    handover_id,
                    criteria,
                    tlp,
                    activated_by,
                } = event
                {
                    rows.put(Record::Crisis(CrisisRow {
                        crisis_id: id,
                        title: title.clone(),
                        status: "ACTIVE".into(),
                        incident_ids: incident_ids.clone(),
                        handover_id: *handover_id,
                        criteria: criteria.clone(),
                        tlp: tlp.as_str().into(),
                        activated_by: activated_by.clone(),
                        activated_at: at,
                        present: Vec::new(),
                        objectives_version: 0,
                        objectives: Vec::new(),
                        information_items: 0,
                        decisions: 0,
                        first_decision_at: None,
                        stood_down_at: None,
                        stood_down_by: None,
                        handed_to: None,
                        stand_down_decision: None,
                        stabilising_at: None,
                        reviewed_at: None,
                        review_findings: None,
                        entries: 0,
                        version,
                        position,
                    }));
                }
                let missing = || fail(format!("crisis {id} is not in the read model"));
                let crisis_tlp = {
                    let c = crisis(rows, id).ok_or_else(missing)?;
                    c.version = version;
                    c.position = position;
                    c.entries += 1;
                    Tlp::parse("tlp", &c.tlp).unwrap_or(Tlp::Amber)
                };
                let mut entry_tlp = crisis_tlp;
                let mut level = Level::Strategic;
                let (kind, summary) = match event {
                    CrisisEvent::CrisisActivated {
                        title, handover_id, ..
                    } => (
                        "crisis",
                        match handover_id {
                            Some(h) => format!("Crisis activated from handover {h}: {title}"),
                            None => format!("Crisis declared: {title}"),
                        },
                    ),
                    CrisisEvent::CrisisIncidentLinked { incident_id, .. } => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.incident_ids.push(*incident_id);
                        ("crisis", format!("Incident {incident_id} linked"))
                    }
                    CrisisEvent::CrisisAttendanceLogged {
                        person,
                        role,
                        change,
                        ..
                    } => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.present.retain(|a| &a.person != person);
                        let verb = match change {
                            sems_domain::crisis::Attendance::Arrived => {
                                c.present.push(Attendee {
                                    person: person.clone(),
                                    role: role.as_str().into(),
                                    arrived_at: at,
                                });
                                "arrived"
                            }
                            sems_domain::crisis::Attendance::Left => "left",
                        };
                        ("attendance", format!("{person} {verb} ({})", role.as_str()))
                    }
                    CrisisEvent::StrategicObjectivesSet {
                        version: v,
                        objectives,
                        ..
                    } => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.objectives_version = *v;
                        c.objectives = objectives.clone();
                        (
                            "objectives",
                            format!(
                                "Strategic objectives v{v}: {}",
                                clip(&objectives.join("; "), 160)
                            ),
                        )
                    }
                    CrisisEvent::InformationReceived {
                        source,
                        content,
                        grade,
                        ..
                    } => {
                        crisis(rows, id).ok_or_else(missing)?.information_items += 1;
                        (
                            "information",
                            format!(
                                "[{:?}{} {:?}] {source}: {}",
                                grade.reliability,
                                grade.credibility.value(),
                                grade.basis,
                                clip(content, 160)
                            ),
                        )
                    }
                    CrisisEvent::InformationRegraded {
                        information_id,
                        previous,
                        grade,
                        reason,
                        ..
                    } => (
                        "information",
                        format!(
                            "Information {information_id} regraded {:?}{} → {:?}{}: {}",
                            previous.reliability,
                            previous.credibility.value(),
                            grade.reliability,
                            grade.credibility.value(),
                            clip(reason, 120)
                        ),
                    ),
                    CrisisEvent::InformationConflictFlagged {
                        information_ids,
                        note,
                        ..
                    } => (
                        "information",
                        format!(
                            "Conflict flagged between {} items: {}",
                            information_ids.len(),
                            clip(note, 160)
                        ),
                    ),
                    CrisisEvent::InformationCorroborated {
                        information_id,
                        corroborated_by,
                        note,
                        ..
                    } => (
                        "information",
                        format!(
                            "Item {information_id} corroborated by {} other item(s): {}",
                            corroborated_by.len(),
                            clip(note, 160)
                        ),
                    ),
                    CrisisEvent::InformationSuperseded {
                        information_id,
                        superseded_by,
                        reason,
                        ..
                    } => (
                        "information",
                        format!(
                            "Item {information_id} superseded by {superseded_by}: {}",
                            clip(reason, 160)
                        ),
                    ),
                    CrisisEvent::SituationReportIssued {
                        body,
                        as_at,
                        confidence,
                        ..
                    } => {
                        let text = match body {
                            SitrepBody::Methane { incident_type, .. } => {
                                format!("M/ETHANE: {incident_type}")
                            }
                            SitrepBody::Free { text } => text.clone(),
                        };
                        (
                            "sitrep",
                            format!(
                                "Situation report as at {} ({:?} confidence): {}",
                                as_at.to_rfc3339(),
                                confidence,
                                clip(&text, 120)
                            ),
                        )
                    }
                    CrisisEvent::DecisionRecorded(d) => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.decisions += 1;
                        c.first_decision_at.get_or_insert(at);
                        level = d.level;
                        rows.put(Record::Decision(DecisionRow::new(
                            id, d, at, commit, meta, position,
                        )));
                        (
                            "decision",
                            format!(
                                "Decision by {}: {}",
                                d.decision_maker,
                                clip(&d.decision, 160)
                            ),
                        )
                    }
                    CrisisEvent::DecisionSuperseded {
                        decision_id,
                        superseded_by,
                    } => {
                        decision(rows, "decision", id, *decision_id)
                            .ok_or_else(|| missing_decision(*decision_id))?
                            .supersede(*superseded_by, at);
                        (
                            "decision",
                            format!("Decision {decision_id} superseded by {superseded_by}"),
                        )
                    }
                    CrisisEvent::DecisionReviewed {
                        decision_id,
                        outcome,
                        reviewed_by,
                    } => {
                        decision(rows, "decision", id, *decision_id)
                            .ok_or_else(|| missing_decision(*decision_id))?
                            .review(outcome, reviewed_by, at);
                        (
                            "decision",
                            format!("Decision {decision_id} reviewed: {}", clip(outcome, 160)),
                        )
                    }
                    CrisisEvent::DecisionAmended {
                        decision_id,
                        amendment,
                        reason,
                        amended_by,
                    } => {
                        decision(rows, "decision", id, *decision_id)
                            .ok_or_else(|| missing_decision(*decision_id))?
                            .amend(amendment, reason, amended_by, at);
                        (
                            "decision",
                            format!("Decision {decision_id} amended: {}", clip(amendment, 160)),
                        )
                    }
                    CrisisEvent::ActionAssigned {
                        action_id,
                        description,
                        owner,
                        due_at,
                        decision_id,
                        assigned_by,
                    } => {
                        rows.put(Record::Action(ActionRow {
                            crisis_id: id,
                            action_id: *action_id,
                            description: description.clone(),
                            owner: owner.clone(),
                            due_at: *due_at,
                            status: ActionStatus::Assigned.as_str().into(),
                            decision_id: *decision_id,
                            assigned_by: assigned_by.clone(),
                            assigned_at: at,
                            transferred_to: None,
                            history: Vec::new(),
                            position,
                        }));
                        (
                            "action",
                            format!(
                                "Action for {owner}, due {}: {}",
                                due_at.to_rfc3339(),
                                clip(description, 140)
                            ),
                        )
                    }
                    CrisisEvent::ActionStatusChanged {
                        action_id,
                        from,
                        to,
                        note,
                        transferred_to,
                        changed_by,
                    } => {
                        let a = rows
                            .get_mut(key("action", id, *action_id), |r| match r {
                                Record::Action(a) => Some(a),
                                _ => None,
                            })
                            .ok_or_else(|| {
                                fail(format!("action {action_id} is not in the read model"))
                            })?;
                        a.status = to.as_str().into();
                        a.transferred_to.clone_from(transferred_to);
                        a.position = position;
                        a.history.push(ActionChange {
                            from: from.as_str().into(),
                            to: to.as_str().into(),
                            note: note.clone(),
                            changed_by: changed_by.clone(),
                            changed_at: at,
                        });
                        (
                            "action",
                            format!("Action {action_id}: {} → {}", from.as_str(), to.as_str()),
                        )
                    }
                    CrisisEvent::CommunicationDrafted {
                        communication_id,
                        audience,
                        channel,
                        tlp,
                        content,
                        drafted_by,
                    } => {
                        entry_tlp = *tlp;
                        rows.put(Record::Communication(CommunicationRow {
                            crisis_id: id,
                            communication_id: *communication_id,
                            audience: audience.as_str().into(),
                            channel: channel.clone(),
                            tlp: tlp.as_str().into(),
                            content: content.clone(),
                            status: "DRAFTED".into(),
                            required_role: audience.approver().as_str().into(),
                            drafted_by: drafted_by.clone(),
                            drafted_at: at,
                            approved_by: None,
                            approved_role: None,
                            approved_at: None,
                            sent_by: None,
                            sent_at: None,
                            retracted_by: None,
                            retracted_at: None,
                            retraction_reason: None,
                            position,
                        }));
                        (
                            "communication",
                            format!(
                                "Communication to {} drafted ({channel}): {}",
                                audience.as_str(),
                                clip(content, 120)
                            ),
                        )
                    }
                    CrisisEvent::CommunicationApproved {
                        communication_id,
                        approved_by,
                        role,
                    } => {
                        let m = communication(rows, id, *communication_id).ok_or_else(|| {
                            fail(format!(
                                "communication {communication_id} is not in the read model"
                            ))
                        })?;
                        m.status = "APPROVED".into();
                        m.approved_by = Some(approved_by.clone());
                        m.approved_role = Some(role.as_str().into());
                        m.approved_at = Some(at);
                        m.position = position;
                        entry_tlp = Tlp::parse("tlp", &m.tlp).unwrap_or(crisis_tlp);
                        (
                            "communication",
                            format!(
                                "Communication {communication_id} approved by {approved_by} as {}",
                                role.as_str()
                            ),
                        )
                    }
                    CrisisEvent::CommunicationSent {
                        communication_id,
                        sent_by,
                    } => {
                        let m = communication(rows, id, *communication_id).ok_or_else(|| {
                            fail(format!(
                                "communication {communication_id} is not in the read model"
                            ))
                        })?;
                        m.status = "SENT".into();
                        m.sent_by = Some(sent_by.clone());
                        m.sent_at = Some(at);
                        m.position = position;
                        entry_tlp = Tlp::parse("tlp", &m.tlp).unwrap_or(crisis_tlp);
                        let summary =
                            format!("Communication to {} sent via {}", m.audience, m.channel);
                        ("communication", summary)
                    }
                    CrisisEvent::CommunicationRetracted {
                        communication_id,
                        reason,
                        retracted_by,
                        role,
                    } => {
                        let m = communication(rows, id, *communication_id).ok_or_else(|| {
                            fail(format!(
                                "communication {communication_id} is not in the read model"
                            ))
                        })?;
                        m.status = "RETRACTED".into();
                        m.retracted_by = Some(retracted_by.clone());
                        m.retracted_at = Some(at);
                        m.retraction_reason = Some(reason.clone());
                        m.position = position;
                        // The reason is the CMC's own reasoning, not the statement: it is
                        // shared as the crisis is (the entry keeps the crisis's TLP).
                        let summary = format!(
                            "Communication to {} retracted by {retracted_by} ({}): {}",
                            m.audience,
                            role.as_str(),
                            clip(reason, 160)
                        );
                        ("communication", summary)
                    }
                    CrisisEvent::CrisisStoodDown {
                        handed_to,
                        decision_id,
                        stood_down_by,
                    } => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.status = "STOOD_DOWN".into();
                        c.stood_down_at = Some(at);
                        c.stood_down_by = Some(stood_down_by.clone());
                        c.handed_to = Some(handed_to.clone());
                        c.stand_down_decision = Some(*decision_id);
                        (
                            "crisis",
                            format!(
                                "CMC stood down; control passes to {handed_to} (decision {decision_id})"
                            ),
                        )
                    }
                    CrisisEvent::CrisisStabilising { reason, .. } => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.status = "STABILISING".into();
                        c.stabilising_at = Some(at);
                        (
                            "crisis",
                            format!("Crisis stabilising: {}", clip(reason, 160)),
                        )
                    }
                    CrisisEvent::CrisisReviewed { findings, .. } => {
                        let c = crisis(rows, id).ok_or_else(missing)?;
                        c.status = "REVIEWED".into();
                        c.reviewed_at = Some(at);
                        c.review_findings = Some(findings.clone());
                        (
                            "crisis",
                            format!("Post-crisis review: {}", clip(findings, 160)),
                        )
                    }
                };
                rows.timeline.push(entry(
                    commit, id, seq, meta, kind, level, entry_tlp, summary,
                )?);
            }
        }
        Events::Incident(events) => apply_incident(rows, commit, events, position)?,
        _ => {}
    }
    Ok(())
}

fn crisis(rows: &mut CmcRows, crisis_id: Uuid) -> Option<&mut CrisisRow> {
    rows.get_mut(key("crisis", crisis_id, crisis_id), |r| match r {
        Record::Crisis(c) => Some(c),
        _ => None,
    })
}

/// Decision `id` of the register of `register_id`: `decision` (a crisis's) or
/// `incident_decision` (an incident's).
fn decision<'a>(
    rows: &'a mut CmcRows,
    kind: &'static str,
    register_id: Uuid,
    id: Uuid,
) -> Option<&'a mut DecisionRow> {
    rows.get_mut(key(kind, register_id, id), |r| match r {
        Record::Decision(d) | Record::IncidentDecision(d) => Some(d),
        _ => None,
    })
}

/// Applies an incident's decision-log events to its register (the incident's other events
/// are `crate::projection`'s; they are not on any crisis's timeline).
fn apply_incident(
    rows: &mut CmcRows,
    commit: &ProjectedCommit,
    events: &[IncidentEvent],
    position: i64,
) -> Result<(), ProjectionError> {
    let e = &commit.envelope;
    let id = e.aggregate_id;
    let missing_decision = |decision_id: Uuid| ProjectionError {
        position: commit.position,
        message: format!("decision {decision_id} of incident {id} is not in the read model"),
    };
    for (event, meta) in events.iter().zip(&e.events) {
        let at = meta.occurred_at;
        match event {
            IncidentEvent::IncidentDecisionRecorded(d) => {
                rows.put(Record::IncidentDecision(DecisionRow::new(
                    id, d, at, commit, meta, position,
                )));
            }
            IncidentEvent::IncidentDecisionSuperseded {
                decision_id,
                superseded_by,
            } => decision(rows, "incident_decision", id, *decision_id)
                .ok_or_else(|| missing_decision(*decision_id))?
                .supersede(*superseded_by, at),
            IncidentEvent::IncidentDecisionReviewed {
                decision_id,
                outcome,
                reviewed_by,
            } => decision(rows, "incident_decision", id, *decision_id)
                .ok_or_else(|| missing_decision(*decision_id))?
                .review(outcome, reviewed_by, at),
            IncidentEvent::IncidentDecisionAmended {
                decision_id,
                amendment,
                reason,
                amended_by,
            } => decision(rows, "incident_decision", id, *decision_id)
                .ok_or_else(|| missing_decision(*decision_id))?
                .amend(amendment, reason, amended_by, at),
            _ => {}
        }
    }
    Ok(())
}

fn communication(rows: &mut CmcRows, crisis_id: Uuid, id: Uuid) -> Option<&mut CommunicationRow> {
    rows.get_mut(key("communication", crisis_id, id), |r| match r {
        Record::Communication(c) => Some(c),
        _ => None,
    })
}

#[allow(clippy::too_many_arguments)]
fn entry(
    commit: &ProjectedCommit,
    crisis_id: Uuid,
    seq: usize,
    meta: &EnvelopeEvent,
    kind: &str,
    level: Level,
    tlp: Tlp,
    summary: String,
) -> Result<TimelineEntry, ProjectionError> {
    let e = &commit.envelope;
    let detail = serde_json::from_str(meta.payload.get()).map_err(|err| ProjectionError {
        position: commit.position,
        message: format!("payload of {}: {err}", meta.event_type),
    })?;
    Ok(TimelineEntry {
        crisis_id,
        position: commit.position as i64,
        seq: seq as i32,
        kind: kind.into(),
        event_type: meta.event_type.clone(),
        occurred_at: meta.occurred_at,
        recorded_at: e.recorded_at,
        late_reason: meta.late_reason.clone(),
        actor: e.actor.clone(),
        level: level.as_str().into(),
        tlp: tlp.as_str().into(),
        summary,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::tests::commit;
    use sems_domain::crisis::DecisionRecord;

    fn record(id: u128, supersedes: Option<u128>) -> IncidentEvent {
        IncidentEvent::IncidentDecisionRecorded(Box::new(DecisionRecord {
            decision_id: Uuid::from_u128(id),
            decision: "Isolate FS-01".into(),
            rationale: "spreading".into(),
            options: vec![],
            information_basis: vec![],
            assumptions: String::new(),
            risks_accepted: String::new(),
            powers: String::new(),
            decision_maker: "tom".into(),
            level: Level::Tactical,
            joint_with: String::new(),
            review_by: None,
            supersedes: supersedes.map(Uuid::from_u128),
            recorded_by: "tom".into(),
        }))
    }

    fn on_incident(position: u64, version: u64, events: Vec<IncidentEvent>) -> ProjectedCommit {
        commit(
            position,
            "incident",
            Uuid::from_u128(7),
            version,
            events,
            Events::Incident,
        )
    }

    /// The rows a batch of `commits` writes, given what earlier batches wrote.
    fn batch(earlier: &CmcRows, commits: &[ProjectedCommit]) -> CmcRows {
        let keys = touched(commits);
        let mut rows = CmcRows::with(keys.iter().filter_map(|k| earlier.records.get(k).cloned()));
        for c in commits {
            apply(&mut rows, c).unwrap();
        }
        rows
    }

    #[test]
    fn an_incident_decision_changed_in_a_later_batch_is_loaded_and_updated() {
        let incident = Uuid::from_u128(7);
        let first = batch(
            &CmcRows::default(),
            &[on_incident(1, 3, vec![record(1, None)])],
        );
        let later = vec![
            on_incident(
                2,
                5,
                vec![
                    record(2, Some(1)),
                    IncidentEvent::IncidentDecisionSuperseded {
                        decision_id: Uuid::from_u128(1),
                        superseded_by: Uuid::from_u128(2),
                    },
                ],
            ),
            on_incident(
                3,
                6,
                vec![IncidentEvent::IncidentDecisionReviewed {
                    decision_id: Uuid::from_u128(1),
                    outcome: "too narrow".into(),
                    reviewed_by: "auditor".into(),
                }],
            ),
        ];
        assert_eq!(
            touched(&later),
            vec![key("incident_decision", incident, Uuid::from_u128(1))],
            "the decision an event names is loaded; the one recorded is new"
        );
        let rows = batch(&first, &later);
        let get = |id: u128| match &rows.records
            [&key("incident_decision", incident, Uuid::from_u128(id))]
        {
            Record::IncidentDecision(d) => d.clone(),
            other => panic!("not an incident decision: {other:?}"),
        };
        let old = get(1);
        assert_eq!(old.status, "SUPERSEDED");
        assert_eq!(old.superseded_by, Some(Uuid::from_u128(2)));
        assert_eq!(old.reviews[0].outcome, "too narrow");
        assert_eq!(
            old.position, 1,
            "the register's order is when it was recorded"
        );
        assert_eq!(get(2).status, "CURRENT");
        assert!(rows.timeline.is_empty(), "no crisis's timeline holds them");
        assert_eq!(rows.changed.len(), 2);
    }
}
