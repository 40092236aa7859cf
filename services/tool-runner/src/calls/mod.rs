//! Exactly-once tool effects. Temporal retries the `run_tool` activity when a
//! worker dies mid-call or the network blips, so RunTool can arrive several
//! times for one model tool call. Every RunTool is keyed by
//! ([`CallKey`]: session id, call id), for every tool, and the key's first
//! arrival is the only one that runs anything:
//!
//! * while the call runs, a RunTool for its key attaches to the running
//!   execution and receives the same response when it finishes
//!   ([`registry`]);
//! * once it has finished, a RunTool for its key receives the recorded
//!   response at once ([`journal`]);
//! * the execution belongs to the tool-runner, not to the RPC that started
//!   it: a caller that goes away leaves it running to completion (bounded by
//!   the tool's own timeout), so that the retry after a worker crash gets the
//!   real result. Only CancelToolCall (or CloseToolSession) stops it; the call's
//!   result is then Codex's aborted output.
//!
//! # Across a restart: at most once
//!
//! Before a tool runs, its key is journaled as started; after it finishes,
//! the response replaces that entry. A tool-runner that dies while a call
//! runs cannot know how far the call got, nor what it printed. So a RunTool
//! that finds a started entry and no result **does not run the call again**:
//! it answers with a failed output that says so
//! ([`restarted_text`]) and records it as the call's result. Across a
//! restart a call therefore runs at most once, and its output may be lost;
//! running it twice would be worse (a second `git commit`, a second
//! migration). The command itself would go on running after the
//! tool-runner died (it is in its own process group), so every process
//! group started is recorded next to the journal, and the restarted
//! tool-runner kills the ones still running before it serves
//! ([`crate::exec::orphans`]).
//!
//! A call finished before the restart keeps its recorded response, for
//! `--journal-retention-hours` (72 by default). A retry arriving later than
//! that runs the call again; Temporal retries come within minutes.
//!
//! Also outside the guarantee: `Exec` (the raw primitive, with no call id),
//! and a journal that cannot be written (the call is then refused with
//! UNAVAILABLE before anything runs, and retried by the worker).

pub mod journal;
pub(crate) mod registry;

use std::time::Duration;

use sha2::{Digest as _, Sha256};

pub use journal::{Journal, JournalEntry, JournalError, StateDirLock, lock_state_dir};

/// What makes two RunTool requests the same call: the ids (the session,
/// the sub-agent — empty for the session's own agent — and the model's
/// call), and which execution of the call it is (`attempt`: 0 first, 1 for
/// the re-run the user approved after a sandbox denial). Two agents of one
/// session may use the same call id (each model names its own calls): they
/// are different calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub session_id: String,
    pub agent_id: String,
    pub call_id: String,
    pub attempt: u32,
}

impl CallKey {
    /// The first attempt of a call of the session's own agent.
    pub fn new(session_id: &str, call_id: &str) -> Self {
        Self {
            session_id: session_id.to_string(),
            agent_id: String::new(),
            call_id: call_id.to_string(),
            attempt: 0,
        }
    }

    pub fn with_attempt(self, attempt: u32) -> Self {
        Self { attempt, ..self }
    }

    /// The same call made by sub-agent `agent_id` (empty: the session's
    /// own agent).
    pub fn with_agent(self, agent_id: &str) -> Self {
        Self {
            agent_id: agent_id.to_string(),
            ..self
        }
    }

    /// The journal's name for the key, in hex. For the session's own agent:
    /// `sha256(session_id \0 call_id)` for attempt 0 — the name from before
    /// attempts existed, so old journals keep answering — and
    /// `sha256(session_id \0 call_id \0 attempt)` (decimal) for later
    /// attempts. For a sub-agent: `sha256(session_id \0 call_id \0 attempt
    /// \0 agent_id)`, always with the attempt. RunTool refuses ids
    /// containing NUL, so the number of separators tells the forms apart
    /// and none is ambiguous.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.session_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.call_id.as_bytes());
        if self.attempt > 0 || !self.agent_id.is_empty() {
            hasher.update([0]);
            hasher.update(self.attempt.to_string().as_bytes());
        }
        if !self.agent_id.is_empty() {
            hasher.update([0]);
            hasher.update(self.agent_id.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Who owns the call's `exec_command` processes: the session for its
    /// own agent, `<session>/<agent>` for a sub-agent (neither id contains
    /// '/').
    pub fn process_scope(&self) -> String {
        process_scope(&self.session_id, &self.agent_id)
    }
}

/// See [`CallKey::process_scope`].
pub fn process_scope(session_id: &str, agent_id: &str) -> String {
    if agent_id.is_empty() {
        session_id.to_string()
    } else {
        format!("{session_id}/{agent_id}")
    }
}

/// Codex's shell tools, whose aborted output has the exec layout.
pub fn is_shell_family(tool_name: &str) -> bool {
    matches!(
        tool_name,
        "shell" | "container.exec" | "local_shell" | "shell_command" | "exec_command"
    )
}

/// Codex's output for a call interrupted after `elapsed` (Codex: `codex-rs/core/src/tools/router.rs`).
pub fn aborted_text(tool_name: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f32();
    if is_shell_family(tool_name) {
        format!("Wall time: {secs:.1} seconds\naborted by user")
    } else {
        format!("aborted by user after {secs:.1}s")
    }
}

/// The output of a call that was running when the tool-runner died.
pub fn restarted_text(tool_name: &str) -> String {
    let what = if is_shell_family(tool_name) {
        "this command"
    } else {
        "this tool call"
    };
    format!(
        "execution error: the tool-runner restarted while {what} was running; it was not run again to avoid running it twice, and its output is lost"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_have_keys_of_their_own() {
        let root = CallKey::new("s", "c");
        let agent = CallKey::new("s", "c").with_agent("a1");
        let other = CallKey::new("s", "c").with_agent("a2");
        assert_ne!(root.digest(), agent.digest());
        assert_ne!(agent.digest(), other.digest());
        // The root's keys are those from before agents existed.
        assert_eq!(
            root.digest(),
            hex::encode(Sha256::digest(b"s\0c")),
            "attempt 0 of the session's own agent"
        );
        assert_eq!(
            CallKey::new("s", "c").with_attempt(1).digest(),
            hex::encode(Sha256::digest(b"s\0c\x001"))
        );
        // An agent's first attempt is not the root's later attempt.
        assert_ne!(
            CallKey::new("s", "c").with_attempt(1).digest(),
            CallKey::new("s", "c").with_agent("1").digest()
        );
        assert_eq!(root.process_scope(), "s");
        assert_eq!(agent.process_scope(), "s/a1");
    }

    #[test]
    fn keys_hash_with_a_separator() {
        let a = CallKey::new("ab", "c").digest();
        let b = CallKey::new("a", "bc").digest();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        // sha256("s\0c"): attempt 0 keeps the journal's old names.
        assert_eq!(
            CallKey::new("s", "c").digest(),
            hex::encode(Sha256::digest(b"s\0c"))
        );
        assert_eq!(
            CallKey::new("s", "c").with_attempt(1).digest(),
            hex::encode(Sha256::digest(b"s\0c\x001"))
        );
        assert_ne!(
            CallKey::new("s", "c").with_attempt(1).digest(),
            CallKey::new("s", "c").with_attempt(2).digest()
        );
    }

    #[test]
    fn aborted_texts_follow_codex() {
        let t = Duration::from_millis(2_345);
        assert_eq!(
            aborted_text("shell", t),
            "Wall time: 2.3 seconds\naborted by user"
        );
        assert_eq!(
            aborted_text("exec_command", Duration::ZERO),
            "Wall time: 0.0 seconds\naborted by user"
        );
        assert_eq!(aborted_text("read_file", t), "aborted by user after 2.3s");
        assert_eq!(aborted_text("write_stdin", t), "aborted by user after 2.3s");
    }

    #[test]
    fn restarted_texts() {
        assert_eq!(
            restarted_text("shell_command"),
            "execution error: the tool-runner restarted while this command was running; it was not run again to avoid running it twice, and its output is lost"
        );
        assert!(restarted_text("apply_patch").contains("while this tool call was running"));
    }
}
