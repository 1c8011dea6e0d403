//! The pure domain of SeMS Response: aggregates, their commands and events, and the rules
//! that decide between them.
//!
//! No async, no I/O, no clock, no randomness: time, ids and the actor arrive inside the
//! command and its [`Context`]. An aggregate is `decide(&state, command, context)` → events and
//! `evolve(state, event)` → state. This crate depends on nothing of the project.

pub mod alert;
pub mod crisis;
mod error;
pub mod handover;
pub mod incident;
mod payload;
pub mod time;
mod values;

pub use error::DomainError;
pub use values::{
    Context, JustCulture, JustCultureDetermination, Level, Limits, Observable, Phase, Priority,
    Role, Severity, Text,
};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

/// An event-sourced aggregate: a state built by folding its events, and the rules that
/// decide which events a command produces.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// The aggregate type as it appears in subjects and envelopes (`incident`, `alert`).
    const TYPE: &'static str;
    /// What a caller asks of the aggregate.
    type Command: Send + Sync;
    /// What happened to it.
    type Event: DomainEvent;

    /// Decides which events `command` produces in the current state, or why it is refused.
    /// An empty list accepts a command that changes nothing (a source repeating what it
    /// already said): nothing is recorded.
    fn decide(
        &self,
        command: &Self::Command,
        context: &Context,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// Applies one event. Events are facts: evolve never fails.
    fn evolve(&mut self, event: &Self::Event);

    /// Whether any event has been applied (the aggregate exists).
    fn exists(&self) -> bool;
}

/// An event type as stored in the log: a stable name, a schema version and a JSON payload.
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static
{
    /// The stable event type name, e.g. `IncidentOpened`.
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for the event's type.
    fn schema_version(&self) -> u32 {
        1
    }

    /// The event's payload as JSON text (its fields, without the type name), serialized
    /// once: what the envelope stores as the event's `payload`.
    fn payload_json(&self) -> Result<String, DomainError> {
        Ok(Box::<str>::from(self.to_payload()?).into())
    }

    /// The event's payload as a JSON value (see [`DomainEvent::payload_json`]): serialized
    /// straight from the event's `payload` field, checking that serde tags the event with
    /// [`DomainEvent::event_type`]; JSON by construction, so not parsed again to check it.
    fn to_payload(&self) -> Result<Box<RawValue>, DomainError> {
        serde_json::value::to_raw_value(&payload::Payload {
            event: self,
            event_type: self.event_type(),
        })
        .map_err(|e| DomainError::Internal(format!("encode event: {e}")))
    }

    /// Rebuilds an event from its stored type, schema version and payload, upcasting old
    /// schema versions. Every type written so far is at version 1.
    fn from_payload(
        event_type: &str,
        schema_version: u32,
        payload: &RawValue,
    ) -> Result<Self, DomainError> {
        if schema_version != 1 {
            return Err(DomainError::Internal(format!(
                "unknown schema version {schema_version} of {event_type}"
            )));
        }
        if !event_type.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(DomainError::Internal(format!(
                "malformed event type {event_type:?}"
            )));
        }
        let tagged = format!(
            "{{\"type\":\"{event_type}\",\"payload\":{}}}",
            payload.get()
        );
        serde_json::from_str(&tagged)
            .map_err(|e| DomainError::Internal(format!("decode {event_type}: {e}")))
    }
}

/// Checks that `event`'s stored payload is byte for byte the `payload` field of its tagged
/// serialization (what the log stored before payloads were serialized on their own), and
/// that it decodes back to the event.
#[cfg(test)]
pub(crate) fn assert_payload_is_the_tagged_field<E: DomainEvent + PartialEq>(event: &E) {
    let tagged = serde_json::to_string(event).unwrap();
    let expected = tagged
        .strip_prefix(&format!(
            "{{\"type\":\"{}\",\"payload\":",
            event.event_type()
        ))
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{tagged}"));
    let payload = event.to_payload().unwrap();
    assert_eq!(payload.get(), expected);
    assert_eq!(event.payload_json().unwrap(), expected);
    assert_eq!(
        &E::from_payload(event.event_type(), 1, &payload).unwrap(),
        event
    );
}
