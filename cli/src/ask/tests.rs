#![allow(clippy::unwrap_used)]

use keel_proto::v1::{UserInputOption, UserInputQuestion};

use super::*;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn exec(id: &str, amendment: &[&str]) -> Msg {
    let mut available = vec![K::Approved as i32, K::ApprovedForSession as i32];
    if !amendment.is_empty() {
        available.push(K::ApprovedExecpolicyAmendment as i32);
    }
    available.extend([K::Denied as i32, K::Abort as i32]);
    Msg::ExecApprovalRequest(ExecApprovalRequest {
        call_id: id.into(),
        command: strings(&["rm", "-rf", "x"]),
        proposed_execpolicy_amendment: strings(amendment),
        available_decisions: available,
        ..Default::default()
    })
}

fn patch(id: &str) -> Msg {
    Msg::ApplyPatchApprovalRequest(ApplyPatchApprovalRequest {
        call_id: id.into(),
        ..Default::default()
    })
}

fn question(id: &str, options: &[&str], is_other: bool) -> UserInputQuestion {
    UserInputQuestion {
        id: id.into(),
        header: id.into(),
        question: format!("{id}?"),
        options: options
            .iter()
            .map(|l| UserInputOption {
                label: l.to_string(),
                description: String::new(),
            })
            .collect(),
        is_other,
    }
}

fn decided(step: Option<Step>) -> (String, i32, Vec<String>, Option<String>) {
    match step {
        Some(Step::Answer {
            request_id,
            answer: Answer::Decision(d),
            next,
        }) => (request_id, d.kind, d.execpolicy_amendment, next),
        other => panic!("not a decision: {other:?}"),
    }
}

#[test]
fn each_key_is_a_decision() {
    for (key, kind) in [
        ("y", K::Approved),
        ("Y", K::Approved),
        ("yes", K::Approved),
        ("a", K::ApprovedForSession),
        ("n", K::Denied),
        ("q", K::Abort),
        ("\x1b", K::Abort),
    ] {
        let mut asker = Asker::default();
        asker.offer(&exec("c1", &[])).unwrap();
        let (id, got, amendment, next) = decided(asker.input(&format!("{key}\n")));
        assert_eq!((id.as_str(), got), ("c1", kind as i32), "{key:?}");
        assert!(amendment.is_empty());
        assert_eq!(next, None);
        assert!(!asker.asking());
    }
}

#[test]
fn the_amendment_only_when_proposed() {
    let mut asker = Asker::default();
    let prompt = asker.offer(&exec("c1", &["rm", "-rf"])).unwrap();
    assert_eq!(
        prompt,
        "run it? y = yes, a = yes for this session, p = yes, and allow `rm -rf` from now on, \
         n = no, q = no, and stop the turn: "
    );
    let (_, kind, amendment, _) = decided(asker.input("p"));
    assert_eq!(kind, K::ApprovedExecpolicyAmendment as i32);
    assert_eq!(amendment, ["rm", "-rf"]);

    let mut asker = Asker::default();
    let prompt = asker.offer(&exec("c1", &[])).unwrap();
    assert!(!prompt.contains("p = "), "{prompt}");
    match asker.input("p") {
        Some(Step::Prompt(p)) => assert!(p.starts_with("that is not offered here; run it?")),
        other => panic!("{other:?}"),
    }
    assert!(asker.asking());
}

#[test]
fn anything_else_asks_again() {
    let mut asker = Asker::default();
    let prompt = asker.offer(&patch("p1")).unwrap();
    assert!(prompt.starts_with("apply it? y = yes"), "{prompt}");
    assert_eq!(asker.input(""), Some(Step::Prompt(prompt.clone())));
    assert_eq!(asker.input("maybe"), Some(Step::Prompt(prompt.clone())));
    assert!(matches!(asker.input("p"), Some(Step::Prompt(_))));
    let (id, kind, _, _) = decided(asker.input("a"));
    assert_eq!((id.as_str(), kind), ("p1", K::ApprovedForSession as i32));
}

#[test]
fn requests_are_asked_in_order() {
    let mut asker = Asker::default();
    assert!(asker.offer(&exec("c1", &[])).is_some());
    assert_eq!(asker.offer(&patch("p2")), None, "asked after c1");
    assert_eq!(asker.offer(&exec("c1", &[])), None, "a repeat is ignored");
    let (id, _, _, next) = decided(asker.input("n"));
    assert_eq!(id, "c1");
    assert!(next.unwrap().starts_with("apply it?"));
    let (id, _, _, next) = decided(asker.input("y"));
    assert_eq!(id, "p2");
    assert_eq!(next, None);
    assert_eq!(asker.input("y"), None, "nothing is asked");
}

#[test]
fn a_request_answered_elsewhere_is_no_longer_asked() {
    let mut asker = Asker::default();
    asker.offer(&exec("c1", &[]));
    asker.offer(&patch("p2"));
    asker.offer(&exec("c3", &[]));
    assert_eq!(asker.resolved("c3"), None, "not the one being asked");
    assert_eq!(asker.resolved("zz"), None);
    assert!(asker.resolved("c1").unwrap().starts_with("apply it?"));
    assert_eq!(asker.resolved("p2"), None);
    assert!(!asker.asking());
}

#[test]
fn questions_are_asked_one_by_one() {
    let mut asker = Asker::default();
    let msg = Msg::RequestUserInput(RequestUserInput {
        call_id: "q1".into(),
        questions: vec![
            question("lang", &["Rust", "Go"], true),
            question("tests", &["Yes", "No"], false),
            question("name", &[], false),
        ],
    });
    assert_eq!(
        asker.offer(&msg).unwrap(),
        "[lang] answer 1-2, or in your own words: "
    );
    assert_eq!(
        asker.input("Zig please"),
        Some(Step::Prompt("[tests] answer 1-2: ".into()))
    );
    assert_eq!(
        asker.input("Maybe"),
        Some(Step::Prompt(
            "pick one of the numbers; [tests] answer 1-2: ".into()
        ))
    );
    assert_eq!(
        asker.input("3"),
        Some(Step::Prompt(
            "pick one of the numbers; [tests] answer 1-2: ".into()
        ))
    );
    assert_eq!(
        asker.input(" 2 "),
        Some(Step::Prompt("[name] your answer: ".into()))
    );
    assert_eq!(
        asker.input("  "),
        Some(Step::Prompt("[name] your answer: ".into()))
    );
    match asker.input("keel") {
        Some(Step::Answer {
            request_id,
            answer: Answer::UserInput(u),
            next: None,
        }) => {
            assert_eq!(request_id, "q1");
            let get = |id: &str| u.answers[id].answers.clone();
            assert_eq!(get("lang"), ["Zig please"]);
            assert_eq!(get("tests"), ["No"]);
            assert_eq!(get("name"), ["keel"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_messages_are_not_asked() {
    let mut asker = Asker::default();
    let empty = Msg::RequestUserInput(RequestUserInput {
        call_id: "q".into(),
        questions: Vec::new(),
    });
    assert_eq!(asker.offer(&empty), None);
    assert_eq!(asker.offer(&Msg::TurnStarted(Default::default())), None);
    assert!(!asker.asking());
}

#[test]
fn a_server_question_takes_a_json_object_or_a_decline() {
    let mut asker = Asker::default();
    let ask = |id: &str| {
        Msg::ElicitationRequest(ElicitationRequest {
            request_id: id.into(),
            server_name: "everything".into(),
            message: "Your name?".into(),
            requested_schema_json: r#"{"type":"object"}"#.into(),
            call_id: "c1".into(),
        })
    };
    let prompt = asker.offer(&ask("c1-elicitation-1")).unwrap();
    assert!(
        prompt.contains("[everything] Your name?") && prompt.contains("d = decline"),
        "{prompt}"
    );
    let Some(Step::Prompt(again)) = asker.input("not json") else {
        panic!("asks again");
    };
    assert!(again.starts_with("that is not a JSON object; "), "{again}");
    let Some(Step::Answer {
        request_id, answer, ..
    }) = asker.input(r#"{"name": "Ada"}"#)
    else {
        panic!("answers");
    };
    assert_eq!(request_id, "c1-elicitation-1");
    let Answer::Elicitation(a) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(a.action, ElicitationAction::Accept as i32);
    assert_eq!(a.content_json, r#"{"name": "Ada"}"#);

    asker.offer(&ask("c1-elicitation-2"));
    let Some(Step::Answer {
        answer: Answer::Elicitation(a),
        ..
    }) = asker.input("d")
    else {
        panic!("declines");
    };
    assert_eq!(a.action, ElicitationAction::Decline as i32);
    assert!(a.content_json.is_empty());
}
