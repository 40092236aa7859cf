//! Codex's rule for a sandbox denial (Codex:
//! `codex-rs/core/src/tools/orchestrator.rs`, step 3): a sandboxed run
//! that exited non-zero was refused by the sandbox when its output carries
//! one of the words a refused operation prints, or seccomp killed it
//! (128+SIGSYS). Exit codes 2, 126 and 127 without those words are the
//! command's own failures. The tool-runner applies it to what it ran; the
//! workflow then reads the answer from the tool-runner.

/// Case-insensitive markers of a refused operation.
const DENIAL_MARKERS: [&str; 7] = [
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "seccomp",
    "sandbox",
    "landlock",
    "failed to write file",
];

/// 128 + SIGSYS (31 on Linux): what a shell reports for a process seccomp
/// killed.
const SIGSYS_EXIT: i32 = 128 + 31;

/// Whether a sandboxed run that ended with `exit_code` and printed `texts`
/// (stdout, stderr, their interleaving — any of them) was refused by the
/// sandbox. A timeout is not a denial.
pub fn is_sandbox_denial(exit_code: i32, timed_out: bool, texts: &[&str]) -> bool {
    if exit_code == 0 || timed_out {
        return false;
    }
    if exit_code == SIGSYS_EXIT {
        return true;
    }
    texts.iter().any(|text| {
        let lower = text.to_lowercase();
        DENIAL_MARKERS.iter().any(|marker| lower.contains(marker))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_words_and_sigsys_count() {
        assert!(is_sandbox_denial(
            1,
            false,
            &["bash: line 1: /etc/x: Permission denied"]
        ));
        assert!(is_sandbox_denial(
            1,
            false,
            &["", "touch: cannot touch 'x': Read-only file system"]
        ));
        assert!(is_sandbox_denial(2, false, &["Operation NOT permitted"]));
        assert!(is_sandbox_denial(1, false, &["Landlock refused"]));
        assert!(is_sandbox_denial(159, false, &[""]), "SIGSYS from seccomp");
    }

    #[test]
    fn ordinary_failures_are_not_denials() {
        assert!(!is_sandbox_denial(0, false, &["permission denied"]));
        for code in [1, 2, 126, 127] {
            assert!(
                !is_sandbox_denial(code, false, &["sh: nope: not found"]),
                "{code}"
            );
        }
        assert!(!is_sandbox_denial(2, false, &["ls: cannot access 'x'"]));
        assert!(!is_sandbox_denial(124, true, &["permission denied"]));
    }
}
