//! Protobuf ⇄ domain and read-model types.

use chrono::{DateTime, TimeZone, Utc};
use prost_types::{Struct, Timestamp, Value as PbValue, value::Kind};
use sems_app::AppError;
use sems_domain::{
    Level, Limits, Observable, Phase, Priority, Role, Severity, Text, alert::AlertReport,
};
use sems_proto::v1 as pb;
use sems_readmodel::{
    AlertRow, AuthorityNotification, IncidentSummary, LinkedRisk, NoteRow, RoleHolder,
};
use uuid::Uuid;

/// Values one list filter of a query may name (statuses, levels, severities, priorities,
/// timeline kinds): more than every value of its kind, fewer than a request could carry.
pub const FILTER_VALUES: usize = 20;

/// A list filter named `field`, refused when it names more than [`FILTER_VALUES`] values.
pub fn filter_values<'a, T>(field: &str, values: &'a [T]) -> Result<&'a [T], AppError> {
    if values.len() > FILTER_VALUES {
        return Err(invalid(
            field,
            format!("names {} values; at most {FILTER_VALUES}", values.len()),
        ));
    }
    Ok(values)
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> AppError {
    AppError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A required UUID.
pub fn uuid(field: &str, value: &str) -> Result<Uuid, AppError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    Uuid::parse_str(value.trim()).map_err(|_| invalid(field, "is not a UUID"))
}

/// An optional client request id.
pub fn request_id(value: &str) -> Result<Option<String>, AppError> {
    let v = Text::optional("request_id", value, Limits::REQUEST_ID)?;
    Ok((!v.is_empty()).then_some(v))
}

/// An optional timestamp.
pub fn time(field: &str, value: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, AppError> {
    let Some(t) = value else { return Ok(None) };
    let nanos = u32::try_from(t.nanos).map_err(|_| invalid(field, "nanos out of range"))?;
    // Microseconds, as every recorded time (see `SystemClock`).
    Utc.timestamp_opt(t.seconds, nanos - nanos % 1_000)
        .single()
        .map(Some)
        .ok_or_else(|| invalid(field, "is out of range"))
}

/// A timestamp for the wire.
pub fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// An optional timestamp for the wire.
pub fn ts_opt(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(ts)
}

/// An alert from a SOC tool, checked against every limit; `prefix` names its fields.
pub fn alert_report(
    alert: Option<pb::Alert>,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<AlertReport, AppError> {
    let field = |f: &str| format!("{prefix}{f}");
    let a = alert.ok_or_else(|| invalid(prefix.trim_end_matches('.'), "is required"))?;
    if a.observables.len() > Limits::OBSERVABLES {
        return Err(invalid(
            field("observables"),
            format!("at most {} entries", Limits::OBSERVABLES),
        ));
    }
    let report = AlertReport {
        source: a.source,
        source_ref: a.source_ref,
        title: a.title,
        description: a.description,
        // Field names are made only on refusal: this runs for every alert ingested.
        severity: Severity::from_code("severity", a.severity).map_err(|e| match e {
            sems_domain::DomainError::Invalid { field, message } => {
                sems_domain::DomainError::Invalid {
                    field: format!("{prefix}{field}"),
                    message,
                }
            }
            other => other,
        })?,
        occurred_at: match a.occurred_at.as_ref() {
            None => now,
            Some(t) => time(&field("occurred_at"), Some(t))?.unwrap_or(now),
        },
        observables: a
            .observables
            .into_iter()
            .map(|o| Observable {
                kind: o.r#type,
                value: o.value,
            })
            .collect(),
        labels: a.labels,
        raw: a.raw.map(struct_to_json).unwrap_or(serde_json::Value::Null),
    };
    Ok(report.validate(prefix)?)
}

fn struct_to_json(s: Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: PbValue) -> serde_json::Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(value_to_json).collect())
        }
    }
}

/// Parses a status name of the read model into its proto number.
fn status_code(status: &str) -> i32 {
    match status {
        "OPEN" => pb::IncidentStatus::Open as i32,
        "ACKNOWLEDGED" => pb::IncidentStatus::Acknowledged as i32,
        "RESPONDING" => pb::IncidentStatus::Responding as i32,
        "RESOLVED" => pb::IncidentStatus::Resolved as i32,
        "CLOSED" => pb::IncidentStatus::Closed as i32,
        _ => 0,
    }
}

/// The stored name of a proto status number.
pub fn status_name(field: &str, code: i32) -> Result<String, AppError> {
    Ok(match pb::IncidentStatus::try_from(code) {
        Ok(pb::IncidentStatus::Open) => "OPEN",
        Ok(pb::IncidentStatus::Acknowledged) => "ACKNOWLEDGED",
        Ok(pb::IncidentStatus::Responding) => "RESPONDING",
        Ok(pb::IncidentStatus::Resolved) => "RESOLVED",
        Ok(pb::IncidentStatus::Closed) => "CLOSED",
        _ => {
            return Err(invalid(
                field,
                format!("unknown or unspecified value {code}"),
            ));
        }
    }
    .to_owned())
}

fn named<T>(
    parse: impl Fn(&str, &str) -> Result<T, sems_domain::DomainError>,
    text: &str,
    code: impl Fn(T) -> i32,
) -> i32 {
    parse("stored", text).map(code).unwrap_or(0)
}

/// An incident row for the wire.
pub fn incident(s: &IncidentSummary) -> pb::Incident {
    let r = &s.row;
    pb::Incident {
        incident_id: r.incident_id.to_string(),
        title: r.title.clone(),
        description: r.description.clone(),
        status: status_code(&r.status),
        level: named(Level::parse, &r.level, Level::code),
        phase: r
            .phase
            .as_deref()
            .map_or(0, |p| named(Phase::parse, p, Phase::code)),
        severity: i32::from(r.severity),
        priority: i32::from(r.priority),
        alert_count: u64::try_from(s.alert_count).unwrap_or(0),
        crisis_escalation_requested: r.crisis_escalation_requested,
        opened_at: Some(ts(r.opened_at)),
        acknowledged_at: ts_opt(r.acknowledged_at),
        tactical_at: ts_opt(r.tactical_at),
        escalation_requested_at: ts_opt(r.escalation_requested_at),
        resolved_at: ts_opt(r.resolved_at),
        closed_at: ts_opt(r.closed_at),
        updated_at: Some(ts(r.updated_at)),
        version: u64::try_from(r.version).unwrap_or(0),
        position: u64::try_from(r.position).unwrap_or(0),
        resolution: r.resolution.clone().unwrap_or_default(),
        authority_notified_at: ts_opt(r.authority_notified_at),
        risk_refs: r.risks.iter().map(|l| l.risk_ref.clone()).collect(),
    }
}

/// A linked register risk for the wire.
pub fn risk(l: &LinkedRisk) -> pb::LinkedRisk {
    pb::LinkedRisk {
        risk_ref: l.risk_ref.clone(),
        rationale: l.rationale.clone(),
        linked_by: l.linked_by.clone(),
        linked_at: Some(ts(l.linked_at)),
    }
}

/// A notification to an authority for the wire.
pub fn notification(n: &AuthorityNotification) -> pb::AuthorityNotification {
    pb::AuthorityNotification {
        authority: n.authority.clone(),
        reference: n.reference.clone(),
        summary: n.summary.clone(),
        notified_by: n.notified_by.clone(),
        occurred_at: Some(ts(n.occurred_at)),
        recorded_at: Some(ts(n.recorded_at)),
        late_reason: n.late_reason.clone().unwrap_or_default(),
    }
}

/// A role holder for the wire.
pub fn role(r: &RoleHolder) -> pb::RoleAssignment {
    pb::RoleAssignment {
        level: named(Level::parse, &r.level, Level::code),
        role: named(Role::parse, &r.role, Role::code),
        person: r.person.clone(),
        effective_at: Some(ts(r.effective_at)),
    }
}

/// A note for the wire.
pub fn note(n: &NoteRow) -> pb::Note {
    pb::Note {
        text: n.text.clone(),
        author: n.author.clone(),
        occurred_at: Some(ts(n.occurred_at)),
        recorded_at: Some(ts(n.recorded_at)),
        late_reason: n.late_reason.clone().unwrap_or_default(),
    }
}

/// An alert row for the wire.
pub fn alert(a: &AlertRow) -> pb::AlertView {
    pb::AlertView {
        alert_id: a.alert_id.to_string(),
        source: a.source.clone(),
        source_ref: a.source_ref.clone(),
        title: a.title.clone(),
        severity: i32::from(a.severity),
        status: a.status.clone(),
        incident_id: a.incident_id.map(|i| i.to_string()).unwrap_or_default(),
        repeat_count: u64::try_from(a.repeat_count).unwrap_or(0),
        first_seen_at: Some(ts(a.first_seen_at)),
        last_seen_at: Some(ts(a.last_seen_at)),
        description: a.description.clone(),
        source_state: a.source_state.clone(),
        source_resolved_at: a.source_resolved_at.map(ts),
    }
}

/// A required level.
pub fn level(field: &str, code: i32) -> Result<Level, AppError> {
    Ok(Level::from_code(field, code)?)
}

/// A required severity.
pub fn severity(field: &str, code: i32) -> Result<Severity, AppError> {
    Ok(Severity::from_code(field, code)?)
}

/// A required priority.
pub fn priority(field: &str, code: i32) -> Result<Priority, AppError> {
    Ok(Priority::from_code(field, code)?)
}
