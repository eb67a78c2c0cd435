//! An empty ratio whose numerator alone selects nothing while its denominator has data: an
//! error-rate query while there were no errors. The usual fix is `or on() vector(0)`.

use promql_parser::parser::token::T_DIV;
use promql_parser::parser::Expr;

use super::{has_data, matchers, selectors, Budget, Window};
use crate::db::Lock;

/// The outermost division whose numerator selects no series and whose denominator has data.
fn find<'e>(lock: &Lock, e: &'e Expr, w: &Window, b: &mut Budget) -> Option<&'e Expr> {
    match e {
        Expr::Binary(x) if x.op.id() == T_DIV => {
            let (mut num, mut den) = (Vec::new(), Vec::new());
            selectors(&x.lhs, &mut num);
            selectors(&x.rhs, &mut den);
            if !b.spend((num.len() + den.len()) as u64) {
                return None;
            }
            let empty = num
                .iter()
                .any(|(vs, _)| lock.read().select(&matchers(vs)).is_empty());
            let data = empty
                && !den.is_empty()
                && den
                    .iter()
                    .all(|(vs, range)| has_data(lock, vs, *range, w, b));
            if data {
                return Some(&x.lhs);
            }
            find(lock, &x.lhs, w, b).or_else(|| find(lock, &x.rhs, w, b))
        }
        Expr::Binary(x) => find(lock, &x.lhs, w, b).or_else(|| find(lock, &x.rhs, w, b)),
        Expr::Paren(p) => find(lock, &p.expr, w, b),
        Expr::Unary(u) => find(lock, &u.expr, w, b),
        Expr::Aggregate(a) => find(lock, &a.expr, w, b),
        Expr::Call(c) => c.args.args.iter().find_map(|a| find(lock, a, w, b)),
        _ => None,
    }
}

pub(super) fn empty_numerator(lock: &Lock, e: &Expr, w: &Window, b: &mut Budget) -> Option<String> {
    let num = find(lock, e, w, b)?;
    let text = num.to_string();
    Some(format!(
        "the ratio is empty only because its numerator {text} selects no series, while its denominator has data: \
         when no request matches the numerator (no errors, for an error rate) the ratio is empty, not 0. \
         To make it 0, write the numerator as ({text} or on() vector(0))"
    ))
}
