//! Turns parsed calls into rules, validating arguments and the `match` /
//! `not_match` examples as Codex does at load time.

use super::syntax::{Arg, Call, Value, parse_calls};
use super::{PatternToken, PrefixRule, RuleDecision, Rules, RulesError, lexer};
use crate::parse_command::join;
use crate::safety::executable_name;

/// Examples of one `prefix_rule`, checked once the whole text is read (so a
/// later `host_executable` counts).
struct Examples {
    line: usize,
    rules: Vec<PrefixRule>,
    matches: Vec<Vec<String>>,
    not_matches: Vec<Vec<String>>,
}

pub(super) fn add_source(rules: &mut Rules, source: &str, text: &str) -> Result<(), RulesError> {
    let tokens = lexer::tokenize(source, text)?;
    let calls = parse_calls(source, &tokens)?;
    let err = |line: usize, message: String| RulesError::new(source, line, message);
    let mut pending = Vec::new();
    for call in calls {
        match call.name.as_str() {
            "prefix_rule" => {
                let examples = prefix_rule(&call).map_err(|m| err(call.line, m))?;
                rules.rules.extend(examples.rules.iter().cloned());
                pending.push(examples);
            }
            "host_executable" => {
                let (name, paths) = host_executable(&call).map_err(|m| err(call.line, m))?;
                rules.host_executables.insert(name, paths);
            }
            other => {
                return Err(err(
                    call.line,
                    format!(
                        "unsupported rule `{other}(...)`: only prefix_rule(...) and host_executable(...) are supported"
                    ),
                ));
            }
        }
    }
    for examples in &pending {
        check_examples(rules, examples).map_err(|m| err(examples.line, m))?;
    }
    Ok(())
}

fn prefix_rule(call: &Call) -> Result<Examples, String> {
    let mut pattern = None;
    let mut decision = RuleDecision::Allow;
    let mut justification = None;
    let mut matches = Vec::new();
    let mut not_matches = Vec::new();
    for Arg { name, value, .. } in &call.args {
        match name.as_str() {
            "pattern" => pattern = Some(parse_pattern(value)?),
            "decision" => {
                let raw = string(value, "decision")?;
                decision = RuleDecision::parse(raw).ok_or_else(|| {
                    format!(
                        "prefix_rule: decision must be allow, prompt or forbidden (got `{raw}`)"
                    )
                })?;
            }
            "justification" => {
                let raw = string(value, "justification")?;
                if raw.trim().is_empty() {
                    return Err("prefix_rule: justification cannot be empty".to_owned());
                }
                justification = Some(raw.to_owned());
            }
            "match" => matches = examples(value, "match")?,
            "not_match" => not_matches = examples(value, "not_match")?,
            other => return Err(format!("prefix_rule: unexpected argument `{other}`")),
        }
    }
    let (first, rest) = pattern.ok_or("prefix_rule: missing pattern=[...]")?;
    let rules = first
        .into_iter()
        .map(|program| PrefixRule {
            program,
            rest: rest.clone(),
            decision,
            justification: justification.clone(),
        })
        .collect();
    Ok(Examples {
        line: call.line,
        rules,
        matches,
        not_matches,
    })
}

/// The alternatives of the first token, and the remaining tokens.
fn parse_pattern(value: &Value) -> Result<(Vec<String>, Vec<PatternToken>), String> {
    let Value::List(items) = value else {
        return Err("prefix_rule: pattern must be a list".to_owned());
    };
    let mut tokens = items.iter().map(|item| match item {
        Value::Str(s) => Ok(PatternToken::Single(s.clone())),
        Value::List(alts) => {
            let alts = alts
                .iter()
                .map(|alt| match alt {
                    Value::Str(s) => Ok(s.clone()),
                    Value::List(_) => {
                        Err("prefix_rule: pattern alternative must be a string".to_owned())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            match <[String; 1]>::try_from(alts) {
                Ok([single]) => Ok(PatternToken::Single(single)),
                Err(alts) if alts.is_empty() => {
                    Err("prefix_rule: pattern alternatives cannot be empty".to_owned())
                }
                Err(alts) => Ok(PatternToken::Alts(alts)),
            }
        }
    });
    let first = match tokens.next() {
        None => return Err("prefix_rule: pattern cannot be empty".to_owned()),
        Some(first) => match first? {
            PatternToken::Single(program) => vec![program],
            PatternToken::Alts(programs) => programs,
        },
    };
    Ok((first, tokens.collect::<Result<_, _>>()?))
}

fn examples(value: &Value, arg: &str) -> Result<Vec<Vec<String>>, String> {
    let Value::List(items) = value else {
        return Err(format!("prefix_rule: {arg} must be a list of examples"));
    };
    items
        .iter()
        .map(|item| {
            let example = match item {
                Value::Str(raw) => shlex::split(raw).ok_or_else(|| {
                    format!("prefix_rule: {arg} example has invalid shell syntax: {raw}")
                })?,
                Value::List(tokens) => tokens
                    .iter()
                    .map(|token| match token {
                        Value::Str(s) => Ok(s.clone()),
                        Value::List(_) => {
                            Err(format!("prefix_rule: {arg} example tokens must be strings"))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            };
            if example.is_empty() {
                return Err(format!("prefix_rule: {arg} example cannot be empty"));
            }
            Ok(example)
        })
        .collect()
}

fn check_examples(all: &Rules, examples: &Examples) -> Result<(), String> {
    // Only this call's rules count, with every host_executable of the file.
    let own = Rules {
        rules: examples.rules.clone(),
        host_executables: all.host_executables.clone(),
        home_dir: all.home_dir.clone(),
    };
    if let Some(example) = examples
        .not_matches
        .iter()
        .find(|example| !own.matches(example).is_empty())
    {
        return Err(format!(
            "prefix_rule: not_match example `{}` matches this rule",
            join(example)
        ));
    }
    let unmatched: Vec<String> = examples
        .matches
        .iter()
        .filter(|example| own.matches(example).is_empty())
        .map(|example| format!("`{}`", join(example)))
        .collect();
    if unmatched.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "prefix_rule: match example {} does not match this rule",
            unmatched.join(", ")
        ))
    }
}

fn host_executable(call: &Call) -> Result<(String, Vec<String>), String> {
    let mut name = None;
    let mut paths = None;
    for Arg {
        name: arg, value, ..
    } in &call.args
    {
        match arg.as_str() {
            "name" => name = Some(string(value, "name")?.to_owned()),
            "paths" => {
                let Value::List(items) = value else {
                    return Err("host_executable: paths must be a list of strings".to_owned());
                };
                let strings = items
                    .iter()
                    .map(|item| match item {
                        Value::Str(s) => Ok(s.clone()),
                        Value::List(_) => Err("host_executable: paths must be strings".to_owned()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                paths = Some(strings);
            }
            other => return Err(format!("host_executable: unexpected argument `{other}`")),
        }
    }
    let name = name.ok_or("host_executable: missing name=...")?;
    let paths = paths.ok_or("host_executable: missing paths=[...]")?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "host_executable: name must be a bare executable name (got `{name}`)"
        ));
    }
    let mut unique: Vec<String> = Vec::new();
    for path in paths {
        if !(path.starts_with('/') || path.starts_with("~/")) {
            return Err(format!(
                "host_executable: paths must be absolute or start with `~/` (got `{path}`)"
            ));
        }
        if executable_name(&path) != Some(name.as_str()) {
            return Err(format!(
                "host_executable: path `{path}` must have basename `{name}`"
            ));
        }
        if !unique.contains(&path) {
            unique.push(path);
        }
    }
    Ok((name, unique))
}

fn string<'v>(value: &'v Value, arg: &str) -> Result<&'v str, String> {
    match value {
        Value::Str(s) => Ok(s),
        Value::List(_) => Err(format!("{arg} must be a string")),
    }
}
