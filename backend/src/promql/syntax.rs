//! Prometheus 2.42's text for a query its parser refuses, `<line>:<col>: parse error: <what>`,
//! with Prometheus's position and wording for the common classes: an unexpected token, an
//! unclosed parenthesis, brace or bracket, a bad duration, an unknown function, a wrong
//! argument count or type. promql_parser decides that a query is wrong; this re-reads the query
//! the way Prometheus's lexer and parser do to say where, since users paste these into searches.

mod lexer;
mod reader;

use lexer::{Lexer, Tok};
use reader::Reader;

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
