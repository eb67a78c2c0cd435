//! A bound on a query's nesting, read off its text before the parser builds a tree, so that
//! no walk over the tree (the parser's own type checks, evaluation, explanation, rendering,
//! dropping it) can run out of stack.
//!
//! Prometheus 2.42 has no such limit (Go stacks grow); waggle refuses deeper queries with
//! `bad_data` instead of aborting the process. The bound is conservative: every node on a path
//! of the syntax tree is an operator token, a group (parentheses or a function call) or the
//! leaf, so `1 + ops + deepest child group`, summed over the groups a path enters, is never
//! less than the tree's real depth.

use promql_parser::parser::Expr;

/// Deepest query accepted: far beyond any real query (Flagger's are under 10), well within
/// what [`crate::promql::pool`]'s stacks hold for every recursive walk, in debug builds too.
pub const MAX_DEPTH: usize = 1000;

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 256 * 1024;

/// Refuses a query whose tree could be deeper than [`MAX_DEPTH`] or whose text is too long.
pub fn check(query: &str) -> Result<(), String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "query is {} bytes long; waggle accepts at most {MAX_QUERY_BYTES}",
            query.len()
        ));
    }
    let depth = bound(query);
    if depth > MAX_DEPTH {
        return Err(format!(
            "query is nested too deeply: up to {depth} levels of operators, parentheses and function calls, and waggle evaluates at most {MAX_DEPTH}"
        ));
    }
    Ok(())
}

/// One open group: its operators so far and its deepest child group.
#[derive(Default)]
struct Group {
    ops: usize,
    child: usize,
}

impl Group {
    fn bound(&self) -> usize {
        1usize.saturating_add(self.ops).saturating_add(self.child)
    }
}

/// The upper bound on the tree depth of `query` (see the module's doc).
pub fn bound(query: &str) -> usize {
    let b = query.as_bytes();
    let mut stack: Vec<Group> = vec![Group::default()];
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        i += 1;
        match c {
            b'#' => i = skip_until(b, i, b'\n'),
            b'"' | b'\'' => i = skip_string(b, i, c),
            b'`' => i = skip_until(b, i, b'`'),
            // Label matchers hold strings and `=~`, `!=`, never expressions.
            b'{' => i = skip_braces(b, i),
            // Ranges and subquery steps hold durations only; a subquery is one node more.
            b'[' => {
                i = skip_until(b, i, b']');
                top(&mut stack).ops += 1;
            }
            b'(' => stack.push(Group::default()),
            b')' => close(&mut stack),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => top(&mut stack).ops += 1,
            b'=' | b'!' | b'<' | b'>' => {
                if matches!(b.get(i), Some(b'=' | b'~')) {
                    i += 1;
                }
                top(&mut stack).ops += 1;
            }
            c if c.is_ascii_digit() || (c == b'.' && b.get(i).is_some_and(u8::is_ascii_digit)) => {
                i = skip_number(b, i);
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i - 1;
                while b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
                {
                    i += 1;
                }
                let word = b.get(start..i).unwrap_or_default();
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
                {
                    top(&mut stack).ops += 1;
                }
            }
            _ => {}
        }
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack.first().map_or(1, Group::bound)
}

fn top(stack: &mut Vec<Group>) -> &mut Group {
    if stack.is_empty() {
        stack.push(Group::default());
    }
    let last = stack.len() - 1;
    &mut stack[last]
}

/// Ends the innermost group (an unbalanced `)` is left to the parser to report).
fn close(stack: &mut Vec<Group>) {
    if stack.len() < 2 {
        return;
    }
    if let Some(g) = stack.pop() {
        let parent = top(stack);
        parent.child = parent.child.max(g.bound());
    }
}

fn skip_until(b: &[u8], mut i: usize, end: u8) -> usize {
    while let Some(&c) = b.get(i) {
        i += 1;
        if c == end {
            break;
        }
    }
    i
}

fn skip_string(b: &[u8], mut i: usize, quote: u8) -> usize {
    while let Some(&c) = b.get(i) {
        i += 1;
        if c == b'\\' {
            i += 1;
        } else if c == quote {
            break;
        }
    }
    i
}

fn skip_braces(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        i += 1;
        match c {
            b'"' | b'\'' => i = skip_string(b, i, c),
            b'`' => i = skip_until(b, i, b'`'),
            b'}' => break,
            _ => {}
        }
    }
    i
}

/// Skips a number or duration (`1e-5`, `0x1f`, `.5`, `5m30s`), whose signs are not operators.
fn skip_number(b: &[u8], mut i: usize) -> usize {
    let hex = b.get(i).is_some_and(|c| *c == b'x' || *c == b'X');
    while let Some(&c) = b.get(i) {
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' {
            i += 1;
            let exp = !hex && (c == b'e' || c == b'E');
            if exp && matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
        } else {
            break;
        }
    }
    i
}

/// The direct subexpressions of `e`.
pub fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => std::iter::once(&*a.expr)
            .chain(a.param.as_deref())
            .collect(),
        Expr::Unary(u) => vec![&*u.expr],
        Expr::Binary(b) => vec![&*b.lhs, &*b.rhs],
        Expr::Paren(p) => vec![&*p.expr],
        Expr::Subquery(s) => vec![&*s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| &**a).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real depth of a parsed tree, walked with an explicit stack.
    fn real_depth(e: &Expr) -> usize {
        let mut max = 0;
        let mut todo = vec![(e, 1usize)];
        while let Some((e, d)) = todo.pop() {
            max = max.max(d);
            todo.extend(children(e).into_iter().map(|c| (c, d + 1)));
        }
        max
    }

    #[test]
    fn the_bound_is_never_below_the_real_depth() {
        let cases = [
            "1",
            "abs(x)",
            "abs(abs(x))",
            "1+1+1",
            "((1))",
            "a + (b + c)",
            "-(-(-x))",
            "sum by (le) (rate(x_bucket{a=~\"(.+)\"}[5m]))",
            "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo\"}[1m])) by (le))",
            "max_over_time((max_over_time(x[1m:]))[5m:1m] offset -5m)",
            "topk(3, x) * on(a) group_left(b) y > bool 2",
            "1e-5 * 0x1f - .5 + x @ 1609746000",
            "rate(x[1m:10s]) / ignoring(code) rate(y[1m])",
            "# a comment (((( \n x",
            "label_replace(x, \"a\", \"((((\", \"b\", \"(.*)\")",
        ];
        for q in cases {
            let e = crate::promql::parse(q).unwrap_or_else(|err| panic!("{q}: {err}"));
            let (real, b) = (real_depth(&e), bound(q));
            assert!(b >= real, "{q}: bound {b} < real depth {real}");
            assert!(
                b <= real + 4,
                "{q}: bound {b} is far above the real depth {real}"
            );
        }
    }

    #[test]
    fn deep_queries_are_refused_by_name() {
        let n = MAX_DEPTH;
        let table = [
            format!("{}1{}", "abs(".repeat(n), ")".repeat(n)),
            format!("{}x{}", "sum(".repeat(n), ")".repeat(n)),
            format!("{}1", "1+".repeat(n)),
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1", "-".repeat(n)),
        ];
        for q in &table {
            let e = check(q).unwrap_err();
            assert!(e.contains("nested too deeply"), "{e}");
        }
        let ok = format!("{}1{}", "abs(".repeat(n - 2), ")".repeat(n - 2));
        assert_eq!(check(&ok), Ok(()));
        let long = "x".repeat(MAX_QUERY_BYTES + 1);
        assert!(check(&long).unwrap_err().contains("bytes long"));
    }

    #[test]
    fn strings_comments_and_matchers_do_not_count() {
        assert_eq!(bound("x{a=\"((((((+-*\"}"), 1);
        assert_eq!(bound("\"(((\\\"(((\""), 1);
        assert_eq!(bound("x # (((((((("), 1);
        assert_eq!(bound("x[5m:1m]"), 2, "a subquery is a node");
        assert_eq!(bound("1e-5"), 1, "an exponent's sign is not an operator");
    }
}
