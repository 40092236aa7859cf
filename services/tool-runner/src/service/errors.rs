//! The ToolService's failures, each a gRPC status carrying a
//! `keel.v1.ErrorInfo` (class, retryable) made here and nowhere else. The
//! worker reads the ErrorInfo (`keel_worker::activities::status_failure`)
//! to decide whether a call is worth retrying; the code stays what a
//! client of any language expects.
//!
//! Classes: `invalid_request`, `outside_workspace`, `not_found`,
//! `invocation_mismatch` (the invocation decided on is not what the
//! arguments yield; nothing ran), `sandbox_unavailable` (the host cannot
//! enforce the sandbox asked for), `unusable_directory`, `spawn_failed`,
//! `journal` and `blob_store` (storage failed; retryable), `blob_corrupt`,
//! `shutting_down` (retryable), `internal` (retryable), `draining` (the
//! runner drains and ran nothing; not retried here).

use keel_proto::v1::ErrorInfo;
use tonic::{Code, Status};

fn status(code: Code, class: &str, message: impl Into<String>) -> Status {
    // What the worker may retry: storage and transient failures, as the
    // gRPC codes say; never a request that cannot succeed as it is.
    let retryable = matches!(code, Code::Unavailable | Code::Internal);
    ErrorInfo::new(class, retryable).into_status(code, message)
}

/// A malformed request (the message names the field).
pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, "invalid_request", message)
}

/// A path outside the tool-runner's workspace roots.
pub(crate) fn outside_workspace(message: impl Into<String>) -> Status {
    status(Code::PermissionDenied, "outside_workspace", message)
}

pub(crate) fn not_found(message: impl Into<String>) -> Status {
    status(Code::NotFound, "not_found", message)
}

/// The call's invocation is not what its arguments yield: nothing ran.
pub(crate) fn invocation_mismatch(message: impl Into<String>) -> Status {
    status(Code::FailedPrecondition, "invocation_mismatch", message)
}

/// The sandbox the call asks for cannot be enforced on this host.
pub(crate) fn sandbox_unavailable(message: impl Into<String>) -> Status {
    status(Code::FailedPrecondition, "sandbox_unavailable", message)
}

/// A directory that exists but cannot be used (not a directory, hidden by
/// the sandbox, unreadable).
pub(crate) fn unusable_directory(message: impl Into<String>) -> Status {
    status(Code::FailedPrecondition, "unusable_directory", message)
}

/// A command that could not be started.
pub(crate) fn spawn_failed(code: Code, message: impl Into<String>) -> Status {
    status(code, "spawn_failed", message)
}

/// The tool-call journal could not be read or written.
pub(crate) fn journal(message: impl Into<String>) -> Status {
    status(Code::Unavailable, "journal", message)
}

/// The blob store could not be reached.
pub(crate) fn blob_store(message: impl Into<String>) -> Status {
    status(Code::Unavailable, "blob_store", message)
}

/// A stored blob no longer matches its digest.
pub(crate) fn blob_corrupt(message: impl Into<String>) -> Status {
    status(Code::DataLoss, "blob_corrupt", message)
}

/// The runner drains: it takes no new workspaces or calls, and ran
/// nothing. Not to be retried here: the worker takes the workspace to
/// another runner.
pub(crate) fn draining(message: impl Into<String>) -> Status {
    ErrorInfo::new("draining", false).into_status(Code::Unavailable, message)
}

/// The runner clones no repositories, or git failed to.
pub(crate) fn clone_error(err: crate::clone::CloneError) -> Status {
    use crate::clone::CloneError;
    match err {
        CloneError::NoRoot => status(Code::FailedPrecondition, "no_clone_root", err.to_string()),
        CloneError::Url(..) | CloneError::Ref(_) => invalid(err.to_string()),
        CloneError::Failed(_) => status(Code::FailedPrecondition, "clone_failed", err.to_string()),
        CloneError::Io { .. } => internal(err.to_string()),
    }
}

/// The tool-runner stopped under the call.
pub(crate) fn shutting_down(message: impl Into<String>) -> Status {
    status(Code::Unavailable, "shutting_down", message)
}

pub(crate) fn internal(message: impl Into<String>) -> Status {
    status(Code::Internal, "internal", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_names_its_class_and_whether_to_retry() {
        for (s, class, retryable) in [
            (invalid("x"), "invalid_request", false),
            (invocation_mismatch("x"), "invocation_mismatch", false),
            (journal("x"), "journal", true),
            (blob_corrupt("x"), "blob_corrupt", false),
            (internal("x"), "internal", true),
            (draining("x"), "draining", false),
        ] {
            let info = ErrorInfo::from_status(&s).unwrap();
            assert_eq!((info.class.as_str(), info.retryable), (class, retryable));
            assert_eq!(s.message(), "x");
        }
    }
}
