//! The tool-runner's own metrics, beside its gRPC ones: tool calls by tool
//! and outcome, their durations, and sandbox denials. The `tool` label is
//! one of the tools the runner knows (anything else is `unknown`), so a
//! caller cannot grow the label set.

use std::time::Duration;

use keel_tool_model::names;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::tools::ToolOutcome;

#[derive(Debug, Clone)]
pub struct ToolMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
}

/// How a call ended, for the `outcome` label.
pub(crate) fn outcome_label(outcome: &ToolOutcome, aborted: bool) -> &'static str {
    if aborted {
        "aborted"
    } else if outcome.sandbox_denied {
        "sandbox_denied"
    } else if outcome.success {
        "success"
    } else {
        "failure"
    }
}

/// The `tool` label of a call of `name`.
pub(crate) fn tool_label(name: &str) -> &'static str {
    [
        names::SHELL,
        names::CONTAINER_EXEC,
        names::LOCAL_SHELL,
        names::SHELL_COMMAND,
        names::EXEC_COMMAND,
        names::WRITE_STDIN,
        names::APPLY_PATCH,
        names::READ_FILE,
        names::LIST_DIR,
        names::GREP_FILES,
        names::VIEW_IMAGE,
    ]
    .into_iter()
    .find(|known| *known == name)
    .unwrap_or("unknown")
}

impl ToolMetrics {
    /// Metrics registered in `registry` (the server's).
    pub fn in_registry(registry: &Registry) -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "keel_tool_calls_total",
                "Tool calls run, by tool and outcome (success, failure, sandbox_denied, aborted).",
            ),
            &["tool", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "keel_tool_call_duration_seconds",
                "Tool calls from start to output, by tool.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            ]),
            &["tool"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { calls, duration })
    }

    pub(crate) fn call(&self, tool: &str, outcome: &'static str, took: Duration) {
        let tool = tool_label(tool);
        self.calls.with_label_values(&[tool, outcome]).inc();
        self.duration
            .with_label_values(&[tool])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_known_tool_and_outcome() {
        let registry = Registry::new();
        let m = ToolMetrics::in_registry(&registry).unwrap();
        m.call("shell", "success", Duration::from_millis(20));
        m.call("made-up-tool-name", "failure", Duration::from_millis(1));
        let mut denied = ToolOutcome::failure("denied".into());
        denied.sandbox_denied = true;
        assert_eq!(outcome_label(&denied, false), "sandbox_denied");
        assert_eq!(outcome_label(&denied, true), "aborted");
        let text = keel_server::metrics::render(&registry);
        assert!(
            text.contains("keel_tool_calls_total{outcome=\"success\",tool=\"shell\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keel_tool_calls_total{outcome=\"failure\",tool=\"unknown\"} 1"),
            "{text}"
        );
        assert!(!text.contains("made-up"), "{text}");
    }
}
