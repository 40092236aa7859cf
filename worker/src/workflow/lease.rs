//! Which tool-runner holds the session's workspace. The lease is durable
//! state (carried across continue-as-new); every tool-runner activity names
//! it, and it moves when that runner is gone or draining (the activities
//! report `runner_unavailable` — nothing ran, so the call runs on the new
//! runner — or `runner_lost` — the call may have run, so it is reported
//! lost, never run twice). Choosing the runner is the `lease_workspace`
//! activity's (see `crate::runners`).

use std::time::Duration;

use keel_proto::v1 as pb;
use pb::event::Msg;
use temporalio_client::RetryPolicy;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, WorkflowCancellationToken, WorkflowContext,
};

use super::{AgentWorkflow, emit, failure_message};
use crate::activities::{KeelActivities, LeaseInput, failure_type};

/// Patch marker: sessions started before it have no lease; their calls go
/// to any runner (one runner served everything then). A session running
/// when the worker is upgraded takes a lease at its next tool call.
pub(super) const PATCH_RUNNER_LEASE: &str = "runner-lease-v1";

/// Whether a failed tool-runner activity means the lease must move, and
/// whether the call may have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moved {
    /// The runner is gone or draining; nothing ran.
    NotRun,
    /// The runner went away during the call.
    Lost,
}

pub(super) fn moved(e: &ActivityExecutionError) -> Option<Moved> {
    let (_, class) = failure_message(e);
    match class.as_str() {
        failure_type::RUNNER_UNAVAILABLE => Some(Moved::NotRun),
        failure_type::RUNNER_LOST => Some(Moved::Lost),
        _ => None,
    }
}

/// The output of a call whose runner went away while it may have been
/// running (as the tool-runner's own text for a call cut by its restart).
pub(super) fn lost_text(command: bool) -> String {
    let what = if command {
        "this command"
    } else {
        "this tool call"
    };
    format!(
        "execution error: the tool-runner went away while {what} was running; it was not run again to avoid running it twice, and its output is lost"
    )
}

fn lease_options(cancel: &WorkflowCancellationToken) -> ActivityOptions {
    // Long enough for the runner to clone a repository (it allows 600 s);
    // the heartbeat finds a dead worker sooner.
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(660))
        .heartbeat_timeout(super::HEARTBEAT_TIMEOUT)
        .cancellation_token(cancel.clone())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(5))
                // About a minute for runners to come up.
                .maximum_attempts(15)
                .build(),
        )
        .summary("lease workspace")
        .build()
}

/// The runner for the session's next tool-runner activity: the lease,
/// taken now if there is none. `Ok(None)`: a session from before leases.
pub(super) async fn runner(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    cancel: &WorkflowCancellationToken,
) -> Result<Option<String>, ActivityExecutionError> {
    if let Some(id) = ctx.state(|s| s.durable.lease.clone()) {
        return Ok(Some(id));
    }
    if !ctx.patched(PATCH_RUNNER_LEASE) {
        return Ok(None);
    }
    take(ctx, cancel, None, "").await.map(Some)
}

/// Moves the lease off `from` (gone or draining) and tells the user.
pub(super) async fn move_off(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    cancel: &WorkflowCancellationToken,
    from: &str,
    turn_id: &str,
) -> Result<String, ActivityExecutionError> {
    take(ctx, cancel, Some(from.to_string()), turn_id).await
}

async fn take(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    cancel: &WorkflowCancellationToken,
    previous: Option<String>,
    turn_id: &str,
) -> Result<String, ActivityExecutionError> {
    let input = ctx.state(|s| LeaseInput {
        session_id: s.input.session_id.clone(),
        cwd: match &s.durable.setup {
            Some(setup) if !setup.cwd.is_empty() => setup.cwd.clone(),
            _ => s.input.cwd.clone(),
        },
        previous: previous.clone(),
        git: s.input.git.clone(),
    });
    let cloned = input.git.is_some();
    let lease = ctx
        .execute_activity(
            KeelActivities::lease_workspace,
            input,
            lease_options(cancel),
        )
        .await?;
    ctx.state_mut(|s| {
        s.durable.lease = Some(lease.runner_id.clone());
        // A clone is where the runner made it; a runner taking the session
        // over may have made it elsewhere.
        if cloned {
            s.durable.workspace = Some(lease.cwd.clone());
            if let Some(setup) = &mut s.durable.setup {
                setup.cwd = lease.cwd.clone();
            }
        }
    });
    if let Some(from) = previous.filter(|from| *from != lease.runner_id) {
        emit(
            ctx,
            turn_id,
            Msg::Warning(pb::Warning {
                message: format!(
                    "tool-runner {from} is gone or draining; the session's workspace moved to tool-runner {}",
                    lease.runner_id
                ),
            }),
        );
    }
    Ok(lease.runner_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_texts_name_what_was_lost() {
        assert!(lost_text(true).contains("while this command was running"));
        assert!(lost_text(false).contains("while this tool call was running"));
        assert!(lost_text(true).starts_with("execution error: "));
    }
}
