//! Tables for people, JSON for scripts. JSON field names are the proto field names; enum
//! values are their short upper-case names (`HIGH`, `TACTICAL`), times RFC 3339 UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use sems_proto::v1 as pb;
use serde_json::{Value, json};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and short cards, for people.
    Table,
    /// One JSON document per command, for scripts.
    Json,
}

/// `SEVERITY_HIGH` → `HIGH`.
fn short(name: &str) -> &str {
    for prefix in [
        "SEVERITY_",
        "PRIORITY_",
        "LEVEL_",
        "INCIDENT_STATUS_",
        "PHASE_",
        "ROLE_",
        "JUST_CULTURE_DETERMINATION_",
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest;
        }
    }
    name
}

macro_rules! enum_text {
    ($fn:ident, $ty:ty) => {
        /// The short name of a wire value ("" when unset, the number when unknown).
        pub fn $fn(v: i32) -> String {
            match <$ty>::try_from(v) {
                Ok(e) if v != 0 => short(e.as_str_name()).to_owned(),
                Ok(_) => String::new(),
                Err(_) => v.to_string(),
            }
        }
    };
}

enum_text!(severity, pb::Severity);
enum_text!(priority, pb::Priority);
enum_text!(level, pb::Level);
enum_text!(status, pb::IncidentStatus);
enum_text!(phase, pb::Phase);
enum_text!(role, pb::Role);

/// A timestamp as RFC 3339 UTC (seconds).
pub fn time(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    time(t).map_or(Value::Null, Value::String)
}

fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// An incident as JSON.
pub fn incident_json(i: &pb::Incident) -> Value {
    json!({
        "incident_id": i.incident_id,
        "title": i.title,
        "description": i.description,
        "status": status(i.status),
        "level": level(i.level),
        "phase": opt(&phase(i.phase)),
        "severity": severity(i.severity),
        "priority": priority(i.priority),
        "alert_count": i.alert_count,
        "crisis_escalation_requested": i.crisis_escalation_requested,
        "opened_at": time_json(i.opened_at.as_ref()),
        "acknowledged_at": time_json(i.acknowledged_at.as_ref()),
        "tactical_at": time_json(i.tactical_at.as_ref()),
        "escalation_requested_at": time_json(i.escalation_requested_at.as_ref()),
        "resolved_at": time_json(i.resolved_at.as_ref()),
        "closed_at": time_json(i.closed_at.as_ref()),
        "authority_notified_at": time_json(i.authority_notified_at.as_ref()),
        "risk_refs": i.risk_refs,
        "updated_at": time_json(i.updated_at.as_ref()),
        "resolution": opt(&i.resolution),
        "version": i.version,
        "position": i.position,
    })
}

/// An alert as JSON.
pub fn alert_json(a: &pb::AlertView) -> Value {
    json!({
        "alert_id": a.alert_id,
        "source": a.source,
        "source_ref": a.source_ref,
        "title": a.title,
        "description": a.description,
        "severity": severity(a.severity),
        "status": a.status,
        "incident_id": opt(&a.incident_id),
        "repeat_count": a.repeat_count,
        "first_seen_at": time_json(a.first_seen_at.as_ref()),
        "last_seen_at": time_json(a.last_seen_at.as_ref()),
        "source_state": a.source_state,
        "source_resolved_at": time_json(a.source_resolved_at.as_ref()),
    })
}

/// An incident with its alerts, roles, notes and notifications as JSON.
pub fn detail_json(d: &pb::IncidentDetail) -> Value {
    json!({
        "incident": d.incident.as_ref().map_or(Value::Null, incident_json),
        "alerts": d.alerts.iter().map(alert_json).collect::<Vec<_>>(),
        "roles": d.roles.iter().map(|r| json!({
            "level": level(r.level),
            "role": role(r.role),
            "person": r.person,
            "effective_at": time_json(r.effective_at.as_ref()),
        })).collect::<Vec<_>>(),
        "notes": d.notes.iter().map(|n| json!({
            "text": n.text,
            "author": n.author,
            "occurred_at": time_json(n.occurred_at.as_ref()),
            "recorded_at": time_json(n.recorded_at.as_ref()),
            "late_reason": opt(&n.late_reason),
        })).collect::<Vec<_>>(),
        "notifications": d.notifications.iter().map(|n| json!({
            "authority": n.authority,
            "reference": opt(&n.reference),
            "summary": n.summary,
            "notified_by": n.notified_by,
            "occurred_at": time_json(n.occurred_at.as_ref()),
            "recorded_at": time_json(n.recorded_at.as_ref()),
            "late_reason": opt(&n.late_reason),
        })).collect::<Vec<_>>(),
        "risks": d.risks.iter().map(|r| json!({
            "risk_ref": r.risk_ref,
            "rationale": r.rationale,
            "linked_by": r.linked_by,
            "linked_at": time_json(r.linked_at.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// A command's answer as JSON.
pub fn commit_json(c: &pb::CommitInfo) -> Value {
    json!({
        "aggregate_id": c.aggregate_id,
        "version": c.version,
        "position": c.position,
        "replayed": c.replayed,
    })
}

/// Left-aligned columns separated by two spaces; cells longer than `max` are cut with `…`.
pub fn table(headers: &[&str], rows: &[Vec<String>], max: usize) -> String {
    debug_assert!(
        rows.iter().all(|r| r.len() == headers.len()),
        "every row has a cell per header: {headers:?}"
    );
    let cut = |s: &str| -> String {
        let s = s.replace(['\n', '\t'], " ");
        if s.chars().count() > max {
            let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
            t.push('…');
            t
        } else {
            s
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| -> String {
        let mut out = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// The incident list as a table.
pub fn incidents_table(incidents: &[pb::Incident]) -> String {
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.incident_id.clone(),
                status(i.status),
                level(i.level),
                severity(i.severity),
                priority(i.priority),
                i.alert_count.to_string(),
                time(i.opened_at.as_ref()).unwrap_or_default(),
                i.title.clone(),
            ]
        })
        .collect();
    table(
        &[
            "INCIDENT", "STATUS", "LEVEL", "SEVERITY", "PRIORITY", "ALERTS", "OPENED", "TITLE",
        ],
        &rows,
        60,
    )
}

/// The alert list as a table.
pub fn alerts_table(alerts: &[pb::AlertView]) -> String {
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                a.alert_id.clone(),
                a.source.clone(),
                a.source_ref.clone(),
                severity(a.severity),
                a.status.clone(),
                a.source_state.clone(),
                a.repeat_count.to_string(),
                time(a.last_seen_at.as_ref()).unwrap_or_default(),
                a.title.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ALERT",
            "SOURCE",
            "REF",
            "SEVERITY",
            "STATUS",
            "AT SOURCE",
            "REPEATS",
            "LAST SEEN",
            "TITLE",
        ],
        &rows,
        48,
    )
}

/// One incident as a card: its fields, milestones, roles, alerts, notifications and notes.
pub fn incident_card(d: &pb::IncidentDetail) -> String {
    let Some(i) = &d.incident else {
        return String::new();
    };
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{name:<22}{value}\n"));
        }
    };
    field("Incident", i.incident_id.clone());
    field("Title", i.title.clone());
    field("Description", i.description.clone());
    field(
        "Status",
        format!(
            "{} at {} level{}",
            status(i.status),
            level(i.level),
            if i.crisis_escalation_requested {
                ", crisis escalation requested"
            } else {
                ""
            }
        ),
    );
    field(
        "Severity / priority",
        format!("{} / {}", severity(i.severity), priority(i.priority)),
    );
    field("Phase", phase(i.phase));
    field("Resolution", i.resolution.clone());
    for (name, t) in [
        ("Opened", &i.opened_at),
        ("Acknowledged", &i.acknowledged_at),
        ("Tactical", &i.tactical_at),
        ("Escalation requested", &i.escalation_requested_at),
        ("Authority notified", &i.authority_notified_at),
        ("Resolved", &i.resolved_at),
        ("Closed", &i.closed_at),
    ] {
        field(name, time(t.as_ref()).unwrap_or_default());
    }
    field(
        "Version / position",
        format!("{} / {}", i.version, i.position),
    );
    if !d.roles.is_empty() {
        out.push_str("\nRoles\n");
        let rows: Vec<Vec<String>> = d
            .roles
            .iter()
            .map(|r| {
                vec![
                    level(r.level),
                    role(r.role),
                    r.person.clone(),
                    time(r.effective_at.as_ref()).unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(&["LEVEL", "ROLE", "PERSON", "SINCE"], &rows, 40));
    }
    if !d.alerts.is_empty() {
        out.push_str("\nAlerts\n");
        out.push_str(&alerts_table(&d.alerts));
    }
    if !d.notifications.is_empty() {
        out.push_str("\nAuthorities notified\n");
        let rows: Vec<Vec<String>> = d
            .notifications
            .iter()
            .map(|n| {
                vec![
                    time(n.occurred_at.as_ref()).unwrap_or_default(),
                    n.authority.clone(),
                    n.reference.clone(),
                    n.summary.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SENT", "AUTHORITY", "REFERENCE", "SUMMARY"],
            &rows,
            60,
        ));
    }
    if !d.risks.is_empty() {
        out.push_str("\nRegister risks realised\n");
        let rows: Vec<Vec<String>> = d
            .risks
            .iter()
            .map(|r| {
                vec![
                    r.risk_ref.clone(),
                    r.linked_by.clone(),
                    time(r.linked_at.as_ref()).unwrap_or_default(),
                    r.rationale.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["RISK", "LINKED BY", "AT", "WHY"], &rows, 60));
    }
    if !d.notes.is_empty() {
        out.push_str("\nNotes\n");
        for n in &d.notes {
            out.push_str(&format!(
                "{}  {}: {}{}\n",
                time(n.occurred_at.as_ref()).unwrap_or_default(),
                n.author,
                n.text,
                if n.late_reason.is_empty() {
                    String::new()
                } else {
                    format!(" (recorded late: {})", n.late_reason)
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cut_long_cells() {
        let t = table(
            &["ID", "TITLE"],
            &[
                vec!["1".into(), "short".into()],
                vec!["22".into(), "a title far too long".into()],
            ],
            10,
        );
        assert_eq!(t, "ID  TITLE\n1   short\n22  a title f…\n");
    }

    #[test]
    fn the_alerts_table_has_a_header_over_every_column() {
        let a = pb::AlertView {
            alert_id: "a1".into(),
            source: "suricata".into(),
            source_ref: "flow-1".into(),
            title: "log4j".into(),
            severity: pb::Severity::High as i32,
            status: "promoted".into(),
            source_state: "firing".into(),
            repeat_count: 2,
            ..Default::default()
        };
        let t = alerts_table(&[a]);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "ALERT", "SOURCE", "REF", "SEVERITY", "STATUS", "AT", "SOURCE", "REPEATS", "LAST",
                "SEEN", "TITLE"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "a1", "suricata", "flow-1", "HIGH", "promoted", "firing", "2", "log4j"
            ]
        );
    }

    #[test]
    fn enum_values_print_short_names() {
        assert_eq!(severity(pb::Severity::Critical as i32), "CRITICAL");
        assert_eq!(level(pb::Level::Tactical as i32), "TACTICAL");
        assert_eq!(phase(0), "");
        assert_eq!(priority(99), "99");
    }
}
