//! Interactive answers in `keel run`: when stdin is a terminal, approval
//! requests and questions of the turn are asked on the terminal, one at a
//! time, in the order they arrive.
//!
//! This module is the pure part — which request is being asked, what the
//! prompt says, what a typed line means — so it is testable without a
//! terminal; `run` does the I/O. Input is read a line at a time (cooked
//! mode): raw single-key input would have to take over Ctrl-C, which already
//! means "interrupt the turn", and restore the terminal on every exit path.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;

use keel_proto::v1::event::Msg;
use keel_proto::v1::respond_request::Answer;
use keel_proto::v1::{
    ApplyPatchApprovalRequest, ElicitationAction, ElicitationAnswer, ElicitationRequest,
    ExecApprovalRequest, QuestionAnswer, RequestUserInput, ReviewDecision, ReviewDecisionKind as K,
    UserInputAnswer,
};
use tokio::sync::mpsc;

use crate::render::shell_join;

/// A request that can be answered from the terminal.
#[derive(Debug, Clone)]
enum Request {
    Exec(ExecApprovalRequest),
    Patch(ApplyPatchApprovalRequest),
    Input {
        request: RequestUserInput,
        /// Answers to the questions asked so far.
        answers: HashMap<String, QuestionAnswer>,
    },
    /// An MCP server's question: answered with a JSON object.
    Elicitation(ElicitationRequest),
}

impl Request {
    fn id(&self) -> &str {
        match self {
            Request::Exec(r) => &r.call_id,
            Request::Patch(r) => &r.call_id,
            Request::Input { request, .. } => &request.call_id,
            Request::Elicitation(r) => &r.request_id,
        }
    }
}

/// Whether `msg` is a request the terminal can answer (a client tool call
/// is not: only the client that provides the tool can).
pub(crate) fn askable(msg: &Msg) -> bool {
    match msg {
        Msg::ExecApprovalRequest(_) | Msg::ApplyPatchApprovalRequest(_) => true,
        Msg::RequestUserInput(r) => !r.questions.is_empty(),
        Msg::ElicitationRequest(_) => true,
        _ => false,
    }
}

/// What a typed line leads to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Ask (again, or the next question) with this prompt.
    Prompt(String),
    /// Send this answer; then ask `next` if another request waits.
    Answer {
        request_id: String,
        answer: Answer,
        next: Option<String>,
    },
}

/// The requests waiting for the person at the terminal; the first is the
/// one being asked.
#[derive(Debug, Default)]
pub(crate) struct Asker {
    queue: VecDeque<Request>,
}

impl Asker {
    /// Takes a request event; returns the prompt when it is asked at once.
    pub(crate) fn offer(&mut self, msg: &Msg) -> Option<String> {
        let request = match msg {
            Msg::ExecApprovalRequest(r) => Request::Exec(r.clone()),
            Msg::ApplyPatchApprovalRequest(r) => Request::Patch(r.clone()),
            Msg::RequestUserInput(r) if !r.questions.is_empty() => Request::Input {
                request: r.clone(),
                answers: HashMap::new(),
            },
            Msg::ElicitationRequest(r) => Request::Elicitation(r.clone()),
            _ => return None,
        };
        if self.queue.iter().any(|q| q.id() == request.id()) {
            return None;
        }
        self.queue.push_back(request);
        (self.queue.len() == 1).then(|| self.prompt()).flatten()
    }

    /// A request was answered elsewhere, or ended with its turn: stop asking
    /// it. Returns the next prompt when it was the one being asked.
    pub(crate) fn resolved(&mut self, call_id: &str) -> Option<String> {
        let position = self.queue.iter().position(|q| q.id() == call_id)?;
        self.queue.remove(position);
        if position == 0 { self.prompt() } else { None }
    }

    pub(crate) fn asking(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether what is being asked now is an approval (answered with one
    /// key: y / a / p / n / q) rather than a question answered with a line.
    pub(crate) fn wants_decision(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Request::Exec(_) | Request::Patch(_))
        )
    }

    /// The prompt for what is being asked now.
    pub(crate) fn prompt(&self) -> Option<String> {
        Some(match self.queue.front()? {
            Request::Exec(r) => {
                let mut choices = vec!["y = yes".to_string(), "a = yes for this session".into()];
                if offers(r, K::ApprovedExecpolicyAmendment) {
                    choices.push(format!(
                        "p = yes, and allow `{}` from now on",
                        shell_join(&r.proposed_execpolicy_amendment)
                    ));
                }
                choices.extend(["n = no".into(), "q = no, and stop the turn".into()]);
                format!("run it? {}: ", choices.join(", "))
            }
            Request::Patch(_) => "apply it? y = yes, a = yes for these files this session, \
                                  n = no, q = no, and stop the turn: "
                .to_string(),
            Request::Input { request, answers } => {
                let q = request.questions.get(answers.len())?;
                let n = q.options.len();
                match (n, q.is_other) {
                    (0, _) => format!("[{}] your answer: ", q.id),
                    (1, false) => format!("[{}] answer 1: ", q.id),
                    (_, false) => format!("[{}] answer 1-{n}: ", q.id),
                    (1, true) => format!("[{}] answer 1, or in your own words: ", q.id),
                    (_, true) => format!("[{}] answer 1-{n}, or in your own words: ", q.id),
                }
            }
            Request::Elicitation(r) => format!(
                "[{}] {}: answer as a JSON object, d = decline, c = cancel: ",
                r.server_name, r.message
            ),
        })
    }

    /// Interprets a typed line for the request being asked.
    pub(crate) fn input(&mut self, line: &str) -> Option<Step> {
        let again = |asker: &Self, why: &str| {
            asker
                .prompt()
                .map(|prompt| Step::Prompt(format!("{why}{prompt}")))
        };
        let line = line.trim_end_matches(['\r', '\n']);
        let answer = match self.queue.front_mut()? {
            Request::Exec(r) => match decision(line) {
                Some(kind) if offers(r, kind) => review(kind, r),
                Some(_) => return again(self, "that is not offered here; "),
                None => return again(self, ""),
            },
            Request::Patch(_) => match decision(line) {
                Some(K::ApprovedExecpolicyAmendment) => {
                    return again(self, "that is not offered here; ");
                }
                Some(kind) => Answer::Decision(ReviewDecision {
                    kind: kind as i32,
                    execpolicy_amendment: Vec::new(),
                }),
                None => return again(self, ""),
            },
            Request::Input { request, answers } => {
                let q = request.questions.get(answers.len())?;
                let text = line.trim();
                let chosen = text
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| q.options.get(i));
                let given = match chosen {
                    Some(option) => option.label.clone(),
                    None if text.is_empty() => return again(self, ""),
                    None if q.is_other || q.options.is_empty() => text.to_string(),
                    None => return again(self, "pick one of the numbers; "),
                };
                answers.insert(
                    q.id.clone(),
                    QuestionAnswer {
                        answers: vec![given],
                    },
                );
                if answers.len() < request.questions.len() {
                    return self.prompt().map(Step::Prompt);
                }
                Answer::UserInput(UserInputAnswer {
                    answers: std::mem::take(answers),
                })
            }
            Request::Elicitation(_) => {
                let text = line.trim();
                let (action, content_json) = match text {
                    "d" | "decline" => (ElicitationAction::Decline, String::new()),
                    "c" | "cancel" => (ElicitationAction::Cancel, String::new()),
                    "" => return again(self, ""),
                    json => match serde_json::from_str::<serde_json::Value>(json) {
                        Ok(serde_json::Value::Object(_)) => {
                            (ElicitationAction::Accept, json.to_string())
                        }
                        _ => return again(self, "that is not a JSON object; "),
                    },
                };
                Answer::Elicitation(ElicitationAnswer {
                    action: action as i32,
                    content_json,
                })
            }
        };
        let request = self.queue.pop_front()?;
        Some(Step::Answer {
            request_id: request.id().to_string(),
            answer,
            next: self.prompt(),
        })
    }
}

/// An exec request offers a decision if it lists it; a server that lists
/// none accepts the usual ones (the amendment only with a proposal).
fn offers(r: &ExecApprovalRequest, kind: K) -> bool {
    if r.available_decisions.is_empty() {
        kind != K::ApprovedExecpolicyAmendment || !r.proposed_execpolicy_amendment.is_empty()
    } else {
        r.available_decisions.contains(&(kind as i32))
    }
}

fn review(kind: K, r: &ExecApprovalRequest) -> Answer {
    let execpolicy_amendment = if kind == K::ApprovedExecpolicyAmendment {
        r.proposed_execpolicy_amendment.clone()
    } else {
        Vec::new()
    };
    Answer::Decision(ReviewDecision {
        kind: kind as i32,
        execpolicy_amendment,
    })
}

/// y / a / p / n / q (or Esc then Enter); case-insensitive.
fn decision(line: &str) -> Option<K> {
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(K::Approved),
        "a" | "always" => Some(K::ApprovedForSession),
        "p" => Some(K::ApprovedExecpolicyAmendment),
        "n" | "no" => Some(K::Denied),
        "q" | "\x1b" | "esc" | "abort" => Some(K::Abort),
        _ => None,
    }
}

/// Lines typed on stdin, read by a plain thread (a blocking read cannot be
/// cancelled, and a tokio blocking task would hold up the runtime's exit).
/// The channel closes at end of input.
pub(crate) fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests;
