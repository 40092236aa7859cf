//! The unified exec output layout (`exec_command` / `write_stdin`,
//! Codex's `codex-rs/core/src/unified_exec/`):
//!
//! ```text
//! Chunk ID: <6 hex>                        (if any)
//! Wall time: <s.ssss> seconds
//! Process exited with code <n>             (if it ended during this call)
//! Process running with session ID <id>     (if it is still alive)
//! Original token count: <n>                (if the output was truncated)
//! Output:
//! <body, formatted truncation>
//! ```

use std::time::Duration;

use keel_tool_model::truncate::{TruncationPolicy, formatted_truncate};

/// Codex's default `max_output_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct UnifiedExecOutput<'a> {
    /// Empty: no `Chunk ID` line (an intercepted apply_patch has none).
    pub chunk_id: &'a str,
    pub wall_time: Duration,
    pub exit_code: Option<i32>,
    pub process_id: Option<i32>,
    pub output: &'a str,
    /// The call's `max_output_tokens`; the model's policy still caps it.
    pub max_output_tokens: Option<usize>,
}

/// A fresh chunk id: six lowercase hex digits.
pub fn new_chunk_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    hex[..6].to_string()
}

impl UnifiedExecOutput<'_> {
    pub fn render(&self, policy: TruncationPolicy) -> String {
        let requested = self
            .max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
            .saturating_mul(4);
        let budget = requested.min(policy.byte_budget());
        let body_policy = TruncationPolicy::Tokens(budget / 4);
        let body = formatted_truncate(self.output, body_policy);

        let mut sections = Vec::new();
        if !self.chunk_id.is_empty() {
            sections.push(format!("Chunk ID: {}", self.chunk_id));
        }
        sections.push(format!(
            "Wall time: {:.4} seconds",
            self.wall_time.as_secs_f64()
        ));
        if let Some(code) = self.exit_code {
            sections.push(format!("Process exited with code {code}"));
        }
        if let Some(id) = self.process_id {
            sections.push(format!("Process running with session ID {id}"));
        }
        if body != self.output {
            sections.push(format!(
                "Original token count: {}",
                self.output.len().div_ceil(4)
            ));
        }
        sections.push("Output:".to_string());
        sections.push(body);
        sections.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_process_layout() {
        let text = UnifiedExecOutput {
            chunk_id: "a1b2c3",
            wall_time: Duration::from_millis(1234),
            process_id: Some(4242),
            output: "building\n",
            ..Default::default()
        }
        .render(TruncationPolicy::default());
        assert_eq!(
            text,
            "Chunk ID: a1b2c3\nWall time: 1.2340 seconds\nProcess running with session ID 4242\nOutput:\nbuilding\n"
        );
    }

    #[test]
    fn exited_process_layout() {
        let text = UnifiedExecOutput {
            chunk_id: "ffffff",
            wall_time: Duration::from_micros(50),
            exit_code: Some(2),
            output: "",
            ..Default::default()
        }
        .render(TruncationPolicy::default());
        assert_eq!(
            text,
            "Chunk ID: ffffff\nWall time: 0.0001 seconds\nProcess exited with code 2\nOutput:\n"
        );
    }

    #[test]
    fn truncation_reports_the_original_token_count() {
        let output = "line\n".repeat(10);
        let text = UnifiedExecOutput {
            chunk_id: "",
            wall_time: Duration::ZERO,
            exit_code: Some(0),
            output: &output,
            max_output_tokens: Some(3),
            ..Default::default()
        }
        .render(TruncationPolicy::default());
        assert_eq!(
            text,
            "Wall time: 0.0000 seconds\nProcess exited with code 0\nOriginal token count: 13\nOutput:\nTotal output lines: 10\n\nline\nl…10 tokens truncated…\nline\n"
        );
        // The model's policy caps a larger request.
        let text = UnifiedExecOutput {
            output: &output,
            max_output_tokens: Some(1_000_000),
            ..Default::default()
        }
        .render(TruncationPolicy::Tokens(3));
        assert!(text.contains("Original token count: 13\n"), "{text}");
    }

    #[test]
    fn chunk_ids_are_six_hex_digits() {
        let id = new_chunk_id();
        assert_eq!(id.len(), 6);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
