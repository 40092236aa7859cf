//! The statement grammar of `.rules` files: a sequence of calls with keyword
//! arguments whose values are strings or (nested) lists of strings.
//!
//! ```text
//! file  := (call? END)*
//! call  := IDENT "(" [arg ("," arg)* [","]] ")"
//! arg   := IDENT "=" value
//! value := STRING | "[" [value ("," value)* [","]] "]"
//! ```
//!
//! Everything else Starlark allows (assignments, loops, positional
//! arguments, numbers, …) is refused with the line it is on.

use super::RulesError;
use super::lexer::{Spanned, Token};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    Str(String),
    List(Vec<Value>),
}

#[derive(Clone, Debug)]
pub(super) struct Arg {
    pub name: String,
    pub value: Value,
    pub line: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Call {
    pub name: String,
    pub line: usize,
    pub args: Vec<Arg>,
}

/// Rules need two levels (a list of strings or of lists of strings).
const MAX_DEPTH: usize = 8;

pub(super) fn parse_calls(source: &str, tokens: &[Spanned]) -> Result<Vec<Call>, RulesError> {
    let mut parser = Parser {
        source,
        tokens,
        pos: 0,
    };
    let mut calls = Vec::new();
    while let Some(spanned) = parser.peek() {
        match &spanned.token {
            Token::End => parser.pos += 1,
            Token::Ident(_) => {
                calls.push(parser.call()?);
                parser.expect_end()?;
            }
            other => {
                return Err(parser.error(
                    spanned.line,
                    format!(
                        "expected a rule such as prefix_rule(...), found {}",
                        describe(other)
                    ),
                ));
            }
        }
    }
    Ok(calls)
}

struct Parser<'a> {
    source: &'a str,
    tokens: &'a [Spanned],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn call(&mut self) -> Result<Call, RulesError> {
        let (name, line) = self.ident()?;
        match self.next() {
            Some(Spanned {
                token: Token::LParen,
                ..
            }) => {}
            Some(Spanned {
                token: Token::Equals,
                line,
            }) => {
                return Err(self.error(
                    *line,
                    format!("assignments are not supported in .rules files (`{name} = …`)"),
                ));
            }
            other => return Err(self.unexpected(other, "`(`")),
        }
        let mut args: Vec<Arg> = Vec::new();
        loop {
            if self.eat(&Token::RParen) {
                break;
            }
            let arg = self.arg(&name)?;
            if args.iter().any(|seen| seen.name == arg.name) {
                return Err(self.error(
                    arg.line,
                    format!("{name}: argument `{}` given more than once", arg.name),
                ));
            }
            args.push(arg);
            if !self.eat(&Token::Comma) {
                match self.next() {
                    Some(Spanned {
                        token: Token::RParen,
                        ..
                    }) => break,
                    other => return Err(self.unexpected(other, "`,` or `)`")),
                }
            }
        }
        Ok(Call { name, line, args })
    }

    fn arg(&mut self, call: &str) -> Result<Arg, RulesError> {
        let line = self.line();
        let name = match self.next() {
            Some(Spanned {
                token: Token::Ident(name),
                ..
            }) => name.clone(),
            Some(Spanned { line, .. }) => {
                return Err(self.error(
                    *line,
                    format!("{call}: positional arguments are not supported; name each one (e.g. pattern=[...])"),
                ));
            }
            None => return Err(self.error(line, "unexpected end of file".to_owned())),
        };
        match self.next() {
            Some(Spanned {
                token: Token::Equals,
                ..
            }) => {}
            other => return Err(self.unexpected(other, "`=`")),
        }
        let value = self.value(0)?;
        Ok(Arg { name, value, line })
    }

    /// Values nest at most [`MAX_DEPTH`] lists deep, so hostile input
    /// cannot exhaust the stack.
    fn value(&mut self, depth: usize) -> Result<Value, RulesError> {
        match self.next() {
            Some(Spanned {
                token: Token::Str(s),
                ..
            }) => Ok(Value::Str(s.clone())),
            Some(Spanned {
                token: Token::LBracket,
                line,
            }) => {
                if depth >= MAX_DEPTH {
                    return Err(self.error(*line, "lists are nested too deeply".to_owned()));
                }
                let mut items = Vec::new();
                loop {
                    if self.eat(&Token::RBracket) {
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                    if !self.eat(&Token::Comma) {
                        match self.next() {
                            Some(Spanned {
                                token: Token::RBracket,
                                ..
                            }) => return Ok(Value::List(items)),
                            other => return Err(self.unexpected(other, "`,` or `]`")),
                        }
                    }
                }
            }
            other => Err(self.unexpected(other, "a string or a list of strings")),
        }
    }

    fn ident(&mut self) -> Result<(String, usize), RulesError> {
        match self.next() {
            Some(Spanned {
                token: Token::Ident(name),
                line,
            }) => Ok((name.clone(), *line)),
            other => Err(self.unexpected(other, "a name")),
        }
    }

    fn expect_end(&mut self) -> Result<(), RulesError> {
        match self.next() {
            Some(Spanned {
                token: Token::End, ..
            })
            | None => Ok(()),
            other => Err(self.unexpected(other, "the end of the line")),
        }
    }

    fn eat(&mut self, token: &Token) -> bool {
        let found = self.peek().is_some_and(|spanned| &spanned.token == token);
        if found {
            self.pos += 1;
        }
        found
    }

    fn next(&mut self) -> Option<&'a Spanned> {
        let spanned = self.tokens.get(self.pos);
        self.pos += 1;
        spanned
    }

    fn peek(&self) -> Option<&'a Spanned> {
        self.tokens.get(self.pos)
    }

    fn line(&self) -> usize {
        self.peek()
            .or_else(|| self.tokens.last())
            .map_or(1, |spanned| spanned.line)
    }

    fn unexpected(&self, found: Option<&Spanned>, expected: &str) -> RulesError {
        match found {
            Some(spanned) => self.error(
                spanned.line,
                format!("expected {expected}, found {}", describe(&spanned.token)),
            ),
            None => self.error(
                self.line(),
                format!("expected {expected}, found the end of the file"),
            ),
        }
    }

    fn error(&self, line: usize, message: String) -> RulesError {
        RulesError::new(self.source, line, message)
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("`{name}`"),
        Token::Str(_) => "a string".to_owned(),
        Token::LParen => "`(`".to_owned(),
        Token::RParen => "`)`".to_owned(),
        Token::LBracket => "`[`".to_owned(),
        Token::RBracket => "`]`".to_owned(),
        Token::Comma => "`,`".to_owned(),
        Token::Equals => "`=`".to_owned(),
        Token::End => "the end of the line".to_owned(),
    }
}
