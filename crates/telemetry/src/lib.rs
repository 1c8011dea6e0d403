//! tracing and OpenTelemetry for every SeMS process, and W3C trace-context propagation over
//! gRPC metadata and NATS headers (as plain key/value pairs, so this crate depends on
//! neither tonic nor async-nats).
//!
//! Spans always carry OpenTelemetry trace ids, so the trace context is recorded in every
//! commit even when nothing is exported; spans are exported over OTLP/gRPC only when an
//! endpoint is configured. The same goes for the metrics of [`metrics()`] (appends, rejected
//! commands, projector progress and lag), exported every 15 s.

mod metrics;

pub use metrics::{Metrics, metrics, test_metrics};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TraceFlags, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{LevelFilter, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// Target of the spans that only an exported trace shows (one per append, where a call's
/// span already carries the trace context its commits record). They are `DEBUG` spans under
/// this target, recorded only when an OTLP endpoint is configured: with nothing exported
/// (and a log filter that does not ask for them) they are never created, so they cost
/// nothing.
pub const DETAIL: &str = "sems::detail";

/// Telemetry settings.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint (e.g. `http://127.0.0.1:4317`); `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    pub log_filter: String,
}

/// Keeps the tracer provider alive; dropping it (or [`TelemetryGuard::shutdown`]) flushes
/// spans not yet exported.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    meters: opentelemetry_sdk::metrics::SdkMeterProvider,
}

impl TelemetryGuard {
    /// Flushes and stops exporting.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {e}");
        }
        if let Err(e) = self.meters.shutdown() {
            eprintln!("metrics shutdown: {e}");
        }
    }
}

/// Installs the global subscriber (logs to stderr, OpenTelemetry layer) and the W3C
/// trace-context propagator.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let provider = provider(config)?;
    let tracer = provider.tracer("sems");
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans reach OpenTelemetry whatever the log filter says, so the trace context is never
    // lost by turning logs down.
    let otel = otel_layer(tracer).with_filter(otel_filter(exporting(config)));
    // Colours only for a person at a terminal who has not asked for none (`NO_COLOR`): a
    // journal, a file or a pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init()?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let meters = metrics::provider(config)?;
    opentelemetry::global::set_meter_provider(meters.clone());
    Ok(TelemetryGuard { provider, meters })
}

/// Installs the OpenTelemetry layer only (no log output), for tests; idempotent.
pub fn init_for_tests() {
    if let Ok(provider) = provider(&TelemetryConfig::default()) {
        let layer = otel_layer(provider.tracer("sems-test")).with_filter(otel_filter(false));
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let logs = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(filter);
        let _ = tracing_subscriber::registry()
            .with(layer)
            .with(logs)
            .try_init();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        metrics::install_for_tests();
        // Keep the provider for the whole test process.
        std::mem::forget(provider);
    }
}

/// The OpenTelemetry layer, kept cheap for spans entered on every poll of a future: no
/// busy/idle timings and no thread attributes (two clock reads and allocations per span), and
/// no activation of the OpenTelemetry context on entry (nothing here reads
/// `opentelemetry::Context::current()`; trace context is taken from the span itself).
fn otel_layer<S>(
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false)
}

/// What reaches OpenTelemetry: spans at `INFO` and above (every call's span, whose trace
/// context each commit records, and each projector batch), and the [`DETAIL`] spans as well
/// when they are exported.
fn otel_filter(exporting: bool) -> Targets {
    let filter = Targets::new().with_default(LevelFilter::INFO);
    if exporting {
        filter.with_target(DETAIL, LevelFilter::DEBUG)
    } else {
        filter
    }
}

fn exporting(config: &TelemetryConfig) -> bool {
    config
        .otlp_endpoint
        .as_deref()
        .is_some_and(|e| !e.is_empty())
}

fn resource(config: &TelemetryConfig) -> Resource {
    let name = if config.service_name.is_empty() {
        "sems".to_owned()
    } else {
        config.service_name.clone()
    };
    Resource::builder().with_service_name(name).build()
}

fn provider(config: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(config));
    let endpoint = config.otlp_endpoint.as_deref().filter(|e| !e.is_empty());
    if endpoint.is_none() {
        // Nothing exports spans: do not record them. Spans still get ids (non-recording), so
        // every commit still carries the trace context of the call that made it.
        builder = builder.with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff);
    }
    if let Some(endpoint) = endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The `traceparent` and `tracestate` of a span, when it has a valid trace context.
pub fn trace_context_of(span: &Span) -> Option<(String, Option<String>)> {
    let cx = span.context();
    headers_of(cx.span().span_context())
}

/// The W3C headers of a span context, as `TraceContextPropagator` writes them, without its
/// `format!` of the ids (a tenth of a unary call's telemetry instructions) and without a map
/// to collect them in.
fn headers_of(sc: &SpanContext) -> Option<(String, Option<String>)> {
    if !sc.is_valid() {
        return None;
    }
    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    push_hex(&mut traceparent, &sc.trace_id().to_bytes());
    traceparent.push('-');
    push_hex(&mut traceparent, &sc.span_id().to_bytes());
    traceparent.push('-');
    push_hex(
        &mut traceparent,
        &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
    );
    let tracestate = Some(sc.trace_state().header()).filter(|s| !s.is_empty());
    Some((traceparent, tracestate))
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Makes `span` a child of the remote context in `traceparent`/`tracestate` (a call from a
/// traced client). Does nothing when the header is absent or malformed.
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(cx) = remote_context(traceparent, tracestate) {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the remote context (used by projectors, so a rebuild does not attach
/// itself to months-old traces).
pub fn link_remote(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(cx) = remote_context(traceparent, tracestate) {
        span.add_link_with_attributes(
            cx.span().span_context().clone(),
            vec![KeyValue::new("sems.link", "commit")],
        );
    }
}

fn remote_context(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Context> {
    let traceparent = traceparent?;
    let mut pairs = Pairs::default();
    pairs.0.push(("traceparent".into(), traceparent.into()));
    if let Some(ts) = tracestate {
        pairs.0.push(("tracestate".into(), ts.into()));
    }
    let cx = TraceContextPropagator::new().extract(&pairs);
    cx.span().span_context().is_valid().then_some(cx)
}

#[derive(Default)]
struct Pairs(Vec<(String, String)>);

impl Pairs {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

impl Extractor for Pairs {
    fn get(&self, key: &str) -> Option<&str> {
        Pairs::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_spans_reach_opentelemetry_only_when_exported() {
        use tracing::Level;
        let quiet = otel_filter(false);
        let exported = otel_filter(true);
        assert!(!quiet.would_enable(DETAIL, &Level::DEBUG));
        assert!(exported.would_enable(DETAIL, &Level::DEBUG));
        // Everything else is the same either way: call and batch spans always, no debug
        // spans of other targets.
        for filter in [&quiet, &exported] {
            assert!(filter.would_enable("semsd::grpc", &Level::INFO));
            assert!(filter.would_enable("sems_readmodel::projector", &Level::INFO));
            assert!(!filter.would_enable("sems_eventlog::jetstream", &Level::DEBUG));
            assert!(!filter.would_enable("h2::proto", &Level::DEBUG));
        }
        assert!(exporting(&TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            ..TelemetryConfig::default()
        }));
        assert!(!exporting(&TelemetryConfig {
            otlp_endpoint: Some(String::new()),
            ..TelemetryConfig::default()
        }));
        assert!(!exporting(&TelemetryConfig::default()));
    }

    /// The headers are the propagator's, byte for byte: ids of every size, both flags, with
    /// and without a trace state.
    #[test]
    fn headers_are_written_as_the_propagator_writes_them() {
        use opentelemetry::trace::{SpanId, TraceId, TraceState};
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..2_000u32 {
            let trace_id = (u128::from(next()) << 64 | u128::from(next())) >> (i % 128);
            let span_id = next() >> (i % 64);
            let flags = TraceFlags::new((next() % 4) as u8);
            let state = if i % 3 == 0 {
                TraceState::from_key_value([("vendor", format!("v{i}")), ("other", "x".into())])
                    .unwrap()
            } else {
                TraceState::default()
            };
            let sc = SpanContext::new(
                TraceId::from(trace_id.max(1)),
                SpanId::from(span_id.max(1)),
                flags,
                true,
                state,
            );
            let mut pairs = Pairs::default();
            TraceContextPropagator::new().inject_context(
                &Context::new().with_remote_span_context(sc.clone()),
                &mut pairs,
            );
            let expected = (
                pairs.get("traceparent").unwrap().to_owned(),
                pairs
                    .get("tracestate")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            assert_eq!(headers_of(&sc), Some(expected), "{sc:?}");
        }
        assert_eq!(headers_of(&SpanContext::empty_context()), None);
    }

    #[test]
    fn a_remote_parent_is_carried_to_children() {
        init_for_tests();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!("call");
        set_remote_parent(&span, Some(parent), None);
        let (traceparent, _) = trace_context_of(&span).unwrap();
        assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            !traceparent.contains("00f067aa0ba902b7"),
            "child has its own span id"
        );
        assert!(remote_context(Some("garbage"), None).is_none());
    }
}
