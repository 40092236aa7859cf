//! Prometheus metrics: calls by provider, model and outcome; failures by
//! class (retried ones too); retries; latency to the first vendor event and
//! in total; tokens; calls in flight. Served with the server's gRPC metrics
//! on `GET /metrics` when `--metrics-listen` is set.

use std::time::Duration;

use keel_proto::v1::TokenUsage;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric the proxy records; cheap to share.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    retries: IntCounterVec,
    first_byte: HistogramVec,
    duration: HistogramVec,
    tokens: IntCounterVec,
    cost: prometheus::CounterVec,
    in_flight: IntGaugeVec,
    queued: IntGaugeVec,
}

impl Metrics {
    /// Metrics in a registry of their own.
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::in_registry(Registry::new())
    }

    /// Metrics registered in `registry` (a server's, beside its gRPC
    /// metrics).
    pub fn in_registry(registry: Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let requests = counter(
            "keel_model_requests_total",
            "Model calls, by provider, model and outcome (ok or the failure class).",
            &["provider", "model", "outcome"],
        )?;
        let errors = counter(
            "keel_model_errors_total",
            "Failed vendor attempts and calls, retried or not, by failure class.",
            &["provider", "class"],
        )?;
        let retries = counter(
            "keel_model_retries_total",
            "Retries: `request` (silent, HTTP 5xx and connection errors) or `stream` (whole request, with stream_error).",
            &["provider", "kind"],
        )?;
        let first_byte = histogram(
            "keel_model_time_to_first_byte_seconds",
            "From the start of a call to the first event from the vendor, retries included.",
            &["provider", "model"],
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0],
        )?;
        let duration = histogram(
            "keel_model_request_duration_seconds",
            "Whole model calls, by outcome.",
            &["provider", "model", "outcome"],
            &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0],
        )?;
        let tokens = counter(
            "keel_model_tokens_total",
            "Tokens of completed calls, by kind: input, cached_input, output, reasoning_output.",
            &["provider", "model", "kind"],
        )?;
        let cost = prometheus::CounterVec::new(
            Opts::new(
                "keel_model_cost_usd_total",
                "What completed calls cost in US dollars, by the prices in the configuration's [model_prices] (models without a price are not counted).",
            ),
            &["provider", "model"],
        )?;
        registry.register(Box::new(cost.clone()))?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "keel_model_calls_in_flight",
                "Calls holding a provider slot.",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        let queued = IntGaugeVec::new(
            Opts::new(
                "keel_model_calls_queued",
                "Calls waiting for a provider slot.",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(queued.clone()))?;
        Ok(Self {
            registry,
            requests,
            errors,
            retries,
            first_byte,
            duration,
            tokens,
            cost,
            in_flight,
            queued,
        })
    }

    /// Creates the provider's gauges at 0, so a scrape shows every provider
    /// before its first call.
    pub fn provider(&self, provider: &str) {
        self.in_flight.with_label_values(&[provider]).set(0);
        self.queued.with_label_values(&[provider]).set(0);
    }

    /// A finished call: `outcome` is `ok` or a failure class.
    pub fn call(&self, provider: &str, model: &str, outcome: &str, took: Duration) {
        self.requests
            .with_label_values(&[provider, model, outcome])
            .inc();
        self.duration
            .with_label_values(&[provider, model, outcome])
            .observe(took.as_secs_f64());
    }

    pub fn error(&self, provider: &str, class: &str) {
        self.errors.with_label_values(&[provider, class]).inc();
    }

    pub fn retry(&self, provider: &str, kind: &str) {
        self.retries.with_label_values(&[provider, kind]).inc();
    }

    pub fn first_byte(&self, provider: &str, model: &str, took: Duration) {
        self.first_byte
            .with_label_values(&[provider, model])
            .observe(took.as_secs_f64());
    }

    pub fn tokens(&self, provider: &str, model: &str, usage: &TokenUsage) {
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("cached_input", usage.cached_input_tokens),
            ("output", usage.output_tokens),
            ("reasoning_output", usage.reasoning_output_tokens),
        ] {
            self.tokens
                .with_label_values(&[provider, model, kind])
                .inc_by(n);
        }
    }

    /// Adds what a completed call cost at `price` (none: not counted).
    pub fn cost(
        &self,
        provider: &str,
        model: &str,
        usage: &TokenUsage,
        price: Option<&crate::config::Price>,
    ) {
        if let Some(price) = price {
            self.cost
                .with_label_values(&[provider, model])
                .inc_by(price.cost_usd(usage));
        }
    }

    /// Counts a call in flight until the guard drops.
    pub fn in_flight(&self, provider: &str) -> GaugeGuard {
        GaugeGuard::new(self.in_flight.with_label_values(&[provider]))
    }

    /// Counts a call waiting for a slot until the guard drops.
    pub fn queued(&self, provider: &str) -> GaugeGuard {
        GaugeGuard::new(self.queued.with_label_values(&[provider]))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        keel_server::metrics::render(&self.registry)
    }

    /// The registry the metrics are in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Holds a gauge one higher while it lives.
pub struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders() {
        let m = Metrics::new().unwrap();
        m.call("openai", "gpt", "ok", Duration::from_millis(1500));
        m.error("openai", "rate_limited");
        m.retry("openai", "stream");
        m.first_byte("openai", "gpt", Duration::from_millis(80));
        m.tokens(
            "openai",
            "gpt",
            &TokenUsage {
                input_tokens: 10,
                cached_input_tokens: 4,
                output_tokens: 3,
                reasoning_output_tokens: 1,
                total_tokens: 13,
            },
        );
        {
            let _guard = m.in_flight("openai");
            assert!(
                m.render()
                    .contains("keel_model_calls_in_flight{provider=\"openai\"} 1")
            );
        }
        let text = m.render();
        for line in [
            "keel_model_requests_total{model=\"gpt\",outcome=\"ok\",provider=\"openai\"} 1",
            "keel_model_errors_total{class=\"rate_limited\",provider=\"openai\"} 1",
            "keel_model_retries_total{kind=\"stream\",provider=\"openai\"} 1",
            "keel_model_tokens_total{kind=\"cached_input\",model=\"gpt\",provider=\"openai\"} 4",
            "keel_model_time_to_first_byte_seconds_count{model=\"gpt\",provider=\"openai\"} 1",
            "keel_model_request_duration_seconds_bucket{model=\"gpt\",outcome=\"ok\",provider=\"openai\",le=\"2\"} 1",
            "keel_model_calls_in_flight{provider=\"openai\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
