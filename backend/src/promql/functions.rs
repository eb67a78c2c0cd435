//! PromQL's functions as Prometheus 2.42 defines them (`promql/functions.go` at v2.42.0).

use chrono::{Datelike, TimeZone, Timelike, Utc};
use promql_parser::parser::{Call, Expr};

use super::engine::{check_unique, Evaluator, RangeSeries};
use super::value::{exec, Result, Sample, Value};
use crate::labels::{Labels, METRIC_NAME};

/// Every function Prometheus 2.42 knows. The parser accepts newer ones, which 2.42 rejects.
pub const FUNCTIONS_2_42: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "ln",
    "log10",
    "log2",
    "last_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Registers `holt_winters` with the parser (it was renamed after 2.42). Idempotent.
pub fn register_2_42_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::value::ValueType;
        let hw = promql_parser::parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        let _ = promql_parser::parser::register_extra_functions(vec![hw]);
    });
}

fn unwrap_paren(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn vector(v: Value) -> Result<Vec<Sample>> {
    match v {
        Value::Vector(v) => Ok(v),
        other => exec(format!(
            "expected an instant vector, got {}",
            other.type_name()
        )),
    }
}

pub(super) fn scalar(v: Value) -> Result<f64> {
    match v {
        Value::Scalar(s) => Ok(s),
        other => exec(format!("expected a scalar, got {}", other.type_name())),
    }
}

fn string_arg(e: &Expr) -> Result<String> {
    match unwrap_paren(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => exec("expected a string literal"),
    }
}

/// Go's `math.Max`/`math.Min`: an infinity wins over NaN, NaN wins over everything else.
fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else {
        a.min(b)
    }
}

pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn simple(ts: i64, v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    v.into_iter()
        .map(|s| Sample {
            labels: s.labels.without_name(),
            t: ts,
            v: f(s.v),
        })
        .collect()
}

/// Labels for `absent`: the equality matchers of a plain selector argument.
pub(super) fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_paren(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut l = Labels::default();
    let mut empty = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && l.get(&m.name).is_none() {
            l.set(&m.name, &m.value);
        } else {
            empty.push(m.name.clone());
        }
    }
    for n in empty {
        l.remove(&n);
    }
    l
}

fn date(
    ts: i64,
    args: Option<Vec<Sample>>,
    f: impl Fn(chrono::DateTime<Utc>) -> f64,
) -> Vec<Sample> {
    let at = |secs: i64| Utc.timestamp_opt(secs, 0).single();
    match args {
        None => at(ts.div_euclid(1000))
            .map(|t| {
                vec![Sample {
                    labels: Labels::default(),
                    t: ts,
                    v: f(t),
                }]
            })
            .unwrap_or_default(),
        Some(v) => v
            .into_iter()
            .filter_map(|s| {
                at(s.v as i64).map(|t| Sample {
                    labels: s.labels.without_name(),
                    t: ts,
                    v: f(t),
                })
            })
            .collect(),
    }
}

pub fn call(ev: &Evaluator<'_>, c: &Call, ts: i64) -> Result<Value> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| unwrap_paren(a)).collect();
    let arg = |i: usize| {
        args.get(i).copied().ok_or_else(|| {
            super::value::EvalError::Execution(format!("{name}: missing argument {i}"))
        })
    };
    let scalar_arg = |i: usize| -> Result<f64> { scalar(ev.eval(arg(i)?, ts)?) };

    // Functions over a range vector: each series of the matrix argument separately.
    let matrix_index = args
        .iter()
        .position(|a| matches!(a, Expr::MatrixSelector(_) | Expr::Subquery(_)));
    if let Some(mi) = matrix_index {
        // A range selector's windows are read in place; a subquery's matrix is built first.
        let fetched;
        let built;
        let series: Vec<RangeSeries<'_>> = match arg(mi)? {
            Expr::MatrixSelector(ms) => {
                fetched = ev.fetch(&ms.vs)?;
                ev.range_views(&fetched, &ms.vs, super::engine::duration_ms(&ms.range), ts)
            }
            other => {
                built = match ev.eval(other, ts)? {
                    Value::Matrix(m) => m,
                    other => {
                        return exec(format!(
                            "{name}: expected a range vector, got {}",
                            other.type_name()
                        ))
                    }
                };
                built
                    .iter()
                    .map(|s| RangeSeries {
                        labels: &s.labels,
                        no_name: std::borrow::Cow::Owned(s.labels.without_name()),
                        points: std::borrow::Cow::Borrowed(&s.points),
                        monotonic: false,
                    })
                    .collect()
            }
        };
        let out = super::over_time::range_function(ev, c, name, &args, mi, &series, ts)?;
        check_unique(&out)?;
        return Ok(Value::Vector(out));
    }

    let out: Vec<Sample> = match name {
        "time" => return Ok(Value::Scalar(ts as f64 / 1000.0)),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "scalar" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            return Ok(Value::Scalar(match v.as_slice() {
                [one] => one.v,
                _ => f64::NAN,
            }));
        }
        "vector" => vec![Sample {
            labels: Labels::default(),
            t: ts,
            v: scalar_arg(0)?,
        }],
        "timestamp" => {
            // A plain selector reports its samples' own timestamps; anything else the eval time.
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            let own = matches!(arg(0)?, Expr::VectorSelector(_));
            v.into_iter()
                .map(|s| Sample {
                    labels: s.labels.without_name(),
                    t: ts,
                    v: if own { s.t } else { ts } as f64 / 1000.0,
                })
                .collect()
        }
        "absent" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            if v.is_empty() {
                vec![Sample {
                    labels: absent_labels(arg(0)?),
                    t: ts,
                    v: 1.0,
                }]
            } else {
                Vec::new()
            }
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sin" | "cos"
        | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh" | "acosh"
        | "atanh" | "deg" | "rad" | "sgn" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                "atanh" => f64::atanh,
                "deg" => |v| v * 180.0 / std::f64::consts::PI,
                "rad" => |v| v * std::f64::consts::PI / 180.0,
                _ => |v: f64| {
                    if v < 0.0 {
                        -1.0
                    } else if v > 0.0 {
                        1.0
                    } else {
                        v
                    }
                },
            };
            simple(ts, vector(ev.eval(arg(0)?, ts)?)?, f)
        }
        "round" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            let to = if args.len() > 1 { scalar_arg(1)? } else { 1.0 };
            let inv = 1.0 / to;
            simple(ts, v, |x| (x * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            let (min, max) = (scalar_arg(1)?, scalar_arg(2)?);
            if max < min {
                Vec::new()
            } else {
                simple(ts, v, |x| go_max(min, go_min(max, x)))
            }
        }
        "clamp_max" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            let max = scalar_arg(1)?;
            simple(ts, v, |x| go_min(max, x))
        }
        "clamp_min" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            let min = scalar_arg(1)?;
            simple(ts, v, |x| go_max(min, x))
        }
        "sort" | "sort_desc" => {
            let mut v = vector(ev.eval(arg(0)?, ts)?)?;
            let desc = name == "sort_desc";
            // NaN sorts last either way.
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => b.v.total_cmp(&a.v),
                _ => a.v.total_cmp(&b.v),
            });
            v.into_iter().map(|s| Sample { t: ts, ..s }).collect()
        }
        "histogram_quantile" => {
            histogram_quantile(scalar_arg(0)?, vector(ev.eval(arg(1)?, ts)?)?, ts)
        }
        // Native histograms do not exist here: these yield nothing for float samples, as in 2.42.
        "histogram_count" | "histogram_sum" => {
            vector(ev.eval(arg(0)?, ts)?)?;
            Vec::new()
        }
        "histogram_fraction" => {
            scalar_arg(0)?;
            scalar_arg(1)?;
            vector(ev.eval(arg(2)?, ts)?)?;
            Vec::new()
        }
        "label_replace" => label_replace(
            vector(ev.eval(arg(0)?, ts)?)?,
            &string_arg(arg(1)?)?,
            &string_arg(arg(2)?)?,
            &string_arg(arg(3)?)?,
            &string_arg(arg(4)?)?,
            ts,
        )?,
        "label_join" => {
            let v = vector(ev.eval(arg(0)?, ts)?)?;
            let dst = string_arg(arg(1)?)?;
            let sep = string_arg(arg(2)?)?;
            let srcs = args
                .iter()
                .skip(3)
                .map(|a| string_arg(a))
                .collect::<Result<Vec<_>>>()?;
            for s in &srcs {
                if !crate::families::is_label_name(s) {
                    return exec(format!("invalid source label name in label_join(): {s}"));
                }
            }
            if !crate::families::is_label_name(&dst) {
                return exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                ));
            }
            v.into_iter()
                .map(|mut s| {
                    let joined = srcs
                        .iter()
                        .map(|n| s.labels.get(n).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join(&sep);
                    s.labels.set(&dst, &joined);
                    Sample { t: ts, ..s }
                })
                .collect()
        }
        "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute"
        | "month" | "year" => {
            let input = match args.first() {
                Some(a) => Some(vector(ev.eval(a, ts)?)?),
                None => None,
            };
            let f: fn(chrono::DateTime<Utc>) -> f64 = match name {
                "days_in_month" => |t| {
                    let (y, m) = (t.year(), t.month());
                    let next = if m == 12 {
                        Utc.with_ymd_and_hms(y + 1, 1, 1, 0, 0, 0)
                    } else {
                        Utc.with_ymd_and_hms(y, m + 1, 1, 0, 0, 0)
                    };
                    let first = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0);
                    match (next.single(), first.single()) {
                        (Some(n), Some(f)) => (n - f).num_days() as f64,
                        _ => f64::NAN,
                    }
                },
                "day_of_month" => |t| f64::from(t.day()),
                "day_of_week" => |t| f64::from(t.weekday().num_days_from_sunday()),
                "day_of_year" => |t| f64::from(t.ordinal()),
                "hour" => |t| f64::from(t.hour()),
                "minute" => |t| f64::from(t.minute()),
                "month" => |t| f64::from(t.month()),
                _ => |t| f64::from(t.year()),
            };
            date(ts, input, f)
        }
        other => return exec(format!("function {other} is not supported")),
    };
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

fn label_replace(
    v: Vec<Sample>,
    dst: &str,
    repl: &str,
    src: &str,
    re: &str,
    ts: i64,
) -> Result<Vec<Sample>> {
    let regex = regex::Regex::new(&format!("^(?:{re})$")).or_else(|_| {
        exec(format!(
            "invalid regular expression in label_replace(): {re}"
        ))
    })?;
    if !crate::families::is_label_name(dst) {
        return exec(format!(
            "invalid destination label name in label_replace(): {dst}"
        ));
    }
    Ok(v.into_iter()
        .map(|mut s| {
            let value = s.labels.get(src).unwrap_or("").to_owned();
            if let Some(caps) = regex.captures(&value) {
                let mut res = String::new();
                caps.expand(&go_template(repl), &mut res);
                s.labels.set(dst, &res);
            }
            Sample { t: ts, ..s }
        })
        .collect())
}

/// Go's `$1`/`${name}` expansion treats `$1x` as the group named `1x`; Rust's does too, so
/// only the escape `$$` needs no change. Kept as a seam for dialect fixes.
fn go_template(repl: &str) -> String {
    repl.to_owned()
}

/// `histogram_quantile` over classic buckets (`le` label), Prometheus's bucket algorithm.
fn histogram_quantile(q: f64, v: Vec<Sample>, ts: i64) -> Vec<Sample> {
    // (group key, output labels, buckets as (upper bound, count))
    type Group = (Labels, Labels, Vec<(f64, f64)>);
    let mut groups: Vec<Group> = Vec::new();
    let mut index: rustc_hash::FxHashMap<Labels, usize> = rustc_hash::FxHashMap::default();
    for s in v {
        let Some(le) = s.labels.get("le").and_then(parse_go_float) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        let i = *index.entry(key.clone()).or_insert_with(|| {
            let mut out = key.clone();
            out.remove(METRIC_NAME);
            groups.push((key, out, Vec::new()));
            groups.len() - 1
        });
        if let Some(g) = groups.get_mut(i) {
            g.2.push((le, s.v));
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.2.is_empty())
        .map(|(_, labels, buckets)| Sample {
            labels,
            t: ts,
            v: bucket_quantile(q, buckets),
        })
        .collect()
}

/// Go's `strconv.ParseFloat` for the forms `le` values take (incl. `+Inf`, `Inf`, `NaN`).
fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

pub(crate) fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds, then force monotonic counts.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (bound, count) in b {
        match c.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => c.push((bound, count)),
        }
    }
    let mut max = c.first().map_or(0.0, |x| x.1);
    for x in c.iter_mut().skip(1) {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let observations = c.last().map_or(0.0, |x| x.1);
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // sort.Search over all but the last bucket.
    let n = c.len() - 1;
    let idx = c.get(..n).map_or(0, |s| {
        s.partition_point(|x| {
            matches!(
                x.1.partial_cmp(&rank),
                Some(std::cmp::Ordering::Less) | None
            )
        })
    });
    if idx == n {
        return c.get(n - 1).map_or(f64::NAN, |x| x.0);
    }
    let (end, mut count) = c.get(idx).copied().unwrap_or((f64::NAN, f64::NAN));
    if idx == 0 && end <= 0.0 {
        return end;
    }
    let mut start = 0.0;
    if idx > 0 {
        let prev = c.get(idx - 1).copied().unwrap_or((0.0, 0.0));
        start = prev.0;
        count -= prev.1;
        rank -= prev.1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantile_edge_cases() {
        let inf = f64::INFINITY;
        type Case = (f64, Vec<(f64, f64)>, f64);
        let cases: Vec<Case> = vec![
            (0.5, vec![(1.0, 1.0), (2.0, 2.0), (inf, 2.0)], 1.0),
            (0.99, vec![(1.0, 0.0), (2.0, 10.0), (inf, 10.0)], 1.99),
            (0.5, vec![(1.0, 1.0), (2.0, 2.0)], f64::NAN),
            (0.5, vec![(inf, 5.0)], f64::NAN),
            (0.5, vec![(1.0, 0.0), (inf, 0.0)], f64::NAN),
            (1.0, vec![(1.0, 1.0), (inf, 2.0)], 1.0),
            (-1.0, vec![(1.0, 1.0), (inf, 2.0)], f64::NEG_INFINITY),
            (2.0, vec![(1.0, 1.0), (inf, 2.0)], f64::INFINITY),
            (0.5, vec![(-1.0, 5.0), (inf, 6.0)], -1.0),
            (0.5, vec![(1.0, 5.0), (2.0, 3.0), (inf, 10.0)], 1.0),
            (
                0.5,
                vec![(2.0, 2.0), (1.0, 1.0), (1.0, 1.0), (inf, 4.0)],
                1.0,
            ),
        ];
        for (q, b, want) in cases {
            let got = bucket_quantile(q, b.clone());
            assert!(
                got == want || (got.is_nan() && want.is_nan()) || (got - want).abs() < 1e-12,
                "q={q} {b:?}: {got} != {want}"
            );
        }
    }

    #[test]
    fn go_min_max_semantics() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert_eq!(go_min(f64::NEG_INFINITY, f64::NAN), f64::NEG_INFINITY);
        assert!(go_max(-0.0, 0.0).is_sign_positive());
    }
}
