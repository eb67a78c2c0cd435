//! The PromQL engine: parsing (with 2.42's dialect), evaluation and result types.

pub mod aggregate;
pub mod binary;
pub mod depth;
pub mod engine;
pub mod format;
pub mod functions;
pub mod over_time;
pub mod pool;
pub mod syntax;
pub mod value;

use promql_parser::parser::{Expr, LabelModifier, VectorMatchCardinality};

pub use engine::{Evaluator, Options};
pub use value::{EvalError, Sample, Series, Value};

/// Parses a query and rejects what the parser accepts but Prometheus 2.42 does not, and
/// anything nested deeper than [`depth::MAX_DEPTH`] (before the parser builds its tree).
pub fn parse(query: &str) -> Result<Expr, String> {
    depth::check(query)?;
    functions::register_2_42_functions();
    let expr =
        promql_parser::parser::parse(query).map_err(|e| syntax::prometheus_text(query, &e))?;
    check_dialect(&expr).map_err(|e| syntax::prometheus_text(query, &e))?;
    if let Some(e) = syntax::unitless_duration(query) {
        return Err(e);
    }
    Ok(expr)
}

/// Parsed queries by their text. Flagger sends the same few queries every interval, and
/// parsing compiles every regex matcher anew, which costs more than evaluating them.
const PARSE_CACHE_ENTRIES: usize = 512;

pub fn parse_cached(query: &str) -> Result<std::sync::Arc<Expr>, String> {
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<rustc_hash::FxHashMap<String, Arc<Expr>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(query).cloned()) {
        return Ok(hit);
    }
    let expr = Arc::new(parse(query)?);
    if let Ok(mut c) = cache.lock() {
        // Bounded: a burst of distinct queries empties it rather than growing it.
        if c.len() >= PARSE_CACHE_ENTRIES {
            c.clear();
        }
        c.insert(query.to_owned(), expr.clone());
    }
    Ok(expr)
}

fn check_dialect(e: &Expr) -> Result<(), String> {
    match e {
        Expr::Call(c) => {
            if !functions::FUNCTIONS_2_42.contains(&c.func.name) {
                return Err(format!("unknown function with name \"{}\"", c.func.name));
            }
            c.args.args.iter().try_for_each(|a| check_dialect(a))
        }
        Expr::Aggregate(a) => {
            let name = a.op.to_string();
            if matches!(name.as_str(), "limitk" | "limit_ratio") {
                return Err(format!("unknown aggregation \"{name}\""));
            }
            check_dialect(&a.expr)?;
            a.param.as_ref().map_or(Ok(()), |p| check_dialect(p))
        }
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return Err("fill modifiers are not supported".into());
                }
                if let (Some(LabelModifier::Include(on)), Some(extra)) =
                    (&m.matching, m.card.labels())
                {
                    if let Some(l) = extra.labels.iter().find(|l| on.labels.contains(l)) {
                        return Err(format!(
                            "label \"{l}\" must not occur in ON and GROUP clause at once"
                        ));
                    }
                }
                let _ = matches!(m.card, VectorMatchCardinality::ManyToMany);
            }
            check_dialect(&b.lhs)?;
            check_dialect(&b.rhs)
        }
        Expr::VectorSelector(vs) => selector(vs),
        Expr::MatrixSelector(ms) => selector(&ms.vs),
        Expr::Paren(p) => check_dialect(&p.expr),
        Expr::Unary(u) => check_dialect(&u.expr),
        Expr::Subquery(s) => check_dialect(&s.expr),
        _ => Ok(()),
    }
}

fn selector(vs: &promql_parser::parser::VectorSelector) -> Result<(), String> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err("\"or\" inside a selector is not supported".into());
    }
    Ok(())
}
