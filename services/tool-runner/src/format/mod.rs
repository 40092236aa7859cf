//! What the model reads: Codex's truncation (Codex: `codex-rs/utils/output-truncation/src/lib.rs`), its shell
//! output layouts (Codex: `codex-rs/core/src/tools/mod.rs`) and the unified exec layout (Codex: `codex-rs/core/src/unified_exec/`). Pure functions,
//! so the exact texts are unit-tested.

mod shell;
mod unified;

pub use keel_tool_model::truncate::{
    DEFAULT_TOKEN_BUDGET, TruncationPolicy, cut_at_char_boundary, formatted_truncate,
    truncate_middle,
};
pub use shell::{FormatError, freeform_shell_output, structured_shell_output};
pub use unified::{DEFAULT_MAX_OUTPUT_TOKENS, UnifiedExecOutput, new_chunk_id};
