//! What a session carries from one run to the next. The workflow holds it
//! as one value, [`Durable`], and continue-as-new hands it on as the wire
//! type [`Carried`] (part of workflow history). Both conversions destructure
//! every field, so a field added to either type does not compile until it
//! is carried — nothing resets silently at a rollover.

use std::collections::{BTreeSet, VecDeque};

use keel_workflow_api::{
    AgentEntry, ApprovalKey, Carried, EventArchive, ModelDefaults, Registry, SessionInput,
    SessionSetup, TurnHead, TurnSettings, Usage, UserTurn,
};

use crate::activities::AppendItem;
use crate::events::EventLog;

/// The state that survives continue-as-new.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Durable {
    /// Digest of the conversation's newest segment.
    pub(super) head: Option<String>,
    /// Items to append before the next model call.
    pub(super) pending: Vec<AppendItem>,
    /// Turns waiting to run, in order.
    pub(super) inbox: VecDeque<UserTurn>,
    /// Turn ids remembered for de-duplicating retried SendUserTurn calls.
    pub(super) recent_turn_ids: VecDeque<String>,
    /// The session's events, replayable by offset.
    pub(super) log: EventLog,
    pub(super) turns_completed: u64,
    pub(super) usage: Usage,
    pub(super) last_activity_ms: u64,
    /// Runs before this one (continue-as-new count).
    pub(super) runs: u32,
    pub(super) shutdown_requested: bool,
    /// Tools and project context, fetched once per session.
    pub(super) setup: Option<SessionSetup>,
    /// Persistent settings: the session's defaults plus overrides.
    pub(super) settings: TurnSettings,
    /// Approval keys answered with `approved_for_session`.
    pub(super) approved_for_session: BTreeSet<ApprovalKey>,
    /// Command prefixes allowed by exec-policy amendments.
    pub(super) allowed_prefixes: Vec<Vec<String>>,
    /// Recently ended requests and why they ended, so a late answer gets a
    /// precise rejection.
    pub(super) ended_requests: VecDeque<(String, String)>,
    /// A Compact request waits for the turns before it.
    pub(super) compact_requested: bool,
    /// The call prefix the model-proxy holds, by digest.
    pub(super) stored_prefix: Option<String>,
    /// What the model-proxy fills in for empty settings.
    pub(super) model_defaults: Option<ModelDefaults>,
    /// The runner the session's workspace is leased to.
    pub(super) lease: Option<String>,
    /// The clone the runner made, for sessions with a `git` source.
    pub(super) workspace: Option<String>,
    /// Name, archived flag and newest message (mirrored into the memo).
    pub(super) registry: Registry,
    /// The event archive's newest chunk (events before the log's window).
    pub(super) archive: Option<EventArchive>,
    /// The newest ended turns' conversation heads, for forks.
    pub(super) turn_heads: VecDeque<TurnHead>,
    /// The sub-agents the session started.
    pub(super) agents: Vec<AgentEntry>,
    /// A sub-agent's count of the updates it sent.
    pub(super) agent_seq: u64,
}

impl Durable {
    /// The state of a run started with `input`: a new session's, or what
    /// the previous run carried.
    pub(super) fn resume(input: &SessionInput) -> Self {
        let Carried {
            head,
            pending,
            inbox,
            recent_turn_ids,
            events_first,
            events,
            turns_completed,
            usage,
            last_activity_ms,
            runs,
            shutdown_requested,
            setup,
            settings,
            approved_for_session,
            allowed_prefixes,
            ended_requests,
            compact_requested,
            stored_prefix,
            model_defaults,
            lease,
            workspace,
            registry,
            archive,
            turn_heads,
            agents,
            agent_seq,
        } = input.carried.clone().unwrap_or_else(|| Carried {
            registry: Registry {
                name: input.name.clone(),
                ..Registry::default()
            },
            ..Carried::default()
        });
        let log = if runs == 0 && events.is_empty() {
            EventLog::new(input.retained_events)
        } else {
            EventLog::resume(input.retained_events, events_first, events)
        };
        Self {
            head,
            pending,
            inbox: inbox.into(),
            recent_turn_ids: recent_turn_ids.into(),
            log,
            turns_completed,
            usage,
            last_activity_ms: last_activity_ms.max(input.created_at_ms),
            runs,
            shutdown_requested,
            setup,
            // Runs recorded before settings were carried start from the
            // session's own.
            settings: settings
                .unwrap_or_else(|| TurnSettings::initial(&input.model, input.context.as_ref())),
            approved_for_session,
            allowed_prefixes,
            ended_requests: ended_requests.into(),
            compact_requested,
            stored_prefix,
            model_defaults,
            lease,
            workspace,
            registry,
            archive,
            turn_heads: turn_heads.into(),
            agents,
            agent_seq,
        }
    }

    /// What the next run starts from: everything, with one more run
    /// counted.
    pub(super) fn carry(&self) -> Carried {
        let Self {
            head,
            pending,
            inbox,
            recent_turn_ids,
            log,
            turns_completed,
            usage,
            last_activity_ms,
            runs,
            shutdown_requested,
            setup,
            settings,
            approved_for_session,
            allowed_prefixes,
            ended_requests,
            compact_requested,
            stored_prefix,
            model_defaults,
            lease,
            workspace,
            registry,
            archive,
            turn_heads,
            agents,
            agent_seq,
        } = self;
        let (events_first, events) = log.carry();
        Carried {
            head: head.clone(),
            pending: pending.clone(),
            inbox: inbox.iter().cloned().collect(),
            recent_turn_ids: recent_turn_ids.iter().cloned().collect(),
            events_first,
            events,
            turns_completed: *turns_completed,
            usage: *usage,
            last_activity_ms: *last_activity_ms,
            runs: runs + 1,
            shutdown_requested: *shutdown_requested,
            setup: setup.clone(),
            settings: Some(settings.clone()),
            approved_for_session: approved_for_session.clone(),
            allowed_prefixes: allowed_prefixes.clone(),
            ended_requests: ended_requests.iter().cloned().collect(),
            compact_requested: *compact_requested,
            stored_prefix: stored_prefix.clone(),
            model_defaults: model_defaults.clone(),
            lease: lease.clone(),
            workspace: workspace.clone(),
            registry: registry.clone(),
            archive: archive.clone(),
            turn_heads: turn_heads.iter().cloned().collect(),
            agents: agents.clone(),
            agent_seq: *agent_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_workflow_api::{ApprovalPolicy, SandboxMode, SandboxSettings, ToolSpec};

    use super::*;

    /// Every field set to something that is not its default. Written
    /// without `..Default::default()`: a new field of `Carried` must be
    /// added here, and so rolled over in this test.
    fn everything() -> Carried {
        Carried {
            head: Some("a".repeat(64)),
            pending: vec![
                AppendItem::Digest("b".repeat(64)),
                AppendItem::Inline(r#"{"type":"function_call_output"}"#.into()),
            ],
            inbox: vec![UserTurn {
                turn_id: "queued".into(),
                item_digest: "c".repeat(64),
                text_preview: "next".into(),
                trace: [(
                    "traceparent".to_string(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
                )]
                .into(),
                ..Default::default()
            }],
            recent_turn_ids: vec!["t1".into(), "queued".into()],
            events_first: 41,
            events: vec!["ZXZlbnQ=".into(), "YW5vdGhlcg==".into()],
            turns_completed: 7,
            usage: Usage {
                input_tokens: 10,
                cached_input_tokens: 2,
                output_tokens: 3,
                reasoning_output_tokens: 1,
                total_tokens: 13,
            },
            last_activity_ms: 1_800_000_000_000,
            runs: 2,
            shutdown_requested: true,
            setup: Some(SessionSetup {
                tools: vec![ToolSpec {
                    name: "shell".into(),
                    json: "{}".into(),
                }],
                context_items: vec!["{}".into()],
                cwd: "/w".into(),
                user_shell: "/bin/zsh".into(),
                mcp_tools: vec![keel_workflow_api::McpToolEntry {
                    name: "mcp__s__t".into(),
                    server: "s".into(),
                    tool: "t".into(),
                    annotated: true,
                    read_only: Some(true),
                    approval_mode: "auto".into(),
                    ..Default::default()
                }],
                mcp_servers: vec![keel_workflow_api::McpServerSeen {
                    name: "s".into(),
                    transport: "stdio".into(),
                    running: true,
                    tool_count: 1,
                    ..Default::default()
                }],
                context_window: 272_000,
                auto_compact_token_limit: 200_000,
            }),
            settings: Some(TurnSettings {
                model: "m".into(),
                approval_policy: ApprovalPolicy::Never,
                sandbox: SandboxSettings {
                    mode: SandboxMode::ReadOnly,
                    ..SandboxSettings::default()
                },
                ..TurnSettings::default()
            }),
            approved_for_session: BTreeSet::from([keel_policy::decision::approval_key(
                &["rm".into(), "-rf".into(), "x".into()],
                "/w",
                keel_policy::SandboxPermissions::UseDefault,
                None,
            )]),
            allowed_prefixes: vec![vec!["git".into(), "status".into()]],
            ended_requests: vec![("call".into(), "aborted".into())],
            compact_requested: true,
            stored_prefix: Some("d".repeat(64)),
            model_defaults: Some(ModelDefaults {
                provider: "openai".into(),
                model: "gpt-5".into(),
                reasoning_effort: "high".into(),
                reasoning_summary: "auto".into(),
                personality: "pragmatic".into(),
                wire_api: "chat".into(),
            }),
            lease: Some("tool-runner-2".into()),
            workspace: Some("/workspaces/clones/abc".into()),
            registry: keel_workflow_api::Registry {
                name: "nightly".into(),
                archived: true,
                last_message: "done".into(),
            },
            archive: Some(keel_workflow_api::EventArchive {
                head: "e".repeat(64),
                upto: 40,
            }),
            turn_heads: vec![TurnHead {
                turn_id: "t1".into(),
                head: Some("f".repeat(64)),
                pending: vec![AppendItem::Digest("0".repeat(64))],
                last_offset: 39,
            }],
            agents: vec![keel_workflow_api::AgentEntry {
                agent_id: "0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10".into(),
                parent_agent_id: "s".into(),
                depth: 1,
                role: "worker".into(),
                status: keel_workflow_api::AgentStatus::Completed(Some("done".into())),
                last_seq: 12,
                usage: Usage {
                    input_tokens: 5,
                    ..Usage::default()
                },
                turns: 1,
                inputs: 1,
                last_offset: 3,
                closed: false,
            }],
            agent_seq: 3,
        }
    }

    #[test]
    fn every_field_survives_a_rollover() {
        let carried = everything();
        let input = SessionInput {
            carried: Some(carried.clone()),
            ..SessionInput::default()
        };
        let next = Durable::resume(&input).carry();
        assert_eq!(
            next,
            Carried {
                runs: carried.runs + 1,
                ..carried
            }
        );
    }

    #[test]
    fn a_new_session_starts_with_its_name() {
        let input = SessionInput {
            name: "nightly build".into(),
            ..SessionInput::default()
        };
        let durable = Durable::resume(&input);
        assert_eq!(durable.registry.name, "nightly build");
        assert!(!durable.registry.archived);
    }

    #[test]
    fn a_new_session_starts_from_its_own_settings() {
        let input = SessionInput {
            model: "from-create".into(),
            created_at_ms: 5,
            ..SessionInput::default()
        };
        let durable = Durable::resume(&input);
        assert_eq!(durable.settings.model, "from-create");
        assert_eq!((durable.runs, durable.last_activity_ms), (0, 5));
        assert_eq!(durable.carry().runs, 1);
    }
}
