//! Environment variables a tool call may never set.
//!
//! A call's own variables (`local_shell`'s `env`, the raw Exec RPC's) reach
//! the command, so they are part of what is decided on (see
//! [`CommandInvocation::judged_argv`](crate::CommandInvocation::judged_argv)).
//! Some are refused outright because they change what runs before any rule
//! can see it: the dynamic loader's `LD_*`, and the variables glibc drops
//! for setuid programs for the same reason. The operator's own environment
//! policy may still set them; this is about requests.

/// Variables the dynamic loader reads: all of `LD_*`.
const LOADER_PREFIX: &str = "LD_";

/// glibc's list of variables it drops for setuid programs, past `LD_*`
/// (`UNSECURE_ENVVARS` in glibc's `sysdeps/generic/unsecvars.h`): each can
/// make a program load code (GCONV_PATH's gconv modules, GLIBC_TUNABLES),
/// read files (HOSTALIASES, LOCPATH, NLSPATH, RESOLV_HOST_CONF, TZDIR, …)
/// or write them (MALLOC_TRACE) of the caller's choice. TMPDIR is on that
/// list too but names nothing loaded or trusted, and commands need it.
const GLIBC_UNSECURE_VARS: [&str; 19] = [
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_PERTURB_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRACE",
    "MALLOC_TRIM_THRESHOLD_",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
];

/// Why a request may not set a variable named `name`, or `None` when it
/// may. Names are compared exactly, as the loader does; a name that is no
/// name at all (empty, with `=` or NUL) is refused too.
pub fn refused_env_var(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Some("it is not a valid variable name")
    } else if name.starts_with(LOADER_PREFIX) {
        Some(
            "the dynamic loader reads LD_* variables, which can load code of the caller's choice into every program",
        )
    } else if GLIBC_UNSECURE_VARS.contains(&name) {
        Some(
            "glibc distrusts it (sysdeps/generic/unsecvars.h): it can make a program load code or read files of the caller's choice",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_and_glibc_unsecure_variables_are_refused() {
        for name in [
            "LD_PRELOAD",
            "LD_AUDIT",
            "LD_LIBRARY_PATH",
            "LD_ANYTHING_NEW",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "MALLOC_TRACE",
            "NLSPATH",
            "RES_OPTIONS",
            "TZDIR",
            "",
            "A=B",
            "A\0",
        ] {
            assert!(
                refused_env_var(name).is_some(),
                "{name:?} should be refused"
            );
        }
        for name in [
            "PATH",
            "HOME",
            "TMPDIR",
            "TZ",
            "LANG",
            "LDFLAGS",
            "ld_preload",
            "OLD_PRELOAD",
        ] {
            assert_eq!(refused_env_var(name), None, "{name} should be allowed");
        }
    }
}
