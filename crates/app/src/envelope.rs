//! The commit envelope: one JSON document per command, stored as the message body. The
//! stored bytes are what the hash chain covers, so they are produced once, here, and never
//! re-serialized. `docs/EVENTS.md` documents every field.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use sems_domain::DomainEvent;

use crate::{LogError, StoredCommit};

/// `prev_hash` of an aggregate's first commit: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// W3C trace context of the call that produced the commit. Shared text: a bulk call's
/// context goes into every commit of the call, and each commit's passes through the handler,
/// the log and the projector's feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `traceparent` header value.
    pub traceparent: Arc<str>,
    /// `tracestate` header value, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<Arc<str>>,
}

/// One commit: every event one command produced, for one aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Idempotency key; also the `Nats-Msg-Id`.
    pub commit_id: Uuid,
    /// `alert`, `incident`, …
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: Uuid,
    /// The aggregate's version after this commit (number of events applied).
    pub aggregate_version: u64,
    /// Server clock when the commit was made (UTC).
    #[serde(serialize_with = "sems_domain::time::serialize_utc")]
    pub recorded_at: DateTime<Utc>,
    /// The authenticated principal; never a client-supplied string.
    pub actor: String,
    /// Groups every commit that one outside request caused.
    pub correlation_id: Uuid,
    /// The commit (or request) that caused this one, when there is one.
    pub causation_id: Option<Uuid>,
    /// Trace context of the producing call.
    pub trace_context: Option<TraceContext>,
    /// SHA-256 (lowercase hex) of the stored bytes of the aggregate's previous commit.
    pub prev_hash: String,
    /// The events, in order.
    pub events: Vec<EnvelopeEvent>,
}

/// One event inside a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeEvent {
    /// UUIDv7.
    pub event_id: Uuid,
    /// Event type name, e.g. `IncidentOpened`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// When it happened in the world.
    pub occurred_at: DateTime<Utc>,
    /// Why it was recorded long after it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_reason: Option<String>,
    /// The event's fields, as stored.
    pub payload: Box<RawValue>,
}

impl PartialEq for EnvelopeEvent {
    /// Field for field; payloads by their stored text.
    fn eq(&self, other: &Self) -> bool {
        self.event_id == other.event_id
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.occurred_at == other.occurred_at
            && self.late_reason == other.late_reason
            && self.payload.get() == other.payload.get()
    }
}

/// An event of a commit being made: its envelope fields, and its payload as the JSON text
/// the domain serialized, written into the envelope as it is instead of being parsed again
/// into a [`RawValue`] and copied.
#[derive(Debug, Clone)]
pub struct NewEvent {
    event_id: Uuid,
    event_type: &'static str,
    schema_version: u32,
    occurred_at: DateTime<Utc>,
    late_reason: Option<String>,
    payload: Box<RawValue>,
}

/// [`EnvelopeEvent`] without its payload, serialized the same way, field for field (its
/// time through [`sems_domain::time::serialize_utc`], which writes chrono's text: the test
/// below checks the two encodings agree byte for byte).
#[derive(Serialize)]
struct EventHead<'a> {
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    #[serde(serialize_with = "sems_domain::time::serialize_utc")]
    occurred_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    late_reason: Option<&'a str>,
}

impl NewEvent {
    /// `event`, serialized, with a fresh UUIDv7 id.
    pub fn new<E: DomainEvent>(
        event: &E,
        occurred_at: DateTime<Utc>,
        late_reason: Option<String>,
    ) -> Result<Self, sems_domain::DomainError> {
        // JSON as serde wrote it, spliced into the envelope unparsed.
        let payload = event.to_payload()?;
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event.event_type(),
            schema_version: event.schema_version(),
            occurred_at,
            late_reason,
            payload,
        })
    }

    /// The event as decoding the envelope [`Envelope::encode_new`] writes gives it: the
    /// payload is the same text (JSON as serde wrote it, copied, not parsed again).
    pub fn to_envelope_event(&self) -> EnvelopeEvent {
        EnvelopeEvent {
            event_id: self.event_id,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            late_reason: self.late_reason.clone(),
            payload: self.payload.clone(),
        }
    }
}

impl Envelope {
    /// The stored bytes.
    pub fn encode(&self) -> Result<Vec<u8>, LogError> {
        serde_json::to_vec(self).map_err(|e| LogError::Internal(format!("encode envelope: {e}")))
    }

    /// The stored bytes of this envelope with `events` as its events (its own `events` must
    /// be empty): the same bytes [`Envelope::encode`] gives for the same events, written
    /// with each payload spliced in as serialized. `events` is the last field of the
    /// envelope and `payload` the last of an event, which is what makes the splice exact.
    pub fn encode_new(&self, events: &[NewEvent]) -> Result<Vec<u8>, LogError> {
        let fail = |what: &str| LogError::Internal(format!("encode envelope: {what}"));
        if !self.events.is_empty() {
            return Err(fail("events given twice"));
        }
        let mut out = Vec::with_capacity(
            512 + events
                .iter()
                .map(|e| {
                    160 + e.payload.get().len() + e.late_reason.as_ref().map_or(0, String::len)
                })
                .sum::<usize>(),
        );
        serde_json::to_writer(&mut out, self).map_err(|e| fail(&e.to_string()))?;
        if !out.ends_with(b"\"events\":[]}") {
            return Err(fail("events are not the envelope's last field"));
        }
        out.truncate(out.len() - 2);
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let head = EventHead {
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                occurred_at: e.occurred_at,
                late_reason: e.late_reason.as_deref(),
            };
            serde_json::to_writer(&mut out, &head).map_err(|e| fail(&e.to_string()))?;
            out.pop();
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(e.payload.get().as_bytes());
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    /// Parses stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LogError> {
        serde_json::from_slice(bytes)
            .map_err(|e| LogError::Corrupt(format!("decode envelope: {e}")))
    }
}

/// The domain events of an envelope, upcast to the current schema.
pub fn decode_events<E: DomainEvent>(envelope: &Envelope) -> Result<Vec<E>, LogError> {
    envelope
        .events
        .iter()
        .map(|e| {
            E::from_payload(&e.event_type, e.schema_version, &e.payload)
                .map_err(|err| LogError::Corrupt(err.to_string()))
        })
        .collect()
}

/// SHA-256 of `bytes` as 64 lowercase hex characters.
pub fn sha256_hex(bytes: &[u8]) -> String {
    // Digit by digit into a string of the final size: `hex::encode` collects it one `char`
    // at a time through an iterator, which a profile of ingestion showed costing a third as
    // much as the hash itself.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

/// Checks that the commits of one aggregate, in stream order, form an unbroken hash chain
/// starting from [`GENESIS_HASH`]. Returns the hash of the last commit.
pub fn verify_chain(commits: &[StoredCommit]) -> Result<String, LogError> {
    let mut expected = GENESIS_HASH.to_owned();
    for c in commits {
        let envelope = Envelope::decode(&c.bytes)?;
        if envelope.prev_hash != expected {
            return Err(LogError::Corrupt(format!(
                "hash chain broken at position {}: prev_hash {} but previous commit hashes to {}",
                c.position, envelope.prev_hash, expected
            )));
        }
        expected = sha256_hex(&c.bytes);
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use sems_domain::{
        Level, Priority, Severity,
        alert::{AlertEvent, AlertReport},
        incident::IncidentEvent,
    };

    use super::*;

    fn head(trace: bool) -> Envelope {
        Envelope {
            commit_id: Uuid::now_v7(),
            aggregate_type: "incident".into(),
            aggregate_id: Uuid::now_v7(),
            aggregate_version: 3,
            recorded_at: Utc::now(),
            actor: "ana \"the analyst\" ünïcode".into(),
            correlation_id: Uuid::now_v7(),
            causation_id: trace.then(Uuid::now_v7),
            trace_context: trace.then(|| TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: Some("congo=t61rcWkgMzE".into()),
            }),
            prev_hash: GENESIS_HASH.into(),
            events: vec![],
        }
    }

    /// The spliced encoding is byte for byte what serde writes for the same envelope with
    /// its payloads as parsed values, and decodes back to the same events.
    fn spliced_equals_serde<E: DomainEvent + PartialEq + std::fmt::Debug>(
        events: &[E],
        late: Option<&str>,
        trace: bool,
    ) {
        let at = Utc::now();
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent::new(e, at, late.map(str::to_owned)).unwrap())
            .collect();
        let head = head(trace);
        let spliced = head.encode_new(&new).unwrap();
        let whole = Envelope {
            events: new
                .iter()
                .map(|n| EnvelopeEvent {
                    event_id: n.event_id,
                    event_type: n.event_type.into(),
                    schema_version: n.schema_version,
                    occurred_at: n.occurred_at,
                    late_reason: n.late_reason.clone(),
                    payload: n.payload.clone(),
                })
                .collect(),
            ..head
        };
        assert_eq!(
            String::from_utf8(spliced.clone()).unwrap(),
            String::from_utf8(whole.encode().unwrap()).unwrap()
        );
        let decoded = Envelope::decode(&spliced).unwrap();
        assert_eq!(decode_events::<E>(&decoded).unwrap(), events);
    }

    #[test]
    fn a_new_commit_encodes_exactly_as_serde_would() {
        let report = AlertReport {
            source: "edr".into(),
            source_ref: "ref-\u{1F600}\"quoted\"".into(),
            title: "Suspicious PowerShell".into(),
            description: "line one\nline two\t\\".into(),
            severity: Severity::High,
            occurred_at: Utc::now(),
            observables: vec![],
            labels: BTreeMap::from([("env".into(), "prod".into())]),
            raw: serde_json::json!({"nested": {"a": [1, 2.5, null, "x"]}}),
        };
        let alert = [AlertEvent::AlertReceived(Arc::new(report))];
        spliced_equals_serde(&alert, None, false);
        spliced_equals_serde(&alert, Some("reported late: \"outage\""), true);
        let incident = [
            IncidentEvent::IncidentOpened {
                title: "Credential stuffing".into(),
                description: String::new(),
                severity: Severity::High,
                priority: Priority::default_for(Severity::High),
                level: Level::Operational,
                alert_ids: vec![Uuid::now_v7(), Uuid::now_v7()],
                opened_by: "ana".into(),
            },
            IncidentEvent::IncidentAcknowledged {
                acknowledged_by: "bo".into(),
            },
        ];
        spliced_equals_serde(&incident, None, true);
        spliced_equals_serde(&incident[1..], Some("late"), false);
        spliced_equals_serde::<IncidentEvent>(&[], None, false);

        let mut given_twice = head(false);
        given_twice.events = Envelope::decode(
            &head(false)
                .encode_new(&[NewEvent::new(&incident[1], Utc::now(), None).unwrap()])
                .unwrap(),
        )
        .unwrap()
        .events;
        assert!(given_twice.encode_new(&[]).is_err());
    }

    #[test]
    fn sha256_hex_matches_the_published_test_vectors() {
        // FIPS 180-2, appendix B.1, and the hash of no bytes.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
