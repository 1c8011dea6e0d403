//! The Handover aggregate — the Resilience Handshake: the two-party transfer of command of a
//! TACTICAL incident to the Crisis Management Centre (STRATEGIC), with a written brief.
//!
//! started → drafting → offered → (clarification requested → offered)… → accepted | declined,
//! or withdrawn by the outgoing side before the CMC answers
//!
//! Rules (each has a given/when/then test below):
//! * a handover starts once, for one incident, from `TACTICAL`, with a reason (the incident
//!   refuses a second crisis-escalation request while one is pending, so an incident has at
//!   most one active handover);
//! * the outgoing commander drafts the brief as often as needed while drafting or answering a
//!   clarification; every section is bounded;
//! * only a complete brief is offered: every section written, the situation's "as at" time
//!   given (not in the future) and a confidence; a revised offer after a clarification
//!   answers the questions;
//! * two parties, never one person on both sides: whoever started, drafted or offered the
//!   handover acts for the outgoing side and never asks questions about it,
//!   accepts or declines it; whoever asked questions acts for the CMC and never drafts,
//!   offers or withdraws it;
//! * the CMC asks for clarification (at least one question), accepts, or declines;
//! * acceptance names the effective time of the transfer of command (not before the offer,
//!   not in the future: the incident is the CMC's from the acceptance on)
//!   and the scope of authority delegated, and is followed by the transfer of command as an
//!   event of its own; until then the outgoing commander keeps command;
//! * declining gives a reason; command stays at `TACTICAL`;
//! * until the CMC answers, the outgoing side may withdraw the handover with a reason (the
//!   situation settled, or the request was a mistake); command stays at `TACTICAL`, and the
//!   incident's request closes;
//! * an accepted, declined or withdrawn handover is closed: nothing changes it.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, Context, DomainError, DomainEvent, Level, Limits, Text};

/// How sure the outgoing commander is of the situation as briefed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Confidence {
    /// Much is unconfirmed.
    Low,
    /// The main facts are confirmed.
    Medium,
    /// Confirmed from several sources.
    High,
}

/// The handover brief (modelled on ICS 201 and transfer-of-command briefings). Every section
/// is required before the brief is offered; a draft may be incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HandoverBrief {
    /// The situation now.
    pub situation: String,
    /// The time the situation is described as at.
    pub situation_as_at: Option<DateTime<Utc>>,
    /// How sure the description is.
    pub confidence: Option<Confidence>,
    /// What happened so far.
    pub history: String,
    /// Objectives and the working strategy.
    pub objectives: String,
    /// Actions taken.
    pub actions_taken: String,
    /// Resources committed.
    pub resources_committed: String,
    /// Risks still open.
    pub open_risks: String,
    /// Actions still open.
    pub open_actions: String,
    /// Key contacts, partners and authorities already engaged.
    pub key_contacts: String,
    /// Communications sent and pending.
    pub communications: String,
    /// Constraints (legal, contractual, technical…).
    pub constraints: String,
    /// The incident's most likely development.
    pub potential_most_likely: String,
    /// Its worst credible development.
    pub potential_worst_case: String,
    /// The authority the CMC is asked to take.
    pub authority_requested: String,
    /// What is known not to be known.
    pub known_unknowns: String,
}

impl HandoverBrief {
    /// The text sections with their field names.
    fn sections(&self) -> [(&'static str, &String); 14] {
        [
            ("situation", &self.situation),
            ("history", &self.history),
            ("objectives", &self.objectives),
            ("actions_taken", &self.actions_taken),
            ("resources_committed", &self.resources_committed),
            ("open_risks", &self.open_risks),
            ("open_actions", &self.open_actions),
            ("key_contacts", &self.key_contacts),
            ("communications", &self.communications),
            ("constraints", &self.constraints),
            ("potential_most_likely", &self.potential_most_likely),
            ("potential_worst_case", &self.potential_worst_case),
            ("authority_requested", &self.authority_requested),
            ("known_unknowns", &self.known_unknowns),
        ]
    }

    /// The brief with every section trimmed and within limits (empty sections allowed).
    fn checked(&self, ctx: &Context) -> Result<Self, DomainError> {
        let f = |name: &str, value: &str| {
            Text::optional(&format!("brief.{name}"), value, Limits::BRIEF_SECTION)
        };
        if let Some(at) = self.situation_as_at
            && at > ctx.now + Duration::seconds(Limits::FUTURE_SKEW_SECONDS)
        {
            return Err(DomainError::invalid(
                "brief.situation_as_at",
                "is in the future",
            ));
        }
        Ok(Self {
            situation: f("situation", &self.situation)?,
            situation_as_at: self.situation_as_at,
            confidence: self.confidence,
            history: f("history", &self.history)?,
            objectives: f("objectives", &self.objectives)?,
            actions_taken: f("actions_taken", &self.actions_taken)?,
            resources_committed: f("resources_committed", &self.resources_committed)?,
            open_risks: f("open_risks", &self.open_risks)?,
            open_actions: f("open_actions", &self.open_actions)?,
            key_contacts: f("key_contacts", &self.key_contacts)?,
            communications: f("communications", &self.communications)?,
            constraints: f("constraints", &self.constraints)?,
            potential_most_likely: f("potential_most_likely", &self.potential_most_likely)?,
            potential_worst_case: f("potential_worst_case", &self.potential_worst_case)?,
            authority_requested: f("authority_requested", &self.authority_requested)?,
            known_unknowns: f("known_unknowns", &self.known_unknowns)?,
        })
    }

    /// The fields still missing before the brief can be offered (API names).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing: Vec<&'static str> = self
            .sections()
            .into_iter()
            .filter(|(_, v)| v.trim().is_empty())
            .map(|(name, _)| name)
            .collect();
        if self.situation_as_at.is_none() {
            missing.push("situation_as_at");
        }
        if self.confidence.is_none() {
            missing.push("confidence");
        }
        missing
    }
}

/// A command on a handover. Text is raw input; `decide` checks it.
#[derive(Debug, Clone)]
pub enum HandoverCommand {
    /// A crisis escalation of a TACTICAL incident starts the handover.
    Start {
        /// The incident.
        incident_id: Uuid,
        /// Why the CMC is needed.
        reason: String,
    },
    /// The outgoing commander saves the brief as it stands.
    Draft {
        /// The brief.
        brief: HandoverBrief,
    },
    /// The outgoing commander offers the brief (a revised one after a clarification).
    Offer {
        /// The brief to offer; `None` offers the current draft.
        brief: Option<HandoverBrief>,
        /// Answers to the CMC's questions (required after a clarification request).
        answers: String,
    },
    /// The CMC asks questions before it decides.
    RequestClarification {
        /// The questions.
        questions: Vec<String>,
    },
    /// The CMC takes command.
    Accept {
        /// When command passes to the CMC.
        effective_at: DateTime<Utc>,
        /// The scope of authority delegated to the CMC.
        authority_delegated: String,
        /// The crisis the acceptance activates.
        crisis_id: Uuid,
    },
    /// The CMC does not take command.
    Decline {
        /// Why.
        reason: String,
    },
    /// The outgoing side withdraws the handover before the CMC answers.
    Withdraw {
        /// Why.
        reason: String,
    },
}

/// What happened to a handover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum HandoverEvent {
    /// The handover of an incident began.
    HandoverStarted {
        /// The incident.
        incident_id: Uuid,
        /// Why the CMC is needed.
        reason: String,
        /// The level handing over (always `TACTICAL`).
        from_level: Level,
        /// Who started it.
        started_by: String,
    },
    /// The brief as drafted.
    HandoverBriefDrafted {
        /// The brief.
        brief: HandoverBrief,
        /// Who drafted it.
        drafted_by: String,
    },
    /// The brief offered to the CMC.
    HandoverOffered {
        /// The complete brief.
        brief: HandoverBrief,
        /// 1 for the first offer, then one more per revision.
        revision: u32,
        /// Answers to the questions of the clarification, for a revision.
        answers: Option<String>,
        /// Who offered (the outgoing commander's side).
        offered_by: String,
        /// When it was offered (server time).
        offered_at: DateTime<Utc>,
    },
    /// The CMC asked questions about an offer.
    HandoverClarificationRequested {
        /// The questions.
        questions: Vec<String>,
        /// The offer they are about.
        revision: u32,
        /// Who asked.
        requested_by: String,
    },
    /// The CMC accepted command.
    HandoverAccepted {
        /// Who accepted.
        accepted_by: String,
        /// When command passes.
        effective_at: DateTime<Utc>,
        /// The scope of authority delegated.
        authority_delegated: String,
        /// The offer accepted.
        revision: u32,
        /// The crisis activated.
        crisis_id: Uuid,
    },
    /// Command of the incident passed to the CMC.
    CommandTransferred {
        /// The incident.
        incident_id: Uuid,
        /// From `TACTICAL`.
        from_level: Level,
        /// To `STRATEGIC`.
        to_level: Level,
        /// Who handed over.
        from_party: String,
        /// Who took over.
        to_party: String,
        /// When.
        effective_at: DateTime<Utc>,
    },
    /// The CMC declined; command stays where it was.
    HandoverDeclined {
        /// Who declined.
        declined_by: String,
        /// Why.
        reason: String,
        /// The level that keeps command (`TACTICAL`).
        command_stays_at: Level,
    },
    /// The outgoing side withdrew the handover before the CMC answered.
    HandoverWithdrawn {
        /// Who withdrew it.
        withdrawn_by: String,
        /// Why.
        reason: String,
        /// The level that keeps command (`TACTICAL`).
        command_stays_at: Level,
    },
}

impl DomainEvent for HandoverEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::HandoverStarted { .. } => "HandoverStarted",
            Self::HandoverBriefDrafted { .. } => "HandoverBriefDrafted",
            Self::HandoverOffered { .. } => "HandoverOffered",
            Self::HandoverClarificationRequested { .. } => "HandoverClarificationRequested",
            Self::HandoverAccepted { .. } => "HandoverAccepted",
            Self::CommandTransferred { .. } => "CommandTransferred",
            Self::HandoverDeclined { .. } => "HandoverDeclined",
            Self::HandoverWithdrawn { .. } => "HandoverWithdrawn",
        }
    }
}

/// Where a handover stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HandoverStatus {
    /// The brief is being written.
    Drafting,
    /// Offered; the CMC has to answer.
    Offered,
    /// The CMC asked questions; a revised offer answers them.
    ClarificationRequested,
    /// The CMC took command.
    Accepted,
    /// The CMC declined.
    Declined,
    /// The outgoing side withdrew it.
    Withdrawn,
}

impl HandoverStatus {
    /// The stored name, e.g. `OFFERED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drafting => "DRAFTING",
            Self::Offered => "OFFERED",
            Self::ClarificationRequested => "CLARIFICATION_REQUESTED",
            Self::Accepted => "ACCEPTED",
            Self::Declined => "DECLINED",
            Self::Withdrawn => "WITHDRAWN",
        }
    }
}

/// The handover aggregate's state.
#[derive(Debug, Clone, Default)]
pub struct Handover {
    state: Option<HandoverState>,
}

/// What the rules need to know about a handover.
#[derive(Debug, Clone)]
pub struct HandoverState {
    /// The incident handed over.
    pub incident_id: Uuid,
    /// Where it stands.
    pub status: HandoverStatus,
    /// The brief as last drafted or offered.
    pub brief: HandoverBrief,
    /// The last offer's revision (0 before the first).
    pub revision: u32,
    /// Who made the last offer.
    pub offered_by: Option<String>,
    /// When the last offer was made.
    pub offered_at: Option<DateTime<Utc>>,
    /// When accepted: the crisis activated and the effective time of the transfer.
    pub accepted: Option<(Uuid, DateTime<Utc>)>,
    /// When declined: the reason.
    pub declined: Option<String>,
    /// When withdrawn: the reason.
    pub withdrawn: Option<String>,
    /// Who acted for the outgoing side: started, drafted or offered it.
    pub outgoing: BTreeSet<String>,
    /// Who acted for the CMC before its answer: asked questions.
    pub receiving: BTreeSet<String>,
}

impl Handover {
    /// The state, when the handover exists.
    pub fn state(&self) -> Option<&HandoverState> {
        self.state.as_ref()
    }
}

/// The CMC's side of the handshake: nobody who acted for the outgoing side.
fn not_the_offering_party(s: &HandoverState, actor: &str, what: &str) -> Result<(), DomainError> {
    if s.outgoing.contains(actor) {
        return Err(DomainError::precondition(format!(
            "{actor} acts for the outgoing side of this handover (started, drafted or offered it) \
             and cannot also {what} it: the receiving party must"
        )));
    }
    Ok(())
}

/// The outgoing side of the handshake: nobody who acted for the CMC.
fn not_the_receiving_party(s: &HandoverState, actor: &str, what: &str) -> Result<(), DomainError> {
    if s.receiving.contains(actor) {
        return Err(DomainError::precondition(format!(
            "{actor} acts for the CMC in this handover (asked questions about it) and cannot \
             also {what} it: the outgoing side must"
        )));
    }
    Ok(())
}

fn require(s: &HandoverState, allowed: &[HandoverStatus], what: &str) -> Result<(), DomainError> {
    if allowed.contains(&s.status) {
        Ok(())
    } else {
        Err(DomainError::precondition(format!(
            "cannot {what} a handover that is {}",
            s.status.as_str()
        )))
    }
}

impl Aggregate for Handover {
    const TYPE: &'static str = "handover";
    type Command = HandoverCommand;
    type Event = HandoverEvent;

    fn decide(
        &self,
        command: &HandoverCommand,
        ctx: &Context,
    ) -> Result<Vec<HandoverEvent>, DomainError> {
        let s = match (command, &self.state) {
            (
                HandoverCommand::Start {
                    incident_id,
                    reason,
                },
                None,
            ) => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                return Ok(vec![HandoverEvent::HandoverStarted {
                    incident_id: *incident_id,
                    reason,
                    from_level: Level::Tactical,
                    started_by: ctx.actor.clone(),
                }]);
            }
            (HandoverCommand::Start { .. }, Some(_)) => {
                return Err(DomainError::precondition(
                    "the handover has already started",
                ));
            }
            (_, None) => return Err(DomainError::NotFound("handover".into())),
            (_, Some(s)) => s,
        };
        // Accepted, declined and withdrawn handovers are closed: no command lists them as
        // allowed.
        use HandoverStatus::{ClarificationRequested, Drafting, Offered};
        let events = match command {
            HandoverCommand::Start { .. } => unreachable!("handled above"),
            HandoverCommand::Draft { brief } => {
                require(s, &[Drafting, ClarificationRequested], "redraft")?;
                not_the_receiving_party(s, &ctx.actor, "draft")?;
                vec![HandoverEvent::HandoverBriefDrafted {
                    brief: brief.checked(ctx)?,
                    drafted_by: ctx.actor.clone(),
                }]
            }
            HandoverCommand::Offer { brief, answers } => {
                require(s, &[Drafting, ClarificationRequested], "offer")?;
                not_the_receiving_party(s, &ctx.actor, "offer")?;
                let brief = brief.as_ref().unwrap_or(&s.brief).checked(ctx)?;
                let missing = brief.missing();
                if let Some(first) = missing.first() {
                    return Err(DomainError::invalid(
                        format!("brief.{first}"),
                        format!(
                            "is required before the brief is offered (missing: {})",
                            missing.join(", ")
                        ),
                    ));
                }
                let answers = Text::optional("answers", answers, Limits::BRIEF_SECTION)?;
                if s.status == ClarificationRequested && answers.is_empty() {
                    return Err(DomainError::invalid(
                        "answers",
                        "is required: a revised offer answers the CMC's questions",
                    ));
                }
                vec![HandoverEvent::HandoverOffered {
                    brief,
                    revision: s.revision + 1,
                    answers: (!answers.is_empty()).then_some(answers),
                    offered_by: ctx.actor.clone(),
                    offered_at: ctx.now,
                }]
            }
            HandoverCommand::RequestClarification { questions } => {
                require(s, &[Offered], "ask questions about")?;
                not_the_offering_party(s, &ctx.actor, "question")?;
                if questions.is_empty() {
                    return Err(DomainError::invalid(
                        "questions",
                        "at least one is required",
                    ));
                }
                if questions.len() > Limits::QUESTIONS {
                    return Err(DomainError::invalid(
                        "questions",
                        format!("at most {} are allowed", Limits::QUESTIONS),
                    ));
                }
                let questions = questions
                    .iter()
                    .enumerate()
                    .map(|(i, q)| Text::required(&format!("questions[{i}]"), q, Limits::RATIONALE))
                    .collect::<Result<Vec<_>, _>>()?;
                vec![HandoverEvent::HandoverClarificationRequested {
                    questions,
                    revision: s.revision,
                    requested_by: ctx.actor.clone(),
                }]
            }
            HandoverCommand::Accept {
                effective_at,
                authority_delegated,
                crisis_id,
            } => {
                require(s, &[Offered], "accept")?;
                not_the_offering_party(s, &ctx.actor, "accept")?;
                let authority_delegated = Text::required(
                    "authority_delegated",
                    authority_delegated,
                    Limits::RATIONALE,
                )?;
                let skew = Duration::seconds(Limits::FUTURE_SKEW_SECONDS);
                if let Some(offered_at) = s.offered_at
                    && *effective_at + skew < offered_at
                {
                    return Err(DomainError::invalid(
                        "effective_at",
                        "is before the brief was offered",
                    ));
                }
                // The incident is the CMC's from the acceptance's commit on: command cannot
                // pass later than it is recorded.
                ctx.check_not_future("effective_at", *effective_at)?;
                vec![
                    HandoverEvent::HandoverAccepted {
                        accepted_by: ctx.actor.clone(),
                        effective_at: *effective_at,
                        authority_delegated,
                        revision: s.revision,
                        crisis_id: *crisis_id,
                    },
                    HandoverEvent::CommandTransferred {
                        incident_id: s.incident_id,
                        from_level: Level::Tactical,
                        to_level: Level::Strategic,
                        from_party: s.offered_by.clone().unwrap_or_default(),
                        to_party: ctx.actor.clone(),
                        effective_at: *effective_at,
                    },
                ]
            }
            HandoverCommand::Decline { reason } => {
                require(s, &[Offered, ClarificationRequested], "decline")?;
                not_the_offering_party(s, &ctx.actor, "decline")?;
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                vec![HandoverEvent::HandoverDeclined {
                    declined_by: ctx.actor.clone(),
                    reason,
                    command_stays_at: Level::Tactical,
                }]
            }
            HandoverCommand::Withdraw { reason } => {
                require(s, &[Drafting, Offered, ClarificationRequested], "withdraw")?;
                // The outgoing side withdraws — whoever commands at TACTICAL now, who may not
                // have drafted or offered it; the CMC's side declines.
                not_the_receiving_party(s, &ctx.actor, "withdraw")?;
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                vec![HandoverEvent::HandoverWithdrawn {
                    withdrawn_by: ctx.actor.clone(),
                    reason,
                    command_stays_at: Level::Tactical,
                }]
            }
        };
        Ok(events)
    }

    fn evolve(&mut self, event: &HandoverEvent) {
        if let HandoverEvent::HandoverStarted {
            incident_id,
            started_by,
            ..
        } = event
        {
            self.state = Some(HandoverState {
                incident_id: *incident_id,
                status: HandoverStatus::Drafting,
                brief: HandoverBrief::default(),
                revision: 0,
                offered_by: None,
                offered_at: None,
                accepted: None,
                declined: None,
                withdrawn: None,
                outgoing: BTreeSet::from([started_by.clone()]),
                receiving: BTreeSet::new(),
            });
            return;
        }
        let Some(s) = &mut self.state else { return };
        match event {
            HandoverEvent::HandoverStarted { .. } => {}
            HandoverEvent::HandoverBriefDrafted { brief, drafted_by } => {
                s.brief = brief.clone();
                s.outgoing.insert(drafted_by.clone());
            }
            HandoverEvent::HandoverOffered {
                brief,
                revision,
                offered_by,
                offered_at,
                ..
            } => {
                s.brief = brief.clone();
                s.revision = *revision;
                s.offered_by = Some(offered_by.clone());
                s.offered_at = Some(*offered_at);
                s.status = HandoverStatus::Offered;
                s.outgoing.insert(offered_by.clone());
            }
            HandoverEvent::HandoverClarificationRequested { requested_by, .. } => {
                s.status = HandoverStatus::ClarificationRequested;
                s.receiving.insert(requested_by.clone());
            }
            HandoverEvent::HandoverAccepted {
                crisis_id,
                effective_at,
                ..
            } => {
                s.status = HandoverStatus::Accepted;
                s.accepted = Some((*crisis_id, *effective_at));
            }
            HandoverEvent::CommandTransferred { .. } => {}
            HandoverEvent::HandoverDeclined { reason, .. } => {
                s.status = HandoverStatus::Declined;
                s.declined = Some(reason.clone());
            }
            HandoverEvent::HandoverWithdrawn { reason, .. } => {
                s.status = HandoverStatus::Withdrawn;
                s.withdrawn = Some(reason.clone());
            }
        }
    }

    fn exists(&self) -> bool {
        self.state.is_some()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 14, 0, 0).unwrap()
    }

    fn as_(actor: &str) -> Context {
        Context::now(actor, now())
    }

    fn incident() -> Uuid {
        Uuid::from_u128(42)
    }

    fn crisis() -> Uuid {
        Uuid::from_u128(77)
    }

    fn brief() -> HandoverBrief {
        HandoverBrief {
            situation: "Ransomware on 40 file servers at two sites; backups intact".into(),
            situation_as_at: Some(now() - Duration::minutes(10)),
            confidence: Some(Confidence::Medium),
            history: "First encryption seen 06:10; contained at site A by 09:30".into(),
            objectives: "Protect payroll run on Friday; keep airside systems isolated".into(),
            actions_taken: "Isolated VLANs 10-14; disabled 3 service accounts".into(),
            resources_committed: "SOC on 24/7 rota; vendor IR team on site".into(),
            open_risks: "Spread to OT network; data exfiltration before encryption".into(),
            open_actions: "Forensic image of FS-07 (owner: IR lead, due 16:00)".into(),
            key_contacts: "NCSC case 2026-114; insurer hotline; police cyber unit".into(),
            communications: "Staff notice sent 10:00; press holding line pending".into(),
            constraints: "No payment policy; GDPR 72-hour clock started 09:00".into(),
            potential_most_likely: "Recovery of site A in 48 hours".into(),
            potential_worst_case: "OT compromise grounds operations for days".into(),
            authority_requested: "Spend up to 500k; approve external statements".into(),
            known_unknowns: "Initial access vector; whether data left the network".into(),
        }
    }

    fn given(events: &[HandoverEvent]) -> Handover {
        let mut h = Handover::default();
        for e in events {
            h.evolve(e);
        }
        h
    }

    fn started() -> HandoverEvent {
        HandoverEvent::HandoverStarted {
            incident_id: incident(),
            reason: "regulator notification and board-level decisions needed".into(),
            from_level: Level::Tactical,
            started_by: "tom.tactical".into(),
        }
    }

    fn offered(revision: u32) -> HandoverEvent {
        HandoverEvent::HandoverOffered {
            brief: brief(),
            revision,
            answers: None,
            offered_by: "tom.tactical".into(),
            offered_at: now() - Duration::minutes(5),
        }
    }

    fn clarification() -> HandoverEvent {
        HandoverEvent::HandoverClarificationRequested {
            questions: vec!["Is the OT network segmented from site A?".into()],
            revision: 1,
            requested_by: "carla.cmc".into(),
        }
    }

    fn offer(brief: Option<HandoverBrief>, answers: &str) -> HandoverCommand {
        HandoverCommand::Offer {
            brief,
            answers: answers.into(),
        }
    }

    fn accept() -> HandoverCommand {
        HandoverCommand::Accept {
            effective_at: now(),
            authority_delegated: "full crisis authority for the ransomware response".into(),
            crisis_id: crisis(),
        }
    }

    fn precondition(r: Result<Vec<HandoverEvent>, DomainError>) -> String {
        match r {
            Err(DomainError::Precondition(m)) => m,
            other => panic!("expected a refused transition, got {other:?}"),
        }
    }

    fn invalid(r: Result<Vec<HandoverEvent>, DomainError>) -> String {
        match r {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn a_handover_starts_once_from_tactical_with_a_reason() {
        let start = HandoverCommand::Start {
            incident_id: incident(),
            reason: "regulator notification and board-level decisions needed".into(),
        };
        let events = given(&[]).decide(&start, &as_("tom.tactical")).unwrap();
        assert_eq!(events, vec![started()]);
        precondition(given(&[started()]).decide(&start, &as_("tom.tactical")));
        let no_reason = HandoverCommand::Start {
            incident_id: incident(),
            reason: " ".into(),
        };
        assert_eq!(invalid(given(&[]).decide(&no_reason, &as_("x"))), "reason");
    }

    #[test]
    fn commands_on_a_handover_that_never_started_are_not_found() {
        let r = given(&[]).decide(&accept(), &as_("carla.cmc"));
        assert!(matches!(r, Err(DomainError::NotFound(_))));
    }

    #[test]
    fn a_draft_may_be_incomplete_but_an_incomplete_brief_is_never_offered() {
        let h = given(&[started()]);
        let partial = HandoverBrief {
            situation: "Ransomware on file servers".into(),
            ..HandoverBrief::default()
        };
        let drafted = h
            .decide(
                &HandoverCommand::Draft {
                    brief: partial.clone(),
                },
                &as_("tom.tactical"),
            )
            .unwrap();
        let h = given(&[started(), drafted[0].clone()]);
        match h.decide(&offer(None, ""), &as_("tom.tactical")) {
            Err(DomainError::Invalid { field, message }) => {
                assert_eq!(field, "brief.history", "the first missing section is named");
                assert!(message.contains("situation_as_at, confidence"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let mut no_history = brief();
        no_history.history = String::new();
        assert_eq!(
            invalid(h.decide(&offer(Some(no_history), ""), &as_("tom.tactical"))),
            "brief.history"
        );
        let mut no_confidence = brief();
        no_confidence.confidence = None;
        assert_eq!(
            invalid(h.decide(&offer(Some(no_confidence), ""), &as_("tom.tactical"))),
            "brief.confidence"
        );
    }

    #[test]
    fn a_complete_brief_is_offered_as_revision_1_by_the_outgoing_side() {
        let events = given(&[started()])
            .decide(&offer(Some(brief()), ""), &as_("tom.tactical"))
            .unwrap();
        match &events[..] {
            [
                HandoverEvent::HandoverOffered {
                    revision: 1,
                    offered_by,
                    offered_at,
                    answers: None,
                    ..
                },
            ] => {
                assert_eq!(offered_by, "tom.tactical");
                assert_eq!(*offered_at, now());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_brief_describing_the_future_is_refused() {
        let mut b = brief();
        b.situation_as_at = Some(now() + Duration::hours(1));
        assert_eq!(
            invalid(given(&[started()]).decide(&offer(Some(b), ""), &as_("tom.tactical"))),
            "brief.situation_as_at"
        );
    }

    #[test]
    fn the_cmc_asks_questions_and_a_revised_offer_must_answer_them() {
        let h = given(&[started(), offered(1)]);
        let ask = HandoverCommand::RequestClarification {
            questions: vec!["Is the OT network segmented from site A?".into()],
        };
        assert_eq!(
            h.decide(&ask, &as_("carla.cmc")).unwrap(),
            vec![clarification()]
        );
        let none = HandoverCommand::RequestClarification { questions: vec![] };
        assert_eq!(invalid(h.decide(&none, &as_("carla.cmc"))), "questions");

        let h = given(&[started(), offered(1), clarification()]);
        assert_eq!(
            invalid(h.decide(&offer(None, ""), &as_("tom.tactical"))),
            "answers"
        );
        let revised = h
            .decide(
                &offer(None, "Yes: firewall FW-OT-1, verified 13:40"),
                &as_("tom.tactical"),
            )
            .unwrap();
        assert!(matches!(
            &revised[..],
            [HandoverEvent::HandoverOffered {
                revision: 2,
                answers: Some(_),
                ..
            }]
        ));
    }

    #[test]
    fn the_offering_party_cannot_accept_decline_or_question_its_own_offer() {
        let h = given(&[started(), offered(1)]);
        for command in [
            accept(),
            HandoverCommand::Decline { reason: "x".into() },
            HandoverCommand::RequestClarification {
                questions: vec!["?".into()],
            },
        ] {
            let m = precondition(h.decide(&command, &as_("tom.tactical")));
            assert!(m.contains("receiving party"), "{m}");
        }
    }

    #[test]
    fn acceptance_records_who_when_and_the_authority_then_transfers_command() {
        let events = given(&[started(), offered(1)])
            .decide(&accept(), &as_("carla.cmc"))
            .unwrap();
        assert_eq!(
            events,
            vec![
                HandoverEvent::HandoverAccepted {
                    accepted_by: "carla.cmc".into(),
                    effective_at: now(),
                    authority_delegated: "full crisis authority for the ransomware response".into(),
                    revision: 1,
                    crisis_id: crisis(),
                },
                HandoverEvent::CommandTransferred {
                    incident_id: incident(),
                    from_level: Level::Tactical,
                    to_level: Level::Strategic,
                    from_party: "tom.tactical".into(),
                    to_party: "carla.cmc".into(),
                    effective_at: now(),
                },
            ]
        );
        let no_scope = HandoverCommand::Accept {
            effective_at: now(),
            authority_delegated: String::new(),
            crisis_id: crisis(),
        };
        assert_eq!(
            invalid(given(&[started(), offered(1)]).decide(&no_scope, &as_("carla.cmc"))),
            "authority_delegated"
        );
        let backdated = HandoverCommand::Accept {
            effective_at: now() - Duration::hours(2),
            authority_delegated: "full".into(),
            crisis_id: crisis(),
        };
        assert_eq!(
            invalid(given(&[started(), offered(1)]).decide(&backdated, &as_("carla.cmc"))),
            "effective_at"
        );
        let deferred = HandoverCommand::Accept {
            effective_at: now() + Duration::hours(2),
            authority_delegated: "full".into(),
            crisis_id: crisis(),
        };
        assert_eq!(
            invalid(given(&[started(), offered(1)]).decide(&deferred, &as_("carla.cmc"))),
            "effective_at"
        );
    }

    #[test]
    fn only_an_offer_is_accepted_and_command_stays_until_then() {
        for history in [
            vec![started()],
            vec![started(), offered(1), clarification()],
        ] {
            precondition(given(&history).decide(&accept(), &as_("carla.cmc")));
        }
    }

    #[test]
    fn declining_gives_a_reason_and_command_stays_at_tactical() {
        let h = given(&[started(), offered(1), clarification()]);
        let events = h
            .decide(
                &HandoverCommand::Decline {
                    reason: "within tactical capability; re-escalate if OT is touched".into(),
                },
                &as_("carla.cmc"),
            )
            .unwrap();
        assert!(matches!(
            &events[..],
            [HandoverEvent::HandoverDeclined {
                command_stays_at: Level::Tactical,
                ..
            }]
        ));
        let no_reason = HandoverCommand::Decline { reason: "".into() };
        assert_eq!(
            invalid(given(&[started(), offered(1)]).decide(&no_reason, &as_("carla.cmc"))),
            "reason"
        );
        precondition(given(&[started()]).decide(&no_reason, &as_("carla.cmc")));
    }

    fn withdraw(reason: &str) -> HandoverCommand {
        HandoverCommand::Withdraw {
            reason: reason.into(),
        }
    }

    #[test]
    fn nobody_acts_on_both_sides_of_a_handover() {
        let asked = given(&[started(), offered(1), clarification()]);
        // carla asked for the CMC: she neither drafts, offers nor withdraws it.
        for command in [
            HandoverCommand::Draft { brief: brief() },
            offer(Some(brief()), "yes, segmented"),
            withdraw("x"),
        ] {
            precondition(asked.decide(&command, &as_("carla.cmc")));
        }
        // ana offers the revision for the outgoing side; tom, who started it, still cannot
        // answer it for the CMC, nor can ana.
        let revised = asked
            .decide(
                &offer(Some(brief()), "yes, segmented"),
                &as_("ana.tactical"),
            )
            .unwrap();
        let mut history = vec![started(), offered(1), clarification()];
        history.extend(revised);
        let h = given(&history);
        for actor in ["tom.tactical", "ana.tactical"] {
            precondition(h.decide(&accept(), &as_(actor)));
            precondition(h.decide(
                &HandoverCommand::Decline {
                    reason: "no".into(),
                },
                &as_(actor),
            ));
            precondition(h.decide(
                &HandoverCommand::RequestClarification {
                    questions: vec!["?".into()],
                },
                &as_(actor),
            ));
        }
        assert!(h.decide(&accept(), &as_("carla.cmc")).is_ok());
        // The CMC's side does not withdraw it; the outgoing side, even a commander who took
        // over after it was offered, does.
        precondition(h.decide(&withdraw("x"), &as_("carla.cmc")));
        assert!(h.decide(&withdraw("x"), &as_("ana.tactical")).is_ok());
        assert!(h.decide(&withdraw("x"), &as_("ben.tactical")).is_ok());
    }

    #[test]
    fn the_outgoing_side_withdraws_before_the_cmc_answers_and_command_stays_at_tactical() {
        for history in [
            vec![started()],
            vec![started(), offered(1)],
            vec![started(), offered(1), clarification()],
        ] {
            let h = given(&history);
            assert_eq!(
                invalid(h.decide(&withdraw(" "), &as_("tom.tactical"))),
                "reason"
            );
            let events = h
                .decide(
                    &withdraw("ransomware contained at site A; no CMC needed"),
                    &as_("tom.tactical"),
                )
                .unwrap();
            assert_eq!(
                events,
                vec![HandoverEvent::HandoverWithdrawn {
                    withdrawn_by: "tom.tactical".into(),
                    reason: "ransomware contained at site A; no CMC needed".into(),
                    command_stays_at: Level::Tactical,
                }]
            );
            let mut after = history.clone();
            after.extend(events);
            let w = given(&after);
            let s = w.state().unwrap();
            assert_eq!(s.status, HandoverStatus::Withdrawn);
            assert_eq!(
                s.withdrawn.as_deref(),
                Some("ransomware contained at site A; no CMC needed")
            );
        }
    }

    #[test]
    fn an_accepted_declined_or_withdrawn_handover_is_closed() {
        let accepted = given(&[started(), offered(1)]).decide(&accept(), &as_("carla.cmc"));
        let mut closed = vec![started(), offered(1)];
        closed.extend(accepted.unwrap());
        let declined = vec![
            started(),
            offered(1),
            HandoverEvent::HandoverDeclined {
                declined_by: "carla.cmc".into(),
                reason: "no".into(),
                command_stays_at: Level::Tactical,
            },
        ];
        let withdrawn = vec![
            started(),
            offered(1),
            HandoverEvent::HandoverWithdrawn {
                withdrawn_by: "tom.tactical".into(),
                reason: "settled".into(),
                command_stays_at: Level::Tactical,
            },
        ];
        for history in [closed, declined, withdrawn] {
            let h = given(&history);
            for command in [
                accept(),
                offer(Some(brief()), "x"),
                HandoverCommand::Draft { brief: brief() },
                HandoverCommand::Decline { reason: "x".into() },
                HandoverCommand::RequestClarification {
                    questions: vec!["?".into()],
                },
                withdraw("x"),
            ] {
                precondition(h.decide(&command, &as_("carla.cmc")));
                precondition(h.decide(&command, &as_("tom.tactical")));
            }
        }
    }

    #[test]
    fn an_offer_waits_for_the_cmc_before_it_is_redrafted() {
        let h = given(&[started(), offered(1)]);
        precondition(h.decide(
            &HandoverCommand::Draft { brief: brief() },
            &as_("tom.tactical"),
        ));
        precondition(h.decide(&offer(Some(brief()), ""), &as_("tom.tactical")));
    }

    #[test]
    fn events_round_trip_through_their_stored_payloads() {
        for e in [started(), offered(2), clarification()] {
            crate::assert_payload_is_the_tagged_field(&e);
        }
    }
}
