//! Environment variables a tool call may never set.
//!
//! A call's own variables (`local_shell`'s `env`) reach the command, so
//! they are part of what is decided on (see
//! [`CommandInvocation::judged_argv`](crate::CommandInvocation::judged_argv)).
//! Some variables are refused outright because they change what runs
//! before any rule can see it: the dynamic loader's and C library's
//! variables, the ones glibc ignores for setuid programs for the same
//! reason (glibc `sysdeps/generic/unsecvars.h`), plus `GLIBC_TUNABLES`.

/// Variables refused besides every `LD_*` (glibc's `UNSECURE_ENVVARS`
/// without `TMPDIR`, which only picks a temporary directory, plus
/// `GLIBC_TUNABLES`).
const REFUSED: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
];

/// Why a call may not set `name`, or `None` when it may.
pub fn refused_env_var(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Some("it is not a valid variable name");
    }
    if name.starts_with("LD_") || REFUSED.contains(&name) {
        return Some("it changes how programs are loaded or resolved");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_variables_are_refused() {
        for name in [
            "LD_PRELOAD",
            "LD_AUDIT",
            "LD_LIBRARY_PATH",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
        ] {
            assert!(refused_env_var(name).is_some(), "{name}");
        }
        for name in ["", "A=B", "A\0"] {
            assert!(refused_env_var(name).is_some(), "{name:?}");
        }
        for name in ["PATH", "HOME", "RUST_LOG", "TMPDIR", "LDFLAGS", "OLD_PWD"] {
            assert_eq!(refused_env_var(name), None, "{name}");
        }
    }
}
