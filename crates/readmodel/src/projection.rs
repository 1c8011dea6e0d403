//! The incident-tracking projection as a pure function: commits in, row changes out. The
//! writers load the rows a batch touches, apply every commit here in memory (so several
//! events on one row become one write), and store the result with a few set-based
//! statements.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use sems_app::{Envelope, LogError, StoredCommit, decode_events};
use sems_domain::{
    Aggregate, JustCulture, Level,
    alert::{Alert, AlertEvent},
    crisis::{Crisis, CrisisEvent},
    handover::{Handover, HandoverEvent},
    incident::{Incident, IncidentEvent, IncidentStatus},
};

/// A commit decoded for projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedCommit {
    /// Position in the log.
    pub position: u64,
    /// The envelope.
    pub envelope: Envelope,
    /// Its events, decoded.
    pub events: Events,
}

/// The events of one commit, by aggregate type.
#[derive(Debug, Clone, PartialEq)]
pub enum Events {
    /// Events of an alert.
    Alert(Vec<AlertEvent>),
    /// Events of an incident.
    Incident(Vec<IncidentEvent>),
    /// Events of a handover.
    Handover(Vec<HandoverEvent>),
    /// Events of a crisis.
    Crisis(Vec<CrisisEvent>),
    /// An aggregate type this projection does not follow.
    Other,
}

impl ProjectedCommit {
    /// Decodes a stored commit.
    pub fn decode(commit: &StoredCommit) -> Result<Self, LogError> {
        let envelope = Envelope::decode(&commit.bytes)?;
        let events = match envelope.aggregate_type.as_str() {
            Alert::TYPE => Events::Alert(decode_events(&envelope)?),
            Incident::TYPE => Events::Incident(decode_events(&envelope)?),
            Handover::TYPE => Events::Handover(decode_events(&envelope)?),
            Crisis::TYPE => Events::Crisis(decode_events(&envelope)?),
            _ => Events::Other,
        };
        Ok(Self {
            position: commit.position,
            envelope,
            events,
        })
    }
}

/// A role holder as shown on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleHolder {
    /// Level.
    pub level: String,
    /// Role.
    pub role: String,
    /// Who.
    pub person: String,
    /// Since when.
    pub effective_at: DateTime<Utc>,
}

/// One row of `incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRow {
    pub incident_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: String,
    pub level: String,
    pub phase: Option<String>,
    pub severity: i16,
    pub priority: i16,
    pub crisis_escalation_requested: bool,
    pub roles: Vec<RoleHolder>,
    pub resolution: Option<String>,
    pub just_culture: Option<JustCulture>,
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub tactical_at: Option<DateTime<Utc>>,
    pub escalation_requested_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub position: i64,
    /// Notifications to authorities, in the order recorded (null in PostgreSQL rows an older
    /// version wrote after the column was added: none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub notifications: Vec<AuthorityNotification>,
    /// When the first authority was notified (the regulatory clocks run from detection).
    #[serde(default)]
    pub authority_notified_at: Option<DateTime<Utc>>,
    /// The register risks it realised, in the order linked (links removed in error are not
    /// shown; the log keeps them). Null as `notifications` may be.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub risks: Vec<LinkedRisk>,
}

/// A register risk an incident realised, on its row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedRisk {
    pub risk_ref: String,
    pub rationale: String,
    pub linked_by: String,
    pub linked_at: DateTime<Utc>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A notification to an authority, on its incident's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityNotification {
    pub authority: String,
    pub reference: String,
    pub summary: String,
    pub notified_by: String,
    /// When it was sent.
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub late_reason: Option<String>,
}

/// One row of `alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    pub alert_id: Uuid,
    pub source: String,
    pub source_ref: String,
    pub title: String,
    pub description: String,
    pub severity: i16,
    pub status: String,
    // What most alerts do not have is left out of the embedded read model's document rather
    // than written as `null` (a missing field reads back as absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    pub repeat_count: i64,
    // chrono's text, written without going through `fmt` (the embedded read model stores
    // a document per alert row).
    #[serde(serialize_with = "sems_domain::time::serialize_utc")]
    pub first_seen_at: DateTime<Utc>,
    #[serde(serialize_with = "sems_domain::time::serialize_utc")]
    pub last_seen_at: DateTime<Utc>,
    #[serde(serialize_with = "sems_domain::time::serialize_utc")]
    pub received_at: DateTime<Utc>,
    pub observables: Vec<sems_domain::Observable>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub raw: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissal_rationale: Option<String>,
    /// What the source says: `firing`, `acknowledged`, `resolved`.
    #[serde(default = "firing")]
    pub source_state: String,
    /// When the source reported it resolved (cleared when it fires again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_resolved_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub position: i64,
}

fn firing() -> String {
    "firing".into()
}

/// One row of `incident_notes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoteRow {
    pub incident_id: Uuid,
    pub position: i64,
    pub seq: i32,
    pub text: String,
    pub author: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub late_reason: Option<String>,
}

/// An alert promoted into an incident the batch has not seen opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOpening {
    pub incident_id: Uuid,
    pub alert_id: Uuid,
    pub promoted_at: DateTime<Utc>,
}

/// The rows one batch reads and writes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    /// Incidents, as loaded and then changed.
    pub incidents: HashMap<Uuid, IncidentRow>,
    /// Alerts, as loaded and then changed.
    pub alerts: HashMap<Uuid, AlertRow>,
    /// Notes added by the batch.
    pub notes: Vec<NoteRow>,
    /// Promotions into incidents not opened within the batch; the writer drops those whose
    /// incident exists.
    pub pending: Vec<PendingOpening>,
    /// The batch opened incidents (pending openings may be settled).
    pub opened_incidents: bool,
}

impl Rows {
    /// Room for the alerts of a batch of `commits` commits (at most one each), so that the
    /// map is not grown and rehashed again and again while the batch is applied.
    pub fn for_batch(commits: usize) -> Self {
        Self {
            alerts: HashMap::with_capacity(commits),
            ..Self::default()
        }
    }
}

/// The incident and alert ids whose rows a batch must load before applying: every aggregate
/// it touches, but those it creates (their first commit in the batch is their first commit
/// ever, so no row exists yet).
pub fn touched<'a>(
    commits: impl IntoIterator<Item = &'a ProjectedCommit>,
) -> (Vec<Uuid>, Vec<Uuid>) {
    let commits = commits.into_iter();
    let mut seen = std::collections::HashSet::with_capacity(commits.size_hint().0);
    let mut incidents = Vec::new();
    let mut alerts = Vec::new();
    for c in commits {
        let id = c.envelope.aggregate_id;
        if !seen.insert(id) {
            continue;
        }
        let creates = c.envelope.aggregate_version == c.envelope.events.len() as u64;
        match c.events {
            Events::Alert(_) if !creates => alerts.push(id),
            Events::Incident(_) if !creates => incidents.push(id),
            _ => {}
        }
    }
    incidents.sort();
    alerts.sort();
    (incidents, alerts)
}

/// Why a commit could not be projected: the read model disagrees with the log.
#[derive(Debug, thiserror::Error)]
#[error("cannot project position {position}: {message}")]
pub struct ProjectionError {
    /// The commit.
    pub position: u64,
    /// What is wrong.
    pub message: String,
}

/// Applies one commit to the rows.
pub fn apply(rows: &mut Rows, commit: &ProjectedCommit) -> Result<(), ProjectionError> {
    let e = &commit.envelope;
    let fail = |message: String| ProjectionError {
        position: commit.position,
        message,
    };
    let version =
        i64::try_from(e.aggregate_version).map_err(|_| fail("version out of range".into()))?;
    let position =
        i64::try_from(commit.position).map_err(|_| fail("position out of range".into()))?;
    match &commit.events {
        // The CMC read models (crate::cmc) follow these.
        Events::Other | Events::Handover(_) | Events::Crisis(_) => {}
        Events::Alert(events) => {
            for (event, meta) in events.iter().zip(&e.events) {
                let id = e.aggregate_id;
                if let AlertEvent::AlertReceived(r) = event {
                    rows.alerts.insert(
                        id,
                        AlertRow {
                            alert_id: id,
                            source: r.source.clone(),
                            source_ref: r.source_ref.clone(),
                            title: r.title.clone(),
                            description: r.description.clone(),
                            severity: r.severity.code() as i16,
                            status: "received".into(),
                            incident_id: None,
                            repeat_count: 0,
                            first_seen_at: r.occurred_at,
                            last_seen_at: r.occurred_at,
                            received_at: e.recorded_at,
                            observables: r.observables.clone(),
                            labels: r.labels.clone(),
                            raw: r.raw.clone(),
                            dismissal_rationale: None,
                            source_state: firing(),
                            source_resolved_at: None,
                            version,
                            position,
                        },
                    );
                    continue;
                }
                let row = rows
                    .alerts
                    .get_mut(&id)
                    .ok_or_else(|| fail(format!("alert {id} not in the read model")))?;
                match event {
                    AlertEvent::AlertReceived(_) => {}
                    AlertEvent::AlertRepeated {
                        severity,
                        occurred_at,
                        count,
                        ..
                    } => {
                        row.repeat_count = i64::try_from(*count).unwrap_or(i64::MAX) - 1;
                        row.last_seen_at = row.last_seen_at.max(*occurred_at);
                        row.severity = row.severity.max(severity.code() as i16);
                        row.source_state = firing();
                        row.source_resolved_at = None;
                    }
                    AlertEvent::AlertAcknowledgedAtSource { .. } => {
                        row.source_state = "acknowledged".into();
                    }
                    AlertEvent::AlertResolvedAtSource { .. } => {
                        row.source_state = "resolved".into();
                        row.source_resolved_at = Some(meta.occurred_at);
                    }
                    AlertEvent::AlertDismissed { rationale, .. } => {
                        row.status = "dismissed".into();
                        row.dismissal_rationale = Some(rationale.clone());
                    }
                    AlertEvent::AlertMerged { incident_id, .. } => {
                        row.status = "merged".into();
                        row.incident_id = Some(*incident_id);
                    }
                    AlertEvent::AlertPromoted { incident_id } => {
                        row.status = "promoted".into();
                        row.incident_id = Some(*incident_id);
                        if !rows.incidents.contains_key(incident_id) {
                            rows.pending.push(PendingOpening {
                                incident_id: *incident_id,
                                alert_id: id,
                                promoted_at: e.recorded_at,
                            });
                        }
                    }
                }
            }
            if let Some(row) = rows.alerts.get_mut(&e.aggregate_id) {
                row.version = version;
                row.position = position;
            }
        }
        Events::Incident(events) => {
            for (seq, (event, meta)) in events.iter().zip(&e.events).enumerate() {
                let id = e.aggregate_id;
                let at = meta.occurred_at;
                if let IncidentEvent::IncidentOpened {
                    title,
                    description,
                    severity,
                    priority,
                    level,
                    opened_by,
                    ..
                } = event
                {
                    rows.opened_incidents = true;
                    rows.incidents.insert(
                        id,
                        IncidentRow {
                            incident_id: id,
                            title: title.clone(),
                            description: description.clone(),
                            status: IncidentStatus::Open.as_str().into(),
                            level: level.as_str().into(),
                            phase: None,
                            severity: severity.code() as i16,
                            priority: priority.code() as i16,
                            crisis_escalation_requested: false,
                            roles: Vec::new(),
                            resolution: None,
                            just_culture: None,
                            opened_by: opened_by.clone(),
                            opened_at: at,
                            acknowledged_at: None,
                            tactical_at: None,
                            escalation_requested_at: None,
                            resolved_at: None,
                            closed_at: None,
                            updated_at: e.recorded_at,
                            version,
                            position,
                            notifications: Vec::new(),
                            risks: Vec::new(),
                            authority_notified_at: None,
                        },
                    );
                    continue;
                }
                let row = rows
                    .incidents
                    .get_mut(&id)
                    .ok_or_else(|| fail(format!("incident {id} not in the read model")))?;
                match event {
                    IncidentEvent::IncidentOpened { .. } => {}
                    IncidentEvent::IncidentAcknowledged { .. } => {
                        row.status = IncidentStatus::Acknowledged.as_str().into();
                        row.acknowledged_at.get_or_insert(at);
                    }
                    IncidentEvent::IncidentRoleAssigned {
                        role,
                        person,
                        level,
                        effective_at,
                        ..
                    } => {
                        if *role == sems_domain::Role::Commander {
                            row.roles.retain(|r| {
                                !(r.level == level.as_str() && r.role == role.as_str())
                            });
                        }
                        row.roles.push(RoleHolder {
                            level: level.as_str().into(),
                            role: role.as_str().into(),
                            person: person.clone(),
                            effective_at: *effective_at,
                        });
                    }
                    IncidentEvent::IncidentClassified {
                        severity, priority, ..
                    } => {
                        row.severity = severity.code() as i16;
                        row.priority = priority.code() as i16;
                    }
                    IncidentEvent::AuthorityNotified {
                        authority,
                        reference,
                        summary,
                        notified_by,
                    } => {
                        // Microseconds, as PostgreSQL keeps its timestamps: the list and the
                        // milestone agree, on both stores.
                        let sent = at.trunc_subsecs(6);
                        row.notifications.push(AuthorityNotification {
                            authority: authority.clone(),
                            reference: reference.clone(),
                            summary: summary.clone(),
                            notified_by: notified_by.clone(),
                            occurred_at: sent,
                            recorded_at: e.recorded_at.trunc_subsecs(6),
                            late_reason: meta.late_reason.clone(),
                        });
                        let first = row.authority_notified_at.get_or_insert(sent);
                        *first = (*first).min(sent);
                    }
                    IncidentEvent::NoteAdded { text, author } => {
                        rows.notes.push(NoteRow {
                            incident_id: id,
                            position,
                            seq: seq as i32,
                            text: text.clone(),
                            author: author.clone(),
                            occurred_at: at,
                            recorded_at: e.recorded_at,
                            late_reason: meta.late_reason.clone(),
                        });
                    }
                    IncidentEvent::IncidentLevelChanged { to, .. } => {
                        row.level = to.as_str().into();
                        row.status = IncidentStatus::Responding.as_str().into();
                        if *to == Level::Tactical {
                            row.tactical_at.get_or_insert(at);
                        }
                    }
                    IncidentEvent::IncidentPhaseChanged { to, .. } => {
                        row.phase = Some(to.as_str().into());
                        row.status = IncidentStatus::Responding.as_str().into();
                    }
                    IncidentEvent::IncidentResolved {
                        resolution,
                        just_culture,
                        ..
                    } => {
                        row.status = IncidentStatus::Resolved.as_str().into();
                        row.resolution = Some(resolution.clone());
                        row.just_culture = just_culture.clone();
                        row.resolved_at = Some(at);
                    }
                    IncidentEvent::IncidentClosed { .. } => {
                        row.status = IncidentStatus::Closed.as_str().into();
                        row.closed_at = Some(at);
                    }
                    IncidentEvent::IncidentReopened { .. } => {
                        row.status = IncidentStatus::Responding.as_str().into();
                        row.resolved_at = None;
                        row.closed_at = None;
                    }
                    IncidentEvent::CrisisEscalationRequested { .. } => {
                        row.crisis_escalation_requested = true;
                        row.status = IncidentStatus::Responding.as_str().into();
                        row.escalation_requested_at.get_or_insert(at);
                    }
                    IncidentEvent::IncidentCommandTransferred { to_level, .. } => {
                        row.level = to_level.as_str().into();
                        row.crisis_escalation_requested = false;
                        row.status = IncidentStatus::Responding.as_str().into();
                    }
                    IncidentEvent::CrisisEscalationDeclined { .. }
                    | IncidentEvent::CrisisEscalationWithdrawn { .. } => {
                        row.crisis_escalation_requested = false;
                    }
                    IncidentEvent::IncidentCommandReturned { to_level, .. } => {
                        row.level = to_level.as_str().into();
                    }
                    IncidentEvent::RiskLinked {
                        risk_ref,
                        rationale,
                        linked_by,
                    } => row.risks.push(LinkedRisk {
                        risk_ref: risk_ref.clone(),
                        rationale: rationale.clone(),
                        linked_by: linked_by.clone(),
                        // Microseconds, as PostgreSQL keeps them: both stores agree.
                        linked_at: at.trunc_subsecs(6),
                    }),
                    IncidentEvent::RiskUnlinked { risk_ref, .. } => {
                        row.risks.retain(|r| r.risk_ref != *risk_ref);
                    }
                    // The incident's decision log (crate::cmc) follows these.
                    IncidentEvent::IncidentDecisionRecorded(_)
                    | IncidentEvent::IncidentDecisionSuperseded { .. }
                    | IncidentEvent::IncidentDecisionAmended { .. }
                    | IncidentEvent::IncidentDecisionReviewed { .. } => {}
                }
            }
            if let Some(row) = rows.incidents.get_mut(&e.aggregate_id) {
                row.version = version;
                row.position = position;
                row.updated_at = e.recorded_at;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use sems_app::{EnvelopeEvent, GENESIS_HASH};
    use sems_domain::{DomainEvent, Observable, Priority, Role, Severity, alert::AlertReport};

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap() + Duration::minutes(minute)
    }

    pub(crate) fn commit<E: DomainEvent>(
        position: u64,
        kind: &str,
        id: Uuid,
        version: u64,
        events: Vec<E>,
        wrap: fn(Vec<E>) -> Events,
    ) -> ProjectedCommit {
        let envelope = Envelope {
            commit_id: Uuid::from_u128(u128::from(position)),
            aggregate_type: kind.into(),
            aggregate_id: id,
            aggregate_version: version,
            recorded_at: t(position as i64),
            actor: "tester".into(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            trace_context: None,
            prev_hash: GENESIS_HASH.into(),
            events: events
                .iter()
                .map(|e| EnvelopeEvent {
                    event_id: Uuid::nil(),
                    event_type: e.event_type().into(),
                    schema_version: 1,
                    occurred_at: t(position as i64) - Duration::seconds(30),
                    late_reason: None,
                    payload: e.to_payload().unwrap(),
                })
                .collect(),
        };
        ProjectedCommit {
            position,
            envelope,
            events: wrap(events),
        }
    }

    fn incident(position: u64, version: u64, events: Vec<IncidentEvent>) -> ProjectedCommit {
        commit(
            position,
            "incident",
            Uuid::from_u128(1),
            version,
            events,
            Events::Incident,
        )
    }

    fn alert(position: u64, version: u64, events: Vec<AlertEvent>) -> ProjectedCommit {
        commit(
            position,
            "alert",
            Uuid::from_u128(2),
            version,
            events,
            Events::Alert,
        )
    }

    fn opened() -> IncidentEvent {
        IncidentEvent::IncidentOpened {
            title: "DDoS on booking site".into(),
            description: "".into(),
            severity: Severity::High,
            priority: Priority::P2,
            level: Level::Operational,
            alert_ids: vec![],
            opened_by: "soc".into(),
        }
    }

    fn report() -> AlertReport {
        AlertReport {
            source: "waf".into(),
            source_ref: "r1".into(),
            title: "Flood".into(),
            description: "".into(),
            severity: Severity::Medium,
            occurred_at: t(0),
            observables: vec![Observable {
                kind: "ip".into(),
                value: "198.51.100.1".into(),
            }],
            labels: BTreeMap::new(),
            raw: serde_json::json!({}),
        }
    }

    fn project(commits: &[ProjectedCommit]) -> Rows {
        let mut rows = Rows::default();
        for c in commits {
            apply(&mut rows, c).unwrap();
        }
        rows
    }

    #[test]
    fn an_incident_row_follows_its_lifecycle_with_milestones() {
        let rows = project(&[
            incident(1, 1, vec![opened()]),
            incident(
                2,
                2,
                vec![IncidentEvent::IncidentAcknowledged {
                    acknowledged_by: "ana".into(),
                }],
            ),
            incident(
                3,
                3,
                vec![IncidentEvent::IncidentLevelChanged {
                    from: Level::Operational,
                    to: Level::Tactical,
                    reason: "spreading".into(),
                    decided_by: "ana".into(),
                }],
            ),
            incident(
                4,
                4,
                vec![IncidentEvent::IncidentRoleAssigned {
                    role: Role::Commander,
                    person: "ana".into(),
                    level: Level::Tactical,
                    effective_at: t(4),
                    replaces: None,
                    assigned_by: "ana".into(),
                }],
            ),
            incident(
                5,
                5,
                vec![IncidentEvent::IncidentRoleAssigned {
                    role: Role::Commander,
                    person: "bo".into(),
                    level: Level::Tactical,
                    effective_at: t(5),
                    replaces: Some("ana".into()),
                    assigned_by: "ana".into(),
                }],
            ),
            incident(
                6,
                6,
                vec![IncidentEvent::CrisisEscalationRequested {
                    reason: "payments down".into(),
                    criteria_met: "".into(),
                    from_level: Level::Tactical,
                    requested_by: "bo".into(),
                    handover_id: None,
                }],
            ),
        ]);
        let row = &rows.incidents[&Uuid::from_u128(1)];
        assert_eq!(row.status, "RESPONDING");
        assert_eq!(row.level, "TACTICAL");
        assert_eq!(row.acknowledged_at, Some(t(2) - Duration::seconds(30)));
        assert_eq!(row.tactical_at, Some(t(3) - Duration::seconds(30)));
        assert!(row.crisis_escalation_requested);
        assert_eq!(row.roles.len(), 1, "one commander per level");
        assert_eq!(row.roles[0].person, "bo");
        assert_eq!((row.version, row.position), (6, 6));
        assert_eq!(row.updated_at, t(6));
    }

    #[test]
    fn notes_are_appended_with_both_times_and_late_reason() {
        let mut c = incident(
            2,
            2,
            vec![IncidentEvent::NoteAdded {
                text: "call with ISP".into(),
                author: "ana".into(),
            }],
        );
        c.envelope.events[0].late_reason = Some("written up after".into());
        let rows = project(&[incident(1, 1, vec![opened()]), c]);
        assert_eq!(rows.notes.len(), 1);
        let n = &rows.notes[0];
        assert_eq!((n.position, n.seq), (2, 0));
        assert_eq!(n.recorded_at, t(2));
        assert_eq!(n.occurred_at, t(2) - Duration::seconds(30));
        assert_eq!(n.late_reason.as_deref(), Some("written up after"));
    }

    #[test]
    fn alert_rows_count_repeats_and_follow_triage() {
        let rows = project(&[
            alert(1, 1, vec![AlertEvent::AlertReceived(report().into())]),
            alert(
                2,
                2,
                vec![AlertEvent::AlertRepeated {
                    severity: Severity::Critical,
                    occurred_at: t(2),
                    count: 2,
                    raw: serde_json::json!({}),
                }],
            ),
            alert(
                3,
                3,
                vec![AlertEvent::AlertPromoted {
                    incident_id: Uuid::from_u128(1),
                }],
            ),
        ]);
        let a = &rows.alerts[&Uuid::from_u128(2)];
        assert_eq!(a.repeat_count, 1);
        assert_eq!(a.severity, Severity::Critical.code() as i16);
        assert_eq!(a.last_seen_at, t(2));
        assert_eq!(a.status, "promoted");
        assert_eq!(a.incident_id, Some(Uuid::from_u128(1)));
        assert_eq!((a.version, a.position), (3, 3));
        // The incident is not opened in this batch: the promotion waits for it.
        assert_eq!(rows.pending.len(), 1);
        assert_eq!(rows.pending[0].incident_id, Uuid::from_u128(1));
        assert!(!rows.opened_incidents);
    }

    #[test]
    fn alert_rows_follow_the_source_resolving_and_firing_again() {
        let raw = serde_json::json!({"status": "resolved"});
        let rows = project(&[
            alert(1, 1, vec![AlertEvent::AlertReceived(report().into())]),
            alert(
                2,
                2,
                vec![AlertEvent::AlertAcknowledgedAtSource { raw: raw.clone() }],
            ),
        ]);
        assert_eq!(
            rows.alerts[&Uuid::from_u128(2)].source_state,
            "acknowledged"
        );
        let rows = project(&[
            alert(1, 1, vec![AlertEvent::AlertReceived(report().into())]),
            alert(2, 2, vec![AlertEvent::AlertResolvedAtSource { raw }]),
        ]);
        let a = &rows.alerts[&Uuid::from_u128(2)];
        assert_eq!(a.source_state, "resolved");
        assert!(a.source_resolved_at.is_some());
        assert_eq!(a.status, "received", "triage is untouched");
        let mut rows = rows;
        apply(
            &mut rows,
            &alert(
                3,
                3,
                vec![AlertEvent::AlertRepeated {
                    severity: Severity::Low,
                    occurred_at: t(3),
                    count: 2,
                    raw: serde_json::json!({}),
                }],
            ),
        )
        .unwrap();
        let a = &rows.alerts[&Uuid::from_u128(2)];
        assert_eq!(
            (a.source_state.as_str(), a.source_resolved_at),
            ("firing", None)
        );
    }

    #[test]
    fn the_handover_outcome_moves_the_incident_row_to_strategic_or_closes_the_request() {
        let requested = incident(
            2,
            2,
            vec![IncidentEvent::CrisisEscalationRequested {
                reason: "payments down".into(),
                criteria_met: "".into(),
                from_level: Level::Tactical,
                requested_by: "bo".into(),
                handover_id: None,
            }],
        );
        let accepted = project(&[
            incident(1, 1, vec![opened()]),
            requested.clone(),
            incident(
                3,
                3,
                vec![IncidentEvent::IncidentCommandTransferred {
                    handover_id: Uuid::from_u128(5),
                    crisis_id: Uuid::from_u128(6),
                    from_level: Level::Tactical,
                    to_level: Level::Strategic,
                    effective_at: t(3),
                }],
            ),
        ]);
        let row = &accepted.incidents[&Uuid::from_u128(1)];
        assert_eq!(row.level, "STRATEGIC");
        assert!(!row.crisis_escalation_requested);
        assert!(row.escalation_requested_at.is_some(), "the milestone stays");
        let declined = project(&[
            incident(1, 1, vec![opened()]),
            requested,
            incident(
                3,
                3,
                vec![IncidentEvent::CrisisEscalationDeclined {
                    handover_id: Uuid::from_u128(5),
                    reason: "within tactical capability".into(),
                    command_stays_at: Level::Tactical,
                }],
            ),
        ]);
        let row = &declined.incidents[&Uuid::from_u128(1)];
        assert!(!row.crisis_escalation_requested);
        assert_ne!(row.level, "STRATEGIC");
    }

    #[test]
    fn notifications_are_listed_in_order_and_the_first_sent_is_the_milestone() {
        let notified = |authority: &str| IncidentEvent::AuthorityNotified {
            authority: authority.into(),
            reference: String::new(),
            summary: "early warning".into(),
            notified_by: "x".into(),
        };
        let mut late = incident(3, 3, vec![notified("DPA")]);
        late.envelope.events[0].occurred_at = t(1);
        let rows = project(&[
            incident(1, 1, vec![opened()]),
            incident(2, 2, vec![notified("CSIRT")]),
            late,
        ]);
        let row = &rows.incidents[&Uuid::from_u128(1)];
        let got: Vec<&str> = row
            .notifications
            .iter()
            .map(|n| n.authority.as_str())
            .collect();
        assert_eq!(got, ["CSIRT", "DPA"]);
        assert_eq!(row.authority_notified_at, Some(t(1)));
        // A row written without the list (an older version, after the column was added).
        let mut json = serde_json::to_value(row).unwrap();
        json["notifications"] = serde_json::Value::Null;
        let read: IncidentRow = serde_json::from_value(json).unwrap();
        assert!(read.notifications.is_empty());
    }

    #[test]
    fn linked_risks_are_listed_in_order_and_an_unlinked_one_leaves_the_row() {
        let linked = |risk_ref: &str| IncidentEvent::RiskLinked {
            risk_ref: risk_ref.into(),
            rationale: "why".into(),
            linked_by: "x".into(),
        };
        let rows = project(&[
            incident(1, 1, vec![opened()]),
            incident(2, 2, vec![linked("R-1")]),
            incident(3, 3, vec![linked("R-2"), linked("R-3")]),
            incident(
                4,
                4,
                vec![IncidentEvent::RiskUnlinked {
                    risk_ref: "R-2".into(),
                    reason: "wrong".into(),
                    unlinked_by: "x".into(),
                }],
            ),
        ]);
        let row = &rows.incidents[&Uuid::from_u128(1)];
        let got: Vec<&str> = row.risks.iter().map(|r| r.risk_ref.as_str()).collect();
        assert_eq!(got, ["R-1", "R-3"]);
        assert_eq!(row.risks[0].linked_at, t(2) - Duration::seconds(30));
        // A row written without the list (an older version, after the column was added).
        let mut json = serde_json::to_value(row).unwrap();
        json["risks"] = serde_json::Value::Null;
        let read: IncidentRow = serde_json::from_value(json).unwrap();
        assert!(read.risks.is_empty());
        json = serde_json::to_value(row).unwrap();
        json.as_object_mut().unwrap().remove("risks");
        let read: IncidentRow = serde_json::from_value(json).unwrap();
        assert!(read.risks.is_empty());
    }

    #[test]
    fn a_stood_down_crisis_returns_the_incident_row_to_tactical() {
        let rows = project(&[
            incident(1, 1, vec![opened()]),
            incident(
                2,
                2,
                vec![IncidentEvent::IncidentCommandTransferred {
                    handover_id: Uuid::from_u128(5),
                    crisis_id: Uuid::from_u128(6),
                    from_level: Level::Tactical,
                    to_level: Level::Strategic,
                    effective_at: t(2),
                }],
            ),
            incident(
                3,
                3,
                vec![IncidentEvent::IncidentCommandReturned {
                    crisis_id: Uuid::from_u128(6),
                    decision_id: Uuid::from_u128(8),
                    handed_to: "tactical commander".into(),
                    from_level: Level::Strategic,
                    to_level: Level::Tactical,
                }],
            ),
        ]);
        let row = &rows.incidents[&Uuid::from_u128(1)];
        assert_eq!((row.level.as_str(), row.version), ("TACTICAL", 3));
    }

    #[test]
    fn an_event_for_a_row_the_model_lacks_is_an_error_not_a_silent_skip() {
        let mut rows = Rows::default();
        let err = apply(
            &mut rows,
            &incident(
                7,
                2,
                vec![IncidentEvent::IncidentAcknowledged {
                    acknowledged_by: "x".into(),
                }],
            ),
        )
        .unwrap_err();
        assert_eq!(err.position, 7);
    }

    #[test]
    fn touched_lists_rows_to_load_once_and_not_those_the_batch_creates() {
        let commits = [
            incident(1, 1, vec![opened()]),
            incident(
                2,
                2,
                vec![IncidentEvent::IncidentAcknowledged {
                    acknowledged_by: "x".into(),
                }],
            ),
            alert(
                3,
                2,
                vec![AlertEvent::AlertDismissed {
                    rationale: "r".into(),
                    dismissed_by: "x".into(),
                }],
            ),
            alert(
                4,
                3,
                vec![AlertEvent::AlertPromoted {
                    incident_id: Uuid::from_u128(1),
                }],
            ),
        ];
        assert_eq!(touched(&commits), (vec![], vec![Uuid::from_u128(2)]));
        assert_eq!(
            touched(&commits[1..]),
            (vec![Uuid::from_u128(1)], vec![Uuid::from_u128(2)])
        );
    }
}
