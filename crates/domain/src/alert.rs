//! The Alert aggregate: received → (repeated…) → triaged: dismissed, promoted to an incident
//! (it opened the incident, or was one of the alerts it was opened from), or merged into an
//! incident that already exists (an analyst finds it is part of it).
//!
//! Beside triage, an alert follows what its source says of it: firing, acknowledged at the
//! source, resolved at the source (a monitoring tool's "resolved", a PagerDuty resolve). The
//! source's view never changes triage: an alert that cleared by itself may still need an
//! analyst's look. A report after a resolve is a repeat and makes it firing again.
//!
//! The aggregate id is derived from the dedup key (source, source_ref) by the application
//! layer, so a repeat of a known alert lands on the same aggregate and becomes
//! `AlertRepeated`, never a second alert. The dedup key holds for the alert's whole life: a
//! repeat after dismissal is recorded (nothing a tool reports is dropped) but does not reopen
//! triage.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, Context, DomainError, DomainEvent, Limits, Observable, Severity, Text};

/// An alert as a SOC tool reports it, parsed and within limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReport {
    /// The emitting tool.
    pub source: String,
    /// The tool's own id of the alert.
    pub source_ref: String,
    /// Short summary.
    pub title: String,
    /// Longer text.
    pub description: String,
    /// Impact as the tool grades it.
    pub severity: Severity,
    /// When the tool saw it.
    #[serde(serialize_with = "crate::time::serialize_utc")]
    pub occurred_at: DateTime<Utc>,
    /// Observables (IPs, hashes, users…).
    pub observables: Vec<Observable>,
    /// Free labels.
    pub labels: BTreeMap<String, String>,
    /// The original payload, kept verbatim as JSON.
    pub raw: serde_json::Value,
}

impl AlertReport {
    /// Checks every limit of a report built from raw input; field names are prefixed with
    /// `prefix` (e.g. `alert.`).
    pub fn validate(mut self, prefix: &str) -> Result<Self, DomainError> {
        // Field names are made only for the error: this runs for every alert ingested.
        let f = |name: &str| format!("{prefix}{name}");
        // The report's own strings are checked in place: copied only when trimmed.
        let take = std::mem::take;
        self.source = Text::required_owned(|| f("source"), take(&mut self.source), Limits::SOURCE)?;
        self.source_ref = Text::required_owned(
            || f("source_ref"),
            take(&mut self.source_ref),
            Limits::SOURCE_REF,
        )?;
        check_dedup_key(&self.source, &self.source_ref, prefix)?;
        self.title = Text::required_owned(|| f("title"), take(&mut self.title), Limits::TITLE)?;
        self.description = Text::optional_owned(
            || f("description"),
            take(&mut self.description),
            Limits::DESCRIPTION,
        )?;
        if self.observables.len() > Limits::OBSERVABLES {
            return Err(DomainError::invalid(
                f("observables"),
                format!(
                    "has {} entries, at most {} are allowed",
                    self.observables.len(),
                    Limits::OBSERVABLES
                ),
            ));
        }
        for (i, o) in self.observables.iter_mut().enumerate() {
            o.kind = Text::required_owned(
                || f(&format!("observables[{i}].type")),
                take(&mut o.kind),
                Limits::OBSERVABLE_TYPE,
            )?;
            o.value = Text::required_owned(
                || f(&format!("observables[{i}].value")),
                take(&mut o.value),
                Limits::OBSERVABLE_VALUE,
            )?;
        }
        if self.labels.len() > Limits::LABELS {
            return Err(DomainError::invalid(
                f("labels"),
                format!(
                    "has {} entries, at most {} are allowed",
                    self.labels.len(),
                    Limits::LABELS
                ),
            ));
        }
        for (k, v) in &self.labels {
            Text::checked(|| f("labels.key"), k, Limits::LABEL_KEY, true)?;
            Text::checked(|| f(&format!("labels[{k}]")), v, Limits::LABEL_VALUE, false)?;
        }
        check_raw(&self.raw, || f("raw"))?;
        Ok(self)
    }
}

/// Checks a dedup key (source, source_ref) from raw input and returns it trimmed; field
/// names are prefixed with `prefix`.
pub fn dedup_key(
    source: &str,
    source_ref: &str,
    prefix: &str,
) -> Result<(String, String), DomainError> {
    let f = |name: &str| format!("{prefix}{name}");
    let source = Text::required_as(|| f("source"), source, Limits::SOURCE)?;
    let source_ref = Text::required_as(|| f("source_ref"), source_ref, Limits::SOURCE_REF)?;
    check_dedup_key(&source, &source_ref, prefix)?;
    Ok((source, source_ref))
}

/// The dedup key is hashed into the alert id: no line breaks or other control characters in
/// it, so two different keys can never name the same alert.
fn check_dedup_key(source: &str, source_ref: &str, prefix: &str) -> Result<(), DomainError> {
    for (name, value) in [("source", source), ("source_ref", source_ref)] {
        // ASCII text (most keys) is checked byte by byte, without decoding characters.
        let control = if value.is_ascii() {
            value.bytes().any(|b| b.is_ascii_control())
        } else {
            value.chars().any(char::is_control)
        };
        if control {
            return Err(DomainError::invalid(
                format!("{prefix}{name}"),
                "contains control characters",
            ));
        }
    }
    Ok(())
}

/// A tool's original payload within [`Limits::RAW_BYTES`], with no NUL character (U+0000)
/// in any string or key: the PostgreSQL read model cannot hold one in JSON.
fn check_raw(raw: &serde_json::Value, field: impl FnOnce() -> String) -> Result<(), DomainError> {
    /// Counts the bytes of the JSON text without keeping them.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let raw_len = match serde_json::to_writer(&mut count, raw) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    };
    if raw_len > Limits::RAW_BYTES {
        return Err(DomainError::invalid(
            field(),
            format!(
                "is {raw_len} bytes of JSON, at most {} are allowed",
                Limits::RAW_BYTES
            ),
        ));
    }
    let depth = depth_of(raw);
    if depth > Limits::RAW_DEPTH {
        return Err(DomainError::invalid(
            field(),
            format!(
                "nests arrays and objects {depth} levels deep, at most {} are allowed",
                Limits::RAW_DEPTH
            ),
        ));
    }
    if contains_nul(raw) {
        return Err(DomainError::invalid(
            field(),
            "contains a NUL character (U+0000) in a string or key",
        ));
    }
    Ok(())
}

/// Levels of arrays and objects in `value` (0 for a scalar), walked without recursion.
pub fn depth_of(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        return 0;
    }
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((v, level)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(level);
                stack.extend(items.iter().map(|i| (i, level + 1)));
            }
            Value::Object(fields) => {
                deepest = deepest.max(level);
                stack.extend(fields.values().map(|i| (i, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Whether any string or object key of `value` holds U+0000 (walked without recursion, so
/// deep nesting cannot exhaust the stack).
pub fn contains_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => return s.contains('\0'),
        Value::Array(_) | Value::Object(_) => {}
        _ => return false,
    }
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => {
                for (key, item) in fields {
                    if key.contains('\0') {
                        return true;
                    }
                    stack.push(item);
                }
            }
            _ => {}
        }
    }
    false
}

/// Replaces U+0000 with U+FFFD in every string and object key of `value` (without
/// recursion). A key that would then collide with another gets more U+FFFD until it does
/// not, so no field is lost.
pub fn replace_nul(value: &mut serde_json::Value) {
    use serde_json::{Map, Value};
    let fix = |s: &str| s.replace('\0', "\u{fffd}");
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => *s = fix(s),
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(fields) => {
                if fields.keys().any(|k| k.contains('\0')) {
                    let old = std::mem::take(fields);
                    let (renamed, kept): (Vec<_>, Vec<_>) =
                        old.into_iter().partition(|(k, _)| k.contains('\0'));
                    let mut new: Map<String, Value> = kept.into_iter().collect();
                    for (key, item) in renamed {
                        let mut key = fix(&key);
                        while new.contains_key(&key) {
                            key.push('\u{fffd}');
                        }
                        new.insert(key, item);
                    }
                    *fields = new;
                }
                stack.extend(fields.values_mut());
            }
            _ => {}
        }
    }
}

/// Where an alert stands in triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertStatus {
    /// Received, not yet triaged.
    Received,
    /// Dismissed with a rationale.
    Dismissed,
    /// Promoted into an incident (opened it, or joined it when it was opened).
    Promoted(Uuid),
    /// Merged into an incident that already existed.
    Merged(Uuid),
}

/// What the emitting tool says of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SourceState {
    /// Reported and not cleared.
    #[default]
    Firing,
    /// Someone acknowledged it in the source tool.
    Acknowledged,
    /// The source reports the condition cleared.
    Resolved,
}

/// A command on an alert.
#[derive(Debug, Clone)]
pub enum AlertCommand {
    /// A SOC tool reports an alert (new or repeated). When its severity reaches
    /// `incident_threshold` and it is untriaged, it is promoted to `new_incident_id`.
    Ingest {
        /// The report, shared with the event that records it: an alert's first report
        /// becomes its `AlertReceived` event without being copied.
        report: Arc<AlertReport>,
        /// Severity at or above which an alert opens an incident.
        incident_threshold: Severity,
        /// The incident to open if this report promotes the alert.
        new_incident_id: Uuid,
    },
    /// An analyst dismisses an untriaged alert.
    Dismiss {
        /// Why it needs no incident.
        rationale: String,
    },
    /// The alert is one of those an incident is opened from.
    Promote {
        /// The incident.
        incident_id: Uuid,
    },
    /// An analyst merges an untriaged alert into an incident that already exists (the
    /// application checks that it does, and is not closed).
    Merge {
        /// The incident.
        incident_id: Uuid,
        /// Why the alert belongs to it.
        reason: String,
    },
    /// The source tool reports the alert acknowledged there (once; again is a no-op).
    AcknowledgeAtSource {
        /// The tool's message, verbatim.
        raw: serde_json::Value,
    },
    /// The source tool reports the condition cleared (once; again is a no-op).
    ResolveAtSource {
        /// The tool's message, verbatim.
        raw: serde_json::Value,
    },
}

/// What happened to an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum AlertEvent {
    /// First report of a dedup key.
    AlertReceived(Arc<AlertReport>),
    /// A further report of the same dedup key.
    AlertRepeated {
        /// Severity of this report.
        severity: Severity,
        /// When the tool saw it this time.
        occurred_at: DateTime<Utc>,
        /// Reports so far, the first included.
        count: u64,
        /// The original payload of this report.
        raw: serde_json::Value,
    },
    /// Dismissed: needs no incident.
    AlertDismissed {
        /// Why.
        rationale: String,
        /// Who dismissed it.
        dismissed_by: String,
    },
    /// Promoted into an incident.
    AlertPromoted {
        /// The incident.
        incident_id: Uuid,
    },
    /// Merged into an incident that already existed.
    AlertMerged {
        /// The incident.
        incident_id: Uuid,
        /// Why the alert belongs to it.
        reason: String,
        /// Who merged it.
        merged_by: String,
    },
    /// The source tool reports it acknowledged there (the envelope's `occurred_at` says when).
    AlertAcknowledgedAtSource {
        /// The tool's message.
        raw: serde_json::Value,
    },
    /// The source tool reports the condition cleared (the envelope's `occurred_at` says when).
    AlertResolvedAtSource {
        /// The tool's message.
        raw: serde_json::Value,
    },
}

impl DomainEvent for AlertEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::AlertReceived(_) => "AlertReceived",
            Self::AlertRepeated { .. } => "AlertRepeated",
            Self::AlertDismissed { .. } => "AlertDismissed",
            Self::AlertPromoted { .. } => "AlertPromoted",
            Self::AlertMerged { .. } => "AlertMerged",
            Self::AlertAcknowledgedAtSource { .. } => "AlertAcknowledgedAtSource",
            Self::AlertResolvedAtSource { .. } => "AlertResolvedAtSource",
        }
    }
}

/// The alert aggregate's state.
#[derive(Debug, Clone, Default)]
pub struct Alert {
    state: Option<AlertState>,
}

/// What the rules need to know about an existing alert.
#[derive(Debug, Clone)]
pub struct AlertState {
    /// Severity of the first report. (The reports themselves stay in the log: the state
    /// keeps only what the rules need, so cached alerts stay small.)
    pub severity: Severity,
    /// Triage status.
    pub status: AlertStatus,
    /// Reports so far.
    pub count: u64,
    /// What the source says of it.
    pub source_state: SourceState,
}

impl Alert {
    /// The state, when the alert exists.
    pub fn state(&self) -> Option<&AlertState> {
        self.state.as_ref()
    }

    /// The incident the alert belongs to, if any.
    pub fn incident_id(&self) -> Option<Uuid> {
        match self.state.as_ref()?.status {
            AlertStatus::Promoted(id) | AlertStatus::Merged(id) => Some(id),
            AlertStatus::Received | AlertStatus::Dismissed => None,
        }
    }
}

impl Aggregate for Alert {
    const TYPE: &'static str = "alert";
    type Command = AlertCommand;
    type Event = AlertEvent;

    fn decide(
        &self,
        command: &AlertCommand,
        ctx: &Context,
    ) -> Result<Vec<AlertEvent>, DomainError> {
        match (command, &self.state) {
            (
                AlertCommand::Ingest {
                    report,
                    incident_threshold,
                    new_incident_id,
                },
                state,
            ) => {
                let mut events = Vec::with_capacity(2);
                let untriaged = match state {
                    None => {
                        events.push(AlertEvent::AlertReceived(Arc::clone(report)));
                        true
                    }
                    Some(s) => {
                        events.push(AlertEvent::AlertRepeated {
                            severity: report.severity,
                            occurred_at: report.occurred_at,
                            count: s.count + 1,
                            raw: report.raw.clone(),
                        });
                        s.status == AlertStatus::Received
                    }
                };
                if untriaged && report.severity >= *incident_threshold {
                    // The service names the incident only on this same condition.
                    debug_assert!(!new_incident_id.is_nil(), "promoted without an incident id");
                    events.push(AlertEvent::AlertPromoted {
                        incident_id: *new_incident_id,
                    });
                }
                Ok(events)
            }
            (_, None) => Err(DomainError::NotFound("alert".into())),
            (AlertCommand::Dismiss { rationale }, Some(s)) => {
                require_untriaged(s)?;
                let rationale = Text::required("rationale", rationale, Limits::RATIONALE)?;
                Ok(vec![AlertEvent::AlertDismissed {
                    rationale,
                    dismissed_by: ctx.actor.clone(),
                }])
            }
            (AlertCommand::Promote { incident_id }, Some(s)) => {
                require_untriaged(s)?;
                Ok(vec![AlertEvent::AlertPromoted {
                    incident_id: *incident_id,
                }])
            }
            (
                AlertCommand::Merge {
                    incident_id,
                    reason,
                },
                Some(s),
            ) => {
                let reason = Text::required("reason", reason, Limits::RATIONALE)?;
                require_untriaged(s)?;
                Ok(vec![AlertEvent::AlertMerged {
                    incident_id: *incident_id,
                    reason,
                    merged_by: ctx.actor.clone(),
                }])
            }
            // Sources repeat themselves (Alertmanager re-sends resolved notifications): only
            // a change of the source's view is recorded.
            (AlertCommand::AcknowledgeAtSource { raw }, Some(s)) => {
                check_raw(raw, || "raw".to_owned())?;
                Ok(if s.source_state == SourceState::Firing {
                    vec![AlertEvent::AlertAcknowledgedAtSource { raw: raw.clone() }]
                } else {
                    vec![]
                })
            }
            (AlertCommand::ResolveAtSource { raw }, Some(s)) => {
                check_raw(raw, || "raw".to_owned())?;
                Ok(if s.source_state == SourceState::Resolved {
                    vec![]
                } else {
                    vec![AlertEvent::AlertResolvedAtSource { raw: raw.clone() }]
                })
            }
        }
    }

    fn evolve(&mut self, event: &AlertEvent) {
        match event {
            AlertEvent::AlertReceived(report) => {
                self.state = Some(AlertState {
                    severity: report.severity,
                    status: AlertStatus::Received,
                    count: 1,
                    source_state: SourceState::Firing,
                });
            }
            AlertEvent::AlertRepeated { count, .. } => {
                if let Some(s) = &mut self.state {
                    s.count = *count;
                    s.source_state = SourceState::Firing;
                }
            }
            AlertEvent::AlertAcknowledgedAtSource { .. } => {
                if let Some(s) = &mut self.state {
                    s.source_state = SourceState::Acknowledged;
                }
            }
            AlertEvent::AlertResolvedAtSource { .. } => {
                if let Some(s) = &mut self.state {
                    s.source_state = SourceState::Resolved;
                }
            }
            AlertEvent::AlertDismissed { .. } => {
                if let Some(s) = &mut self.state {
                    s.status = AlertStatus::Dismissed;
                }
            }
            AlertEvent::AlertPromoted { incident_id } => {
                if let Some(s) = &mut self.state {
                    s.status = AlertStatus::Promoted(*incident_id);
                }
            }
            AlertEvent::AlertMerged { incident_id, .. } => {
                if let Some(s) = &mut self.state {
                    s.status = AlertStatus::Merged(*incident_id);
                }
            }
        }
    }

    fn exists(&self) -> bool {
        self.state.is_some()
    }
}

fn require_untriaged(s: &AlertState) -> Result<(), DomainError> {
    match s.status {
        AlertStatus::Received => Ok(()),
        AlertStatus::Dismissed => Err(DomainError::precondition("alert is already dismissed")),
        AlertStatus::Promoted(id) | AlertStatus::Merged(id) => Err(DomainError::precondition(
            format!("alert already belongs to incident {id}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    fn ctx() -> Context {
        Context::now("soc-analyst", now())
    }

    fn report(severity: Severity) -> AlertReport {
        AlertReport {
            source: "suricata".into(),
            source_ref: "sid-2024-1".into(),
            title: "ET EXPLOIT possible Log4j".into(),
            description: String::new(),
            severity,
            occurred_at: now(),
            observables: vec![Observable {
                kind: "ip".into(),
                value: "203.0.113.7".into(),
            }],
            labels: BTreeMap::new(),
            raw: serde_json::json!({"alert": {"signature_id": 2024}}),
        }
    }

    fn incident() -> Uuid {
        Uuid::from_u128(7)
    }

    fn ingest(severity: Severity) -> AlertCommand {
        AlertCommand::Ingest {
            report: Arc::new(report(severity)),
            incident_threshold: Severity::High,
            new_incident_id: incident(),
        }
    }

    fn given(events: &[AlertEvent]) -> Alert {
        let mut a = Alert::default();
        for e in events {
            a.evolve(e);
        }
        a
    }

    fn received(severity: Severity) -> AlertEvent {
        AlertEvent::AlertReceived(Arc::new(report(severity)))
    }

    /// The payload written on its own is byte for byte the `payload` field of the event's
    /// tagged serialization (what the log has always stored).
    #[test]
    fn payloads_are_the_tagged_serializations_payload_field() {
        let mut with_raw = report(Severity::High);
        with_raw.raw = serde_json::json!({"a": [1, "x\"y"], "b": null});
        let events = [
            received(Severity::Low),
            AlertEvent::AlertReceived(Arc::new(with_raw)),
            AlertEvent::AlertPromoted {
                incident_id: incident(),
            },
            AlertEvent::AlertRepeated {
                severity: Severity::Critical,
                occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 5_000).unwrap(),
                count: 3,
                raw: serde_json::json!({"k": "v"}),
            },
            AlertEvent::AlertDismissed {
                rationale: "false positive: scanner".into(),
                dismissed_by: "ana".into(),
            },
        ];
        for e in &events {
            crate::assert_payload_is_the_tagged_field(e);
        }
    }

    #[test]
    fn validation_trims_text_and_keeps_what_needs_no_trimming() {
        let mut r = report(Severity::Low);
        r.title = "  ET EXPLOIT possible Log4j \n".into();
        r.description = "\tseen on the edge\t".into();
        r.observables[0].value = " 203.0.113.7".into();
        r.labels.insert("site".into(), "  ams ".into());
        let v = r.validate("alert.").unwrap();
        assert_eq!(v.title, "ET EXPLOIT possible Log4j");
        assert_eq!(v.description, "seen on the edge");
        assert_eq!(v.observables[0].kind, "ip");
        assert_eq!(v.observables[0].value, "203.0.113.7");
        // Labels are the tool's own key/value pairs: checked, kept as sent (a tool may tell
        // " site" from "site", and an Alertmanager group must not fail on it).
        assert_eq!(v.labels["site"], "  ams ");

        let mut blank = report(Severity::Low);
        blank.observables[0].kind = " \t ".into();
        let r = blank.validate("alert.");
        assert!(
            matches!(&r, Err(DomainError::Invalid { field, .. }) if field == "alert.observables[0].type"),
            "{r:?}"
        );
    }

    #[test]
    fn a_new_low_alert_is_received_and_not_promoted() {
        let events = given(&[]).decide(&ingest(Severity::Low), &ctx()).unwrap();
        assert_eq!(events, vec![received(Severity::Low)]);
    }

    #[test]
    fn a_new_alert_at_the_threshold_is_promoted_to_a_new_incident() {
        let events = given(&[]).decide(&ingest(Severity::High), &ctx()).unwrap();
        assert_eq!(
            events,
            vec![
                received(Severity::High),
                AlertEvent::AlertPromoted {
                    incident_id: incident()
                }
            ]
        );
    }

    #[test]
    fn a_repeat_is_recorded_on_the_same_alert_with_its_count() {
        let alert = given(&[received(Severity::Low)]);
        let events = alert.decide(&ingest(Severity::Low), &ctx()).unwrap();
        assert!(matches!(
            events.as_slice(),
            [AlertEvent::AlertRepeated { count: 2, .. }]
        ));
    }

    #[test]
    fn a_repeat_at_higher_severity_promotes_an_untriaged_alert() {
        let alert = given(&[received(Severity::Low)]);
        let events = alert.decide(&ingest(Severity::Critical), &ctx()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            AlertEvent::AlertPromoted {
                incident_id: incident()
            }
        );
    }

    #[test]
    fn a_repeat_of_a_promoted_alert_stays_with_its_incident() {
        let other = Uuid::from_u128(99);
        let alert = given(&[
            received(Severity::High),
            AlertEvent::AlertPromoted { incident_id: other },
        ]);
        let events = alert.decide(&ingest(Severity::Critical), &ctx()).unwrap();
        assert!(matches!(
            events.as_slice(),
            [AlertEvent::AlertRepeated { .. }]
        ));
        assert_eq!(alert.incident_id(), Some(other));
    }

    fn resolved() -> AlertEvent {
        AlertEvent::AlertResolvedAtSource {
            raw: serde_json::json!({"status": "resolved"}),
        }
    }

    fn resolve() -> AlertCommand {
        AlertCommand::ResolveAtSource {
            raw: serde_json::json!({"status": "resolved"}),
        }
    }

    fn acknowledge() -> AlertCommand {
        AlertCommand::AcknowledgeAtSource {
            raw: serde_json::json!({"event_action": "acknowledge"}),
        }
    }

    #[test]
    fn the_source_resolving_a_firing_alert_is_recorded_and_leaves_triage_alone() {
        let alert = given(&[received(Severity::Low)]);
        let events = alert.decide(&resolve(), &ctx()).unwrap();
        assert_eq!(events, vec![resolved()]);
        let after = given(&[received(Severity::Low), resolved()]);
        let s = after.state().unwrap();
        assert_eq!(s.source_state, SourceState::Resolved);
        assert_eq!(s.status, AlertStatus::Received, "still waiting for triage");
    }

    #[test]
    fn a_repeated_resolve_or_acknowledge_records_nothing() {
        let alert = given(&[received(Severity::Low), resolved()]);
        assert!(alert.decide(&resolve(), &ctx()).unwrap().is_empty());
        assert!(alert.decide(&acknowledge(), &ctx()).unwrap().is_empty());
        let acked = given(&[
            received(Severity::Low),
            AlertEvent::AlertAcknowledgedAtSource {
                raw: serde_json::Value::Null,
            },
        ]);
        assert!(acked.decide(&acknowledge(), &ctx()).unwrap().is_empty());
        assert_eq!(acked.decide(&resolve(), &ctx()).unwrap(), vec![resolved()]);
    }

    #[test]
    fn the_source_acknowledging_a_firing_alert_is_recorded() {
        let alert = given(&[received(Severity::Low)]);
        let events = alert.decide(&acknowledge(), &ctx()).unwrap();
        assert!(matches!(
            events.as_slice(),
            [AlertEvent::AlertAcknowledgedAtSource { .. }]
        ));
    }

    #[test]
    fn a_report_after_a_resolve_is_a_repeat_that_fires_again() {
        let alert = given(&[received(Severity::Low), resolved()]);
        let events = alert.decide(&ingest(Severity::Low), &ctx()).unwrap();
        assert!(matches!(
            events.as_slice(),
            [AlertEvent::AlertRepeated { count: 2, .. }]
        ));
        let mut again = alert.clone();
        again.evolve(&events[0]);
        assert_eq!(again.state().unwrap().source_state, SourceState::Firing);
    }

    #[test]
    fn a_source_message_over_the_raw_limit_is_refused() {
        let alert = given(&[received(Severity::Low)]);
        let big = serde_json::json!({"x": "y".repeat(Limits::RAW_BYTES)});
        let r = alert.decide(&AlertCommand::ResolveAtSource { raw: big }, &ctx());
        assert!(matches!(r, Err(DomainError::Invalid { field, .. }) if field == "raw"));
    }

    /// `levels` arrays and objects, one inside the other.
    fn nested(levels: usize) -> serde_json::Value {
        (1..levels).fold(serde_json::json!({"leaf": 1}), |inner, level| {
            if level % 2 == 0 {
                serde_json::json!({ "level": inner })
            } else {
                serde_json::json!([inner])
            }
        })
    }

    #[test]
    fn a_raw_payload_nested_past_the_limit_is_refused_and_one_at_it_decodes_again() {
        let alert = given(&[received(Severity::Low)]);
        let deep = nested(Limits::RAW_DEPTH + 1);
        let r = alert.decide(&AlertCommand::ResolveAtSource { raw: deep }, &ctx());
        assert!(
            matches!(&r, Err(DomainError::Invalid { field, message }) if field == "raw" && message.contains("65 levels")),
            "{r:?}"
        );
        let events = alert
            .decide(
                &AlertCommand::ResolveAtSource {
                    raw: nested(Limits::RAW_DEPTH),
                },
                &ctx(),
            )
            .unwrap();
        let stored = events[0].payload_json().unwrap();
        let raw_value = serde_json::value::RawValue::from_string(stored).unwrap();
        let decoded = AlertEvent::from_payload(events[0].event_type(), 1, &raw_value).unwrap();
        assert_eq!(decoded, events[0]);
    }

    /// What the log stores reads back as the same values, floats included: the projector
    /// in `semsd`'s role `all` uses the values it encoded where a rebuild decodes them, so
    /// the two must agree (serde_json's `float_roundtrip`; without it about a third of
    /// these floats read back one unit off).
    #[test]
    fn raw_numbers_read_back_exactly_as_written() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let floats: Vec<f64> = std::iter::from_fn(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(f64::from_bits(x))
        })
        .filter(|f| f.is_finite())
        .take(2_000)
        .collect();
        let event = AlertEvent::AlertResolvedAtSource {
            raw: serde_json::json!({ "floats": floats, "big": u64::MAX, "small": i64::MIN }),
        };
        let stored =
            serde_json::value::RawValue::from_string(event.payload_json().unwrap()).unwrap();
        let decoded = AlertEvent::from_payload(event.event_type(), 1, &stored).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn a_raw_payload_holding_a_nul_character_is_refused() {
        let alert = given(&[received(Severity::Low)]);
        for raw in [
            serde_json::json!({"cmd": "a\u{0}b"}),
            serde_json::json!({"nested": [1, {"k\u{0}ey": "v"}]}),
        ] {
            let r = alert.decide(&AlertCommand::ResolveAtSource { raw }, &ctx());
            assert!(
                matches!(&r, Err(DomainError::Invalid { field, message }) if field == "raw" && message.contains("U+0000")),
                "{r:?}"
            );
        }
        // A report is checked where it enters (gRPC, webhooks), with the field's full name.
        let mut with_nul = report(Severity::High);
        with_nul.raw = serde_json::json!(["\u{0}"]);
        let r = with_nul.validate("alert.");
        assert!(
            matches!(&r, Err(DomainError::Invalid { field, .. }) if field == "alert.raw"),
            "{r:?}"
        );
        // A backslash followed by "u0000" is ordinary text.
        let r = alert.decide(
            &AlertCommand::ResolveAtSource {
                raw: serde_json::json!({"cmd": "\\u0000"}),
            },
            &ctx(),
        );
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn nul_characters_are_replaced_without_losing_a_field() {
        let mut raw = serde_json::json!({
            "k\u{0}": 1, "k\u{fffd}": 2, "deep": [{"a": "x\u{0}y"}], "n": null
        });
        replace_nul(&mut raw);
        assert!(!contains_nul(&raw));
        assert_eq!(
            raw,
            serde_json::json!({
                "k\u{fffd}\u{fffd}": 1, "k\u{fffd}": 2, "deep": [{"a": "x\u{fffd}y"}], "n": null
            })
        );
    }

    #[test]
    fn the_source_cannot_resolve_or_acknowledge_an_alert_never_reported() {
        for command in [resolve(), acknowledge()] {
            assert!(matches!(
                given(&[]).decide(&command, &ctx()),
                Err(DomainError::NotFound(_))
            ));
        }
    }

    #[test]
    fn a_repeat_of_a_dismissed_alert_is_recorded_but_not_promoted() {
        let alert = given(&[
            received(Severity::Low),
            AlertEvent::AlertDismissed {
                rationale: "scanner".into(),
                dismissed_by: "x".into(),
            },
        ]);
        let events = alert.decide(&ingest(Severity::Critical), &ctx()).unwrap();
        assert!(matches!(
            events.as_slice(),
            [AlertEvent::AlertRepeated { .. }]
        ));
    }

    #[test]
    fn dismissal_needs_a_rationale() {
        let alert = given(&[received(Severity::Low)]);
        let err = alert
            .decide(
                &AlertCommand::Dismiss {
                    rationale: " ".into(),
                },
                &ctx(),
            )
            .unwrap_err();
        assert_eq!(err, DomainError::invalid("rationale", "is required"));
        let ok = alert
            .decide(
                &AlertCommand::Dismiss {
                    rationale: "internal vulnerability scanner".into(),
                },
                &ctx(),
            )
            .unwrap();
        assert_eq!(
            ok,
            vec![AlertEvent::AlertDismissed {
                rationale: "internal vulnerability scanner".into(),
                dismissed_by: "soc-analyst".into()
            }]
        );
    }

    #[test]
    fn a_triaged_alert_cannot_be_dismissed_or_promoted_again() {
        let promoted = given(&[
            received(Severity::High),
            AlertEvent::AlertPromoted {
                incident_id: incident(),
            },
        ]);
        let dismiss = AlertCommand::Dismiss {
            rationale: "r".into(),
        };
        assert!(matches!(
            promoted.decide(&dismiss, &ctx()),
            Err(DomainError::Precondition(_))
        ));
        let promote = AlertCommand::Promote {
            incident_id: Uuid::from_u128(8),
        };
        assert!(matches!(
            promoted.decide(&promote, &ctx()),
            Err(DomainError::Precondition(_))
        ));
        let dismissed = given(&[
            received(Severity::Low),
            AlertEvent::AlertDismissed {
                rationale: "r".into(),
                dismissed_by: "x".into(),
            },
        ]);
        assert!(matches!(
            dismissed.decide(&promote, &ctx()),
            Err(DomainError::Precondition(_))
        ));
    }

    #[test]
    fn commands_on_an_unknown_alert_are_not_found() {
        for command in [
            AlertCommand::Dismiss {
                rationale: "r".into(),
            },
            AlertCommand::Promote {
                incident_id: incident(),
            },
        ] {
            let err = given(&[]).decide(&command, &ctx()).unwrap_err();
            assert!(matches!(err, DomainError::NotFound(_)), "{command:?}");
        }
    }

    #[test]
    fn an_untriaged_alert_is_promoted_into_the_incident_opened_from_it() {
        let untriaged = given(&[received(Severity::Low)]);
        let events = untriaged
            .decide(
                &AlertCommand::Promote {
                    incident_id: incident(),
                },
                &ctx(),
            )
            .unwrap();
        assert_eq!(
            events,
            vec![AlertEvent::AlertPromoted {
                incident_id: incident()
            }]
        );
        let promoted = given(&[received(Severity::Low), events[0].clone()]);
        assert_eq!(promoted.incident_id(), Some(incident()));
        // Promoted once: the same incident again is refused like any other.
        assert!(matches!(
            promoted.decide(
                &AlertCommand::Promote {
                    incident_id: incident()
                },
                &ctx()
            ),
            Err(DomainError::Precondition(_))
        ));
    }

    #[test]
    fn an_untriaged_alert_is_merged_into_an_incident_with_a_reason_once() {
        let merge = |reason: &str| AlertCommand::Merge {
            incident_id: incident(),
            reason: reason.into(),
        };
        let untriaged = given(&[received(Severity::Low)]);
        let r = untriaged.decide(&merge(" "), &ctx());
        assert!(
            matches!(&r, Err(DomainError::Invalid { field, .. }) if field == "reason"),
            "{r:?}"
        );
        let events = untriaged
            .decide(&merge("same C2 host as the incident"), &ctx())
            .unwrap();
        assert_eq!(
            events,
            vec![AlertEvent::AlertMerged {
                incident_id: incident(),
                reason: "same C2 host as the incident".into(),
                merged_by: "soc-analyst".into(),
            }]
        );
        let merged = given(&[received(Severity::Low), events[0].clone()]);
        assert_eq!(merged.incident_id(), Some(incident()));
        // Triaged now: not merged, promoted or dismissed again.
        for command in [
            merge("again"),
            AlertCommand::Promote {
                incident_id: Uuid::from_u128(8),
            },
            AlertCommand::Dismiss {
                rationale: "noise".into(),
            },
        ] {
            assert!(
                matches!(
                    merged.decide(&command, &ctx()),
                    Err(DomainError::Precondition(_))
                ),
                "{command:?}"
            );
        }
        // A promoted or dismissed alert is not merged; an unknown one is not found.
        let promoted = given(&[
            received(Severity::High),
            AlertEvent::AlertPromoted {
                incident_id: Uuid::from_u128(8),
            },
        ]);
        assert!(matches!(
            promoted.decide(&merge("x"), &ctx()),
            Err(DomainError::Precondition(_))
        ));
        assert!(matches!(
            given(&[]).decide(&merge("x"), &ctx()),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn a_repeat_of_a_merged_alert_stays_with_its_incident() {
        let merged = given(&[
            received(Severity::Low),
            AlertEvent::AlertMerged {
                incident_id: incident(),
                reason: "same host".into(),
                merged_by: "x".into(),
            },
        ]);
        let events = merged.decide(&ingest(Severity::Critical), &ctx()).unwrap();
        assert!(matches!(&events[..], [AlertEvent::AlertRepeated { .. }]));
    }

    #[test]
    fn a_dismissed_alert_is_not_dismissed_again() {
        let dismissed = given(&[
            received(Severity::Low),
            AlertEvent::AlertDismissed {
                rationale: "scanner noise".into(),
                dismissed_by: "x".into(),
            },
        ]);
        assert!(matches!(
            dismissed.decide(
                &AlertCommand::Dismiss {
                    rationale: "still noise".into()
                },
                &ctx()
            ),
            Err(DomainError::Precondition(_))
        ));
    }

    #[test]
    fn every_limit_of_a_report_names_its_field() {
        let refused = |change: &dyn Fn(&mut AlertReport), name: &str| {
            let mut r = report(Severity::Low);
            change(&mut r);
            let err = r.validate("alert.").unwrap_err();
            assert!(
                matches!(&err, DomainError::Invalid { field, .. } if field == name),
                "{name}: {err:?}"
            );
        };
        refused(
            &|r| r.source = "s".repeat(Limits::SOURCE + 1),
            "alert.source",
        );
        refused(&|r| r.source = "suri\tcata".into(), "alert.source");
        refused(&|r| r.source = " ".into(), "alert.source");
        refused(
            &|r| r.source_ref = "r".repeat(Limits::SOURCE_REF + 1),
            "alert.source_ref",
        );
        refused(
            &|r| r.description = "d".repeat(Limits::DESCRIPTION + 1),
            "alert.description",
        );
        refused(
            &|r| {
                r.observables = (0..=Limits::OBSERVABLES)
                    .map(|i| Observable {
                        kind: "ip".into(),
                        value: format!("10.0.0.{i}"),
                    })
                    .collect()
            },
            "alert.observables",
        );
        refused(
            &|r| {
                r.labels = (0..=Limits::LABELS)
                    .map(|i| (format!("k{i}"), "v".into()))
                    .collect()
            },
            "alert.labels",
        );
        refused(
            &|r| {
                r.labels
                    .insert("k".repeat(Limits::LABEL_KEY + 1), "v".into());
            },
            "alert.labels.key",
        );
        refused(
            &|r| {
                r.labels
                    .insert("site".into(), "v".repeat(Limits::LABEL_VALUE + 1));
            },
            "alert.labels[site]",
        );
        // At the limits, accepted.
        let mut r = report(Severity::Low);
        r.source = "s".repeat(Limits::SOURCE);
        r.labels = (0..Limits::LABELS)
            .map(|i| (format!("k{i}"), "v".repeat(Limits::LABEL_VALUE)))
            .collect();
        assert!(r.validate("alert.").is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = report(Severity::Low);
        r.title = "x".repeat(Limits::TITLE + 1);
        let err = r.validate("alert.").unwrap_err();
        assert!(matches!(err, DomainError::Invalid { ref field, .. } if field == "alert.title"));
        let mut r = report(Severity::Low);
        r.source_ref = "a\nb".into();
        let err = r.validate("alert.").unwrap_err();
        assert!(
            matches!(err, DomainError::Invalid { ref field, .. } if field == "alert.source_ref")
        );
        let mut r = report(Severity::Low);
        r.observables[0].value = String::new();
        let err = r.validate("alert.").unwrap_err();
        assert!(
            matches!(err, DomainError::Invalid { ref field, .. } if field == "alert.observables[0].value")
        );
    }

    #[test]
    fn the_dedup_key_is_trimmed_and_refuses_control_characters() {
        let mut r = report(Severity::Low);
        r.source = "  suricata\t".into();
        r.source_ref = " 42 ".into();
        let r = r.validate("alert.").unwrap();
        assert_eq!(
            (r.source.as_str(), r.source_ref.as_str()),
            ("suricata", "42")
        );
        assert_eq!(
            dedup_key("  suricata\t", " 42 ", "").unwrap(),
            ("suricata".to_owned(), "42".to_owned()),
            "validation and the bare dedup key agree"
        );
        // ASCII (DEL) and non-ASCII (NEL, U+0085) control characters alike.
        for bad in ["a\u{7f}b", "caf\u{e9}\u{85}x"] {
            let mut r = report(Severity::Low);
            r.source = bad.into();
            let err = r.validate("alert.").unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { ref field, .. } if field == "alert.source"),
                "{bad:?}: {err:?}"
            );
            assert!(dedup_key("s", bad, "").is_err(), "{bad:?}");
        }
        // Non-ASCII text without control characters is a key like any other.
        assert!(dedup_key("s", "caf\u{e9}", "").is_ok());
    }

    #[test]
    fn scalars_have_no_depth_and_are_checked_for_nul() {
        use serde_json::json;
        assert_eq!(depth_of(&json!(null)), 0);
        assert_eq!(depth_of(&json!("x")), 0);
        assert_eq!(depth_of(&json!([])), 1);
        assert_eq!(depth_of(&json!({"a": [1, {"b": 2}]})), 3);
        assert!(contains_nul(&json!("a\u{0}b")));
        assert!(!contains_nul(&json!("ab")));
        assert!(!contains_nul(&json!(7)));
        assert!(contains_nul(&json!({"k": ["x", "\u{0}"]})));
    }

    #[test]
    fn events_round_trip_through_type_and_payload() {
        let e = AlertEvent::AlertPromoted {
            incident_id: incident(),
        };
        let payload = e.to_payload().unwrap();
        let tree: serde_json::Value = serde_json::from_str(payload.get()).unwrap();
        assert_eq!(tree, serde_json::json!({"incident_id": incident()}));
        assert_eq!(
            AlertEvent::from_payload("AlertPromoted", 1, &payload).unwrap(),
            e
        );
        assert!(AlertEvent::from_payload("AlertPromoted", 2, &payload).is_err());
        assert!(AlertEvent::from_payload("Alert\"Promoted", 1, &payload).is_err());
        // Every variant survives the round trip, the report with its raw payload included.
        let r = AlertEvent::AlertReceived(Arc::new(report(Severity::High)));
        assert_eq!(
            AlertEvent::from_payload("AlertReceived", 1, &r.to_payload().unwrap()).unwrap(),
            r
        );
    }
}
