//! `keel approve`, `keel deny` and `keel answer`: answering a session's
//! pending request from a script or another terminal, and the Respond call
//! that `keel run` also uses for answers typed at its prompt.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use keel_proto::v1::event::Msg;
use keel_proto::v1::respond_request::Answer;
use keel_proto::v1::{
    ElicitationAction, ElicitationAnswer, QuestionAnswer, RespondRequest, ReviewDecision,
    ReviewDecisionKind, UserInputAnswer,
};
use tonic::Code;

use crate::client::SessionApi;
use crate::render::{note, shell_join};

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The session.
    session: String,
    /// The request: the `call_id` of its event (see `keel pending`).
    request_id: String,
    /// The sub-agent that asked (the request event's `agent_id`); needed
    /// only when two agents have a request with this id pending.
    #[arg(long, value_name = "AGENT_ID")]
    agent: Option<String>,
    /// Also approve the same command (or, for a patch, the same files) for
    /// the rest of the session.
    #[arg(long, conflicts_with = "amendment")]
    for_session: bool,
    /// Also allow every command starting with these words for the rest of
    /// the session (usually the request's proposed amendment). Comes last:
    /// every word after it belongs to the prefix.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "WORD")]
    amendment: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DenyArgs {
    session: String,
    request_id: String,
    /// The sub-agent that asked (the request event's `agent_id`); needed
    /// only when two agents have a request with this id pending.
    #[arg(long, value_name = "AGENT_ID")]
    agent: Option<String>,
    /// Also end the turn (without it, the model is told and goes on).
    #[arg(long)]
    abort: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AnswerArgs {
    session: String,
    request_id: String,
    /// The sub-agent that asked (the request event's `agent_id`); needed
    /// only when two agents have a request with this id pending.
    #[arg(long, value_name = "AGENT_ID")]
    agent: Option<String>,
    /// An answer to question QID; repeat for more questions, or for more
    /// answers to the same one.
    #[arg(
        long = "answer",
        value_name = "QID=TEXT",
        value_parser = parse_answer,
        required_unless_present_any = ["accept", "decline", "cancel"],
        conflicts_with_all = ["accept", "decline", "cancel"]
    )]
    answers: Vec<(String, String)>,
    /// Answer an MCP server's question (`elicitation_request`) with this
    /// JSON object, matching its schema.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["decline", "cancel"])]
    accept: Option<String>,
    /// Decline an MCP server's question (the call goes on without it).
    #[arg(long, conflicts_with = "cancel")]
    decline: bool,
    /// Cancel an MCP server's question (and with it the operation).
    #[arg(long)]
    cancel: bool,
}

fn parse_answer(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((id, text)) if !id.trim().is_empty() => Ok((id.trim().to_string(), text.to_string())),
        _ => Err(format!("{raw:?} is not QID=TEXT")),
    }
}

pub(crate) async fn approve(mut api: SessionApi, args: ApproveArgs) -> Result<()> {
    let kind = if !args.amendment.is_empty() {
        ReviewDecisionKind::ApprovedExecpolicyAmendment
    } else if args.for_session {
        ReviewDecisionKind::ApprovedForSession
    } else {
        ReviewDecisionKind::Approved
    };
    let answer = Answer::Decision(ReviewDecision {
        kind: kind as i32,
        execpolicy_amendment: args.amendment,
    });
    respond(
        &mut api,
        &args.session,
        &args.request_id,
        args.agent.as_deref(),
        answer,
    )
    .await?;
    note(format_args!("approved {}", args.request_id));
    Ok(())
}

pub(crate) async fn deny(mut api: SessionApi, args: DenyArgs) -> Result<()> {
    let kind = if args.abort {
        ReviewDecisionKind::Abort
    } else {
        ReviewDecisionKind::Denied
    };
    let answer = Answer::Decision(ReviewDecision {
        kind: kind as i32,
        execpolicy_amendment: Vec::new(),
    });
    respond(
        &mut api,
        &args.session,
        &args.request_id,
        args.agent.as_deref(),
        answer,
    )
    .await?;
    let what = if args.abort {
        "denied (turn aborted)"
    } else {
        "denied"
    };
    note(format_args!("{what} {}", args.request_id));
    Ok(())
}

pub(crate) async fn answer(mut api: SessionApi, args: AnswerArgs) -> Result<()> {
    let answer = if let Some(content) = args.accept {
        if !matches!(
            serde_json::from_str::<serde_json::Value>(&content),
            Ok(serde_json::Value::Object(_))
        ) {
            bail!("--accept takes a JSON object, e.g. '{{\"name\": \"Ada\"}}'");
        }
        elicitation(ElicitationAction::Accept, content)
    } else if args.decline {
        elicitation(ElicitationAction::Decline, String::new())
    } else if args.cancel {
        elicitation(ElicitationAction::Cancel, String::new())
    } else {
        user_input(args.answers)
    };
    respond(
        &mut api,
        &args.session,
        &args.request_id,
        args.agent.as_deref(),
        answer,
    )
    .await?;
    note(format_args!("answered {}", args.request_id));
    Ok(())
}

fn elicitation(action: ElicitationAction, content_json: String) -> Answer {
    Answer::Elicitation(ElicitationAnswer {
        action: action as i32,
        content_json,
    })
}

/// Groups `QID=TEXT` pairs by question, keeping their order.
fn user_input(pairs: Vec<(String, String)>) -> Answer {
    let mut answers = std::collections::HashMap::<String, QuestionAnswer>::new();
    for (id, text) in pairs {
        answers.entry(id).or_default().answers.push(text);
    }
    Answer::UserInput(UserInputAnswer { answers })
}

/// Calls Respond; a request that is not pending (unknown, already answered,
/// or its turn ended) and an answer that does not fit are one-line errors.
pub(crate) async fn respond(
    api: &mut SessionApi,
    session_id: &str,
    request_id: &str,
    agent_id: Option<&str>,
    answer: Answer,
) -> Result<()> {
    if request_id.trim().is_empty() {
        bail!("the request id is empty (see `keel pending {session_id}`)");
    }
    // An approved amendment also holds for later sessions: it goes into
    // `$CODEX_HOME/rules/default.rules`, as Codex writes it.
    let amendment = match &answer {
        Answer::Decision(d)
            if d.kind == ReviewDecisionKind::ApprovedExecpolicyAmendment as i32
                && !d.execpolicy_amendment.is_empty() =>
        {
            Some(d.execpolicy_amendment.clone())
        }
        _ => None,
    };
    let request = RespondRequest {
        session_id: session_id.to_string(),
        request_id: request_id.to_string(),
        answer: Some(answer),
        agent_id: agent_id.unwrap_or_default().to_string(),
    };
    match api.client.respond(request).await {
        Ok(_) => {
            if let Some(prefix) = amendment {
                match crate::config::persist_amendment(&prefix) {
                    Ok(path) => note(format_args!(
                        "added `{}` to {}",
                        shell_join(&prefix),
                        path.display()
                    )),
                    Err(e) => note(format_args!(
                        "keel: warning: the session allows `{}`, but later sessions will not: {e:#}",
                        shell_join(&prefix)
                    )),
                }
            }
            Ok(())
        }
        // The server's message names the request and why it is not pending.
        Err(status) if status.code() == Code::FailedPrecondition => {
            Err(anyhow!("{}", status.message()))
        }
        Err(status) if status.code() == Code::InvalidArgument => Err(anyhow!(
            "cannot answer request {request_id:?} that way: {}",
            status.message()
        )),
        Err(status) => Err(session_error(api, "Respond", session_id, &status)),
    }
}

/// An RPC error about a session, with NOT_FOUND spelled out.
pub(crate) fn session_error(
    api: &SessionApi,
    rpc: &str,
    session_id: &str,
    status: &tonic::Status,
) -> anyhow::Error {
    match status.code() {
        Code::NotFound => anyhow!(
            "no session {session_id:?} at session-api {} (list them with `keel sessions`)",
            api.target.display
        ),
        _ => api.error(rpc, status),
    }
}

/// How to answer a request from another terminal or a script; `None` for
/// messages that are not requests.
pub(crate) fn how_to_answer(session_id: &str, msg: &Msg) -> Option<String> {
    let s = session_id;
    Some(match msg {
        Msg::ExecApprovalRequest(r) => {
            let id = &r.call_id;
            let amendment = if r.proposed_execpolicy_amendment.is_empty() {
                String::new()
            } else {
                format!(
                    " | --amendment {}",
                    shell_join(&r.proposed_execpolicy_amendment)
                )
            };
            format!(
                "answer with: keel approve {s} {id} [--for-session{amendment}], \
                 or keel deny {s} {id} [--abort]"
            )
        }
        Msg::ApplyPatchApprovalRequest(r) => {
            let id = &r.call_id;
            format!(
                "answer with: keel approve {s} {id} [--for-session], \
                 or keel deny {s} {id} [--abort]"
            )
        }
        Msg::RequestUserInput(r) => {
            let flags: Vec<String> = r
                .questions
                .iter()
                .map(|q| format!("--answer {}=TEXT", q.id))
                .collect();
            format!(
                "answer with: keel answer {s} {} {}",
                r.call_id,
                flags.join(" ")
            )
        }
        Msg::DynamicToolCallRequest(r) => format!(
            "waiting for the client that provides {} to answer call {} (keel cannot)",
            r.tool, r.call_id
        ),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keel_proto::v1::{
        ApplyPatchApprovalRequest, DynamicToolCallRequest, ExecApprovalRequest, RequestUserInput,
        UserInputQuestion,
    };

    #[test]
    fn answers_parse_and_group() {
        assert_eq!(
            parse_answer("lang=Rust, please").unwrap(),
            ("lang".to_string(), "Rust, please".to_string())
        );
        assert_eq!(
            parse_answer("x=a=b").unwrap(),
            ("x".to_string(), "a=b".to_string())
        );
        assert_eq!(parse_answer("x=").unwrap().1, "");
        assert!(parse_answer("=text").is_err());
        assert!(parse_answer("no-equals").is_err());
        let Answer::UserInput(u) = user_input(vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ]) else {
            panic!("not user input");
        };
        assert_eq!(u.answers["a"].answers, ["1", "3"]);
        assert_eq!(u.answers["b"].answers, ["2"]);
    }

    #[test]
    fn hints_name_the_commands() {
        let exec = Msg::ExecApprovalRequest(ExecApprovalRequest {
            call_id: "c1".into(),
            proposed_execpolicy_amendment: vec!["rm".into(), "-rf".into()],
            ..Default::default()
        });
        assert_eq!(
            how_to_answer("s1", &exec).unwrap(),
            "answer with: keel approve s1 c1 [--for-session | --amendment rm -rf], \
             or keel deny s1 c1 [--abort]"
        );
        let patch = Msg::ApplyPatchApprovalRequest(ApplyPatchApprovalRequest {
            call_id: "p1".into(),
            ..Default::default()
        });
        assert_eq!(
            how_to_answer("s1", &patch).unwrap(),
            "answer with: keel approve s1 p1 [--for-session], or keel deny s1 p1 [--abort]"
        );
        let input = Msg::RequestUserInput(RequestUserInput {
            call_id: "q1".into(),
            questions: vec![
                UserInputQuestion {
                    id: "lang".into(),
                    ..Default::default()
                },
                UserInputQuestion {
                    id: "db".into(),
                    ..Default::default()
                },
            ],
        });
        assert_eq!(
            how_to_answer("s1", &input).unwrap(),
            "answer with: keel answer s1 q1 --answer lang=TEXT --answer db=TEXT"
        );
        let tool = Msg::DynamicToolCallRequest(DynamicToolCallRequest {
            call_id: "d1".into(),
            tool: "lookup".into(),
            ..Default::default()
        });
        assert!(how_to_answer("s1", &tool).unwrap().contains("lookup"));
        assert_eq!(
            how_to_answer("s1", &Msg::TurnStarted(Default::default())),
            None
        );
    }
}
