//! The Crisis aggregate — the CMC log: who is in the Crisis Management Centre, what it aims at,
//! what it is told and how it grades it, what it decides on it, what it has done and what it
//! says, until stand-down.
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
//! * attendance: a person arrives once in a role (arriving again in another role changes it)
//!   and leaves only when present; nobody logs their own arrival in a role that approves
//!   communications (crisis lead, communications, legal);
//! * every entry dated more than an hour back carries the reason it is late;
//! * strategic objectives are versioned: each set is a new version, at least one objective;
//! * a situation report states its "as at" time (not in the future), its confidence and its
//!   known unknowns; M/ETHANE reports fill every heading;
//! * a current decision may be amended with a reason (the amendment is added, the record
//!   stays);
//! * an action has an owner and a due time after its assignment; it goes assigned → in
//!   progress → done, cancelled (with a note) or transferred (with a note and a new owner), and
//!   a final status is never changed; overdue is derived, not stored;
//! * an item is corroborated by other items it names, contradicted when flagged in a conflict,
//!   and superseded, once, by a newer item that is not itself superseded; a decision records
//!   each item it relies on with its grade, and whether it was corroborated, contradicted or
//!   superseded, as they stood when it was logged, and never relies on a superseded item
//!   unless it is logged late (it was taken before it was logged);
//! * a communication is drafted for an audience with a channel and a TLP, approved by someone
//!   other than its drafter who is logged present in the role the audience requires (or as
//!   crisis lead), and only then sent, once; a sent communication may be retracted, once,
//!   with a reason, by someone present in that same role (or as crisis lead) — the retraction
//!   is recorded, the communication never erased;
//! * a crisis goes active → stabilising (with a reason, once) → stood down → reviewed;
//! * stand-down names who takes control next and is backed by a current decision taken at
//!   `STRATEGIC` (standing the CMC down is the CMC's own decision, not a tactical one it
//!   logged);
//! * a stood-down crisis refuses everything but its post-crisis review, recorded once, the
//!   progress of its actions still open (their owners carry them on after the CMC, and an
//!   action nobody could close would stay overdue for ever) and the retraction of a sent
//!   communication (often found wrong afterwards); a reviewed crisis refuses everything else
//!   too.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// Persistent maps: a crisis's state is cloned on every command (the handler's cache keeps the
// state before, the commit gets the state after), and with tens of thousands of entries a
// copy would grow with its history; these share structure and clone in constant time.
use imbl::{HashMap, HashSet};

use crate::{
    Aggregate, Context, DomainError, DomainEvent, Level, Limits, Text, handover::Confidence,
    values::enum_codes,
};

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

/// One item a decision relied on, with its grade and standing when the decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InformationBasis {
    /// The information item.
    pub information_id: Uuid,
    /// Its grade at that moment.
    pub grade: Grade,
    /// Other items confirmed it by then (absent from decisions recorded before standing was).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corroborated: bool,
    /// It was flagged as conflicting with other items by then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub contradicted: bool,
    /// A newer item had replaced it by the time the decision was logged (only a decision
    /// logged late may rely on one: it was taken before).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
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

enum_codes! {
    /// The role a person holds in the CMC.
    CmcRole { CrisisLead = 1: "CRISIS_LEAD", Communications = 2: "COMMUNICATIONS", Legal = 3: "LEGAL", Loggist = 4: "LOGGIST", Member = 5: "MEMBER", Liaison = 6: "LIAISON" }
}

enum_codes! {
    /// Who a communication is for.
    Audience { Internal = 1: "INTERNAL", Staff = 2: "STAFF", Customers = 3: "CUSTOMERS", Partners = 4: "PARTNERS", Media = 5: "MEDIA", Regulator = 6: "REGULATOR", LawEnforcement = 7: "LAW_ENFORCEMENT" }
}

impl Audience {
    /// The CMC role whose approval a communication to this audience needs (the crisis lead
    /// may approve any): public statements are the crisis lead's, statements to regulators
    /// and law enforcement are legal's, the rest are communications'.
    pub fn approver(self) -> CmcRole {
        match self {
            Self::Internal | Self::Staff | Self::Customers | Self::Partners => {
                CmcRole::Communications
            }
            Self::Media => CmcRole::CrisisLead,
            Self::Regulator | Self::LawEnforcement => CmcRole::Legal,
        }
    }
}

enum_codes! {
    /// Traffic Light Protocol 2.0: how far an entry may be shared.
    Tlp { Clear = 1: "CLEAR", Green = 2: "GREEN", Amber = 3: "AMBER", AmberStrict = 4: "AMBER+STRICT", Red = 5: "RED" }
}

enum_codes! {
    /// Where an action stands; overdue is derived from its due time, never stored.
    ActionStatus { Assigned = 1: "ASSIGNED", InProgress = 2: "IN_PROGRESS", Done = 3: "DONE", Cancelled = 4: "CANCELLED", Transferred = 5: "TRANSFERRED" }
}

impl ActionStatus {
    /// Done, cancelled or transferred: nothing changes it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Cancelled | Self::Transferred)
    }
}

/// Whether a person arrived in the CMC or left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Attendance {
    /// Joined the CMC.
    Arrived,
    /// Left it.
    Left,
}

/// A situation report's body: M/ETHANE (JESIP) or free form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SitrepBody {
    /// JESIP M/ETHANE.
    Methane {
        /// Major incident declared, or on standby.
        major_incident: String,
        /// Exact location.
        exact_location: String,
        /// Type of incident.
        incident_type: String,
        /// Hazards present or suspected.
        hazards: String,
        /// Access routes that are safe to use.
        access: String,
        /// Number, type and severity of casualties (or people and services affected).
        casualties: String,
        /// Emergency services and partners present and required.
        emergency_services: String,
    },
    /// Free text.
    Free {
        /// The report.
        text: String,
    },
}

impl SitrepBody {
    fn checked(&self) -> Result<Self, DomainError> {
        let f = |name: &str, v: &str| Text::required(&format!("report.{name}"), v, Limits::NOTE);
        Ok(match self {
            Self::Methane {
                major_incident,
                exact_location,
                incident_type,
                hazards,
                access,
                casualties,
                emergency_services,
            } => Self::Methane {
                major_incident: f("major_incident", major_incident)?,
                exact_location: f("exact_location", exact_location)?,
                incident_type: f("incident_type", incident_type)?,
                hazards: f("hazards", hazards)?,
                access: f("access", access)?,
                casualties: f("casualties", casualties)?,
                emergency_services: f("emergency_services", emergency_services)?,
            },
            Self::Free { text } => Self::Free {
                text: f("text", text)?,
            },
        })
    }
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
        /// The default TLP of its entries (AMBER when not given).
        tlp: Option<Tlp>,
    },
    /// Log a person arriving in the CMC, or leaving it.
    LogAttendance {
        /// Who.
        person: String,
        /// In which role.
        role: CmcRole,
        /// Arrived or left.
        change: Attendance,
    },
    /// Set the strategic objectives (a new version replaces the last).
    SetObjectives {
        /// The objectives, in priority order.
        objectives: Vec<String>,
        /// Why they are set or changed.
        rationale: String,
    },
    /// Issue a situation report.
    IssueSituationReport {
        /// The report's id.
        report_id: Uuid,
        /// Its body.
        body: SitrepBody,
        /// The time the situation is described as at.
        as_at: DateTime<Utc>,
        /// How sure it is.
        confidence: Confidence,
        /// What is known not to be known.
        known_unknowns: String,
    },
    /// Amend a current decision (its record stays; the amendment is added).
    AmendDecision {
        /// The decision.
        decision_id: Uuid,
        /// What changes.
        amendment: String,
        /// Why.
        reason: String,
    },
    /// Assign an action.
    AssignAction {
        /// The action's id.
        action_id: Uuid,
        /// What is to be done.
        description: String,
        /// Who owns it.
        owner: String,
        /// When it is due.
        due_at: DateTime<Utc>,
        /// The decision it carries out, if any.
        decision_id: Option<Uuid>,
    },
    /// Move an action on.
    ChangeActionStatus {
        /// The action.
        action_id: Uuid,
        /// Its new status.
        status: ActionStatus,
        /// A note (required to cancel or transfer).
        note: String,
        /// The new owner, when transferred.
        transferred_to: String,
    },
    /// Draft a communication.
    DraftCommunication {
        /// The communication's id.
        communication_id: Uuid,
        /// Who it is for.
        audience: Audience,
        /// How it goes out (e-mail, press release, regulator portal…).
        channel: String,
        /// How far it may be shared.
        tlp: Tlp,
        /// The text.
        content: String,
    },
    /// Approve a drafted communication, acting in a CMC role.
    ApproveCommunication {
        /// The communication.
        communication_id: Uuid,
        /// The role the approver acts in.
        role: CmcRole,
    },
    /// Record that an approved communication went out.
    SendCommunication {
        /// The communication.
        communication_id: Uuid,
    },
    /// Retract a sent communication (a correction or withdrawal went out), acting in a CMC
    /// role.
    RetractCommunication {
        /// The communication.
        communication_id: Uuid,
        /// Why.
        reason: String,
        /// The role the retracting person acts in.
        role: CmcRole,
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
    /// Record that other items confirm an item.
    CorroborateInformation {
        /// The item.
        information_id: Uuid,
        /// The items that confirm it (at least one).
        corroborated_by: Vec<Uuid>,
        /// How they confirm it.
        note: String,
    },
    /// Record that a newer item replaces an item.
    SupersedeInformation {
        /// The item replaced.
        information_id: Uuid,
        /// The item that replaces it.
        superseded_by: Uuid,
        /// Why.
        reason: String,
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
    /// Declare the crisis stabilising: the situation is under control, stand-down is near.
    DeclareStabilising {
        /// Why.
        reason: String,
    },
    /// Record the post-crisis review of a stood-down crisis.
    RecordReview {
        /// What the review found (lessons go to the lessons register).
        findings: String,
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
        /// The default TLP of its entries.
        #[serde(default = "amber")]
        tlp: Tlp,
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
    /// Other items confirm an item.
    InformationCorroborated {
        /// The item.
        information_id: Uuid,
        /// The items that confirm it.
        corroborated_by: Vec<Uuid>,
        /// How.
        note: String,
        /// Who recorded it.
        recorded_by: String,
    },
    /// A newer item replaces an item; the old one stays on the record.
    InformationSuperseded {
        /// The item replaced.
        information_id: Uuid,
        /// The item that replaces it.
        superseded_by: Uuid,
        /// Why.
        reason: String,
        /// Who recorded it.
        recorded_by: String,
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
    /// A person arrived in the CMC or left it.
    CrisisAttendanceLogged {
        /// Who.
        person: String,
        /// In which role.
        role: CmcRole,
        /// Arrived or left.
        change: Attendance,
        /// Who logged it.
        logged_by: String,
    },
    /// The strategic objectives, as of this version.
    StrategicObjectivesSet {
        /// 1 for the first set, then one more each time.
        version: u32,
        /// The objectives, in priority order.
        objectives: Vec<String>,
        /// Why.
        rationale: String,
        /// Who set them.
        set_by: String,
    },
    /// A situation report.
    SituationReportIssued {
        /// Its id.
        report_id: Uuid,
        /// Its body.
        body: SitrepBody,
        /// As at.
        as_at: DateTime<Utc>,
        /// How sure.
        confidence: Confidence,
        /// Known unknowns.
        known_unknowns: String,
        /// Who issued it.
        issued_by: String,
    },
    /// A decision amended: the amendment is added; the record is untouched.
    DecisionAmended {
        /// The decision.
        decision_id: Uuid,
        /// What changes.
        amendment: String,
        /// Why.
        reason: String,
        /// Who amended it.
        amended_by: String,
    },
    /// An action assigned.
    ActionAssigned {
        /// Its id.
        action_id: Uuid,
        /// What is to be done.
        description: String,
        /// Who owns it.
        owner: String,
        /// When it is due.
        due_at: DateTime<Utc>,
        /// The decision it carries out.
        decision_id: Option<Uuid>,
        /// Who assigned it.
        assigned_by: String,
    },
    /// An action moved on.
    ActionStatusChanged {
        /// The action.
        action_id: Uuid,
        /// Its status before.
        from: ActionStatus,
        /// Its status now.
        to: ActionStatus,
        /// The note.
        note: String,
        /// The new owner, when transferred.
        transferred_to: Option<String>,
        /// Who changed it.
        changed_by: String,
    },
    /// A communication drafted.
    CommunicationDrafted {
        /// Its id.
        communication_id: Uuid,
        /// Who it is for.
        audience: Audience,
        /// How it goes out.
        channel: String,
        /// How far it may be shared.
        tlp: Tlp,
        /// The text.
        content: String,
        /// Who drafted it.
        drafted_by: String,
    },
    /// A communication approved by the role its audience requires.
    CommunicationApproved {
        /// The communication.
        communication_id: Uuid,
        /// Who approved it.
        approved_by: String,
        /// In which role.
        role: CmcRole,
    },
    /// A communication sent.
    CommunicationSent {
        /// The communication.
        communication_id: Uuid,
        /// Who sent it.
        sent_by: String,
    },
    /// A sent communication retracted.
    CommunicationRetracted {
        /// The communication.
        communication_id: Uuid,
        /// Why.
        reason: String,
        /// Who retracted it.
        retracted_by: String,
        /// In which CMC role.
        role: CmcRole,
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
    /// The crisis is stabilising.
    CrisisStabilising {
        /// Why.
        reason: String,
        /// Who declared it.
        declared_by: String,
    },
    /// The post-crisis review of a stood-down crisis.
    CrisisReviewed {
        /// What it found.
        findings: String,
        /// Who recorded it.
        reviewed_by: String,
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
            Self::InformationCorroborated { .. } => "InformationCorroborated",
            Self::InformationSuperseded { .. } => "InformationSuperseded",
            Self::DecisionRecorded(_) => "DecisionRecorded",
            Self::DecisionSuperseded { .. } => "DecisionSuperseded",
            Self::DecisionReviewed { .. } => "DecisionReviewed",
            Self::CrisisAttendanceLogged { .. } => "CrisisAttendanceLogged",
            Self::StrategicObjectivesSet { .. } => "StrategicObjectivesSet",
            Self::SituationReportIssued { .. } => "SituationReportIssued",
            Self::DecisionAmended { .. } => "DecisionAmended",
            Self::ActionAssigned { .. } => "ActionAssigned",
            Self::ActionStatusChanged { .. } => "ActionStatusChanged",
            Self::CommunicationDrafted { .. } => "CommunicationDrafted",
            Self::CommunicationApproved { .. } => "CommunicationApproved",
            Self::CommunicationSent { .. } => "CommunicationSent",
            Self::CommunicationRetracted { .. } => "CommunicationRetracted",
            Self::CrisisStoodDown { .. } => "CrisisStoodDown",
            Self::CrisisStabilising { .. } => "CrisisStabilising",
            Self::CrisisReviewed { .. } => "CrisisReviewed",
        }
    }
}

/// The crisis aggregate's state.
#[derive(Debug, Clone, Default)]
pub struct Crisis {
    state: Option<CrisisState>,
}

/// What the rules need to know about a crisis. Only what they need: the log itself holds
/// the content, so a long crisis stays small in memory, and its maps are persistent, so a
/// command's copy of it costs the same at the ten-thousandth entry as at the first.
#[derive(Debug, Clone)]
pub struct CrisisState {
    /// The linked incidents.
    pub incident_ids: Vec<Uuid>,
    /// Each information item's current grade.
    pub grades: HashMap<Uuid, Grade>,
    /// Items other items confirm.
    pub corroborated: HashSet<Uuid>,
    /// Items flagged as conflicting with others.
    pub contradicted: HashSet<Uuid>,
    /// Items replaced by a newer one: item → its replacement.
    pub superseded: HashMap<Uuid, Uuid>,
    /// Decisions: id → whether it is current (not superseded).
    pub decisions: HashMap<Uuid, bool>,
    /// The decisions taken at `STRATEGIC`.
    pub strategic: HashSet<Uuid>,
    /// Who is in the CMC now, and in which role.
    pub present: HashMap<String, CmcRole>,
    /// The version of the objectives last set.
    pub objectives_version: u32,
    /// The situation reports issued.
    pub reports: HashSet<Uuid>,
    /// Each action's status.
    pub actions: HashMap<Uuid, ActionStatus>,
    /// Each communication's audience, drafter and stage.
    pub communications: HashMap<Uuid, CommunicationState>,
    /// Stabilising.
    pub stabilising: bool,
    /// Stood down: the decision behind it and who takes control next.
    pub stood_down: Option<(Uuid, String)>,
    /// Reviewed after stand-down.
    pub reviewed: bool,
}

/// What the rules need to know about a communication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunicationState {
    /// Who it is for.
    pub audience: Audience,
    /// Who drafted it.
    pub drafted_by: String,
    /// Approved.
    pub approved: bool,
    /// Sent.
    pub sent: bool,
    /// Retracted after it was sent.
    pub retracted: bool,
}

fn amber() -> Tlp {
    Tlp::Amber
}

impl Crisis {
    /// The state, when the crisis exists.
    pub fn state(&self) -> Option<&CrisisState> {
        self.state.as_ref()
    }
}

/// Decision `id` of a decision log (id → current) is on it and not superseded; `owner` names
/// the log's aggregate in the error.
pub(crate) fn current_decision(
    decisions: &HashMap<Uuid, bool>,
    id: Uuid,
    field: &str,
    owner: &str,
) -> Result<(), DomainError> {
    match decisions.get(&id) {
        Some(true) => Ok(()),
        Some(false) => Err(DomainError::precondition(format!(
            "decision {id} has been superseded"
        ))),
        None => Err(DomainError::invalid(
            field,
            format!("no decision {id} in this {owner}"),
        )),
    }
}

/// The record of decision `d` as `ctx.actor` logs it, relying on `information_basis`: each
/// text within its limit, at most [`Limits::OPTIONS`] options, and a review not due before
/// the decision was taken (a late entry's review may already be due).
pub(crate) fn decision_record(
    d: &DecisionInput,
    information_basis: Vec<InformationBasis>,
    ctx: &Context,
) -> Result<DecisionRecord, DomainError> {
    if d.options.len() > Limits::OPTIONS {
        return Err(DomainError::invalid(
            "options",
            format!(
                "has {} entries, at most {} are allowed",
                d.options.len(),
                Limits::OPTIONS
            ),
        ));
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
    Ok(DecisionRecord {
        decision_id: d.decision_id,
        decision: Text::required("decision", &d.decision, Limits::RATIONALE)?,
        rationale: Text::required("rationale", &d.rationale, Limits::RATIONALE)?,
        options,
        information_basis,
        assumptions: Text::optional("assumptions", &d.assumptions, Limits::RATIONALE)?,
        risks_accepted: Text::optional("risks_accepted", &d.risks_accepted, Limits::RATIONALE)?,
        powers: Text::optional("powers", &d.powers, Limits::RATIONALE)?,
        decision_maker: Text::required("decision_maker", &d.decision_maker, Limits::PERSON)?,
        level: d.level,
        joint_with: Text::optional("joint_with", &d.joint_with, Limits::PERSON)?,
        review_by: match d.review_by {
            Some(r) if r < ctx.occurred_at => {
                return Err(DomainError::invalid(
                    "review_by",
                    "is before the decision was taken (occurred_at)",
                ));
            }
            r => r,
        },
        supersedes: d.supersedes,
        recorded_by: ctx.actor.clone(),
    })
}

/// `actor`, acting in `role`, may approve or retract communication `c`: the role is the one
/// its audience requires (or the crisis lead's) and `actor` is logged present in it.
fn speaks_for(
    s: &CrisisState,
    c: &CommunicationState,
    actor: &str,
    role: CmcRole,
    needs: &str,
) -> Result<(), DomainError> {
    let required = c.audience.approver();
    if role != required && role != CmcRole::CrisisLead {
        return Err(DomainError::precondition(format!(
            "a communication to {} {needs} by {} or CRISIS_LEAD, not {}",
            c.audience.as_str(),
            required.as_str(),
            role.as_str()
        )));
    }
    if s.present.get(actor) != Some(&role) {
        return Err(DomainError::precondition(format!(
            "{actor} is not logged as present in the CMC as {}",
            role.as_str()
        )));
    }
    Ok(())
}

fn communication(s: &CrisisState, id: Uuid) -> Result<&CommunicationState, DomainError> {
    s.communications.get(&id).ok_or_else(|| {
        DomainError::invalid(
            "communication_id",
            format!("no communication {id} in this crisis"),
        )
    })
}

/// At most [`Limits::INFORMATION_ITEMS`] items named in `field`.
fn few_items(field: &str, items: &[Uuid]) -> Result<(), DomainError> {
    if items.len() > Limits::INFORMATION_ITEMS {
        return Err(DomainError::invalid(
            field,
            format!(
                "names {} items, at most {} are allowed",
                items.len(),
                Limits::INFORMATION_ITEMS
            ),
        ));
    }
    Ok(())
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
        // Every entry of the CMC log obeys the late-entry rule.
        ctx.check_occurred_at("occurred_at")?;
        let actor = ctx.actor.clone();
        let s = match (command, &self.state) {
            (
                CrisisCommand::Activate {
                    title,
                    incident_ids,
                    handover_id,
                    criteria,
                    tlp,
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
                if ids.len() > Limits::CRISIS_INCIDENTS {
                    return Err(DomainError::invalid(
                        "incident_ids",
                        format!("at most {} are allowed", Limits::CRISIS_INCIDENTS),
                    ));
                }
                return Ok(vec![CrisisEvent::CrisisActivated {
                    title,
                    incident_ids: ids,
                    handover_id: *handover_id,
                    criteria,
                    tlp: tlp.unwrap_or(Tlp::Amber),
                    activated_by: actor,
                }]);
            }
            (CrisisCommand::Activate { .. }, Some(_)) => {
                return Err(DomainError::precondition("the crisis is already active"));
            }
            (_, None) => return Err(DomainError::NotFound("crisis".into())),
            (_, Some(s)) => s,
        };
        // What outlives the CMC: its open actions, carried on by their owners, and the
        // retraction of a statement found wrong after it stood down.
        let action_progress = matches!(
            command,
            CrisisCommand::ChangeActionStatus { .. } | CrisisCommand::RetractCommunication { .. }
        );
        if s.reviewed && !action_progress {
            return Err(DomainError::precondition(
                "the crisis has stood down and been reviewed: only its open actions move on, and \
                 a sent communication may be retracted",
            ));
        }
        if let CrisisCommand::RecordReview { findings } = command {
            if s.stood_down.is_none() {
                return Err(DomainError::precondition(
                    "a crisis is reviewed after it stands down",
                ));
            }
            return Ok(vec![CrisisEvent::CrisisReviewed {
                findings: Text::required("findings", findings, Limits::NOTE)?,
                reviewed_by: actor,
            }]);
        }
        if s.stood_down.is_some() && !action_progress {
            return Err(DomainError::precondition(
                "the crisis has stood down: only its post-crisis review, the progress of its \
                 open actions and the retraction of a sent communication can be recorded",
            ));
        }
        let event = match command {
            CrisisCommand::Activate { .. } => unreachable!("handled above"),
            CrisisCommand::LinkIncident { incident_id } => {
                if s.incident_ids.contains(incident_id) {
                    return Err(DomainError::precondition(format!(
                        "incident {incident_id} is already linked"
                    )));
                }
                if s.incident_ids.len() >= Limits::CRISIS_INCIDENTS {
                    return Err(DomainError::precondition(format!(
                        "the crisis already covers {} incidents, the most it can",
                        Limits::CRISIS_INCIDENTS
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
                few_items("information_ids", information_ids)?;
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
            CrisisCommand::CorroborateInformation {
                information_id,
                corroborated_by,
                note,
            } => {
                let note = Text::required("note", note, Limits::RATIONALE)?;
                known_information(s, *information_id, "information_id")?;
                few_items("corroborated_by", corroborated_by)?;
                let mut by = corroborated_by.clone();
                by.sort();
                by.dedup();
                if by.is_empty() || by.contains(information_id) {
                    return Err(DomainError::invalid(
                        "corroborated_by",
                        "names at least one item other than the one it confirms",
                    ));
                }
                for (i, id) in by.iter().enumerate() {
                    known_information(s, *id, &format!("corroborated_by[{i}]"))?;
                }
                CrisisEvent::InformationCorroborated {
                    information_id: *information_id,
                    corroborated_by: by,
                    note,
                    recorded_by: actor,
                }
            }
            CrisisCommand::SupersedeInformation {
                information_id,
                superseded_by,
                reason,
            } => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                known_information(s, *information_id, "information_id")?;
                known_information(s, *superseded_by, "superseded_by")?;
                if superseded_by == information_id {
                    return Err(DomainError::invalid(
                        "superseded_by",
                        "an item does not supersede itself",
                    ));
                }
                if let Some(newer) = s.superseded.get(information_id) {
                    return Err(DomainError::precondition(format!(
                        "item {information_id} is already superseded by {newer}"
                    )));
                }
                if let Some(newer) = s.superseded.get(superseded_by) {
                    return Err(DomainError::precondition(format!(
                        "item {superseded_by} is itself superseded by {newer}"
                    )));
                }
                CrisisEvent::InformationSuperseded {
                    information_id: *information_id,
                    superseded_by: *superseded_by,
                    reason,
                    recorded_by: actor,
                }
            }
            CrisisCommand::RecordDecision(d) => {
                if s.decisions.contains_key(&d.decision_id) {
                    return Err(DomainError::precondition(format!(
                        "decision {} is already recorded",
                        d.decision_id
                    )));
                }
                few_items("information_ids", &d.information)?;
                let information_basis = d
                    .information
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let field = format!("information_ids[{i}]");
                        let grade = known_information(s, *id, &field)?;
                        let superseded = s.superseded.get(id);
                        // A decision logged late was taken before it was logged, perhaps before
                        // the item was replaced: the record then says it was superseded.
                        if let (Some(newer), None) = (superseded, &ctx.late_reason) {
                            return Err(DomainError::invalid(
                                field,
                                format!("item {id} was superseded by {newer}: rely on that one"),
                            ));
                        }
                        Ok(InformationBasis {
                            information_id: *id,
                            grade,
                            corroborated: s.corroborated.contains(id),
                            contradicted: s.contradicted.contains(id),
                            superseded: superseded.is_some(),
                        })
                    })
                    .collect::<Result<Vec<_>, DomainError>>()?;
                if let Some(old) = d.supersedes {
                    current_decision(&s.decisions, old, "supersedes", "crisis")?;
                }
                let record = decision_record(d, information_basis, ctx)?;
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
            CrisisCommand::LogAttendance {
                person,
                role,
                change,
            } => {
                let person = Text::required("person", person, Limits::PERSON)?;
                let approving = matches!(
                    role,
                    CmcRole::CrisisLead | CmcRole::Communications | CmcRole::Legal
                );
                if approving && *change == Attendance::Arrived && person == actor {
                    // These roles approve communications: nobody logs themselves into one.
                    return Err(DomainError::precondition(format!(
                        "{person} cannot log their own arrival as {}: another member of the \
                         CMC (e.g. the loggist) logs it",
                        role.as_str()
                    )));
                }
                match (change, s.present.get(&person)) {
                    (Attendance::Arrived, Some(r)) if r == role => {
                        return Err(DomainError::precondition(format!(
                            "{person} is already present as {}",
                            r.as_str()
                        )));
                    }
                    (Attendance::Left, None) => {
                        return Err(DomainError::precondition(format!(
                            "{person} is not present"
                        )));
                    }
                    _ => {}
                }
                CrisisEvent::CrisisAttendanceLogged {
                    person,
                    role: *role,
                    change: *change,
                    logged_by: actor,
                }
            }
            CrisisCommand::SetObjectives {
                objectives,
                rationale,
            } => {
                if objectives.is_empty() {
                    return Err(DomainError::invalid(
                        "objectives",
                        "at least one is required",
                    ));
                }
                if objectives.len() > Limits::OBJECTIVES {
                    return Err(DomainError::invalid(
                        "objectives",
                        format!("at most {} are allowed", Limits::OBJECTIVES),
                    ));
                }
                let objectives = objectives
                    .iter()
                    .enumerate()
                    .map(|(i, o)| Text::required(&format!("objectives[{i}]"), o, Limits::RATIONALE))
                    .collect::<Result<Vec<_>, _>>()?;
                CrisisEvent::StrategicObjectivesSet {
                    version: s.objectives_version + 1,
                    objectives,
                    rationale: Text::required("rationale", rationale, Limits::RATIONALE)?,
                    set_by: actor,
                }
            }
            CrisisCommand::IssueSituationReport {
                report_id,
                body,
                as_at,
                confidence,
                known_unknowns,
            } => {
                if s.reports.contains(report_id) {
                    return Err(DomainError::precondition(format!(
                        "situation report {report_id} is already issued"
                    )));
                }
                if *as_at > ctx.now + chrono::Duration::seconds(Limits::FUTURE_SKEW_SECONDS) {
                    return Err(DomainError::invalid("as_at", "is in the future"));
                }
                CrisisEvent::SituationReportIssued {
                    report_id: *report_id,
                    body: body.checked()?,
                    as_at: *as_at,
                    confidence: *confidence,
                    known_unknowns: Text::required("known_unknowns", known_unknowns, Limits::NOTE)?,
                    issued_by: actor,
                }
            }
            CrisisCommand::AmendDecision {
                decision_id,
                amendment,
                reason,
            } => {
                current_decision(&s.decisions, *decision_id, "decision_id", "crisis")?;
                CrisisEvent::DecisionAmended {
                    decision_id: *decision_id,
                    amendment: Text::required("amendment", amendment, Limits::RATIONALE)?,
                    reason: Text::required("reason", reason, Limits::RATIONALE)?,
                    amended_by: actor,
                }
            }
            CrisisCommand::AssignAction {
                action_id,
                description,
                owner,
                due_at,
                decision_id,
            } => {
                if s.actions.contains_key(action_id) {
                    return Err(DomainError::precondition(format!(
                        "action {action_id} is already assigned"
                    )));
                }
                if let Some(d) = decision_id
                    && !s.decisions.contains_key(d)
                {
                    return Err(DomainError::invalid(
                        "decision_id",
                        format!("no decision {d} in this crisis"),
                    ));
                }
                if *due_at <= ctx.occurred_at {
                    return Err(DomainError::invalid(
                        "due_at",
                        "must be after the time the action is assigned",
                    ));
                }
                CrisisEvent::ActionAssigned {
                    action_id: *action_id,
                    description: Text::required("description", description, Limits::RATIONALE)?,
                    owner: Text::required("owner", owner, Limits::PERSON)?,
                    due_at: *due_at,
                    decision_id: *decision_id,
                    assigned_by: actor,
                }
            }
            CrisisCommand::ChangeActionStatus {
                action_id,
                status,
                note,
                transferred_to,
            } => {
                let Some(from) = s.actions.get(action_id).copied() else {
                    return Err(DomainError::invalid(
                        "action_id",
                        format!("no action {action_id} in this crisis"),
                    ));
                };
                if from.is_final() {
                    return Err(DomainError::precondition(format!(
                        "the action is {}: nothing changes it any more",
                        from.as_str()
                    )));
                }
                if *status == from || *status == ActionStatus::Assigned {
                    return Err(DomainError::precondition(format!(
                        "an action cannot go from {} to {}",
                        from.as_str(),
                        status.as_str()
                    )));
                }
                let note = if matches!(status, ActionStatus::Cancelled | ActionStatus::Transferred)
                {
                    Text::required("note", note, Limits::RATIONALE).map_err(|_| {
                        DomainError::invalid("note", "is required to cancel or transfer an action")
                    })?
                } else {
                    Text::optional("note", note, Limits::RATIONALE)?
                };
                let transferred_to = if *status == ActionStatus::Transferred {
                    Some(Text::required(
                        "transferred_to",
                        transferred_to,
                        Limits::PERSON,
                    )?)
                } else {
                    None
                };
                CrisisEvent::ActionStatusChanged {
                    action_id: *action_id,
                    from,
                    to: *status,
                    note,
                    transferred_to,
                    changed_by: actor,
                }
            }
            CrisisCommand::DraftCommunication {
                communication_id,
                audience,
                channel,
                tlp,
                content,
            } => {
                if s.communications.contains_key(communication_id) {
                    return Err(DomainError::precondition(format!(
                        "communication {communication_id} is already drafted"
                    )));
                }
                CrisisEvent::CommunicationDrafted {
                    communication_id: *communication_id,
                    audience: *audience,
                    channel: Text::required("channel", channel, Limits::SOURCE)?,
                    tlp: *tlp,
                    content: Text::required("content", content, Limits::NOTE)?,
                    drafted_by: actor,
                }
            }
            CrisisCommand::ApproveCommunication {
                communication_id,
                role,
            } => {
                let c = communication(s, *communication_id)?;
                if c.approved {
                    return Err(DomainError::precondition(
                        "the communication is already approved",
                    ));
                }
                if c.drafted_by == actor {
                    return Err(DomainError::precondition(
                        "a communication is approved by someone other than its drafter",
                    ));
                }
                speaks_for(s, c, &actor, *role, "needs approval")?;
                CrisisEvent::CommunicationApproved {
                    communication_id: *communication_id,
                    approved_by: actor,
                    role: *role,
                }
            }
            CrisisCommand::SendCommunication { communication_id } => {
                let c = communication(s, *communication_id)?;
                if c.sent {
                    return Err(DomainError::precondition(
                        "the communication is already sent",
                    ));
                }
                if !c.approved {
                    return Err(DomainError::precondition(format!(
                        "the communication is not approved: a communication to {} needs approval by {} first",
                        c.audience.as_str(),
                        c.audience.approver().as_str()
                    )));
                }
                CrisisEvent::CommunicationSent {
                    communication_id: *communication_id,
                    sent_by: actor,
                }
            }
            CrisisCommand::RetractCommunication {
                communication_id,
                reason,
                role,
            } => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                let c = communication(s, *communication_id)?;
                if !c.sent {
                    return Err(DomainError::precondition(
                        "only a sent communication is retracted; an unsent one is simply not sent",
                    ));
                }
                if c.retracted {
                    return Err(DomainError::precondition(
                        "the communication is already retracted",
                    ));
                }
                speaks_for(s, c, &actor, *role, "is retracted")?;
                CrisisEvent::CommunicationRetracted {
                    communication_id: *communication_id,
                    reason,
                    retracted_by: actor,
                    role: *role,
                }
            }
            CrisisCommand::StandDown {
                handed_to,
                decision_id,
            } => {
                current_decision(&s.decisions, *decision_id, "decision_id", "crisis")?;
                if !s.strategic.contains(decision_id) {
                    return Err(DomainError::invalid(
                        "decision_id",
                        format!(
                            "decision {decision_id} was not taken at STRATEGIC: standing the CMC down is its own decision"
                        ),
                    ));
                }
                CrisisEvent::CrisisStoodDown {
                    handed_to: Text::required("handed_to", handed_to, Limits::PERSON)?,
                    decision_id: *decision_id,
                    stood_down_by: actor,
                }
            }
            CrisisCommand::DeclareStabilising { reason } => {
                if s.stabilising {
                    return Err(DomainError::precondition(
                        "the crisis is already stabilising",
                    ));
                }
                CrisisEvent::CrisisStabilising {
                    reason: Text::required("reason", reason, Limits::RATIONALE)?,
                    declared_by: actor,
                }
            }
            CrisisCommand::RecordReview { .. } => unreachable!("handled above"),
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &CrisisEvent) {
        if let CrisisEvent::CrisisActivated { incident_ids, .. } = event {
            self.state = Some(CrisisState {
                incident_ids: incident_ids.clone(),
                grades: Default::default(),
                corroborated: Default::default(),
                contradicted: Default::default(),
                superseded: Default::default(),
                decisions: Default::default(),
                strategic: Default::default(),
                present: Default::default(),
                objectives_version: 0,
                reports: Default::default(),
                actions: Default::default(),
                communications: Default::default(),
                stabilising: false,
                stood_down: None,
                reviewed: false,
            });
            return;
        }
        let Some(s) = &mut self.state else { return };
        match event {
            CrisisEvent::CrisisActivated { .. }
            | CrisisEvent::DecisionReviewed { .. }
            | CrisisEvent::DecisionAmended { .. } => {}
            CrisisEvent::InformationConflictFlagged {
                information_ids, ..
            } => {
                for id in information_ids {
                    s.contradicted.insert(*id);
                }
            }
            CrisisEvent::InformationCorroborated { information_id, .. } => {
                s.corroborated.insert(*information_id);
            }
            CrisisEvent::InformationSuperseded {
                information_id,
                superseded_by,
                ..
            } => {
                s.superseded.insert(*information_id, *superseded_by);
            }
            CrisisEvent::CrisisAttendanceLogged {
                person,
                role,
                change,
                ..
            } => match change {
                Attendance::Arrived => {
                    s.present.insert(person.clone(), *role);
                }
                Attendance::Left => {
                    s.present.remove(person);
                }
            },
            CrisisEvent::StrategicObjectivesSet { version, .. } => s.objectives_version = *version,
            CrisisEvent::SituationReportIssued { report_id, .. } => {
                s.reports.insert(*report_id);
            }
            CrisisEvent::ActionAssigned { action_id, .. } => {
                s.actions.insert(*action_id, ActionStatus::Assigned);
            }
            CrisisEvent::ActionStatusChanged { action_id, to, .. } => {
                s.actions.insert(*action_id, *to);
            }
            CrisisEvent::CommunicationDrafted {
                communication_id,
                audience,
                drafted_by,
                ..
            } => {
                s.communications.insert(
                    *communication_id,
                    CommunicationState {
                        audience: *audience,
                        drafted_by: drafted_by.clone(),
                        approved: false,
                        sent: false,
                        retracted: false,
                    },
                );
            }
            CrisisEvent::CommunicationApproved {
                communication_id, ..
            } => {
                if let Some(c) = s.communications.get_mut(communication_id) {
                    c.approved = true;
                }
            }
            CrisisEvent::CommunicationSent {
                communication_id, ..
            } => {
                if let Some(c) = s.communications.get_mut(communication_id) {
                    c.sent = true;
                }
            }
            CrisisEvent::CommunicationRetracted {
                communication_id, ..
            } => {
                if let Some(c) = s.communications.get_mut(communication_id) {
                    c.retracted = true;
                }
            }
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
                if d.level == Level::Strategic {
                    s.strategic.insert(d.decision_id);
                }
            }
            CrisisEvent::DecisionSuperseded { decision_id, .. } => {
                s.decisions.insert(*decision_id, false);
            }
            CrisisEvent::CrisisStoodDown {
                decision_id,
                handed_to,
                ..
            } => s.stood_down = Some((*decision_id, handed_to.clone())),
            CrisisEvent::CrisisStabilising { .. } => s.stabilising = true,
            CrisisEvent::CrisisReviewed { .. } => s.reviewed = true,
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
            tlp: Tlp::Amber,
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
            tlp: None,
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
            tlp: None,
        };
        assert_eq!(invalid(given(&[]).decide(&declared, &ctx())), "criteria");
        let none = CrisisCommand::Activate {
            title: "x".into(),
            incident_ids: vec![],
            handover_id: Some(id(2)),
            criteria: String::new(),
            tlp: None,
        };
        assert_eq!(invalid(given(&[]).decide(&none, &ctx())), "incident_ids");
    }

    #[test]
    fn a_crisis_covers_at_most_its_limit_of_incidents() {
        let declare = |n: u128| CrisisCommand::Activate {
            title: "Ransomware: every site".into(),
            incident_ids: (1..=n).map(id).collect(),
            handover_id: Some(id(9_999)),
            criteria: String::new(),
            tlp: None,
        };
        let most = Limits::CRISIS_INCIDENTS as u128;
        let events = recorded(&given(&[]), &declare(most));
        assert_eq!(
            invalid(given(&[]).decide(&declare(most + 1), &ctx())),
            "incident_ids"
        );
        // Repeats count once.
        let mut repeated = declare(most);
        if let CrisisCommand::Activate { incident_ids, .. } = &mut repeated {
            incident_ids.push(id(1));
        }
        assert_eq!(recorded(&given(&[]), &repeated), events);
        // Full: no more can be linked.
        let full = given(&events);
        let link = CrisisCommand::LinkIncident {
            incident_id: id(most + 1),
        };
        precondition(full.decide(&link, &ctx()));
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
                grade: as_received,
                corroborated: false,
                contradicted: false,
                superseded: false,
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
            "information_ids[0]"
        );
    }

    #[test]
    fn items_are_corroborated_contradicted_and_superseded_and_decisions_record_it() {
        let g = grade(Reliability::B, 2, Basis::Fact);
        let mut h = vec![
            activated(),
            info(10, g),
            info(11, g),
            info(12, g),
            info(13, g),
        ];
        let corroborate = |n, by: Vec<u128>, note: &str| CrisisCommand::CorroborateInformation {
            information_id: id(n),
            corroborated_by: by.into_iter().map(id).collect(),
            note: note.into(),
        };
        let supersede = |n, by, reason: &str| CrisisCommand::SupersedeInformation {
            information_id: id(n),
            superseded_by: id(by),
            reason: reason.into(),
        };
        assert_eq!(
            invalid(cmd(&given(&h), corroborate(10, vec![], "x"), "x")),
            "corroborated_by"
        );
        assert_eq!(
            invalid(cmd(&given(&h), corroborate(10, vec![10], "x"), "x")),
            "corroborated_by"
        );
        assert_eq!(
            invalid(cmd(&given(&h), corroborate(10, vec![99], "x"), "x")),
            "corroborated_by[0]"
        );
        assert_eq!(
            invalid(cmd(&given(&h), corroborate(10, vec![11], " "), "x")),
            "note"
        );
        play(
            &mut h,
            corroborate(10, vec![11, 11], "the vendor saw the same IOCs"),
            "lena.loggist",
        );
        play(
            &mut h,
            CrisisCommand::FlagConflict {
                information_ids: vec![id(11), id(12)],
                note: "spread vs contained".into(),
            },
            "lena.loggist",
        );
        assert_eq!(
            invalid(cmd(&given(&h), supersede(12, 12, "x"), "x")),
            "superseded_by"
        );
        play(&mut h, supersede(12, 13, "newer scan"), "lena.loggist");
        precondition(cmd(&given(&h), supersede(12, 11, "again"), "x"));
        precondition(cmd(
            &given(&h),
            supersede(11, 12, "to a superseded one"),
            "x",
        ));
        // A decision records each item's standing as it was; a superseded item is no basis.
        assert_eq!(
            invalid(cmd(
                &given(&h),
                decision(20, vec![id(10), id(12)], None),
                "x"
            )),
            "information_ids[1]"
        );
        let events = cmd(
            &given(&h),
            decision(20, vec![id(10), id(11), id(13)], None),
            "x",
        )
        .unwrap();
        let CrisisEvent::DecisionRecorded(d) = &events[0] else {
            panic!("{events:?}")
        };
        let standing: Vec<(bool, bool)> = d
            .information_basis
            .iter()
            .map(|b| (b.corroborated, b.contradicted))
            .collect();
        assert_eq!(standing, [(true, false), (false, true), (false, false)]);
        // Logged late, a decision may rely on an item superseded since; its record says so.
        let mut late = ctx();
        late.occurred_at = now() - Duration::hours(2);
        late.late_reason = Some("decided by phone".into());
        let logged = given(&h)
            .decide(&decision(21, vec![id(12)], None), &late)
            .unwrap();
        let CrisisEvent::DecisionRecorded(taken) = &logged[0] else {
            panic!("{logged:?}")
        };
        assert!(taken.information_basis[0].superseded);
        // Stored without the flags when they are false, and read back from a record without.
        let json = serde_json::to_value(&d.information_basis[2]).unwrap();
        assert!(json.get("corroborated").is_none());
        let back: InformationBasis = serde_json::from_value(json).unwrap();
        assert_eq!(back, d.information_basis[2]);
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
        d.review_by = Some(now() - Duration::minutes(1));
        assert_eq!(
            invalid(c.decide(&CrisisCommand::RecordDecision(d.clone()), &ctx())),
            "review_by"
        );
        // Logged late, its review may already be due, but not before it was taken.
        let mut late = ctx();
        late.occurred_at = now() - Duration::hours(2);
        late.late_reason = Some("decided by phone".into());
        assert!(
            c.decide(&CrisisCommand::RecordDecision(d.clone()), &late)
                .is_ok()
        );
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
        // A decision the CMC logged at TACTICAL does not stand it down.
        let CrisisCommand::RecordDecision(mut tactical) = decision(21, vec![], None) else {
            unreachable!()
        };
        tactical.level = Level::Tactical;
        let logged = recorded(&c, &CrisisCommand::RecordDecision(tactical));
        let with_tactical = given(&[activated(), first[0].clone(), logged[0].clone()]);
        assert_eq!(
            invalid(with_tactical.decide(&stand_down(21), &ctx())),
            "decision_id"
        );
        let events = recorded(&c, &stand_down(20));
        let c = given(&[activated(), first[0].clone(), events[0].clone()]);
        // A stood-down crisis refuses everything else.
        precondition(c.decide(&CrisisCommand::LinkIncident { incident_id: id(5) }, &ctx()));
        precondition(c.decide(&decision(30, vec![], None), &ctx()));
    }

    #[test]
    fn a_crisis_stabilises_once_and_is_reviewed_once_after_it_stands_down() {
        let mut h = vec![activated()];
        let stabilising = || CrisisCommand::DeclareStabilising {
            reason: "spread contained; recovery under way".into(),
        };
        let review = || CrisisCommand::RecordReview {
            findings: "handover took 40 minutes: brief template to be simplified".into(),
        };
        precondition(cmd(&given(&h), review(), "x"));
        play(&mut h, stabilising(), "carla.cmc");
        precondition(cmd(&given(&h), stabilising(), "x"));
        play(&mut h, decision(20, vec![], None), "carla.cmc");
        play(
            &mut h,
            CrisisCommand::StandDown {
                handed_to: "tom.tactical".into(),
                decision_id: id(20),
            },
            "carla.cmc",
        );
        assert_eq!(
            invalid(cmd(
                &given(&h),
                CrisisCommand::RecordReview {
                    findings: " ".into()
                },
                "x"
            )),
            "findings"
        );
        play(&mut h, review(), "quinn.quality");
        precondition(cmd(&given(&h), review(), "x"));
        precondition(cmd(&given(&h), decision(30, vec![], None), "x"));
    }

    #[test]
    fn a_statement_found_wrong_after_stand_down_is_still_retracted() {
        let mut h = vec![activated()];
        play(
            &mut h,
            arrive("carla.cmc", CmcRole::CrisisLead),
            "lena.loggist",
        );
        play(
            &mut h,
            CrisisCommand::DraftCommunication {
                communication_id: id(60),
                audience: Audience::Media,
                channel: "press release".into(),
                tlp: Tlp::Clear,
                content: "Some flights are delayed by an IT problem.".into(),
            },
            "paul.press",
        );
        play(
            &mut h,
            CrisisCommand::ApproveCommunication {
                communication_id: id(60),
                role: CmcRole::CrisisLead,
            },
            "carla.cmc",
        );
        play(
            &mut h,
            CrisisCommand::SendCommunication {
                communication_id: id(60),
            },
            "paul.press",
        );
        play(&mut h, decision(20, vec![], None), "carla.cmc");
        play(
            &mut h,
            CrisisCommand::StandDown {
                handed_to: "tom.tactical".into(),
                decision_id: id(20),
            },
            "carla.cmc",
        );
        play(
            &mut h,
            CrisisCommand::RecordReview {
                findings: "the first statement blamed IT".into(),
            },
            "quinn.quality",
        );
        play(
            &mut h,
            CrisisCommand::RetractCommunication {
                communication_id: id(60),
                reason: "it was a cyber attack".into(),
                role: CmcRole::CrisisLead,
            },
            "carla.cmc",
        );
    }

    #[test]
    fn actions_still_open_at_stand_down_are_carried_on_and_closed_after_it() {
        let mut h = vec![activated()];
        play(
            &mut h,
            CrisisCommand::AssignAction {
                action_id: id(50),
                description: "restore the sorters' PLC images".into(),
                owner: "ops.lead".into(),
                due_at: now() + Duration::hours(4),
                decision_id: None,
            },
            "carla.cmc",
        );
        play(&mut h, decision(20, vec![], None), "carla.cmc");
        play(
            &mut h,
            CrisisCommand::StandDown {
                handed_to: "tom.tactical".into(),
                decision_id: id(20),
            },
            "carla.cmc",
        );
        let progress = |status| CrisisCommand::ChangeActionStatus {
            action_id: id(50),
            status,
            note: String::new(),
            transferred_to: String::new(),
        };
        play(&mut h, progress(ActionStatus::InProgress), "ops.lead");
        play(
            &mut h,
            CrisisCommand::RecordReview {
                findings: "sorter recovery outlived the CMC".into(),
            },
            "quinn.quality",
        );
        play(&mut h, progress(ActionStatus::Done), "ops.lead");
        // A final status is still final, and nothing else (but a retraction) is recorded.
        precondition(cmd(&given(&h), progress(ActionStatus::InProgress), "x"));
        precondition(cmd(
            &given(&h),
            CrisisCommand::LinkIncident { incident_id: id(5) },
            "x",
        ));
    }

    #[test]
    fn commands_on_a_crisis_never_activated_are_not_found() {
        let r = given(&[]).decide(&CrisisCommand::LinkIncident { incident_id: id(1) }, &ctx());
        assert!(matches!(r, Err(DomainError::NotFound(_))));
    }

    fn cmd(
        c: &Crisis,
        command: CrisisCommand,
        actor: &str,
    ) -> Result<Vec<CrisisEvent>, DomainError> {
        c.decide(&command, &Context::now(actor, now()))
    }

    fn play(events: &mut Vec<CrisisEvent>, command: CrisisCommand, actor: &str) {
        let new = cmd(&given(events), command, actor).unwrap();
        events.extend(new);
    }

    fn arrive(person: &str, role: CmcRole) -> CrisisCommand {
        CrisisCommand::LogAttendance {
            person: person.into(),
            role,
            change: Attendance::Arrived,
        }
    }

    #[test]
    fn attendance_is_logged_once_per_arrival_and_leaving_needs_presence() {
        let mut h = vec![activated()];
        play(
            &mut h,
            arrive("carla.cmc", CmcRole::CrisisLead),
            "lena.loggist",
        );
        precondition(cmd(
            &given(&h),
            arrive("carla.cmc", CmcRole::CrisisLead),
            "x",
        ));
        // A change of role is logged as a new arrival in the new role.
        play(&mut h, arrive("carla.cmc", CmcRole::Communications), "x");
        let leave = |p: &str| CrisisCommand::LogAttendance {
            person: p.into(),
            role: CmcRole::Member,
            change: Attendance::Left,
        };
        precondition(cmd(&given(&h), leave("nobody"), "x"));
        play(&mut h, leave("carla.cmc"), "x");
        assert!(given(&h).state().unwrap().present.is_empty());
        // Nobody logs themselves into a role that approves communications.
        precondition(cmd(
            &given(&h),
            arrive("paul.press", CmcRole::CrisisLead),
            "paul.press",
        ));
        assert_eq!(
            cmd(
                &given(&h),
                arrive("lena.loggist", CmcRole::Loggist),
                "lena.loggist"
            )
            .unwrap()
            .len(),
            1
        );
        assert_eq!(
            invalid(cmd(&given(&h), arrive(" ", CmcRole::Member), "x")),
            "person"
        );
    }

    #[test]
    fn objectives_are_versioned_and_never_empty() {
        let mut h = vec![activated()];
        let set = |o: Vec<&str>| CrisisCommand::SetObjectives {
            objectives: o.into_iter().map(String::from).collect(),
            rationale: "JDM step 3".into(),
        };
        assert_eq!(invalid(cmd(&given(&h), set(vec![]), "x")), "objectives");
        assert_eq!(
            invalid(cmd(&given(&h), set(vec!["a", " "]), "x")),
            "objectives[1]"
        );
        play(&mut h, set(vec!["protect life", "restore operations"]), "x");
        play(&mut h, set(vec!["restore operations"]), "x");
        match h.last().unwrap() {
            CrisisEvent::StrategicObjectivesSet { version, .. } => assert_eq!(*version, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_situation_report_states_as_at_confidence_and_known_unknowns() {
        let c = given(&[activated()]);
        let report =
            |body: SitrepBody, as_at, unknowns: &str| CrisisCommand::IssueSituationReport {
                report_id: id(40),
                body,
                as_at,
                confidence: Confidence::Low,
                known_unknowns: unknowns.into(),
            };
        let free = SitrepBody::Free {
            text: "OT network isolated".into(),
        };
        assert_eq!(
            cmd(&c, report(free.clone(), now(), "entry vector"), "x")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            invalid(cmd(&c, report(free.clone(), now(), ""), "x")),
            "known_unknowns"
        );
        assert_eq!(
            invalid(cmd(&c, report(free, now() + Duration::hours(1), "x"), "x")),
            "as_at"
        );
        let methane = SitrepBody::Methane {
            major_incident: "declared".into(),
            exact_location: "LHR T5 baggage hall".into(),
            incident_type: "ransomware".into(),
            hazards: "spread to airside".into(),
            access: String::new(),
            casualties: "none".into(),
            emergency_services: "police on site".into(),
        };
        assert_eq!(
            invalid(cmd(&c, report(methane, now(), "x"), "x")),
            "report.access"
        );
    }

    #[test]
    fn a_current_decision_is_amended_with_a_reason_and_a_superseded_one_is_not() {
        let mut h = vec![activated()];
        play(&mut h, decision(20, vec![], None), "x");
        let amend = |n| CrisisCommand::AmendDecision {
            decision_id: id(n),
            amendment: "gateway stays off until 18:00".into(),
            reason: "vendor needs more time".into(),
        };
        assert_eq!(cmd(&given(&h), amend(20), "x").unwrap().len(), 1);
        assert_eq!(invalid(cmd(&given(&h), amend(99), "x")), "decision_id");
        play(&mut h, decision(21, vec![], Some(id(20))), "x");
        precondition(cmd(&given(&h), amend(20), "x"));
    }

    #[test]
    fn an_action_has_an_owner_and_due_time_and_a_final_status_never_changes() {
        let mut h = vec![activated()];
        let assign = |due| CrisisCommand::AssignAction {
            action_id: id(50),
            description: "brief the airport duty manager".into(),
            owner: "omar.ops".into(),
            due_at: due,
            decision_id: None,
        };
        assert_eq!(
            invalid(cmd(&given(&h), assign(now() - Duration::minutes(1)), "x")),
            "due_at"
        );
        let mut ownerless = assign(now() + Duration::hours(1));
        if let CrisisCommand::AssignAction { owner, .. } = &mut ownerless {
            owner.clear();
        }
        assert_eq!(invalid(cmd(&given(&h), ownerless, "x")), "owner");
        play(&mut h, assign(now() + Duration::hours(1)), "x");
        precondition(cmd(&given(&h), assign(now() + Duration::hours(1)), "x"));
        let status = |st, note: &str, to: &str| CrisisCommand::ChangeActionStatus {
            action_id: id(50),
            status: st,
            note: note.into(),
            transferred_to: to.into(),
        };
        precondition(cmd(&given(&h), status(ActionStatus::Assigned, "", ""), "x"));
        assert_eq!(
            invalid(cmd(
                &given(&h),
                status(ActionStatus::Cancelled, "", ""),
                "x"
            )),
            "note"
        );
        assert_eq!(
            invalid(cmd(
                &given(&h),
                status(ActionStatus::Transferred, "to ops", ""),
                "x"
            )),
            "transferred_to"
        );
        play(&mut h, status(ActionStatus::InProgress, "", ""), "x");
        play(
            &mut h,
            status(ActionStatus::Done, "briefed at 16:10", ""),
            "x",
        );
        precondition(cmd(
            &given(&h),
            status(ActionStatus::InProgress, "", ""),
            "x",
        ));
    }

    #[test]
    fn a_communication_is_sent_only_after_approval_by_the_role_its_audience_requires() {
        let mut h = vec![activated()];
        play(
            &mut h,
            arrive("carla.cmc", CmcRole::CrisisLead),
            "lena.loggist",
        );
        play(
            &mut h,
            arrive("paul.press", CmcRole::Communications),
            "lena.loggist",
        );
        play(&mut h, arrive("lara.legal", CmcRole::Legal), "lena.loggist");
        let draft = |n, audience| CrisisCommand::DraftCommunication {
            communication_id: id(n),
            audience,
            channel: "press release".into(),
            tlp: Tlp::Clear,
            content: "Some flights are delayed by an IT problem.".into(),
        };
        let approve = |n, role| CrisisCommand::ApproveCommunication {
            communication_id: id(n),
            role,
        };
        let send = |n| CrisisCommand::SendCommunication {
            communication_id: id(n),
        };
        play(&mut h, draft(60, Audience::Media), "paul.press");
        precondition(cmd(&given(&h), send(60), "paul.press"));
        // Media statements need the crisis lead; the drafter cannot approve their own.
        precondition(cmd(
            &given(&h),
            approve(60, CmcRole::Communications),
            "paul.press",
        ));
        precondition(cmd(&given(&h), approve(60, CmcRole::Legal), "lara.legal"));
        // The role must be the one the approver is logged present in.
        precondition(cmd(
            &given(&h),
            approve(60, CmcRole::CrisisLead),
            "lara.legal",
        ));
        play(&mut h, approve(60, CmcRole::CrisisLead), "carla.cmc");
        precondition(cmd(
            &given(&h),
            approve(60, CmcRole::CrisisLead),
            "carla.cmc",
        ));
        play(&mut h, send(60), "paul.press");
        precondition(cmd(&given(&h), send(60), "paul.press"));
        // A regulator notification needs legal (or the crisis lead).
        play(&mut h, draft(61, Audience::Regulator), "paul.press");
        play(&mut h, approve(61, CmcRole::Legal), "lara.legal");
        assert_eq!(
            invalid(cmd(&given(&h), send(62), "paul.press")),
            "communication_id"
        );
        precondition(cmd(&given(&h), draft(61, Audience::Staff), "paul.press"));

        // A sent statement is retracted, once, with a reason, by the role that approves it.
        let retract = |n, reason: &str, role| CrisisCommand::RetractCommunication {
            communication_id: id(n),
            reason: reason.into(),
            role,
        };
        let why = "delays were caused by a cyber attack, not an IT problem";
        precondition(cmd(
            &given(&h),
            retract(61, why, CmcRole::Legal),
            "lara.legal",
        ));
        assert_eq!(
            invalid(cmd(
                &given(&h),
                retract(60, " ", CmcRole::CrisisLead),
                "carla.cmc"
            )),
            "reason"
        );
        precondition(cmd(
            &given(&h),
            retract(60, why, CmcRole::Communications),
            "paul.press",
        ));
        precondition(cmd(
            &given(&h),
            retract(60, why, CmcRole::CrisisLead),
            "paul.press",
        ));
        let events = cmd(
            &given(&h),
            retract(60, why, CmcRole::CrisisLead),
            "carla.cmc",
        )
        .unwrap();
        assert_eq!(
            events,
            vec![CrisisEvent::CommunicationRetracted {
                communication_id: id(60),
                reason: why.into(),
                retracted_by: "carla.cmc".into(),
                role: CmcRole::CrisisLead,
            }]
        );
        play(&mut h, retract(60, why, CmcRole::CrisisLead), "carla.cmc");
        precondition(cmd(
            &given(&h),
            retract(60, why, CmcRole::CrisisLead),
            "carla.cmc",
        ));
        precondition(cmd(&given(&h), send(60), "paul.press"));
    }

    #[test]
    fn events_round_trip_through_their_stored_payloads() {
        let first = recorded(&given(&[activated()]), &decision(20, vec![], None));
        for e in [
            activated(),
            info(10, grade(Reliability::F, 6, Basis::Assumption)),
            first[0].clone(),
        ] {
            crate::assert_payload_is_the_tagged_field(&e);
        }
    }
}
