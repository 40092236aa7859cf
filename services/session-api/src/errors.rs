//! Temporal client errors → gRPC statuses a user can act on.

use temporalio_client::errors::{
    WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError,
};
use tonic::{Code, Status};

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "{what}: Temporal is unreachable or failing ({e}); retry later"
    ))
}

fn rpc(what: &str, s: &Status) -> Status {
    match s.code() {
        Code::InvalidArgument => Status::invalid_argument(format!("{what}: {}", s.message())),
        Code::NotFound => Status::not_found(format!("{what}: {}", s.message())),
        Code::DeadlineExceeded => Status::deadline_exceeded(format!(
            "{what}: timed out; is a keel-worker running? ({})",
            s.message()
        )),
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
        WorkflowStartError::AlreadyStarted { .. } => {
            Status::already_exists(format!("session {session_id:?} already exists"))
        }
        WorkflowStartError::Rpc(s) if s.code() == Code::AlreadyExists => {
            Status::already_exists(format!("session {session_id:?} already exists"))
        }
        WorkflowStartError::Rpc(s) => rpc("cannot create the session", &s),
        other => Status::internal(format!("cannot create the session: {other}")),
    }
}

/// `None` means "not found": the caller decides between NOT_FOUND and closed.
pub(crate) fn interaction(what: &str, e: WorkflowInteractionError) -> Option<Status> {
    match e {
        WorkflowInteractionError::NotFound(_) => None,
        WorkflowInteractionError::Rpc(s) => Some(rpc(what, &s)),
        other => Some(Status::internal(format!("{what}: {other}"))),
    }
}

pub(crate) fn query(what: &str, e: WorkflowQueryError) -> Option<Status> {
    match e {
        WorkflowQueryError::NotFound(_) => None,
        WorkflowQueryError::Rpc(s) => Some(rpc(what, &s)),
        other => Some(Status::internal(format!("{what}: {other}"))),
    }
}

/// `None` means "not found". A rejected update is the workflow saying the
/// change does not apply to the session's current state.
pub(crate) fn update(session_key: &str, e: WorkflowUpdateError) -> Option<Status> {
    let session_id = shown(session_key);
    match e {
        WorkflowUpdateError::NotFound(_) => None,
        WorkflowUpdateError::Failed(failure) => Some(Status::failed_precondition(format!(
            "session {session_id:?}: {}",
            failure.message
        ))),
        WorkflowUpdateError::Rpc(s) => Some(rpc("cannot update the session", &s)),
        other => Some(Status::internal(format!(
            "cannot update the session: {other}"
        ))),
    }
}

pub(crate) fn not_found(session_key: &str) -> Status {
    let session_id = shown(session_key);
    Status::not_found(format!("session {session_id:?} not found"))
}

pub(crate) fn closed(session_key: &str) -> Status {
    let session_id = shown(session_key);
    Status::failed_precondition(format!(
        "session {session_id:?} is closed; create a new session"
    ))
}
