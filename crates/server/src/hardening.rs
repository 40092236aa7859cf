//! What every Keel process does to itself before it serves: it makes itself
//! non-dumpable (`PR_SET_DUMPABLE` 0). The kernel then refuses other
//! processes of the same user — commands run without a sandbox, a
//! compromised neighbour — `ptrace` and `/proc/<pid>/{environ,mem,fd,…}`
//! of this one (they need CAP_SYS_PTRACE), and writes no core file of its
//! memory. The model-proxy holds the model API keys and the mcp-broker the
//! MCP servers' secrets; the others hold tokens and session data. Sandboxed
//! commands cannot see Keel's processes at all (the tool-runner gives them
//! a PID namespace of their own); this covers everything else.

/// Makes this process non-dumpable; logs (and carries on) if the kernel
/// refuses, which it does not on Linux.
pub fn protect_process() {
    match nix::sys::prctl::set_dumpable(false) {
        Ok(()) => tracing::debug!("process made non-dumpable"),
        Err(err) => tracing::warn!(
            error = %err,
            "cannot make the process non-dumpable: processes of the same user can read its memory and environment"
        ),
    }
}
