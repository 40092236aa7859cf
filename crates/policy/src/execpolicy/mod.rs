//! Exec-policy rules (Codex: `codex-rs/execpolicy/`): Codex's `.rules` files, parsed
//! from text the caller has already loaded, and matched against argv.
//!
//! The supported language is what the spec shows and nothing more:
//!
//! ```starlark
//! # comments, strings in '…' or "…" (or triple quotes), trailing commas
//! prefix_rule(
//!     pattern = ["git", ["push", "fetch"]],   # tokens; a list is alternatives
//!     decision = "prompt",                    # allow (default) | prompt | forbidden
//!     justification = "talk to the network",
//!     match = [["git", "push"], "git fetch origin"],  # examples, checked at load
//!     not_match = ["git status"],
//! )
//! host_executable(name = "git", paths = ["/usr/bin/git", "~/bin/git"])
//! ```
//!
//! Anything else (other calls such as `network_rule`, assignments,
//! positional arguments, …) is an error naming the file and line.

mod amend;
mod build;
mod lexer;
mod syntax;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::safety::executable_name;

pub use amend::{AmendError, amendment_rule_text};

/// What a rule says about the commands it matches. Ordered by strictness,
/// so the strictest of several matches is their `max()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleDecision {
    /// Run (without the sandbox when every part is allowed by a rule).
    Allow,
    /// Ask the user.
    Prompt,
    /// Refuse.
    Forbidden,
}

impl RuleDecision {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "allow" => Some(Self::Allow),
            "prompt" => Some(Self::Prompt),
            "forbidden" => Some(Self::Forbidden),
            _ => None,
        }
    }
}

/// One token of a prefix pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternToken {
    /// Exactly this argv token.
    Single(String),
    /// Any one of these.
    Alts(Vec<String>),
}

impl PatternToken {
    fn matches(&self, token: &str) -> bool {
        match self {
            Self::Single(expected) => expected == token,
            Self::Alts(alternatives) => alternatives.iter().any(|alt| alt == token),
        }
    }
}

/// `prefix_rule(...)` for one program. A rule whose first pattern token has
/// alternatives becomes one `PrefixRule` per alternative, as in Codex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixRule {
    /// argv[0] exactly as written in the rule.
    pub program: String,
    /// The pattern after the program.
    pub rest: Vec<PatternToken>,
    /// What the rule says.
    pub decision: RuleDecision,
    /// Why, shown in prompts and refusals.
    pub justification: Option<String>,
}

impl PrefixRule {
    /// The matched prefix of `argv` when `argv` starts with this pattern.
    fn match_prefix(&self, argv: &[String]) -> Option<Vec<String>> {
        let len = self.rest.len() + 1;
        if argv.len() < len || argv[0] != self.program {
            return None;
        }
        self.rest
            .iter()
            .zip(&argv[1..len])
            .all(|(pattern, token)| pattern.matches(token))
            .then(|| argv[..len].to_vec())
    }
}

/// A rule that matched a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// The argv prefix the rule matched (with the program's file name when
    /// it matched through `resolved_program`).
    pub matched_prefix: Vec<String>,
    /// The rule's decision.
    pub decision: RuleDecision,
    /// The rule's justification.
    pub justification: Option<String>,
    /// The absolute argv[0] that matched a rule written for its file name.
    pub resolved_program: Option<String>,
}

/// A `.rules` file could not be used. Displays as `<source>:<line>: <message>`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{source_name}:{line}: {message}")]
pub struct RulesError {
    /// The name the caller gave the text (usually its path).
    pub source_name: String,
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl RulesError {
    pub(crate) fn new(source_name: &str, line: usize, message: String) -> Self {
        Self {
            source_name: source_name.to_owned(),
            line,
            message,
        }
    }
}

/// A set of exec-policy rules, in the order their sources were added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    rules: Vec<PrefixRule>,
    /// `host_executable` name → the absolute paths allowed to stand for it.
    host_executables: BTreeMap<String, Vec<String>>,
    /// Expands `~/` in host-executable paths; without it such paths match
    /// nothing (this crate reads no environment).
    home_dir: Option<String>,
}

impl Rules {
    /// Parses one `.rules` text. `source_name` (e.g. its path) names it in
    /// errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, RulesError> {
        let mut rules = Self::default();
        rules.add_source(source_name, text)?;
        Ok(rules)
    }

    /// Adds the rules of another text after the existing ones (Codex loads
    /// lower-precedence layers first). On error nothing is added.
    pub fn add_source(&mut self, source_name: &str, text: &str) -> Result<(), RulesError> {
        let mut next = self.clone();
        build::add_source(&mut next, source_name, text)?;
        *self = next;
        Ok(())
    }

    /// Sets the home directory that `~/…` host-executable paths refer to.
    pub fn set_home_dir(&mut self, home_dir: Option<String>) {
        self.home_dir = home_dir;
    }

    /// Adds `prefix_rule(pattern=prefix, decision="allow")`, the in-memory
    /// effect of an accepted amendment (see [`amendment_rule_text`] for the
    /// text to persist).
    pub fn add_allow_prefix(&mut self, prefix: &[String]) -> Result<(), AmendError> {
        let (program, rest) = prefix.split_first().ok_or(AmendError::EmptyPrefix)?;
        self.rules.push(PrefixRule {
            program: program.clone(),
            rest: rest.iter().cloned().map(PatternToken::Single).collect(),
            decision: RuleDecision::Allow,
            justification: None,
        });
        Ok(())
    }

    /// The parsed rules, in order.
    pub fn rules(&self) -> &[PrefixRule] {
        &self.rules
    }

    /// Every rule matching `argv`, in rule order. Rules for argv[0] as
    /// written are tried first; only when none matches does an absolute
    /// argv[0] fall back to rules for its file name, and then only for paths
    /// a `host_executable` for that name lists (or any path when it has no
    /// `host_executable`).
    pub fn matches(&self, argv: &[String]) -> Vec<RuleMatch> {
        let Some(first) = argv.first() else {
            return Vec::new();
        };
        let exact = self.matches_for_program(argv, None);
        if !exact.is_empty() || !first.starts_with('/') {
            return exact;
        }
        let Some(name) = executable_name(first) else {
            return exact;
        };
        if let Some(paths) = self.host_executables.get(name)
            && !paths
                .iter()
                .any(|path| self.expand_home(path).as_deref() == Some(first.as_str()))
        {
            return exact;
        }
        let mut renamed = argv.to_vec();
        renamed[0] = name.to_owned();
        self.matches_for_program(&renamed, Some(first))
    }

    fn matches_for_program(&self, argv: &[String], resolved: Option<&String>) -> Vec<RuleMatch> {
        self.rules
            .iter()
            .filter_map(|rule| {
                rule.match_prefix(argv).map(|matched_prefix| RuleMatch {
                    matched_prefix,
                    decision: rule.decision,
                    justification: rule.justification.clone(),
                    resolved_program: resolved.cloned(),
                })
            })
            .collect()
    }

    fn expand_home(&self, path: &str) -> Option<String> {
        match path.strip_prefix("~/") {
            Some(rest) => Some(format!(
                "{}/{rest}",
                self.home_dir.as_ref()?.trim_end_matches('/')
            )),
            None => Some(path.to_owned()),
        }
    }
}
