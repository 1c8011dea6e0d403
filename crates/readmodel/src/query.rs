//! Query shapes shared by every read-model store, and the page cursor.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sems_app::AppError;

use crate::{AlertRow, IncidentRow, NoteRow};

/// An incident row with its alert count.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentSummary {
    /// The row.
    pub row: IncidentRow,
    /// Alerts promoted or merged into it.
    pub alert_count: i64,
}

/// One incident with everything attached to it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentDetail {
    /// The incident.
    pub incident: IncidentSummary,
    /// Its alerts, newest first.
    pub alerts: Vec<AlertRow>,
    /// Its notes, in order.
    pub notes: Vec<NoteRow>,
}

/// A register risk and the incidents linked to it (the assurance measure "incidents per
/// register risk").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskIncidents {
    /// The register's reference.
    pub risk_ref: String,
    /// Incidents linked to it.
    pub incidents: i64,
    /// Of those, not yet resolved or closed.
    pub open: i64,
}

impl From<(String, i64, i64)> for RiskIncidents {
    /// From a row of (reference, incidents, open).
    fn from((risk_ref, incidents, open): (String, i64, i64)) -> Self {
        Self {
            risk_ref,
            incidents,
            open,
        }
    }
}

/// Sort orders of the incident list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IncidentSort {
    /// Newest first.
    #[default]
    OpenedDesc,
    /// Oldest first.
    OpenedAsc,
    /// Most recently changed first.
    UpdatedDesc,
    /// Most severe first, then newest.
    SeverityDesc,
    /// Most urgent (P1) first, then oldest.
    PriorityAsc,
}

/// Filters, sort and page of the incident list.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Status names (`OPEN`, …); empty = any.
    pub statuses: Vec<String>,
    /// Level names; empty = any.
    pub levels: Vec<String>,
    /// Severity codes; empty = any.
    pub severities: Vec<i16>,
    /// Priority codes; empty = any.
    pub priorities: Vec<i16>,
    /// Opened at or after.
    pub opened_from: Option<DateTime<Utc>>,
    /// Opened before.
    pub opened_to: Option<DateTime<Utc>>,
    /// Case-insensitive substring of title or description.
    pub text: Option<String>,
    /// With (or without) a crisis-escalation request pending; `None` = any.
    pub escalation_requested: Option<bool>,
    /// Last changed before.
    pub updated_before: Option<DateTime<Utc>>,
    /// Linked to this register risk.
    pub risk_ref: Option<String>,
    /// Sort order.
    pub sort: IncidentSort,
    /// Page size (validated by the caller).
    pub page_size: u32,
    /// Cursor from a previous page.
    pub after: Option<Cursor>,
}

/// Filters and page of the alert list.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    /// Alerts of one incident.
    pub incident_id: Option<Uuid>,
    /// `received`, `dismissed`, `promoted`, `merged`.
    pub status: Option<String>,
    /// Page size (validated by the caller).
    pub page_size: u32,
    /// Cursor from a previous page.
    pub after: Option<Cursor>,
}

/// A page and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Keyset position in a sorted list: the sort keys of the last item shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort it belongs to.
    pub sort: IncidentSort,
    /// Time key (opened_at, updated_at or received_at).
    pub at: DateTime<Utc>,
    /// Numeric key (severity or priority), 0 when unused.
    pub num: i16,
    /// Id key.
    pub id: Uuid,
}

impl Cursor {
    /// The longest page token a query takes, in bytes (those this server gives are ~150).
    pub const TOKEN_MAX: usize = 512;

    /// The opaque page token.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses a page token; `field` names it in the error.
    pub fn decode(field: &str, token: &str) -> Result<Self, AppError> {
        let invalid = || AppError::Invalid {
            field: field.into(),
            message: "is not a token this server issued".into(),
        };
        if token.len() > Self::TOKEN_MAX {
            return Err(AppError::Invalid {
                field: field.into(),
                message: format!("is longer than {} bytes", Self::TOKEN_MAX),
            });
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

impl IncidentSort {
    /// The keyset of the sort over columns of alias `i`: the key tuple, the comparison that
    /// selects rows after a cursor, and the `ORDER BY`.
    pub(crate) fn keyset(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::OpenedDesc => (
                "(i.opened_at, i.incident_id)",
                "<",
                "i.opened_at DESC, i.incident_id DESC",
            ),
            Self::OpenedAsc => (
                "(i.opened_at, i.incident_id)",
                ">",
                "i.opened_at, i.incident_id",
            ),
            Self::UpdatedDesc => (
                "(i.updated_at, i.incident_id)",
                "<",
                "i.updated_at DESC, i.incident_id DESC",
            ),
            Self::SeverityDesc => (
                "(i.severity, i.opened_at, i.incident_id)",
                "<",
                "i.severity DESC, i.opened_at DESC, i.incident_id DESC",
            ),
            Self::PriorityAsc => (
                "(i.priority, i.opened_at, i.incident_id)",
                ">",
                "i.priority, i.opened_at, i.incident_id",
            ),
        }
    }

    /// Whether the key tuple starts with a number (severity or priority).
    pub(crate) fn has_num(self) -> bool {
        matches!(self, Self::SeverityDesc | Self::PriorityAsc)
    }
}

impl IncidentQuery {
    /// The cursor, refused when it belongs to another sort order.
    pub(crate) fn cursor(&self) -> Result<Option<&Cursor>, AppError> {
        match &self.after {
            Some(c) if c.sort != self.sort => Err(AppError::Invalid {
                field: "page_token".into(),
                message: "belongs to another sort order".into(),
            }),
            other => Ok(other.as_ref()),
        }
    }

    /// `LIKE` pattern of the text filter, with `\` escaping `%`, `_` and itself.
    pub(crate) fn like_pattern(&self) -> Option<String> {
        let text = self.text.as_deref().filter(|t| !t.is_empty())?;
        Some(format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ))
    }
}

impl IncidentSummary {
    /// The cursor that continues a list sorted by `sort` after this item.
    pub(crate) fn cursor(&self, sort: IncidentSort) -> Cursor {
        Cursor {
            sort,
            at: if sort == IncidentSort::UpdatedDesc {
                self.row.updated_at
            } else {
                self.row.opened_at
            },
            num: match sort {
                IncidentSort::SeverityDesc => self.row.severity,
                IncidentSort::PriorityAsc => self.row.priority,
                _ => 0,
            },
            id: self.row.incident_id,
        }
    }
}

impl AlertRow {
    /// The cursor that continues the alert list after this row.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            sort: IncidentSort::default(),
            at: self.received_at,
            num: 0,
            id: self.alert_id,
        }
    }
}

impl<T> Page<T> {
    /// A page from up to `page_size + 1` rows: the extra row only says there is a next page.
    pub(crate) fn from_rows(
        mut items: Vec<T>,
        page_size: u32,
        cursor: impl Fn(&T) -> Cursor,
    ) -> Self {
        let next = if items.len() > page_size as usize {
            items.truncate(page_size as usize);
            items.last().map(cursor)
        } else {
            None
        };
        Self { items, next }
    }
}
