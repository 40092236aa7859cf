//! Activities a crashed predecessor left behind. When a worker dies (kill -9,
//! OOM), the model and tool calls it was running stay "started" in Temporal
//! until their heartbeat timeout, and the sessions' next workflow tasks wait
//! on its sticky queue. A worker that starts again on the same host (a
//! restarted container keeps its pod's hostname) knows those are dead: it
//! fails them by id, so Temporal retries them now, and resets the sessions'
//! sticky queues, so their next workflow task goes to a live worker.
//!
//! A worker's identity is `keel-worker@HOST/PID.START` (START: the process's
//! start time in clock ticks since boot), so a predecessor is recognised even
//! when the new process reuses its pid (pid 1 in a container). Another
//! identity of this host whose process is still alive is left alone: several
//! workers may share a host.

use std::time::Duration;

use futures::StreamExt;

use temporalio_client::Client;
use temporalio_client::grpc::WorkflowService;
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::enums::v1::PendingActivityState;
use temporalio_common::protos::temporal::api::failure::v1::{
    ApplicationFailureInfo, Failure, failure::FailureInfo,
};
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    DescribeWorkflowExecutionRequest, ListWorkflowExecutionsRequest, ResetStickyTaskQueueRequest,
    RespondActivityTaskFailedByIdRequest,
};

/// Sessions described at once while looking for a dead worker's calls.
const DESCRIBE_CONCURRENCY: usize = 16;

/// The failure type of an activity failed for its dead worker; retryable.
pub const WORKER_RESTARTED: &str = "worker_restarted";

/// This process's identity (see the module docs).
pub fn identity() -> String {
    format!(
        "keel-worker@{}/{}.{}",
        hostname(),
        std::process::id(),
        start_ticks(std::process::id()).unwrap_or(0)
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks
/// since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `other` is a dead worker of this host: same host, and its process
/// is gone (or the pid now belongs to a process started at another time).
fn is_dead_predecessor(other: &str, own: &str) -> bool {
    let host_of = |id: &str| {
        id.strip_prefix("keel-worker@")
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(host, proc_id)| (host.to_string(), proc_id.to_string()))
    };
    let (Some((host, proc_id)), Some((own_host, _))) = (host_of(other), host_of(own)) else {
        return false;
    };
    if host != own_host || other == own {
        return false;
    }
    let Some((pid, start)) = proc_id.split_once('.') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    start_ticks(pid) != Some(start)
}

/// Fails the started activities of this host's dead workers and resets the
/// sticky queues of their sessions. Every running session of the task queue
/// is described once, a few at a time. Errors are logged: the heartbeat
/// timeout still recovers everything, only later.
pub async fn recover(client: Client, namespace: String, task_queue: String, own: String) {
    let mut service = client.clone();
    let mut next_page_token = Vec::new();
    let mut recovered = 0usize;
    loop {
        let list = ListWorkflowExecutionsRequest {
            namespace: namespace.clone(),
            page_size: 500,
            next_page_token: next_page_token.clone(),
            query: format!(
                "WorkflowType = '{}' AND ExecutionStatus = 'Running' AND TaskQueue = '{}'",
                keel_workflow_api::WORKFLOW_TYPE,
                task_queue.replace('\'', "")
            ),
        };
        let page = match WorkflowService::list_workflow_executions(
            &mut service,
            tonic::IntoRequest::into_request(list),
        )
        .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sessions to recover a dead worker's calls");
                return;
            }
        };
        // Every running session is described (strongly consistent), not
        // only those whose memo says a turn runs: visibility lags, and a
        // turn that started just before the crash may not show yet.
        let executions: Vec<WorkflowExecution> = page
            .executions
            .iter()
            .filter_map(|info| info.execution.clone())
            .collect();
        recovered += futures::stream::iter(executions)
            .map(|execution| {
                let mut service = service.clone();
                let (namespace, own) = (namespace.clone(), own.clone());
                async move { recover_one(&mut service, &namespace, execution, &own).await }
            })
            .buffer_unordered(DESCRIBE_CONCURRENCY)
            .fold(0, |n, m| async move { n + m })
            .await;
        if page.next_page_token.is_empty() {
            break;
        }
        next_page_token = page.next_page_token;
    }
    if recovered > 0 {
        tracing::info!(
            calls = recovered,
            "failed the calls a dead worker of this host left running; Temporal retries them now"
        );
    }
}

async fn recover_one(
    service: &mut Client,
    namespace: &str,
    execution: WorkflowExecution,
    own: &str,
) -> usize {
    let described = WorkflowService::describe_workflow_execution(
        service,
        tonic::IntoRequest::into_request(DescribeWorkflowExecutionRequest {
            namespace: namespace.to_string(),
            execution: Some(execution.clone()),
        }),
    )
    .await;
    let pending = match described {
        Ok(r) => r.into_inner().pending_activities,
        Err(e) => {
            tracing::debug!(workflow_id = %execution.workflow_id, error = %e, "cannot describe session");
            return 0;
        }
    };
    let mut failed = 0;
    for activity in pending {
        if activity.state != PendingActivityState::Started as i32
            || !is_dead_predecessor(&activity.last_worker_identity, own)
        {
            continue;
        }
        let request = RespondActivityTaskFailedByIdRequest {
            namespace: namespace.to_string(),
            workflow_id: execution.workflow_id.clone(),
            run_id: execution.run_id.clone(),
            activity_id: activity.activity_id.clone(),
            failure: Some(Failure {
                message: format!(
                    "the worker running this call ({}) died and was restarted",
                    activity.last_worker_identity
                ),
                failure_info: Some(FailureInfo::ApplicationFailureInfo(
                    ApplicationFailureInfo {
                        r#type: WORKER_RESTARTED.to_string(),
                        non_retryable: false,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            identity: own.to_string(),
            ..Default::default()
        };
        match WorkflowService::respond_activity_task_failed_by_id(
            service,
            tonic::IntoRequest::into_request(request),
        )
        .await
        {
            Ok(_) => failed += 1,
            Err(e) => {
                tracing::debug!(workflow_id = %execution.workflow_id, error = %e, "cannot fail a dead worker's call")
            }
        }
    }
    if failed > 0 {
        let reset = WorkflowService::reset_sticky_task_queue(
            service,
            tonic::IntoRequest::into_request(ResetStickyTaskQueueRequest {
                namespace: namespace.to_string(),
                execution: Some(execution.clone()),
            }),
        );
        match tokio::time::timeout(Duration::from_secs(5), reset).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(workflow_id = %execution.workflow_id, error = %e, "cannot reset the sticky queue")
            }
            Err(_) => {
                tracing::debug!(workflow_id = %execution.workflow_id, "resetting the sticky queue timed out")
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_identity_parses_and_is_alive() {
        let own = identity();
        assert!(own.starts_with("keel-worker@"), "{own}");
        assert!(!is_dead_predecessor(&own, &own));
    }

    #[test]
    fn dead_predecessors_of_this_host_only() {
        let own = identity();
        let host = hostname();
        // pid 1 exists, but not with start time 0 (it started after boot
        // ticks began counting, or is this container's init).
        let pid1_start = start_ticks(1).unwrap_or(0);
        let dead_reused_pid = format!("keel-worker@{host}/1.{}", pid1_start + 12345);
        assert!(is_dead_predecessor(&dead_reused_pid, &own));
        let alive = format!("keel-worker@{host}/1.{pid1_start}");
        assert!(!is_dead_predecessor(&alive, &own));
        let other_host = format!("keel-worker@not-{host}/1.7");
        assert!(!is_dead_predecessor(&other_host, &own));
        for junk in [
            "",
            "keel-worker@",
            "someone-else",
            "keel-worker@h/x.y",
            "keel-worker@h/5",
        ] {
            assert!(!is_dead_predecessor(junk, &own), "{junk}");
        }
    }
}
