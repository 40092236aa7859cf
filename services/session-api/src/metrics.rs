//! session-api's own metrics, beside its gRPC ones: how long a durable event
//! takes from the workflow task that emitted it to a following client, and
//! how long requests wait for a person (or a client) to answer them. Labels
//! are fixed sets (the request kind), never sessions.

use std::time::{Duration, SystemTime};

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct ApiMetrics {
    delivery: Histogram,
    answer_wait: HistogramVec,
    sessions: IntGaugeVec,
}

impl ApiMetrics {
    /// Metrics registered in `registry` (the server's).
    pub fn in_registry(registry: &Registry) -> Result<Self, prometheus::Error> {
        let delivery = Histogram::with_opts(
            HistogramOpts::new(
                "keel_event_delivery_lag_seconds",
                "From the workflow time of a durable event to its delivery to a client following the session live (replays of older events are not counted).",
            )
            .buckets(vec![
                0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let answer_wait = HistogramVec::new(
            HistogramOpts::new(
                "keel_request_answer_wait_seconds",
                "From a request (approval, question, dynamic tool, elicitation) to its accepted answer, by kind.",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86_400.0,
            ]),
            &["kind"],
        )?;
        let sessions = IntGaugeVec::new(
            Opts::new(
                "keel_sessions",
                "Open sessions of every tenant by status (idle, running, waiting), as Temporal's visibility store showed them at the last count (every replica counts the same sessions: aggregate with max, not sum).",
            ),
            &["status"],
        )?;
        registry.register(Box::new(delivery.clone()))?;
        registry.register(Box::new(answer_wait.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        Ok(Self {
            delivery,
            answer_wait,
            sessions,
        })
    }

    /// The open sessions by status, as just counted.
    pub(crate) fn sessions_counted(&self, counts: &SessionCounts) {
        for (status, n) in [
            ("idle", counts.idle),
            ("running", counts.running),
            ("waiting", counts.waiting),
        ] {
            self.sessions.with_label_values(&[status]).set(n);
        }
    }

    /// A live event with workflow time `emitted` goes out now.
    pub(crate) fn delivered(&self, emitted: Option<&prost_types::Timestamp>) {
        if let Some(lag) = emitted.and_then(since) {
            self.delivery.observe(lag.as_secs_f64());
        }
    }

    /// A request of `kind`, asked at `asked_ms` (Unix milliseconds), got its
    /// answer now.
    pub(crate) fn answered(&self, kind: keel_workflow_api::RequestKind, asked_ms: u64) {
        if asked_ms == 0 {
            return;
        }
        let asked = SystemTime::UNIX_EPOCH + Duration::from_millis(asked_ms);
        if let Ok(waited) = SystemTime::now().duration_since(asked) {
            self.answer_wait
                .with_label_values(&[kind_label(kind)])
                .observe(waited.as_secs_f64());
        }
    }
}

/// Open sessions by the status their workflow's memo shows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionCounts {
    pub idle: i64,
    pub running: i64,
    pub waiting: i64,
}

fn since(ts: &prost_types::Timestamp) -> Option<Duration> {
    let at = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(ts.seconds).ok()?)
        + Duration::from_nanos(u64::try_from(ts.nanos).ok()?);
    SystemTime::now().duration_since(at).ok()
}

fn kind_label(kind: keel_workflow_api::RequestKind) -> &'static str {
    use keel_workflow_api::RequestKind as K;
    match kind {
        K::ExecApproval => "exec_approval",
        K::PatchApproval => "patch_approval",
        K::UserInput => "user_input",
        K::DynamicTool => "dynamic_tool",
        K::Elicitation => "elicitation",
    }
}
