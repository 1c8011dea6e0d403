//! The gRPC edge: protobuf is parsed into domain types here, once, and application errors
//! become `tonic::Status` here, once ([`status`]).

mod alerts;
mod coalesce;
pub use alerts::{BULK_MAX_ALERTS, BULK_MAX_BYTES};
mod cmc;
mod convert;
mod incidents;
mod queries;
mod watch;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use sems_app::{AppError, CommandMeta, Sems, TraceContext};
use sems_proto::v1::{
    self as pb, alert_service_server::AlertServiceServer,
    cmc_query_service_server::CmcQueryServiceServer, crisis_service_server::CrisisServiceServer,
    handover_service_server::HandoverServiceServer,
    incident_query_service_server::IncidentQueryServiceServer,
    incident_service_server::IncidentServiceServer,
};
use sems_readmodel::CmcReadModel;
use tokio::net::TcpListener;
use tonic::{Code, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::{Span, error, info_span, warn};

/// The stop signal of an `Api` not (yet) served: never turns true, and stays open.
static NEVER_STOPPING: std::sync::LazyLock<tokio::sync::watch::Sender<bool>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(false).0);

/// State shared by every service.
#[derive(Clone)]
pub struct Api {
    sems: Arc<Sems>,
    reads: Arc<dyn CmcReadModel>,
    read_wait: Duration,
    acceptance_target: Duration,
    tokens: Tokens,
    /// Turns true when the server stops: long-lived streams (watches) end then.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The followers of watched crisis timelines.
    hub: Arc<watch::TimelineHub>,
}

impl Api {
    /// The API over the use cases and a read model.
    pub fn new(sems: Arc<Sems>, reads: Arc<dyn CmcReadModel>, read_wait: Duration) -> Self {
        Self {
            hub: watch::TimelineHub::new(reads.clone()),
            sems,
            reads,
            read_wait,
            acceptance_target: Duration::from_secs(900),
            tokens: Tokens::default(),
            stopping: NEVER_STOPPING.subscribe(),
        }
    }

    /// How long a handover may wait for the CMC before it is flagged overdue.
    pub fn with_acceptance_target(mut self, target: Duration) -> Self {
        self.acceptance_target = target;
        self
    }

    /// The callers' tokens: when there are any, every call must present one.
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Waits until the read model has applied what the caller asks to see (`min_position`,
    /// and with `latest` the log's last position as the query arrives), within the call's
    /// deadline (or the configured read wait when the call has none).
    async fn consistent(
        &self,
        extensions: &tonic::Extensions,
        consistency: Option<&pb::Consistency>,
    ) -> Result<(), Status> {
        let Some(c) = consistency else {
            return Ok(());
        };
        // Answer a little before the caller gives up, so it gets DEADLINE_EXCEEDED, not CANCELLED.
        let fallback = Instant::now() + self.read_wait;
        let deadline = extensions
            .get::<CallDeadline>()
            .map_or(fallback, |d| d.answer_by.min(fallback));
        let mut min_position = c.min_position;
        if c.latest {
            // Within the same deadline: the log may answer slowly (a JetStream request waits
            // up to its own time-out).
            let last =
                tokio::time::timeout_at(deadline.into(), self.sems.handler().last_position())
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded("the log's last position was not read in time")
                    })?;
            min_position = min_position.max(last.map_err(status)?);
        }
        if min_position == 0 {
            return Ok(());
        }
        self.reads
            .wait_for(min_position, deadline)
            .await
            .map_err(status)
    }
}

/// Serves every service, health and reflection on `listener` until `shutdown`.
pub async fn serve(
    mut api: Api,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Graceful shutdown waits for open calls: watches end when it starts.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    api.stopping = stopping;
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AlertServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<IncidentServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<IncidentQueryServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<HandoverServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<CrisisServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<CmcQueryServiceServer<Api>>()
        .await;
    let tokens = api.tokens.clone();
    // Both versions of reflection: grpcurl before 1.8.8, and many other tools, ask only for
    // `v1alpha`. The error details' types are reflected too, so a client can show the
    // `BadRequest` of a refusal (which fields, and why) without proto files. The three sets
    // share no file name; a file registered twice would keep its first copy, and a symbol
    // defined in two files its last, so a proto of ours must not import `google/rpc/*`
    // under another name than tonic-types' (`status.proto`, `error_details.proto`).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sems_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(tower::util::MapRequestLayer::new(
            record_timeout::<tonic::body::Body>,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(AlertServiceServer::with_interceptor(
            api.clone(),
            tokens.clone(),
        ))
        .add_service(IncidentServiceServer::with_interceptor(
            api.clone(),
            tokens.clone(),
        ))
        .add_service(IncidentQueryServiceServer::with_interceptor(
            api.clone(),
            tokens.clone(),
        ))
        .add_service(HandoverServiceServer::with_interceptor(
            api.clone(),
            tokens.clone(),
        ))
        .add_service(CrisisServiceServer::with_interceptor(
            api.clone(),
            tokens.clone(),
        ))
        .add_service(CmcQueryServiceServer::with_interceptor(api, tokens))
        .serve_with_incoming_shutdown(
            // `Server::tcp_nodelay` only reaches connections tonic accepts itself: set it on
            // these, or Nagle holds the tail of every multi-segment answer (a timeline page,
            // a watch's entries) until the client's delayed ACK, ~40 ms later.
            futures::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    conn.map(|c| {
                        let _ = c.set_nodelay(true);
                        coalesce::Coalescing::new(c)
                    })
                },
            ),
            shutdown,
        )
        .await?;
    Ok(())
}

/// The one mapping of application errors to gRPC statuses. Invalid input names the field
/// (also as a `BadRequest` field violation); internal details are logged, never returned.
pub fn status(e: AppError) -> Status {
    let status = to_status(e);
    sems_telemetry::metrics().rejected.add(
        1,
        &[opentelemetry::KeyValue::new(
            "code",
            format!("{:?}", status.code()),
        )],
    );
    status
}

fn to_status(e: AppError) -> Status {
    match e {
        AppError::Invalid { field, message } => Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid {field}: {message}"),
            ErrorDetails::with_bad_request_violation(field, message),
        ),
        AppError::NotFound(what) => Status::not_found(format!("{what} not found")),
        AppError::Precondition(why) => Status::failed_precondition(why),
        AppError::Aborted(what) => {
            Status::aborted(format!("concurrent changes to {what}; retry the command"))
        }
        AppError::NotCaughtUp(position) => Status::deadline_exceeded(format!(
            "read model has not reached position {position} yet; retry with a longer deadline"
        )),
        AppError::Unavailable(what) => {
            warn!(error = %what, "dependency unavailable");
            Status::unavailable("a backing service is unavailable; retry with the same request id")
        }
        AppError::Internal(what) => {
            error!(error = %what, "internal error");
            Status::internal("internal error")
        }
    }
}

/// A server span for one call, child of the caller's trace context when it sent one.
fn rpc_span(service: &str, method: &str, metadata: &MetadataMap) -> Span {
    let span = info_span!(
        "grpc.call",
        otel.name = format!("sems.v1.{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    let header = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok());
    sems_telemetry::set_remote_parent(&span, header("traceparent"), header("tracestate"));
    span
}

/// The authenticated principal of a call, when callers present tokens.
#[derive(Debug, Clone)]
pub(crate) struct Principal(pub String);

/// The principal a call was authenticated as (`None`: no tokens configured, so the
/// configured actor acts).
pub(crate) fn principal<T>(request: &tonic::Request<T>) -> Option<String> {
    request.extensions().get::<Principal>().map(|p| p.0.clone())
}

/// Callers' bearer tokens, by SHA-256, with the principal each stands for. Loaded from a
/// file of `<principal> sha256:<hex>` lines (`#` comments); the tokens themselves are never
/// stored. With none, calls are not authenticated and the configured actor acts.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<std::collections::HashMap<String, String>>);

impl Tokens {
    /// Parses a tokens file's text; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> anyhow::Result<Self> {
        let mut map = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hash) = line
                .split_once(char::is_whitespace)
                .and_then(|(name, rest)| Some((name, rest.trim().strip_prefix("sha256:")?)))
                .ok_or_else(|| {
                    anyhow::anyhow!("{path}:{}: expected `<principal> sha256:<hex>`", n + 1)
                })?;
            let hash = hash.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("{path}:{}: the hash is not 64 hex digits", n + 1);
            }
            if map.insert(hash, name.to_owned()).is_some() {
                anyhow::bail!("{path}:{}: the same token is listed twice", n + 1);
            }
        }
        Ok(Self(Arc::new(map)))
    }

    /// How many principals have tokens.
    pub fn principals(&self) -> usize {
        self.0.len()
    }
}

impl tonic::service::Interceptor for Tokens {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if self.0.is_empty() {
            return Ok(request);
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("send your token as `authorization: Bearer <token>`")
            })?;
        let principal = self
            .0
            .get(&sems_app::sha256_hex(token.trim().as_bytes()))
            .ok_or_else(|| Status::unauthenticated("unknown token"))?
            .clone();
        request.extensions_mut().insert(Principal(principal));
        Ok(request)
    }
}

/// Command metadata for the current call (gRPC or webhook): the caller, request id and
/// trace context.
pub(crate) fn command_meta(actor: Option<String>, request_id: Option<String>) -> CommandMeta {
    traced_command_meta(actor, request_id, current_trace_context())
}

/// The trace context of the current span (the call's), to record in its commits.
pub(crate) fn current_trace_context() -> Option<TraceContext> {
    sems_telemetry::trace_context_of(&Span::current()).map(|(traceparent, tracestate)| {
        TraceContext {
            traceparent: traceparent.into(),
            tracestate: tracestate.map(Into::into),
        }
    })
}

/// Command metadata with a trace context already taken (a bulk call takes it once for all its
/// commands: they share the call's span).
pub(crate) fn traced_command_meta(
    actor: Option<String>,
    request_id: Option<String>,
    trace_context: Option<TraceContext>,
) -> CommandMeta {
    CommandMeta {
        actor,
        request_id,
        trace_context,
        ..CommandMeta::default()
    }
}

/// When a call must be answered by, from its `grpc-timeout` (which tonic keeps out of the
/// metadata): a tenth of the timeout (at least 50 ms) before the caller gives up, leaving
/// room for the answer to travel back.
#[derive(Debug, Clone, Copy)]
struct CallDeadline {
    answer_by: Instant,
}

/// Records a call's deadline, as the call arrives, as a request extension.
fn record_timeout<B>(mut request: http::Request<B>) -> http::Request<B> {
    let timeout = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout);
    if let Some(t) = timeout {
        let margin = (t / 10).max(Duration::from_millis(50));
        request.extensions_mut().insert(CallDeadline {
            answer_by: Instant::now() + t.saturating_sub(margin),
        });
    }
    request
}

/// Parses a `grpc-timeout` value.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
    }

    #[test]
    fn invalid_input_names_the_field() {
        let s = status(AppError::Invalid {
            field: "alert.title".into(),
            message: "is required".into(),
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("alert.title"));
        let details = s.get_error_details();
        let violations = details.bad_request().unwrap();
        assert_eq!(violations.field_violations[0].field, "alert.title");
        let s = status(AppError::Internal("secret detail".into()));
        assert!(!s.message().contains("secret"));
    }
}

#[cfg(test)]
mod token_tests {
    use tonic::service::Interceptor;

    use super::*;

    fn call(tokens: &mut Tokens, authorization: Option<&str>) -> Result<Option<String>, Code> {
        let mut request = tonic::Request::new(());
        if let Some(a) = authorization {
            request
                .metadata_mut()
                .insert("authorization", a.parse().unwrap());
        }
        tokens
            .call(request)
            .map(|r| principal(&r))
            .map_err(|s| s.code())
    }

    #[test]
    fn a_token_stands_for_its_principal_and_anything_else_is_unauthenticated() {
        let hash = sems_app::sha256_hex(b"s3cret-tactical");
        let text = format!("# callers\ntom.tactical sha256:{hash}\n\n");
        let mut tokens = Tokens::parse("tokens", &text).unwrap();
        assert_eq!(tokens.principals(), 1);
        assert_eq!(
            call(&mut tokens, Some("Bearer s3cret-tactical")),
            Ok(Some("tom.tactical".into()))
        );
        assert_eq!(
            call(&mut tokens, Some("Bearer wrong")),
            Err(Code::Unauthenticated)
        );
        assert_eq!(call(&mut tokens, None), Err(Code::Unauthenticated));
        // Without tokens nobody is authenticated and the configured actor acts.
        assert_eq!(call(&mut Tokens::default(), None), Ok(None));
    }

    #[test]
    fn a_tokens_file_names_the_line_it_cannot_read() {
        let err = Tokens::parse("tokens", "ana plain-token\n").unwrap_err();
        assert!(err.to_string().contains("tokens:1"), "{err}");
        let err = Tokens::parse("tokens", "ana sha256:abc\n").unwrap_err();
        assert!(err.to_string().contains("64 hex"), "{err}");
    }
}
