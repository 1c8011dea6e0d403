//! The command line: every command, its flags and what it prints.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use sems_proto::v1 as pb;
use serde_json::{Value, json};

use crate::{
    error::CtlError,
    output::{self, Format},
    session::{Session, consistency, default_state_dir},
};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  unexpected error
  2  wrong command line
  3  the server refused a value (the message names the field)
  4  no such incident or alert
  5  not allowed in the incident's current state
  6  a concurrent change won: run the command again
  7  semsd or its store cannot be reached
  8  the read model did not catch up in time, or the call ran out of time
  9  not authenticated or not allowed
141  the output was closed before semsctl finished writing (e.g. piped into head)";

/// The SeMS Response command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "semsctl",
    version,
    about = "SeMS Response command-line client: post alerts, work incidents, play the demo",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The semsd gRPC address.
    #[arg(
        long,
        env = "SEMS_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Your token, when semsd authenticates callers (see docs/API.md, "Callers and tokens").
    #[arg(long, env = "SEMS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// How to print results.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    output: Format,
    /// Longest wait for one call, in seconds (reads wait for this client's last write).
    #[arg(long, default_value_t = 10, global = true)]
    timeout: u64,
    /// Where semsctl remembers the position of its last write per server, so a later read
    /// waits for it (default: $XDG_STATE_HOME/semsctl or ~/.local/state/semsctl).
    #[arg(long, env = "SEMSCTL_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Remember nothing between runs.
    #[arg(long, global = true)]
    no_state: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The Resilience Handshake: list, show, draft, offer, question, accept, decline or withdraw
    /// handovers to the CMC.
    #[command(subcommand)]
    Handover(crate::cmc::HandoverCommand),
    /// The CMC log: declare, show, read and watch crises; log attendance, objectives,
    /// information, decisions, actions and communications; stand down.
    #[command(subcommand)]
    Crisis(crate::cmc::CrisisCommand),
    /// An incident's decision log: record, amend, review or read the decisions taken in it
    /// (operational and tactical; the CMC's are `crisis decide`).
    #[command(subcommand)]
    Decision(crate::decisions::DecisionCommand),
    /// Post an alert, as a SOC tool would (repeats of the same source and ref are counted on
    /// the same alert).
    Ingest(IngestArgs),
    /// List, show or open incidents.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// List or dismiss alerts.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Link incidents to the register risks they realised; count incidents per risk.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// Acknowledge an incident.
    Ack {
        /// Incident id.
        incident: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Assign a role at a level of an incident.
    Assign {
        /// Incident id.
        incident: String,
        /// The role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Who takes it.
        #[arg(long)]
        person: String,
        /// The level the role is at.
        #[arg(long, value_enum, default_value = "operational")]
        level: LevelArg,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Set an incident's severity and priority, with the rationale.
    Classify {
        /// Incident id.
        incident: String,
        /// Severity.
        #[arg(long, value_enum)]
        severity: SeverityArg,
        /// Priority (p1 is the most urgent).
        #[arg(long, value_enum)]
        priority: PriorityArg,
        /// Why.
        #[arg(long)]
        rationale: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Add a note to an incident.
    Note {
        /// Incident id.
        incident: String,
        /// The note.
        text: String,
        /// When it happened, RFC 3339 (default: now).
        #[arg(long)]
        occurred_at: Option<String>,
        /// Why it is recorded late (required when it happened over an hour ago).
        #[arg(long)]
        late_reason: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Record a notification made to an authority (a regulator, a CSIRT, the police).
    Notify {
        /// Incident id.
        incident: String,
        /// Who was notified, e.g. "national CSIRT".
        #[arg(long)]
        authority: String,
        /// What was reported, e.g. "NIS2 early warning".
        #[arg(long)]
        summary: String,
        /// The reference the authority gave.
        #[arg(long, default_value = "")]
        reference: String,
        /// When it was sent, RFC 3339 (default: now).
        #[arg(long)]
        occurred_at: Option<String>,
        /// Why it is recorded late (required when it was sent over an hour ago).
        #[arg(long)]
        late_reason: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Move an incident between the OPERATIONAL and TACTICAL levels (STRATEGIC is `escalate`).
    Level {
        /// Incident id.
        incident: String,
        /// The level to move to.
        #[arg(value_enum)]
        to: LevelArg,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Change an incident's response phase.
    Phase {
        /// Incident id.
        incident: String,
        /// The phase.
        #[arg(value_enum)]
        phase: PhaseArg,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Resolve an incident (where people were involved, with a Just Culture determination).
    Resolve {
        /// Incident id.
        incident: String,
        /// What was done and found.
        #[arg(long)]
        resolution: String,
        /// The Just Culture determination, when people were involved.
        #[arg(long, value_enum, requires = "determination_rationale")]
        determination: Option<DeterminationArg>,
        /// The rationale of the determination.
        #[arg(long, requires = "determination")]
        determination_rationale: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Close a resolved incident.
    Close {
        /// Incident id.
        incident: String,
        /// A closing note.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Reopen a resolved or closed incident.
    Reopen {
        /// Incident id.
        incident: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Ask for a TACTICAL incident to go to the Crisis Management Centre (STRATEGIC).
    Escalate {
        /// Incident id.
        incident: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Which escalation criteria it meets.
        #[arg(long)]
        criteria: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Play a short scenario against the server: alerts from two sources, a duplicate, an
    /// incident taken to TACTICAL with a decision logged, resolved and linked to a register
    /// risk.
    Demo {
        /// Pause between steps, in milliseconds.
        #[arg(long, default_value_t = 400)]
        pace_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum IncidentsCommand {
    /// List incidents, newest first unless --sort says otherwise.
    List(ListIncidentsArgs),
    /// Show one incident with its alerts, roles, notifications, risks, notes and the
    /// decisions in force.
    Show {
        /// Incident id.
        incident: String,
    },
    /// Open an incident by hand (or from untriaged alerts).
    Open {
        /// Title.
        #[arg(long)]
        title: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Severity.
        #[arg(long, value_enum)]
        severity: SeverityArg,
        /// Priority (default: from severity).
        #[arg(long, value_enum)]
        priority: Option<PriorityArg>,
        /// An untriaged alert that opens it (repeatable).
        #[arg(long = "alert")]
        alerts: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RiskCommand {
    /// Link an incident to a risk of the risk register that it realised.
    Link {
        /// Incident id.
        incident: String,
        /// The register's reference for the risk, e.g. R-042.
        risk: String,
        /// Why this incident realised it.
        #[arg(long)]
        rationale: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Remove a link made in error (the record keeps both).
    Unlink {
        /// Incident id.
        incident: String,
        /// The linked risk's reference.
        risk: String,
        /// Why the link was wrong.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// How many incidents each register risk is linked to, most first.
    Counts,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// List alerts, most recent first.
    List {
        /// Only the alerts of this incident.
        #[arg(long)]
        incident: Option<String>,
        /// Only alerts in this state: received, dismissed, promoted, merged.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Dismiss an untriaged alert, with the rationale.
    Dismiss {
        /// Alert id.
        alert: String,
        /// Why it needs no incident.
        #[arg(long)]
        rationale: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Merge an untriaged alert into an incident that already exists, with the reason.
    Merge {
        /// Alert id.
        alert: String,
        /// The incident it belongs to.
        #[arg(long)]
        incident: String,
        /// Why it belongs there.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// The emitting tool, e.g. suricata.
    #[arg(long)]
    source: String,
    /// The tool's own id of the alert; with the source, the dedup key.
    #[arg(long = "ref")]
    source_ref: String,
    /// Title.
    #[arg(long)]
    title: String,
    /// Description.
    #[arg(long, default_value = "")]
    description: String,
    /// Severity.
    #[arg(long, value_enum)]
    severity: SeverityArg,
    /// An observable, TYPE=VALUE, e.g. ip=203.0.113.7 (repeatable).
    #[arg(long = "observable", value_parser = key_value)]
    observables: Vec<(String, String)>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// The original payload, as a JSON object.
    #[arg(long)]
    raw: Option<String>,
    /// When it happened, RFC 3339 (default: now).
    #[arg(long)]
    occurred_at: Option<String>,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Debug, Args)]
struct ListIncidentsArgs {
    /// Only these statuses (repeatable).
    #[arg(long, value_enum)]
    status: Vec<StatusArg>,
    /// Only these levels (repeatable).
    #[arg(long, value_enum)]
    level: Vec<LevelArg>,
    /// Only these severities (repeatable).
    #[arg(long, value_enum)]
    severity: Vec<SeverityArg>,
    /// Only these priorities (repeatable).
    #[arg(long, value_enum)]
    priority: Vec<PriorityArg>,
    /// Text in the title or description (case-insensitive).
    #[arg(long)]
    text: Option<String>,
    /// Only incidents linked to this register risk.
    #[arg(long)]
    risk: Option<String>,
    /// Order.
    #[arg(long, value_enum, default_value = "opened-desc")]
    sort: SortArg,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args)]
struct PageArgs {
    /// Items per page (at most 500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue from a previous page.
    #[arg(long, default_value = "")]
    page_token: String,
}

#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// Makes the command idempotent: running it again with the same id appends nothing and
    /// answers the original result.
    #[arg(long, default_value = "")]
    pub(crate) request_id: String,
}

macro_rules! arg_enum {
    ($name:ident => $pb:ty { $($variant:ident => $target:ident),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, ValueEnum)]
        enum $name { $($variant),* }
        impl $name {
            fn pb(self) -> i32 {
                match self { $(Self::$variant => <$pb>::$target as i32),* }
            }
        }
    };
}

arg_enum!(SeverityArg => pb::Severity { Info => Info, Low => Low, Medium => Medium, High => High, Critical => Critical });
arg_enum!(PriorityArg => pb::Priority { P1 => P1, P2 => P2, P3 => P3, P4 => P4 });
arg_enum!(LevelArg => pb::Level { Operational => Operational, Tactical => Tactical });
arg_enum!(PhaseArg => pb::Phase { Contain => Contain, Eradicate => Eradicate, Recover => Recover });
arg_enum!(RoleArg => pb::Role {
    Commander => Commander, Deputy => Deputy, Liaison => Liaison, Scribe => Scribe,
    Analyst => Analyst, Communications => Communications, Observer => Observer,
});
arg_enum!(DeterminationArg => pb::JustCultureDetermination {
    NoHumanFactor => NoHumanFactor, HonestError => HonestError,
    AtRiskBehaviour => AtRiskBehaviour, RecklessBehaviour => RecklessBehaviour,
    WilfulViolation => WilfulViolation,
});
arg_enum!(StatusArg => pb::IncidentStatus {
    Open => Open, Acknowledged => Acknowledged, Responding => Responding,
    Resolved => Resolved, Closed => Closed,
});
arg_enum!(SortArg => pb::IncidentSort {
    OpenedDesc => OpenedDesc, OpenedAsc => OpenedAsc, UpdatedDesc => UpdatedDesc,
    SeverityDesc => SeverityDesc, PriorityAsc => PriorityAsc,
});

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub(crate) fn timestamp(
    flag: &str,
    value: Option<&str>,
) -> Result<Option<prost_types::Timestamp>, CtlError> {
    let Some(v) = value else { return Ok(None) };
    let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| {
        CtlError::Usage(format!(
            "--{flag} {v:?} is not an RFC 3339 time (e.g. 2026-11-27T09:30:00Z): {e}"
        ))
    })?;
    Ok(Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }))
}

fn raw_json(value: Option<&str>) -> Result<Option<prost_types::Struct>, CtlError> {
    let Some(v) = value else { return Ok(None) };
    let parsed: Value =
        serde_json::from_str(v).map_err(|e| CtlError::Usage(format!("--raw is not JSON: {e}")))?;
    match to_prost(parsed) {
        prost_types::value::Kind::StructValue(s) => Ok(Some(s)),
        _ => Err(CtlError::Usage("--raw must be a JSON object".into())),
    }
}

fn to_prost(v: Value) -> prost_types::value::Kind {
    use prost_types::value::Kind;
    match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a
                .into_iter()
                .map(|v| prost_types::Value {
                    kind: Some(to_prost(v)),
                })
                .collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        prost_types::Value {
                            kind: Some(to_prost(v)),
                        },
                    )
                })
                .collect(),
        }),
    }
}

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let state_dir = if cli.no_state {
        None
    } else {
        cli.state_dir.clone().or_else(default_state_dir)
    };
    let mut s = Session::connect(
        &cli.server,
        cli.token.as_deref(),
        Duration::from_secs(cli.timeout.max(1)),
        state_dir,
    )
    .await?;
    let out = Printer { format: cli.output };
    match cli.command {
        Command::Ingest(a) => ingest(&mut s, &out, a).await,
        Command::Incidents(IncidentsCommand::List(a)) => list_incidents(&mut s, &out, a).await,
        Command::Incidents(IncidentsCommand::Show { incident }) => {
            let detail = show(&mut s, &incident).await?;
            // The card stands without its decisions (an older semsd has no decision log).
            let log = crate::decisions::log(&mut s, &incident)
                .await
                .unwrap_or_else(|e| {
                    eprintln!("semsctl: warning: the decision log could not be read: {e}");
                    pb::DecisionRegister::default()
                });
            match out.format {
                Format::Json => {
                    let mut doc = output::detail_json(&detail);
                    doc["decisions"] = json!(
                        log.current
                            .iter()
                            .map(crate::cmc::decision_json)
                            .collect::<Vec<_>>()
                    );
                    println!("{doc}");
                }
                Format::Table => {
                    print!("{}", output::incident_card(&detail));
                    if !log.current.is_empty() {
                        println!("\nDecisions in force");
                        for d in &log.current {
                            println!(
                                "{}  {} ({}): {}",
                                crate::cmc::time_text(d.made_at.as_ref()),
                                d.decision_maker,
                                output::level(d.level),
                                d.decision
                            );
                        }
                        println!(
                            "({} superseded; `semsctl decision log {incident}` for the whole log)",
                            log.superseded.len()
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Incidents(IncidentsCommand::Open {
            title,
            description,
            severity,
            priority,
            alerts,
            write,
        }) => {
            let r = pb::OpenIncidentRequest {
                title,
                description,
                severity: severity.pb(),
                priority: priority.map_or(0, PriorityArg::pb),
                alert_ids: alerts,
                occurred_at: None,
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .open_incident(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Opened incident", c).await
        }
        Command::Alerts(AlertsCommand::List {
            incident,
            status,
            page,
        }) => {
            let request = pb::ListAlertsRequest {
                incident_id: incident.unwrap_or_default(),
                status: status.unwrap_or_default(),
                page_size: page.limit,
                page_token: page.page_token,
                consistency: None,
            };
            let q = s.queries();
            let t = s.timeout();
            let answer = s
                .read(async |min_position| {
                    let mut q = q.clone();
                    let mut r = tonic::Request::new(pb::ListAlertsRequest {
                        consistency: consistency(min_position),
                        ..request.clone()
                    });
                    r.set_timeout(t);
                    q.list_alerts(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            out.alerts(&answer);
            Ok(())
        }
        Command::Alerts(AlertsCommand::Dismiss {
            alert,
            rationale,
            write,
        }) => {
            let r = pb::DismissAlertRequest {
                alert_id: alert,
                rationale,
                request_id: write.request_id,
            };
            let c = s.alerts().dismiss_alert(s.request(r)).await?.into_inner();
            s.wrote(c.position, c.replayed);
            out.commit("Dismissed alert", &c, None);
            Ok(())
        }
        Command::Alerts(AlertsCommand::Merge {
            alert,
            incident,
            reason,
            write,
        }) => {
            let r = pb::MergeAlertRequest {
                alert_id: alert,
                incident_id: incident,
                reason,
                request_id: write.request_id,
            };
            let c = s.alerts().merge_alert(s.request(r)).await?.into_inner();
            s.wrote(c.position, c.replayed);
            out.commit("Merged alert", &c, None);
            Ok(())
        }
        Command::Risk(RiskCommand::Link {
            incident,
            risk,
            rationale,
            write,
        }) => {
            let r = pb::LinkRiskRequest {
                incident_id: incident,
                risk_ref: risk,
                rationale,
                request_id: write.request_id,
            };
            let c = s.incidents().link_risk(s.request(r)).await?.into_inner();
            after_write(&mut s, &out, "Linked a risk to incident", c).await
        }
        Command::Risk(RiskCommand::Unlink {
            incident,
            risk,
            reason,
            write,
        }) => {
            let r = pb::UnlinkRiskRequest {
                incident_id: incident,
                risk_ref: risk,
                reason,
                request_id: write.request_id,
            };
            let c = s.incidents().unlink_risk(s.request(r)).await?.into_inner();
            after_write(&mut s, &out, "Unlinked a risk from incident", c).await
        }
        Command::Risk(RiskCommand::Counts) => {
            let q = s.queries();
            let t = s.timeout();
            let answer = s
                .read(async |min_position| {
                    let mut q = q.clone();
                    let mut r = tonic::Request::new(pb::CountIncidentsByRiskRequest {
                        consistency: consistency(min_position),
                    });
                    r.set_timeout(t);
                    q.count_incidents_by_risk(r)
                        .await
                        .map(tonic::Response::into_inner)
                })
                .await?;
            match out.format {
                Format::Json => println!(
                    "{}",
                    json!({ "risks": answer.risks.iter().map(|r| json!({
                        "risk_ref": r.risk_ref, "incidents": r.incidents, "open": r.open,
                    })).collect::<Vec<_>>() })
                ),
                Format::Table if answer.risks.is_empty() => {
                    println!("No incidents linked to risks.")
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = answer
                        .risks
                        .iter()
                        .map(|r| {
                            vec![
                                r.risk_ref.clone(),
                                r.incidents.to_string(),
                                r.open.to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(&["RISK", "INCIDENTS", "OPEN"], &rows, 60)
                    );
                }
            }
            Ok(())
        }
        Command::Ack { incident, write } => {
            let r = pb::AcknowledgeIncidentRequest {
                incident_id: incident,
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .acknowledge_incident(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Acknowledged incident", c).await
        }
        Command::Assign {
            incident,
            role,
            person,
            level,
            write,
        } => {
            let r = pb::AssignRoleRequest {
                incident_id: incident,
                role: role.pb(),
                person,
                level: level.pb(),
                effective_at: None,
                request_id: write.request_id,
            };
            let c = s.incidents().assign_role(s.request(r)).await?.into_inner();
            after_write(&mut s, &out, "Assigned a role on incident", c).await
        }
        Command::Classify {
            incident,
            severity,
            priority,
            rationale,
            write,
        } => {
            let r = pb::ClassifyIncidentRequest {
                incident_id: incident,
                severity: severity.pb(),
                priority: priority.pb(),
                rationale,
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .classify_incident(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Classified incident", c).await
        }
        Command::Note {
            incident,
            text,
            occurred_at,
            late_reason,
            write,
        } => {
            let r = pb::AddNoteRequest {
                incident_id: incident,
                text,
                occurred_at: timestamp("occurred-at", occurred_at.as_deref())?,
                late_reason: late_reason.unwrap_or_default(),
                request_id: write.request_id,
            };
            let c = s.incidents().add_note(s.request(r)).await?.into_inner();
            after_write(&mut s, &out, "Added a note to incident", c).await
        }
        Command::Notify {
            incident,
            authority,
            summary,
            reference,
            occurred_at,
            late_reason,
            write,
        } => {
            let r = pb::NotifyAuthorityRequest {
                incident_id: incident,
                authority,
                reference,
                summary,
                occurred_at: timestamp("occurred-at", occurred_at.as_deref())?,
                late_reason: late_reason.unwrap_or_default(),
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .notify_authority(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Recorded a notification on incident", c).await
        }
        Command::Level {
            incident,
            to,
            reason,
            write,
        } => {
            let r = pb::ChangeLevelRequest {
                incident_id: incident,
                to: to.pb(),
                reason,
                request_id: write.request_id,
            };
            let c = s.incidents().change_level(s.request(r)).await?.into_inner();
            after_write(&mut s, &out, "Changed the level of incident", c).await
        }
        Command::Phase {
            incident,
            phase,
            reason,
            write,
        } => {
            let r = pb::ChangePhaseRequest {
                incident_id: incident,
                phase: phase.pb(),
                reason,
                request_id: write.request_id,
            };
            let c = s.incidents().change_phase(s.request(r)).await?.into_inner();
            after_write(&mut s, &out, "Changed the phase of incident", c).await
        }
        Command::Resolve {
            incident,
            resolution,
            determination,
            determination_rationale,
            write,
        } => {
            let r = pb::ResolveIncidentRequest {
                incident_id: incident,
                resolution,
                people_involved: determination.is_some(),
                determination: determination.map_or(0, DeterminationArg::pb),
                determination_rationale: determination_rationale.unwrap_or_default(),
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .resolve_incident(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Resolved incident", c).await
        }
        Command::Close {
            incident,
            note,
            write,
        } => {
            let r = pb::CloseIncidentRequest {
                incident_id: incident,
                note,
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .close_incident(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Closed incident", c).await
        }
        Command::Reopen {
            incident,
            reason,
            write,
        } => {
            let r = pb::ReopenIncidentRequest {
                incident_id: incident,
                reason,
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .reopen_incident(s.request(r))
                .await?
                .into_inner();
            after_write(&mut s, &out, "Reopened incident", c).await
        }
        Command::Escalate {
            incident,
            reason,
            criteria,
            write,
        } => {
            let r = pb::RequestCrisisEscalationRequest {
                incident_id: incident,
                reason,
                criteria_met: criteria,
                request_id: write.request_id,
            };
            let c = s
                .incidents()
                .request_crisis_escalation(s.request(r))
                .await?
                .into_inner();
            let handover = c.handover_id;
            let c = c.commit.unwrap_or_default();
            let read = after_write_naming(
                &mut s,
                &out,
                "Requested crisis escalation of incident",
                c,
                Some(("handover_id", &handover)),
            )
            .await;
            // Named even when the incident could not be read back: the request is recorded.
            if out.format == Format::Table {
                println!(
                    "\nHandover {handover} started: brief the CMC with \
                     `semsctl handover offer {handover} --brief brief.json`"
                );
            }
            read
        }
        Command::Handover(c) => crate::cmc::handover(&mut s, out.format, c).await,
        Command::Crisis(c) => crate::cmc::crisis(&mut s, out.format, c).await,
        Command::Decision(c) => crate::decisions::run(&mut s, out.format, c).await,
        Command::Demo { pace_ms } => {
            crate::demo::run(&mut s, &out, Duration::from_millis(pace_ms)).await
        }
    }
}

/// Prints in the chosen format.
pub struct Printer {
    /// The format.
    pub format: Format,
}

impl Printer {
    /// A command's answer, with the incident as it now reads.
    pub fn commit(&self, what: &str, c: &pb::CommitInfo, detail: Option<&pb::IncidentDetail>) {
        self.commit_naming(what, c, detail, None);
    }

    /// [`Printer::commit`], naming in JSON something else the command created.
    fn commit_naming(
        &self,
        what: &str,
        c: &pb::CommitInfo,
        detail: Option<&pb::IncidentDetail>,
        created: Option<(&str, &str)>,
    ) {
        match self.format {
            Format::Json => {
                let mut doc = json!({ "commit": output::commit_json(c) });
                if let Some(d) = detail {
                    doc["incident"] = output::detail_json(d);
                }
                if let Some((field, id)) = created {
                    doc[field] = json!(id);
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
                if let Some(d) = detail {
                    println!();
                    print!("{}", output::incident_card(d));
                }
            }
        }
    }

    /// One incident.
    pub fn detail(&self, d: &pb::IncidentDetail) {
        match self.format {
            Format::Json => println!("{}", output::detail_json(d)),
            Format::Table => print!("{}", output::incident_card(d)),
        }
    }

    /// A page of incidents.
    fn incidents(&self, page: &pb::ListIncidentsResponse) {
        match self.format {
            Format::Json => println!(
                "{}",
                json!({
                    "incidents": page.incidents.iter().map(output::incident_json).collect::<Vec<_>>(),
                    "next_page_token": page.next_page_token,
                })
            ),
            Format::Table => {
                if page.incidents.is_empty() {
                    println!("No incidents.");
                } else {
                    print!("{}", output::incidents_table(&page.incidents));
                }
                next_page_hint(&page.next_page_token);
            }
        }
    }

    /// A page of alerts.
    fn alerts(&self, page: &pb::ListAlertsResponse) {
        match self.format {
            Format::Json => println!(
                "{}",
                json!({
                    "alerts": page.alerts.iter().map(output::alert_json).collect::<Vec<_>>(),
                    "next_page_token": page.next_page_token,
                })
            ),
            Format::Table => {
                if page.alerts.is_empty() {
                    println!("No alerts.");
                } else {
                    print!("{}", output::alerts_table(&page.alerts));
                }
                next_page_hint(&page.next_page_token);
            }
        }
    }

    /// An ingested alert.
    pub fn ingested(&self, a: &pb::IngestAlertResponse) {
        match self.format {
            Format::Json => println!(
                "{}",
                json!({
                    "alert_id": a.alert_id,
                    "repeat": a.repeat,
                    "incident_id": if a.incident_id.is_empty() { Value::Null } else { Value::String(a.incident_id.clone()) },
                    "position": a.position,
                    "version": a.version,
                    "replayed": a.replayed,
                })
            ),
            Format::Table => {
                let what = if a.replayed {
                    "already received with this request id"
                } else if a.repeat {
                    "repeat of a known alert"
                } else {
                    "new alert"
                };
                println!("Alert {} ({what}, position {})", a.alert_id, a.position);
                if !a.incident_id.is_empty() {
                    println!("Incident {}", a.incident_id);
                }
            }
        }
    }
}

fn next_page_hint(token: &str) {
    if !token.is_empty() {
        eprintln!("more: add --page-token {token}");
    }
}

/// Reads one incident, waiting for this client's last write.
pub async fn show(s: &mut Session, incident: &str) -> Result<pb::IncidentDetail, CtlError> {
    let q = s.queries();
    let id = incident.to_owned();
    let t = s.timeout();
    s.read(async |min_position| {
        let mut q = q.clone();
        let mut r = tonic::Request::new(pb::GetIncidentRequest {
            incident_id: id.clone(),
            consistency: consistency(min_position),
        });
        r.set_timeout(t);
        q.get_incident(r).await.map(tonic::Response::into_inner)
    })
    .await
}

async fn after_write(
    s: &mut Session,
    out: &Printer,
    what: &str,
    c: pb::CommitInfo,
) -> Result<(), CtlError> {
    after_write_naming(s, out, what, c, None).await
}

/// [`after_write`], naming in JSON something else the write created (`(field, id)`).
async fn after_write_naming(
    s: &mut Session,
    out: &Printer,
    what: &str,
    c: pb::CommitInfo,
    created: Option<(&str, &str)>,
) -> Result<(), CtlError> {
    s.wrote(c.position, c.replayed);
    match show(s, &c.aggregate_id).await {
        Ok(detail) => {
            out.commit_naming(what, &c, Some(&detail), created);
            Ok(())
        }
        Err(e) => {
            // The write is recorded: say so before the read's error, so a script does not
            // repeat it.
            out.commit_naming(what, &c, None, created);
            eprintln!(
                "semsctl: the change is recorded (position {}); reading the incident back failed",
                c.position
            );
            Err(e)
        }
    }
}

async fn ingest(s: &mut Session, out: &Printer, a: IngestArgs) -> Result<(), CtlError> {
    let r = pb::IngestAlertRequest {
        alert: Some(pb::Alert {
            source: a.source,
            source_ref: a.source_ref,
            title: a.title,
            description: a.description,
            severity: a.severity.pb(),
            occurred_at: timestamp("occurred-at", a.occurred_at.as_deref())?,
            observables: a
                .observables
                .into_iter()
                .map(|(r#type, value)| pb::Observable { r#type, value })
                .collect(),
            labels: a.labels.into_iter().collect(),
            raw: raw_json(a.raw.as_deref())?,
        }),
        request_id: a.write.request_id,
    };
    let answer = s.alerts().ingest_alert(s.request(r)).await?.into_inner();
    s.wrote(answer.position, answer.replayed);
    out.ingested(&answer);
    Ok(())
}

async fn list_incidents(
    s: &mut Session,
    out: &Printer,
    a: ListIncidentsArgs,
) -> Result<(), CtlError> {
    let request = pb::ListIncidentsRequest {
        statuses: a.status.iter().map(|v| v.pb()).collect(),
        levels: a.level.iter().map(|v| v.pb()).collect(),
        severities: a.severity.iter().map(|v| v.pb()).collect(),
        priorities: a.priority.iter().map(|v| v.pb()).collect(),
        opened: None,
        text: a.text.unwrap_or_default(),
        sort: a.sort.pb(),
        page_size: a.page.limit,
        page_token: a.page.page_token,
        consistency: None,
        risk_ref: a.risk.unwrap_or_default(),
    };
    let q = s.queries();
    let t = s.timeout();
    let page = s
        .read(async |min_position| {
            let mut q = q.clone();
            let mut r = tonic::Request::new(pb::ListIncidentsRequest {
                consistency: consistency(min_position),
                ..request.clone()
            });
            r.set_timeout(t);
            q.list_incidents(r).await.map(tonic::Response::into_inner)
        })
        .await?;
    out.incidents(&page);
    Ok(())
}
