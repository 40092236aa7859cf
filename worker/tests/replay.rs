//! Replays recorded session histories against the current workflow code, so a
//! change that would break running sessions fails CI. Histories are recorded
//! by the end-to-end tests (`KEEL_RECORD_HISTORIES=worker/tests/histories
//! cargo test -p keel-e2e`); add one for every new kind of session behaviour,
//! and never edit or delete old ones while sessions of that shape may run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use common::histories;

use keel_worker::workflow::AgentWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};

fn replayer() -> WorkflowReplayer {
    WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<AgentWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap()
}

#[tokio::test]
async fn recorded_histories_replay_against_current_code() {
    let replayer = replayer();
    for (name, bytes) in histories() {
        let history = WorkflowHistory::from_json(&bytes).unwrap();
        if let Err(e) = replayer.replay_workflow(history).await {
            panic!("{name} no longer replays — this change would break running sessions: {e}");
        }
    }
}

/// The guard itself works: a history whose first activity differs from what
/// the code schedules is reported as nondeterministic.
#[tokio::test]
async fn a_diverging_history_is_detected() {
    let (_, bytes) = histories()
        .into_iter()
        .find(|(name, _)| name.ends_with("shell_two_turns_closed.json"))
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains("\"model_call\""),
        "history has no model_call activity"
    );
    let altered = text.replacen("\"model_call\"", "\"run_tool\"", 1);
    let history = WorkflowHistory::from_json(altered.as_bytes()).unwrap();
    match replayer().replay_workflow(history).await {
        Err(WorkflowReplayError::Replay(WorkflowReplayFailure::Nondeterminism { .. })) => {}
        other => panic!("expected a nondeterminism failure, got {other:?}"),
    }
}
