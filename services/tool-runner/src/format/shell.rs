//! The two layouts Codex gives shell-like tool outputs
//! (`codex-rs/core/src/tools/mod.rs`).

use std::time::Duration;

use serde::Serialize;

use keel_tool_model::truncate::{TruncationPolicy, formatted_truncate, truncate_middle};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot serialise the shell output: {0}")]
    Json(#[from] serde_json::Error),
}

/// Codex rounds in `f32` (`(secs * 10).round() / 10`) and serialises that
/// `f32`, which prints the shortest form (`0.3`, not `0.30000001192092896`).
fn rounded_seconds(duration: Duration) -> f32 {
    (duration.as_secs_f32() * 10.0).round() / 10.0
}

/// `{"output":"<body>","metadata":{"exit_code":<n>,"duration_seconds":<s.s>}}`
/// with the body under formatted truncation. Used for `shell`,
/// `container.exec` and `local_shell`.
///
/// `body` is the aggregated output, already carrying the timeout line when
/// the command timed out.
pub fn structured_shell_output(
    body: &str,
    exit_code: i32,
    duration: Duration,
    policy: TruncationPolicy,
) -> Result<String, FormatError> {
    // A struct, not `json!`: field order is part of the text the model sees,
    // and a `serde_json::Map` may sort its keys.
    #[derive(Serialize)]
    struct Metadata {
        exit_code: i32,
        duration_seconds: f32,
    }
    #[derive(Serialize)]
    struct Payload<'a> {
        output: &'a str,
        metadata: Metadata,
    }
    let output = formatted_truncate(body, policy);
    Ok(serde_json::to_string(&Payload {
        output: &output,
        metadata: Metadata {
            exit_code,
            duration_seconds: rounded_seconds(duration),
        },
    })?)
}

/// The freeform layout, always used by `shell_command`:
///
/// ```text
/// Exit code: <n>
/// Wall time: <s> seconds
/// Total output lines: <T>      (only when truncation changed the line count)
/// Output:
/// <body, plain middle truncation>
/// ```
pub fn freeform_shell_output(
    body: &str,
    exit_code: i32,
    duration: Duration,
    policy: TruncationPolicy,
) -> String {
    let total_lines = body.lines().count();
    let truncated = truncate_middle(body, policy);
    let mut sections = vec![
        format!("Exit code: {exit_code}"),
        format!("Wall time: {} seconds", rounded_seconds(duration)),
    ];
    if total_lines != truncated.lines().count() {
        sections.push(format!("Total output lines: {total_lines}"));
    }
    sections.push("Output:".to_string());
    sections.push(truncated);
    sections.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn structured_layout_is_exact() {
        let text = structured_shell_output("hi\n", 0, ms(1234), TruncationPolicy::default());
        assert_eq!(
            text.unwrap(),
            r#"{"output":"hi\n","metadata":{"exit_code":0,"duration_seconds":1.2}}"#
        );
    }

    #[test]
    fn structured_layout_escapes_and_rounds() {
        let body = "a \"quote\"\ttab \\ back\u{1}";
        let text = structured_shell_output(body, -1, ms(250), TruncationPolicy::default()).unwrap();
        assert_eq!(
            text,
            r#"{"output":"a \"quote\"\ttab \\ back\u0001","metadata":{"exit_code":-1,"duration_seconds":0.3}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["output"], body);
        // Whole seconds keep one decimal, as Codex's f32 does.
        let text = structured_shell_output("", 124, ms(10_020), TruncationPolicy::default());
        assert_eq!(
            text.unwrap(),
            r#"{"output":"","metadata":{"exit_code":124,"duration_seconds":10.0}}"#
        );
    }

    #[test]
    fn structured_layout_uses_formatted_truncation() {
        let body = "0123456789\nabcdefghij\n";
        let text = structured_shell_output(body, 1, ms(0), TruncationPolicy::Bytes(10)).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed["output"],
            "Total output lines: 2\n\n01234…12 chars truncated…ghij\n"
        );
    }

    #[test]
    fn freeform_layout_short_output() {
        assert_eq!(
            freeform_shell_output("hi\n", 0, ms(320), TruncationPolicy::default()),
            "Exit code: 0\nWall time: 0.3 seconds\nOutput:\nhi\n"
        );
        assert_eq!(
            freeform_shell_output("", 2, ms(12_060), TruncationPolicy::default()),
            "Exit code: 2\nWall time: 12.1 seconds\nOutput:\n"
        );
        // Zero prints in its shortest form.
        assert_eq!(
            freeform_shell_output("x", 0, ms(10), TruncationPolicy::default()),
            "Exit code: 0\nWall time: 0 seconds\nOutput:\nx"
        );
    }

    #[test]
    fn freeform_layout_reports_lines_only_when_truncation_changed_them() {
        let body = "l1\nl2\nl3\nl4\nl5\n";
        assert_eq!(
            freeform_shell_output(body, 0, ms(0), TruncationPolicy::Bytes(6)),
            "Exit code: 0\nWall time: 0 seconds\nTotal output lines: 5\nOutput:\nl1\n…9 chars truncated…l5\n"
        );
    }
}
