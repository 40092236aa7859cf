//! Spans the workflow records itself, for the parts of a turn no activity
//! covers: the turn as a whole and each wait for a person's answer.
//!
//! A span is recorded once its end is known, with its start taken from
//! workflow time, so one that began before a worker crashed is still
//! recorded whole by the worker that sees it end. Its parent is the turn's
//! context (the `user_turn` signal's span, see [`turn_context`]). Span ids
//! come from the Temporal plugin's replay-safe generator and spans started
//! while replaying are dropped by its span processor (worker `main`), so a
//! replay records nothing twice.

use std::collections::BTreeMap;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};

/// The context a queued turn's spans and activities belong to: the one its
/// `user_turn` signal carried, with the turn's id as W3C baggage
/// (`keel.turn_id`), so the services' log lines in the turn name it (empty
/// while tracing is off).
pub(crate) fn turn_context(
    carrier: &BTreeMap<String, String>,
    turn_id: &str,
) -> opentelemetry::Context {
    use opentelemetry::baggage::BaggageExt as _;
    if !keel_server::telemetry::tracing_enabled() {
        return opentelemetry::Context::new();
    }
    keel_server::telemetry::context_from_carrier(carrier).with_baggage([KeyValue::new(
        keel_server::telemetry::TURN_ID_BAGGAGE,
        turn_id.to_string(),
    )])
}

/// Records a finished span as a child of the current context.
pub(super) fn record(
    name: &'static str,
    start: Option<SystemTime>,
    end: Option<SystemTime>,
    attributes: Vec<KeyValue>,
) {
    if !keel_server::telemetry::tracing_enabled() {
        return;
    }
    let (Some(start), Some(end)) = (start, end) else {
        return;
    };
    let tracer = opentelemetry::global::tracer("keel-worker");
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start(&tracer);
    span.end_with_timestamp(end);
}
