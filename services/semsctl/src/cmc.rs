//! `semsctl handover …` and `semsctl crisis …`: the Resilience Handshake and the CMC log.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use sems_proto::v1 as pb;
use serde_json::{Value, json};

use crate::{
    cli::{WriteArgs, timestamp},
    error::CtlError,
    output::{self, Format},
    session::{Session, consistency},
};

#[derive(Debug, Subcommand)]
pub enum HandoverCommand {
    /// Handovers: pending ones oldest first (overdue flagged), or all.
    List {
        /// Only those waiting for the CMC.
        #[arg(long)]
        pending: bool,
        /// Only those of this incident.
        #[arg(long)]
        incident: Option<String>,
    },
    /// One handover with its brief, rounds and parties.
    Show {
        /// Handover id (from `semsctl escalate`).
        handover: String,
    },
    /// Save a draft of the brief (it may be incomplete).
    Draft {
        handover: String,
        /// The brief as JSON: situation, situation_as_at (RFC 3339), confidence (LOW, MEDIUM,
        /// HIGH), history, objectives, actions_taken, resources_committed, open_risks,
        /// open_actions, key_contacts, communications, constraints, potential_most_likely,
        /// potential_worst_case, authority_requested, known_unknowns.
        #[arg(long)]
        brief: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Offer the handover to the CMC (every section of the brief is required).
    Offer {
        handover: String,
        /// The brief as JSON (see `draft`); without it, the last draft.
        #[arg(long)]
        brief: Option<PathBuf>,
        /// Answers to the CMC's questions (required after a clarification request).
        #[arg(long, default_value = "")]
        answers: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// As the CMC: ask questions about the offer.
    Ask {
        handover: String,
        /// A question (repeat for several).
        #[arg(long = "question", required = true)]
        questions: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// As the CMC: take command (activates the crisis; the incident goes to STRATEGIC).
    Accept {
        handover: String,
        /// The scope of authority the CMC takes.
        #[arg(long)]
        authority: String,
        /// When command passes (RFC 3339; default now).
        #[arg(long)]
        effective_at: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// As the CMC: decline (command stays at TACTICAL).
    Decline {
        handover: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// As the outgoing side, before the CMC answers: withdraw the handover (the situation
    /// settled; command stays at TACTICAL and the incident may be resolved).
    Withdraw {
        handover: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

macro_rules! value_enum {
    ($name:ident => $pb:ty { $($variant:ident),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, ValueEnum)]
        pub enum $name { $($variant),* }
        impl $name {
            fn pb(self) -> i32 {
                match self { $(Self::$variant => <$pb>::$variant as i32),* }
            }
        }
    };
}

value_enum!(CmcRole => pb::CmcRole { CrisisLead, Communications, Legal, Loggist, Member, Liaison });
value_enum!(Audience => pb::Audience { Internal, Staff, Customers, Partners, Media, Regulator, LawEnforcement });
value_enum!(Tlp => pb::Tlp { Clear, Green, Amber, AmberStrict, Red });
value_enum!(ActionStatus => pb::ActionStatus { InProgress, Done, Cancelled, Transferred });
value_enum!(Confidence => pb::Confidence { Low, Medium, High });

/// When an entry happened, if not now.
#[derive(Debug, Args)]
pub struct EntryArgs {
    /// When it happened (RFC 3339; default now).
    #[arg(long)]
    occurred_at: Option<String>,
    /// Why it is recorded more than an hour after it happened.
    #[arg(long, default_value = "")]
    late_reason: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Debug, Subcommand)]
pub enum CrisisCommand {
    /// Crises, latest first.
    List,
    /// One crisis with its people, objectives, actions and communications.
    Show { crisis: String },
    /// The crisis timeline, in the order recorded.
    Timeline {
        crisis: String,
        /// Only these kinds (escalation, handover, crisis, attendance, objectives,
        /// information, sitrep, decision, action, communication).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Entries per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The next page, from the previous answer.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Print the timeline live: what exists, then each new entry as it is recorded (Ctrl-C
    /// to stop).
    Watch {
        crisis: String,
        /// Resume after this entry (`position.seq`, as printed).
        #[arg(long)]
        after: Option<String>,
    },
    /// The decision register: current, superseded, due for review.
    Decisions { crisis: String },
    /// Declare a crisis directly, with the criteria it meets.
    Declare {
        #[arg(long)]
        title: String,
        /// An incident it is about (repeat for several).
        #[arg(long = "incident", required = true)]
        incidents: Vec<String>,
        #[arg(long)]
        criteria: String,
        /// Default TLP of its entries.
        #[arg(long, value_enum)]
        tlp: Option<Tlp>,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Link one more incident.
    Link {
        crisis: String,
        #[arg(long)]
        incident: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Log a person arriving in the CMC (or leaving it, with --left).
    Attend {
        crisis: String,
        #[arg(long)]
        person: String,
        #[arg(long, value_enum)]
        role: CmcRole,
        #[arg(long)]
        left: bool,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Set the strategic objectives (a new version).
    Objectives {
        crisis: String,
        /// An objective, in priority order (repeat).
        #[arg(long = "objective", required = true)]
        objectives: Vec<String>,
        #[arg(long)]
        rationale: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Log information received, graded (e.g. --grade B2; --assumption when not a fact).
    Info {
        crisis: String,
        #[arg(long)]
        source: String,
        #[arg(long)]
        content: String,
        /// Reliability A-F and credibility 1-6, e.g. B2.
        #[arg(long)]
        grade: String,
        #[arg(long)]
        assumption: bool,
        /// When the source observed it (RFC 3339; default now).
        #[arg(long)]
        observed_at: Option<String>,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Regrade an information item.
    Regrade {
        crisis: String,
        information: String,
        #[arg(long)]
        grade: String,
        #[arg(long)]
        assumption: bool,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Flag information items that contradict each other.
    Conflict {
        crisis: String,
        /// An item (at least two).
        #[arg(long = "information", required = true)]
        information: Vec<String>,
        #[arg(long)]
        note: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Record that other items confirm an item.
    Corroborate {
        crisis: String,
        information: String,
        /// An item that confirms it (at least one).
        #[arg(long = "by", required = true)]
        by: Vec<String>,
        #[arg(long)]
        note: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Record that another item replaces an item.
    Supersede {
        crisis: String,
        information: String,
        /// The item that replaces it.
        #[arg(long = "by")]
        by: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Issue a free-form situation report.
    Sitrep {
        crisis: String,
        #[arg(long)]
        text: String,
        /// As at (RFC 3339).
        #[arg(long)]
        as_at: String,
        #[arg(long, value_enum)]
        confidence: Confidence,
        #[arg(long)]
        known_unknowns: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Record a decision (JESIP decision log).
    Decide(DecideArgs),
    /// Amend a current decision.
    Amend {
        crisis: String,
        decision: String,
        #[arg(long)]
        amendment: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Review a decision.
    Review {
        crisis: String,
        decision: String,
        #[arg(long)]
        outcome: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Assign an action.
    Action {
        crisis: String,
        #[arg(long)]
        description: String,
        #[arg(long)]
        owner: String,
        /// Due (RFC 3339).
        #[arg(long)]
        due: String,
        /// The decision it carries out.
        #[arg(long)]
        decision: Option<String>,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Move an action on.
    ActionStatus {
        crisis: String,
        action: String,
        #[arg(long, value_enum)]
        status: ActionStatus,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, default_value = "")]
        transferred_to: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Draft a communication.
    Communicate {
        crisis: String,
        #[arg(long, value_enum)]
        audience: Audience,
        #[arg(long)]
        channel: String,
        #[arg(long, value_enum)]
        tlp: Tlp,
        #[arg(long)]
        content: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Approve a communication, acting in a CMC role.
    Approve {
        crisis: String,
        communication: String,
        #[arg(long, value_enum)]
        role: CmcRole,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Record that an approved communication went out.
    Send {
        crisis: String,
        communication: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Retract a sent communication, with the reason, acting in a CMC role.
    Retract {
        crisis: String,
        communication: String,
        #[arg(long)]
        reason: String,
        #[arg(long, value_enum)]
        role: CmcRole,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Declare the crisis stabilising.
    Stabilising {
        crisis: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Record the post-crisis review of a stood-down crisis.
    PostReview {
        crisis: String,
        #[arg(long)]
        findings: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Stand the CMC down.
    StandDown {
        crisis: String,
        /// Who takes control next.
        #[arg(long)]
        handed_to: String,
        /// The current decision behind it.
        #[arg(long)]
        decision: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Crisis id.
    crisis: String,
    /// What was decided.
    #[arg(long)]
    decision: String,
    /// Why.
    #[arg(long)]
    rationale: String,
    /// An option considered and not taken: "OPTION: why not" (repeat).
    #[arg(long = "option")]
    options: Vec<String>,
    /// An information item it relies on (repeat).
    #[arg(long = "information")]
    information: Vec<String>,
    /// Assumptions it rests on.
    #[arg(long, default_value = "")]
    assumptions: String,
    /// Risks accepted in taking it.
    #[arg(long, default_value = "")]
    risks_accepted: String,
    /// Powers and policies relied on.
    #[arg(long, default_value = "")]
    powers: String,
    /// Who decided.
    #[arg(long)]
    maker: String,
    /// Decided jointly with whom, if anyone.
    #[arg(long, default_value = "")]
    joint_with: String,
    /// Review by (RFC 3339).
    #[arg(long)]
    review_by: Option<String>,
    /// A current decision it replaces.
    #[arg(long, default_value = "")]
    supersedes: String,
    #[command(flatten)]
    entry: EntryArgs,
}

/// The sections of a brief file, as `HandoverBrief` names them.
const BRIEF_SECTIONS: [&str; 16] = [
    "situation",
    "situation_as_at",
    "confidence",
    "history",
    "objectives",
    "actions_taken",
    "resources_committed",
    "open_risks",
    "open_actions",
    "key_contacts",
    "communications",
    "constraints",
    "potential_most_likely",
    "potential_worst_case",
    "authority_requested",
    "known_unknowns",
];

fn read_brief(path: &PathBuf) -> Result<pb::HandoverBrief, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::Usage(format!("--brief {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("--brief {} is not JSON: {e}", path.display())))?;
    let Some(sections) = v.as_object() else {
        return Err(CtlError::Usage(format!(
            "--brief {} is not a JSON object of sections (docs/examples/brief.json is one)",
            path.display()
        )));
    };
    // A misspelt or mistyped section would otherwise read as missing, and the server would
    // name the right section without saying why it was not found.
    for (key, value) in sections {
        if !BRIEF_SECTIONS.contains(&key.as_str()) {
            return Err(CtlError::Usage(format!(
                "--brief: unknown section {key:?}; the sections are {}",
                BRIEF_SECTIONS.join(", ")
            )));
        }
        if !value.is_string() {
            return Err(CtlError::Usage(format!(
                "--brief: section {key:?} must be a string, not {value}"
            )));
        }
    }
    let f = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let confidence = match f("confidence").to_ascii_uppercase().as_str() {
        "" => 0,
        "LOW" => pb::Confidence::Low as i32,
        "MEDIUM" => pb::Confidence::Medium as i32,
        "HIGH" => pb::Confidence::High as i32,
        other => {
            return Err(CtlError::Usage(format!(
                "--brief: confidence {other:?} is not LOW, MEDIUM or HIGH"
            )));
        }
    };
    let as_at = f("situation_as_at");
    Ok(pb::HandoverBrief {
        situation: f("situation"),
        situation_as_at: timestamp(
            "brief situation_as_at",
            (!as_at.is_empty()).then_some(as_at.as_str()),
        )?,
        confidence,
        history: f("history"),
        objectives: f("objectives"),
        actions_taken: f("actions_taken"),
        resources_committed: f("resources_committed"),
        open_risks: f("open_risks"),
        open_actions: f("open_actions"),
        key_contacts: f("key_contacts"),
        communications: f("communications"),
        constraints: f("constraints"),
        potential_most_likely: f("potential_most_likely"),
        potential_worst_case: f("potential_worst_case"),
        authority_requested: f("authority_requested"),
        known_unknowns: f("known_unknowns"),
    })
}

fn grade(text: &str, assumption: bool) -> Result<pb::Grade, CtlError> {
    let mut chars = text.trim().chars();
    let (Some(r), Some(c), None) = (chars.next(), chars.next(), chars.next()) else {
        return Err(CtlError::Usage(format!(
            "--grade {text:?}: expected reliability A-F and credibility 1-6, e.g. B2"
        )));
    };
    Ok(pb::Grade {
        reliability: r.to_ascii_uppercase().to_string(),
        credibility: c.to_digit(10).unwrap_or(0),
        assumption,
    })
}

pub(crate) fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    output::time(t).unwrap_or_else(|| "-".into())
}

pub(crate) fn print_commit(format: Format, what: &str, c: &pb::CommitInfo, extra: Value) {
    match format {
        Format::Json => {
            let mut doc = json!({ "commit": output::commit_json(c) });
            if let (Value::Object(extra), Value::Object(doc)) = (extra, &mut doc) {
                doc.extend(extra);
            }
            println!("{doc}");
        }
        Format::Table => {
            println!(
                "{what} {} (version {}, position {}){}",
                c.aggregate_id,
                c.version,
                c.position,
                if c.replayed {
                    "; already done by an earlier request with this id"
                } else {
                    ""
                }
            );
            if let Value::Object(extra) = extra {
                for (k, v) in extra {
                    match v {
                        Value::Array(items) => {
                            for i in items {
                                println!("  {}", i.as_str().unwrap_or(&i.to_string()));
                            }
                        }
                        v => println!("  {k}: {}", v.as_str().unwrap_or(&v.to_string())),
                    }
                }
            }
        }
    }
}

fn handover_json(h: &pb::HandoverView) -> Value {
    let b = h.brief.clone().unwrap_or_default();
    json!({
        "handover_id": h.handover_id, "incident_id": h.incident_id, "crisis_id": h.crisis_id,
        "status": h.status, "reason": h.reason, "started_by": h.started_by,
        "started_at": output::time(h.started_at.as_ref()), "revision": h.revision,
        "offered_by": h.offered_by, "first_offered_at": output::time(h.first_offered_at.as_ref()),
        "accepted_by": h.accepted_by, "accepted_at": output::time(h.accepted_at.as_ref()),
        "effective_at": output::time(h.effective_at.as_ref()),
        "authority_delegated": h.authority_delegated,
        "acceptance_latency_ms": h.acceptance_latency_ms,
        "declined_by": h.declined_by, "decline_reason": h.decline_reason,
        "withdrawn_by": h.withdrawn_by, "withdraw_reason": h.withdraw_reason,
        "overdue": h.overdue, "waiting_since": output::time(h.waiting_since.as_ref()),
        "clarifications": h.clarifications.iter().map(|c| json!({
            "revision": c.revision, "questions": c.questions, "requested_by": c.requested_by,
            "answers": c.answers,
        })).collect::<Vec<_>>(),
        "brief": {
            "situation": b.situation, "situation_as_at": output::time(b.situation_as_at.as_ref()),
            "confidence": b.confidence, "history": b.history, "objectives": b.objectives,
            "actions_taken": b.actions_taken, "resources_committed": b.resources_committed,
            "open_risks": b.open_risks, "open_actions": b.open_actions,
            "key_contacts": b.key_contacts, "communications": b.communications,
            "constraints": b.constraints, "potential_most_likely": b.potential_most_likely,
            "potential_worst_case": b.potential_worst_case,
            "authority_requested": b.authority_requested, "known_unknowns": b.known_unknowns,
        },
    })
}

fn entry_json(e: &pb::TimelineEntry) -> Value {
    json!({
        "position": e.position, "seq": e.seq, "kind": e.kind, "event_type": e.event_type,
        "occurred_at": output::time(e.occurred_at.as_ref()),
        "recorded_at": output::time(e.recorded_at.as_ref()), "late_reason": e.late_reason,
        "actor": e.actor, "level": output::level(e.level), "tlp": e.tlp,
        "summary": e.summary,
        "detail": serde_json::from_str::<Value>(&e.detail_json).unwrap_or(Value::Null),
    })
}

fn entry_line(e: &pb::TimelineEntry) -> String {
    let late = if e.late_reason.is_empty() {
        String::new()
    } else {
        format!(" (late: {})", e.late_reason)
    };
    format!(
        "{}.{}  {}  {:<13} {:<11} {:<16} {}{late}",
        e.position,
        e.seq,
        time_text(e.occurred_at.as_ref()),
        e.kind,
        output::level(e.level),
        e.actor,
        e.summary
    )
}

pub(crate) fn decision_json(d: &pb::DecisionView) -> Value {
    json!({
        "decision_id": d.decision_id, "decision": d.decision, "rationale": d.rationale,
        "decision_maker": d.decision_maker, "level": output::level(d.level),
        "status": d.status, "supersedes": d.supersedes, "superseded_by": d.superseded_by,
        "made_at": output::time(d.made_at.as_ref()),
        "recorded_at": output::time(d.recorded_at.as_ref()),
        "review_by": output::time(d.review_by.as_ref()), "due_for_review": d.due_for_review,
        "information_basis": d.information_basis.iter().map(|b| {
            let g = b.grade.clone().unwrap_or_default();
            json!({"information_id": b.information_id,
                   "grade": format!("{}{}", g.reliability, g.credibility),
                   "assumption": g.assumption, "corroborated": b.corroborated,
                   "contradicted": b.contradicted, "superseded": b.superseded})
        }).collect::<Vec<_>>(),
        "options": d.options.iter().map(|o| json!({"option": o.option, "why_not": o.why_not}))
            .collect::<Vec<_>>(),
        "amendments": d.amendments, "reviews": d.reviews, "late_reason": d.late_reason,
    })
}

/// Prints a decision register (a crisis's or an incident's): current, superseded, due for
/// review.
pub(crate) fn print_register(format: Format, reg: &pb::DecisionRegister) {
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "current": reg.current.iter().map(decision_json).collect::<Vec<_>>(),
                "superseded": reg.superseded.iter().map(decision_json).collect::<Vec<_>>(),
                "due_for_review": reg.due_for_review.iter().map(decision_json).collect::<Vec<_>>(),
            })
        ),
        Format::Table => {
            for (title, list) in [
                ("Current", &reg.current),
                ("Superseded", &reg.superseded),
                ("Due for review", &reg.due_for_review),
            ] {
                println!("{title}:");
                if list.is_empty() {
                    println!("  none");
                }
                for d in list {
                    let by = if d.superseded_by.is_empty() {
                        String::new()
                    } else {
                        format!(" → superseded by {}", d.superseded_by)
                    };
                    println!(
                        "  {} {} by {} ({}): {} — because {}{by}",
                        d.decision_id,
                        time_text(d.made_at.as_ref()),
                        d.decision_maker,
                        output::level(d.level),
                        d.decision,
                        d.rationale
                    );
                    for a in &d.amendments {
                        println!("    amended: {a}");
                    }
                    for r in &d.reviews {
                        println!("    reviewed: {r}");
                    }
                }
            }
        }
    }
}

fn crisis_json(d: &pb::CrisisDetail) -> Value {
    let c = d.crisis.clone().unwrap_or_default();
    json!({
        "crisis_id": c.crisis_id, "title": c.title, "status": c.status,
        "incident_ids": c.incident_ids, "handover_id": c.handover_id, "tlp": c.tlp,
        "activated_by": c.activated_by, "activated_at": output::time(c.activated_at.as_ref()),
        "present": c.present.iter().map(|a| json!({"person": a.person, "role": a.role}))
            .collect::<Vec<_>>(),
        "objectives_version": c.objectives_version, "objectives": c.objectives,
        "information_items": c.information_items, "decisions": c.decisions,
        "stood_down_at": output::time(c.stood_down_at.as_ref()), "handed_to": c.handed_to,
        "entries": c.entries,
        "actions": d.actions.iter().map(|a| json!({
            "action_id": a.action_id, "description": a.description, "owner": a.owner,
            "due_at": output::time(a.due_at.as_ref()), "status": a.status, "overdue": a.overdue,
        })).collect::<Vec<_>>(),
        "communications": d.communications.iter().map(|m| json!({
            "communication_id": m.communication_id, "audience": m.audience,
            "channel": m.channel, "tlp": m.tlp, "status": m.status,
            "required_role": m.required_role, "approved_by": m.approved_by,
            "retracted_by": m.retracted_by,
            "retracted_at": output::time(m.retracted_at.as_ref()),
            "retraction_reason": m.retraction_reason,
        })).collect::<Vec<_>>(),
    })
}

/// Runs a handover command.
pub async fn handover(
    s: &mut Session,
    format: Format,
    command: HandoverCommand,
) -> Result<(), CtlError> {
    let mut h = s.handovers();
    let answer = match command {
        HandoverCommand::List { pending, incident } => {
            let q = s.cmc();
            let t = s.timeout();
            let list = s
                .read(async |min_position| {
                    let mut q = q.clone();
                    let mut r = tonic::Request::new(pb::ListHandoversRequest {
                        pending_only: pending,
                        incident_id: incident.clone().unwrap_or_default(),
                        limit: 500,
                        consistency: consistency(min_position),
                    });
                    r.set_timeout(t);
                    q.list_handovers(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            match format {
                Format::Json => println!(
                    "{}",
                    json!({ "handovers": list.handovers.iter().map(handover_json).collect::<Vec<_>>(),
                            "acceptance_target_seconds": list.acceptance_target_seconds })
                ),
                Format::Table if list.handovers.is_empty() => println!("No handovers."),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .handovers
                        .iter()
                        .map(|h| {
                            vec![
                                h.handover_id.clone(),
                                h.status.clone(),
                                if h.overdue {
                                    "OVERDUE".into()
                                } else {
                                    String::new()
                                },
                                h.offered_by.clone(),
                                time_text(h.waiting_since.as_ref().or(h.started_at.as_ref())),
                                h.reason.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(
                            &["HANDOVER", "STATUS", "", "OFFERED BY", "SINCE", "REASON"],
                            &rows,
                            60
                        )
                    );
                }
            }
            return Ok(());
        }
        HandoverCommand::Show { handover } => {
            let v = show_handover(s, &handover).await?;
            match format {
                Format::Json => println!("{}", handover_json(&v)),
                Format::Table => {
                    let doc = handover_json(&v);
                    println!("Handover {} — {}", v.handover_id, v.status);
                    for k in [
                        "incident_id",
                        "crisis_id",
                        "reason",
                        "started_by",
                        "offered_by",
                        "revision",
                        "accepted_by",
                        "effective_at",
                        "authority_delegated",
                        "acceptance_latency_ms",
                        "declined_by",
                        "decline_reason",
                        "withdrawn_by",
                        "withdraw_reason",
                        "overdue",
                    ] {
                        println!("  {k}: {}", doc[k]);
                    }
                    println!("  brief:");
                    if let Value::Object(b) = &doc["brief"] {
                        for (k, v) in b {
                            println!("    {k}: {}", v.as_str().unwrap_or(&v.to_string()));
                        }
                    }
                    for c in &v.clarifications {
                        println!(
                            "  questions on revision {} by {}: {}",
                            c.revision,
                            c.requested_by,
                            c.questions.join(" | ")
                        );
                        if !c.answers.is_empty() {
                            println!("    answers: {}", c.answers);
                        }
                    }
                }
            }
            return Ok(());
        }
        HandoverCommand::Draft {
            handover,
            brief,
            write,
        } => h
            .draft_brief(s.request(pb::DraftBriefRequest {
                handover_id: handover,
                brief: Some(read_brief(&brief)?),
                request_id: write.request_id,
            }))
            .await?
            .into_inner(),
        HandoverCommand::Offer {
            handover,
            brief,
            answers,
            write,
        } => h
            .offer_handover(s.request(pb::OfferHandoverRequest {
                handover_id: handover,
                brief: brief.as_ref().map(read_brief).transpose()?,
                answers,
                request_id: write.request_id,
            }))
            .await?
            .into_inner(),
        HandoverCommand::Ask {
            handover,
            questions,
            write,
        } => h
            .request_clarification(s.request(pb::RequestClarificationRequest {
                handover_id: handover,
                questions,
                request_id: write.request_id,
            }))
            .await?
            .into_inner(),
        HandoverCommand::Accept {
            handover,
            authority,
            effective_at,
            write,
        } => h
            .accept_handover(s.request(pb::AcceptHandoverRequest {
                handover_id: handover,
                effective_at: timestamp("effective-at", effective_at.as_deref())?,
                authority_delegated: authority,
                request_id: write.request_id,
            }))
            .await?
            .into_inner(),
        HandoverCommand::Decline {
            handover,
            reason,
            write,
        } => h
            .decline_handover(s.request(pb::DeclineHandoverRequest {
                handover_id: handover,
                reason,
                request_id: write.request_id,
            }))
            .await?
            .into_inner(),
        HandoverCommand::Withdraw {
            handover,
            reason,
            write,
        } => h
            .withdraw_handover(s.request(pb::WithdrawHandoverRequest {
                handover_id: handover,
                reason,
                request_id: write.request_id,
            }))
            .await?
            .into_inner(),
    };
    let c = answer.commit.unwrap_or_default();
    s.wrote(c.position, c.replayed);
    let v = show_handover(s, &c.aggregate_id).await?;
    let extra = if answer.crisis_id.is_empty() {
        json!({ "status": v.status })
    } else {
        json!({ "status": v.status, "crisis_id": answer.crisis_id })
    };
    print_commit(format, "Handover", &c, extra);
    Ok(())
}

async fn show_handover(s: &mut Session, id: &str) -> Result<pb::HandoverView, CtlError> {
    let q = s.cmc();
    let t = s.timeout();
    s.read(async |min_position| {
        let mut q = q.clone();
        let mut r = tonic::Request::new(pb::GetHandoverRequest {
            handover_id: id.to_owned(),
            consistency: consistency(min_position),
        });
        r.set_timeout(t);
        q.get_handover(r).await.map(tonic::Response::into_inner)
    })
    .await
}

/// The common fields of a CMC command.
pub(crate) struct Entry {
    pub(crate) request_id: String,
    pub(crate) occurred_at: Option<prost_types::Timestamp>,
    pub(crate) late_reason: String,
}

/// The options of `--option "OPTION: why not"` arguments.
pub(crate) fn options(given: &[String]) -> Result<Vec<pb::OptionConsidered>, CtlError> {
    given
        .iter()
        .map(|o| {
            let (option, why_not) = o.split_once(':').ok_or_else(|| {
                CtlError::Usage(format!("--option {o:?}: expected \"OPTION: why not\""))
            })?;
            Ok(pb::OptionConsidered {
                option: option.trim().to_owned(),
                why_not: why_not.trim().to_owned(),
            })
        })
        .collect()
}

pub(crate) fn entry(e: EntryArgs) -> Result<Entry, CtlError> {
    Ok(Entry {
        request_id: e.write.request_id,
        occurred_at: timestamp("occurred-at", e.occurred_at.as_deref())?,
        late_reason: e.late_reason,
    })
}

/// Runs a crisis command.
pub async fn crisis(
    s: &mut Session,
    format: Format,
    command: CrisisCommand,
) -> Result<(), CtlError> {
    let mut c = s.crisis();
    let (what, commit) = match command {
        CrisisCommand::List => {
            let q = s.cmc();
            let t = s.timeout();
            let list = s
                .read(async |min_position| {
                    let mut q = q.clone();
                    let mut r = tonic::Request::new(pb::ListCrisesRequest {
                        limit: 100,
                        consistency: consistency(min_position),
                    });
                    r.set_timeout(t);
                    q.list_crises(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            match format {
                Format::Json => println!(
                    "{}",
                    json!({ "crises": list.crises.iter().map(|c| crisis_json(&pb::CrisisDetail {
                        crisis: Some(c.clone()), ..Default::default() })).collect::<Vec<_>>() })
                ),
                Format::Table if list.crises.is_empty() => println!("No crises."),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .crises
                        .iter()
                        .map(|c| {
                            vec![
                                c.crisis_id.clone(),
                                c.status.clone(),
                                time_text(c.activated_at.as_ref()),
                                c.entries.to_string(),
                                c.title.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(
                            &["CRISIS", "STATUS", "ACTIVATED", "ENTRIES", "TITLE"],
                            &rows,
                            60
                        )
                    );
                }
            }
            return Ok(());
        }
        CrisisCommand::Show { crisis } => {
            let d = show_crisis(s, &crisis).await?;
            let doc = crisis_json(&d);
            match format {
                Format::Json => println!("{doc}"),
                Format::Table => {
                    let v = d.crisis.unwrap_or_default();
                    println!("Crisis {} — {} ({})", v.crisis_id, v.title, v.status);
                    println!(
                        "  activated {} by {}",
                        time_text(v.activated_at.as_ref()),
                        v.activated_by
                    );
                    println!("  incidents: {}", v.incident_ids.join(", "));
                    println!(
                        "  present: {}",
                        v.present
                            .iter()
                            .map(|a| format!("{} ({})", a.person, a.role))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    println!(
                        "  objectives v{}: {}",
                        v.objectives_version,
                        v.objectives.join("; ")
                    );
                    println!(
                        "  information items: {}, decisions: {}, entries: {}",
                        v.information_items, v.decisions, v.entries
                    );
                    for a in &d.actions {
                        println!(
                            "  action {} [{}{}] {} — due {}: {}",
                            a.action_id,
                            a.status,
                            if a.overdue { ", OVERDUE" } else { "" },
                            a.owner,
                            time_text(a.due_at.as_ref()),
                            a.description
                        );
                    }
                    for m in &d.communications {
                        println!(
                            "  communication {} [{}] to {} via {} (TLP:{}), needs {}",
                            m.communication_id,
                            m.status,
                            m.audience,
                            m.channel,
                            m.tlp,
                            m.required_role
                        );
                        if !m.retracted_by.is_empty() {
                            println!(
                                "    retracted by {} {}: {}",
                                m.retracted_by,
                                time_text(m.retracted_at.as_ref()),
                                m.retraction_reason
                            );
                        }
                    }
                    if !v.handed_to.is_empty() {
                        println!(
                            "  stood down {}; control passed to {}",
                            time_text(v.stood_down_at.as_ref()),
                            v.handed_to
                        );
                    }
                }
            }
            return Ok(());
        }
        CrisisCommand::Timeline {
            crisis,
            kinds,
            limit,
            page_token,
        } => {
            let q = s.cmc();
            let t = s.timeout();
            let page = s
                .read(async |min_position| {
                    let mut q = q.clone();
                    let mut r = tonic::Request::new(pb::GetTimelineRequest {
                        crisis_id: crisis.clone(),
                        kinds: kinds.clone(),
                        page_size: limit,
                        page_token: page_token.clone(),
                        consistency: consistency(min_position),
                        ..Default::default()
                    });
                    r.set_timeout(t);
                    q.get_timeline(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            match format {
                Format::Json => println!(
                    "{}",
                    json!({ "entries": page.entries.iter().map(entry_json).collect::<Vec<_>>(),
                            "next_page_token": page.next_page_token })
                ),
                Format::Table => {
                    for e in &page.entries {
                        println!("{}", entry_line(e));
                    }
                    if !page.next_page_token.is_empty() {
                        println!("More: --page-token {}", page.next_page_token);
                    }
                }
            }
            return Ok(());
        }
        CrisisCommand::Watch { crisis, after } => {
            let (after_position, after_seq) = match after.as_deref() {
                None => (0, 0),
                Some(a) => a
                    .split_once('.')
                    .and_then(|(p, q)| Some((p.parse().ok()?, q.parse().ok()?)))
                    .ok_or_else(|| {
                        CtlError::Usage(format!("--after {a:?}: expected POSITION.SEQ, e.g. 42.0"))
                    })?,
            };
            // A watch has no consistency of its own: the crisis is first read as of now, so a
            // crisis just declared (by anyone) is found.
            show_crisis(s, &crisis).await?;
            // A watch runs until stopped: no call deadline.
            let mut stream = s
                .cmc()
                .watch_timeline(pb::WatchTimelineRequest {
                    crisis_id: crisis,
                    after_position,
                    after_seq,
                    kinds: vec![],
                })
                .await?
                .into_inner();
            while let Some(e) = stream.message().await? {
                match format {
                    Format::Json => println!("{}", entry_json(&e)),
                    Format::Table => println!("{}", entry_line(&e)),
                }
            }
            return Ok(());
        }
        CrisisCommand::Decisions { crisis } => {
            let q = s.cmc();
            let t = s.timeout();
            let reg = s
                .read(async |min_position| {
                    let mut q = q.clone();
                    let mut r = tonic::Request::new(pb::GetDecisionRegisterRequest {
                        crisis_id: crisis.clone(),
                        consistency: consistency(min_position),
                    });
                    r.set_timeout(t);
                    q.get_decision_register(r)
                        .await
                        .map(tonic::Response::into_inner)
                })
                .await?;
            print_register(format, &reg);
            return Ok(());
        }
        CrisisCommand::Declare {
            title,
            incidents,
            criteria,
            tlp,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::DeclareCrisisRequest {
                title,
                incident_ids: incidents,
                criteria,
                tlp: tlp.map_or(0, Tlp::pb),
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            ("Declared crisis", c.declare_crisis(s.request(r)).await?)
        }
        CrisisCommand::Link {
            crisis,
            incident,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::LinkIncidentRequest {
                crisis_id: crisis,
                incident_id: incident,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Linked the incident to crisis",
                c.link_incident(s.request(r)).await?,
            )
        }
        CrisisCommand::Attend {
            crisis,
            person,
            role,
            left,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::LogAttendanceRequest {
                crisis_id: crisis,
                person,
                role: role.pb(),
                left,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Logged attendance in crisis",
                c.log_attendance(s.request(r)).await?,
            )
        }
        CrisisCommand::Objectives {
            crisis,
            objectives,
            rationale,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::SetObjectivesRequest {
                crisis_id: crisis,
                objectives,
                rationale,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Set the objectives of crisis",
                c.set_objectives(s.request(r)).await?,
            )
        }
        CrisisCommand::Info {
            crisis,
            source,
            content,
            grade: g,
            assumption,
            observed_at,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::ReceiveInformationRequest {
                crisis_id: crisis,
                information_id: String::new(),
                source,
                content,
                grade: Some(grade(&g, assumption)?),
                observed_at: timestamp("observed-at", observed_at.as_deref())?,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Logged information in crisis",
                c.receive_information(s.request(r)).await?,
            )
        }
        CrisisCommand::Regrade {
            crisis,
            information,
            grade: g,
            assumption,
            reason,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::RegradeInformationRequest {
                crisis_id: crisis,
                information_id: information,
                grade: Some(grade(&g, assumption)?),
                reason,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Regraded information in crisis",
                c.regrade_information(s.request(r)).await?,
            )
        }
        CrisisCommand::Conflict {
            crisis,
            information,
            note,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::FlagConflictRequest {
                crisis_id: crisis,
                information_ids: information,
                note,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Flagged a conflict in crisis",
                c.flag_conflict(s.request(r)).await?,
            )
        }
        CrisisCommand::Corroborate {
            crisis,
            information,
            by,
            note,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::CorroborateInformationRequest {
                crisis_id: crisis,
                information_id: information,
                corroborated_by: by,
                note,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Recorded a corroboration in crisis",
                c.corroborate_information(s.request(r)).await?,
            )
        }
        CrisisCommand::Supersede {
            crisis,
            information,
            by,
            reason,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::SupersedeInformationRequest {
                crisis_id: crisis,
                information_id: information,
                superseded_by: by,
                reason,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Recorded a superseded item in crisis",
                c.supersede_information(s.request(r)).await?,
            )
        }
        CrisisCommand::Sitrep {
            crisis,
            text,
            as_at,
            confidence,
            known_unknowns,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::IssueSituationReportRequest {
                crisis_id: crisis,
                report_id: String::new(),
                body: Some(pb::issue_situation_report_request::Body::FreeText(text)),
                as_at: timestamp("as-at", Some(&as_at))?,
                confidence: confidence.pb(),
                known_unknowns,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Issued a situation report in crisis",
                c.issue_situation_report(s.request(r)).await?,
            )
        }
        CrisisCommand::Decide(d) => {
            let e = entry(d.entry)?;
            let options = options(&d.options)?;
            let r = pb::RecordDecisionRequest {
                crisis_id: d.crisis,
                decision_id: String::new(),
                decision: d.decision,
                rationale: d.rationale,
                options,
                information_ids: d.information,
                assumptions: d.assumptions,
                risks_accepted: d.risks_accepted,
                powers: d.powers,
                decision_maker: d.maker,
                level: pb::Level::Strategic as i32,
                joint_with: d.joint_with,
                review_by: timestamp("review-by", d.review_by.as_deref())?,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
                supersedes: d.supersedes,
            };
            (
                "Recorded a decision in crisis",
                c.record_decision(s.request(r)).await?,
            )
        }
        CrisisCommand::Amend {
            crisis,
            decision,
            amendment,
            reason,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::AmendDecisionRequest {
                crisis_id: crisis,
                decision_id: decision,
                amendment,
                reason,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Amended a decision in crisis",
                c.amend_decision(s.request(r)).await?,
            )
        }
        CrisisCommand::Review {
            crisis,
            decision,
            outcome,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::ReviewDecisionRequest {
                crisis_id: crisis,
                decision_id: decision,
                outcome,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Reviewed a decision in crisis",
                c.review_decision(s.request(r)).await?,
            )
        }
        CrisisCommand::Action {
            crisis,
            description,
            owner,
            due,
            decision,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::AssignActionRequest {
                crisis_id: crisis,
                action_id: String::new(),
                description,
                owner,
                due_at: timestamp("due", Some(&due))?,
                decision_id: decision.unwrap_or_default(),
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Assigned an action in crisis",
                c.assign_action(s.request(r)).await?,
            )
        }
        CrisisCommand::ActionStatus {
            crisis,
            action,
            status,
            note,
            transferred_to,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::ChangeActionStatusRequest {
                crisis_id: crisis,
                action_id: action,
                status: status.pb(),
                note,
                transferred_to,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Moved an action on in crisis",
                c.change_action_status(s.request(r)).await?,
            )
        }
        CrisisCommand::Communicate {
            crisis,
            audience,
            channel,
            tlp,
            content,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::DraftCommunicationRequest {
                crisis_id: crisis,
                communication_id: String::new(),
                audience: audience.pb(),
                channel,
                tlp: tlp.pb(),
                content,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Drafted a communication in crisis",
                c.draft_communication(s.request(r)).await?,
            )
        }
        CrisisCommand::Approve {
            crisis,
            communication,
            role,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::ApproveCommunicationRequest {
                crisis_id: crisis,
                communication_id: communication,
                role: role.pb(),
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Approved a communication in crisis",
                c.approve_communication(s.request(r)).await?,
            )
        }
        CrisisCommand::Send {
            crisis,
            communication,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::SendCommunicationRequest {
                crisis_id: crisis,
                communication_id: communication,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Sent a communication in crisis",
                c.send_communication(s.request(r)).await?,
            )
        }
        CrisisCommand::Retract {
            crisis,
            communication,
            reason,
            role,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::RetractCommunicationRequest {
                crisis_id: crisis,
                communication_id: communication,
                reason,
                role: role.pb(),
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Retracted a communication in crisis",
                c.retract_communication(s.request(r)).await?,
            )
        }
        CrisisCommand::StandDown {
            crisis,
            handed_to,
            decision,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::StandDownRequest {
                crisis_id: crisis,
                handed_to,
                decision_id: decision,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            ("Stood down crisis", c.stand_down(s.request(r)).await?)
        }
        CrisisCommand::Stabilising {
            crisis,
            reason,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::DeclareStabilisingRequest {
                crisis_id: crisis,
                reason,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Declared stabilising crisis",
                c.declare_stabilising(s.request(r)).await?,
            )
        }
        CrisisCommand::PostReview {
            crisis,
            findings,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::RecordCrisisReviewRequest {
                crisis_id: crisis,
                findings,
                request_id: e.request_id,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
            };
            (
                "Recorded the post-crisis review of crisis",
                c.record_crisis_review(s.request(r)).await?,
            )
        }
    };
    let commit = commit.into_inner();
    s.wrote(commit.position, commit.replayed);
    // Read the newest entry back, so what is printed is what the timeline now says.
    let q = s.cmc();
    let t = s.timeout();
    let crisis_id = commit.aggregate_id.clone();
    let last = s
        .read(async |min_position| {
            let mut q = q.clone();
            let mut r = tonic::Request::new(pb::GetTimelineRequest {
                crisis_id: crisis_id.clone(),
                page_size: 1000,
                page_token: format!("{}.-1", commit.position),
                consistency: consistency(min_position),
                ..Default::default()
            });
            r.set_timeout(t);
            q.get_timeline(r).await.map(tonic::Response::into_inner)
        })
        .await?;
    let at_commit: Vec<&pb::TimelineEntry> = last
        .entries
        .iter()
        .filter(|e| e.position == commit.position)
        .collect();
    let mut extra = json!({
        "entries": at_commit.iter().map(|e| json!(e.summary)).collect::<Vec<_>>(),
    });
    if at_commit.is_empty() {
        // A stand-down answers the position of the command it returned to the incident,
        // after its own entry: say where the crisis now stands instead.
        let c = show_crisis(s, &crisis_id).await?.crisis.unwrap_or_default();
        extra["status"] = json!(c.status);
        if !c.handed_to.is_empty() {
            extra["handed_to"] = json!(c.handed_to);
        }
    }
    // The id of what the command created (chosen by the server), for the commands that follow.
    for (event_type, key) in CREATED {
        if let Some(e) = at_commit.iter().find(|e| e.event_type == event_type)
            && let Ok(detail) = serde_json::from_str::<Value>(&e.detail_json)
            && let Some(id) = detail.get(key)
        {
            extra[key] = id.clone();
        }
    }
    print_commit(format, what, &commit, extra);
    Ok(())
}

/// The events that create an item of the CMC log, and the field naming it.
const CREATED: [(&str, &str); 5] = [
    ("InformationReceived", "information_id"),
    ("SituationReportIssued", "report_id"),
    ("DecisionRecorded", "decision_id"),
    ("ActionAssigned", "action_id"),
    ("CommunicationDrafted", "communication_id"),
];

async fn show_crisis(s: &mut Session, id: &str) -> Result<pb::CrisisDetail, CtlError> {
    let q = s.cmc();
    let t = s.timeout();
    s.read(async |min_position| {
        let mut q = q.clone();
        let mut r = tonic::Request::new(pb::GetCrisisRequest {
            crisis_id: id.to_owned(),
            consistency: consistency(min_position),
        });
        r.set_timeout(t);
        q.get_crisis(r).await.map(tonic::Response::into_inner)
    })
    .await
}
