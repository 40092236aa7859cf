#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `.rules` parsing, matching and amendments (Codex: `codex-rs/execpolicy/`).

use keel_policy::execpolicy::{AmendError, PatternToken, RuleDecision, RuleMatch};
use keel_policy::{Rules, amendment_rule_text};
use proptest::prelude::*;

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn decisions(rules: &Rules, items: &[&str]) -> Vec<RuleDecision> {
    rules
        .matches(&argv(items))
        .iter()
        .map(|m| m.decision)
        .collect()
}

#[track_caller]
fn error(text: &str) -> String {
    Rules::parse("test.rules", text)
        .expect_err("should not parse")
        .to_string()
}

#[test]
fn parses_the_documented_shape() {
    let rules = Rules::parse(
        "default.rules",
        r#"
# Network access needs a human.
prefix_rule(
    pattern = ["git", ["push", "fetch"]],   # alternatives
    decision = "prompt",
    justification = "talks to the network",
    match = [["git", "push"], "git fetch origin"],
    not_match = [["git", "status"], "git pull"],
)
prefix_rule(pattern=["cargo", "test"])
prefix_rule(pattern=[["rm", "shred"]], decision="forbidden", justification='Use `trash` instead.');
"#,
    )
    .unwrap();
    assert_eq!(
        rules.rules().len(),
        4,
        "one rule per first-token alternative"
    );
    assert_eq!(
        rules.rules()[0].rest,
        vec![PatternToken::Alts(argv(&["push", "fetch"]))]
    );
    assert_eq!(
        decisions(&rules, &["git", "push", "origin"]),
        [RuleDecision::Prompt]
    );
    assert_eq!(decisions(&rules, &["git", "fetch"]), [RuleDecision::Prompt]);
    assert!(decisions(&rules, &["git", "status"]).is_empty());
    assert!(
        decisions(&rules, &["git"]).is_empty(),
        "shorter than the pattern"
    );
    assert_eq!(
        decisions(&rules, &["cargo", "test", "-p", "x"]),
        [RuleDecision::Allow]
    );
    assert_eq!(
        decisions(&rules, &["shred", "x"]),
        [RuleDecision::Forbidden]
    );
    assert_eq!(
        rules.matches(&argv(&["rm", "-rf", "/"])),
        vec![RuleMatch {
            matched_prefix: argv(&["rm"]),
            decision: RuleDecision::Forbidden,
            justification: Some("Use `trash` instead.".to_owned()),
            resolved_program: None,
        }]
    );
}

#[test]
fn every_matching_rule_is_reported_in_order() {
    let rules = Rules::parse(
        "r",
        "prefix_rule(pattern=['git'], decision='prompt')\nprefix_rule(pattern=['git', 'push'], decision='forbidden')",
    )
    .unwrap();
    assert_eq!(
        decisions(&rules, &["git", "push"]),
        [RuleDecision::Prompt, RuleDecision::Forbidden]
    );
}

#[test]
fn strings_comments_and_layout() {
    let rules = Rules::parse(
        "r",
        "prefix_rule(pattern=[\"a\\tb\", 'it\\'s', \"\\u00e9\\x41\\101\"],)  # trailing comma\n\
         prefix_rule(\n  pattern=[\"\"\"multi\nline\"\"\"],\n)\n\n\n",
    )
    .unwrap();
    assert_eq!(rules.rules()[0].program, "a\tb", "escapes in double quotes");
    assert_eq!(
        rules.rules()[0].rest,
        vec![
            PatternToken::Single("it's".to_owned()),
            PatternToken::Single("éAA".to_owned())
        ]
    );
    assert_eq!(rules.rules()[1].program, "multi\nline");
    assert!(Rules::parse("empty", "").unwrap().rules().is_empty());
    assert!(
        Rules::parse("comments", "# nothing\n\n  # here\n")
            .unwrap()
            .rules()
            .is_empty()
    );
}

#[test]
fn errors_name_the_source_and_line() {
    assert_eq!(
        error(
            "prefix_rule(pattern=[\"ls\"])\n\nnetwork_rule(host=\"x\", protocol=\"https\", decision=\"allow\")"
        ),
        "test.rules:3: unsupported rule `network_rule(...)`: only prefix_rule(...) and host_executable(...) are supported"
    );
    assert_eq!(
        error("\nprefix_rule(pattern=[\"ls\"], decision=\"deny\")"),
        "test.rules:2: prefix_rule: decision must be allow, prompt or forbidden (got `deny`)"
    );
    assert_eq!(
        error("x = [\"a\"]"),
        "test.rules:1: assignments are not supported in .rules files (`x = …`)"
    );
    assert_eq!(
        error("prefix_rule([\"ls\"])"),
        "test.rules:1: prefix_rule: positional arguments are not supported; name each one (e.g. pattern=[...])"
    );
    assert_eq!(
        error("prefix_rule(pattern=[])"),
        "test.rules:1: prefix_rule: pattern cannot be empty"
    );
    assert_eq!(
        error("prefix_rule(decision=\"allow\")"),
        "test.rules:1: prefix_rule: missing pattern=[...]"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"a\", []])"),
        "test.rules:1: prefix_rule: pattern alternatives cannot be empty"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"a\"], justification=\"  \")"),
        "test.rules:1: prefix_rule: justification cannot be empty"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"a\"], pattern=[\"b\"])"),
        "test.rules:1: prefix_rule: argument `pattern` given more than once"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"a\"], colour=\"red\")"),
        "test.rules:1: prefix_rule: unexpected argument `colour`"
    );
    assert_eq!(
        error("prefix_rule(pattern=\"a\")"),
        "test.rules:1: prefix_rule: pattern must be a list"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"a\"]) prefix_rule(pattern=[\"b\"])"),
        "test.rules:1: expected the end of the line, found `prefix_rule`"
    );
    assert_eq!(
        error("\n\nprefix_rule(pattern=[\"a])"),
        "test.rules:3: unterminated string"
    );
    assert_eq!(
        error("prefix_rule(pattern=[1])"),
        "test.rules:1: unexpected character `1`"
    );
    assert_eq!(
        error("prefix_rule(pattern=[f\"a\"])"),
        "test.rules:1: `f\"…\"` string prefixes are not supported in .rules files"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"\\q\"])"),
        "test.rules:1: invalid escape sequence `\\q`"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"a\"]"),
        "test.rules:1: expected `,` or `)`, found the end of the line"
    );
    assert_eq!(
        error(&format!(
            "prefix_rule(pattern={}\"a\"{})",
            "[".repeat(100),
            "]".repeat(100)
        )),
        "test.rules:1: lists are nested too deeply"
    );
    assert_eq!(
        error("[\"a\"]"),
        "test.rules:1: expected a rule such as prefix_rule(...), found `[`"
    );
}

#[test]
fn examples_are_checked_at_load() {
    assert_eq!(
        error(
            "\nprefix_rule(\n  pattern=[\"git\", \"push\"],\n  match=[\"git status\", [\"git\", \"pull\"]],\n)"
        ),
        "test.rules:2: prefix_rule: match example `git status`, `git pull` does not match this rule"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"git\"], not_match=[\"git status\"])"),
        "test.rules:1: prefix_rule: not_match example `git status` matches this rule"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"git\"], match=[\"git 'unterminated\"])"),
        "test.rules:1: prefix_rule: match example has invalid shell syntax: git 'unterminated"
    );
    assert_eq!(
        error("prefix_rule(pattern=[\"git\"], match=[[]])"),
        "test.rules:1: prefix_rule: match example cannot be empty"
    );
    // Examples only test their own rule.
    assert_eq!(
        error("prefix_rule(pattern=[\"ls\"])\nprefix_rule(pattern=[\"git\"], match=[\"ls\"])"),
        "test.rules:2: prefix_rule: match example `ls` does not match this rule"
    );
}

#[test]
fn absolute_programs_fall_back_to_rules_for_their_file_name() {
    let rules = Rules::parse(
        "r",
        "prefix_rule(pattern=[\"git\", \"push\"], decision=\"forbidden\")",
    )
    .unwrap();
    assert_eq!(
        rules.matches(&argv(&["/usr/bin/git", "push"])),
        vec![RuleMatch {
            matched_prefix: argv(&["git", "push"]),
            decision: RuleDecision::Forbidden,
            justification: None,
            resolved_program: Some("/usr/bin/git".to_owned()),
        }]
    );
    assert!(
        rules.matches(&argv(&["./git", "push"])).is_empty(),
        "relative paths do not fall back"
    );

    // A host_executable limits the fallback to the paths it lists.
    let mut rules = Rules::parse(
        "r",
        "prefix_rule(pattern=[\"git\"], decision=\"prompt\")\n\
         host_executable(name=\"git\", paths=[\"/usr/bin/git\", \"~/bin/git\", \"/usr/bin/git\"])",
    )
    .unwrap();
    assert_eq!(
        decisions(&rules, &["/usr/bin/git", "log"]),
        [RuleDecision::Prompt]
    );
    assert!(decisions(&rules, &["/opt/evil/git", "log"]).is_empty());
    assert!(
        decisions(&rules, &["/home/me/bin/git", "log"]).is_empty(),
        "no home dir given"
    );
    rules.set_home_dir(Some("/home/me".to_owned()));
    assert_eq!(
        decisions(&rules, &["/home/me/bin/git", "log"]),
        [RuleDecision::Prompt]
    );

    // Exact rules for the absolute path win over the fallback.
    let rules = Rules::parse(
        "r",
        "prefix_rule(pattern=[\"git\"], decision=\"forbidden\")\nprefix_rule(pattern=[\"/usr/bin/git\"])",
    )
    .unwrap();
    assert_eq!(
        decisions(&rules, &["/usr/bin/git", "log"]),
        [RuleDecision::Allow]
    );
}

#[test]
fn host_executable_is_validated() {
    assert_eq!(
        error("host_executable(name=\"git\", paths=[\"bin/git\"])"),
        "test.rules:1: host_executable: paths must be absolute or start with `~/` (got `bin/git`)"
    );
    assert_eq!(
        error("host_executable(name=\"git\", paths=[\"/usr/bin/hg\"])"),
        "test.rules:1: host_executable: path `/usr/bin/hg` must have basename `git`"
    );
    assert_eq!(
        error("host_executable(name=\"a/git\", paths=[])"),
        "test.rules:1: host_executable: name must be a bare executable name (got `a/git`)"
    );
    assert_eq!(
        error("host_executable(paths=[])"),
        "test.rules:1: host_executable: missing name=..."
    );
}

#[test]
fn sources_accumulate_and_a_bad_one_changes_nothing() {
    let mut rules = Rules::parse("a.rules", "prefix_rule(pattern=[\"ls\"])").unwrap();
    rules
        .add_source(
            "b.rules",
            "prefix_rule(pattern=[\"ls\"], decision=\"prompt\")",
        )
        .unwrap();
    assert_eq!(
        decisions(&rules, &["ls"]),
        [RuleDecision::Allow, RuleDecision::Prompt]
    );
    let before = rules.clone();
    let err = rules
        .add_source("c.rules", "prefix_rule(pattern=[\"x\"])\nbogus()")
        .unwrap_err();
    assert_eq!(err.source_name, "c.rules");
    assert_eq!(err.line, 2);
    assert_eq!(rules, before);
}

#[test]
fn amendments_are_codex_rule_lines() {
    assert_eq!(
        amendment_rule_text(&argv(&["echo", "Hello, world!"])).unwrap(),
        r#"prefix_rule(pattern=["echo", "Hello, world!"], decision="allow")"#
    );
    assert_eq!(
        amendment_rule_text(&argv(&["say", "a \"quote\"\n\\"])).unwrap(),
        r#"prefix_rule(pattern=["say", "a \"quote\"\n\\"], decision="allow")"#
    );
    assert_eq!(amendment_rule_text(&[]), Err(AmendError::EmptyPrefix));

    let mut rules = Rules::default();
    rules.add_allow_prefix(&argv(&["cargo", "test"])).unwrap();
    assert_eq!(
        decisions(&rules, &["cargo", "test", "--all"]),
        [RuleDecision::Allow]
    );
    assert_eq!(rules.add_allow_prefix(&[]), Err(AmendError::EmptyPrefix));
}

proptest! {
    /// What `approved_execpolicy_amendment` appends reads back as the same
    /// rule, whatever the tokens hold.
    #[test]
    fn amendments_read_back_unchanged(prefix in prop::collection::vec(any::<String>(), 1..5)) {
        let text = amendment_rule_text(&prefix).unwrap();
        let parsed = Rules::parse("default.rules", &text).unwrap();
        let mut direct = Rules::default();
        direct.add_allow_prefix(&prefix).unwrap();
        prop_assert_eq!(parsed.rules(), direct.rules());
        prop_assert_eq!(decisions(&parsed, &prefix.iter().map(String::as_str).collect::<Vec<_>>()), vec![RuleDecision::Allow]);
    }

    /// Arbitrary text is an error or rules, never a panic.
    #[test]
    fn parsing_never_panics(text in ".{0,200}") {
        let _ = Rules::parse("fuzz", &text);
    }

    #[test]
    fn parsing_rule_shaped_noise_never_panics(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "prefix_rule", "host_executable", "(", ")", "[", "]", ",", "=", "pattern",
                "decision", "match", "not_match", "\"a\"", "'b'", "\"\"\"c\"\"\"", "\n", "#x\n", ";",
                "\"\\u12\"", "\\\n",
            ]),
            0..40,
        )
    ) {
        let _ = Rules::parse("fuzz", &parts.concat());
    }
}
