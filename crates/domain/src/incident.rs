//! The Incident aggregate: open → acknowledged → responding (level and phase changes) →
//! resolved → closed, with reopen.
//!
//! Rules (each has a given/when/then test below):
//! * an incident is opened once, at `OPERATIONAL`, with a title and a severity; priority
//!   defaults from severity; it is opened from at most [`Limits::ALERT_IDS`] alerts, each
//!   named once; the time it occurred is not in the future;
//! * only an open incident is acknowledged, and level, phase and crisis-escalation changes
//!   and resolving need an acknowledged incident;
//! * severity (impact) and priority (urgency) change together in a classification with a
//!   rationale, and only when one of them changes;
//! * there is one commander per level: assigning a new one records whom it replaces; a role
//!   takes effect now or in the past, never in the future;
//! * level changes go between `OPERATIONAL` and `TACTICAL` with a reason; `STRATEGIC` is
//!   never a field update but a crisis-escalation request from `TACTICAL` (the Resilience
//!   Handshake follows); while a request is pending the level does not change;
//! * resolving records a resolution and, where people were involved, a Just Culture
//!   determination with its rationale; it waits while a crisis-escalation request is pending
//!   (the handover decides first) and while the CMC commands (`STRATEGIC`: the incident is
//!   resolved once command has returned); only a resolved incident is closed; a resolved or
//!   closed incident is reopened with a reason;
//! * a notification to an authority (a regulator, a CSIRT, the police: NIS2, GDPR and sector
//!   rules set deadlines from detection) is recorded with the authority, the reference it
//!   gave and what was reported, at the time it was sent (late entries say why);
//! * the incident keeps its own decision log (JESIP: every commander logs decisions), as the
//!   CMC does for a crisis: each decision with its rationale, the options considered and why
//!   each was not taken, assumptions, risks accepted, powers relied on, decision maker, level
//!   (`OPERATIONAL` or `TACTICAL`: strategic decisions are the CMC's, in the crisis) and a
//!   review time not before the decision; it may supersede a current decision, which stays
//!   on the record; a current decision is amended with a reason, any decision is reviewed;
//!   nothing is edited or erased; decisions need an acknowledged incident; late entries say
//!   why;
//! * an incident is linked to the register risks it realised (DOMAIN: incidents per register
//!   risk is an assurance measure), each by the register's reference, once, with why; at
//!   most [`Limits::RISKS`] at a time; a link made in error is removed with a reason (the
//!   record keeps both);
//! * nothing but reopening changes a closed incident;
//! * the handover decides a pending crisis-escalation request: accepted, command passes to
//!   `STRATEGIC` (the CMC) at its effective time; declined, the request closes and command
//!   stays at `TACTICAL` (a later request may follow); withdrawn by the outgoing side before
//!   the CMC answered, likewise; at `STRATEGIC` the level changes only
//!   when the crisis that took command stands down: command returns to `TACTICAL`, and a
//!   later request may follow.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use imbl::HashMap;

use crate::{
    Aggregate, Context, DomainError, DomainEvent, JustCulture, Level, Limits, Phase, Priority,
    Role, Severity, Text,
    crisis::{DecisionInput, DecisionRecord, current_decision, decision_record},
};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentStatus {
    /// Opened, nobody has taken it yet.
    Open,
    /// Somebody has taken it.
    Acknowledged,
    /// Being worked: a level or phase change happened.
    Responding,
    /// Resolved, awaiting closure.
    Resolved,
    /// Closed.
    Closed,
}

impl IncidentStatus {
    /// The stored name, e.g. `RESPONDING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Acknowledged => "ACKNOWLEDGED",
            Self::Responding => "RESPONDING",
            Self::Resolved => "RESOLVED",
            Self::Closed => "CLOSED",
        }
    }
}

/// A command on an incident. Text fields are raw input; `decide` checks their limits.
#[derive(Debug, Clone)]
pub enum IncidentCommand {
    /// Open a new incident, manually or from alerts.
    Open {
        /// Short summary.
        title: String,
        /// Longer text.
        description: String,
        /// Impact.
        severity: Severity,
        /// Urgency; defaults from severity.
        priority: Option<Priority>,
        /// The alerts it is opened from.
        alert_ids: Vec<Uuid>,
    },
    /// Somebody takes the incident.
    Acknowledge,
    /// Give a person a role at a level.
    AssignRole {
        /// The role.
        role: Role,
        /// Who.
        person: String,
        /// At which level.
        level: Level,
        /// From when.
        effective_at: DateTime<Utc>,
    },
    /// Change severity and/or priority, with a rationale.
    Classify {
        /// New impact.
        severity: Severity,
        /// New urgency.
        priority: Priority,
        /// Why.
        rationale: String,
    },
    /// Add a note to the record.
    AddNote {
        /// The note.
        text: String,
    },
    /// Record a notification made to an authority (the context's `occurred_at` is when it
    /// was sent).
    NotifyAuthority {
        /// Who was notified (e.g. the national CSIRT, the data protection authority).
        authority: String,
        /// The reference the authority gave, if any.
        reference: String,
        /// What was reported (early warning, notification, final report…).
        summary: String,
    },
    /// Move between `OPERATIONAL` and `TACTICAL`.
    ChangeLevel {
        /// Target level.
        to: Level,
        /// Why.
        reason: String,
    },
    /// Move to a response phase.
    ChangePhase {
        /// Target phase.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// Resolve the incident.
    Resolve {
        /// What was done and found.
        resolution: String,
        /// Required when people were involved.
        just_culture: Option<JustCulture>,
    },
    /// Close a resolved incident.
    Close {
        /// Optional closing note.
        note: String,
    },
    /// Reopen a resolved or closed incident.
    Reopen {
        /// Why.
        reason: String,
    },
    /// Ask for the incident to be handed over to the CMC (`STRATEGIC`).
    RequestCrisisEscalation {
        /// Why.
        reason: String,
        /// Which escalation criteria are met.
        criteria_met: String,
        /// The handover the request starts (its id is derived from the request's commit).
        handover_id: Uuid,
    },
    /// The CMC accepted the handover: command passes to `STRATEGIC`.
    EnterStrategic {
        /// The accepted handover.
        handover_id: Uuid,
        /// The crisis it activated.
        crisis_id: Uuid,
        /// When command passes.
        effective_at: DateTime<Utc>,
    },
    /// The CMC declined the handover: command stays at `TACTICAL`.
    CloseDeclinedEscalation {
        /// The declined handover.
        handover_id: Uuid,
        /// The CMC's reason.
        reason: String,
    },
    /// The outgoing side withdrew the handover: command stays at `TACTICAL`.
    CloseWithdrawnEscalation {
        /// The withdrawn handover.
        handover_id: Uuid,
        /// Why it was withdrawn.
        reason: String,
    },
    /// Log a decision taken in the incident (the context's `occurred_at` is when it was
    /// made).
    RecordDecision(Box<DecisionInput>),
    /// Amend a current decision (its record stays; the amendment is added).
    AmendDecision {
        /// The decision.
        decision_id: Uuid,
        /// What changes.
        amendment: String,
        /// Why.
        reason: String,
    },
    /// Review a decision.
    ReviewDecision {
        /// The decision.
        decision_id: Uuid,
        /// What the review found.
        outcome: String,
    },
    /// Link a risk of the risk register that the incident realised.
    LinkRisk {
        /// The register's reference for the risk (e.g. `R-042`).
        risk_ref: String,
        /// Why this incident realised it.
        rationale: String,
    },
    /// Remove a link made in error.
    UnlinkRisk {
        /// The linked risk's reference.
        risk_ref: String,
        /// Why the link was wrong.
        reason: String,
    },
    /// The crisis that took command stood down: command returns to `TACTICAL`.
    ReturnFromStrategic {
        /// The crisis.
        crisis_id: Uuid,
        /// The decision that stood it down.
        decision_id: Uuid,
        /// Who takes control next, as the stand-down names them.
        handed_to: String,
    },
}

/// What happened to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum IncidentEvent {
    /// Opened.
    IncidentOpened {
        /// Short summary.
        title: String,
        /// Longer text.
        description: String,
        /// Impact.
        severity: Severity,
        /// Urgency.
        priority: Priority,
        /// Level at opening (always `OPERATIONAL`).
        level: Level,
        /// Alerts it was opened from.
        alert_ids: Vec<Uuid>,
        /// Who opened it.
        opened_by: String,
    },
    /// Taken by somebody.
    IncidentAcknowledged {
        /// Who.
        acknowledged_by: String,
    },
    /// A role given to a person at a level.
    IncidentRoleAssigned {
        /// The role.
        role: Role,
        /// Who.
        person: String,
        /// At which level.
        level: Level,
        /// From when.
        effective_at: DateTime<Utc>,
        /// The commander replaced, when the role is commander.
        replaces: Option<String>,
        /// Who assigned it.
        assigned_by: String,
    },
    /// Severity and priority set, with a rationale.
    IncidentClassified {
        /// New impact.
        severity: Severity,
        /// New urgency.
        priority: Priority,
        /// Previous impact.
        previous_severity: Severity,
        /// Previous urgency.
        previous_priority: Priority,
        /// Why.
        rationale: String,
        /// Who.
        classified_by: String,
    },
    /// A note on the record.
    NoteAdded {
        /// The note.
        text: String,
        /// Who wrote it.
        author: String,
    },
    /// An authority was notified (the envelope's `occurred_at` says when).
    AuthorityNotified {
        /// Who was notified.
        authority: String,
        /// The reference it gave (empty when none).
        reference: String,
        /// What was reported.
        summary: String,
        /// Who recorded it.
        notified_by: String,
    },
    /// Level changed.
    IncidentLevelChanged {
        /// Previous level.
        from: Level,
        /// New level.
        to: Level,
        /// Why.
        reason: String,
        /// Who decided.
        decided_by: String,
    },
    /// Phase changed.
    IncidentPhaseChanged {
        /// Previous phase.
        from: Option<Phase>,
        /// New phase.
        to: Phase,
        /// Why.
        reason: String,
        /// Who decided.
        decided_by: String,
    },
    /// Resolved.
    IncidentResolved {
        /// What was done and found.
        resolution: String,
        /// Just Culture determination, where people were involved.
        just_culture: Option<JustCulture>,
        /// Who resolved it.
        resolved_by: String,
    },
    /// Closed.
    IncidentClosed {
        /// Closing note.
        note: String,
        /// Who closed it.
        closed_by: String,
    },
    /// Reopened.
    IncidentReopened {
        /// Why.
        reason: String,
        /// Who reopened it.
        reopened_by: String,
    },
    /// A request to hand the incident over to the CMC.
    CrisisEscalationRequested {
        /// Why.
        reason: String,
        /// Which escalation criteria are met.
        criteria_met: String,
        /// The level asking (always `TACTICAL`).
        from_level: Level,
        /// Who asked.
        requested_by: String,
        /// The handover the request starts; absent from requests recorded before it was
        /// written here (their handover id is derived from the request's commit id alone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handover_id: Option<Uuid>,
    },
    /// Command passed to the CMC through an accepted handover.
    IncidentCommandTransferred {
        /// The accepted handover.
        handover_id: Uuid,
        /// The crisis it activated.
        crisis_id: Uuid,
        /// `TACTICAL`.
        from_level: Level,
        /// `STRATEGIC`.
        to_level: Level,
        /// When command passed.
        effective_at: DateTime<Utc>,
    },
    /// The CMC declined the handover; the request is closed.
    CrisisEscalationDeclined {
        /// The declined handover.
        handover_id: Uuid,
        /// The CMC's reason.
        reason: String,
        /// The level that keeps command (`TACTICAL`).
        command_stays_at: Level,
    },
    /// The outgoing side withdrew the handover; the request is closed.
    CrisisEscalationWithdrawn {
        /// The withdrawn handover.
        handover_id: Uuid,
        /// Why.
        reason: String,
        /// The level that keeps command (`TACTICAL`).
        command_stays_at: Level,
    },
    /// A decision taken in the incident, as logged (`information_basis` is empty: graded
    /// information is the CMC's).
    IncidentDecisionRecorded(Box<DecisionRecord>),
    /// A decision replaced by a later one; it stays on the record.
    IncidentDecisionSuperseded {
        /// The replaced decision.
        decision_id: Uuid,
        /// The decision replacing it.
        superseded_by: Uuid,
    },
    /// A decision amended: the amendment is added; the record is untouched.
    IncidentDecisionAmended {
        /// The decision.
        decision_id: Uuid,
        /// What changes.
        amendment: String,
        /// Why.
        reason: String,
        /// Who amended it.
        amended_by: String,
    },
    /// A decision reviewed.
    IncidentDecisionReviewed {
        /// The decision.
        decision_id: Uuid,
        /// What the review found.
        outcome: String,
        /// Who reviewed it.
        reviewed_by: String,
    },
    /// A register risk the incident realised.
    RiskLinked {
        /// The register's reference for the risk.
        risk_ref: String,
        /// Why this incident realised it.
        rationale: String,
        /// Who linked it.
        linked_by: String,
    },
    /// A risk link made in error, removed (the link stays on the record).
    RiskUnlinked {
        /// The risk's reference.
        risk_ref: String,
        /// Why the link was wrong.
        reason: String,
        /// Who removed it.
        unlinked_by: String,
    },
    /// The crisis that took command stood down; command returned.
    IncidentCommandReturned {
        /// The crisis.
        crisis_id: Uuid,
        /// The decision that stood it down.
        decision_id: Uuid,
        /// Who takes control next.
        handed_to: String,
        /// `STRATEGIC`.
        from_level: Level,
        /// `TACTICAL`.
        to_level: Level,
    },
}

impl DomainEvent for IncidentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::IncidentOpened { .. } => "IncidentOpened",
            Self::IncidentAcknowledged { .. } => "IncidentAcknowledged",
            Self::IncidentRoleAssigned { .. } => "IncidentRoleAssigned",
            Self::IncidentClassified { .. } => "IncidentClassified",
            Self::NoteAdded { .. } => "NoteAdded",
            Self::AuthorityNotified { .. } => "AuthorityNotified",
            Self::IncidentLevelChanged { .. } => "IncidentLevelChanged",
            Self::IncidentPhaseChanged { .. } => "IncidentPhaseChanged",
            Self::IncidentResolved { .. } => "IncidentResolved",
            Self::IncidentClosed { .. } => "IncidentClosed",
            Self::IncidentReopened { .. } => "IncidentReopened",
            Self::CrisisEscalationRequested { .. } => "CrisisEscalationRequested",
            Self::IncidentCommandTransferred { .. } => "IncidentCommandTransferred",
            Self::CrisisEscalationDeclined { .. } => "CrisisEscalationDeclined",
            Self::CrisisEscalationWithdrawn { .. } => "CrisisEscalationWithdrawn",
            Self::IncidentCommandReturned { .. } => "IncidentCommandReturned",
            Self::IncidentDecisionRecorded(_) => "IncidentDecisionRecorded",
            Self::IncidentDecisionSuperseded { .. } => "IncidentDecisionSuperseded",
            Self::IncidentDecisionAmended { .. } => "IncidentDecisionAmended",
            Self::IncidentDecisionReviewed { .. } => "IncidentDecisionReviewed",
            Self::RiskLinked { .. } => "RiskLinked",
            Self::RiskUnlinked { .. } => "RiskUnlinked",
        }
    }
}

/// The incident aggregate's state.
#[derive(Debug, Clone, Default)]
pub struct Incident {
    state: Option<IncidentState>,
}

/// What the rules need to know about an existing incident.
#[derive(Debug, Clone)]
pub struct IncidentState {
    /// Lifecycle status.
    pub status: IncidentStatus,
    /// Current command level.
    pub level: Level,
    /// Current phase, once one is set.
    pub phase: Option<Phase>,
    /// Impact.
    pub severity: Severity,
    /// Urgency.
    pub priority: Priority,
    /// Current role holders: (level, role, person).
    pub roles: Vec<(Level, Role, String)>,
    /// A crisis-escalation request is pending.
    pub escalation_requested: bool,
    /// The pending request's handover, when the request names it.
    pub pending_handover: Option<Uuid>,
    /// The pending request's reason (what its handover starts with).
    pub pending_reason: String,
    /// Who made the pending request.
    pub pending_requested_by: String,
    /// The crisis commanding the incident, while it is at `STRATEGIC`.
    pub crisis_id: Option<Uuid>,
    /// Alerts it was opened from.
    pub alert_ids: Vec<Uuid>,
    /// Its decision log: id → whether it is current (not superseded).
    pub decisions: HashMap<Uuid, bool>,
    /// The register risks it is linked to, in the order linked.
    pub risks: Vec<String>,
}

impl IncidentState {
    fn close_request(&mut self) {
        self.escalation_requested = false;
        self.pending_handover = None;
        self.pending_reason.clear();
        self.pending_requested_by.clear();
    }
}

impl Incident {
    /// The state, when the incident exists.
    pub fn state(&self) -> Option<&IncidentState> {
        self.state.as_ref()
    }
}

impl Aggregate for Incident {
    const TYPE: &'static str = "incident";
    type Command = IncidentCommand;
    type Event = IncidentEvent;

    fn decide(
        &self,
        command: &IncidentCommand,
        ctx: &Context,
    ) -> Result<Vec<IncidentEvent>, DomainError> {
        let Some(s) = &self.state else {
            return match command {
                IncidentCommand::Open {
                    title,
                    description,
                    severity,
                    priority,
                    alert_ids,
                } => {
                    if alert_ids.len() > Limits::ALERT_IDS {
                        return Err(DomainError::invalid(
                            "alert_ids",
                            format!(
                                "has {} entries, at most {} are allowed",
                                alert_ids.len(),
                                Limits::ALERT_IDS
                            ),
                        ));
                    }
                    if let Some(repeat) = alert_ids
                        .iter()
                        .enumerate()
                        .find_map(|(i, id)| alert_ids[..i].contains(id).then_some(id))
                    {
                        return Err(DomainError::invalid(
                            "alert_ids",
                            format!("names alert {repeat} more than once"),
                        ));
                    }
                    // An incident may be opened long after it began (the envelope keeps both
                    // times), but not before it happens.
                    ctx.check_not_future("occurred_at", ctx.occurred_at)?;
                    Ok(vec![IncidentEvent::IncidentOpened {
                        title: Text::required("title", title, Limits::TITLE)?,
                        description: Text::optional(
                            "description",
                            description,
                            Limits::DESCRIPTION,
                        )?,
                        severity: *severity,
                        priority: priority.unwrap_or_else(|| Priority::default_for(*severity)),
                        level: Level::Operational,
                        alert_ids: alert_ids.clone(),
                        opened_by: ctx.actor.clone(),
                    }])
                }
                _ => Err(DomainError::NotFound("incident".into())),
            };
        };
        let actor = ctx.actor.clone();
        if s.status == IncidentStatus::Closed && !matches!(command, IncidentCommand::Reopen { .. })
        {
            return Err(DomainError::precondition(
                "incident is closed; reopen it first",
            ));
        }
        let event = match command {
            IncidentCommand::Open { .. } => {
                return Err(DomainError::precondition("incident already exists"));
            }
            IncidentCommand::Acknowledge => {
                if s.status != IncidentStatus::Open {
                    return Err(DomainError::precondition(format!(
                        "only an open incident can be acknowledged; it is {}",
                        s.status.as_str()
                    )));
                }
                IncidentEvent::IncidentAcknowledged {
                    acknowledged_by: actor,
                }
            }
            IncidentCommand::AssignRole {
                role,
                person,
                level,
                effective_at,
            } => {
                let person = Text::required("person", person, Limits::PERSON)?;
                ctx.check_not_future("effective_at", *effective_at)?;
                if s.roles
                    .iter()
                    .any(|(l, r, p)| l == level && r == role && *p == person)
                {
                    return Err(DomainError::precondition(format!(
                        "{person} already holds {} at {}",
                        role.as_str(),
                        level.as_str()
                    )));
                }
                let replaces = (*role == Role::Commander)
                    .then(|| {
                        s.roles
                            .iter()
                            .find(|(l, r, _)| l == level && *r == Role::Commander)
                    })
                    .flatten()
                    .map(|(_, _, p)| p.clone());
                IncidentEvent::IncidentRoleAssigned {
                    role: *role,
                    person,
                    level: *level,
                    effective_at: *effective_at,
                    replaces,
                    assigned_by: actor,
                }
            }
            IncidentCommand::Classify {
                severity,
                priority,
                rationale,
            } => {
                let rationale = Text::required("rationale", rationale, Limits::RATIONALE)?;
                if *severity == s.severity && *priority == s.priority {
                    return Err(DomainError::precondition(
                        "classification unchanged: severity and priority are already as given",
                    ));
                }
                IncidentEvent::IncidentClassified {
                    severity: *severity,
                    priority: *priority,
                    previous_severity: s.severity,
                    previous_priority: s.priority,
                    rationale,
                    classified_by: actor,
                }
            }
            IncidentCommand::AddNote { text } => {
                ctx.check_occurred_at("occurred_at")?;
                IncidentEvent::NoteAdded {
                    text: Text::required("text", text, Limits::NOTE)?,
                    author: actor,
                }
            }
            IncidentCommand::NotifyAuthority {
                authority,
                reference,
                summary,
            } => {
                let authority = Text::required("authority", authority, Limits::PERSON)?;
                let reference = Text::optional("reference", reference, Limits::PERSON)?;
                let summary = Text::required("summary", summary, Limits::RATIONALE)?;
                ctx.check_occurred_at("occurred_at")?;
                IncidentEvent::AuthorityNotified {
                    authority,
                    reference,
                    summary,
                    notified_by: actor,
                }
            }
            IncidentCommand::ChangeLevel { to, reason } => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                if *to == Level::Strategic {
                    return Err(DomainError::invalid(
                        "to",
                        "STRATEGIC is reached through a crisis-escalation request (the Resilience Handshake), not a level change",
                    ));
                }
                require_in_response(s)?;
                require_below_the_cmc(s, "the level changes")?;
                if *to == s.level {
                    return Err(DomainError::precondition(format!(
                        "incident is already at {}",
                        to.as_str()
                    )));
                }
                IncidentEvent::IncidentLevelChanged {
                    from: s.level,
                    to: *to,
                    reason,
                    decided_by: actor,
                }
            }
            IncidentCommand::ChangePhase { phase, reason } => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                require_in_response(s)?;
                if s.phase == Some(*phase) {
                    return Err(DomainError::precondition(format!(
                        "incident is already in {}",
                        phase.as_str()
                    )));
                }
                IncidentEvent::IncidentPhaseChanged {
                    from: s.phase,
                    to: *phase,
                    reason,
                    decided_by: actor,
                }
            }
            IncidentCommand::Resolve {
                resolution,
                just_culture,
            } => {
                let resolution = Text::required("resolution", resolution, Limits::RATIONALE)?;
                let just_culture = match just_culture {
                    Some(jc) => Some(JustCulture {
                        determination: jc.determination,
                        rationale: Text::required(
                            "determination_rationale",
                            &jc.rationale,
                            Limits::RATIONALE,
                        )?,
                    }),
                    None => None,
                };
                if s.status == IncidentStatus::Resolved {
                    return Err(DomainError::precondition("incident is already resolved"));
                }
                require_in_response(s)?;
                require_below_the_cmc(s, "the incident is resolved")?;
                IncidentEvent::IncidentResolved {
                    resolution,
                    just_culture,
                    resolved_by: actor,
                }
            }
            IncidentCommand::Close { note } => {
                let note = Text::optional("note", note, Limits::RATIONALE)?;
                if s.status != IncidentStatus::Resolved {
                    return Err(DomainError::precondition(format!(
                        "only a resolved incident can be closed; it is {}",
                        s.status.as_str()
                    )));
                }
                IncidentEvent::IncidentClosed {
                    note,
                    closed_by: actor,
                }
            }
            IncidentCommand::Reopen { reason } => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                if !matches!(s.status, IncidentStatus::Resolved | IncidentStatus::Closed) {
                    return Err(DomainError::precondition(format!(
                        "only a resolved or closed incident can be reopened; it is {}",
                        s.status.as_str()
                    )));
                }
                IncidentEvent::IncidentReopened {
                    reason,
                    reopened_by: actor,
                }
            }
            IncidentCommand::RequestCrisisEscalation {
                reason,
                criteria_met,
                handover_id,
            } => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                let criteria_met = Text::optional("criteria_met", criteria_met, Limits::RATIONALE)?;
                require_in_response(s)?;
                if s.level != Level::Tactical {
                    return Err(DomainError::precondition(format!(
                        "crisis escalation is requested from TACTICAL; the incident is at {}",
                        s.level.as_str()
                    )));
                }
                if s.escalation_requested {
                    return Err(DomainError::precondition(
                        "a crisis-escalation request is already pending",
                    ));
                }
                IncidentEvent::CrisisEscalationRequested {
                    reason,
                    criteria_met,
                    from_level: s.level,
                    requested_by: actor,
                    handover_id: Some(*handover_id),
                }
            }
            IncidentCommand::EnterStrategic {
                handover_id,
                crisis_id,
                effective_at,
            } => {
                require_pending_escalation(s, *handover_id)?;
                IncidentEvent::IncidentCommandTransferred {
                    handover_id: *handover_id,
                    crisis_id: *crisis_id,
                    from_level: s.level,
                    to_level: Level::Strategic,
                    effective_at: *effective_at,
                }
            }
            IncidentCommand::CloseDeclinedEscalation {
                handover_id,
                reason,
            } => {
                require_pending_escalation(s, *handover_id)?;
                IncidentEvent::CrisisEscalationDeclined {
                    handover_id: *handover_id,
                    reason: Text::required("reason", reason, Limits::RATIONALE)?,
                    command_stays_at: s.level,
                }
            }
            IncidentCommand::CloseWithdrawnEscalation {
                handover_id,
                reason,
            } => {
                require_pending_escalation(s, *handover_id)?;
                IncidentEvent::CrisisEscalationWithdrawn {
                    handover_id: *handover_id,
                    reason: Text::required("reason", reason, Limits::RATIONALE)?,
                    command_stays_at: s.level,
                }
            }
            IncidentCommand::RecordDecision(d) => {
                ctx.check_occurred_at("occurred_at")?;
                require_someone_in_charge(s)?;
                if s.decisions.contains_key(&d.decision_id) {
                    return Err(DomainError::precondition(format!(
                        "decision {} is already recorded",
                        d.decision_id
                    )));
                }
                if !d.information.is_empty() {
                    return Err(DomainError::invalid(
                        "information_ids",
                        "an incident has no graded information items: decisions resting on them are logged in the crisis",
                    ));
                }
                if d.level == Level::Strategic {
                    return Err(DomainError::invalid(
                        "level",
                        "strategic decisions are the CMC's and are logged in the crisis; an incident's decisions are OPERATIONAL or TACTICAL",
                    ));
                }
                if let Some(old) = d.supersedes {
                    current_decision(&s.decisions, old, "supersedes", "incident")?;
                }
                let record = decision_record(d, Vec::new(), ctx)?;
                let mut events = vec![IncidentEvent::IncidentDecisionRecorded(Box::new(record))];
                if let Some(old) = d.supersedes {
                    events.push(IncidentEvent::IncidentDecisionSuperseded {
                        decision_id: old,
                        superseded_by: d.decision_id,
                    });
                }
                return Ok(events);
            }
            IncidentCommand::AmendDecision {
                decision_id,
                amendment,
                reason,
            } => {
                ctx.check_occurred_at("occurred_at")?;
                current_decision(&s.decisions, *decision_id, "decision_id", "incident")?;
                IncidentEvent::IncidentDecisionAmended {
                    decision_id: *decision_id,
                    amendment: Text::required("amendment", amendment, Limits::RATIONALE)?,
                    reason: Text::required("reason", reason, Limits::RATIONALE)?,
                    amended_by: actor,
                }
            }
            IncidentCommand::ReviewDecision {
                decision_id,
                outcome,
            } => {
                ctx.check_occurred_at("occurred_at")?;
                if !s.decisions.contains_key(decision_id) {
                    return Err(DomainError::invalid(
                        "decision_id",
                        format!("no decision {decision_id} in this incident"),
                    ));
                }
                IncidentEvent::IncidentDecisionReviewed {
                    decision_id: *decision_id,
                    outcome: Text::required("outcome", outcome, Limits::RATIONALE)?,
                    reviewed_by: actor,
                }
            }
            IncidentCommand::LinkRisk {
                risk_ref,
                rationale,
            } => {
                let risk_ref = risk_reference("risk_ref", risk_ref)?;
                let rationale = Text::required("rationale", rationale, Limits::RATIONALE)?;
                if s.risks.contains(&risk_ref) {
                    return Err(DomainError::precondition(format!(
                        "risk {risk_ref} is already linked to this incident"
                    )));
                }
                if s.risks.len() >= Limits::RISKS {
                    return Err(DomainError::precondition(format!(
                        "the incident is linked to {} risks, the most allowed",
                        Limits::RISKS
                    )));
                }
                IncidentEvent::RiskLinked {
                    risk_ref,
                    rationale,
                    linked_by: actor,
                }
            }
            IncidentCommand::UnlinkRisk { risk_ref, reason } => {
                let risk_ref = risk_reference("risk_ref", risk_ref)?;
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                if !s.risks.contains(&risk_ref) {
                    return Err(DomainError::invalid(
                        "risk_ref",
                        format!("risk {risk_ref} is not linked to this incident"),
                    ));
                }
                IncidentEvent::RiskUnlinked {
                    risk_ref,
                    reason,
                    unlinked_by: actor,
                }
            }
            IncidentCommand::ReturnFromStrategic {
                crisis_id,
                decision_id,
                handed_to,
            } => {
                if s.level != Level::Strategic || s.crisis_id != Some(*crisis_id) {
                    return Err(DomainError::precondition(format!(
                        "crisis {crisis_id} does not command this incident"
                    )));
                }
                IncidentEvent::IncidentCommandReturned {
                    crisis_id: *crisis_id,
                    decision_id: *decision_id,
                    handed_to: Text::required("handed_to", handed_to, Limits::PERSON)?,
                    from_level: Level::Strategic,
                    to_level: Level::Tactical,
                }
            }
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &IncidentEvent) {
        if let IncidentEvent::IncidentOpened {
            severity,
            priority,
            level,
            alert_ids,
            ..
        } = event
        {
            self.state = Some(IncidentState {
                status: IncidentStatus::Open,
                level: *level,
                phase: None,
                severity: *severity,
                priority: *priority,
                roles: Vec::new(),
                escalation_requested: false,
                pending_handover: None,
                pending_reason: String::new(),
                pending_requested_by: String::new(),
                crisis_id: None,
                alert_ids: alert_ids.clone(),
                decisions: HashMap::new(),
                risks: Vec::new(),
            });
            return;
        }
        let Some(s) = &mut self.state else { return };
        match event {
            IncidentEvent::IncidentOpened { .. }
            | IncidentEvent::NoteAdded { .. }
            | IncidentEvent::AuthorityNotified { .. } => {}
            IncidentEvent::IncidentAcknowledged { .. } => s.status = IncidentStatus::Acknowledged,
            IncidentEvent::IncidentRoleAssigned {
                role,
                person,
                level,
                ..
            } => {
                if *role == Role::Commander {
                    s.roles
                        .retain(|(l, r, _)| !(l == level && *r == Role::Commander));
                }
                s.roles.push((*level, *role, person.clone()));
            }
            IncidentEvent::IncidentClassified {
                severity, priority, ..
            } => {
                s.severity = *severity;
                s.priority = *priority;
            }
            IncidentEvent::IncidentLevelChanged { to, .. } => {
                s.level = *to;
                s.status = IncidentStatus::Responding;
            }
            IncidentEvent::IncidentPhaseChanged { to, .. } => {
                s.phase = Some(*to);
                s.status = IncidentStatus::Responding;
            }
            IncidentEvent::IncidentResolved { .. } => s.status = IncidentStatus::Resolved,
            IncidentEvent::IncidentClosed { .. } => s.status = IncidentStatus::Closed,
            IncidentEvent::IncidentReopened { .. } => s.status = IncidentStatus::Responding,
            IncidentEvent::CrisisEscalationRequested {
                reason,
                handover_id,
                requested_by,
                ..
            } => {
                s.escalation_requested = true;
                s.pending_handover = *handover_id;
                s.pending_reason = reason.clone();
                s.pending_requested_by = requested_by.clone();
                s.status = IncidentStatus::Responding;
            }
            IncidentEvent::IncidentCommandTransferred {
                to_level,
                crisis_id,
                ..
            } => {
                s.close_request();
                s.level = *to_level;
                s.crisis_id = Some(*crisis_id);
                s.status = IncidentStatus::Responding;
            }
            IncidentEvent::CrisisEscalationDeclined { .. }
            | IncidentEvent::CrisisEscalationWithdrawn { .. } => s.close_request(),
            IncidentEvent::IncidentCommandReturned { to_level, .. } => {
                s.level = *to_level;
                s.crisis_id = None;
            }
            IncidentEvent::IncidentDecisionRecorded(d) => {
                s.decisions.insert(d.decision_id, true);
            }
            IncidentEvent::IncidentDecisionSuperseded { decision_id, .. } => {
                s.decisions.insert(*decision_id, false);
            }
            IncidentEvent::IncidentDecisionAmended { .. }
            | IncidentEvent::IncidentDecisionReviewed { .. } => {}
            IncidentEvent::RiskLinked { risk_ref, .. } => s.risks.push(risk_ref.clone()),
            IncidentEvent::RiskUnlinked { risk_ref, .. } => s.risks.retain(|r| r != risk_ref),
        }
    }

    fn exists(&self) -> bool {
        self.state.is_some()
    }
}

/// A pending crisis-escalation request, answered through `handover_id`: the request's own
/// handover (an older handover's answer never closes a newer request).
fn require_pending_escalation(s: &IncidentState, handover_id: Uuid) -> Result<(), DomainError> {
    if !s.escalation_requested {
        return Err(DomainError::precondition(
            "no crisis-escalation request is pending for this incident",
        ));
    }
    match s.pending_handover {
        Some(pending) if pending != handover_id => Err(DomainError::precondition(format!(
            "handover {handover_id} does not answer the pending request (its handover is {pending})"
        ))),
        _ => Ok(()),
    }
}

/// Neither a pending crisis-escalation request nor the CMC's command: `what` is for the
/// incident's own levels to do.
fn require_below_the_cmc(s: &IncidentState, what: &str) -> Result<(), DomainError> {
    if s.escalation_requested {
        return Err(DomainError::precondition(format!(
            "a crisis-escalation request is pending: the handover is accepted, declined or withdrawn before {what}"
        )));
    }
    if s.level == Level::Strategic {
        return Err(DomainError::precondition(format!(
            "the CMC commands this incident: command returns when the crisis stands down, and {what} then"
        )));
    }
    Ok(())
}

/// A risk register's reference: trimmed, 1 to [`Limits::RISK_REF`] characters, no line break
/// or other control character (it is a key: links, counts and filters match it exactly,
/// case included).
pub fn risk_reference(field: &str, value: &str) -> Result<String, DomainError> {
    let r = Text::required(field, value, Limits::RISK_REF)?;
    if r.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(r)
}

/// Somebody has taken the incident (acknowledged it): decisions are theirs to log.
fn require_someone_in_charge(s: &IncidentState) -> Result<(), DomainError> {
    if s.status == IncidentStatus::Open {
        return Err(DomainError::precondition("acknowledge the incident first"));
    }
    Ok(())
}

fn require_in_response(s: &IncidentState) -> Result<(), DomainError> {
    match s.status {
        IncidentStatus::Acknowledged | IncidentStatus::Responding => Ok(()),
        IncidentStatus::Open => Err(DomainError::precondition("acknowledge the incident first")),
        other => Err(DomainError::precondition(format!(
            "incident is {}; reopen it first",
            other.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JustCultureDetermination;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    fn ctx() -> Context {
        Context::now("duty-manager", now())
    }

    fn given(events: &[IncidentEvent]) -> Incident {
        let mut i = Incident::default();
        for e in events {
            i.evolve(e);
        }
        i
    }

    fn when(i: &Incident, c: IncidentCommand) -> Result<Vec<IncidentEvent>, DomainError> {
        i.decide(&c, &ctx())
    }

    #[test]
    fn payloads_are_the_tagged_serializations_payload_field() {
        crate::assert_payload_is_the_tagged_field(&opened());
        crate::assert_payload_is_the_tagged_field(&IncidentEvent::IncidentAcknowledged {
            acknowledged_by: "duty \"manager\"".into(),
        });
    }

    fn opened() -> IncidentEvent {
        IncidentEvent::IncidentOpened {
            title: "Ransomware on file server".into(),
            description: String::new(),
            severity: Severity::High,
            priority: Priority::P2,
            level: Level::Operational,
            alert_ids: vec![],
            opened_by: "soc".into(),
        }
    }

    fn acked() -> IncidentEvent {
        IncidentEvent::IncidentAcknowledged {
            acknowledged_by: "duty-manager".into(),
        }
    }

    fn to_tactical() -> IncidentEvent {
        IncidentEvent::IncidentLevelChanged {
            from: Level::Operational,
            to: Level::Tactical,
            reason: "spreading".into(),
            decided_by: "duty-manager".into(),
        }
    }

    fn resolved() -> IncidentEvent {
        IncidentEvent::IncidentResolved {
            resolution: "restored".into(),
            just_culture: None,
            resolved_by: "x".into(),
        }
    }

    fn closed() -> IncidentEvent {
        IncidentEvent::IncidentClosed {
            note: String::new(),
            closed_by: "x".into(),
        }
    }

    fn precondition(r: Result<Vec<IncidentEvent>, DomainError>) {
        assert!(
            matches!(r, Err(DomainError::Precondition(_))),
            "expected a precondition failure, got {r:?}"
        );
    }

    fn invalid(r: Result<Vec<IncidentEvent>, DomainError>, name: &str) {
        assert!(
            matches!(&r, Err(DomainError::Invalid { field, .. }) if field == name),
            "expected {name} to be invalid, got {r:?}"
        );
    }

    fn open_cmd(priority: Option<Priority>) -> IncidentCommand {
        IncidentCommand::Open {
            title: " Ransomware on file server ".into(),
            description: String::new(),
            severity: Severity::High,
            priority,
            alert_ids: vec![],
        }
    }

    #[test]
    fn open_starts_at_operational_with_priority_from_severity() {
        let events = when(&given(&[]), open_cmd(None)).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::IncidentOpened {
                title: "Ransomware on file server".into(),
                description: String::new(),
                severity: Severity::High,
                priority: Priority::P2,
                level: Level::Operational,
                alert_ids: vec![],
                opened_by: "duty-manager".into(),
            }]
        );
        let i = given(&events);
        assert_eq!(i.state().unwrap().status, IncidentStatus::Open);
    }

    #[test]
    fn open_needs_a_title_and_happens_once() {
        let cmd = IncidentCommand::Open {
            title: "".into(),
            description: String::new(),
            severity: Severity::Low,
            priority: None,
            alert_ids: vec![],
        };
        invalid(when(&given(&[]), cmd), "title");
        precondition(when(&given(&[opened()]), open_cmd(Some(Priority::P1))));
    }

    #[test]
    fn commands_on_an_unknown_incident_are_not_found() {
        assert!(matches!(
            when(&given(&[]), IncidentCommand::Acknowledge),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn acknowledge_only_once() {
        let events = when(&given(&[opened()]), IncidentCommand::Acknowledge).unwrap();
        assert_eq!(events, vec![acked()]);
        precondition(when(
            &given(&[opened(), acked()]),
            IncidentCommand::Acknowledge,
        ));
    }

    #[test]
    fn level_change_needs_acknowledgement_a_reason_and_a_different_level() {
        let change = |to, reason: &str| IncidentCommand::ChangeLevel {
            to,
            reason: reason.into(),
        };
        precondition(when(
            &given(&[opened()]),
            change(Level::Tactical, "spreading"),
        ));
        invalid(
            when(&given(&[opened(), acked()]), change(Level::Tactical, "")),
            "reason",
        );
        precondition(when(
            &given(&[opened(), acked()]),
            change(Level::Operational, "why"),
        ));
        let events = when(
            &given(&[opened(), acked()]),
            change(Level::Tactical, "spreading"),
        )
        .unwrap();
        assert_eq!(events, vec![to_tactical()]);
        let i = given(&[opened(), acked(), to_tactical()]);
        assert_eq!(i.state().unwrap().status, IncidentStatus::Responding);
        assert_eq!(i.state().unwrap().level, Level::Tactical);
    }

    #[test]
    fn strategic_is_never_a_level_change() {
        let r = when(
            &given(&[opened(), acked(), to_tactical()]),
            IncidentCommand::ChangeLevel {
                to: Level::Strategic,
                reason: "crisis".into(),
            },
        );
        invalid(r, "to");
    }

    #[test]
    fn crisis_escalation_is_requested_from_tactical_once() {
        let req = || IncidentCommand::RequestCrisisEscalation {
            reason: "business-critical systems down".into(),
            criteria_met: "C1".into(),
            handover_id: Uuid::from_u128(5),
        };
        precondition(when(&given(&[opened(), acked()]), req()));
        let events = when(&given(&[opened(), acked(), to_tactical()]), req()).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::CrisisEscalationRequested {
                reason: "business-critical systems down".into(),
                criteria_met: "C1".into(),
                from_level: Level::Tactical,
                requested_by: "duty-manager".into(),
                handover_id: Some(Uuid::from_u128(5)),
            }]
        );
        let pending = given(&[opened(), acked(), to_tactical(), events[0].clone()]);
        precondition(when(&pending, req()));
        precondition(when(
            &pending,
            IncidentCommand::ChangeLevel {
                to: Level::Operational,
                reason: "contained".into(),
            },
        ));
    }

    fn requested() -> IncidentEvent {
        IncidentEvent::CrisisEscalationRequested {
            reason: "business-critical systems down".into(),
            criteria_met: "C1".into(),
            from_level: Level::Tactical,
            requested_by: "duty-manager".into(),
            handover_id: Some(Uuid::from_u128(5)),
        }
    }

    fn enter_strategic() -> IncidentCommand {
        IncidentCommand::EnterStrategic {
            handover_id: Uuid::from_u128(5),
            crisis_id: Uuid::from_u128(6),
            effective_at: now(),
        }
    }

    #[test]
    fn an_accepted_handover_passes_command_to_strategic_and_only_stand_down_returns_it() {
        precondition(when(
            &given(&[opened(), acked(), to_tactical()]),
            enter_strategic(),
        ));
        let pending = given(&[opened(), acked(), to_tactical(), requested()]);
        let events = when(&pending, enter_strategic()).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::IncidentCommandTransferred {
                handover_id: Uuid::from_u128(5),
                crisis_id: Uuid::from_u128(6),
                from_level: Level::Tactical,
                to_level: Level::Strategic,
                effective_at: now(),
            }]
        );
        let strategic = given(&[
            opened(),
            acked(),
            to_tactical(),
            requested(),
            events[0].clone(),
        ]);
        let s = strategic.state().unwrap();
        assert_eq!((s.level, s.escalation_requested), (Level::Strategic, false));
        precondition(when(
            &strategic,
            IncidentCommand::ChangeLevel {
                to: Level::Tactical,
                reason: "feels calmer".into(),
            },
        ));
        precondition(when(&strategic, enter_strategic()));
        // Only the crisis that took command gives it back.
        precondition(when(&strategic, return_from(Uuid::from_u128(7))));
        invalid(
            when(
                &strategic,
                IncidentCommand::ReturnFromStrategic {
                    crisis_id: Uuid::from_u128(6),
                    decision_id: Uuid::from_u128(8),
                    handed_to: " ".into(),
                },
            ),
            "handed_to",
        );
        let back = when(&strategic, return_from(Uuid::from_u128(6))).unwrap();
        assert_eq!(
            back,
            vec![IncidentEvent::IncidentCommandReturned {
                crisis_id: Uuid::from_u128(6),
                decision_id: Uuid::from_u128(8),
                handed_to: "tactical commander".into(),
                from_level: Level::Strategic,
                to_level: Level::Tactical,
            }]
        );
        let returned = given(&[
            opened(),
            acked(),
            to_tactical(),
            requested(),
            events[0].clone(),
            back[0].clone(),
        ]);
        let s = returned.state().unwrap();
        assert_eq!(
            (s.level, s.crisis_id, s.status),
            (Level::Tactical, None, IncidentStatus::Responding)
        );
        // Given back once; then the incident is TACTICAL's again, and may escalate again.
        precondition(when(&returned, return_from(Uuid::from_u128(6))));
        assert!(
            when(
                &returned,
                IncidentCommand::RequestCrisisEscalation {
                    reason: "ransomware back".into(),
                    criteria_met: String::new(),
                    handover_id: Uuid::from_u128(5),
                }
            )
            .is_ok()
        );
    }

    fn return_from(crisis_id: Uuid) -> IncidentCommand {
        IncidentCommand::ReturnFromStrategic {
            crisis_id,
            decision_id: Uuid::from_u128(8),
            handed_to: "tactical commander".into(),
        }
    }

    fn strategic() -> Vec<IncidentEvent> {
        vec![
            opened(),
            acked(),
            to_tactical(),
            requested(),
            IncidentEvent::IncidentCommandTransferred {
                handover_id: Uuid::from_u128(5),
                crisis_id: Uuid::from_u128(6),
                from_level: Level::Tactical,
                to_level: Level::Strategic,
                effective_at: now(),
            },
        ]
    }

    #[test]
    fn an_incident_under_no_crisis_is_given_back_by_none() {
        for history in [
            vec![opened(), acked()],
            vec![opened(), acked(), to_tactical()],
            vec![opened(), acked(), to_tactical(), requested()],
        ] {
            precondition(when(&given(&history), return_from(Uuid::from_u128(6))));
        }
    }

    fn resolve(resolution: &str) -> IncidentCommand {
        IncidentCommand::Resolve {
            resolution: resolution.into(),
            just_culture: None,
        }
    }

    #[test]
    fn resolving_needs_acknowledgement_no_pending_request_and_command_below_the_cmc() {
        precondition(when(&given(&[opened()]), resolve("false positive")));
        precondition(when(
            &given(&[opened(), acked(), to_tactical(), requested()]),
            resolve("contained before the CMC answered"),
        ));
        precondition(when(&given(&strategic()), resolve("restored")));
        // Declined or given back, the incident is resolved as usual.
        let declined = IncidentEvent::CrisisEscalationDeclined {
            handover_id: Uuid::from_u128(5),
            reason: "within tactical capability".into(),
            command_stays_at: Level::Tactical,
        };
        let after_decline = given(&[opened(), acked(), to_tactical(), requested(), declined]);
        assert!(when(&after_decline, resolve("restored")).is_ok());
        let mut history = strategic();
        history.extend(when(&given(&history), return_from(Uuid::from_u128(6))).unwrap());
        assert!(when(&given(&history), resolve("restored")).is_ok());
        // Resolving from ACKNOWLEDGED and from RESPONDING.
        assert!(when(&given(&[opened(), acked()]), resolve("false positive")).is_ok());
        assert!(
            when(
                &given(&[opened(), acked(), to_tactical()]),
                resolve("restored")
            )
            .is_ok()
        );
    }

    #[test]
    fn open_keeps_an_explicit_priority() {
        let events = when(&given(&[]), open_cmd(Some(Priority::P1))).unwrap();
        assert!(matches!(
            &events[0],
            IncidentEvent::IncidentOpened {
                severity: Severity::High,
                priority: Priority::P1,
                ..
            }
        ));
    }

    #[test]
    fn open_refuses_too_many_or_repeated_alerts_and_overlong_text() {
        let open =
            |title: String, description: String, alert_ids: Vec<Uuid>| IncidentCommand::Open {
                title,
                description,
                severity: Severity::High,
                priority: None,
                alert_ids,
            };
        let ids = |n: u128| (1..=n).map(Uuid::from_u128).collect::<Vec<_>>();
        let title = || "Ransomware".to_string();
        invalid(
            when(
                &given(&[]),
                open(title(), String::new(), ids(Limits::ALERT_IDS as u128 + 1)),
            ),
            "alert_ids",
        );
        assert!(
            when(
                &given(&[]),
                open(title(), String::new(), ids(Limits::ALERT_IDS as u128))
            )
            .is_ok()
        );
        let mut repeated = ids(3);
        repeated.push(Uuid::from_u128(2));
        invalid(
            when(&given(&[]), open(title(), String::new(), repeated)),
            "alert_ids",
        );
        invalid(
            when(
                &given(&[]),
                open("t".repeat(Limits::TITLE + 1), String::new(), vec![]),
            ),
            "title",
        );
        invalid(
            when(
                &given(&[]),
                open(title(), "d".repeat(Limits::DESCRIPTION + 1), vec![]),
            ),
            "description",
        );
    }

    #[test]
    fn an_incident_does_not_occur_in_the_future_but_may_be_opened_late() {
        let mut future = ctx();
        future.occurred_at = now() + Duration::minutes(10);
        assert!(
            matches!(given(&[]).decide(&open_cmd(None), &future), Err(DomainError::Invalid { field, .. }) if field == "occurred_at")
        );
        let mut skewed = ctx();
        skewed.occurred_at = now() + Duration::minutes(4);
        assert!(given(&[]).decide(&open_cmd(None), &skewed).is_ok());
        let mut earlier = ctx();
        earlier.occurred_at = now() - Duration::days(2);
        assert!(given(&[]).decide(&open_cmd(None), &earlier).is_ok());
    }

    #[test]
    fn every_command_on_an_unknown_incident_is_not_found() {
        let unknown = given(&[]);
        for command in [
            IncidentCommand::Acknowledge,
            IncidentCommand::AddNote { text: "x".into() },
            resolve("x"),
            IncidentCommand::Close { note: "x".into() },
            IncidentCommand::Reopen { reason: "x".into() },
            enter_strategic(),
            return_from(Uuid::from_u128(6)),
            IncidentCommand::ChangeLevel {
                to: Level::Tactical,
                reason: "x".into(),
            },
        ] {
            assert!(
                matches!(
                    when(&unknown, command.clone()),
                    Err(DomainError::NotFound(_))
                ),
                "{command:?}"
            );
        }
    }

    #[test]
    fn an_incident_taken_or_finished_is_not_acknowledged_again() {
        precondition(when(
            &given(&[opened(), acked(), to_tactical()]),
            IncidentCommand::Acknowledge,
        ));
        precondition(when(
            &given(&[opened(), acked(), resolved()]),
            IncidentCommand::Acknowledge,
        ));
    }

    #[test]
    fn roles_are_held_once_commanders_are_per_level_and_none_starts_in_the_future() {
        let assign = |role, person: &str, level| IncidentCommand::AssignRole {
            role,
            person: person.into(),
            level,
            effective_at: now(),
        };
        let scribe = when(
            &given(&[opened()]),
            assign(Role::Scribe, "cy", Level::Operational),
        )
        .unwrap();
        let i = given(&[opened(), scribe[0].clone()]);
        precondition(when(&i, assign(Role::Scribe, "cy", Level::Operational)));
        // Several people may hold a role other than commander at a level.
        assert!(when(&i, assign(Role::Scribe, "di", Level::Operational)).is_ok());
        // A commander at TACTICAL replaces nobody at OPERATIONAL.
        let bronze = when(&i, assign(Role::Commander, "ana", Level::Operational)).unwrap();
        let i = given(&[opened(), scribe[0].clone(), bronze[0].clone()]);
        let silver = when(&i, assign(Role::Commander, "bo", Level::Tactical)).unwrap();
        assert!(matches!(
            &silver[0],
            IncidentEvent::IncidentRoleAssigned { replaces: None, .. }
        ));
        let i = given(&[
            opened(),
            scribe[0].clone(),
            bronze[0].clone(),
            silver[0].clone(),
        ]);
        assert_eq!(
            i.state().unwrap().roles,
            vec![
                (Level::Operational, Role::Scribe, "cy".to_string()),
                (Level::Operational, Role::Commander, "ana".to_string()),
                (Level::Tactical, Role::Commander, "bo".to_string()),
            ]
        );
        invalid(
            when(
                &i,
                IncidentCommand::AssignRole {
                    role: Role::Commander,
                    person: "eve".into(),
                    level: Level::Tactical,
                    effective_at: now() + Duration::hours(6),
                },
            ),
            "effective_at",
        );
        assert!(
            when(
                &i,
                IncidentCommand::AssignRole {
                    role: Role::Commander,
                    person: "eve".into(),
                    level: Level::Tactical,
                    effective_at: now() - Duration::hours(6),
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn phases_need_a_reason_may_go_back_and_stop_at_resolution() {
        let phase = |p, reason: &str| IncidentCommand::ChangePhase {
            phase: p,
            reason: reason.into(),
        };
        let taken = given(&[opened(), acked()]);
        invalid(when(&taken, phase(Phase::Contain, " ")), "reason");
        let events = when(&taken, phase(Phase::Recover, "restoring")).unwrap();
        let recovering = given(&[opened(), acked(), events[0].clone()]);
        // Reinfection found while recovering: back to containment.
        let back = when(&recovering, phase(Phase::Contain, "reinfection")).unwrap();
        assert!(matches!(
            &back[0],
            IncidentEvent::IncidentPhaseChanged {
                from: Some(Phase::Recover),
                to: Phase::Contain,
                ..
            }
        ));
        precondition(when(
            &given(&[opened(), acked(), resolved()]),
            phase(Phase::Recover, "x"),
        ));
    }

    #[test]
    fn crisis_escalation_needs_a_reason_and_an_incident_in_response_below_the_cmc() {
        let req = |reason: &str| IncidentCommand::RequestCrisisEscalation {
            reason: reason.into(),
            criteria_met: String::new(),
            handover_id: Uuid::from_u128(5),
        };
        invalid(
            when(&given(&[opened(), acked(), to_tactical()]), req("")),
            "reason",
        );
        precondition(when(&given(&[opened()]), req("x")));
        precondition(when(
            &given(&[opened(), acked(), to_tactical(), resolved()]),
            req("x"),
        ));
        precondition(when(&given(&strategic()), req("again")));
    }

    #[test]
    fn a_resolved_incident_reopens_and_an_unresolved_one_does_not() {
        let reopen = || IncidentCommand::Reopen {
            reason: "reinfection".into(),
        };
        precondition(when(&given(&[opened()]), reopen()));
        let events = when(&given(&[opened(), acked(), resolved()]), reopen()).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::IncidentReopened {
                reason: "reinfection".into(),
                reopened_by: "duty-manager".into(),
            }]
        );
        let r = given(&[opened(), acked(), resolved(), events[0].clone()]);
        assert_eq!(r.state().unwrap().status, IncidentStatus::Responding);
        assert!(when(&r, resolve("cleaned again")).is_ok());
    }

    #[test]
    fn a_closing_note_has_a_limit() {
        let r = given(&[opened(), acked(), resolved()]);
        invalid(
            when(
                &r,
                IncidentCommand::Close {
                    note: "n".repeat(Limits::RATIONALE + 1),
                },
            ),
            "note",
        );
        assert!(
            when(
                &r,
                IncidentCommand::Close {
                    note: String::new()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn a_declined_handover_closes_the_request_and_command_stays_at_tactical() {
        let decline = |reason: &str| IncidentCommand::CloseDeclinedEscalation {
            handover_id: Uuid::from_u128(5),
            reason: reason.into(),
        };
        let pending = given(&[opened(), acked(), to_tactical(), requested()]);
        invalid(when(&pending, decline("")), "reason");
        let events = when(&pending, decline("within tactical capability")).unwrap();
        assert!(matches!(
            &events[..],
            [IncidentEvent::CrisisEscalationDeclined {
                command_stays_at: Level::Tactical,
                ..
            }]
        ));
        let after = given(&[
            opened(),
            acked(),
            to_tactical(),
            requested(),
            events[0].clone(),
        ]);
        assert!(!after.state().unwrap().escalation_requested);
        // A later request may follow; without one there is nothing to decline.
        precondition(when(&after, decline("again")));
        assert!(
            when(
                &after,
                IncidentCommand::RequestCrisisEscalation {
                    reason: "OT now affected".into(),
                    criteria_met: "C2".into(),
                    handover_id: Uuid::from_u128(5),
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn a_withdrawn_handover_closes_the_request_and_the_incident_is_resolved_at_tactical() {
        let withdraw = |reason: &str| IncidentCommand::CloseWithdrawnEscalation {
            handover_id: Uuid::from_u128(5),
            reason: reason.into(),
        };
        precondition(when(
            &given(&[opened(), acked(), to_tactical()]),
            withdraw("x"),
        ));
        let pending = given(&[opened(), acked(), to_tactical(), requested()]);
        invalid(when(&pending, withdraw("")), "reason");
        let events = when(&pending, withdraw("contained; no CMC needed")).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::CrisisEscalationWithdrawn {
                handover_id: Uuid::from_u128(5),
                reason: "contained; no CMC needed".into(),
                command_stays_at: Level::Tactical,
            }]
        );
        let after = given(&[
            opened(),
            acked(),
            to_tactical(),
            requested(),
            events[0].clone(),
        ]);
        let s = after.state().unwrap();
        assert_eq!((s.escalation_requested, s.level), (false, Level::Tactical));
        assert!(when(&after, resolve("contained at site A")).is_ok());
        precondition(when(&after, enter_strategic()));
    }

    #[test]
    fn only_the_pending_request_s_own_handover_answers_it() {
        let pending = given(&[opened(), acked(), to_tactical(), requested()]);
        let other = Uuid::from_u128(99);
        precondition(when(
            &pending,
            IncidentCommand::EnterStrategic {
                handover_id: other,
                crisis_id: Uuid::from_u128(6),
                effective_at: now(),
            },
        ));
        precondition(when(
            &pending,
            IncidentCommand::CloseDeclinedEscalation {
                handover_id: other,
                reason: "an old answer".into(),
            },
        ));
        precondition(when(
            &pending,
            IncidentCommand::CloseWithdrawnEscalation {
                handover_id: other,
                reason: "an old answer".into(),
            },
        ));
        let s = pending.state().unwrap();
        assert_eq!(
            (s.pending_handover, s.pending_reason.as_str()),
            (Some(Uuid::from_u128(5)), "business-critical systems down")
        );
        // A request recorded before requests named their handover is answered by any.
        let mut old = requested();
        if let IncidentEvent::CrisisEscalationRequested { handover_id, .. } = &mut old {
            *handover_id = None;
        }
        let legacy = given(&[opened(), acked(), to_tactical(), old]);
        assert!(
            when(
                &legacy,
                IncidentCommand::CloseDeclinedEscalation {
                    handover_id: other,
                    reason: "no".into(),
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn a_request_recorded_without_its_handover_still_reads() {
        let json = serde_json::json!({
            "type": "CrisisEscalationRequested",
            "payload": {"reason": "r", "criteria_met": "", "from_level": "TACTICAL", "requested_by": "x"}
        });
        let e: IncidentEvent = serde_json::from_value(json).unwrap();
        assert!(matches!(
            e,
            IncidentEvent::CrisisEscalationRequested {
                handover_id: None,
                ..
            }
        ));
    }

    #[test]
    fn a_notification_to_an_authority_names_it_says_what_was_reported_and_when() {
        let notify = |authority: &str, summary: &str| IncidentCommand::NotifyAuthority {
            authority: authority.into(),
            reference: " NCSC-2026-114 ".into(),
            summary: summary.into(),
        };
        let i = given(&[opened()]);
        invalid(when(&i, notify(" ", "early warning")), "authority");
        invalid(when(&i, notify("national CSIRT", "")), "summary");
        let events = when(&i, notify("national CSIRT", "NIS2 early warning")).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::AuthorityNotified {
                authority: "national CSIRT".into(),
                reference: "NCSC-2026-114".into(),
                summary: "NIS2 early warning".into(),
                notified_by: "duty-manager".into(),
            }]
        );
        // Sent hours ago and recorded now: the late entry says why.
        let mut late = ctx();
        late.occurred_at = now() - Duration::hours(5);
        assert!(
            matches!(i.decide(&notify("DPA", "GDPR art. 33"), &late), Err(DomainError::Invalid { field, .. }) if field == "late_reason")
        );
        late.late_reason = Some("phoned in from the data centre".into());
        assert!(i.decide(&notify("DPA", "GDPR art. 33"), &late).is_ok());
        // A resolved incident may still report (a final report); a closed one reopens first.
        assert!(
            when(
                &given(&[opened(), acked(), resolved()]),
                notify("national CSIRT", "final report")
            )
            .is_ok()
        );
        precondition(when(
            &given(&[opened(), acked(), resolved(), closed()]),
            notify("national CSIRT", "final report"),
        ));
    }

    #[test]
    fn classification_needs_a_rationale_and_a_change() {
        let classify = |s, p, r: &str| IncidentCommand::Classify {
            severity: s,
            priority: p,
            rationale: r.into(),
        };
        let i = given(&[opened()]);
        invalid(
            when(&i, classify(Severity::Critical, Priority::P1, "")),
            "rationale",
        );
        precondition(when(&i, classify(Severity::High, Priority::P2, "same")));
        let events = when(
            &i,
            classify(Severity::High, Priority::P1, "board meeting tomorrow"),
        )
        .unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::IncidentClassified {
                severity: Severity::High,
                priority: Priority::P1,
                previous_severity: Severity::High,
                previous_priority: Priority::P2,
                rationale: "board meeting tomorrow".into(),
                classified_by: "duty-manager".into(),
            }]
        );
    }

    #[test]
    fn one_commander_per_level_replacement_is_recorded() {
        let assign = |person: &str| IncidentCommand::AssignRole {
            role: Role::Commander,
            person: person.into(),
            level: Level::Tactical,
            effective_at: now(),
        };
        let first = when(&given(&[opened()]), assign("ana")).unwrap();
        assert!(matches!(
            &first[0],
            IncidentEvent::IncidentRoleAssigned { replaces: None, .. }
        ));
        let i = given(&[opened(), first[0].clone()]);
        precondition(when(&i, assign("ana")));
        let second = when(&i, assign("bo")).unwrap();
        assert!(
            matches!(&second[0], IncidentEvent::IncidentRoleAssigned { replaces: Some(p), .. } if p == "ana")
        );
        let i = given(&[opened(), first[0].clone(), second[0].clone()]);
        assert_eq!(
            i.state().unwrap().roles,
            vec![(Level::Tactical, Role::Commander, "bo".to_string())]
        );
        invalid(
            when(
                &i,
                IncidentCommand::AssignRole {
                    role: Role::Scribe,
                    person: " ".into(),
                    level: Level::Tactical,
                    effective_at: now(),
                },
            ),
            "person",
        );
    }

    #[test]
    fn phase_change_needs_acknowledgement_and_a_new_phase() {
        let phase = |p| IncidentCommand::ChangePhase {
            phase: p,
            reason: "isolated hosts".into(),
        };
        precondition(when(&given(&[opened()]), phase(Phase::Contain)));
        let events = when(&given(&[opened(), acked()]), phase(Phase::Contain)).unwrap();
        let i = given(&[opened(), acked(), events[0].clone()]);
        assert_eq!(i.state().unwrap().phase, Some(Phase::Contain));
        precondition(when(&i, phase(Phase::Contain)));
    }

    #[test]
    fn late_notes_need_a_reason() {
        let i = given(&[opened()]);
        let mut late = ctx();
        late.occurred_at = now() - Duration::hours(3);
        let note = IncidentCommand::AddNote {
            text: "call with ISP".into(),
        };
        assert!(
            matches!(i.decide(&note, &late), Err(DomainError::Invalid { field, .. }) if field == "late_reason")
        );
        late.late_reason = Some("written up after the call".into());
        assert!(i.decide(&note, &late).is_ok());
        invalid(
            when(&i, IncidentCommand::AddNote { text: "".into() }),
            "text",
        );
    }

    #[test]
    fn resolve_records_just_culture_and_only_resolved_incidents_close() {
        let i = given(&[opened(), acked()]);
        precondition(when(
            &i,
            IncidentCommand::Close {
                note: String::new(),
            },
        ));
        invalid(
            when(
                &i,
                IncidentCommand::Resolve {
                    resolution: "".into(),
                    just_culture: None,
                },
            ),
            "resolution",
        );
        let jc = JustCulture {
            determination: JustCultureDetermination::HonestError,
            rationale: "".into(),
        };
        invalid(
            when(
                &i,
                IncidentCommand::Resolve {
                    resolution: "phished".into(),
                    just_culture: Some(jc),
                },
            ),
            "determination_rationale",
        );
        let jc = JustCulture {
            determination: JustCultureDetermination::HonestError,
            rationale: "convincing lure".into(),
        };
        let events = when(
            &i,
            IncidentCommand::Resolve {
                resolution: "phished".into(),
                just_culture: Some(jc.clone()),
            },
        )
        .unwrap();
        assert!(
            matches!(&events[0], IncidentEvent::IncidentResolved { just_culture: Some(j), .. } if *j == jc)
        );
        let r = given(&[opened(), acked(), events[0].clone()]);
        precondition(when(
            &r,
            IncidentCommand::Resolve {
                resolution: "again".into(),
                just_culture: None,
            },
        ));
        assert!(
            when(
                &r,
                IncidentCommand::Close {
                    note: "done".into()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn a_closed_incident_only_reopens() {
        let c = given(&[opened(), acked(), to_tactical(), resolved(), closed()]);
        for command in [
            IncidentCommand::Acknowledge,
            IncidentCommand::AddNote { text: "x".into() },
            IncidentCommand::Close {
                note: String::new(),
            },
            IncidentCommand::AssignRole {
                role: Role::Scribe,
                person: "cy".into(),
                level: Level::Tactical,
                effective_at: now(),
            },
            IncidentCommand::Classify {
                severity: Severity::Low,
                priority: Priority::P4,
                rationale: "hindsight".into(),
            },
            IncidentCommand::ChangeLevel {
                to: Level::Operational,
                reason: "x".into(),
            },
            IncidentCommand::ChangePhase {
                phase: Phase::Recover,
                reason: "x".into(),
            },
            resolve("again"),
            IncidentCommand::RequestCrisisEscalation {
                reason: "x".into(),
                criteria_met: String::new(),
                handover_id: Uuid::from_u128(5),
            },
            enter_strategic(),
            IncidentCommand::CloseDeclinedEscalation {
                handover_id: Uuid::from_u128(5),
                reason: "x".into(),
            },
            return_from(Uuid::from_u128(6)),
        ] {
            assert!(
                matches!(when(&c, command.clone()), Err(DomainError::Precondition(_))),
                "{command:?}"
            );
        }
        invalid(
            when(&c, IncidentCommand::Reopen { reason: "".into() }),
            "reason",
        );
        let events = when(
            &c,
            IncidentCommand::Reopen {
                reason: "reinfection".into(),
            },
        )
        .unwrap();
        let r = given(&[opened(), acked(), resolved(), closed(), events[0].clone()]);
        assert_eq!(r.state().unwrap().status, IncidentStatus::Responding);
    }

    #[test]
    fn only_resolved_or_closed_incidents_reopen() {
        precondition(when(
            &given(&[opened(), acked()]),
            IncidentCommand::Reopen { reason: "x".into() },
        ));
    }

    #[test]
    fn a_resolved_incident_takes_no_level_change() {
        let r = given(&[opened(), acked(), resolved()]);
        precondition(when(
            &r,
            IncidentCommand::ChangeLevel {
                to: Level::Tactical,
                reason: "x".into(),
            },
        ));
    }

    fn decision_id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn decide(n: u128, supersedes: Option<u128>) -> DecisionInput {
        DecisionInput {
            decision_id: decision_id(n),
            decision: "Isolate the file server segment".into(),
            rationale: "encryption is spreading over SMB".into(),
            options: vec![crate::crisis::OptionConsidered {
                option: "monitor only".into(),
                why_not: "every hour costs another share".into(),
            }],
            information: vec![],
            assumptions: "backups are offline and clean".into(),
            risks_accepted: "finance cannot post invoices today".into(),
            powers: "IR playbook 3.1".into(),
            decision_maker: "tactical-commander".into(),
            level: Level::Tactical,
            joint_with: String::new(),
            review_by: Some(now() + Duration::hours(2)),
            supersedes: supersedes.map(decision_id),
        }
    }

    fn record(d: DecisionInput) -> IncidentCommand {
        IncidentCommand::RecordDecision(Box::new(d))
    }

    /// An acknowledged incident with decision 1 logged (and whatever `then` adds).
    fn with_decision(then: &[IncidentEvent]) -> Incident {
        let mut events = vec![opened(), acked()];
        let i = given(&events);
        events.extend(when(&i, record(decide(1, None))).unwrap());
        events.extend_from_slice(then);
        given(&events)
    }

    #[test]
    fn a_decision_is_logged_as_stated_by_whoever_records_it() {
        let events = when(&given(&[opened(), acked()]), record(decide(1, None))).unwrap();
        let [IncidentEvent::IncidentDecisionRecorded(r)] = events.as_slice() else {
            panic!("expected one decision, got {events:?}");
        };
        assert_eq!(r.decision_id, decision_id(1));
        assert_eq!(r.decision, "Isolate the file server segment");
        assert_eq!(r.options.len(), 1);
        assert_eq!(r.level, Level::Tactical);
        assert_eq!(r.recorded_by, "duty-manager");
        assert_eq!(r.decision_maker, "tactical-commander");
        assert!(r.information_basis.is_empty());
    }

    #[test]
    fn a_decision_waits_until_somebody_has_taken_the_incident() {
        precondition(when(&given(&[opened()]), record(decide(1, None))));
    }

    #[test]
    fn a_resolved_incident_still_logs_decisions_and_a_closed_one_does_not() {
        let i = given(&[opened(), acked(), resolved()]);
        assert!(when(&i, record(decide(1, None))).is_ok());
        let i = given(&[opened(), acked(), resolved(), closed()]);
        precondition(when(&i, record(decide(1, None))));
        let i = with_decision(&[resolved(), closed()]);
        let review = IncidentCommand::ReviewDecision {
            decision_id: decision_id(1),
            outcome: "sound".into(),
        };
        precondition(when(&i, review));
    }

    #[test]
    fn strategic_decisions_belong_to_the_crisis() {
        let mut d = decide(1, None);
        d.level = Level::Strategic;
        invalid(when(&given(&[opened(), acked()]), record(d)), "level");
        let mut d = decide(1, None);
        d.level = Level::Operational;
        assert!(when(&given(&[opened(), acked()]), record(d)).is_ok());
    }

    #[test]
    fn an_incident_decision_names_no_graded_information() {
        let mut d = decide(1, None);
        d.information = vec![decision_id(9)];
        invalid(
            when(&given(&[opened(), acked()]), record(d)),
            "information_ids",
        );
    }

    #[test]
    fn a_decision_id_is_logged_once() {
        precondition(when(&with_decision(&[]), record(decide(1, None))));
    }

    #[test]
    fn a_decision_needs_its_text_a_rationale_and_a_decision_maker() {
        let i = given(&[opened(), acked()]);
        for (field, blank) in [
            (
                "decision",
                (|d: &mut DecisionInput| d.decision.clear()) as fn(&mut DecisionInput),
            ),
            ("rationale", |d| d.rationale = "  ".into()),
            ("decision_maker", |d| d.decision_maker.clear()),
            ("options[0].why_not", |d| d.options[0].why_not.clear()),
        ] {
            let mut d = decide(1, None);
            blank(&mut d);
            invalid(when(&i, record(d)), field);
        }
    }

    #[test]
    fn a_decision_considers_a_bounded_number_of_options() {
        let mut d = decide(1, None);
        d.options = vec![d.options[0].clone(); Limits::OPTIONS + 1];
        invalid(when(&given(&[opened(), acked()]), record(d)), "options");
        let mut d = decide(1, None);
        d.options = vec![d.options[0].clone(); Limits::OPTIONS];
        assert!(when(&given(&[opened(), acked()]), record(d)).is_ok());
    }

    #[test]
    fn a_review_cannot_fall_due_before_the_decision() {
        let mut d = decide(1, None);
        d.review_by = Some(now() - Duration::minutes(1));
        invalid(when(&given(&[opened(), acked()]), record(d)), "review_by");
    }

    #[test]
    fn a_decision_logged_late_says_why() {
        let i = given(&[opened(), acked()]);
        let mut late = ctx();
        late.occurred_at = now() - Duration::hours(3);
        let mut d = decide(1, None);
        d.review_by = None;
        let c = record(d);
        assert!(
            matches!(i.decide(&c, &late), Err(DomainError::Invalid { field, .. }) if field == "late_reason")
        );
        late.late_reason = Some("logged after the bridge call".into());
        assert!(i.decide(&c, &late).is_ok());
    }

    #[test]
    fn a_new_decision_supersedes_a_current_one_which_stays_on_the_record() {
        let i = with_decision(&[]);
        let events = when(&i, record(decide(2, Some(1)))).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            IncidentEvent::IncidentDecisionSuperseded {
                decision_id: decision_id(1),
                superseded_by: decision_id(2),
            }
        );
        let i = with_decision(&events);
        assert_eq!(
            i.state().unwrap().decisions.get(&decision_id(1)),
            Some(&false)
        );
        // Superseded once: neither superseded again nor amended, but still reviewed.
        precondition(when(&i, record(decide(3, Some(1)))));
        precondition(when(
            &i,
            IncidentCommand::AmendDecision {
                decision_id: decision_id(1),
                amendment: "also isolate backups".into(),
                reason: "lateral movement seen".into(),
            },
        ));
        assert!(
            when(
                &i,
                IncidentCommand::ReviewDecision {
                    decision_id: decision_id(1),
                    outcome: "right call at the time".into(),
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn only_a_decision_of_this_incident_is_superseded_amended_or_reviewed() {
        let i = with_decision(&[]);
        invalid(when(&i, record(decide(2, Some(7)))), "supersedes");
        invalid(
            when(
                &i,
                IncidentCommand::AmendDecision {
                    decision_id: decision_id(7),
                    amendment: "x".into(),
                    reason: "y".into(),
                },
            ),
            "decision_id",
        );
        invalid(
            when(
                &i,
                IncidentCommand::ReviewDecision {
                    decision_id: decision_id(7),
                    outcome: "x".into(),
                },
            ),
            "decision_id",
        );
    }

    #[test]
    fn an_amendment_is_added_with_its_reason() {
        let i = with_decision(&[]);
        let amend = |reason: &str| IncidentCommand::AmendDecision {
            decision_id: decision_id(1),
            amendment: "keep the print server online".into(),
            reason: reason.into(),
        };
        invalid(when(&i, amend("")), "reason");
        assert_eq!(
            when(&i, amend("payroll run")).unwrap(),
            vec![IncidentEvent::IncidentDecisionAmended {
                decision_id: decision_id(1),
                amendment: "keep the print server online".into(),
                reason: "payroll run".into(),
                amended_by: "duty-manager".into(),
            }]
        );
    }

    #[test]
    fn decisions_go_on_while_the_cmc_commands() {
        let i = given(&[
            opened(),
            acked(),
            to_tactical(),
            IncidentEvent::CrisisEscalationRequested {
                reason: "x".into(),
                criteria_met: String::new(),
                from_level: Level::Tactical,
                requested_by: "tc".into(),
                handover_id: Some(decision_id(50)),
            },
            IncidentEvent::IncidentCommandTransferred {
                handover_id: decision_id(50),
                crisis_id: decision_id(51),
                from_level: Level::Tactical,
                to_level: Level::Strategic,
                effective_at: now(),
            },
        ]);
        assert!(when(&i, record(decide(1, None))).is_ok());
    }

    fn link(risk_ref: &str) -> IncidentCommand {
        IncidentCommand::LinkRisk {
            risk_ref: risk_ref.into(),
            rationale: "the supplier's VPN was the way in".into(),
        }
    }

    fn linked(risk_ref: &str) -> IncidentEvent {
        IncidentEvent::RiskLinked {
            risk_ref: risk_ref.into(),
            rationale: "x".into(),
            linked_by: "x".into(),
        }
    }

    #[test]
    fn a_realised_risk_is_linked_once_by_its_register_reference_with_why() {
        assert_eq!(
            when(&given(&[opened()]), link(" R-042 ")).unwrap(),
            vec![IncidentEvent::RiskLinked {
                risk_ref: "R-042".into(),
                rationale: "the supplier's VPN was the way in".into(),
                linked_by: "duty-manager".into(),
            }]
        );
        precondition(when(&given(&[opened(), linked("R-042")]), link("R-042")));
        invalid(when(&given(&[opened()]), link(" ")), "risk_ref");
        invalid(
            when(
                &given(&[opened()]),
                IncidentCommand::LinkRisk {
                    risk_ref: "R-042".into(),
                    rationale: String::new(),
                },
            ),
            "rationale",
        );
        invalid(
            when(&given(&[opened()]), link(&"R".repeat(Limits::RISK_REF + 1))),
            "risk_ref",
        );
        invalid(when(&given(&[opened()]), link("R-\n042")), "risk_ref");
    }

    #[test]
    fn an_incident_links_a_bounded_number_of_risks() {
        let mut events = vec![opened()];
        events.extend((0..Limits::RISKS).map(|n| linked(&format!("R-{n}"))));
        precondition(when(&given(&events), link("R-X")));
        events.pop();
        assert!(when(&given(&events), link("R-X")).is_ok());
    }

    #[test]
    fn a_link_made_in_error_is_removed_with_a_reason_and_may_be_made_again() {
        let i = given(&[opened(), linked("R-042")]);
        let unlink = |risk_ref: &str, reason: &str| IncidentCommand::UnlinkRisk {
            risk_ref: risk_ref.into(),
            reason: reason.into(),
        };
        invalid(when(&i, unlink("R-042", "")), "reason");
        invalid(when(&i, unlink("R-999", "wrong risk")), "risk_ref");
        let events = when(&i, unlink("R-042", "wrong register entry")).unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::RiskUnlinked {
                risk_ref: "R-042".into(),
                reason: "wrong register entry".into(),
                unlinked_by: "duty-manager".into(),
            }]
        );
        let i = given(&[opened(), linked("R-042"), events[0].clone()]);
        assert!(i.state().unwrap().risks.is_empty());
        assert!(when(&i, link("R-042")).is_ok());
    }

    #[test]
    fn a_closed_incident_is_neither_linked_nor_unlinked() {
        let i = given(&[opened(), acked(), linked("R-1"), resolved(), closed()]);
        precondition(when(&i, link("R-2")));
        precondition(when(
            &i,
            IncidentCommand::UnlinkRisk {
                risk_ref: "R-1".into(),
                reason: "x".into(),
            },
        ));
    }
}
