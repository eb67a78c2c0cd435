//! Prometheus 2.42's text for a query its parser refuses, `<line>:<col>: parse error: <what>`,
//! with Prometheus's position and wording for the common classes: an unexpected token, an
//! unclosed parenthesis, brace or bracket, a bad duration, an unknown function, a wrong
//! argument count or type. promql_parser decides that a query is wrong; this re-reads the query
//! the way Prometheus's lexer and parser do to say where, since users paste these into searches.

/// One token and the byte offset it starts at.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
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
type Found = (usize, String);

const OPS: [&str; 17] = [
    "==", "!=", "=~", "!~", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "^", "=", "!", "~",
];

const AGGREGATES: [&str; 12] = [
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

const SET_OPS: [&str; 4] = ["and", "or", "unless", "atan2"];

/// Deepest nesting re-read; deeper queries are refused by the depth check before parsing.
const MAX_NESTING: usize = 512;

/// Where a query's tokens come from: Prometheus's lexer modes (plain, inside `{}`, inside `[]`).
struct Lexer<'q> {
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
    fn new(q: &'q str) -> Self {
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

    fn next(&mut self) -> Result<(usize, Tok), Found> {
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

/// A call as read: its name and where it and each argument start, with the argument's type as
/// its shape shows it.
struct Call {
    name: String,
    at: usize,
    args: Vec<(usize, &'static str)>,
}

/// Re-reads the query as Prometheus's parser does, far enough to find the first syntax error.
struct Reader<'q> {
    lex: Lexer<'q>,
    tok: (usize, Tok),
    calls: Vec<Call>,
    aggregates: Vec<usize>,
    empty_selectors: Vec<usize>,
    depth: usize,
}

/// How Prometheus's parser names an unexpected token.
fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("identifier {s:?}"),
        Tok::Number(s) => format!("number {s:?}"),
        Tok::Duration(s) => format!("duration {s:?}"),
        Tok::Str(s) => format!("string {s:?}"),
        // A lone `=` is not an operator to Prometheus's parser.
        Tok::Op("=") => "\"=\"".into(),
        Tok::Op(o) => format!("<op:{o}>"),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::LBrace => "\"{\"".into(),
        Tok::RBrace => "\"}\"".into(),
        Tok::LBracket => "\"[\"".into(),
        Tok::RBracket => "\"]\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::At => "\"@\"".into(),
        Tok::Colon => "\":\"".into(),
        Tok::Eof => "end of input".into(),
    }
}

impl<'q> Reader<'q> {
    fn new(q: &'q str) -> Result<Self, Found> {
        let mut lex = Lexer::new(q);
        let tok = lex.next()?;
        Ok(Self {
            lex,
            tok,
            calls: Vec::new(),
            aggregates: Vec::new(),
            empty_selectors: Vec::new(),
            depth: 0,
        })
    }

    fn bump(&mut self) -> Result<(usize, Tok), Found> {
        let next = self.lex.next()?;
        Ok(std::mem::replace(&mut self.tok, next))
    }

    fn unexpected<T>(&self, context: &str) -> Result<T, Found> {
        let (at, t) = &self.tok;
        Err((*at, format!("unexpected {}{context}", describe(t))))
    }

    fn expect_rparen(&mut self) -> Result<(), Found> {
        match self.tok.1 {
            Tok::RParen => self.bump().map(|_| ()),
            Tok::Eof => Err((self.tok.0, "unclosed left parenthesis".into())),
            _ => self.unexpected(""),
        }
    }

    /// An expression, then what may follow one (a range, offset, @, a binary operator).
    fn expr(&mut self) -> Result<&'static str, Found> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err((self.tok.0, "nesting too deep".into()));
        }
        let mut kind = self.unary()?;
        loop {
            match self.tok.1.clone() {
                Tok::Op(op) if !matches!(op, "=" | "!" | "~") => {
                    self.bump()?;
                    self.modifiers()?;
                    self.unary()?;
                    kind = "instant vector";
                }
                Tok::Ident(s) if SET_OPS.contains(&s.as_str()) => {
                    self.bump()?;
                    self.modifiers()?;
                    self.unary()?;
                    kind = "instant vector";
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(kind)
    }

    /// `bool`, `on(...)`/`ignoring(...)`, `group_left(...)`/`group_right(...)`.
    fn modifiers(&mut self) -> Result<(), Found> {
        loop {
            match &self.tok.1 {
                Tok::Ident(s) if s == "bool" => {
                    self.bump()?;
                }
                Tok::Ident(s) if matches!(s.as_str(), "on" | "ignoring") => {
                    self.bump()?;
                    self.labels(" in grouping opts, expected \"(\"")?;
                }
                Tok::Ident(s) if matches!(s.as_str(), "group_left" | "group_right") => {
                    self.bump()?;
                    if self.tok.1 == Tok::LParen {
                        self.labels("")?;
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// `(a, b)` after by, without, on, ignoring, group_left or group_right.
    fn labels(&mut self, context: &str) -> Result<(), Found> {
        if self.tok.1 != Tok::LParen {
            return self.unexpected(context);
        }
        self.bump()?;
        loop {
            match self.tok.1 {
                Tok::Ident(_) | Tok::Comma => {
                    self.bump()?;
                }
                _ => return self.expect_rparen(),
            }
        }
    }

    fn unary(&mut self) -> Result<&'static str, Found> {
        let (at, t) = self.tok.clone();
        let mut kind = match t {
            Tok::Op("+" | "-") => {
                self.bump()?;
                return self.unary();
            }
            Tok::Number(_) => {
                self.bump()?;
                "scalar"
            }
            Tok::Str(_) => {
                self.bump()?;
                "string"
            }
            Tok::LParen => {
                self.bump()?;
                let k = self.expr()?;
                self.expect_rparen()?;
                k
            }
            Tok::LBrace => {
                self.matchers(at, true)?;
                "instant vector"
            }
            Tok::Ident(name) => {
                self.bump()?;
                if AGGREGATES.contains(&name.as_str()) {
                    self.aggregate(at)?
                } else if self.tok.1 == Tok::LParen {
                    self.call(name, at)?
                } else {
                    if self.tok.1 == Tok::LBrace {
                        let open = self.tok.0;
                        self.matchers(open, false)?;
                    }
                    "instant vector"
                }
            }
            Tok::Eof => return Err((at, "unexpected end of input".into())),
            _ => return self.unexpected(""),
        };
        loop {
            match self.tok.1.clone() {
                Tok::LBracket => {
                    self.bump()?;
                    self.bump_duration()?;
                    if self.tok.1 == Tok::Colon {
                        self.bump()?;
                        if matches!(self.tok.1, Tok::Duration(_)) {
                            self.bump()?;
                        }
                    }
                    if self.tok.1 != Tok::RBracket {
                        return self.unexpected("");
                    }
                    self.bump()?;
                    kind = "range vector";
                }
                Tok::Ident(s) if s == "offset" => {
                    self.bump()?;
                    if matches!(self.tok.1, Tok::Op("-")) {
                        self.bump()?;
                    }
                    match self.tok.1 {
                        Tok::Duration(_) => {
                            self.bump()?;
                        }
                        _ => return self.unexpected(" in offset, expected duration"),
                    }
                }
                Tok::At => {
                    self.bump()?;
                    match &self.tok.1 {
                        Tok::Number(_) => {
                            self.bump()?;
                        }
                        Tok::Op("-" | "+") => {
                            self.bump()?;
                            if !matches!(self.tok.1, Tok::Number(_)) {
                                return self.unexpected(" in @, expected timestamp");
                            }
                            self.bump()?;
                        }
                        Tok::Ident(s) if s == "start" || s == "end" => {
                            self.bump()?;
                            if self.tok.1 != Tok::LParen {
                                return self.unexpected(" in @, expected \"(\"");
                            }
                            self.bump()?;
                            self.expect_rparen()?;
                        }
                        _ => return self.unexpected(" in @, expected timestamp"),
                    }
                }
                _ => return Ok(kind),
            }
        }
    }

    fn bump_duration(&mut self) -> Result<(), Found> {
        match self.tok.1 {
            Tok::Duration(_) => self.bump().map(|_| ()),
            _ => self.unexpected(""),
        }
    }

    /// `{name op "value", ...}`.
    fn matchers(&mut self, open: usize, bare: bool) -> Result<(), Found> {
        self.bump()?;
        let mut any = false;
        loop {
            match self.tok.1.clone() {
                Tok::RBrace => {
                    self.bump()?;
                    if bare && !any {
                        self.empty_selectors.push(open);
                    }
                    return Ok(());
                }
                Tok::Comma => {
                    self.bump()?;
                }
                Tok::Ident(_) => {
                    self.bump()?;
                    if !matches!(self.tok.1, Tok::Op("=" | "!=" | "=~" | "!~")) {
                        return self
                            .unexpected(" in label matching, expected label matching operator");
                    }
                    self.bump()?;
                    if !matches!(self.tok.1, Tok::Str(_)) {
                        return self.unexpected(" in label matching, expected string");
                    }
                    self.bump()?;
                    any = true;
                }
                _ => return self.unexpected(" in label matching, expected identifier or \"}\""),
            }
        }
    }

    fn aggregate(&mut self, at: usize) -> Result<&'static str, Found> {
        self.aggregates.push(at);
        if let Tok::Ident(s) = &self.tok.1 {
            if s == "by" || s == "without" {
                self.bump()?;
                self.labels(" in grouping opts, expected \"(\"")?;
            }
        }
        if self.tok.1 != Tok::LParen {
            return self.unexpected(" in aggregation, expected \"(\"");
        }
        self.bump()?;
        while self.tok.1 != Tok::RParen {
            self.expr()?;
            match self.tok.1 {
                Tok::Comma => {
                    self.bump()?;
                }
                _ => break,
            }
        }
        self.expect_rparen()?;
        if let Tok::Ident(s) = &self.tok.1 {
            if s == "by" || s == "without" {
                self.bump()?;
                self.labels(" in grouping opts, expected \"(\"")?;
            }
        }
        Ok("instant vector")
    }

    fn call(&mut self, name: String, at: usize) -> Result<&'static str, Found> {
        let i = self.calls.len();
        self.calls.push(Call {
            name,
            at,
            args: Vec::new(),
        });
        self.bump()?;
        while self.tok.1 != Tok::RParen {
            let arg_at = self.tok.0;
            let kind = self.expr()?;
            if let Some(c) = self.calls.get_mut(i) {
                c.args.push((arg_at, kind));
            }
            match self.tok.1 {
                Tok::Comma => {
                    self.bump()?;
                }
                _ => break,
            }
        }
        self.expect_rparen()?;
        Ok("instant vector")
    }
}

/// A range or subquery duration without a unit (`x[5]`), which Prometheus 2.42's lexer refuses
/// and promql_parser reads as seconds. Any other lexing problem is left to the parser.
pub fn unitless_duration(query: &str) -> Option<String> {
    let mut lex = Lexer::new(query);
    loop {
        match lex.next() {
            Ok((_, Tok::Eof)) => return None,
            Ok(_) => {}
            Err((pos, what)) if what == "missing unit character in duration" => {
                return Some(format!("{}: parse error: {what}", position(query, pos)));
            }
            Err(_) => return None,
        }
    }
}

/// `line:col` as Prometheus's `ParseErr` prints a byte position.
fn position(q: &str, pos: usize) -> String {
    let pos = pos.min(q.len());
    let before = &q.as_bytes()[..pos];
    let line = 1 + before.iter().filter(|c| **c == b'\n').count();
    let last_break = before
        .iter()
        .rposition(|c| *c == b'\n')
        .map_or(-1, |i| i as i64);
    format!("{line}:{}", pos as i64 - last_break)
}

/// The text between the first pair of `'` (promql_parser's quoting of a name).
fn quoted(msg: &str) -> Option<&str> {
    let from = msg.find(['\'', '"'])? + 1;
    let len = msg[from..].find(['\'', '"'])?;
    Some(&msg[from..from + len])
}

fn type_name(t: &str) -> &str {
    match t {
        "matrix" => "range vector",
        "vector" => "instant vector",
        other => other,
    }
}

/// Prometheus's error text for `query`, which promql_parser refused with `msg`; `msg` itself
/// when the position cannot be told.
pub fn prometheus_text(query: &str, msg: &str) -> String {
    let at = |pos: usize, what: &str| format!("{}: parse error: {what}", position(query, pos));
    let mut r = match Reader::new(query) {
        Ok(r) => r,
        Err((pos, what)) => return at(pos, &what),
    };
    match r.expr() {
        Err((pos, what)) => return at(pos, &what),
        Ok(_) if r.tok.1 != Tok::Eof => {
            let (pos, what) = r.unexpected::<()>("").err().unwrap_or_default();
            return at(pos, &what);
        }
        Ok(_) => {}
    }
    let call = |name: &str| r.calls.iter().find(|c| c.name == name);
    if msg.starts_with("unknown function with name") {
        if let Some(c) = quoted(msg).and_then(call) {
            return at(c.at, &format!("unknown function with name {:?}", c.name));
        }
    }
    if let Some(rest) = msg.strip_prefix("expected ") {
        // "expected 1 argument(s) in call to 'rate', got 2"
        if let (Some((n, _)), Some(c)) =
            (rest.split_once(" argument(s)"), quoted(msg).and_then(call))
        {
            let got = msg.rsplit(' ').next().unwrap_or_default();
            return at(
                c.at,
                &format!(
                    "expected {n} argument(s) in call to {:?}, got {got}",
                    c.name
                ),
            );
        }
        // "expected type matrix in call to function 'rate', got vector"
        if let (Some(t), Some(c)) = (rest.strip_prefix("type "), quoted(msg).and_then(call)) {
            let want = type_name(t.split(" in call").next().unwrap_or_default());
            let got = type_name(msg.rsplit("got ").next().unwrap_or_default());
            let pos = c
                .args
                .iter()
                .find(|(_, k)| *k == got)
                .or(c.args.first())
                .map_or(c.at, |(p, _)| *p);
            return at(
                pos,
                &format!(
                    "expected type {want} in call to function {:?}, got {got}",
                    c.name
                ),
            );
        }
    }
    if msg.starts_with("wrong number of arguments for aggregate expression") {
        if let Some(pos) = r.aggregates.first() {
            return at(*pos, msg);
        }
    }
    if msg.starts_with("vector selector must contain at least one non-empty matcher") {
        if let Some(pos) = r.empty_selectors.first() {
            return at(*pos, msg);
        }
    }
    msg.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus 2.42's own answers (`tests/promql/parse_errors.tsv`, recorded from it), each
    /// against waggle's parser.
    #[test]
    fn parse_errors_read_as_prometheus_writes_them() {
        let golden = include_str!("../../../tests/promql/parse_errors.tsv");
        let mut wrong = Vec::new();
        let mut n = 0;
        for line in golden
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((q, want)) = line.split_once('\t') else {
                continue;
            };
            n += 1;
            let got = crate::promql::parse(q).err().unwrap_or_default();
            if got != want {
                wrong.push(format!("{q}\n  prometheus {want}\n  waggle     {got}"));
            }
        }
        assert!(n >= 40, "{n} cases");
        assert!(
            wrong.is_empty(),
            "{} of {n} differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn positions_count_lines_and_bytes_as_go_does() {
        assert_eq!(position("x +", 3), "1:4");
        assert_eq!(position("sum(\n  x", 8), "2:4");
        assert_eq!(position("a\nb", 0), "1:1");
        assert_eq!(position("a\nb", 2), "2:1");
    }
}
