//! Functions over a range vector, one series at a time: `rate`, `increase` and `delta` with
//! Prometheus's extrapolation, `irate`/`idelta`, the `*_over_time` family, `changes`, `resets`,
//! `deriv`, `predict_linear` and `holt_winters`.

use promql_parser::parser::{Call, Expr};

use super::aggregate::quantile_sorted;
use super::engine::{Evaluator, RangeSeries};
use super::functions::{absent_labels, kahan_inc, scalar};
use super::value::{exec, Result, Sample};

/// Functions with a range-vector argument, applied to each series.
pub(super) fn range_function(
    ev: &Evaluator<'_>,
    c: &Call,
    name: &str,
    args: &[&Expr],
    mi: usize,
    matrix: &[RangeSeries<'_>],
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
        let p: &[(i64, f64)] = &s.points;
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
                s.monotonic,
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
                s.labels.clone()
            } else {
                s.no_name.clone().into_owned()
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
    monotonic: bool,
) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.1 - first.1;
    // A series that never decreases has no reset in any window: nothing to add.
    if counter && !monotonic {
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
    fn extrapolated_rate_matches_hand_computation() {
        // 1 s samples 0..=59 over a 60 s window ending at 60 s, counter +1/s.
        let p: Vec<(i64, f64)> = (1..=60).map(|i| (i * 1000, i as f64)).collect();
        for monotonic in [false, true] {
            let r = extrapolated_rate(&p, 0, 60_000, 60_000, true, true, monotonic).unwrap();
            assert!((r - 1.0).abs() < 1e-12, "{r}");
        }
        assert_eq!(
            extrapolated_rate(&p[..1], 0, 60_000, 60_000, true, true, false),
            None
        );
        // A reset counts only when the series is not known to be monotonic.
        let reset = [(1000, 5.0), (2000, 1.0), (3000, 2.0)];
        let with = extrapolated_rate(&reset, 0, 3000, 3000, true, false, false).unwrap();
        let without = extrapolated_rate(&reset, 0, 3000, 3000, true, false, true).unwrap();
        assert!(with > without, "{with} {without}");
    }
}
