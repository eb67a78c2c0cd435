//! Prometheus's lexer, far enough to tokenize a refused query: its three modes (plain, inside
//! `{}`, inside `[]`) and its errors, each at the byte where Prometheus reports it.

/// One token and the byte offset it starts at.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Number(String),
    Duration(String),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    At,
    Colon,
    Eof,
}

/// A syntax error: where, and Prometheus's words.
pub(super) type Found = (usize, String);

const OPS: [&str; 17] = [
    "==", "!=", "=~", "!~", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "^", "=", "!", "~",
];

/// Where a query's tokens come from: Prometheus's lexer modes (plain, inside `{}`, inside `[]`).
pub(super) struct Lexer<'q> {
    q: &'q str,
    at: usize,
    paren: usize,
    brace: bool,
    bracket: Option<Bracket>,
    /// Nothing lexed yet since `[` (Prometheus then wants a duration, even at the end).
    bracket_empty: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Bracket {
    Range,
    Step,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn unit_len(s: &[u8]) -> usize {
    match s {
        [b'm', b's', ..] => 2,
        [b's' | b'm' | b'h' | b'd' | b'w' | b'y', ..] => 1,
        _ => 0,
    }
}

impl<'q> Lexer<'q> {
    pub(super) fn new(q: &'q str) -> Self {
        Self {
            q,
            at: 0,
            paren: 0,
            brace: false,
            bracket: None,
            bracket_empty: false,
        }
    }

    fn bytes(&self) -> &'q [u8] {
        self.q.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.at += 1;
            } else if c == b'#' && !self.brace {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - from
    }

    /// A duration such as `5m` or `1h30m`; `Err` with Prometheus's words when it is not one.
    fn duration(&mut self, bad: &str) -> Result<Tok, Found> {
        let start = self.at;
        loop {
            let n = self.digits();
            let u = unit_len(&self.bytes()[self.at..]);
            if n == 0 && self.at == start {
                return Err((start, "missing unit character in duration".into()));
            }
            if u == 0 {
                if n > 0
                    && self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    return Err((start, format!("{bad}: {:?}", &self.q[start..self.at])));
                }
                if n > 0 {
                    return Err((start, "missing unit character in duration".into()));
                }
                break;
            }
            self.at += u;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                break;
            }
        }
        // `:` may follow (a subquery's range); a letter or digit may not.
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err((start, format!("{bad}: {:?}", &self.q[start..self.at])));
        }
        Ok(Tok::Duration(self.q[start..self.at].to_owned()))
    }

    fn string(&mut self) -> Result<Tok, Found> {
        let start = self.at;
        let quote = self.bytes()[start];
        self.at += 1;
        while let Some(c) = self.peek() {
            self.at += 1;
            if c == b'\\' && quote != b'`' {
                self.at += 1;
            } else if c == quote {
                return Ok(Tok::Str(self.q[start..self.at].to_owned()));
            }
        }
        Err((start, "unterminated quoted string".into()))
    }

    pub(super) fn next(&mut self) -> Result<(usize, Tok), Found> {
        self.skip_space();
        let start = self.at;
        let Some(c) = self.peek() else {
            if self.brace {
                return Err((start, "unexpected end of input inside braces".into()));
            }
            if self.bracket.is_some() {
                return Err((
                    start,
                    if self.bracket_empty {
                        "missing unit character in duration"
                    } else {
                        "unclosed left bracket"
                    }
                    .into(),
                ));
            }
            if self.paren > 0 {
                return Err((start, "unclosed left parenthesis".into()));
            }
            return Ok((start, Tok::Eof));
        };
        if self.bracket.is_some() {
            return self.in_brackets(start, c);
        }
        if self.brace {
            return self.in_braces(start, c);
        }
        let tok = match c {
            b'(' => {
                self.paren += 1;
                Tok::LParen
            }
            b')' => {
                if self.paren == 0 {
                    return Err((start + 1, "unexpected right parenthesis ')'".into()));
                }
                self.paren -= 1;
                Tok::RParen
            }
            b'{' => {
                self.brace = true;
                Tok::LBrace
            }
            b'}' => return Err((start, "unexpected character: '}'".into())),
            b'[' => {
                self.bracket = Some(Bracket::Range);
                self.bracket_empty = true;
                Tok::LBracket
            }
            b']' => return Err((start, "unexpected right bracket ']'".into())),
            b',' => Tok::Comma,
            b'@' => Tok::At,
            b'"' | b'\'' | b'`' => return self.string().map(|t| (start, t)),
            c if c.is_ascii_digit()
                || (c == b'.' && self.q[start + 1..].starts_with(|d: char| d.is_ascii_digit())) =>
            {
                return self.number(start);
            }
            c if is_ident_start(c) => {
                while self.peek().is_some_and(is_ident) {
                    self.at += 1;
                }
                return Ok((start, Tok::Ident(self.q[start..self.at].to_owned())));
            }
            _ => {
                let rest = &self.q[start..];
                let Some(op) = OPS.iter().find(|o| rest.starts_with(**o)) else {
                    let ch = rest.chars().next().unwrap_or('?');
                    return Err((start, format!("unexpected character: {ch:?}")));
                };
                self.at += op.len();
                return Ok((start, Tok::Op(op)));
            }
        };
        self.at += 1;
        Ok((start, tok))
    }

    fn number(&mut self, start: usize) -> Result<(usize, Tok), Found> {
        let rest = &self.bytes()[start..];
        if rest.starts_with(b"0x") || rest.starts_with(b"0X") {
            self.at += 2;
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.at += 1;
            }
        } else {
            self.digits();
            if unit_len(&self.bytes()[self.at..]) > 0 {
                self.at = start;
                return self
                    .duration("bad number or duration syntax")
                    .map(|t| (start, t));
            }
            if self.peek() == Some(b'.') {
                self.at += 1;
                self.digits();
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.at += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.at += 1;
                }
                self.digits();
            }
        }
        if self.peek().is_some_and(is_ident) {
            return Err((
                start,
                format!(
                    "bad number or duration syntax: {:?}",
                    &self.q[start..self.at]
                ),
            ));
        }
        Ok((start, Tok::Number(self.q[start..self.at].to_owned())))
    }

    fn in_braces(&mut self, start: usize, c: u8) -> Result<(usize, Tok), Found> {
        let tok = match c {
            b'}' => {
                self.brace = false;
                Tok::RBrace
            }
            b',' => Tok::Comma,
            b'"' | b'\'' | b'`' => return self.string().map(|t| (start, t)),
            b'!' => match self.bytes().get(start + 1) {
                Some(b'=') | Some(b'~') => {
                    self.at += 2;
                    return Ok((
                        start,
                        Tok::Op(if self.bytes()[start + 1] == b'=' {
                            "!="
                        } else {
                            "!~"
                        }),
                    ));
                }
                next => {
                    let ch = next.map_or(String::from("EOF"), |n| char::from(*n).to_string());
                    return Err((
                        start,
                        format!("unexpected character after '!' inside braces: '{ch}'"),
                    ));
                }
            },
            b'=' => {
                if self.bytes().get(start + 1) == Some(&b'~') {
                    self.at += 2;
                    return Ok((start, Tok::Op("=~")));
                }
                Tok::Op("=")
            }
            c if is_ident_start(c) => {
                while self.peek().is_some_and(is_ident) {
                    self.at += 1;
                }
                return Ok((start, Tok::Ident(self.q[start..self.at].to_owned())));
            }
            _ => {
                let ch = self.q[start..].chars().next().unwrap_or('?');
                return Err((start, format!("unexpected character inside braces: {ch:?}")));
            }
        };
        self.at += 1;
        Ok((start, tok))
    }

    fn in_brackets(&mut self, start: usize, c: u8) -> Result<(usize, Tok), Found> {
        self.bracket_empty = false;
        match c {
            b']' => {
                self.bracket = None;
                self.at += 1;
                Ok((start, Tok::RBracket))
            }
            b':' => {
                self.bracket = Some(Bracket::Step);
                self.at += 1;
                Ok((start, Tok::Colon))
            }
            _ => {
                let bad = if self.bracket == Some(Bracket::Step) {
                    "bad number or duration syntax"
                } else {
                    "bad duration syntax"
                };
                self.duration(bad).map(|t| (start, t))
            }
        }
    }
}
