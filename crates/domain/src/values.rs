//! Value objects, parsed once at the edge. Every string and list has a size limit
//! ([`Limits`]); a value that breaks one is refused with the field named.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Documented size limits (characters for strings, entries for lists). See `docs/API.md`.
pub struct Limits;

impl Limits {
    /// Alert source (the emitting tool).
    pub const SOURCE: usize = 100;
    /// The tool's own alert id.
    pub const SOURCE_REF: usize = 200;
    /// Alert and incident titles.
    pub const TITLE: usize = 200;
    /// Alert and incident descriptions.
    pub const DESCRIPTION: usize = 10_000;
    /// Observables per alert.
    pub const OBSERVABLES: usize = 100;
    /// Observable type.
    pub const OBSERVABLE_TYPE: usize = 50;
    /// Observable value.
    pub const OBSERVABLE_VALUE: usize = 2_000;
    /// Labels per alert.
    pub const LABELS: usize = 50;
    /// Label key.
    pub const LABEL_KEY: usize = 100;
    /// Label value.
    pub const LABEL_VALUE: usize = 500;
    /// The raw original payload, as serialized JSON bytes.
    pub const RAW_BYTES: usize = 64 * 1024;
    /// Levels of arrays and objects in the raw original payload: well inside the 128 that
    /// serde_json parses, so that the stored event, which wraps it in a few more, always
    /// decodes again.
    pub const RAW_DEPTH: usize = 64;
    /// Reasons, rationales, resolutions and notes.
    pub const RATIONALE: usize = 4_000;
    /// Note text.
    pub const NOTE: usize = 10_000;
    /// A person's name or principal.
    pub const PERSON: usize = 200;
    /// Client request ids.
    pub const REQUEST_ID: usize = 128;
    /// Characters in one section of a handover brief, or the answers to a clarification.
    pub const BRIEF_SECTION: usize = 10_000;
    /// Questions in one clarification request.
    pub const QUESTIONS: usize = 50;
    /// Alert ids given when opening an incident from alerts.
    pub const ALERT_IDS: usize = 100;
    /// Strategic objectives in one set.
    pub const OBJECTIVES: usize = 20;
    /// Information items named together: a decision's basis, a conflict, a corroboration.
    pub const INFORMATION_ITEMS: usize = 100;
    /// Options considered in one decision.
    pub const OPTIONS: usize = 20;
    /// A risk register's reference for a risk.
    pub const RISK_REF: usize = 100;
    /// Register risks linked to one incident at a time.
    pub const RISKS: usize = 50;
    /// Incidents one crisis covers: named when it is activated, and linked after.
    pub const CRISIS_INCIDENTS: usize = 500;
    /// How far in the future an `occurred_at` may be (clock skew).
    pub const FUTURE_SKEW_SECONDS: i64 = 300;
    /// An entry that occurred longer ago than this before it was recorded is late and
    /// must say why.
    pub const LATE_AFTER_SECONDS: i64 = 3_600;
}

/// A trimmed string within a size limit.
pub struct Text;

/// `str::trim`, without its search from both ends when both end bytes are ASCII and not
/// whitespace (most values: the search decodes characters through a generic pattern, and
/// it ran for every text field of every alert ingested).
fn trim(value: &str) -> &str {
    // The ASCII characters `char::is_whitespace` takes: tab, line feed, vertical tab,
    // form feed, carriage return, space.
    let plain =
        |b: &u8| b.is_ascii() && !matches!(b, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' ');
    match value.as_bytes() {
        [first, .., last] if plain(first) && plain(last) => value,
        [only] if plain(only) => value,
        _ => value.trim(),
    }
}

impl Text {
    /// A required string: trimmed, not empty, at most `max` characters.
    pub fn required(field: &str, value: &str, max: usize) -> Result<String, DomainError> {
        Self::required_as(|| field.to_owned(), value, max)
    }

    /// An optional string: trimmed, at most `max` characters, possibly empty.
    pub fn optional(field: &str, value: &str, max: usize) -> Result<String, DomainError> {
        Self::optional_as(|| field.to_owned(), value, max)
    }

    /// [`Text::required`] with the field's name made only when the value is refused (for
    /// names built per item, on paths that check thousands of values a second).
    pub fn required_as(
        field: impl FnOnce() -> String,
        value: &str,
        max: usize,
    ) -> Result<String, DomainError> {
        Self::checked(field, value, max, true).map(str::to_owned)
    }

    /// [`Text::optional`] with the field's name made only when the value is refused.
    pub fn optional_as(
        field: impl FnOnce() -> String,
        value: &str,
        max: usize,
    ) -> Result<String, DomainError> {
        Self::checked(field, value, max, false).map(str::to_owned)
    }

    /// [`Text::required_as`] of a value the caller owns: kept as it is when there is nothing
    /// to trim, so checking it copies nothing.
    pub fn required_owned(
        field: impl FnOnce() -> String,
        value: String,
        max: usize,
    ) -> Result<String, DomainError> {
        Self::owned(field, value, max, true)
    }

    /// [`Text::optional_as`] of a value the caller owns, as [`Text::required_owned`].
    pub fn optional_owned(
        field: impl FnOnce() -> String,
        value: String,
        max: usize,
    ) -> Result<String, DomainError> {
        Self::owned(field, value, max, false)
    }

    fn owned(
        field: impl FnOnce() -> String,
        value: String,
        max: usize,
        required: bool,
    ) -> Result<String, DomainError> {
        let trimmed = Self::checked(field, &value, max, required)?;
        Ok(if trimmed.len() == value.len() {
            value
        } else {
            trimmed.to_owned()
        })
    }

    /// The checks of every variant above, on the trimmed value, which it returns.
    pub fn checked(
        field: impl FnOnce() -> String,
        value: &str,
        max: usize,
        required: bool,
    ) -> Result<&str, DomainError> {
        let value = trim(value);
        if required && value.is_empty() {
            return Err(DomainError::invalid(field(), "is required"));
        }
        // Most text is ASCII: its length is its byte count and its control characters are
        // bytes, which saves decoding every character twice on the ingestion path.
        let ascii = value.is_ascii();
        let len = if ascii {
            value.len()
        } else {
            value.chars().count()
        };
        if len > max {
            return Err(DomainError::invalid(
                field(),
                format!("is {len} characters long, at most {max} are allowed"),
            ));
        }
        let control = if ascii {
            value
                .bytes()
                .any(|b| b.is_ascii_control() && !matches!(b, b'\n' | b'\t' | b'\r'))
        } else {
            value.chars().any(forbidden_control)
        };
        if control {
            return Err(DomainError::invalid(field(), "contains control characters"));
        }
        Ok(value)
    }
}

/// A control character other than line feed, tab and carriage return.
fn forbidden_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t' && c != '\r'
}

/// Who acts, when, and when what they report happened in the world.
#[derive(Debug, Clone)]
pub struct Context {
    /// The authenticated principal (the caller's token's, or the server's configured one).
    pub actor: String,
    /// The server clock at the time of the command (becomes `recorded_at`).
    pub now: DateTime<Utc>,
    /// When it happened in the world; `now` unless the caller says otherwise.
    pub occurred_at: DateTime<Utc>,
    /// Why an entry is recorded long after it occurred.
    pub late_reason: Option<String>,
}

impl Context {
    /// A context for something that happens now.
    pub fn now(actor: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            actor: actor.into(),
            now,
            occurred_at: now,
            late_reason: None,
        }
    }

    /// Checks a world time given by the caller: not in the future beyond clock skew, and when
    /// it is more than [`Limits::LATE_AFTER_SECONDS`] old, a late reason is given.
    pub fn check_occurred_at(&self, field: &str) -> Result<(), DomainError> {
        self.check_not_future(field, self.occurred_at)?;
        let late = self.now - self.occurred_at > Duration::seconds(Limits::LATE_AFTER_SECONDS);
        if late && self.late_reason.as_deref().is_none_or(str::is_empty) {
            return Err(DomainError::invalid(
                "late_reason",
                "is required when occurred_at is more than an hour before now",
            ));
        }
        Ok(())
    }

    /// Checks that `at`, a world time given by the caller, is not in the future beyond clock
    /// skew ([`Limits::FUTURE_SKEW_SECONDS`]).
    pub fn check_not_future(&self, field: &str, at: DateTime<Utc>) -> Result<(), DomainError> {
        if at > self.now + Duration::seconds(Limits::FUTURE_SKEW_SECONDS) {
            return Err(DomainError::invalid(field, "is in the future"));
        }
        Ok(())
    }
}

macro_rules! enum_codes {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $code:literal : $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// The proto enum number of the value.
            pub fn code(self) -> i32 {
                match self { $(Self::$variant => $code),+ }
            }

            /// Parses a stored name, e.g. `TACTICAL`.
            pub fn parse(field: &str, text: &str) -> Result<Self, DomainError> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(DomainError::invalid(field, format!("unknown value {other:?}"))),
                }
            }

            /// Parses a proto enum number; 0 (unspecified) and unknown numbers are invalid.
            pub fn from_code(field: &str, code: i32) -> Result<Self, DomainError> {
                match code {
                    $($code => Ok(Self::$variant),)+
                    0 => Err(DomainError::invalid(field, "is required")),
                    other => Err(DomainError::invalid(field, format!("unknown value {other}"))),
                }
            }

            /// The stored name of the value, e.g. `TACTICAL`.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
    };
}

pub(crate) use enum_codes;

enum_codes! {
    /// Impact of an alert or incident.
    Severity { Info = 1: "INFO", Low = 2: "LOW", Medium = 3: "MEDIUM", High = 4: "HIGH", Critical = 5: "CRITICAL" }
}

enum_codes! {
    /// Urgency of an incident; `P1` is the most urgent.
    Priority { P1 = 1: "P1", P2 = 2: "P2", P3 = 3: "P3", P4 = 4: "P4" }
}

enum_codes! {
    /// Command level: bronze, silver, gold (the CMC).
    Level { Operational = 1: "OPERATIONAL", Tactical = 2: "TACTICAL", Strategic = 3: "STRATEGIC" }
}

enum_codes! {
    /// Response phase (NIST SP 800-61).
    Phase { Contain = 1: "CONTAIN", Eradicate = 2: "ERADICATE", Recover = 3: "RECOVER" }
}

enum_codes! {
    /// A role held at one level of an incident. There is one commander per level.
    Role { Commander = 1: "COMMANDER", Deputy = 2: "DEPUTY", Liaison = 3: "LIAISON", Scribe = 4: "SCRIBE", Analyst = 5: "ANALYST", Communications = 6: "COMMUNICATIONS", Observer = 7: "OBSERVER" }
}

enum_codes! {
    /// Just Culture determination where people were involved (EU 376/2014).
    JustCultureDetermination {
        NoHumanFactor = 1: "NO_HUMAN_FACTOR", HonestError = 2: "HONEST_ERROR", AtRiskBehaviour = 3: "AT_RISK_BEHAVIOUR", RecklessBehaviour = 4: "RECKLESS_BEHAVIOUR", WilfulViolation = 5: "WILFUL_VIOLATION"
    }
}

impl Priority {
    /// The default urgency for an impact, until someone classifies the incident.
    pub fn default_for(severity: Severity) -> Self {
        match severity {
            Severity::Critical => Self::P1,
            Severity::High => Self::P2,
            Severity::Medium => Self::P3,
            Severity::Low | Severity::Info => Self::P4,
        }
    }
}

/// A Just Culture determination with its rationale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JustCulture {
    /// The determination.
    pub determination: JustCultureDetermination,
    /// Why.
    pub rationale: String,
}

/// Something observed in an alert: an IP, a domain, a hash, a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observable {
    /// The kind of observable, e.g. `ip`, `sha256`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its value.
    pub value: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn trim_is_str_trim() {
        let samples = [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{b}a\u{b}",
            "\u{c}x",
            "x\r",
            "\t\n",
            "é",
            " é ",
            "\u{a0}a",
            "a\u{a0}",
            "\u{3000}a\u{3000}",
            "a\u{85}",
            "\u{1c}a\u{1f}",
            "ab",
            "a b",
            "\u{2028}",
            "x\u{200a}",
            "\u{7f}",
            "\0a\0",
        ];
        for s in samples {
            assert_eq!(super::trim(s), s.trim(), "{s:?}");
        }
        for b in 0u8..=127 {
            for s in [
                format!("{}", b as char),
                format!("{}x{}", b as char, b as char),
            ] {
                assert_eq!(super::trim(&s), s.trim(), "{s:?}");
            }
        }
    }

    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(Text::required("title", "  x ", 5).unwrap(), "x");
        assert_eq!(
            Text::required("title", "   ", 5),
            Err(DomainError::invalid("title", "is required"))
        );
        let err = Text::required("title", "abcdef", 5).unwrap_err();
        assert!(matches!(err, DomainError::Invalid { ref field, .. } if field == "title"));
        assert!(Text::optional("note", "a\u{0}b", 5).is_err());
    }

    /// The ASCII fast path decides as the character-by-character check does.
    #[test]
    fn ascii_and_other_text_are_counted_and_checked_alike() {
        let refused = |v: &str, max| Text::checked(|| "f".to_owned(), v, max, false).is_err();
        for b in 0u8..=127 {
            let c = char::from(b);
            let ascii = format!("a{c}b");
            let unicode = format!("é{c}b");
            assert_eq!(refused(&ascii, 10), forbidden_control(c), "{b:#x}");
            assert_eq!(refused(&unicode, 10), forbidden_control(c), "{b:#x}");
        }
        assert!(refused("a\u{85}b", 10), "a C1 control character");
        assert!(!refused("abcde", 5) && refused("abcdef", 5));
        assert!(
            !refused("ééééé", 5) && refused("éééééé", 5),
            "characters, not bytes"
        );
        assert!(!refused("line\nnext\ttab\r", 20));
    }

    #[test]
    fn enum_codes_round_trip_and_reject_unspecified() {
        assert_eq!(
            Severity::from_code("severity", 5).unwrap(),
            Severity::Critical
        );
        assert_eq!(Severity::Critical.code(), 5);
        assert!(Severity::from_code("severity", 0).is_err());
        assert!(Level::from_code("to", 9).is_err());
        assert_eq!(Level::Tactical.as_str(), "TACTICAL");
        assert_eq!(Level::parse("level", "TACTICAL").unwrap(), Level::Tactical);
    }

    #[test]
    fn late_entries_need_a_reason_and_future_ones_are_refused() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut ctx = Context::now("alice", now);
        ctx.occurred_at = now - Duration::hours(2);
        assert!(ctx.check_occurred_at("occurred_at").is_err());
        ctx.late_reason = Some("radio log transcribed after the shift".into());
        assert!(ctx.check_occurred_at("occurred_at").is_ok());
        ctx.occurred_at = now + Duration::hours(1);
        assert!(ctx.check_occurred_at("occurred_at").is_err());
    }
}
