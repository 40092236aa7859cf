//! Prometheus metrics every Keel server has: the RED metrics of its gRPC
//! methods (requests by status code, durations, calls in flight), recorded
//! by a tower layer around the whole server, and `GET /metrics` to scrape
//! them. A service registers its own metrics in the same registry
//! ([`ServerMetrics::registry`]).
//!
//! Labels are the service and method of the call and the gRPC status code,
//! so their number is bounded by the API: a call of a path the server does
//! not serve is counted as service and method `unknown`.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use http_body::{Body, Frame};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

/// The server's registry and its gRPC RED metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
}

impl ServerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "keel_grpc_server_requests_total",
                "gRPC calls answered, by service, method and status code.",
            ),
            &["service", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "keel_grpc_server_request_duration_seconds",
                "gRPC calls from the request to the end of the response (a stream's last message), by service and method.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0,
            ]),
            &["service", "method"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "keel_grpc_server_in_flight",
                "gRPC calls being answered now (open streams included), by service and method.",
            ),
            &["service", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            registry,
            requests,
            duration,
            in_flight,
        })
    }

    /// Where a service registers its own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// The tower layer that records every call of a server serving
    /// `service_names` (Keel's, by full name) plus health and reflection.
    pub fn layer(&self, service_names: &[&str]) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: Arc::new(self.clone()),
            known: Arc::new(known_paths(service_names)),
        }
    }
}

/// Every `/service/method` path a server serving `service_names` answers.
fn known_paths(service_names: &[&str]) -> BTreeSet<String> {
    use prost::Message as _;
    let mut known: BTreeSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    // Keel's own descriptors; they always decode (checked by a test).
    let files = prost_types::FileDescriptorSet::decode(keel_proto::FILE_DESCRIPTOR_SET)
        .map(|set| set.file)
        .unwrap_or_default();
    for file in files {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let full = format!("{package}.{}", service.name.unwrap_or_default());
            if service_names.contains(&full.as_str()) {
                for method in service.method {
                    known.insert(format!("/{full}/{}", method.name.unwrap_or_default()));
                }
            }
        }
    }
    known
}

/// The `--metrics-listen` flags every Keel server takes.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on `http://ADDR/metrics` (off by default;
    /// port 0 picks a free port, see --metrics-addr-file).
    #[arg(long, env = "KEEL_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Once the metrics endpoint listens, write its address (host:port) to
    /// this file.
    #[arg(
        long,
        env = "KEEL_METRICS_ADDR_FILE",
        value_name = "FILE",
        requires = "metrics_listen"
    )]
    pub metrics_addr_file: Option<std::path::PathBuf>,
}

impl MetricsArgs {
    /// The server's metrics, served on `--metrics-listen` when it is set,
    /// and pushed over OTLP when the `OTEL_*` variables say so (see
    /// [`crate::otlp_metrics::MetricsPush::from_env`]).
    pub async fn start(&self) -> Result<ServerMetrics, crate::ServeError> {
        let metrics = ServerMetrics::new()?;
        // Pushed over OTLP too when the OTEL_* variables ask for it.
        if let Some(push) = crate::otlp_metrics::MetricsPush::from_env()? {
            tracing::info!(endpoint = %push.endpoint, interval_ms = push.interval.as_millis() as u64, "pushing metrics over OTLP");
            push.spawn(metrics.registry.clone());
        }
        if let Some(addr) = self.metrics_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| crate::ServeError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| crate::ServeError::Bind { addr, source })?;
            if let Some(path) = &self.metrics_addr_file {
                crate::write_addr_file(path, local)?;
            }
            tracing::info!(addr = %local, "serving Prometheus metrics on /metrics");
            let registry = metrics.registry.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_metrics(listener, registry).await {
                    tracing::error!(error = %e, "the metrics endpoint stopped");
                }
            });
        }
        Ok(metrics)
    }
}

/// Serves `GET /metrics` on `listener` until the process ends: everything
/// in `registry`, in Prometheus' text format.
pub async fn serve_metrics(listener: TcpListener, registry: Registry) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = render(&registry);
            async move { ([("content-type", "text/plain; version=0.0.4")], text) }
        }),
    );
    axum::serve(listener, app).await
}

/// Everything in `registry`, in Prometheus' text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// See [`ServerMetrics::layer`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<ServerMetrics>,
    known: Arc<BTreeSet<String>>,
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            known: self.known.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps a server in.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<ServerMetrics>,
    known: Arc<BTreeSet<String>>,
}

/// `/pkg.Service/Method` split into its labels, when `known` has it.
fn labels(known: &BTreeSet<String>, path: &str) -> (String, String) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if known.contains(path) => {
            (service.to_string(), method.to_string())
        }
        _ => ("unknown".to_string(), "unknown".to_string()),
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: Body + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = labels(&self.known, request.uri().path());
        let span = server_span(&service, &method, request.headers());
        let mut call = Call::start(self.metrics.clone(), service, method);
        let future = {
            let _entered = span.as_ref().map(|s| s.enter());
            self.inner.call(request)
        };
        let future: BoxFuture<Result<S::Response, S::Error>> = match &span {
            Some(span) => Box::pin(tracing::Instrument::instrument(future, span.clone())),
            None => Box::pin(future),
        };
        call.span = span;
        Box::pin(async move {
            let response = future.await?;
            // A trailers-only answer (an error before any message) carries
            // its status in the headers.
            if let Some(code) = response.headers().get("grpc-status") {
                call.finish(code.to_str().unwrap_or("unknown"));
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// The span a call of a served Keel method runs in while tracing is on
/// (health checks and reflection are not traced): a child of the caller's
/// span when its metadata carries `traceparent`, else a new trace. It ends
/// with the call's response body, so a stream's span lasts the stream.
fn server_span(service: &str, method: &str, headers: &http::HeaderMap) -> Option<tracing::Span> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !crate::telemetry::tracing_enabled() || !service.starts_with("keel.") {
        return None;
    }
    let mut parent = crate::telemetry::extract_parent(headers);
    // Clients' baggage stays outside: Keel's own (the turn id) must not be
    // something a client can set. Their trace is continued.
    if service == "keel.v1.SessionService" {
        parent = opentelemetry::Context::new()
            .with_remote_span_context(parent.span().span_context().clone());
    }
    // Background calls — the workers' notices and live deltas
    // (LiveService), their polls of the tool-runners (DescribeRunner) —
    // come many a minute from outside any trace; traced only when they
    // continue one.
    let background = service == "keel.v1.LiveService"
        || (service == "keel.v1.ToolService" && method == "DescribeRunner");
    if background && !parent.span().span_context().is_valid() {
        return None;
    }
    let span = tracing::info_span!(
        target: "keel_server",
        "grpc",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    Some(span)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One call being answered: counted in flight until it is finished (or
/// dropped, when the client went away).
struct Call {
    metrics: Arc<ServerMetrics>,
    service: String,
    method: String,
    started: Instant,
    done: bool,
    span: Option<tracing::Span>,
}

impl Call {
    fn start(metrics: Arc<ServerMetrics>, service: String, method: String) -> Self {
        metrics
            .in_flight
            .with_label_values(&[&service, &method])
            .inc();
        Self {
            metrics,
            service,
            method,
            started: Instant::now(),
            done: false,
            span: None,
        }
    }

    /// Records the call once, with its status code (the number, as gRPC
    /// sends it, or a word for a call that ended without one).
    fn finish(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let m = &self.metrics;
        m.in_flight
            .with_label_values(&[&self.service, &self.method])
            .dec();
        let labels = [self.service.as_str(), self.method.as_str()];
        m.requests
            .with_label_values(&[labels[0], labels[1], code_name(code)])
            .inc();
        m.duration
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(span) = self.span.take() {
            let name = code_name(code);
            let number = match code {
                "cancelled" => 1,
                c => c.parse::<i64>().unwrap_or(2),
            };
            span.record("rpc.grpc.status_code", number);
            // OpenTelemetry's rule for gRPC servers: these codes are the
            // server's failure, the others the caller's.
            if matches!(
                name,
                "Unknown"
                    | "DeadlineExceeded"
                    | "Unimplemented"
                    | "Internal"
                    | "Unavailable"
                    | "DataLoss"
            ) {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("cancelled");
    }
}

/// gRPC's name of a status code sent as its number.
fn code_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" | "cancelled" => "Cancelled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when it ends: at the trailers
    /// (with their `grpc-status`), at its end, or when dropped unfinished.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Call,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    this.call.finish(code.to_str().unwrap_or("unknown"));
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish("2"),
            // Ended without trailers: an HTTP-level answer, counted as OK.
            Poll::Ready(None) => this.call.finish("0"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_served_paths_are_labels() {
        let known = known_paths(&["keel.v1.SessionService"]);
        assert!(known.contains("/keel.v1.SessionService/StreamEvents"));
        assert!(known.contains("/keel.v1.SessionService/ForkSession"));
        assert!(!known.iter().any(|p| p.starts_with("/keel.v1.ToolService/")));
        assert_eq!(
            labels(&known, "/keel.v1.SessionService/StreamEvents"),
            ("keel.v1.SessionService".into(), "StreamEvents".into())
        );
        assert_eq!(
            labels(&known, "/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".into(), "Check".into())
        );
        for odd in [
            "",
            "/",
            "/keel.v1.SessionService/Bogus",
            "/keel.v1.ToolService/RunTool",
            "/made.Up/X",
        ] {
            assert_eq!(
                labels(&known, odd),
                ("unknown".into(), "unknown".into()),
                "{odd}"
            );
        }
    }

    #[test]
    fn a_call_is_counted_once_with_its_code() {
        let m = Arc::new(ServerMetrics::new().unwrap());
        let mut call = Call::start(m.clone(), "s.S".into(), "M".into());
        assert_eq!(m.in_flight.with_label_values(&["s.S", "M"]).get(), 1);
        call.finish("5");
        call.finish("0");
        drop(call);
        assert_eq!(m.in_flight.with_label_values(&["s.S", "M"]).get(), 0);
        assert_eq!(
            m.requests
                .with_label_values(&["s.S", "M", "NotFound"])
                .get(),
            1
        );
        assert_eq!(m.requests.with_label_values(&["s.S", "M", "OK"]).get(), 0);
        // Dropped unfinished: the client went away.
        drop(Call::start(m.clone(), "s.S".into(), "M".into()));
        assert_eq!(
            m.requests
                .with_label_values(&["s.S", "M", "Cancelled"])
                .get(),
            1
        );
        let text = m.render();
        assert!(
            text.contains("keel_grpc_server_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
