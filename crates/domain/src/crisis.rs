//! The Crisis aggregate — the CMC log: what the Crisis Management Centre is told, how it grades
//! it, and what it decides on it, until stand-down. This is its core; attendance, objectives,
//! situation reports, actions and communications follow (issue #4).
//!
//! Rules (each has a given/when/then test below):
//! * a crisis is activated once: from an accepted handover, or declared directly with the
//!   criteria it meets; it is linked to at least one incident, and more may be linked;
//! * information is graded as received — source reliability A–F and credibility 1–6
//!   separately, fact or assumption — and regraded with a reason; the grade a decision relied
//!   on is never rewritten by a later regrading;
//! * conflicting information is flagged across at least two known items;
//! * a decision records its rationale, the options considered (each with why it was not
//!   taken), the information it was based on **as graded at that moment**, assumptions, the
//!   decision maker and level; it may supersede a current decision, which then stays on the
//!   record as superseded (nothing is edited or erased); a decision is reviewed with an
//!   outcome;
//! * stand-down names who takes control next and is backed by a current decision;
//! * a stood-down crisis refuses everything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, Context, DomainError, DomainEvent, Level, Limits, Text};

/// Source reliability on the Admiralty scale: A (completely reliable) to F (cannot be judged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reliability {
    /// Completely reliable.
    A,
    /// Usually reliable.
    B,
    /// Fairly reliable.
    C,
    /// Not usually reliable.
    D,
    /// Unreliable.
    E,
    /// Reliability cannot be judged.
    F,
}

/// Information credibility on the Admiralty scale: 1 (confirmed) to 6 (cannot be judged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credibility(u8);

impl Credibility {
    /// A credibility from 1 to 6; `field` names it in the error.
    pub fn new(field: &str, value: u8) -> Result<Self, DomainError> {
        if (1..=6).contains(&value) {
            Ok(Self(value))
        } else {
            Err(DomainError::invalid(
                field,
                "must be from 1 (confirmed) to 6 (cannot be judged)",
            ))
        }
    }

    /// The grade, 1 to 6.
    pub fn value(self) -> u8 {
        self.0
    }
}

/// Whether an item is an established fact or an assumption the CMC works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Basis {
    /// Established.
    Fact,
    /// Assumed.
    Assumption,
}

/// The grade of an information item at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grade {
    /// Source reliability.
    pub reliability: Reliability,
    /// Information credibility.
    pub credibility: Credibility,
    /// Fact or assumption.
    pub basis: Basis,
}

/// An option the decision maker considered and did not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionConsidered {
    /// The option.
    pub option: String,
    /// Why it was not taken.
    pub why_not: String,
}

/// One item a decision relied on, with its grade when the decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InformationBasis {
    /// The information item.
    pub information_id: Uuid,
    /// Its grade at that moment.
    pub grade: Grade,
}

/// A decision as the decision maker states it (raw input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionInput {
    /// The decision's id (chosen by the caller, so a retry names the same decision).
    pub decision_id: Uuid,
    /// What was decided.
    pub decision: String,
    /// Why.
    pub rationale: String,
    /// Options considered and not taken.
    pub options: Vec<OptionConsidered>,
    /// The information items it is based on.
    pub information: Vec<Uuid>,
    /// Assumptions made.
    pub assumptions: String,
    /// Risks accepted.
    pub risks_accepted: String,
    /// Powers and policies relied on.
    pub powers: String,
    /// Who decided.
    pub decision_maker: String,
    /// At which level.
    pub level: Level,
    /// Decided jointly with whom, if anyone.
    pub joint_with: String,
    /// When it must be reviewed.
    pub review_by: Option<DateTime<Utc>>,
    /// The current decision it replaces.
    pub supersedes: Option<Uuid>,
}

/// A command on a crisis. Text is raw input; `decide` checks it.
#[derive(Debug, Clone)]
pub enum CrisisCommand {
    /// Activate the crisis.
    Activate {
        /// Its name.
        title: String,
        /// The incidents it is about (at least one).
        incident_ids: Vec<Uuid>,
        /// The accepted handover it comes from, if any.
        handover_id: Option<Uuid>,
        /// The crisis criteria met (required when declared without a handover).
        criteria: String,
    },
    /// Link one more incident.
    LinkIncident {
        /// The incident.
        incident_id: Uuid,
    },
    /// Log information received, graded.
    ReceiveInformation {
        /// The item's id.
        information_id: Uuid,
        /// Where it came from.
        source: String,
        /// What it says.
        content: String,
        /// Its grade.
        grade: Grade,
        /// When the source observed it.
        observed_at: DateTime<Utc>,
    },
    /// Change an item's grade.
    RegradeInformation {
        /// The item.
        information_id: Uuid,
        /// The new grade.
        grade: Grade,
        /// Why.
        reason: String,
    },
    /// Flag items that contradict each other.
    FlagConflict {
        /// The items (at least two).
        information_ids: Vec<Uuid>,
        /// What conflicts.
        note: String,
    },
    /// Record a decision.
    RecordDecision(Box<DecisionInput>),
    /// Review a decision.
    ReviewDecision {
        /// The decision.
        decision_id: Uuid,
        /// What the review found (confirmed, to be changed…).
        outcome: String,
    },
    /// Stand the CMC down.
    StandDown {
        /// Who takes control next (e.g. the TACTICAL commander, business as usual).
        handed_to: String,
        /// The current decision that stands the crisis down.
        decision_id: Uuid,
    },
}

/// A decision as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Its id.
    pub decision_id: Uuid,
    /// What was decided.
    pub decision: String,
    /// Why.
    pub rationale: String,
    /// Options considered and not taken.
    pub options: Vec<OptionConsidered>,
    /// The information it relied on, as graded at that moment.
    pub information_basis: Vec<InformationBasis>,
    /// Assumptions.
    pub assumptions: String,
    /// Risks accepted.
    pub risks_accepted: String,
    /// Powers and policies relied on.
    pub powers: String,
    /// Who decided.
    pub decision_maker: String,
    /// At which level.
    pub level: Level,
    /// Jointly with whom.
    pub joint_with: String,
    /// When it must be reviewed.
    pub review_by: Option<DateTime<Utc>>,
    /// The decision it replaces.
    pub supersedes: Option<Uuid>,
    /// Who recorded it (the loggist).
    pub recorded_by: String,
}

/// What happened in a crisis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum CrisisEvent {
    /// The CMC is active.
    CrisisActivated {
        /// Its name.
        title: String,
        /// The incidents it is about.
        incident_ids: Vec<Uuid>,
        /// The accepted handover it comes from.
        handover_id: Option<Uuid>,
        /// The criteria met.
        criteria: String,
        /// Who activated it.
        activated_by: String,
    },
    /// One more incident belongs to the crisis.
    CrisisIncidentLinked {
        /// The incident.
        incident_id: Uuid,
        /// Who linked it.
        linked_by: String,
    },
    /// Information received and graded.
    InformationReceived {
        /// The item.
        information_id: Uuid,
        /// Where it came from.
        source: String,
        /// What it says.
        content: String,
        /// Its grade.
        grade: Grade,
        /// When the source observed it.
        observed_at: DateTime<Utc>,
        /// Who logged it.
        logged_by: String,
    },
    /// An item's grade changed.
    InformationRegraded {
        /// The item.
        information_id: Uuid,
        /// The grade before.
        previous: Grade,
        /// The grade now.
        grade: Grade,
        /// Why.
        reason: String,
        /// Who regraded it.
        regraded_by: String,
    },
    /// Items contradict each other.
    InformationConflictFlagged {
        /// The items.
        information_ids: Vec<Uuid>,
        /// What conflicts.
        note: String,
        /// Who flagged it.
        flagged_by: String,
    },
    /// A decision, as taken.
    DecisionRecorded(Box<DecisionRecord>),
    /// A decision replaced by a later one; it stays on the record.
    DecisionSuperseded {
        /// The replaced decision.
        decision_id: Uuid,
        /// The decision replacing it.
        superseded_by: Uuid,
    },
    /// A decision reviewed.
    DecisionReviewed {
        /// The decision.
        decision_id: Uuid,
        /// What the review found.
        outcome: String,
        /// Who reviewed it.
        reviewed_by: String,
    },
    /// The CMC stood down.
    CrisisStoodDown {
        /// Who takes control next.
        handed_to: String,
        /// The decision behind it.
        decision_id: Uuid,
        /// Who stood it down.
        stood_down_by: String,
    },
}

impl DomainEvent for CrisisEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::CrisisActivated { .. } => "CrisisActivated",
            Self::CrisisIncidentLinked { .. } => "CrisisIncidentLinked",
            Self::InformationReceived { .. } => "InformationReceived",
            Self::InformationRegraded { .. } => "InformationRegraded",
            Self::InformationConflictFlagged { .. } => "InformationConflictFlagged",
            Self::DecisionRecorded(_) => "DecisionRecorded",
            Self::DecisionSuperseded { .. } => "DecisionSuperseded",
            Self::DecisionReviewed { .. } => "DecisionReviewed",
            Self::CrisisStoodDown { .. } => "CrisisStoodDown",
        }
    }
}

/// The crisis aggregate's state.
#[derive(Debug, Clone, Default)]
pub struct Crisis {
    state: Option<CrisisState>,
}

/// What the rules need to know about a crisis. Only what they need: the log itself holds
/// the content, so a long crisis stays small in memory.
#[derive(Debug, Clone)]
pub struct CrisisState {
    /// The linked incidents.
    pub incident_ids: Vec<Uuid>,
    /// Each information item's current grade.
    pub grades: std::collections::HashMap<Uuid, Grade>,
    /// Decisions: id → whether it is current (not superseded).
    pub decisions: std::collections::HashMap<Uuid, bool>,
    /// Stood down.
    pub stood_down: bool,
}

impl Crisis {
    /// The state, when the crisis exists.
    pub fn state(&self) -> Option<&CrisisState> {
        self.state.as_ref()
    }
}

fn current_decision(s: &CrisisState, id: Uuid, field: &str) -> Result<(), DomainError> {
    match s.decisions.get(&id) {
        Some(true) => Ok(()),
        Some(false) => Err(DomainError::precondition(format!(
            "decision {id} has been superseded"
        ))),
        None => Err(DomainError::invalid(
            field,
            format!("no decision {id} in this crisis"),
        )),
    }
}

fn known_information(s: &CrisisState, id: Uuid, field: &str) -> Result<Grade, DomainError> {
    s.grades.get(&id).copied().ok_or_else(|| {
        DomainError::invalid(field, format!("no information item {id} in this crisis"))
    })
}

impl Aggregate for Crisis {
    const TYPE: &'static str = "crisis";
    type Command = CrisisCommand;
    type Event = CrisisEvent;

    fn decide(
        &self,
        command: &CrisisCommand,
        ctx: &Context,
    ) -> Result<Vec<CrisisEvent>, DomainError> {
        let actor = ctx.actor.clone();
        let s = match (command, &self.state) {
            (
                CrisisCommand::Activate {
                    title,
                    incident_ids,
                    handover_id,
                    criteria,
                },
                None,
            ) => {
                let title = Text::required("title", title, Limits::TITLE)?;
                if incident_ids.is_empty() {
                    return Err(DomainError::invalid(
                        "incident_ids",
                        "at least one is required",
                    ));
                }
                let criteria = if handover_id.is_some() {
                    Text::optional("criteria", criteria, Limits::RATIONALE)?
                } else {
                    Text::required("criteria", criteria, Limits::RATIONALE).map_err(|_| {
                        DomainError::invalid(
                            "criteria",
                            "is required when a crisis is declared without a handover",
                        )
                    })?
                };
                let mut ids = incident_ids.clone();
                ids.sort();
                ids.dedup();
                return Ok(vec![CrisisEvent::CrisisActivated {
                    title,
                    incident_ids: ids,
                    handover_id: *handover_id,
                    criteria,
                    activated_by: actor,
                }]);
            }
            (CrisisCommand::Activate { .. }, Some(_)) => {
                return Err(DomainError::precondition("the crisis is already active"));
            }
            (_, None) => return Err(DomainError::NotFound("crisis".into())),
            (_, Some(s)) => s,
        };
        if s.stood_down {
            return Err(DomainError::precondition("the crisis has stood down"));
        }
        let event = match command {
            CrisisCommand::Activate { .. } => unreachable!("handled above"),
            CrisisCommand::LinkIncident { incident_id } => {
                if s.incident_ids.contains(incident_id) {
                    return Err(DomainError::precondition(format!(
                        "incident {incident_id} is already linked"
                    )));
                }
                CrisisEvent::CrisisIncidentLinked {
                    incident_id: *incident_id,
                    linked_by: actor,
                }
            }
            CrisisCommand::ReceiveInformation {
                information_id,
                source,
                content,
                grade,
                observed_at,
            } => {
                if s.grades.contains_key(information_id) {
                    return Err(DomainError::precondition(format!(
                        "information {information_id} is already logged"
                    )));
                }
                let observed = Context {
                    occurred_at: *observed_at,
                    ..ctx.clone()
                };
                observed
                    .check_occurred_at("observed_at")
                    .or_else(|e| match e {
                        // Information often reaches the CMC long after it was observed: that is
                        // what observed_at records, not a late entry.
                        DomainError::Invalid { ref field, .. } if field == "late_reason" => Ok(()),
                        other => Err(other),
                    })?;
                CrisisEvent::InformationReceived {
                    information_id: *information_id,
                    source: Text::required("source", source, Limits::SOURCE)?,
                    content: Text::required("content", content, Limits::NOTE)?,
                    grade: *grade,
                    observed_at: *observed_at,
                    logged_by: actor,
                }
            }
            CrisisCommand::RegradeInformation {
                information_id,
                grade,
                reason,
            } => {
                let previous = known_information(s, *information_id, "information_id")?;
                if previous == *grade {
                    return Err(DomainError::precondition("the grade is unchanged"));
                }
                CrisisEvent::InformationRegraded {
                    information_id: *information_id,
                    previous,
                    grade: *grade,
                    reason: Text::required("reason", reason, Limits::RATIONALE)?,
                    regraded_by: actor,
                }
            }
            CrisisCommand::FlagConflict {
                information_ids,
                note,
            } => {
                let mut ids = information_ids.clone();
                ids.sort();
                ids.dedup();
                if ids.len() < 2 {
                    return Err(DomainError::invalid(
                        "information_ids",
                        "a conflict needs at least two different items",
                    ));
                }
                for (i, id) in ids.iter().enumerate() {
                    known_information(s, *id, &format!("information_ids[{i}]"))?;
                }
                CrisisEvent::InformationConflictFlagged {
                    information_ids: ids,
                    note: Text::required("note", note, Limits::RATIONALE)?,
                    flagged_by: actor,
                }
            }
            CrisisCommand::RecordDecision(d) => {
                if s.decisions.contains_key(&d.decision_id) {
                    return Err(DomainError::precondition(format!(
                        "decision {} is already recorded",
                        d.decision_id
                    )));
                }
                let information_basis = d
                    .information
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        Ok(InformationBasis {
                            information_id: *id,
                            grade: known_information(s, *id, &format!("information[{i}]"))?,
                        })
                    })
                    .collect::<Result<Vec<_>, DomainError>>()?;
                if let Some(old) = d.supersedes {
                    current_decision(s, old, "supersedes")?;
                }
                let options = d
                    .options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        Ok(OptionConsidered {
                            option: Text::required(
                                &format!("options[{i}].option"),
                                &o.option,
                                Limits::RATIONALE,
                            )?,
                            why_not: Text::required(
                                &format!("options[{i}].why_not"),
                                &o.why_not,
                                Limits::RATIONALE,
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>, DomainError>>()?;
                let record = DecisionRecord {
                    decision_id: d.decision_id,
                    decision: Text::required("decision", &d.decision, Limits::RATIONALE)?,
                    rationale: Text::required("rationale", &d.rationale, Limits::RATIONALE)?,
                    options,
                    information_basis,
                    assumptions: Text::optional("assumptions", &d.assumptions, Limits::RATIONALE)?,
                    risks_accepted: Text::optional(
                        "risks_accepted",
                        &d.risks_accepted,
                        Limits::RATIONALE,
                    )?,
                    powers: Text::optional("powers", &d.powers, Limits::RATIONALE)?,
                    decision_maker: Text::required(
                        "decision_maker",
                        &d.decision_maker,
                        Limits::PERSON,
                    )?,
                    level: d.level,
                    joint_with: Text::optional("joint_with", &d.joint_with, Limits::PERSON)?,
                    review_by: d.review_by,
                    supersedes: d.supersedes,
                    recorded_by: actor,
                };
                let mut events = vec![CrisisEvent::DecisionRecorded(Box::new(record))];
                if let Some(old) = d.supersedes {
                    events.push(CrisisEvent::DecisionSuperseded {
                        decision_id: old,
                        superseded_by: d.decision_id,
                    });
                }
                return Ok(events);
            }
            CrisisCommand::ReviewDecision {
                decision_id,
                outcome,
            } => {
                if !s.decisions.contains_key(decision_id) {
                    return Err(DomainError::invalid(
                        "decision_id",
                        format!("no decision {decision_id} in this crisis"),
                    ));
                }
                CrisisEvent::DecisionReviewed {
                    decision_id: *decision_id,
                    outcome: Text::required("outcome", outcome, Limits::RATIONALE)?,
                    reviewed_by: actor,
                }
            }
            CrisisCommand::StandDown {
                handed_to,
                decision_id,
            } => {
                current_decision(s, *decision_id, "decision_id")?;
                CrisisEvent::CrisisStoodDown {
                    handed_to: Text::required("handed_to", handed_to, Limits::PERSON)?,
                    decision_id: *decision_id,
                    stood_down_by: actor,
                }
            }
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &CrisisEvent) {
        if let CrisisEvent::CrisisActivated { incident_ids, .. } = event {
            self.state = Some(CrisisState {
                incident_ids: incident_ids.clone(),
                grades: Default::default(),
                decisions: Default::default(),
                stood_down: false,
            });
            return;
        }
        let Some(s) = &mut self.state else { return };
        match event {
            CrisisEvent::CrisisActivated { .. }
            | CrisisEvent::InformationConflictFlagged { .. }
            | CrisisEvent::DecisionReviewed { .. } => {}
            CrisisEvent::CrisisIncidentLinked { incident_id, .. } => {
                s.incident_ids.push(*incident_id)
            }
            CrisisEvent::InformationReceived {
                information_id,
                grade,
                ..
            }
            | CrisisEvent::InformationRegraded {
                information_id,
                grade,
                ..
            } => {
                s.grades.insert(*information_id, *grade);
            }
            CrisisEvent::DecisionRecorded(d) => {
                s.decisions.insert(d.decision_id, true);
            }
            CrisisEvent::DecisionSuperseded { decision_id, .. } => {
                s.decisions.insert(*decision_id, false);
            }
            CrisisEvent::CrisisStoodDown { .. } => s.stood_down = true,
        }
    }

    fn exists(&self) -> bool {
        self.state.is_some()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 15, 0, 0).unwrap()
    }

    fn ctx() -> Context {
        Context::now("lena.loggist", now())
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn grade(reliability: Reliability, credibility: u8, basis: Basis) -> Grade {
        Grade {
            reliability,
            credibility: Credibility::new("credibility", credibility).unwrap(),
            basis,
        }
    }

    fn activated() -> CrisisEvent {
        CrisisEvent::CrisisActivated {
            title: "Ransomware: LHR operations".into(),
            incident_ids: vec![id(1)],
            handover_id: Some(id(2)),
            criteria: String::new(),
            activated_by: "carla.cmc".into(),
        }
    }

    fn info(n: u128, g: Grade) -> CrisisEvent {
        CrisisEvent::InformationReceived {
            information_id: id(n),
            source: "vendor IR team".into(),
            content: format!("item {n}"),
            grade: g,
            observed_at: now() - Duration::minutes(30),
            logged_by: "lena.loggist".into(),
        }
    }

    fn given(events: &[CrisisEvent]) -> Crisis {
        let mut c = Crisis::default();
        for e in events {
            c.evolve(e);
        }
        c
    }

    fn decision(n: u128, information: Vec<Uuid>, supersedes: Option<Uuid>) -> CrisisCommand {
        CrisisCommand::RecordDecision(Box::new(DecisionInput {
            decision_id: id(n),
            decision: "Shut down the OT gateway".into(),
            rationale: "prevent spread to airside systems".into(),
            options: vec![OptionConsidered {
                option: "monitor only".into(),
                why_not: "spread would be detected too late".into(),
            }],
            information,
            assumptions: "backups of OT are clean".into(),
            risks_accepted: "4 hours of manual baggage handling".into(),
            powers: "crisis plan §4.2".into(),
            decision_maker: "carla.cmc".into(),
            level: Level::Strategic,
            joint_with: String::new(),
            review_by: Some(now() + Duration::hours(4)),
            supersedes,
        }))
    }

    fn recorded(c: &Crisis, command: &CrisisCommand) -> Vec<CrisisEvent> {
        c.decide(command, &ctx()).unwrap()
    }

    fn precondition(r: Result<Vec<CrisisEvent>, DomainError>) {
        assert!(matches!(r, Err(DomainError::Precondition(_))), "{r:?}");
    }

    fn invalid(r: Result<Vec<CrisisEvent>, DomainError>) -> String {
        match r {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn a_crisis_is_activated_once_from_a_handover_or_declared_with_criteria() {
        let from_handover = CrisisCommand::Activate {
            title: "Ransomware: LHR operations".into(),
            incident_ids: vec![id(1), id(1)],
            handover_id: Some(id(2)),
            criteria: String::new(),
        };
        let events = given(&[])
            .decide(&from_handover, &Context::now("carla.cmc", now()))
            .unwrap();
        assert_eq!(events, vec![activated()]);
        precondition(given(&[activated()]).decide(&from_handover, &ctx()));
        let declared = CrisisCommand::Activate {
            title: "Bomb threat, terminal 2".into(),
            incident_ids: vec![id(3)],
            handover_id: None,
            criteria: String::new(),
        };
        assert_eq!(invalid(given(&[]).decide(&declared, &ctx())), "criteria");
        let none = CrisisCommand::Activate {
            title: "x".into(),
            incident_ids: vec![],
            handover_id: Some(id(2)),
            criteria: String::new(),
        };
        assert_eq!(invalid(given(&[]).decide(&none, &ctx())), "incident_ids");
    }

    #[test]
    fn more_incidents_are_linked_once_each() {
        let c = given(&[activated()]);
        let link = |n| CrisisCommand::LinkIncident { incident_id: id(n) };
        assert_eq!(recorded(&c, &link(9)).len(), 1);
        precondition(c.decide(&link(1), &ctx()));
    }

    #[test]
    fn information_is_graded_on_receipt_and_regraded_with_a_reason() {
        let c = given(&[activated()]);
        let receive = CrisisCommand::ReceiveInformation {
            information_id: id(10),
            source: "airport police".into(),
            content: "suspicious vehicle at the OT plant gate".into(),
            grade: grade(Reliability::B, 2, Basis::Fact),
            observed_at: now() - Duration::hours(3),
        };
        assert_eq!(
            recorded(&c, &receive).len(),
            1,
            "observed long ago is not a late entry"
        );
        let c = given(&[activated(), info(10, grade(Reliability::B, 2, Basis::Fact))]);
        precondition(c.decide(&receive, &ctx()));
        let regrade = CrisisCommand::RegradeInformation {
            information_id: id(10),
            grade: grade(Reliability::B, 5, Basis::Fact),
            reason: "CCTV shows a delivery van".into(),
        };
        match &recorded(&c, &regrade)[..] {
            [
                CrisisEvent::InformationRegraded {
                    previous, grade: g, ..
                },
            ] => {
                assert_eq!(previous.credibility.value(), 2);
                assert_eq!(g.credibility.value(), 5);
            }
            other => panic!("{other:?}"),
        }
        let unknown = CrisisCommand::RegradeInformation {
            information_id: id(99),
            grade: grade(Reliability::A, 1, Basis::Fact),
            reason: "x".into(),
        };
        assert_eq!(invalid(c.decide(&unknown, &ctx())), "information_id");
        assert!(Credibility::new("credibility", 7).is_err());
    }

    #[test]
    fn a_conflict_is_flagged_between_at_least_two_known_items() {
        let c = given(&[
            activated(),
            info(10, grade(Reliability::B, 2, Basis::Fact)),
            info(11, grade(Reliability::C, 3, Basis::Assumption)),
        ]);
        let flag = |ids: Vec<Uuid>| CrisisCommand::FlagConflict {
            information_ids: ids,
            note: "police say the gate is closed; the vendor says it is open".into(),
        };
        assert_eq!(recorded(&c, &flag(vec![id(10), id(11)])).len(), 1);
        assert_eq!(
            invalid(c.decide(&flag(vec![id(10), id(10)]), &ctx())),
            "information_ids"
        );
        assert_eq!(
            invalid(c.decide(&flag(vec![id(10), id(12)]), &ctx())),
            "information_ids[1]"
        );
    }

    #[test]
    fn a_decision_keeps_the_grades_it_relied_on_whatever_later_regrading_says() {
        let as_received = grade(Reliability::B, 2, Basis::Fact);
        let c = given(&[activated(), info(10, as_received)]);
        let events = recorded(&c, &decision(20, vec![id(10)], None));
        let CrisisEvent::DecisionRecorded(d) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            d.information_basis,
            vec![InformationBasis {
                information_id: id(10),
                grade: as_received
            }]
        );
        assert_eq!(d.recorded_by, "lena.loggist");
        // A later regrading is its own event; the decision's record is untouched.
        let mut later = vec![activated(), info(10, as_received), events[0].clone()];
        later.push(CrisisEvent::InformationRegraded {
            information_id: id(10),
            previous: as_received,
            grade: grade(Reliability::E, 5, Basis::Fact),
            reason: "source discredited".into(),
            regraded_by: "x".into(),
        });
        let c = given(&later);
        assert_eq!(c.state().unwrap().grades[&id(10)].credibility.value(), 5);
        assert_eq!(
            invalid(c.decide(&decision(21, vec![id(99)], None), &ctx())),
            "information[0]"
        );
    }

    #[test]
    fn a_decision_needs_its_rationale_maker_and_reasons_for_rejected_options() {
        let c = given(&[activated()]);
        let CrisisCommand::RecordDecision(mut d) = decision(20, vec![], None) else {
            unreachable!()
        };
        d.rationale = String::new();
        assert_eq!(
            invalid(c.decide(&CrisisCommand::RecordDecision(d.clone()), &ctx())),
            "rationale"
        );
        d.rationale = "r".into();
        d.options[0].why_not = " ".into();
        assert_eq!(
            invalid(c.decide(&CrisisCommand::RecordDecision(d.clone()), &ctx())),
            "options[0].why_not"
        );
        d.options[0].why_not = "w".into();
        d.decision_maker = String::new();
        assert_eq!(
            invalid(c.decide(&CrisisCommand::RecordDecision(d), &ctx())),
            "decision_maker"
        );
    }

    #[test]
    fn a_superseding_decision_leaves_the_old_one_on_the_record_as_superseded() {
        let c = given(&[activated()]);
        let first = recorded(&c, &decision(20, vec![], None));
        let c = given(&[activated(), first[0].clone()]);
        let events = recorded(&c, &decision(21, vec![], Some(id(20))));
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            CrisisEvent::DecisionSuperseded {
                decision_id: id(20),
                superseded_by: id(21)
            }
        );
        let mut history = vec![activated(), first[0].clone()];
        history.extend(events);
        let c = given(&history);
        // A superseded decision cannot be superseded again, nor back a stand-down.
        precondition(c.decide(&decision(22, vec![], Some(id(20))), &ctx()));
        precondition(c.decide(
            &CrisisCommand::StandDown {
                handed_to: "tom.tactical".into(),
                decision_id: id(20),
            },
            &ctx(),
        ));
        // It can still be reviewed: reviews concern the record.
        let review = CrisisCommand::ReviewDecision {
            decision_id: id(20),
            outcome: "superseded correctly".into(),
        };
        assert_eq!(recorded(&c, &review).len(), 1);
        precondition(c.decide(&decision(21, vec![], None), &ctx()));
    }

    #[test]
    fn stand_down_names_who_takes_control_and_is_backed_by_a_current_decision() {
        let first = recorded(&given(&[activated()]), &decision(20, vec![], None));
        let c = given(&[activated(), first[0].clone()]);
        let stand_down = |n| CrisisCommand::StandDown {
            handed_to: "tom.tactical".into(),
            decision_id: id(n),
        };
        assert_eq!(invalid(c.decide(&stand_down(99), &ctx())), "decision_id");
        let events = recorded(&c, &stand_down(20));
        let c = given(&[activated(), first[0].clone(), events[0].clone()]);
        // A stood-down crisis refuses everything.
        precondition(c.decide(&CrisisCommand::LinkIncident { incident_id: id(5) }, &ctx()));
        precondition(c.decide(&decision(30, vec![], None), &ctx()));
    }

    #[test]
    fn commands_on_a_crisis_never_activated_are_not_found() {
        let r = given(&[]).decide(&CrisisCommand::LinkIncident { incident_id: id(1) }, &ctx());
        assert!(matches!(r, Err(DomainError::NotFound(_))));
    }

    #[test]
    fn events_round_trip_through_their_stored_payloads() {
        let first = recorded(&given(&[activated()]), &decision(20, vec![], None));
        for e in [
            activated(),
            info(10, grade(Reliability::F, 6, Basis::Assumption)),
            first[0].clone(),
        ] {
            let payload = e.to_payload().unwrap();
            assert_eq!(
                CrisisEvent::from_payload(e.event_type(), 1, &payload).unwrap(),
                e
            );
        }
    }
}
