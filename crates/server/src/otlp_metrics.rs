//! A process's Prometheus metrics, pushed over OTLP as well, for a
//! collector that takes OTLP instead of scraping (see
//! [`MetricsPush::from_env`]). Every `OTEL_METRIC_EXPORT_INTERVAL` the
//! registry is gathered and sent as cumulative OTLP metrics: counters as
//! monotonic sums, gauges as gauges, histograms as explicit-bucket
//! histograms, with the same names, help texts and labels as on `/metrics`.

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus::proto::{MetricFamily, MetricType};
use prost::Message as _;

use crate::telemetry::{Protocol, TelemetryError, protocol_from_vars};

/// Where and how often to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsPush {
    pub protocol: Protocol,
    /// The full URL: for HTTP with `/v1/metrics`.
    pub endpoint: String,
    pub interval: Duration,
    /// `OTEL_EXPORTER_OTLP_HEADERS` (or `…_METRICS_HEADERS`), e.g. a
    /// vendor's API key.
    pub headers: Vec<(String, String)>,
}

impl MetricsPush {
    /// The OpenTelemetry SDK's standard variables, as for traces:
    /// `OTEL_METRICS_EXPORTER` `otlp` (on), `none` or `prometheus` (off: the
    /// `/metrics` endpoint is Prometheus'); unset, on when an OTLP endpoint
    /// is set (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, taken as is, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, plus `/v1/metrics` over HTTP); the
    /// protocol from `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` or
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`; every `OTEL_METRIC_EXPORT_INTERVAL`
    /// milliseconds (60000).
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub(crate) fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let specific = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let general = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        match var("OTEL_METRICS_EXPORTER").as_deref().map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("prometheus") => {
                return Ok(None);
            }
            Some(v) if v.eq_ignore_ascii_case("otlp") => {}
            Some(v) => {
                return Err(TelemetryError::UnknownExporter {
                    var: "OTEL_METRICS_EXPORTER",
                    value: v.to_string(),
                    allowed: "\"otlp\", \"prometheus\" or \"none\"",
                });
            }
            None if specific.is_none() && general.is_none() => return Ok(None),
            None => {}
        }
        let protocol = protocol_from_vars(
            &var,
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )?;
        let endpoint = match (specific, general, protocol) {
            (Some(url), _, _) => url,
            (None, Some(base), Protocol::HttpProtobuf) => {
                format!("{}/v1/metrics", base.trim_end_matches('/'))
            }
            (None, Some(base), Protocol::Grpc) => base,
            (None, None, Protocol::HttpProtobuf) => "http://localhost:4318/v1/metrics".into(),
            (None, None, Protocol::Grpc) => "http://localhost:4317".into(),
        };
        if protocol == Protocol::Grpc {
            crate::telemetry::refuse_grpc_tls(
                &var,
                &[
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                ],
            )?;
        }
        let interval = var("OTEL_METRIC_EXPORT_INTERVAL")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let headers = var("OTEL_EXPORTER_OTLP_METRICS_HEADERS")
            .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|h| {
                h.split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Self {
            protocol,
            endpoint,
            interval,
            headers,
        }))
    }

    /// Pushes `registry` every interval until the process ends.
    pub fn spawn(self, registry: prometheus::Registry) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let start = unix_nanos(SystemTime::now());
            let resource = resource();
            let mut grpc = None;
            // reqwest over rustls needs a crypto provider; Keel uses ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let http = match reqwest::Client::builder().build() {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot push metrics over OTLP: no HTTP client");
                    return;
                }
            };
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let metrics = convert(&registry.gather(), start, unix_nanos(SystemTime::now()));
                let request = ExportMetricsServiceRequest {
                    resource_metrics: vec![otlp::ResourceMetrics {
                        resource: Some(resource.clone()),
                        scope_metrics: vec![otlp::ScopeMetrics {
                            scope: Some(InstrumentationScope {
                                name: "keel".into(),
                                ..Default::default()
                            }),
                            metrics,
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    }],
                };
                let sent = match self.protocol {
                    Protocol::Grpc => self.send_grpc(&mut grpc, request).await,
                    Protocol::HttpProtobuf => self.send_http(&http, request).await,
                };
                if let Err(e) = sent {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "cannot push metrics over OTLP");
                }
            }
        })
    }

    async fn send_grpc(
        &self,
        client: &mut Option<MetricsServiceClient<tonic::transport::Channel>>,
        request: ExportMetricsServiceRequest,
    ) -> Result<(), String> {
        if client.is_none() {
            let channel = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect_lazy();
            *client = Some(MetricsServiceClient::new(channel));
        }
        let Some(client) = client.as_mut() else {
            return Err("no client".into());
        };
        let mut request = tonic::Request::new(request);
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                v.parse(),
            ) {
                request.metadata_mut().insert(k, v);
            }
        }
        client
            .export(request)
            .await
            .map(|_| ())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }

    async fn send_http(
        &self,
        client: &reqwest::Client,
        request: ExportMetricsServiceRequest,
    ) -> Result<(), String> {
        let mut post = client
            .post(&self.endpoint)
            .header("content-type", "application/x-protobuf")
            .timeout(Duration::from_secs(10))
            .body(request.encode_to_vec());
        for (k, v) in &self.headers {
            post = post.header(k, v);
        }
        let response = post.send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status()))
        }
    }
}

/// The process as an OTLP resource, as the SDK builds one for traces: the
/// attributes of `OTEL_RESOURCE_ATTRIBUTES`, `service.name` from
/// `OTEL_SERVICE_NAME` (else the executable's name, `keel-session-api`, …),
/// and a `service.instance.id` that tells replicas apart (the host name, a
/// pod's name on Kubernetes, unless the variables set one).
fn resource() -> Resource {
    let mut attributes: std::collections::BTreeMap<String, String> =
        std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .filter(|(k, _)| !k.is_empty())
            .collect();
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
    {
        attributes.insert("service.name".into(), name);
    }
    attributes.entry("service.name".into()).or_insert_with(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "keel".into())
    });
    attributes
        .entry("service.instance.id".into())
        .or_insert_with(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("pid-{}", std::process::id()))
        });
    Resource {
        attributes: attributes.iter().map(|(k, v)| text(k, v)).collect(),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Prometheus metric families as cumulative OTLP metrics since `start`.
pub(crate) fn convert(families: &[MetricFamily], start: u64, now: u64) -> Vec<otlp::Metric> {
    use otlp::number_data_point::Value;
    let cumulative = otlp::AggregationTemporality::Cumulative as i32;
    let point = |m: &prometheus::proto::Metric, value: f64| otlp::NumberDataPoint {
        attributes: m
            .get_label()
            .iter()
            .map(|l| text(l.name(), l.value()))
            .collect(),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(Value::AsDouble(value)),
        ..Default::default()
    };
    families
        .iter()
        .filter_map(|family| {
            let metrics = family.get_metric();
            let data = match family.get_field_type() {
                MetricType::COUNTER => otlp::metric::Data::Sum(otlp::Sum {
                    data_points: metrics
                        .iter()
                        .map(|m| point(m, m.get_counter().get_value()))
                        .collect(),
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
                MetricType::GAUGE => otlp::metric::Data::Gauge(otlp::Gauge {
                    data_points: metrics
                        .iter()
                        .map(|m| point(m, m.get_gauge().get_value()))
                        .collect(),
                }),
                MetricType::HISTOGRAM => otlp::metric::Data::Histogram(otlp::Histogram {
                    data_points: metrics
                        .iter()
                        .map(|m| {
                            let h = m.get_histogram();
                            let finite: Vec<_> = h
                                .get_bucket()
                                .iter()
                                .filter(|b| b.upper_bound().is_finite())
                                .collect();
                            // Prometheus counts cumulatively, OTLP per bucket
                            // (the last one above every bound).
                            let mut counts = Vec::with_capacity(finite.len() + 1);
                            let mut below = 0;
                            for b in &finite {
                                counts.push(b.cumulative_count().saturating_sub(below));
                                below = b.cumulative_count();
                            }
                            counts.push(h.get_sample_count().saturating_sub(below));
                            otlp::HistogramDataPoint {
                                attributes: point(m, 0.0).attributes,
                                start_time_unix_nano: start,
                                time_unix_nano: now,
                                count: h.get_sample_count(),
                                sum: Some(h.get_sample_sum()),
                                bucket_counts: counts,
                                explicit_bounds: finite.iter().map(|b| b.upper_bound()).collect(),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                }),
                // Keel registers no summaries or untyped metrics.
                MetricType::SUMMARY | MetricType::UNTYPED => return None,
            };
            Some(otlp::Metric {
                name: family.name().to_string(),
                description: family.help().to_string(),
                data: Some(data),
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_families_become_cumulative_otlp_metrics() {
        let registry = prometheus::Registry::new();
        let calls = prometheus::IntCounterVec::new(
            prometheus::Opts::new("calls_total", "Calls."),
            &["code"],
        )
        .unwrap();
        let open = prometheus::IntGauge::new("open", "Open.").unwrap();
        let took = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("took_seconds", "Took.").buckets(vec![0.1, 1.0]),
        )
        .unwrap();
        registry.register(Box::new(calls.clone())).unwrap();
        registry.register(Box::new(open.clone())).unwrap();
        registry.register(Box::new(took.clone())).unwrap();
        calls.with_label_values(&["OK"]).inc_by(3);
        open.set(2);
        for v in [0.05, 0.5, 0.7, 5.0] {
            took.observe(v);
        }
        let metrics = convert(&registry.gather(), 1, 2);
        let by_name = |n: &str| metrics.iter().find(|m| m.name == n).unwrap();
        match &by_name("calls_total").data {
            Some(otlp::metric::Data::Sum(s)) => {
                assert!(s.is_monotonic);
                let p = &s.data_points[0];
                assert_eq!(p.value, Some(otlp::number_data_point::Value::AsDouble(3.0)));
                assert_eq!(p.attributes[0].key, "code");
                assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1, 2));
            }
            other => panic!("{other:?}"),
        }
        match &by_name("open").data {
            Some(otlp::metric::Data::Gauge(g)) => assert_eq!(
                g.data_points[0].value,
                Some(otlp::number_data_point::Value::AsDouble(2.0))
            ),
            other => panic!("{other:?}"),
        }
        match &by_name("took_seconds").data {
            Some(otlp::metric::Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
                assert_eq!(p.bucket_counts, vec![1, 2, 1]);
                assert_eq!(p.count, 4);
                assert_eq!(p.sum, Some(6.25));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn push_follows_the_standard_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(MetricsPush::from_vars(vars(&[])).unwrap(), None);
        let push = MetricsPush::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=k1, x=y"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(push.endpoint, "http://c:4318/v1/metrics");
        assert_eq!(push.protocol, Protocol::HttpProtobuf);
        assert_eq!(push.interval, Duration::from_secs(60));
        assert_eq!(
            push.headers,
            vec![("api-key".into(), "k1".into()), ("x".into(), "y".into())]
        );
        let push = MetricsPush::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(push.endpoint, "http://c:4317");
        assert_eq!(push.interval, Duration::from_millis(500));
        for off in ["none", "prometheus"] {
            let pairs: &'static [(&str, &str)] = if off == "none" {
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_METRICS_EXPORTER", "none"),
                ]
            } else {
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_METRICS_EXPORTER", "prometheus"),
                ]
            };
            assert_eq!(MetricsPush::from_vars(vars(pairs)).unwrap(), None);
        }
        assert!(MetricsPush::from_vars(vars(&[("OTEL_METRICS_EXPORTER", "statsd")])).is_err());
    }
}
