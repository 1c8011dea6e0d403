//! SOC webhooks: HTTP ingestion beside the gRPC API, for the tools people already run.
//!
//! * `POST /webhooks/alertmanager` — the Prometheus Alertmanager webhook payload (version 4,
//!   from `webhook_configs`): each firing alert is ingested, each resolved alert is resolved
//!   at the source.
//! * `POST /v2/enqueue` (also `/webhooks/pagerduty/v2/enqueue`) — the PagerDuty Events API v2,
//!   a drop-in: `trigger`, `acknowledge`, `resolve` with `dedup_key` as the dedup key, answered
//!   as PagerDuty answers (202 with `status`, `message`, `dedup_key`).
//! * `POST /webhooks/generic` — the documented generic JSON shape (`docs/WEBHOOKS.md`).
//! * `GET /healthz`, `GET /status` (the store in use and its counters).
//!
//! Every payload is checked whole before anything is appended: a bad one gets a 4xx that
//! names the problem and appends nothing. Mapping rules: `docs/WEBHOOKS.md`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sems_app::{AppError, CommandMeta, IngestOutcome, Sems, SourceSignal, SourceUpdateOutcome};
use sems_domain::{Limits, Observable, Severity, Text, alert::AlertReport};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{Instrument, Span, info_span, warn};

/// Largest request body accepted (an Alertmanager group of many alerts fits easily).
const MAX_BODY: usize = 1024 * 1024;

/// What `GET /status` reports: the store in use and its counters.
pub type StatusFn = Arc<dyn Fn() -> Value + Send + Sync>;

/// What the webhook handlers share.
#[derive(Clone)]
pub struct Webhooks {
    sems: Arc<Sems>,
    token: Option<Arc<str>>,
    status: StatusFn,
}

impl Webhooks {
    /// Webhooks over the use cases; with a token, every call must present it.
    pub fn new(sems: Arc<Sems>, token: Option<String>, status: StatusFn) -> Self {
        Self {
            sems,
            token: token.filter(|t| !t.is_empty()).map(Into::into),
            status,
        }
    }

    fn router(self) -> Router {
        Router::new()
            .route("/webhooks/alertmanager", post(alertmanager))
            .route("/v2/enqueue", post(pagerduty))
            .route("/webhooks/pagerduty/v2/enqueue", post(pagerduty))
            .route("/webhooks/generic", post(generic))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/status", get(status))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }
}

/// Serves the webhooks on `listener` until `shutdown`.
pub async fn serve(
    webhooks: Webhooks,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, webhooks.router())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// `GET /status`: which store, where, and its counters (for operators and the benchmark).
/// With a webhook token configured it requires the token too: it names files on the host.
async fn status(State(w): State<Webhooks>, headers: HeaderMap) -> Response {
    if !w.bearer_ok(&headers) {
        return Problem::unauthorized().into_response();
    }
    axum::Json((w.status)()).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn call_span(route: &str, headers: &HeaderMap) -> Span {
    let span = info_span!(
        "http.call",
        otel.name = format!("POST {route}"),
        otel.kind = "server",
        http.route = route,
    );
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    sems_telemetry::set_remote_parent(&span, header("traceparent"), header("tracestate"));
    span
}

fn meta() -> CommandMeta {
    crate::grpc::command_meta(None, None)
}

/// A 4xx or 5xx with a JSON body `{"error": …, "field": …}`.
struct Problem {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl Problem {
    fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message:
                "a valid bearer token is required (Authorization: Bearer <SEMS_WEBHOOK_TOKEN>)"
                    .into(),
            field: None,
        }
    }

    /// The text a person reads: the field and what is wrong with it.
    fn text(&self) -> String {
        match &self.field {
            Some(f) => format!("{f}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Self {
        let status = match &e {
            AppError::Invalid { field, message } => {
                return Self::bad(field.clone(), message.clone());
            }
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Precondition(_) | AppError::Aborted(_) => StatusCode::CONFLICT,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::NotCaughtUp(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            warn!(error = %e, "webhook failed");
        }
        Self {
            status,
            message: if status == StatusCode::INTERNAL_SERVER_ERROR {
                "internal error (see the server log)".into()
            } else {
                e.to_string()
            },
            field: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            error: self.text(),
            field: self.field,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A problem's body. Answers are structs, not `json!` maps, so their keys come in the order
/// the docs show (a `serde_json` map sorts them).
#[derive(Serialize)]
struct ProblemBody {
    error: String,
    field: Option<String>,
}

/// The answer of the Alertmanager and generic endpoints.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Ingested(Ingested),
    Updated(Updated),
    Results { results: Vec<AmResult> },
}

/// An alert reported (generic `trigger`).
#[derive(Serialize)]
struct Ingested {
    alert_id: uuid::Uuid,
    repeat: bool,
    incident_id: Option<uuid::Uuid>,
    position: u64,
    version: u64,
    replayed: bool,
}

impl From<IngestOutcome> for Ingested {
    fn from(o: IngestOutcome) -> Self {
        Self {
            alert_id: o.alert_id,
            repeat: o.repeat,
            incident_id: o.incident_id,
            position: o.position,
            version: o.version,
            replayed: o.replayed,
        }
    }
}

/// What the source said of an alert (generic `acknowledge` and `resolve`).
#[derive(Serialize)]
struct Updated {
    alert_id: uuid::Uuid,
    known: bool,
    changed: bool,
    position: u64,
}

impl From<SourceUpdateOutcome> for Updated {
    fn from(o: SourceUpdateOutcome) -> Self {
        Self {
            alert_id: o.alert_id,
            known: o.known,
            changed: o.changed,
            position: o.position,
        }
    }
}

/// One alert of an Alertmanager notification.
#[derive(Serialize)]
#[serde(untagged)]
enum AmResult {
    Firing {
        source_ref: String,
        status: &'static str,
        alert_id: uuid::Uuid,
        repeat: bool,
        incident_id: Option<uuid::Uuid>,
        position: u64,
    },
    Resolved {
        source_ref: String,
        status: &'static str,
        alert_id: uuid::Uuid,
        known: bool,
        changed: bool,
        position: u64,
    },
}

/// PagerDuty's answers, with its keys in its order.
#[derive(Serialize)]
struct PdAnswer {
    status: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem {
        status: StatusCode::BAD_REQUEST,
        message: format!("the body is not the expected JSON: {e}"),
        field: None,
    })
}

/// A severity word of a monitoring tool. Unknown words are MEDIUM (and the word stays in the
/// alert's labels and raw payload): refusing them would drop alerts a tool cannot resend.
fn severity_word(word: Option<&str>) -> Severity {
    match word.map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "crit" | "fatal" | "emergency" | "page" | "p1" | "disaster") => {
            Severity::Critical
        }
        Some("high" | "error" | "err" | "major" | "p2") => Severity::High,
        Some("low" | "minor" | "p4") => Severity::Low,
        Some("info" | "informational" | "notice" | "none" | "ok" | "p5") => Severity::Info,
        _ => Severity::Medium,
    }
}

/// A time a source reported: not after now (clock skew), and with a late reason when it is
/// more than an hour old, as every late entry carries one.
fn reported_at(meta: &mut CommandMeta, at: DateTime<Utc>, now: DateTime<Utc>, source: &str) {
    let at = at.min(now);
    if now - at > Duration::seconds(Limits::LATE_AFTER_SECONDS) {
        meta.late_reason = Some(format!("reported by {source} after the fact"));
    }
    meta.occurred_at = Some(at);
}

/// An ISO 8601 time with an offset: RFC 3339 (`2026-11-27T09:30:00Z`), or an offset without a
/// colon as PagerDuty's own examples write it (`2015-07-17T08:42:58.315+0000`).
fn iso8601(field: &str, text: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
        .map_err(|e| {
            Problem::bad(
                field,
                format!("is not an ISO 8601 time with an offset ({e})"),
            )
        })
}

// ---------------------------------------------------------------- Alertmanager

/// The Alertmanager webhook payload, version 4.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmPayload {
    version: String,
    #[serde(default)]
    group_key: String,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    external_url: String,
    alerts: Vec<AmAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default)]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

/// One Alertmanager alert, mapped and checked.
enum AmItem {
    Firing(Box<AlertReport>),
    Resolved {
        source_ref: String,
        ends_at: DateTime<Utc>,
        raw: Value,
    },
}

/// Alertmanager's fingerprint identifies an alert by its label set; older versions omit it,
/// so a hash of the sorted labels stands in (the same labels give the same key).
fn am_key(a: &AmAlert) -> String {
    if !a.fingerprint.is_empty() {
        return clip(&a.fingerprint, Limits::SOURCE_REF);
    }
    if a.labels.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "labels-{}",
        &sems_app::sha256_hex(labels.join("\n").as_bytes())[..32]
    )
}

/// `text` cut to `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Labels within the limits: keys and values cut, at most [`Limits::LABELS`] of them (the
/// first in key order; the rest stay in `raw`).
fn fit_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !k.trim().is_empty())
        .take(Limits::LABELS)
        .map(|(k, v)| (clip(k, Limits::LABEL_KEY), clip(v, Limits::LABEL_VALUE)))
        .collect()
}

/// The original payload, or, when it is over [`Limits::RAW_BYTES`], its identifying part
/// with `"truncated": true`; a NUL character (which the API refuses in `raw`) replaced by
/// U+FFFD.
fn fit_raw(mut raw: Value) -> Value {
    if sems_domain::alert::contains_nul(&raw) {
        sems_domain::alert::replace_nul(&mut raw);
    }
    let fits = |v: &Value| serde_json::to_vec(v).is_ok_and(|b| b.len() <= Limits::RAW_BYTES);
    if fits(&raw) {
        return raw;
    }
    let alert = &raw["alert"];
    let short = json!({
        "truncated": true,
        "receiver": raw["receiver"],
        "alert": {
            "status": alert["status"],
            "startsAt": alert["startsAt"],
            "endsAt": alert["endsAt"],
            "fingerprint": alert["fingerprint"],
        },
    });
    if fits(&short) {
        short
    } else {
        json!({ "truncated": true })
    }
}

fn am_item(p: &AmPayload, i: usize, a: &AmAlert, now: DateTime<Utc>) -> Result<AmItem, Problem> {
    let at = |f: &str| format!("alerts[{i}].{f}");
    let raw = json!({
        "receiver": p.receiver,
        "groupKey": p.group_key,
        "externalURL": p.external_url,
        "alert": {
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at,
            "endsAt": a.ends_at,
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint,
        },
    });
    let source_ref = am_key(a);
    if source_ref.is_empty() {
        return Err(Problem::bad(
            at("fingerprint"),
            "is required (or labels to identify the alert by)",
        ));
    }
    match a.status.as_str() {
        "firing" => {
            let title = [a.annotations.get("summary"), a.labels.get("alertname")]
                .into_iter()
                .flatten()
                .find(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    Problem::bad(
                        at("labels.alertname"),
                        "is required (or annotations.summary) to title the alert",
                    )
                })?;
            let description = a
                .annotations
                .get("description")
                .or_else(|| a.annotations.get("message"))
                .cloned()
                .unwrap_or_default();
            let observables: Vec<Observable> = a
                .labels
                .get("instance")
                .map(|v| Observable {
                    kind: "instance".into(),
                    value: v.clone(),
                })
                .into_iter()
                .collect();
            // Alertmanager does not resend a notification it got a 4xx for: rather than lose
            // every alert of the group, over-long fields are cut to the limits (and the
            // original stays in `raw` when it fits).
            let report = AlertReport {
                source: "alertmanager".into(),
                source_ref,
                title: clip(title, Limits::TITLE),
                description: clip(&description, Limits::DESCRIPTION),
                severity: severity_word(a.labels.get("severity").map(String::as_str)),
                occurred_at: iso8601(&at("startsAt"), &a.starts_at)?.min(now),
                observables: observables
                    .into_iter()
                    .map(|o| Observable {
                        value: clip(&o.value, Limits::OBSERVABLE_VALUE),
                        ..o
                    })
                    .collect(),
                labels: fit_labels(&a.labels),
                raw: fit_raw(raw),
            };
            let report = report
                .validate(&format!("alerts[{i}]."))
                .map_err(|e| Problem::from(AppError::from(e)))?;
            Ok(AmItem::Firing(Box::new(report)))
        }
        "resolved" => Ok(AmItem::Resolved {
            source_ref,
            ends_at: iso8601(&at("endsAt"), &a.ends_at)?,
            raw: fit_raw(raw),
        }),
        other => Err(Problem::bad(
            at("status"),
            format!("is {other:?}; expected \"firing\" or \"resolved\""),
        )),
    }
}

/// A bearer-authenticated JSON call: the span, the token check, and `handle`'s answer with
/// `ok` as its status.
async fn bearer_call<'a, F>(
    w: &'a Webhooks,
    route: &str,
    headers: &HeaderMap,
    ok: StatusCode,
    handle: impl FnOnce(&'a Webhooks) -> F,
) -> Response
where
    F: Future<Output = Result<Answer, Problem>> + 'a,
{
    async move {
        if !w.bearer_ok(headers) {
            return Problem::unauthorized().into_response();
        }
        match handle(w).await {
            Ok(v) => (ok, axum::Json(v)).into_response(),
            Err(p) => p.into_response(),
        }
    }
    .instrument(call_span(route, headers))
    .await
}

async fn alertmanager(State(w): State<Webhooks>, headers: HeaderMap, body: Bytes) -> Response {
    let route = "/webhooks/alertmanager";
    bearer_call(&w, route, &headers, StatusCode::OK, |w| {
        alertmanager_inner(w, &body)
    })
    .await
}

async fn alertmanager_inner(w: &Webhooks, body: &[u8]) -> Result<Answer, Problem> {
    let p: AmPayload = parse(body)?;
    if p.version != "4" {
        return Err(Problem::bad(
            "version",
            format!(
                "is {:?}; this endpoint takes Alertmanager webhook payload version \"4\"",
                p.version
            ),
        ));
    }
    let now = w.sems.handler().now();
    // Check every alert before appending any.
    let items = p
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| am_item(&p, i, a, now))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        results.push(match item {
            AmItem::Firing(report) => {
                let source_ref = report.source_ref.clone();
                let o = w.sems.ingest_alert(*report, meta()).await?;
                AmResult::Firing {
                    source_ref,
                    status: "firing",
                    alert_id: o.alert_id,
                    repeat: o.repeat,
                    incident_id: o.incident_id,
                    position: o.position,
                }
            }
            AmItem::Resolved {
                source_ref,
                ends_at,
                raw,
            } => {
                let mut m = meta();
                reported_at(&mut m, ends_at, now, "alertmanager");
                let o = w
                    .sems
                    .alert_source_update(
                        "alertmanager",
                        &source_ref,
                        SourceSignal::Resolved,
                        raw,
                        m,
                    )
                    .await?;
                AmResult::Resolved {
                    source_ref,
                    status: "resolved",
                    alert_id: o.alert_id,
                    known: o.known,
                    changed: o.changed,
                    position: o.position,
                }
            }
        });
    }
    Ok(Answer::Results { results })
}

// ---------------------------------------------------------------- PagerDuty Events API v2

#[derive(Debug, Deserialize)]
struct PdEvent {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    event_action: String,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    payload: Option<PdPayload>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    client_url: Option<String>,
    #[serde(default)]
    links: Option<Value>,
    #[serde(default)]
    images: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct PdPayload {
    #[serde(default)]
    summary: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    custom_details: Option<Value>,
}

/// PagerDuty's answer to an invalid event: 400 with its own shape.
fn pd_invalid(errors: Vec<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(PdAnswer {
            status: "invalid event",
            message: "Event object is invalid",
            dedup_key: None,
            errors,
        }),
    )
        .into_response()
}

async fn pagerduty(State(w): State<Webhooks>, headers: HeaderMap, body: Bytes) -> Response {
    let span = call_span("/v2/enqueue", &headers);
    async move {
        let event: PdEvent = match serde_json::from_slice(&body) {
            Ok(e) => e,
            Err(e) => return pd_invalid(vec![format!("the body is not a JSON event: {e}")]),
        };
        if let Some(token) = &w.token
            && !constant_time_eq(event.routing_key.as_bytes(), token.as_bytes())
        {
            return pd_invalid(vec!["Invalid routing key".into()]);
        }
        match pagerduty_inner(&w, event).await {
            Ok(dedup_key) => (
                StatusCode::ACCEPTED,
                axum::Json(PdAnswer {
                    status: "success",
                    message: "Event processed",
                    dedup_key: Some(dedup_key),
                    errors: Vec::new(),
                }),
            )
                .into_response(),
            Err(p) if p.status == StatusCode::BAD_REQUEST => pd_invalid(vec![p.text()]),
            Err(p) => p.into_response(),
        }
    }
    .instrument(span)
    .await
}

/// The path (`payload.custom_details.cmd`, `links[0].href`) of the first string or key
/// holding U+0000 in `value`, if any.
fn nul_path(value: &Value) -> Option<String> {
    if !sems_domain::alert::contains_nul(value) {
        return None;
    }
    let mut stack = vec![(value, String::new())];
    while let Some((v, path)) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return Some(path),
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (item, format!("{path}[{i}]"))),
            ),
            Value::Object(fields) => {
                for (key, item) in fields {
                    let at = if path.is_empty() {
                        key.escape_debug().to_string()
                    } else {
                        format!("{path}.{}", key.escape_debug())
                    };
                    if key.contains('\0') {
                        return Some(at);
                    }
                    stack.push((item, at));
                }
            }
            _ => {}
        }
    }
    None
}

/// The path of an array or object in `value` nested deeper than `max` levels (the
/// root is level 1), if any.
fn too_deep_path(value: &Value, max: usize) -> Option<String> {
    if sems_domain::alert::depth_of(value) <= max {
        return None;
    }
    let mut stack = vec![(value, String::new(), 1)];
    while let Some((v, path, level)) = stack.pop() {
        let nested = matches!(v, Value::Array(_) | Value::Object(_));
        if nested && level > max {
            return Some(path);
        }
        match v {
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (item, format!("{path}[{i}]"), level + 1)),
            ),
            Value::Object(fields) => stack.extend(fields.iter().map(|(key, item)| {
                let at = if path.is_empty() {
                    key.escape_debug().to_string()
                } else {
                    format!("{path}.{}", key.escape_debug())
                };
                (item, at, level + 1)
            })),
            _ => {}
        }
    }
    None
}

/// A problem naming the PagerDuty field behind ours.
fn pd_problem(e: AppError) -> Problem {
    match e {
        AppError::Invalid { field, message } => {
            let field = match field.as_str() {
                "title" => "payload.summary".to_owned(),
                "source_ref" => "dedup_key".to_owned(),
                "observables[0].value" => "payload.source".to_owned(),
                "raw" => "payload.custom_details".to_owned(),
                f if f.starts_with("labels") => "payload".to_owned(),
                _ => field,
            };
            Problem::bad(field, message)
        }
        other => other.into(),
    }
}

async fn pagerduty_inner(w: &Webhooks, e: PdEvent) -> Result<String, Problem> {
    if e.routing_key.trim().is_empty() {
        return Err(Problem::bad("routing_key", "is missing or blank"));
    }
    let now = w.sems.handler().now();
    let dedup_key = e.dedup_key.clone().filter(|k| !k.trim().is_empty());
    // The routing key is an integration's secret: it is never stored.
    let raw = json!({
        "event_action": e.event_action,
        "dedup_key": dedup_key,
        "payload": e.payload.as_ref().map(|p| json!({
            "summary": p.summary,
            "source": p.source,
            "severity": p.severity,
            "timestamp": p.timestamp,
            "component": p.component,
            "group": p.group,
            "class": p.class,
            "custom_details": p.custom_details,
        })),
        "client": e.client,
        "client_url": e.client_url,
        "links": e.links,
        "images": e.images,
    });
    // The original event is kept as the alert's raw payload, where U+0000 is refused: name
    // the PagerDuty field that holds it rather than the one raw payload.
    if let Some(path) = nul_path(&raw) {
        return Err(Problem::bad(path, "contains a NUL character (U+0000)"));
    }
    let max = sems_domain::Limits::RAW_DEPTH;
    if let Some(path) = too_deep_path(&raw, max) {
        return Err(Problem::bad(
            path,
            format!("is nested more than {max} levels of arrays and objects deep in the event"),
        ));
    }
    match e.event_action.as_str() {
        "trigger" => {
            let Some(p) = &e.payload else {
                return Err(Problem::bad("payload", "is missing"));
            };
            if p.summary.trim().is_empty() {
                return Err(Problem::bad("payload.summary", "is missing or blank"));
            }
            if p.source.trim().is_empty() {
                return Err(Problem::bad("payload.source", "is missing or blank"));
            }
            let severity = match p.severity.as_str() {
                "critical" => Severity::Critical,
                "error" => Severity::High,
                "warning" => Severity::Medium,
                "info" => Severity::Info,
                other => {
                    return Err(Problem::bad(
                        "payload.severity",
                        format!("is {other:?}; expected one of critical, error, warning, info"),
                    ));
                }
            };
            let occurred_at = match p.timestamp.as_deref().filter(|t| !t.is_empty()) {
                Some(t) => iso8601("payload.timestamp", t)?.min(now),
                None => now,
            };
            // As PagerDuty does, a trigger without a dedup key gets a new one.
            let key = dedup_key.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let mut labels = BTreeMap::new();
            for (name, value) in [
                ("component", &p.component),
                ("group", &p.group),
                ("class", &p.class),
            ] {
                if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                    labels.insert(name.to_owned(), v.clone());
                }
            }
            let description = match &p.custom_details {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let report = AlertReport {
                source: "pagerduty".into(),
                source_ref: key.clone(),
                title: p.summary.clone(),
                description,
                severity,
                occurred_at,
                observables: vec![Observable {
                    kind: "host".into(),
                    value: p.source.clone(),
                }],
                labels,
                raw,
            };
            let report = report.validate("").map_err(|e| pd_problem(e.into()))?;
            w.sems
                .ingest_alert(report, meta())
                .await
                .map_err(pd_problem)?;
            Ok(key)
        }
        action @ ("acknowledge" | "resolve") => {
            let Some(key) = dedup_key else {
                return Err(Problem::bad(
                    "dedup_key",
                    format!("is required to {action} an alert"),
                ));
            };
            let signal = if action == "resolve" {
                SourceSignal::Resolved
            } else {
                SourceSignal::Acknowledged
            };
            let o = w
                .sems
                .alert_source_update("pagerduty", &key, signal, raw, meta())
                .await
                .map_err(pd_problem)?;
            if !o.known {
                warn!(dedup_key = %key, action, "PagerDuty event for an alert never triggered here; nothing recorded");
            }
            Ok(key)
        }
        "" => Err(Problem::bad("event_action", "is missing")),
        other => Err(Problem::bad(
            "event_action",
            format!("is {other:?}; expected trigger, acknowledge or resolve"),
        )),
    }
}

// ---------------------------------------------------------------- generic

/// The generic shape (`docs/WEBHOOKS.md`): the gRPC `Alert` as JSON, plus an action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericAlert {
    #[serde(default)]
    action: Option<String>,
    source: String,
    source_ref: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    observables: Vec<GenericObservable>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    raw: Value,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericObservable {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

async fn generic(State(w): State<Webhooks>, headers: HeaderMap, body: Bytes) -> Response {
    let route = "/webhooks/generic";
    bearer_call(&w, route, &headers, StatusCode::ACCEPTED, |w| {
        generic_inner(w, &body)
    })
    .await
}

async fn generic_inner(w: &Webhooks, body: &[u8]) -> Result<Answer, Problem> {
    let a: GenericAlert = parse(body)?;
    let now = w.sems.handler().now();
    let mut m = meta();
    if let Some(r) = a.request_id {
        let r = Text::optional("request_id", &r, Limits::REQUEST_ID)
            .map_err(|e| Problem::from(AppError::from(e)))?;
        m.request_id = (!r.is_empty()).then_some(r);
    }
    let occurred_at = a
        .occurred_at
        .as_deref()
        .map(|t| iso8601("occurred_at", t))
        .transpose()?;
    match a.action.as_deref().unwrap_or("trigger") {
        "trigger" => {
            let severity = Severity::parse("severity", &a.severity.to_ascii_uppercase())
                .map_err(|e| Problem::from(AppError::from(e)))?;
            let report = AlertReport {
                source: a.source,
                source_ref: a.source_ref,
                title: a.title,
                description: a.description,
                severity,
                occurred_at: occurred_at.unwrap_or(now),
                observables: a
                    .observables
                    .into_iter()
                    .map(|o| Observable {
                        kind: o.kind,
                        value: o.value,
                    })
                    .collect(),
                labels: a.labels,
                raw: a.raw,
            }
            .validate("")
            .map_err(|e| Problem::from(AppError::from(e)))?;
            let o = w.sems.ingest_alert(report, m).await?;
            Ok(Answer::Ingested(o.into()))
        }
        action @ ("acknowledge" | "resolve") => {
            if let Some(at) = occurred_at {
                reported_at(&mut m, at, now, &a.source);
            }
            let signal = if action == "resolve" {
                SourceSignal::Resolved
            } else {
                SourceSignal::Acknowledged
            };
            let o = w
                .sems
                .alert_source_update(&a.source, &a.source_ref, signal, a.raw, m)
                .await?;
            Ok(Answer::Updated(o.into()))
        }
        other => Err(Problem::bad(
            "action",
            format!("is {other:?}; expected trigger, acknowledge or resolve"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_words_of_monitoring_tools_map_onto_severities() {
        assert_eq!(severity_word(Some("critical")), Severity::Critical);
        assert_eq!(severity_word(Some("Page")), Severity::Critical);
        assert_eq!(severity_word(Some("error")), Severity::High);
        assert_eq!(severity_word(Some("warning")), Severity::Medium);
        assert_eq!(severity_word(Some("something-else")), Severity::Medium);
        assert_eq!(severity_word(None), Severity::Medium);
        assert_eq!(severity_word(Some("info")), Severity::Info);
    }

    #[test]
    fn times_with_or_without_a_colon_in_the_offset_parse() {
        let a =
            iso8601("t", "2015-07-17T08:42:58.315+0000").unwrap_or_else(|p| panic!("{}", p.text()));
        let b = iso8601("t", "2015-07-17T08:42:58.315Z").unwrap_or_else(|p| panic!("{}", p.text()));
        assert_eq!(a, b);
        let err = iso8601("payload.timestamp", "yesterday")
            .err()
            .map(|p| p.text());
        assert!(err.is_some_and(|t| t.starts_with("payload.timestamp: ")));
    }

    #[test]
    fn alertmanager_payloads_keep_their_text_with_nul_characters_replaced() {
        let raw = json!({"receiver": "soc", "alert": {"annotations": {"cmd": "a\u{0}b"},
                         "labels": {"k\u{0}": ["x", "\u{0}"]}, "n": 1}});
        let fitted = fit_raw(raw);
        assert!(!sems_domain::alert::contains_nul(&fitted));
        assert_eq!(
            fitted,
            json!({"receiver": "soc", "alert": {"annotations": {"cmd": "a\u{fffd}b"},
                   "labels": {"k\u{fffd}": ["x", "\u{fffd}"]}, "n": 1}})
        );
        let clean = json!({"receiver": "soc", "alert": {"status": "firing"}});
        assert_eq!(fit_raw(clean.clone()), clean);
    }

    #[test]
    fn the_path_of_the_first_value_nested_too_deep_is_named() {
        let deep = |levels: usize| {
            (1..levels).fold(json!({"leaf": 1}), |inner, _| json!({ "more": inner }))
        };
        // The event wraps its custom details two levels deep: 62 of theirs make 64.
        let event = |details| json!({"payload": {"custom_details": details}, "links": []});
        assert_eq!(too_deep_path(&event(deep(62)), 64), None);
        let path = too_deep_path(&event(deep(63)), 64).unwrap();
        assert_eq!(
            path,
            format!("payload.custom_details{}", ".more".repeat(62))
        );
        assert_eq!(
            too_deep_path(&json!({"links": [[[1]]]}), 3).as_deref(),
            Some("links[0][0]")
        );
    }

    #[test]
    fn the_path_of_a_nul_character_is_named() {
        assert_eq!(nul_path(&json!({"a": ["x", "y"]})), None);
        assert_eq!(
            nul_path(&json!({"payload": {"custom_details": {"cmd": "a\u{0}"}}})).as_deref(),
            Some("payload.custom_details.cmd")
        );
        assert_eq!(
            nul_path(&json!({"links": [{"href": "ok"}, {"href": "b\u{0}"}]})).as_deref(),
            Some("links[1].href")
        );
        assert_eq!(
            nul_path(&json!({"client": {"k\u{0}": 1}})).as_deref(),
            Some("client.k\\0")
        );
    }

    #[test]
    fn tokens_compare_in_constant_time_and_exactly() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
    }
}
