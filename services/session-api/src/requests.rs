//! Answers to pending requests (Respond): checked against the session's
//! pending requests for a precise error, turned into the workflow's answer
//! (a dynamic tool's output goes to the blob store first, so history holds
//! only its digest), and delivered as a validated workflow update — the
//! workflow is the authority, so a racing second answer is rejected there.

use keel_blobstore::BlobStore;
use keel_proto::v1 as pb;
use keel_workflow_api::{Answer, ExecPolicyAmendment, RequestKind, ReviewDecision};
use serde_json::json;
use tonic::Status;

/// Total bytes of a user-input answer.
const MAX_USER_INPUT_BYTES: usize = 64 * 1024;
/// An exec-policy amendment is a command prefix: a few words.
const MAX_AMENDMENT_WORDS: usize = 64;
const MAX_AMENDMENT_BYTES: usize = 8 * 1024;
/// Total bytes of a dynamic tool's result.
const MAX_DYNAMIC_RESULT_BYTES: usize = 4 * 1024 * 1024;

/// The workflow's answer for request `id`. When the request is pending its
/// `kind` is known and the answer must fit it; when it is not (any more),
/// the answer is converted all the same and the workflow's validator
/// rejects it with the precise reason (already answered, interrupted,
/// unknown) — or accepts it, should the request have become pending since.
pub(crate) async fn answer(
    blobs: &BlobStore,
    id: &str,
    kind: Option<RequestKind>,
    answer: Option<pb::respond_request::Answer>,
) -> Result<Answer, Status> {
    use pb::respond_request::Answer as A;
    let answer = answer.ok_or_else(|| {
        crate::errors::invalid(
            "an answer is required: decision, user_input, dynamic_tool or elicitation",
        )
    })?;
    let converted = match answer {
        A::Decision(d) => Answer::Review(decision(d, kind)?),
        A::UserInput(u) => {
            let size: usize = u
                .answers
                .iter()
                .map(|(k, v)| k.len() + v.answers.iter().map(String::len).sum::<usize>())
                .sum();
            if size > MAX_USER_INPUT_BYTES {
                return Err(crate::errors::invalid(format!(
                    "user_input: the answers exceed {MAX_USER_INPUT_BYTES} bytes"
                )));
            }
            Answer::UserInput(u.answers.into_iter().map(|(k, v)| (k, v.answers)).collect())
        }
        A::DynamicTool(r) => {
            let item = dynamic_output_item(id, &r)?;
            let output_digest = blobs.put_json(&item).await.map_err(|e| {
                crate::errors::blob_store(format!("cannot store the tool result: {e}"))
            })?;
            Answer::DynamicTool {
                output_digest,
                success: r.success,
            }
        }
        A::Elicitation(e) => elicitation(e)?,
    };
    match kind {
        Some(kind) if !converted.fits(kind) => Err(crate::errors::invalid(format!(
            "request {id:?} is {}; the answer given does not fit it",
            kind.describe()
        ))),
        _ => Ok(converted),
    }
}

/// Accepted content of an elicitation answer, at most.
const MAX_ELICITATION_CONTENT_BYTES: usize = 64 * 1024;

fn elicitation(e: pb::ElicitationAnswer) -> Result<Answer, Status> {
    let action = match pb::ElicitationAction::try_from(e.action) {
        Ok(pb::ElicitationAction::Accept) => "accept",
        Ok(pb::ElicitationAction::Decline) => "decline",
        Ok(pb::ElicitationAction::Cancel) => "cancel",
        _ => {
            return Err(crate::errors::invalid(
                "elicitation.action: ACCEPT, DECLINE or CANCEL",
            ));
        }
    };
    let content_json = if action == "accept" {
        if e.content_json.len() > MAX_ELICITATION_CONTENT_BYTES {
            return Err(crate::errors::invalid(format!(
                "elicitation.content_json: at most {MAX_ELICITATION_CONTENT_BYTES} bytes"
            )));
        }
        match serde_json::from_str::<serde_json::Value>(&e.content_json) {
            Ok(serde_json::Value::Object(_)) => e.content_json,
            _ => {
                return Err(crate::errors::invalid(
                    "elicitation.content_json: an accepted answer is a JSON object",
                ));
            }
        }
    } else {
        String::new()
    };
    Ok(Answer::Elicitation {
        action: action.into(),
        content_json,
    })
}

fn decision(d: pb::ReviewDecision, kind: Option<RequestKind>) -> Result<ReviewDecision, Status> {
    use pb::ReviewDecisionKind as K;
    Ok(match K::try_from(d.kind) {
        Ok(K::Approved) => ReviewDecision::Approved,
        Ok(K::ApprovedForSession) => ReviewDecision::ApprovedForSession,
        Ok(K::Denied) => ReviewDecision::Denied,
        Ok(K::Abort) => ReviewDecision::Abort,
        Ok(K::ApprovedExecpolicyAmendment) => {
            if kind.is_some_and(|k| k != RequestKind::ExecApproval) {
                return Err(crate::errors::invalid(
                    "decision: an exec-policy amendment applies to command approvals only",
                ));
            }
            if d.execpolicy_amendment.len() > MAX_AMENDMENT_WORDS
                || d.execpolicy_amendment
                    .iter()
                    .map(String::len)
                    .sum::<usize>()
                    > MAX_AMENDMENT_BYTES
            {
                return Err(crate::errors::invalid(format!(
                    "decision.execpolicy_amendment: at most {MAX_AMENDMENT_WORDS} words and {MAX_AMENDMENT_BYTES} bytes"
                )));
            }
            if d.execpolicy_amendment.is_empty() || d.execpolicy_amendment[0].is_empty() {
                return Err(crate::errors::invalid(
                    "decision.execpolicy_amendment: the command prefix to allow is required",
                ));
            }
            ReviewDecision::ApprovedExecpolicyAmendment {
                proposed_execpolicy_amendment: ExecPolicyAmendment {
                    command: d.execpolicy_amendment,
                },
            }
        }
        Ok(K::Unspecified) | Err(_) => {
            return Err(crate::errors::invalid(
                "decision.kind is required: APPROVED, APPROVED_FOR_SESSION, APPROVED_EXECPOLICY_AMENDMENT, DENIED or ABORT",
            ));
        }
    })
}

/// The `function_call_output` a dynamic tool's result becomes: plain text
/// when it is one text, else Responses API content items.
fn dynamic_output_item(
    call_id: &str,
    r: &pb::DynamicToolResult,
) -> Result<serde_json::Value, Status> {
    use pb::dynamic_tool_content::Kind;
    let size: usize = r
        .content
        .iter()
        .map(|c| match &c.kind {
            Some(Kind::Text(t)) | Some(Kind::ImageUrl(t)) => t.len(),
            None => 0,
        })
        .sum();
    if size > MAX_DYNAMIC_RESULT_BYTES {
        return Err(crate::errors::invalid(format!(
            "dynamic_tool: the result exceeds {MAX_DYNAMIC_RESULT_BYTES} bytes"
        )));
    }
    let output = match r.content.as_slice() {
        [] => json!(""),
        [
            pb::DynamicToolContent {
                kind: Some(Kind::Text(t)),
            },
        ] => json!(t),
        items => {
            let mut parts = Vec::with_capacity(items.len());
            for c in items {
                parts.push(match &c.kind {
                    Some(Kind::Text(t)) => json!({"type": "input_text", "text": t}),
                    Some(Kind::ImageUrl(u)) => json!({"type": "input_image", "image_url": u}),
                    None => {
                        return Err(crate::errors::invalid(
                            "dynamic_tool.content: every item needs text or image_url",
                        ));
                    }
                });
            }
            json!(parts)
        }
    };
    Ok(json!({"type": "function_call_output", "call_id": call_id, "output": output}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(kind: RequestKind) -> Option<RequestKind> {
        Some(kind)
    }

    #[test]
    fn amendments_are_a_few_words() {
        let amend = |words: Vec<String>| {
            decision(
                pb::ReviewDecision {
                    kind: pb::ReviewDecisionKind::ApprovedExecpolicyAmendment as i32,
                    execpolicy_amendment: words,
                },
                pending(RequestKind::ExecApproval),
            )
        };
        assert!(amend(vec!["git".into(), "status".into()]).is_ok());
        let many = amend((0..=MAX_AMENDMENT_WORDS).map(|i| i.to_string()).collect());
        assert!(many.unwrap_err().message().contains("at most"));
        assert!(amend(vec!["x".repeat(MAX_AMENDMENT_BYTES + 1)]).is_err());
    }

    #[tokio::test]
    async fn answers_must_fit_the_request() {
        let blobs = BlobStore::open("memory://").unwrap();
        let decision = pb::respond_request::Answer::Decision(pb::ReviewDecision {
            kind: pb::ReviewDecisionKind::Approved as i32,
            execpolicy_amendment: vec![],
        });
        let ok = answer(
            &blobs,
            "call_1",
            pending(RequestKind::ExecApproval),
            Some(decision.clone()),
        )
        .await
        .unwrap();
        assert_eq!(ok, Answer::Review(ReviewDecision::Approved));
        let err = answer(
            &blobs,
            "call_1",
            pending(RequestKind::UserInput),
            Some(decision),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("a question to the user"), "{err}");
        let amend = pb::respond_request::Answer::Decision(pb::ReviewDecision {
            kind: pb::ReviewDecisionKind::ApprovedExecpolicyAmendment as i32,
            execpolicy_amendment: vec![],
        });
        let err = answer(
            &blobs,
            "call_1",
            pending(RequestKind::ExecApproval),
            Some(amend),
        )
        .await
        .unwrap_err();
        assert!(err.message().contains("execpolicy_amendment"), "{err}");
        let missing = answer(&blobs, "call_1", pending(RequestKind::ExecApproval), None).await;
        assert!(missing.is_err());
    }

    #[tokio::test]
    async fn dynamic_results_are_stored() {
        let blobs = BlobStore::open("memory://").unwrap();
        let result = pb::respond_request::Answer::DynamicTool(pb::DynamicToolResult {
            content: vec![pb::DynamicToolContent {
                kind: Some(pb::dynamic_tool_content::Kind::Text("42".into())),
            }],
            success: true,
        });
        let a = answer(
            &blobs,
            "call_1",
            pending(RequestKind::DynamicTool),
            Some(result),
        )
        .await
        .unwrap();
        let Answer::DynamicTool {
            output_digest,
            success,
        } = a
        else {
            panic!("not a dynamic answer")
        };
        assert!(success);
        let item: serde_json::Value = blobs.get_json(&output_digest).await.unwrap();
        assert_eq!(
            item,
            json!({"type": "function_call_output", "call_id": "call_1", "output": "42"})
        );
    }
}
