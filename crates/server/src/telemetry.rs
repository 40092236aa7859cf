//! Log lines and traces, the same way in every Keel process.
//!
//! - **Logs** go to stderr, filtered by `RUST_LOG` (default `info`), as text
//!   or as one JSON object per line (`--log-format json`). A JSON line
//!   carries the fields of every span it happened in (`session_id`,
//!   `turn_id`, `call_id`, …) and, while tracing is on, the `trace_id` and
//!   `span_id` it belongs to.
//! - **Traces** are exported over OTLP when the standard OpenTelemetry
//!   variables ask for it (see [`TraceExport::from_env`]); otherwise no
//!   tracer, propagator or span layer is installed at all.
//!
//! Context crosses Keel's gRPC hops as W3C `traceparent`/`tracestate` (and
//! `baggage`) metadata: [`Traced`] puts the current context on a client's
//! calls, and every server's [`crate::metrics::GrpcMetricsLayer`] starts its
//! call's span from the caller's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator as _,
};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider, SpanProcessor,
};
use tracing::Subscriber;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::LogFormat;

static TRACING: AtomicBool = AtomicBool::new(false);

/// The W3C baggage entry that carries a turn's id along its trace (set by
/// the workflow; JSON log lines show it as `turn_id`).
pub const TURN_ID_BAGGAGE: &str = "keel.turn_id";

/// Whether this process exports traces (and so propagates context).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// How traces leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (a collector's port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, `/v1/traces`).
    HttpProtobuf,
}

/// Whether and how to export traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceExport {
    Off,
    Otlp(Protocol),
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}={value:?} is not supported: use one of {allowed}")]
    UnknownExporter {
        var: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error(
        "{var}={value:?}: OTLP over gRPC with TLS is not built in; use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for an https endpoint, or a plaintext collector endpoint (http://)"
    )]
    GrpcTls { var: &'static str, value: String },
    #[error(
        "{var}={value:?} is not supported: use \"grpc\" or \"http/protobuf\" (http/json is not built in)"
    )]
    Protocol { var: &'static str, value: String },
    #[error("cannot build the OTLP trace exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

impl TraceExport {
    /// Reads the OpenTelemetry SDK's standard variables
    /// (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>):
    ///
    /// - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: off;
    /// - `OTEL_TRACES_EXPORTER=otlp`, or unset while
    ///   `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    ///   is set: on; otherwise off (no endpoint, nothing to send to);
    /// - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
    ///   `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf` (the
    ///   default, as the specification says).
    ///
    /// The exporter reads the endpoint, headers, timeout and compression
    /// variables itself; the batch processor its `OTEL_BSP_*` ones; the
    /// resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self::Off);
        }
        let exporters = var("OTEL_TRACES_EXPORTER");
        match exporters.as_deref().map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("none") => return Ok(Self::Off),
            Some(v) if v.eq_ignore_ascii_case("otlp") => {}
            Some(v) => {
                return Err(TelemetryError::UnknownExporter {
                    var: "OTEL_TRACES_EXPORTER",
                    value: v.to_string(),
                    allowed: "\"otlp\" or \"none\" (Keel exports traces over OTLP only)",
                });
            }
            None => {
                if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
                    && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
                {
                    return Ok(Self::Off);
                }
            }
        }
        let protocol = protocol_from_vars(
            &var,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )?;
        if protocol == Protocol::Grpc {
            refuse_grpc_tls(
                &var,
                &[
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                ],
            )?;
        }
        Ok(Self::Otlp(protocol))
    }
}

/// Refuses an `https://` endpoint for OTLP over gRPC (the first of
/// `vars` that is set), which this build cannot speak.
pub(crate) fn refuse_grpc_tls(
    var: &impl Fn(&str) -> Option<String>,
    vars: &[&'static str],
) -> Result<(), TelemetryError> {
    if let Some((name, value)) = vars.iter().find_map(|n| var(n).map(|v| (*n, v)))
        && value.trim().to_ascii_lowercase().starts_with("https:")
    {
        return Err(TelemetryError::GrpcTls { var: name, value });
    }
    Ok(())
}

/// The OTLP protocol the signal's own variable (`specific`), else the
/// general one, names; `http/protobuf` when neither is set.
pub(crate) fn protocol_from_vars(
    var: &impl Fn(&str) -> Option<String>,
    specific: &'static str,
    general: &'static str,
) -> Result<Protocol, TelemetryError> {
    let (name, protocol) = match var(specific) {
        Some(p) => (specific, Some(p)),
        None => (general, var(general)),
    };
    match protocol.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
        Some("grpc") => Ok(Protocol::Grpc),
        Some(other) => Err(TelemetryError::Protocol {
            var: name,
            value: other.to_string(),
        }),
    }
}

/// The tracer provider a process exports through. Keep it for the life of
/// the process: dropping it sends what is still buffered and stops the
/// exporter.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // On a thread of its own: the export may need the runtime this
            // thread belongs to (the gRPC exporter's connection).
            let done = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "traces not all exported at shutdown");
            }
        }
    }
}

/// Builds the OTLP exporter and a provider that batches into it; `wrap`
/// may put the batch processor inside another (the worker's replay filter),
/// `ids` generates span and trace ids.
pub fn tracer_provider<P, F, I>(
    service: &str,
    protocol: Protocol,
    wrap: F,
    ids: I,
) -> Result<SdkTracerProvider, TelemetryError>
where
    P: SpanProcessor + 'static,
    F: FnOnce(BatchSpanProcessor) -> P,
    I: IdGenerator + 'static,
{
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = match protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build()?,
        Protocol::HttpProtobuf => {
            // The HTTP client is reqwest over rustls, which needs a crypto
            // provider; every Keel process uses ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?
        }
    };
    let batch = BatchSpanProcessor::builder(exporter).build();
    // `OTEL_SERVICE_NAME` (or `service.name` in OTEL_RESOURCE_ATTRIBUTES)
    // wins over the process's own name.
    let named_by_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let resource = if named_by_env {
        opentelemetry_sdk::Resource::builder().build()
    } else {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_string())
            .build()
    };
    // The sampler `OTEL_TRACES_SAMPLER` names (default: parent-based,
    // always on), quieted.
    let sampler = Quiet(opentelemetry_sdk::trace::Config::default().sampler);
    Ok(SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(wrap(batch))
        .with_id_generator(ids)
        .with_resource(resource)
        .build())
}

/// Spans that start a trace only to say a background loop ran: session-api
/// reading a session's events after a worker's notice (the Temporal
/// plugin's query spans, and so the worker's handling of the query). They
/// are recorded inside a trace that is already sampled, never as roots.
const QUIET_ROOTS: [&str; 2] = ["QueryWorkflow:", "HandleQuery:"];

/// Drops [`QUIET_ROOTS`] that have no parent and leaves every other
/// decision to `0`.
#[derive(Debug, Clone)]
struct Quiet(Box<dyn opentelemetry_sdk::trace::ShouldSample>);

impl opentelemetry_sdk::trace::ShouldSample for Quiet {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let parented = parent_context.is_some_and(|cx| cx.span().span_context().is_valid());
        if !parented && QUIET_ROOTS.iter().any(|prefix| name.starts_with(prefix)) {
            return opentelemetry_sdk::trace::SamplingResult {
                decision: opentelemetry_sdk::trace::SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// [`init_with`] with the SDK's own span processor and random ids.
pub fn init(service: &str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    init_with(service, format, |batch| batch, RandomIdGenerator::default())
}

/// Installs the process's log subscriber and, when [`TraceExport::from_env`]
/// says so, the OTLP tracer: as the global tracer provider (for code that
/// uses OpenTelemetry's API, such as the Temporal SDK's plugin) and as a
/// `tracing` layer, so `tracing` spans become OpenTelemetry spans.
///
/// Only spans from Keel's own crates (targets `keel…`) are exported; the
/// Temporal SDK's internal `tracing` spans are not (they would be most of
/// the volume and none of the story). The log filter (`RUST_LOG`) does not
/// change which spans are exported.
pub fn init_with<P, F, I>(
    service: &str,
    format: LogFormat,
    wrap: F,
    ids: I,
) -> Result<Telemetry, TelemetryError>
where
    P: SpanProcessor + 'static,
    F: FnOnce(BatchSpanProcessor) -> P,
    I: IdGenerator + 'static,
{
    let export = TraceExport::from_env()?;
    let provider = match export {
        TraceExport::Off => None,
        TraceExport::Otlp(protocol) => Some(tracer_provider(service, protocol, wrap, ids)?),
    };
    let otel_layer = provider.as_ref().map(|provider| {
        install(provider);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("keel"))
            .with_location(false)
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("keel")
                    && *meta.level() <= tracing::Level::INFO
            }))
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // A second init (tests starting several servers in one process) keeps
    // the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel_layer)
        .try_init();
    if provider.is_some() {
        tracing::info!(?export, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Makes `provider` the process's global tracer provider, with
/// [`propagator`], and turns propagation on ([`tracing_enabled`]).
/// [`init_with`] does this when traces are exported; tests that collect
/// spans in memory call it themselves.
pub fn install(provider: &SdkTracerProvider) {
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(propagator());
    TRACING.store(true, Ordering::Relaxed);
}

/// W3C trace context and baggage, as Temporal's SDKs propagate them too.
pub fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// The longest `tracestate` kept in a [`current_trace_carrier`] map; a
/// longer one (a client may send 16 KiB of it) is dropped.
const MAX_TRACESTATE: usize = 512;

/// The current span as W3C `traceparent` (and `tracestate`, when short),
/// for carrying it where no metadata goes: a few hundred bytes at most, no
/// baggage. Empty when tracing is off or nothing is being traced.
pub fn current_trace_carrier() -> BTreeMap<String, String> {
    let mut carrier = MapCarrier::default();
    if tracing_enabled() {
        let cx = opentelemetry::Context::current();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        }
    }
    carrier
        .0
        .retain(|k, v| k == "traceparent" || (k == "tracestate" && v.len() <= MAX_TRACESTATE));
    carrier.0
}

/// The context a [`current_trace_carrier`] map carries (an empty context
/// for an empty or unreadable map).
pub fn context_from_carrier(carrier: &BTreeMap<String, String>) -> opentelemetry::Context {
    if carrier.is_empty() || !tracing_enabled() {
        return opentelemetry::Context::new();
    }
    let carrier = MapCarrier(carrier.clone());
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

#[derive(Default)]
struct MapCarrier(BTreeMap<String, String>);

impl Injector for MapCarrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Extractor for MapCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Reads trace context from an incoming request's headers.
pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The context a server call continues: the caller's, from its metadata.
pub(crate) fn extract_parent(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// A gRPC client channel that sends the current trace context with every
/// call (nothing while tracing is off). Wrap a channel once where it is
/// built: `ModelServiceClient::new(Traced::new(channel))`.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for Traced<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if tracing_enabled() {
            let cx = opentelemetry::Context::current();
            if cx.span().span_context().is_valid() {
                opentelemetry::global::get_text_map_propagator(|p| {
                    p.inject_context(&cx, &mut HeaderInjector(request.headers_mut()))
                });
            }
        }
        self.inner.call(request)
    }
}

/// One JSON object per log line: time, level, target, the message and the
/// event's fields, the fields of every span it happened in (innermost wins
/// on a clash), and while tracing is on `trace_id`/`span_id` of the current
/// span and the `turn_id` its trace carries as baggage.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        let meta = event.metadata();
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(serde_json::Value::Object(fields)) =
                        serde_json::from_str::<serde_json::Value>(fields.as_str())
                {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        if tracing_enabled() {
            use opentelemetry::baggage::BaggageExt as _;
            let cx = opentelemetry::Context::current();
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                line.insert("trace_id".into(), sc.trace_id().to_string().into());
                line.insert("span_id".into(), sc.span_id().to_string().into());
            }
            if let Some(turn) = cx.baggage().get(TURN_ID_BAGGAGE) {
                line.entry("turn_id")
                    .or_insert_with(|| turn.as_str().to_string().into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn export_follows_the_standard_variables() {
        let on = |p| Ok::<_, ()>(TraceExport::Otlp(p));
        let read = |pairs: &[(&str, &str)]| TraceExport::from_vars(vars(pairs)).map_err(|_| ());
        assert_eq!(read(&[]), Ok(TraceExport::Off));
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
            on(Protocol::HttpProtobuf)
        );
        assert_eq!(
            read(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            on(Protocol::Grpc)
        );
        // The per-signal protocol wins.
        assert_eq!(
            read(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ]),
            on(Protocol::HttpProtobuf)
        );
        assert_eq!(
            read(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_EXPORTER", "none")
            ]),
            Ok(TraceExport::Off)
        );
        assert_eq!(
            read(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "true")
            ]),
            Ok(TraceExport::Off)
        );
        let err = TraceExport::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("http/protobuf"), "{err}");
        let err = TraceExport::from_vars(vars(&[("OTEL_TRACES_EXPORTER", "zipkin")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_TRACES_EXPORTER=\"zipkin\""), "{err}");
        let err = TraceExport::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("http/json"), "{err}");
    }
}
