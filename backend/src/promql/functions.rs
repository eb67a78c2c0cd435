//! PromQL's functions as Prometheus 2.42 defines them (`promql/functions.go` at v2.42.0).

use chrono::{Datelike, TimeZone, Timelike, Utc};
use promql_parser::parser::{Call, Expr};

use super::aggregate::quantile_sorted;
use super::engine::{check_unique, Evaluator};
use super::value::{exec, Result, Sample, Series, Value};
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

fn scalar(v: Value) -> Result<f64> {
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

fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
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
fn absent_labels(e: &Expr) -> Labels {
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
        let matrix = match ev.eval(arg(mi)?, ts)? {
            Value::Matrix(m) => m,
            other => {
                return exec(format!(
                    "{name}: expected a range vector, got {}",
                    other.type_name()
                ))
            }
        };
        let out = range_function(ev, c, name, &args, mi, matrix, ts)?;
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

/// Functions with a range-vector argument, applied to each series.
fn range_function(
    ev: &Evaluator<'_>,
    c: &Call,
    name: &str,
    args: &[&Expr],
    mi: usize,
    matrix: Vec<Series>,
    ts: i64,
) -> Result<Vec<Sample>> {
    let scalar_at = |i: usize| -> Result<f64> {
        match args.get(i) {
            Some(e) => scalar(ev.eval(e, ts)?),
            None => exec(format!("{name}: missing argument {i}")),
        }
    };
    let range_ms = match args.get(mi) {
        Some(Expr::MatrixSelector(ms)) => super::engine::duration_ms(&ms.range),
        Some(Expr::Subquery(sq)) => super::engine::duration_ms(&sq.range),
        _ => 0,
    };
    if name == "absent_over_time" {
        return Ok(if matrix.iter().any(|s| !s.points.is_empty()) {
            Vec::new()
        } else {
            vec![Sample {
                labels: absent_labels(args.get(mi).copied().unwrap_or(&Expr::NumberLiteral(
                    promql_parser::parser::NumberLiteral::new(0.0),
                ))),
                t: ts,
                v: 1.0,
            }]
        });
    }
    let q = if name == "quantile_over_time" {
        scalar_at(0)?
    } else {
        0.0
    };
    let predict_secs = if name == "predict_linear" {
        scalar_at(1)?
    } else {
        0.0
    };
    let (sf, tf) = if name == "holt_winters" {
        let (sf, tf) = (scalar_at(1)?, scalar_at(2)?);
        if sf <= 0.0 || sf >= 1.0 {
            return exec(format!(
                "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
            ));
        }
        if tf <= 0.0 || tf >= 1.0 {
            return exec(format!(
                "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
            ));
        }
        (sf, tf)
    } else {
        (0.0, 0.0)
    };
    let (range_start, range_end) = match args.get(mi) {
        Some(Expr::MatrixSelector(ms)) => {
            let end = ev.at(&ms.vs.at, ts) - offset_of(&ms.vs.offset);
            (end - range_ms, end)
        }
        // A subquery's window ends where its steps do: at its `@`, less its offset.
        Some(Expr::Subquery(sq)) => {
            let end = ev.at(&sq.at, ts) - offset_of(&sq.offset);
            (end - range_ms, end)
        }
        _ => (ts - range_ms, ts),
    };
    let mut out = Vec::new();
    for s in matrix {
        let p = &s.points;
        if p.is_empty() {
            continue;
        }
        let v = match name {
            "rate" | "increase" | "delta" => extrapolated_rate(
                p,
                range_start,
                range_end,
                range_ms,
                name != "delta",
                name == "rate",
            ),
            "irate" | "idelta" => instant_value(p, name == "irate"),
            "avg_over_time" => Some(avg_over_time(p)),
            "count_over_time" => Some(p.len() as f64),
            "last_over_time" => p.last().map(|x| x.1),
            "max_over_time" => {
                Some(
                    p.iter()
                        .fold(p[0].1, |m, x| if x.1 > m || m.is_nan() { x.1 } else { m }),
                )
            }
            "min_over_time" => {
                Some(
                    p.iter()
                        .fold(p[0].1, |m, x| if x.1 < m || m.is_nan() { x.1 } else { m }),
                )
            }
            "sum_over_time" => {
                let (sum, c) = p.iter().fold((0.0, 0.0), |(s, c), x| kahan_inc(x.1, s, c));
                Some(if sum.is_infinite() { sum } else { sum + c })
            }
            "quantile_over_time" => {
                let mut vals: Vec<f64> = p.iter().map(|x| x.1).collect();
                Some(quantile_values(q, &mut vals))
            }
            "stddev_over_time" | "stdvar_over_time" => {
                let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) =
                    (0.0, 0.0, 0.0, 0.0, 0.0);
                for x in p {
                    count += 1.0;
                    let delta = x.1 - (mean + c_mean);
                    (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
                    (aux, c_aux) = kahan_inc(delta * (x.1 - (mean + c_mean)), aux, c_aux);
                }
                let var = (aux + c_aux) / count;
                Some(if name == "stddev_over_time" {
                    var.sqrt()
                } else {
                    var
                })
            }
            "present_over_time" => Some(1.0),
            "changes" => Some(
                p.windows(2)
                    .filter(|w| w[1].1 != w[0].1 && !(w[1].1.is_nan() && w[0].1.is_nan()))
                    .count() as f64,
            ),
            "resets" => Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
            "deriv" => (p.len() >= 2).then(|| linear_regression(p, p[0].0).0),
            "predict_linear" => (p.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(p, ts);
                slope * predict_secs + intercept
            }),
            "holt_winters" => holt_winters(p, sf, tf),
            other => {
                return exec(format!(
                    "function {other} is not supported on a range vector ({})",
                    c.func.name
                ))
            }
        };
        if let Some(v) = v {
            let labels = if name == "last_over_time" {
                s.labels
            } else {
                s.labels.without_name()
            };
            out.push(Sample { labels, t: ts, v });
        }
    }
    Ok(out)
}

fn offset_of(o: &Option<promql_parser::parser::Offset>) -> i64 {
    match o {
        Some(promql_parser::parser::Offset::Pos(d)) => super::engine::duration_ms(d),
        Some(promql_parser::parser::Offset::Neg(d)) => -super::engine::duration_ms(d),
        None => 0,
    }
}

fn quantile_values(q: f64, v: &mut [f64]) -> f64 {
    if v.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    quantile_sorted(q, v)
}

fn avg_over_time(p: &[(i64, f64)]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0, 0.0);
    for x in p {
        count += 1.0;
        if mean.is_infinite() {
            if x.1.is_infinite() && (mean > 0.0) == (x.1 > 0.0) {
                continue;
            }
            if !x.1.is_infinite() && !x.1.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(x.1 / count - mean / count, mean, c);
    }
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

/// Prometheus 2.42's `extrapolatedRate` (zero-clamp before the threshold test).
fn extrapolated_rate(
    p: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for x in &p[1..] {
            if x.1 < prev {
                result += prev;
            }
            prev = x.1;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (p.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    let mut factor = interval / sampled;
    if rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(p: &[(i64, f64)], rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (prev, last) = (p[p.len() - 2], p[p.len() - 1]);
    let mut v = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

fn linear_regression(p: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = p[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in p.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn holt_winters(p: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let trend = |i: usize, s0: f64, s1: f64, b: f64| {
        if i == 0 {
            b
        } else {
            tf * (s1 - s0) + (1.0 - tf) * b
        }
    };
    let (mut s0, mut s1, mut b) = (0.0, p[0].1, p[1].1 - p[0].1);
    for (i, x) in p.iter().enumerate().skip(1) {
        let xv = sf * x.1;
        b = trend(i - 1, s0, s1, b);
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = xv + y;
    }
    Some(s1)
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
    fn extrapolated_rate_matches_hand_computation() {
        // 1 s samples 0..=59 over a 60 s window ending at 60 s, counter +1/s.
        let p: Vec<(i64, f64)> = (1..=60).map(|i| (i * 1000, i as f64)).collect();
        let r = extrapolated_rate(&p, 0, 60_000, 60_000, true, true).unwrap();
        assert!((r - 1.0).abs() < 1e-12, "{r}");
        assert_eq!(
            extrapolated_rate(&p[..1], 0, 60_000, 60_000, true, true),
            None
        );
    }

    #[test]
    fn go_min_max_semantics() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert_eq!(go_min(f64::NEG_INFINITY, f64::NAN), f64::NEG_INFINITY);
        assert!(go_max(-0.0, 0.0).is_sign_positive());
    }
}
