//! The metrics every SeMS process records (OpenTelemetry instruments on the global meter
//! provider): appends by outcome and their latency, commands refused at the edge, and each
//! projector's applied commits, batch latency, position and lag.

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
    data::{AggregatedMetrics, MetricData},
};

use crate::{TelemetryConfig, resource};

/// How often metrics are exported.
const EXPORT_EVERY: Duration = Duration::from_secs(15);

/// The instruments. Attribute keys are listed with each.
pub struct Metrics {
    /// `sems.appends` — commits offered to the event log; `aggregate`, `outcome`
    /// (`appended`, `duplicate`, `conflict`, `failed`).
    pub appends: Counter<u64>,
    /// `sems.append.duration` (s) — one append, retries of an unknown outcome included;
    /// `aggregate`.
    pub append_duration: Histogram<f64>,
    /// `sems.commands.rejected` — calls answered with an error; `code` (the gRPC status).
    pub rejected: Counter<u64>,
    /// `sems.projector.commits` — commits applied; `projection`.
    pub projector_commits: Counter<u64>,
    /// `sems.projector.batch.duration` (s) — write and commit of one batch; `projection`.
    pub projector_batch_duration: Histogram<f64>,
    /// `sems.projector.position` — the checkpoint; `projection`.
    pub projector_position: Gauge<u64>,
    /// `sems.projector.lag` — commits in the stream not yet delivered to the projection;
    /// `projection`.
    pub projector_lag: Gauge<u64>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The instruments, created on the global meter provider at first use (install telemetry
/// first, or they record into a no-op provider).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("sems");
        Metrics {
            appends: meter
                .u64_counter("sems.appends")
                .with_description("commits offered to the event log")
                .build(),
            append_duration: meter
                .f64_histogram("sems.append.duration")
                .with_unit("s")
                .with_description("latency of one append")
                .build(),
            rejected: meter
                .u64_counter("sems.commands.rejected")
                .with_description("calls answered with an error")
                .build(),
            projector_commits: meter
                .u64_counter("sems.projector.commits")
                .with_description("commits applied")
                .build(),
            projector_batch_duration: meter
                .f64_histogram("sems.projector.batch.duration")
                .with_unit("s")
                .with_description("write and commit of one projector batch")
                .build(),
            projector_position: meter
                .u64_gauge("sems.projector.position")
                .with_description("projector checkpoint")
                .build(),
            projector_lag: meter
                .u64_gauge("sems.projector.lag")
                .with_description("commits not yet delivered to the projection")
                .build(),
        }
    })
}

/// The meter provider of a process: exporting over OTLP/gRPC when an endpoint is set,
/// recording nothing anywhere otherwise.
pub(crate) fn provider(config: &TelemetryConfig) -> anyhow::Result<SdkMeterProvider> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource(config));
    if let Some(endpoint) = config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        builder = builder.with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(EXPORT_EVERY)
                .build(),
        );
    }
    Ok(builder.build())
}

static TEST_EXPORT: OnceLock<(SdkMeterProvider, InMemoryMetricExporter)> = OnceLock::new();

/// Installs a meter provider that keeps metrics in memory, for [`test_metrics`].
pub(crate) fn install_for_tests() {
    TEST_EXPORT.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(exporter.clone())
                    .with_interval(Duration::from_secs(3600))
                    .build(),
            )
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        (provider, exporter)
    });
}

/// For tests: every metric recorded so far in this process, summed over attributes —
/// counters and histograms (their sum) add up, gauges give their largest value. Empty
/// unless `init_for_tests` ran before the first instrument was used.
pub fn test_metrics() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some((provider, exporter)) = TEST_EXPORT.get() else {
        return out;
    };
    let _ = provider.force_flush();
    let Ok(batches) = exporter.get_finished_metrics() else {
        return out;
    };
    // Cumulative temporality: the last export holds the totals.
    let Some(last) = batches.last() else {
        return out;
    };
    for scope in last.scope_metrics() {
        for metric in scope.metrics() {
            let value = match metric.data() {
                AggregatedMetrics::U64(data) => summarise(data, |v| v as f64),
                AggregatedMetrics::F64(data) => summarise(data, |v| v),
                AggregatedMetrics::I64(data) => summarise(data, |v| v as f64),
            };
            out.insert(metric.name().to_owned(), value);
        }
    }
    out
}

fn summarise<T: Copy>(data: &MetricData<T>, f: impl Fn(T) -> f64) -> f64 {
    match data {
        MetricData::Sum(s) => s.data_points().map(|p| f(p.value())).sum(),
        MetricData::Gauge(g) => g.data_points().map(|p| f(p.value())).fold(0.0, f64::max),
        MetricData::Histogram(h) => h.data_points().map(|p| f(p.sum())).sum(),
        MetricData::ExponentialHistogram(h) => h.data_points().map(|p| f(p.sum())).sum(),
    }
}
