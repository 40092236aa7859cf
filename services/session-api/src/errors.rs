//! session-api's failures as gRPC statuses a user can act on, each with a
//! `keel.v1.ErrorInfo` made here: its class (below) and whether the same
//! call may succeed later. Classes: `invalid_request`, `session_not_found`,
//! `session_closed`, `already_exists`, `rejected` (the session refused the
//! change in its current state), `turn_not_running`, `offset_out_of_range`,
//! `temporal_unavailable` and `temporal_timeout` (retryable), `blob_store`
//! (retryable), `corrupt_event`, `internal`; and, from their own modules,
//! `tenant_limit` and `queue_full`.

use keel_proto::v1::ErrorInfo;
use temporalio_client::errors::{
    WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError,
};
use tonic::{Code, Status};

/// A status of `code` with an ErrorInfo of `class`: retryable when the
/// code says the service, not the request, failed.
pub(crate) fn status(code: Code, class: &str, message: impl Into<String>) -> Status {
    let retryable = matches!(code, Code::Unavailable | Code::DeadlineExceeded);
    ErrorInfo::new(class, retryable).into_status(code, message)
}

/// A malformed request; the message names the field and the limit.
pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, "invalid_request", message)
}

/// The blob store could not store or read something.
pub(crate) fn blob_store(message: impl Into<String>) -> Status {
    status(Code::Unavailable, "blob_store", message)
}

/// An event in the session's log that does not decode.
pub(crate) fn corrupt_event(e: impl std::fmt::Display) -> Status {
    status(
        Code::Internal,
        "corrupt_event",
        format!("corrupt event in the session log: {e}"),
    )
}

/// The session's queue of waiting turns is full.
pub(crate) fn queue_full(session_key: &str) -> Status {
    ErrorInfo::new("queue_full", true)
        .with_detail("limit", "max-queued-turns")
        .into_status(
            Code::ResourceExhausted,
            format!(
                "session {:?} has as many turns waiting as it may hold (session-api --max-queued-turns); wait for some to run, or Interrupt",
                shown(session_key)
            ),
        )
}

pub(crate) fn internal(message: impl Into<String>) -> Status {
    status(Code::Internal, "internal", message)
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    status(
        Code::Unavailable,
        "temporal_unavailable",
        format!("{what}: Temporal is unreachable or failing ({e}); retry later"),
    )
}

fn rpc(what: &str, s: &Status) -> Status {
    match s.code() {
        Code::InvalidArgument => invalid(format!("{what}: {}", s.message())),
        Code::NotFound => status(
            Code::NotFound,
            "session_not_found",
            format!("{what}: {}", s.message()),
        ),
        Code::DeadlineExceeded => status(
            Code::DeadlineExceeded,
            "temporal_timeout",
            format!(
                "{what}: timed out; is a keel-worker running? ({})",
                s.message()
            ),
        ),
        _ => unavailable(what, s.message()),
    }
}

/// The id a client knows a session by, from its key.
fn shown(session_key: &str) -> &str {
    keel_workflow_api::split_session_key(session_key).1
}

pub(crate) fn start(session_key: &str, e: WorkflowStartError) -> Status {
    let session_id = shown(session_key);
    match e {
        WorkflowStartError::AlreadyStarted { .. } => already_exists(session_id),
        WorkflowStartError::Rpc(s) if s.code() == Code::AlreadyExists => already_exists(session_id),
        WorkflowStartError::Rpc(s) => rpc("cannot create the session", &s),
        other => internal(format!("cannot create the session: {other}")),
    }
}

/// `None` means "not found": the caller decides between NOT_FOUND and closed.
pub(crate) fn interaction(what: &str, e: WorkflowInteractionError) -> Option<Status> {
    match e {
        WorkflowInteractionError::NotFound(_) => None,
        WorkflowInteractionError::Rpc(s) => Some(rpc(what, &s)),
        other => Some(internal(format!("{what}: {other}"))),
    }
}

pub(crate) fn query(what: &str, e: WorkflowQueryError) -> Option<Status> {
    match e {
        WorkflowQueryError::NotFound(_) => None,
        WorkflowQueryError::Rpc(s) => Some(rpc(what, &s)),
        other => Some(internal(format!("{what}: {other}"))),
    }
}

/// `None` means "not found". A rejected update is the workflow saying the
/// change does not apply to the session's current state.
pub(crate) fn update(session_key: &str, e: WorkflowUpdateError) -> Option<Status> {
    let session_id = shown(session_key);
    match e {
        WorkflowUpdateError::NotFound(_) => None,
        WorkflowUpdateError::Failed(failure) => Some(status(
            Code::FailedPrecondition,
            "rejected",
            format!("session {session_id:?}: {}", failure.message),
        )),
        WorkflowUpdateError::Rpc(s) => Some(rpc("cannot update the session", &s)),
        other => Some(internal(format!("cannot update the session: {other}"))),
    }
}

pub(crate) fn not_found(session_key: &str) -> Status {
    let session_id = shown(session_key);
    status(
        Code::NotFound,
        "session_not_found",
        format!("session {session_id:?} not found"),
    )
}

pub(crate) fn closed(session_key: &str) -> Status {
    let session_id = shown(session_key);
    status(
        Code::FailedPrecondition,
        "session_closed",
        format!("session {session_id:?} is closed; create a new session"),
    )
}

fn already_exists(session_id: &str) -> Status {
    status(
        Code::AlreadyExists,
        "already_exists",
        format!("session {session_id:?} already exists"),
    )
}
