//! PromQL to Honeycomb: the three shapes Flagger's checks use, each turned into one Honeycomb
//! query, and every other construct refused with a message that names it. Label matchers become
//! Honeycomb filters through a table; the answer is computed from the query's result the way
//! the PromQL would compute it from series.

use std::collections::BTreeMap;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AggregateExpr, Call, Expr, LabelModifier, MatrixSelector};
use serde_json::{json, Value};

use crate::promql::engine::ops::{T_DIV, T_MUL, T_SUM};

/// Where a PromQL label's matchers go in Honeycomb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Column {
        name: String,
        numeric: bool,
    },
    /// Matchers on this label are dropped (it has no meaning in application telemetry).
    Ignore,
}

/// The label table: PromQL label → Honeycomb column.
#[derive(Debug, Clone)]
pub struct Labels(pub BTreeMap<String, Target>);

/// Built-in mappings, as the community adapter and OpenTelemetry users name things.
pub const DEFAULT_LABELS: &[(&str, &str)] = &[
    ("service", "service.name"),
    ("job", "service.name"),
    ("app", "service.name"),
    ("service_name", "service.name"),
    ("destination_workload", "service.name"),
    ("destination_app", "service.name"),
    ("destination_canonical_service", "service.name"),
    ("destination_service_name", "service.name"),
    ("code", "http.status_code"),
    ("response_code", "http.status_code"),
    ("status", "http.status_code"),
    ("status_code", "http.status_code"),
    ("http_status_code", "http.status_code"),
    ("namespace", "k8s.namespace.name"),
    ("destination_workload_namespace", "k8s.namespace.name"),
    ("destination_service_namespace", "k8s.namespace.name"),
    ("kubernetes_namespace", "k8s.namespace.name"),
    ("method", "http.request.method"),
    ("reporter", "-"),
];

/// Columns holding numbers, whose values are compared as numbers.
const NUMERIC: &[&str] = &[
    "http.status_code",
    "http.response.status_code",
    "rpc.grpc.status_code",
];

impl Labels {
    /// The defaults, then `overrides` of the form `label=column` (`label=-` ignores the label).
    pub fn new(overrides: &[String]) -> Result<Self, String> {
        let mut m = BTreeMap::new();
        let mut put = |label: &str, column: &str| {
            let t = if column == "-" {
                Target::Ignore
            } else {
                Target::Column {
                    name: column.to_owned(),
                    numeric: NUMERIC.contains(&column),
                }
            };
            m.insert(label.to_owned(), t);
        };
        for (l, c) in DEFAULT_LABELS {
            put(l, c);
        }
        for o in overrides {
            let (l, c) = o
                .split_once('=')
                .filter(|(l, c)| !l.trim().is_empty() && !c.trim().is_empty())
                .ok_or_else(|| {
                    format!("{o:?} is not label=column (or label=- to ignore the label)")
                })?;
            put(l.trim(), c.trim());
        }
        Ok(Self(m))
    }
}

/// How the PromQL value is computed from the Honeycomb result.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// A number without a query (`vector(1)`, Flagger's online check).
    Constant(f64),
    /// COUNT per second over the (rounded) window.
    Rate,
    /// Σ COUNT of the breakdown rows the numerator's matchers accept / Σ COUNT of all rows.
    Ratio {
        column: String,
        numerator: Vec<Matcher>,
    },
    /// The percentile of the duration column, divided to the metric's unit.
    Quantile { key: String, divisor: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The Honeycomb query specification (without time fields).
    pub spec: Value,
    pub finish: Finish,
    pub scale: f64,
    /// The window as written, in seconds, and as Honeycomb will use it (whole minutes).
    pub window_s: u64,
    pub range_s: u64,
    /// The `service.name` filter value, for per-service datasets.
    pub service: Option<String>,
}

const SHAPES: &str = "supported: sum(rate(<counter>{...}[w])), sum(rate(<counter>{..., code matchers}[w])) / sum(rate(<counter>{...}[w])) [* k], histogram_quantile(q, sum(rate(<histogram>_bucket{...}[w])) by (le)), and vector(<number>)";

fn unsupported(what: impl std::fmt::Display) -> String {
    format!("Honeycomb query mode cannot translate {what} ({SHAPES})")
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip(&p.expr),
        other => other,
    }
}

fn number(e: &Expr) -> Option<f64> {
    match strip(e) {
        Expr::NumberLiteral(n) => Some(n.val),
        _ => None,
    }
}

pub fn translate(expr: &Expr, labels: &Labels) -> Result<Plan, String> {
    let constant = |v: f64| Plan {
        spec: Value::Null,
        finish: Finish::Constant(v),
        scale: 1.0,
        window_s: 0,
        range_s: 0,
        service: None,
    };
    match strip(expr) {
        Expr::NumberLiteral(n) => Ok(constant(n.val)),
        Expr::Call(c) if c.func.name == "vector" => {
            match c.args.args.first().and_then(|a| number(a)) {
                Some(v) => Ok(constant(v)),
                None => Err(unsupported("vector() of anything but a number")),
            }
        }
        Expr::Binary(b) if b.op.id() == T_MUL => {
            let (k, inner) = match (number(&b.lhs), number(&b.rhs)) {
                (Some(k), None) => (k, &b.rhs),
                (None, Some(k)) => (k, &b.lhs),
                _ => return Err(unsupported("a product that is not <shape> * <number>")),
            };
            let mut p = translate(inner, labels)?;
            p.scale *= k;
            Ok(p)
        }
        Expr::Binary(b) if b.op.id() == T_DIV => ratio(&b.lhs, &b.rhs, labels),
        Expr::Aggregate(a) => {
            let ms = sum_of_rate(a)?;
            let (name, filters, service) = selector(ms, labels, &[])?;
            counter_name(&name)?;
            let (window_s, range_s) = window(ms)?;
            Ok(Plan {
                spec: spec(json!([{"op": "COUNT"}]), filters, None),
                finish: Finish::Rate,
                scale: 1.0,
                window_s,
                range_s,
                service,
            })
        }
        Expr::Call(c) if c.func.name == "histogram_quantile" => quantile(c, labels),
        Expr::Call(c) => Err(unsupported(format!("the function {}()", c.func.name))),
        Expr::Binary(b) => Err(unsupported(format!("the operator {}", b.op))),
        Expr::VectorSelector(_) => Err(unsupported(
            "a bare selector (Honeycomb holds events, not series)",
        )),
        Expr::MatrixSelector(_) => Err(unsupported("a range vector")),
        Expr::Subquery(_) => Err(unsupported("a subquery")),
        Expr::Unary(_) => Err(unsupported("a negation")),
        other => Err(unsupported(format!("{other}"))),
    }
}

fn sum_of_rate(a: &AggregateExpr) -> Result<&MatrixSelector, String> {
    if a.op.id() != T_SUM {
        return Err(unsupported(format!("the aggregation {}", a.op)));
    }
    if a.modifier.is_some() {
        return Err(unsupported(
            "sum by/without outside histogram_quantile (the answer is one number)",
        ));
    }
    match strip(&a.expr) {
        Expr::Call(c) if c.func.name == "rate" => match c.args.args.first().map(|x| strip(x)) {
            Some(Expr::MatrixSelector(ms)) => Ok(ms),
            _ => Err(unsupported(
                "rate() of anything but a selector with a range",
            )),
        },
        Expr::Call(c) => Err(unsupported(format!(
            "sum({}(...)); only sum(rate(...))",
            c.func.name
        ))),
        _ => Err(unsupported("sum() of anything but rate(...)")),
    }
}

fn window(ms: &MatrixSelector) -> Result<(u64, u64), String> {
    if ms.vs.offset.is_some() || ms.vs.at.is_some() {
        return Err(unsupported("offset or @ modifiers"));
    }
    let s = ms.range.as_secs();
    if s == 0 {
        return Err(unsupported("a window under one second"));
    }
    // Honeycomb rounds time ranges to the minute; the answer says so when it changes the window.
    Ok((s, s.div_ceil(60) * 60))
}

fn counter_name(name: &str) -> Result<(), String> {
    if name.ends_with("_total") || name.ends_with("_count") || name == "envoy_cluster_upstream_rq" {
        Ok(())
    } else {
        Err(unsupported(format!(
            "the metric {name:?}: a request counter ends in _total or _count"
        )))
    }
}

/// (metric name, Honeycomb filters, service.name equality value). Matchers in `local` are left
/// out (the ratio applies them to breakdown rows itself).
fn selector(
    ms: &MatrixSelector,
    labels: &Labels,
    local: &[Matcher],
) -> Result<(String, Vec<Value>, Option<String>), String> {
    let vs = &ms.vs;
    let mut name = vs.name.clone();
    let mut filters = Vec::new();
    let mut service = None;
    for m in &vs.matchers.matchers {
        if m.name == crate::labels::METRIC_NAME {
            match m.op {
                MatchOp::Equal => name = Some(m.value.clone()),
                _ => return Err(unsupported("a regular expression on the metric name")),
            }
            continue;
        }
        if local.contains(m) {
            continue;
        }
        let target = labels
            .0
            .get(&m.name)
            .ok_or_else(|| format!("Honeycomb query mode has no column for the label {:?}: map it with --honeycomb-query-label {}=<column>, or {}=- to ignore it", m.name, m.name, m.name))?;
        let Target::Column {
            name: column,
            numeric,
        } = target
        else {
            continue;
        };
        if column == "service.name" && m.op == MatchOp::Equal {
            service = Some(m.value.clone());
        }
        if let (MatchOp::Re(_), Some(lit)) = (&m.op, literal(&m.value)) {
            if column == "service.name" {
                service = Some(lit);
            }
        }
        filters.extend(filter(m, column, *numeric)?);
    }
    let name = name.ok_or_else(|| unsupported("a selector without a metric name"))?;
    Ok((name, filters, service))
}

/// A regex that matches exactly one string, and that string.
fn literal(re: &str) -> Option<String> {
    (!re.is_empty()
        && !re.contains([
            '.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$', '\\',
        ]))
    .then(|| re.to_owned())
}

fn value(v: &str, numeric: bool, m: &Matcher) -> Result<Value, String> {
    if numeric {
        v.parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("Honeycomb query mode: {m} compares a numeric column with {v:?}"))
    } else {
        Ok(Value::from(v))
    }
}

/// A status-class regex such as `5.*`, `5..` or `5[0-9][0-9]`: its first digit.
fn status_class(re: &str) -> Option<i64> {
    let mut c = re.chars();
    let d = c.next()?.to_digit(10)?;
    let rest: String = c.collect();
    matches!(
        rest.as_str(),
        ".*" | ".." | "[0-9][0-9]" | "\\d\\d" | "[0-9]{2}" | "\\d{2}"
    )
    .then_some(i64::from(d))
}

fn filter(m: &Matcher, column: &str, numeric: bool) -> Result<Vec<Value>, String> {
    let f = |op: &str, v: Option<Value>| match v {
        Some(v) => json!({"column": column, "op": op, "value": v}),
        None => json!({"column": column, "op": op}),
    };
    let v = m.value.as_str();
    Ok(match &m.op {
        MatchOp::Equal if v.is_empty() => vec![f("does-not-exist", None)],
        MatchOp::NotEqual if v.is_empty() => vec![f("exists", None)],
        MatchOp::Equal => vec![f("=", Some(value(v, numeric, m)?))],
        MatchOp::NotEqual => vec![f("!=", Some(value(v, numeric, m)?))],
        MatchOp::Re(_) | MatchOp::NotRe(_) => {
            let negated = matches!(m.op, MatchOp::NotRe(_));
            if v == ".*" {
                return if negated {
                    Err(unsupported(format!("{m}, which matches nothing")))
                } else {
                    Ok(vec![])
                };
            }
            if v == ".+" {
                return Ok(vec![f(
                    if negated { "does-not-exist" } else { "exists" },
                    None,
                )]);
            }
            if let Some(lit) = literal(v) {
                return Ok(vec![f(
                    if negated { "!=" } else { "=" },
                    Some(value(&lit, numeric, m)?),
                )]);
            }
            let alts: Vec<&str> = v.split('|').collect();
            if alts.len() > 1 && alts.iter().all(|a| literal(a).is_some()) {
                let vals = alts
                    .iter()
                    .map(|a| value(a, numeric, m))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(vec![f(
                    if negated { "not-in" } else { "in" },
                    Some(Value::Array(vals)),
                )]);
            }
            if let (true, Some(d)) = (numeric, status_class(v)) {
                let (lo, hi) = (d * 100, d * 100 + 100);
                return match negated {
                    false => Ok(vec![f(">=", Some(lo.into())), f("<", Some(hi.into()))]),
                    // HTTP has no status above 599, so "not 5xx" is "below 500" exactly.
                    true if d == 5 => Ok(vec![f("<", Some(lo.into()))]),
                    true => Err(unsupported(format!(
                        "{m}: only the 5xx class can be excluded"
                    ))),
                };
            }
            if let Some(prefix) = v.strip_suffix(".*").and_then(literal) {
                if !numeric {
                    return Ok(vec![f(
                        if negated {
                            "does-not-start-with"
                        } else {
                            "starts-with"
                        },
                        Some(prefix.into()),
                    )]);
                }
            }
            return Err(unsupported(format!("the regular expression in {m}")));
        }
    })
}

fn spec(calculations: Value, filters: Vec<Value>, breakdown: Option<&str>) -> Value {
    let mut s = json!({
        "calculations": calculations,
        "filters": filters,
        "filter_combination": "AND",
        "limit": 1000,
    });
    if let Some(b) = breakdown {
        s["breakdowns"] = json!([b]);
    }
    s
}

fn ratio(num: &Expr, den: &Expr, labels: &Labels) -> Result<Plan, String> {
    fn agg(e: &Expr) -> Result<&MatrixSelector, String> {
        match strip(e) {
            Expr::Aggregate(a) => sum_of_rate(a),
            _ => Err(unsupported("a division whose sides are not sum(rate(...))")),
        }
    }
    let (n, d) = (agg(num)?, agg(den)?);
    if n.vs.name != d.vs.name || n.range != d.range {
        return Err(unsupported("a ratio of different metrics or windows"));
    }
    let dm = &d.vs.matchers.matchers;
    if let Some(m) = dm.iter().find(|m| !n.vs.matchers.matchers.contains(m)) {
        return Err(unsupported(format!(
            "a ratio whose denominator matcher {m} is not in the numerator"
        )));
    }
    let extra: Vec<Matcher> =
        n.vs.matchers
            .matchers
            .iter()
            .filter(|m| !dm.contains(m))
            .cloned()
            .collect();
    let mut column = None;
    for m in &extra {
        match labels.0.get(&m.name) {
            Some(Target::Column { name, .. }) if column.is_none() || column.as_ref() == Some(name) => column = Some(name.clone()),
            _ => return Err(unsupported(format!("a ratio whose numerator adds {m}: the numerator may add matchers on one column only (the status code)"))),
        }
    }
    let (name, filters, service) = selector(d, labels, &[])?;
    counter_name(&name)?;
    let (window_s, range_s) = window(d)?;
    let Some(column) = column else {
        return Err(unsupported(
            "a ratio whose numerator and denominator are the same",
        ));
    };
    Ok(Plan {
        spec: spec(json!([{"op": "COUNT"}]), filters, Some(&column)),
        finish: Finish::Ratio {
            column,
            numerator: extra,
        },
        scale: 1.0,
        window_s,
        range_s,
        service,
    })
}

const PERCENTILES: &[(f64, &str)] = &[
    (0.001, "P001"),
    (0.01, "P01"),
    (0.05, "P05"),
    (0.1, "P10"),
    (0.2, "P20"),
    (0.25, "P25"),
    (0.5, "P50"),
    (0.75, "P75"),
    (0.8, "P80"),
    (0.9, "P90"),
    (0.95, "P95"),
    (0.99, "P99"),
    (0.999, "P999"),
];

fn quantile(c: &Call, labels: &Labels) -> Result<Plan, String> {
    let (Some(q), Some(inner)) = (
        c.args.args.first().and_then(|a| number(a)),
        c.args.args.get(1),
    ) else {
        return Err(unsupported("histogram_quantile without a literal quantile"));
    };
    let op = PERCENTILES
        .iter()
        .find(|(p, _)| (p - q).abs() < 1e-12)
        .map(|(_, op)| *op)
        .ok_or_else(|| unsupported(format!("the quantile {q}: Honeycomb computes P001, P01, P05, P10, P20, P25, P50, P75, P80, P90, P95, P99 and P999")))?;
    let Expr::Aggregate(a) = strip(inner) else {
        return Err(unsupported(
            "histogram_quantile of anything but sum(rate(..._bucket[w])) by (le)",
        ));
    };
    match &a.modifier {
        Some(LabelModifier::Include(l)) if l.labels == ["le"] => {}
        _ => {
            return Err(unsupported(
                "histogram_quantile over sum(...) not grouped by (le) alone",
            ))
        }
    }
    let plain = AggregateExpr {
        modifier: None,
        ..a.clone()
    };
    let ms = sum_of_rate(&plain)?;
    let le: Vec<Matcher> = ms
        .vs
        .matchers
        .matchers
        .iter()
        .filter(|m| m.name == "le")
        .cloned()
        .collect();
    if !le.is_empty() {
        return Err(unsupported("a matcher on le"));
    }
    let (name, filters, service) = selector(ms, labels, &[])?;
    let divisor = if name.ends_with("_milliseconds_bucket") {
        1.0
    } else if name.ends_with("_seconds_bucket") {
        1000.0
    } else {
        return Err(unsupported(format!("the histogram {name:?}: durations end in _milliseconds_bucket or _seconds_bucket (converted from duration_ms)")));
    };
    let (window_s, range_s) = window(ms)?;
    Ok(Plan {
        spec: spec(json!([{"op": op, "column": "duration_ms"}]), filters, None),
        finish: Finish::Quantile {
            key: format!("{op}(duration_ms)"),
            divisor,
        },
        scale: 1.0,
        window_s,
        range_s,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(q: &str) -> Result<Plan, String> {
        translate(
            &crate::promql::parse(q).unwrap(),
            &Labels::new(&[]).unwrap(),
        )
    }

    #[test]
    fn flaggers_queries_translate() {
        let sr = plan(
            &crate::analyze::template::render(
                crate::analyze::builtin::REQUEST_SUCCESS_RATE,
                &crate::analyze::template::Model {
                    namespace: "test".into(),
                    target: "podinfo".into(),
                    interval: "1m".into(),
                    ..Default::default()
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(sr.scale, 100.0);
        assert_eq!(sr.range_s, 60);
        assert_eq!(sr.service.as_deref(), Some("podinfo"));
        assert_eq!(sr.spec["breakdowns"], json!(["http.status_code"]));
        assert_eq!(
            sr.spec["filters"],
            json!([
                {"column": "k8s.namespace.name", "op": "=", "value": "test"},
                {"column": "service.name", "op": "=", "value": "podinfo"},
            ])
        );
        assert!(
            matches!(sr.finish, Finish::Ratio { ref column, .. } if column == "http.status_code")
        );

        let d = plan(r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload=~"podinfo"}[1m])) by (le))"#).unwrap();
        assert_eq!(
            d.spec["calculations"],
            json!([{"op": "P99", "column": "duration_ms"}])
        );
        assert_eq!(
            d.finish,
            Finish::Quantile {
                key: "P99(duration_ms)".into(),
                divisor: 1.0
            }
        );
        let s = plan(r#"histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket{service="web"}[90s])) by (le))"#).unwrap();
        assert_eq!(
            s.finish,
            Finish::Quantile {
                key: "P95(duration_ms)".into(),
                divisor: 1000.0
            }
        );
        assert_eq!((s.window_s, s.range_s), (90, 120));

        let r = plan(r#"sum(rate(http_requests_total{service="web",code=~"5.."}[2m]))"#).unwrap();
        assert_eq!(
            r.spec["filters"],
            json!([
                {"column": "service.name", "op": "=", "value": "web"},
                {"column": "http.status_code", "op": ">=", "value": 500},
                {"column": "http.status_code", "op": "<", "value": 600},
            ])
        );
        assert_eq!(plan("vector(1)").unwrap().finish, Finish::Constant(1.0));
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        let cases = [
            ("sum(irate(x_total[1m]))", "sum(irate(...))"),
            ("avg(rate(x_total[1m]))", "the aggregation avg"),
            ("sum by (code) (rate(x_total[1m]))", "sum by/without"),
            ("x_total", "a bare selector"),
            (
                "sum(rate(x_total{pod=\"a\"}[1m]))",
                "no column for the label \"pod\"",
            ),
            (
                "histogram_quantile(0.42, sum(rate(x_milliseconds_bucket[1m])) by (le))",
                "the quantile 0.42",
            ),
            ("sum(rate(x_total[1m])) - 1", "the operator -"),
            (
                "sum(rate(x_total{service=~\"a.*b\"}[1m]))",
                "the regular expression",
            ),
            (
                "sum(rate(x_total{code!~\"4.*\"}[1m]))",
                "only the 5xx class",
            ),
            ("sum(rate(x_total{code=\"abc\"}[1m]))", "numeric column"),
            ("sum(rate(x_bytes[1m]))", "a request counter"),
            (
                "sum(rate(x_total{service=\"a\"}[1m])) / sum(rate(x_total{service=\"b\"}[1m]))",
                "denominator matcher",
            ),
        ];
        for (q, want) in cases {
            let e = plan(q).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
        assert!(Labels::new(&["pod".into()]).is_err());
        let custom = Labels::new(&["pod=k8s.pod.name".into(), "reporter=-".into()]).unwrap();
        assert!(translate(
            &crate::promql::parse("sum(rate(x_total{pod=\"a\"}[1m]))").unwrap(),
            &custom
        )
        .is_ok());
    }
}
