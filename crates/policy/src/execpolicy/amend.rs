//! Amendments: the rule text that `approved_execpolicy_amendment` appends
//! to `default.rules` (Codex: `codex-rs/execpolicy/`, `codex-rs/protocol/src/protocol.rs`).

use thiserror::Error;

/// An amendment could not be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AmendError {
    /// An amendment needs at least the program.
    #[error("prefix rule requires at least one token")]
    EmptyPrefix,
}

/// The line Codex appends for an approved amendment, e.g.
/// `prefix_rule(pattern=["cargo", "test"], decision="allow")`. Tokens are
/// written as JSON strings, which `.rules` files read back unchanged.
/// Appending is the caller's job (this crate does no I/O); Codex skips the
/// append when an identical line is already in the file.
pub fn amendment_rule_text(prefix: &[String]) -> Result<String, AmendError> {
    if prefix.is_empty() {
        return Err(AmendError::EmptyPrefix);
    }
    let tokens: Vec<String> = prefix
        .iter()
        .map(|token| serde_json::Value::String(token.clone()).to_string())
        .collect();
    Ok(format!(
        "prefix_rule(pattern=[{}], decision=\"allow\")",
        tokens.join(", ")
    ))
}
