//! Tests of what keys do: the composer, approvals and questions, `/`
//! commands, interrupting and quitting.

#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use keel_proto::v1::event::Msg;
use keel_proto::v1::{
    Event, ExecApprovalRequest, RequestUserInput, ReviewDecision, ReviewDecisionKind, TurnStarted,
    UserInputOption, UserInputQuestion,
};

use super::*;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn typed(app: &mut App, text: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    for c in text.chars() {
        actions.extend(app.key(key(KeyCode::Char(c))));
    }
    actions
}

fn event(offset: u64, msg: Msg) -> Event {
    Event {
        agent_id: String::new(),
        parent_agent_id: String::new(),
        offset,
        turn_id: "t1".to_string(),
        time: None,
        msg: Some(msg),
    }
}

fn running(app: &mut App) {
    app.session_id = Some("s1".to_string());
    app.transcript.event(
        &event(1, Msg::TurnStarted(TurnStarted {})),
        SystemTime::now(),
    );
}

fn approval(app: &mut App) {
    running(app);
    app.transcript.event(
        &event(
            2,
            Msg::ExecApprovalRequest(ExecApprovalRequest {
                call_id: "call_rm".to_string(),
                command: vec!["rm".to_string(), "x".to_string()],
                ..Default::default()
            }),
        ),
        SystemTime::now(),
    );
}

#[test]
fn enter_sends_the_composer_text() {
    let mut app = App::default();
    assert!(typed(&mut app, "fix it").is_empty());
    assert!(!app.key(key(KeyCode::Enter)).is_empty());
    assert!(app.composer.is_empty());
    assert_eq!(app.pending.len(), 1);
    assert_eq!(app.pending[0].1, "fix it");
    // Blank text sends nothing.
    assert!(app.key(key(KeyCode::Enter)).is_empty());
    typed(&mut app, "again");
    let actions = app.key(key(KeyCode::Enter));
    let [Action::Send { text, turn_id }] = &actions[..] else {
        panic!("{actions:?}");
    };
    assert_eq!(text, "again");
    assert_eq!(turn_id, &app.pending[1].0);
    // Up brings the last message back.
    app.key(key(KeyCode::Up));
    assert_eq!(app.composer.text(), "again");
}

#[test]
fn approvals_take_one_key() {
    let mut app = App::default();
    approval(&mut app);
    assert!(app.prompt().unwrap().starts_with("run it? y = yes"));
    // A key that answers nothing asks again; other typing waits.
    assert!(app.key(key(KeyCode::Char('x'))).is_empty());
    assert!(app.prompt().unwrap().starts_with("run it?"));
    assert!(app.composer.is_empty());
    let actions = app.key(key(KeyCode::Char('y')));
    assert_eq!(
        actions,
        [Action::Respond {
            request_id: "call_rm".to_string(),
            answer: Answer::Decision(ReviewDecision {
                kind: ReviewDecisionKind::Approved as i32,
                execpolicy_amendment: Vec::new(),
            }),
        }]
    );
    assert_eq!(app.prompt(), None, "nothing else is asked");
    // Typing goes to the composer again.
    typed(&mut app, "n");
    assert_eq!(app.composer.text(), "n");

    let mut app = App::default();
    approval(&mut app);
    let actions = app.key(KeyEvent::new(KeyCode::Char('Q'), KeyModifiers::SHIFT));
    let [Action::Respond { answer, .. }] = &actions[..] else {
        panic!("{actions:?}");
    };
    assert_eq!(
        answer,
        &Answer::Decision(ReviewDecision {
            kind: ReviewDecisionKind::Abort as i32,
            execpolicy_amendment: Vec::new(),
        })
    );
    // `p` is not offered without a proposed amendment.
    let mut app = App::default();
    approval(&mut app);
    assert!(app.key(key(KeyCode::Char('p'))).is_empty());
    assert!(
        app.prompt()
            .unwrap()
            .starts_with("that is not offered here"),
        "{:?}",
        app.prompt()
    );
    // Esc interrupts the turn instead.
    assert_eq!(app.key(key(KeyCode::Esc)), [Action::Interrupt]);
}

#[test]
fn questions_are_answered_from_the_composer() {
    let mut app = App::default();
    running(&mut app);
    app.transcript.event(
        &event(
            2,
            Msg::RequestUserInput(RequestUserInput {
                call_id: "call_ask".to_string(),
                questions: vec![UserInputQuestion {
                    id: "lang".to_string(),
                    header: "Language".to_string(),
                    question: "Which?".to_string(),
                    options: vec![
                        UserInputOption {
                            label: "Rust".to_string(),
                            description: String::new(),
                        },
                        UserInputOption {
                            label: "Go".to_string(),
                            description: String::new(),
                        },
                    ],
                    is_other: false,
                }],
            }),
        ),
        SystemTime::now(),
    );
    assert_eq!(app.prompt().unwrap(), "[lang] answer 1-2: ");
    typed(&mut app, "1");
    let actions = app.key(key(KeyCode::Enter));
    let [Action::Respond { request_id, answer }] = &actions[..] else {
        panic!("{actions:?}");
    };
    assert_eq!(request_id, "call_ask");
    let Answer::UserInput(answers) = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(answers.answers["lang"].answers, ["Rust"]);
    assert!(app.pending.is_empty(), "an answer is not a turn");
}

#[test]
fn esc_interrupts_only_a_running_turn() {
    let mut app = App::default();
    assert!(app.key(key(KeyCode::Esc)).is_empty());
    running(&mut app);
    assert_eq!(app.key(key(KeyCode::Esc)), [Action::Interrupt]);
}

#[test]
fn quitting() {
    let mut app = App::default();
    typed(&mut app, "draft");
    assert!(app.key(ctrl('c')).is_empty(), "clears the composer first");
    assert!(app.composer.is_empty() && !app.quit);
    assert!(app.key(ctrl('c')).is_empty());
    assert!(!app.quit, "once arms");
    typed(&mut app, "x");
    app.key(ctrl('c'));
    app.key(ctrl('c'));
    assert!(!app.quit, "another key disarms");
    assert_eq!(app.key(ctrl('c')), [Action::Quit]);
    assert!(app.quit);

    let mut app = App::default();
    typed(&mut app, "x");
    app.key(ctrl('d'));
    assert!(!app.quit, "Ctrl-D quits only on an empty composer");
    app.key(key(KeyCode::Backspace));
    assert_eq!(app.key(ctrl('d')), [Action::Quit]);

    let mut app = App::default();
    typed(&mut app, "/quit");
    assert_eq!(app.key(key(KeyCode::Enter)), [Action::Quit]);

    // Ctrl-C on a running turn interrupts it, and a second one quits.
    let mut app = App::default();
    running(&mut app);
    assert_eq!(app.key(ctrl('c')), [Action::Interrupt]);
    assert_eq!(app.key(ctrl('c')), [Action::Quit]);
}

#[test]
fn slash_commands() {
    assert_eq!(slash("/new"), Ok(Slash::New));
    assert_eq!(slash(" /resume "), Ok(Slash::Resume));
    assert_eq!(slash("/model gpt-5"), Ok(Slash::Model("gpt-5".to_string())));
    assert!(slash("/model").is_err());
    assert_eq!(
        slash("/approvals on-failure"),
        Ok(Slash::Approvals(PolicyArg::OnFailure))
    );
    assert_eq!(
        slash("/approvals never"),
        Ok(Slash::Approvals(PolicyArg::Never))
    );
    assert!(slash("/approvals sometimes").is_err());
    assert!(slash("/new now").is_err());
    assert!(
        slash("/frobnicate")
            .unwrap_err()
            .contains("unknown command")
    );

    // Before a session exists, /model and /approvals set the new one's.
    let mut app = App::default();
    typed(&mut app, "/model other-model");
    assert!(app.key(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.settings.model.as_deref(), Some("other-model"));
    assert_eq!(app.transcript.status.model, "other-model");
    typed(&mut app, "/approvals untrusted");
    app.key(key(KeyCode::Enter));
    assert_eq!(app.settings.approval_policy, Some(PolicyArg::Untrusted));
    // With a session, they change it.
    app.session_id = Some("s1".to_string());
    typed(&mut app, "/model m2");
    let actions = app.key(key(KeyCode::Enter));
    assert_eq!(
        actions,
        [Action::Override(TurnContext {
            model: Some("m2".to_string()),
            ..Default::default()
        })]
    );
    typed(&mut app, "/approvals never");
    let actions = app.key(key(KeyCode::Enter));
    let [Action::Override(context)] = &actions[..] else {
        panic!("{actions:?}");
    };
    assert_eq!(
        context.approval_policy,
        keel_proto::v1::ApprovalPolicy::Never as i32
    );
    typed(&mut app, "/compact");
    assert_eq!(app.key(key(KeyCode::Enter)), [Action::Compact]);
    typed(&mut app, "/status");
    assert!(app.key(key(KeyCode::Enter)).is_empty());
    let lines: Vec<String> = app.transcript.lines().into_iter().map(|l| l.1).collect();
    assert!(lines.contains(&"session:   s1".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"model:     other-model".to_string()),
        "{lines:?}"
    );
    typed(&mut app, "/bogus");
    app.key(key(KeyCode::Enter));
    assert!(
        app.transcript
            .lines()
            .last()
            .unwrap()
            .1
            .starts_with("unknown command")
    );

    // /resume opens the picker; Enter there opens a session.
    typed(&mut app, "/resume");
    assert_eq!(app.key(key(KeyCode::Enter)), [Action::ListSessions]);
    let picker = app.picker.as_mut().unwrap();
    picker.loaded(vec![keel_proto::v1::Session {
        session_id: "other".to_string(),
        ..Default::default()
    }]);
    assert_eq!(
        app.key(key(KeyCode::Enter)),
        [Action::Open("other".to_string())]
    );
    assert!(app.picker.is_none());
    // /new forgets the session.
    typed(&mut app, "/new");
    app.key(key(KeyCode::Enter));
    assert_eq!(app.session_id, None);
}

#[test]
fn paste_goes_into_the_composer() {
    let mut app = App::default();
    app.paste("line one\nline two");
    assert_eq!(app.composer.lines().len(), 2);
    approval(&mut app);
    app.paste("ignored");
    assert_eq!(app.composer.text(), "line one\nline two");
}

#[test]
fn rename_and_fork_need_an_open_session() {
    assert_eq!(
        slash("/rename nightly build"),
        Ok(Slash::Rename("nightly build".to_string()))
    );
    assert!(slash("/rename").is_err());
    assert_eq!(slash("/fork"), Ok(Slash::Fork));
    assert!(slash("/fork now").is_err());

    let mut app = App::default();
    let run = |app: &mut App, text: &str| {
        let mut actions = typed(app, text);
        actions.extend(app.key(key(KeyCode::Enter)));
        actions
    };
    // No session yet: nothing to rename or fork, and it says so.
    assert!(run(&mut app, "/fork").is_empty());
    assert!(run(&mut app, "/rename x").is_empty());
    assert!(
        app.transcript
            .lines()
            .iter()
            .any(|(_, l)| l.contains("no session yet")),
    );
    app.session_id = Some("s1".to_string());
    assert_eq!(run(&mut app, "/fork"), [Action::Fork]);
    assert_eq!(
        run(&mut app, "/rename nightly build"),
        [Action::Rename("nightly build".to_string())]
    );
}
