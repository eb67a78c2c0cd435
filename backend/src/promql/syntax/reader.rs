//! Prometheus's parser, far enough to find the first syntax error in a token stream, noting
//! where each call, argument and aggregation starts for the errors found later.

use super::lexer::{Found, Lexer, Tok};

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

/// A call as read: its name and where it and each argument start, with the argument's type as
/// its shape shows it.
pub(super) struct Call {
    pub(super) name: String,
    pub(super) at: usize,
    pub(super) args: Vec<(usize, &'static str)>,
}

/// Re-reads the query as Prometheus's parser does, far enough to find the first syntax error.
pub(super) struct Reader<'q> {
    lex: Lexer<'q>,
    pub(super) tok: (usize, Tok),
    pub(super) calls: Vec<Call>,
    pub(super) aggregates: Vec<usize>,
    pub(super) empty_selectors: Vec<usize>,
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
    pub(super) fn new(q: &'q str) -> Result<Self, Found> {
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

    pub(super) fn unexpected<T>(&self, context: &str) -> Result<T, Found> {
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
    pub(super) fn expr(&mut self) -> Result<&'static str, Found> {
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
