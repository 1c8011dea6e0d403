//! `semsctl decision …`: an incident's own decision log (operational and tactical decisions;
//! the CMC's are `semsctl crisis decide`).

use clap::{Args, Subcommand, ValueEnum};
use sems_proto::v1 as pb;
use serde_json::json;
use uuid::Uuid;

use crate::{
    cli::timestamp,
    cmc::{EntryArgs, decision_json, entry, options, print_commit, print_register},
    error::CtlError,
    output::Format,
    session::{Session, consistency},
};

#[derive(Debug, Subcommand)]
pub enum DecisionCommand {
    /// Log a decision taken in an incident, with its rationale and the options not taken.
    Record(RecordArgs),
    /// Amend a current decision (the record stays; the amendment is added).
    Amend {
        /// Incident id.
        incident: String,
        /// Decision id.
        decision: String,
        /// What changes.
        #[arg(long)]
        amendment: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Record a review of a decision.
    Review {
        /// Incident id.
        incident: String,
        /// Decision id.
        decision: String,
        /// What the review found.
        #[arg(long)]
        outcome: String,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// An incident's decision log: current, superseded and due for review.
    Log {
        /// Incident id.
        incident: String,
    },
}

/// The level an incident's decision is taken at.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionLevel {
    /// Taken at OPERATIONAL level.
    Operational,
    /// Taken at TACTICAL level.
    Tactical,
}

/// A decision as its maker states it (JESIP decision log).
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Incident id.
    incident: String,
    /// What was decided.
    #[arg(long)]
    decision: String,
    /// Why.
    #[arg(long)]
    rationale: String,
    /// An option considered and not taken: "OPTION: why not" (repeat).
    #[arg(long = "option")]
    options: Vec<String>,
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
    /// The level it was taken at.
    #[arg(long, value_enum, default_value = "tactical")]
    level: DecisionLevel,
    /// Decided jointly with whom, if anyone.
    #[arg(long, default_value = "")]
    joint_with: String,
    /// Review by (RFC 3339).
    #[arg(long)]
    review_by: Option<String>,
    /// A current decision of the incident it replaces.
    #[arg(long, default_value = "")]
    supersedes: String,
    /// The decision's id (default: a new one, printed; with --request-id, the same one on
    /// every run).
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    entry: EntryArgs,
}

/// Runs a decision-log command.
pub async fn run(
    s: &mut Session,
    format: Format,
    command: DecisionCommand,
) -> Result<(), CtlError> {
    let mut incidents = s.incidents();
    let (what, incident, decision, commit) = match command {
        DecisionCommand::Log { incident } => {
            let log = log(s, &incident).await?;
            print_register(format, &log);
            return Ok(());
        }
        DecisionCommand::Record(d) => {
            let e = entry(d.entry)?;
            let decision_id = d.id.unwrap_or_else(|| new_id(&d.incident, &e.request_id));
            let r = pb::RecordIncidentDecisionRequest {
                incident_id: d.incident.clone(),
                decision_id: decision_id.clone(),
                decision: d.decision,
                rationale: d.rationale,
                options: options(&d.options)?,
                assumptions: d.assumptions,
                risks_accepted: d.risks_accepted,
                powers: d.powers,
                decision_maker: d.maker,
                level: match d.level {
                    DecisionLevel::Operational => pb::Level::Operational,
                    DecisionLevel::Tactical => pb::Level::Tactical,
                } as i32,
                joint_with: d.joint_with,
                review_by: timestamp("review-by", d.review_by.as_deref())?,
                supersedes: d.supersedes,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
                request_id: e.request_id,
            };
            let c = incidents.record_decision(s.request(r)).await?.into_inner();
            (
                "Recorded a decision in incident",
                d.incident,
                decision_id,
                c,
            )
        }
        DecisionCommand::Amend {
            incident,
            decision,
            amendment,
            reason,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::AmendIncidentDecisionRequest {
                incident_id: incident.clone(),
                decision_id: decision.clone(),
                amendment,
                reason,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
                request_id: e.request_id,
            };
            let c = incidents.amend_decision(s.request(r)).await?.into_inner();
            ("Amended a decision in incident", incident, decision, c)
        }
        DecisionCommand::Review {
            incident,
            decision,
            outcome,
            entry: e,
        } => {
            let e = entry(e)?;
            let r = pb::ReviewIncidentDecisionRequest {
                incident_id: incident.clone(),
                decision_id: decision.clone(),
                outcome,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason,
                request_id: e.request_id,
            };
            let c = incidents.review_decision(s.request(r)).await?.into_inner();
            ("Reviewed a decision in incident", incident, decision, c)
        }
    };
    s.wrote(commit.position, commit.replayed);
    // Read back at the write's position: what is printed is what the log now holds.
    let log = log(s, &incident).await?;
    let shown = log
        .current
        .iter()
        .chain(&log.superseded)
        .find(|d| d.decision_id == decision);
    let extra = match (format, shown) {
        (Format::Json, d) => json!({ "decision": d.map(decision_json) }),
        (Format::Table, Some(d)) => json!({
            "decision": format!("{} ({}): {}", d.decision_id, d.status, d.decision),
        }),
        (Format::Table, None) => json!({ "decision": decision }),
    };
    print_commit(format, what, &commit, extra);
    Ok(())
}

/// A new decision's id: with a request id, derived from it, so a run repeated with the same
/// request id names the decision the first run recorded.
fn new_id(incident: &str, request_id: &str) -> String {
    if request_id.is_empty() {
        Uuid::now_v7().to_string()
    } else {
        let name = format!("sems decision\n{incident}\n{request_id}");
        Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
    }
}

/// An incident's decision log, read at this client's last write.
pub(crate) async fn log(s: &mut Session, incident: &str) -> Result<pb::DecisionRegister, CtlError> {
    let q = s.queries();
    let t = s.timeout();
    s.read(async |min_position| {
        let mut q = q.clone();
        let mut r = tonic::Request::new(pb::GetIncidentDecisionLogRequest {
            incident_id: incident.to_owned(),
            consistency: consistency(min_position),
        });
        r.set_timeout(t);
        q.get_decision_log(r).await.map(tonic::Response::into_inner)
    })
    .await
}
