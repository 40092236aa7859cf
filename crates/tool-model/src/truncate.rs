//! Codex's middle truncation (`codex-rs/utils/string/src/truncate.rs`): keep
//! the head and tail of a long output, which is where commands print what
//! matters (the command echo and the final error), and say how much went.

/// The token budget catalog models get (`Tokens(10000)`). The one place it is
/// defined.
pub const DEFAULT_TOKEN_BUDGET: usize = 10_000;

/// Codex estimates a token as four bytes.
const APPROX_BYTES_PER_TOKEN: usize = 4;

/// How much of a tool output the model may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationPolicy {
    /// Roughly `n` tokens, i.e. `4n` bytes; the marker counts tokens.
    Tokens(usize),
    /// `n` bytes; the marker counts dropped characters.
    Bytes(usize),
}

impl Default for TruncationPolicy {
    fn default() -> Self {
        Self::Tokens(DEFAULT_TOKEN_BUDGET)
    }
}

impl TruncationPolicy {
    /// The byte budget B of Codex's truncation
    /// (`codex-rs/utils/output-truncation/src/lib.rs`).
    pub fn byte_budget(self) -> usize {
        match self {
            Self::Tokens(n) => n.saturating_mul(APPROX_BYTES_PER_TOKEN),
            Self::Bytes(n) => n,
        }
    }
}

/// Plain middle truncation: text within the budget is returned unchanged,
/// otherwise `head…<N> tokens truncated…tail` (or `chars`), cut on character
/// boundaries, with no added newlines.
pub fn truncate_middle(text: &str, policy: TruncationPolicy) -> String {
    let budget = policy.byte_budget();
    if text.len() <= budget {
        return text.to_string();
    }
    let len = text.len();
    let head_budget = budget / 2;
    // `len > budget`, so this cannot underflow, and it lies past the head
    // budget: head and tail never overlap.
    let tail_start_target = len - (budget - head_budget);

    let mut head_end = 0;
    let mut tail_start = len;
    let mut removed_chars: usize = 0;
    for (idx, ch) in text.char_indices() {
        let char_end = idx + ch.len_utf8();
        if char_end <= head_budget {
            head_end = char_end;
        } else if idx >= tail_start_target {
            tail_start = idx;
            break;
        } else {
            removed_chars += 1;
        }
    }

    let marker = match policy {
        TruncationPolicy::Tokens(_) => {
            let removed_bytes = len - budget;
            format!(
                "…{} tokens truncated…",
                removed_bytes.div_ceil(APPROX_BYTES_PER_TOKEN)
            )
        }
        TruncationPolicy::Bytes(_) => format!("…{removed_chars} chars truncated…"),
    };
    let mut out = String::with_capacity(head_end + marker.len() + (len - tail_start));
    out.push_str(&text[..head_end]);
    out.push_str(&marker);
    out.push_str(&text[tail_start..]);
    out
}

/// Middle truncation for structured shell output and generic texts: when the
/// text is cut, it is prefixed `Total output lines: <T>\n\n` with T the
/// original line count, so the model knows how much it did not see.
pub fn formatted_truncate(text: &str, policy: TruncationPolicy) -> String {
    if text.len() <= policy.byte_budget() {
        return text.to_string();
    }
    let total_lines = text.lines().count();
    format!(
        "Total output lines: {total_lines}\n\n{}",
        truncate_middle(text, policy)
    )
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a
/// character boundary. For display previews, not for the model.
pub fn cut_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}

/// Content items (`input_text`, `input_image`, …) of one output, cut to
/// the budget as Codex cuts several text items
/// (`codex-rs/utils/output-truncation/src/lib.rs`): text items are charged
/// in order, the one that crosses the budget is middle-truncated, later ones
/// are dropped and counted in a final `[omitted <k> text items ...]`, and
/// every other item (images) is kept.
pub fn truncate_items(
    items: Vec<serde_json::Value>,
    policy: TruncationPolicy,
) -> Vec<serde_json::Value> {
    let mut remaining = policy.byte_budget();
    let mut omitted = 0usize;
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        let is_text = item.get("type").and_then(serde_json::Value::as_str) == Some("input_text");
        let text = item.get("text").and_then(serde_json::Value::as_str);
        match (is_text, text) {
            (true, Some(text)) if text.len() <= remaining => {
                remaining -= text.len();
                out.push(item);
            }
            (true, Some(_)) if remaining == 0 => omitted += 1,
            (true, Some(text)) => {
                let cut = match policy {
                    TruncationPolicy::Tokens(_) => {
                        TruncationPolicy::Tokens(remaining / APPROX_BYTES_PER_TOKEN)
                    }
                    TruncationPolicy::Bytes(_) => TruncationPolicy::Bytes(remaining),
                };
                let text = truncate_middle(text, cut);
                remaining = 0;
                item["text"] = serde_json::Value::String(text);
                out.push(item);
            }
            _ => out.push(item),
        }
    }
    if omitted > 0 {
        out.push(serde_json::json!({
            "type": "input_text",
            "text": format!("[omitted {omitted} text items ...]"),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_ten_thousand_tokens() {
        assert_eq!(
            TruncationPolicy::default(),
            TruncationPolicy::Tokens(10_000)
        );
        assert_eq!(TruncationPolicy::default().byte_budget(), 40_000);
        assert_eq!(TruncationPolicy::Bytes(7).byte_budget(), 7);
    }

    #[test]
    fn short_text_is_unchanged() {
        for policy in [TruncationPolicy::Tokens(3), TruncationPolicy::Bytes(12)] {
            assert_eq!(truncate_middle("hello world!", policy), "hello world!");
            assert_eq!(formatted_truncate("hello world!", policy), "hello world!");
            assert_eq!(truncate_middle("", policy), "");
        }
    }

    #[test]
    fn token_marker_counts_removed_bytes_rounded_up() {
        // 26 bytes, budget 8 bytes: head 4, tail 4, 18 bytes over → ⌈18/4⌉ = 5.
        let text = "abcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            truncate_middle(text, TruncationPolicy::Tokens(2)),
            "abcd…5 tokens truncated…wxyz"
        );
    }

    #[test]
    fn char_marker_counts_dropped_characters() {
        // Budget 9: head ⌊9/2⌋ = 4 bytes, tail 5 bytes.
        let text = "abcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            truncate_middle(text, TruncationPolicy::Bytes(9)),
            "abcd…17 chars truncated…vwxyz"
        );
    }

    #[test]
    fn cuts_fall_on_char_boundaries() {
        // Each "é" is 2 bytes; 10 of them are 20 bytes. Budget 7: the head may
        // end at byte 3 but only whole chars fit, so 1 char (2 bytes); the tail
        // starts at byte ≥ 16 → 2 chars. 7 chars dropped.
        let text = "é".repeat(10);
        assert_eq!(
            truncate_middle(&text, TruncationPolicy::Bytes(7)),
            "é…7 chars truncated…éé"
        );
        // Tokens: 20 − 8 = 12 bytes over → 3 tokens; head 4 bytes, tail 4.
        assert_eq!(
            truncate_middle(&text, TruncationPolicy::Tokens(2)),
            "éé…3 tokens truncated…éé"
        );
        // A 4-byte char straddling both cut points is dropped whole.
        assert_eq!(
            truncate_middle("a😀b", TruncationPolicy::Bytes(3)),
            "a…1 chars truncated…b"
        );
    }

    #[test]
    fn zero_budget_keeps_only_the_marker() {
        assert_eq!(
            truncate_middle("abcdefghi", TruncationPolicy::Tokens(0)),
            "…3 tokens truncated…"
        );
        assert_eq!(
            truncate_middle("héllo", TruncationPolicy::Bytes(0)),
            "…5 chars truncated…"
        );
    }

    #[test]
    fn formatted_truncation_prefixes_the_original_line_count() {
        let text = "line1\nline2\nline3\nline4\n";
        assert_eq!(
            formatted_truncate(text, TruncationPolicy::Bytes(10)),
            "Total output lines: 4\n\nline1…14 chars truncated…ine4\n"
        );
        assert_eq!(
            formatted_truncate(text, TruncationPolicy::Tokens(2)),
            "Total output lines: 4\n\nline…4 tokens truncated…ne4\n"
        );
    }

    #[test]
    fn default_budget_boundary() {
        let at_budget = "x".repeat(40_000);
        assert_eq!(
            formatted_truncate(&at_budget, TruncationPolicy::default()),
            at_budget
        );
        let over = "x".repeat(40_001);
        let out = formatted_truncate(&over, TruncationPolicy::default());
        assert!(
            out.starts_with("Total output lines: 1\n\n"),
            "{}",
            &out[..40]
        );
        assert!(out.contains("…1 tokens truncated…"));
        assert_eq!(out.matches('x').count(), 40_000);
    }

    #[test]
    fn preview_cut_respects_char_boundaries() {
        assert_eq!(cut_at_char_boundary("héllo", 2), "h");
        assert_eq!(cut_at_char_boundary("héllo", 3), "hé");
        assert_eq!(cut_at_char_boundary("héllo", 100), "héllo");
        assert_eq!(cut_at_char_boundary("", 0), "");
    }

    #[test]
    fn several_text_items_share_one_budget_and_images_stay() {
        use serde_json::json;
        let text = |t: &str| json!({"type": "input_text", "text": t});
        let image = json!({"type": "input_image", "image_url": "data:image/png;base64,AAAA"});
        let items = vec![
            text("aaaa"),
            image.clone(),
            text(&"b".repeat(20)),
            text("cccc"),
            text("dddd"),
        ];
        let out = truncate_items(items, TruncationPolicy::Bytes(10));
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[0], text("aaaa"));
        assert_eq!(out[1], image);
        let cut = out[2]["text"].as_str().unwrap();
        assert!(
            cut.starts_with("bbb") && cut.contains("chars truncated"),
            "{cut}"
        );
        assert_eq!(out[3], text("[omitted 2 text items ...]"));
        let whole = vec![text("short")];
        assert_eq!(
            truncate_items(whole.clone(), TruncationPolicy::default()),
            whole
        );
    }
}
