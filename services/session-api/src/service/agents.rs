//! A session's sub-agents as clients reach them through their session: a
//! sub-agent's pending requests are listed with the session's and answered
//! through the same Respond (routed to the agent's workflow), an interrupt
//! reaches every running agent, and GetSession lists the agents. The
//! session's workflow knows its agents (`SessionState.agents`); each agent's
//! workflow knows its own requests, asked by query only when needed.

use futures::future::join_all;

use super::*;
use crate::events::Log;

/// A sub-agent's pending request.
pub(super) struct AgentRequest {
    pub agent_id: String,
    pub request: api::PendingRequest,
}

/// Where a Respond goes.
pub(super) struct Target {
    /// The sub-agent (`None`: the session's own agent).
    pub agent_id: Option<String>,
    /// The request as its agent lists it (`None`: not pending there; the
    /// workflow's validator then says why).
    pub pending: Option<api::PendingRequest>,
}

/// Whether an agent may still ask or be interrupted: it has not reached a
/// final status.
fn open(a: &api::AgentEntry) -> bool {
    !a.status.is_final()
}

impl SessionApi {
    fn agent_handle(&self, key: &str, agent_id: &str) -> WorkflowHandle<Client, SessionWorkflow> {
        self.log_handle(&Log::agent(key, agent_id, ""))
    }

    /// The pending requests of the session's running sub-agents, asked of
    /// their workflows at once. An agent that cannot be read now is left
    /// out (and logged): the listing is a view, the answer path checks again.
    pub(super) async fn agents_pending(
        &self,
        key: &str,
        state: &SessionState,
    ) -> Vec<AgentRequest> {
        let reads = state.agents.iter().filter(|a| open(a)).map(|a| async move {
            let read = self
                .agent_handle(key, &a.agent_id)
                .query(StateQuery, (), WorkflowQueryOptions::default())
                .await;
            match read {
                Ok(agent_state) => agent_state
                    .pending_requests
                    .into_iter()
                    .map(|request| AgentRequest {
                        agent_id: a.agent_id.clone(),
                        request,
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(session = %key, agent = %a.agent_id, error = %e, "cannot read a sub-agent's requests");
                    Vec::new()
                }
            }
        });
        join_all(reads).await.into_iter().flatten().collect()
    }

    /// Which agent a Respond is for. `agent_id` names it (the session id
    /// names the session's own agent, as its events do); empty: the session's
    /// own agent if it has the request pending, else the one sub-agent that
    /// has.
    pub(super) async fn respond_target(
        &self,
        key: &str,
        state: &SessionState,
        agent_id: &str,
        request_id: &str,
    ) -> Result<Target, Status> {
        let session_id = api::split_session_key(key).1;
        let own = || Target {
            agent_id: None,
            pending: state
                .pending_requests
                .iter()
                .find(|p| p.request_id == request_id)
                .cloned(),
        };
        if agent_id == session_id {
            return Ok(own());
        }
        if !agent_id.is_empty() {
            if !state.agents.iter().any(|a| a.agent_id == agent_id) {
                return Err(errors::status(
                    tonic::Code::InvalidArgument,
                    "agent_not_found",
                    format!(
                        "session {session_id} has no agent {}",
                        api::cut_text(agent_id, 64).0
                    ),
                ));
            }
            let pending = self
                .agents_pending(key, state)
                .await
                .into_iter()
                .find(|r| r.agent_id == agent_id && r.request.request_id == request_id)
                .map(|r| r.request);
            return Ok(Target {
                agent_id: Some(agent_id.to_string()),
                pending,
            });
        }
        let target = own();
        if target.pending.is_some() || state.agents.is_empty() {
            return Ok(target);
        }
        let mut found: Vec<AgentRequest> = self
            .agents_pending(key, state)
            .await
            .into_iter()
            .filter(|r| r.request.request_id == request_id)
            .collect();
        match found.len() {
            0 => Ok(target),
            1 => {
                let r = found.remove(0);
                Ok(Target {
                    agent_id: Some(r.agent_id),
                    pending: Some(r.request),
                })
            }
            _ => Err(errors::invalid(format!(
                "request {request_id} is pending at agents {}; say which in agent_id",
                found
                    .iter()
                    .map(|r| r.agent_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Sends a sub-agent the answer to one of its requests.
    pub(super) async fn respond_agent(
        &self,
        key: &str,
        agent_id: &str,
        response: api::Response,
    ) -> Result<(), Status> {
        match self
            .agent_handle(key, agent_id)
            .execute_update(
                RespondUpdate,
                response,
                WorkflowExecuteUpdateOptions::default(),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(errors::update(key, e).unwrap_or_else(|| {
                errors::status(
                    tonic::Code::FailedPrecondition,
                    "agent_closed",
                    format!("agent {agent_id} has ended; its requests need no answer"),
                )
            })),
        }
    }

    /// Interrupts the session's running sub-agents (or only `only`). Each
    /// is interrupted on its own: one that has ended meanwhile is skipped.
    pub(super) async fn interrupt_agents(
        &self,
        key: &str,
        state: &SessionState,
        only: Option<&str>,
    ) -> Result<(), Status> {
        if let Some(agent_id) = only
            && !state.agents.iter().any(|a| a.agent_id == agent_id)
        {
            return Err(errors::status(
                tonic::Code::InvalidArgument,
                "agent_not_found",
                format!(
                    "session {} has no agent {}",
                    api::split_session_key(key).1,
                    api::cut_text(agent_id, 64).0
                ),
            ));
        }
        let targets = state
            .agents
            .iter()
            .filter(|a| open(a) && only.is_none_or(|id| id == a.agent_id));
        let sent = targets.map(|a| async move {
            let sent = self
                .agent_handle(key, &a.agent_id)
                .signal(InterruptSignal, (), WorkflowSignalOptions::default())
                .await;
            if let Err(e) = sent {
                tracing::info!(session = %key, agent = %a.agent_id, error = %e, "sub-agent not interrupted (ended?)");
            }
        });
        join_all(sent).await;
        Ok(())
    }
}

/// The session's sub-agents as GetSession shows them.
pub(super) fn agent_infos(state: &SessionState) -> Vec<pb::AgentInfo> {
    state
        .agents
        .iter()
        .map(|a| pb::AgentInfo {
            agent_id: a.agent_id.clone(),
            parent_agent_id: a.parent_agent_id.clone(),
            depth: a.depth,
            role: a.role.clone(),
            status: Some((&a.status).into()),
            token_usage: Some((&a.usage).into()),
            turns_completed: a.turns,
            workflow_id: api::agent_workflow_id(&state.session_id, &a.agent_id),
            last_event_offset: a.last_offset,
        })
        .collect()
}

/// The tokens of the session's own agent and every sub-agent.
pub(super) fn all_agents_usage(state: &SessionState) -> pb::TokenUsage {
    let mut total = state.total_usage;
    for a in &state.agents {
        total.input_tokens += a.usage.input_tokens;
        total.cached_input_tokens += a.usage.cached_input_tokens;
        total.output_tokens += a.usage.output_tokens;
        total.reasoning_output_tokens += a.usage.reasoning_output_tokens;
        total.total_tokens += a.usage.total_tokens;
    }
    (&total).into()
}
