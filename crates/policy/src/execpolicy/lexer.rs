//! Tokens of the Starlark subset that `.rules` files use.

use super::RulesError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Token {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Equals,
    /// Ends a statement: a line break outside brackets, or `;`.
    End,
}

#[derive(Clone, Debug)]
pub(super) struct Spanned {
    pub token: Token,
    pub line: usize,
}

pub(super) fn tokenize(source: &str, text: &str) -> Result<Vec<Spanned>, RulesError> {
    let mut lexer = Lexer {
        source,
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        depth: 0,
        out: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.out)
}

struct Lexer<'a> {
    source: &'a str,
    chars: Vec<char>,
    pos: usize,
    line: usize,
    /// Open brackets: Starlark ignores line breaks inside them.
    depth: usize,
    out: Vec<Spanned>,
}

impl Lexer<'_> {
    fn run(&mut self) -> Result<(), RulesError> {
        while let Some(c) = self.peek(0) {
            let line = self.line;
            match c {
                '\n' => {
                    self.pos += 1;
                    if self.depth == 0 {
                        self.push(Token::End, line);
                    }
                    self.line += 1;
                }
                ' ' | '\t' | '\r' => self.pos += 1,
                '\\' if self.peek(1) == Some('\n') => {
                    self.pos += 2;
                    self.line += 1;
                }
                '#' => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '(' | '[' => {
                    self.depth += 1;
                    self.pos += 1;
                    let token = if c == '(' {
                        Token::LParen
                    } else {
                        Token::LBracket
                    };
                    self.push(token, line);
                }
                ')' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.pos += 1;
                    let token = if c == ')' {
                        Token::RParen
                    } else {
                        Token::RBracket
                    };
                    self.push(token, line);
                }
                ',' => self.single(Token::Comma, line),
                '=' => self.single(Token::Equals, line),
                ';' => self.single(Token::End, line),
                '"' | '\'' => {
                    let value = self.string(c)?;
                    self.push(Token::Str(value), line);
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let start = self.pos;
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        self.pos += 1;
                    }
                    let ident: String = self.chars[start..self.pos].iter().collect();
                    if matches!(self.peek(0), Some('"' | '\'')) {
                        return Err(self.error(
                            line,
                            format!(
                                "`{ident}\"…\"` string prefixes are not supported in .rules files"
                            ),
                        ));
                    }
                    self.push(Token::Ident(ident), line);
                }
                other => {
                    return Err(self.error(line, format!("unexpected character `{other}`")));
                }
            }
        }
        self.push(Token::End, self.line);
        Ok(())
    }

    fn string(&mut self, quote: char) -> Result<String, RulesError> {
        let start_line = self.line;
        let triple = self.peek(1) == Some(quote) && self.peek(2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        let mut value = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(self.error(start_line, "unterminated string".to_owned()));
            };
            if c == quote
                && (!triple || (self.peek(1) == Some(quote) && self.peek(2) == Some(quote)))
            {
                self.pos += if triple { 3 } else { 1 };
                return Ok(value);
            }
            match c {
                '\n' if !triple => {
                    return Err(self.error(start_line, "unterminated string".to_owned()));
                }
                '\n' => {
                    self.line += 1;
                    value.push(c);
                    self.pos += 1;
                }
                '\\' => {
                    self.pos += 1;
                    self.escape(&mut value)?;
                }
                _ => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Starlark's escapes: `\a \b \f \n \r \t \v \\ \' \"`, `\` + newline,
    /// octal `\ooo`, `\xhh`, `\uXXXX` and `\UXXXXXXXX`.
    fn escape(&mut self, value: &mut String) -> Result<(), RulesError> {
        let line = self.line;
        let Some(c) = self.peek(0) else {
            return Err(self.error(line, "unterminated string".to_owned()));
        };
        self.pos += 1;
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' | '\'' | '"' => Some(c),
            _ => None,
        };
        if let Some(simple) = simple {
            value.push(simple);
            return Ok(());
        }
        let code = match c {
            '\n' => {
                self.line += 1;
                return Ok(());
            }
            '0'..='7' => {
                let mut digits = c.to_string();
                while digits.len() < 3 && self.peek(0).is_some_and(|d| ('0'..='7').contains(&d)) {
                    digits.extend(self.peek(0));
                    self.pos += 1;
                }
                u32::from_str_radix(&digits, 8).ok()
            }
            'x' => self.hex(2),
            'u' => self.hex(4),
            'U' => self.hex(8),
            other => {
                return Err(self.error(line, format!("invalid escape sequence `\\{other}`")));
            }
        };
        let Some(decoded) = code.and_then(char::from_u32) else {
            return Err(self.error(line, format!("invalid escape sequence `\\{c}`")));
        };
        value.push(decoded);
        Ok(())
    }

    fn hex(&mut self, len: usize) -> Option<u32> {
        let end = self.pos.checked_add(len)?;
        let digits: String = self.chars.get(self.pos..end)?.iter().collect();
        if !digits.chars().all(|d| d.is_ascii_hexdigit()) {
            return None;
        }
        let code = u32::from_str_radix(&digits, 16).ok()?;
        self.pos = end;
        Some(code)
    }

    fn single(&mut self, token: Token, line: usize) {
        self.pos += 1;
        self.push(token, line);
    }

    fn push(&mut self, token: Token, line: usize) {
        self.out.push(Spanned { token, line });
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn error(&self, line: usize, message: String) -> RulesError {
        RulesError::new(self.source, line, message)
    }
}
